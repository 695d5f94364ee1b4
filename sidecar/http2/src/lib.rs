//! graylane's own HTTP/2 layer (issue 15), built as HAProxy's is: streams as state
//! inside their connection, headers encoded in place, no task or allocation per
//! stream. On the sidecar's HTTP/2 and gRPC hops `h2` (with hyper's pieces around it)
//! was most of the user-space work; on this layer those hops cost 36–45 % fewer
//! instructions (`bench/README.md`).
//!
//! Sans I/O: no runtime, and no dependency but `http` for the heads; the sidecar's
//! inbound listeners drive the server end (`sidecar/src/server/h2.rs`), its pool the
//! client end (`sidecar/src/proxy/pool/http2.rs`). Each part is
//! tested against its RFC's examples, against the real `h2` over in-memory
//! connections, and against what a hostile peer can send.
//!
//! - [`frame`]: frames read, checked and written (RFC 9113 §4, §6);
//! - [`hpack`]: header compression (RFC 7541);
//! - a connection, either end (`conn.rs`: streams and flow control), as [`server`]
//!   and as [`client`];
//! - [`header_map`] and [`recycle`]: header maps used again, not made per call;
//! - [`field_name`]: the names a mesh hop sees on most calls, without allocating;
//! - [`stage`]: small pieces staged in a shared chunk, one allocation for many;
//!   [`StreamMap`]: tables keyed by stream id, cheaply hashed.

pub mod client;
mod conn;
pub mod frame;
pub mod hpack;
mod maps;
mod names;
pub mod server;
mod stage;
mod streams;

pub use conn::{Connection, Role};
pub use maps::{header_map, recycle};
pub use names::field_name;
pub use stage::stage;
pub use streams::{IdHasher, StreamMap};

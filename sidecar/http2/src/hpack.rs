//! HPACK, the header compression of HTTP/2 (RFC 7541).
//!
//! Why not `h2`'s: on the sidecar's gRPC hop `h2`'s HPACK is about a quarter of all
//! user-space instructions (decoding 11 %, encoding 13-14 %, callgrind in
//! `bench/README.md`). Its decoder allocates every name and value it reads (a
//! `Bytes` or `HeaderName` each); its encoder hashes every field into its dynamic
//! table and Huffman-codes every string. This one is built as HAProxy's is:
//!
//! - [`Decoder`] hands each field out as borrowed bytes (from the block itself, the
//!   static table, its dynamic table, or a scratch buffer for Huffman-coded strings),
//!   so reading a header block allocates only when the peer asks it to remember a
//!   field. It checks everything a hostile peer can get wrong (see [`Error`]) and
//!   keeps decoding a block whose fields the caller ignores, since the table must
//!   stay in step with the peer's.
//! - [`encode_field`] uses the static table only and writes strings as they are: no
//!   dynamic table to keep (nothing to hash, no table size to follow) and no
//!   Huffman pass. A block is a little larger on loopback, where bytes are cheap
//!   and instructions are not.
//!
//! No allocation beyond the dynamic table, its entries' memos (what the layer above
//! made of a field it was sent by index, kept to take again: at most one per entry)
//! and scratch buffers. Names are bytes as the peer sent them; HTTP/2's own rules on
//! them (lowercase, pseudo-headers first) belong to the layer above.

mod decoder;
mod encoder;
mod error;
pub mod huffman;
mod lengths;
mod table;

pub use self::decoder::{Decoder, Field, Made, Memo};
pub use self::encoder::encode_field;
pub use self::error::Error;
pub use self::table::STATIC_TABLE;

/// The dynamic table size both ends start from (RFC 7540 §6.5.2,
/// `SETTINGS_HEADER_TABLE_SIZE`'s initial value).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

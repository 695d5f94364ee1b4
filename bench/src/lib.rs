//! graylane-bench: benchmarks that run the real, release-built graylane binaries as
//! processes and measure them from outside; results go to `bench/README.md`. This
//! library owns the pieces (the graylane-control child, simulated sidecars, statistics,
//! the report); the binaries in `src/bin` only parse flags and wire them together.
//!
//! It uses `anyhow` throughout: it is the bench binaries' body, and its errors are
//! only ever printed, never branched on.

mod control;
mod fanout;
mod nofile;
mod replicas;
mod report;
mod stats;
mod storm;
mod subscriber;
mod traffic;

pub use self::control::{ControlProcess, cpu};
pub use self::fanout::{Mesh, Plan, measure};
pub use self::nofile::raise_nofile;
pub use self::replicas::{REPLICAS_SECTION, measure_replicas};
pub use self::report::{write_named_section, write_section};
pub use self::stats::Stats;
pub use self::traffic::{control_cost, sidecar_cost};

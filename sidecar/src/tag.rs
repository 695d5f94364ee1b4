//! The gray tag of a request: where the sidecar finds it (`resolve`), and what it
//! remembers per trace (`trace_table`) so an app that forwards only `traceparent`
//! keeps its calls in the lane.

mod resolve;
mod trace_table;

pub(crate) use self::resolve::{BAGGAGE, TAG_HEADER_NAME, TagSource, carried};
pub use self::resolve::{TAG_HEADER, View, trace_id};
pub use self::trace_table::{TraceEntry, TraceTable};

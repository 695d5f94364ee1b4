//! The gray tag of a request: where the sidecar finds it, and what it remembers per
//! trace so an app that forwards only `traceparent` keeps its calls in the lane.

mod trace_table;

pub use self::trace_table::{TraceEntry, TraceTable};

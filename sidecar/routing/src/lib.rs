//! graylane-routing: the rule model, its validation, the tag, and the routing
//! decision — pure code, used by the sidecar, the control plane and the CLI, so that
//! matching and validation exist exactly once.
//!
//! Owns: the typed model of rules.md (`Lane`, `RoutePolicy`, `TagPolicy`) and of
//! security.md (`PeerPolicy`, its mode looked up by `RuleSet::mtls_mode`), reading YAML
//! rule files with errors located by file, document and field path, set-level
//! validation (`RuleSet`), the tag grammar with its `baggage`/`traceparent` helpers,
//! which hosts name a mesh service (`MeshHost`), decoding the query string
//! (`query_pairs`), the stable hash every sidecar shares, and the compiled
//! `RoutingTable` that answers "which instances may serve this request", "which
//! tag does this request get" and, from a RoutePolicy compiled once per table, "how
//! long may it take, is it retried, faulted, mirrored" ([`CompiledPolicy`]). Services are namespaced: everything is keyed by
//! (namespace, service), a document's service references are read relative to its
//! `metadata.namespace` (`orders`, or `orders.shop` for another namespace:
//! [`ServiceName::resolve`]), and Lanes are mesh-wide.
//!
//! Does not own: sockets, load balancing among the candidates it returns, carrying
//! out retries, timeouts, faults and mirror copies (it only decides them), metrics,
//! storage or the wire format of snapshots. No I/O, no clock, no
//! randomness of its own (callers pass random numbers in), no global state.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
mod hash;
mod host;
mod model;
mod parse;
mod path;
mod query;
mod set;
mod table;
mod tag;
mod uri_path;

pub use self::error::{Origin, STORED_RULES, ValidationError};
pub use self::hash::{StableHasher, stable_hash};
pub use self::host::MeshHost;
pub use self::model::{
    API_VERSION, Abort, Analysis, BASE, Cidr, DEFAULT_NAMESPACE, Delay, Duration, Exclude,
    Fallback, Fault, HashKey, Incoming, Kind, LABEL_MAX_LEN, Labels, Lane, LaneOverride,
    LaneRollout, LaneRolloutSpec, LaneSpec, MAX_RETRY_ATTEMPTS, MAX_STEPS, MIN_ANALYSIS_INTERVAL,
    MatchBlock, Metadata, Mirror, MtlsMode, Name, OnSuccess, Pattern, PeerPolicy, PeerPolicySpec,
    REGEX_MAX_COMPILED, REGEX_MAX_LEN, Rate, Release, Resource, Retries, RetryOn, RoutePolicy,
    RoutePolicySpec, ServiceName, Step, StringMatch, Subset, TagPolicy, TagPolicySpec, TagRule,
    WeightedSubset, default_fallback, qualified, qualified_ref,
};
pub use self::parse::{
    MAX_DOCUMENT_BYTES, MAX_DOCUMENTS, files_with_namespace, json_value, parse_file, with_namespace,
};
pub use self::query::query_pairs;
pub use self::set::{Prune, RuleSet, SeriesLabels};
pub use self::table::{
    Candidates, CompiledPolicy, Explained, Explanation, FallbackInfo, FallbackTarget, Gate,
    InboundSource, InboundTag, Injected, Instance, RequestView, RetryPolicy, Route, RouteError,
    RoutingTable,
};
pub use self::tag::{
    BAGGAGE_KEY, Carried, CarriedFrom, TAG_MAX_LEN, Tag, TraceParent, baggage_entry, baggage_with,
    baggage_with_tag, baggage_without_tag, carried, push_hex, tag_from_baggage,
    trace_id_from_traceparent,
};
pub use self::uri_path::normalized_path;

//! The `Graylane-Debug` / `Graylane-Route` hop trail (sidecar.md "Debugging a route").

use graylane_routing::Tag;
use http::HeaderMap;
use http::header::HeaderValue;

use crate::tag::TagSource;

/// `Graylane-Debug: 1` on a request asks for the trail.
pub(crate) const DEBUG_HEADER: &str = "graylane-debug";
/// One entry per hop, in hop order, comma-separated.
pub(crate) const ROUTE_HEADER: &str = "graylane-route";

/// One hop of the trail, as the sidecar that decided it saw it.
pub(crate) struct Hop<'a> {
    pub(crate) service: &'a str,
    pub(crate) instance: &'a str,
    /// `None` when no RoutePolicy names a subset.
    pub(crate) subset: Option<&'a str>,
    pub(crate) tag: Option<&'a Tag>,
    pub(crate) source: TagSource,
    pub(crate) fallback: bool,
    /// The rule revision the decision was made by (0 before any): an addition to the
    /// spec's entry, last, so that during a rollout each hop says which rules it saw.
    pub(crate) revision: u64,
    /// The mesh identity proved over mTLS: the caller's at the entry hop (inbound),
    /// the instance's on an outbound hop; `None` in the clear (then no `peer=`).
    pub(crate) peer: Option<&'a str>,
}

impl Hop<'_> {
    /// `service=orders;instance=orders-2;subset=v2;tag=gray;source=trace;fallback=false;revision=7`,
    /// then `;peer=spiffe://…` over mTLS.
    pub(crate) fn entry(&self) -> String {
        let mut entry = format!(
            "service={};instance={};subset={};tag={};source={};fallback={};revision={}",
            self.service,
            self.instance,
            self.subset.unwrap_or("-"),
            self.tag.map_or("-", Tag::as_str),
            self.source.as_str(),
            self.fallback,
            self.revision,
        );
        if let Some(peer) = self.peer {
            entry.push_str(";peer=");
            entry.push_str(peer);
        }
        entry
    }
}

/// Puts `entry` before the entries already there (those of later hops, relayed by
/// the app from its own downstream call).
pub(crate) fn append_route(headers: &mut HeaderMap, entry: &str) {
    let later: Vec<&str> = headers
        .get_all(ROUTE_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = std::iter::once(entry)
        .chain(later)
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(ROUTE_HEADER, value);
    }
}

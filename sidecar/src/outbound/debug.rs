//! The `Graylane-Debug` / `Graylane-Route` hop trail (sidecar.md "Debugging a route").

use graylane_routing::{Instance, Route, Tag};
use http::HeaderMap;
use http::header::HeaderValue;

use crate::tag::Source;

/// `Graylane-Debug: 1` on a request asks for the trail.
pub(crate) const DEBUG_HEADER: &str = "graylane-debug";
/// One entry per hop, in hop order, comma-separated.
pub(crate) const ROUTE_HEADER: &str = "graylane-route";
/// Set by an outbound sidecar on what it forwards: the receiving inbound sidecar then
/// knows the hop was already recorded (only the mesh's entry hop is recorded inbound).
pub(crate) const VIA_HEADER: &str = "graylane-via";

/// `service=orders;instance=orders-2;subset=v2;tag=gray;source=trace;fallback=false`
pub(crate) fn entry(
    service: &str,
    instance: &Instance,
    route: &Route<'_>,
    tag: Option<&Tag>,
    source: Source,
) -> String {
    format!(
        "service={service};instance={};subset={};tag={};source={};fallback={}",
        instance.id,
        route.subset.unwrap_or("-"),
        tag.map_or("-", Tag::as_str),
        source.as_str(),
        route.fallback.is_some() || route.base_fallback,
    )
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

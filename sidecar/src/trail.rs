//! What travels with a request from hop to hop besides the tag: the hop count that
//! stops sidecar loops, and the `Graylane-Debug` / `Graylane-Route` trail of who decided
//! each hop (sidecar.md "Debugging a route"). Both directions read and write them.

use graylane_routing::Tag;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use crate::proxy::ProxyError;
use crate::tag::TagSource;

/// Carried on every request an outbound sidecar forwards: how many outbound sidecars
/// it has passed since it left an app. The inbound side removes it (an app's own call
/// is a new request), so a legitimate request carries 1; more means sidecars are
/// forwarding to each other (an instance advertising another sidecar's outbound
/// listener, an external name resolving to one), and past `MAX_HOPS` it is a loop.
pub(crate) const HOPS_HEADER: HeaderName = HeaderName::from_static("graylane-hops");
/// Room for egress proxies and sidecar chains; a loop reaches it in milliseconds.
pub(crate) const MAX_HOPS: u32 = 8;

/// `Graylane-Debug: 1` on a request asks for the trail.
pub(crate) const DEBUG_HEADER: HeaderName = HeaderName::from_static("graylane-debug");
/// On a copy a RoutePolicy `mirror` sent: its answer is ignored, so an app may skip
/// side effects for it.
pub(crate) const MIRROR_HEADER: HeaderName = HeaderName::from_static("graylane-mirror");
/// One entry per hop, in hop order, comma-separated.
pub(crate) const ROUTE_HEADER: HeaderName = HeaderName::from_static("graylane-route");

/// Whether the request asks for the trail.
pub(crate) fn wanted(headers: &HeaderMap) -> bool {
    headers.get(DEBUG_HEADER).is_some_and(|v| v == "1")
}

/// One hop of the trail, as the sidecar that decided it saw it.
pub(crate) struct Hop<'a> {
    pub(crate) service: &'a str,
    /// Written after the service as the CLI names it (`orders.shop`), unless it is
    /// `default`: two namespaces' `orders` are two services.
    pub(crate) namespace: &'a str,
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
            graylane_routing::qualified_ref(self.namespace, self.service),
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

/// The hop count this sidecar forwards with: one more than the request carries, or a
/// 508 once it has passed `MAX_HOPS` sidecars.
pub(crate) fn count_hop(headers: &HeaderMap) -> Result<u32, ProxyError> {
    let hops = headers
        .get(HOPS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if hops >= MAX_HOPS {
        return Err(ProxyError::Loop(format!(
            "the request has passed through {hops} sidecars without reaching an app"
        )));
    }
    Ok(hops + 1)
}

/// Sets the hop count on what is forwarded.
pub(crate) fn set_hops(headers: &mut HeaderMap, hops: u32) {
    // Static values for every count forwarded (1 to MAX_HOPS; the length stops the
    // build if MAX_HOPS changes): `From<u32>` formats and allocates each time.
    const COUNTS: [HeaderValue; MAX_HOPS as usize + 1] = [
        HeaderValue::from_static("0"),
        HeaderValue::from_static("1"),
        HeaderValue::from_static("2"),
        HeaderValue::from_static("3"),
        HeaderValue::from_static("4"),
        HeaderValue::from_static("5"),
        HeaderValue::from_static("6"),
        HeaderValue::from_static("7"),
        HeaderValue::from_static("8"),
    ];
    let value = COUNTS
        .get(hops as usize)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(hops));
    // A static name: inserting by `&str` copies a custom name every time.
    headers.insert(HOPS_HEADER, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_are_counted_up_to_the_limit() {
        let mut h = HeaderMap::new();
        assert_eq!(count_hop(&h).unwrap(), 1);
        set_hops(&mut h, MAX_HOPS - 1);
        assert_eq!(count_hop(&h).unwrap(), MAX_HOPS);
        set_hops(&mut h, MAX_HOPS);
        assert_eq!(
            count_hop(&h).unwrap_err().status(),
            http::StatusCode::LOOP_DETECTED
        );
        for n in [0, 1, 7, MAX_HOPS, MAX_HOPS + 1, 123] {
            set_hops(&mut h, n);
            assert_eq!(h.get(HOPS_HEADER).unwrap(), &n.to_string(), "{n}");
        }
    }
}

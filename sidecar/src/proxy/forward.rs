//! A request and its response as they pass through the sidecar, in either direction:
//! hop-by-hop headers out (RFC 9110 §7.6.1), an upgrade carried across.

use http::Response;
use http::request::Parts;
use hyper::upgrade::OnUpgrade;

use super::{Body, Message, strip_hop_by_hop, upgrade};

/// The request head as it leaves. Returns the downstream's pending upgrade, if the
/// request asked for one (its `Connection: upgrade` and `Upgrade` are then kept).
pub(crate) fn head(parts: &mut Parts) -> Option<OnUpgrade> {
    let pending = upgrade::requested(&parts.headers)
        .then(|| upgrade::take(parts))
        .flatten();
    strip_hop_by_hop(&mut parts.headers, Message::Request, pending.is_some());
    pending
}

/// The response as it goes back: an accepted upgrade joined to the downstream's,
/// hop-by-hop headers out.
pub(crate) fn response(mut response: Response<Body>, pending: Option<OnUpgrade>) -> Response<Body> {
    upgrade::join_if_switched(pending, &mut response);
    let switched = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    strip_hop_by_hop(response.headers_mut(), Message::Response, switched);
    response
}

//! HTTP/1.1 upgrades (WebSocket and others) passed through: the request keeps its
//! `Connection: upgrade` and `Upgrade` headers; when the upstream answers 101, the two
//! upgraded connections are joined byte for byte until either side closes.

use http::request::Parts;
use http::{HeaderMap, Response, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Whether the request asks to switch protocols. Never to h2c: a proxy must not
/// perform it (RFC 9113 §3.1 removed it; it smuggles a connection past the proxy's
/// HTTP/1 rules), so such a request is served as plain HTTP/1.1 and its `Upgrade`
/// and `HTTP2-Settings` headers are dropped as hop-by-hop.
pub(crate) fn requested(headers: &HeaderMap) -> bool {
    let h2c = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("h2c"));
    headers.contains_key(header::UPGRADE)
        && !h2c
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Takes the downstream side's pending upgrade out of the request head (hyper keeps it
/// in the extensions), before the head is forwarded.
pub(crate) fn take(parts: &mut Parts) -> Option<OnUpgrade> {
    parts.extensions.remove::<OnUpgrade>()
}

/// When `response` is a 101, joins `downstream` with the upstream connection in the
/// background. The response itself is then returned to the downstream as usual.
pub(crate) fn join_if_switched<B>(downstream: Option<OnUpgrade>, response: &mut Response<B>) {
    let Some(downstream) = downstream else { return };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let upstream = hyper::upgrade::on(response);
    tokio::spawn(async move {
        let (Ok(down), Ok(up)) = (downstream.await, upstream.await) else {
            tracing::debug!("upgrade failed on one side");
            return;
        };
        let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %e, "upgraded connection ended");
        }
    });
}

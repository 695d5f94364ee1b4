//! HTTP/1.1 upgrades (WebSocket and others) passed through: the request keeps its
//! `Connection: upgrade` and `Upgrade` headers; when the upstream answers 101, the two
//! upgraded connections are joined byte for byte until either side closes.

use std::sync::{Arc, Mutex};

use http::request::Parts;
use http::{HeaderMap, Response, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

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
    let Some(mut up) = super::pool::take_switched(response) else {
        return;
    };
    tokio::spawn(async move {
        let Ok(down) = downstream.await else {
            tracing::debug!("upgrade failed on the client's side");
            return;
        };
        let mut down = TokioIo::new(down);
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %e, "upgraded connection ended");
        }
    });
}

/// The client's side of a `CONNECT`, taken over once it is answered 2xx: hyper's
/// upgraded HTTP/1.1 connection, or the HTTP/2 stream the request came on.
pub(crate) enum Downstream {
    Http1(OnUpgrade),
    Http2(oneshot::Receiver<DuplexStream>),
}

/// What an HTTP/2 `CONNECT` carries in its extensions: where the stream, bridged to
/// a pipe by the server (`server::h2`), arrives once answered 2xx. (Extensions must
/// be `Clone`; only the first taker gets it.)
#[derive(Clone)]
pub(crate) struct H2Tunnel(Arc<Mutex<Option<oneshot::Receiver<DuplexStream>>>>);

impl H2Tunnel {
    /// The extension, and the sender the server hands the pipe to.
    pub(crate) fn new() -> (Self, oneshot::Sender<DuplexStream>) {
        let (tx, rx) = oneshot::channel();
        (Self(Arc::new(Mutex::new(Some(rx)))), tx)
    }
}

impl Downstream {
    /// Takes a `CONNECT`'s downstream out of its head; `None`: the server gave it
    /// none, which is the server's fault, not the request's.
    pub(crate) fn take(parts: &mut Parts) -> Option<Self> {
        if let Some(upgrade) = parts.extensions.remove::<OnUpgrade>() {
            return Some(Self::Http1(upgrade));
        }
        let tunnel = parts.extensions.remove::<H2Tunnel>()?;
        let taken = tunnel.0.lock().ok()?.take();
        taken.map(Self::Http2)
    }

    /// Joins the downstream with `upstream` byte for byte until either side closes.
    pub(crate) async fn join(self, mut upstream: TcpStream) {
        let copied = match self {
            Self::Http1(upgrade) => match upgrade.await {
                Ok(down) => {
                    tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut upstream).await
                }
                Err(e) => return tracing::debug!(error = %e, "CONNECT upgrade failed"),
            },
            Self::Http2(pipe) => match pipe.await {
                Ok(mut down) => tokio::io::copy_bidirectional(&mut down, &mut upstream).await,
                Err(_) => return tracing::debug!("CONNECT stream gone before its answer"),
            },
        };
        if let Err(e) = copied {
            tracing::debug!(error = %e, "CONNECT tunnel ended");
        }
    }
}

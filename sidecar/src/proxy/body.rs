//! Every body the sidecar sends or receives. An enum rather than one boxed type: the
//! bodies of nearly every request — the one hyper received over HTTP/1.1, the one our
//! HTTP/1.1 client reads, the one an HTTP/2 connection received (a client's request,
//! an upstream's response), and none at all — go
//! through unboxed, two allocations fewer per request; anything else is boxed.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use super::BoxError;
use super::coalesce::Coalesce;
use super::pool::ResponseBody;
use super::streams::Incoming as H2Body;
use crate::server::RequestBody;

pub(crate) enum Body {
    /// Nothing: a body-less request's copy, a response without content.
    Empty,
    /// A request body as hyper's server received it (HTTP/1.1 requests `h1` hands
    /// to hyper), its ready frames
    /// merged (see `coalesce`).
    Received(Coalesce<Incoming>),
    /// A request body as the sidecar's own HTTP/1.1 server reads it (`server::h1`;
    /// it merges what it has read itself).
    Downstream(RequestBody),
    /// A response body as the pool's HTTP/1.1 client reads it (it merges what it
    /// has read itself).
    Upstream(ResponseBody),
    /// A body an HTTP/2 connection received (a client's request on the inbound
    /// listeners, an upstream's response in the pool: see `streams`), merged the same
    /// way.
    ReceivedH2(Coalesce<H2Body>),
    /// Anything else: an error's text, a retried request's body held whole.
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

/// For a request handed back with its failure (`SendError::request`): what a body is
/// does not show.
impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Body { .. }")
    }
}

impl Body {
    pub(crate) fn received_h2(body: H2Body) -> Self {
        Self::ReceivedH2(Coalesce::new(body))
    }
}

impl From<UnsyncBoxBody<Bytes, BoxError>> for Body {
    fn from(body: UnsyncBoxBody<Bytes, BoxError>) -> Self {
        Self::Boxed(body)
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Received(body) => Pin::new(body).poll_frame(cx),
            Self::Upstream(body) => Pin::new(body).poll_frame(cx),
            Self::Downstream(body) => Pin::new(body).poll_frame(cx),
            Self::ReceivedH2(body) => Pin::new(body).poll_frame(cx),
            Self::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Received(body) => body.is_end_stream(),
            Self::Upstream(body) => body.is_end_stream(),
            Self::Downstream(body) => body.is_end_stream(),
            Self::ReceivedH2(body) => body.is_end_stream(),
            Self::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Received(body) => body.size_hint(),
            Self::Upstream(body) => body.size_hint(),
            Self::Downstream(body) => body.size_hint(),
            Self::ReceivedH2(body) => body.size_hint(),
            Self::Boxed(body) => body.size_hint(),
        }
    }
}

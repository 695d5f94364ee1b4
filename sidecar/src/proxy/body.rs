//! Every body the sidecar sends or receives. An enum rather than one boxed type: the
//! two bodies of nearly every request — the one hyper received, and none at all — go
//! through unboxed, two allocations fewer per request; anything else is boxed.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use super::BoxError;
use super::coalesce::Coalesce;

pub(crate) enum Body {
    /// Nothing: a body-less request's copy, a response without content.
    Empty,
    /// A body as hyper received it, its ready frames merged (see `coalesce`).
    Received(Coalesce<Incoming>),
    /// Anything else: an error's text, a body that can be taken back while unsent.
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
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
            Self::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Received(body) => body.is_end_stream(),
            Self::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Received(body) => body.size_hint(),
            Self::Boxed(body) => body.size_hint(),
        }
    }
}

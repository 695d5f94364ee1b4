//! Request bodies that have not left yet.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::{Body, BoxError};

/// A request body that can be taken back for as long as nothing has read from it: a
/// request whose connection never came up has not left, so it may go elsewhere
/// whole — a POST included. Once the client library starts on the body, it has left.
pub(crate) fn unsent(body: Body) -> (Body, Reclaim) {
    let hint = body.size_hint();
    let slot = Arc::new(Mutex::new(Some(body)));
    let lazy = Lazy {
        slot: Arc::clone(&slot),
        taken: None,
        hint,
    };
    (lazy.boxed_unsync().into(), Reclaim(slot))
}

/// The way back to a body [`unsent`] has not let go of.
pub(crate) struct Reclaim(Arc<Mutex<Option<Body>>>);

impl Reclaim {
    /// The body, if nothing read from it.
    pub(crate) fn take(self) -> Option<Body> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

struct Lazy {
    slot: Arc<Mutex<Option<Body>>>,
    taken: Option<Body>,
    hint: SizeHint,
}

impl HttpBody for Lazy {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.taken.is_none() {
            let body = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            self.taken = body;
        }
        match self.taken.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(Some(Err("the request body was taken back".into()))),
        }
    }

    fn size_hint(&self) -> SizeHint {
        // What hyper frames the request by (Content-Length or chunked), before reading.
        self.hint
    }

    fn is_end_stream(&self) -> bool {
        self.hint.exact() == Some(0)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::Full;

    use super::*;

    fn body(text: &'static str) -> Body {
        Full::new(Bytes::from(text))
            .map_err(|e| match e {})
            .boxed_unsync()
            .into()
    }

    #[tokio::test]
    async fn an_unread_body_comes_back_whole() {
        let (sent, reclaim) = unsent(body("hello"));
        assert_eq!(
            sent.size_hint().exact(),
            Some(5),
            "framing is known up front"
        );
        drop(sent);
        let back = reclaim.take().unwrap();
        assert_eq!(back.collect().await.unwrap().to_bytes(), "hello");
    }

    #[tokio::test]
    async fn a_body_that_was_read_has_left() {
        let (sent, reclaim) = unsent(body("hello"));
        assert_eq!(sent.collect().await.unwrap().to_bytes(), "hello");
        assert!(reclaim.take().is_none());
    }
}

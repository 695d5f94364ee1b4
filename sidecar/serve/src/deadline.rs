//! A request body that must arrive whole by a deadline.
//!
//! Why: a client that sends a request head and then its body a byte at a time (or
//! never) holds the connection and the handler reading it for as long as it likes.
//! The header-read timeout ends at the head, so on listeners capped at a few hundred
//! connections (admin, API, webhook) a few hundred such clients lock everyone else
//! out. nginx bounds this with `client_body_timeout`, Envoy with its request timeout.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every request [`serve_http`](crate::serve_http) hands a service.
pub type RequestBody = Deadline<Incoming>;

pin_project_lite::pin_project! {
    /// `inner`, failing once `within` has passed since the head before it ended.
    pub struct Deadline<B> {
        #[pin]
        inner: B,
        // Made on the first wait only: a body already at hand (or none) costs no
        // timer.
        sleep: Option<Pin<Box<Sleep>>>,
        by: tokio::time::Instant,
        within: Duration,
    }
}

impl<B> Deadline<B> {
    /// `inner`, to be read whole within `within` from now.
    pub fn new(inner: B, within: Duration) -> Self {
        Self {
            inner,
            sleep: None,
            by: tokio::time::Instant::now() + within,
            within,
        }
    }
}

impl<B> Body for Deadline<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let by = *this.by;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(by)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                "the request body did not arrive whole within {:?} of its head",
                this.within
            )
            .into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;

    use super::*;

    /// One frame, then nothing, never ended: a client that stopped sending.
    struct Stalled(Option<Bytes>);

    impl Body for Stalled {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            match self.0.take() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None => Poll::Pending,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_coming_fails_at_the_deadline_and_one_at_hand_passes() {
        let whole = Deadline::new(
            Full::new(Bytes::from_static(b"all")),
            Duration::from_secs(1),
        );
        assert_eq!(&whole.collect().await.unwrap().to_bytes()[..], b"all");
        let stalled = Deadline::new(
            Stalled(Some(Bytes::from_static(b"a"))),
            Duration::from_secs(30),
        );
        let started = tokio::time::Instant::now();
        let e = stalled.collect().await.unwrap_err();
        assert!(e.to_string().contains("within 30s"), "{e}");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }
}

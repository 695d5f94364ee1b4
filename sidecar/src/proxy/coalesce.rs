//! Bodies passed on in chunks as large as are already at hand.
//!
//! A gRPC stream of many small messages arrives as many small HTTP/2 DATA frames. Passed
//! on one for one, they cost the next hop per-frame overhead, and h2's flood guard (a
//! budget of small unread frames, half the connection window) then answers a legitimate
//! stream with GOAWAY ENHANCE_YOUR_CALM — on a pooled connection other clients share.
//! So whatever frames are ready now are merged, up to `MAX_CHUNK`, and passed on as
//! one; nothing ever waits for more data to fill a chunk, so latency is unchanged.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::BoxError;

/// Largest merged chunk: HTTP/2's default frame size.
const MAX_CHUNK: usize = 16 * 1024;

/// `inner`, its ready data frames merged.
pub(crate) struct Coalesce<B> {
    inner: B,
    /// A frame that ended a merge (trailers, an error) and goes out next. Boxed: it
    /// is rare, and inline it would make every request 100 bytes larger (a trailers
    /// frame holds a `HeaderMap`), bytes copied at each move of the request.
    pending: Option<Box<Result<Frame<Bytes>, BoxError>>>,
    done: bool,
}

impl<B> Coalesce<B> {
    pub(crate) fn new(inner: B) -> Self {
        Self {
            inner,
            pending: None,
            done: false,
        }
    }
}

impl<B> HttpBody for Coalesce<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.pending.take() {
            return Poll::Ready(Some(*frame));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let first = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                self.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => return Poll::Pending,
        };
        let first = match first.into_data() {
            Ok(data) if data.len() < MAX_CHUNK => data,
            Ok(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
            Err(frame) => return Poll::Ready(Some(Ok(frame))),
        };
        let mut merged: Option<BytesMut> = None;
        let mut len = first.len();
        while len < MAX_CHUNK {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        len += data.len();
                        merged
                            .get_or_insert_with(|| BytesMut::from(&first[..]))
                            .extend_from_slice(&data);
                    }
                    Err(trailers) => {
                        self.pending = Some(Box::new(Ok(trailers)));
                        break;
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    self.pending = Some(Box::new(Err(e.into())));
                    break;
                }
                Poll::Ready(None) => {
                    self.done = true;
                    break;
                }
                // Nothing more at hand: pass on what there is, never wait to fill.
                Poll::Pending => break,
            }
        }
        let data = merged.map_or(first, BytesMut::freeze);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && (self.done || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.pending.is_some() || self.done {
            return SizeHint::default();
        }
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn frames(
        items: Vec<Result<Frame<Bytes>, BoxError>>,
    ) -> impl HttpBody<Data = Bytes, Error = BoxError> + Unpin {
        StreamBody::new(tokio_stream::iter(items))
    }

    #[tokio::test]
    async fn ready_small_frames_go_out_as_one_and_trailers_follow() {
        let mut items: Vec<Result<Frame<Bytes>, BoxError>> = (0..100)
            .map(|_| Ok(Frame::data(Bytes::from_static(&[7u8; 55]))))
            .collect();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        items.push(Ok(Frame::trailers(trailers)));
        let mut body = Coalesce::new(frames(items));
        let (mut chunks, mut bytes) = (0, 0);
        let trailers = loop {
            let frame = body.frame().await.unwrap().unwrap();
            match frame.into_data() {
                Ok(data) => {
                    chunks += 1;
                    bytes += data.len();
                }
                Err(frame) => break frame.into_trailers().unwrap(),
            }
        };
        assert_eq!(bytes, 5_500);
        // The test stream yields to the scheduler every 32 items: a few chunks, not 100.
        assert!(chunks <= 4, "{chunks} chunks for 100 ready frames");
        assert_eq!(trailers["grpc-status"], "0");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn chunks_stop_at_the_limit_and_nothing_is_lost() {
        let items: Vec<Result<Frame<Bytes>, BoxError>> = (0..1000u32)
            .map(|i| {
                Ok(Frame::data(Bytes::from(vec![
                    u8::try_from(i % 251).unwrap();
                    100
                ])))
            })
            .collect();
        let expected: Vec<u8> = (0..1000u32)
            .flat_map(|i| vec![u8::try_from(i % 251).unwrap(); 100])
            .collect();
        let mut body = Coalesce::new(frames(items));
        let mut all = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= MAX_CHUNK + 100);
            all.extend_from_slice(&data);
        }
        assert_eq!(all, expected);
    }

    #[tokio::test]
    async fn an_error_after_data_comes_after_that_data() {
        let items: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"abc"))),
            Err("reset".into()),
        ];
        let mut body = Coalesce::new(frames(items));
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "abc"
        );
        assert!(body.frame().await.unwrap().is_err());
    }
}

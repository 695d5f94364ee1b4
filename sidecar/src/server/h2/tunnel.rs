//! An HTTP/2 `CONNECT` stream as a byte pipe: what the handler takes over, the same
//! way it takes over an upgraded HTTP/1.1 connection (`proxy::upgrade::Downstream`).
//! The stream's DATA goes into one end of an in-memory pipe (a task copies it, and
//! the client's window comes back as the pipe takes it); the pipe's bytes come back
//! as the answer's body, within the client's window, like any other.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame};
use tokio::io::{AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::oneshot;

use super::Incoming;
use crate::proxy::{Body, BoxError};

/// Bytes buffered in the pipe each way, and read at once from it: one DATA frame.
const PIPE_BUFFER: usize = 16 * 1024;

/// Hands the handler its end of a pipe for the stream, starts the copy of the
/// client's DATA into it, and gives the body of the answer: the pipe's bytes.
/// `None`: the handler is gone already.
pub(super) fn open(opened: oneshot::Sender<DuplexStream>, request: Incoming) -> Option<Body> {
    let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
    opened.send(theirs).ok()?;
    let (from_pipe, to_pipe) = tokio::io::split(ours);
    tokio::spawn(async move {
        if let Err(e) = inward(request, to_pipe).await {
            tracing::debug!(error = %e, "h2 CONNECT tunnel ended");
        }
    });
    Some(Body::from(
        Pipe {
            read: from_pipe,
            buf: BytesMut::new(),
        }
        .boxed_unsync(),
    ))
}

/// The client's DATA into the pipe; its end shuts the pipe's write side.
async fn inward(mut request: Incoming, mut pipe: WriteHalf<DuplexStream>) -> Result<(), BoxError> {
    while let Some(frame) = request.frame().await {
        if let Ok(data) = frame?.into_data() {
            pipe.write_all(&data).await?;
        }
    }
    pipe.shutdown().await?;
    Ok(())
}

/// The pipe's read side as a body: its bytes, then its end.
struct Pipe {
    read: ReadHalf<DuplexStream>,
    buf: BytesMut,
}

impl HttpBody for Pipe {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
        let me = &mut *self;
        me.buf.reserve(PIPE_BUFFER);
        match tokio_util::io::poll_read_buf(Pin::new(&mut me.read), cx, &mut me.buf) {
            Poll::Ready(Ok(0)) => Poll::Ready(None),
            Poll::Ready(Ok(_)) => Poll::Ready(Some(Ok(Frame::data(me.buf.split().freeze())))),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

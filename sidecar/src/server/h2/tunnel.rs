//! An HTTP/2 `CONNECT` stream as a byte pipe: what the handler takes over, the same
//! way it takes over an upgraded HTTP/1.1 connection (`proxy::upgrade::Downstream`).
//! A task moves the stream's DATA into one end of an in-memory pipe and the pipe's
//! bytes back as DATA, within the client's window.

use std::future::poll_fn;

use ::h2::{RecvStream, SendStream};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::oneshot;

use crate::proxy::BoxError;

/// Bytes buffered in the pipe each way, and read at once from it: one DATA frame.
const PIPE_BUFFER: usize = 16 * 1024;

/// Hands the handler its end of a pipe for the stream, and bridges the two in a
/// task until either side ends. The handler gone already, the stream is reset.
pub(super) fn open(
    opened: oneshot::Sender<DuplexStream>,
    recv: RecvStream,
    mut send: SendStream<Bytes>,
) {
    let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
    if opened.send(theirs).is_err() {
        send.send_reset(::h2::Reason::CANCEL);
        return;
    }
    tokio::spawn(async move {
        let (from_pipe, to_pipe) = tokio::io::split(ours);
        // Either direction failing ends both: the stream is reset as its handles go.
        let bridged = tokio::try_join!(inward(recv, to_pipe), outward(from_pipe, send));
        if let Err(e) = bridged {
            tracing::debug!(error = %e, "h2 CONNECT tunnel ended");
        }
    });
}

/// The client's DATA into the pipe, its window given back as the pipe takes it.
async fn inward(mut recv: RecvStream, mut pipe: WriteHalf<DuplexStream>) -> Result<(), BoxError> {
    while let Some(data) = recv.data().await {
        let data = data?;
        pipe.write_all(&data).await?;
        let _ = recv.flow_control().release_capacity(data.len());
    }
    pipe.shutdown().await?;
    Ok(())
}

/// The pipe's bytes to the client as DATA, within its window; END_STREAM at the end.
async fn outward(
    mut pipe: ReadHalf<DuplexStream>,
    mut send: SendStream<Bytes>,
) -> Result<(), BoxError> {
    let mut buf = BytesMut::with_capacity(PIPE_BUFFER);
    loop {
        buf.reserve(PIPE_BUFFER);
        if pipe.read_buf(&mut buf).await? == 0 {
            send.send_data(Bytes::new(), true)?;
            return Ok(());
        }
        let mut chunk = buf.split().freeze();
        while !chunk.is_empty() {
            send.reserve_capacity(chunk.len());
            while send.capacity() == 0 {
                match poll_fn(|cx| send.poll_capacity(cx)).await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err("the client's stream closed".into()),
                }
            }
            let part = chunk.split_to(send.capacity().min(chunk.len()));
            send.send_data(part, false)?;
        }
    }
}

//! `--codec mesh`: the bare forwarder plus the per-request work of graylane's inbound
//! hop, done the way a codec of our own would: on the read buffer, with the new head
//! written straight into a write buffer. One read and one write per message each way,
//! as `bare`. How much of the bare forwarder's lead survives the mesh's own work?
//!
//! Per request: every header name matched once against the few the hop cares about;
//! the tag from `Gray-Publish` (else `baggage`) and the trace context from
//! `traceparent`, read with the routing crate's own types; a new span id written
//! into `traceparent` (a new trace when there was none); the hop-by-hop headers
//! dropped, on the request and on the response; a request counter and a latency
//! histogram of the sidecar's metrics crate. Not done: routing (the inbound hop sends
//! to its app), spans, policy, retries, limits.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{bail, ensure};
use bytes::{Buf, BufMut, BytesMut};
use graylane_routing::{Tag, TraceParent, tag_from_baggage};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What every request updates.
pub(crate) struct Metrics {
    requests: Counter,
    tagged: Counter,
    seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Counter::default(),
            tagged: Counter::default(),
            seconds: Histogram::new([0.001, 0.005, 0.025, 0.1, 0.5, 2.5]),
        }
    }
}

pub(crate) async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let mut from_client = BytesMut::with_capacity(8192);
    let mut from_up = BytesMut::with_capacity(8192);
    let mut out = BytesMut::with_capacity(8192);
    loop {
        let Some(tag) = message(&mut client, &mut from_client, &mut out, Side::Request).await?
        else {
            return Ok(());
        };
        let started = Instant::now();
        up.write_all(&out).await?;
        out.clear();
        ensure!(
            message(&mut up, &mut from_up, &mut out, Side::Response)
                .await?
                .is_some(),
            "the upstream closed"
        );
        client.write_all(&out).await?;
        out.clear();
        metrics.requests.inc();
        if tag.is_some() {
            metrics.tagged.inc();
        }
        metrics.seconds.observe(started.elapsed().as_secs_f64());
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Request,
    Response,
}

/// Reads one message from `from` and writes it, rewritten, into `out`; the request's
/// tag. `None` once `from` has closed between messages.
async fn message(
    from: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    side: Side,
) -> anyhow::Result<Option<Option<Tag>>> {
    let (head, body, tag) = loop {
        if let Some(parsed) = rewrite(buf, out, side)? {
            break parsed;
        }
        buf.reserve(4096);
        if from.read_buf(buf).await? == 0 {
            ensure!(buf.is_empty(), "closed mid-head");
            return Ok(None);
        }
    };
    let total = head + body;
    while buf.len() < total {
        buf.reserve(total - buf.len());
        ensure!(from.read_buf(buf).await? > 0, "closed mid-body");
    }
    out.put_slice(&buf[head..total]);
    buf.advance(total);
    Ok(Some(tag))
}

/// Once `buf` holds a whole head: writes it, rewritten, into `out` and returns its
/// length, the Content-Length and the tag.
fn rewrite(
    buf: &[u8],
    out: &mut BytesMut,
    side: Side,
) -> anyhow::Result<Option<(usize, usize, Option<Tag>)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let (head, headers) = match side {
        Side::Request => {
            let mut req = httparse::Request::new(&mut headers);
            let httparse::Status::Complete(head) = req.parse(buf)? else {
                return Ok(None);
            };
            for part in [req.method.unwrap_or("GET"), " ", req.path.unwrap_or("/")] {
                out.put_slice(part.as_bytes());
            }
            out.put_slice(b" HTTP/1.1\r\n");
            (head, req.headers)
        }
        Side::Response => {
            let mut res = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(head) = res.parse(buf)? else {
                return Ok(None);
            };
            // httparse takes exactly three digits.
            let code = res.code.unwrap_or(200);
            let digits = [100, 10, 1].map(|d| b'0' + u8::try_from(code / d % 10).unwrap_or(0));
            out.put_slice(b"HTTP/1.1 ");
            out.put_slice(&digits);
            out.put_u8(b' ');
            out.put_slice(res.reason.unwrap_or("").as_bytes());
            out.put_slice(b"\r\n");
            (head, res.headers)
        }
    };
    let (mut body, mut tag, mut baggage_tag, mut trace) = (0, None, None, None);
    for h in headers.iter() {
        let name = h.name.as_bytes();
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        if is("content-length") {
            body = std::str::from_utf8(h.value)?.trim().parse()?;
        } else if is("transfer-encoding") {
            bail!("chunked bodies are not forwarded");
        } else if is("connection")
            || is("keep-alive")
            || is("proxy-connection")
            || is("te")
            || is("trailer")
            || is("upgrade")
        {
            continue; // hop-by-hop: not forwarded
        } else if side == Side::Request && is("traceparent") {
            trace = std::str::from_utf8(h.value)
                .ok()
                .and_then(TraceParent::parse);
            continue; // written anew below
        } else if side == Side::Request && is("gray-publish") {
            tag = std::str::from_utf8(h.value).ok().and_then(Tag::parse);
        } else if side == Side::Request && is("baggage") {
            baggage_tag = std::str::from_utf8(h.value).ok().and_then(tag_from_baggage);
        }
        out.put_slice(name);
        out.put_slice(b": ");
        out.put_slice(h.value);
        out.put_slice(b"\r\n");
    }
    if side == Side::Request {
        // Nonzero, as W3C requires: one random u64 per 8 bytes, as the sidecar does.
        let random = || fastrand::u64(1..).to_le_bytes();
        let span = random();
        let next = match trace {
            Some(t) => TraceParent {
                parent_id: span,
                ..t
            },
            None => TraceParent {
                trace_id: join_halves(random(), random()),
                parent_id: span,
                flags: 0,
            },
        };
        out.put_slice(b"traceparent: ");
        out.put_slice(&next.to_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    Ok(Some((head, body, tag.or(baggage_tag))))
}

/// A 16-byte id from two 8-byte halves.
fn join_halves(high: [u8; 8], low: [u8; 8]) -> [u8; 16] {
    let mut id = [0; 16];
    id[..8].copy_from_slice(&high);
    id[8..].copy_from_slice(&low);
    id
}

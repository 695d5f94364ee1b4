//! `bare-proxy`: the least an HTTP/1.1 reverse proxy on tokio can do, as a yardstick
//! for issue 15's throughput goal (`bench/proxy/bare.sh`). Is it hyper or graylane's
//! pipeline that costs a hop its time, and what could a codec of our own gain?
//!
//! ```text
//!  client conn ─► its own upstream conn (connected at accept, kept 1:1)
//!   --codec bare:  loop: read until httparse has the request head, read its
//!                  Content-Length body, write the bytes unchanged; the same back
//!   --codec hyper: hyper's HTTP/1 server; each request sent as it came on a hyper
//!                  client connection (`client::conn::http1`), the answer returned
//!   --codec mesh:  as bare, with the inbound hop's per-request work done on the read
//!                  buffer, heads rewritten into a write buffer (no HeaderMap): the
//!                  tag and trace context read (`Gray-Publish`, `baggage`,
//!                  `traceparent`), a new span id in `traceparent`, hop-by-hop headers
//!                  dropped both ways, a request counter and a latency histogram
//! ```
//!
//! Not a proxy anyone should run: no routing, no pool shared between clients, no
//! chunked bodies in `bare` and `mesh` (the connection is closed), no limits, no
//! timeouts. `bare` and `mesh` make one `read` and one `write` per message each way:
//! the system calls of nginx's hop. Prints `bare_addr=IP:PORT` on stdout once listening; runs
//! until killed.

#![allow(clippy::print_stdout)]

#[path = "bare-proxy/mesh.rs"]
mod mesh;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::{Buf, BytesMut};
use clap::{Parser, ValueEnum};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A bare HTTP/1.1 forwarder, one worker thread.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on (port 0: the kernel picks; the address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Where every connection is forwarded.
    #[arg(long)]
    upstream: SocketAddr,
    /// Who reads and writes HTTP.
    #[arg(long, value_enum, default_value = "bare")]
    codec: Codec,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Codec {
    /// httparse on the read buffer, the bytes forwarded unchanged.
    Bare,
    /// hyper's HTTP/1 server and client connections, as graylane-sidecar uses them.
    Hyper,
    /// httparse on the read buffer, and the mesh's per-request work done there: what
    /// a codec of our own would cost (issue 15).
    Mesh,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?
        .block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.addr).await.context("bind")?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "bare_addr={}", listener.local_addr()?)?;
    stdout.flush()?;
    let metrics = Arc::new(mesh::Metrics::default());
    loop {
        let (client, _) = listener.accept().await?;
        let (upstream, codec, metrics) = (args.upstream, args.codec, Arc::clone(&metrics));
        tokio::spawn(async move {
            // The load generators close their connections at the end: an error here is
            // the end of a connection, nothing to report.
            let _ = match codec {
                Codec::Bare => forward(client, upstream).await,
                Codec::Hyper => forward_hyper(client, upstream).await,
                Codec::Mesh => mesh::forward(client, upstream, &metrics).await,
            };
        });
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let (mut from_client, mut from_up) =
        (BytesMut::with_capacity(8192), BytesMut::with_capacity(8192));
    loop {
        if !message(&mut client, &mut from_client, &mut up, true).await? {
            return Ok(());
        }
        if !message(&mut up, &mut from_up, &mut client, false).await? {
            return Ok(());
        }
    }
}

async fn forward_hyper(client: TcpStream, upstream: SocketAddr) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(up)).await?;
    tokio::spawn(conn);
    // One request at a time on an HTTP/1.1 connection: the lock is never contended.
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let sender = Arc::clone(&sender);
        async move {
            let mut sender = sender.lock().await;
            sender.ready().await?;
            sender.send_request(request).await
        }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(client), service)
        .await?;
    Ok(())
}

/// Moves one message from `from` to `to`; `false` once `from` has closed between
/// messages.
async fn message(
    from: &mut TcpStream,
    buf: &mut BytesMut,
    to: &mut TcpStream,
    request: bool,
) -> anyhow::Result<bool> {
    let (head, body) = loop {
        if let Some(parsed) = parse(buf, request)? {
            break parsed;
        }
        buf.reserve(4096);
        if from.read_buf(buf).await? == 0 {
            anyhow::ensure!(buf.is_empty(), "closed mid-head");
            return Ok(false);
        }
    };
    let total = head + body;
    while buf.len() < total {
        buf.reserve(total - buf.len());
        anyhow::ensure!(from.read_buf(buf).await? > 0, "closed mid-body");
    }
    to.write_all(&buf[..total]).await?;
    buf.advance(total);
    Ok(true)
}

/// The head's length and the Content-Length, once the head is whole.
fn parse(buf: &[u8], request: bool) -> anyhow::Result<Option<(usize, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let status = if request {
        httparse::Request::new(&mut headers).parse(buf)?
    } else {
        httparse::Response::new(&mut headers).parse(buf)?
    };
    let httparse::Status::Complete(head) = status else {
        return Ok(None);
    };
    let mut body = 0;
    for h in headers.iter().take_while(|h| !h.name.is_empty()) {
        anyhow::ensure!(
            !h.name.eq_ignore_ascii_case("transfer-encoding"),
            "chunked bodies are not forwarded"
        );
        if h.name.eq_ignore_ascii_case("content-length") {
            body = std::str::from_utf8(h.value)?.trim().parse()?;
        }
    }
    Ok(Some((head, body)))
}

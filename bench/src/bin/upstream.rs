//! `upstream`: the app behind every proxy in `bench/proxy/run.sh`, identical for all of
//! them, and as cheap as we can make it (it shares a core with the load generator).
//!
//! ```text
//!  one listener, one thread ─► HTTP/1.1, or HTTP/2 with prior knowledge (h2c)
//!     ├─ content-type: application/grpc* ─► 200, one empty gRPC message, grpc-status: 0
//!     └─ anything else                    ─► 200 "ok"
//! ```
//!
//! The gRPC answer is framed by hand (5-byte prefix, trailers; see the gRPC "PROTOCOL-
//! HTTP2" spec) rather than served by tonic: a proxy sees the same bytes either way, and
//! this spends less of the load generator's core. Prints `upstream_addr=IP:PORT` on
//! stdout once listening; runs until killed.

#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// A fast HTTP/1.1 + h2c + gRPC upstream for the proxy benchmark.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on (port 0: the kernel picks; the address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
}

type Reply = BoxBody<Bytes, Infallible>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One thread, like the proxies under test: the run pins it with taskset.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?
        .block_on(serve(args.addr))
}

async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("--addr {addr}"))?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "upstream_addr={}", listener.local_addr()?)?;
    stdout.flush()?;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The proxies multiplex many client streams onto few upstream connections.
    builder.http2().max_concurrent_streams(1024);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and friends: the run sees errors in its counts; keep serving.
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = builder
            .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
            .into_owned();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

async fn answer(request: Request<Incoming>) -> Result<Response<Reply>, Infallible> {
    let grpc = request
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // Read the request to its end, so no proxy sees its stream reset early.
    let _ = request.into_body().collect().await;
    if !grpc {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok")).boxed()));
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    // Uncompressed flag 0, length 0: one empty message (every proto3 message's default).
    let body = Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))
        .with_trailers(std::future::ready(Some(Ok(trailers))))
        .boxed();
    let mut response = Response::new(body);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/grpc+proto"),
    );
    Ok(response)
}

//! The server side of a connection against `h2`'s server, with the same `h2` client
//! on the other end of an in-memory connection, on one thread: requests of 16
//! streams at a time (as `h2load -m 16`), each a GET answered 200 with a 2-byte body
//! and a content-type. The client's cost is the same in both runs, so the
//! difference is the servers'.
//!
//! `cargo bench -p graylane-http2 --bench server` prints ns per request for both,
//! best of five runs of 20,000. `SERVER=ours|h2 REQUESTS=N` runs one server for N
//! requests and nothing else, for callgrind. Results in bench/README.md.

// The bench's report is its output.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use bytes::Bytes;
use graylane_http2::server::{Config, Connection, Event};
use http::{HeaderValue, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinSet;

const CONCURRENCY: usize = 16;

/// Serves with this crate's connection: answers each request when its head ends
/// the stream.
async fn ours(io: DuplexStream) {
    let mut conn = Connection::new(Config::default());
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut buf = Vec::with_capacity(1 << 16);
    let mut done = Vec::new();
    let (mut head, ()) = Response::new(()).into_parts();
    head.headers
        .insert("content-type", HeaderValue::from_static("text/plain"));
    loop {
        if !conn.output().is_empty() {
            if wr.write_all(conn.output()).await.is_err() {
                return;
            }
            let n = conn.output().len();
            conn.advance(n);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let Ok(used) = conn.recv(&buf, &mut |e| {
            if let Event::Request {
                stream,
                end_stream: true,
                ..
            } = e
            {
                done.push(stream);
            }
        }) else {
            return;
        };
        buf.drain(..used);
        for stream in done.drain(..) {
            let _ = conn.send_response(stream, &head, false);
            let _ = conn.send_data(stream, b"ok", true);
        }
    }
}

/// Serves with `h2`'s server.
async fn h2s(io: DuplexStream) {
    let Ok(mut connection) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((_request, mut respond))) = connection.accept().await {
        let response = Response::builder()
            .header("content-type", "text/plain")
            .body(())
            .unwrap_or_default();
        if let Ok(mut send) = respond.send_response(response, false) {
            let _ = send.send_data(Bytes::from_static(b"ok"), true);
        }
    }
}

/// `requests` GETs, `CONCURRENCY` at a time, against `serve`.
async fn run<F: std::future::Future<Output = ()> + 'static>(
    serve: impl FnOnce(DuplexStream) -> F,
    requests: usize,
) {
    let (server, client) = tokio::io::duplex(1 << 16);
    tokio::task::spawn_local(serve(server));
    let (client, connection) = h2::client::handshake(client)
        .await
        .unwrap_or_else(|e| panic!("handshake: {e}"));
    tokio::task::spawn_local(connection);
    let mut calls = JoinSet::new();
    for lane in 0..CONCURRENCY {
        let mut client = client.clone();
        let n = requests / CONCURRENCY + usize::from(lane < requests % CONCURRENCY);
        calls.spawn_local(async move {
            for _ in 0..n {
                client = client.ready().await.unwrap_or_else(|e| panic!("{e}"));
                let request = Request::get("http://bench/ok").body(()).unwrap_or_default();
                let (answer, _) = client
                    .send_request(request, true)
                    .unwrap_or_else(|e| panic!("{e}"));
                let mut body = answer.await.unwrap_or_else(|e| panic!("{e}")).into_body();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.unwrap_or_default();
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
            }
        });
    }
    while calls.join_next().await.is_some() {}
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let local = tokio::task::LocalSet::new();
    if let Ok(which) = std::env::var("SERVER") {
        let requests = std::env::var("REQUESTS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(10_000);
        match which.as_str() {
            "ours" => local.block_on(&runtime, run(ours, requests)),
            _ => local.block_on(&runtime, run(h2s, requests)),
        }
        return;
    }
    const REQUESTS: usize = 20_000;
    for (name, ours_first) in [("graylane-http2", true), ("h2", false)] {
        let best = (0..5)
            .map(|_| {
                let start = Instant::now();
                if ours_first {
                    local.block_on(&runtime, run(ours, REQUESTS));
                } else {
                    local.block_on(&runtime, run(h2s, REQUESTS));
                }
                start.elapsed().as_nanos() / REQUESTS as u128
            })
            .min()
            .unwrap_or(0);
        println!("{name}: {best} ns per request (client included), best of 5 x {REQUESTS}");
    }
}

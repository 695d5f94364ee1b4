//! `graylane-demo-app`: the small service `graylane demo` and the end-to-end tests run
//! behind sidecars. It answers with who it is and what it received, after calling its
//! downstream (if any) through its own sidecar's outbound listener.
//!
//! How it forwards context to the downstream call is chosen per request by the
//! `x-demo-forward` header (passed along the chain): `header` (Gray-Publish, baggage,
//! traceparent), `traceparent` (only that, like tracing instrumentation), `baggage`
//! (only that), `none`. It always relays `Graylane-Debug` down and `Graylane-Route` up,
//! so the hop trail covers the whole chain. `x-demo-delay-ms` makes it answer late,
//! `x-demo-status` with that status (one request); `--delay` and `--status`
//! do the same for every request; a POST body is read to its end and answered with `{"received": bytes}`.

#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

/// A demo service for graylane.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Service name it reports.
    #[arg(long)]
    service: String,
    /// Version it reports.
    #[arg(long)]
    version: String,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Downstream service to call on every request.
    #[arg(long)]
    call: Option<String>,
    /// Answer every request with this status (a broken deployment, for demos of
    /// retries and fallbacks).
    #[arg(long)]
    status: Option<u16>,
    /// Answer every request this late (a slow deployment, for demos and tests of
    /// latency checks), e.g. `200ms`; added to any `x-demo-delay-ms`.
    #[arg(long, value_parser = parse_delay)]
    delay: Option<std::time::Duration>,
    /// Where its downstream calls go, HOST:PORT: its sidecar's outbound listener, or
    /// (transparent mode) the service's own name and port, e.g. `orders:8080`, with
    /// interception doing the rest. `-` reads it from the first line of
    /// standard input (when the sidecar starts after the app, on a port bound from 0).
    #[arg(long)]
    outbound: Option<String>,
}

/// `--delay`: the one duration syntax of the rules (`200ms`, `1.5s`), at most a minute
/// (a typo such as `2h` would otherwise hang every caller).
fn parse_delay(s: &str) -> Result<std::time::Duration, String> {
    let delay = graylane_routing::Duration::parse(s)?.as_std();
    if delay > std::time::Duration::from_secs(60) {
        return Err(format!("{s} is longer than a minute"));
    }
    Ok(delay)
}

/// Headers passed to the downstream call in each forwarding mode.
fn forwarded(mode: &str) -> &'static [&'static str] {
    match mode {
        "header" => &["gray-publish", "baggage", "traceparent"],
        "traceparent" => &["traceparent"],
        "baggage" => &["baggage"],
        _ => &[],
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .context("--listen")?;
    println!(
        "graylane-demo-app listening addr={}",
        listener.local_addr()?
    );
    // A fresh connection per call: the demo shows routing, and interception rules may
    // change under it (init-iptables --cleanup), which a pooled connection outlives.
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let outbound = outbound_address(args.outbound.as_deref()).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let (args, client, outbound) = (args.clone(), client.clone(), outbound.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (args, client, outbound) = (args.clone(), client.clone(), outbound.clone());
                async move { Ok::<_, Infallible>(handle(&args, outbound, &client, req).await) }
            });
            // HTTP/1.1 and HTTP/2 (prior knowledge), as a gRPC-capable app would.
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `--outbound`: HOST:PORT, or `-` for the first line of standard input.
async fn outbound_address(flag: Option<&str>) -> anyhow::Result<Option<String>> {
    let text = match flag {
        None => return Ok(None),
        Some("-") => tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        })
        .await?
        .context("reading --outbound from stdin")?,
        Some(addr) => addr.to_string(),
    };
    let text = text.trim();
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(Some(text.to_string()))
        }
        _ => anyhow::bail!("--outbound {text:?}: expected HOST:PORT"),
    }
}

async fn handle(
    args: &Args,
    outbound: Option<String>,
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() == http::Method::POST {
        return Response::new(Full::new(Bytes::from(
            json!({"received": drain(req.into_body()).await}).to_string(),
        )));
    }
    let headers = req.headers().clone();
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // One line per request: what demos and tests read to see who got what.
    println!(
        "request {} {} tag={} mirror={}",
        req.method(),
        req.uri().path(),
        get("gray-publish").unwrap_or_else(|| "-".into()),
        get("graylane-mirror").is_some()
    );
    let mode = get("x-demo-forward").unwrap_or_else(|| "header".into());
    // `x-demo-delay-ms`: answer late (for timeout demos and tests).
    if let Some(ms) = get("x-demo-delay-ms").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
    }
    if let Some(delay) = args.delay {
        tokio::time::sleep(delay).await;
    }
    let (downstream, trail) = match (&args.call, outbound) {
        (Some(target), Some(outbound)) => call(client, &outbound, target, &headers, &mode).await,
        _ => (Value::Null, None),
    };
    let body = json!({
        "service": args.service,
        "version": args.version,
        "tag": get("gray-publish"),
        "baggage": get("baggage"),
        "traceparent": get("traceparent"),
        "downstream": downstream,
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    if let Some(status) = args.status.and_then(|s| StatusCode::from_u16(s).ok()) {
        *response.status_mut() = status;
    }
    // `x-demo-status`: answer this one request with this status (a share of failing
    // requests, for tests of error rates).
    let asked = get("x-demo-status").and_then(|v| v.parse::<u16>().ok());
    if let Some(status) = asked.and_then(|s| StatusCode::from_u16(s).ok()) {
        *response.status_mut() = status;
    }
    if let Some(trail) = trail {
        response.headers_mut().insert("graylane-route", trail);
    }
    response
}

/// Reads a request body to its end, frame by frame (never whole), counting bytes.
async fn drain(mut body: Incoming) -> u64 {
    let mut received = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        received += frame.data_ref().map_or(0, |d| d.len() as u64);
    }
    received
}

/// Calls `target` through the sidecar (origin-form with `Host: target`).
async fn call(
    client: &Client<HttpConnector, Full<Bytes>>,
    outbound: &str,
    target: &str,
    incoming: &HeaderMap,
    mode: &str,
) -> (Value, Option<HeaderValue>) {
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.uri_mut() = match format!("http://{outbound}/").parse() {
        Ok(uri) => uri,
        Err(e) => return (json!({"error": e.to_string()}), None),
    };
    let headers = request.headers_mut();
    headers.insert(
        http::header::HOST,
        HeaderValue::from_str(target).unwrap_or(HeaderValue::from_static("invalid")),
    );
    for name in forwarded(mode)
        .iter()
        .chain(&["graylane-debug", "x-demo-forward"])
    {
        if let Some(v) = incoming.get(*name) {
            headers.insert(*name, v.clone());
        }
    }
    match client.request(request).await {
        Err(e) => (json!({"error": e.to_string()}), None),
        Ok(response) => {
            let status = response.status();
            let trail = response.headers().get("graylane-route").cloned();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let value = if status == StatusCode::OK {
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            } else {
                json!({"status": status.as_u16(), "error": String::from_utf8_lossy(&bytes)})
            };
            (value, trail)
        }
    }
}

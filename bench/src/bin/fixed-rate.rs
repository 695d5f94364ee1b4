//! `fixed-rate`: open-loop load at a fixed request rate, for the latency half of
//! `bench/proxy/run.sh` (HTTP/1.1, h2c or gRPC).
//!
//! ```text
//!  pacer thread: sleep until t0 + i/rate ─► bounded channel ─► one task per request
//!  latency = response read to its end (trailers included) − request handed to hyper
//! ```
//!
//! Why not `h2load --rps`: its clients' timers fire together, so `-c 50 --rps 40` sends
//! bursts of 50 requests every 25 ms, and the percentiles measure burst queueing. Here
//! requests are evenly spaced and no request waits for an earlier one's response (an
//! HTTP/1.1 request with no idle pooled connection opens a new one), so a slow response
//! cannot hide the delay of those behind it. `lag` (task start − scheduled time) shows
//! whether the generator itself kept up.
//!
//! `--connect HOST:PORT` sends every connection there whatever the URL names, so
//! `--url http://up/ --connect 127.0.0.1:15001` reaches a proxy that routes by Host /
//! `:authority` (a sidecar's outbound listener; `bench/proxy/mtls.sh`).
//!
//! Prints one line: `count= errors= p50_us= p90_us= p99_us= max_us= lag_p99_us=`.

#![allow(clippy::print_stdout)]

use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::{Parser, ValueEnum};
use graylane_bench::Stats;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue, TE};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

/// Open-loop load at a fixed rate; prints latency percentiles.
#[derive(Parser, Debug)]
struct Args {
    /// Target, e.g. http://127.0.0.1:8080/ (gRPC: the method path).
    #[arg(long)]
    url: Uri,
    #[arg(long, value_enum)]
    proto: Proto,
    /// Requests per second.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds at the same rate before measuring (connections, pools, caches).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// A request not answered within this many seconds is an error.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
    /// Connect here (HOST:PORT) instead of the URL's host; Host / `:authority` stay the
    /// URL's (a proxy that routes by them).
    #[arg(long)]
    connect: Option<String>,
    /// Also write every measured request here, one line each: `scheduled_us latency_us
    /// ok` (scheduled from the start of the run), to see when the slow ones came.
    #[arg(long)]
    samples: Option<std::path::PathBuf>,
}

/// hyper's connector, sent to `--connect` when given.
#[derive(Clone)]
struct Connector {
    http: HttpConnector,
    to: Option<Uri>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = <HttpConnector as tower_service::Service<Uri>>::Response;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = <HttpConnector as tower_service::Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        self.http.call(self.to.clone().unwrap_or(dst))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Proto {
    H1,
    H2,
    Grpc,
}

/// One scheduled request.
struct Tick {
    at: Instant,
    measured: bool,
}

struct Sample {
    /// Scheduled time, from the start of the run.
    at: Duration,
    measured: bool,
    ok: bool,
    latency: Duration,
    lag: Duration,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.rate > 0 && args.duration > 0 && args.timeout > 0,
        "--rate, --duration and --timeout must be positive"
    );
    // One thread: the run pins it to the load generator's core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let samples = runtime.block_on(run(&args))?;
    report(&samples);
    if let Some(path) = &args.samples {
        write_samples(path, &samples).with_context(|| format!("--samples {}", path.display()))?;
    }
    Ok(())
}

async fn run(args: &Args) -> anyhow::Result<Vec<Sample>> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let to = match &args.connect {
        Some(addr) => Some(
            format!("http://{addr}")
                .parse::<Uri>()
                .with_context(|| format!("--connect {addr}"))?,
        ),
        None => None,
    };
    let client: Client<Connector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(args.proto != Proto::H1)
        .build(Connector { http, to });
    let rate = u64::from(args.rate);
    let warm = rate * args.warmup;
    let total = warm + rate * args.duration;
    // Bounded: should the runtime fall behind, the pacer blocks and `lag` shows it.
    let (tick_tx, mut tick_rx) = mpsc::channel::<Tick>(4096);
    let t0 = Instant::now();
    let pacer = std::thread::spawn(move || {
        for i in 0..total {
            let at = t0 + Duration::from_nanos(i * 1_000_000_000 / rate);
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let measured = i >= warm;
            if tick_tx.blocking_send(Tick { at, measured }).is_err() {
                return;
            }
        }
    });
    let (done_tx, mut done_rx) = mpsc::channel::<Sample>(4096);
    let collector = tokio::spawn(async move {
        // Sized up front: growing it copies the samples mid-run, a pause every proxy
        // would be measured with.
        let mut samples = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        while let Some(sample) = done_rx.recv().await {
            samples.push(sample);
        }
        samples
    });
    let timeout = Duration::from_secs(args.timeout);
    while let Some(tick) = tick_rx.recv().await {
        let request = build(&args.url, args.proto)?;
        let (client, done) = (client.clone(), done_tx.clone());
        let proto = args.proto;
        tokio::spawn(async move {
            let sent = Instant::now();
            let ok = tokio::time::timeout(timeout, exchange(&client, request, proto))
                .await
                .unwrap_or(false);
            let sample = Sample {
                at: tick.at - t0,
                measured: tick.measured,
                ok,
                latency: sent.elapsed(),
                lag: sent.saturating_duration_since(tick.at),
            };
            let _ = done.send(sample).await;
        });
    }
    drop(done_tx);
    let _ = pacer.join();
    // Every task ends within `timeout`; this bound is only a backstop.
    tokio::time::timeout(timeout + Duration::from_secs(5), collector)
        .await
        .context("requests still running after --timeout")?
        .context("collector task")
}

fn build(url: &Uri, proto: Proto) -> anyhow::Result<Request<Full<Bytes>>> {
    let builder = Request::builder().uri(url.clone());
    let request = match proto {
        Proto::H1 | Proto::H2 => builder.method(Method::GET).body(Full::default()),
        // One empty message (flag 0, length 0), as a unary call with a default request.
        Proto::Grpc => builder
            .method(Method::POST)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
            .header(TE, HeaderValue::from_static("trailers"))
            .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))),
    };
    request.context("build request")
}

/// true: 200, body read to its end, and for gRPC `grpc-status: 0` in the trailers.
async fn exchange(
    client: &Client<Connector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
    proto: Proto,
) -> bool {
    let Ok(response) = client.request(request).await else {
        return false;
    };
    let status = response.status();
    let Ok(body) = response.into_body().collect().await else {
        return false;
    };
    let grpc_ok = proto != Proto::Grpc
        || body
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .is_some_and(|v| v == "0");
    status == StatusCode::OK && grpc_ok
}

fn write_samples(path: &std::path::Path, samples: &[Sample]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for s in samples.iter().filter(|s| s.measured) {
        let (at, latency) = (s.at.as_micros(), s.latency.as_micros());
        writeln!(out, "{at} {latency} {}", u8::from(s.ok))?;
    }
    out.flush()
}

fn report(samples: &[Sample]) {
    let measured: Vec<&Sample> = samples.iter().filter(|s| s.measured).collect();
    let errors = measured.iter().filter(|s| !s.ok).count();
    let latency = Stats::of(
        measured
            .iter()
            .filter(|s| s.ok)
            .map(|s| s.latency)
            .collect(),
    );
    let lag = Stats::of(measured.iter().map(|s| s.lag).collect());
    let us = |d: Duration| d.as_micros();
    println!(
        "count={} errors={errors} p50_us={} p90_us={} p99_us={} max_us={} lag_p99_us={}",
        measured.len(),
        us(latency.pct(50)),
        us(latency.pct(90)),
        us(latency.pct(99)),
        us(latency.max()),
        us(lag.pct(99)),
    );
}

//! Closed-loop HTTP/1.1 load: a few keep-alive connections, each sending the next GET
//! as soon as the previous answer is read, recording when each request started and how
//! long it took.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// One request: its start (since the load's epoch) and its latency.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    pub(crate) start: Duration,
    pub(crate) latency: Duration,
}

/// A request that takes longer than this fails the run (a stall of seconds is a bug,
/// not a measurement).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The running load; `stop` ends it and returns every sample.
pub(crate) struct Load {
    stop: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<Vec<Sample>>>,
}

impl Load {
    /// Opens `connections` connections to `addr` and starts sending on each.
    pub(crate) async fn start(
        addr: SocketAddr,
        connections: usize,
        epoch: Instant,
    ) -> anyhow::Result<Load> {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for _ in 0..connections {
            let sender = connect(addr).await?;
            tasks.spawn(run(sender, addr, epoch, stopped.clone()));
        }
        Ok(Load { stop, tasks })
    }

    /// Stops every connection after its request in flight; all samples, unsorted.
    pub(crate) async fn stop(mut self) -> anyhow::Result<Vec<Sample>> {
        let _ = self.stop.send(true);
        let mut all = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            all.extend(done.context("load task")??);
        }
        Ok(all)
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Empty<&'static [u8]>>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn run(
    mut sender: SendRequest<Empty<&'static [u8]>>,
    addr: SocketAddr,
    epoch: Instant,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::with_capacity(1 << 16);
    while !*stopped.borrow() {
        let request = hyper::Request::get("/")
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::new())?;
        let started = Instant::now();
        let exchange = async {
            let response = sender.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            anyhow::Ok(status)
        };
        let status = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .context("a request took over 10 s")??;
        ensure!(status.is_success(), "the sidecar answered {status}");
        samples.push(Sample {
            start: started - epoch,
            latency: started.elapsed(),
        });
    }
    Ok(samples)
}

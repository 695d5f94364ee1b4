//! The simulated sidecars: each subscribes on its own connection, ACKs every snapshot
//! and reports what it received to one collector.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use graylane_proto::v1::discovery_client::DiscoveryClient;
use graylane_proto::v1::sidecar_message::Message;
use graylane_proto::v1::{Ack, Hello, SidecarMessage};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

/// One snapshot as a subscriber received it.
pub(crate) struct Seen {
    pub(crate) idx: usize,
    pub(crate) version: u64,
    pub(crate) revision: u64,
    /// Set when the snapshot carried the endpoint set.
    pub(crate) endpoints: Option<usize>,
    /// When the decoded snapshot was in the subscriber's hands.
    pub(crate) at: Instant,
}

/// What a subscriber task reports to the collector.
pub(crate) enum Event {
    Seen(Seen),
    Failed(usize, anyhow::Error),
}

/// What the collector knows of every subscriber.
pub(crate) struct Subs {
    n: usize,
    pub(crate) version: Vec<u64>,
    pub(crate) revision: Vec<u64>,
    endpoints: Vec<usize>,
    /// Subscribers whose latest endpoint set has all `n` instances.
    pub(crate) full_endpoints: usize,
}

impl Subs {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            n,
            version: vec![0; n],
            revision: vec![0; n],
            endpoints: vec![0; n],
            full_endpoints: 0,
        }
    }

    pub(crate) fn record(&mut self, seen: &Seen) {
        self.version[seen.idx] = seen.version;
        self.revision[seen.idx] = seen.revision;
        if let Some(count) = seen.endpoints {
            let was = self.endpoints[seen.idx] == self.n;
            self.endpoints[seen.idx] = count;
            match (was, count == self.n) {
                (false, true) => self.full_endpoints += 1,
                (true, false) => self.full_endpoints -= 1,
                _ => {}
            }
        }
    }
}

/// The next snapshot any subscriber received; a subscriber's failure is an error.
pub(crate) async fn next_event(
    events: &mut mpsc::UnboundedReceiver<Event>,
    timeout: Duration,
) -> anyhow::Result<Seen> {
    match tokio::time::timeout(timeout, events.recv()).await {
        Err(_) => bail!("no snapshot within {timeout:?}"),
        Ok(None) => bail!("every subscriber ended"),
        Ok(Some(Event::Failed(idx, e))) => Err(e.context(format!("subscriber {idx}"))),
        Ok(Some(Event::Seen(seen))) => Ok(seen),
    }
}

/// A subscriber task: runs [`subscribe`] and reports its failure as an event.
pub(crate) async fn subscriber(
    idx: usize,
    url: String,
    gate: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
) {
    if let Err(e) = subscribe(idx, url, gate, &events).await {
        let _ = events.send(Event::Failed(idx, e));
    }
}

/// A sidecar's side of the stream: its own connection, Hello, then ACK every snapshot.
async fn subscribe(
    idx: usize,
    url: String,
    gate: Arc<Semaphore>,
    events: &mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let service = format!("svc-{:02}", idx % 20);
    let hello = Hello {
        instance_id: format!("{service}-{idx:05}"),
        service,
        labels: HashMap::from([("version".to_string(), format!("v{}", 1 + idx % 2))]),
        address: format!("127.0.0.1:{}", 10_000 + idx % 50_000),
        ..Hello::default()
    };
    let (tx, rx) = mpsc::channel(16);
    tx.send(SidecarMessage {
        message: Some(Message::Hello(hello)),
    })
    .await?;
    // The client (and with it the connection) lives as long as this task.
    let (_client, mut inbound) = {
        let _permit = gate.acquire().await?;
        let channel = Endpoint::from_shared(url)?
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await?;
        let mut client = DiscoveryClient::new(channel);
        let inbound = client
            .subscribe(ReceiverStream::new(rx))
            .await?
            .into_inner();
        (client, inbound)
    };
    // The endpoint set as a sidecar holds it: a full set replaces it, a delta
    // removes then upserts; a snapshot may come in parts (see the proto).
    let mut endpoints: HashSet<String> = HashSet::new();
    let mut replacing: Option<HashSet<String>> = None;
    let mut touched = false;
    loop {
        let Some(snapshot) = inbound.message().await? else {
            bail!("stream ended");
        };
        let at = Instant::now();
        if let Some(set) = &snapshot.endpoints {
            replacing
                .get_or_insert_default()
                .extend(set.endpoints.iter().map(|e| e.instance_id.clone()));
        }
        if let Some(delta) = &snapshot.endpoint_changes {
            for id in &delta.removed {
                endpoints.remove(id);
            }
            endpoints.extend(delta.upserted.iter().map(|e| e.instance_id.clone()));
        }
        touched |= snapshot.endpoints.is_some() || snapshot.endpoint_changes.is_some();
        if snapshot.more {
            continue;
        }
        if let Some(set) = replacing.take() {
            endpoints = set;
        }
        let seen = Seen {
            idx,
            version: snapshot.version,
            revision: snapshot.revision,
            endpoints: std::mem::take(&mut touched).then_some(endpoints.len()),
            at,
        };
        if events.send(Event::Seen(seen)).is_err() {
            return Ok(()); // the bench is done
        }
        tx.send(SidecarMessage {
            message: Some(Message::Ack(Ack {
                version: snapshot.version,
            })),
        })
        .await?;
    }
}

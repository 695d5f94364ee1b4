//! The simulated sidecars: each subscribes on its own connection, ACKs every snapshot
//! and reports what it received to one collector.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use graylane_exposition::backoff::Backoff;
use graylane_proto::v1::discovery_client::DiscoveryClient;
use graylane_proto::v1::sidecar_message::Message;
use graylane_proto::v1::{Ack, EndpointScope, Hello, ServiceName, SidecarMessage};
use prost::Message as _;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::fanout::Mesh;

mod attempt;

pub(crate) use self::attempt::{ATTEMPTS, Attempt, Outcome};

/// One snapshot as a subscriber received it.
pub(crate) struct Seen {
    pub(crate) idx: usize,
    pub(crate) version: u64,
    pub(crate) revision: u64,
    /// The subscriber's connection it came on: 1 for the first, then one more per
    /// reconnect.
    pub(crate) conn: u32,
    /// The snapshot's encoded size, all its parts.
    pub(crate) bytes: usize,
    /// Set when the snapshot carried the endpoint set.
    pub(crate) endpoints: Option<usize>,
    /// When the decoded snapshot was in the subscriber's hands.
    pub(crate) at: Instant,
}

/// The sidecar's own settings for its control-plane connection
/// (`graylane-sidecar`'s `discovery::Discovery::open`), so the bench reconnects as a
/// fleet of sidecars would: a 2 s connect timeout, HTTP/2 pings every 10 s, the
/// connection dropped after 5 s without an answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a subscriber task reports to the collector.
pub(crate) enum Event {
    Seen(Seen),
    Failed(usize, anyhow::Error),
}

/// What the collector knows of every subscriber.
pub(crate) struct Subs {
    pub(crate) version: Vec<u64>,
    pub(crate) revision: Vec<u64>,
    /// The connection each one's latest snapshot came on.
    pub(crate) conn: Vec<u32>,
    endpoints: Vec<usize>,
    /// What each one holds when it has every endpoint of its scope.
    expected: Vec<usize>,
    /// Subscribers whose latest endpoint set has every instance of their scope (all
    /// `n` when unscoped).
    pub(crate) full_endpoints: usize,
}

impl Subs {
    pub(crate) fn new(n: usize, mesh: Mesh) -> Self {
        Self {
            expected: (0..n).map(|idx| mesh.expected(idx, n)).collect(),
            version: vec![0; n],
            revision: vec![0; n],
            conn: vec![0; n],
            endpoints: vec![0; n],
            full_endpoints: 0,
        }
    }

    /// Whether subscriber `idx` holds every endpoint of its scope.
    pub(crate) fn is_full(&self, idx: usize) -> bool {
        self.endpoints[idx] == self.expected[idx]
    }

    pub(crate) fn record(&mut self, seen: &Seen) {
        self.version[seen.idx] = seen.version;
        self.revision[seen.idx] = seen.revision;
        self.conn[seen.idx] = seen.conn;
        if let Some(count) = seen.endpoints {
            let full = self.expected[seen.idx];
            let was = self.endpoints[seen.idx] == full;
            self.endpoints[seen.idx] = count;
            match (was, count == full) {
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

/// How a subscriber task behaves when its stream ends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum OnEnd {
    /// The end is a failure of the run.
    Fail,
    /// Reconnect after a jittered backoff, as a sidecar does (100 ms doubling to 5 s):
    /// the connection storm after a control-plane restart.
    Reconnect,
}

/// A subscriber task: runs [`subscribe`] (again, with `OnEnd::Reconnect`) and reports
/// a failure as an event. `n`: the subscribers in the run (instance ids `..-{idx}`).
pub(crate) async fn subscriber(
    idx: usize,
    n: usize,
    mesh: Mesh,
    url: String,
    gate: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
    on_end: OnEnd,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut conn = 0_u32;
    loop {
        conn += 1;
        let gate = (conn == 1).then_some(&gate);
        let started = Instant::now();
        let mut connected = None;
        // Attempts are only timed where reconnects happen (the storm).
        let timed = matches!(on_end, OnEnd::Reconnect).then_some(started);
        let result = subscribe(
            (idx, n, mesh),
            conn,
            &url,
            gate,
            &events,
            &mut connected,
            timed,
        )
        .await;
        if events.is_closed() {
            return; // the bench is done
        }
        let outcome = attempt::outcome(idx, conn, &result, connected);
        match (result, on_end) {
            (Ok(true), OnEnd::Reconnect) => backoff.reset(),
            // Refused or cut before a snapshot: back off further.
            (Ok(false) | Err(_), OnEnd::Reconnect) => {}
            (Ok(_), OnEnd::Fail) => {
                let _ = events.send(Event::Failed(idx, anyhow::anyhow!("stream ended")));
                return;
            }
            (Err(e), OnEnd::Fail) => {
                let _ = events.send(Event::Failed(idx, e));
                return;
            }
        }
        let wait = backoff.next_wait();
        attempt::record(Attempt {
            idx,
            started,
            connected,
            ended: Instant::now(),
            outcome,
            wait,
        });
        tokio::time::sleep(wait).await;
    }
}

/// A sidecar's side of one stream: its own connection, Hello, then ACK every snapshot.
/// `gate` bounds concurrent connects (the first connect only). Returns when the stream
/// ends: `true` if it delivered a snapshot, `false` if the bench is done.
async fn subscribe(
    (idx, n, mesh): (usize, usize, Mesh),
    conn: u32,
    url: &str,
    gate: Option<&Arc<Semaphore>>,
    events: &mpsc::UnboundedSender<Event>,
    connected: &mut Option<Instant>,
    started: Option<Instant>,
) -> anyhow::Result<bool> {
    let service = mesh.service(idx);
    let scope = mesh.calls.map(|_| EndpointScope {
        services: (mesh.calls(idx).into_iter())
            .map(|s| ServiceName {
                namespace: String::new(),
                service: mesh.service(s),
            })
            .collect(),
    });
    let hello = Hello {
        instance_id: format!("{service}-{idx:05}"),
        service,
        labels: HashMap::from([("version".to_string(), format!("v{}", 1 + idx % 2))]),
        address: format!("127.0.0.1:{}", 10_000 + idx % 50_000),
        scope,
        ..Hello::default()
    };
    let (tx, rx) = mpsc::channel(16);
    tx.send(SidecarMessage {
        message: Some(Message::Hello(hello)),
    })
    .await?;
    // The client (and with it the connection) lives as long as this call.
    let (_client, mut inbound) = {
        let _permit = match gate {
            Some(gate) => Some(gate.acquire().await?),
            None => None,
        };
        let channel = Endpoint::from_shared(url.to_string())?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .connect()
            .await?;
        *connected = Some(Instant::now());
        let mut client = DiscoveryClient::new(channel);
        let inbound = client
            .subscribe(ReceiverStream::new(rx))
            .await?
            .into_inner();
        if let Some(started) = started {
            ATTEMPTS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Attempt {
                    idx,
                    started,
                    connected: *connected,
                    ended: Instant::now(),
                    outcome: Outcome::Opened,
                    wait: Duration::ZERO,
                });
        }
        (client, inbound)
    };
    // The endpoint set as a sidecar holds it: a full set replaces it, a delta
    // removes then upserts; a snapshot may come in parts (see the proto). Kept as a
    // bitset of subscriber indices: 10,000 subscribers each holding 10,000 id strings
    // would make the bench, not the control plane, the thing measured.
    let mut endpoints = Members::new(n);
    let mut replacing: Option<Members> = None;
    let (mut touched, mut bytes, mut delivered) = (false, 0_usize, false);
    loop {
        let Some(snapshot) = inbound.message().await? else {
            return Ok(delivered);
        };
        let at = Instant::now();
        bytes += snapshot.encoded_len();
        if let Some(set) = &snapshot.endpoints {
            let next = replacing.get_or_insert_with(|| Members::new(n));
            set.endpoints
                .iter()
                .for_each(|e| next.insert(&e.instance_id));
        }
        if let Some(delta) = &snapshot.endpoint_changes {
            delta.removed.iter().for_each(|id| endpoints.remove(id));
            delta
                .upserted
                .iter()
                .for_each(|e| endpoints.insert(&e.instance_id));
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
            conn,
            version: snapshot.version,
            revision: snapshot.revision,
            endpoints: std::mem::take(&mut touched).then_some(endpoints.len),
            bytes: std::mem::take(&mut bytes),
            at,
        };
        if events.send(Event::Seen(seen)).is_err() {
            return Ok(false); // the bench is done
        }
        delivered = true;
        tx.send(SidecarMessage {
            message: Some(Message::Ack(Ack {
                version: snapshot.version,
            })),
        })
        .await?;
    }
}

/// A set of subscriber indices, parsed from instance ids `svc-NN-IDX`.
struct Members {
    bits: Vec<u64>,
    len: usize,
}

impl Members {
    fn new(n: usize) -> Self {
        Self {
            bits: vec![0; n.div_ceil(64)],
            len: 0,
        }
    }

    fn slot(&self, id: &str) -> Option<(usize, u64)> {
        let idx: usize = id.rsplit_once('-')?.1.parse().ok()?;
        (idx / 64 < self.bits.len()).then_some((idx / 64, 1 << (idx % 64)))
    }

    fn insert(&mut self, id: &str) {
        if let Some((word, bit)) = self.slot(id)
            && self.bits[word] & bit == 0
        {
            self.bits[word] |= bit;
            self.len += 1;
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some((word, bit)) = self.slot(id)
            && self.bits[word] & bit != 0
        {
            self.bits[word] &= !bit;
            self.len -= 1;
        }
    }
}

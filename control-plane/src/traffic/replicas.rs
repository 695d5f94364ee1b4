//! With etcd replicas: each publishes its own sidecars' completed 10 s slots and reads
//! everyone else's, so any replica answers `/api/v1/traffic` for the whole mesh.
//!
//! ```text
//! every slot (+1 s) ─► Traffic::own_slot ─► put P/traffic/<replica>/<slot> (protobuf
//!                                            TrafficReport, lease of the window's length)
//! etcd ─► read P/traffic/, then watch from that read ─► Traffic::merge_remote (others')
//! ```
//!
//! A slot is written once, when it is over, on a lease as long as the window (plus a
//! margin), so etcd forgets it when no query can reach it any more, and a dead
//! replica's traffic stays counted until it leaves the window. The slots read are
//! remembered by key, so a watch read again after an error never counts one twice.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use graylane_proto::v1::TrafficReport;
use prost::Message;
use tokio::sync::watch;

use super::window::{SLOT_MS, SLOTS};
use crate::push::Hub;

/// Past a slot's end before it is published: reports arriving on its last instant
/// are in.
const PUBLISH_DELAY_MS: u64 = 1_000;
/// A published slot lives this long: the window, and a margin for clocks.
const SLOT_TTL_SECS: i64 = (SLOTS as i64 * SLOT_MS as i64) / 1000 + 60;
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(3);

/// One replica's side of the exchange.
pub struct Replicas {
    client: Client,
    /// `P/traffic/`.
    prefix: String,
    replica: String,
}

impl Replicas {
    /// `root` is the store's prefix (`P/`); `replica` names this one in its keys.
    pub fn new(client: Client, root: &str, replica: String) -> Self {
        Self {
            client,
            prefix: format!("{}/traffic/", root.trim_end_matches('/')),
            replica,
        }
    }

    /// Publishes and follows until `shutdown`.
    pub async fn run(self: Arc<Self>, hub: Arc<Hub>, shutdown: watch::Receiver<bool>) {
        let publish = tokio::spawn(Arc::clone(&self).publish(Arc::clone(&hub), shutdown.clone()));
        let follow = tokio::spawn(self.follow(hub, shutdown));
        let _ = publish.await;
        let _ = follow.await;
    }

    /// Every slot, once over: this replica's part of it. A slot that could not be
    /// written (etcd down) is tried again with the next ones, as long as it is in
    /// the window.
    async fn publish(self: Arc<Self>, hub: Arc<Hub>, mut shutdown: watch::Receiver<bool>) {
        let mut next = now_ms() / SLOT_MS;
        loop {
            let due = (next + 1) * SLOT_MS + PUBLISH_DELAY_MS;
            let wait = Duration::from_millis(due.saturating_sub(now_ms()));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|down| *down) => return,
            }
            let current = now_ms() / SLOT_MS;
            // Only slots still inside the window are worth writing.
            next = next.max(current.saturating_sub(SLOTS as u64 - 1));
            while next < current {
                if let Err(e) = self.put_slot(&hub, next).await {
                    tracing::warn!(slot = next, error = %e, "traffic: cannot publish this replica's slot; retrying");
                    break;
                }
                next += 1;
            }
        }
    }

    async fn put_slot(&self, hub: &Hub, slot: u64) -> Result<(), etcd_client::Error> {
        let Some(report) = hub.traffic.own_slot(slot) else {
            return Ok(());
        };
        let mut client = self.client.clone();
        let lease = client.lease_grant(SLOT_TTL_SECS, None).await?.id();
        let key = format!("{}{}/{slot}", self.prefix, self.replica);
        let options = PutOptions::new().with_lease(lease);
        client
            .put(key, report.encode_to_vec(), Some(options))
            .await?;
        Ok(())
    }

    /// Other replicas' slots: all of the prefix, then each new one.
    async fn follow(self: Arc<Self>, hub: Arc<Hub>, mut shutdown: watch::Receiver<bool>) {
        let mut seen = BTreeSet::new();
        let mut pause = RETRY_FIRST;
        loop {
            let result = tokio::select! {
                r = self.follow_once(&hub, &mut seen) => r,
                _ = shutdown.wait_for(|down| *down) => return,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "traffic: watch of other replicas lost; reading again");
            }
            tokio::select! {
                () = tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64())) => {}
                _ = shutdown.wait_for(|down| *down) => return,
            }
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    async fn follow_once(
        &self,
        hub: &Hub,
        seen: &mut BTreeSet<(String, u64)>,
    ) -> Result<(), etcd_client::Error> {
        let mut client = self.client.clone();
        let response = client
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        for kv in response.kvs() {
            self.merge(hub, seen, kv.key(), kv.value());
        }
        let read_at = response.header().map_or(0, |h| h.revision());
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(read_at + 1);
        let mut stream = client.watch(self.prefix.as_str(), Some(options)).await?;
        while let Some(message) = stream.message().await? {
            if message.canceled() {
                return Ok(());
            }
            for event in message.events() {
                if let (EventType::Put, Some(kv)) = (event.event_type(), event.kv()) {
                    self.merge(hub, seen, kv.key(), kv.value());
                }
            }
        }
        Ok(())
    }

    /// One published slot into the hub's traffic, unless it is ours, already read, too
    /// old or unreadable.
    fn merge(&self, hub: &Hub, seen: &mut BTreeSet<(String, u64)>, key: &[u8], value: &[u8]) {
        let key = String::from_utf8_lossy(key);
        let Some((replica, slot)) = key
            .strip_prefix(&self.prefix)
            .and_then(|rest| rest.rsplit_once('/'))
            .and_then(|(r, s)| Some((r.to_string(), s.parse::<u64>().ok()?)))
        else {
            return;
        };
        let oldest = (now_ms() / SLOT_MS).saturating_sub(SLOTS as u64 - 1);
        // Slots that left the window are forgotten, so `seen` stays bounded.
        seen.retain(|(_, s)| *s >= oldest);
        if replica == self.replica || slot < oldest || !seen.insert((replica, slot)) {
            return;
        }
        match TrafficReport::decode(value) {
            Ok(report) => hub.traffic.merge_remote(&report, slot, now_ms()),
            Err(e) => tracing::warn!(%key, error = %e, "traffic: unreadable slot; ignored"),
        }
    }
}

fn now_ms() -> u64 {
    u64::try_from(crate::now_ms()).unwrap_or(0)
}

//! With the etcd store: the instance registry every replica shares.
//!
//! Each replica writes its own connected sidecars (instance, and the revision each
//! ACKed or NACKed, so status and rollouts see everyone through any replica) under
//! `P/instances/<instance id>`, attached to one lease it keeps alive (TTL
//! `--lease-ttl`, default 10 s), and watches `P/instances/` for everyone's. When a
//! replica dies its lease expires and its instances vanish, unless their sidecars
//! reconnected to another replica, which wrote them again under its own lease (a key
//! belongs to the lease of its last write, so the dead lease takes nothing with it).
//!
//! ```text
//! hub.answers ─► mirror: put ours (lease, batched), delete gone ones (if still ours) ─► etcd
//! etcd ─► follow: read P/instances/, then watch from that read ─► hub.set_cluster
//! ```
//!
//! While etcd is unreachable the last view is kept: sidecars go on routing to what
//! they had, and the hub drops our own instances that left (see `Hub::endpoints`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use graylane_proto::v1::Hello;
use tokio::sync::{Notify, watch};

use crate::push::{Hub, LISTED_SCOPE, ListedScope, SidecarEntry, with_identity_defaults};

/// Between attempts after an etcd error: doubles up to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// How long one lease renewal may take, and the pause before another after one
/// failed (an etcd restart takes a second or two: the lease outlives it).
const RENEW_WAIT: Duration = Duration::from_secs(2);
const RENEW_RETRY: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(3);

/// The shared registry of one replica.
pub struct Cluster {
    client: Client,
    /// `P/instances/`.
    prefix: String,
    /// Lease TTL in seconds.
    ttl: i64,
    /// Names this replica in what it writes.
    replica: String,
}

/// A sidecar as stored in etcd: its instance, and what it answered (so `graylane
/// status` and `rules apply --wait` see every sidecar through any replica).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    service: String,
    instance: String,
    address: String,
    labels: BTreeMap<String, String>,
    /// Absent in records of older replicas: then `default` and the service (see
    /// `with_identity_defaults`).
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    service_account: String,
    /// The SPIFFE id its credential decided and its certificate's expiry (Unix
    /// seconds); absent in records of older replicas: none known.
    #[serde(default)]
    identity: String,
    #[serde(default)]
    cert_not_after: i64,
    /// The replica its sidecar is connected to.
    replica: String,
    connected_at_ms: i64,
    acked_revision: u64,
    /// The rule revision and reason of its last NACK, if it still stands.
    nack: Option<(u64, String)>,
    /// Its endpoint scope; absent in records of older replicas: not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint_scope: Option<StoredScope>,
}

/// `ListedScope` in a record: `scoped` false is every endpoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredScope {
    scoped: bool,
    #[serde(default)]
    service_count: usize,
    #[serde(default)]
    services: Vec<(String, String)>,
}

impl StoredScope {
    fn of(scope: ListedScope) -> Option<Self> {
        match scope {
            ListedScope::Unknown => None,
            ListedScope::All => Some(Self {
                scoped: false,
                service_count: 0,
                services: Vec::new(),
            }),
            ListedScope::Scoped { len, first } => Some(Self {
                scoped: true,
                service_count: len,
                services: first.to_vec(),
            }),
        }
    }

    fn listed(stored: Option<Self>) -> ListedScope {
        match stored {
            None => ListedScope::Unknown,
            Some(s) if !s.scoped => ListedScope::All,
            Some(mut s) => {
                // Another replica wrote it: held to the listing's bound all the same.
                s.services.truncate(LISTED_SCOPE);
                ListedScope::Scoped {
                    len: s.service_count.max(s.services.len()),
                    first: s.services.into(),
                }
            }
        }
    }
}

impl Stored {
    fn of(e: SidecarEntry, replica: &str) -> Self {
        Self {
            service: e.hello.service,
            instance: e.hello.instance_id,
            address: e.hello.address,
            labels: e.hello.labels.into_iter().collect(),
            namespace: e.hello.namespace,
            service_account: e.hello.service_account,
            identity: e.identity,
            cert_not_after: e.cert_not_after,
            replica: replica.to_string(),
            connected_at_ms: e.connected_at_ms,
            acked_revision: e.acked_revision,
            nack: e.nack,
            endpoint_scope: StoredScope::of(e.scope),
        }
    }

    fn entry(self) -> SidecarEntry {
        SidecarEntry {
            hello: with_identity_defaults(Hello {
                service: self.service,
                instance_id: self.instance,
                labels: self.labels.into_iter().collect(),
                address: self.address,
                namespace: self.namespace,
                service_account: self.service_account,
                // Another replica's sidecar: its scope matters to its own stream only.
                scope: None,
            }),
            identity: self.identity,
            cert_not_after: self.cert_not_after,
            connected_at_ms: self.connected_at_ms,
            // Snapshot versions are per replica; only the revision means anything here.
            acked_version: 0,
            acked_revision: self.acked_revision,
            nack: self.nack,
            scope: StoredScope::listed(self.endpoint_scope),
        }
    }
}

/// Writes per etcd transaction (etcd's default `--max-txn-ops` is 128).
const TXN_OPS: usize = 64;

impl Cluster {
    /// Connects lazily (a replica may start while etcd is down), the way the etcd
    /// store does (`tls` for `https://` endpoints).
    pub async fn open(
        endpoints: &[String],
        prefix: &str,
        ttl: Duration,
        replica: String,
        tls: Option<&crate::store::EtcdTls>,
    ) -> anyhow::Result<Self> {
        let options = crate::store::connect_options(tls);
        let client = Client::connect(endpoints, Some(options)).await?;
        Ok(Self {
            client,
            prefix: format!("{}/instances/", prefix.trim_end_matches('/')),
            ttl: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(2),
            replica,
        })
    }

    /// Mirrors local instances into etcd and everyone's back into `hub`, until
    /// `shutdown`. The lease is left to expire, not revoked: the sidecars this replica
    /// drops reconnect to another one, which writes their instances under its own lease
    /// before this one runs out, so they never leave the endpoint lists in between.
    pub async fn run(self: Arc<Self>, hub: Arc<Hub>, shutdown: watch::Receiver<bool>) {
        let lease = Arc::new(LeaseState::default());
        let mirror = tokio::spawn(Arc::clone(&self).mirror(
            Arc::clone(&hub),
            Arc::clone(&lease),
            shutdown.clone(),
        ));
        let follow = tokio::spawn(Arc::clone(&self).follow(hub, shutdown));
        let _ = follow.await;
        let _ = mirror.await;
    }

    /// Traffic reports shared through the same etcd, prefix and replica name.
    pub(crate) fn traffic_replicas(&self) -> crate::traffic::Replicas {
        let root = self.prefix.trim_end_matches('/');
        let root = root.strip_suffix("instances").unwrap_or(root);
        crate::traffic::Replicas::new(self.client.clone(), root, self.replica.clone())
    }

    fn key(&self, instance: &str) -> String {
        format!("{}{instance}", self.prefix)
    }

    /// Local → etcd. Writes what changed since the last successful write; after any
    /// failure (or a lost lease) rewrites everything under a fresh lease.
    async fn mirror(
        self: Arc<Self>,
        hub: Arc<Hub>,
        lease: Arc<LeaseState>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // Connects, leaves, ACKs and NACKs: all of it is written.
        let mut changes = hub.answers();
        let mut written: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut pause = RETRY_FIRST;
        loop {
            let ok = match self.sync(&hub, &lease, &mut written).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "etcd registry: cannot write instances; retrying");
                    false
                }
            };
            let retry = async {
                if ok {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64())).await;
            };
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = lease.lost.notified() => {
                    // Cut off from etcd, this replica cannot keep its sidecars'
                    // instances in the mesh: sent to another replica, they are
                    // written under its lease before this one runs out.
                    tracing::warn!(sidecars = hub.local_sidecars().len(), "etcd registry: lease lost; sending this replica's sidecars to reconnect, and registering again");
                    hub.evict_all();
                    lease.id.send_replace(None);
                    written.clear();
                }
                () = retry => {}
                _ = shutdown.wait_for(|down| *down) => return,
            }
            pause = if ok {
                RETRY_FIRST
            } else {
                (pause * 2).min(RETRY_MAX)
            };
        }
    }

    async fn sync(
        &self,
        hub: &Hub,
        lease: &Arc<LeaseState>,
        written: &mut BTreeMap<String, Vec<u8>>,
    ) -> anyhow::Result<()> {
        let current = *lease.id.borrow();
        let id = match current {
            Some(id) => id,
            None => {
                written.clear();
                self.grant(lease).await?
            }
        };
        let want: BTreeMap<String, Vec<u8>> = hub
            .local_sidecars()
            .into_iter()
            .map(|e| {
                let stored = Stored::of(e, &self.replica);
                Ok((stored.instance.clone(), serde_json::to_vec(&stored)?))
            })
            .collect::<anyhow::Result<_>>()?;
        let mut client = self.client.clone();
        // Changed ones, a batch per transaction: 1,000 sidecars ACKing an apply make a
        // few transactions, not 1,000 round trips.
        let changed: Vec<(&String, &Vec<u8>)> = want
            .iter()
            .filter(|(instance, value)| written.get(*instance) != Some(*value))
            .collect();
        for batch in changed.chunks(TXN_OPS) {
            let puts: Vec<TxnOp> = batch
                .iter()
                .map(|(instance, value)| {
                    TxnOp::put(
                        self.key(instance),
                        (*value).clone(),
                        Some(PutOptions::new().with_lease(id)),
                    )
                })
                .collect();
            client.txn(Txn::new().and_then(puts)).await?;
            for (instance, value) in batch {
                written.insert((*instance).clone(), (*value).clone());
            }
        }
        let gone: Vec<String> = written
            .keys()
            .filter(|i| !want.contains_key(*i))
            .cloned()
            .collect();
        for instance in gone {
            // Only while the key is still ours: the sidecar may have moved to another
            // replica, which wrote it under its own lease.
            let key = self.key(&instance);
            let txn = Txn::new()
                .when([Compare::lease(key.as_str(), CompareOp::Equal, id)])
                .and_then([TxnOp::delete(key.as_str(), None)]);
            client.txn(txn).await?;
            written.remove(&instance);
        }
        Ok(())
    }

    /// A new lease, kept alive in the background until it is lost.
    async fn grant(&self, lease: &Arc<LeaseState>) -> anyhow::Result<i64> {
        let mut client = self.client.clone();
        let id = client.lease_grant(self.ttl, None).await?.id();
        let (keeper, answers) = client.lease_keep_alive(id).await?;
        lease.id.send_replace(Some(id));
        let (state, period) = (
            Arc::clone(lease),
            Duration::from_secs(u64::try_from(self.ttl).unwrap_or(10) / 3)
                .max(Duration::from_millis(500)),
        );
        let ttl = Duration::from_secs(u64::try_from(self.ttl).unwrap_or(10));
        let client = self.client.clone();
        tokio::spawn(async move {
            let mut stream = Some((keeper, answers));
            let mut renewed = tokio::time::Instant::now();
            loop {
                let alive = async {
                    if stream.is_none() {
                        stream = Some(client.clone().lease_keep_alive(id).await?);
                    }
                    let Some((keeper, answers)) = stream.as_mut() else {
                        return Ok(false);
                    };
                    keeper.keep_alive().await?;
                    match answers.message().await? {
                        Some(answer) if answer.ttl() > 0 => Ok(true),
                        _ => Ok::<_, etcd_client::Error>(false),
                    }
                };
                // An etcd that stopped answering (a black-holed path) is a failed
                // renewal as surely as one that refuses.
                let next = match tokio::time::timeout(RENEW_WAIT.min(period), alive).await {
                    Ok(Ok(true)) => {
                        renewed = tokio::time::Instant::now();
                        period
                    }
                    // etcd says the lease is gone.
                    Ok(Ok(false)) => break,
                    // Not renewed (etcd restarting, or this replica cut off from it):
                    // the same lease again, soon, until half its TTL has passed since
                    // it was last renewed. Then it is lost, and this replica's sidecars
                    // are sent elsewhere while their instances are still in the mesh.
                    Ok(Err(_)) | Err(_) => {
                        stream = None;
                        if renewed.elapsed() >= ttl / 2 {
                            break;
                        }
                        RENEW_RETRY
                    }
                };
                tokio::time::sleep(next).await;
                if *state.id.borrow() != Some(id) {
                    return; // replaced by a newer lease
                }
            }
            if *state.id.borrow() == Some(id) {
                state.lost.notify_one();
            }
        });
        Ok(id)
    }

    /// etcd → hub: the whole prefix, then every change from the revision of that read.
    async fn follow(self: Arc<Self>, hub: Arc<Hub>, mut shutdown: watch::Receiver<bool>) {
        let mut pause = RETRY_FIRST;
        loop {
            let result = tokio::select! {
                r = self.follow_once(&hub) => r,
                _ = shutdown.wait_for(|down| *down) => return,
            };
            match result {
                Ok(()) => pause = RETRY_FIRST,
                Err(e) => {
                    tracing::warn!(error = %e, "etcd registry: watch lost; reading again");
                    tokio::select! {
                        () = tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64())) => {}
                        _ = shutdown.wait_for(|down| *down) => return,
                    }
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
    }

    async fn follow_once(&self, hub: &Hub) -> anyhow::Result<()> {
        let mut client = self.client.clone();
        let response = client
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut view = BTreeMap::new();
        for kv in response.kvs() {
            self.apply(&mut view, kv.key(), Some(kv.value()));
        }
        hub.set_cluster(view.clone());
        let read_at = response.header().map_or(0, |h| h.revision());
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(read_at + 1);
        let mut stream = client.watch(self.prefix.as_str(), Some(options)).await?;
        while let Some(message) = stream.message().await? {
            if message.canceled() {
                tracing::info!(
                    reason = message.cancel_reason(),
                    "etcd registry: watch cancelled"
                );
                return Ok(());
            }
            if message.events().is_empty() {
                continue;
            }
            for event in message.events() {
                let Some(kv) = event.kv() else { continue };
                let value = (event.event_type() == EventType::Put).then(|| kv.value());
                self.apply(&mut view, kv.key(), value);
            }
            hub.set_cluster(view.clone());
        }
        Ok(())
    }

    /// One key of the prefix into the view: added or replaced, or removed (`None`).
    fn apply(
        &self,
        view: &mut BTreeMap<String, (SidecarEntry, bool)>,
        key: &[u8],
        value: Option<&[u8]>,
    ) {
        let key = String::from_utf8_lossy(key);
        let Some(instance) = key.strip_prefix(&self.prefix) else {
            return;
        };
        let Some(value) = value else {
            view.remove(instance);
            return;
        };
        match serde_json::from_slice::<Stored>(value) {
            Ok(stored) => {
                let ours = stored.replica == self.replica;
                view.insert(instance.to_string(), (stored.entry(), ours));
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "etcd registry: unreadable instance; ignored")
            }
        }
    }
}

/// The lease this replica writes under, and a signal when it is lost.
#[derive(Default)]
struct LeaseState {
    id: watch::Sender<Option<i64>>,
    lost: Notify,
}

#[cfg(test)]
mod tests;

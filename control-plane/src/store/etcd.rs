//! `etcd://host:port[,host:port...]`: rule revisions in an etcd cluster, so several
//! `graylane-control` replicas share them and any replica serves any call.
//!
//! Keys, under `--etcd-prefix` (default `/graylane`):
//!
//! | key | value |
//! |---|---|
//! | `P/rules/current` | the current revision number, decimal |
//! | `P/rules/revisions/00000000000000000042` | revision 42: rules and meta, JSON |
//! | `P/rules/history/00000000000000000042` | revision 42's meta alone, JSON (history reads stay small) |
//! | `P/ca` | the mesh CA, certificate and key PEM, JSON; created once, never changed |
//! | `P/records/<key>` | a record (`Store::record_put`), its version the key's `mod_revision` |
//! | `P/leader` | the leader's name, attached to its lease (`leader`) |
//!
//! etcd's own MVCC history is compacted away, so ours lives in explicit keys. A commit
//! is one transaction: if `current` still holds the expected number, write the new
//! number, the revision and its history entry, and delete what falls out of the kept
//! history; else write nothing. Two replicas racing can never both win, and no history
//! entry is ever missing.
//!
//! `watch` follows `P/rules/current` with an etcd watch (`follow`); records and the
//! leadership live in `records` and `leader`.

use std::sync::OnceLock;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::call::{once_connected, unavailable};
use self::follow::{follow, publish};
use self::leader::Leader;
use super::{CaPem, Record, Revision, RevisionMeta, Store, StoreError, StoreFuture};

mod call;
mod follow;
mod leader;
mod records;
mod tls;

pub use self::tls::{EtcdTls, EtcdTlsError, connect_options};

/// The largest revision the store takes. etcd refuses requests over
/// `--max-request-bytes` (1.5 MiB by default) and a commit carries the revision once,
/// plus small keys; past this, the apply is refused whole with a clear error.
pub const MAX_REVISION_BYTES: usize = 1_400_000;

/// The rule store in etcd.
pub struct EtcdStore {
    client: Client,
    keys: Keys,
    history_limit: usize,
    notify: watch::Sender<u64>,
    follower: JoinHandle<()>,
    /// The leader lease's TTL (`--lease-ttl`).
    lease_ttl: Duration,
    /// The campaign, once `leadership` started it; dropped with the store, which
    /// resigns.
    leader: OnceLock<Leader>,
}

/// The key layout under one prefix.
#[derive(Clone, Debug)]
struct Keys {
    current: String,
    revisions: String,
    history: String,
    ca: String,
    records: String,
    leader: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        let prefix = prefix.trim_end_matches('/');
        Self {
            current: format!("{prefix}/rules/current"),
            revisions: format!("{prefix}/rules/revisions/"),
            history: format!("{prefix}/rules/history/"),
            ca: format!("{prefix}/ca"),
            records: format!("{prefix}/records/"),
            leader: format!("{prefix}/leader"),
        }
    }

    fn revision(&self, n: u64) -> String {
        format!("{}{n:020}", self.revisions)
    }

    fn history(&self, n: u64) -> String {
        format!("{}{n:020}", self.history)
    }
}

impl EtcdStore {
    /// Connects lazily: a store opened while etcd is down works once etcd is back.
    /// With `tls`, `endpoints` are `https://` and a failed handshake is reported as
    /// one ("etcd TLS: ...") by every call, `/ready` included. `lease_ttl` is the
    /// leader lease's TTL (whole seconds, at least 2).
    pub async fn open(
        endpoints: &[String],
        prefix: &str,
        history_limit: usize,
        tls: Option<&EtcdTls>,
        lease_ttl: Duration,
    ) -> Result<Self, StoreError> {
        let client = Client::connect(endpoints, Some(connect_options(tls)))
            .await
            .map_err(unavailable)?;
        let keys = Keys::new(prefix);
        let notify = watch::channel(0).0;
        let follower = tokio::spawn(follow(client.clone(), keys.current.clone(), notify.clone()));
        Ok(Self {
            client,
            keys,
            history_limit: history_limit.max(super::MIN_HISTORY),
            notify,
            follower,
            lease_ttl,
            leader: OnceLock::new(),
        })
    }

    /// The lease a fenced write compares `P/leader` with; `None`: not leading.
    fn fence(&self) -> Option<i64> {
        self.leader.get().and_then(Leader::fence)
    }

    async fn read_current(&self) -> Result<Revision, StoreError> {
        let key = self.keys.current.clone();
        let response = once_connected(&self.client, |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await?;
        let Some(number) = parse_number(response.kvs().first().map(|kv| kv.value()))? else {
            return Ok(Revision {
                number: 0,
                rules: String::new(),
                meta: RevisionMeta::default(),
            });
        };
        // Kept revisions are immutable and only pruned `history_limit` commits later,
        // so reading it after the number is as good as reading both at once.
        self.read_revision(number).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("current revision {number} has no stored rules"))
        })
    }

    async fn read_revision(&self, number: u64) -> Result<Option<Revision>, StoreError> {
        let key = self.keys.revision(number);
        let response = once_connected(&self.client, |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await?;
        response
            .kvs()
            .first()
            .map(|kv| {
                serde_json::from_slice(kv.value())
                    .map_err(|e| StoreError::Corrupt(format!("revision {number} in etcd: {e}")))
            })
            .transpose()
    }

    async fn write(
        &self,
        expected: u64,
        rules: String,
        meta: RevisionMeta,
    ) -> Result<u64, StoreError> {
        let number = expected + 1;
        let revision = Revision {
            number,
            rules,
            meta,
        };
        let value = serde_json::to_vec(&revision)
            .map_err(|e| StoreError::Corrupt(format!("encoding revision {number}: {e}")))?;
        if value.len() > MAX_REVISION_BYTES {
            return Err(StoreError::TooLarge(format!(
                "the rule set is {} bytes; the etcd store takes at most {MAX_REVISION_BYTES} per \
                 revision (etcd's request limit): split it or remove resources",
                value.len()
            )));
        }
        let history = serde_json::to_vec(&revision.meta)
            .map_err(|e| StoreError::Corrupt(format!("encoding revision {number}: {e}")))?;
        let unchanged = if expected == 0 {
            Compare::version(self.keys.current.as_str(), CompareOp::Equal, 0)
        } else {
            Compare::value(
                self.keys.current.as_str(),
                CompareOp::Equal,
                expected.to_string(),
            )
        };
        let mut then = vec![
            TxnOp::put(self.keys.current.as_str(), number.to_string(), None),
            TxnOp::put(self.keys.revision(number), value, None),
            TxnOp::put(self.keys.history(number), history, None),
        ];
        // What falls out of the kept history goes in the same transaction.
        let limit = self.history_limit as u64;
        if number > limit {
            let keep_from = number + 1 - limit;
            for (start, end) in [
                (self.keys.revisions.clone(), self.keys.revision(keep_from)),
                (self.keys.history.clone(), self.keys.history(keep_from)),
            ] {
                then.push(TxnOp::delete(
                    start,
                    Some(DeleteOptions::new().with_range(end)),
                ));
            }
        }
        let txn = Txn::new()
            .when([unchanged])
            .and_then(then)
            .or_else([TxnOp::get(self.keys.current.as_str(), None)]);
        let response = once_connected(&self.client, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
        if response.succeeded() {
            self.publish(number);
            return Ok(number);
        }
        let actual = match response.op_responses().first() {
            Some(TxnOpResponse::Get(get)) => {
                parse_number(get.kvs().first().map(|kv| kv.value()))?.unwrap_or(0)
            }
            _ => {
                return Err(StoreError::Corrupt(
                    "etcd: unexpected transaction answer".into(),
                ));
            }
        };
        Err(StoreError::Conflict { expected, actual })
    }

    async fn read_history(&self, limit: usize) -> Result<Vec<(u64, RevisionMeta)>, StoreError> {
        let mut options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Descend);
        if limit > 0 {
            options = options.with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let key = self.keys.history.clone();
        let response = once_connected(&self.client, |mut c| {
            let (key, options) = (key.clone(), options.clone());
            async move { c.get(key, Some(options)).await }
        })
        .await?;
        response
            .kvs()
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                let number = key
                    .strip_prefix(&self.keys.history)
                    .and_then(|n| n.parse::<u64>().ok())
                    .ok_or_else(|| StoreError::Corrupt(format!("history key {key:?}")))?;
                let meta = serde_json::from_slice(kv.value())
                    .map_err(|e| StoreError::Corrupt(format!("history {number}: {e}")))?;
                Ok((number, meta))
            })
            .collect()
    }

    /// One transaction: create `P/ca` only if it has never existed, else read it. The
    /// replicas racing at first start thus all end up with the first one written.
    async fn ca(&self, candidate: CaPem) -> Result<CaPem, StoreError> {
        let value = serde_json::to_vec(&candidate)
            .map_err(|e| StoreError::Corrupt(format!("encoding the CA: {e}")))?;
        let key = self.keys.ca.as_str();
        let txn = Txn::new()
            .when([Compare::version(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)])
            .or_else([TxnOp::get(key, None)]);
        let response = once_connected(&self.client, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
        if response.succeeded() {
            return Ok(candidate);
        }
        match response.op_responses().first() {
            Some(TxnOpResponse::Get(get)) => {
                let kv = get.kvs().first().ok_or_else(|| {
                    StoreError::Corrupt("etcd: the CA exists but reads empty".into())
                })?;
                serde_json::from_slice(kv.value())
                    .map_err(|e| StoreError::Corrupt(format!("the CA in etcd: {e}")))
            }
            _ => Err(StoreError::Corrupt(
                "etcd: unexpected transaction answer".into(),
            )),
        }
    }

    fn publish(&self, number: u64) {
        publish(&self.notify, number);
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl Store for EtcdStore {
    fn current(&self) -> StoreFuture<'_, Revision> {
        Box::pin(self.read_current())
    }

    fn commit(&self, expected: u64, rules: String, meta: RevisionMeta) -> StoreFuture<'_, u64> {
        Box::pin(self.write(expected, rules, meta))
    }

    fn history(&self, limit: usize) -> StoreFuture<'_, Vec<(u64, RevisionMeta)>> {
        Box::pin(self.read_history(limit))
    }

    fn get(&self, number: u64) -> StoreFuture<'_, Option<Revision>> {
        Box::pin(self.read_revision(number))
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    fn ca_get_or_create(&self, candidate: CaPem) -> StoreFuture<'_, CaPem> {
        Box::pin(self.ca(candidate))
    }

    fn record_get(&self, key: &str) -> StoreFuture<'_, Option<Record>> {
        let key = key.to_string();
        Box::pin(async move { self.get_record(&key).await })
    }

    fn record_list(&self, prefix: &str) -> StoreFuture<'_, Vec<(String, Record)>> {
        let prefix = prefix.to_string();
        Box::pin(async move { self.list_records(&prefix).await })
    }

    fn record_put(
        &self,
        key: &str,
        value: String,
        expected: u64,
        fenced: bool,
    ) -> StoreFuture<'_, u64> {
        let key = key.to_string();
        Box::pin(async move { self.put_record(&key, value, expected, fenced).await })
    }

    fn record_delete(&self, key: &str, expected: u64) -> StoreFuture<'_, ()> {
        let key = key.to_string();
        Box::pin(async move { self.delete_record(&key, expected).await })
    }

    fn resign(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if let Some(leader) = self.leader.get() {
                leader.resign().await;
            }
            Ok(())
        })
    }

    fn leadership(&self, holder: &str) -> watch::Receiver<bool> {
        self.leader
            .get_or_init(|| {
                let key = self.keys.leader.clone();
                Leader::start(self.client.clone(), key, holder.to_string(), self.lease_ttl)
            })
            .subscribe()
    }
}

fn parse_number(value: Option<&[u8]>) -> Result<Option<u64>, StoreError> {
    value
        .map(|v| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "etcd current revision {:?} is not a number",
                        String::from_utf8_lossy(v)
                    ))
                })
        })
        .transpose()
}

#[cfg(test)]
mod tests;

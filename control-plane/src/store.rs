//! Where rule revisions live. One trait, several backends (`memory:`, `file:`,
//! `etcd://`), all held to one conformance suite (`store::conformance`).
//!
//! A store is a versioned document: revision N holds the whole rule set as canonical
//! YAML plus who wrote it and when. It knows nothing about rule semantics; parsing and
//! validation happen before `commit` (in `crate::rules`), so every backend stores only
//! valid sets.
//!
//! A store also keeps the mesh CA the control plane generated (`Store::ca_get_or_create`),
//! so every replica and every restart signs with the same one.
//!
//! Beside the revisions, a store keeps small versioned records (a rollout's progress,
//! `Store::record_put`) and elects one leader among the processes sharing it
//! (`Store::leadership`), so exactly one replica drives the rollouts.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;

mod etcd;
mod file;
mod memory;
mod records;

#[cfg(test)]
pub(crate) mod conformance;

pub use self::etcd::{EtcdStore, EtcdTls, EtcdTlsError, MAX_REVISION_BYTES, connect_options};
pub use self::file::FileStore;
pub use self::memory::MemoryStore;

/// The minimum number of revisions every backend keeps (spec: "at least the last 100").
pub const MIN_HISTORY: usize = 100;

/// One stored revision of the whole rule set.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Revision {
    /// 1, 2, 3, ...; 0 only for the empty state before the first apply.
    pub number: u64,
    /// The whole rule set, canonical YAML ("" when empty).
    pub rules: String,
    #[serde(flatten)]
    pub meta: RevisionMeta,
}

/// What history shows about a revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RevisionMeta {
    /// Unix time in milliseconds.
    pub applied_at_ms: i64,
    pub applied_by: String,
    /// e.g. "apply: 2 created, 1 configured", "rollback to 4".
    pub summary: String,
    /// How many resources the set holds.
    pub resources: u32,
}

/// The mesh CA as stored: its certificate and private key, PEM. The store treats both
/// as opaque text; `crate::ca` makes and reads them.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CaPem {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for CaPem {
    // The key must never reach a log line or a panic message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaPem")
            .field("cert", &self.cert)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A small versioned record beside the revisions (a rollout's progress, as JSON).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// Changes on every write; what `record_put`'s `expected` compares with. Never 0.
    pub version: u64,
    pub value: String,
}

/// Why a store call failed. Callers branch on it; `crate::api::status` maps it to gRPC.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Compare-and-swap lost: someone committed since `expected` was read.
    #[error("revision conflict: expected {expected}, current is {actual}")]
    Conflict { expected: u64, actual: u64 },
    /// The backend cannot be reached or refused to work; nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The revision is over what the backend can store in one write; nothing was
    /// written.
    #[error("{0}")]
    TooLarge(String),
    /// The backend's data cannot be read back (a bug or outside tampering).
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// A `fenced` write by a process that does not hold the leadership (never had it,
    /// lost it, or stopped believing it at TTL/2 without a keep-alive); nothing was
    /// written. Another replica drives what the write was about.
    #[error("not the leader: another replica holds the leadership, or this one lost it")]
    NotLeader,
}

/// A boxed future, so backends can be chosen at run time behind `dyn Store`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A versioned, crash-safe home for the rule set.
///
/// Contract, checked by the conformance suite for every backend:
/// - revisions are numbered 1, 2, 3... without gaps; `current` is the highest;
/// - `commit` succeeds only when `expected` is the current number, atomically;
///   on any error nothing was written;
/// - at least `MIN_HISTORY` revisions stay readable with `get` and `history`;
/// - `watch` sees the current number after every commit (possibly skipping some).
pub trait Store: Send + Sync + 'static {
    /// The revision in force (number 0, empty rules, before the first commit).
    fn current(&self) -> StoreFuture<'_, Revision>;

    /// Writes `rules` as revision `expected + 1` if `expected` is still current.
    fn commit(&self, expected: u64, rules: String, meta: RevisionMeta) -> StoreFuture<'_, u64>;

    /// Kept revisions, newest first, at most `limit` (0 = all kept).
    fn history(&self, limit: usize) -> StoreFuture<'_, Vec<(u64, RevisionMeta)>>;

    /// One kept revision; `None` when it never existed or was pruned.
    fn get(&self, number: u64) -> StoreFuture<'_, Option<Revision>>;

    /// The current revision number, updated after every commit. It goes back only
    /// when the store itself did (etcd restored from a backup); a subscriber reads
    /// `current` on every change rather than trusting the number.
    fn watch(&self) -> watch::Receiver<u64>;

    /// The mesh CA: the stored one if there is one, else `candidate`, stored first.
    /// Atomic across every process sharing the store: callers racing with different
    /// candidates all get the same CA back, and it survives reopening the store.
    fn ca_get_or_create(&self, candidate: CaPem) -> StoreFuture<'_, CaPem>;

    /// The record under `key` (keys are like `rollouts/default/gray-orders-2`).
    fn record_get(&self, key: &str) -> StoreFuture<'_, Option<Record>>;

    /// Every record whose key starts with `prefix`, ordered by key.
    fn record_list(&self, prefix: &str) -> StoreFuture<'_, Vec<(String, Record)>>;

    /// Writes `value` under `key` if its version is still `expected` (0: it must not
    /// exist), returning the new version; otherwise `StoreError::Conflict { expected,
    /// actual }` (actual 0: absent) and nothing written. With `fenced`, the write also
    /// requires that this process holds the leadership (see `leadership`) at the moment
    /// of the write, checked by the backend in the same atomic step, else
    /// `StoreError::NotLeader`. A value over `MAX_RECORD_BYTES` is `TooLarge`.
    fn record_put(
        &self,
        key: &str,
        value: String,
        expected: u64,
        fenced: bool,
    ) -> StoreFuture<'_, u64>;

    /// Deletes the record if its version is still `expected` (`Conflict` otherwise);
    /// absent = Ok.
    fn record_delete(&self, key: &str, expected: u64) -> StoreFuture<'_, ()>;

    /// Starts (once; later calls return the same receiver, whatever `holder`)
    /// campaigning for the one leadership of this store's shared state, as `holder` (a
    /// replica id, shown in logs): the receiver is `true` while this process holds it.
    /// File and memory stores: always true at once (the file store already holds an
    /// exclusive lock on its directory). Must be called within a tokio runtime.
    ///
    /// Split brain: with etcd, the leadership is a key attached to this process's
    /// lease. A leader that is cut off (etcd unreachable, a long pause) turns `false`
    /// when TTL/2 has passed without a successful keep-alive, before the server could
    /// expire the lease and let another replica win. And that belief is not what keeps
    /// the shared state safe: every state change a leader makes is a `fenced`
    /// `record_put`, which etcd applies only if the leader key still carries this
    /// process's lease in the same transaction. A deposed leader that has not noticed
    /// yet therefore changes nothing; its writes fail with `NotLeader`.
    fn leadership(&self, holder: &str) -> watch::Receiver<bool>;

    /// For a clean shutdown: gives the leadership up now (etcd: revokes the lease and
    /// waits briefly for etcd to confirm) instead of leaving the other replicas to
    /// wait for the lease to expire, and stops campaigning for good (`leadership`
    /// stays `false`). Dropping the store does the same, but cannot wait for etcd.
    /// File and memory stores: nothing to hand over, a no-op.
    fn resign(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// The largest record value a store takes (etcd's request limit, with room to spare).
pub const MAX_RECORD_BYTES: usize = MAX_REVISION_BYTES;

/// `--store` values: `memory:`, `file:PATH` (default `file:./graylane-data`),
/// `etcd://host:port[,host:port...]`, or `etcd+https://host:port[,...]` (etcd over TLS:
/// `--etcd-ca` and usually `--etcd-cert/--etcd-key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    Memory,
    File(PathBuf),
    /// etcd client URLs (`http://host:port`, or all `https://host:port`).
    Etcd(Vec<String>),
}

impl std::str::FromStr for StoreUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "memory:" {
            return Ok(Self::Memory);
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err("file: needs a path, e.g. file:./graylane-data".into());
            }
            return Ok(Self::File(PathBuf::from(path)));
        }
        let etcd = [("etcd://", "http"), ("etcd+https://", "https")]
            .into_iter()
            .find_map(|(prefix, scheme)| Some((s.strip_prefix(prefix)?, scheme)));
        if let Some((hosts, scheme)) = etcd {
            let endpoints: Vec<String> = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| format!("{scheme}://{}", h.trim_end_matches('/')))
                .collect();
            if endpoints.is_empty() {
                return Err(
                    "etcd:// needs at least one host:port, e.g. etcd://127.0.0.1:2379".into(),
                );
            }
            // `etcd://https://h:2379` would quietly become plaintext to a host "https".
            if hosts.contains("://") {
                return Err(format!(
                    "{s:?}: list host:port only; etcd over TLS is etcd+https://host:port[,host:port...]"
                ));
            }
            return Ok(Self::Etcd(endpoints));
        }
        Err(format!(
            "unknown store {s:?}: expected memory:, file:PATH, etcd://host:port[,host:port...] or etcd+https://host:port[,host:port...]"
        ))
    }
}

impl StoreUrl {
    /// Opens the store; the file store takes an exclusive lock on its directory; the
    /// etcd store keeps its keys under `etcd_prefix` and connects lazily.
    /// `etcd_tls` is for `etcd+https://` only; `lease_ttl` is the etcd leader lease's
    /// TTL (how long a dead leader keeps the leadership).
    pub async fn open(
        &self,
        history_limit: usize,
        etcd_prefix: &str,
        etcd_tls: Option<&EtcdTls>,
        lease_ttl: Duration,
    ) -> Result<Box<dyn Store>, StoreError> {
        Ok(match self {
            Self::Memory => Box::new(MemoryStore::new(history_limit)),
            Self::File(path) => Box::new(FileStore::open(path.clone(), history_limit).await?),
            Self::Etcd(endpoints) => {
                let store =
                    EtcdStore::open(endpoints, etcd_prefix, history_limit, etcd_tls, lease_ttl);
                Box::new(store.await?)
            }
        })
    }
}

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
//!
//! etcd's own MVCC history is compacted away, so ours lives in explicit keys. A commit
//! is one transaction: if `current` still holds the expected number, write the new
//! number, the revision and its history entry, and delete what falls out of the kept
//! history; else write nothing. Two replicas racing can never both win, and no history
//! entry is ever missing.
//!
//! `watch` follows `P/rules/current` with an etcd watch. When the watch is cancelled
//! (its start revision was compacted), breaks, or etcd changes leader, the follower
//! reads the current number again and watches on from the etcd revision of that read,
//! so a change is never missed; the number it publishes only ever grows.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{CaPem, Revision, RevisionMeta, Store, StoreError, StoreFuture};

mod tls;

pub use self::tls::{EtcdTls, EtcdTlsError, connect_options};

/// The largest revision the store takes. etcd refuses requests over
/// `--max-request-bytes` (1.5 MiB by default) and a commit carries the revision once,
/// plus small keys; past this, the apply is refused whole with a clear error.
pub const MAX_REVISION_BYTES: usize = 1_400_000;

/// Between attempts to re-establish the watch: doubles up to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(3);

/// The rule store in etcd.
pub struct EtcdStore {
    client: Client,
    keys: Keys,
    history_limit: usize,
    notify: watch::Sender<u64>,
    follower: JoinHandle<()>,
}

/// The key layout under one prefix.
#[derive(Clone, Debug)]
struct Keys {
    current: String,
    revisions: String,
    history: String,
    ca: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        let prefix = prefix.trim_end_matches('/');
        Self {
            current: format!("{prefix}/rules/current"),
            revisions: format!("{prefix}/rules/revisions/"),
            history: format!("{prefix}/rules/history/"),
            ca: format!("{prefix}/ca"),
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
    /// one ("etcd TLS: ...") by every call, `/ready` included.
    pub async fn open(
        endpoints: &[String],
        prefix: &str,
        history_limit: usize,
        tls: Option<&EtcdTls>,
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
        })
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
}

/// Keeps `notify` on the current revision number for as long as the store lives.
async fn follow(client: Client, key: String, notify: watch::Sender<u64>) {
    let mut pause = RETRY_FIRST;
    loop {
        match follow_once(client.clone(), &key, &notify).await {
            // Cancelled (compacted) or ended: read again and watch on, at once.
            Ok(()) => pause = RETRY_FIRST,
            Err(e) => {
                tracing::warn!(error = %e, "etcd watch lost; retrying");
                tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64())).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Reads the number, publishes it, then watches from the etcd revision right after
/// that read: nothing can change unseen between the two.
async fn follow_once(
    mut client: Client,
    key: &str,
    notify: &watch::Sender<u64>,
) -> Result<(), StoreError> {
    let response = client.get(key, None).await.map_err(unavailable)?;
    if let Some(number) = parse_number(response.kvs().first().map(|kv| kv.value()))? {
        publish(notify, number);
    }
    let read_at = response.header().map_or(0, |h| h.revision());
    watch_from(client, key, read_at + 1, notify).await
}

/// Publishes every new number from etcd revision `start` on. Returns `Ok` when etcd
/// cancels the watch (`start` was compacted away) or ends it: the caller reads again.
async fn watch_from(
    mut client: Client,
    key: &str,
    start: i64,
    notify: &watch::Sender<u64>,
) -> Result<(), StoreError> {
    let options = WatchOptions::new()
        .with_start_revision(start)
        .with_progress_notify();
    let mut stream = client
        .watch(key, Some(options))
        .await
        .map_err(unavailable)?;
    while let Some(message) = stream.message().await.map_err(unavailable)? {
        if message.canceled() {
            tracing::info!(
                compacted_to = message.compact_revision(),
                reason = message.cancel_reason(),
                "etcd watch cancelled; reading the current revision again"
            );
            return Ok(());
        }
        for event in message.events() {
            if event.event_type() == EventType::Put
                && let Some(number) = parse_number(event.kv().map(|kv| kv.value()))?
            {
                publish(notify, number);
            }
        }
    }
    Ok(())
}

/// Moves `notify` forward only: a late event never takes it back.
fn publish(notify: &watch::Sender<u64>, number: u64) {
    notify.send_if_modified(|current| {
        let newer = number > *current;
        if newer {
            *current = number;
        }
        newer
    });
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

/// etcd's client balances calls over the endpoints (power of two choices by pending
/// calls) and keeps a stopped member in rotation; having no pending calls (the
/// watches and lease keep-alives sit on the live ones), it is even preferred, so a
/// call may hit it many times in a row. A call that could not even connect reached
/// nobody, so it is sent again, with a short pause, for up to `CONNECT_RETRY_FOR`
/// before the caller hears that etcd is unavailable.
async fn once_connected<T, Fut>(
    client: &Client,
    call: impl Fn(Client) -> Fut,
) -> Result<T, StoreError>
where
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + CONNECT_RETRY_FOR;
    loop {
        match call(client.clone()).await {
            Err(e) if connect_failed(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(CONNECT_RETRY_PAUSE).await;
            }
            result => return result.map_err(unavailable),
        }
    }
}

/// How long calls whose connection was refused are retried (see `once_connected`):
/// 5 immediate attempts failed an apply now and then in CI while a 3-member etcd had
/// a stopped member. A refused connect costs well under a millisecond.
const CONNECT_RETRY_FOR: Duration = Duration::from_secs(2);
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(5);

fn connect_failed(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == tonic::Code::Unavailable && s.message().contains("connect"))
}

fn unavailable(e: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(tls::describe(&e))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use graylane_tests::etcd::Etcd;

    use super::{EtcdStore, watch_from};
    use crate::store::{MIN_HISTORY, RevisionMeta, Store};

    // Against a real etcd server, one per case (nextest runs each in its own process).
    crate::store::conformance::suite!(|dir: &std::path::Path| {
        let etcd = Etcd::start(dir);
        async move {
            let endpoints = [format!("http://{}", etcd.endpoint())];
            let store = EtcdStore::open(&endpoints, "/conformance", MIN_HISTORY, None)
                .await
                .expect("open");
            (store, etcd)
        }
    });

    /// The recovery path: a watch from a compacted revision is cancelled by etcd, and
    /// the follower takes that as "read again", not as an error nor as silence.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_from_a_compacted_revision_returns_to_be_read_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let etcd = Etcd::start(dir.path());
        let endpoints = [format!("http://{}", etcd.endpoint())];
        let store = EtcdStore::open(&endpoints, "/compaction", MIN_HISTORY, None)
            .await
            .expect("open");
        for n in 0..3 {
            store
                .commit(n, format!("rules {n}"), RevisionMeta::default())
                .await
                .expect("commit");
        }
        let mut client = etcd_client::Client::connect(&endpoints, None)
            .await
            .expect("connect");
        let now = client
            .get("/", None)
            .await
            .expect("get")
            .header()
            .expect("header")
            .revision();
        client.compact(now, None).await.expect("compact");
        let notify = tokio::sync::watch::channel(0).0;
        let returned = tokio::time::timeout(
            Duration::from_secs(5),
            watch_from(client, "/compaction/rules/current", 1, &notify),
        )
        .await
        .expect("the cancelled watch returns instead of waiting for events");
        assert!(returned.is_ok(), "{returned:?}");
        // And the store's own follower is on the latest number.
        let mut rx = store.watch();
        assert_eq!(*rx.wait_for(|n| *n == 3).await.expect("follower alive"), 3);
    }

    /// Two replicas (two stores on one etcd) racing at first start get one CA, and a
    /// store opened later (a restart) reads it back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_share_one_ca() {
        use crate::store::CaPem;
        let dir = tempfile::tempdir().expect("tempdir");
        let etcd = Etcd::start(dir.path());
        let endpoints = [format!("http://{}", etcd.endpoint())];
        let open = || EtcdStore::open(&endpoints, "/ca", MIN_HISTORY, None);
        let (a, b) = (open().await.expect("open"), open().await.expect("open"));
        let pem = |n: &str| CaPem {
            cert: format!("cert {n}"),
            key: format!("key {n}"),
        };
        let (from_a, from_b) =
            tokio::join!(a.ca_get_or_create(pem("a")), b.ca_get_or_create(pem("b")));
        let (from_a, from_b) = (from_a.expect("a"), from_b.expect("b"));
        assert_eq!(from_a, from_b);
        drop((a, b));
        let later = open().await.expect("reopen");
        assert_eq!(later.ca_get_or_create(pem("c")).await.expect("c"), from_a);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revision_over_the_size_limit_is_refused_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let etcd = Etcd::start(dir.path());
        let endpoints = [format!("http://{}", etcd.endpoint())];
        let store = EtcdStore::open(&endpoints, "/big", MIN_HISTORY, None)
            .await
            .expect("open");
        let big = "x".repeat(super::MAX_REVISION_BYTES + 1);
        match store.commit(0, big, RevisionMeta::default()).await {
            Err(crate::store::StoreError::TooLarge(msg)) => {
                assert!(msg.contains("at most"), "{msg}");
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(store.current().await.expect("current").number, 0);
        assert!(store.history(0).await.expect("history").is_empty());
    }
}

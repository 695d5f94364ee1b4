//! The one leadership of an etcd store's shared state: the replica that drives
//! rollouts. `P/leader` holds the leader's name, attached to its lease.
//!
//! ```text
//!  ┌─► grant a lease (TTL) ─► txn: P/leader absent? put(holder, lease) : get P/leader
//!  │     won ──► hold: keep-alive every TTL/3; lost when TTL/2 passes without an
//!  │             answer, the lease is gone, or P/leader is deleted or rewritten
//!  │             ──► revoke the lease (P/leader goes with it) ─────────────────────┐
//!  │     lost ─► revoke the unused lease; watch P/leader until it is deleted       │
//!  │             (its holder's lease expired or was revoked), or TTL×3 passed     │
//!  └───────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! An etcd error deposes at once and is retried with `Backoff`. Believing is not what
//! keeps the shared state safe, the fence is: `fenced` writes compare `P/leader`'s
//! lease with ours in their own transaction (see `Store::leadership`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
    WatchOptions, WatchStream,
};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{once_connected, unavailable};
use crate::store::StoreError;
use graylane_exposition::backoff::Backoff;

/// Between campaign attempts after an etcd error: doubles up to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(3);
/// How long a resigning leader waits for etcd to take its lease back.
const REVOKE_WITHIN: Duration = Duration::from_secs(1);

/// This process's side of the campaign; ends it (revoking the lease) on `resign`
/// or when dropped.
pub(super) struct Leader {
    shared: Arc<Shared>,
    /// Sent (our lease, if leading) to end the campaign: it revokes the lease and
    /// returns.
    stop: Mutex<Option<oneshot::Sender<Option<i64>>>>,
    /// The campaign, awaited by `resign` so the revoke is done when it returns.
    task: Mutex<Option<JoinHandle<()>>>,
}

/// What the campaign task and the store's calls share.
struct Shared {
    /// What `Store::leadership` hands out.
    leading: watch::Sender<bool>,
    /// While leading: our lease, and until when we may believe we still lead.
    held: Mutex<Option<Held>>,
}

#[derive(Clone, Copy, Debug)]
struct Held {
    lease: i64,
    /// TTL/2 after the last keep-alive known to have renewed the lease was sent.
    until: Instant,
}

/// One campaign: its etcd calls and timings.
struct Campaign {
    client: Client,
    key: String,
    holder: String,
    ttl_secs: i64,
    shared: Arc<Shared>,
    /// The leader last logged while following: a follower looks again every TTL×3,
    /// and says so only when the leader changed.
    followed: Mutex<String>,
}

impl Leader {
    /// Starts campaigning in the background (call within a tokio runtime).
    pub(super) fn start(client: Client, key: String, holder: String, ttl: Duration) -> Self {
        let shared = Arc::new(Shared {
            leading: watch::channel(false).0,
            held: Mutex::new(None),
        });
        let (stop, stopped) = oneshot::channel();
        let campaign = Campaign {
            client,
            key,
            holder,
            // etcd leases count whole seconds; under 2 s a keep-alive every TTL/3
            // would race its own expiry.
            ttl_secs: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(2),
            shared: Arc::clone(&shared),
            followed: Mutex::new(String::new()),
        };
        let task = tokio::spawn(campaign.run(stopped));
        Self {
            shared,
            stop: Mutex::new(Some(stop)),
            task: Mutex::new(Some(task)),
        }
    }

    /// Stops believing at once, ends the campaign for good and waits (briefly) for
    /// it to revoke the lease, so another replica takes over without waiting a TTL.
    pub(super) async fn resign(&self) {
        self.stop();
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(REVOKE_WITHIN * 2, task).await;
        }
    }

    /// Deposes at once, so no write is fenced any more, and hands the lease to the
    /// campaign, which revokes it (`depose` there finds nothing left).
    fn stop(&self) {
        let held = self.shared.depose();
        if let Some(stop) = lock(&self.stop).take() {
            let _ = stop.send(held.map(|h| h.lease));
        }
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<bool> {
        self.shared.leading.subscribe()
    }

    /// The lease to fence a write with: only while leading, and only until TTL/2
    /// after the last successful keep-alive, even if the campaign task is late to
    /// notice (a starved runtime).
    pub(super) fn fence(&self) -> Option<i64> {
        let held = *self.shared.held();
        held.filter(|h| Instant::now() < h.until).map(|h| h.lease)
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        // Best effort: the campaign revokes only if the runtime still runs it.
        self.stop();
    }
}

/// Every critical section is one assignment or `take`: a poisoned lock is still
/// consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn held(&self) -> MutexGuard<'_, Option<Held>> {
        lock(&self.held)
    }

    /// The fence first, then the flag: nobody sees `true` without a lease to fence with.
    fn lead(&self, held: Held) {
        *self.held() = Some(held);
        self.leading
            .send_if_modified(|l| !std::mem::replace(l, true));
    }

    fn extend(&self, until: Instant) {
        if let Some(held) = self.held().as_mut() {
            held.until = held.until.max(until);
        }
    }

    /// The fence first, then the flag: nobody sees `false` and can still fence a
    /// write with the old lease. Returns what was held.
    fn depose(&self) -> Option<Held> {
        let held = self.held().take();
        self.leading
            .send_if_modified(|l| std::mem::replace(l, false));
        held
    }
}

impl Campaign {
    async fn run(self, mut stop: oneshot::Receiver<Option<i64>>) {
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        let resign = loop {
            let result = tokio::select! {
                r = self.round() => r,
                lease = &mut stop => break lease.ok().flatten(),
            };
            self.shared.depose();
            match result {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    tracing::warn!(holder = %self.holder, error = %e, "leader campaign: etcd error; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_wait()) => {}
                        lease = &mut stop => break lease.ok().flatten(),
                    }
                }
            }
        };
        // Resign: with the lease goes `P/leader`, so another replica takes over now
        // rather than a TTL later.
        if let Some(lease) = resign.or(self.shared.depose().map(|h| h.lease)) {
            self.revoke(lease).await;
        }
    }

    fn half_ttl(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.ttl_secs).unwrap_or(2)) / 2
    }

    /// One etcd call (`once_connected`), bounded: an unreachable etcd must not stall
    /// the campaign.
    async fn within<T, Fut>(&self, call: impl Fn(Client) -> Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(self.half_ttl(), once_connected(&self.client, call)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd did not answer within {:?}",
                self.half_ttl()
            ))),
        }
    }

    /// Best effort: an unrevoked lease expires on its own after the TTL.
    async fn revoke(&self, lease: i64) {
        let mut client = self.client.clone();
        match tokio::time::timeout(REVOKE_WITHIN, client.lease_revoke(lease)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(lease, error = %e, "leader lease not revoked"),
            Err(_) => tracing::debug!(lease, "leader lease not revoked in time"),
        }
    }

    /// One attempt: win and hold until lost, or follow the leader until it is gone.
    async fn round(&self) -> Result<(), StoreError> {
        let ttl = self.ttl_secs;
        // Before the grant: the server's TTL cannot have started earlier than this.
        let started = Instant::now();
        let lease = self
            .within(|mut c| async move { c.lease_grant(ttl, None).await })
            .await?
            .id();
        let absent = Compare::create_revision(self.key.as_str(), CompareOp::Equal, 0);
        let mut answer = self.claim(lease, absent).await?;
        if !answer.succeeded()
            && let Some((0, revision, leader)) = holder(&answer)
        {
            // A key without a lease never goes away by itself: a hand-written one
            // (an operator's `etcdctl put`) would block every replica forever.
            tracing::warn!(key = %self.key, %leader, "leader key without a lease (not written by a replica); taking it over");
            let unchanged = Compare::mod_revision(self.key.as_str(), CompareOp::Equal, revision);
            answer = self.claim(lease, unchanged).await?;
        }
        let at = answer.header().map_or(0, |h| h.revision());
        if answer.succeeded() {
            tracing::info!(holder = %self.holder, lease, "leader: won the leadership");
            lock(&self.followed).clear();
            let held = self.hold(lease, started, at).await;
            self.shared.depose();
            self.revoke(lease).await;
            let why = held?;
            tracing::warn!(holder = %self.holder, reason = why, "leader: lost the leadership; campaigning again");
            return Ok(());
        }
        self.revoke(lease).await;
        if let Some((_, _, leader)) = holder(&answer) {
            let mut followed = lock(&self.followed);
            if *followed != leader {
                tracing::info!(holder = %self.holder, %leader, "leader: another replica leads; following");
                *followed = leader;
            }
        }
        self.follow(at).await
    }

    /// Puts the leader key with `lease` if `when` holds, else reads it; on an error
    /// the lease is revoked (it was granted for this claim only).
    async fn claim(&self, lease: i64, when: Compare) -> Result<TxnResponse, StoreError> {
        let key = self.key.as_str();
        let txn = Txn::new()
            .when([when])
            .and_then([TxnOp::put(
                key,
                self.holder.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let answer = self
            .within(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await;
        if answer.is_err() {
            self.revoke(lease).await;
        }
        answer
    }

    /// Leads until the lease cannot be trusted any more; returns why.
    async fn hold(
        &self,
        lease: i64,
        started: Instant,
        at: i64,
    ) -> Result<&'static str, StoreError> {
        let half = self.half_ttl();
        let mut until = started + half;
        self.shared.lead(Held { lease, until });
        let sent = Instant::now();
        // Its first keep-alive is answered before it returns.
        let (mut keeper, mut answers) = self
            .within(|mut c| async move { c.lease_keep_alive(lease).await })
            .await?;
        until = until.max(sent + half);
        self.shared.extend(until);
        let mut changes = self.watch_from(at + 1).await?;
        let period = (half * 2 / 3).max(Duration::from_millis(500));
        let mut next = Instant::now() + period;
        // When each unanswered keep-alive was sent; etcd answers them in order.
        let mut pending = VecDeque::new();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return Ok("no keep-alive answer for TTL/2"),
                () = tokio::time::sleep_until(next) => {
                    pending.push_back(Instant::now());
                    keeper.keep_alive().await.map_err(unavailable)?;
                    next = (next + period).max(Instant::now());
                }
                answer = answers.message() => match answer.map_err(unavailable)? {
                    Some(a) if a.ttl() > 0 => {
                        if let Some(sent) = pending.pop_front() {
                            until = until.max(sent + half);
                            self.shared.extend(until);
                        }
                    }
                    Some(_) => return Ok("the lease expired or was revoked"),
                    None => return Err(StoreError::Unavailable("etcd ended the lease keep-alive".into())),
                },
                message = changes.message() => {
                    let Some(m) = message.map_err(unavailable)? else {
                        return Err(StoreError::Unavailable("etcd ended the leader watch".into()));
                    };
                    if m.canceled() {
                        return Ok("the leader watch was cancelled");
                    }
                    let ours = |e: &etcd_client::Event| {
                        e.event_type() == EventType::Put && e.kv().is_some_and(|kv| kv.lease() == lease)
                    };
                    if !m.events().iter().all(ours) {
                        return Ok("the leader key was deleted or rewritten");
                    }
                }
            }
        }
    }

    /// Waits until the leader key is deleted (its holder's lease expired or was
    /// revoked). Every TTL×3 it looks again anyway, should a watch have stalled.
    async fn follow(&self, at: i64) -> Result<(), StoreError> {
        let mut changes = self.watch_from(at + 1).await?;
        let look_again = tokio::time::sleep(self.half_ttl() * 6);
        tokio::pin!(look_again);
        loop {
            tokio::select! {
                () = &mut look_again => return Ok(()),
                message = changes.message() => {
                    let Some(m) = message.map_err(unavailable)? else {
                        return Err(StoreError::Unavailable("etcd ended the leader watch".into()));
                    };
                    let deleted = m.events().iter().any(|e| e.event_type() == EventType::Delete);
                    if m.canceled() || deleted {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn watch_from(&self, revision: i64) -> Result<WatchStream, StoreError> {
        let options = WatchOptions::new().with_start_revision(revision);
        self.within(|mut c| {
            let (key, options) = (self.key.clone(), options.clone());
            async move { c.watch(key, Some(options)).await }
        })
        .await
    }
}

/// The current holder of a failed claim's leader key: its lease, `mod_revision` and
/// name.
fn holder(answer: &TxnResponse) -> Option<(i64, i64, String)> {
    let Some(TxnOpResponse::Get(get)) = answer.op_responses().into_iter().next() else {
        return None;
    };
    let kv = get.kvs().first()?;
    let name = String::from_utf8_lossy(kv.value()).into_owned();
    Some((kv.lease(), kv.mod_revision(), name))
}

//! The etcd store against real etcd servers (one per test).

use std::time::Duration;

use graylane_tests::etcd::Etcd;
use tokio::sync::watch;

use super::EtcdStore;
use super::follow::watch_from;
use crate::store::{MIN_HISTORY, RevisionMeta, Store, StoreError};

/// The leader lease's TTL in tests: etcd's shortest that is safe on loopback.
const TTL: Duration = Duration::from_secs(2);

// Against a real etcd server, one per case (nextest runs each in its own process).
crate::store::conformance::suite!(|dir: &std::path::Path| {
    let etcd = Etcd::start(dir);
    async move {
        let endpoints = [format!("http://{}", etcd.endpoint())];
        let store = EtcdStore::open(&endpoints, "/conformance", MIN_HISTORY, None, TTL)
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
    let store = EtcdStore::open(&endpoints, "/compaction", MIN_HISTORY, None, TTL)
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
    let open = || EtcdStore::open(&endpoints, "/ca", MIN_HISTORY, None, TTL);
    let (a, b) = (open().await.expect("open"), open().await.expect("open"));
    let pem = |n: &str| CaPem {
        cert: format!("cert {n}"),
        key: format!("key {n}"),
    };
    let (from_a, from_b) = tokio::join!(a.ca_get_or_create(pem("a")), b.ca_get_or_create(pem("b")));
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
    let store = EtcdStore::open(&endpoints, "/big", MIN_HISTORY, None, TTL)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(dir.path());
    let endpoints = [format!("http://{}", etcd.endpoint())];
    let open = || EtcdStore::open(&endpoints, "/reopen", MIN_HISTORY, None, TTL);
    let store = open().await.expect("open");
    crate::store::conformance::records_survive_reopening(store, |store| async {
        drop(store);
        open().await.expect("reopen")
    })
    .await;
}

fn endpoints(etcd: &Etcd) -> [String; 1] {
    [format!("http://{}", etcd.endpoint())]
}

/// Two replicas' stores on one etcd, under one prefix.
async fn two_replicas(etcd: &Etcd, prefix: &str) -> (EtcdStore, EtcdStore) {
    let endpoints = endpoints(etcd);
    let open = || EtcdStore::open(&endpoints, prefix, MIN_HISTORY, None, TTL);
    (open().await.expect("open"), open().await.expect("open"))
}

/// Waits (at most `within`) until `leading` says `want`.
async fn until_leading(
    leading: &mut watch::Receiver<bool>,
    want: bool,
    within: Duration,
    what: &str,
) {
    tokio::time::timeout(within, leading.wait_for(|l| *l == want))
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {within:?}"))
        .expect("campaign alive");
}

/// Two stores on one etcd, both campaigning: the one that leads, the one that does
/// not. Waits for the first to lead.
async fn one_leader<'a>(a: &'a EtcdStore, b: &'a EtcdStore) -> (&'a EtcdStore, &'a EtcdStore) {
    let (mut ra, mut rb) = (a.leadership("a"), b.leadership("b"));
    let a_leads = tokio::time::timeout(LEAD_WITHIN, async {
        tokio::select! {
            r = ra.wait_for(|l| *l) => r.map(|_| true),
            r = rb.wait_for(|l| *l) => r.map(|_| false),
        }
    })
    .await
    .expect("one of them leads")
    .expect("campaigns alive");
    let (leader, other) = if a_leads { (a, b) } else { (b, a) };
    assert!(
        !*other.leadership("x").borrow(),
        "exactly one leads: both believe they do"
    );
    (leader, other)
}

/// A few TTLs: a campaign, or a takeover after a lease expired.
const LEAD_WITHIN: Duration = Duration::from_secs(10);

fn expect_not_leader(result: Result<u64, StoreError>) {
    match result {
        Err(StoreError::NotLeader) => {}
        other => panic!("expected NotLeader, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leader_and_only_its_fenced_writes_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(dir.path());
    let (a, b) = two_replicas(&etcd, "/lead").await;
    let (leader, other) = one_leader(&a, &b).await;
    expect_not_leader(other.record_put("rollouts/r", "x".into(), 0, true).await);
    assert_eq!(other.record_get("rollouts/r").await.expect("get"), None);
    let v = leader
        .record_put("rollouts/r", "by the leader".into(), 0, true)
        .await
        .expect("fenced put by the leader");
    // Unfenced writes are anyone's (CAS alone).
    other
        .record_put("rollouts/r", "unfenced".into(), v, false)
        .await
        .expect("unfenced put");
    // The key shows who leads, attached to a lease (it goes when the leader does).
    let lease = etcd
        .lease_of("/lead/leader")
        .expect("the leader key has a lease");
    assert!(!etcd.lease_expired(&lease));
}

/// etcd itself refuses a fenced write with a lease that no longer holds the leader
/// key, whatever the writer believes: the deposed leader changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_leader_is_fenced_by_etcd_and_the_leadership_moves_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(dir.path());
    let (a, b) = two_replicas(&etcd, "/revoke").await;
    let (leader, _) = one_leader(&a, &b).await;
    let old = leader.fence().expect("the leader has a lease");
    let mut client = etcd_client::Client::connect(&endpoints(&etcd), None)
        .await
        .expect("connect");
    client.lease_revoke(old).await.expect("revoke");
    // As if the deposed leader had not noticed yet: the transaction is refused.
    let stale = leader
        .write_record("rollouts/r", "stale".into(), 0, Some(old))
        .await;
    expect_not_leader(stale);
    assert_eq!(leader.record_get("rollouts/r").await.expect("get"), None);
    // The deposed leader notices (the key's deletion, or a keep-alive answered "no
    // such lease"), well before a TTL.
    let noticed = async {
        while leader.fence() == Some(old) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(TTL, noticed)
        .await
        .expect("the deposed leader lets go of its old lease");
    // Someone leads again, under a new lease; only its fenced writes pass.
    let (leader, other) = one_leader(&a, &b).await;
    let new = leader.fence().expect("the new leader has a lease");
    assert_ne!(new, old);
    expect_not_leader(other.record_put("rollouts/r", "x".into(), 0, true).await);
    leader
        .record_put("rollouts/r", "fresh".into(), 0, true)
        .await
        .expect("fenced put by the new leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_leader_hands_the_leadership_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(dir.path());
    let (a, b) = two_replicas(&etcd, "/drop").await;
    let a_led = std::ptr::eq(one_leader(&a, &b).await.0, &a);
    let (leader, other) = if a_led { (a, b) } else { (b, a) };
    let mut was_leading = leader.leadership("x");
    let mut other_leads = other.leadership("x");
    drop(leader);
    assert!(!*was_leading.borrow_and_update(), "dropped: not leading");
    // Within a TTL: the dropped leader resigned (revoked its lease), so the other
    // did not have to wait for the lease to expire.
    let what = "the other replica takes over before the old lease could expire";
    until_leading(&mut other_leads, true, TTL, what).await;
    other
        .record_put("rollouts/r", "after failover".into(), 0, true)
        .await
        .expect("fenced put by the new leader");
}

/// Cut off from etcd, a leader stops believing at TTL/2 without a keep-alive,
/// before its lease could expire on the server; once etcd is back it campaigns and,
/// when its old lease has expired (nobody revoked it), leads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_stops_leading_before_its_lease_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut etcd = Etcd::start(dir.path());
    let store = EtcdStore::open(&endpoints(&etcd), "/cut", MIN_HISTORY, None, TTL)
        .await
        .expect("open");
    let mut leading = store.leadership("a");
    until_leading(&mut leading, true, LEAD_WITHIN, "leads").await;
    etcd.stop();
    // The last keep-alive reached etcd at most TTL/3 ago, so the lease cannot expire
    // before 2/3 TTL from now; the leader must have stopped believing by then (it
    // does at TTL/2 after that keep-alive was sent).
    let what = "stops believing it leads before the lease could expire";
    until_leading(&mut leading, false, TTL * 2 / 3, what).await;
    expect_not_leader(store.record_put("rollouts/r", "x".into(), 0, true).await);
    etcd.restart();
    etcd.wait_healthy();
    let what = "leads again once etcd is back";
    until_leading(&mut leading, true, LEAD_WITHIN * 2, what).await;
    store
        .record_put("rollouts/r", "back".into(), 0, true)
        .await
        .expect("fenced put after coming back");
}

/// An operator's `etcdctl put P/leader ...` (no lease) would never expire: a replica
/// takes such a key over instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_leader_key_without_a_lease_is_taken_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(dir.path());
    let mut client = etcd_client::Client::connect(&endpoints(&etcd), None)
        .await
        .expect("connect");
    client
        .put("/hand/leader", "someone by hand", None)
        .await
        .expect("put");
    let store = EtcdStore::open(&endpoints(&etcd), "/hand", MIN_HISTORY, None, TTL)
        .await
        .expect("open");
    let mut leading = store.leadership("a");
    until_leading(
        &mut leading,
        true,
        LEAD_WITHIN,
        "takes the lease-less key over",
    )
    .await;
    assert!(etcd.lease_of("/hand/leader").is_some(), "now under a lease");
}

/// A clean shutdown: the leader's lease is gone when `resign` returns, so the other
/// replica takes over at once, and the resigned one never leads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resigning_revokes_the_lease_before_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(dir.path());
    let (a, b) = two_replicas(&etcd, "/resign").await;
    let (leader, other) = one_leader(&a, &b).await;
    let old = leader.fence().expect("the leader has a lease");
    leader.resign().await.expect("resign");
    assert!(!*leader.leadership("x").borrow(), "resigned: not leading");
    assert!(etcd.lease_expired(&old.to_string()), "the lease is revoked");
    expect_not_leader(leader.record_put("rollouts/r", "x".into(), 0, true).await);
    let what = "the other replica takes over before the old lease could expire";
    until_leading(&mut other.leadership("x"), true, TTL, what).await;
    assert!(
        !*leader.leadership("x").borrow(),
        "no campaign after resigning"
    );
}

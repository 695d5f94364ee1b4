//! The contract every `Store` backend must keep (see `Store`). Each backend's test
//! module calls `suite!(|dir| async { (a fresh store in dir, what it needs alive) })`,
//! which expands to one `#[tokio::test]` per case so failures name the case.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{CaPem, MAX_RECORD_BYTES, MIN_HISTORY, RevisionMeta, Store, StoreError};

fn meta(who: &str) -> RevisionMeta {
    RevisionMeta {
        applied_at_ms: 1_700_000_000_000,
        applied_by: who.into(),
        summary: "apply".into(),
        resources: 1,
    }
}

pub(crate) async fn starts_empty(store: impl Store) {
    let rev = store.current().await.expect("current");
    assert_eq!((rev.number, rev.rules.as_str()), (0, ""));
    assert!(store.history(0).await.expect("history").is_empty());
    assert_eq!(store.get(1).await.expect("get"), None);
}

pub(crate) async fn commits_number_revisions_without_gaps(store: impl Store) {
    for i in 0..5u64 {
        let n = store
            .commit(i, format!("rules {i}"), meta("alice"))
            .await
            .expect("commit");
        assert_eq!(n, i + 1);
    }
    let rev = store.current().await.expect("current");
    assert_eq!(
        (rev.number, rev.rules.as_str(), rev.meta.applied_by.as_str()),
        (5, "rules 4", "alice")
    );
    let numbers: Vec<u64> = store
        .history(0)
        .await
        .expect("history")
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(numbers, vec![5, 4, 3, 2, 1]);
    let limited = store.history(2).await.expect("history");
    assert_eq!(limited.len(), 2);
    assert_eq!(
        store.get(3).await.expect("get").map(|r| r.rules),
        Some("rules 2".into())
    );
}

pub(crate) async fn stale_expected_revision_conflicts_and_writes_nothing(store: impl Store) {
    store
        .commit(0, "one".into(), meta("a"))
        .await
        .expect("commit");
    store
        .commit(1, "two".into(), meta("a"))
        .await
        .expect("commit");
    match store.commit(1, "lost".into(), meta("b")).await {
        Err(StoreError::Conflict {
            expected: 1,
            actual: 2,
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store.commit(7, "future".into(), meta("b")).await {
        Err(StoreError::Conflict {
            expected: 7,
            actual: 2,
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    let rev = store.current().await.expect("current");
    assert_eq!((rev.number, rev.rules.as_str()), (2, "two"));
    assert_eq!(store.history(0).await.expect("history").len(), 2);
}

pub(crate) async fn racing_commits_have_exactly_one_winner_per_revision(store: impl Store) {
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut wins = 0u32;
            for _ in 0..10 {
                let base = store.current().await.expect("current").number;
                match store
                    .commit(base, format!("writer {w}"), meta("racer"))
                    .await
                {
                    Ok(n) => {
                        assert_eq!(n, base + 1);
                        wins += 1;
                    }
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            wins
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += t.await.expect("task");
    }
    let current = store.current().await.expect("current").number;
    assert_eq!(
        u64::from(wins),
        current,
        "every win is one revision, every revision one win"
    );
    let numbers: Vec<u64> = store
        .history(0)
        .await
        .expect("history")
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(numbers, (1..=current).rev().collect::<Vec<_>>());
}

pub(crate) async fn keeps_at_least_the_minimum_history(store: impl Store) {
    let total = MIN_HISTORY as u64 + 20;
    for i in 0..total {
        store
            .commit(i, format!("r{}", i + 1), meta("bulk"))
            .await
            .expect("commit");
    }
    let history = store.history(0).await.expect("history");
    assert!(history.len() >= MIN_HISTORY, "kept {}", history.len());
    let oldest_kept = total + 1 - MIN_HISTORY as u64;
    let rev = store
        .get(oldest_kept)
        .await
        .expect("get")
        .expect("kept revision readable");
    assert_eq!(rev.rules, format!("r{oldest_kept}"));
    assert_eq!(rev.meta.applied_by, "bulk");
}

pub(crate) async fn watch_sees_every_commit_eventually(store: impl Store) {
    let mut rx = store.watch();
    assert_eq!(*rx.borrow_and_update(), 0);
    store
        .commit(0, "x".into(), meta("w"))
        .await
        .expect("commit");
    rx.changed().await.expect("changed");
    assert_eq!(*rx.borrow_and_update(), 1);
    store
        .commit(1, "y".into(), meta("w"))
        .await
        .expect("commit");
    store
        .commit(2, "z".into(), meta("w"))
        .await
        .expect("commit");
    rx.changed().await.expect("changed");
    assert_eq!(
        *rx.borrow(),
        3,
        "a watcher may skip revisions but ends on the newest"
    );
}

pub(crate) async fn the_ca_is_created_once_and_shared(store: impl Store) {
    let store = Arc::new(store);
    let pem = |n: u32| CaPem {
        cert: format!("cert {n}"),
        key: format!("key {n}"),
    };
    let racers: Vec<_> = (0..4)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.ca_get_or_create(pem(n)).await })
        })
        .collect();
    let mut seen = Vec::new();
    for racer in racers {
        seen.push(racer.await.expect("task").expect("get-or-create"));
    }
    assert!(
        (0..4).any(|n| seen[0] == pem(n)),
        "one of the candidates won"
    );
    assert!(seen.iter().all(|ca| *ca == seen[0]), "{seen:?}");
    let later = store.ca_get_or_create(pem(9)).await.expect("again");
    assert_eq!(later, seen[0], "a later caller gets the stored CA");
    // The CA lives beside the rules, not in them.
    assert_eq!(store.current().await.expect("current").number, 0);
}

pub(crate) async fn records_round_trip_beside_the_revisions(store: impl Store) {
    let key = "rollouts/default/gray-orders-2";
    assert_eq!(store.record_get(key).await.expect("get"), None);
    let v1 = store
        .record_put(key, r#"{"step":1}"#.into(), 0, false)
        .await
        .expect("create");
    assert_ne!(v1, 0, "a version is never 0");
    let got = store.record_get(key).await.expect("get").expect("stored");
    assert_eq!((got.version, got.value.as_str()), (v1, r#"{"step":1}"#));
    let v2 = store
        .record_put(key, r#"{"step":2}"#.into(), v1, false)
        .await
        .expect("update");
    assert_ne!(v2, v1, "every write changes the version");
    let listed = store.record_list("rollouts/").await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].0.as_str(), listed[0].1.version), (key, v2));
    store.record_delete(key, v2).await.expect("delete");
    assert_eq!(store.record_get(key).await.expect("get"), None);
    store
        .record_delete(key, v2)
        .await
        .expect("deleting an absent record is fine");
    // Records are not rules: no revision, no history, no watch event.
    assert_eq!(store.current().await.expect("current").number, 0);
    assert!(store.history(0).await.expect("history").is_empty());
    assert_eq!(*store.watch().borrow(), 0);
}

pub(crate) async fn a_stale_record_version_conflicts_and_writes_nothing(store: impl Store) {
    let key = "rollouts/default/r";
    let v1 = store
        .record_put(key, "one".into(), 0, false)
        .await
        .expect("create");
    let v2 = store
        .record_put(key, "two".into(), v1, false)
        .await
        .expect("update");
    match store.record_put(key, "lost".into(), v1, false).await {
        Err(StoreError::Conflict { expected, actual }) => assert_eq!((expected, actual), (v1, v2)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store.record_delete(key, v1).await {
        Err(StoreError::Conflict { expected, actual }) => assert_eq!((expected, actual), (v1, v2)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store
        .record_put("rollouts/none", "x".into(), v2, false)
        .await
    {
        Err(StoreError::Conflict { expected, actual }) => assert_eq!((expected, actual), (v2, 0)),
        other => panic!("updating an absent record must conflict, got {other:?}"),
    }
    match store.record_put(key, "x".into(), u64::MAX, false).await {
        Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, v2),
        other => panic!("an impossible version must conflict, got {other:?}"),
    }
    let got = store.record_get(key).await.expect("get").expect("kept");
    assert_eq!((got.version, got.value.as_str()), (v2, "two"));
    assert_eq!(store.record_get("rollouts/none").await.expect("get"), None);
}

pub(crate) async fn creating_an_existing_record_conflicts(store: impl Store) {
    let key = "rollouts/default/r";
    let v1 = store
        .record_put(key, "first".into(), 0, false)
        .await
        .expect("create");
    match store.record_put(key, "second".into(), 0, false).await {
        Err(StoreError::Conflict { expected, actual }) => assert_eq!((expected, actual), (0, v1)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let got = store.record_get(key).await.expect("get").expect("kept");
    assert_eq!(got.value, "first");
}

pub(crate) async fn racing_record_creates_have_exactly_one_winner(store: impl Store) {
    let store = Arc::new(store);
    let racers: Vec<_> = (0..6)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.record_put("race", format!("{n}"), 0, false).await })
        })
        .collect();
    let mut wins = Vec::new();
    for racer in racers {
        match racer.await.expect("task") {
            Ok(version) => wins.push(version),
            Err(StoreError::Conflict { expected: 0, .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins.len(), 1, "{wins:?}");
    let got = store
        .record_get("race")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(got.version, wins[0]);
}

pub(crate) async fn record_list_is_ordered_and_stays_in_its_prefix(store: impl Store) {
    // Written out of order; neighbours that share characters but not the prefix.
    for key in [
        "rollouts/b/2",
        "rollouts/a/1",
        "rollouts/b/10",
        "rollouts0",
        "rollout",
        "other/rollouts/a",
        "rollouts/b/1",
    ] {
        store
            .record_put(key, key.into(), 0, false)
            .await
            .expect("put");
    }
    let keys = |list: Vec<(String, super::Record)>| -> Vec<String> {
        list.into_iter()
            .map(|(k, r)| {
                assert_eq!(k, r.value, "each key with its own value");
                k
            })
            .collect()
    };
    assert_eq!(
        keys(store.record_list("rollouts/").await.expect("list")),
        [
            "rollouts/a/1",
            "rollouts/b/1",
            "rollouts/b/10",
            "rollouts/b/2"
        ]
    );
    assert_eq!(
        keys(store.record_list("rollouts/b/1").await.expect("list")),
        ["rollouts/b/1", "rollouts/b/10"]
    );
    assert!(
        store
            .record_list("nothing/")
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(store.record_list("").await.expect("list").len(), 7);
}

/// Keys and values are data, never paths or markup: odd ones round-trip, and a value
/// over the limit is refused whole on every backend.
pub(crate) async fn odd_record_keys_round_trip_and_huge_values_are_refused(store: impl Store) {
    for key in [
        "../../escape",
        "with space/ünïcode",
        "a//b/",
        ".tmp-records.json",
    ] {
        let v = store
            .record_put(key, format!("value of {key}"), 0, false)
            .await
            .expect("put");
        let got = store.record_get(key).await.expect("get").expect("stored");
        assert_eq!((got.version, got.value), (v, format!("value of {key}")));
    }
    let huge = "x".repeat(MAX_RECORD_BYTES + 1);
    match store.record_put("huge", huge, 0, false).await {
        Err(StoreError::TooLarge(_)) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(store.record_get("huge").await.expect("get"), None);
}

/// Alone, a store becomes the leader (file and memory at once, etcd after one
/// campaign), and its fenced writes pass.
pub(crate) async fn alone_a_store_leads_and_its_fenced_writes_pass(store: impl Store) {
    let mut leading = store.leadership("replica-a");
    tokio::time::timeout(Duration::from_secs(10), leading.wait_for(|l| *l))
        .await
        .expect("leads within 10 s")
        .expect("campaign alive");
    assert!(
        *store.leadership("replica-b").borrow(),
        "the same leadership"
    );
    let v = store
        .record_put("rollouts/r", "fenced".into(), 0, true)
        .await
        .expect("fenced put by the leader");
    store
        .record_put("rollouts/r", "fenced again".into(), v, true)
        .await
        .expect("fenced update by the leader");
}

/// Records and their version counter survive reopening the store (not part of
/// `suite!`: only backends that persist call it, with how to reopen them).
pub(crate) async fn records_survive_reopening<S: Store, F: Future<Output = S>>(
    store: S,
    reopen: impl FnOnce(S) -> F,
) {
    let v1 = store
        .record_put("rollouts/a", "a".into(), 0, false)
        .await
        .expect("put");
    let v2 = store
        .record_put("rollouts/b", "b".into(), 0, false)
        .await
        .expect("put");
    store.record_delete("rollouts/b", v2).await.expect("delete");
    let store = reopen(store).await;
    let got = store
        .record_get("rollouts/a")
        .await
        .expect("get")
        .expect("kept");
    assert_eq!((got.version, got.value.as_str()), (v1, "a"));
    assert_eq!(store.record_get("rollouts/b").await.expect("get"), None);
    let v3 = store
        .record_put("rollouts/b", "b again".into(), 0, false)
        .await
        .expect("recreate");
    assert!(
        v3 > v2,
        "versions keep growing across reopening: {v3} after {v2}"
    );
    match store
        .record_put("rollouts/a", "stale".into(), v2, false)
        .await
    {
        Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, v1),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// Expands to one test per conformance case for the backend `make` builds.
macro_rules! suite {
    ($make:expr) => {
        crate::store::conformance::suite!(@cases $make;
            starts_empty,
            commits_number_revisions_without_gaps,
            stale_expected_revision_conflicts_and_writes_nothing,
            racing_commits_have_exactly_one_winner_per_revision,
            keeps_at_least_the_minimum_history,
            watch_sees_every_commit_eventually,
            the_ca_is_created_once_and_shared,
            records_round_trip_beside_the_revisions,
            a_stale_record_version_conflicts_and_writes_nothing,
            creating_an_existing_record_conflicts,
            racing_record_creates_have_exactly_one_winner,
            record_list_is_ordered_and_stays_in_its_prefix,
            odd_record_keys_round_trip_and_huge_values_are_refused,
            alone_a_store_leads_and_its_fenced_writes_pass
        );
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let dir = tempfile::tempdir().expect("tempdir");
                // The second value keeps what the store needs alive (an etcd server).
                let (store, _keep) = ($make)(dir.path()).await;
                crate::store::conformance::$case(store).await;
            }
        )*
    };
}
pub(crate) use suite;

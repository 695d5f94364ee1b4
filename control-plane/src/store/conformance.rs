//! The contract every `Store` backend must keep (see `Store`). Each backend's test
//! module calls `suite!(|dir| async { (a fresh store in dir, what it needs alive) })`,
//! which expands to one `#[tokio::test]` per case so failures name the case.

use std::sync::Arc;

use super::{CaPem, MIN_HISTORY, RevisionMeta, Store, StoreError};

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
            the_ca_is_created_once_and_shared
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

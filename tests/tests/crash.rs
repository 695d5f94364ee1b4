//! The file store is crash-safe: SIGKILL graylane-control at random moments while a
//! client applies in a loop; after every restart the store holds a whole revision —
//! the last acknowledged one or the one in flight — with gap-free history.

#![allow(clippy::unwrap_used)]

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use graylane_proto::v1::admin_client::AdminClient;
use graylane_proto::v1::{ApplyRequest, GetRequest, HistoryRequest, SourceFile};
use graylane_tests::{ControlPlane, eventually};

fn lane(revision: u64) -> String {
    format!(
        "apiVersion: graylane.io/v1\nkind: Lane\nmetadata:\n  name: l\nspec:\n  tag: r{revision}\n  selector:\n    version: v{revision}\n"
    )
}

fn random_below(n: u64) -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_during_applies_never_leaves_a_torn_revision() {
    let dir = tempfile::tempdir().unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    for round in 0..12 {
        let mut cp = ControlPlane::start(dir.path(), &[]);
        let channel = tonic::transport::Endpoint::from_shared(cp.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = AdminClient::new(channel);

        let current = client
            .get(GetRequest::default())
            .await
            .unwrap()
            .into_inner();
        let last = acked.load(Ordering::SeqCst);
        assert!(
            current.revision == last || current.revision == last + 1,
            "round {round}: store at {} but {last} was the last acknowledged apply",
            current.revision
        );
        if current.revision > 0 {
            assert!(
                current
                    .rules
                    .contains(&format!("tag: r{}\n", current.revision)),
                "revision {} holds its own content: {}",
                current.revision,
                current.rules
            );
        }
        let history = client
            .history(HistoryRequest { limit: 0 })
            .await
            .unwrap()
            .into_inner()
            .entries;
        let numbers: Vec<u64> = history.iter().map(|e| e.revision).collect();
        assert_eq!(
            numbers,
            (1..=current.revision).rev().collect::<Vec<_>>(),
            "round {round}: history has no gaps"
        );
        acked.store(current.revision, Ordering::SeqCst);

        // Apply in a loop, each on top of the revision it read, until the server dies.
        let writer = {
            let acked = Arc::clone(&acked);
            let mut client = client.clone();
            tokio::spawn(async move {
                loop {
                    let base = acked.load(Ordering::SeqCst);
                    let request = ApplyRequest {
                        files: vec![SourceFile {
                            name: "l.yaml".into(),
                            content: lane(base + 1),
                        }],
                        prune: false,
                        dry_run: false,
                        expect_revision: Some(base),
                        prune_namespace: None,
                    };
                    match client.apply(request).await {
                        Ok(r) => acked.store(r.into_inner().revision, Ordering::SeqCst),
                        Err(_) => return,
                    }
                }
            })
        };
        let start = acked.load(Ordering::SeqCst);
        eventually(Duration::from_secs(20), "a few applies to land", || {
            (acked.load(Ordering::SeqCst) >= start + 2).then_some(())
        });
        // Land the kill at a random point inside the next applies.
        tokio::time::sleep(Duration::from_micros(random_below(20_000))).await;
        cp.proc.kill();
        let _ = writer.await;
    }
    assert!(
        acked.load(Ordering::SeqCst) >= 24,
        "every round applied at least twice"
    );
}

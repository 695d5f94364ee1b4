//! The control plane's one write path: read the current revision, compute the next
//! rule set (apply, delete, rollback, release), validate it with `graylane-routing`,
//! and commit it with compare-and-swap. Also feeds the push hub from the store.
//!
//! ```text
//! admin call ─► Change ─► next_set(current) ─► validate ─► store.commit(cas) ─┐
//!                  ▲  conflict and no --expect-revision: read again, retry   │
//!                  └─────────────────────────────────────────────────────────┤
//!                                store.watch() ─► hub.set_rules() ◄──────────┘
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use graylane_routing::{RuleSet, ValidationError};
use tokio::sync::watch;

use crate::push::Hub;
use crate::store::{Revision, RevisionMeta, Store, StoreError};

mod change;
mod diff;
mod release;

pub use self::change::Change;
pub use self::diff::{Action, ResourceChange};

/// How often a change without `--expect-revision` is recomputed after losing a race.
const MAX_ATTEMPTS: usize = 16;
/// The origin name for resources that came from the store, in error messages.
pub const STORED: &str = "(stored rules)";

/// Why a change or read failed; `api` turns each into one gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{}", join(.0))]
    Invalid(Vec<ValidationError>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// Part of the change is stored and the rest will follow without the caller: a
    /// rollout action recorded whose rules revision the store refused for now (the
    /// driver writes it once the store answers). Never "nothing was changed".
    #[error("{0}")]
    Pending(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn join(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Options every change takes.
#[derive(Clone, Debug, Default)]
pub struct ChangeOptions {
    /// Fail with a conflict unless this is the current revision.
    pub expect_revision: Option<u64>,
    pub dry_run: bool,
    /// Recorded in history.
    pub applied_by: String,
}

/// What a change did (or, dry run, would do).
#[derive(Clone, Debug)]
pub struct ChangeOutcome {
    /// The revision in force afterwards.
    pub revision: u64,
    pub committed: bool,
    pub changes: Vec<ResourceChange>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub commits: AtomicU64,
    pub rejected: AtomicU64,
    pub conflicts: AtomicU64,
    pub store_errors: AtomicU64,
}

impl Counters {
    /// (name, help, value) for each counter.
    pub fn render(&self) -> [(&'static str, &'static str, u64); 4] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            (
                "graylane_control_commits_total",
                "Changes committed as a new revision.",
                get(&self.commits),
            ),
            (
                "graylane_control_rejected_total",
                "Changes refused by validation.",
                get(&self.rejected),
            ),
            (
                "graylane_control_conflicts_total",
                "Changes refused for a stale --expect-revision.",
                get(&self.conflicts),
            ),
            (
                "graylane_control_store_errors_total",
                "Store calls that failed.",
                get(&self.store_errors),
            ),
        ]
    }
}

/// The store, the push hub, and the write path between them.
pub struct Control {
    store: Box<dyn Store>,
    hub: Arc<Hub>,
    counters: Counters,
    /// The revision in force, parsed: reads (the console polling every 2 s, the
    /// rollout driver every 250 ms) parse a revision once, not on every call.
    parsed: std::sync::Mutex<Option<(u64, Arc<RuleSet>)>>,
}

impl Control {
    pub fn new(store: Box<dyn Store>, hub: Arc<Hub>) -> Self {
        Self {
            store,
            hub,
            counters: Counters::default(),
            parsed: std::sync::Mutex::new(None),
        }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Ready when the store answers.
    pub async fn ready(&self) -> Result<(), String> {
        self.store.current().await.map_err(|e| e.to_string())?;
        if !self.hub.current().loaded {
            return Err("the rules in force are not loaded yet".into());
        }
        Ok(())
    }

    /// The revision in force, parsed (once per revision: a revision never changes).
    pub async fn rules(&self) -> Result<(u64, Arc<RuleSet>), ControlError> {
        let current = self
            .store
            .current()
            .await
            .inspect_err(|_| self.count(&self.counters.store_errors))?;
        let cached = |c: &Option<(u64, Arc<RuleSet>)>| {
            c.as_ref()
                .filter(|(n, _)| *n == current.number)
                .map(|(_, set)| Arc::clone(set))
        };
        // Only a few field reads happen under the lock: a poisoned one is still usable.
        if let Some(set) = cached(&self.parsed.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok((current.number, set));
        }
        let set = Arc::new(parse_stored(&current)?);
        *self.parsed.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((current.number, Arc::clone(&set)));
        Ok((current.number, set))
    }

    /// Revision `number`, parsed; `NotFound` when it never existed or is no longer kept.
    pub async fn revision(&self, number: u64) -> Result<(u64, RuleSet), ControlError> {
        let revision = self
            .store
            .get(number)
            .await
            .inspect_err(|_| self.count(&self.counters.store_errors))?
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "revision {number} does not exist or is no longer kept"
                ))
            })?;
        Ok((revision.number, parse_stored(&revision)?))
    }

    /// Applies `change` as one new revision (nothing is written when it changes
    /// nothing, is a dry run, or fails). Validation errors list every problem found.
    pub async fn change(
        &self,
        change: Change,
        options: ChangeOptions,
    ) -> Result<ChangeOutcome, ControlError> {
        for _ in 0..MAX_ATTEMPTS {
            let current = self
                .store
                .current()
                .await
                .inspect_err(|_| self.count(&self.counters.store_errors))?;
            if let Some(expected) = options.expect_revision
                && expected != current.number
            {
                self.count(&self.counters.conflicts);
                return Err(StoreError::Conflict {
                    expected,
                    actual: current.number,
                }
                .into());
            }
            let old = parse_stored(&current)?;
            let new = change
                .next_set(&old, self.store.as_ref())
                .await
                .inspect_err(|e| {
                    if matches!(e, ControlError::Invalid(_)) {
                        self.count(&self.counters.rejected);
                    }
                })?;
            let changes = diff::changes(&old, &new);
            let nothing = changes.iter().all(|c| c.action == Action::Unchanged);
            if options.dry_run || nothing {
                return Ok(ChangeOutcome {
                    revision: current.number,
                    committed: false,
                    changes,
                });
            }
            let meta = RevisionMeta {
                applied_at_ms: crate::now_ms(),
                applied_by: options.applied_by.clone(),
                summary: change.summary(&changes),
                resources: u32::try_from(new.len()).unwrap_or(u32::MAX),
            };
            let records =
                crate::rollout::before_commit(self.store.as_ref(), &change, &old, &new).await?;
            let committed = self.store.commit(current.number, new.to_yaml(), meta).await;
            if committed.is_err() {
                crate::rollout::undo(self.store.as_ref(), records).await;
            }
            match committed {
                Ok(revision) => {
                    self.count(&self.counters.commits);
                    tracing::info!(revision, by = %options.applied_by, "committed");
                    crate::rollout::after_commit(self.store.as_ref(), &change, &old, &new).await;
                    self.in_force(revision).await;
                    return Ok(ChangeOutcome {
                        revision,
                        committed: true,
                        changes,
                    });
                }
                // Someone else committed between our read and our write. Without an
                // expected revision the user asked for "my change on top of whatever
                // is current", so compute it again on the new state.
                Err(StoreError::Conflict { .. }) if options.expect_revision.is_none() => continue,
                Err(e) => {
                    if matches!(e, StoreError::Conflict { .. }) {
                        self.count(&self.counters.conflicts);
                    } else {
                        self.count(&self.counters.store_errors);
                    }
                    return Err(e.into());
                }
            }
        }
        Err(StoreError::Unavailable("too many concurrent changes, try again".into()).into())
    }

    /// Waits (a bounded while) for the hub to hold `revision`, so that what the
    /// caller looks at next, `/metrics` or `graylane status`, shows the change it was
    /// told is committed. The hub takes revisions from the store's watch
    /// (`push_revisions`), the one writer; a caller answered before it fired saw
    /// the revision before its own. A hub not yet loaded (start-up, tests without
    /// the feed) is not waited for.
    async fn in_force(&self, revision: u64) {
        let mut state = self.hub.subscribe();
        if !state.borrow().loaded {
            return;
        }
        let held = state.wait_for(|s| s.revision >= revision);
        if tokio::time::timeout(IN_FORCE_WAIT, held).await.is_err() {
            tracing::warn!(
                revision,
                "committed, not yet in force after {IN_FORCE_WAIT:?}"
            );
        }
    }

    fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Feeds every committed revision to the hub until `shutdown`. Reads the current
    /// revision after each wake-up, so skipped notifications lose nothing.
    pub async fn push_revisions(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut revisions = self.store.watch();
        let mut retry = RETRY_FIRST;
        loop {
            // A failed read (the store unreachable, e.g. at start) is retried on a
            // timer too: the store's watch may have nothing new to say once it is back.
            let failed = match self.store.current().await {
                Ok(current) => {
                    self.hub.set_rules(current.number, current.rules);
                    retry = RETRY_FIRST;
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the current revision; retrying");
                    true
                }
            };
            let pause = async {
                if failed {
                    tokio::time::sleep(retry).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                changed = revisions.changed() => if changed.is_err() { return },
                () = pause => retry = (retry * 2).min(RETRY_MAX),
                _ = shutdown.wait_for(|down| *down) => return,
            }
        }
    }
}

/// Between reads of the revision in force while the store is unreachable.
/// How long a change waits for its revision to be in force (see `in_force`).
const IN_FORCE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(200);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(3);

/// Stored text was validated before it was committed; failing to parse it now means
/// the data was changed behind our back (or a newer version wrote it).
pub(crate) fn parse_stored(revision: &Revision) -> Result<RuleSet, ControlError> {
    RuleSet::from_yaml(STORED, &revision.rules).map_err(|errors| {
        ControlError::Store(StoreError::Corrupt(format!(
            "revision {}: {}",
            revision.number,
            join(&errors)
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    const LANE: &str = "apiVersion: graylane.io/v1\nkind: Lane\nmetadata: {name: gray}\nspec:\n  tag: gray\n  selector: {version: v2}\n";

    #[tokio::test]
    async fn a_revision_is_parsed_once_and_a_new_one_is_read_anew() {
        let control = Control::new(Box::new(MemoryStore::new(100)), Arc::new(Hub::new()));
        let (n0, empty) = control.rules().await.unwrap();
        let (_, again) = control.rules().await.unwrap();
        assert!(
            Arc::ptr_eq(&empty, &again),
            "the same revision, parsed once"
        );
        let apply = Change::Apply {
            files: vec![("lane.yaml".into(), LANE.into())],
            prune: graylane_routing::Prune::None,
        };
        control
            .change(apply, ChangeOptions::default())
            .await
            .unwrap();
        let (n1, rules) = control.rules().await.unwrap();
        assert_eq!((n0, n1), (0, 1));
        assert_eq!(rules.len(), 1, "the new revision, not the cached one");
    }

    #[tokio::test]
    async fn a_committed_change_is_in_force_when_the_caller_is_answered() {
        let hub = Arc::new(Hub::new());
        let control = Arc::new(Control::new(
            Box::new(MemoryStore::new(100)),
            Arc::clone(&hub),
        ));
        let (_stop, stopped) = watch::channel(false);
        tokio::spawn(Arc::clone(&control).push_revisions(stopped));
        let mut state = hub.subscribe();
        state.wait_for(|s| s.loaded).await.unwrap();
        for n in 1..=3 {
            let apply = Change::Apply {
                files: vec![(
                    "lane.yaml".into(),
                    format!(
                        "apiVersion: graylane.io/v1\nkind: Lane\nmetadata: {{name: g{n}}}\n\
                         spec:\n  tag: g{n}\n  selector: {{version: v{n}}}\n"
                    ),
                )],
                prune: graylane_routing::Prune::None,
            };
            let outcome = control
                .change(apply, ChangeOptions::default())
                .await
                .unwrap();
            assert_eq!(outcome.revision, n);
            // No wait here: `/metrics` and `status` read the hub right after.
            assert_eq!(hub.current().revision, n, "revision {n} in force");
        }
    }
}

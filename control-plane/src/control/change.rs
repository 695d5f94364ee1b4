//! The four ways to change the rule set, each computed from the set in force.

use graylane_routing::{Kind, Prune, Release, RuleSet, qualified};

use super::diff::{self, ResourceChange};
use super::{ControlError, parse_stored};
use crate::store::Store;

/// A requested change of the rule set.
#[derive(Clone, Debug)]
pub enum Change {
    /// Create or update the resources of these (file name, content) pairs, removing
    /// what `prune` covers that they do not hold.
    Apply {
        files: Vec<(String, String)>,
        prune: Prune,
    },
    /// Remove these resources, as (kind, namespace, name); each must exist.
    Delete(Vec<(Kind, String, String)>),
    /// Restore the content of an earlier revision.
    Rollback(u64),
    /// Set a service's release state in its RoutePolicy (created when missing).
    Release {
        namespace: String,
        service: String,
        state: Release,
    },
    /// A rollout's own decision (`crate::rollout`): the percent of the rule it owns
    /// and, once it is over, the rule released and these services set to `all`.
    Rollout {
        namespace: String,
        name: String,
        percent: f64,
        end: bool,
        release_all: Vec<(String, String)>,
        /// History's summary after `rollout NAME: `.
        note: String,
    },
}

impl Change {
    /// The set this change leads to from `old`, validated as a whole.
    pub(super) async fn next_set(
        &self,
        old: &RuleSet,
        store: &dyn Store,
    ) -> Result<RuleSet, ControlError> {
        let new = match self {
            Self::Apply { files, prune } => {
                let (applied, mut errors) = RuleSet::read_files(files);
                if errors.is_empty() && applied.is_empty() && *prune != Prune::None {
                    // An empty render of a CI template would wipe the mesh's rules
                    // (kubectl refuses "no objects passed to apply" too).
                    return Err(ControlError::BadRequest(
                        "the files hold no resources: with prune that would delete every rule in scope; delete resources by name instead".into(),
                    ));
                }
                let mut new = old.clone();
                new.apply(applied, prune);
                if !errors.is_empty() {
                    // Refused either way; what the valid documents break in the set
                    // (duplicates, references) is reported with the rest.
                    errors.extend(new.validate().err().unwrap_or_default());
                    return Err(ControlError::Invalid(errors));
                }
                new
            }
            Self::Delete(refs) => {
                let mut new = old.clone();
                let missing: Vec<String> = refs
                    .iter()
                    .filter(|(kind, namespace, name)| new.remove(*kind, namespace, name).is_none())
                    .map(|(kind, namespace, name)| kind.display_ref(namespace, name))
                    .collect();
                if !missing.is_empty() {
                    return Err(ControlError::NotFound(format!(
                        "not found: {}",
                        missing.join(", ")
                    )));
                }
                new
            }
            Self::Rollback(to) => {
                let revision = store.get(*to).await?.ok_or_else(|| {
                    ControlError::NotFound(format!(
                        "revision {to} does not exist or is no longer kept"
                    ))
                })?;
                let mut restored = parse_stored(&revision)?;
                // A revision written while a rollout ran holds its rule marked; that
                // rollout has ended since (or it is active and the check below
                // refuses), so its rule is the user's now, at the percent restored.
                restored.release_ended_rollout_rules(crate::rollout::active(store).await?);
                restored
            }
            Self::Release {
                namespace,
                service,
                state,
            } => {
                let mut new = old.clone();
                new.set_release(namespace, service, *state)
                    .map_err(ControlError::Invalid)?;
                new
            }
            Self::Rollout { .. } => {
                let new = self.rollout_set(old)?;
                new.validate().map_err(ControlError::Invalid)?;
                return Ok(new);
            }
        };
        // A person's change: it may not touch what an active rollout owns. Checked
        // first, since deleting a rollout also breaks its rule's reference, and "it is
        // active" is the error that says what to do.
        let active = crate::rollout::active(store).await?;
        new.check_rollout_change(old, active)
            .map_err(ControlError::Invalid)?;
        new.validate().map_err(ControlError::Invalid)?;
        Ok(new)
    }

    fn rollout_set(&self, old: &RuleSet) -> Result<RuleSet, ControlError> {
        let Self::Rollout {
            namespace,
            name,
            percent,
            end,
            release_all,
            ..
        } = self
        else {
            return Ok(old.clone());
        };
        let mut new = old.clone();
        new.set_rollout_percent(namespace, name, *percent)
            .map_err(ControlError::BadRequest)?;
        if *end {
            new.release_rollout_rule(namespace, name);
            for (ns, service) in release_all {
                new.set_release(ns, service, Release::All)
                    .map_err(ControlError::Invalid)?;
            }
        }
        Ok(new)
    }

    /// The history line for this change.
    pub(super) fn summary(&self, changes: &[ResourceChange]) -> String {
        let what = diff::summary(changes);
        match self {
            Self::Apply {
                prune: Prune::None, ..
            } => format!("apply: {what}"),
            Self::Apply {
                prune: Prune::All, ..
            } => format!("apply --prune: {what}"),
            Self::Apply {
                prune: Prune::Namespace(ns),
                ..
            } => format!("apply --prune -n {ns}: {what}"),
            Self::Delete(_) => format!("delete: {what}"),
            Self::Rollback(to) => format!("rollback to {to}: {what}"),
            Self::Release {
                namespace,
                service,
                state,
            } => format!("release {} {state}", qualified(namespace, service)),
            Self::Rollout { name, note, .. } => format!("rollout {name}: {note}"),
        }
    }
}

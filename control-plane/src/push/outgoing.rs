//! What one stream sends for one new state: only the parts that changed since its
//! previous snapshot, endpoints as a delta when that is smaller, and all of it cut
//! into messages of about `PART_BYTES`.
//!
//! Why parts: tonic's encode buffer keeps the capacity of the largest message a stream
//! ever sent (up to 64 KiB), for the life of the stream. With 1,000 endpoints a full
//! set is ~57 KB, so every idle stream would hold ~64 KiB for nothing. Parts are built
//! lazily from the shared `State`, so a slow stream holds no copy of it either.
//!
//! A scoped stream (`Scope`) sends the endpoints its scope covers and the directory:
//! a full set is the runs of its services (`Directory::runs`), a delta the shared
//! changes filtered by the scope (`compose`), plus every endpoint of a service that
//! just joined the scope.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use graylane_proto::v1::{
    Endpoint, EndpointDelta, EndpointSet, ServiceDirectory, ServiceDirectoryDelta, ServiceName,
    Snapshot, TrustBundle,
};
use prost::Message;

use super::directory::diff;
use super::scope::{Owed, Scope};
use super::{Change, State, compose, endpoint_delta};

/// Target size of one message. Small enough to keep per-stream buffers small, large
/// enough that a 1,000-endpoint set is a handful of messages.
pub const PART_BYTES: usize = 6 * 1024;

/// The endpoint change one snapshot carries.
enum Endpoints {
    Unchanged,
    /// The whole set (of the scope): these runs of `state.endpoints`. `sent`: at
    /// least one part carried it (an empty set still goes out once: it replaces).
    Full {
        runs: VecDeque<Range<usize>>,
        sent: bool,
    },
    Delta {
        removed: Vec<String>,
        upserted: Vec<Endpoint>,
    },
}

/// The directory change one snapshot carries (scoped streams only).
enum Names {
    Unchanged,
    /// `state.directory.names[next..]`; `sent` as for endpoints.
    Full {
        next: usize,
        sent: bool,
    },
    Delta {
        added: Vec<ServiceName>,
        removed: Vec<ServiceName>,
    },
}

/// The parts still to send of one snapshot.
pub struct Outgoing {
    state: Arc<State>,
    /// Byte offset into `state.rules` of what is left to send; `None`: rules unchanged.
    rules: Option<usize>,
    directory: Names,
    endpoints: Endpoints,
    /// Whether the trust bundle goes out (in the first part): new to this stream.
    trust_bundle: bool,
    started: bool,
}

impl Outgoing {
    /// The snapshot of `state` for a stream whose previous snapshot was `last`, with
    /// `scope` (whatever it is owed is sent now).
    pub fn new(state: Arc<State>, last: Option<&State>, scope: &mut Scope) -> Self {
        let rules_changed =
            last.is_none_or(|l| l.revision != state.revision || l.rules != state.rules);
        let owed = scope.take_owed();
        let endpoints = match (last, owed) {
            (None, _) | (_, Owed::Full) => full(&state, scope),
            (Some(l), owed) => {
                let added = match owed {
                    Owed::Added(added) => added,
                    _ => Vec::new(),
                };
                changed_endpoints(&state, l, scope, &added)
            }
        };
        let directory = match (&endpoints, last) {
            _ if !scope.is_scoped() => Names::Unchanged,
            (Endpoints::Full { .. }, _) | (_, None) => Names::Full {
                next: 0,
                sent: false,
            },
            (_, Some(l)) if Arc::ptr_eq(&l.directory, &state.directory) => Names::Unchanged,
            (_, Some(l)) => {
                let (added, removed) = diff(&l.directory.names, &state.directory.names);
                if added.len() + removed.len() < state.directory.names.len() {
                    Names::Delta { added, removed }
                } else {
                    Names::Full {
                        next: 0,
                        sent: false,
                    }
                }
            }
        };
        let trust_bundle = state.trust_bundle.is_some()
            && last.is_none_or(|l| l.trust_bundle != state.trust_bundle);
        Self {
            rules: rules_changed.then_some(0),
            directory,
            endpoints,
            trust_bundle,
            state,
            started: false,
        }
    }

    /// Whether this snapshot would tell its sidecar nothing new: rules, trust bundle,
    /// directory and the endpoints of its scope all as it holds them. Such a snapshot
    /// is not sent (`api::discovery`): a pod joining anywhere in a 10,000-sidecar mesh
    /// would otherwise cost every scoped sidecar a snapshot, an apply and an ACK.
    pub fn carries_nothing(&self) -> bool {
        !self.started && !self.trust_bundle && self.done()
    }

    /// The state this snapshot carries.
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// The next part, or `None` once the last one (with `more == false`) was returned.
    pub fn next_part(&mut self) -> Option<Snapshot> {
        if self.started && self.done() {
            return None;
        }
        let first = !self.started;
        self.started = true;
        let mut part = Snapshot {
            version: self.state.version,
            revision: self.state.revision,
            ..Snapshot::default()
        };
        // The report period follows from the rules: sent with them, in the first part.
        if first && self.rules.is_some() {
            part.traffic_report_interval_ms = Some(self.state.traffic_report_interval_ms);
        }
        if first && self.trust_bundle {
            part.trust_bundle = self.state.trust_bundle.as_ref().map(|b| TrustBundle {
                certificates_pem: b.to_vec(),
            });
        }
        let mut budget = PART_BYTES;
        if let Some(offset) = self.rules {
            let rules = &self.state.rules[offset..];
            let mut end = rules.len().min(budget);
            while !rules.is_char_boundary(end) {
                end -= 1;
            }
            part.rules = Some(rules[..end].to_string());
            budget -= end;
            self.rules = (offset + end < self.state.rules.len()).then_some(offset + end);
        }
        if self.rules.is_none() {
            budget = self.fill_directory(&mut part, budget);
            if self.directory_done() {
                self.fill_endpoints(&mut part, budget);
            }
        }
        part.more = !self.done();
        Some(part)
    }

    fn done(&self) -> bool {
        self.rules.is_none()
            && self.directory_done()
            && match &self.endpoints {
                Endpoints::Unchanged => true,
                Endpoints::Full { runs, sent } => *sent && runs.is_empty(),
                Endpoints::Delta { removed, upserted } => removed.is_empty() && upserted.is_empty(),
            }
    }

    fn directory_done(&self) -> bool {
        match &self.directory {
            Names::Unchanged => true,
            Names::Full { next, sent } => *sent && *next >= self.state.directory.names.len(),
            Names::Delta { added, removed } => added.is_empty() && removed.is_empty(),
        }
    }

    /// Adds what fits of the directory; the budget left.
    fn fill_directory(&mut self, part: &mut Snapshot, mut budget: usize) -> usize {
        match &mut self.directory {
            Names::Unchanged => {}
            Names::Full { next, sent } => {
                let names = &self.state.directory.names;
                let mut set = ServiceDirectory::default();
                while let Some(n) = names.get(*next) {
                    let size = n.encoded_len() + 3;
                    if size > budget && !set.services.is_empty() {
                        break;
                    }
                    budget = budget.saturating_sub(size);
                    set.services.push(n.clone());
                    *next += 1;
                }
                *sent = true;
                part.directory = Some(set);
            }
            Names::Delta { added, removed } => {
                let mut delta = ServiceDirectoryDelta::default();
                for (from, to) in [(removed, &mut delta.removed), (added, &mut delta.added)] {
                    while let Some(n) = from.last() {
                        let size = n.encoded_len() + 3;
                        if size > budget && !to.is_empty() {
                            break;
                        }
                        budget = budget.saturating_sub(size);
                        to.extend(from.pop());
                    }
                }
                part.directory_changes = Some(delta);
            }
        }
        budget
    }

    fn fill_endpoints(&mut self, part: &mut Snapshot, mut budget: usize) {
        match &mut self.endpoints {
            Endpoints::Unchanged => {}
            Endpoints::Full { runs, sent } => {
                let mut set = EndpointSet::default();
                // At least one entry per part, so a huge endpoint still makes progress.
                while let Some(run) = runs.front_mut() {
                    let Some(e) = self
                        .state
                        .endpoints
                        .get(run.start)
                        .filter(|_| run.start < run.end)
                    else {
                        runs.pop_front();
                        continue;
                    };
                    let size = e.encoded_len() + 4;
                    if size > budget && !set.endpoints.is_empty() {
                        break;
                    }
                    budget = budget.saturating_sub(size);
                    set.endpoints.push(e.clone());
                    run.start += 1;
                }
                *sent = true;
                part.endpoints = Some(set);
            }
            Endpoints::Delta { removed, upserted } => {
                let mut delta = EndpointDelta::default();
                while let Some(id) = removed.last() {
                    let size = id.len() + 2;
                    if size > budget && !delta.removed.is_empty() {
                        break;
                    }
                    budget = budget.saturating_sub(size);
                    delta.removed.extend(removed.pop());
                }
                while let Some(e) = upserted.last() {
                    let size = e.encoded_len() + 4;
                    if size > budget && !(delta.removed.is_empty() && delta.upserted.is_empty()) {
                        break;
                    }
                    budget = budget.saturating_sub(size);
                    delta.upserted.extend(upserted.pop());
                }
                part.endpoint_changes = Some(delta);
            }
        }
    }
}

/// The whole set a stream with `scope` holds.
fn full(state: &State, scope: &Scope) -> Endpoints {
    Endpoints::Full {
        runs: state.directory.runs(scope, state.endpoints.len()).into(),
        sent: false,
    }
}

/// What changed for a stream whose last snapshot was `last`: the shared changes its
/// scope covers, and every endpoint of the services `added` to it since (the sidecar
/// holds none of theirs). A full set when that is not smaller.
fn changed_endpoints(
    state: &State,
    last: &State,
    scope: &Scope,
    added: &[(String, String)],
) -> Endpoints {
    if last.endpoints_generation == state.endpoints_generation && added.is_empty() {
        return Endpoints::Unchanged;
    }
    let is_added = |ns: &str, svc: &str| added.iter().any(|(n, s)| n == ns && s == svc);
    let EndpointDelta {
        mut upserted,
        removed,
    } = if last.endpoints_generation == state.endpoints_generation {
        EndpointDelta::default()
    } else {
        match changes_since(state, last) {
            Some(changes) => compose(changes, scope),
            None => compose(
                &[Arc::new(endpoint_delta(&last.endpoints, &state.endpoints))],
                scope,
            ),
        }
    };
    if !added.is_empty() {
        // Theirs come whole below; an instance of theirs the sidecar never had needs
        // no removal either (ids are unique, so dropping them here is exact).
        upserted.retain(|e| !is_added(&e.namespace, &e.service));
        for (ns, svc) in added {
            if let Some(run) = state.directory.run(ns, svc) {
                upserted.extend(state.endpoints[run].iter().cloned());
            }
        }
    }
    let whole: usize = state
        .directory
        .runs(scope, state.endpoints.len())
        .iter()
        .map(|r| r.len())
        .sum();
    if upserted.len() + removed.len() < whole.max(1) {
        Endpoints::Delta { removed, upserted }
    } else {
        full(state, scope)
    }
}

/// The changes from `last`'s endpoints to `state`'s, if `state` still keeps them all.
fn changes_since<'a>(state: &'a State, last: &State) -> Option<&'a [Arc<Change>]> {
    let behind = state
        .endpoints_generation
        .checked_sub(last.endpoints_generation)?;
    let kept = &state.endpoint_changes;
    let behind = usize::try_from(behind).ok().filter(|b| *b <= kept.len())?;
    Some(&kept[kept.len() - behind..])
}

#[cfg(test)]
mod tests;

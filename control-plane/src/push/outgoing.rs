//! What one stream sends for one new state: only the parts that changed since its
//! previous snapshot, endpoints as a delta when that is smaller, and all of it cut
//! into messages of about `PART_BYTES`.
//!
//! Why parts: tonic's encode buffer keeps the capacity of the largest message a stream
//! ever sent (up to 64 KiB), for the life of the stream. With 1,000 endpoints a full
//! set is ~57 KB, so every idle stream would hold ~64 KiB for nothing. Parts are built
//! lazily from the shared `State`, so a slow stream holds no copy of it either.

use std::sync::Arc;

use graylane_proto::v1::{Endpoint, EndpointDelta, EndpointSet, Snapshot, TrustBundle};
use prost::Message;

use super::{State, compose, endpoint_delta};

/// Target size of one message. Small enough to keep per-stream buffers small, large
/// enough that a 1,000-endpoint set is a handful of messages.
pub const PART_BYTES: usize = 6 * 1024;

/// The endpoint change one snapshot carries.
enum Endpoints {
    Unchanged,
    /// The whole set, from `state.endpoints[next..]`.
    Full {
        next: usize,
    },
    Delta {
        removed: Vec<String>,
        upserted: Vec<Endpoint>,
    },
}

/// The parts still to send of one snapshot.
pub struct Outgoing {
    state: Arc<State>,
    /// Byte offset into `state.rules` of what is left to send; `None`: rules unchanged.
    rules: Option<usize>,
    endpoints: Endpoints,
    /// Whether the trust bundle goes out (in the first part): new to this stream.
    trust_bundle: bool,
    started: bool,
}

impl Outgoing {
    /// The snapshot of `state` for a stream whose previous snapshot was `last`.
    pub fn new(state: Arc<State>, last: Option<&State>) -> Self {
        let rules_changed =
            last.is_none_or(|l| l.revision != state.revision || l.rules != state.rules);
        let endpoints = match last {
            Some(l) if l.endpoints_generation == state.endpoints_generation => Endpoints::Unchanged,
            Some(l) => {
                let EndpointDelta { upserted, removed } = match changes_since(&state, l) {
                    Some(changes) => compose(changes),
                    None => endpoint_delta(&l.endpoints, &state.endpoints),
                };
                if upserted.len() + removed.len() < state.endpoints.len() {
                    Endpoints::Delta { removed, upserted }
                } else {
                    Endpoints::Full { next: 0 }
                }
            }
            None => Endpoints::Full { next: 0 },
        };
        let trust_bundle = state.trust_bundle.is_some()
            && last.is_none_or(|l| l.trust_bundle != state.trust_bundle);
        Self {
            rules: rules_changed.then_some(0),
            endpoints,
            trust_bundle,
            state,
            started: false,
        }
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
            self.fill_endpoints(&mut part, budget);
        }
        part.more = !self.done();
        Some(part)
    }

    fn done(&self) -> bool {
        self.rules.is_none()
            && match &self.endpoints {
                Endpoints::Unchanged => true,
                Endpoints::Full { next } => *next >= self.state.endpoints.len() && *next > 0,
                Endpoints::Delta { removed, upserted } => removed.is_empty() && upserted.is_empty(),
            }
    }

    fn fill_endpoints(&mut self, part: &mut Snapshot, mut budget: usize) {
        match &mut self.endpoints {
            Endpoints::Unchanged => {}
            Endpoints::Full { next } => {
                let mut set = EndpointSet::default();
                // At least one entry per part, so a huge endpoint still makes progress.
                while let Some(e) = self.state.endpoints.get(*next) {
                    let size = e.encoded_len() + 4;
                    if size > budget && !set.endpoints.is_empty() {
                        break;
                    }
                    budget = budget.saturating_sub(size);
                    set.endpoints.push(e.clone());
                    *next += 1;
                }
                // An empty set must still be sent once: it replaces what the sidecar had.
                *next = (*next).max(1);
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

/// The changes from `last`'s endpoints to `state`'s, if `state` still keeps them all.
fn changes_since<'a>(state: &'a State, last: &State) -> Option<&'a [Arc<EndpointDelta>]> {
    let behind = state
        .endpoints_generation
        .checked_sub(last.endpoints_generation)?;
    let kept = &state.endpoint_changes;
    let behind = usize::try_from(behind).ok().filter(|b| *b <= kept.len())?;
    Some(&kept[kept.len() - behind..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: usize) -> Arc<Vec<Endpoint>> {
        let mut list: Vec<Endpoint> = (0..n)
            .map(|i| Endpoint {
                service: format!("svc-{:02}", i % 20),
                instance_id: format!("inst-{i:05}"),
                labels: [("version".to_string(), "v1".to_string())].into(),
                address: format!("10.0.{}.{}:15006", i / 250, i % 250),
                ..Default::default()
            })
            .collect();
        list.sort_by(|a, b| (&a.service, &a.instance_id).cmp(&(&b.service, &b.instance_id)));
        Arc::new(list)
    }

    fn state(
        version: u64,
        revision: u64,
        rules: &str,
        generation: u64,
        eps: Arc<Vec<Endpoint>>,
    ) -> Arc<State> {
        Arc::new(State {
            version,
            revision,
            rules: rules.into(),
            endpoints_generation: generation,
            endpoints: eps,
            endpoint_changes: Arc::default(),
            loaded: true,
            trust_bundle: None,
            traffic_report_interval_ms: 5_000,
        })
    }

    /// Sends every part and reassembles them as a sidecar would.
    fn drain(
        mut out: Outgoing,
    ) -> (
        Vec<Snapshot>,
        Option<String>,
        Option<Vec<Endpoint>>,
        Option<EndpointDelta>,
    ) {
        let mut parts = Vec::new();
        while let Some(p) = out.next_part() {
            parts.push(p);
        }
        let rules = parts
            .iter()
            .any(|p| p.rules.is_some())
            .then(|| parts.iter().filter_map(|p| p.rules.clone()).collect());
        let full = parts.iter().any(|p| p.endpoints.is_some()).then(|| {
            parts
                .iter()
                .filter_map(|p| p.endpoints.clone())
                .flat_map(|s| s.endpoints)
                .collect()
        });
        let delta = parts.iter().any(|p| p.endpoint_changes.is_some()).then(|| {
            let mut d = EndpointDelta::default();
            for c in parts.iter().filter_map(|p| p.endpoint_changes.clone()) {
                d.removed.extend(c.removed);
                d.upserted.extend(c.upserted);
            }
            d
        });
        (parts, rules, full, delta)
    }

    #[test]
    fn a_large_first_snapshot_is_cut_into_small_parts_that_reassemble_exactly() {
        let rules = "é".repeat(20_000); // 40 KB, multi-byte: cuts must fall on char boundaries
        let s = state(7, 7, &rules, 1, endpoints(1000));
        let (parts, got_rules, full, delta) = drain(Outgoing::new(Arc::clone(&s), None));
        assert!(parts.len() > 5);
        assert!(parts.iter().all(|p| p.version == 7 && p.revision == 7));
        assert!(parts.iter().rev().skip(1).all(|p| p.more) && !parts.last().unwrap().more);
        assert!(
            parts.iter().all(|p| p.encoded_len() <= PART_BYTES + 512),
            "every message stays small"
        );
        assert_eq!(got_rules.as_deref(), Some(rules.as_str()));
        assert_eq!(full.as_deref(), Some(s.endpoints.as_slice()));
        assert!(delta.is_none());
    }

    #[test]
    fn an_empty_first_snapshot_is_one_part_that_still_replaces_endpoints() {
        let (parts, rules, full, _) = drain(Outgoing::new(
            state(1, 0, "", 0, Arc::new(Vec::new())),
            None,
        ));
        assert_eq!(parts.len(), 1);
        assert!(!parts[0].more);
        assert_eq!(
            (rules.as_deref(), full.map(|f| f.len())),
            (Some(""), Some(0))
        );
    }

    #[test]
    fn later_snapshots_carry_only_what_changed() {
        let eps = endpoints(100);
        let first = state(1, 1, "a", 1, Arc::clone(&eps));
        let rules_only = state(2, 2, "b", 1, Arc::clone(&eps));
        let (parts, rules, full, delta) =
            drain(Outgoing::new(Arc::clone(&rules_only), Some(&first)));
        assert_eq!(
            (
                parts.len(),
                rules.as_deref(),
                full.is_none(),
                delta.is_none()
            ),
            (1, Some("b"), true, true)
        );

        let mut fewer = eps.as_ref().clone();
        let gone = fewer.remove(3).instance_id;
        let endpoints_only = state(3, 2, "b", 2, Arc::new(fewer));
        let (_, rules, full, delta) = drain(Outgoing::new(endpoints_only, Some(&rules_only)));
        assert!(rules.is_none() && full.is_none());
        assert_eq!(
            delta.map(|d| (d.removed, d.upserted.len())),
            Some((vec![gone], 0))
        );
    }

    #[test]
    fn a_stream_behind_by_kept_changes_sends_them_composed() {
        let eps = endpoints(10);
        let first = state(1, 1, "r", 1, Arc::clone(&eps));
        let mut fewer = eps.as_ref().clone();
        let gone = fewer.remove(0).instance_id;
        let mut next = State::clone(&state(2, 1, "r", 2, Arc::new(fewer.clone())));
        // A marker the diff would never produce: proves the shared change is used.
        let shared = EndpointDelta {
            removed: vec!["shared".into()],
            upserted: Vec::new(),
        };
        next.endpoint_changes = Arc::new(vec![Arc::new(shared.clone())]);
        let next = Arc::new(next);
        let (_, _, _, delta) = drain(Outgoing::new(Arc::clone(&next), Some(&first)));
        assert_eq!(delta, Some(shared));
        // Two generations behind, one change kept: diffed here.
        let older = state(0, 1, "r", 0, eps);
        let (_, _, _, delta) = drain(Outgoing::new(next, Some(&older)));
        assert_eq!(delta.map(|d| d.removed), Some(vec![gone]));
    }

    #[test]
    fn the_report_period_goes_out_with_the_rules_only() {
        let period_of = |out: Outgoing| {
            let (parts, ..) = drain(out);
            assert!(
                parts
                    .iter()
                    .skip(1)
                    .all(|p| p.traffic_report_interval_ms.is_none())
            );
            parts[0].traffic_report_interval_ms
        };
        let mut rollout = State::clone(&state(1, 1, &"r".repeat(20_000), 1, endpoints(3)));
        rollout.traffic_report_interval_ms = 1_000;
        let first = Arc::new(rollout);
        assert_eq!(
            period_of(Outgoing::new(Arc::clone(&first), None)),
            Some(1_000)
        );
        let endpoints_only = state(2, 1, &first.rules, 2, endpoints(4));
        assert_eq!(
            period_of(Outgoing::new(Arc::clone(&endpoints_only), Some(&first))),
            None
        );
        // A rule change carries it even when it stays the same.
        let rules = state(3, 2, "r2", 2, endpoints(4));
        assert_eq!(
            period_of(Outgoing::new(rules, Some(&endpoints_only))),
            Some(5_000)
        );
    }

    #[test]
    fn the_trust_bundle_goes_out_first_and_again_only_when_it_changes() {
        let with = |s: Arc<State>, bundle: &[&str]| {
            let mut next = State::clone(&s);
            next.trust_bundle = Some(Arc::new(bundle.iter().map(|b| b.to_string()).collect()));
            Arc::new(next)
        };
        let bundle_of = |out: Outgoing| {
            let (parts, ..) = drain(out);
            let carrying: Vec<_> = parts.iter().filter(|p| p.trust_bundle.is_some()).collect();
            assert!(carrying.len() <= 1, "at most one part carries it");
            carrying.first().and_then(|p| p.trust_bundle.clone())
        };
        let first = with(state(1, 1, "r", 1, endpoints(3)), &["ca"]);
        let sent = bundle_of(Outgoing::new(Arc::clone(&first), None)).unwrap();
        assert_eq!(sent.certificates_pem, ["ca"]);
        let rules = with(state(2, 2, "r2", 1, endpoints(3)), &["ca"]);
        assert!(bundle_of(Outgoing::new(Arc::clone(&rules), Some(&first))).is_none());
        let rotated = with(state(3, 2, "r2", 1, endpoints(3)), &["ca", "new"]);
        let sent = bundle_of(Outgoing::new(rotated, Some(&rules))).unwrap();
        assert_eq!(sent.certificates_pem, ["ca", "new"]);
        // Not loaded yet: nothing to send.
        assert!(bundle_of(Outgoing::new(state(1, 1, "r", 1, endpoints(3)), None)).is_none());
    }
}

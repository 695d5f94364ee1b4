//! `graylane explain`: the decision for one hypothetical request, step by step. The
//! steps are read from the same compiled table `route` uses, and the outcome *is*
//! `route`'s (and `inbound_tag`'s), so the explanation cannot disagree with a sidecar.

use std::fmt::Write;

use super::build::{LanePlan, ServiceTable};
use super::route::sticky_key;
use super::{InboundSource, Instance, RequestView, RouteError, RoutingTable};
use crate::Tag;
use crate::hash::stable_hash;
use crate::model::HashKey;

/// The steps and what they lead to.
#[derive(Debug)]
pub struct Explanation {
    /// One line per step of rules.md's algorithm, in order.
    pub steps: Vec<String>,
    /// The tag the request is routed by.
    pub tag: Option<Tag>,
    pub outcome: Result<Explained, RouteError>,
}

/// Where the request may go.
#[derive(Debug)]
pub struct Explained {
    pub lane: Option<String>,
    pub subset: Option<String>,
    /// Why the lane did not serve, when it did not.
    pub fallback: Option<String>,
    /// The instances the sidecar balances over (least in-flight of two random).
    pub candidates: Vec<Instance>,
}

impl RoutingTable {
    /// Explains a request to `service` carrying `header_tag`. With `entry`, the
    /// request enters the mesh at that service first (its TagPolicy applies). `random`
    /// stands for the sidecar's per-request draw (weights without `stickyBy`).
    pub fn explain(
        &self,
        service: &str,
        entry: Option<&str>,
        header_tag: Option<Tag>,
        req: &dyn RequestView,
        random: u64,
    ) -> Explanation {
        let mut steps = Vec::new();
        let tag = match entry {
            Some(entry) => {
                let decided = self.inbound_tag(entry, header_tag, req);
                let why = match (decided.source, &decided.tag) {
                    (InboundSource::Rule, Some(t)) => format!(
                        "TagPolicy rule #{} of {entry} matched: tag {t}",
                        decided.rule.map_or(0, |r| r + 1)
                    ),
                    (InboundSource::Incoming, Some(t)) => format!("the caller's tag {t} is kept"),
                    _ if decided.stripped => {
                        "the caller's tag is removed (TagPolicy incoming setting); no rule matched: untagged".into()
                    }
                    _ => "no tag, and no TagPolicy rule matched: untagged".into(),
                };
                steps.push(format!("1. entering at {entry}: {why}"));
                decided.tag
            }
            None => {
                steps.push(match &header_tag {
                    Some(t) => format!("1. tag {t} (Gray-Publish)"),
                    None => "1. no tag: untagged".into(),
                });
                header_tag
            }
        };
        let outcome = self.route(service, tag.as_ref(), req, random);
        let Some(st) = self.services.get(service) else {
            steps.push(format!("2. no instance of {service} is registered: 502"));
            return Explanation {
                steps,
                tag,
                outcome: outcome.map(|_| unreachable_route()),
            };
        };
        steps.push(candidates_step(service, st, self.release_of(service)));
        let lane = tag
            .as_ref()
            .and_then(|t| self.lane_by_tag.get(t.as_str()).copied());
        match (&tag, lane) {
            (None, _) => {}
            (Some(t), None) => steps.push(format!(
                "3. no Lane declares tag {t}: routed as untagged (the tag still travels)"
            )),
            (Some(t), Some(l)) => {
                let info = &self.lanes[l];
                let mut line = format!(
                    "3. tag {t} is lane {} (selector {})",
                    info.name,
                    labels(info.selector.as_map())
                );
                match st.lane_plans[l] {
                    LanePlan::Serve { group, fallback } => {
                        let ids = ids(st, &st.lane_groups[group]);
                        match fallback {
                            None => {
                                let _ = write!(
                                    line,
                                    ": {} of its instances may serve: {ids}",
                                    st.lane_groups[group].len()
                                );
                            }
                            Some(p) => {
                                let _ = write!(
                                    line,
                                    ": {}; fallback to lane {}: {ids}",
                                    if p.release_prod {
                                        "release state prod".to_string()
                                    } else {
                                        format!("no ready {service} instance in it")
                                    },
                                    p.to.map_or("base", |to| self.lanes[to].name.as_str())
                                );
                            }
                        }
                    }
                    LanePlan::Base(p) => {
                        let _ = write!(
                            line,
                            ": {}; fallback to base (step 4)",
                            if p.release_prod {
                                "release state prod".to_string()
                            } else {
                                format!("no ready {service} instance in it or its fallback lanes")
                            }
                        );
                    }
                    LanePlan::Fail => {
                        let _ = write!(
                            line,
                            ": no ready {service} instance, and its fallback list ends (strict): 503"
                        );
                    }
                }
                steps.push(line);
            }
        }
        let to_base = match lane {
            None => true,
            Some(l) => matches!(st.lane_plans[l], LanePlan::Base(_)),
        };
        if to_base {
            steps.push(untagged_step(st, req));
        }
        // Weights without a sticky key: the draw is the sidecar's, per request, so every
        // subset with a ready instance is possible (in proportion to its weight).
        let u = &st.untagged;
        let by_chance = to_base && u.available > 0 && sticky_key(u.sticky.as_ref(), req).is_none();
        let outcome = outcome.map(|route| {
            if by_chance {
                let mut idx: Vec<usize> = u
                    .weighted
                    .iter()
                    .flat_map(|w| w.members.iter().copied())
                    .collect();
                idx.sort_unstable();
                idx.dedup();
                return Explained {
                    lane: route.lane.map(String::from),
                    subset: None,
                    fallback: route.fallback.map(|info| info.to_string()),
                    candidates: idx.iter().map(|&i| st.instances[i].clone()).collect(),
                };
            }
            let candidates: Vec<Instance> = route.candidates.iter().cloned().collect();
            let fallback = match (&route.fallback, route.base_fallback) {
                (Some(info), _) => Some(info.to_string()),
                (None, true) => Some("no candidate by weights or base: any instance".into()),
                (None, false) => None,
            };
            Explained {
                lane: route.lane.map(String::from),
                subset: route.subset.map(String::from),
                fallback,
                candidates,
            }
        });
        steps.push(match &outcome {
            Ok(e) => format!(
                "5. candidates: {} (the sidecar picks the less loaded of two at random)",
                e.candidates
                    .iter()
                    .map(|i| i.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(e) => format!("5. {e}"),
        });
        Explanation {
            steps,
            tag,
            outcome,
        }
    }
}

/// A route error only: `route` found no service, so it cannot have succeeded.
fn unreachable_route() -> Explained {
    Explained {
        lane: None,
        subset: None,
        fallback: None,
        candidates: Vec::new(),
    }
}

fn candidates_step(service: &str, st: &ServiceTable, release: crate::model::Release) -> String {
    let all = st.instances.len();
    let may = st.candidates.len();
    let mut line = format!("2. {service}: {all} instance(s), release state {release}");
    if may < all {
        let _ = write!(
            line,
            "; {may} may serve (the others are excluded or held back by the release state)"
        );
    }
    line
}

fn untagged_step(st: &ServiceTable, req: &dyn RequestView) -> String {
    let u = &st.untagged;
    if u.weighted.is_empty() {
        return if u.base.is_empty() {
            "4. untagged: no base instance (every instance is in a lane): any candidate".into()
        } else {
            format!(
                "4. untagged: the base instances (in no lane): {}",
                ids(st, &u.base)
            )
        };
    }
    let weights = u
        .weighted
        .iter()
        .map(|w| format!("{} {} ({} ready)", w.subset, w.weight, w.members.len()))
        .collect::<Vec<_>>()
        .join(", ");
    let draw = match (&u.sticky, sticky_key(u.sticky.as_ref(), req)) {
        (Some(key), Some(value)) => format!(
            "stickyBy {} = {:?}: hash {:016x}",
            key_name(key),
            String::from_utf8_lossy(value),
            stable_hash(value)
        ),
        (Some(key), None) => format!(
            "stickyBy {} absent: a random draw per request, {}",
            key_name(key),
            shares(u)
        ),
        (None, _) => format!("a random draw per request, {}", shares(u)),
    };
    format!("4. untagged: weights {weights}; {draw}")
}

/// Each subset's share of untagged requests among those with a ready instance.
fn shares(u: &super::build::Untagged) -> String {
    u.weighted
        .iter()
        .filter(|w| !w.members.is_empty())
        .map(|w| {
            format!(
                "{} {:.0}%",
                w.subset,
                100.0 * w.weight as f64 / u.available as f64
            )
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

fn key_name(key: &HashKey) -> String {
    match key {
        HashKey::Header(h) => format!("header {h}"),
        HashKey::Cookie(c) => format!("cookie {c}"),
    }
}

fn ids(st: &ServiceTable, idx: &[usize]) -> String {
    idx.iter()
        .map(|&i| st.instances[i].id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn labels(map: &std::collections::BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

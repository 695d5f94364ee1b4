//! `graylane explain`: the decision for one hypothetical request, step by step. The
//! steps are read from the same compiled table `route` uses, and the outcome *is*
//! `route`'s (and `inbound_tag`'s), so the explanation cannot disagree with a sidecar.

use std::fmt::Write;

use super::build::{LanePlan, ServiceTable};
use super::route::{BaseChoice, choose_base, sticky_key};
use super::{InboundSource, Instance, RequestView, Route, RouteError, RoutingTable};
use crate::Tag;
use crate::hash::stable_hash;
use crate::model::{HashKey, Release, qualified};

/// The steps and what they lead to.
#[derive(Debug)]
pub struct Explanation {
    /// One line per step of rules.md's algorithm that applied, in order, numbered
    /// `1. `, `2. `, … without gaps.
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
    /// Explains a request to `service` of `namespace` carrying `header_tag`. With
    /// `entry` (namespace, service), the request enters the mesh at that service first
    /// (its TagPolicy applies). `random` stands for the sidecar's per-request draw
    /// (weights without `stickyBy`). Services outside `default` are shown with their
    /// namespace (`orders in namespace shop`, `orders.shop`).
    ///
    /// The steps are numbered from 1 without gaps; each one words a decision `route`
    /// itself takes (the precompiled lane plan, step 3's `choose_base`), not a re-reading.
    pub fn explain(
        &self,
        namespace: &str,
        service: &str,
        entry: Option<(&str, &str)>,
        header_tag: Option<Tag>,
        req: &dyn RequestView,
        random: u64,
    ) -> Explanation {
        let mut steps = Vec::new();
        let tag = self.tag_step(entry, header_tag, req, &mut steps);
        let outcome = self.route(namespace, service, tag.as_ref(), req, random);
        let key = (namespace, service);
        let shown = qualified(namespace, service);
        let Some(st) = self.services.get(namespace, service) else {
            steps.push(format!("no instance of {shown} is registered: 502"));
            return Explanation {
                steps: numbered(steps),
                tag,
                outcome: outcome.map(|_| unreachable_route()),
            };
        };
        let release = self.release_of(namespace, service);
        steps.push(candidates_step(key, st, release));
        let service = shown.as_str();
        let lane = self.lane_index(tag.as_ref());
        if let Some(t) = &tag {
            steps.push(self.lane_step(key, st, t, lane));
        }
        let to_base = lane.is_none_or(|l| matches!(st.lane_plans[l], LanePlan::Base(_)));
        let choice = to_base.then(|| choose_base(st, req, random));
        if let Some(choice) = choice {
            steps.push(base_step(service, st, release, choice, req));
        }
        // Weights without a sticky key: the draw is the sidecar's, per request, so every
        // subset with a ready instance is possible (in proportion to its weight).
        let u = &st.untagged;
        let by_chance = matches!(choice, Some(BaseChoice::Weighted(_)))
            && sticky_key(u.sticky.as_ref(), req).is_none();
        let outcome = outcome.map(|route| explained(st, &route, by_chance));
        steps.push(match &outcome {
            Ok(e) => format!(
                "candidates: {} (the sidecar picks the less loaded of two at random)",
                e.candidates
                    .iter()
                    .map(|i| i.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(e) => e.to_string(),
        });
        Explanation {
            steps: numbered(steps),
            tag,
            outcome,
        }
    }

    /// The tag the request is routed by: the entry's TagPolicy decision, else the
    /// `Gray-Publish` header as given.
    fn tag_step(
        &self,
        entry: Option<(&str, &str)>,
        header_tag: Option<Tag>,
        req: &dyn RequestView,
        steps: &mut Vec<String>,
    ) -> Option<Tag> {
        let Some(entry) = entry else {
            steps.push(match &header_tag {
                Some(t) => format!("tag {t} (Gray-Publish)"),
                None => "no tag: untagged".into(),
            });
            return header_tag;
        };
        let decided = self.inbound_tag(entry.0, entry.1, header_tag, req);
        let rollouts = self.rollout_notes(entry.0, entry.1);
        let entry = qualified(entry.0, entry.1);
        let mut why = match (decided.source, &decided.tag) {
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
        // A rollout's share is the answer to "why is this user (not) in the lane".
        for (rule, note) in rollouts {
            let this = decided.rule == Some(*rule);
            let verdict = if this {
                "this one is"
            } else {
                "this one is not"
            };
            why.push_str(&format!(" ({note}: {verdict} among them)"));
        }
        steps.push(format!("entering at {entry}: {why}"));
        decided.tag
    }

    /// Step 2 for a tagged request: the lane and its precompiled plan for `key`
    /// (namespace, service).
    fn lane_step(
        &self,
        key: (&str, &str),
        st: &ServiceTable,
        t: &Tag,
        lane: Option<usize>,
    ) -> String {
        let Some(l) = lane else {
            return format!("no Lane declares tag {t}: routed as untagged (the tag still travels)");
        };
        let service = &qualified(key.0, key.1);
        let mut line = format!("tag {t} is {}", self.lane_named(key, l));
        let _ = match st.lane_plans[l] {
            LanePlan::Serve {
                group,
                fallback: None,
            } => write!(
                line,
                ": {} of its instances may serve: {}",
                st.lane_groups[group].len(),
                ids(st, &st.lane_groups[group])
            ),
            LanePlan::Serve {
                group,
                fallback: Some(p),
            } => write!(
                line,
                ": {}; fallback to {}: {}",
                why_not(p.release_prod, service, "in it"),
                self.lane_named(key, group),
                ids(st, &st.lane_groups[group])
            ),
            LanePlan::Base(p) => write!(
                line,
                ": {}; fallback to base (next step)",
                why_not(p.release_prod, service, "in it or its fallback lanes")
            ),
            LanePlan::Fail => write!(
                line,
                ": no ready {service} instance, and its fallback list ends (strict): 503"
            ),
        };
        line
    }

    /// `lane gray (selector version=v2)`, or with a RoutePolicy lane override
    /// `lane gray (RoutePolicy orders maps it to subset canary: version=v2)`.
    fn lane_named(&self, key: (&str, &str), l: usize) -> String {
        let lane = &self.compiled.lanes[l];
        let policy = self.compiled.policies.get(key.0, key.1);
        let service = qualified(key.0, key.1);
        match policy
            .and_then(|p| p.overrides.get(l))
            .and_then(Option::as_ref)
        {
            Some((subset, selector)) => format!(
                "lane {} (RoutePolicy {service} maps it to subset {subset}: {})",
                lane.name,
                labels(selector.as_map())
            ),
            None => format!(
                "lane {} (selector {})",
                lane.name,
                labels(lane.selector.as_map())
            ),
        }
    }
}

/// The outcome of `route` as explained. With `by_chance`, every candidate the
/// sidecar's draw could give, and no one subset.
fn explained(st: &ServiceTable, route: &Route<'_>, by_chance: bool) -> Explained {
    if by_chance {
        let mut idx: Vec<usize> = st
            .untagged
            .weighted
            .iter()
            // A weight of 0 is never drawn.
            .filter(|w| w.weight > 0)
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
    let fallback = match (&route.fallback, route.base_fallback) {
        (Some(info), _) => Some(info.to_string()),
        (None, true) => Some("no candidate by weights or base: any candidate".into()),
        (None, false) => None,
    };
    Explained {
        lane: route.lane.map(String::from),
        subset: route.subset.map(String::from),
        fallback,
        candidates: route.candidates.iter().cloned().collect(),
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

/// `key` is (namespace, service); a namespace other than `default` is named.
fn candidates_step(key: (&str, &str), st: &ServiceTable, release: Release) -> String {
    let all = st.instances.len();
    let may = st.candidates.len();
    let service = match key {
        (crate::model::DEFAULT_NAMESPACE, service) => service.to_owned(),
        (namespace, service) => format!("{service} in namespace {namespace}"),
    };
    let mut line = format!("{service}: {all} instance(s), release state {release}");
    if may < all {
        let _ = write!(
            line,
            "; {may} may serve (the others are excluded or held back by the release state)"
        );
    }
    line
}

/// Why a lane did not serve.
fn why_not(release_prod: bool, service: &str, place: &str) -> String {
    if release_prod {
        "release state prod".into()
    } else {
        format!("no ready {service} instance {place}")
    }
}

/// Step 3, worded from the choice `route` made.
fn base_step(
    service: &str,
    st: &ServiceTable,
    release: Release,
    choice: BaseChoice<'_>,
    req: &dyn RequestView,
) -> String {
    let u = &st.untagged;
    let weights = || {
        u.weighted
            .iter()
            .map(|w| format!("{} {} ({} ready)", w.subset, w.weight, w.members.len()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match choice {
        BaseChoice::Weighted(w) => {
            let draw = match (&u.sticky, sticky_key(u.sticky.as_ref(), req)) {
                (Some(key), Some(value)) => format!(
                    "stickyBy {} = {:?}: hash {:016x}, subset {}",
                    key_name(key),
                    String::from_utf8_lossy(value),
                    stable_hash(value),
                    w.subset
                ),
                (Some(key), None) => format!(
                    "stickyBy {} absent: a random draw per request, {}",
                    key_name(key),
                    shares(u)
                ),
                (None, _) => format!("a random draw per request, {}", shares(u)),
            };
            format!("untagged: weights {}; {draw}", weights())
        }
        BaseChoice::Base => format!(
            "untagged: the base instances (in no lane): {}",
            ids(st, &u.base)
        ),
        BaseChoice::Any if !u.weighted.is_empty() => format!(
            "untagged: weights {}; no subset has an instance that may serve: any candidate serves",
            weights()
        ),
        BaseChoice::Any if release == Release::Gray => {
            "untagged: no base candidate (release state gray: only lane instances may serve): any candidate serves".into()
        }
        BaseChoice::Any => {
            "untagged: no base candidate (every instance that may serve is in a lane): any candidate serves".into()
        }
        BaseChoice::Nothing => format!("untagged: no instance of {service} may serve"),
    }
}

/// `1. …`, `2. …`: consecutive, whichever steps applied.
fn numbered(steps: Vec<String>) -> Vec<String> {
    steps
        .into_iter()
        .enumerate()
        .map(|(i, s)| format!("{}. {s}", i + 1))
        .collect()
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

#[cfg(test)]
mod tests;

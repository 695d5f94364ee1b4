//! rules.md "Routing, step by step", steps 1-3, over a built table.

use super::build::{LanePlan, Planned, ServiceTable, Untagged, Weighted};
use super::{
    Candidates, FallbackInfo, FallbackTarget, RequestView, Route, RouteError, RoutingTable,
};
use crate::Tag;
use crate::hash::{mix, stable_hash};
use crate::model::{HashKey, qualified};

impl RoutingTable {
    /// The instances a request to `service` of `namespace` carrying `tag` may go to.
    ///
    /// `random` is any uniformly random `u64` the caller draws per request (the crate
    /// has no randomness of its own, which keeps it pure and testable); it splits
    /// untagged requests by weight when `stickyBy` is not set or its key is missing.
    ///
    /// Errors: [`RouteError::UnknownService`] when the table has no instance of
    /// `service` and no RoutePolicy declares it; [`RouteError::NoInstance`] when none
    /// may serve this request (naming the lane of the tag when there is one).
    /// Allocates only on error.
    pub fn route(
        &self,
        namespace: &str,
        service: &str,
        tag: Option<&Tag>,
        req: &dyn RequestView,
        random: u64,
    ) -> Result<Route<'_>, RouteError> {
        let Some(st) = self.services.get(namespace, service) else {
            // A service a RoutePolicy declares is known while it has no instance
            // (all left, or none yet): 503 naming it and the lane, as any service
            // with none that may serve; "unknown" is for a name nothing declares.
            if self.compiled.policies.get(namespace, service).is_some() {
                return Err(self.no_instance((namespace, service), self.lane_index(tag)));
            }
            return Err(RouteError::UnknownService {
                service: qualified(namespace, service),
            });
        };
        let service = (namespace, service);
        let Some(lane) = self.lane_index(tag) else {
            return self.untagged(service, st, None, None, req, random);
        };
        match st.lane_plans[lane] {
            LanePlan::Serve { group, fallback } => Ok(Route {
                candidates: Candidates {
                    all: &st.instances,
                    idx: &st.lane_groups[group],
                },
                subset: st.lane_subset[group].as_deref(),
                lane: Some(&self.compiled.lanes[lane].name),
                fallback: fallback.map(|p| self.fallback_info(lane, p)),
                base_fallback: false,
            }),
            LanePlan::Base(p) => {
                let info = self.fallback_info(lane, p);
                self.untagged(service, st, Some(lane), Some(info), req, random)
            }
            LanePlan::Fail => Err(self.no_instance(service, Some(lane))),
        }
    }

    /// The index of the Lane that declares `tag` (step 2 applies), if any.
    pub(super) fn lane_index(&self, tag: Option<&Tag>) -> Option<usize> {
        tag.and_then(|t| self.compiled.lane_by_tag.get(t.as_str()).copied())
    }

    fn fallback_info(&self, from: usize, p: Planned) -> FallbackInfo<'_> {
        FallbackInfo {
            from: &self.compiled.lanes[from].name,
            to: p.to.map_or(FallbackTarget::Base, |l| {
                FallbackTarget::Lane(&self.compiled.lanes[l].name)
            }),
            release_prod: p.release_prod,
        }
    }

    /// `service` is (namespace, service).
    fn no_instance(&self, service: (&str, &str), lane: Option<usize>) -> RouteError {
        RouteError::NoInstance {
            service: qualified(service.0, service.1),
            lane: lane.map(|l| self.compiled.lanes[l].name.clone()),
        }
    }

    /// Step 3: weights, else base candidates, else any candidate.
    fn untagged<'a>(
        &'a self,
        service: (&str, &str),
        st: &'a ServiceTable,
        lane: Option<usize>,
        fallback: Option<FallbackInfo<'a>>,
        req: &dyn RequestView,
        random: u64,
    ) -> Result<Route<'a>, RouteError> {
        let route = |idx: &'a [usize], subset: Option<&'a str>, base_fallback: bool| Route {
            candidates: Candidates {
                all: &st.instances,
                idx,
            },
            subset,
            lane: lane.map(|l| self.compiled.lanes[l].name.as_str()),
            fallback,
            base_fallback,
        };
        match choose_base(st, req, random) {
            BaseChoice::Weighted(w) => Ok(route(&w.members, Some(&w.subset), false)),
            BaseChoice::Base => Ok(route(&st.untagged.base, None, false)),
            BaseChoice::Any => Ok(route(&st.candidates, None, true)),
            BaseChoice::Nothing => Err(self.no_instance(service, lane)),
        }
    }
}

/// What step 3 chose for one request. `route` serves it and `explain` words it, so
/// the explanation is this decision, not a second reading of the rules.
#[derive(Clone, Copy, Debug)]
pub(super) enum BaseChoice<'a> {
    /// The `default` entry drawn by weight (it has candidates).
    Weighted(&'a Weighted),
    /// No `default` weights: the base candidates (in no lane).
    Base,
    /// Neither weights nor base had a candidate: any candidate serves.
    Any,
    /// No candidate at all: 503.
    Nothing,
}

/// Step 3 for `req` to the service of `st`, with the caller's `random` draw.
pub(super) fn choose_base<'a>(
    st: &'a ServiceTable,
    req: &dyn RequestView,
    random: u64,
) -> BaseChoice<'a> {
    let u = &st.untagged;
    if u.available > 0 {
        let draw = sticky_key(u.sticky.as_ref(), req).map_or(random, stable_hash);
        if let Some(w) = pick(u, draw) {
            return BaseChoice::Weighted(w);
        }
    } else if u.weighted.is_empty() && !u.base.is_empty() {
        return BaseChoice::Base;
    }
    if st.candidates.is_empty() {
        BaseChoice::Nothing
    } else {
        BaseChoice::Any
    }
}

/// The bytes of the `stickyBy` key in this request, if present.
pub(super) fn sticky_key<'r>(key: Option<&HashKey>, req: &'r dyn RequestView) -> Option<&'r [u8]> {
    super::matching::key_value(key?, req).map(str::as_bytes)
}

/// Chooses a `default` entry with a candidate, by `draw`.
///
/// First the point `draw % total` over all entries: when that entry has candidates it
/// wins, so a sticky key keeps its subset while other subsets come and go. Otherwise a
/// second, independent point (`mix(draw) % available`) over the entries that have
/// candidates. For a uniform `draw` each available entry gets `weight / available` of
/// the traffic: the weights are re-normalised over the subsets that can serve.
fn pick(u: &Untagged, draw: u64) -> Option<&Weighted> {
    if u.total == 0 || u.available == 0 {
        return None;
    }
    let mut point = draw % u.total;
    for w in &u.weighted {
        if point < w.weight {
            if !w.members.is_empty() {
                return Some(w);
            }
            break;
        }
        point -= w.weight;
    }
    let mut point = mix(draw) % u.available;
    for w in u.weighted.iter().filter(|w| !w.members.is_empty()) {
        if point < w.weight {
            return Some(w);
        }
        point -= w.weight;
    }
    None
}

#[cfg(test)]
mod tests;

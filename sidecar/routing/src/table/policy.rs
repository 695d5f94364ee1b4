//! A RoutePolicy's traffic settings — `timeout`, `retries`, `fault`, `mirror` —
//! compiled once per table, so the sidecar's per-request part is one lookup
//! ([`RoutingTable::policy`](super::RoutingTable::policy)) and a few comparisons.
//!
//! Everything here decides; the sidecar does (sleeps, answers the abort, sends the
//! copy, loops the retries). Percentages are drawn from a random number the caller
//! passes in, as for [`route`](super::RoutingTable::route): the crate has no RNG.

use std::time::Duration;

use super::build::ServiceTable;
use super::matching::{BUCKETS, threshold};
use super::{Candidates, Instance};
use crate::Tag;
use crate::model::{Fault, Mirror, RetryOn, RoutePolicySpec};

/// The compiled traffic policy of one service. A service without a RoutePolicy (or
/// with one that sets none of these) gets the shared default: the sidecar's timeout,
/// one retry after a connect failure, no fault, no mirror.
#[derive(Debug)]
pub struct CompiledPolicy {
    timeout: Option<Duration>,
    retry: RetryPolicy,
    fault: Option<FaultPlan>,
    mirror: Option<MirrorPlan>,
}

/// When an idempotent, body-less request may be sent again, to another instance
/// (rules.md `retries`). Which requests qualify is the sidecar's call: it alone
/// knows whether the body can be sent twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    attempts: u32,
    connect_failure: bool,
    reset: bool,
    statuses: Vec<u16>,
}

/// What `fault` does to one request: delay it, then (or instead) answer it with a
/// status without forwarding it. Both `None`: leave it alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    /// Wait this long before going on.
    pub delay: Option<Duration>,
    /// Answer this status (200-599, validated), after the delay if any.
    pub abort: Option<u16>,
}

/// `fault` with its percentages as bucket thresholds.
#[derive(Debug)]
struct FaultPlan {
    /// Only requests with this tag; every request when `None`.
    tag: Option<Tag>,
    delay: Option<(u64, Duration)>,
    abort: Option<(u64, u16)>,
}

/// `mirror`: the candidates of the mirror subset when the table was built, and the
/// share of requests copied there.
#[derive(Debug)]
struct MirrorPlan {
    threshold: u64,
    /// Copies of the subset's candidates (mirror subsets are small, and owning them
    /// keeps the policy one lookup, independent of the service's instance table).
    instances: Vec<Instance>,
    /// `0..instances.len()`, the index list a [`Candidates`] view needs.
    idx: Vec<usize>,
}

/// The policy of a service without one; what [`RoutingTable::policy`] returns then.
///
/// [`RoutingTable::policy`]: super::RoutingTable::policy
pub(super) static DEFAULT_POLICY: CompiledPolicy = CompiledPolicy {
    timeout: None,
    retry: RetryPolicy::DEFAULT,
    fault: None,
    mirror: None,
};

impl CompiledPolicy {
    /// Compiles the traffic settings of `spec`; `st` is the service's instance table
    /// (`None` when it has no instance), the source of the mirror candidates.
    pub(super) fn compile(spec: &RoutePolicySpec, st: Option<&ServiceTable>) -> Self {
        Self {
            timeout: spec.timeout.map(|d| d.as_std()),
            retry: spec.retries.as_ref().map_or(RetryPolicy::DEFAULT, |r| {
                RetryPolicy::new(r.attempts, &r.on)
            }),
            fault: spec.fault.as_ref().map(FaultPlan::new),
            mirror: spec.mirror.as_ref().map(|m| MirrorPlan::new(spec, m, st)),
        }
    }

    /// The whole-request timeout; `None`: the sidecar's `--upstream-timeout`.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The retry policy: the RoutePolicy's `retries`, else the default.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// What `fault` does to a request carrying `tag`. `random` is a uniformly random
    /// `u64` drawn per request; its low and high 32 bits are the independent draws of
    /// the delay and of the abort (each at 0.01% resolution: 0% never, 100% always).
    pub fn fault(&self, tag: Option<&Tag>, random: u64) -> Injected {
        let Some(f) = &self.fault else {
            return Injected::default();
        };
        if f.tag.as_ref().is_some_and(|t| Some(t) != tag) {
            return Injected::default();
        }
        let (low, high) = (random & 0xffff_ffff, random >> 32);
        Injected {
            delay: f.delay.filter(|(t, _)| drawn(*t, low)).map(|(_, d)| d),
            abort: f.abort.filter(|(t, _)| drawn(*t, high)).map(|(_, s)| s),
        }
    }

    /// Where to copy this request: the candidates of the mirror subset, when the
    /// RoutePolicy has a `mirror`, the `random` draw (a uniformly random `u64` per
    /// request) falls within its percent, and the subset has a candidate. Never empty.
    pub fn mirror(&self, random: u64) -> Option<Candidates<'_>> {
        let m = self.mirror.as_ref()?;
        (drawn(m.threshold, random) && !m.instances.is_empty()).then(|| Candidates {
            all: &m.instances,
            idx: &m.idx,
        })
    }
}

impl RetryPolicy {
    /// No `retries`: one retry after a connect failure (nothing was sent, so it is
    /// always safe for an idempotent request).
    const DEFAULT: RetryPolicy = RetryPolicy {
        attempts: 1,
        connect_failure: true,
        reset: false,
        statuses: Vec::new(),
    };

    fn new(attempts: u32, on: &[RetryOn]) -> Self {
        let mut retry = RetryPolicy {
            attempts,
            connect_failure: false,
            reset: false,
            statuses: Vec::new(),
        };
        for on in on {
            match on {
                RetryOn::ConnectFailure => retry.connect_failure = true,
                RetryOn::Reset => retry.reset = true,
                RetryOn::Status(s) => retry.statuses.push(*s),
            }
        }
        retry
    }

    /// Retries after the first try (1-10).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether an attempt that reached the instance may go again: on a status, or on
    /// a reset (the connection broke before or during the response). Otherwise only
    /// a connect failure is retried, and nothing was sent then.
    pub fn retries_after_sending(&self) -> bool {
        self.reset || !self.statuses.is_empty()
    }

    /// Whether an attempt that ended this way may be tried again elsewhere (while
    /// attempts are left): `ConnectFailure` (no connection), `Reset` (the connection
    /// broke before or during the response) or `Status` (the instance answered it).
    pub fn retries(&self, outcome: RetryOn) -> bool {
        match outcome {
            RetryOn::ConnectFailure => self.connect_failure,
            RetryOn::Reset => self.reset,
            RetryOn::Status(s) => self.statuses.contains(&s),
        }
    }
}

impl FaultPlan {
    fn new(f: &Fault) -> Self {
        Self {
            tag: f.tag.clone(),
            delay: f
                .delay
                .as_ref()
                .map(|d| (threshold(d.percent), d.duration.as_std())),
            abort: f.abort.as_ref().map(|a| (threshold(a.percent), a.status)),
        }
    }
}

impl MirrorPlan {
    fn new(spec: &RoutePolicySpec, m: &Mirror, st: Option<&ServiceTable>) -> Self {
        // An undeclared subset (refused by validation) mirrors to nobody.
        let labels = spec
            .subsets
            .iter()
            .find(|s| s.name.as_str() == m.subset)
            .map(|s| &s.labels);
        let instances: Vec<Instance> = match (labels, st) {
            (Some(labels), Some(st)) => st
                .candidates
                .iter()
                .filter_map(|&i| st.instances.get(i))
                .filter(|i| labels.matches(&i.labels))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        Self {
            threshold: threshold(m.percent),
            idx: (0..instances.len()).collect(),
            instances,
        }
    }
}

/// Whether a draw falls in the first `threshold` of [`BUCKETS`] buckets.
fn drawn(threshold: u64, random: u64) -> bool {
    random % BUCKETS < threshold
}

#[cfg(test)]
mod tests;

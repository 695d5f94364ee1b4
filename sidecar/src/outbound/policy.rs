//! The traffic settings of a destination's RoutePolicy, applied per request: `fault`
//! (rehearsing failure) and `retries`.

use graylane_routing::{RetryOn, RoutePolicy, Tag};
use http::StatusCode;

use crate::proxy::ProxyError;

/// Applies `fault` when it covers this request: a delay (awaited here) and/or an abort
/// (returned as the error the caller answers with, nothing forwarded).
pub(crate) async fn inject_fault(
    policy: Option<&RoutePolicy>,
    tag: Option<&Tag>,
) -> Result<(), ProxyError> {
    let Some(fault) = policy.and_then(|p| p.spec.fault.as_ref()) else {
        return Ok(());
    };
    if fault.tag.as_ref().is_some_and(|t| Some(t) != tag) {
        return Ok(());
    }
    if let Some(delay) = &fault.delay
        && chance(delay.percent)
    {
        tokio::time::sleep(delay.duration.as_std()).await;
    }
    match &fault.abort {
        Some(abort) if chance(abort.percent) => Err(ProxyError::FaultAbort {
            status: StatusCode::from_u16(abort.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            service: policy
                .map(|p| p.spec.service.as_str().to_string())
                .unwrap_or_default(),
        }),
        _ => Ok(()),
    }
}

/// True for `percent` percent of calls.
pub(crate) fn chance(percent: f64) -> bool {
    fastrand::f64() * 100.0 < percent
}

/// When a request may be sent again, to another instance.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Retry {
    /// Retries after the first try.
    pub(crate) attempts: u32,
    pub(crate) connect_failure: bool,
    pub(crate) reset: bool,
    pub(crate) statuses: Vec<u16>,
}

impl Retry {
    /// The RoutePolicy's `retries`, or the spec's default: one retry after a connect
    /// failure (nothing was sent, so it is always safe for an idempotent request).
    pub(crate) fn of(policy: Option<&RoutePolicy>) -> Retry {
        let Some(retries) = policy.and_then(|p| p.spec.retries.as_ref()) else {
            return Retry {
                attempts: 1,
                connect_failure: true,
                reset: false,
                statuses: Vec::new(),
            };
        };
        let mut retry = Retry {
            attempts: retries.attempts,
            connect_failure: false,
            reset: false,
            statuses: Vec::new(),
        };
        for on in &retries.on {
            match on {
                RetryOn::ConnectFailure => retry.connect_failure = true,
                RetryOn::Reset => retry.reset = true,
                RetryOn::Status(s) => retry.statuses.push(*s),
            }
        }
        retry
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn without_a_policy_only_connect_failures_are_retried_once() {
        assert_eq!(
            Retry::of(None),
            Retry {
                attempts: 1,
                connect_failure: true,
                reset: false,
                statuses: vec![]
            }
        );
    }

    #[test]
    fn chance_is_never_at_0_and_always_at_100() {
        assert!((0..1000).all(|_| !chance(0.0)));
        assert!((0..1000).all(|_| chance(100.0)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fault_for_another_tag_leaves_the_request_alone() {
        let yaml = "apiVersion: graylane.io/v1\nkind: RoutePolicy\nmetadata: {name: orders}\nspec:\n  service: orders\n  fault:\n    tag: gray\n    abort: {percent: 100, status: 418}\n    delay: {percent: 100, duration: 5s}\n";
        let set = graylane_routing::RuleSet::from_yaml("t.yaml", yaml).unwrap();
        let policy = set.route_policy_for("default", "orders");
        let gray = Tag::parse("gray");
        let blue = Tag::parse("blue");
        assert!(inject_fault(policy, blue.as_ref()).await.is_ok());
        let started = tokio::time::Instant::now();
        let aborted = inject_fault(policy, gray.as_ref()).await.unwrap_err();
        assert_eq!(aborted.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(5),
            "the delay applies before the abort"
        );
    }
}

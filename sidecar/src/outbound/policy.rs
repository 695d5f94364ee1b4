//! Carrying out a destination's traffic policy, as the routing table decided it
//! ([`graylane_routing::CompiledPolicy`]): the fault's delay and abort, and what
//! an attempt's outcome counts as for `retries`. Nothing here reads a RoutePolicy.

use graylane_routing::{Injected, RetryOn};
use http::{Response, StatusCode};

use crate::proxy::{Body, ProxyError, RetryClass, SendError};

/// Carries out an injected fault: the delay (awaited here), then the abort (returned
/// as the error the caller answers with, nothing forwarded). `service` names the
/// destination in the abort's body.
pub(crate) async fn inject_fault(fault: Injected, service: &str) -> Result<(), ProxyError> {
    if let Some(delay) = fault.delay {
        tokio::time::sleep(delay).await;
    }
    match fault.abort {
        Some(status) => Err(ProxyError::FaultAbort {
            // Validated as 200-599; a status http refuses would still be an answer.
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            service: service.to_owned(),
        }),
        None => Ok(()),
    }
}

/// What an attempt's outcome is, in the terms of `retries.on`, read from the retry
/// class its failure was given where it was made: nothing sent is a connect failure,
/// a send the upstream may have seen is a reset; `None` for what no policy retries
/// (a timeout spends the budget; a request that cannot go at all).
pub(crate) fn outcome(sent: &Result<Response<Body>, SendError>) -> Option<RetryOn> {
    match sent {
        Ok(response) => Some(RetryOn::Status(response.status().as_u16())),
        Err(e) => match e.failure.retry() {
            RetryClass::Safe => Some(RetryOn::ConnectFailure),
            RetryClass::IfIdempotent => Some(RetryOn::Reset),
            RetryClass::Never => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::proxy::SendFailure;

    #[tokio::test(start_paused = true)]
    async fn the_delay_is_served_before_the_abort() {
        let fault = Injected {
            delay: Some(Duration::from_secs(5)),
            abort: Some(418),
        };
        let started = tokio::time::Instant::now();
        let aborted = inject_fault(fault, "orders").await.unwrap_err();
        assert_eq!(aborted.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn no_fault_goes_on_at_once() {
        let started = tokio::time::Instant::now();
        assert!(inject_fault(Injected::default(), "orders").await.is_ok());
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    fn failed(failure: SendFailure) -> SendError {
        let to = crate::proxy::Upstream {
            service: "orders",
            instance: "orders-1",
            address: "127.0.0.1:1",
            timeout: Duration::from_secs(1),
            hand_back: false,
        };
        to.failed(failure, None)
    }

    #[test]
    fn timeouts_bad_requests_and_internal_errors_are_never_retried() {
        assert_eq!(outcome(&Err(failed(SendFailure::Timeout))), None);
        assert_eq!(
            outcome(&Err(failed(SendFailure::Downstream("bad body".into())))),
            None
        );
        assert_eq!(
            outcome(&Err(failed(SendFailure::Internal(
                "unsupported version".into()
            )))),
            None
        );
    }

    #[test]
    fn nothing_sent_is_a_connect_failure_and_a_seen_send_a_reset() {
        assert_eq!(
            outcome(&Err(failed(SendFailure::Connect("refused".into())))),
            Some(RetryOn::ConnectFailure)
        );
        assert_eq!(
            outcome(&Err(failed(SendFailure::Closed("eof".into())))),
            Some(RetryOn::Reset)
        );
        assert_eq!(
            outcome(&Err(failed(SendFailure::Other(
                "malformed response".into()
            )))),
            Some(RetryOn::Reset)
        );
    }
}

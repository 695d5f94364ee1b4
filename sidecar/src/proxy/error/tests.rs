use http_body_util::BodyExt;

use super::*;

/// One of each variant, with the source, retry class and status the table gives it.
fn table() -> Vec<(ProxyError, ErrorSource, RetryClass, u16)> {
    use ErrorSource::{Downstream, Internal, Policy, Upstream};
    use RetryClass::{IfIdempotent, Never, Safe};
    let s = String::from;
    vec![
        (
            ProxyError::BadRequest(s("no destination")),
            Downstream,
            Never,
            400,
        ),
        (ProxyError::HeadersTooLarge, Downstream, Never, 431),
        (
            ProxyError::Connect {
                service: s("orders"),
                instance: s("orders-1"),
                address: s("10.0.0.1:80"),
                reason: s("refused"),
            },
            Upstream,
            Safe,
            502,
        ),
        (
            ProxyError::Unresolved {
                host: s("api.example"),
                reason: s("no address"),
            },
            Upstream,
            Safe,
            502,
        ),
        (
            ProxyError::BadUpstream {
                service: s("orders"),
                reason: s("reset"),
            },
            Upstream,
            IfIdempotent,
            502,
        ),
        (
            ProxyError::Timeout {
                service: s("orders"),
                seconds: 30.0,
            },
            Upstream,
            Never,
            504,
        ),
        (
            ProxyError::NoInstance(s("no instance in lane gray")),
            Policy,
            Never,
            503,
        ),
        (ProxyError::UnknownService(s("orders")), Policy, Never, 502),
        (
            ProxyError::MtlsRequired {
                service: s("orders"),
                instance: s("orders-1"),
                reason: s("strict"),
            },
            Policy,
            Never,
            502,
        ),
        (ProxyError::Loop(s("own listener")), Policy, Never, 508),
        (
            ProxyError::FaultAbort {
                status: StatusCode::IM_A_TEAPOT,
                service: s("orders"),
            },
            Policy,
            Never,
            418,
        ),
        (ProxyError::NotReady, Internal, Safe, 503),
        (
            ProxyError::Internal(s("request already sent")),
            Internal,
            Never,
            500,
        ),
    ]
}

#[test]
fn every_variant_has_its_source_retry_class_and_status() {
    for (error, source, retry, status) in table() {
        assert_eq!(error.caused_by(), source, "{error:?}");
        assert_eq!(error.retry(), retry, "{error:?}");
        assert_eq!(error.status().as_u16(), status, "{error:?}");
    }
}

#[test]
fn internal_errors_are_never_the_clients_fault() {
    for (error, source, _, status) in table() {
        if source == ErrorSource::Internal {
            assert!(status >= 500, "{error:?} answered {status}");
        }
        if (400..500).contains(&status) && !matches!(error, ProxyError::FaultAbort { .. }) {
            assert_eq!(
                source,
                ErrorSource::Downstream,
                "{error:?} blames the client"
            );
        }
    }
}

#[test]
fn retry_classes_allow_what_they_say() {
    assert!(RetryClass::Safe.allows(false));
    assert!(RetryClass::Safe.allows(true));
    assert!(!RetryClass::IfIdempotent.allows(false));
    assert!(RetryClass::IfIdempotent.allows(true));
    assert!(!RetryClass::Never.allows(true));
}

fn failed(failure: SendFailure) -> SendError {
    Upstream {
        service: "orders",
        instance: "orders-1",
        address: "10.0.0.1:80",
        timeout: Duration::from_millis(2500),
        hand_back: false,
    }
    .failed(failure, None)
}

#[test]
fn a_failed_send_keeps_its_retry_class_and_context() {
    let cases = [
        (
            SendFailure::Connect("refused".into()),
            ErrorSource::Upstream,
            502,
        ),
        (SendFailure::Timeout, ErrorSource::Upstream, 504),
        (
            SendFailure::Closed("eof".into()),
            ErrorSource::Upstream,
            502,
        ),
        (
            SendFailure::Other("malformed".into()),
            ErrorSource::Upstream,
            502,
        ),
        (
            SendFailure::Downstream("body broke off".into()),
            ErrorSource::Downstream,
            400,
        ),
        (
            SendFailure::Internal("unsupported version".into()),
            ErrorSource::Internal,
            500,
        ),
    ];
    for (failure, source, status) in cases {
        let retry = failure.retry();
        let error = ProxyError::from(failed(failure));
        assert_eq!(error.retry(), retry, "{error:?}");
        assert_eq!(error.caused_by(), source, "{error:?}");
        assert_eq!(error.status().as_u16(), status, "{error:?}");
    }
    let connect = ProxyError::from(failed(SendFailure::Connect("refused".into())));
    assert_eq!(
        connect.to_string(),
        "upstream orders instance orders-1 (10.0.0.1:80): refused"
    );
    let timeout = ProxyError::from(failed(SendFailure::Timeout));
    assert_eq!(
        timeout.to_string(),
        "upstream orders did not answer within 2.5s"
    );
}

async fn body_of(response: Response<Body>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn an_internal_error_is_a_500_that_keeps_the_connection() {
    let response = ProxyError::Internal("request already sent".into()).into_response();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.headers()["graylane-error"], "1");
    // The client's bytes were fine: nothing to distrust on its connection.
    assert!(response.headers().get(header::CONNECTION).is_none());
    assert_eq!(
        body_of(response).await,
        "graylane: sidecar internal error: request already sent\n"
    );
}

#[tokio::test]
async fn a_bad_request_is_a_400_that_closes_the_connection() {
    let response = ProxyError::BadRequest("no destination".into()).into_response();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()[header::CONNECTION], "close");
    assert_eq!(body_of(response).await, "graylane: no destination\n");
}

#[test]
fn the_span_of_an_error_names_who_caused_it() {
    let notes = crate::spans::Notes {
        error_source: Some(
            ProxyError::UnknownService("orders".into())
                .caused_by()
                .as_str(),
        ),
        ..Default::default()
    };
    let attributes = notes.attributes("frontend", "frontend-1", 502);
    let source = attributes
        .iter()
        .find(|kv| kv.key == "graylane.error.source")
        .and_then(|kv| kv.value.as_ref()?.value.clone());
    assert_eq!(
        source,
        Some(
            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue("policy".into())
        )
    );
    // An answer the upstream gave has no such attribute.
    let answered = crate::spans::Notes::default().attributes("frontend", "frontend-1", 502);
    assert!(answered.iter().all(|kv| kv.key != "graylane.error.source"));
}

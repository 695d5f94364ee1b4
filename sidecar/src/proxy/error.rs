//! Every proxy error, who caused it, and the one place it becomes a response: the
//! error table of sidecar.md.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use std::time::Duration;

use super::{Body, SendError};

/// Why the sidecar answered instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Policy: the rules leave no instance for this request.
    #[error("{0}")]
    NoInstance(String),
    /// Policy: no instance of this service ever registered.
    #[error("unknown service {0}")]
    UnknownService(String),
    /// Upstream: connecting failed (after the retry, when one was allowed).
    #[error("upstream {service} instance {instance} ({address}): {reason}")]
    Connect {
        service: String,
        instance: String,
        address: String,
        reason: String,
    },
    /// Policy: the PeerPolicy mode asks for mTLS this call cannot have (strict with no
    /// local certificate, an instance without a mesh identity, a CONNECT tunnel).
    #[error("upstream {service} instance {instance}: {reason}")]
    MtlsRequired {
        service: String,
        instance: String,
        reason: String,
    },
    /// Upstream: the answer did not come within the timeout.
    #[error("upstream {service} did not answer within {seconds:.1}s")]
    Timeout { service: String, seconds: f64 },
    /// Upstream: a malformed response or a broken connection mid-request.
    #[error("upstream {service}: {reason}")]
    BadUpstream { service: String, reason: String },
    /// Upstream: an external host's name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Unresolved { host: String, reason: String },
    /// Downstream: the request cannot be proxied (no destination, bad URI).
    #[error("{0}")]
    BadRequest(String),
    /// Downstream: the header block is over 64 KiB or 100 fields.
    #[error("request headers over 64 KiB or 100 fields")]
    HeadersTooLarge,
    /// Policy: the request would come back into this sidecar.
    #[error("loop detected: {0}")]
    Loop(String),
    /// Policy: a RoutePolicy `fault.abort` answered instead of the service.
    #[error("fault injected by the RoutePolicy of {service}")]
    FaultAbort { status: StatusCode, service: String },
    /// Internal: not ready to route (no snapshot yet).
    #[error("sidecar not ready: no routing snapshot yet")]
    NotReady,
}

/// The error table's answer when the rules leave a request nowhere to go.
impl From<graylane_routing::RouteError> for ProxyError {
    fn from(e: graylane_routing::RouteError) -> Self {
        match e {
            graylane_routing::RouteError::UnknownService { service } => {
                ProxyError::UnknownService(service)
            }
            e @ graylane_routing::RouteError::NoInstance { .. } => {
                ProxyError::NoInstance(e.to_string())
            }
        }
    }
}

impl ProxyError {
    /// The error table's answer to a failed send to `service` at `address`.
    pub fn from_send(
        e: SendError,
        service: &str,
        instance: &str,
        address: &str,
        timeout: Duration,
    ) -> ProxyError {
        match e {
            SendError::Connect(reason) => ProxyError::Connect {
                service: service.to_string(),
                instance: instance.to_string(),
                address: address.to_string(),
                reason,
            },
            SendError::Timeout => ProxyError::Timeout {
                service: service.to_string(),
                seconds: timeout.as_secs_f64(),
            },
            SendError::Downstream(reason) => ProxyError::BadRequest(reason),
            SendError::Closed(reason) | SendError::Other(reason) => ProxyError::BadUpstream {
                service: service.to_string(),
                reason,
            },
        }
    }

    /// The status of the sidecar.md error table.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoInstance(_) | Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::UnknownService(_)
            | Self::Connect { .. }
            | Self::MtlsRequired { .. }
            | Self::BadUpstream { .. }
            | Self::Unresolved { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Loop(_) => StatusCode::LOOP_DETECTED,
            Self::FaultAbort { status, .. } => *status,
        }
    }

    /// The response the caller sees: the status and one line saying what happened.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        tracing::debug!(%status, error = %self, "proxy error");
        let mut response = Response::new(
            Full::new(Bytes::from(format!("graylane: {self}\n")))
                .map_err(|e| match e {})
                .boxed_unsync(),
        );
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        // Marks the answer as the sidecar's own, not the upstream's.
        response
            .headers_mut()
            .insert("graylane-error", header::HeaderValue::from_static("1"));
        // A request refused as malformed leaves the rest of its connection's bytes
        // untrustworthy as the start of a new request: close after answering (hyper
        // drops the field on HTTP/2, where a stream error suffices).
        if matches!(
            status,
            StatusCode::BAD_REQUEST | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        ) {
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

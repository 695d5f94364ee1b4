//! Every proxy error, who caused it, whether another attempt may help, and the one
//! place it becomes a response: the error table of sidecar.md.
//!
//! | variant          | source     | retry        | status |
//! |------------------|------------|--------------|--------|
//! | `BadRequest`     | downstream | never        | 400    |
//! | `HeadersTooLarge`| downstream | never        | 431    |
//! | `Connect`        | upstream   | safe         | 502    |
//! | `Unresolved`     | upstream   | safe         | 502    |
//! | `BadUpstream`    | upstream   | if idempotent| 502    |
//! | `Timeout`        | upstream   | never        | 504    |
//! | `NoInstance`     | policy     | never        | 503    |
//! | `UnknownService` | policy     | never        | 502    |
//! | `MtlsRequired`   | policy     | never        | 502    |
//! | `Loop`           | policy     | never        | 508    |
//! | `FaultAbort`     | policy     | never        | its own|
//! | `NotReady`       | internal   | safe         | 503    |
//! | `Internal`       | internal   | never        | 500    |
//!
//! The variant is the classification: each names one source and one retry class, so
//! choosing the variant where the error is made decides both, and nothing downstream
//! of that re-classifies (as pingora's `Error` carries `ErrorSource` and `RetryType`).

use std::time::Duration;

use bytes::Bytes;
use graylane_exposition::Sampled;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::Body;

/// Who caused an error (pingora's `ErrorSource`, with the rules as their own cause).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorSource {
    /// The client: its request was bad, or it went away.
    Downstream,
    /// The app or the peer sidecar: it failed, was too slow, or answered badly.
    Upstream,
    /// The rules in force: they leave the request nowhere to go, or abort it.
    Policy,
    /// The sidecar's own invariant or state: never answered with a 4xx.
    Internal,
}

impl ErrorSource {
    /// The span attribute's value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Downstream => "downstream",
            Self::Upstream => "upstream",
            Self::Policy => "policy",
            Self::Internal => "internal",
        }
    }
}

/// Whether sending the request again could help, and which requests may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetryClass {
    /// Nothing reached the upstream: any request may go again, anywhere.
    Safe,
    /// The upstream may have seen (part of) the request: only an idempotent one
    /// (RFC 9110 §9.2.2) may go again.
    IfIdempotent,
    /// Another attempt cannot help (the budget is spent, the request or the rules
    /// are the problem) or is not allowed.
    Never,
}

/// Why the sidecar answered instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
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
    /// Downstream: the request cannot be proxied (no destination, bad URI, a body
    /// the client broke off).
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
    /// Internal: an invariant of the sidecar did not hold; the client did nothing
    /// wrong.
    #[error("sidecar internal error: {0}")]
    Internal(String),
}

/// How a send to an upstream failed, with where it was going (for the message).
#[derive(Debug, thiserror::Error)]
#[error("{failure} (to {service} at {address})")]
pub(crate) struct SendError {
    pub(crate) failure: SendFailure,
    pub(crate) service: String,
    pub(crate) instance: String,
    pub(crate) address: String,
    pub(crate) timeout: Duration,
    /// The request, back whole when the failure left it so: nothing of it was
    /// written (a connect failure), or it had no body and nothing of an answer came.
    /// Whether it may go again is the failure's [`RetryClass`] and its method's.
    /// Handed back, not copied beforehand: a copy of every request's head, for the
    /// few that fail, was 5 % of an HTTP/1.1 hop's instructions.
    pub(crate) request: Option<Box<Request<Body>>>,
}

/// What went wrong in one send.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendFailure {
    /// No connection could be made (or its TLS handshake failed): nothing was sent.
    #[error("{0}")]
    Connect(String),
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// The connection closed or was reset before any response (see
    /// `closed_before_response`): the upstream may have seen the request.
    #[error("{0}")]
    Closed(String),
    /// The request itself cannot go (a body the client broke off, a target that
    /// cannot be forwarded): no instance is blamed.
    #[error("{0}")]
    Downstream(String),
    /// Anything after connecting (a malformed response, a reset): that connection
    /// is dropped, never reused.
    #[error("{0}")]
    Other(String),
    /// The request as the sidecar built it cannot be sent: the sidecar's bug.
    #[error("{0}")]
    Internal(String),
}

/// Where one attempt goes: what a [`SendError`] names.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Upstream<'a> {
    /// The service (or external host) for the error's message.
    pub(crate) service: &'a str,
    pub(crate) instance: &'a str,
    /// `host:port` to connect to.
    pub(crate) address: &'a str,
    pub(crate) timeout: Duration,
    /// Whether a failed body-less request is wanted back ([`SendError::request`]),
    /// not wanted when the caller holds a copy of its own (a retry policy's).
    pub(crate) hand_back: bool,
}

impl Upstream<'_> {
    /// This attempt's failure, with its context and the request if it came back.
    pub(crate) fn failed(
        &self,
        failure: SendFailure,
        request: Option<Box<Request<Body>>>,
    ) -> SendError {
        SendError {
            failure,
            service: self.service.to_owned(),
            instance: self.instance.to_owned(),
            address: self.address.to_owned(),
            timeout: self.timeout,
            request,
        }
    }
}

impl RetryClass {
    /// Whether a request may go again after this, `idempotent` or not (RFC 9110
    /// §9.2.2; the caller also needs its body still in hand).
    pub(crate) fn allows(self, idempotent: bool) -> bool {
        match self {
            Self::Safe => true,
            Self::IfIdempotent => idempotent,
            Self::Never => false,
        }
    }
}

impl SendFailure {
    /// Whether this attempt may go again (and the source, by [`ProxyError`]'s table:
    /// a unit test holds the two together).
    pub(crate) fn retry(&self) -> RetryClass {
        match self {
            Self::Connect(_) => RetryClass::Safe,
            Self::Closed(_) | Self::Other(_) => RetryClass::IfIdempotent,
            Self::Timeout | Self::Downstream(_) | Self::Internal(_) => RetryClass::Never,
        }
    }
}

/// The one conversion of a failed send into the error table.
impl From<SendError> for ProxyError {
    fn from(e: SendError) -> Self {
        let SendError {
            failure,
            service,
            instance,
            address,
            timeout,
            request: _,
        } = e;
        match failure {
            SendFailure::Connect(reason) => ProxyError::Connect {
                service,
                instance,
                address,
                reason,
            },
            SendFailure::Timeout => ProxyError::Timeout {
                service,
                seconds: timeout.as_secs_f64(),
            },
            SendFailure::Downstream(reason) => ProxyError::BadRequest(reason),
            SendFailure::Closed(reason) | SendFailure::Other(reason) => {
                ProxyError::BadUpstream { service, reason }
            }
            SendFailure::Internal(reason) => {
                ProxyError::Internal(format!("sending to {service} at {address}: {reason}"))
            }
        }
    }
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
    /// Who caused it (not `source`: that is `std::error::Error`'s cause chain).
    pub(crate) fn caused_by(&self) -> ErrorSource {
        match self {
            Self::BadRequest(_) | Self::HeadersTooLarge => ErrorSource::Downstream,
            Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::BadUpstream { .. }
            | Self::Unresolved { .. } => ErrorSource::Upstream,
            Self::NoInstance(_)
            | Self::UnknownService(_)
            | Self::MtlsRequired { .. }
            | Self::Loop(_)
            | Self::FaultAbort { .. } => ErrorSource::Policy,
            Self::NotReady | Self::Internal(_) => ErrorSource::Internal,
        }
    }

    /// Whether an operator wants to hear of it: the app or a peer failing, a rule
    /// leaving a request nowhere to go. Not the client's own bad requests (theirs to
    /// see in their answer), nor an abort a FaultInjection rule asked for.
    fn is_news(&self) -> bool {
        !matches!(
            self,
            Self::BadRequest(_) | Self::HeadersTooLarge | Self::FaultAbort { .. }
        )
    }

    /// Whether the request may go again, as decided by the variant.
    pub(crate) fn retry(&self) -> RetryClass {
        match self {
            Self::Connect { .. } | Self::Unresolved { .. } | Self::NotReady => RetryClass::Safe,
            Self::BadUpstream { .. } => RetryClass::IfIdempotent,
            Self::NoInstance(_)
            | Self::UnknownService(_)
            | Self::MtlsRequired { .. }
            | Self::Timeout { .. }
            | Self::BadRequest(_)
            | Self::HeadersTooLarge
            | Self::Loop(_)
            | Self::FaultAbort { .. }
            | Self::Internal(_) => RetryClass::Never,
        }
    }

    /// The status of the sidecar.md error table. Internal errors are 500 (503 while
    /// not ready): a 4xx would tell the client to change a request that was fine.
    pub(crate) fn status(&self) -> StatusCode {
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
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The answer a gRPC caller sees: trailers-only (HTTP 200, `grpc-status`,
    /// `grpc-message`), as gRPC clients read errors and as Envoy answers them. A
    /// plain 504 reached a gRPC client as `UNAVAILABLE: Received http2 header with
    /// status: 504`, whatever happened. Returns the HTTP status the error has
    /// elsewhere too, for metrics and traffic reports to count it as what it is.
    pub(crate) fn into_grpc_response(self) -> (Response<Body>, StatusCode) {
        let response = self.into_response();
        let status = response.status();
        (grpc_form(response), status)
    }

    /// The response the caller sees: the status and one line saying what happened.
    pub(crate) fn into_response(self) -> Response<Body> {
        let status = self.status();
        let source = self.caused_by();
        if source == ErrorSource::Internal && status == StatusCode::INTERNAL_SERVER_ERROR {
            // A broken invariant is a bug to find, not traffic: always in the log.
            tracing::warn!(%status, error = %self, "internal proxy error");
        } else if self.is_news() {
            // An operator asking "why the 502s?" finds the answer in the log, as
            // linkerd2-proxy's "Request failed" lines give it; a storm of them is
            // one line a second, with the count.
            static FAILED: Sampled = Sampled::new(Duration::from_secs(1));
            if let Some(not_logged) = FAILED.sample() {
                tracing::info!(%status, cause = source.as_str(), error = %self, not_logged, "request failed");
            }
        } else {
            tracing::debug!(%status, ?source, retry = ?self.retry(), error = %self, "proxy error");
        }
        let mut response = Response::new(
            Full::new(Bytes::from(format!("graylane: {self}\n")))
                .map_err(|e| match e {})
                .boxed_unsync()
                .into(),
        );
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        // Marks the answer as the sidecar's own, not the upstream's, and says why in
        // a field too: the calling sidecar answers a gRPC client with it (`grpc_form`).
        response
            .headers_mut()
            .insert(SIDECAR_ERROR, header::HeaderValue::from_static("1"));
        if let Ok(reason) = header::HeaderValue::from_str(&grpc_message(&self.to_string())) {
            response.headers_mut().insert(REASON, reason);
        }
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

/// Marks an answer a sidecar made itself (an error), not the upstream app.
pub(crate) const SIDECAR_ERROR: header::HeaderName =
    header::HeaderName::from_static("graylane-error");
/// What went wrong, as `grpc-message` carries it.
const REASON: header::HeaderName = header::HeaderName::from_static("graylane-reason");

/// The gRPC status of an error answered with `status`: `DEADLINE_EXCEEDED` for a
/// timeout (`UNAVAILABLE` would invite a retry policy to run again a call that may
/// have run for the whole timeout), `INTERNAL` for a sidecar's own fault, else gRPC's
/// mapping of the HTTP status (doc/http-grpc-status-mapping.md).
fn grpc_code(status: StatusCode) -> u16 {
    match status.as_u16() {
        504 => 4,
        400 | 500 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 => 14,
        _ => 2,
    }
}

/// A sidecar's error answer (this one's, or the next hop sidecar's passing through) in
/// gRPC's trailers-only form for a gRPC client; any other answer as it is.
pub(crate) fn grpc_form(mut response: Response<Body>) -> Response<Body> {
    if response.status() == StatusCode::OK || !response.headers().contains_key(SIDECAR_ERROR) {
        return response;
    }
    let code = grpc_code(response.status());
    *response.status_mut() = StatusCode::OK;
    *response.body_mut() = Body::Empty;
    let headers = response.headers_mut();
    headers.remove(header::CONNECTION);
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", header::HeaderValue::from(code));
    if let Some(reason) = headers.remove(REASON) {
        headers.insert("grpc-message", reason);
    }
    response
}

/// Whether `headers` are a gRPC call's (`application/grpc`, `application/grpc+proto`;
/// not gRPC-Web, which carries its status in the body).
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    // The media type, without its parameters (`; charset=utf-8`), in any case.
    let media = value.split(';').next().unwrap_or_default().trim();
    media.eq_ignore_ascii_case("application/grpc")
        || media
            .get(..17)
            .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc+"))
}

/// `text` as gRPC's `grpc-message` carries it: percent-encoded outside printable
/// ASCII, and `%` itself.
fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;

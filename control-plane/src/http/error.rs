//! The one place an API error becomes a response: a status and
//! `{"error": "...", "details": [...]}`, with the words the CLI prints.

use axum::Json;
use axum::http::StatusCode;
use axum::http::header::{HeaderValue, WWW_AUTHENTICATE};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::admin::AdminError;
use crate::control::ControlError;
use crate::store::StoreError;

/// Why an API call failed: the admin core's errors and the HTTP door's own.
#[derive(Debug)]
pub(crate) enum ApiError {
    Admin(AdminError),
    /// No credential, or one no token matches (the reason, for the body).
    Unauthenticated(String),
    /// A request the API cannot read: bad JSON, query or path parameter.
    BadRequest(String),
    /// A body over the route's limit (bytes).
    TooLarge(usize),
    /// A body in a content type the route does not read; the types it reads.
    UnsupportedMediaType(&'static str),
    /// No such route under `/api/`.
    UnknownPath,
    /// A route that does not take this method.
    MethodNotAllowed,
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        Self::Admin(e)
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        Self::Admin(AdminError::Control(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, details) = match self {
            Self::Admin(AdminError::Forbidden(msg)) => (StatusCode::FORBIDDEN, msg, Vec::new()),
            // The state too, so a script can tell "already paused" from "over".
            Self::Admin(AdminError::Refused { why, state }) => {
                let body = json!({"error": why, "details": [], "state": state});
                return (StatusCode::CONFLICT, Json(body)).into_response();
            }
            Self::Admin(AdminError::Control(e)) => control(e),
            Self::Unauthenticated(msg) => {
                let mut response = body(StatusCode::UNAUTHORIZED, msg, Vec::new());
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return response;
            }
            Self::BadRequest(msg) => (StatusCode::BAD_REQUEST, msg, Vec::new()),
            Self::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {limit} bytes; nothing was changed"),
                Vec::new(),
            ),
            Self::UnsupportedMediaType(accepted) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Type: send {accepted}"),
                Vec::new(),
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "this path does not take this method (see spec/http-api.md)".to_string(),
                Vec::new(),
            ),
            Self::UnknownPath => (
                StatusCode::NOT_FOUND,
                "no such API path: see /api/v1/rules, /history, /releases, /sidecars, \
                 /lanes, /traffic, /traces, /gaps, /explain, /rollouts"
                    .to_string(),
                Vec::new(),
            ),
        };
        body(status, error, details)
    }
}

/// A control error's status and words: the same as the gRPC door's messages.
fn control(e: ControlError) -> (StatusCode, String, Vec<String>) {
    match e {
        ControlError::Invalid(errors) => {
            let details: Vec<String> = errors.iter().map(ToString::to_string).collect();
            let error = format!(
                "the rules were refused ({} error{}); nothing was changed",
                details.len(),
                if details.len() == 1 { "" } else { "s" }
            );
            (StatusCode::BAD_REQUEST, error, details)
        }
        ControlError::NotFound(msg) => (StatusCode::NOT_FOUND, msg, Vec::new()),
        ControlError::BadRequest(msg) => (StatusCode::BAD_REQUEST, msg, Vec::new()),
        ControlError::Pending(msg) => (StatusCode::SERVICE_UNAVAILABLE, msg, Vec::new()),
        ControlError::Store(StoreError::Conflict { expected, actual }) => (
            StatusCode::CONFLICT,
            format!(
                "revision conflict: expected revision {expected}, but {actual} is in force; nothing was changed"
            ),
            Vec::new(),
        ),
        ControlError::Store(StoreError::NotLeader) => (
            StatusCode::CONFLICT,
            "this replica does not lead (another one drives rollouts); nothing was changed"
                .to_string(),
            Vec::new(),
        ),
        ControlError::Store(StoreError::Unavailable(msg)) => {
            tracing::warn!(error = %msg, "store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("rule store unavailable: {msg}; nothing was changed"),
                Vec::new(),
            )
        }
        ControlError::Store(StoreError::TooLarge(msg)) => (
            StatusCode::BAD_REQUEST,
            format!("{msg}; nothing was changed"),
            Vec::new(),
        ),
        ControlError::Store(StoreError::Corrupt(msg)) => {
            // Details (paths, content) stay in the server's log.
            tracing::error!(error = %msg, "store data corrupt");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the rule store holds data this server cannot read; see the server log".to_string(),
                Vec::new(),
            )
        }
    }
}

fn body(status: StatusCode, error: String, details: Vec<String>) -> Response {
    (status, Json(json!({ "error": error, "details": details }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: impl Into<ApiError>) -> StatusCode {
        e.into().into_response().status()
    }

    #[test]
    fn each_error_has_the_contracts_status() {
        let conflict = StoreError::Conflict {
            expected: 1,
            actual: 2,
        };
        assert_eq!(status(ControlError::Store(conflict)), StatusCode::CONFLICT);
        let down = StoreError::Unavailable("etcd: connection refused".into());
        assert_eq!(
            status(ControlError::Store(down)),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(ControlError::NotFound("x".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(ControlError::Invalid(Vec::new())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(AdminError::Forbidden("viewer".into())),
            StatusCode::FORBIDDEN
        );
        assert_eq!(status(ApiError::TooLarge(1)), StatusCode::PAYLOAD_TOO_LARGE);
        let unauthenticated = ApiError::Unauthenticated("no".into()).into_response();
        assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(unauthenticated.headers()[WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn corrupt_store_details_stay_in_the_log() {
        let response = ApiError::from(ControlError::Store(StoreError::Corrupt(
            "/var/lib/graylane/rev-7: secret".into(),
        )))
        .into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = futures_body(response);
        assert!(!body.contains("secret"), "{body}");
    }

    fn futures_body(response: Response) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 16))
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}

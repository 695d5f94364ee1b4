//! Bearer-token check for `/api/`: the `--token-file` credentials the gRPC door
//! accepts, read only from the `Authorization` header (never a query string or a
//! cookie, which end up in logs and browser storage). The decision, a [`Principal`],
//! goes into the request's extensions; the admin core decides what its role may do.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{HttpState, Peer};
use crate::admin::Caller;
use crate::api::{Principal, Role};

pub(super) async fn require_token(
    State(state): State<HttpState>,
    mut request: Request,
    next: Next,
) -> Response {
    match principal(&state, &request) {
        Ok(principal) => {
            // "admin (10.0.0.7)": the role and the caller's address, for history.
            let peer = request
                .extensions()
                .get::<Peer>()
                .map(|Peer(addr)| addr.ip().to_string());
            let role = principal.role;
            let who = match peer {
                Some(ip) => format!("{} ({ip})", role.as_str()),
                None => role.as_str().to_owned(),
            };
            request.extensions_mut().insert(Caller { role, who });
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

fn principal(state: &HttpState, request: &Request) -> Result<Principal, ApiError> {
    let Some(tokens) = &state.tokens else {
        // No credentials configured (loopback only): anyone may do anything.
        return Ok(Principal::anyone());
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(crate::api::bearer)
        .ok_or_else(|| {
            ApiError::Unauthenticated("missing bearer token (Authorization: Bearer <token>)".into())
        })?;
    let principal = tokens
        .principal_of(presented)
        .map_err(|status| ApiError::Unauthenticated(status.message().to_owned()))?;
    // A sidecar's credential speaks for a workload, not an operator: it reads nothing.
    if principal.role == Role::Sidecar {
        return Err(ApiError::Admin(crate::admin::AdminError::Forbidden(
            "a sidecar token may not call the admin API".into(),
        )));
    }
    Ok(principal)
}

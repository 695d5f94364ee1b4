//! `/api/v1/rollouts`: progressive lane releases (release.md) as `graylane rollout
//! status` shows them, and `POST /api/v1/rollouts/{name}:{action}` to pause, resume,
//! promote or abort one.
//!
//! The action rides in the last path segment after a colon (the Google API style the
//! spec asks for). axum cannot split a segment, so `{target}` is split here: at the
//! first colon, since a name (a DNS label) never holds one — `x:abort:again` is rollout
//! `x` with the unknown action `abort:again`, not rollout `x:abort`.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, State};
use axum::http::Uri;
use axum::response::IntoResponse;

use super::{ApiResult, params, path};
use crate::admin::{self, AdminError, Caller};
use crate::http::HttpState;
use crate::http::error::ApiError;
use crate::rollout::Action;

/// `GET /api/v1/rollouts[?namespace=NS]`: every rollout in force (of one namespace).
pub(super) async fn list(State(s): State<HttpState>, uri: Uri) -> ApiResult {
    let p = params(&uri, &["namespace"])?;
    let only = p
        .namespace
        .as_deref()
        .map(admin::namespace_of)
        .transpose()?;
    let mut views = s.core.rollouts().list().await.map_err(AdminError::from)?;
    views.retain(|v| only.is_none_or(|ns| v.namespace == ns));
    Ok(Json(views).into_response())
}

/// `GET /api/v1/rollouts/{name}[?namespace=NS]`: one rollout, 404 if none.
pub(super) async fn one(
    State(s): State<HttpState>,
    uri: Uri,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let p = params(&uri, &["namespace"])?;
    let name = path(name)?;
    let namespace = admin::namespace_of(p.namespace.as_deref().unwrap_or_default())?;
    let view = s.core.rollouts().get(namespace, &name).await?;
    Ok(Json(view).into_response())
}

/// `POST /api/v1/rollouts/{name}:{action}[?namespace=NS]`: the rollout after the
/// action. 403 for a viewer, 400 for an action that does not exist, 404 for a rollout
/// that does not, 409 (naming the state) for an action the state does not allow.
pub(super) async fn act(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    target: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let p = params(&uri, &["namespace"])?;
    let (name, action) = target_of(&path(target)?)?;
    let namespace = admin::namespace_of(p.namespace.as_deref().unwrap_or_default())?;
    let view = s
        .core
        .rollout_act(namespace, &name, action, &caller)
        .await?;
    Ok(Json(view).into_response())
}

/// `gray-orders-2:abort` → (`gray-orders-2`, Abort); a missing or unknown action is a
/// 400 that names what was sent and the four that exist.
fn target_of(target: &str) -> Result<(String, Action), ApiError> {
    let Some((name, action)) = target.split_once(':') else {
        return Err(ApiError::BadRequest(format!(
            "{target:?}: POST /api/v1/rollouts/NAME:ACTION, ACTION one of pause, resume, \
             promote, abort"
        )));
    };
    let action = action.parse().map_err(ApiError::BadRequest)?;
    Ok((name.to_owned(), action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_action_is_split_off_at_the_first_colon() {
        let (name, action) = target_of("gray-orders-2:abort").unwrap();
        assert_eq!((name.as_str(), action), ("gray-orders-2", Action::Abort));
        let Err(ApiError::BadRequest(why)) = target_of("x:abort:again") else {
            panic!("an action with a colon is no action");
        };
        assert!(why.contains("\"abort:again\""), "{why}");
        for hostile in ["gray-orders-2", "x:", "x:ABORT", "x: abort"] {
            assert!(target_of(hostile).is_err(), "{hostile}");
        }
    }
}

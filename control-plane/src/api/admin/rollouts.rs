//! `LaneRollouts` and `LaneRolloutAction`: progressive lane releases (release.md) over
//! the admin core's [`Rollouts`](crate::rollout::Rollouts), each rollout sent as the
//! JSON document the HTTP API answers.

use graylane_proto::v1 as pb;
use tonic::Status;

use crate::admin::{self, AdminCore, AdminError, Caller};
use crate::rollout::RolloutView;

/// Every rollout (of one namespace when given), or the one named (NOT_FOUND if none).
pub(super) async fn list(
    core: &AdminCore,
    r: pb::LaneRolloutsRequest,
) -> Result<pb::LaneRolloutsResponse, Status> {
    let rollouts = core.rollouts();
    let views = if r.name.is_empty() {
        let only = (!r.namespace.is_empty())
            .then(|| admin::namespace_of(&r.namespace))
            .transpose()?;
        let mut all = rollouts.list().await.map_err(AdminError::from)?;
        all.retain(|v| only.is_none_or(|ns| v.namespace == ns));
        all
    } else {
        let namespace = admin::namespace_of(&r.namespace)?;
        vec![
            rollouts
                .get(namespace, &r.name)
                .await
                .map_err(AdminError::from)?,
        ]
    };
    response(views)
}

/// One action by `caller`: PERMISSION_DENIED for anyone but an admin, INVALID_ARGUMENT
/// for an unknown action, NOT_FOUND for an unknown rollout, FAILED_PRECONDITION
/// (naming the state) for an action the rollout's state does not allow.
pub(super) async fn act(
    core: &AdminCore,
    r: pb::LaneRolloutActionRequest,
    caller: Caller,
) -> Result<pb::LaneRolloutsResponse, Status> {
    let namespace = admin::namespace_of(&r.namespace)?;
    let action = r.action.parse().map_err(Status::invalid_argument)?;
    let view = core
        .rollout_act(namespace, &r.name, action, &caller)
        .await?;
    response(vec![view])
}

/// Each view as its JSON document, the one `GET /api/v1/rollouts` answers.
fn response(views: Vec<RolloutView>) -> Result<pb::LaneRolloutsResponse, Status> {
    let rollouts_json = views
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()
        .map_err(|e| Status::internal(format!("rollout view as JSON: {e}")))?;
    Ok(pb::LaneRolloutsResponse { rollouts_json })
}

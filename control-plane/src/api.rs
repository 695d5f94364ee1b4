//! The gRPC surface: `Discovery` (sidecar streams and their certificates) and `Admin`
//! (the CLI), behind the credential check of `auth`, which decides a `Principal`;
//! `identity` turns that into the sidecar's SPIFFE id. Every control error leaves
//! through the one `From<ControlError>`.

use tonic::Status;

use crate::admin::AdminError;
use crate::control::ControlError;
use crate::store::StoreError;

mod admin;
mod auth;
mod discovery;
mod identity;
mod jwt;

pub use self::admin::AdminService;

/// Rule sets and snapshots are bounded by validation (10,000 documents of ≤ 1 MiB);
/// the gRPC message limit must let the largest valid apply through. The CLI reads no
/// more than this from its `-f` inputs: a larger apply could not be sent.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024 * 1024;
pub(crate) use self::auth::bearer;
pub use self::auth::{Auth, Principal, Role, Tokens};
pub use self::discovery::DiscoveryService;
pub use self::identity::{Identities, ServiceAccount};
pub use self::jwt::Jwks;

/// Metadata key the CLI fills with `user@host`, recorded in history as who applied.
pub const USER_METADATA: &str = "x-graylane-user";

impl From<AdminError> for Status {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Control(e) => e.into(),
            AdminError::Forbidden(msg) => Status::permission_denied(msg),
            AdminError::Refused { why, .. } => Status::failed_precondition(why),
        }
    }
}

impl From<ControlError> for Status {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Invalid(_) => Status::invalid_argument(e.to_string()),
            ControlError::NotFound(msg) => Status::not_found(msg),
            ControlError::BadRequest(msg) => Status::invalid_argument(msg),
            ControlError::Pending(msg) => Status::unavailable(msg),
            ControlError::Store(StoreError::Conflict { expected, actual }) => {
                Status::failed_precondition(format!(
                    "revision conflict: expected revision {expected}, but {actual} is in force; nothing was changed"
                ))
            }
            ControlError::Store(StoreError::NotLeader) => Status::failed_precondition(
                "this replica does not lead (another one drives rollouts); nothing was changed",
            ),
            ControlError::Store(StoreError::Unavailable(msg)) => {
                tracing::warn!(error = %msg, "store unavailable");
                Status::unavailable(format!(
                    "rule store unavailable: {msg}; nothing was changed"
                ))
            }
            ControlError::Store(StoreError::TooLarge(msg)) => {
                Status::invalid_argument(format!("{msg}; nothing was changed"))
            }
            ControlError::Store(StoreError::Corrupt(msg)) => {
                // Details (paths, content) stay in the server's log.
                tracing::error!(error = %msg, "store data corrupt");
                Status::internal(
                    "the rule store holds data this server cannot read; see the server log",
                )
            }
        }
    }
}

//! `graylane release set SERVICE all|gray|prod` / `graylane release get [SERVICE]`.

use clap::Subcommand;
use graylane_proto::v1 as pb;
use serde_json::json;

use super::client::Connect;
use super::output::{self, Table};
use super::{CliError, Format};

#[derive(Subcommand, Debug)]
pub enum ReleaseCommand {
    /// Set a service's release state (writes its RoutePolicy's `release` field).
    Set {
        /// The service (as its sidecars register it).
        service: String,
        /// all: every instance serves · gray: only lane instances · prod: only base.
        #[arg(value_parser = ["all", "gray", "prod"])]
        state: String,
        /// Fail unless this is the revision in force (optimistic locking).
        #[arg(long, value_name = "N")]
        expect_revision: Option<u64>,
        /// Set it even for a service nothing knows (no instance, no RoutePolicy), or
        /// `gray` where no instance is in a lane (every request would be a 503).
        #[arg(long)]
        force: bool,
    },
    /// Release states: one service, or every service with a policy or a sidecar.
    Get {
        /// One service (refused when it has neither an instance nor a RoutePolicy).
        service: Option<String>,
    },
}

impl ReleaseCommand {
    pub(crate) async fn run(
        self,
        connect: &Connect,
        format: Option<Format>,
    ) -> Result<(), CliError> {
        let format = format.unwrap_or(Format::Table);
        let mut client = connect.client().await?;
        match self {
            Self::Set {
                service,
                state,
                expect_revision,
                force,
            } => {
                let request = pb::SetReleaseRequest {
                    service: service.clone(),
                    state: state.clone(),
                    expect_revision,
                    force,
                    namespace: String::new(),
                };
                let response = client.set_release(request).await?.into_inner();
                output::emit(
                    format,
                    || {
                        let mut t = Table::new(vec!["SERVICE", "RELEASE", "REVISION"]);
                        t.row(vec![
                            service.clone(),
                            state.clone(),
                            response.revision.to_string(),
                        ]);
                        t
                    },
                    || json!({"service": service, "release": state, "revision": response.revision, "committed": response.committed}),
                );
            }
            Self::Get { service } => {
                let response = client
                    .get_release(pb::GetReleaseRequest {
                        service: service.unwrap_or_default(),
                        namespace: String::new(),
                    })
                    .await?
                    .into_inner();
                output::emit(
                    format,
                    || {
                        let mut t = Table::new(vec!["SERVICE", "RELEASE"]);
                        for s in &response.states {
                            t.row(vec![s.service.clone(), s.state.clone()]);
                        }
                        t
                    },
                    || {
                        json!({
                            "revision": response.revision,
                            "services": response.states.iter().map(|s| json!({"service": s.service, "release": s.state})).collect::<Vec<_>>(),
                        })
                    },
                );
            }
        }
        Ok(())
    }
}

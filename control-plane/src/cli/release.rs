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
        service: String,
        #[arg(value_parser = ["all", "gray", "prod"])]
        state: String,
        #[arg(long)]
        expect_revision: Option<u64>,
    },
    /// Release states: one service, or every service with a policy or a sidecar.
    Get { service: Option<String> },
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
            } => {
                let request = pb::SetReleaseRequest {
                    service: service.clone(),
                    state: state.clone(),
                    expect_revision,
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

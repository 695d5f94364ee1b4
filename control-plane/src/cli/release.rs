//! `graylane release set SERVICE all|gray|prod` / `graylane release get [SERVICE]`, in
//! the namespace of `-n` (the context's, else `default`).

use clap::Subcommand;
use graylane_proto::v1 as pb;
use graylane_routing::DEFAULT_NAMESPACE;
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
                // `stock.shop` as explain and the rules read it: `stock` in `shop`.
                let (namespace, service) =
                    super::explain::service_ref("SERVICE", &service, connect.namespace())?;
                let request = pb::SetReleaseRequest {
                    service: service.clone(),
                    state: state.clone(),
                    expect_revision,
                    force,
                    namespace: namespace.clone(),
                };
                let response = client.set_release(request).await?.into_inner();
                output::emit(
                    format,
                    || {
                        let mut t = Table::new(vec!["SERVICE", "RELEASE", "REVISION"]);
                        t.row(vec![
                            graylane_routing::qualified(&namespace, &service),
                            state.clone(),
                            response.revision.to_string(),
                        ]);
                        t
                    },
                    || json!({"service": service, "namespace": namespace, "release": state, "revision": response.revision, "committed": response.committed}),
                );
            }
            Self::Get { service } => {
                // One service is looked up in one namespace (`stock.shop`: in `shop`);
                // a listing is limited to one only when asked.
                let (namespace, service) = match &service {
                    Some(s) => super::explain::service_ref("SERVICE", s, connect.namespace())?,
                    None => (
                        connect.namespace_filter().unwrap_or_default().to_owned(),
                        String::new(),
                    ),
                };
                let response = client
                    .get_release(pb::GetReleaseRequest { namespace, service })
                    .await?
                    .into_inner();
                // A mesh without namespaces keeps the output it always had: the
                // namespace shows where one other than `default` does.
                let namespaced = response
                    .states
                    .iter()
                    .any(|s| !s.namespace.is_empty() && s.namespace != DEFAULT_NAMESPACE);
                output::emit(
                    format,
                    || {
                        let mut t = Table::new(if namespaced {
                            vec!["NAMESPACE", "SERVICE", "RELEASE"]
                        } else {
                            vec!["SERVICE", "RELEASE"]
                        });
                        for s in &response.states {
                            let mut row = Vec::with_capacity(3);
                            if namespaced {
                                row.push(s.namespace.clone());
                            }
                            row.extend([s.service.clone(), s.state.clone()]);
                            t.row(row);
                        }
                        t
                    },
                    || {
                        json!({
                            "revision": response.revision,
                            "services": response.states.iter().map(|s| {
                                let mut state = json!({"service": s.service, "release": s.state});
                                if namespaced {
                                    state["namespace"] = json!(s.namespace);
                                }
                                state
                            }).collect::<Vec<_>>(),
                        })
                    },
                );
            }
        }
        Ok(())
    }
}

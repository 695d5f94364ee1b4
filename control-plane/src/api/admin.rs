//! `graylane.v1.Admin`: a thin adapter over [`AdminCore`]. Each call reads its request
//! into the core's arguments and writes the typed result back as the response message;
//! no rule logic and no authorization decision lives here.

use std::pin::Pin;
use std::sync::Arc;

use graylane_proto::v1 as pb;
use graylane_proto::v1::admin_server::Admin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::USER_METADATA;
use super::auth::Principal;
use crate::admin::{self, AdminCore, Caller, Selector, SidecarView, Write};
use crate::control::{Action, ChangeOutcome};
use crate::push::SidecarEntry;

mod rollouts;

/// How long `Version` waits to learn whether this replica is ready.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The admin API over the shared [`AdminCore`].
pub struct AdminService {
    core: Arc<AdminCore>,
}

impl AdminService {
    pub(crate) fn new(core: Arc<AdminCore>) -> Self {
        Self { core }
    }
}

/// The write options of a request: its principal (put there by `Auth`) and who it is.
fn write<T>(request: &Request<T>, expect_revision: Option<u64>, dry_run: bool) -> Write {
    let role = request
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::anyone)
        .role;
    Write {
        caller: Caller {
            role,
            who: format!("{}: {}", role.as_str(), who(request)),
        },
        expect_revision,
        dry_run,
    }
}

/// "alice@laptop (127.0.0.1)": the CLI's claim of who it is, plus where it called from.
/// The claim is the client's word only, so history shows it after the role the
/// token proved ("admin: alice@laptop (127.0.0.1)"), as the HTTP API shows the role:
/// no client can write history as another, e.g. as a rollout's `graylane-rollout/…`.
fn who<T>(request: &Request<T>) -> String {
    let user = request
        .metadata()
        .get(USER_METADATA)
        .and_then(|v| v.to_str().ok())
        .filter(|u| !u.is_empty() && u.len() <= 128)
        .unwrap_or("unknown");
    match request.remote_addr() {
        Some(addr) => format!("{user} ({})", addr.ip()),
        None => user.to_string(),
    }
}

fn change_response(outcome: ChangeOutcome) -> pb::ChangeResponse {
    pb::ChangeResponse {
        revision: outcome.revision,
        committed: outcome.committed,
        changes: outcome
            .changes
            .into_iter()
            .map(|c| pb::ResourceChange {
                kind: c.kind.to_string(),
                name: c.name,
                // Lanes are mesh-wide: no namespace on the wire.
                namespace: if c.kind.is_namespaced() {
                    c.namespace
                } else {
                    String::new()
                },
                action: match c.action {
                    Action::Created => pb::ChangeAction::Created,
                    Action::Configured => pb::ChangeAction::Configured,
                    Action::Unchanged => pb::ChangeAction::Unchanged,
                    Action::Deleted => pb::ChangeAction::Deleted,
                } as i32,
                diff: c.diff,
            })
            .collect(),
    }
}

fn sidecar_status(view: SidecarView) -> pb::SidecarStatus {
    let SidecarView { entry, lanes } = view;
    let (nacked_revision, nack_reason) = entry.nack.unwrap_or_default();
    pb::SidecarStatus {
        lanes,
        service: entry.hello.service,
        instance_id: entry.hello.instance_id,
        labels: entry.hello.labels,
        address: entry.hello.address,
        namespace: entry.hello.namespace,
        service_account: entry.hello.service_account,
        acked_revision: entry.acked_revision,
        acked_version: entry.acked_version,
        nacked_revision,
        nack_reason,
        connected_at_ms: entry.connected_at_ms,
        identity: entry.identity,
        cert_not_after: entry.cert_not_after,
        endpoint_scope: admin::scope::message(entry.scope),
    }
}

type RolloutStream = Pin<Box<dyn Stream<Item = Result<pb::RolloutProgress, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let r = request.get_ref();
        let files = r
            .files
            .iter()
            .map(|f| (f.name.clone(), f.content.clone()))
            .collect();
        let prune = admin::prune(r.prune, r.prune_namespace.as_deref())?;
        let write = write(&request, r.expect_revision, r.dry_run);
        let outcome = self.core.apply(files, prune, write).await?;
        Ok(Response::new(change_response(outcome)))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let r = request.get_ref();
        let refs = r
            .resources
            .iter()
            .map(|x| {
                let ns = admin::namespace_of(&x.namespace)?.to_owned();
                Ok((admin::kind(&x.kind)?, ns, x.name.clone()))
            })
            .collect::<Result<_, admin::AdminError>>()?;
        let write = write(&request, r.expect_revision, r.dry_run);
        let outcome = self.core.delete(refs, write).await?;
        Ok(Response::new(change_response(outcome)))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let r = request.into_inner();
        let select = Selector {
            kind: (!r.kind.is_empty())
                .then(|| admin::kind(&r.kind))
                .transpose()?,
            name: (!r.name.is_empty()).then_some(r.name),
            namespace: (!r.namespace.is_empty()).then_some(r.namespace),
            revision: r.revision,
        };
        let (revision, selected) = self.core.get(&select).await?;
        let text: Vec<String> = selected.iter().map(|x| x.to_yaml()).collect();
        Ok(Response::new(pb::GetResponse {
            revision,
            rules: text.join("---\n"),
        }))
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let limit = request.into_inner().limit as usize;
        let entries = self
            .core
            .history(limit)
            .await?
            .into_iter()
            .map(|(revision, m)| pb::HistoryEntry {
                revision,
                applied_at_ms: m.applied_at_ms,
                applied_by: m.applied_by,
                summary: m.summary,
                resources: m.resources,
            })
            .collect();
        Ok(Response::new(pb::HistoryResponse { entries }))
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let r = request.get_ref();
        let write = write(&request, r.expect_revision, false);
        let outcome = self.core.rollback(r.to, write).await?;
        Ok(Response::new(change_response(outcome)))
    }

    async fn set_release(
        &self,
        request: Request<pb::SetReleaseRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let r = request.get_ref();
        let state = admin::release_state(&r.state)?;
        let write = write(&request, r.expect_revision, false);
        let outcome = self
            .core
            .set_release(&r.namespace, &r.service, state, r.force, write)
            .await?;
        Ok(Response::new(change_response(outcome)))
    }

    async fn get_release(
        &self,
        request: Request<pb::GetReleaseRequest>,
    ) -> Result<Response<pb::GetReleaseResponse>, Status> {
        let r = request.into_inner();
        let namespace = (!r.namespace.is_empty()).then_some(r.namespace.as_str());
        let service = (!r.service.is_empty()).then_some(r.service.as_str());
        let (revision, states) = self.core.releases(namespace, service).await?;
        let states = states
            .into_iter()
            .map(|(namespace, service, state)| pb::ReleaseState {
                state: state.to_string(),
                service,
                namespace,
            })
            .collect();
        Ok(Response::new(pb::GetReleaseResponse { revision, states }))
    }

    async fn list_sidecars(
        &self,
        _: Request<pb::ListSidecarsRequest>,
    ) -> Result<Response<pb::ListSidecarsResponse>, Status> {
        let (revision, views) = self.core.sidecars().await?;
        let sidecars = views.into_iter().map(sidecar_status).collect();
        Ok(Response::new(pb::ListSidecarsResponse {
            revision,
            sidecars,
        }))
    }

    type WatchRolloutStream = RolloutStream;

    async fn watch_rollout(
        &self,
        request: Request<pb::WatchRolloutRequest>,
    ) -> Result<Response<RolloutStream>, Status> {
        let revision = request.into_inner().revision;
        let control = Arc::clone(self.core.control());
        let mut answers = control.hub().answers();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                // Mark seen before reading, so an answer arriving while we compute
                // wakes the next round instead of being lost.
                answers.borrow_and_update();
                let sidecars = control.hub().sidecars();
                // A later revision holds this one's change too; one above the revision
                // in force was acked before the store went back (etcd restored from a
                // backup), and that number now stands for other rules.
                let current = control.hub().current().revision;
                let holds = |acked: u64| acked >= revision && acked <= current;
                let acked = sidecars.iter().filter(|s| holds(s.acked_revision)).count();
                let nacking: Vec<SidecarEntry> = sidecars
                    .iter()
                    .filter(|s| {
                        !holds(s.acked_revision)
                            && s.nack.as_ref().is_some_and(|(r, _)| *r >= revision)
                    })
                    .cloned()
                    .collect();
                // The rules are read only to name the lanes of NACKing sidecars: an
                // ACK-only round (the common case, once per sidecar) parses nothing.
                let nacked = if nacking.is_empty() {
                    Vec::new()
                } else {
                    match control.rules().await {
                        Ok((_, rules)) => {
                            let lanes = admin::lane_table(&rules);
                            nacking
                                .into_iter()
                                .map(|s| sidecar_status(admin::view(s, &lanes)))
                                .collect()
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                    }
                };
                let total = sidecars.len();
                let progress = pb::RolloutProgress {
                    revision,
                    total: u32::try_from(total).unwrap_or(u32::MAX),
                    acked: u32::try_from(acked).unwrap_or(u32::MAX),
                    nacked,
                };
                if tx.send(Ok(progress)).await.is_err() || acked == total {
                    return;
                }
                tokio::select! {
                    changed = answers.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_trace(
        &self,
        request: Request<pb::GetTraceRequest>,
    ) -> Result<Response<pb::Trace>, Status> {
        let trace = self.core.trace(&request.into_inner().trace_id)?;
        Ok(Response::new(trace))
    }

    async fn gaps(
        &self,
        _request: Request<pb::GapsRequest>,
    ) -> Result<Response<pb::GapsResponse>, Status> {
        Ok(Response::new(pb::GapsResponse {
            gaps: self.core.gaps(),
        }))
    }

    async fn version(
        &self,
        _request: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        let version = env!("CARGO_PKG_VERSION").to_owned();
        // Bounded: a replica cut off from its store must not hold the CLI's probe
        // (which then tries the next --server) longer than a few seconds.
        let ready = tokio::time::timeout(READY_WAIT, self.core.control().ready()).await;
        let not_ready = match ready {
            Ok(Ok(())) => String::new(),
            Ok(Err(why)) => why,
            Err(_) => format!("the store did not answer within {}s", READY_WAIT.as_secs()),
        };
        Ok(Response::new(pb::VersionResponse { version, not_ready }))
    }

    async fn lane_rollouts(
        &self,
        request: Request<pb::LaneRolloutsRequest>,
    ) -> Result<Response<pb::LaneRolloutsResponse>, Status> {
        rollouts::list(&self.core, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn lane_rollout_action(
        &self,
        request: Request<pb::LaneRolloutActionRequest>,
    ) -> Result<Response<pb::LaneRolloutsResponse>, Status> {
        let caller = write(&request, None, false).caller;
        rollouts::act(&self.core, request.into_inner(), caller)
            .await
            .map(Response::new)
    }

    async fn recent_traces(
        &self,
        request: Request<pb::RecentTracesRequest>,
    ) -> Result<Response<pb::RecentTracesResponse>, Status> {
        let limit = request.into_inner().limit;
        Ok(Response::new(pb::RecentTracesResponse {
            traces: self.core.recent_traces(limit),
        }))
    }
}

//! `graylane.v1.Admin`: each call translates its request into a `Change` or a read of
//! `Control`, and its result into the response message. No rule logic lives here.

use std::pin::Pin;
use std::sync::Arc;

use graylane_proto::v1 as pb;
use graylane_proto::v1::admin_server::Admin;
use graylane_routing::{DEFAULT_NAMESPACE, Kind, Name, Release, Resource, RuleSet};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::USER_METADATA;
use crate::control::{Action, Change, ChangeOptions, ChangeOutcome, Control, ControlError};
use crate::push::SidecarEntry;
use crate::traces::Traces;

/// The admin API over the shared `Control`.
pub struct AdminService {
    control: Arc<Control>,
    traces: Arc<Traces>,
}

impl AdminService {
    pub fn new(control: Arc<Control>, traces: Arc<Traces>) -> Self {
        Self { control, traces }
    }

    async fn change<T>(
        &self,
        request: &Request<T>,
        change: Change,
        expect: Option<u64>,
        dry_run: bool,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let options = ChangeOptions {
            expect_revision: expect,
            dry_run,
            applied_by: who(request),
        };
        let outcome = self.control.change(change, options).await?;
        Ok(Response::new(change_response(outcome)))
    }
}

/// "alice@laptop (127.0.0.1)": the CLI's claim of who it is, plus where it called from.
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

fn kind(s: &str) -> Result<Kind, Status> {
    s.parse().map_err(|_| {
        Status::invalid_argument(format!(
            "unknown kind {s:?}: expected one of {}",
            Kind::NAMES
        ))
    })
}

/// A request's namespace: empty is `default` (older clients); anything else must be a
/// DNS label, as a namespace is.
fn namespace_of(s: &str) -> Result<&str, Status> {
    if s.is_empty() {
        return Ok(DEFAULT_NAMESPACE);
    }
    Name::new(s)
        .map(|_| s)
        .map_err(|e| Status::invalid_argument(format!("namespace: {e}")))
}

fn sidecar_status(entry: SidecarEntry, rules: &RuleSet) -> pb::SidecarStatus {
    let lanes = rules.lanes_matching(
        &entry
            .hello
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    let (nacked_revision, nack_reason) = entry.nack.unwrap_or_default();
    pb::SidecarStatus {
        lanes: lanes.into_iter().map(str::to_string).collect(),
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
        if r.files.is_empty() {
            return Err(Status::invalid_argument("no files to apply"));
        }
        let files = r
            .files
            .iter()
            .map(|f| (f.name.clone(), f.content.clone()))
            .collect();
        let change = Change::Apply {
            files,
            prune: r.prune,
        };
        self.change(&request, change, r.expect_revision, r.dry_run)
            .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let r = request.get_ref();
        if r.resources.is_empty() {
            return Err(Status::invalid_argument("no resources to delete"));
        }
        let refs = r
            .resources
            .iter()
            .map(|x| {
                let ns = namespace_of(&x.namespace)?.to_owned();
                Ok((kind(&x.kind)?, ns, x.name.clone()))
            })
            .collect::<Result<_, Status>>()?;
        self.change(&request, Change::Delete(refs), r.expect_revision, r.dry_run)
            .await
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let r = request.into_inner();
        let (revision, rules) = match r.revision {
            Some(n) => self.control.revision(n).await?,
            None => self.control.rules().await?,
        };
        let filter = if r.kind.is_empty() {
            None
        } else {
            Some(kind(&r.kind)?)
        };
        // A namespace filters namespaced resources; Lanes are mesh-wide and shown in
        // every namespace, as they apply in every one.
        let namespace = if r.namespace.is_empty() {
            None
        } else {
            Some(namespace_of(&r.namespace)?)
        };
        let selected: Vec<_> = rules
            .iter()
            .filter(|x| {
                filter.is_none_or(|k| x.kind() == k)
                    && (r.name.is_empty() || x.name() == r.name)
                    && namespace.is_none_or(|ns| !x.is_namespaced() || x.namespace() == ns)
            })
            .collect();
        if let (Some(k), false, true) = (filter, r.name.is_empty(), selected.is_empty()) {
            let what = k.display_ref(namespace.unwrap_or_default(), &r.name);
            return Err(ControlError::NotFound(format!("{what} not found")).into());
        }
        let text: Vec<String> = selected.iter().map(|x| x.to_yaml()).collect();
        let text = text.join("---\n");
        Ok(Response::new(pb::GetResponse {
            revision,
            rules: text,
        }))
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let limit = request.into_inner().limit as usize;
        let list = self
            .control
            .store()
            .history(limit)
            .await
            .map_err(ControlError::from)?;
        let entries = list
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
        self.change(&request, Change::Rollback(r.to), r.expect_revision, false)
            .await
    }

    async fn set_release(
        &self,
        request: Request<pb::SetReleaseRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let r = request.get_ref();
        let state: Release = r.state.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "release state {:?}: expected all, gray or prod",
                r.state
            ))
        })?;
        let namespace = namespace_of(&r.namespace)?;
        if !r.force {
            self.control
                .check_release(namespace, &r.service, state)
                .await?;
        }
        let change = Change::Release {
            namespace: namespace.to_owned(),
            service: r.service.clone(),
            state,
        };
        self.change(&request, change, r.expect_revision, false)
            .await
    }

    async fn get_release(
        &self,
        request: Request<pb::GetReleaseRequest>,
    ) -> Result<Response<pb::GetReleaseResponse>, Status> {
        let r = request.into_inner();
        let (revision, rules) = self.control.rules().await?;
        // (namespace, service) pairs, in that order.
        let mut services: Vec<(String, String)> = if r.service.is_empty() {
            let only = if r.namespace.is_empty() {
                None
            } else {
                Some(namespace_of(&r.namespace)?)
            };
            let mut all: Vec<(String, String)> =
                self.control.hub().services().into_keys().collect();
            all.extend(rules.of_kind(Kind::RoutePolicy).filter_map(|r| match r {
                Resource::RoutePolicy(p) => {
                    let (ns, service) = p.spec.service.resolve(p.metadata.namespace());
                    Some((ns.to_owned(), service.to_owned()))
                }
                _ => None,
            }));
            all.retain(|(ns, _)| only.is_none_or(|only| ns == only));
            all
        } else {
            let namespace = namespace_of(&r.namespace)?;
            self.control.known_service(namespace, &r.service).await?;
            vec![(namespace.to_owned(), r.service)]
        };
        services.sort();
        services.dedup();
        let states = services
            .into_iter()
            .map(|(namespace, service)| pb::ReleaseState {
                state: rules.release_of(&namespace, &service).to_string(),
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
        let (revision, rules) = self.control.rules().await?;
        let sidecars = self
            .control
            .hub()
            .sidecars()
            .into_iter()
            .map(|e| sidecar_status(e, &rules))
            .collect();
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
        let control = Arc::clone(&self.control);
        let mut answers = control.hub().answers();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                // Mark seen before reading, so an answer arriving while we compute
                // wakes the next round instead of being lost.
                answers.borrow_and_update();
                let sidecars = control.hub().sidecars();
                let acked = sidecars
                    .iter()
                    .filter(|s| s.acked_revision >= revision)
                    .count();
                let nacking: Vec<SidecarEntry> = sidecars
                    .iter()
                    .filter(|s| {
                        s.acked_revision < revision
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
                        Ok((_, rules)) => nacking
                            .into_iter()
                            .map(|s| sidecar_status(s, &rules))
                            .collect(),
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
        let id = request.into_inner().trace_id.trim().to_ascii_lowercase();
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || id == "0".repeat(32) {
            return Err(Status::invalid_argument(format!(
                "trace id {id:?}: expected 32 hex digits (the second field of traceparent)"
            )));
        }
        self.traces.get(&id).map(Response::new).ok_or_else(|| {
            Status::not_found(format!(
                "trace {id}: no span of it reached this control plane (recent traces only; \
                 sidecars export to it unless --otlp-endpoint says otherwise)"
            ))
        })
    }

    async fn gaps(
        &self,
        _request: Request<pb::GapsRequest>,
    ) -> Result<Response<pb::GapsResponse>, Status> {
        Ok(Response::new(pb::GapsResponse {
            gaps: self.traces.gaps(),
        }))
    }

    async fn version(
        &self,
        _request: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        let version = env!("CARGO_PKG_VERSION").to_owned();
        Ok(Response::new(pb::VersionResponse { version }))
    }

    async fn recent_traces(
        &self,
        request: Request<pb::RecentTracesRequest>,
    ) -> Result<Response<pb::RecentTracesResponse>, Status> {
        let limit = usize::try_from(request.into_inner().limit.clamp(1, 1000)).unwrap_or(1000);
        Ok(Response::new(pb::RecentTracesResponse {
            traces: self.traces.recent(limit),
        }))
    }
}

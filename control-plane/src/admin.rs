//! The admin core: what every admin call does, once, for both doors — the gRPC
//! `Admin` service ([`crate::api`]) and the HTTP/JSON API ([`crate::http`]). Each door
//! only reads its request into these arguments and writes the typed result back in
//! its own encoding; which writes a role may make, how a change is validated and
//! what history records are decided here and in [`Control`].
//!
//! ```text
//! gRPC request ─┐                                   ┌─► From<AdminError> for Status
//!               ├─► AdminCore::{apply, delete, …} ──┤
//! HTTP request ─┘       (Control: change, CAS)      └─► IntoResponse (status + JSON)
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use graylane_proto::v1 as pb;
use graylane_routing::{
    DEFAULT_NAMESPACE, Instance, Kind, Name, Prune, Release, Resource, RoutingTable, RuleSet,
};

use crate::api::Role;
use crate::cli::explain::{self, ExplainArgs};
use crate::control::{Change, ChangeOptions, ChangeOutcome, Control, ControlError};
use crate::push::SidecarEntry;
use crate::rollout::{Action, RolloutView, Rollouts};
use crate::store::RevisionMeta;
use crate::traces::Traces;

mod lanes;
pub(crate) mod scope;

/// Why an admin call failed; each door maps it to its status in one place.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The credential is valid but may not do this (a viewer writing).
    #[error("{0}")]
    Forbidden(String),
    /// A rollout action the rollout's state does not allow (resume when not paused,
    /// anything once it is over), naming that state.
    #[error("{why}")]
    Refused { why: String, state: Option<String> },
}

/// Who makes a write, as history records it.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) role: Role,
    /// "alice@laptop (127.0.0.1)" from the CLI, "admin (10.0.0.7)" over HTTP.
    pub(crate) who: String,
}

/// How a write is made: the caller and the options every change takes.
#[derive(Clone, Debug)]
pub(crate) struct Write {
    pub(crate) caller: Caller,
    pub(crate) expect_revision: Option<u64>,
    pub(crate) dry_run: bool,
}

/// Which resources a read selects; `None` selects all.
#[derive(Clone, Debug, Default)]
pub(crate) struct Selector {
    pub(crate) kind: Option<Kind>,
    pub(crate) name: Option<String>,
    /// Filters namespaced resources; Lanes are mesh-wide and always selected.
    pub(crate) namespace: Option<String>,
    /// An earlier revision instead of the one in force.
    pub(crate) revision: Option<u64>,
}

/// A connected sidecar and the lanes its labels put it in under the rules in force.
#[derive(Clone, Debug)]
pub(crate) struct SidecarView {
    pub(crate) entry: SidecarEntry,
    pub(crate) lanes: Vec<String>,
}

/// The admin operations over the shared [`Control`] and trace store.
pub(crate) struct AdminCore {
    control: Arc<Control>,
    traces: Arc<Traces>,
    rollouts: Arc<Rollouts>,
}

impl AdminCore {
    pub(crate) fn new(control: Arc<Control>, traces: Arc<Traces>, rollouts: Arc<Rollouts>) -> Self {
        Self {
            control,
            traces,
            rollouts,
        }
    }

    pub(crate) fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Progressive lane rollouts, to show them (acting goes through `rollout_act`).
    pub(crate) fn rollouts(&self) -> &Rollouts {
        &self.rollouts
    }

    /// Pauses, resumes, promotes or aborts a rollout, as `caller` (an admin: the role
    /// is checked first, so a viewer learns nothing from the refusal). An action the
    /// state does not allow is `Refused`, naming the state.
    pub(crate) async fn rollout_act(
        &self,
        namespace: &str,
        name: &str,
        action: Action,
        caller: &Caller,
    ) -> Result<RolloutView, AdminError> {
        authorize(caller)?;
        match self
            .rollouts
            .act(namespace, name, action, &caller.who)
            .await
        {
            Ok(view) => Ok(view),
            // Every refusal of `act` is about the rollout's state, not the request.
            Err(ControlError::BadRequest(why)) => {
                let state = self
                    .rollouts
                    .get(namespace, name)
                    .await
                    .ok()
                    .map(|v| v.state);
                let why = match &state {
                    Some(state) if !why.contains(state.as_str()) => {
                        format!("{why} (state {state})")
                    }
                    _ => why,
                };
                Err(AdminError::Refused { why, state })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Applies `files` ((name, YAML) pairs), removing what `prune` covers that they
    /// do not hold.
    pub(crate) async fn apply(
        &self,
        files: Vec<(String, String)>,
        prune: Prune,
        write: Write,
    ) -> Result<ChangeOutcome, AdminError> {
        if files.is_empty() {
            return Err(bad("no files to apply"));
        }
        self.change(Change::Apply { files, prune }, write).await
    }

    /// Deletes (kind, namespace, name) resources; NotFound names the absent ones.
    pub(crate) async fn delete(
        &self,
        mut refs: Vec<(Kind, String, String)>,
        write: Write,
    ) -> Result<ChangeOutcome, AdminError> {
        if refs.is_empty() {
            return Err(bad("no resources to delete"));
        }
        // A resource named twice (`rules delete Lane/gray Lane/gray`) is deleted once,
        // not found the second time.
        refs.sort();
        refs.dedup();
        self.change(Change::Delete(refs), write).await
    }

    /// Restores the content of revision `to` as a new revision.
    pub(crate) async fn rollback(
        &self,
        to: u64,
        write: Write,
    ) -> Result<ChangeOutcome, AdminError> {
        self.change(Change::Rollback(to), write).await
    }

    /// Sets a service's release state; unless `force`, the service must be known and
    /// the state must make sense for it (`Control::check_release`).
    pub(crate) async fn set_release(
        &self,
        namespace: &str,
        service: &str,
        state: Release,
        force: bool,
        write: Write,
    ) -> Result<ChangeOutcome, AdminError> {
        // The role first: a viewer learns nothing about the service from the refusal.
        authorize(&write.caller)?;
        let namespace = namespace_of(namespace)?;
        if !force {
            self.control
                .check_release(namespace, service, state)
                .await?;
        }
        let change = Change::Release {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            state,
        };
        self.change(
            change,
            Write {
                dry_run: false,
                ..write
            },
        )
        .await
    }

    async fn change(&self, change: Change, write: Write) -> Result<ChangeOutcome, AdminError> {
        // A dry run writes nothing and shows what a viewer may read anyway: a reviewer
        // with a viewer token runs `rules diff` on a change before an admin applies it.
        if !write.dry_run {
            authorize(&write.caller)?;
        }
        let options = ChangeOptions {
            expect_revision: write.expect_revision,
            dry_run: write.dry_run,
            applied_by: write.caller.who,
        };
        Ok(self.control.change(change, options).await?)
    }

    /// The selected resources and the revision they were read at. A kind and a name
    /// that select nothing are NotFound.
    pub(crate) async fn get(&self, select: &Selector) -> Result<(u64, Vec<Resource>), AdminError> {
        let (revision, rules) = match select.revision {
            Some(n) => {
                let (n, set) = self.control.revision(n).await?;
                (n, Arc::new(set))
            }
            None => self.control.rules().await?,
        };
        let namespace = select.namespace.as_deref().map(namespace_of).transpose()?;
        let name = select.name.as_deref().filter(|n| !n.is_empty());
        let selected: Vec<Resource> = rules
            .iter()
            .filter(|x| {
                select.kind.is_none_or(|k| x.kind() == k)
                    && name.is_none_or(|n| x.name() == n)
                    && namespace.is_none_or(|ns| !x.is_namespaced() || x.namespace() == ns)
            })
            .cloned()
            .collect();
        if let (Some(k), Some(n), true) = (select.kind, name, selected.is_empty()) {
            let what = k.display_ref(namespace.unwrap_or_default(), n);
            return Err(ControlError::NotFound(format!("{what} not found")).into());
        }
        Ok((revision, selected))
    }

    /// Up to `limit` revisions (0: all the store keeps), newest first.
    pub(crate) async fn history(
        &self,
        limit: usize,
    ) -> Result<Vec<(u64, RevisionMeta)>, AdminError> {
        let store = self.control.store();
        Ok(store.history(limit).await.map_err(ControlError::from)?)
    }

    /// Release states of `service` (which must be known), or of every known service
    /// (in `namespace` when given): (namespace, service, state), sorted.
    pub(crate) async fn releases(
        &self,
        namespace: Option<&str>,
        service: Option<&str>,
    ) -> Result<(u64, Vec<(String, String, Release)>), AdminError> {
        let (revision, rules) = self.control.rules().await?;
        let mut services: Vec<(String, String)> = match service {
            None => {
                let only = namespace.map(namespace_of).transpose()?;
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
            }
            Some(service) => {
                let namespace = namespace_of(namespace.unwrap_or_default())?;
                self.control.known_service(namespace, service).await?;
                vec![(namespace.to_owned(), service.to_owned())]
            }
        };
        services.sort();
        services.dedup();
        let states = services
            .into_iter()
            .map(|(ns, service)| {
                let state = rules.release_of(&ns, &service);
                (ns, service, state)
            })
            .collect();
        Ok((revision, states))
    }

    /// The connected sidecars and their lanes, with the revision in force.
    pub(crate) async fn sidecars(&self) -> Result<(u64, Vec<SidecarView>), AdminError> {
        let (revision, rules) = self.control.rules().await?;
        let table = lane_table(&rules);
        let views = self
            .control
            .hub()
            .sidecars()
            .into_iter()
            .map(|entry| view(entry, &table))
            .collect();
        Ok((revision, views))
    }

    /// One trace by its 32-hex-digit id (case and surrounding space ignored).
    pub(crate) fn trace(&self, id: &str) -> Result<pb::Trace, AdminError> {
        let id = id.trim().to_ascii_lowercase();
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || id == "0".repeat(32) {
            return Err(bad(format!(
                "trace id {id:?}: expected 32 hex digits (the second field of traceparent)"
            )));
        }
        self.traces.get(&id).ok_or_else(|| {
            ControlError::NotFound(format!(
                "trace {id}: no span of it reached this control plane (recent traces only; \
                 sidecars export to it unless --otlp-endpoint says otherwise)"
            ))
            .into()
        })
    }

    /// The `limit` most recent traces (clamped to 1..=1000).
    pub(crate) fn recent_traces(&self, limit: u32) -> Vec<pb::Trace> {
        let limit = usize::try_from(limit.clamp(1, 1000)).unwrap_or(1000);
        self.traces.recent(limit)
    }

    pub(crate) fn gaps(&self) -> Vec<pb::Gap> {
        self.traces.gaps()
    }

    /// `explain -o json` for a hypothetical request, read from `caller_namespace` as
    /// the CLI's `-n` reads it, against the rules in force and the connected sidecars.
    pub(crate) async fn explain(
        &self,
        args: &ExplainArgs,
        caller_namespace: &str,
    ) -> Result<serde_json::Value, AdminError> {
        let caller_namespace = namespace_of(caller_namespace)?;
        let target = explain::target(args, caller_namespace).map_err(|e| bad(e.message))?;
        let (revision, rules) = self.control.rules().await?;
        let instances = instances(self.control.hub().sidecars());
        let explanation = explain::explain(&target, args, &rules, instances);
        Ok(explain::to_json(&target, revision, &explanation))
    }
}

/// Only an admin writes; a viewer (or a sidecar, on HTTP) is Forbidden.
fn authorize(caller: &Caller) -> Result<(), AdminError> {
    if caller.role == Role::Admin {
        return Ok(());
    }
    Err(AdminError::Forbidden(format!(
        "a {} token may only read; changing rules needs an admin token",
        caller.role.as_str()
    )))
}

fn bad(message: impl Into<String>) -> AdminError {
    ControlError::BadRequest(message.into()).into()
}

/// A request's namespace: empty is `default` (older clients); anything else must be a
/// DNS label, as a namespace is.
pub(crate) fn namespace_of(s: &str) -> Result<&str, AdminError> {
    if s.is_empty() {
        return Ok(DEFAULT_NAMESPACE);
    }
    Name::new(s)
        .map(|_| s)
        .map_err(|e| bad(format!("namespace: {e}")))
}

/// What an apply prunes: `--prune` or not, scoped to a valid namespace when one is
/// given (an empty one is `default`, as everywhere in the API).
pub(crate) fn prune(prune: bool, namespace: Option<&str>) -> Result<Prune, AdminError> {
    let namespace = namespace.map(namespace_of).transpose()?;
    Ok(Prune::new(prune, namespace))
}

/// A release state by its name, or a BadRequest naming the three.
pub(crate) fn release_state(s: &str) -> Result<Release, AdminError> {
    s.parse()
        .map_err(|_| bad(format!("release state {s:?}: expected all, gray or prod")))
}

/// A kind by its name, or a BadRequest listing the kinds.
pub(crate) fn kind(s: &str) -> Result<Kind, AdminError> {
    s.parse().map_err(|_| {
        bad(format!(
            "unknown kind {s:?}: expected one of {}",
            Kind::NAMES
        ))
    })
}

/// The connected sidecars as the routing crate sees instances.
fn instances(sidecars: Vec<SidecarEntry>) -> Vec<Instance> {
    sidecars
        .into_iter()
        .map(|s| Instance {
            service: s.hello.service,
            id: s.hello.instance_id,
            address: s.hello.address,
            labels: s.hello.labels.into_iter().collect::<BTreeMap<_, _>>(),
            namespace: s.hello.namespace,
            identity: s.identity,
        })
        .collect()
}

/// `entry` with the lanes `table` (built from the rules in force) puts it in: its
/// service's RoutePolicy lane overrides included, as the sidecars route.
pub(crate) fn view(entry: SidecarEntry, table: &RoutingTable) -> SidecarView {
    let labels = entry
        .hello
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let hello = &entry.hello;
    // Older sidecars send no namespace: theirs is `default`.
    let namespace = match hello.namespace.as_str() {
        "" => DEFAULT_NAMESPACE,
        ns => ns,
    };
    let lanes = table
        .lanes_of(namespace, &hello.service, &labels)
        .into_iter()
        .map(str::to_string)
        .collect();
    SidecarView { entry, lanes }
}

/// The rules' lane decisions, without instances: what `view` reads.
pub(crate) fn lane_table(rules: &RuleSet) -> RoutingTable {
    RoutingTable::build(rules, Vec::new())
}

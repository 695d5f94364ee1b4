//! Scoped endpoints, the sidecar's side (issue 15): which services' endpoints this
//! sidecar asks the control plane for, and the first call's wait for them.
//!
//! ```text
//!  Hello.scope = own service + --calls + every service learned so far (re-declared
//!                on every reconnect)
//!  a request to ns/svc ─► the routes hold its endpoints ─► route (the usual case:
//!                         one hash lookup, nothing else)
//!                      └► the directory names it, no endpoints here ─► learned,
//!                         SidecarMessage.interest on the stream, wait ≤ 1 s for
//!                         routes that hold it ─► route (or fail as before)
//!                      └► the directory does not name it ─► not a mesh service:
//!                         external / passthrough at once, as before
//! ```
//!
//! Learned interest is kept for the life of the process (never expired): a service
//! called once is usually called again, and the scope is capped by the directory,
//! which the control plane bounds (`MAX_SCOPE`: past it, the stream gets everything).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use graylane_proto::v1::ServiceName;
use graylane_routing::ServiceName as ServiceRef;
use tokio::sync::Notify;

use crate::routes::{Routes, Routing};

/// How long the first call to a service waits for its endpoints.
pub(crate) const INTEREST_WAIT: Duration = Duration::from_secs(1);

/// After a wait that ended without endpoints (the control plane down or slow), calls
/// to that service fail at once for this long instead of each waiting a second (and
/// each logging): what Envoy's on-demand discovery does not spare its callers.
const GIVE_UP_FOR: Duration = Duration::from_secs(5);

/// `--endpoint-scope`: what this sidecar asks endpoints for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum EndpointScope {
    /// Every endpoint of the mesh (as before scoping; what an older sidecar gets).
    #[default]
    All,
    /// Its own service's, these (`--calls`: (namespace, service)), and those its
    /// traffic asks for.
    Scoped(Vec<(String, String)>),
}

/// The services asked for at run time, shared by the request path and the stream.
#[derive(Debug, Default)]
pub(crate) struct Interest {
    learned: Mutex<BTreeSet<(String, String)>>,
    /// Learned but not yet sent on the stream in force.
    unsent: Mutex<Vec<(String, String)>>,
    /// Wakes the stream to send `unsent`.
    asked: Notify,
    /// Services asked for (each once).
    pub(crate) requests: AtomicU64,
    /// Requests that waited for endpoints, and those whose wait ended without them.
    pub(crate) waits: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    /// When a service's last wait ended without endpoints (see `GIVE_UP_FOR`).
    gave_up: Mutex<std::collections::HashMap<(String, String), Instant>>,
}

impl Interest {
    /// Adds `service` of `namespace`; whether it was new (then the stream sends it).
    fn learn(&self, namespace: &str, service: &str) -> bool {
        let key = (namespace.to_string(), service.to_string());
        let new = lock(&self.learned).insert(key.clone());
        if new {
            self.requests.fetch_add(1, Ordering::Relaxed);
            lock(&self.unsent).push(key);
            self.asked.notify_one();
        }
        new
    }

    /// Every service learned so far, for a new stream's Hello.
    pub(crate) fn learned(&self) -> Vec<(String, String)> {
        lock(&self.learned).iter().cloned().collect()
    }

    /// What a new stream's Hello declares: the learned ones go in it, so nothing is
    /// left to send separately.
    pub(crate) fn hello_scope(&self, declared: &[(String, String)]) -> EndpointScopeMsg {
        lock(&self.unsent).clear();
        let mut all: BTreeSet<(String, String)> = declared.iter().cloned().collect();
        all.extend(self.learned());
        message(all)
    }

    /// Resolves once something was learned since the last `take_unsent`.
    pub(crate) async fn asked(&self) {
        self.asked.notified().await;
    }

    /// What to send on the stream now; `None` when nothing.
    pub(crate) fn take_unsent(&self) -> Option<EndpointScopeMsg> {
        let unsent = std::mem::take(&mut *lock(&self.unsent));
        (!unsent.is_empty()).then(|| message(unsent))
    }
}

/// The proto message of a list of (namespace, service).
type EndpointScopeMsg = graylane_proto::v1::EndpointScope;

fn message(services: impl IntoIterator<Item = (String, String)>) -> EndpointScopeMsg {
    EndpointScopeMsg {
        services: services
            .into_iter()
            .map(|(namespace, service)| ServiceName { namespace, service })
            .collect(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is one collection operation: consistent even if poisoned.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The routes to route a request to `service` of `namespace` by: `routes` when they
/// hold its endpoints or it is no mesh service (the usual case, one lookup); else the
/// service is asked for and the call waits at most `INTEREST_WAIT` for routes that
/// hold it, returning the newest routes either way.
pub(crate) async fn ensure(
    routing: &Routing,
    routes: Arc<Routes>,
    namespace: &str,
    service: &str,
) -> Arc<Routes> {
    if !routes.lacks(namespace, service) {
        return routes;
    }
    let interest = &routing.interest;
    let key = (namespace.to_string(), service.to_string());
    if lock(&interest.gave_up)
        .get(&key)
        .is_some_and(|at| at.elapsed() < GIVE_UP_FOR)
    {
        return routes;
    }
    // Subscribed before asking: a swap after this point wakes the wait below.
    let mut changed = routing.subscribe();
    interest.learn(namespace, service);
    interest.waits.fetch_add(1, Ordering::Relaxed);
    let arrived = async {
        loop {
            if let Some(now) = routing.load()
                && !now.lacks(namespace, service)
            {
                return now;
            }
            if changed.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    match tokio::time::timeout(INTEREST_WAIT, arrived).await {
        Ok(now) => now,
        Err(_) => {
            interest.timeouts.fetch_add(1, Ordering::Relaxed);
            lock(&interest.gave_up).insert(key, Instant::now());
            tracing::warn!(%namespace, %service, "no endpoints within 1s of asking the control plane; calls to it fail at once for 5s");
            routing.load().unwrap_or(routes)
        }
    }
}

/// One `--calls` entry, a service reference as rules write one: `svc` (in the
/// sidecar's own namespace) or `svc.namespace`, read by the routing crate.
pub fn parse_call(s: &str) -> Result<ServiceRef, String> {
    let name = ServiceRef::new(s.trim()).map_err(|e| format!("{s:?}: {e}"))?;
    name.check_reference().map_err(|e| format!("{s:?}: {e}"))?;
    Ok(name)
}

/// `--endpoint-scope` (`all` | `scoped`) with `--calls`, read in `namespace`.
pub fn endpoint_scope(
    mode: &str,
    calls: Vec<ServiceRef>,
    namespace: &str,
) -> Result<EndpointScope, String> {
    match mode {
        "all" if calls.is_empty() => Ok(EndpointScope::All),
        "all" => Err(
            "--calls needs --endpoint-scope scoped (with `all` every endpoint is sent anyway)"
                .into(),
        ),
        "scoped" => Ok(EndpointScope::Scoped(
            calls
                .iter()
                .map(|call| {
                    let (ns, svc) = call.resolve(namespace);
                    (ns.to_owned(), svc.to_owned())
                })
                .collect(),
        )),
        other => Err(format!(
            "--endpoint-scope {other:?}: expected all or scoped"
        )),
    }
}

/// `--calls` as sent in Hello.
pub(crate) fn declared(scope: &EndpointScope) -> Option<&[(String, String)]> {
    match scope {
        EndpointScope::All => None,
        EndpointScope::Scoped(calls) => Some(calls),
    }
}

/// The scope as `/config` shows it.
pub(crate) fn describe(routing: &Routing, scope: &EndpointScope) -> serde_json::Value {
    let name = |(ns, svc): &(String, String)| graylane_routing::qualified(ns, svc);
    match scope {
        EndpointScope::All => serde_json::json!({ "mode": "all" }),
        EndpointScope::Scoped(calls) => serde_json::json!({
            "mode": "scoped",
            "declared": calls.iter().map(name).collect::<Vec<_>>(),
            "learned": routing.interest.learned().iter().map(name).collect::<Vec<_>>(),
            "directory": routing.load().and_then(|r| r.directory_len()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_names_as_rules_read_them_and_need_a_scoped_sidecar() {
        assert_eq!(parse_call("cart").map(|c| c.to_string()), Ok("cart".into()));
        assert_eq!(
            parse_call(" cart.shop ").map(|c| c.to_string()),
            Ok("cart.shop".into())
        );
        for bad in ["Cart", "shop/cart", "cart.", ".cart", "a.b.c", ""] {
            assert!(parse_call(bad).is_err(), "{bad}");
        }
        let calls = vec![parse_call("cart").unwrap(), parse_call("pay.x").unwrap()];
        assert_eq!(
            endpoint_scope("scoped", calls.clone(), "shop"),
            Ok(EndpointScope::Scoped(vec![
                ("shop".into(), "cart".into()),
                ("x".into(), "pay".into())
            ]))
        );
        assert!(endpoint_scope("all", calls, "shop").is_err());
        assert_eq!(
            endpoint_scope("all", vec![], "shop"),
            Ok(EndpointScope::All)
        );
        assert!(endpoint_scope("some", vec![], "shop").is_err());
    }

    #[test]
    fn a_service_is_asked_for_once_and_a_new_hello_carries_it() {
        let interest = Interest::default();
        assert!(interest.learn("shop", "cart"));
        assert!(!interest.learn("shop", "cart"));
        assert_eq!(interest.requests.load(Ordering::Relaxed), 1);
        let sent = interest.take_unsent().unwrap();
        assert_eq!(sent.services.len(), 1);
        assert!(interest.take_unsent().is_none());
        interest.learn("shop", "pay");
        let hello = interest.hello_scope(&[("default".into(), "orders".into())]);
        let names: Vec<_> = hello.services.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(names, ["orders", "cart", "pay"]);
        assert!(interest.take_unsent().is_none(), "in the Hello already");
    }
}

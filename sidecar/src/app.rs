//! Wiring of one sidecar: the three listeners (four with health), discovery and the
//! shared state between them, all stopped by one shutdown future. Takes already-bound
//! listeners, so the binary (and anything embedding it) binds where it likes, port 0
//! included.
//!
//! ```text
//!            ┌──────────── Routing (ArcSwap) ◄── Discovery ◄── control plane
//!            ▼                    ▼
//! app ─► Outbound ──────► other sidecars' Inbound ─► their app
//!            └─ TraceTable ◄─ Inbound ◄── other sidecars
//!  Identity (certificate, trust bundle) ◄── renewal / Discovery ◄── control plane
//!     └► mesh mTLS configs for Outbound and Inbound; /config, /ready
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderName;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::balance::Balancer;
use crate::discovery::{self, Discovery};
use crate::gaps::Gaps;
use crate::health;
pub use crate::health::AppProbes;
use crate::identity::{self, Identity};
use crate::inbound::{self, Inbound};
use crate::metrics::Metrics;
use crate::outbound::{self, Outbound};
use crate::proxy::Clients;
use crate::routes::Routing;
use crate::server::{self, Limits, MeshInbound, Sniff};
use crate::spans::{TraceConfig, Tracer, attr};
use crate::tag::TraceTable;
use crate::traffic::Traffic;
use crate::transparent::{AppAddr, Transparent};

/// The trace table: traces remembered at most, and for how long.
const TRACE_ENTRIES: usize = 100_000;
const TRACE_TTL: Duration = Duration::from_secs(60);
/// How long an instance that failed is skipped by the balancer.
const EJECT_FOR: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything a sidecar is told at start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Identity and control planes (`advertise` must be set).
    pub discovery: discovery::Config,
    pub app_addr: String,
    pub propagate_headers: Vec<HeaderName>,
    pub upstream_timeout: Duration,
    pub limits: Limits,
    /// Transparent mode: destination ports tunnelled as TCP without a look.
    pub opaque_ports: Vec<u16>,
    /// Transparent mode: how long a client may stay silent before its connection is
    /// taken for a server-first protocol and tunnelled.
    pub detect_timeout: Duration,
    /// Where spans go (OTLP) and how many.
    pub trace: TraceConfig,
    /// This sidecar's namespace, and the cluster domain of `name.ns.svc.<domain>`:
    /// which hosts name a mesh service.
    pub namespace: String,
    pub cluster_domain: String,
    /// The app's probes the health listener makes for the kubelet (`--app-probes`).
    pub app_probes: AppProbes,
}

/// The sidecar's listeners, bound by the caller.
pub struct Listeners {
    pub admin: TcpListener,
    pub outbound: TcpListener,
    pub inbound: TcpListener,
    /// `/ready` and `/live` only, for probes from outside while admin stays on
    /// loopback (in a pod); `None`: probes use admin.
    pub health: Option<TcpListener>,
}

/// Runs until `shutdown` completes; then stops accepting, ends the control-plane
/// stream (which deregisters the instance) and lets in-flight requests finish for at
/// most the drain timeout.
pub async fn run(config: Config, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let d = &config.discovery;
    let routes = Arc::new(Routing::default());
    let counters = Arc::new(discovery::DiscoveryStatus::default());
    let traces = Arc::new(TraceTable::new(TRACE_ENTRIES, TRACE_TTL));
    let metrics = Arc::new(Metrics::default());
    // The workload certificate, asked for as whom discovery registers, from the same
    // control planes.
    let identity = Arc::new(Identity::new(
        identity::Config {
            namespace: d.namespace.clone(),
            service_account: d.service_account.clone(),
            instance_id: d.instance_id.clone(),
            control_planes: d.control_planes.clone(),
            token_file: d.token_file.clone(),
            ca_bundle: d.ca_bundle.clone(),
        },
        Arc::clone(&metrics),
    ));
    // Mesh mTLS to other sidecars by the PeerPolicy of each destination.
    let clients = Clients::new(
        CONNECT_TIMEOUT,
        Some(Arc::clone(&identity)),
        Arc::clone(&metrics.upstream),
    );
    let mut resource = vec![
        attr("service.name", d.service.clone()),
        attr("service.instance.id", d.instance_id.clone()),
        // OpenTelemetry's Kubernetes convention: `orders` of `shop` and of `staging`
        // are told apart by it.
        attr("k8s.namespace.name", config.namespace.clone()),
    ];
    resource.extend(
        d.labels
            .iter()
            .map(|(k, v)| attr(&format!("graylane.label.{k}"), v.clone())),
    );
    let tracer = Tracer::new(&config.trace, resource);
    let gaps = Arc::new(Gaps::default());
    let traffic = Arc::new(Traffic::default());
    let balancer = Arc::new(Balancer::new(EJECT_FOR, Instant::now()));
    let own_listeners: Vec<SocketAddr> = [
        listeners.outbound.local_addr().ok(),
        listeners.admin.local_addr().ok(),
        listeners.health.as_ref().and_then(|h| h.local_addr().ok()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let inbound_port = listeners.inbound.local_addr().ok().map(|a| a.port());
    let app = Arc::new(AppAddr::new(
        &config.app_addr,
        own_listeners
            .iter()
            .map(SocketAddr::port)
            .chain(inbound_port)
            .collect(),
    ));
    let outbound = Arc::new(outbound::stack(Outbound {
        service: d.service.clone(),
        instance_id: d.instance_id.clone(),
        routes: Arc::clone(&routes),
        balancer: Arc::clone(&balancer),
        clients: clients.clone(),
        traces: Arc::clone(&traces),
        namespace: config.namespace.clone(),
        cluster_domain: config.cluster_domain.clone(),
        own_listeners: own_listeners.clone(),
        connect_timeout: CONNECT_TIMEOUT,
        propagate: config.propagate_headers.clone(),
        upstream_timeout: config.upstream_timeout,
        metrics: Arc::clone(&metrics),
        tracer: Arc::clone(&tracer),
        gaps: Arc::clone(&gaps),
        traffic: Arc::clone(&traffic),
    }));
    let inbound = Arc::new(inbound::stack(Inbound {
        service: d.service.clone(),
        namespace: config.namespace.clone(),
        instance_id: d.instance_id.clone(),
        app: Arc::clone(&app),
        routes: Arc::clone(&routes),
        clients,
        traces,
        propagate: config.propagate_headers.clone(),
        upstream_timeout: config.upstream_timeout,
        metrics: Arc::clone(&metrics),
        tracer: Arc::clone(&tracer),
        gaps: Arc::clone(&gaps),
    }));
    let transparent = Arc::new(Transparent {
        opaque_ports: config.opaque_ports.clone(),
        detect_timeout: config.detect_timeout,
        connect_timeout: CONNECT_TIMEOUT,
        metrics: Arc::clone(&metrics),
    });
    let admin = Arc::new(Admin {
        service: d.service.clone(),
        namespace: config.namespace.clone(),
        instance_id: d.instance_id.clone(),
        labels: d.labels.clone(),
        routes: Arc::clone(&routes),
        counters: Arc::clone(&counters),
        metrics: Arc::clone(&metrics),
        tracer,
        gaps,
        identity: Arc::clone(&identity),
    });
    // One signal for every task: listeners stop accepting and drain, the discovery
    // stream ends.
    let (stop, stopped) = watch::channel(false);
    let limits = config.limits;
    let health = listeners.health.map(|l| {
        tokio::spawn(health::serve(
            l,
            Arc::clone(&routes),
            Arc::clone(&identity),
            Arc::new(config.app_probes.clone()),
            stopped.clone(),
        ))
    });
    let tasks = [
        tokio::spawn(admin.serve(listeners.admin, limits.admin(), stopped.clone())),
        tokio::spawn(server::serve(
            listeners.outbound,
            Arc::clone(&outbound),
            limits,
            Sniff::Outbound(Arc::clone(&transparent)),
            Arc::clone(&metrics.outbound_connections),
            stopped.clone(),
        )),
        tokio::spawn(server::serve(
            listeners.inbound,
            inbound,
            limits,
            Sniff::Inbound(
                transparent,
                app,
                Arc::new(MeshInbound::new(
                    Arc::clone(&identity),
                    Arc::clone(&routes),
                    config.namespace.clone(),
                    d.service.clone(),
                    Arc::clone(&metrics),
                )),
            ),
            Arc::clone(&metrics.inbound_connections),
            stopped.clone(),
        )),
    ];
    let prune = tokio::spawn(prune_balancer(
        Arc::clone(&routes),
        balancer,
        stopped.clone(),
    ));
    let renewal = tokio::spawn(Arc::clone(&identity).run(stopped.clone()));
    let discovery = tokio::spawn(
        Discovery::new(config.discovery, routes, counters, identity, traffic).run(stopped),
    );
    shutdown.await;
    tracing::info!("shutting down: draining");
    let _ = stop.send(true);
    let _ = discovery.await;
    let _ = renewal.await;
    let _ = prune.await;
    for task in tasks.into_iter().chain(health) {
        let _ = task.await;
    }
}

/// After every swap, forgets the balancer stats of instances that left, so churn in a
/// long-running mesh does not grow them without bound.
async fn prune_balancer(
    routes: Arc<Routing>,
    balancer: Arc<Balancer>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = routes.subscribe();
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|down| *down) => return,
        }
        if let Some(current) = routes.load() {
            balancer.retain(|address| current.addresses.contains(address));
        }
    }
}

//! `graylane-sidecar`: flags → discovery + listeners. Wiring only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use graylane_sidecar::app;
use graylane_sidecar::discovery;
use graylane_sidecar::server::Limits;
use graylane_sidecar::spans::TraceConfig;

/// graylane's sidecar: keeps a request in its gray lane across every hop.
#[derive(Parser, Debug)]
#[command(version, after_help = graylane_exposition::LOGGING_HELP)]
struct Args {
    /// Log lines as text or as JSON objects (see GRAYLANE_LOG below).
    #[arg(long, env = "GRAYLANE_LOG_FORMAT", default_value = "text", value_parser = graylane_exposition::LOG_FORMATS)]
    log_format: String,
    /// The service this instance belongs to.
    #[arg(long, env = "GRAYLANE_SERVICE", value_parser = parse_service)]
    service: String,
    /// This instance's id (default: hostname-pid).
    #[arg(long, env = "GRAYLANE_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Instance labels, k=v,k=v (e.g. version=v2,zone=a).
    #[arg(long, env = "GRAYLANE_LABELS", value_parser = parse_labels, default_value = "")]
    labels: BTreeMap<String, String>,
    /// How other sidecars reach this instance's inbound listener (default: the
    /// inbound listener's address, when it is not a wildcard).
    #[arg(long, env = "GRAYLANE_ADVERTISE_ADDR")]
    advertise_addr: Option<String>,
    /// The local app, where inbound requests go.
    #[arg(long, env = "GRAYLANE_APP_ADDR", default_value = "127.0.0.1:8080")]
    app_addr: String,
    /// The app's outgoing calls: explicit proxy (HTTP_PROXY), origin-form with Host,
    /// and connections iptables redirected here (transparent mode).
    #[arg(
        long,
        env = "GRAYLANE_OUTBOUND_ADDR",
        default_value = "127.0.0.1:15001"
    )]
    outbound_addr: SocketAddr,
    /// Calls from other sidecars to this instance.
    #[arg(long, env = "GRAYLANE_INBOUND_ADDR", default_value = "0.0.0.0:15006")]
    inbound_addr: SocketAddr,
    /// Extra headers recovered by trace id like the tag, e.g. x-tenant,x-user-id.
    #[arg(long, env = "GRAYLANE_PROPAGATE_HEADERS", value_delimiter = ',')]
    propagate_headers: Vec<http::HeaderName>,
    /// Whole-request timeout upstream, unless a RoutePolicy says otherwise.
    #[arg(long, env = "GRAYLANE_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
    upstream_timeout: Duration,
    /// Request headers must be complete within this.
    #[arg(long, env = "GRAYLANE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    header_read_timeout: Duration,
    /// A connection whose client takes no bytes of its response for this long is
    /// closed (a reader that stopped; nginx's send_timeout).
    #[arg(long, env = "GRAYLANE_SEND_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    send_timeout: Duration,
    /// Open connections per listener (inbound, outbound); more are closed at once.
    #[arg(long, env = "GRAYLANE_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// This instance's namespace: `orders` and `orders.<namespace>` name a service in it.
    #[arg(long, env = "GRAYLANE_NAMESPACE", default_value = "default", value_parser = parse_namespace)]
    namespace: String,
    /// This instance's service account, part of its identity (default: --service).
    #[arg(long, env = "GRAYLANE_SERVICE_ACCOUNT")]
    service_account: Option<String>,
    /// The cluster domain of `orders.<namespace>.svc.<domain>`.
    #[arg(long, env = "GRAYLANE_CLUSTER_DOMAIN", default_value = "cluster.local", value_parser = parse_cluster_domain)]
    cluster_domain: String,
    /// The app's HTTP probes the health listener makes for the kubelet, as injection
    /// rewrites them (JSON; see the README's injection section).
    #[arg(long, env = "GRAYLANE_APP_PROBES", default_value = "{}", value_parser = graylane_sidecar::app::AppProbes::parse)]
    app_probes: graylane_sidecar::app::AppProbes,
    /// On SIGTERM, in-flight requests may finish for this long (a second SIGTERM
    /// exits at once).
    #[arg(long, env = "GRAYLANE_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Control-plane URL(s), comma-separated, tried in turn.
    #[arg(
        long,
        env = "GRAYLANE_CONTROL_PLANE",
        default_value = "http://127.0.0.1:15010"
    )]
    control_plane: String,
    /// CA certificates (PEM) an `https://` control plane (and OTLP endpoint) must
    /// chain to; `https://` without it is refused, never sent in plaintext.
    #[arg(long, env = "GRAYLANE_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
    /// File holding the bearer token for the control plane.
    #[arg(long, env = "GRAYLANE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Admin listener: /ready, /live, /metrics, /config, /gates/self.
    #[arg(long, env = "GRAYLANE_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,
    /// Health listener: /ready and /live only (404 for anything else), for probes
    /// from outside while admin stays on loopback (injected pods: 0.0.0.0:15021).
    /// Default: none.
    #[arg(long, env = "GRAYLANE_HEALTH_ADDR")]
    health_addr: Option<SocketAddr>,
    /// Transparent mode: destination ports passed through as TCP without waiting for
    /// the client to speak (server-first protocols).
    #[arg(long, env = "GRAYLANE_OPAQUE_PORTS", value_delimiter = ',', default_value = graylane_sidecar::transparent::DEFAULT_OPAQUE_PORTS)]
    opaque_ports: Vec<u16>,
    /// Transparent mode: a client silent for this long is taken for a server-first
    /// protocol, and its connection passed through as TCP.
    #[arg(long, env = "GRAYLANE_DETECT_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    detect_timeout: Duration,
    /// Threads that serve requests (Envoy's --concurrency; Istio's sidecars default to 2).
    #[arg(long, env = "GRAYLANE_CONCURRENCY", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// Where spans go (OTLP/gRPC): a URL, or `none`. Default: the first
    /// --control-plane URL (graylane-control keeps recent traces for `graylane trace`).
    #[arg(long, env = "GRAYLANE_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Percent of new traces recorded (a caller's sampling decision is followed).
    #[arg(long, env = "GRAYLANE_TRACE_SAMPLING", default_value_t = 100.0)]
    trace_sampling: f64,
    /// Where the last good snapshot is kept, to start from when the control plane is down.
    #[arg(long, env = "GRAYLANE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// After a reconnect, instances the control plane does not list (yet: it was
    /// restarted and their sidecars are not back) are still routed to for this long
    /// (0s to 5m; 0s: dropped at once).
    // 10 s: long enough for a fleet to reconnect to a restarted control plane (a
    // sidecar's backoff waits 5 s at most, jittered), short enough that an instance
    // that died meanwhile is not tried for long.
    #[arg(long, env = "GRAYLANE_ENDPOINT_GRACE", default_value = "10s", value_parser = parse_endpoint_grace)]
    endpoint_grace: Duration,
    /// Which endpoints this sidecar receives: `all` (every instance of the mesh) or
    /// `scoped` (its own service's, those of --calls, and those its app calls: the
    /// first call to another service waits up to 1 s for them).
    #[arg(long, env = "GRAYLANE_ENDPOINT_SCOPE", default_value = "all", value_parser = ["all", "scoped"])]
    endpoint_scope: String,
    /// With --endpoint-scope scoped: services wanted from the start, comma-separated:
    /// `svc` (this sidecar's namespace) or `svc.namespace`, as rules name them.
    #[arg(long, env = "GRAYLANE_CALLS", value_delimiter = ',', value_parser = discovery::parse_call)]
    calls: Vec<graylane_routing::ServiceName>,
    /// How often traffic counts go to the control plane (100ms to 1m); for tests.
    #[arg(long, env = "GRAYLANE_TRAFFIC_REPORT_INTERVAL", default_value = "5s", value_parser = parse_report_interval, hide = true)]
    traffic_report_interval: Duration,
}

/// A namespace is a DNS label (as a resource name is): `Shop` would match no host.
fn parse_namespace(s: &str) -> Result<String, String> {
    graylane_routing::Name::new(s).map(|n| n.as_str().to_string())
}

/// Dot-separated DNS labels, as a service name is.
fn parse_cluster_domain(s: &str) -> Result<String, String> {
    graylane_routing::ServiceName::new(s.strip_suffix('.').unwrap_or(s))
        .map(|n| n.as_str().to_string())
}

fn parse_report_interval(s: &str) -> Result<Duration, String> {
    let interval = parse_duration(s)?;
    if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&interval) {
        return Err(format!("{s}: must be 100ms to 1m"));
    }
    Ok(interval)
}

/// Capped: a typo such as `10h` would keep a dead instance's address in the routes
/// for hours.
fn parse_endpoint_grace(s: &str) -> Result<Duration, String> {
    let grace = parse_duration(s)?;
    if grace > Duration::from_secs(300) {
        return Err(format!("{s}: must be 0s to 5m"));
    }
    Ok(grace)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    graylane_routing::Duration::parse(s).map(|d| d.as_std())
}

/// A timeout: not zero, which would fail every request (`--upstream-timeout 0s`) or
/// close every connection whose head takes two packets (`--header-read-timeout`).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let timeout = parse_duration(s)?;
    if timeout.is_zero() {
        return Err(format!(
            "{s}: a timeout of zero would fail every request; give a duration such as 30s"
        ));
    }
    Ok(timeout)
}

/// A service is one DNS label, as a resource name is (`orders.shop` would read as
/// service `orders` of namespace `shop` everywhere else).
fn parse_service(s: &str) -> Result<String, String> {
    graylane_routing::Name::new(s).map(|n| n.as_str().to_string())
}

/// `k=v,k=v`, each key and value checked by the rules' own label rule, so an instance
/// label that no selector could ever name is refused at start, not silently unmatched.
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut pairs = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(format!("{pair:?}: expected key=value"));
        };
        // `version=v2,version=v1`: which one decides the lane is a typo's guess.
        if let Some(first) = pairs.insert(k.to_string(), v.to_string())
            && first != v
        {
            return Err(format!("{k:?} is given twice ({first:?} and {v:?})"));
        }
    }
    graylane_routing::Labels::new(pairs).map(|l| l.as_map().clone())
}

fn main() {
    // `graylane-sidecar init-iptables ...`: the init container's one job (see
    // `iptables`), then exit; anything else runs the sidecar.
    if std::env::args().nth(1).as_deref() == Some("init-iptables") {
        let args = graylane_sidecar::iptables::InitArgs::parse_checked(std::env::args().skip(1));
        if let Err(e) = graylane_sidecar::iptables::apply(&args) {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {e:#}");
            }
            std::process::exit(1);
        }
        return;
    }
    let args = Args::parse();
    graylane_exposition::init_logs(&args.log_format);
    // One thread: tokio's current-thread scheduler, no work stealing to pay for (as
    // Linkerd's proxy does on one core); more: the multi-thread one.
    let mut builder = match args.concurrency {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(n));
            b
        }
    };
    let result = builder
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    if let Err(e) = result {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("--token-file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let ca_bundle = match &args.ca_bundle {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("--ca-bundle {}", path.display()))?)
        }
        None => None,
    };
    let urls = graylane_proto::control_plane_urls(&args.control_plane)
        .map_err(|e| anyhow::anyhow!("--control-plane {e}"))?;
    if ca_bundle.is_none() && urls.iter().any(|u| u.tls) {
        bail!(
            "--control-plane https://... needs --ca-bundle: no CA is trusted by default, and it never falls back to plaintext"
        );
    }
    let control_planes: Vec<String> = urls.into_iter().map(|u| u.url).collect();
    let endpoint_scope =
        discovery::endpoint_scope(&args.endpoint_scope, args.calls.clone(), &args.namespace)
            .map_err(anyhow::Error::msg)?;
    let instance_id = fit_instance_id(args.instance_id.clone().unwrap_or_else(default_instance_id));
    // Held for the process's life (see `discovery::claim`).
    let _cache_claimed = match &args.cache_dir {
        Some(dir) => discovery::claim(dir).map_err(|e| anyhow::anyhow!("--cache-dir {e}"))?,
        None => None,
    };
    let bind = |addr: SocketAddr, flag: &'static str| async move {
        graylane_serve::bind(addr).with_context(|| format!("{flag} {addr}"))
    };
    let admin_listener = bind(args.admin_addr, "--admin-addr").await?;
    let outbound_listener = bind(args.outbound_addr, "--outbound-addr").await?;
    let inbound_listener = bind(args.inbound_addr, "--inbound-addr").await?;
    let health_listener = match args.health_addr {
        Some(addr) => Some(bind(addr, "--health-addr").await?),
        None => None,
    };
    // Logged only when set: the line stays as it was for sidecars without one.
    let health_addr = match &health_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let inbound_addr = inbound_listener.local_addr()?;
    let advertise = match args.advertise_addr.clone() {
        Some(a) => a,
        None if !inbound_addr.ip().is_unspecified() => inbound_addr.to_string(),
        None => {
            bail!("--advertise-addr is required when --inbound-addr is a wildcard ({inbound_addr})")
        }
    };
    tracing::info!(
        service = %args.service, instance = %instance_id, %advertise,
        admin_addr = %admin_listener.local_addr()?,
        outbound_addr = %outbound_listener.local_addr()?,
        inbound_addr = %inbound_addr,
        health_addr = health_addr.map(tracing::field::display),
        "graylane-sidecar listening"
    );
    let trace = TraceConfig {
        endpoint: match args.otlp_endpoint.as_deref() {
            Some("none") => None,
            Some(url) => {
                graylane_proto::GrpcUrl::parse(url)
                    .map_err(|e| anyhow::anyhow!("--otlp-endpoint {e}"))?;
                Some(url.to_string())
            }
            None => control_planes.first().cloned(),
        },
        token,
        sampling: args.trace_sampling / 100.0,
        ca_bundle: ca_bundle.clone(),
    };
    // The kubelet probes the pod's IP: so do the rewritten probes.
    let app_probes = match advertise.parse::<SocketAddr>() {
        Ok(at) => args.app_probes.at_pod_ip(at.ip()),
        Err(_) => args.app_probes,
    };
    let config = app::Config {
        discovery: discovery::Config {
            service_account: args.service_account.unwrap_or_else(|| args.service.clone()),
            namespace: args.namespace.clone(),
            service: args.service,
            instance_id,
            labels: args.labels,
            advertise,
            control_planes,
            // Read again at every (re)connect; read once above to refuse a missing
            // file at start.
            token_file: args.token_file,
            cache_dir: args.cache_dir,
            ca_bundle,
            traffic_interval: args.traffic_report_interval,
            endpoint_grace: args.endpoint_grace,
            endpoint_scope,
        },
        app_addr: args.app_addr,
        propagate_headers: args.propagate_headers,
        upstream_timeout: args.upstream_timeout,
        limits: Limits {
            header_read_timeout: args.header_read_timeout,
            drain_timeout: args.drain_timeout,
            send_timeout: args.send_timeout,
            max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        },
        namespace: args.namespace,
        cluster_domain: args.cluster_domain,
        app_probes,
        opaque_ports: args.opaque_ports,
        detect_timeout: args.detect_timeout,
        trace,
    };
    let listeners = app::Listeners {
        admin: admin_listener,
        outbound: outbound_listener,
        inbound: inbound_listener,
        health: health_listener,
    };
    // The first SIGTERM starts the drain; a second one means "now" (an operator, or
    // a kubelet past its grace period): exit without waiting for the drain.
    let (first, drain) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = first.send(());
        shutdown_signal().await;
        tracing::warn!("second signal during the drain: exiting now");
        std::process::exit(0);
    });
    app::run(config, listeners, async {
        let _ = drain.await;
    })
    .await;
    Ok(())
}

/// The control plane takes instance ids of at most 253 characters; injection's
/// `POD.NAMESPACE` can be longer (a 253-character pod name). A longer id keeps its
/// start and ends in a hash of the whole, so it stays unique and readable, rather
/// than being refused on every connect and never ready.
fn fit_instance_id(id: String) -> String {
    const MAX: usize = 253;
    if id.len() <= MAX {
        return id;
    }
    let suffix = format!("-{:016x}", graylane_routing::stable_hash(id.as_bytes()));
    let mut end = MAX - suffix.len();
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    let fitted = format!("{}{suffix}", &id[..end]);
    tracing::info!(instance = %fitted, "--instance-id longer than 253 characters: shortened");
    fitted
}

fn default_instance_id() -> String {
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "instance".into());
    format!("{}-{}", host.trim(), std::process::id())
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

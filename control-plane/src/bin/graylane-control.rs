//! `graylane-control`: flags → `Server`. Wiring only.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use graylane_control::api::{Identities, Tokens};
use graylane_control::ca::{self, MeshCa};
use graylane_control::cluster::Cluster;
use graylane_control::server::Server;
use graylane_control::store::{EtcdTls, Store, StoreUrl};
use graylane_control::tls::GrpcTls;
use graylane_control::{inject, webhook};
use std::sync::Arc;

/// graylane's control plane: stores rules, pushes them to sidecars, serves the CLI.
#[derive(Parser, Debug)]
#[command(version, after_help = graylane_exposition::LOGGING_HELP)]
struct Args {
    /// Log lines as text or as JSON objects (see GRAYLANE_LOG below).
    #[arg(long, env = "GRAYLANE_LOG_FORMAT", default_value = "text", value_parser = graylane_exposition::LOG_FORMATS)]
    log_format: String,
    /// gRPC listener (sidecar streams and the admin API).
    #[arg(long, env = "GRAYLANE_GRPC_ADDR", default_value = "127.0.0.1:15010")]
    grpc_addr: SocketAddr,
    /// HTTP listener for /ready, /live and /metrics.
    #[arg(long, env = "GRAYLANE_HTTP_ADDR", default_value = "127.0.0.1:15014")]
    http_addr: SocketAddr,
    /// Rule store: file:PATH (embedded, on disk), memory:, or
    /// etcd://host:port[,host:port...] (replicas sharing one etcd cluster).
    #[arg(long, env = "GRAYLANE_STORE", default_value = "file:./graylane-data")]
    store: StoreUrl,
    /// Where the etcd store keeps its keys.
    #[arg(long, env = "GRAYLANE_ETCD_PREFIX", default_value = "/graylane")]
    etcd_prefix: String,
    /// With --store etcd+https://: the CA (PEM) that signed etcd's server certificate.
    #[arg(long, env = "GRAYLANE_ETCD_CA", value_name = "PEM")]
    etcd_ca: Option<PathBuf>,
    /// The client certificate (PEM) to show etcd (its --client-cert-auth), with
    /// --etcd-key.
    #[arg(long, env = "GRAYLANE_ETCD_CERT", value_name = "PEM", requires_all = ["etcd_key", "etcd_ca"])]
    etcd_cert: Option<PathBuf>,
    /// The private key (PEM) of --etcd-cert.
    #[arg(
        long,
        env = "GRAYLANE_ETCD_KEY",
        value_name = "PEM",
        requires = "etcd_cert"
    )]
    etcd_key: Option<PathBuf>,
    /// With etcd: how long the instances of a replica that died stay registered, and
    /// how long a leader that died keeps driving rollouts (it stops believing it leads
    /// after half of it without etcd).
    #[arg(long, env = "GRAYLANE_LEASE_TTL", default_value = "10s", value_parser = parse_duration)]
    lease_ttl: std::time::Duration,
    /// Tokens, one `role:token` per line (roles: admin, sidecar). Without it every call
    /// is accepted, so the server only listens on loopback.
    #[arg(long, env = "GRAYLANE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Kubernetes service-account issuer keys (a JWKS file, as served at
    /// /openid/v1/jwks): projected tokens with audience `graylane` are then accepted
    /// as sidecar credentials, bound to their service account.
    #[arg(long, env = "GRAYLANE_K8S_JWKS", value_name = "PATH")]
    k8s_jwks: Option<PathBuf>,
    /// CA certificates (PEM) trusted besides the mesh CA and sent to every sidecar in
    /// the trust bundle: trust old and new together while rotating a CA.
    #[arg(long, env = "GRAYLANE_TRUST_BUNDLE", value_name = "PEM")]
    trust_bundle: Option<PathBuf>,
    /// Revisions kept in history (at least 100).
    #[arg(long, env = "GRAYLANE_HISTORY", default_value_t = 1000, value_parser = parse_history)]
    history: usize,
    /// Listen on non-loopback addresses without --token-file (anyone who can reach the
    /// port may then change the rules).
    #[arg(long, env = "GRAYLANE_ALLOW_UNAUTHENTICATED")]
    allow_unauthenticated: bool,
    /// Serve gRPC over TLS with a certificate the control plane issues itself from the
    /// mesh CA for --server-names. Clients take the CA from /ca.pem on --http-addr.
    #[arg(long, env = "GRAYLANE_GRPC_TLS", conflicts_with = "grpc_tls_cert")]
    grpc_tls: bool,
    /// With --grpc-tls: the names (DNS or IP) of the server certificate, comma-separated.
    /// Default: the IP of --grpc-addr (unless 0.0.0.0/::), localhost and
    /// graylane-control.graylane-system.svc.
    #[arg(
        long,
        env = "GRAYLANE_SERVER_NAMES",
        value_delimiter = ',',
        requires = "grpc_tls"
    )]
    server_names: Vec<String>,
    /// Lifetime of the certificates the control plane issues (at least 1m); its own
    /// --grpc-tls certificate is renewed at half of it, without a restart.
    #[arg(long, env = "GRAYLANE_CERT_TTL", default_value = "24h", value_parser = parse_cert_ttl)]
    cert_ttl: std::time::Duration,
    /// The mesh CA's certificate (PEM; a root or an intermediate), with --ca-key.
    /// Without it, a root is generated on first start and kept in the store.
    #[arg(long, env = "GRAYLANE_CA_CERT", requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// The private key (PEM) of --ca-cert.
    #[arg(long, env = "GRAYLANE_CA_KEY", requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// The trust domain of a generated mesh CA.
    #[arg(long, env = "GRAYLANE_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Serve gRPC over TLS with this certificate chain (PEM); with --grpc-tls-key.
    /// Sidecars and the CLI then connect with https:// and --ca-bundle.
    #[arg(long, env = "GRAYLANE_GRPC_TLS_CERT", requires = "grpc_tls_key")]
    grpc_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --grpc-tls-cert.
    #[arg(long, env = "GRAYLANE_GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    grpc_tls_key: Option<PathBuf>,
    /// Serve gRPC without TLS on a non-loopback address (tokens and rules then
    /// travel in plaintext).
    #[arg(long, env = "GRAYLANE_ALLOW_PLAINTEXT")]
    allow_plaintext: bool,
    /// HTTPS listener of the Kubernetes mutating admission webhook (`POST /inject`).
    #[arg(long, env = "GRAYLANE_WEBHOOK_ADDR", requires_all = ["tls_cert", "tls_key"])]
    webhook_addr: Option<SocketAddr>,
    /// The webhook's certificate chain (PEM).
    #[arg(long, env = "GRAYLANE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The webhook's private key (PEM).
    #[arg(long, env = "GRAYLANE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// HTTP API and webhook: a connection must send a complete request head within
    /// this (after its TLS handshake), and the next one within this on a keep-alive
    /// connection; otherwise it is closed.
    #[arg(long, env = "GRAYLANE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    header_read_timeout: std::time::Duration,
    /// HTTP API and webhook: a request's body must arrive whole within this of its
    /// head; otherwise the request fails (400) and its connection closes.
    #[arg(long, env = "GRAYLANE_BODY_READ_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    body_read_timeout: std::time::Duration,
    /// Webhook: a connection must complete its TLS handshake within this.
    #[arg(long, env = "GRAYLANE_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    tls_handshake_timeout: std::time::Duration,
    /// Open connections per HTTP listener (--http-addr, --webhook-addr); more are
    /// closed at once.
    #[arg(long, env = "GRAYLANE_MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Injection: the sidecar image.
    #[arg(long, env = "GRAYLANE_INJECT_IMAGE")]
    inject_image: Option<String>,
    /// Injection: the control-plane URL sidecars are given.
    #[arg(long, env = "GRAYLANE_INJECT_CONTROL_PLANE")]
    inject_control_plane: Option<String>,
    /// Injection: the Secret with the sidecar token (key `token`) and the mesh CA
    /// certificate (key `ca.pem`); `none`: neither.
    #[arg(
        long,
        env = "GRAYLANE_INJECT_TOKEN_SECRET",
        default_value = "graylane-sidecar-token"
    )]
    inject_token_secret: String,
    /// Injection: give sidecars a projected service-account token (audience
    /// `graylane`, 1h, rotated by the kubelet) checked with --k8s-jwks, and the mesh CA
    /// through a pod annotation, instead of --inject-token-secret: no Secret is needed
    /// in application namespaces.
    #[arg(
        long,
        env = "GRAYLANE_INJECT_PROJECTED_TOKEN",
        requires = "k8s_jwks",
        conflicts_with = "inject_token_secret"
    )]
    inject_projected_token: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    graylane_exposition::init_logs(&args.log_format);
    if let Err(e) = run(args).await {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let tokens = Tokens::load(args.token_file.as_deref(), args.k8s_jwks.as_deref())
        .map_err(anyhow::Error::msg)?;
    if tokens.is_none() {
        let open: Vec<_> = [args.grpc_addr, args.http_addr]
            .into_iter()
            .filter(|a| !a.ip().is_loopback())
            .collect();
        if !open.is_empty() && !args.allow_unauthenticated {
            bail!(
                "refusing to listen on {open:?} without --token-file: anyone could change the rules (add --token-file, or --allow-unauthenticated to accept that)"
            );
        }
        tracing::warn!(
            "no --token-file: every call is accepted without a token; listening on loopback only"
        );
    }
    let mut grpc_tls = match (&args.grpc_tls_cert, &args.grpc_tls_key) {
        (Some(cert), Some(key)) => Some(grpc_tls(cert, key)?),
        _ => None,
    };
    if !args.grpc_tls
        && grpc_tls.is_none()
        && !args.grpc_addr.ip().is_loopback()
        && !args.allow_plaintext
    {
        bail!(
            "refusing to serve gRPC on {} without TLS: tokens and rules would cross the network in plaintext (add --grpc-tls or --grpc-tls-cert/--grpc-tls-key, or --allow-plaintext to accept that)",
            args.grpc_addr
        );
    }
    let etcd_tls = etcd_tls(&args)?;
    let store = args
        .store
        .open(
            args.history,
            &args.etcd_prefix,
            etcd_tls.as_ref(),
            args.lease_ttl,
        )
        .await
        .with_context(|| format!("--store {:?}", args.store))?;
    let ca = mesh_ca(&args, store.as_ref()).await?;
    let identities = Arc::new(identities(&args, ca.clone())?);
    if let (true, Some(ca)) = (args.grpc_tls, ca) {
        let names = if args.server_names.is_empty() {
            ca::default_server_names(args.grpc_addr.ip())
        } else {
            args.server_names.clone()
        };
        tracing::info!(?names, ttl = ?args.cert_ttl, "issuing the gRPC server certificate from the mesh CA");
        let issued = GrpcTls::issued(ca, names, args.cert_ttl).context("--grpc-tls")?;
        grpc_tls = Some(issued);
    }
    let grpc = graylane_serve::bind(args.grpc_addr)
        .with_context(|| format!("--grpc-addr {}", args.grpc_addr))?;
    let http = graylane_serve::bind(args.http_addr)
        .with_context(|| format!("--http-addr {}", args.http_addr))?;
    let webhook = match (&args.webhook_addr, &args.tls_cert, &args.tls_key) {
        (Some(addr), Some(cert), Some(key)) => {
            let config = inject_config(&args, &identities);
            config
                .check("--inject-image", "--inject-control-plane")
                .map_err(anyhow::Error::msg)?;
            let tls = webhook::tls(cert, key)?;
            let listener =
                graylane_serve::bind(*addr).with_context(|| format!("--webhook-addr {addr}"))?;
            tracing::info!(webhook_addr = %listener.local_addr()?, "admission webhook listening");
            Some((listener, tls, Arc::new(config)))
        }
        _ => None,
    };
    let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
    tracing::info!(%grpc_addr, %http_addr, store = ?args.store, auth = tokens.is_some(), tls = grpc_tls.is_some(), "graylane-control listening");
    let cluster = match &args.store {
        StoreUrl::Etcd(endpoints) => {
            let replica = format!("{}-{}", hostname(), std::process::id());
            // Sidecars leave a hung replica within 5 s (their keep-alive); its lease
            // expires as early as two thirds of the TTL after it hung.
            if args.lease_ttl < std::time::Duration::from_secs(8) {
                tracing::warn!(lease_ttl = ?args.lease_ttl, "--lease-ttl under 8s: should this replica hang, its sidecars' instances may leave the mesh for a moment before the sidecars move to another replica");
            }
            let tls = etcd_tls.as_ref();
            let cluster = Cluster::open(endpoints, &args.etcd_prefix, args.lease_ttl, replica, tls)
                .await
                .with_context(|| format!("--store {:?}", args.store))?;
            Some(Arc::new(cluster))
        }
        _ => None,
    };
    Server {
        store,
        tokens,
        cluster,
        webhook,
        grpc_tls,
        identities,
        // Traffic reports (issue 13) plug in here.
        traffic: None,
        limits: graylane_serve::Limits {
            max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
            header_read_timeout: args.header_read_timeout,
            tls_handshake_timeout: args.tls_handshake_timeout,
            body_read_timeout: args.body_read_timeout,
            ..graylane_serve::Limits::default()
        },
    }
    .run(grpc, http, shutdown_signal())
    .await
}

/// The mesh CA, when something needs it: the operator's (`--ca-cert`), else the
/// store's (created on first use). `None` without --grpc-tls or --ca-cert: the server
/// then reads it from the store in the background (an etcd store may still be down at
/// start; certificates are refused with UNAVAILABLE until it is read).
async fn mesh_ca(args: &Args, store: &dyn Store) -> anyhow::Result<Option<MeshCa>> {
    let ca = match (&args.ca_cert, &args.ca_key) {
        (Some(cert), Some(key)) => {
            let read = |path: &std::path::Path, flag: &str| {
                std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))
            };
            MeshCa::from_pem(&read(cert, "--ca-cert")?, &read(key, "--ca-key")?)
                .context("--ca-cert/--ca-key")?
        }
        _ if args.grpc_tls => MeshCa::from_store(store, &args.trust_domain)
            .await
            .with_context(|| format!("the mesh CA in --store {:?}", args.store))?,
        _ => return Ok(None),
    };
    Ok(Some(ca))
}

/// The webhook's injection settings (`--inject-*`). With a projected token, the CA
/// sidecars trust is the trust bundle known at start (the mesh CA first).
fn inject_config(args: &Args, identities: &Identities) -> inject::Config {
    let defaults = inject::Config::default();
    let control_plane = args
        .inject_control_plane
        .clone()
        .unwrap_or(defaults.control_plane);
    let credential = if args.inject_projected_token {
        let ca_bundle = identities.trust_bundle().map(|pems| {
            pems.iter()
                .map(|p| format!("{}\n", p.trim_end()))
                .collect::<String>()
        });
        if ca_bundle.is_none() && control_plane.starts_with("https://") {
            tracing::warn!(%control_plane, "--inject-projected-token: no mesh CA (--ca-cert or --grpc-tls), so injected sidecars get no CA to check the control plane's certificate against");
        }
        inject::Credential::ServiceAccount { ca_bundle }
    } else if args.inject_token_secret == "none" {
        inject::Credential::None
    } else {
        inject::Credential::Secret(args.inject_token_secret.clone())
    };
    inject::Config {
        image: args.inject_image.clone().unwrap_or(defaults.image),
        control_plane,
        credential,
    }
}

/// `--etcd-ca/--etcd-cert/--etcd-key`, read and checked; refused when they do not fit
/// `--store` (TLS flags for a plaintext store are a typo, not something to ignore).
fn etcd_tls(args: &Args) -> anyhow::Result<Option<EtcdTls>> {
    let https =
        matches!(&args.store, StoreUrl::Etcd(e) if e.iter().any(|e| e.starts_with("https://")));
    let Some(ca) = &args.etcd_ca else {
        if https {
            bail!(
                "--store {:?} (etcd over TLS) needs --etcd-ca: the CA that signed etcd's server certificate",
                args.store
            );
        }
        return Ok(None);
    };
    if !https {
        bail!(
            "--etcd-ca/--etcd-cert/--etcd-key are for --store etcd+https://host:port; --store {:?} does not use TLS",
            args.store
        );
    }
    let client = args.etcd_cert.as_deref().zip(args.etcd_key.as_deref());
    Ok(Some(EtcdTls::from_files(ca, client)?))
}

/// The trust domain, `--cert-ttl`, `--trust-bundle`, and the CA if already loaded.
fn identities(args: &Args, ca: Option<MeshCa>) -> anyhow::Result<Identities> {
    let extra = match &args.trust_bundle {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("--trust-bundle {}", path.display()))?;
            ca::parse_trust_bundle(&pem)
                .map_err(|e| anyhow::anyhow!("--trust-bundle {}: {e}", path.display()))?
        }
        None => Vec::new(),
    };
    Identities::new(&args.trust_domain, args.cert_ttl, ca, extra)
        .map_err(|e| anyhow::anyhow!("--trust-domain {:?}: {e}", args.trust_domain))
}

/// Workload certificates are short-lived (security.md): at least 1m, and at most 90
/// days, Istio's own bound. Past it the CA outlives nothing it signs, and a far
/// `not_after` overflowed the certificate's date (a panic at every issue).
fn parse_cert_ttl(s: &str) -> Result<std::time::Duration, String> {
    let ttl = parse_duration(s)?;
    if ttl < std::time::Duration::from_secs(60) {
        return Err(format!("{s} is under the minimum of 1m"));
    }
    if ttl > std::time::Duration::from_secs(90 * 24 * 3600) {
        return Err(format!("{s} is over the maximum of 2160h (90 days)"));
    }
    Ok(ttl)
}

/// rules.md promises at least the last 100 revisions restorable: fewer is refused,
/// not raised behind the operator's back.
fn parse_history(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if n < graylane_control::store::MIN_HISTORY {
        return Err(format!(
            "{n} is under the minimum of {}: history keeps at least the last {} revisions",
            graylane_control::store::MIN_HISTORY,
            graylane_control::store::MIN_HISTORY
        ));
    }
    Ok(n)
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    graylane_routing::Duration::parse(s).map(|d| d.as_std())
}

/// A timeout: a duration above zero (zero would close every connection at once).
fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be above zero".into()),
        d => Ok(d),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "replica".into())
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
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// The gRPC listener's TLS (rustls: TLS 1.2 and 1.3), from PEM files.
fn grpc_tls(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<GrpcTls> {
    let read = |path: &std::path::Path, flag: &str| {
        std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))
    };
    GrpcTls::fixed(
        &read(cert, "--grpc-tls-cert")?,
        &read(key, "--grpc-tls-key")?,
    )
    .context("--grpc-tls-cert/--grpc-tls-key")
}

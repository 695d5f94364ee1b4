//! `graylane-control`: flags → `Server`. Wiring only.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use graylane_control::api::Tokens;
use graylane_control::cluster::Cluster;
use graylane_control::server::Server;
use graylane_control::store::StoreUrl;
use graylane_control::{inject, webhook};
use std::sync::Arc;

/// graylane's control plane: stores rules, pushes them to sidecars, serves the CLI.
#[derive(Parser, Debug)]
#[command(version, after_help = LOGGING)]
struct Args {
    /// Log lines as text or as JSON objects (see GRAYLANE_LOG below).
    #[arg(long, env = "GRAYLANE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
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
    /// With etcd: how long the instances of a replica that died stay registered.
    #[arg(long, env = "GRAYLANE_LEASE_TTL", default_value = "10s", value_parser = parse_duration)]
    lease_ttl: std::time::Duration,
    /// Tokens, one `role:token` per line (roles: admin, sidecar). Without it every call
    /// is accepted, so the server only listens on loopback.
    #[arg(long, env = "GRAYLANE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Revisions kept in history (at least 100).
    #[arg(long, env = "GRAYLANE_HISTORY", default_value_t = 1000)]
    history: usize,
    /// Listen on non-loopback addresses without --token-file (anyone who can reach the
    /// port may then change the rules).
    #[arg(long, env = "GRAYLANE_ALLOW_UNAUTHENTICATED")]
    allow_unauthenticated: bool,
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
    /// Injection: the sidecar image.
    #[arg(long, env = "GRAYLANE_INJECT_IMAGE")]
    inject_image: Option<String>,
    /// Injection: the control-plane URL sidecars are given.
    #[arg(long, env = "GRAYLANE_INJECT_CONTROL_PLANE")]
    inject_control_plane: Option<String>,
    /// Injection: the Secret with the sidecar token (`none`: no token).
    #[arg(
        long,
        env = "GRAYLANE_INJECT_TOKEN_SECRET",
        default_value = "graylane-sidecar-token"
    )]
    inject_token_secret: String,
}

const LOGGING: &str = "Logs go to standard error. GRAYLANE_LOG sets what is logged (an EnvFilter: `info`, `debug`, `graylane_sidecar=debug,info`; default `info` with hyper, h2, tonic and tower at `warn`); --log-format json writes one JSON object a line.";

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GRAYLANE_LOG")
                .unwrap_or_else(|_| "info,h2=warn,tonic=warn,hyper=warn,tower=warn".into()),
        )
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    if let Err(e) = run(args).await {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let tokens = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--token-file {}", path.display()))?;
            Some(
                Tokens::parse(&text)
                    .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?,
            )
        }
        None => None,
    };
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
    let grpc_tls = match (&args.grpc_tls_cert, &args.grpc_tls_key) {
        (Some(cert), Some(key)) => Some(grpc_tls(cert, key)?),
        _ => None,
    };
    if grpc_tls.is_none() && !args.grpc_addr.ip().is_loopback() && !args.allow_plaintext {
        bail!(
            "refusing to serve gRPC on {} without TLS: tokens and rules would cross the network in plaintext (add --grpc-tls-cert/--grpc-tls-key, or --allow-plaintext to accept that)",
            args.grpc_addr
        );
    }
    let store = args
        .store
        .open(args.history, &args.etcd_prefix)
        .await
        .with_context(|| format!("--store {:?}", args.store))?;
    let grpc = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("--grpc-addr {}", args.grpc_addr))?;
    let http = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("--http-addr {}", args.http_addr))?;
    let webhook = match (&args.webhook_addr, &args.tls_cert, &args.tls_key) {
        (Some(addr), Some(cert), Some(key)) => {
            let tls = webhook::tls(cert, key)?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--webhook-addr {addr}"))?;
            tracing::info!(webhook_addr = %listener.local_addr()?, "admission webhook listening");
            let defaults = inject::Config::default();
            let config = inject::Config {
                image: args.inject_image.clone().unwrap_or(defaults.image),
                control_plane: args
                    .inject_control_plane
                    .clone()
                    .unwrap_or(defaults.control_plane),
                token_secret: (args.inject_token_secret != "none")
                    .then(|| args.inject_token_secret.clone()),
            };
            Some((listener, tls, Arc::new(config)))
        }
        _ => None,
    };
    let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
    tracing::info!(%grpc_addr, %http_addr, store = ?args.store, auth = tokens.is_some(), tls = args.grpc_tls_cert.is_some(), "graylane-control listening");
    let cluster = match &args.store {
        StoreUrl::Etcd(endpoints) => {
            let replica = format!("{}-{}", hostname(), std::process::id());
            let cluster = Cluster::open(endpoints, &args.etcd_prefix, args.lease_ttl, replica)
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
    }
    .run(grpc, http, shutdown_signal())
    .await
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    graylane_routing::Duration::parse(s).map(|d| d.as_std())
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
fn grpc_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    let read = |path: &std::path::Path, flag: &str| {
        std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))
    };
    let identity = tonic::transport::Identity::from_pem(
        read(cert, "--grpc-tls-cert")?,
        read(key, "--grpc-tls-key")?,
    );
    Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
}

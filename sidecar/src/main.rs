//! `graylane-sidecar`: flags → discovery + listeners. Wiring only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use graylane_sidecar::admin::Admin;
use graylane_sidecar::discovery::{self, Discovery};
use graylane_sidecar::routes::Routing;
use tokio::sync::watch;

/// graylane's sidecar: keeps a request in its gray lane across every hop.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The service this instance belongs to.
    #[arg(long, env = "GRAYLANE_SERVICE")]
    service: String,
    /// This instance's id (default: hostname-pid).
    #[arg(long, env = "GRAYLANE_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Instance labels, k=v,k=v (e.g. version=v2,zone=a).
    #[arg(long, env = "GRAYLANE_LABELS", value_parser = parse_labels, default_value = "")]
    labels: BTreeMap<String, String>,
    /// How other sidecars reach this instance's inbound listener.
    #[arg(long, env = "GRAYLANE_ADVERTISE_ADDR")]
    advertise_addr: String,
    /// Control-plane URL(s), comma-separated, tried in turn.
    #[arg(
        long,
        env = "GRAYLANE_CONTROL_PLANE",
        default_value = "http://127.0.0.1:15010"
    )]
    control_plane: String,
    /// File holding the bearer token for the control plane.
    #[arg(long, env = "GRAYLANE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Admin listener: /ready, /live, /metrics, /config, /gates/self.
    #[arg(long, env = "GRAYLANE_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,
    /// Where the last good snapshot is kept, to start from when the control plane is down.
    #[arg(long, env = "GRAYLANE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("{pair:?}: expected key=value")),
        })
        .collect()
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GRAYLANE_LOG")
                .unwrap_or_else(|_| "info,h2=warn,tonic=warn,hyper=warn,tower=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = run(Args::parse()).await {
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
    let control_planes: Vec<String> = args
        .control_plane
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if control_planes.is_empty() {
        bail!("--control-plane: no URL given");
    }
    let instance_id = args.instance_id.clone().unwrap_or_else(default_instance_id);
    let routes = Arc::new(Routing::default());
    let counters = Arc::new(discovery::Counters::default());
    let admin_listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("--admin-addr {}", args.admin_addr))?;
    tracing::info!(
        service = %args.service, instance = %instance_id,
        admin_addr = %admin_listener.local_addr()?,
        "graylane-sidecar listening"
    );
    let (stop, stopped) = watch::channel(false);
    let admin = Arc::new(Admin {
        service: args.service.clone(),
        instance_id: instance_id.clone(),
        labels: args.labels.clone(),
        routes: Arc::clone(&routes),
        counters: Arc::clone(&counters),
    });
    let admin_task = tokio::spawn(admin.serve(admin_listener, stopped.clone()));
    let discovery = Discovery::new(
        discovery::Config {
            service: args.service,
            instance_id,
            labels: args.labels,
            advertise: args.advertise_addr,
            control_planes,
            token,
            cache_dir: args.cache_dir,
        },
        routes,
        counters,
    );
    let discovery_task = tokio::spawn(discovery.run(stopped));
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    let _ = discovery_task.await;
    let _ = admin_task.await;
    Ok(())
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

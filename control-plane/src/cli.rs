//! The `graylane` CLI: flags, the client, and one module per command group. Every
//! failure becomes one `CliError` line and the spec's exit code:
//! 0 ok · 1 refused (validation, conflict, missing, auth) · 2 usage or unreadable file ·
//! 3 server unreachable or unavailable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

mod client;
mod demo;
mod explain;
mod files;
mod gaps;
mod inject;
mod install;
mod output;
mod release;
mod rules;
mod status;
mod trace;

pub use self::client::Client;

/// graylane: full-link gray releases. Rules, release states and sidecar status.
#[derive(Parser, Debug)]
#[command(name = "graylane", version, propagate_version = true)]
pub struct Cli {
    /// Control-plane gRPC URL(s), comma-separated, tried in turn.
    #[arg(
        long,
        global = true,
        env = "GRAYLANE_SERVER",
        default_value = "http://127.0.0.1:15010"
    )]
    pub server: String,
    /// File holding the bearer token (the token alone).
    #[arg(long, global = true, env = "GRAYLANE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum)]
    pub output: Option<Format>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply, inspect and version the rules.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Release states (all | gray | prod) per service.
    #[command(subcommand)]
    Release(release::ReleaseCommand),
    /// Connected sidecars: instance, labels, lane, acked revision, NACK reason.
    Status,
    /// The hops of a request as a tree: service, version, lane or fallback, status,
    /// latency (from the spans sidecars export to the control plane).
    Trace {
        /// The trace id (32 hex digits: the second field of `traceparent`).
        #[arg(required_unless_present = "recent", conflicts_with = "recent")]
        trace_id: Option<String>,
        /// The N most recent traces instead.
        #[arg(long, value_name = "N")]
        recent: Option<u32>,
    },
    /// Services whose apps drop the lane: calls without tag or trace context made
    /// while serving a tagged request, with counts and an example trace.
    Gaps,
    /// Print the Kubernetes manifests of a production install, with fresh webhook
    /// certificates and tokens: `graylane install | kubectl apply -f -`.
    Install(install::InstallArgs),
    /// Print manifests with the sidecar and its init container added (offline).
    Inject(inject::InjectArgs),
    /// How the rules in force route a hypothetical request, step by step.
    Explain(explain::ExplainArgs),
    /// Start a whole mesh on loopback and walk through a gray release.
    Demo {
        /// Exit after the walkthrough instead of running until Ctrl-C.
        #[arg(long)]
        once: bool,
    },
}

/// A failure with its exit code; printed as one line.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            code: 3,
            message: message.into(),
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let message = status.message().to_string();
        match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unknown
            | Code::Cancelled => Self::unavailable(format!("server unavailable: {message}")),
            Code::Unauthenticated => Self::refused(format!("unauthenticated: {message}")),
            Code::PermissionDenied => Self::refused(format!("permission denied: {message}")),
            _ => Self::refused(message),
        }
    }
}

/// Durations on the command line: `30s`, `500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with a unit, e.g. 30s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: unit must be ms, s or m")),
    }
}

impl Cli {
    /// Runs the command; the caller prints the error and exits with its code.
    pub async fn run(self) -> Result<(), CliError> {
        let connect = client::Connect {
            servers: self.server.clone(),
            token_file: self.token_file.clone(),
        };
        match self.command {
            Command::Rules(cmd) => cmd.run(&connect, self.output).await,
            Command::Release(cmd) => cmd.run(&connect, self.output).await,
            Command::Status => status::run(&connect, self.output).await,
            Command::Inject(args) => inject::run(&args),
            Command::Install(args) => install::run(&args),
            Command::Gaps => gaps::run(&connect, self.output).await,
            Command::Explain(args) => explain::run(&connect, self.output, args).await,
            Command::Trace { trace_id, recent } => {
                trace::run(&connect, self.output, trace_id, recent).await
            }
            Command::Demo { once } => demo::run(once).await,
        }
    }
}

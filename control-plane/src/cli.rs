//! The `graylane` CLI: flags, the client, and one module per command group. Every
//! failure becomes one `CliError` line and the spec's exit code:
//! 0 ok · 1 refused (validation, conflict, missing, auth) · 2 usage or unreadable file ·
//! 3 server unreachable or unavailable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

mod client;
mod completion;
mod config;
mod demo;
pub(crate) mod explain;
mod files;
pub(crate) mod gaps;
mod inject;
mod install;
pub(crate) mod output;
mod release;
mod rollout;
mod rules;
mod status;
pub(crate) mod trace;
mod version;

pub use self::client::Client;

/// graylane: full-link gray releases. Rules, release states and sidecar status.
#[derive(Parser, Debug)]
#[command(name = "graylane", version, propagate_version = true)]
pub struct Cli {
    /// Control-plane gRPC URL(s), comma-separated, tried in turn; `host:port` means
    /// `http://host:port`. Default: the context's server, else http://127.0.0.1:15010.
    #[arg(
        long,
        global = true,
        env = "GRAYLANE_SERVER",
        value_name = "URL[,URL...]"
    )]
    pub server: Option<String>,
    /// File holding the bearer token (the token alone), for a control plane started
    /// with --token-file. Default: the context's tokenFile.
    #[arg(long, global = true, env = "GRAYLANE_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// CA certificates (PEM) that an `https://` --server must chain to; the CLI trusts
    /// no other CA and never falls back to plaintext. Default: the context's caBundle.
    #[arg(long, global = true, env = "GRAYLANE_CA_BUNDLE", value_name = "PEM")]
    pub ca_bundle: Option<PathBuf>,
    /// The namespace of the services and namespaced rules (RoutePolicy, TagPolicy,
    /// PeerPolicy) a command means, as kubectl's -n. Default: the context's namespace,
    /// else `default`; `rules get` and `status` without either list every namespace.
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE", value_parser = parse_namespace)]
    pub namespace: Option<String>,
    /// The config-file context to use for this command instead of the current one.
    #[arg(long, global = true, env = "GRAYLANE_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    /// The config file (contexts). Default: $XDG_CONFIG_HOME/graylane/config.yaml,
    /// else ~/.config/graylane/config.yaml; a missing file is an empty one.
    #[arg(long, global = true, env = "GRAYLANE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Output format (default: table; YAML for `rules get`). Refused where it would
    /// change nothing: `rules validate`, `inject`, `install`, `completion`, and `config`
    /// but for `get-contexts`.
    #[arg(short = 'o', long, global = true, value_enum)]
    pub output: Option<Format>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns, for people.
    Table,
    /// Pretty-printed JSON, for scripts.
    Json,
    /// YAML, for scripts and for `rules apply -f`.
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
    /// Progressive lane releases (LaneRollout): status, pause, resume, promote, abort.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Connected sidecars: instance, labels, lane, acked revision, NACK reason.
    Status,
    /// The hops of a request as a tree: service, version, lane or fallback, status,
    /// latency (from the spans sidecars export to the control plane).
    Trace {
        /// The trace id (32 hex digits: the second field of `traceparent`).
        #[arg(required_unless_present = "recent", conflicts_with = "recent")]
        trace_id: Option<String>,
        /// The N most recent traces instead (N ≥ 1).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
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
    /// This CLI's version, and the control plane's when it answers.
    Version,
    /// Contexts in the config file: which control plane, which token.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Print the shell completion script for SHELL.
    Completion {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: completion::Shell,
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
            Code::Unimplemented => Self::unavailable(
                "the server does not implement this call: this is not graylane-control's \
                 gRPC port, or its graylane-control is older than this CLI",
            ),
            Code::Unauthenticated => Self::refused(format!(
                "unauthenticated: {message} (give a token with --token-file PATH, \
                 GRAYLANE_TOKEN_FILE or a context's tokenFile)"
            )),
            Code::PermissionDenied => Self::refused(format!(
                "permission denied: {message} (the token file must hold an admin token)"
            )),
            _ => Self::refused(message),
        }
    }
}

/// A namespace is a DNS label: `Shop` would name no namespace, so it is refused here
/// (exit 2) instead of matching nothing.
pub(crate) fn parse_namespace(s: &str) -> Result<String, String> {
    graylane_routing::Name::new(s).map(|n| n.as_str().to_owned())
}

/// Durations on the command line, Go-style (`30s`, `1m30s`, `1.5s`, `200ms`): the one
/// duration parser, shared with the rules and the other binaries.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    graylane_routing::Duration::parse(s).map(|d| d.as_std())
}

impl Cli {
    /// Runs the command; the caller prints the error and exits with its code.
    pub async fn run(self) -> Result<(), CliError> {
        let flags = config::Flags {
            server: self.server,
            token_file: self.token_file,
            ca_bundle: self.ca_bundle,
            context: self.context,
            config: self.config,
            namespace: self.namespace,
        };
        // `-o` where it changes nothing is refused, not ignored: a script asking for
        // JSON from these would otherwise get text it cannot read.
        let ignores_output = match &self.command {
            Command::Rules(rules::RulesCommand::Validate { .. }) => Some("rules validate"),
            Command::Inject(_) => Some("inject"),
            Command::Install(_) => Some("install"),
            Command::Completion { .. } => Some("completion"),
            Command::Config(config::ConfigCommand::UseContext { .. }) => Some("config use-context"),
            Command::Config(config::ConfigCommand::SetContext(_)) => Some("config set-context"),
            Command::Config(config::ConfigCommand::CurrentContext) => {
                Some("config current-context")
            }
            _ => None,
        };
        if let (Some(command), Some(_)) = (ignores_output, self.output) {
            return Err(CliError::usage(format!(
                "-o: `graylane {command}` has one output format; leave -o out"
            )));
        }
        // Only commands that talk to the control plane read the config file's
        // contexts, so that a broken file stops none of the offline ones.
        let connect = || config::resolve(&flags);
        match self.command {
            Command::Rules(cmd @ rules::RulesCommand::Validate { .. }) => {
                cmd.run(&config::without_file(&flags), self.output).await
            }
            Command::Rules(cmd) => cmd.run(&connect()?, self.output).await,
            Command::Release(cmd) => cmd.run(&connect()?, self.output).await,
            Command::Rollout(cmd) => cmd.run(&connect()?, self.output).await,
            Command::Status => status::run(&connect()?, self.output).await,
            Command::Inject(args) => inject::run(&args),
            Command::Install(args) => install::run(&args),
            Command::Gaps => gaps::run(&connect()?, self.output).await,
            Command::Explain(args) => explain::run(&connect()?, self.output, args).await,
            Command::Trace { trace_id, recent } => {
                trace::run(&connect()?, self.output, trace_id, recent).await
            }
            Command::Demo { once } => demo::run(once).await,
            Command::Version => version::run(&connect()?, self.output).await,
            Command::Config(cmd) => cmd.run(&flags, self.output),
            Command::Completion { shell } => completion::run(shell),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// clap's own consistency checks over every subcommand (a subcommand flag that
    /// collides with a global one, such as `-n`, would panic at run time otherwise).
    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every command, flag and positional says what it is for in `--help`.
    #[test]
    fn every_command_flag_and_positional_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.get_help().is_none() && !["help", "version"].contains(&id) {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "graylane", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}

//! `graylane config get-contexts|use-context|set-context|current-context`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::super::output::{self, Table};
use super::super::{CliError, Format};
use super::{ConfigFile, Context, Flags, load, path, save, unknown};

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// The contexts in the config file; `*` marks the current one.
    GetContexts,
    /// Make NAME the current context (what commands use without --context).
    UseContext {
        /// A context in the config file.
        name: String,
    },
    /// Create the context NAME, or change the settings given of an existing one.
    SetContext(SetContextArgs),
    /// Print the current context's name (exit 1 when none is set).
    CurrentContext,
}

#[derive(Args, Debug)]
pub struct SetContextArgs {
    /// The context's name.
    name: String,
    // `server` and `token_file` share their ids with the global flags on purpose:
    // clap then keeps these instead of propagating the globals here, and the globals'
    // environment variables cannot slip into the file.
    /// Control-plane gRPC URL(s), comma-separated, as --server takes; required for a
    /// new context.
    #[arg(long, value_name = "URL[,URL...]")]
    server: Option<String>,
    /// File holding the bearer token; stored as an absolute path.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// CA bundle (PEM) an `https://` server of this context must chain to (as
    /// --ca-bundle); stored as an absolute path.
    #[arg(long, value_name = "PATH")]
    ca_bundle: Option<PathBuf>,
    /// The namespace commands mean without -n (kubectl's context namespace); shares
    /// its id with the global -n, so this is the one read here.
    #[arg(short = 'n', long, value_name = "NAMESPACE", value_parser = super::super::parse_namespace)]
    namespace: Option<String>,
}

impl ConfigCommand {
    pub(crate) fn run(self, flags: &Flags, format: Option<Format>) -> Result<(), CliError> {
        let path = path(flags.config.as_deref()).ok_or_else(|| {
            CliError::usage(
                "no config file: HOME and XDG_CONFIG_HOME are unset; give --config PATH",
            )
        })?;
        let mut file = load(&path)?;
        match self {
            Self::GetContexts => {
                get_contexts(&file, format.unwrap_or(Format::Table));
                Ok(())
            }
            Self::CurrentContext => match &file.current_context {
                Some(name) => {
                    output::text(name);
                    Ok(())
                }
                None => Err(CliError::refused(format!(
                    "no current context in {} (graylane config use-context NAME sets one)",
                    path.display()
                ))),
            },
            Self::UseContext { name } => {
                if file.find(&name).is_none() {
                    return Err(unknown(&name, &path));
                }
                file.current_context = Some(name.clone());
                save(&path, &file)?;
                output::text(&format!("switched to context {name:?}"));
                Ok(())
            }
            Self::SetContext(args) => {
                let name = args.name.clone();
                let created = set_context(&mut file, args)?;
                save(&path, &file)?;
                let verb = if created { "created" } else { "modified" };
                let hint = if file.current_context.as_deref() == Some(&name) {
                    String::new()
                } else {
                    format!(" (graylane config use-context {name} makes it current)")
                };
                output::text(&format!("context {name:?} {verb}{hint}"));
                Ok(())
            }
        }
    }
}

/// Applies `set-context`; true when it created the context.
fn set_context(file: &mut ConfigFile, args: SetContextArgs) -> Result<bool, CliError> {
    if args.name.trim().is_empty() {
        return Err(CliError::usage("set-context: the name is empty"));
    }
    if let Some(server) = &args.server {
        graylane_proto::control_plane_urls(server)
            .map_err(|e| CliError::usage(format!("--server {e}")))?;
    }
    // Stored absolute: a relative path in the file would be read relative to the file's
    // directory, not to where this command ran.
    let absolute = |p: PathBuf| {
        std::path::absolute(&p).map_err(|e| CliError::usage(format!("{}: {e}", p.display())))
    };
    let token_file = args.token_file.map(absolute).transpose()?;
    let ca_bundle = args.ca_bundle.map(absolute).transpose()?;
    if let Some(context) = file.contexts.iter_mut().find(|c| c.name == args.name) {
        if let Some(server) = args.server {
            context.server = server;
        }
        context.token_file = token_file.or(context.token_file.take());
        context.ca_bundle = ca_bundle.or(context.ca_bundle.take());
        context.namespace = args.namespace.or(context.namespace.take());
        return Ok(false);
    }
    let server = args.server.ok_or_else(|| {
        CliError::usage(format!(
            "set-context {}: a new context needs --server URL",
            args.name
        ))
    })?;
    file.contexts.push(Context {
        name: args.name,
        server,
        token_file,
        ca_bundle,
        namespace: args.namespace,
    });
    Ok(true)
}

fn get_contexts(file: &ConfigFile, format: Format) {
    let current = file.current_context.as_deref();
    let is_current = |c: &Context| Some(c.name.as_str()) == current;
    let table = || {
        let mut table = Table::new(vec!["CURRENT", "NAME", "SERVER", "TOKEN FILE"]);
        for c in &file.contexts {
            let token = c.token_file.as_ref().map(|t| t.display().to_string());
            table.row(vec![
                if is_current(c) { "*" } else { "" }.to_owned(),
                c.name.clone(),
                c.server.clone(),
                token.unwrap_or_default(),
            ]);
        }
        table
    };
    let value = || {
        let contexts: Vec<_> = file
            .contexts
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "current": is_current(c),
                    "server": c.server,
                    "tokenFile": c.token_file,
                    "caBundle": c.ca_bundle,
                    "namespace": c.namespace,
                })
            })
            .collect();
        json!({ "currentContext": current, "contexts": contexts })
    };
    output::emit(format, table, value);
}

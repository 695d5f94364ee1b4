//! The CLI's config file, as kubectl users expect: named contexts, each saying how to
//! reach one control plane, and the current one. [`resolve`] is the one place that
//! decides which server and token a command uses; `graylane config ...` edits the file.
//!
//! ```yaml
//! # ~/.config/graylane/config.yaml ($XDG_CONFIG_HOME, --config or GRAYLANE_CONFIG)
//! currentContext: prod
//! contexts:
//!   - name: prod
//!     server: http://cp-0:15010,http://cp-1:15010
//!     tokenFile: /home/me/.config/graylane/prod.token
//!     caBundle: /etc/graylane/ca.pem    # what an https:// server must chain to
//!     namespace: shop                   # what commands mean without -n
//! ```

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::CliError;
use super::client::Connect;

mod command;

pub(crate) use self::command::ConfigCommand;

/// Where a command goes when neither a flag, its environment variable nor a context
/// names a server.
const DEFAULT_SERVER: &str = "http://127.0.0.1:15010";

/// The global flags that choose a control plane, each already merged with its
/// environment variable by clap (the flag wins).
#[derive(Debug)]
pub(crate) struct Flags {
    pub(crate) server: Option<String>,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) ca_bundle: Option<PathBuf>,
    pub(crate) context: Option<String>,
    pub(crate) config: Option<PathBuf>,
    /// `-n`, already checked to be a DNS label.
    pub(crate) namespace: Option<String>,
}

/// The file as written; read by [`decode`], which names the field at fault.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    current_context: Option<String>,
    contexts: Vec<Context>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Context {
    name: String,
    /// One URL or a comma-separated list, exactly as `--server` takes.
    server: String,
    /// Relative paths are relative to the config file's directory, as in kubectl.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_file: Option<PathBuf>,
    /// The CA certificates an `https://` server must chain to (see `--ca-bundle`).
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_bundle: Option<PathBuf>,
    /// The namespace commands mean without `-n` (kubectl's context namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
}

/// Decides which control plane a command talks to and with which token. Each setting
/// separately, as kubectl: the flag, else its environment variable, else the context
/// (`--context`/`GRAYLANE_CONTEXT`, else the file's `currentContext`), else the default
/// server and no token.
///
/// Errors: an unknown `--context` is refused (1); an unreadable or malformed file, or a
/// `currentContext` naming no context, is a usage error (2) naming the file and field.
pub(crate) fn resolve(flags: &Flags) -> Result<Connect, CliError> {
    // Both settings given: the file cannot change anything, so a broken one does not
    // get in the way.
    if flags.context.is_none() && flags.server.is_some() && flags.token_file.is_some() {
        return Ok(without_file(flags));
    }
    let Some(path) = path(flags.config.as_deref()) else {
        return match &flags.context {
            Some(name) => Err(CliError::refused(format!(
                "--context {name:?}: there is no config file (HOME and XDG_CONFIG_HOME are unset)"
            ))),
            None => Ok(without_file(flags)),
        };
    };
    let file = load(&path)?;
    let context = match (&flags.context, &file.current_context) {
        (Some(name), _) => Some(file.find(name).ok_or_else(|| unknown(name, &path))?),
        (None, Some(name)) => Some(file.find(name).ok_or_else(|| {
            CliError::usage(format!(
                "{}: currentContext: no context named {name:?} \
                 (graylane config use-context NAME picks another)",
                path.display()
            ))
        })?),
        (None, None) => None,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    // A context's token goes only to that context's server: `--server X` (or
    // GRAYLANE_SERVER) with the current context must not hand its credential to X.
    // Naming the context with --context says the pairing is meant.
    let token_context = context.filter(|_| flags.server.is_none() || flags.context.is_some());
    Ok(Connect {
        servers: flags
            .server
            .clone()
            .or_else(|| context.map(|c| c.server.clone()))
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned()),
        token_file: flags
            .token_file
            .clone()
            .or_else(|| token_context.and_then(|c| c.token_file.as_ref().map(|t| dir.join(t)))),
        ca_bundle: flags
            .ca_bundle
            .clone()
            .or_else(|| context.and_then(|c| c.ca_bundle.as_ref().map(|t| dir.join(t)))),
        namespace: flags.namespace.clone(),
        context_namespace: context.and_then(|c| c.namespace.clone()),
    })
}

/// The flags (and their environment variables) alone, for commands that need no
/// server, so that a broken config file does not stop them.
pub(crate) fn without_file(flags: &Flags) -> Connect {
    Connect {
        servers: flags
            .server
            .clone()
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned()),
        token_file: flags.token_file.clone(),
        ca_bundle: flags.ca_bundle.clone(),
        namespace: flags.namespace.clone(),
        context_namespace: None,
    }
}

/// `--config`/`GRAYLANE_CONFIG`, else `$XDG_CONFIG_HOME/graylane/config.yaml`, else
/// `~/.config/graylane/config.yaml`; `None` without any of them.
fn path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_owned());
    }
    // The XDG base directory spec: a relative XDG_CONFIG_HOME is invalid, ignore it.
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("graylane").join("config.yaml"))
}

fn unknown(name: &str, path: &Path) -> CliError {
    CliError::refused(format!(
        "no context named {name:?} in {} (graylane config get-contexts lists them)",
        path.display()
    ))
}

/// Reads the file; a missing (or empty) file is an empty config, not an error.
fn load(path: &Path) -> Result<ConfigFile, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        Err(e) => return Err(CliError::usage(format!("{}: {e}", path.display()))),
    };
    // One line, as every CLI error: the location names the spot in the file.
    let value: Value = serde_saphyr::from_str(&text).map_err(|e| {
        CliError::usage(format!(
            "{}: not YAML: {}",
            path.display(),
            e.without_snippet()
        ))
    })?;
    decode(value).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))
}

/// The file from its YAML. By hand rather than with serde's derive: serde's type errors
/// ("expected a string") do not say which field, and the user must find it.
fn decode(value: Value) -> Result<ConfigFile, String> {
    let mut file = ConfigFile::default();
    let top = match value {
        Value::Null => return Ok(file),
        Value::Object(top) => top,
        _ => return Err("expected a mapping with currentContext and contexts".into()),
    };
    for (key, value) in top {
        match key.as_str() {
            "currentContext" => file.current_context = optional(value, "currentContext")?,
            "contexts" => {
                let items = match value {
                    Value::Null => Vec::new(),
                    Value::Array(items) => items,
                    _ => return Err("contexts: expected a list of contexts".into()),
                };
                for (i, item) in items.into_iter().enumerate() {
                    file.contexts.push(decode_context(item, i)?);
                }
            }
            _ => {
                return Err(format!(
                    "{key}: unknown field (expected currentContext, contexts)"
                ));
            }
        }
    }
    file.check()?;
    Ok(file)
}

fn decode_context(value: Value, i: usize) -> Result<Context, String> {
    let at = |field: &str| format!("contexts[{i}].{field}");
    let Value::Object(fields) = value else {
        return Err(format!(
            "contexts[{i}]: expected a mapping with name, server, tokenFile, caBundle, \
             namespace"
        ));
    };
    let (mut name, mut server, mut token_file, mut ca_bundle) = (None, None, None, None);
    let mut namespace = None;
    for (key, value) in fields {
        let slot = match key.as_str() {
            "name" => &mut name,
            "server" => &mut server,
            "tokenFile" => &mut token_file,
            "caBundle" => &mut ca_bundle,
            "namespace" => &mut namespace,
            _ => {
                return Err(format!(
                    "{}: unknown field (expected name, server, tokenFile, caBundle, namespace)",
                    at(&key)
                ));
            }
        };
        *slot = optional(value, &at(&key))?;
    }
    // Checked here, so a typo names the file's field rather than failing every call.
    if let Some(ns) = &namespace {
        graylane_routing::Name::new(ns.as_str())
            .map_err(|e| format!("{}: {e}", at("namespace")))?;
    }
    let required =
        |v: Option<String>, field: &str| v.ok_or_else(|| format!("{}: missing", at(field)));
    Ok(Context {
        name: required(name, "name")?,
        server: required(server, "server")?,
        token_file: token_file.map(PathBuf::from),
        ca_bundle: ca_bundle.map(PathBuf::from),
        namespace,
    })
}

/// A string field; `null` (or `~`) is the same as leaving it out.
fn optional(value: Value, at: &str) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        // YAML reads `yes`, `on`, `y` or `15010` as something else than text.
        Value::Bool(_) | Value::Number(_) => {
            Err(format!("{at}: expected a string, not {value} (quote it)"))
        }
        other => Err(format!("{at}: expected a string, not {other}")),
    }
}

/// Replaces the file atomically: a reader sees the old file or the new one, never half
/// of one, and the token paths in it are only ever readable by the user (0600).
fn save(path: &Path, file: &ConfigFile) -> Result<(), CliError> {
    let failed = |e: &dyn std::fmt::Display| CliError::usage(format!("{}: {e}", path.display()));
    let text = serde_saphyr::to_string(file).map_err(|e| failed(&e))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| failed(&e))?;
    let name = path
        .file_name()
        .map_or("config".into(), |n| n.to_string_lossy());
    // In the same directory, so that the rename is atomic (same file system).
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = write_new(&temp, &text).and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = written {
        // Best effort: the error that matters is the one above.
        let _ = std::fs::remove_file(&temp);
        return Err(failed(&e));
    }
    // The rename is durable once the directory is; failing that is not worth an error.
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

impl ConfigFile {
    fn find(&self, name: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.name == name)
    }

    /// What serde cannot say: names present and unique, servers not empty.
    fn check(&self) -> Result<(), String> {
        for (i, context) in self.contexts.iter().enumerate() {
            if context.name.trim().is_empty() {
                return Err(format!("contexts[{i}].name: empty"));
            }
            if self.contexts[..i].iter().any(|c| c.name == context.name) {
                return Err(format!(
                    "contexts[{i}].name: {:?} is defined twice",
                    context.name
                ));
            }
            if let Err(e) = graylane_proto::control_plane_urls(&context.server) {
                return Err(format!("contexts[{i}].server ({:?}): {e}", context.name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, String> {
        decode(serde_saphyr::from_str(text).map_err(|e| e.to_string())?)
    }

    #[test]
    fn unknown_field_is_named() {
        let e = parse("contexts:\n  - name: a\n    server: x\n    tokenfile: t\n").unwrap_err();
        assert!(e.starts_with("contexts[0].tokenfile: unknown field"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = parse("contexts:\n  - {name: a, server: [x, y]}\n").unwrap_err();
        assert!(
            e.starts_with("contexts[0].server: expected a string"),
            "{e}"
        );
        let e = parse("contexts:\n  - {name: a}\n").unwrap_err();
        assert_eq!(e, "contexts[0].server: missing");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let e =
            parse("contexts:\n  - {name: a, server: b}\n  - {name: a, server: c}\n").unwrap_err();
        assert!(e.contains("contexts[1].name"), "{e}");
    }

    #[test]
    fn round_trips_in_camel_case() {
        let text = "currentContext: a\ncontexts:\n  - name: a\n    server: x,y\n    \
                    tokenFile: /t\n    caBundle: /ca.pem\n";
        let file = parse(text).unwrap();
        let again = serde_saphyr::to_string(&file).unwrap();
        assert!(again.contains("currentContext: a"), "{again}");
        assert!(again.contains("tokenFile: /t"), "{again}");
        assert_eq!(parse(&again).unwrap().contexts[0].server, "x,y");
    }
}

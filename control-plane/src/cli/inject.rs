//! `graylane inject -f FILE`: the manifests with the sidecar and its init container
//! added (offline, the same function as the admission webhook). Every document is
//! parsed (YAML, or JSON, which is YAML too); Pods and workloads with a pod template,
//! also as items of a `kind: List`, are injected and printed re-serialized. Every other
//! document, and a workload that [`inject::decide`] skips, is printed as it was
//! written, comments included. A document that is not YAML fails the whole run: a
//! manifest silently passed through would start pods without their sidecar.

use std::path::PathBuf;

use serde_json::Value;

use super::{CliError, output};
use crate::inject::{self, Config, Credential, InjectError, Outcome, Skip};

#[derive(clap::Args, Debug)]
pub struct InjectArgs {
    /// Manifests (multi-document YAML, or JSON); `-` reads standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// The sidecar image (a pod annotation graylane.io/sidecar-image wins).
    #[arg(long)]
    pub image: Option<String>,
    /// The control plane URL, as sidecars reach it.
    #[arg(long)]
    pub control_plane: Option<String>,
    /// The Secret with the sidecar token (key `token`) and the mesh CA certificate
    /// (key `ca.pem`); `none` for neither.
    #[arg(long, default_value = "graylane-sidecar-token")]
    pub token_secret: String,
}

/// Where a document is, for messages: `app.yaml: document 2`.
struct Origin<'a> {
    file: &'a str,
    n: usize,
}

pub(crate) fn run(args: &InjectArgs) -> Result<(), CliError> {
    let defaults = Config::default();
    let config = Config {
        image: args.image.clone().unwrap_or(defaults.image),
        control_plane: args.control_plane.clone().unwrap_or(defaults.control_plane),
        credential: match args.token_secret.as_str() {
            "none" => Credential::None,
            name => Credential::Secret(name.to_string()),
        },
    };
    config
        .check("--image", "--control-plane")
        .map_err(CliError::usage)?;
    let mut out = String::new();
    for path in &args.files {
        let name = path.display().to_string();
        let text = if name == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(path)
        }
        .map_err(|e| CliError::usage(format!("{name}: {e}")))?;
        for (n, doc) in documents(&text).into_iter().enumerate() {
            if !out.is_empty() {
                out.push_str("---\n");
            }
            let origin = Origin {
                file: &name,
                n: n + 1,
            };
            out.push_str(&inject_document(&origin, doc, &config)?);
        }
    }
    output::text(&out);
    Ok(())
}

/// One document: injected and re-serialized when it holds a pod to inject, else as it
/// was written.
fn inject_document(origin: &Origin<'_>, doc: &str, config: &Config) -> Result<String, CliError> {
    if is_empty(doc) {
        return Ok(with_newline(doc));
    }
    let mut object: Value = serde_saphyr::from_str(doc).map_err(|e| {
        CliError::refused(format!(
            "{}: document {}: not YAML: {e}",
            origin.file, origin.n
        ))
    })?;
    if !inject_value(origin, &mut object, config)? {
        return Ok(with_newline(doc));
    }
    // JSON in, JSON out; YAML (and JSON-in-YAML streams) stay YAML.
    let serialized = if doc.trim_start().starts_with('{') {
        serde_json::to_string_pretty(&object).map_err(|e| e.to_string())
    } else {
        serde_saphyr::to_string(&object).map_err(|e| e.to_string())
    };
    serialized
        .map(|s| with_newline(&s))
        .map_err(|e| CliError::refused(format!("{}: document {}: {e}", origin.file, origin.n)))
}

/// Injects `object`, or every item of a `kind: List`; true when anything changed.
/// Workloads left alone are named on standard error, with the reason.
fn inject_value(
    origin: &Origin<'_>,
    object: &mut Value,
    config: &Config,
) -> Result<bool, CliError> {
    if object["kind"] == "List"
        && let Some(items) = object.get_mut("items").and_then(Value::as_array_mut)
    {
        let mut changed = false;
        for item in items {
            changed |= inject_value(origin, item, config)?;
        }
        return Ok(changed);
    }
    let id = format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    );
    let failed = |e: InjectError| {
        CliError::refused(format!(
            "{}: document {} ({id}): {e}",
            origin.file, origin.n
        ))
    };
    match inject::inject_object(object, None, config).map_err(failed)? {
        Outcome::Injected => Ok(true),
        Outcome::Skipped(Skip::NotAWorkload) => Ok(false),
        Outcome::Skipped(why) => {
            eprintln!(
                "{}: document {} ({id}): not injected: {why}",
                origin.file, origin.n
            );
            Ok(false)
        }
    }
}

/// Blank, or only comments and document markers: nothing to parse.
fn is_empty(doc: &str) -> bool {
    doc.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "..." || l.starts_with("%"))
}

fn with_newline(doc: &str) -> String {
    let mut s = doc.to_string();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// The documents of a multi-document YAML text, split at `---` marker lines (YAML
/// 1.2 §9.1: `---` at the start of a line, then a space or the line's end); what
/// follows the marker on its line belongs to the next document. Empty ones (e.g.
/// before a leading `---`) are dropped.
fn documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("---")
            && (rest.is_empty() || rest.starts_with(char::is_whitespace))
        {
            docs.push(&text[start..offset]);
            start = if rest.trim().is_empty() {
                offset + line.len()
            } else {
                offset + 3
            };
        }
        offset += line.len();
    }
    docs.push(&text[start..]);
    docs.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_markers_only() {
        let text = "---\na: 1\n--- # two\nb: 2\n---\n---x: 3\n--- {c: 4}\n";
        assert_eq!(
            documents(text),
            ["a: 1\n", " # two\nb: 2\n", "---x: 3\n", " {c: 4}\n"]
        );
    }

    #[test]
    fn comment_only_documents_are_empty() {
        assert!(is_empty("# nothing here\n\n"));
        assert!(!is_empty("# a pod\nkind: Pod\n"));
    }
}

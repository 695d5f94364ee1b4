//! `graylane inject -f FILE`: the manifests with the sidecar and its init container
//! added (offline, the same function as the admission webhook). Pods and workloads
//! with a pod template are injected; every other document is printed as it was.

use std::path::PathBuf;

use serde_json::Value;

use super::{CliError, output};
use crate::inject::{self, Config, pod_paths};

#[derive(clap::Args, Debug)]
pub struct InjectArgs {
    /// Manifests (multi-document YAML); `-` reads standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// The sidecar image (a pod annotation graylane.io/sidecar-image wins).
    #[arg(long)]
    pub image: Option<String>,
    /// The control plane URL, as sidecars reach it.
    #[arg(long)]
    pub control_plane: Option<String>,
    /// The Secret with the sidecar token (key `token`); `none` for no token.
    #[arg(long, default_value = "graylane-sidecar-token")]
    pub token_secret: String,
}

pub(crate) fn run(args: &InjectArgs) -> Result<(), CliError> {
    let defaults = Config::default();
    let config = Config {
        image: args.image.clone().unwrap_or(defaults.image),
        control_plane: args.control_plane.clone().unwrap_or(defaults.control_plane),
        token_secret: (args.token_secret != "none").then(|| args.token_secret.clone()),
    };
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
            out.push_str(&inject_document(&name, n + 1, doc, &config)?);
        }
    }
    output::text(&out);
    Ok(())
}

/// One document: injected and re-serialized when it holds a pod, else as it was.
fn inject_document(file: &str, n: usize, doc: &str, config: &Config) -> Result<String, CliError> {
    let kind = doc
        .lines()
        .find_map(|l| l.strip_prefix("kind:"))
        .map(|k| k.trim().trim_matches('"').to_string());
    if kind.as_deref().and_then(pod_paths).is_none() {
        return Ok(with_newline(doc));
    }
    let mut object: Value = serde_saphyr::from_str(doc)
        .map_err(|e| CliError::refused(format!("{file}: document {n}: {e}")))?;
    let id = format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    );
    match inject::inject_object(&mut object, config) {
        Ok(inject::Outcome::Unchanged) => Ok(with_newline(doc)),
        Ok(inject::Outcome::Injected) => serde_saphyr::to_string(&object)
            .map_err(|e| CliError::refused(format!("{file}: document {n} ({id}): {e}"))),
        Err(e) => Err(CliError::refused(format!(
            "{file}: document {n} ({id}): {e}"
        ))),
    }
}

fn with_newline(doc: &str) -> String {
    let mut s = doc.to_string();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// The documents of a multi-document YAML text, split at `---` lines; empty ones
/// (e.g. before a leading `---`) are dropped.
fn documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with("---") {
            docs.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(&text[start..]);
    docs.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

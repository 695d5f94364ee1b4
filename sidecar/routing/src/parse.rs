//! Reading rule files: multi-document YAML to checked resources, with every error
//! located by file, document and field path.

use serde_json::Value;

use crate::Resource;
use crate::error::{Origin, ValidationError};

pub(crate) mod document;
mod json;
mod namespace;
mod recover;
mod split;
mod value_de;

pub use self::json::json_value;
pub use self::namespace::{files_with_namespace, with_namespace};

/// Largest document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Most resources in one rule set (and so in one file).
pub const MAX_DOCUMENTS: usize = 10_000;

/// Parses one file of `---`-separated documents; per-document checks only (see
/// `RuleSet::from_files` for duplicates and set-level checks).
///
/// `Ok` when every document is valid, with each resource's origin. Otherwise every
/// error found, in document order: each document is checked even after a bad one, and
/// a document reports all its errors — of shape, of values and semantic — except
/// those that only follow from another one (a required field missing because its
/// value was unreadable, "weights sum to 90" when a weight was unreadable). Empty documents (only blanks, comments or
/// `null`) are skipped but keep their number. A document over [`MAX_DOCUMENT_BYTES`] is
/// rejected without being read; more than [`MAX_DOCUMENTS`] non-empty documents stop
/// the reading with one error about the file.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<(Resource, Origin)>, Vec<ValidationError>> {
    let (resources, errors) = parse_all(file, text);
    if errors.is_empty() {
        Ok(resources)
    } else {
        Err(errors)
    }
}

/// [`parse_file`], keeping the valid documents of a file that also has bad ones.
pub(crate) fn parse_all(file: &str, text: &str) -> (Vec<(Resource, Origin)>, Vec<ValidationError>) {
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    let mut documents = 0;
    for chunk in split::split(text) {
        let error = |path: String, reason: String, label: (Option<String>, Option<String>)| {
            ValidationError {
                file: file.to_owned(),
                document: Some(chunk.index),
                kind: label.0,
                name: label.1,
                path,
                reason,
            }
        };
        if chunk.text.len() > MAX_DOCUMENT_BYTES {
            let reason = format!(
                "the document is {} bytes, over the 1 MiB limit",
                chunk.text.len()
            );
            errors.push(error(String::new(), reason, (None, None)));
            continue;
        }
        let value = match read_yaml(chunk.text, chunk.first_line) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(reason) => {
                errors.push(error(String::new(), reason, (None, None)));
                continue;
            }
        };
        documents += 1;
        if documents > MAX_DOCUMENTS {
            errors.push(ValidationError {
                file: file.to_owned(),
                document: None,
                kind: None,
                name: None,
                path: String::new(),
                reason: format!(
                    "more than {MAX_DOCUMENTS} documents; split the rules or remove some"
                ),
            });
            break;
        }
        match document::resource_from_value(&value) {
            Ok(r) => resources.push((
                r,
                Origin {
                    file: file.to_owned(),
                    document: chunk.index,
                },
            )),
            Err(found) => {
                let label = document::readable_label(&value);
                errors.extend(found.into_iter().map(|(p, r)| error(p, r, label.clone())));
            }
        }
    }
    (resources, errors)
}

/// One document to a generic value. YAML 1.2 booleans only (`yes`/`no`/`on` stay
/// strings: `on` is a field of `retries`) and numbers with leading zeros stay strings
/// (`version: 010`). Error lines are counted from the start of the file.
fn read_yaml(text: &str, first_line: usize) -> Result<Value, String> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| {
        // The library's advice on its own options means nothing to a rule's author.
        let mut msg = e
            .to_string()
            .replace(", set DuplicateKeyPolicy in Options if acceptable", "");
        if let Some(loc) = e.location() {
            let suffix = format!(" at line {}, column {}", loc.line(), loc.column());
            if let Some(stripped) = msg.strip_suffix(&suffix) {
                let line = usize::try_from(loc.line()).unwrap_or(0) + first_line - 1;
                msg = format!("{stripped} at line {line}, column {}", loc.column());
            }
        }
        format!("invalid YAML: {}", msg.lines().next().unwrap_or_default())
    })
}

#[cfg(test)]
mod tests;

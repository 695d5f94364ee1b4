//! `-n NAMESPACE` on an apply, kubectl's rule: a namespaced document without
//! `metadata.namespace` gets it; one that names another namespace is refused.

use serde_json::Value;

use super::split::split;
use super::{document, read_yaml};
use crate::error::ValidationError;
use crate::model::Kind;
use crate::path::quote;

/// `text` with `namespace` given to every RoutePolicy, TagPolicy and PeerPolicy
/// document that has no `metadata.namespace`. Lanes are left alone (they are
/// mesh-wide); documents that do not read as a mapping with a known kind and a
/// `metadata` mapping are kept byte for byte, for the parser to report. A rewritten
/// document loses its comments; the others keep theirs, and every document keeps its
/// index (`document N` in errors).
///
/// Errors, with `refuse_others` (an explicit `-n`): every namespaced document whose
/// `metadata.namespace` is not `namespace`, naming the file, document and field.
/// Without it (a default namespace), such a document keeps its own.
pub fn with_namespace(
    file: &str,
    text: &str,
    namespace: &str,
    refuse_others: bool,
) -> Result<String, Vec<ValidationError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for chunk in split(text) {
        let Ok(Value::Object(mut doc)) = read_yaml(chunk.text, chunk.first_line) else {
            out.push_str(chunk.text);
            continue;
        };
        let namespaced = doc
            .get("kind")
            .and_then(Value::as_str)
            .and_then(|k| Kind::ALL.into_iter().find(|x| x.as_str() == k))
            .is_some_and(|k| k.is_namespaced());
        let label = document::readable_label(&Value::Object(doc.clone()));
        let Some(Value::Object(metadata)) = doc.get_mut("metadata").filter(|_| namespaced) else {
            out.push_str(chunk.text);
            continue;
        };
        match metadata.get("namespace") {
            Some(Value::String(given)) if given == namespace => out.push_str(chunk.text),
            Some(_) if !refuse_others => out.push_str(chunk.text),
            Some(given) => {
                let given = given.as_str().map_or_else(|| given.to_string(), quote);
                errors.push(ValidationError {
                    file: file.to_owned(),
                    document: Some(chunk.index),
                    kind: label.0,
                    name: label.1,
                    path: "metadata.namespace".to_owned(),
                    reason: format!(
                        "the namespace {given} does not match the namespace {} given for \
                         this apply (-n, ?namespace=); leave it out or make them agree",
                        quote(namespace)
                    ),
                });
                out.push_str(chunk.text);
            }
            None => {
                metadata.insert("namespace".to_owned(), Value::String(namespace.to_owned()));
                let yaml = serde_saphyr::to_string(&Value::Object(doc)).unwrap_or_default();
                out.push_str("---\n");
                out.push_str(&yaml);
                if !yaml.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// [`with_namespace`] over every file of an apply: all of them rewritten, or the
/// errors of all of them.
pub fn files_with_namespace(
    files: Vec<(String, String)>,
    namespace: &str,
    refuse_others: bool,
) -> Result<Vec<(String, String)>, Vec<ValidationError>> {
    let mut errors = Vec::new();
    let mut out = Vec::with_capacity(files.len());
    for (name, text) in files {
        match with_namespace(&name, &text, namespace, refuse_others) {
            Ok(text) => out.push((name, text)),
            Err(mut found) => errors.append(&mut found),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RuleSet;

    const DOCS: &str = "# rules\n\
        apiVersion: graylane.io/v1\nkind: Lane\nmetadata: {name: gray}\n\
        spec: {tag: gray, selector: {version: v2}}\n\
        ---\n\
        apiVersion: graylane.io/v1\nkind: RoutePolicy\nmetadata: {name: orders}\n\
        spec: {service: orders, release: gray}\n";

    #[test]
    fn documents_without_a_namespace_get_it_and_lanes_stay_mesh_wide() {
        let text = with_namespace("r.yaml", DOCS, "shop", true).unwrap();
        let set = RuleSet::from_yaml("r.yaml", &text).unwrap();
        let lane = set.get(Kind::Lane, "default", "gray").unwrap();
        assert_eq!(lane.metadata().namespace, None);
        let policy = set.get(Kind::RoutePolicy, "shop", "orders").unwrap();
        assert_eq!(policy.namespace(), "shop");
        assert_eq!(set.release_of("shop", "orders"), crate::Release::Gray);
        assert_eq!(set.release_of("default", "orders"), crate::Release::All);
    }

    #[test]
    fn another_namespace_than_the_one_given_is_refused_with_its_place() {
        let text = DOCS.replace("{name: orders}", "{name: orders, namespace: staging}");
        assert_eq!(
            with_namespace("r.yaml", &text, "shop", false).unwrap(),
            text
        );
        let errors = with_namespace("r.yaml", &text, "shop", true).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "r.yaml: document 2 (RoutePolicy/orders): metadata.namespace: the namespace \
             \"staging\" does not match the namespace \"shop\" given for this apply (-n, ?namespace=); \
             leave it out or make them agree"
        );
        assert!(with_namespace("r.yaml", &text, "staging", true).is_ok());
    }

    #[test]
    fn unreadable_documents_are_kept_for_the_parser_to_report() {
        let text = "kind: [\n---\napiVersion: graylane.io/v1\n";
        assert_eq!(with_namespace("r.yaml", text, "shop", true).unwrap(), text);
    }
}

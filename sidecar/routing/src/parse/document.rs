//! One document, already read into a generic value, to a typed resource.

use serde_json::{Map, Value};

use super::recover::Edits;
use crate::Resource;
use crate::model::{
    API_VERSION, Kind, Lane, LaneRollout, Metadata, Name, PeerPolicy, RoutePolicy, TagPolicy,
};
use crate::path::{Checker, quote};

const TOP_FIELDS: [&str; 4] = ["apiVersion", "kind", "metadata", "spec"];
/// Longest `kind` or `metadata.name` shown in an error label.
const MAX_LABEL: usize = 253;

/// `kind` and `metadata.name` as written, when they are short printable strings;
/// read even when the rest of the document is bad, to label its errors.
pub(crate) fn readable_label(v: &Value) -> (Option<String>, Option<String>) {
    let readable = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= MAX_LABEL && !s.chars().any(char::is_control))
            .map(str::to_owned)
    };
    let kind = readable(v.get("kind"));
    let name = readable(v.get("metadata").and_then(|m| m.get("name")));
    (kind, name)
}

/// The resource in `v`, checked on its own (shape, values, and the checks within one
/// document); or every (path, reason) found. Set-level checks are not done here.
///
/// Errors come in this order: the envelope (unknown top-level fields, `apiVersion`,
/// `kind`), then those of reading `metadata` and `spec` (mapping keys in sorted order,
/// list elements by index), then the semantic ones in check order. A bad part is
/// dropped and the rest read on, so one document reports all its independent errors;
/// see `recover` for which errors count as following from a dropped part.
pub(crate) fn resource_from_value(v: &Value) -> Result<Resource, Vec<(String, String)>> {
    let Value::Object(doc) = v else {
        return Err(vec![(
            String::new(),
            "a document must be a mapping with apiVersion, kind, metadata and spec".to_owned(),
        )]);
    };
    let mut errors = Vec::new();
    for key in doc.keys().filter(|k| !TOP_FIELDS.contains(&k.as_str())) {
        errors.push((
            crate::path::join_key("", key),
            format!("unknown field (expected one of: {})", TOP_FIELDS.join(", ")),
        ));
    }
    check_api_version(doc, &mut errors);
    let kind = read_kind(doc, &mut errors);
    let mut edits = Edits::new(v);
    let metadata = match doc.get("metadata") {
        None => {
            errors.push(("metadata".into(), "missing required field".into()));
            None
        }
        Some(m) => edits.read::<Metadata>(m, "metadata", &mut errors),
    };
    let Some(spec) = doc.get("spec") else {
        errors.push(("spec".into(), "missing required field".into()));
        return Err(errors);
    };
    let Some(kind) = kind else {
        return Err(errors);
    };
    // Read the spec even when the metadata is bad, so its errors are reported too.
    let metadata = metadata.unwrap_or_else(|| {
        edits.replaced("metadata");
        placeholder_metadata()
    });
    let resource = match kind {
        Kind::Lane => edits
            .read(spec, "spec", &mut errors)
            .map(|spec| Resource::Lane(Lane { metadata, spec })),
        Kind::RoutePolicy => edits
            .read(spec, "spec", &mut errors)
            .map(|spec| Resource::RoutePolicy(RoutePolicy { metadata, spec })),
        Kind::TagPolicy => edits
            .read(spec, "spec", &mut errors)
            .map(|spec| Resource::TagPolicy(TagPolicy { metadata, spec })),
        Kind::PeerPolicy => edits
            .read(spec, "spec", &mut errors)
            .map(|spec| Resource::PeerPolicy(PeerPolicy { metadata, spec })),
        Kind::LaneRollout => edits
            .read(spec, "spec", &mut errors)
            .map(|spec| Resource::LaneRollout(LaneRollout { metadata, spec })),
    };
    let Some(mut resource) = resource else {
        return Err(errors);
    };
    let mut c = Checker::new();
    resource.check(&mut c);
    edits.add_independent(c.into_found(), &mut errors);
    if errors.is_empty() {
        resource.normalize_namespace();
        Ok(resource)
    } else {
        Err(errors)
    }
}

/// Only used to run the spec checks of a document whose metadata is already reported
/// as missing or unreadable; that resource is never returned.
fn placeholder_metadata() -> Metadata {
    Metadata::named(Name::placeholder())
}

fn check_api_version(doc: &Map<String, Value>, errors: &mut Vec<(String, String)>) {
    match doc.get("apiVersion") {
        None => errors.push(("apiVersion".into(), "missing required field".into())),
        Some(Value::String(s)) if s == API_VERSION => {}
        Some(other) => errors.push((
            "apiVersion".into(),
            format!("{} is not supported, use {API_VERSION}", show(other)),
        )),
    }
}

fn read_kind(doc: &Map<String, Value>, errors: &mut Vec<(String, String)>) -> Option<Kind> {
    let known = |s: &str| Kind::ALL.into_iter().find(|k| k.as_str() == s);
    match doc.get("kind") {
        None => errors.push(("kind".into(), "missing required field".into())),
        Some(Value::String(s)) => match known(s) {
            Some(k) => return Some(k),
            None => errors.push((
                "kind".into(),
                format!(
                    "unknown kind {}, expected one of: {}",
                    quote(s),
                    Kind::NAMES
                ),
            )),
        },
        Some(other) => errors.push((
            "kind".into(),
            format!("expected one of: {}, found {}", Kind::NAMES, show(other)),
        )),
    }
    None
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Null => "null".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
        other => other.to_string(),
    }
}

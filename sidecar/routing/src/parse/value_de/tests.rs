use serde::Deserialize;
use serde_json::json;

use super::*;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct Outer {
    items: Vec<Inner>,
    #[serde(default)]
    key: Option<Key>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Inner {
    name: String,
    weight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
enum Key {
    Header(String),
    Cookie(String),
}

fn err(v: serde_json::Value) -> (String, String) {
    from_value::<Outer>(&v, "spec").unwrap_err().into_parts()
}

#[test]
fn unknown_field_names_its_full_path() {
    let (path, reason) = err(
        json!({"items": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1, "lables": 1}]}),
    );
    assert_eq!(path, "spec.items[1].lables");
    assert!(reason.starts_with("unknown field"), "{reason}");
}

#[test]
fn missing_field_names_the_field() {
    let (path, reason) = err(json!({"items": [{"name": "a"}]}));
    assert_eq!(path, "spec.items[0].weight");
    assert_eq!(reason, "missing required field");
    assert_eq!(err(json!({})).0, "spec.items");
}

#[test]
fn type_errors_name_the_value() {
    let (path, reason) = err(json!({"items": [{"name": 5, "weight": 1}]}));
    assert_eq!(path, "spec.items[0].name");
    assert_eq!(reason, "expected a string, found integer `5` (quote it)");
    let (path, reason) = err(json!({"items": [{"name": "a", "weight": -1}]}));
    assert_eq!(path, "spec.items[0].weight");
    assert!(reason.contains("-1"), "{reason}");
}

#[test]
fn structs_must_be_mappings() {
    let (path, reason) = err(json!({"items": [["a", 1]]}));
    assert_eq!(path, "spec.items[0]");
    assert!(reason.contains("found a list"), "{reason}");
}

#[test]
fn enums_from_single_key_mappings() {
    let v = json!({"items": [], "key": {"cookie": "uid"}});
    assert!(matches!(
        from_value::<Outer>(&v, "").unwrap().key,
        Some(Key::Cookie(_))
    ));
    let (path, reason) = err(json!({"items": [], "key": {"heder": "x"}}));
    assert_eq!(path, "spec.key.heder");
    assert!(
        reason.contains("expected one of: header, cookie"),
        "{reason}"
    );
    let (path, _) = err(json!({"items": [], "key": {"header": "x", "cookie": "y"}}));
    assert_eq!(path, "spec.key");
}

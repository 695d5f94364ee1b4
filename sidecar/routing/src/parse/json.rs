//! JSON input (the API's `{"resources": [...]}`, the CLI's `List`) read as strictly as
//! YAML input: a key given twice in one object is an error. serde_json keeps the last
//! one, so `{"name": "blue", "name": "green"}` would create `green` unnoticed, while
//! the same text as YAML is refused.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// `text` as a JSON value, refusing duplicate keys at any depth; serde_json's error
/// (with line and column) otherwise.
pub fn json_value(text: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Strict>(text).map(|s| s.0)
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON has no NaN or infinity, so this is never Null in practice.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_twice_is_refused_at_any_depth_with_its_place() {
        let e = json_value(br#"{"a": 1, "b": {"c": [ {"n": 1, "n": 2} ]}}"#).unwrap_err();
        assert_eq!(e.to_string(), "duplicate key \"n\" at line 1 column 34");
        let e = json_value(b"{\"a\": 1,\n \"a\": 1}").unwrap_err();
        assert!(
            e.to_string().starts_with("duplicate key \"a\" at line 2"),
            "{e}"
        );
    }

    #[test]
    fn everything_else_reads_as_serde_json_reads_it() {
        let text = br#"{"s": "x\u00e9\/", "n": [1, -2, 2.5, 18446744073709551615],
            "b": [true, false, null], "o": {}, "same": {"k": 1}, "other": {"k": 2}}"#;
        let strict = json_value(text).unwrap();
        let plain: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(strict, plain);
        // serde_json's nesting limit still holds.
        let deep = "[".repeat(100_000);
        assert!(json_value(deep.as_bytes()).is_err());
    }
}

//! A serde `Deserializer` over a `serde_json::Value` that knows where it is, so every
//! error names the exact field path (`spec.default[1].weight`). The serde derives of
//! the model stay the one definition of its shape.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, EnumAccess, Expected, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Value};

use crate::path::{join_index, join_key};

/// A deserialization error and the path where it happened.
#[derive(Debug)]
pub(crate) struct DeError {
    path: Option<String>,
    reason: String,
    missing: Option<&'static str>,
}

impl DeError {
    /// (path, reason), the path relative to where deserialization started.
    pub(crate) fn into_parts(self) -> (String, String) {
        (self.path.unwrap_or_default(), self.reason)
    }

    /// Fixes the path at the innermost place the error passed through.
    fn at(mut self, path: &str) -> Self {
        if self.path.is_none() {
            self.path = Some(match self.missing {
                Some(field) => join_key(path, field),
                None => path.to_owned(),
            });
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) if !p.is_empty() => write!(f, "{p}: {}", self.reason),
            _ => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for DeError {}

fn describe(u: &Unexpected<'_>) -> String {
    match u {
        Unexpected::Unit => "null".to_owned(),
        Unexpected::Map => "a mapping".to_owned(),
        Unexpected::Seq => "a list".to_owned(),
        other => other.to_string(),
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            path: None,
            reason: msg.to_string(),
            missing: None,
        }
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        let hint = match unexp {
            Unexpected::Bool(_)
            | Unexpected::Unsigned(_)
            | Unexpected::Signed(_)
            | Unexpected::Float(_)
                if exp.to_string().contains("string") =>
            {
                " (quote it)"
            }
            _ => "",
        };
        Self::custom(format_args!(
            "expected {exp}, found {}{hint}",
            describe(&unexp)
        ))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Self::custom(format_args!(
            "invalid value {}, expected {exp}",
            describe(&unexp)
        ))
    }

    fn unknown_field(_field: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(format_args!(
            "unknown field (expected one of: {})",
            expected.join(", ")
        ))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(format_args!(
            "unknown value {}, expected one of: {}",
            crate::path::quote(variant),
            expected.join(", ")
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        Self {
            path: None,
            reason: "missing required field".to_owned(),
            missing: Some(field),
        }
    }
}

/// Deserializes `value`; error paths start with `path` (e.g. `"spec"`).
pub(crate) fn from_value<'a, T: de::Deserialize<'a>>(
    value: &'a Value,
    path: &str,
) -> Result<T, DeError> {
    T::deserialize(ValueDe {
        value,
        path: path.to_owned(),
    })
}

struct ValueDe<'a> {
    value: &'a Value,
    path: String,
}

fn unexpected(v: &Value) -> Unexpected<'_> {
    match v {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Unexpected::Unsigned(u),
            (_, Some(i)) => Unexpected::Signed(i),
            _ => Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

impl<'de> de::Deserializer<'de> for ValueDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => visitor.visit_u64(u),
                (_, Some(i)) => visitor.visit_i64(i),
                _ => visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visitor.visit_seq(SeqDe {
                items: items.iter().enumerate(),
                path: &self.path,
            }),
            Value::Object(map) => visitor.visit_map(MapDe::new(map, &self.path)),
        };
        r.map_err(|e| e.at(&self.path))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Null => visitor.visit_none().map_err(|e: DeError| e.at(&self.path)),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // Derived struct visitors also accept a list (fields by position); a rule file
        // must name its fields.
        match self.value {
            Value::Object(_) => self.deserialize_any(visitor),
            other => Err(
                <DeError as de::Error>::invalid_type(unexpected(other), &visitor).at(&self.path),
            ),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = match self.value {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Object(map) if map.len() == 1 => match map.iter().next() {
                Some((key, value)) => visitor.visit_enum(EnumDe {
                    key,
                    value,
                    path: &self.path,
                }),
                None => Err(de::Error::custom("expected a single-key mapping")),
            },
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        };
        r.map_err(|e| e.at(&self.path))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

struct SeqDe<'a, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Value>>,
    path: &'p str,
}

impl<'de> SeqAccess<'de> for SeqDe<'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            None => Ok(None),
            Some((i, value)) => {
                let path = join_index(self.path, i);
                seed.deserialize(ValueDe {
                    value,
                    path: path.clone(),
                })
                .map(Some)
                .map_err(|e| e.at(&path))
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a, 'p> {
    entries: serde_json::map::Iter<'a>,
    current: Option<(&'a String, &'a Value)>,
    path: &'p str,
}

impl<'a, 'p> MapDe<'a, 'p> {
    fn new(map: &'a Map<String, Value>, path: &'p str) -> Self {
        Self {
            entries: map.iter(),
            current: None,
            path,
        }
    }
}

impl<'de> MapAccess<'de> for MapDe<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.current = Some((key, value));
        seed.deserialize(KeyDe(key))
            .map(Some)
            .map_err(|e| e.at(&join_key(self.path, key)))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, value)) = self.current.take() else {
            return Err(de::Error::custom("value without a key"));
        };
        let path = join_key(self.path, key);
        seed.deserialize(ValueDe {
            value,
            path: path.clone(),
        })
        .map_err(|e| e.at(&path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// A mapping key: always a string in JSON values.
struct KeyDe<'a>(&'a str);

impl<'de> de::Deserializer<'de> for KeyDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_borrowed_str(self.0)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// An externally tagged enum written as a single-key mapping: `{header: x-user-id}`.
struct EnumDe<'a, 'p> {
    key: &'a str,
    value: &'a Value,
    path: &'p str,
}

impl<'de, 'p> EnumAccess<'de> for EnumDe<'de, 'p> {
    type Error = DeError;
    type Variant = ValueDe<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, ValueDe<'de>), DeError> {
        let path = join_key(self.path, self.key);
        let v = seed.deserialize(KeyDe(self.key)).map_err(|e| e.at(&path))?;
        Ok((
            v,
            ValueDe {
                value: self.value,
                path,
            },
        ))
    }
}

impl<'de> VariantAccess<'de> for ValueDe<'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.value {
            Value::Null => Ok(()),
            other => Err(
                <DeError as de::Error>::invalid_type(unexpected(other), &"nothing").at(&self.path),
            ),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        let path = self.path.clone();
        seed.deserialize(self).map_err(|e| e.at(&path))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}

#[cfg(test)]
mod tests;

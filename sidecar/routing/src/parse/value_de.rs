//! A serde `Deserializer` over a `serde_json::Value` that knows where it is, so every
//! error names the exact field path (`spec.default[1].weight`), both as text and as
//! steps a caller can follow back into the value. The serde derives of the model stay
//! the one definition of its shape.

use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, Unexpected,
    VariantAccess, Visitor,
};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Value};

use crate::path::Seg;

mod error;

pub(crate) use self::error::DeError;

/// Deserializes `value`; error paths start with the field `path` (e.g. `"spec"`), or
/// with nothing when it is empty.
pub(crate) fn from_value<'a, T: de::Deserialize<'a>>(
    value: &'a Value,
    path: &str,
) -> Result<T, DeError> {
    let root = Here {
        parent: None,
        step: if path.is_empty() {
            Step::Root
        } else {
            Step::Key(path)
        },
    };
    T::deserialize(ValueDe { value, here: root })
}

/// Where a value sits: a chain of borrowed steps back to the root. Walking down costs
/// no allocation; the path is only written out when an error needs it.
#[derive(Clone, Copy)]
struct Here<'p> {
    parent: Option<&'p Here<'p>>,
    step: Step<'p>,
}

#[derive(Clone, Copy)]
enum Step<'p> {
    Root,
    Key(&'p str),
    Index(usize),
}

impl<'p> Here<'p> {
    fn key(parent: &'p Here<'p>, key: &'p str) -> Self {
        Self {
            parent: Some(parent),
            step: Step::Key(key),
        }
    }

    fn index(parent: &'p Here<'p>, index: usize) -> Self {
        Self {
            parent: Some(parent),
            step: Step::Index(index),
        }
    }

    fn segments(&self) -> Vec<Seg> {
        let mut out = Vec::new();
        let mut at = Some(self);
        while let Some(h) = at {
            match h.step {
                Step::Root => {}
                Step::Key(k) => out.push(Seg::Key(k.to_owned())),
                Step::Index(i) => out.push(Seg::Index(i)),
            }
            at = h.parent;
        }
        out.reverse();
        out
    }
}

struct ValueDe<'a, 'p> {
    value: &'a Value,
    here: Here<'p>,
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

impl<'de> de::Deserializer<'de> for ValueDe<'de, '_> {
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
                here: &self.here,
            }),
            Value::Object(map) => visitor.visit_map(MapDe::new(map, &self.here)),
        };
        r.map_err(|e| e.at(&self.here))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Null => visitor.visit_none().map_err(|e: DeError| e.at(&self.here)),
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
                <DeError as de::Error>::invalid_type(unexpected(other), &visitor).at(&self.here),
            ),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = match self.value {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Object(map) if map.len() == 1 => match map.iter().next() {
                Some((key, value)) => visitor.visit_enum(EnumDe {
                    key,
                    value,
                    here: &self.here,
                }),
                None => Err(de::Error::custom("expected a single-key mapping")),
            },
            // Name the values, not the Rust type (`expected enum MtlsMode`), which
            // means nothing to whoever wrote the rules.
            other => Err(de::Error::invalid_type(
                unexpected(other),
                &format!("one of: {}", variants.join(", ")).as_str(),
            )),
        };
        r.map_err(|e| e.at(&self.here))
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
    here: &'p Here<'p>,
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
                let here = Here::index(self.here, i);
                seed.deserialize(ValueDe { value, here })
                    .map(Some)
                    .map_err(|e| e.at(&here))
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
    here: &'p Here<'p>,
}

impl<'a, 'p> MapDe<'a, 'p> {
    fn new(map: &'a Map<String, Value>, here: &'p Here<'p>) -> Self {
        Self {
            entries: map.iter(),
            current: None,
            here,
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
            .map_err(|e| e.at(&Here::key(self.here, key)))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, value)) = self.current.take() else {
            return Err(de::Error::custom("value without a key"));
        };
        let here = Here::key(self.here, key);
        seed.deserialize(ValueDe { value, here })
            .map_err(|e| e.at(&here))
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
    here: &'p Here<'p>,
}

impl<'de: 'p, 'p> EnumAccess<'de> for EnumDe<'de, 'p> {
    type Error = DeError;
    type Variant = ValueDe<'de, 'p>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, ValueDe<'de, 'p>), DeError> {
        let here = Here::key(self.here, self.key);
        let v = seed.deserialize(KeyDe(self.key)).map_err(|e| e.at(&here))?;
        Ok((
            v,
            ValueDe {
                value: self.value,
                here,
            },
        ))
    }
}

impl<'de> VariantAccess<'de> for ValueDe<'de, '_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.value {
            Value::Null => Ok(()),
            other => Err(
                <DeError as de::Error>::invalid_type(unexpected(other), &"nothing").at(&self.here),
            ),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        let here = self.here;
        seed.deserialize(self).map_err(|e| e.at(&here))
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

//! The error of the path-tracking deserializer: what went wrong and where.

use std::fmt;

use serde::de::{self, Expected, Unexpected};

use super::Here;
use crate::path::{Seg, render};

/// A deserialization error and the path where it happened.
#[derive(Debug)]
pub(crate) struct DeError {
    path: Option<Vec<Seg>>,
    reason: String,
    missing: Option<&'static str>,
    unknown_field: bool,
}

impl DeError {
    /// (path, reason), the path starting with the one given to [`from_value`].
    // Documents are read with the path as steps (`path`); this is for tests.
    #[cfg(test)]
    pub(crate) fn into_parts(self) -> (String, String) {
        (render(self.path()), self.reason)
    }

    /// The path, starting with the one given to [`from_value`]; for a missing field,
    /// the path the field would have.
    pub(crate) fn path(&self) -> &[Seg] {
        self.path.as_deref().unwrap_or_default()
    }

    /// What is wrong, for a human.
    pub(crate) fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether the error is a required field that is not there (so [`Self::path`]
    /// names no value).
    pub(crate) fn is_missing(&self) -> bool {
        self.missing.is_some()
    }

    /// Whether the error is a field the struct does not have.
    pub(crate) fn is_unknown_field(&self) -> bool {
        self.unknown_field
    }

    /// Fixes the path at the innermost place the error passed through.
    pub(super) fn at(mut self, here: &Here<'_>) -> Self {
        if self.path.is_none() {
            let mut path = here.segments();
            if let Some(field) = self.missing {
                path.push(Seg::Key(field.to_owned()));
            }
            self.path = Some(path);
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = render(self.path());
        if path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{path}: {}", self.reason)
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
            unknown_field: false,
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
        Self {
            unknown_field: true,
            ..Self::custom(format_args!(
                "unknown field (expected one of: {})",
                expected.join(", ")
            ))
        }
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
            unknown_field: false,
        }
    }
}

//! Validated names: resource names, service names, and instance label sets.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::path::quote;

/// Longest label key or value.
pub const LABEL_MAX_LEN: usize = 63;

/// The namespace of a namespaced document without `metadata.namespace`, and of an
/// instance registered without one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Defines a string newtype that is valid by construction: `new` checks, serde uses
/// `new`, `Display`/`Debug`/`AsRef<str>` show the text.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Checks `value`; the error is the reason, for a human.
            pub fn new(value: impl Into<String>) -> Result<Self, String> {
                let value = value.into();
                $check(&value)?;
                Ok(Self(value))
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

checked_string!(
    /// A resource name (`metadata.name`) or subset name: a DNS label, 1-63 characters
    /// of `[a-z0-9-]`, starting and ending with a letter or digit.
    Name,
    check_dns_label
);

checked_string!(
    /// A service name: a lowercase DNS name, 1-253 characters of `[a-z0-9.-]`, made
    /// of dot-separated DNS labels (so `orders` and `orders.shop` are both valid).
    ServiceName,
    check_service_name
);

impl ServiceName {
    /// The (namespace, service) this reference names from a document in `namespace`:
    /// `orders` is `orders` there, `orders.shop` is `orders` in namespace `shop`. The
    /// one reading of a service reference; a checked document holds at most one dot
    /// ([`ServiceName::check_reference`]), and a further dot stays in the namespace part.
    pub fn resolve<'a>(&'a self, namespace: &'a str) -> (&'a str, &'a str) {
        match self.0.split_once('.') {
            Some((service, ns)) => (ns, service),
            None => (namespace, &self.0),
        }
    }

    /// A reference in a rule names `name` or `name.namespace`: the error says so for
    /// anything with more labels (`orders.shop.svc` is a host, not a reference).
    pub fn check_reference(&self) -> Result<(), String> {
        if self.0.matches('.').count() <= 1 {
            Ok(())
        } else {
            Err(format!(
                "{} is not a service reference: write NAME (this namespace) or NAME.NAMESPACE",
                quote(&self.0)
            ))
        }
    }
}

/// `service` as people read it from `namespace`'s point of view: `orders` in
/// `default`, `orders.shop` elsewhere (the reference form rules and hosts use).
pub fn qualified(namespace: &str, service: &str) -> String {
    qualified_ref(namespace, service).into_owned()
}

/// [`qualified`], borrowing `service` in `default`: for a request's path, where the
/// name in `default` (most of them) is not copied.
pub fn qualified_ref<'a>(namespace: &str, service: &'a str) -> std::borrow::Cow<'a, str> {
    if namespace.is_empty() || namespace == DEFAULT_NAMESPACE {
        std::borrow::Cow::Borrowed(service)
    } else {
        std::borrow::Cow::Owned(format!("{service}.{namespace}"))
    }
}

impl Name {
    /// A valid name for stand-in values that are never shown or stored.
    pub(crate) fn placeholder() -> Self {
        Self(String::from("invalid"))
    }
}

fn check_dns_label(s: &str) -> Result<(), String> {
    if is_dns_label(s) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a valid name: 1-63 characters of [a-z0-9-], starting and ending with a letter or digit",
            quote(s)
        ))
    }
}

pub(crate) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn check_service_name(s: &str) -> Result<(), String> {
    if !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a valid service name: 1-253 characters of [a-z0-9.-], dot-separated DNS labels",
            quote(s)
        ))
    }
}

/// A label key or value in a selector or subset: 1-63 characters of `[A-Za-z0-9._/-]`
/// (Kubernetes-style, so keys like `app.kubernetes.io/name` fit).
pub(crate) fn check_label(what: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= LABEL_MAX_LEN
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a valid label {what}: 1-63 characters of [A-Za-z0-9._/-]",
            quote(s)
        ))
    }
}

/// Instance labels to select by: an instance matches when it has every one of them.
/// Keys and values are checked with the label rule (1-63 of `[A-Za-z0-9._/-]`).
/// Empty only when built so; a lane or subset with no labels is a validation error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// Checks every key and value; the error names the first bad one.
    pub fn new(map: BTreeMap<String, String>) -> Result<Self, String> {
        for (k, v) in &map {
            check_label("key", k)?;
            check_label("value", v)?;
        }
        Ok(Self(map))
    }

    /// Whether `instance` has every label of this set (always true when empty).
    pub fn matches(&self, instance: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, v)| instance.get(k) == Some(v))
    }

    /// The labels, in key order.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(LabelsVisitor)
    }
}

struct LabelsVisitor;

/// Checks one key or value inside deserialization, so the error carries its path.
struct LabelPart(&'static str);

impl<'de> DeserializeSeed<'de> for LabelPart {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        let s = String::deserialize(d)?;
        check_label(self.0, &s).map_err(de::Error::custom)?;
        Ok(s)
    }
}

impl<'de> Visitor<'de> for LabelsVisitor {
    type Value = Labels;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of label names to values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(k) = map.next_key_seed(LabelPart("key"))? {
            let v = map.next_value_seed(LabelPart("value"))?;
            out.insert(k, v);
        }
        Ok(Labels(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for ok in ["a", "orders", "v1", "a-b", &"a".repeat(63)] {
            assert!(Name::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(Name::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_names_allow_dots() {
        for ok in ["orders", "orders.shop", "a.b-c.d"] {
            assert!(ServiceName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".orders",
            "orders.",
            "a..b",
            "Orders",
            "a_b",
            &"a".repeat(254),
        ] {
            assert!(ServiceName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn references_resolve_relative_to_the_document() {
        let bare = ServiceName::new("orders").unwrap();
        assert_eq!(bare.resolve("shop"), ("shop", "orders"));
        let other = ServiceName::new("orders.staging").unwrap();
        assert_eq!(other.resolve("shop"), ("staging", "orders"));
        assert!(bare.check_reference().is_ok() && other.check_reference().is_ok());
        let host = ServiceName::new("orders.staging.svc").unwrap();
        assert!(
            host.check_reference()
                .unwrap_err()
                .contains("NAME.NAMESPACE")
        );
        assert_eq!(qualified("default", "orders"), "orders");
        assert_eq!(qualified("shop", "orders"), "orders.shop");
    }

    #[test]
    fn labels_match_when_all_present() {
        let sel = Labels::new([("version".to_owned(), "v2".to_owned())].into()).unwrap();
        let mut inst = BTreeMap::from([
            ("version".to_owned(), "v2".to_owned()),
            ("zone".to_owned(), "a".to_owned()),
        ]);
        assert!(sel.matches(&inst));
        inst.insert("version".into(), "v1".into());
        assert!(!sel.matches(&inst));
        assert!(Labels::default().matches(&inst));
    }

    #[test]
    fn labels_reject_bad_keys_and_values() {
        assert!(
            Labels::new([("app.kubernetes.io/name".to_owned(), "x".to_owned())].into()).is_ok()
        );
        assert!(Labels::new([("a b".to_owned(), "x".to_owned())].into()).is_err());
        assert!(Labels::new([("a".to_owned(), String::new())].into()).is_err());
        assert!(Labels::new([("a".to_owned(), "x".repeat(64))].into()).is_err());
    }
}

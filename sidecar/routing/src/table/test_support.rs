//! Helpers for the table's tests: rules from YAML, instances, a request.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{Instance, RequestView, Route};
use crate::{RuleSet, Tag};

/// Lanes used by most tests: `gray` (version v2, fallback [base]), `blue` (version v3,
/// fallback [gray]) and `strict` (tag red, version v4, fallback []).
pub(super) const LANES: &str = "apiVersion: graylane.io/v1
kind: Lane
metadata: {name: gray}
spec: {tag: gray, selector: {version: v2}}
---
apiVersion: graylane.io/v1
kind: Lane
metadata: {name: blue}
spec: {tag: blue, selector: {version: v3}, fallback: [gray]}
---
apiVersion: graylane.io/v1
kind: Lane
metadata: {name: strict}
spec: {tag: red, selector: {version: v4}, fallback: []}
";

/// [`LANES`] plus these documents.
pub(super) fn rules(extra: &str) -> RuleSet {
    let text = if extra.is_empty() {
        LANES.to_owned()
    } else {
        format!("{LANES}---\n{extra}")
    };
    match RuleSet::from_yaml("test.yaml", &text) {
        Ok(set) => set,
        Err(e) => panic!(
            "{}",
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// A RoutePolicy for `service` with this spec body (indented two spaces).
pub(super) fn policy(service: &str, body: &str) -> String {
    format!(
        "apiVersion: graylane.io/v1\nkind: RoutePolicy\nmetadata: {{name: {service}}}\nspec:\n  service: {service}\n{body}"
    )
}

/// An instance `id` of `service` at `<id>:8080` with `version=<version>`.
pub(super) fn inst(service: &str, id: &str, version: &str) -> Instance {
    Instance {
        service: service.to_owned(),
        id: id.to_owned(),
        address: format!("{id}:8080"),
        labels: BTreeMap::from([("version".to_owned(), version.to_owned())]),
        namespace: "default".to_owned(),
        identity: String::new(),
    }
}

pub(super) fn tag(s: &str) -> Tag {
    Tag::parse(s).unwrap()
}

pub(super) fn ids<'a>(route: &Route<'a>) -> Vec<&'a str> {
    route.candidates.iter().map(|i| i.id.as_str()).collect()
}

/// A request; build with the `with_*` methods.
#[derive(Debug, Default)]
pub(super) struct Req {
    headers: BTreeMap<String, String>,
    cookies: BTreeMap<String, String>,
    query: BTreeMap<String, String>,
    /// A raw query string; when set, `query` is not asked (as with a real request).
    raw_query: Option<String>,
    path: String,
    method: String,
    ip: Option<IpAddr>,
}

impl Req {
    pub(super) fn new() -> Self {
        Self {
            path: "/".into(),
            method: "GET".into(),
            ..Self::default()
        }
    }

    pub(super) fn with_header(mut self, k: &str, v: &str) -> Self {
        self.headers.insert(k.to_owned(), v.to_owned());
        self
    }

    pub(super) fn with_cookie(mut self, k: &str, v: &str) -> Self {
        self.cookies.insert(k.to_owned(), v.to_owned());
        self
    }

    pub(super) fn with_query(mut self, k: &str, v: &str) -> Self {
        self.query.insert(k.to_owned(), v.to_owned());
        self
    }

    pub(super) fn with_raw_query(mut self, raw: &str) -> Self {
        self.raw_query = Some(raw.to_owned());
        self
    }

    pub(super) fn with_path(mut self, p: &str) -> Self {
        p.clone_into(&mut self.path);
        self
    }

    pub(super) fn with_method(mut self, m: &str) -> Self {
        m.clone_into(&mut self.method);
        self
    }

    pub(super) fn with_ip(mut self, ip: &str) -> Self {
        self.ip = Some(ip.parse().unwrap());
        self
    }
}

impl RequestView for Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }
    fn query_string(&self) -> Option<&str> {
        self.raw_query.as_deref()
    }
    fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn method(&self) -> &str {
        &self.method
    }
    fn source_ip(&self) -> Option<IpAddr> {
        self.ip
    }
}

/// A deterministic stream of random numbers (splitmix64).
pub(super) struct Draws(pub(super) u64);

impl Iterator for Draws {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        Some(crate::hash::mix(self.0))
    }
}

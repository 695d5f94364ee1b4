//! The request of the `request` target, as a sidecar would see it, behind
//! `RequestView`; the names and values requests carry, and their generators.

use std::cell::Cell;
use std::fmt;
use std::net::IpAddr;

use graylane_routing::RequestView;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use crate::strategies::{any_chars, bytes_of, chars_of, huge_text, special_byte};

/// A request as a sidecar would see it: header names in any case, header values as
/// raw bytes (`header` reads the first one, `None` when it is not UTF-8: the table
/// must agree with the model whatever a view answers), cookies already split, query
/// parameters as their decoded text (what the model matches) and, most of the time,
/// also encoded into the raw query string a client would send (what the table must
/// decode back to that text).
#[derive(Clone)]
pub(crate) struct Request {
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) cookies: Vec<(String, String)>,
    pub(crate) query: Vec<(String, String)>,
    /// `query` encoded (see [`encode_query`]); `None`: the view answers decoded
    /// parameters, as `graylane explain --query` does.
    pub(crate) raw_query: Option<String>,
    pub(crate) path: String,
    pub(crate) method: String,
    pub(crate) ip: Option<IpAddr>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<_> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.escape_ascii()))
            .collect();
        f.debug_struct("Request")
            .field("headers", &headers)
            .field("cookies", &self.cookies)
            .field("query", &self.query)
            .field("raw_query", &self.raw_query)
            .field("path", &self.path)
            .field("method", &self.method)
            .field("ip", &self.ip)
            .finish()
    }
}

/// A [`Request`] behind the trait, noting lookups that break its contract.
pub(crate) struct View<'a> {
    pub(crate) req: &'a Request,
    /// Header names asked for that were not lowercase (the trait promises lowercase).
    pub(crate) bad_names: Cell<usize>,
}

impl RequestView for View<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        if name.bytes().any(|c| c.is_ascii_uppercase()) {
            self.bad_names.set(self.bad_names.get() + 1);
        }
        let (_, value) = self
            .req
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))?;
        std::str::from_utf8(value).ok()
    }
    fn cookie(&self, name: &str) -> Option<&str> {
        let (_, v) = self.req.cookies.iter().find(|(k, _)| k == name)?;
        Some(v)
    }
    fn query_string(&self) -> Option<&str> {
        self.req.raw_query.as_deref()
    }
    /// The decoded truth: what the model matches, whatever the table is handed.
    fn query(&self, name: &str) -> Option<&str> {
        let (_, v) = self.req.query.iter().find(|(k, _)| k == name)?;
        Some(v)
    }
    fn path(&self) -> &str {
        &self.req.path
    }
    fn method(&self) -> &str {
        &self.req.method
    }
    fn source_ip(&self) -> Option<IpAddr> {
        self.req.ip
    }
}

/// Names the rules use, in the cases operators write them.
pub(crate) const HEADER_NAMES: &[&str] = &["x-user", "X-Lane", "x-canary", "User-Agent"];
/// Names requests use: the rules' names in other cases, and others.
pub(crate) const REQUEST_HEADER_NAMES: &[&str] = &[
    "x-user",
    "X-USER",
    "x-lane",
    "X-Lane",
    "x-canary",
    "user-agent",
    "x-other",
];
pub(crate) const COOKIE_NAMES: &[&str] = &["uid", "lane", "Lane"];
pub(crate) const QUERY_NAMES: &[&str] = &["q", "ids[]", "lane", ""];
pub(crate) const RULE_METHODS: &[&str] = &["GET", "post", "Delete"];
const METHODS: &[&str] = &[
    "GET", "get", "Post", "post", "DELETE", "delete", "PATCH", "GÉT", "",
];
pub(crate) const CIDRS: &[&str] = &["10.8.0.0/16", "2001:db8::/32", "0.0.0.0/0", "192.168.1.1"];
const IPS: &[&str] = &[
    "10.8.3.4",
    "10.9.0.1",
    "::ffff:10.8.0.1",
    "2001:db8::1",
    "192.168.1.1",
];
/// Values rules compare against, and that requests carry.
pub(crate) const VALUES: &[&str] = &[
    "",
    "gray",
    "blue",
    "Gray",
    "alice",
    "bob",
    "aab",
    "v2",
    "/api/v1",
    "/api",
    "a;b",
    "\"gray\"",
    "%67ray",
    " gray ",
    "a=b",
    "é",
    "gray,blue",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        120 => select(VALUES).prop_map(String::from),
        40 => any_chars(0..13),
        20 => chars_of("abgry;=,% \"", 0..13),
        1 => huge_text(select(&["a", "gray", "; ", "%2"][..]).prop_map(String::from)),
    ]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![6 => bytes_of(value()), 1 => vec(special_byte(), 0..12)]
}

pub(crate) fn names(list: &'static [&'static str]) -> impl Strategy<Value = String> {
    select(list).prop_map(String::from)
}

pub(crate) fn request() -> impl Strategy<Value = Request> {
    (
        vec((names(REQUEST_HEADER_NAMES), header_value()), 0..8),
        vec((names(COOKIE_NAMES), value()), 0..4),
        vec((names(QUERY_NAMES), value()), 0..4),
        proptest::option::weighted(0.8, any::<u64>()),
        prop_oneof![value(), select(VALUES).prop_map(String::from)],
        names(METHODS),
        proptest::option::of(select(IPS).prop_map(|ip| ip.parse::<IpAddr>().unwrap())),
    )
        .prop_map(
            |(headers, cookies, query, style, path, method, ip)| Request {
                headers,
                cookies,
                raw_query: style.map(|seed| encode_query(&query, seed)),
                query,
                path,
                method,
                ip,
            },
        )
}

/// `pairs` as a client might encode them, varying with `seed`: a space as `+` or
/// `%20`, unreserved bytes sometimes escaped too (in either hex case), every other
/// byte escaped, and now and then an empty pair (`&&`, which decoding skips).
pub(crate) fn encode_query(pairs: &[(String, String)], mut seed: u64) -> String {
    let mut coin = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed & 3
    };
    let mut out = String::new();
    for (name, value) in pairs {
        if !out.is_empty() || coin() == 0 {
            out.push('&');
        }
        encode_into(name, &mut out, &mut coin);
        out.push('=');
        encode_into(value, &mut out, &mut coin);
    }
    out
}

fn encode_into(text: &str, out: &mut String, coin: &mut dyn FnMut() -> u64) {
    for b in text.bytes() {
        let unreserved = b.is_ascii_alphanumeric() || b"-._~".contains(&b);
        match coin() {
            0 if b == b' ' => out.push('+'),
            0 | 1 if unreserved => out.push(char::from(b)),
            2 => out.push_str(&format!("%{b:02x}")),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

//! Match blocks: the request conditions of TagPolicy rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::StringMatch;
use crate::path::{Checker, quote};

/// Request conditions; all fields given in one block must hold (AND). `any` is an OR
/// of blocks, `not` negates one. A block with no condition at all is rejected by
/// validation (it would match every request). Empty lists and maps count as not given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchBlock {
    /// Header name (case-insensitive) → condition on its first value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    /// Cookie name → condition on its value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cookies: BTreeMap<String, StringMatch>,
    /// Query parameter name → condition on its first value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, StringMatch>,
    /// Condition on the request path (without the query string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<StringMatch>,
    /// The request method is one of these (compared case-insensitively).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// The source address is in one of these networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_cidrs: Vec<Cidr>,
    /// This share of keys (0-100, resolution 0.01) matches; needs `hash_by`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_percent"
    )]
    pub percent: Option<f64>,
    /// The key whose consistent hash picks the `percent` bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_by: Option<HashKey>,
    /// At least one of these blocks holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<MatchBlock>,
    /// This block does not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<MatchBlock>>,
}

/// Where a hash key is read from: `{header: NAME}` or `{cookie: NAME}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HashKey {
    /// A request header (name case-insensitive).
    Header(String),
    /// A cookie.
    Cookie(String),
}

/// A network in CIDR form (`10.8.0.0/16`, `2001:db8::/32`); a bare address means that
/// one address (`/32` or `/128`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(IpNet);

impl Cidr {
    /// Parses `10.8.0.0/16`, `2001:db8::/32` or a bare address. The address is read
    /// as the standard library reads one, so `010.0.0.1/32` is refused as `010.0.0.1`
    /// is (inet_aton would read its `010` as octal 8). An IPv4-mapped IPv6 network is
    /// refused, naming the IPv4 one to write: clients are compared as IPv4
    /// ([`Cidr::contains`]), so it could never match.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{} is not a valid CIDR (e.g. 10.8.0.0/16 or 2001:db8::/32)",
                quote(s)
            )
        };
        let (addr, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let net = match prefix {
            None => IpNet::from(addr),
            Some(p) if (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
                IpNet::new(addr, p.parse().map_err(|_| bad())?).map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if let IpNet::V6(v6) = net
            && v6.prefix_len() >= 96
            && let Some(v4) = v6.addr().to_ipv4_mapped()
        {
            return Err(format!(
                "{} is an IPv4-mapped network, and IPv4 clients are compared as IPv4: write {v4}/{}",
                quote(s),
                v6.prefix_len() - 96
            ));
        }
        Ok(Self(net))
    }

    /// The network.
    pub fn net(&self) -> IpNet {
        self.0
    }

    /// Whether `ip` is inside; an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is
    /// treated as the IPv4 address, since dual-stack sockets report IPv4 peers so.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Whether `s` is an RFC 9110 token (header names, cookie names, methods).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// Reads a percentage rounded to 0.01, its resolution everywhere (10 000 buckets):
/// more digits would mean nothing, and two decimals read back exactly from any
/// YAML or JSON parser.
pub(crate) fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    // Anything but a number (`"10%"`, `ten`) gets the rule's words, not serde's
    // `expected f64`.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Number(f64),
        Other(serde::de::IgnoredAny),
    }
    match Written::deserialize(d)? {
        Written::Number(p) => Ok((p * 100.0).round() / 100.0),
        Written::Other(_) => Err(serde::de::Error::custom(
            "a percentage is a number from 0 to 100 (e.g. 10 or 2.5), without a % sign",
        )),
    }
}

fn opt_percent<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    percent(d).map(Some)
}

/// Checks a percentage: finite, 0-100.
pub(crate) fn check_percent(c: &mut Checker, field: &str, p: f64) {
    if !(0.0..=100.0).contains(&p) {
        c.error_at(field, format!("percent {p} is outside 0-100"));
    }
}

impl HashKey {
    /// Checks the header or cookie name.
    pub(crate) fn check(&self, c: &mut Checker) {
        let (field, name) = match self {
            Self::Header(n) => ("header", n),
            Self::Cookie(n) => ("cookie", n),
        };
        if !is_token(name) {
            c.error_at(
                field,
                format!("{} is not a valid {field} name", quote(name)),
            );
        }
    }
}

impl MatchBlock {
    /// Whether no condition is given.
    pub fn is_empty(&self) -> bool {
        self == &MatchBlock::default()
    }

    /// Semantic checks of this block and those nested in it.
    pub(crate) fn check(&self, c: &mut Checker) {
        if self.is_empty() {
            c.error("empty match block: it would match every request; give at least one condition");
            return;
        }
        check_names(c, "headers", &self.headers, NameRule::Header);
        check_names(c, "cookies", &self.cookies, NameRule::Token);
        check_names(c, "query", &self.query, NameRule::NonEmpty);
        if let Some(StringMatch::Exact(p) | StringMatch::Prefix(p)) = &self.path {
            c.field("path", |c| check_path(c, p));
        }
        c.field("methods", |c| {
            for (i, m) in self.methods.iter().enumerate() {
                if !is_token(m) {
                    c.index(i, |c| {
                        c.error(format!("{} is not an HTTP method", quote(m)))
                    });
                }
            }
        });
        match (self.percent, &self.hash_by) {
            (Some(p), Some(key)) => {
                check_percent(c, "percent", p);
                c.field("hashBy", |c| key.check(c));
            }
            (Some(_), None) => {
                let hash_by = c.path_of("hashBy");
                c.reading(&hash_by, |c| {
                    c.error_at(
                        "percent",
                        "percent needs hashBy (the header or cookie that keeps a user in the same bucket)",
                    )
                });
            }
            (None, Some(_)) => {
                let percent = c.path_of("percent");
                c.reading(&percent, |c| {
                    c.error_at("hashBy", "hashBy is only used with percent")
                });
            }
            (None, None) => {}
        }
        c.field("any", |c| {
            for (i, block) in self.any.iter().enumerate() {
                c.index(i, |c| block.check(c));
            }
        });
        if let Some(not) = &self.not {
            c.field("not", |c| not.check(c));
        }
    }
}

/// An `exact` or `prefix` path that no request could match: paths are matched as
/// `normalized_path` leaves them, which always start with `/`.
fn check_path(c: &mut Checker, path: &str) {
    if !path.starts_with('/') {
        c.error(format!(
            "{} never matches: a request path starts with /",
            quote(path)
        ));
        return;
    }
    let normal = crate::normalized_path(path);
    if normal != path {
        c.error(format!(
            "{} never matches: paths are matched normalised (escapes of letters and digits decoded, // merged, . and .. resolved); write {}",
            quote(path),
            quote(&normal)
        ));
    }
}

#[derive(Clone, Copy, PartialEq)]
enum NameRule {
    /// A token, compared case-insensitively.
    Header,
    /// A token.
    Token,
    /// Anything but empty (query parameter names like `ids[]` are not tokens).
    NonEmpty,
}

fn check_names(c: &mut Checker, field: &str, map: &BTreeMap<String, StringMatch>, rule: NameRule) {
    let mut seen = BTreeSet::new();
    c.field(field, |c| {
        for name in map.keys() {
            let valid = match rule {
                NameRule::NonEmpty => !name.is_empty(),
                NameRule::Header | NameRule::Token => is_token(name),
            };
            if !valid {
                c.field(name, |c| {
                    c.error(format!("{} is not a valid name", quote(name)))
                });
            } else if rule == NameRule::Header && !seen.insert(name.to_ascii_lowercase()) {
                c.field(name, |c| {
                    c.error("header names are case-insensitive: this header is listed twice")
                });
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_accepts_networks_and_bare_addresses() {
        let c = Cidr::parse("10.8.0.0/16").unwrap();
        assert!(c.contains("10.8.3.4".parse().unwrap()));
        assert!(!c.contains("10.9.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.8.0.1".parse().unwrap()));
        let one = Cidr::parse("2001:db8::1").unwrap();
        assert_eq!(one.to_string(), "2001:db8::1/128");
        assert!(Cidr::parse("10.8.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
        // Leading zeros are refused with a prefix as without one (octal to inet_aton).
        for bad in [
            "010.0.0.1/32",
            "010.0.0.0/8",
            "010.0.0.1",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "10.0.0.0/08/",
        ] {
            let e = Cidr::parse(bad).unwrap_err();
            assert!(e.contains("is not a valid CIDR"), "{bad}: {e}");
        }
        // A network of IPv4-mapped addresses never matches: the IPv4 form is named.
        for (mapped, write) in [
            ("::ffff:1.2.3.4/128", "1.2.3.4/32"),
            ("::ffff:1.2.3.4", "1.2.3.4/32"),
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ] {
            let e = Cidr::parse(mapped).unwrap_err();
            assert!(e.contains(&format!("write {write}")), "{mapped}: {e}");
        }
        // Host bits are kept, as Go's and ipnet's readers keep them: 10.0.0.1/8 is 10/8.
        assert!(
            Cidr::parse("10.0.0.1/8")
                .unwrap()
                .contains("10.200.0.9".parse().unwrap())
        );
        assert!(Cidr::parse("::/0").is_ok());
    }

    #[test]
    fn tokens() {
        assert!(is_token("x-user-group"));
        assert!(is_token("GET"));
        assert!(!is_token(""));
        assert!(!is_token("a b"));
        assert!(!is_token("a:b"));
    }
}

//! Match blocks compiled for the request path: header names lowercased, percentages
//! turned into bucket thresholds, cheap conditions first.

use super::RequestView;
use crate::hash::StableHasher;
use crate::model::{Cidr, HashKey, MatchBlock, StringMatch};
use crate::query::query_param;
use crate::uri_path::normalized_path;

/// Buckets of the percent hash: a percentage has a resolution of 0.01.
pub(crate) const BUCKETS: u64 = 10_000;

/// A compiled [`MatchBlock`]: every condition must hold.
#[derive(Debug)]
pub(super) struct Compiled {
    conds: Vec<Cond>,
}

#[derive(Debug)]
enum Cond {
    Methods(Vec<String>),
    Path(StringMatch),
    Header(String, StringMatch),
    Query(String, StringMatch),
    Cookie(String, StringMatch),
    Cidrs(Vec<Cidr>),
    /// `stable_hash(salt ‖ 0xff ‖ key) % BUCKETS < threshold`.
    Percent {
        threshold: u64,
        key: HashKey,
        salt: String,
    },
    Any(Vec<Compiled>),
    Not(Box<Compiled>),
}

impl Compiled {
    /// Compiles `block`; `salt` (the rule's tag) makes the percent buckets of rules
    /// for different tags independent, so "10% gray" then "10% blue" selects two
    /// different sets of users rather than the second getting none.
    pub(super) fn new(block: &MatchBlock, salt: &str) -> Self {
        let mut conds = Vec::new();
        if !block.methods.is_empty() {
            conds.push(Cond::Methods(
                block
                    .methods
                    .iter()
                    .map(|m| m.to_ascii_uppercase())
                    .collect(),
            ));
        }
        if let Some(p) = &block.path {
            conds.push(Cond::Path(p.clone()));
        }
        for (name, m) in &block.headers {
            conds.push(Cond::Header(name.to_ascii_lowercase(), m.clone()));
        }
        for (name, m) in &block.query {
            conds.push(Cond::Query(name.clone(), m.clone()));
        }
        for (name, m) in &block.cookies {
            conds.push(Cond::Cookie(name.clone(), m.clone()));
        }
        if !block.source_cidrs.is_empty() {
            conds.push(Cond::Cidrs(block.source_cidrs.clone()));
        }
        if let (Some(percent), Some(key)) = (block.percent, &block.hash_by) {
            let key = super::build::lowercase_header(key.clone());
            conds.push(Cond::Percent {
                threshold: threshold(percent),
                key,
                salt: salt.to_owned(),
            });
        }
        if !block.any.is_empty() {
            conds.push(Cond::Any(
                block.any.iter().map(|b| Compiled::new(b, salt)).collect(),
            ));
        }
        if let Some(not) = &block.not {
            conds.push(Cond::Not(Box::new(Compiled::new(not, salt))));
        }
        Self { conds }
    }

    /// Whether every condition holds for `req`.
    pub(super) fn matches(&self, req: &dyn RequestView) -> bool {
        self.conds.iter().all(|c| c.matches(req))
    }
}

impl Cond {
    fn matches(&self, req: &dyn RequestView) -> bool {
        match self {
            Self::Methods(ms) => ms.iter().any(|m| m.eq_ignore_ascii_case(req.method())),
            // Normalised (`normalized_path`): the path as the app will serve it.
            Self::Path(m) => m.matches(Some(&normalized_path(req.path()))),
            Self::Header(name, m) => m.matches(req.header(name)),
            Self::Query(name, m) => m.matches(query_param(req, name).as_deref()),
            Self::Cookie(name, m) => m.matches(req.cookie(name)),
            Self::Cidrs(nets) => req
                .source_ip()
                .is_some_and(|ip| nets.iter().any(|n| n.contains(ip))),
            Self::Percent {
                threshold,
                key,
                salt,
            } => key_value(key, req).is_some_and(|v| percent_bucket(salt, v) < *threshold),
            Self::Any(blocks) => blocks.iter().any(|b| b.matches(req)),
            Self::Not(block) => !block.matches(req),
        }
    }
}

/// The value of a `hashBy` / `stickyBy` key in this request. An empty one is no key:
/// every client sending `x-user-id:` empty would otherwise be one user, in or out of
/// a lane together (release.md: "users without it stay out").
pub(crate) fn key_value<'r>(key: &HashKey, req: &'r dyn RequestView) -> Option<&'r str> {
    let value = match key {
        HashKey::Header(h) => req.header(h),
        HashKey::Cookie(c) => req.cookie(c),
    };
    value.filter(|v| !v.is_empty())
}

/// The percent bucket (0..10 000) of `key` for a rule tagging `salt`.
pub(crate) fn percent_bucket(salt: &str, key: &str) -> u64 {
    let mut h = StableHasher::new();
    h.write(salt.as_bytes())
        .write(&[0xff])
        .write(key.as_bytes());
    h.finish() % BUCKETS
}

/// Buckets below the threshold match: `round(percent × 100)`, clamped to 0..=10 000,
/// so 10% is 1 000 buckets and 0.01% is one.
pub(super) fn threshold(percent: f64) -> u64 {
    let t = (percent * 100.0).round().clamp(0.0, 10_000.0);
    // Clamped to 0..=10 000 just above (NaN clamps to NaN, which `as` maps to 0).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let t = t as u64;
    t
}

#[cfg(test)]
mod tests;

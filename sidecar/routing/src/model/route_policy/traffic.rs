//! Traffic policy parts of a RoutePolicy: exclusions, retries, mirroring, faults.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Tag;
use crate::model::Duration;
use crate::model::match_block::{check_percent, percent};
use crate::path::{Checker, quote};

/// Most retry attempts allowed.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

/// Instances that get no traffic at all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exclude {
    /// Instance ids or addresses (`host:port`, as registered).
    #[serde(default)]
    pub instances: Vec<String>,
}

impl Exclude {
    /// Whether nothing is excluded.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    pub(crate) fn check(&self, c: &mut Checker) {
        c.field("instances", |c| {
            for (i, id) in self.instances.iter().enumerate() {
                if id.trim().is_empty() {
                    c.index(i, |c| {
                        c.error("an instance id or address must not be empty")
                    });
                }
            }
        });
    }
}

/// Retries of idempotent requests (never with a body over 64 KiB).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retries {
    /// Retries after the first try: 1-10.
    pub attempts: u32,
    /// What is retried. Default `[connect-failure]`.
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectFailure]
}

/// A condition that makes a request retryable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryOn {
    /// The connection to the instance could not be made. Written `connect-failure`.
    ConnectFailure,
    /// The connection was reset before a response. Written `reset`.
    Reset,
    /// The instance answered this status (400-599). Written as the number.
    Status(u16),
}

impl Retries {
    pub(crate) fn check(&self, c: &mut Checker) {
        if !(1..=MAX_RETRY_ATTEMPTS).contains(&self.attempts) {
            c.error_at(
                "attempts",
                format!(
                    "attempts is {}, must be 1-{MAX_RETRY_ATTEMPTS}",
                    self.attempts
                ),
            );
        }
        c.field("on", |c| {
            if self.on.is_empty() {
                c.error("on must list at least one condition");
            }
            for (i, on) in self.on.iter().enumerate() {
                if let RetryOn::Status(s) = on
                    && !(400..=599).contains(s)
                {
                    c.index(i, |c| c.error(format!("status {s} is outside 400-599")));
                }
            }
        });
    }
}

impl Serialize for RetryOn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::ConnectFailure => s.serialize_str("connect-failure"),
            Self::Reset => s.serialize_str("reset"),
            Self::Status(code) => s.serialize_u16(*code),
        }
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RetryOn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("connect-failure, reset or a status code")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RetryOn, E> {
                match v {
                    "connect-failure" => Ok(RetryOn::ConnectFailure),
                    "reset" => Ok(RetryOn::Reset),
                    _ => match v.parse::<u16>() {
                        Ok(code) => Ok(RetryOn::Status(code)),
                        Err(_) => Err(E::custom(format!(
                            "{} is not a retry condition: connect-failure, reset or a status code",
                            quote(v)
                        ))),
                    },
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RetryOn, E> {
                u16::try_from(v)
                    .map(RetryOn::Status)
                    .map_err(|_| E::custom(format!("status {v} is outside 400-599")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RetryOn, E> {
                Err(E::custom(format!("status {v} is outside 400-599")))
            }
        }
        d.deserialize_any(V)
    }
}

/// Copies of requests sent to a subset; the answers are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mirror {
    /// A declared subset.
    pub subset: String,
    /// Share of requests copied, 0-100 (resolution 0.01). Default 100.
    #[serde(default = "hundred", deserialize_with = "percent")]
    pub percent: f64,
}

fn hundred() -> f64 {
    100.0
}

impl Mirror {
    pub(crate) fn check(&self, c: &mut Checker, check_subset: impl FnOnce(&mut Checker, &str)) {
        check_subset(c, &self.subset);
        check_percent(c, "percent", self.percent);
    }
}

/// Injected failures, for one tag or for every request to the service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    /// Only requests with this tag; every request when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Tag>,
    /// Delay a share of requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    /// Answer a share of requests with a status, without forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<Abort>,
}

/// A fault delay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delay {
    /// Share of requests delayed, 0-100 (resolution 0.01).
    #[serde(deserialize_with = "percent")]
    pub percent: f64,
    /// How long.
    pub duration: Duration,
}

/// A fault abort.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Abort {
    /// Share of requests aborted, 0-100 (resolution 0.01).
    #[serde(deserialize_with = "percent")]
    pub percent: f64,
    /// The status answered, 200-599.
    pub status: u16,
}

impl Fault {
    pub(crate) fn check(&self, c: &mut Checker) {
        if self.delay.is_none() && self.abort.is_none() {
            c.error("a fault needs a delay, an abort or both");
        }
        if let Some(d) = &self.delay {
            c.field("delay", |c| check_percent(c, "percent", d.percent));
        }
        if let Some(a) = &self.abort {
            c.field("abort", |c| {
                check_percent(c, "percent", a.percent);
                if !(200..=599).contains(&a.status) {
                    c.error_at("status", format!("status {} is outside 200-599", a.status));
                }
            });
        }
    }
}

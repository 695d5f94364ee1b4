//! Durations written with a unit: `200ms`, `2s`, `1m`, `1h`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::path::quote;

/// A whole number of milliseconds, written as digits and one unit: `ms`, `s`, `m` or
/// `h` (`200ms`, `2s`, `1m`, `1h`). No fractions, signs, spaces or compound forms.
/// It is written back in the largest unit that keeps it exact (`120s` reads back as
/// `2m`), so a round trip keeps the value, not the spelling.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration {
    millis: u64,
}

const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

impl Duration {
    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self { millis }
    }

    /// The length in milliseconds.
    pub const fn as_millis(&self) -> u64 {
        self.millis
    }

    /// As a `std::time::Duration`.
    pub const fn as_std(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.millis)
    }

    /// Parses `200ms`, `2s`, `1m`, `1h`; the error is the reason, for a human.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{} is not a duration: write a whole number and a unit, ms, s, m or h (e.g. 200ms, 2s, 1m)",
                quote(s)
            )
        };
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (digits, unit) = s.split_at(split);
        if digits.is_empty() {
            return Err(bad());
        }
        let per = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, per)| *per)
            .ok_or_else(bad)?;
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let millis = n
            .checked_mul(per)
            .ok_or_else(|| format!("{} is too long a duration", quote(s)))?;
        Ok(Self { millis })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis == 0 {
            return f.write_str("0s");
        }
        for (unit, per) in UNITS {
            if self.millis.is_multiple_of(per) {
                return write!(f, "{}{unit}", self.millis / per);
            }
        }
        write!(f, "{}ms", self.millis)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(Duration::parse("200ms").unwrap().as_millis(), 200);
        assert_eq!(Duration::parse("2s").unwrap().as_millis(), 2_000);
        assert_eq!(Duration::parse("1m").unwrap().as_millis(), 60_000);
        assert_eq!(Duration::parse("1h").unwrap().as_millis(), 3_600_000);
        assert_eq!(Duration::parse("0s").unwrap().as_millis(), 0);
    }

    #[test]
    fn rejects_bad_strings() {
        for bad in [
            "",
            "2",
            "s",
            "1.5s",
            "-1s",
            "2 s",
            "2sec",
            "1m30s",
            "99999999999999999999ms",
            "18446744073709551615h",
        ] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        assert_eq!(Duration::from_millis(120_000).to_string(), "2m");
        assert_eq!(Duration::from_millis(1_500).to_string(), "1500ms");
        assert_eq!(Duration::from_millis(7_200_000).to_string(), "2h");
        assert_eq!(Duration::from_millis(0).to_string(), "0s");
    }
}

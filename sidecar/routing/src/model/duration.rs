//! Durations written Go-style: `200ms`, `2s`, `1m30s`, `1.5s`, `1h`. The one duration
//! parser of graylane: every command-line flag of the binaries, and rule documents
//! (which keep to its simplest form, see [`Duration::parse_simple`]).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::path::quote;

/// A whole number of milliseconds. [`Duration::parse`] reads what Go's
/// `time.ParseDuration` reads, in units `h`, `m`, `s` and `ms`; it is written back in
/// the largest unit that keeps it exact (`120s` reads back as `2m`, `1m30s` as `90s`),
/// so a round trip keeps the value, not the spelling.
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

    /// Parses one or more `<number><unit>` parts (`200ms`, `2s`, `1m30s`, `1.5s`,
    /// `1h`); a number may have a fraction when the total is a whole number of
    /// milliseconds. No signs or spaces. The error is the reason, for a human.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{} is not a duration: write numbers with a unit, ms, s, m or h (e.g. 200ms, 1.5s, 1m30s)",
                quote(s)
            )
        };
        if s.is_empty() {
            return Err(bad());
        }
        // Thousandths of a millisecond, exactly, so `1.5s` is exact and `1.0005s` is
        // refused rather than rounded; arithmetic is checked, an overflow is refused.
        let mut micros: u128 = 0;
        let mut exact = true;
        let mut rest = s;
        while !rest.is_empty() {
            if rest.len() > 64 {
                return Err(format!("{} is too long a duration", quote(s)));
            }
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let (number, tail) = rest.split_at(number_len);
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, next) = tail.split_at(unit_len);
            let per = UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, per)| u128::from(*per) * 1000)
                .ok_or_else(bad)?;
            let (value, whole) = scaled(number, per).ok_or_else(bad)?;
            exact &= whole;
            micros = micros.checked_add(value).ok_or_else(bad)?;
            rest = next;
        }
        if !exact || !micros.is_multiple_of(1000) {
            return Err(format!(
                "{} is not a duration: not a whole number of milliseconds",
                quote(s)
            ));
        }
        let millis = u64::try_from(micros / 1000)
            .map_err(|_| format!("{} is too long a duration", quote(s)))?;
        Ok(Self { millis })
    }

    /// The form rule documents use: one whole number and a unit (`200ms`, `2s`, `1m`),
    /// the form [`Duration`] is written back in, so a document reads the same after a
    /// round trip through the control plane.
    pub fn parse_simple(s: &str) -> Result<Self, String> {
        let one_part = s
            .find(|c: char| !c.is_ascii_digit())
            .is_some_and(|i| i > 0 && !s[i..].contains(|c: char| c.is_ascii_digit() || c == '.'));
        let bad = || {
            format!(
                "{} is not a duration: write a whole number and a unit, ms, s, m or h (e.g. 200ms, 2s, 1m)",
                quote(s)
            )
        };
        if !one_part {
            return Err(bad());
        }
        // `2S`, `1d`: refused by `parse`, whose advice (`1.5s`, `1m30s`) is for flags,
        // not for this form. Its other reasons (too long) stand.
        Self::parse(s).map_err(|e| {
            if e.contains("is not a duration") {
                bad()
            } else {
                e
            }
        })
    }
}

/// `number` (digits, optionally `.digits`) times `per`, rounded down, and whether that
/// is exact: `None` when it is not such a number or the product overflows.
fn scaled(number: &str, per: u128) -> Option<(u128, bool)> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (number.contains('.') && !digits(fraction)) {
        return None;
    }
    let mut value = whole.parse::<u128>().ok()?.checked_mul(per)?;
    let fraction = fraction.trim_end_matches('0');
    let mut exact = true;
    if !fraction.is_empty() {
        let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
        let f = fraction.parse::<u128>().ok()?.checked_mul(per)?;
        exact = f % scale == 0;
        value = value.checked_add(f / scale)?;
    }
    Some((value, exact))
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
        Self::parse_simple(&String::deserialize(d)?).map_err(serde::de::Error::custom)
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
    fn parses_go_style_compounds_and_fractions() {
        let ms = |s: &str| Duration::parse(s).unwrap().as_millis();
        assert_eq!(ms("1m30s"), 90_000);
        assert_eq!(ms("1h2m3s4ms"), 3_723_004);
        assert_eq!(ms("1.5s"), 1_500);
        assert_eq!(ms("0.25s"), 250);
        assert_eq!(ms("1.5h"), 5_400_000);
        assert_eq!(ms("2.000s"), 2_000);
        assert_eq!(ms("1.0005h"), 3_601_800);
        assert_eq!(Duration::parse("1m30s").unwrap().to_string(), "90s");
    }

    #[test]
    fn rule_documents_keep_to_one_whole_number_and_a_unit() {
        assert_eq!(Duration::parse_simple("90s").unwrap().as_millis(), 90_000);
        // Every refusal gives this form's advice, never the flags' (`1.5s`, `1m30s`).
        for bad in ["1m30s", "1.5s", "2", "s", "", "2S", "1d", "1us"] {
            let e = Duration::parse_simple(bad).unwrap_err();
            assert!(e.contains("is not a duration"), "{bad}: {e}");
            assert!(
                e.contains("(e.g. 200ms, 2s, 1m)") && !e.contains("1m30s)"),
                "{bad}: {e}"
            );
        }
        let yaml: Result<Duration, _> = serde_json::from_str("\"1.5s\"");
        assert!(yaml.is_err());
    }

    #[test]
    fn rejects_bad_strings() {
        for bad in [
            "",
            "2",
            "s",
            "-1s",
            "2 s",
            "2sec",
            "1.s",
            ".5s",
            "1..5s",
            "1.5ms",
            "1.0005s",
            "1.9999995ms",
            "1m30",
            "m30s",
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

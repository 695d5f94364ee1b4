//! The trace id of a W3C `traceparent` header (<https://www.w3.org/TR/trace-context/>):
//! `version-traceid-parentid-flags`, e.g.
//! `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.

/// The fields of a W3C `traceparent` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    /// The caller's span.
    pub parent_id: [u8; 8],
    /// Bit 0: sampled.
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value; `None` when it is not a valid one.
    ///
    /// Follows the W3C parsing rules: lowercase hex only; version `ff` is invalid;
    /// version `00` is exactly 55 characters; a later version may carry more fields
    /// after a `-`; an all-zero trace id or parent id is invalid. Surrounding
    /// whitespace is ignored.
    pub fn parse(value: &str) -> Option<Self> {
        let v = value.trim().as_bytes();
        if v.len() < 55 {
            return None;
        }
        let version = hex_bytes::<1>(&v[0..2])?[0];
        if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
            return None;
        }
        if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let trace_id = hex_bytes::<16>(&v[3..35])?;
        let parent_id = hex_bytes::<8>(&v[36..52])?;
        let flags = hex_bytes::<1>(&v[53..55])?[0];
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The header value (version 00), lowercase hex.
    pub fn to_header(&self) -> String {
        self.to_bytes().iter().map(|&b| char::from(b)).collect()
    }

    /// The header value (version 00) as bytes: what the proxy sends on every request,
    /// written in place rather than pushed a character at a time.
    pub fn to_bytes(&self) -> [u8; 55] {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        write_hex(&mut out[3..35], &self.trace_id);
        write_hex(&mut out[36..52], &self.parent_id);
        write_hex(&mut out[53..55], &[self.flags]);
        out
    }
}

/// Lowercase hex of `bytes` into `out` (twice as long).
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&hex_pair(b));
    }
}

/// Lowercase hex of `bytes`, appended to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        out.extend(hex_pair(b).map(char::from));
    }
}

fn hex_pair(b: u8) -> [u8; 2] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]
}

/// The 16-byte trace id, or `None` when the value is not a valid `traceparent` (see
/// `TraceParent::parse`).
pub fn trace_id_from_traceparent(value: &str) -> Option<[u8; 16]> {
    TraceParent::parse(value).map(|t| t.trace_id)
}

fn hex_bytes<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_the_trace_id() {
        let id = trace_id_from_traceparent(GOOD).unwrap();
        assert_eq!(id[0], 0x4b);
        assert_eq!(id[15], 0x36);
        assert_eq!(trace_id_from_traceparent(&format!(" {GOOD} ")), Some(id));
    }

    #[test]
    fn future_versions_may_carry_more_fields() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(trace_id_from_traceparent(v).is_some());
        assert!(trace_id_from_traceparent(&format!("{GOOD}-extra")).is_none());
    }

    #[test]
    fn rejects_invalid_values() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-011",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é1",
        ] {
            assert!(trace_id_from_traceparent(bad).is_none(), "{bad}");
        }
    }
}

#[cfg(test)]
mod round_trip {
    use super::TraceParent;

    #[test]
    fn parses_and_writes_back() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceParent::parse(v).expect("valid");
        assert!(t.sampled());
        assert_eq!(
            t.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(t.to_header(), v);
        assert!(!TraceParent { flags: 0, ..t }.sampled());
    }
}

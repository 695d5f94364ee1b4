//! The trace id of a W3C `traceparent` header (<https://www.w3.org/TR/trace-context/>):
//! `version-traceid-parentid-flags`, e.g.
//! `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.

/// The 16-byte trace id, or `None` when the value is not a valid `traceparent`.
///
/// Follows the W3C parsing rules: lowercase hex only; version `ff` is invalid; version
/// `00` is exactly 55 characters; a later version may carry more fields after a `-`;
/// an all-zero trace id or parent id is invalid. Surrounding whitespace is ignored.
pub fn trace_id_from_traceparent(value: &str) -> Option<[u8; 16]> {
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
    hex_bytes::<1>(&v[53..55])?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(trace_id)
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

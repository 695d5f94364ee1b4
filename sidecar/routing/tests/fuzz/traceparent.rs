//! Target `traceparent`: `TraceParent::parse` against the W3C rules, and re-rendering.

use graylane_routing::{TraceParent, trace_id_from_traceparent};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseResult;

use crate::harness::text;
use crate::strategies::{arbitrary_bytes, bytes_of, chars_of, huge, mutated};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn id<const N: usize>() -> impl Strategy<Value = [u8; N]>
where
    [u8; N]: Arbitrary,
{
    prop_oneof![9 => any::<[u8; N]>(), 1 => Just([0; N])]
}

/// A traceparent, mostly valid, else wrong in one way: another version, a field one
/// digit short or long, uppercase, a suffix, padding, an all-zero id.
fn traceparent_header() -> impl Strategy<Value = String> {
    let version = prop_oneof![
        6 => Just("00".to_owned()),
        1 => select(&["01", "cc", "fe", "ff", "0F", "zz", "0", "000"][..]).prop_map(String::from),
        1 => any::<u8>().prop_map(|v| hex(&[v])),
    ];
    let fields = (version, id::<16>(), id::<8>(), any::<u8>());
    let suffix = prop_oneof![6 => Just(""), 1 => select(&["-", "-extra", "x", "-00-00", "\n"][..])];
    let pad =
        prop_oneof![6 => Just(""), 1 => select(&[" ", "\t", " \t ", "\u{a0}", "\u{3000}"][..])];
    // Which field to cut or lengthen by a digit, or 4: shout the whole value.
    let fault = prop_oneof![6 => Just(None), 1 => (0usize..5, any::<bool>()).prop_map(Some)];
    (fields, suffix, pad, fault).prop_map(
        |((version, trace, parent, flags), suffix, pad, fault)| {
            let mut parts = [version, hex(&trace), hex(&parent), hex(&[flags])];
            match fault {
                Some((field @ 0..4, true)) => parts[field].push('a'),
                Some((field @ 0..4, false)) => {
                    parts[field].pop();
                }
                _ => {}
            }
            let body = format!("{}{suffix}", parts.join("-"));
            let body = if matches!(fault, Some((4, _))) {
                body.to_ascii_uppercase()
            } else {
                body
            };
            format!("{pad}{body}{pad}")
        },
    )
}

/// What long tails are made of.
const TRACEPARENT_TAILS: &[&[u8]] = &[b"-", b"0", b"a-", b" "];

pub(crate) fn inputs() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => arbitrary_bytes(),
        4 => bytes_of(chars_of("0123456789abcdef-", 50..61)),
        16 => bytes_of(traceparent_header()),
        16 => mutated(bytes_of(traceparent_header())),
        1 => (traceparent_header(), huge(select(TRACEPARENT_TAILS).prop_map(<[u8]>::to_vec)))
            .prop_map(|(h, tail)| [h.into_bytes(), tail].concat()),
    ]
}

fn is_lower_hex(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// The W3C trace-context rules, written out: `version-traceid-parentid-flags`,
/// lowercase hex, version `ff` invalid, version `00` exactly 55 characters, later
/// versions may add `-`-separated fields, all-zero ids invalid.
fn expected_traceparent_valid(value: &str) -> bool {
    let v = value.trim().as_bytes();
    v.len() >= 55
        && is_lower_hex(&v[0..2])
        && &v[0..2] != b"ff"
        && (&v[0..2] != b"00" || v.len() == 55)
        && (v.len() == 55 || v[55] == b'-')
        && (v[2], v[35], v[52]) == (b'-', b'-', b'-')
        && is_lower_hex(&v[3..35])
        && is_lower_hex(&v[36..52])
        && is_lower_hex(&v[53..55])
        && v[3..35].iter().any(|&c| c != b'0')
        && v[36..52].iter().any(|&c| c != b'0')
}

pub(crate) fn check(bytes: &[u8]) -> TestCaseResult {
    let s = text(bytes);
    let parsed = TraceParent::parse(&s);
    prop_assert_eq!(parsed.is_some(), expected_traceparent_valid(&s));
    prop_assert_eq!(trace_id_from_traceparent(&s), parsed.map(|t| t.trace_id));
    let Some(tp) = parsed else {
        return Ok(());
    };
    prop_assert!(tp.trace_id != [0; 16] && tp.parent_id != [0; 8]);
    prop_assert_eq!(tp.sampled(), tp.flags & 1 == 1);
    let header = tp.to_header();
    let given = s.trim();
    prop_assert_eq!(header.len(), 55);
    prop_assert!(header.starts_with("00-"));
    // Byte-identical: the same lowercase digits, whatever the version was.
    prop_assert_eq!(&header[3..], &given[3..55]);
    if given.starts_with("00") {
        prop_assert_eq!(header.as_str(), given);
    }
    prop_assert_eq!(TraceParent::parse(&header), Some(tp));
    // Uppercase hex is invalid: shouting a valid value with a letter in it breaks it.
    if given[..55].bytes().any(|c| c.is_ascii_lowercase()) {
        prop_assert_eq!(TraceParent::parse(&given.to_ascii_uppercase()), None);
    }
    Ok(())
}

//! Fuzz targets for the parsers a client controls, on the stable toolchain (cargo-fuzz
//! needs nightly): the tag, W3C `baggage` and `traceparent`, the string matchers, and
//! the TagPolicy/RoutePolicy matching that reads a request (`inbound_tag`, `route`,
//! `explain`).
//!
//! Each target is one test. It replays `tests/corpus/<target>/*` first (one raw input
//! per file), then, for the header parsers, every one-byte substitution and insertion
//! of a few valid values, then `GRAYLANE_FUZZ_CASES` generated inputs (default
//! [`DEFAULT_CASES`]): arbitrary bytes and structure-aware ones (near-valid values with
//! a few bytes edited, wrong lengths and versions, percent-escapes, separators, quotes,
//! whitespace, non-UTF-8, inputs up to 64 KiB). The properties go past "does not
//! panic": every answer is checked against the contract in the function's doc comment.
//! `.ci/fuzz` runs the same tests with many more cases.
//!
//! When a case fails, its input (shrunk, for a generated one) is written to
//! `target/tmp/fuzz-artifacts/<target>/`: add it to the corpus with the fix. proptest
//! also records the failing seed in `proptest-regressions/fuzz.txt` (next to `tests/`)
//! and replays it first on later runs; commit that file too.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::LazyLock;

use graylane_routing::{
    BAGGAGE_KEY, Cidr, HashKey, InboundSource, InboundTag, Incoming, Instance, MatchBlock,
    Metadata, Name, Pattern, REGEX_MAX_LEN, RequestView, Resource, Route, RouteError, RoutingTable,
    RuleSet, ServiceName, StableHasher, StringMatch, TAG_MAX_LEN, Tag, TagPolicy, TagPolicySpec,
    TagRule, TraceParent, baggage_entry, baggage_with, baggage_with_tag, baggage_without_tag,
    stable_hash, tag_from_baggage, trace_id_from_traceparent,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{
    Config, FileFailurePersistence, TestCaseResult, TestError, TestRunner,
};

/// Generated cases per target when `GRAYLANE_FUZZ_CASES` is not set: enough to catch
/// a regression in a normal test run, small enough to keep it quick.
const DEFAULT_CASES: u32 = 256;

/// The largest generated input: far above any real header, to show the parsers stay
/// linear (a quadratic one would make the long run time out).
const MAX_INPUT: usize = 64 * 1024;

// ---------------------------------------------------------------------------------
// The harness.

fn cases() -> u32 {
    match std::env::var("GRAYLANE_FUZZ_CASES") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("GRAYLANE_FUZZ_CASES={v:?} is not a number")),
        Err(_) => DEFAULT_CASES,
    }
}

/// A target whose input is one header value: replays its corpus, then every one-byte
/// substitution and insertion of each of `seeds` (the near-misses that random draws
/// find slowly), then generated inputs.
fn fuzz_bytes(
    target: &str,
    seeds: &[&[u8]],
    strategy: impl Strategy<Value = Vec<u8>>,
    check: fn(&[u8]) -> TestCaseResult,
) {
    let mut edits = Vec::new();
    for seed in seeds {
        for at in 0..=seed.len() {
            for byte in 0..=u8::MAX {
                edits.push([&seed[..at], &[byte], &seed[at..]].concat());
                if at < seed.len() {
                    edits.push([&seed[..at], &[byte], &seed[at + 1..]].concat());
                }
            }
        }
    }
    fuzz(
        target,
        &edits,
        strategy,
        <[u8]>::to_vec,
        |b| Some(b.clone()),
        |b: &Vec<u8>| check(b),
    );
}

/// Runs `check` on every corpus file of `target`, then on each of `fixed`, then on
/// `cases()` inputs drawn from `strategy`. `from_corpus` turns a file's bytes into an
/// input; `to_corpus` gives the bytes to save when a generated input fails (`None`
/// when it has no raw form).
fn fuzz<S: Strategy>(
    target: &str,
    fixed: &[S::Value],
    strategy: S,
    from_corpus: fn(&[u8]) -> S::Value,
    to_corpus: fn(&S::Value) -> Option<Vec<u8>>,
    check: impl Fn(&S::Value) -> TestCaseResult,
) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    for file in &files {
        let input = from_corpus(&std::fs::read(file).unwrap());
        match catch_unwind(AssertUnwindSafe(|| check(&input))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("corpus {}: {e}", file.display()),
            Err(_) => panic!("corpus {}: panicked (above)", file.display()),
        }
    }
    for input in fixed {
        if let Err(e) = check(input) {
            fail(target, &e, input, to_corpus);
        }
    }

    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/fuzz.txt"
        )))),
        ..Config::default()
    });
    match runner.run(&strategy, |input| check(&input)) {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => fail(target, &why, &input, to_corpus),
        Err(TestError::Abort(why)) => panic!("{target}: aborted: {why}"),
    }
}

/// Reports a failing input, saved as a file when it has a raw form.
fn fail<T: fmt::Debug>(
    target: &str,
    why: &dyn fmt::Display,
    input: &T,
    to_corpus: fn(&T) -> Option<Vec<u8>>,
) -> ! {
    let Some(bytes) = to_corpus(input) else {
        panic!("{target}: {why}\ninput: {input:?}");
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-artifacts")
        .join(target);
    let file = dir.join(format!("{:016x}", stable_hash(&bytes)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&file, &bytes).unwrap();
    panic!(
        "{target}: {why}\ninput: b\"{}\"\nsaved as {}: copy it into tests/corpus/{target}/",
        bytes.escape_ascii(),
        file.display()
    );
}

/// Bytes as the `&str` the parsers take. The sidecar hands them `HeaderValue::to_str`
/// output (visible ASCII) but the functions accept any string; replacing bad UTF-8
/// (rather than dropping the input) keeps the rest of the bytes in play.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------------
// Generic generators.

/// Bytes that mean something to one of the grammars, or to UTF-8.
const SPECIAL: &[u8] = b",;=%-._ \t\r\n\"'\\0aAfFgzZ\x00\x7f\x80\xbf\xc3\xe3\xff";

fn special_byte() -> impl Strategy<Value = u8> {
    prop_oneof![select(SPECIAL), b' '..=b'~', any::<u8>()]
}

fn arbitrary_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![vec(any::<u8>(), 0..128), vec(special_byte(), 0..128)]
}

/// `base` with one to four edits: a byte replaced, inserted or removed, a range
/// doubled, or the end cut off.
fn mutated(base: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let edit = (0u8..5, any::<Index>(), any::<Index>(), special_byte());
    (base, vec(edit, 1..5)).prop_map(|(mut b, edits)| {
        for (kind, at, to, byte) in edits {
            let i = at.index(b.len() + 1);
            match kind {
                0 if i < b.len() => b[i] = byte,
                1 if i < b.len() => {
                    b.remove(i);
                }
                2 => {
                    let j = i + to.index(b.len() + 1 - i);
                    let copy = b[i..j].to_vec();
                    b.splice(j..j, copy);
                }
                3 => b.truncate(i),
                _ => b.insert(i, byte),
            }
        }
        b
    })
}

/// `unit` repeated up to [`MAX_INPUT`] bytes.
fn huge(unit: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (unit, 1024..=MAX_INPUT)
        .prop_map(|(unit, len)| unit.iter().copied().cycle().take(len).collect())
}

fn huge_text(unit: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (unit, 1024..=MAX_INPUT).prop_map(|(unit, len)| {
        let times = len / unit.len().max(1);
        unit.repeat(times)
    })
}

fn bytes_of(s: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<u8>> {
    s.prop_map(String::into_bytes)
}

/// Strings of `len` characters from `set`. (proptest's regex strings do the same but
/// cost more than the checks they feed.)
fn chars_of(set: &'static str, len: Range<usize>) -> impl Strategy<Value = String> {
    let set: Vec<char> = set.chars().collect();
    vec(select(set), len).prop_map(String::from_iter)
}

/// Strings of any characters, biased to the interesting ones.
fn any_chars(len: Range<usize>) -> impl Strategy<Value = String> {
    vec(any::<char>(), len).prop_map(String::from_iter)
}

const PRINTABLE: &str = " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";

// ---------------------------------------------------------------------------------
// Target `tag`: `Tag::parse` accepts exactly `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.

static TAG_GRAMMAR: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$").unwrap());

const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

const TAG_CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";

fn valid_tag() -> impl Strategy<Value = String> {
    (chars_of(ALNUM, 1..2), chars_of(TAG_CHARS, 0..TAG_MAX_LEN)).prop_map(|(a, b)| a + &b)
}

fn tag_inputs() -> impl Strategy<Value = Vec<u8>> {
    let near = prop_oneof![
        bytes_of(valid_tag()),
        // Around the length limit.
        (chars_of(ALNUM, 1..2), TAG_MAX_LEN - 2..=TAG_MAX_LEN + 2)
            .prop_map(|(c, n)| c.repeat(n).into_bytes()),
    ];
    prop_oneof![
        12 => arbitrary_bytes(),
        8 => bytes_of(any_chars(0..70)),
        12 => near.clone(),
        16 => mutated(near),
        1 => huge(bytes_of(chars_of("ab.-", 1..5))),
    ]
}

fn check_tag(bytes: &[u8]) -> TestCaseResult {
    let s = text(bytes);
    let parsed = Tag::parse(&s);
    prop_assert_eq!(parsed.is_some(), TAG_GRAMMAR.is_match(&s));
    let json = serde_json::to_string(&s).unwrap();
    match parsed {
        Some(tag) => {
            prop_assert_eq!(tag.as_str(), s.as_str());
            prop_assert_eq!(tag.to_string(), s.as_str());
            prop_assert!(tag.as_str().len() <= TAG_MAX_LEN);
            prop_assert_eq!(s.parse::<Tag>(), Ok(tag.clone()));
            prop_assert_eq!(&serde_json::to_string(&tag).unwrap(), &json);
            prop_assert_eq!(serde_json::from_str::<Tag>(&json).unwrap(), tag);
        }
        None => {
            let e = s.parse::<Tag>().unwrap_err();
            prop_assert!(e.contains("is not a valid tag"), "{}", e);
            prop_assert!(serde_json::from_str::<Tag>(&json).is_err());
        }
    }
    Ok(())
}

#[test]
fn fuzz_tag() {
    let longest = [b'a'; TAG_MAX_LEN];
    fuzz_bytes(
        "tag",
        &[b"a", b"v2.1_rc-3", &longest],
        tag_inputs(),
        check_tag,
    );
}

// ---------------------------------------------------------------------------------
// Target `baggage`: `tag_from_baggage`, `baggage_with_tag`, `baggage_without_tag`,
// `baggage_entry`, `baggage_with`, each against the contract in its doc comment.

/// Keys, spelled as senders spell them.
const BAGGAGE_KEYS: &[&str] = &[
    "gray-publish",
    "Gray-Publish",
    " GRAY-PUBLISH ",
    "\tgray-publish",
    "gray_publish",
    "gray-publish;p",
    "userId",
    "k",
    "",
];

const BAGGAGE_VALUES: &[&str] = &[
    "gray",
    "blue",
    "v2.1_rc-3",
    "%67ray",
    "%67%72%61%79",
    "gr%2",
    "%",
    "%g1",
    "%+1",
    "%ff",
    "%c3%a9",
    "a%20b",
    "-x",
    "",
    " gray ",
    "\"gray\"",
    "gray;ttl=10",
    "gray;p",
    "a=b",
];

fn baggage_member() -> impl Strategy<Value = String> {
    let key = prop_oneof![3 => select(BAGGAGE_KEYS).prop_map(String::from), 1 => chars_of(PRINTABLE, 0..9)];
    let value = prop_oneof![
        3 => select(BAGGAGE_VALUES).prop_map(String::from),
        1 => valid_tag(),
        1 => chars_of(PRINTABLE, 0..13),
    ];
    let props = prop_oneof![Just(""), Just(";p"), Just(";ttl=10"), Just(" ; a = b ")];
    (key, any::<bool>(), value, props).prop_map(|(k, eq, v, p)| {
        if eq {
            format!("{k}={v}{p}")
        } else {
            format!("{k}{p}")
        }
    })
}

fn baggage_header() -> impl Strategy<Value = String> {
    let sep = select(&[",", ", ", " ,", ",,", ",\t"][..]);
    vec((baggage_member(), sep), 0..24).prop_map(|members| {
        let mut out = String::new();
        for (m, sep) in members {
            out.push_str(&m);
            out.push_str(sep);
        }
        out.pop();
        out
    })
}

fn baggage_inputs() -> impl Strategy<Value = Vec<u8>> {
    let many = prop_oneof![
        bytes_of(baggage_member().prop_map(|m| m + ",")),
        Just(b"gray-publish=gray,".to_vec()),
        Just(b"a=1,".to_vec()),
        Just(b"%41".to_vec()),
        Just(b",".to_vec()),
        Just(b" ".to_vec()),
        Just(b"=".to_vec()),
    ];
    prop_oneof![
        12 => arbitrary_bytes(),
        24 => bytes_of(baggage_header()),
        24 => mutated(bytes_of(baggage_header())),
        1 => huge(many),
        // One huge member among normal ones.
        1 => (baggage_header(), huge_text(Just("%61".to_owned())))
            .prop_map(|(h, v)| format!("{h},gray-publish={v},x=y").into_bytes()),
    ]
}

fn members(baggage: &str) -> impl Iterator<Item = &str> {
    baggage.split(',').map(str::trim).filter(|m| !m.is_empty())
}

/// Whether a member is a `gray-publish` entry (with or without `=value`).
fn is_tag_member(member: &str) -> bool {
    let key = member.split_once('=').map_or(member, |(k, _)| k);
    key.trim().eq_ignore_ascii_case(BAGGAGE_KEY)
}

/// `%XX` escapes decoded (exactly two hex digits each), as W3C baggage values are.
fn percent_decoded(value: &str) -> Option<String> {
    let mut out = Vec::new();
    let mut rest = value.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'%' {
            out.push(b);
            continue;
        }
        let [hi, lo, tail @ ..] = tail else {
            return None;
        };
        let digit = |c: &u8| char::from(*c).to_digit(16);
        out.push(u8::try_from(digit(hi)? * 16 + digit(lo)?).ok()?);
        rest = tail;
    }
    String::from_utf8(out).ok()
}

/// What `tag_from_baggage` must answer: the tag when every `gray-publish=` entry
/// holds the same valid (decoded) tag, else none.
fn expected_baggage_tag(baggage: &str) -> Option<Tag> {
    let mut found: Option<Tag> = None;
    for member in baggage.split(',') {
        let Some((key, value)) = member.split_once('=') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case(BAGGAGE_KEY) {
            continue;
        }
        let value = value.split_once(';').map_or(value, |(v, _)| v).trim();
        let tag = Tag::parse(&percent_decoded(value)?)?;
        if found.as_ref().is_some_and(|f| *f != tag) {
            return None;
        }
        found = Some(tag);
    }
    found
}

fn check_baggage(bytes: &[u8]) -> TestCaseResult {
    let s = text(bytes);
    let found = tag_from_baggage(&s);
    prop_assert_eq!(&found, &expected_baggage_tag(&s));
    if found.is_some() {
        prop_assert!(baggage_entry(&s, BAGGAGE_KEY).is_some());
    }

    let others: Vec<&str> = members(&s).filter(|m| !is_tag_member(m)).collect();
    let without = baggage_without_tag(&s);
    prop_assert_eq!(&without, &(!others.is_empty()).then(|| others.join(",")));
    if let Some(w) = &without {
        prop_assert_eq!(tag_from_baggage(w), None);
        prop_assert!(!members(w).any(is_tag_member));
        prop_assert_eq!(baggage_without_tag(w), Some(w.clone()));
    }

    for tag in ["gray", "v2.1_rc-3", "z".repeat(TAG_MAX_LEN).as_str()] {
        let tag = Tag::parse(tag).unwrap();
        let with = baggage_with_tag(Some(&s), &tag);
        prop_assert_eq!(tag_from_baggage(&with), Some(tag.clone()));
        prop_assert_eq!(baggage_entry(&with, BAGGAGE_KEY), Some(tag.as_str()));
        let listed: Vec<&str> = members(&with).collect();
        prop_assert_eq!(listed[0], format!("{BAGGAGE_KEY}={tag}"));
        prop_assert_eq!(listed.iter().filter(|m| is_tag_member(m)).count(), 1);
        prop_assert_eq!(&listed[1..], others.as_slice());
        prop_assert_eq!(baggage_with_tag(Some(&with), &tag), with.clone());
        prop_assert_eq!(baggage_without_tag(&with), without.clone());
    }

    let other = baggage_with(Some(&s), "lane-x", "v%201");
    prop_assert_eq!(baggage_entry(&other, "LANE-X"), Some("v%201"));
    prop_assert_eq!(tag_from_baggage(&other), found);
    Ok(())
}

#[test]
fn fuzz_baggage() {
    let seed = b"a=1, Gray-Publish = %67ray;p ,b";
    fuzz_bytes("baggage", &[seed], baggage_inputs(), check_baggage);
}

// ---------------------------------------------------------------------------------
// Target `traceparent`: `TraceParent::parse` against the W3C rules, and re-rendering.

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

fn traceparent_inputs() -> impl Strategy<Value = Vec<u8>> {
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

fn check_traceparent(bytes: &[u8]) -> TestCaseResult {
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

#[test]
fn fuzz_traceparent() {
    let seeds: [&[u8]; 2] = [
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x",
    ];
    fuzz_bytes(
        "traceparent",
        &seeds,
        traceparent_inputs(),
        check_traceparent,
    );
}

// ---------------------------------------------------------------------------------
// Target `string_match`: `StringMatch::matches` and anchored `Pattern`s on hostile
// values.

/// Regexes with a reputation (nested repetition, overlapping alternatives): harmless
/// for the linear-time regex crate, and the 64 KiB values show it stays so.
const PATTERNS: &[&str] = &[
    "gray|blue",
    "[a-z]+",
    "(a|aa)*b",
    "(x+x+)+y",
    ".*gray.*",
    "(?i)GRAY",
    "/api/.*",
    "\\d{3}",
    "[^;]*",
    "",
    "(.*=.*;)*",
];

/// Each of [`PATTERNS`] as a `Pattern`, and anchored by hand with `\A…\z`.
static COMPILED: LazyLock<Vec<(Pattern, regex::Regex)>> = LazyLock::new(|| {
    PATTERNS
        .iter()
        .map(|p| {
            let whole = regex::Regex::new(&format!("\\A(?:{p})\\z")).unwrap();
            (Pattern::new(p).unwrap(), whole)
        })
        .collect()
});

/// Units of long values: repeated, they feed the regexes their worst case.
const HOSTILE_UNITS: &[&[u8]] = &[b"a", b"x", b"gray", b"=;", b"\xff"];

fn string_match_inputs() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        12 => arbitrary_bytes(),
        8 => bytes_of(any_chars(0..41)),
        8 => bytes_of(chars_of("ax=;y", 0..41)),
        1 => huge(select(HOSTILE_UNITS).prop_map(<[u8]>::to_vec)),
    ]
}

fn check_string_match(bytes: &[u8]) -> TestCaseResult {
    let v = text(bytes);
    let v = v.as_str();
    let cut = v.char_indices().nth(3).map_or(v.len(), |(i, _)| i);
    let head = &v[..cut];
    let (longer, behind) = (format!("{v}x"), format!("x{v}"));
    prop_assert!(StringMatch::Exact(v.to_owned()).matches(Some(v)));
    prop_assert!(!StringMatch::Exact(longer.clone()).matches(Some(v)));
    prop_assert!(StringMatch::Prefix(head.to_owned()).matches(Some(v)));
    prop_assert!(!StringMatch::Prefix(longer.clone()).matches(Some(v)));
    prop_assert!(StringMatch::Present.matches(Some(v)));
    prop_assert!(!StringMatch::Absent.matches(Some(v)));
    for m in [
        StringMatch::Exact(v.to_owned()),
        StringMatch::Prefix(String::new()),
    ] {
        prop_assert!(!m.matches(None));
    }

    // A literal, escaped, matches itself and nothing longer: the anchors hold.
    let literal = regex::escape(v);
    match Pattern::new(&literal) {
        Ok(p) => {
            prop_assert_eq!(p.as_str(), literal.as_str());
            prop_assert!(p.is_match(v));
            prop_assert!(!p.is_match(&longer));
            prop_assert!(!p.is_match(&behind));
            prop_assert!(StringMatch::Regex(p).matches(Some(v)));
        }
        Err(e) => prop_assert!(
            literal.len() > REGEX_MAX_LEN || e.contains("too large"),
            "{}",
            e
        ),
    }

    for (p, anchored) in COMPILED.iter() {
        let whole = p.is_match(v);
        prop_assert_eq!(whole, anchored.is_match(v), "{:?}", p);
        prop_assert_eq!(StringMatch::Regex(p.clone()).matches(Some(v)), whole);
    }
    Ok(())
}

#[test]
fn fuzz_string_match() {
    // No one-byte edits: a regex does not care about one byte the way a grammar does.
    fuzz_bytes(
        "string_match",
        &[],
        string_match_inputs(),
        check_string_match,
    );
}

// ---------------------------------------------------------------------------------
// Target `request`: a generated TagPolicy and request through `inbound_tag`, `route`
// and `explain`, against the MatchBlock semantics written out below.

/// A request as a sidecar would see it: header names in any case, header values as
/// raw bytes (`header` reads the first one, `None` when it is not UTF-8, as the
/// sidecar's `HeaderValue::to_str` does), cookies and query parameters already split.
#[derive(Clone)]
struct Request {
    headers: Vec<(String, Vec<u8>)>,
    cookies: Vec<(String, String)>,
    query: Vec<(String, String)>,
    path: String,
    method: String,
    ip: Option<IpAddr>,
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
            .field("path", &self.path)
            .field("method", &self.method)
            .field("ip", &self.ip)
            .finish()
    }
}

/// A [`Request`] behind the trait, noting lookups that break its contract.
struct View<'a> {
    req: &'a Request,
    /// Header names asked for that were not lowercase (the trait promises lowercase).
    bad_names: Cell<usize>,
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
const HEADER_NAMES: &[&str] = &["x-user", "X-Lane", "x-canary", "User-Agent"];
/// Names requests use: the rules' names in other cases, and others.
const REQUEST_HEADER_NAMES: &[&str] = &[
    "x-user",
    "X-USER",
    "x-lane",
    "X-Lane",
    "x-canary",
    "user-agent",
    "x-other",
];
const COOKIE_NAMES: &[&str] = &["uid", "lane", "Lane"];
const QUERY_NAMES: &[&str] = &["q", "ids[]", "lane", ""];
const RULE_METHODS: &[&str] = &["GET", "post", "Delete"];
const METHODS: &[&str] = &[
    "GET", "get", "Post", "post", "DELETE", "delete", "PATCH", "GÉT", "",
];
const CIDRS: &[&str] = &["10.8.0.0/16", "2001:db8::/32", "0.0.0.0/0", "192.168.1.1"];
const IPS: &[&str] = &[
    "10.8.3.4",
    "10.9.0.1",
    "::ffff:10.8.0.1",
    "2001:db8::1",
    "192.168.1.1",
];
/// Values rules compare against, and that requests carry.
const VALUES: &[&str] = &[
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

fn string_match() -> impl Strategy<Value = StringMatch> {
    let listed = || select(VALUES).prop_map(String::from);
    prop_oneof![
        2 => listed().prop_map(StringMatch::Exact),
        2 => listed().prop_map(StringMatch::Prefix),
        // Compiled once: compiling per case would be most of the cost.
        2 => (0..PATTERNS.len()).prop_map(|i| StringMatch::Regex(COMPILED[i].0.clone())),
        1 => Just(StringMatch::Present),
        1 => Just(StringMatch::Absent),
    ]
}

fn hash_key() -> impl Strategy<Value = HashKey> {
    prop_oneof![
        select(HEADER_NAMES).prop_map(|h| HashKey::Header(h.to_owned())),
        select(COOKIE_NAMES).prop_map(|c| HashKey::Cookie(c.to_owned())),
    ]
}

fn names(list: &'static [&'static str]) -> impl Strategy<Value = String> {
    select(list).prop_map(String::from)
}

/// One condition, as a block.
fn condition() -> impl Strategy<Value = MatchBlock> {
    let block = MatchBlock::default;
    let one = |name, m| BTreeMap::from([(name, m)]);
    let percent = (0u32..=10_000).prop_map(|k| f64::from(k) / 100.0);
    prop_oneof![
        3 => (names(HEADER_NAMES), string_match())
            .prop_map(move |(n, m)| MatchBlock { headers: one(n, m), ..block() }),
        2 => (names(COOKIE_NAMES), string_match())
            .prop_map(move |(n, m)| MatchBlock { cookies: one(n, m), ..block() }),
        2 => (names(QUERY_NAMES), string_match())
            .prop_map(move |(n, m)| MatchBlock { query: one(n, m), ..block() }),
        1 => string_match().prop_map(move |m| MatchBlock { path: Some(m), ..block() }),
        1 => vec(names(RULE_METHODS), 1..3)
            .prop_map(move |methods| MatchBlock { methods, ..block() }),
        1 => vec(select(CIDRS).prop_map(|c| Cidr::parse(c).unwrap()), 1..3)
            .prop_map(move |source_cidrs| MatchBlock { source_cidrs, ..block() }),
        1 => (percent, hash_key()).prop_map(move |(p, key)| MatchBlock {
            percent: Some(p),
            hash_by: Some(key),
            ..block()
        }),
    ]
}

/// Up to three conditions in one block; none is allowed too, since the table is built
/// from unchecked sets as well.
fn leaf_block() -> impl Strategy<Value = MatchBlock> {
    vec(condition(), 0..4).prop_map(|conds| {
        let mut all = MatchBlock::default();
        for c in conds {
            all.headers.extend(c.headers);
            all.cookies.extend(c.cookies);
            all.query.extend(c.query);
            all.path = c.path.or(all.path);
            all.methods.extend(c.methods);
            all.source_cidrs.extend(c.source_cidrs);
            if c.percent.is_some() {
                (all.percent, all.hash_by) = (c.percent, c.hash_by);
            }
        }
        all
    })
}

fn match_block() -> impl Strategy<Value = MatchBlock> {
    leaf_block().prop_recursive(3, 12, 3, |inner| {
        (
            leaf_block(),
            vec(inner.clone(), 0..3),
            proptest::option::weighted(0.3, inner),
        )
            .prop_map(|(mut b, any, not)| {
                b.any = any;
                b.not = not.map(Box::new);
                b
            })
    })
}

fn request() -> impl Strategy<Value = Request> {
    (
        vec((names(REQUEST_HEADER_NAMES), header_value()), 0..8),
        vec((names(COOKIE_NAMES), value()), 0..4),
        vec((names(QUERY_NAMES), value()), 0..4),
        prop_oneof![value(), select(VALUES).prop_map(String::from)],
        names(METHODS),
        proptest::option::of(select(IPS).prop_map(|ip| ip.parse::<IpAddr>().unwrap())),
    )
        .prop_map(|(headers, cookies, query, path, method, ip)| Request {
            headers,
            cookies,
            query,
            path,
            method,
            ip,
        })
}

/// One case of the `request` target.
#[derive(Clone, Debug)]
struct Case {
    incoming: Incoming,
    rules: Vec<(Tag, MatchBlock)>,
    /// Which of [`BASES`]: the RoutePolicy's `stickyBy`.
    base: usize,
    /// Which instances are ready (bit i: instance i).
    ready: u8,
    tag: Option<Tag>,
    req: Request,
    random: u64,
}

fn incoming() -> impl Strategy<Value = Incoming> {
    prop_oneof![
        Just(Incoming::Strip),
        Just(Incoming::Keep),
        Just(Incoming::KeepKnown)
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let tag = || {
        select(&["gray", "blue", "red", "purple", "v2.1_rc-3"][..])
            .prop_map(|t| Tag::parse(t).unwrap())
    };
    (
        incoming(),
        vec((tag(), match_block()), 0..4),
        0..BASE_COUNT,
        any::<u8>(),
        proptest::option::of(tag()),
        request(),
        any::<u64>(),
    )
        .prop_map(|(incoming, rules, base, ready, tag, req, random)| Case {
            incoming,
            rules,
            base,
            ready,
            tag,
            req,
            random,
        })
}

/// A corpus file is one value put everywhere a request carries one, against rules
/// that look at each place.
fn case_from_corpus(bytes: &[u8]) -> Case {
    let s = text(bytes);
    let regex = |p: &str| StringMatch::Regex(Pattern::new(p).unwrap());
    let rules = vec![
        MatchBlock {
            headers: BTreeMap::from([("X-User".to_owned(), regex("(a|aa)*b"))]),
            ..MatchBlock::default()
        },
        MatchBlock {
            cookies: BTreeMap::from([("uid".to_owned(), StringMatch::Prefix("gr".into()))]),
            ..MatchBlock::default()
        },
        MatchBlock {
            query: BTreeMap::from([("ids[]".to_owned(), StringMatch::Exact(s.clone()))]),
            not: Some(Box::new(MatchBlock {
                path: Some(regex(".*gray.*")),
                ..MatchBlock::default()
            })),
            ..MatchBlock::default()
        },
        MatchBlock {
            percent: Some(50.0),
            hash_by: Some(HashKey::Header("X-Lane".into())),
            ..MatchBlock::default()
        },
    ];
    let tags = ["gray", "blue", "red", "v2.1_rc-3"];
    Case {
        incoming: Incoming::KeepKnown,
        rules: tags
            .iter()
            .map(|t| Tag::parse(t).unwrap())
            .zip(rules)
            .collect(),
        base: 1,
        ready: 0b1011,
        tag: Tag::parse("purple"),
        req: Request {
            headers: REQUEST_HEADER_NAMES
                .iter()
                .map(|h| ((*h).to_owned(), bytes.to_vec()))
                .collect(),
            cookies: COOKIE_NAMES
                .iter()
                .map(|c| ((*c).to_owned(), s.clone()))
                .collect(),
            query: QUERY_NAMES
                .iter()
                .map(|q| ((*q).to_owned(), s.clone()))
                .collect(),
            path: s,
            method: "GET".into(),
            ip: "10.8.3.4".parse().ok(),
        },
        random: stable_hash(bytes),
    }
}

/// `stickyBy` of the RoutePolicy in each base rule set: none, a header, a cookie.
const BASES: [&str; BASE_COUNT] = [
    "",
    "  stickyBy: {header: X-User}\n",
    "  stickyBy: {cookie: uid}\n",
];
const BASE_COUNT: usize = 3;
const SERVICE: &str = "entry";

/// Lanes `gray` (v2) and `blue` (v3, falls back to gray), and a RoutePolicy for
/// [`SERVICE`] with 90/10 weights over v1 and v4; one set per [`BASES`] entry.
static BASE_SETS: LazyLock<Vec<RuleSet>> = LazyLock::new(|| {
    BASES
        .iter()
        .map(|sticky| {
            let text = format!(
                "apiVersion: graylane.io/v1
kind: Lane
metadata: {{name: gray}}
spec: {{tag: gray, selector: {{version: v2}}}}
---
apiVersion: graylane.io/v1
kind: Lane
metadata: {{name: blue}}
spec: {{tag: blue, selector: {{version: v3}}, fallback: [gray]}}
---
apiVersion: graylane.io/v1
kind: RoutePolicy
metadata: {{name: {SERVICE}}}
spec:
  service: {SERVICE}
  subsets:
    - {{name: stable, labels: {{version: v1}}}}
    - {{name: canary, labels: {{version: v4}}}}
  default: [{{subset: stable, weight: 90}}, {{subset: canary, weight: 10}}]
{sticky}"
            );
            RuleSet::from_yaml("fuzz.yaml", &text).unwrap()
        })
        .collect()
});

/// The `version` label of each instance of [`SERVICE`]; [`Case::ready`] picks some.
const VERSIONS: [&str; 5] = ["v1", "v1", "v2", "v3", "v4"];

fn table(case: &Case) -> RoutingTable {
    let mut set = BASE_SETS[case.base].clone();
    let policy = TagPolicy {
        metadata: Metadata::named(Name::new("tp-fuzz").unwrap()),
        spec: TagPolicySpec {
            services: vec![ServiceName::new(SERVICE).unwrap()],
            incoming: case.incoming,
            rules: case
                .rules
                .iter()
                .map(|(tag, matches)| TagRule {
                    tag: tag.clone(),
                    matches: matches.clone(),
                })
                .collect(),
        },
    };
    set.insert(Resource::TagPolicy(policy), None);
    let instances = VERSIONS
        .iter()
        .enumerate()
        .filter(|(i, _)| case.ready & (1 << i) != 0)
        .map(|(i, version)| Instance {
            service: SERVICE.into(),
            id: format!("{SERVICE}-{i}"),
            address: format!("10.0.0.{i}:8080"),
            labels: BTreeMap::from([("version".to_owned(), (*version).to_owned())]),
        })
        .collect();
    RoutingTable::build(&set, instances)
}

/// Whether `block` holds for `req`, from MatchBlock's documentation: every given
/// condition holds; header names and methods are case-insensitive; `percent` keeps
/// `stable_hash(salt ‖ 0xff ‖ key) % 10 000` below `percent × 100`.
fn expected_match(block: &MatchBlock, salt: &str, view: &View<'_>) -> bool {
    let header = |name: &str| view.header(&name.to_ascii_lowercase());
    let key_value = |key: &HashKey| match key {
        HashKey::Header(h) => header(h),
        HashKey::Cookie(c) => view.cookie(c),
    };
    let in_bucket = |percent: f64, key: &str| {
        let mut h = StableHasher::new();
        h.write(salt.as_bytes())
            .write(&[0xff])
            .write(key.as_bytes());
        let bucket = u32::try_from(h.finish() % 10_000).unwrap();
        f64::from(bucket) < (percent * 100.0).round()
    };
    (block.methods.is_empty()
        || block
            .methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(view.method())))
        && block
            .path
            .as_ref()
            .is_none_or(|m| m.matches(Some(view.path())))
        && block.headers.iter().all(|(n, m)| m.matches(header(n)))
        && block.query.iter().all(|(n, m)| m.matches(view.query(n)))
        && block.cookies.iter().all(|(n, m)| m.matches(view.cookie(n)))
        && (block.source_cidrs.is_empty()
            || view
                .source_ip()
                .is_some_and(|ip| block.source_cidrs.iter().any(|c| c.contains(ip))))
        && match (block.percent, &block.hash_by) {
            (Some(p), Some(key)) => key_value(key).is_some_and(|v| in_bucket(p, v)),
            _ => true,
        }
        && (block.any.is_empty() || block.any.iter().any(|b| expected_match(b, salt, view)))
        && block
            .not
            .as_ref()
            .is_none_or(|b| !expected_match(b, salt, view))
}

/// What `inbound_tag` must answer, from its documentation.
fn expected_inbound(case: &Case, view: &View<'_>) -> InboundTag {
    let known = |t: &Tag| ["gray", "blue"].contains(&t.as_str());
    let stripped = match &case.tag {
        Some(t)
            if case.incoming == Incoming::Keep
                || (case.incoming == Incoming::KeepKnown && known(t)) =>
        {
            return InboundTag {
                tag: Some(t.clone()),
                source: InboundSource::Incoming,
                rule: None,
                stripped: false,
            };
        }
        Some(_) => true,
        None => false,
    };
    let rule = case
        .rules
        .iter()
        .position(|(tag, block)| expected_match(block, tag.as_str(), view));
    InboundTag {
        tag: rule.map(|i| case.rules[i].0.clone()),
        source: if rule.is_some() {
            InboundSource::Rule
        } else {
            InboundSource::None
        },
        rule,
        stripped,
    }
}

/// A route as data: candidate ids, subset, lane.
type Decision = Result<(Vec<String>, Option<String>, Option<String>), RouteError>;

fn decision(route: Result<Route<'_>, RouteError>) -> Decision {
    route.map(|r| {
        (
            r.candidates.iter().map(|i| i.id.clone()).collect(),
            r.subset.map(String::from),
            r.lane.map(String::from),
        )
    })
}

fn check_request(case: &Case) -> TestCaseResult {
    let table = table(case);
    let view = View {
        req: &case.req,
        bad_names: Cell::new(0),
    };

    let got = table.inbound_tag(SERVICE, case.tag.clone(), &view);
    prop_assert_eq!(&got, &expected_inbound(case, &view));
    prop_assert_eq!(&table.inbound_tag(SERVICE, case.tag.clone(), &view), &got);
    // A service no TagPolicy lists keeps what came in.
    let elsewhere = table.inbound_tag("other", case.tag.clone(), &view);
    prop_assert_eq!(&elsewhere.tag, &case.tag);

    let route = decision(table.route(SERVICE, got.tag.as_ref(), &view, case.random));
    prop_assert_eq!(
        &decision(table.route(SERVICE, got.tag.as_ref(), &view, case.random)),
        &route
    );
    if let Ok((ids, _, _)) = &route {
        prop_assert!(!ids.is_empty());
    }
    let sticky = match case.base {
        1 => view.header("x-user"),
        2 => view.cookie("uid"),
        _ => None,
    };
    if sticky.is_some() {
        let other = case.random ^ 0x5555_5555_5555_5555;
        prop_assert_eq!(
            &decision(table.route(SERVICE, got.tag.as_ref(), &view, other)),
            &route,
            "stickyBy is set and present: the draw must not matter"
        );
    }

    let explained = table.explain(SERVICE, Some(SERVICE), case.tag.clone(), &view, case.random);
    prop_assert_eq!(&explained.tag, &got.tag);
    prop_assert!(!explained.steps.is_empty());
    match (&explained.outcome, &route) {
        (Err(a), Err(b)) => prop_assert_eq!(a, b),
        (Ok(e), Ok((ids, subset, lane))) => {
            prop_assert_eq!(&e.lane, lane);
            let listed: Vec<&String> = e.candidates.iter().map(|i| &i.id).collect();
            // Without a sticky key `explain` lists every candidate the draw could give.
            prop_assert!(ids.iter().all(|id| listed.contains(&id)), "{:?}", listed);
            if sticky.is_some() || e.subset.is_some() {
                prop_assert_eq!(&e.subset, subset);
                prop_assert_eq!(listed, ids.iter().collect::<Vec<_>>());
            }
        }
        (e, r) => prop_assert!(false, "explain {:?} but route {:?}", e, r),
    }

    prop_assert_eq!(
        view.bad_names.get(),
        0,
        "a header was looked up by a non-lowercase name"
    );
    Ok(())
}

#[test]
fn fuzz_request() {
    fuzz(
        "request",
        &[],
        case(),
        case_from_corpus,
        |_| None,
        check_request,
    );
}

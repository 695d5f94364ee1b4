//! Fuzz targets for the parsers a client controls, on the stable toolchain (cargo-fuzz
//! needs nightly): the tag, W3C `baggage` and `traceparent`, the string matchers, and
//! the TagPolicy/RoutePolicy matching that reads a request (`inbound_tag`, `route`,
//! `explain`).
//!
//! Each target is one test. It replays `tests/corpus/<target>/*` first (one raw input
//! per file), then, for the header parsers, every one-byte substitution and insertion
//! of a few valid values, then `GRAYLANE_FUZZ_CASES` generated inputs (default
//! [`harness::DEFAULT_CASES`]): arbitrary bytes and structure-aware ones (near-valid
//! values with a few bytes edited, wrong lengths and versions, percent-escapes,
//! separators, quotes, whitespace, non-UTF-8, inputs up to 64 KiB). The properties go
//! past "does not panic": every answer is checked against the contract in the
//! function's doc comment. `.ci/fuzz` runs the same tests with many more cases.
//!
//! Here are only the entry points. Each target has a module named after its corpus
//! directory (`tag`, `baggage`, `traceparent`, `string_match`, `request`) with its
//! generators and properties; `request` also uses `view` (the request behind
//! `RequestView`) and `match_block` (MatchBlocks and their meaning). The runner is
//! `harness`, the generic generators `strategies`.
//!
//! When a case fails, its input (shrunk, for a generated one) is written to
//! `target/tmp/fuzz-artifacts/<target>/`: add it to the corpus with the fix. proptest
//! also records the failing seed in `proptest-regressions/fuzz.txt` (next to `tests/`)
//! and replays it first on later runs; commit that file too.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use graylane_routing::TAG_MAX_LEN;

use self::harness::{fuzz, fuzz_bytes};

// `#[path]`: a test crate's root looks for modules beside it, in `tests/`, where cargo
// would also build each file as a test binary of its own.
#[path = "fuzz/baggage.rs"]
mod baggage;
#[path = "fuzz/harness.rs"]
mod harness;
#[path = "fuzz/match_block.rs"]
mod match_block;
#[path = "fuzz/request.rs"]
mod request;
#[path = "fuzz/strategies.rs"]
mod strategies;
#[path = "fuzz/string_match.rs"]
mod string_match;
#[path = "fuzz/tag.rs"]
mod tag;
#[path = "fuzz/traceparent.rs"]
mod traceparent;
#[path = "fuzz/view.rs"]
mod view;

#[test]
fn fuzz_tag() {
    let longest = [b'a'; TAG_MAX_LEN];
    fuzz_bytes(
        "tag",
        &[b"a", b"v2.1_rc-3", &longest],
        tag::inputs(),
        tag::check,
    );
}

#[test]
fn fuzz_baggage() {
    let seed = b"a=1, Gray-Publish = %67ray;p ,b";
    fuzz_bytes("baggage", &[seed], baggage::inputs(), baggage::check);
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
        traceparent::inputs(),
        traceparent::check,
    );
}

#[test]
fn fuzz_string_match() {
    // No one-byte edits: a regex does not care about one byte the way a grammar does.
    fuzz_bytes(
        "string_match",
        &[],
        string_match::inputs(),
        string_match::check,
    );
}

#[test]
fn fuzz_request() {
    fuzz(
        "request",
        &[],
        request::case(),
        request::case_from_corpus,
        |_| None,
        request::check,
    );
}

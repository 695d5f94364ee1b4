//! Properties of the tag and of the header parsers that read untrusted bytes.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use graylane_routing::{Tag, baggage_with_tag, tag_from_baggage, trace_id_from_traceparent};
use proptest::prelude::*;

fn grammar() -> regex::Regex {
    regex::Regex::new("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$").unwrap()
}

/// Strings near the grammar, so both answers are common.
fn tagish() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z0-9._ ,-]{0,70}", "\\PC{0,70}", ".{0,8}"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn tag_parse_accepts_exactly_the_grammar(s in tagish()) {
        let parsed = Tag::parse(&s);
        prop_assert_eq!(parsed.is_some(), grammar().is_match(&s));
        if let Some(t) = parsed {
            prop_assert_eq!(t.as_str(), s.as_str());
        }
    }

    #[test]
    fn baggage_parser_never_panics_and_yields_valid_tags(s in "\\PC{0,200}|[a-z=;, %0-9A-F-]{0,60}") {
        if let Some(t) = tag_from_baggage(&s) {
            prop_assert!(grammar().is_match(t.as_str()));
        }
    }

    #[test]
    fn baggage_with_tag_reads_back_the_tag(existing in proptest::option::of("\\PC{0,80}|[a-z=;, -]{0,40}"), t in "[A-Za-z0-9][A-Za-z0-9._-]{0,63}") {
        let tag = Tag::parse(&t).unwrap();
        let header = baggage_with_tag(existing.as_deref(), &tag);
        prop_assert_eq!(tag_from_baggage(&header), Some(tag));
    }

    #[test]
    fn traceparent_parser_never_panics(s in "\\PC{0,80}|[0-9a-f-]{50,60}") {
        let _ = trace_id_from_traceparent(&s);
    }

    #[test]
    fn valid_traceparents_yield_their_trace_id(id in any::<[u8; 16]>(), parent in any::<[u8; 8]>(), flags in any::<u8>()) {
        prop_assume!(id != [0; 16] && parent != [0; 8]);
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let header = format!("00-{}-{}-{flags:02x}", hex(&id), hex(&parent));
        prop_assert_eq!(trace_id_from_traceparent(&header), Some(id));
    }
}

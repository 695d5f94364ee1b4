//! Target `request`: a generated TagPolicy and request through `inbound_tag`, `route`
//! and `explain`, against the MatchBlock semantics written out in
//! [`crate::match_block`].

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use graylane_routing::{
    HashKey, InboundSource, InboundTag, Incoming, Instance, MatchBlock, Metadata, Name, Pattern,
    RequestView, Resource, Route, RouteError, RoutingTable, RuleSet, ServiceName, StringMatch, Tag,
    TagPolicy, TagPolicySpec, TagRule, stable_hash,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseResult;

use crate::harness::text;
use crate::match_block::{expected_match, match_block};
use crate::view::{
    COOKIE_NAMES, QUERY_NAMES, REQUEST_HEADER_NAMES, Request, View, encode_query, request,
};

/// One case of the `request` target.
#[derive(Clone, Debug)]
pub(crate) struct Case {
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

pub(crate) fn case() -> impl Strategy<Value = Case> {
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
pub(crate) fn case_from_corpus(bytes: &[u8]) -> Case {
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
    let query: Vec<(String, String)> = QUERY_NAMES
        .iter()
        .map(|q| ((*q).to_owned(), s.clone()))
        .collect();
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
            raw_query: Some(encode_query(&query, stable_hash(bytes))),
            query,
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
                    rollout: None,
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
            namespace: "default".to_owned(),
            identity: String::new(),
        })
        .collect();
    RoutingTable::build(&set, instances)
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

pub(crate) fn check(case: &Case) -> TestCaseResult {
    let table = table(case);
    let view = View {
        req: &case.req,
        bad_names: Cell::new(0),
    };

    let got = table.inbound_tag("default", SERVICE, case.tag.clone(), &view);
    prop_assert_eq!(&got, &expected_inbound(case, &view));
    prop_assert_eq!(
        &table.inbound_tag("default", SERVICE, case.tag.clone(), &view),
        &got
    );
    // A service no TagPolicy lists keeps what came in.
    let elsewhere = table.inbound_tag("default", "other", case.tag.clone(), &view);
    prop_assert_eq!(&elsewhere.tag, &case.tag);

    let route = decision(table.route("default", SERVICE, got.tag.as_ref(), &view, case.random));
    prop_assert_eq!(
        &decision(table.route("default", SERVICE, got.tag.as_ref(), &view, case.random)),
        &route
    );
    if let Ok((ids, _, _)) = &route {
        prop_assert!(!ids.is_empty());
    }
    // An empty key is no key (release.md: "users without it stay out").
    let sticky = match case.base {
        1 => view.header("x-user"),
        2 => view.cookie("uid"),
        _ => None,
    }
    .filter(|v| !v.is_empty());
    if sticky.is_some() {
        let other = case.random ^ 0x5555_5555_5555_5555;
        prop_assert_eq!(
            &decision(table.route("default", SERVICE, got.tag.as_ref(), &view, other)),
            &route,
            "stickyBy is set and present: the draw must not matter"
        );
    }

    let explained = table.explain(
        "default",
        SERVICE,
        Some(("default", SERVICE)),
        case.tag.clone(),
        &view,
        case.random,
    );
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

//! Property: every valid rule set written as YAML reads back equal.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};

use graylane_routing::{
    Abort, Delay, Duration, Exclude, Fallback, Fault, HashKey, Incoming, Labels, Lane,
    LaneOverride, LaneSpec, MatchBlock, Metadata, Mirror, MtlsMode, Name, Pattern, PeerPolicy,
    PeerPolicySpec, Release, Resource, Retries, RetryOn, RoutePolicy, RoutePolicySpec, RuleSet,
    ServiceName, StringMatch, Subset, Tag, TagPolicy, TagPolicySpec, TagRule, WeightedSubset,
};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use proptest::sample::subsequence;

fn name(prefix: &'static str) -> impl Strategy<Value = Name> {
    "[a-z0-9]{0,6}".prop_map(move |s| Name::new(format!("{prefix}{s}")).unwrap())
}

fn labels() -> impl Strategy<Value = Labels> {
    btree_map(
        "[A-Za-z0-9][A-Za-z0-9._/-]{0,12}",
        "[A-Za-z0-9._/-]{1,12}",
        1..3,
    )
    .prop_map(|m| Labels::new(m).unwrap())
}

fn metadata(n: Name) -> impl Strategy<Value = Metadata> + Clone {
    (
        btree_map("\\PC{0,8}", "\\PC{0,12}", 0..2),
        btree_map("[a-z./]{1,8}", "\\PC{0,20}", 0..2),
    )
        .prop_map(move |(labels, annotations)| Metadata {
            name: n.clone(),
            namespace: None,
            labels,
            annotations,
        })
}

/// Percentages as they read back: two decimals.
fn percent() -> impl Strategy<Value = f64> {
    (0u32..=10_000).prop_map(|k| f64::from(k) / 100.0)
}

fn string_match() -> impl Strategy<Value = StringMatch> {
    let regexes = [
        "[a-z]+",
        "v[0-9]+\\.[0-9]+",
        "(a|b)*c?",
        "/api/.*",
        "\\d{3}",
    ];
    prop_oneof![
        "\\PC{0,16}".prop_map(StringMatch::Exact),
        "\\PC{0,16}".prop_map(StringMatch::Prefix),
        proptest::sample::select(regexes.to_vec())
            .prop_map(|r| StringMatch::Regex(Pattern::new(r).unwrap())),
        Just(StringMatch::Present),
        Just(StringMatch::Absent),
    ]
}

/// Paths as requests carry them once normalised (an `exact` or `prefix` path in any
/// other form never matches, and is refused).
fn path_match() -> impl Strategy<Value = StringMatch> {
    let path = "/([a-z0-9_-]{1,8}/){0,2}[a-z0-9_-]{0,8}";
    prop_oneof![
        path.prop_map(StringMatch::Exact),
        path.prop_map(StringMatch::Prefix),
        string_match().prop_filter("exact and prefix are above", |m| {
            !matches!(m, StringMatch::Exact(_) | StringMatch::Prefix(_))
        }),
    ]
}

fn hash_key() -> impl Strategy<Value = HashKey> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}".prop_map(HashKey::Header),
        "[a-zA-Z0-9_]{1,10}".prop_map(HashKey::Cookie)
    ]
}

fn leaf_block() -> impl Strategy<Value = MatchBlock> {
    (
        btree_map("[a-z][a-z0-9-]{0,8}", string_match(), 0..2),
        btree_map("[a-zA-Z0-9_]{1,8}", string_match(), 0..2),
        btree_map("[a-z\\[\\]]{1,6}", string_match(), 0..2),
        proptest::option::of(path_match()),
        vec("[A-Z]{3,7}", 0..3),
        vec(
            prop_oneof!["10\\.[1-9]?[0-9]\\.0\\.0/16", "2001:db8::/[0-9]{2}"],
            0..3,
        ),
        proptest::option::of((percent(), hash_key())),
    )
        .prop_map(
            |(headers, cookies, query, path, methods, cidrs, percent)| MatchBlock {
                headers,
                cookies,
                query,
                path,
                methods,
                source_cidrs: cidrs
                    .iter()
                    .map(|c| graylane_routing::Cidr::parse(c).unwrap())
                    .collect(),
                percent: percent.as_ref().map(|p| p.0),
                hash_by: percent.map(|p| p.1),
                any: Vec::new(),
                not: None,
            },
        )
        .prop_filter("a block needs a condition", |b| !b.is_empty())
}

fn match_block() -> impl Strategy<Value = MatchBlock> {
    leaf_block().prop_recursive(2, 8, 3, |inner| {
        (
            leaf_block(),
            vec(inner.clone(), 0..3),
            proptest::option::of(inner),
        )
            .prop_map(|(mut b, any, not)| {
                b.any = any;
                b.not = not.map(Box::new);
                b
            })
    })
}

fn lanes() -> impl Strategy<Value = Vec<Lane>> {
    btree_set("[a-z0-9]{1,6}", 0..4).prop_flat_map(|names| {
        let names: Vec<Name> = names
            .into_iter()
            .map(|n| Name::new(format!("lane-{n}")).unwrap())
            .collect();
        let all = names.clone();
        names
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                let others: Vec<Name> = all.iter().filter(|o| **o != n).cloned().collect();
                let count = others.len();
                let fallback = prop_oneof![
                    Just(vec![Fallback::Base]),
                    Just(Vec::new()),
                    (subsequence(others, 0..=count), any::<bool>()).prop_map(|(lanes, base)| {
                        let mut f: Vec<Fallback> = lanes.into_iter().map(Fallback::Lane).collect();
                        if base {
                            f.push(Fallback::Base);
                        }
                        f
                    }),
                ];
                let tag = Tag::parse(&format!("t{i}-{}", n.as_str())).unwrap();
                (metadata(n), labels(), fallback)
                    .prop_map(move |(metadata, selector, fallback)| Lane {
                        metadata,
                        spec: LaneSpec {
                            tag: tag.clone(),
                            selector,
                            fallback,
                        },
                    })
                    .boxed()
            })
            .collect::<Vec<_>>()
    })
}

/// `n` weights summing to 100.
fn weights(n: usize) -> impl Strategy<Value = Vec<u32>> {
    vec(0u32..=100, n).prop_map(|mut w| {
        let sum: u32 = w.iter().sum();
        match 100u32.checked_div(sum) {
            None => w[0] = 100,
            Some(_) => {
                for x in w.iter_mut() {
                    *x = *x * 100 / sum;
                }
                let acc: u32 = w.iter().sum();
                w[0] += 100 - acc;
            }
        }
        w
    })
}

fn retries() -> impl Strategy<Value = Retries> {
    let on = prop_oneof![
        Just(RetryOn::ConnectFailure),
        Just(RetryOn::Reset),
        (400u16..=599).prop_map(RetryOn::Status)
    ];
    (1u32..=10, vec(on, 1..3)).prop_map(|(attempts, on)| Retries { attempts, on })
}

fn fault() -> impl Strategy<Value = Fault> {
    let tag = proptest::option::of("[a-z][a-z0-9]{0,5}".prop_map(|t| Tag::parse(&t).unwrap()));
    let delay = (percent(), 0u64..100_000).prop_map(|(percent, ms)| Delay {
        percent,
        duration: Duration::from_millis(ms),
    });
    let abort = (percent(), 200u16..=599).prop_map(|(percent, status)| Abort { percent, status });
    (
        tag,
        proptest::option::of(delay),
        proptest::option::of(abort),
    )
        .prop_filter("a fault needs a delay or an abort", |(_, d, a)| {
            d.is_some() || a.is_some()
        })
        .prop_map(|(tag, delay, abort)| Fault { tag, delay, abort })
}

/// A valid RoutePolicy for `service`; lane overrides use some of `lane_tags`.
fn route_policy(service: String, lane_tags: Vec<Tag>) -> impl Strategy<Value = RoutePolicy> {
    (btree_set("[a-z0-9]{1,4}", 1..4), labels()).prop_flat_map(move |(subset_names, labels)| {
        let names: Vec<String> = subset_names.iter().map(|s| format!("s{s}")).collect();
        let subsets: Vec<Subset> = names
            .iter()
            .map(|n| Subset {
                name: Name::new(n.as_str()).unwrap(),
                labels: labels.clone(),
            })
            .collect();
        let pick = proptest::sample::select(names.clone());
        let overrides = (
            subsequence(lane_tags.clone(), 0..=lane_tags.len()),
            vec(pick.clone(), lane_tags.len()),
        )
            .prop_map(|(tags, subsets)| {
                tags.into_iter()
                    .zip(subsets)
                    .map(|(tag, subset)| LaneOverride { tag, subset })
                    .collect::<Vec<_>>()
            });
        let default =
            proptest::option::of((weights(names.len()), proptest::option::of(hash_key())));
        let release = prop_oneof![Just(Release::All), Just(Release::Gray), Just(Release::Prod)];
        let timeout = proptest::option::of((1u64..10_000_000).prop_map(Duration::from_millis));
        let mirror = proptest::option::of(
            (pick, percent()).prop_map(|(subset, percent)| Mirror { subset, percent }),
        );
        let service = ServiceName::new(service.as_str()).unwrap();
        (
            (
                name("rp").prop_flat_map(metadata),
                release,
                default,
                overrides,
            ),
            (
                vec("[a-z0-9:.-]{1,12}", 0..3),
                timeout,
                proptest::option::of(retries()),
                mirror,
                proptest::option::of(fault()),
            ),
        )
            .prop_map(
                move |(
                    (metadata, release, default, lanes),
                    (exclude, timeout, retries, mirror, fault),
                )| {
                    let (default, sticky_by) = default.map_or((Vec::new(), None), |(w, sticky)| {
                        let entries = names.iter().zip(w).map(|(s, weight)| WeightedSubset {
                            subset: s.clone(),
                            weight,
                        });
                        (entries.collect(), sticky)
                    });
                    let spec = RoutePolicySpec {
                        service: service.clone(),
                        release,
                        subsets: subsets.clone(),
                        default,
                        sticky_by,
                        lanes,
                        exclude: Exclude { instances: exclude },
                        timeout,
                        retries,
                        mirror,
                        fault,
                    };
                    RoutePolicy { metadata, spec }
                },
            )
    })
}

fn tag_policy(services: Vec<String>) -> impl Strategy<Value = TagPolicy> {
    (
        name("tp"),
        prop_oneof![
            Just(Incoming::Strip),
            Just(Incoming::Keep),
            Just(Incoming::KeepKnown)
        ],
        vec(("[A-Za-z0-9][A-Za-z0-9._-]{0,10}", match_block()), 0..3),
    )
        .prop_flat_map(move |(n, incoming, rules)| {
            let spec = TagPolicySpec {
                services: services
                    .iter()
                    .map(|s| ServiceName::new(s.clone()).unwrap())
                    .collect(),
                incoming,
                rules: rules
                    .into_iter()
                    .map(|(tag, matches)| TagRule {
                        tag: Tag::parse(&tag).unwrap(),
                        matches,
                        rollout: None,
                    })
                    .collect(),
            };
            metadata(n).prop_map(move |metadata| TagPolicy {
                metadata,
                spec: spec.clone(),
            })
        })
}

fn mtls_mode() -> impl Strategy<Value = MtlsMode> {
    prop_oneof![
        Just(MtlsMode::Strict),
        Just(MtlsMode::Permissive),
        Just(MtlsMode::Off)
    ]
}

/// `services` of `None` is the mesh-wide policy.
fn peer_policy(services: Option<Vec<String>>) -> impl Strategy<Value = PeerPolicy> {
    (name("pp"), mtls_mode()).prop_flat_map(move |(n, mtls)| {
        let spec = PeerPolicySpec {
            mtls,
            services: services.as_ref().map(|s| {
                s.iter()
                    .map(|s| ServiceName::new(s.clone()).unwrap())
                    .collect()
            }),
        };
        metadata(n).prop_map(move |metadata| PeerPolicy {
            metadata,
            spec: spec.clone(),
        })
    })
}

/// At most one mesh-wide PeerPolicy, then policies naming disjoint services.
fn peer_policies() -> impl Strategy<Value = Vec<PeerPolicy>> {
    (
        any::<bool>(),
        vec(btree_set("[a-z]{1,5}(\\.[a-z]{1,3})?", 1..3), 0..3),
    )
        .prop_flat_map(|(mesh_wide, named)| {
            let mut used = BTreeSet::new();
            let named = named.into_iter().map(|s| {
                s.into_iter()
                    .filter(|x| used.insert(x.clone()))
                    .collect::<Vec<_>>()
            });
            let all: Vec<_> = mesh_wide
                .then_some(None)
                .into_iter()
                .chain(named.filter(|s| !s.is_empty()).map(Some))
                .map(|s| peer_policy(s).boxed())
                .collect();
            all
        })
}

fn rule_set() -> impl Strategy<Value = RuleSet> {
    lanes().prop_flat_map(|lanes| {
        let tags: Vec<Tag> = lanes.iter().map(|l| l.spec.tag.clone()).collect();
        let services = btree_set("[a-z]{1,5}(\\.[a-z]{1,3})?", 0..4);
        let tag_services = btree_set("[a-z]{1,5}", 1..3);
        let rest = (services, vec(tag_services, 0..3), peer_policies());
        rest.prop_flat_map(move |(services, tag_services, pps)| {
            let policies: Vec<_> = services
                .iter()
                .map(|s| route_policy(s.clone(), tags.clone()).boxed())
                .collect();
            // Each service in at most one TagPolicy: drop services already used.
            let mut used = BTreeSet::new();
            let tps: Vec<_> = tag_services
                .into_iter()
                .map(|s| {
                    s.into_iter()
                        .filter(|x| used.insert(x.clone()))
                        .collect::<Vec<_>>()
                })
                .filter(|s| !s.is_empty())
                .map(|s| tag_policy(s).boxed())
                .collect();
            let lanes = lanes.clone();
            (policies, tps).prop_map(move |(policies, tps)| {
                let pps = pps.clone();
                let mut set = RuleSet::new();
                let mut taken = BTreeMap::new();
                let all = lanes
                    .iter()
                    .cloned()
                    .map(Resource::Lane)
                    .chain(policies.into_iter().map(Resource::RoutePolicy))
                    .chain(tps.into_iter().map(Resource::TagPolicy))
                    .chain(pps.into_iter().map(Resource::PeerPolicy));
                for r in all {
                    // Generated names may collide; keep the first of each kind/name.
                    if taken.insert((r.kind(), r.name().to_owned()), ()).is_none() {
                        set.insert(r, None);
                    }
                }
                set
            })
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn valid_rule_sets_read_back_equal(set in rule_set()) {
        if let Err(e) = set.validate() {
            return Err(TestCaseError::reject(format!("{e:?}")));
        }
        let text = set.to_yaml();
        match RuleSet::from_yaml("gen.yaml", &text) {
            Ok(back) => prop_assert_eq!(back, set, "{}", text),
            Err(e) => prop_assert!(false, "{}\n---- errors:\n{}", text, e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")),
        }
    }

    #[test]
    fn each_resource_reads_back_equal_through_json(set in rule_set()) {
        for r in set.iter() {
            let json = serde_json::to_string(r).unwrap();
            let back: Resource = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, r);
        }
    }
}

use super::*;
use crate::push::{Directory, Removed};

fn endpoints(n: usize) -> Arc<Vec<Endpoint>> {
    let mut list: Vec<Endpoint> = (0..n)
        .map(|i| Endpoint {
            service: format!("svc-{:02}", i % 20),
            instance_id: format!("inst-{i:05}"),
            labels: [("version".to_string(), "v1".to_string())].into(),
            address: format!("10.0.{}.{}:15006", i / 250, i % 250),
            ..Default::default()
        })
        .collect();
    list.sort_by(|a, b| (&a.service, &a.instance_id).cmp(&(&b.service, &b.instance_id)));
    Arc::new(list)
}

fn state(
    version: u64,
    revision: u64,
    rules: &str,
    generation: u64,
    eps: Arc<Vec<Endpoint>>,
) -> Arc<State> {
    Arc::new(State {
        version,
        revision,
        rules: rules.into(),
        endpoints_generation: generation,
        directory: Arc::new(Directory::of(&eps)),
        endpoints: eps,
        endpoint_changes: Arc::default(),
        loaded: true,
        trust_bundle: None,
        traffic_report_interval_ms: 5_000,
        series_labels: Arc::default(),
    })
}

/// Sends every part and reassembles them as a sidecar would.
fn drain(
    mut out: Outgoing,
) -> (
    Vec<Snapshot>,
    Option<String>,
    Option<Vec<Endpoint>>,
    Option<EndpointDelta>,
) {
    let mut parts = Vec::new();
    while let Some(p) = out.next_part() {
        parts.push(p);
    }
    let rules = parts
        .iter()
        .any(|p| p.rules.is_some())
        .then(|| parts.iter().filter_map(|p| p.rules.clone()).collect());
    let full = parts.iter().any(|p| p.endpoints.is_some()).then(|| {
        parts
            .iter()
            .filter_map(|p| p.endpoints.clone())
            .flat_map(|s| s.endpoints)
            .collect()
    });
    let delta = parts.iter().any(|p| p.endpoint_changes.is_some()).then(|| {
        let mut d = EndpointDelta::default();
        for c in parts.iter().filter_map(|p| p.endpoint_changes.clone()) {
            d.removed.extend(c.removed);
            d.upserted.extend(c.upserted);
        }
        d
    });
    (parts, rules, full, delta)
}

#[test]
fn a_large_first_snapshot_is_cut_into_small_parts_that_reassemble_exactly() {
    let rules = "é".repeat(20_000); // 40 KB, multi-byte: cuts must fall on char boundaries
    let s = state(7, 7, &rules, 1, endpoints(1000));
    let (parts, got_rules, full, delta) =
        drain(Outgoing::new(Arc::clone(&s), None, &mut Scope::default()));
    assert!(parts.len() > 5);
    assert!(parts.iter().all(|p| p.version == 7 && p.revision == 7));
    assert!(parts.iter().rev().skip(1).all(|p| p.more) && !parts.last().unwrap().more);
    assert!(
        parts.iter().all(|p| p.encoded_len() <= PART_BYTES + 512),
        "every message stays small"
    );
    assert_eq!(got_rules.as_deref(), Some(rules.as_str()));
    assert_eq!(full.as_deref(), Some(s.endpoints.as_slice()));
    assert!(delta.is_none());
}

#[test]
fn an_empty_first_snapshot_is_one_part_that_still_replaces_endpoints() {
    let (parts, rules, full, _) = drain(Outgoing::new(
        state(1, 0, "", 0, Arc::new(Vec::new())),
        None,
        &mut Scope::default(),
    ));
    assert_eq!(parts.len(), 1);
    assert!(!parts[0].more);
    assert_eq!(
        (rules.as_deref(), full.map(|f| f.len())),
        (Some(""), Some(0))
    );
}

#[test]
fn later_snapshots_carry_only_what_changed() {
    let eps = endpoints(100);
    let first = state(1, 1, "a", 1, Arc::clone(&eps));
    let rules_only = state(2, 2, "b", 1, Arc::clone(&eps));
    let (parts, rules, full, delta) = drain(Outgoing::new(
        Arc::clone(&rules_only),
        Some(&first),
        &mut Scope::default(),
    ));
    assert_eq!(
        (
            parts.len(),
            rules.as_deref(),
            full.is_none(),
            delta.is_none()
        ),
        (1, Some("b"), true, true)
    );

    let mut fewer = eps.as_ref().clone();
    let gone = fewer.remove(3).instance_id;
    let endpoints_only = state(3, 2, "b", 2, Arc::new(fewer));
    let (_, rules, full, delta) = drain(Outgoing::new(
        endpoints_only,
        Some(&rules_only),
        &mut Scope::default(),
    ));
    assert!(rules.is_none() && full.is_none());
    assert_eq!(
        delta.map(|d| (d.removed, d.upserted.len())),
        Some((vec![gone], 0))
    );
}

#[test]
fn a_stream_behind_by_kept_changes_sends_them_composed() {
    let eps = endpoints(10);
    let first = state(1, 1, "r", 1, Arc::clone(&eps));
    let mut fewer = eps.as_ref().clone();
    let gone = fewer.remove(0).instance_id;
    let mut next = State::clone(&state(2, 1, "r", 2, Arc::new(fewer.clone())));
    // A marker the diff would never produce: proves the shared change is used.
    let shared = Change {
        removed: vec![Removed {
            namespace: String::new(),
            service: "svc-00".into(),
            instance_id: "shared".into(),
        }],
        upserted: Vec::new(),
    };
    next.endpoint_changes = Arc::new(vec![Arc::new(shared)]);
    let next = Arc::new(next);
    let (_, _, _, delta) = drain(Outgoing::new(
        Arc::clone(&next),
        Some(&first),
        &mut Scope::default(),
    ));
    assert_eq!(delta.map(|d| d.removed), Some(vec!["shared".to_string()]));
    // Two generations behind, one change kept: diffed here.
    let older = state(0, 1, "r", 0, eps);
    let (_, _, _, delta) = drain(Outgoing::new(next, Some(&older), &mut Scope::default()));
    assert_eq!(delta.map(|d| d.removed), Some(vec![gone]));
}

#[test]
fn the_report_period_goes_out_with_the_rules_only() {
    let period_of = |out: Outgoing| {
        let (parts, ..) = drain(out);
        assert!(
            parts
                .iter()
                .skip(1)
                .all(|p| p.traffic_report_interval_ms.is_none())
        );
        parts[0].traffic_report_interval_ms
    };
    let mut rollout = State::clone(&state(1, 1, &"r".repeat(20_000), 1, endpoints(3)));
    rollout.traffic_report_interval_ms = 1_000;
    let first = Arc::new(rollout);
    assert_eq!(
        period_of(Outgoing::new(
            Arc::clone(&first),
            None,
            &mut Scope::default()
        )),
        Some(1_000)
    );
    let endpoints_only = state(2, 1, &first.rules, 2, endpoints(4));
    assert_eq!(
        period_of(Outgoing::new(
            Arc::clone(&endpoints_only),
            Some(&first),
            &mut Scope::default()
        )),
        None
    );
    // A rule change carries it even when it stays the same.
    let rules = state(3, 2, "r2", 2, endpoints(4));
    assert_eq!(
        period_of(Outgoing::new(
            rules,
            Some(&endpoints_only),
            &mut Scope::default()
        )),
        Some(5_000)
    );
}

#[test]
fn the_trust_bundle_goes_out_first_and_again_only_when_it_changes() {
    let with = |s: Arc<State>, bundle: &[&str]| {
        let mut next = State::clone(&s);
        next.trust_bundle = Some(Arc::new(bundle.iter().map(|b| b.to_string()).collect()));
        Arc::new(next)
    };
    let bundle_of = |out: Outgoing| {
        let (parts, ..) = drain(out);
        let carrying: Vec<_> = parts.iter().filter(|p| p.trust_bundle.is_some()).collect();
        assert!(carrying.len() <= 1, "at most one part carries it");
        carrying.first().and_then(|p| p.trust_bundle.clone())
    };
    let first = with(state(1, 1, "r", 1, endpoints(3)), &["ca"]);
    let sent = bundle_of(Outgoing::new(
        Arc::clone(&first),
        None,
        &mut Scope::default(),
    ))
    .unwrap();
    assert_eq!(sent.certificates_pem, ["ca"]);
    let rules = with(state(2, 2, "r2", 1, endpoints(3)), &["ca"]);
    assert!(
        bundle_of(Outgoing::new(
            Arc::clone(&rules),
            Some(&first),
            &mut Scope::default()
        ))
        .is_none()
    );
    let rotated = with(state(3, 2, "r2", 1, endpoints(3)), &["ca", "new"]);
    let sent = bundle_of(Outgoing::new(rotated, Some(&rules), &mut Scope::default())).unwrap();
    assert_eq!(sent.certificates_pem, ["ca", "new"]);
    // Not loaded yet: nothing to send.
    assert!(
        bundle_of(Outgoing::new(
            state(1, 1, "r", 1, endpoints(3)),
            None,
            &mut Scope::default()
        ))
        .is_none()
    );
}

/// The directory a drained snapshot carried: full set, or (added, removed).
fn directory_of(parts: &[Snapshot]) -> (Option<Vec<String>>, Option<(usize, usize)>) {
    let full = parts.iter().any(|p| p.directory.is_some()).then(|| {
        parts
            .iter()
            .filter_map(|p| p.directory.clone())
            .flat_map(|d| d.services)
            .map(|s| s.service)
            .collect()
    });
    let delta = parts
        .iter()
        .any(|p| p.directory_changes.is_some())
        .then(|| {
            let changes = parts.iter().filter_map(|p| p.directory_changes.as_ref());
            changes.fold((0, 0), |(a, r), d| (a + d.added.len(), r + d.removed.len()))
        });
    (full, delta)
}

fn services_of(list: &[Endpoint]) -> std::collections::BTreeSet<String> {
    list.iter().map(|e| e.service.clone()).collect()
}

#[test]
fn a_scoped_stream_gets_its_services_endpoints_and_the_whole_directory() {
    let eps = endpoints(1000); // 20 services of 50
    let first = state(1, 1, "r", 1, Arc::clone(&eps));
    let mut scope = Scope::only([(String::new(), "svc-03".into())]);
    let out = Outgoing::new(Arc::clone(&first), None, &mut scope);
    let parts: Vec<Snapshot> = std::iter::from_fn({
        let mut out = out;
        move || out.next_part()
    })
    .collect();
    let full: Vec<Endpoint> = parts
        .iter()
        .filter_map(|p| p.endpoints.clone())
        .flat_map(|s| s.endpoints)
        .collect();
    assert_eq!(full.len(), 50);
    assert_eq!(services_of(&full), ["svc-03".to_string()].into());
    assert_eq!(directory_of(&parts).0.map(|d| d.len()), Some(20));

    // One instance of svc-03 and one of svc-04 go: only the first reaches the stream.
    let mut fewer = eps.as_ref().clone();
    fewer.retain(|e| e.instance_id != "inst-00003" && e.instance_id != "inst-00004");
    let mut next = State::clone(&state(2, 1, "r", 2, Arc::new(fewer)));
    next.endpoint_changes = Arc::new(vec![Arc::new(crate::push::endpoint_delta(
        &eps,
        &next.endpoints,
    ))]);
    next.directory = Arc::clone(&first.directory); // same services: unchanged
    let next = Arc::new(next);
    let out = Outgoing::new(Arc::clone(&next), Some(&first), &mut scope);
    assert!(!out.carries_nothing());
    let (parts, _, full, delta) = drain(out);
    assert!(full.is_none());
    assert_eq!(
        delta.map(|d| (d.removed, d.upserted.len())),
        Some((vec!["inst-00003".to_string()], 0))
    );
    assert_eq!(directory_of(&parts), (None, None), "directory unchanged");

    // Then only svc-04 changes: nothing for this stream (not sent), all for an
    // unscoped one.
    let mut after = next.endpoints.as_ref().clone();
    after.retain(|e| e.instance_id != "inst-00024");
    let mut third = State::clone(&state(3, 1, "r", 3, Arc::new(after)));
    third.endpoint_changes = Arc::new(vec![Arc::new(crate::push::endpoint_delta(
        &next.endpoints,
        &third.endpoints,
    ))]);
    third.directory = Arc::clone(&first.directory);
    let third = Arc::new(third);
    let out = Outgoing::new(Arc::clone(&third), Some(&next), &mut scope);
    assert!(out.carries_nothing());
    let mut everything = Scope::default();
    let out = Outgoing::new(Arc::clone(&third), Some(&next), &mut everything);
    assert!(!out.carries_nothing());
    // A rule change, or a new trust bundle, is never nothing.
    let rules = state(4, 2, "r2", 3, Arc::clone(&third.endpoints));
    let rules = State {
        directory: Arc::clone(&first.directory),
        endpoint_changes: Arc::clone(&third.endpoint_changes),
        ..State::clone(&rules)
    };
    assert!(!Outgoing::new(Arc::new(rules), Some(&third), &mut scope).carries_nothing());
    let bundle = State {
        version: 5,
        trust_bundle: Some(Arc::new(vec!["ca".into()])),
        ..State::clone(&third)
    };
    assert!(!Outgoing::new(Arc::new(bundle), Some(&third), &mut scope).carries_nothing());
}

#[test]
fn interest_sends_the_new_services_endpoints_whole() {
    let mut list = endpoints(100).as_ref().clone();
    for e in &mut list {
        e.namespace = "default".into();
    }
    let s = state(1, 1, "r", 1, Arc::new(list));
    let mut scope = Scope::only([("default".into(), "svc-01".into())]);
    let (_, _, full, _) = drain(Outgoing::new(Arc::clone(&s), None, &mut scope));
    assert_eq!(full.map(|f| f.len()), Some(5));
    let ask = |service: &str| graylane_proto::v1::EndpointScope {
        services: vec![graylane_proto::v1::ServiceName {
            namespace: String::new(),
            service: service.into(),
        }],
    };
    assert!(scope.widen(&ask("svc-02")).unwrap());
    let (parts, _, full, delta) = drain(Outgoing::new(Arc::clone(&s), Some(&s), &mut scope));
    assert!(full.is_none());
    let delta = delta.unwrap();
    assert_eq!(services_of(&delta.upserted), ["svc-02".to_string()].into());
    assert_eq!(delta.upserted.len(), 5);
    assert_eq!(directory_of(&parts), (None, None));
    assert!(!scope.owes(), "paid");

    // Widened past MAX_SCOPE: everything, as a full set without a directory.
    let huge = graylane_proto::v1::EndpointScope {
        services: (0..crate::push::MAX_SCOPE + 1)
            .map(|i| graylane_proto::v1::ServiceName {
                namespace: String::new(),
                service: format!("x{i}"),
            })
            .collect(),
    };
    assert!(scope.widen(&huge).unwrap());
    let (parts, _, full, _) = drain(Outgoing::new(Arc::clone(&s), Some(&s), &mut scope));
    assert_eq!(full.map(|f| f.len()), Some(100));
    assert_eq!(directory_of(&parts), (None, None));
}

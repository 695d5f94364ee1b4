//! The compiled traffic policy: each field, the defaults, the fault's tag match and
//! the percent edges, with the random number passed in.

use std::time::Duration;

use super::*;
use crate::table::RoutingTable;
use crate::table::test_support::{Draws, inst, policy, rules, tag};

/// A table with `orders` v1 (o1, o2), v2 (o3) and the excluded v2 o4, and `body` as
/// the spec of orders' RoutePolicy (subsets v1 and v2 declared).
fn table(body: &str) -> RoutingTable {
    let subsets = "  subsets:\n    - {name: v1, labels: {version: v1}}\n    - {name: v2, labels: {version: v2}}\n  exclude: {instances: [o4]}\n";
    RoutingTable::build(
        &rules(&policy("orders", &format!("{subsets}{body}"))),
        vec![
            inst("orders", "o1", "v1"),
            inst("orders", "o3", "v2"),
            inst("orders", "o2", "v1"),
            inst("orders", "o4", "v2"),
        ],
    )
}

/// Draws to try percentages with: the edges of both 32-bit halves, and a stream.
fn draws() -> impl Iterator<Item = u64> {
    [
        0,
        1,
        BUCKETS - 1,
        BUCKETS,
        u64::MAX,
        u64::MAX - 1,
        0xffff_ffff,
    ]
    .into_iter()
    .chain(Draws(7).take(2000))
}

fn mirrored(t: &RoutingTable, random: u64) -> Option<Vec<String>> {
    let candidates = t.policy("default", "orders").mirror(random)?;
    Some(candidates.iter().map(|i| i.id.clone()).collect())
}

#[test]
fn a_service_without_a_policy_gets_the_default() {
    let t = table("");
    for p in [t.policy("default", "users"), t.policy("shop", "orders")] {
        assert_eq!(
            p.timeout(),
            None,
            "the sidecar's --upstream-timeout applies"
        );
        assert_eq!(p.retry(), &RetryPolicy::DEFAULT);
        assert!(draws().all(|r| p.fault(Some(&tag("gray")), r) == Injected::default()));
        assert!(draws().all(|r| p.mirror(r).is_none()));
    }
}

#[test]
fn a_policy_without_traffic_settings_is_the_default() {
    let t = table("  release: prod\n");
    let p = t.policy("default", "orders");
    assert_eq!(p.timeout(), None);
    assert_eq!(p.retry(), &RetryPolicy::DEFAULT);
    assert_eq!(p.fault(None, 0), Injected::default());
    assert!(p.mirror(0).is_none());
}

#[test]
fn the_default_retries_a_connect_failure_once_and_nothing_else() {
    let r = &RetryPolicy::DEFAULT;
    assert_eq!(r.attempts(), 1);
    assert!(r.retries(RetryOn::ConnectFailure));
    assert!(!r.retries(RetryOn::Reset));
    assert!(!r.retries(RetryOn::Status(503)));
    assert!(
        !r.retries_after_sending(),
        "nothing was sent on a connect failure"
    );
}

#[test]
fn timeout_is_the_policy_s() {
    let t = table("  timeout: 1500ms\n");
    assert_eq!(
        t.policy("default", "orders").timeout(),
        Some(Duration::from_millis(1500))
    );
}

#[test]
fn retries_are_what_on_lists() {
    let t = table("  retries: {attempts: 3, on: [reset, 503, 429]}\n");
    let r = t.policy("default", "orders").retry();
    assert_eq!(r.attempts(), 3);
    assert!(r.retries(RetryOn::Reset));
    assert!(r.retries(RetryOn::Status(503)));
    assert!(r.retries(RetryOn::Status(429)));
    assert!(!r.retries(RetryOn::Status(500)), "a status not listed");
    assert!(!r.retries(RetryOn::Status(200)));
    assert!(
        !r.retries(RetryOn::ConnectFailure),
        "listing `on` replaces the default"
    );
    assert!(r.retries_after_sending());
    for on in ["[reset]", "[503]"] {
        let t = table(&format!("  retries: {{attempts: 1, on: {on}}}\n"));
        assert!(
            t.policy("default", "orders")
                .retry()
                .retries_after_sending(),
            "{on}"
        );
    }
    let t = table("  retries: {attempts: 1, on: [connect-failure]}\n");
    assert!(
        !t.policy("default", "orders")
            .retry()
            .retries_after_sending()
    );
}

#[test]
fn retries_without_on_retry_connect_failures() {
    let t = table("  retries: {attempts: 2}\n");
    let r = t.policy("default", "orders").retry();
    assert_eq!(r.attempts(), 2);
    assert!(r.retries(RetryOn::ConnectFailure));
    assert!(!r.retries(RetryOn::Reset));
}

#[test]
fn a_tagged_fault_applies_to_that_tag_only() {
    let t = table(
        "  fault:\n    tag: gray\n    delay: {percent: 100, duration: 2s}\n    abort: {percent: 100, status: 418}\n",
    );
    let p = t.policy("default", "orders");
    let all = Injected {
        delay: Some(Duration::from_secs(2)),
        abort: Some(418),
    };
    assert!(draws().all(|r| p.fault(Some(&tag("gray")), r) == all));
    assert!(draws().all(|r| p.fault(Some(&tag("blue")), r) == Injected::default()));
    assert!(draws().all(|r| p.fault(None, r) == Injected::default()));
}

#[test]
fn an_untagged_fault_applies_to_every_request() {
    let t = table("  fault:\n    abort: {percent: 100, status: 503}\n");
    let p = t.policy("default", "orders");
    for tag in [None, Some(tag("gray")), Some(tag("anything"))] {
        assert_eq!(
            p.fault(tag.as_ref(), 12345),
            Injected {
                delay: None,
                abort: Some(503)
            }
        );
    }
}

#[test]
fn fault_percent_0_never_and_100_always() {
    let t = table(
        "  fault:\n    delay: {percent: 100, duration: 1s}\n    abort: {percent: 0, status: 503}\n",
    );
    let p = t.policy("default", "orders");
    let delayed = Injected {
        delay: Some(Duration::from_secs(1)),
        abort: None,
    };
    assert!(draws().all(|r| p.fault(None, r) == delayed));
}

#[test]
fn delay_and_abort_are_independent_draws() {
    // 0.01% each: one bucket of 10 000, bucket 0 of the low (delay) and of the high
    // (abort) 32 bits of the draw.
    let t = table(
        "  fault:\n    delay: {percent: 0.01, duration: 1s}\n    abort: {percent: 0.01, status: 503}\n",
    );
    let p = t.policy("default", "orders");
    let fault = |r| {
        let f = p.fault(None, r);
        (f.delay.is_some(), f.abort.is_some())
    };
    assert_eq!(fault(0), (true, true));
    assert_eq!(fault(1), (false, true));
    assert_eq!(fault(1 << 32), (true, false));
    assert_eq!(fault((1 << 32) | 1), (false, false));
    let (delays, aborts) = Draws(3)
        .take(100_000)
        .map(fault)
        .fold((0, 0), |(d, a), (x, y)| {
            (d + u32::from(x), a + u32::from(y))
        });
    assert!(
        delays < 50 && aborts < 50,
        "0.01% of 100 000: {delays} {aborts}"
    );
}

#[test]
fn fault_percent_splits_draws() {
    let t = table("  fault:\n    abort: {percent: 25, status: 503}\n");
    let p = t.policy("default", "orders");
    let n = Draws(11)
        .take(10_000)
        .filter(|&r| p.fault(None, r).abort.is_some())
        .count();
    assert!((2_200..2_800).contains(&n), "25% of 10 000: {n}");
}

#[test]
fn mirror_is_the_subset_s_candidates_in_id_order() {
    let t = table("  mirror: {subset: v1, percent: 100}\n");
    assert!(draws().all(|r| mirrored(&t, r) == Some(vec!["o1".into(), "o2".into()])));
}

#[test]
fn mirror_leaves_excluded_instances_out() {
    let t = table("  mirror: {subset: v2}\n");
    assert_eq!(mirrored(&t, 0), Some(vec!["o3".into()]), "o4 is excluded");
}

#[test]
fn mirror_percent_0_never_and_100_always() {
    let never = table("  mirror: {subset: v1, percent: 0}\n");
    assert!(draws().all(|r| mirrored(&never, r).is_none()));
    let always = table("  mirror: {subset: v1, percent: 100}\n");
    assert!(draws().all(|r| mirrored(&always, r).is_some()));
}

#[test]
fn mirror_percent_splits_draws() {
    let t = table("  mirror: {subset: v1, percent: 10}\n");
    let n = Draws(5)
        .take(10_000)
        .filter(|&r| mirrored(&t, r).is_some())
        .count();
    assert!((800..1_200).contains(&n), "10% of 10 000: {n}");
    assert!(mirrored(&t, 999).is_some() && mirrored(&t, 1_000).is_none());
}

#[test]
fn a_mirror_subset_without_candidates_copies_nothing() {
    let t = RoutingTable::build(
        &rules(&policy(
            "orders",
            "  subsets:\n    - {name: v2, labels: {version: v2}}\n  mirror: {subset: v2}\n",
        )),
        vec![inst("orders", "o1", "v1")],
    );
    assert!(draws().all(|r| mirrored(&t, r).is_none()));
}

#[test]
fn a_policy_applies_without_instances_and_only_in_its_namespace() {
    let shop = "apiVersion: graylane.io/v1\nkind: RoutePolicy\n\
        metadata: {name: orders, namespace: shop}\nspec: {service: orders, timeout: 3s}\n";
    let t = RoutingTable::build(&rules(shop), Vec::new());
    assert_eq!(
        t.policy("shop", "orders").timeout(),
        Some(Duration::from_secs(3))
    );
    assert_eq!(t.policy("default", "orders").timeout(), None);
    assert!(t.policy("shop", "orders").mirror(0).is_none());
}

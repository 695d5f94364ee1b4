use super::*;

/// A report names what a sidecar routed: services with an instance, or with one
/// lately (its report comes seconds after the requests), under labels the rules
/// make; nothing invented.
#[test]
fn a_report_could_come_only_from_what_sidecars_route() {
    let rules = "apiVersion: graylane.io/v1
kind: Lane
metadata: {name: gray}
spec: {tag: gray, selector: {version: v2}}
";
    let (_, labels) = read_rules(rules);
    let ep = |service: &str| Endpoint {
        service: service.into(),
        instance_id: format!("{service}-1"),
        namespace: "default".into(),
        ..Endpoint::default()
    };
    let endpoints = vec![ep("orders")];
    let gone = Change {
        removed: vec![Removed {
            namespace: "default".into(),
            service: "payments".into(),
            instance_id: "payments-1".into(),
        }],
        upserted: Vec::new(),
    };
    let state = State {
        directory: Arc::new(Directory::of(&endpoints)),
        endpoints: Arc::new(endpoints),
        endpoint_changes: Arc::new(vec![Arc::new(gone)]),
        series_labels: Arc::new(labels),
        ..State::default()
    };
    let series = |service: &str, lane: &str| graylane_proto::v1::TrafficSeries {
        namespace: "default".into(),
        service: service.into(),
        lane: lane.into(),
        subset: "-".into(),
        ..Default::default()
    };
    assert!(state.could_report(&series("orders", "gray")));
    assert!(
        state.could_report(&series("payments", "-")),
        "its last instance just left"
    );
    assert!(!state.could_report(&series("made-up", "-")));
    assert!(!state.could_report(&series("orders", "made-up")));
}

fn hello(i: usize) -> Hello {
    Hello {
        service: "svc".into(),
        instance_id: format!("i-{i:03}"),
        address: "10.0.0.1:8080".into(),
        ..Hello::default()
    }
}

#[tokio::test(start_paused = true)]
async fn endpoints_go_out_when_quiet_or_at_the_cap_with_their_changes_kept() {
    let hub = Arc::new(Hub::new());
    let (_stop, stopped) = watch::channel(false);
    tokio::spawn(Arc::clone(&hub).publish_endpoints(ENDPOINT_DEBOUNCE, stopped));
    let step = Duration::from_millis(50);
    hub.register(hello(0), String::new(), 0).unwrap();
    tokio::time::sleep(ENDPOINT_DEBOUNCE + step).await;
    assert_eq!(hub.current().endpoints.len(), 1, "out once quiet");
    let generation = hub.current().endpoints_generation;
    // A change every 50 ms is never quiet for 100 ms: out at the cap, not before.
    for i in 1..=30 {
        hub.register(hello(i), String::new(), 0).unwrap();
        // Checked mid-step, away from the instant the cap fires.
        tokio::time::sleep(step / 2).await;
        let published = hub.current().endpoints_generation > generation;
        let elapsed = (i - 1) * 50 + 25;
        assert_eq!(published, elapsed > 1_000, "after {elapsed} ms");
        tokio::time::sleep(step / 2).await;
    }
    tokio::time::sleep(ENDPOINT_DEBOUNCE_MAX).await;
    let state = hub.current();
    assert_eq!(state.endpoints.len(), 31);
    // Every generation's change is kept: composed, they rebuild the list.
    let changes = state.endpoint_changes.as_slice();
    assert_eq!(changes.len() as u64, state.endpoints_generation);
    let delta = compose(changes, &Scope::default());
    assert!(delta.removed.is_empty());
    assert_eq!(delta.upserted, *state.endpoints);
    assert_eq!(state.directory.names.len(), 1, "one service");
}

#[test]
fn empty_rules_load_even_when_the_trust_bundle_came_first() {
    let hub = Hub::new();
    hub.set_trust_bundle(vec!["ca".into()]);
    assert!(!hub.current().loaded);
    hub.set_rules(0, String::new());
    let state = hub.current();
    assert!(
        state.loaded,
        "an empty store's revision 0 is the rules in force"
    );
    assert_eq!(state.version, 2);
    assert_eq!(state.trust_bundle.as_deref(), Some(&vec!["ca".to_string()]));
    // Once loaded, the same revision again is ignored.
    hub.set_rules(0, String::new());
    assert_eq!(hub.current().version, 2);
}

#[test]
fn a_store_gone_back_is_pushed_as_it_is() {
    let hub = Hub::new();
    hub.set_rules(6, "six".into());
    // Restored from a backup taken at revision 5.
    hub.set_rules(5, "five".into());
    let state = hub.current();
    assert_eq!((state.revision, &*state.rules), (5, "five"));
    // Its next revision reuses the number 6, with other rules.
    hub.set_rules(6, "six again".into());
    let state = hub.current();
    assert_eq!((state.revision, &*state.rules), (6, "six again"));
    assert_eq!(state.version, 3);
}

const ROLLOUT: &str = "apiVersion: graylane.io/v1
kind: Lane
metadata: {name: gray}
spec: {tag: gray, selector: {version: v2}}
---
apiVersion: graylane.io/v1
kind: TagPolicy
metadata: {name: edge}
spec: {services: [frontend]}
---
apiVersion: graylane.io/v1
kind: LaneRollout
metadata: {name: r}
spec:
  lane: gray
  entry: edge
  hashBy: {header: x-user-id}
  steps: [{percent: 5, hold: 1m}]
  analysis: {interval: 4s}
";

#[test]
fn the_report_period_follows_the_rollouts_of_the_rules() {
    let hub = Hub::new();
    hub.set_rules(1, String::new());
    assert_eq!(hub.current().traffic_report_interval_ms, 5_000);
    // Half its interval (`RuleSet::traffic_report_interval`).
    hub.set_rules(2, ROLLOUT.into());
    assert_eq!(hub.current().traffic_report_interval_ms, 2_000);
    // Rules that do not parse (edited in the store by hand): the default.
    hub.set_rules(3, "kind: [".into());
    assert_eq!(hub.current().traffic_report_interval_ms, 5_000);
}

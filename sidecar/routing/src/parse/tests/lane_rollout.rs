use super::{accepts, doc, rejects, rejects_all};
use crate::{HashKey, LaneRollout, OnSuccess, Resource};

const SPEC: &str = "  lane: gray
  entry: edge
  hashBy: {header: x-user-id}
  steps:
    - {percent: 5,  hold: 2m}
    - {percent: 25, hold: 5m}
    - {percent: 100, hold: 5m}
  analysis:
    interval: 30s
    minRequests: 50
    maxErrorRate: 1%
    maxErrorRateIncrease: 0.5%
    maxP99Ratio: 1.5
    failAfter: 2
  onSuccess: release-all
";

fn rollout(spec: &str) -> LaneRollout {
    let r = accepts(&doc("LaneRollout", "gray-orders-2", spec));
    let Resource::LaneRollout(r) = &r[0] else {
        panic!("{r:#?}")
    };
    r.clone()
}

#[test]
fn the_spec_example_parses_and_reads_back_equal() {
    let r = rollout(SPEC);
    assert_eq!(r.spec.lane.as_str(), "gray");
    assert_eq!(r.spec.hash_by, HashKey::Header("x-user-id".into()));
    let percents: Vec<f64> = r.spec.steps.iter().map(|s| s.percent).collect();
    assert_eq!(percents, [5.0, 25.0, 100.0]);
    assert_eq!(r.spec.steps[0].hold.as_millis(), 120_000);
    assert_eq!(r.spec.analysis.max_error_rate.fraction(), 0.01);
    let increase = r.spec.analysis.max_error_rate_increase.unwrap();
    assert_eq!(increase.fraction(), 0.005);
    assert_eq!(r.spec.analysis.max_p99_ratio, Some(1.5));
    assert_eq!(r.spec.on_success, OnSuccess::ReleaseAll);
    let yaml = Resource::LaneRollout(r.clone()).to_yaml();
    assert!(yaml.contains("maxErrorRate: 1%"), "{yaml}");
    assert_eq!(accepts(&yaml), [Resource::LaneRollout(r)]);
}

#[test]
fn analysis_has_defaults() {
    let r = rollout(
        "  lane: gray\n  entry: edge\n  hashBy: {cookie: uid}\n  steps: [{percent: 50, hold: 1m}]\n  onSuccess: hold\n",
    );
    assert_eq!(r.spec.analysis.interval.as_millis(), 30_000);
    assert_eq!(r.spec.analysis.min_requests, 50);
    assert_eq!(r.spec.analysis.fail_after, 2);
    assert_eq!(r.spec.analysis.max_p99_ratio, None);
    assert_eq!(r.spec.on_success, OnSuccess::Hold);
}

#[test]
fn steps_must_rise_strictly_and_stay_within_0_to_100() {
    let steps = |s: &str| {
        doc(
            "LaneRollout",
            "r",
            &format!("  lane: gray\n  entry: edge\n  hashBy: {{header: u}}\n  steps: {s}\n"),
        )
    };
    rejects(
        &steps("[{percent: 10, hold: 1m}, {percent: 10, hold: 1m}]"),
        "spec.steps[1].percent",
        "rise strictly",
    );
    rejects(
        &steps("[{percent: 50, hold: 1m}, {percent: 20, hold: 1m}]"),
        "spec.steps[1].percent",
        "previous step's 50",
    );
    rejects(
        &steps("[{percent: 0, hold: 1m}]"),
        "spec.steps[0].percent",
        "outside (0, 100]",
    );
    rejects(
        &steps("[{percent: 120, hold: 1m}]"),
        "spec.steps[0].percent",
        "outside (0, 100]",
    );
    rejects(&steps("[]"), "spec.steps", "at least one step");
    rejects(&steps("[{percent: 10}]"), "spec.steps[0].hold", "missing");
    rejects(
        &steps("[{percent: 10, hold: 2 minutes}]"),
        "spec.steps[0].hold",
        "not a duration",
    );
}

#[test]
fn rates_need_a_percent_sign_and_thresholds_are_checked() {
    let analysis = |a: &str| {
        doc(
            "LaneRollout",
            "r",
            &format!(
                "  lane: gray\n  entry: edge\n  hashBy: {{header: u}}\n  steps: [{{percent: 10, hold: 1m}}]\n  analysis: {a}\n"
            ),
        )
    };
    rejects(
        &analysis("{maxErrorRate: 0.01}"),
        "spec.analysis.maxErrorRate",
        "write a number and %",
    );
    rejects(
        &analysis("{maxErrorRate: 150%}"),
        "spec.analysis.maxErrorRate",
        "outside 0%-100%",
    );
    rejects(
        &analysis("{interval: 500ms}"),
        "spec.analysis.interval",
        "shorter than 1s",
    );
    rejects(
        &analysis("{failAfter: 0}"),
        "spec.analysis.failAfter",
        "1-100",
    );
    rejects(
        &analysis("{maxP99Ratio: 0.5}"),
        "spec.analysis.maxP99Ratio",
        "at least 1",
    );
    rejects(
        &analysis("{minRequests: 0}"),
        "spec.analysis.minRequests",
        "at least 1",
    );
    rejects(
        &analysis("{maxErorRate: 1%}"),
        "spec.analysis.maxErorRate",
        "unknown field",
    );
}

#[test]
fn unknown_fields_and_bad_hash_keys_are_named() {
    rejects_all(
        &doc(
            "LaneRollout",
            "r",
            "  lane: gray\n  entry: edge\n  hashBy: {header: \"x user\"}\n  steps: [{percent: 10, hold: 1m}]\n  onSucess: hold\n",
        ),
        &[
            ("spec.onSucess", "unknown field"),
            ("spec.hashBy.header", "not a valid header name"),
        ],
    );
    rejects(
        &doc(
            "LaneRollout",
            "r",
            "  lane: gray\n  entry: edge\n  hashBy: {header: \"x user\"}\n  steps: [{percent: 10, hold: 1m}]\n",
        ),
        "spec.hashBy.header",
        "not a valid header name",
    );
}

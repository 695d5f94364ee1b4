//! `graylane demo --once`: the whole mesh starts, the walkthrough shows each request's
//! hops, and its temp dir (data and logs) is removed afterwards.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

#[test]
fn the_demo_walks_a_gray_release_and_cleans_up() {
    let out = Command::new(graylane_tests::bin("graylane"))
        .args(["demo", "--once"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let after = |label: &str| {
        lines
            .iter()
            .position(|l| l.contains(label))
            .map(|i| lines[i + 1])
            .unwrap_or_else(|| panic!("no {label:?} in {stdout}"))
    };
    assert!(after("untagged request").contains("[untagged]"), "{stdout}");
    assert!(
        after("stripped at the edge").ends_with("payments v1 [untagged]"),
        "a client cannot pick its lane: {stdout}"
    );
    let tester =
        "frontend v1 [gray] → orders v2 [gray] → payments v1 [gray, no v2: fell back to base]";
    assert_eq!(after("tester (x-user-group: testers)").trim(), tester);
    assert_eq!(after("forward only traceparent").trim(), tester);
    // The last request's trace tree, from the spans the sidecars exported.
    let tree = stdout
        .split("as the sidecars traced it")
        .nth(1)
        .unwrap_or_else(|| panic!("no trace tree: {stdout}"));
    for hop in [
        "frontend v1 [gray from rule] 200",
        "└─ → orders: orders-v2, lane gray 200",
        "orders v2 [gray from header] 200",
        "→ payments: payments-v1, lane gray, fallback (no ready instance in lane gray, served by base) 200",
        "payments v1 [gray from header] 200",
    ] {
        assert!(tree.contains(hop), "{hop:?} in {tree}");
    }
    let dir = stdout
        .split("logs in ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim();
    assert!(
        !std::path::Path::new(dir).exists(),
        "the demo removes its temp dir"
    );
}

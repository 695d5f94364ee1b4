//! The large rule set the bench applies: one Lane whose tag changes with every apply
//! (so each apply is a new revision and the sidecar recompiles everything), nine
//! fixed Lanes, and RoutePolicies shaped like `deploy/rules/gray-release.yaml`'s.

use std::fmt::Write;

use graylane_proto::v1::{ApplyRequest, SourceFile};

/// Lanes besides the one that changes.
const FIXED_LANES: usize = 9;

/// Apply number `i` of a set of `documents` documents (at least 1 + `FIXED_LANES`).
pub(crate) fn apply_request(documents: usize, i: usize) -> ApplyRequest {
    let mut yaml = String::with_capacity(documents * 600);
    lane(&mut yaml, "bench", &format!("t{i}"), "v3");
    for k in 0..FIXED_LANES {
        lane(
            &mut yaml,
            &format!("lane{k}"),
            &format!("lane{k}"),
            &format!("v{}", k + 4),
        );
    }
    for s in 0..documents.saturating_sub(1 + FIXED_LANES) {
        route_policy(&mut yaml, s);
    }
    ApplyRequest {
        files: vec![SourceFile {
            name: "apply-stall.yaml".into(),
            content: yaml,
        }],
        prune: true,
        dry_run: false,
        expect_revision: None,
        prune_namespace: None,
    }
}

fn lane(yaml: &mut String, name: &str, tag: &str, version: &str) {
    let _ = write!(
        yaml,
        "---\napiVersion: graylane.io/v1\nkind: Lane\nmetadata:\n  name: {name}\nspec:\n  \
         tag: {tag}\n  selector:\n    version: {version}\n  fallback: [base]\n"
    );
}

fn route_policy(yaml: &mut String, s: usize) {
    let v2 = 5 + s % 20;
    let _ = write!(
        yaml,
        "---\napiVersion: graylane.io/v1\nkind: RoutePolicy\nmetadata:\n  name: svc-{s}\nspec:\n  \
         service: svc-{s}\n  release: all\n  subsets:\n    - name: v1\n      labels: {{version: v1}}\n    \
         - name: v2\n      labels: {{version: v2}}\n  default:\n    - {{subset: v1, weight: {}}}\n    \
         - {{subset: v2, weight: {v2}}}\n  stickyBy:\n    header: x-user-id\n  lanes:\n    \
         - tag: lane{}\n      subset: v2\n  timeout: 2s\n  retries:\n    attempts: 2\n    \
         on: [connect-failure, reset, 503]\n",
        100 - v2,
        s % FIXED_LANES
    );
}

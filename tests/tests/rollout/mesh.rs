//! The mesh every rollout test runs: frontend (the entry) → orders v1, v2 → payments
//! v1, v2, each instance a demo app behind its own sidecar; and what the tests read
//! of the control plane: the owned rule's percent, history, ACKs.

use std::path::Path;
use std::time::Duration;

use graylane_tests::{ControlPlane, DemoApp, Sidecar, eventually, http_get, write_file};
use serde_json::Value;

/// The lane, the entry TagPolicy with its tester rule, nothing else: no RoutePolicy,
/// so untagged requests stay on base and `gray` requests go to v2 on every hop.
pub(crate) const RULES: &str = "apiVersion: graylane.io/v1
kind: Lane
metadata:
  name: gray
spec:
  tag: gray
  selector: {version: v2}
---
apiVersion: graylane.io/v1
kind: TagPolicy
metadata:
  name: edge
spec:
  services: [frontend]
  rules:
    - tag: gray
      match:
        headers:
          x-user-group: {exact: testers}
";

/// The rollout every test applies (name `gray-orders`), with `steps` as
/// `(percent, hold)` and `analysis` lines added to interval 2s, minRequests 20,
/// failAfter 2.
pub(crate) fn rollout(steps: &[(u32, &str)], analysis: &str) -> String {
    let mut yaml = String::from(
        "apiVersion: graylane.io/v1
kind: LaneRollout
metadata:
  name: gray-orders
spec:
  lane: gray
  entry: edge
  hashBy: {header: x-user-id}
  steps:
",
    );
    for (percent, hold) in steps {
        yaml.push_str(&format!("    - {{percent: {percent}, hold: {hold}}}\n"));
    }
    yaml.push_str("  analysis:\n    interval: 2s\n    minRequests: 20\n    failAfter: 2\n");
    for line in analysis.lines().filter(|l| !l.trim().is_empty()) {
        yaml.push_str(&format!("    {}\n", line.trim()));
    }
    yaml
}

/// The rollout's name in every test.
pub(crate) const NAME: &str = "gray-orders";

/// One instance: its app and its sidecar.
pub(crate) struct Instance {
    pub(crate) _app: DemoApp,
    pub(crate) sidecar: Sidecar,
}

/// A started mesh. Fields drop in order: sidecars and apps before the control plane.
pub(crate) struct Mesh {
    pub(crate) frontend: Instance,
    pub(crate) others: Vec<Instance>,
}

/// Extra flags per app, e.g. `--status 500` for orders v2.
#[derive(Default)]
pub(crate) struct Flags<'a> {
    pub(crate) orders_v2: &'a [&'a str],
}

impl Mesh {
    /// Applies `RULES` through `cp` and starts every instance on control plane(s)
    /// `urls` (comma-separated, tried in turn); returns once the frontend and both
    /// orders sidecars know every instance they call.
    pub(crate) fn start(dir: &Path, cp: &ControlPlane, urls: &str, flags: &Flags<'_>) -> Mesh {
        let rules = write_file(dir, "rules.yaml", RULES);
        cp.cli(&["rules", "apply", "-f", &rules]).assert_ok();
        let frontend = instance(dir, urls, "frontend", "v1", Some("orders"), &[]);
        let others = vec![
            instance(dir, urls, "orders", "v1", Some("payments"), &[]),
            instance(dir, urls, "orders", "v2", Some("payments"), flags.orders_v2),
            instance(dir, urls, "payments", "v1", None, &[]),
            instance(dir, urls, "payments", "v2", None, &[]),
        ];
        frontend.sidecar.wait_endpoints("orders", 2);
        for orders in &others[..2] {
            orders.sidecar.wait_endpoints("payments", 2);
        }
        Mesh { frontend, others }
    }

    /// Every sidecar of the mesh.
    pub(crate) fn sidecars(&self) -> impl Iterator<Item = &Sidecar> {
        std::iter::once(&self.frontend.sidecar).chain(self.others.iter().map(|i| &i.sidecar))
    }

    /// Waits until every sidecar reports traffic every `period` (`1s`: half the
    /// rollout's 2 s interval), as the snapshot asks once a LaneRollout is applied.
    /// Without it, an interval could hold no report and give no verdict.
    pub(crate) fn wait_report_period(&self, period: &str) {
        for sidecar in self.sidecars() {
            eventually(
                Duration::from_secs(10),
                &format!("{} to report every {period}", sidecar.proc.name),
                || (sidecar.config()["trafficReportInterval"] == period).then_some(()),
            );
        }
    }
}

fn instance(
    dir: &Path,
    urls: &str,
    service: &str,
    version: &str,
    call: Option<&str>,
    extra: &[&str],
) -> Instance {
    let mut app = DemoApp::start_with(dir, service, version, call, extra);
    let id = format!("{service}-{version}");
    let labels = format!("version={version}");
    let app_addr = app.addr.to_string();
    let args = [
        "--service",
        service,
        "--instance-id",
        &id,
        "--labels",
        &labels,
        "--app-addr",
        &app_addr,
        "--control-plane",
        urls,
        "--otlp-endpoint",
        "none",
    ];
    let sidecar = Sidecar::start(dir, &id, &args);
    if call.is_some() {
        app.proc.write_line(&sidecar.outbound.to_string());
    }
    sidecar.wait_ready();
    Instance { _app: app, sidecar }
}

/// `GET path` on `cp`'s HTTP API as JSON; `None` when it does not answer 200 (a
/// control plane being restarted).
pub(crate) fn api(cp: &ControlPlane, path: &str) -> Option<Value> {
    let (status, body) = http_get(cp.http, path);
    (status == 200)
        .then(|| serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")))
}

/// The percent of the rollout's rule in TagPolicy `edge` at `revision` (`None`: the
/// rules in force), and whether the rollout still owns it (`rollout:` mark). The
/// rule is found by its `hashBy`: the tester rule has none.
pub(crate) fn rule_at(cp: &ControlPlane, revision: Option<u64>) -> Option<(f64, bool)> {
    let query = revision.map_or(String::new(), |r| format!("?revision={r}"));
    let policy = api(cp, &format!("/api/v1/rules/TagPolicy/edge{query}"))?;
    let rule = policy["spec"]["rules"]
        .as_array()?
        .iter()
        .find(|r| r["match"]["hashBy"].is_object())?;
    let percent = rule["match"]["percent"].as_f64()?;
    Some((percent, rule["rollout"] == NAME))
}

/// A revision of history: (revision, by, summary).
pub(crate) type Entry = (u64, String, String);

/// History, oldest first.
pub(crate) fn history(cp: &ControlPlane) -> Vec<Entry> {
    let list = api(cp, "/api/v1/history").expect("history answers");
    let mut out: Vec<Entry> = list
        .as_array()
        .expect("history is a list")
        .iter()
        .map(|e| {
            (
                e["revision"].as_u64().expect("revision"),
                e["appliedBy"].as_str().unwrap_or_default().to_owned(),
                e["summary"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort_by_key(|e| e.0);
    out
}

/// The revisions the rollout wrote, oldest first, with the percent of its rule at each.
pub(crate) fn rollout_revisions(cp: &ControlPlane) -> Vec<(u64, f64, String)> {
    let by = format!("graylane-rollout/{NAME}");
    history(cp)
        .into_iter()
        .filter(|(_, who, _)| *who == by)
        .map(|(revision, _, summary)| {
            let (percent, _) = rule_at(cp, Some(revision))
                .unwrap_or_else(|| panic!("revision {revision} has the rollout's rule"));
            (revision, percent, summary)
        })
        .collect()
}

/// Waits until every connected sidecar ACKed `revision` or a later one.
pub(crate) fn wait_acked(cp: &ControlPlane, revision: u64, sidecars: usize, within: Duration) {
    eventually(
        within,
        &format!("{sidecars} sidecars to ACK revision {revision}"),
        || {
            let list = api(cp, "/api/v1/sidecars")?;
            let list = list.as_array()?;
            (list.len() == sidecars
                && list
                    .iter()
                    .all(|s| s["ackedRevision"].as_u64() >= Some(revision)))
            .then_some(())
        },
    );
}

/// The release state of `service` (`all`, `gray`, `prod`).
pub(crate) fn release_of(cp: &ControlPlane, service: &str) -> String {
    let state = api(cp, &format!("/api/v1/releases/{service}")).expect("release answers");
    state["state"].as_str().unwrap_or_default().to_owned()
}

/// The rollout as `GET /api/v1/rollouts/gray-orders` shows it (`graylane rollout
/// status gray-orders -o json`); `None` while `cp` does not answer.
pub(crate) fn status(cp: &ControlPlane) -> Option<Value> {
    api(cp, &format!("/api/v1/rollouts/{NAME}"))
}

/// The outcomes (`pass`, `fail`, `none`) of the rollout's verdicts, oldest first.
pub(crate) fn verdicts(status: &Value) -> Vec<String> {
    status["verdicts"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|v| v["verdict"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

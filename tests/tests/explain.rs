//! `graylane explain` agrees with the sidecar: for random requests under several rule
//! sets, the subset and instances it predicts are where a real sidecar sends the
//! request (one instance per subset, so the instance names the subset).

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use graylane_tests::{ControlPlane, DemoApp, Sidecar, write_file};
use serde_json::Value;

/// Lanes gray (v2, falls back to base) and blue (v3: none exists; strict), a sticky
/// 50/50 split of orders, and an edge TagPolicy (a header rule, then a query rule).
/// `{release}` varies per round.
fn rules(release: &str, v1: u32) -> String {
    format!(
        "apiVersion: graylane.io/v1
kind: Lane
metadata: {{name: gray}}
spec:
  tag: gray
  selector: {{version: v2}}
  fallback: [base]
---
apiVersion: graylane.io/v1
kind: Lane
metadata: {{name: blue}}
spec:
  tag: blue
  selector: {{version: v3}}
  fallback: []
---
apiVersion: graylane.io/v1
kind: RoutePolicy
metadata: {{name: orders}}
spec:
  service: orders
  release: {release}
  subsets:
    - {{name: v1, labels: {{version: v1}}}}
    - {{name: v2, labels: {{version: v2}}}}
  default:
    - {{subset: v1, weight: {v1}}}
    - {{subset: v2, weight: {}}}
  stickyBy: {{header: x-user-id}}
---
apiVersion: graylane.io/v1
kind: TagPolicy
metadata: {{name: edge}}
spec:
  services: [frontend]
  incoming: strip
  rules:
    - tag: gray
      match:
        headers:
          x-user-group: {{exact: testers}}
    - tag: gray
      match:
        query:
          group: {{exact: beta testers}}
    - tag: gray
      match:
        path: {{prefix: /beta/}}
",
        100 - v1
    )
}

fn sidecar(
    dir: &std::path::Path,
    url: &str,
    app: &DemoApp,
    service: &str,
    version: &str,
) -> Sidecar {
    let id = format!("{service}-{version}");
    let s = Sidecar::start(
        dir,
        &id,
        &[
            "--service",
            service,
            "--instance-id",
            &id,
            "--labels",
            &format!("version={version}"),
            "--app-addr",
            &app.addr.to_string(),
            "--control-plane",
            url,
        ],
    );
    s.wait_ready();
    s
}

/// GET orders through `outbound` with `headers`: (status, the instance that served).
fn route(outbound: SocketAddr, headers: &[(String, String)]) -> (u16, Option<String>) {
    let (status, trail) = route_trail(outbound, headers);
    (status, trail.and_then(|t| field(&t, "instance")))
}

/// A field of the first (the deciding sidecar's) entry of a `Graylane-Route` trail.
fn field(trail: &str, name: &str) -> Option<String> {
    trail
        .split(',')
        .next()?
        .split(';')
        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        .map(String::from)
}

/// GET orders through `outbound` with `headers`: (status, its `Graylane-Route` trail).
fn route_trail(outbound: SocketAddr, headers: &[(String, String)]) -> (u16, Option<String>) {
    let mut stream = TcpStream::connect(outbound).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = String::from(
        "GET / HTTP/1.1\r\nHost: orders\r\nConnection: close\r\nGraylane-Debug: 1\r\n",
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let trail = response
        .lines()
        .find_map(|l| l.strip_prefix("graylane-route: "))
        .map(String::from);
    (status, trail)
}

/// `explain -o json` for `args` (after `explain --service orders`).
fn explain_json(cp: &ControlPlane, args: &[&str]) -> Value {
    let mut all = vec!["explain", "--service", "orders", "-o", "json"];
    all.extend(args);
    let out = cp.cli(&all);
    out.assert_ok();
    out.json()
}

/// The instance ids of an explained outcome's candidates.
fn candidates(explained: &Value) -> Vec<String> {
    explained["outcome"]["candidates"]
        .as_array()
        .unwrap_or_else(|| panic!("no candidates: {explained:#}"))
        .iter()
        .map(|c| c["instance"].as_str().unwrap().to_owned())
        .collect()
}

/// Steps read `1. `, `2. `, … without a gap.
fn assert_numbered(steps: &[&str], context: &str) {
    for (i, step) in steps.iter().enumerate() {
        assert!(
            step.starts_with(&format!("{}. ", i + 1)),
            "step {} is {step:?}: {context}",
            i + 1
        );
    }
}

#[test]
fn explain_predicts_where_the_sidecar_sends_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let apps: Vec<DemoApp> = ["v1", "v2"]
        .iter()
        .map(|v| DemoApp::start(dir.path(), "orders", v, None))
        .collect();
    let _orders: Vec<Sidecar> = apps
        .iter()
        .zip(["v1", "v2"])
        .map(|(app, v)| sidecar(dir.path(), &url, app, "orders", v))
        .collect();
    let client = Sidecar::start(
        dir.path(),
        "client",
        &[
            "--service",
            "client",
            "--instance-id",
            "client-1",
            "--control-plane",
            &url,
        ],
    );
    client.wait_ready();
    client.wait_endpoints("orders", 2);
    // The entry for the query checks: frontend's inbound applies the edge TagPolicy,
    // then its app calls orders through its own sidecar.
    let mut entry_app = DemoApp::start(dir.path(), "frontend", "v1", Some("orders"));
    let frontend = sidecar(dir.path(), &url, &entry_app, "frontend", "v1");
    entry_app.proc.write_line(&frontend.outbound.to_string());
    frontend.wait_endpoints("orders", 2);

    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut checked = 0;
    for (release, v1) in [("all", 50), ("prod", 70), ("gray", 30), ("all", 100)] {
        let file = write_file(
            dir.path(),
            &format!("{release}-{v1}.yaml"),
            &rules(release, v1),
        );
        cp.cli(&["rules", "apply", "-f", &file]).assert_ok();
        let revision = graylane_tests::docs::revision(&cp);
        on_revision(&[&client, &frontend], revision);
        for _ in 0..12 {
            let mut headers = Vec::new();
            let header = |k: &str, v: &str| (k.to_string(), v.to_string());
            match next(6) {
                0 => {}
                1 => headers.push(header("Gray-Publish", "gray")),
                2 => headers.push(header("Gray-Publish", "blue")),
                3 => headers.push(header("Gray-Publish", "red")),
                // The baggage alone carries it.
                4 => headers.push(header("baggage", "gray-publish=gray")),
                // Two headers are no tag; the baggage is read next.
                _ => headers.extend([
                    header("Gray-Publish", "gray"),
                    header("Gray-Publish", "gray"),
                    header("baggage", "k=v,gray-publish=blue"),
                ]),
            }
            if next(3) > 0 {
                headers.push(("x-user-id".to_string(), format!("user-{}", next(1000))));
            }
            let mut args = vec!["explain", "--service", "orders", "-o", "json"];
            let flags: Vec<String> = headers.iter().map(|(k, v)| format!("{k}={v}")).collect();
            for f in &flags {
                args.extend(["--header", f.as_str()]);
            }
            let explained = cp.cli(&args);
            explained.assert_ok();
            let explained: Value = explained.json();
            let (status, instance) = route(client.outbound, &headers);
            let outcome = &explained["outcome"];
            let context = format!("{release} {v1}: {headers:?}\n{explained:#}");
            if let Some(error) = outcome["error"].as_str() {
                assert_eq!(status, 503, "{context}");
                assert!(error.contains("blue"), "{context}");
                continue;
            }
            assert_eq!(status, 200, "{context}");
            let candidates: Vec<&str> = outcome["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["instance"].as_str().unwrap())
                .collect();
            let instance = instance.unwrap();
            assert!(
                candidates.contains(&instance.as_str()),
                "served by {instance}: {context}"
            );
            // Sticky or lane-bound requests have one candidate here: an exact prediction.
            if headers.iter().any(|(k, _)| k == "x-user-id") || outcome["lane"].is_string() {
                assert_eq!(candidates, [instance.as_str()], "{context}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} routed requests compared");
    query_is_matched_as_explain_says(&cp, frontend.inbound);
    path_is_matched_normalised(&cp, frontend.inbound);

    // Entering at the edge: the TagPolicy's rule, step by step.
    let out = cp.cli(&[
        "explain",
        "--service",
        "orders",
        "--entry",
        "frontend",
        "--header",
        "x-user-group=testers",
        "--header",
        "Gray-Publish=blue",
    ]);
    out.assert_ok();
    assert!(
        out.stdout
            .contains("1. entering at frontend: TagPolicy rule #1 of frontend matched: tag gray"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("3. tag gray is lane gray (selector version=v2)"),
        "{}",
        out.stdout
    );
    let bad = cp.cli(&[
        "explain",
        "--service",
        "orders",
        "--header",
        "Gray-Publish=a,b",
    ]);
    assert_eq!(bad.code, 2, "{bad:?}");
    // A path with its query would be matched on the whole here and on the path alone
    // by a sidecar: refused, saying where the query goes.
    for path in ["/admin?x=1", "admin"] {
        let bad = cp.cli(&["explain", "--service", "orders", "--path", path]);
        assert_eq!(bad.code, 2, "{bad:?}");
    }
    let bad = cp.cli(&["explain", "--service", "orders", "--path", "/a?b"]);
    assert!(bad.stderr.contains("--query NAME=VALUE"), "{bad:?}");

    override_and_release_gray_read_as_routed(&cp, dir.path(), &client);
}

/// Waits until every sidecar in `sidecars` routes by rule revision `revision`.
fn on_revision(sidecars: &[&Sidecar], revision: u64) {
    for s in sidecars {
        graylane_tests::eventually(
            Duration::from_secs(10),
            "the sidecars on the new rules",
            || (s.config()["revision"].as_u64()? == revision).then_some(()),
        );
    }
}

/// The edge TagPolicy's query rule through a real entry sidecar: however the client
/// encodes `beta testers` (`%20`, `+`, an encoded name), the frontend sidecar tags as
/// `explain --query` (decoded text) says, and orders is served where it says. Rules in
/// force: release all, weights v1 100 / v2 0, so gray goes to orders-v2, untagged to
/// orders-v1.
fn query_is_matched_as_explain_says(cp: &ControlPlane, entry: SocketAddr) {
    for (raw, decoded, tagged) in [
        ("group=beta%20testers", "group=beta testers", true),
        ("group=beta+testers", "group=beta testers", true),
        ("x=%zz&gr%6Fup=beta+testers", "group=beta testers", true),
        ("group=beta%2Btesters", "group=beta+testers", false),
        ("group=beta%2520testers", "group=beta%20testers", false),
    ] {
        let explained = explain_json(cp, &["--entry", "frontend", "--query", decoded]);
        let context = format!("?{raw}\n{explained:#}");
        let want_tag = if tagged {
            Value::from("gray")
        } else {
            Value::Null
        };
        assert_eq!(explained["tag"], want_tag, "{context}");
        let body = entry_answer(entry, &format!("/?{raw}"), &context);
        assert_eq!(
            body["tag"], want_tag,
            "the frontend app's tag: {body:#}\n{context}"
        );
        let hop = &body["downstream"];
        assert_eq!(hop["tag"], want_tag, "{body:#}\n{context}");
        let served = format!("orders-{}", hop["version"].as_str().unwrap());
        let candidates = candidates(&explained);
        assert!(
            candidates.contains(&served),
            "served by {served}: {context}"
        );
        if tagged {
            assert_eq!(candidates, [served], "{context}");
        }
    }
}

/// The entry's `path` rule sees the path as the app serves it (normalised): the ways
/// around `/beta/` are tagged as `/beta/` is, by the sidecar and by explain alike; an
/// encoded slash is not a slash.
fn path_is_matched_normalised(cp: &ControlPlane, entry: SocketAddr) {
    for (path, tagged) in [
        ("/beta/x", true),
        ("/%62eta/x", true),
        ("//beta//x", true),
        ("/./beta/x", true),
        ("/x/../beta/x", true),
        ("/x/%2E%2E/beta/x", true),
        ("/betax", false),
        ("/x%2F../beta/x", false),
    ] {
        let explained = explain_json(cp, &["--entry", "frontend", "--path", path]);
        let context = format!("{path}\n{explained:#}");
        let want_tag = if tagged {
            Value::from("gray")
        } else {
            Value::Null
        };
        assert_eq!(explained["tag"], want_tag, "{context}");
        let body = entry_answer(entry, path, &context);
        assert_eq!(
            body["tag"], want_tag,
            "the frontend app's tag: {body:#}\n{context}"
        );
    }
}

/// What the frontend app answers to `GET target` through its sidecar's inbound (200,
/// its JSON: the tag it saw, its downstream hop).
fn entry_answer(entry: SocketAddr, target: &str, context: &str) -> Value {
    let request = format!("GET {target} HTTP/1.1\r\nHost: frontend\r\nConnection: close\r\n\r\n");
    let (status, response) = graylane_tests::raw(entry, &request);
    assert_eq!(status, 200, "{response}\n{context}");
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}\n{context}"))
}

/// A RoutePolicy lane override and release gray, as explain words them (`-o json` and
/// the table) and as the sidecar routes: gray names subset canary; untagged requests
/// find no base candidate and go to the lane instance, and say why.
fn override_and_release_gray_read_as_routed(cp: &ControlPlane, dir: &Path, client: &Sidecar) {
    let rules = "apiVersion: graylane.io/v1
kind: Lane
metadata: {name: gray}
spec: {tag: gray, selector: {version: v2}, fallback: [base]}
---
apiVersion: graylane.io/v1
kind: RoutePolicy
metadata: {name: orders}
spec:
  service: orders
  release: gray
  subsets:
    - {name: stable, labels: {version: v1}}
    - {name: canary, labels: {version: v2}}
  lanes: [{tag: gray, subset: canary}]
";
    let file = write_file(dir, "override.yaml", rules);
    cp.cli(&["rules", "apply", "-f", &file]).assert_ok();
    on_revision(&[client], graylane_tests::docs::revision(cp));

    let gray = [("Gray-Publish".to_string(), "gray".to_string())];
    let explained = explain_json(cp, &["--header", "Gray-Publish=gray"]);
    assert_eq!(explained["outcome"]["subset"], "canary", "{explained:#}");
    assert_eq!(candidates(&explained), ["orders-v2"], "{explained:#}");
    let (status, trail) = route_trail(client.outbound, &gray);
    let trail = trail.unwrap_or_default();
    assert_eq!(status, 200, "{trail}");
    assert_eq!(
        field(&trail, "instance").as_deref(),
        Some("orders-v2"),
        "{trail}"
    );
    assert_eq!(
        field(&trail, "subset").as_deref(),
        Some("canary"),
        "{trail}"
    );
    let table = cp.cli(&[
        "explain",
        "--service",
        "orders",
        "--header",
        "Gray-Publish=gray",
    ]);
    table.assert_ok();
    let steps: Vec<&str> = table.stdout.lines().skip(1).collect();
    assert_numbered(&steps, &table.stdout);
    assert!(
        steps.contains(
            &"3. tag gray is lane gray (RoutePolicy orders maps it to subset canary: \
              version=v2): 1 of its instances may serve: orders-v2"
        ),
        "{}",
        table.stdout
    );

    let explained = explain_json(cp, &[]);
    assert_eq!(candidates(&explained), ["orders-v2"], "{explained:#}");
    assert_eq!(route(client.outbound, &[]), (200, Some("orders-v2".into())));
    let table = cp.cli(&["explain", "--service", "orders"]);
    table.assert_ok();
    let steps: Vec<&str> = table.stdout.lines().skip(1).collect();
    assert_numbered(&steps, &table.stdout);
    assert!(
        !table.stdout.contains("every instance is in a lane"),
        "orders has a base instance: {}",
        table.stdout
    );
    assert!(
        steps.contains(
            &"3. untagged: no base candidate (release state gray: only lane instances may \
              serve): any candidate serves"
        ),
        "{}",
        table.stdout
    );
}

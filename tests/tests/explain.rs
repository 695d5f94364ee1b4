//! `graylane explain` agrees with the sidecar: for random requests under several rule
//! sets, the subset and instances it predicts are where a real sidecar sends the
//! request (one instance per subset, so the instance names the subset).

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use graylane_tests::{ControlPlane, DemoApp, Sidecar, write_file};
use serde_json::Value;

/// Lanes gray (v2, falls back to base) and blue (v3: none exists; strict), a sticky
/// 50/50 split of orders, and an edge TagPolicy. `{release}` varies per round.
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
    let instance = response
        .lines()
        .find_map(|l| l.strip_prefix("graylane-route: "))
        .and_then(|trail| {
            trail
                .split(',')
                .next()?
                .split(';')
                .find_map(|f| f.strip_prefix("instance="))
                .map(String::from)
        });
    (status, instance)
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
        graylane_tests::eventually(
            Duration::from_secs(10),
            "the client on the new rules",
            || (client.config()["revision"].as_u64()? == revision).then_some(()),
        );
        for _ in 0..12 {
            let mut headers = Vec::new();
            match next(4) {
                0 => {}
                1 => headers.push(("Gray-Publish".to_string(), "gray".to_string())),
                2 => headers.push(("Gray-Publish".to_string(), "blue".to_string())),
                _ => headers.push(("Gray-Publish".to_string(), "red".to_string())),
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
}

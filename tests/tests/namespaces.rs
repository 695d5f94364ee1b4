//! Namespaces end to end: `orders` in `shop` and `orders` in `staging` are two
//! services. A caller in `shop` reaches its own with `orders` and staging's with the
//! three qualified forms; a RoutePolicy in `staging` changes only staging's routing;
//! the CLI's `-n` selects, filters and checks namespaces; a rule file written before
//! namespaces existed still applies and routes.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use graylane_tests::{ControlPlane, DemoApp, Sidecar, eventually, http_get, write_file};
use serde_json::Value;

/// A rule file from before namespaces: a mesh-wide lane, nothing namespaced.
const OLD_RULES: &str = "apiVersion: graylane.io/v1
kind: Lane
metadata:
  name: gray
spec:
  tag: gray
  selector: {version: v2}
  fallback: [base]
";

/// Staging's orders under release `gray`; no namespace written (`-n` gives it).
const GRAY_ORDERS: &str = "apiVersion: graylane.io/v1
kind: RoutePolicy
metadata:
  name: orders
spec:
  service: orders
  release: gray
";

struct Instance {
    _app: DemoApp,
    _sidecar: Sidecar,
}

/// An `orders` instance in `namespace`; its app answers `"service": "<ns>-orders"`.
fn orders(dir: &Path, url: &str, namespace: &str, version: &str) -> Instance {
    let app = DemoApp::start(dir, &format!("{namespace}-orders"), version, None);
    let id = format!("{namespace}-orders-{version}");
    let sidecar = Sidecar::start(
        dir,
        &id,
        &[
            "--service",
            "orders",
            "--namespace",
            namespace,
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
    sidecar.wait_ready();
    Instance {
        _app: app,
        _sidecar: sidecar,
    }
}

/// GET / through the caller's outbound listener with this Host; (status, body).
fn call(outbound: SocketAddr, host: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, _, body) = exchange(outbound, host, headers);
    (status, body)
}

/// The `Graylane-Route` trail of a GET to `host` through the caller's outbound.
fn trail(outbound: SocketAddr, host: &str) -> String {
    let (status, head, body) = exchange(outbound, host, &[("graylane-debug", "1")]);
    assert_eq!(status, 200, "{host}: {body}");
    head.lines()
        .find_map(|l| l.strip_prefix("graylane-route: "))
        .unwrap_or_else(|| panic!("no trail: {head}"))
        .to_string()
}

/// GET / through `outbound` with this Host: (status, head, body).
fn exchange(outbound: SocketAddr, host: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(outbound).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// Which app answered (`shop-orders`, `staging-orders`) and its version.
fn answered(outbound: SocketAddr, host: &str, headers: &[(&str, &str)]) -> (String, String) {
    let (status, body) = call(outbound, host, headers);
    assert_eq!(status, 200, "{host}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (
        v["service"].as_str().unwrap().to_string(),
        v["version"].as_str().unwrap().to_string(),
    )
}

fn pair(service: &str, version: &str) -> (String, String) {
    (service.to_string(), version.to_string())
}

#[test]
fn namespaces_route_apart_and_the_cli_selects_them() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    // Old rules, as written before namespaces: they still apply, unchanged output.
    let old = write_file(dir.path(), "old.yaml", OLD_RULES);
    let applied = cp.cli(&["rules", "apply", "-f", &old]);
    assert!(
        applied.assert_ok().stdout.contains("Lane/gray"),
        "{applied:?}"
    );

    let _shop = orders(dir.path(), &url, "shop", "v1");
    let _staging_v1 = orders(dir.path(), &url, "staging", "v1");
    let _staging_v2 = orders(dir.path(), &url, "staging", "v2");
    // The caller: a sidecar of `frontend` in `shop` (its app is never called).
    let caller = Sidecar::start(
        dir.path(),
        "frontend",
        &[
            "--service",
            "frontend",
            "--namespace",
            "shop",
            "--app-addr",
            "127.0.0.1:9",
            "--control-plane",
            &url,
        ],
    );
    caller.wait_ready();
    caller.wait_endpoints("orders.shop", 1);
    caller.wait_endpoints("orders.staging", 2);
    let out = caller.outbound;

    // The bare name is the caller's own namespace; the three qualified forms name
    // staging's (v2 is in lane gray, so untagged requests get the base v1).
    assert_eq!(answered(out, "orders", &[]), pair("shop-orders", "v1"));
    for host in [
        "orders.staging",
        "orders.staging.svc",
        "orders.staging.svc.cluster.local:8080",
    ] {
        assert_eq!(
            answered(out, host, &[]),
            pair("staging-orders", "v1"),
            "{host}"
        );
    }
    // The trail names the namespace of a service not in `default`.
    for (host, entry) in [
        ("orders", "service=orders.shop;instance=shop-orders-v1;"),
        (
            "orders.staging",
            "service=orders.staging;instance=staging-orders-v1;",
        ),
    ] {
        let trail = trail(out, host);
        assert!(trail.starts_with(entry), "{host}: {trail}");
    }
    // A service a mesh namespace lacks is unknown (a scaled-to-zero `orders.shop` must
    // not go to the Internet's `.shop`), and so is any `.svc` name; a namespace the
    // mesh does not have is an ordinary host, looked up (none here).
    for host in [
        "nosuch.staging",
        "nosuch.shop",
        "nosuch.elsewhere.svc",
        "nosuch.staging.svc.cluster.local",
    ] {
        let (status, body) = call(out, host, &[]);
        assert_eq!(status, 502, "{host}: {body}");
        assert!(body.contains("unknown service nosuch."), "{host}: {body}");
    }
    let (status, body) = call(out, "api.invalid", &[]);
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("cannot resolve api.invalid"), "{body}");
    // The old file's lane routes: a gray request to staging reaches its v2; shop has
    // no v2, so it falls back to base.
    let gray = [("gray-publish", "gray")];
    assert_eq!(
        answered(out, "orders.staging", &gray),
        pair("staging-orders", "v2")
    );
    assert_eq!(answered(out, "orders", &gray), pair("shop-orders", "v1"));

    // `-n` on apply: a document of another namespace is refused (kubectl's rule),
    // naming the file, document and field, and nothing changes.
    let shop_doc = write_file(
        dir.path(),
        "shop.yaml",
        &GRAY_ORDERS.replace("  name: orders\n", "  name: orders\n  namespace: shop\n"),
    );
    let refused = cp.cli(&["rules", "apply", "-f", &shop_doc, "-n", "staging"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("document 1 (RoutePolicy/orders): metadata.namespace"),
        "{refused:?}"
    );
    let bad = cp.cli(&["rules", "get", "-n", "Staging"]);
    assert_eq!(bad.code, 2, "a namespace that is no DNS label: {bad:?}");

    // `-n staging` gives the document its namespace: only staging's routing changes.
    let gray_orders = write_file(dir.path(), "gray-orders.yaml", GRAY_ORDERS);
    let applied = cp.cli(&["rules", "apply", "-f", &gray_orders, "-n", "staging"]);
    assert!(
        applied
            .assert_ok()
            .stdout
            .contains("RoutePolicy/orders (staging)"),
        "{applied:?}"
    );
    eventually(
        Duration::from_secs(10),
        "staging's untagged requests to go to its lane instance",
        || (answered(out, "orders.staging", &[]) == pair("staging-orders", "v2")).then_some(()),
    );
    assert_eq!(answered(out, "orders", &[]), pair("shop-orders", "v1"));

    check_reads(&cp);
    check_metrics(caller.admin);
    check_trace(&cp, out);

    // Delete is per namespace too.
    let missing = cp.cli(&["rules", "delete", "RoutePolicy/orders", "-n", "shop"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    let deleted = cp.cli(&["rules", "delete", "RoutePolicy/orders", "-n", "staging"]);
    assert!(
        deleted
            .assert_ok()
            .stdout
            .contains("RoutePolicy/orders (staging)"),
        "{deleted:?}"
    );
    eventually(
        Duration::from_secs(10),
        "staging's untagged requests back on the base instance",
        || (answered(out, "orders.staging", &[]) == pair("staging-orders", "v1")).then_some(()),
    );

    // The sidecar's own errors name a service outside `default` as the CLI does.
    let slow = GRAY_ORDERS.replace("  release: gray\n", "  timeout: 100ms\n");
    let slow = write_file(dir.path(), "slow.yaml", &slow);
    cp.cli(&["rules", "apply", "-f", &slow, "-n", "staging"])
        .assert_ok();
    let delayed = [("x-demo-delay-ms", "2000")];
    let (status, body) = eventually(Duration::from_secs(10), "the timeout in force", || {
        let (status, body) = call(out, "orders.staging", &delayed);
        (status == 504).then_some((status, body))
    });
    assert_eq!(status, 504);
    assert!(
        body.contains("upstream orders.staging did not answer"),
        "{body}"
    );
}

/// `rules get`, `release get`, `status` and `explain` with and without `-n`.
fn check_reads(cp: &ControlPlane) {
    let items = |args: &[&str]| -> Vec<(String, String, String)> {
        let all = cp.cli(args).assert_ok().json();
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let ns = i["metadata"]["namespace"].as_str().unwrap_or("default");
                (
                    i["kind"].as_str().unwrap().to_string(),
                    ns.to_string(),
                    i["metadata"]["name"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let lane = ("Lane".into(), "default".into(), "gray".into());
    let policy = ("RoutePolicy".into(), "staging".into(), "orders".into());
    assert_eq!(
        items(&["rules", "get", "-o", "json"]),
        [lane.clone(), policy.clone()]
    );
    assert_eq!(
        items(&["rules", "get", "-n", "staging", "-o", "json"]),
        [lane.clone(), policy]
    );
    assert_eq!(items(&["rules", "get", "-n", "shop", "-o", "json"]), [lane]);
    let table = cp.cli(&["rules", "get", "-o", "table"]);
    let header = table.assert_ok().stdout.lines().next().unwrap().to_string();
    assert!(header.contains("NAMESPACE"), "{table:?}");

    let release = |ns: &str| {
        let got = cp.cli(&["release", "get", "orders", "-n", ns, "-o", "json"]);
        got.assert_ok().json()["services"][0]["release"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(release("staging"), "gray");
    assert_eq!(release("shop"), "all");
    // `orders.staging` reads as explain and the rules read it, from any namespace.
    let got = cp.cli(&[
        "release",
        "get",
        "orders.staging",
        "-n",
        "shop",
        "-o",
        "json",
    ]);
    assert_eq!(got.assert_ok().json()["services"][0]["release"], "gray");
    let set = cp.cli(&["release", "set", "orders.staging", "prod", "-o", "json"]);
    assert_eq!(set.assert_ok().json()["namespace"], "staging", "{set:?}");
    assert_eq!(release("staging"), "prod");
    cp.cli(&["release", "set", "orders.staging", "gray"])
        .assert_ok();

    let status = cp.cli(&["status", "-n", "staging", "-o", "json"]);
    let sidecars = status.assert_ok().json()["sidecars"].clone();
    let namespaces: Vec<&str> = sidecars
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["staging", "staging"], "{status:?}");

    // `-n` is the caller's namespace: `orders` there, or `orders.staging` from shop.
    for args in [
        &["explain", "--service", "orders", "-n", "staging"][..],
        &["explain", "--service", "orders.staging", "-n", "shop"],
    ] {
        let explained = cp.cli(args);
        let text = &explained.assert_ok().stdout;
        assert!(
            text.contains("orders in namespace staging: 2 instance(s), release state gray"),
            "{args:?}: {explained:?}"
        );
    }
    let shop = cp.cli(&["explain", "--service", "orders", "-n", "shop"]);
    assert!(
        shop.assert_ok()
            .stdout
            .contains("orders in namespace shop: 1 instance(s), release state all"),
        "{shop:?}"
    );
}

/// Spans say where each hop ran and which namespace a call went to.
fn check_trace(cp: &ControlPlane, outbound: SocketAddr) {
    let id = "4bf92f3577b34da6a3ce929d0e0e4711";
    let traceparent = format!("00-{id}-00f067aa0ba902b7-01");
    answered(outbound, "orders.staging", &[("traceparent", &traceparent)]);
    let spans = eventually(Duration::from_secs(10), "both spans of the trace", || {
        let out = cp.cli(&["trace", id, "-o", "json"]);
        if out.code != 0 {
            return None;
        }
        let spans = out.json()[0]["spans"].as_array()?.clone();
        (spans.len() >= 2).then_some(spans)
    });
    let attribute = |kind: &str, key: &str| -> Option<String> {
        let span = spans.iter().find(|s| s["kind"] == kind)?;
        span["attributes"][key].as_str().map(str::to_string)
    };
    assert_eq!(
        attribute("client", "graylane.destination.namespace").as_deref(),
        Some("staging"),
        "{spans:#?}"
    );
    assert_eq!(
        attribute("client", "k8s.namespace.name").as_deref(),
        Some("shop"),
        "{spans:#?}"
    );
    assert_eq!(
        attribute("server", "k8s.namespace.name").as_deref(),
        Some("staging"),
        "{spans:#?}"
    );
}

/// The caller's request metrics name the namespace called (`default` stays unlabelled).
fn check_metrics(admin: SocketAddr) {
    let (status, text) = http_get(admin, "/metrics");
    assert_eq!(status, 200);
    assert!(
        text.lines().any(|l| l.starts_with(
            "graylane_sidecar_requests_total{direction=\"outbound\",service=\"orders\",namespace=\"staging\""
        )),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with(
            "graylane_sidecar_requests_total{direction=\"outbound\",service=\"orders\",namespace=\"shop\""
        )),
        "{text}"
    );
}

/// Without `-n`, a context's `namespace` is what commands mean (kubectl's rule): apply
/// gives it to documents without one, reads are limited to it; `-n` still wins.
#[test]
fn the_context_namespace_is_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let config = write_file(
        dir.path(),
        "config.yaml",
        "currentContext: staging\ncontexts:\n  - name: staging\n    server: http://127.0.0.1:1\n    namespace: staging\n",
    );
    let with_context = |args: &[&str]| cp.cli(&[&["--config", config.as_str()], args].concat());
    let gray_orders = write_file(dir.path(), "gray-orders.yaml", GRAY_ORDERS);
    let applied = with_context(&["rules", "apply", "-f", &gray_orders]);
    assert!(
        applied
            .assert_ok()
            .stdout
            .lines()
            .any(|l| l.starts_with("RoutePolicy/orders (staging)") && l.ends_with("created")),
        "{applied:?}"
    );
    let release = with_context(&["release", "get", "orders", "-o", "json"]);
    assert_eq!(release.assert_ok().json()["services"][0]["release"], "gray");
    let names =
        |out: &graylane_tests::CliOutput| out.assert_ok().json()["items"].as_array().unwrap().len();
    assert_eq!(names(&with_context(&["rules", "get", "-o", "json"])), 1);
    assert_eq!(
        names(&with_context(&[
            "-n", "default", "rules", "get", "-o", "json"
        ])),
        0
    );
    // A typo in the file names the file's field, not a failing call.
    let typo = write_file(
        dir.path(),
        "typo.yaml",
        "currentContext: staging\ncontexts:\n  - name: staging\n    server: http://127.0.0.1:1\n    namespace: Staging\n",
    );
    let refused = cp.cli(&["--config", &typo, "rules", "get"]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("contexts[0].namespace"),
        "{refused:?}"
    );
}

/// `rules apply --prune -n shop` replaces shop's rules and nothing else: a team pruning
/// its own namespace must not delete another team's policies or the mesh-wide lanes
/// (kubectl's prune with `-n` is scoped the same way). `diff --prune -n` says the same.
#[test]
fn a_prune_with_a_namespace_removes_only_that_namespaces_rules() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let lane = write_file(dir.path(), "lane.yaml", OLD_RULES);
    let cart = GRAY_ORDERS.replace("name: orders", "name: cart");
    let cart = write_file(
        dir.path(),
        "cart.yaml",
        &cart.replace("service: orders", "service: cart"),
    );
    let orders = write_file(dir.path(), "orders.yaml", GRAY_ORDERS);
    cp.cli(&["rules", "apply", "-f", &lane]).assert_ok();
    for ns in ["shop", "staging"] {
        cp.cli(&["rules", "apply", "-f", &orders, "-f", &cart, "-n", ns])
            .assert_ok();
    }
    let diff = cp.cli(&["rules", "diff", "--prune", "-f", &orders, "-n", "shop"]);
    assert!(diff.assert_ok().stdout.contains("cart"), "{diff:?}");
    assert!(
        !diff.stdout.contains("staging") && !diff.stdout.contains("Lane"),
        "{diff:?}"
    );

    let pruned = cp.cli(&[
        "rules", "apply", "--prune", "-f", &orders, "-n", "shop", "-o", "json",
    ]);
    let changes = pruned.assert_ok().json()["changes"].clone();
    let deleted: Vec<&Value> = changes
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "deleted")
        .collect();
    assert_eq!(deleted.len(), 1, "{changes}");
    let what = |c: &Value| format!("{} {} {}", c["kind"], c["name"], c["namespace"]);
    assert_eq!(
        what(deleted[0]),
        r#""RoutePolicy" "cart" "shop""#,
        "{changes}"
    );
    let all = cp.cli(&["rules", "get", "-o", "json"]);
    let kept: Vec<String> = all.assert_ok().json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}/{} {}",
                r["kind"], r["metadata"]["name"], r["metadata"]["namespace"]
            )
        })
        .collect();
    assert_eq!(
        kept.len(),
        4,
        "Lane, shop's orders and staging's two: {kept:?}"
    );
    let history = cp.cli(&["rules", "history"]);
    assert!(
        history
            .assert_ok()
            .stdout
            .contains("apply --prune -n shop:"),
        "{history:?}"
    );
    // Without a namespace the files are the whole set, as before.
    let whole = cp.cli(&["rules", "apply", "--prune", "-f", &lane, "-o", "json"]);
    let deleted = whole.assert_ok().json()["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "deleted")
        .count();
    assert_eq!(deleted, 3, "{whole:?}");
}

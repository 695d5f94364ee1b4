//! The HTTP/JSON admin API (spec/http-api.md) against a real control plane: every
//! route and status code, the roles, expectRevision races, body limits and content
//! types, hostile input, and that the CLI (gRPC) and the API see one state.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use graylane_tests::{ControlPlane, write_file};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const SIDECAR: &str = "sidecar-token-0123456789";

/// An answer: status, raw head (for headers), body parsed as JSON (Null if not JSON).
struct Answer {
    status: u16,
    head: String,
    json: Value,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.json)
    }
}

/// One HTTP/1.1 request on a fresh connection; `extra` is raw header lines.
fn call(addr: SocketAddr, method: &str, path: &str, extra: &str, body: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    // The server may answer (413) and close before reading a large body.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        json: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

/// Every API answer: never sniffed as another type, never kept by a browser or proxy
/// (it carries rules, identities and traffic).
fn assert_guarded(a: &Answer) {
    assert!(
        a.head.contains("x-content-type-options: nosniff")
            && a.head.contains("cache-control: no-store"),
        "{}",
        a.head
    );
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

fn get(cp: &ControlPlane, token: &str, path: &str) -> Answer {
    call(cp.http, "GET", path, &bearer(token), b"")
}

fn send(cp: &ControlPlane, method: &str, path: &str, content_type: &str, body: &str) -> Answer {
    let extra = format!("{}Content-Type: {content_type}\r\n", bearer(ADMIN));
    call(cp.http, method, path, &extra, body.as_bytes())
}

fn lane_yaml(name: &str, version: &str) -> String {
    format!(
        "apiVersion: graylane.io/v1\nkind: Lane\nmetadata:\n  name: {name}\nspec:\n  tag: {name}\n  selector: {{version: {version}}}\n"
    )
}

fn lane_json(name: &str, version: &str) -> Value {
    json!({"apiVersion": "graylane.io/v1", "kind": "Lane", "metadata": {"name": name},
           "spec": {"tag": name, "selector": {"version": version}}})
}

fn start(dir: &Path) -> ControlPlane {
    let tokens = write_file(
        dir,
        "tokens",
        &format!("admin:{ADMIN}\nviewer:{VIEWER}\nsidecar:{SIDECAR}\n"),
    );
    ControlPlane::start(dir, &["--token-file", &tokens])
}

fn cli(cp: &ControlPlane, dir: &Path, token: &str, args: &[&str]) -> graylane_tests::CliOutput {
    let file = write_file(dir, &format!("{token}.tok"), &format!("{token}\n"));
    cp.cli(&[&["--token-file", file.as_str()][..], args].concat())
}

#[test]
fn credentials_come_only_from_the_bearer_header_and_roles_limit_writes() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    let yaml = lane_yaml("gray", "v2");
    let apply = |extra: &str| {
        let extra = format!("{extra}Content-Type: application/yaml\r\n");
        call(cp.http, "POST", "/api/v1/rules", &extra, yaml.as_bytes())
    };
    // None, wrong, in the query, in a cookie: 401 with a Bearer challenge.
    for (path, extra) in [
        ("/api/v1/rules", String::new()),
        ("/api/v1/rules", bearer("not-a-token-at-all-xyz")),
        (
            "/api/v1/rules?access_token=admin-token-0123456789",
            String::new(),
        ),
        ("/api/v1/rules", format!("Cookie: token={ADMIN}\r\n")),
        ("/api/v1/rules", format!("Authorization: Basic {ADMIN}\r\n")),
    ] {
        let a = call(cp.http, "GET", path, &extra, b"");
        assert_eq!(a.status, 401, "{path} {extra}: {a:?}");
        assert!(a.head.contains("www-authenticate: bearer"), "{}", a.head);
        assert!(a.json["error"].as_str().is_some(), "{a:?}");
        assert_guarded(&a);
    }
    let read = get(&cp, ADMIN, "/api/v1/rules");
    assert_eq!(read.status, 200, "{read:?}");
    assert_guarded(&read);
    assert_eq!(apply("").status, 401);
    // A viewer reads everything and writes nothing; a sidecar's token is not an
    // operator's.
    for path in [
        "/api/v1/rules",
        "/api/v1/history",
        "/api/v1/releases",
        "/api/v1/sidecars",
        "/api/v1/gaps",
    ] {
        assert_eq!(get(&cp, VIEWER, path).status, 200, "{path}");
        assert_eq!(get(&cp, SIDECAR, path).status, 403, "{path}");
    }
    let refused = apply(&bearer(VIEWER));
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(
        refused.json["error"].as_str().unwrap().contains("viewer"),
        "{refused:?}"
    );
    assert_eq!(apply(&bearer(SIDECAR)).status, 403);
    assert_eq!(
        get(&cp, ADMIN, "/api/v1/rules").json["revision"],
        0,
        "nothing written"
    );
    let ok = apply(&bearer(ADMIN));
    assert_eq!(ok.status, 200, "{ok:?}");
    // Who: the token's role and the caller's address.
    let history = get(&cp, VIEWER, "/api/v1/history").json;
    assert_eq!(history[0]["appliedBy"], "admin (127.0.0.1)", "{history}");
    // The viewer role holds on gRPC too: reads yes, writes no, no discovery stream.
    let file = write_file(dir.path(), "lane.yaml", &lane_yaml("blue", "v3"));
    cli(&cp, dir.path(), VIEWER, &["rules", "get"]).assert_ok();
    let out = cli(&cp, dir.path(), VIEWER, &["rules", "apply", "-f", &file]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("viewer"), "{out:?}");
    // A dry run writes nothing: a viewer reviews a change before an admin applies it.
    let diff = cli(&cp, dir.path(), VIEWER, &["rules", "diff", "-f", &file]);
    assert!(diff.assert_ok().stdout.contains("blue"), "{diff:?}");
    let dry = cli(
        &cp,
        dir.path(),
        VIEWER,
        &["rules", "apply", "--dry-run", "-f", &file],
    );
    assert!(dry.assert_ok().stdout.contains("Lane/blue"), "{dry:?}");
    let previewed = call(
        cp.http,
        "POST",
        "/api/v1/rules?dryRun=true",
        &format!("{}Content-Type: application/yaml\r\n", bearer(VIEWER)),
        yaml.as_bytes(),
    );
    assert_eq!(previewed.status, 200, "{previewed:?}");
    assert_eq!(previewed.json["committed"], false, "{previewed:?}");
    let deleting = cli(
        &cp,
        dir.path(),
        VIEWER,
        &["rules", "delete", "--dry-run", "Lane/gray"],
    );
    deleting.assert_ok();
    assert_eq!(
        get(&cp, ADMIN, "/api/v1/rules").json["revision"],
        1,
        "the viewer's dry runs wrote nothing"
    );
    cli(&cp, dir.path(), ADMIN, &["rules", "apply", "-f", &file]).assert_ok();
    // Over gRPC the CLI says who its user is; history shows that claim after the role
    // the token proved, so a client cannot write history as someone else (here, as a
    // rollout).
    let green = write_file(dir.path(), "green.yaml", &lane_yaml("green", "v4"));
    let claimed = Command::new(graylane_tests::bin("graylane"))
        .args(["--server", &cp.url(), "rules", "apply", "-f", &green])
        .env(
            "GRAYLANE_TOKEN_FILE",
            write_file(dir.path(), "admin.tok", ADMIN),
        )
        .env("GRAYLANE_CONFIG", "/nonexistent/graylane-tests/config.yaml")
        .env("USER", "graylane-rollout/gray")
        .output()
        .unwrap();
    assert!(claimed.status.success(), "{claimed:?}");
    let history = get(&cp, VIEWER, "/api/v1/history?limit=1").json;
    let who = history[0]["appliedBy"].as_str().unwrap();
    assert!(who.starts_with("admin: graylane-rollout/gray@"), "{who}");
    assert!(who.ends_with(" (127.0.0.1)"), "{who}");
}

#[test]
fn apply_get_delete_and_history_speak_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    // YAML, multi-document.
    let yaml = format!(
        "{}---\n{}",
        lane_yaml("gray", "v2"),
        lane_yaml("blue", "v3")
    );
    let a = send(
        &cp,
        "POST",
        "/api/v1/rules",
        "application/yaml; charset=utf-8",
        &yaml,
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json["revision"], 1);
    assert_eq!(a.json["committed"], true);
    let changes = a.json["changes"].as_array().unwrap();
    assert!(
        changes.contains(&json!({"resource": "Lane/gray", "action": "created"})),
        "{a:?}"
    );
    // JSON; a dry run commits nothing.
    let body = json!({"resources": [lane_json("gray", "v9")]}).to_string();
    let dry = send(
        &cp,
        "POST",
        "/api/v1/rules?dryRun=true",
        "application/json",
        &body,
    );
    assert_eq!(
        (dry.status, &dry.json["committed"], &dry.json["revision"]),
        (200, &json!(false), &json!(1)),
        "{dry:?}"
    );
    let gray = json!({"resource": "Lane/gray", "action": "configured"});
    assert!(
        dry.json["changes"].as_array().unwrap().contains(&gray),
        "{dry:?}"
    );
    let real = send(&cp, "POST", "/api/v1/rules", "application/json", &body);
    assert_eq!(real.json["revision"], 2, "{real:?}");
    // Reads: the list, one resource, absent ones.
    let list = get(&cp, ADMIN, "/api/v1/rules").json;
    assert_eq!(list["revision"], 2);
    assert_eq!(list["resources"].as_array().unwrap().len(), 2, "{list}");
    let one = get(&cp, ADMIN, "/api/v1/rules/Lane/gray");
    assert_eq!(one.status, 200);
    assert_eq!(one.json["spec"]["selector"]["version"], "v9", "{one:?}");
    assert_eq!(get(&cp, ADMIN, "/api/v1/rules/Lane/green").status, 404);
    assert_eq!(get(&cp, ADMIN, "/api/v1/rules/Gateway/gray").status, 404);
    // prune with a namespace: only that namespace's rules are replaced; lanes stay.
    let policy = "apiVersion: graylane.io/v1\nkind: RoutePolicy\nmetadata: {name: orders}\n\
                  spec: {service: orders, release: gray}\n";
    let scoped = send(
        &cp,
        "POST",
        "/api/v1/rules?namespace=shop&prune=true",
        "application/yaml",
        policy,
    );
    let changes = scoped.json["changes"].as_array().unwrap();
    let created =
        json!({"resource": "RoutePolicy/orders", "namespace": "shop", "action": "created"});
    assert!(changes.contains(&created), "{scoped:?}");
    assert!(
        changes.iter().all(|c| c["action"] != "deleted"),
        "{scoped:?}"
    );
    let bad = send(
        &cp,
        "POST",
        "/api/v1/rules?namespace=Shop&prune=true",
        "application/yaml",
        policy,
    );
    assert_eq!(bad.status, 400, "{bad:?}");
    // prune: the body becomes the whole set.
    let pruned = send(
        &cp,
        "POST",
        "/api/v1/rules?prune=true",
        "application/yaml",
        &lane_yaml("gray", "v9"),
    );
    assert!(
        pruned.json["changes"]
            .as_array()
            .unwrap()
            .contains(&json!({"resource": "Lane/blue", "action": "deleted"})),
        "{pruned:?}"
    );
    // Delete: the new revision, then 404.
    let deleted = send(
        &cp,
        "DELETE",
        "/api/v1/rules/Lane/gray",
        "application/json",
        "",
    );
    assert_eq!(
        (deleted.status, &deleted.json["revision"]),
        (200, &json!(5)),
        "{deleted:?}"
    );
    assert_eq!(
        send(
            &cp,
            "DELETE",
            "/api/v1/rules/Lane/gray",
            "application/json",
            ""
        )
        .status,
        404
    );
    // History, newest first.
    let history = get(&cp, ADMIN, "/api/v1/history").json;
    let revisions: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revisions, [5, 4, 3, 2, 1], "{history}");
    assert!(
        history[0]["appliedAt"].as_str().unwrap().ends_with('Z'),
        "{history}"
    );
    assert!(
        history[0]["summary"].as_str().unwrap().contains("delete"),
        "{history}"
    );
    // The CLI's JSON says the same, field for field.
    let dir = tempfile::tempdir().unwrap();
    let out = cli(&cp, dir.path(), ADMIN, &["rules", "history", "-o", "json"]);
    assert_eq!(out.assert_ok().json(), history);
}

#[test]
fn validation_errors_read_as_the_cli_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    let bad = lane_yaml("gray", "v2").replace("tag: gray", "tag: gray\n  bogus: 1");
    let a = send(&cp, "POST", "/api/v1/rules", "application/yaml", &bad);
    assert_eq!(a.status, 400, "{a:?}");
    let detail = a.json["details"][0].as_str().unwrap().to_owned();
    assert!(
        detail.starts_with("request: document 1 (Lane/gray): spec.bogus"),
        "{a:?}"
    );
    let file = write_file(dir.path(), "bad.yaml", &bad);
    let out = cli(&cp, dir.path(), ADMIN, &["rules", "apply", "-f", &file]);
    assert_ne!(out.code, 0);
    let cli_words = detail.replacen("request", &file, 1);
    assert!(
        out.stderr.contains(&cli_words),
        "CLI: {out:?}\nAPI: {detail}"
    );
    // The same through JSON: the document is counted the same way.
    let mut resource = lane_json("gray", "v2");
    resource["spec"]["bogus"] = json!(1);
    let body = json!({"resources": [lane_json("ok", "v1"), resource]}).to_string();
    let a = send(&cp, "POST", "/api/v1/rules", "application/json", &body);
    assert_eq!(a.status, 400, "{a:?}");
    assert!(
        a.json["details"][0]
            .as_str()
            .unwrap()
            .starts_with("request: document 2 (Lane/gray)"),
        "{a:?}"
    );
    // A key given twice is refused as YAML refuses it (serde_json alone keeps the last
    // one: `Lane/green` would be created), in the API and in the CLI's JSON List.
    let twice = r#"{"resources": [{"apiVersion": "graylane.io/v1", "kind": "Lane",
        "metadata": {"name": "blue", "name": "green"},
        "spec": {"tag": "blue", "selector": {"version": "v2"}}}]}"#;
    let a = send(&cp, "POST", "/api/v1/rules", "application/json", twice);
    assert_eq!(a.status, 400, "{a:?}");
    let error = a.json["error"].as_str().unwrap();
    assert!(error.contains("duplicate key \"name\" at line 2"), "{a:?}");
    let list = twice.replace(r#"{"resources""#, r#"{"kind": "List", "items""#);
    let file = write_file(dir.path(), "twice.json", &list);
    let out = cli(&cp, dir.path(), ADMIN, &["rules", "apply", "-f", &file]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("duplicate mapping key: name"),
        "{out:?}"
    );
    assert_eq!(
        get(&cp, ADMIN, "/api/v1/rules").json["revision"],
        0,
        "nothing committed"
    );
    // What GET answers posts back as it is, `revision` and all: nothing changes.
    send(
        &cp,
        "POST",
        "/api/v1/rules",
        "application/yaml",
        &lane_yaml("gray", "v2"),
    );
    let answer = get(&cp, ADMIN, "/api/v1/rules").json;
    let again = send(
        &cp,
        "POST",
        "/api/v1/rules",
        "application/json",
        &answer.to_string(),
    );
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(
        again.json["changes"],
        json!([{"resource": "Lane/gray", "action": "unchanged"}]),
        "{again:?}"
    );
}

#[test]
fn expect_revision_lets_exactly_one_of_two_racing_writers_win() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    send(
        &cp,
        "POST",
        "/api/v1/rules",
        "application/yaml",
        &lane_yaml("base", "v1"),
    );
    for round in 0..5 {
        let revision = get(&cp, ADMIN, "/api/v1/rules").json["revision"]
            .as_u64()
            .unwrap();
        let path = format!("/api/v1/rules?expectRevision={revision}");
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let writers: Vec<_> = ["a", "b"]
                .map(|w| {
                    let (cp, path) = (&cp, &path);
                    s.spawn(move || {
                        let body = lane_yaml(&format!("{w}{round}"), "v2");
                        send(cp, "POST", path, "application/yaml", &body).status
                    })
                })
                .into_iter()
                .collect();
            writers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut sorted = statuses.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [200, 409], "round {round}: {statuses:?}");
        let after = get(&cp, ADMIN, "/api/v1/rules").json["revision"]
            .as_u64()
            .unwrap();
        assert_eq!(after, revision + 1, "one revision per round");
    }
    // Stale on every write route.
    let stale = "expectRevision=1";
    let a = send(
        &cp,
        "DELETE",
        &format!("/api/v1/rules/Lane/base?{stale}"),
        "application/json",
        "",
    );
    assert_eq!(a.status, 409, "{a:?}");
    assert!(
        a.json["error"]
            .as_str()
            .unwrap()
            .contains("revision conflict"),
        "{a:?}"
    );
    let a = send(
        &cp,
        "POST",
        &format!("/api/v1/rollback?{stale}"),
        "application/json",
        r#"{"to": 1}"#,
    );
    assert_eq!(a.status, 409, "{a:?}");
    let a = send(
        &cp,
        "PUT",
        &format!("/api/v1/releases/orders?{stale}"),
        "application/json",
        r#"{"state": "gray", "force": true}"#,
    );
    assert_eq!(a.status, 409, "{a:?}");
}

#[test]
fn bodies_over_their_limit_are_413_and_other_types_415() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    let big = format!(
        "# {}\n{}",
        "x".repeat(8 * 1024 * 1024),
        lane_yaml("gray", "v2")
    );
    let a = send(&cp, "POST", "/api/v1/rules", "application/yaml", &big);
    assert_eq!(a.status, 413, "{a:?}");
    // Small routes take small bodies: 100 KiB of explain headers is refused.
    let headers: serde_json::Map<String, Value> = (0..2000)
        .map(|i| (format!("h{i}"), json!("v".repeat(50))))
        .collect();
    let body = json!({"service": "orders", "headers": headers}).to_string();
    assert_eq!(
        send(&cp, "POST", "/api/v1/explain", "application/json", &body).status,
        413
    );
    let a = send(
        &cp,
        "POST",
        "/api/v1/rollback",
        "application/json",
        &format!(r#"{{"to": 1, "pad": "{}"}}"#, "x".repeat(100_000)),
    );
    assert_eq!(a.status, 413, "{a:?}");
    // A large apply under the limit goes through (read in many buffers).
    let pad = format!("# {}\n", "p".repeat(500 * 1024));
    let large = format!(
        "{pad}{}---\n{pad}{}",
        lane_yaml("gray", "v2"),
        lane_yaml("blue", "v3")
    );
    let a = send(
        &cp,
        "POST",
        "/api/v1/rules?dryRun=true",
        "application/yaml",
        &large,
    );
    assert_eq!(
        (a.status, &a.json["committed"]),
        (200, &json!(false)),
        "{a:?}"
    );
    for (path, content_type) in [
        ("/api/v1/rules", "text/plain"),
        ("/api/v1/rules", "application/x-www-form-urlencoded"),
        ("/api/v1/rollback", "application/yaml"),
        ("/api/v1/explain", "text/plain"),
    ] {
        let a = send(&cp, "POST", path, content_type, "{}");
        assert_eq!(a.status, 415, "{path} {content_type}: {a:?}");
    }
    let no_type = call(
        cp.http,
        "POST",
        "/api/v1/rules",
        &bearer(ADMIN),
        lane_yaml("g", "v2").as_bytes(),
    );
    assert_eq!(no_type.status, 415, "{no_type:?}");
    // Judged on the head alone: a client announcing a body over the limit, or one of
    // a type not taken, is answered before it sends a byte of it (and not after the
    // body deadline, a minute later, when it never does).
    for (path, content_type, length, status) in [
        ("/api/v1/rules", "application/yaml", "100000000", 413),
        ("/api/v1/explain", "application/json", "70000", 413),
        ("/api/v1/rules", "text/plain", "10", 415),
    ] {
        let mut stream = TcpStream::connect(cp.http).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{}Content-Type: {content_type}\r\n\
             Content-Length: {length}\r\n\r\n",
            bearer(ADMIN)
        );
        stream.write_all(head.as_bytes()).unwrap();
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert_eq!(
            answer,
            format!("HTTP/1.1 {status}"),
            "{path} {content_type} {length}"
        );
    }
    assert_eq!(
        get(&cp, ADMIN, "/api/v1/rules").json["revision"],
        0,
        "nothing committed"
    );
}

#[test]
fn hostile_input_is_refused_without_harm() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    send(
        &cp,
        "POST",
        "/api/v1/rules",
        "application/yaml",
        &lane_yaml("gray", "v2"),
    );
    for body in [
        "{",
        r#"{"resources": 5}"#,
        r#"{"resources": [], "extra": 1}"#,
        "\u{0}\u{1}",
    ] {
        let a = send(&cp, "POST", "/api/v1/rules", "application/json", body);
        assert_eq!(a.status, 400, "{body:?}: {a:?}");
        assert!(
            a.json["error"]
                .as_str()
                .unwrap()
                .starts_with("request: invalid JSON"),
            "{a:?}"
        );
    }
    assert_eq!(
        send(
            &cp,
            "POST",
            "/api/v1/rollback",
            "application/json",
            r#"{"to": "one"}"#
        )
        .status,
        400
    );
    assert_eq!(
        send(
            &cp,
            "PUT",
            "/api/v1/releases/orders",
            "application/json",
            r#"{"state": "blue"}"#
        )
        .status,
        400
    );
    // Paths: `..`, an encoded slash, a kind that does not exist, unknown routes.
    for path in [
        "/api/v1/rules/Lane/../../history",
        "/api/v1/rules/Lane/..%2F..%2Fhistory",
        "/api/v1/rules/Lane/gray%2Fx",
        "/api/v1/rules/Gateway/gray",
        "/api/v1/nothing",
        "/api/v2/rules",
    ] {
        let a = get(&cp, ADMIN, path);
        assert!(a.status == 404 || a.status == 400, "{path}: {a:?}");
        assert!(a.json["error"].is_string(), "{path}: {a:?}");
    }
    let a = send(&cp, "PATCH", "/api/v1/rules", "application/json", "{}");
    assert_eq!(a.status, 405, "{a:?}");
    assert!(a.json["error"].is_string(), "{a:?}");
    // An operator's typo in a query parameter is an error, not a silent no-op.
    let a = send(
        &cp,
        "POST",
        "/api/v1/rules?dryrun=true",
        "application/yaml",
        &lane_yaml("typo", "v1"),
    );
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(
        get(&cp, ADMIN, "/api/v1/rules?expectRevision=x").status,
        400
    );
    // A huge header does not reach a handler, and the server keeps serving.
    let huge = format!("X-Junk: {}\r\n{}", "j".repeat(200_000), bearer(ADMIN));
    let a = call(cp.http, "GET", "/api/v1/rules", &huge, b"");
    assert!(a.status != 200, "{a:?}");
    assert_eq!(get(&cp, ADMIN, "/api/v1/rules").json["revision"], 1);
    assert_eq!(graylane_tests::http_get(cp.http, "/live").0, 200);
}

#[test]
fn a_query_parameter_a_route_does_not_take_is_refused_and_namespace_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    let policy = |namespace: &str| {
        format!(
            "apiVersion: graylane.io/v1\nkind: RoutePolicy\nmetadata:\n  name: orders\n{namespace}spec:\n  service: orders\n  release: gray\n"
        )
    };
    let a = send(
        &cp,
        "POST",
        "/api/v1/rules",
        "application/yaml",
        &lane_yaml("gray", "v2"),
    );
    assert_eq!(a.json["revision"], 1, "{a:?}");
    let a = send(
        &cp,
        "POST",
        "/api/v1/rules",
        "application/yaml",
        &policy(""),
    );
    assert_eq!(a.json["revision"], 2, "{a:?}");
    // `dryRun` where the route has no dry run: refused, not a real write.
    for (method, path, body) in [
        ("POST", "/api/v1/rollback?dryRun=true", r#"{"to": 1}"#),
        (
            "PUT",
            "/api/v1/releases/orders?dryRun=true",
            r#"{"state": "prod", "force": true}"#,
        ),
    ] {
        let a = send(&cp, method, path, "application/json", body);
        assert_eq!(a.status, 400, "{path}: {a:?}");
        let error = a.json["error"].as_str().unwrap();
        assert!(error.contains("does not take `dryRun`"), "{path}: {error}");
    }
    for path in [
        "/api/v1/sidecars?limit=1",
        "/api/v1/gaps?window=5m",
        "/api/v1/history?kind=Lane",
    ] {
        assert_eq!(get(&cp, ADMIN, path).status, 400, "{path}");
    }
    assert_eq!(
        get(&cp, ADMIN, "/api/v1/rules").json["revision"],
        2,
        "nothing written"
    );
    // `?namespace=NS` on an apply gives NS to a document without one, as `-n` does.
    let a = send(
        &cp,
        "POST",
        "/api/v1/rules?namespace=staging",
        "application/yaml",
        &policy(""),
    );
    assert_eq!(a.status, 200, "{a:?}");
    let created: Vec<&Value> = a.json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "created")
        .collect();
    assert_eq!(created.len(), 1, "{a:?}");
    assert_eq!(created[0]["namespace"], "staging", "{a:?}");
    let a = get(
        &cp,
        ADMIN,
        "/api/v1/rules/RoutePolicy/orders?namespace=staging",
    );
    assert_eq!(a.status, 200, "{a:?}");
    // ... and refuses one naming another, writing nothing.
    let a = send(
        &cp,
        "POST",
        "/api/v1/rules?namespace=staging",
        "application/yaml",
        &policy("  namespace: shop\n"),
    );
    assert_eq!(a.status, 400, "{a:?}");
    assert!(
        a.json["details"].to_string().contains("metadata.namespace"),
        "{a:?}"
    );
    let a = send(
        &cp,
        "POST",
        "/api/v1/rules?namespace=Not_Valid",
        "application/yaml",
        &policy(""),
    );
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(get(&cp, ADMIN, "/api/v1/rules").json["revision"], 3);
}

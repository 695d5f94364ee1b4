//! The web console (spec/http-api.md, "The console") in a real browser: Debian's
//! chromium, headless, over WebDriver (`graylane_tests::webdriver`). A real control
//! plane and frontend → orders (v1, v2) with lane `gray`; the page is read by the words
//! a person reads (service names, lane names, instance ids, button labels).
//!
//! Each run overwrites the README's screenshots, `docs/console-<view>.png`.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use graylane_tests::webdriver::{Browser, WAIT, button, literal};
use graylane_tests::{ControlPlane, DemoApp, Sidecar, docs, eventually, rawhttp, write_file};
use serde_json::Value;

/// A label value that is markup: the console must show these characters, never run
/// them.
const XSS: &str = "<img src=x onerror=alert(1)>";

const RULES: &str = "apiVersion: graylane.io/v1
kind: Lane
metadata:
  name: gray
spec:
  tag: gray
  selector: {version: v2}
  fallback: [base]
---
apiVersion: graylane.io/v1
kind: TagPolicy
metadata:
  name: edge
spec:
  services: [frontend]
  # The test client has no mesh identity: its tag is kept only because this says so.
  incoming: keep
";

/// A rollout of lane `gray` that holds at its first step for longer than any test
/// (no traffic: no verdict moves it).
const ROLLOUT: &str = "apiVersion: graylane.io/v1
kind: LaneRollout
metadata:
  name: gray-orders-2
spec:
  lane: gray
  entry: edge
  hashBy: {header: x-user-id}
  steps:
    - {percent: 5, hold: 10m}
    - {percent: 25, hold: 10m}
    - {percent: 100, hold: 10m}
  analysis:
    interval: 1s
";

/// A strict lane (no fallback) with no instance: every cell of it fails.
const BLUE: &str = "apiVersion: graylane.io/v1
kind: Lane
metadata:
  name: blue
spec:
  tag: blue
  selector: {version: v3}
  fallback: []
";

/// The policy every console response carries (spec: the console's own origin only).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The field labelled "Token" on the sign-in form.
const TOKEN_FIELD: &str = "//input[@id=//label[normalize-space(.)='Token']/@for]";

const VIEWS: [&str; 6] = [
    "Lanes", "Releases", "Rollouts", "Rules", "Sidecars", "Traces",
];

struct Mesh {
    cp: ControlPlane,
    entry: SocketAddr,
    _instances: Vec<(DemoApp, Sidecar)>,
}

/// frontend v1 → orders v1 (labelled with [`XSS`]) and v2, behind their sidecars.
fn mesh(dir: &Path) -> Mesh {
    let cp = ControlPlane::start(dir, &[]);
    cp.cli(&[
        "rules",
        "apply",
        "-f",
        &write_file(dir, "rules.yaml", RULES),
    ])
    .assert_ok();
    let url = cp.url();
    let mut instances = Vec::new();
    for (service, version, call) in [
        ("frontend", "v1", Some("orders")),
        ("orders", "v1", None),
        ("orders", "v2", None),
    ] {
        let mut app = DemoApp::start(dir, service, version, call);
        let id = format!("{service}-{version}");
        let labels = format!("version={version}");
        // Labels are checked at the sidecar's flags and at Hello; an instance id is
        // free text, so a hostile one is how markup reaches the console.
        let instance = if id == "orders-v1" {
            format!("{id}{XSS}")
        } else {
            id.clone()
        };
        let addr = app.addr.to_string();
        let sidecar = Sidecar::start(
            dir,
            &id,
            &[
                "--service",
                service,
                "--instance-id",
                &instance,
                "--labels",
                &labels,
                "--app-addr",
                &addr,
                "--control-plane",
                &url,
            ],
        );
        if call.is_some() {
            app.proc.write_line(&sidecar.outbound.to_string());
        }
        sidecar.wait_ready();
        instances.push((app, sidecar));
    }
    instances[0].1.wait_endpoints("orders", 2);
    Mesh {
        entry: instances[0].1.inbound,
        cp,
        _instances: instances,
    }
}

/// A GET to the frontend's sidecar with `headers`; the status.
fn call(entry: SocketAddr, headers: &[(&str, &str)]) -> u16 {
    let mut stream = TcpStream::connect(entry).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = String::from("GET / HTTP/1.1\r\nHost: frontend\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    stream
        .write_all(format!("{request}\r\n").as_bytes())
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Where the README's screenshots live: `docs/` at the top of the repository.
fn shot(name: &str) -> PathBuf {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    std::fs::create_dir_all(&docs).unwrap();
    docs.join(format!("console-{name}.png"))
}

fn nav(view: &str) -> String {
    format!("//nav//a[normalize-space(.)={}]", literal(view))
}

fn heading(view: &str) -> String {
    format!("//h1[normalize-space(.)={}]", literal(view))
}

/// The button `label` in the table row that names `service`.
fn row_button(service: &str, label: &str) -> String {
    format!(
        "//tr[.//*[normalize-space(.)={}]]//button[normalize-space(.)={}]",
        literal(service),
        literal(label)
    )
}

/// The release state of `orders`, read through the CLI (`auth` are its token flags).
fn release(cp: &ControlPlane, auth: &[&str]) -> String {
    let args = [auth, &["release", "get", "orders", "-o", "json"]].concat();
    let got = cp.cli(&args).assert_ok().json();
    let services = got["services"].as_array().unwrap();
    let orders = services.iter().find(|s| s["service"] == "orders");
    let state = orders.and_then(|s| s["release"].as_str());
    state
        .unwrap_or_else(|| panic!("orders in {got}"))
        .to_string()
}

/// Opens `view` from the navigation and waits for its heading.
fn open(browser: &Browser, view: &str) {
    browser.click(&nav(view));
    browser.wait_for(&heading(view));
    assert!(
        browser
            .url()
            .ends_with(&format!("#/{}", view.to_lowercase())),
        "{}",
        browser.url()
    );
}

#[test]
fn every_view_shows_the_mesh_and_a_switch_and_a_rollback_work_from_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = mesh(dir.path());
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    // Traffic for the Lanes view's numbers; the traced request last, so it is among
    // the recent traces the Traces view lists.
    for _ in 0..10 {
        assert_eq!(call(mesh.entry, &[]), 200);
        assert_eq!(call(mesh.entry, &[("Gray-Publish", "gray")]), 200);
    }
    let tagged = [
        ("Gray-Publish", "gray"),
        ("traceparent", traceparent.as_str()),
    ];
    assert_eq!(call(mesh.entry, &tagged), 200);
    let origin = format!("http://{}", mesh.cp.http);
    let browser = Browser::start(dir.path());

    // Every view loads from its own address (a bookmark, a reload).
    for view in VIEWS {
        browser.goto(&format!("{origin}/#/{}", view.to_lowercase()));
        browser.wait_for(&heading(view));
    }
    // An unknown route is the Lanes view, not a blank page.
    browser.goto(&format!("{origin}/#/nope"));
    browser.wait_for(&heading("Lanes"));

    lanes_view(&browser, &mesh.cp, dir.path());
    sidecars_view(&browser);
    releases_view(&browser, &mesh.cp);
    rules_view(&browser, &mesh.cp);
    traces_view(&browser, trace);
    only_its_own_origin(&browser, &origin);
    csp_header(mesh.cp.http);
    assert_eq!(browser.dialog(), None, "a dialog is open");
}

fn lanes_view(browser: &Browser, cp: &ControlPlane, dir: &Path) {
    open(browser, "Lanes");
    let page = browser.wait_text("orders-v2");
    for word in [
        "frontend",
        "orders",
        "base",
        "gray",
        "orders-v1",
        "frontend-v1",
    ] {
        assert!(page.contains(word), "{word:?} in the Lanes view:\n{page}");
    }
    // orders-v2 is the lane's; the gray cell of a service without lane instances
    // says where its requests go.
    browser.wait_text("falls back to base");
    // A lane applied while the page is open appears without a reload (the marker
    // set on this document survives), strict: no instance, so its cells fail.
    browser.execute("window.__sameDocument = true", &[]);
    cp.cli(&["rules", "apply", "-f", &write_file(dir, "blue.yaml", BLUE)])
        .assert_ok();
    browser.wait_text("fails (503)");
    let kept = browser.execute("return window.__sameDocument === true", &[]);
    assert_eq!(kept, true, "the page reloaded");
    // Live numbers from the sidecars' traffic reports (every 5 s), without a reload.
    let page = browser.wait_text("req/s");
    assert!(page.contains("% errors") && page.contains("p99"), "{page}");
    browser.screenshot_page(&shot("lanes"));
}

fn sidecars_view(browser: &Browser) {
    open(browser, "Sidecars");
    let page = browser.wait_text("orders-v1");
    for word in ["frontend-v1", "orders-v2", "default", "version=v2"] {
        assert!(
            page.contains(word),
            "{word:?} in the Sidecars view:\n{page}"
        );
    }
    // Every column the spec lists, and the workload identity the control plane
    // decided (spiffe://cluster.local/ns/default/sa/default).
    let lower = page.to_lowercase();
    for column in [
        "namespace",
        "address",
        "labels",
        "lanes",
        "acked revision",
        "identity",
        "nack reason",
    ] {
        assert!(lower.contains(column), "column {column:?}:\n{page}");
    }
    assert!(page.contains("spiffe://"), "{page}");
    // The hostile instance id is shown as its characters: no <img> was made from it, no
    // handler ran, no dialog is open.
    assert!(page.contains(&format!("orders-v1{XSS}")), "{page}");
    let made = browser.execute(
        "return document.querySelectorAll('img[src=\"x\"], [onerror]').length",
        &[],
    );
    assert_eq!(made, 0, "markup from a label became elements");
    assert_eq!(browser.dialog(), None, "a dialog is open");
    browser.screenshot_page(&shot("sidecars"));
}

fn releases_view(browser: &Browser, cp: &ControlPlane) {
    open(browser, "Releases");
    browser.wait_for(&row_button("orders", "gray"));
    let before = docs::revision(cp);
    // A likely mistake, refused with the server's reason on the page: frontend has
    // no lane instance, so `gray` would make every request to it a 503.
    browser.click(&row_button("frontend", "gray"));
    browser.wait_text("is in a lane");
    assert_eq!(
        docs::revision(cp),
        before,
        "a refused switch wrote a revision"
    );
    browser.click(&row_button("orders", "gray"));
    // The switch is one revision, followed on the page until every sidecar acked it.
    let acked = format!("revision {}: acked by 3 of 3 sidecars", before + 1);
    browser.wait_text(&acked);
    assert_eq!(release(cp, &[]), "gray");
    browser.screenshot_page(&shot("releases"));
}

fn rules_view(browser: &Browser, cp: &ControlPlane) {
    open(browser, "Rules");
    browser.wait_text("History");
    let switched = docs::revision(cp);
    let first = switched - 1;
    // Two steps: the first click only asks; nothing changes until confirmed.
    browser.click(&button(&format!("Roll back to {first}")));
    browser.wait_for(&button(&format!("Confirm roll back to {first}")));
    assert_eq!(
        docs::revision(cp),
        switched,
        "rolled back without a confirm"
    );
    browser.click(&button(&format!("Confirm roll back to {first}")));
    eventually(Duration::from_secs(10), "the rollback revision", || {
        (docs::revision(cp) == switched + 1).then_some(())
    });
    browser.wait_text(&format!("revision {}", switched + 1));
    assert_eq!(
        release(cp, &[]),
        "all",
        "back to the state before the switch"
    );
    // The switch's diff against the revision before it: the release line added.
    browser.click(&format!(
        "//li[.//*[normalize-space(.)={}]]//button[normalize-space(.)='Show diff']",
        literal(&format!("revision {switched}"))
    ));
    eventually(WAIT, "the diff to show the release line added", || {
        let page = browser.page_text();
        page.lines()
            .any(|l| l.starts_with('+') && l.contains("release: gray"))
            .then_some(())
    });
    browser.screenshot_page(&shot("rules"));
}

fn traces_view(browser: &Browser, trace: &str) {
    open(browser, "Traces");
    browser.wait_text("Propagation gaps");
    browser.click(&button(trace));
    // The hop tree: the table beside the heading "Trace <id>".
    let tree = format!(
        "//*[h2[normalize-space(.)={}]]//table",
        literal(&format!("Trace {trace}"))
    );
    browser.wait_for(&tree);
    let text = browser.text(&tree);
    for word in ["frontend", "orders", "v2", "gray", "200", "ms"] {
        assert!(text.contains(word), "{word:?} in the hop tree:\n{text}");
    }
    browser.screenshot_page(&shot("traces"));
}

/// Everything the page loaded (the document, modules, styles, icon, every API call)
/// came from its own origin, and the browser logged no error (a CSP violation is one).
fn only_its_own_origin(browser: &Browser, origin: &str) {
    let urls = browser.execute(
        "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')).map(e => e.name)",
        &[],
    );
    let urls: Vec<&str> = urls
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(urls.len() > 3, "{urls:?}");
    for url in &urls {
        assert!(
            url.starts_with(&format!("{origin}/")),
            "{url} is not from {origin}"
        );
    }
    let errors: Vec<Value> = browser
        .console_messages()
        .into_iter()
        .filter(|m| m["level"] == "SEVERE")
        // The refused switch above: an API answer the page shows, not a page error.
        .filter(|m| {
            let text = m["message"].as_str().unwrap_or_default();
            !(text.contains("/api/v1/") && text.contains("responded with a status of 4"))
        })
        .collect();
    assert!(errors.is_empty(), "the browser logged errors: {errors:#?}");
}

fn csp_header(http: SocketAddr) {
    for path in [
        "/",
        "/console/app.js",
        "/console/style.css",
        "/console/nope.js",
    ] {
        let response = rawhttp::get(http, &http.to_string(), path).unwrap();
        let head = &response.head;
        assert_eq!(
            head.get("content-security-policy"),
            Some(CSP),
            "{path}: {head:?}"
        );
        assert_eq!(
            head.get("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
}

#[test]
fn with_a_token_file_a_viewer_signs_in_reads_and_is_refused_a_switch() {
    let dir = tempfile::tempdir().unwrap();
    let cp = with_tokens(dir.path());
    let admin = write_file(dir.path(), "admin.tok", "admin-token-0123456789\n");
    let policy = write_file(
        dir.path(),
        "policy.yaml",
        &format!("{}---\n{}", docs::LANE, docs::POLICY),
    );
    cp.cli(&["--token-file", &admin, "rules", "apply", "-f", &policy])
        .assert_ok();
    let browser = Browser::start(dir.path());
    browser.goto(&format!("http://{}/#/releases", cp.http));

    browser.wait_for(TOKEN_FIELD);
    browser.screenshot_page(&shot("signin"));
    // A typo is refused on the page, and the form stays.
    browser.type_into(TOKEN_FIELD, "viewer-token-012345678X");
    browser.click(&button("Sign in"));
    browser.wait_text("Refused");
    browser.wait_for(TOKEN_FIELD);

    browser.type_into(TOKEN_FIELD, "viewer-token-0123456789");
    browser.click(&button("Sign in"));
    browser.wait_for(&row_button("orders", "gray"));
    browser.click(&row_button("orders", "gray"));
    browser.wait_text("may only read");
    assert_eq!(release(&cp, &["--token-file", &admin]), "all");
    // The token lives in this tab's sessionStorage: never a cookie, never the URL.
    let kept = browser.execute(
        "return [document.cookie, localStorage.length, Object.values(sessionStorage).join()]",
        &[],
    );
    assert_eq!(kept[0], "", "{kept}");
    assert_eq!(kept[1], 0, "{kept}");
    assert_eq!(kept[2], "viewer-token-0123456789", "{kept}");
    assert!(!browser.url().contains("token"), "{}", browser.url());
}

#[test]
fn a_token_no_header_can_carry_is_refused_on_the_form() {
    let dir = tempfile::tempdir().unwrap();
    let cp = with_tokens(dir.path());
    let browser = Browser::start(dir.path());
    browser.goto(&format!("http://{}/#/lanes", cp.http));
    // A pasted token with a character outside ISO-8859-1: fetch refuses the header
    // before anything is sent, so no 401 ever comes back to bring the form again.
    browser.type_into(TOKEN_FIELD, "viewer-token-0123456789\u{2713}");
    browser.click(&button("Sign in"));
    browser.wait_for("//*[@role='alert']");
    browser.wait_for(TOKEN_FIELD);
    browser.type_into(TOKEN_FIELD, "viewer-token-0123456789");
    browser.click(&button("Sign in"));
    browser.wait_text("No service yet");
}

/// A control plane with `--token-file`: an admin and a viewer token.
fn with_tokens(dir: &Path) -> ControlPlane {
    let tokens = write_file(
        dir,
        "tokens",
        "admin:admin-token-0123456789\nviewer:viewer-token-0123456789\n",
    );
    ControlPlane::start(dir, &["--token-file", &tokens])
}

#[test]
fn the_rollouts_view_shows_a_rollout_and_pauses_resumes_and_aborts_it() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let rules = write_file(dir.path(), "rules.yaml", &format!("{RULES}---\n{ROLLOUT}"));
    cp.cli(&["rules", "apply", "-f", &rules]).assert_ok();
    let rollout = || {
        let args = ["rollout", "status", "gray-orders-2", "-o", "json"];
        cp.cli(&args).assert_ok().json()
    };
    eventually(WAIT, "the rollout at step 1", || {
        (rollout()["step"] == 1).then_some(())
    });
    let browser = Browser::start(dir.path());
    browser.goto(&format!("http://{}/#/lanes", cp.http));
    open(&browser, "Rollouts");
    // Name, state and share of users, as a person reads them.
    let page = browser.wait_text("gray-orders-2");
    for word in [
        "Progressing",
        "5%",
        "step 1 of 3",
        "lane gray",
        "started: step 1, 5%",
    ] {
        assert!(
            page.contains(word),
            "{word:?} in the Rollouts view:\n{page}"
        );
    }

    // Pause and resume act at once; the page follows.
    browser.click(&button("Pause"));
    browser.wait_for(&button("Resume"));
    assert_eq!(rollout()["state"], "Paused");
    browser.wait_text("paused by admin");
    browser.click(&button("Resume"));
    browser.wait_for(&button("Pause"));
    assert_eq!(rollout()["state"], "Progressing");
    // One verdict (none: no traffic) with its lane and base readings.
    browser.wait_text("no verdict");
    browser.screenshot_page(&shot("rollouts"));

    // Whoever a CLI says it is lands on the timeline, after the role its token proved:
    // shown as characters, never markup.
    let out = std::process::Command::new(graylane_tests::bin("graylane"))
        .args(["--server", &cp.url(), "rollout", "pause", "gray-orders-2"])
        .env("USER", XSS)
        .env("GRAYLANE_CONFIG", "/nonexistent/graylane-tests/config.yaml")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = browser.wait_text(&format!("paused by admin: {XSS}"));
    assert!(page.contains("Paused"), "{page}");
    let made = browser.execute(
        "return document.querySelectorAll('img[src=\"x\"], [onerror]').length",
        &[],
    );
    assert_eq!(made, 0, "markup from a user name became elements");
    browser.click(&button("Resume"));
    browser.wait_for(&button("Pause"));

    // Abort ends the rollout: it asks first, and nothing changes until confirmed.
    browser.click(&button("Abort"));
    browser.wait_for(&button("Confirm abort"));
    assert_eq!(
        rollout()["state"],
        "Progressing",
        "aborted without a confirm"
    );
    browser.click(&button("Confirm abort"));
    browser.wait_text("RolledBack");
    browser.wait_text("aborted by admin");
    assert_eq!(rollout()["state"], "RolledBack");
    // Over: no action is offered any more.
    browser.wait_gone(&button("Pause"));
    assert!(browser.find_all(&button("Abort")).is_empty());
    assert_eq!(browser.dialog(), None, "a dialog is open");
}

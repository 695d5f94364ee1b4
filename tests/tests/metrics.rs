//! `/metrics` of the real binaries: typed for the scraper (Prometheus 3 refuses a scrape
//! without a `Content-Type`), in the format its `Accept` asks for, and parsed strictly —
//! by `promtool check metrics` and by the exposition rules checked here, which cover
//! OpenMetrics too. And a 503 for a lane without instances is labelled by its service.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use graylane_tests::otlp::Receiver;
use graylane_tests::{ControlPlane, DemoApp, Sidecar, eventually, raw, write_file};

const RULES: &str = "apiVersion: graylane.io/v1
kind: Lane
metadata:
  name: blue
spec:
  tag: blue
  selector: {version: v3}
  fallback: []
";

const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPEN_METRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// What Prometheus 3 sends by default.
const PROMETHEUS_3_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";

/// A control plane with RULES, `orders` v1 behind its sidecar, and a `frontend`
/// sidecar (its app calls nothing: the test talks to its outbound listener).
struct Mesh {
    cp: ControlPlane,
    _apps: Vec<DemoApp>,
    orders: Sidecar,
    frontend: Sidecar,
}

fn mesh(dir: &Path, otlp: &str) -> Mesh {
    let cp = ControlPlane::start(dir, &[]);
    let rules = write_file(dir, "rules.yaml", RULES);
    cp.cli(&["rules", "apply", "-f", &rules]).assert_ok();
    let url = cp.url();
    let mut apps = Vec::new();
    let mut sidecars = Vec::new();
    for (service, version) in [("orders", "v1"), ("frontend", "v1")] {
        let app = DemoApp::start(dir, service, version, None);
        let id = format!("{service}-{version}");
        let args = [
            "--service",
            service,
            "--instance-id",
            &id,
            "--labels",
            &format!("version={version}"),
            "--app-addr",
            &app.addr.to_string(),
            "--control-plane",
            &url,
            "--otlp-endpoint",
            otlp,
        ];
        let sidecar = Sidecar::start(dir, &id, &args);
        sidecar.wait_ready();
        apps.push(app);
        sidecars.push(sidecar);
    }
    let frontend = sidecars.pop().unwrap();
    let orders = sidecars.pop().unwrap();
    frontend.wait_endpoints("orders", 1);
    Mesh {
        cp,
        _apps: apps,
        orders,
        frontend,
    }
}

/// A GET through `addr` to `host`; the status.
fn call(addr: SocketAddr, host: &str, headers: &str) -> u16 {
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n");
    raw(addr, &request).0
}

/// `/metrics` of `addr` with `accept`: (Content-Type, body).
fn scrape(addr: SocketAddr, accept: Option<&str>) -> (String, String) {
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{accept}Connection: close\r\n\r\n");
    let (status, response) = raw(addr, &request);
    assert_eq!(status, 200, "{response}");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no Content-Type: {head}"));
    // hyper writes a Content-Length body for these: no chunk framing to undo.
    (content_type, body.to_string())
}

#[test]
fn metrics_are_typed_negotiated_and_parse_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let otlp = Receiver::start();
    let mesh = mesh(dir.path(), &otlp.url());
    // A request each way, so the histograms and the labelled series have samples.
    assert_eq!(call(mesh.frontend.outbound, "orders", ""), 200);
    for (name, addr) in [("sidecar", mesh.orders.admin), ("control", mesh.cp.http)] {
        let (content_type, text) = scrape(addr, None);
        assert_eq!(content_type, TEXT, "{name}");
        check(&text, false).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        promtool(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        for expected in [
            "\ngraylane_build_info{version=\"",
            "\nprocess_cpu_seconds_total ",
            "\nprocess_resident_memory_bytes ",
            "\nprocess_open_fds ",
            "\nprocess_max_fds ",
            "\nprocess_start_time_seconds ",
        ] {
            assert!(text.contains(expected), "{name}: {expected}\n{text}");
        }
        let (content_type, om) = scrape(addr, Some(PROMETHEUS_3_ACCEPT));
        assert_eq!(content_type, OPEN_METRICS, "{name}");
        check(&om, true).unwrap_or_else(|e| panic!("{name}: {e}\n{om}"));
        let (content_type, _) = scrape(addr, Some("text/plain;version=0.0.4,*/*;q=0.1"));
        assert_eq!(content_type, TEXT, "{name}");
    }
    let (_, sidecar) = scrape(mesh.orders.admin, None);
    for expected in [
        r#"graylane_sidecar_requests_total{direction="inbound",service="orders",subset="-",lane="-",status="200"} 1"#,
        r#"graylane_sidecar_request_duration_seconds_count{direction="inbound",service="orders",subset="-",lane="-",status="200"} 1"#,
        r#"graylane_connections_accepted_total{listener="inbound"} "#,
        // Its app, called once over one pooled connection.
        r#"graylane_upstream_connections_opened_total{protocol="http/1.1",transport="plaintext"} 1"#,
        "graylane_upstream_connect_errors_total 0\n",
        "graylane_sidecar_rule_revision 1\n",
        "graylane_sidecar_requests_in_flight 0\n",
    ] {
        assert!(sidecar.contains(expected), "{expected}\n{sidecar}");
    }
    let (_, control) = scrape(mesh.cp.http, None);
    for expected in [
        "graylane_control_commits_total 1\n",
        "graylane_control_push_ack_seconds_bucket{le=\"+Inf\"} ",
        "graylane_control_connected_sidecars 2\n",
    ] {
        assert!(control.contains(expected), "{expected}\n{control}");
    }
}

#[test]
fn a_503_for_a_lane_without_instances_is_labelled_by_its_service() {
    let dir = tempfile::tempdir().unwrap();
    let otlp = Receiver::start();
    let mesh = mesh(dir.path(), &otlp.url());
    let trace = "4bf92f3577b34da6a3ce929d0e0e4701";
    let headers = format!("Gray-Publish: blue\r\ntraceparent: 00-{trace}-00f067aa0ba902b7-01\r\n");
    assert_eq!(call(mesh.frontend.outbound, "orders", &headers), 503);
    // A service the routing table does not know gets no series of its own: clients
    // could otherwise grow the label set without bound.
    assert_eq!(
        call(mesh.frontend.outbound, "no-such-service-7f3a", ""),
        502
    );
    let (_, text) = scrape(mesh.frontend.admin, None);
    let series = r#"graylane_sidecar_requests_total{direction="outbound",service="orders",subset="-",lane="blue",status="503"} 1"#;
    assert!(text.contains(series), "{text}");
    assert!(!text.contains("no-such-service"), "{text}");
    assert!(
        text.contains(r#"graylane_sidecar_requests_total{direction="outbound",service="-",subset="-",lane="-",status="502"} 1"#),
        "{text}"
    );
    let span = eventually(Duration::from_secs(10), "the 503's client span", || {
        otlp.trace(trace).into_iter().find(|s| s.kind == "client")
    });
    assert_eq!(span.name, "outbound orders", "{span:#?}");
    assert_eq!(
        span.attributes["http.response.status_code"], "503",
        "{span:#?}"
    );
}

/// `promtool check metrics`: Prometheus' own parser and linter for the text format.
fn promtool(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool: {e} (scripts/deps.sh test installs it)"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// The exposition rules a scraper enforces, for the text format 0.0.4 or (when
/// `open_metrics`) OpenMetrics 1.0.0: every sample belongs to a family declared by
/// `# TYPE` before it, families are contiguous and declared once, names and labels are
/// well formed and escaped, values parse, no series repeats, counters are `_total`,
/// histogram buckets are cumulative up to `+Inf` == `_count`, and OpenMetrics ends in
/// `# EOF`.
fn check(body: &str, open_metrics: bool) -> Result<(), String> {
    let body = body.strip_suffix('\n').ok_or("no final newline")?;
    let body = match (open_metrics, body.strip_suffix("# EOF")) {
        (true, Some(rest)) => rest,
        (true, None) => return Err("OpenMetrics without # EOF".into()),
        (false, _) if body.contains("# EOF") => return Err("# EOF in the text format".into()),
        (false, _) => body,
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut current = String::new();
    let mut series = BTreeSet::new();
    // (family, labels without le) -> (buckets in order, count)
    let mut histograms: BTreeMap<(String, String), (Vec<(f64, f64)>, Option<f64>)> =
        BTreeMap::new();
    for line in body.lines() {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut words = meta.splitn(3, ' ');
            let (keyword, name) = (words.next().unwrap(), words.next().unwrap_or(""));
            let rest = words.next().unwrap_or("");
            valid_name(name).map_err(|e| format!("{line}: {e}"))?;
            match keyword {
                "HELP" | "UNIT" if name == current || !types.contains_key(name) => {}
                "TYPE" if !types.contains_key(name) => {
                    let allowed: &[&str] = if open_metrics {
                        &["counter", "gauge", "histogram", "info", "unknown"]
                    } else {
                        &["counter", "gauge", "histogram", "summary", "untyped"]
                    };
                    if !allowed.contains(&rest) {
                        return Err(format!("{line}: type {rest}"));
                    }
                    types.insert(name.to_string(), rest.to_string());
                    current = name.to_string();
                }
                _ => return Err(format!("{line}: out of place")),
            }
            continue;
        }
        let (name, labels, value) = sample(line)?;
        let family = family_of(&name, &types, open_metrics)
            .ok_or_else(|| format!("{line}: no # TYPE declares its family"))?;
        if family != current {
            return Err(format!("{line}: family {family} is not contiguous"));
        }
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(format!("{line}: series repeated"));
        }
        let kind = types[&family].as_str();
        if kind == "counter" && !(name.ends_with("_total") && value >= 0.0) {
            return Err(format!("{line}: a counter is `_total` and not negative"));
        }
        if kind == "histogram" {
            let mut rest = labels.clone();
            let le = rest.remove("le");
            let entry = histograms
                .entry((family.clone(), format!("{rest:?}")))
                .or_default();
            match (name.strip_prefix(family.as_str()), le) {
                (Some("_bucket"), Some(le)) => {
                    let le: f64 = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().map_err(|_| format!("{line}: le"))?
                    };
                    if entry.0.last().is_some_and(|&(b, n)| b >= le || n > value) {
                        return Err(format!("{line}: buckets not cumulative"));
                    }
                    entry.0.push((le, value));
                }
                (Some("_count"), None) => entry.1 = Some(value),
                (Some("_sum"), None) => {}
                _ => return Err(format!("{line}: not a histogram sample")),
            }
        }
    }
    for ((family, labels), (buckets, count)) in histograms {
        if buckets.last().map(|&(le, n)| (le, Some(n))) != Some((f64::INFINITY, count)) {
            return Err(format!("{family}{labels}: +Inf bucket != _count"));
        }
    }
    Ok(())
}

/// The family a sample belongs to, by the suffixes its type adds.
fn family_of(name: &str, types: &BTreeMap<String, String>, open_metrics: bool) -> Option<String> {
    let kind = |n: &str| types.get(n).map(String::as_str);
    if !open_metrics && kind(name).is_some_and(|k| k != "histogram") {
        return Some(name.to_string());
    }
    let suffixes: &[(&str, &str)] = &[
        ("_bucket", "histogram"),
        ("_sum", "histogram"),
        ("_count", "histogram"),
        ("_total", "counter"),
        ("_info", "info"),
    ];
    for (suffix, wanted) in suffixes {
        let Some(base) = name.strip_suffix(suffix) else {
            continue;
        };
        if kind(base) == Some(wanted) {
            return Some(base.to_string());
        }
    }
    (open_metrics && matches!(kind(name), Some("gauge" | "unknown"))).then(|| name.to_string())
}

/// `name{labels} value`: the labels unescaped.
fn sample(line: &str) -> Result<(String, BTreeMap<String, String>, f64), String> {
    let end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("{line}: no value"))?;
    let name = &line[..end];
    valid_name(name).map_err(|e| format!("{line}: {e}"))?;
    let mut labels = BTreeMap::new();
    let mut rest = &line[end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        while !inner.starts_with('}') {
            let (key, after) = inner
                .split_once("=\"")
                .ok_or_else(|| format!("{line}: label"))?;
            valid_name(key).map_err(|e| format!("{line}: {e}"))?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let close = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err(format!("{line}: bad escape")),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("{line}: unterminated label value")),
                }
            };
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("{line}: label {key} twice"));
            }
            inner = &after[close + 1..];
            if let Some(next) = inner.strip_prefix(',') {
                if next.starts_with('}') {
                    return Err(format!("{line}: trailing comma"));
                }
                inner = next;
            } else if !inner.starts_with('}') {
                return Err(format!("{line}: labels not separated by commas"));
            }
        }
        rest = &inner[1..];
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("{line}: no space before value"))?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("{line}: value {v:?}"))?,
    };
    Ok((name.to_string(), labels, value))
}

fn valid_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("bad name {name:?}"))
    }
}

//! Spans from real sidecars: frontend → orders (v1, v2) → payments (v1), lane `gray`
//! (v2, falling back to base). Received by a test OTLP receiver, and by the control
//! plane for `graylane trace`.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use graylane_tests::otlp::{ReceivedSpan, Receiver};
use graylane_tests::{ControlPlane, DemoApp, Sidecar, eventually, http_get, write_file};
use serde_json::Value;

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
  # The test client calls the edge in plaintext: no mesh identity, so with mTLS on
  # (the default, permissive) its tag is kept only because this policy says so.
  incoming: keep
";

/// The client's own span id, the parent of the first sidecar span.
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

struct Mesh {
    _cp: ControlPlane,
    _instances: Vec<(DemoApp, Sidecar)>,
    entry: SocketAddr,
    cp_url: String,
}

/// The three-service mesh; `otlp` is each sidecar's `--otlp-endpoint` (default: the
/// control plane).
fn mesh(dir: &Path, otlp: Option<&str>) -> Mesh {
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
        ("orders", "v1", Some("payments")),
        ("orders", "v2", Some("payments")),
        ("payments", "v1", None),
    ] {
        let mut app = DemoApp::start(dir, service, version, call);
        let id = format!("{service}-{version}");
        let labels = format!("version={version}");
        let addr = app.addr.to_string();
        let mut args = vec![
            "--service",
            service,
            "--instance-id",
            &id,
            "--labels",
            &labels,
            "--app-addr",
            &addr,
            "--control-plane",
            &url,
        ];
        if let Some(otlp) = otlp {
            args.extend(["--otlp-endpoint", otlp]);
        }
        let sidecar = Sidecar::start(dir, &id, &args);
        if call.is_some() {
            app.proc.write_line(&sidecar.outbound.to_string());
        }
        sidecar.wait_ready();
        instances.push((app, sidecar));
    }
    instances[0].1.wait_endpoints("orders", 2);
    instances[1].1.wait_endpoints("payments", 1);
    instances[2].1.wait_endpoints("payments", 1);
    Mesh {
        entry: instances[0].1.inbound,
        _cp: cp,
        _instances: instances,
        cp_url: url,
    }
}

/// A GET to the frontend's sidecar; the body (the apps' own record of the hops).
fn get(addr: SocketAddr, headers: &[(&str, &str)]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = String::from("GET / HTTP/1.1\r\nHost: frontend\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").unwrap().1.to_string()
}

fn trace_id(n: u8) -> String {
    format!("4bf92f3577b34da6a3ce929d0e0e47{n:02x}")
}

fn one<'a>(spans: &'a [ReceivedSpan], kind: &str, service: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == kind && s.resource["service.name"] == service)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} span of {service} in {spans:#?}");
    found[0]
}

#[test]
fn a_three_hop_chain_is_one_trace_with_its_routing_in_every_span() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let mesh = mesh(dir.path(), Some(&receiver.url()));

    for (n, (mode, source)) in [
        ("header", "header"),
        ("traceparent", "trace"),
        ("baggage", "baggage"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = trace_id(u8::try_from(n).unwrap());
        let tp = format!("00-{id}-{CLIENT_SPAN}-01");
        get(
            mesh.entry,
            &[
                ("Gray-Publish", "gray"),
                ("traceparent", &tp),
                ("x-demo-forward", mode),
            ],
        );
        // Exported in batches (at least once a second).
        let spans = eventually(Duration::from_secs(10), "5 spans of the trace", || {
            let spans = receiver.trace(&id);
            (spans.len() >= 5).then_some(spans)
        });
        assert_eq!(
            spans.len(),
            5,
            "{mode}: one trace across all hops: {spans:#?}"
        );

        let front_in = one(&spans, "server", "frontend");
        let front_out = one(&spans, "client", "frontend");
        let orders_in = one(&spans, "server", "orders");
        let orders_out = one(&spans, "client", "orders");
        let pay_in = one(&spans, "server", "payments");
        // Each hop is the child of the one before: client → inbound → outbound → ...
        assert_eq!(front_in.parent, CLIENT_SPAN, "{mode}");
        assert_eq!(front_out.parent, front_in.span_id, "{mode}");
        assert_eq!(orders_in.parent, front_out.span_id, "{mode}");
        assert_eq!(orders_out.parent, orders_in.span_id, "{mode}");
        assert_eq!(pay_in.parent, orders_out.span_id, "{mode}");

        // Who and what, on the spans of the hop frontend → orders.
        assert_eq!(
            orders_in.resource["service.instance.id"], "orders-v2",
            "{mode}"
        );
        assert_eq!(orders_in.resource["graylane.label.version"], "v2");
        let a = &front_out.attributes;
        assert_eq!(a["graylane.service"], "frontend");
        assert_eq!(a["graylane.instance"], "frontend-v1");
        assert_eq!(a["graylane.destination"], "orders");
        assert_eq!(a["graylane.destination_instance"], "orders-v2");
        assert_eq!(a["graylane.tag"], "gray");
        assert_eq!(a["graylane.tag_source"], source, "{mode}");
        assert_eq!(a["graylane.lane"], "gray");
        assert_eq!(a["graylane.fallback"], "false");
        assert_eq!(a["graylane.revision"], "1");
        assert_eq!(a["http.response.status_code"], "200");
        assert_eq!(a["graylane.retries"], "0");
        // The tag at orders' outbound side came the way the app forwarded it.
        let b = &orders_out.attributes;
        assert_eq!(b["graylane.tag_source"], source, "{mode}");
        // payments has no v2: the fallback and its reason.
        assert_eq!(b["graylane.destination_instance"], "payments-v1");
        assert_eq!(b["graylane.fallback"], "true", "{mode}");
        assert!(
            b["graylane.fallback_reason"]
                .contains("no ready instance in lane gray, served by base"),
            "{b:?}"
        );
        assert_eq!(pay_in.attributes["graylane.tag"], "gray");
        assert_eq!(pay_in.attributes["graylane.tag_source"], "header");
    }
}

#[test]
fn graylane_trace_shows_the_hops_the_apps_saw() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = mesh(dir.path(), None);
    let id = trace_id(0x42);
    let tp = format!("00-{id}-{CLIENT_SPAN}-01");
    let body = get(
        mesh.entry,
        &[
            ("Gray-Publish", "gray"),
            ("traceparent", &tp),
            ("x-demo-forward", "traceparent"),
        ],
    );
    // The apps' own record: frontend v1 → orders v2 → payments v1.
    let mut served = Vec::new();
    let mut v: Value = serde_json::from_str(&body).unwrap();
    while v.get("service").is_some() {
        served.push(format!(
            "{} {}",
            v["service"].as_str().unwrap(),
            v["version"].as_str().unwrap()
        ));
        v = v["downstream"].clone();
    }
    assert_eq!(served, ["frontend v1", "orders v2", "payments v1"]);

    let cli = |args: &[&str]| graylane_tests::cli(&[&["--server", &mesh.cp_url], args].concat());
    let json = eventually(
        Duration::from_secs(10),
        "the trace at the control plane",
        || {
            let out = cli(&["trace", &id, "-o", "json"]);
            let v = (out.code == 0).then(|| out.json())?;
            (v[0]["spans"].as_array()?.len() == 5).then_some(v)
        },
    );
    // Every span says when it started (the sidecar reads the clock only for spans it
    // exports): within the last minute, and a duration, not an epoch's worth.
    let now = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap();
    for s in json[0]["spans"].as_array().unwrap() {
        let start = s["startUnixNano"].as_u64().unwrap();
        assert!(start <= now && now - start < 60_000_000_000, "{s}");
        let ms = s["durationMs"].as_f64().unwrap();
        assert!((0.0..10_000.0).contains(&ms), "{s}");
    }
    // The served instances, in hop order, from the inbound spans.
    let mut inbound: Vec<(u64, String)> = json[0]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "server")
        .map(|s| {
            let a = &s["attributes"];
            (
                s["startUnixNano"].as_u64().unwrap(),
                format!(
                    "{} {}",
                    a["service.name"].as_str().unwrap(),
                    a["graylane.label.version"].as_str().unwrap()
                ),
            )
        })
        .collect();
    inbound.sort();
    let hops: Vec<String> = inbound.into_iter().map(|(_, h)| h).collect();
    assert_eq!(hops, served, "the trace matches who actually served");

    let tree = cli(&["trace", &id]);
    tree.assert_ok();
    let lines: Vec<&str> = tree.stdout.lines().collect();
    assert_eq!(lines[0], format!("trace {id}"));
    assert!(
        lines[1].starts_with("frontend v1 [gray from header] 200"),
        "{}",
        tree.stdout
    );
    assert!(
        lines[2].contains("→ orders: orders-v2, lane gray 200"),
        "{}",
        tree.stdout
    );
    assert!(
        lines[3].contains("orders v2 [gray from header] 200"),
        "{}",
        tree.stdout
    );
    assert!(
        lines[4].contains("→ payments: payments-v1, lane gray, fallback (no ready instance in lane gray, served by base) 200"),
        "{}",
        tree.stdout
    );
    assert!(
        lines[5].contains("payments v1 [gray from header] 200"),
        "{}",
        tree.stdout
    );

    let recent = cli(&["trace", "--recent", "5"]);
    recent.assert_ok();
    assert!(
        recent.stdout.contains(&format!("trace {id}")),
        "{}",
        recent.stdout
    );
    let missing = cli(&["trace", &trace_id(0x43)]);
    assert_eq!(missing.code, 1, "{missing:?}");
    let bad = cli(&["trace", "xyz"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("32 hex digits"), "{bad:?}");
}

#[test]
fn a_slow_collector_costs_spans_not_requests() {
    let dir = tempfile::tempdir().unwrap();
    // Accepts connections and never answers: every export waits out its timeout.
    let black_hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", black_hole.local_addr().unwrap());
    let mesh = mesh(dir.path(), Some(&url));
    let mut failed = 0;
    for i in 0..3000 {
        let tp = format!("00-{:032x}-{CLIENT_SPAN}-01", i + 1);
        let mut stream = TcpStream::connect(mesh.entry).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let request = format!(
            "GET / HTTP/1.1\r\nHost: frontend\r\nConnection: close\r\ntraceparent: {tp}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        if !response.starts_with("HTTP/1.1 200") {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "the data path does not notice the collector");
    let front = &mesh._instances[0].1;
    eventually(Duration::from_secs(20), "dropped spans counted", || {
        let (_, metrics) = http_get(front.admin, "/metrics");
        let dropped: u64 = metrics.lines().find_map(|l| {
            l.strip_prefix("graylane_spans_dropped_total ")?
                .parse()
                .ok()
        })?;
        (dropped > 0).then_some(())
    });
    drop(black_hole);
}

#[test]
fn graylane_gaps_names_the_app_that_drops_the_lane() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = mesh(dir.path(), None);
    let cli = |args: &[&str]| graylane_tests::cli(&[&["--server", &mesh.cp_url], args].concat());
    // Apps that forward traceparent keep the lane: no gap.
    let kept = trace_id(0x51);
    get(
        mesh.entry,
        &[
            ("Gray-Publish", "gray"),
            ("traceparent", &format!("00-{kept}-{CLIENT_SPAN}-01")),
            ("x-demo-forward", "traceparent"),
        ],
    );
    // The frontend's app forwards nothing: its calls to orders lose the lane.
    let dropped = trace_id(0x52);
    for _ in 0..3 {
        let body = get(
            mesh.entry,
            &[
                ("Gray-Publish", "gray"),
                ("traceparent", &format!("00-{dropped}-{CLIENT_SPAN}-01")),
                ("x-demo-forward", "none"),
            ],
        );
        assert!(
            body.contains(r#""version":"v1""#),
            "orders v1 served: {body}"
        );
    }
    // Every span is in before the verdict (the traceparent trace has all five).
    eventually(
        Duration::from_secs(10),
        "the spans at the control plane",
        || {
            let out = cli(&["trace", &kept, "-o", "json"]);
            let v = (out.code == 0).then(|| out.json())?;
            (v[0]["spans"].as_array()?.len() == 5).then_some(())
        },
    );
    let gaps = eventually(Duration::from_secs(10), "3 gaps reported", || {
        let v = cli(&["gaps", "-o", "json"]).json();
        (v[0]["count"].as_u64()? == 3).then_some(v)
    });
    assert_eq!(
        gaps,
        serde_json::json!([{
            "service": "frontend",
            "destination": "orders",
            "count": 3,
            "exampleTraceId": dropped,
        }]),
        "only the frontend's app drops the lane (orders then serves untagged requests)"
    );
    let table = cli(&["gaps"]);
    table.assert_ok();
    assert!(
        table.stdout.contains("frontend") && table.stdout.contains(&dropped),
        "{}",
        table.stdout
    );
    let (_, metrics) = http_get(mesh._instances[0].1.admin, "/metrics");
    assert!(
        metrics.contains(r#"graylane_propagation_gaps_total{destination="orders"} 3"#),
        "{metrics}"
    );
}

/// A hostile or broken exporter (any sidecar credential may export): one 0.7 MiB export
/// whose resource carries a 64 KiB attribute over 20,000 spans took the control plane
/// to 1.3 GB, the resource copied into every span kept; and a trace repeating a span id
/// as its own parent made `graylane trace` overflow its stack.
#[test]
fn the_trace_store_is_bounded_in_bytes_and_a_repeated_span_id_makes_no_cycle() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let text = |k: &str, v: String| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    };
    let span = |trace: [u8; 16], id: u64, parent: Option<u64>| Span {
        trace_id: trace.to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: format!("span {id}"),
        kind: 2,
        start_time_unix_nano: 1_000 + id,
        end_time_unix_nano: 2_000 + id,
        ..Default::default()
    };
    let export = |resource: Vec<KeyValue>, spans: Vec<Span>| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let wide = (0..20_000u64)
        .map(|i| span(((i / 1_000) as u128 + 1).to_be_bytes(), i + 1, None))
        .collect();
    let padded = export(vec![text("padding", "x".repeat(64 << 10))], wide);
    let cycle_id = [0xc7; 16];
    let cycle = export(
        vec![text("service.name", "orders".into())],
        vec![
            span(cycle_id, 1, None),
            span(cycle_id, 2, Some(1)),
            span(cycle_id, 2, Some(2)),
        ],
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://{}", cp.grpc))
            .await
            .unwrap()
            .max_encoding_message_size(16 << 20);
        client.export(padded).await.expect("the padded export");
        client.export(cycle).await.expect("the cyclic export");
    });
    let peak = graylane_tests::h2raw::Usage::of(cp.proc.pid()).peak_kib;
    assert!(
        peak < 256 * 1024,
        "the control plane peaked at {} MiB after one 0.7 MiB export",
        peak / 1024
    );
    let id = "c7".repeat(16);
    let out = cp.cli(&["trace", &id, "-o", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let spans = out.json()[0]["spans"].as_array().unwrap().clone();
    assert_eq!(spans.len(), 2, "the repeated span id is dropped: {spans:?}");
    let tree = cp.cli(&["trace", &id]);
    assert_eq!(tree.code, 0, "{tree:?}");
    let recent = cp.cli(&["trace", "--recent", "3", "-o", "json"]);
    assert_eq!(recent.code, 0, "{recent:?}");
    let kept = recent.json()[1]["spans"][0]["attributes"]["padding"]
        .as_str()
        .map(str::len);
    assert_eq!(kept, Some(1024), "attribute values are cut at 1 KiB");
}

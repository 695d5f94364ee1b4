//! graylane-sidecar's control-plane stream with real processes: ready after the first
//! snapshot, its ACK in `graylane status`, the gate API following the release state,
//! a start from the cache while the control plane is down, and resync after restart;
//! each sidecar's namespace and service account in `graylane status`.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use graylane_tests::docs::{BLUE, LANE};
use graylane_tests::{ControlPlane, Sidecar, eventually, http_get, write_file};

fn sidecar_args<'a>(url: &'a str, cache: &'a str, instance: &'a str) -> Vec<&'a str> {
    vec![
        "--service",
        "orders",
        "--instance-id",
        instance,
        "--labels",
        "version=v2",
        "--advertise-addr",
        "127.0.0.1:15006",
        "--control-plane",
        url,
        "--cache-dir",
        cache,
    ]
}

/// Reads `/gates/self?watch=1` line by line.
struct GateWatch(BufReader<TcpStream>);

impl GateWatch {
    fn open(sidecar: &Sidecar) -> GateWatch {
        let mut stream = TcpStream::connect(sidecar.admin).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET /gates/self?watch=1 HTTP/1.1\r\nHost: admin\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while line != "\r\n" {
            line.clear();
            reader.read_line(&mut line).unwrap();
        }
        GateWatch(reader)
    }

    /// The next gate JSON line (chunked encoding: skip the chunk-size lines).
    fn next(&mut self) -> serde_json::Value {
        loop {
            let mut line = String::new();
            assert!(
                self.0.read_line(&mut line).unwrap() > 0,
                "gate stream ended"
            );
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim())
                && v.is_object()
            {
                return v;
            }
        }
    }
}

#[test]
fn sidecar_acks_snapshots_and_gates_follow_the_release_state() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    cp.cli(&[
        "rules",
        "apply",
        "-f",
        &write_file(dir.path(), "lane.yaml", LANE),
    ])
    .assert_ok();
    let url = cp.url();
    let cache = dir.path().join("cache-1").to_string_lossy().into_owned();
    let sidecar = Sidecar::start(
        dir.path(),
        "orders-1",
        &sidecar_args(&url, &cache, "orders-1"),
    );
    sidecar.wait_ready();
    let config = sidecar.config();
    assert_eq!(
        (config["revision"].as_u64(), config["source"].as_str()),
        (Some(1), Some("control-plane"))
    );

    let status = eventually(
        Duration::from_secs(10),
        "status to show the sidecar's ACK",
        || {
            let s = cp.cli(&["status", "-o", "json"]).json();
            let entry = s["sidecars"]
                .as_array()?
                .iter()
                .find(|x| x["instance"] == "orders-1")?
                .clone();
            (entry["ackedRevision"] == 1).then_some(entry)
        },
    );
    assert_eq!(status["lanes"], serde_json::json!(["gray"]));

    let (code, body) = http_get(sidecar.admin, "/gates/self");
    assert_eq!(code, 200);
    let gate: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        gate,
        serde_json::json!({"service": "orders", "instance": "orders-1", "lane": "gray", "release": "all", "active": true})
    );

    let mut watch = GateWatch::open(&sidecar);
    assert_eq!(watch.next()["active"], true);
    cp.cli(&["release", "set", "orders", "prod"]).assert_ok();
    let changed = watch.next();
    assert_eq!(
        (changed["release"].as_str(), changed["active"].as_bool()),
        (Some("prod"), Some(false)),
        "a lane instance stops background work under prod"
    );
    cp.cli(&["release", "set", "orders", "gray"]).assert_ok();
    assert_eq!(watch.next()["active"], true);

    let (code, metrics) = http_get(sidecar.admin, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("graylane_sidecar_rule_revision 3"),
        "{metrics}"
    );
}

#[test]
fn a_sidecar_starts_from_its_cache_while_the_control_plane_is_down_and_resyncs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::start(dir.path(), &[]);
    cp.cli(&[
        "rules",
        "apply",
        "-f",
        &write_file(dir.path(), "lane.yaml", LANE),
    ])
    .assert_ok();
    let url = cp.url();
    let grpc = cp.grpc.to_string();
    let cache = dir.path().join("cache").to_string_lossy().into_owned();
    let first = Sidecar::start(
        dir.path(),
        "orders-1",
        &sidecar_args(&url, &cache, "orders-1"),
    );
    first.wait_ready();
    // The ACK is sent once the snapshot is applied and cached.
    eventually(
        Duration::from_secs(10),
        "orders-1 to ack revision 1",
        || {
            let s = cp.cli(&["status", "-o", "json"]).json();
            s["sidecars"]
                .as_array()?
                .iter()
                .any(|x| x["instance"] == "orders-1" && x["ackedRevision"] == 1)
                .then_some(())
        },
    );
    drop(first);

    assert!(cp.proc.terminate(Duration::from_secs(20)).success());
    drop(cp);
    let cached = Sidecar::start(
        dir.path(),
        "orders-2",
        &sidecar_args(&url, &cache, "orders-2"),
    );
    cached.wait_ready();
    let config = cached.config();
    assert_eq!(
        (config["revision"].as_u64(), config["source"].as_str()),
        (Some(1), Some("cache"))
    );

    // The control plane comes back on the same address: the sidecar reconnects by
    // itself (jittered backoff) and follows new revisions.
    let cp = ControlPlane::start_on(dir.path(), &grpc, &[]);
    cp.cli(&[
        "rules",
        "apply",
        "-f",
        &write_file(dir.path(), "blue.yaml", BLUE),
    ])
    .assert_ok();
    eventually(
        Duration::from_secs(20),
        "the sidecar to resync to revision 2",
        || {
            let c = cached.config();
            (c["revision"] == 2 && c["source"] == "control-plane").then_some(())
        },
    );
}

#[test]
fn status_shows_each_sidecars_namespace_and_service_account() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let shop_cache = dir.path().join("cache-shop").to_string_lossy().into_owned();
    let mut shop_args = sidecar_args(&url, &shop_cache, "orders-shop");
    shop_args.extend(["--namespace", "shop", "--service-account", "orders-sa"]);
    let shop = Sidecar::start(dir.path(), "orders-shop", &shop_args);
    let plain_cache = dir
        .path()
        .join("cache-plain")
        .to_string_lossy()
        .into_owned();
    let plain = Sidecar::start(
        dir.path(),
        "orders-plain",
        &sidecar_args(&url, &plain_cache, "orders-plain"),
    );
    shop.wait_ready();
    plain.wait_ready();

    let identities = eventually(
        Duration::from_secs(10),
        "status to list both sidecars",
        || {
            let s = cp.cli(&["-o", "json", "status"]).json();
            let mut found: Vec<(String, String, String)> = s["sidecars"]
                .as_array()?
                .iter()
                .map(|x| {
                    let field = |k: &str| x[k].as_str().unwrap_or_default().to_string();
                    (
                        field("instance"),
                        field("namespace"),
                        field("serviceAccount"),
                    )
                })
                .collect();
            found.sort();
            (found.len() == 2).then_some(found)
        },
    );
    let owned = |i: &str, ns: &str, sa: &str| (i.to_string(), ns.to_string(), sa.to_string());
    assert_eq!(
        identities,
        vec![
            owned("orders-plain", "default", "orders"),
            owned("orders-shop", "shop", "orders-sa"),
        ],
        "the defaults: namespace `default`, the service's own account"
    );

    let table = cp.cli(&["status"]).assert_ok().stdout.clone();
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("NAMESPACE"), "{table}");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert!(
        rows.iter()
            .any(|r| r[..3] == ["shop", "orders", "orders-shop"]),
        "{table}"
    );
    assert!(
        rows.iter()
            .any(|r| r[..3] == ["default", "orders", "orders-plain"]),
        "{table}"
    );
}

/// `--service` and `--labels` are read with the rules' own name and label rules: an
/// instance no rule could ever select is refused at start, naming the flag.
#[test]
fn a_service_or_label_no_rule_could_name_is_refused_at_start() {
    for (flag, bad) in [
        ("--service", "Orders"),
        ("--service", "orders.shop"),
        ("--labels", "version=v 2"),
        ("--labels", "version=v2,zone=eu:west"),
        // Which value would decide the lane is a guess: refused.
        ("--labels", "version=v2,version=v1"),
    ] {
        let mut args = vec!["--service", "orders", "--labels", "version=v1"];
        let at = args.iter().position(|a| *a == flag).unwrap();
        args[at + 1] = bad;
        let out = std::process::Command::new(graylane_tests::bin("graylane-sidecar"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}: {stderr}");
        assert!(stderr.contains("invalid value"), "{bad}: {stderr}");
        assert!(stderr.contains(flag), "{bad}: {stderr}");
    }
}

/// Two sidecars started with one `--instance-id` (a copy-pasted manifest) replace each
/// other's registration on every reconnect, flipping routing between two apps: the
/// control plane says so in its log, naming the id and both addresses.
#[test]
fn two_sidecars_claiming_one_instance_id_are_named_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let args = [
        "--service",
        "orders",
        "--instance-id",
        "orders-dup",
        "--control-plane",
        &url,
    ];
    let first = Sidecar::start(dir.path(), "dup-1", &args);
    first.wait_ready();
    let second = Sidecar::start(dir.path(), "dup-2", &args);
    let line = eventually(Duration::from_secs(20), "the warning", || {
        cp.proc
            .log_text()
            .lines()
            .find(|l| l.contains("two sidecars claim one --instance-id"))
            .map(str::to_owned)
    });
    assert!(line.contains("orders-dup"), "{line}");
    drop((first, second));
}

/// Before the sidecar has any rules (the control plane not up yet, no cache), the
/// release state is unknown: the gate is closed, not `all`. A base instance under
/// `gray` told to run would consume messages on the version it must not.
#[test]
fn the_gate_is_closed_until_the_release_state_is_known() {
    let dir = tempfile::tempdir().unwrap();
    let grpc = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{grpc}");
    let cache = dir.path().join("cache").to_string_lossy().into_owned();
    let sidecar = Sidecar::start(
        dir.path(),
        "orders-1",
        &sidecar_args(&url, &cache, "orders-1"),
    );
    let (code, body) = http_get(sidecar.admin, "/gates/self");
    assert_eq!(code, 200, "{body}");
    let gate: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        gate,
        serde_json::json!({"service": "orders", "instance": "orders-1", "lane": null, "release": null, "active": false})
    );
    let mut watch = GateWatch::open(&sidecar);
    assert_eq!(watch.next()["active"], false, "the first line too");
    let cp = ControlPlane::start_on(dir.path(), &grpc.to_string(), &[]);
    cp.cli(&[
        "rules",
        "apply",
        "-f",
        &write_file(dir.path(), "lane.yaml", LANE),
    ])
    .assert_ok();
    let opened = watch.next();
    assert_eq!(
        (
            opened["lane"].as_str(),
            opened["release"].as_str(),
            opened["active"].as_bool()
        ),
        (Some("gray"), Some("all"), Some(true)),
        "{opened}"
    );
    // SIGTERM: the instance is going away, and its watchers are told to stop before
    // the stream ends.
    let mut sidecar = sidecar;
    sidecar.proc.terminate(Duration::from_secs(30));
    let last = watch.next();
    assert_eq!(last["active"], false, "{last}");
}

/// Injection makes instance ids `POD.NAMESPACE`: a 253-character pod name makes one
/// the control plane refuses, on every connect, and the pod would never be ready.
/// The sidecar keeps its start and ends it in a hash of the whole.
#[test]
fn an_instance_id_past_253_characters_is_shortened_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let cache = dir.path().join("cache").to_string_lossy().into_owned();
    let long = format!("{}.shop", "p".repeat(253));
    let sidecar = Sidecar::start(dir.path(), "long", &sidecar_args(&url, &cache, &long));
    sidecar.wait_ready();
    let status = cp.cli(&["status", "-o", "json"]).json();
    let id = status["sidecars"][0]["instance"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 253, "{id}");
    assert!(id.starts_with("ppppp"), "{id}");
}

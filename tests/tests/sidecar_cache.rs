//! graylane-sidecar's `--cache-dir` is checked before it is trusted. With the control
//! plane unreachable, a sidecar whose cache file is truncated, garbage, altered but
//! still parseable, or in the older headerless format, or whose rules file is missing
//! or altered, stays unready, counts the cache in
//! `graylane_sidecar_cache_rejected_total` and logs why once; good files written by a
//! real sidecar still get it ready, and the endpoint changes it appended to the log
//! after its snapshot file are routed by after it was killed.

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use graylane_tests::docs::LANE;
use graylane_tests::{ControlPlane, Sidecar, eventually, http_get, write_file};

const FILE: &str = "snapshot.json";
const REJECTED: &str = "graylane_sidecar_cache_rejected_total";

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
        "--otlp-endpoint",
        "none",
    ]
}

/// What a real sidecar writes for revision 1 (LANE), once it has ACKed it: the
/// snapshot file, and the one rules file it names (name, bytes).
fn written_cache(dir: &Path) -> (Vec<u8>, (String, Vec<u8>)) {
    let cp = ControlPlane::start(dir, &[]);
    cp.cli(&["rules", "apply", "-f", &write_file(dir, "lane.yaml", LANE)])
        .assert_ok();
    let url = cp.url();
    let cache = dir.join("written").to_string_lossy().into_owned();
    let sidecar = Sidecar::start(dir, "writer", &sidecar_args(&url, &cache, "writer"));
    // The ACK is sent once the snapshot is applied and cached.
    eventually(
        Duration::from_secs(20),
        "the writer to ack revision 1",
        || {
            let s = cp.cli(&["status", "-o", "json"]).json();
            s["sidecars"]
                .as_array()?
                .iter()
                .any(|x| x["instance"] == "writer" && x["ackedRevision"] == 1)
                .then_some(())
        },
    );
    drop(sidecar);
    let cache = Path::new(&cache);
    let rules: Vec<_> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("rules-"))
        .collect();
    let [rules] = rules.try_into().unwrap();
    let bytes = std::fs::read(cache.join(&rules)).unwrap();
    (std::fs::read(cache.join(FILE)).unwrap(), (rules, bytes))
}

/// A control-plane URL nothing listens on: a port bound from 0, then released, so
/// connects are refused at once (a listener that never accepts would hang the
/// handshake instead).
fn unreachable_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// A sidecar whose `--cache-dir` holds `bytes` as the snapshot file, and the rules
/// file given, its control plane unreachable.
fn start_on(dir: &Path, name: &str, bytes: &[u8], rules: Option<&(String, Vec<u8>)>) -> Sidecar {
    let cache = dir.join(name);
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join(FILE), bytes).unwrap();
    if let Some((file, text)) = rules {
        std::fs::write(cache.join(file), text).unwrap();
    }
    let url = unreachable_url();
    let cache = cache.to_string_lossy().into_owned();
    Sidecar::start(dir, name, &sidecar_args(&url, &cache, name))
}

/// The value of an unlabelled metric on `/metrics`.
fn metric(sidecar: &Sidecar, name: &str) -> Option<u64> {
    let (status, text) = http_get(sidecar.admin, "/metrics");
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_cache_that_fails_its_check_is_ignored_counted_and_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let (good, rules) = written_cache(dir.path());
    let newline = good.iter().position(|b| *b == b'\n').unwrap();
    let body = &good[newline + 1..];

    let truncated = good[..good.len() - 20].to_vec();
    let garbage = b"\x00\x01 not a cache \xff\n{\"revision\": 1}".to_vec();
    // Same length, still a valid snapshot: only the hash can tell.
    let altered =
        String::from_utf8(good.clone())
            .unwrap()
            .replacen("\"revision\":1,", "\"revision\":7,", 1);
    let altered_body = altered.split_once('\n').unwrap().1;
    let parsed: serde_json::Value = serde_json::from_str(altered_body).unwrap();
    assert_eq!(
        parsed["revision"], 7,
        "the edit must keep the body parseable"
    );
    // What sidecars wrote before the header existed: the bare JSON body.
    let old_format = body.to_vec();

    // The snapshot intact, its rules file changed by one byte, or not there.
    let mut altered_rules = rules.clone();
    let last = altered_rules.1.len() - 2;
    altered_rules.1[last] ^= 0x20;
    let rules_file = format!("its rules file {}", rules.0);

    let cases = [
        (
            "truncated",
            truncated,
            Some(&rules),
            "truncated or extended",
        ),
        ("garbage", garbage, Some(&rules), "no valid header line"),
        ("altered", altered.into_bytes(), Some(&rules), "altered"),
        (
            "old-format",
            old_format,
            Some(&rules),
            "written by an older sidecar",
        ),
        (
            "rules-altered",
            good.clone(),
            Some(&altered_rules),
            &*rules_file,
        ),
        ("rules-missing", good.clone(), None, &*rules_file),
    ];
    let sidecars: Vec<_> = cases
        .iter()
        .map(|(name, bytes, rules, _)| start_on(dir.path(), name, bytes, *rules))
        .collect();
    for ((name, _, _, reason), sidecar) in cases.iter().zip(&sidecars) {
        eventually(
            Duration::from_secs(20),
            &format!("{name}: the cache to be counted as rejected"),
            || (metric(sidecar, REJECTED)? == 1).then_some(()),
        );
        // Two more failed connects after the cache check: the loop went on without
        // reading, counting or logging the file again.
        eventually(
            Duration::from_secs(20),
            &format!("{name}: three failed connects"),
            || {
                let log = sidecar.proc.log_text();
                (log.matches("control plane stream failed").count() >= 3).then_some(())
            },
        );
        let (status, _) = http_get(sidecar.admin, "/ready");
        assert_eq!(status, 503, "{name}: must not become ready from the cache");
        assert_eq!(metric(sidecar, REJECTED), Some(1), "{name}: counted once");
        let log = sidecar.proc.log_text();
        let ignored: Vec<_> = log
            .lines()
            .filter(|l| l.contains("ignoring the snapshot cache"))
            .collect();
        assert_eq!(ignored.len(), 1, "{name}: logged once:\n{log}");
        assert!(ignored[0].contains(reason), "{name}: {}", ignored[0]);
    }
}

#[test]
fn a_good_cache_still_gets_a_sidecar_ready_without_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let (good, rules) = written_cache(dir.path());
    let sidecar = start_on(dir.path(), "good", &good, Some(&rules));
    sidecar.wait_ready();
    let config = sidecar.config();
    assert_eq!(
        (config["revision"].as_u64(), config["source"].as_str()),
        (Some(1), Some("cache"))
    );
    assert_eq!(metric(&sidecar, REJECTED), Some(0));
}

/// The `/config` endpoints of `sidecar`.
fn endpoints(sidecar: &Sidecar) -> serde_json::Value {
    sidecar.config()["endpoints"].clone()
}

#[test]
fn endpoint_changes_logged_after_the_snapshot_come_back_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cp = ControlPlane::start(dir, &[]);
    cp.cli(&["rules", "apply", "-f", &write_file(dir, "lane.yaml", LANE)])
        .assert_ok();
    let url = cp.url();
    let cache = dir.join("cache");
    let cache_arg = cache.to_string_lossy().into_owned();
    let writer = Sidecar::start(dir, "writer", &sidecar_args(&url, &cache_arg, "writer"));
    writer.wait_ready();
    // Two instances of another service join (deltas), then one leaves.
    let payments = |id: &str| {
        let args = [
            "--service",
            "payments",
            "--instance-id",
            id,
            "--advertise-addr",
            "127.0.0.1:15007",
            "--control-plane",
            &url,
            "--otlp-endpoint",
            "none",
        ];
        Sidecar::start(dir, id, &args)
    };
    let p1 = payments("payments-1");
    let p2 = payments("payments-2");
    eventually(Duration::from_secs(20), "both payments instances", || {
        (endpoints(&writer)["payments"] == serde_json::json!(["payments-1", "payments-2"]))
            .then_some(())
    });
    drop(p2);
    eventually(Duration::from_secs(20), "payments-2 gone", || {
        (endpoints(&writer)["payments"] == serde_json::json!(["payments-1"])).then_some(())
    });
    let routed = endpoints(&writer);
    // The leave is cached as a record of the log after the last snapshot file (the
    // joins may have come as a full set, which the control plane sends when it is
    // smaller than the delta, and which rewrites the snapshot file).
    eventually(
        Duration::from_secs(20),
        "the leave in the endpoint log",
        || {
            let logs: Vec<_> = std::fs::read_dir(&cache)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            let [log] = logs.try_into().ok()?;
            let text = std::fs::read_to_string(log).ok()?;
            text.contains(r#""removed":["payments-2"]"#).then_some(())
        },
    );

    // The writer dies (SIGKILL), the control plane too; a new sidecar on the same
    // cache routes by the snapshot and its log.
    drop(writer);
    drop(p1);
    drop(cp);
    let reader = Sidecar::start(
        dir,
        "reader",
        &sidecar_args(&unreachable_url(), &cache_arg, "reader"),
    );
    reader.wait_ready();
    let config = reader.config();
    assert_eq!(config["source"], "cache");
    assert_eq!(config["endpoints"], routed);
    assert_eq!(metric(&reader, REJECTED), Some(0));
    drop(reader);

    // What a disk, a crash or a hand edit leaves of the log.
    let (log_name, log) = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(p).unwrap())
        })
        .unwrap();
    let with_log = |name: &str, text: &str| {
        let copy = dir.join(name);
        std::fs::create_dir_all(&copy).unwrap();
        for file in std::fs::read_dir(&cache).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, copy.join(file.file_name().unwrap())).unwrap();
        }
        std::fs::write(copy.join(&log_name), text).unwrap();
        let url = unreachable_url();
        let copy = copy.to_string_lossy().into_owned();
        Sidecar::start(dir, name, &sidecar_args(&url, &copy, name))
    };
    // Cut inside its last record (a crash during the append): the state before it.
    let torn = with_log("log-torn", &log[..log.len() - 5]);
    torn.wait_ready();
    assert_eq!(torn.config()["source"], "cache");
    assert_eq!(metric(&torn, REJECTED), Some(0));
    assert!(
        torn.proc.log_text().contains("incomplete last record"),
        "{}",
        torn.proc.log_text()
    );
    // A record altered with another after it: damage, the cache is not used.
    let damaged = with_log(
        "log-damaged",
        &format!("{}{log}", log.replacen("payments-2", "payments-9", 1)),
    );
    eventually(Duration::from_secs(20), "the damaged log counted", || {
        (metric(&damaged, REJECTED)? == 1).then_some(())
    });
    assert_eq!(http_get(damaged.admin, "/ready").0, 503);
    let text = damaged.proc.log_text();
    let ignored: Vec<_> = text
        .lines()
        .filter(|l| l.contains("ignoring the snapshot cache"))
        .collect();
    assert_eq!(ignored.len(), 1, "{text}");
    assert!(
        ignored[0].contains(&format!("its endpoint log {log_name}")),
        "{}",
        ignored[0]
    );
}

/// A cache that is not a regular file (a FIFO, a link to `/dev/zero`) is refused like
/// any bad cache: opening the FIFO blocked the start, and with it every connection to
/// the control plane; reading `/dev/zero` grew without end.
#[test]
fn a_cache_that_is_no_regular_file_neither_blocks_nor_grows_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    std::fs::create_dir_all(&fifo).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(fifo.join(FILE))
        .status()
        .unwrap();
    assert!(made.success());
    let zero = dir.path().join("zero");
    std::fs::create_dir_all(&zero).unwrap();
    std::os::unix::fs::symlink("/dev/zero", zero.join(FILE)).unwrap();
    // The control plane is down when the sidecars start (so they read their cache
    // first), and comes up on the port they dial.
    let grpc = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{grpc}");
    let sidecars: Vec<Sidecar> = [fifo, zero]
        .into_iter()
        .map(|cache| {
            let name = cache.file_name().unwrap().to_string_lossy().into_owned();
            let cache = cache.to_string_lossy().into_owned();
            Sidecar::start(dir.path(), &name, &sidecar_args(&url, &cache, &name))
        })
        .collect();
    let _cp = ControlPlane::start_on(dir.path(), &grpc.to_string(), &[]);
    for sidecar in &sidecars {
        sidecar.wait_ready();
        assert_eq!(sidecar.config()["source"], "control-plane");
        assert_eq!(metric(sidecar, REJECTED), Some(1));
    }
}

/// A sidecar on `cache` run to its end (it is expected to refuse to start): its exit
/// status and standard error.
fn start_refused(url: &str, cache: &str, name: &str) -> (std::process::ExitStatus, String) {
    let out = std::process::Command::new(graylane_tests::bin("graylane-sidecar"))
        .args(sidecar_args(url, cache, name))
        .args([
            "--admin-addr",
            "127.0.0.1:0",
            "--outbound-addr",
            "127.0.0.1:0",
        ])
        .args(["--inbound-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two sidecars given one `--cache-dir` would start from each other's view after an
/// offline restart and remove each other's files: the second is refused at start.
#[test]
fn a_cache_dir_in_use_by_a_running_sidecar_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = unreachable_url();
    let cache = dir.path().join("shared").to_string_lossy().into_owned();
    let _first = Sidecar::start(dir.path(), "first", &sidecar_args(&url, &cache, "first"));
    let (out, stderr) = start_refused(&url, &cache, "second");
    assert!(!out.success(), "{stderr}");
    assert!(
        stderr.contains("--cache-dir") && stderr.contains("in use by another running sidecar"),
        "{stderr}"
    );
    // A FIFO where the lock goes would block the start (opening it waits for a
    // reader): refused at once instead.
    let fifo = dir.path().join("fifo-lock");
    std::fs::create_dir_all(&fifo).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(fifo.join(".lock"))
        .status()
        .unwrap();
    assert!(made.success());
    let fifo = fifo.to_string_lossy().into_owned();
    let (out, stderr) = start_refused(&url, &fifo, "third");
    assert!(
        !out.success() && stderr.contains("not a regular file"),
        "{stderr}"
    );
}

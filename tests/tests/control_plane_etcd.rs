//! Replicated control plane on a real etcd: replicas share rules and instances, a
//! replica or an etcd member can go away without the data path noticing, and etcd's
//! compaction or a whole etcd outage loses nothing.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use graylane_tests::etcd::Etcd;
use graylane_tests::{ControlPlane, DemoApp, Sidecar, cli, eventually, http_get, write_file};

/// A Lane named `name` (each file a distinct change).
fn lane(name: &str) -> String {
    format!(
        "apiVersion: graylane.io/v1\nkind: Lane\nmetadata:\n  name: {name}\nspec:\n  tag: {name}\n  selector: {{version: v2}}\n  fallback: [base]\n"
    )
}

fn replica(dir: &Path, etcd: &[&Etcd]) -> ControlPlane {
    let endpoints: Vec<String> = etcd.iter().map(|e| e.endpoint()).collect();
    ControlPlane::start_etcd(dir, &endpoints.join(","), "/graylane-test", &[])
}

/// An instance of `service` behind its own sidecar, subscribed to `control_planes`
/// (comma-separated URLs, tried in turn).
fn instance(dir: &Path, control_planes: &str, service: &str, id: &str) -> (DemoApp, Sidecar) {
    let app = DemoApp::start(dir, service, "v1", None);
    let sidecar = Sidecar::start(
        dir,
        id,
        &[
            "--service",
            service,
            "--instance-id",
            id,
            "--labels",
            "version=v1",
            "--app-addr",
            &app.addr.to_string(),
            "--control-plane",
            control_planes,
        ],
    );
    sidecar.wait_ready();
    (app, sidecar)
}

fn apply(cp: &ControlPlane, dir: &Path, name: &str) -> graylane_tests::CliOutput {
    let file = write_file(dir, &format!("{name}.yaml"), &lane(name));
    cp.cli(&["rules", "apply", "-f", &file])
}

fn revision_at(sidecar: &Sidecar) -> u64 {
    sidecar.config()["revision"].as_u64().unwrap()
}

/// One GET through `outbound` to service `orders`: the status (0: no answer).
fn get_orders(outbound: SocketAddr) -> u16 {
    let Ok(mut stream) = TcpStream::connect(outbound) else {
        return 0;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = "GET / HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// GETs through `outbound` until `done` says stop: (requests, failures with status).
fn load_until(outbound: SocketAddr, mut done: impl FnMut() -> bool) -> (u32, Vec<u16>) {
    let (mut sent, mut failed) = (0, Vec::new());
    while !done() {
        let status = get_orders(outbound);
        sent += 1;
        if status != 200 {
            failed.push(status);
        }
    }
    (sent, failed)
}

#[test]
fn an_apply_through_one_replica_reaches_the_other_replicas_sidecars_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let a = replica(dir.path(), &[&etcd]);
    let b = replica(dir.path(), &[&etcd]);
    let (_orders_app, orders) = instance(dir.path(), &b.url(), "orders", "orders-1");
    let (_front_app, front) = instance(dir.path(), &a.url(), "frontend", "frontend-1");

    // Instances are shared: frontend (on A) routes to orders (registered at B).
    front.wait_endpoints("orders", 1);
    assert_eq!(get_orders(front.outbound), 200);

    apply(&a, dir.path(), "gray").assert_ok();
    let applied = Instant::now();
    let revision = a.cli(&["rules", "get", "-o", "json"]).json()["revision"]
        .as_u64()
        .unwrap();
    eventually(
        Duration::from_secs(1),
        "the sidecar on replica B to hold the revision applied through A",
        || (revision_at(&orders) == revision).then_some(()),
    );
    eprintln!("apply on A → sidecar on B: {:?}", applied.elapsed());
    // And both replicas answer for the same rules.
    let via_b = b.cli(&["rules", "get", "-o", "json"]).json();
    assert_eq!(via_b["revision"].as_u64(), Some(revision));

    // Status and rollouts see every sidecar through any replica: `--wait` on B
    // returns once the sidecar on A acked too.
    let file = write_file(dir.path(), "blue.yaml", &lane("blue"));
    b.cli(&["rules", "apply", "-f", &file, "--wait", "--timeout", "10s"])
        .assert_ok();
    let revision = graylane_tests::docs::revision(&b);
    for cp in [&a, &b] {
        let status = cp.cli(&["status", "-o", "json"]).json();
        let sidecars = status["sidecars"].as_array().unwrap();
        let acked: Vec<(&str, u64)> = sidecars
            .iter()
            .map(|s| {
                (
                    s["instance"].as_str().unwrap(),
                    s["ackedRevision"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            acked,
            [("frontend-1", revision), ("orders-1", revision)],
            "{status}"
        );
    }
}

#[test]
fn concurrent_applies_through_two_replicas_have_one_winner_per_revision() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let replicas = [replica(dir.path(), &[&etcd]), replica(dir.path(), &[&etcd])];
    for round in 0..3 {
        let base = graylane_tests::docs::revision(&replicas[0]);
        let runs: Vec<_> = (0..20)
            .map(|i| {
                let url = replicas[i % 2].url();
                let file = write_file(
                    dir.path(),
                    &format!("r{round}-{i}.yaml"),
                    &lane(&format!("l{round}x{i}")),
                );
                let expect = base.to_string();
                std::thread::spawn(move || {
                    cli(&[
                        "--server",
                        &url,
                        "rules",
                        "apply",
                        "-f",
                        &file,
                        "--expect-revision",
                        &expect,
                    ])
                })
            })
            .collect();
        let outcomes: Vec<_> = runs.into_iter().map(|t| t.join().unwrap()).collect();
        let wins = outcomes.iter().filter(|o| o.code == 0).count();
        assert_eq!(wins, 1, "round {round}: {outcomes:#?}");
        for lost in outcomes.iter().filter(|o| o.code != 0) {
            assert_eq!(lost.code, 1, "a lost race is a refusal: {lost:?}");
            assert!(lost.stderr.contains("conflict"), "{lost:?}");
        }
        assert_eq!(graylane_tests::docs::revision(&replicas[1]), base + 1);
    }
    let history = replicas[1].cli(&["rules", "history", "-o", "json"]).json();
    let numbers: Vec<u64> = history
        .as_array()
        .or_else(|| history["items"].as_array())
        .unwrap_or_else(|| panic!("history: {history}"))
        .iter()
        .map(|h| h["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, vec![3, 2, 1], "no gaps, one entry per win");
}

#[test]
fn a_replica_killed_under_load_fails_no_request_and_its_instances_stay() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    // A short lease, so the test sees A's lease run out.
    let ttl = ["--lease-ttl", "2s"];
    let mut a = ControlPlane::start_etcd(dir.path(), &etcd.endpoint(), "/graylane-test", &ttl);
    let b = ControlPlane::start_etcd(dir.path(), &etcd.endpoint(), "/graylane-test", &ttl);
    // Both sidecars prefer A and fail over to B.
    let urls = format!("{},{}", a.url(), b.url());
    let (_orders_app, orders) = instance(dir.path(), &urls, "orders", "orders-1");
    let (_front_app, front) = instance(dir.path(), &urls, "frontend", "frontend-1");
    front.wait_endpoints("orders", 1);
    let key = "/graylane-test/instances/orders-1";
    let lease_a = eventually(Duration::from_secs(5), "orders-1 registered by A", || {
        etcd.lease_of(key)
    });

    // Load from before A dies until its lease has run out.
    let started = Instant::now();
    let (mut killed, mut expired) = (false, false);
    let (sent, failed) = load_until(front.outbound, || {
        if !killed && started.elapsed() > Duration::from_millis(500) {
            a.proc.kill();
            killed = true;
        }
        expired = expired || (killed && etcd.lease_expired(&lease_a));
        expired || started.elapsed() > Duration::from_secs(20)
    });
    assert!(expired, "A's lease did not expire within 20 s");
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {failed:?}",
        failed.len()
    );
    assert!(sent > 50, "only {sent} requests");
    // B re-registered orders under its own lease, so A's lease took nothing with it.
    let lease_b = etcd.lease_of(key).expect("orders-1 still registered");
    assert_ne!(lease_b, lease_a);
    assert_eq!(
        front.config()["endpoints"]["orders"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let status = b.cli(&["status", "-o", "json"]).json();
    assert_eq!(status["sidecars"].as_array().unwrap().len(), 2, "{status}");
    // Their certificates came from A: B shows the expiry A recorded in etcd.
    for sidecar in status["sidecars"].as_array().unwrap() {
        assert!(sidecar["certNotAfter"].as_i64().is_some(), "{sidecar}");
    }
    // A change still reaches both sidecars, through the surviving replica.
    apply(&b, dir.path(), "after").assert_ok();
    let revision = graylane_tests::docs::revision(&b);
    eventually(
        Duration::from_secs(5),
        "the change at both sidecars",
        || (revision_at(&orders) == revision && revision_at(&front) == revision).then_some(()),
    );
}

#[test]
fn an_etcd_outage_leaves_the_data_path_alone_and_refuses_writes_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path());
    let a = replica(dir.path(), &[&etcd]);
    let b = replica(dir.path(), &[&etcd]);
    let (_orders_app, orders) = instance(dir.path(), &a.url(), "orders", "orders-1");
    let (_front_app, front) = instance(dir.path(), &b.url(), "frontend", "frontend-1");
    front.wait_endpoints("orders", 1);
    apply(&a, dir.path(), "before").assert_ok();

    etcd.stop();
    let outage = Instant::now();
    let mut refused = None;
    let (sent, failed) = load_until(front.outbound, || {
        if refused.is_none() && outage.elapsed() > Duration::from_secs(2) {
            refused = Some(apply(&a, dir.path(), "during"));
        }
        outage.elapsed() > Duration::from_secs(10)
    });
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {failed:?}",
        failed.len()
    );
    let refused = refused.unwrap();
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(refused.stderr.contains("unavailable"), "{refused:?}");
    for cp in [&a, &b] {
        assert_eq!(http_get(cp.http, "/ready").0, 503, "not ready without etcd");
    }

    etcd.restart();
    etcd.wait_healthy();
    for cp in [&a, &b] {
        eventually(Duration::from_secs(15), "the replica ready again", || {
            (http_get(cp.http, "/ready").0 == 200).then_some(())
        });
    }
    // Nothing was queued behind the user's back: the refused change is not there.
    let names = graylane_tests::docs::names(&b.cli(&["rules", "get", "-o", "json"]).json());
    assert_eq!(names, ["Lane/before"]);
    apply(&b, dir.path(), "after").assert_ok();
    let revision = graylane_tests::docs::revision(&a);
    eventually(
        Duration::from_secs(5),
        "the change after the outage",
        || (revision_at(&orders) == revision && revision_at(&front) == revision).then_some(()),
    );
}

#[test]
fn a_replica_behind_a_compaction_recovers_and_its_sidecars_get_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let a = replica(dir.path(), &[&etcd]);
    let b = replica(dir.path(), &[&etcd]);
    let (_orders_app, orders) = instance(dir.path(), &a.url(), "orders", "orders-1");
    apply(&b, dir.path(), "first").assert_ok();
    let first = graylane_tests::docs::revision(&b);
    eventually(Duration::from_secs(5), "the first change", || {
        (revision_at(&orders) == first).then_some(())
    });

    // A is frozen while changes go on and etcd compacts them away.
    a.proc.signal(libc::SIGSTOP);
    for name in ["second", "third", "fourth"] {
        apply(&b, dir.path(), name).assert_ok();
    }
    etcd.compact(etcd.revision());
    a.proc.signal(libc::SIGCONT);
    apply(&b, dir.path(), "fifth").assert_ok();
    let last = graylane_tests::docs::revision(&b);
    eventually(
        Duration::from_secs(10),
        "the latest change at A's sidecar",
        || (revision_at(&orders) == last).then_some(()),
    );
}

#[test]
fn a_three_member_etcd_keeps_taking_applies_when_its_leader_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = Etcd::cluster(dir.path(), 3);
    let cp = replica(dir.path(), &members.iter().collect::<Vec<_>>());
    let (_orders_app, orders) = instance(dir.path(), &cp.url(), "orders", "orders-1");
    apply(&cp, dir.path(), "before").assert_ok();

    let leader = eventually(Duration::from_secs(10), "a leader", || {
        members.iter().position(Etcd::is_leader)
    });
    members[leader].stop();
    // The election takes a moment (election timeout 500 ms); then every apply works.
    eventually(
        Duration::from_secs(10),
        "an apply after the leader stopped",
        || (apply(&cp, dir.path(), "after-0").code == 0).then_some(()),
    );
    for i in 1..5 {
        apply(&cp, dir.path(), &format!("after-{i}")).assert_ok();
    }
    let revision = graylane_tests::docs::revision(&cp);
    eventually(
        Duration::from_secs(5),
        "the sidecar on the latest revision",
        || (revision_at(&orders) == revision).then_some(()),
    );
}

#[test]
fn a_replica_started_while_etcd_is_down_serves_nothing_stale_until_etcd_comes() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path());
    let first = replica(dir.path(), &[&etcd]);
    apply(&first, dir.path(), "before").assert_ok();
    drop(first);
    etcd.stop();

    let cp = ControlPlane::start_etcd_unready(dir.path(), &etcd.endpoint(), "/graylane-test", &[]);
    eventually(Duration::from_secs(10), "/ready to answer 503", || {
        (http_get(cp.http, "/ready").0 == 503).then_some(())
    });
    let refused = apply(&cp, dir.path(), "early");
    assert_eq!(refused.code, 3, "writes fail fast, not hang: {refused:?}");
    // A sidecar subscribing now is refused (an empty rule set would wipe the rules it
    // should route by, and a sidecar given several replicas moves on) ...
    let app = DemoApp::start(dir.path(), "orders", "v1", None);
    let sidecar = Sidecar::start(
        dir.path(),
        "orders-1",
        &[
            "--service",
            "orders",
            "--instance-id",
            "orders-1",
            "--app-addr",
            &app.addr.to_string(),
            "--control-plane",
            &cp.url(),
        ],
    );
    eventually(Duration::from_secs(10), "the sidecar to be refused", || {
        let log = sidecar.proc.log_text();
        log.contains("has not loaded the rules in force")
            .then_some(())
    });
    assert!(!sidecar.proc.log_text().contains("subscribed"));

    // ... until etcd is back: then the rules in force, revision 1.
    etcd.restart();
    cp.wait_ready();
    sidecar.wait_ready();
    assert_eq!(revision_at(&sidecar), 1);
    assert!(
        !sidecar.proc.log_text().contains("revision=0"),
        "the sidecar was never handed an empty rule set:\n{}",
        sidecar.proc.log_text()
    );
    apply(&cp, dir.path(), "later").assert_ok();
}

/// A replica cut off from etcd since it started (a partitioned node) answers, but can
/// serve nobody. Listed first, it must not capture a new pod's sidecar or the CLI:
/// both move on to the next URL, the one that is ready.
#[test]
fn a_replica_cut_off_from_etcd_passes_sidecars_and_the_cli_to_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let good = replica(dir.path(), &[&etcd]);
    apply(&good, dir.path(), "shared").assert_ok();
    // Its etcd endpoint is a port nothing listens on.
    let dead = graylane_tests::Refusing::bind();
    let dead_endpoint = dead.addr.to_string();
    let cut = ControlPlane::start_etcd_unready(dir.path(), &dead_endpoint, "/graylane-test", &[]);
    eventually(Duration::from_secs(10), "/ready to answer 503", || {
        (http_get(cut.http, "/ready").0 == 503).then_some(())
    });

    let both = format!("{},{}", cut.url(), good.url());
    let (_app, sidecar) = instance(dir.path(), &both, "orders", "orders-1");
    assert_eq!(
        revision_at(&sidecar),
        1,
        "the rules the ready replica holds"
    );
    let log = sidecar.proc.log_text();
    assert!(
        log.contains("has not loaded the rules in force"),
        "the first replica refused the stream, saying why:\n{log}"
    );

    let read = cli(&["--server", &both, "rules", "get", "-o", "json"]);
    read.assert_ok();
    assert!(read.stdout.contains("shared"), "{read:?}");
    let file = write_file(dir.path(), "second.yaml", &lane("second"));
    cli(&["--server", &both, "rules", "apply", "-f", &file]).assert_ok();
    eventually(Duration::from_secs(5), "the sidecar on revision 2", || {
        (revision_at(&sidecar) == 2).then_some(())
    });

    // Alone, the cut-off replica still answers, with its store's failure (exit 3),
    // and `version` says it is not ready, and why.
    let alone = cut.cli(&["rules", "get"]);
    assert_eq!(alone.code, 3, "{alone:?}");
    assert!(alone.stderr.contains("unavailable"), "{alone:?}");
    let version = cut.cli(&["version", "-o", "json"]).assert_ok().json();
    let why = version["serverNotReady"].as_str().unwrap_or_default();
    assert!(why.contains("unavailable"), "{version}");
    let version = good.cli(&["version", "-o", "json"]).assert_ok().json();
    assert!(version["serverNotReady"].is_null(), "{version}");
}

/// The names of the Lanes a sidecar routes by.
fn lanes_at(sidecar: &Sidecar) -> Vec<String> {
    let config = sidecar.config();
    let rules = config["rules"].as_array().cloned().unwrap_or_default();
    rules
        .iter()
        .filter(|r| r["kind"] == "Lane")
        .filter_map(|r| r["metadata"]["name"].as_str().map(String::from))
        .collect()
}

/// etcd restored from a backup goes back to the backup's revisions, and its next
/// apply uses a number again for other rules. Sidecars follow the store as it is: the
/// restored rules, then the new apply (before, they kept the lost rules until the
/// numbers passed the old ones, and `--wait` counted their old acks).
#[test]
fn after_etcd_is_restored_from_a_backup_sidecars_route_by_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path());
    let cp = replica(dir.path(), &[&etcd]);
    let (_app, sidecar) = instance(dir.path(), &cp.url(), "orders", "orders-1");
    apply(&cp, dir.path(), "a").assert_ok();
    let backup = dir.path().join("etcd-backup");
    etcd.stop();
    etcd.back_up(&backup);
    etcd.restart();
    etcd.wait_healthy();
    apply(&cp, dir.path(), "b").assert_ok();
    apply(&cp, dir.path(), "c").assert_ok();
    eventually(Duration::from_secs(10), "revision 3 at the sidecar", || {
        (revision_at(&sidecar) == 3).then_some(())
    });

    // A second sidecar, held still across the restore, keeps revision 3's rules.
    let (_held_app, held) = instance(dir.path(), &cp.url(), "payments", "payments-1");
    assert_eq!(revision_at(&held), 3);
    held.proc.signal(libc::SIGSTOP);

    etcd.stop();
    etcd.restore(&backup);
    etcd.restart();
    etcd.wait_healthy();
    eventually(
        Duration::from_secs(15),
        "the restored rules at the sidecar",
        || (revision_at(&sidecar) == 1 && lanes_at(&sidecar) == ["a"]).then_some(()),
    );
    assert!(
        cp.proc
            .log_text()
            .contains("the store's revision went back")
    );
    // Revision 2 again, with other rules: pushed, and waited for. The held sidecar's
    // ack of the old 3 does not count for it.
    let file = write_file(dir.path(), "d.yaml", &lane("d"));
    let waited = cp.cli(&["rules", "apply", "-f", &file, "--wait", "--timeout", "2s"]);
    assert_eq!(waited.code, 1, "timed out: {waited:?}");
    assert!(waited.stderr.contains("1/2 sidecars acked"), "{waited:?}");
    assert!(!waited.stderr.contains("2/2"), "{waited:?}");
    assert_eq!(lanes_at(&sidecar), ["a", "d"], "{waited:?}");
    held.proc.signal(libc::SIGCONT);
    eventually(
        Duration::from_secs(10),
        "the held sidecar on the new 2",
        || (revision_at(&held) == 2 && lanes_at(&held) == ["a", "d"]).then_some(()),
    );
}

/// A replica that hangs (SIGSTOP: its connections stay open, nothing answers) with
/// the default lease: its sidecars leave it and register through the other replica
/// before its lease expires, so no request fails for an instance that never stopped
/// (before: ~2.5 s of 502 "unknown service" while the sidecar's keep-alive, 15 s,
/// outlasted the 10 s lease).
#[test]
fn a_hung_replica_s_instances_stay_in_the_mesh_and_no_request_fails() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let a = replica(dir.path(), &[&etcd]);
    let b = replica(dir.path(), &[&etcd]);
    // orders prefers A, the caller B.
    let (_orders_app, _orders) = instance(
        dir.path(),
        &format!("{},{}", a.url(), b.url()),
        "orders",
        "orders-1",
    );
    let (_front_app, front) = instance(dir.path(), &b.url(), "frontend", "frontend-1");
    front.wait_endpoints("orders", 1);
    let key = "/graylane-test/instances/orders-1";
    let lease_a = eventually(Duration::from_secs(5), "orders-1 registered by A", || {
        etcd.lease_of(key)
    });

    a.proc.signal(libc::SIGSTOP);
    let started = Instant::now();
    let mut expired: Option<Instant> = None;
    // On for 2 s after the lease expired: long enough for its deletion to reach the
    // caller, had the instance gone with it.
    let (sent, failed) = load_until(front.outbound, || {
        if expired.is_none() && etcd.lease_expired(&lease_a) {
            expired = Some(Instant::now());
        }
        expired.is_some_and(|at| at.elapsed() > Duration::from_secs(2))
            || started.elapsed() > Duration::from_secs(30)
    });
    let took = started.elapsed();
    a.proc.signal(libc::SIGCONT);
    assert!(expired.is_some(), "A's lease did not expire within 30 s");
    assert!(
        failed.is_empty(),
        "{} of {sent} failed, the first: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(sent > 50, "only {sent} requests in {took:?}");
    let lease_b = etcd.lease_of(key).expect("orders-1 still registered");
    assert_ne!(lease_b, lease_a, "registered again, through B");
}

/// A TCP path to etcd the test can cut: every connection through it is shut, and new
/// ones are closed at once, as a network partition would leave a replica.
struct Cuttable {
    addr: SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Cuttable {
    /// Forwards to `to` (`host:port`). Its threads end with the test process.
    fn start(to: &str) -> Cuttable {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Cuttable {
            addr,
            open: Default::default(),
            live: Default::default(),
        };
        cut.open.store(true, Ordering::SeqCst);
        let (open, live, to) = (cut.open.clone(), cut.live.clone(), to.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(upstream) = TcpStream::connect(&to) else {
                    continue;
                };
                if !open.load(Ordering::SeqCst) {
                    continue;
                }
                let mut held = live.lock().unwrap();
                held.extend([client.try_clone().unwrap(), upstream.try_clone().unwrap()]);
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        cut
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for stream in self.live.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A replica that loaded its store, then lost etcd (a partition): it sends its
/// sidecars to reconnect, to the next replica, which writes their instances under
/// its own lease before the lost one runs out. Before: they left the mesh ~10 s after
/// the cut, and calls to them got 502 "unknown service" for as long as it lasted.
#[test]
fn a_replica_partitioned_from_etcd_sends_its_sidecars_to_another_and_no_request_fails() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let path = Cuttable::start(&etcd.endpoint());
    let cut_off =
        ControlPlane::start_etcd(dir.path(), &path.addr.to_string(), "/graylane-test", &[]);
    let healthy = replica(dir.path(), &[&etcd]);
    let (_orders_app, orders) = instance(
        dir.path(),
        &format!("{},{}", cut_off.url(), healthy.url()),
        "orders",
        "orders-1",
    );
    let (_front_app, front) = instance(dir.path(), &healthy.url(), "frontend", "frontend-1");
    front.wait_endpoints("orders", 1);
    let key = "/graylane-test/instances/orders-1";
    let lease = eventually(Duration::from_secs(5), "orders-1 registered", || {
        etcd.lease_of(key)
    });

    path.cut();
    let started = Instant::now();
    let mut expired: Option<Instant> = None;
    // On for 2 s after the cut-off replica's lease expired.
    let (sent, failed) = load_until(front.outbound, || {
        if expired.is_none() && etcd.lease_expired(&lease) {
            expired = Some(Instant::now());
        }
        expired.is_some_and(|at| at.elapsed() > Duration::from_secs(2))
            || started.elapsed() > Duration::from_secs(30)
    });
    assert!(
        expired.is_some(),
        "the lost lease did not expire within 30 s"
    );
    assert!(
        failed.is_empty(),
        "{} of {sent} failed, the first: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_ne!(
        etcd.lease_of(key),
        Some(lease),
        "registered again elsewhere"
    );
    let log = orders.proc.log_text();
    assert!(log.contains("this replica lost its lease in etcd"), "{log}");
    let moved = format!("subscribed control_plane={}", healthy.url());
    assert!(log.contains(&moved), "{log}");
}

//! The `graylane` CLI's own behaviour against a real graylane-control: `--wait`'s
//! deadline, flag parsing (durations, `--server` forms, `-o` where it means nothing,
//! `--recent 0`), what a wrong port or a missing token says, and `graylane version`.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use graylane_tests::docs::LANE;
use graylane_tests::{ControlPlane, Sidecar, Subscriber, cli, eventually, write_file};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_wait_past_its_timeout_is_exit_1_even_when_every_sidecar_acks() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let mut sidecar = Subscriber::connect(&url, "orders", "orders-1", &[], None)
        .await
        .unwrap();
    let first = sidecar.next().await;
    sidecar.ack(first.version).await;
    let lane = write_file(dir.path(), "lane.yaml", LANE);

    // A control plane that stalls (GC pause, slow store) until the timeout has passed,
    // then commits and gets its ACK at once: the command took longer than --timeout,
    // so it timed out, whoever wins the race between the ACK and the timer.
    cp.proc.signal(libc::SIGSTOP);
    let started = Instant::now();
    let child = Command::new(graylane_tests::bin("graylane"))
        .args(["--server", &url, "rules", "apply", "-f", &lane])
        .args(["--wait", "--timeout", "1s"])
        .env_remove("GRAYLANE_TOKEN_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(10), "the timeout to pass", || {
        (started.elapsed() > Duration::from_millis(1200)).then_some(())
    });
    cp.proc.signal(libc::SIGCONT);
    let snapshot = sidecar.until_revision(1).await;
    sidecar.ack(snapshot.version).await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a timeout is exit 1: {stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
}

#[test]
fn durations_are_go_style() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let lane = write_file(dir.path(), "lane.yaml", LANE);
    for timeout in ["1m30s", "1.5s", "200ms", "1h"] {
        let out = cp.cli(&[
            "rules",
            "apply",
            "-f",
            &lane,
            "--wait",
            "--timeout",
            timeout,
        ]);
        out.assert_ok();
    }
    for bad in ["5x", "1.5", "-1s", "1.0005s"] {
        let flag = format!("--timeout={bad}");
        let out = cp.cli(&["rules", "apply", "-f", &lane, "--wait", &flag]);
        assert_eq!(out.code, 2, "{bad}: {out:?}");
        assert!(out.stderr.contains("not a duration"), "{out:?}");
    }
}

#[test]
fn trace_recent_0_is_a_usage_error() {
    let out = cli(&["trace", "--recent", "0"]);
    assert_eq!(out.code, 2, "{out:?}");
}

/// A resource name no resource can have is a typo (exit 2, the naming rule quoted),
/// not "not found" (exit 1): `rules delete Lane/` from a script whose variable was
/// empty must not read as "already gone". No server is reached.
#[test]
fn a_resource_name_that_cannot_exist_is_a_usage_error() {
    for name in ["Lane/", "Lane/Gray", "RoutePolicy/a b"] {
        let out = cli(&["--server", "http://127.0.0.1:1", "rules", "delete", name]);
        assert_eq!(out.code, 2, "{name}: {out:?}");
        assert!(
            out.stderr.contains("is not a valid name"),
            "{name}: {out:?}"
        );
    }
}

#[test]
fn server_without_a_scheme_is_http() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let grpc = cp.grpc.to_string();
    let out = cli(&["--server", &grpc, "rules", "get", "-o", "json"]);
    assert_eq!(out.assert_ok().json()["revision"], 0);
    // In a list too, after a server that is down.
    let list = format!("127.0.0.1:1,{grpc}");
    cli(&["--server", &list, "status"]).assert_ok();
}

#[test]
fn a_port_that_is_not_the_grpc_port_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let sidecar = Sidecar::start(
        dir.path(),
        "orders-1",
        &["--service", "orders", "--control-plane", &cp.url()],
    );
    for addr in [cp.http, sidecar.admin, sidecar.inbound, sidecar.outbound] {
        let out = cli(&["--server", &addr.to_string(), "rules", "get"]);
        assert_eq!(out.code, 3, "{addr}: {out:?}");
        assert!(
            out.stderr
                .contains("this is not graylane-control's gRPC port"),
            "{addr}: {out:?}"
        );
        assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    }
}

#[test]
fn a_missing_token_says_where_one_comes_from() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_file(
        dir.path(),
        "tokens",
        "admin:0123456789abcdef0123\nsidecar:fedcba9876543210fedc\n",
    );
    let cp = ControlPlane::start(dir.path(), &["--token-file", &tokens]);
    for args in [&["rules", "get"][..], &["status"], &["release", "get"]] {
        let out = cp.cli(args);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(
            out.stderr.contains("--token-file") && out.stderr.contains("GRAYLANE_TOKEN_FILE"),
            "{out:?}"
        );
    }
    let admin = write_file(dir.path(), "admin", "0123456789abcdef0123\n");
    cp.cli(&["--token-file", &admin, "rules", "get"])
        .assert_ok();
}

#[test]
fn output_format_is_refused_where_it_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lane = write_file(dir.path(), "lane.yaml", LANE);
    let deployment = write_file(dir.path(), "deploy.yaml", "kind: Deployment\n");
    for args in [
        &["rules", "validate", "-f", &lane][..],
        &["inject", "-f", &deployment],
        &["install"],
    ] {
        let out = cli(&[args, &["-o", "json"]].concat());
        assert_eq!(out.code, 2, "{out:?}");
        assert!(out.stderr.contains("-o"), "{out:?}");
    }
    cli(&["rules", "validate", "-f", &lane]).assert_ok();
}

#[test]
fn version_shows_the_client_and_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let both = cp.cli(&["version", "-o", "json"]).assert_ok().json();
    let client = both["client"].as_str().unwrap();
    assert!(!client.is_empty());
    assert_eq!(both["server"], client, "{both}");
    let table = cp.cli(&["version"]).assert_ok().stdout.clone();
    assert!(table.contains("graylane-control"), "{table}");

    let alone = cli(&["--server", "http://127.0.0.1:1", "version", "-o", "json"]);
    let alone = alone.assert_ok().json();
    assert_eq!(alone["client"], client);
    assert!(alone["server"].is_null(), "{alone}");
    assert!(alone["serverError"].is_string(), "{alone}");
}

#[test]
fn output_into_a_closed_pipe_ends_the_cli_quietly_not_with_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    // `graylane rules history | true`: the reader is gone before anything is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(graylane_tests::bin("graylane"))
        .args(["--server", &cp.url(), "rules", "history"])
        .env("GRAYLANE_CONFIG", "/nonexistent/graylane-tests/config.yaml")
        .env("RUST_BACKTRACE", "0")
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{:?}", out.status);
}

/// `-f` reads no more than one apply can send: a wrong path such as `/dev/zero` (or a
/// log file of gigabytes) is a usage error once past 64 MiB, not a CLI filling the
/// memory; a file that is not UTF-8 says so. No server is needed to refuse either.
#[test]
fn an_input_larger_than_an_apply_or_not_text_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(&["rules", "validate", "-f", "/dev/zero"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("/dev/zero: over 64 MiB"), "{out:?}");
    let binary = dir.path().join("rules.yaml");
    std::fs::write(&binary, b"kind: Lane\n\xff\xfe\n").unwrap();
    let binary = binary.to_string_lossy().into_owned();
    let out = cli(&["rules", "validate", "-f", &binary]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("cannot read {binary}: not UTF-8")),
        "{out:?}"
    );
}

/// `rules validate` checks the files as the whole rule set (no server): a rollout
/// file alone names a lane it does not hold. The refusal says so and where such a
/// file is checked instead; `apply --dry-run` checks it against the rules in force.
#[test]
fn validate_says_it_checks_a_whole_set_and_dry_run_checks_a_part() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let rollout = write_file(
        dir.path(),
        "rollout.yaml",
        "apiVersion: graylane.io/v1\nkind: LaneRollout\nmetadata: {name: r}\nspec:\n  lane: gray\n  entry: edge\n  hashBy: {header: x-user-id}\n  steps: [{percent: 5, hold: 1m}]\n  analysis: {interval: 10s}\n",
    );
    let out = cli(&["rules", "validate", "-f", &rollout]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("Lane \"gray\" is not declared"),
        "{out:?}"
    );
    assert!(out.stderr.contains("apply --dry-run"), "{out:?}");
    let base = write_file(
        dir.path(),
        "base.yaml",
        &format!(
            "{LANE}---\napiVersion: graylane.io/v1\nkind: TagPolicy\nmetadata: {{name: edge}}\nspec: {{services: [frontend]}}\n"
        ),
    );
    cp.cli(&["rules", "apply", "-f", &base]).assert_ok();
    let dry = cp.cli(&["rules", "apply", "--dry-run", "-f", &rollout]);
    assert!(dry.assert_ok().stdout.contains("LaneRollout/r"), "{dry:?}");
}

/// rules.md: "All errors of a file are reported, not only the first." A document that
/// fails alone (an unknown field) used to hide what the file's valid documents break
/// as a set (two RoutePolicies for one service) and against the rules in force (a
/// Lane tag already used): three runs to see three errors. Every path now reports
/// them in one run; nothing is written.
#[test]
fn every_error_of_a_file_is_reported_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let stored = write_file(dir.path(), "stored.yaml", LANE);
    cp.cli(&["rules", "apply", "-f", &stored]).assert_ok();
    let policy = |name: &str, spec: &str| {
        format!(
            "apiVersion: graylane.io/v1\nkind: RoutePolicy\nmetadata: {{name: {name}}}\nspec: {spec}\n"
        )
    };
    let file = write_file(
        dir.path(),
        "bad.yaml",
        &[
            policy("a", "{service: inventory}"),
            policy("b", "{service: inventory}"),
            "apiVersion: graylane.io/v1\nkind: Lane\nmetadata: {name: blue}\nspec: {tag: gray, selector: {version: v3}}\n".into(),
            policy("c", "{service: stock, tmieout: 2s}"),
        ]
        .join("---\n"),
    );
    let duplicate = "document 2 (RoutePolicy/b): spec.service: service \"inventory\" already has RoutePolicy \"a\"";
    let unknown = "document 4 (RoutePolicy/c): spec.tmieout: unknown field";
    // Named on whichever of the two comes first by name, the other in parentheses.
    let tag_taken = "spec.tag: tag \"gray\" is already used by Lane";

    // Offline: the files as the whole set (the stored Lane is not known).
    let validate = cli(&["rules", "validate", "-f", &file]);
    assert_eq!(validate.code, 1, "{validate:?}");
    for error in [duplicate, unknown] {
        assert!(validate.stderr.contains(error), "{error}: {validate:?}");
    }
    // Against the rules in force: all three, from apply and from diff.
    for args in [&["rules", "apply", "-f"][..], &["rules", "diff", "-f"]] {
        let out = cp.cli(&[args, &[file.as_str()]].concat());
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        for error in [duplicate, unknown, tag_taken] {
            assert!(out.stderr.contains(error), "{args:?} {error}: {out:?}");
        }
    }
    assert_eq!(graylane_tests::docs::revision(&cp), 1, "nothing written");
    // No server to ask: what the files show alone, still refused (exit 1, not 3).
    let offline = cli(&["--server", "127.0.0.1:1", "rules", "apply", "-f", &file]);
    assert_eq!(offline.code, 1, "{offline:?}");
    assert!(offline.stderr.contains(unknown), "{offline:?}");
}

/// A `--server` whose scheme is neither http nor https (a mistyped `htps://`) is a
/// usage error: it was used as plaintext gRPC, sending the token in the clear.
#[test]
fn a_server_url_with_another_scheme_is_refused_before_any_token_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let port = cp.grpc.port();
    for url in [
        format!("htps://127.0.0.1:{port}"),
        format!("ftp://127.0.0.1:{port}"),
    ] {
        let out = cli(&["--server", &url, "rules", "get"]);
        assert_eq!(out.code, 2, "{url}: {out:?}");
        assert!(
            out.stderr.contains("is neither http nor https"),
            "{url}: {out:?}"
        );
    }
    // The scheme's case does not matter.
    cli(&[
        "--server",
        &format!("HTTP://127.0.0.1:{port}"),
        "rules",
        "get",
    ])
    .assert_ok();
    // Nor does the sidecar send its token over such a URL: it refuses to start.
    let out = Command::new(graylane_tests::bin("graylane-sidecar"))
        .args(["--service", "web", "--control-plane"])
        .arg(format!("htps://127.0.0.1:{port}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("is neither http nor https"), "{stderr}");
    // A bad URL after a good one is refused too, before the good one is dialled; and
    // `inject` writes no such URL (or an empty image) into pods, where every sidecar
    // would refuse to start.
    let out = cli(&[
        "--server",
        &format!("http://127.0.0.1:{port},htps://127.0.0.1:{port}"),
        "rules",
        "get",
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    let pod = write_file(
        dir.path(),
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {app: a}}\nspec: {containers: [{name: a, image: a}]}\n",
    );
    for (flag, value, says) in [
        (
            "--control-plane",
            "htps://cp:15010",
            "is neither http nor https",
        ),
        ("--image", " ", "--image: empty"),
    ] {
        let out = cli(&["inject", flag, value, "-f", &pod]);
        assert_eq!(out.code, 2, "{flag} {value:?}: {out:?}");
        assert!(out.stderr.contains(says), "{flag} {value:?}: {out:?}");
    }
}

/// An empty render of a CI template (no file content, only comments) given to
/// `apply --prune` would delete every rule: refused, and nothing is written.
#[test]
fn apply_prune_with_no_resources_is_refused_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let stored = write_file(dir.path(), "stored.yaml", LANE);
    cp.cli(&["rules", "apply", "-f", &stored]).assert_ok();
    let empty = write_file(dir.path(), "empty.yaml", "");
    let comments = write_file(dir.path(), "comments.yaml", "# rendered nothing\n---\n");
    for file in [&empty, &comments] {
        for args in [
            &["rules", "apply", "--prune", "-f"][..],
            &["rules", "diff", "--prune", "-f"],
        ] {
            let out = cp.cli(&[args, &[file.as_str()]].concat());
            assert_eq!(out.code, 1, "{args:?} {file}: {out:?}");
            assert!(
                out.stderr.contains("the files hold no resources"),
                "{out:?}"
            );
        }
    }
    assert_eq!(graylane_tests::docs::revision(&cp), 1);
    let names = graylane_tests::docs::names(&cp.cli(&["rules", "get", "-o", "json"]).json());
    assert_eq!(names, ["Lane/gray"]);
    // Without --prune an empty apply changes nothing, and says so.
    let out = cp.cli(&["rules", "apply", "-f", &empty]);
    assert!(
        out.assert_ok().stdout.contains("nothing changed"),
        "{out:?}"
    );
}

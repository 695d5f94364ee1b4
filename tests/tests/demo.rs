//! `graylane demo --once`: the whole mesh starts, the walkthrough shows each request's
//! hops, and its temp dir (data and logs) is removed afterwards.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

#[test]
fn the_demo_walks_a_gray_release_and_cleans_up() {
    let out = Command::new(graylane_tests::bin("graylane"))
        .args(["demo", "--once"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let after = |label: &str| {
        lines
            .iter()
            .position(|l| l.contains(label))
            .map(|i| lines[i + 1])
            .unwrap_or_else(|| panic!("no {label:?} in {stdout}"))
    };
    assert!(after("untagged request").contains("[untagged]"), "{stdout}");
    assert!(
        after("stripped at the edge").ends_with("payments v1 [untagged]"),
        "a client cannot pick its lane: {stdout}"
    );
    let tester =
        "frontend v1 [gray] → orders v2 [gray] → payments v1 [gray, no v2: fell back to base]";
    assert_eq!(after("tester (x-user-group: testers)").trim(), tester);
    assert_eq!(after("forward only traceparent").trim(), tester);
    // The last request's trace tree, from the spans the sidecars exported.
    let tree = stdout
        .split("as the sidecars traced it")
        .nth(1)
        .unwrap_or_else(|| panic!("no trace tree: {stdout}"));
    for hop in [
        "frontend v1 [gray from rule] 200",
        "└─ → orders: orders-v2, lane gray 200",
        "orders v2 [gray from header] 200",
        "→ payments: payments-v1, lane gray, fallback (no ready instance in lane gray, served by base) 200",
        "payments v1 [gray from header] 200",
    ] {
        assert!(tree.contains(hop), "{hop:?} in {tree}");
    }
    let dir = stdout
        .split("logs in ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim();
    assert!(
        !std::path::Path::new(dir).exists(),
        "the demo removes its temp dir"
    );
}

/// The processes whose parent is `pid` (from /proc), alive ones only.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) && fields[0] != "Z"
        })
        .collect()
}

/// Alive: exists and is not a zombie waiting for its reaper.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
        .unwrap_or(false)
}

#[test]
fn stopping_the_demo_by_any_signal_stops_its_whole_mesh() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let mut demo = Command::new(graylane_tests::bin("graylane"))
            .arg("demo")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = demo.id();
        // Read until the demo says it is up (bounded by its own start-up timeouts).
        let stdout = demo.stdout.take().unwrap();
        let (mut up, mut console) = (false, None);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix("console: http://") {
                console = url
                    .trim_end_matches('/')
                    .parse::<std::net::SocketAddr>()
                    .ok();
            }
            if line.contains("Ctrl-C stops the demo") {
                up = true;
                break;
            }
        }
        assert!(up, "the demo did not come up");
        // The console URL it printed serves the console of the running mesh.
        let console = console.expect("the demo prints `console: http://ADDR/`");
        let (status, page) = graylane_tests::http_get(console, "/");
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("graylane"), "{page}");
        let mesh = children(pid);
        assert!(
            mesh.len() >= 8,
            "control plane, 4 sidecars, 4 apps: {mesh:?}"
        );
        // The demo alone, not its process group.
        #[allow(unsafe_code)]
        // SAFETY: kill(2) on the pid of our own child with a valid signal.
        unsafe {
            libc::kill(i32::try_from(pid).unwrap(), signal);
        }
        let _ = demo.wait();
        graylane_tests::eventually(
            std::time::Duration::from_secs(15),
            &format!("every child of the demo to exit after signal {signal}"),
            || mesh.iter().all(|p| !alive(*p)).then_some(()),
        );
    }
}

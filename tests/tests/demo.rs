//! `graylane demo --once`: the whole mesh starts, the walkthrough shows each request's
//! hops, and its temp dir (data and logs) is removed afterwards.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Act two (two rollouts of ~10 s each at its 2 s holds) must end within this of its
/// first line; generous for a debug build on a loaded machine.
const ACT_TWO_BOUND: Duration = Duration::from_secs(120);
/// Act one: a whole mesh started and walked through.
const ACT_ONE_BOUND: Duration = Duration::from_secs(120);

/// Runs `graylane demo --once` and returns its output, waiting for act two's last line
/// at most `ACT_TWO_BOUND` after its first (a bound on the wait, not a timed check).
fn demo_once() -> String {
    use std::io::BufRead;
    let mut demo = Command::new(graylane_tests::bin("graylane"))
        .args(["demo", "--once"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let wait = |until: &str, bound: Duration, lines: &mut Vec<String>| {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains(until);
                    lines.push(line);
                    if done {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    };
    let act_one = wait("Act two:", ACT_ONE_BOUND, &mut lines);
    let act_two = act_one && wait("act two done in", ACT_TWO_BOUND, &mut lines);
    if !act_two {
        let _ = demo.kill();
    }
    let status = demo.wait().unwrap();
    lines.extend(rx.iter());
    reader.join().unwrap();
    let stdout = lines.join("\n");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut demo.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        act_one,
        "act two did not begin within {ACT_ONE_BOUND:?}: {stdout}\n{stderr}"
    );
    assert!(
        act_two,
        "act two did not end within {ACT_TWO_BOUND:?}: {stdout}\n{stderr}"
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    stdout
}

#[test]
fn the_demo_walks_a_gray_release_and_cleans_up() {
    let stdout = demo_once();
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
    act_two_rolls_out_and_back(&stdout);
}

/// Act two's printed story: a rollout that steps through 10/50/100% on passing
/// verdicts and succeeds, then a bad build's rollout that fails, rolls itself back
/// with its reason, and leaves no user in the lane while testers keep it.
fn act_two_rolls_out_and_back(stdout: &str) {
    let act = stdout
        .split("Act two:")
        .nth(1)
        .unwrap_or_else(|| panic!("no act two: {stdout}"));
    let position = |text: &str| {
        act.find(text)
            .unwrap_or_else(|| panic!("{text:?} not in act two: {act}"))
    };
    // In this order: each decision printed as it happened, verdicts between them.
    let steps = [
        "rollout gray-demo: started: step 1, 10%",
        "rollout gray-demo: step 1, 10% — verdict pass (",
        "rollout gray-demo: step 2: 50%",
        "rollout gray-demo: step 2, 50% — verdict pass (",
        "rollout gray-demo: step 3: 100%",
        "rollout gray-demo: step 3, 100% — verdict pass (",
        "rollout gray-demo: succeeded (every step passed): release-all",
        "orders v2 redeployed (--status 500)",
        "rollout gray-demo-2: started: step 1, 10%",
        "rollout gray-demo-2: step 1, 10% — verdict fail (error rate ",
        "rollout gray-demo-2: rolled back: 2 failing intervals in a row: error rate ",
        "after the rollback every user asked again: 0 of 200 in the lane, 0 answered by orders v2",
    ];
    let at: Vec<usize> = steps.iter().map(|s| position(s)).collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "act two out of order: {act}"
    );
    assert!(
        !act.contains("rollout gray-demo: rolled back"),
        "the good build is never rolled back: {act}"
    );
    // At 100% every user with an x-user-id is in the lane, as the demo's traffic saw.
    let full = act
        .lines()
        .find(|l| l.starts_with("rollout gray-demo: step 3, 100% — verdict"))
        .unwrap();
    assert!(full.ends_with("users (100.0%)"), "{full}");
    let tester = act
        .lines()
        .find(|l| l.starts_with("tester (x-user-group: testers)"))
        .unwrap_or_else(|| panic!("no tester line: {act}"));
    assert!(
        tester.contains("frontend [gray] → orders v2 answered 500"),
        "testers keep the lane after the rollback: {tester}"
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

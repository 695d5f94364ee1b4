//! `graylane demo`: a whole mesh on loopback, and a gray release walked through.
//!
//! ```text
//! client ─► frontend v1 ─► orders v1 | orders v2 ─► payments v1      (each app behind
//!           (TagPolicy: testers → gray)   (Lane gray = version v2)     its own sidecar)
//! ```
//! Everything binds port 0 on 127.0.0.1; data and logs go to a temp directory. Act two
//! ([`rollout`]) releases the gray lane progressively, with a good build and a bad one.

#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use graylane_proto::v1 as pb;
use serde_json::Value;

use super::CliError;
use super::client::Connect;

mod procs;
mod rollout;

use self::procs::{Proc, get};

/// The sample rules the demo applies (also the README's walkthrough).
const RULES: &str = include_str!("../../../deploy/rules/gray-release.yaml");

/// (service, version, downstream it calls)
const INSTANCES: [(&str, &str, Option<&str>); 4] = [
    ("frontend", "v1", Some("orders")),
    ("orders", "v1", Some("payments")),
    ("orders", "v2", Some("payments")),
    ("payments", "v1", None),
];

/// (what the request shows, its headers)
const REQUESTS: [(&str, &[(&str, &str)]); 4] = [
    ("untagged request", &[]),
    (
        "client sends Gray-Publish: gray (stripped at the edge)",
        &[("Gray-Publish", "gray")],
    ),
    (
        "tester (x-user-group: testers)",
        &[("x-user-group", "testers")],
    ),
    (
        "tester, apps forward only traceparent",
        &[
            ("x-user-group", "testers"),
            ("x-demo-forward", "traceparent"),
        ],
    ),
];

/// Runs the demo; with `once`, stops after the walkthrough instead of waiting for Ctrl-C.
pub(crate) async fn run(once: bool) -> Result<(), CliError> {
    let dir = tempfile_dir()?;
    let mut control = Proc::start(
        &dir,
        "graylane-control",
        "graylane-control",
        &[
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--store",
            &format!("file:{}", dir.join("data").display()),
        ],
        false,
    )?;
    let grpc = control.address("grpc_addr=")?;
    let http = control.address("http_addr=")?;
    let url = format!("http://{grpc}");
    println!(
        "graylane demo: control plane on {url}, logs in {}",
        dir.display()
    );
    apply_rules(&url, "gray-release.yaml", RULES).await?;

    let mut procs = vec![control];
    let mut instances = Vec::new();
    for (service, version, call) in INSTANCES {
        instances.push(start_instance(&dir, &url, service, version, call)?);
    }
    let instance = |id: &str| instances.iter().position(|i| i.id == id);
    let frontend = instance("frontend-v1").ok_or_else(|| CliError::unavailable("no frontend"))?;
    let orders_v2 = instance("orders-v2").ok_or_else(|| CliError::unavailable("no orders v2"))?;
    let (entry, frontend_admin) = (instances[frontend].inbound, instances[frontend].admin);
    wait_for(
        Duration::from_secs(20),
        "the frontend sidecar to see every instance",
        || {
            let (_, _, body) = get(frontend_admin, "/config", &[]).ok()?;
            let config: Value = serde_json::from_str(&body).ok()?;
            let count = |s: &str| config["endpoints"][s].as_array().map_or(0, Vec::len);
            (count("orders") == 2 && count("payments") == 1).then_some(())
        },
    )?;

    println!(
        "\nrules: Lane gray (version=v2, fallback base), orders 90/10 v1/v2, TagPolicy edge (testers → gray)\n"
    );
    for (n, (what, headers)) in REQUESTS.iter().enumerate() {
        let mut all = vec![("Graylane-Debug", "1")];
        all.extend_from_slice(headers);
        let traceparent = format!(
            "00-{:032x}-00f067aa0ba902b7-01",
            0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4700_u128 + n as u128
        );
        all.push(("traceparent", &traceparent));
        let (status, head, body) = get(entry, "/", &all)?;
        println!(
            "{}. {what}: HTTP {status}\n   {}",
            n + 1,
            trail(&head, &body)
        );
    }
    // The last request as the sidecars traced it (they export spans to the control
    // plane in batches, at least once a second).
    let last = format!(
        "{:032x}",
        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4700_u128 + (REQUESTS.len() - 1) as u128
    );
    let connect = Connect {
        servers: url.clone(),
        token_file: None,
        ca_bundle: None,
        namespace: None,
        context_namespace: None,
    };
    let mut client = connect.client().await?;
    let mut traced = None;
    for _ in 0..50 {
        if let Ok(t) = client
            .get_trace(pb::GetTraceRequest {
                trace_id: last.clone(),
            })
            .await
        {
            let t = t.into_inner();
            if t.spans.len() >= 5 {
                traced = Some(t);
                break;
            }
        }
        // Polling for the batch to arrive, bounded at 5 s.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(t) = traced {
        println!(
            "\nrequest {} as the sidecars traced it (graylane trace {last}):\n{}",
            REQUESTS.len(),
            super::trace::tree(&t)
        );
    }
    println!("console: http://{http}/");
    rollout::act_two(&dir, &url, http, entry, &mut instances[orders_v2]).await?;
    println!(
        "Try it: curl -i -H 'Graylane-Debug: 1' -H 'x-user-group: testers' http://{entry}/\n      \
         graylane --server {url} status    |    graylane --server {url} release set orders prod\n      \
         graylane --server {url} trace --recent 3    |    graylane --server {url} gaps\n      \
         graylane --server {url} explain --service orders --header Gray-Publish=gray\n      \
         graylane --server {url} rollout status gray-demo-2"
    );
    procs.extend(instances.into_iter().flat_map(|i| [i.app, i.sidecar]));
    if once {
        drop(procs);
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    // Listening before saying so: a signal sent the moment the line appears must
    // still stop the demo the orderly way.
    let stop = stopped();
    println!("Ctrl-C stops the demo.");
    stop.await;
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Completes on Ctrl-C, SIGTERM or SIGHUP (the terminal closed): the demo stops and
/// takes its children with it. The handlers are in place when this returns.
fn stopped() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind| signal(kind).ok();
    let (mut int, mut term, mut hup) = (
        listen(SignalKind::interrupt()),
        listen(SignalKind::terminate()),
        listen(SignalKind::hangup()),
    );
    async move {
        tokio::select! {
            () = recv(int.as_mut()) => {}
            () = recv(term.as_mut()) => {}
            () = recv(hup.as_mut()) => {}
        }
    }
}

/// The next signal on `handler`; never, without one.
async fn recv(handler: Option<&mut tokio::signal::unix::Signal>) {
    match handler {
        Some(h) => {
            h.recv().await;
        }
        None => std::future::pending().await,
    }
}

fn tempfile_dir() -> Result<std::path::PathBuf, CliError> {
    let dir = std::env::temp_dir().join(format!("graylane-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::unavailable(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

/// Applies one file of rules (merged into the rules in force).
async fn apply_rules(url: &str, name: &str, content: &str) -> Result<(), CliError> {
    let connect = Connect {
        servers: url.to_string(),
        token_file: None,
        ca_bundle: None,
        namespace: None,
        context_namespace: None,
    };
    let files = vec![pb::SourceFile {
        name: name.into(),
        content: content.into(),
    }];
    connect
        .client()
        .await?
        .apply(pb::ApplyRequest {
            files,
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// A demo app and its sidecar, and their addresses.
struct Instance {
    /// `service-version`, also the sidecar's instance id.
    id: String,
    app: Proc,
    /// Builds of the app started so far, the first included (each logs to its own file).
    builds: u32,
    sidecar: Proc,
    /// The app's listener: a new build of the app starts on it again.
    app_addr: SocketAddr,
    /// The sidecar's admin, inbound and outbound listeners.
    admin: SocketAddr,
    inbound: SocketAddr,
    outbound: SocketAddr,
}

fn start_instance(
    dir: &Path,
    url: &str,
    service: &str,
    version: &str,
    call: Option<&str>,
) -> Result<Instance, CliError> {
    let id = format!("{service}-{version}");
    let mut app_args = vec!["--service", service, "--version", version];
    if let Some(call) = call {
        app_args.extend(["--call", call, "--outbound", "-"]);
    }
    let mut app = Proc::start(
        dir,
        &format!("app-{id}"),
        "graylane-demo-app",
        &app_args,
        true,
    )?;
    let app_addr = app.address("addr=")?;
    let labels = format!("version={version}");
    let mut sidecar = Proc::start(
        dir,
        &format!("sidecar-{id}"),
        "graylane-sidecar",
        &[
            "--service",
            service,
            "--instance-id",
            &id,
            "--labels",
            &labels,
            "--app-addr",
            &app_addr.to_string(),
            "--control-plane",
            url,
            "--admin-addr",
            "127.0.0.1:0",
            "--outbound-addr",
            "127.0.0.1:0",
            "--inbound-addr",
            "127.0.0.1:0",
        ],
        false,
    )?;
    let admin = sidecar.address("admin_addr=")?;
    let outbound = sidecar.address("outbound_addr=")?;
    let inbound = sidecar.address("inbound_addr=")?;
    if call.is_some() {
        app.tell(&outbound.to_string())?;
    }
    wait_for(
        Duration::from_secs(20),
        &format!("sidecar {id} to be ready"),
        || (get(admin, "/ready", &[]).ok()?.0 == 200).then_some(()),
    )?;
    Ok(Instance {
        id,
        app,
        builds: 1,
        sidecar,
        app_addr,
        admin,
        inbound,
        outbound,
    })
}

/// "frontend v1 [gray] → orders v2 [gray] → payments v1 [gray, fell back to base]"
fn trail(head: &str, body: &str) -> String {
    let entries: Vec<&str> = head
        .lines()
        .find_map(|l| l.strip_prefix("graylane-route: "))
        .map(|t| t.split(", ").collect())
        .unwrap_or_default();
    let mut hops = Vec::new();
    let mut v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let mut i = 0;
    while v.get("service").is_some() {
        let tag = v["tag"].as_str().unwrap_or("untagged");
        let fallback = entries.get(i).is_some_and(|e| e.contains(";fallback=true"));
        let note = if fallback {
            format!("{tag}, no v2: fell back to base")
        } else {
            tag.to_string()
        };
        hops.push(format!(
            "{} {} [{note}]",
            v["service"].as_str().unwrap_or("?"),
            v["version"].as_str().unwrap_or("?")
        ));
        v = v["downstream"].clone();
        i += 1;
    }
    if let Some(error) = v.get("error") {
        hops.push(format!("error: {error}"));
    }
    hops.join(" → ")
}

fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, CliError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(CliError::unavailable(format!(
                "timed out waiting for {what}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! Workload certificates renewed under steady mTLS traffic (security.md
//! "Certificates": renewed at half their lifetime "without dropping connections or
//! failing requests").

#![allow(clippy::unwrap_used)]

#[path = "mtls/support.rs"]
mod support;

use std::time::Duration;

use graylane_tests::{ControlPlane, Sidecar, eventually};

use self::support::*;

fn serial(sidecar: &Sidecar) -> String {
    sidecar.config()["identity"]["serial"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn certificates_renewed_under_steady_mtls_load_fail_no_request() {
    let dir = tempfile::tempdir().unwrap();
    // 1m, the shortest lifetime: renewed at ~30 s.
    let cp = ControlPlane::start(dir.path(), &["--cert-ttl", "1m"]);
    let a = node(dir.path(), &cp, "a", "v1", Some("b"), &[]);
    let b = node(dir.path(), &cp, "b", "v1", None, &[]);
    a.sidecar.wait_endpoints("b", 1);
    // The test client is outside the mesh: a's inbound takes it in plaintext; every
    // call from a to b is mTLS.
    let rules = format!(
        "{}---\n{}",
        peer_policy("edge", "off", Some("a")),
        peer_policy("b", "strict", Some("b"))
    );
    apply(&cp, dir.path(), &rules, &[&a.sidecar, &b.sidecar]);
    let (a0, b0) = (identity(&a.sidecar), identity(&b.sidecar));
    let (a_serial, b_serial) = (serial(&a.sidecar), serial(&b.sidecar));

    let load = Load::start(a.sidecar.inbound);
    load.served_more(20);
    eventually(Duration::from_secs(60), "both certificates renewed", || {
        (serial(&a.sidecar) != a_serial && serial(&b.sidecar) != b_serial).then_some(())
    });
    load.served_more(20);
    load.finish("both sidecars' certificate renewals");
    // Same identities, new certificates.
    assert_eq!(
        (identity(&a.sidecar), identity(&b.sidecar)),
        (a0, b0.clone())
    );

    // A caller that connects only now handshakes with b's renewed certificate.
    let c = node(dir.path(), &cp, "c", "v1", Some("b"), &[]);
    c.sidecar.wait_endpoints("b", 1);
    let (status, head, body) = get(c.sidecar.inbound, "c", &[("graylane-debug", "1")]);
    assert_eq!(status, 200, "{head}{body}");
    assert!(head.contains(&format!("peer={b0}")), "{head}");
}

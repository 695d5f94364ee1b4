//! Mesh mTLS calls between sidecars go through the caller's connection pool, keyed by
//! address and the identity the callee must prove: back-to-back calls share one TLS
//! connection instead of a handshake each.

#![allow(clippy::unwrap_used)]

#[path = "mtls/support.rs"]
mod support;

use self::support::*;
use graylane_tests::ControlPlane;

const HANDSHAKE_REFUSED: &str = "graylane_inbound_refused_total{reason=\"handshake\"}";
const INBOUND_ACCEPTED: &str = "graylane_connections_accepted_total{listener=\"inbound\"}";

#[test]
fn back_to_back_mtls_calls_reuse_one_connection_to_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let a = node(dir.path(), &cp, "a", "v1", Some("b"), &[]);
    let b = node(dir.path(), &cp, "b", "v1", None, &[]);
    a.sidecar.wait_endpoints("b", 1);
    // The test client is outside the mesh: a's inbound takes it in plaintext; a → b
    // can only be mTLS.
    let rules = format!(
        "{}---\n{}",
        peer_policy("edge", "off", Some("a")),
        peer_policy("b", "strict", Some("b"))
    );
    apply(&cp, dir.path(), &rules, &[&a.sidecar, &b.sidecar]);
    let b_id = identity(&b.sidecar);
    // The first call opens the connection.
    let (status, head, body) = get(a.sidecar.inbound, "a", &[("graylane-debug", "1")]);
    assert_eq!(status, 200, "{head}{body}");
    assert!(head.contains(&format!("peer={b_id}")), "over mTLS: {head}");
    let before = metric(&b.sidecar, INBOUND_ACCEPTED);
    assert!(before >= 1, "b counts a's connection: {before}");
    let handshakes_refused = metric(&b.sidecar, HANDSHAKE_REFUSED);
    for _ in 0..20 {
        let (status, head, body) = get(a.sidecar.inbound, "a", &[("graylane-debug", "1")]);
        assert_eq!(status, 200, "{head}{body}");
        assert!(head.contains(&format!("peer={b_id}")), "{head}");
    }
    // Without the pool every call would be a new connection (20); one spare for a
    // connection the pool had not taken back yet when the next call came.
    let opened = metric(&b.sidecar, INBOUND_ACCEPTED) - before;
    assert!(
        opened <= 1,
        "20 mTLS calls opened {opened} connections at b"
    );
    assert_eq!(metric(&b.sidecar, HANDSHAKE_REFUSED), handshakes_refused);
}

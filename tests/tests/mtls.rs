//! Mesh mTLS between sidecars (security.md "mTLS between sidecars", "The tag across
//! the trust boundary"): real control plane, sidecars and demo apps, PeerPolicy applied
//! with the CLI; hostile clients (plaintext, TLS without a certificate, a certificate
//! from another CA) dialled straight at an inbound listener, and the wire looked at
//! with `openssl s_client`.

#![allow(clippy::unwrap_used)]

#[path = "mtls/support.rs"]
mod support;

use std::time::Duration;

use graylane_tests::{ControlPlane, eventually};
use serde_json::Value;

use self::support::*;

#[test]
fn strict_refuses_plaintext_no_certificate_and_another_ca_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let a = node(dir.path(), &cp, "a", "v1", Some("b"), &[]);
    let b = node(dir.path(), &cp, "b", "v1", None, &[]);
    a.sidecar.wait_endpoints("b", 1);
    let policy = peer_policy("b-strict", "strict", Some("b"));
    apply(&cp, dir.path(), &policy, &[&a.sidecar, &b.sidecar]);
    let sni = mesh_sni(&identity(&b.sidecar));

    // A mesh peer gets through: a's sidecar calls b over mTLS.
    let (status, head, body) = get(a.sidecar.inbound, "a", &[("graylane-debug", "1")]);
    assert_eq!(status, 200, "{head}\n{body}");
    assert_eq!(hops(&body), [hop("a", "v1", None), hop("b", "v1", None)]);
    let b_id = identity(&b.sidecar);
    assert!(
        head.to_lowercase().contains(&format!("peer={b_id}")),
        "the hop to b names b's proved identity: {head}"
    );

    // Plaintext HTTP straight at b's inbound: closed without an answer.
    let (status, head, _) = get(b.sidecar.inbound, "b", &[]);
    assert_eq!(
        status, 0,
        "plaintext must be refused in strict mode: {head}"
    );
    eventually(Duration::from_secs(5), "plaintext counted", || {
        (metric(&b.sidecar, &format!("{REFUSED}{{reason=\"plaintext\"}}")) >= 1).then_some(())
    });

    // TLS with the mesh SNI but no client certificate: TLS 1.3 and the offered ALPN
    // on the wire, then refused (certificate required), never an HTTP answer.
    let out = s_client(
        dir.path(),
        b.sidecar.inbound,
        &["-servername", &sni, "-tls1_3", "-alpn", "h2"],
    );
    assert!(out.contains("TLSv1.3"), "{out}");
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    assert!(!out.contains("HTTP/1.1 200"), "{out}");
    eventually(Duration::from_secs(5), "no certificate counted", || {
        (metric(
            &b.sidecar,
            &format!("{REFUSED}{{reason=\"no_certificate\"}}"),
        ) >= 1)
            .then_some(())
    });

    // TLS 1.2 is not offered at all.
    let out = s_client(
        dir.path(),
        b.sidecar.inbound,
        &["-servername", &sni, "-tls1_2"],
    );
    assert!(!out.contains("HTTP/1.1"), "{out}");
    assert!(out.contains("alert protocol version"), "{out}");

    // A certificate claiming a mesh identity, from another CA: handshake refused.
    let a_id = identity(&a.sidecar);
    foreign_client_certificate(dir.path(), &a_id);
    let handshakes = metric(&b.sidecar, &format!("{REFUSED}{{reason=\"handshake\"}}"));
    let out = s_client(
        dir.path(),
        b.sidecar.inbound,
        &[
            "-servername",
            &sni,
            "-tls1_3",
            "-alpn",
            "http/1.1",
            "-cert",
            "other-client.pem",
            "-key",
            "other-client.key",
        ],
    );
    assert!(!out.contains("HTTP/1.1 200"), "{out}");
    eventually(Duration::from_secs(5), "another CA counted", || {
        (metric(&b.sidecar, &format!("{REFUSED}{{reason=\"handshake\"}}")) > handshakes)
            .then_some(())
    });

    // An app's own TLS (another SNI) cannot pass a strict listener either.
    let out = s_client(
        dir.path(),
        b.sidecar.inbound,
        &["-servername", "b.example.com", "-tls1_3"],
    );
    assert!(!out.contains("HTTP/1.1"), "{out}");
    eventually(Duration::from_secs(5), "not mesh counted", || {
        (metric(&b.sidecar, &format!("{REFUSED}{{reason=\"not_mesh\"}}")) >= 1).then_some(())
    });

    // Still serving the mesh after all that.
    let (status, _, body) = get(a.sidecar.inbound, "a", &[]);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn permissive_serves_both_and_keeps_only_a_proved_peers_tag() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let a = node(dir.path(), &cp, "a", "v1", Some("b"), &[]);
    let b = node(dir.path(), &cp, "b", "v1", Some("c"), &[]);
    let _c1 = node(dir.path(), &cp, "c", "v1", None, &[]);
    let _c2 = node(dir.path(), &cp, "c", "v2", None, &[]);
    a.sidecar.wait_endpoints("b", 1);
    b.sidecar.wait_endpoints("c", 2);
    // No PeerPolicy: permissive. The edge `a` takes its caller's tag (a TagPolicy
    // that keeps it), since the test client proves no identity.
    let edge = "---\napiVersion: graylane.io/v1\nkind: TagPolicy\nmetadata: {name: edge}\nspec:\n  services: [a]\n  incoming: keep\n";
    apply(
        &cp,
        dir.path(),
        &format!("{LANE}{edge}"),
        &[&a.sidecar, &b.sidecar],
    );

    // Through a's sidecar: a → b over mTLS, the tag kept at b, so c's gray instance.
    let (status, head, body) = get(
        a.sidecar.inbound,
        "a",
        &[("gray-publish", "gray"), ("graylane-debug", "1")],
    );
    assert_eq!(status, 200, "{head}\n{body}");
    assert_eq!(
        hops(&body),
        [
            hop("a", "v1", Some("gray")),
            hop("b", "v1", Some("gray")),
            hop("c", "v2", Some("gray")),
        ]
    );
    assert!(head.contains("peer=spiffe://"), "{head}");

    // The same tag forged straight at b's inbound in plaintext: served (permissive),
    // but without the tag, so c's base instance answers.
    let before = metric(&b.sidecar, "graylane_untrusted_tag_total");
    for forged in [("gray-publish", "gray"), ("baggage", "gray-publish=gray")] {
        let (status, head, body) = get(b.sidecar.inbound, "b", &[forged]);
        assert_eq!(status, 200, "{head}\n{body}");
        assert_eq!(
            hops(&body),
            [hop("b", "v1", None), hop("c", "v1", None)],
            "forged {forged:?}"
        );
    }
    assert_eq!(
        metric(&b.sidecar, "graylane_untrusted_tag_total"),
        before + 2
    );
    // The plaintext edge request kept its tag: a's TagPolicy says so.
    assert!(metric(&a.sidecar, "graylane_untrusted_tag_total") == 0);
}

#[test]
fn a_three_hop_chain_keeps_the_gray_lane_over_strict_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let a = node(dir.path(), &cp, "a", "v1", Some("b"), &[]);
    let b1 = node(dir.path(), &cp, "b", "v1", Some("c"), &[]);
    let b2 = node(dir.path(), &cp, "b", "v2", Some("c"), &[]);
    let c1 = node(dir.path(), &cp, "c", "v1", None, &[]);
    let c2 = node(dir.path(), &cp, "c", "v2", None, &[]);
    a.sidecar.wait_endpoints("b", 2);
    b1.sidecar.wait_endpoints("c", 2);
    b2.sidecar.wait_endpoints("c", 2);
    // Strict everywhere but the edge, which the test client reaches in the clear.
    let rules = format!(
        "{LANE}---\n{}---\n{}",
        peer_policy("mesh", "strict", None),
        peer_policy("edge", "off", Some("a"))
    );
    let all = [
        &a.sidecar,
        &b1.sidecar,
        &b2.sidecar,
        &c1.sidecar,
        &c2.sidecar,
    ];
    apply(&cp, dir.path(), &rules, &all);
    for _ in 0..4 {
        let (status, head, body) = get(
            a.sidecar.inbound,
            "a",
            &[("gray-publish", "gray"), ("graylane-debug", "1")],
        );
        assert_eq!(status, 200, "{head}\n{body}");
        assert_eq!(
            hops(&body),
            [
                hop("a", "v1", Some("gray")),
                hop("b", "v2", Some("gray")),
                hop("c", "v2", Some("gray")),
            ]
        );
        // Both mesh hops were made over mTLS, to the identity each instance proved.
        let route = head.to_lowercase();
        assert!(
            route.contains(&format!("peer={}", identity(&b2.sidecar))),
            "{head}"
        );
        assert!(
            route.contains(&format!("peer={}", identity(&c2.sidecar))),
            "{head}"
        );
    }
    let (status, _, body) = get(a.sidecar.inbound, "a", &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(hops(&body)[2].1, "v1", "untagged goes to base: {body}");
    // No plaintext reached a strict listener.
    for s in &all[1..] {
        assert_eq!(metric(s, &format!("{REFUSED}{{reason=\"plaintext\"}}")), 0);
    }
}

#[test]
fn an_instance_proving_another_identity_than_registered_is_a_502_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let a = node(dir.path(), &cp, "a", "v1", Some("b"), &[]);
    let c = node(dir.path(), &cp, "c", "v1", None, &[]);
    // b registers (and is certified) as service account `b`, but advertises c's
    // inbound listener: whoever answers there proves `c`, not the identity registered
    // for the instance a's sidecar chose.
    let advertise = c.sidecar.inbound.to_string();
    let _b = node(
        dir.path(),
        &cp,
        "b",
        "v1",
        None,
        &["--advertise-addr", &advertise],
    );
    a.sidecar.wait_endpoints("b", 1);
    let (status, head, body) = get(a.sidecar.inbound, "a", &[]);
    assert_eq!(status, 200, "a answers, relaying b's failure: {head}");
    let downstream: Value = serde_json::from_str(&body).unwrap();
    let failure = downstream["downstream"].to_string();
    assert!(failure.contains("502"), "{body}");
    assert!(
        failure.contains("expecting spiffe://cluster.local/ns/default/sa/b"),
        "{body}"
    );
    assert!(failure.contains("b-v1"), "the instance is named: {body}");
    assert!(failure.contains("mTLS"), "{body}");
}

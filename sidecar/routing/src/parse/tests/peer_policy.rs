use super::{accepts, doc, rejects, rejects_all};
use crate::{MtlsMode, PeerPolicy, Resource};

fn policy(spec: &str) -> PeerPolicy {
    let r = accepts(&doc("PeerPolicy", "default", spec));
    let Resource::PeerPolicy(p) = &r[0] else {
        panic!("{r:#?}")
    };
    p.clone()
}

#[test]
fn the_spec_example_parses() {
    let p = policy("  mtls: strict\n  services: [orders]\n");
    assert_eq!(p.spec.mtls, MtlsMode::Strict);
    let services: Vec<&str> = p
        .spec
        .services
        .iter()
        .flatten()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(services, ["orders"]);
}

#[test]
fn omitted_services_means_the_whole_mesh() {
    let p = policy("  mtls: permissive\n");
    assert_eq!(p.spec.mtls, MtlsMode::Permissive);
    assert_eq!(p.spec.services, None);
}

#[test]
fn off_is_read_as_the_mode_bare_or_quoted() {
    // YAML 1.2: a bare `off` is a string, not the boolean false of YAML 1.1.
    for text in ["off", "\"off\"", "'off'"] {
        assert_eq!(
            policy(&format!("  mtls: {text}\n")).spec.mtls,
            MtlsMode::Off
        );
    }
}

#[test]
fn off_is_written_so_that_yaml_1_1_readers_see_a_string_too() {
    let p = policy("  mtls: off\n");
    let yaml = Resource::PeerPolicy(p.clone()).to_yaml();
    assert!(
        yaml.contains("mtls: \"off\"") || yaml.contains("mtls: 'off'"),
        "{yaml}"
    );
    let back = accepts(&yaml);
    assert_eq!(back, vec![Resource::PeerPolicy(p)]);
}

#[test]
fn booleans_are_not_modes() {
    rejects(
        &doc("PeerPolicy", "default", "  mtls: false\n"),
        "spec.mtls",
        "expected one of: strict, permissive, off",
    );
}

#[test]
fn unknown_mode_is_rejected() {
    rejects(
        &doc("PeerPolicy", "default", "  mtls: STRICT\n"),
        "spec.mtls",
        "expected one of: strict, permissive, off",
    );
}

#[test]
fn missing_mode_is_rejected() {
    rejects(
        &doc("PeerPolicy", "default", "  services: [orders]\n"),
        "spec.mtls",
        "missing required field",
    );
}

#[test]
fn empty_services_is_rejected() {
    let e = rejects(
        &doc("PeerPolicy", "default", "  mtls: strict\n  services: []\n"),
        "spec.services",
        "at least one service; omit it to cover the whole mesh",
    );
    assert_eq!(
        e.to_string(),
        "rules.yaml: document 1 (PeerPolicy/default): spec.services: \
         services must list at least one service; omit it to cover the whole mesh"
    );
}

#[test]
fn a_service_listed_twice_in_one_policy_is_rejected() {
    rejects(
        &doc(
            "PeerPolicy",
            "default",
            "  mtls: off\n  services: [a, b, a]\n",
        ),
        "spec.services[2]",
        "service \"a\" is listed twice",
    );
}

#[test]
fn invalid_service_name_is_rejected() {
    rejects(
        &doc(
            "PeerPolicy",
            "default",
            "  mtls: off\n  services: [Orders_1]\n",
        ),
        "spec.services[0]",
        "not a valid service name",
    );
}

#[test]
fn unknown_fields_are_rejected_at_every_depth_all_reported() {
    let text = "apiVersion: graylane.io/v1\nkind: PeerPolicy\nmetadata:\n  name: default\n  \
                nmespace: shop\nspec:\n  mtls: strict\n  mTLS: off\n  services: [{name: a}]\n";
    rejects_all(
        text,
        &[
            ("metadata.nmespace", "unknown field"),
            ("spec.mTLS", "unknown field"),
            ("spec.services[0]", "expected a string"),
        ],
    );
}

use clap::Parser;

use super::*;

fn plan(args: &[&str]) -> Vec<String> {
    let a = InitArgs::parse_from([&["init-iptables"][..], args].concat());
    a.interception
        .chains()
        .into_iter()
        .map(|(c, r)| format!("{c} {}", r.join(" ")))
        .collect()
}

#[test]
fn default_rules_exempt_the_proxy_loopback_and_the_admin_port() {
    assert_eq!(
        plan(&[]),
        [
            "GRAYLANE_INBOUND -m addrtype ! --dst-type LOCAL -j RETURN",
            "GRAYLANE_INBOUND -p tcp --dport 15000 -j RETURN",
            "GRAYLANE_INBOUND -p tcp --dport 15006 -j RETURN",
            "GRAYLANE_INBOUND -p tcp -j REDIRECT --to-ports 15006",
            "GRAYLANE_OUTBOUND -m owner --uid-owner 1337 -j RETURN",
            "GRAYLANE_OUTBOUND -d 127.0.0.0/8 -j RETURN",
            "GRAYLANE_OUTBOUND -p tcp -j REDIRECT --to-ports 15001",
        ]
    );
}

#[test]
fn exclusions_come_before_the_redirect() {
    let rules = plan(&[
        "--exclude-outbound-cidrs",
        "10.96.0.1/32,192.168.0.0/16",
        "--exclude-outbound-ports",
        "5432",
        "--inbound",
        "false",
        "--proxy-uid",
        "2000",
    ]);
    assert_eq!(
        rules,
        [
            "GRAYLANE_OUTBOUND -m owner --uid-owner 2000 -j RETURN",
            "GRAYLANE_OUTBOUND -d 127.0.0.0/8 -j RETURN",
            "GRAYLANE_OUTBOUND -d 10.96.0.1/32 -j RETURN",
            "GRAYLANE_OUTBOUND -d 192.168.0.0/16 -j RETURN",
            "GRAYLANE_OUTBOUND -p tcp --dport 5432 -j RETURN",
            "GRAYLANE_OUTBOUND -p tcp -j REDIRECT --to-ports 15001",
        ]
    );
}

#[test]
fn a_bad_cidr_is_a_clear_error() {
    let e = InitArgs::try_parse_from(["init-iptables", "--exclude-outbound-cidrs", "10.0.0.0/33"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--exclude-outbound-cidrs"), "{e}");
}

/// What one run feeds `iptables-restore` (IPv4) and `ip6tables-restore` (IPv6), with
/// `present` answering which jumps exist already.
fn inputs(args: &[&str], present: &dyn Fn(&str, &str) -> bool) -> Vec<String> {
    let a = InitArgs::parse_from([&["init-iptables"][..], args].concat());
    a.interception
        .families()
        .iter()
        .map(|f| restore_input(f, present))
        .collect()
}

#[test]
fn one_transaction_per_family_adds_only_the_missing_jumps() {
    let fresh = inputs(&[], &|_, _| false);
    assert_eq!(
        fresh[0],
        "*nat\n:GRAYLANE_INBOUND - [0:0]\n:GRAYLANE_OUTBOUND - [0:0]\n\
         -A GRAYLANE_INBOUND -m addrtype ! --dst-type LOCAL -j RETURN\n\
         -A GRAYLANE_INBOUND -p tcp --dport 15000 -j RETURN\n\
         -A GRAYLANE_INBOUND -p tcp --dport 15006 -j RETURN\n\
         -A GRAYLANE_INBOUND -p tcp -j REDIRECT --to-ports 15006\n\
         -A GRAYLANE_OUTBOUND -m owner --uid-owner 1337 -j RETURN\n\
         -A GRAYLANE_OUTBOUND -d 127.0.0.0/8 -j RETURN\n\
         -A GRAYLANE_OUTBOUND -p tcp -j REDIRECT --to-ports 15001\n\
         -A OUTPUT -p tcp -j GRAYLANE_OUTBOUND\n\
         -A PREROUTING -p tcp -j GRAYLANE_INBOUND\nCOMMIT\n"
    );
    // New IPv6 connections are refused, but on loopback and excluded ports.
    assert_eq!(
        fresh[1],
        "*filter\n:GRAYLANE_INBOUND6 - [0:0]\n\
         -A GRAYLANE_INBOUND6 -i lo -j RETURN\n\
         -A GRAYLANE_INBOUND6 -p tcp --dport 15000 -j RETURN\n\
         -A GRAYLANE_INBOUND6 -p tcp --dport 15006 -j RETURN\n\
         -A GRAYLANE_INBOUND6 -p tcp --syn -j REJECT --reject-with tcp-reset\n\
         -A INPUT -p tcp -j GRAYLANE_INBOUND6\nCOMMIT\n"
    );
    // A second run: the chains are refilled, no jump is added twice.
    let again = inputs(&[], &|_, _| true);
    assert!(!again[0].contains("-A OUTPUT") && !again[0].contains("-A PREROUTING"));
    assert!(!again[1].contains("-A INPUT"));
    // Outbound only, after a run that captured inbound: its jumps go.
    let outbound_only = inputs(&["--inbound", "false"], &|_, _| true);
    assert!(outbound_only[0].contains("-D PREROUTING -p tcp -j GRAYLANE_INBOUND\n"));
    assert_eq!(
        outbound_only[1],
        "*filter\n:GRAYLANE_INBOUND6 - [0:0]\n-D INPUT -p tcp -j GRAYLANE_INBOUND6\nCOMMIT\n"
    );
}

#[test]
fn values_that_would_break_every_connection_are_refused() {
    for args in [
        &["--outbound-port", "0"][..],
        &["--inbound-port", "0"],
        &["--proxy-uid", "0"],
        &["--exclude-inbound-ports", "0"],
        &["--exclude-outbound-ports", "80,0"],
    ] {
        let e = InitArgs::try_parse_from([&["init-iptables"][..], args].concat());
        assert!(e.is_err(), "{args:?} accepted");
    }
    let e = InitArgs::try_parse_from(["init-iptables", "--exclude-outbound-cidrs", "fd00::/8"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("an IPv6 network: interception is IPv4"), "{e}");
}

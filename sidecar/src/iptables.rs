//! `graylane-sidecar init-iptables`: the NAT rules that make interception transparent
//! in a pod's network namespace (run once by an init container with NET_ADMIN).
//!
//! ```text
//! nat PREROUTING -p tcp ─► GRAYLANE_INBOUND:  not to this pod's addresses ─► RETURN
//!                                            excluded ports ─► RETURN
//!                                            everything else ─► REDIRECT :15006 (inbound)
//! nat OUTPUT -p tcp ─────► GRAYLANE_OUTBOUND: the sidecar's UID ─► RETURN (never captured twice)
//!                                             127.0.0.0/8, excluded CIDRs and ports ─► RETURN
//!                                             everything else ─► REDIRECT :15001 (outbound)
//! IPv6, filter INPUT -p tcp ─► GRAYLANE_INBOUND6: loopback, excluded ports ─► RETURN
//!                                                a new connection (SYN) ─► REJECT (reset)
//! ```
//!
//! Interception is IPv4. An app listening on `[::]` (Go's, Java's and Node's default)
//! would otherwise be reached over IPv6 past the sidecar, and past strict mTLS with it:
//! where the pod has IPv6, new inbound IPv6 connections are refused, as Istio does for
//! pods it does not intercept over IPv6. Outbound IPv6 is not captured.
//!
//! Each family's chains are refilled, and their jumps added where missing, in one
//! `iptables-restore --noflush` transaction: running it twice is harmless, and a run
//! that fails leaves the rules as they were, never half-written. `--cleanup` removes
//! it all.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use clap::CommandFactory;

pub(crate) const INBOUND_CHAIN: &str = "GRAYLANE_INBOUND";
pub(crate) const OUTBOUND_CHAIN: &str = "GRAYLANE_OUTBOUND";
const INBOUND6_CHAIN: &str = "GRAYLANE_INBOUND6";

/// What to capture, from the flags (or the pod's annotations, through injection).
#[derive(Clone, Debug, clap::Args)]
pub struct Interception {
    /// The UID the sidecar runs as: its own connections are never captured (not 0:
    /// root's connections, the kubelet's tools' included, would all go uncaptured).
    #[arg(long, default_value_t = 1337, value_parser = clap::value_parser!(u32).range(1..))]
    pub proxy_uid: u32,
    /// Where outbound connections are redirected (the sidecar's outbound listener).
    #[arg(long, default_value_t = 15001, value_parser = clap::value_parser!(u16).range(1..))]
    pub outbound_port: u16,
    /// Where inbound connections are redirected (the sidecar's inbound listener).
    #[arg(long, default_value_t = 15006, value_parser = clap::value_parser!(u16).range(1..))]
    pub inbound_port: u16,
    /// Inbound ports left alone, comma-separated (the admin port, for probes).
    #[arg(long, value_delimiter = ',', default_value = "15000", value_parser = clap::value_parser!(u16).range(1..))]
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destination IPv4 CIDRs left alone, comma-separated (e.g. the API
    /// server). Interception is IPv4: there is no IPv6 traffic to exclude.
    #[arg(long, value_delimiter = ',', value_parser = ipv4_network)]
    pub exclude_outbound_cidrs: Vec<ipnet::Ipv4Net>,
    /// Capture inbound traffic (off: outbound only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub inbound: bool,
}

fn ipv4_network(text: &str) -> Result<ipnet::Ipv4Net, String> {
    match text.parse::<ipnet::IpNet>() {
        Ok(ipnet::IpNet::V4(net)) => Ok(net),
        Ok(ipnet::IpNet::V6(_)) => {
            Err("an IPv6 network: interception is IPv4, so there is nothing to exclude".into())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// `init-iptables` itself.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "graylane-sidecar init-iptables")]
pub struct InitArgs {
    #[command(flatten)]
    pub interception: Interception,
    /// Remove graylane's rules instead (traffic flows directly again).
    #[arg(long)]
    pub cleanup: bool,
    /// Print what would be run instead of running it.
    #[arg(long)]
    pub dry_run: bool,
}

impl InitArgs {
    /// Reads the flags as clap does, then what no single flag can say: a usage error
    /// (exit 2) either way.
    pub fn parse_checked(args: impl IntoIterator<Item = String>) -> InitArgs {
        let parsed = <InitArgs as clap::Parser>::parse_from(args);
        let i = &parsed.interception;
        if i.inbound && i.inbound_port == i.outbound_port {
            InitArgs::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "--inbound-port and --outbound-port are both {}: inbound connections would reach the outbound listener",
                        i.inbound_port
                    ),
                )
                .exit();
        }
        parsed
    }
}

/// One rule (arguments after `-A CHAIN`).
pub(crate) type Rule = Vec<String>;

fn rule(parts: &[&str]) -> Rule {
    parts.iter().map(|s| (*s).to_string()).collect()
}

/// One address family's part: its programs, table, chains and jumps.
struct Family {
    /// `IPv4` / `IPv6`, for messages.
    name: &'static str,
    ipv6: bool,
    /// `iptables` / `ip6tables`: to test for a jump, and to clean up.
    check: &'static str,
    restore: &'static str,
    table: &'static str,
    /// Ours, emptied and refilled on every run.
    chains: &'static [&'static str],
    /// `(built-in chain, ours)`: the jumps that exist when we are installed.
    jumps: Vec<(&'static str, &'static str)>,
    /// Every jump the family can have: removed at cleanup, or when no longer wanted.
    all_jumps: &'static [(&'static str, &'static str)],
    rules: Vec<(&'static str, Rule)>,
}

impl Interception {
    /// The rules of our two NAT chains, in order.
    pub(crate) fn chains(&self) -> Vec<(&'static str, Rule)> {
        let mut out = Vec::new();
        if self.inbound {
            let inbound = self.inbound_port.to_string();
            // Only what is addressed to the pod itself: a neighbour routing another
            // host's traffic through the pod would otherwise have the sidecar dial it
            // (the original destination), as a relay into wherever the pod can reach.
            out.push((
                INBOUND_CHAIN,
                rule(&["-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", "RETURN"]),
            ));
            for port in self.inbound_exclusions() {
                out.push((
                    INBOUND_CHAIN,
                    rule(&["-p", "tcp", "--dport", &port.to_string(), "-j", "RETURN"]),
                ));
            }
            out.push((
                INBOUND_CHAIN,
                rule(&["-p", "tcp", "-j", "REDIRECT", "--to-ports", &inbound]),
            ));
        }
        let uid = self.proxy_uid.to_string();
        out.push((
            OUTBOUND_CHAIN,
            rule(&["-m", "owner", "--uid-owner", &uid, "-j", "RETURN"]),
        ));
        out.push((OUTBOUND_CHAIN, rule(&["-d", "127.0.0.0/8", "-j", "RETURN"])));
        for cidr in &self.exclude_outbound_cidrs {
            out.push((
                OUTBOUND_CHAIN,
                rule(&["-d", &cidr.to_string(), "-j", "RETURN"]),
            ));
        }
        for port in &self.exclude_outbound_ports {
            out.push((
                OUTBOUND_CHAIN,
                rule(&["-p", "tcp", "--dport", &port.to_string(), "-j", "RETURN"]),
            ));
        }
        let outbound = self.outbound_port.to_string();
        out.push((
            OUTBOUND_CHAIN,
            rule(&["-p", "tcp", "-j", "REDIRECT", "--to-ports", &outbound]),
        ));
        out
    }

    /// The rules of the IPv6 inbound chain: none when inbound is not captured.
    fn chains6(&self) -> Vec<(&'static str, Rule)> {
        if !self.inbound {
            return Vec::new();
        }
        let mut out = vec![(INBOUND6_CHAIN, rule(&["-i", "lo", "-j", "RETURN"]))];
        for port in self.inbound_exclusions() {
            out.push((
                INBOUND6_CHAIN,
                rule(&["-p", "tcp", "--dport", &port.to_string(), "-j", "RETURN"]),
            ));
        }
        out.push((
            INBOUND6_CHAIN,
            rule(&[
                "-p",
                "tcp",
                "--syn",
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ]),
        ));
        out
    }

    /// Inbound ports left alone: the excluded ones and the inbound listener's own.
    fn inbound_exclusions(&self) -> Vec<u16> {
        let mut excluded = self.exclude_inbound_ports.clone();
        excluded.push(self.inbound_port);
        excluded.sort_unstable();
        excluded.dedup();
        excluded
    }

    fn families(&self) -> [Family; 2] {
        let mut nat_jumps = vec![("OUTPUT", OUTBOUND_CHAIN)];
        if self.inbound {
            nat_jumps.push(("PREROUTING", INBOUND_CHAIN));
        }
        [
            Family {
                name: "IPv4",
                ipv6: false,
                check: "iptables",
                restore: "iptables-restore",
                table: "nat",
                chains: &[INBOUND_CHAIN, OUTBOUND_CHAIN],
                jumps: nat_jumps,
                all_jumps: &[("OUTPUT", OUTBOUND_CHAIN), ("PREROUTING", INBOUND_CHAIN)],
                rules: self.chains(),
            },
            Family {
                name: "IPv6",
                ipv6: true,
                check: "ip6tables",
                restore: "ip6tables-restore",
                table: "filter",
                chains: &[INBOUND6_CHAIN],
                jumps: if self.inbound {
                    vec![("INPUT", INBOUND6_CHAIN)]
                } else {
                    Vec::new()
                },
                all_jumps: &[("INPUT", INBOUND6_CHAIN)],
                rules: self.chains6(),
            },
        ]
    }
}

/// The `iptables-restore --noflush` input installing `family`: its chains declared
/// (created, or emptied: `--noflush` empties a user chain it declares) and refilled,
/// the jumps `present` lacks added, the unwanted ones `present` has removed.
fn restore_input(family: &Family, present: &dyn Fn(&str, &str) -> bool) -> String {
    let mut out = format!("*{}\n", family.table);
    for chain in family.chains {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for (chain, rule) in &family.rules {
        out.push_str(&format!("-A {chain} {}\n", rule.join(" ")));
    }
    for &(builtin, chain) in family.all_jumps {
        let wanted = family.jumps.contains(&(builtin, chain));
        match (wanted, present(builtin, chain)) {
            (true, false) => out.push_str(&format!("-A {builtin} -p tcp -j {chain}\n")),
            (false, true) => out.push_str(&format!("-D {builtin} -p tcp -j {chain}\n")),
            _ => {}
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// Runs the family's programs, or with `dry_run` prints what it would run.
struct Runner {
    dry_run: bool,
}

impl Runner {
    /// Whether `program args` succeeds (a `-C` check, a cleanup step that may find
    /// nothing to remove). Never run in a dry run: a check reads as "absent".
    fn succeeds(&self, program: &str, args: &[&str]) -> anyhow::Result<bool> {
        if self.dry_run {
            #[allow(clippy::print_stdout)]
            {
                println!("{program} {}", args.join(" "));
            }
            return Ok(false);
        }
        let out = Command::new(program).args(args).output().with_context(|| {
            format!("running {program} (is it installed, and are we root with NET_ADMIN?)")
        })?;
        Ok(out.status.success())
    }

    /// Feeds `input` to `program --noflush`; its error is ours.
    fn restore(&self, program: &str, input: &str) -> anyhow::Result<()> {
        if self.dry_run {
            #[allow(clippy::print_stdout)]
            {
                print!("{program} --noflush <<EOF\n{input}EOF\n");
            }
            return Ok(());
        }
        let mut child = Command::new(program)
            .arg("--noflush")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!("running {program} (is it installed, and are we root with NET_ADMIN?)")
            })?;
        child
            .stdin
            .take()
            .context("the restore's input")?
            .write_all(input.as_bytes())
            .with_context(|| format!("writing to {program}"))?;
        let out = child
            .wait_with_output()
            .with_context(|| format!("waiting for {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} refused the rules, and changed none of them: {}\n{input}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// Whether this network namespace has IPv6 at all (an address on any interface).
fn has_ipv6() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|t| !t.trim().is_empty())
}

/// Installs (or with `cleanup` removes) the rules. Idempotent either way.
pub fn apply(args: &InitArgs) -> anyhow::Result<()> {
    let runner = Runner {
        dry_run: args.dry_run,
    };
    let mut installed: Option<&str> = None;
    for family in args.interception.families() {
        let ipv6 = family.ipv6;
        let t = family.table;
        if args.cleanup {
            // Whether IPv6 is on now or not: rules an earlier run left come back into
            // force when it is turned on again. Without `ip6tables` there are none.
            let run = |args: &[&str]| match runner.succeeds(family.check, args) {
                Err(_) if ipv6 => Ok(false),
                other => other,
            };
            for &(builtin, chain) in family.all_jumps {
                let jump = ["-t", t, "-D", builtin, "-p", "tcp", "-j", chain];
                // `-D` removes one copy per call; stop when none is left.
                while run(&jump)? {}
            }
            for chain in family.chains {
                run(&["-t", t, "-F", chain])?;
                run(&["-t", t, "-X", chain])?;
            }
            continue;
        }
        if ipv6 && !runner.dry_run && !has_ipv6() {
            continue;
        }
        let present = |builtin: &str, chain: &str| {
            let check = ["-t", t, "-C", builtin, "-p", "tcp", "-j", chain];
            // A failed check reads as absent; the restore then says what is wrong.
            runner.succeeds(family.check, &check).unwrap_or(false)
        };
        let restored = runner.restore(family.restore, &restore_input(&family, &present));
        // Each family is one transaction; a later one failing leaves the earlier in.
        match (restored, installed) {
            (Err(e), Some(done)) => return Err(e.context(format!("the {done} rules are in place"))),
            (Err(e), None) => return Err(e),
            (Ok(()), _) => installed = Some(family.name),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

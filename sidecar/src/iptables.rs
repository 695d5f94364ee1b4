//! `graylane-sidecar init-iptables`: the NAT rules that make interception transparent
//! in a pod's network namespace (run once by an init container with NET_ADMIN).
//!
//! ```text
//! nat PREROUTING -p tcp ─► GRAYLANE_INBOUND:  excluded ports ─► RETURN
//!                                            everything else ─► REDIRECT :15006 (inbound)
//! nat OUTPUT -p tcp ─────► GRAYLANE_OUTBOUND: the sidecar's UID ─► RETURN (never captured twice)
//!                                             127.0.0.0/8, excluded CIDRs and ports ─► RETURN
//!                                             everything else ─► REDIRECT :15001 (outbound)
//! ```
//!
//! Our own chains, flushed and refilled on every run, and one jump rule each, added
//! only when missing: running it twice is harmless. `--cleanup` removes both.

use std::process::Command;

use anyhow::{Context, bail};

pub(crate) const INBOUND_CHAIN: &str = "GRAYLANE_INBOUND";
pub(crate) const OUTBOUND_CHAIN: &str = "GRAYLANE_OUTBOUND";

/// What to capture, from the flags (or the pod's annotations, through injection).
#[derive(Clone, Debug, clap::Args)]
pub struct Interception {
    /// The UID the sidecar runs as: its own connections are never captured.
    #[arg(long, default_value_t = 1337)]
    pub proxy_uid: u32,
    /// Where outbound connections are redirected (the sidecar's outbound listener).
    #[arg(long, default_value_t = 15001)]
    pub outbound_port: u16,
    /// Where inbound connections are redirected (the sidecar's inbound listener).
    #[arg(long, default_value_t = 15006)]
    pub inbound_port: u16,
    /// Inbound ports left alone, comma-separated (the admin port, for probes).
    #[arg(long, value_delimiter = ',', default_value = "15000")]
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destination CIDRs left alone, comma-separated (e.g. the API server).
    #[arg(long, value_delimiter = ',')]
    pub exclude_outbound_cidrs: Vec<ipnet::IpNet>,
    /// Capture inbound traffic (off: outbound only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub inbound: bool,
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
    /// Print the iptables commands instead of running them.
    #[arg(long)]
    pub dry_run: bool,
}

/// One `iptables` invocation (arguments after the program name).
pub(crate) type Rule = Vec<String>;

fn rule(parts: &[&str]) -> Rule {
    parts.iter().map(|s| (*s).to_string()).collect()
}

impl Interception {
    /// The rules of our two chains, in order (after `-t nat -A CHAIN`).
    pub(crate) fn chains(&self) -> Vec<(&'static str, Rule)> {
        let mut out = Vec::new();
        if self.inbound {
            let inbound = self.inbound_port.to_string();
            let mut excluded = self.exclude_inbound_ports.clone();
            excluded.push(self.inbound_port);
            excluded.sort_unstable();
            excluded.dedup();
            for port in excluded {
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

    /// The jump rules from the built-in chains into ours.
    fn jumps(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = vec![("OUTPUT", OUTBOUND_CHAIN)];
        if self.inbound {
            out.push(("PREROUTING", INBOUND_CHAIN));
        }
        out
    }
}

/// Runs `iptables`, or with `dry_run` prints the command line.
struct Runner {
    dry_run: bool,
}

impl Runner {
    fn run(&self, args: &[String]) -> anyhow::Result<bool> {
        if self.dry_run {
            #[allow(clippy::print_stdout)]
            {
                println!("iptables {}", args.join(" "));
            }
            return Ok(true);
        }
        let out = Command::new("iptables")
            .args(args)
            .output()
            .context("running iptables (is it installed, and are we root with NET_ADMIN?)")?;
        Ok(out.status.success())
    }

    fn must(&self, args: &[String]) -> anyhow::Result<()> {
        if self.dry_run {
            return self.run(args).map(|_| ());
        }
        let out = Command::new("iptables")
            .args(args)
            .output()
            .context("running iptables (is it installed, and are we root with NET_ADMIN?)")?;
        if !out.status.success() {
            bail!(
                "iptables {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

fn nat(args: &[&str]) -> Vec<String> {
    ["-t", "nat"]
        .iter()
        .chain(args)
        .map(|s| (*s).to_string())
        .collect()
}

/// Installs (or with `cleanup` removes) the rules. Idempotent either way.
pub fn apply(args: &InitArgs) -> anyhow::Result<()> {
    let runner = Runner {
        dry_run: args.dry_run,
    };
    let i = &args.interception;
    let all_jumps = [("OUTPUT", OUTBOUND_CHAIN), ("PREROUTING", INBOUND_CHAIN)];
    if args.cleanup {
        for (builtin, chain) in all_jumps {
            let jump = nat(&["-D", builtin, "-p", "tcp", "-j", chain]);
            // `-D` removes one copy per call; stop when none is left.
            while !runner.dry_run && runner.run(&jump)? {}
            if runner.dry_run {
                runner.run(&jump)?;
            }
            runner.run(&nat(&["-F", chain]))?;
            runner.run(&nat(&["-X", chain]))?;
        }
        return Ok(());
    }
    for (_, chain) in all_jumps {
        // Create, or empty what an earlier run left.
        if !runner.run(&nat(&["-N", chain]))? {
            runner.must(&nat(&["-F", chain]))?;
        }
    }
    for (chain, r) in i.chains() {
        let mut args = nat(&["-A", chain]);
        args.extend(r);
        runner.must(&args)?;
    }
    for (builtin, chain) in i.jumps() {
        let check = nat(&["-C", builtin, "-p", "tcp", "-j", chain]);
        if runner.dry_run || !runner.run(&check)? {
            runner.must(&nat(&["-A", builtin, "-p", "tcp", "-j", chain]))?;
        }
    }
    // Outbound only: a jump into the inbound chain from an earlier run goes away.
    if !i.inbound {
        let jump = nat(&["-D", "PREROUTING", "-p", "tcp", "-j", INBOUND_CHAIN]);
        while !runner.dry_run && runner.run(&jump)? {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
        let e =
            InitArgs::try_parse_from(["init-iptables", "--exclude-outbound-cidrs", "10.0.0.0/33"])
                .unwrap_err()
                .to_string();
        assert!(e.contains("--exclude-outbound-cidrs"), "{e}");
    }
}

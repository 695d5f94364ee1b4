//! Network namespaces for tests of transparent interception: real iptables rules in a
//! namespace of the test's own, deleted on drop, so nothing touches the host's network.
//!
//! `enter` moves the calling thread into the namespace: from then on its sockets, and
//! every process it spawns, live there.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A network namespace with `lo` up and `ADDRESS` on it; deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// An address inside the namespace that is not loopback, so iptables rules that
    /// exempt 127.0.0.0/8 (as a pod's do) still capture connections to it.
    pub const ADDRESS: &'static str = "10.99.0.1";

    /// Creates the namespace; panics (naming the command) when the host cannot, e.g.
    /// when not root.
    pub fn create() -> NetNs {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "gl-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]);
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["addr", "add", &format!("{}/32", Self::ADDRESS), "dev", "lo"]);
        ns
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) {
        run(&[&["ip", "-n", &self.name], args].concat());
    }

    /// `iptables ARGS` inside the namespace.
    pub fn iptables(&self, args: &[&str]) {
        run(&[&["ip", "netns", "exec", &self.name, "iptables"], args].concat());
    }

    /// The namespace's NAT table (`iptables -t nat -S`).
    pub fn iptables_save(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "iptables", "-t", "nat", "-S"])
            .output()
            .expect("run iptables");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes the namespace's `/etc/netns/<name>/hosts` (what `ip netns exec` and a
    /// thread that `enter`s resolve names by); removed with the namespace.
    pub fn write_hosts(&self, hosts: &str) {
        let etc = std::path::Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&etc).expect("create /etc/netns/<name>");
        std::fs::write(etc.join("hosts"), hosts).expect("write /etc/netns/<name>/hosts");
    }

    /// Moves the calling thread into the namespace (see the module doc).
    pub fn enter(&self) {
        enter(&self.name);
    }
}

/// Moves the calling thread into the namespace named `name` (see the module doc).
#[allow(unsafe_code)] // one libc call; no safe wrapper in the dependency tree
pub fn enter(name: &str) {
    let file = File::open(format!("/run/netns/{name}")).expect("open the netns");
    // SAFETY: setns on a valid namespace fd only changes this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&self.name));
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (the test command installs it)", args[0]));
    assert!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

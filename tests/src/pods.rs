//! Pods emulated as network namespaces on one bridge, for interception tests as on a
//! cluster: each pod is a namespace with a veth into the bridge of a `net` namespace
//! (where the test thread lives, like a node), and its own `/etc/netns/<pod>/hosts`
//! for service names. Addresses exist only inside these namespaces; all of it is
//! deleted on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::netns::NetNs;

/// The bridge network and its pods.
pub struct PodNet {
    pub net: NetNs,
    pods: Vec<NetNs>,
    etc: Vec<PathBuf>,
}

impl PodNet {
    /// The pods' /24; the bridge is `.254`.
    pub const SUBNET: &'static str = "10.88.0";

    pub fn create() -> PodNet {
        let net = NetNs::create();
        net.ip(&["link", "add", "br0", "type", "bridge"]);
        net.ip(&[
            "addr",
            "add",
            &format!("{}.254/24", Self::SUBNET),
            "dev",
            "br0",
        ]);
        net.ip(&["link", "set", "br0", "up"]);
        PodNet {
            net,
            pods: Vec::new(),
            etc: Vec::new(),
        }
    }

    /// A pod at `SUBNET.n` whose `/etc/hosts` (for processes started by `exec`) is
    /// `hosts`. Returns the namespace name.
    pub fn pod(&mut self, n: u8, hosts: &str) -> String {
        let pod = NetNs::create();
        let veth = format!("vh{n}");
        self.net.ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
        ]);
        self.net.ip(&["link", "set", &veth, "master", "br0", "up"]);
        pod.ip(&[
            "addr",
            "add",
            &format!("{}.{n}/24", Self::SUBNET),
            "dev",
            "eth0",
        ]);
        pod.ip(&["link", "set", "eth0", "up"]);
        let etc = Path::new("/etc/netns").join(&pod.name);
        std::fs::create_dir_all(&etc).expect("create /etc/netns/<pod>");
        std::fs::write(etc.join("hosts"), hosts).expect("write the pod's hosts");
        let name = pod.name.clone();
        self.etc.push(etc);
        self.pods.push(pod);
        name
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        for dir in &self.etc {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `program args` inside namespace `ns` (with its hosts file).
pub fn exec(ns: &str, program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program).args(args);
    cmd
}

/// Like `exec`, as user and group `uid` (how a sidecar runs in a pod).
pub fn exec_as(ns: &str, uid: u32, program: &Path, args: &[&str]) -> Command {
    let id = uid.to_string();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "setpriv"])
        .args([format!("--reuid={id}"), format!("--regid={id}")])
        .args(["--clear-groups", "--"])
        .arg(program)
        .args(args);
    cmd
}

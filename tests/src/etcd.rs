//! Real etcd servers (Debian's `etcd-server`, installed by the test command) in a temp
//! dir, on loopback ports picked free just before start.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Proc, eventually, http_get, http_post, unique};

/// One etcd member.
pub struct Etcd {
    pub name: String,
    pub proc: Option<Proc>,
    /// `127.0.0.1:PORT` of the client URL.
    pub client: std::net::SocketAddr,
    peer: std::net::SocketAddr,
    data: PathBuf,
    cluster: String,
    token: String,
    log_dir: PathBuf,
}

/// A loopback port that was free a moment ago (etcd cannot bind port 0 and report it).
/// Picked below the kernel's ephemeral range: a port found by binding port 0 and let
/// go is the kind the next `bind(0)` of another test may get, and a member whose peer
/// port another test's server took never becomes healthy (its peers probe a stranger:
/// "404 from /raft/probing"). Ports below the range are never handed out for port 0.
/// The port stays bound until the listener is dropped: a cluster holds all of its
/// ports while it picks them, so no two of its members' URLs get the same one.
fn free_port() -> TcpListener {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let below = low.saturating_sub(10_000).max(1024);
    for _ in 0..1000 {
        let offset = random() % u64::from(low - below);
        let port = below + u16::try_from(offset).expect("below the range's width");
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return l;
        }
    }
    panic!("no free loopback port in {below}..{low}")
}

/// A random number: std's `RandomState` is seeded from the OS and differs per instance
/// (no RNG crate for one use).
fn random() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

impl Etcd {
    /// A one-member cluster, healthy when this returns.
    pub fn start(dir: &Path) -> Etcd {
        Self::cluster(dir, 1).pop().expect("one member")
    }

    /// An `n`-member cluster on loopback, healthy when this returns.
    pub fn cluster(dir: &Path, n: usize) -> Vec<Etcd> {
        let token = format!("graylane-test-{}", std::process::id());
        let held: Vec<(TcpListener, TcpListener)> =
            (0..n).map(|_| (free_port(), free_port())).collect();
        let addr = |l: &TcpListener| l.local_addr().expect("a bound address");
        let members: Vec<(String, std::net::SocketAddr, std::net::SocketAddr)> = held
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| (format!("etcd{i}"), addr(client), addr(peer)))
            .collect();
        // Let go just before the members bind them.
        drop(held);
        let cluster = members
            .iter()
            .map(|(name, _, peer)| format!("{name}=http://{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut out: Vec<Etcd> = members
            .into_iter()
            .map(|(name, client, peer)| Etcd {
                data: dir.join(format!("{name}.data")),
                name,
                proc: None,
                client,
                peer,
                cluster: cluster.clone(),
                token: token.clone(),
                log_dir: dir.to_path_buf(),
            })
            .collect();
        for member in &mut out {
            let token = member.token.clone();
            member.spawn(&token);
        }
        for member in &out {
            member.wait_healthy();
        }
        out
    }

    fn spawn(&mut self, token: &str) {
        let client = format!("http://{}", self.client);
        let peer = format!("http://{}", self.peer);
        let mut cmd = Command::new(etcd_binary());
        cmd.args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", token])
            // Fast elections on loopback, so a lost leader is replaced in well under 1 s.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"]);
        let log = unique(&self.log_dir, &self.name, "log");
        self.proc = Some(Proc::spawn(&self.name, cmd, log));
    }

    /// Waits for `/health` to say true.
    pub fn wait_healthy(&self) {
        eventually(
            Duration::from_secs(30),
            &format!("{} to be healthy", self.name),
            || {
                let (status, body) = http_get(self.client, "/health");
                (status == 200 && body.contains("true")).then_some(())
            },
        );
    }

    /// A call to etcd's JSON gateway (`/v3/...`), parsed.
    pub fn gateway(&self, path: &str, json: &str) -> serde_json::Value {
        let (status, body) = http_post(self.client, path, json);
        assert_eq!(status, 200, "{} {path}: {body}", self.name);
        // The JSON object, whatever framing (chunked or not) came around it.
        let start = body.find('{').unwrap_or(0);
        let end = body.rfind('}').map_or(body.len(), |e| e + 1);
        serde_json::from_str(&body[start..end])
            .unwrap_or_else(|e| panic!("{} {path}: {e}: {body}", self.name))
    }

    /// Whether this member is the cluster's leader right now.
    pub fn is_leader(&self) -> bool {
        let status = self.gateway("/v3/maintenance/status", "{}");
        status["leader"] == status["header"]["member_id"]
    }

    /// The cluster's current etcd revision.
    pub fn revision(&self) -> u64 {
        let range = self.gateway("/v3/kv/range", r#"{"key":"Lw=="}"#);
        range["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no revision in {range}"))
    }

    /// The lease a key is attached to (`None`: no such key, or no lease).
    pub fn lease_of(&self, key: &str) -> Option<String> {
        let range = self.gateway(
            "/v3/kv/range",
            &format!(r#"{{"key":"{}"}}"#, base64(key.as_bytes())),
        );
        let lease = range["kvs"].get(0)?["lease"].as_str()?.to_string();
        (lease != "0").then_some(lease)
    }

    /// Whether lease `id` has expired (or never existed).
    pub fn lease_expired(&self, id: &str) -> bool {
        let ttl = self.gateway("/v3/lease/timetolive", &format!(r#"{{"ID":"{id}"}}"#));
        ttl["TTL"]
            .as_str()
            .and_then(|t| t.parse::<i64>().ok())
            .is_none_or(|t| t < 0)
    }

    /// Compacts etcd's history up to `revision`: watches from before it are cancelled.
    pub fn compact(&self, revision: u64) {
        self.gateway(
            "/v3/kv/compaction",
            &format!(r#"{{"revision":"{revision}","physical":true}}"#),
        );
    }

    /// `host:port` for `etcd://` URLs.
    pub fn endpoint(&self) -> String {
        self.client.to_string()
    }

    /// Stops the member (SIGKILL); `restart` brings it back with its data.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// A stopped member's data directory as it is now, copied to `to` (a backup taken
    /// offline, as an operator would before an upgrade).
    pub fn back_up(&self, to: &Path) {
        assert!(self.proc.is_none(), "{} is running", self.name);
        copy_dir(&self.data, to);
    }

    /// A stopped member's data replaced by the backup at `from` (etcd restored from
    /// it: its revisions go back to the backup's).
    pub fn restore(&self, from: &Path) {
        assert!(self.proc.is_none(), "{} is running", self.name);
        std::fs::remove_dir_all(&self.data).unwrap();
        copy_dir(from, &self.data);
    }

    /// Starts a stopped member again on the same ports and data (etcd ignores the
    /// initial-cluster flags once its data dir exists).
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "{} is running", self.name);
        let token = self.token.clone();
        self.spawn(&token);
    }
}

/// `etcd` on the PATH or where Debian puts it.
fn etcd_binary() -> PathBuf {
    for candidate in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    "etcd".into()
}

/// Standard base64 (the gateway's encoding of keys).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(super::base64(b"/"), "Lw==");
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b"abc"), "YWJj");
        assert_eq!(super::base64(b"/graylane"), "L2dyYXlsYW5l");
    }
}

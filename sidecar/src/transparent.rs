//! Transparent mode of the outbound listener: connections that iptables redirected to
//! it, the app having dialled some other address. The kernel keeps that address;
//! `SO_ORIGINAL_DST` reads it back.
//!
//! ```text
//! accepted ─► original destination? ── none ─► explicit proxy (HTTP)
//!                │ redirected
//!                ├─ its port in --opaque-ports ─────────────────► TCP tunnel to it
//!                ├─ first bytes not HTTP, or none within
//!                │  --detect-timeout (the server speaks first) ─► TCP tunnel to it
//!                └─ HTTP/1.1 or HTTP/2 ─► outbound: a mesh service by Host /
//!                   :authority is routed; any other goes to the original destination
//! ```
//!
//! So turning interception on breaks neither a database connection nor a call to an
//! external API: what the mesh does not know passes through, as with Istio's default
//! `ALLOW_ANY`, and server-first protocols are never made to wait when their port is
//! listed (Linkerd's "opaque ports", same defaults).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::metrics::Metrics;

/// Ports of protocols where the server speaks first (SMTP, MySQL, Galera, PostgreSQL,
/// Redis, Elasticsearch transport, memcached): Linkerd's defaults.
pub const DEFAULT_OPAQUE_PORTS: &str = "25,587,3306,4444,5432,6379,9300,11211";

/// The address an intercepted connection was dialled to; in each of its requests'
/// extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OriginalDst(pub(crate) SocketAddr);

/// The app behind the inbound listener: `--app-addr`, and where a connection that
/// iptables redirected to the listener goes instead. A pod's app may listen on more
/// ports than `--app-addr`'s (its metrics, a second API, a server-first protocol):
/// a client that dialled one of them reaches the address it dialled (the pod's), as
/// Istio's inbound does since 1.10, not the app's main port. Not `127.0.0.1` at that
/// port: what the app binds to loopback only (a debug server, a local admin API)
/// is private to the pod, and redirecting to it would open it to every client.
pub struct AppAddr {
    addr: Arc<str>,
    port: u16,
    /// The sidecar's own listeners' ports: a client dialling one of those from outside
    /// the pod reaches `--app-addr`, never the listener itself (the outbound one would
    /// let it call the mesh as this app).
    own_ports: Vec<u16>,
}

impl AppAddr {
    /// `addr` is `--app-addr` (`host:port`, checked at start).
    pub(crate) fn new(addr: &str, own_ports: Vec<u16>) -> Self {
        let port = addr.rsplit_once(':').map_or("", |(_, port)| port);
        Self {
            addr: Arc::from(addr),
            port: port.parse().unwrap_or(0),
            own_ports,
        }
    }

    /// `--app-addr` itself.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Where a connection dialled to `original` goes, when not to `--app-addr`:
    /// `None` for one dialled to the listener itself (mesh calls), to the app's own
    /// port, or to a port of the sidecar's.
    pub(crate) fn dialled(&self, original: Option<SocketAddr>) -> Option<String> {
        let original = original?;
        let port = original.port();
        (port != self.port && !self.own_ports.contains(&port)).then(|| original.to_string())
    }

    /// [`Self::dialled`], or `--app-addr`.
    pub(crate) fn for_connection(&self, original: Option<SocketAddr>) -> Arc<str> {
        self.dialled(original)
            .map_or_else(|| Arc::clone(&self.addr), Arc::from)
    }
}

/// How intercepted connections are told apart and tunnelled.
pub struct Transparent {
    /// Destination ports tunnelled without looking at the bytes.
    pub(crate) opaque_ports: Vec<u16>,
    /// How long to wait for the client's first bytes before tunnelling.
    pub(crate) detect_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) metrics: Arc<Metrics>,
}

impl Transparent {
    /// The destination of a redirected connection; `None` when it was dialled to the
    /// listener itself (explicit proxy mode).
    pub(crate) fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
        let local = stream.local_addr().ok()?;
        let socket = socket2::SockRef::from(stream);
        let original = if local.is_ipv4() {
            socket.original_dst_v4()
        } else {
            socket.original_dst_v6()
        };
        // Not redirected: no NAT entry (ENOENT), or, with conntrack, the local address.
        let original = original.ok()?.as_socket()?;
        (original != local).then_some(original)
    }

    /// Whether a connection to `port` is to be tunnelled rather than served as HTTP:
    /// by port, else by its first bytes within `--detect-timeout`. `silent_is_opaque`:
    /// a client that says nothing is taken for a server-first protocol.
    pub(crate) async fn is_opaque(
        &self,
        stream: &TcpStream,
        port: u16,
        silent_is_opaque: bool,
    ) -> bool {
        if self.opaque_ports.contains(&port) {
            return true;
        }
        let deadline = tokio::time::Instant::now() + self.detect_timeout;
        let mut buf = [0u8; 24];
        loop {
            let seen = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
                Err(_) => return silent_is_opaque,
                // Closed or broken before a byte: hyper ends it quietly.
                Ok(Ok(0) | Err(_)) => return false,
                Ok(Ok(n)) => &buf[..n],
            };
            if let Some(protocol) = classify(seen) {
                return protocol == Protocol::Opaque;
            }
            // A request line split across segments (rare): peek returns at once while
            // any byte is buffered, so wait a moment for the rest.
            if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(1)))
                .await
                .is_err()
            {
                return silent_is_opaque;
            }
        }
    }

    /// Joins `stream` with a new connection to `to` byte for byte until either closes.
    pub(crate) async fn tunnel(&self, mut stream: TcpStream, to: Arc<str>) {
        let to = &*to;
        self.metrics.tunnels.fetch_add(1, Ordering::Relaxed);
        let mut upstream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(to)).await {
                Ok(Ok(upstream)) => upstream,
                Ok(Err(e)) => {
                    tracing::debug!(%to, error = %e, "tunnel: connect failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%to, "tunnel: connect timed out");
                    return;
                }
            };
        let _ = upstream.set_nodelay(true);
        if let Err(e) = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await {
            tracing::debug!(%to, error = %e, "tunnel ended with an error");
        }
    }
}

/// What the first bytes of a connection say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http,
    Opaque,
}

/// HTTP/1.x starts with a method token (upper-case letters) and a space; the HTTP/2
/// preface with `PRI `. Anything else (TLS, Redis, PostgreSQL...) is opaque. `None`:
/// too few bytes to tell yet.
fn classify(seen: &[u8]) -> Option<Protocol> {
    const LONGEST_METHOD: usize = 20;
    let letters = seen.iter().take_while(|b| b.is_ascii_uppercase()).count();
    match seen.get(letters) {
        None if letters <= LONGEST_METHOD => None,
        Some(b' ') if (1..=LONGEST_METHOD).contains(&letters) => Some(Protocol::Http),
        _ => Some(Protocol::Opaque),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_redirected_from_another_app_port_goes_to_that_port() {
        let app = AppAddr::new("127.0.0.1:8080", vec![15001, 15000, 15006]);
        let dialled = |port: u16| app.dialled(Some(SocketAddr::from(([10, 0, 0, 7], port))));
        assert_eq!(
            dialled(9090).as_deref(),
            Some("10.0.0.7:9090"),
            "the address dialled: what the app binds to loopback only stays private"
        );
        // The app's own port, the sidecar's ports, and no redirect: --app-addr.
        for port in [8080, 15001, 15000, 15006] {
            assert_eq!(dialled(port), None, "{port}");
        }
        assert_eq!(app.dialled(None), None);
        assert_eq!(&*app.for_connection(None), "127.0.0.1:8080");
        let v6 = AppAddr::new("[::1]:8080", Vec::new());
        let to = v6.for_connection(Some("[fd00::7]:9090".parse().unwrap()));
        assert_eq!(&*to, "[fd00::7]:9090");
    }

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http));
        assert_eq!(classify(b"OPTIONS * HTTP/1.1"), Some(Protocol::Http));
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Some(Protocol::Http)
        );
        assert_eq!(classify(b"POS"), None);
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Some(Protocol::Opaque));
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(b"PING\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(b" GET"), Some(Protocol::Opaque));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Protocol::Opaque));
        assert_eq!(classify(&[b'A'; 21]), Some(Protocol::Opaque));
    }
}

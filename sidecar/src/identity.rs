//! The sidecar's workload identity: a short-lived certificate the control plane
//! issues for a key made here (renewed in the background), the trust bundle peers must
//! chain to, and the mesh mTLS configs built from both for the data path.
//!
//! ```text
//!  renew (identity/renew.rs): new P-256 key ─► CSR ─► IssueCertificate ─┐
//!     at half the lifetime; on failure jittered backoff until expiry    │
//!  discovery snapshot: trust_bundle ────────────────────────────────────┤
//!                                                                       ▼
//!            Current { certificate, ServerConfig, ClientConfig×ALPN } (ArcSwap)
//!                 ├► inbound: server_config()   ├► outbound: client_config(alpn)
//!                 └► /config, /metrics, /ready (503 once expired)
//! ```
//!
//! Owns the key (it never leaves this process, and is never logged or shown) and the
//! certificate checks. Does not own which connections use mTLS (PeerPolicy) nor the
//! tag's trust boundary: inbound and outbound decide, with `peer_identity`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use serde_json::json;
use tokio::sync::watch;

use crate::metrics::Metrics;

mod cert;
mod name;
mod renew;
#[cfg(test)]
pub(crate) mod testing;
mod tls;

pub(crate) use self::cert::{Bundle, CertError, Issued};
pub(crate) use self::name::SpiffeId;

/// Who to ask for certificates, and as whom: the same control planes, CA bundle and
/// token file as discovery.
#[derive(Clone, Debug, Default)]
pub(crate) struct Config {
    /// `--namespace` and `--service-account`: the identity asked for. A bound
    /// credential decides it instead (the control plane refuses any other).
    pub(crate) namespace: String,
    pub(crate) service_account: String,
    pub(crate) instance_id: String,
    /// Control-plane URLs, tried in turn.
    pub(crate) control_planes: Vec<String>,
    /// Read again for every request: Kubernetes rotates projected tokens in place.
    pub(crate) token_file: Option<PathBuf>,
    /// CA certificates (PEM) an `https://` control plane must chain to.
    pub(crate) ca_bundle: Option<Vec<u8>>,
}

/// The protocol an outbound mesh connection negotiates (ALPN): the one the app used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alpn {
    H2,
    Http1,
}

/// The sidecar's workload identity: its current certificate (renewed in the
/// background) and the trust bundle (from snapshots). Shared as `Arc<Identity>`;
/// every accessor is cheap (ArcSwap loads) and lock-free on the request path.
pub(crate) struct Identity {
    config: Config,
    metrics: Arc<Metrics>,
    /// The certificate in force and the configs built from it: swapped whole, so a
    /// handshake sees one certificate with one bundle. Connections already open keep
    /// the config they were made with: a renewal drops none.
    current: ArcSwapOption<Current>,
    /// The latest trust bundle, from a snapshot or a certificate response.
    bundle: ArcSwapOption<Bundle>,
    /// Held by the writers (renewal, bundle update) while they rebuild and swap, so
    /// neither publishes configs built from a state the other already replaced.
    /// Never held on the request path nor across an `.await`.
    writer: Mutex<()>,
    /// Certificates received after the first one.
    renewals: AtomicU64,
    /// Turns true once the first request for a certificate got an answer or failed:
    /// discovery registers only then (see `first_attempt`).
    tried: watch::Sender<bool>,
}

struct Current {
    issued: Arc<Issued>,
    server: Arc<ServerConfig>,
    /// Indexed by `Alpn::index`.
    clients: [Arc<ClientConfig>; 2],
}

impl Alpn {
    fn protocol(self) -> &'static [u8] {
        match self {
            Self::H2 => b"h2",
            Self::Http1 => b"http/1.1",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::H2 => 0,
            Self::Http1 => 1,
        }
    }
}

impl Identity {
    /// No certificate yet (`run` gets one), no bundle (snapshots and certificate
    /// answers bring it); the certificate metrics go to `metrics`.
    pub(crate) fn new(config: Config, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            metrics,
            current: ArcSwapOption::empty(),
            bundle: ArcSwapOption::empty(),
            writer: Mutex::new(()),
            renewals: AtomicU64::new(0),
            tried: watch::channel(false).0,
        }
    }

    /// Waits (at most `limit`) until the first request for a certificate is over,
    /// whatever its outcome. Discovery registers the instance after this: callers
    /// learn of an instance when it can already prove its identity, instead of
    /// failing handshakes with it in the milliseconds before its certificate arrives.
    pub(crate) async fn first_attempt(&self, limit: std::time::Duration) {
        let mut tried = self.tried.subscribe();
        let _ = tokio::time::timeout(limit, tried.wait_for(|t| *t)).await;
    }

    /// Inbound mesh mTLS: this sidecar's certificate; a client certificate is
    /// REQUIRED and verified against the bundle (any mesh identity is accepted, it is
    /// read back with `peer_identity`); TLS 1.3 only; ALPN `h2` and `http/1.1`.
    /// `None` while there is no valid certificate (not yet issued, or expired).
    pub(crate) fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.valid_at(unix_now(), |c| Arc::clone(&c.server))
    }

    /// Outbound mesh mTLS to another sidecar: presents this sidecar's certificate,
    /// verifies the server's chain against the bundle AND that its only URI SAN is
    /// exactly the identity encoded in the SNI the connection was made with
    /// (`server_name`). TLS 1.3 only, ALPN exactly `alpn`. `None` as above.
    pub(crate) fn client_config(&self, alpn: Alpn) -> Option<Arc<ClientConfig>> {
        self.valid_at(unix_now(), |c| Arc::clone(&c.clients[alpn.index()]))
    }

    /// The SNI to reach `identity` (`spiffe://<td>/ns/<ns>/sa/<sa>`):
    /// `<sa>.<ns>.<MESH_SNI_SUFFIX>` (the trust domain is this sidecar's own). `None`
    /// when `identity` is not a spiffe id of this trust domain (or before the first
    /// certificate, when this sidecar has none).
    pub(crate) fn server_name(&self, identity: &str) -> Option<ServerName<'static>> {
        let id = SpiffeId::parse(identity)?;
        let current = self.current.load();
        let own = &current.as_ref()?.issued.id.trust_domain;
        if id.trust_domain != *own {
            return None;
        }
        id.server_name()
    }

    /// Whether [`Self::server_name`] would name `identity`, without making the name:
    /// asked for every outbound call, where parsing and formatting it cost 7 % of the
    /// hop (and each thread remembers the answers: `name::nameable`).
    pub(crate) fn can_name(&self, identity: &str) -> bool {
        let current = self.current.load();
        current
            .as_ref()
            .is_some_and(|c| name::nameable(identity, &c.issued.id.trust_domain))
    }

    /// Whether a ClientHello's SNI is a mesh one: how the inbound listener tells mesh
    /// mTLS from an app's own TLS passing through (CONNECT tunnels), which it tunnels
    /// to the app as today.
    pub(crate) fn is_mesh_sni(sni: &str) -> bool {
        name::is_mesh_sni(sni)
    }

    /// The spiffe identity (the URI SAN) of a peer's end-entity certificate; `None`
    /// without exactly one URI SAN that is a spiffe id.
    pub(crate) fn peer_identity(cert: &CertificateDer<'_>) -> Option<String> {
        cert::peer_identity(cert)
    }

    /// A new trust bundle (every CA currently trusted, PEM), from a snapshot. A bundle
    /// that does not parse is refused whole and the previous one kept.
    pub(crate) fn set_trust_bundle(&self, pems: &[String]) {
        let bundle = match Bundle::new(pems) {
            Ok(b) => Arc::new(b),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the trust bundle; keeping the previous one");
                return;
            }
        };
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        // Every new stream's first snapshot carries the bundle: unchanged, keep the
        // configs (and their TLS session caches).
        if self
            .bundle
            .load()
            .as_ref()
            .is_some_and(|b| b.anchors == bundle.anchors)
        {
            return;
        }
        if let Some(current) = self.current.load_full()
            && let Err(e) = self.publish(Arc::clone(&current.issued), &bundle)
        {
            tracing::warn!(error = %e, "ignoring the trust bundle; keeping the previous one");
            return;
        }
        tracing::info!(cas = bundle.anchors.len(), "trust bundle updated");
        self.bundle.store(Some(bundle));
    }

    /// Puts a new certificate in force, with the bundle that came with it (when it
    /// has one). Errs, keeping the current certificate, when no config can be built.
    pub(crate) fn install(&self, issued: Issued, bundle_pems: &[String]) -> Result<(), String> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let bundle = match bundle_pems {
            [] => self.bundle.load_full(),
            pems => Some(Arc::new(Bundle::new(pems).map_err(|e| e.to_string())?)),
        };
        let bundle = bundle.ok_or("no trust bundle yet: the certificate cannot be verified")?;
        let (id, serial, not_after) = (
            issued.id.to_string(),
            issued.serial.clone(),
            issued.not_after,
        );
        tls::check_chain(&issued, &bundle)?;
        let first = self.current.load().is_none();
        self.publish(Arc::new(issued), &bundle)?;
        self.bundle.store(Some(bundle));
        self.metrics.set_certificate_expiry(not_after);
        if !first {
            self.renewals.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(identity = %id, %serial, not_after = %rfc3339(not_after), "workload certificate in force");
        Ok(())
    }

    /// When the certificate in force expired, if it did by `now` (unix seconds):
    /// `/ready` is 503 from then on. `None` before the first certificate (routing
    /// needs none) and while it is valid.
    pub(crate) fn expired_at(&self, now: i64) -> Option<i64> {
        let current = self.current.load();
        let not_after = current.as_ref()?.issued.not_after;
        (not_after <= now).then_some(not_after)
    }

    /// `/config`'s `identity`: id, serial, expiry, renewals, the bundle's CAs; `null`
    /// before the first certificate. Never the key.
    pub(crate) fn describe(&self) -> serde_json::Value {
        let Some(current) = self.current.load_full() else {
            return serde_json::Value::Null;
        };
        let bundle = self.bundle.load();
        let anchors = bundle
            .as_ref()
            .map(|b| b.anchors.as_slice())
            .unwrap_or_default();
        let issued = &current.issued;
        json!({
            "id": issued.id.to_string(),
            "serial": issued.serial,
            "not_after": rfc3339(issued.not_after),
            "renewals": self.renewals.load(Ordering::Relaxed),
            "trust_bundle": anchors,
        })
    }

    /// Builds the configs for `issued` with `bundle` and swaps them in. Callers hold
    /// `writer`.
    fn publish(&self, issued: Arc<Issued>, bundle: &Bundle) -> Result<(), String> {
        let server = tls::server_config(&issued, bundle)?;
        let client = |alpn| tls::client_config(&issued, bundle, alpn).map(Arc::new);
        let clients = [client(Alpn::H2)?, client(Alpn::Http1)?];
        self.current.store(Some(Arc::new(Current {
            issued,
            server: Arc::new(server),
            clients,
        })));
        Ok(())
    }

    fn valid_at<T>(&self, now: i64, pick: impl FnOnce(&Current) -> T) -> Option<T> {
        let current = self.current.load();
        let current = current.as_ref()?;
        (current.issued.not_after > now).then(|| pick(current))
    }
}

/// Unix seconds now (0 if the clock is before 1970: everything reads as valid-less).
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `2026-12-04T18:54:08Z`; the number itself if out of range.
pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::testing::TestCa;
    use super::*;

    const ORDERS: &str = "spiffe://cluster.local/ns/shop/sa/orders";

    fn empty() -> Identity {
        Identity::new(Config::default(), Arc::default())
    }

    #[test]
    fn nothing_before_the_first_certificate() {
        let id = empty();
        assert!(id.server_config().is_none() && id.client_config(Alpn::Http1).is_none());
        assert_eq!(
            id.server_name(ORDERS),
            None,
            "no trust domain of its own yet"
        );
        assert_eq!(id.expired_at(i64::MAX), None, "nothing to expire");
        assert_eq!(id.describe(), serde_json::Value::Null);
    }

    #[test]
    fn a_certificate_for_another_key_or_without_identity_is_refused() {
        let ca = TestCa::new("mesh");
        let (chain, _key) = ca.issue(ORDERS);
        let (_, other_key) = ca.issue(ORDERS);
        let err = Issued::new(&chain, &other_key, unix_now()).unwrap_err();
        assert!(matches!(err, CertError::OtherKey), "{err}");
        let (chain, key) = ca.issue("https://not.spiffe");
        assert!(matches!(
            Issued::new(&chain, &key, unix_now()),
            Err(CertError::NoIdentity)
        ));
        let (_, key) = ca.issue(ORDERS);
        assert!(Issued::new("not pem", &key, unix_now()).is_err());
        // A bundle without the CA that signed it: peers would refuse it.
        let (chain, key) = ca.issue(ORDERS);
        let issued = Issued::new(&chain, &key, unix_now()).unwrap();
        let id = empty();
        let err = id
            .install(issued, &[TestCa::new("other").pem()])
            .unwrap_err();
        assert!(err.contains("does not chain to the trust bundle"), "{err}");
        assert!(id.server_config().is_none());
    }

    #[test]
    fn server_names_only_for_identities_of_its_trust_domain() {
        let ca = TestCa::new("mesh");
        let id = ca.identity(ORDERS, &[ca.pem()]);
        let name = id
            .server_name("spiffe://cluster.local/ns/shop/sa/payments")
            .unwrap();
        assert_eq!(name.to_str(), "payments.shop.identity.graylane.internal");
        assert_eq!(
            id.server_name("spiffe://elsewhere/ns/shop/sa/payments"),
            None
        );
        assert_eq!(id.server_name("payments.shop"), None);
    }

    #[test]
    fn can_name_says_what_server_name_does() {
        let ca = TestCa::new("mesh");
        let id = ca.identity(ORDERS, &[ca.pem()]);
        let long = format!("spiffe://cluster.local/ns/shop/sa/{}", "a.".repeat(120));
        for peer in [
            "spiffe://cluster.local/ns/shop/sa/payments",
            "spiffe://cluster.local/ns/shop/sa/payments.v2",
            "spiffe://elsewhere/ns/shop/sa/payments",
            "spiffe://cluster.local/ns/sh.op/sa/payments",
            "spiffe://cluster.local/ns/shop/sa/1234",
            "spiffe://cluster.local/ns/shop/sa/pay_ments",
            "spiffe://cluster.local/ns/shop/sa/-payments",
            "spiffe://cluster.local/ns/shop",
            "payments.shop",
            "",
            &long,
        ] {
            // Twice: the second answer is a remembered one.
            for _ in 0..2 {
                assert_eq!(id.can_name(peer), id.server_name(peer).is_some(), "{peer}");
            }
        }
        assert!(id.can_name("spiffe://cluster.local/ns/shop/sa/payments"));
    }

    #[test]
    fn config_shows_identity_and_bundle_never_the_key() {
        let (ca, next) = (TestCa::new("mesh"), TestCa::new("next mesh"));
        let id = ca.identity(ORDERS, &[ca.pem()]);
        let shown = id.describe();
        assert_eq!(shown["id"], ORDERS);
        assert_eq!(shown["renewals"], 0);
        assert!(
            shown["not_after"].as_str().unwrap().ends_with('Z'),
            "{shown}"
        );
        assert_eq!(shown["trust_bundle"][0]["subject"], "CN=mesh");
        assert!(!shown.to_string().contains("PRIVATE"), "{shown}");
        // A rotation: old and new trusted together; a damaged bundle changes nothing.
        id.set_trust_bundle(&[ca.pem(), next.pem()]);
        assert_eq!(id.describe()["trust_bundle"].as_array().unwrap().len(), 2);
        id.set_trust_bundle(&[ca.pem(), "-----BEGIN CERTIFICATE-----\nAAAA\n".into()]);
        id.set_trust_bundle(&[]);
        assert_eq!(id.describe()["trust_bundle"].as_array().unwrap().len(), 2);
        // A renewal swaps the certificate and counts.
        let (chain, key) = ca.issue(ORDERS);
        id.install(Issued::new(&chain, &key, unix_now()).unwrap(), &[])
            .unwrap();
        assert_eq!(id.describe()["renewals"], 1);
        assert_ne!(id.describe()["serial"], shown["serial"]);
    }

    #[test]
    fn rfc3339_of_unix_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_000_000), "2026-11-30T00:53:20Z");
    }
}

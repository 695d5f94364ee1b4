//! The instances registered by live streams, keyed by instance id.

use std::collections::HashMap;
use std::sync::Arc;

use graylane_proto::v1::Hello;
use tokio::sync::oneshot;

use super::scope::Scope;

/// Identifies one registration: the instance id plus the stream's session number, so a
/// stream that was replaced cannot deregister its successor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarId {
    pub instance_id: String,
    session: u64,
}

/// Certificates remembered for `graylane status` (instance id → identity, expiry). A
/// sidecar token holder could make up instance ids: past this many, expired entries
/// go first, then the soonest to expire.
const MAX_CERTS: usize = 65_536;

/// What the control plane knows about one connected sidecar.
#[derive(Clone, Debug)]
pub struct SidecarEntry {
    pub hello: Hello,
    /// The SPIFFE id decided from its credential; empty when none could be (an
    /// unbound sidecar whose namespace or service account is not a valid name).
    pub identity: String,
    /// Expiry (Unix seconds) of the last certificate issued to this instance for
    /// this identity; 0: none.
    pub cert_not_after: i64,
    pub connected_at_ms: i64,
    pub acked_version: u64,
    /// Rule revision of the last acked snapshot (0: none acked yet).
    pub acked_revision: u64,
    /// The rule revision and reason of the last NACK, cleared by the next ACK.
    pub nack: Option<(u64, String)>,
    /// Its stream's endpoint scope (`Hub::set_scope`), for listings.
    pub scope: ListedScope,
}

/// The most services of one scope a listing names (it counts them all): 10,000
/// sidecars at the scope limit would otherwise make `graylane status` gigabytes.
pub const LISTED_SCOPE: usize = 100;

/// A stream's endpoint scope as listings show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ListedScope {
    /// Not known: the record of an older replica, or a stream that has not said yet.
    #[default]
    Unknown,
    /// Every endpoint of the mesh.
    All,
    /// `len` services; `first` holds up to `LISTED_SCOPE` of them, sorted by
    /// namespace then service (shared: listings clone entries).
    Scoped {
        len: usize,
        first: Arc<[(String, String)]>,
    },
}

impl ListedScope {
    /// What `scope` sends endpoints of, as listed.
    pub fn of(scope: &Scope) -> Self {
        match scope.size() {
            None => Self::All,
            Some(len) => Self::Scoped {
                len,
                first: scope
                    .services()
                    .into_iter()
                    .take(LISTED_SCOPE)
                    .map(|(ns, svc)| (ns.to_string(), svc.to_string()))
                    .collect(),
            },
        }
    }
}

#[derive(Default)]
pub(super) struct Registry {
    next_session: u64,
    entries: HashMap<String, (u64, SidecarEntry, oneshot::Sender<()>)>,
    /// The last certificate issued per instance id, kept across reconnects.
    certs: HashMap<String, (String, i64)>,
}

/// An older sidecar (or registry record) has no namespace or service account: it runs
/// in `default`, as the service's own account (the sidecar flags' defaults).
pub fn with_identity_defaults(mut hello: Hello) -> Hello {
    if hello.namespace.is_empty() {
        hello.namespace = "default".to_string();
    }
    if hello.service_account.is_empty() {
        hello.service_account.clone_from(&hello.service);
    }
    hello
}

impl Registry {
    pub(super) fn insert(
        &mut self,
        hello: Hello,
        identity: String,
        now_ms: i64,
    ) -> (SidecarId, oneshot::Receiver<()>) {
        self.next_session += 1;
        let session = self.next_session;
        let (kick, kicked) = oneshot::channel();
        let instance_id = hello.instance_id.clone();
        let cert_not_after = match self.certs.get(&instance_id) {
            Some((issued_to, not_after)) if *issued_to == identity => *not_after,
            _ => 0,
        };
        let entry = SidecarEntry {
            hello,
            identity,
            cert_not_after,
            connected_at_ms: now_ms,
            acked_version: 0,
            acked_revision: 0,
            nack: None,
            scope: ListedScope::Unknown,
        };
        let address = entry.hello.address.clone();
        if let Some((_, old, old_kick)) = self
            .entries
            .insert(instance_id.clone(), (session, entry, kick))
        {
            // A sidecar reconnecting says the same address; another one claiming the
            // id is a misconfiguration that makes the two replace each other on every
            // reconnect, flipping routing between two apps: said, a line a second.
            if old.hello.address != address {
                static CLAIMED: graylane_exposition::Sampled =
                    graylane_exposition::Sampled::new(std::time::Duration::from_secs(1));
                if let Some(not_logged) = CLAIMED.sample() {
                    tracing::warn!(
                        instance = %instance_id,
                        old = %old.hello.address,
                        new = %address,
                        not_logged,
                        "two sidecars claim one --instance-id: the newer stream replaces the older; give each its own"
                    );
                }
            }
            // The old stream may already be gone; then nobody listens and that is fine.
            let _ = old_kick.send(());
        }
        (
            SidecarId {
                instance_id,
                session,
            },
            kicked,
        )
    }

    /// The live registration of `instance_id`, if any.
    pub(super) fn live(&self, instance_id: &str) -> Option<&SidecarEntry> {
        self.entries.get(instance_id).map(|(_, entry, _)| entry)
    }

    /// True when `id` was still the live registration and is now removed.
    pub(super) fn remove(&mut self, id: &SidecarId) -> bool {
        match self.entries.get(&id.instance_id) {
            Some((session, _, _)) if *session == id.session => {
                self.entries.remove(&id.instance_id);
                true
            }
            _ => false,
        }
    }

    pub(super) fn update(&mut self, id: &SidecarId, f: impl FnOnce(&mut SidecarEntry)) {
        if let Some((session, entry, _)) = self.entries.get_mut(&id.instance_id)
            && *session == id.session
        {
            f(entry);
        }
    }

    /// Records a certificate issued for `identity` to `instance_id`; shown for the
    /// instance while its registered identity is that one.
    pub(super) fn record_certificate(
        &mut self,
        instance_id: &str,
        identity: &str,
        not_after: i64,
        now_secs: i64,
    ) {
        if self.certs.len() >= MAX_CERTS && !self.certs.contains_key(instance_id) {
            self.certs.retain(|_, (_, t)| *t > now_secs);
            if self.certs.len() >= MAX_CERTS
                && let Some(soonest) = self
                    .certs
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(k, _)| k.clone())
            {
                self.certs.remove(&soonest);
            }
        }
        self.certs
            .insert(instance_id.to_string(), (identity.to_string(), not_after));
        if let Some((_, entry, _)) = self.entries.get_mut(instance_id)
            && entry.identity == identity
        {
            entry.cert_not_after = not_after;
        }
    }

    /// Whether this replica issued `instance_id` a certificate for `identity`.
    pub(super) fn issued(&self, instance_id: &str, identity: &str) -> bool {
        self.certs
            .get(instance_id)
            .is_some_and(|(issued_to, _)| issued_to == identity)
    }

    pub(super) fn entries(&self) -> impl Iterator<Item = &SidecarEntry> {
        self.entries.values().map(|(_, e, _)| e)
    }
}

#[cfg(test)]
mod tests {
    use graylane_proto::v1::Hello;

    use super::{MAX_CERTS, Registry};

    fn hello(instance: &str) -> Hello {
        Hello {
            service: "orders".into(),
            instance_id: instance.into(),
            ..Hello::default()
        }
    }

    const ORDERS: &str = "spiffe://cluster.local/ns/default/sa/orders";

    #[test]
    fn a_certificate_shows_only_for_the_identity_it_was_issued_to() {
        let mut registry = Registry::default();
        let (_id, _kicked) = registry.insert(hello("a"), ORDERS.into(), 0);
        registry.record_certificate("a", ORDERS, 1_000, 0);
        registry.record_certificate("a", "spiffe://cluster.local/ns/x/sa/y", 2_000, 0);
        let expiry = |r: &Registry, id: &str| {
            r.entries()
                .find(|e| e.hello.instance_id == id)
                .map(|e| e.cert_not_after)
        };
        assert_eq!(expiry(&registry, "a"), Some(1_000));
        // Issued before the stream opened (the sidecar's order): shown once it does,
        // and kept across a reconnect.
        registry.record_certificate("b", ORDERS, 3_000, 0);
        let (b, _kicked) = registry.insert(hello("b"), ORDERS.into(), 0);
        assert_eq!(expiry(&registry, "b"), Some(3_000));
        assert!(registry.remove(&b));
        let (_b, _kicked) = registry.insert(hello("b"), ORDERS.into(), 0);
        assert_eq!(expiry(&registry, "b"), Some(3_000));
        // Reconnected as another identity: that certificate is not its own.
        let (_b, _kicked) =
            registry.insert(hello("b"), "spiffe://cluster.local/ns/x/sa/y".into(), 0);
        assert_eq!(expiry(&registry, "b"), Some(0));
    }

    #[test]
    fn made_up_instance_ids_cannot_grow_the_certificate_map_without_bound() {
        let mut registry = Registry::default();
        for i in 0..MAX_CERTS + 10 {
            let t = i64::try_from(i).unwrap();
            registry.record_certificate(&format!("i{i}"), ORDERS, 1_000 + t, 0);
        }
        assert_eq!(registry.certs.len(), MAX_CERTS);
        // The soonest to expire went first.
        assert!(!registry.certs.contains_key("i0"));
        assert!(registry.certs.contains_key(&format!("i{}", MAX_CERTS + 9)));
    }
}

//! The instances registered by live streams, keyed by instance id.

use std::collections::HashMap;

use graylane_proto::v1::Hello;
use tokio::sync::oneshot;

/// Identifies one registration: the instance id plus the stream's session number, so a
/// stream that was replaced cannot deregister its successor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarId {
    pub instance_id: String,
    session: u64,
}

/// What the control plane knows about one connected sidecar.
#[derive(Clone, Debug)]
pub struct SidecarEntry {
    pub hello: Hello,
    pub connected_at_ms: i64,
    pub acked_version: u64,
    /// Rule revision of the last acked snapshot (0: none acked yet).
    pub acked_revision: u64,
    /// The rule revision and reason of the last NACK, cleared by the next ACK.
    pub nack: Option<(u64, String)>,
}

#[derive(Default)]
pub(super) struct Registry {
    next_session: u64,
    entries: HashMap<String, (u64, SidecarEntry, oneshot::Sender<()>)>,
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
        now_ms: i64,
    ) -> (SidecarId, oneshot::Receiver<()>) {
        self.next_session += 1;
        let session = self.next_session;
        let (kick, kicked) = oneshot::channel();
        let instance_id = hello.instance_id.clone();
        let entry = SidecarEntry {
            hello,
            connected_at_ms: now_ms,
            acked_version: 0,
            acked_revision: 0,
            nack: None,
        };
        if let Some((_, _, old_kick)) = self
            .entries
            .insert(instance_id.clone(), (session, entry, kick))
        {
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

    pub(super) fn entries(&self) -> impl Iterator<Item = &SidecarEntry> {
        self.entries.values().map(|(_, e, _)| e)
    }
}

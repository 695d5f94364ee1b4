//! PeerPolicy modes, compiled once per rule set: the sidecar asks for a service's mode
//! on every connection and every request, so the answer is a map lookup, not a walk
//! over every resource of the set.

use super::scoped::Scoped;
use crate::model::{Kind, MtlsMode, Resource};
use crate::set::RuleSet;

/// The mTLS mode of every service a PeerPolicy names, and the mesh-wide one.
#[derive(Debug, Default)]
pub(crate) struct PeerModes {
    named: Scoped<MtlsMode>,
    /// The mesh-wide policy's (no `services`); `permissive` without one.
    mesh_wide: MtlsMode,
}

impl PeerModes {
    /// A policy naming a service wins over the mesh-wide one. In an unchecked set
    /// with several candidates, the first by namespace and name wins.
    pub(crate) fn compile(rules: &RuleSet) -> Self {
        let mut named = Scoped::default();
        let mut mesh_wide = None;
        for r in rules.of_kind(Kind::PeerPolicy) {
            let Resource::PeerPolicy(p) = r else { continue };
            let own = p.metadata.namespace();
            match &p.spec.services {
                None => {
                    mesh_wide.get_or_insert(p.spec.mtls);
                }
                Some(services) => {
                    for s in services {
                        let (namespace, service) = s.resolve(own);
                        named.get_or_insert_with(namespace, service, || p.spec.mtls);
                    }
                }
            }
        }
        Self {
            named,
            mesh_wide: mesh_wide.unwrap_or_default(),
        }
    }

    pub(crate) fn get(&self, namespace: &str, service: &str) -> MtlsMode {
        self.named
            .get(namespace, service)
            .copied()
            .unwrap_or(self.mesh_wide)
    }
}

impl super::RoutingTable {
    /// The PeerPolicy mode of `service` of `namespace` (security.md): the naming
    /// policy's, else the mesh-wide one's, else `permissive`. A lookup.
    pub fn mtls_mode(&self, namespace: &str, service: &str) -> MtlsMode {
        self.compiled.peer_modes.get(namespace, service)
    }
}

//! Which hosts name a mesh service (sidecar.md): `orders` in the caller's own
//! namespace; `orders.shop`, `orders.shop.svc` and `orders.shop.svc.<cluster-domain>`
//! in namespace `shop`. Every other host — `payments.stripe.com`, an IP address,
//! `localhost` — is not a mesh service, whatever its first label, so an external call
//! is never answered by an internal service that happens to share that label.

use crate::model::is_dns_label;

/// A host that names a mesh service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshHost {
    /// The service name (lowercase).
    pub service: String,
    /// The namespace the host names, `None` for the caller's own (a bare `orders`).
    pub namespace: Option<String>,
    /// Named with `.svc` (`orders.shop.svc[.<cluster-domain>]`): no host outside the
    /// mesh is written so, while `orders.shop` may be one (`.shop` is a public TLD).
    pub svc: bool,
}

impl MeshHost {
    /// Reads `host` (no port; a trailing dot allowed; any case). `cluster_domain` is
    /// the sidecar's `--cluster-domain` (`cluster.local`). `None`: not a mesh name.
    pub fn parse(host: &str, cluster_domain: &str) -> Option<MeshHost> {
        // Every outbound request comes through here: no allocation but the result's,
        // and a lower-case copy only for a host that has upper case.
        let host = host.strip_suffix('.').unwrap_or(host);
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        if !host.split('.').all(is_dns_label) {
            return None;
        }
        // RFC 6761: `localhost` and `*.localhost` are this machine, never a service.
        if host == "localhost" || host.ends_with(".localhost") {
            return None;
        }
        let domain = cluster_domain.strip_suffix('.').unwrap_or(cluster_domain);
        let mut labels = host.splitn(4, '.');
        let service = labels.next()?;
        let namespace = labels.next();
        let third = labels.next();
        let in_domain = match (third, labels.next()) {
            (None, _) | (Some("svc"), None) => true,
            (Some("svc"), Some(rest)) => !domain.is_empty() && rest.eq_ignore_ascii_case(domain),
            _ => false,
        };
        // A name made only of digits is no service name (and `1.2` is no namespace).
        if !in_domain || service.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(MeshHost {
            service: service.to_string(),
            namespace: namespace.map(str::to_string),
            svc: third.is_some(),
        })
    }

    /// The (namespace, service) the host names for a caller in namespace `own`: the
    /// bare form is the caller's own namespace.
    pub fn target<'a>(&'a self, own: &'a str) -> (&'a str, &'a str) {
        (self.namespace.as_deref().unwrap_or(own), &self.service)
    }

    /// The service, when the host names one in `namespace` (the caller's own).
    pub fn in_namespace(&self, namespace: &str) -> Option<&str> {
        match &self.namespace {
            Some(ns) if ns != namespace => None,
            _ => Some(&self.service),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(host: &str) -> Option<String> {
        MeshHost::parse(host, "cluster.local")?
            .in_namespace("default")
            .map(str::to_string)
    }

    #[test]
    fn the_mesh_forms_name_a_service() {
        for host in [
            "orders",
            "Orders",
            "orders.default",
            "orders.default.svc",
            "orders.default.svc.cluster.local",
            "orders.default.svc.cluster.local.",
        ] {
            assert_eq!(service(host).as_deref(), Some("orders"), "{host}");
        }
    }

    #[test]
    fn external_hosts_are_never_mesh_services() {
        for host in [
            "payments.stripe.com",
            "payments.default.svc.example.com",
            "payments.default.pod.cluster.local",
            "payments.default.cluster.local",
            "localhost",
            "orders.localhost",
            "127.0.0.1",
            "10.0.0.7",
            "[::1]",
            "::1",
            "",
            ".",
            "orders..default",
            "-orders",
            "ord_ers",
            "évil",
        ] {
            assert_eq!(service(host), None, "{host:?}");
        }
    }

    #[test]
    fn another_namespace_is_not_this_one() {
        let host = MeshHost::parse("orders.shop.svc.cluster.local", "cluster.local").unwrap();
        assert_eq!(host.namespace.as_deref(), Some("shop"));
        assert_eq!(host.in_namespace("default"), None);
        assert_eq!(host.in_namespace("shop"), Some("orders"));
    }

    #[test]
    fn each_form_names_its_namespace_and_the_bare_form_the_callers() {
        for (host, want) in [
            ("orders", ("shop", "orders")),
            ("orders.staging", ("staging", "orders")),
            ("orders.staging.svc", ("staging", "orders")),
            ("orders.staging.svc.cluster.local", ("staging", "orders")),
        ] {
            let parsed = MeshHost::parse(host, "cluster.local").unwrap();
            assert_eq!(parsed.target("shop"), want, "{host}");
            // Only a `.svc` form is certainly the mesh's: `orders.staging` may be a
            // host of a TLD `staging`.
            assert_eq!(parsed.svc, host.contains(".svc"), "{host}");
        }
    }

    #[test]
    fn the_cluster_domain_is_configurable() {
        let host = MeshHost::parse("orders.shop.svc.corp.internal", "corp.internal").unwrap();
        assert_eq!(host.in_namespace("shop"), Some("orders"));
        assert_eq!(
            MeshHost::parse("orders.shop.svc.cluster.local", "corp.internal"),
            None
        );
    }
}

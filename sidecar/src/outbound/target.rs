//! Where an app's request is going: a mesh service (routed), or a host outside the
//! mesh (sent where the app asked) — and whether going there would loop.
//!
//! Only the mesh forms of sidecar.md name a service ([`MeshHost`]): the destination
//! of `http://payments.stripe.com/` is `payments.stripe.com`, never the mesh's own
//! `payments`. `orders` is `orders` of the caller's namespace; `orders.staging`,
//! `orders.staging.svc` and `orders.staging.svc.<cluster-domain>` are `orders` of
//! `staging`.

use std::net::{IpAddr, SocketAddr};

use graylane_routing::MeshHost;
use http::header;
use http::request::Parts;

use crate::proxy::ProxyError;
use crate::routes::Routes;

/// The destination of a request leaving an app.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A mesh service.
    Service(Dest),
    /// Anything else: a host name or address, and the port the app asked for.
    External { host: String, port: u16 },
}

/// A mesh service a host names, and the host itself.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Dest {
    /// The namespace: the host's, else the caller's own.
    pub(crate) namespace: String,
    pub(crate) service: String,
    /// Set when the host named a namespace without `.svc` (`orders.staging`): when
    /// the mesh knows no such namespace, it is an ordinary host (`api.corp`), sent as
    /// `External` is.
    pub(crate) external: Option<(String, u16)>,
}

impl Dest {
    /// Where a request to this service goes when the mesh has no such service: the
    /// host itself (`api.corp`) when it named a namespace the mesh does not have;
    /// `None` when it is the mesh's and unknown (a 502, not the Internet's
    /// `orders.shop` for a service scaled to zero). `own`: the caller's namespace.
    pub(crate) fn outside(&self, own: &str, routes: &Routes) -> Option<(String, u16)> {
        let (host, port) = self.external.as_ref()?;
        let mesh = self.namespace == own || routes.knows_namespace(&self.namespace);
        (!mesh).then(|| (host.clone(), *port))
    }
}

/// Reads the destination: the authority of an absolute-form (or CONNECT, or HTTP/2)
/// request target, else the `Host` header.
pub(crate) fn target(
    parts: &Parts,
    namespace: &str,
    cluster_domain: &str,
) -> Result<Target, ProxyError> {
    let (host, port) = match parts.uri.authority() {
        Some(authority) => host_port(authority)?,
        None => {
            let value = parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .ok_or_else(|| {
                    ProxyError::BadRequest(
                        "no destination: use an absolute URI or a Host header".into(),
                    )
                })?;
            let authority: http::uri::Authority = value.parse().map_err(|_| {
                ProxyError::BadRequest(format!("Host {value:?} is not a host[:port]"))
            })?;
            host_port(&authority)?
        }
    };
    if host.is_empty() {
        return Err(ProxyError::BadRequest(
            "the destination host is empty".into(),
        ));
    }
    let https = parts.uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let port = port.unwrap_or(if https { 443 } else { 80 });
    if let Some(mesh) = MeshHost::parse(&host, cluster_domain) {
        let (ns, service) = mesh.target(namespace);
        return Ok(Target::Service(Dest {
            namespace: ns.to_string(),
            service: service.to_string(),
            external: (mesh.namespace.is_some() && !mesh.svc).then(|| (host.clone(), port)),
        }));
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(Target::External { host, port })
}

/// The hop count of a request arriving at the outbound listener; 508 at the limit.
/// The host and port of an authority. A port that is not a number (`orders:nope`) is
/// refused: the `http` crate parses such an authority and only drops the port, which
/// would send the request to port 80 of a service the client did not name that way.
fn host_port(authority: &http::uri::Authority) -> Result<(String, Option<u16>), ProxyError> {
    let port = authority.port_u16();
    // What follows the host (`:nope`); `port()` is `None` for a port that does not
    // parse, so the text itself is read. A bare `:` is an empty port: the default.
    let at = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, h)| h);
    let after = at.get(authority.host().len()..).unwrap_or_default();
    if after.len() > 1 && port.is_none() {
        return Err(ProxyError::BadRequest(format!(
            "{:?} is not a host[:port]: the port is not a number from 0 to 65535",
            authority.as_str()
        )));
    }
    Ok((authority.host().to_string(), port))
}

/// Resolves an external host (a blocking `getaddrinfo` off the runtime threads) and
/// refuses one that is this sidecar's own outbound or admin listener: the request
/// would come straight back in.
pub(crate) async fn resolve(
    host: &str,
    port: u16,
    own: &[SocketAddr],
) -> Result<Vec<SocketAddr>, ProxyError> {
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ProxyError::Unresolved {
                host: host.to_string(),
                reason: e.to_string(),
            })?
            .collect(),
    };
    if let Some(a) = addresses.iter().find(|a| is_own(a, own)) {
        return Err(ProxyError::Loop(format!(
            "{host}:{port} ({a}) is this sidecar's own listener"
        )));
    }
    if addresses.is_empty() {
        return Err(ProxyError::Unresolved {
            host: host.to_string(),
            reason: "no address".into(),
        });
    }
    Ok(addresses)
}

/// Whether an instance's `host:port` (as it registered) is one of `own` listeners:
/// asked only once a connection to it failed (an outbound listener speaks no TLS), so
/// the request path never parses addresses. A host name is not looked up: false.
pub(super) fn is_own_instance(address: &str, own: &[SocketAddr]) -> bool {
    address.parse::<SocketAddr>().is_ok_and(|a| is_own(&a, own))
}

/// Whether `address` reaches one of `own` listeners: the same address, or any
/// loopback one for a listener on all addresses. (`127.0.0.2` does not reach a
/// listener on `127.0.0.1`: a dead instance there is refused, not a loop.) A connect
/// to `0.0.0.0` reaches this host's listeners.
fn is_own(address: &SocketAddr, own: &[SocketAddr]) -> bool {
    own.iter().any(|l| {
        l.port() == address.port()
            && (l.ip() == address.ip()
                || address.ip().is_unspecified()
                || l.ip().is_unspecified() && address.ip().is_loopback())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, host: Option<&str>) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn of(uri: &str, host: Option<&str>) -> Target {
        target(&parts(uri, host), "default", "cluster.local").unwrap()
    }

    fn service(namespace: &str, service: &str, external: Option<(&str, u16)>) -> Target {
        Target::Service(Dest {
            namespace: namespace.into(),
            service: service.into(),
            external: external.map(|(h, p)| (h.into(), p)),
        })
    }

    #[test]
    fn only_mesh_forms_are_services() {
        assert_eq!(
            of("/", Some("orders:8080")),
            service("default", "orders", None)
        );
        // A `.svc` name is the mesh's whatever it holds: never sent outside.
        assert_eq!(
            of("http://orders.default.svc.cluster.local/x", None),
            service("default", "orders", None)
        );
        assert_eq!(
            of("http://payments.stripe.com/v1/charges", None),
            Target::External {
                host: "payments.stripe.com".into(),
                port: 80
            }
        );
        assert_eq!(
            of("/", Some("payments.stripe.com")),
            Target::External {
                host: "payments.stripe.com".into(),
                port: 80
            }
        );
        assert_eq!(
            of("https://api.example.com/", None),
            Target::External {
                host: "api.example.com".into(),
                port: 443
            }
        );
        assert_eq!(
            of("/", Some("[::1]:9000")),
            Target::External {
                host: "::1".into(),
                port: 9000
            }
        );
    }

    #[test]
    fn each_mesh_form_names_its_namespace_and_the_bare_one_the_callers() {
        let of_shop = |host: &str| target(&parts("/", Some(host)), "shop", "cluster.local");
        assert_eq!(
            of_shop("orders:8080").unwrap(),
            service("shop", "orders", None)
        );
        // `orders.staging` may be a host of a TLD `staging` (when the mesh has no
        // such namespace); the `.svc` forms are the mesh's.
        assert_eq!(
            of_shop("orders.staging").unwrap(),
            service("staging", "orders", Some(("orders.staging", 80)))
        );
        for host in ["orders.staging.svc", "orders.staging.svc.cluster.local"] {
            assert_eq!(
                of_shop(host).unwrap(),
                service("staging", "orders", None),
                "{host}"
            );
        }
        assert!(matches!(
            of_shop("orders.staging.svc.example.com").unwrap(),
            Target::External { .. }
        ));
    }

    #[test]
    fn a_bad_host_is_a_bad_request() {
        let e = target(&parts("/", Some("a b")), "default", "cluster.local").unwrap_err();
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        let e = target(&parts("/", None), "default", "cluster.local").unwrap_err();
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        for host in ["orders:nope", "orders:99999", "orders:-1"] {
            let e = target(&parts("/", Some(host)), "default", "cluster.local").unwrap_err();
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{host}");
        }
        let e = target(&parts("http://orders:x/", None), "default", "cluster.local");
        assert!(e.is_err(), "an absolute URI with a bad port");
    }

    #[test]
    fn own_listeners_are_recognised() {
        let own: Vec<SocketAddr> = vec![
            "127.0.0.1:15001".parse().unwrap(),
            "0.0.0.0:15000".parse().unwrap(),
        ];
        assert!(is_own(&"127.0.0.1:15001".parse().unwrap(), &own));
        assert!(is_own(&"127.0.0.2:15000".parse().unwrap(), &own));
        assert!(is_own(&"0.0.0.0:15001".parse().unwrap(), &own));
        assert!(!is_own(&"127.0.0.2:15001".parse().unwrap(), &own));
        assert!(!is_own(&"127.0.0.1:15006".parse().unwrap(), &own));
        assert!(!is_own(&"10.0.0.7:15001".parse().unwrap(), &own));
    }
}

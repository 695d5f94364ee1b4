//! `CONNECT host:port` through the explicit proxy: what an app with `HTTPS_PROXY` set
//! sends for every TLS call. The bytes are tunnelled as they are — to an instance of
//! the service (its inbound listener hands non-HTTP bytes to the app) when the host is
//! a mesh name, else to the host itself. The sidecar cannot see inside TLS, so a
//! tunnelled call is routed by its service only: lanes need the request in the clear.

use std::sync::Arc;
use std::time::Instant;

use graylane_routing::{RouteError, Tag};
use http::request::Parts;
use http::{Response, StatusCode};
use tokio::net::TcpStream;

use super::target::{self, Dest, Target};
use super::{Outbound, View};
use crate::balance::InFlight;
use crate::proxy::upgrade::Downstream;
use crate::proxy::{self, Body, ProxyError};
use crate::routes::Routes;

impl Outbound {
    /// Connects to the target, answers 200, then joins the two connections in the
    /// background. Failing to connect is a 502 and no tunnel. A mesh service whose
    /// endpoints a scoped sidecar does not hold yet is asked for first, as a plain
    /// request's is (`discovery::ensure`); a host the directory does not name is
    /// tunnelled at once.
    pub(super) async fn connect(
        &self,
        mut parts: Parts,
        target: Target,
        routes: Arc<Routes>,
        tag: Option<&Tag>,
    ) -> Result<Response<Body>, ProxyError> {
        // The server hands every CONNECT it accepts its connection (HTTP/1.1) or
        // stream (HTTP/2) to take over: without one, the server was set up wrongly,
        // not the request.
        let downstream = Downstream::take(&mut parts).ok_or_else(|| {
            ProxyError::Internal("CONNECT without a connection to take over".into())
        })?;
        let (service, address, in_flight) = match target {
            Target::External { host, port } => self.host(host, port).await?,
            Target::Service(dest) => {
                let routes =
                    crate::discovery::ensure(&self.routes, routes, &dest.namespace, &dest.service)
                        .await;
                match self.instance(&parts, &dest, &routes, tag) {
                    Err(Unrouted::Unknown(why)) => match dest.outside(&self.namespace, &routes) {
                        // `api.corp:443`, and no namespace `corp` in the mesh: an
                        // ordinary host, as for a plain request.
                        Some((host, port)) => self.host(host, port).await?,
                        None => return Err(why.into()),
                    },
                    Err(Unrouted::Failed(e)) => return Err(e),
                    Ok(picked) => picked,
                }
            }
        };
        let upstream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&address)).await {
                Ok(Ok(upstream)) => upstream,
                Ok(Err(e)) => return Err(connect_failed(&service, &address, &e.to_string())),
                Err(_) => return Err(connect_failed(&service, &address, "connect timed out")),
            };
        let _ = upstream.set_nodelay(true);
        tokio::spawn(async move {
            let _in_flight = in_flight;
            downstream.join(upstream).await;
        });
        let mut response = Response::new(proxy::empty());
        *response.status_mut() = StatusCode::OK;
        Ok(response)
    }

    /// A host outside the mesh: its own address (never this sidecar's listeners).
    async fn host(&self, host: String, port: u16) -> Result<Tunnel, ProxyError> {
        let to = target::resolve(&host, port, &self.own_listeners).await?;
        Ok((host, to[0].to_string(), None))
    }

    /// An instance of the mesh service `dest`, routed by its service only (a tunnel
    /// shows no request to match lanes on beyond the tag).
    fn instance(
        &self,
        parts: &Parts,
        dest: &Dest,
        routes: &Routes,
        tag: Option<&Tag>,
    ) -> Result<Tunnel, Unrouted> {
        let view = View {
            parts,
            source_ip: None,
        };
        let route = match routes.table.route(
            &dest.namespace,
            &dest.service,
            tag,
            &view,
            fastrand::u64(..),
        ) {
            Err(why @ RouteError::UnknownService { .. }) => return Err(Unrouted::Unknown(why)),
            route => route.map_err(|e| Unrouted::Failed(e.into()))?,
        };
        let service = dest.service.clone();
        let mut rng = fastrand::Rng::new();
        let (instance, in_flight) = self
            .balancer
            .pick(route.candidates, None, &mut rng, Instant::now())
            .ok_or_else(|| {
                Unrouted::Failed(ProxyError::NoInstance(format!(
                    "no ready instance of service {service}"
                )))
            })?;
        // A tunnel carries the app's own TLS, never the mesh's: a strict instance
        // would refuse it (not a mesh SNI), so it is refused here, where the app can
        // be told why.
        let mode = proxy::mtls_mode(Some(routes), &instance.namespace, &instance.service);
        if mode == graylane_routing::MtlsMode::Strict {
            return Err(Unrouted::Failed(ProxyError::MtlsRequired {
                service,
                instance: instance.id.clone(),
                reason: "strict mTLS: a CONNECT tunnel cannot carry a mesh identity \
                         (call the service over HTTP through the sidecar, or make \
                         its PeerPolicy permissive)"
                    .into(),
            }));
        }
        Ok((service, instance.address.clone(), Some(in_flight)))
    }
}

/// Where a tunnel goes: the name it is labelled by, the address, and the instance's
/// in-flight guard (mesh instances only).
type Tunnel = (String, String, Option<InFlight>);

/// Why `instance` picked none.
enum Unrouted {
    /// The table knows no such service.
    Unknown(RouteError),
    Failed(ProxyError),
}

fn connect_failed(service: &str, address: &str, reason: &str) -> ProxyError {
    ProxyError::Connect {
        service: service.to_string(),
        instance: address.to_string(),
        address: address.to_string(),
        reason: reason.to_string(),
    }
}

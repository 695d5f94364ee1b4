//! Wiring: the gRPC server (Discovery + Admin behind auth), the HTTP probe server and
//! the store → hub feed, all stopped by one shutdown signal.
//!
//! Takes already-bound listeners (tests bind port 0 and read the address back).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use graylane_proto::v1::admin_server::AdminServer;
use graylane_proto::v1::discovery_server::DiscoveryServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

use crate::admin::AdminCore;
use crate::api::{AdminService, Auth, DiscoveryService, Identities, Role, Tokens};
use crate::cluster::Cluster;
use crate::control::Control;
use crate::push::{ENDPOINT_DEBOUNCE, Hub};
use crate::rollout::Rollouts;
use crate::store::Store;
use crate::tls::GrpcTls;
use crate::traces::{Collector, Traces};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;

/// Everything the server needs besides its listeners.
pub struct Server {
    pub store: Box<dyn Store>,
    /// `None`: no token required (the binary then binds loopback only).
    pub tokens: Option<Tokens>,
    /// With the etcd store: the instance registry shared with the other replicas.
    pub cluster: Option<Arc<Cluster>>,
    /// The admission webhook's listener, TLS and injection settings.
    pub webhook: Option<(
        TcpListener,
        tokio_rustls::TlsAcceptor,
        Arc<crate::inject::Config>,
    )>,
    /// gRPC over TLS (`--grpc-tls`, `--grpc-tls-cert`); `None`: plaintext.
    pub grpc_tls: Option<GrpcTls>,
    /// The mesh CA (its certificate served at `/ca.pem`), the trust domain and the
    /// certificate lifetime; a CA not given is loaded from the store once it answers.
    pub identities: Arc<Identities>,
    /// `GET /api/v1/traffic` (issue 13's traffic reports); `None`: the route is 404.
    pub traffic: Option<crate::http::TrafficHandler>,
    /// The HTTP API's and the webhook's limits (`--header-read-timeout`,
    /// `--tls-handshake-timeout`, `--max-connections`).
    pub limits: graylane_serve::Limits,
}

use crate::api::MAX_MESSAGE;

impl Server {
    /// Serves until `shutdown` completes, then ends every sidecar stream with
    /// UNAVAILABLE (so sidecars move to another replica) and returns.
    pub async fn run(
        self,
        grpc: TcpListener,
        http: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let hub = Arc::new(Hub::new());
        let control = Arc::new(Control::new(self.store, Arc::clone(&hub)));
        // Sender side of the shutdown fan-out: streams, the HTTP server and the store
        // feed each hold a receiver and end when it turns true.
        let (stop, stopped) = watch::channel(false);
        let tokens = self.tokens.map(Arc::new);
        let traces = Arc::new(Traces::default());
        let rollouts = Arc::new(Rollouts::new(Arc::clone(&control)));
        let core = Arc::new(AdminCore::new(
            Arc::clone(&control),
            Arc::clone(&traces),
            Arc::clone(&rollouts),
        ));
        let http_state = crate::http::HttpState {
            core: Arc::clone(&core),
            identities: Arc::clone(&self.identities),
            tokens: tokens.clone(),
            // The sidecars' reports on this replica's streams, unless the embedder
            // brings its own.
            traffic: self
                .traffic
                .or_else(|| Some(crate::traffic::handler(Arc::clone(&hub)))),
        };
        let probes = tokio::spawn(crate::http::serve(
            http,
            http_state,
            self.limits,
            stopped.clone(),
        ));

        // The revision in force, read before any stream gets a snapshot (streams wait
        // for it: `State::loaded`); with etcd down at start, read once it is back.
        // Meanwhile the admin API answers UNAVAILABLE and /ready 503.
        let feed = tokio::spawn(Arc::clone(&control).push_revisions(stopped.clone()));
        // Only the replica holding the store's leadership drives; the others wait.
        let holder = format!("pid {}", std::process::id());
        let driver = tokio::spawn(rollouts.run(holder, stopped.clone()));
        let endpoints =
            tokio::spawn(Arc::clone(&hub).publish_endpoints(ENDPOINT_DEBOUNCE, stopped.clone()));
        // With etcd: every replica's traffic reports, so any replica answers for all.
        let traffic = self.cluster.as_ref().map(|c| {
            tokio::spawn(Arc::new(c.traffic_replicas()).run(Arc::clone(&hub), stopped.clone()))
        });
        let cluster = self
            .cluster
            .map(|c| tokio::spawn(c.run(Arc::clone(&hub), stopped.clone())));
        let webhook = self.webhook.map(|(listener, tls, config)| {
            tokio::spawn(crate::webhook::serve(
                listener,
                tls,
                config,
                self.limits,
                stopped.clone(),
            ))
        });

        // The trust bundle goes out with the first snapshot when the CA is already
        // loaded; otherwise once the store hands it over.
        if let Some(bundle) = self.identities.trust_bundle() {
            hub.set_trust_bundle(bundle);
        }
        let ca = tokio::spawn(
            Arc::clone(&self.identities).load_ca(Arc::clone(&control), stopped.clone()),
        );
        let discovery =
            DiscoveryServer::new(DiscoveryService::new(hub, self.identities, stopped.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
        let collector = TraceServiceServer::new(Collector {
            traces: Arc::clone(&traces),
        })
        .max_decoding_message_size(crate::traces::MAX_EXPORT);
        let admin = AdminServer::new(AdminService::new(core))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut stopped_grpc = stopped.clone();
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down");
            let _ = stop.send(true);
            let _ = stopped_grpc.wait_for(|down| *down).await;
        };
        let router = tonic::transport::Server::builder()
            // Keep-alive pings find sidecars that vanished without closing their stream,
            // so their instance is deregistered instead of lingering.
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                discovery,
                Auth::new(tokens.clone(), Role::Sidecar),
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                admin,
                Auth::new(tokens.clone(), Role::Admin),
            ))
            // Sidecars export their spans here (OTLP/gRPC) with their own token.
            .add_service(tonic::service::interceptor::InterceptedService::new(
                collector,
                Auth::new(tokens, Role::Sidecar),
            ));
        match self.grpc_tls {
            // The TLS accept is ours, so that the certificate can be renewed live.
            Some(tls) => {
                let incoming = tls.incoming(grpc, stopped.clone())?;
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await?
            }
            // Snapshots and ACKs are small writes that must not wait for Nagle.
            None => {
                router
                    .serve_with_incoming_shutdown(
                        TcpIncoming::from(grpc).with_nodelay(Some(true)),
                        shutdown,
                    )
                    .await?
            }
        }
        let _ = feed.await;
        let _ = driver.await;
        let _ = ca.await;
        let _ = probes.await;
        let _ = endpoints.await;
        if let Some(traffic) = traffic {
            let _ = traffic.await;
        }
        if let Some(cluster) = cluster {
            let _ = cluster.await;
        }
        if let Some(webhook) = webhook {
            let _ = webhook.await;
        }
        Ok(())
    }
}

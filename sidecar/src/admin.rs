//! The admin listener: `/live`, `/ready`, `/metrics`, `/config`, and the gate API
//! (`/gates/self`, `?watch=1` to stream changes) for message consumers and jobs.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use graylane_exposition::Scrape;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::discovery::DiscoveryStatus;
use crate::gaps::Gaps;
use crate::health;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::routes::Shared;
use crate::spans::Tracer;

/// What the admin listener serves from.
pub(crate) struct Admin {
    pub(crate) service: String,
    /// This instance's namespace: the gate is that of (namespace, service).
    pub(crate) namespace: String,
    pub(crate) instance_id: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) routes: Shared,
    pub(crate) counters: Arc<DiscoveryStatus>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tracer: Arc<Tracer>,
    pub(crate) gaps: Arc<Gaps>,
    /// The workload certificate: `/config`'s `identity`, and `/ready`.
    pub(crate) identity: Arc<Identity>,
}

type Body = BoxBody<Bytes, Infallible>;

impl Admin {
    /// Serves until `shutdown` turns true, within `limits` (connection cap, header-read
    /// timeout, drain), through the one accept loop of every graylane listener.
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        limits: graylane_serve::Limits,
        shutdown: watch::Receiver<bool>,
    ) {
        let stop = shutdown.clone();
        graylane_serve::serve_http(listener, limits, None, Arc::new(()), shutdown, move |_| {
            let (admin, stop) = (Arc::clone(&self), stop.clone());
            hyper::service::service_fn(move |req| {
                let admin = Arc::clone(&admin);
                let stop = stop.clone();
                async move { Ok::<_, Infallible>(admin.respond(&req, stop)) }
            })
        })
        .await;
    }

    fn respond<B>(&self, req: &Request<B>, shutdown: watch::Receiver<bool>) -> Response<Body> {
        let mut response = self.answer(req, shutdown);
        health::allow_reads(&mut response);
        response
    }

    fn answer<B>(&self, req: &Request<B>, shutdown: watch::Receiver<bool>) -> Response<Body> {
        let watch = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=1"));
        match req.uri().path() {
            _ if health::forwarded(req) => {
                let (status, body) = health::looped("admin");
                text(status, body)
            }
            _ if !health::is_read(req) => {
                let (status, body) = health::not_a_read(req);
                text(status, body)
            }
            // The same answers as the health listener's: one definition of ready.
            "/live" => {
                let (status, body) = health::live();
                text(status, body)
            }
            "/ready" => {
                let (status, body) = health::ready(&self.routes, &self.identity);
                text(status, body)
            }
            "/metrics" => self.metrics(req.headers().get(header::ACCEPT)),
            "/config" => json_response(&self.config()),
            "/gates/self" if watch => self.watch_gate(shutdown),
            "/gates/self" => json_response(&self.gate()),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: /live /ready /metrics /config /gates/self\n".into(),
            ),
        }
    }

    /// sidecar.md "Gate API": lane of this instance, the service's release state, and
    /// whether background work should run here.
    fn gate(&self) -> serde_json::Value {
        let (lane, release, active) = match self.routes.load() {
            Some(r) => {
                let g = r.table.gate(&self.namespace, &self.service, &self.labels);
                (
                    g.lane.map(str::to_string),
                    Some(g.release.to_string()),
                    g.active,
                )
            }
            // No rules yet (none from the control plane, none cached): the release
            // state is unknown, and a consumer that started on a guess could run on
            // the version it must not (a base instance under `gray`). Closed until
            // known; `release` null says why.
            None => (None, None, false),
        };
        json!({"service": self.service, "instance": self.instance_id, "lane": lane, "release": release, "active": active})
    }

    /// One JSON line now and one whenever the answer changes.
    fn watch_gate(&self, mut shutdown: watch::Receiver<bool>) -> Response<Body> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let mut changes = self.routes.subscribe();
        let admin = Admin {
            service: self.service.clone(),
            namespace: self.namespace.clone(),
            instance_id: self.instance_id.clone(),
            labels: self.labels.clone(),
            routes: Arc::clone(&self.routes),
            counters: Arc::clone(&self.counters),
            metrics: Arc::clone(&self.metrics),
            tracer: Arc::clone(&self.tracer),
            gaps: Arc::clone(&self.gaps),
            identity: Arc::clone(&self.identity),
        };
        tokio::spawn(async move {
            let mut last = None;
            loop {
                changes.borrow_and_update();
                let gate = admin.gate();
                if last.as_ref() != Some(&gate) {
                    if tx.send(Bytes::from(format!("{gate}\n"))).await.is_err() {
                        return;
                    }
                    last = Some(gate);
                }
                let down = tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return } else { false },
                    _ = shutdown.wait_for(|down| *down) => true,
                    () = tx.closed() => return,
                };
                if down {
                    // The instance is going away: its background work stops with it,
                    // told before the stream ends rather than left to guess.
                    let mut gate = admin.gate();
                    gate["active"] = false.into();
                    if last.as_ref() != Some(&gate) {
                        let _ = tx.send(Bytes::from(format!("{gate}\n"))).await;
                    }
                    return;
                }
            }
        });
        let body =
            StreamBody::new(ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b))));
        let mut response = Response::new(BodyExt::boxed(body));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            "application/x-ndjson".parse().expect("static header"),
        );
        response
    }

    fn config(&self) -> serde_json::Value {
        // The period in force: the flag's, or a shorter one a rollout asked for.
        let report_ms = self
            .counters
            .traffic_report_interval_ms
            .load(Ordering::Relaxed);
        // 0: discovery not started yet (the first instants of the process).
        let report_interval = match report_ms {
            0 => None,
            ms if ms.is_multiple_of(1000) => Some(format!("{}s", ms / 1000)),
            ms => Some(format!("{ms}ms")),
        };
        match self.routes.load() {
            None => json!({
                "service": self.service,
                "instance": self.instance_id,
                "ready": false,
                "identity": self.identity.describe(),
                "trafficReportInterval": report_interval,
            }),
            Some(r) => json!({
                "service": self.service,
                "instance": self.instance_id,
                "identity": self.identity.describe(),
                "labels": self.labels,
                "ready": true,
                "revision": r.revision,
                "version": r.version,
                "source": r.source,
                "endpoints": endpoints(&r.table),
                // Among `endpoints`: kept through a reconnect, not (yet) listed by the
                // control plane, dropped when `--endpoint-grace` ends.
                "staleEndpoints": self.counters.stale_endpoints(),
                // Scoped endpoints (issue 15): `all`, or declared + learned services.
                "endpointScope": self.counters.endpoint_scope(&self.routes),
                "rules": r.rules.iter().collect::<Vec<_>>(),
                "trafficReportInterval": report_interval,
            }),
        }
    }

    /// Every metric of this sidecar, in the format `accept` prefers.
    fn metrics(&self, accept: Option<&header::HeaderValue>) -> Response<Body> {
        let revision = self.routes.load().map_or(0, |r| r.revision);
        let c = &self.counters;
        let mut scrape = Scrape::default();
        scrape.gauge(
            "graylane_sidecar_rule_revision",
            "Rule revision in force (0: none).",
            i64::try_from(revision).unwrap_or(i64::MAX),
        );
        scrape.gauge(
            "graylane_stale_endpoints",
            "Instances routed to that the control plane does not list (yet): kept through a reconnect for --endpoint-grace.",
            i64::try_from(c.stale_count()).unwrap_or(i64::MAX),
        );
        let counters = [
            (
                "graylane_sidecar_snapshots_applied_total",
                "Snapshots applied and ACKed.",
                &c.applied,
            ),
            (
                "graylane_sidecar_snapshots_rejected_total",
                "Snapshots NACKed.",
                &c.rejected,
            ),
            (
                "graylane_sidecar_control_plane_connects_total",
                "Connections made to a control plane.",
                &c.connects,
            ),
            (
                "graylane_sidecar_cache_rejected_total",
                "Snapshot cache files ignored at start: unreadable, failing their integrity check, of an older format, or with rules this sidecar rejects.",
                &c.cache_rejected,
            ),
            (
                "graylane_sidecar_endpoint_interest_total",
                "Services whose endpoints this sidecar asked the control plane for (scoped endpoints: a first call).",
                &self.routes.interest.requests,
            ),
            (
                "graylane_sidecar_endpoint_interest_waits_total",
                "Requests that waited for the endpoints of a service this sidecar held none of.",
                &self.routes.interest.waits,
            ),
            (
                "graylane_sidecar_endpoint_interest_timeouts_total",
                "Of those waits, the ones that ended after 1 s without the endpoints.",
                &self.routes.interest.timeouts,
            ),
            (
                "graylane_spans_exported_total",
                "Spans the OTLP endpoint accepted.",
                &self.tracer.exported,
            ),
            (
                "graylane_spans_dropped_total",
                "Spans dropped: export queue full, or the OTLP endpoint failed.",
                &self.tracer.dropped,
            ),
        ];
        for (name, help, value) in counters {
            scrape.counter(name, help, value.load(Ordering::Relaxed));
        }
        scrape.counters(
            "graylane_propagation_gaps_total",
            "Outbound calls without tag or known trace while a tagged request was in flight (the app dropped the lane).",
            self.gaps
                .counts()
                .into_iter()
                .map(|(destination, n)| (vec![("destination", destination)], n)),
        );
        self.metrics.register(&mut scrape);
        let (format, body) = scrape.encode(accept);
        let mut response = text(StatusCode::OK, body);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(format.content_type()),
        );
        response
    }
}

/// Instance ids by service as a host names it (`orders`, `orders.staging`), for
/// `/config`. Read from the table on request: an endpoint change does not build it.
fn endpoints(table: &graylane_routing::RoutingTable) -> BTreeMap<String, Vec<&str>> {
    table
        .services()
        .map(|(namespace, service, instances)| {
            let ids = instances.iter().map(|i| i.id.as_str()).collect();
            (graylane_routing::qualified(namespace, service), ids)
        })
        .collect()
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response
}

fn json_response(value: &serde_json::Value) -> Response<Body> {
    let mut response = text(StatusCode::OK, format!("{value}\n"));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("static header"),
    );
    response
}

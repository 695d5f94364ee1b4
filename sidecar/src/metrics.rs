//! Request metrics for `/metrics`, RED per lane: count and latency
//! by direction, destination service, subset, lane and status (errors are the 5xx
//! series); requests in flight; invalid tags.
//!
//! Label values come from the routing table (services, subsets, lane names), never
//! from raw request input, so a client cannot grow the series without bound: a tag
//! that names no lane is counted as `other`.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use graylane_exposition::Scrape;
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

pub(crate) use self::upstream::{Protocol, Upstream};

mod upstream;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A label value: most are fixed (`-`, `other`, this sidecar's own service) and
/// borrowed, so a request's labels cost no allocation unless it names a destination.
pub(crate) type Label = Cow<'static, str>;

/// The labels of one series.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    /// `outbound` or `inbound`.
    pub(crate) direction: &'static str,
    /// Outbound: the destination service; inbound: this one.
    pub(crate) service: Label,
    /// The namespace of `service`; `-` where `service` is (no mesh service). Shown as
    /// the `namespace` label only outside `default` (and `-`), so the series of a
    /// mesh without namespaces keep the labels they always had.
    pub(crate) namespace: Label,
    /// The subset that served, `-` when no RoutePolicy names one.
    pub(crate) subset: Label,
    /// The lane of the request's tag, `-` untagged, `other` for a tag no lane declares.
    pub(crate) lane: Label,
    pub(crate) status: u16,
}

impl EncodeLabelSet for Key {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("direction", self.direction).encode(encoder.encode_label())?;
        ("service", &*self.service).encode(encoder.encode_label())?;
        if !matches!(&*self.namespace, "default" | "-" | "") {
            ("namespace", &*self.namespace).encode(encoder.encode_label())?;
        }
        ("subset", &*self.subset).encode(encoder.encode_label())?;
        ("lane", &*self.lane).encode(encoder.encode_label())?;
        ("status", self.status).encode(encoder.encode_label())
    }
}

/// A series' labels and their hash, computed once per request. The families' maps
/// hash with SipHash (prometheus-client fixes their hasher): through the labels, the
/// two lookups of every request took 2 % of its instructions; through this `u64`, a
/// tenth of that. A keyless hash is safe here because label values never come from
/// a client (see the module note): nobody can pick colliding series.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Series {
    hash: u64,
    key: Key,
}

impl Series {
    fn new(key: Key) -> Self {
        let mut hasher = Fx(0);
        key.hash(&mut hasher);
        Self {
            hash: hasher.finish(),
            key,
        }
    }
}

impl Hash for Series {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl EncodeLabelSet for Series {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.key.encode(encoder)
    }
}

/// rustc's FxHash: a multiply and a rotate per word.
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let mut tail = [0; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.add(u64::from_le_bytes(tail) ^ bytes.len() as u64);
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Fx {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// The sidecar's request metrics.
pub(crate) struct Metrics {
    in_flight: Gauge,
    pub(crate) invalid_tags: AtomicU64,
    /// Intercepted connections that were not HTTP, tunnelled as TCP.
    pub(crate) tunnels: AtomicU64,
    requests: Family<Series, Counter>,
    durations: Family<Series, Histogram, fn() -> Histogram>,
    pub(crate) inbound_connections: Arc<Connections>,
    pub(crate) outbound_connections: Arc<Connections>,
    /// The pool's connections to upstreams.
    pub(crate) upstream: Arc<Upstream>,
    /// Inbound connections refused by the mTLS mode, by reason.
    pub(crate) inbound_refused: Refusals,
    /// Tags from a peer without a verified mesh identity, removed (mTLS on, no
    /// TagPolicy keeping them).
    pub(crate) untrusted_tags: AtomicU64,
    /// Calls no weighted subset or base candidate could take, served by any instance
    /// left (rules.md, step 3): a service under release `gray` with no base
    /// instance, or one whose base instances are all excluded.
    pub(crate) base_fallbacks: AtomicU64,
    /// The workload certificate's expiry, unix seconds (0: none yet).
    certificate_expiry: AtomicI64,
    /// Certificate requests answered with a certificate put in force, and failed.
    certificate_renewals_ok: AtomicU64,
    certificate_renewals_error: AtomicU64,
}

/// Why the inbound listener refused a connection (the `reason` label of
/// `graylane_inbound_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefusedReason {
    /// Strict mode: not TLS.
    Plaintext,
    /// Strict mode: TLS, but not to a mesh SNI (an app's own TLS, or no SNI).
    NotMesh,
    /// The client presented no certificate.
    NoCertificate,
    /// The handshake failed: a certificate from another CA, expired, no identity, a
    /// malformed or too slow ClientHello.
    Handshake,
    /// This sidecar has no valid certificate (not issued yet, or expired).
    NoCertificateLocal,
}

impl RefusedReason {
    const ALL: [RefusedReason; 5] = [
        Self::Plaintext,
        Self::NotMesh,
        Self::NoCertificate,
        Self::Handshake,
        Self::NoCertificateLocal,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::NotMesh => "not_mesh",
            Self::NoCertificate => "no_certificate",
            Self::Handshake => "handshake",
            Self::NoCertificateLocal => "no_certificate_local",
        }
    }
}

/// One counter per [`RefusedReason`].
#[derive(Default)]
pub(crate) struct Refusals([AtomicU64; RefusedReason::ALL.len()]);

impl Refusals {
    pub(crate) fn count(&self, reason: RefusedReason) {
        self.0[reason as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The `reason` label of the refusal counter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// Connection counters of one listener.
#[derive(Default)]
pub struct Connections {
    pub(crate) accepted: AtomicU64,
    /// Closed at once: over `--max-connections`.
    pub(crate) refused: AtomicU64,
    /// Failed accepts (e.g. EMFILE: out of file descriptors).
    pub(crate) accept_errors: AtomicU64,
    /// Closed for sending no complete request head within the header-read timeout.
    pub(crate) header_timeouts: AtomicU64,
    /// Closed for cancelling most of their requests before the answer (rapid reset).
    pub(crate) reset_abuse: AtomicU64,
}

/// The `listener` label of the connection counters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Listener {
    listener: &'static str,
}

/// The `result` label of the certificate renewals.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Renewal {
    result: &'static str,
}

/// Counts a request as in flight until dropped.
pub(crate) struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            in_flight: Gauge::default(),
            invalid_tags: AtomicU64::default(),
            tunnels: AtomicU64::default(),
            requests: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
            inbound_connections: Arc::default(),
            outbound_connections: Arc::default(),
            upstream: Arc::default(),
            inbound_refused: Refusals::default(),
            untrusted_tags: AtomicU64::default(),
            base_fallbacks: AtomicU64::default(),
            certificate_expiry: AtomicI64::default(),
            certificate_renewals_ok: AtomicU64::default(),
            certificate_renewals_error: AtomicU64::default(),
        }
    }
}

#[cfg(test)]
impl Metrics {
    /// Requests recorded under `key`.
    pub(crate) fn count(&self, key: &Key) -> u64 {
        self.requests.get_or_create(&Series::new(key.clone())).get()
    }

    pub(crate) fn in_flight_now(&self) -> i64 {
        self.in_flight.get()
    }
}

impl Metrics {
    /// Marks a request in flight for as long as the guard lives.
    pub(crate) fn start(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Records one answered request and how long it took until its response head.
    pub(crate) fn record(&self, key: Key, elapsed: Duration) {
        let series = Series::new(key);
        self.durations
            .get_or_create(&series)
            .observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&series).inc();
    }

    /// A new workload certificate is in force until `not_after` (unix seconds).
    pub(crate) fn set_certificate_expiry(&self, not_after: i64) {
        self.certificate_expiry.store(not_after, Ordering::Relaxed);
    }

    /// One certificate request done: `ok` when its certificate is in force.
    pub(crate) fn certificate_renewal(&self, ok: bool) {
        let counter = if ok {
            &self.certificate_renewals_ok
        } else {
            &self.certificate_renewals_error
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds every series to a scrape.
    pub(crate) fn register(&self, scrape: &mut Scrape) {
        scrape.register(
            "graylane_sidecar_requests_in_flight",
            "Requests being proxied now.",
            self.in_flight.clone(),
        );
        scrape.counter(
            "graylane_invalid_tag_total",
            "Gray-Publish values outside the tag grammar, removed.",
            self.invalid_tags.load(Ordering::Relaxed),
        );
        scrape.counter(
            "graylane_tcp_tunnels_total",
            "Intercepted connections that were not HTTP, passed through as TCP.",
            self.tunnels.load(Ordering::Relaxed),
        );
        self.register_connections(scrape);
        self.upstream.register(scrape);
        self.register_certificate(scrape);
        scrape.counters(
            "graylane_inbound_refused_total",
            "Inbound connections refused by the PeerPolicy mTLS mode, by reason.",
            RefusedReason::ALL.map(|r| {
                let count = self.inbound_refused.0[r as usize].load(Ordering::Relaxed);
                (Reason { reason: r.as_str() }, count)
            }),
        );
        scrape.counter(
            "graylane_untrusted_tag_total",
            "Tags from a peer without a verified mesh identity, removed (mTLS on, no TagPolicy).",
            self.untrusted_tags.load(Ordering::Relaxed),
        );
        scrape.counter(
            "graylane_base_fallback_total",
            "Calls no weighted subset or base instance could take, served by any instance left.",
            self.base_fallbacks.load(Ordering::Relaxed),
        );
        scrape.register(
            "graylane_sidecar_requests_total",
            "Requests answered.",
            self.requests.clone(),
        );
        scrape.register(
            "graylane_sidecar_request_duration_seconds",
            "Time to the response head.",
            self.durations.clone(),
        );
    }

    fn register_certificate(&self, scrape: &mut Scrape) {
        scrape.gauge(
            "graylane_certificate_expiry_seconds",
            "When the workload certificate in force expires, unix seconds (0: none yet).",
            self.certificate_expiry.load(Ordering::Relaxed),
        );
        scrape.counters(
            "graylane_certificate_renewals_total",
            "Workload certificate requests, by result (ok: the certificate is in force).",
            [
                ("ok", &self.certificate_renewals_ok),
                ("error", &self.certificate_renewals_error),
            ]
            .map(|(result, n)| (Renewal { result }, n.load(Ordering::Relaxed))),
        );
    }

    fn register_connections(&self, scrape: &mut Scrape) {
        let listeners = [
            ("inbound", &self.inbound_connections),
            ("outbound", &self.outbound_connections),
        ];
        let counters: [(&str, &str, fn(&Connections) -> &AtomicU64); 5] = [
            (
                "graylane_connections_accepted_total",
                "Connections accepted.",
                |c| &c.accepted,
            ),
            (
                "graylane_connections_refused_total",
                "Connections closed at once: over --max-connections.",
                |c| &c.refused,
            ),
            (
                "graylane_accept_errors_total",
                "Failed accepts (e.g. out of file descriptors); each backs off.",
                |c| &c.accept_errors,
            ),
            (
                "graylane_header_timeouts_total",
                "Connections closed for no complete request head within --header-read-timeout.",
                |c| &c.header_timeouts,
            ),
            (
                "graylane_connections_reset_abuse_total",
                "Connections closed for cancelling most of their requests before the answer (rapid reset).",
                |c| &c.reset_abuse,
            ),
        ];
        for (name, help, field) in counters {
            let series = listeners
                .map(|(listener, c)| (Listener { listener }, field(c).load(Ordering::Relaxed)));
            scrape.counters(name, help, series);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(m: &Metrics) -> String {
        let mut scrape = Scrape::default();
        m.register(&mut scrape);
        scrape.encode(None).1
    }

    fn key(status: u16) -> Key {
        Key {
            direction: "outbound",
            service: "orders".into(),
            namespace: "default".into(),
            subset: "v2".into(),
            lane: "gray".into(),
            status,
        }
    }

    #[test]
    fn the_namespace_label_appears_outside_default_only() {
        let m = Metrics::default();
        m.record(key(200), Duration::from_millis(1));
        let shop = Key {
            namespace: "shop".into(),
            ..key(200)
        };
        m.record(shop, Duration::from_millis(1));
        let out = render(&m);
        assert!(out.contains(
            "graylane_sidecar_requests_total{direction=\"outbound\",service=\"orders\",subset=\"v2\",lane=\"gray\",status=\"200\"} 1"
        ), "{out}");
        assert!(out.contains(
            "graylane_sidecar_requests_total{direction=\"outbound\",service=\"orders\",namespace=\"shop\",subset=\"v2\",lane=\"gray\",status=\"200\"} 1"
        ), "{out}");
    }

    #[test]
    fn requests_are_counted_with_histograms_and_in_flight_gauge() {
        let m = Metrics::default();
        {
            let _a = m.start();
            let out = render(&m);
            assert!(out.contains("graylane_sidecar_requests_in_flight 1"));
        }
        m.record(key(200), Duration::from_millis(3));
        m.record(key(200), Duration::from_millis(300));
        m.record(key(503), Duration::from_millis(1));
        let out = render(&m);
        let l = "direction=\"outbound\",service=\"orders\",subset=\"v2\",lane=\"gray\"";
        assert!(
            out.contains("graylane_sidecar_requests_in_flight 0"),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "graylane_sidecar_requests_total{{{l},status=\"200\"}} 2"
            )),
            "{out}"
        );
        assert!(out.contains(&format!("graylane_sidecar_request_duration_seconds_bucket{{{l},status=\"200\",le=\"0.005\"}} 1")), "{out}");
        assert!(out.contains(&format!("graylane_sidecar_request_duration_seconds_bucket{{{l},status=\"200\",le=\"0.5\"}} 2")), "{out}");
        assert!(
            out.contains(&format!(
                "graylane_sidecar_requests_total{{{l},status=\"503\"}} 1"
            )),
            "{out}"
        );
    }

    #[test]
    fn series_whose_labels_join_to_the_same_text_stay_apart() {
        let m = Metrics::default();
        let a = Key {
            service: "ord".into(),
            subset: "ersv2".into(),
            ..key(200)
        };
        let b = Key {
            service: "orders".into(),
            subset: "v2".into(),
            ..key(200)
        };
        m.record(a.clone(), Duration::from_millis(1));
        m.record(b.clone(), Duration::from_millis(1));
        m.record(b.clone(), Duration::from_millis(1));
        assert_eq!((m.count(&a), m.count(&b)), (1, 2));
    }
}

//! The pool's upstream connections: how many it opened, by protocol and transport,
//! and how many connects failed. Envoy's `upstream_cx_total` and
//! `upstream_cx_connect_fail`: a pool that stops reusing its connections (an
//! upstream closing each one, a client cancelling mid-answer) shows as a rate of
//! new connections close to the rate of requests.

use std::sync::atomic::{AtomicU64, Ordering};

use graylane_exposition::Scrape;
use prometheus_client::encoding::EncodeLabelSet;

/// What an upstream connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

/// The pool's connection counters.
#[derive(Default)]
pub(crate) struct Upstream {
    /// By protocol (`Protocol as usize`), then plaintext (0) or mTLS (1).
    opened: [[AtomicU64; 2]; 2],
    connect_errors: AtomicU64,
}

/// The labels of `graylane_upstream_connections_opened_total`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Opened {
    protocol: &'static str,
    transport: &'static str,
}

impl Upstream {
    /// A connection made: TCP connected, and for mTLS the handshake done.
    pub(crate) fn opened(&self, protocol: Protocol, mtls: bool) {
        self.opened[protocol as usize][usize::from(mtls)].fetch_add(1, Ordering::Relaxed);
    }

    /// A connect that failed: refused, timed out, or its TLS handshake failed.
    pub(crate) fn connect_failed(&self) {
        self.connect_errors.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn opened_now(&self, protocol: Protocol, mtls: bool) -> u64 {
        self.opened[protocol as usize][usize::from(mtls)].load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn connect_errors_now(&self) -> u64 {
        self.connect_errors.load(Ordering::Relaxed)
    }

    pub(super) fn register(&self, scrape: &mut Scrape) {
        let series = [Protocol::Http1, Protocol::Http2]
            .into_iter()
            .flat_map(|p| {
                let protocol = match p {
                    Protocol::Http1 => "http/1.1",
                    Protocol::Http2 => "h2",
                };
                [(0, "plaintext"), (1, "mtls")].map(|(i, transport)| {
                    let count = self.opened[p as usize][i].load(Ordering::Relaxed);
                    (
                        Opened {
                            protocol,
                            transport,
                        },
                        count,
                    )
                })
            });
        scrape.counters(
            "graylane_upstream_connections_opened_total",
            "Connections the sidecar opened to upstreams (apps, other sidecars), by protocol and transport.",
            series,
        );
        scrape.counter(
            "graylane_upstream_connect_errors_total",
            "Upstream connects that failed: refused, timed out, or the mTLS handshake failed.",
            self.connect_errors.load(Ordering::Relaxed),
        );
    }
}

//! graylane-exposition: what every graylane `/metrics` endpoint serves, so the sidecar
//! admin listener and graylane-control answer scrapes the same way.
//!
//! Owns: choosing the format from `Accept` (the Prometheus text format 0.0.4, or
//! OpenMetrics 1.0.0 when the scraper prefers it), the `Content-Type` that goes with
//! it, `graylane_build_info`, and the standard `process_*` metrics read from `/proc`;
//! and the servers' logging (`GRAYLANE_LOG`, `--log-format`, [`Sampled`] lines for
//! what can happen thousands of times a second); and the one retry
//! [`backoff::Backoff`] of their background loops (shared here, the crate both use).
//!
//! Does not own: any component's own metrics (each adds them to a [`Scrape`]),
//! or the HTTP server.

pub mod backoff;
mod logs;
mod negotiate;
mod process;
mod sampled;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry};

pub use self::logs::{LOG_FORMATS, LOGGING_HELP, init_logs};
pub use self::negotiate::Format;
pub use self::sampled::Sampled;

/// The git revision the binary was built from, when the build said
/// (`GRAYLANE_GIT_REVISION=$(git rev-parse HEAD) cargo build`). Read at compile time
/// rather than from a build script running git: builds stay reproducible and cheap,
/// and rustc rebuilds this crate alone when the variable changes.
const REVISION: &str = match option_env!("GRAYLANE_GIT_REVISION") {
    Some(revision) => revision,
    None => "unknown",
};

/// One scrape's registry: built per request from the components' live counters, then
/// encoded. Starts with `graylane_build_info` and the `process_*` metrics.
#[derive(Debug)]
pub struct Scrape {
    registry: Registry,
}

impl Default for Scrape {
    fn default() -> Self {
        let mut registry = Registry::default();
        registry.register(
            "graylane_build",
            "Version and git revision of this binary",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", REVISION),
            ]),
        );
        registry.register_collector(Box::new(process::Process));
        Self { registry }
    }
}

impl Scrape {
    /// Adds a counter with its current value. `name` is the exposed name, `_total`
    /// included; `help` is one sentence (the encoder adds the full stop).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.register(name, help, ConstCounter::new(value));
    }

    /// Adds a gauge with its current value.
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) {
        self.register(name, help, ConstGauge::new(value));
    }

    /// Adds a counter with one series per label set.
    pub fn counters<L>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (L, u64)>,
    ) where
        L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        let family = Family::<L, Counter>::default();
        for (labels, value) in series {
            family.get_or_create(&labels).inc_by(value);
        }
        self.register(name, help, family);
    }

    /// Registers `metric` under its exposed name: the registry wants counters without
    /// their `_total` (the encoders add it) and help without the full stop.
    pub fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        let name = name.strip_suffix("_total").unwrap_or(name);
        let help = help.strip_suffix('.').unwrap_or(help);
        self.registry.register(name, help, metric);
    }

    /// The body for a scrape that sent `accept`, with its `Content-Type`.
    pub fn encode(&self, accept: Option<&http::HeaderValue>) -> (Format, String) {
        let format = Format::negotiate(accept);
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug in it.
        let encoded = match format {
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
        };
        debug_assert!(encoded.is_ok(), "encoding into a String failed");
        (format, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_help_are_kept_in_both_formats() {
        let mut scrape = Scrape::default();
        scrape.counter("graylane_x_total", "Things done.", 3);
        scrape.gauge("graylane_y", "Things now.", -2);
        scrape.counters(
            "graylane_z_total",
            "Things by kind.",
            [(vec![("kind".to_string(), "a\"b".to_string())], 1)],
        );
        let (_, text) = scrape.encode(None);
        assert!(text.contains("# HELP graylane_x_total Things done.\n# TYPE graylane_x_total counter\ngraylane_x_total 3\n"), "{text}");
        assert!(text.contains("graylane_y -2\n"), "{text}");
        assert!(
            text.contains("graylane_z_total{kind=\"a\\\"b\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE graylane_build_info gauge\ngraylane_build_info{version=\""),
            "{text}"
        );
        assert!(text.contains("\nprocess_open_fds "), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        let om: http::HeaderValue =
            http::HeaderValue::from_static("application/openmetrics-text;version=1.0.0");
        let (format, om) = scrape.encode(Some(&om));
        assert_eq!(format, Format::OpenMetrics);
        assert!(
            om.contains("# TYPE graylane_x counter\ngraylane_x_total 3\n"),
            "{om}"
        );
        assert!(om.contains("# TYPE graylane_build info\n"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
    }
}

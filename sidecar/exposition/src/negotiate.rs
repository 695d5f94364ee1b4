//! Which exposition format a scrape gets, from its `Accept` header (RFC 9110 §12.5.1).

/// An exposition format this crate writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4: what every scraper accepts.
    Text,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when `Accept` rates it at least as high as the text format (as
    /// Prometheus does by default: OpenMetrics q=0.5, text q=0.3 or less); the text
    /// format otherwise, also for a missing or unreadable header, since a scraper that
    /// sends none expects it.
    pub fn negotiate(accept: Option<&http::HeaderValue>) -> Self {
        let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
            return Self::Text;
        };
        let (mut open_metrics, mut text) = (0.0_f32, 0.0_f32);
        for range in accept.split(',') {
            let mut params = range.split(';').map(str::trim);
            let media = params.next().unwrap_or_default().to_ascii_lowercase();
            let (mut q, mut version) = (1.0_f32, None);
            for param in params {
                let Some((key, value)) = param.split_once('=') else {
                    continue;
                };
                match key.trim().to_ascii_lowercase().as_str() {
                    "q" => q = value.trim().parse().unwrap_or(0.0),
                    "version" => version = Some(value.trim().trim_matches('"')),
                    _ => {}
                }
            }
            match media.as_str() {
                // 0.0.1 is the draft Prometheus still asks for; 1.0.0 reads the same.
                "application/openmetrics-text"
                    if matches!(version, None | Some("1.0.0" | "0.0.1")) =>
                {
                    open_metrics = open_metrics.max(q);
                }
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if open_metrics > 0.0 && open_metrics >= text {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(accept: &str) -> Format {
        Format::negotiate(Some(
            &http::HeaderValue::from_str(accept).expect("valid header"),
        ))
    }

    #[test]
    fn prometheus_3_default_gets_open_metrics() {
        let accept = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
        assert_eq!(pick(accept), Format::OpenMetrics);
    }

    #[test]
    fn text_unless_open_metrics_is_asked_for() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(pick("*/*"), Format::Text);
        assert_eq!(pick("text/plain;version=0.0.4"), Format::Text);
        assert_eq!(
            pick("application/openmetrics-text;q=0,text/plain"),
            Format::Text
        );
        assert_eq!(
            pick("text/plain;q=0.9,application/openmetrics-text;q=0.5"),
            Format::Text
        );
        assert_eq!(
            pick("application/openmetrics-text;version=2.0.0"),
            Format::Text
        );
        assert_eq!(
            pick("application/OpenMetrics-Text; version=\"1.0.0\""),
            Format::OpenMetrics
        );
    }
}

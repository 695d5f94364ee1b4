//! The app's own HTTP probes, which injection rewrote to the health port
//! (`:15021/app-health/<container>/<probe>`, see the control plane's
//! `inject/probes.rs`): under `mtls: strict` the kubelet's plaintext probe could not
//! reach the app's port through the inbound sidecar. Each path stands for a request to
//! the app, made here as the kubelet would have made it: to the probe's `host`, else
//! the pod's IP (an app bound to it alone answers there, not on loopback), following
//! redirects on the same host, 2xx or 3xx a success. The sidecar's own connections
//! are never intercepted.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// Longer than any kubelet probe waits by default (1 s) or usually (10 s): the
/// kubelet's own timeout decides; this only bounds a probe nobody waits for.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The probes, by the path the kubelet asks (`--app-probes`).
#[derive(Clone, Debug, Default)]
pub struct AppProbes(BTreeMap<String, Target>);

/// Where one probe goes: the app's host (`None`: loopback; the pod's IP once known)
/// and port, its path and headers.
#[derive(Clone, Debug)]
struct Target {
    host: Option<String>,
    port: u16,
    path: http::uri::PathAndQuery,
    headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    #[serde(default)]
    host: Option<String>,
    port: u16,
    path: String,
    #[serde(default)]
    headers: Vec<WrittenHeader>,
}

/// Redirects followed, as the kubelet follows them.
const MAX_REDIRECTS: usize = 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WrittenHeader {
    name: String,
    value: String,
}

impl AppProbes {
    /// Reads `--app-probes` (JSON: `{"/app-health/app/livez": {"port": 8080, "path":
    /// "/healthz", "headers": [{"name": "X", "value": "v"}]}}`); the error says what
    /// is wrong, naming the probe.
    pub fn parse(text: &str) -> Result<Self, String> {
        let written: BTreeMap<String, Written> =
            serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut probes = BTreeMap::new();
        for (at, w) in written {
            let bad = |why: String| format!("{at:?}: {why}");
            if !at.starts_with("/app-health/") {
                return Err(bad("a probe's path starts with /app-health/".into()));
            }
            if w.port == 0 {
                return Err(bad("port 0".into()));
            }
            let path = w
                .path
                .parse::<http::uri::PathAndQuery>()
                .ok()
                .filter(|p| p.as_str().starts_with('/'))
                .ok_or_else(|| bad(format!("path {:?} is not an absolute path", w.path)))?;
            let headers = w
                .headers
                .into_iter()
                .map(|h| {
                    let name = HeaderName::try_from(h.name.as_str());
                    let value = HeaderValue::try_from(h.value.as_str());
                    match (name, value) {
                        (Ok(n), Ok(v)) => Ok((n, v)),
                        _ => Err(bad(format!("header {:?} is not a valid header", h.name))),
                    }
                })
                .collect::<Result<_, _>>()?;
            if let Some(host) = &w.host
                && host.parse::<http::uri::Authority>().is_err()
            {
                return Err(bad(format!("host {host:?} is not a host name or address")));
            }
            probes.insert(
                at,
                Target {
                    host: w.host,
                    port: w.port,
                    path,
                    headers,
                },
            );
        }
        Ok(Self(probes))
    }

    /// Probes without a host of their own go to `pod_ip`, as the kubelet's do.
    pub fn at_pod_ip(mut self, pod_ip: std::net::IpAddr) -> Self {
        let ip = pod_ip.to_string();
        for target in self.0.values_mut() {
            target.host.get_or_insert_with(|| ip.clone());
        }
        self
    }

    /// Whether `path` is one of the probes' (the health listener's namespace for them).
    pub(crate) fn covers(path: &str) -> bool {
        path.starts_with("/app-health/")
    }

    /// The kubelet's answer for `path`: 200 when the app answered 2xx or 3xx (what the
    /// kubelet counts as success), else the app's status, or 503 saying why no answer
    /// came.
    pub(crate) async fn check(&self, path: &str) -> (StatusCode, String) {
        let Some(target) = self.0.get(path) else {
            return (StatusCode::NOT_FOUND, format!("no app probe at {path}\n"));
        };
        match tokio::time::timeout(PROBE_TIMEOUT, target.get()).await {
            Ok(Ok(status)) if (200..400).contains(&status.as_u16()) => {
                (StatusCode::OK, format!("app answered {status}\n"))
            }
            Ok(Ok(status)) => (status, format!("app answered {status}\n")),
            Ok(Err(e)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("app probe on port {} failed: {e}\n", target.port),
            ),
            Err(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("app probe on port {} timed out\n", target.port),
            ),
        }
    }
}

type ProbeError = Box<dyn std::error::Error + Send + Sync>;

impl Target {
    /// The probe's answer: its GET, and the redirects on the same host after it.
    async fn get(&self) -> Result<StatusCode, ProbeError> {
        let host = self.host.as_deref().unwrap_or("127.0.0.1");
        let authority = if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        };
        let mut path = self.path.clone();
        for _ in 0..=MAX_REDIRECTS {
            let response = self.once(host, &authority, path.clone()).await?;
            let status = response.status();
            if !status.is_redirection() {
                return Ok(status);
            }
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok());
            match location.and_then(|l| same_host(l, &authority)) {
                Some(next) => path = next,
                // Elsewhere, or nowhere: the kubelet counts the redirect a success.
                None => return Ok(status),
            }
        }
        Err(format!("more than {MAX_REDIRECTS} redirects").into())
    }

    /// One GET, as the kubelet sends it.
    async fn once(
        &self,
        host: &str,
        authority: &str,
        path: http::uri::PathAndQuery,
    ) -> Result<http::Response<hyper::body::Incoming>, ProbeError> {
        let stream = tokio::net::TcpStream::connect((host, self.port)).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut request = Request::get(path).body(Empty::<Bytes>::new())?;
        let headers = request.headers_mut();
        headers.insert(http::header::HOST, HeaderValue::from_str(authority)?);
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static("kube-probe (graylane-sidecar)"),
        );
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        Ok(send.send_request(request).await?)
    }
}

/// The path a redirect to `location` asks for when it stays on `authority`: a path,
/// or a URL naming the same host and port.
fn same_host(location: &str, authority: &str) -> Option<http::uri::PathAndQuery> {
    if location.starts_with('/') && !location.starts_with("//") {
        return location.parse().ok();
    }
    let uri: http::Uri = location.parse().ok()?;
    if uri.authority()?.as_str() != authority {
        return None;
    }
    uri.path_and_query().cloned()
}

#[cfg(test)]
mod tests {
    use super::AppProbes;

    #[test]
    fn probes_are_read_and_typos_named() {
        let ok = AppProbes::parse(
            r#"{"/app-health/app/livez": {"port": 8080, "path": "/healthz?full=1", "headers": [{"name": "X-Probe", "value": "1"}]}}"#,
        )
        .unwrap();
        assert_eq!(ok.0.len(), 1);
        for (bad, says) in [
            (
                r#"{"/livez": {"port": 1, "path": "/"}}"#,
                "starts with /app-health/",
            ),
            (
                r#"{"/app-health/a/livez": {"port": 0, "path": "/"}}"#,
                "port 0",
            ),
            (
                r#"{"/app-health/a/livez": {"port": 1, "path": "healthz"}}"#,
                "not an absolute path",
            ),
            (
                r#"{"/app-health/a/livez": {"port": 1, "path": "/", "headers": [{"name": "a b", "value": "v"}]}}"#,
                "not a valid header",
            ),
            (
                r#"{"/app-health/a/livez": {"port": 1, "path": "/", "scheme": "HTTP"}}"#,
                "unknown field",
            ),
            ("[]", "invalid type"),
        ] {
            let e = AppProbes::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}

//! The web console: `GET /` (index.html) and `GET /console/{file}` (ES modules, CSS,
//! the icon), compiled into the binary so it works in an air-gapped cluster. Loading
//! it needs no credentials; every API call it makes carries the token (spec/http-api.md).
//!
//! Every response, a 404 included, carries a CSP that allows only this origin and no
//! inline script or style: the console renders rule and sidecar values as text, and
//! the CSP is the second wall if a bug ever renders one as HTML.

use axum::Router;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The console's only policy: its own scripts, styles and API, nothing else (no
/// inline code, no frames, no forms posted elsewhere).
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// (file name, content type, content). Names are matched exactly: nothing is read
/// from disk, so no path can escape.
const ASSETS: [(&str, &str, &str); 15] = [
    ("index.html", HTML, include_str!("../../console/index.html")),
    ("style.css", CSS, include_str!("../../console/style.css")),
    ("icon.svg", SVG, include_str!("../../console/icon.svg")),
    ("app.js", JS, include_str!("../../console/app.js")),
    ("api.js", JS, include_str!("../../console/api.js")),
    ("dom.js", JS, include_str!("../../console/dom.js")),
    ("format.js", JS, include_str!("../../console/format.js")),
    ("diff.js", JS, include_str!("../../console/diff.js")),
    ("yaml.js", JS, include_str!("../../console/yaml.js")),
    ("lanes.js", JS, include_str!("../../console/lanes.js")),
    ("releases.js", JS, include_str!("../../console/releases.js")),
    ("rollouts.js", JS, include_str!("../../console/rollouts.js")),
    ("rules.js", JS, include_str!("../../console/rules.js")),
    ("sidecars.js", JS, include_str!("../../console/sidecars.js")),
    ("traces.js", JS, include_str!("../../console/traces.js")),
];

pub(super) fn router() -> Router {
    Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route("/console/{file}", get(file))
}

async fn file(name: Result<Path<String>, PathRejection>) -> Response {
    match name {
        Ok(Path(name)) => asset(&name),
        // A name that is not valid UTF-8 names no asset either.
        Err(_) => asset(""),
    }
}

fn asset(name: &str) -> Response {
    let found = ASSETS.iter().find(|(n, _, _)| *n == name);
    let (status, content_type, body) = match found {
        Some((_, content_type, body)) => (StatusCode::OK, *content_type, *body),
        None => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: the console is at /\n",
        ),
    };
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        // Revalidate every load: an upgraded control plane serves new modules at the
        // same names, and a stale app.js importing a new view would break the page.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            HeaderName::from_static("x-frame-options"),
            HeaderValue::from_static("DENY"),
        ),
    ];
    (status, headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower_service::Service as _;

    async fn get(path: &str) -> Response {
        let request = Request::get(path).body(Body::empty()).unwrap();
        router().call(request).await.unwrap()
    }

    fn header<'a>(response: &'a Response, name: &str) -> &'a str {
        response.headers()[name].to_str().unwrap()
    }

    fn assert_hardened(response: &Response) {
        assert_eq!(header(response, "content-security-policy"), CSP);
        assert_eq!(header(response, "x-content-type-options"), "nosniff");
        assert_eq!(header(response, "cache-control"), "no-cache");
    }

    #[tokio::test]
    async fn root_serves_the_page_with_its_policy() {
        let response = get("/").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "content-type"), HTML);
        assert_hardened(&response);
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains(r#"src="/console/app.js""#), "{body}");
        assert!(
            !body.contains("<script>"),
            "no inline script: the CSP forbids it"
        );
    }

    #[tokio::test]
    async fn every_asset_is_served_with_its_type() {
        for (name, content_type, content) in ASSETS {
            let response = get(&format!("/console/{name}")).await;
            assert_eq!(response.status(), StatusCode::OK, "{name}");
            assert_eq!(header(&response, "content-type"), content_type, "{name}");
            assert_hardened(&response);
            let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
            assert_eq!(body, content.as_bytes(), "{name}");
        }
        assert_eq!(
            header(&get("/console/app.js").await, "content-type"),
            "text/javascript; charset=utf-8",
            "a module served as anything else is refused under nosniff"
        );
    }

    #[tokio::test]
    async fn unknown_and_hostile_names_are_404_with_the_policy() {
        for path in [
            "/console/nope.js",
            "/console/APP.JS",
            "/console/..%2Fsrc%2Flib.rs",
            "/console/%2e%2e",
            "/console/%FF",
            "/console/app.js%00",
        ] {
            let response = get(path).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert_hardened(&response);
            assert!(header(&response, "content-type").starts_with("text/plain"));
        }
    }

    #[tokio::test]
    async fn only_reads_are_served() {
        let request = Request::post("/").body(Body::empty()).unwrap();
        let response = router().call(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn the_console_stays_small() {
        let total: usize = ASSETS.iter().map(|(_, _, body)| body.len()).sum();
        assert!(total < 80 * 1024, "{total} bytes");
    }
}

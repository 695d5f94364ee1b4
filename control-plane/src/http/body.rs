//! What the API reads from a request: the query parameters and the JSON or YAML
//! bodies, with unknown fields refused (an operator's typo is an error, not a no-op).

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;

use super::error::ApiError;
use crate::cli::explain::ExplainArgs;

/// Validation messages name this file, as the CLI's name the files it read.
pub(crate) const REQUEST_FILE: &str = "request";

/// Every query parameter of the API; each route reads the ones it takes.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Params {
    pub(crate) namespace: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) revision: Option<u64>,
    pub(crate) prune: Option<bool>,
    pub(crate) dry_run: Option<bool>,
    pub(crate) expect_revision: Option<u64>,
    pub(crate) limit: Option<usize>,
    pub(crate) recent: Option<u32>,
    pub(crate) window: Option<String>,
}

impl Params {
    /// The names of the parameters given, as the query spells them. Every field is
    /// named here (the pattern is exhaustive): one left out would pass every route's
    /// check of what it takes.
    pub(crate) fn given(&self) -> Vec<&'static str> {
        let Self {
            namespace,
            kind,
            revision,
            prune,
            dry_run,
            expect_revision,
            limit,
            recent,
            window,
        } = self;
        let all = [
            ("namespace", namespace.is_some()),
            ("kind", kind.is_some()),
            ("revision", revision.is_some()),
            ("prune", prune.is_some()),
            ("dryRun", dry_run.is_some()),
            ("expectRevision", expect_revision.is_some()),
            ("limit", limit.is_some()),
            ("recent", recent.is_some()),
            ("window", window.is_some()),
        ];
        all.into_iter()
            .filter_map(|(name, given)| given.then_some(name))
            .collect()
    }
}

/// An apply's (file name, YAML) pairs.
pub(crate) struct ApplyBody(pub(crate) Vec<(String, String)>);

/// `{"resources": [...]}`, each resource as in the YAML: an object. Not any value:
/// `null` would read as an empty document, so `[null]` with `prune=true` deleted every
/// rule. `revision` is what `GET /api/v1/rules` answers beside them, so its answer
/// posts back as it is; it is not a lock (`expectRevision` is), as for the CLI's List.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyJson {
    resources: Vec<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, rename = "revision")]
    _revision: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollbackBody {
    pub(crate) to: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseBody {
    pub(crate) state: String,
    /// As `graylane release set --force`: skip the known-service check.
    #[serde(default)]
    pub(crate) force: bool,
}

/// `graylane explain`'s flags as JSON.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ExplainBody {
    service: String,
    entry: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    cookies: BTreeMap<String, String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
    path: Option<String>,
    method: Option<String>,
    source_ip: Option<IpAddr>,
}

impl ExplainBody {
    pub(crate) fn into_args(self) -> ExplainArgs {
        let pairs = |m: BTreeMap<String, String>| m.into_iter().collect();
        ExplainArgs {
            service: self.service,
            entry: self.entry,
            headers: pairs(self.headers),
            cookies: pairs(self.cookies),
            query: pairs(self.query),
            path: self.path.unwrap_or_else(|| "/".into()),
            method: self.method.unwrap_or_else(|| "GET".into()),
            source_ip: self.source_ip,
        }
    }
}

/// What a route's body may be: a rule set (YAML or JSON) or a small JSON object.
#[derive(Clone, Copy)]
pub(crate) enum Accepts {
    Rules,
    Json,
}

impl Accepts {
    fn types(self) -> &'static [&'static str] {
        match self {
            Self::Rules => &[
                "application/yaml",
                "application/x-yaml",
                "text/yaml",
                "application/json",
            ],
            Self::Json => &["application/json"],
        }
    }

    fn named(self) -> &'static str {
        match self {
            Self::Rules => "application/yaml or application/json",
            Self::Json => "application/json",
        }
    }
}

/// A route's body, up to `limit` bytes of a type it `accepts`. The type and a
/// declared Content-Length are judged before a byte is read: a client announcing
/// 100 MB, or a text/plain body, is answered at once rather than after sending it
/// (or after the body deadline, if it never does).
pub(crate) async fn read(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
    accepts: Accepts,
) -> Result<Bytes, ApiError> {
    if !accepts.types().contains(&media_type(headers).as_str()) {
        return Err(ApiError::UnsupportedMediaType(accepts.named()));
    }
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ApiError::TooLarge(limit)),
        Err(e) => Err(ApiError::BadRequest(format!("body: {e}"))),
    }
}

/// The body's media type, without parameters, lowercase; "" when absent.
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// An apply body: YAML (multi-document) or JSON `{"resources": [...]}`. JSON
/// resources become YAML documents (JSON is YAML's flow style), so one parser
/// validates both and the messages count documents the same way.
pub(crate) fn apply(headers: &HeaderMap, body: &[u8]) -> Result<ApplyBody, ApiError> {
    let media = media_type(headers);
    let text = match media.as_str() {
        "application/yaml" | "application/x-yaml" | "text/yaml" => std::str::from_utf8(body)
            .map_err(|e| ApiError::BadRequest(format!("{REQUEST_FILE}: not UTF-8: {e}")))?
            .to_owned(),
        "application/json" => {
            let invalid = |e| ApiError::BadRequest(format!("{REQUEST_FILE}: invalid JSON: {e}"));
            let value = graylane_routing::json_value(body).map_err(invalid)?;
            let parsed: ApplyJson = serde_json::from_value(value).map_err(invalid)?;
            let docs: Vec<String> = parsed
                .resources
                .into_iter()
                .map(|r| serde_json::Value::Object(r).to_string())
                .collect();
            docs.join("\n---\n")
        }
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "application/yaml or application/json",
            ));
        }
    };
    Ok(ApplyBody(vec![(REQUEST_FILE.to_owned(), text)]))
}

/// A small JSON body of type `T`, once `read` took it as `Accepts::Json`.
pub(crate) fn json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("{REQUEST_FILE}: invalid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn typed(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        headers
    }

    #[test]
    fn given_names_every_parameter_as_the_query_spells_it() {
        // A parameter missing from `given` would pass every route's `takes` check.
        let query = "namespace=a&kind=Lane&revision=1&prune=true&dryRun=true\
                     &expectRevision=1&limit=1&recent=1&window=5m";
        let params: Params = serde_json::from_value(serde_json::json!({
            "namespace": "a", "kind": "Lane", "revision": 1, "prune": true, "dryRun": true,
            "expectRevision": 1, "limit": 1, "recent": 1, "window": "5m",
        }))
        .unwrap();
        let spelled: Vec<&str> = query
            .split('&')
            .filter_map(|kv| kv.split('=').next())
            .collect();
        assert_eq!(params.given(), spelled);
    }

    #[test]
    fn json_resources_become_yaml_documents_of_the_request_file() {
        let body = br#"{"resources": [{"kind": "Lane"}, {"kind": "TagPolicy"}]}"#;
        let ApplyBody(files) = apply(&typed("Application/JSON; charset=utf-8"), body).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "request");
        assert_eq!(
            files[0].1,
            "{\"kind\":\"Lane\"}\n---\n{\"kind\":\"TagPolicy\"}"
        );
    }

    #[test]
    fn other_content_types_and_bad_bodies_are_refused() {
        for content_type in ["text/plain", "application/jsonx", "multipart/form-data"] {
            assert!(matches!(
                apply(&typed(content_type), b"{}"),
                Err(ApiError::UnsupportedMediaType(_))
            ));
        }
        assert!(matches!(
            apply(&HeaderMap::new(), b"{}"),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            apply(&typed("application/yaml"), &[0xff, 0xfe]),
            Err(ApiError::BadRequest(_))
        ));
        for not_a_resource in [
            r#"[null]"#,
            r#"[1]"#,
            r#"["x"]"#,
            r#"[[]]"#,
            r#"[{}, null]"#,
        ] {
            let body = format!(r#"{{"resources": {not_a_resource}}}"#);
            let refused = apply(&typed("application/json"), body.as_bytes());
            assert!(
                matches!(&refused, Err(ApiError::BadRequest(m)) if m.contains("invalid JSON")),
                "{not_a_resource}"
            );
        }
        let unknown = json::<RollbackBody>(br#"{"to": 1, "from": 2}"#);
        assert!(matches!(unknown, Err(ApiError::BadRequest(m)) if m.contains("from")));
    }
}

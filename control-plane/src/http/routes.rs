//! `/api/v1`: each handler reads its request into the admin core's arguments and its
//! typed result into the contract's JSON (spec/http-api.md). Writes need an admin
//! token; the core, not the handler, says so.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

use super::HttpState;
use super::body::{self, Accepts, ApplyBody, ExplainBody, Params, ReleaseBody, RollbackBody};
use super::error::ApiError;
use crate::admin::{self, Caller, Selector, Write};
use crate::cli;
use crate::control::{Action, ChangeOutcome, ControlError};

mod rollouts;

/// `GET /api/v1/traffic`: per service × lane × subset rates over the window, as the
/// contract's JSON array. Built by the traffic-report module; the router only parses
/// `?window=` (default 5 minutes) and authenticates.
pub type TrafficHandler = Arc<dyn Fn(Duration) -> Value + Send + Sync>;

/// An apply body may hold the largest valid rule set a person would write by hand
/// many times over; anything larger is a mistake or an attack.
pub(crate) const APPLY_LIMIT: usize = 8 * 1024 * 1024;
/// Every other body is a few fields (explain's headers are the largest).
pub(crate) const SMALL_LIMIT: usize = 64 * 1024;

type ApiResult = Result<Response, ApiError>;

pub(super) fn router(state: HttpState) -> Router {
    let api = Router::new()
        .route("/rules", get(list_rules).post(apply))
        .route("/rules/{kind}/{name}", get(get_rule).delete(delete_rule))
        .route("/history", get(history))
        .route("/rollback", post(rollback))
        .route("/releases", get(releases))
        .route("/releases/{service}", get(release).put(set_release))
        .route("/sidecars", get(sidecars))
        .route("/lanes", get(lanes))
        .route("/traffic", get(traffic))
        .route("/traces", get(recent_traces))
        .route("/traces/{id}", get(trace))
        .route("/gaps", get(gaps))
        .route("/explain", post(explain))
        .route("/rollouts", get(rollouts::list))
        // `{target}` is NAME for a read, NAME:ACTION for an action (rollouts.rs).
        .route("/rollouts/{target}", get(rollouts::one).post(rollouts::act))
        .fallback(|| async { ApiError::UnknownPath })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::auth::require_token,
        ))
        .layer(axum::middleware::map_response(guarded));
    Router::new().nest("/api/v1", api).with_state(state)
}

/// Every API answer, errors and 401s included: never sniffed as another type (a
/// rule's text is no page to run), and never cached by a browser or proxy on the way
/// (it carries rules, identities, traffic; a viewer's token may be shared).
async fn guarded(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The query parameters of a route that `takes` those named. One it does not take
/// is a 400 like an unknown one: `?dryRun=true` on a rollback would otherwise be a
/// real write, and `?namespace=NS` an ignored one.
fn params(uri: &Uri, takes: &[&str]) -> Result<Params, ApiError> {
    let p = Query::<Params>::try_from_uri(uri)
        .map(|Query(p)| p)
        .map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))?;
    if let Some(other) = p.given().into_iter().find(|name| !takes.contains(name)) {
        let takes = match takes {
            [] => "none".to_owned(),
            _ => takes.join(", "),
        };
        return Err(ApiError::BadRequest(format!(
            "query: this route does not take `{other}` (it takes: {takes})"
        )));
    }
    Ok(p)
}

fn path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::BadRequest(format!("path: {}", e.body_text())))
}

/// A kind named in a path: one that does not exist names no resource, so 404.
fn path_kind(kind: &str) -> Result<graylane_routing::Kind, ApiError> {
    admin::kind(kind).map_err(|e| ControlError::NotFound(e.to_string()).into())
}

fn write(caller: Caller, p: &Params) -> Write {
    Write {
        caller,
        expect_revision: p.expect_revision,
        dry_run: p.dry_run.unwrap_or(false),
    }
}

/// The contract's change answer, with the CLI's words for each action.
fn changed(outcome: ChangeOutcome) -> Response {
    let changes: Vec<Value> = outcome
        .changes
        .iter()
        .map(|c| {
            let action = match c.action {
                Action::Created => "created",
                Action::Configured => "configured",
                Action::Unchanged => "unchanged",
                Action::Deleted => "deleted",
            };
            let mut change =
                json!({"resource": format!("{}/{}", c.kind, c.name), "action": action});
            if c.kind.is_namespaced() {
                change["namespace"] = json!(c.namespace);
            }
            change
        })
        .collect();
    Json(json!({
        "revision": outcome.revision,
        "committed": outcome.committed,
        "changes": changes,
    }))
    .into_response()
}

async fn list_rules(State(s): State<HttpState>, uri: Uri) -> ApiResult {
    let p = params(&uri, &["namespace", "kind", "revision"])?;
    let select = Selector {
        kind: p.kind.as_deref().map(admin::kind).transpose()?,
        namespace: p.namespace,
        revision: p.revision,
        ..Selector::default()
    };
    let (revision, resources) = s.core.get(&select).await?;
    Ok(Json(json!({"revision": revision, "resources": resources})).into_response())
}

async fn get_rule(
    State(s): State<HttpState>,
    uri: Uri,
    kind_name: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let p = params(&uri, &["namespace", "revision"])?;
    let (kind, name) = path(kind_name)?;
    let select = Selector {
        kind: Some(path_kind(&kind)?),
        name: Some(name),
        namespace: Some(p.namespace.unwrap_or_default()),
        revision: p.revision,
    };
    let (_, mut found) = s.core.get(&select).await?;
    // A kind and a name select at most one resource per namespace: the core said
    // NotFound for none.
    let resource = found.pop().map(|r| json!(r)).unwrap_or(Value::Null);
    Ok(Json(resource).into_response())
}

async fn apply(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    let p = params(&uri, &["namespace", "prune", "dryRun", "expectRevision"])?;
    let body = body::read(&headers, body, APPLY_LIMIT, Accepts::Rules).await?;
    let ApplyBody(mut files) = body::apply(&headers, &body)?;
    if let Some(namespace) = p.namespace.as_deref() {
        // As the CLI's `-n`: given to the namespaced documents without one, those
        // naming another refused (kubectl's rule).
        let namespace = admin::namespace_of(namespace)?;
        files = graylane_routing::files_with_namespace(files, namespace, true)
            .map_err(ControlError::Invalid)?;
    }
    // `?namespace=` scopes a prune as `-n` does the CLI's.
    let prune = admin::prune(p.prune.unwrap_or(false), p.namespace.as_deref())?;
    Ok(changed(
        s.core.apply(files, prune, write(caller, &p)).await?,
    ))
}

async fn delete_rule(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    kind_name: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let p = params(&uri, &["namespace", "dryRun", "expectRevision"])?;
    let (kind, name) = path(kind_name)?;
    let namespace = admin::namespace_of(p.namespace.as_deref().unwrap_or_default())?;
    let refs = vec![(path_kind(&kind)?, namespace.to_owned(), name)];
    Ok(changed(s.core.delete(refs, write(caller, &p)).await?))
}

async fn history(State(s): State<HttpState>, uri: Uri) -> ApiResult {
    let p = params(&uri, &["limit"])?;
    let entries: Vec<Value> = s
        .core
        .history(p.limit.unwrap_or(0))
        .await?
        .into_iter()
        .map(|(revision, m)| {
            cli::output::history_entry(
                revision,
                m.applied_at_ms,
                &m.applied_by,
                m.resources,
                &m.summary,
            )
        })
        .collect();
    Ok(Json(entries).into_response())
}

async fn rollback(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    let p = params(&uri, &["expectRevision"])?;
    let body = body::read(&headers, body, SMALL_LIMIT, Accepts::Json).await?;
    let RollbackBody { to } = body::json(&body)?;
    Ok(changed(s.core.rollback(to, write(caller, &p)).await?))
}

async fn releases(State(s): State<HttpState>, uri: Uri) -> ApiResult {
    let p = params(&uri, &["namespace"])?;
    let (_, states) = s.core.releases(p.namespace.as_deref(), None).await?;
    let states: Vec<Value> = states
        .into_iter()
        .map(|(namespace, service, state)| {
            json!({"service": service, "namespace": namespace, "state": state.to_string()})
        })
        .collect();
    Ok(Json(states).into_response())
}

async fn release(
    State(s): State<HttpState>,
    uri: Uri,
    service: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let p = params(&uri, &["namespace"])?;
    let service = path(service)?;
    let namespace = p.namespace.unwrap_or_default();
    let (_, states) = s.core.releases(Some(&namespace), Some(&service)).await?;
    let (namespace, service, state) = states
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::BadRequest(format!("service {service:?}: no state")))?;
    Ok(
        Json(json!({"service": service, "namespace": namespace, "state": state.to_string()}))
            .into_response(),
    )
}

async fn set_release(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    headers: HeaderMap,
    service: Result<Path<String>, PathRejection>,
    body: axum::body::Body,
) -> ApiResult {
    let p = params(&uri, &["namespace", "expectRevision"])?;
    let service = path(service)?;
    let body = body::read(&headers, body, SMALL_LIMIT, Accepts::Json).await?;
    let ReleaseBody { state, force } = body::json(&body)?;
    let state = admin::release_state(&state)?;
    let namespace = p.namespace.clone().unwrap_or_default();
    let write = write(caller, &p);
    let outcome = s
        .core
        .set_release(&namespace, &service, state, force, write)
        .await?;
    Ok(changed(outcome))
}

async fn sidecars(State(s): State<HttpState>, uri: Uri) -> ApiResult {
    params(&uri, &[])?;
    let (_, views) = s.core.sidecars().await?;
    let list: Vec<Value> = views
        .into_iter()
        .map(|v| {
            let e = v.entry;
            json!({
                "service": e.hello.service,
                "namespace": e.hello.namespace,
                "instance": e.hello.instance_id,
                "address": e.hello.address,
                "labels": e.hello.labels.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                "lane": v.lanes.first(),
                "lanes": v.lanes,
                "ackedRevision": e.acked_revision,
                "nack": e.nack.map(|(revision, reason)| json!({"revision": revision, "reason": reason})),
                "identity": e.identity,
                "endpointScope": admin::scope::json(admin::scope::message(e.scope).as_ref()),
            })
        })
        .collect();
    Ok(Json(list).into_response())
}

async fn lanes(State(s): State<HttpState>, uri: Uri) -> ApiResult {
    params(&uri, &[])?;
    let lanes: Vec<Value> = s
        .core
        .lanes()
        .await?
        .into_iter()
        .map(|l| {
            let services: Vec<Value> = l
                .services
                .into_iter()
                .map(|s| {
                    json!({
                        "service": s.service, "namespace": s.namespace,
                        "instances": s.instances, "fallsBackTo": s.falls_back_to,
                    })
                })
                .collect();
            json!({
                "name": l.name, "tag": l.tag, "selector": l.selector,
                "fallback": l.fallback, "services": services,
            })
        })
        .collect();
    Ok(Json(lanes).into_response())
}

/// The shortest traffic window: one slot of the control plane's window.
const MIN_TRAFFIC_WINDOW: Duration = Duration::from_secs(10);

async fn traffic(State(s): State<HttpState>, uri: Uri) -> ApiResult {
    let p = params(&uri, &["window"])?;
    let Some(handler) = &s.traffic else {
        return Err(ApiError::UnknownPath);
    };
    let window = match p.window.as_deref() {
        None => Duration::from_secs(300),
        Some(w) => cli::parse_duration(w)
            .map_err(|e| ApiError::BadRequest(format!("window {w:?}: {e}")))
            .and_then(|d| {
                // A window the reports do not cover would be answered for less time
                // than asked, silently: refused instead.
                if (MIN_TRAFFIC_WINDOW..=crate::traffic::MAX_WINDOW).contains(&d) {
                    Ok(d)
                } else {
                    Err(ApiError::BadRequest(format!(
                        "window {w:?}: between 10s (one report slot) and 15m (what is kept)"
                    )))
                }
            })?,
    };
    Ok(Json(handler(window)).into_response())
}

async fn recent_traces(State(s): State<HttpState>, uri: Uri) -> ApiResult {
    let p = params(&uri, &["recent"])?;
    // As the CLI's `--recent N`: at least one (at most 1,000 are kept to list).
    if p.recent == Some(0) {
        return Err(ApiError::BadRequest("recent: must be at least 1".into()));
    }
    let traces = s.core.recent_traces(p.recent.unwrap_or(20));
    let list: Vec<Value> = traces.iter().map(cli::trace::to_json).collect();
    Ok(Json(list).into_response())
}

async fn trace(
    State(s): State<HttpState>,
    uri: Uri,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    params(&uri, &[])?;
    let trace = s.core.trace(&path(id)?)?;
    // The CLI prints a list for one id too: the same shape here.
    Ok(Json(json!([cli::trace::to_json(&trace)])).into_response())
}

async fn gaps(State(s): State<HttpState>, uri: Uri) -> ApiResult {
    params(&uri, &[])?;
    Ok(Json(cli::gaps::to_json(&s.core.gaps())).into_response())
}

async fn explain(
    State(s): State<HttpState>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    let p = params(&uri, &["namespace"])?;
    let body = body::read(&headers, body, SMALL_LIMIT, Accepts::Json).await?;
    let request: ExplainBody = body::json(&body)?;
    let args = request.into_args();
    let namespace = p.namespace.unwrap_or_default();
    Ok(Json(s.core.explain(&args, &namespace).await?).into_response())
}

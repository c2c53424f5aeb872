//! The admin HTTP server (axum), bound to loopback by default.
//!
//! Open: `/healthz` (liveness), `/readyz` (readiness, lists degraded children), `/metrics`
//! (Prometheus text), `/` (a page that shows the local timeline) and the local platform's
//! `/local/*` routes. Everything under `/admin/` needs `Authorization: Bearer <token>` with the
//! token from `admin.token` (by default the `CHORUS_ADMIN_TOKEN` environment variable); without a
//! configured token those routes answer 503.

mod content;
mod error;
mod page;
mod trading;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::config::Secret;
use crate::directory::Directory;
use crate::health::Health;
use crate::memory::MemoryMsg;
use crate::platform::local::{Fault, LocalPlatform};
use crate::service::ReloadError;
use crate::store::Db;
use crate::store::MemoryKind;
use crate::team_leader::ReloadSummary;

pub use error::ApiError;

/// Asks the service to reload its configuration file.
pub struct ReloadRequest {
    pub reply: oneshot::Sender<Result<ReloadSummary, ReloadError>>,
}

#[derive(Clone)]
pub struct AdminState {
    pub health: Arc<Health>,
    pub db: Db,
    pub local: LocalPlatform,
    pub prometheus: PrometheusHandle,
    pub token: Option<Secret>,
    pub reload: mpsc::Sender<ReloadRequest>,
    /// Where the Memory actor and the Traders are.
    pub directory: Arc<Directory>,
    /// The trading kill switch.
    pub trading: Arc<crate::trader::TradingControl>,
    /// The running configuration (replaced on reload), for the review of operators' posts and edits.
    pub config: Arc<std::sync::Mutex<Arc<crate::config::Config>>>,
    /// The platforms, for their text limits.
    pub platforms: crate::platform::Platforms,
}

impl AdminState {
    pub fn current_config(&self) -> Arc<crate::config::Config> {
        crate::sync::lock(&self.config).clone()
    }

    /// The longest text `platform` takes.
    pub fn max_chars(&self, platform: crate::config::PlatformKind) -> usize {
        self.platforms
            .get(platform)
            .map_or(crate::platform::local::MAX_POST_CHARS, |platform| platform.max_text_chars())
    }
}

pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/admin/status", get(status))
        .route("/admin/reload", post(reload))
        .route("/admin/local/faults/{account}", put(set_fault))
        .route("/admin/memory/{persona}/search", get(memory_search))
        .merge(trading::routes())
        .merge(content::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/", get(|| async { Html(page::TIMELINE) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/local/timeline", get(timeline))
        .route("/local/posts", post(create_post))
        .route("/local/posts/{id}/replies", get(replies))
        .merge(protected)
        .with_state(state)
}

/// Binds the listener (so a bad address fails start-up) and serves until `shutdown` resolves.
pub async fn serve(
    listen: SocketAddr,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "admin server listens beyond loopback; protect it with a firewall");
    }
    let app = router(state);
    let handle = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %err, "admin server failed");
        }
    });
    Ok((addr, handle))
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.token else {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "admin token not configured (admin.token)")
            .into_response();
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), expected.expose().as_bytes()) => next.run(request).await,
        _ => ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemorySearchQuery {
    q: String,
    k: Option<usize>,
    kind: Option<String>,
    /// Only memories created at or after this time (epoch milliseconds).
    since: Option<i64>,
}

/// `GET /admin/memory/{persona}/search?q=..&k=10&kind=post&since=<epoch ms>`: the persona's
/// memories most similar to `q`, most similar first (`k` 1–100, default 10; `kind` one of post,
/// reply, inbound, fact, trade; `since` only memories created from then on).
async fn memory_search(
    State(state): State<AdminState>,
    Path(persona): Path<String>,
    Query(query): Query<MemorySearchQuery>,
) -> Result<Response, ApiError> {
    let k = query.k.unwrap_or(10);
    if !(1..=100).contains(&k) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "k: expected 1 to 100"));
    }
    if query.q.trim().is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "q: expected some text to search for"));
    }
    let kind = match query.kind.as_deref() {
        None => None,
        Some(kind) => Some(MemoryKind::parse(kind).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "kind: expected post, reply, inbound, fact or trade")
        })?),
    };
    let memory = state
        .directory
        .memory()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "memory is restarting"))?;
    let (text, since) = (query.q, query.since);
    let search = |reply| MemoryMsg::Search { persona, query: text, k, kind, since, reply };
    let hits = ractor::call_t!(memory, search, 10_000)
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "memory did not answer in time"))?;
    Ok(Json(json!({ "hits": hits })).into_response())
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let readiness = state.health.readiness();
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(readiness)).into_response()
}

async fn metrics_text(State(state): State<AdminState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.prometheus.render()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimelineQuery {
    before: Option<i64>,
    limit: Option<i64>,
}

async fn timeline(State(state): State<AdminState>, Query(query): Query<TimelineQuery>) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let posts = state.db.local_timeline(query.before, limit).await?;
    Ok(Json(json!({ "posts": posts })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPost {
    author: String,
    text: String,
    reply_to: Option<i64>,
}

async fn create_post(State(state): State<AdminState>, Json(body): Json<NewPost>) -> Result<Response, ApiError> {
    let post = state.local.post(&body.author, &body.text, body.reply_to, None, "api").await?;
    Ok((StatusCode::CREATED, Json(post)).into_response())
}

async fn replies(State(state): State<AdminState>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let posts = state.db.local_replies(id).await?;
    Ok(Json(json!({ "posts": posts })).into_response())
}

async fn status(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let outbox = state.db.outbox_counts().await?;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        // The runtime serving this request is the service's (`runtime.worker_threads`).
        "runtime": { "worker_threads": tokio::runtime::Handle::current().metrics().num_workers() },
        "readiness": state.health.readiness(),
        "children": state.health.children(),
        "outbox": outbox,
    }))
    .into_response())
}

async fn reload(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let (reply, answer) = oneshot::channel();
    state
        .reload
        .send(ReloadRequest { reply })
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "service is shutting down"))?;
    let result =
        answer.await.map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "service is shutting down"))?;
    match result {
        Ok(summary) => Ok(Json(json!({ "applied": true, "summary": summary })).into_response()),
        Err(ReloadError::Invalid(errors)) => {
            let errors: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "applied": false, "errors": errors }))).into_response())
        }
        Err(err @ ReloadError::TreeUnavailable) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultBody {
    fault: Option<Fault>,
}

async fn set_fault(
    State(state): State<AdminState>,
    Path(account): Path<String>,
    Json(body): Json<FaultBody>,
) -> Response {
    state.local.set_fault(&account, body.fault);
    tracing::warn!(account = %account, fault = ?body.fault, "local platform fault set");
    StatusCode::NO_CONTENT.into_response()
}

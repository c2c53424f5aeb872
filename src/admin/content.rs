//! Admin routes of the content pipeline, the airlock and the weekly report (all behind the
//! bearer token). Whoever acts names themselves in `by`; it goes to the stage log with the time.
//!
//! - `GET /admin/content?stage=&persona=&platform=&kind=&limit=`: items, newest first.
//! - `GET /admin/content/{id}`: one item, its stage log and its latest engagement.
//! - `POST /admin/content` `{"persona", "platform", "text", "by"}`: an operator's post, through
//!   the same review and airlock as a persona's (`submitted_by` is the operator).
//! - `GET /admin/airlock`: held items waiting for a human, and trades awaiting approval.
//! - `POST /admin/airlock/{id}/approve` `{"by", "text"?}`: approve, or edit then approve (the
//!   edit is reviewed again). Under the two-person rule whoever submitted or edited an item
//!   cannot approve it: an edit is saved (202) and waits for someone else.
//! - `POST /admin/airlock/{id}/reject` `{"by", "reason"}`.
//! - `GET /admin/reports`: stored weekly reports; `GET /admin/reports/week?week=last|current|YYYY-MM-DD`
//!   builds (and stores) one week's report now: `{"week_start", "markdown", "report"}`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::trading::who;
use super::{AdminState, ApiError};
use crate::config::{Config, PlatformKind};
use crate::metrics as m;
use crate::pipeline::{self, Gate, Gatekeeper};
use crate::policy::SecretSet;
use crate::publisher::PublisherMsg;
use crate::store::{AirlockRefusal, Approval, ContentFilter, ContentLog, NewContent, STAGES, TradeStatus, now_ms};

pub fn routes() -> Router<AdminState> {
    use axum::routing::{get, post};
    Router::new()
        .route("/admin/content", get(list).post(submit))
        .route("/admin/content/{id}", get(item))
        .route("/admin/airlock", get(airlock))
        .route("/admin/airlock/{id}/approve", post(approve))
        .route("/admin/airlock/{id}/reject", post(reject))
        .route("/admin/reports", get(reports))
        .route("/admin/reports/week", get(week_report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    stage: Option<String>,
    persona: Option<String>,
    platform: Option<String>,
    kind: Option<String>,
    limit: Option<i64>,
}

async fn list(State(state): State<AdminState>, Query(query): Query<ListQuery>) -> Result<Response, ApiError> {
    if let Some(stage) = query.stage.as_deref().filter(|stage| !STAGES.contains(stage)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("stage: unknown stage {stage:?} (one of {})", STAGES.join(", ")),
        ));
    }
    let filter = ContentFilter {
        stage: query.stage,
        persona: query.persona,
        platform: query.platform,
        kind: query.kind,
        limit: query.limit.unwrap_or(50).clamp(1, 500),
    };
    let items = state.db.content_items(&filter).await?;
    Ok(Json(json!({"items": items})).into_response())
}

async fn item(State(state): State<AdminState>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let item = state.db.content_item(id).await?.ok_or_else(|| not_found(id))?;
    let events = state.db.content_events(id).await?;
    let engagement = state.db.latest_engagement(id).await?;
    Ok(Json(json!({"item": item, "events": events, "engagement": engagement})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    persona: String,
    platform: String,
    text: String,
    by: String,
}

/// An operator's post: the review and the airlock decide as for a persona's own.
async fn submit(State(state): State<AdminState>, Json(body): Json<SubmitBody>) -> Result<Response, ApiError> {
    let by = who(&body.by)?.to_owned();
    let config = state.current_config();
    let persona = config
        .personas
        .get(&body.persona)
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("persona: no persona {:?}", body.persona)))?;
    let platform = PlatformKind::ALL
        .into_iter()
        .find(|kind| kind.as_str() == body.platform)
        .filter(|kind| persona.platforms.contains(kind) && config.service.platform_enabled(*kind))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("platform: {} does not post on {:?}", persona.name, body.platform),
            )
        })?;
    if body.text.trim().is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "text: must not be empty"));
    }
    let max_chars = state.max_chars(platform);
    let keeper = gatekeeper(&config, &persona, platform);
    let key = format!("post:{platform}:{}:manual:{}-{:08x}", persona.name, now_ms(), rand::random::<u32>());
    let content = NewContent {
        stage: "submitted",
        idempotency_key: key.clone(),
        persona: persona.name.clone(),
        platform: platform.as_str().to_owned(),
        kind: "post".to_owned(),
        reply_to: None,
        conversation: None,
        inbound_id: None,
        submitted_by: by.clone(),
    };
    let mut log = ContentLog { submitted_by: Some(by.clone()), ..ContentLog::default() };
    log.push("generate", "submitted", None, &by);
    let draft = pipeline::Draft {
        content: &content,
        log,
        kind: "post",
        text: &body.text,
        platform,
        max_chars,
        replying_to: None,
        persona: &persona,
        actor: &by,
    };
    let decision = match pipeline::gate(&state.db, &state.directory, &keeper, draft).await? {
        Gate::Queue(text, log) => {
            let outbox = crate::store::NewOutbox {
                idempotency_key: key.clone(),
                persona: persona.name.clone(),
                platform: platform.as_str().to_owned(),
                kind: "post".to_owned(),
                text,
                reply_to: None,
                conversation: None,
            };
            state.db.enqueue_logged(&outbox, None, Some(&log)).await?;
            kick_publisher(&state);
            json!({"decision": "queued"})
        }
        Gate::Held(reason) => json!({"decision": "held", "reason": reason}),
        Gate::Blocked(reason) => json!({"decision": "blocked", "reason": reason}),
    };
    let item = state.db.content_by_key(&key).await?;
    Ok((StatusCode::CREATED, Json(json!({"item": item, "outcome": decision}))).into_response())
}

async fn airlock(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let now = now_ms();
    let filter = ContentFilter { stage: Some("held".to_owned()), limit: 500, ..ContentFilter::default() };
    let held: Vec<_> = state
        .db
        .content_items(&filter)
        .await?
        .into_iter()
        .filter(|item| item.expires_at.is_none_or(|at| at > now))
        .collect();
    metrics::gauge!(m::AIRLOCK_HELD).set(held.len() as f64);
    let trades: Vec<_> = state
        .db
        .trades(None, &[TradeStatus::AwaitingApproval], 500)
        .await?
        .into_iter()
        .filter(|trade| trade.approval_expires_at.is_none_or(|at| at > now))
        .collect();
    Ok(Json(json!({"held": held, "trades": trades, "trades_approve_at": "/admin/trading/approvals/{id}/approve"}))
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    by: String,
    /// The text to publish instead (edit-then-approve).
    text: Option<String>,
}

async fn approve(
    State(state): State<AdminState>,
    Path(id): Path<i64>,
    Json(body): Json<ApproveBody>,
) -> Result<Response, ApiError> {
    let by = who(&body.by)?;
    let item = state.db.content_item(id).await?.ok_or_else(|| not_found(id))?;
    let config = state.current_config();
    let persona = config.personas.get(&item.persona).cloned();
    let platform = PlatformKind::ALL.into_iter().find(|kind| kind.as_str() == item.platform);
    let (Some(persona), Some(platform)) = (persona, platform) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("item {id} belongs to {}@{}, which is no longer configured", item.persona, item.platform),
        ));
    };
    let keeper = gatekeeper(&config, &persona, platform);
    let edit = body.text.as_deref().map(str::trim).filter(|text| !text.is_empty());
    if let Some(text) = edit {
        // An edit passes the same review as a generated draft; only flags are left to the human.
        let review = pipeline::review_edit(&keeper, platform, state.max_chars(platform), None, text);
        if review.blocked() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the edited text is blocked by the policy review: {}", review.reasons()),
            ));
        }
    }
    // The row counts in the account's outbox backlog as soon as it is committed, so the agents'
    // `max_unpublished` sees it whatever the Publisher's sweep is doing.
    let write = state.directory.outbox.outside_write();
    let decided = state.db.approve_content(id, by, edit, keeper.airlock.two_person).await?;
    match decided {
        Ok(Approval::Queued { outbox_id, created }) => {
            write.landed(&item.platform, &item.persona, i64::from(created));
            let label = if edit.is_some() { "edited" } else { "approved" };
            metrics::counter!(m::AIRLOCK_DECISIONS, "decision" => label).increment(1);
            tracing::info!(item = id, by, edited = edit.is_some(), "held item approved");
            kick_publisher(&state);
            let item = state.db.content_item(id).await?;
            Ok(Json(json!({"item": item, "outbox_id": outbox_id})).into_response())
        }
        Ok(Approval::EditedAwaitingApproval) => {
            tracing::info!(item = id, by, "held item edited; waiting for a second approver");
            let item = state.db.content_item(id).await?;
            Ok((StatusCode::ACCEPTED, Json(json!({"item": item, "waiting_for": "another approver (two-person rule)"})))
                .into_response())
        }
        Err(refusal) => Err(refused(id, refusal)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    by: String,
    reason: Option<String>,
}

async fn reject(
    State(state): State<AdminState>,
    Path(id): Path<i64>,
    Json(body): Json<RejectBody>,
) -> Result<Response, ApiError> {
    let by = who(&body.by)?;
    let reason = body.reason.as_deref().map(str::trim).filter(|reason| !reason.is_empty()).unwrap_or("rejected");
    match state.db.reject_content(id, by, reason).await? {
        Ok(()) => {
            metrics::counter!(m::AIRLOCK_DECISIONS, "decision" => "rejected").increment(1);
            tracing::info!(item = id, by, "held item rejected");
            let item = state.db.content_item(id).await?;
            Ok(Json(json!({"item": item})).into_response())
        }
        Err(refusal) => Err(refused(id, refusal)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeekQuery {
    week: Option<String>,
}

async fn reports(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let stored = state.db.reports(104).await?;
    let reports: Vec<_> = stored
        .into_iter()
        .map(|(week_start, generated_at)| json!({"week_start": week_start, "generated_at": generated_at}))
        .collect();
    Ok(Json(json!({"reports": reports})).into_response())
}

async fn week_report(State(state): State<AdminState>, Query(query): Query<WeekQuery>) -> Result<Response, ApiError> {
    let spec = query.week.as_deref().unwrap_or("last");
    let week = crate::report::resolve_week(spec, now_ms())
        .map_err(|message| ApiError::new(StatusCode::BAD_REQUEST, format!("week: {message}")))?;
    let report = crate::report::generate_and_store(&state.db, week).await?;
    metrics::counter!(m::REPORTS, "trigger" => "admin").increment(1);
    Ok(Json(json!({
        "week_start": week.format("%Y-%m-%d").to_string(),
        "markdown": report.to_markdown(),
        "report": report,
    }))
    .into_response())
}

fn gatekeeper(config: &Config, persona: &crate::config::Persona, platform: PlatformKind) -> Gatekeeper {
    let team = std::sync::Arc::new(pipeline::team_handles(config, platform));
    Gatekeeper::new(config, persona, std::sync::Arc::new(SecretSet::from_config(config)), team)
}

fn kick_publisher(state: &AdminState) {
    if let Some(publisher) = state.directory.publisher() {
        let _ = publisher.send_message(PublisherMsg::Kick);
    }
}

fn not_found(id: i64) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no content item {id}"))
}

fn refused(id: i64, refusal: AirlockRefusal) -> ApiError {
    match refusal {
        AirlockRefusal::NotFound => not_found(id),
        AirlockRefusal::NotHeld(stage) if stage == "expired" => {
            ApiError::new(StatusCode::GONE, format!("item {id} expired before the decision"))
        }
        AirlockRefusal::NotHeld(stage) => {
            ApiError::new(StatusCode::CONFLICT, format!("item {id} is {stage}, not held for approval"))
        }
        AirlockRefusal::Expired => ApiError::new(StatusCode::GONE, format!("item {id} expired before the decision")),
        AirlockRefusal::SecondPersonNeeded(message) => ApiError::new(StatusCode::FORBIDDEN, message),
    }
}

//! Admin routes of the Trader (all behind the bearer token):
//!
//! - `GET /admin/trading`: the kill switch, every Trader's wallet, prices and P&L, and the trades
//!   awaiting approval.
//! - `PUT /admin/trading/kill-switch` `{"on": true, "by": "alice"}`: the operator's kill switch.
//! - `GET /admin/trading/approvals`: trades awaiting a human.
//! - `POST /admin/trading/approvals/{id}/approve` and `/reject` `{"by": "alice"}`.
//! - `GET /admin/trading/trades?persona=&status=&limit=` and `GET /admin/trading/audit?persona=&trade=&limit=`.
//! - `POST /admin/trading/{persona}/decide`: ask the persona's model for a decision now.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{AdminState, ApiError};
use crate::store::{Decided, NewAudit, TradeStatus, now_ms};
use crate::trader::TraderMsg;

pub fn routes() -> Router<AdminState> {
    use axum::routing::{get, post, put};
    Router::new()
        .route("/admin/trading", get(overview))
        .route("/admin/trading/kill-switch", put(kill_switch))
        .route("/admin/trading/approvals", get(approvals))
        .route("/admin/trading/approvals/{id}/approve", post(approve))
        .route("/admin/trading/approvals/{id}/reject", post(reject))
        .route("/admin/trading/trades", get(trades))
        .route("/admin/trading/audit", get(audit))
        .route("/admin/trading/{persona}/decide", post(decide))
}

async fn overview(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let kill_switch = state.trading.state().await?;
    let mut traders = Vec::new();
    for (persona, trader) in state.directory.traders() {
        match ractor::call_t!(trader, |reply| TraderMsg::Status { reply }, 5_000) {
            Ok(status) => traders.push(serde_json::to_value(status).unwrap_or_default()),
            Err(_) => traders.push(json!({"persona": persona, "error": "the trader did not answer in time"})),
        }
    }
    let awaiting = state.db.trades(None, &[TradeStatus::AwaitingApproval], 100).await?;
    Ok(Json(json!({"kill_switch": kill_switch, "traders": traders, "awaiting_approval": awaiting})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KillSwitchBody {
    on: bool,
    /// Who is switching (kept in the database and the log).
    by: String,
}

async fn kill_switch(State(state): State<AdminState>, Json(body): Json<KillSwitchBody>) -> Result<Response, ApiError> {
    let by = who(&body.by)?;
    let switched = state.trading.set_operator(body.on, by).await?;
    for (persona, _) in state.directory.traders() {
        let detail = json!({"on": body.on, "by": by, "effective": switched.on});
        state.db.insert_audit(&NewAudit { persona: &persona, trade_id: None, event: "kill_switch", detail }).await?;
    }
    Ok(Json(switched).into_response())
}

async fn approvals(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let now = now_ms();
    let awaiting = state.db.trades(None, &[TradeStatus::AwaitingApproval], 500).await?;
    let open: Vec<_> =
        awaiting.into_iter().filter(|trade| trade.approval_expires_at.is_none_or(|at| at > now)).collect();
    Ok(Json(json!({"approvals": open})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    by: String,
    note: Option<String>,
}

async fn approve(
    State(state): State<AdminState>,
    Path(id): Path<i64>,
    Json(body): Json<DecisionBody>,
) -> Result<Response, ApiError> {
    decide_approval(state, id, body, true).await
}

async fn reject(
    State(state): State<AdminState>,
    Path(id): Path<i64>,
    Json(body): Json<DecisionBody>,
) -> Result<Response, ApiError> {
    decide_approval(state, id, body, false).await
}

async fn decide_approval(state: AdminState, id: i64, body: DecisionBody, approve: bool) -> Result<Response, ApiError> {
    let by = who(&body.by)?;
    match state.db.decide_trade(id, approve, by, now_ms()).await? {
        Decided::Done(trade) => {
            let event = if approve { "approved" } else { "rejected" };
            let detail = json!({"by": by, "note": body.note});
            state.db.insert_audit(&NewAudit { persona: &trade.persona, trade_id: Some(id), event, detail }).await?;
            metrics::counter!(crate::metrics::TRADER_TRADES, "persona" => trade.persona.clone(), "mode" => trade.mode.clone(), "outcome" => event)
                .increment(1);
            tracing::info!(trade = id, persona = %trade.persona, by, event, "trade approval decided");
            if approve {
                match state.directory.trader(&trade.persona) {
                    Some(trader) => {
                        let _ = trader.send_message(TraderMsg::Execute { trade_id: id });
                    }
                    None => tracing::warn!(trade = id, "no trader running for the approved trade; it runs when one is"),
                }
            }
            Ok(Json(json!({"trade": trade})).into_response())
        }
        Decided::Expired(trade) => {
            let detail = json!({"by": by, "approval_expires_at": trade.approval_expires_at});
            state
                .db
                .insert_audit(&NewAudit { persona: &trade.persona, trade_id: Some(id), event: "expired", detail })
                .await?;
            Err(ApiError::new(StatusCode::GONE, format!("trade {id} expired before the decision")))
        }
        Decided::NotAwaiting(Some(trade)) if trade.status == TradeStatus::Expired => {
            Err(ApiError::new(StatusCode::GONE, format!("trade {id} expired before the decision")))
        }
        Decided::NotAwaiting(None) => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no trade {id}"))),
        Decided::NotAwaiting(Some(trade)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("trade {id} is {}, not awaiting approval", trade.status.as_str()),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TradesQuery {
    persona: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

async fn trades(State(state): State<AdminState>, Query(query): Query<TradesQuery>) -> Result<Response, ApiError> {
    let statuses =
        match query.status.as_deref() {
            None => Vec::new(),
            Some(text) => vec![TradeStatus::parse(text).ok_or_else(|| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("status: unknown trade status {text:?}"))
            })?],
        };
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let rows = state.db.trades(query.persona.as_deref(), &statuses, limit).await?;
    Ok(Json(json!({"trades": rows})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    persona: Option<String>,
    trade: Option<i64>,
    limit: Option<i64>,
}

async fn audit(State(state): State<AdminState>, Query(query): Query<AuditQuery>) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let events = state.db.audit(query.persona.as_deref(), query.trade, limit).await?;
    Ok(Json(json!({"events": events})).into_response())
}

async fn decide(State(state): State<AdminState>, Path(persona): Path<String>) -> Result<Response, ApiError> {
    let trader = state
        .directory
        .trader(&persona)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no trader for persona {persona:?}")))?;
    trader
        .send_message(TraderMsg::Decide)
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the trader is restarting"))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"queued": true}))).into_response())
}

/// The name of whoever acts, required for the audit trail.
pub(super) fn who(by: &str) -> Result<&str, ApiError> {
    let by = by.trim();
    if by.is_empty() || by.chars().count() > 64 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "by: expected who is acting (1 to 64 characters)"));
    }
    Ok(by)
}

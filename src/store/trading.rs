//! Trading queries: the Trader's trades, the audit trail of what it decided, paper balances and
//! operator flags (the kill switch).
//!
//! A trade moves through [`TradeStatus`] by compare-and-set: every change is one
//! `UPDATE … WHERE id = $1 AND status IN (…)`, so two actors (or an actor and an operator) racing
//! on one trade cannot both win, on SQLite or on Postgres. A paper fill moves the balances and the
//! status in one transaction, so a trade is filled at most once.
//!
//! Amounts are `u64` in the API (token smallest units; `value` is USD micro-units) and BIGINT in
//! the tables. A value above `i64::MAX` is refused with [`StoreError::Query`] (an encode error),
//! never wrapped; a stored value that does not fit its Rust type is a decode error.
//!
//! The audit trail is written by the caller ([`Db::insert_audit`]): these queries change state only.

use std::collections::BTreeMap;

use sqlx::AnyConnection;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Db, StoreError, StoreResult, now_ms, placeholders, sql_limit};

/// Where a trade is in its life. `awaiting_approval → approved | rejected | expired`;
/// `approved → executing`; `executing → filled (paper) | signed (live) | failed`;
/// `signed → sent | failed`; `sent → confirmed | failed | expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TradeStatus {
    /// Proposed; an operator must approve it before its expiry.
    AwaitingApproval,
    /// Approved (by an operator or by policy); not started yet.
    Approved,
    /// Refused by an operator.
    Rejected,
    /// Not approved in time, or (live) its transaction's blockhash ran out unconfirmed.
    Expired,
    /// Started: a paper fill or a live signature may follow at any moment.
    Executing,
    /// Paper trade applied to the paper balances.
    Filled,
    /// Live transaction signed (signature stored), not sent yet.
    Signed,
    /// Live transaction sent, not confirmed yet.
    Sent,
    /// Live transaction confirmed on chain.
    Confirmed,
    /// Gave up; `error` says why.
    Failed,
}

impl TradeStatus {
    pub const ALL: [TradeStatus; 10] = [
        TradeStatus::AwaitingApproval,
        TradeStatus::Approved,
        TradeStatus::Rejected,
        TradeStatus::Expired,
        TradeStatus::Executing,
        TradeStatus::Filled,
        TradeStatus::Signed,
        TradeStatus::Sent,
        TradeStatus::Confirmed,
        TradeStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TradeStatus::AwaitingApproval => "awaiting_approval",
            TradeStatus::Approved => "approved",
            TradeStatus::Rejected => "rejected",
            TradeStatus::Expired => "expired",
            TradeStatus::Executing => "executing",
            TradeStatus::Filled => "filled",
            TradeStatus::Signed => "signed",
            TradeStatus::Sent => "sent",
            TradeStatus::Confirmed => "confirmed",
            TradeStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// The statuses this one may become.
    pub fn next(self) -> &'static [TradeStatus] {
        use TradeStatus::*;
        match self {
            AwaitingApproval => &[Approved, Rejected, Expired],
            Approved => &[Executing, Failed],
            Executing => &[Filled, Signed, Failed],
            Signed => &[Sent, Failed],
            Sent => &[Confirmed, Failed, Expired],
            Rejected | Expired | Filled | Confirmed | Failed => &[],
        }
    }

    pub fn can_become(self, to: TradeStatus) -> bool {
        self.next().contains(&to)
    }

    /// The trade may have moved funds (or, on paper, did): it counts toward daily limits and
    /// cool-downs.
    pub fn may_have_executed(self) -> bool {
        matches!(
            self,
            TradeStatus::Executing
                | TradeStatus::Filled
                | TradeStatus::Signed
                | TradeStatus::Sent
                | TradeStatus::Confirmed
        )
    }
}

/// A trade to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTrade {
    pub persona: String,
    /// `paper` or `live`.
    pub mode: String,
    pub status: TradeStatus,
    pub input_mint: String,
    pub output_mint: String,
    pub in_amount: u64,
    /// As quoted.
    pub out_amount: u64,
    /// USD micro-units.
    pub value: u64,
    pub slippage_bps: u16,
    /// The model's reason.
    pub reason: String,
    /// The quote, as JSON text.
    pub quote: String,
    /// Epoch ms after which an awaiting trade can no longer be approved.
    pub approval_expires_at: Option<i64>,
}

/// A stored trade.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TradeRow {
    pub id: i64,
    pub persona: String,
    pub mode: String,
    pub status: TradeStatus,
    pub input_mint: String,
    pub output_mint: String,
    pub in_amount: u64,
    pub out_amount: u64,
    pub value: u64,
    pub slippage_bps: u16,
    pub reason: String,
    pub quote: String,
    pub signature: Option<String>,
    /// Base64.
    pub signed_tx: Option<String>,
    pub last_valid_block_height: Option<u64>,
    pub approval_expires_at: Option<i64>,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TradeRow {
    fn from_row(row: &AnyRow) -> StoreResult<Self> {
        let status: String = row.try_get("status")?;
        let Some(parsed) = TradeStatus::parse(&status) else {
            return Err(decode_error("status", format!("unknown trade status {status:?}")));
        };
        Ok(Self {
            id: row.try_get("id")?,
            persona: row.try_get("persona")?,
            mode: row.try_get("mode")?,
            status: parsed,
            input_mint: row.try_get("input_mint")?,
            output_mint: row.try_get("output_mint")?,
            in_amount: from_db("in_amount", row.try_get("in_amount")?)?,
            out_amount: from_db("out_amount", row.try_get("out_amount")?)?,
            value: from_db("value", row.try_get("value")?)?,
            slippage_bps: from_db("slippage_bps", row.try_get("slippage_bps")?)?,
            reason: row.try_get("reason")?,
            quote: row.try_get("quote")?,
            signature: row.try_get("signature")?,
            signed_tx: row.try_get("signed_tx")?,
            last_valid_block_height: row
                .try_get::<Option<i64>, _>("last_valid_block_height")?
                .map(|height| from_db("last_valid_block_height", height))
                .transpose()?,
            approval_expires_at: row.try_get("approval_expires_at")?,
            decided_by: row.try_get("decided_by")?,
            decided_at: row.try_get("decided_at")?,
            error: row.try_get("error")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

const TRADE_COLUMNS: &str = "id, persona, mode, status, input_mint, output_mint, in_amount, out_amount, value, \
     slippage_bps, reason, quote, signature, signed_tx, last_valid_block_height, approval_expires_at, decided_by, \
     decided_at, error, created_at, updated_at";

/// An audit event to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAudit<'a> {
    pub persona: &'a str,
    pub trade_id: Option<i64>,
    /// What happened (`proposed`, `approved`, `kill_switch`…).
    pub event: &'a str,
    pub detail: serde_json::Value,
}

/// A stored audit event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditEvent {
    pub id: i64,
    pub persona: String,
    pub trade_id: Option<i64>,
    pub event: String,
    pub detail: serde_json::Value,
    pub at: i64,
}

impl AuditEvent {
    fn from_row(row: &AnyRow) -> StoreResult<Self> {
        let detail: String = row.try_get("detail")?;
        let detail = serde_json::from_str(&detail).map_err(|err| decode_error("detail", err))?;
        Ok(Self {
            id: row.try_get("id")?,
            persona: row.try_get("persona")?,
            trade_id: row.try_get("trade_id")?,
            event: row.try_get("event")?,
            detail,
            at: row.try_get("at")?,
        })
    }
}

/// Result of [`Db::decide_trade`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// The decision took effect: the trade is now approved or rejected.
    Done(TradeRow),
    /// Unknown id (`None`), or the trade is not awaiting approval (already decided, expired…).
    NotAwaiting(Option<TradeRow>),
    /// The trade was past its expiry: it is now marked expired and the decision was dropped.
    Expired(TradeRow),
}

/// Result of [`Db::paper_fill`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaperFill {
    /// The balances moved and the trade is filled; the persona's balances after the fill.
    Filled { balances: BTreeMap<String, u64> },
    /// The input balance is below the amount to sell; nothing changed.
    Insufficient { balance: u64 },
    /// The trade is not this persona's, or not `executing` (never started, or filled already);
    /// nothing changed.
    NotExecuting,
}

impl Db {
    // ----- trades -----

    /// Stores a trade and returns its id. The caller writes the audit event.
    pub async fn insert_trade(&self, trade: &NewTrade) -> StoreResult<i64> {
        if trade.mode != "paper" && trade.mode != "live" {
            return Err(invalid(format!("trade mode must be paper or live, not {:?}", trade.mode)));
        }
        let in_amount = to_db("in_amount", trade.in_amount)?;
        let out_amount = to_db("out_amount", trade.out_amount)?;
        let value = to_db("value", trade.value)?;
        let now = now_ms();
        let executed_at = trade.status.may_have_executed().then_some(now);
        let row = sqlx::query(
            "INSERT INTO trades (persona, mode, status, input_mint, output_mint, in_amount, out_amount, value, \
             slippage_bps, reason, quote, approval_expires_at, executed_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) RETURNING id",
        )
        .bind(&trade.persona)
        .bind(&trade.mode)
        .bind(trade.status.as_str())
        .bind(&trade.input_mint)
        .bind(&trade.output_mint)
        .bind(in_amount)
        .bind(out_amount)
        .bind(value)
        .bind(i64::from(trade.slippage_bps))
        .bind(&trade.reason)
        .bind(&trade.quote)
        .bind(trade.approval_expires_at)
        .bind(executed_at)
        .bind(now)
        .fetch_one(&mut *self.write().await?)
        .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn trade(&self, id: i64) -> StoreResult<Option<TradeRow>> {
        let sql = format!("SELECT {TRADE_COLUMNS} FROM trades WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *self.read().await?).await?;
        row.as_ref().map(TradeRow::from_row).transpose()
    }

    /// Trades of one persona (or all) in any of `statuses` (empty: any status), newest first.
    pub async fn trades(
        &self,
        persona: Option<&str>,
        statuses: &[TradeStatus],
        limit: i64,
    ) -> StoreResult<Vec<TradeRow>> {
        // Only generated `$n` placeholders and the limit (a number) are interpolated; every
        // value is bound.
        let mut conditions = Vec::new();
        if persona.is_some() {
            conditions.push("persona = $1".to_owned());
        }
        if !statuses.is_empty() {
            conditions.push(format!("status IN ({})", placeholders(conditions.len() + 1, statuses.len())));
        }
        let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
        let sql = format!("SELECT {TRADE_COLUMNS} FROM trades {filter} ORDER BY id DESC {}", sql_limit(limit));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(persona) = persona {
            query = query.bind(persona);
        }
        for status in statuses {
            query = query.bind(status.as_str());
        }
        let rows = query.fetch_all(&mut *self.read().await?).await?;
        rows.iter().map(TradeRow::from_row).collect()
    }

    /// Compare-and-set: moves the trade to `to` if it is in one of `from`, and records `error`
    /// when given (otherwise the stored error is kept). Returns false, changing nothing, when the
    /// trade is unknown or in another status. Entering a status that may have executed stamps
    /// `executed_at` (once). A pair outside the [`TradeStatus`] graph is refused with an error.
    pub async fn transition_trade(
        &self,
        id: i64,
        from: &[TradeStatus],
        to: TradeStatus,
        error: Option<&str>,
    ) -> StoreResult<bool> {
        if let Some(bad) = from.iter().find(|status| !status.can_become(to)) {
            return Err(invalid(format!("a trade cannot go from {} to {}", bad.as_str(), to.as_str())));
        }
        if from.is_empty() {
            return Ok(false);
        }
        // $1 id, $2 to, $3 now, $4 error (when given), then the `from` statuses.
        let mut set = String::from("status = $2, updated_at = $3");
        if to.may_have_executed() {
            set.push_str(", executed_at = COALESCE(executed_at, $3)");
        }
        let mut next = 4;
        if error.is_some() {
            set.push_str(", error = $4");
            next += 1;
        }
        let sql = format!("UPDATE trades SET {set} WHERE id = $1 AND status IN ({})", placeholders(next, from.len()));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(to.as_str()).bind(now_ms());
        if let Some(error) = error {
            query = query.bind(error);
        }
        for status in from {
            query = query.bind(status.as_str());
        }
        Ok(query.execute(&mut *self.write().await?).await?.rows_affected() == 1)
    }

    /// An operator's decision on a trade awaiting approval: approved or rejected, with who and
    /// when. A trade past its expiry (`approval_expires_at <= now_ms`) becomes expired instead and
    /// keeps `decided_by`/`decided_at` empty (nobody decided in time). One conditional UPDATE,
    /// so of concurrent decisions exactly one takes effect.
    pub async fn decide_trade(&self, id: i64, approve: bool, by: &str, now_ms: i64) -> StoreResult<Decided> {
        let to = if approve { TradeStatus::Approved } else { TradeStatus::Rejected };
        let mut conn = self.write().await?;
        let mut tx = conn.begin().await?;
        let sql = format!(
            "UPDATE trades SET \
             status = CASE WHEN approval_expires_at <= $2 THEN 'expired' ELSE $3 END, \
             decided_by = CASE WHEN approval_expires_at <= $2 THEN NULL ELSE $4 END, \
             decided_at = CASE WHEN approval_expires_at <= $2 THEN NULL ELSE $2 END, \
             updated_at = $5 \
             WHERE id = $1 AND status = 'awaiting_approval' RETURNING {TRADE_COLUMNS}"
        );
        let updated = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(now_ms)
            .bind(to.as_str())
            .bind(by)
            .bind(super::now_ms())
            .fetch_optional(&mut *tx)
            .await?;
        let decided = match updated {
            Some(row) => {
                let row = TradeRow::from_row(&row)?;
                if row.status == TradeStatus::Expired { Decided::Expired(row) } else { Decided::Done(row) }
            }
            None => {
                let sql = format!("SELECT {TRADE_COLUMNS} FROM trades WHERE id = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *tx).await?;
                Decided::NotAwaiting(row.as_ref().map(TradeRow::from_row).transpose()?)
            }
        };
        tx.commit().await?;
        Ok(decided)
    }

    /// Trades still awaiting approval at or past their expiry become expired; returns them.
    pub async fn expire_approvals(&self, now_ms: i64) -> StoreResult<Vec<TradeRow>> {
        let sql = format!(
            "UPDATE trades SET status = 'expired', updated_at = $2 \
             WHERE status = 'awaiting_approval' AND approval_expires_at <= $1 RETURNING {TRADE_COLUMNS}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms)
            .bind(super::now_ms())
            .fetch_all(&mut *self.write().await?)
            .await?;
        let mut trades = rows.iter().map(TradeRow::from_row).collect::<StoreResult<Vec<_>>>()?;
        trades.sort_by_key(|trade| trade.id);
        Ok(trades)
    }

    /// `executing → signed`, storing the signature, the signed transaction (base64) and the last
    /// block height its blockhash is valid for. False, changing nothing, from any other status.
    pub async fn record_signed(
        &self,
        id: i64,
        signature: &str,
        signed_tx: &str,
        last_valid_block_height: u64,
    ) -> StoreResult<bool> {
        let height = to_db("last_valid_block_height", last_valid_block_height)?;
        let done = sqlx::query(
            "UPDATE trades SET status = 'signed', signature = $2, signed_tx = $3, last_valid_block_height = $4, \
             updated_at = $5 WHERE id = $1 AND status = 'executing'",
        )
        .bind(id)
        .bind(signature)
        .bind(signed_tx)
        .bind(height)
        .bind(now_ms())
        .execute(&mut *self.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Over the persona's trades that may have executed and entered `executing` at or after
    /// `since_ms`: the sum of their `value` (USD micro-units) and the latest time one entered
    /// `executing`. For the daily limit and the cool-down, also after a restart.
    pub async fn executed_value_since(&self, persona: &str, since_ms: i64) -> StoreResult<(u64, Option<i64>)> {
        let executed: Vec<TradeStatus> =
            TradeStatus::ALL.into_iter().filter(|status| status.may_have_executed()).collect();
        // SUM(BIGINT) is NUMERIC on Postgres, which the Any driver cannot decode: cast it back.
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(value), 0) AS BIGINT), MAX(executed_at) FROM trades \
             WHERE persona = $1 AND executed_at >= $2 AND status IN ({})",
            placeholders(3, executed.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(persona).bind(since_ms);
        for status in &executed {
            query = query.bind(status.as_str());
        }
        let row = query.fetch_one(&mut *self.read().await?).await?;
        Ok((from_db("SUM(value)", row.try_get(0)?)?, row.try_get(1)?))
    }

    // ----- audit -----

    pub async fn insert_audit(&self, event: &NewAudit<'_>) -> StoreResult<i64> {
        let row = sqlx::query(
            "INSERT INTO trade_audit (persona, trade_id, event, detail, at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(event.persona)
        .bind(event.trade_id)
        .bind(event.event)
        .bind(event.detail.to_string())
        .bind(now_ms())
        .fetch_one(&mut *self.write().await?)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Audit events, newest first, of one persona and/or one trade (or all).
    pub async fn audit(
        &self,
        persona: Option<&str>,
        trade_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<AuditEvent>> {
        // Only generated `$n` placeholders and the limit (a number) are interpolated; every
        // value is bound.
        let mut conditions = Vec::new();
        if persona.is_some() {
            conditions.push("persona = $1".to_owned());
        }
        if trade_id.is_some() {
            conditions.push(format!("trade_id = ${}", conditions.len() + 1));
        }
        let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
        let sql = format!(
            "SELECT id, persona, trade_id, event, detail, at FROM trade_audit {filter} ORDER BY id DESC {}",
            sql_limit(limit)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(persona) = persona {
            query = query.bind(persona);
        }
        if let Some(trade_id) = trade_id {
            query = query.bind(trade_id);
        }
        let rows = query.fetch_all(&mut *self.read().await?).await?;
        rows.iter().map(AuditEvent::from_row).collect()
    }

    // ----- paper balances -----

    /// On the persona's first start (no paper account yet), creates its account and balances in
    /// one transaction and returns true; afterwards does nothing and returns false. A mint listed
    /// twice is an error (nothing is seeded).
    pub async fn paper_seed(&self, persona: &str, balances: &[(String, u64)]) -> StoreResult<bool> {
        let balances = balances
            .iter()
            .map(|(mint, amount)| Ok((mint, to_db("paper balance", *amount)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        let mut conn = self.write().await?;
        let mut tx = conn.begin().await?;
        let created = sqlx::query(
            "INSERT INTO paper_accounts (persona, created_at) VALUES ($1, $2) \
             ON CONFLICT (persona) DO NOTHING RETURNING persona",
        )
        .bind(persona)
        .bind(now_ms())
        .fetch_optional(&mut *tx)
        .await?;
        if created.is_none() {
            tx.rollback().await?;
            return Ok(false);
        }
        for (mint, amount) in balances {
            sqlx::query("INSERT INTO paper_balances (persona, mint, amount) VALUES ($1, $2, $3)")
                .bind(persona)
                .bind(mint)
                .bind(amount)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn paper_balances(&self, persona: &str) -> StoreResult<BTreeMap<String, u64>> {
        balances(&mut *self.write().await?, persona).await
    }

    /// Applies a paper trade in one transaction: the trade must be this persona's and
    /// `executing`; the input balance is debited by `in_amount`, the output balance credited with
    /// `out_amount` (created if missing) and the trade becomes `filled`. When the trade is not
    /// executing or the input balance is short, nothing changes. A credit past `i64::MAX` is an
    /// error (and nothing changes either).
    pub async fn paper_fill(
        &self,
        trade_id: i64,
        persona: &str,
        input_mint: &str,
        in_amount: u64,
        output_mint: &str,
        out_amount: u64,
    ) -> StoreResult<PaperFill> {
        let debit = to_db("in_amount", in_amount)?;
        let credit = to_db("out_amount", out_amount)?;
        let now = now_ms();
        // The first statement writes, so SQLite takes its write lock up front (a read upgraded to
        // a write can fail at once instead of waiting) and Postgres locks the trade row.
        let mut conn = self.write().await?;
        let mut tx = conn.begin().await?;
        let filled = sqlx::query(
            "UPDATE trades SET status = 'filled', updated_at = $3 WHERE id = $1 AND persona = $2 AND status = 'executing'",
        )
        .bind(trade_id)
        .bind(persona)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if filled.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(PaperFill::NotExecuting);
        }
        // Balances are written in mint order, so two fills in opposite directions (one persona
        // selling SOL for USDC while buying SOL with USDC) cannot deadlock each other on Postgres.
        let overflow = || encode_error(format!("the paper balance of {output_mint} would exceed i64::MAX"));
        let credit_first = output_mint < input_mint;
        if credit_first && !credit_balance(&mut tx, persona, output_mint, credit).await? {
            tx.rollback().await?;
            return Err(overflow());
        }
        if !debit_balance(&mut tx, persona, input_mint, debit).await? {
            let balance = balance_of(&mut tx, persona, input_mint).await?;
            // Undo the status change: the caller marks the trade failed.
            tx.rollback().await?;
            return Ok(PaperFill::Insufficient { balance });
        }
        if !credit_first && !credit_balance(&mut tx, persona, output_mint, credit).await? {
            tx.rollback().await?;
            return Err(overflow());
        }
        let balances = balances(&mut *tx, persona).await?;
        tx.commit().await?;
        Ok(PaperFill::Filled { balances })
    }

    /// The persona's paper portfolio value when it started (USD micro-units), once recorded.
    pub async fn paper_starting_value(&self, persona: &str) -> StoreResult<Option<u64>> {
        let row = sqlx::query("SELECT starting_value FROM paper_accounts WHERE persona = $1")
            .bind(persona)
            .fetch_optional(&mut *self.read().await?)
            .await?;
        let Some(row) = row else { return Ok(None) };
        row.try_get::<Option<i64>, _>(0)?.map(|value| from_db("starting_value", value)).transpose()
    }

    /// Records the starting value once: true when it was still unset (and the account exists).
    pub async fn set_paper_starting_value(&self, persona: &str, value: u64) -> StoreResult<bool> {
        let value = to_db("starting_value", value)?;
        let done =
            sqlx::query("UPDATE paper_accounts SET starting_value = $2 WHERE persona = $1 AND starting_value IS NULL")
                .bind(persona)
                .bind(value)
                .execute(&mut *self.write().await?)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    // ----- flags -----

    /// Sets an operator flag (the kill switch…), overwriting its value.
    pub async fn set_flag(&self, name: &str, value: &str, by: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO trading_flags (name, value, updated_by, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_by = excluded.updated_by, \
             updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .bind(by)
        .bind(now_ms())
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    /// A flag's (value, set by, set at).
    pub async fn flag(&self, name: &str) -> StoreResult<Option<(String, String, i64)>> {
        let row = sqlx::query("SELECT value, updated_by, updated_at FROM trading_flags WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *self.read().await?)
            .await?;
        row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))).transpose()
    }
}

async fn balances<'c, E>(executor: E, persona: &str) -> StoreResult<BTreeMap<String, u64>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let rows = sqlx::query("SELECT mint, amount FROM paper_balances WHERE persona = $1")
        .bind(persona)
        .fetch_all(executor)
        .await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, from_db("amount", row.try_get(1)?)?))).collect()
}

/// Takes `amount` from a paper balance if it holds that much; false (nothing changed) otherwise.
async fn debit_balance(conn: &mut AnyConnection, persona: &str, mint: &str, amount: i64) -> StoreResult<bool> {
    let debited =
        sqlx::query("UPDATE paper_balances SET amount = amount - $3 WHERE persona = $1 AND mint = $2 AND amount >= $3")
            .bind(persona)
            .bind(mint)
            .bind(amount)
            .execute(&mut *conn)
            .await?;
    Ok(debited.rows_affected() == 1)
}

/// Adds `amount` to a paper balance, creating it if missing; false if the sum would exceed
/// `i64::MAX` (checked in SQL: SQLite turns an overflowing integer sum into a float).
async fn credit_balance(conn: &mut AnyConnection, persona: &str, mint: &str, amount: i64) -> StoreResult<bool> {
    sqlx::query(
        "INSERT INTO paper_balances (persona, mint, amount) VALUES ($1, $2, 0) ON CONFLICT (persona, mint) DO NOTHING",
    )
    .bind(persona)
    .bind(mint)
    .execute(&mut *conn)
    .await?;
    let credited =
        sqlx::query("UPDATE paper_balances SET amount = amount + $3 WHERE persona = $1 AND mint = $2 AND amount <= $4")
            .bind(persona)
            .bind(mint)
            .bind(amount)
            .bind(i64::MAX - amount)
            .execute(&mut *conn)
            .await?;
    Ok(credited.rows_affected() == 1)
}

/// One paper balance (0 when the persona never held the mint).
async fn balance_of(conn: &mut AnyConnection, persona: &str, mint: &str) -> StoreResult<u64> {
    let row = sqlx::query("SELECT amount FROM paper_balances WHERE persona = $1 AND mint = $2")
        .bind(persona)
        .bind(mint)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => from_db("amount", row.try_get(0)?),
        None => Ok(0),
    }
}

/// A `u64` amount as BIGINT, or an error if it does not fit (never wrapped).
fn to_db(field: &str, value: u64) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| encode_error(format!("{field} {value} does not fit in a BIGINT")))
}

/// A stored BIGINT as the API's unsigned type, or an error if it does not fit.
fn from_db<T: TryFrom<i64>>(field: &str, value: i64) -> StoreResult<T> {
    T::try_from(value).map_err(|_| decode_error(field, format!("stored value {value} is out of range")))
}

fn encode_error(message: String) -> StoreError {
    StoreError::Query(sqlx::Error::Encode(message.into()))
}

fn decode_error(column: &str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::Query(sqlx::Error::ColumnDecode { index: column.to_owned(), source: source.into() })
}

fn invalid(message: String) -> StoreError {
    StoreError::Query(sqlx::Error::InvalidArgument(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_serialize_as_their_string() {
        for status in TradeStatus::ALL {
            assert_eq!(TradeStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_value(status).unwrap(), serde_json::json!(status.as_str()));
        }
        assert_eq!(TradeStatus::parse("nope"), None);
    }

    #[test]
    fn only_started_trades_may_have_executed() {
        use TradeStatus::*;
        let executed: Vec<_> = TradeStatus::ALL.into_iter().filter(|status| status.may_have_executed()).collect();
        assert_eq!(executed, [Executing, Filled, Signed, Sent, Confirmed]);
        // Every status that may have executed is reached through `executing` only.
        for from in TradeStatus::ALL {
            for to in from.next() {
                if to.may_have_executed() && !from.may_have_executed() {
                    assert_eq!((from, *to), (Approved, Executing));
                }
            }
        }
    }

    #[test]
    fn amounts_above_i64_max_are_refused() {
        assert_eq!(to_db("x", i64::MAX as u64).unwrap(), i64::MAX);
        let err = to_db("in_amount", u64::MAX).unwrap_err();
        assert!(!err.is_transient());
        assert!(err.to_string().contains("does not fit"), "{err}");
        assert!(from_db::<u64>("amount", -1).is_err());
        assert!(from_db::<u16>("slippage_bps", 70_000).is_err());
    }
}

//! Outbox queries: the durable queue between "we decided to say this" and "the platform has it".
//!
//! A row is written before anything is published; its unique idempotency key, derived from the
//! intent (persona, platform, the event replied to or the schedule slot), makes a second row for
//! the same intent impossible. Every state change is written to `audit_log` in the same
//! transaction.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Db, StoreResult, now_ms};

/// A post or reply to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutbox {
    pub idempotency_key: String,
    pub persona: String,
    pub platform: String,
    /// `post` or `reply`.
    pub kind: String,
    pub text: String,
    /// Remote id of the message replied to.
    pub reply_to: Option<String>,
    pub conversation: Option<String>,
}

/// Result of [`Db::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    pub id: i64,
    /// False when a row with the same idempotency key already existed (nothing was added).
    pub created: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxStatus {
    Pending,
    Sent,
    Failed,
}

impl OutboxStatus {
    fn parse(text: &str) -> Self {
        match text {
            "sent" => OutboxStatus::Sent,
            "failed" => OutboxStatus::Failed,
            _ => OutboxStatus::Pending,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub idempotency_key: String,
    pub persona: String,
    pub platform: String,
    pub kind: String,
    pub text: String,
    pub reply_to: Option<String>,
    pub conversation: Option<String>,
    pub status: OutboxStatus,
    pub attempts: i64,
    pub remote_id: Option<String>,
}

impl OutboxRow {
    fn from_row(row: &AnyRow) -> StoreResult<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            idempotency_key: row.try_get("idempotency_key")?,
            persona: row.try_get("persona")?,
            platform: row.try_get("platform")?,
            kind: row.try_get("kind")?,
            text: row.try_get("text")?,
            reply_to: row.try_get("reply_to")?,
            conversation: row.try_get("conversation")?,
            status: OutboxStatus::parse(&row.try_get::<String, _>("status")?),
            attempts: row.try_get("attempts")?,
            remote_id: row.try_get("remote_id")?,
        })
    }
}

/// Rows by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutboxCounts {
    pub pending: i64,
    pub sent: i64,
    pub failed: i64,
}

const OUTBOX_COLUMNS: &str =
    "id, idempotency_key, persona, platform, kind, text, reply_to, conversation, status, attempts, remote_id";

impl Db {
    /// Queues an item, once per idempotency key. When `inbound_id` is given, that inbound event is
    /// marked answered in the same transaction, so a crash can never leave a mention both
    /// answered-in-the-outbox and pending (answered twice) or neither (lost).
    pub async fn enqueue(&self, item: &NewOutbox, inbound_id: Option<i64>) -> StoreResult<Enqueued> {
        self.enqueue_logged(item, inbound_id, None).await
    }

    /// [`Db::enqueue`], writing what the pipeline logged for the item in the same transaction.
    pub async fn enqueue_logged(
        &self,
        item: &NewOutbox,
        inbound_id: Option<i64>,
        log: Option<&super::ContentLog>,
    ) -> StoreResult<Enqueued> {
        let mut tx = self.pool().begin().await?;
        let enqueued = insert_outbox(&mut tx, item, inbound_id, log).await?;
        tx.commit().await?;
        Ok(enqueued)
    }

    pub async fn outbox_exists(&self, idempotency_key: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT COUNT(*) FROM outbox WHERE idempotency_key = $1")
            .bind(idempotency_key)
            .fetch_one(self.reader())
            .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    /// Accounts (platform, persona) with at least one pending row due now.
    pub async fn due_accounts(&self) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT DISTINCT platform, persona FROM outbox WHERE status = 'pending' AND next_attempt_at <= $1",
        )
        .bind(now_ms())
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
    }

    /// One account's pending rows that are due, oldest first.
    pub async fn due_outbox(&self, platform: &str, persona: &str, limit: i64) -> StoreResult<Vec<OutboxRow>> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' AND next_attempt_at <= $1 \
             AND platform = $2 AND persona = $3 ORDER BY id LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms())
            .bind(platform)
            .bind(persona)
            .bind(limit)
            .fetch_all(self.reader())
            .await?;
        rows.iter().map(OutboxRow::from_row).collect()
    }

    pub async fn outbox_row(&self, idempotency_key: &str) -> StoreResult<Option<OutboxRow>> {
        let sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE idempotency_key = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(idempotency_key).fetch_optional(self.reader()).await?;
        row.as_ref().map(OutboxRow::from_row).transpose()
    }

    /// Records that a publish attempt starts, before the platform is called: a row with
    /// `attempts > 0` that is still pending after a crash may have landed and is reconciled first.
    pub async fn begin_attempt(&self, id: i64) -> StoreResult<()> {
        sqlx::query("UPDATE outbox SET attempts = attempts + 1, updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn mark_sent(&self, row: &OutboxRow, remote_id: &str, how: &str) -> StoreResult<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "UPDATE outbox SET status = 'sent', remote_id = $2, last_error = NULL, updated_at = $3 WHERE id = $1",
        )
        .bind(row.id)
        .bind(remote_id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        audit(&mut tx, "publish", &row.persona, &row.platform, &row.idempotency_key, how, Some(remote_id)).await?;
        super::content::mark_outcome(&mut tx, &row.idempotency_key, Some(remote_id), None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Leaves the row pending, to be tried again at `next_attempt_at`.
    pub async fn mark_retry(&self, row: &OutboxRow, error: &str, next_attempt_at: i64) -> StoreResult<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE outbox SET last_error = $2, next_attempt_at = $3, updated_at = $4 WHERE id = $1")
            .bind(row.id)
            .bind(error)
            .bind(next_attempt_at)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        audit(&mut tx, "publish", &row.persona, &row.platform, &row.idempotency_key, "retry", Some(error)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The platform refused the item for good; it stays in the table for an operator to see.
    pub async fn mark_failed(&self, row: &OutboxRow, error: &str) -> StoreResult<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE outbox SET status = 'failed', last_error = $2, updated_at = $3 WHERE id = $1")
            .bind(row.id)
            .bind(error)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        audit(&mut tx, "publish", &row.persona, &row.platform, &row.idempotency_key, "failed", Some(error)).await?;
        super::content::mark_outcome(&mut tx, &row.idempotency_key, None, Some(error)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Pending rows (an index lookup, cheap enough for every sweep).
    pub async fn outbox_pending(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM outbox WHERE status = 'pending'").fetch_one(self.reader()).await?;
        Ok(row.try_get(0)?)
    }

    pub async fn outbox_counts(&self) -> StoreResult<OutboxCounts> {
        let rows = sqlx::query("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetch_all(self.reader()).await?;
        let mut counts = OutboxCounts::default();
        for row in rows {
            let count: i64 = row.try_get(1)?;
            match OutboxStatus::parse(&row.try_get::<String, _>(0)?) {
                OutboxStatus::Pending => counts.pending = count,
                OutboxStatus::Sent => counts.sent = count,
                OutboxStatus::Failed => counts.failed = count,
            }
        }
        Ok(counts)
    }

    /// Audit entries (`action`, `outcome`) for one idempotency key, oldest first.
    pub async fn audit_trail(&self, subject: &str) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT action, outcome FROM audit_log WHERE subject = $1 ORDER BY id")
            .bind(subject)
            .fetch_all(self.reader())
            .await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
    }
}

/// [`Db::enqueue`] inside a caller's transaction (an airlock approval queues in its own): the
/// outbox row, the mention marked answered, the content item moved to `queued`, the audit entry.
pub(super) async fn insert_outbox(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    item: &NewOutbox,
    inbound_id: Option<i64>,
    log: Option<&super::ContentLog>,
) -> StoreResult<Enqueued> {
    let now = now_ms();
    let inserted = sqlx::query(
        "INSERT INTO outbox (idempotency_key, persona, platform, kind, text, reply_to, conversation, inbound_id, \
         status, attempts, created_at, updated_at, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, $9, $9, $9) \
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
    )
    .bind(&item.idempotency_key)
    .bind(&item.persona)
    .bind(&item.platform)
    .bind(&item.kind)
    .bind(&item.text)
    .bind(item.reply_to.as_deref())
    .bind(item.conversation.as_deref())
    .bind(inbound_id)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    let enqueued = match inserted {
        Some(row) => Enqueued { id: row.try_get(0)?, created: true },
        None => {
            let row = sqlx::query("SELECT id FROM outbox WHERE idempotency_key = $1")
                .bind(&item.idempotency_key)
                .fetch_one(&mut **tx)
                .await?;
            Enqueued { id: row.try_get(0)?, created: false }
        }
    };
    if let Some(inbound_id) = inbound_id {
        sqlx::query("UPDATE inbound_events SET state = 'answered', outcome = 'queued' WHERE id = $1")
            .bind(inbound_id)
            .execute(&mut **tx)
            .await?;
    }
    if enqueued.created {
        super::content::mark_queued(tx, item, inbound_id, log).await?;
        audit(tx, "enqueue", &item.persona, &item.platform, &item.idempotency_key, "pending", None).await?;
    }
    Ok(enqueued)
}

async fn audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    action: &str,
    persona: &str,
    platform: &str,
    subject: &str,
    outcome: &str,
    detail: Option<&str>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, action, persona, platform, subject, outcome, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(now_ms())
    .bind(action)
    .bind(persona)
    .bind(platform)
    .bind(subject)
    .bind(outcome)
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

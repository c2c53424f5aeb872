//! Outbox queries: the durable queue between "we decided to say this" and "the platform has it".
//!
//! A row is written before anything is published; its unique idempotency key, derived from the
//! intent (persona, platform, the event replied to or the schedule slot), makes a second row for
//! the same intent impossible. Every state change is written to `audit_log` in the same
//! transaction.

use std::collections::{HashMap, HashSet};

use sqlx::Row;
use sqlx::any::AnyRow;

use super::native::{Fields, Returned, Returning};
use super::script::{On, OwnTransaction, Script};
use super::{Db, StoreError, StoreResult, now_ms, placeholders, runs, sql_limit, value_rows};

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

/// One item of [`Db::enqueue_batch`]: what to queue, the mention it answers, and what the
/// content pipeline did with it (written in the same transaction).
#[derive(Debug, Clone, Copy)]
pub struct ToEnqueue<'a> {
    pub item: &'a NewOutbox,
    pub inbound_id: Option<i64>,
    pub log: Option<&'a super::ContentLog>,
}

/// A row the platform took, for [`Db::mark_sent_batch`]: its remote id, and how we know (`sent`,
/// or `reconciled` when an earlier attempt had landed).
#[derive(Debug, Clone, Copy)]
pub struct Sent<'a> {
    pub row: &'a OutboxRow,
    pub remote_id: &'a str,
    pub how: &'a str,
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
    /// The row [`Db::enqueue_batch`] just created for `item` as `id`: pending, never attempted.
    pub fn queued(id: i64, item: NewOutbox) -> Self {
        let NewOutbox { idempotency_key, persona, platform, kind, text, reply_to, conversation } = item;
        Self {
            id,
            idempotency_key,
            persona,
            platform,
            kind,
            text,
            reply_to,
            conversation,
            status: OutboxStatus::Pending,
            attempts: 0,
            remote_id: None,
        }
    }

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

/// An account's pending rows ([`Db::pending_accounts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAccount {
    pub platform: String,
    pub persona: String,
    pub rows: i64,
    /// At least one of them is due now.
    pub due: bool,
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
        let enqueued = self.enqueue_batch(&[ToEnqueue { item, inbound_id, log }]).await?;
        Ok(enqueued[0])
    }

    /// Queues several items in one transaction (group commit), with one multi-row statement per
    /// table whatever their number. Answers one [`Enqueued`] per item, in order; a key repeated
    /// in the batch is created once and the later ones are `created: false`. Nothing is written
    /// when any statement fails.
    pub async fn enqueue_batch(&self, items: &[ToEnqueue<'_>]) -> StoreResult<Vec<Enqueued>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = OwnTransaction::new(self.write().await?);
        let enqueued = insert_outboxes(On::Lease(tx.conn()), items, Within::Own).await;
        tx.finish(enqueued).await
    }

    pub async fn outbox_exists(&self, idempotency_key: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT COUNT(*) FROM outbox WHERE idempotency_key = $1")
            .bind(idempotency_key)
            .fetch_one(&mut *self.read().await?)
            .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    /// Every account (platform, persona) with pending rows: how many, and whether one is due now.
    pub async fn pending_accounts(&self) -> StoreResult<Vec<PendingAccount>> {
        let rows = sqlx::query(
            "SELECT platform, persona, COUNT(*), MIN(next_attempt_at) FROM outbox WHERE status = 'pending' \
             GROUP BY platform, persona ORDER BY platform, persona",
        )
        .fetch_all(&mut *self.read().await?)
        .await?;
        let now = now_ms();
        rows.iter()
            .map(|row| {
                Ok(PendingAccount {
                    platform: row.try_get(0)?,
                    persona: row.try_get(1)?,
                    rows: row.try_get(2)?,
                    due: row.try_get::<i64, _>(3)? <= now,
                })
            })
            .collect()
    }

    /// One account's pending rows that are due, oldest first.
    pub async fn due_outbox(&self, platform: &str, persona: &str, limit: i64) -> StoreResult<Vec<OutboxRow>> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' AND next_attempt_at <= $1 \
             AND platform = $2 AND persona = $3 ORDER BY id {}",
            sql_limit(limit)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms())
            .bind(platform)
            .bind(persona)
            .fetch_all(&mut *self.read().await?)
            .await?;
        rows.iter().map(OutboxRow::from_row).collect()
    }

    pub async fn outbox_row(&self, idempotency_key: &str) -> StoreResult<Option<OutboxRow>> {
        let sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE idempotency_key = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(idempotency_key)
            .fetch_optional(&mut *self.read().await?)
            .await?;
        row.as_ref().map(OutboxRow::from_row).transpose()
    }

    /// Records that publish attempts start, before the platform is called: a row with
    /// `attempts > 0` that is still pending after a crash may have landed and is reconciled first.
    /// A worker records the attempts of the rows it is about to publish together: one statement a
    /// run (see [`super::runs`]), sent as one call on SQLite while the batch is small.
    pub async fn begin_attempts(&self, ids: &[i64]) -> StoreResult<()> {
        self.add_attempts(ids, 1).await
    }

    /// Takes back attempts [`Db::begin_attempts`] recorded for rows the platform was not called
    /// for after all, so their next try is not preceded by a search for a post never made.
    pub async fn take_back_attempts(&self, ids: &[i64]) -> StoreResult<()> {
        self.add_attempts(ids, -1).await
    }

    /// Adds `change` to the attempts of the rows `ids`, each statement committing on its own.
    async fn add_attempts(&self, ids: &[i64], change: i64) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut conn = self.write().await?;
        let mut script = Script::new(conn.backend_name());
        for run in runs(ids) {
            script
                .statement(format!(
                    "UPDATE outbox SET attempts = attempts + $1, updated_at = $2 WHERE id IN ({})",
                    placeholders(3, run.len())
                ))
                .bind(change)
                .bind(now);
            for id in run {
                script.bind(*id);
            }
        }
        script.execute(&mut conn).await
    }

    /// Marks rows sent, with their content items published and an audit entry each, in one
    /// transaction of four statements a run (see [`super::runs`]), sent as one call on SQLite
    /// while the batch is small (see [`Script`]).
    pub async fn mark_sent_batch(&self, sent: &[Sent<'_>]) -> StoreResult<()> {
        if sent.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = OwnTransaction::new(self.write().await?);
        let mut script = Script::new(tx.conn().backend_name());
        script.begin();
        for sent in runs(sent) {
            mark_sent_run(&mut script, sent, now);
        }
        script.commit();
        let done = script.execute(tx.conn()).await;
        tx.finish(done).await
    }
    /// Leaves the row pending, to be tried again at `next_attempt_at`.
    pub async fn mark_retry(&self, row: &OutboxRow, error: &str, next_attempt_at: i64) -> StoreResult<()> {
        let mut conn = self.write().await?;
        let mut tx = conn.begin().await?;
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
        let mut conn = self.write().await?;
        let mut tx = conn.begin().await?;
        sqlx::query("UPDATE outbox SET status = 'failed', last_error = $2, updated_at = $3 WHERE id = $1")
            .bind(row.id)
            .bind(error)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        audit(&mut tx, "publish", &row.persona, &row.platform, &row.idempotency_key, "failed", Some(error)).await?;
        super::content::mark_failed(&mut tx, &row.idempotency_key, error).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn outbox_counts(&self) -> StoreResult<OutboxCounts> {
        let rows = sqlx::query("SELECT status, COUNT(*) FROM outbox GROUP BY status")
            .fetch_all(&mut *self.read().await?)
            .await?;
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
            .fetch_all(&mut *self.read().await?)
            .await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
    }
}

/// One run of [`Db::mark_sent_batch`], added to its script: the rows `sent`, an audit entry each,
/// their content items `published`.
fn mark_sent_run(script: &mut Script, sent: &[Sent<'_>], now: i64) {
    // $1 the time, then an (id, remote id) pair per row for the CASE, then the ids again.
    let cases: String = (0..sent.len()).map(|n| format!(" WHEN ${} THEN ${}", 2 + 2 * n, 3 + 2 * n)).collect();
    let fail = script.or_fail();
    script.statement(format!(
        "UPDATE {fail}outbox SET status = 'sent', remote_id = CASE id{cases} END, last_error = NULL, updated_at = $1 \
         WHERE id IN ({})",
        placeholders(2 + 2 * sent.len(), sent.len())
    ));
    script.bind(now);
    for Sent { row, remote_id, .. } in sent {
        script.bind(row.id).bind(*remote_id);
    }
    for Sent { row, .. } in sent {
        script.bind(row.id);
    }
    script.statement(format!(
        "INSERT {fail}INTO audit_log (at, action, persona, platform, subject, outcome, detail) VALUES {}",
        value_rows("(?, 'publish', ?, ?, ?, ?, ?)", sent.len())
    ));
    for Sent { row, remote_id, how } in sent {
        script
            .bind(now)
            .bind(row.persona.as_str())
            .bind(row.platform.as_str())
            .bind(row.idempotency_key.as_str())
            .bind(*how)
            .bind(*remote_id);
    }
    let published: Vec<(&str, &str)> =
        sent.iter().map(|sent| (sent.row.idempotency_key.as_str(), sent.remote_id)).collect();
    super::content::mark_published(script, &published, now);
}

/// Binds an item's fields in the order both its outbox row and its content item take them:
/// key, persona, platform, kind, text, parent, conversation, mention.
pub(super) fn bind_item(script: &mut Script, item: &NewOutbox, inbound_id: Option<i64>) {
    script
        .bind(item.idempotency_key.as_str())
        .bind(item.persona.as_str())
        .bind(item.platform.as_str())
        .bind(item.kind.as_str())
        .bind(item.text.as_str())
        .bind(item.reply_to.as_deref())
        .bind(item.conversation.as_deref())
        .bind(inbound_id);
}

/// [`Db::enqueue`] inside a caller's transaction (an airlock approval queues in its own).
pub(super) async fn insert_outbox(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    item: &NewOutbox,
    inbound_id: Option<i64>,
    log: Option<&super::ContentLog>,
) -> StoreResult<Enqueued> {
    let enqueued = insert_outboxes(On::Conn(tx), &[ToEnqueue { item, inbound_id, log }], Within::Callers).await?;
    Ok(enqueued[0])
}

/// What an outbox row's insert returns of a new row: its id and key ([`bind_item`] binds the key
/// first).
pub(super) static OUTBOX_RETURNING: Returning = Returning::new(
    " RETURNING id, idempotency_key",
    &[("id", Returned::Rowid), ("idempotency_key", Returned::Parameter(0))],
    0,
);

/// Whose transaction [`insert_outboxes`] writes in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Within {
    /// An [`OwnTransaction`]: its first script begins it and its last commits it.
    Own,
    /// The caller's, open already and committed by the caller.
    Callers,
}

/// [`Db::enqueue_batch`] in a transaction: the outbox rows, then the mentions marked answered, the
/// new items' content rows moved to `queued` with their stage logs, and an audit entry per new
/// row: six statements a run (see [`super::runs`]); on SQLite a small batch (one or two items) is
/// two calls (see [`Script`]), three when a key existed, with the `BEGIN` and `COMMIT` of an own
/// transaction in the first and the last.
async fn insert_outboxes(mut tx: On<'_>, items: &[ToEnqueue<'_>], within: Within) -> StoreResult<Vec<Enqueued>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let mut inserts = Script::new(tx.backend_name());
    if within == Within::Own {
        inserts.begin();
    }
    let fail = inserts.or_fail();
    for run in runs(items) {
        inserts.statement(format!(
            "INSERT {fail}INTO outbox (idempotency_key, persona, platform, kind, text, reply_to, conversation, \
             inbound_id, status, attempts, created_at, updated_at, next_attempt_at) VALUES {} \
             ON CONFLICT (idempotency_key) DO NOTHING",
            value_rows("(?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)", run.len())
        ));
        inserts.returning(&OUTBOX_RETURNING, run.len());
        for ToEnqueue { item, inbound_id, .. } in run {
            bind_item(&mut inserts, item, *inbound_id);
            inserts.bind(now).bind(now).bind(now);
        }
    }
    let mut created = HashMap::new();
    for row in inserts.fetch_all(tx.reborrow()).await? {
        created.insert(row.field::<String, _>(1)?, row.field::<i64, _>(0)?);
    }
    // Keys that were already queued (before this batch, by this process or an earlier one): their ids.
    let mut existing = HashMap::new();
    let known: HashSet<&str> =
        items.iter().map(|t| t.item.idempotency_key.as_str()).filter(|key| !created.contains_key(*key)).collect();
    let known: Vec<&str> = known.into_iter().collect();
    for run in runs(&known) {
        // A script, as the transaction's other statements: on the same connection.
        let mut query = Script::new(tx.backend_name());
        query.statement(format!(
            "SELECT id, idempotency_key FROM outbox WHERE idempotency_key IN ({})",
            placeholders(1, run.len())
        ));
        for key in run {
            query.bind(*key);
        }
        for row in query.fetch_all(tx.reborrow()).await? {
            existing.insert(row.field::<String, _>(1)?, row.field::<i64, _>(0)?);
        }
    }
    let mut results = Vec::with_capacity(items.len());
    let mut new_items = Vec::new();
    let mut first_seen = HashSet::new();
    for to_enqueue in items {
        let key = to_enqueue.item.idempotency_key.as_str();
        let enqueued = match created.get(key) {
            Some(&id) if first_seen.insert(key) => {
                new_items.push(*to_enqueue);
                Enqueued { id, created: true }
            }
            Some(&id) => Enqueued { id, created: false },
            None => match existing.get(key) {
                Some(&id) => Enqueued { id, created: false },
                None => return Err(StoreError::Query(sqlx::Error::RowNotFound)),
            },
        };
        results.push(enqueued);
    }
    let mut script = Script::new(tx.backend_name());
    if within == Within::Own {
        // The same transaction as `inserts`, which began it.
        script.all_or_nothing();
    }
    let fail = script.or_fail();
    let answered: Vec<i64> = items.iter().filter_map(|t| t.inbound_id).collect();
    for run in runs(&answered) {
        script.statement(format!(
            "UPDATE {fail}inbound_events SET state = 'answered', outcome = 'queued' WHERE id IN ({})",
            placeholders(1, run.len())
        ));
        for id in run {
            script.bind(*id);
        }
    }
    super::content::mark_queued(&mut script, &new_items, now);
    for run in runs(&new_items) {
        script.statement(format!(
            "INSERT {fail}INTO audit_log (at, action, persona, platform, subject, outcome, detail) VALUES {}",
            value_rows("(?, 'enqueue', ?, ?, ?, 'pending', NULL)", run.len())
        ));
        for ToEnqueue { item, .. } in run {
            script
                .bind(now)
                .bind(item.persona.as_str())
                .bind(item.platform.as_str())
                .bind(item.idempotency_key.as_str());
        }
    }
    if within == Within::Own {
        script.commit();
    }
    script.execute(tx).await?;
    Ok(results)
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

//! The content pipeline's rows: one `content_items` row per post or reply Chorus means to
//! publish, from plan to measure, and `content_events`, its stage log (stage, outcome, detail,
//! who, when). The airlock's decisions (approve, edit-then-approve, reject, expire) are single
//! transactions here, and an approval writes the outbox row in the same transaction, so a held
//! item reaches the outbox exactly once and only after an approval.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::outbox::insert_outbox;
use super::script::Script;
use super::{Db, Engine, NewOutbox, StoreResult, ToEnqueue, now_ms, runs, sql_limit, value_rows};
use crate::platform::Engagement;

/// Where an item is. `planned` and `dispatched` are planned posts before and while they are
/// written; `generating` a reply being written, `submitted` an operator's post before its review;
/// `held` waits in the airlock; `dropped`, `blocked`, `rejected`, `expired` and `failed` are ends
/// without a publish.
pub const STAGES: &[&str] = &[
    "planned",
    "dispatched",
    "generating",
    "submitted",
    "dropped",
    "blocked",
    "held",
    "rejected",
    "expired",
    "queued",
    "published",
    "failed",
];

/// One row of `content_items`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContentItem {
    pub id: i64,
    pub idempotency_key: String,
    pub persona: String,
    pub platform: String,
    pub kind: String,
    pub stage: String,
    pub reason: Option<String>,
    pub topic: Option<String>,
    pub campaign: Option<String>,
    pub due_at: Option<i64>,
    pub text: Option<String>,
    pub original_text: Option<String>,
    pub reply_to: Option<String>,
    pub conversation: Option<String>,
    pub inbound_id: Option<i64>,
    /// The review's violations, JSON.
    pub flags: Option<String>,
    pub submitted_by: String,
    pub edited_by: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub remote_id: Option<String>,
    pub published_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const ITEM_COLUMNS: &str = "id, idempotency_key, persona, platform, kind, stage, reason, topic, campaign, due_at, text, \
     original_text, reply_to, conversation, inbound_id, flags, submitted_by, edited_by, decided_by, decided_at, \
     expires_at, remote_id, published_at, created_at, updated_at";

impl ContentItem {
    fn from_row(row: &AnyRow) -> StoreResult<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            idempotency_key: row.try_get("idempotency_key")?,
            persona: row.try_get("persona")?,
            platform: row.try_get("platform")?,
            kind: row.try_get("kind")?,
            stage: row.try_get("stage")?,
            reason: row.try_get("reason")?,
            topic: row.try_get("topic")?,
            campaign: row.try_get("campaign")?,
            due_at: row.try_get("due_at")?,
            text: row.try_get("text")?,
            original_text: row.try_get("original_text")?,
            reply_to: row.try_get("reply_to")?,
            conversation: row.try_get("conversation")?,
            inbound_id: row.try_get("inbound_id")?,
            flags: row.try_get("flags")?,
            submitted_by: row.try_get("submitted_by")?,
            edited_by: row.try_get("edited_by")?,
            decided_by: row.try_get("decided_by")?,
            decided_at: row.try_get("decided_at")?,
            expires_at: row.try_get("expires_at")?,
            remote_id: row.try_get("remote_id")?,
            published_at: row.try_get("published_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    /// The outbox row an approval queues.
    pub fn to_outbox(&self) -> NewOutbox {
        NewOutbox {
            idempotency_key: self.idempotency_key.clone(),
            persona: self.persona.clone(),
            platform: self.platform.clone(),
            kind: self.kind.clone(),
            text: self.text.clone().unwrap_or_default(),
            reply_to: self.reply_to.clone(),
            conversation: self.conversation.clone(),
        }
    }
}

/// One entry of an item's stage log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContentEvent {
    pub stage: String,
    pub outcome: String,
    pub detail: Option<String>,
    pub actor: String,
    pub at: i64,
}

/// One entry of an item's stage log, before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageEntry {
    pub stage: &'static str,
    pub outcome: String,
    pub detail: Option<String>,
    pub actor: String,
}

/// What the pipeline did with an item before it reached the outbox — its stage log so far, the
/// review's flags, who submitted it — written in the outbox transaction itself, so a reply costs
/// one transaction however many steps it went through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentLog {
    pub entries: Vec<StageEntry>,
    /// The review's violations, JSON (flags that did not hold the item).
    pub flags: Option<String>,
    /// Who submitted it, when not the persona (an operator's post).
    pub submitted_by: Option<String>,
}

impl ContentLog {
    pub fn push(&mut self, stage: &'static str, outcome: &str, detail: Option<&str>, actor: &str) {
        self.entries.push(StageEntry {
            stage,
            outcome: outcome.to_owned(),
            detail: detail.map(str::to_owned),
            actor: actor.to_owned(),
        });
    }
}

/// A post the plan schedules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPlanned {
    pub idempotency_key: String,
    pub persona: String,
    pub platform: String,
    pub due_at: i64,
    pub topic: Option<String>,
    pub campaign: Option<String>,
}

/// An item that starts its life at the generate stage (a reply, or an operator's post).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContent {
    /// `generating` (a reply) or `submitted` (an operator's post).
    pub stage: &'static str,
    pub idempotency_key: String,
    pub persona: String,
    pub platform: String,
    pub kind: String,
    pub reply_to: Option<String>,
    pub conversation: Option<String>,
    pub inbound_id: Option<i64>,
    pub submitted_by: String,
}

/// Which items to list (by default: the newest 50 of every kind).
#[derive(Debug, Clone)]
pub struct ContentFilter {
    pub stage: Option<String>,
    pub persona: Option<String>,
    pub platform: Option<String>,
    pub kind: Option<String>,
    pub limit: i64,
}

impl Default for ContentFilter {
    fn default() -> Self {
        ContentFilter { stage: None, persona: None, platform: None, kind: None, limit: 50 }
    }
}

/// Why an airlock decision could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AirlockRefusal {
    NotFound,
    /// The item is not held (any more): its stage.
    NotHeld(String),
    /// Its hold ran out; it is now `expired`.
    Expired,
    /// The two-person rule: this person submitted or edited it.
    SecondPersonNeeded(String),
}

/// What an approval did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// Queued in the outbox (row id); `created` is false when a row with the item's idempotency
    /// key was there already (nothing was added).
    Queued { outbox_id: i64, created: bool },
    /// The edit is saved; under the two-person rule someone else must now approve it.
    EditedAwaitingApproval,
}

/// Who answers a message that mentions several personas, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAssignment {
    pub first: String,
    pub joiners: Vec<String>,
    pub skipped: Vec<String>,
}

fn split_names(text: &str) -> Vec<String> {
    text.split(',').filter(|name| !name.is_empty()).map(str::to_owned).collect()
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

/// Appends to an item's stage log.
pub(super) async fn event(
    tx: &mut Tx<'_>,
    item_id: i64,
    stage: &str,
    outcome: &str,
    detail: Option<&str>,
    actor: &str,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO content_events (item_id, stage, outcome, detail, actor, at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(item_id)
    .bind(stage)
    .bind(outcome)
    .bind(detail)
    .bind(actor)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Moves the items with these keys to `queued` (creating those queued without one) and writes
/// what the pipeline logged for each, in the outbox transaction's script: two statements for a
/// run (see [`super::runs`]). The keys are distinct.
pub(super) fn mark_queued(script: &mut Script, items: &[ToEnqueue<'_>], now: i64) {
    for run in super::runs(items) {
        let fail = script.or_fail();
        script.statement(format!(
            "INSERT {fail}INTO content_items (idempotency_key, persona, platform, kind, stage, text, reply_to, \
             conversation, inbound_id, submitted_by, flags, created_at, updated_at) VALUES {} \
             ON CONFLICT (idempotency_key) DO UPDATE SET stage = 'queued', text = excluded.text, \
             flags = COALESCE(excluded.flags, content_items.flags), updated_at = excluded.updated_at",
            value_rows("(?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)", run.len())
        ));
        for ToEnqueue { item, inbound_id, log } in run {
            let submitted_by = log.and_then(|log| log.submitted_by.as_deref()).unwrap_or(&item.persona);
            super::outbox::bind_item(script, item, *inbound_id);
            script.bind(submitted_by).bind(log.and_then(|log| log.flags.as_deref())).bind(now).bind(now);
        }
    }
    let queued: Vec<StageEntry> = items
        .iter()
        .map(|t| StageEntry {
            stage: "queue",
            outcome: "queued".to_owned(),
            detail: None,
            actor: t.item.persona.clone(),
        })
        .collect();
    let logged = items.iter().flat_map(|t| {
        let key = t.item.idempotency_key.as_str();
        t.log.iter().flat_map(|log| &log.entries).map(move |entry| (key, entry))
    });
    let entries: Vec<(&str, &StageEntry)> =
        logged.chain(items.iter().zip(&queued).map(|(t, entry)| (t.item.idempotency_key.as_str(), entry))).collect();
    events_by_key(script, &entries, now);
}

/// Appends entries to the stage logs of items known by key, in the caller's script after the
/// statements that wrote those items (the item's id is looked up in the statement, so no
/// round trip comes back for it). An entry whose key has no item is left out; the entries keep
/// their order.
pub(super) fn events_by_key(script: &mut Script, entries: &[(&str, &StageEntry)], now: i64) {
    for run in super::runs(entries) {
        let fail = script.or_fail();
        script.statement(events_by_key_sql(fail, run.len()));
        for (key, entry) in run {
            script
                .bind(*key)
                .bind(entry.stage)
                .bind(entry.outcome.as_str())
                .bind(entry.detail.as_deref())
                .bind(entry.actor.as_str())
                .bind(now);
        }
    }
}

/// [`events_by_key`]'s insert of `rows` entries: each row's item id is a subquery on its key,
/// and the rows whose key has none are left out. Read straight from its `VALUES`, in order, the
/// rows are inserted in order; a join with the items (or an `ORDER BY`) made SQLite copy them
/// into a temporary table (and sort them) first, twice a reply. `fail` is the script's
/// [`Script::or_fail`].
pub(super) fn events_by_key_sql(fail: &str, rows: usize) -> String {
    format!(
        "INSERT {fail}INTO content_events (item_id, stage, outcome, detail, actor, at) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6 FROM (VALUES {}) AS v \
         WHERE v.column1 IS NOT NULL",
        value_rows("((SELECT id FROM content_items WHERE idempotency_key = ?), ?, ?, ?, ?, ?)", rows)
    )
}

/// Appends several entries to an item's stage log in one statement.
pub(super) async fn events(tx: &mut Tx<'_>, item_id: i64, entries: &[StageEntry]) -> StoreResult<()> {
    let entries: Vec<(i64, &StageEntry)> = entries.iter().map(|entry| (item_id, entry)).collect();
    events_of(tx, &entries).await
}

/// Appends entries to several items' stage logs in one statement.
async fn events_of(tx: &mut Tx<'_>, entries: &[(i64, &StageEntry)]) -> StoreResult<()> {
    let now = now_ms();
    for run in runs(entries) {
        let sql = format!(
            "INSERT INTO content_events (item_id, stage, outcome, detail, actor, at) VALUES {}",
            value_rows("(?, ?, ?, ?, ?, ?)", run.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (item_id, entry) in run {
            query = query
                .bind(*item_id)
                .bind(entry.stage)
                .bind(&entry.outcome)
                .bind(entry.detail.as_deref())
                .bind(&entry.actor)
                .bind(now);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The items of outbox rows that were published: each moves to `published` with its remote id,
/// and its stage log says so, in the outbox transaction's script.
pub(super) fn mark_published(script: &mut Script, published: &[(&str, &str)], now: i64) {
    if published.is_empty() {
        return;
    }
    // $1 the time, then a (key, remote id) pair per item for the CASE, then the keys again.
    let cases: String = (0..published.len()).map(|n| format!(" WHEN ${} THEN ${}", 2 + 2 * n, 3 + 2 * n)).collect();
    let fail = script.or_fail();
    script.statement(format!(
        "UPDATE {fail}content_items SET stage = 'published', remote_id = CASE idempotency_key{cases} END, reason = NULL, \
         published_at = $1, updated_at = $1 WHERE idempotency_key IN ({})",
        super::placeholders(2 + 2 * published.len(), published.len())
    ));
    script.bind(now);
    for (key, remote_id) in published {
        script.bind(*key).bind(*remote_id);
    }
    for (key, _) in published {
        script.bind(*key);
    }
    let entries: Vec<StageEntry> = published
        .iter()
        .map(|(_, remote_id)| StageEntry {
            stage: "publish",
            outcome: "published".to_owned(),
            detail: Some((*remote_id).to_owned()),
            actor: "publisher".to_owned(),
        })
        .collect();
    let entries: Vec<(&str, &StageEntry)> =
        published.iter().zip(&entries).map(|((key, _), entry)| (*key, entry)).collect();
    events_by_key(script, &entries, now);
}

/// The item of an outbox row was refused for good, in the outbox transaction.
pub(super) async fn mark_failed(tx: &mut Tx<'_>, idempotency_key: &str, error: &str) -> StoreResult<()> {
    let now = now_ms();
    let row = sqlx::query(
        "UPDATE content_items SET stage = 'failed', remote_id = NULL, reason = $2, updated_at = $3 \
         WHERE idempotency_key = $1 \
         RETURNING id",
    )
    .bind(idempotency_key)
    .bind(error)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = row {
        event(tx, row.try_get(0)?, "publish", "failed", Some(error), "publisher").await?;
    }
    Ok(())
}

impl Db {
    /// Stores planned posts (once per key). Returns how many were new.
    pub async fn plan_posts(&self, posts: &[NewPlanned]) -> StoreResult<usize> {
        if posts.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let mut conn = self.write().await?;
        let mut tx = conn.begin().await?;
        let mut created = 0;
        for post in posts {
            let row = sqlx::query(
                "INSERT INTO content_items (idempotency_key, persona, platform, kind, stage, topic, campaign, due_at, \
                 submitted_by, created_at, updated_at) VALUES ($1, $2, $3, 'post', 'planned', $4, $5, $6, $2, $7, $7) \
                 ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            )
            .bind(&post.idempotency_key)
            .bind(&post.persona)
            .bind(&post.platform)
            .bind(post.topic.as_deref())
            .bind(post.campaign.as_deref())
            .bind(post.due_at)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                let detail = post.topic.as_deref().map(|topic| format!("topic: {topic}"));
                event(&mut tx, row.try_get(0)?, "plan", "planned", detail.as_deref(), "team_leader").await?;
                created += 1;
            }
        }
        tx.commit().await?;
        Ok(created)
    }

    /// Planned posts due by `now`, oldest first.
    pub async fn due_planned(&self, now: i64, limit: i64) -> StoreResult<Vec<ContentItem>> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM content_items WHERE stage = 'planned' AND due_at <= $1 ORDER BY due_at, id {}",
            sql_limit(limit)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).fetch_all(&mut *self.read().await?).await?;
        rows.iter().map(ContentItem::from_row).collect()
    }

    /// Hands a planned post to its agent (`planned` → `dispatched`); false if it was not planned.
    pub async fn dispatch_planned(&self, id: i64) -> StoreResult<bool> {
        self.move_item(id, "planned", "dispatched", None, ("dispatch", "dispatched", None, "team_leader")).await
    }

    /// Planned posts whose time passed while their agent could not take them: `dropped`.
    pub async fn drop_missed(&self, id: i64, reason: &str) -> StoreResult<bool> {
        self.move_item(id, "planned", "dropped", Some(reason), ("dispatch", "dropped", Some(reason), "team_leader"))
            .await
    }

    /// One agent's posts handed to it but not finished (to resume after a restart).
    pub async fn dispatched_posts(&self, persona: &str, platform: &str) -> StoreResult<Vec<ContentItem>> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM content_items WHERE stage = 'dispatched' AND kind = 'post' AND persona = $1 AND platform = $2 \
             ORDER BY due_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(persona)
            .bind(platform)
            .fetch_all(&mut *self.read().await?)
            .await?;
        rows.iter().map(ContentItem::from_row).collect()
    }

    /// `from` → `to` with a log entry, only if the item is at `from`.
    async fn move_item(
        &self,
        id: i64,
        from: &str,
        to: &str,
        reason: Option<&str>,
        (stage, outcome, detail, actor): (&str, &str, Option<&str>, &str),
    ) -> StoreResult<bool> {
        let mut conn = self.write().await?;
        let mut tx = conn.begin().await?;
        let moved = sqlx::query(
            "UPDATE content_items SET stage = $3, reason = COALESCE($4, reason), updated_at = $5 \
             WHERE id = $1 AND stage = $2",
        )
        .bind(id)
        .bind(from)
        .bind(to)
        .bind(reason)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if moved {
            event(&mut tx, id, stage, outcome, detail, actor).await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    /// Creates the item of a reply or an operator's post at the generate stage (or returns the
    /// existing one with the same key).
    pub async fn start_content(&self, item: &NewContent) -> StoreResult<i64> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO content_items (idempotency_key, persona, platform, kind, stage, reply_to, conversation, \
             inbound_id, submitted_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $10, $5, $6, $7, $8, $9, $9) \
             ON CONFLICT (idempotency_key) DO UPDATE SET updated_at = $9 RETURNING id",
        )
        .bind(&item.idempotency_key)
        .bind(&item.persona)
        .bind(&item.platform)
        .bind(&item.kind)
        .bind(item.reply_to.as_deref())
        .bind(item.conversation.as_deref())
        .bind(item.inbound_id)
        .bind(&item.submitted_by)
        .bind(now)
        .bind(item.stage)
        .fetch_one(&mut *self.write().await?)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Appends several entries to an item's stage log in one transaction.
    pub async fn content_log(&self, item_id: i64, entries: &[StageEntry]) -> StoreResult<()> {
        let mut conn = self.write().await?;
        let mut tx = conn.begin().await?;
        events(&mut tx, item_id, entries).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends to an item's stage log.
    pub async fn content_event(
        &self,
        item_id: i64,
        stage: &str,
        outcome: &str,
        detail: Option<&str>,
        actor: &str,
    ) -> StoreResult<()> {
        let mut conn = self.write().await?;
        let mut tx = conn.begin().await?;
        event(&mut tx, item_id, stage, outcome, detail, actor).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The generation gave nothing to publish (empty, or a duplicate after every rewrite).
    pub async fn drop_content(&self, item_id: i64, reason: &str, actor: &str) -> StoreResult<()> {
        let mut conn = self.write().await?;
        let mut tx = conn.begin().await?;
        sqlx::query("UPDATE content_items SET stage = 'dropped', reason = $2, updated_at = $3 WHERE id = $1")
            .bind(item_id)
            .bind(reason)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        event(&mut tx, item_id, "generate", "dropped", Some(reason), actor).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The review blocked the item: it is never queued. Its mention (if any) is not answered.
    pub async fn block_content(
        &self,
        item_id: i64,
        text: &str,
        flags: &str,
        reasons: &str,
        actor: &str,
    ) -> StoreResult<()> {
        let mut conn = self.write().await?;
        let mut tx = conn.begin().await?;
        let row = sqlx::query(
            "UPDATE content_items SET stage = 'blocked', text = $2, flags = $3, reason = $4, updated_at = $5 \
             WHERE id = $1 RETURNING inbound_id",
        )
        .bind(item_id)
        .bind(text)
        .bind(flags)
        .bind(reasons)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        event(&mut tx, item_id, "review", "blocked", Some(reasons), actor).await?;
        settle_inbound(&mut tx, row.try_get(0)?, "ignored", "policy_blocked").await?;
        tx.commit().await?;
        Ok(())
    }

    /// The airlock holds the item for a human until `expires_at`. Its mention (if any) leaves
    /// the agent's queue (`held`), so it is not generated again.
    pub async fn hold_content(
        &self,
        item_id: i64,
        text: &str,
        flags: Option<&str>,
        reason: &str,
        expires_at: i64,
        actor: &str,
    ) -> StoreResult<()> {
        let mut conn = self.write().await?;
        let mut tx = conn.begin().await?;
        let row = sqlx::query(
            "UPDATE content_items SET stage = 'held', text = $2, flags = $3, reason = $4, expires_at = $5, \
             updated_at = $6 WHERE id = $1 RETURNING inbound_id",
        )
        .bind(item_id)
        .bind(text)
        .bind(flags)
        .bind(reason)
        .bind(expires_at)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        event(&mut tx, item_id, "approve", "held", Some(reason), actor).await?;
        settle_inbound(&mut tx, row.try_get(0)?, "held", "held").await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the review's flags on an item that goes on to the outbox.
    pub async fn set_content_flags(&self, item_id: i64, text: &str, flags: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE content_items SET text = $2, flags = $3, updated_at = $4 WHERE id = $1")
            .bind(item_id)
            .bind(text)
            .bind(flags)
            .bind(now_ms())
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }

    pub async fn content_item(&self, id: i64) -> StoreResult<Option<ContentItem>> {
        let sql = format!("SELECT {ITEM_COLUMNS} FROM content_items WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *self.read().await?).await?;
        row.as_ref().map(ContentItem::from_row).transpose()
    }

    pub async fn content_by_key(&self, idempotency_key: &str) -> StoreResult<Option<ContentItem>> {
        let sql = format!("SELECT {ITEM_COLUMNS} FROM content_items WHERE idempotency_key = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(idempotency_key)
            .fetch_optional(&mut *self.read().await?)
            .await?;
        row.as_ref().map(ContentItem::from_row).transpose()
    }

    /// Items matching a filter, newest first.
    pub async fn content_items(&self, filter: &ContentFilter) -> StoreResult<Vec<ContentItem>> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM content_items WHERE ($1 IS NULL OR stage = $1) AND ($2 IS NULL OR persona = $2) \
             AND ($3 IS NULL OR platform = $3) AND ($4 IS NULL OR kind = $4) ORDER BY id DESC {}",
            sql_limit(filter.limit.max(1))
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.stage.as_deref())
            .bind(filter.persona.as_deref())
            .bind(filter.platform.as_deref())
            .bind(filter.kind.as_deref())
            .fetch_all(&mut *self.read().await?)
            .await?;
        rows.iter().map(ContentItem::from_row).collect()
    }

    /// An item's stage log, oldest first.
    pub async fn content_events(&self, item_id: i64) -> StoreResult<Vec<ContentEvent>> {
        let rows =
            sqlx::query("SELECT stage, outcome, detail, actor, at FROM content_events WHERE item_id = $1 ORDER BY id")
                .bind(item_id)
                .fetch_all(&mut *self.read().await?)
                .await?;
        rows.iter()
            .map(|row| {
                Ok(ContentEvent {
                    stage: row.try_get(0)?,
                    outcome: row.try_get(1)?,
                    detail: row.try_get(2)?,
                    actor: row.try_get(3)?,
                    at: row.try_get(4)?,
                })
            })
            .collect()
    }

    /// Approves a held item — with `edit`, after replacing its text — and queues it in the same
    /// transaction. Refused when it is not held, its hold ran out (it becomes `expired`), or the
    /// two-person rule applies and `by` submitted or edited it (an edit is then saved, and waits
    /// for someone else).
    pub async fn approve_content(
        &self,
        id: i64,
        by: &str,
        edit: Option<&str>,
        two_person: bool,
    ) -> StoreResult<Result<Approval, AirlockRefusal>> {
        let now = now_ms();
        let mut conn = self.write().await?;
        let mut tx = conn.begin().await?;
        lock_item(&mut tx, id).await?;
        let sql = format!("SELECT {ITEM_COLUMNS} FROM content_items WHERE id = $1");
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *tx).await? else {
            return Ok(Err(AirlockRefusal::NotFound));
        };
        let mut item = ContentItem::from_row(&row)?;
        if item.stage != "held" {
            return Ok(Err(AirlockRefusal::NotHeld(item.stage)));
        }
        if item.expires_at.is_some_and(|at| at <= now) {
            expire(&mut tx, &item).await?;
            tx.commit().await?;
            return Ok(Err(AirlockRefusal::Expired));
        }
        if let Some(text) = edit.filter(|text| Some(*text) != item.text.as_deref()) {
            // Checked: the row is still held (a concurrent decision wins, this one is refused).
            let edited = sqlx::query(
                "UPDATE content_items SET original_text = COALESCE(original_text, text), text = $2, edited_by = $3, \
                 updated_at = $4 WHERE id = $1 AND stage = 'held'",
            )
            .bind(id)
            .bind(text)
            .bind(by)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if edited != 1 {
                return Ok(Err(AirlockRefusal::NotHeld("decided".to_owned())));
            }
            event(&mut tx, id, "approve", "edited", None, by).await?;
            item.text = Some(text.to_owned());
            item.edited_by = Some(by.to_owned());
            if two_person {
                tx.commit().await?;
                return Ok(Ok(Approval::EditedAwaitingApproval));
            }
        }
        if two_person && (item.submitted_by == by || item.edited_by.as_deref() == Some(by)) {
            return Ok(Err(AirlockRefusal::SecondPersonNeeded(format!(
                "{by} submitted or edited this item; under the two-person rule someone else must approve it"
            ))));
        }
        let decided = sqlx::query(
            "UPDATE content_items SET decided_by = $2, decided_at = $3, updated_at = $3 \
             WHERE id = $1 AND stage = 'held'",
        )
        .bind(id)
        .bind(by)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if decided != 1 {
            return Ok(Err(AirlockRefusal::NotHeld("decided".to_owned())));
        }
        event(&mut tx, id, "approve", "approved", None, by).await?;
        let enqueued = insert_outbox(&mut tx, &item.to_outbox(), item.inbound_id, None).await?;
        tx.commit().await?;
        Ok(Ok(Approval::Queued { outbox_id: enqueued.id, created: enqueued.created }))
    }

    /// Rejects a held item: it is never published.
    pub async fn reject_content(&self, id: i64, by: &str, reason: &str) -> StoreResult<Result<(), AirlockRefusal>> {
        let now = now_ms();
        let mut conn = self.write().await?;
        let mut tx = conn.begin().await?;
        lock_item(&mut tx, id).await?;
        let sql = format!("SELECT {ITEM_COLUMNS} FROM content_items WHERE id = $1");
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *tx).await? else {
            return Ok(Err(AirlockRefusal::NotFound));
        };
        let item = ContentItem::from_row(&row)?;
        if item.stage != "held" {
            return Ok(Err(AirlockRefusal::NotHeld(item.stage)));
        }
        let rejected = sqlx::query(
            "UPDATE content_items SET stage = 'rejected', reason = $2, decided_by = $3, decided_at = $4, updated_at = $4 \
             WHERE id = $1 AND stage = 'held'",
        )
        .bind(id)
        .bind(reason)
        .bind(by)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if rejected != 1 {
            return Ok(Err(AirlockRefusal::NotHeld("decided".to_owned())));
        }
        event(&mut tx, id, "approve", "rejected", Some(reason), by).await?;
        settle_inbound(&mut tx, item.inbound_id, "ignored", "rejected").await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Expires every hold that ran out by `now`. Returns the items expired.
    pub async fn expire_holds(&self, now: i64) -> StoreResult<Vec<i64>> {
        let sql = format!("SELECT {ITEM_COLUMNS} FROM content_items WHERE stage = 'held' AND expires_at <= $1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).fetch_all(&mut *self.read().await?).await?;
        let mut expired = Vec::new();
        for row in &rows {
            let item = ContentItem::from_row(row)?;
            let mut conn = self.write().await?;
            let mut tx = conn.begin().await?;
            if expire(&mut tx, &item).await? {
                expired.push(item.id);
            }
            tx.commit().await?;
        }
        Ok(expired)
    }

    /// Pending mentions of each persona on a platform (the coordination's load).
    pub async fn pending_load(&self, platform: &str, personas: &[String]) -> StoreResult<Vec<(String, i64)>> {
        if personas.is_empty() {
            return Ok(Vec::new());
        }
        // Per persona, so the pending-only index answers (by platform alone, the plan walked every
        // mention the platform ever had).
        let sql = format!(
            "SELECT persona, COUNT(*) FROM inbound_events WHERE persona IN ({}) AND platform = $1 \
             AND state = 'pending' GROUP BY persona",
            super::placeholders(2, personas.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(platform);
        for persona in personas {
            query = query.bind(persona);
        }
        let rows = query.fetch_all(&mut *self.read().await?).await?;
        let mut counts = std::collections::BTreeMap::new();
        for row in &rows {
            counts.insert(row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?);
        }
        Ok(personas.iter().map(|persona| (persona.clone(), counts.get(persona).copied().unwrap_or(0))).collect())
    }

    /// Stores who answers a message, unless someone decided already; returns the decision in force.
    pub async fn assign_thread(
        &self,
        platform: &str,
        remote_id: &str,
        assignment: &StoredAssignment,
        detail: &str,
    ) -> StoreResult<StoredAssignment> {
        sqlx::query(
            "INSERT INTO thread_assignments (platform, remote_id, first, joiners, skipped, detail, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (platform, remote_id) DO NOTHING",
        )
        .bind(platform)
        .bind(remote_id)
        .bind(&assignment.first)
        .bind(assignment.joiners.join(","))
        .bind(assignment.skipped.join(","))
        .bind(detail)
        .bind(now_ms())
        .execute(&mut *self.write().await?)
        .await?;
        Ok(self.thread_assignment(platform, remote_id).await?.unwrap_or_else(|| assignment.clone()))
    }

    pub async fn thread_assignment(&self, platform: &str, remote_id: &str) -> StoreResult<Option<StoredAssignment>> {
        let row = sqlx::query(
            "SELECT first, joiners, skipped FROM thread_assignments WHERE platform = $1 AND remote_id = $2",
        )
        .bind(platform)
        .bind(remote_id)
        .fetch_optional(&mut *self.read().await?)
        .await?;
        row.map(|row| {
            Ok(StoredAssignment {
                first: row.try_get(0)?,
                joiners: split_names(&row.try_get::<String, _>(1)?),
                skipped: split_names(&row.try_get::<String, _>(2)?),
            })
        })
        .transpose()
    }

    /// Where a persona's answer to a message is: `None` while nothing was decided for it, else
    /// the item's stage.
    pub async fn reply_stage(&self, idempotency_key: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT stage FROM content_items WHERE idempotency_key = $1")
            .bind(idempotency_key)
            .fetch_optional(&mut *self.read().await?)
            .await?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    /// The state of one persona's copy of a message (`pending`, `answered`, `held`, `ignored`).
    pub async fn inbound_state(&self, platform: &str, remote_id: &str, persona: &str) -> StoreResult<Option<String>> {
        let row =
            sqlx::query("SELECT state FROM inbound_events WHERE platform = $1 AND remote_id = $2 AND persona = $3")
                .bind(platform)
                .bind(remote_id)
                .bind(persona)
                .fetch_optional(&mut *self.read().await?)
                .await?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    /// Published items due for an engagement fetch: published between `now - measure_for` and
    /// `now - measure_after`, never measured or due again.
    pub async fn items_to_measure(
        &self,
        now: i64,
        measure_after_ms: i64,
        measure_for_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<ContentItem>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(items_to_measure_sql(self.engine(), limit)))
            .bind(now)
            .bind(now - measure_after_ms)
            .bind(now - measure_for_ms)
            .fetch_all(&mut *self.read().await?)
            .await?;
        rows.iter().map(ContentItem::from_row).collect()
    }

    /// Stores one fetch of engagement (or, with `None`, that the platform no longer has the item)
    /// and when to fetch again.
    pub async fn record_engagement(
        &self,
        item_id: i64,
        engagement: Option<&Engagement>,
        next_at: i64,
    ) -> StoreResult<()> {
        let now = now_ms();
        let mut conn = self.write().await?;
        let mut tx = conn.begin().await?;
        if let Some(engagement) = engagement {
            sqlx::query(
                "INSERT INTO engagement (item_id, fetched_at, likes, replies, reposts, impressions) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(item_id)
            .bind(now)
            .bind(engagement.likes)
            .bind(engagement.replies)
            .bind(engagement.reposts)
            .bind(engagement.impressions)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE content_items SET measure_at = $2 WHERE id = $1")
            .bind(item_id)
            .bind(next_at)
            .execute(&mut *tx)
            .await?;
        let detail = match engagement {
            Some(e) => format!("likes {}, replies {}, reposts {}", e.likes, e.replies, e.reposts),
            None => "not found on the platform".to_owned(),
        };
        event(
            &mut tx,
            item_id,
            "measure",
            if engagement.is_some() { "measured" } else { "missing" },
            Some(&detail),
            "team_leader",
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The latest engagement fetched for an item.
    pub async fn latest_engagement(&self, item_id: i64) -> StoreResult<Option<Engagement>> {
        let row = sqlx::query(
            "SELECT likes, replies, reposts, impressions FROM engagement WHERE item_id = $1 \
             ORDER BY fetched_at DESC, id DESC LIMIT 1",
        )
        .bind(item_id)
        .fetch_optional(&mut *self.read().await?)
        .await?;
        row.map(|row| {
            Ok(Engagement {
                likes: row.try_get(0)?,
                replies: row.try_get(1)?,
                reposts: row.try_get(2)?,
                impressions: row.try_get(3)?,
            })
        })
        .transpose()
    }
}

/// Takes the write lock before the transaction reads anything: a no-op write of the item's row.
/// On SQLite a transaction that reads first and writes later fails at once (busy snapshot) when
/// another connection wrote in between, instead of waiting; writing first waits its turn
/// (busy_timeout). On Postgres it locks the row until the decision is made.
async fn lock_item(tx: &mut Tx<'_>, id: i64) -> StoreResult<()> {
    sqlx::query("UPDATE content_items SET updated_at = updated_at WHERE id = $1").bind(id).execute(&mut **tx).await?;
    Ok(())
}

/// `held` → `expired` with a log entry; the mention (if any) is not answered. False if the item
/// was decided meanwhile.
async fn expire(tx: &mut Tx<'_>, item: &ContentItem) -> StoreResult<bool> {
    let expired = sqlx::query(
        "UPDATE content_items SET stage = 'expired', reason = 'hold expired', updated_at = $2 WHERE id = $1 AND stage = 'held'",
    )
    .bind(item.id)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if expired {
        event(tx, item.id, "approve", "expired", None, "team_leader").await?;
        settle_inbound(tx, item.inbound_id, "ignored", "hold_expired").await?;
    }
    Ok(expired)
}

async fn settle_inbound(tx: &mut Tx<'_>, inbound_id: Option<i64>, state: &str, outcome: &str) -> StoreResult<()> {
    if let Some(inbound_id) = inbound_id {
        sqlx::query("UPDATE inbound_events SET state = $2, outcome = $3 WHERE id = $1")
            .bind(inbound_id)
            .bind(state)
            .bind(outcome)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// [`Db::items_to_measure`]'s query: the published items by publish time, within the window
/// (`$2`, `$3`), due (`$1`). On SQLite it names `content_items_published`: without statistics the
/// planner takes the stage index's equality over the range, and walks every published item.
pub(super) fn items_to_measure_sql(engine: Engine, limit: i64) -> String {
    let table = match engine {
        Engine::Sqlite => "content_items INDEXED BY content_items_published",
        Engine::Postgres => "content_items",
    };
    format!(
        "SELECT {ITEM_COLUMNS} FROM {table} WHERE stage = 'published' AND remote_id IS NOT NULL \
         AND published_at <= $2 AND published_at >= $3 AND (measure_at IS NULL OR measure_at <= $1) \
         ORDER BY published_at {}",
        sql_limit(limit)
    )
}

//! Weekly report queries: aggregates over `content_items`, `content_events`, `engagement`,
//! `llm_usage` and `ops_events` for one window `[from_ms, to_ms)`, the operational events the
//! report counts, and the stored reports.
//!
//! Every tally is one aggregate statement (no query per item) that runs unchanged on SQLite and
//! Postgres: sums are cast back to BIGINT / DOUBLE PRECISION because Postgres sums BIGINT into
//! NUMERIC, which the Any driver cannot decode. An item's engagement is its latest fetch
//! (`fetched_at`, then `id`), whenever that fetch happened, so a report regenerated later shows the
//! engagement measured since.
//!
//! Lists come sorted in Rust (byte order), not by `ORDER BY`: a Postgres collation would order
//! names like `agent:ada@x` differently from SQLite, and the report must read the same on both.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Db, Engine, StoreResult, now_ms, sql_limit};

/// The kinds of `ops_events` rows the weekly report counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpsKind {
    /// A call waited for a rate limiter; `value_ms` is how long.
    RateLimitWait,
    /// A rate limiter refused a call (the wait would have been too long).
    RateLimitRefused,
    /// A supervisor restarted a child; the subject is the child id (`agent:ada@x`, `publisher`).
    Restart,
    /// A supervisor opened a child's circuit (parked it); the subject is the child id.
    CircuitOpen,
}

impl OpsKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpsKind::RateLimitWait => "rate_limit_wait",
            OpsKind::RateLimitRefused => "rate_limit_refused",
            OpsKind::Restart => "restart",
            OpsKind::CircuitOpen => "circuit_open",
        }
    }
}

/// Engagement summed over items: each item counts with its latest fetch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngagementTotals {
    pub likes: i64,
    pub replies: i64,
    pub reposts: i64,
    /// Items whose platform reports no impressions count 0.
    pub impressions: i64,
}

/// What one persona did on one platform in the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContentTally {
    pub persona: String,
    pub platform: String,
    /// Posts with `published_at` in the window.
    pub posts_published: i64,
    /// Replies with `published_at` in the window.
    pub replies_published: i64,
    /// Engagement of the posts and replies published in the window.
    pub engagement: EngagementTotals,
    /// `approve`/`held` events in the window: items put in the airlock.
    pub held: i64,
    /// `approve`/`approved` events in the window.
    pub approved: i64,
    /// `approve`/`rejected` events in the window.
    pub rejected: i64,
    /// `approve`/`expired` events in the window: holds that ran out.
    pub expired: i64,
    /// `review`/`blocked` events in the window.
    pub blocked: i64,
}

/// A published post ranked by its engagement score (likes + replies + reposts of its latest fetch;
/// 0 when it was never measured).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RankedPost {
    /// The `content_items` id.
    pub id: i64,
    pub persona: String,
    pub platform: String,
    /// Its id on the platform.
    pub remote_id: Option<String>,
    pub published_at: i64,
    /// The full text (the report shortens it).
    pub text: String,
    pub score: i64,
}

/// Which end of the ranking [`Db::ranked_posts`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rank {
    /// Highest score first.
    Top,
    /// Lowest score first.
    Worst,
}

/// LLM calls of one persona in the window.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LlmTally {
    pub persona: String,
    /// Every `llm_usage` row, whatever its outcome.
    pub calls: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
}

/// Rate limiting of one (persona, platform, subject) in the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateLimitTally {
    pub persona: Option<String>,
    pub platform: Option<String>,
    /// What was limited, as the recorder named it.
    pub subject: String,
    /// `rate_limit_wait` events.
    pub waits: i64,
    /// Their `value_ms`, summed.
    pub waited_ms: i64,
    /// `rate_limit_refused` events.
    pub refusals: i64,
}

/// Supervision events of one child in the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChildTally {
    /// The child id: `agent:ada@x`, `publisher`, …
    pub subject: String,
    pub restarts: i64,
    pub circuit_opens: i64,
}

/// A generated report, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReport {
    /// The Monday the week starts on, `YYYY-MM-DD`.
    pub week_start: String,
    pub generated_at: i64,
    pub markdown: String,
    pub json: String,
}

/// The published items of the window with their latest engagement (`n = 1`). Both CTEs take the
/// window as `$1`, `$2`.
macro_rules! published_with_engagement {
    () => {
        "WITH published AS ( \
             SELECT id, persona, platform, kind, text, remote_id, published_at FROM content_items \
             WHERE published_at >= $1 AND published_at < $2 \
         ), latest AS ( \
             SELECT item_id, likes, replies, reposts, impressions, \
                    ROW_NUMBER() OVER (PARTITION BY item_id ORDER BY fetched_at DESC, id DESC) AS n \
             FROM engagement WHERE item_id IN (SELECT id FROM published) \
         ) "
    };
}

/// [`Db::content_tally`]'s count of decisions within the window (`$1`, `$2`): the operator's
/// approvals and the reviews that blocked, read through `content_events_decisions`, which holds
/// those entries alone (the reply path writes none). Its condition is the index's, word for word:
/// SQLite takes a partial index only for a query that has the index's condition as one of its
/// terms. SQLite's query names the index, so a condition that drifted from it fails the query
/// instead of walking the whole stage log.
pub(super) fn decisions_sql(engine: Engine) -> String {
    let events = match engine {
        Engine::Sqlite => "content_events e INDEXED BY content_events_decisions",
        Engine::Postgres => "content_events e",
    };
    format!(
        "SELECT i.persona, i.platform, \
             CAST(SUM(CASE WHEN e.stage = 'approve' AND e.outcome = 'held' THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(SUM(CASE WHEN e.stage = 'approve' AND e.outcome = 'approved' THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(SUM(CASE WHEN e.stage = 'approve' AND e.outcome = 'rejected' THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(SUM(CASE WHEN e.stage = 'approve' AND e.outcome = 'expired' THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(SUM(CASE WHEN e.stage = 'review' AND e.outcome = 'blocked' THEN 1 ELSE 0 END) AS BIGINT) \
         FROM {events} JOIN content_items i ON i.id = e.item_id \
         WHERE e.at >= $1 AND e.at < $2 \
           AND ((e.stage = 'approve' \
                 AND (e.outcome = 'held' OR e.outcome = 'approved' OR e.outcome = 'rejected' OR e.outcome = 'expired')) \
                OR (e.stage = 'review' AND e.outcome = 'blocked')) \
         GROUP BY i.persona, i.platform"
    )
}

impl Db {
    /// Records an operational event now (see [`OpsKind`] for the kinds the report counts).
    pub async fn record_ops_event(
        &self,
        kind: &str,
        persona: Option<&str>,
        platform: Option<&str>,
        subject: &str,
        value_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO ops_events (at, kind, persona, platform, subject, value_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(now_ms())
        .bind(kind)
        .bind(persona)
        .bind(platform)
        .bind(subject)
        .bind(value_ms)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    /// Per persona and platform: what was published in `[from_ms, to_ms)` with its engagement, and
    /// the airlock and review decisions logged in it. Sorted by persona, then platform; a pair with
    /// nothing to count is absent.
    pub async fn content_tally(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<ContentTally>> {
        let published = sqlx::query(concat!(
            published_with_engagement!(),
            "SELECT p.persona, p.platform, \
                 CAST(SUM(CASE WHEN p.kind = 'post' THEN 1 ELSE 0 END) AS BIGINT), \
                 CAST(SUM(CASE WHEN p.kind = 'reply' THEN 1 ELSE 0 END) AS BIGINT), \
                 CAST(COALESCE(SUM(l.likes), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(l.replies), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(l.reposts), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(l.impressions), 0) AS BIGINT) \
             FROM published p LEFT JOIN latest l ON l.item_id = p.id AND l.n = 1 \
             GROUP BY p.persona, p.platform",
        ))
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&mut *self.read().await?)
        .await?;
        let decisions = sqlx::query(sqlx::AssertSqlSafe(decisions_sql(self.engine)))
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(&mut *self.read().await?)
            .await?;

        let mut tallies: BTreeMap<(String, String), ContentTally> = BTreeMap::new();
        for row in &published {
            let tally = tally_of(&mut tallies, row)?;
            tally.posts_published = row.try_get(2)?;
            tally.replies_published = row.try_get(3)?;
            tally.engagement = EngagementTotals {
                likes: row.try_get(4)?,
                replies: row.try_get(5)?,
                reposts: row.try_get(6)?,
                impressions: row.try_get(7)?,
            };
        }
        for row in &decisions {
            let tally = tally_of(&mut tallies, row)?;
            tally.held = row.try_get(2)?;
            tally.approved = row.try_get(3)?;
            tally.rejected = row.try_get(4)?;
            tally.expired = row.try_get(5)?;
            tally.blocked = row.try_get(6)?;
        }
        Ok(tallies.into_values().collect())
    }

    /// The `limit` best or worst posts (kind `post`) published in `[from_ms, to_ms)`, by
    /// engagement score; ties go to the lower id.
    pub async fn ranked_posts(&self, from_ms: i64, to_ms: i64, rank: Rank, limit: i64) -> StoreResult<Vec<RankedPost>> {
        let order = match rank {
            Rank::Top => "score DESC, p.id ASC",
            Rank::Worst => "score ASC, p.id ASC",
        };
        let sql = format!(
            concat!(
                published_with_engagement!(),
                "SELECT p.id, p.persona, p.platform, p.remote_id, p.published_at, COALESCE(p.text, '') AS text, \
                     CAST(COALESCE(l.likes + l.replies + l.reposts, 0) AS BIGINT) AS score \
                 FROM published p LEFT JOIN latest l ON l.item_id = p.id AND l.n = 1 \
                 WHERE p.kind = 'post' ORDER BY {} {}"
            ),
            order,
            sql_limit(limit)
        );
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(from_ms).bind(to_ms).fetch_all(&mut *self.read().await?).await?;
        rows.iter()
            .map(|row| {
                Ok(RankedPost {
                    id: row.try_get("id")?,
                    persona: row.try_get("persona")?,
                    platform: row.try_get("platform")?,
                    remote_id: row.try_get("remote_id")?,
                    published_at: row.try_get("published_at")?,
                    text: row.try_get("text")?,
                    score: row.try_get("score")?,
                })
            })
            .collect()
    }

    /// LLM calls, tokens and cost per persona in `[from_ms, to_ms)`, by persona.
    pub async fn llm_tally(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<LlmTally>> {
        let rows = sqlx::query(
            "SELECT persona, COUNT(*), CAST(COALESCE(SUM(tokens_in), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(tokens_out), 0) AS BIGINT), CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) \
             FROM llm_usage WHERE created_at >= $1 AND created_at < $2 GROUP BY persona",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&mut *self.read().await?)
        .await?;
        let mut tallies = rows
            .iter()
            .map(|row| {
                Ok(LlmTally {
                    persona: row.try_get(0)?,
                    calls: row.try_get(1)?,
                    tokens_in: row.try_get(2)?,
                    tokens_out: row.try_get(3)?,
                    cost_usd: row.try_get(4)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        tallies.sort_by(|a, b| a.persona.cmp(&b.persona));
        Ok(tallies)
    }

    /// Rate-limit waits and refusals in `[from_ms, to_ms)` per (persona, platform, subject), sorted
    /// by those (a missing persona or platform first).
    pub async fn rate_limit_tally(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<RateLimitTally>> {
        let rows = sqlx::query(
            "SELECT persona, platform, subject, \
                 CAST(SUM(CASE WHEN kind = 'rate_limit_wait' THEN 1 ELSE 0 END) AS BIGINT), \
                 CAST(SUM(CASE WHEN kind = 'rate_limit_wait' THEN value_ms ELSE 0 END) AS BIGINT), \
                 CAST(SUM(CASE WHEN kind = 'rate_limit_refused' THEN 1 ELSE 0 END) AS BIGINT) \
             FROM ops_events \
             WHERE at >= $1 AND at < $2 AND kind IN ('rate_limit_wait', 'rate_limit_refused') \
             GROUP BY persona, platform, subject",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&mut *self.read().await?)
        .await?;
        let mut tallies = rows
            .iter()
            .map(|row| {
                Ok(RateLimitTally {
                    persona: row.try_get(0)?,
                    platform: row.try_get(1)?,
                    subject: row.try_get(2)?,
                    waits: row.try_get(3)?,
                    waited_ms: row.try_get(4)?,
                    refusals: row.try_get(5)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        tallies.sort_by(|a, b| (&a.persona, &a.platform, &a.subject).cmp(&(&b.persona, &b.platform, &b.subject)));
        Ok(tallies)
    }

    /// Restarts and circuit openings in `[from_ms, to_ms)` per child id, by child id.
    pub async fn child_tally(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<ChildTally>> {
        let rows = sqlx::query(
            "SELECT subject, \
                 CAST(SUM(CASE WHEN kind = 'restart' THEN 1 ELSE 0 END) AS BIGINT), \
                 CAST(SUM(CASE WHEN kind = 'circuit_open' THEN 1 ELSE 0 END) AS BIGINT) \
             FROM ops_events \
             WHERE at >= $1 AND at < $2 AND kind IN ('restart', 'circuit_open') \
             GROUP BY subject",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&mut *self.read().await?)
        .await?;
        let mut tallies = rows
            .iter()
            .map(|row| {
                Ok(ChildTally { subject: row.try_get(0)?, restarts: row.try_get(1)?, circuit_opens: row.try_get(2)? })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        tallies.sort_by(|a, b| a.subject.cmp(&b.subject));
        Ok(tallies)
    }

    /// Stores the report of a week, replacing an earlier one of the same week.
    pub async fn save_report(&self, week_start: &str, markdown: &str, json: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO reports (week_start, generated_at, markdown, json) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (week_start) DO UPDATE SET generated_at = excluded.generated_at, \
             markdown = excluded.markdown, json = excluded.json",
        )
        .bind(week_start)
        .bind(now_ms())
        .bind(markdown)
        .bind(json)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    /// The stored report of the week starting on `week_start` (`YYYY-MM-DD`).
    pub async fn report(&self, week_start: &str) -> StoreResult<Option<StoredReport>> {
        let row = sqlx::query("SELECT week_start, generated_at, markdown, json FROM reports WHERE week_start = $1")
            .bind(week_start)
            .fetch_optional(&mut *self.read().await?)
            .await?;
        row.map(|row| {
            Ok(StoredReport {
                week_start: row.try_get(0)?,
                generated_at: row.try_get(1)?,
                markdown: row.try_get(2)?,
                json: row.try_get(3)?,
            })
        })
        .transpose()
    }

    /// The stored reports, newest week first: (week start, generated at).
    pub async fn reports(&self, limit: i64) -> StoreResult<Vec<(String, i64)>> {
        let sql = format!("SELECT week_start, generated_at FROM reports ORDER BY week_start DESC {}", sql_limit(limit));
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *self.read().await?).await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
    }
}

/// The tally of the row's (persona, platform), columns 0 and 1, created empty if new.
fn tally_of<'a>(
    tallies: &'a mut BTreeMap<(String, String), ContentTally>,
    row: &AnyRow,
) -> StoreResult<&'a mut ContentTally> {
    let persona: String = row.try_get(0)?;
    let platform: String = row.try_get(1)?;
    Ok(tallies.entry((persona.clone(), platform.clone())).or_insert_with(|| ContentTally {
        persona,
        platform,
        ..ContentTally::default()
    }))
}

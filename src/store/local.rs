//! Tables of the built-in local platform: a timeline of posts and an index of `@handle` mentions.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Db, StoreResult, now_ms, sql_limit};

/// A post on the local timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalPost {
    pub id: i64,
    pub author: String,
    pub text: String,
    pub reply_to: Option<i64>,
    pub created_at: i64,
}

impl LocalPost {
    fn from_row(row: &AnyRow) -> StoreResult<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            author: row.try_get("author")?,
            text: row.try_get("text")?,
            reply_to: row.try_get("reply_to")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl Db {
    /// Adds a post and its mentions; `None` when `reply_to` names no post. With a `client_key`
    /// the call is idempotent: posting the same key again returns the first post and adds nothing.
    /// One statement: the post names its mentions and a trigger indexes them.
    pub async fn local_post(
        &self,
        author: &str,
        text: &str,
        reply_to: Option<i64>,
        client_key: Option<&str>,
        mentions: &[String],
    ) -> StoreResult<Option<LocalPost>> {
        let mut handles: Vec<&str> = Vec::with_capacity(mentions.len());
        for handle in mentions {
            if !handles.contains(&handle.as_str()) {
                handles.push(handle);
            }
        }
        // A JSON array of strings cannot fail to serialize.
        let handles = (!handles.is_empty()).then(|| serde_json::to_string(&handles).unwrap_or_default());
        let mut conn = self.write().await?;
        match insert_local_post(&mut *conn, (author, text, reply_to, client_key, handles.as_deref())).await? {
            Some(post) => Ok(Some(post)),
            None => post_by_key(&mut *conn, client_key).await,
        }
    }

    /// The timeline, newest first, optionally only posts older than `before`.
    pub async fn local_timeline(&self, before: Option<i64>, limit: i64) -> StoreResult<Vec<LocalPost>> {
        let sql = format!(
            "SELECT id, author, text, reply_to, created_at FROM local_posts WHERE id < $1 ORDER BY id DESC {}",
            sql_limit(limit)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(before.unwrap_or(i64::MAX))
            .fetch_all(&mut *self.read().await?)
            .await?;
        rows.iter().map(LocalPost::from_row).collect()
    }

    /// Posts mentioning `handle` after post id `after`, oldest first.
    pub async fn local_mentions(&self, handle: &str, after: i64, limit: i64) -> StoreResult<Vec<LocalPost>> {
        let sql = format!(
            "SELECT p.id, p.author, p.text, p.reply_to, p.created_at FROM local_mentions m \
             JOIN local_posts p ON p.id = m.post_id WHERE m.handle = $1 AND m.post_id > $2 ORDER BY m.post_id {}",
            sql_limit(limit)
        );
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(handle).bind(after).fetch_all(&mut *self.read().await?).await?;
        rows.iter().map(LocalPost::from_row).collect()
    }

    pub async fn local_post_by_id(&self, id: i64) -> StoreResult<Option<LocalPost>> {
        let row = sqlx::query("SELECT id, author, text, reply_to, created_at FROM local_posts WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.read().await?)
            .await?;
        row.as_ref().map(LocalPost::from_row).transpose()
    }

    pub async fn local_post_by_key(&self, client_key: &str) -> StoreResult<Option<LocalPost>> {
        post_by_key(&mut *self.read().await?, Some(client_key)).await
    }

    /// Replies to `post_id`, oldest first.
    pub async fn local_replies(&self, post_id: i64) -> StoreResult<Vec<LocalPost>> {
        let rows = sqlx::query(
            "SELECT id, author, text, reply_to, created_at FROM local_posts WHERE reply_to = $1 ORDER BY id",
        )
        .bind(post_id)
        .fetch_all(&mut *self.read().await?)
        .await?;
        rows.iter().map(LocalPost::from_row).collect()
    }
}

/// Inserts `(author, text, reply_to, client_key, mentions)` (`mentions` a JSON array of handles,
/// indexed by the `local_posts_mentions` trigger); `None` when the key was posted before or the
/// parent is missing. The parent is checked in the insert itself: no read before it.
async fn insert_local_post<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    (author, text, reply_to, client_key, mentions): (&str, &str, Option<i64>, Option<&str>, Option<&str>),
) -> StoreResult<Option<LocalPost>> {
    let inserted = sqlx::query(
        "INSERT INTO local_posts (author, text, reply_to, client_key, mentions, created_at) \
         SELECT $1, $2, $3, $4, $5, $6 WHERE $7 IS NULL OR EXISTS (SELECT 1 FROM local_posts WHERE id = $7) \
         ON CONFLICT (client_key) DO NOTHING RETURNING id, author, text, reply_to, created_at",
    )
    .bind(author)
    .bind(text)
    .bind(reply_to)
    .bind(client_key)
    .bind(mentions)
    .bind(now_ms())
    .bind(reply_to)
    .fetch_optional(executor)
    .await?;
    inserted.as_ref().map(LocalPost::from_row).transpose()
}

/// The post stored under `client_key` (none without a key).
async fn post_by_key<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    client_key: Option<&str>,
) -> StoreResult<Option<LocalPost>> {
    let row = sqlx::query("SELECT id, author, text, reply_to, created_at FROM local_posts WHERE client_key = $1")
        .bind(client_key)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(LocalPost::from_row).transpose()
}

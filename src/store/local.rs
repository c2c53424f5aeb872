//! Tables of the built-in local platform: a timeline of posts and an index of `@handle` mentions.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Db, StoreResult, now_ms};

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
    /// Adds a post and its mentions. With a `client_key` the call is idempotent: posting the same
    /// key again returns the first post and adds nothing.
    pub async fn local_post(
        &self,
        author: &str,
        text: &str,
        reply_to: Option<i64>,
        client_key: Option<&str>,
        mentions: &[String],
    ) -> StoreResult<LocalPost> {
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO local_posts (author, text, reply_to, client_key, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (client_key) DO NOTHING RETURNING id, author, text, reply_to, created_at",
        )
        .bind(author)
        .bind(text)
        .bind(reply_to)
        .bind(client_key)
        .bind(now_ms())
        .fetch_optional(&mut *tx)
        .await?;
        let post = match inserted {
            Some(row) => {
                let post = LocalPost::from_row(&row)?;
                for handle in mentions {
                    sqlx::query("INSERT INTO local_mentions (handle, post_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                        .bind(handle)
                        .bind(post.id)
                        .execute(&mut *tx)
                        .await?;
                }
                post
            }
            None => {
                let row =
                    sqlx::query("SELECT id, author, text, reply_to, created_at FROM local_posts WHERE client_key = $1")
                        .bind(client_key)
                        .fetch_one(&mut *tx)
                        .await?;
                LocalPost::from_row(&row)?
            }
        };
        tx.commit().await?;
        Ok(post)
    }

    /// The timeline, newest first, optionally only posts older than `before`.
    pub async fn local_timeline(&self, before: Option<i64>, limit: i64) -> StoreResult<Vec<LocalPost>> {
        let rows = sqlx::query(
            "SELECT id, author, text, reply_to, created_at FROM local_posts WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(LocalPost::from_row).collect()
    }

    /// Posts mentioning `handle` after post id `after`, oldest first.
    pub async fn local_mentions(&self, handle: &str, after: i64, limit: i64) -> StoreResult<Vec<LocalPost>> {
        let rows = sqlx::query(
            "SELECT p.id, p.author, p.text, p.reply_to, p.created_at FROM local_mentions m \
             JOIN local_posts p ON p.id = m.post_id WHERE m.handle = $1 AND m.post_id > $2 ORDER BY m.post_id LIMIT $3",
        )
        .bind(handle)
        .bind(after)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(LocalPost::from_row).collect()
    }

    pub async fn local_post_by_id(&self, id: i64) -> StoreResult<Option<LocalPost>> {
        let row = sqlx::query("SELECT id, author, text, reply_to, created_at FROM local_posts WHERE id = $1")
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        row.as_ref().map(LocalPost::from_row).transpose()
    }

    pub async fn local_post_by_key(&self, client_key: &str) -> StoreResult<Option<LocalPost>> {
        let row = sqlx::query("SELECT id, author, text, reply_to, created_at FROM local_posts WHERE client_key = $1")
            .bind(client_key)
            .fetch_optional(self.reader())
            .await?;
        row.as_ref().map(LocalPost::from_row).transpose()
    }

    /// Replies to `post_id`, oldest first.
    pub async fn local_replies(&self, post_id: i64) -> StoreResult<Vec<LocalPost>> {
        let rows = sqlx::query(
            "SELECT id, author, text, reply_to, created_at FROM local_posts WHERE reply_to = $1 ORDER BY id",
        )
        .bind(post_id)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(LocalPost::from_row).collect()
    }
}

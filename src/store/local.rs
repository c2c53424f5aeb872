//! Tables of the built-in local platform: a timeline of posts and an index of `@handle` mentions.

use serde::Serialize;

use super::conn::Lease;
use super::native::{Fetched, Fields, Returned, Returning};
use super::script::{JOIN_UP_TO_PARAMETERS, OwnTransaction, Script, is_sqlite};
use super::{Db, StoreResult, now_ms, sql_limit};

/// The insert of one post: `$1`–`$5` the post (`mentions` a JSON array of handles, indexed by the
/// `local_posts_mentions` trigger), `$6` when; a key posted before inserts nothing, nor does a
/// reply whose parent is missing. Each parameter appears once, in order, so on SQLite a group's
/// call binds them unnamed ([`Script::into_calls`]). The caller ends it with [`POST_RETURNING`]
/// (or [`GROUP_POST_RETURNING`]). On SQLite the parent is checked by the `local_posts_parent`
/// trigger, which drops such a row; on Postgres in the insert itself (the parent named by its
/// column), no read before it. On SQLite an insert whose SELECT reads its own table copies each
/// row into a temporary table first.
pub(super) fn insert_local_post_sql(backend: &str) -> &'static str {
    if is_sqlite(backend) {
        "INSERT INTO local_posts (author, text, reply_to, client_key, mentions, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (client_key) DO NOTHING"
    } else {
        "INSERT INTO local_posts (author, text, reply_to, client_key, mentions, created_at) \
         SELECT author, text, reply_to, client_key, mentions, created_at FROM (SELECT $1 AS author, $2 AS text, \
         $3 AS reply_to, $4 AS client_key, $5 AS mentions, $6 AS created_at) AS candidate \
         WHERE candidate.reply_to IS NULL OR EXISTS (SELECT 1 FROM local_posts WHERE id = candidate.reply_to) \
         ON CONFLICT (client_key) DO NOTHING"
    }
}

/// What a local post's insert returns of its row ([`LocalPost`]'s columns): the id new, the rest
/// as bound.
pub(super) static POST_RETURNING: Returning = Returning::new(
    " RETURNING id, author, text, reply_to, created_at",
    &[
        ("id", Returned::Rowid),
        ("author", Returned::Parameter(0)),
        ("text", Returned::Parameter(1)),
        ("reply_to", Returned::Parameter(2)),
        ("created_at", Returned::Parameter(5)),
    ],
    0,
);

/// [`POST_RETURNING`] in a group: with the post's place in the group (`slot`, `$7`).
pub(super) static GROUP_POST_RETURNING: Returning = Returning::new(
    " RETURNING id, author, text, reply_to, created_at, CAST($7 AS BIGINT) AS slot",
    &[
        ("id", Returned::Rowid),
        ("author", Returned::Parameter(0)),
        ("text", Returned::Parameter(1)),
        ("reply_to", Returned::Parameter(2)),
        ("created_at", Returned::Parameter(5)),
        ("slot", Returned::Parameter(6)),
    ],
    1,
);

/// Parameters of one post in a group ([`insert_local_post_sql`]'s six and its place in the group).
const PARAMETERS_A_POST: usize = 7;
/// The most posts the local platform stores in one group (measured against 8): a group this size
/// is one call on SQLite ([`Db::local_posts`]; past [`JOIN_UP_TO_PARAMETERS`], a call a post).
pub const LOCAL_POSTS_IN_ONE_CALL: usize = 16;
const _: () = assert!(LOCAL_POSTS_IN_ONE_CALL * PARAMETERS_A_POST <= JOIN_UP_TO_PARAMETERS);

/// A post to add to the local timeline ([`Db::local_posts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLocalPost {
    pub author: String,
    pub text: String,
    pub reply_to: Option<i64>,
    pub client_key: Option<String>,
    /// The handles the post mentions (duplicates are indexed once).
    pub mentions: Vec<String>,
}

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
    fn from_row(row: &impl Fields) -> StoreResult<Self> {
        Ok(Self {
            id: row.field("id")?,
            author: row.field("author")?,
            text: row.field("text")?,
            reply_to: row.field("reply_to")?,
            created_at: row.field("created_at")?,
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
        let handles = handles_json(mentions);
        let mut conn = self.write().await?;
        match insert_local_post(&mut conn, (author, text, reply_to, client_key, handles.as_deref())).await? {
            Some(post) => Ok(Some(post)),
            None => post_by_key(&mut *conn, client_key).await,
        }
    }

    /// Adds several posts in order, in one transaction, and answers for each what
    /// [`Db::local_post`] would have: the post, the earlier post of its key, or `None` when its
    /// parent is missing. On SQLite a group of up to [`LOCAL_POSTS_IN_ONE_CALL`] is one call. If
    /// the group cannot commit, each post is tried alone, so one bad post fails only itself; once
    /// it has committed, nothing is posted again.
    pub async fn local_posts(&self, posts: &[NewLocalPost]) -> Vec<StoreResult<Option<LocalPost>>> {
        if posts.len() > 1 {
            match self.insert_local_group(posts).await {
                Ok(rows) => return self.answer_local_group(posts, &rows).await,
                Err(err) => {
                    tracing::debug!(error = %err, posts = posts.len(), "a group of local posts failed; posting each alone")
                }
            }
        }
        let mut stored = Vec::with_capacity(posts.len());
        for post in posts {
            let key = post.client_key.as_deref();
            stored.push(self.local_post(&post.author, &post.text, post.reply_to, key, &post.mentions).await);
        }
        stored
    }

    /// Inserts a group in one transaction; the rows it inserted, each with its `slot`.
    async fn insert_local_group(&self, posts: &[NewLocalPost]) -> StoreResult<Vec<Fetched>> {
        let handles: Vec<Option<String>> = posts.iter().map(|post| handles_json(&post.mentions)).collect();
        let mut tx = OwnTransaction::new(self.write().await?);
        let script = group_script(tx.conn().backend_name(), posts, &handles, now_ms());
        let rows = script.fetch_all(tx.conn()).await;
        tx.finish(rows).await
    }

    /// Each post of a committed group: its row, or, when it inserted nothing, the earlier post of
    /// its key (none without a key: its parent is missing). What cannot be read is an error of
    /// that post's (or, for a row whose place is unreadable, of every post's): it stays stored.
    async fn answer_local_group(
        &self,
        posts: &[NewLocalPost],
        rows: &[Fetched],
    ) -> Vec<StoreResult<Option<LocalPost>>> {
        let slots: Result<Vec<i64>, sqlx::Error> = rows.iter().map(|row| row.field("slot")).collect();
        let slots = match slots {
            Ok(slots) => slots,
            Err(err) => {
                let unread = format!("a group of local posts was stored, but its rows could not be read: {err}");
                return posts.iter().map(|_| Err(sqlx::Error::Protocol(unread.clone()).into())).collect();
            }
        };
        let mut answers: Vec<Option<StoreResult<Option<LocalPost>>>> = posts.iter().map(|_| None).collect();
        for (row, slot) in rows.iter().zip(slots) {
            if let Some(answer) = usize::try_from(slot).ok().and_then(|slot| answers.get_mut(slot)) {
                *answer = Some(LocalPost::from_row(row).map(Some));
            }
        }
        let mut stored = Vec::with_capacity(posts.len());
        for (answer, post) in answers.into_iter().zip(posts) {
            stored.push(match (answer, post.client_key.as_deref()) {
                (Some(answer), _) => answer,
                // A key posted before inserted nothing: its first post is the answer.
                (None, Some(key)) => self.local_post_by_written_key(key).await,
                (None, None) => Ok(None),
            });
        }
        stored
    }

    /// The post of `client_key`, read on the writing connection (so a post just committed there
    /// is seen whatever the readers' snapshots).
    async fn local_post_by_written_key(&self, client_key: &str) -> StoreResult<Option<LocalPost>> {
        post_by_key(&mut *self.write().await?, Some(client_key)).await
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
        // A script, so on SQLite it runs on the native connection (see `native`), the writer's
        // when it is free (see `Db::read_hot`), given back before the rows are decoded.
        let mut conn = self.read_hot().await?;
        let mut query = Script::new(conn.backend_name());
        query.statement(sql).bind(handle).bind(after);
        let rows = query.fetch_all(&mut conn).await?;
        drop(conn);
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

/// A transaction of one insert a post; each inserted row comes back with its place in `posts`
/// (`slot`), as a statement whose post is refused or was posted before returns nothing.
fn group_script(backend: &str, posts: &[NewLocalPost], handles: &[Option<String>], created_at: i64) -> Script {
    let sql = insert_local_post_sql(backend);
    let mut script = Script::new(backend);
    script.begin();
    for (slot, (post, handles)) in posts.iter().zip(handles).enumerate() {
        script
            .statement(sql)
            .returning(&GROUP_POST_RETURNING, 1)
            .bind(post.author.as_str())
            .bind(post.text.as_str())
            .bind(post.reply_to)
            .bind(post.client_key.as_deref())
            .bind(handles.as_deref())
            .bind(created_at)
            .bind(slot as i64);
    }
    script.commit();
    script
}

/// The handles as a JSON array, each once, in order; `None` for none.
fn handles_json(mentions: &[String]) -> Option<String> {
    let mut handles: Vec<&str> = Vec::with_capacity(mentions.len());
    for handle in mentions {
        if !handles.contains(&handle.as_str()) {
            handles.push(handle);
        }
    }
    // A JSON array of strings cannot fail to serialize.
    (!handles.is_empty()).then(|| serde_json::to_string(&handles).unwrap_or_default())
}

/// Inserts `(author, text, reply_to, client_key, mentions)` ([`insert_local_post_sql`]); `None` when
/// the key was posted before or the parent is missing. A script, so on SQLite it runs on the
/// writer's native connection.
async fn insert_local_post(
    conn: &mut Lease,
    (author, text, reply_to, client_key, mentions): (&str, &str, Option<i64>, Option<&str>, Option<&str>),
) -> StoreResult<Option<LocalPost>> {
    let mut script = Script::new(conn.backend_name());
    script
        .statement(insert_local_post_sql(conn.backend_name()))
        .returning(&POST_RETURNING, 1)
        .bind(author)
        .bind(text)
        .bind(reply_to)
        .bind(client_key)
        .bind(mentions)
        .bind(now_ms());
    let inserted = script.fetch_all(conn).await?;
    inserted.first().map(LocalPost::from_row).transpose()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn post(text: &str) -> NewLocalPost {
        NewLocalPost { author: "sam".into(), text: text.into(), reply_to: None, client_key: None, mentions: vec![] }
    }

    #[test]
    fn a_full_group_is_one_call_on_sqlite() {
        let posts = vec![post("a post"); LOCAL_POSTS_IN_ONE_CALL];
        let handles = vec![Some("[\"ada\"]".to_owned()); posts.len()];
        let calls = group_script("SQLite", &posts, &handles, 1).into_calls().unwrap();
        assert_eq!(calls.len(), 1);
        assert!(!calls[0].0.contains('$'), "its parameters go unnamed: {}", calls[0].0);
        let more = vec![post("a post"); JOIN_UP_TO_PARAMETERS / PARAMETERS_A_POST + 1];
        let handles = vec![None; more.len()];
        assert_eq!(
            group_script("SQLite", &more, &handles, 1).into_calls().unwrap().len(),
            more.len() + 2,
            "one a statement"
        );
    }

    /// A post the database refuses fails alone: the others of its group are stored and answered.
    #[tokio::test]
    async fn a_group_that_cannot_commit_is_posted_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/x.db", dir.path().display()), 1).await.unwrap();
        db.migrate().await.unwrap();
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE INSERT ON local_posts WHEN NEW.text = 'refused' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        .execute(&mut *db.write().await.unwrap())
        .await
        .unwrap();
        let stored = db.local_posts(&[post("one"), post("refused"), post("two")]).await;
        assert_eq!(stored.len(), 3);
        let err = stored[1].as_ref().expect_err("the refused post fails");
        assert!(err.to_string().contains("refused by the test"), "{err}");
        let (one, two) = (stored[0].as_ref().unwrap().clone().unwrap(), stored[2].as_ref().unwrap().clone().unwrap());
        assert_eq!((one.text.as_str(), two.text.as_str()), ("one", "two"));
        let timeline = db.local_timeline(None, 10).await.unwrap();
        assert_eq!(timeline, vec![two, one], "the others are stored once each");
        db.close().await;
    }
}

//! Storage: the only module that imports sqlx.
//!
//! [`Db`] is a cheap, cloneable handle on the database's connections (SQLite: one writer and
//! read-only readers, held in [`conn`]'s pools; Postgres: one sqlx pool). It uses sqlx's `Any`
//! driver so a single code path serves SQLite (the embedded default, in WAL mode) and Postgres
//! (several nodes).
//! The Any driver speaks only integers, floats, text and bytes, so times are epoch milliseconds.
//! The schema lives in `migrations/sqlite` and `migrations/postgres` (same tables, per-engine DDL).
//!
//! The [`actor::Store`] actor owns the database's health in the supervision tree.

pub mod actor;
mod checkpoint;
mod conn;
mod content;
mod local;
mod memory;
mod native;
mod outbox;
mod report;
mod script;
mod trading;
mod vfs;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use self::conn::{Lease, Source};
use self::native::Fields;

use crate::config::Secret;

pub use content::{
    AirlockRefusal, Approval, ContentEvent, ContentFilter, ContentItem, ContentLog, NewContent, NewPlanned, STAGES,
    StageEntry, StoredAssignment,
};
pub use local::{LOCAL_POSTS_IN_ONE_CALL, LocalPost, NewLocalPost};
pub use memory::{MemoryKind, MemoryRow, NewMemory, Recalled, StoredVector, ToInsert};
pub use outbox::{Enqueued, NewOutbox, OutboxCounts, OutboxRow, OutboxStatus, PendingAccount, Sent, ToEnqueue};
pub use report::{
    ChildTally, ContentTally, EngagementTotals, LlmTally, OpsKind, Rank, RankedPost, RateLimitTally, StoredReport,
};
pub use trading::{AuditEvent, Decided, NewAudit, NewTrade, PaperFill, TradeRow, TradeStatus};

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Errors of the storage boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot prepare the database directory {path}: {source}")]
    Directory { path: String, source: std::io::Error },
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// A statement of the writer's native SQLite connection (see `native`).
    #[error("query failed: {0}")]
    Native(#[from] rusqlite::Error),
}

impl StoreError {
    /// Worth retrying: the database was busy, unreachable or the pool was exhausted.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Connect(_) => true,
            StoreError::Query(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)) => true,
            StoreError::Query(sqlx::Error::Database(err)) => err.code().is_some_and(|code| is_transient_code(&code)),
            StoreError::Query(_) => false,
            StoreError::Native(rusqlite::Error::SqliteFailure(err, _)) => {
                is_transient_code(&err.extended_code.to_string())
            }
            StoreError::Native(_) => false,
            StoreError::Directory { .. } | StoreError::Url(_) | StoreError::Migrate(_) => false,
        }
    }
}

/// Database error codes worth retrying: SQLite busy/locked (and their extended codes), Postgres
/// connection exceptions (08…), serialization failure, deadlock, insufficient resources (53…) and
/// operator intervention (57P…).
fn is_transient_code(code: &str) -> bool {
    if code.len() == 5 {
        // A Postgres SQLSTATE.
        return code.starts_with("08")
            || code == "40001"
            || code == "40P01"
            || code.starts_with("53")
            || code.starts_with("57P");
    }
    // A SQLite result code; the low byte is the primary code (5 busy, 6 locked).
    code.parse::<i32>().is_ok_and(|code| matches!(code & 0xff, 5 | 6))
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A handle on the database. Clone it freely.
#[derive(Debug, Clone)]
pub struct Db {
    /// Writes and transactions (SQLite: the one writing connection; Postgres: sqlx's pool).
    writer: Source,
    /// Plain reads (SQLite: read-only connections; Postgres: the same pool as `writer`).
    reader: Source,
    engine: Engine,
}

/// Sets SQLite's process-wide options, before any connection of the process opens (SQLite takes
/// them only then): call it first thing in `main`, while the process has one thread. Later calls
/// do nothing and return the first call's result: `Err` with SQLite's code if SQLite refused an
/// option (it was initialized already), for the caller to log (`main` calls it before logging is
/// set up). The options: no memory statistics, and page caches that allocate room for 8 pages at
/// first, not 20 ([`native::configure`] says why).
pub fn configure_sqlite() -> Result<(), i32> {
    static RESULT: std::sync::OnceLock<Result<(), i32>> = std::sync::OnceLock::new();
    *RESULT.get_or_init(native::configure)
}

/// Milliseconds since the Unix epoch, the time unit of every table.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// `$first, $first+1, …` (`count` of them).
fn placeholders(first: usize, count: usize) -> String {
    let mut sql = String::with_capacity(count * 5);
    for n in first..first + count {
        if n > first {
            sql.push_str(", ");
        }
        push_parameter(&mut sql, n);
    }
    sql
}

/// Appends the parameter `$n` to `sql`, without the allocation of a formatted number: statements
/// are built on every call, with up to hundreds of parameters each.
pub(super) fn push_parameter(sql: &mut String, n: usize) {
    let mut digits = [0_u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    sql.push('$');
    sql.extend(digits[at..].iter().map(|&digit| char::from(digit)));
}

/// `LIMIT n`, written into the statement's text instead of bound. SQLite's planner reads a bound
/// LIMIT's value when it compiles a statement, and a statement whose plan read a parameter is
/// expired whenever that parameter is bound again: each call compiled it anew, cached or not
/// (recall's read and the poll's, every reply). With the number in the text a statement is
/// compiled once for each limit; the limits are few (constants, configuration, the admin API's
/// page sizes), and a connection's statement cache keeps the latest shapes.
fn sql_limit(n: i64) -> String {
    format!("LIMIT {n}")
}

/// `items` in runs of 64, 16, 4 and 1, largest first. A multi-row statement over one run has one
/// of four shapes, each parsed once and kept in the connection's statement cache; a shape per
/// batch size would be parsed again for almost every batch (SQLite's parser was a third of the
/// instructions before runs).
fn runs<T>(mut items: &[T]) -> Vec<&[T]> {
    let mut runs = Vec::new();
    for size in [64, 16, 4, 1] {
        while items.len() >= size {
            let (run, rest) = items.split_at(size);
            runs.push(run);
            items = rest;
        }
    }
    runs
}

/// `count` copies of a row template, its `?` numbered `$1, $2, …` across all rows in order, for
/// a multi-row `VALUES`: `value_rows("(?, 'x', ?)", 2)` is `($1, 'x', $2), ($3, 'x', $4)`. The
/// template is SQL of ours; every value is bound.
fn value_rows(template: &str, count: usize) -> String {
    let mut sql = String::with_capacity((template.len() + 8) * count);
    let mut next = 1;
    for row in 0..count {
        if row > 0 {
            sql.push_str(", ");
        }
        for part in template.split_inclusive('?') {
            match part.strip_suffix('?') {
                Some(text) => {
                    sql.push_str(text);
                    push_parameter(&mut sql, next);
                    next += 1;
                }
                None => sql.push_str(part),
            }
        }
    }
    sql
}

/// What an inbound event's insert returns of a new row: its id and key.
static INBOUND_RETURNING: native::Returning = native::Returning::new(
    " RETURNING id, platform, remote_id, persona",
    &[
        ("id", native::Returned::Rowid),
        ("platform", native::Returned::Parameter(0)),
        ("remote_id", native::Returned::Parameter(1)),
        ("persona", native::Returned::Parameter(2)),
    ],
    0,
);

impl Db {
    /// Connects (creating a SQLite file and its directory if needed) without migrating.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Db> {
        Self::connect_with_password(url, None, max_connections).await
    }

    /// [`Db::connect`] with a password kept out of the configured URL (`store.password`).
    pub async fn connect_with_password(url: &str, password: Option<&Secret>, max_connections: u32) -> StoreResult<Db> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("sqlite:") { Engine::Sqlite } else { Engine::Postgres };
        let url = match password {
            Some(password) if engine == Engine::Postgres => {
                let mut parsed = reqwest::Url::parse(url).map_err(|err| StoreError::Url(err.to_string()))?;
                parsed
                    .set_password(Some(password.expose()))
                    .map_err(|()| StoreError::Url("cannot hold a password".into()))?;
                parsed.to_string()
            }
            _ => url.to_owned(),
        };
        // SQLite has one writer at a time. Several connections writing meet in its busy handler,
        // which sleeps (1, 2, 5 … 100 ms) instead of queueing, and each write resets the other
        // connections' page caches. So a file database gets one writing connection (writes wait
        // for it in order, in process) and read-only ones beside it (WAL): `max_connections`, but
        // no more than the cores. A read runs on its connection's thread, so readers beyond the
        // cores only wake colder threads with colder page caches (with sqlx's pool, which hands
        // out its idle connections in turn, 8 readers cost 5 % more CPU a reply than 2 at 250
        // replies/s). The connections are held in pools of our own (see `conn`): sqlx's pings
        // every connection it gets back, one more round trip to SQLite's thread a statement.
        let (writer, reader) = match engine {
            Engine::Sqlite => {
                let url = prepare_sqlite_url(&url)?;
                let cores =
                    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
                let writer = Source::held(&url, 1, false).await?;
                (writer, Source::held(&url, max_connections.min(cores), true).await?)
            }
            Engine::Postgres => {
                let pool = Source::Pool(connect_pool(&url, max_connections).await?);
                (pool.clone(), pool)
            }
        };
        Ok(Db { writer, reader, engine })
    }

    /// Applies pending migrations of this engine.
    pub async fn migrate(&self) -> StoreResult<()> {
        match self.engine {
            Engine::Sqlite => SQLITE_MIGRATOR.run(&mut *self.write().await?).await?,
            Engine::Postgres => POSTGRES_MIGRATOR.run(&mut *self.write().await?).await?,
        }
        Ok(())
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&mut *self.write().await?).await?;
        Ok(())
    }

    /// Closes the connections, waiting for those in use to come back.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Folds the SQLite write-ahead log back into the database file, which also makes the commits
    /// in it durable (no-op on Postgres): a file's checkpointer is asked (see `checkpoint`), so
    /// no write waits for it; an in-memory database's writer runs it.
    pub async fn checkpoint(&self) -> StoreResult<()> {
        if self.engine == Engine::Sqlite && !self.writer.ask_checkpoint() {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut *self.write().await?).await?;
        }
        Ok(())
    }

    // ----- inbound events and cursors -----

    /// Stores newly read inbound events (an agent's), each once, and then, when given, the cursor
    /// past them (`(persona, platform, cursor)`, overwriting the one saved). Answers, for each
    /// event in order, its new row (as [`Db::pending_inbound`] would read it) or `None` when it
    /// was seen before (or earlier in `events`). The rows and the cursor commit together, in one
    /// transaction (a commit a poll, not one a statement: on SQLite each commit appends to the
    /// log and takes its locks); on SQLite a small batch is one call (see [`script::Script`]).
    pub async fn store_inbound(
        &self,
        events: &[NewInbound<'_>],
        cursor: Option<(&str, &str, &str)>,
    ) -> StoreResult<Vec<Option<InboundRow>>> {
        if events.is_empty() && cursor.is_none() {
            // An empty poll: no need of the writing connection.
            return Ok(Vec::new());
        }
        let received_at = now_ms();
        let conn = self.write().await?;
        let mut script = script::Script::new(conn.backend_name());
        let event_runs = runs(events);
        if event_runs.len() + usize::from(cursor.is_some()) > 1 {
            // Several statements: a transaction of the script's own, so they can be `OR FAIL`.
            script.begin();
        }
        let fail = script.or_fail();
        for run in event_runs {
            script.statement(format!(
                "INSERT {fail}INTO inbound_events \
                 (platform, remote_id, persona, author, author_is_persona, text, conversation, received_at, state) \
                 VALUES {} ON CONFLICT (platform, remote_id, persona) DO NOTHING",
                value_rows("(?, ?, ?, ?, ?, ?, ?, ?, 'pending')", run.len())
            ));
            script.returning(&INBOUND_RETURNING, run.len());
            for event in run {
                script
                    .bind(event.platform)
                    .bind(event.remote_id)
                    .bind(event.persona)
                    .bind(event.author)
                    .bind(i64::from(event.author_is_persona))
                    .bind(event.text)
                    .bind(event.conversation)
                    .bind(received_at);
            }
        }
        if let Some((persona, platform, cursor)) = cursor {
            script
                .statement(
                    "INSERT INTO cursors (persona, platform, cursor, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (persona, platform) DO UPDATE SET cursor = excluded.cursor, \
                     updated_at = excluded.updated_at",
                )
                .bind(persona)
                .bind(platform)
                .bind(cursor)
                .bind(received_at);
        }
        // One statement commits alone; more go in a transaction.
        let rows = script.fetch_all_atomically(conn).await?;
        // A new row is known by its key: (platform, remote id, persona).
        let mut ids = HashMap::new();
        for row in rows {
            let key: (String, String, String) = (row.field(1)?, row.field(2)?, row.field(3)?);
            ids.insert(key, row.field::<i64, _>(0)?);
        }
        Ok(events
            .iter()
            .map(|event| {
                let key = (event.platform.to_owned(), event.remote_id.to_owned(), event.persona.to_owned());
                ids.remove(&key).map(|id| InboundRow {
                    id,
                    remote_id: event.remote_id.to_owned(),
                    author: event.author.to_owned(),
                    author_is_persona: event.author_is_persona,
                    text: event.text.to_owned(),
                    conversation: event.conversation.to_owned(),
                    received_at,
                })
            })
            .collect())
    }

    /// Inbound events of one agent that are stored but not yet answered, oldest first.
    pub async fn pending_inbound(&self, persona: &str, platform: &str, limit: i64) -> StoreResult<Vec<InboundRow>> {
        self.pending_inbound_after(persona, platform, 0, limit).await
    }

    /// [`Db::pending_inbound`] with ids above `after` only: an agent reads what is new since the
    /// rows it already holds, instead of reading those again each time.
    pub async fn pending_inbound_after(
        &self,
        persona: &str,
        platform: &str,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<InboundRow>> {
        let sql = format!(
            "SELECT id, remote_id, author, author_is_persona, text, conversation, received_at FROM inbound_events \
             WHERE persona = $1 AND platform = $2 AND state = 'pending' AND id > $3 ORDER BY id {}",
            sql_limit(limit)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(persona)
            .bind(platform)
            .bind(after)
            .fetch_all(&mut *self.read().await?)
            .await?;
        rows.iter().map(InboundRow::from_row).collect()
    }

    /// How many of the agent's mentions are stored and not answered yet.
    pub async fn pending_inbound_count(&self, persona: &str, platform: &str) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM inbound_events WHERE persona = $1 AND platform = $2 AND state = 'pending'",
        )
        .bind(persona)
        .bind(platform)
        .fetch_one(&mut *self.read().await?)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// The remote ids of the agent's mentions closed without a reply ([`Db::ignore_inbound`]).
    pub async fn closed_inbound(&self, persona: &str, platform: &str) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT remote_id FROM inbound_events WHERE persona = $1 AND platform = $2 AND state = 'ignored'",
        )
        .bind(persona)
        .bind(platform)
        .fetch_all(&mut *self.read().await?)
        .await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    /// Closes an inbound event without a reply (loop guard, empty generation…).
    pub async fn ignore_inbound(&self, id: i64, outcome: &str) -> StoreResult<()> {
        sqlx::query("UPDATE inbound_events SET state = 'ignored', outcome = $2 WHERE id = $1")
            .bind(id)
            .bind(outcome)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }

    /// How many inbound events of a conversation were written by one of our personas.
    pub async fn persona_turns(&self, platform: &str, conversation: &str) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT COUNT(DISTINCT remote_id) FROM inbound_events \
             WHERE platform = $1 AND conversation = $2 AND author_is_persona = 1",
        )
        .bind(platform)
        .bind(conversation)
        .fetch_one(&mut *self.read().await?)
        .await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    pub async fn cursor(&self, persona: &str, platform: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT cursor FROM cursors WHERE persona = $1 AND platform = $2")
            .bind(persona)
            .bind(platform)
            .fetch_optional(&mut *self.read().await?)
            .await?;
        Ok(row.map(|row| row.get::<String, _>(0)))
    }

    // ----- LLM usage -----

    pub async fn record_llm_usage(&self, usage: &LlmUsage) -> StoreResult<()> {
        self.record_llm_usage_batch(std::slice::from_ref(usage)).await
    }

    /// Writes several usage rows, all or none: a statement a run of rows (see [`runs`]), in one
    /// transaction when there are several. On SQLite the script runs on the writer's native
    /// connection, not through sqlx's thread (a hop each way for every batch; a batch gathers
    /// 50 ms of calls, about three replies at 50/s).
    pub async fn record_llm_usage_batch(&self, rows: &[LlmUsage]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let conn = self.write().await?;
        let mut script = script::Script::new(conn.backend_name());
        for run in runs(rows) {
            script.statement(format!(
                "INSERT INTO llm_usage (persona, provider, model, task, tokens_in, tokens_out, latency_ms, outcome, \
                 cost_usd, created_at) VALUES {}",
                value_rows("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", run.len())
            ));
            for usage in run {
                script
                    .bind(usage.persona.as_str())
                    .bind(usage.provider.as_str())
                    .bind(usage.model.as_str())
                    .bind(usage.task)
                    .bind(usage.tokens_in)
                    .bind(usage.tokens_out)
                    .bind(usage.latency_ms)
                    .bind(usage.outcome)
                    .bind(usage.cost_usd)
                    .bind(usage.at_ms);
            }
        }
        script.fetch_all_atomically(conn).await.map(drop)
    }

    /// Spend per persona since `since_ms`: (persona, tokens in + out, USD).
    pub async fn llm_spend_since(&self, since_ms: i64) -> StoreResult<Vec<(String, i64, f64)>> {
        let rows = sqlx::query(
            "SELECT persona, CAST(COALESCE(SUM(tokens_in + tokens_out), 0) AS BIGINT), \
             CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) FROM llm_usage WHERE created_at >= $1 GROUP BY persona",
        )
        .bind(since_ms)
        .fetch_all(&mut *self.read().await?)
        .await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))).collect()
    }

    /// Tokens (in, out) spent by a persona so far.
    pub async fn llm_tokens(&self, persona: &str) -> StoreResult<(i64, i64)> {
        let row = sqlx::query(
            // SUM(BIGINT) is NUMERIC on Postgres, which the Any driver cannot decode: cast it back.
            "SELECT CAST(COALESCE(SUM(tokens_in), 0) AS BIGINT), CAST(COALESCE(SUM(tokens_out), 0) AS BIGINT) \
             FROM llm_usage WHERE persona = $1",
        )
        .bind(persona)
        .fetch_one(&mut *self.read().await?)
        .await?;
        Ok((row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?))
    }

    // ----- every agent's saved place, read at once for a start -----

    /// Every agent's saved cursor, by `(persona, platform)`.
    pub async fn all_cursors(&self) -> StoreResult<std::collections::HashMap<(String, String), String>> {
        let rows =
            sqlx::query("SELECT persona, platform, cursor FROM cursors").fetch_all(&mut *self.read().await?).await?;
        rows.iter().map(|row| Ok(((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?))).collect()
    }

    /// The `(persona, platform)` of every agent with planned posts handed over and not written.
    pub async fn agents_with_dispatched_posts(&self) -> StoreResult<std::collections::HashSet<(String, String)>> {
        let rows = sqlx::query(
            "SELECT DISTINCT persona, platform FROM content_items WHERE stage = 'dispatched' AND kind = 'post'",
        )
        .fetch_all(&mut *self.read().await?)
        .await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
    }

    /// How many stored mentions each agent `(persona, platform)` has not answered yet (agents
    /// with none are left out).
    pub async fn agents_with_pending_inbound(&self) -> StoreResult<std::collections::HashMap<(String, String), i64>> {
        let rows = sqlx::query(
            "SELECT persona, platform, COUNT(*) FROM inbound_events WHERE state = 'pending' GROUP BY persona, platform",
        )
        .fetch_all(&mut *self.read().await?)
        .await?;
        rows.iter().map(|row| Ok(((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?))).collect()
    }

    /// The writing connection, for writes and transactions (SQLite: the one; Postgres: one of
    /// the pool's).
    pub(crate) async fn write(&self) -> StoreResult<Lease> {
        self.writer.acquire().await
    }

    /// A connection for a plain read (one statement, no transaction).
    pub(crate) async fn read(&self) -> StoreResult<Lease> {
        self.reader.acquire().await
    }

    /// A connection for a short read of the reply path (a poll's mentions, recall): on SQLite the
    /// writer's when it is free now, else a reader's, never waiting for the writer. In WAL mode a
    /// connection keeps its page cache only while the log is unchanged: a reader's first read
    /// after any commit empties its cache and reads every page it touches again, one `pread`
    /// each (about 21 a reply at 250/s), where the writer's cache stays valid across its own
    /// commits. A write that comes during such a read waits for it (tens of microseconds).
    pub(crate) async fn read_hot(&self) -> StoreResult<Lease> {
        match self.writer.try_acquire() {
            Some(writer) => Ok(writer),
            None => self.read().await,
        }
    }
}

/// sqlx's pool of Postgres connections to `url`.
async fn connect_pool(url: &str, max_connections: u32) -> StoreResult<AnyPool> {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(StoreError::Connect)
}

/// A SQLite URL as Chorus opens it, with the file it names.
#[derive(Debug, Clone)]
pub(crate) struct SqliteUrl {
    /// `sqlite://PATH?QUERY`, with `mode=rwc` unless the query sets a mode.
    pub url: String,
    /// The database's file; `None` for an in-memory database, which a second connection (a
    /// native one beside sqlx's) would not share.
    pub file: Option<PathBuf>,
}

/// Turns `sqlite://path` into a URL that creates the file, and creates its directory.
fn prepare_sqlite_url(url: &str) -> StoreResult<SqliteUrl> {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let in_memory = path.is_empty() || path == ":memory:" || query.split('&').any(|pair| pair == "mode=memory");
    if !in_memory && let Some(dir) = Path::new(path).parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::Directory { path: dir.display().to_string(), source })?;
    }
    let query = if query.contains("mode=") {
        query.to_owned()
    } else if query.is_empty() {
        "mode=rwc".to_owned()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(SqliteUrl { url: format!("sqlite://{path}?{query}"), file: (!in_memory).then(|| PathBuf::from(path)) })
}

/// An inbound event as a platform delivered it.
#[derive(Debug, Clone)]
pub struct NewInbound<'a> {
    pub platform: &'a str,
    pub remote_id: &'a str,
    pub persona: &'a str,
    pub author: &'a str,
    pub author_is_persona: bool,
    pub text: &'a str,
    pub conversation: &'a str,
}

/// An inbound event waiting for its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRow {
    pub id: i64,
    pub remote_id: String,
    pub author: String,
    pub author_is_persona: bool,
    pub text: String,
    pub conversation: String,
    /// When it was stored, epoch milliseconds.
    pub received_at: i64,
}

impl InboundRow {
    fn from_row(row: &AnyRow) -> StoreResult<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            remote_id: row.try_get("remote_id")?,
            author: row.try_get("author")?,
            author_is_persona: row.try_get::<i64, _>("author_is_persona")? != 0,
            text: row.try_get("text")?,
            conversation: row.try_get("conversation")?,
            received_at: row.try_get("received_at")?,
        })
    }
}

/// One LLM call, for the `llm_usage` table.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmUsage {
    pub persona: String,
    pub provider: String,
    pub model: String,
    pub task: &'static str,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub latency_ms: i64,
    pub outcome: &'static str,
    pub cost_usd: f64,
    /// When the call finished, epoch milliseconds.
    pub at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_from_first() {
        assert_eq!(placeholders(3, 2), "$3, $4");
        assert_eq!(placeholders(1, 0), "");
        assert_eq!(placeholders(9, 3), "$9, $10, $11");
    }

    #[test]
    fn parameters_are_written_in_decimal() {
        for n in [0, 1, 9, 10, 99, 100, 832, 65_535, usize::MAX] {
            let mut sql = String::from("x = ");
            push_parameter(&mut sql, n);
            assert_eq!(sql, format!("x = ${n}"));
        }
    }

    /// A bound LIMIT has SQLite compile its statement again on every call ([`sql_limit`]); the
    /// store writes its limits into the text.
    #[test]
    fn no_statement_binds_its_limit() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
        let bound_limit = concat!("LIMIT ", "$");
        let mut bound = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("src/store is readable") {
            let path = entry.expect("a directory entry").path();
            let text = std::fs::read_to_string(&path).expect("a source file");
            for (number, line) in text.lines().enumerate() {
                if line.contains(bound_limit) {
                    bound.push(format!("{}:{}", path.display(), number + 1));
                }
            }
        }
        assert!(bound.is_empty(), "a LIMIT bound as a parameter (write it with sql_limit): {bound:?}");
        assert_eq!(sql_limit(16), "LIMIT 16");
    }

    #[test]
    fn runs_have_four_sizes_and_keep_the_order() {
        let items: Vec<usize> = (0..91).collect();
        let sizes: Vec<usize> = runs(&items).iter().map(|run| run.len()).collect();
        assert_eq!(sizes, [64, 16, 4, 4, 1, 1, 1]);
        assert_eq!(runs(&items).concat(), items);
        assert!(runs::<usize>(&[]).is_empty());
    }

    #[test]
    fn value_rows_number_every_row_in_order() {
        assert_eq!(value_rows("(?, 'x', ?)", 2), "($1, 'x', $2), ($3, 'x', $4)");
        assert_eq!(value_rows("(?)", 1), "($1)");
        assert_eq!(value_rows("(?)", 0), "");
    }

    #[test]
    fn transient_codes_are_busy_locked_and_connection_trouble_only() {
        for code in ["5", "6", "517", "262", "08006", "40001", "40P01", "53300", "57P01"] {
            assert!(is_transient_code(code), "{code}");
        }
        for code in ["19", "2067", "23505", "42601", "22001", "1"] {
            assert!(!is_transient_code(code), "{code}");
        }
    }

    #[test]
    fn native_errors_are_transient_when_busy_or_locked() {
        let native = |code| StoreError::Native(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None));
        for code in [5, 6, 517, 262] {
            assert!(native(code).is_transient(), "{code}");
        }
        for code in [19, 2067, 1] {
            assert!(!native(code).is_transient(), "{code}");
        }
        assert!(!StoreError::Native(rusqlite::Error::InvalidQuery).is_transient());
    }

    #[test]
    fn sqlite_urls_create_their_directory_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/x.db");
        let url = prepare_sqlite_url(&format!("sqlite://{}", path.display())).unwrap();
        assert!(url.url.ends_with("/nested/x.db?mode=rwc"), "{url:?}");
        assert_eq!(url.file, Some(path));
        assert!(dir.path().join("nested").is_dir());
        let read_only = prepare_sqlite_url("sqlite://a.db?mode=ro").unwrap();
        assert!(read_only.url.ends_with("?mode=ro"));
        assert_eq!(read_only.file, Some(PathBuf::from("a.db")));
        for in_memory in ["sqlite::memory:", "sqlite://:memory:", "sqlite://x/a.db?mode=memory&cache=shared"] {
            let url = prepare_sqlite_url(in_memory).unwrap();
            assert_eq!(url.file, None, "{in_memory}");
        }
        assert!(!Path::new("x").exists(), "an in-memory database creates no directory");
    }

    /// The migration that takes AUTOINCREMENT off the reply path's tables and the rowid off the
    /// local platform's mentions keeps their rows, ids, indexes and trigger, and new rows are
    /// numbered after the largest id.
    #[tokio::test]
    async fn rowid_tables_keep_their_rows_and_number_after_the_largest() {
        const REBUILT: i64 = 20261210000001;
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/x.db", dir.path().display()), 1).await.unwrap();
        let before: Vec<_> = SQLITE_MIGRATOR.iter().filter(|m| m.version < REBUILT).cloned().collect();
        assert!(SQLITE_MIGRATOR.iter().any(|m| m.version == REBUILT), "the migration under test exists");
        let earlier = sqlx::migrate::Migrator { migrations: before.into(), ..sqlx::migrate::Migrator::DEFAULT };
        earlier.run(&mut *db.write().await.unwrap()).await.unwrap();
        // A database of the schema before: rows with ids 7 and 8 in each rebuilt table, and a
        // local post that mentions someone.
        let rows = "INSERT INTO inbound_events (id, platform, remote_id, persona, author, text, conversation, received_at) \
                VALUES (7, 'local', 'r7', 'alice', 'bob', 'hi', 'c', 1), (8, 'local', 'r8', 'alice', 'bob', 'yo', 'c', 2);
            INSERT INTO outbox (id, idempotency_key, persona, platform, kind, text, status, created_at, updated_at, \
                next_attempt_at) VALUES (7, 'k7', 'alice', 'local', 'reply', 'a', 'sent', 1, 1, 1), \
                (8, 'k8', 'alice', 'local', 'reply', 'b', 'pending', 2, 2, 2);
            INSERT INTO audit_log (id, at, action, persona, platform, subject, outcome) \
                VALUES (7, 1, 'enqueue', 'alice', 'local', 'k7', 'pending'), (8, 2, 'enqueue', 'alice', 'local', 'k8', 'pending');
            INSERT INTO llm_usage (id, persona, provider, model, task, tokens_in, tokens_out, latency_ms, outcome, \
                created_at, cost_usd) VALUES (7, 'alice', 'offline', 'm', 'reply', 1, 2, 3, 'ok', 1, 0.5), \
                (8, 'alice', 'offline', 'm', 'reply', 1, 2, 3, 'ok', 2, 0.25);
            INSERT INTO content_items (id, idempotency_key, persona, platform, kind, stage, submitted_by, created_at, \
                updated_at) VALUES (7, 'k7', 'alice', 'local', 'reply', 'published', 'alice', 1, 1), \
                (8, 'k8', 'alice', 'local', 'reply', 'queued', 'alice', 2, 2);
            INSERT INTO content_events (id, item_id, stage, outcome, actor, at) \
                VALUES (7, 7, 'publish', 'published', 'publisher', 1), (8, 8, 'queue', 'queued', 'publisher', 2);
            INSERT INTO local_posts (id, author, text, client_key, created_at, mentions) \
                VALUES (7, 'bob', '@alice hi', 'p7', 1, '[\"alice\"]'), (8, 'bob', 'hello', 'p8', 2, NULL);";
        sqlx::raw_sql(rows).execute(&mut *db.write().await.unwrap()).await.unwrap();

        db.migrate().await.unwrap();
        let tables =
            ["inbound_events", "outbox", "audit_log", "llm_usage", "content_items", "content_events", "local_posts"];
        for table in tables {
            let sql = format!("SELECT group_concat(id) FROM (SELECT id FROM {table} ORDER BY id)");
            let ids: String =
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut *db.read().await.unwrap()).await.unwrap();
            assert_eq!(ids, "7,8", "{table}'s rows keep their ids");
            let schema: String = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = $1")
                .bind(table)
                .fetch_one(&mut *db.read().await.unwrap())
                .await
                .unwrap();
            assert!(!schema.contains("AUTOINCREMENT"), "{table}: {schema}");
        }
        // The mentions' index is its key alone.
        let mentions: String = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'local_mentions'")
            .fetch_one(&mut *db.read().await.unwrap())
            .await
            .unwrap();
        assert!(mentions.ends_with("WITHOUT ROWID"), "{mentions}");
        let sequences: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_sequence ORDER BY name")
            .fetch_all(&mut *db.read().await.unwrap())
            .await
            .unwrap();
        assert!(tables.iter().all(|table| !sequences.iter().any(|name| name == table)), "{sequences:?}");
        let indexes: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type IN ('index', 'trigger') ORDER BY name")
                .fetch_all(&mut *db.read().await.unwrap())
                .await
                .unwrap();
        for index in [
            "audit_log_subject",
            "content_events_decisions",
            "content_events_item",
            "content_items_stage",
            "inbound_events_conversation",
            "inbound_events_waiting",
            "llm_usage_day",
            "local_posts_mentions",
            "outbox_due",
        ] {
            assert!(indexes.iter().any(|name| name == index), "{index} is gone: {indexes:?}");
        }
        // The rows read as before, through the store.
        let pending = db.pending_inbound("alice", "local", 10).await.unwrap();
        assert_eq!(pending.iter().map(|row| row.id).collect::<Vec<_>>(), vec![7, 8]);
        assert_eq!(db.outbox_row("k8").await.unwrap().map(|row| (row.id, row.text)), Some((8, "b".to_owned())));
        assert_eq!(
            db.local_mentions("alice", 0, 10).await.unwrap().iter().map(|post| post.id).collect::<Vec<_>>(),
            vec![7]
        );
        // New rows come after the largest id, and the trigger still indexes a new post's mentions.
        let post = db.local_post("carol", "@alice again", None, Some("p9"), &["alice".to_owned()]).await.unwrap();
        assert_eq!(post.map(|post| post.id), Some(9));
        assert_eq!(
            db.local_mentions("alice", 7, 10).await.unwrap().iter().map(|post| post.id).collect::<Vec<_>>(),
            vec![9]
        );
        let item = NewOutbox {
            idempotency_key: "k9".into(),
            persona: "alice".into(),
            platform: "local".into(),
            kind: "reply".into(),
            text: "c".into(),
            reply_to: None,
            conversation: None,
        };
        assert_eq!(db.enqueue(&item, None).await.unwrap(), Enqueued { id: 9, created: true });
        assert_eq!(db.audit_trail("k9").await.unwrap().len(), 1, "the enqueue's audit entry");
        db.close().await;
    }

    /// A migrated SQLite file (one writer, one reader), and the directory that holds it.
    async fn migrated_file() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/x.db", dir.path().display()), 1).await.unwrap();
        db.migrate().await.unwrap();
        (dir, db)
    }

    /// Whether `lease` is a reader's (`PRAGMA query_only`), read on its native connection.
    fn reads_only(lease: &mut Lease) -> bool {
        let native = lease.native().unwrap().unwrap();
        native.query_row("PRAGMA query_only", [], |row| row.get(0)).unwrap()
    }

    /// A hot read takes the writer when it is free, and a reader without waiting when it is not.
    #[tokio::test]
    async fn a_hot_read_takes_the_free_writer_and_else_a_reader() {
        let (_dir, db) = migrated_file().await;
        assert!(!reads_only(&mut db.read_hot().await.unwrap()), "the writer, free");
        let writing = db.write().await.unwrap();
        let hot = tokio::time::timeout(Duration::from_secs(1), db.read_hot()).await;
        assert!(reads_only(&mut hot.expect("no wait for the writer").unwrap()), "a reader, the writer leased");
        drop(writing);
        db.close().await;
    }

    /// SQLite's plan for `sql` with `values` bound: the `detail` of each step.
    async fn query_plan(db: &Db, sql: &str, values: &[i64]) -> Vec<String> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
        for value in values {
            query = query.bind(*value);
        }
        let rows = query.fetch_all(&mut *db.read().await.unwrap()).await.unwrap();
        rows.iter().map(|row| row.try_get::<String, _>("detail").unwrap()).collect()
    }

    /// The opcodes SQLite compiles `sql` to, with its `parameters` bound to NULL.
    async fn program(db: &Db, sql: &str, parameters: usize) -> Vec<String> {
        let mut explain = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")));
        for _ in 0..parameters {
            explain = explain.bind(None::<String>);
        }
        let rows = explain.fetch_all(&mut *db.read().await.unwrap()).await.unwrap();
        rows.iter().map(|row| row.try_get::<String, _>("opcode").unwrap()).collect()
    }

    /// Recall's read, every reply, builds no temporary table and sorts nothing: its memories by
    /// id are rowid lookups, not an `IN` list, and the caller orders the parts.
    #[tokio::test]
    async fn recall_reads_without_a_temporary_table_or_a_sort() {
        let (_dir, db) = migrated_file().await;
        for (conversation, ids) in [(true, 0), (true, 4), (false, 1), (true, memory::RECALL_LOOKUPS)] {
            let parameters = 1 + if conversation { 3 } else { 0 } + ids;
            let opcodes = program(&db, &memory::recall_sql((5, 24), conversation, ids), parameters).await;
            for opcode in ["OpenEphemeral", "SorterOpen"] {
                assert!(!opcodes.iter().any(|op| op == opcode), "{conversation} {ids}: {opcode} in {opcodes:?}");
            }
        }
    }

    /// A local post's insert on SQLite does not read its own table (the parent is checked by a
    /// trigger): such an insert copies its row into a temporary table first. With its `RETURNING`
    /// clause SQLite fills one more; on the native connection it runs without the clause.
    #[tokio::test]
    async fn a_local_post_is_inserted_without_copying_it_first() {
        let (_dir, db) = migrated_file().await;
        let temporary = |opcodes: Vec<String>| opcodes.iter().filter(|op| *op == "OpenEphemeral").count();
        let native = local::insert_local_post_sql("SQLite");
        assert_eq!(temporary(program(&db, native, 6).await), 0);
        let returning = format!("{native}{}", local::POST_RETURNING.clause);
        assert_eq!(temporary(program(&db, &returning, 6).await), 1, "RETURNING's alone");
    }

    /// Each reply-path insert's [`native::Returning`] names the columns of its clause, in order,
    /// so its rows read the same made natively as returned through sqlx.
    #[test]
    fn each_returning_names_its_clause_columns() {
        let all = [
            &INBOUND_RETURNING,
            &outbox::OUTBOX_RETURNING,
            &memory::INSERT_RETURNING,
            &local::POST_RETURNING,
            &local::GROUP_POST_RETURNING,
        ];
        for returning in all {
            let clause = returning.clause.strip_prefix(" RETURNING ").expect(returning.clause);
            let named: Vec<&str> = clause.split(", ").map(|column| column.rsplit(' ').next().unwrap()).collect();
            let columns: Vec<&str> = returning.columns.iter().map(|(name, _)| *name).collect();
            assert_eq!(named, columns, "{clause}");
            let parameters = memchr::memchr_iter(b'$', clause.as_bytes()).count();
            assert_eq!(parameters, returning.clause_parameters, "{clause}");
        }
        assert_eq!(memory::INSERT_RETURNING.clause, format!(" RETURNING {}", memory::COLUMNS));
    }

    /// The engagement round reads its window through the published items' index, in publish
    /// order: not every item ever published, sorted.
    #[tokio::test]
    async fn the_engagement_round_reads_its_window_by_publish_time() {
        let (_dir, db) = migrated_file().await;
        let plan = query_plan(&db, &content::items_to_measure_sql(Engine::Sqlite, 10), &[3, 2, 1]).await;
        assert_eq!(
            plan,
            ["SEARCH content_items USING INDEX content_items_published (published_at>? AND published_at<?)"]
        );
        db.close().await;
    }

    /// The weekly report counts decisions through the index that holds them alone: the reply
    /// path's stage entries (an automatic approval, a review that passed) are not in it.
    #[tokio::test]
    async fn the_weekly_report_reads_the_decisions_through_their_index() {
        let (_dir, db) = migrated_file().await;
        let plan = query_plan(&db, &report::decisions_sql(Engine::Sqlite), &[1, 2]).await;
        assert!(
            plan.iter().any(|step| step == "SEARCH e USING INDEX content_events_decisions (at>? AND at<?)"),
            "{plan:?}"
        );
        // What the reply path logs is not in the index; what the report counts is.
        let index: String = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'content_events_decisions'")
            .fetch_one(&mut *db.read().await.unwrap())
            .await
            .unwrap();
        let holds = |stage: &str, outcome: &str| {
            let condition = index.split_once(" WHERE ").unwrap().1.to_owned();
            let sql = format!("SELECT {condition} FROM (SELECT '{stage}' AS stage, '{outcome}' AS outcome)");
            let db = db.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut *db.read().await.unwrap())
                    .await
                    .unwrap()
            }
        };
        for (stage, outcome) in [
            ("generate", "generated"),
            ("adapt", "unchanged"),
            ("review", "passed"),
            ("review", "flagged"),
            ("approve", "auto"),
            ("queue", "queued"),
            ("publish", "published"),
        ] {
            assert_eq!(holds(stage, outcome).await, 0, "{stage} {outcome}");
        }
        for (stage, outcome) in [
            ("approve", "held"),
            ("approve", "approved"),
            ("approve", "rejected"),
            ("approve", "expired"),
            ("review", "blocked"),
        ] {
            assert_eq!(holds(stage, outcome).await, 1, "{stage} {outcome}");
        }
        db.close().await;
    }

    /// Whether `sql` can abort half-way on a constraint (`Halt` or `HaltIfNull` with SQLite's
    /// `OE_Abort`, 2, in P2): what makes SQLite keep a statement journal for a statement that may
    /// write several rows inside a transaction.
    async fn can_abort(db: &Db, sql: &str, parameters: usize) -> bool {
        let mut explain = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")));
        for _ in 0..parameters {
            explain = explain.bind(None::<String>);
        }
        let rows = explain.fetch_all(&mut *db.read().await.unwrap()).await.unwrap();
        rows.iter().any(|row| {
            let opcode: String = row.try_get("opcode").unwrap();
            (opcode == "Halt" || opcode == "HaltIfNull") && row.try_get::<i64, _>("p2").unwrap() == 2
        })
    }

    /// The reply path's multi-row writes in an own transaction are `OR FAIL` on SQLite, so none
    /// can abort half-way and SQLite keeps no statement journal for them (a copy of each page
    /// they change); written without it, each can.
    #[tokio::test]
    async fn writes_of_an_own_transaction_cannot_abort_half_way() {
        let (_dir, db) = migrated_file().await;
        let memory = NewMemory {
            persona: "alice".into(),
            platform: "local".into(),
            kind: MemoryKind::Inbound,
            conversation: None,
            author: "bob".into(),
            text: "hi".into(),
        };
        let run = [(&(&memory, None), None), (&(&memory, None), None)];
        for (all_or_nothing, should_abort) in [(false, true), (true, false)] {
            let mut script = script::Script::new("SQLite");
            if all_or_nothing {
                script.all_or_nothing();
            }
            memory::insert_memory_run(&mut script, &run, 0);
            let events = content::events_by_key_sql(script.or_fail(), 4);
            assert_eq!(can_abort(&db, &events, 24).await, should_abort, "{events}");
            let memories = script.text(0);
            assert_eq!(can_abort(&db, memories, 18).await, should_abort, "{memories}");
        }
        db.close().await;
    }

    /// The reply path's stage-log inserts read their rows straight from their `VALUES`: no
    /// temporary table, no sort (as the join with the items, its `ORDER BY`, and the decisions
    /// index's `IN` list made). The rows land in order, and an entry whose key has no item is
    /// left out.
    #[tokio::test]
    async fn stage_entries_by_key_land_in_order_without_a_temporary_table() {
        let (_dir, db) = migrated_file().await;
        for rows in [1, 4, 16, 64] {
            let opcodes = program(&db, &content::events_by_key_sql("", rows), rows * 6).await;
            for opcode in ["OpenEphemeral", "SorterOpen"] {
                assert!(!opcodes.iter().any(|op| op == opcode), "{rows} rows: {opcode} in {opcodes:?}");
            }
        }
        sqlx::raw_sql(
            "INSERT INTO content_items (id, idempotency_key, persona, platform, kind, stage, submitted_by, created_at, \
                 updated_at) VALUES (3, 'a', 'alice', 'local', 'reply', 'queued', 'alice', 1, 1), \
                 (5, 'b', 'alice', 'local', 'reply', 'queued', 'alice', 1, 1)",
        )
        .execute(&mut *db.write().await.unwrap())
        .await
        .unwrap();
        let entry = |stage: &'static str, outcome: &str| StageEntry {
            stage,
            outcome: outcome.to_owned(),
            detail: None,
            actor: "alice".to_owned(),
        };
        let entries = [
            entry("generate", "generated"),
            entry("adapt", "unchanged"),
            entry("queue", "queued"),
            entry("publish", "published"),
            entry("review", "passed"),
        ];
        let keyed: Vec<(&str, &StageEntry)> = vec![
            ("a", &entries[0]),
            ("b", &entries[1]),
            ("missing", &entries[4]),
            ("a", &entries[1]),
            ("a", &entries[2]),
            ("b", &entries[3]),
        ];
        let mut conn = db.write().await.unwrap();
        let mut script = script::Script::new(conn.backend_name());
        content::events_by_key(&mut script, &keyed, 7);
        script.execute(&mut conn).await.unwrap();
        drop(conn);
        let logged: Vec<(i64, String)> = sqlx::query_as("SELECT item_id, stage FROM content_events ORDER BY id")
            .fetch_all(&mut *db.read().await.unwrap())
            .await
            .unwrap();
        let want = [(3, "generate"), (5, "adapt"), (3, "adapt"), (3, "queue"), (5, "publish")];
        assert_eq!(logged, want.map(|(id, stage)| (id, stage.to_owned())));
        db.close().await;
    }

    #[tokio::test]
    async fn a_sqlite_file_has_one_writer_and_read_only_readers() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/x.db", dir.path().display()), 4).await.unwrap();
        db.migrate().await.unwrap();
        // A write sent to the readers fails at once instead of competing with the writer.
        let refused =
            sqlx::query("INSERT INTO cursors (persona, platform, cursor, updated_at) VALUES ('a', 'b', 'c', 0)")
                .execute(&mut *db.read().await.unwrap())
                .await;
        assert!(refused.is_err(), "the read pool accepted a write");
        // Many concurrent writers all land (they queue for the one connection) and reads see them.
        let writes = (0..64).map(|n| {
            let db = db.clone();
            tokio::spawn(async move { db.store_inbound(&[], Some((&format!("p{n}"), "local", "1"))).await })
        });
        for write in writes {
            write.await.unwrap().unwrap();
        }
        for n in 0..64 {
            assert_eq!(db.cursor(&format!("p{n}"), "local").await.unwrap().as_deref(), Some("1"));
        }
        db.close().await;
    }
}

//! Where a statement runs: a connection leased from a [`Source`].
//!
//! Postgres connections come from sqlx's pool, which tests a connection before handing it out and
//! again when it comes back, because a server or a network can cut it. SQLite's connections are
//! held here instead, in a pool of our own that tests nothing and opens a connection when leases
//! first need it. sqlx pings every connection returned to its pool, unconditionally, and on
//! SQLite that ping is one more round trip to the connection's thread after every statement,
//! made while the next statement waits for the one writing connection. A file does not hang up,
//! so there is nothing to test.
//!
//! A SQLite lease goes back to its pool when dropped, whatever the connection was doing: a
//! statement cancelled half-way ends on the connection's thread before the next one starts there,
//! and sqlx's own transactions roll back on drop the same way (the `ROLLBACK` is queued on the
//! connection before the lease goes back). Only a transaction of ours whose `BEGIN` may have run
//! without its end ([`super::script::OwnTransaction`]) has to [`Lease::discard`] its connection:
//! the connection closes (SQLite rolls back what it left open) and the next lease opens a new one.
//!
//! A held lease also holds a connection of rusqlite's to the same file (read-only beside a
//! reader), opened when first asked for ([`Lease::native`]), on which scripts run without sqlx's
//! thread (see [`super::native`]). It is leased, returned and discarded with its sqlx twin.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::checkpoint::{self, Checkpointer};
use super::{SqliteUrl, StoreResult};

/// How long a lease waits for a connection before the call fails as busy (sqlx's pool: the same).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections to lease: sqlx's pool (Postgres) or SQLite connections held by Chorus.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Pool(AnyPool),
    Held(Arc<Held>),
}

/// SQLite connections of one kind (the writer, or the read-only readers), leased last in, first
/// out: at low load the same connection, with its thread and page cache warm, serves every call.
#[derive(Debug)]
pub(crate) struct Held {
    /// What a new connection opens; its file is what the native connections open, when the
    /// database is a file.
    url: SqliteUrl,
    read_only: bool,
    /// One permit a connection.
    permits: Arc<Semaphore>,
    size: u32,
    /// The connections not leased. Fewer than the free permits until leases first overlap, and
    /// after a discard: a lease that finds none opens one.
    idle: Mutex<Vec<HeldConnection>>,
    /// The writer's checkpoints, when the database is a file: its native connection's commits
    /// leave them to the checkpointer's thread.
    checkpointer: Option<Arc<Checkpointer>>,
}

/// A held connection, with the native connection beside it once a script asked for it.
#[derive(Debug)]
pub(crate) struct HeldConnection {
    conn: AnyConnection,
    native: Option<rusqlite::Connection>,
    /// The writer's checkpointer, which the native connection's commits report to: kept here
    /// so that it outlives the connection (fields drop in order).
    checkpointer: Option<Arc<Checkpointer>>,
}

impl Source {
    /// Up to `size` SQLite connections to `url`, read-only (`PRAGMA query_only`, so a write sent
    /// to one by mistake fails at once) when `read_only`. One is opened now, so a bad file fails
    /// here; the others when leases first overlap (each is a thread with its own page cache, and
    /// a quiet service never needs them).
    pub async fn held(url: &SqliteUrl, size: u32, read_only: bool) -> StoreResult<Source> {
        sqlx::any::install_default_drivers();
        let size = size.max(1);
        let first = open_sqlite(&url.url, read_only).await?;
        Ok(Source::Held(Arc::new(Held {
            url: url.clone(),
            read_only,
            permits: Arc::new(Semaphore::new(size as usize)),
            size,
            idle: Mutex::new(vec![HeldConnection { conn: first, native: None, checkpointer: None }]),
            checkpointer: url.file.clone().filter(|_| !read_only).map(Checkpointer::new),
        })))
    }

    /// Asks the checkpointer of a SQLite file's writer for a checkpoint; false where there is none
    /// (sqlx's pool, readers, an in-memory database).
    pub fn ask_checkpoint(&self) -> bool {
        let Source::Held(held) = self else { return false };
        let Some(checkpointer) = &held.checkpointer else { return false };
        checkpointer.ask();
        true
    }

    /// A connection, waited for in turn (up to ten seconds, then [`sqlx::Error::PoolTimedOut`]).
    pub async fn acquire(&self) -> StoreResult<Lease> {
        match self {
            Source::Pool(pool) => Ok(Lease::Pool(pool.acquire().await?)),
            Source::Held(held) => {
                let permit = tokio::time::timeout(ACQUIRE_TIMEOUT, held.permits.clone().acquire_owned())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)?
                    .map_err(|_| sqlx::Error::PoolClosed)?;
                let conn = held.idle.lock().expect("the idle list is never poisoned").pop();
                let conn = match conn {
                    Some(conn) => conn,
                    // A permit with no connection yet, or a discarded one's: open it.
                    None => HeldConnection {
                        conn: open_sqlite(&held.url.url, held.read_only).await?,
                        native: None,
                        checkpointer: None,
                    },
                };
                Ok(Lease::Held(HeldLease { conn: Some(conn), held: held.clone(), _permit: permit }))
            }
        }
    }

    /// A connection free now, without waiting for one or opening one: `None` when every one is
    /// leased or none is open yet, and for sqlx's pool.
    pub fn try_acquire(&self) -> Option<Lease> {
        let Source::Held(held) = self else { return None };
        let permit = held.permits.clone().try_acquire_owned().ok()?;
        let conn = held.idle.lock().expect("the idle list is never poisoned").pop()?;
        Some(Lease::Held(HeldLease { conn: Some(conn), held: held.clone(), _permit: permit }))
    }

    /// Waits for every lease to come back, then closes the connections; later leases fail with
    /// [`sqlx::Error::PoolClosed`].
    pub async fn close(&self) {
        match self {
            Source::Pool(pool) => pool.close().await,
            Source::Held(held) => {
                // Closed already when the permits are.
                let Ok(all) = held.permits.acquire_many(held.size).await else { return };
                held.permits.close();
                drop(all);
                let idle = std::mem::take(&mut *held.idle.lock().expect("the idle list is never poisoned"));
                for HeldConnection { conn, native, checkpointer } in idle {
                    drop(native);
                    drop(checkpointer);
                    if let Err(err) = conn.close().await {
                        tracing::warn!(error = %err, "closing a SQLite connection failed");
                    }
                }
                if let Some(checkpointer) = held.checkpointer.clone() {
                    // Waits for a checkpoint under way, if any (milliseconds), off the runtime.
                    let _ = tokio::task::spawn_blocking(move || checkpointer.close()).await;
                }
            }
        }
    }
}

/// A connection leased from a [`Source`]; it goes back when dropped.
pub(crate) enum Lease {
    Pool(PoolConnection<Any>),
    Held(HeldLease),
}

/// A held SQLite connection, back in its idle list when dropped.
pub(crate) struct HeldLease {
    /// `None` only once discarded.
    conn: Option<HeldConnection>,
    held: Arc<Held>,
    /// Released after the connection is back in the idle list (fields drop after `drop`).
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// Begins one of sqlx's transactions on the connection; dropped before its commit, it rolls
    /// back before the connection's next statement.
    pub async fn begin(&mut self) -> Result<sqlx::Transaction<'_, Any>, sqlx::Error> {
        Connection::begin(&mut **self).await
    }

    /// The native connection beside the held one, opened now if it is not yet (read-only beside
    /// a reader); `None` for Postgres, and for a database that is not a file.
    pub fn native(&mut self) -> StoreResult<Option<&mut rusqlite::Connection>> {
        let Lease::Held(lease) = self else { return Ok(None) };
        let Some(path) = &lease.held.url.file else { return Ok(None) };
        let read_only = lease.held.read_only;
        let held = lease.conn.as_mut().expect("a lease holds its connection until discarded");
        if held.native.is_none() {
            let native = super::native::open(path, read_only)?;
            if let Some(checkpointer) = &lease.held.checkpointer {
                checkpointer.hand_over(&native);
                held.checkpointer = Some(checkpointer.clone());
            }
            held.native = Some(native);
        }
        Ok(held.native.as_mut())
    }

    /// Rolls back the transaction open on the lease: on its native connection when one is open
    /// there, else on the sqlx connection.
    pub async fn rollback(&mut self) -> StoreResult<()> {
        if let Lease::Held(HeldLease { conn: Some(HeldConnection { native: Some(native), .. }), .. }) = self
            && !native.is_autocommit()
        {
            return Ok(native.execute_batch("ROLLBACK")?);
        }
        sqlx::query("ROLLBACK").execute(&mut **self).await?;
        Ok(())
    }

    /// Closes the connection instead of returning it, for a connection that may be in a state the
    /// next lease must not inherit (a transaction begun and not ended). A later lease opens its
    /// replacement.
    pub fn discard(self) {
        match self {
            Lease::Pool(conn) => drop(conn.detach()),
            Lease::Held(mut lease) => drop(lease.conn.take()),
        }
    }
}

impl Deref for Lease {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self {
            Lease::Pool(conn) => conn,
            Lease::Held(lease) => &lease.conn.as_ref().expect("a lease holds its connection until discarded").conn,
        }
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Lease::Pool(conn) => conn,
            Lease::Held(lease) => &mut lease.conn.as_mut().expect("a lease holds its connection until discarded").conn,
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.held.idle.lock().expect("the idle list is never poisoned").push(conn);
        }
    }
}

/// The page cache of each SQLite reader (256 KiB) and of the writer (1 MiB). SQLite's default is
/// 2 MiB a connection: an idle fleet of 10,000 agents held 22 MB of page cache over its 9
/// connections, filled by its start-up writes and reads (memory outside the allocator's reach:
/// SQLite allocates with the C library's malloc). The readers cache the same hot pages, and the
/// file's pages stay in the OS cache, shared; the writer's hot pages are the right edges of
/// time-ordered keys and the interior pages. At 500 replies/s the smaller caches cost no
/// measurable CPU (2.48 ms a reply either way, alternated runs).
pub(super) const READER_CACHE_SIZE: &str = "PRAGMA cache_size = -256";
pub(super) const WRITER_CACHE_SIZE: &str = "PRAGMA cache_size = -1024";

/// A new SQLite connection to `url`, set up for Chorus.
async fn open_sqlite(url: &str, read_only: bool) -> StoreResult<AnyConnection> {
    let mut conn = AnyConnection::connect(url).await.map_err(super::StoreError::Connect)?;
    // WAL lets readers run beside the writer; busy_timeout queues writers of other processes
    // instead of failing them with "database is locked".
    conn.execute("PRAGMA journal_mode = WAL").await?;
    conn.execute("PRAGMA synchronous = NORMAL").await?;
    conn.execute("PRAGMA busy_timeout = 5000").await?;
    conn.execute("PRAGMA foreign_keys = ON").await?;
    if read_only {
        conn.execute("PRAGMA query_only = ON").await?;
        conn.execute(READER_CACHE_SIZE).await?;
    } else {
        conn.execute(WRITER_CACHE_SIZE).await?;
        conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(checkpoint::sqlx_writer_autocheckpoint()))).await?;
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::Row;

    use super::*;

    /// A SQLite file with a table `t (n)`, and its URL.
    async fn file() -> (tempfile::TempDir, SqliteUrl) {
        let dir = tempfile::tempdir().unwrap();
        let url = super::super::prepare_sqlite_url(&format!("sqlite://{}/x.db", dir.path().display())).unwrap();
        let setup = Source::held(&url, 1, false).await.unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER)").execute(&mut *setup.acquire().await.unwrap()).await.unwrap();
        setup.close().await;
        (dir, url)
    }

    /// How many rows `t` has, read through `source`.
    async fn rows(source: &Source) -> i64 {
        let row = sqlx::query("SELECT COUNT(*) FROM t").fetch_one(&mut *source.acquire().await.unwrap()).await.unwrap();
        row.get(0)
    }

    #[tokio::test]
    async fn a_held_source_leases_each_connection_once_and_the_last_returned_first() {
        let (_dir, url) = file().await;
        let source = Source::held(&url, 2, false).await.unwrap();
        let Source::Held(held) = &source else { unreachable!() };
        assert_eq!(held.idle.lock().unwrap().len(), 1, "one connection is opened at start, the other when needed");
        let mut first = source.acquire().await.unwrap();
        let mut second = source.acquire().await.unwrap();
        tag(&mut first, 1001).await;
        tag(&mut second, 1002).await;
        // Both leased: a third waits until one comes back.
        assert_eq!(held.permits.available_permits(), 0);
        let third = tokio::spawn({
            let source = source.clone();
            async move { tag_of(&mut source.acquire().await.unwrap()).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "a third lease did not wait");
        drop(first);
        assert_eq!(third.await.unwrap(), 1001, "the waiting lease got the connection given back");
        drop(second);
        assert_eq!(tag_of(&mut source.acquire().await.unwrap()).await, 1002, "last returned, first leased");
        source.close().await;
    }

    /// `try_acquire` takes a connection only when one is free and open: it never waits, nor opens
    /// one.
    #[tokio::test]
    async fn trying_to_lease_takes_a_free_connection_and_never_waits() {
        let (_dir, url) = file().await;
        let source = Source::held(&url, 2, false).await.unwrap();
        let mut first = source.try_acquire().expect("the connection opened at start is free");
        tag(&mut first, 7).await;
        assert!(source.try_acquire().is_none(), "the other permit has no connection open yet");
        let second = source.acquire().await.unwrap();
        assert!(source.try_acquire().is_none(), "both leased");
        drop(first);
        assert_eq!(tag_of(&mut source.try_acquire().unwrap()).await, 7, "the one given back");
        drop(second);
        source.close().await;
    }

    #[tokio::test]
    async fn the_writers_native_commits_leave_checkpoints_to_its_checkpointer_and_close_stops_it() {
        let (_dir, url) = file().await;
        let writer = Source::held(&url, 1, false).await.unwrap();
        let reader = Source::held(&url, 1, true).await.unwrap();
        let Source::Held(held) = &writer else { unreachable!() };
        let checkpointer = held.checkpointer.clone().expect("a file's writer has a checkpointer");
        let Source::Held(read) = &reader else { unreachable!() };
        assert!(read.checkpointer.is_none(), "readers do not write");
        {
            let mut lease = writer.acquire().await.unwrap();
            let autocheckpoint = sqlx::query("PRAGMA wal_autocheckpoint").fetch_one(&mut *lease).await.unwrap();
            assert_eq!(autocheckpoint.get::<i64, _>(0), i64::from(checkpoint::INLINE_FRAMES), "the sqlx writer's");
            let native = lease.native().unwrap().unwrap();
            for n in 0..checkpoint::ASK_FRAMES + 200 {
                native.execute("INSERT INTO t (n) VALUES (?1)", [n]).unwrap();
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while checkpointer.runs() == 0 {
            assert!(std::time::Instant::now() < deadline, "no checkpoint ran");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(rows(&reader).await, i64::from(checkpoint::ASK_FRAMES) + 200);
        reader.close().await;
        writer.close().await;
        assert!(!checkpointer.running(), "close left the checkpoint thread running");
    }

    /// Marks the leased connection with `tag` (its page cache size, a setting of the connection).
    async fn tag(lease: &mut Lease, tag: i64) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PRAGMA cache_size = -{tag}"))).execute(&mut **lease).await.unwrap();
    }

    /// The leased connection's [`tag`].
    async fn tag_of(lease: &mut Lease) -> i64 {
        let row = sqlx::query("PRAGMA cache_size").fetch_one(&mut **lease).await.unwrap();
        -row.get::<i64, _>(0)
    }

    #[tokio::test]
    async fn a_transaction_dropped_on_a_lease_rolls_back_before_the_next_statement() {
        let (_dir, url) = file().await;
        let writer = Source::held(&url, 1, false).await.unwrap();
        let reader = Source::held(&url, 1, true).await.unwrap();
        {
            let mut conn = writer.acquire().await.unwrap();
            let mut tx = conn.begin().await.unwrap();
            sqlx::query("INSERT INTO t VALUES (1)").execute(&mut *tx).await.unwrap();
            // Dropped without its commit, as when its future is cancelled.
        }
        // The same (one) connection autocommits again: its write is seen by another connection.
        sqlx::query("INSERT INTO t VALUES (2)").execute(&mut *writer.acquire().await.unwrap()).await.unwrap();
        assert_eq!(rows(&reader).await, 1, "the dropped transaction's row is gone and the next write committed");
        writer.close().await;
        reader.close().await;
    }

    #[tokio::test]
    async fn a_discarded_connection_is_replaced_and_leaves_nothing_open() {
        let (_dir, url) = file().await;
        let writer = Source::held(&url, 1, false).await.unwrap();
        let reader = Source::held(&url, 1, true).await.unwrap();
        let mut conn = writer.acquire().await.unwrap();
        sqlx::raw_sql("BEGIN; INSERT INTO t VALUES (1)").execute(&mut *conn).await.unwrap();
        conn.discard();
        // The next lease opens a new connection: it writes (the closed one's write lock is gone)
        // and what the discarded one left open was rolled back.
        sqlx::query("INSERT INTO t VALUES (2)").execute(&mut *writer.acquire().await.unwrap()).await.unwrap();
        assert_eq!(rows(&reader).await, 1);
        let Source::Held(held) = &writer else { unreachable!() };
        assert_eq!(held.idle.lock().unwrap().len(), 1, "the replacement went back to the idle list");
        writer.close().await;
        reader.close().await;
    }

    #[tokio::test]
    async fn closing_waits_for_the_leases_and_later_leases_fail() {
        let (_dir, url) = file().await;
        let source = Source::held(&url, 1, false).await.unwrap();
        let lease = source.acquire().await.unwrap();
        let closing = tokio::spawn({
            let source = source.clone();
            async move { source.close().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!closing.is_finished(), "close did not wait for the lease");
        drop(lease);
        closing.await.unwrap();
        let refused = source.acquire().await.err().expect("a lease after close");
        assert!(matches!(refused, super::super::StoreError::Query(sqlx::Error::PoolClosed)), "{refused:?}");
        // Closing twice is harmless.
        source.close().await;
    }
}

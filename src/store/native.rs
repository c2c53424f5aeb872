//! [`super::script::Script`]s on SQLite's held connections, called on the caller's thread.
//!
//! sqlx runs a SQLite connection on a thread of its own: every call is a message to that thread
//! and a wake-up back, and on this kind of small virtual machine the two wake-ups cost more than
//! the statement (a one-row insert that commits: 82–93 µs of CPU through sqlx, 16–17 µs called
//! directly, in a scratch test). So each held connection's lease also holds a connection of
//! rusqlite's to the same file ([`super::conn::Lease::native`]; a reader's refuses writes), and a
//! script run on that lease runs there, statement by statement, each prepared once and kept. The
//! writer's two connections are behind the one writer's permit, so they never write at once; a
//! transaction is begun and ended by scripts on the same lease, so all of its statements run on
//! the one connection.
//!
//! A call blocks the runtime's thread while SQLite works: a few statements in WAL mode with
//! `synchronous = NORMAL`, which write to the OS's cache and sync only at a checkpoint. Another
//! process holding the file's write lock makes a write wait up to the busy timeout, as the sqlx
//! connection would, but on the runtime's thread.

use std::ffi::{CStr, c_int};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::types::{FromSql, ToSql, ToSqlOutput, Value, ValueRef};
use sqlx::any::AnyRow;
use sqlx::{Any, ColumnIndex, Decode, Type};

use super::conn::{READER_CACHE_SIZE, WRITER_CACHE_SIZE};
use super::script::numbered_in_order;

/// A statement that takes this long is logged as a warning (sqlx's threshold for its own).
const SLOW_STATEMENT: Duration = Duration::from_secs(1);

/// Where the native statements are logged: every one at `debug`, with its SQL text (never its
/// values), rows and time, as sqlx logs its own under `sqlx::query`; a slow one at `warn`.
pub(super) const LOG_TARGET: &str = "chorus::store::sql";

/// Prepared statements kept a connection: the hot scripts' texts (inserts of 1 to n rows, a
/// group of local posts, the outbox's updates) are a few dozen.
const STATEMENT_CACHE: usize = 256;

/// Opens a native connection to the SQLite file at `path`, set up as sqlx's connections of its
/// kind are (the file exists and is in WAL mode already: sqlx's connection opened it): a reader's
/// refuses writes (`PRAGMA query_only`).
pub(super) fn open(path: &Path, read_only: bool) -> rusqlite::Result<rusqlite::Connection> {
    // The writer writes its log's frames through the VFS that joins each frame's two writes.
    let conn = if read_only { open_file(path, None)? } else { open_file(path, Some(joined_frames()?))? };
    conn.busy_timeout(Duration::from_secs(5))?;
    let kind =
        if read_only { format!("PRAGMA query_only = ON; {READER_CACHE_SIZE}") } else { WRITER_CACHE_SIZE.to_owned() };
    conn.execute_batch(&format!("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; {kind};"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Opens the connection the checkpoint thread runs `PRAGMA wal_checkpoint` on (see
/// [`super::checkpoint`]): it reads no pages through its cache, so it keeps a small one.
pub(super) fn open_for_checkpoints(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = open_file(path, None)?;
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -64;")?;
    Ok(conn)
}

/// A connection to the existing SQLite file at `path`, through `vfs` (SQLite's default if
/// `None`), used from one thread at a time (the lease's or the checkpoint thread's), so without
/// SQLite's own mutex.
fn open_file(path: &Path, vfs: Option<&CStr>) -> rusqlite::Result<rusqlite::Connection> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    match vfs {
        Some(vfs) => rusqlite::Connection::open_with_flags_and_vfs(path, flags, vfs),
        None => rusqlite::Connection::open_with_flags(path, flags),
    }
}

/// SQLite's process-wide options, taken only before SQLite is initialized, which its first
/// connection does (later each call is refused with `SQLITE_MISUSE` and changes nothing: the
/// first refusal's code is returned, and logged by the caller):
///
/// - **No memory statistics** (`SQLITE_CONFIG_MEMSTATUS` off). With them on, SQLite's default,
///   every allocation and free of SQLite's takes a process-wide mutex to count the bytes: 146 of
///   the 678 mutex locks a reply at 20/s (callgrind). Nothing here reads them
///   (`sqlite3_memory_used`, a soft heap limit).
/// - **A page cache's first allocation of [`BULK_PAGES`]** (`SQLITE_CONFIG_PAGECACHE` without
///   memory of ours). Built without `SQLITE_ENABLE_MEMORY_MANAGEMENT` (`.cargo/config.toml`),
///   SQLite gives each connection a page cache of its own, which by default allocates room for 20
///   pages at its first use, whether or not it fills them: 0.55 MiB more at idle over the
///   service's SQLite connections. Pages past that room come from `malloc` one at a time and go
///   back to it, and a reader's cache is emptied at each read transaction after a commit and
///   filled again: with no room at all that cost 14k instructions a reply at 20/s (callgrind).
pub(super) fn configure() -> Result<(), c_int> {
    use rusqlite::ffi;
    use std::ffi::c_void;
    // SAFETY: `sqlite3_config` is variadic: `SQLITE_CONFIG_MEMSTATUS` takes one `int`,
    // `SQLITE_CONFIG_PAGECACHE` a pointer and two `int`s (null and 0: no memory of ours; then the
    // count of pages each cache allocates room for at once). It is not thread-safe: the caller
    // (`store::configure_sqlite`, first thing in `main`) makes it while no other thread uses
    // SQLite. Once SQLite is initialized it returns SQLITE_MISUSE and changes nothing.
    let codes = unsafe {
        [
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int),
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_PAGECACHE, std::ptr::null_mut::<c_void>(), 0 as c_int, BULK_PAGES),
        ]
    };
    codes.into_iter().find(|&code| code != ffi::SQLITE_OK).map_or(Ok(()), Err)
}

/// The pages a connection's page cache allocates room for at its first use ([`configure`]):
/// against SQLite's 20, 0.18 MiB more than none at idle with one agent (4.50 → 4.69 MiB
/// anonymous), where 20 cost 0.55; and 1.427 million instructions a reply, against 1.445 with
/// none and 1.431 with 20 (callgrind, 20/s).
const BULK_PAGES: c_int = 8;

/// The name of [`super::vfs`]'s VFS, registered now if it is not yet.
fn joined_frames() -> rusqlite::Result<&'static CStr> {
    super::vfs::name().map_err(|code| {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some("cannot register the log's VFS".into()))
    })
}

/// A value bound to a statement or read from a row, as SQLite holds it: a text as its bytes,
/// checked as UTF-8 only when it is decoded. rusqlite's `Value` holds a `String`, so each text
/// was checked and copied once more: a bound `&str` (UTF-8 already) on its way in, and a read one
/// once into the row and again by the decode.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl Cell {
    /// The value SQLite gave or takes, copied.
    fn copied(value: ValueRef<'_>) -> Self {
        match value {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(n) => Cell::Integer(n),
            ValueRef::Real(x) => Cell::Real(x),
            ValueRef::Text(text) => Cell::Text(text.to_vec()),
            ValueRef::Blob(bytes) => Cell::Blob(bytes.to_vec()),
        }
    }

    /// The value, borrowed as rusqlite reads and binds one.
    fn as_value_ref(&self) -> ValueRef<'_> {
        match self {
            Cell::Null => ValueRef::Null,
            Cell::Integer(n) => ValueRef::Integer(*n),
            Cell::Real(x) => ValueRef::Real(*x),
            Cell::Text(text) => ValueRef::Text(text),
            Cell::Blob(bytes) => ValueRef::Blob(bytes),
        }
    }
}

impl ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(self.as_value_ref()))
    }
}

/// A value bound to a statement, as rusqlite binds it.
pub(super) fn value<T: ToSql>(value: &T) -> rusqlite::Result<Cell> {
    Ok(match value.to_sql()? {
        ToSqlOutput::Borrowed(value) => Cell::copied(value),
        ToSqlOutput::Owned(Value::Null) => Cell::Null,
        ToSqlOutput::Owned(Value::Integer(n)) => Cell::Integer(n),
        ToSqlOutput::Owned(Value::Real(x)) => Cell::Real(x),
        ToSqlOutput::Owned(Value::Text(text)) => Cell::Text(text.into_bytes()),
        ToSqlOutput::Owned(Value::Blob(bytes)) => Cell::Blob(bytes),
        other => return Err(rusqlite::Error::ToSqlConversionFailure(format!("unsupported value {other:?}").into())),
    })
}

/// What an `INSERT` of one row returns when run here without its `RETURNING` clause (see
/// [`super::script::Script::returning`]). SQLite runs `RETURNING` as a trigger that fills a
/// temporary table, a b-tree with a page cache of its own, opened, zeroed and closed at each
/// call, and reads the rows back from it; a reply has about six such inserts (the mention's
/// inbound row, two memories, the outbox row, two local posts). Here the row is made from the
/// new rowid (`sqlite3_last_insert_rowid`) and the values the statement was given, when it
/// inserted a row (`sqlite3_changes`: a conflict, or a trigger that skips the row, inserts none).
/// At 20 replies/s that took 1.43–1.44 million instructions a reply to 1.33 (callgrind), and at
/// 250/s 1.29–1.39 ms of CPU a reply to 1.15–1.28 (alternated), with the same system calls.
pub(crate) struct Returning {
    /// The clause, as the statement's text ends with it elsewhere: ` RETURNING id, …`.
    pub clause: &'static str,
    /// Each column of the clause: its name, and where its value comes from.
    pub columns: &'static [(&'static str, Returned)],
    /// Parameters bound after the statement's own that only the clause names (`CAST($7 AS
    /// BIGINT) AS slot`): not bound here, where the clause is not run.
    pub clause_parameters: usize,
    /// The columns' names, made at the first use.
    names: std::sync::OnceLock<Arc<[String]>>,
}

/// Where a [`Returning`] column's value comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Returned {
    /// The new row's rowid (the table's `INTEGER PRIMARY KEY`).
    Rowid,
    /// The value bound to this parameter (from 0), stored as given.
    Parameter(usize),
}

impl Returning {
    pub(crate) const fn new(
        clause: &'static str,
        columns: &'static [(&'static str, Returned)],
        clause_parameters: usize,
    ) -> Self {
        Returning { clause, columns, clause_parameters, names: std::sync::OnceLock::new() }
    }

    fn names(&self) -> Arc<[String]> {
        self.names.get_or_init(|| self.columns.iter().map(|(name, _)| (*name).to_owned()).collect()).clone()
    }
}

/// Runs `sql` with `values` (its parameters, `$1, $2, …` in any order or `?`), appends the rows it
/// returns to `rows` (with `returning`, the row it inserted, as [`Returning`] makes it), and
/// logs it ([`LOG_TARGET`]).
pub(super) fn run(
    conn: &rusqlite::Connection,
    sql: &str,
    values: &[Cell],
    returning: Option<&Returning>,
    rows: &mut Vec<Fetched>,
) -> rusqlite::Result<()> {
    let started = Instant::now();
    let before = rows.len();
    let ran = match returning {
        None => execute(conn, sql, values, rows),
        Some(returning) => {
            let bound = values.len().saturating_sub(returning.clause_parameters);
            execute(conn, sql, &values[..bound], rows).and_then(|()| inserted(conn, values, returning, rows))
        }
    };
    let elapsed = started.elapsed();
    let returned = rows.len() - before;
    if elapsed >= SLOW_STATEMENT {
        let elapsed_ms = elapsed.as_millis() as u64;
        tracing::warn!(target: LOG_TARGET, statement = sql, rows = returned, elapsed_ms, ok = ran.is_ok(), "slow statement");
    } else {
        let elapsed_us = elapsed.as_micros() as u64;
        tracing::debug!(target: LOG_TARGET, statement = sql, rows = returned, elapsed_us, ok = ran.is_ok(), "statement");
    }
    ran
}

/// The row a one-row `INSERT` just run on `conn` with `values` inserted, if it inserted one, as
/// `returning` says. More than one row changed is an error: the statement was not of one row.
fn inserted(
    conn: &rusqlite::Connection,
    values: &[Cell],
    returning: &Returning,
    rows: &mut Vec<Fetched>,
) -> rusqlite::Result<()> {
    match conn.changes() {
        0 => Ok(()),
        1 => {
            let id = conn.last_insert_rowid();
            let values = returning
                .columns
                .iter()
                .map(|(_, from)| match *from {
                    Returned::Rowid => Ok(Cell::Integer(id)),
                    Returned::Parameter(at) => {
                        values.get(at).cloned().ok_or(rusqlite::Error::InvalidParameterCount(at + 1, values.len()))
                    }
                })
                .collect::<rusqlite::Result<_>>()?;
            rows.push(Fetched::Native(NativeRow { names: returning.names(), values }));
            Ok(())
        }
        changed => Err(rusqlite::Error::StatementChangedRows(changed as usize)),
    }
}

/// [`run`]'s work.
fn execute(conn: &rusqlite::Connection, sql: &str, values: &[Cell], rows: &mut Vec<Fetched>) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(sql)?;
    // Every parameter is bound on every call: a kept statement holds its last call's values.
    if values.len() != statement.parameter_count() {
        return Err(rusqlite::Error::InvalidParameterCount(values.len(), statement.parameter_count()));
    }
    if numbered_in_order(sql) {
        // `?`s, or `$1, $2, …` each once in order: each at the position its number says.
        for (n, value) in values.iter().enumerate() {
            statement.raw_bind_parameter(n + 1, value)?;
        }
    } else {
        // Named: each `$N` where SQLite placed it (a name repeated, or out of order, has one slot).
        let mut name = String::with_capacity(8);
        for (n, value) in values.iter().enumerate() {
            name.clear();
            super::push_parameter(&mut name, n + 1);
            match statement.parameter_index(&name)? {
                Some(slot) => statement.raw_bind_parameter(slot, value)?,
                None => return Err(rusqlite::Error::InvalidParameterName(name)),
            }
        }
    }
    // The columns' names once a call, at its first row: most of the native statements (inserts
    // and updates without RETURNING, BEGIN, COMMIT) return none.
    let mut names: Option<Arc<[String]>> = None;
    let mut returned = statement.raw_query();
    while let Some(row) = returned.next()? {
        let names =
            names.get_or_insert_with(|| row.as_ref().column_names().into_iter().map(str::to_owned).collect()).clone();
        let values = (0..names.len()).map(|i| row.get_ref(i).map(Cell::copied)).collect::<rusqlite::Result<_>>()?;
        rows.push(Fetched::Native(NativeRow { names, values }));
    }
    Ok(())
}

/// A row a script returned: sqlx's, or one read here.
pub(crate) enum Fetched {
    Any(AnyRow),
    Native(NativeRow),
}

/// A row read on the native connection: its columns' names and values.
#[derive(Debug)]
pub(crate) struct NativeRow {
    names: Arc<[String]>,
    values: Vec<Cell>,
}

/// A column's value of the types the store reads: decoded by sqlx from its rows and by rusqlite
/// from native ones.
pub(crate) trait Field: for<'r> Decode<'r, Any> + Type<Any> + FromSql {}
impl<T: for<'r> Decode<'r, Any> + Type<Any> + FromSql> Field for T {}

/// A column, by position or by name.
pub(crate) trait Column: ColumnIndex<AnyRow> + std::fmt::Debug + Copy {
    /// Its position in `names`.
    fn position(self, names: &[String]) -> Option<usize>;
}

impl Column for usize {
    fn position(self, names: &[String]) -> Option<usize> {
        (self < names.len()).then_some(self)
    }
}

impl Column for &str {
    fn position(self, names: &[String]) -> Option<usize> {
        names.iter().position(|name| name == self)
    }
}

/// The fields of a row the store decodes: sqlx's rows and [`Fetched`] rows alike.
pub(crate) trait Fields {
    /// The value of `column`, as `T`.
    fn field<T: Field, C: Column>(&self, column: C) -> Result<T, sqlx::Error>;
}

impl Fields for AnyRow {
    fn field<T: Field, C: Column>(&self, column: C) -> Result<T, sqlx::Error> {
        sqlx::Row::try_get(self, column)
    }
}

impl Fields for NativeRow {
    fn field<T: Field, C: Column>(&self, column: C) -> Result<T, sqlx::Error> {
        let at = column.position(&self.names).ok_or_else(|| sqlx::Error::ColumnNotFound(format!("{column:?}")))?;
        T::column_result(self.values[at].as_value_ref())
            .map_err(|err| sqlx::Error::ColumnDecode { index: format!("{column:?}"), source: Box::new(err) })
    }
}

impl Fields for Fetched {
    fn field<T: Field, C: Column>(&self, column: C) -> Result<T, sqlx::Error> {
        match self {
            Fetched::Any(row) => row.field(column),
            Fetched::Native(row) => row.field(column),
        }
    }
}

#[cfg(test)]
mod tests {
    /// [`super::configure`] takes effect only in a process where SQLite is not yet initialized,
    /// so this runs [`memory_statistics_in_a_fresh_process`] in a process of its own: this test
    /// binary again, with that test alone.
    #[test]
    fn configured_sqlite_keeps_no_memory_statistics() {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "store::native::tests::memory_statistics_in_a_fresh_process", "--ignored"])
            .args(["--test-threads", "1", "--nocapture"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains("1 passed"), "the child ran the test: {stdout}");
    }

    /// `.cargo/config.toml` builds SQLite without `SQLITE_ENABLE_MEMORY_MANAGEMENT`, whose page
    /// caches share one lock (`LIBSQLITE3_FLAGS`, read by libsqlite3-sys's build).
    #[test]
    fn sqlite_is_built_without_shared_page_caches() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let options: Vec<String> = conn
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(options.iter().any(|option| option == "THREADSAFE=1"), "the options are read: {options:?}");
        assert!(!options.iter().any(|option| option == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
    }

    /// Run by [`configured_sqlite_keeps_no_memory_statistics`]: alone in its process, configured
    /// first, SQLite counts none of the memory it then takes.
    #[test]
    #[ignore = "run in a process of its own by configured_sqlite_keeps_no_memory_statistics"]
    fn memory_statistics_in_a_fresh_process() {
        assert_eq!(crate::store::configure_sqlite(), Ok(()), "SQLite took the options");
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x TEXT); INSERT INTO t VALUES (randomblob(100000));").unwrap();
        // SAFETY: a plain read of SQLite's counter.
        let used = unsafe { rusqlite::ffi::sqlite3_memory_used() };
        assert_eq!(used, 0, "SQLite counted {used} bytes: its memory statistics are on");
    }
}

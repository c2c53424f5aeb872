//! Several statements sent to the database in one call where the engine allows it.
//!
//! sqlx runs SQLite on a thread of its own, so every statement is a hop to that thread and back;
//! on a small virtual machine the two thread wake-ups cost more than a small insert. SQLite runs
//! a text of several statements in one call, binding `$N` across the whole text, so a small
//! [`Script`] joins its statements into one text (renumbering each one's parameters after the
//! ones before); in a transaction they still commit together, outside one each commits alone.
//! Postgres's extended protocol takes one statement with parameters a call, so there each
//! statement is its own call, as if run one after another.
//!
//! On a held SQLite lease (the writer's, or a reader's) a script skips sqlx's thread altogether:
//! its statements run one by one on the lease's native connection, on the caller's thread (see
//! [`super::native`]).

use rusqlite::types::ToSql;
use sqlx::any::AnyArguments;
use sqlx::{AnyConnection, Arguments, Encode, Type};

use super::StoreResult;
use super::conn::Lease;
use super::native::{self, Cell, Fetched, Returning};

/// Statements are joined only while the script holds at most this many parameters. A joined text
/// is one entry in the connection's statement cache (100 entries), so only small scripts are
/// joined: the usual ones below overload, where a hop a statement is most of their cost, and
/// whose texts are few (up to 128: a poll of up to 15 mentions with its cursor, an enqueue of one
/// or two replies, a mark-sent of up to six rows, a group of up to 16 local posts; about 55 texts
/// besides the other statements). A
/// larger batch runs its statements one by one, each of the few shapes of its runs (see
/// [`super::runs`]), and shares those hops among its rows.
pub(super) const JOIN_UP_TO_PARAMETERS: usize = 128;

/// The statement that opens an [`OwnTransaction`].
const BEGIN: &str = "BEGIN";

/// Statements to run in order on one connection (usually in a caller's transaction). Each
/// statement's SQL numbers its parameters `$1, $2, …` in the order they are then bound with
/// [`Script::bind`].
pub(super) struct Script {
    /// Each statement with its arguments (on SQLite none: they are in `values`).
    statements: Vec<(String, AnyArguments)>,
    /// On SQLite, each statement's arguments as the native connection binds them; a call through
    /// sqlx takes them as sqlx's arguments when it is made ([`Script::into_calls`]), so a script
    /// that runs natively builds neither sqlx's arguments nor a joined text.
    values: Vec<Vec<Cell>>,
    /// On SQLite, for each statement of one row that [returns](Script::returning) what it
    /// inserted, where its text's `RETURNING` clause starts and what it returns: on the native
    /// connection it runs without the clause.
    returning: Vec<Option<(usize, &'static Returning)>>,
    /// The first error of a bind, returned by the run.
    bind_error: Option<sqlx::Error>,
    /// Whether the calls go to SQLite, which takes `?` parameters ([`anonymous`]).
    sqlite: bool,
    /// Whether every statement runs in an [`OwnTransaction`] that any failure rolls back whole
    /// ([`Script::begin`], [`Script::all_or_nothing`]), which [`Script::or_fail`] relies on.
    all_or_nothing: bool,
}

impl Script {
    /// A script for a connection of `backend` (`AnyConnection::backend_name`).
    pub fn new(backend: &str) -> Self {
        let sqlite = is_sqlite(backend);
        // Most scripts are a few statements: BEGIN, one or two writes, COMMIT.
        Script {
            statements: Vec::with_capacity(4),
            values: if sqlite { Vec::with_capacity(4) } else { Vec::new() },
            returning: if sqlite { Vec::with_capacity(4) } else { Vec::new() },
            bind_error: None,
            sqlite,
            all_or_nothing: false,
        }
    }

    /// Starts a statement. A text made for the call is taken as it is; a `&str` is copied.
    pub fn statement(&mut self, sql: impl Into<String>) -> &mut Self {
        let sql = sql.into();
        if self.sqlite {
            // Room for its values at once: one a `$` (a named one repeated counts twice).
            self.values.push(Vec::with_capacity(memchr::memchr_iter(b'$', sql.as_bytes()).count()));
            self.returning.push(None);
        }
        self.statements.push((sql, AnyArguments::default()));
        self
    }

    /// Ends the current statement's text, an `INSERT` of `rows` rows, with `returning`'s clause:
    /// each row it inserts comes back with those columns. On SQLite's native connection an
    /// insert of one row runs without the clause, and its row is made from the new rowid and the
    /// values bound (see [`Returning`]); elsewhere the clause runs. Its parameters are bound
    /// after, as any statement's.
    pub fn returning(&mut self, returning: &'static Returning, rows: usize) -> &mut Self {
        let (sql, _) = self.statements.last_mut().expect("a statement is started before its RETURNING clause");
        let at = sql.len();
        sql.push_str(returning.clause);
        if let Some(native) = self.returning.last_mut()
            && rows == 1
        {
            *native = Some((at, returning));
        }
        self
    }

    /// Starts an [`OwnTransaction`]: a `BEGIN` statement (the script's first). The script is
    /// then [all or nothing](Script::all_or_nothing).
    pub fn begin(&mut self) -> &mut Self {
        self.all_or_nothing();
        self.statement(BEGIN)
    }

    /// Whether the script's first statement is its own `BEGIN` ([`Script::begin`]).
    fn began(&self) -> bool {
        self.statements.first().is_some_and(|(sql, _)| sql == BEGIN)
    }

    /// Marks the script's statements as running inside an [`OwnTransaction`], begun by this
    /// script or by an earlier one on the same lease, which rolls all of them back when any
    /// fails; from here on [`Script::or_fail`] gives SQLite's `OR FAIL`.
    pub fn all_or_nothing(&mut self) -> &mut Self {
        self.all_or_nothing = true;
        self
    }

    /// `OR FAIL ` for an `INSERT` or `UPDATE` of an [all-or-nothing](Script::all_or_nothing)
    /// script on SQLite, written after the verb (`INSERT {}INTO`, `UPDATE {}outbox`); nothing
    /// otherwise.
    ///
    /// Inside a transaction SQLite keeps a statement journal for a statement that may write
    /// several rows (a multi-row insert, an update by a list of ids, any statement with
    /// `RETURNING`, which SQLite runs as a trigger) and may abort on a constraint (`NOT NULL`, a
    /// unique index): a copy of every page the statement is about to change, so that an abort
    /// undoes that statement alone and leaves the transaction open. An own transaction is rolled
    /// back whole when any of its statements fails, so nothing needs that undo: under `OR FAIL`
    /// a failing statement stops with the same error and keeps the rows it wrote before it, and
    /// the rollback removes them with the rest. Outside an own transaction a statement commits
    /// alone, where `OR FAIL` would commit a failing statement's first rows, so it is not used.
    pub fn or_fail(&self) -> &'static str {
        if self.sqlite && self.all_or_nothing { "OR FAIL " } else { "" }
    }

    /// Ends an [`OwnTransaction`]: a `COMMIT` statement (the script's last).
    pub fn commit(&mut self) -> &mut Self {
        self.statement("COMMIT")
    }

    /// The text of statement `n`, as added.
    #[cfg(test)]
    pub(super) fn text(&self, n: usize) -> &str {
        &self.statements[n].0
    }

    /// Binds the current statement's next parameter.
    pub fn bind<'t, T: Encode<'t, sqlx::Any> + Type<sqlx::Any> + ToSql + Copy>(&mut self, value: T) -> &mut Self {
        let (_, args) = self.statements.last_mut().expect("a statement is started before its parameters");
        let added = match self.values.last_mut() {
            Some(values) => native::value(&value).map(|value| values.push(value)).map_err(Into::into),
            None => args.add(value),
        };
        if let Err(err) = added
            && self.bind_error.is_none()
        {
            self.bind_error = Some(sqlx::Error::Encode(err));
        }
        self
    }

    /// Runs every statement, in order.
    pub async fn execute<'c>(self, on: impl Into<On<'c>>) -> StoreResult<()> {
        self.fetch_all(on).await.map(drop)
    }

    /// Runs every statement, in order, and answers the rows they returned, in order. On a held
    /// SQLite lease they run on its native connection, on this thread; elsewhere (Postgres, or a
    /// sqlx connection such as one of sqlx's transactions) through sqlx, in the calls
    /// [`Script::into_calls`] makes.
    pub async fn fetch_all<'c>(mut self, on: impl Into<On<'c>>) -> StoreResult<Vec<Fetched>> {
        if let Some(err) = self.bind_error.take() {
            return Err(err.into());
        }
        let mut rows = Vec::new();
        let conn = match on.into() {
            On::Lease(lease) => match lease.native()? {
                Some(native) if self.sqlite => {
                    let statements = self.statements.iter().zip(&self.values).zip(&self.returning);
                    for (((sql, _), values), returning) in statements {
                        match *returning {
                            Some((clause, returning)) => {
                                native::run(native, &sql[..clause], values, Some(returning), &mut rows)?
                            }
                            None => native::run(native, sql, values, None, &mut rows)?,
                        }
                    }
                    return Ok(rows);
                }
                _ => &mut **lease,
            },
            On::Conn(conn) => conn,
        };
        for (sql, args) in self.into_calls()? {
            let returned = sqlx::query_with(sqlx::AssertSqlSafe(sql), args).fetch_all(&mut *conn).await?;
            rows.extend(returned.into_iter().map(Fetched::Any));
        }
        Ok(rows)
    }

    /// Runs every statement on `conn`, all or none, and answers their rows in order: one
    /// statement commits alone; several run as an [`OwnTransaction`], with a `BEGIN` put before
    /// the first (unless the script [began](Script::begin) with its own, as one that knows it
    /// will hold several statements does, to write them [`Script::or_fail`]) and a `COMMIT`
    /// after the last (so on SQLite through sqlx they ride in its calls).
    pub async fn fetch_all_atomically(mut self, mut conn: Lease) -> StoreResult<Vec<Fetched>> {
        if !self.began() {
            if self.statements.len() <= 1 {
                return self.fetch_all(&mut conn).await;
            }
            self.statements.insert(0, (BEGIN.to_owned(), AnyArguments::default()));
            if self.sqlite {
                self.values.insert(0, Vec::new());
                self.returning.insert(0, None);
            }
        }
        self.commit();
        let mut tx = OwnTransaction::new(conn);
        let fetched = self.fetch_all(tx.conn()).await;
        tx.finish(fetched).await
    }

    /// The calls to make through sqlx: on SQLite, several statements of at most
    /// [`JOIN_UP_TO_PARAMETERS`] parameters in all as one joined text, with `?` parameters where
    /// they can be ([`anonymous`]); else each statement.
    pub(super) fn into_calls(self) -> StoreResult<Vec<(String, AnyArguments)>> {
        if !self.sqlite {
            return Ok(self.statements);
        }
        let parameters: usize = self.values.iter().map(Vec::len).sum();
        let texts = self.statements.into_iter().map(|(sql, _)| sql);
        let calls: Vec<(String, Vec<Cell>)> = if self.values.len() > 1 && parameters <= JOIN_UP_TO_PARAMETERS {
            let (mut text, mut all) = (String::new(), Vec::with_capacity(parameters));
            for (sql, values) in texts.zip(self.values) {
                if !text.is_empty() {
                    text.push_str(";\n");
                }
                push_shifted(&mut text, &sql, all.len());
                all.extend(values);
            }
            vec![(text, all)]
        } else {
            texts.zip(self.values).collect()
        };
        calls.into_iter().map(|(sql, values)| Ok((anonymous(sql), sqlx_arguments(values)?))).collect()
    }
}

/// `values` as sqlx's arguments, for a call through sqlx on SQLite.
fn sqlx_arguments(values: Vec<Cell>) -> StoreResult<AnyArguments> {
    let mut args = AnyArguments::default();
    for value in values {
        match value {
            Cell::Null => args.add(None::<i64>),
            Cell::Integer(n) => args.add(n),
            Cell::Real(x) => args.add(x),
            Cell::Text(text) => String::from_utf8(text).map_err(Into::into).and_then(|text| args.add(text)),
            Cell::Blob(bytes) => args.add(bytes),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

/// Whether `backend` (`AnyConnection::backend_name`) is SQLite.
pub(super) fn is_sqlite(backend: &str) -> bool {
    backend == <sqlx::Sqlite as sqlx::Database>::NAME
}

/// Where a [`Script`] runs: a leased connection (a held SQLite one runs it natively), or a sqlx
/// connection (one of sqlx's transactions, say).
pub(super) enum On<'c> {
    Lease(&'c mut Lease),
    Conn(&'c mut AnyConnection),
}

impl<'c> From<&'c mut Lease> for On<'c> {
    fn from(lease: &'c mut Lease) -> Self {
        On::Lease(lease)
    }
}

impl<'c> From<&'c mut AnyConnection> for On<'c> {
    fn from(conn: &'c mut AnyConnection) -> Self {
        On::Conn(conn)
    }
}

impl On<'_> {
    /// The same connection, for one more script.
    pub fn reborrow(&mut self) -> On<'_> {
        match self {
            On::Lease(lease) => On::Lease(lease),
            On::Conn(conn) => On::Conn(conn),
        }
    }

    /// The engine's name (`AnyConnection::backend_name`), for [`Script::new`].
    pub fn backend_name(&self) -> &str {
        match self {
            On::Lease(lease) => lease.backend_name(),
            On::Conn(conn) => conn.backend_name(),
        }
    }
}

/// `sql` with its parameters written `?` when they are `$1, $2, …` in the order they appear, each
/// once (as [`super::value_rows`] and a joined [`Script`] write them: [`numbered_in_order`]);
/// else `sql` as it is. For a call through sqlx on SQLite only: Postgres has no `?`, and the
/// native connection binds such a text by position as it is.
///
/// sqlx binds a named parameter (`$N`) by asking SQLite for its name, and SQLite finds a name by
/// walking the statement's list of names: binding a statement costs the square of its
/// parameters (a run of 64 outbox rows has 832, so about 350,000 steps), and `perf` put 3 % of
/// the CPU at 1,000 replies/s in `sqlite3_bind_parameter_name`. A `?` has no name: sqlx binds the
/// next argument, after those the text's earlier statements took, which is the same argument
/// when the `$N` were in order. The SQL is ours and has no `$` but its parameters.
fn anonymous(sql: String) -> String {
    if memchr::memchr(b'$', sql.as_bytes()).is_none() || !numbered_in_order(&sql) {
        // `?` parameters already, or none, or numbers that must stay: nothing to copy.
        return sql;
    }
    let mut text = String::with_capacity(sql.len());
    let mut from = 0;
    for (at, after, _) in parameters(&sql) {
        text.push_str(&sql[from..at]);
        // The parameter's digits are all consumed: the `?` is followed by none.
        text.push('?');
        from = after;
    }
    text.push_str(&sql[from..]);
    text
}

/// Whether `sql`'s parameters are `$1, $2, …` in the order they appear, each once (or it has
/// none). SQLite gives a named parameter the next position at its first appearance, so such a
/// text's `$N` is at position N, and its values bind by position, as `?`s would
/// ([`super::native`]): the text needs neither a copy with `?`s nor a lookup of each name.
pub(super) fn numbered_in_order(sql: &str) -> bool {
    parameters(sql).enumerate().all(|(at, (_, _, number))| number == Some(at + 1))
}

/// The `$N` parameters of `sql` in order: where each `$` is, where its digits end, and its
/// number (`None` for digits that are none, or too many). A SIMD search for the `$`s
/// (`memchr`): every statement of the native path is scanned on every call. The SQL is ours and
/// has no `$` but its parameters.
fn parameters(sql: &str) -> impl Iterator<Item = (usize, usize, Option<usize>)> + '_ {
    let bytes = sql.as_bytes();
    memchr::memchr_iter(b'$', bytes).map(move |at| {
        let digits = bytes[at + 1..].iter().take_while(|byte| byte.is_ascii_digit()).count();
        let after = at + 1 + digits;
        (at, after, sql[at + 1..after].parse().ok())
    })
}

/// A transaction of its own on one leased connection whose `BEGIN` and `COMMIT` are statements of
/// its first and last [`Script`]s ([`Script::begin`], [`Script::commit`]), so on SQLite they ride
/// in those calls: a transaction of one script is one round trip to SQLite's thread, where sqlx's
/// own transaction makes it three.
///
/// [`OwnTransaction::finish`] hands the connection back, rolling back first after an error. A
/// transaction dropped before that (its future cancelled half-way, when a `BEGIN` may have run
/// without its `COMMIT`) discards its connection instead of returning it ([`Lease::discard`]),
/// and the database rolls back what a closed connection left open.
pub(super) struct OwnTransaction {
    conn: Option<Lease>,
}

impl OwnTransaction {
    /// A transaction on `conn` (usually [`super::Db::write`]); nothing is sent yet.
    pub fn new(conn: Lease) -> Self {
        OwnTransaction { conn: Some(conn) }
    }

    /// The connection, for the transaction's scripts. Every statement of the transaction is a
    /// script's: on SQLite they run on the lease's native connection, where a statement sent
    /// through sqlx would run on the other connection, outside the transaction.
    pub fn conn(&mut self) -> &mut Lease {
        self.conn.as_mut().expect("the connection is taken only by finish and drop")
    }

    /// Ends the transaction with the outcome of its work: the connection goes back, after a
    /// `ROLLBACK` if `outcome` is an error (discarded instead if even that fails: the transaction
    /// may already have ended, and a closed connection leaves nothing open).
    pub async fn finish<T>(mut self, outcome: StoreResult<T>) -> StoreResult<T> {
        if outcome.is_err()
            && let Some(mut conn) = self.conn.take()
            && conn.rollback().await.is_err()
        {
            conn.discard();
        }
        // Committed, or rolled back: back to its source (dropped in `Drop`, it would be discarded).
        drop(self.conn.take());
        outcome
    }
}

impl Drop for OwnTransaction {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.discard();
        }
    }
}

/// Appends `sql` to `text` with every parameter `$N` written `$(N + offset)`. The SQL is ours and
/// has no `$` but its parameters.
fn push_shifted(text: &mut String, sql: &str, offset: usize) {
    let mut from = 0;
    for (at, after, number) in parameters(sql) {
        text.push_str(&sql[from..at]);
        match number {
            Some(n) => super::push_parameter(text, n + offset),
            // A `$` without a number: as it is.
            None => text.push_str(&sql[at..after]),
        }
        from = after;
    }
    text.push_str(&sql[from..]);
}

#[cfg(test)]
mod tests {
    use super::super::Db;
    use super::super::native::Fields;
    use super::*;

    /// A migrated SQLite file: one writing connection, read-only readers.
    async fn sqlite() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/x.db", dir.path().display()), 2).await.unwrap();
        db.migrate().await.unwrap();
        (dir, db)
    }

    /// A write of `persona`'s cursor, as a statement of `script`.
    fn write_cursor(script: &mut Script, persona: &str) {
        script
            .statement("INSERT INTO cursors (persona, platform, cursor, updated_at) VALUES ($1, 'local', '1', 0)")
            .bind(persona);
    }

    /// What the readers (other connections) see of cursor `persona`.
    async fn committed(db: &Db, persona: &str) -> bool {
        db.cursor(persona, "local").await.unwrap().is_some()
    }

    #[tokio::test]
    async fn an_own_transaction_commits_in_its_script_and_rolls_back_on_an_error() {
        let (_dir, db) = sqlite().await;
        let transaction = |persona: &str| {
            let mut script = Script::new("SQLite");
            script.begin();
            write_cursor(&mut script, persona);
            script.commit();
            script
        };
        assert_eq!(transaction("a").into_calls().unwrap().len(), 1, "BEGIN and COMMIT ride in the script's one call");
        let mut tx = OwnTransaction::new(db.write().await.unwrap());
        let done = transaction("a").execute(tx.conn()).await;
        tx.finish(done).await.unwrap();
        assert!(committed(&db, "a").await, "committed");

        // A statement fails after BEGIN and a write: the write is rolled back and the connection
        // goes back with no transaction open.
        let mut tx = OwnTransaction::new(db.write().await.unwrap());
        let mut script = Script::new(tx.conn().backend_name());
        script.begin();
        write_cursor(&mut script, "b");
        script.statement("INSERT INTO no_such_table VALUES (1)");
        script.commit();
        let failed = script.execute(tx.conn()).await;
        assert!(tx.finish(failed).await.is_err());
        assert!(!committed(&db, "b").await, "rolled back");
        // The one writing connection autocommits again: a plain write is seen by the readers.
        db.store_inbound(&[], Some(("c", "local", "1"))).await.unwrap();
        assert!(committed(&db, "c").await, "the next write committed on its own");
        db.close().await;
    }

    /// Several statements run atomically are all or none; one commits alone.
    #[tokio::test]
    async fn statements_run_atomically_commit_together_or_not_at_all() {
        let (_dir, db) = sqlite().await;
        let mut script = Script::new("SQLite");
        write_cursor(&mut script, "a");
        write_cursor(&mut script, "b");
        script.fetch_all_atomically(db.write().await.unwrap()).await.unwrap();
        assert!(committed(&db, "a").await && committed(&db, "b").await, "both committed");

        let mut script = Script::new("SQLite");
        write_cursor(&mut script, "c");
        script.statement("INSERT INTO no_such_table VALUES (1)");
        assert!(script.fetch_all_atomically(db.write().await.unwrap()).await.is_err());
        assert!(!committed(&db, "c").await, "the first statement rolled back with the second");

        let mut script = Script::new("SQLite");
        write_cursor(&mut script, "d");
        script.fetch_all_atomically(db.write().await.unwrap()).await.unwrap();
        assert!(committed(&db, "d").await, "one statement committed alone");
        db.close().await;
    }

    #[test]
    fn only_an_all_or_nothing_script_on_sqlite_writes_or_fail() {
        assert_eq!(Script::new("SQLite").or_fail(), "", "a statement that commits alone keeps its undo");
        assert_eq!(Script::new("SQLite").begin().or_fail(), "OR FAIL ");
        assert_eq!(Script::new("SQLite").all_or_nothing().or_fail(), "OR FAIL ");
        assert_eq!(Script::new("PostgreSQL").begin().or_fail(), "", "SQLite's clause only");
    }

    /// A multi-row `OR FAIL` insert that fails at its second row keeps its first only until the
    /// own transaction rolls back: nothing of the script is left, as with SQLite's default, on
    /// the lease's native connection and through sqlx (one joined call) alike.
    #[tokio::test]
    async fn a_failing_or_fail_statement_leaves_nothing_of_its_own_transaction() {
        for native in [false, true] {
            // A new database each time: a lease that never ran a script has no native
            // connection, so its own transaction rolls back on sqlx's.
            let (_dir, db) = sqlite().await;
            let mut script = Script::new("SQLite");
            script.begin();
            write_cursor(&mut script, "before");
            let fail = script.or_fail();
            script
                .statement(format!(
                    "INSERT {fail}INTO cursors (persona, platform, cursor, updated_at) VALUES ($1, 'local', '1', 0), \
                     ($2, 'local', NULL, 0)"
                ))
                .bind("first")
                .bind("second");
            script.commit();
            let mut tx = OwnTransaction::new(db.write().await.unwrap());
            let failed = if native {
                script.execute(tx.conn()).await
            } else {
                script.fetch_all(&mut **tx.conn()).await.map(drop)
            };
            let err = tx.finish(failed).await.expect_err("NOT NULL refuses the second row").to_string();
            assert!(err.contains("NOT NULL"), "{native}: {err}");
            for persona in ["before", "first"] {
                assert!(!committed(&db, persona).await, "{native}: {persona} rolled back");
            }
            // The connection is out of the transaction: the next write commits on its own.
            db.store_inbound(&[], Some(("after", "local", "1"))).await.unwrap();
            assert!(committed(&db, "after").await, "{native}");
            db.close().await;
        }
    }

    #[tokio::test]
    async fn an_own_transaction_dropped_half_way_leaves_no_transaction_open() {
        let (_dir, db) = sqlite().await;
        let mut tx = OwnTransaction::new(db.write().await.unwrap());
        let mut script = Script::new(tx.conn().backend_name());
        script.begin();
        write_cursor(&mut script, "a");
        script.execute(tx.conn()).await.unwrap();
        // Cancelled between its BEGIN and its COMMIT.
        drop(tx);
        assert!(!committed(&db, "a").await, "never committed");
        // Had the connection gone back mid-transaction, this write would sit in it,
        // unseen by the readers.
        db.store_inbound(&[], Some(("b", "local", "1"))).await.unwrap();
        assert!(committed(&db, "b").await, "the next write committed on its own");
        assert!(!committed(&db, "a").await, "and did not commit the abandoned one");
        db.close().await;
    }

    #[test]
    fn parameters_of_a_joined_statement_follow_the_ones_before() {
        let mut text = String::from("UPDATE t SET a = $1 WHERE id = $2");
        push_shifted(&mut text, "INSERT INTO u VALUES ($1, $2), ($3, 'x')", 2);
        assert_eq!(text, "UPDATE t SET a = $1 WHERE id = $2INSERT INTO u VALUES ($3, $4), ($5, 'x')");
        let mut text = String::new();
        push_shifted(&mut text, "SELECT $10, $9", 91);
        assert_eq!(text, "SELECT $101, $100");
    }

    #[test]
    fn parameters_numbered_in_order_are_told_from_the_others() {
        for sql in [
            "SELECT 1",
            "SELECT ?",
            "SELECT $1",
            "INSERT INTO u VALUES ($1, $2), ($3, 'x')",
            "SELECT $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11",
        ] {
            assert!(numbered_in_order(sql), "{sql}");
        }
        // Out of order, repeated, not from $1, or a `$` without digits.
        for sql in ["SELECT $2, $1", "SELECT $1 WHERE a = $1", "SELECT $2", "SELECT $1, $3", "SELECT $1, $"] {
            assert!(!numbered_in_order(sql), "{sql}");
        }
    }

    #[test]
    fn parameters_in_order_are_written_anonymous_and_others_stay_named() {
        let anonymous = |sql: &str| anonymous(sql.to_owned());
        assert_eq!(anonymous("INSERT INTO u VALUES ($1, $2), ($3, 'x')"), "INSERT INTO u VALUES (?, ?), (?, 'x')");
        let eleven = (1..=11).map(|n| format!("${n}")).collect::<Vec<_>>().join(",");
        assert_eq!(anonymous(&format!("SELECT {eleven}")), format!("SELECT {}", ["?"; 11].join(",")));
        assert_eq!(anonymous("SELECT 1"), "SELECT 1");
        // Out of order, repeated, or not from $1: each argument goes where its number says.
        for sql in ["SELECT $2, $1", "SELECT $1 WHERE a = $1", "SELECT $2", "SELECT $1, $3"] {
            assert_eq!(anonymous(sql), sql);
        }
    }

    #[tokio::test]
    async fn a_script_binds_every_argument_where_its_statement_numbered_it() {
        let (_dir, db) = sqlite().await;
        let insert = "INSERT INTO cursors (persona, platform, cursor, updated_at) VALUES ";
        let mut conn = db.write().await.unwrap();
        // Joined, every parameter in order: the text goes to SQLite with `?` parameters.
        let in_order = || {
            let mut script = Script::new("SQLite");
            script.statement(format!("{insert}($1, 'local', $2, 0)")).bind("a").bind("1");
            script.statement(format!("{insert}($1, 'local', $2, 0), ($3, 'local', $4, 0)"));
            script.bind("b").bind("2").bind("c").bind("3");
            script
        };
        let calls = in_order().into_calls().unwrap();
        assert_eq!(calls.len(), 1);
        assert!(!calls[0].0.contains('$'), "{}", calls[0].0);
        // Through sqlx (the lease's sqlx connection), then on the lease (its native connection).
        in_order().execute(&mut *conn).await.unwrap();
        // Joined with statements that number their parameters out of order, or repeat one: all
        // stay named.
        let out_of_order = |first: &str, second: &str, third: &str| {
            let mut script = Script::new("SQLite");
            script.statement(format!("{insert}($1, 'local', $2, 0)")).bind(first).bind("4");
            script.statement(format!("{insert}($2, 'local', $1, 0)")).bind("5").bind(second);
            script.statement(format!("{insert}($1, 'local', $1 || '6', 0)")).bind(third);
            script
        };
        out_of_order("d", "e", "f").execute(&mut *conn).await.unwrap();
        // Natively: the rows sqlx wrote renamed, then written again.
        let mut native = Script::new("SQLite");
        native.statement("UPDATE cursors SET persona = 'n' || persona WHERE persona IN ($1, $2, $3)");
        native.bind("a").bind("b").bind("c");
        native.execute(&mut conn).await.unwrap();
        in_order().execute(&mut conn).await.unwrap();
        out_of_order("nd", "ne", "nf").execute(&mut conn).await.unwrap();
        drop(conn);
        let cursors = db.all_cursors().await.unwrap();
        assert_eq!(cursors.len(), 12, "{cursors:?}");
        for (persona, cursor) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5"), ("f", "f6")] {
            for persona in [persona.to_owned(), format!("n{persona}")] {
                let expected = if persona == "nf" { "nf6" } else { cursor };
                assert_eq!(cursors.get(&(persona, "local".to_owned())).map(String::as_str), Some(expected));
            }
        }
        db.close().await;
    }

    /// On the writer's lease a script runs on the native connection, beside sqlx's: a transaction
    /// it leaves open there is not the sqlx connection's.
    #[tokio::test]
    async fn the_writers_scripts_run_on_its_native_connection() {
        let (_dir, db) = sqlite().await;
        let mut conn = db.write().await.unwrap();
        let mut script = Script::new(conn.backend_name());
        script.begin();
        write_cursor(&mut script, "a");
        script.execute(&mut conn).await.unwrap();
        let count = "SELECT COUNT(*) AS n FROM cursors";
        let through_sqlx: i64 = sqlx::Row::get(&sqlx::query(count).fetch_one(&mut *conn).await.unwrap(), 0);
        let mut script = Script::new(conn.backend_name());
        script.statement(count);
        let native: i64 = script.fetch_all(&mut conn).await.unwrap()[0].field("n").unwrap();
        assert_eq!((through_sqlx, native), (0, 1), "sqlx's connection does not see the native transaction");
        conn.rollback().await.unwrap();
        drop(conn);
        assert!(!committed(&db, "a").await, "rolled back on the native connection");
        db.close().await;
    }

    /// A reader's lease runs scripts on its own native connection, which refuses writes.
    #[tokio::test]
    async fn a_readers_scripts_run_natively_and_refuse_writes() {
        let (_dir, db) = sqlite().await;
        db.store_inbound(&[], Some(("a", "local", "1"))).await.unwrap();
        let mut reader = db.read().await.unwrap();
        let mut read = Script::new(reader.backend_name());
        read.statement("SELECT cursor FROM cursors WHERE persona = $1").bind("a");
        let rows = read.fetch_all(&mut reader).await.unwrap();
        assert!(matches!(rows[..], [Fetched::Native(_)]), "read on the native connection");
        assert_eq!(rows[0].field::<String, _>("cursor").unwrap(), "1");
        let mut write = Script::new(reader.backend_name());
        write_cursor(&mut write, "b");
        let refused = write.execute(&mut reader).await.expect_err("a reader refuses writes");
        assert!(refused.to_string().contains("readonly"), "{refused}");
        drop(reader);
        assert!(!committed(&db, "b").await);
        db.close().await;
    }

    /// A native row keeps a text's bytes as SQLite gave them and checks them as UTF-8 when it
    /// is decoded: a text that is not UTF-8 is an error as a `String`, not when the row is read.
    #[tokio::test]
    async fn a_native_text_is_checked_as_utf8_when_decoded() {
        let (_dir, db) = sqlite().await;
        let mut conn = db.write().await.unwrap();
        let mut script = Script::new("SQLite");
        script.statement("SELECT CAST(x'ff61' AS TEXT) AS bad, $1 AS good").bind("ü");
        let rows = script.fetch_all(&mut conn).await.unwrap();
        assert!(matches!(rows[..], [Fetched::Native(_)]));
        assert_eq!(rows[0].field::<String, _>("good").unwrap(), "ü");
        let err = rows[0].field::<String, _>("bad").expect_err("not UTF-8");
        assert!(matches!(err, sqlx::Error::ColumnDecode { .. }), "{err}");
        drop(conn);
        db.close().await;
    }

    /// A row reads the same from the native connection as through sqlx, for every type the store
    /// decodes, NULLs included.
    #[tokio::test]
    async fn a_row_reads_the_same_natively_and_through_sqlx() {
        let (_dir, db) = sqlite().await;
        let mut conn = db.write().await.unwrap();
        let select = || {
            let mut script = Script::new("SQLite");
            script
                .statement("SELECT $1 AS i, $2 AS t, $3 AS b, $4 AS f, $5 AS blob, $6 AS none, $7 AS yes")
                .bind(-7_i64)
                .bind("ünïcode")
                .bind(true)
                .bind(2.5_f64)
                .bind(&[0_u8, 1, 255][..])
                .bind(None::<&str>)
                .bind(Some(1_i64));
            script
        };
        let through_sqlx = select().fetch_all(&mut *conn).await.unwrap();
        let native = select().fetch_all(&mut conn).await.unwrap();
        assert!(matches!(through_sqlx[0], Fetched::Any(_)) && matches!(native[0], Fetched::Native(_)));
        for row in [&through_sqlx[0], &native[0]] {
            assert_eq!(row.field::<i64, _>("i").unwrap(), -7);
            assert_eq!(row.field::<String, _>(1).unwrap(), "ünïcode");
            assert_eq!(row.field::<i64, _>("b").unwrap(), 1, "a bool is bound as an integer");
            assert_eq!(row.field::<f64, _>("f").unwrap(), 2.5);
            assert_eq!(row.field::<Vec<u8>, _>("blob").unwrap(), vec![0, 1, 255]);
            assert_eq!(row.field::<Option<String>, _>("none").unwrap(), None);
            assert_eq!(row.field::<Option<i64>, _>("yes").unwrap(), Some(1));
            assert!(row.field::<i64, _>("missing").is_err(), "a column it does not have");
            assert!(row.field::<i64, _>("t").is_err(), "text is not an integer");
        }
        drop(conn);
        db.close().await;
    }

    /// What the test table's one-row inserts return: the new id, two columns and a note as
    /// bound, and a parameter only the clause names.
    static RETURNING_SLOT: Returning = Returning::new(
        " RETURNING id, k, n, note, CAST($4 AS BIGINT) AS slot",
        &[
            ("id", native::Returned::Rowid),
            ("k", native::Returned::Parameter(0)),
            ("n", native::Returned::Parameter(1)),
            ("note", native::Returned::Parameter(2)),
            ("slot", native::Returned::Parameter(3)),
        ],
        1,
    );

    /// [`RETURNING_SLOT`] without the slot, for inserts of several rows.
    static RETURNING_ROWS: Returning = Returning::new(
        " RETURNING id, k, n, note",
        &[
            ("id", native::Returned::Rowid),
            ("k", native::Returned::Parameter(0)),
            ("n", native::Returned::Parameter(1)),
            ("note", native::Returned::Parameter(2)),
        ],
        0,
    );

    /// A row as `(id, k, n, note)`.
    fn returned(row: &Fetched) -> (i64, String, i64, Option<String>) {
        (row.field("id").unwrap(), row.field("k").unwrap(), row.field("n").unwrap(), row.field("note").unwrap())
    }

    /// A one-row insert on the native connection runs without its `RETURNING` clause and
    /// answers the row as the clause does through sqlx: the new id and the values as stored.
    /// A conflict, or a row a trigger skips, answers nothing; several rows run the clause; a
    /// statement said to be of one row that inserts two is an error.
    #[tokio::test]
    async fn a_one_row_insert_returns_its_row_natively_as_returning_does() {
        let (_dir, db) = sqlite().await;
        let mut conn = db.write().await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT NOT NULL UNIQUE, n INTEGER NOT NULL, note TEXT); \
             CREATE TRIGGER t_skip BEFORE INSERT ON t WHEN NEW.k = 'skip' BEGIN SELECT RAISE(IGNORE); END;",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
        let insert = |k: &str, n: i64, note: Option<&str>, slot: i64| {
            let mut script = Script::new("SQLite");
            script
                .statement("INSERT INTO t (k, n, note) VALUES ($1, $2, $3) ON CONFLICT (k) DO NOTHING")
                .returning(&RETURNING_SLOT, 1)
                .bind(k)
                .bind(n)
                .bind(note)
                .bind(slot);
            script
        };
        let native = insert("a", 1, None, 7).fetch_all(&mut conn).await.unwrap();
        let through_sqlx = insert("b", 2, Some("ü"), 8).fetch_all(&mut *conn).await.unwrap();
        assert!(matches!(native[..], [Fetched::Native(_)]) && matches!(through_sqlx[..], [Fetched::Any(_)]));
        let stored: Vec<(i64, String, i64, Option<String>)> =
            sqlx::query_as("SELECT id, k, n, note FROM t ORDER BY id").fetch_all(&mut *conn).await.unwrap();
        assert_eq!(vec![returned(&native[0]), returned(&through_sqlx[0])], stored);
        assert_eq!(native[0].field::<i64, _>("slot").unwrap(), 7);
        assert_eq!(through_sqlx[0].field::<i64, _>("slot").unwrap(), 8);

        // Nothing inserted, nothing returned: a key stored before, a row the trigger skips.
        assert!(insert("a", 3, None, 0).fetch_all(&mut conn).await.unwrap().is_empty());
        assert!(insert("skip", 4, None, 0).fetch_all(&mut conn).await.unwrap().is_empty());
        assert!(insert("skip", 4, None, 0).fetch_all(&mut *conn).await.unwrap().is_empty());

        // Several rows: the clause runs, natively too.
        let rows = |keys: [&str; 2], said: usize| {
            let mut script = Script::new("SQLite");
            script
                .statement("INSERT INTO t (k, n, note) VALUES ($1, $2, $3), ($4, $5, $6)")
                .returning(&RETURNING_ROWS, said);
            for (n, k) in keys.into_iter().enumerate() {
                script.bind(k).bind(n as i64).bind(None::<&str>);
            }
            script
        };
        let two = rows(["c", "d"], 2).fetch_all(&mut conn).await.unwrap();
        let keys: Vec<String> = two.iter().map(|row| returned(row).1).collect();
        assert_eq!(keys, ["c", "d"]);
        assert!(two.iter().all(|row| returned(row).0 > 2));
        let refused = rows(["e", "f"], 1).fetch_all(&mut conn).await;
        assert!(refused.is_err(), "two rows inserted by a statement said to be of one");
        drop(conn);
        db.close().await;
    }

    #[test]
    fn sqlite_joins_small_statements_and_postgres_never_does() {
        let build = |backend: &str, rows: usize| {
            let mut script = Script::new(backend);
            for _ in 0..3 {
                script.statement(super::super::value_rows("(?, ?)", rows));
                for n in 0..2 * rows {
                    script.bind(n as i64);
                }
            }
            script
        };
        assert_eq!(build("SQLite", 1).into_calls().unwrap().len(), 1);
        assert_eq!(build("PostgreSQL", 1).into_calls().unwrap().len(), 3);
        // Past the limit (three statements of 2 × rows parameters), each statement is a call.
        assert_eq!(build("SQLite", JOIN_UP_TO_PARAMETERS / 6).into_calls().unwrap().len(), 1);
        assert_eq!(build("SQLite", JOIN_UP_TO_PARAMETERS / 6 + 1).into_calls().unwrap().len(), 3);
    }
}

//! Several statements sent to the database in one call where the engine allows it.
//!
//! sqlx runs SQLite on a thread of its own, so every statement is a hop to that thread and back;
//! on a small virtual machine the two thread wake-ups cost more than a small insert. SQLite runs
//! a text of several statements in one call, binding `$N` across the whole text, so a small
//! [`Script`] joins its statements into one text (renumbering each one's parameters after the
//! ones before); in a transaction they still commit together, outside one each commits alone.
//! Postgres's extended protocol takes one statement with parameters a call, so there each
//! statement is its own call, as if run one after another.

use sqlx::AnyConnection;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Arguments, Encode, Type};

use super::StoreResult;

/// Statements are joined only while the script holds at most this many parameters. A joined text
/// is one entry in the connection's statement cache (100 entries), so only small scripts are
/// joined: the usual ones below overload, where a hop a statement is most of their cost, and
/// whose texts are few (up to 128: a poll of up to 15 mentions with its cursor, an enqueue of one
/// or two replies, a mark-sent of up to six rows; about 40 texts besides the other statements). A
/// larger batch runs its statements one by one, each of the few shapes of its runs (see
/// [`super::runs`]), and shares those hops among its rows.
const JOIN_UP_TO_PARAMETERS: usize = 128;

/// Statements to run in order on one connection (usually in a caller's transaction). Each
/// statement's SQL numbers its parameters `$1, $2, …` in the order they are then bound with
/// [`Script::bind`].
pub(super) struct Script {
    /// Each statement with its arguments.
    statements: Vec<(String, AnyArguments)>,
    /// All the statements in one text with all the arguments, while the script may be joined.
    joined: Option<(String, AnyArguments)>,
    /// The first error of a bind, returned by the run.
    bind_error: Option<sqlx::Error>,
}

impl Script {
    /// A script for a connection of `backend` (`AnyConnection::backend_name`).
    pub fn new(backend: &str) -> Self {
        let joined =
            (backend == <sqlx::Sqlite as sqlx::Database>::NAME).then(|| (String::new(), AnyArguments::default()));
        Script { statements: Vec::new(), joined, bind_error: None }
    }

    /// Starts a statement.
    pub fn statement(&mut self, sql: &str) -> &mut Self {
        if let Some((text, args)) = &mut self.joined {
            if !text.is_empty() {
                text.push_str(";\n");
            }
            push_shifted(text, sql, args.len());
        }
        self.statements.push((sql.to_owned(), AnyArguments::default()));
        self
    }

    /// Binds the current statement's next parameter.
    pub fn bind<'t, T: Encode<'t, sqlx::Any> + Type<sqlx::Any> + Copy>(&mut self, value: T) -> &mut Self {
        let (_, args) = self.statements.last_mut().expect("a statement is started before its parameters");
        let mut added = args.add(value);
        if let Some((_, args)) = &mut self.joined {
            added = added.and_then(|()| args.add(value));
            if args.len() > JOIN_UP_TO_PARAMETERS {
                self.joined = None;
            }
        }
        if let Err(err) = added
            && self.bind_error.is_none()
        {
            self.bind_error = Some(sqlx::Error::Encode(err));
        }
        self
    }

    /// Runs every statement, in order.
    pub async fn execute(self, conn: &mut AnyConnection) -> StoreResult<()> {
        self.fetch_all(conn).await.map(drop)
    }

    /// Runs every statement, in order, and answers the rows they returned, in order.
    pub async fn fetch_all(mut self, conn: &mut AnyConnection) -> StoreResult<Vec<AnyRow>> {
        if let Some(err) = self.bind_error.take() {
            return Err(err.into());
        }
        let mut rows = Vec::new();
        for (sql, args) in self.into_calls() {
            rows.extend(sqlx::query_with(sqlx::AssertSqlSafe(sql), args).fetch_all(&mut *conn).await?);
        }
        Ok(rows)
    }

    /// The calls to make: the joined text when there is one for several statements, else each
    /// statement.
    fn into_calls(self) -> Vec<(String, AnyArguments)> {
        match self.joined {
            Some(joined) if self.statements.len() > 1 => vec![joined],
            _ => self.statements,
        }
    }
}

/// Appends `sql` to `text` with every parameter `$N` written `$(N + offset)`. The SQL is ours and
/// has no `$` but its parameters.
fn push_shifted(text: &mut String, sql: &str, offset: usize) {
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => text.push_str(&(n + offset).to_string()),
            Err(_) => text.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    text.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn sqlite_joins_small_statements_and_postgres_never_does() {
        let build = |backend: &str, rows: usize| {
            let mut script = Script::new(backend);
            for _ in 0..3 {
                script.statement(&super::super::value_rows("(?, ?)", rows));
                for n in 0..2 * rows {
                    script.bind(n as i64);
                }
            }
            script
        };
        assert_eq!(build("SQLite", 1).into_calls().len(), 1);
        assert_eq!(build("PostgreSQL", 1).into_calls().len(), 3);
        // Past the limit (three statements of 2 × rows parameters), each statement is a call.
        assert_eq!(build("SQLite", JOIN_UP_TO_PARAMETERS / 6).into_calls().len(), 1);
        assert_eq!(build("SQLite", JOIN_UP_TO_PARAMETERS / 6 + 1).into_calls().len(), 3);
    }
}

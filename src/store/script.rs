//! Several statements of one transaction sent to the database together where the engine allows.
//!
//! sqlx runs SQLite on a thread of its own, so every statement is a hop to that thread and back;
//! on a small virtual machine the two thread wake-ups cost more than a small insert. SQLite runs
//! a text of several statements in one call, binding `$N` across the whole text, so a
//! [`Script`] joins its statements into one text (renumbering each one's parameters after the
//! ones before). Postgres's extended protocol takes one statement with parameters a call, so
//! there each statement is its own call, as if run one after another.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Arguments, Encode, Type};

use super::StoreResult;

/// A call stops taking more statements once it holds this many parameters: the calls of a large
/// batch are then its statements of runs (see [`super::runs`]), whose few shapes stay in the
/// statement cache, and a call stays far below SQLite's limit of 32,766 parameters. A joined text
/// is one entry in the cache too, so only small batches (the usual ones below overload, where a
/// hop a statement is most of the cost) are joined.
const JOIN_UP_TO_PARAMETERS: usize = 256;

/// Statements to run in order in a caller's transaction. Each statement's SQL numbers its
/// parameters `$1, $2, …` in the order they are then bound with [`Script::bind`].
pub(super) struct Script {
    join: bool,
    /// The calls: SQL text and its arguments.
    calls: Vec<(String, AnyArguments)>,
    /// The first error of a bind, returned by the run.
    bind_error: Option<sqlx::Error>,
}

impl Script {
    /// A script for a connection of `backend` (`AnyConnection::backend_name`).
    pub fn new(backend: &str) -> Self {
        Script { join: backend == "SQLite", calls: Vec::new(), bind_error: None }
    }

    /// Starts a statement.
    pub fn statement(&mut self, sql: &str) -> &mut Self {
        match self.calls.last_mut() {
            Some((text, args)) if self.join && args.len() < JOIN_UP_TO_PARAMETERS => {
                text.push_str(";\n");
                push_shifted(text, sql, args.len());
            }
            _ => self.calls.push((sql.to_owned(), AnyArguments::default())),
        }
        self
    }

    /// Binds the current statement's next parameter.
    pub fn bind<'t, T: Encode<'t, sqlx::Any> + Type<sqlx::Any>>(&mut self, value: T) -> &mut Self {
        let (_, args) = self.calls.last_mut().expect("a statement is started before its parameters");
        if let Err(err) = args.add(value)
            && self.bind_error.is_none()
        {
            self.bind_error = Some(sqlx::Error::Encode(err));
        }
        self
    }

    /// Runs every statement, in order.
    pub async fn execute(self, tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> StoreResult<()> {
        self.fetch_all(tx).await.map(drop)
    }

    /// Runs every statement, in order, and answers the rows they returned, in order.
    pub async fn fetch_all(self, tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> StoreResult<Vec<AnyRow>> {
        if let Some(err) = self.bind_error {
            return Err(err.into());
        }
        let mut rows = Vec::new();
        for (sql, args) in self.calls {
            rows.extend(sqlx::query_with(sqlx::AssertSqlSafe(sql), args).fetch_all(&mut **tx).await?);
        }
        Ok(rows)
    }

    /// Calls this script makes.
    #[cfg(test)]
    fn calls(&self) -> usize {
        self.calls.len()
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
        assert_eq!(build("SQLite", 1).calls(), 1);
        assert_eq!(build("PostgreSQL", 1).calls(), 3);
        // A call past the limit takes no more statements.
        assert_eq!(build("SQLite", JOIN_UP_TO_PARAMETERS / 2).calls(), 3);
    }
}

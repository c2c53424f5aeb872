//! Memory queries: what each persona said and heard, with its embedding (little-endian `f32`s)
//! and the model that made it. Vectors of different models are never compared: search loads only
//! the current model's, and the rest are embedded again.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::native::{Fields, Returned, Returning};
use super::script::Script;
use super::{Db, StoreResult, now_ms, sql_limit};

/// What a memory records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemoryKind {
    /// An original post of the persona.
    Post,
    /// A reply of the persona.
    Reply,
    /// A message someone sent the persona.
    Inbound,
    /// A fact about the persona, from its file (bio, voice, topics, example posts).
    Fact,
    /// A trade the persona's Trader made (paper or live), so the persona can talk about it.
    Trade,
}

impl MemoryKind {
    pub const ALL: [MemoryKind; 5] =
        [MemoryKind::Post, MemoryKind::Reply, MemoryKind::Inbound, MemoryKind::Fact, MemoryKind::Trade];

    pub fn as_str(self) -> &'static str {
        match self {
            MemoryKind::Post => "post",
            MemoryKind::Reply => "reply",
            MemoryKind::Inbound => "inbound",
            MemoryKind::Fact => "fact",
            MemoryKind::Trade => "trade",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

#[derive(Debug, Clone)]
pub struct NewMemory {
    pub persona: String,
    pub platform: String,
    pub kind: MemoryKind,
    pub conversation: Option<String>,
    pub author: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryRow {
    pub id: i64,
    pub persona: String,
    pub kind: MemoryKind,
    pub platform: String,
    pub conversation: Option<String>,
    pub author: String,
    pub text: String,
    pub created_at: i64,
}

impl MemoryRow {
    fn from_row(row: &impl Fields) -> StoreResult<Self> {
        Ok(Self {
            id: row.field("id")?,
            persona: row.field("persona")?,
            kind: MemoryKind::parse(&row.field::<String, _>("kind")?).unwrap_or(MemoryKind::Inbound),
            platform: row.field("platform")?,
            conversation: row.field("conversation")?,
            author: row.field("author")?,
            text: row.field("text")?,
            created_at: row.field("created_at")?,
        })
    }
}

pub(super) const COLUMNS: &str = "id, persona, kind, platform, conversation, author, text, created_at";

/// What [`Db::recall_memories`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recalled {
    /// The persona's latest posts, newest first.
    pub recent: Vec<MemoryRow>,
    /// The latest memories of the conversation, newest first.
    pub conversation: Vec<MemoryRow>,
    /// The memories asked for by id, in id order.
    pub by_id: Vec<MemoryRow>,
}

/// A memory's vector as stored, with what search filters on.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVector {
    pub row: MemoryRow,
    pub vector: Vec<f32>,
}

/// A memory for [`Db::insert_memories`], with its vector of a model (model, vector) when known.
pub type ToInsert<'a> = (&'a NewMemory, Option<(&'a str, &'a [f32])>);

/// `f32`s as little-endian bytes.
pub fn encode_vector(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The inverse of [`encode_vector`]; `None` for a length that is not a multiple of four.
pub fn decode_vector(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

impl Db {
    /// Stores several memories, each with its vector of a model when known, in one statement a
    /// run (group commit); several runs are one transaction, and on SQLite a small group (up to
    /// 14 memories) is one call, its `BEGIN` and `COMMIT` included (see [`Script`]). Returns their
    /// rows in the order given.
    pub async fn insert_memories(&self, memories: &[ToInsert<'_>]) -> StoreResult<Vec<MemoryRow>> {
        if memories.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let encoded: Vec<(&ToInsert<'_>, Option<Vec<u8>>)> =
            memories.iter().map(|memory| (memory, memory.1.map(|(_, vector)| encode_vector(vector)))).collect();
        let runs = super::runs(&encoded);
        let conn = self.write().await?;
        let mut script = Script::new(conn.backend_name());
        if runs.len() > 1 {
            // Several statements: a transaction of the script's own, so they can be `OR FAIL`.
            script.begin();
        }
        for run in runs {
            insert_memory_run(&mut script, run, now);
        }
        // Several runs (see `runs`) are one transaction: all stored, or none.
        let mut rows = script
            .fetch_all_atomically(conn)
            .await?
            .iter()
            .map(MemoryRow::from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        // Statements number their rows in the order of their VALUES, one after the other;
        // RETURNING has no order.
        rows.sort_by_key(|row| row.id);
        Ok(rows)
    }

    /// The persona's facts that are not stored yet are stored (platform `persona`); returns the
    /// new ones.
    pub async fn ensure_facts(&self, persona: &str, facts: &[String]) -> StoreResult<Vec<MemoryRow>> {
        self.ensure_facts_of(&[(persona, facts)]).await
    }

    /// [`Db::ensure_facts`] for several personas at once: one query for the facts they have, one
    /// multi-row insert (a few with many facts) for those they lack; facts already stored are not
    /// written again. Returns the new ones.
    pub async fn ensure_facts_of(&self, personas: &[(&str, &[String])]) -> StoreResult<Vec<MemoryRow>> {
        /// Rows per insert: 6 values each, well under SQLite's and Postgres's limits on parameters.
        const ROWS_PER_INSERT: usize = 500;
        if personas.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=personas.len()).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT persona, text FROM memories WHERE kind = 'fact' AND persona IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (persona, _) in personas {
            query = query.bind(*persona);
        }
        let mut known: std::collections::HashSet<(String, String)> = std::collections::HashSet::new();
        let found = query.fetch_all(&mut *self.read().await?).await?;
        for row in found {
            known.insert((row.try_get(0)?, row.try_get(1)?));
        }
        let mut missing: Vec<(&str, &str)> = Vec::new();
        for (persona, facts) in personas {
            for fact in facts.iter() {
                // A fact listed twice is stored once.
                if known.insert(((*persona).to_owned(), fact.clone())) {
                    missing.push((persona, fact));
                }
            }
        }
        let mut added = Vec::with_capacity(missing.len());
        for chunk in missing.chunks(ROWS_PER_INSERT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|row| {
                    let n = row * 4;
                    format!("(${}, 'persona', 'fact', NULL, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4)
                })
                .collect();
            let sql = format!(
                "INSERT INTO memories (persona, platform, kind, conversation, author, text, created_at) VALUES {} \
                 RETURNING {COLUMNS}",
                values.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            let now = now_ms();
            for (persona, fact) in chunk {
                query = query.bind(*persona).bind(*persona).bind(*fact).bind(now);
            }
            let rows = query.fetch_all(&mut *self.write().await?).await?;
            for row in &rows {
                added.push(MemoryRow::from_row(row)?);
            }
        }
        added.sort_by_key(|row| row.id);
        Ok(added)
    }

    /// The persona's latest own public posts, newest first; or, given a `(platform,
    /// conversation)`, that conversation's memories of every kind. Replies are only recalled
    /// within their own conversation: what a persona told one person (a Discord DM) never
    /// reaches another person's prompt.
    pub async fn recent_memories(
        &self,
        persona: &str,
        conversation: Option<(&str, &str)>,
        limit: i64,
    ) -> StoreResult<Vec<MemoryRow>> {
        let rows = match conversation {
            Some((platform, conversation)) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM memories \
                     WHERE persona = $1 AND platform = $2 AND conversation = $3 ORDER BY id DESC {}",
                    sql_limit(limit)
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(persona)
                    .bind(platform)
                    .bind(conversation)
                    .fetch_all(&mut *self.read().await?)
                    .await?
            }
            None => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM memories WHERE persona = $1 AND kind = 'post' ORDER BY id DESC {}",
                    sql_limit(limit)
                );
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(persona).fetch_all(&mut *self.read().await?).await?
            }
        };
        rows.iter().map(MemoryRow::from_row).collect()
    }

    /// What recall reads, in one query: the persona's latest `recent` posts and the latest
    /// `in_conversation` memories of `conversation` (both newest first, as
    /// [`Db::recent_memories`]), and the memories with these `ids` (in id order, each once,
    /// missing ones skipped, as [`Db::memories_by_ids`]).
    pub async fn recall_memories(
        &self,
        persona: &str,
        limits: (i64, i64),
        conversation: Option<(&str, &str)>,
        ids: &[i64],
    ) -> StoreResult<Recalled> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        // A script, so on SQLite it runs on the native connection (see `native`), the writer's
        // when it is free (see `Db::read_hot`).
        let mut conn = self.read_hot().await?;
        let mut query = Script::new(conn.backend_name());
        query.statement(recall_sql(limits, conversation.is_some(), ids.len())).bind(persona);
        if let Some((platform, conversation)) = conversation {
            query.bind(persona).bind(platform).bind(conversation);
        }
        for id in &ids {
            query.bind(*id);
        }
        let mut recalled = Recalled::default();
        let found = query.fetch_all(&mut conn).await?;
        drop(conn);
        for row in found {
            let part: i64 = row.field("part")?;
            let memory = MemoryRow::from_row(&row)?;
            match part {
                0 => recalled.recent.push(memory),
                1 => recalled.conversation.push(memory),
                _ => recalled.by_id.push(memory),
            }
        }
        // The parts' orders, put here rather than by the query (see `recall_sql`): a few dozen
        // rows at most.
        recalled.recent.sort_unstable_by_key(|memory| std::cmp::Reverse(memory.id));
        recalled.conversation.sort_unstable_by_key(|memory| std::cmp::Reverse(memory.id));
        recalled.by_id.sort_unstable_by_key(|memory| memory.id);
        Ok(recalled)
    }

    /// Memories by id, in id order (missing ids are skipped).
    pub async fn memories_by_ids(&self, ids: &[i64]) -> StoreResult<Vec<MemoryRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
        let sql = format!("SELECT {COLUMNS} FROM memories WHERE id IN ({}) ORDER BY id", placeholders.join(", "));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(*id);
        }
        query.fetch_all(&mut *self.read().await?).await?.iter().map(MemoryRow::from_row).collect()
    }

    /// Records the vectors of `model` for these memories, in one transaction.
    pub async fn set_embeddings(&self, model: &str, vectors: &[(i64, Vec<f32>)]) -> StoreResult<()> {
        const UPDATE: &str = "UPDATE memories SET embedding = $1, embedding_model = $2 WHERE id = $3";
        if let [(id, vector)] = vectors {
            // One statement is atomic on its own: no BEGIN and COMMIT round trips.
            sqlx::query(UPDATE)
                .bind(encode_vector(vector))
                .bind(model)
                .bind(*id)
                .execute(&mut *self.write().await?)
                .await?;
            return Ok(());
        }
        let mut conn = self.write().await?;
        let mut tx = conn.begin().await?;
        for (id, vector) in vectors {
            sqlx::query(UPDATE).bind(encode_vector(vector)).bind(model).bind(*id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` vectors of `model` with ids above `after_id`, in id order (for loading the
    /// index page by page). A stored vector that does not decode is skipped.
    pub async fn memory_vectors(&self, model: &str, after_id: i64, limit: i64) -> StoreResult<Vec<StoredVector>> {
        let sql = format!(
            "SELECT {COLUMNS}, embedding FROM memories WHERE embedding_model = $1 AND id > $2 ORDER BY id {}",
            sql_limit(limit)
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(model).bind(after_id);
        decode_vectors(&query.fetch_all(&mut *self.read().await?).await?)
    }

    /// [`Db::memory_vectors`] of one persona (its index is loaded at its first search).
    pub async fn persona_vectors(
        &self,
        model: &str,
        persona: &str,
        after_id: i64,
        limit: i64,
    ) -> StoreResult<Vec<StoredVector>> {
        let sql = format!(
            "SELECT {COLUMNS}, embedding FROM memories WHERE persona = $1 AND embedding_model = $2 AND id > $3 \
             ORDER BY id {}",
            sql_limit(limit)
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(persona).bind(model).bind(after_id);
        decode_vectors(&query.fetch_all(&mut *self.read().await?).await?)
    }

    /// [`Db::memory_vectors`] of posts and replies created at or after `since`: the team's recent
    /// outputs, which drafts are checked against.
    pub async fn output_vectors(
        &self,
        model: &str,
        since: i64,
        after_id: i64,
        limit: i64,
    ) -> StoreResult<Vec<StoredVector>> {
        let sql = format!(
            "SELECT {COLUMNS}, embedding FROM memories WHERE embedding_model = $1 AND kind IN ('post', 'reply') \
             AND created_at >= $2 AND id > $3 ORDER BY id {}",
            sql_limit(limit)
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(model).bind(since).bind(after_id);
        decode_vectors(&query.fetch_all(&mut *self.read().await?).await?)
    }

    /// Up to `limit` memories without a vector of `model` (never embedded, or by another model),
    /// oldest first.
    pub async fn memories_to_embed(&self, model: &str, limit: i64) -> StoreResult<Vec<MemoryRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM memories \
             WHERE embedding_model IS NULL OR embedding_model < $1 OR embedding_model > $1 ORDER BY id {}",
            sql_limit(limit)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(model).fetch_all(&mut *self.read().await?).await?;
        rows.iter().map(MemoryRow::from_row).collect()
    }

    /// Deletes the memories of `kind` created before `before_ms`; returns their ids.
    pub async fn delete_memories_before(&self, kind: MemoryKind, before_ms: i64) -> StoreResult<Vec<i64>> {
        let rows = sqlx::query("DELETE FROM memories WHERE kind = $1 AND created_at < $2 RETURNING id")
            .bind(kind.as_str())
            .bind(before_ms)
            .fetch_all(&mut *self.write().await?)
            .await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    /// Keeps the persona's newest `keep` memories other than facts and deletes the rest; returns
    /// the deleted ids.
    pub async fn trim_memories(&self, persona: &str, keep: i64) -> StoreResult<Vec<i64>> {
        let cutoff = sqlx::query(
            "SELECT id FROM memories WHERE persona = $1 AND kind <> 'fact' ORDER BY id DESC LIMIT 1 OFFSET $2",
        )
        .bind(persona)
        .bind(keep)
        .fetch_optional(&mut *self.read().await?)
        .await?;
        let Some(cutoff) = cutoff else { return Ok(Vec::new()) };
        let cutoff: i64 = cutoff.try_get(0)?;
        let rows = sqlx::query("DELETE FROM memories WHERE persona = $1 AND kind <> 'fact' AND id <= $2 RETURNING id")
            .bind(persona)
            .bind(cutoff)
            .fetch_all(&mut *self.write().await?)
            .await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    /// Every persona with memories.
    pub async fn memory_personas(&self) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT persona FROM memories").fetch_all(&mut *self.read().await?).await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    /// How many memories have a vector of each model (`None`: not embedded yet).
    pub async fn embedding_models(&self) -> StoreResult<Vec<(Option<String>, i64)>> {
        let rows = sqlx::query("SELECT embedding_model, COUNT(*) FROM memories GROUP BY embedding_model")
            .fetch_all(&mut *self.read().await?)
            .await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
    }

    /// Memories stored, by kind.
    pub async fn memory_counts(&self) -> StoreResult<Vec<(MemoryKind, i64)>> {
        let rows = sqlx::query("SELECT kind, COUNT(*) FROM memories GROUP BY kind")
            .fetch_all(&mut *self.read().await?)
            .await?;
        let mut counts = Vec::new();
        for row in &rows {
            if let Some(kind) = MemoryKind::parse(&row.try_get::<String, _>(0)?) {
                counts.push((kind, row.try_get(1)?));
            }
        }
        Ok(counts)
    }
}

/// Rows with an `embedding` column as stored vectors; a vector that does not decode is skipped.
fn decode_vectors(rows: &[AnyRow]) -> StoreResult<Vec<StoredVector>> {
    let mut vectors = Vec::with_capacity(rows.len());
    for row in rows {
        let bytes: Vec<u8> = row.try_get("embedding")?;
        if let Some(vector) = decode_vector(&bytes) {
            vectors.push(StoredVector { row: MemoryRow::from_row(row)?, vector });
        }
    }
    Ok(vectors)
}

/// What a memory's insert returns of its row: [`COLUMNS`], the id new and the rest as bound.
pub(super) static INSERT_RETURNING: Returning = Returning::new(
    " RETURNING id, persona, kind, platform, conversation, author, text, created_at",
    &[
        ("id", Returned::Rowid),
        ("persona", Returned::Parameter(0)),
        ("kind", Returned::Parameter(2)),
        ("platform", Returned::Parameter(1)),
        ("conversation", Returned::Parameter(3)),
        ("author", Returned::Parameter(4)),
        ("text", Returned::Parameter(5)),
        ("created_at", Returned::Parameter(6)),
    ],
    0,
);

/// One run of memories (see [`super::runs`]) as a multi-row insert, a statement of `script`.
pub(super) fn insert_memory_run(script: &mut Script, run: &[(&ToInsert<'_>, Option<Vec<u8>>)], now: i64) {
    let fail = script.or_fail();
    script.statement(format!(
        "INSERT {fail}INTO memories (persona, platform, kind, conversation, author, text, created_at, embedding, \
         embedding_model) VALUES {}",
        super::value_rows("(?, ?, ?, ?, ?, ?, ?, ?, ?)", run.len())
    ));
    script.returning(&INSERT_RETURNING, run.len());
    for ((memory, vector), encoded) in run {
        script
            .bind(memory.persona.as_str())
            .bind(memory.platform.as_str())
            .bind(memory.kind.as_str())
            .bind(memory.conversation.as_deref())
            .bind(memory.author.as_str())
            .bind(memory.text.as_str())
            .bind(now)
            .bind(encoded.as_deref())
            .bind(vector.map(|(model, _)| model));
    }
}

/// [`Db::recall_memories`]'s query: the persona's latest posts (`$1`, `limits.0` of them), then
/// when `conversation` the latest memories of the conversation (`$2`–`$4`: persona, platform,
/// conversation; `limits.1` of them), then one memory a distinct id (`ids` parameters after), as
/// one compound of parts tagged `part` 0, 1 and 2. Each memory by id is a part of its own, a
/// lookup of its rowid (up to [`RECALL_LOOKUPS`]): `id IN (…)` had SQLite build a temporary
/// index of the list. There is no ORDER BY on the compound: SQLite sorted every part for it,
/// even those its index gives in order, so the caller orders the rows.
pub(super) fn recall_sql((recent, in_conversation): (i64, i64), conversation: bool, ids: usize) -> String {
    // Each part is a subquery: SQLite allows ORDER BY and LIMIT only on a whole compound.
    let mut sql = format!(
        "SELECT CAST(0 AS BIGINT) AS part, {COLUMNS} FROM (SELECT {COLUMNS} FROM memories WHERE persona = $1 \
         AND kind = 'post' ORDER BY id DESC {}) own",
        sql_limit(recent)
    );
    let mut next = 2;
    if conversation {
        sql.push_str(&format!(
            " UNION ALL SELECT CAST(1 AS BIGINT) AS part, {COLUMNS} FROM (SELECT {COLUMNS} FROM memories \
             WHERE persona = ${} AND platform = ${} AND conversation = ${} ORDER BY id DESC {}) thread",
            next,
            next + 1,
            next + 2,
            sql_limit(in_conversation)
        ));
        next += 3;
    }
    if ids > RECALL_LOOKUPS {
        sql.push_str(&format!(
            " UNION ALL SELECT CAST(2 AS BIGINT) AS part, {COLUMNS} FROM memories WHERE id IN ({})",
            super::placeholders(next, ids)
        ));
    } else {
        for n in next..next + ids {
            sql.push_str(&format!(
                " UNION ALL SELECT CAST(2 AS BIGINT) AS part, {COLUMNS} FROM memories WHERE id = ${n}"
            ));
        }
    }
    sql
}

/// The most ids [`recall_sql`] looks up a part each (recall asks for `memory.recall_relevant`, 4
/// by default); past it they are one `IN` list, as SQLite allows at most 500 parts a compound.
pub(super) const RECALL_LOOKUPS: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_through_bytes() {
        let vector = vec![0.5, -1.25, f32::MIN_POSITIVE, 3.0e7];
        assert_eq!(decode_vector(&encode_vector(&vector)), Some(vector));
        assert_eq!(decode_vector(&[1, 2, 3]), None);
    }
}

//! Storage contract: the same behaviours of [`chorus::store::Db`], checked on SQLite and on Postgres.
//!
//! Every contract function below runs twice, as `sqlite::<name>` (a fresh database file in a temporary
//! directory, always run) and as `postgres::<name>` (ignored by default). To run the Postgres half:
//!
//! ```text
//! CHORUS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo test --test storage -- --ignored
//! ```
//!
//! Each Postgres test creates its own database `chorus_test_<random hex>` through the server named by
//! the URL and drops it afterwards (also when the test fails).

use std::collections::HashSet;

mod common;

use chorus::store::{Db, Engine, LlmUsage, MemoryKind, NewInbound, NewMemory, NewOutbox, OutboxCounts, OutboxStatus};
use common::TestDatabase;

// ----- fixtures -----

/// A migrated SQLite database in a temporary directory, removed with the fixture.
struct SqliteFixture {
    db: Db,
    _dir: tempfile::TempDir,
}

async fn sqlite_fixture() -> SqliteFixture {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let db = Db::connect(&url, 4).await.unwrap_or_else(|err| panic!("connect to {url}: {err}"));
    db.migrate().await.expect("migrate the fresh SQLite database");
    assert_eq!(db.engine(), Engine::Sqlite);
    SqliteFixture { db, _dir: dir }
}

/// A migrated Postgres database of its own.
struct PostgresFixture {
    db: Db,
    database: TestDatabase,
}

async fn postgres_fixture() -> PostgresFixture {
    let database = TestDatabase::create().await;
    let db = Db::connect(&database.url, 4).await.unwrap_or_else(|err| panic!("connect to {}: {err}", database.url));
    db.migrate().await.expect("migrate the fresh Postgres database");
    assert_eq!(db.engine(), Engine::Postgres);
    PostgresFixture { db, database }
}

impl PostgresFixture {
    async fn finish(mut self) {
        self.db.close().await;
        self.database.drop_now().await;
    }
}

#[test]
fn with_database_replaces_only_the_database_name() {
    use common::with_database;
    assert_eq!(with_database("postgres://postgres@127.0.0.1:5432/test", "x"), "postgres://postgres@127.0.0.1:5432/x");
    assert_eq!(with_database("postgres://u:p@h/test?sslmode=disable", "x"), "postgres://u:p@h/x?sslmode=disable");
    assert_eq!(with_database("postgres://h:5432", "x"), "postgres://h:5432/x");
    assert_eq!(with_database("postgres://h:5432?a=b", "x"), "postgres://h:5432/x?a=b");
}

/// Runs each contract function on both engines: `sqlite::<name>` and `postgres::<name>` (ignored).
macro_rules! storage_contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let fixture = super::sqlite_fixture().await;
                    super::$name(&fixture.db).await;
                    fixture.db.close().await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[ignore = "needs Postgres: set CHORUS_TEST_POSTGRES_URL and run with --ignored"]
                async fn $name() {
                    let fixture = super::postgres_fixture().await;
                    super::$name(&fixture.db).await;
                    fixture.finish().await;
                }
            )*
        }
    };
}

storage_contract!(
    migrate_is_idempotent,
    inbound_events_are_stored_once_and_listed_per_agent,
    cursors_are_saved_and_overwritten,
    enqueue_is_idempotent_and_answers_the_inbound_event,
    outbox_lifecycle_is_audited,
    local_platform_posts_mentions_and_timeline,
    recent_memories_by_persona_and_conversation,
    memory_vectors_by_model_retention_and_cap,
    llm_usage_sums_tokens_per_persona,
    concurrent_enqueue_of_one_key_makes_one_row,
);

// ----- helpers -----

fn inbound<'a>(
    platform: &'a str,
    remote_id: &'a str,
    persona: &'a str,
    author_is_persona: bool,
    conversation: &'a str,
) -> NewInbound<'a> {
    NewInbound { platform, remote_id, persona, author: "someone", author_is_persona, text: remote_id, conversation }
}

fn outbox_item(key: &str, kind: &str, text: &str) -> NewOutbox {
    NewOutbox {
        idempotency_key: key.to_owned(),
        persona: "alice".to_owned(),
        platform: "local".to_owned(),
        kind: kind.to_owned(),
        text: text.to_owned(),
        reply_to: (kind == "reply").then(|| "remote-42".to_owned()),
        conversation: Some("conv-1".to_owned()),
    }
}

fn pairs(trail: &[(&str, &str)]) -> Vec<(String, String)> {
    trail.iter().map(|(action, outcome)| (action.to_string(), outcome.to_string())).collect()
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> i64) -> Vec<i64> {
    items.iter().map(id).collect()
}

// ----- contract -----

/// 1. Running the migrations again (the fixture already ran them once) changes nothing.
async fn migrate_is_idempotent(db: &Db) {
    db.migrate().await.expect("second migrate");
    db.migrate().await.expect("third migrate");
    db.ping().await.expect("ping after migrating again");
    assert_eq!(db.outbox_counts().await.expect("outbox_counts"), OutboxCounts::default());
    assert_eq!(db.cursor("alice", "local").await.expect("cursor"), None);
}

/// 2. Inbound events: deduplicated on (platform, remote_id), listed per persona and platform.
async fn inbound_events_are_stored_once_and_listed_per_agent(db: &Db) {
    let first = db.insert_inbound(&inbound("local", "r1", "alice", false, "c1")).await.expect("insert r1");
    let first = first.expect("the first insert of (local, r1) returns its id");
    let again = db.insert_inbound(&inbound("local", "r1", "bob", true, "c9")).await.expect("insert r1 again");
    assert_eq!(again, None, "(local, r1) again, even for another persona, is a duplicate");
    let other_platform = db.insert_inbound(&inbound("mastodon", "r1", "alice", true, "c1")).await.expect("insert");
    assert!(other_platform.is_some(), "the same remote id on another platform is another event");

    let r2 = db.insert_inbound(&inbound("local", "r2", "alice", true, "c1")).await.expect("insert r2").expect("new");
    let r3 = db.insert_inbound(&inbound("local", "r3", "alice", true, "c2")).await.expect("insert r3").expect("new");
    let r4 = db.insert_inbound(&inbound("local", "r4", "bob", true, "c1")).await.expect("insert r4").expect("new");
    assert!(first < r2 && r2 < r3 && r3 < r4, "ids grow: {first} {r2} {r3} {r4}");

    let pending = db.pending_inbound("alice", "local", 10).await.expect("pending_inbound");
    assert_eq!(ids(&pending, |row| row.id), vec![first, r2, r3], "alice's local events, oldest first");
    let row = &pending[0];
    assert_eq!(
        (
            row.remote_id.as_str(),
            row.author.as_str(),
            row.author_is_persona,
            row.text.as_str(),
            row.conversation.as_str()
        ),
        ("r1", "someone", false, "r1", "c1"),
        "the stored fields of r1"
    );
    assert!(pending[1].author_is_persona, "r2 was written by a persona");
    let limited = db.pending_inbound("alice", "local", 2).await.expect("pending_inbound with limit");
    assert_eq!(ids(&limited, |row| row.id), vec![first, r2], "limit 2 keeps the two oldest");
    let bob = db.pending_inbound("bob", "local", 10).await.expect("pending_inbound for bob");
    assert_eq!(ids(&bob, |row| row.id), vec![r4], "bob only sees his event (the duplicate r1 was not stored)");
    let mastodon = db.pending_inbound("alice", "mastodon", 10).await.expect("pending_inbound on mastodon");
    assert_eq!(ids(&mastodon, |row| row.id), vec![other_platform.unwrap()], "per platform");
    assert!(db.pending_inbound("carol", "local", 10).await.expect("pending_inbound").is_empty());

    db.ignore_inbound(first, "loop guard").await.expect("ignore_inbound");
    let pending = db.pending_inbound("alice", "local", 10).await.expect("pending_inbound after ignore");
    assert_eq!(ids(&pending, |row| row.id), vec![r2, r3], "an ignored event is no longer pending");

    // c1 on local: r1 (not a persona), r2 (persona, alice), r4 (persona, bob); mastodon's c1 does not count.
    assert_eq!(db.persona_turns("local", "c1").await.expect("persona_turns c1"), 2);
    assert_eq!(db.persona_turns("local", "c2").await.expect("persona_turns c2"), 1);
    assert_eq!(db.persona_turns("mastodon", "c1").await.expect("persona_turns mastodon c1"), 1);
    assert_eq!(db.persona_turns("local", "nowhere").await.expect("persona_turns nowhere"), 0);
}

/// 3. Cursors: none at first, saved per (persona, platform), overwritten by a second save.
async fn cursors_are_saved_and_overwritten(db: &Db) {
    assert_eq!(db.cursor("alice", "local").await.expect("cursor"), None, "no cursor at first");
    db.save_cursor("alice", "local", "c-1").await.expect("save_cursor");
    assert_eq!(db.cursor("alice", "local").await.expect("cursor").as_deref(), Some("c-1"));
    db.save_cursor("alice", "local", "c-2").await.expect("save_cursor again");
    assert_eq!(db.cursor("alice", "local").await.expect("cursor").as_deref(), Some("c-2"), "overwritten");
    assert_eq!(db.cursor("alice", "mastodon").await.expect("cursor"), None, "per platform");
    assert_eq!(db.cursor("bob", "local").await.expect("cursor"), None, "per persona");
}

/// 4a. Enqueue: once per idempotency key, and it answers the inbound event it replies to.
async fn enqueue_is_idempotent_and_answers_the_inbound_event(db: &Db) {
    let mention = db.insert_inbound(&inbound("local", "m1", "alice", false, "conv-1")).await.expect("insert");
    let mention = mention.expect("new inbound event");
    let other = db.insert_inbound(&inbound("local", "m2", "alice", false, "conv-1")).await.expect("insert");
    let other = other.expect("new inbound event");

    let item = outbox_item("reply:alice:local:m1", "reply", "first text");
    let created = db.enqueue(&item, Some(mention)).await.expect("enqueue");
    assert!(created.created, "the first enqueue of a key creates the row");
    let pending = db.pending_inbound("alice", "local", 10).await.expect("pending_inbound");
    assert_eq!(ids(&pending, |row| row.id), vec![other], "the answered event left pending_inbound");

    let changed = NewOutbox { text: "second text".to_owned(), ..item.clone() };
    let again = db.enqueue(&changed, None).await.expect("enqueue again");
    assert_eq!((again.id, again.created), (created.id, false), "same key: same row, nothing created");
    let row = db.outbox_row(&item.idempotency_key).await.expect("outbox_row").expect("the row exists");
    assert_eq!(row.id, created.id);
    assert_eq!(row.text, "first text", "a duplicate enqueue does not change the text");
    assert_eq!(
        (row.persona.as_str(), row.platform.as_str(), row.kind.as_str()),
        ("alice", "local", "reply"),
        "stored fields"
    );
    assert_eq!(row.reply_to.as_deref(), Some("remote-42"));
    assert_eq!(row.conversation.as_deref(), Some("conv-1"));
    assert_eq!((row.status, row.attempts, row.remote_id.clone()), (OutboxStatus::Pending, 0, None));

    assert!(db.outbox_exists(&item.idempotency_key).await.expect("outbox_exists"));
    assert!(!db.outbox_exists("no-such-key").await.expect("outbox_exists"));
    assert_eq!(db.outbox_row("no-such-key").await.expect("outbox_row"), None);
    assert_eq!(db.outbox_counts().await.expect("outbox_counts"), OutboxCounts { pending: 1, sent: 0, failed: 0 });
    assert_eq!(
        db.audit_trail(&item.idempotency_key).await.expect("audit_trail"),
        pairs(&[("enqueue", "pending")]),
        "the duplicate enqueue is not audited"
    );
}

/// 4b. Outbox rows through due → attempt → retry → sent / failed, with their audit trail.
async fn outbox_lifecycle_is_audited(db: &Db) {
    let first = db.enqueue(&outbox_item("k1", "post", "one"), None).await.expect("enqueue k1");
    let second = db.enqueue(&outbox_item("k2", "post", "two"), None).await.expect("enqueue k2");
    assert!(first.created && second.created);

    let due = db.due_outbox("local", "alice", 10).await.expect("due_outbox");
    assert_eq!(ids(&due, |row| row.id), vec![first.id, second.id], "due rows, oldest first");
    assert_eq!(
        ids(&db.due_outbox("local", "alice", 1).await.expect("due_outbox"), |row| row.id),
        vec![first.id],
        "limit"
    );
    assert!(db.due_outbox("local", "bob", 10).await.expect("due_outbox bob").is_empty(), "per account");
    assert_eq!(db.due_accounts().await.expect("due_accounts"), vec![("local".to_owned(), "alice".to_owned())]);

    db.begin_attempt(first.id).await.expect("begin_attempt");
    let row = db.outbox_row("k1").await.expect("outbox_row").expect("k1 exists");
    assert_eq!(row.attempts, 1, "begin_attempt counts the attempt");
    db.begin_attempt(first.id).await.expect("begin_attempt again");
    let row = db.outbox_row("k1").await.expect("outbox_row").expect("k1 exists");
    assert_eq!((row.attempts, row.status), (2, OutboxStatus::Pending));

    let in_an_hour = chorus::store::now_ms() + 3_600_000;
    db.mark_retry(&row, "timeout", in_an_hour).await.expect("mark_retry");
    let due = db.due_outbox("local", "alice", 10).await.expect("due_outbox after retry");
    assert_eq!(ids(&due, |row| row.id), vec![second.id], "a row retried later is not due now");
    let row = db.outbox_row("k1").await.expect("outbox_row").expect("k1 exists");
    assert_eq!(row.status, OutboxStatus::Pending, "a retried row stays pending");
    assert_eq!(db.outbox_counts().await.expect("outbox_counts"), OutboxCounts { pending: 2, sent: 0, failed: 0 });

    db.mark_sent(&row, "remote-1", "sent").await.expect("mark_sent");
    let row = db.outbox_row("k1").await.expect("outbox_row").expect("k1 exists");
    assert_eq!((row.status, row.remote_id.as_deref()), (OutboxStatus::Sent, Some("remote-1")));
    assert_eq!(db.outbox_counts().await.expect("outbox_counts"), OutboxCounts { pending: 1, sent: 1, failed: 0 });

    let row2 = db.outbox_row("k2").await.expect("outbox_row").expect("k2 exists");
    db.mark_failed(&row2, "rejected").await.expect("mark_failed");
    let row2 = db.outbox_row("k2").await.expect("outbox_row").expect("k2 exists");
    assert_eq!((row2.status, row2.remote_id), (OutboxStatus::Failed, None));
    assert_eq!(db.outbox_counts().await.expect("outbox_counts"), OutboxCounts { pending: 0, sent: 1, failed: 1 });
    assert!(
        db.due_outbox("local", "alice", 10).await.expect("due_outbox").is_empty(),
        "sent and failed rows are never due"
    );
    assert!(db.due_accounts().await.expect("due_accounts").is_empty());
    assert_eq!(db.outbox_pending().await.expect("outbox_pending"), 0);

    assert_eq!(
        db.audit_trail("k1").await.expect("audit_trail k1"),
        pairs(&[("enqueue", "pending"), ("publish", "retry"), ("publish", "sent")])
    );
    assert_eq!(
        db.audit_trail("k2").await.expect("audit_trail k2"),
        pairs(&[("enqueue", "pending"), ("publish", "failed")])
    );
    assert!(db.audit_trail("no-such-key").await.expect("audit_trail").is_empty());
}

/// 5. The local platform: idempotent posts, mentions, timeline, replies and look-ups.
async fn local_platform_posts_mentions_and_timeline(db: &Db) {
    let mentions = |handles: &[&str]| handles.iter().map(|handle| handle.to_string()).collect::<Vec<_>>();

    let p1 = db.local_post("alice", "hello @bob", None, Some("key-1"), &mentions(&["bob"])).await.expect("post p1");
    assert_eq!((p1.author.as_str(), p1.text.as_str(), p1.reply_to), ("alice", "hello @bob", None));
    let same = db.local_post("alice", "changed @carol", None, Some("key-1"), &mentions(&["carol"])).await;
    let same = same.expect("post key-1 again");
    assert_eq!(same, p1, "the same client key returns the first post");
    assert_eq!(db.local_timeline(None, 10).await.expect("local_timeline").len(), 1, "no second row for key-1");
    assert!(db.local_mentions("carol", 0, 10).await.expect("local_mentions").is_empty(), "nor its mentions");

    let p2 = db.local_post("bob", "hi @alice", Some(p1.id), None, &mentions(&["alice"])).await.expect("post p2");
    let p3 = db.local_post("carol", "@bob @alice", None, None, &mentions(&["bob", "alice"])).await.expect("post p3");
    let p4 = db.local_post("carol", "me too", Some(p1.id), None, &[]).await.expect("post p4 (no key, like p3)");
    let p5 = db.local_post("dave", "@erin @erin", None, Some("key-5"), &mentions(&["erin", "erin"])).await;
    let p5 = p5.expect("post p5 with a repeated mention");
    assert!(p1.id < p2.id && p2.id < p3.id && p3.id < p4.id && p4.id < p5.id, "ids grow");
    assert_eq!(p2.reply_to, Some(p1.id));

    let bob = db.local_mentions("bob", 0, 10).await.expect("local_mentions bob");
    assert_eq!(bob, vec![p1.clone(), p3.clone()], "bob's mentions in id order");
    assert_eq!(ids(&db.local_mentions("bob", p1.id, 10).await.expect("mentions"), |p| p.id), vec![p3.id], "after");
    assert_eq!(ids(&db.local_mentions("bob", 0, 1).await.expect("mentions"), |p| p.id), vec![p1.id], "limit");
    assert_eq!(ids(&db.local_mentions("alice", 0, 10).await.expect("mentions"), |p| p.id), vec![p2.id, p3.id]);
    assert_eq!(ids(&db.local_mentions("erin", 0, 10).await.expect("mentions"), |p| p.id), vec![p5.id], "once");
    assert!(db.local_mentions("bob", p3.id, 10).await.expect("mentions").is_empty());

    let timeline = db.local_timeline(None, 10).await.expect("local_timeline");
    assert_eq!(timeline, vec![p5.clone(), p4.clone(), p3.clone(), p2.clone(), p1.clone()], "newest first");
    let older = db.local_timeline(Some(p3.id), 10).await.expect("local_timeline before p3");
    assert_eq!(ids(&older, |p| p.id), vec![p2.id, p1.id], "before");
    let newest = db.local_timeline(None, 2).await.expect("local_timeline limit 2");
    assert_eq!(ids(&newest, |p| p.id), vec![p5.id, p4.id], "limit");

    assert_eq!(db.local_replies(p1.id).await.expect("local_replies p1"), vec![p2.clone(), p4.clone()]);
    assert!(db.local_replies(p3.id).await.expect("local_replies p3").is_empty());

    assert_eq!(db.local_post_by_id(p2.id).await.expect("local_post_by_id"), Some(p2.clone()));
    assert_eq!(db.local_post_by_id(p5.id + 1000).await.expect("local_post_by_id"), None);
    assert_eq!(db.local_post_by_key("key-1").await.expect("local_post_by_key"), Some(p1.clone()));
    assert_eq!(db.local_post_by_key("key-5").await.expect("local_post_by_key"), Some(p5));
    assert_eq!(db.local_post_by_key("no-such-key").await.expect("local_post_by_key"), None);
}

/// 6. Memories: the persona's own posts (never its replies: they stay in their conversation),
///    or one conversation's memories of any kind.
async fn recent_memories_by_persona_and_conversation(db: &Db) {
    let memories = [
        ("alice", MemoryKind::Post, None, "post 1"),
        ("alice", MemoryKind::Inbound, Some("c1"), "inbound 1"),
        ("alice", MemoryKind::Reply, Some("c1"), "reply 1"),
        ("bob", MemoryKind::Post, None, "bob's post"),
        ("bob", MemoryKind::Reply, Some("c1"), "bob's reply"),
        ("alice", MemoryKind::Post, None, "post 2"),
        ("alice", MemoryKind::Inbound, Some("c2"), "inbound 2"),
    ];
    for (persona, kind, conversation, text) in memories {
        let memory = NewMemory {
            persona: persona.to_owned(),
            platform: "local".to_owned(),
            kind,
            conversation: conversation.map(str::to_owned),
            author: if kind == MemoryKind::Inbound { "someone".to_owned() } else { persona.to_owned() },
            text: text.to_owned(),
        };
        db.insert_memory(&memory).await.unwrap_or_else(|err| panic!("insert_memory {text}: {err}"));
    }
    let texts = |rows: &[chorus::store::MemoryRow]| rows.iter().map(|row| row.text.clone()).collect::<Vec<_>>();

    let own = db.recent_memories("alice", None, 10).await.expect("recent_memories alice");
    assert_eq!(texts(&own), ["post 2", "post 1"], "own posts only, newest first");
    assert!(own.iter().all(|row| row.kind == MemoryKind::Post));
    assert_eq!(
        (own[0].platform.as_str(), own[0].conversation.as_deref(), own[0].author.as_str()),
        ("local", None, "alice")
    );
    assert!(own[0].created_at >= own[1].created_at && own[1].created_at > 0, "created_at is epoch ms");
    let limited = db.recent_memories("alice", None, 1).await.expect("recent_memories limit 1");
    assert_eq!(texts(&limited), ["post 2"], "limit");

    let c1 = db.recent_memories("alice", Some(("local", "c1")), 10).await.expect("recent_memories alice c1");
    assert_eq!(texts(&c1), ["reply 1", "inbound 1"], "one conversation, any kind, newest first");
    assert_eq!(c1[1].kind, MemoryKind::Inbound);
    let c2 = db.recent_memories("alice", Some(("local", "c2")), 10).await.expect("recent_memories alice c2");
    assert_eq!(texts(&c2), ["inbound 2"]);
    assert!(db.recent_memories("alice", Some(("x", "c1")), 10).await.expect("other platform").is_empty());
    assert!(db.recent_memories("carol", None, 10).await.expect("recent_memories carol").is_empty());
}

/// 6b. Memory vectors: stored per model, listed page by page, re-embedding finds the others;
///     retention by kind and age, and a per-persona cap that never deletes facts.
async fn memory_vectors_by_model_retention_and_cap(db: &Db) {
    let new = |persona: &str, kind: MemoryKind, text: &str| NewMemory {
        persona: persona.to_owned(),
        platform: "local".to_owned(),
        kind,
        conversation: None,
        author: persona.to_owned(),
        text: text.to_owned(),
    };
    let mut ids = Vec::new();
    for (n, kind) in
        [MemoryKind::Post, MemoryKind::Inbound, MemoryKind::Reply, MemoryKind::Post].into_iter().enumerate()
    {
        ids.push(db.insert_memory(&new("alice", kind, &format!("memory {n}"))).await.expect("insert_memory"));
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let facts = vec!["alice is a gardener".to_owned(), "alice talks about soil".to_owned()];
    assert_eq!(db.ensure_facts("alice", &facts).await.expect("ensure_facts").len(), 2);
    assert!(db.ensure_facts("alice", &facts).await.expect("ensure_facts again").is_empty(), "stored once");

    assert_eq!(db.memories_to_embed("m1", 100).await.expect("memories_to_embed").len(), 6, "nothing embedded yet");
    let vectors: Vec<(i64, Vec<f32>)> = ids[..3].iter().map(|id| (*id, vec![*id as f32, 0.5, -1.0])).collect();
    db.set_embeddings("m1", &vectors).await.expect("set_embeddings");
    let stored = db.memory_vectors("m1", 0, 2).await.expect("memory_vectors page 1");
    assert_eq!(stored.iter().map(|s| s.row.id).collect::<Vec<_>>(), ids[..2].to_vec(), "first page, in id order");
    assert_eq!(stored[0].vector, vectors[0].1, "vectors round-trip");
    let rest = db.memory_vectors("m1", stored[1].row.id, 10).await.expect("memory_vectors page 2");
    assert_eq!(rest.iter().map(|s| s.row.id).collect::<Vec<_>>(), vec![ids[2]]);
    assert!(db.memory_vectors("m2", 0, 10).await.expect("other model").is_empty(), "another model's vectors never mix");
    let todo = db.memories_to_embed("m1", 100).await.expect("memories_to_embed m1");
    assert_eq!(todo.len(), 3, "the unembedded rest");
    assert_eq!(db.memories_to_embed("m2", 100).await.expect("memories_to_embed m2").len(), 6, "all, for a new model");

    let gone = db.delete_memories_before(MemoryKind::Inbound, chorus::store::now_ms() + 1).await.expect("delete");
    assert_eq!(gone, vec![ids[1]], "only the inbound one");
    let trimmed = db.trim_memories("alice", 1).await.expect("trim");
    assert_eq!(trimmed, vec![ids[0], ids[2]], "the oldest past the cap, facts untouched");
    let left = db.memories_by_ids(&ids).await.expect("memories_by_ids");
    assert_eq!(left.iter().map(|m| m.id).collect::<Vec<_>>(), vec![ids[3]]);
    let counts = db.memory_counts().await.expect("memory_counts");
    assert!(counts.contains(&(MemoryKind::Fact, 2)) && counts.contains(&(MemoryKind::Post, 1)), "{counts:?}");
}

/// 7. LLM usage: tokens in and out summed per persona; batched writes; daily spend with cost.
async fn llm_usage_sums_tokens_per_persona(db: &Db) {
    assert_eq!(db.llm_tokens("alice").await.expect("llm_tokens before any usage"), (0, 0));
    let now = chorus::store::now_ms();
    let usage = |persona: &str, tokens_in, tokens_out, cost_usd, at_ms| LlmUsage {
        persona: persona.to_owned(),
        provider: "offline".to_owned(),
        model: "echo".to_owned(),
        task: "reply",
        tokens_in,
        tokens_out,
        latency_ms: 12,
        outcome: "ok",
        cost_usd,
        at_ms,
    };
    db.record_llm_usage(&usage("alice", 100, 20, 0.5, now)).await.expect("record_llm_usage 1");
    db.record_llm_usage_batch(&[usage("alice", 50, 5, 0.25, now), usage("bob", 7, 3, 0.0, now)])
        .await
        .expect("record_llm_usage_batch");
    db.record_llm_usage(&usage("bob", 1000, 1000, 9.0, now - 2 * 86_400_000)).await.expect("an old row");
    assert_eq!(db.llm_tokens("alice").await.expect("llm_tokens alice"), (150, 25));
    assert_eq!(db.llm_tokens("bob").await.expect("llm_tokens bob"), (1007, 1003));
    assert_eq!(db.llm_tokens("carol").await.expect("llm_tokens carol"), (0, 0));
    let mut today = db.llm_spend_since(now - 1000).await.expect("llm_spend_since");
    today.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(today, vec![("alice".to_owned(), 175, 0.75), ("bob".to_owned(), 10, 0.0)]);
}

/// 8. Fifty concurrent enqueues of one key: all succeed, one row, one id, one `created`.
async fn concurrent_enqueue_of_one_key_makes_one_row(db: &Db) {
    const CALLS: usize = 50;
    let tasks: Vec<_> = (0..CALLS)
        .map(|call| {
            let db = db.clone();
            tokio::spawn(
                async move { db.enqueue(&outbox_item("same-key", "post", &format!("text {call}")), None).await },
            )
        })
        .collect();
    let mut results = Vec::with_capacity(CALLS);
    for (call, task) in tasks.into_iter().enumerate() {
        let result = task.await.unwrap_or_else(|err| panic!("enqueue task {call} panicked: {err}"));
        results.push(result.unwrap_or_else(|err| panic!("enqueue call {call} failed: {err:?}")));
    }
    let distinct: HashSet<i64> = results.iter().map(|enqueued| enqueued.id).collect();
    assert_eq!(distinct.len(), 1, "every call returns the same id, got {distinct:?}");
    assert_eq!(results.iter().filter(|enqueued| enqueued.created).count(), 1, "exactly one call created the row");
    assert_eq!(db.outbox_counts().await.expect("outbox_counts"), OutboxCounts { pending: 1, sent: 0, failed: 0 });
    assert_eq!(db.audit_trail("same-key").await.expect("audit_trail"), pairs(&[("enqueue", "pending")]));
}

/// `store.password` is put into the connection URL, encoded (the server here trusts local
/// connections, so this checks the URL handling, not the authentication).
#[tokio::test]
#[ignore = "needs Postgres: set CHORUS_TEST_POSTGRES_URL and run with --ignored"]
async fn postgres_connects_with_a_password_kept_out_of_the_url() {
    let mut database = TestDatabase::create().await;
    let password = chorus::config::Secret::new("p@ss:w/rd?#");
    let db = Db::connect_with_password(&database.url, Some(&password), 1).await.expect("connect with a password");
    db.ping().await.expect("ping");
    db.close().await;
    database.drop_now().await;
}

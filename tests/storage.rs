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

use std::collections::{BTreeMap, HashSet};

mod common;

use chorus::store::{
    Db, Decided, Engine, InboundRow, LlmUsage, LocalPost, MemoryKind, NewAudit, NewInbound, NewLocalPost, NewMemory,
    NewOutbox, NewTrade, OutboxCounts, OutboxStatus, PaperFill, PendingAccount, TradeStatus,
};
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
    trade_transitions_are_compare_and_set,
    decide_trade_approves_once_rejects_and_refuses_expired,
    concurrent_approvals_of_one_trade_decide_once,
    expire_approvals_expires_only_overdue_awaiting_trades,
    paper_seed_runs_once_and_starting_value_is_set_once,
    paper_fill_moves_balances_exactly_once,
    concurrent_paper_fills_never_double_fill_or_overdraw,
    executed_value_since_sums_only_executed_trades,
    trade_audit_is_newest_first_with_filters,
    trading_flags_are_upserted,
    trading_amounts_above_i64_max_are_refused,
    planned_posts_are_stored_once_dispatched_once_and_dropped_only_when_planned,
    started_content_is_dropped_blocked_held_or_flagged,
    airlock_approves_once_edits_enforces_two_persons_and_refuses_expired,
    concurrent_airlock_decisions_on_one_item_decide_once,
    expire_holds_expires_only_past_due_held_items,
    outbox_moves_content_items_to_queued_published_and_failed,
    content_items_filter_newest_first_and_events_in_order,
    thread_assignment_first_wins_and_pending_load_counts_pending_mentions,
    engagement_is_measured_inside_the_window_and_rescheduled,
    group_commits_write_each_item_as_it_would_alone,
    a_transaction_cancelled_half_way_is_all_or_nothing_and_the_next_commits,
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

/// One inbound event stored on its own: its new row, `None` when seen before.
async fn insert_inbound(db: &Db, event: &NewInbound<'_>) -> chorus::store::StoreResult<Option<InboundRow>> {
    Ok(db.store_inbound(std::slice::from_ref(event), None).await?.pop().flatten())
}

/// A cursor saved on its own (a poll that read nothing new but moved on).
async fn save_cursor(db: &Db, persona: &str, platform: &str, cursor: &str) -> chorus::store::StoreResult<()> {
    db.store_inbound(&[], Some((persona, platform, cursor))).await.map(drop)
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

/// Marks one row sent (a batch of one).
async fn mark_sent(db: &Db, row: &chorus::store::OutboxRow, remote_id: &str) {
    let sent = chorus::store::Sent { row, remote_id, how: "sent" };
    db.mark_sent_batch(&[sent]).await.unwrap_or_else(|err| panic!("mark_sent {}: {err}", row.idempotency_key));
}

/// Stores one memory (a batch of one); returns its id.
async fn insert_memory(db: &Db, memory: &NewMemory, vector: Option<(&str, &[f32])>) -> i64 {
    let rows = db.insert_memories(&[(memory, vector)]).await;
    rows.unwrap_or_else(|err| panic!("insert_memory {}: {err}", memory.text))[0].id
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

/// 2. Inbound events: deduplicated on (platform, remote_id, persona) — a message that mentions
///    two personas is stored once for each — and listed per persona and platform; an agent's
///    batch is stored with its cursor.
async fn inbound_events_are_stored_once_and_listed_per_agent(db: &Db) {
    let first =
        insert_inbound(db, &inbound("local", "r1", "alice", false, "c1")).await.expect("insert r1").map(|row| row.id);
    let first = first.expect("the first insert of (local, r1) returns its id");
    let again = insert_inbound(db, &inbound("local", "r1", "alice", true, "c9"))
        .await
        .expect("insert r1 again")
        .map(|row| row.id);
    assert_eq!(again, None, "(local, r1) again for the same persona is a duplicate");
    let bob_r1 = insert_inbound(db, &inbound("local", "r1", "bob", false, "c1"))
        .await
        .expect("insert r1 for bob")
        .map(|row| row.id);
    let bob_r1 = bob_r1.expect("the same message for another persona is stored for that persona too");
    let other_platform = insert_inbound(db, &inbound("mastodon", "r1", "alice", true, "c1")).await.expect("insert");
    let other_platform = other_platform.map(|row| row.id);
    assert!(other_platform.is_some(), "the same remote id on another platform is another event");

    let r2 =
        insert_inbound(db, &inbound("local", "r2", "alice", true, "c1")).await.expect("insert r2").expect("new").id;
    let r3 =
        insert_inbound(db, &inbound("local", "r3", "alice", true, "c2")).await.expect("insert r3").expect("new").id;
    let r4 = insert_inbound(db, &inbound("local", "r4", "bob", true, "c1")).await.expect("insert r4").expect("new").id;
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
    assert_eq!(ids(&bob, |row| row.id), vec![bob_r1, r4], "bob sees his copy of r1 and his own event");
    // The row an insert answers is the row a read gives back (an agent answers it without reading).
    let r5 = insert_inbound(db, &inbound("local", "r5", "carol", true, "c5")).await.expect("insert r5");
    let r5 = r5.expect("r5 is new");
    let read = db.pending_inbound("carol", "local", 10).await.expect("pending_inbound for carol");
    assert_eq!(read, vec![r5.clone()], "the inserted row as read");
    assert_eq!(insert_inbound(db, &inbound("local", "r5", "carol", true, "c5")).await.expect("again"), None);
    db.ignore_inbound(r5.id, "test").await.expect("ignore r5");
    let mastodon = db.pending_inbound("alice", "mastodon", 10).await.expect("pending_inbound on mastodon");
    assert_eq!(ids(&mastodon, |row| row.id), vec![other_platform.unwrap()], "per platform");
    assert!(db.pending_inbound("carol", "local", 10).await.expect("pending_inbound").is_empty());

    // An agent's batch, with the cursor past it: an event seen before and one repeated in the
    // batch are `None`, the new rows are answered in order and as read, the cursor is saved.
    let batch = [
        inbound("local", "d1", "dave", true, "c7"),
        inbound("local", "r5", "carol", true, "c5"),
        inbound("local", "d2", "dave", false, "c7"),
        inbound("local", "d1", "dave", true, "c7"),
    ];
    let stored = db.store_inbound(&batch, Some(("dave", "local", "cur-d2"))).await.expect("store_inbound");
    let new: Vec<Option<&str>> = stored.iter().map(|row| row.as_ref().map(|row| row.remote_id.as_str())).collect();
    assert_eq!(new, [Some("d1"), None, Some("d2"), None], "{stored:?}");
    let read = db.pending_inbound("dave", "local", 10).await.expect("pending_inbound for dave");
    assert_eq!(read, stored.into_iter().flatten().collect::<Vec<_>>(), "the stored rows as read, oldest first");
    assert_eq!(db.cursor("dave", "local").await.expect("cursor").as_deref(), Some("cur-d2"));
    let nothing = db.store_inbound(&[], Some(("dave", "local", "cur-d3"))).await.expect("a cursor alone");
    assert!(nothing.is_empty());
    assert!(db.store_inbound(&[], None).await.expect("an empty poll").is_empty());
    assert_eq!(db.cursor("dave", "local").await.expect("cursor").as_deref(), Some("cur-d3"));

    db.ignore_inbound(first, "loop guard").await.expect("ignore_inbound");
    let pending = db.pending_inbound("alice", "local", 10).await.expect("pending_inbound after ignore");
    assert_eq!(ids(&pending, |row| row.id), vec![r2, r3], "an ignored event is no longer pending");
    let closed = db.closed_inbound("alice", "local").await.expect("closed_inbound");
    assert_eq!(closed, ["r1"], "alice's closed mention, by remote id");
    assert_eq!(db.closed_inbound("carol", "local").await.expect("closed_inbound carol"), ["r5"]);

    // c1 on local: r1 (not a persona, stored twice), r2 (persona, alice), r4 (persona, bob); mastodon's
    // c1 does not count.
    assert_eq!(db.persona_turns("local", "c1").await.expect("persona_turns c1"), 2);
    assert_eq!(db.persona_turns("local", "c2").await.expect("persona_turns c2"), 1);
    assert_eq!(db.persona_turns("mastodon", "c1").await.expect("persona_turns mastodon c1"), 1);
    assert_eq!(db.persona_turns("local", "nowhere").await.expect("persona_turns nowhere"), 0);
}

/// 3. Cursors: none at first, saved per (persona, platform), overwritten by a second save.
async fn cursors_are_saved_and_overwritten(db: &Db) {
    assert_eq!(db.cursor("alice", "local").await.expect("cursor"), None, "no cursor at first");
    save_cursor(db, "alice", "local", "c-1").await.expect("save_cursor");
    assert_eq!(db.cursor("alice", "local").await.expect("cursor").as_deref(), Some("c-1"));
    save_cursor(db, "alice", "local", "c-2").await.expect("save_cursor again");
    assert_eq!(db.cursor("alice", "local").await.expect("cursor").as_deref(), Some("c-2"), "overwritten");
    assert_eq!(db.cursor("alice", "mastodon").await.expect("cursor"), None, "per platform");
    assert_eq!(db.cursor("bob", "local").await.expect("cursor"), None, "per persona");
}

/// 4a. Enqueue: once per idempotency key, and it answers the inbound event it replies to.
async fn enqueue_is_idempotent_and_answers_the_inbound_event(db: &Db) {
    let mention = insert_inbound(db, &inbound("local", "m1", "alice", false, "conv-1")).await.expect("insert");
    let mention = mention.expect("new inbound event").id;
    let other = insert_inbound(db, &inbound("local", "m2", "alice", false, "conv-1")).await.expect("insert");
    let other = other.expect("new inbound event").id;

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

/// 4c. An enqueue or a mark-sent whose future is dropped half-way (the Publisher aborts its
/// tasks when it restarts) leaves all of its writes or none, and the transactions after it
/// commit as usual: no transaction is left open on a pooled connection. A future polled once
/// stops at a different point from run to run (before its first call, or after it, with BEGIN
/// sent and no COMMIT), so each case is tried several times.
async fn a_transaction_cancelled_half_way_is_all_or_nothing_and_the_next_commits(db: &Db) {
    const TRIES: usize = 16;
    let once = std::time::Duration::ZERO;
    for n in 0..TRIES {
        let remote_id = format!("m{n}");
        let mention =
            insert_inbound(db, &inbound("local", &remote_id, "alice", false, "conv-1")).await.expect("insert");
        let mention = mention.expect("new inbound event").id;
        let item = outbox_item(&format!("reply:alice:local:{remote_id}"), "reply", "cancelled");
        let cancelled = tokio::time::timeout(once, db.enqueue(&item, Some(mention))).await;
        // The next transaction commits, and other connections see it. It waits for the writer,
        // so by then the cancelled one is settled: committed whole or rolled back.
        let next = db.enqueue(&outbox_item(&format!("after-enqueue-{n}"), "post", "after"), None).await;
        assert!(next.expect("the enqueue after a cancelled one").created);
        let seen = db.outbox_row(&format!("after-enqueue-{n}")).await.expect("outbox_row");
        assert!(seen.is_some(), "committed and seen by the other connections");

        let row = db.outbox_row(&item.idempotency_key).await.expect("outbox_row");
        let pending = db.pending_inbound("alice", "local", 100).await.expect("pending_inbound");
        let answered = !pending.iter().any(|row| row.id == mention);
        let audited = !db.audit_trail(&item.idempotency_key).await.expect("audit_trail").is_empty();
        assert_eq!((answered, audited), (row.is_some(), row.is_some()), "cancelled enqueue {n}: all or nothing");
        if cancelled.is_ok() {
            assert!(row.is_some(), "an enqueue that answered was committed");
        }
    }
    for n in 0..TRIES {
        let key = format!("to-mark-{n}");
        db.enqueue(&outbox_item(&key, "post", "to mark"), None).await.expect("enqueue");
        let row = db.outbox_row(&key).await.expect("outbox_row").expect("the row");
        let sent = chorus::store::Sent { row: &row, remote_id: "r", how: "sent" };
        let cancelled = tokio::time::timeout(once, db.mark_sent_batch(&[sent])).await;
        let next = db.enqueue(&outbox_item(&format!("after-mark-{n}"), "post", "after"), None).await;
        assert!(next.expect("the enqueue after a cancelled mark-sent").created);

        let row = db.outbox_row(&key).await.expect("outbox_row").expect("the row");
        let marked = row.status == OutboxStatus::Sent;
        let trail = db.audit_trail(&key).await.expect("audit_trail");
        let audited = trail.contains(&("publish".to_owned(), "sent".to_owned()));
        assert_eq!((audited, row.remote_id.is_some()), (marked, marked), "cancelled mark-sent {n}: all or nothing");
        if cancelled.is_ok() {
            assert!(marked, "a mark-sent that answered was committed");
        }
    }
    let last = db.outbox_row("after-mark-0").await.expect("outbox_row").expect("the row");
    mark_sent(db, &last, "r-last").await;
    let last = db.outbox_row("after-mark-0").await.expect("outbox_row").expect("the row");
    assert_eq!((last.status, last.remote_id.as_deref()), (OutboxStatus::Sent, Some("r-last")));
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
    let alice = |rows: i64, due: bool| PendingAccount { platform: "local".into(), persona: "alice".into(), rows, due };
    assert_eq!(db.pending_accounts().await.expect("pending_accounts"), vec![alice(2, true)]);

    db.begin_attempts(&[first.id]).await.expect("begin_attempts");
    let row = db.outbox_row("k1").await.expect("outbox_row").expect("k1 exists");
    assert_eq!(row.attempts, 1, "begin_attempts counts the attempt");
    db.begin_attempts(&[first.id]).await.expect("begin_attempts again");
    let row = db.outbox_row("k1").await.expect("outbox_row").expect("k1 exists");
    assert_eq!((row.attempts, row.status), (2, OutboxStatus::Pending));
    // A worker's pass records its rows' attempts together, and takes back those it did not try.
    db.begin_attempts(&[first.id, second.id]).await.expect("begin_attempts of two rows");
    db.take_back_attempts(&[first.id]).await.expect("take_back_attempts");
    let attempts =
        |key: &'static str| async move { db.outbox_row(key).await.expect("outbox_row").expect(key).attempts };
    assert_eq!((attempts("k1").await, attempts("k2").await), (2, 1), "both counted, k1's taken back");
    db.take_back_attempts(&[second.id]).await.expect("take_back_attempts of k2");
    assert_eq!(attempts("k2").await, 0, "k2 was not tried");

    let in_an_hour = chorus::store::now_ms() + 3_600_000;
    db.mark_retry(&row, "timeout", in_an_hour).await.expect("mark_retry");
    let due = db.due_outbox("local", "alice", 10).await.expect("due_outbox after retry");
    assert_eq!(ids(&due, |row| row.id), vec![second.id], "a row retried later is not due now");
    let row = db.outbox_row("k1").await.expect("outbox_row").expect("k1 exists");
    assert_eq!(row.status, OutboxStatus::Pending, "a retried row stays pending");
    assert_eq!(db.pending_accounts().await.expect("pending_accounts"), vec![alice(2, true)], "k2 is due");
    assert_eq!(db.outbox_counts().await.expect("outbox_counts"), OutboxCounts { pending: 2, sent: 0, failed: 0 });

    mark_sent(db, &row, "remote-1").await;
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
    assert!(db.pending_accounts().await.expect("pending_accounts").is_empty(), "nothing pending");

    assert_eq!(
        db.audit_trail("k1").await.expect("audit_trail k1"),
        pairs(&[("enqueue", "pending"), ("publish", "retry"), ("publish", "sent")])
    );
    assert_eq!(
        db.audit_trail("k2").await.expect("audit_trail k2"),
        pairs(&[("enqueue", "pending"), ("publish", "failed")])
    );
    assert!(db.audit_trail("no-such-key").await.expect("audit_trail").is_empty());

    // An account whose only pending row waits for a retry has rows and none due.
    let third = db.enqueue(&outbox_item("k3", "post", "three"), None).await.expect("enqueue k3");
    let row3 = db.outbox_row("k3").await.expect("outbox_row").expect("k3 exists");
    assert_eq!(row3.id, third.id);
    db.mark_retry(&row3, "timeout", chorus::store::now_ms() + 3_600_000).await.expect("mark_retry k3");
    assert_eq!(db.pending_accounts().await.expect("pending_accounts"), vec![alice(1, false)]);
    db.mark_failed(&row3, "given up").await.expect("mark_failed k3");
    assert!(db.pending_accounts().await.expect("pending_accounts").is_empty());
}

/// 5. The local platform: idempotent posts, mentions, timeline, replies and look-ups.
async fn local_platform_posts_mentions_and_timeline(db: &Db) {
    let mentions = |handles: &[&str]| handles.iter().map(|handle| handle.to_string()).collect::<Vec<_>>();

    let p1 = db
        .local_post("alice", "hello @bob", None, Some("key-1"), &mentions(&["bob"]))
        .await
        .expect("post p1")
        .expect("stored");
    assert_eq!((p1.author.as_str(), p1.text.as_str(), p1.reply_to), ("alice", "hello @bob", None));
    let same = db.local_post("alice", "changed @carol", None, Some("key-1"), &mentions(&["carol"])).await;
    let same = same.expect("post key-1 again").expect("the first post");
    assert_eq!(same, p1, "the same client key returns the first post");
    assert_eq!(db.local_timeline(None, 10).await.expect("local_timeline").len(), 1, "no second row for key-1");
    assert!(db.local_mentions("carol", 0, 10).await.expect("local_mentions").is_empty(), "nor its mentions");

    let p2 = db
        .local_post("bob", "hi @alice", Some(p1.id), None, &mentions(&["alice"]))
        .await
        .expect("post p2")
        .expect("p1 exists");
    let p3 = db
        .local_post("carol", "@bob @alice", None, None, &mentions(&["bob", "alice"]))
        .await
        .expect("post p3")
        .expect("stored");
    let p4 = db
        .local_post("carol", "me too", Some(p1.id), None, &[])
        .await
        .expect("post p4 (no key, like p3)")
        .expect("p1 exists");
    let p5 = db.local_post("dave", "@erin @erin", None, Some("key-5"), &mentions(&["erin", "erin"])).await;
    let p5 = p5.expect("post p5 with a repeated mention").expect("stored");
    assert!(p1.id < p2.id && p2.id < p3.id && p3.id < p4.id && p4.id < p5.id, "ids grow");
    assert_eq!(p2.reply_to, Some(p1.id));
    let orphan =
        db.local_post("erin", "to nobody @bob", Some(p5.id + 1000), Some("key-orphan"), &mentions(&["bob"])).await;
    assert_eq!(orphan.expect("post to a missing parent"), None, "a reply to no post is refused");
    assert_eq!(db.local_post_by_key("key-orphan").await.expect("local_post_by_key"), None, "and not stored");

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

    // A post that mentions nobody (one statement) is just as idempotent and checks its parent.
    let p6 = db.local_post("frank", "nobody named", Some(p1.id), Some("key-6"), &[]).await.expect("post p6");
    let p6 = p6.expect("p1 exists");
    let again = db.local_post("frank", "changed", Some(p1.id), Some("key-6"), &[]).await.expect("post key-6 again");
    assert_eq!(again, Some(p6.clone()), "the same client key returns the first post");
    let orphan = db.local_post("frank", "to nobody", Some(p6.id + 1000), Some("key-orphan-2"), &[]).await;
    assert_eq!(orphan.expect("post to a missing parent"), None, "a reply to no post is refused");
    assert_eq!(db.local_post_by_key("key-orphan-2").await.expect("local_post_by_key"), None, "and not stored");
    assert_eq!(db.local_replies(p1.id).await.expect("local_replies p1"), vec![p2.clone(), p4.clone(), p6.clone()]);

    // Posts stored together: in order, in one transaction, each answered as if posted alone.
    let new = |author: &str, text: &str, reply_to: Option<i64>, key: Option<&str>, handles: &[&str]| NewLocalPost {
        author: author.to_owned(),
        text: text.to_owned(),
        reply_to,
        client_key: key.map(str::to_owned),
        mentions: mentions(handles),
    };
    let group = db
        .local_posts(&[
            new("gina", "first @hank", None, Some("key-g1"), &["hank"]),
            new("gina", "changed", None, Some("key-1"), &["bob"]),
            new("gina", "to nobody", Some(p6.id + 1000), None, &[]),
            new("hank", "second @gina @gina", Some(p1.id), None, &["gina", "gina"]),
            new("gina", "the group's own key again", None, Some("key-g1"), &[]),
        ])
        .await;
    let group: Vec<Option<LocalPost>> = group.into_iter().map(|stored| stored.expect("the group is stored")).collect();
    let g1 = group[0].clone().expect("stored");
    assert_eq!((g1.author.as_str(), g1.text.as_str(), g1.reply_to), ("gina", "first @hank", None));
    assert_eq!(group[1], Some(p1.clone()), "a key posted before returns its first post");
    assert_eq!(group[2], None, "a reply to no post is refused");
    let g4 = group[3].clone().expect("p1 exists");
    assert_eq!((g4.author.as_str(), g4.reply_to), ("hank", Some(p1.id)));
    assert!(p6.id < g1.id && g1.id < g4.id, "ids grow in the group's order");
    assert_eq!(group[4], Some(g1.clone()), "a key posted earlier in the group returns that post");
    assert_eq!(ids(&db.local_mentions("hank", 0, 10).await.expect("mentions"), |p| p.id), vec![g1.id]);
    assert_eq!(ids(&db.local_mentions("gina", 0, 10).await.expect("mentions"), |p| p.id), vec![g4.id], "once");
    assert_eq!(ids(&db.local_mentions("bob", p3.id, 10).await.expect("mentions"), |p| p.id), Vec::<i64>::new());
    assert_eq!(db.local_replies(p1.id).await.expect("local_replies p1"), vec![p2, p4, p6.clone(), g4.clone()]);
    let newest = db.local_timeline(None, 3).await.expect("local_timeline");
    assert_eq!(newest, vec![g4, g1.clone(), p6], "two rows for the group of five");
    assert_eq!(db.local_posts(&[]).await.len(), 0);
    let alone = db.local_posts(&[new("ivy", "alone", None, Some("key-g1"), &[])]).await;
    assert_eq!(alone.into_iter().map(|stored| stored.expect("stored")).collect::<Vec<_>>(), vec![Some(g1)]);
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
        insert_memory(db, &memory, None).await;
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

    // Recall reads the same three things in one query.
    let by_id = [c1[1].id, own[1].id, i64::MAX, c1[1].id];
    let recalled = db.recall_memories("alice", (1, 10), Some(("local", "c1")), &by_id).await.expect("recall_memories");
    assert_eq!(texts(&recalled.recent), ["post 2"], "own posts, newest first, limited");
    assert_eq!(texts(&recalled.conversation), texts(&c1), "the conversation, as recent_memories reads it");
    let in_order = ["post 1", "inbound 1"];
    assert_eq!(texts(&recalled.by_id), in_order, "by id, in id order, each once, the missing id skipped");
    // Past the ids looked up one by one, in one list: the same rows.
    let many: Vec<i64> = by_id.iter().copied().chain(-40..0).collect();
    let listed = db.recall_memories("alice", (1, 10), Some(("local", "c1")), &many).await.expect("recall, many ids");
    assert_eq!(texts(&listed.by_id), in_order, "a long list of ids");
    assert_eq!(texts(&listed.conversation), texts(&c1));
    let latest_turn = db.recall_memories("alice", (0, 1), Some(("local", "c1")), &[]).await.expect("recall, 1 turn");
    assert_eq!((latest_turn.recent.len(), texts(&latest_turn.conversation)), (0, vec!["reply 1".to_owned()]));
    let alone = db.recall_memories("alice", (10, 10), None, &[]).await.expect("recall_memories, no thread or ids");
    assert_eq!((texts(&alone.recent), alone.conversation.len(), alone.by_id.len()), (texts(&own), 0, 0));
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
        ids.push(insert_memory(db, &new("alice", kind, &format!("memory {n}")), None).await);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let facts = vec!["alice is a gardener".to_owned(), "alice talks about soil".to_owned()];
    assert_eq!(db.ensure_facts("alice", &facts).await.expect("ensure_facts").len(), 2);
    assert!(db.ensure_facts("alice", &facts).await.expect("ensure_facts again").is_empty(), "stored once");

    assert_eq!(db.memories_to_embed("m1", 100).await.expect("memories_to_embed").len(), 6, "nothing embedded yet");
    let vectors: Vec<(i64, Vec<f32>)> = ids[..3].iter().map(|id| (*id, vec![*id as f32, 0.5, -1.0])).collect();
    db.set_embeddings("m1", &vectors).await.expect("set_embeddings");
    // A persona's vectors (its index is read at its first search), and the team's recent outputs.
    let alice = db.persona_vectors("m1", "alice", 0, 10).await.expect("persona_vectors");
    assert_eq!(alice.iter().map(|s| s.row.id).collect::<Vec<_>>(), ids[..3].to_vec());
    let paged = db.persona_vectors("m1", "alice", ids[0], 1).await.expect("persona_vectors page");
    assert_eq!(paged.iter().map(|s| s.row.id).collect::<Vec<_>>(), vec![ids[1]], "after an id, limited");
    assert!(db.persona_vectors("m1", "bob", 0, 10).await.expect("persona_vectors bob").is_empty());
    let outputs = db.output_vectors("m1", 0, 0, 10).await.expect("output_vectors");
    assert_eq!(outputs.iter().map(|s| s.row.id).collect::<Vec<_>>(), vec![ids[0], ids[2]], "posts and replies only");
    let future = chorus::store::now_ms() + 60_000;
    assert!(db.output_vectors("m1", future, 0, 10).await.expect("output_vectors since").is_empty(), "by age");
    let stored = db.memory_vectors("m1", 0, 2).await.expect("memory_vectors page 1");
    assert_eq!(stored.iter().map(|s| s.row.id).collect::<Vec<_>>(), ids[..2].to_vec(), "first page, in id order");
    assert_eq!(stored[0].vector, vectors[0].1, "vectors round-trip");
    let rest = db.memory_vectors("m1", stored[1].row.id, 10).await.expect("memory_vectors page 2");
    assert_eq!(rest.iter().map(|s| s.row.id).collect::<Vec<_>>(), vec![ids[2]]);
    assert!(db.memory_vectors("m2", 0, 10).await.expect("other model").is_empty(), "another model's vectors never mix");
    let todo = db.memories_to_embed("m1", 100).await.expect("memories_to_embed m1");
    assert_eq!(todo.len(), 3, "the unembedded rest");
    assert_eq!(db.memories_to_embed("m2", 100).await.expect("memories_to_embed m2").len(), 6, "all, for a new model");
    // A memory stored with its vector is embedded from the start.
    let with_vector =
        insert_memory(db, &new("dora", MemoryKind::Reply, "embedded already"), Some(("m1", &[0.25, 0.5, 1.0]))).await;
    let stored = db.memory_vectors("m1", ids[2], 10).await.expect("memory_vectors after the embedded insert");
    assert_eq!(
        stored.iter().map(|s| (s.row.id, s.vector.clone())).collect::<Vec<_>>(),
        [(with_vector, vec![0.25, 0.5, 1.0])]
    );
    assert_eq!(db.memories_to_embed("m1", 100).await.expect("memories_to_embed m1 again").len(), 3, "not to embed");
    assert_eq!(db.trim_memories("dora", 0).await.expect("trim dora"), [with_vector]);

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

// ----- trading contract -----

const SOL: &str = "So11111111111111111111111111111111111111112";
const USDC: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";

/// A paper trade selling 1 SOL for 150 USDC, worth 150 USD, in `status`.
fn new_trade(persona: &str, status: TradeStatus, approval_expires_at: Option<i64>) -> NewTrade {
    NewTrade {
        persona: persona.to_owned(),
        mode: "paper".to_owned(),
        status,
        input_mint: SOL.to_owned(),
        output_mint: USDC.to_owned(),
        in_amount: 1_000_000_000,
        out_amount: 150_000_000,
        value: 150_000_000,
        slippage_bps: 50,
        reason: "momentum".to_owned(),
        quote: r#"{"inAmount":"1000000000","outAmount":"150000000"}"#.to_owned(),
        approval_expires_at,
    }
}

async fn insert(db: &Db, trade: &NewTrade) -> i64 {
    db.insert_trade(trade).await.unwrap_or_else(|err| panic!("insert_trade {trade:?}: {err}"))
}

async fn status_of(db: &Db, id: i64) -> TradeStatus {
    db.trade(id).await.expect("trade").unwrap_or_else(|| panic!("trade {id} exists")).status
}

/// Waits until the clock has passed `ms`, so a later write gets a strictly later time.
async fn clock_past(ms: i64) {
    while chorus::store::now_ms() <= ms {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

fn balances(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(mint, amount)| (mint.to_string(), *amount)).collect()
}

/// 9. Trades: stored as given, listed newest first with filters, and moved only by
///    compare-and-set transitions along the status graph.
async fn trade_transitions_are_compare_and_set(db: &Db) {
    use TradeStatus::*;
    let before = chorus::store::now_ms();
    let first = insert(db, &new_trade("alice", AwaitingApproval, Some(before + 60_000))).await;
    let row = db.trade(first).await.expect("trade").expect("the trade exists");
    let expected = new_trade("alice", AwaitingApproval, Some(before + 60_000));
    assert_eq!(
        (
            row.id,
            row.persona.as_str(),
            row.mode.as_str(),
            row.status,
            row.input_mint.as_str(),
            row.output_mint.as_str()
        ),
        (first, "alice", "paper", AwaitingApproval, SOL, USDC)
    );
    assert_eq!(
        (row.in_amount, row.out_amount, row.value, row.slippage_bps),
        (1_000_000_000, 150_000_000, 150_000_000, 50)
    );
    assert_eq!((row.reason.as_str(), row.quote.as_str()), (expected.reason.as_str(), expected.quote.as_str()));
    assert_eq!(row.approval_expires_at, Some(before + 60_000));
    assert_eq!((row.signature, row.signed_tx, row.last_valid_block_height), (None, None, None));
    assert_eq!((row.decided_by, row.decided_at, row.error), (None, None, None));
    assert!(row.created_at >= before && row.updated_at == row.created_at, "times are epoch ms");
    assert_eq!(db.trade(first + 1000).await.expect("trade"), None, "unknown id");

    let live = NewTrade { mode: "live".to_owned(), ..new_trade("alice", Approved, None) };
    let second = insert(db, &live).await;
    let bobs = insert(db, &new_trade("bob", Approved, None)).await;
    let bad_mode = NewTrade { mode: "pretend".to_owned(), ..new_trade("alice", Approved, None) };
    assert!(db.insert_trade(&bad_mode).await.is_err(), "a mode other than paper or live is refused");

    let listed = |persona: Option<&'static str>, statuses: &'static [TradeStatus], limit| async move {
        ids(&db.trades(persona, statuses, limit).await.expect("trades"), |row| row.id)
    };
    assert_eq!(listed(None, &[], 10).await, vec![bobs, second, first], "all, newest first");
    assert_eq!(listed(Some("alice"), &[], 10).await, vec![second, first], "per persona");
    assert_eq!(listed(Some("alice"), &[Approved], 10).await, vec![second], "per status");
    assert_eq!(listed(None, &[Approved, AwaitingApproval], 2).await, vec![bobs, second], "statuses and limit");
    assert!(listed(Some("carol"), &[], 10).await.is_empty());

    // A wrong `from` changes nothing, not even updated_at.
    let unchanged = db.trade(first).await.expect("trade");
    assert!(!db.transition_trade(first, &[Approved], Executing, None).await.expect("transition"));
    assert!(!db.transition_trade(first + 1000, &[AwaitingApproval], Approved, None).await.expect("transition"));
    assert!(!db.transition_trade(first, &[], Approved, None).await.expect("transition from nothing"));
    assert_eq!(db.trade(first).await.expect("trade"), unchanged, "a failed compare-and-set changes nothing");
    let illegal = db.transition_trade(first, &[AwaitingApproval], Filled, None).await;
    assert!(illegal.is_err(), "a pair outside the status graph is refused: {illegal:?}");
    assert_eq!(status_of(db, first).await, AwaitingApproval);

    assert!(db.transition_trade(first, &[AwaitingApproval], Approved, None).await.expect("approve"));
    assert!(!db.transition_trade(first, &[AwaitingApproval], Approved, None).await.expect("approve again"));
    assert!(db.transition_trade(first, &[Approved], Executing, None).await.expect("execute"));
    assert!(db.transition_trade(first, &[Executing], Failed, Some("no route")).await.expect("fail"));
    let failed = db.trade(first).await.expect("trade").expect("exists");
    assert_eq!((failed.status, failed.error.as_deref()), (Failed, Some("no route")));
    assert!(failed.updated_at >= unchanged.expect("exists").updated_at);
    let terminal = db.transition_trade(first, &[Failed], Executing, None).await;
    assert!(terminal.is_err(), "failed is terminal");

    // Live: executing → signed (with its fields) → sent → confirmed.
    assert!(!db.record_signed(second, "sig-1", "dHg=", 1_000).await.expect("record_signed"), "approved, not executing");
    assert!(db.transition_trade(second, &[Approved], Executing, None).await.expect("execute"));
    assert!(db.record_signed(second, "sig-1", "dHg=", 1_000).await.expect("record_signed"));
    assert!(!db.record_signed(second, "sig-2", "eHg=", 2_000).await.expect("record_signed again"), "signed once");
    let signed = db.trade(second).await.expect("trade").expect("exists");
    assert_eq!(signed.status, Signed);
    assert_eq!(
        (signed.signature.as_deref(), signed.signed_tx.as_deref(), signed.last_valid_block_height),
        (Some("sig-1"), Some("dHg="), Some(1_000))
    );
    assert!(db.transition_trade(second, &[Signed], Sent, None).await.expect("send"));
    let mixed = db.transition_trade(second, &[Signed, Sent], Confirmed, None).await;
    assert!(mixed.is_err(), "every `from` must be able to become `to` (signed cannot be confirmed): {mixed:?}");
    assert!(db.transition_trade(second, &[Sent], Confirmed, None).await.expect("confirm"));
    let confirmed = db.trade(second).await.expect("trade").expect("exists");
    assert_eq!((confirmed.status, confirmed.error.as_deref()), (Confirmed, None));

    // A signature belongs to one trade.
    assert!(db.transition_trade(bobs, &[Approved], Executing, None).await.expect("execute bob's"));
    assert!(db.record_signed(bobs, "sig-1", "dHg=", 1_000).await.is_err(), "a signature is unique");
    assert_eq!(status_of(db, bobs).await, Executing, "the refused signature changed nothing");

    let json = serde_json::to_value(&confirmed).expect("serialize a trade");
    assert_eq!(json["status"], "confirmed", "the status serializes as its string");
    assert_eq!(json["in_amount"], 1_000_000_000u64);
}

/// 10. Decisions: one approval takes effect, a second finds nothing awaiting; a rejection; an
///     expired trade cannot be approved (it becomes expired).
async fn decide_trade_approves_once_rejects_and_refuses_expired(db: &Db) {
    use TradeStatus::*;
    let now = chorus::store::now_ms();
    let approved = insert(db, &new_trade("alice", AwaitingApproval, Some(now + 60_000))).await;
    let Decided::Done(row) = db.decide_trade(approved, true, "operator", now).await.expect("approve") else {
        panic!("the first approval takes effect");
    };
    assert_eq!(
        (row.id, row.status, row.decided_by.as_deref(), row.decided_at),
        (approved, Approved, Some("operator"), Some(now))
    );
    assert_eq!(db.trade(approved).await.expect("trade"), Some(row.clone()), "the returned row is the stored row");
    let again = db.decide_trade(approved, true, "someone else", now).await.expect("approve again");
    assert_eq!(again, Decided::NotAwaiting(Some(row.clone())), "the second approval changes nothing");
    let reject_late = db.decide_trade(approved, false, "someone else", now).await.expect("reject after approval");
    assert_eq!(reject_late, Decided::NotAwaiting(Some(row)));
    assert_eq!(db.decide_trade(approved + 1000, true, "x", now).await.expect("unknown"), Decided::NotAwaiting(None));

    let no_expiry = insert(db, &new_trade("alice", AwaitingApproval, None)).await;
    let Decided::Done(row) = db.decide_trade(no_expiry, false, "operator", now).await.expect("reject") else {
        panic!("a rejection takes effect");
    };
    assert_eq!((row.status, row.decided_by.as_deref()), (Rejected, Some("operator")));

    let late = insert(db, &new_trade("alice", AwaitingApproval, Some(now))).await;
    let Decided::Expired(row) = db.decide_trade(late, true, "operator", now).await.expect("approve late") else {
        panic!("a trade at its expiry cannot be approved");
    };
    assert_eq!((row.status, row.decided_by, row.decided_at), (Expired, None, None), "nobody decided in time");
    assert_eq!(status_of(db, late).await, Expired);
    let again = db.decide_trade(late, true, "operator", now - 1).await.expect("approve again");
    assert!(matches!(again, Decided::NotAwaiting(Some(ref row)) if row.status == Expired), "{again:?}");

    let not_awaiting = insert(db, &new_trade("alice", Approved, None)).await;
    let decided = db.decide_trade(not_awaiting, false, "operator", now).await.expect("reject an approved trade");
    assert!(matches!(decided, Decided::NotAwaiting(Some(ref row)) if row.status == Approved), "{decided:?}");
}

/// 11. Twenty concurrent approvals of one trade: exactly one takes effect.
async fn concurrent_approvals_of_one_trade_decide_once(db: &Db) {
    const CALLS: usize = 20;
    let now = chorus::store::now_ms();
    let id = insert(db, &new_trade("alice", TradeStatus::AwaitingApproval, Some(now + 60_000))).await;
    let tasks: Vec<_> = (0..CALLS)
        .map(|call| {
            let db = db.clone();
            tokio::spawn(async move { db.decide_trade(id, true, &format!("operator {call}"), now).await })
        })
        .collect();
    let mut done = Vec::new();
    for (call, task) in tasks.into_iter().enumerate() {
        let result = task.await.unwrap_or_else(|err| panic!("decide task {call} panicked: {err}"));
        match result.unwrap_or_else(|err| panic!("decide call {call} failed: {err:?}")) {
            Decided::Done(row) => done.push(row),
            Decided::NotAwaiting(Some(row)) => assert_eq!(row.status, TradeStatus::Approved),
            other => panic!("call {call}: unexpected {other:?}"),
        }
    }
    assert_eq!(done.len(), 1, "exactly one approval takes effect");
    assert_eq!(db.trade(id).await.expect("trade"), Some(done.remove(0)), "and its decider is the one stored");
}

/// 12. The expiry sweep: awaiting trades at or past their expiry, and nothing else.
async fn expire_approvals_expires_only_overdue_awaiting_trades(db: &Db) {
    use TradeStatus::*;
    let now = chorus::store::now_ms();
    let overdue = insert(db, &new_trade("alice", AwaitingApproval, Some(now - 1))).await;
    let due_now = insert(db, &new_trade("bob", AwaitingApproval, Some(now))).await;
    let later = insert(db, &new_trade("alice", AwaitingApproval, Some(now + 60_000))).await;
    let forever = insert(db, &new_trade("alice", AwaitingApproval, None)).await;
    let approved = insert(db, &new_trade("alice", Approved, Some(now - 1))).await;

    let expired = db.expire_approvals(now).await.expect("expire_approvals");
    assert_eq!(ids(&expired, |row| row.id), vec![overdue, due_now]);
    assert!(expired.iter().all(|row| row.status == Expired && row.decided_by.is_none()));
    for (id, status) in [(overdue, Expired), (due_now, Expired), (later, AwaitingApproval), (forever, AwaitingApproval)]
    {
        assert_eq!(status_of(db, id).await, status, "trade {id}");
    }
    assert_eq!(status_of(db, approved).await, Approved, "only awaiting trades expire");
    assert!(db.expire_approvals(now).await.expect("expire_approvals again").is_empty(), "expired once");
    let expired = db.expire_approvals(now + 60_000).await.expect("expire_approvals later");
    assert_eq!(ids(&expired, |row| row.id), vec![later]);
}

/// 13. Paper accounts: seeded on the first start only, in one go; the starting value is set once.
async fn paper_seed_runs_once_and_starting_value_is_set_once(db: &Db) {
    assert!(db.paper_balances("alice").await.expect("paper_balances").is_empty());
    assert_eq!(db.paper_starting_value("alice").await.expect("paper_starting_value"), None);
    assert!(!db.set_paper_starting_value("alice", 5).await.expect("set before the account exists"));

    let seed = vec![(SOL.to_owned(), 10_000_000_000), (USDC.to_owned(), 500_000_000)];
    assert!(db.paper_seed("alice", &seed).await.expect("paper_seed"), "the first start seeds");
    assert_eq!(
        db.paper_balances("alice").await.expect("paper_balances"),
        balances(&[(SOL, 10_000_000_000), (USDC, 500_000_000)])
    );
    assert!(!db.paper_seed("alice", &[(SOL.to_owned(), 1)]).await.expect("paper_seed again"), "seeded once");
    assert_eq!(db.paper_balances("alice").await.expect("paper_balances").get(SOL), Some(&10_000_000_000));
    assert!(db.paper_seed("bob", &[]).await.expect("paper_seed with nothing"), "an empty portfolio is still seeded");
    assert!(!db.paper_seed("bob", &seed).await.expect("paper_seed bob again"));
    assert!(db.paper_balances("bob").await.expect("paper_balances bob").is_empty());

    let twice = vec![(SOL.to_owned(), 1), (SOL.to_owned(), 2)];
    assert!(db.paper_seed("carol", &twice).await.is_err(), "a mint listed twice is refused");
    assert!(db.paper_balances("carol").await.expect("paper_balances carol").is_empty(), "nothing was seeded");
    assert!(db.paper_seed("carol", &seed[..1]).await.expect("paper_seed carol"), "the refused seed left no account");

    assert_eq!(db.paper_starting_value("alice").await.expect("paper_starting_value"), None, "not priced yet");
    assert!(db.set_paper_starting_value("alice", 2_000_000_000).await.expect("set_paper_starting_value"));
    assert!(!db.set_paper_starting_value("alice", 1).await.expect("set again"), "set once");
    assert_eq!(db.paper_starting_value("alice").await.expect("paper_starting_value"), Some(2_000_000_000));
    assert_eq!(db.paper_starting_value("bob").await.expect("paper_starting_value bob"), None);
}

/// 14. Paper fills: exact debit and credit with the trade filled, in one transaction; a short
///     balance, a trade not executing and a second fill change nothing.
async fn paper_fill_moves_balances_exactly_once(db: &Db) {
    use TradeStatus::*;
    let bonk = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263";
    assert!(db.paper_seed("alice", &[(SOL.to_owned(), 3_000), (USDC.to_owned(), 100)]).await.expect("paper_seed"));
    let seeded = balances(&[(SOL, 3_000), (USDC, 100)]);

    let trade = insert(db, &new_trade("alice", Approved, None)).await;
    let fill = |id, input, in_amount, output, out_amount| async move {
        db.paper_fill(id, "alice", input, in_amount, output, out_amount).await.expect("paper_fill")
    };
    assert_eq!(fill(trade, SOL, 1_000, USDC, 150).await, PaperFill::NotExecuting, "approved, not executing");
    assert_eq!(db.paper_balances("alice").await.expect("paper_balances"), seeded, "nothing moved");
    assert_eq!(status_of(db, trade).await, Approved);

    assert!(db.transition_trade(trade, &[Approved], Executing, None).await.expect("execute"));
    let other_persona = db.paper_fill(trade, "bob", SOL, 1_000, USDC, 150).await.expect("paper_fill as bob");
    assert_eq!(other_persona, PaperFill::NotExecuting, "another persona's trade is not filled");
    assert_eq!(fill(trade, SOL, 3_001, USDC, 150).await, PaperFill::Insufficient { balance: 3_000 });
    assert_eq!(fill(trade, bonk, 1, USDC, 150).await, PaperFill::Insufficient { balance: 0 }, "no balance at all");
    assert_eq!(db.paper_balances("alice").await.expect("paper_balances"), seeded, "a short balance moves nothing");
    assert_eq!(status_of(db, trade).await, Executing, "and leaves the trade executing");

    let expected = balances(&[(SOL, 2_000), (USDC, 250)]);
    assert_eq!(fill(trade, SOL, 1_000, USDC, 150).await, PaperFill::Filled { balances: expected.clone() });
    assert_eq!(status_of(db, trade).await, Filled);
    assert_eq!(db.paper_balances("alice").await.expect("paper_balances"), expected);
    assert_eq!(fill(trade, SOL, 1_000, USDC, 150).await, PaperFill::NotExecuting, "no second fill");
    assert_eq!(db.paper_balances("alice").await.expect("paper_balances"), expected, "nothing moved twice");

    // The whole input balance, into a mint not held yet.
    let second = insert(db, &new_trade("alice", Executing, None)).await;
    let expected = balances(&[(SOL, 2_000), (USDC, 0), (bonk, 7_000_000)]);
    assert_eq!(fill(second, USDC, 250, bonk, 7_000_000).await, PaperFill::Filled { balances: expected.clone() });
    assert!(db.paper_balances("bob").await.expect("paper_balances bob").is_empty(), "per persona");

    // A credit past i64::MAX is an error and rolls everything back.
    let third = insert(db, &new_trade("alice", Executing, None)).await;
    let overflow = db.paper_fill(third, "alice", SOL, 1, bonk, i64::MAX as u64).await;
    assert!(overflow.is_err(), "an overflowing credit is refused: {overflow:?}");
    assert_eq!(db.paper_balances("alice").await.expect("paper_balances"), expected, "nothing moved");
    assert_eq!(status_of(db, third).await, Executing, "the trade is still executing");
    assert_eq!(
        fill(third, SOL, 1, bonk, i64::MAX as u64 - 7_000_000).await,
        PaperFill::Filled { balances: balances(&[(SOL, 1_999), (USDC, 0), (bonk, i64::MAX as u64)]) },
        "up to i64::MAX exactly"
    );
}

/// 14b. Concurrent fills: twenty fills of one trade fill it once; fills of many trades never
///      overdraw a balance, and fills in opposite directions do not deadlock.
async fn concurrent_paper_fills_never_double_fill_or_overdraw(db: &Db) {
    use TradeStatus::*;
    assert!(db.paper_seed("alice", &[(SOL.to_owned(), 10), (USDC.to_owned(), 1_000)]).await.expect("paper_seed"));
    let one = insert(db, &new_trade("alice", Executing, None)).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.paper_fill(one, "alice", SOL, 1, USDC, 100).await })
        })
        .collect();
    let mut filled = 0;
    for (call, task) in tasks.into_iter().enumerate() {
        match task.await.expect("fill task").unwrap_or_else(|err| panic!("fill call {call} failed: {err:?}")) {
            PaperFill::Filled { .. } => filled += 1,
            PaperFill::NotExecuting => {}
            other => panic!("call {call}: unexpected {other:?}"),
        }
    }
    assert_eq!(filled, 1, "one trade fills once");
    assert_eq!(db.paper_balances("alice").await.expect("paper_balances"), balances(&[(SOL, 9), (USDC, 1_100)]));

    // Twelve sells of 1 SOL against 9 SOL, and eight buys of 1 SOL for 100 USDC, all at once.
    let mut trades = Vec::new();
    for n in 0..20 {
        let id = insert(db, &new_trade("alice", Executing, None)).await;
        let (input, in_amount, output, out_amount) = if n % 5 < 3 { (SOL, 1, USDC, 100) } else { (USDC, 100, SOL, 1) };
        trades.push((id, input, in_amount, output, out_amount));
    }
    let tasks: Vec<_> = trades
        .iter()
        .map(|&(id, input, in_amount, output, out_amount)| {
            let db = db.clone();
            tokio::spawn(async move { db.paper_fill(id, "alice", input, in_amount, output, out_amount).await })
        })
        .collect();
    let (mut sells, mut buys) = (0, 0);
    for (task, (id, input, ..)) in tasks.into_iter().zip(&trades) {
        match task.await.expect("fill task").unwrap_or_else(|err| panic!("fill of trade {id} failed: {err:?}")) {
            PaperFill::Filled { .. } if *input == SOL => sells += 1,
            PaperFill::Filled { .. } => buys += 1,
            PaperFill::Insufficient { .. } => assert_eq!(status_of(db, *id).await, Executing),
            PaperFill::NotExecuting => panic!("trade {id} was executing"),
        }
    }
    let after = db.paper_balances("alice").await.expect("paper_balances");
    assert_eq!(after[SOL], 9 + buys - sells, "every SOL accounted for");
    assert_eq!(after[USDC], 1_100 + 100 * sells - 100 * buys, "every USDC accounted for");
    assert!(sells + buys > 0);
    let filled_trades = db.trades(Some("alice"), &[Filled], 100).await.expect("trades").len() as u64;
    assert_eq!(filled_trades, 1 + sells + buys, "a trade is filled exactly when its balances moved");
}

/// 15. Executed value: the sum of `value` of trades that may have executed, counted from when
///     they entered `executing`, with the latest such time.
async fn executed_value_since_sums_only_executed_trades(db: &Db) {
    use TradeStatus::*;
    let start = chorus::store::now_ms();
    assert_eq!(db.executed_value_since("alice", 0).await.expect("executed_value_since"), (0, None));
    assert!(db.paper_seed("alice", &[(SOL.to_owned(), 10)]).await.expect("paper_seed"));
    let with_value = |value| NewTrade { value, ..new_trade("alice", Approved, None) };

    let filled = insert(db, &with_value(1)).await;
    assert!(db.transition_trade(filled, &[Approved], Executing, None).await.expect("execute"));
    let fill = db.paper_fill(filled, "alice", SOL, 0, USDC, 0).await.expect("paper_fill");
    assert!(matches!(fill, PaperFill::Filled { .. }), "{fill:?}");
    let first_batch = chorus::store::now_ms();
    clock_past(first_batch).await;

    let executing = insert(db, &with_value(10)).await;
    let failed = insert(db, &with_value(100)).await;
    let signed = insert(db, &NewTrade { mode: "live".to_owned(), ..with_value(1_000) }).await;
    let _approved = insert(db, &with_value(10_000)).await;
    let _awaiting = insert(db, &NewTrade { value: 100_000, ..new_trade("alice", AwaitingApproval, None) }).await;
    let _bobs = insert(db, &NewTrade { value: 1_000_000, ..new_trade("bob", Executing, None) }).await;
    for id in [executing, failed, signed] {
        assert!(db.transition_trade(id, &[Approved], Executing, None).await.expect("execute"));
    }
    assert!(db.transition_trade(failed, &[Executing], Failed, Some("no route")).await.expect("fail"));
    assert!(db.record_signed(signed, "sig-a", "dHg=", 5).await.expect("record_signed"));
    let end = chorus::store::now_ms();

    let (all, latest) = db.executed_value_since("alice", start).await.expect("executed_value_since start");
    assert_eq!(all, 1_011, "filled, executing and signed; not failed, approved, awaiting or bob's");
    let latest = latest.expect("a latest execution");
    assert!(latest > first_batch && latest <= end, "latest {latest} within ({first_batch}, {end}]");
    let (recent, recent_latest) = db.executed_value_since("alice", first_batch + 1).await.expect("since the batch");
    assert_eq!((recent, recent_latest), (1_010, Some(latest)), "the first fill is before the window");
    assert_eq!(db.executed_value_since("alice", end + 1).await.expect("since the end"), (0, None));
    assert_eq!(db.executed_value_since("bob", start).await.expect("bob").0, 1_000_000, "inserted executing");
}

/// 16. The trading audit trail: JSON detail round-trips, newest first, by persona and by trade.
async fn trade_audit_is_newest_first_with_filters(db: &Db) {
    let before = chorus::store::now_ms();
    let detail = serde_json::json!({ "reason": "momentum", "amounts": [1, 2, u64::MAX], "nested": { "ok": true } });
    let events = [
        ("alice", Some(1), "proposed", detail.clone()),
        ("alice", None, "kill_switch", serde_json::json!(null)),
        ("bob", Some(2), "proposed", serde_json::json!({})),
        ("alice", Some(1), "approved", serde_json::json!({ "by": "operator" })),
    ];
    let mut inserted = Vec::new();
    for (persona, trade_id, event, detail) in &events {
        let audit = NewAudit { persona, trade_id: *trade_id, event, detail: detail.clone() };
        inserted.push(db.insert_audit(&audit).await.expect("insert_audit"));
    }
    let all = db.audit(None, None, 10).await.expect("audit");
    assert_eq!(ids(&all, |event| event.id), inserted.iter().rev().copied().collect::<Vec<_>>(), "newest first");
    let proposed = all.last().expect("the first event");
    assert_eq!((proposed.persona.as_str(), proposed.trade_id, proposed.event.as_str()), ("alice", Some(1), "proposed"));
    assert_eq!(proposed.detail, detail, "the JSON detail round-trips");
    assert!(proposed.at >= before);
    assert_eq!(all[2].detail, serde_json::Value::Null);

    let alice = db.audit(Some("alice"), None, 10).await.expect("audit alice");
    assert_eq!(ids(&alice, |event| event.id), vec![inserted[3], inserted[1], inserted[0]]);
    let trade_1 = db.audit(None, Some(1), 10).await.expect("audit trade 1");
    assert_eq!(ids(&trade_1, |event| event.id), vec![inserted[3], inserted[0]]);
    let both = db.audit(Some("bob"), Some(1), 10).await.expect("audit bob's trade 1");
    assert!(both.is_empty(), "both filters apply");
    assert_eq!(ids(&db.audit(Some("alice"), None, 1).await.expect("audit"), |event| event.id), vec![inserted[3]]);
    let json = serde_json::to_value(&trade_1[0]).expect("serialize an audit event");
    assert_eq!(json["detail"]["by"], "operator");
}

/// 17. Flags: absent, set, overwritten with who and when.
async fn trading_flags_are_upserted(db: &Db) {
    let before = chorus::store::now_ms();
    assert_eq!(db.flag("kill_switch").await.expect("flag"), None);
    db.set_flag("kill_switch", "on", "operator").await.expect("set_flag");
    let (value, by, at) = db.flag("kill_switch").await.expect("flag").expect("set");
    assert_eq!((value.as_str(), by.as_str()), ("on", "operator"));
    assert!(at >= before);
    db.set_flag("kill_switch", "off", "admin-api").await.expect("set_flag again");
    let (value, by, later) = db.flag("kill_switch").await.expect("flag").expect("set");
    assert_eq!((value.as_str(), by.as_str()), ("off", "admin-api"), "overwritten");
    assert!(later >= at);
    assert_eq!(db.flag("other").await.expect("flag"), None, "per name");
}

/// 18. Amounts above i64::MAX are refused with an error, never wrapped, and change nothing.
async fn trading_amounts_above_i64_max_are_refused(db: &Db) {
    use TradeStatus::*;
    let too_big = i64::MAX as u64 + 1;
    for trade in [
        NewTrade { in_amount: too_big, ..new_trade("alice", Approved, None) },
        NewTrade { out_amount: u64::MAX, ..new_trade("alice", Approved, None) },
        NewTrade { value: too_big, ..new_trade("alice", Approved, None) },
    ] {
        let err = db.insert_trade(&trade).await.expect_err("an amount above i64::MAX is refused");
        assert!(!err.is_transient(), "{err}");
    }
    assert!(db.trades(None, &[], 10).await.expect("trades").is_empty(), "no trade was stored");

    let biggest = NewTrade { in_amount: i64::MAX as u64, value: i64::MAX as u64, ..new_trade("alice", Approved, None) };
    let id = insert(db, &biggest).await;
    let row = db.trade(id).await.expect("trade").expect("exists");
    assert_eq!((row.in_amount, row.value), (i64::MAX as u64, i64::MAX as u64), "i64::MAX round-trips");

    assert!(db.paper_seed("alice", &[(SOL.to_owned(), 5), (USDC.to_owned(), too_big)]).await.is_err());
    assert!(db.paper_balances("alice").await.expect("paper_balances").is_empty(), "nothing was seeded");
    assert!(
        db.paper_seed("alice", &[(SOL.to_owned(), 5)]).await.expect("paper_seed"),
        "the refused seed left no account"
    );
    assert!(db.set_paper_starting_value("alice", too_big).await.is_err());
    assert_eq!(db.paper_starting_value("alice").await.expect("paper_starting_value"), None);

    assert!(db.transition_trade(id, &[Approved], Executing, None).await.expect("execute"));
    assert!(db.paper_fill(id, "alice", SOL, too_big, USDC, 1).await.is_err(), "in_amount");
    assert!(db.paper_fill(id, "alice", SOL, 1, USDC, u64::MAX).await.is_err(), "out_amount");
    assert_eq!(db.paper_balances("alice").await.expect("paper_balances"), balances(&[(SOL, 5)]), "nothing moved");
    assert!(db.record_signed(id, "sig", "dHg=", too_big).await.is_err(), "block height");
    assert_eq!(status_of(db, id).await, Executing, "the trade is untouched");
}

// ----- content pipeline contract -----

use chorus::platform::Engagement;
use chorus::store::{
    AirlockRefusal, Approval, ContentEvent, ContentFilter, ContentItem, NewContent, NewPlanned, StoredAssignment,
};

const FLAGS: &str = r#"[{"rule":"first_post","action":"hold","reason":"a first post"}]"#;

fn planned(key: &str, persona: &str, due_at: i64, topic: Option<&str>) -> NewPlanned {
    NewPlanned {
        idempotency_key: key.to_owned(),
        persona: persona.to_owned(),
        platform: "local".to_owned(),
        due_at,
        topic: topic.map(str::to_owned),
        campaign: None,
    }
}

/// An item of alice's on the local platform that starts at `stage`; a reply answers `remote-42`.
fn new_content(stage: &'static str, key: &str, kind: &str, submitted_by: &str, inbound_id: Option<i64>) -> NewContent {
    NewContent {
        stage,
        idempotency_key: key.to_owned(),
        persona: "alice".to_owned(),
        platform: "local".to_owned(),
        kind: kind.to_owned(),
        reply_to: (kind == "reply").then(|| "remote-42".to_owned()),
        conversation: Some("conv-1".to_owned()),
        inbound_id,
        submitted_by: submitted_by.to_owned(),
    }
}

async fn start(db: &Db, item: &NewContent) -> i64 {
    db.start_content(item).await.unwrap_or_else(|err| panic!("start_content {}: {err}", item.idempotency_key))
}

async fn content(db: &Db, id: i64) -> ContentItem {
    db.content_item(id).await.expect("content_item").unwrap_or_else(|| panic!("content item {id} exists"))
}

async fn content_id(db: &Db, key: &str) -> i64 {
    db.content_by_key(key).await.expect("content_by_key").unwrap_or_else(|| panic!("content item {key} exists")).id
}

/// An item's stage log as (stage, outcome) pairs.
async fn trail(db: &Db, id: i64) -> Vec<(String, String)> {
    let events = db.content_events(id).await.expect("content_events");
    events.into_iter().map(|event| (event.stage, event.outcome)).collect()
}

async fn last_event(db: &Db, id: i64) -> ContentEvent {
    let events = db.content_events(id).await.expect("content_events");
    events.last().cloned().unwrap_or_else(|| panic!("item {id} has events"))
}

/// A reply of alice's (submitted by `submitted_by`) held in the airlock with the text
/// "draft text" until `expires_at`.
async fn held(db: &Db, key: &str, submitted_by: &str, inbound_id: Option<i64>, expires_at: i64) -> i64 {
    let id = start(db, &new_content("generating", key, "reply", submitted_by, inbound_id)).await;
    db.hold_content(id, "draft text", Some(FLAGS), "a first post", expires_at, "alice").await.expect("hold_content");
    id
}

async fn inbound_id(db: &Db, remote_id: &str, persona: &str) -> i64 {
    let id = insert_inbound(db, &inbound("local", remote_id, persona, false, "conv-1")).await.expect("insert_inbound");
    id.unwrap_or_else(|| panic!("({remote_id}, {persona}) is new")).id
}

async fn inbound_state_of(db: &Db, remote_id: &str, persona: &str) -> Option<String> {
    db.inbound_state("local", remote_id, persona).await.expect("inbound_state")
}

/// Queues and publishes alice's post `key` as `remote_id`; returns its content item.
async fn publish(db: &Db, key: &str, remote_id: &str) -> i64 {
    db.enqueue(&outbox_item(key, "post", key), None).await.expect("enqueue");
    let row = db.outbox_row(key).await.expect("outbox_row").expect("the row exists");
    mark_sent(db, &row, remote_id).await;
    content_id(db, key).await
}

/// 19. Planned posts: stored once per key with a `plan` event, due oldest first, dispatched
///     once, dropped only while planned; an agent resumes only its own dispatched posts.
async fn planned_posts_are_stored_once_dispatched_once_and_dropped_only_when_planned(db: &Db) {
    let now = chorus::store::now_ms();
    let posts = [
        planned("plan:alice:1", "alice", now - 3_000, Some("gardening")),
        planned("plan:alice:2", "alice", now - 1_000, None),
        planned("plan:bob:1", "bob", now - 2_000, Some("soil")),
        planned("plan:alice:3", "alice", now + 60_000, Some("later")),
    ];
    assert_eq!(db.plan_posts(&posts).await.expect("plan_posts"), 4);
    assert_eq!(db.plan_posts(&posts).await.expect("plan_posts again"), 0, "stored once per key");
    assert_eq!(db.plan_posts(&[]).await.expect("plan_posts of nothing"), 0);
    let changed = NewPlanned { topic: Some("changed".to_owned()), ..posts[0].clone() };
    let mixed = [changed, planned("plan:bob:2", "bob", now + 120_000, None)];
    assert_eq!(db.plan_posts(&mixed).await.expect("plan_posts mixed"), 1, "only the new key counts");

    let [alice_1, alice_2, bob_1, alice_3] = [
        content_id(db, "plan:alice:1").await,
        content_id(db, "plan:alice:2").await,
        content_id(db, "plan:bob:1").await,
        content_id(db, "plan:alice:3").await,
    ];
    let first = content(db, alice_1).await;
    assert_eq!(
        (first.persona.as_str(), first.platform.as_str(), first.kind.as_str(), first.stage.as_str()),
        ("alice", "local", "post", "planned")
    );
    assert_eq!((first.topic.as_deref(), first.due_at), (Some("gardening"), Some(now - 3_000)), "not overwritten");
    assert_eq!((first.submitted_by.as_str(), first.campaign, first.text), ("alice", None, None));
    let events = db.content_events(alice_1).await.expect("content_events");
    assert_eq!(events.len(), 1, "one plan event, none for the second call: {events:?}");
    let ContentEvent { stage, outcome, detail, actor, at } = &events[0];
    assert_eq!(
        (stage.as_str(), outcome.as_str(), detail.as_deref(), actor.as_str()),
        ("plan", "planned", Some("topic: gardening"), "team_leader")
    );
    assert!(*at >= now, "the event time is epoch ms");
    assert_eq!(last_event(db, alice_2).await.detail, None, "no topic, no detail");

    let due =
        |now: i64, limit: i64| async move { ids(&db.due_planned(now, limit).await.expect("due_planned"), |i| i.id) };
    assert_eq!(due(now, 10).await, vec![alice_1, bob_1, alice_2], "due by now, oldest first");
    assert_eq!(due(now, 2).await, vec![alice_1, bob_1], "limit");
    assert_eq!(due(now - 2_000, 10).await, vec![alice_1, bob_1], "due_at == now is due");
    assert!(due(now - 3_001, 10).await.is_empty());

    assert!(db.dispatch_planned(alice_1).await.expect("dispatch_planned"));
    assert!(!db.dispatch_planned(alice_1).await.expect("dispatch_planned again"), "dispatched once");
    assert!(!db.dispatch_planned(alice_1 + 1_000).await.expect("dispatch_planned unknown"));
    assert_eq!(content(db, alice_1).await.stage, "dispatched");
    assert_eq!(trail(db, alice_1).await, pairs(&[("plan", "planned"), ("dispatch", "dispatched")]));
    assert_eq!(last_event(db, alice_1).await.actor, "team_leader");
    assert_eq!(due(now, 10).await, vec![bob_1, alice_2], "a dispatched post is no longer due");

    assert!(!db.drop_missed(alice_1, "too late").await.expect("drop_missed dispatched"), "only planned posts");
    assert_eq!(content(db, alice_1).await.stage, "dispatched");
    assert!(db.drop_missed(alice_2, "agent busy").await.expect("drop_missed"));
    let dropped = content(db, alice_2).await;
    assert_eq!((dropped.stage.as_str(), dropped.reason.as_deref()), ("dropped", Some("agent busy")));
    let event = last_event(db, alice_2).await;
    assert_eq!(
        (event.stage.as_str(), event.outcome.as_str(), event.detail.as_deref()),
        ("dispatch", "dropped", Some("agent busy"))
    );
    assert!(!db.drop_missed(alice_2, "again").await.expect("drop_missed again"));
    assert!(!db.dispatch_planned(alice_2).await.expect("dispatch a dropped post"));
    assert_eq!(trail(db, alice_2).await, pairs(&[("plan", "planned"), ("dispatch", "dropped")]));
    assert_eq!(due(now, 10).await, vec![bob_1]);

    // Not alice's local dispatched posts: a dispatched reply, a post on another platform, a
    // post at another stage, bob's.
    assert!(db.dispatch_planned(alice_3).await.expect("dispatch alice_3"));
    assert!(db.dispatch_planned(bob_1).await.expect("dispatch bob_1"));
    let reply = start(db, &new_content("dispatched", "reply:alice:x", "reply", "alice", None)).await;
    let elsewhere = NewPlanned { platform: "mastodon".to_owned(), ..planned("plan:alice:m", "alice", now, None) };
    assert_eq!(db.plan_posts(&[elsewhere]).await.expect("plan_posts mastodon"), 1);
    assert!(db.dispatch_planned(content_id(db, "plan:alice:m").await).await.expect("dispatch mastodon"));
    start(db, &new_content("generating", "post:alice:g", "post", "alice", None)).await;

    let resumed = db.dispatched_posts("alice", "local").await.expect("dispatched_posts alice");
    assert_eq!(ids(&resumed, |i| i.id), vec![alice_1, alice_3], "alice's dispatched local posts, by due time");
    assert!(!ids(&resumed, |i| i.id).contains(&reply), "never a reply");
    let bobs = db.dispatched_posts("bob", "local").await.expect("dispatched_posts bob");
    assert_eq!(ids(&bobs, |i| i.id), vec![bob_1]);
    let mastodon = db.dispatched_posts("alice", "mastodon").await.expect("dispatched_posts mastodon");
    assert_eq!(ids(&mastodon, |i| i.id), vec![content_id(db, "plan:alice:m").await]);
    assert!(db.dispatched_posts("carol", "local").await.expect("dispatched_posts carol").is_empty());
}

/// 20. Items started at the generate stage: one per key; dropped, blocked (the mention is not
///     answered), held (the mention leaves the agent's queue) or flagged on the way out.
async fn started_content_is_dropped_blocked_held_or_flagged(db: &Db) {
    let before = chorus::store::now_ms();
    let m1 = inbound_id(db, "m1", "alice").await;
    let m2 = inbound_id(db, "m2", "alice").await;
    let m3 = inbound_id(db, "m3", "alice").await;

    let reply = new_content("generating", "reply:alice:local:m1", "reply", "alice", Some(m1));
    let id = start(db, &reply).await;
    let again = NewContent { stage: "submitted", submitted_by: "bob".to_owned(), inbound_id: None, ..reply.clone() };
    assert_eq!(start(db, &again).await, id, "the same key returns the same item");
    let item = content(db, id).await;
    assert_eq!(
        (item.stage.as_str(), item.kind.as_str(), item.submitted_by.as_str(), item.inbound_id),
        ("generating", "reply", "alice", Some(m1)),
        "the second start changed nothing"
    );
    assert_eq!((item.reply_to.as_deref(), item.conversation.as_deref()), (Some("remote-42"), Some("conv-1")));
    assert_eq!((item.text, item.flags, item.due_at), (None, None, None));
    assert!(item.created_at >= before && item.updated_at >= item.created_at);
    assert_eq!(db.reply_stage("reply:alice:local:m1").await.expect("reply_stage").as_deref(), Some("generating"));

    let post = start(db, &new_content("submitted", "post:operator:1", "post", "operator", None)).await;
    assert_ne!(post, id);
    let item = content(db, post).await;
    assert_eq!((item.stage.as_str(), item.submitted_by.as_str(), item.reply_to), ("submitted", "operator", None));

    db.drop_content(post, "empty generation", "alice").await.expect("drop_content");
    let dropped = content(db, post).await;
    assert_eq!((dropped.stage.as_str(), dropped.reason.as_deref()), ("dropped", Some("empty generation")));
    assert_eq!(
        db.content_events(post)
            .await
            .expect("content_events")
            .into_iter()
            .map(|e| (e.stage, e.outcome, e.detail, e.actor))
            .collect::<Vec<_>>(),
        vec![("generate".to_owned(), "dropped".to_owned(), Some("empty generation".to_owned()), "alice".to_owned())]
    );

    let blocked = start(db, &new_content("generating", "reply:alice:local:m2", "reply", "alice", Some(m2))).await;
    let link_flags = r#"[{"rule":"link","action":"block","reason":"links are not allowed"}]"#;
    db.block_content(blocked, "buy at http://x", link_flags, "links are not allowed", "reviewer").await.expect("block");
    let item = content(db, blocked).await;
    assert_eq!(
        (item.stage.as_str(), item.text.as_deref(), item.flags.as_deref(), item.reason.as_deref()),
        ("blocked", Some("buy at http://x"), Some(link_flags), Some("links are not allowed"))
    );
    let event = last_event(db, blocked).await;
    assert_eq!(
        (event.stage.as_str(), event.outcome.as_str(), event.detail.as_deref(), event.actor.as_str()),
        ("review", "blocked", Some("links are not allowed"), "reviewer")
    );
    assert_eq!(
        inbound_state_of(db, "m2", "alice").await.as_deref(),
        Some("ignored"),
        "a blocked reply answers nothing"
    );
    assert!(!db.outbox_exists("reply:alice:local:m2").await.expect("outbox_exists"), "never queued");

    let hold_until = before + 600_000;
    let holding = start(db, &new_content("generating", "reply:alice:local:m3", "reply", "alice", Some(m3))).await;
    db.hold_content(holding, "a draft", Some(FLAGS), "a first post", hold_until, "alice").await.expect("hold_content");
    let item = content(db, holding).await;
    assert_eq!(
        (item.stage.as_str(), item.text.as_deref(), item.flags.as_deref(), item.reason.as_deref(), item.expires_at),
        ("held", Some("a draft"), Some(FLAGS), Some("a first post"), Some(hold_until))
    );
    let event = last_event(db, holding).await;
    assert_eq!(
        (event.stage.as_str(), event.outcome.as_str(), event.detail.as_deref(), event.actor.as_str()),
        ("approve", "held", Some("a first post"), "alice")
    );
    assert_eq!(inbound_state_of(db, "m3", "alice").await.as_deref(), Some("held"));
    let pending = db.pending_inbound("alice", "local", 10).await.expect("pending_inbound");
    assert_eq!(ids(&pending, |row| row.id), vec![m1], "blocked and held mentions are no longer pending");
    assert_eq!(db.reply_stage("reply:alice:local:m3").await.expect("reply_stage").as_deref(), Some("held"));

    db.set_content_flags(id, "the final text", Some(FLAGS)).await.expect("set_content_flags");
    let item = content(db, id).await;
    assert_eq!(
        (item.stage.as_str(), item.text.as_deref(), item.flags.as_deref()),
        ("generating", Some("the final text"), Some(FLAGS))
    );
    db.set_content_flags(id, "clean text", None).await.expect("set_content_flags without flags");
    let item = content(db, id).await;
    assert_eq!((item.text.as_deref(), item.flags), (Some("clean text"), None), "flags cleared");

    db.content_event(id, "adapt", "shortened", Some("to 280 characters"), "alice").await.expect("content_event");
    let event = last_event(db, id).await;
    assert_eq!(
        (event.stage.as_str(), event.outcome.as_str(), event.detail.as_deref(), event.actor.as_str()),
        ("adapt", "shortened", Some("to 280 characters"), "alice")
    );
}

/// 21. The airlock: an approval queues a held item exactly once (with an edit, the original
///     text is kept), the two-person rule, an expired hold, a rejection, an unknown item.
async fn airlock_approves_once_edits_enforces_two_persons_and_refuses_expired(db: &Db) {
    let now = chorus::store::now_ms();
    let later = now + 600_000;

    // A plain approval.
    let m1 = inbound_id(db, "m1", "alice").await;
    let key = "reply:alice:local:m1";
    let id = held(db, key, "alice", Some(m1), later).await;
    let approval = db.approve_content(id, "operator", None, false).await.expect("approve_content");
    let Ok(Approval::Queued { outbox_id, created: true }) = approval else {
        panic!("a held item is approved: {approval:?}")
    };
    let row = db.outbox_row(key).await.expect("outbox_row").expect("the approval queued a row");
    assert_eq!(row.id, outbox_id);
    assert_eq!(
        (row.persona.as_str(), row.platform.as_str(), row.kind.as_str(), row.text.as_str()),
        ("alice", "local", "reply", "draft text")
    );
    assert_eq!((row.reply_to.as_deref(), row.conversation.as_deref()), (Some("remote-42"), Some("conv-1")));
    assert_eq!((row.status, row.attempts), (OutboxStatus::Pending, 0));
    assert_eq!(inbound_state_of(db, "m1", "alice").await.as_deref(), Some("answered"));
    let item = content(db, id).await;
    assert_eq!(
        (item.stage.as_str(), item.decided_by.as_deref(), item.edited_by, item.original_text),
        ("queued", Some("operator"), None, None)
    );
    assert!(item.decided_at.is_some_and(|at| at >= now), "decided_at {:?}", item.decided_at);
    assert_eq!(trail(db, id).await, pairs(&[("approve", "held"), ("approve", "approved"), ("queue", "queued")]));
    let events = db.content_events(id).await.expect("content_events");
    assert_eq!(events[1].actor, "operator", "the approver is logged");

    let again = db.approve_content(id, "someone", None, false).await.expect("approve again");
    assert_eq!(again, Err(AirlockRefusal::NotHeld("queued".to_owned())));
    let reject = db.reject_content(id, "someone", "too late").await.expect("reject after approval");
    assert_eq!(reject, Err(AirlockRefusal::NotHeld("queued".to_owned())));
    assert_eq!(db.outbox_counts().await.expect("outbox_counts"), OutboxCounts { pending: 1, sent: 0, failed: 0 });
    assert_eq!(db.audit_trail(key).await.expect("audit_trail"), pairs(&[("enqueue", "pending")]), "queued once");
    assert_eq!(content(db, id).await.decided_by.as_deref(), Some("operator"), "the refusals changed nothing");

    // Edit, then approve; an "edit" to the same text is no edit.
    let edited = held(db, "reply:alice:local:e", "alice", None, later).await;
    let approval = db.approve_content(edited, "operator", Some("edited text"), false).await.expect("approve edit");
    assert!(matches!(approval, Ok(Approval::Queued { .. })), "{approval:?}");
    let item = content(db, edited).await;
    assert_eq!(
        (item.stage.as_str(), item.text.as_deref(), item.original_text.as_deref(), item.edited_by.as_deref()),
        ("queued", Some("edited text"), Some("draft text"), Some("operator"))
    );
    let row = db.outbox_row("reply:alice:local:e").await.expect("outbox_row").expect("queued");
    assert_eq!(row.text, "edited text", "the edited text is what is published");
    assert_eq!(
        trail(db, edited).await,
        pairs(&[("approve", "held"), ("approve", "edited"), ("approve", "approved"), ("queue", "queued")])
    );
    let same = held(db, "reply:alice:local:s", "alice", None, later).await;
    let approval = db.approve_content(same, "alice", Some("draft text"), false).await.expect("approve same text");
    assert!(matches!(approval, Ok(Approval::Queued { .. })), "without the two-person rule a submitter approves");
    let item = content(db, same).await;
    assert_eq!((item.original_text, item.edited_by), (None, None), "the same text is not an edit");

    // The two-person rule.
    let post = start(db, &new_content("submitted", "post:carol:1", "post", "carol", None)).await;
    db.hold_content(post, "draft text", None, "operator post", later, "team_leader").await.expect("hold_content");
    let own = db.approve_content(post, "carol", None, true).await.expect("approve own");
    assert!(matches!(own, Err(AirlockRefusal::SecondPersonNeeded(_))), "the submitter is refused: {own:?}");
    let edit = db.approve_content(post, "dave", Some("dave's text"), true).await.expect("edit under two persons");
    assert_eq!(edit, Ok(Approval::EditedAwaitingApproval));
    let item = content(db, post).await;
    assert_eq!(
        (item.stage.as_str(), item.text.as_deref(), item.original_text.as_deref(), item.edited_by.as_deref()),
        ("held", Some("dave's text"), Some("draft text"), Some("dave"))
    );
    assert_eq!((item.decided_by, item.decided_at), (None, None));
    assert!(!db.outbox_exists("post:carol:1").await.expect("outbox_exists"), "an edit alone queues nothing");
    for person in ["dave", "carol"] {
        let refused = db.approve_content(post, person, None, true).await.expect("approve as editor or submitter");
        assert!(matches!(refused, Err(AirlockRefusal::SecondPersonNeeded(_))), "{person}: {refused:?}");
    }
    assert_eq!(content(db, post).await.stage, "held");
    let third = db.approve_content(post, "erin", None, true).await.expect("approve as a third person");
    assert!(matches!(third, Ok(Approval::Queued { .. })), "{third:?}");
    let item = content(db, post).await;
    assert_eq!((item.stage.as_str(), item.decided_by.as_deref()), ("queued", Some("erin")));
    let row = db.outbox_row("post:carol:1").await.expect("outbox_row").expect("queued");
    assert_eq!((row.text.as_str(), row.kind.as_str()), ("dave's text", "post"));

    // An expired hold: refused, expired, never queued, the mention not answered; an edit is not kept.
    let m5 = inbound_id(db, "m5", "alice").await;
    let expired = held(db, "reply:alice:local:m5", "alice", Some(m5), now - 1).await;
    let late = db.approve_content(expired, "operator", Some("late edit"), false).await.expect("approve late");
    assert_eq!(late, Err(AirlockRefusal::Expired));
    let item = content(db, expired).await;
    assert_eq!(
        (item.stage.as_str(), item.reason.as_deref(), item.text.as_deref(), item.decided_by),
        ("expired", Some("hold expired"), Some("draft text"), None)
    );
    assert!(!db.outbox_exists("reply:alice:local:m5").await.expect("outbox_exists"));
    assert_eq!(inbound_state_of(db, "m5", "alice").await.as_deref(), Some("ignored"));
    assert_eq!(trail(db, expired).await, pairs(&[("approve", "held"), ("approve", "expired")]));
    let again = db.approve_content(expired, "operator", None, false).await.expect("approve expired again");
    assert_eq!(again, Err(AirlockRefusal::NotHeld("expired".to_owned())));

    // A rejection.
    let m6 = inbound_id(db, "m6", "alice").await;
    let rejected = held(db, "reply:alice:local:m6", "alice", Some(m6), later).await;
    assert_eq!(db.reject_content(rejected, "operator", "off topic").await.expect("reject_content"), Ok(()));
    let item = content(db, rejected).await;
    assert_eq!(
        (item.stage.as_str(), item.reason.as_deref(), item.decided_by.as_deref()),
        ("rejected", Some("off topic"), Some("operator"))
    );
    assert!(item.decided_at.is_some());
    let event = last_event(db, rejected).await;
    assert_eq!(
        (event.stage.as_str(), event.outcome.as_str(), event.detail.as_deref(), event.actor.as_str()),
        ("approve", "rejected", Some("off topic"), "operator")
    );
    assert_eq!(inbound_state_of(db, "m6", "alice").await.as_deref(), Some("ignored"));
    let approve = db.approve_content(rejected, "operator", None, false).await.expect("approve after rejection");
    assert_eq!(approve, Err(AirlockRefusal::NotHeld("rejected".to_owned())));
    let reject = db.reject_content(rejected, "operator", "twice").await.expect("reject again");
    assert_eq!(reject, Err(AirlockRefusal::NotHeld("rejected".to_owned())));
    assert!(!db.outbox_exists("reply:alice:local:m6").await.expect("outbox_exists"));

    // Unknown items and items that were never held.
    let unknown = rejected + 1_000;
    assert_eq!(
        db.approve_content(unknown, "operator", None, false).await.expect("approve"),
        Err(AirlockRefusal::NotFound)
    );
    assert_eq!(db.reject_content(unknown, "operator", "x").await.expect("reject"), Err(AirlockRefusal::NotFound));
    let generating = start(db, &new_content("generating", "reply:alice:local:g", "reply", "alice", None)).await;
    let approve = db.approve_content(generating, "operator", None, false).await.expect("approve generating");
    assert_eq!(approve, Err(AirlockRefusal::NotHeld("generating".to_owned())));

    assert_eq!(
        db.outbox_counts().await.expect("outbox_counts"),
        OutboxCounts { pending: 4, sent: 0, failed: 0 },
        "one row per approved item"
    );
}

/// 21b. Twenty concurrent decisions on one held item (approvals and rejections, by different
///      people): exactly one takes effect, and the outbox has a row exactly when it was an approval.
async fn concurrent_airlock_decisions_on_one_item_decide_once(db: &Db) {
    const CALLS: usize = 20;
    let mention = inbound_id(db, "m1", "alice").await;
    let key = "reply:alice:local:m1";
    let id = held(db, key, "alice", Some(mention), chorus::store::now_ms() + 600_000).await;
    let tasks: Vec<_> = (0..CALLS)
        .map(|call| {
            let db = db.clone();
            tokio::spawn(async move {
                let by = format!("operator {call}");
                if call % 2 == 0 {
                    db.approve_content(id, &by, None, true).await.map(|decided| decided.map(|_| "approved"))
                } else {
                    db.reject_content(id, &by, "no").await.map(|decided| decided.map(|()| "rejected"))
                }
            })
        })
        .collect();
    let mut decisions = Vec::new();
    for (call, task) in tasks.into_iter().enumerate() {
        let result = task.await.unwrap_or_else(|err| panic!("decision task {call} panicked: {err}"));
        match result.unwrap_or_else(|err| panic!("decision call {call} failed: {err:?}")) {
            Ok(decision) => decisions.push((call, decision)),
            Err(AirlockRefusal::NotHeld(_)) => {}
            Err(other) => panic!("call {call}: unexpected {other:?}"),
        }
    }
    assert_eq!(decisions.len(), 1, "exactly one decision takes effect: {decisions:?}");
    let (call, decision) = decisions[0];
    let item = content(db, id).await;
    assert_eq!(item.decided_by, Some(format!("operator {call}")), "the stored decider is the one that won");
    let queued = db.outbox_exists(key).await.expect("outbox_exists");
    let counts = db.outbox_counts().await.expect("outbox_counts");
    if decision == "approved" {
        assert_eq!((item.stage.as_str(), queued, counts.pending), ("queued", true, 1));
        assert_eq!(inbound_state_of(db, "m1", "alice").await.as_deref(), Some("answered"));
    } else {
        assert_eq!((item.stage.as_str(), queued, counts.pending), ("rejected", false, 0));
        assert_eq!(inbound_state_of(db, "m1", "alice").await.as_deref(), Some("ignored"));
    }
    let decided = trail(db, id).await.into_iter().filter(|(stage, _)| stage == "approve").count();
    assert_eq!(decided, 2, "held, then one decision in the log");
}

/// 22. The hold sweep expires exactly the held items at or past their expiry, once.
async fn expire_holds_expires_only_past_due_held_items(db: &Db) {
    let now = chorus::store::now_ms();
    let m1 = inbound_id(db, "m1", "alice").await;
    let overdue = held(db, "reply:alice:local:m1", "alice", Some(m1), now - 1).await;
    let due_now = held(db, "reply:alice:local:m2", "alice", None, now).await;
    let later = held(db, "reply:alice:local:m3", "alice", None, now + 60_000).await;
    let rejected = held(db, "reply:alice:local:m4", "alice", None, now - 1).await;
    assert_eq!(db.reject_content(rejected, "operator", "no").await.expect("reject_content"), Ok(()));
    let never_held = start(db, &new_content("generating", "reply:alice:local:m5", "reply", "alice", None)).await;

    let mut expired = db.expire_holds(now).await.expect("expire_holds");
    expired.sort_unstable();
    assert_eq!(expired, vec![overdue, due_now]);
    for (id, stage) in [
        (overdue, "expired"),
        (due_now, "expired"),
        (later, "held"),
        (rejected, "rejected"),
        (never_held, "generating"),
    ] {
        assert_eq!(content(db, id).await.stage, stage, "item {id}");
    }
    assert_eq!(trail(db, overdue).await, pairs(&[("approve", "held"), ("approve", "expired")]));
    assert_eq!(last_event(db, overdue).await.actor, "team_leader");
    assert_eq!(inbound_state_of(db, "m1", "alice").await.as_deref(), Some("ignored"), "its mention is not answered");
    assert!(db.expire_holds(now).await.expect("expire_holds again").is_empty(), "expired once");
    assert_eq!(db.expire_holds(now + 60_000).await.expect("expire_holds later"), vec![later]);
    assert_eq!(db.outbox_counts().await.expect("outbox_counts"), OutboxCounts::default(), "nothing queued");
}

/// 23. The outbox moves items: enqueue → `queued` (creating the item when there was none),
///     sent → `published` with its remote id and time, refused → `failed`.
async fn outbox_moves_content_items_to_queued_published_and_failed(db: &Db) {
    let m1 = inbound_id(db, "m1", "alice").await;
    let key = "reply:alice:local:m1";
    let id = start(db, &new_content("generating", key, "reply", "alice", Some(m1))).await;
    let enqueued = db.enqueue(&outbox_item(key, "reply", "the reply"), Some(m1)).await.expect("enqueue");
    assert!(enqueued.created);
    assert_eq!(content_id(db, key).await, id, "the existing item moved, no second item");
    let item = content(db, id).await;
    assert_eq!((item.stage.as_str(), item.text.as_deref()), ("queued", Some("the reply")));
    assert_eq!(trail(db, id).await, pairs(&[("queue", "queued")]));
    assert_eq!(inbound_state_of(db, "m1", "alice").await.as_deref(), Some("answered"));
    assert_eq!(db.reply_stage(key).await.expect("reply_stage").as_deref(), Some("queued"));

    let row = db.outbox_row(key).await.expect("outbox_row").expect("queued");
    let before = chorus::store::now_ms();
    mark_sent(db, &row, "remote-7").await;
    let after = chorus::store::now_ms();
    let item = content(db, id).await;
    assert_eq!((item.stage.as_str(), item.remote_id.as_deref(), item.reason), ("published", Some("remote-7"), None));
    assert!(item.published_at.is_some_and(|at| before <= at && at <= after), "published_at {:?}", item.published_at);
    let event = last_event(db, id).await;
    assert_eq!(
        (event.stage.as_str(), event.outcome.as_str(), event.detail.as_deref(), event.actor.as_str()),
        ("publish", "published", Some("remote-7"), "publisher")
    );
    let duplicate = db.enqueue(&outbox_item(key, "reply", "again"), None).await.expect("enqueue again");
    assert!(!duplicate.created);
    assert_eq!(content(db, id).await.stage, "published", "a duplicate enqueue does not move the item back");

    // Queued without an item: the item is created, by its persona.
    let post = outbox_item("post:alice:1", "post", "a post");
    db.enqueue(&post, None).await.expect("enqueue a post");
    let created = content(db, content_id(db, "post:alice:1").await).await;
    assert_eq!(
        (created.persona.as_str(), created.platform.as_str(), created.kind.as_str(), created.stage.as_str()),
        ("alice", "local", "post", "queued")
    );
    assert_eq!((created.text.as_deref(), created.submitted_by.as_str()), (Some("a post"), "alice"));
    assert_eq!((created.reply_to, created.conversation.as_deref(), created.inbound_id), (None, Some("conv-1"), None));
    assert_eq!(trail(db, created.id).await, pairs(&[("queue", "queued")]));
    assert_eq!(last_event(db, created.id).await.actor, "alice");

    let row = db.outbox_row("post:alice:1").await.expect("outbox_row").expect("queued");
    db.mark_failed(&row, "forbidden").await.expect("mark_failed");
    let failed = content(db, created.id).await;
    assert_eq!(
        (failed.stage.as_str(), failed.reason.as_deref(), failed.remote_id, failed.published_at),
        ("failed", Some("forbidden"), None, None)
    );
    let event = last_event(db, created.id).await;
    assert_eq!(
        (event.stage.as_str(), event.outcome.as_str(), event.detail.as_deref(), event.actor.as_str()),
        ("publish", "failed", Some("forbidden"), "publisher")
    );

    // A reply queued without an item keeps its mention.
    let m2 = inbound_id(db, "m2", "alice").await;
    db.enqueue(&outbox_item("reply:alice:local:m2", "reply", "hi"), Some(m2)).await.expect("enqueue a reply");
    let reply = content(db, content_id(db, "reply:alice:local:m2").await).await;
    assert_eq!(
        (reply.stage.as_str(), reply.inbound_id, reply.reply_to.as_deref()),
        ("queued", Some(m2), Some("remote-42"))
    );
}

/// 24. Listing items: each filter alone, all together, none; newest first; the stage log in order.
async fn content_items_filter_newest_first_and_events_in_order(db: &Db) {
    let now = chorus::store::now_ms();
    assert_eq!(db.plan_posts(&[planned("p1", "alice", now, None)]).await.expect("plan_posts"), 1);
    let planned_post = content_id(db, "p1").await;
    let alice_reply = start(db, &new_content("generating", "r1", "reply", "alice", None)).await;
    let mastodon_post = start(
        db,
        &NewContent { platform: "mastodon".to_owned(), ..new_content("submitted", "p2", "post", "operator", None) },
    )
    .await;
    let bob_reply =
        start(db, &NewContent { persona: "bob".to_owned(), ..new_content("generating", "r2", "reply", "bob", None) })
            .await;
    let bob_post = NewOutbox {
        persona: "bob".to_owned(),
        platform: "mastodon".to_owned(),
        ..outbox_item("p3", "post", "bob's post")
    };
    db.enqueue(&bob_post, None).await.expect("enqueue");
    let queued_post = content_id(db, "p3").await;

    let list = |stage: Option<&str>, persona: Option<&str>, platform: Option<&str>, kind: Option<&str>, limit: i64| {
        let filter = ContentFilter {
            stage: stage.map(str::to_owned),
            persona: persona.map(str::to_owned),
            platform: platform.map(str::to_owned),
            kind: kind.map(str::to_owned),
            limit,
        };
        async move { ids(&db.content_items(&filter).await.expect("content_items"), |i| i.id) }
    };
    assert_eq!(
        list(None, None, None, None, 10).await,
        vec![queued_post, bob_reply, mastodon_post, alice_reply, planned_post],
        "all, newest first"
    );
    assert_eq!(list(None, None, None, None, 2).await, vec![queued_post, bob_reply], "limit");
    assert_eq!(list(Some("planned"), None, None, None, 10).await, vec![planned_post], "by stage");
    assert_eq!(list(Some("generating"), None, None, None, 10).await, vec![bob_reply, alice_reply]);
    assert_eq!(list(Some("queued"), None, None, None, 10).await, vec![queued_post]);
    assert!(list(Some("published"), None, None, None, 10).await.is_empty());
    assert_eq!(list(None, Some("bob"), None, None, 10).await, vec![queued_post, bob_reply], "by persona");
    assert_eq!(
        list(None, Some("alice"), None, None, 10).await,
        vec![mastodon_post, alice_reply, planned_post],
        "an operator's post belongs to its persona"
    );
    assert_eq!(list(None, None, Some("mastodon"), None, 10).await, vec![queued_post, mastodon_post], "by platform");
    assert_eq!(list(None, None, None, Some("reply"), 10).await, vec![bob_reply, alice_reply], "by kind");
    assert_eq!(list(None, None, None, Some("post"), 10).await, vec![queued_post, mastodon_post, planned_post]);
    assert_eq!(
        list(Some("generating"), Some("alice"), Some("local"), Some("reply"), 10).await,
        vec![alice_reply],
        "all filters together"
    );
    assert!(list(Some("generating"), Some("alice"), Some("mastodon"), None, 10).await.is_empty());
    let queued = ContentFilter { stage: Some("queued".to_owned()), limit: 10, ..Default::default() };
    let listed = db.content_items(&queued).await.expect("content_items");
    assert_eq!(listed, vec![content(db, queued_post).await], "the listed rows are the stored rows");

    let steps =
        [("generate", "written", Some("draft 1")), ("review", "passed", None), ("adapt", "shortened", Some("280"))];
    for (stage, outcome, detail) in steps {
        db.content_event(alice_reply, stage, outcome, detail, "alice").await.expect("content_event");
    }
    let events = db.content_events(alice_reply).await.expect("content_events");
    let logged: Vec<_> = events.iter().map(|e| (e.stage.as_str(), e.outcome.as_str(), e.detail.as_deref())).collect();
    assert_eq!(logged, steps.to_vec(), "oldest first");
    assert!(events.windows(2).all(|pair| pair[0].at <= pair[1].at), "times do not go back");
    assert!(db.content_events(alice_reply + 1_000).await.expect("content_events unknown").is_empty());
}

/// 25. Coordination: the first assignment of a message wins; the pending load per persona;
///     where a persona's reply and its copy of a message are.
async fn thread_assignment_first_wins_and_pending_load_counts_pending_mentions(db: &Db) {
    let names = |list: &[&str]| list.iter().map(|name| name.to_string()).collect::<Vec<_>>();
    assert_eq!(db.thread_assignment("local", "m1").await.expect("thread_assignment"), None);
    let first =
        StoredAssignment { first: "alice".to_owned(), joiners: names(&["bob", "carol"]), skipped: names(&["dave"]) };
    let second = StoredAssignment { first: "bob".to_owned(), joiners: vec![], skipped: vec![] };
    assert_eq!(db.assign_thread("local", "m1", &first, "alice first").await.expect("assign_thread"), first);
    assert_eq!(db.thread_assignment("local", "m1").await.expect("thread_assignment"), Some(first.clone()));
    let again = db.assign_thread("local", "m1", &second, "bob first").await.expect("assign_thread again");
    assert_eq!(again, first, "the first decision stays in force");
    assert_eq!(db.thread_assignment("local", "m1").await.expect("thread_assignment"), Some(first.clone()));
    assert_eq!(
        db.assign_thread("mastodon", "m1", &second, "bob").await.expect("assign_thread"),
        second,
        "per platform"
    );
    assert_eq!(
        db.thread_assignment("mastodon", "m1").await.expect("thread_assignment"),
        Some(second.clone()),
        "empty lists round-trip"
    );
    let one_each = StoredAssignment { first: "carol".to_owned(), joiners: names(&["alice"]), skipped: vec![] };
    assert_eq!(db.assign_thread("local", "m2", &one_each, "carol").await.expect("assign_thread"), one_each);
    assert_eq!(db.thread_assignment("local", "m2").await.expect("thread_assignment"), Some(one_each));

    let personas = names(&["alice", "bob", "carol"]);
    let load = |platform: &'static str, personas: Vec<String>| async move {
        db.pending_load(platform, &personas).await.expect("pending_load")
    };
    let counts = |pairs: &[(&str, i64)]| pairs.iter().map(|(name, n)| (name.to_string(), *n)).collect::<Vec<_>>();
    assert_eq!(load("local", personas.clone()).await, counts(&[("alice", 0), ("bob", 0), ("carol", 0)]));
    let alice_m1 = inbound_id(db, "m1", "alice").await;
    let alice_m2 = inbound_id(db, "m2", "alice").await;
    let _alice_m3 = inbound_id(db, "m3", "alice").await;
    let bob_m1 = inbound_id(db, "m1", "bob").await;
    let on_mastodon = insert_inbound(db, &inbound("mastodon", "m9", "bob", false, "c")).await.expect("insert");
    assert!(on_mastodon.is_some());
    assert_eq!(load("local", personas.clone()).await, counts(&[("alice", 3), ("bob", 1), ("carol", 0)]));
    assert_eq!(load("mastodon", personas.clone()).await, counts(&[("alice", 0), ("bob", 1), ("carol", 0)]));
    assert!(load("local", vec![]).await.is_empty());

    db.ignore_inbound(alice_m2, "loop guard").await.expect("ignore_inbound");
    let key = "reply:alice:local:m1";
    assert_eq!(db.reply_stage(key).await.expect("reply_stage"), None, "nothing decided yet");
    let reply = held(db, key, "alice", Some(alice_m1), chorus::store::now_ms() + 60_000).await;
    db.enqueue(
        &NewOutbox { persona: "bob".to_owned(), ..outbox_item("reply:bob:local:m1", "reply", "hi") },
        Some(bob_m1),
    )
    .await
    .expect("enqueue bob's reply");
    assert_eq!(
        load("local", personas.clone()).await,
        counts(&[("alice", 1), ("bob", 0), ("carol", 0)]),
        "ignored, held and answered mentions are not pending"
    );
    assert_eq!(db.reply_stage(key).await.expect("reply_stage").as_deref(), Some("held"));
    assert_eq!(db.reply_stage("reply:bob:local:m1").await.expect("reply_stage").as_deref(), Some("queued"));
    assert_eq!(db.reject_content(reply, "operator", "no").await.expect("reject_content"), Ok(()));
    assert_eq!(db.reply_stage(key).await.expect("reply_stage").as_deref(), Some("rejected"));

    assert_eq!(inbound_state_of(db, "m1", "alice").await.as_deref(), Some("ignored"), "rejected");
    assert_eq!(inbound_state_of(db, "m1", "bob").await.as_deref(), Some("answered"));
    assert_eq!(inbound_state_of(db, "m2", "alice").await.as_deref(), Some("ignored"));
    assert_eq!(inbound_state_of(db, "m3", "alice").await.as_deref(), Some("pending"));
    assert_eq!(inbound_state_of(db, "m1", "carol").await, None, "per persona");
    assert_eq!(db.inbound_state("mastodon", "m1", "alice").await.expect("inbound_state"), None, "per platform");
    assert_eq!(db.inbound_state("mastodon", "m9", "bob").await.expect("inbound_state").as_deref(), Some("pending"));
}

/// 26. Engagement: published items with a remote id inside the window and due are measured;
///     a fetch stores a row and pushes the next fetch; a missing item stores none.
async fn engagement_is_measured_inside_the_window_and_rescheduled(db: &Db) {
    let day = 86_400_000;
    let before = chorus::store::now_ms();
    let first = publish(db, "post:1", "remote-1").await;
    clock_past(chorus::store::now_ms()).await;
    let second = publish(db, "post:2", "remote-2").await;
    let after = chorus::store::now_ms();
    let first_at = content(db, first).await.published_at.expect("published_at");
    let second_at = content(db, second).await.published_at.expect("published_at");
    assert!(before <= first_at && first_at < second_at && second_at <= after);

    // Neither queued nor failed items are measured.
    db.enqueue(&outbox_item("post:queued", "post", "q"), None).await.expect("enqueue");
    db.enqueue(&outbox_item("post:failed", "post", "f"), None).await.expect("enqueue");
    let row = db.outbox_row("post:failed").await.expect("outbox_row").expect("queued");
    db.mark_failed(&row, "forbidden").await.expect("mark_failed");

    let measure = |now: i64, after_ms: i64, for_ms: i64, limit: i64| async move {
        let items = db.items_to_measure(now, after_ms, for_ms, limit).await.expect("items_to_measure");
        assert!(items.iter().all(|item| item.stage == "published" && item.remote_id.is_some()), "{items:?}");
        ids(&items, |item| item.id)
    };
    assert_eq!(measure(after, 0, day, 10).await, vec![first, second], "oldest publish first");
    assert_eq!(measure(after, 0, day, 1).await, vec![first], "limit");
    assert!(measure(after, after - before + 1, day, 10).await.is_empty(), "too fresh");
    assert!(measure(after + day + 1, 0, day, 10).await.is_empty(), "too old");
    assert_eq!(measure(first_at + 1_000, 1_000, day, 10).await, vec![first], "published at now - after counts");
    assert_eq!(measure(second_at + day, 0, day, 10).await, vec![second], "published at now - for counts");

    let likes = Engagement { likes: 3, replies: 1, reposts: 0, impressions: None };
    db.record_engagement(first, Some(&likes), after + 60_000).await.expect("record_engagement");
    assert_eq!(db.latest_engagement(first).await.expect("latest_engagement"), Some(likes));
    assert_eq!(measure(after, 0, day, 10).await, vec![second], "not measured again before its next fetch");
    assert_eq!(measure(after + 59_999, 0, day, 10).await, vec![second]);
    assert_eq!(measure(after + 60_000, 0, day, 10).await, vec![first, second], "due again at its next fetch");
    let event = last_event(db, first).await;
    assert_eq!(
        (event.stage.as_str(), event.outcome.as_str(), event.detail.as_deref(), event.actor.as_str()),
        ("measure", "measured", Some("likes 3, replies 1, reposts 0"), "team_leader")
    );

    let more = Engagement { likes: 10, replies: 4, reposts: 2, impressions: Some(1_234) };
    db.record_engagement(first, Some(&more), after + 120_000).await.expect("record_engagement again");
    assert_eq!(db.latest_engagement(first).await.expect("latest_engagement"), Some(more), "the most recent fetch");
    assert_eq!(content(db, first).await.stage, "published", "measuring does not move the item");

    assert_eq!(db.latest_engagement(second).await.expect("latest_engagement"), None);
    db.record_engagement(second, None, after + 60_000).await.expect("record_engagement missing");
    assert_eq!(db.latest_engagement(second).await.expect("latest_engagement"), None, "no row for a missing item");
    assert!(measure(after, 0, day, 10).await.is_empty(), "the missing item's next fetch moved too");
    assert_eq!(measure(after + 60_000, 0, day, 10).await, vec![second]);
    let event = last_event(db, second).await;
    assert_eq!(
        (event.stage.as_str(), event.outcome.as_str(), event.detail.as_deref(), event.actor.as_str()),
        ("measure", "missing", Some("not found on the platform"), "team_leader")
    );
    assert_eq!(
        trail(db, second).await,
        pairs(&[("queue", "queued"), ("publish", "published"), ("measure", "missing")])
    );
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

/// 28. The group writes (the Publisher's and Memory's): a batch of enqueues, of sent rows and of
///     memories leaves each item as a write of its own would, a key repeated in the batch or
///     queued before included.
async fn group_commits_write_each_item_as_it_would_alone(db: &Db) {
    use chorus::store::{ContentLog, Sent, StageEntry, ToEnqueue};
    let m1 = inbound_id(db, "m1", "alice").await;
    let before = db.enqueue(&outbox_item("k-before", "post", "queued earlier"), None).await.expect("enqueue");
    let reply = outbox_item("reply:alice:local:m1", "reply", "the reply");
    let post = outbox_item("post:alice:9", "post", "a post");
    let again = outbox_item("k-before", "post", "queued again");
    let repeated = NewOutbox { text: "a second draft".to_owned(), ..reply.clone() };
    let log = ContentLog {
        entries: vec![
            StageEntry { stage: "generate", outcome: "drafted".to_owned(), detail: None, actor: "alice".to_owned() },
            StageEntry { stage: "review", outcome: "passed".to_owned(), detail: None, actor: "review".to_owned() },
        ],
        flags: Some("[\"mild\"]".to_owned()),
        submitted_by: Some("operator".to_owned()),
    };
    let batch = [
        ToEnqueue { item: &reply, inbound_id: Some(m1), log: Some(&log) },
        ToEnqueue { item: &post, inbound_id: None, log: None },
        ToEnqueue { item: &again, inbound_id: None, log: None },
        ToEnqueue { item: &repeated, inbound_id: None, log: None },
    ];
    let enqueued = db.enqueue_batch(&batch).await.expect("enqueue_batch");
    let created: Vec<bool> = enqueued.iter().map(|e| e.created).collect();
    assert_eq!(created, [true, true, false, false], "{enqueued:?}");
    assert_eq!(enqueued[2].id, before.id, "a key queued earlier answers its row");
    assert_eq!(enqueued[3].id, enqueued[0].id, "a key repeated in the batch is one row");
    assert!(enqueued[0].id < enqueued[1].id, "rows are numbered in the batch's order");
    let row = db.outbox_row(&reply.idempotency_key).await.expect("outbox_row").expect("queued");
    assert_eq!((row.text.as_str(), row.status), ("the reply", OutboxStatus::Pending), "the first draft stays");
    assert_eq!(db.outbox_row("k-before").await.expect("outbox_row").expect("queued").text, "queued earlier");
    assert_eq!(inbound_state_of(db, "m1", "alice").await.as_deref(), Some("answered"));
    let item = content(db, content_id(db, &reply.idempotency_key).await).await;
    assert_eq!(
        (item.stage.as_str(), item.submitted_by.as_str(), item.flags.as_deref(), item.inbound_id),
        ("queued", "operator", Some("[\"mild\"]"), Some(m1))
    );
    assert_eq!(trail(db, item.id).await, pairs(&[("generate", "drafted"), ("review", "passed"), ("queue", "queued")]));
    let post_item = content_id(db, &post.idempotency_key).await;
    assert_eq!(trail(db, post_item).await, pairs(&[("queue", "queued")]));
    assert_eq!(trail(db, content_id(db, "k-before").await).await, pairs(&[("queue", "queued")]), "not queued twice");
    for key in [reply.idempotency_key.as_str(), post.idempotency_key.as_str(), "k-before"] {
        assert_eq!(db.audit_trail(key).await.expect("audit_trail"), pairs(&[("enqueue", "pending")]), "{key}");
    }

    let reply_row = db.outbox_row(&reply.idempotency_key).await.expect("outbox_row").expect("queued");
    let post_row = db.outbox_row(&post.idempotency_key).await.expect("outbox_row").expect("queued");
    let sent = [
        Sent { row: &reply_row, remote_id: "remote-1", how: "sent" },
        Sent { row: &post_row, remote_id: "remote-2", how: "reconciled" },
    ];
    db.mark_sent_batch(&sent).await.expect("mark_sent_batch");
    for (key, remote_id, how) in
        [(&reply.idempotency_key, "remote-1", "sent"), (&post.idempotency_key, "remote-2", "reconciled")]
    {
        let row = db.outbox_row(key).await.expect("outbox_row").expect("sent");
        assert_eq!((row.status, row.remote_id.as_deref()), (OutboxStatus::Sent, Some(remote_id)), "{key}");
        let item = content(db, content_id(db, key).await).await;
        assert_eq!((item.stage.as_str(), item.remote_id.as_deref()), ("published", Some(remote_id)), "{key}");
        assert!(item.published_at.is_some(), "{key}");
        let event = last_event(db, item.id).await;
        assert_eq!((event.outcome.as_str(), event.detail.as_deref()), ("published", Some(remote_id)), "{key}");
        assert_eq!(db.audit_trail(key).await.expect("audit_trail"), pairs(&[("enqueue", "pending"), ("publish", how)]));
    }
    assert_eq!(db.outbox_counts().await.expect("outbox_counts"), OutboxCounts { pending: 1, sent: 2, failed: 0 });
    db.mark_sent_batch(&[]).await.expect("an empty batch writes nothing");

    let memory = |text: &str| NewMemory {
        persona: "alice".to_owned(),
        platform: "local".to_owned(),
        kind: MemoryKind::Reply,
        conversation: Some("conv-1".to_owned()),
        author: "alice".to_owned(),
        text: text.to_owned(),
    };
    let (first, second, third) = (memory("first"), memory("second"), memory("third"));
    let vector = [0.25f32, -1.0, 2.0];
    let rows = db
        .insert_memories(&[(&first, None), (&second, Some(("m1", &vector[..]))), (&third, None)])
        .await
        .expect("insert_memories");
    let texts: Vec<&str> = rows.iter().map(|row| row.text.as_str()).collect();
    assert_eq!(texts, ["first", "second", "third"], "rows in the order given");
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id), "and numbered in that order");
    assert_eq!(rows[1].kind, MemoryKind::Reply);
    let stored = db.persona_vectors("m1", "alice", 0, 10).await.expect("persona_vectors");
    assert_eq!(
        stored.iter().map(|s| (s.row.id, s.vector.clone())).collect::<Vec<_>>(),
        [(rows[1].id, vector.to_vec())]
    );
    let to_embed: Vec<i64> =
        db.memories_to_embed("m1", 10).await.expect("memories_to_embed").iter().map(|r| r.id).collect();
    assert_eq!(to_embed, [rows[0].id, rows[2].id], "the others wait for the sweep");
    assert!(db.insert_memories(&[]).await.expect("an empty batch").is_empty());
    // Groups of several runs, small enough to go as one call on SQLite (6: 4 + 1 + 1) and not
    // (21: 16 + 4 + 1): every memory stored, in the order given.
    for count in [6, 21] {
        let memories: Vec<NewMemory> = (0..count).map(|n| memory(&format!("group of {count}: {n}"))).collect();
        let batch: Vec<_> = memories.iter().map(|memory| (memory, Some(("m1", &vector[..])))).collect();
        let rows = db.insert_memories(&batch).await.expect("insert_memories");
        let texts: Vec<&str> = rows.iter().map(|row| row.text.as_str()).collect();
        let given: Vec<&str> = memories.iter().map(|memory| memory.text.as_str()).collect();
        assert_eq!(texts, given, "rows in the order given");
        let ids: std::collections::HashSet<i64> = rows.iter().map(|row| row.id).collect();
        let stored = db.persona_vectors("m1", "alice", rows[0].id - 1, 100).await.expect("persona_vectors");
        assert_eq!(
            stored.iter().filter(|s| ids.contains(&s.row.id)).count(),
            count,
            "all {count} stored with their vectors"
        );
    }
}

//! The weekly report: a seeded week (several personas and platforms, items and events on both
//! sides of each boundary, several engagement fetches per item, LLM usage, operational events)
//! and every number of the report compared with the same count computed here from the seed.
//!
//! The report's queries run on SQLite (always) and on Postgres (ignored by default; run with
//! `CHORUS_TEST_POSTGRES_URL=… cargo test --test report -- --ignored`). The last tests run the real
//! `chorus report` binary on a sandbox.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use chorus::report::{self, WeeklyReport};
use chorus::store::{
    ChildTally, ContentTally, Db, Engine, LlmTally, LlmUsage, OpsKind, RankedPost, RateLimitTally, now_ms,
};
use chrono::{Days, NaiveDate};
use common::{Sandbox, TestDatabase};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const PERSONAS: [&str; 3] = ["ada", "bob", "cyd"];
const PLATFORMS: [&str; 3] = ["discord", "reddit", "x"];

/// The seeded week: Monday 2026-11-30.
fn monday() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 30).expect("a date")
}

/// A deterministic pseudo-random sequence (an LCG), so the seed is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, options: &[T]) -> T {
        options[self.below(options.len())]
    }
}

// ----- the seed -----

#[derive(Debug, Clone)]
struct Fetch {
    fetched_at: i64,
    likes: i64,
    replies: i64,
    reposts: i64,
    impressions: Option<i64>,
}

#[derive(Debug, Clone)]
struct Item {
    id: i64,
    persona: &'static str,
    platform: &'static str,
    kind: &'static str,
    published_at: Option<i64>,
    text: String,
    /// In insertion order (the later row wins a tie on `fetched_at`).
    fetches: Vec<Fetch>,
}

impl Item {
    /// The engagement the report must use: the latest fetch, the later row on a tie.
    fn latest(&self) -> Option<&Fetch> {
        self.fetches.iter().enumerate().max_by_key(|(index, fetch)| (fetch.fetched_at, *index)).map(|(_, f)| f)
    }

    fn score(&self) -> i64 {
        self.latest().map_or(0, |f| f.likes + f.replies + f.reposts)
    }

    fn remote_id(&self) -> Option<String> {
        self.published_at.map(|_| format!("r{}", self.id))
    }
}

#[derive(Debug, Clone)]
struct Event {
    item_id: i64,
    stage: &'static str,
    outcome: &'static str,
    at: i64,
}

#[derive(Debug, Clone)]
struct Ops {
    at: i64,
    kind: &'static str,
    persona: Option<&'static str>,
    platform: Option<&'static str>,
    subject: &'static str,
    value_ms: i64,
}

struct Seed {
    from: i64,
    to: i64,
    items: Vec<Item>,
    events: Vec<Event>,
    llm: Vec<LlmUsage>,
    ops: Vec<Ops>,
}

fn fetch(fetched_at: i64, likes: i64, replies: i64, reposts: i64) -> Fetch {
    Fetch { fetched_at, likes, replies, reposts, impressions: Some(10 * (likes + replies + reposts)) }
}

fn seed_week() -> Seed {
    let (from, to) = report::week_bounds(monday());
    // Times on both sides of both boundaries, and inside.
    let times = [from - DAY, from - 1, from, from + 1, from + 2 * DAY + 7, from + 5 * DAY, to - 1, to, to + HOUR];
    let mut rng = Lcg(7);
    let mut items = Vec::new();
    for id in 1..=90 {
        let published_at = if rng.below(5) == 0 { None } else { Some(rng.pick(&times)) };
        let mut fetches = Vec::new();
        if published_at.is_some() {
            for _ in 0..rng.below(4) {
                fetches.push(Fetch {
                    // Coarse times: two fetches of an item can share one.
                    fetched_at: to + rng.below(4) as i64 * HOUR,
                    likes: rng.below(30) as i64,
                    replies: rng.below(10) as i64,
                    reposts: rng.below(10) as i64,
                    impressions: (rng.below(3) > 0).then(|| rng.below(1000) as i64),
                });
            }
        }
        let text = match id % 3 {
            0 => format!("post {id} with a | pipe and\na newline"),
            1 => format!("post {id} {}", "long ".repeat(40)),
            _ => format!("post {id}"),
        };
        items.push(Item {
            id,
            persona: rng.pick(&PERSONAS),
            platform: rng.pick(&PLATFORMS),
            kind: if rng.below(4) == 0 { "reply" } else { "post" },
            published_at,
            text,
            fetches,
        });
    }
    // Hand-made: the top of the ranking, with a tie, a later fetch with lower counts, and a
    // higher-scored post just outside the week.
    let hand = |id: i64, persona, platform, published_at, fetches| Item {
        id,
        persona,
        platform,
        kind: "post",
        published_at: Some(published_at),
        text: format!("hand-made post {id}"),
        fetches,
    };
    items.push(hand(101, "ada", "x", from, vec![fetch(to, 900, 50, 50)]));
    items.push(hand(102, "bob", "x", to - 1, vec![fetch(to + 2 * HOUR, 5000, 0, 0), fetch(to + 3 * HOUR, 700, 0, 0)]));
    items.push(hand(
        103,
        "cyd",
        "reddit",
        from + DAY,
        vec![fetch(to + 3 * HOUR, 800, 0, 0), fetch(to + HOUR, 9000, 0, 0)],
    ));
    items.push(hand(104, "ada", "reddit", from + DAY, vec![fetch(to, 800, 0, 0)]));
    items.push(hand(105, "bob", "discord", to, vec![fetch(to + HOUR, 99_999, 0, 0)]));
    items.push(hand(106, "cyd", "x", from - 1, vec![fetch(to, 99_999, 0, 0)]));
    // Only outside the week: `eve` must not appear.
    items.push(Item { persona: "eve", ..hand(107, "eve", "x", to, vec![]) });

    const OUTCOMES: [(&str, &str); 10] = [
        ("approve", "held"),
        ("approve", "approved"),
        ("approve", "rejected"),
        ("approve", "expired"),
        ("review", "blocked"),
        // Not counted:
        ("review", "passed"),
        ("approve", "edited"),
        ("review", "held"),
        ("approve", "blocked"),
        ("publish", "published"),
    ];
    let mut events = Vec::new();
    for item in &items {
        for _ in 0..rng.below(5) {
            let (stage, outcome) = rng.pick(&OUTCOMES);
            events.push(Event { item_id: item.id, stage, outcome, at: rng.pick(&times) });
        }
    }
    events.push(Event { item_id: 107, stage: "approve", outcome: "held", at: from - 1 });

    let mut llm = Vec::new();
    for _ in 0..60 {
        llm.push(LlmUsage {
            persona: rng.pick(&["ada", "bob", "cyd", "dee"]).to_owned(),
            provider: "sim".into(),
            model: "m".into(),
            task: "reply",
            tokens_in: rng.below(2000) as i64,
            tokens_out: rng.below(500) as i64,
            latency_ms: 20,
            outcome: rng.pick(&["ok", "error"]),
            // Multiples of 1/8: every sum is exact, in any order.
            cost_usd: rng.below(40) as f64 / 8.0,
            at_ms: rng.pick(&times),
        });
    }

    let mut ops = Vec::new();
    for _ in 0..120 {
        let kind = rng.pick(&["rate_limit_wait", "rate_limit_refused", "restart", "circuit_open", "health_check"]);
        let (persona, platform, subject) = match kind {
            "restart" | "circuit_open" => (None, None, rng.pick(&["agent:ada@x", "agent:bob@reddit", "publisher"])),
            _ => (
                rng.pick(&[Some("ada"), Some("bob"), None]),
                rng.pick(&[Some("x"), Some("reddit"), None]),
                rng.pick(&["publish", "llm:sim"]),
            ),
        };
        ops.push(Ops { at: rng.pick(&times), kind, persona, platform, subject, value_ms: rng.below(5000) as i64 });
    }
    Seed { from, to, items, events, llm, ops }
}

/// Writes the seed with plain SQL through a pool of its own (the `Db` pool is private to the
/// crate). LLM usage goes through the public [`Db::record_llm_usage_batch`].
async fn write_seed(db: &Db, url: &str, seed: &Seed) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(url).await.expect("seed pool");
    let mut tx = pool.begin().await.expect("begin");
    for item in &seed.items {
        sqlx::query(
            "INSERT INTO content_items (id, idempotency_key, persona, platform, kind, stage, text, submitted_by, \
             remote_id, published_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $3, $8, $9, 0, 0)",
        )
        .bind(item.id)
        .bind(format!("key-{}", item.id))
        .bind(item.persona)
        .bind(item.platform)
        .bind(item.kind)
        .bind(if item.published_at.is_some() { "published" } else { "held" })
        .bind(&item.text)
        .bind(item.remote_id())
        .bind(item.published_at)
        .execute(&mut *tx)
        .await
        .expect("insert item");
        for fetch in &item.fetches {
            sqlx::query(
                "INSERT INTO engagement (item_id, fetched_at, likes, replies, reposts, impressions) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(item.id)
            .bind(fetch.fetched_at)
            .bind(fetch.likes)
            .bind(fetch.replies)
            .bind(fetch.reposts)
            .bind(fetch.impressions)
            .execute(&mut *tx)
            .await
            .expect("insert engagement");
        }
    }
    for event in &seed.events {
        sqlx::query(
            "INSERT INTO content_events (item_id, stage, outcome, detail, actor, at) VALUES ($1, $2, $3, NULL, 'test', $4)",
        )
        .bind(event.item_id)
        .bind(event.stage)
        .bind(event.outcome)
        .bind(event.at)
        .execute(&mut *tx)
        .await
        .expect("insert event");
    }
    for ops in &seed.ops {
        sqlx::query(
            "INSERT INTO ops_events (at, kind, persona, platform, subject, value_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(ops.at)
        .bind(ops.kind)
        .bind(ops.persona)
        .bind(ops.platform)
        .bind(ops.subject)
        .bind(ops.value_ms)
        .execute(&mut *tx)
        .await
        .expect("insert ops event");
    }
    tx.commit().await.expect("commit the seed");
    pool.close().await;
    db.record_llm_usage_batch(&seed.llm).await.expect("record llm usage");
}

// ----- the expected report, computed from the seed -----

struct Expected {
    content: Vec<ContentTally>,
    top: Vec<RankedPost>,
    worst: Vec<RankedPost>,
    llm: Vec<LlmTally>,
    rate_limits: Vec<RateLimitTally>,
    children: Vec<ChildTally>,
}

/// The report of `[from, to)` computed from the seed.
fn expected(seed: &Seed, from: i64, to: i64) -> Expected {
    let inside = |at: i64| from <= at && at < to;
    let mut content: BTreeMap<(&str, &str), ContentTally> = BTreeMap::new();
    let mut published = Vec::new();
    for item in seed.items.iter().filter(|item| item.published_at.is_some_and(inside)) {
        published.push(item);
        let tally = tally_of(&mut content, item);
        match item.kind {
            "post" => tally.posts_published += 1,
            _ => tally.replies_published += 1,
        }
        if let Some(fetch) = item.latest() {
            tally.engagement.likes += fetch.likes;
            tally.engagement.replies += fetch.replies;
            tally.engagement.reposts += fetch.reposts;
            tally.engagement.impressions += fetch.impressions.unwrap_or(0);
        }
    }
    const COUNTED: [(&str, &str); 5] = [
        ("approve", "held"),
        ("approve", "approved"),
        ("approve", "rejected"),
        ("approve", "expired"),
        ("review", "blocked"),
    ];
    let items: BTreeMap<i64, &Item> = seed.items.iter().map(|item| (item.id, item)).collect();
    for event in seed.events.iter().filter(|event| inside(event.at)) {
        if !COUNTED.contains(&(event.stage, event.outcome)) {
            continue;
        }
        let tally = tally_of(&mut content, items[&event.item_id]);
        match event.outcome {
            "held" => tally.held += 1,
            "approved" => tally.approved += 1,
            "rejected" => tally.rejected += 1,
            "expired" => tally.expired += 1,
            "blocked" => tally.blocked += 1,
            other => unreachable!("{other} is not counted"),
        }
    }

    let ranked = |item: &&Item| RankedPost {
        id: item.id,
        persona: item.persona.to_owned(),
        platform: item.platform.to_owned(),
        remote_id: item.remote_id(),
        published_at: item.published_at.expect("published"),
        text: item.text.chars().take(100).collect(),
        score: item.score(),
    };
    let mut posts: Vec<&Item> = published.into_iter().filter(|item| item.kind == "post").collect();
    posts.sort_by_key(|item| (-item.score(), item.id));
    let top = posts.iter().take(3).map(ranked).collect();
    posts.sort_by_key(|item| (item.score(), item.id));
    let worst = posts.iter().take(3).map(ranked).collect();

    let mut llm: BTreeMap<&str, LlmTally> = BTreeMap::new();
    for usage in seed.llm.iter().filter(|usage| inside(usage.at_ms)) {
        let tally = llm
            .entry(&usage.persona)
            .or_insert_with(|| LlmTally { persona: usage.persona.clone(), ..LlmTally::default() });
        tally.calls += 1;
        tally.tokens_in += usage.tokens_in;
        tally.tokens_out += usage.tokens_out;
        tally.cost_usd += usage.cost_usd;
    }

    let mut rate_limits: BTreeMap<(Option<&str>, Option<&str>, &str), RateLimitTally> = BTreeMap::new();
    let mut children: BTreeMap<&str, ChildTally> = BTreeMap::new();
    for ops in seed.ops.iter().filter(|ops| inside(ops.at)) {
        let limit = || RateLimitTally {
            persona: ops.persona.map(str::to_owned),
            platform: ops.platform.map(str::to_owned),
            subject: ops.subject.to_owned(),
            ..RateLimitTally::default()
        };
        let child = || ChildTally { subject: ops.subject.to_owned(), ..ChildTally::default() };
        let key = (ops.persona, ops.platform, ops.subject);
        match ops.kind {
            "rate_limit_wait" => {
                let tally = rate_limits.entry(key).or_insert_with(limit);
                tally.waits += 1;
                tally.waited_ms += ops.value_ms;
            }
            "rate_limit_refused" => rate_limits.entry(key).or_insert_with(limit).refusals += 1,
            "restart" => children.entry(ops.subject).or_insert_with(child).restarts += 1,
            "circuit_open" => children.entry(ops.subject).or_insert_with(child).circuit_opens += 1,
            _ => {}
        }
    }

    Expected {
        content: content.into_values().collect(),
        top,
        worst,
        llm: llm.into_values().collect(),
        rate_limits: rate_limits.into_values().collect(),
        children: children.into_values().collect(),
    }
}

/// The tally of the item's persona and platform, created empty if new.
fn tally_of<'a>(
    content: &'a mut BTreeMap<(&'static str, &'static str), ContentTally>,
    item: &Item,
) -> &'a mut ContentTally {
    content.entry((item.persona, item.platform)).or_insert_with(|| ContentTally {
        persona: item.persona.to_owned(),
        platform: item.platform.to_owned(),
        ..ContentTally::default()
    })
}

/// The line of one persona × platform in the Markdown content table.
fn content_line(row: &ContentTally) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        row.persona,
        row.platform,
        row.posts_published,
        row.replies_published,
        row.engagement.likes,
        row.engagement.replies,
        row.engagement.reposts,
        row.engagement.impressions,
        row.held,
        row.approved,
        row.rejected,
        row.expired,
        row.blocked
    )
}

// ----- the contract, on both engines -----

async fn report_matches_the_seed(db: &Db, url: &str) {
    let seed = seed_week();
    write_seed(db, url, &seed).await;
    let want = expected(&seed, seed.from, seed.to);

    // Any day of the week builds the same week.
    let report = report::build_week(db, monday() + Days::new(3)).await.expect("build_week");
    assert_eq!((report.week_start.as_str(), report.week_end.as_str()), ("2026-11-30", "2026-12-07"));
    assert_eq!((report.from_ms, report.to_ms), (seed.from, seed.to));
    assert_eq!(report.content, want.content, "per persona × platform");
    assert_eq!(report.top_posts, want.top, "top posts");
    assert_eq!(report.worst_posts, want.worst, "worst posts");
    assert_eq!(report.llm, want.llm, "llm usage");
    assert_eq!(report.rate_limits, want.rate_limits, "rate limits");
    assert_eq!(report.children, want.children, "restarts and circuit openings");

    // The hand-made edges, spelled out.
    let top: Vec<(i64, i64)> = report.top_posts.iter().map(|post| (post.id, post.score)).collect();
    assert_eq!(top, [(101, 1000), (103, 800), (104, 800)], "later fetch wins; a tie goes to the lower id");
    assert!(report.content.iter().all(|row| row.persona != "eve"), "published at the week's end: next week");
    assert!(report.content.iter().all(|row| row.persona != "dee"), "LLM usage only");
    assert!(report.llm.iter().any(|row| row.persona == "dee"));
    assert!(report.worst_posts.windows(2).all(|pair| (pair[0].score, pair[0].id) < (pair[1].score, pair[1].id)));
    for rows in [report.content.len(), report.llm.len(), report.rate_limits.len(), report.children.len()] {
        assert!(rows > 1, "the seed must exercise every section");
    }

    // Markdown: a line per persona × platform, the ranked posts, the LLM and ops tables.
    let markdown = report.to_markdown();
    assert!(markdown.starts_with("# Weekly report: 2026-11-30 to 2026-12-06\n"), "{markdown}");
    for row in &report.content {
        assert!(markdown.contains(&content_line(row)), "missing {:?} in:\n{markdown}", content_line(row));
    }
    assert!(markdown.contains("| 1 | ada | x | 1000 | 101 | hand-made post 101 |"), "{markdown}");
    assert!(markdown.contains("with a \\| pipe and a newline"), "cells are escaped:\n{markdown}");
    for row in &report.llm {
        let line = format!(
            "| {} | {} | {} | {} | {:.4} |",
            row.persona, row.calls, row.tokens_in, row.tokens_out, row.cost_usd
        );
        assert!(markdown.contains(&line), "missing {line:?} in:\n{markdown}");
    }
    for row in &report.children {
        let line = format!("| {} | {} | {} |", row.subject, row.restarts, row.circuit_opens);
        assert!(markdown.contains(&line), "missing {line:?} in:\n{markdown}");
    }

    // JSON round-trips; the stored forms are readable and upserted per week.
    let parsed: WeeklyReport = serde_json::from_str(&report.to_json()).expect("parse the JSON");
    assert_eq!(parsed, report);
    let before = now_ms();
    let stored = report::generate_and_store(db, monday()).await.expect("generate_and_store");
    let row = db.report("2026-11-30").await.expect("report").expect("stored");
    assert_eq!(row.week_start, "2026-11-30");
    assert!(row.generated_at >= before);
    assert_eq!(row.markdown, stored.to_markdown());
    assert_eq!(serde_json::from_str::<WeeklyReport>(&row.json).expect("stored JSON"), stored);
    assert_eq!(stored.content, report.content);
    let json: serde_json::Value = serde_json::from_str(&row.json).expect("stored JSON");
    assert_eq!(json["content"][0]["engagement"]["likes"], report.content[0].engagement.likes);
    assert_eq!(json["top_posts"][0]["id"], 101);

    report::generate_and_store(db, monday()).await.expect("generate again");
    // The week before holds what happened just before the boundary, nothing after it.
    let previous = report::generate_and_store(db, monday() - Days::new(7)).await.expect("the week before");
    let want = expected(&seed, seed.from - 7 * DAY, seed.from);
    assert_eq!(previous.content, want.content, "the week before, per persona × platform");
    assert_eq!(previous.top_posts, want.top, "the week before, top posts");
    assert_eq!(previous.llm, want.llm, "the week before, llm usage");
    assert_eq!(previous.children, want.children, "the week before, restarts");
    let empty = report::generate_and_store(db, monday() - Days::new(70)).await.expect("a quiet week");
    assert!(empty.content.is_empty() && empty.top_posts.is_empty() && empty.llm.is_empty());
    let listed = db.reports(10).await.expect("reports");
    let weeks: Vec<&str> = listed.iter().map(|(week, _)| week.as_str()).collect();
    assert_eq!(weeks, ["2026-11-30", "2026-11-23", "2026-09-21"], "one row per week, newest first");
    assert_eq!(db.reports(1).await.expect("reports").len(), 1);
    assert_eq!(db.report("2026-11-16").await.expect("report"), None);
    let empty = db.report("2026-09-21").await.expect("report").expect("stored");
    assert!(empty.markdown.contains("No posts published this week."), "{}", empty.markdown);
}

/// `record_ops_event` writes now; the tallies read it back.
async fn recorded_ops_events_are_counted(db: &Db, _url: &str) {
    let before = now_ms();
    db.record_ops_event(OpsKind::Restart.as_str(), None, None, "agent:ada@x", 0).await.expect("restart");
    db.record_ops_event(OpsKind::CircuitOpen.as_str(), None, None, "agent:ada@x", 0).await.expect("circuit");
    db.record_ops_event(OpsKind::RateLimitWait.as_str(), Some("ada"), Some("x"), "publish", 1500).await.expect("wait");
    db.record_ops_event(OpsKind::RateLimitWait.as_str(), Some("ada"), Some("x"), "publish", 500).await.expect("wait");
    db.record_ops_event(OpsKind::RateLimitRefused.as_str(), Some("ada"), Some("x"), "publish", 0)
        .await
        .expect("refused");
    let after = now_ms() + 1;
    assert_eq!(
        db.child_tally(before, after).await.expect("child_tally"),
        [ChildTally { subject: "agent:ada@x".into(), restarts: 1, circuit_opens: 1 }]
    );
    assert_eq!(
        db.rate_limit_tally(before, after).await.expect("rate_limit_tally"),
        [RateLimitTally {
            persona: Some("ada".into()),
            platform: Some("x".into()),
            subject: "publish".into(),
            waits: 2,
            waited_ms: 2000,
            refusals: 1,
        }]
    );
    assert!(db.child_tally(after, after + DAY).await.expect("child_tally").is_empty());
}

/// Runs each contract function on a fresh database of each engine: `sqlite::<name>` and
/// `postgres::<name>` (ignored unless a server is named), as `tests/storage.rs` does.
macro_rules! report_contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let url = format!("sqlite://{}/report.db", dir.path().display());
                    let db = super::Db::connect(&url, 2).await.expect("connect");
                    db.migrate().await.expect("migrate");
                    assert_eq!(db.engine(), super::Engine::Sqlite);
                    super::$name(&db, &url).await;
                    db.close().await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs Postgres: set CHORUS_TEST_POSTGRES_URL and run with --ignored"]
                async fn $name() {
                    let mut database = super::TestDatabase::create().await;
                    let db = super::Db::connect(&database.url, 2).await.expect("connect");
                    db.migrate().await.expect("migrate");
                    assert_eq!(db.engine(), super::Engine::Postgres);
                    super::$name(&db, &database.url).await;
                    db.close().await;
                    database.drop_now().await;
                }
            )*
        }
    };
}

report_contract!(report_matches_the_seed, recorded_ops_events_are_counted);

// ----- the binary -----

fn chorus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chorus")).args(args).env_remove("RUST_LOG").output().expect("run chorus")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chorus_report_prints_stores_and_exits_like_the_other_commands() {
    let sandbox = Sandbox::new("");
    let url = format!("sqlite://{}", sandbox.db_path().display());
    let db = Db::connect(&url, 1).await.expect("connect");
    db.migrate().await.expect("migrate");
    let seed = seed_week();
    write_seed(&db, &url, &seed).await;
    db.close().await;
    let want = expected(&seed, seed.from, seed.to);
    let config = sandbox.config_path();
    let config = config.to_str().expect("a UTF-8 path");

    let output = chorus(&["report", "--week", "2026-12-06", "-c", config]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.starts_with("# Weekly report: 2026-11-30 to 2026-12-06\n"), "only the report on stdout:\n{stdout}");
    for row in &want.content {
        assert!(stdout.contains(&content_line(row)), "missing {:?} in:\n{stdout}", content_line(row));
    }
    assert!(stdout.contains("| 1 | ada | x | 1000 | 101 | hand-made post 101 |"), "{stdout}");

    let output = chorus(&["report", "--config", config, "--week", "2026-11-30", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: WeeklyReport = serde_json::from_slice(&output.stdout).expect("stdout is the JSON report");
    assert_eq!(printed.content, want.content);
    assert_eq!(printed.top_posts, want.top);
    assert_eq!(printed.worst_posts, want.worst);

    // `--week` alone, or nothing: the last complete week.
    let before = report::last_complete_week(now_ms());
    let output = chorus(&["report", "-c", config, "--week"]);
    let after = report::last_complete_week(now_ms());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!([before, after].iter().any(|week| stdout.starts_with(&format!("# Weekly report: {week} to "))), "{stdout}");
    assert!(chorus(&["report", "-c", config, "--week", "current"]).status.success());

    let db = Db::connect(&url, 1).await.expect("connect");
    let stored = db.report("2026-11-30").await.expect("report").expect("stored by the command");
    let stored: WeeklyReport = serde_json::from_str(&stored.json).expect("stored JSON");
    assert_eq!(stored.content, want.content);
    let weeks = db.reports(10).await.expect("reports");
    assert!(weeks.iter().any(|(week, _)| *week == before.to_string() || *week == after.to_string()), "{weeks:?}");
    db.close().await;

    // A bad week is a usage error; a bad config exits 2 like every other command.
    let output = chorus(&["report", "-c", config, "--week", "someday"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("someday"));
    sandbox.write("", "chorus.toml", "flavour = 1\n");
    let output = chorus(&["report", "-c", config]);
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.is_empty());
}

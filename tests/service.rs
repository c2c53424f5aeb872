//! The real tree in-process on 127.0.0.1:0: replies, supervision, metrics, probes, admin auth,
//! reload.

mod common;

use std::time::Duration;

use chorus::health::ChildState;
use chorus::platform::local::Fault;
use common::{Api, Sandbox, TOKEN, TestDatabase, eventually};

const WAIT: Duration = Duration::from_secs(20);

/// Posts a mention and waits for its replies to settle; returns them.
async fn settled_replies(api: &Api, id: i64) -> Vec<common::Post> {
    let first = eventually(WAIT, "a reply to the mention", || async {
        let replies = api.replies(id).await;
        (!replies.is_empty()).then_some(replies)
    })
    .await;
    // Several more poll and publish cycles: a second reply would have shown up by now.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = api.replies(id).await;
    assert_eq!(first.len(), after.len().min(first.len()));
    after
}

async fn mention_gets_exactly_one_reply(sandbox: &Sandbox) {
    let service = sandbox.start().await;
    let api = Api::new(service.admin_addr());
    let mention = api.post("sam", "@ada what do you think about gardening?").await;
    let replies = settled_replies(&api, mention.id).await;
    assert_eq!(replies.len(), 1, "exactly one reply: {replies:?}");
    assert_eq!(replies[0].author, "ada");
    assert!(replies[0].text.starts_with("@sam "), "{}", replies[0].text);
    assert!(replies[0].text.contains("gardening"), "{}", replies[0].text);

    let to_bob = api.post("sam", "@bob any coffee tips?").await;
    let replies = settled_replies(&api, to_bob.id).await;
    assert_eq!(replies.iter().map(|r| r.author.as_str()).collect::<Vec<_>>(), vec!["bob"]);

    // The reply went through the outbox and is audited.
    let counts = service.db().outbox_counts().await.unwrap();
    assert!(counts.sent >= 2, "{counts:?}");
    let key = format!("reply:local:ada:{}", mention.id);
    let trail = service.db().audit_trail(&key).await.unwrap();
    assert_eq!(trail.first().map(|(action, _)| action.as_str()), Some("enqueue"), "{trail:?}");
    assert_eq!(trail.last(), Some(&("publish".to_owned(), "sent".to_owned())), "{trail:?}");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mention_gets_exactly_one_reply_from_the_right_persona() {
    mention_gets_exactly_one_reply(&Sandbox::new("")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Postgres: set CHORUS_TEST_POSTGRES_URL and run with --ignored"]
async fn a_mention_gets_exactly_one_reply_on_postgres() {
    let mut database = TestDatabase::create().await;
    mention_gets_exactly_one_reply(&Sandbox::with_store("", Some(&database.url))).await;
    database.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_agent_is_restarted_with_growing_delays_then_parked_while_siblings_answer() {
    let sandbox = Sandbox::new(
        r#"
[supervisor]
max_restarts = 3
window = "60s"
backoff_initial = "100ms"
backoff_max = "10s"
cooldown = "1h"

[agents]
max_poll_failures = 1
"#,
    );
    let service = sandbox.start().await;
    let api = Api::new(service.admin_addr());
    service.local().set_fault("bob", Some(Fault::Unavailable));

    let status = eventually(WAIT, "bob's agent to be parked", || async {
        let children = service.health().children();
        let bob = children.get("agent:bob@local")?;
        (bob.state == ChildState::Parked).then(|| bob.clone())
    })
    .await;
    assert_eq!(status.restarts, 3, "{status:?}");
    let delays = &status.recent_backoff_ms;
    assert_eq!(delays.len(), 3, "{status:?}");
    assert!(delays[0] < delays[1] && delays[1] < delays[2], "delays must grow: {delays:?}");
    assert!(status.reason.as_deref().unwrap_or_default().contains("restarts within"), "{status:?}");

    // The sibling keeps answering, and readiness names the degraded child.
    let mention = api.post("sam", "@ada still there?").await;
    let replies = settled_replies(&api, mention.id).await;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].author, "ada");
    let readiness = api.get_json("/readyz").await;
    assert_eq!(readiness["status"], "degraded", "{readiness}");
    assert_eq!(readiness["degraded"]["agent:bob@local"]["state"], "parked", "{readiness}");
    // (The metrics recorder is process-wide and shared by every test here; tests/process.rs checks
    // the circuit metrics on a process of its own.)
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authentication_failure_opens_the_circuit_at_once() {
    let sandbox = Sandbox::new("[supervisor]\ncooldown = \"1h\"\n");
    let service = sandbox.start().await;
    service.local().set_fault("ada", Some(Fault::AuthRevoked));
    let status = eventually(WAIT, "ada's agent to be parked", || async {
        let children = service.health().children();
        let ada = children.get("agent:ada@local")?;
        (ada.state == ChildState::Parked).then(|| ada.clone())
    })
    .await;
    assert_eq!(status.restarts, 0, "no restart for a refused credential: {status:?}");
    assert!(status.reason.as_deref().unwrap_or_default().contains("authentication"), "{status:?}");
    assert_eq!(service.health().children()["agent:bob@local"].state, ChildState::Running);
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_probes_and_admin_auth_work() {
    let sandbox = Sandbox::new("");
    let service = sandbox.start().await;
    let api = Api::new(service.admin_addr());
    let mention = api.post("sam", "@ada compilers?").await;
    settled_replies(&api, mention.id).await;

    let text = api.text("/metrics").await;
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("valid exposition");
    let names: std::collections::BTreeSet<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for expected in [
        "chorus_supervisor_children",
        "chorus_outbox_enqueued_total",
        "chorus_outbox_published_total",
        "chorus_outbox_pending",
        "chorus_inbound_events_total",
        "chorus_llm_requests_total",
        "chorus_store_up",
    ] {
        assert!(names.contains(expected), "{expected} missing from /metrics: {names:?}");
    }
    let published = scrape
        .samples
        .iter()
        .find(|s| s.metric == "chorus_outbox_published_total" && s.labels.get("outcome") == Some("sent"))
        .expect("published sample");
    assert!(matches!(published.value, prometheus_parse::Value::Counter(v) if v >= 1.0), "{published:?}");

    assert_eq!(api.text("/healthz").await, "ok");
    assert_eq!(api.get_json("/readyz").await["ready"], true);
    assert_eq!(api.get("/admin/status", None).await.status(), 401);
    assert_eq!(api.get("/admin/status", Some("wrong")).await.status(), 401);
    let status = api.get("/admin/status", Some(TOKEN)).await;
    assert_eq!(status.status(), 200);
    let body: serde_json::Value = status.json().await.unwrap();
    assert!(body["outbox"]["sent"].as_i64().unwrap() >= 1, "{body}");
    assert_eq!(body["runtime"]["worker_threads"], 2, "this test's runtime serves the service: {body}");
    assert!(!body.to_string().contains(TOKEN), "the token must never be echoed");

    // A malformed payload is refused with a clear error and nothing is stored.
    let before = api.timeline().await.len();
    let bad = reqwest::Client::new()
        .post(format!("{}/local/posts", api.base))
        .header("content-type", "application/json")
        .body(r#"{"author": "sam"}"#)
        .send()
        .await
        .unwrap();
    assert!(bad.status().is_client_error(), "{}", bad.status());
    assert_eq!(api.timeline().await.len(), before);
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_valid_config_and_keeps_the_old_one_when_invalid() {
    let sandbox = Sandbox::new("");
    let service = sandbox.start().await;
    let api = Api::new(service.admin_addr());

    sandbox.write_persona("carol", &["chess"]);
    let summary = service.reload().await.expect("valid reload");
    // The local platform's RateLimiter is running already: carol's account gets a bucket there.
    assert_eq!(summary.added, vec!["agent:carol@local".to_owned()]);
    let mention = api.post("sam", "@carol chess openings?").await;
    let replies = settled_replies(&api, mention.id).await;
    assert_eq!(replies[0].author, "carol");

    // Removed and changed personas: bob's agent stops, ada's restarts with her new topics.
    std::fs::remove_file(sandbox.dir.path().join("personas/bob.toml")).unwrap();
    sandbox.write_persona("ada", &["astronomy"]);
    let summary = service.reload().await.expect("valid reload");
    assert_eq!(summary.removed, vec!["agent:bob@local".to_owned()]);
    assert!(summary.restarted.contains(&"agent:ada@local".to_owned()), "{summary:?}");
    assert!(!service.health().children().contains_key("agent:bob@local"));
    let text = settled_replies(&api, api.post("sam", "@ada astronomy tonight?").await.id).await[0].text.clone();
    assert!(text.contains("astronomy"), "{text}");
    let to_bob = api.post("sam", "@bob are you gone?").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(api.replies(to_bob.id).await.is_empty(), "a removed persona does not answer");

    sandbox.write("personas", "dave.toml", "name = \"dave\"\nbio = 3\n");
    let errors = service.reload().await.expect_err("invalid config rejected").to_string();
    assert!(errors.contains("dave.toml: bio"), "{errors}");
    assert!(!service.health().children().contains_key("agent:dave@local"));
    let mention = api.post("sam", "@ada still answering?").await;
    assert_eq!(settled_replies(&api, mention.id).await[0].author, "ada");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_guard_ignores_self_mentions_and_caps_persona_to_persona_turns() {
    let sandbox = Sandbox::new("[agents]\nmax_bot_turns = 2\n");
    let service = sandbox.start().await;
    let api = Api::new(service.admin_addr());

    // A persona never answers itself.
    let own = api.post("ada", "note to self, @ada: water the tomatoes.").await;
    // Personas answering each other stop after `max_bot_turns` persona turns in one thread:
    // bob asks ada (turn 1), ada answers "@bob …" (turn 2, bob answers "@ada …"), bob's answer
    // would be turn 3: ada stays silent and the thread ends.
    let opener = api.post("bob", "@ada what do you think about gardening?").await;
    let thread = eventually(WAIT, "the persona exchange to end", || async {
        let timeline = api.timeline().await;
        let replies: Vec<common::Post> =
            timeline.into_iter().filter(|p| p.reply_to.is_some() && p.id > opener.id).collect();
        (replies.len() >= 2).then_some(replies)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after: Vec<common::Post> =
        api.timeline().await.into_iter().filter(|p| p.reply_to.is_some() && p.id > opener.id).collect();
    assert_eq!(after.len(), 2, "the exchange must stop at the cap: {after:?}");
    let authors: Vec<&str> = thread.iter().rev().map(|p| p.author.as_str()).collect();
    assert_eq!(authors, vec!["ada", "bob"]);
    assert!(api.replies(own.id).await.is_empty(), "a persona must not answer itself");
    // Nobody is notified of their own post on the local platform: it never became ada's mention.
    let stored = service.db().inbound_state("local", &own.id.to_string(), "ada").await.unwrap();
    assert_eq!(stored, None, "a persona's own post is not its mention");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_stays_in_the_outbox_and_is_published_once_when_the_platform_recovers() {
    let sandbox = Sandbox::new("");
    let service = sandbox.start().await;
    let api = Api::new(service.admin_addr());
    service.local().set_fault("ada", Some(Fault::PublishUnavailable));

    let mention = api.post("sam", "@ada are you there?").await;
    let key = format!("reply:local:ada:{}", mention.id);
    let row = eventually(WAIT, "failed publish attempts recorded", || async {
        let row = service.db().outbox_row(&key).await.unwrap()?;
        (row.attempts >= 2).then_some(row)
    })
    .await;
    assert_eq!(row.status, chorus::store::OutboxStatus::Pending, "a failed publish stays pending: {row:?}");
    assert!(api.replies(mention.id).await.is_empty());
    let trail = service.db().audit_trail(&key).await.unwrap();
    assert!(trail.contains(&("publish".to_owned(), "retry".to_owned())), "{trail:?}");

    service.local().set_fault("ada", None);
    let replies = settled_replies(&api, mention.id).await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    let row = service.db().outbox_row(&key).await.unwrap().unwrap();
    assert_eq!(row.status, chorus::store::OutboxStatus::Sent);
    assert_eq!(row.remote_id, Some(replies[0].id.to_string()));
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_mention_wakes_its_agent_without_waiting_for_the_poll() {
    // An hour between polls: only the wake-up can get the mention answered within the wait.
    let sandbox = Sandbox::new("");
    let path = sandbox.config_path();
    let text = std::fs::read_to_string(&path).unwrap().replace("poll_every = \"100ms\"", "poll_every = \"1h\"");
    std::fs::write(&path, text).unwrap();
    let service = sandbox.start().await;
    let api = Api::new(service.admin_addr());
    // The first poll (at a random point of the hour) has not run; the agent reads when woken.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mention = api.post("sam", "@ada are you awake?").await;
    let replies = eventually(Duration::from_secs(10), "the woken agent's reply", || async {
        let replies = api.replies(mention.id).await;
        (!replies.is_empty()).then_some(replies)
    })
    .await;
    assert_eq!(replies[0].author, "ada");
    // More mentions at once than one poll reads (50): every one is read and settled — answered,
    // or dropped as a near-duplicate of an earlier answer — without any poll.
    let mut ids = Vec::new();
    for n in 0..60 {
        ids.push(api.post("sam", &format!("@ada question {n}?")).await.id);
    }
    for id in ids {
        let state = eventually(Duration::from_secs(20), "every mention settled", || async {
            let state = service.db().inbound_state("local", &id.to_string(), "ada").await.unwrap();
            state.filter(|state| state != "pending")
        })
        .await;
        assert!(state == "answered" || state == "ignored", "{state}");
        assert!(api.replies(id).await.len() <= 1);
    }
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_holds_reading_until_it_drains() {
    // Each completion takes 400 ms; ada answers one mention at a time and holds one at most.
    let llm = chorus::sim::llm::LlmSim::start().await.unwrap();
    llm.fail_always(Some(chorus::sim::llm::SimFault::SlowFirstByte(Duration::from_millis(400))));
    let sandbox = Sandbox::new(&format!(
        "[agents]\nmax_in_flight = 1\nmax_pending = 1\n\n[llm]\ndefault_chain = [\"sim\"]\n\n\
         [llm.providers.sim]\nkind = \"openai_compat\"\nbase_url = \"{}\"\nmodel = \"m\"\nstream = false\n",
        llm.openai_base_url()
    ));
    let service = sandbox.start().await;
    let api = Api::new(service.admin_addr());
    let db = service.db();
    let state = |id: i64| async move { db.inbound_state("local", &id.to_string(), "ada").await.unwrap() };

    let first = api.post("sam", "@ada what is the first thing to learn?").await;
    eventually(WAIT, "the first mention read", || async { state(first.id).await.map(|_| ()) }).await;
    let mut rest = Vec::new();
    for n in 0..5 {
        rest.push(api.post("sam", &format!("@ada follow-up number {n}: why?")).await.id);
    }
    // While the first reply is being generated, the others wait on the platform, unread (wake-ups
    // and the 100 ms poll timer included).
    tokio::time::sleep(Duration::from_millis(250)).await;
    for id in &rest {
        assert_eq!(state(*id).await, None, "mention {id} must wait on the platform while the backlog is full");
    }
    // Then every one is read and settled.
    eventually(WAIT, "every mention settled", || async {
        for id in rest.iter().chain([&first.id]) {
            if !matches!(state(*id).await.as_deref(), Some("answered" | "ignored")) {
                return None;
            }
        }
        Some(())
    })
    .await;
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_holds_drafting_until_the_platform_takes_it() {
    // ada's account publishes 3 rows a second; she drafts 2 replies at once and may have 4
    // waiting in the outbox. An hour between polls: mentions are read when they wake her, and
    // only the outbox draining can start drafting again.
    const MENTIONS: usize = 18;
    const MAX_UNPUBLISHED: usize = 4;
    const MAX_IN_FLIGHT: usize = 2;
    let sandbox = Sandbox::new(&format!(
        "[agents]\nmax_in_flight = {MAX_IN_FLIGHT}\nmax_unpublished = {MAX_UNPUBLISHED}\n\n[team]\nplan_every = \"1h\"\n"
    ));
    let path = sandbox.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let (limit, poll) = ("rate_limit = { burst = 1000, per = \"1s\" }", "poll_every = \"100ms\"");
    assert!(text.contains(limit) && text.contains(poll), "the sandbox's local rate limit and poll interval");
    let slow = text.replace(limit, "rate_limit = { burst = 3, per = \"1s\" }").replace(poll, "poll_every = \"1h\"");
    std::fs::write(&path, slow).unwrap();
    let service = sandbox.start().await;
    let api = Api::new(service.admin_addr());
    let db = service.db();

    let mut ids = Vec::new();
    for n in 0..MENTIONS {
        ids.push(api.post("sam", &format!("@ada question {n}: which compiler pass matters most?")).await.id);
    }
    // Drafted replies waiting in the outbox, watched until every mention is settled. Drafting
    // freely, the offline model would have all of them drafted in a moment and waiting behind
    // the platform's 3 a second.
    let mut most_waiting = 0;
    let started = std::time::Instant::now();
    loop {
        // One query, so the count is of one moment (no plan runs in the hour: the rows are replies).
        let accounts = db.pending_accounts().await.unwrap();
        let waiting = accounts
            .iter()
            .find(|account| account.platform == "local" && account.persona == "ada")
            .map_or(0, |account| account.rows as usize);
        let mut settled = 0;
        for id in &ids {
            if matches!(
                db.inbound_state("local", &id.to_string(), "ada").await.unwrap().as_deref(),
                Some("answered" | "ignored")
            ) {
                settled += 1;
            }
        }
        most_waiting = most_waiting.max(waiting);
        if settled == MENTIONS && waiting == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(40), "{settled} of {MENTIONS} settled, {waiting} waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Replies waiting and replies being drafted together stay within the bound.
    assert!(most_waiting <= MAX_UNPUBLISHED, "{most_waiting} replies waited in the outbox");
    assert!(most_waiting >= MAX_UNPUBLISHED / 2, "the platform's limit did make replies wait: {most_waiting}");
    // Drafting resumed each time the outbox drained: every mention answered is published, once
    // (a near-duplicate draft may be dropped instead).
    let mut answered = 0;
    for id in &ids {
        let replies = api.replies(*id).await;
        let state = db.inbound_state("local", &id.to_string(), "ada").await.unwrap();
        assert_eq!(replies.len(), usize::from(state.as_deref() == Some("answered")), "mention {id}: {replies:?}");
        answered += replies.len();
    }
    assert!(answered > MAX_UNPUBLISHED + MAX_IN_FLIGHT, "only {answered} answered");
    let text = api.text("/metrics").await;
    assert!(
        text.lines().any(|line| line.starts_with("chorus_agent_drafting_held_total{platform=\"local\"}")),
        "the hold is counted"
    );
    service.shutdown().await;
}

/// The `chorus-wal` thread's checkpoints are counted. A new database's log holds the
/// migrations' pages, over 1,000 frames today, so the native writer's first commit asks for a
/// checkpoint; 48 mentions and their replies (about 50 frames a reply) would on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_checkpoints_of_the_thread_are_counted() {
    let sandbox = Sandbox::new("");
    let service = sandbox.start().await;
    let api = Api::new(service.admin_addr());
    let checkpoints = || async {
        let text = api.text("/metrics").await;
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("exposition");
        scrape
            .samples
            .iter()
            .find(|s| s.metric == "chorus_store_wal_checkpoints_total" && s.labels.get("by") == Some("thread"))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) => v,
                ref other => panic!("not a counter: {other:?}"),
            })
    };
    // The recorder is the process's, shared with this binary's other services: from its count now.
    let before = checkpoints().await.unwrap_or(0.0);
    // Not waiting for each reply: the duplicate guard may close a mention without one.
    let topics = ["compilers", "gardens", "tides", "violins", "glaciers", "lanterns", "orbits", "ferns"];
    for round in 0..6 {
        for topic in topics {
            api.post("sam", &format!("@ada what about {topic}, take {round}?")).await;
        }
    }
    eventually(WAIT, "a counted checkpoint", || async { checkpoints().await.filter(|&ran| ran > before) }).await;
    service.shutdown().await;
}

/// Concurrent enqueues meet in the Publisher's group commit: every caller is answered, a key
/// named twice is one row (created once), and every row is published once, in its own account's
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_are_answered_once_each_and_published_once() {
    use chorus::publisher::PublisherMsg;
    use chorus::store::{ContentLog, NewOutbox};
    const POSTS: usize = 40;
    let sandbox = Sandbox::new("");
    let service = sandbox.start().await;
    let publisher = eventually(WAIT, "the publisher is up", || async { service.publisher() }).await;
    let calls = (0..POSTS + 10).map(|n| {
        // The last ten name keys the first ten already named.
        let n = n % POSTS;
        let persona = if n.is_multiple_of(2) { "ada" } else { "bob" };
        let item = NewOutbox {
            idempotency_key: format!("post:test:{n}"),
            persona: persona.to_owned(),
            platform: "local".to_owned(),
            kind: "post".to_owned(),
            text: format!("group commit post number {n}"),
            reply_to: None,
            conversation: None,
        };
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let log = Box::new(ContentLog::default());
            let enqueue = |reply| PublisherMsg::Enqueue { item, inbound_id: None, log, reply };
            ractor::call_t!(publisher, enqueue, 20_000).expect("the publisher answers").expect("the row is written")
        })
    });
    let mut answers = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        answers.push(call.await.expect("the caller finished"));
    }
    for n in 0..10 {
        let (first, again) = (answers[n], answers[POSTS + n]);
        assert_eq!(first.id, again.id, "key {n}: one row");
        assert!(first.created != again.created, "key {n}: created once: {first:?} {again:?}");
    }
    assert_eq!(answers.iter().filter(|a| a.created).count(), POSTS);
    let api = Api::new(service.admin_addr());
    let published = eventually(WAIT, "every row published", || async {
        let posts: Vec<common::Post> =
            api.timeline().await.into_iter().filter(|post| post.text.starts_with("group commit post")).collect();
        (posts.len() >= POSTS).then_some(posts)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again: Vec<common::Post> =
        api.timeline().await.into_iter().filter(|post| post.text.starts_with("group commit post")).collect();
    assert_eq!(again.len(), POSTS, "each row published once: {again:?}");
    assert_eq!(published.len(), POSTS);
    // In each account, in the order the rows were numbered.
    for persona in ["ada", "bob"] {
        let mut numbers: Vec<(i64, usize)> = again
            .iter()
            .filter(|post| post.author == persona)
            .map(|post| (post.id, post.text.rsplit(' ').next().unwrap().parse().unwrap()))
            .collect();
        numbers.sort();
        let mut by_row: Vec<(i64, usize)> =
            (0..POSTS).filter(|n| n.is_multiple_of(2) == (persona == "ada")).map(|n| (answers[n].id, n)).collect();
        by_row.sort();
        let published_order: Vec<usize> = numbers.iter().map(|(_, n)| *n).collect();
        let row_order: Vec<usize> = by_row.iter().map(|(_, n)| *n).collect();
        assert_eq!(published_order, row_order, "{persona} publishes in row order");
    }
    let counts = service.db().outbox_counts().await.unwrap();
    assert_eq!((counts.pending, counts.failed), (0, 0), "{counts:?}");
    service.shutdown().await;
}

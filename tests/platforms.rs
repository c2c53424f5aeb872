//! X and Reddit agents in the real tree, against the simulators the sandbox starts: threaded
//! replies exactly once, long replies as counted threads on X, header-driven limits, a revoked
//! account parking only its agent, and reconciliation after a crash between the platform's
//! acceptance and our commit.

mod common;

use std::time::Duration;

use chorus::health::ChildState;
use chorus::platform::x::text::weighted_length;
use chorus::sim::llm::LlmSim;
use chorus::store::{NewOutbox, OutboxStatus};
use common::{Sandbox, eventually};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

const PLATFORMS: &str = r#"
[platforms.x]
enabled = true
simulated = true
# The X simulator allows 180 mention reads per 15 minutes per account, as X does.
poll_every = "250ms"
rate_limit = { burst = 1000, per = "1s" }

[platforms.reddit]
enabled = true
simulated = true
poll_every = "100ms"
rate_limit = { burst = 1000, per = "1s" }
"#;

fn sandbox(extra: &str) -> Sandbox {
    let sandbox = Sandbox::new(&format!("{PLATFORMS}\n{extra}"));
    sandbox.write_persona_on("ada", &["compilers", "gardening"], &["x", "reddit"]);
    sandbox.write_persona_on("bob", &["coffee", "cooking"], &["x", "reddit"]);
    sandbox
}

/// The state a crash leaves between the platform's acceptance and our commit: the outbox row is
/// pending with one attempt. Written before the service starts, so no publish pass can pick the
/// row up between the insert and the attempt.
async fn pending_after_crash(sandbox: &Sandbox, item: &NewOutbox) {
    let db = chorus::store::Db::connect(&format!("sqlite://{}", sandbox.db_path().display()), 1).await.unwrap();
    db.migrate().await.unwrap();
    let enqueued = db.enqueue(item, None).await.unwrap();
    db.begin_attempts(&[enqueued.id]).await.unwrap();
    db.close().await;
}

/// ada's pending reply to `parent` on X, as the outbox holds it.
fn ada_reply_on_x(parent: &str, text: &str) -> NewOutbox {
    NewOutbox {
        idempotency_key: format!("reply:x:ada:{parent}"),
        persona: "ada".into(),
        platform: "x".into(),
        kind: "reply".into(),
        text: text.into(),
        reply_to: Some(parent.to_owned()),
        conversation: Some(parent.to_owned()),
    }
}

/// Waits until the outbox row `key` is sent and returns it.
async fn sent_row(service: &chorus::service::Service, key: &str, what: &str) -> chorus::store::OutboxRow {
    eventually(WAIT, what, || async {
        let row = service.db().outbox_row(key).await.unwrap()?;
        (row.status == OutboxStatus::Sent).then_some(row)
    })
    .await
}

/// Simulators started by the test, so their world can be set up before the service starts.
async fn simulators() -> chorus::sim::SandboxSims {
    chorus::sim::SandboxSims {
        x: Some(chorus::sim::x::XSim::start().await.unwrap()),
        reddit: Some(chorus::sim::reddit::RedditSim::start().await.unwrap()),
        discord: None,
        ..Default::default()
    }
}

fn replies_to<'a>(tweets: &'a [Value], parent: &str) -> Vec<&'a Value> {
    tweets
        .iter()
        .filter(|t| t["referenced_tweets"].as_array().is_some_and(|r| r.iter().any(|r| r["id"] == parent)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mention_on_x_and_on_reddit_gets_exactly_one_threaded_reply() {
    let sandbox = sandbox("");
    let service = sandbox.start().await;
    let (x, reddit) = (service.sims().x.clone().unwrap(), service.sims().reddit.clone().unwrap());

    let tweet = x.mention("sam", "ada", "@ada what do you think about compilers?", None);
    let comment = reddit.mention("sam", "bob", "u/bob any coffee tips?");
    // X lists a post of ada's that names ada among her mentions: read, not answered, not stored.
    let own = x.mention("ada", "ada", "@ada note to self: compilers again", None);

    let reply = eventually(WAIT, "ada's reply on x", || async {
        let tweets = x.tweets_by("ada");
        replies_to(&tweets, &tweet).first().map(|t| (*t).clone())
    })
    .await;
    assert!(reply["text"].as_str().unwrap().contains("compilers"), "{reply}");
    let answer = eventually(WAIT, "bob's reply on reddit", || async {
        reddit.comments_by("bob").into_iter().find(|c| c["parent_id"] == comment.as_str())
    })
    .await;
    assert!(answer["body"].as_str().unwrap().starts_with("@sam "), "{answer}");

    // Several more polls: still exactly one each, and the mention was marked read.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(replies_to(&x.tweets_by("ada"), &tweet).len(), 1);
    assert_eq!(reddit.comments_by("bob").iter().filter(|c| c["parent_id"] == comment.as_str()).count(), 1);
    assert!(reddit.requests().iter().any(|r| r.route().contains("read_message")), "mentions are acknowledged");
    assert!(replies_to(&x.tweets_by("ada"), &own).is_empty(), "ada does not answer herself");
    assert_eq!(service.db().inbound_state("x", &own, "ada").await.unwrap(), None, "nor stores her own post");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_reply_on_x_becomes_a_correctly_counted_thread() {
    let llm = LlmSim::start().await.unwrap();
    let sandbox = sandbox(&format!(
        "[llm]\ndefault_chain = [\"sim\"]\n\n[llm.providers.sim]\nkind = \"openai_compat\"\nbase_url = \"{}\"\nmodel = \"m\"\n",
        llm.openai_base_url()
    ));
    let service = sandbox.start().await;
    let x = service.sims().x.clone().unwrap();
    // The simulated model echoes the question, so a long question gets a long answer.
    let question = format!("@ada {}", "Tell me why compilers matter so much to you. ".repeat(14));
    let tweet = x.mention("sam", "ada", &question, None);
    let thread = eventually(WAIT, "a thread", || async {
        let tweets = x.tweets_by("ada");
        (tweets.len() >= 3).then_some(tweets)
    })
    .await;
    let mut thread: Vec<Value> = thread.into_iter().rev().collect(); // oldest first
    assert_eq!(replies_to(&thread, &tweet).len(), 1, "the thread hangs under the mention");
    let parts = thread.len();
    for (index, part) in thread.iter_mut().enumerate() {
        let text = part["text"].as_str().unwrap();
        assert!(weighted_length(text) <= 280, "part {index} too long: {text}");
        assert!(text.ends_with(&format!("({}/{parts})", index + 1)), "numbered: {text}");
    }
    for pair in thread.windows(2) {
        assert_eq!(
            replies_to(std::slice::from_ref(&pair[1]), pair[0]["id"].as_str().unwrap()).len(),
            1,
            "each part answers the previous"
        );
    }
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_remaining_zero_no_request_is_sent_before_the_reset() {
    let sandbox = sandbox("");
    let service = sandbox.start().await;
    let x = service.sims().x.clone().unwrap();
    x.set_limit("/2/users/{id}/mentions", 2, Duration::from_secs(60));
    x.clear_requests();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reads: Vec<usize> = x
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/mentions"))
        .fold(std::collections::BTreeMap::new(), |mut per_user, r| {
            *per_user.entry(r.path.clone()).or_insert(0usize) += 1;
            per_user
        })
        .into_values()
        .collect();
    assert_eq!(reads.len(), 2, "both agents polled");
    assert!(reads.iter().all(|n| *n == 2), "two reads each, then silence until the reset: {reads:?}");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_reddit_account_parks_only_that_agent() {
    let sandbox = sandbox("[supervisor]\ncooldown = \"1h\"\n");
    let service = sandbox.start().await;
    let reddit = service.sims().reddit.clone().unwrap();
    reddit.revoke("bob");
    let status = eventually(WAIT, "bob's reddit agent parked", || async {
        let children = service.health().children();
        let bob = children.get("agent:bob@reddit")?;
        (bob.state == ChildState::Parked).then(|| bob.clone())
    })
    .await;
    assert!(status.reason.unwrap_or_default().contains("authentication"));
    let comment = reddit.mention("sam", "ada", "u/ada still there?");
    eventually(WAIT, "ada answers on reddit", || async {
        reddit.comments_by("ada").into_iter().find(|c| c["parent_id"] == comment.as_str())
    })
    .await;
    let children = service.health().children();
    assert_eq!(children["agent:ada@reddit"].state, ChildState::Running);
    assert_eq!(children["agent:bob@x"].state, ChildState::Running, "bob's other account is unaffected");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_landed_before_a_crash_is_reconciled_not_sent_again() {
    let sandbox = sandbox("");
    let sims = simulators().await;
    let x = sims.x.clone().unwrap();
    // A post by someone else that mentions no persona; then, as if Chorus had crashed right after
    // X accepted ada's reply: the reply is on X, the outbox row still pending with one attempt.
    let parent = x.mention("sam", "nobody", "a post of sam's", None);
    let text = "Reconciled, not repeated.";
    let landed = x.mention("ada", "sam", text, Some(&parent));
    let item = ada_reply_on_x(&parent, text);
    let key = item.idempotency_key.clone();
    pending_after_crash(&sandbox, &item).await;
    let service = chorus::service::start_with(sandbox.load(), sims).await.unwrap();

    let row = sent_row(&service, &key, "the row reconciled").await;
    assert_eq!(row.remote_id.as_deref(), Some(landed.as_str()));
    assert_eq!(replies_to(&x.tweets_by("ada"), &parent).len(), 1, "no duplicate on X");
    let trail = service.db().audit_trail(&key).await.unwrap();
    assert!(trail.contains(&("publish".to_owned(), "reconciled".to_owned())), "{trail:?}");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_window_is_waited_out_without_restarting_the_agent() {
    let sandbox = sandbox("[supervisor]\nmax_restarts = 1\ncooldown = \"1h\"\n\n[agents]\nmax_poll_failures = 1\n");
    let service = sandbox.start().await;
    let x = service.sims().x.clone().unwrap();
    x.set_limit("/2/users/{id}/mentions", 1, Duration::from_secs(2));
    x.clear_requests();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tweet = x.mention("sam", "ada", "@ada are you patient?", None);
    eventually(WAIT, "ada's reply after the reset", || async {
        let tweets = x.tweets_by("ada");
        (!replies_to(&tweets, &tweet).is_empty()).then_some(())
    })
    .await;
    let ada = &service.health().children()["agent:ada@x"];
    assert_eq!((ada.state, ada.restarts), (ChildState::Running, 0), "waiting for a reset is not a failure: {ada:?}");
    // One read per 2 s window at most: the gate sent nothing while the window was exhausted.
    let reads = x.requests().iter().filter(|r| r.path.ends_with("/mentions") && r.path.contains("/users/")).count();
    assert!(reads <= 2 * 4, "reads stayed within the windows: {reads}");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_mention_is_counted_and_skipped_and_the_next_one_is_answered() {
    let sandbox = sandbox("");
    let service = sandbox.start().await;
    let x = service.sims().x.clone().unwrap();
    x.malformed_mention("sam", "ada");
    let tweet = x.mention("sam", "ada", "@ada after the broken one?", None);
    eventually(WAIT, "ada answers the good mention", || async {
        let tweets = x.tweets_by("ada");
        (!replies_to(&tweets, &tweet).is_empty()).then_some(())
    })
    .await;
    let metrics = common::Api::new(service.admin_addr()).text("/metrics").await;
    let malformed = metrics
        .lines()
        .find(|line| line.starts_with(r#"chorus_platform_malformed_payloads_total{platform="x"}"#))
        .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(malformed.is_some_and(|n| n >= 1.0), "counted: {malformed:?}");
    assert_eq!(service.health().children()["agent:ada@x"].restarts, 0, "never a crash");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reddit_self_post_that_landed_before_a_crash_is_reconciled_not_sent_again() {
    use chorus::config::Secret;
    use chorus::platform::connect::{SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_PASSWORD, SIM_SUBREDDIT};
    use chorus::platform::reddit::{RedditClient, RedditClientConfig};

    let sandbox = sandbox("");
    let sims = simulators().await;
    let reddit = sims.reddit.clone().unwrap();
    reddit.add_account("ada", SIM_PASSWORD, SIM_CLIENT_ID, SIM_CLIENT_SECRET);
    // As if Chorus had crashed right after Reddit accepted ada's scheduled post.
    let ada = RedditClient::new(RedditClientConfig {
        auth_base_url: reddit.auth_base_url(),
        api_base_url: reddit.api_base_url(),
        client_id: SIM_CLIENT_ID.into(),
        client_secret: Secret::new(SIM_CLIENT_SECRET),
        username: "ada".into(),
        password: Secret::new(SIM_PASSWORD),
        user_agent: "chorus-test/1.0 (reconciliation test)".into(),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let text = "Reconciled self post. Its body says more.";
    let landed = ada.submit_text(SIM_SUBREDDIT, "Reconciled self post.", text).await.unwrap().value;
    let key = "post:reddit:ada:424242".to_owned();
    let item = NewOutbox {
        idempotency_key: key.clone(),
        persona: "ada".into(),
        platform: "reddit".into(),
        kind: "post".into(),
        text: text.into(),
        reply_to: None,
        conversation: None,
    };
    pending_after_crash(&sandbox, &item).await;
    let service = chorus::service::start_with(sandbox.load(), sims).await.unwrap();
    let row = sent_row(&service, &key, "the post reconciled").await;
    assert_eq!(row.remote_id.as_deref(), Some(landed.as_str()));
    let copies = reddit.submissions_by("ada").iter().filter(|post| post["title"] == "Reconciled self post.").count();
    assert_eq!(copies, 1, "no second self post");
    service.shutdown().await;
}

/// `kill -9` for the in-process simulators: the first service runs on a runtime of its own that is
/// torn down mid-run (no drain, no shutdown: every task dropped where it stands); a second service
/// then starts on the same database against the same simulated X and Reddit.
#[test]
fn an_abrupt_stop_in_a_busy_run_then_restart_answers_every_mention_exactly_once() {
    use chorus::sim::SandboxSims;
    use chorus::sim::reddit::RedditSim;
    use chorus::sim::x::XSim;

    let main = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let sims = main.block_on(async {
        SandboxSims {
            x: Some(XSim::start().await.unwrap()),
            reddit: Some(RedditSim::start().await.unwrap()),
            discord: None,
            ..Default::default()
        }
    });
    let (x, reddit) = (sims.x.clone().unwrap(), sims.reddit.clone().unwrap());
    // Two services poll this simulator in turn: room for their reads however slow the machine is.
    x.set_limit("/2/users/{id}/mentions", 100_000, Duration::from_secs(900));
    // A slow publishing budget keeps the run busy when it is cut.
    let slow = PLATFORMS.replace("burst = 1000, per = \"1s\"", "burst = 2, per = \"1s\"");
    let sandbox = Sandbox::new(&slow);
    sandbox.write_persona_on("ada", &["compilers"], &["x", "reddit"]);
    sandbox.write_persona_on("bob", &["coffee"], &["x", "reddit"]);

    let first = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let service = first.block_on(chorus::service::start_with(sandbox.load(), sims.clone())).unwrap();
    let mut on_x = Vec::new();
    let mut on_reddit = Vec::new();
    for n in 0..8 {
        let persona = if n % 2 == 0 { "ada" } else { "bob" };
        on_x.push((x.mention("sam", persona, &format!("@{persona} busy question {n}?"), None), persona));
        on_reddit.push((reddit.mention("sam", persona, &format!("u/{persona} busy question {n}?")), persona));
    }
    let x_replies = |x: &XSim| -> usize {
        ["ada", "bob"].iter().map(|p| x.tweets_by(p).iter().filter(|t| t["referenced_tweets"].is_array()).count()).sum()
    };
    let started = std::time::Instant::now();
    while x_replies(&x) + reddit.comments_by("ada").len() + reddit.comments_by("bob").len() < 3 {
        assert!(started.elapsed() < WAIT, "no replies before the cut");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The cut: every task of the first service is dropped where it stands.
    first.shutdown_background();
    std::mem::forget(service); // its handles belong to the dead runtime
    let answered_before = x_replies(&x) + reddit.comments_by("ada").len() + reddit.comments_by("bob").len();
    assert!(answered_before < on_x.len() + on_reddit.len(), "the cut must land mid-run");

    main.block_on(async {
        let service = chorus::service::start_with(sandbox.load(), sims.clone()).await.unwrap();
        eventually(Duration::from_secs(60), "every mention answered", || async {
            let x_done = on_x.iter().all(|(id, persona)| !replies_to(&x.tweets_by(persona), id).is_empty());
            let reddit_done = on_reddit
                .iter()
                .all(|(name, persona)| reddit.comments_by(persona).iter().any(|c| c["parent_id"] == name.as_str()));
            (x_done && reddit_done).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        for (id, persona) in &on_x {
            assert_eq!(replies_to(&x.tweets_by(persona), id).len(), 1, "x mention {id}: exactly one reply");
        }
        for (name, persona) in &on_reddit {
            let replies = reddit.comments_by(persona).iter().filter(|c| c["parent_id"] == name.as_str()).count();
            assert_eq!(replies, 1, "reddit mention {name}: exactly one reply");
        }
        service.shutdown().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_cut_short_before_a_crash_is_finished_not_restarted() {
    use chorus::platform::x::text::split_thread;

    let sandbox = sandbox("");
    let sims = simulators().await;
    let x = sims.x.clone().unwrap();
    let parent = x.mention("sam", "nobody", "a long question of sam's", None);
    let text = "This answer is long on purpose, so that it needs a thread. ".repeat(8);
    let parts = split_thread(&text, 280);
    assert!(parts.len() >= 2);
    // Only the first part landed before the crash.
    let first = x.mention("ada", "sam", &parts[0], Some(&parent));
    let item = ada_reply_on_x(&parent, &text);
    let key = item.idempotency_key.clone();
    pending_after_crash(&sandbox, &item).await;
    let service = chorus::service::start_with(sandbox.load(), sims).await.unwrap();
    let row = sent_row(&service, &key, "the thread finished").await;
    assert_eq!(row.remote_id.as_deref(), Some(first.as_str()), "the thread is the one that had started");
    let tweets = x.tweets_by("ada");
    assert_eq!(replies_to(&tweets, &parent).len(), 1, "the first part was not posted again");
    let mut previous = first.clone();
    for part in &parts[1..] {
        let next = replies_to(&tweets, &previous);
        assert_eq!(next.len(), 1, "part {part:?} follows its predecessor once");
        assert!(next[0]["text"].as_str().unwrap().ends_with(part.as_str()), "{}", next[0]["text"]);
        previous = next[0]["id"].as_str().unwrap().to_owned();
    }
    service.shutdown().await;
}

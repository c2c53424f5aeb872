//! The real `chorus` binary: CLI, invalid configs, signals (SIGHUP reload, SIGTERM drain),
//! `kill -9` and restart.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Process, Sandbox, TOKEN, eventually};

const WAIT: Duration = Duration::from_secs(60);

/// For the tests that send dozens of near-identical mentions ("busy question N?"): the offline
/// provider's drafts for them share most of their words, and Memory's dedup check would rightly
/// drop some as repeats, so the dedup threshold is raised out of the way of what they test
/// (delivery, not variety).
const ALIKE_MENTIONS: &str = "[memory]\ndedup_threshold = 0.99\n";

fn chorus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chorus")).args(args).output().expect("run chorus")
}

/// Waits until every mention has a reply, then checks each has exactly one, from its persona. On
/// a timeout it names the mentions still unanswered and prints the process's log.
async fn assert_each_answered_exactly_once(process: &Process, mentions: &[(i64, &str)]) {
    let api = process.api();
    let start = Instant::now();
    loop {
        let mut unanswered = Vec::new();
        for (id, persona) in mentions {
            if api.replies(*id).await.is_empty() {
                unanswered.push((*id, *persona));
            }
        }
        if unanswered.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out after {WAIT:?} waiting for replies to {unanswered:?}; the log:\n{}",
            process.log_text()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Let any duplicate that could still be on its way land before counting.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let timeline = api.timeline().await;
    let mut replies: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for post in &timeline {
        if let Some(parent) = post.reply_to {
            replies.entry(parent).or_default().push(&post.author);
        }
    }
    for (id, persona) in mentions {
        assert_eq!(replies.get(id), Some(&vec![*persona]), "mention {id} must have exactly one reply from {persona}");
    }
}

#[test]
fn version_help_and_migrate() {
    let version = chorus(&["--version"]);
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    let help = String::from_utf8_lossy(&chorus(&["--help"]).stdout).to_string();
    for command in ["run", "check-config", "migrate"] {
        assert!(help.contains(command), "{help}");
    }
    let sandbox = Sandbox::new("");
    let config = sandbox.config_path();
    let migrate = chorus(&["migrate", "--config", config.to_str().unwrap()]);
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
    assert!(sandbox.db_path().exists());
    let check = chorus(&["check-config", "--config", config.to_str().unwrap()]);
    assert!(check.status.success());
    let summary = String::from_utf8_lossy(&check.stdout);
    assert!(summary.contains("ada") && summary.contains("bob") && summary.contains("agents: 2"), "{summary}");
}

#[test]
fn an_invalid_config_exits_2_and_names_every_bad_file_and_key() {
    let sandbox = Sandbox::new("[shutdown]\ndeadline = \"soon\"\nflavour = 1\n");
    sandbox.write(
        "personas",
        "ada.toml",
        &std::fs::read_to_string(sandbox.dir.path().join("personas/ada.toml"))
            .unwrap()
            .replace("\"1h\"", "\"every day\""),
    );
    sandbox.write("personas", "zed.toml", "name = \"Zed!\"\nbio = \"b\"\nvoice = \"v\"\ntopics = []\nplatforms = [\"local\"]\nschedule = { every = \"1h\" }\n");
    let config = sandbox.config_path();
    for command in ["check-config", "run"] {
        let output = chorus(&[command, "--config", config.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(2), "{command}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        for expected in [
            "chorus.toml: shutdown.deadline: expected a duration like \"90m\"",
            "chorus.toml: shutdown.flavour: unknown field",
            "personas/ada.toml: schedule.every: expected a duration like \"90m\"",
            "personas/zed.toml: name: expected 1 to 32 lowercase",
            "personas/zed.toml: topics: name at least one topic",
        ] {
            assert!(stderr.contains(expected), "{command}: missing {expected:?} in:\n{stderr}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_valid_config_and_keeps_the_old_one_when_invalid() {
    let sandbox = Sandbox::new("[supervisor]\ncooldown = \"1h\"\n");
    let process = Process::start(&sandbox.config_path());
    let api = process.api();

    // Invalid: rejected, logged, the service goes on with the old config.
    sandbox.write("personas", "broken.toml", "name = \"broken\"\nschedule = { every = 5 }\n");
    process.signal("HUP");
    eventually(WAIT, "the rejection to be logged", || async {
        process.log_contains("configuration rejected").then_some(())
    })
    .await;
    assert!(process.log_contains("broken.toml"), "{}", process.log_text());
    let mention = api.post("sam", "@ada are you still there?").await;
    assert_each_answered_exactly_once(&process, &[(mention.id, "ada")]).await;

    // Valid: a new persona joins without a restart.
    std::fs::remove_file(sandbox.dir.path().join("personas/broken.toml")).unwrap();
    sandbox.write_persona("carol", &["chess"]);
    process.signal("HUP");
    eventually(WAIT, "carol's agent", || async {
        let status = api.get("/admin/status", Some(TOKEN)).await.json::<serde_json::Value>().await.ok()?;
        (status["children"]["agent:carol@local"]["state"] == "running").then_some(())
    })
    .await;
    let to_carol = api.post("sam", "@carol best opening?").await;
    assert_each_answered_exactly_once(&process, &[(to_carol.id, "carol")]).await;

    // Circuit metrics of this process: revoke bob's credentials through the admin API.
    let response = reqwest::Client::new()
        .put(format!("{}/admin/local/faults/bob", api.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "fault": "auth_revoked" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    eventually(WAIT, "bob parked in /metrics", || async {
        let metrics = api.text("/metrics").await;
        (metrics.contains(r#"chorus_supervisor_children{kind="agent",state="parked"} 1"#)
            && metrics.contains(r#"chorus_supervisor_circuit_opened_total{kind="agent",reason="auth"} 1"#))
        .then_some(())
    })
    .await;
    assert!(!process.log_text().contains(TOKEN), "the admin token must never be logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_worker_threads_sets_the_services_runtime() {
    let sandbox = Sandbox::new("");
    let process = Process::start_with_env(&sandbox.config_path(), &[("CHORUS__RUNTIME__WORKER_THREADS", "1")]);
    let api = process.api();
    let status = api.get("/admin/status", Some(TOKEN)).await.json::<serde_json::Value>().await.unwrap();
    assert_eq!(status["runtime"]["worker_threads"], 1, "{status}");
    let mention = api.post("sam", "@ada one thread enough?").await;
    assert_each_answered_exactly_once(&process, &[(mention.id, "ada")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_work_in_flight_exits_0_within_the_deadline_and_loses_nothing() {
    let sandbox = Sandbox::new(&format!("[shutdown]\ndeadline = \"3s\"\n{ALIKE_MENTIONS}"));
    // A tight publishing budget keeps most replies waiting in the outbox when the signal comes.
    let tight = [
        ("CHORUS__PLATFORMS__LOCAL__RATE_LIMIT__BURST", "2"),
        ("CHORUS__PLATFORMS__LOCAL__RATE_LIMIT__PER", "4s"),
        ("CHORUS__PLATFORMS__LOCAL__RATE_LIMIT__MAX_WAIT", "200ms"),
    ];
    let mut process = Process::start_with_env(&sandbox.config_path(), &tight);
    let api = process.api();
    let mut mentions = Vec::new();
    for n in 0..12 {
        let persona = if n % 2 == 0 { "ada" } else { "bob" };
        let post = api.post("sam", &format!("@{persona} question number {n} about gardening?")).await;
        mentions.push((post.id, persona));
    }
    eventually(WAIT, "the first replies", || async {
        let replies = api.timeline().await.iter().filter(|p| p.reply_to.is_some()).count();
        (replies >= 4).then_some(())
    })
    .await;

    let signalled = Instant::now();
    process.signal("TERM");
    let code = process.wait_exit(Duration::from_secs(15));
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "{}", process.log_text());
    assert!(took < Duration::from_secs(3) + Duration::from_secs(3), "shutdown took {took:?}");
    assert!(process.log_contains("\"stopped\""), "{}", process.log_text());

    // What was not published is still in the database: every mention is in the outbox (sent or
    // pending), a stored pending inbound event, or not read yet (after the saved cursor).
    drop(process);
    let db = chorus::store::Db::connect(&format!("sqlite://{}", sandbox.db_path().display()), 1).await.unwrap();
    let counts = db.outbox_counts().await.unwrap();
    assert!(counts.pending >= 1, "the signal was meant to land with work in flight: {counts:?}");
    for (id, persona) in &mentions {
        let queued = db.outbox_row(&format!("reply:local:{persona}:{id}")).await.unwrap().is_some();
        let pending =
            db.pending_inbound(persona, "local", 100).await.unwrap().iter().any(|row| row.remote_id == id.to_string());
        // Not read yet is not lost: it is still on the platform, after the saved cursor.
        let cursor = db.cursor(persona, "local").await.unwrap().and_then(|c| c.parse::<i64>().ok()).unwrap_or(0);
        assert!(queued || pending || *id > cursor, "mention {id} was lost");
    }
    db.close().await;

    // Nothing lost: a restart with an ordinary budget answers every mention exactly once.
    let process = Process::start(&sandbox.config_path());
    assert_each_answered_exactly_once(&process, &mentions).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_busy_run_then_restart_answers_every_mention_exactly_once() {
    let sandbox = Sandbox::new(ALIKE_MENTIONS);

    let slow =
        [("CHORUS__PLATFORMS__LOCAL__RATE_LIMIT__BURST", "3"), ("CHORUS__PLATFORMS__LOCAL__RATE_LIMIT__PER", "1s")];
    let mut process = Process::start_with_env(&sandbox.config_path(), &slow);
    let api = process.api();
    let mut mentions = Vec::new();
    for n in 0..30 {
        let persona = if n % 3 == 0 { "bob" } else { "ada" };
        let post = api.post("sam", &format!("@{persona} busy question {n}?")).await;
        mentions.push((post.id, persona));
    }
    let answered_before_kill = eventually(WAIT, "replies under way", || async {
        let replies = api.timeline().await.iter().filter(|p| p.reply_to.is_some()).count();
        (replies >= 5).then_some(replies)
    })
    .await;
    process.child.kill().expect("kill -9");
    assert_eq!(process.wait_exit(Duration::from_secs(5)), None, "killed by a signal");
    assert!(answered_before_kill < mentions.len(), "the kill must land mid-run");

    drop(process);
    let process = Process::start_with_env(&sandbox.config_path(), &slow);
    assert_each_answered_exactly_once(&process, &mentions).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_forces_exit_during_a_slow_drain() {
    let sandbox = Sandbox::new("[shutdown]\ndeadline = \"30s\"\n");
    // One publish per 6 s: the drain has to wait for the next permit.
    let slow = [
        ("CHORUS__PLATFORMS__LOCAL__RATE_LIMIT__BURST", "1"),
        ("CHORUS__PLATFORMS__LOCAL__RATE_LIMIT__PER", "6s"),
        ("CHORUS__PLATFORMS__LOCAL__RATE_LIMIT__MAX_WAIT", "20s"),
    ];
    let mut process = Process::start_with_env(&sandbox.config_path(), &slow);
    let api = process.api();
    for n in 0..3 {
        api.post("sam", &format!("@ada slow question {n}?")).await;
    }
    eventually(WAIT, "the first reply", || async {
        api.timeline().await.iter().any(|p| p.reply_to.is_some()).then_some(())
    })
    .await;
    process.signal("TERM");
    eventually(WAIT, "the drain to start", || async { process.log_contains("agents drained").then_some(()) }).await;
    let second = Instant::now();
    process.signal("TERM");
    assert_eq!(process.wait_exit(Duration::from_secs(10)), Some(130), "{}", process.log_text());
    assert!(second.elapsed() < Duration::from_secs(4), "forced exit took {:?}", second.elapsed());
    assert!(process.log_contains("second signal"), "{}", process.log_text());
}

//! Smoke test of the benchmark harness (`chorus bench`, issue 9): a tiny configuration of the
//! reply benchmark must work, in process and through the binary. Nothing here asserts a time.

use std::process::Command;

use chorus::bench::{Measurement, reply};

/// 50 mentions in one second, all answered once, through the outbox, with one completion each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reply_benchmark_answers_every_mention_once_through_the_outbox() {
    let measurement = reply::latency(50, 1.0, reply::Llm::Offline, 1, 0).await.expect("the benchmark runs");
    let value = |name: &str| *measurement.values.get(name).unwrap_or_else(|| panic!("no {name} in {measurement:?}"));
    assert_eq!(measurement.scenario, "latency");
    assert_eq!(value("mentions"), 50.0, "{measurement:?}");
    assert_eq!(value("replies"), value("mentions"), "{measurement:?}");
    assert_eq!(value("personas_replying"), 1.0, "{measurement:?}");
    assert_eq!(value("unanswered"), 0.0, "{measurement:?}");
    assert_eq!(value("duplicate_replies"), 0.0, "{measurement:?}");
    let (p50, p99, max) = (value("p50_us"), value("p99_us"), value("max_us"));
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= value("p999_us") && value("p999_us") <= max, "{measurement:?}");
    assert_eq!(value("llm_calls_per_reply"), 1.0, "{measurement:?}");
    assert_eq!(value("outbox_pending"), 0.0, "{measurement:?}");
    assert_eq!(value("outbox_sent"), value("replies"), "{measurement:?}");
    assert!(value("cpu_per_reply_us") >= 0.0, "{measurement:?}");
    assert!(value("embeddings_per_reply") > 0.0, "{measurement:?}");
    assert!(value("embedding_jobs_per_reply") > 0.0, "{measurement:?}");
}

/// Mentions to a team go to its personas in turn: every persona answers its share, each reply
/// once, through its account's outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reply_benchmark_offers_the_mentions_to_every_persona_of_a_team() {
    let measurement = reply::latency(30, 1.0, reply::Llm::Offline, 3, 0).await.expect("the benchmark runs");
    let value = |name: &str| *measurement.values.get(name).unwrap_or_else(|| panic!("no {name} in {measurement:?}"));
    assert_eq!(measurement.params.get("personas"), Some(&serde_json::json!(3)));
    assert_eq!(value("personas_replying"), 3.0, "{measurement:?}");
    assert_eq!(value("replies"), 30.0, "{measurement:?}");
    assert_eq!(value("unanswered"), 0.0, "{measurement:?}");
    assert_eq!(value("duplicate_replies"), 0.0, "{measurement:?}");
    assert_eq!(value("llm_calls_per_reply"), 1.0, "{measurement:?}");
    assert_eq!(value("outbox_sent"), value("replies"), "{measurement:?}");
    assert_eq!(value("outbox_pending"), 0.0, "{measurement:?}");
}

/// Personas seeded with earlier memories answer as before, and the seeded memories are in the
/// database with their vectors beside the run's (what recall searches); without a seed only the
/// run's are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reply_benchmark_seeds_each_personas_memory_before_the_run() {
    let seeded = reply::latency(20, 1.0, reply::Llm::Offline, 2, 600).await.expect("the benchmark runs");
    let value = |name: &str| *seeded.values.get(name).unwrap_or_else(|| panic!("no {name} in {seeded:?}"));
    assert_eq!(seeded.params.get("memories"), Some(&serde_json::json!(600)));
    assert_eq!(value("replies"), 20.0, "{seeded:?}");
    assert_eq!(value("unanswered"), 0.0, "{seeded:?}");
    assert_eq!(value("llm_calls_per_reply"), 1.0, "{seeded:?}");
    // 1,200 seeded, plus each mention and reply of the run and the warm-up's.
    assert!(value("memories_embedded") >= 1_200.0 + 40.0, "{seeded:?}");
    let plain = reply::latency(20, 1.0, reply::Llm::Offline, 2, 0).await.expect("the benchmark runs");
    let embedded = plain.values["memories_embedded"];
    assert!((40.0..1_200.0).contains(&embedded), "{plain:?}");
    // Seeds are embedded offline: a remote embedder's index would not hold them.
    let remote = reply::Llm::Simulated { delay: std::time::Duration::from_millis(5), embeddings: true };
    let refused = reply::latency(20, 1.0, remote, 1, 10).await.expect_err("refused");
    assert!(refused.to_string().contains("--remote-embedder"), "{refused:#}");
}

/// With the embedding model at the LLM simulator too, every mention is answered once, with one
/// completion, and the embeddings are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reply_benchmark_runs_with_a_remote_embedder() {
    let llm = reply::Llm::Simulated { delay: std::time::Duration::from_millis(5), embeddings: true };
    let measurement = reply::latency(20, 1.0, llm, 1, 0).await.expect("the benchmark runs");
    let value = |name: &str| *measurement.values.get(name).unwrap_or_else(|| panic!("no {name} in {measurement:?}"));
    assert_eq!(measurement.params.get("embedder"), Some(&serde_json::json!("simulator")));
    assert_eq!(value("replies"), 20.0, "{measurement:?}");
    assert_eq!(value("unanswered"), 0.0, "{measurement:?}");
    assert_eq!(value("llm_calls_per_reply"), 1.0, "{measurement:?}");
    assert!(value("embeddings_per_reply") > 0.0, "{measurement:?}");
    assert!(value("embedding_jobs_per_reply") > 0.0, "{measurement:?}");
    assert!(value("ratio_p50") > 0.0, "{measurement:?}");
}

/// `chorus bench --scenario latency` prints one JSON line that is a measurement.
#[test]
fn the_bench_command_prints_one_measurement_as_a_json_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["bench", "--scenario", "latency", "--rate", "20", "--seconds", "1"])
        .output()
        .expect("run chorus bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = stdout.lines().filter(|line| !line.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stdout: {stdout}");
    let measurement: Measurement = serde_json::from_str(lines[0]).expect("the line is a measurement");
    assert_eq!(measurement.scenario, "latency");
    assert_eq!(measurement.params.get("rate"), Some(&serde_json::json!(20)));
    for name in [
        "offered_rate",
        "achieved_rate",
        "replies",
        "p50_us",
        "p99_us",
        "p999_us",
        "max_us",
        "cpu_per_reply_us",
        "llm_calls_per_reply",
        "embeddings_per_reply",
        "unanswered",
        "closed_without_reply",
        "outbox_pending",
    ] {
        assert!(measurement.values.contains_key(name), "no {name} in {measurement:?}");
    }
    assert_eq!(measurement.values["replies"], 20.0, "{measurement:?}");
    assert_eq!(measurement.values["unanswered"], 0.0, "{measurement:?}");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(measurement.params.get("worker_threads"), Some(&serde_json::json!(cores)), "one a core by default");
}

/// `--worker-threads` sets the scenario's runtime, which the measurement reports.
#[test]
fn the_bench_command_runs_on_as_many_workers_as_asked() {
    let output = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["bench", "--scenario", "latency", "--rate", "20", "--seconds", "1", "--worker-threads", "1"])
        .output()
        .expect("run chorus bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    let measurement: Measurement = serde_json::from_str(stdout.trim()).expect("the line is a measurement");
    assert_eq!(measurement.params.get("worker_threads"), Some(&serde_json::json!(1)), "{measurement:?}");
    assert_eq!(measurement.values["replies"], 20.0, "{measurement:?}");
    assert_eq!(measurement.values["unanswered"], 0.0, "{measurement:?}");
}

/// A team of no personas is refused before anything runs.
#[test]
fn the_bench_command_refuses_a_team_of_no_personas() {
    let output = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["bench", "--scenario", "latency", "--personas", "0"])
        .output()
        .expect("run chorus bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("--personas"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing measured: {}", String::from_utf8_lossy(&output.stdout));
}

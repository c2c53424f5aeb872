//! The LlmPool actor against the LLM simulator: failover and circuit breakers, Retry-After,
//! progressive output budgets, spend caps, streaming, broken streams, the bounded queue,
//! embeddings (joined while the embedder is busy), and keys kept out of logs.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus::config::Config;
use chorus::llm::{ChatMessage, Completion, CompletionRequest, LlmError, LlmMsg, LlmPool, LlmPoolArgs, Role, Task};
use chorus::sim::llm::{LlmSim, SimFault};
use chorus::store::Db;
use common::Sandbox;
use ractor::{Actor, ActorRef};

const KEY: &str = "sk-pool-test-key-42";

/// A provider table entry pointing at `sim`.
fn provider(name: &str, kind: &str, base_url: &str, extra: &str) -> String {
    format!(
        "[llm.providers.{name}]\nkind = \"{kind}\"\nbase_url = \"{base_url}\"\nmodel = \"sim-model\"\n\
         api_key = {{ file = \"llm_key\" }}\nretry_initial = \"10ms\"\nretry_max = \"3s\"\n{extra}\n"
    )
}

struct Harness {
    pool: ActorRef<LlmMsg>,
    config: Arc<Config>,
    db: Db,
    _sandbox: Sandbox,
}

async fn harness(llm_toml: &str) -> Harness {
    let sandbox = Sandbox::new(llm_toml);
    std::fs::write(sandbox.dir.path().join("llm_key"), KEY).unwrap();
    let config = Arc::new(sandbox.load());
    let db = Db::connect(&config.service.store.url, 2).await.unwrap();
    db.migrate().await.unwrap();
    let (pool, _) = Actor::spawn(None, LlmPool, LlmPoolArgs { config: config.clone(), db: db.clone() }).await.unwrap();
    Harness { pool, config, db, _sandbox: sandbox }
}

impl Harness {
    fn request(&self, persona: &str, text: &str) -> CompletionRequest {
        CompletionRequest {
            persona: self.config.personas[persona].clone(),
            task: Task::Reply,
            messages: vec![
                ChatMessage::new(Role::System, format!("You are {persona}.")),
                ChatMessage::new(Role::User, text),
            ],
            reply_to_author: Some("sam".into()),
            seed: 1,
        }
    }

    async fn complete(&self, persona: &str, text: &str) -> Result<Completion, LlmError> {
        let request = self.request(persona, text);
        ractor::call!(self.pool, |reply| LlmMsg::Complete { request, reply }).expect("pool answers")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_breaker_open_skips_the_provider_then_a_half_open_probe_decides() {
    let (first, second) = (LlmSim::start().await.unwrap(), LlmSim::start().await.unwrap());
    let breaker = "retries = 0\nbreaker_failures = 2\nbreaker_cooldown = \"700ms\"";
    let harness = harness(&format!(
        "[llm]\ndefault_chain = [\"first\", \"second\"]\n\n{}{}",
        provider("first", "openai_compat", &first.openai_base_url(), breaker),
        provider("second", "openai_compat", &second.openai_base_url(), "")
    ))
    .await;
    first.fail_always(Some(SimFault::Status { status: 500, retry_after: None, retry_after_ms: None }));

    for n in 0..2 {
        let completion = harness.complete("ada", &format!("question {n}")).await.unwrap();
        assert_eq!(completion.provider, "second");
    }
    assert_eq!(first.requests().len(), 2, "each request tried the first provider once");

    // Open: the first provider gets no traffic at all.
    for n in 0..3 {
        assert_eq!(harness.complete("ada", &format!("while open {n}")).await.unwrap().provider, "second");
    }
    assert_eq!(first.requests().len(), 2, "no traffic while the breaker is open");

    // Half-open: one probe; it fails, the circuit opens again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(harness.complete("ada", "probe 1").await.unwrap().provider, "second");
    assert_eq!(first.requests().len(), 3, "exactly one probe");
    assert_eq!(harness.complete("ada", "after failed probe").await.unwrap().provider, "second");
    assert_eq!(first.requests().len(), 3);

    // The provider recovers: the next probe succeeds and closes the circuit.
    first.fail_always(None);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(harness.complete("ada", "probe 2").await.unwrap().provider, "first");
    assert_eq!(harness.complete("ada", "closed again").await.unwrap().provider, "first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_not_retried_before_its_retry_after() {
    let sim = LlmSim::start().await.unwrap();
    let harness = harness(&format!(
        "[llm]\ndefault_chain = [\"only\"]\n\n{}",
        provider("only", "openai_compat", &sim.openai_base_url(), "retries = 2")
    ))
    .await;
    sim.script([SimFault::Status { status: 429, retry_after: Some("2".into()), retry_after_ms: None }]);
    let completion = harness.complete("ada", "rate limited?").await.unwrap();
    assert!(completion.text.starts_with("Simulated answer to:"), "{}", completion.text);
    let requests = sim.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}, before Retry-After: 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_cut_for_length_is_asked_again_with_a_larger_budget() {
    let sim = LlmSim::start().await.unwrap();
    let harness = harness(&format!(
        "[llm]\ndefault_chain = [\"only\"]\n\n{}",
        provider("only", "openai_compat", &sim.openai_base_url(), "max_tokens = 256\nmax_tokens_ceiling = 1024")
    ))
    .await;
    sim.require_max_tokens(600);
    let completion = harness.complete("ada", "a long question").await.unwrap();
    assert!(!completion.truncated);
    assert_eq!(completion.text, "Simulated answer to: a long question.");
    let budgets: Vec<u64> = sim.requests().iter().map(|r| r.body["max_tokens"].as_u64().unwrap()).collect();
    assert_eq!(budgets, vec![256, 512, 1024]);

    // At the ceiling the text comes back marked truncated; the agent keeps only whole sentences.
    sim.clear_requests();
    sim.require_max_tokens(5000);
    let completion = harness.complete("ada", "an even longer question").await.unwrap();
    assert!(completion.truncated);
    assert_eq!(sim.requests().len(), 3);
    assert_eq!(chorus::agent::finish(&completion.text, completion.truncated, 2000), None, "never half a sentence");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persona_at_its_daily_cap_is_refused_and_nothing_is_sent_even_after_a_restart() {
    let sim = LlmSim::start().await.unwrap();
    let toml = format!(
        "[llm]\ndefault_chain = [\"only\"]\n\n[llm.budget]\npersona_daily_tokens = 2000\n\n{}",
        provider(
            "only",
            "openai_compat",
            &sim.openai_base_url(),
            "max_tokens = 256\nprice_in_per_mtok = 1.0\nprice_out_per_mtok = 2.0"
        )
    );
    let harness = harness(&toml).await;
    // Spend most of ada's budget: each call costs its prompt plus at most 256 tokens of output.
    let mut spent = 0;
    while harness.complete("ada", &"word ".repeat(400)).await.is_ok() {
        spent += 1;
        assert!(spent < 20, "the cap never applied");
    }
    let before = sim.requests().len();
    let refused = harness.complete("ada", "one more").await.unwrap_err();
    assert!(matches!(refused, LlmError::BudgetExceeded { .. }), "{refused}");
    assert_eq!(sim.requests().len(), before, "a refused request is never sent");
    assert!(harness.complete("bob", "bob has his own budget").await.is_ok());

    // The spend is in the database: a new pool (a restart) refuses too.
    harness.pool.stop_and_wait(None, None).await.unwrap();
    let (pool, _) = Actor::spawn(None, LlmPool, LlmPoolArgs { config: harness.config.clone(), db: harness.db.clone() })
        .await
        .unwrap();
    let request = harness.request("ada", &"word ".repeat(400));
    let again = ractor::call!(pool, |reply| LlmMsg::Complete { request, reply }).unwrap();
    assert!(matches!(again, Err(LlmError::BudgetExceeded { .. })), "{again:?}");
    assert_eq!(sim.requests().len(), before + 1, "only bob's request was sent");
    let (tokens_in, _) = harness.db.llm_tokens("ada").await.unwrap();
    assert!(tokens_in > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_works_for_both_wire_formats_and_a_cut_stream_fails_over_never_half_posted() {
    let sim = LlmSim::start().await.unwrap();
    let harness = harness(&format!(
        "[llm]\ndefault_chain = [\"openai\", \"claude\"]\n\n{}{}",
        provider("openai", "openai_compat", &sim.openai_base_url(), "stream = true\nretries = 0"),
        provider("claude", "anthropic", &sim.anthropic_base_url(), "stream = true\nretries = 0")
    ))
    .await;
    let completion = harness.complete("ada", "stream me").await.unwrap();
    assert_eq!((completion.provider.as_str(), completion.text.as_str()), ("openai", "Simulated answer to: stream me."));
    assert!(completion.tokens_out > 0);

    // A stream cut before [DONE] is an error: the request moves to Anthropic (streaming too).
    sim.script([SimFault::CutStream]);
    let completion = harness.complete("ada", "cut me").await.unwrap();
    assert_eq!((completion.provider.as_str(), completion.text.as_str()), ("claude", "Simulated answer to: cut me."));
    let anthropic = sim.requests().into_iter().find(|r| r.path.ends_with("/v1/messages")).expect("anthropic request");
    assert_eq!(anthropic.headers.get("x-api-key").map(String::as_str), Some(KEY));
    assert_eq!(anthropic.body["system"], "You are ada.");

    // Both cut: an error, not a half reply.
    sim.script([SimFault::CutStream, SimFault::CorruptChunk]);
    let err = harness.complete("ada", "cut twice").await.unwrap_err();
    assert!(matches!(err, LlmError::Malformed { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_queue_fail_fast() {
    let sim = LlmSim::start().await.unwrap();
    let harness = harness(&format!(
        "[llm]\ndefault_chain = [\"only\"]\n\n{}",
        provider("only", "openai_compat", &sim.openai_base_url(), "max_concurrency = 1\nmax_queue = 1\nretries = 0")
    ))
    .await;
    sim.fail_always(Some(SimFault::SlowFirstByte(Duration::from_millis(600))));
    let started = Instant::now();
    let texts: Vec<String> = (0..3).map(|n| format!("slow {n}")).collect();
    let calls: Vec<_> = texts.iter().map(|text| harness.complete("ada", text)).collect();
    let results = futures::future::join_all(calls).await;
    let full: Vec<_> = results.iter().filter(|r| matches!(r, Err(LlmError::QueueFull { .. }))).collect();
    assert_eq!(full.len(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2, "{results:?}");
    assert!(started.elapsed() >= Duration::from_millis(1200), "the two admitted calls ran one at a time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_go_through_the_configured_provider() {
    let sim = LlmSim::start().await.unwrap();
    let harness = harness(&format!(
        "[llm]\ndefault_chain = [\"offline\"]\nembedding = {{ provider = \"remote\", model = \"embed-model\" }}\n\n\
         [llm.providers.offline]\nkind = \"offline\"\n\n{}",
        provider("remote", "openai_compat", &sim.openai_base_url(), "")
    ))
    .await;
    let texts = vec!["tomatoes need sun".to_owned(), "compilers need types".to_owned()];
    let embeddings =
        ractor::call!(harness.pool, |reply| LlmMsg::Embed { texts: texts.clone(), reply }).unwrap().unwrap();
    assert_eq!(embeddings.vectors.len(), 2);
    assert_eq!(embeddings.model, "embed-model");
    assert_ne!(embeddings.vectors[0], embeddings.vectors[1]);
    let request = sim.requests().pop().unwrap();
    assert!(request.path.ends_with("/v1/embeddings"), "{}", request.path);
    assert_eq!(request.body["model"], "embed-model");
}

/// With one embedding request allowed out, texts asked for while it is out wait and go together
/// in the next request; each caller gets the vectors of its own texts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_asked_for_while_the_embedder_is_busy_go_together() {
    let sim = LlmSim::start().await.unwrap();
    let harness = harness(&format!(
        "[llm]\ndefault_chain = [\"offline\"]\n\
         embedding = {{ provider = \"remote\", model = \"embed-model\", max_in_flight = 1 }}\n\n\
         [llm.providers.offline]\nkind = \"offline\"\n\n{}",
        provider("remote", "openai_compat", &sim.openai_base_url(), "")
    ))
    .await;
    let embed = |texts: Vec<String>| {
        let pool = harness.pool.clone();
        async move { ractor::call!(pool, |reply| LlmMsg::Embed { texts, reply }).unwrap() }
    };
    sim.fail_always(Some(SimFault::SlowFirstByte(Duration::from_secs(1))));
    let first = tokio::spawn(embed(vec!["the first text".to_owned()]));
    // The simulator records a request when it arrives, before its delay: the first is out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sim.requests().is_empty() {
        assert!(Instant::now() < deadline, "the first embedding request never reached the simulator");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let asked: Vec<Vec<String>> = vec![
        vec!["tomatoes need sun".to_owned(), "basil needs water".to_owned()],
        vec!["compilers need types".to_owned()],
    ];
    // One caller, then another, while the first request is out: neither is sent meanwhile.
    let second = tokio::spawn(embed(asked[0].clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sim.requests().len(), 1, "a caller waits while max_in_flight requests are out");
    let third = tokio::spawn(embed(asked[1].clone()));
    first.await.unwrap().unwrap();
    let joined = vec![second.await.unwrap(), third.await.unwrap()];

    let bodies: Vec<_> = sim.requests().into_iter().filter(|r| r.path.ends_with("/v1/embeddings")).collect();
    assert_eq!(bodies.len(), 2, "the two callers that waited shared one request");
    let mut inputs: Vec<String> =
        bodies[1].body["input"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect();
    inputs.sort();
    let mut expected: Vec<String> = asked.concat();
    expected.sort();
    assert_eq!(inputs, expected);

    // Each caller's vectors are those of its own texts, as if asked alone.
    sim.fail_always(None);
    for (texts, got) in asked.into_iter().zip(joined) {
        let got = got.unwrap();
        assert_eq!(got.model, "embed-model");
        let alone = embed(texts).await.unwrap();
        assert_eq!(got.vectors, alone.vectors);
    }
}

/// Logs are captured on this (current-thread) runtime; the key must never appear, and a refused
/// key is reported once, however many requests hit it.
#[tokio::test]
async fn the_key_never_appears_in_logs_and_a_refused_key_is_reported_once() {
    let logs = common::LogCapture::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let sim = LlmSim::start().await.unwrap();
    let harness = harness(&format!(
        "[llm]\ndefault_chain = [\"remote\", \"offline\"]\n\n[llm.providers.offline]\nkind = \"offline\"\n\n{}",
        provider("remote", "openai_compat", &sim.openai_base_url(), "retries = 1\nbreaker_cooldown = \"50ms\"")
    ))
    .await;
    sim.fail_always(Some(SimFault::Status { status: 401, retry_after: None, retry_after_ms: None }));
    for n in 0..4 {
        let completion = harness.complete("ada", &format!("key {n}")).await.unwrap();
        assert_eq!(completion.provider, "offline", "fails over to the next provider");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    sim.fail_always(Some(SimFault::Status { status: 500, retry_after: None, retry_after_ms: None }));
    let _ = harness.complete("ada", "server error").await;
    let text = logs.text();
    assert!(!text.contains(KEY), "the key leaked into the logs:\n{text}");
    assert_eq!(text.matches("refused its credentials").count(), 1, "reported once, loudly:\n{text}");
    assert!(
        sim.requests()
            .iter()
            .all(|r| r.headers.get("authorization").map(String::as_str) == Some(&*format!("Bearer {KEY}")))
    );
}

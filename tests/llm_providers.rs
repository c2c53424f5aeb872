//! The HTTP provider clients against the LLM simulator, one request per call: OpenAI-compatible
//! chat (streaming and not), embeddings, and Anthropic Messages (streaming and not); the headers
//! and bodies they send; each fault mapped to its `LlmError`; keys kept out of `Debug` and errors.

use std::sync::Arc;
use std::time::Duration;

use chorus::config::{Dur, Persona, PlatformKind, ProviderConfig, ProviderKind, Schedule, Secret};
use chorus::llm::{
    AnthropicProvider, ChatMessage, Completion, CompletionRequest, Embedder, LlmError, OpenAiCompatProvider,
    OpenAiEmbedder, Provider, Role, Task,
};
use chorus::sim::llm::{LlmSim, SimFault};

const KEY: &str = "sk-provider-test-key-7f3a";

fn persona() -> Arc<Persona> {
    Arc::new(Persona {
        name: "ada".into(),
        display_name: None,
        bio: "b".into(),
        voice: "v".into(),
        topics: vec!["gardening".into()],
        example_posts: vec![],
        platforms: vec![PlatformKind::Local],
        schedule: Schedule::every(Dur::secs(60)),
        llm_chain: vec![],
        llm_chains: Default::default(),
        budget: None,
        x: None,
        reddit: None,
        discord: None,
        trading: None,
        policy: None,
        airlock: None,
    })
}

/// A system prompt (12 chars) and a question (20 chars): 32 / 4 + 1 = 9 prompt tokens in the sim.
fn request() -> CompletionRequest {
    CompletionRequest {
        persona: persona(),
        task: Task::Reply,
        messages: vec![
            ChatMessage::new(Role::System, "You are Ada."),
            ChatMessage::new(Role::User, "What about tomatoes?"),
        ],
        reply_to_author: Some("sam".into()),
        seed: 1,
    }
}

const ANSWER: &str = "Simulated answer to: What about tomatoes.";

fn config(kind: ProviderKind, base_url: String, stream: bool) -> ProviderConfig {
    ProviderConfig {
        kind,
        base_url: Some(base_url),
        model: Some("sim-model".into()),
        stream,
        timeout: Dur::secs(10),
        ..Default::default()
    }
}

fn openai(sim: &LlmSim, stream: bool) -> OpenAiCompatProvider {
    let config = config(ProviderKind::OpenaiCompat, sim.openai_base_url(), stream);
    OpenAiCompatProvider::new("openai", &config, Some(Secret::new(KEY))).unwrap()
}

fn anthropic(sim: &LlmSim, stream: bool) -> AnthropicProvider {
    let config = config(ProviderKind::Anthropic, sim.anthropic_base_url(), stream);
    AnthropicProvider::new("claude", &config, Some(Secret::new(KEY))).unwrap()
}

/// Both wire formats, streaming and not.
fn all_providers(sim: &LlmSim) -> Vec<(String, Box<dyn Provider>)> {
    let mut providers: Vec<(String, Box<dyn Provider>)> = Vec::new();
    for stream in [false, true] {
        providers.push((format!("openai stream={stream}"), Box::new(openai(sim, stream))));
        providers.push((format!("anthropic stream={stream}"), Box::new(anthropic(sim, stream))));
    }
    providers
}

fn assert_full_answer(label: &str, completion: &Completion, provider: &str) {
    assert_eq!(completion.text, ANSWER, "{label}");
    assert_eq!(completion.provider, provider, "{label}");
    assert_eq!(completion.model, "sim-model", "{label}");
    assert_eq!(completion.tokens_in, 9, "{label}");
    assert_eq!(completion.tokens_out, 6, "{label}");
    assert!(!completion.truncated, "{label}");
}

#[tokio::test]
async fn openai_answers_streaming_and_not_with_usage_and_bearer_auth() {
    let sim = LlmSim::start().await.unwrap();
    for stream in [false, true] {
        sim.clear_requests();
        let completion = openai(&sim, stream).complete(&request(), 256).await.unwrap();
        assert_full_answer(&format!("stream={stream}"), &completion, "openai");

        let sent = sim.requests();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].path, "/v1/chat/completions");
        assert_eq!(sent[0].headers["authorization"], format!("Bearer {KEY}"));
        let body = &sent[0].body;
        assert_eq!(body["model"], "sim-model");
        assert_eq!(body["max_tokens"], 256);
        assert_eq!(body["stream"], stream);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][0]["content"], "You are Ada.");
        assert_eq!(body["messages"][1]["role"], "user");
        if stream {
            assert_eq!(body["stream_options"]["include_usage"], true);
        } else {
            assert!(body.get("stream_options").is_none(), "{body}");
        }
    }
}

#[tokio::test]
async fn openai_without_a_key_sends_no_authorization() {
    let sim = LlmSim::start().await.unwrap();
    let config = config(ProviderKind::OpenaiCompat, sim.openai_base_url(), false);
    let provider = OpenAiCompatProvider::new("local", &config, None).unwrap();
    provider.complete(&request(), 64).await.unwrap();
    assert!(!sim.requests()[0].headers.contains_key("authorization"));
}

#[tokio::test]
async fn anthropic_answers_streaming_and_not_with_its_headers_and_the_system_prompt_on_top() {
    let sim = LlmSim::start().await.unwrap();
    for stream in [false, true] {
        sim.clear_requests();
        let completion = anthropic(&sim, stream).complete(&request(), 256).await.unwrap();
        assert_full_answer(&format!("stream={stream}"), &completion, "claude");

        let sent = sim.requests();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].path, "/v1/messages");
        assert_eq!(sent[0].headers["x-api-key"], KEY);
        assert_eq!(sent[0].headers["anthropic-version"], "2023-06-01");
        assert!(!sent[0].headers.contains_key("authorization"));
        let body = &sent[0].body;
        assert_eq!(body["system"], "You are Ada.");
        assert_eq!(body["max_tokens"], 256);
        assert_eq!(body["stream"], stream);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 1, "{body}");
        assert_eq!(messages[0]["role"], "user");
        assert_eq!(messages[0]["content"], "What about tomatoes?");
    }
}

#[tokio::test]
async fn anthropic_merges_turns_and_starts_with_the_user() {
    let sim = LlmSim::start().await.unwrap();
    let mut request = request();
    request.messages = vec![
        ChatMessage::new(Role::System, "You are Ada."),
        ChatMessage::new(Role::Assistant, "My last post."),
        ChatMessage::new(Role::User, "Nice."),
        ChatMessage::new(Role::User, "What about tomatoes?"),
    ];
    let completion = anthropic(&sim, true).complete(&request, 256).await.unwrap();
    assert_eq!(completion.text, "Simulated answer to: Nice.\n\nWhat about tomatoes.");
    let body = &sim.requests()[0].body;
    let roles: Vec<&str> = body["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(body["messages"][0]["content"], "(conversation continues)");
    assert_eq!(body["messages"][2]["content"], "Nice.\n\nWhat about tomatoes?");
}

#[tokio::test]
async fn a_reply_cut_for_length_is_marked_truncated() {
    let sim = LlmSim::start().await.unwrap();
    sim.require_max_tokens(1000);
    for (label, provider) in all_providers(&sim) {
        let cut = provider.complete(&request(), 128).await.unwrap();
        assert_eq!(cut.text, "Simulated answer", "{label}");
        assert!(cut.truncated, "{label}");
        assert_eq!(cut.tokens_out, 2, "{label}");
        let full = provider.complete(&request(), 1000).await.unwrap();
        assert_full_answer(&label, &full, provider.name());
    }
    sim.require_max_tokens(0);
    for (label, provider) in all_providers(&sim) {
        sim.script([SimFault::Length]);
        let cut = provider.complete(&request(), 4096).await.unwrap();
        assert!(cut.truncated, "{label}");
        assert!(cut.text.len() < ANSWER.len(), "{label}: {}", cut.text);
    }
}

#[tokio::test]
async fn rate_limits_carry_retry_after_in_seconds_or_millis() {
    let sim = LlmSim::start().await.unwrap();
    for (label, provider) in all_providers(&sim) {
        sim.script([SimFault::Status { status: 429, retry_after: Some("2".into()), retry_after_ms: None }]);
        let err = provider.complete(&request(), 256).await.unwrap_err();
        assert_eq!(
            err,
            LlmError::RateLimited { provider: provider.name().into(), retry_after: Some(Duration::from_secs(2)) },
            "{label}"
        );

        sim.script([SimFault::Status { status: 429, retry_after: None, retry_after_ms: Some(1500) }]);
        let err = provider.complete(&request(), 256).await.unwrap_err();
        assert_eq!(
            err,
            LlmError::RateLimited { provider: provider.name().into(), retry_after: Some(Duration::from_millis(1500)) },
            "{label}"
        );

        sim.script([SimFault::Status { status: 429, retry_after: Some("1".into()), retry_after_ms: Some(3000) }]);
        let err = provider.complete(&request(), 256).await.unwrap_err();
        assert!(
            matches!(err, LlmError::RateLimited { retry_after: Some(wait), .. } if wait == Duration::from_secs(3)),
            "{label}: {err:?}"
        );

        sim.script([SimFault::Status { status: 429, retry_after: None, retry_after_ms: None }]);
        let err = provider.complete(&request(), 256).await.unwrap_err();
        assert!(matches!(err, LlmError::RateLimited { retry_after: None, .. }), "{label}: {err:?}");
    }
}

#[tokio::test]
async fn statuses_map_to_error_classes() {
    let sim = LlmSim::start().await.unwrap();
    let status = |status| SimFault::Status { status, retry_after: None, retry_after_ms: None };
    for (label, provider) in all_providers(&sim) {
        sim.script([status(500)]);
        let err = provider.complete(&request(), 256).await.unwrap_err();
        assert!(
            matches!(&err, LlmError::Unavailable { detail, .. } if detail.starts_with("HTTP 500")),
            "{label}: {err:?}"
        );

        sim.script([status(529)]);
        let err = provider.complete(&request(), 256).await.unwrap_err();
        assert!(
            matches!(&err, LlmError::Unavailable { detail, .. } if detail == "HTTP 529 overloaded"),
            "{label}: {err:?}"
        );

        sim.script([status(503)]);
        assert!(matches!(provider.complete(&request(), 256).await, Err(LlmError::Unavailable { .. })), "{label}");

        for code in [401, 403] {
            sim.script([status(code)]);
            let err = provider.complete(&request(), 256).await.unwrap_err();
            assert_eq!(err, LlmError::Auth { provider: provider.name().into() }, "{label} {code}");
        }

        for code in [400, 404] {
            sim.script([status(code)]);
            let err = provider.complete(&request(), 256).await.unwrap_err();
            assert!(
                matches!(&err, LlmError::Rejected { detail, .. } if detail.starts_with(&format!("HTTP {code}"))),
                "{label}: {err:?}"
            );
        }
    }
}

#[tokio::test]
async fn broken_and_corrupt_responses_are_malformed_never_short_text() {
    let sim = LlmSim::start().await.unwrap();
    for (label, provider) in all_providers(&sim) {
        for fault in [SimFault::CutStream, SimFault::CorruptChunk] {
            sim.script([fault.clone()]);
            let err = provider.complete(&request(), 256).await.unwrap_err();
            assert!(matches!(err, LlmError::Malformed { .. }), "{label} {fault:?}: {err:?}");
        }
        // The next request is served normally.
        let completion = provider.complete(&request(), 256).await.unwrap();
        assert_eq!(completion.text, ANSWER, "{label}");
    }
}

#[tokio::test]
async fn an_error_event_in_a_stream_maps_like_its_http_error() {
    let sim = LlmSim::start().await.unwrap();
    for stream in [false, true] {
        sim.script([SimFault::StreamError]);
        let err = anthropic(&sim, stream).complete(&request(), 256).await.unwrap_err();
        assert!(
            matches!(&err, LlmError::Unavailable { detail, .. } if detail.contains("overloaded")),
            "anthropic stream={stream}: {err:?}"
        );
        sim.script([SimFault::StreamError]);
        let err = openai(&sim, stream).complete(&request(), 256).await.unwrap_err();
        assert!(matches!(err, LlmError::Unavailable { .. }), "openai stream={stream}: {err:?}");
    }
}

#[tokio::test]
async fn a_slow_first_byte_beyond_the_timeout_is_a_timeout() {
    let sim = LlmSim::start().await.unwrap();
    for stream in [false, true] {
        let mut openai_config = config(ProviderKind::OpenaiCompat, sim.openai_base_url(), stream);
        openai_config.timeout = Dur::millis(200);
        let mut anthropic_config = config(ProviderKind::Anthropic, sim.anthropic_base_url(), stream);
        anthropic_config.timeout = Dur::millis(200);
        let providers: [Box<dyn Provider>; 2] = [
            Box::new(OpenAiCompatProvider::new("openai", &openai_config, None).unwrap()),
            Box::new(AnthropicProvider::new("claude", &anthropic_config, None).unwrap()),
        ];
        for provider in providers {
            sim.script([SimFault::SlowFirstByte(Duration::from_secs(2))]);
            let started = std::time::Instant::now();
            let err = provider.complete(&request(), 256).await.unwrap_err();
            assert_eq!(err, LlmError::Timeout { provider: provider.name().into() }, "stream={stream}");
            assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        }
    }
    // Within the timeout, a slow first byte is only slow.
    sim.script([SimFault::SlowFirstByte(Duration::from_millis(50))]);
    assert_eq!(openai(&sim, true).complete(&request(), 256).await.unwrap().text, ANSWER);
}

#[tokio::test]
async fn a_refused_connection_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = config(ProviderKind::OpenaiCompat, format!("http://{addr}/v1"), false);
    let provider = OpenAiCompatProvider::new("gone", &config, Some(Secret::new(KEY))).unwrap();
    let err = provider.complete(&request(), 256).await.unwrap_err();
    assert!(matches!(err, LlmError::Unavailable { .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(&addr.to_string()) && !shown.contains("http://"), "{shown}");
}

#[tokio::test]
async fn embeddings_come_back_in_input_order_with_the_configured_dimension() {
    let sim = LlmSim::start().await.unwrap();
    sim.set_embedding_dimension(16);
    let config = config(ProviderKind::OpenaiCompat, sim.openai_base_url(), false);
    let embedder = OpenAiEmbedder::new("openai", &config, "sim-embed", Some(Secret::new(KEY))).unwrap();
    assert_eq!(embedder.model(), "sim-embed");
    let texts: Vec<String> = ["tomatoes need sun", "compilers are fun", "a"].map(String::from).to_vec();
    let embeddings = embedder.embed(&texts).await.unwrap();
    assert_eq!(embeddings.vectors.len(), 3);
    assert!(embeddings.vectors.iter().all(|vector| vector.len() == 16));
    assert_eq!(embeddings.model, "sim-embed");
    // 17 + 17 + 1 characters: 35 / 4 + 1.
    assert_eq!(embeddings.tokens, 9);
    for (index, text) in texts.iter().enumerate() {
        let alone = embedder.embed(std::slice::from_ref(text)).await.unwrap();
        assert_eq!(alone.vectors[0], embeddings.vectors[index], "{text}");
    }
    assert_ne!(embeddings.vectors[0], embeddings.vectors[1]);

    let sent = &sim.requests()[0];
    assert_eq!(sent.path, "/v1/embeddings");
    assert_eq!(sent.headers["authorization"], format!("Bearer {KEY}"));
    assert_eq!(sent.body["input"], serde_json::json!(texts));
    assert_eq!(sent.body["model"], "sim-embed");

    assert!(embedder.embed(&[]).await.unwrap().vectors.is_empty());

    sim.script([SimFault::Status { status: 429, retry_after: Some("2".into()), retry_after_ms: None }]);
    let err = embedder.embed(&texts).await.unwrap_err();
    assert_eq!(err, LlmError::RateLimited { provider: "openai".into(), retry_after: Some(Duration::from_secs(2)) });
    sim.script([SimFault::CorruptChunk]);
    assert!(matches!(embedder.embed(&texts).await, Err(LlmError::Malformed { .. })));
}

#[tokio::test]
async fn keys_stay_out_of_debug_output_and_errors() {
    let sim = LlmSim::start().await.unwrap();
    let openai = openai(&sim, true);
    let anthropic = anthropic(&sim, false);
    let config = config(ProviderKind::OpenaiCompat, sim.openai_base_url(), false);
    let embedder = OpenAiEmbedder::new("openai", &config, "sim-embed", Some(Secret::new(KEY))).unwrap();
    for shown in [format!("{openai:?}"), format!("{anthropic:?}"), format!("{embedder:?}")] {
        assert!(!shown.contains(KEY), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    let mut errors = Vec::new();
    for fault in [
        SimFault::Status { status: 401, retry_after: None, retry_after_ms: None },
        SimFault::Status { status: 400, retry_after: None, retry_after_ms: None },
        SimFault::Status { status: 500, retry_after: None, retry_after_ms: None },
        SimFault::CutStream,
        SimFault::CorruptChunk,
    ] {
        sim.script([fault.clone()]);
        errors.push(openai.complete(&request(), 256).await.unwrap_err());
        sim.script([fault]);
        errors.push(anthropic.complete(&request(), 256).await.unwrap_err());
    }
    for err in errors {
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(KEY), "{shown}");
        assert!(!shown.contains("127.0.0.1"), "{shown}");
    }
}

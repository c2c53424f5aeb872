//! The whole service with a real OpenAI-compatible provider on the simulator: the agent's prompt
//! on the wire, usage accounting, and failover to the next provider in the chain.

mod common;

use std::time::Duration;

use chorus::sim::llm::{LlmSim, SimFault};
use common::{Api, Sandbox, eventually};

const KEY: &str = "sk-test-key-123";

async fn reply_to(api: &Api, persona: &str, text: &str) -> String {
    let mention = api.post("sam", &format!("@{persona} {text}")).await;
    let replies = eventually(Duration::from_secs(20), "a reply", || async {
        let replies = api.replies(mention.id).await;
        (!replies.is_empty()).then_some(replies)
    })
    .await;
    replies[0].text.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_provider_is_used_and_a_failing_one_fails_over_to_the_next() {
    let sim = LlmSim::start().await.unwrap();
    let sandbox = Sandbox::new(&format!(
        r#"
[llm]
default_chain = ["remote", "offline"]

[llm.providers.offline]
kind = "offline"

[llm.providers.remote]
kind = "openai_compat"
base_url = "{}"
model = "sim-model"
api_key = {{ file = "llm_key" }}
timeout = "5s"
retries = 0
breaker_failures = 100
"#,
        sim.openai_base_url()
    ));
    std::fs::write(sandbox.dir.path().join("llm_key"), format!("{KEY}\n")).unwrap();
    let service = sandbox.start().await;
    let api = Api::new(service.admin_addr());

    let text = reply_to(&api, "ada", "thoughts on compilers?").await;
    assert!(text.starts_with("Simulated answer to: @sam: @ada thoughts on compilers"), "{text}");
    let requests = sim.requests();
    assert!(requests.iter().all(|r| r.headers.get("authorization") == Some(&format!("Bearer {KEY}"))));
    let body = &requests.iter().find(|r| r.body.to_string().contains("thoughts on compilers")).expect("request").body;
    assert_eq!(body["model"], "sim-model");
    assert_eq!(body["messages"][0]["role"], "system");
    assert!(body["messages"][0]["content"].as_str().unwrap().contains("You are ada"), "{body}");
    assert!(!body.to_string().contains(KEY), "the key must never be part of a prompt");
    let tokens = eventually(Duration::from_secs(5), "usage recorded", || async {
        let (tokens_in, tokens_out) = service.db().llm_tokens("ada").await.unwrap();
        (tokens_in > 0 && tokens_out > 0).then_some((tokens_in, tokens_out))
    })
    .await;
    assert!(tokens.0 > 0);

    // The remote provider goes down (5xx), then refuses the key (401): the offline one answers.
    for status in [503, 401] {
        sim.fail_always(Some(SimFault::Status { status, retry_after: None, retry_after_ms: None }));
        let before = sim.requests().len();
        let text = reply_to(&api, "bob", &format!("coffee after a {status}?")).await;
        assert!(text.starts_with("@sam "), "offline provider answers after {status}: {text}");
        assert!(sim.requests().len() > before, "the remote provider was tried first");
    }
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_mode_can_start_the_llm_simulator_for_its_providers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let sandbox = Sandbox::new(&format!(
        r#"
[llm]
default_chain = ["sim"]

[llm.providers.sim]
kind = "anthropic"
base_url = "http://127.0.0.1:{port}"
model = "sim"
stream = true
"#
    ));
    let config = sandbox.dir.path().join("chorus.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("crowd = false", &format!("crowd = false\nllm_simulator = \"127.0.0.1:{port}\""));
    std::fs::write(&config, text).unwrap();
    let service = sandbox.start().await;
    let api = Api::new(service.admin_addr());
    let text = reply_to(&api, "ada", "are you simulated?").await;
    assert!(text.starts_with("Simulated answer to: @sam: @ada are you simulated"), "{text}");
    service.shutdown().await;
}

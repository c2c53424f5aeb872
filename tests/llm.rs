//! The LlmPool with a real OpenAI-compatible client against the simulator: requests on the wire,
//! usage accounting, and failover to the next provider in the chain.

mod common;

use std::time::Duration;

use chorus::sim::openai::OpenAiSim;
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
    let sim = OpenAiSim::start().await.unwrap();
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
"#,
        sim.base_url()
    ));
    std::fs::write(sandbox.dir.path().join("llm_key"), format!("{KEY}\n")).unwrap();
    let service = sandbox.start().await;
    let api = Api::new(service.admin_addr());

    let text = reply_to(&api, "ada", "thoughts on compilers?").await;
    assert!(text.starts_with("Simulated answer to: @sam: @ada thoughts on compilers"), "{text}");
    let auth = sim.auth_headers();
    assert!(auth.iter().all(|header| header == &format!("Bearer {KEY}")), "{auth:?}");
    let body =
        sim.bodies().into_iter().find(|b| b.to_string().contains("thoughts on compilers")).expect("request body");
    assert_eq!(body["model"], "sim-model");
    assert_eq!(body["messages"][0]["role"], "system");
    assert!(body["messages"][0]["content"].as_str().unwrap().contains("You are ada"), "{body}");
    assert!(!body.to_string().contains(KEY), "the key must never be part of a prompt");
    let (tokens_in, tokens_out) = service.db().llm_tokens("ada").await.unwrap();
    assert!(tokens_in > 0 && tokens_out > 0, "usage recorded from the response: {tokens_in} {tokens_out}");

    // The remote provider goes down (5xx), then refuses the key (401): the offline one answers.
    for status in [503, 401] {
        sim.fail_with(status);
        let before = sim.requests();
        let text = reply_to(&api, "bob", &format!("coffee after a {status}?")).await;
        assert!(text.starts_with("@sam "), "offline provider answers after {status}: {text}");
        assert!(sim.requests() > before, "the remote provider was tried first");
    }
    service.shutdown().await;
}

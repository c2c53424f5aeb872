//! Discord agents in the real tree against the Discord simulator: serenity on the gateway, our
//! own client for REST. DMs, @mentions and replies answered exactly once, never itself, long
//! answers split in order with code blocks whole, 429s waited out, a dropped gateway resumed, a
//! refused token parking only its agent, separate conversations per person — and a contract test
//! of every REST request the client sent against Discord's OpenAPI document.

mod common;

use std::time::{Duration, Instant};

use chorus::health::ChildState;
use chorus::service::Service;
use chorus::sim::SandboxSims;
use chorus::sim::discord::{DiscordFault, DiscordSim};
use chorus::sim::llm::LlmSim;
use common::discord_spec::{check, operation, spec};
use common::{Sandbox, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

const DISCORD: &str = r#"
[platforms.discord]
enabled = true
simulated = true
rate_limit = { burst = 1000, per = "1s" }
"#;

/// The LLM simulator as the only provider: it answers `Simulated answer to: <last user turn>.`
fn llm_section(llm: &LlmSim) -> String {
    format!(
        "[llm]\ndefault_chain = [\"sim\"]\n\n[llm.providers.sim]\nkind = \"openai_compat\"\nbase_url = \"{}\"\nmodel = \"m\"\n",
        llm.openai_base_url()
    )
}

/// A persona on Discord only, with `discord` appended as its `[discord]` section.
fn discord_persona(sandbox: &Sandbox, name: &str, discord: &str) {
    sandbox.write_persona_on(name, &["compilers", "gardening"], &["discord"]);
    if !discord.is_empty() {
        let path = sandbox.dir.path().join("personas").join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}\n[discord]\n{discord}\n")).unwrap();
    }
}

/// A service on the given simulator (started by the test, so channels can be made first).
async fn start_on(sandbox: &Sandbox, sim: &DiscordSim) -> Service {
    let sims = SandboxSims { discord: Some(sim.clone()), ..Default::default() };
    chorus::service::start_with(sandbox.load(), sims).await.expect("service starts")
}

/// A simulator with one persona, ada, on Discord (`ada_section` is her `[discord]` section), a
/// running service whose bot is connected, and a person, sam: (simulator, sandbox, service, ada's
/// bot id, sam's id).
async fn ada_alone(extra: &str, ada_section: &str) -> (DiscordSim, Sandbox, Service, String, String) {
    let sim = DiscordSim::start().await.unwrap();
    let sandbox = Sandbox::new(&format!("{DISCORD}\n{extra}"));
    discord_persona(&sandbox, "ada", ada_section);
    let service = start_on(&sandbox, &sim).await;
    sessions(&sim, 1).await;
    let ada = sim.user_id("ada").unwrap();
    let sam = sim.add_user("sam");
    (sim, sandbox, service, ada, sam)
}

async fn sessions(sim: &DiscordSim, n: usize) {
    eventually(WAIT, "gateway sessions", || async { (sim.connected_sessions() == n).then_some(()) }).await;
}

/// The bots' replies in `channel` (messages answering another one: a persona's scheduled posts,
/// which go to `#general` in the simulator, are not replies).
fn replies_in(sim: &DiscordSim, channel: &str) -> Vec<Value> {
    sim.messages_in(channel).into_iter().filter(|m| m.get("message_reference").is_some()).collect()
}

/// The bots' replies in `channel` once there are at least `n`.
async fn bot_messages(sim: &DiscordSim, channel: &str, n: usize, what: &str) -> Vec<Value> {
    eventually(WAIT, what, || async {
        let messages = replies_in(sim, channel);
        (messages.len() >= n).then_some(messages)
    })
    .await
}

fn str_of<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dm_and_a_mention_each_get_exactly_one_reply_with_typing() {
    let sim = DiscordSim::start().await.unwrap();
    let sandbox = Sandbox::new(DISCORD);
    discord_persona(&sandbox, "ada", "");
    discord_persona(&sandbox, "bob", "");
    let service = start_on(&sandbox, &sim).await;
    sessions(&sim, 2).await;
    let (ada, bob) = (sim.user_id("ada").unwrap(), sim.user_id("bob").unwrap());
    let sam = sim.add_user("sam");
    let general = sim.text_channel_id();

    let (dm, dm_message) = sim.dm(&sam, &ada, "what do you grow in winter?");
    let mention = sim.mention(&sam, &general, &format!("<@{bob}> how strong is your coffee?"), &[&bob]);
    let dm_replies = bot_messages(&sim, &dm, 1, "ada answers the DM").await;
    let channel_replies = bot_messages(&sim, &general, 1, "bob answers the mention").await;

    assert_eq!(str_of(&dm_replies[0], "/author/id"), ada);
    assert_eq!(str_of(&dm_replies[0], "/message_reference/message_id"), dm_message, "a reply to the DM");
    assert_eq!(str_of(&channel_replies[0], "/author/id"), bob, "only the mentioned bot answers");
    assert_eq!(str_of(&channel_replies[0], "/message_reference/message_id"), mention);
    let typing = sim.typing_events();
    assert!(typing.iter().any(|(channel, _)| *channel == dm), "typing shown in the DM: {typing:?}");

    // The bots receive their own replies over the gateway; more time passes: still one each.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(replies_in(&sim, &dm).len(), 1);
    assert_eq!(replies_in(&sim, &general).len(), 1);
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_to_the_bot_and_watched_channels_are_answered_but_never_itself() {
    let sim = DiscordSim::start().await.unwrap();
    let watched = sim.add_text_channel("ask-ada");
    let sandbox = Sandbox::new(DISCORD);
    discord_persona(&sandbox, "ada", &format!("channels = [\"{watched}\"]"));
    let service = start_on(&sandbox, &sim).await;
    sessions(&sim, 1).await;
    let ada = sim.user_id("ada").unwrap();
    assert_ne!(sim.identify_intents()[0] & (1 << 15), 0, "a watched channel needs the Message Content intent");
    let sam = sim.add_user("sam");
    let general = sim.text_channel_id();

    // Chatter in a channel that is not watched is not for ada.
    sim.mention(&sam, &general, "nice weather today", &[]);
    // Any message in the watched channel is; ada's own answer arrives there too and is ignored.
    let asked = sim.mention(&sam, &watched, "anyone know about compost?", &[]);
    let first = bot_messages(&sim, &watched, 1, "ada answers in the watched channel").await;
    // Alone on Discord, ada has nobody to share the message with: nothing is claimed.
    let claim = service.db().thread_assignment("discord", &format!("{watched}/{asked}")).await.unwrap();
    assert_eq!(claim, None);
    // A reply to ada's message, in a channel she does not watch, is answered too.
    let mention = sim.mention(&sam, &general, &format!("<@{ada}> tell me more"), &[&ada]);
    let answer = bot_messages(&sim, &general, 1, "ada answers the mention").await;
    assert_eq!(str_of(&answer[0], "/message_reference/message_id"), mention);
    let reply = sim.user_reply(&sam, &general, str_of(&answer[0], "/id"), "and in summer?");
    let answers = bot_messages(&sim, &general, 2, "ada answers the reply to her").await;
    assert_eq!(str_of(&answers[1], "/message_reference/message_id"), reply);

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(replies_in(&sim, &watched).len(), first.len(), "ada never answers herself");
    assert_eq!(replies_in(&sim, &general).len(), 2, "chatter stays unanswered");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_bot_is_answered_only_up_to_the_loop_guard_cap() {
    let sim = DiscordSim::start().await.unwrap();
    let other = sim.add_bot("other-bot-token", "otherbot");
    let sandbox = Sandbox::new(&format!("{DISCORD}\n[agents]\nmax_bot_turns = 2\n"));
    discord_persona(&sandbox, "ada", "");
    let service = start_on(&sandbox, &sim).await;
    sessions(&sim, 1).await;
    let ada = sim.user_id("ada").unwrap();
    let general = sim.text_channel_id();
    for turn in 0..6 {
        sim.bot_message(&other, &general, &format!("<@{ada}> ping number {turn}"), &[&ada]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bot_messages(&sim, &general, 2, "ada answers the first turns").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(replies_in(&sim, &general).iter().filter(|m| str_of(m, "/author/id") == ada).count(), 2);
    let ignored = service.db().pending_inbound("ada", "discord", 10).await.unwrap();
    assert!(ignored.is_empty(), "the rest were closed by the loop guard, not left pending");
    service.shutdown().await;
}

#[tokio::test]
async fn a_global_429_closes_every_route_of_the_bot_until_retry_after() {
    use chorus::config::Secret;
    use chorus::platform::PlatformError;
    use chorus::platform::discord::{DiscordClient, DiscordClientConfig, NewMessage};
    let sim = DiscordSim::start().await.unwrap();
    sim.add_bot("tok", "ada");
    let general = sim.text_channel_id();
    let client = DiscordClient::new(DiscordClientConfig {
        api_base_url: sim.base_url(),
        token: Secret::new("tok"),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let message = |content| NewMessage { content, reply_to: None, nonce: "n1" };
    sim.script([DiscordFault::RateLimited { retry_after_secs: 1.0, global: true }]);
    match client.send_message(&general, message("first")).await {
        Err(PlatformError::RateLimited { retry_after }) => assert_eq!(retry_after, Duration::from_secs(1)),
        other => panic!("expected a 429, got {other:?}"),
    }
    let sent = sim.requests().len();
    assert!(matches!(client.trigger_typing(&general).await, Err(PlatformError::RateLimited { .. })));
    assert!(matches!(client.recent_messages(&general, 5).await, Err(PlatformError::RateLimited { .. })));
    assert_eq!(sim.requests().len(), sent, "nothing is sent while the global limit holds");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client.send_message(&general, message("second")).await.expect("sent after retry_after");
    assert_eq!(sim.messages_in(&general).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5000_character_answer_arrives_as_ordered_parts_with_code_blocks_whole() {
    let llm = LlmSim::start().await.unwrap();
    let (sim, _sandbox, service, ada, sam) = ada_alone(&llm_section(&llm), "").await;

    // The simulated model repeats the question, so this question is the answer's text.
    let paragraph =
        |n: usize| format!("Paragraph {n} explains one more idea about compilers in plain words. ").repeat(9);
    let code: String = (0..14)
        .map(|line| format!("    let value_{line} = compute_something({line}) + offset; // step {line}\n"))
        .collect();
    let question = format!(
        "{}\n\n{}\n\n{}\n\n```rust\nfn main() {{\n{code}}}\n```\n\n{}\n\n{}\n\n{}\n\n{}\n\nThat is all",
        paragraph(1),
        paragraph(2),
        paragraph(3),
        paragraph(4),
        paragraph(5),
        paragraph(6),
        paragraph(7),
    );
    let (dm, trigger) = sim.dm(&sam, &ada, &question);
    let parts = eventually(WAIT, "the long answer", || async {
        let messages = sim.messages_in(&dm);
        let last = messages.last().map(|m| str_of(m, "/content").ends_with("That is all.")).unwrap_or(false);
        last.then_some(messages)
    })
    .await;
    let contents: Vec<&str> = parts.iter().map(|m| str_of(m, "/content")).collect();
    let total: usize = contents.iter().map(|c| c.chars().count()).sum();
    assert!(total >= 5000, "the answer is long: {total}");
    assert!(parts.len() >= 3, "split into {} parts", parts.len());
    for (index, content) in contents.iter().enumerate() {
        assert!(content.chars().count() <= 2000, "part {index} is too long");
        assert_eq!(content.matches("```").count() % 2, 0, "part {index} leaves a code block open:\n{content}");
    }
    let whole = contents.iter().find(|c| c.contains("```rust")).expect("a part with the code");
    assert!(whole.contains("fn main() {") && whole.contains("step 13"), "the code block is in one piece");
    assert_eq!(str_of(&parts[0], "/message_reference/message_id"), trigger, "the first part answers the DM");
    assert!(parts[1..].iter().all(|m| m.get("message_reference").is_none()), "the others follow it");
    let order: Vec<usize> = (1..=7).map(|n| contents.join("\n").find(&format!("Paragraph {n} ")).unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {order:?}");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_1_5_delays_the_next_send() {
    // ada writes no post of her own: the one scripted 429 must meet her answer, not her post.
    let sim = DiscordSim::start().await.unwrap();
    let sandbox = Sandbox::new(DISCORD);
    discord_persona(&sandbox, "ada", "");
    let path = sandbox.dir.path().join("personas").join("ada.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}max_per_day = 0\n")).unwrap();
    let service = start_on(&sandbox, &sim).await;
    sessions(&sim, 1).await;
    let (ada, sam) = (sim.user_id("ada").unwrap(), sim.add_user("sam"));
    sim.script_on(
        "/channels/{channel_id}/messages",
        [DiscordFault::RateLimited { retry_after_secs: 1.5, global: false }],
    );
    let (dm, _) = sim.dm(&sam, &ada, "is this rate limited?");
    bot_messages(&sim, &dm, 1, "the answer after the 429").await;
    let sends: Vec<Instant> =
        sim.requests().iter().filter(|r| r.method == "POST" && r.path.ends_with("/messages")).map(|r| r.at).collect();
    assert_eq!(sends.len(), 2, "one refused send, one accepted");
    let gap = sends[1] - sends[0];
    assert!(gap >= Duration::from_millis(1500), "the next send waited out retry_after: {gap:?}");
    assert_eq!(replies_in(&sim, &dm).len(), 1);
    let ada_agent = &service.health().children()["agent:ada@discord"];
    assert_eq!(ada_agent.restarts, 0, "a 429 is not a failure");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_gateway_resumes_and_an_invalidated_session_identifies_again() {
    let (sim, _sandbox, service, ada, sam) = ada_alone("", "").await;
    let (dm, _) = sim.dm(&sam, &ada, "first question?");
    bot_messages(&sim, &dm, 1, "the first answer").await;

    // Mid-conversation, the socket drops: sent while it is down, the message is replayed on resume.
    sim.drop_connections();
    sim.dm(&sam, &ada, "are you still there?");
    eventually(WAIT, "the session resumed", || async { (sim.resume_count() >= 1).then_some(()) }).await;
    bot_messages(&sim, &dm, 2, "the answer after the resume").await;

    // The session is invalidated: a new identify, then the next message is answered.
    let identified = sim.identify_count();
    sim.invalidate_sessions();
    eventually(WAIT, "identified again", || async { (sim.identify_count() > identified).then_some(()) }).await;
    sessions(&sim, 1).await;
    sim.dm(&sam, &ada, "and now?");
    bot_messages(&sim, &dm, 3, "the answer after a new session").await;
    assert_eq!(service.health().children()["agent:ada@discord"].restarts, 0, "serenity reconnected by itself");
    service.shutdown().await;
    // The runner closes its socket on its next turn, after shutdown returns.
    eventually(Duration::from_secs(5), "shutdown closes the gateway connection", || async {
        (sim.connected_sessions() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_token_parks_only_the_discord_agent() {
    // Not simulated: the production path, with tokens from files and the API at a base URL.
    let sim = DiscordSim::start().await.unwrap();
    let ada = sim.add_bot("ada-real-token", "ada");
    let sandbox = Sandbox::new(&format!(
        "[platforms.discord]\nenabled = true\napi_base_url = \"{}\"\n\n[supervisor]\ncooldown = \"1h\"\n",
        sim.base_url()
    ));
    sandbox.write("", "ada-token", "ada-real-token\n");
    sandbox.write("", "bob-token", "revoked-token\n");
    discord_persona(&sandbox, "ada", "token = { file = \"ada-token\" }");
    sandbox.write_persona_on("bob", &["coffee"], &["local", "discord"]);
    let path = sandbox.dir.path().join("personas/bob.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n[discord]\ntoken = {{ file = \"bob-token\" }}\n")).unwrap();
    let service = sandbox.start().await;

    let bob = eventually(WAIT, "bob's discord agent parked", || async {
        let children = service.health().children();
        let bob = children.get("agent:bob@discord")?;
        (bob.state == ChildState::Parked).then(|| bob.clone())
    })
    .await;
    let reason = bob.reason.unwrap_or_default();
    assert!(reason.contains("authentication"), "{reason}");
    assert!(!reason.contains("revoked-token"), "the token never appears: {reason}");

    sessions(&sim, 1).await;
    let sam = sim.add_user("sam");
    let (dm, _) = sim.dm(&sam, &ada, "are you up?");
    bot_messages(&sim, &dm, 1, "ada still answers").await;
    let children = service.health().children();
    assert_eq!(children["agent:ada@discord"].state, ChildState::Running);
    assert_eq!(children["agent:bob@local"].state, ChildState::Running, "bob's other platform is unaffected");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_intents_on_the_gateway_park_the_agent_with_the_reason() {
    let sim = DiscordSim::start().await.unwrap();
    let watched = sim.add_text_channel("ask-ada");
    // A bot without the privileged Message Content intent (bit 15) enabled in the portal.
    sim.set_allowed_intents(Some(!(1 << 15)));
    let sandbox = Sandbox::new(&format!("{DISCORD}\n[supervisor]\ncooldown = \"1h\"\n"));
    discord_persona(&sandbox, "ada", &format!("channels = [\"{watched}\"]"));
    sandbox.write_persona_on("bob", &["coffee"], &["local", "discord"]);
    let service = start_on(&sandbox, &sim).await;
    let ada = eventually(WAIT, "ada's discord agent parked", || async {
        let children = service.health().children();
        let ada = children.get("agent:ada@discord")?;
        (ada.state == ChildState::Parked).then(|| ada.clone())
    })
    .await;
    let reason = ada.reason.unwrap_or_default();
    assert!(reason.contains("4014") && reason.contains("Message Content"), "{reason}");
    // bob watches no channel, asks for no privileged intent, and carries on.
    sessions(&sim, 1).await;
    let children = service.health().children();
    assert_eq!(children["agent:bob@discord"].state, ChildState::Running);
    assert_eq!(children["agent:ada@discord"].restarts, 0, "no restart can fix intents: parked at once");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peoples_conversations_stay_separate() {
    let llm = LlmSim::start().await.unwrap();
    let (sim, _sandbox, service, ada, sam) = ada_alone(&llm_section(&llm), "").await;
    let kai = sim.add_user("kai");
    let general = sim.text_channel_id();
    let at = |text: &str| format!("<@{ada}> {text}");

    sim.mention(&sam, &general, &at("my favourite vegetable is kohlrabi"), &[&ada]);
    bot_messages(&sim, &general, 1, "ada answers sam").await;
    sim.mention(&kai, &general, &at("what is my favourite vegetable?"), &[&ada]);
    bot_messages(&sim, &general, 2, "ada answers kai").await;
    sim.mention(&sam, &general, &at("and what did I just tell you?"), &[&ada]);
    bot_messages(&sim, &general, 3, "ada answers sam again").await;

    let prompts: Vec<String> =
        llm.requests().iter().filter(|r| r.path.ends_with("/chat/completions")).map(|r| r.body.to_string()).collect();
    let kai_prompt = prompts.iter().find(|p| p.contains("what is my favourite vegetable")).unwrap();
    assert!(!kai_prompt.contains("kohlrabi"), "sam's words never reach kai's prompt: {kai_prompt}");
    let sam_again = prompts.iter().find(|p| p.contains("what did I just tell you")).unwrap();
    assert!(sam_again.contains("kohlrabi"), "sam's own conversation is remembered: {sam_again}");
    assert!(!sam_again.contains("what is my favourite vegetable"), "kai's turn is not in sam's context");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_request_matches_the_openapi_document() {
    let spec = spec();
    let (sim, _sandbox, service, ada, sam) = ada_alone("", "").await;
    let (dm, _) = sim.dm(&sam, &ada, "hello?");
    bot_messages(&sim, &dm, 1, "an answer").await;
    // A reconciliation read: a reply whose earlier attempt may have landed.
    let row = chorus::store::NewOutbox {
        idempotency_key: "reply:discord:ada:contract".into(),
        persona: "ada".into(),
        platform: "discord".into(),
        kind: "reply".into(),
        text: "A reconciled answer.".into(),
        reply_to: Some(format!("{dm}/1")),
        conversation: Some("contract".into()),
    };
    let enqueued = service.db().enqueue(&row, None).await.unwrap();
    service.db().begin_attempts(&[enqueued.id]).await.unwrap();
    eventually(WAIT, "the reconciled row is sent", || async {
        let requests = sim.requests();
        requests.iter().any(|r| r.method == "GET" && r.path.ends_with("/messages")).then_some(())
    })
    .await;
    service.shutdown().await;

    let requests = sim.requests();
    let mut seen = std::collections::BTreeSet::new();
    for request in &requests {
        let path = request.path.strip_prefix("/api/v10").expect("every route is under /api/v10");
        let op = operation(&spec, &request.method, path)
            .unwrap_or_else(|| panic!("{} {path} is not in the spec", request.method));
        seen.insert(format!("{} {}", request.method, op["operationId"].as_str().unwrap_or_default()));
        let authorization = request.headers.get("authorization").map(String::as_str).unwrap_or_default();
        if path != "/gateway" {
            assert!(authorization.starts_with("Bot "), "{} {path} is authenticated", request.method);
        }
        let user_agent = request.headers.get("user-agent").map(String::as_str).unwrap_or_default();
        if !user_agent.starts_with("DiscordBot (") {
            // serenity's own bootstrap call (GET /gateway) uses its user agent.
            assert_eq!(path, "/gateway", "our client sends Discord's user-agent form: {user_agent}");
        }
        let schema = &op["requestBody"]["content"]["application/json"]["schema"];
        match (&request.body, schema.is_null()) {
            (Value::Null, _) => {}
            (body, false) => check(&spec, schema, body, &format!("{} {path} body", request.method)),
            (body, true) => panic!("{} {path} takes no body, got {body}", request.method),
        }
    }
    let sends: Vec<&Value> =
        requests.iter().filter(|r| r.method == "POST" && r.path.ends_with("/messages")).map(|r| &r.body).collect();
    assert!(sends.iter().all(|body| body["allowed_mentions"] == json!({"parse": [], "replied_user": true})));
    assert!(sends.iter().all(|body| body["enforce_nonce"] == json!(true) && body["nonce"].is_string()));
    for route in ["GET get_bot_gateway", "POST create_message", "POST trigger_typing_indicator", "GET list_messages"] {
        assert!(seen.contains(route), "{route} was exercised: {seen:?}");
    }
}

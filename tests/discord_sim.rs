//! The Discord simulator, driven by a raw websocket client (tokio-tungstenite) and reqwest: the
//! gateway handshake, dispatches, heartbeats, resume, invalid sessions and disallowed intents;
//! REST authentication, messages (nonces, listing), typing, per-channel and global rate limits and
//! scripted faults; the helpers that make users and other bots speak — and a contract test
//! checking the simulator's objects and the requests used against Discord's published OpenAPI
//! document.

use std::time::Duration;

mod common;

use chorus::sim::discord::{DiscordFault, DiscordSim};
use common::discord_spec::{check, component, operation, response_schema, spec};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const TOKEN: &str = "sim-bot-token";

async fn setup() -> (DiscordSim, String, String) {
    let sim = DiscordSim::start().await.unwrap();
    let bot = sim.add_bot(TOKEN, "chorus-bot");
    let user = sim.add_user("ada");
    (sim, bot, user)
}

async fn connect(sim: &DiscordSim) -> Ws {
    let url = format!("{}?v=10&encoding=json", sim.gateway_url());
    tokio_tungstenite::connect_async(url).await.expect("gateway connects").0
}

/// The next message of any kind (`None`: the stream ended or failed).
async fn next_raw(ws: &mut Ws) -> Option<Message> {
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("gateway answered in time") {
        Some(Ok(message)) => Some(message),
        _ => None,
    }
}

/// The next JSON payload.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        match next_raw(ws).await {
            Some(Message::Text(text)) => return serde_json::from_str(&text).expect("JSON payload"),
            Some(Message::Ping(_) | Message::Pong(_)) => continue,
            other => panic!("expected a payload, got {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, payload: Value) {
    ws.send(Message::Text(payload.to_string())).await.unwrap();
}

async fn identify(ws: &mut Ws, token: &str) {
    let d = json!({"token": token, "intents": 37377, "properties": {"os": "linux", "browser": "t", "device": "t"}});
    send(ws, json!({"op": 2, "d": d})).await;
}

/// Connects and identifies; returns the socket after READY and GUILD_CREATE and the READY payload.
async fn ready(sim: &DiscordSim) -> (Ws, Value) {
    let mut ws = connect(sim).await;
    assert_eq!(recv(&mut ws).await["op"], 10);
    identify(&mut ws, TOKEN).await;
    let ready = recv(&mut ws).await;
    assert_eq!(ready["t"], "READY");
    assert_eq!(recv(&mut ws).await["t"], "GUILD_CREATE");
    (ws, ready)
}

fn api(sim: &DiscordSim, path: &str) -> String {
    format!("{}/api/v10{path}", sim.base_url())
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post_message(sim: &DiscordSim, channel: &str, body: Value) -> reqwest::Response {
    client()
        .post(api(sim, &format!("/channels/{channel}/messages")))
        .header("Authorization", format!("Bot {TOKEN}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `GET /channels/{channel}/messages?{query}` with the bot token.
async fn get_messages(sim: &DiscordSim, channel: &str, query: &str) -> reqwest::Response {
    client()
        .get(api(sim, &format!("/channels/{channel}/messages?{query}")))
        .header("Authorization", format!("Bot {TOKEN}"))
        .send()
        .await
        .unwrap()
}

/// The ids of a message list, in the order given.
fn ids(messages: &Value) -> Vec<String> {
    messages.as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect()
}

/// The next gateway message is a close frame with this code and reason.
async fn expect_close(ws: &mut Ws, code: u16, reason: &str) {
    match next_raw(ws).await {
        Some(Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), code);
            assert_eq!(frame.reason, reason);
        }
        other => panic!("expected close {code}, got {other:?}"),
    }
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("header {name}"))
}

#[tokio::test]
async fn hello_identify_ready_and_message_dispatch() {
    let (sim, bot, user) = setup().await;
    let mut ws = connect(&sim).await;
    let hello = recv(&mut ws).await;
    assert_eq!(hello["op"], 10);
    assert_eq!(hello["d"]["heartbeat_interval"], 41250);

    identify(&mut ws, TOKEN).await;
    let ready = recv(&mut ws).await;
    assert_eq!((ready["op"].as_u64(), ready["t"].as_str(), ready["s"].as_u64()), (Some(0), Some("READY"), Some(1)));
    let d = &ready["d"];
    assert_eq!(d["v"], 10);
    assert_eq!(d["user"]["id"], bot.as_str());
    assert_eq!(d["user"]["bot"], true);
    assert_eq!(d["guilds"][0]["id"], sim.guild_id().as_str());
    assert!(d["session_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(d["resume_gateway_url"], sim.gateway_url().as_str());
    assert_eq!(d["application"]["id"], bot.as_str());
    assert_eq!(d["application"]["flags"], 0);

    let guild = recv(&mut ws).await;
    assert_eq!((guild["t"].as_str(), guild["s"].as_u64()), (Some("GUILD_CREATE"), Some(2)));
    assert_eq!(guild["d"]["id"], sim.guild_id().as_str());
    assert_eq!(guild["d"]["channels"][0]["id"], sim.text_channel_id().as_str());
    assert_eq!(guild["d"]["channels"][0]["type"], 0);
    assert_eq!((sim.connected_sessions(), sim.identify_count()), (1, 1));

    let channel = sim.text_channel_id();
    let id = sim.user_message(&user, &channel, &format!("<@{bot}> hello"), true);
    let event = recv(&mut ws).await;
    assert_eq!((event["t"].as_str(), event["s"].as_u64()), (Some("MESSAGE_CREATE"), Some(3)));
    let message = &event["d"];
    assert_eq!(message["id"], id.as_str());
    assert_eq!(message["channel_id"], channel.as_str());
    assert_eq!(message["guild_id"], sim.guild_id().as_str());
    assert_eq!(message["content"], format!("<@{bot}> hello"));
    assert_eq!(message["author"]["id"], user.as_str());
    assert_eq!(message["author"]["username"], "ada");
    assert!(message["author"].get("bot").is_none());
    assert_eq!(message["mentions"][0]["id"], bot.as_str());
    for field in ["timestamp", "edited_timestamp", "tts", "mention_everyone", "mention_roles", "attachments"] {
        assert!(message.get(field).is_some(), "{field}");
    }
    assert_eq!(message["type"], 0);

    sim.user_message(&user, &channel, "no mention", false);
    assert_eq!(recv(&mut ws).await["d"]["mentions"], json!([]));

    let (dm_channel, dm_id) = sim.dm(&user, &bot, "psst");
    let event = recv(&mut ws).await;
    assert_eq!((event["t"].as_str(), event["s"].as_u64()), (Some("MESSAGE_CREATE"), Some(5)));
    assert_eq!(event["d"]["id"], dm_id.as_str());
    assert_eq!(event["d"]["channel_id"], dm_channel.as_str());
    assert!(event["d"].get("guild_id").is_none());
    assert_ne!(dm_channel, channel);
    assert_eq!(sim.dm(&user, &bot, "again").0, dm_channel, "one DM channel per pair");
}

#[tokio::test]
async fn heartbeats_are_acknowledged() {
    let (sim, _, _) = setup().await;
    sim.set_heartbeat_interval(Duration::from_millis(500));
    let mut ws = connect(&sim).await;
    assert_eq!(recv(&mut ws).await["d"]["heartbeat_interval"], 500);
    send(&mut ws, json!({"op": 1, "d": null})).await;
    assert_eq!(recv(&mut ws).await["op"], 11);
    identify(&mut ws, TOKEN).await;
    recv(&mut ws).await;
    recv(&mut ws).await;
    send(&mut ws, json!({"op": 1, "d": 2})).await;
    assert_eq!(recv(&mut ws).await["op"], 11);
}

#[tokio::test]
async fn an_invalid_token_closes_with_4004() {
    let (sim, _, _) = setup().await;
    let mut ws = connect(&sim).await;
    recv(&mut ws).await;
    identify(&mut ws, "wrong").await;
    match next_raw(&mut ws).await {
        Some(Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), 4004);
            assert_eq!(frame.reason, "Authentication failed.");
        }
        other => panic!("expected close 4004, got {other:?}"),
    }
    assert_eq!((sim.identify_count(), sim.connected_sessions()), (1, 0));
}

#[tokio::test]
async fn dropped_connections_resume_and_replay_missed_dispatches() {
    let (sim, _, user) = setup().await;
    let (mut ws, ready) = ready(&sim).await;
    let session_id = ready["d"]["session_id"].as_str().unwrap().to_owned();
    let channel = sim.text_channel_id();
    sim.user_message(&user, &channel, "seen", false);
    assert_eq!(recv(&mut ws).await["s"], 3);

    sim.drop_connections();
    match next_raw(&mut ws).await {
        None => {}
        Some(other) => panic!("expected an abrupt end without a close frame, got {other:?}"),
    }
    assert_eq!(sim.connected_sessions(), 0);
    let missed = sim.user_message(&user, &channel, "missed while away", false);

    let mut ws = connect(&sim).await;
    assert_eq!(recv(&mut ws).await["op"], 10);
    send(&mut ws, json!({"op": 6, "d": {"token": TOKEN, "session_id": session_id, "seq": 3}})).await;
    let replayed = recv(&mut ws).await;
    assert_eq!((replayed["t"].as_str(), replayed["s"].as_u64()), (Some("MESSAGE_CREATE"), Some(4)));
    assert_eq!(replayed["d"]["id"], missed.as_str());
    let resumed = recv(&mut ws).await;
    assert_eq!(
        (resumed["op"].as_u64(), resumed["t"].as_str(), resumed["s"].as_u64()),
        (Some(0), Some("RESUMED"), Some(5))
    );
    assert_eq!((sim.resume_count(), sim.identify_count(), sim.connected_sessions()), (1, 1, 1));

    sim.user_message(&user, &channel, "live again", false);
    let live = recv(&mut ws).await;
    assert_eq!((live["d"]["content"].as_str(), live["s"].as_u64()), (Some("live again"), Some(6)));
}

#[tokio::test]
async fn invalidated_sessions_get_op_9_and_cannot_resume() {
    let (sim, _, _) = setup().await;
    let (mut ws, ready) = ready(&sim).await;
    sim.invalidate_sessions();
    let invalid = recv(&mut ws).await;
    assert_eq!((invalid["op"].as_u64(), invalid["d"].as_bool()), (Some(9), Some(false)));
    assert_eq!(sim.connected_sessions(), 0);

    let mut ws = connect(&sim).await;
    recv(&mut ws).await;
    let d = json!({"token": TOKEN, "session_id": ready["d"]["session_id"], "seq": 2});
    send(&mut ws, json!({"op": 6, "d": d})).await;
    assert_eq!(recv(&mut ws).await["op"], 9);
    identify(&mut ws, TOKEN).await;
    let again = recv(&mut ws).await;
    assert_eq!((again["t"].as_str(), again["s"].as_u64()), (Some("READY"), Some(1)));
    assert_ne!(again["d"]["session_id"], ready["d"]["session_id"]);
    assert_eq!(sim.identify_count(), 2);
}

#[tokio::test]
async fn rest_requires_the_bot_token() {
    let (sim, bot, _) = setup().await;
    for auth in [None, Some("Bot wrong".to_owned()), Some(TOKEN.to_owned())] {
        let mut request = client().get(api(&sim, "/users/@me"));
        if let Some(auth) = &auth {
            request = request.header("Authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_eq!(response.json::<Value>().await.unwrap(), json!({"message": "401: Unauthorized", "code": 0}));
    }
    let me =
        client().get(api(&sim, "/users/@me")).header("Authorization", format!("Bot {TOKEN}")).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(
        (me["id"].as_str(), me["username"].as_str(), me["bot"].as_bool()),
        (Some(bot.as_str()), Some("chorus-bot"), Some(true))
    );

    let gateway: Value = client().get(api(&sim, "/gateway")).send().await.unwrap().json().await.unwrap();
    assert_eq!(gateway, json!({"url": sim.gateway_url()}));
    let gateway_bot = client().get(api(&sim, "/gateway/bot")).header("Authorization", format!("Bot {TOKEN}"));
    let gateway_bot: Value = gateway_bot.send().await.unwrap().json().await.unwrap();
    assert_eq!(gateway_bot["url"], sim.gateway_url().as_str());
    assert_eq!(gateway_bot["shards"], 1);
    assert_eq!(gateway_bot["session_start_limit"]["max_concurrency"], 1);

    let unknown = client().get(api(&sim, "/nope")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let recorded = sim.requests();
    assert_eq!(recorded[3].headers["authorization"], format!("Bot {TOKEN}"));
    assert_eq!(recorded[3].path, "/api/v10/users/@me");
}

#[tokio::test]
async fn bots_post_replies_dms_and_typing() {
    let (sim, bot, user) = setup().await;
    let (mut ws, _) = ready(&sim).await;
    let channel = sim.text_channel_id();
    let question = sim.user_message(&user, &channel, "question?", true);
    recv(&mut ws).await;

    let response =
        post_message(&sim, &channel, json!({"content": "answer", "message_reference": {"message_id": question}})).await;
    assert_eq!(response.status(), 200);
    let message: Value = response.json().await.unwrap();
    assert_eq!(message["author"]["id"], bot.as_str());
    assert_eq!(message["content"], "answer");
    assert_eq!(message["channel_id"], channel.as_str());
    assert_eq!(message["message_reference"]["message_id"], question.as_str());
    assert_eq!(message["referenced_message"]["id"], question.as_str());
    assert_eq!(message["type"], 19);
    // Discord dispatches a bot's own messages to it too.
    let own = recv(&mut ws).await;
    assert_eq!((own["t"].as_str(), own["d"]["id"].as_str()), (Some("MESSAGE_CREATE"), message["id"].as_str()));

    let long = post_message(&sim, &channel, json!({"content": "x".repeat(2001)})).await;
    assert_eq!(long.status(), 400);
    let long: Value = long.json().await.unwrap();
    assert_eq!(long["code"], 50035);
    assert!(long["errors"]["content"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH");
    let exactly = post_message(&sim, &channel, json!({"content": "é".repeat(2000)})).await;
    assert_eq!(exactly.status(), 200, "2000 characters (not bytes) is fine");
    let unknown_reference =
        post_message(&sim, &channel, json!({"content": "a", "message_reference": {"message_id": "1"}}));
    assert_eq!(unknown_reference.await.status(), 400);
    assert_eq!(post_message(&sim, "42", json!({"content": "a"})).await.status(), 404);

    let posted = sim.messages_in(&channel);
    assert_eq!(posted.len(), 2);
    assert_eq!(posted[0]["content"], "answer");
    assert_eq!(posted[0]["message_reference"]["message_id"], question.as_str());

    let dm = client()
        .post(api(&sim, "/users/@me/channels"))
        .header("Authorization", format!("Bot {TOKEN}"))
        .json(&json!({"recipient_id": user}))
        .send()
        .await
        .unwrap();
    assert_eq!(dm.status(), 200);
    let dm: Value = dm.json().await.unwrap();
    assert_eq!(dm["type"], 1);
    assert_eq!(dm["recipients"][0]["id"], user.as_str());
    let dm_id = dm["id"].as_str().unwrap();
    assert_eq!(sim.dm(&user, &bot, "hi").0, dm_id);
    assert_eq!(post_message(&sim, dm_id, json!({"content": "hello in private"})).await.status(), 200);
    assert_eq!(sim.messages_in(dm_id)[0]["content"], "hello in private");

    let before = std::time::Instant::now();
    let typing = client()
        .post(api(&sim, &format!("/channels/{channel}/typing")))
        .header("Authorization", format!("Bot {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(typing.status(), 204);
    let events = sim.typing_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, channel);
    assert!(events[0].1 >= before);
}

#[tokio::test]
async fn rate_limit_headers_count_down_to_a_429() {
    let (sim, _, _) = setup().await;
    let channel = sim.text_channel_id();
    sim.set_route_limit("/channels/{channel_id}/messages", 3, Duration::from_secs(30));
    let mut buckets = Vec::new();
    for expected in ["2", "1", "0"] {
        let response = post_message(&sim, &channel, json!({"content": format!("n{expected}")})).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-limit"), "3");
        assert_eq!(header(&response, "x-ratelimit-remaining"), expected);
        let reset_after: f64 = header(&response, "x-ratelimit-reset-after").parse().unwrap();
        assert!(reset_after > 29.0 && reset_after <= 30.0, "{reset_after}");
        let reset: f64 = header(&response, "x-ratelimit-reset").parse().unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!((reset - now - 30.0).abs() < 2.0, "{reset} vs {now}");
        buckets.push(header(&response, "x-ratelimit-bucket").to_owned());
    }
    assert!(buckets.windows(2).all(|w| w[0] == w[1]));
    let limited = post_message(&sim, &channel, json!({"content": "one too many"})).await;
    assert_eq!(limited.status(), 429);
    let retry_header: f64 = header(&limited, "retry-after").parse().unwrap();
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["message"], "You are being rate limited.");
    assert_eq!(body["global"], false);
    let retry_after = body["retry_after"].as_f64().unwrap();
    assert!(retry_after > 29.0 && retry_after <= 30.0);
    assert_eq!(retry_header, retry_after);
    assert_eq!(sim.messages_in(&channel).len(), 3);

    // Other routes (and other tokens) have their own buckets.
    let typing = client()
        .post(api(&sim, &format!("/channels/{channel}/typing")))
        .header("Authorization", format!("Bot {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(typing.status(), 204);
    assert_ne!(header(&typing, "x-ratelimit-bucket"), buckets[0]);
    sim.add_bot("other-token", "other");
    let other = client()
        .post(api(&sim, &format!("/channels/{channel}/messages")))
        .header("Authorization", "Bot other-token")
        .json(&json!({"content": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(header(&other, "x-ratelimit-remaining"), "2");
}

#[tokio::test]
async fn scripted_faults_are_consumed_one_per_request() {
    let (sim, _, _) = setup().await;
    let channel = sim.text_channel_id();
    sim.script([
        DiscordFault::RateLimited { retry_after_secs: 1.5, global: false },
        DiscordFault::Status { status: 502 },
        DiscordFault::Slow(Duration::from_millis(300)),
    ]);
    let limited = post_message(&sim, &channel, json!({"content": "a"})).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "retry-after"), "1.5");
    assert_eq!(header(&limited, "x-ratelimit-remaining"), "0");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["retry_after"], 1.5);
    assert_eq!(body["global"], false);
    assert_eq!(body["message"], "You are being rate limited.");

    let failed = post_message(&sim, &channel, json!({"content": "b"})).await;
    assert_eq!(failed.status(), 502);
    assert!(failed.headers().contains_key("x-ratelimit-bucket"));

    let started = std::time::Instant::now();
    assert_eq!(post_message(&sim, &channel, json!({"content": "c"})).await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(post_message(&sim, &channel, json!({"content": "d"})).await.status(), 200);
    let contents: Vec<Value> = sim.messages_in(&channel).into_iter().map(|m| m["content"].clone()).collect();
    assert_eq!(contents, vec![json!("c"), json!("d")]);

    sim.script([DiscordFault::RateLimited { retry_after_secs: 2.0, global: true }]);
    let global = post_message(&sim, &channel, json!({"content": "e"})).await;
    assert_eq!(global.status(), 429);
    assert_eq!(header(&global, "x-ratelimit-global"), "true");
    assert_eq!(global.json::<Value>().await.unwrap()["global"], true);
    assert_eq!(sim.requests().len(), 5);
}

#[tokio::test]
async fn enforce_nonce_returns_the_earlier_message_and_dispatches_nothing() {
    let (sim, _, user) = setup().await;
    let (mut ws, _) = ready(&sim).await;
    let channel = sim.text_channel_id();
    let body = json!({"content": "once", "nonce": "reply-1", "enforce_nonce": true});
    let first = post_message(&sim, &channel, body.clone()).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["nonce"], "reply-1");
    assert_eq!(recv(&mut ws).await["d"]["id"], first["id"]);

    let again = post_message(&sim, &channel, body.clone()).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap(), first, "the same message, not a new one");
    assert_eq!(sim.all_messages_in(&channel).len(), 1);
    // No second MESSAGE_CREATE: the next dispatch is the user's.
    let marker = sim.user_message(&user, &channel, "marker", false);
    assert_eq!(recv(&mut ws).await["d"]["id"], marker.as_str());

    // Without enforce_nonce the nonce is only echoed; another channel is another scope.
    let plain: Value =
        post_message(&sim, &channel, json!({"content": "once", "nonce": "reply-1"})).await.json().await.unwrap();
    assert_ne!(plain["id"], first["id"]);
    assert_eq!(plain["nonce"], "reply-1");
    let other_channel = sim.add_text_channel("other");
    let elsewhere: Value = post_message(&sim, &other_channel, body).await.json().await.unwrap();
    assert_ne!(elsewhere["id"], first["id"]);
    assert_eq!(sim.messages_in(&channel).len(), 2);
    let long_nonce = post_message(&sim, &channel, json!({"content": "x", "nonce": "n".repeat(26)})).await;
    assert_eq!(long_nonce.status(), 400);
}

#[tokio::test]
async fn listing_messages_is_newest_first_with_limit_before_and_after() {
    let (sim, bot, user) = setup().await;
    let channel = sim.text_channel_id();
    let m1 = sim.user_message(&user, &channel, "one", false);
    let m2: Value = post_message(&sim, &channel, json!({"content": "two"})).await.json().await.unwrap();
    let m2 = m2["id"].as_str().unwrap().to_owned();
    let m3 = sim.mention(&user, &channel, "three", &[&bot]);
    let other = sim.add_bot("other-token", "other-bot");
    let m4 = sim.bot_message(&other, &channel, "four", &[]);
    let m5 = sim.user_message(&user, &channel, "five", false);
    sim.user_message(&user, &sim.add_text_channel("elsewhere"), "not here", false);

    let all = get_messages(&sim, &channel, "").await;
    assert_eq!(all.status(), 200);
    let all: Value = all.json().await.unwrap();
    assert_eq!(ids(&all), [m5.as_str(), m4.as_str(), m3.as_str(), m2.as_str(), m1.as_str()]);
    assert_eq!(all[4]["content"], "one");
    assert_eq!(all[3]["author"]["id"], bot.as_str());
    assert_eq!(all, json!(sim.all_messages_in(&channel).into_iter().rev().collect::<Vec<_>>()));
    let page = |query: String| {
        let sim = sim.clone();
        let channel = channel.clone();
        async move { ids(&get_messages(&sim, &channel, &query).await.json().await.unwrap()) }
    };
    assert_eq!(page("limit=2".into()).await, [m5.as_str(), m4.as_str()]);
    assert_eq!(page(format!("before={m4}")).await, [m3.as_str(), m2.as_str(), m1.as_str()]);
    assert_eq!(page(format!("before={m4}&limit=2")).await, [m3.as_str(), m2.as_str()]);
    assert_eq!(page(format!("after={m2}")).await, [m5.as_str(), m4.as_str(), m3.as_str()]);
    assert_eq!(page(format!("limit=2&after={m1}")).await, [m3.as_str(), m2.as_str()], "the page right after m1");
    assert_eq!(page(format!("after={m1}&before={m4}")).await, [m3.as_str(), m2.as_str()]);
    assert_eq!(page(format!("after={m5}")).await, Vec::<String>::new());

    for (query, code) in
        [("limit=0", "NUMBER_TYPE_MIN"), ("limit=101", "NUMBER_TYPE_MAX"), ("limit=x", "NUMBER_TYPE_COERCE")]
    {
        let bad = get_messages(&sim, &channel, query).await;
        assert_eq!(bad.status(), 400, "{query}");
        let bad: Value = bad.json().await.unwrap();
        assert_eq!((bad["code"].as_u64(), bad["message"].as_str()), (Some(50035), Some("Invalid Form Body")));
        assert_eq!(bad["errors"]["limit"]["_errors"][0]["code"], code, "{query}");
    }
    assert_eq!(page("limit=100".into()).await.len(), 5);
    let bad_before: Value = get_messages(&sim, &channel, "before=abc").await.json().await.unwrap();
    assert_eq!(bad_before["errors"]["before"]["_errors"][0]["code"], "NUMBER_TYPE_COERCE");

    // Channels the bot cannot see, and no token.
    let (other_dm, _) = sim.dm(&user, &other, "private");
    for unseen in ["42", other_dm.as_str()] {
        let missing = get_messages(&sim, unseen, "").await;
        assert_eq!(missing.status(), 404);
        assert_eq!(missing.json::<Value>().await.unwrap(), json!({"message": "Unknown Channel", "code": 10003}));
    }
    let anonymous = client().get(api(&sim, &format!("/channels/{channel}/messages"))).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn reading_messages_has_its_own_bucket() {
    let (sim, _, _) = setup().await;
    let channel = sim.text_channel_id();
    sim.set_route_limit("/channels/{channel_id}/messages", 1, Duration::from_secs(30));
    sim.set_route_limit("GET /api/v10/channels/{channel_id}/messages", 2, Duration::from_secs(30));
    let sent = post_message(&sim, &channel, json!({"content": "a"})).await;
    assert_eq!(sent.status(), 200);
    let send_bucket = header(&sent, "x-ratelimit-bucket").to_owned();
    assert_eq!(post_message(&sim, &channel, json!({"content": "b"})).await.status(), 429);

    // The send budget is spent; reading still works, with its own limit and bucket.
    let read = get_messages(&sim, &channel, "").await;
    assert_eq!(read.status(), 200);
    assert_eq!((header(&read, "x-ratelimit-limit"), header(&read, "x-ratelimit-remaining")), ("2", "1"));
    assert_ne!(header(&read, "x-ratelimit-bucket"), send_bucket);
    assert_eq!(get_messages(&sim, &channel, "").await.status(), 200);
    let limited = get_messages(&sim, &channel, "").await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.json::<Value>().await.unwrap()["global"], false);
}

#[tokio::test]
async fn every_channel_has_its_own_window() {
    let (sim, _, _) = setup().await;
    let (a, b) = (sim.text_channel_id(), sim.add_text_channel("b"));
    sim.set_route_limit("/channels/{channel_id}/messages", 1, Duration::from_secs(30));
    let first = post_message(&sim, &a, json!({"content": "a1"})).await;
    assert_eq!(first.status(), 200);
    let bucket = header(&first, "x-ratelimit-bucket").to_owned();
    assert_eq!(post_message(&sim, &a, json!({"content": "a2"})).await.status(), 429);

    let in_b = post_message(&sim, &b, json!({"content": "b1"})).await;
    assert_eq!(in_b.status(), 200, "channel A's window does not limit channel B");
    assert_eq!(header(&in_b, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&in_b, "x-ratelimit-bucket"), bucket, "one bucket id per route");
    assert_eq!(post_message(&sim, &b, json!({"content": "b2"})).await.status(), 429);
    assert_eq!((sim.messages_in(&a).len(), sim.messages_in(&b).len()), (1, 1));
}

#[tokio::test]
async fn the_global_limit_counts_every_route_per_token() {
    let (sim, _, _) = setup().await;
    let channel = sim.text_channel_id();
    sim.set_global_limit(3, Duration::from_secs(30));
    let me = client().get(api(&sim, "/users/@me")).header("Authorization", format!("Bot {TOKEN}"));
    assert_eq!(me.send().await.unwrap().status(), 200);
    assert_eq!(post_message(&sim, &channel, json!({"content": "a"})).await.status(), 200);
    assert_eq!(get_messages(&sim, &channel, "").await.status(), 200);

    let limited = post_message(&sim, &channel, json!({"content": "b"})).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "x-ratelimit-global"), "true");
    assert_eq!(header(&limited, "x-ratelimit-scope"), "global");
    let retry_header: f64 = header(&limited, "retry-after").parse().unwrap();
    let body: Value = limited.json().await.unwrap();
    assert_eq!(
        (body["message"].as_str(), body["global"].as_bool(), body["code"].as_u64()),
        (Some("You are being rate limited."), Some(true), Some(0))
    );
    let retry_after = body["retry_after"].as_f64().unwrap();
    assert!(retry_after > 29.0 && retry_after <= 30.0, "{retry_after}");
    assert_eq!(retry_header, retry_after);
    assert_eq!(sim.messages_in(&channel).len(), 1);
    let typing = client()
        .post(api(&sim, &format!("/channels/{channel}/typing")))
        .header("Authorization", format!("Bot {TOKEN}"));
    assert_eq!(typing.send().await.unwrap().status(), 429, "every route");

    // Another token has its own count.
    sim.add_bot("other-token", "other");
    let other = client().get(api(&sim, "/users/@me")).header("Authorization", "Bot other-token");
    assert_eq!(other.send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn users_mention_and_reply_and_other_bots_speak() {
    let (sim, bot, user) = setup().await;
    let (mut ws, _) = ready(&sim).await;
    let channel = sim.text_channel_id();
    let other = sim.add_bot("other-token", "other-bot");
    assert_eq!(sim.user_id("other-bot"), Some(other.clone()));
    assert_eq!(sim.user_id("ada"), Some(user.clone()));
    assert_eq!(sim.user_id("nobody"), None);

    let mention = sim.mention(&user, &channel, "hey other", &[&other, "not-an-id"]);
    let event = recv(&mut ws).await;
    assert_eq!(event["d"]["id"], mention.as_str());
    assert_eq!(event["d"]["content"], "hey other");
    assert_eq!(ids(&event["d"]["mentions"]), [other.as_str()], "only the bots given");
    assert_eq!(event["d"]["author"]["id"], user.as_str());

    let spoken = sim.bot_message(&other, &channel, "I am another bot", &[&bot]);
    let event = recv(&mut ws).await;
    assert_eq!(event["t"], "MESSAGE_CREATE");
    assert_eq!(event["d"]["id"], spoken.as_str());
    assert_eq!(
        (event["d"]["author"]["id"].as_str(), event["d"]["author"]["bot"].as_bool()),
        (Some(other.as_str()), Some(true))
    );
    assert_eq!(event["d"]["guild_id"], sim.guild_id().as_str());
    assert_eq!(ids(&event["d"]["mentions"]), [bot.as_str()]);
    assert_eq!(ids(&json!(sim.messages_in(&channel))), [spoken.as_str()]);
    assert_eq!(sim.bot_message(&user, &channel, "users are not bots", &[]), "");

    let reply = sim.user_reply(&user, &channel, &spoken, "thanks");
    let event = recv(&mut ws).await;
    let d = &event["d"];
    assert_eq!(d["id"], reply.as_str());
    assert_eq!(d["type"], 19);
    assert_eq!(d["message_reference"]["message_id"], spoken.as_str());
    assert_eq!(d["message_reference"]["channel_id"], channel.as_str());
    assert_eq!(d["message_reference"]["guild_id"], sim.guild_id().as_str());
    assert_eq!(d["referenced_message"]["id"], spoken.as_str());
    assert_eq!(d["referenced_message"]["content"], "I am another bot");
    assert_eq!(ids(&d["mentions"]), [other.as_str()], "a reply pings the referenced author");

    // A reply to a reply quotes it without its own referenced_message; unknown: nothing happens.
    let nested = sim.user_reply(&bot, &channel, &reply, "nested");
    let event = recv(&mut ws).await;
    assert_eq!(event["d"]["id"], nested.as_str());
    assert!(event["d"]["referenced_message"].get("referenced_message").is_none());
    assert_eq!(sim.user_reply(&user, &channel, "123", "to nothing"), "");
    assert_eq!(sim.user_reply(&user, &sim.add_text_channel("x"), &spoken, "wrong channel"), "");
    let contents: Vec<Value> = sim.all_messages_in(&channel).into_iter().map(|m| m["content"].clone()).collect();
    assert_eq!(contents, [json!("hey other"), json!("I am another bot"), json!("thanks"), json!("nested")]);

    // Replies in a DM, to the bot's message there.
    let (dm, _) = sim.dm(&user, &bot, "hi");
    recv(&mut ws).await;
    let answer: Value = post_message(&sim, &dm, json!({"content": "hello"})).await.json().await.unwrap();
    recv(&mut ws).await;
    let dm_reply = sim.user_reply(&user, &dm, answer["id"].as_str().unwrap(), "and again");
    let event = recv(&mut ws).await;
    assert_eq!(event["d"]["id"], dm_reply.as_str());
    assert!(event["d"].get("guild_id").is_none());
    assert!(event["d"]["message_reference"].get("guild_id").is_none());
    assert_eq!(ids(&event["d"]["mentions"]), [bot.as_str()]);

    // Unknown channels become guild channels, as with user_message.
    let fresh = "1234567890";
    assert!(!sim.mention(&user, fresh, "new place", &[&bot]).is_empty());
    assert_eq!(recv(&mut ws).await["d"]["channel_id"], fresh);
}

#[tokio::test]
async fn identify_intents_are_recorded_and_disallowed_ones_close_with_4014() {
    let (sim, _, _) = setup().await;
    // GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES, without MESSAGE_CONTENT (1 << 15).
    sim.set_allowed_intents(Some(1 | 1 << 9 | 1 << 12));
    let mut ws = connect(&sim).await;
    recv(&mut ws).await;
    identify(&mut ws, TOKEN).await;
    expect_close(&mut ws, 4014, "Disallowed intent(s).").await;
    assert_eq!(sim.connected_sessions(), 0);

    sim.set_allowed_intents(Some(37377));
    let (_ws, ready) = ready(&sim).await;
    assert_eq!(ready["t"], "READY");
    sim.set_allowed_intents(None);
    let mut ws = connect(&sim).await;
    recv(&mut ws).await;
    send(&mut ws, json!({"op": 2, "d": {"token": TOKEN, "intents": 1, "properties": {}}})).await;
    assert_eq!(recv(&mut ws).await["t"], "READY");
    assert_eq!(sim.identify_intents(), [37377, 37377, 1]);
    assert_ne!(sim.identify_intents()[0] & (1 << 15), 0, "the client asked for MESSAGE_CONTENT");
}

#[tokio::test]
async fn objects_and_requests_match_the_openapi_document() {
    let spec = spec();
    assert_eq!(spec["servers"][0]["url"], "https://discord.com/api/v10");
    let (sim, bot, user) = setup().await;
    let (mut ws, ready) = ready(&sim).await;
    let channel = sim.text_channel_id();
    let auth = format!("Bot {TOKEN}");

    // Gateway objects that share REST schemas.
    check(&spec, &component("UserResponse"), &ready["d"]["user"], "READY user");
    let question = sim.user_message(&user, &channel, "hi bot", true);
    let dispatched = recv(&mut ws).await;
    check(&spec, &component("MessageResponse"), &dispatched["d"], "MESSAGE_CREATE");
    assert_eq!(dispatched["d"]["id"], question.as_str());
    sim.invalidate_sessions();
    recv(&mut ws).await;
    let (mut ws, _) = ready_with_guild(&sim, &spec).await;

    let get = |path: &str| client().get(api(&sim, path)).header("Authorization", auth.clone());
    let mut bodies = Vec::new();
    for path in ["/gateway", "/gateway/bot", "/users/@me"] {
        let response = get(path).send().await.unwrap();
        assert_eq!(response.status(), 200);
        bodies.push(("GET", path.to_owned(), "200", response.json::<Value>().await.unwrap()));
    }
    let dm = client().post(api(&sim, "/users/@me/channels")).header("Authorization", auth.clone());
    let dm = dm.json(&json!({"recipient_id": user})).send().await.unwrap();
    bodies.push(("POST", "/users/@me/channels".into(), "200", dm.json::<Value>().await.unwrap()));
    let reply = json!({"content": "hello", "message_reference": {"message_id": question}, "nonce": "n1"});
    let message: Value = post_message(&sim, &channel, reply).await.json().await.unwrap();
    check(&spec, &component("MessageResponse"), &message, "created message");
    let mut incomplete = message.clone();
    incomplete.as_object_mut().unwrap().remove("flags");
    let root = json!({"$ref": "#/components/schemas/MessageResponse", "components": spec["components"]});
    let validator = jsonschema::draft202012::new(&root).unwrap();
    assert!(!validator.is_valid(&incomplete), "the schema check is not vacuous");
    assert_eq!(message["author"]["id"], bot.as_str());
    bodies.push(("POST", format!("/channels/{channel}/messages"), "200", message));
    let own = recv(&mut ws).await;
    check(&spec, &component("MessageResponse"), &own["d"], "own MESSAGE_CREATE");
    let typing = client().post(api(&sim, &format!("/channels/{channel}/typing"))).header("Authorization", auth.clone());
    assert_eq!(typing.send().await.unwrap().status(), 204);

    // A retry-safe reply (nonce + enforce_nonce + message_reference): the request body and both
    // answers (created, then the same message again) follow the operation's schemas.
    let create = operation(&spec, "POST", &format!("/channels/{channel}/messages")).expect("create_message");
    let safe = json!({"content": "once only", "nonce": "chorus-42", "enforce_nonce": true,
        "message_reference": {"message_id": question, "fail_if_not_exists": false}});
    check(&spec, &create["requestBody"]["content"]["application/json"]["schema"], &safe, "enforce_nonce request");
    let created: Value = post_message(&sim, &channel, safe.clone()).await.json().await.unwrap();
    let repeated: Value = post_message(&sim, &channel, safe).await.json().await.unwrap();
    assert_eq!(created, repeated);
    assert_eq!(created["referenced_message"]["id"], question.as_str());
    bodies.push(("POST", format!("/channels/{channel}/messages"), "200", created));

    // Reading messages: an array of MessageResponse, users' and bots', replies included.
    let listed = get(&format!("/channels/{channel}/messages?limit=10")).send().await.unwrap();
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(3));
    assert!(listed.as_array().unwrap().iter().any(|m| m.get("referenced_message").is_some()));
    let list_schema =
        response_schema(operation(&spec, "GET", &format!("/channels/{channel}/messages")).unwrap(), "200");
    assert_eq!(list_schema["items"], component("MessageResponse"));
    let mut broken = listed.clone();
    broken[0].as_object_mut().unwrap().remove("author");
    let root = json!({"$ref": "#/components/schemas/MessageResponse", "components": spec["components"]});
    assert!(!jsonschema::draft202012::new(&root).unwrap().is_valid(&broken[0]), "the list check is not vacuous");
    bodies.push(("GET", format!("/channels/{channel}/messages"), "200", listed));

    sim.script([DiscordFault::RateLimited { retry_after_secs: 1.5, global: false }]);
    let limited = post_message(&sim, &channel, json!({"content": "later"})).await;
    assert_eq!(limited.status(), 429);
    bodies.push(("POST", format!("/channels/{channel}/messages"), "429", limited.json::<Value>().await.unwrap()));
    let too_long = post_message(&sim, &channel, json!({"content": "x".repeat(2001)})).await;
    // The live API puts string codes (`BASE_TYPE_MAX_LENGTH`) in the nested `errors`, where the
    // document's `ErrorResponse` declares integers: check the top level against `Error` only.
    let too_long: Value = too_long.json().await.unwrap();
    check(&spec, &component("Error"), &too_long, "400");
    assert_eq!(too_long["errors"]["content"]["_errors"][0]["code"], "BASE_TYPE_MAX_LENGTH");
    let unauthorized = client().get(api(&sim, "/users/@me")).send().await.unwrap();
    check(&spec, &component("ErrorResponse"), &unauthorized.json().await.unwrap(), "401");

    for (method, path, status, body) in &bodies {
        let op = operation(&spec, method, path).unwrap_or_else(|| panic!("{method} {path}: not in the spec"));
        let schema = if *status == "429" {
            json!({"$ref": "#/components/schemas/RatelimitedResponse"})
        } else {
            response_schema(op, status).clone()
        };
        assert!(!schema.is_null(), "{method} {path}: no {status} schema");
        check(&spec, &schema, body, &format!("{method} {path} {status}"));
    }

    // Every request used is a documented operation, with a valid JSON body and the rate-limit
    // headers the operation declares.
    for request in sim.requests() {
        let path = request.path.strip_prefix("/api/v10").expect("under /api/v10");
        let what = format!("{} {path}", request.method);
        let op = operation(&spec, &request.method, path).unwrap_or_else(|| panic!("{what}: not in the spec"));
        if let Some(schema) = op.pointer("/requestBody/content/application~1json/schema") {
            check(&spec, schema, &request.body, &what);
        }
        let declared = op["responses"]["200"]["headers"].as_object().or(op["responses"]["204"]["headers"].as_object());
        let declared: Vec<&String> = declared.map(|h| h.keys().collect()).unwrap_or_default();
        assert!(declared.iter().any(|h| *h == "X-RateLimit-Bucket"), "{what}: {declared:?}");
    }
}

/// Identifies and checks GUILD_CREATE's guild, channels and roles against the REST schemas.
async fn ready_with_guild(sim: &DiscordSim, spec: &Value) -> (Ws, Value) {
    let mut ws = connect(sim).await;
    recv(&mut ws).await;
    identify(&mut ws, TOKEN).await;
    let ready = recv(&mut ws).await;
    let guild = recv(&mut ws).await;
    assert_eq!(guild["t"], "GUILD_CREATE");
    check(spec, &component("GuildResponse"), &guild["d"], "GUILD_CREATE guild");
    for channel in guild["d"]["channels"].as_array().unwrap() {
        check(spec, &component("GuildChannelResponse"), channel, "GUILD_CREATE channel");
    }
    (ws, ready)
}

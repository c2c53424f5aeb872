//! Engagement measuring on every platform: the real clients, through their `Platform` adapters,
//! against the simulators (X, Reddit, Discord) and a SQLite database (local). Each test publishes
//! through the adapter, sets the numbers in the simulator, and reads them back with
//! `Platform::engagement`; ids the platform no longer has are left out, long id lists are split
//! into requests of 100, and X's lookup is checked against its OpenAPI document.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chorus::config::Secret;
use chorus::directory::Directory;
use chorus::platform::discord::{DiscordAccount, DiscordClient, DiscordClientConfig, DiscordPlatform};
use chorus::platform::local::LocalPlatform;
use chorus::platform::reddit::{RedditAccount, RedditClient, RedditClientConfig, RedditPlatform};
use chorus::platform::x::text::split_thread;
use chorus::platform::x::{XAccount, XAuth, XClient, XClientConfig, XPlatform};
use chorus::platform::{Engagement, Outgoing, Platform, PlatformError};
use chorus::sim::discord::{DiscordFault, DiscordSim};
use chorus::sim::reddit::{RedditFault, RedditSim, SIM_SUBREDDIT};
use chorus::sim::x::{XRecordedRequest, XSim, XSimAccount, XSimFault};
use chorus::store::Db;
use common::discord_spec;
use serde_json::{Value, json};

/// A post with no parent.
fn post<'a>(key: &'a str, text: &'a str) -> Outgoing<'a> {
    Outgoing { idempotency_key: key, text, reply_to: None }
}

/// A reply to `parent`.
fn reply<'a>(key: &'a str, text: &'a str, parent: &'a str) -> Outgoing<'a> {
    Outgoing { idempotency_key: key, text, reply_to: Some(parent) }
}

fn by_id(measured: Vec<(String, Engagement)>) -> HashMap<String, Engagement> {
    let count = measured.len();
    let map: HashMap<String, Engagement> = measured.into_iter().collect();
    assert_eq!(map.len(), count, "each id once");
    map
}

fn counts(likes: i64, replies: i64, reposts: i64, impressions: Option<i64>) -> Engagement {
    Engagement { likes, replies, reposts, impressions }
}

// ----- X -----

async fn x_setup() -> (XSim, XSimAccount, XPlatform) {
    let sim = XSim::start().await.unwrap();
    let ada = sim.add_user("ada");
    let client = XClient::new(XClientConfig {
        base_url: sim.base_url(),
        auth: XAuth::OAuth2 {
            client_id: "sim-client".into(),
            client_secret: None,
            access_token: Secret::new(&ada.access_token),
            refresh_token: None,
        },
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let accounts = HashMap::from([("ada".to_owned(), XAccount::new(client, Some(ada.user_id.clone())))]);
    let platform = XPlatform::new(accounts, Arc::new(Directory::default()), 10);
    (sim, ada, platform)
}

fn lookups(sim: &XSim) -> Vec<XRecordedRequest> {
    sim.requests().into_iter().filter(|r| r.method == "GET" && r.path == "/2/tweets").collect()
}

fn query_value<'a>(request: &'a XRecordedRequest, name: &str) -> Option<&'a str> {
    request.query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

#[tokio::test]
async fn x_engagement_is_the_public_metrics_and_gone_posts_are_left_out() {
    let (sim, ada, x) = x_setup().await;
    assert!(x.measures_engagement());
    let single = x.publish("ada", post("x-1", "Compilers are fun, here is why.")).await.unwrap();
    sim.mention("sam", "ada", "@ada agreed!", Some(&single));
    assert!(sim.set_metrics(&single, 7, 2, 3, 1, 250));
    // Over 280 weighted characters: a thread, measured by its first post.
    let long = "Parsers come first, then the type checker, then code generation. ".repeat(8);
    let thread = x.publish("ada", post("x-2", long.trim())).await.unwrap();
    let parts = split_thread(long.trim(), 280).len();
    assert!(parts >= 2);
    assert_eq!(sim.tweets_by("ada").len(), 1 + parts, "the thread has several posts");
    assert!(sim.set_metrics(&thread, 1, 0, 0, 0, 10));
    let gone = x.publish("ada", post("x-3", "This one will be deleted.")).await.unwrap();
    assert!(sim.delete_tweet(&gone));
    sim.clear_requests();

    let ids = [single.clone(), thread.clone(), gone.clone(), "1234".to_owned(), "not-a-post".to_owned()];
    let measured = by_id(x.engagement("ada", &ids).await.unwrap());
    assert_eq!(measured.len(), 2, "{measured:?}");
    assert_eq!(measured[&single], counts(7, 3, 4, Some(250)), "likes, 2 set + 1 real reply, retweets + quotes");
    assert_eq!(measured[&thread], counts(1, 1, 0, Some(10)), "X counts the thread's next part as a reply");

    let requests = lookups(&sim);
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    let asked = format!("{single},{thread},{gone},1234");
    assert_eq!(query_value(request, "ids"), Some(asked.as_str()), "an id X would refuse is not sent");
    assert_eq!(query_value(request, "tweet.fields"), Some("public_metrics"));
    assert_eq!(request.headers["authorization"], format!("Bearer {}", ada.access_token));

    assert_eq!(x.engagement("ada", &[]).await.unwrap(), vec![]);
    assert_eq!(lookups(&sim).len(), 1, "nothing to measure sends nothing");
}

#[tokio::test]
async fn x_more_than_100_ids_are_looked_up_100_at_a_time() {
    let (sim, _ada, x) = x_setup().await;
    let ids: Vec<String> = (0..150).map(|i| sim.mention("sam", "ada", &format!("@ada number {i}"), None)).collect();
    assert!(sim.set_metrics(&ids[149], 5, 0, 0, 0, 0));
    let measured = by_id(x.engagement("ada", &ids).await.unwrap());
    assert_eq!(measured.len(), 150);
    assert_eq!(measured[&ids[149]].likes, 5);
    assert_eq!(measured[&ids[0]], counts(0, 0, 0, Some(0)));
    let sizes: Vec<usize> =
        lookups(&sim).iter().map(|r| query_value(r, "ids").unwrap_or_default().split(',').count()).collect();
    assert_eq!(sizes, [100, 50]);
}

#[tokio::test]
async fn x_lookup_rate_limits_close_the_gate_and_faults_are_classified() {
    let (sim, _ada, x) = x_setup().await;
    let mine = x.publish("ada", post("x-1", "Measured twice.")).await.unwrap();
    sim.set_limit("GET /2/tweets", 1, Duration::from_secs(120));
    x.engagement("ada", std::slice::from_ref(&mine)).await.unwrap();
    sim.clear_requests();
    let err = x.engagement("ada", std::slice::from_ref(&mine)).await.unwrap_err();
    let PlatformError::RateLimited { retry_after } = err else { panic!("{err:?}") };
    assert!(retry_after > Duration::from_secs(100), "{retry_after:?}");
    assert!(sim.requests().is_empty(), "remaining 0: nothing is sent before the reset");
    // Posting has a window of its own.
    x.publish("ada", post("x-2", "Still posting.")).await.unwrap();

    let (sim, _ada, x) = x_setup().await;
    sim.script([XSimFault::MalformedJson]);
    assert!(matches!(x.engagement("ada", &["2".to_owned()]).await, Err(PlatformError::Transient(_))));
    sim.script([XSimFault::Status { status: 503, body: None }]);
    assert!(matches!(x.engagement("ada", &["3".to_owned()]).await, Err(PlatformError::Transient(_))));
    sim.script([XSimFault::Status { status: 429, body: None }]);
    let err = x.engagement("ada", &["1".to_owned()]).await.unwrap_err();
    assert_eq!(err, PlatformError::RateLimited { retry_after: Duration::from_secs(60) });
}

// Contract: the lookup request and the simulator's answer against the published OpenAPI document.

/// The X OpenAPI document (github.com/xdevplatform/xdk `specs/openapi.json`, MIT).
fn x_spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/x-openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("tests/fixtures/x-openapi.json")).unwrap()
}

/// A draft 4 validator for `schema` (OpenAPI 3.0), `#/components/...` resolved in the document.
fn x_validator(spec: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.as_object().cloned().unwrap_or_default();
    root.insert("components".into(), spec["components"].clone());
    jsonschema::draft4::new(&Value::Object(root)).expect("schema compiles")
}

fn x_resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(pointer) => spec.pointer(pointer.trim_start_matches('#')).expect("$ref resolves"),
        None => value,
    }
}

/// Checks a `GET /2/tweets` request's query against the document. The live API's `tweet.fields`
/// is the document's `post.fields` (v2.167 renamed it); its values are checked against that enum.
fn check_lookup_request(spec: &Value, request: &XRecordedRequest) -> Result<(), String> {
    let op = &spec["paths"]["/2/tweets"]["get"];
    let declared: Vec<&Value> = op["parameters"].as_array().unwrap().iter().map(|p| x_resolve(spec, p)).collect();
    for required in declared.iter().filter(|p| p["required"] == true) {
        let name = required["name"].as_str().unwrap();
        if !request.query.iter().any(|(key, _)| key == name) {
            return Err(format!("required {name} is missing"));
        }
    }
    for (name, value) in &request.query {
        let documented = if name == "tweet.fields" { "post.fields" } else { name.as_str() };
        let param = declared
            .iter()
            .find(|p| p["name"] == documented && p["in"] == "query")
            .ok_or(format!("query parameter {name} is not declared"))?;
        let instance = json!(value.split(',').collect::<Vec<_>>());
        if let Err(err) = x_validator(spec, &param["schema"]).validate(&instance) {
            return Err(format!("{name}={value}: {err}"));
        }
    }
    Ok(())
}

/// The live API's names for fields the document (v2.167) renamed, mapped to the document's.
fn as_documented(mut body: Value) -> Value {
    for post in body["data"].as_array_mut().into_iter().flatten() {
        if let Some(metrics) = post.get_mut("public_metrics").and_then(Value::as_object_mut)
            && let Some(retweets) = metrics.remove("retweet_count")
        {
            metrics.insert("repost_count".into(), retweets);
        }
    }
    body
}

#[tokio::test]
async fn x_lookup_matches_the_openapi_document() {
    let spec = x_spec();
    let (sim, ada, x) = x_setup().await;
    let mine = x.publish("ada", post("x-1", "Measure me.")).await.unwrap();
    sim.set_metrics(&mine, 3, 1, 2, 0, 40);
    let ids: Vec<String> = [mine.clone(), "1234".into()].into_iter().chain((0..120).map(|i| i.to_string())).collect();
    x.engagement("ada", &ids).await.unwrap();
    let requests = lookups(&sim);
    assert_eq!(requests.len(), 2);
    for request in &requests {
        check_lookup_request(&spec, request).unwrap_or_else(|problem| panic!("{problem}"));
    }

    // The simulator's answer to the client's own request: found posts in `data`, the others as
    // resource-not-found problems in `errors`.
    let http = reqwest::Client::new();
    let first = &requests[0];
    let response = http
        .get(format!("{}/2/tweets", sim.base_url()))
        .query(&first.query)
        .bearer_auth(&ada.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["data"][0]["public_metrics"]["retweet_count"], 2, "the live API's name");
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(99));
    assert_eq!(body["errors"][0]["resource_id"], "1234");
    let schema = &spec["paths"]["/2/tweets"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    let validator = x_validator(&spec, schema);
    let documented = as_documented(body);
    if let Err(err) = validator.validate(&documented) {
        panic!("GET /2/tweets answer: {err}\n{documented}");
    }
    let renamed_back = json!({"data": [{"id": "1", "text": "x", "public_metrics": {"retweet_count": 1, "reply_count": 0,
        "like_count": 0, "quote_count": 0, "bookmark_count": 0, "impression_count": 0}}]});
    assert!(validator.validate(&renamed_back).is_err(), "the document requires repost_count");

    // The checker itself catches a request X would refuse.
    let mut bad = first.clone();
    bad.query = vec![("ids".into(), (0..101).map(|i| i.to_string()).collect::<Vec<_>>().join(","))];
    assert!(check_lookup_request(&spec, &bad).is_err());
    let mut bad = first.clone();
    bad.query.retain(|(key, _)| key != "ids");
    assert!(check_lookup_request(&spec, &bad).is_err());
    let mut bad = first.clone();
    bad.query = vec![("ids".into(), "12".into()), ("tweet.fields".into(), "likes".into())];
    assert!(check_lookup_request(&spec, &bad).is_err());
    // … and so does the simulator.
    let too_many = (0..101).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let response = http
        .get(format!("{}/2/tweets", sim.base_url()))
        .query(&[("ids", too_many.as_str())])
        .bearer_auth(&ada.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

// ----- Reddit -----

const REDDIT_USER: &str = "ada_bot";
const REDDIT_PASSWORD: &str = "hunter2-password";
const REDDIT_CLIENT_ID: &str = "client-id-ada";
const REDDIT_CLIENT_SECRET: &str = "client-secret-ada";

async fn reddit_setup() -> (RedditSim, RedditPlatform) {
    let sim = RedditSim::start().await.unwrap();
    sim.add_account(REDDIT_USER, REDDIT_PASSWORD, REDDIT_CLIENT_ID, REDDIT_CLIENT_SECRET);
    let client = RedditClient::new(RedditClientConfig {
        auth_base_url: sim.auth_base_url(),
        api_base_url: sim.api_base_url(),
        client_id: REDDIT_CLIENT_ID.into(),
        client_secret: Secret::new(REDDIT_CLIENT_SECRET),
        username: REDDIT_USER.into(),
        password: Secret::new(REDDIT_PASSWORD),
        user_agent: "chorus/0.1 (by u/chorus_test)".into(),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let account = RedditAccount { client, subreddit: SIM_SUBREDDIT.into() };
    let platform = RedditPlatform::new(HashMap::from([("ada".to_owned(), account)]), Arc::new(Directory::default()));
    (sim, platform)
}

fn info_requests(sim: &RedditSim) -> Vec<chorus::sim::reddit::RecordedRequest> {
    sim.requests().into_iter().filter(|r| r.route() == "/api/info").collect()
}

#[tokio::test]
async fn reddit_engagement_is_the_score_and_the_comments() {
    let (sim, reddit) = reddit_setup().await;
    assert!(reddit.measures_engagement());
    let self_post = reddit.publish("ada", post("r-1", "Gardening in winter. Mulch matters.")).await.unwrap();
    let mention = sim.mention("sam", REDDIT_USER, "what do you think, u/ada_bot?");
    let comment = reddit.publish("ada", reply("r-2", "I think it works.", &mention)).await.unwrap();
    assert!(self_post.starts_with("t3_") && comment.starts_with("t1_"), "publish returns fullnames");
    sim.reply("sam", &self_post, "nice post").unwrap();
    let answer = sim.reply("bob", &self_post, "agreed").unwrap();
    sim.reply("sam", &answer, "and a reply deeper in the thread").unwrap();
    sim.reply("sam", &comment, "thanks!").unwrap();
    assert!(sim.set_score(&self_post, 42));
    assert!(sim.set_score(&comment, -3));
    sim.clear_requests();

    let ids = [self_post.clone(), comment.clone(), "t3_zzzzzz".to_owned(), "t5_sub".to_owned(), "bare".to_owned()];
    let measured = by_id(reddit.engagement("ada", &ids).await.unwrap());
    assert_eq!(measured.len(), 2, "{measured:?}");
    assert_eq!(measured[&self_post], counts(42, 3, 0, None), "num_comments counts the whole thread");
    assert_eq!(measured[&comment], counts(-3, 0, 0, None), "/api/info lists no replies of a comment");

    // The request as PRAW sends it (TestReddit.test_info: `GET /api/info/?id=…&raw_json=1`).
    let requests = info_requests(&sim);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/api/info/");
    assert_eq!(requests[0].query_value("id"), Some(format!("{self_post},{comment},t3_zzzzzz").as_str()));
    assert_eq!(requests[0].query_value("raw_json"), Some("1"));
    assert!(requests[0].header("authorization").is_some_and(|value| value.starts_with("bearer ")));
}

#[tokio::test]
async fn reddit_info_answers_in_the_recorded_shape() {
    let (sim, reddit) = reddit_setup().await;
    let self_post = reddit.publish("ada", post("r-1", "A title. And a body.")).await.unwrap();
    let comment = sim.reply("sam", &self_post, "first!").unwrap();
    reddit.engagement("ada", std::slice::from_ref(&self_post)).await.unwrap();
    let token = info_requests(&sim)[0].header("authorization").unwrap().to_owned();
    let body: Value = reqwest::Client::new()
        .get(format!("{}/api/info/", sim.api_base_url()))
        .query(&[("id", format!("{comment},{self_post},t1_unknown").as_str()), ("raw_json", "1")])
        .header("authorization", token)
        .header("user-agent", "chorus-test")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // As recorded: a Listing whose children keep the order asked, `t1` comments with
    // `"replies": ""`, `t3` links with `num_comments`, both with `name` and an integer `score`.
    assert_eq!(body["kind"], "Listing");
    let children = body["data"]["children"].as_array().unwrap();
    assert_eq!(children.len(), 2, "unknown fullnames are left out");
    assert_eq!(children[0]["kind"], "t1");
    assert_eq!(children[0]["data"]["name"], comment.as_str());
    assert_eq!(children[0]["data"]["replies"], "");
    assert!(children[0]["data"]["score"].is_i64() && children[0]["data"]["parent_id"] == self_post.as_str());
    assert_eq!(children[1]["kind"], "t3");
    assert_eq!(children[1]["data"]["name"], self_post.as_str());
    assert_eq!(children[1]["data"]["num_comments"], 1);
    assert!(children[1]["data"]["score"].is_i64() && children[1]["data"]["title"].is_string());
}

#[tokio::test]
async fn reddit_more_than_100_fullnames_take_two_requests() {
    let (sim, reddit) = reddit_setup().await;
    let ids: Vec<String> = (0..150).map(|i| sim.mention("sam", REDDIT_USER, &format!("number {i}"))).collect();
    assert!(sim.set_score(&ids[120], 9));
    let measured = by_id(reddit.engagement("ada", &ids).await.unwrap());
    assert_eq!(measured.len(), 150);
    assert_eq!(measured[&ids[120]].likes, 9);
    assert_eq!(measured[&ids[0]], counts(1, 0, 0, None));
    let sizes: Vec<usize> =
        info_requests(&sim).iter().map(|r| r.query_value("id").unwrap_or_default().split(',').count()).collect();
    assert_eq!(sizes, [100, 50]);
}

#[tokio::test]
async fn reddit_info_faults_and_an_exhausted_budget() {
    let (sim, reddit) = reddit_setup().await;
    let mine = reddit.publish("ada", post("r-1", "Budgeted. Carefully.")).await.unwrap();
    sim.script([RedditFault::Status { status: 503 }]);
    assert!(matches!(reddit.engagement("ada", std::slice::from_ref(&mine)).await, Err(PlatformError::Transient(_))));
    sim.script([RedditFault::MalformedJson]);
    assert!(matches!(reddit.engagement("ada", std::slice::from_ref(&mine)).await, Err(PlatformError::Transient(_))));

    // The account's budget is shared with posting: spent, nothing more is sent before the reset.
    sim.set_limit(1, Duration::from_secs(600));
    reddit.engagement("ada", std::slice::from_ref(&mine)).await.unwrap();
    sim.clear_requests();
    let err = reddit.engagement("ada", std::slice::from_ref(&mine)).await.unwrap_err();
    assert!(matches!(err, PlatformError::RateLimited { .. }), "{err:?}");
    assert!(sim.requests().is_empty());
}

// ----- Discord -----

const BOT_TOKEN: &str = "ada-bot-token";

async fn discord_setup() -> (DiscordSim, DiscordPlatform, String) {
    let sim = DiscordSim::start().await.unwrap();
    sim.add_bot(BOT_TOKEN, "ada");
    let channel = sim.text_channel_id();
    let client = DiscordClient::new(DiscordClientConfig {
        api_base_url: sim.base_url(),
        token: Secret::new(BOT_TOKEN),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let account = DiscordAccount::new(client, HashSet::new(), Some(channel.clone()));
    let platform = DiscordPlatform::new(HashMap::from([("ada".to_owned(), account)]), 2000);
    (sim, platform, channel)
}

fn message_of(remote_id: &str) -> &str {
    remote_id.split_once('/').map(|(_, message)| message).unwrap()
}

#[tokio::test]
async fn discord_engagement_is_reactions_and_replies() {
    let (sim, discord, channel) = discord_setup().await;
    assert!(discord.measures_engagement());
    let (sam, bob) = (sim.add_user("sam"), sim.add_user("bob"));
    let question = sim.user_message(&sam, &channel, "hello bot", true);
    let answer = discord.publish("ada", reply("d-1", "Hello, Sam.", &format!("{channel}/{question}"))).await.unwrap();
    let scheduled = discord.publish("ada", post("d-2", "Good morning, everyone.")).await.unwrap();
    assert!(answer.starts_with(&format!("{channel}/")), "{answer}");
    let (answer_id, scheduled_id) = (message_of(&answer), message_of(&scheduled));
    assert!(!sim.user_reply(&sam, &channel, answer_id, "thanks!").is_empty());
    assert!(!sim.user_reply(&bob, &channel, answer_id, "+1").is_empty());
    assert!(!sim.user_reply(&sam, &channel, scheduled_id, "morning!").is_empty());
    sim.user_message(&bob, &channel, "something else entirely", false);
    assert!(sim.add_reaction(&channel, answer_id, "👍", 3));
    assert!(sim.add_reaction(&channel, answer_id, "🎉", 1));
    assert!(sim.add_reaction(&channel, answer_id, "👍", 1));
    assert!(!sim.add_reaction(&channel, "1234", "👍", 1));
    sim.clear_requests();

    let ids = [answer.clone(), scheduled.clone(), format!("{channel}/1234"), "garbage".to_owned()];
    let measured = by_id(discord.engagement("ada", &ids).await.unwrap());
    assert_eq!(measured.len(), 2, "{measured:?}");
    assert_eq!(measured[&answer], counts(5, 2, 0, None));
    assert_eq!(measured[&scheduled], counts(0, 1, 0, None));

    let paths: Vec<String> = sim.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    let one = |id: &str| format!("GET /api/v10/channels/{channel}/messages/{id}");
    let page = format!("GET /api/v10/channels/{channel}/messages");
    assert_eq!(paths, [one(answer_id), page.clone(), one(scheduled_id), page, one("1234")], "gone: no page read");
    assert!(sim.requests().iter().all(|r| r.headers["authorization"] == format!("Bot {BOT_TOKEN}")));
}

#[tokio::test]
async fn discord_message_reads_match_the_openapi_document_and_faults_are_classified() {
    let spec = discord_spec::spec();
    let (sim, discord, channel) = discord_setup().await;
    let published = discord.publish("ada", post("d-1", "React to this.")).await.unwrap();
    let message_id = message_of(&published);
    sim.add_reaction(&channel, message_id, "👍", 2);
    discord.engagement("ada", std::slice::from_ref(&published)).await.unwrap();
    for request in sim.requests() {
        let path = request.path.trim_start_matches("/api/v10");
        assert!(discord_spec::operation(&spec, &request.method, path).is_some(), "{} {path}", request.method);
    }

    let http = reqwest::Client::new();
    let url = format!("{}/api/v10/channels/{channel}/messages/{message_id}", sim.base_url());
    let response = http.get(&url).header("authorization", format!("Bot {BOT_TOKEN}")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-ratelimit-bucket"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reactions"][0]["count"], 2);
    let op = discord_spec::operation(&spec, "GET", &format!("/channels/{channel}/messages/{message_id}")).unwrap();
    discord_spec::check(&spec, discord_spec::response_schema(op, "200"), &body, "GET message");
    let missing = http
        .get(format!("{}/api/v10/channels/{channel}/messages/1234", sim.base_url()))
        .header("authorization", format!("Bot {BOT_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap()["code"], 10008);

    sim.script([DiscordFault::Status { status: 500 }]);
    let err = discord.engagement("ada", std::slice::from_ref(&published)).await.unwrap_err();
    assert!(matches!(err, PlatformError::Transient(_)), "{err:?}");
    sim.script_on(
        "GET /channels/{channel_id}/messages/{message_id}",
        [DiscordFault::RateLimited { retry_after_secs: 2.5, global: false }],
    );
    let err = discord.engagement("ada", std::slice::from_ref(&published)).await.unwrap_err();
    assert_eq!(err, PlatformError::RateLimited { retry_after: Duration::from_millis(2500) });
    sim.clear_requests();
    let err = discord.engagement("ada", std::slice::from_ref(&published)).await.unwrap_err();
    assert!(matches!(err, PlatformError::RateLimited { .. }), "the route's gate is still closed: {err:?}");
    assert!(sim.requests().is_empty(), "nothing is sent before retry_after");
}

// ----- Local -----

#[tokio::test]
async fn local_replies_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/engagement.db", dir.path().display()), 2).await.unwrap();
    db.migrate().await.unwrap();
    let local = LocalPlatform::new(db.clone());
    assert!(local.measures_engagement());
    let original = local.publish("ada", post("l-1", "Tomatoes need sun.")).await.unwrap();
    let answer = local.publish("bob", reply("l-2", "@ada and water.", &original)).await.unwrap();
    let ids = [original.clone(), answer.clone(), "999999".to_owned(), "not-a-number".to_owned()];
    let measured = by_id(local.engagement("ada", &ids).await.unwrap());
    assert_eq!(measured.len(), 2, "{measured:?}");
    assert_eq!(measured[&original], counts(0, 1, 0, None));
    assert_eq!(measured[&answer], counts(0, 0, 0, None));
    db.close().await;
}

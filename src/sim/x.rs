//! The X (Twitter) API v2 simulator: an HTTP server on 127.0.0.1 with the endpoints Chorus uses,
//! answering in the shapes of the published OpenAPI document and of the live API.
//!
//! - `GET /2/users/me`, `POST /2/tweets`, `GET /2/users/{id}/mentions`, `GET /2/users/{id}/tweets`,
//!   `GET /2/tweets?ids=` (post lookup: at most 100 ids, each `^[0-9]{1,19}$`, else a 400; posts
//!   it does not have are `errors` of type resource-not-found, and `data` is left out when none is
//!   found) and the OAuth 2.0 refresh `POST /2/oauth2/token` (form `grant_type=refresh_token`).
//! - `tweet.fields=public_metrics` gives `like_count`, `retweet_count`, `quote_count`,
//!   `bookmark_count` and `impression_count` as set with [`XSim::set_metrics`] (all 0 until then),
//!   and `reply_count`: the replies set there plus the posts in the simulator that reply to it.
//! - Authentication: `Authorization: Bearer <access token>` from [`XSim::add_user`], or OAuth 1.0a
//!   with the consumer [`SIM_CONSUMER_KEY`] / [`SIM_CONSUMER_SECRET`] and the account's OAuth 1.0a
//!   token: the header must carry `oauth_consumer_key`, `oauth_nonce`, `oauth_signature`,
//!   `oauth_signature_method="HMAC-SHA1"`, `oauth_timestamp`, `oauth_token` and
//!   `oauth_version="1.0"`, and its HMAC-SHA1 signature (over the method, URL and query) is
//!   verified. Anything else is a 401 Problem.
//! - Rate limits per endpoint (path template) and user, with `x-rate-limit-limit`,
//!   `x-rate-limit-remaining` and `x-rate-limit-reset` (epoch seconds) on every authenticated
//!   response and a 429 while the window is exhausted ([`XSim::set_limit`]).
//! - Like X: a repeated text by the same author is a 403 "duplicate content" Problem; a reply
//!   carries the parent author's `@username ` in front of its text (unless it replies to its own
//!   author) and counts as a mention of them; text over 280 weighted characters is a 400; unknown
//!   query parameters are a 400. Field names follow the live API (`tweet.fields`,
//!   `referenced_tweets`, `edit_history_tweet_ids`).
//! - Faults ([`XSimFault`]) are queued with [`XSim::script`]; every request pops one.
//! - Every request is recorded ([`XRecordedRequest`]). Nothing in here panics on bad input.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::lock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::platform::x::text::weighted_length;

/// The consumer (app) key OAuth 1.0a requests must be signed with.
pub const SIM_CONSUMER_KEY: &str = "sim-consumer-key";
/// The consumer secret OAuth 1.0a requests must be signed with.
pub const SIM_CONSUMER_SECRET: &str = "sim-consumer-secret";

const DUPLICATE: &str = "You are not allowed to create a Tweet with duplicate content.";
const MAX_WEIGHTED_LENGTH: usize = 280;

/// Endpoint templates and their default limits per 15 minutes. `/2/tweets` is posting;
/// `GET /2/tweets`, the lookup by ids, has a window of its own.
const DEFAULT_LIMITS: [(&str, u32); 5] = [
    ("/2/tweets", 200),
    ("GET /2/tweets", 900),
    ("/2/users/me", 75),
    ("/2/users/{id}/mentions", 180),
    ("/2/users/{id}/tweets", 900),
];
/// Most ids one `GET /2/tweets` takes.
const MAX_LOOKUP_IDS: usize = 100;
const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// A fault injected into one response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XSimFault {
    /// This status with `body` (default: a Problem for the status), no rate-limit headers.
    Status { status: u16, body: Option<String> },
    /// Sleep this long, then answer normally.
    Slow(Duration),
    /// 200 with a truncated JSON body.
    MalformedJson,
}

/// One request as the simulator received it.
#[derive(Clone, Debug)]
pub struct XRecordedRequest {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// Names lowercased; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The JSON body; a form body is recorded as an object of its pairs; anything else as a string
    /// (lossy UTF-8), an empty body as `null`.
    pub body: Value,
}

/// An account created with [`XSim::add_user`] and its credentials.
#[derive(Clone, Debug)]
pub struct XSimAccount {
    pub user_id: String,
    pub username: String,
    /// OAuth 2.0 bearer token.
    pub access_token: String,
    /// OAuth 2.0 refresh token (single use: a refresh rotates both tokens).
    pub refresh_token: String,
    /// OAuth 1.0a access token and secret (sign with [`SIM_CONSUMER_KEY`] / [`SIM_CONSUMER_SECRET`]).
    pub oauth1_token: String,
    pub oauth1_token_secret: String,
}

struct SimUser {
    id: String,
    username: String,
}

struct SimTweet {
    id: u64,
    author_id: String,
    /// `None`: a malformed post (see [`XSim::malformed_mention`]).
    text: Option<String>,
    conversation_id: u64,
    in_reply_to: Option<u64>,
    in_reply_to_user_id: Option<String>,
    mentions: Vec<String>,
    created_at: SystemTime,
    metrics: SimMetrics,
}

/// The public metrics a test set ([`XSim::set_metrics`]).
#[derive(Clone, Copy, Default)]
struct SimMetrics {
    likes: u64,
    /// Replies that are not posts in the simulator (those are counted on top).
    replies: u64,
    retweets: u64,
    quotes: u64,
    impressions: u64,
}

struct Grant {
    user_id: String,
    access: Option<String>,
    refresh: Option<String>,
}

struct Window {
    remaining: u32,
    reset_at: SystemTime,
}

#[derive(Default)]
struct World {
    users: Vec<SimUser>,
    tweets: Vec<SimTweet>,
    grants: Vec<Grant>,
    /// OAuth 1.0a token → (user id, token secret).
    oauth1: HashMap<String, (String, String)>,
    limits: HashMap<String, (u32, Duration)>,
    windows: HashMap<(String, String), Window>,
    next_id: u64,
    next_user: u64,
}

impl World {
    fn user_by_name(&self, username: &str) -> Option<&SimUser> {
        self.users.iter().find(|u| u.username.eq_ignore_ascii_case(username))
    }

    fn user_by_id(&self, id: &str) -> Option<&SimUser> {
        self.users.iter().find(|u| u.id == id)
    }

    /// Ids grow with time, like X's snowflakes, so a sandbox restarted on the same database
    /// (whose cursors remember earlier ids) still sees new posts as newer.
    fn next_tweet_id(&mut self) -> u64 {
        let now_based = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as u64 * 1000)
            .unwrap_or_default();
        self.next_id = (self.next_id + 1).max(now_based);
        1_000_000_000_000_000_000 + self.next_id
    }

    /// Creates the user, or — for a username that exists — issues fresh credentials for it (a
    /// service restarted against the same simulator logs in again as the same user).
    fn add_user(&mut self, username: &str) -> XSimAccount {
        self.next_user += 1;
        let n = self.next_user;
        let user_id = match self.user_by_name(username) {
            Some(user) => user.id.clone(),
            None => {
                let user_id = (2_000_000 + n).to_string();
                self.users.push(SimUser { id: user_id.clone(), username: username.to_owned() });
                user_id
            }
        };
        let account = XSimAccount {
            user_id: user_id.clone(),
            username: username.to_owned(),
            access_token: format!("sim-access-{n}-0"),
            refresh_token: format!("sim-refresh-{n}-0"),
            oauth1_token: format!("{user_id}-sim-oauth1-{n}"),
            oauth1_token_secret: format!("sim-oauth1-secret-{n}"),
        };
        self.grants.push(Grant {
            user_id: user_id.clone(),
            access: Some(account.access_token.clone()),
            refresh: Some(account.refresh_token.clone()),
        });
        self.oauth1.insert(account.oauth1_token.clone(), (user_id, account.oauth1_token_secret.clone()));
        account
    }

    fn ensure_user(&mut self, username: &str) -> String {
        match self.user_by_name(username) {
            Some(user) => user.id.clone(),
            None => self.add_user(username).user_id,
        }
    }

    /// Stores a post; a reply gets the parent author's mention. Returns its id.
    fn insert_tweet(&mut self, author_id: &str, text: Option<&str>, in_reply_to: Option<u64>) -> u64 {
        let id = self.next_tweet_id();
        let parent = in_reply_to.and_then(|p| self.tweets.iter().find(|t| t.id == p));
        let conversation_id = parent.map_or(id, |p| p.conversation_id);
        let parent_author = parent.map(|p| p.author_id.clone());
        let mut text = text.map(str::to_owned);
        let mut mentions = Vec::new();
        if let Some(parent_author) = &parent_author
            && parent_author != author_id
        {
            mentions.push(parent_author.clone());
            if let (Some(t), Some(user)) = (text.as_mut(), self.user_by_id(parent_author)) {
                let prefix = format!("@{} ", user.username);
                if !t.to_lowercase().starts_with(&prefix.to_lowercase()) {
                    t.insert_str(0, &prefix);
                }
            }
        }
        for word in text.as_deref().unwrap_or_default().split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '@'))
        {
            if let Some(name) = word.strip_prefix('@')
                && let Some(user) = self.user_by_name(name)
                && !mentions.contains(&user.id)
            {
                mentions.push(user.id.clone());
            }
        }
        self.tweets.push(SimTweet {
            id,
            author_id: author_id.to_owned(),
            text,
            conversation_id,
            in_reply_to,
            in_reply_to_user_id: parent_author,
            mentions,
            created_at: SystemTime::now(),
            metrics: SimMetrics::default(),
        });
        id
    }

    fn render_tweet(&self, tweet: &SimTweet, fields: &[&str]) -> Value {
        let mut out = serde_json::Map::new();
        out.insert("id".into(), json!(tweet.id.to_string()));
        if let Some(text) = &tweet.text {
            out.insert("text".into(), json!(text));
            out.insert("edit_history_tweet_ids".into(), json!([tweet.id.to_string()]));
        }
        let all = fields.contains(&"*");
        let wants = |field: &str| all || fields.contains(&field);
        if wants("author_id") {
            out.insert("author_id".into(), json!(tweet.author_id));
        }
        if wants("conversation_id") {
            out.insert("conversation_id".into(), json!(tweet.conversation_id.to_string()));
        }
        if wants("created_at") {
            out.insert("created_at".into(), json!(rfc3339(tweet.created_at)));
        }
        if wants("public_metrics") {
            let replies = self.tweets.iter().filter(|t| t.in_reply_to == Some(tweet.id)).count() as u64;
            let metrics = tweet.metrics;
            out.insert(
                "public_metrics".into(),
                json!({
                    "retweet_count": metrics.retweets,
                    "reply_count": metrics.replies + replies,
                    "like_count": metrics.likes,
                    "quote_count": metrics.quotes,
                    "bookmark_count": 0,
                    "impression_count": metrics.impressions,
                }),
            );
        }
        if let Some(parent) = tweet.in_reply_to {
            if wants("referenced_tweets") {
                out.insert("referenced_tweets".into(), json!([{"type": "replied_to", "id": parent.to_string()}]));
            }
            if wants("in_reply_to_user_id") {
                out.insert("in_reply_to_user_id".into(), json!(tweet.in_reply_to_user_id));
            }
        }
        Value::Object(out)
    }
}

/// `2026-01-02T03:04:05.000Z`.
fn rfc3339(at: SystemTime) -> String {
    let (year, month, day, rem, _) = super::utc_fields(at);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z", rem / 3600, rem / 60 % 60, rem % 60)
}

#[derive(Default)]
struct SimState {
    world: Mutex<World>,
    script: Mutex<VecDeque<XSimFault>>,
    requests: Mutex<Vec<XRecordedRequest>>,
}

/// A running X simulator. Clones share the server and state; it lives as long as the runtime.
#[derive(Clone)]
pub struct XSim {
    pub addr: SocketAddr,
    state: Arc<SimState>,
}

impl XSim {
    /// Binds 127.0.0.1 on an ephemeral port and serves on the current tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let state = Arc::new(SimState::default());
        {
            let mut world = lock(&state.world);
            for (template, limit) in DEFAULT_LIMITS {
                world.limits.insert(template.to_owned(), (limit, DEFAULT_WINDOW));
            }
        }
        let app = Router::new().fallback(handle).with_state(state.clone());
        let addr = super::serve(addr, app).await?;
        Ok(Self { addr, state })
    }

    /// `http://ADDR`, the client's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates an account with fresh OAuth 2.0 and OAuth 1.0a credentials.
    pub fn add_user(&self, username: &str) -> XSimAccount {
        lock(&self.state.world).add_user(username)
    }

    /// `from` (created if unknown) posts `text` mentioning `to` (created if unknown), optionally as a
    /// reply. Returns the post id.
    pub fn mention(&self, from: &str, to: &str, text: &str, in_reply_to: Option<&str>) -> String {
        let mut world = lock(&self.state.world);
        let author = world.ensure_user(from);
        let target = world.ensure_user(to);
        let parent = in_reply_to.and_then(|id| id.parse().ok());
        let id = world.insert_tweet(&author, Some(text), parent);
        if let Some(tweet) = world.tweets.iter_mut().find(|t| t.id == id)
            && !tweet.mentions.contains(&target)
        {
            tweet.mentions.push(target);
        }
        id.to_string()
    }

    /// Like [`XSim::mention`] but the post has no `text` (a malformed object in the timeline).
    pub fn malformed_mention(&self, from: &str, to: &str) -> String {
        let mut world = lock(&self.state.world);
        let author = world.ensure_user(from);
        let target = world.ensure_user(to);
        let id = world.insert_tweet(&author, None, None);
        if let Some(tweet) = world.tweets.iter_mut().find(|t| t.id == id) {
            tweet.mentions.push(target);
        }
        id.to_string()
    }

    /// The posts of `username`, newest first, with every field.
    pub fn tweets_by(&self, username: &str) -> Vec<Value> {
        let world = lock(&self.state.world);
        let Some(user) = world.user_by_name(username) else { return Vec::new() };
        let mut tweets: Vec<&SimTweet> = world.tweets.iter().filter(|t| t.author_id == user.id).collect();
        tweets.sort_by_key(|t| std::cmp::Reverse(t.id));
        tweets.into_iter().map(|t| world.render_tweet(t, &["*"])).collect()
    }

    /// Sets the public metrics of a post; `replies` counts replies that are not posts here (the
    /// simulator's own replies to it are added). Returns `false` for an unknown post.
    pub fn set_metrics(
        &self,
        tweet_id: &str,
        likes: u64,
        replies: u64,
        retweets: u64,
        quotes: u64,
        impressions: u64,
    ) -> bool {
        let mut world = lock(&self.state.world);
        let Some(tweet) = world.tweets.iter_mut().find(|t| t.id.to_string() == tweet_id) else { return false };
        tweet.metrics = SimMetrics { likes, replies, retweets, quotes, impressions };
        true
    }

    /// Deletes a post (its replies stay, as on X). Returns `false` for an unknown post.
    pub fn delete_tweet(&self, tweet_id: &str) -> bool {
        let mut world = lock(&self.state.world);
        let before = world.tweets.len();
        world.tweets.retain(|t| t.id.to_string() != tweet_id);
        world.tweets.len() < before
    }

    /// Invalidates an OAuth 2.0 access token only (as if it expired): a refresh still works.
    pub fn expire(&self, access_token: &str) {
        for grant in &mut lock(&self.state.world).grants {
            if grant.access.as_deref() == Some(access_token) {
                grant.access = None;
            }
        }
    }

    /// Revokes a token: an OAuth 2.0 access or refresh token kills its whole grant (both tokens);
    /// an OAuth 1.0a access token stops working.
    pub fn revoke(&self, token: &str) {
        let mut world = lock(&self.state.world);
        world.oauth1.remove(token);
        for grant in &mut world.grants {
            if grant.access.as_deref() == Some(token) || grant.refresh.as_deref() == Some(token) {
                grant.access = None;
                grant.refresh = None;
            }
        }
    }

    /// Sets the limit of `template` (e.g. `/2/users/{id}/mentions`, `/2/tweets` for posting,
    /// `GET /2/tweets` for the lookup by ids) per `window`, for every user, starting fresh windows.
    pub fn set_limit(&self, template: &str, limit: u32, window: Duration) {
        let mut world = lock(&self.state.world);
        world.limits.insert(template.to_owned(), (limit, window));
        world.windows.retain(|(t, _), _| t != template);
    }

    /// Queues faults; every request pops the next one.
    pub fn script(&self, faults: impl IntoIterator<Item = XSimFault>) {
        lock(&self.state.script).extend(faults);
    }

    /// All requests so far, oldest first.
    pub fn requests(&self) -> Vec<XRecordedRequest> {
        lock(&self.state.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }
}

use super::json_response;

/// A Problem (RFC 7807 shape, as the spec's `Problem` schemas).
fn problem(status: StatusCode, title: &str, kind: &str, detail: &str) -> Response {
    json_response(
        status,
        json!({"title": title, "type": kind, "status": status.as_u16(), "detail": detail}).to_string(),
    )
}

fn default_problem(status: StatusCode) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let kind = match status.as_u16() {
        400 => "https://api.x.com/2/problems/invalid-request",
        404 => "https://api.x.com/2/problems/resource-not-found",
        500..=599 => "https://api.x.com/2/problems/internal-error",
        _ => "about:blank",
    };
    problem(status, title, kind, title)
}

fn invalid_request(message: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({
            "errors": [{"message": message}],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.x.com/2/problems/invalid-request",
        })
        .to_string(),
    )
}

fn unauthorized() -> Response {
    problem(StatusCode::UNAUTHORIZED, "Unauthorized", "about:blank", "Unauthorized")
}

fn decode_pairs(encoded: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{encoded}"))
        .map(|url| url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

fn percent_decode(value: &str) -> String {
    // `+` is literal in OAuth header values; escape it before form decoding.
    decode_pairs(&format!("v={}", value.replace('+', "%2B"))).pop().map(|(_, v)| v).unwrap_or_default()
}

/// The `OAuth k="v", …` parameters, decoded; `None` if the header is not of that form.
fn parse_oauth_header(value: &str) -> Option<BTreeMap<String, String>> {
    let rest = value.strip_prefix("OAuth ")?;
    let mut params = BTreeMap::new();
    for item in rest.split(',') {
        let (key, quoted) = item.trim().split_once('=')?;
        let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
        params.insert(percent_decode(key), percent_decode(inner));
    }
    Some(params)
}

async fn handle(
    State(state): State<Arc<SimState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = uri.query().map(decode_pairs).unwrap_or_default();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let recorded_body = if body.is_empty() {
        Value::Null
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let pairs = decode_pairs(&String::from_utf8_lossy(&body));
        Value::Object(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
    } else {
        serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    let names = super::recorded_headers(&headers);
    lock(&state.requests).push(XRecordedRequest {
        at: Instant::now(),
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: query.clone(),
        headers: names,
        body: recorded_body.clone(),
    });

    let fault = lock(&state.script).pop_front();
    match fault {
        Some(XSimFault::Status { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return match body {
                Some(body) => json_response(status, body),
                None => default_problem(status),
            };
        }
        Some(XSimFault::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(XSimFault::MalformedJson) => return json_response(StatusCode::OK, r#"{"data": [{"id": "1", "te"#),
        None => {}
    }

    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let template = match (&method, segments.as_slice()) {
        (&Method::POST, ["2", "oauth2", "token"]) => return token(&state, &recorded_body),
        (&Method::GET, ["2", "users", "me"]) => "/2/users/me",
        (&Method::POST, ["2", "tweets"]) => "/2/tweets",
        (&Method::GET, ["2", "tweets"]) => "GET /2/tweets",
        (&Method::GET, ["2", "users", _, "mentions"]) => "/2/users/{id}/mentions",
        (&Method::GET, ["2", "users", _, "tweets"]) => "/2/users/{id}/tweets",
        _ => return default_problem(StatusCode::NOT_FOUND),
    };

    let mut world = lock(&state.world);
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let signed_url = format!("http://{host}{}", uri.path());
    let Some(user_id) = authenticate(&world, authorization, method.as_str(), &signed_url, &query) else {
        return unauthorized();
    };

    // Rate limit.
    let now = SystemTime::now();
    let (limit, window) = world.limits.get(template).copied().unwrap_or((u32::MAX, DEFAULT_WINDOW));
    let slot = world
        .windows
        .entry((template.to_owned(), user_id.clone()))
        .or_insert_with(|| Window { remaining: limit, reset_at: now + window });
    if now >= slot.reset_at {
        *slot = Window { remaining: limit, reset_at: now + window };
    }
    let exhausted = slot.remaining == 0;
    slot.remaining = slot.remaining.saturating_sub(1);
    let reset_epoch = slot.reset_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64().ceil() as u64).unwrap_or(0);
    let remaining = slot.remaining;
    let mut response = if exhausted {
        problem(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests", "about:blank", "Too Many Requests")
    } else {
        match template {
            "/2/users/me" => users_me(&world, &user_id, &query),
            "/2/tweets" => create_tweet(&mut world, &user_id, &query, &recorded_body),
            "GET /2/tweets" => lookup(&world, &query),
            "/2/users/{id}/mentions" => timeline(&world, segments[2], &query, true),
            _ => timeline(&world, segments[2], &query, false),
        }
    };
    let out = response.headers_mut();
    out.insert("x-rate-limit-limit", HeaderValue::from(limit));
    out.insert("x-rate-limit-remaining", HeaderValue::from(remaining));
    out.insert("x-rate-limit-reset", HeaderValue::from(reset_epoch));
    response
}

/// The user a request acts for, or `None` (401).
fn authenticate(
    world: &World,
    authorization: &str,
    method: &str,
    url: &str,
    query: &[(String, String)],
) -> Option<String> {
    if let Some(token) = authorization.strip_prefix("Bearer ") {
        return world.grants.iter().find(|g| g.access.as_deref() == Some(token)).map(|g| g.user_id.clone());
    }
    let params = parse_oauth_header(authorization)?;
    let get = |key: &str| params.get(key).map(String::as_str);
    for key in ["oauth_consumer_key", "oauth_nonce", "oauth_signature", "oauth_timestamp", "oauth_token"] {
        if get(key).is_none_or(str::is_empty) {
            return None;
        }
    }
    if get("oauth_signature_method") != Some("HMAC-SHA1")
        || get("oauth_version") != Some("1.0")
        || get("oauth_consumer_key") != Some(SIM_CONSUMER_KEY)
    {
        return None;
    }
    let token = get("oauth_token")?;
    let (user_id, token_secret) = world.oauth1.get(token)?;
    let timestamp = get("oauth_timestamp")?.parse::<u64>().ok().and_then(std::num::NonZeroU64::new)?;
    let mut builder = oauth1_request::Builder::with_token(
        oauth1_request::Token::from_parts(SIM_CONSUMER_KEY, SIM_CONSUMER_SECRET, token, token_secret.as_str()),
        oauth1_request::HmacSha1::new(),
    );
    builder.version(true).nonce(get("oauth_nonce")).timestamp(timestamp);
    let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let expected = builder.authorize(method, url, &oauth1_request::ParameterList::new(pairs));
    let expected = parse_oauth_header(&expected)?;
    (expected.get("oauth_signature").map(String::as_str) == get("oauth_signature")).then(|| user_id.clone())
}

/// Rejects parameters the endpoint does not know, like X.
fn check_params(query: &[(String, String)], allowed: &[&str]) -> Result<(), Box<Response>> {
    match query.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        Some((key, _)) => Err(Box::new(invalid_request(&format!(
            "The query parameter [{key}] is not one of [{}]",
            allowed.join(",")
        )))),
        None => Ok(()),
    }
}

fn param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn list<'a>(query: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    param(query, key).map(|v| v.split(',').collect()).unwrap_or_default()
}

fn users_me(world: &World, user_id: &str, query: &[(String, String)]) -> Response {
    if let Err(response) = check_params(query, &["user.fields", "expansions", "tweet.fields"]) {
        return *response;
    }
    match world.user_by_id(user_id) {
        Some(user) => json_response(
            StatusCode::OK,
            json!({"data": {"id": user.id, "name": user.username, "username": user.username}}).to_string(),
        ),
        None => default_problem(StatusCode::NOT_FOUND),
    }
}

fn create_tweet(world: &mut World, user_id: &str, query: &[(String, String)], body: &Value) -> Response {
    if !query.is_empty() {
        return invalid_request("POST /2/tweets takes no query parameters");
    }
    let Some(object) = body.as_object() else { return invalid_request("the body must be a JSON object") };
    const KNOWN: [&str; 16] = [
        "card_uri",
        "community_id",
        "direct_message_deep_link",
        "edit_options",
        "for_super_followers_only",
        "geo",
        "made_with_ai",
        "media",
        "nullcast",
        "paid_partnership",
        "poll",
        "quote_tweet_id",
        "reply",
        "reply_settings",
        "share_with_followers",
        "text",
    ];
    if let Some(key) = object.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return invalid_request(&format!("unknown field [{key}]"));
    }
    let Some(text) = object.get("text").and_then(Value::as_str) else {
        return invalid_request("text must be a string");
    };
    if text.trim().is_empty() {
        return invalid_request("text must not be empty");
    }
    if weighted_length(text) > MAX_WEIGHTED_LENGTH {
        return invalid_request("The text is too long (over 280 weighted characters).");
    }
    let parent = match object.get("reply") {
        None => None,
        Some(reply) => {
            let Some(id) = reply.get("in_reply_to_tweet_id").and_then(Value::as_str) else {
                return invalid_request("reply.in_reply_to_tweet_id must be a string");
            };
            let valid = reply.as_object().is_some_and(|r| {
                r.keys().all(|k| {
                    ["in_reply_to_tweet_id", "exclude_reply_user_ids", "auto_populate_reply_metadata"]
                        .contains(&k.as_str())
                })
            });
            match id.parse::<u64>() {
                Ok(parent) if valid && id.len() <= 19 => {
                    if !world.tweets.iter().any(|t| t.id == parent) {
                        return problem(
                            StatusCode::FORBIDDEN,
                            "Forbidden",
                            "about:blank",
                            "You attempted to reply to a Tweet that is deleted or not visible to you.",
                        );
                    }
                    Some(parent)
                }
                _ => return invalid_request("reply.in_reply_to_tweet_id is invalid"),
            }
        }
    };
    // Duplicate: same author, same submitted text (compared without the automatic reply mention).
    let duplicate = world.tweets.iter().any(|t| {
        t.author_id == user_id
            && t.text.as_deref().is_some_and(|existing| existing == text || strip_reply_mention(existing) == text)
    });
    if duplicate {
        return problem(StatusCode::FORBIDDEN, "Forbidden", "about:blank", DUPLICATE);
    }
    let id = world.insert_tweet(user_id, Some(text), parent);
    let stored = world.tweets.iter().find(|t| t.id == id).and_then(|t| t.text.clone()).unwrap_or_default();
    json_response(
        StatusCode::CREATED,
        json!({"data": {"id": id.to_string(), "text": stored, "edit_history_tweet_ids": [id.to_string()]}}).to_string(),
    )
}

fn strip_reply_mention(text: &str) -> &str {
    match text.strip_prefix('@').and_then(|rest| rest.split_once(' ')) {
        Some((_, rest)) => rest,
        None => text,
    }
}

/// `GET /2/tweets?ids=`: the posts found, in the order asked, and a resource-not-found problem in
/// `errors` for each one that is not (deleted or never existed).
fn lookup(world: &World, query: &[(String, String)]) -> Response {
    let allowed = ["ids", "tweet.fields", "expansions", "user.fields", "media.fields", "poll.fields", "place.fields"];
    if let Err(response) = check_params(query, &allowed) {
        return *response;
    }
    let ids = list(query, "ids");
    if ids.is_empty() || ids.iter().all(|id| id.is_empty()) {
        return invalid_request("The `ids` query parameter can not be empty");
    }
    if ids.len() > MAX_LOOKUP_IDS {
        return invalid_request(&format!(
            "The number of values in the `ids` query parameter list [{}] is not between 1 and 100",
            ids.len()
        ));
    }
    if let Some(bad) = ids.iter().find(|id| id.is_empty() || id.len() > 19 || !id.bytes().all(|b| b.is_ascii_digit())) {
        return invalid_request(&format!("The `ids` query parameter value [{bad}] does not match ^[0-9]{{1,19}}$"));
    }
    let fields = list(query, "tweet.fields");
    let mut data = Vec::new();
    let mut errors = Vec::new();
    for id in ids {
        match world.tweets.iter().find(|t| t.id.to_string() == id) {
            Some(tweet) => data.push(world.render_tweet(tweet, &fields)),
            None => errors.push(json!({
                "value": id,
                "detail": format!("Could not find tweet with ids: [{id}]."),
                "title": "Not Found Error",
                "resource_type": "tweet",
                "parameter": "ids",
                "resource_id": id,
                "type": "https://api.x.com/2/problems/resource-not-found",
            })),
        }
    }
    let mut body = serde_json::Map::new();
    if !data.is_empty() {
        body.insert("data".into(), Value::Array(data));
    }
    if !errors.is_empty() {
        body.insert("errors".into(), Value::Array(errors));
    }
    json_response(StatusCode::OK, Value::Object(body).to_string())
}

/// `GET /2/users/{id}/mentions` (`mentions`) or `/2/users/{id}/tweets`, newest first, paged.
fn timeline(world: &World, user_id: &str, query: &[(String, String)], mentions: bool) -> Response {
    let allowed = [
        "max_results",
        "pagination_token",
        "since_id",
        "until_id",
        "start_time",
        "end_time",
        "tweet.fields",
        "expansions",
        "user.fields",
        "media.fields",
        "poll.fields",
        "place.fields",
        "exclude",
    ];
    let allowed = if mentions { &allowed[..12] } else { &allowed[..] };
    if let Err(response) = check_params(query, allowed) {
        return *response;
    }
    if world.user_by_id(user_id).is_none() {
        return problem(
            StatusCode::NOT_FOUND,
            "Not Found Error",
            "https://api.x.com/2/problems/resource-not-found",
            "Could not find user.",
        );
    }
    let max_results = match param(query, "max_results").map(str::parse::<usize>) {
        None => 10,
        Some(Ok(n)) if (5..=100).contains(&n) => n,
        Some(_) => return invalid_request("The `max_results` query parameter value is not between 5 and 100"),
    };
    let id_param = |key: &str| -> Result<Option<u64>, Box<Response>> {
        match param(query, key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| Box::new(invalid_request(&format!("The `{key}` query parameter is invalid")))),
        }
    };
    let since = match id_param("since_id") {
        Ok(v) => v.unwrap_or(0),
        Err(response) => return *response,
    };
    let until = match id_param("until_id") {
        Ok(v) => v.unwrap_or(u64::MAX),
        Err(response) => return *response,
    };
    let below = match param(query, "pagination_token") {
        None => u64::MAX,
        Some(token) => match token.strip_prefix("next-").and_then(|id| id.parse().ok()) {
            Some(id) => id,
            None => return invalid_request("The `pagination_token` query parameter is invalid"),
        },
    };
    let mut matching: Vec<&SimTweet> = world
        .tweets
        .iter()
        .filter(|t| if mentions { t.mentions.iter().any(|m| m == user_id) } else { t.author_id == user_id })
        .filter(|t| t.id > since && t.id < until && t.id < below)
        .collect();
    matching.sort_by_key(|t| std::cmp::Reverse(t.id));
    let more = matching.len() > max_results;
    matching.truncate(max_results);
    if matching.is_empty() {
        return json_response(StatusCode::OK, json!({"meta": {"result_count": 0}}).to_string());
    }
    let fields = list(query, "tweet.fields");
    let data: Vec<Value> = matching.iter().map(|t| world.render_tweet(t, &fields)).collect();
    let mut meta = json!({
        "newest_id": matching[0].id.to_string(),
        "oldest_id": matching[matching.len() - 1].id.to_string(),
        "result_count": matching.len(),
    });
    if more {
        meta["next_token"] = json!(format!("next-{}", matching[matching.len() - 1].id));
    }
    let mut body = json!({"data": data, "meta": meta});
    if list(query, "expansions").contains(&"author_id") {
        let mut users: Vec<Value> = Vec::new();
        for tweet in &matching {
            if let Some(user) = world.user_by_id(&tweet.author_id)
                && !users.iter().any(|u| u["id"] == json!(user.id))
            {
                users.push(json!({"id": user.id, "name": user.username, "username": user.username}));
            }
        }
        body["includes"] = json!({"users": users});
    }
    json_response(StatusCode::OK, body.to_string())
}

/// `POST /2/oauth2/token` with `grant_type=refresh_token`: rotates both tokens.
fn token(state: &SimState, form: &Value) -> Response {
    let field = |key: &str| form.get(key).and_then(Value::as_str).unwrap_or_default();
    let error = |code: &str, description: &str| {
        json_response(StatusCode::BAD_REQUEST, json!({"error": code, "error_description": description}).to_string())
    };
    if field("grant_type") != "refresh_token" {
        return error("invalid_request", "Missing required parameter [grant_type].");
    }
    if field("client_id").is_empty() {
        return error("invalid_request", "Missing required parameter [client_id].");
    }
    let mut world = lock(&state.world);
    let refresh = field("refresh_token");
    let Some(grant) = world.grants.iter_mut().find(|g| !refresh.is_empty() && g.refresh.as_deref() == Some(refresh))
    else {
        return error("invalid_request", "Value passed for the token was invalid.");
    };
    let generation = refresh.rsplit('-').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) + 1;
    let stem = refresh.trim_start_matches("sim-refresh-").rsplit_once('-').map_or("x", |(stem, _)| stem).to_owned();
    let access = format!("sim-access-{stem}-{generation}");
    let new_refresh = format!("sim-refresh-{stem}-{generation}");
    grant.access = Some(access.clone());
    grant.refresh = Some(new_refresh.clone());
    json_response(
        StatusCode::OK,
        json!({
            "token_type": "bearer",
            "expires_in": 7200,
            "access_token": access,
            "scope": "tweet.read tweet.write users.read offline.access",
            "refresh_token": new_refresh,
        })
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000)), "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn oauth_headers_parse() {
        let params = parse_oauth_header(r#"OAuth oauth_nonce="a%2Bb", oauth_version="1.0""#).unwrap();
        assert_eq!(params["oauth_nonce"], "a+b");
        assert_eq!(params["oauth_version"], "1.0");
        assert!(parse_oauth_header("Bearer x").is_none());
        assert!(parse_oauth_header("OAuth broken").is_none());
    }
}

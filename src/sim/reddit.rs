//! The Reddit simulator: one HTTP server on 127.0.0.1 serving both the token endpoint
//! (`POST /api/v1/access_token`, normally on `www.reddit.com`) and the OAuth API (normally on
//! `oauth.reddit.com`) with the shapes of the recorded traffic (PRAW's betamax cassettes, see
//! `tests/fixtures/reddit/`).
//!
//! The contract (shared with [`crate::platform::reddit`]):
//! - Every request needs a non-blank `User-Agent`, else 403 `{"message": "Forbidden", "error": 403}`.
//! - Token: script-app password grant. HTTP basic auth `client_id:client_secret` (else 401), form
//!   `grant_type=password&username&password`. A wrong password or a revoked account gets a 200
//!   `{"error": "invalid_grant"}`, as Reddit answers. Tokens live [`RedditSim::set_token_ttl`]
//!   (default one hour) and `expires_in` says so.
//! - API calls need `Authorization: bearer TOKEN` with a live token, else 401.
//! - Rate limit per account per window ([`RedditSim::set_limit`], default 600 per 600 s): every
//!   authenticated API response carries `x-ratelimit-used`, `x-ratelimit-remaining` (`"595.0"`)
//!   and `x-ratelimit-reset` (seconds to the window's end); when the budget is spent the answer is
//!   429 with the same headers. The token endpoint carries none, as recorded.
//! - `POST /api/submit` (`api_type=json`, `kind=self`, `sr`, `title`, `text`) →
//!   `{"json": {"errors": [], "data": {"url", "drafts_count", "id", "name": "t3_…"}}}`.
//! - `POST /api/comment` (`api_type=json`, `thing_id`, `text`) →
//!   `{"json": {"errors": [], "data": {"things": [{"kind": "t1", "data": {…, "name": "t1_…"}}]}}}`.
//!   The parent's author gets a `comment_reply` / `post_reply` in their inbox. Refusals are 200s
//!   with `json.errors` (`[[CODE, message, field]]`): `NO_TEXT`, `TOO_LONG`, `DELETED_COMMENT`
//!   (unknown parent), `SUBREDDIT_NOEXIST` (see [`RedditSim::remove_subreddit`]).
//! - `GET /message/unread`, `/message/mentions`, `/message/inbox`, `/user/{name}/comments`,
//!   `/user/{name}/submitted` → a Listing, newest first, `limit` honoured (default 25, max 100).
//! - `POST /api/read_message` (`id=t1_a,t4_b`) → `{}`.
//! - `GET /api/info` (`id=t3_a,t1_b,…`) → a Listing of the things it has, in the order asked, at
//!   most 100 (later ids are ignored); unknown ids are left out. A submission's `num_comments`
//!   counts every comment in its thread; scores are 1 until [`RedditSim::set_score`]. Comments
//!   carry `"replies": ""`, as recorded (`TestReddit.test_info`).
//! - Paths match with or without a trailing slash. Unknown paths: 404, no fault consumed.
//! - Faults ([`RedditFault`]) queued with [`RedditSim::script`] apply to API requests, one per
//!   request; [`RedditSim::script_token`] queues faults for the token endpoint.
//! - Every request is recorded ([`RedditSim::requests`]). Nothing in here panics on bad input.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::lock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The subreddit [`RedditSim::mention`] threads live in.
pub const SIM_SUBREDDIT: &str = "chorus_sim";
/// Most things one `GET /api/info` lists.
const MAX_INFO: usize = 100;

/// A fault injected into one response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedditFault {
    /// This HTTP status with Reddit's JSON error body (`{"message": …, "error": status}`) and,
    /// for an authenticated API request, the rate-limit headers.
    Status { status: u16 },
    /// Sleep this long, then answer normally.
    Slow(Duration),
    /// A 200 whose body is cut JSON.
    MalformedJson,
    /// A 200 with `{"json": {"errors": [[code, message, null]]}}` and nothing done.
    ApiError { code: String, message: String },
}

/// One request as the simulator received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub at: Instant,
    pub method: String,
    /// The path as sent, e.g. `/api/submit` or `/message/unread`.
    pub path: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// Header names lowercased; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// Decoded `application/x-www-form-urlencoded` body pairs, in order (empty for other bodies).
    pub form: Vec<(String, String)>,
}

impl RecordedRequest {
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    pub fn form_value(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// The path without a trailing slash.
    pub fn route(&self) -> &str {
        normalize(&self.path)
    }
}

struct Account {
    password: String,
    client_id: String,
    client_secret: String,
    revoked: bool,
}

struct Window {
    started: Instant,
    used: u32,
}

struct InboxEntry {
    data: Value,
    kind: &'static str,
}

struct World {
    accounts: HashMap<String, Account>,
    /// Access token → (username, expiry).
    tokens: HashMap<String, (String, Instant)>,
    token_ttl: Duration,
    limit: u32,
    window: Duration,
    windows: HashMap<String, Window>,
    /// Comments and submissions by fullname (data objects).
    things: HashMap<String, Value>,
    /// Fullnames in creation order.
    order: Vec<String>,
    inboxes: HashMap<String, Vec<InboxEntry>>,
    missing_subreddits: Vec<String>,
    last_created: f64,
}

impl Default for World {
    fn default() -> Self {
        Self {
            accounts: HashMap::new(),
            tokens: HashMap::new(),
            token_ttl: Duration::from_secs(3600),
            limit: 600,
            window: Duration::from_secs(600),
            windows: HashMap::new(),
            things: HashMap::new(),
            order: Vec::new(),
            inboxes: HashMap::new(),
            missing_subreddits: Vec::new(),
            last_created: 0.0,
        }
    }
}

#[derive(Default)]
struct SimState {
    world: Mutex<World>,
    script: Mutex<VecDeque<RedditFault>>,
    token_script: Mutex<VecDeque<RedditFault>>,
    requests: Mutex<Vec<RecordedRequest>>,
    next_id: AtomicU64,
}

fn normalize(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

impl SimState {
    /// A fresh base-36 id, Reddit style.
    fn new_id(&self) -> String {
        // Time-based, so a sandbox restarted on the same database never reuses a stored fullname.
        let now_based = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as u64 * 1000)
            .unwrap_or_default();
        let _ = self.next_id.fetch_max(now_based, Ordering::Relaxed);
        let mut n = self.next_id.fetch_add(1, Ordering::Relaxed) + 36_u64.pow(5);
        let mut digits = Vec::new();
        while n > 0 {
            digits.push(char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
            n /= 36;
        }
        digits.iter().rev().collect()
    }
}

/// A running Reddit simulator. Clones share the server and its state; the server lives as long as
/// the tokio runtime it was started on.
#[derive(Clone)]
pub struct RedditSim {
    pub addr: SocketAddr,
    state: Arc<SimState>,
}

impl RedditSim {
    /// Binds 127.0.0.1 on an ephemeral port and serves on the current tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let state = Arc::new(SimState::default());
        let app = Router::new().fallback(handle).with_state(state.clone());
        let addr = super::serve(addr, app).await?;
        Ok(Self { addr, state })
    }

    /// Where the token endpoint lives (`www.reddit.com` in production).
    pub fn auth_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where the API lives (`oauth.reddit.com` in production). Same server.
    pub fn api_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers (or replaces) a script-app account.
    pub fn add_account(&self, username: &str, password: &str, client_id: &str, client_secret: &str) {
        let account = Account {
            password: password.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            revoked: false,
        };
        lock(&self.state.world).accounts.insert(username.to_owned(), account);
    }

    /// The account's tokens stop working and new grants get `invalid_grant`.
    pub fn revoke(&self, username: &str) {
        let mut world = lock(&self.state.world);
        if let Some(account) = world.accounts.get_mut(username) {
            account.revoked = true;
        }
        world.tokens.retain(|_, (owner, _)| owner != username);
    }

    /// Lifetime of tokens granted from now on (`expires_in` is its whole seconds).
    pub fn set_token_ttl(&self, ttl: Duration) {
        lock(&self.state.world).token_ttl = ttl;
    }

    /// Requests allowed per account per window; restarts every window.
    pub fn set_limit(&self, limit: u32, window: Duration) {
        let mut world = lock(&self.state.world);
        world.limit = limit;
        world.window = window;
        world.windows.clear();
    }

    /// Submissions to this subreddit get `SUBREDDIT_NOEXIST`.
    pub fn remove_subreddit(&self, name: &str) {
        lock(&self.state.world).missing_subreddits.push(name.to_ascii_lowercase());
    }

    /// `from` mentions `to_username` in a comment on a new thread of [`SIM_SUBREDDIT`]: the
    /// comment exists (see [`RedditSim::comments_by`]) and `to_username` gets an unread
    /// `username_mention`. Returns the comment's fullname.
    pub fn mention(&self, from: &str, to_username: &str, body: &str) -> String {
        let mut world = lock(&self.state.world);
        let link = create_submission(&self.state, &mut world, from, SIM_SUBREDDIT, &format!("Thread by {from}"), "");
        let comment = create_comment(&self.state, &mut world, from, &link, body, false);
        deliver(&mut world, to_username, &comment, "username_mention", "username mention");
        comment["name"].as_str().unwrap_or_default().to_owned()
    }

    /// `from` replies to an existing comment or submission; its author gets a `comment_reply` or
    /// `post_reply`. Returns the new comment's fullname, `None` if the parent is unknown.
    pub fn reply(&self, from: &str, parent_fullname: &str, body: &str) -> Option<String> {
        let mut world = lock(&self.state.world);
        let parent = world.things.get(parent_fullname)?.clone();
        let comment = create_comment(&self.state, &mut world, from, &parent, body, true);
        comment["name"].as_str().map(str::to_owned)
    }

    /// Sets the score (and `ups`) of a submission or comment. Returns `false` for an unknown one.
    pub fn set_score(&self, fullname: &str, score: i64) -> bool {
        let mut world = lock(&self.state.world);
        let Some(thing) = world.things.get_mut(fullname) else { return false };
        thing["score"] = json!(score);
        thing["ups"] = json!(score.max(0));
        true
    }

    /// Comment data objects by `username`, oldest first.
    pub fn comments_by(&self, username: &str) -> Vec<Value> {
        things_by(&lock(&self.state.world), username, "t1_")
    }

    /// Submission data objects by `username`, oldest first.
    pub fn submissions_by(&self, username: &str) -> Vec<Value> {
        things_by(&lock(&self.state.world), username, "t3_")
    }

    /// The inbox of `username` as listed (kind and data, newest first), read items included.
    pub fn inbox(&self, username: &str) -> Vec<Value> {
        let world = lock(&self.state.world);
        let entries = world.inboxes.get(username).map(Vec::as_slice).unwrap_or_default();
        entries.iter().rev().map(|entry| json!({"kind": entry.kind, "data": entry.data})).collect()
    }

    /// Puts a raw child (`{"kind": …, "data": …}`, any shape) in `username`'s inbox, e.g. one
    /// that lacks required fields. It is listed as unread unless its `data.new` is `false`.
    pub fn push_inbox(&self, username: &str, child: Value) {
        let kind = if child["kind"] == "t4" { "t4" } else { "t1" };
        let data = child.get("data").cloned().unwrap_or(child);
        lock(&self.state.world).inboxes.entry(username.to_owned()).or_default().push(InboxEntry { data, kind });
    }

    /// Queues faults for API requests, one per request.
    pub fn script(&self, faults: impl IntoIterator<Item = RedditFault>) {
        lock(&self.state.script).extend(faults);
    }

    /// Queues faults for token requests, one per request.
    pub fn script_token(&self, faults: impl IntoIterator<Item = RedditFault>) {
        lock(&self.state.token_script).extend(faults);
    }

    /// All requests received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }
}

fn things_by(world: &World, username: &str, prefix: &str) -> Vec<Value> {
    world
        .order
        .iter()
        .filter(|name| name.starts_with(prefix))
        .filter_map(|name| world.things.get(name))
        .filter(|data| data["author"] == username)
        .cloned()
        .collect()
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs() as f64).unwrap_or_default()
}

fn created(world: &mut World) -> f64 {
    // Whole seconds as Reddit sends them, never going backwards.
    let now = now_secs().max(world.last_created);
    world.last_created = now;
    now
}

fn html(text: &str) -> String {
    let escaped = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!("<!-- SC_OFF --><div class=\"md\"><p>{escaped}</p>\n</div><!-- SC_ON -->")
}

fn create_submission(
    state: &SimState,
    world: &mut World,
    author: &str,
    subreddit: &str,
    title: &str,
    text: &str,
) -> Value {
    let id = state.new_id();
    let name = format!("t3_{id}");
    let created = created(world);
    let slug: String =
        title.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(50).collect();
    let permalink = format!("/r/{subreddit}/comments/{id}/{slug}/");
    let data = json!({
        "id": id,
        "name": name,
        "author": author,
        "subreddit": subreddit,
        "subreddit_id": "t5_sim",
        "title": title,
        "selftext": text,
        "selftext_html": if text.is_empty() { Value::Null } else { Value::String(html(text)) },
        "is_self": true,
        "domain": format!("self.{subreddit}"),
        "permalink": permalink,
        "url": format!("https://www.reddit.com{permalink}"),
        "created": created,
        "created_utc": created,
        "num_comments": 0,
        "score": 1,
        "likes": true,
        "send_replies": true
    });
    world.things.insert(name.clone(), data.clone());
    world.order.push(name);
    data
}

/// Creates a comment under `parent` (a submission or comment data object); with `notify`, the
/// parent's author gets a reply in their inbox.
fn create_comment(
    state: &SimState,
    world: &mut World,
    author: &str,
    parent: &Value,
    body: &str,
    notify: bool,
) -> Value {
    let id = state.new_id();
    let name = format!("t1_{id}");
    let parent_name = parent["name"].as_str().unwrap_or_default().to_owned();
    let link_id = if parent_name.starts_with("t3_") {
        parent_name.clone()
    } else {
        parent["link_id"].as_str().unwrap_or_default().to_owned()
    };
    let subreddit = parent["subreddit"].as_str().unwrap_or(SIM_SUBREDDIT).to_owned();
    let link_title = world.things.get(&link_id).and_then(|link| link["title"].as_str()).unwrap_or_default().to_owned();
    let link_short = link_id.trim_start_matches("t3_").to_owned();
    let created = created(world);
    let data = json!({
        "subreddit_id": "t5_sim",
        "link_id": link_id,
        "link_title": link_title,
        "likes": true,
        "replies": "",
        "saved": false,
        "id": id,
        "gilded": 0,
        "archived": false,
        "author": author,
        "parent_id": parent_name,
        "score": 1,
        "body": body,
        "edited": false,
        "body_html": html(body),
        "stickied": false,
        "subreddit": subreddit,
        "score_hidden": false,
        "name": name,
        "permalink": format!("/r/{subreddit}/comments/{link_short}/_/{id}/"),
        "created": created,
        "created_utc": created,
        "ups": 1,
        "distinguished": null
    });
    world.things.insert(name.clone(), data.clone());
    world.order.push(name);
    if let Some(link) = world.things.get_mut(&link_id) {
        let count = link["num_comments"].as_u64().unwrap_or_default() + 1;
        link["num_comments"] = json!(count);
    }
    if notify {
        let parent_author = parent["author"].as_str().unwrap_or_default().to_owned();
        if !parent_author.is_empty() && parent_author != author {
            let (kind, subject) = if parent_name.starts_with("t3_") {
                ("post_reply", "post reply")
            } else {
                ("comment_reply", "comment reply")
            };
            deliver(world, &parent_author, &data, kind, subject);
        }
    }
    data
}

/// Puts an inbox item for `to` about `comment`, shaped like the recorded inbox listings (no
/// `link_id`: the submission is only in `context`).
fn deliver(world: &mut World, to: &str, comment: &Value, kind: &str, subject: &str) {
    let subreddit = comment["subreddit"].as_str().unwrap_or(SIM_SUBREDDIT);
    let link_short = comment["link_id"].as_str().unwrap_or_default().trim_start_matches("t3_");
    let id = comment["id"].as_str().unwrap_or_default();
    let data = json!({
        "first_message": null,
        "first_message_name": null,
        "subreddit": subreddit,
        "likes": null,
        "replies": "",
        "author_fullname": format!("t2_{}", comment["author"].as_str().unwrap_or_default()),
        "id": id,
        "subject": subject,
        "score": 1,
        "author": comment["author"],
        "num_comments": 1,
        "parent_id": comment["parent_id"],
        "subreddit_name_prefixed": format!("r/{subreddit}"),
        "new": true,
        "type": kind,
        "body": comment["body"],
        "link_title": comment["link_title"],
        "dest": to,
        "was_comment": true,
        "body_html": comment["body_html"],
        "name": comment["name"],
        "created": comment["created"],
        "created_utc": comment["created_utc"],
        "context": format!("/r/{subreddit}/comments/{link_short}/_/{id}/?context=3"),
        "distinguished": null
    });
    world.inboxes.entry(to.to_owned()).or_default().push(InboxEntry { data, kind: "t1" });
}

/// Decodes `application/x-www-form-urlencoded` (also query strings). Invalid escapes stay as is.
fn decode_form(input: &str) -> Vec<(String, String)> {
    fn decode(part: &str) -> String {
        let bytes = part.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = bytes
                        .get(i + 1..i + 3)
                        .filter(|pair| pair.iter().all(u8::is_ascii_hexdigit))
                        .and_then(|pair| std::str::from_utf8(pair).ok())
                        .and_then(|pair| u8::from_str_radix(pair, 16).ok());
                    match hex {
                        Some(byte) => {
                            out.push(byte);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                byte => out.push(byte),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    input
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => (decode(key), decode(value)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// Standard base64 (with or without padding); `None` on invalid input.
fn decode_base64(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in input.trim().trim_end_matches('=').bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let content_type = HeaderValue::from_static("application/json; charset=UTF-8");
    (status, [(header::CONTENT_TYPE, content_type)], body.into()).into_response()
}

fn error_status(status: StatusCode) -> Response {
    let message = status.canonical_reason().unwrap_or("Error");
    json_response(status, json!({"message": message, "error": status.as_u16()}).to_string())
}

fn api_errors(code: &str, message: &str, field: Option<&str>) -> Value {
    json!({"json": {"errors": [[code, message, field]]}})
}

/// Rate headers for one counted request; `None` when the window's budget is spent.
struct Rate {
    used: u32,
    remaining: u32,
    reset: u64,
    exhausted: bool,
}

fn count_request(world: &mut World, username: &str) -> Rate {
    let now = Instant::now();
    let (limit, window_len) = (world.limit, world.window);
    let window = world.windows.entry(username.to_owned()).or_insert(Window { started: now, used: 0 });
    if now.duration_since(window.started) >= window_len {
        *window = Window { started: now, used: 0 };
    }
    let exhausted = window.used >= limit;
    if !exhausted {
        window.used += 1;
    }
    let left = window_len.saturating_sub(now.duration_since(window.started));
    Rate {
        used: window.used,
        remaining: limit.saturating_sub(window.used),
        reset: left.as_secs() + u64::from(left.subsec_nanos() > 0),
        exhausted,
    }
}

fn with_rate(mut response: Response, rate: Option<&Rate>) -> Response {
    if let Some(rate) = rate {
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-used", HeaderValue::from(rate.used));
        if let Ok(value) = HeaderValue::from_str(&format!("{:.1}", f64::from(rate.remaining))) {
            headers.insert("x-ratelimit-remaining", value);
        }
        headers.insert("x-ratelimit-reset", HeaderValue::from(rate.reset));
    }
    response
}

async fn handle(
    State(state): State<Arc<SimState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = decode_form(uri.query().unwrap_or_default());
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    let form = if is_form { decode_form(&String::from_utf8_lossy(&body)) } else { Vec::new() };
    let names = super::recorded_headers(&headers);
    let request = RecordedRequest {
        at: Instant::now(),
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query,
        headers: names,
        form,
    };
    lock(&state.requests).push(request.clone());

    let user_agent = request.header("user-agent").unwrap_or_default();
    if user_agent.trim().is_empty() {
        return error_status(StatusCode::FORBIDDEN);
    }
    let route = request.route().to_owned();
    if route == "/api/v1/access_token" && method == Method::POST {
        return token(&state, &request).await;
    }
    let known = matches!(
        (method.as_str(), route.as_str()),
        ("POST", "/api/submit" | "/api/comment" | "/api/read_message")
            | ("GET", "/message/unread" | "/message/mentions" | "/message/inbox" | "/api/info")
    ) || (method == Method::GET && user_listing(&route).is_some());
    if !known {
        return error_status(StatusCode::NOT_FOUND);
    }
    let fault = lock(&state.script).pop_front();
    if let Some(RedditFault::Slow(delay)) = &fault {
        tokio::time::sleep(*delay).await;
    }

    let mut world = lock(&state.world);
    let username = request
        .header("authorization")
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|(_, token)| world.tokens.get(token.trim()))
        .filter(|(_, expires)| *expires > Instant::now())
        .map(|(username, _)| username.clone());
    let Some(username) = username else {
        let mut response = error_status(StatusCode::UNAUTHORIZED);
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"reddit\""));
        return response;
    };
    let rate = count_request(&mut world, &username);
    if rate.exhausted {
        return with_rate(error_status(StatusCode::TOO_MANY_REQUESTS), Some(&rate));
    }
    let response = match fault {
        Some(RedditFault::Status { status }) => {
            error_status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        }
        Some(RedditFault::MalformedJson) => json_response(StatusCode::OK, "{\"json\": {\"errors\": [], \"data\": {"),
        Some(RedditFault::ApiError { code, message }) => {
            json_response(StatusCode::OK, api_errors(&code, &message, None).to_string())
        }
        None | Some(RedditFault::Slow(_)) => {
            let body = api(&state, &mut world, &username, &method, &route, &request);
            json_response(StatusCode::OK, body.to_string())
        }
    };
    with_rate(response, Some(&rate))
}

/// `/user/{name}/comments` → (name, "t1_"), `/user/{name}/submitted` → (name, "t3_").
fn user_listing(route: &str) -> Option<(&str, &'static str)> {
    let rest = route.strip_prefix("/user/")?;
    let (name, what) = rest.split_once('/')?;
    match what {
        "comments" => Some((name, "t1_")),
        "submitted" => Some((name, "t3_")),
        _ => None,
    }
}

fn listing(children: Vec<Value>, limit: usize) -> Value {
    let total = children.len();
    let children: Vec<Value> = children.into_iter().take(limit).collect();
    let after = if total > children.len() { children.last().map(|child| child["data"]["name"].clone()) } else { None };
    json!({
        "kind": "Listing",
        "data": {"after": after, "dist": children.len(), "modhash": null, "geo_filter": "", "children": children, "before": null}
    })
}

fn api(
    state: &SimState,
    world: &mut World,
    username: &str,
    method: &Method,
    route: &str,
    request: &RecordedRequest,
) -> Value {
    let limit = request.query_value("limit").and_then(|value| value.parse::<usize>().ok()).unwrap_or(25).clamp(1, 100);
    let form = |name: &str| request.form_value(name).unwrap_or_default().to_owned();
    match (method.as_str(), route) {
        ("POST", "/api/submit") => {
            if form("api_type") != "json" {
                return json!({"jquery": [], "success": false});
            }
            let (subreddit, title, text) = (form("sr"), form("title"), form("text"));
            if form("kind") != "self" {
                return api_errors("INVALID_OPTION", "that option is not valid", Some("kind"));
            }
            if subreddit.is_empty() || world.missing_subreddits.contains(&subreddit.to_ascii_lowercase()) {
                return api_errors(
                    "SUBREDDIT_NOEXIST",
                    "Hmm, that community doesn't exist. Try checking the spelling.",
                    Some("sr"),
                );
            }
            if title.trim().is_empty() {
                return api_errors("NO_TEXT", "we need something here", Some("title"));
            }
            if title.chars().count() > 300 {
                return api_errors("TOO_LONG", "this is too long (max: 300)", Some("title"));
            }
            if text.chars().count() > 40_000 {
                return api_errors("TOO_LONG", "this is too long (max: 40000)", Some("text"));
            }
            let data = create_submission(state, world, username, &subreddit, &title, &text);
            json!({"json": {"errors": [], "data": {
                "url": data["url"], "drafts_count": 0, "id": data["id"], "name": data["name"]
            }}})
        }
        ("POST", "/api/comment") => {
            if form("api_type") != "json" {
                return json!({"jquery": [], "success": false});
            }
            let text = form("text");
            if text.trim().is_empty() {
                return api_errors("NO_TEXT", "we need something here", Some("text"));
            }
            if text.chars().count() > 10_000 {
                return api_errors("TOO_LONG", "this is too long (max: 10000)", Some("text"));
            }
            let Some(parent) = world.things.get(&form("thing_id")).cloned() else {
                return api_errors("DELETED_COMMENT", "that comment has been deleted", Some("parent"));
            };
            let data = create_comment(state, world, username, &parent, &text, true);
            json!({"json": {"errors": [], "data": {"things": [{"kind": "t1", "data": data}]}}})
        }
        ("POST", "/api/read_message") => {
            let ids = form("id");
            let ids: Vec<&str> = ids.split(',').map(str::trim).collect();
            if let Some(inbox) = world.inboxes.get_mut(username) {
                for entry in inbox.iter_mut().filter(|entry| ids.iter().any(|id| entry.data["name"] == *id)) {
                    entry.data["new"] = json!(false);
                }
            }
            json!({})
        }
        ("GET", "/message/unread" | "/message/mentions" | "/message/inbox") => {
            let entries = world.inboxes.get(username).map(Vec::as_slice).unwrap_or_default();
            let children = entries
                .iter()
                .rev()
                .filter(|entry| match route {
                    "/message/unread" => entry.data["new"] != false,
                    "/message/mentions" => entry.data["type"] == "username_mention",
                    _ => true,
                })
                .map(|entry| json!({"kind": entry.kind, "data": entry.data}))
                .collect();
            listing(children, limit)
        }
        ("GET", "/api/info") => {
            let ids = request.query_value("id").unwrap_or_default();
            let children = ids
                .split(',')
                .map(str::trim)
                .take(MAX_INFO)
                .filter_map(|name| {
                    let data = world.things.get(name)?;
                    Some(json!({"kind": name.get(..2).unwrap_or("t1"), "data": data}))
                })
                .collect();
            listing(children, MAX_INFO)
        }
        ("GET", _) => match user_listing(route) {
            Some((name, prefix)) => {
                let kind = &prefix[..2];
                let children = things_by(world, name, prefix)
                    .into_iter()
                    .rev()
                    .map(|data| json!({"kind": kind, "data": data}))
                    .collect();
                listing(children, limit)
            }
            None => json!({}),
        },
        _ => json!({}),
    }
}

async fn token(state: &SimState, request: &RecordedRequest) -> Response {
    let fault = lock(&state.token_script).pop_front();
    match fault {
        Some(RedditFault::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(RedditFault::Status { status }) => {
            return error_status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
        }
        Some(RedditFault::MalformedJson) => return json_response(StatusCode::OK, "{\"access_token\": "),
        Some(RedditFault::ApiError { code, .. }) => {
            return json_response(StatusCode::OK, json!({"error": code}).to_string());
        }
        None => {}
    }
    let credentials = request
        .header("authorization")
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, encoded)| decode_base64(encoded))
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|pair| pair.split_once(':').map(|(id, secret)| (id.to_owned(), secret.to_owned())));
    let mut world = lock(&state.world);
    let Some((client_id, client_secret)) = credentials else {
        return error_status(StatusCode::UNAUTHORIZED);
    };
    if !world.accounts.values().any(|account| account.client_id == client_id && account.client_secret == client_secret)
    {
        return error_status(StatusCode::UNAUTHORIZED);
    }
    if request.form_value("grant_type") != Some("password") {
        return json_response(StatusCode::OK, json!({"error": "unsupported_grant_type"}).to_string());
    }
    let username = request.form_value("username").unwrap_or_default().to_owned();
    let granted = world.accounts.get(&username).is_some_and(|account| {
        !account.revoked
            && account.client_id == client_id
            && Some(account.password.as_str()) == request.form_value("password")
    });
    if !granted {
        return json_response(StatusCode::OK, json!({"error": "invalid_grant"}).to_string());
    }
    let token = format!("sim-token-{}-{}", username, state.new_id());
    let ttl = world.token_ttl;
    world.tokens.insert(token.clone(), (username, Instant::now() + ttl));
    let body = json!({"access_token": token, "token_type": "bearer", "expires_in": ttl.as_secs(), "scope": "*"});
    json_response(StatusCode::OK, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_handles_plus_percent_and_bad_escapes() {
        let pairs = decode_form("a=b+c&text=100%25+sure%21&bad=%zz&tail=%4&empty");
        assert_eq!(
            pairs,
            [
                ("a".into(), "b c".into()),
                ("text".into(), "100% sure!".into()),
                ("bad".into(), "%zz".into()),
                ("tail".into(), "%4".into()),
                ("empty".into(), String::new())
            ]
        );
        assert_eq!(decode_form("x=%C3%A9"), [("x".into(), "é".into())]);
    }

    #[test]
    fn base64_decodes_basic_auth() {
        assert_eq!(decode_base64("aWQ6c2VjcmV0").unwrap(), b"id:secret");
        assert_eq!(decode_base64("YQ==").unwrap(), b"a");
        assert!(decode_base64("!!").is_none());
    }
}

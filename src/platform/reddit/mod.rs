//! The Reddit API client: a script app acting as one account.
//!
//! - Token: OAuth2 password grant (`POST {auth_base}/api/v1/access_token`, HTTP basic auth
//!   `client_id:client_secret`, form `grant_type=password&username&password`). It is kept behind
//!   a mutex with its expiry, granted again 60 s before it expires, and once more after a 401 (a
//!   second 401 is [`PlatformError::Auth`]).
//! - API calls go to `{api_base}` with `Authorization: bearer TOKEN`; every request (the token
//!   request too) carries the configured User-Agent; every call carries `raw_json=1` (so bodies
//!   come back unescaped), POSTs send `api_type=json`; paths are PRAW's (`/api/submit/`, …).
//! - Scores and comment counts of our own things come from `GET /api/info/?id=t3_…,t1_…` (100
//!   fullnames per request, as PRAW batches them).
//! - Every response's `x-ratelimit-*` headers are parsed ([`parse_reddit`]) and returned in
//!   [`RedditResponse::rate`]; the last one seen (errors included) is in
//!   [`RedditClient::last_rate`].
//! - Errors: 401/403 → Auth; 429 → RateLimited (until `x-ratelimit-reset`, else 60 s); 5xx,
//!   timeouts, connection errors and malformed JSON → Transient; other 4xx → Permanent; a 200 whose
//!   `json.errors` is not empty → RateLimited for `RATELIMIT` ("try again in 9 minutes"), else
//!   Permanent naming the error code (`SUBREDDIT_NOEXIST: …`). The token endpoint's refusals (401,
//!   403, 400, or a 200 `{"error": "invalid_grant"}`) are Auth.
//! - Secrets ([`Secret`]) are exposed only while building the token request; the access token is a
//!   `Secret` too. No error message carries a response body other than Reddit's error code and
//!   message.

mod platform;

pub use platform::{RedditAccount, RedditPlatform};

use std::fmt;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::Secret;
use crate::platform::PlatformError;
use crate::rate_limit::headers::{RateLimitSnapshot, parse_reddit};

/// Longest title Reddit accepts, in characters.
pub const MAX_TITLE_CHARS: usize = 300;
/// Longest comment body, in characters.
pub const MAX_COMMENT_CHARS: usize = 10_000;
/// Longest self-post body, in characters.
pub const MAX_SELFTEXT_CHARS: usize = 40_000;
/// How long before its expiry a token is replaced.
pub const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// Wait used for a 429 or a `RATELIMIT` error that says nothing about how long.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Ids per `read_message` request (as PRAW batches them).
const READ_BATCH: usize = 25;
/// Fullnames per `/api/info` request (Reddit's limit; PRAW batches by it too).
const INFO_BATCH: usize = 100;

#[derive(Debug, Clone)]
pub struct RedditClientConfig {
    /// `https://www.reddit.com`: where the token endpoint lives.
    pub auth_base_url: String,
    /// `https://oauth.reddit.com`: where the API lives.
    pub api_base_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub username: String,
    pub password: Secret,
    /// Required and descriptive, e.g. `chorus/0.1 (by u/name)`: Reddit throttles or refuses
    /// generic agents.
    pub user_agent: String,
    /// Whole-request timeout, token requests included.
    pub timeout: Duration,
}

/// A value and the rate-limit state its response reported.
#[derive(Debug, Clone)]
pub struct RedditResponse<T> {
    pub value: T,
    pub rate: Option<RateLimitSnapshot>,
}

/// A comment or private message from a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct RedditItem {
    /// `t1_…` (comment) or `t4_…` (message).
    pub fullname: String,
    pub author: String,
    pub body: String,
    pub subject: Option<String>,
    pub parent_fullname: Option<String>,
    /// The submission (`t3_…`) a comment belongs to: its `link_id`, or taken from `context` in
    /// inbox listings, which have no `link_id`.
    pub link_fullname: Option<String>,
    /// Inbox items: the permalink with `?context=3`.
    pub context: Option<String>,
    pub created_utc: f64,
    pub was_comment: bool,
}

// `created_utc` is always finite (items without a finite one are skipped), so equality is total.
impl Eq for RedditItem {}

/// Score and comment count of one submission or comment, from `/api/info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedditStats {
    /// `t3_…` or `t1_…`, as asked for.
    pub fullname: String,
    pub score: i64,
    /// A submission's `num_comments` (its whole thread); a comment's replies when the data lists
    /// them (`/api/info` sends `"replies": ""`), else 0.
    pub comments: i64,
}

/// An inbox listing, oldest first, and how many children were skipped for missing fields.
#[derive(Debug, Clone, Default)]
pub struct RedditInbox {
    pub items: Vec<RedditItem>,
    pub malformed: usize,
}

struct Token {
    access: Secret,
    refresh_at: Instant,
}

pub struct RedditClient {
    http: reqwest::Client,
    config: RedditClientConfig,
    token: Mutex<Option<Token>>,
    last_rate: StdMutex<Option<RateLimitSnapshot>>,
}

impl fmt::Debug for RedditClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedditClient")
            .field("api_base_url", &self.config.api_base_url)
            .field("auth_base_url", &self.config.auth_base_url)
            .field("username", &self.config.username)
            .field("user_agent", &self.config.user_agent)
            .field("client_secret", &self.config.client_secret)
            .field("password", &self.config.password)
            .finish_non_exhaustive()
    }
}

/// A response reduced to what classification needs.
struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

fn transport(what: &str, error: reqwest::Error) -> PlatformError {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    PlatformError::Transient(format!("reddit {what}: {kind}: {}", error.without_url()))
}

/// `retry_after` for a 429: the snapshot's reset, else `x-ratelimit-reset` alone, else 60 s.
fn retry_after(headers: &HeaderMap, rate: Option<RateLimitSnapshot>) -> Duration {
    rate.map(|rate| rate.reset_after)
        .or_else(|| {
            let value = headers.get("x-ratelimit-reset")?.to_str().ok()?.trim().parse::<f64>().ok()?;
            (value.is_finite() && value >= 0.0).then(|| Duration::from_secs_f64(value))
        })
        .filter(|wait| !wait.is_zero())
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

/// Reddit's own words from an error body (`reason`, `explanation`, `message`), never the body.
fn error_words(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    ["reason", "explanation", "message", "error"]
        .iter()
        .filter_map(|key| match &value[*key] {
            Value::String(text) => Some(text.chars().take(200).collect::<String>()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(": ")
}

/// "try again in 9 minutes", "take a break for 30 seconds": the first number with a unit.
pub fn parse_wait(message: &str) -> Option<Duration> {
    let words: Vec<String> = message
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .filter(|word| !word.is_empty())
        .map(|word| word.to_ascii_lowercase().trim_end_matches(['.', '!']).to_owned())
        .collect();
    words.windows(2).find_map(|pair| {
        let amount = pair[0].parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0)?;
        let unit = &pair[1];
        let seconds = if unit.starts_with("millisecond") || unit == "ms" {
            amount / 1000.0
        } else if unit.starts_with("second") || unit == "s" || unit == "secs" {
            amount
        } else if unit.starts_with("minute") || unit == "min" || unit == "mins" {
            amount * 60.0
        } else if unit.starts_with("hour") {
            amount * 3600.0
        } else {
            return None;
        };
        Some(Duration::from_secs_f64(seconds))
    })
}

/// A 200 with `json.errors`: `RATELIMIT` is RateLimited, anything else Permanent.
fn check_json_errors(value: &Value) -> Result<(), PlatformError> {
    let Some(errors) = value["json"]["errors"].as_array().filter(|errors| !errors.is_empty()) else {
        return Ok(());
    };
    let describe = |error: &Value| -> (String, String) {
        match error {
            Value::Array(parts) => (
                parts.first().and_then(Value::as_str).unwrap_or("UNKNOWN").to_owned(),
                parts.get(1).and_then(Value::as_str).unwrap_or_default().chars().take(200).collect(),
            ),
            Value::String(code) => (code.clone(), String::new()),
            _ => ("UNKNOWN".to_owned(), String::new()),
        }
    };
    if let Some(limited) = errors.iter().map(describe).find(|(code, _)| code == "RATELIMIT") {
        let from_field = value["json"]["ratelimit"]
            .as_f64()
            .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
            .map(Duration::from_secs_f64);
        let retry_after = from_field.or_else(|| parse_wait(&limited.1)).unwrap_or(DEFAULT_RETRY_AFTER);
        return Err(PlatformError::RateLimited { retry_after });
    }
    let (code, message) = describe(&errors[0]);
    Err(PlatformError::Permanent(if message.is_empty() { code } else { format!("{code}: {message}") }))
}

fn non_empty(value: &Value) -> Option<String> {
    value.as_str().filter(|text| !text.is_empty()).map(str::to_owned)
}

/// `/r/sub/comments/4b1tfm/title/d1680wu/?context=3` → `t3_4b1tfm`.
fn link_from_context(context: &str) -> Option<String> {
    let mut parts = context.split('/');
    parts.find(|part| *part == "comments")?;
    let id = parts.next().filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))?;
    Some(format!("t3_{id}"))
}

/// One listing child, `None` when a required field (fullname, author, body, created_utc) lacks.
fn parse_item(child: &Value) -> Option<RedditItem> {
    let kind = child["kind"].as_str()?;
    let data = child["data"].as_object()?;
    let fullname = non_empty(&data.get("name").cloned().unwrap_or_default()).or_else(|| {
        data.get("id").and_then(Value::as_str).filter(|id| !id.is_empty()).map(|id| format!("{kind}_{id}"))
    })?;
    let author = data.get("author")?.as_str()?.to_owned();
    let body = data.get("body")?.as_str()?.to_owned();
    let created_utc = data.get("created_utc")?.as_f64().filter(|secs| secs.is_finite())?;
    let field = |name: &str| data.get(name).and_then(non_empty);
    let context = field("context");
    let link_fullname = field("link_id").or_else(|| context.as_deref().and_then(link_from_context));
    Some(RedditItem {
        was_comment: data.get("was_comment").and_then(Value::as_bool).unwrap_or(kind == "t1"),
        fullname,
        author,
        body,
        subject: field("subject"),
        parent_fullname: field("parent_id"),
        link_fullname,
        context,
        created_utc,
    })
}

/// One submission child (`t3`): its title as `subject`, its self text as `body`.
fn parse_submission(child: &Value) -> Option<RedditItem> {
    let data = child["data"].as_object()?;
    let fullname = data.get("name").and_then(non_empty)?;
    Some(RedditItem {
        author: data.get("author")?.as_str()?.to_owned(),
        body: data.get("selftext").and_then(Value::as_str).unwrap_or_default().to_owned(),
        subject: data.get("title").and_then(non_empty),
        parent_fullname: None,
        link_fullname: Some(fullname.clone()),
        context: None,
        created_utc: data.get("created_utc")?.as_f64().filter(|secs| secs.is_finite())?,
        was_comment: false,
        fullname,
    })
}

/// A listing's items, oldest first (Reddit lists newest first), and the count of skipped children.
fn parse_listing(value: &Value) -> Result<RedditInbox, PlatformError> {
    let children = value["data"]["children"]
        .as_array()
        .ok_or_else(|| PlatformError::Transient("reddit listing without data.children".into()))?;
    let mut inbox = RedditInbox::default();
    for child in children.iter().rev() {
        match parse_item(child) {
            Some(item) => inbox.items.push(item),
            None => inbox.malformed += 1,
        }
    }
    inbox.items.sort_by(|a, b| a.created_utc.total_cmp(&b.created_utc));
    if inbox.malformed > 0 {
        tracing::warn!(skipped = inbox.malformed, "reddit listing children without the required fields");
    }
    Ok(inbox)
}

/// A number Reddit may send as an integer or a float (`"score": 1` / `"ups": 1.0`).
fn whole(value: Option<&Value>) -> Option<i64> {
    let value = value?;
    value.as_i64().or_else(|| value.as_f64().filter(|n| n.is_finite()).map(|n| n as i64))
}

/// A comment's direct replies as its data lists them: the `t1` children of its `replies` Listing
/// plus the ids a `more` child stands for; 0 when `replies` is not a Listing (`""`).
fn listed_replies(replies: Option<&Value>) -> i64 {
    let Some(children) = replies.and_then(|replies| replies["data"]["children"].as_array()) else {
        return 0;
    };
    children
        .iter()
        .map(|child| match child["kind"].as_str() {
            Some("t1") => 1,
            Some("more") => child["data"]["children"].as_array().map_or(0, |ids| ids.len() as i64),
            _ => 0,
        })
        .sum()
}

/// One `/api/info` child: a submission or a comment with a `name` and a `score`.
fn parse_stats(child: &Value) -> Option<RedditStats> {
    let kind = child["kind"].as_str()?;
    let data = child["data"].as_object()?;
    let fullname = data.get("name").and_then(non_empty)?;
    let score = whole(data.get("score"))?;
    let comments = match kind {
        "t3" => whole(data.get("num_comments")).unwrap_or(0),
        "t1" => listed_replies(data.get("replies")),
        _ => return None,
    };
    Some(RedditStats { fullname, score, comments })
}

fn check_chars(what: &str, text: &str, max: usize) -> Result<(), PlatformError> {
    let count = text.chars().count();
    if count > max {
        return Err(PlatformError::Permanent(format!("{what} is {count} characters, Reddit allows {max}")));
    }
    if text.trim().is_empty() {
        return Err(PlatformError::Permanent(format!("{what} is empty")));
    }
    Ok(())
}

impl RedditClient {
    /// Fails only if the HTTP client cannot be built (e.g. a User-Agent that is not a valid header
    /// value).
    pub fn new(config: RedditClientConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().user_agent(config.user_agent.clone()).timeout(config.timeout).build()?;
        Ok(Self { http, config, token: Mutex::new(None), last_rate: StdMutex::new(None) })
    }

    /// The rate-limit state of the last API response, whatever its status.
    pub fn last_rate(&self) -> Option<RateLimitSnapshot> {
        *crate::sync::lock(&self.last_rate)
    }

    /// Posts a self post; returns its `t3_` fullname.
    pub async fn submit_text(
        &self,
        subreddit: &str,
        title: &str,
        body: &str,
    ) -> Result<RedditResponse<String>, PlatformError> {
        check_chars("title", title, MAX_TITLE_CHARS)?;
        if body.chars().count() > MAX_SELFTEXT_CHARS {
            return Err(PlatformError::Permanent(format!(
                "self text is {} characters, Reddit allows {MAX_SELFTEXT_CHARS}",
                body.chars().count()
            )));
        }
        let subreddit = subreddit.trim().trim_start_matches('/').trim_start_matches("r/");
        if subreddit.is_empty() {
            return Err(PlatformError::Permanent("no subreddit to submit to".into()));
        }
        let form = [
            ("api_type", "json"),
            ("kind", "self"),
            ("sr", subreddit),
            ("title", title),
            ("text", body),
            ("resubmit", "true"),
            ("sendreplies", "true"),
        ];
        let (value, rate) = self.call(Method::POST, "/api/submit/", &[], Some(&form)).await?;
        check_json_errors(&value)?;
        let data = &value["json"]["data"];
        let name = non_empty(&data["name"])
            .or_else(|| non_empty(&data["id"]).map(|id| format!("t3_{id}")))
            .ok_or_else(|| PlatformError::Transient("reddit submit answered without json.data.name".into()))?;
        Ok(RedditResponse { value: name, rate })
    }

    /// Replies to a submission (`t3_`) or comment (`t1_`); returns the new comment's `t1_` fullname.
    pub async fn comment(&self, parent_fullname: &str, text: &str) -> Result<RedditResponse<String>, PlatformError> {
        check_chars("comment", text, MAX_COMMENT_CHARS)?;
        let form = [("api_type", "json"), ("thing_id", parent_fullname), ("text", text)];
        let (value, rate) = self.call(Method::POST, "/api/comment/", &[], Some(&form)).await?;
        check_json_errors(&value)?;
        let thing = &value["json"]["data"]["things"][0]["data"];
        let name = non_empty(&thing["name"])
            .or_else(|| non_empty(&thing["id"]).map(|id| format!("t1_{id}")))
            .ok_or_else(|| PlatformError::Transient("reddit comment answered without json.data.things".into()))?;
        Ok(RedditResponse { value: name, rate })
    }

    /// Unread inbox items (comment replies, mentions, messages), oldest first. Reading does not
    /// mark them read (`mark=false`): see [`RedditClient::mark_read`].
    pub async fn unread(&self, limit: u32) -> Result<RedditResponse<RedditInbox>, PlatformError> {
        self.inbox("/message/unread/", limit).await
    }

    /// Username mentions, read or not, oldest first.
    pub async fn mentions(&self, limit: u32) -> Result<RedditResponse<RedditInbox>, PlatformError> {
        self.inbox("/message/mentions/", limit).await
    }

    /// Marks inbox items read (`POST /api/read_message`, 25 ids per request). Nothing to mark
    /// sends nothing.
    pub async fn mark_read(&self, fullnames: &[String]) -> Result<RedditResponse<()>, PlatformError> {
        let mut rate = None;
        for batch in fullnames.chunks(READ_BATCH) {
            let ids = batch.join(",");
            let (_, batch_rate) =
                self.call(Method::POST, "/api/read_message/", &[], Some(&[("id", ids.as_str())])).await?;
            rate = batch_rate.or(rate);
        }
        Ok(RedditResponse { value: (), rate })
    }

    /// Score and comments of submissions (`t3_`) and comments (`t1_`) by fullname
    /// (`GET /api/info/?id=…`, 100 per request). Other fullnames are not asked for, repeated ones
    /// once; things Reddit does not list are absent. Stops at the first error.
    pub async fn info(&self, fullnames: &[String]) -> Result<RedditResponse<Vec<RedditStats>>, PlatformError> {
        let mut wanted: Vec<&str> = Vec::with_capacity(fullnames.len());
        for name in fullnames.iter().map(String::as_str) {
            let ours = name.starts_with("t1_") || name.starts_with("t3_");
            if ours && name.len() > 3 && !wanted.contains(&name) {
                wanted.push(name);
            }
        }
        let mut stats = Vec::with_capacity(wanted.len());
        let mut rate = None;
        let mut malformed = 0;
        for batch in wanted.chunks(INFO_BATCH) {
            let ids = batch.join(",");
            let (value, batch_rate) = self.call(Method::GET, "/api/info/", &[("id", ids.as_str())], None).await?;
            rate = batch_rate.or(rate);
            let children = value["data"]["children"]
                .as_array()
                .ok_or_else(|| PlatformError::Transient("reddit listing without data.children".into()))?;
            for child in children {
                match parse_stats(child) {
                    Some(found) if batch.contains(&found.fullname.as_str()) => stats.push(found),
                    _ => malformed += 1,
                }
            }
        }
        if malformed > 0 {
            tracing::warn!(skipped = malformed, "reddit info children without a name and a score");
        }
        Ok(RedditResponse { value: stats, rate })
    }

    /// The account's latest comments, oldest first (for reconciliation after a crash). Children
    /// without the required fields are skipped.
    pub async fn recent_comments(&self, limit: u32) -> Result<RedditResponse<Vec<RedditItem>>, PlatformError> {
        let path = format!("/user/{}/comments/", self.config.username);
        let limit = limit.clamp(1, 100).to_string();
        let query = [("limit", limit.as_str()), ("sort", "new")];
        let (value, rate) = self.call(Method::GET, &path, &query, None).await?;
        Ok(RedditResponse { value: parse_listing(&value)?.items, rate })
    }

    /// The account's recent self posts (`GET /user/{username}/submitted`), oldest first, as items
    /// whose `subject` is the title and `body` the text; for reconciliation.
    pub async fn recent_submissions(&self, limit: u32) -> Result<RedditResponse<Vec<RedditItem>>, PlatformError> {
        let path = format!("/user/{}/submitted/", self.config.username);
        let limit = limit.clamp(1, 100).to_string();
        let query = [("limit", limit.as_str()), ("sort", "new")];
        let (value, rate) = self.call(Method::GET, &path, &query, None).await?;
        let children = value["data"]["children"]
            .as_array()
            .ok_or_else(|| PlatformError::Transient("reddit listing without data.children".into()))?;
        let mut items: Vec<RedditItem> = children.iter().filter_map(parse_submission).collect();
        items.sort_by(|a, b| a.created_utc.total_cmp(&b.created_utc));
        Ok(RedditResponse { value: items, rate })
    }

    async fn inbox(&self, path: &str, limit: u32) -> Result<RedditResponse<RedditInbox>, PlatformError> {
        let limit = limit.clamp(1, 100).to_string();
        let query = [("limit", limit.as_str()), ("mark", "false")];
        let (value, rate) = self.call(Method::GET, path, &query, None).await?;
        Ok(RedditResponse { value: parse_listing(&value)?, rate })
    }

    /// One API call with a valid token; after a 401, one fresh grant and one more try.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
    ) -> Result<(Value, Option<RateLimitSnapshot>), PlatformError> {
        let token = self.access_token(None).await?;
        let mut raw = self.send(method.clone(), path, query, form, &token).await?;
        if raw.status == StatusCode::UNAUTHORIZED {
            let fresh = self.access_token(Some(&token)).await?;
            raw = self.send(method, path, query, form, &fresh).await?;
            if raw.status == StatusCode::UNAUTHORIZED {
                self.observe(&raw.headers);
                *self.token.lock().await = None;
                return Err(PlatformError::Auth(format!("reddit {path}: 401 with a freshly granted token")));
            }
        }
        let rate = self.observe(&raw.headers);
        let value = classify(path, raw, rate)?;
        Ok((value, rate))
    }

    fn observe(&self, headers: &HeaderMap) -> Option<RateLimitSnapshot> {
        let rate = parse_reddit(headers);
        if rate.is_some() {
            *crate::sync::lock(&self.last_rate) = rate;
        }
        rate
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
        token: &Secret,
    ) -> Result<Raw, PlatformError> {
        let url = format!("{}{path}", self.config.api_base_url.trim_end_matches('/'));
        let mut request = self.http.request(method, url).query(query).query(&[("raw_json", "1")]).header(
            reqwest::header::AUTHORIZATION,
            {
                let mut header = reqwest::header::HeaderValue::try_from(format!("bearer {}", token.expose()))
                    .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
                header.set_sensitive(true);
                header
            },
        );
        if let Some(form) = form {
            request = request.form(form);
        }
        let response = request.send().await.map_err(|error| transport(path, error))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|error| transport(path, error))?.to_vec();
        Ok(Raw { status, headers, body })
    }

    /// The current token, granting one if there is none or it is about to expire. With `failed`
    /// (a token the API just refused), grants a new one unless another call already replaced it.
    async fn access_token(&self, failed: Option<&Secret>) -> Result<Secret, PlatformError> {
        let mut slot = self.token.lock().await;
        if let Some(token) = slot.as_ref() {
            let fresh = Instant::now() < token.refresh_at;
            let refused = failed.is_some_and(|failed| *failed == token.access);
            if fresh && !refused {
                return Ok(token.access.clone());
            }
        }
        *slot = None;
        let token = self.grant().await?;
        let access = token.access.clone();
        *slot = Some(token);
        Ok(access)
    }

    async fn grant(&self) -> Result<Token, PlatformError> {
        let what = "token grant";
        let url = format!("{}/api/v1/access_token", self.config.auth_base_url.trim_end_matches('/'));
        let form = [
            ("grant_type", "password"),
            ("username", self.config.username.as_str()),
            ("password", self.config.password.expose()),
        ];
        let response = self
            .http
            .post(url)
            .basic_auth(&self.config.client_id, Some(self.config.client_secret.expose()))
            .form(&form)
            .send()
            .await
            .map_err(|error| transport(what, error))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|error| transport(what, error))?;
        let rate = self.observe(&headers);
        match status.as_u16() {
            200..=299 => {}
            429 => return Err(PlatformError::RateLimited { retry_after: retry_after(&headers, rate) }),
            500..=599 => return Err(PlatformError::Transient(format!("reddit {what}: HTTP {status}"))),
            _ => {
                let words = error_words(&body);
                return Err(PlatformError::Auth(format!("reddit {what} refused: HTTP {status} {words}")));
            }
        }
        let value: Value = serde_json::from_slice(&body)
            .map_err(|error| PlatformError::Transient(format!("reddit {what}: malformed JSON: {error}")))?;
        if let Some(error) = value["error"].as_str().or_else(|| value["error"].is_number().then_some("error")) {
            let error: String = error.chars().take(100).collect();
            return Err(PlatformError::Auth(format!("reddit {what} refused: {error}")));
        }
        let access = value["access_token"]
            .as_str()
            .filter(|token| !token.is_empty())
            .ok_or_else(|| PlatformError::Transient(format!("reddit {what}: no access_token in the answer")))?;
        let expires_in = value["expires_in"].as_f64().filter(|secs| secs.is_finite() && *secs > 0.0).unwrap_or(3600.0);
        let lifetime = Duration::from_secs_f64(expires_in).saturating_sub(TOKEN_MARGIN);
        Ok(Token { access: Secret::new(access), refresh_at: Instant::now() + lifetime })
    }
}

/// Status and body of an API response → its JSON, or the error class.
fn classify(path: &str, raw: Raw, rate: Option<RateLimitSnapshot>) -> Result<Value, PlatformError> {
    let status = raw.status;
    match status.as_u16() {
        200..=299 => {
            if raw.body.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            serde_json::from_slice(&raw.body)
                .map_err(|error| PlatformError::Transient(format!("reddit {path}: malformed JSON: {error}")))
        }
        401 | 403 => Err(PlatformError::Auth(format!("reddit {path}: HTTP {status}"))),
        429 => Err(PlatformError::RateLimited { retry_after: retry_after(&raw.headers, rate) }),
        408 | 500..=599 => Err(PlatformError::Transient(format!("reddit {path}: HTTP {status}"))),
        _ => {
            let words = error_words(&raw.body);
            Err(PlatformError::Permanent(format!("reddit {path}: HTTP {status} {words}").trim_end().to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn waits_are_read_from_reddit_messages() {
        assert_eq!(parse_wait("you are doing that too much. try again in 9 minutes."), Some(Duration::from_secs(540)));
        assert_eq!(parse_wait("try again in 1 minute"), Some(Duration::from_secs(60)));
        assert_eq!(parse_wait("Take a break for 30 seconds before trying again."), Some(Duration::from_secs(30)));
        assert_eq!(parse_wait("try again in 500 milliseconds"), Some(Duration::from_millis(500)));
        assert_eq!(parse_wait("you are doing that too much"), None);
    }

    #[test]
    fn json_errors_are_classified() {
        let limited = json!({"json": {"errors": [["RATELIMIT", "try again in 2 minutes.", "ratelimit"]]}});
        assert_eq!(
            check_json_errors(&limited),
            Err(PlatformError::RateLimited { retry_after: Duration::from_secs(120) })
        );
        let with_field =
            json!({"json": {"ratelimit": 42.0, "errors": [["RATELIMIT", "try again in 2 minutes.", "x"]]}});
        assert_eq!(
            check_json_errors(&with_field),
            Err(PlatformError::RateLimited { retry_after: Duration::from_secs(42) })
        );
        let vague = json!({"json": {"errors": [["RATELIMIT", "slow down", null]]}});
        assert_eq!(check_json_errors(&vague), Err(PlatformError::RateLimited { retry_after: DEFAULT_RETRY_AFTER }));
        let missing = json!({"json": {"errors": [["SUBREDDIT_NOEXIST", "that subreddit doesn't exist", "sr"]]}});
        assert!(
            matches!(check_json_errors(&missing), Err(PlatformError::Permanent(m)) if m.starts_with("SUBREDDIT_NOEXIST"))
        );
        assert_eq!(check_json_errors(&json!({"json": {"errors": []}})), Ok(()));
        assert_eq!(check_json_errors(&json!({"weird": true})), Ok(()));
    }

    #[test]
    fn info_children_give_score_and_comments() {
        let link = json!({"kind": "t3", "data": {"name": "t3_a", "score": 12, "num_comments": 4}});
        assert_eq!(parse_stats(&link), Some(RedditStats { fullname: "t3_a".into(), score: 12, comments: 4 }));
        let bare = json!({"kind": "t1", "data": {"name": "t1_b", "score": -2, "replies": ""}});
        assert_eq!(parse_stats(&bare), Some(RedditStats { fullname: "t1_b".into(), score: -2, comments: 0 }));
        let threaded = json!({"kind": "t1", "data": {"name": "t1_c", "score": 3.0, "replies": {"kind": "Listing",
            "data": {"children": [{"kind": "t1", "data": {}}, {"kind": "more", "data": {"count": 9, "children": ["x", "y"]}}]}}}});
        assert_eq!(parse_stats(&threaded).map(|s| (s.score, s.comments)), Some((3, 3)));
        assert_eq!(parse_stats(&json!({"kind": "t5", "data": {"name": "t5_s", "score": 1}})), None);
        assert_eq!(parse_stats(&json!({"kind": "t3", "data": {"name": "t3_d"}})), None, "no score");
    }

    #[test]
    fn context_gives_the_submission() {
        assert_eq!(
            link_from_context("/r/PRAW_73oy54eo3a/comments/5d7tk7/calling_test/da2g9oh/?context=3").as_deref(),
            Some("t3_5d7tk7")
        );
        assert_eq!(link_from_context("/message/messages/abc"), None);
        assert_eq!(link_from_context(""), None);
    }

    #[test]
    fn listing_children_missing_fields_are_counted_not_fatal() {
        let listing = json!({"kind": "Listing", "data": {"children": [
            {"kind": "t1", "data": {"name": "t1_b", "author": "x", "body": "newer", "created_utc": 20.0}},
            {"kind": "t1", "data": {"name": "t1_nobody", "author": "x", "created_utc": 15.0}},
            "garbage",
            {"kind": "t4", "data": {"id": "a", "author": "y", "body": "older", "created_utc": 10.0, "subject": "hi"}}
        ]}});
        let inbox = parse_listing(&listing).unwrap();
        assert_eq!(inbox.malformed, 2);
        assert_eq!(inbox.items.iter().map(|item| item.fullname.as_str()).collect::<Vec<_>>(), ["t4_a", "t1_b"]);
        assert!(!inbox.items[0].was_comment && inbox.items[1].was_comment);
        assert!(parse_listing(&json!({"json": {}})).is_err());
    }
}

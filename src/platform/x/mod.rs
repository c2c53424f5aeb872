//! The X (Twitter) API v2 client: the authenticated user, posting (single posts and threads),
//! mentions after a cursor, the account's recent posts and posts' public metrics, with OAuth 1.0a
//! (HMAC-SHA1) or OAuth 2.0 user-context bearer tokens (refreshed once on a 401 when a refresh token
//! is configured).
//!
//! Every response's `x-rate-limit-*` headers are parsed with [`parse_x`]; successful calls return
//! the snapshot in [`XResponse::rate`]. Errors are classified into [`PlatformError`]:
//! - 401 → `Auth` (OAuth 2.0 with a refresh token: refresh once, retry once, then `Auth`);
//! - 403 → `Auth`, except content refusals (duplicate content, reply to a deleted or invisible post),
//!   which are `Permanent`;
//! - 429 → `RateLimited` until `x-rate-limit-reset` (60 s when the header is missing);
//! - 5xx, 408, timeouts, connection errors and unparseable bodies → `Transient`;
//! - other 4xx → `Permanent`.
//!
//! Error details are a status and at most a short problem title: never a URL, a key or a body.
//!
//! Query parameters and fields follow the live API (`tweet.fields`, `public_metrics.retweet_count`),
//! which the published OpenAPI document (xdevplatform/xdk, v2.167) calls `post.fields` and
//! `repost_count`; see the contract tests in `tests/x.rs` and `tests/engagement.rs`.

mod platform;
pub mod text;

pub use platform::{MAX_WEIGHTED, XAccount, XPlatform};

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::header::{AUTHORIZATION, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::config::Secret;
use crate::platform::{PlatformError, transport_error};
use crate::rate_limit::headers::{RateLimitSnapshot, parse_x};

/// Fields asked for on every post lookup.
const TWEET_FIELDS: &str = "conversation_id,author_id,created_at,referenced_tweets";
/// Most post ids one `GET /2/tweets` takes.
const MAX_LOOKUP_IDS: usize = 100;
/// How many pages of mentions one call follows when there is a cursor.
const MAX_MENTION_PAGES: usize = 5;
/// Wait after a 429 without a usable `x-rate-limit-reset`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Longest problem title kept in an error detail.
const MAX_TITLE: usize = 80;

/// Where and how to reach X.
#[derive(Debug, Clone)]
pub struct XClientConfig {
    /// `https://api.x.com` (no trailing `/2`).
    pub base_url: String,
    pub auth: XAuth,
    /// Whole-request timeout.
    pub timeout: Duration,
}

/// User-context credentials. `Debug` shows no secret (they are [`Secret`]s).
#[derive(Debug, Clone)]
pub enum XAuth {
    /// OAuth 1.0a, signed with HMAC-SHA1.
    OAuth1 { consumer_key: Secret, consumer_secret: Secret, access_token: Secret, access_token_secret: Secret },
    /// OAuth 2.0 user token. With a `refresh_token`, a 401 triggers one refresh at
    /// `POST {base_url}/2/oauth2/token` (HTTP Basic with the client secret for a confidential client).
    OAuth2 { client_id: String, client_secret: Option<Secret>, access_token: Secret, refresh_token: Option<Secret> },
}

/// A successful call's value and what its response said about the rate limit.
#[derive(Debug, Clone)]
pub struct XResponse<T> {
    pub value: T,
    pub rate: Option<RateLimitSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XUser {
    pub id: String,
    pub username: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XTweet {
    pub id: String,
    pub text: String,
    pub author_id: Option<String>,
    /// From `includes.users` (mentions only).
    pub author_username: Option<String>,
    pub conversation_id: Option<String>,
    /// The post this one replies to (`referenced_tweets` of type `replied_to`).
    pub in_reply_to: Option<String>,
}

/// Mentions after a cursor.
#[derive(Debug, Clone, Default)]
pub struct XMentions {
    /// Oldest first.
    pub tweets: Vec<XTweet>,
    /// The cursor for the next call (the newest id seen, malformed posts included); `None` when
    /// there was nothing new — keep the previous cursor.
    pub newest_id: Option<String>,
    /// Posts skipped because they lacked an `id` or a `text`.
    pub malformed: usize,
}

/// A post's `public_metrics`, as X counts them when asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XPublicMetrics {
    pub like_count: i64,
    /// Every reply, the author's own (the next part of a thread) included.
    pub reply_count: i64,
    /// `retweet_count` in the live API, `repost_count` in the OpenAPI document; either is read.
    pub retweet_count: i64,
    pub quote_count: i64,
    /// `impression_count`, when X sends it.
    pub impression_count: Option<i64>,
}

/// Public metrics of posts looked up by id.
#[derive(Debug, Clone, Default)]
pub struct XLookup {
    /// By post id. Posts X no longer has (deleted, withheld, never existed: its `errors`) are absent.
    pub metrics: Vec<(String, XPublicMetrics)>,
    /// Posts skipped because they lacked an `id` or numeric `public_metrics`.
    pub malformed: usize,
}

/// OAuth 2.0 tokens as they stand (they rotate on refresh).
struct OAuth2Tokens {
    access: Secret,
    refresh: Option<Secret>,
}

enum Auth {
    OAuth1 { consumer_key: Secret, consumer_secret: Secret, access_token: Secret, access_token_secret: Secret },
    OAuth2 { client_id: String, client_secret: Option<Secret>, tokens: Mutex<OAuth2Tokens> },
}

/// The X API v2 client. Cheap to share behind an `Arc`; calls may run concurrently.
pub struct XClient {
    http: reqwest::Client,
    base_url: String,
    auth: Auth,
}

impl fmt::Debug for XClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.auth {
            Auth::OAuth1 { .. } => "OAuth1([redacted])".to_owned(),
            Auth::OAuth2 { client_id, .. } => format!("OAuth2(client_id={client_id}, tokens=[redacted])"),
        };
        f.debug_struct("XClient").field("base_url", &self.base_url).field("auth", &auth).finish()
    }
}

/// A response that came back (any status), its body read.
struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

fn malformed(what: &str) -> PlatformError {
    PlatformError::Transient(format!("malformed response: {what}"))
}

/// A short, safe title from an error body: the Problem `title`, else the first `errors[].title`
/// or `message`, else the OAuth `error` code. Dropped if it looks like it carries a URL.
fn problem_title(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let title = value
        .get("title")
        .and_then(Value::as_str)
        .or_else(|| {
            let first = value.get("errors")?.get(0)?;
            first.get("title").or_else(|| first.get("message")).and_then(Value::as_str)
        })
        .or_else(|| value.get("error").and_then(Value::as_str))?;
    let title: String = title.chars().filter(|c| !c.is_control()).take(MAX_TITLE).collect();
    (!title.is_empty() && !title.contains("://")).then_some(title)
}

/// The Problem `detail`, lowercased, for recognising content refusals.
fn problem_detail(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|value| value.get("detail").and_then(Value::as_str).map(str::to_lowercase))
        .unwrap_or_default()
}

fn describe(status: StatusCode, body: &[u8]) -> String {
    match problem_title(body) {
        Some(title) => format!("HTTP {}: {title}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// Classifies a non-success response.
fn classify(raw: &Raw, now: SystemTime) -> PlatformError {
    let status = raw.status;
    match status.as_u16() {
        401 => PlatformError::Auth(describe(status, &raw.body)),
        403 => {
            let detail = problem_detail(&raw.body);
            if detail.contains("duplicate content") {
                PlatformError::Permanent("HTTP 403: duplicate content".to_owned())
            } else if detail.contains("deleted or not visible") {
                PlatformError::Permanent("HTTP 403: replied-to post deleted or not visible".to_owned())
            } else {
                PlatformError::Auth(describe(status, &raw.body))
            }
        }
        429 => {
            let retry_after = parse_x(&raw.headers, now)
                .map(|snapshot| snapshot.reset_after.max(Duration::from_secs(1)))
                .unwrap_or(DEFAULT_RETRY_AFTER);
            PlatformError::RateLimited { retry_after }
        }
        408 | 500..=599 => PlatformError::Transient(describe(status, &raw.body)),
        _ => PlatformError::Permanent(describe(status, &raw.body)),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, PlatformError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.is_object() => Ok(value),
        Ok(_) => Err(malformed("not a JSON object")),
        Err(_) => Err(malformed("invalid JSON")),
    }
}

/// A post object, or `None` when it lacks a string `id` or `text`.
fn parse_tweet(value: &Value) -> Option<XTweet> {
    let string = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let in_reply_to = value.get("referenced_tweets").and_then(Value::as_array).and_then(|refs| {
        refs.iter()
            .find(|r| r.get("type").and_then(Value::as_str) == Some("replied_to"))
            .and_then(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
    });
    Some(XTweet {
        id: string("id")?,
        text: string("text")?,
        author_id: string("author_id"),
        author_username: None,
        conversation_id: string("conversation_id"),
        in_reply_to,
    })
}

/// A post object's `id` and `public_metrics`, or `None` when either is missing or not numeric.
fn parse_metrics(value: &Value) -> Option<(String, XPublicMetrics)> {
    let id = value.get("id")?.as_str()?.to_owned();
    let metrics = value.get("public_metrics")?;
    let count = |key: &str| metrics.get(key).and_then(Value::as_i64);
    let metrics = XPublicMetrics {
        like_count: count("like_count")?,
        reply_count: count("reply_count")?,
        retweet_count: count("retweet_count").or_else(|| count("repost_count"))?,
        quote_count: count("quote_count")?,
        impression_count: count("impression_count"),
    };
    Some((id, metrics))
}

/// Whether `id` can be a post id (`^[0-9]{1,19}$`); X refuses a whole lookup over one that cannot.
fn is_post_id(id: &str) -> bool {
    (1..=19).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

/// Post ids are decimal snowflakes: longer is newer, then lexical order.
fn id_key(id: &str) -> (usize, &str) {
    (id.len(), id)
}

/// A page of posts: `data` (absent when empty) and the `includes.users` usernames.
fn parse_page(body: &Value) -> Result<(Vec<XTweet>, usize), PlatformError> {
    let data = match body.get("data") {
        None | Some(Value::Null) => return Ok((Vec::new(), 0)),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(malformed("data is not a list")),
    };
    let users: Vec<(&str, &str)> = body
        .pointer("/includes/users")
        .and_then(Value::as_array)
        .map(|users| {
            users.iter().filter_map(|u| Some((u.get("id")?.as_str()?, u.get("username")?.as_str()?))).collect()
        })
        .unwrap_or_default();
    let mut tweets = Vec::with_capacity(data.len());
    let mut skipped = 0;
    for item in data {
        match parse_tweet(item) {
            Some(mut tweet) => {
                tweet.author_username = tweet
                    .author_id
                    .as_deref()
                    .and_then(|author| users.iter().find(|(id, _)| *id == author))
                    .map(|(_, username)| (*username).to_owned());
                tweets.push(tweet);
            }
            None => skipped += 1,
        }
    }
    Ok((tweets, skipped))
}

impl XClient {
    pub fn new(config: XClientConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("chorus/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let auth = match config.auth {
            XAuth::OAuth1 { consumer_key, consumer_secret, access_token, access_token_secret } => {
                Auth::OAuth1 { consumer_key, consumer_secret, access_token, access_token_secret }
            }
            XAuth::OAuth2 { client_id, client_secret, access_token, refresh_token } => Auth::OAuth2 {
                client_id,
                client_secret,
                tokens: Mutex::new(OAuth2Tokens { access: access_token, refresh: refresh_token }),
            },
        };
        Ok(Self { http, base_url: config.base_url.trim_end_matches('/').to_owned(), auth })
    }

    /// The OAuth 2.0 tokens currently in use (`None` for OAuth 1.0a). X rotates the refresh token
    /// on every refresh and the old one stops working: persist these after a refresh if the
    /// service must survive a restart.
    pub async fn current_oauth2_tokens(&self) -> Option<(Secret, Option<Secret>)> {
        match &self.auth {
            Auth::OAuth1 { .. } => None,
            Auth::OAuth2 { tokens, .. } => {
                let tokens = tokens.lock().await;
                Some((tokens.access.clone(), tokens.refresh.clone()))
            }
        }
    }

    /// The authenticated user.
    pub async fn me(&self) -> Result<XResponse<XUser>, PlatformError> {
        let (body, rate) = self.call(Method::GET, "/2/users/me", &[], None).await?;
        let user = body
            .get("data")
            .and_then(|data| {
                Some(XUser {
                    id: data.get("id")?.as_str()?.to_owned(),
                    username: data.get("username")?.as_str()?.to_owned(),
                })
            })
            .ok_or_else(|| malformed("no user"))?;
        Ok(XResponse { value: user, rate })
    }

    /// Publishes one post (a reply when `reply_to` is set) and returns its id.
    pub async fn post(&self, text: &str, reply_to: Option<&str>) -> Result<XResponse<String>, PlatformError> {
        let mut body = json!({ "text": text });
        if let Some(parent) = reply_to {
            body["reply"] = json!({ "in_reply_to_tweet_id": parent });
        }
        let (response, rate) = self.call(Method::POST, "/2/tweets", &[], Some(&body)).await?;
        let id = response.pointer("/data/id").and_then(Value::as_str).ok_or_else(|| malformed("no post id"))?;
        Ok(XResponse { value: id.to_owned(), rate })
    }

    /// Publishes `parts` in order, each replying to the previous one (the first to `reply_to`), and
    /// returns their ids. Stops at the first error and returns it: the parts already published stay
    /// published (their ids are logged), so a retry must reconcile with [`XClient::recent_tweets`]
    /// first — X refuses a repeated text as duplicate content (`Permanent`).
    pub async fn post_thread(
        &self,
        parts: &[String],
        reply_to: Option<&str>,
    ) -> Result<XResponse<Vec<String>>, PlatformError> {
        let mut ids: Vec<String> = Vec::with_capacity(parts.len());
        let mut rate = None;
        for part in parts {
            let parent = ids.last().map(String::as_str).or(reply_to);
            match self.post(part, parent).await {
                Ok(response) => {
                    ids.push(response.value);
                    rate = response.rate.or(rate);
                }
                Err(err) => {
                    if !ids.is_empty() {
                        tracing::warn!(published = ?ids, total = parts.len(), error = %err, "X thread interrupted");
                    }
                    return Err(err);
                }
            }
        }
        Ok(XResponse { value: ids, rate })
    }

    /// Mentions of `user_id` newer than `since_id`, oldest first. `max_results` is the page size
    /// (clamped to X's 5..=100). With a cursor, follows up to 5 pages so that a burst larger than a
    /// page is not skipped; without one, reads only the newest page (to set the cursor).
    pub async fn mentions(
        &self,
        user_id: &str,
        since_id: Option<&str>,
        max_results: u32,
    ) -> Result<XResponse<XMentions>, PlatformError> {
        let path = format!("/2/users/{}/mentions", encode_segment(user_id));
        let mut result = XMentions::default();
        let mut rate = None;
        let mut page_token: Option<String> = None;
        for page in 0..MAX_MENTION_PAGES {
            let mut query = vec![
                ("max_results", max_results.clamp(5, 100).to_string()),
                ("expansions", "author_id".to_owned()),
                ("tweet.fields", TWEET_FIELDS.to_owned()),
                ("user.fields", "username".to_owned()),
            ];
            if let Some(since) = since_id {
                query.push(("since_id", since.to_owned()));
            }
            if let Some(token) = &page_token {
                query.push(("pagination_token", token.clone()));
            }
            let (body, page_rate) = self.call(Method::GET, &path, &query, None).await?;
            rate = page_rate.or(rate);
            let (tweets, skipped) = parse_page(&body)?;
            result.malformed += skipped;
            result.tweets.extend(tweets);
            // The cursor: meta.newest_id of the first (newest) page, which counts malformed posts too.
            if page == 0 {
                result.newest_id = body.pointer("/meta/newest_id").and_then(Value::as_str).map(str::to_owned);
            }
            page_token = body.pointer("/meta/next_token").and_then(Value::as_str).map(str::to_owned);
            if since_id.is_none() || page_token.is_none() {
                break;
            }
            if page + 1 == MAX_MENTION_PAGES {
                tracing::warn!(
                    pages = MAX_MENTION_PAGES,
                    "more X mentions than read in one call; the oldest are skipped"
                );
            }
        }
        result.tweets.sort_by(|a, b| id_key(&a.id).cmp(&id_key(&b.id)));
        result.tweets.dedup_by(|a, b| a.id == b.id);
        if result.newest_id.is_none() {
            result.newest_id = result.tweets.last().map(|tweet| tweet.id.clone());
        }
        Ok(XResponse { value: result, rate })
    }

    /// The newest posts of `user_id` (newest first, as X returns them; `max_results` clamped to
    /// 5..=100), for reconciling a publish that may have landed. Malformed posts are skipped.
    pub async fn recent_tweets(
        &self,
        user_id: &str,
        max_results: u32,
    ) -> Result<XResponse<Vec<XTweet>>, PlatformError> {
        let path = format!("/2/users/{}/tweets", encode_segment(user_id));
        let query = [("max_results", max_results.clamp(5, 100).to_string()), ("tweet.fields", TWEET_FIELDS.to_owned())];
        let (body, rate) = self.call(Method::GET, &path, &query, None).await?;
        let (tweets, _) = parse_page(&body)?;
        Ok(XResponse { value: tweets, rate })
    }

    /// Public metrics of posts by id (`GET /2/tweets?ids=…&tweet.fields=public_metrics`), at most
    /// 100 ids per request, so more take several. Ids that cannot be post ids are not sent, and
    /// repeated ones once. Stops at the first error; the snapshot is the last response's.
    pub async fn public_metrics(&self, ids: &[String]) -> Result<XResponse<XLookup>, PlatformError> {
        let mut unique: Vec<&str> = Vec::with_capacity(ids.len());
        for id in ids.iter().map(String::as_str).filter(|id| is_post_id(id)) {
            if !unique.contains(&id) {
                unique.push(id);
            }
        }
        let mut lookup = XLookup::default();
        let mut rate = None;
        for batch in unique.chunks(MAX_LOOKUP_IDS) {
            let query = [("ids", batch.join(",")), ("tweet.fields", "public_metrics".to_owned())];
            let (body, batch_rate) = self.call(Method::GET, "/2/tweets", &query, None).await?;
            rate = batch_rate.or(rate);
            let data = match body.get("data") {
                None | Some(Value::Null) => continue, // every post of the batch is gone
                Some(Value::Array(items)) => items,
                Some(_) => return Err(malformed("data is not a list")),
            };
            for item in data {
                match parse_metrics(item) {
                    Some((id, metrics)) if batch.contains(&id.as_str()) => lookup.metrics.push((id, metrics)),
                    _ => lookup.malformed += 1,
                }
            }
        }
        Ok(XResponse { value: lookup, rate })
    }

    /// Sends a request, refreshing an OAuth 2.0 token once on a 401, and returns the JSON body of a
    /// success with the rate-limit snapshot.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<(Value, Option<RateLimitSnapshot>), PlatformError> {
        let mut refreshed = false;
        loop {
            let (raw, used_token) = self.send(&method, path, query, body).await?;
            let now = SystemTime::now();
            let rate = parse_x(&raw.headers, now);
            if raw.status.is_success() {
                return Ok((parse_json(&raw.body)?, rate));
            }
            if raw.status == StatusCode::UNAUTHORIZED
                && !refreshed
                && let Some(used) = used_token
                && self.refresh(&used).await?
            {
                refreshed = true;
                continue;
            }
            return Err(classify(&raw, now));
        }
    }

    /// One request. Returns the OAuth 2.0 access token it used, if any.
    async fn send(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<(Raw, Option<Secret>), PlatformError> {
        let url = format!("{}{path}", self.base_url);
        let mut request = self.http.request(method.clone(), &url).query(query);
        let mut used = None;
        match &self.auth {
            Auth::OAuth1 { consumer_key, consumer_secret, access_token, access_token_secret } => {
                let token = oauth1_request::Token::from_parts(
                    consumer_key.expose(),
                    consumer_secret.expose(),
                    access_token.expose(),
                    access_token_secret.expose(),
                );
                let mut builder = oauth1_request::Builder::with_token(token, oauth1_request::HmacSha1::new());
                builder.version(true);
                // The signature covers the query parameters, not the JSON body.
                let params = oauth1_request::ParameterList::new(
                    query.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<(&str, &str)>>(),
                );
                request = request.header(AUTHORIZATION, sensitive(builder.authorize(method.as_str(), &url, &params)));
            }
            Auth::OAuth2 { tokens, .. } => {
                let access = tokens.lock().await.access.clone();
                request = request.header(AUTHORIZATION, sensitive(format!("Bearer {}", access.expose())));
                used = Some(access);
            }
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|err| transport_error(&err))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|err| transport_error(&err))?.to_vec();
        Ok((Raw { status, headers, body }, used))
    }

    /// Refreshes the OAuth 2.0 tokens after `used` was refused. Returns whether a retry makes sense:
    /// true when the tokens changed (here or in a concurrent call), false without a refresh token.
    async fn refresh(&self, used: &Secret) -> Result<bool, PlatformError> {
        let Auth::OAuth2 { client_id, client_secret, tokens } = &self.auth else {
            return Ok(false);
        };
        let mut tokens = tokens.lock().await;
        if tokens.access != *used {
            return Ok(true); // another call refreshed meanwhile
        }
        let Some(refresh_token) = tokens.refresh.clone() else {
            return Ok(false);
        };
        let url = format!("{}/2/oauth2/token", self.base_url);
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
            ("client_id", client_id.as_str()),
        ];
        let mut request = self.http.post(&url).form(&form);
        if let Some(secret) = client_secret {
            request = request.basic_auth(client_id, Some(secret.expose()));
        }
        let response = request.send().await.map_err(|err| transport_error(&err))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|err| transport_error(&err))?.to_vec();
        if !status.is_success() {
            let raw = Raw { status, headers, body };
            let err = match status.as_u16() {
                400 | 401 | 403 => {
                    PlatformError::Auth(format!("token refresh refused ({})", describe(status, &raw.body)))
                }
                _ => classify(&raw, SystemTime::now()),
            };
            return Err(err);
        }
        let value = parse_json(&body)?;
        let access = value.get("access_token").and_then(Value::as_str).ok_or_else(|| malformed("no access token"))?;
        tokens.access = Secret::new(access);
        if let Some(refresh) = value.get("refresh_token").and_then(Value::as_str) {
            tokens.refresh = Some(Secret::new(refresh));
        }
        tracing::info!("X OAuth 2.0 access token refreshed");
        Ok(true)
    }
}

/// Percent-encodes a path segment (user ids are digits; anything else is escaped, never injected).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A header value holding credentials, marked sensitive (kept out of debug output). A value that
/// cannot be a header is sent empty: the server answers 401, which is the truth.
fn sensitive(value: String) -> reqwest::header::HeaderValue {
    let mut header =
        reqwest::header::HeaderValue::try_from(value).unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
    header.set_sensitive(true);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_short_and_never_urls() {
        assert_eq!(problem_title(br#"{"title":"Forbidden","detail":"x"}"#).as_deref(), Some("Forbidden"));
        assert_eq!(problem_title(br#"{"errors":[{"message":"Bad thing"}]}"#).as_deref(), Some("Bad thing"));
        assert_eq!(problem_title(br#"{"title":"see https://x.com/secret"}"#), None);
        assert_eq!(problem_title(b"not json"), None);
        assert_eq!(problem_title(format!(r#"{{"title":"{}"}}"#, "a".repeat(500)).as_bytes()).unwrap().len(), MAX_TITLE);
    }

    #[test]
    fn tweets_without_id_or_text_are_skipped() {
        let body = json!({"data": [{"id": "2", "text": "ok", "author_id": "9"}, {"id": "3"}, {"text": "x"}, 7],
            "includes": {"users": [{"id": "9", "username": "sam"}]}});
        let (tweets, skipped) = parse_page(&body).unwrap();
        assert_eq!(skipped, 3);
        assert_eq!(tweets[0].author_username.as_deref(), Some("sam"));
        assert!(parse_page(&json!({"data": {"id": "1"}})).is_err());
        assert_eq!(parse_page(&json!({"meta": {"result_count": 0}})).unwrap().0, vec![]);
    }

    #[test]
    fn public_metrics_read_either_repost_name_and_need_every_count() {
        let live = json!({"id": "7", "public_metrics": {"like_count": 3, "reply_count": 2, "retweet_count": 1,
            "quote_count": 4, "bookmark_count": 0, "impression_count": 90}});
        let (id, metrics) = parse_metrics(&live).unwrap();
        assert_eq!(id, "7");
        assert_eq!(
            metrics,
            XPublicMetrics {
                like_count: 3,
                reply_count: 2,
                retweet_count: 1,
                quote_count: 4,
                impression_count: Some(90)
            }
        );
        let documented = json!({"id": "8", "public_metrics": {"like_count": 0, "reply_count": 0, "repost_count": 5, "quote_count": 0}});
        let (_, metrics) = parse_metrics(&documented).unwrap();
        assert_eq!((metrics.retweet_count, metrics.impression_count), (5, None));
        assert!(parse_metrics(&json!({"id": "9", "text": "no metrics"})).is_none());
        assert!(parse_metrics(&json!({"id": "9", "public_metrics": {"like_count": "3"}})).is_none());
        assert!(
            is_post_id("1346889436626259968") && !is_post_id("") && !is_post_id("12a") && !is_post_id(&"1".repeat(20))
        );
    }

    #[test]
    fn ids_order_numerically() {
        let mut ids = vec!["100", "99", "1000", "101"];
        ids.sort_by(|a, b| id_key(a).cmp(&id_key(b)));
        assert_eq!(ids, vec!["99", "100", "101", "1000"]);
        assert_eq!(encode_segment("12/../x y"), "12%2F..%2Fx%20y");
    }
}

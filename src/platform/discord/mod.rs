//! Discord: our REST client ([`DiscordClient`]), the [`Platform`](super::Platform) adapter
//! ([`DiscordPlatform`]), the gateway connection on serenity (`gateway`) and message splitting
//! ([`text`]).
//!
//! Serenity's own rate limiter always talks to discord.com, so serenity is used for the gateway
//! only and every REST call goes through [`DiscordClient`], in production and in tests alike:
//! - before a request, a per-route gate (route template plus its major parameter, the channel)
//!   and the bot's global gate refuse it while the last response said nothing is left;
//! - after it, the `X-RateLimit-*` headers ([`parse_discord`]) update that gate;
//! - a 429 closes the route's gate — or the global one when the body says `global: true` — for
//!   the body's `retry_after` (seconds, fractional) and returns
//!   [`PlatformError::RateLimited`], which the Publisher waits out.
//!
//! Errors: 401 → `Auth`; 403, 404 and other 4xx → `Permanent` (that item, not the account);
//! 408, 5xx, timeouts and unparseable bodies → `Transient`. Details carry the status and
//! Discord's error code and message, never the token or a URL. Reading one message
//! ([`DiscordClient::message`]) is the exception: a 404 there means it is gone, and is `None`.

mod gateway;
mod platform;
pub mod text;

pub use platform::{DiscordAccount, DiscordPlatform};

use std::fmt;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::config::Secret;
use crate::metrics as m;
use crate::platform::gate::RateGate;
use crate::platform::{PlatformError, transport_error};
use crate::rate_limit::headers::{RateLimitSnapshot, parse_discord};

/// Discord's limit on one message's content, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2000;
/// The REST API version every route is under.
const API_PREFIX: &str = "/api/v10";
/// Wait after a 429 that says nothing usable about when to come back.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Longest Discord error message kept in an error detail.
const MAX_DETAIL: usize = 80;
/// The gate key of the bot's global limit.
const GLOBAL: &str = "global";

/// Where and how to reach Discord.
#[derive(Debug, Clone)]
pub struct DiscordClientConfig {
    /// `https://discord.com` (routes are under `/api/v10`).
    pub api_base_url: String,
    /// The bot token, without `Bot `.
    pub token: Secret,
    pub timeout: Duration,
}

/// A successful call's value and what its response said about the route's bucket.
#[derive(Debug, Clone)]
pub struct DiscordResponse<T> {
    pub value: T,
    pub rate: Option<RateLimitSnapshot>,
}

/// A message as the REST API returns it (the fields Chorus reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscordMessage {
    pub id: String,
    pub channel_id: String,
    pub author_id: String,
    pub content: String,
    /// The message this one replies to.
    pub reference: Option<String>,
    /// Reactions of every emoji, summed (`reactions[].count`).
    pub reactions: i64,
}

/// A message to send.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    pub content: &'a str,
    /// Shown as a reply to this message (in the same channel); no error if it was deleted.
    pub reply_to: Option<&'a str>,
    /// Discord remembers it for a few minutes and returns the earlier message instead of posting
    /// twice (`enforce_nonce`); at most 25 characters.
    pub nonce: &'a str,
}

/// The Discord REST client of one bot. Calls may run concurrently.
pub struct DiscordClient {
    http: reqwest::Client,
    base_url: String,
    token: Secret,
    gate: RateGate,
}

impl fmt::Debug for DiscordClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscordClient").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

impl DiscordClient {
    pub fn new(config: DiscordClientConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            // The form Discord asks bots to send.
            .user_agent(concat!(
                "DiscordBot (https://github.com/chorus-agents/chorus, ",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .build()?;
        Ok(Self {
            http,
            base_url: config.api_base_url.trim_end_matches('/').to_owned(),
            token: config.token,
            gate: RateGate::default(),
        })
    }

    /// The base URL, for serenity's `HttpBuilder::proxy` (its gateway bootstrap call).
    pub fn api_base_url(&self) -> &str {
        &self.base_url
    }

    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// The HTTP client, shared with serenity so there is one connection pool.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The bot's own user id (`GET /users/@me`).
    pub async fn me(&self) -> Result<DiscordResponse<String>, PlatformError> {
        let (body, rate) = self.request(Method::GET, "/users/@me", "", "/users/@me", None).await?;
        let id = body.get("id").and_then(Value::as_str).ok_or_else(|| malformed("user without an id"))?;
        Ok(DiscordResponse { value: id.to_owned(), rate })
    }

    /// The gateway URL to connect to (`GET /gateway/bot`, which also proves the token works).
    pub async fn gateway_url(&self) -> Result<String, PlatformError> {
        let (body, _) = self.request(Method::GET, "/gateway/bot", "", "/gateway/bot", None).await?;
        let url = body.get("url").and_then(Value::as_str).ok_or_else(|| malformed("gateway without a url"))?;
        Ok(url.to_owned())
    }

    /// Sends one message (`POST /channels/{id}/messages`). Mentions in the text never ping
    /// anyone (`allowed_mentions` is empty) except the author of the message replied to.
    pub async fn send_message(
        &self,
        channel_id: &str,
        message: NewMessage<'_>,
    ) -> Result<DiscordResponse<DiscordMessage>, PlatformError> {
        let mut body = json!({
            "content": message.content,
            "nonce": message.nonce,
            "enforce_nonce": true,
            "allowed_mentions": {"parse": [], "replied_user": true},
        });
        if let Some(reply_to) = message.reply_to {
            body["message_reference"] = json!({"message_id": reply_to, "fail_if_not_exists": false});
        }
        let path = format!("/channels/{channel_id}/messages");
        let (body, rate) =
            self.request(Method::POST, &path, channel_id, "/channels/{channel_id}/messages", Some(body)).await?;
        let message = parse_message(&body).ok_or_else(|| malformed("message without an id"))?;
        Ok(DiscordResponse { value: message, rate })
    }

    /// Shows "typing…" in a channel for about ten seconds (`POST /channels/{id}/typing`).
    pub async fn trigger_typing(&self, channel_id: &str) -> Result<(), PlatformError> {
        let path = format!("/channels/{channel_id}/typing");
        self.request(Method::POST, &path, channel_id, "/channels/{channel_id}/typing", None).await?;
        Ok(())
    }

    /// The channel's latest messages, newest first (`GET /channels/{id}/messages?limit=`);
    /// items that do not parse are skipped and counted.
    pub async fn recent_messages(
        &self,
        channel_id: &str,
        limit: u8,
    ) -> Result<DiscordResponse<Vec<DiscordMessage>>, PlatformError> {
        self.list_messages(channel_id, &format!("limit={}", limit.clamp(1, 100))).await
    }

    /// One message (`GET /channels/{id}/messages/{id}`); `None` when Discord no longer has it or
    /// the channel (a 404: deleted, or a channel the bot cannot see any more).
    pub async fn message(
        &self,
        channel_id: &str,
        message_id: &str,
    ) -> Result<DiscordResponse<Option<DiscordMessage>>, PlatformError> {
        let path = format!("/channels/{channel_id}/messages/{message_id}");
        let bucket = "/channels/{channel_id}/messages/{message_id}";
        match self.exchange(Method::GET, &path, channel_id, bucket, None).await? {
            Exchange::Answered(body, rate) => {
                let message = parse_message(&body).ok_or_else(|| malformed("message without an id"))?;
                Ok(DiscordResponse { value: Some(message), rate })
            }
            Exchange::NotFound { rate, .. } => Ok(DiscordResponse { value: None, rate }),
        }
    }

    /// Up to `limit` (1..=100) messages of the channel right after `after` (its next page, newest
    /// first: `GET /channels/{id}/messages?after=&limit=`); items that do not parse are skipped.
    pub async fn messages_after(
        &self,
        channel_id: &str,
        after: &str,
        limit: u8,
    ) -> Result<DiscordResponse<Vec<DiscordMessage>>, PlatformError> {
        self.list_messages(channel_id, &format!("after={after}&limit={}", limit.clamp(1, 100))).await
    }

    /// `GET /channels/{id}/messages?{query}`; items that do not parse are skipped and counted.
    async fn list_messages(
        &self,
        channel_id: &str,
        query: &str,
    ) -> Result<DiscordResponse<Vec<DiscordMessage>>, PlatformError> {
        let path = format!("/channels/{channel_id}/messages?{query}");
        let (body, rate) =
            self.request(Method::GET, &path, channel_id, "/channels/{channel_id}/messages", None).await?;
        let items = body.as_array().ok_or_else(|| malformed("message list is not an array"))?;
        let messages: Vec<DiscordMessage> = items.iter().filter_map(parse_message).collect();
        if messages.len() < items.len() {
            metrics::counter!(m::MALFORMED_PAYLOADS, "platform" => "discord")
                .increment((items.len() - messages.len()) as u64);
        }
        Ok(DiscordResponse { value: messages, rate })
    }

    /// `Bot <token>`, marked sensitive so no debug output or log of the request shows it.
    fn authorization(&self) -> HeaderValue {
        let mut value = HeaderValue::from_str(&format!("Bot {}", self.token.expose()))
            .unwrap_or_else(|_| HeaderValue::from_static("Bot invalid-token"));
        value.set_sensitive(true);
        value
    }

    /// One REST call through the gates. `bucket` names the route (its template) and `major` its
    /// major parameter: Discord limits each channel separately.
    async fn request(
        &self,
        method: Method,
        path: &str,
        major: &str,
        bucket: &str,
        body: Option<Value>,
    ) -> Result<(Value, Option<RateLimitSnapshot>), PlatformError> {
        match self.exchange(method, path, major, bucket, body).await? {
            Exchange::Answered(value, rate) => Ok((value, rate)),
            Exchange::NotFound { error, .. } => Err(error),
        }
    }

    /// [`DiscordClient::request`], with a 404 kept apart for the calls to which it means "gone".
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        major: &str,
        bucket: &str,
        body: Option<Value>,
    ) -> Result<Exchange, PlatformError> {
        let route = format!("{method} {bucket}:{major}");
        self.gate.check(GLOBAL)?;
        self.gate.check(&route)?;
        let mut request = self
            .http
            .request(method, format!("{}{API_PREFIX}{path}", self.base_url))
            .header(AUTHORIZATION, self.authorization());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|err| transport_error(&err))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|err| transport_error(&err))?;
        let rate = parse_discord(&headers);
        self.gate.observe(&route, rate);
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Exchange::Answered(Value::Null, rate));
            }
            let value = serde_json::from_slice(&bytes).map_err(|_| {
                metrics::counter!(m::MALFORMED_PAYLOADS, "platform" => "discord").increment(1);
                malformed("body is not JSON")
            })?;
            return Ok(Exchange::Answered(value, rate));
        }
        let error: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = retry_after(&error, &headers);
            let global = error.get("global").and_then(Value::as_bool).unwrap_or(false)
                || headers.get("x-ratelimit-global").is_some_and(|value| value.as_bytes() == b"true");
            let closed = RateLimitSnapshot { limit: None, remaining: 0, reset_after: retry_after };
            self.gate.observe(if global { GLOBAL } else { &route }, Some(closed));
            return Err(PlatformError::RateLimited { retry_after });
        }
        let error_class = classify(status, &error);
        if status == StatusCode::NOT_FOUND {
            return Ok(Exchange::NotFound { error: error_class, rate });
        }
        Err(error_class)
    }
}

/// How a REST call that got an HTTP answer ended, short of an error.
enum Exchange {
    /// A success: its JSON body (`null` when empty) and the bucket's state.
    Answered(Value, Option<RateLimitSnapshot>),
    /// A 404, as the error it is to most calls.
    NotFound { error: PlatformError, rate: Option<RateLimitSnapshot> },
}

/// `retry_after` from the body (seconds, fractional), else the `Retry-After` header.
fn retry_after(body: &Value, headers: &HeaderMap) -> Duration {
    let seconds = body.get("retry_after").and_then(Value::as_f64).or_else(|| {
        headers.get("retry-after").and_then(|value| value.to_str().ok()).and_then(|value| value.trim().parse().ok())
    });
    match seconds {
        Some(seconds) if seconds.is_finite() && seconds >= 0.0 => Duration::from_secs_f64(seconds.min(3600.0)),
        _ => DEFAULT_RETRY_AFTER,
    }
}

fn classify(status: StatusCode, body: &Value) -> PlatformError {
    let code = body.get("code").and_then(Value::as_u64).unwrap_or(0);
    let message: String = body
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DETAIL)
        .collect();
    let message = if message.contains("://") { String::new() } else { message };
    let detail = format!("discord {} (code {code}) {message}", status.as_u16()).trim_end().to_owned();
    match status.as_u16() {
        401 => PlatformError::Auth(detail),
        408 | 500..=599 => PlatformError::Transient(detail),
        _ => PlatformError::Permanent(detail),
    }
}

fn malformed(what: &str) -> PlatformError {
    PlatformError::Transient(format!("malformed discord response: {what}"))
}

fn parse_message(value: &Value) -> Option<DiscordMessage> {
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(DiscordMessage {
        id: text("id")?,
        channel_id: text("channel_id")?,
        author_id: value.get("author")?.get("id")?.as_str()?.to_owned(),
        content: text("content").unwrap_or_default(),
        reference: value
            .get("message_reference")
            .and_then(|reference| reference.get("message_id"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        reactions: value
            .get("reactions")
            .and_then(Value::as_array)
            .map(|reactions| reactions.iter().filter_map(|r| r.get("count").and_then(Value::as_i64)).sum())
            .unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_without_leaking_urls() {
        let unknown = json!({"message": "Unknown Channel", "code": 10003});
        assert_eq!(
            classify(StatusCode::NOT_FOUND, &unknown),
            PlatformError::Permanent("discord 404 (code 10003) Unknown Channel".into())
        );
        assert!(matches!(classify(StatusCode::UNAUTHORIZED, &Value::Null), PlatformError::Auth(_)));
        assert!(matches!(classify(StatusCode::BAD_GATEWAY, &Value::Null), PlatformError::Transient(_)));
        let sneaky = json!({"message": "see https://example.com/?token=abc", "code": 0});
        let PlatformError::Permanent(detail) = classify(StatusCode::FORBIDDEN, &sneaky) else { panic!() };
        assert!(!detail.contains("://"), "{detail}");
    }

    #[test]
    fn reactions_are_summed_over_emojis() {
        let message = json!({"id": "2", "channel_id": "1", "author": {"id": "9"}, "content": "hi",
            "reactions": [{"count": 3, "emoji": {"id": null, "name": "👍"}}, {"count": 2, "emoji": {"id": "5", "name": "party"}}]});
        assert_eq!(parse_message(&message).map(|m| m.reactions), Some(5));
        let plain = json!({"id": "2", "channel_id": "1", "author": {"id": "9"}, "content": "hi"});
        assert_eq!(parse_message(&plain).map(|m| m.reactions), Some(0));
    }

    #[test]
    fn retry_after_prefers_the_body_and_survives_nonsense() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&json!({"retry_after": 1.5}), &headers), Duration::from_millis(1500));
        assert_eq!(retry_after(&Value::Null, &headers), Duration::from_secs(7));
        assert_eq!(retry_after(&json!({"retry_after": -1.0}), &HeaderMap::new()), DEFAULT_RETRY_AFTER);
    }
}

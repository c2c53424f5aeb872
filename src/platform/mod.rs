//! Platforms: the one place that talks to a social network. Each platform implements
//! [`Platform`]; agents read mentions through it and the Publisher posts through it.
//!
//! Built: `local` (the built-in timeline, [`local`]), [`x`] and [`reddit`] (our own clients plus
//! their [`Platform`] adapters), and [`discord`] (a push platform: serenity's gateway delivers
//! messages through [`Platform::connect`], our own client sends), all built from the config by
//! [`connect`].

pub mod connect;
pub mod discord;
pub mod gate;
pub mod local;
pub mod reddit;
pub mod x;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::PlatformKind;
use crate::supervisor::AuthFailure;

/// Errors at the platform boundary, classified by what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// Timeouts, 5xx, connection errors: retry with backoff.
    #[error("platform unavailable: {0}")]
    Transient(String),
    /// 429 or an exhausted budget: wait at least this long.
    #[error("rate limited for {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// Credentials refused: the agent's circuit opens at once.
    #[error("authentication refused: {0}")]
    Auth(String),
    /// The platform refused this item for good (too long, forbidden…): do not retry it.
    #[error("refused by the platform: {0}")]
    Permanent(String),
}

impl AuthFailure for PlatformError {
    fn is_auth(&self) -> bool {
        matches!(self, PlatformError::Auth(_))
    }
}

/// A failed HTTP exchange as a retryable error that names what failed, never the URL.
pub(crate) fn transport_error(err: &reqwest::Error) -> PlatformError {
    PlatformError::Transient(transport_failure(err).to_owned())
}

/// What failed in an HTTP exchange (`timeout`, `connection failed`, `response body interrupted`
/// or `request failed`), for errors that must never carry the URL. Every HTTP client uses it.
pub(crate) fn transport_failure(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_body() || err.is_decode() {
        "response body interrupted"
    } else {
        "request failed"
    }
}

/// A message that mentions one of our accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    pub remote_id: String,
    pub author: String,
    pub text: String,
    /// The conversation it belongs to: the thread's root on X and Reddit, the channel and the
    /// author on Discord (each person has their own context with the persona).
    pub conversation: String,
    /// The platform says the author is a bot (the loop guard caps how often we answer one).
    pub from_bot: bool,
}

/// What a push platform's live connection reports to its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveEvent {
    /// Connected (again) as this user: a new session.
    Ready { user: String },
    /// The connection dropped and the session was resumed; nothing was missed.
    Resumed,
    /// A message the persona should answer.
    Mention(Mention),
    /// There are new mentions to read (platforms that push only a signal: read them now).
    Wake,
    /// The connection ended: `Ok` when it was asked to, else why it cannot go on.
    Closed(Result<(), PlatformError>),
}

/// Where a live connection sends its events; returns `false` once nobody listens.
pub type LiveSink = Arc<dyn Fn(LiveEvent) -> bool + Send + Sync>;

/// A running live connection, owned by its agent.
#[async_trait]
pub trait LiveConnection: Send + Sync {
    /// Closes the connection and waits (briefly) until it is down.
    async fn close(self: Box<Self>);
}

/// Mentions after a cursor, oldest first, and the cursor to read from next time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MentionBatch {
    pub mentions: Vec<Mention>,
    pub cursor: Option<String>,
    /// The page was full: more mentions wait after `cursor`, to read at once rather than at the
    /// next poll.
    pub more: bool,
}

/// Something to publish.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub idempotency_key: &'a str,
    pub text: &'a str,
    /// Remote id of the message this answers.
    pub reply_to: Option<&'a str>,
}

#[async_trait]
pub trait Platform: Send + Sync + 'static {
    fn kind(&self) -> PlatformKind;

    /// Opens `account`'s live connection (push platforms); mentions then arrive through `sink`
    /// and [`Platform::mentions`] is not polled. `None` for platforms that are polled.
    async fn connect(&self, _account: &str, _sink: LiveSink) -> Result<Option<Box<dyn LiveConnection>>, PlatformError> {
        Ok(None)
    }

    /// Whether the agent keeps polling while connected (the connection only wakes it early).
    fn polls_while_connected(&self) -> bool {
        false
    }

    /// Whether [`Platform::typing`] shows anything.
    fn shows_typing(&self) -> bool {
        false
    }

    /// Shows that `account` is writing an answer to `reply_to` (a few seconds; call again to
    /// keep it showing).
    async fn typing(&self, _account: &str, _reply_to: &str) -> Result<(), PlatformError> {
        Ok(())
    }

    /// The longest text one outbox item may carry (a platform may send it in several parts).
    fn max_text_chars(&self) -> usize {
        local::MAX_POST_CHARS
    }

    /// Whether a 429 concerns the whole account, so the Publisher empties the account's
    /// RateLimiter bucket (`BackOff`). Discord's are per route and channel: its client's gates
    /// hold them, and one channel's limit must not pause the bot's other channels.
    fn account_wide_rate_limits(&self) -> bool {
        true
    }

    /// Whether `account` publishes scheduled posts here (Discord needs a channel for them).
    fn posts_enabled(&self, _account: &str) -> bool {
        true
    }

    /// Mentions of `account` after `cursor`.
    async fn mentions(&self, account: &str, cursor: Option<&str>) -> Result<MentionBatch, PlatformError>;

    /// Whether [`Platform::acknowledge`] tells the platform anything: the agent calls it only
    /// then (it is a task of its own a batch of mentions).
    fn acknowledges(&self) -> bool {
        false
    }

    /// Tells the platform that mentions were stored (Reddit marks them read). Called after the
    /// cursor is saved, where [`Platform::acknowledges`]; a failure is logged and the mentions may
    /// be delivered again (they are stored once anyway).
    async fn acknowledge(&self, _account: &str, _remote_ids: &[String]) -> Result<(), PlatformError> {
        Ok(())
    }

    /// Publishes and returns the remote id.
    async fn publish(&self, account: &str, item: Outgoing<'_>) -> Result<String, PlatformError>;

    /// Whether [`Platform::engagement`] reports anything.
    fn measures_engagement(&self) -> bool {
        false
    }

    /// Engagement of `account`'s published items, by remote id (as [`Platform::publish`] returned
    /// them). Items the platform no longer has are left out.
    async fn engagement(
        &self,
        _account: &str,
        _remote_ids: &[String],
    ) -> Result<Vec<(String, Engagement)>, PlatformError> {
        Ok(Vec::new())
    }

    /// Looks for an earlier publish of the same intent (its key where the platform keeps one,
    /// else the account's recent posts with the same text and parent), for a row whose previous
    /// attempt may have landed before a crash. Returns its remote id.
    async fn find_published(&self, account: &str, item: Outgoing<'_>) -> Result<Option<String>, PlatformError>;
}

/// Engagement of one published item, as the platform reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Engagement {
    /// Likes (X), score (Reddit), reactions (Discord).
    pub likes: i64,
    /// Replies (X, Discord, local), comments (Reddit).
    pub replies: i64,
    /// Reposts and quotes (X).
    pub reposts: i64,
    /// Impressions, where the platform counts them (X, for the author).
    pub impressions: Option<i64>,
}

impl Engagement {
    /// One number to rank items by: likes + replies + reposts.
    pub fn score(&self) -> i64 {
        self.likes + self.replies + self.reposts
    }
}

/// The platforms of one service, by kind.
#[derive(Clone, Default)]
pub struct Platforms {
    by_kind: BTreeMap<PlatformKind, Arc<dyn Platform>>,
}

impl Platforms {
    pub fn insert(&mut self, platform: Arc<dyn Platform>) {
        self.by_kind.insert(platform.kind(), platform);
    }

    pub fn get(&self, kind: PlatformKind) -> Option<Arc<dyn Platform>> {
        self.by_kind.get(&kind).cloned()
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<dyn Platform>> {
        self.by_kind.iter().find(|(kind, _)| kind.as_str() == name).map(|(_, platform)| platform.clone())
    }
}

//! The provider boundary: request and response types, errors, and the [`Provider`] trait every
//! LLM backend implements.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::Persona;
use crate::supervisor::AuthFailure;

/// What a generation is for (a label on usage rows and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Reply,
    Post,
    /// A trading decision (one JSON object, see `trader::decision`).
    Trade,
    /// The policy review's tone check of a draft: `OK`, or `FLAG: <reason>`.
    Review,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Reply => "reply",
            Task::Post => "post",
            Task::Trade => "trade",
            Task::Review => "review",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into() }
    }
}

/// One generation request.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    pub persona: Arc<Persona>,
    pub task: Task,
    /// System prompt first, then context, then the message to answer (or the post brief).
    pub messages: Vec<ChatMessage>,
    /// Author of the message answered, for replies.
    pub reply_to_author: Option<String>,
    /// Varies deterministic providers between requests (derived from the idempotency key).
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub text: String,
    pub provider: String,
    pub model: String,
    pub tokens_in: u32,
    pub tokens_out: u32,
    /// The provider stopped for length (`finish_reason: "length"`, `stop_reason: "max_tokens"`).
    pub truncated: bool,
}

/// Vectors for a batch of texts, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub model: String,
    pub tokens: u32,
}

/// Errors of the LLM boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("provider {provider} timed out")]
    Timeout { provider: String },
    #[error("provider {provider} unavailable: {detail}")]
    Unavailable { provider: String, detail: String },
    #[error("provider {provider} rate limited; retry after {retry_after:?}")]
    RateLimited { provider: String, retry_after: Option<Duration> },
    #[error("provider {provider} refused the credentials")]
    Auth { provider: String },
    #[error("provider {provider} rejected the request: {detail}")]
    Rejected { provider: String, detail: String },
    #[error("provider {provider} sent a malformed response: {detail}")]
    Malformed { provider: String, detail: String },
    #[error("provider {provider} is saturated: its queue is full")]
    QueueFull { provider: String },
    #[error("provider {provider} is skipped: its circuit is open")]
    CircuitOpen { provider: String },
    #[error("budget exceeded: {detail}")]
    BudgetExceeded { detail: String },
    #[error("no provider named {0}")]
    UnknownProvider(String),
}

impl LlmError {
    /// A label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            LlmError::Timeout { .. } => "timeout",
            LlmError::Unavailable { .. } => "unavailable",
            LlmError::RateLimited { .. } => "rate_limited",
            LlmError::Auth { .. } => "auth",
            LlmError::Rejected { .. } => "rejected",
            LlmError::Malformed { .. } => "malformed",
            LlmError::QueueFull { .. } => "queue_full",
            LlmError::CircuitOpen { .. } => "circuit_open",
            LlmError::BudgetExceeded { .. } => "budget_exceeded",
            LlmError::UnknownProvider(_) => "unknown_provider",
        }
    }

    /// Worth trying the same provider again (after a backoff, never before a `Retry-After`).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LlmError::Timeout { .. }
                | LlmError::Unavailable { .. }
                | LlmError::RateLimited { .. }
                | LlmError::Malformed { .. }
        )
    }

    /// A sign the provider is unhealthy: counts towards opening its circuit breaker.
    pub fn is_provider_failure(&self) -> bool {
        matches!(
            self,
            LlmError::Timeout { .. }
                | LlmError::Unavailable { .. }
                | LlmError::Malformed { .. }
                | LlmError::Auth { .. }
        )
    }

    /// The request must not go to any other provider either.
    pub fn stops_the_chain(&self) -> bool {
        matches!(self, LlmError::BudgetExceeded { .. })
    }
}

impl AuthFailure for LlmError {
    fn is_auth(&self) -> bool {
        matches!(self, LlmError::Auth { .. })
    }
}

/// A chat model behind one wire format. One call is one HTTP request: retries, failover,
/// breakers, budgets and progressive token budgets are the pool's business.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn model(&self) -> &str;
    /// Generates with at most `max_tokens` output tokens. A stream that ends without its final
    /// event, or with a chunk that does not parse, is `LlmError::Malformed`, never a short text.
    async fn complete(&self, request: &CompletionRequest, max_tokens: u32) -> Result<Completion, LlmError>;
}

/// An embedding model (OpenAI-compatible `/embeddings`).
#[async_trait]
pub trait Embedder: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn model(&self) -> &str;
    async fn embed(&self, texts: &[String]) -> Result<Embeddings, LlmError>;
}

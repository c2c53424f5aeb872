//! A minimal OpenAI-compatible chat provider: `POST {base_url}/chat/completions`, not streaming.
//! Enough to point Chorus at a local server (Ollama, vLLM, llama.cpp server, LiteLLM) or a hosted
//! compatible API. Streaming, retries and failover policies beyond "next in chain" arrive with the
//! LlmPool issue.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::provider::{ChatMessage, Completion, CompletionRequest, LlmError, Provider};
use crate::config::Secret;

pub struct OpenAiCompatProvider {
    name: String,
    model: String,
    endpoint: String,
    api_key: Option<Secret>,
    max_tokens: u32,
    http: reqwest::Client,
}

impl OpenAiCompatProvider {
    pub fn new(
        name: &str,
        base_url: &str,
        model: &str,
        api_key: Option<Secret>,
        timeout: Duration,
        max_tokens: u32,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("chorus/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            name: name.to_owned(),
            model: model.to_owned(),
            endpoint: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key,
            max_tokens,
            http,
        })
    }
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    max_tokens: u32,
    stream: bool,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct Choice {
    message: ResponseMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ResponseMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

#[async_trait]
impl Provider for OpenAiCompatProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, LlmError> {
        let provider = || self.name.clone();
        let body =
            ChatRequest { model: &self.model, messages: &request.messages, max_tokens: self.max_tokens, stream: false };
        let mut call = self.http.post(&self.endpoint).json(&body);
        if let Some(key) = &self.api_key {
            call = call.bearer_auth(key.expose());
        }
        let response = call.send().await.map_err(|err| {
            if err.is_timeout() {
                LlmError::Timeout { provider: provider() }
            } else {
                LlmError::Unavailable { provider: provider(), detail: without_url(&err) }
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<f64>().ok())
                .map(Duration::from_secs_f64);
            return Err(match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => LlmError::Auth { provider: provider() },
                StatusCode::TOO_MANY_REQUESTS => LlmError::RateLimited { provider: provider(), retry_after },
                status if status.is_server_error() => {
                    LlmError::Unavailable { provider: provider(), detail: format!("HTTP {}", status.as_u16()) }
                }
                status => LlmError::Rejected { provider: provider(), detail: format!("HTTP {}", status.as_u16()) },
            });
        }
        let parsed: ChatResponse = response.json().await.map_err(|err| {
            if err.is_timeout() {
                LlmError::Timeout { provider: provider() }
            } else {
                LlmError::Malformed { provider: provider(), detail: without_url(&err) }
            }
        })?;
        let Some(choice) = parsed.choices.into_iter().next() else {
            return Err(LlmError::Malformed { provider: provider(), detail: "no choices".into() });
        };
        let text = choice.message.content.unwrap_or_default();
        let usage = parsed.usage.unwrap_or(Usage { prompt_tokens: 0, completion_tokens: 0 });
        Ok(Completion {
            text,
            provider: provider(),
            model: parsed.model.unwrap_or_else(|| self.model.clone()),
            tokens_in: usage.prompt_tokens,
            tokens_out: usage.completion_tokens,
            truncated: choice.finish_reason.as_deref() == Some("length"),
        })
    }
}

/// reqwest errors print the URL; keep only the kind of failure (URLs may carry credentials).
fn without_url(err: &reqwest::Error) -> String {
    let kind = if err.is_connect() {
        "connection failed"
    } else if err.is_decode() {
        "cannot decode the body"
    } else if err.is_body() {
        "body error"
    } else if err.is_request() {
        "request failed"
    } else {
        "http error"
    };
    kind.to_owned()
}

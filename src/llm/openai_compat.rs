//! OpenAI-compatible clients: chat completions (`POST {base_url}/chat/completions`, streaming or
//! not) and embeddings (`POST {base_url}/embeddings`). Enough to point Chorus at a local server
//! (Ollama, vLLM, llama.cpp server, LiteLLM) or a hosted compatible API.
//!
//! One call is one HTTP request; retries, failover and token budgets are the pool's business.
//! A stream that ends without `data: [DONE]`, or with a chunk that does not parse, is
//! [`LlmError::Malformed`], never a short text.

use std::fmt;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::header::AUTHORIZATION;
use serde::{Deserialize, Serialize};

use super::approximate_tokens;
use super::provider::{ChatMessage, Completion, CompletionRequest, Embedder, Embeddings, LlmError, Provider};
use super::sse;
use crate::config::{ProviderConfig, Secret};

/// A chat model behind an OpenAI-compatible `/chat/completions`.
pub struct OpenAiCompatProvider {
    name: String,
    model: String,
    endpoint: String,
    stream: bool,
    api_key: Option<Secret>,
    http: reqwest::Client,
}

impl OpenAiCompatProvider {
    /// A client of `config.base_url` for `config.model`, streaming when `config.stream`; each
    /// request is bounded by `config.timeout`. Sends `Authorization: Bearer KEY` when a key is given.
    pub fn new(name: &str, config: &ProviderConfig, api_key: Option<Secret>) -> Result<Self, reqwest::Error> {
        Ok(Self {
            name: name.to_owned(),
            model: config.model.clone().unwrap_or_default(),
            endpoint: sse::endpoint(config, "/chat/completions"),
            stream: config.stream,
            api_key,
            http: sse::client(config)?,
        })
    }
}

/// Redacts the key; leaves out the endpoint (URLs may carry credentials).
impl fmt::Debug for OpenAiCompatProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiCompatProvider")
            .field("name", &self.name)
            .field("model", &self.model)
            .field("stream", &self.stream)
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    max_tokens: u32,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    index: u32,
    message: ResponseMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ResponseMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

/// One `data:` chunk of a stream (`chat.completion.chunk`), or an error a server sends in-stream.
#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<StreamChoice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    error: Option<sse::ErrorObject>,
}

#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

/// What a response (streamed or not) came to.
struct Answer {
    text: String,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    model: Option<String>,
}

impl OpenAiCompatProvider {
    async fn send(&self, body: &ChatRequest<'_>) -> Result<reqwest::Response, LlmError> {
        let mut call = self.http.post(&self.endpoint).json(body);
        if let Some(key) = &self.api_key {
            call = call.header(AUTHORIZATION, sse::bearer(&self.name, key)?);
        }
        let response = call.send().await.map_err(|err| sse::send_error(&self.name, &err))?;
        sse::check_status(&self.name, response, self.api_key.as_ref()).await
    }

    async fn read_whole(&self, response: reqwest::Response) -> Result<Answer, LlmError> {
        let parsed: ChatResponse = sse::json_body(&self.name, response).await?;
        let Some(choice) = parsed.choices.into_iter().find(|choice| choice.index == 0) else {
            return Err(LlmError::Malformed { provider: self.name.clone(), detail: "no choices".into() });
        };
        Ok(Answer {
            text: choice.message.content.unwrap_or_default(),
            finish_reason: choice.finish_reason,
            usage: parsed.usage,
            model: parsed.model,
        })
    }

    async fn read_stream(&self, response: reqwest::Response) -> Result<Answer, LlmError> {
        let mut events = std::pin::pin!(sse::events(&self.name, response));
        let mut answer = Answer { text: String::new(), finish_reason: None, usage: None, model: None };
        while let Some(event) = events.next().await {
            let event = event?;
            let data = event.data.trim();
            if data == "[DONE]" {
                return Ok(answer);
            }
            if data.is_empty() {
                continue;
            }
            let chunk: StreamChunk = sse::parse_json(&self.name, data.as_bytes())?;
            if let Some(error) = &chunk.error {
                return Err(sse::stream_error(&self.name, error, self.api_key.as_ref()));
            }
            if event.event == "error" {
                return Err(sse::stream_error(&self.name, &sse::ErrorObject::default(), None));
            }
            for choice in chunk.choices.into_iter().filter(|choice| choice.index == 0) {
                if let Some(content) = choice.delta.and_then(|delta| delta.content) {
                    answer.text.push_str(&content);
                }
                if choice.finish_reason.is_some() {
                    answer.finish_reason = choice.finish_reason;
                }
            }
            if chunk.usage.is_some() {
                answer.usage = chunk.usage;
            }
            if chunk.model.is_some() {
                answer.model = chunk.model;
            }
        }
        Err(sse::ended_early(&self.name, "[DONE]"))
    }
}

#[async_trait]
impl Provider for OpenAiCompatProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn complete(&self, request: &CompletionRequest, max_tokens: u32) -> Result<Completion, LlmError> {
        let body = ChatRequest {
            model: &self.model,
            messages: &request.messages,
            max_tokens,
            stream: self.stream,
            stream_options: self.stream.then_some(StreamOptions { include_usage: true }),
        };
        let response = self.send(&body).await?;
        let answer = if self.stream { self.read_stream(response).await? } else { self.read_whole(response).await? };
        let (tokens_in, tokens_out) = match answer.usage {
            Some(usage) => (usage.prompt_tokens, usage.completion_tokens),
            None => (
                sse::tokens(request.messages.iter().map(|message| approximate_tokens(&message.content)).sum()),
                sse::tokens(approximate_tokens(&answer.text)),
            ),
        };
        Ok(Completion {
            provider: self.name.clone(),
            model: answer.model.filter(|model| !model.is_empty()).unwrap_or_else(|| self.model.clone()),
            tokens_in,
            tokens_out,
            truncated: answer.finish_reason.as_deref() == Some("length"),
            text: answer.text,
        })
    }
}

/// An embedding model behind an OpenAI-compatible `/embeddings`.
pub struct OpenAiEmbedder {
    name: String,
    model: String,
    endpoint: String,
    api_key: Option<Secret>,
    http: reqwest::Client,
}

impl OpenAiEmbedder {
    /// A client of `config.base_url`'s `/embeddings` for `model` (the provider's chat `model` is
    /// not used), bounded by `config.timeout`.
    pub fn new(
        name: &str,
        config: &ProviderConfig,
        model: &str,
        api_key: Option<Secret>,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            name: name.to_owned(),
            model: model.to_owned(),
            endpoint: sse::endpoint(config, "/embeddings"),
            api_key,
            http: sse::client(config)?,
        })
    }
}

/// Redacts the key; leaves out the endpoint (URLs may carry credentials).
impl fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("name", &self.name)
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct EmbeddingRequest<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
}

#[derive(Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingItem>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<EmbeddingUsage>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct EmbeddingUsage {
    #[serde(default)]
    prompt_tokens: Option<u32>,
    #[serde(default)]
    total_tokens: Option<u32>,
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    /// One vector per text, in input order (by the response's `index`), all of one dimension.
    async fn embed(&self, texts: &[String]) -> Result<Embeddings, LlmError> {
        if texts.is_empty() {
            return Ok(Embeddings { vectors: Vec::new(), model: self.model.clone(), tokens: 0 });
        }
        let body = EmbeddingRequest { model: &self.model, input: texts, encoding_format: "float" };
        let mut call = self.http.post(&self.endpoint).json(&body);
        if let Some(key) = &self.api_key {
            call = call.header(AUTHORIZATION, sse::bearer(&self.name, key)?);
        }
        let response = call.send().await.map_err(|err| sse::send_error(&self.name, &err))?;
        let response = sse::check_status(&self.name, response, self.api_key.as_ref()).await?;
        let parsed: EmbeddingResponse = sse::json_body(&self.name, response).await?;
        let malformed = |detail: String| LlmError::Malformed { provider: self.name.clone(), detail };
        if parsed.data.len() != texts.len() {
            return Err(malformed(format!("{} vectors for {} texts", parsed.data.len(), texts.len())));
        }
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for item in parsed.data {
            match vectors.get_mut(item.index) {
                Some(slot @ None) => *slot = Some(item.embedding),
                Some(Some(_)) => return Err(malformed(format!("index {} appears twice", item.index))),
                None => return Err(malformed(format!("index {} out of range", item.index))),
            }
        }
        let vectors: Vec<Vec<f32>> = vectors.into_iter().flatten().collect();
        let dimension = vectors[0].len();
        if dimension == 0 || vectors.iter().any(|vector| vector.len() != dimension) {
            return Err(malformed("vectors of differing or zero dimension".to_owned()));
        }
        let tokens = match parsed.usage.and_then(|usage| usage.prompt_tokens.or(usage.total_tokens)) {
            Some(tokens) => tokens,
            None => sse::tokens(texts.iter().map(|text| approximate_tokens(text)).sum()),
        };
        Ok(Embeddings {
            vectors,
            model: parsed.model.filter(|model| !model.is_empty()).unwrap_or_else(|| self.model.clone()),
            tokens,
        })
    }
}

//! The Anthropic Messages API: `POST {base_url}/v1/messages`, streaming or not, with `x-api-key`
//! and `anthropic-version` headers.
//!
//! System messages go to the top-level `system` string; the other turns keep their order, with
//! consecutive turns of one role merged and a placeholder user turn first when the conversation
//! would otherwise start with the assistant. A stream that ends without `message_stop`, or with an
//! event that does not parse, is [`LlmError::Malformed`]; an `error` event maps like an HTTP error
//! of its type.

use std::fmt;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::header::HeaderName;
use serde::{Deserialize, Serialize};

use super::approximate_tokens;
use super::provider::{ChatMessage, Completion, CompletionRequest, LlmError, Provider, Role};
use super::sse;
use crate::config::{ProviderConfig, Secret};

/// The user turn put first when a conversation would start with the assistant.
pub(crate) const CONTINUES: &str = "(conversation continues)";

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");

/// A Claude model behind the Messages API.
pub struct AnthropicProvider {
    name: String,
    model: String,
    endpoint: String,
    version: String,
    stream: bool,
    api_key: Option<Secret>,
    http: reqwest::Client,
}

impl AnthropicProvider {
    /// A client of `config.base_url` (`/v1/messages` is appended) for `config.model`, sending
    /// `anthropic-version: config.anthropic_version` and, when a key is given, `x-api-key`;
    /// streaming when `config.stream`; each request bounded by `config.timeout`.
    pub fn new(name: &str, config: &ProviderConfig, api_key: Option<Secret>) -> Result<Self, reqwest::Error> {
        Ok(Self {
            name: name.to_owned(),
            model: config.model.clone().unwrap_or_default(),
            endpoint: sse::endpoint(config, "/v1/messages"),
            version: config.anthropic_version.clone(),
            stream: config.stream,
            api_key,
            http: sse::client(config)?,
        })
    }
}

/// Redacts the key; leaves out the endpoint (URLs may carry credentials).
impl fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicProvider")
            .field("name", &self.name)
            .field("model", &self.model)
            .field("version", &self.version)
            .field("stream", &self.stream)
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Debug, PartialEq, Eq)]
struct Turn {
    role: &'static str,
    content: String,
}

#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<Turn>,
    stream: bool,
}

/// Splits a conversation into the `system` string and alternating turns that start with the user.
fn shape(messages: &[ChatMessage]) -> (Option<String>, Vec<Turn>) {
    let mut system: Vec<&str> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for message in messages {
        let role = match message.role {
            Role::System => {
                system.push(&message.content);
                continue;
            }
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        match turns.last_mut() {
            Some(last) if last.role == role => {
                last.content.push_str("\n\n");
                last.content.push_str(&message.content);
            }
            _ => turns.push(Turn { role, content: message.content.clone() }),
        }
    }
    if turns.first().is_none_or(|first| first.role != "user") {
        turns.insert(0, Turn { role: "user", content: CONTINUES.to_owned() });
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    (system, turns)
}

#[derive(Deserialize)]
struct MessagesResponse {
    #[serde(default)]
    content: Vec<ContentBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<u32>,
    #[serde(default)]
    output_tokens: Option<u32>,
}

/// One event of a stream; which fields are present depends on `type`.
#[derive(Deserialize)]
struct StreamEvent {
    #[serde(rename = "type")]
    kind: String,
    /// `message_start`.
    #[serde(default)]
    message: Option<MessagesResponse>,
    /// `content_block_delta` (`text_delta`) and `message_delta` (`stop_reason`).
    #[serde(default)]
    delta: Option<StreamDelta>,
    /// `message_delta`.
    #[serde(default)]
    usage: Option<Usage>,
    /// `error`.
    #[serde(default)]
    error: Option<sse::ErrorObject>,
}

#[derive(Deserialize)]
struct StreamDelta {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

/// What a response (streamed or not) came to.
#[derive(Default)]
struct Answer {
    text: String,
    stop_reason: Option<String>,
    input_tokens: Option<u32>,
    output_tokens: Option<u32>,
    model: Option<String>,
}

impl AnthropicProvider {
    async fn send(&self, body: &MessagesRequest<'_>) -> Result<reqwest::Response, LlmError> {
        let mut call = self.http.post(&self.endpoint).header(ANTHROPIC_VERSION, &self.version).json(body);
        if let Some(key) = &self.api_key {
            call = call.header(X_API_KEY, sse::key_header(&self.name, key.expose().to_owned())?);
        }
        let response = call.send().await.map_err(|err| sse::send_error(&self.name, &err))?;
        sse::check_status(&self.name, response, self.api_key.as_ref()).await
    }

    async fn read_whole(&self, response: reqwest::Response) -> Result<Answer, LlmError> {
        let parsed: MessagesResponse = sse::json_body(&self.name, response).await?;
        let usage = parsed.usage.unwrap_or_default();
        Ok(Answer {
            text: parsed
                .content
                .into_iter()
                .filter(|block| block.kind == "text")
                .filter_map(|block| block.text)
                .collect(),
            stop_reason: parsed.stop_reason,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            model: parsed.model,
        })
    }

    async fn read_stream(&self, response: reqwest::Response) -> Result<Answer, LlmError> {
        let mut events = std::pin::pin!(sse::events(&self.name, response));
        let mut answer = Answer::default();
        while let Some(event) = events.next().await {
            let event = event?;
            if event.data.trim().is_empty() {
                continue;
            }
            let parsed: StreamEvent = sse::parse_json(&self.name, event.data.as_bytes())?;
            let kind = if parsed.kind.is_empty() { event.event.as_str() } else { parsed.kind.as_str() };
            match kind {
                "message_start" => {
                    if let Some(message) = parsed.message {
                        let usage = message.usage.unwrap_or_default();
                        answer.input_tokens = usage.input_tokens.or(answer.input_tokens);
                        answer.output_tokens = usage.output_tokens.or(answer.output_tokens);
                        answer.model = message.model;
                    }
                }
                "content_block_delta" => {
                    if let Some(delta) = parsed.delta
                        && delta.kind.as_deref().is_none_or(|kind| kind == "text_delta")
                        && let Some(text) = delta.text
                    {
                        answer.text.push_str(&text);
                    }
                }
                "message_delta" => {
                    if let Some(stop_reason) = parsed.delta.and_then(|delta| delta.stop_reason) {
                        answer.stop_reason = Some(stop_reason);
                    }
                    if let Some(usage) = parsed.usage {
                        answer.input_tokens = usage.input_tokens.or(answer.input_tokens);
                        answer.output_tokens = usage.output_tokens.or(answer.output_tokens);
                    }
                }
                "message_stop" => return Ok(answer),
                "error" => {
                    let error = parsed.error.unwrap_or_default();
                    return Err(sse::stream_error(&self.name, &error, self.api_key.as_ref()));
                }
                // ping, content_block_start/stop, and event types added later.
                _ => {}
            }
        }
        Err(sse::ended_early(&self.name, "message_stop"))
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn complete(&self, request: &CompletionRequest, max_tokens: u32) -> Result<Completion, LlmError> {
        let (system, messages) = shape(&request.messages);
        let body = MessagesRequest {
            model: &self.model,
            max_tokens: max_tokens.max(1),
            system,
            messages,
            stream: self.stream,
        };
        let response = self.send(&body).await?;
        let answer = if self.stream { self.read_stream(response).await? } else { self.read_whole(response).await? };
        let tokens_in = answer.input_tokens.unwrap_or_else(|| {
            sse::tokens(request.messages.iter().map(|message| approximate_tokens(&message.content)).sum())
        });
        let tokens_out = answer.output_tokens.unwrap_or_else(|| sse::tokens(approximate_tokens(&answer.text)));
        Ok(Completion {
            provider: self.name.clone(),
            model: answer.model.filter(|model| !model.is_empty()).unwrap_or_else(|| self.model.clone()),
            tokens_in,
            tokens_out,
            truncated: answer.stop_reason.as_deref() == Some("max_tokens"),
            text: answer.text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: &'static str, content: &str) -> Turn {
        Turn { role, content: content.to_owned() }
    }

    #[test]
    fn system_goes_up_and_turns_alternate_from_the_user() {
        let (system, turns) = shape(&[
            ChatMessage::new(Role::System, "You are Ada."),
            ChatMessage::new(Role::Assistant, "Earlier post."),
            ChatMessage::new(Role::System, "Be brief."),
            ChatMessage::new(Role::User, "a"),
            ChatMessage::new(Role::User, "b"),
            ChatMessage::new(Role::Assistant, "c"),
        ]);
        assert_eq!(system.as_deref(), Some("You are Ada.\n\nBe brief."));
        assert_eq!(
            turns,
            [
                turn("user", CONTINUES),
                turn("assistant", "Earlier post."),
                turn("user", "a\n\nb"),
                turn("assistant", "c")
            ]
        );
    }

    #[test]
    fn a_plain_conversation_is_unchanged_and_an_empty_one_gets_a_user_turn() {
        let (system, turns) = shape(&[ChatMessage::new(Role::User, "hi")]);
        assert_eq!((system, turns), (None, vec![turn("user", "hi")]));
        let (system, turns) = shape(&[ChatMessage::new(Role::System, "s")]);
        assert_eq!((system.as_deref(), turns), (Some("s"), vec![turn("user", CONTINUES)]));
    }
}

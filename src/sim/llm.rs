//! The LLM simulator: an HTTP server on 127.0.0.1 speaking the three wire formats Chorus uses —
//! OpenAI-compatible chat completions (`POST /v1/chat/completions`, streaming and not), OpenAI
//! embeddings (`POST /v1/embeddings`) and Anthropic Messages (`POST /v1/messages`, streaming and
//! not) — with deterministic answers, scripted faults and a record of every request.
//!
//! The contract (shared with the LLM clients) is:
//! - The reply is `Simulated answer to: <last user message, trailing .?! removed>.`; usage counts
//!   `chars / 4 + 1` prompt tokens (all message contents, and the Anthropic `system` prompt) and one
//!   completion token per word of the reply. A stream sends one chunk per word.
//! - [`LlmSim::require_max_tokens`] sets a ceiling: a request whose `max_tokens` is below it gets its
//!   reply cut to `max(1, max_tokens / 64)` words, without final punctuation, and finishes with
//!   `length` / `max_tokens`.
//! - [`LlmSim::reply_with`] queues exact reply texts: each completion pops the next one instead of
//!   the simulated answer (a model that writes exactly this; cut like any reply when over the
//!   ceiling).
//! - Faults ([`SimFault`]) are queued with [`LlmSim::script`]: each request to an endpoint pops the
//!   next one. When the queue is empty, [`LlmSim::fail_always`] applies, if set.
//! - Every request, including malformed ones and unknown paths, is recorded as a
//!   [`RecordedRequest`].
//!
//! Malformed requests are answered with 400 in the endpoint's own error format; nothing in here
//! panics on bad input.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::lock;
use crate::hash::fnv1a;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use serde_json::{Value, json};

/// Default length of an embedding vector.
const DEFAULT_EMBEDDING_DIMENSION: usize = 8;

/// How long a cut stream waits after its last chunk before aborting the connection, so that the
/// chunks already produced reach the client first.
const CUT_GRACE: Duration = Duration::from_millis(50);

/// The data of the chunk [`SimFault::CorruptChunk`] puts in the middle of a stream.
const CORRUPT_DATA: &str = r#"{"choices": ["#;

/// A fault injected into one response (see [`LlmSim::script`] and [`LlmSim::fail_always`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimFault {
    /// An error response with this status in the endpoint's own error format (OpenAI or Anthropic;
    /// 529 is Anthropic's `overloaded_error`), with the optional `retry-after` (sent verbatim) and
    /// `retry-after-ms` headers.
    Status {
        /// HTTP status; an invalid code (outside 100..=999) becomes 500.
        status: u16,
        /// Value of the `retry-after` header, sent verbatim.
        retry_after: Option<String>,
        /// Value of the `retry-after-ms` header.
        retry_after_ms: Option<u64>,
    },
    /// Sleep this long before sending the response headers, then answer normally.
    SlowFirstByte(Duration),
    /// Streaming: send the first half of the events, then abort the connection (no final chunk,
    /// no `[DONE]`, no `message_stop`). Non-streaming: 200 with the first half of the JSON body.
    CutStream,
    /// Streaming: the event in the middle of the stream carries `{"choices": [` (invalid JSON) as
    /// its data; the rest of the stream is intact. Non-streaming: 200 with the body `not json`.
    CorruptChunk,
    /// Answer with the cut reply and finish reason `length` / `max_tokens`, whatever `max_tokens`
    /// the request asked for. Embeddings are answered normally.
    Length,
    /// Streaming: send the first half of the events, then an error event (Anthropic:
    /// `event: error` with `overloaded_error`; OpenAI: a `data: {"error": …}` line) and end the
    /// stream cleanly without `[DONE]` / `message_stop`. Non-streaming and embeddings: like
    /// `Status` 529 (Anthropic) or 503 (OpenAI) without retry headers.
    StreamError,
}

/// One request as the simulator received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// When the request arrived (before any fault was applied).
    pub at: Instant,
    /// The request path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The request headers, names lowercased; repeated headers are joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The JSON body; a body that is not JSON is recorded as a string (lossy UTF-8).
    pub body: Value,
}

/// Shared state of a running simulator.
#[derive(Default)]
struct SimState {
    script: Mutex<VecDeque<SimFault>>,
    always: Mutex<Option<SimFault>>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// The `max_tokens` a request needs to get a full reply (0: no ceiling).
    require_max_tokens: AtomicU32,
    /// Embedding dimension; 0 means the default.
    embedding_dimension: AtomicUsize,
    /// Source of response ids.
    next_id: AtomicU64,
    /// Exact reply texts for the next completions, in order.
    replies: Mutex<VecDeque<String>>,
}

/// Locks a mutex, ignoring poisoning: the state stays usable even if a test panicked holding it.
impl SimState {
    /// Records a request and parses its body.
    fn record(&self, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Result<Value, serde_json::Error> {
        let parsed = serde_json::from_slice::<Value>(body);
        let names = super::recorded_headers(headers);
        let recorded = match &parsed {
            Ok(value) => value.clone(),
            Err(_) => Value::String(String::from_utf8_lossy(body).into_owned()),
        };
        lock(&self.requests).push(RecordedRequest {
            at: Instant::now(),
            path: uri.path().to_owned(),
            headers: names,
            body: recorded,
        });
        parsed
    }

    /// The fault for the request being served: the next scripted one, else the permanent one.
    fn next_fault(&self) -> Option<SimFault> {
        if let Some(fault) = lock(&self.script).pop_front() {
            return Some(fault);
        }
        lock(&self.always).clone()
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn embedding_dimension(&self) -> usize {
        match self.embedding_dimension.load(Ordering::SeqCst) {
            0 => DEFAULT_EMBEDDING_DIMENSION,
            n => n,
        }
    }
}

/// A running LLM simulator. Clones share the same server and state. Dropping it does not stop the
/// server: it lives as long as the tokio runtime it was started on.
#[derive(Clone)]
pub struct LlmSim {
    /// The address the server listens on (127.0.0.1, ephemeral port).
    pub addr: SocketAddr,
    state: Arc<SimState>,
}

impl LlmSim {
    /// Binds 127.0.0.1 on an ephemeral port and serves on the current tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Binds `addr` (the sandbox's `sandbox.llm_simulator`) and serves on the current runtime.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let state = Arc::new(SimState::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(openai_chat))
            .route("/v1/embeddings", post(openai_embeddings))
            .route("/v1/messages", post(anthropic_messages))
            .fallback(unknown_path)
            .with_state(state.clone());
        let addr = super::serve(addr, app).await?;
        Ok(Self { addr, state })
    }

    /// Base URL of the OpenAI-compatible API: `http://ADDR/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Base URL of the Anthropic API: `http://ADDR` (requests go to `/v1/messages`).
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues faults after those already queued; each request to an endpoint pops the next one.
    /// The next completions answer with exactly these texts, one each, in order.
    pub fn reply_with(&self, texts: impl IntoIterator<Item = String>) {
        lock(&self.state.replies).extend(texts);
    }

    pub fn script(&self, faults: impl IntoIterator<Item = SimFault>) {
        lock(&self.state.script).extend(faults);
    }

    /// Applies `fault` to every request served while the script queue is empty (`None` clears it).
    pub fn fail_always(&self, fault: Option<SimFault>) {
        *lock(&self.state.always) = fault;
    }

    /// Chat and messages requests with `max_tokens` below `n` get a cut reply with finish reason
    /// `length` / `max_tokens` (0, the default: never cut). An OpenAI request without `max_tokens`
    /// (or `max_completion_tokens`) is never cut.
    pub fn require_max_tokens(&self, n: u32) {
        self.state.require_max_tokens.store(n, Ordering::SeqCst);
    }

    /// Sets the length of embedding vectors (default 8; 0 restores the default).
    pub fn set_embedding_dimension(&self, n: usize) {
        self.state.embedding_dimension.store(n, Ordering::SeqCst);
    }

    /// All requests received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }
}

/// Which API's error format an endpoint speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wire {
    OpenAi,
    Anthropic,
}

/// An error response in `wire`'s format.
fn error_response(wire: Wire, status: StatusCode, message: &str) -> Response {
    let code = status.as_u16();
    let body = match wire {
        Wire::OpenAi => {
            let kind = match code {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                429 => "rate_limit_error",
                500..=599 => "server_error",
                _ => "invalid_request_error",
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        }
        Wire::Anthropic => {
            json!({"type": "error", "error": {"type": anthropic_error_type(code), "message": message}})
        }
    };
    json_response(status, body.to_string())
}

fn anthropic_error_type(code: u16) -> &'static str {
    match code {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// A 400 in `wire`'s format.
fn bad_request(wire: Wire, message: &str) -> Response {
    error_response(wire, StatusCode::BAD_REQUEST, message)
}

/// A response with a JSON content type and this (possibly invalid) body.
use super::json_response;

/// The response for a `SimFault::Status`.
fn status_fault(wire: Wire, status: u16, retry_after: Option<&str>, retry_after_ms: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = format!("simulated failure: {status}");
    let mut response = error_response(wire, status, &message);
    let headers = response.headers_mut();
    if let Some(value) = retry_after.and_then(|value| HeaderValue::from_str(value).ok()) {
        headers.insert(header::RETRY_AFTER, value);
    }
    if let Some(millis) = retry_after_ms {
        headers.insert(HeaderName::from_static("retry-after-ms"), HeaderValue::from(millis));
    }
    response
}

/// The error a `SimFault::StreamError` produces outside a stream.
fn stream_error_as_status(wire: Wire) -> Response {
    match wire {
        Wire::OpenAi => status_fault(wire, 503, None, None),
        Wire::Anthropic => status_fault(wire, 529, None, None),
    }
}

/// What is left to do with a fault once the request may be answered.
enum Shape {
    Normal,
    Cut,
    Corrupt,
    Length,
    StreamError,
}

/// Applies the faults that do not depend on the request: returns the response for a `Status`
/// fault, sleeps for a `SlowFirstByte`, and otherwise tells how to shape the answer.
async fn apply_fault(wire: Wire, fault: Option<SimFault>) -> Result<Shape, Response> {
    match fault {
        None => Ok(Shape::Normal),
        Some(SimFault::Status { status, retry_after, retry_after_ms }) => {
            Err(status_fault(wire, status, retry_after.as_deref(), retry_after_ms))
        }
        Some(SimFault::SlowFirstByte(delay)) => {
            tokio::time::sleep(delay).await;
            Ok(Shape::Normal)
        }
        Some(SimFault::CutStream) => Ok(Shape::Cut),
        Some(SimFault::CorruptChunk) => Ok(Shape::Corrupt),
        Some(SimFault::Length) => Ok(Shape::Length),
        Some(SimFault::StreamError) => Ok(Shape::StreamError),
    }
}

/// A non-streaming 200 with `body`, shaped by the fault.
fn json_answer(wire: Wire, shape: &Shape, body: &Value) -> Response {
    let text = body.to_string();
    match shape {
        Shape::Normal | Shape::Length => json_response(StatusCode::OK, text),
        Shape::Cut => {
            let mut end = text.len() / 2;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            json_response(StatusCode::OK, text[..end].to_owned())
        }
        Shape::Corrupt => json_response(StatusCode::OK, "not json"),
        Shape::StreamError => stream_error_as_status(wire),
    }
}

/// A server-sent-events response with these events (each a complete `…\n\n` block), shaped by
/// the fault.
fn sse_answer(wire: Wire, shape: &Shape, mut events: Vec<String>) -> Response {
    let half = events.len() / 2;
    let stream: BoxStream<'static, Result<Bytes, std::io::Error>> = match shape {
        Shape::Normal | Shape::Length => stream::iter(events.into_iter().map(|event| Ok(Bytes::from(event)))).boxed(),
        Shape::Corrupt => {
            if let Some(event) = events.get_mut(half) {
                *event = match wire {
                    Wire::OpenAi => format!("data: {CORRUPT_DATA}\n\n"),
                    Wire::Anthropic => format!("event: content_block_delta\ndata: {CORRUPT_DATA}\n\n"),
                };
            }
            stream::iter(events.into_iter().map(|event| Ok(Bytes::from(event)))).boxed()
        }
        Shape::Cut => {
            events.truncate(half);
            let abort = stream::once(async {
                tokio::time::sleep(CUT_GRACE).await;
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "simulated cut stream"))
            });
            stream::iter(events.into_iter().map(|event| Ok(Bytes::from(event)))).chain(abort).boxed()
        }
        Shape::StreamError => {
            events.truncate(half);
            events.push(match wire {
                Wire::OpenAi => {
                    let error = json!({"error": {"message": "simulated stream error", "type": "server_error", "param": null, "code": null}});
                    format!("data: {error}\n\n")
                }
                Wire::Anthropic => {
                    let error = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
                    format!("event: error\ndata: {error}\n\n")
                }
            });
            stream::iter(events.into_iter().map(|event| Ok(Bytes::from(event)))).boxed()
        }
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A chat request reduced to what the simulator answers from.
struct Conversation {
    model: String,
    stream: bool,
    include_usage: bool,
    max_tokens: Option<u32>,
    /// Characters of all message contents (and the system prompt).
    prompt_chars: usize,
    /// Content of the last user message.
    last_user: String,
}

/// The simulated answer to a conversation.
struct Answer {
    text: String,
    /// Whether the reply was cut (finish reason `length` / `max_tokens`).
    cut: bool,
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl Answer {
    fn new(conversation: &Conversation, ceiling: u32, force_cut: bool, scripted: Option<String>) -> Self {
        let question = conversation.last_user.trim().trim_end_matches(['.', '?', '!']);
        let full = scripted.unwrap_or_else(|| format!("Simulated answer to: {question}."));
        let cut = force_cut || conversation.max_tokens.is_some_and(|max| max < ceiling);
        let text = if cut {
            let words = (conversation.max_tokens.unwrap_or(u32::MAX) / 64).max(1) as usize;
            let kept: Vec<&str> = full.split_whitespace().take(words).collect();
            kept.join(" ").trim_end_matches(|c: char| c.is_ascii_punctuation()).to_owned()
        } else {
            full
        };
        Self {
            completion_tokens: text.split_whitespace().count() as u64,
            text,
            cut,
            prompt_tokens: (conversation.prompt_chars / 4) as u64 + 1,
        }
    }
}

/// Splits a reply into stream pieces: each word with the whitespace that follows it.
fn pieces(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut after_space = false;
    for c in text.chars() {
        if after_space && !c.is_whitespace() {
            pieces.push(std::mem::take(&mut current));
        }
        current.push(c);
        after_space = c.is_whitespace();
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// The text of a message content: a string, or an array of `{"type": "text", "text": …}` parts.
fn content_text(content: Option<&Value>) -> Result<String, String> {
    match content {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(part)) => text.push_str(part),
                    _ => return Err("content parts must be {\"type\": \"text\", \"text\": string}".into()),
                }
            }
            Ok(text)
        }
        _ => Err("message content must be a string or an array of text parts".into()),
    }
}

/// An optional non-negative integer that fits a u32.
fn optional_u32(body: &Value, field: &str) -> Result<Option<u32>, String> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("{field} must be a non-negative integer")),
    }
}

fn optional_bool(body: &Value, field: &str) -> Result<bool, String> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(value)) => Ok(*value),
        Some(_) => Err(format!("{field} must be a boolean")),
    }
}

fn required_model(body: &Value) -> Result<String, String> {
    match body.get("model").and_then(Value::as_str) {
        Some(model) if !model.is_empty() => Ok(model.to_owned()),
        _ => Err("model must be a non-empty string".into()),
    }
}

/// Validates an OpenAI chat completions request.
fn parse_openai_chat(body: &Value) -> Result<Conversation, String> {
    if !body.is_object() {
        return Err("the request body must be a JSON object".into());
    }
    let model = required_model(body)?;
    let messages = match body.get("messages").and_then(Value::as_array) {
        Some(messages) if !messages.is_empty() => messages,
        _ => return Err("messages must be a non-empty array".into()),
    };
    let mut prompt_chars = 0;
    let mut last_user = String::new();
    for (index, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        if !matches!(role, "system" | "user" | "assistant") {
            return Err(format!("messages[{index}].role must be system, user or assistant"));
        }
        let text = content_text(message.get("content")).map_err(|e| format!("messages[{index}]: {e}"))?;
        prompt_chars += text.chars().count();
        if role == "user" {
            last_user = text;
        }
    }
    let max_tokens = match optional_u32(body, "max_tokens")? {
        Some(max) => Some(max),
        None => optional_u32(body, "max_completion_tokens")?,
    };
    let stream = optional_bool(body, "stream")?;
    let include_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(options @ Value::Object(_)) => optional_bool(options, "include_usage")?,
        Some(_) => return Err("stream_options must be an object".into()),
    };
    Ok(Conversation { model, stream, include_usage, max_tokens, prompt_chars, last_user })
}

/// Validates an Anthropic Messages request (headers included).
fn parse_anthropic(headers: &HeaderMap, body: &Value) -> Result<Conversation, String> {
    if !headers.contains_key("anthropic-version") {
        return Err("anthropic-version header is required".into());
    }
    if !body.is_object() {
        return Err("the request body must be a JSON object".into());
    }
    let model = required_model(body)?;
    let max_tokens = match optional_u32(body, "max_tokens")? {
        Some(max) if max >= 1 => max,
        _ => return Err("max_tokens: a positive integer is required".into()),
    };
    let mut prompt_chars = match body.get("system") {
        None | Some(Value::Null) => 0,
        system => content_text(system).map_err(|e| format!("system: {e}"))?.chars().count(),
    };
    let messages = match body.get("messages").and_then(Value::as_array) {
        Some(messages) if !messages.is_empty() => messages,
        _ => return Err("messages must be a non-empty array".into()),
    };
    let mut last_user = String::new();
    let mut previous_role = None;
    for (index, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        if !matches!(role, "user" | "assistant") {
            return Err(format!("messages[{index}].role must be user or assistant (system goes in `system`)"));
        }
        if index == 0 && role != "user" {
            return Err("the first message must use the user role".into());
        }
        if previous_role == Some(role) {
            return Err(format!("messages[{index}]: consecutive {role} turns must be merged"));
        }
        previous_role = Some(role);
        let text = content_text(message.get("content")).map_err(|e| format!("messages[{index}]: {e}"))?;
        prompt_chars += text.chars().count();
        if role == "user" {
            last_user = text;
        }
    }
    let stream = optional_bool(body, "stream")?;
    Ok(Conversation { model, stream, include_usage: false, max_tokens: Some(max_tokens), prompt_chars, last_user })
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or_default()
}

/// `POST /v1/chat/completions`.
async fn openai_chat(State(state): State<Arc<SimState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let wire = Wire::OpenAi;
    let parsed = state.record(&uri, &headers, &body);
    let shape = match apply_fault(wire, state.next_fault()).await {
        Ok(shape) => shape,
        Err(response) => return response,
    };
    let body = match parsed {
        Ok(body) => body,
        Err(error) => return bad_request(wire, &format!("invalid JSON body: {error}")),
    };
    let conversation = match parse_openai_chat(&body) {
        Ok(conversation) => conversation,
        Err(message) => return bad_request(wire, &message),
    };
    let ceiling = state.require_max_tokens.load(Ordering::SeqCst);
    let scripted = lock(&state.replies).pop_front();
    let answer = Answer::new(&conversation, ceiling, matches!(shape, Shape::Length), scripted);
    let id = format!("chatcmpl-sim{}", state.next_id());
    let created = unix_now();
    let model = conversation.model.as_str();
    let finish_reason = if answer.cut { "length" } else { "stop" };
    let usage = json!({
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens
    });
    if !conversation.stream {
        let response = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer.text, "refusal": null},
                "logprobs": null,
                "finish_reason": finish_reason
            }],
            "usage": usage
        });
        return json_answer(wire, &shape, &response);
    }
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices
        });
        if conversation.include_usage {
            chunk["usage"] = usage.unwrap_or(Value::Null);
        }
        format!("data: {chunk}\n\n")
    };
    let mut events = Vec::new();
    for (index, piece) in pieces(&answer.text).into_iter().enumerate() {
        let delta = if index == 0 { json!({"role": "assistant", "content": piece}) } else { json!({"content": piece}) };
        events.push(chunk(json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]), None));
    }
    events.push(chunk(json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish_reason}]), None));
    if conversation.include_usage {
        events.push(chunk(json!([]), Some(usage)));
    }
    events.push("data: [DONE]\n\n".to_owned());
    sse_answer(wire, &shape, events)
}

/// `POST /v1/messages`.
async fn anthropic_messages(State(state): State<Arc<SimState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let wire = Wire::Anthropic;
    let parsed = state.record(&uri, &headers, &body);
    let shape = match apply_fault(wire, state.next_fault()).await {
        Ok(shape) => shape,
        Err(response) => return response,
    };
    let body = match parsed {
        Ok(body) => body,
        Err(error) => return bad_request(wire, &format!("invalid JSON body: {error}")),
    };
    let conversation = match parse_anthropic(&headers, &body) {
        Ok(conversation) => conversation,
        Err(message) => return bad_request(wire, &message),
    };
    let ceiling = state.require_max_tokens.load(Ordering::SeqCst);
    let scripted = lock(&state.replies).pop_front();
    let answer = Answer::new(&conversation, ceiling, matches!(shape, Shape::Length), scripted);
    let id = format!("msg_sim{}", state.next_id());
    let stop_reason = if answer.cut { "max_tokens" } else { "end_turn" };
    if !conversation.stream {
        let response = json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": conversation.model,
            "content": [{"type": "text", "text": answer.text}],
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens}
        });
        return json_answer(wire, &shape, &response);
    }
    let event = |data: Value| {
        let name = data["type"].as_str().unwrap_or_default().to_owned();
        format!("event: {name}\ndata: {data}\n\n")
    };
    let mut events = vec![
        event(json!({
            "type": "message_start",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": conversation.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": 1}
            }
        })),
        event(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
        event(json!({"type": "ping"})),
    ];
    for piece in pieces(&answer.text) {
        events.push(event(json!({
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": piece}
        })));
    }
    events.push(event(json!({"type": "content_block_stop", "index": 0})));
    events.push(event(json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": answer.completion_tokens}
    })));
    events.push(event(json!({"type": "message_stop"})));
    sse_answer(wire, &shape, events)
}

/// Validates an embeddings request: the model and the texts to embed.
fn parse_embeddings(body: &Value) -> Result<(String, Vec<String>), String> {
    if !body.is_object() {
        return Err("the request body must be a JSON object".into());
    }
    let model = required_model(body)?;
    let texts = match body.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or("input must be a string or an array of strings")?,
        _ => return Err("input must be a string or a non-empty array of strings".into()),
    };
    match body.get("encoding_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(format)) if format == "float" => {}
        Some(_) => return Err("encoding_format: only \"float\" is supported".into()),
    }
    Ok((model, texts))
}

/// A deterministic, L2-normalised embedding of `text`: the character trigrams of the lowercased
/// text padded with one space on each side, hashed with FNV-1a into `dimension` buckets with a
/// sign taken from the hash's top bit.
fn embed(text: &str, dimension: usize) -> Vec<f32> {
    let dimension = dimension.max(1);
    let chars: Vec<char> = format!(" {} ", text.to_lowercase()).chars().collect();
    let mut vector = vec![0f32; dimension];
    for gram in chars.windows(3) {
        let gram: String = gram.iter().collect();
        let hash = fnv1a(gram.as_bytes());
        let sign = if hash >> 63 == 1 { -1.0 } else { 1.0 };
        vector[(hash % dimension as u64) as usize] += sign;
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    } else {
        // No trigram (empty text) or they cancelled out: a unit vector picked by the whole text.
        let whole = fnv1a(text.as_bytes());
        vector[(whole % dimension as u64) as usize] = 1.0;
    }
    vector
}

/// `POST /v1/embeddings`.
async fn openai_embeddings(State(state): State<Arc<SimState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let wire = Wire::OpenAi;
    let parsed = state.record(&uri, &headers, &body);
    let shape = match apply_fault(wire, state.next_fault()).await {
        Ok(shape) => shape,
        Err(response) => return response,
    };
    let body = match parsed {
        Ok(body) => body,
        Err(error) => return bad_request(wire, &format!("invalid JSON body: {error}")),
    };
    let (model, texts) = match parse_embeddings(&body) {
        Ok(parsed) => parsed,
        Err(message) => return bad_request(wire, &message),
    };
    let dimension = state.embedding_dimension();
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": embed(text, dimension)}))
        .collect();
    let chars: usize = texts.iter().map(|text| text.chars().count()).sum();
    let tokens = (chars / 4) as u64 + 1;
    let response = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    });
    json_answer(wire, &shape, &response)
}

/// Any other path: recorded, answered 404 in the OpenAI format, no fault consumed.
async fn unknown_path(State(state): State<Arc<SimState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let _ = state.record(&uri, &headers, &body);
    error_response(Wire::OpenAi, StatusCode::NOT_FOUND, &format!("no simulated endpoint at {}", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_keep_the_text_and_split_after_spaces() {
        let text = "Simulated answer to:  two\nlines.";
        let split = pieces(text);
        assert_eq!(split, ["Simulated ", "answer ", "to:  ", "two\n", "lines."]);
        assert_eq!(split.concat(), text);
    }

    #[test]
    fn embeddings_are_unit_vectors_even_for_empty_text() {
        for text in ["", "a", "tomatoes need sun"] {
            let vector = embed(text, 8);
            let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{text:?}: {vector:?}");
        }
    }
}

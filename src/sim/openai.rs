//! A minimal OpenAI-compatible chat completions server on 127.0.0.1, speaking the wire format of
//! `POST /v1/chat/completions` (non-streaming) from the OpenAI OpenAPI spec, with injectable
//! faults. The full simulator (streaming, embeddings, Anthropic) arrives with the LlmPool issue.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

#[derive(Default)]
pub struct SimState {
    /// When non-zero, every request is answered with this status.
    fail_with: AtomicU16,
    requests: AtomicUsize,
    /// `Authorization` header values received.
    auth_headers: Mutex<Vec<String>>,
    /// Request bodies received.
    bodies: Mutex<Vec<Value>>,
}

/// A running simulator. Dropping it does not stop the server; it lives as long as the runtime.
#[derive(Clone)]
pub struct OpenAiSim {
    pub addr: SocketAddr,
    state: Arc<SimState>,
}

impl OpenAiSim {
    pub async fn start() -> std::io::Result<Self> {
        let state = Arc::new(SimState::default());
        let app = Router::new().route("/v1/chat/completions", post(chat)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state })
    }

    /// Base URL to configure a provider with.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Answer every request with `status` (0: answer normally).
    pub fn fail_with(&self, status: u16) {
        self.state.fail_with.store(status, Ordering::SeqCst);
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn auth_headers(&self) -> Vec<String> {
        self.state.auth_headers.lock().expect("sim lock").clone()
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.state.bodies.lock().expect("sim lock").clone()
    }
}

async fn chat(State(state): State<Arc<SimState>>, headers: HeaderMap, body: Json<Value>) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        state.auth_headers.lock().expect("sim lock").push(auth.to_owned());
    }
    state.bodies.lock().expect("sim lock").push(body.0.clone());
    let fail = state.fail_with.load(Ordering::SeqCst);
    if fail != 0 {
        let status = StatusCode::from_u16(fail).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let error =
            json!({"error": {"message": "injected failure", "type": "server_error", "param": null, "code": null}});
        return (status, Json(error)).into_response();
    }
    let model = body.get("model").and_then(Value::as_str).unwrap_or("sim-model").to_owned();
    let last = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|messages| messages.last())
        .and_then(|message| message.get("content"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let content = format!("Simulated answer to: {}.", last.trim_end_matches(['.', '?', '!']));
    let prompt_tokens = (last.len() / 4) as u64 + 1;
    let completion_tokens = (content.len() / 4) as u64 + 1;
    Json(json!({
        "id": "chatcmpl-sim",
        "object": "chat.completion",
        "created": 1_700_000_000u64,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    }))
    .into_response()
}

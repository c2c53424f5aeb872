//! The LLM simulator over raw HTTP: both chat wire formats streaming and not, embeddings, every
//! scripted fault as seen on the wire, the max_tokens ceiling, validation and request recording.

use std::time::{Duration, Instant};

use chorus::sim::llm::{LlmSim, SimFault};
use serde_json::{Value, json};

const KEY: &str = "sk-sim-test";

/// The reply to "What is Rust?".
const REPLY: &str = "Simulated answer to: What is Rust.";

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn openai_body(stream: bool) -> Value {
    json!({
        "model": "sim-model",
        "messages": [
            {"role": "system", "content": "You are ada."},
            {"role": "user", "content": "What is Rust?"}
        ],
        "max_tokens": 256,
        "stream": stream
    })
}

fn anthropic_body(stream: bool) -> Value {
    json!({
        "model": "sim-model",
        "max_tokens": 256,
        "system": "You are ada.",
        "messages": [{"role": "user", "content": "What is Rust?"}],
        "stream": stream
    })
}

async fn openai_chat(sim: &LlmSim, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", sim.openai_base_url()))
        .bearer_auth(KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn anthropic(sim: &LlmSim, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/messages", sim.anthropic_base_url()))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn embeddings(sim: &LlmSim, body: &Value) -> reqwest::Response {
    client().post(format!("{}/embeddings", sim.openai_base_url())).bearer_auth(KEY).json(body).send().await.unwrap()
}

/// The `data:` payloads of an SSE body, in order.
fn sse_data(text: &str) -> Vec<String> {
    text.lines().filter_map(|line| line.strip_prefix("data: ")).map(str::to_owned).collect()
}

/// The `(event, data)` pairs of an SSE body with named events, in order.
fn sse_events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = name.to_owned();
                } else if let Some(payload) = line.strip_prefix("data: ") {
                    data = payload.to_owned();
                }
            }
            (event, data)
        })
        .collect()
}

/// Reads a body chunk by chunk: what arrived, and whether the connection broke before its end.
async fn read_until_break(mut response: reqwest::Response) -> (String, bool) {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => return (String::from_utf8_lossy(&bytes).into_owned(), false),
            Err(_) => return (String::from_utf8_lossy(&bytes).into_owned(), true),
        }
    }
}

/// The text an OpenAI stream carries, and its finish reason.
fn openai_stream_text(text: &str) -> (String, String) {
    let mut content = String::new();
    let mut finish = String::new();
    for data in sse_data(text).iter().filter(|data| *data != "[DONE]") {
        let chunk: Value = serde_json::from_str(data).unwrap();
        if let Some(choice) = chunk["choices"].get(0) {
            content.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
            if let Some(reason) = choice["finish_reason"].as_str() {
                finish = reason.to_owned();
            }
        }
    }
    (content, finish)
}

/// The text an Anthropic stream carries, and its stop reason.
fn anthropic_stream_text(text: &str) -> (String, String) {
    let mut content = String::new();
    let mut stop = String::new();
    for (event, data) in sse_events(text) {
        let data: Value = serde_json::from_str(&data).unwrap();
        match event.as_str() {
            "content_block_delta" => content.push_str(data["delta"]["text"].as_str().unwrap()),
            "message_delta" => stop = data["delta"]["stop_reason"].as_str().unwrap().to_owned(),
            _ => {}
        }
    }
    (content, stop)
}

#[tokio::test]
async fn openai_chat_without_streaming() {
    let sim = LlmSim::start().await.unwrap();
    let response = openai_chat(&sim, &openai_body(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"), "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(body["model"], "sim-model");
    assert_eq!(
        body["choices"],
        json!([{
            "index": 0,
            "message": {"role": "assistant", "content": REPLY, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }])
    );
    // "You are ada." + "What is Rust?" = 25 chars → 25 / 4 + 1; one completion token per word.
    assert_eq!(body["usage"], json!({"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}));
}

#[tokio::test]
async fn openai_chat_streams_one_chunk_per_word_then_done() {
    let sim = LlmSim::start().await.unwrap();
    let response = openai_chat(&sim, &openai_body(true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let data = sse_data(&text);
    let chunks: Vec<Value> =
        data.iter().filter(|data| *data != "[DONE]").map(|data| serde_json::from_str(data).unwrap()).collect();
    // Six words, then a final chunk with an empty delta and the finish reason.
    assert_eq!(chunks.len(), 7, "{text}");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert_eq!(chunk["created"], chunks[0]["created"]);
        assert_eq!(chunk["model"], "sim-model");
        assert!(chunk.get("usage").is_none(), "usage only when asked for: {chunk}");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": "Simulated "}));
    assert_eq!(chunks[1]["choices"][0]["delta"], json!({"content": "answer "}));
    assert!(chunks[..6].iter().all(|chunk| chunk["choices"][0]["finish_reason"].is_null()));
    assert_eq!(chunks[6]["choices"][0], json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}));
    assert_eq!(openai_stream_text(&text), (REPLY.to_owned(), "stop".to_owned()));
}

#[tokio::test]
async fn openai_stream_reports_usage_when_asked() {
    let sim = LlmSim::start().await.unwrap();
    let mut body = openai_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let text = openai_chat(&sim, &body).await.text().await.unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|data| serde_json::from_str(data).unwrap()).collect();
    let (usage, content) = chunks.split_last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], json!({"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}));
    assert!(content.iter().all(|chunk| chunk["usage"].is_null() && chunk.get("usage").is_some()));
    assert_eq!(openai_stream_text(&text), (REPLY.to_owned(), "stop".to_owned()));
}

#[tokio::test]
async fn anthropic_messages_without_streaming() {
    let sim = LlmSim::start().await.unwrap();
    let response = anthropic(&sim, &anthropic_body(false)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("msg_"), "{body}");
    let expected = json!({
        "id": body["id"],
        "type": "message",
        "role": "assistant",
        "model": "sim-model",
        "content": [{"type": "text", "text": REPLY}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        // The system prompt counts: 25 chars → 7 tokens.
        "usage": {"input_tokens": 7, "output_tokens": 6}
    });
    assert_eq!(body, expected);
}

#[tokio::test]
async fn anthropic_messages_stream_the_documented_event_sequence() {
    let sim = LlmSim::start().await.unwrap();
    let response = anthropic(&sim, &anthropic_body(true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    let events = sse_events(&text);
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(["content_block_delta"; 6]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected, "{text}");
    for (name, data) in &events {
        let data: Value = serde_json::from_str(data).unwrap();
        assert_eq!(data["type"], name.as_str(), "the data's type matches the event name");
    }
    let start: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(start["message"]["content"], json!([]));
    assert!(start["message"]["stop_reason"].is_null());
    assert_eq!(start["message"]["usage"], json!({"input_tokens": 7, "output_tokens": 1}));
    let block: Value = serde_json::from_str(&events[1].1).unwrap();
    assert_eq!(block["content_block"], json!({"type": "text", "text": ""}));
    let first: Value = serde_json::from_str(&events[3].1).unwrap();
    assert_eq!(
        first,
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Simulated "}})
    );
    let delta: Value = serde_json::from_str(&events[10].1).unwrap();
    assert_eq!(delta["usage"], json!({"output_tokens": 6}));
    assert_eq!(anthropic_stream_text(&text), (REPLY.to_owned(), "end_turn".to_owned()));
}

#[tokio::test]
async fn status_faults_use_each_endpoints_error_format_and_retry_headers() {
    let sim = LlmSim::start().await.unwrap();
    sim.script([SimFault::Status { status: 429, retry_after: Some("2".into()), retry_after_ms: Some(1500) }]);
    let response = openai_chat(&sim, &openai_body(false)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(response.headers()["retry-after-ms"], "1500");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(body["error"]["param"].is_null() && body["error"]["code"].is_null(), "{body}");

    sim.script([SimFault::Status { status: 429, retry_after: Some("3".into()), retry_after_ms: None }]);
    let response = anthropic(&sim, &anthropic_body(true)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    assert!(response.headers().get("retry-after-ms").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(body["error"]["message"].is_string());

    let anthropic_types = [(401, "authentication_error"), (500, "api_error"), (529, "overloaded_error")];
    for (status, kind) in anthropic_types {
        sim.script([SimFault::Status { status, retry_after: None, retry_after_ms: None }]);
        let response = anthropic(&sim, &anthropic_body(false)).await;
        assert_eq!(response.status(), status);
        assert!(response.headers().get("retry-after").is_none());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], kind, "{status}");
    }

    for status in [401, 403, 404, 500, 503] {
        sim.script([SimFault::Status { status, retry_after: None, retry_after_ms: None }]);
        let response = openai_chat(&sim, &openai_body(true)).await;
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["message"].is_string(), "{status}: {body}");
    }
}

#[tokio::test]
async fn scripted_faults_come_first_then_the_permanent_one_then_normal_service() {
    let sim = LlmSim::start().await.unwrap();
    let status = |status| SimFault::Status { status, retry_after: None, retry_after_ms: None };
    sim.script([status(500), status(503)]);
    sim.script([status(429)]);
    sim.fail_always(Some(status(502)));
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(openai_chat(&sim, &openai_body(false)).await.status().as_u16());
    }
    assert_eq!(seen, [500, 503, 429, 502, 502]);
    // Any endpoint pops the queue.
    sim.script([status(500)]);
    assert_eq!(anthropic(&sim, &anthropic_body(false)).await.status(), 500);
    sim.script([status(500)]);
    assert_eq!(embeddings(&sim, &json!({"model": "e", "input": "x"})).await.status(), 500);
    sim.fail_always(None);
    assert_eq!(openai_chat(&sim, &openai_body(false)).await.status(), 200);
    assert_eq!(anthropic(&sim, &anthropic_body(false)).await.status(), 200);
}

#[tokio::test]
async fn a_cut_stream_breaks_the_connection_before_the_end() {
    let sim = LlmSim::start().await.unwrap();
    sim.script([SimFault::CutStream]);
    let response = openai_chat(&sim, &openai_body(true)).await;
    assert_eq!(response.status(), 200);
    let (text, broken) = read_until_break(response).await;
    assert!(broken, "the connection is aborted: {text}");
    let data = sse_data(&text);
    assert!(!data.is_empty(), "the first half arrives");
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(!text.contains("\"finish_reason\":\"stop\""), "{text}");

    sim.script([SimFault::CutStream]);
    let (text, broken) = read_until_break(anthropic(&sim, &anthropic_body(true)).await).await;
    assert!(broken, "the connection is aborted: {text}");
    assert!(text.contains("event: message_start"), "{text}");
    assert!(!text.contains("message_stop") && !text.contains("message_delta"), "{text}");

    // Without streaming: half a JSON body.
    sim.script([SimFault::CutStream, SimFault::CutStream]);
    for response in [openai_chat(&sim, &openai_body(false)).await, anthropic(&sim, &anthropic_body(false)).await] {
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(text.starts_with('{') && text.len() > 10, "{text}");
        assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    }

    // The next request is served normally.
    let text = openai_chat(&sim, &openai_body(true)).await.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn a_corrupt_chunk_sits_in_an_otherwise_complete_stream() {
    let sim = LlmSim::start().await.unwrap();
    sim.script([SimFault::CorruptChunk]);
    let text = openai_chat(&sim, &openai_body(true)).await.text().await.unwrap();
    let data = sse_data(&text);
    let corrupt = data.iter().position(|data| data == r#"{"choices": ["#).expect("a corrupt chunk");
    assert!(corrupt > 0 && corrupt < data.len() - 1, "in the middle: {text}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));

    sim.script([SimFault::CorruptChunk]);
    let text = anthropic(&sim, &anthropic_body(true)).await.text().await.unwrap();
    let events = sse_events(&text);
    assert!(events.iter().any(|(_, data)| data == r#"{"choices": ["#), "{text}");
    assert_eq!(events.last().map(|(name, _)| name.as_str()), Some("message_stop"));

    sim.script([SimFault::CorruptChunk, SimFault::CorruptChunk, SimFault::CorruptChunk]);
    let responses = [
        openai_chat(&sim, &openai_body(false)).await,
        anthropic(&sim, &anthropic_body(false)).await,
        embeddings(&sim, &json!({"model": "e", "input": "x"})).await,
    ];
    for response in responses {
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.text().await.unwrap(), "not json");
    }
}

#[tokio::test]
async fn a_slow_first_byte_delays_the_headers_then_answers() {
    let sim = LlmSim::start().await.unwrap();
    let delay = Duration::from_millis(300);
    sim.script([SimFault::SlowFirstByte(delay), SimFault::SlowFirstByte(delay)]);
    let started = Instant::now();
    let response = openai_chat(&sim, &openai_body(true)).await;
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    assert_eq!(openai_stream_text(&response.text().await.unwrap()).0, REPLY);

    let started = Instant::now();
    let response = anthropic(&sim, &anthropic_body(false)).await;
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    assert_eq!(response.json::<Value>().await.unwrap()["content"][0]["text"], REPLY);

    let started = Instant::now();
    assert_eq!(openai_chat(&sim, &openai_body(false)).await.status(), 200);
    assert!(started.elapsed() < delay, "only scripted requests are slow");
}

#[tokio::test]
async fn the_length_fault_cuts_the_reply_whatever_max_tokens_says() {
    let sim = LlmSim::start().await.unwrap();
    // max_tokens 256 → 256 / 64 = 4 words, final punctuation dropped.
    let cut = "Simulated answer to: What";
    sim.script(std::iter::repeat_n(SimFault::Length, 4));
    let body: Value = openai_chat(&sim, &openai_body(false)).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], cut);
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 4);

    let text = openai_chat(&sim, &openai_body(true)).await.text().await.unwrap();
    assert_eq!(openai_stream_text(&text), (cut.to_owned(), "length".to_owned()));
    assert!(text.ends_with("data: [DONE]\n\n"));

    let body: Value = anthropic(&sim, &anthropic_body(false)).await.json().await.unwrap();
    assert_eq!(body["content"][0]["text"], cut);
    assert_eq!(body["stop_reason"], "max_tokens");

    let text = anthropic(&sim, &anthropic_body(true)).await.text().await.unwrap();
    assert_eq!(anthropic_stream_text(&text), (cut.to_owned(), "max_tokens".to_owned()));
}

#[tokio::test]
async fn a_stream_error_event_ends_the_stream_early() {
    let sim = LlmSim::start().await.unwrap();
    sim.script([SimFault::StreamError]);
    let text = anthropic(&sim, &anthropic_body(true)).await.text().await.unwrap();
    let (name, data) = sse_events(&text).pop().unwrap();
    assert_eq!(name, "error");
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
    assert!(!text.contains("message_stop"), "{text}");

    sim.script([SimFault::StreamError]);
    let text = openai_chat(&sim, &openai_body(true)).await.text().await.unwrap();
    let last: Value = serde_json::from_str(sse_data(&text).last().unwrap()).unwrap();
    assert!(last["error"]["message"].is_string(), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");

    sim.script([SimFault::StreamError]);
    assert_eq!(anthropic(&sim, &anthropic_body(false)).await.status(), 529);
}

#[tokio::test]
async fn require_max_tokens_cuts_requests_below_the_ceiling() {
    let sim = LlmSim::start().await.unwrap();
    sim.require_max_tokens(600);
    let mut body = openai_body(false);
    body["max_tokens"] = json!(128);
    let answer: Value = openai_chat(&sim, &body).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Simulated answer");
    assert_eq!(answer["choices"][0]["finish_reason"], "length");

    // "to:" loses its colon: no final punctuation.
    body["max_tokens"] = json!(192);
    let answer: Value = openai_chat(&sim, &body).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Simulated answer to");

    // Fewer than 64 tokens still gets one word.
    body["max_tokens"] = json!(10);
    body["stream"] = json!(true);
    let text = openai_chat(&sim, &body).await.text().await.unwrap();
    assert_eq!(openai_stream_text(&text), ("Simulated".to_owned(), "length".to_owned()));

    let mut body = anthropic_body(true);
    body["max_tokens"] = json!(599);
    let text = anthropic(&sim, &body).await.text().await.unwrap();
    assert_eq!(anthropic_stream_text(&text).1, "max_tokens");

    body["max_tokens"] = json!(600);
    let text = anthropic(&sim, &body).await.text().await.unwrap();
    assert_eq!(anthropic_stream_text(&text), (REPLY.to_owned(), "end_turn".to_owned()));

    let mut body = openai_body(false);
    body["max_tokens"] = json!(1024);
    let answer: Value = openai_chat(&sim, &body).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], REPLY);
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");

    sim.require_max_tokens(0);
    body["max_tokens"] = json!(1);
    let answer: Value = openai_chat(&sim, &body).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn embeddings_are_deterministic_normalised_vectors() {
    let sim = LlmSim::start().await.unwrap();
    let request = json!({"model": "embed-model", "input": ["tomatoes need sun", "compilers need types"], "encoding_format": "float"});
    let response = embeddings(&sim, &request).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "embed-model");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(body["usage"]["prompt_tokens"], body["usage"]["total_tokens"]);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let vectors: Vec<Vec<f64>> = data
        .iter()
        .enumerate()
        .map(|(index, item)| {
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], index);
            item["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
        })
        .collect();
    for vector in &vectors {
        assert_eq!(vector.len(), 8);
        let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{vector:?}");
    }
    assert_ne!(vectors[0], vectors[1]);

    // The same text gives the same vector, in another call, alone, or on another simulator.
    let other = LlmSim::start().await.unwrap();
    let single: Value =
        embeddings(&other, &json!({"model": "embed-model", "input": "tomatoes need sun"})).await.json().await.unwrap();
    assert_eq!(single["data"].as_array().unwrap().len(), 1);
    assert_eq!(single["data"][0]["embedding"], data[0]["embedding"]);
    let again: Value = embeddings(&sim, &request).await.json().await.unwrap();
    assert_eq!(again["data"], body["data"]);

    sim.set_embedding_dimension(32);
    let wide: Value = embeddings(&sim, &request).await.json().await.unwrap();
    assert_eq!(wide["data"][1]["embedding"].as_array().unwrap().len(), 32);

    for bad in [json!({"model": "e", "input": []}), json!({"model": "e", "input": [1, 2]}), json!({"input": "x"})] {
        let response = embeddings(&sim, &bad).await;
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn every_request_is_recorded() {
    let sim = LlmSim::start().await.unwrap();
    let response = client()
        .post(format!("{}/chat/completions", sim.openai_base_url()))
        .bearer_auth(KEY)
        .header("X-Trace-Id", "abc")
        .json(&openai_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    sim.script([SimFault::Status { status: 500, retry_after: None, retry_after_ms: None }]);
    assert_eq!(anthropic(&sim, &anthropic_body(true)).await.status(), 500);
    assert_eq!(embeddings(&sim, &json!({"model": "e", "input": "x"})).await.status(), 200);

    let requests = sim.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/v1/chat/completions", "/v1/messages", "/v1/embeddings"]);
    assert!(requests.windows(2).all(|pair| pair[0].at < pair[1].at), "timestamps increase");
    let chat = &requests[0];
    assert_eq!(chat.headers.get("authorization").map(String::as_str), Some(&*format!("Bearer {KEY}")));
    assert_eq!(chat.headers.get("x-trace-id").map(String::as_str), Some("abc"));
    assert!(chat.headers.keys().all(|name| *name == name.to_lowercase()), "{:?}", chat.headers);
    assert_eq!(chat.body, openai_body(false));
    let messages = &requests[1];
    assert_eq!(messages.headers.get("x-api-key").map(String::as_str), Some(KEY));
    assert_eq!(messages.headers.get("anthropic-version").map(String::as_str), Some("2023-06-01"));
    assert_eq!(messages.body, anthropic_body(true));

    sim.clear_requests();
    assert!(sim.requests().is_empty());
    let response = client().get(format!("{}/nowhere", sim.openai_base_url())).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(sim.requests().len(), 1);
    assert_eq!(sim.requests()[0].path, "/v1/nowhere");
}

#[tokio::test]
async fn malformed_requests_get_a_400_in_the_endpoints_format() {
    let sim = LlmSim::start().await.unwrap();
    let raw = |url: String| client().post(url).header("content-type", "application/json").body("{oops");

    let response = raw(format!("{}/chat/completions", sim.openai_base_url())).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["param"].is_null());
    assert_eq!(sim.requests()[0].body, json!("{oops"), "a non-JSON body is recorded as text");

    let response = raw(format!("{}/v1/messages", sim.anthropic_base_url()))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let bad_chats = [
        json!({"messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "m", "messages": []}),
        json!({"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}),
        json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}),
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}),
        json!([1, 2]),
    ];
    for bad in bad_chats {
        let response = openai_chat(&sim, &bad).await;
        assert_eq!(response.status(), 400, "{bad}");
        assert!(response.json::<Value>().await.unwrap()["error"]["message"].is_string());
    }

    let user = |text: &str| json!({"role": "user", "content": text});
    let bad_messages = [
        json!({"model": "m", "messages": [user("hi")]}),
        json!({"model": "m", "max_tokens": 0, "messages": [user("hi")]}),
        json!({"model": "m", "max_tokens": 9, "messages": [{"role": "assistant", "content": "hi"}]}),
        json!({"model": "m", "max_tokens": 9, "messages": [{"role": "system", "content": "hi"}, user("hi")]}),
        json!({"model": "m", "max_tokens": 9, "messages": [user("a"), user("b")]}),
    ];
    for bad in bad_messages {
        let response = anthropic(&sim, &bad).await;
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error", "{bad}");
    }

    // anthropic-version is required.
    let response = client()
        .post(format!("{}/v1/messages", sim.anthropic_base_url()))
        .header("x-api-key", KEY)
        .json(&anthropic_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // Content as text parts, and a multi-turn conversation: the reply answers the last user turn.
    let body = json!({
        "model": "m",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [user("first?"), {"role": "assistant", "content": "ok"}, {"role": "user", "content": [{"type": "text", "text": "second!"}]}]
    });
    let answer: Value = anthropic(&sim, &body).await.json().await.unwrap();
    assert_eq!(answer["content"][0]["text"], "Simulated answer to: second.");
}

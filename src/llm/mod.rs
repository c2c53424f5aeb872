//! The LlmPool actor: every generation goes through it. It routes a request along the persona's
//! chain of providers (the next one when a provider fails), bounds each provider's concurrency
//! with a semaphore and a bounded wait queue (full queue: fail fast), and records tokens and
//! latency per persona, provider and model in `llm_usage` and in metrics.
//!
//! Calls never block the mailbox: each request runs in its own task that answers the caller's
//! reply port directly.

mod offline;
mod openai_compat;
mod provider;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::Semaphore;

use crate::config::{Config, ProviderKind};
use crate::metrics as m;
use crate::store::{Db, LlmUsage};

pub use offline::{OfflineProvider, approximate_tokens};
pub use openai_compat::OpenAiCompatProvider;
pub use provider::{ChatMessage, Completion, CompletionRequest, LlmError, Provider, Role, Task};

pub struct LlmPool;

pub struct LlmPoolArgs {
    pub config: Arc<Config>,
    pub db: Db,
}

pub struct LlmPoolState {
    slots: HashMap<String, Arc<Slot>>,
    default_chain: Vec<String>,
    db: Db,
}

/// One provider with its concurrency limit.
struct Slot {
    provider: Arc<dyn Provider>,
    permits: Semaphore,
    waiting: AtomicUsize,
    max_queue: usize,
    timeout: Duration,
}

pub enum LlmMsg {
    /// Generate text along the persona's provider chain.
    Complete { request: CompletionRequest, reply: RpcReplyPort<Result<Completion, LlmError>> },
    /// Replace the providers (a config reload); requests in flight finish on the old ones.
    Reconfigure { config: Arc<Config> },
}

impl Actor for LlmPool {
    type Msg = LlmMsg;
    type State = LlmPoolState;
    type Arguments = LlmPoolArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: LlmPoolArgs,
    ) -> Result<LlmPoolState, ActorProcessingErr> {
        let slots = build_slots(&args.config)?;
        Ok(LlmPoolState { slots, default_chain: args.config.service.llm.default_chain.clone(), db: args.db })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: LlmMsg,
        state: &mut LlmPoolState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            LlmMsg::Complete { request, reply } => {
                let names = if request.persona.llm_chain.is_empty() {
                    &state.default_chain
                } else {
                    &request.persona.llm_chain
                };
                let chain: Result<Vec<Arc<Slot>>, LlmError> = names
                    .iter()
                    .map(|name| state.slots.get(name).cloned().ok_or_else(|| LlmError::UnknownProvider(name.clone())))
                    .collect();
                let db = state.db.clone();
                tokio::spawn(async move {
                    let result = match chain {
                        Ok(chain) => run_chain(&chain, &request, &db).await,
                        Err(err) => Err(err),
                    };
                    let _ = reply.send(result);
                });
            }
            LlmMsg::Reconfigure { config } => {
                state.slots = build_slots(&config)?;
                state.default_chain = config.service.llm.default_chain.clone();
            }
        }
        Ok(())
    }
}

fn build_slots(config: &Config) -> Result<HashMap<String, Arc<Slot>>, ActorProcessingErr> {
    let mut slots = HashMap::new();
    for (name, provider_config) in &config.service.llm.providers {
        let provider: Arc<dyn Provider> = match provider_config.kind {
            ProviderKind::Offline => {
                tracing::info!(provider = %name, "llm provider is the offline dry-run provider: no model is called");
                Arc::new(OfflineProvider::new(name.clone()))
            }
            ProviderKind::OpenaiCompat => Arc::new(OpenAiCompatProvider::new(
                name,
                provider_config.base_url.as_deref().unwrap_or_default(),
                provider_config.model.as_deref().unwrap_or_default(),
                config.llm_keys.get(name).cloned(),
                provider_config.timeout.get(),
                provider_config.max_tokens,
            )?),
        };
        slots.insert(
            name.clone(),
            Arc::new(Slot {
                provider,
                permits: Semaphore::new(provider_config.max_concurrency),
                waiting: AtomicUsize::new(0),
                max_queue: provider_config.max_queue,
                timeout: provider_config.timeout.get(),
            }),
        );
    }
    Ok(slots)
}

/// Tries each provider in order; returns the first success or the last error.
async fn run_chain(chain: &[Arc<Slot>], request: &CompletionRequest, db: &Db) -> Result<Completion, LlmError> {
    let mut last_error = LlmError::UnknownProvider("(empty chain)".into());
    for slot in chain {
        match call_slot(slot, request, db).await {
            Ok(completion) => return Ok(completion),
            Err(err) => {
                if matches!(err, LlmError::Auth { .. }) {
                    tracing::error!(provider = slot.provider.name(), "llm provider refused its credentials");
                } else {
                    tracing::warn!(provider = slot.provider.name(), error = %err, "llm provider failed, trying the next");
                }
                last_error = err;
            }
        }
    }
    Err(last_error)
}

async fn call_slot(slot: &Slot, request: &CompletionRequest, db: &Db) -> Result<Completion, LlmError> {
    let name = slot.provider.name().to_owned();
    // A free slot is taken at once; otherwise the request waits in a bounded queue.
    let _permit = match slot.permits.try_acquire() {
        Ok(permit) => permit,
        Err(_) => {
            if slot.waiting.fetch_add(1, Ordering::SeqCst) >= slot.max_queue {
                slot.waiting.fetch_sub(1, Ordering::SeqCst);
                metrics::counter!(m::LLM_REQUESTS, "provider" => name.clone(), "outcome" => "queue_full").increment(1);
                return Err(LlmError::QueueFull { provider: name });
            }
            let permit = slot.permits.acquire().await;
            slot.waiting.fetch_sub(1, Ordering::SeqCst);
            permit.expect("llm semaphores are never closed")
        }
    };

    let started = Instant::now();
    let result = match tokio::time::timeout(slot.timeout, slot.provider.complete(request)).await {
        Ok(result) => result,
        Err(_) => Err(LlmError::Timeout { provider: name.clone() }),
    };
    let latency = started.elapsed();
    let outcome = match &result {
        Ok(_) => "ok",
        Err(err) => err.outcome(),
    };
    metrics::counter!(m::LLM_REQUESTS, "provider" => name.clone(), "outcome" => outcome).increment(1);
    metrics::histogram!(m::LLM_SECONDS, "provider" => name.clone()).record(latency.as_secs_f64());
    let (tokens_in, tokens_out) = match &result {
        Ok(completion) => (completion.tokens_in, completion.tokens_out),
        Err(_) => (0, 0),
    };
    metrics::counter!(m::LLM_TOKENS, "provider" => name.clone(), "direction" => "in").increment(u64::from(tokens_in));
    metrics::counter!(m::LLM_TOKENS, "provider" => name.clone(), "direction" => "out").increment(u64::from(tokens_out));
    let usage = LlmUsage {
        persona: &request.persona.name,
        provider: &name,
        model: slot.provider.model(),
        task: request.task.as_str(),
        tokens_in: i64::from(tokens_in),
        tokens_out: i64::from(tokens_out),
        latency_ms: latency.as_millis() as i64,
        outcome,
    };
    if let Err(err) = db.record_llm_usage(&usage).await {
        metrics::counter!(m::STORE_ERRORS, "operation" => "llm_usage").increment(1);
        tracing::warn!(error = %err, "cannot record llm usage");
    }
    result
}

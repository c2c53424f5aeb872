//! The LlmPool actor: every generation and embedding goes through it.
//!
//! - **Routing.** A request goes along the persona's chain of providers for its task
//!   (`llm_chains.reply` / `.post`, else `llm_chain`, else `llm.default_chain`); a provider's
//!   failure moves it to the next one (a failover).
//! - **Breakers.** Each provider has a circuit breaker ([`breaker`]): open after consecutive
//!   failures (at once on 401/403, reported once, loudly), skipped at no cost while open, one
//!   probe request when its cool-down ends.
//! - **Retries.** Only retryable errors (timeouts, 5xx/529, 429, broken streams), bounded,
//!   exponential with jitter, never earlier than the server's `Retry-After`; a `Retry-After`
//!   beyond `retry_max` fails over instead of waiting.
//! - **Progressive max tokens.** A reply that stops for length is asked again with twice the
//!   output budget, up to the ceiling, where the text is returned marked truncated.
//! - **Concurrency.** Per provider, `max_concurrency` calls at once; others wait in a queue of
//!   `max_queue` and beyond that fail fast with [`LlmError::QueueFull`].
//! - **Accounting and caps.** Tokens and cost per persona, provider and model go to metrics and,
//!   in batches, to `llm_usage` ([`usage`]); daily caps ([`budget`]) refuse a call before it is sent.
//! - **Embeddings joined under load.** At most `llm.embedding.max_in_flight` embedding requests
//!   are out at once; texts asked for meanwhile wait and go together in the next request
//!   ([`batch`]).
//!
//! Calls never block the mailbox: each completion runs in its own task, and embeddings in the
//! embedding queue's driver tasks, which answer the caller's reply port directly.

mod anthropic;
mod batch;
mod breaker;
mod budget;
pub mod offline;
pub mod offline_embed;
mod openai_compat;
mod provider;
mod sse;
mod usage;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use metrics::{Counter, Gauge, Histogram};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{Semaphore, SemaphorePermit, mpsc};

use crate::config::{Config, DEFAULT_EMBEDDING_IN_FLIGHT, ProviderConfig, ProviderKind};
use crate::metrics as m;
use crate::store::{Db, LlmUsage, now_ms};

pub use anthropic::AnthropicProvider;
pub use breaker::{Admission, Breaker, Phase};
pub use budget::{Budgets, Spend, day_start};
pub use offline::{OfflineProvider, approximate_tokens};
pub use offline_embed::OfflineEmbedder;
pub use openai_compat::{OpenAiCompatProvider, OpenAiEmbedder};
pub use provider::{ChatMessage, Completion, CompletionRequest, Embedder, Embeddings, LlmError, Provider, Role, Task};

pub struct LlmPool;

pub struct LlmPoolArgs {
    pub config: Arc<Config>,
    pub db: Db,
}

pub struct LlmPoolState {
    pool: Arc<Pool>,
    /// Usage rows to the writer, for pools rebuilt by `Reconfigure`.
    usage: mpsc::Sender<LlmUsage>,
    writer: usage::UsageWriter,
}

pub enum LlmMsg {
    /// Generate text along the persona's provider chain for the request's task.
    Complete { request: CompletionRequest, reply: RpcReplyPort<Result<Completion, LlmError>> },
    /// Embed texts with the configured embedding model (`llm.embedding`).
    Embed { texts: Vec<String>, reply: RpcReplyPort<Result<Embeddings, LlmError>> },
    /// Replace the providers and caps (a config reload); requests in flight finish on the old ones.
    Reconfigure { config: Arc<Config> },
}

/// Everything a request task needs.
struct Pool {
    slots: HashMap<String, Arc<Slot>>,
    default_chain: Vec<String>,
    /// The embedding model: an `openai_compat` provider with its slot (breaker, concurrency), or
    /// the offline embedder (no slot: nothing to protect).
    embedder: (Arc<dyn Embedder>, Option<Arc<Slot>>),
    /// Embedding requests waiting for the embedder, joined while it is busy.
    embeds: batch::EmbedQueue,
    /// The embedder's successful requests and the embeddings asked of it, registered once.
    embeddings_ok: Counter,
    embedding_jobs: Counter,
    budgets: Arc<Budgets>,
    usage: mpsc::Sender<LlmUsage>,
}

/// One provider with its limits and breaker.
struct Slot {
    provider: Arc<dyn Provider>,
    config: ProviderConfig,
    permits: Semaphore,
    waiting: AtomicUsize,
    breaker: Breaker,
    /// Set once an authentication failure has been reported; cleared by a success.
    auth_reported: AtomicBool,
    meters: SlotMeters,
}

/// A provider's metric handles, registered once ([`m::Kept`] says why): those every call
/// updates. Failures, retries and failovers are counted by the macros.
struct SlotMeters {
    phase: Gauge,
    seconds: Histogram,
    /// Each persona's counts of successful calls, by persona name.
    personas: Mutex<HashMap<String, PersonaMeters>>,
}

/// One persona's counts of a provider's successful calls.
#[derive(Clone)]
struct PersonaMeters {
    ok: Counter,
    tokens_in: Counter,
    tokens_out: Counter,
    cost: Counter,
}

impl SlotMeters {
    fn new(provider: &str) -> Self {
        let provider = provider.to_owned();
        SlotMeters {
            phase: metrics::gauge!(m::LLM_BREAKER_STATE, "provider" => provider.clone()),
            seconds: metrics::histogram!(m::LLM_SECONDS, "provider" => provider),
            personas: Mutex::new(HashMap::new()),
        }
    }

    /// `persona`'s counters on `provider`, registered at its first successful call.
    fn persona(&self, provider: &str, persona: &str) -> PersonaMeters {
        let mut personas = self.personas.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(meters) = personas.get(persona) {
            return meters.clone();
        }
        let (provider, name) = (provider.to_owned(), persona.to_owned());
        let tokens = |direction: &'static str| metrics::counter!(m::LLM_TOKENS, "provider" => provider.clone(), "persona" => name.clone(), "direction" => direction);
        let meters = PersonaMeters {
            ok: metrics::counter!(m::LLM_REQUESTS, "provider" => provider.clone(), "persona" => name.clone(), "outcome" => "ok"),
            tokens_in: tokens("in"),
            tokens_out: tokens("out"),
            cost: metrics::counter!(m::LLM_COST, "provider" => provider.clone(), "persona" => name.clone()),
        };
        // Kept only once the recorder is installed (see `m::Kept`).
        if m::installed() {
            personas.insert(name, meters.clone());
        }
        meters
    }
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
        let budgets = Arc::new(Budgets::new(args.config.service.llm.budget.clone()));
        let now = now_ms();
        budgets.seed(now, &args.db.llm_spend_since(day_start(now)).await?);
        let (writer, usage) = usage::UsageWriter::spawn(args.db.clone());
        let pool = Arc::new(build_pool(&args.config, budgets, usage.clone())?);
        Ok(LlmPoolState { pool, usage, writer })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut LlmPoolState,
    ) -> Result<(), ActorProcessingErr> {
        state.writer.stop().await;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: LlmMsg,
        state: &mut LlmPoolState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            LlmMsg::Complete { request, reply } => {
                let pool = state.pool.clone();
                tokio::spawn(async move {
                    let _ = reply.send(pool.complete(&request).await);
                });
            }
            LlmMsg::Embed { texts, reply } => {
                let pool = &state.pool;
                if pool.embeds.push(batch::Job { texts, reply }, pool.embedder.0.name()) == batch::Pushed::StartDriver {
                    let pool = state.pool.clone();
                    tokio::spawn(async move { pool.drive_embeddings().await });
                }
            }
            LlmMsg::Reconfigure { config } => {
                state.pool.budgets.reconfigure(config.service.llm.budget.clone());
                state.pool = Arc::new(build_pool(&config, state.pool.budgets.clone(), state.usage.clone())?);
            }
        }
        Ok(())
    }
}

fn build_pool(
    config: &Config,
    budgets: Arc<Budgets>,
    usage: mpsc::Sender<LlmUsage>,
) -> Result<Pool, ActorProcessingErr> {
    let mut slots = HashMap::new();
    for (name, provider_config) in &config.service.llm.providers {
        let key = config.llm_keys.get(name).cloned();
        let provider: Arc<dyn Provider> = match provider_config.kind {
            ProviderKind::Offline => {
                tracing::info!(provider = %name, "llm provider is the offline dry-run provider: no model is called");
                Arc::new(OfflineProvider::new(name.clone()))
            }
            ProviderKind::OpenaiCompat => Arc::new(OpenAiCompatProvider::new(name, provider_config, key)?),
            ProviderKind::Anthropic => Arc::new(AnthropicProvider::new(name, provider_config, key)?),
        };
        let slot = Slot {
            provider,
            config: provider_config.clone(),
            permits: Semaphore::new(provider_config.max_concurrency),
            waiting: AtomicUsize::new(0),
            breaker: Breaker::new(provider_config.breaker_failures, provider_config.breaker_cooldown.get()),
            auth_reported: AtomicBool::new(false),
            meters: SlotMeters::new(name),
        };
        slot.meters.phase.set(Phase::Closed as u8 as f64);
        slots.insert(name.clone(), Arc::new(slot));
    }
    let embedder: (Arc<dyn Embedder>, Option<Arc<Slot>>) = match &config.service.llm.embedding {
        Some(embedding) => {
            let slot = slots.get(&embedding.provider).cloned().ok_or("llm.embedding.provider is not configured")?;
            if slot.config.kind == ProviderKind::Offline {
                (Arc::new(OfflineEmbedder::new(&embedding.provider)), None)
            } else {
                let key = config.llm_keys.get(&embedding.provider).cloned();
                let embedder = OpenAiEmbedder::new(&embedding.provider, &slot.config, &embedding.model, key)?;
                (Arc::new(embedder), Some(slot))
            }
        }
        None => (Arc::new(OfflineEmbedder::new("offline")), None),
    };
    let in_flight = config.service.llm.embedding.as_ref().map_or(DEFAULT_EMBEDDING_IN_FLIGHT, |e| e.max_in_flight);
    let embeds = batch::EmbedQueue::new(in_flight);
    let provider = embedder.0.name().to_owned();
    Ok(Pool {
        slots,
        default_chain: config.service.llm.default_chain.clone(),
        embeddings_ok: metrics::counter!(m::LLM_EMBEDDINGS, "provider" => provider.clone(), "outcome" => "ok"),
        embedding_jobs: metrics::counter!(m::LLM_EMBEDDING_JOBS, "provider" => provider),
        embedder,
        embeds,
        budgets,
        usage,
    })
}

impl Pool {
    /// The providers a request goes through, in order.
    fn chain(&self, request: &CompletionRequest) -> Result<Vec<Arc<Slot>>, LlmError> {
        let persona = &request.persona;
        let for_task = match request.task {
            Task::Reply => &persona.chains().reply,
            Task::Post => &persona.chains().post,
            Task::Trade => &persona.chains().trade,
            Task::Review => &persona.chains().review,
        };
        let names = [for_task, &persona.llm_chain, &self.default_chain]
            .into_iter()
            .find(|names| !names.is_empty())
            .map(Vec::as_slice)
            .unwrap_or_default();
        names
            .iter()
            .map(|name| self.slots.get(name).cloned().ok_or_else(|| LlmError::UnknownProvider(name.clone())))
            .collect()
    }

    /// Tries each provider of the chain in order; returns the first success or the last error.
    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, LlmError> {
        let chain = self.chain(request)?;
        let mut last_error = LlmError::UnknownProvider("(empty chain)".into());
        for (index, slot) in chain.iter().enumerate() {
            match self.on_slot(slot, request).await {
                Ok(completion) => return Ok(completion),
                Err(err) if err.stops_the_chain() => return Err(err),
                Err(err) => {
                    if index + 1 < chain.len() {
                        let provider = slot.provider.name().to_owned();
                        metrics::counter!(m::LLM_FAILOVERS, "provider" => provider.clone(), "reason" => err.outcome())
                            .increment(1);
                        tracing::warn!(provider, error = %err, "llm provider failed, trying the next in the chain");
                    }
                    last_error = err;
                }
            }
        }
        Err(last_error)
    }

    /// One provider: breaker, budget, retries and progressive output budgets.
    async fn on_slot(&self, slot: &Slot, request: &CompletionRequest) -> Result<Completion, LlmError> {
        let name = slot.provider.name();
        let config = &slot.config;
        let ceiling = config.max_tokens_ceiling.max(config.max_tokens);
        let prompt_tokens: u64 = request.messages.iter().map(|m| approximate_tokens(&m.content) as u64).sum();
        let mut max_tokens = config.max_tokens;
        let mut attempt = 0;
        loop {
            let admission = slot.breaker.admit(Instant::now());
            if admission == Admission::Rejected {
                return Err(LlmError::CircuitOpen { provider: name.to_owned() });
            }
            self.publish_phase(slot);
            let estimate = Spend {
                tokens: prompt_tokens + u64::from(max_tokens),
                usd: cost(config, prompt_tokens, u64::from(max_tokens)),
            };
            if let Err(err) = self.budgets.check(&request.persona, estimate, now_ms()) {
                if admission == Admission::Probe {
                    slot.breaker.release_probe();
                }
                return Err(err);
            }
            match self.call(slot, request, max_tokens).await {
                Ok(completion) => {
                    slot.breaker.success();
                    slot.auth_reported.store(false, Ordering::SeqCst);
                    self.publish_phase(slot);
                    if completion.truncated && max_tokens < ceiling {
                        max_tokens = max_tokens.saturating_mul(2).min(ceiling);
                        metrics::counter!(m::LLM_TOKEN_ESCALATIONS, "provider" => name.to_owned()).increment(1);
                        tracing::debug!(
                            provider = name,
                            max_tokens,
                            "reply stopped for length, asking again with a larger budget"
                        );
                        continue;
                    }
                    return Ok(completion);
                }
                Err(err) => {
                    self.on_failure(slot, &err, admission);
                    if admission == Admission::Probe || !err.is_retryable() || attempt >= config.retries {
                        return Err(err);
                    }
                    let mut delay = crate::backoff::delay(config.retry_initial.get(), config.retry_max.get(), attempt);
                    if let LlmError::RateLimited { retry_after: Some(retry_after), .. } = &err {
                        if *retry_after > config.retry_max.get() {
                            // Waiting that long is worse than asking the next provider.
                            return Err(err);
                        }
                        delay = delay.max(*retry_after);
                    }
                    metrics::counter!(m::LLM_RETRIES, "provider" => name.to_owned()).increment(1);
                    tracing::debug!(provider = name, attempt, delay_ms = delay.as_millis() as u64, error = %err, "retrying llm call");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    fn on_failure(&self, slot: &Slot, err: &LlmError, admission: Admission) {
        let name = slot.provider.name();
        let auth = matches!(err, LlmError::Auth { .. });
        if auth && !slot.auth_reported.swap(true, Ordering::SeqCst) {
            tracing::error!(
                provider = name,
                "llm provider refused its credentials; its circuit is open until a probe succeeds"
            );
        }
        if err.is_provider_failure() {
            if slot.breaker.failure(Instant::now(), auth) && !auth {
                tracing::warn!(
                    provider = name,
                    cooldown_ms = slot.config.breaker_cooldown.get().as_millis() as u64,
                    "llm provider circuit opened"
                );
            }
        } else if admission == Admission::Probe {
            // A 429 or a full queue says nothing about the provider's health.
            slot.breaker.release_probe();
        }
        self.publish_phase(slot);
    }

    fn publish_phase(&self, slot: &Slot) {
        slot.meters.phase.set(slot.breaker.phase() as u8 as f64);
    }

    /// One provider call under its concurrency limit, measured and accounted.
    async fn call(&self, slot: &Slot, request: &CompletionRequest, max_tokens: u32) -> Result<Completion, LlmError> {
        let provider = slot.provider.name().to_owned();
        let persona = request.persona.name.clone();
        let place = acquire(slot)?;
        let _permit = place.wait().await;
        let started = Instant::now();
        let result =
            match tokio::time::timeout(slot.config.timeout.get(), slot.provider.complete(request, max_tokens)).await {
                Ok(result) => result,
                Err(_) => Err(LlmError::Timeout { provider: provider.clone() }),
            };
        let latency = started.elapsed();
        let outcome = match &result {
            Ok(_) => "ok",
            Err(err) => err.outcome(),
        };
        slot.meters.seconds.record(latency.as_secs_f64());
        let (tokens_in, tokens_out) = match &result {
            Ok(completion) => (u64::from(completion.tokens_in), u64::from(completion.tokens_out)),
            Err(err) => {
                metrics::counter!(m::LLM_REQUESTS, "provider" => provider.clone(), "persona" => persona.clone(), "outcome" => outcome)
                    .increment(1);
                metrics::counter!(m::LLM_ERRORS, "provider" => provider.clone(), "class" => err.outcome()).increment(1);
                (0, 0)
            }
        };
        let cost_usd = cost(&slot.config, tokens_in, tokens_out);
        if result.is_ok() {
            let meters = slot.meters.persona(&provider, &persona);
            meters.ok.increment(1);
            meters.tokens_in.increment(tokens_in);
            meters.tokens_out.increment(tokens_out);
            meters.cost.increment((cost_usd * 1_000_000.0).round() as u64);
            self.budgets.record(&persona, Spend { tokens: tokens_in + tokens_out, usd: cost_usd }, now_ms());
        }
        let row = LlmUsage {
            persona,
            provider,
            model: slot.provider.model().to_owned(),
            task: request.task.as_str(),
            tokens_in: tokens_in as i64,
            tokens_out: tokens_out as i64,
            latency_ms: latency.as_millis() as i64,
            outcome,
            cost_usd,
            at_ms: now_ms(),
        };
        if self.usage.send(row).await.is_err() {
            tracing::warn!("llm usage writer is gone; a usage row was not recorded");
        }
        result
    }

    /// Sends the embedding jobs that wait, a batch a request, until none wait ([`batch`]).
    async fn drive_embeddings(&self) {
        let _driving = batch::Driving::new(&self.embeds);
        while let Some(batch) = self.embeds.next() {
            let result = self.embed(batch.texts()).await;
            self.embedding_jobs.increment(batch.jobs() as u64);
            batch.answer(result, self.embedder.0.name());
        }
    }

    async fn embed(&self, texts: &[String]) -> Result<Embeddings, LlmError> {
        let (embedder, slot) = &self.embedder;
        let provider = embedder.name().to_owned();
        // Vectors are filed under the configured model name (`Config::embedding_model`), whatever
        // spelling the server answers with (a `:latest` tag, a dated snapshot).
        let configured = embedder.model().to_owned();
        let result = self.embed_on(embedder, slot.as_ref(), texts, provider).await;
        result.map(|embeddings| Embeddings { model: configured, ..embeddings })
    }

    async fn embed_on(
        &self,
        embedder: &Arc<dyn Embedder>,
        slot: Option<&Arc<Slot>>,
        texts: &[String],
        provider: String,
    ) -> Result<Embeddings, LlmError> {
        let Some(slot) = slot else {
            let result = embedder.embed(texts).await;
            self.embeddings_ok.increment(1);
            return result;
        };
        if slot.breaker.admit(Instant::now()) == Admission::Rejected {
            return Err(LlmError::CircuitOpen { provider });
        }
        let place = acquire(slot)?;
        let _permit = place.wait().await;
        let result = match tokio::time::timeout(slot.config.timeout.get(), embedder.embed(texts)).await {
            Ok(result) => result,
            Err(_) => Err(LlmError::Timeout { provider: provider.clone() }),
        };
        let outcome = match &result {
            Ok(_) => {
                slot.breaker.success();
                "ok"
            }
            Err(err) => {
                if err.is_provider_failure() {
                    slot.breaker.failure(Instant::now(), matches!(err, LlmError::Auth { .. }));
                }
                err.outcome()
            }
        };
        self.publish_phase(slot);
        match outcome {
            "ok" => self.embeddings_ok.increment(1),
            outcome => metrics::counter!(m::LLM_EMBEDDINGS, "provider" => provider, "outcome" => outcome).increment(1),
        }
        result
    }
}

/// USD for a number of tokens at a provider's prices.
fn cost(config: &ProviderConfig, tokens_in: u64, tokens_out: u64) -> f64 {
    (tokens_in as f64 * config.price_in_per_mtok + tokens_out as f64 * config.price_out_per_mtok) / 1_000_000.0
}

/// A place in a provider's concurrency limit: a free slot at once, or a place in its bounded
/// queue; a full queue fails fast.
enum Place<'a> {
    Now(SemaphorePermit<'a>),
    Queued(&'a Slot),
}

impl<'a> Place<'a> {
    async fn wait(self) -> SemaphorePermit<'a> {
        match self {
            Place::Now(permit) => permit,
            Place::Queued(slot) => {
                let permit = slot.permits.acquire().await;
                slot.waiting.fetch_sub(1, Ordering::SeqCst);
                permit.expect("llm semaphores are never closed")
            }
        }
    }
}

fn acquire(slot: &Slot) -> Result<Place<'_>, LlmError> {
    if let Ok(permit) = slot.permits.try_acquire() {
        return Ok(Place::Now(permit));
    }
    if slot.waiting.fetch_add(1, Ordering::SeqCst) >= slot.config.max_queue {
        slot.waiting.fetch_sub(1, Ordering::SeqCst);
        return Err(queue_full(slot.provider.name()));
    }
    Ok(Place::Queued(slot))
}

/// A request refused because `provider`'s queue is full, counted.
fn queue_full(provider: &str) -> LlmError {
    metrics::counter!(m::LLM_ERRORS, "provider" => provider.to_owned(), "class" => "queue_full").increment(1);
    LlmError::QueueFull { provider: provider.to_owned() }
}

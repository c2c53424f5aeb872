//! The configuration: one typed tree, read from `chorus.toml` plus one file per persona under
//! `personas/`, overridden by `CHORUS__SECTION__KEY` environment variables, validated up front.
//!
//! Loading and validation live in [`load`]; every problem is reported at once as
//! `file: key: message` (see [`ConfigErrors`]).

mod load;
mod secret;
mod team;
mod trading;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub use load::{ConfigError, ConfigErrors, MAX_WORKER_THREADS, load};
pub use secret::{Secret, SecretRef};
pub use team::{
    AirlockConfig, AirlockMode, CalendarConfig, Campaign, EffectivePolicy, PersonaAirlock, PolicyConfig, PolicyRule,
    Schedule, ScheduleOverride, ScheduleRule, TeamConfig, WEEKDAYS, parse_date,
};
pub use trading::{
    LimitsConfig, PaperConfig, PersonaTrading, TokenConfig, TradingConfig, TradingMode, USDC_MINT, to_units, usd_micro,
};

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub service: ServiceConfig,
    /// Personas by name, sorted.
    pub personas: BTreeMap<String, Arc<Persona>>,
    /// The admin bearer token, if its environment variable or file is set.
    pub admin_token: Option<Secret>,
    /// Resolved API keys of LLM providers, by provider name.
    pub llm_keys: BTreeMap<String, Secret>,
    /// The database password, if `store.password` is set.
    pub store_password: Option<Secret>,
    /// Resolved platform secrets of each persona, by `(persona, "x.consumer_key")` and the like.
    pub persona_secrets: BTreeMap<(String, String), Secret>,
    /// Jupiter's API key (`trading.jupiter_api_key`), if set.
    pub jupiter_key: Option<Secret>,
}

impl Config {
    /// A resolved persona secret, e.g. `secret("ada", "reddit.password")`.
    pub fn persona_secret(&self, persona: &str, key: &str) -> Option<Secret> {
        self.persona_secrets.get(&(persona.to_owned(), key.to_owned())).cloned()
    }

    /// A persona's airlock (the service's `[airlock]` with its overrides).
    pub fn airlock_for(&self, persona: &Persona) -> AirlockConfig {
        self.service.airlock.with(persona.airlock.as_deref())
    }

    /// Personas with a Trader (`[trading] enabled = true` in their file).
    pub fn trading_personas(&self) -> Vec<Arc<Persona>> {
        self.personas.values().filter(|persona| persona.trades()).cloned().collect()
    }
}

impl Config {
    /// Every (persona, platform) pair that gets an agent.
    pub fn agent_keys(&self) -> Vec<AgentKey> {
        self.personas
            .values()
            .flat_map(|persona| {
                persona
                    .platforms
                    .iter()
                    .filter(|platform| self.service.platform_enabled(**platform))
                    .map(|platform| AgentKey { persona: persona.name.clone(), platform: *platform })
            })
            .collect()
    }
}

/// Identifies one agent: a persona on a platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentKey {
    pub persona: String,
    pub platform: PlatformKind,
}

impl std::fmt::Display for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.persona, self.platform)
    }
}

/// Platforms Chorus knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlatformKind {
    Local,
    X,
    Reddit,
    Discord,
}

impl PlatformKind {
    pub const ALL: [PlatformKind; 4] =
        [PlatformKind::Local, PlatformKind::X, PlatformKind::Reddit, PlatformKind::Discord];

    pub fn as_str(self) -> &'static str {
        match self {
            PlatformKind::Local => "local",
            PlatformKind::X => "x",
            PlatformKind::Reddit => "reddit",
            PlatformKind::Discord => "discord",
        }
    }
}

impl std::fmt::Display for PlatformKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `chorus.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// `sandbox` (default: the local platform and simulators, no account needed) or `live`.
    #[serde(default)]
    pub mode: Mode,
    /// Directory of persona files, relative to this file.
    #[serde(default = "default_personas_dir")]
    pub personas_dir: String,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub supervisor: SupervisorConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub llm: LlmConfig,
    #[serde(default)]
    pub platforms: PlatformsConfig,
    #[serde(default)]
    pub publisher: PublisherConfig,
    #[serde(default)]
    pub memory: MemoryConfig,
    #[serde(default)]
    pub agents: AgentsConfig,
    #[serde(default)]
    pub sandbox: SandboxConfig,
    #[serde(default)]
    pub trading: TradingConfig,
    #[serde(default)]
    pub team: TeamConfig,
    #[serde(default)]
    pub calendar: CalendarConfig,
    /// Policy review rules of every persona (a persona file adds its own).
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Human approval defaults of every persona (a persona file may override them).
    #[serde(default)]
    pub airlock: AirlockConfig,
}

impl ServiceConfig {
    pub fn platform_enabled(&self, platform: PlatformKind) -> bool {
        match platform {
            PlatformKind::Local => self.platforms.local.enabled,
            PlatformKind::X => self.platforms.x.enabled,
            PlatformKind::Reddit => self.platforms.reddit.enabled,
            PlatformKind::Discord => self.platforms.discord.enabled,
        }
    }

    /// How often agents on `platform` read their mentions. Discord is not polled (its gateway
    /// pushes messages) and its agents start no poll timer; the value is only a placeholder.
    pub fn poll_every(&self, platform: PlatformKind) -> Duration {
        match platform {
            PlatformKind::Local => self.platforms.local.poll_every.get(),
            PlatformKind::X => self.platforms.x.poll_every.get(),
            PlatformKind::Reddit => self.platforms.reddit.poll_every.get(),
            PlatformKind::Discord => Duration::from_secs(60),
        }
    }

    /// The configured publishing budget of one account on `platform`.
    pub fn rate_limit(&self, platform: PlatformKind) -> &RateLimitConfig {
        match platform {
            PlatformKind::Local => &self.platforms.local.rate_limit,
            PlatformKind::X => &self.platforms.x.rate_limit,
            PlatformKind::Reddit => &self.platforms.reddit.rate_limit,
            PlatformKind::Discord => &self.platforms.discord.rate_limit,
        }
    }

    /// Whether `platform` talks to the built-in simulator (sandbox mode only).
    pub fn simulated(&self, platform: PlatformKind) -> bool {
        self.mode == Mode::Sandbox
            && match platform {
                PlatformKind::Local => false,
                PlatformKind::X => self.platforms.x.simulated,
                PlatformKind::Reddit => self.platforms.reddit.simulated,
                PlatformKind::Discord => self.platforms.discord.simulated,
            }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Sandbox,
    Live,
}

fn default_personas_dir() -> String {
    "personas".to_owned()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://path` (created if missing; relative to the working directory) or `postgres://…`.
    pub url: String,
    pub max_connections: u32,
    /// The database password, kept out of `url`.
    pub password: Option<SecretRef>,
    /// How often the Store actor checks the database is reachable.
    pub health_every: Dur,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/chorus.db".to_owned(),
            max_connections: 8,
            password: None,
            health_every: Dur::secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Loopback by default; the probes, /metrics and the local platform are open, the rest needs
    /// the bearer token.
    pub listen: SocketAddr,
    /// Where the admin bearer token comes from.
    pub token: SecretRef,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: SecretRef { env: Some("CHORUS_ADMIN_TOKEN".to_owned()), file: None },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `auto` (pretty on a terminal, plain otherwise), `pretty`, `plain` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info,chorus=debug`; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { format: LogFormat::Auto, filter: "info".to_owned() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Pretty,
    Plain,
    Json,
}

/// Restart policy of every supervised child (see `supervisor.rs`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// Restarts allowed within `window` before the child's circuit opens.
    pub max_restarts: u32,
    pub window: Dur,
    pub backoff_initial: Dur,
    pub backoff_max: Dur,
    /// How long an open circuit parks the child before one more try.
    pub cooldown: Dur,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Dur::secs(60),
            backoff_initial: Dur::millis(500),
            backoff_max: Dur::secs(30),
            cooldown: Dur::secs(300),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long a graceful shutdown may drain in-flight work and the outbox.
    pub deadline: Dur,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { deadline: Dur::secs(10) }
    }
}

/// The async runtime that runs the actors and their tasks (read at start only).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// The runtime's worker threads; unset: one a core.
    pub worker_threads: Option<usize>,
}

impl RuntimeConfig {
    /// The worker threads to start: the configured number, or one a core.
    pub fn worker_threads(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Provider used by personas that do not name their own chain.
    pub default_chain: Vec<String>,
    /// Providers by name.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// The embedding model for Memory, if any.
    pub embedding: Option<EmbeddingConfig>,
    /// Daily spend caps.
    pub budget: BudgetConfig,
}

impl Default for LlmConfig {
    fn default() -> Self {
        let mut providers = BTreeMap::new();
        providers.insert("offline".to_owned(), ProviderConfig::offline());
        Self { default_chain: vec!["offline".to_owned()], providers, embedding: None, budget: BudgetConfig::default() }
    }
}

/// One LLM provider. Every key but `kind` has a default; `openai_compat` and `anthropic` need
/// `base_url` and `model`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// `openai_compat`: the API root, e.g. `http://127.0.0.1:11434/v1` (`/chat/completions` and
    /// `/embeddings` are appended). `anthropic`: e.g. `https://api.anthropic.com` (`/v1/messages`).
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub api_key: Option<SecretRef>,
    /// Stream the response (SSE) instead of waiting for the whole body.
    pub stream: bool,
    /// `anthropic-version` header of the Anthropic Messages API.
    pub anthropic_version: String,
    /// Limit of one request, first byte to last.
    pub timeout: Dur,
    /// Requests in flight at once; more wait in a bounded queue.
    pub max_concurrency: usize,
    /// Requests allowed to wait for a slot before new ones fail fast.
    pub max_queue: usize,
    /// First output-token budget of a request; doubled while the reply stops for length ...
    pub max_tokens: u32,
    /// ... up to this ceiling, where the text is returned marked truncated.
    pub max_tokens_ceiling: u32,
    /// Extra attempts on this provider for retryable errors (timeouts, 5xx, 429, broken streams).
    pub retries: u32,
    /// First retry delay (doubled each attempt, ±20 % jitter, never before a `Retry-After`).
    pub retry_initial: Dur,
    pub retry_max: Dur,
    /// Consecutive failures that open the provider's circuit ...
    pub breaker_failures: u32,
    /// ... for this long; then one probe request decides (half-open).
    pub breaker_cooldown: Dur,
    /// Price in USD per million input tokens, for spend accounting and caps.
    pub price_in_per_mtok: f64,
    /// Price in USD per million output tokens.
    pub price_out_per_mtok: f64,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            kind: ProviderKind::Offline,
            base_url: None,
            model: None,
            api_key: None,
            stream: false,
            anthropic_version: "2023-06-01".to_owned(),
            timeout: Dur::secs(60),
            max_concurrency: 8,
            max_queue: 256,
            max_tokens: 256,
            max_tokens_ceiling: 4096,
            retries: 2,
            retry_initial: Dur::millis(500),
            retry_max: Dur::secs(10),
            breaker_failures: 5,
            breaker_cooldown: Dur::secs(30),
            price_in_per_mtok: 0.0,
            price_out_per_mtok: 0.0,
        }
    }
}

impl ProviderConfig {
    fn offline() -> Self {
        Self::default()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Deterministic dry-run text from the persona file; no network.
    #[default]
    Offline,
    /// Any OpenAI-compatible `/chat/completions` server.
    OpenaiCompat,
    /// The Anthropic Messages API.
    Anthropic,
}

/// Embeddings for Memory, through an `openai_compat` provider's `/embeddings`, or the offline
/// embedder (an `offline` provider; also the default when `llm.embedding` is not set).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    /// An `openai_compat` provider (its base URL, key, timeout and concurrency are used), or an
    /// `offline` one.
    pub provider: String,
    /// The model name sent to the provider; ignored by the offline embedder.
    pub model: String,
    /// Embedding requests in flight at once. Texts asked for while that many are out wait and go
    /// together in the next request, so under load requests carry many texts and their rate stays
    /// near `max_in_flight` ÷ the round trip, whatever the load.
    #[serde(default = "default_embedding_in_flight")]
    pub max_in_flight: usize,
}

/// Two requests out: one slow request does not hold every other text.
pub const DEFAULT_EMBEDDING_IN_FLIGHT: usize = 2;

fn default_embedding_in_flight() -> usize {
    DEFAULT_EMBEDDING_IN_FLIGHT
}

impl Config {
    /// The embedding model Memory's vectors belong to: vectors of another model are never
    /// compared with them, and are embedded again.
    pub fn embedding_model(&self) -> String {
        let offline = crate::llm::offline_embed::MODEL.to_owned();
        match &self.service.llm.embedding {
            Some(embedding) => match self.service.llm.providers.get(&embedding.provider) {
                Some(provider) if provider.kind != ProviderKind::Offline => embedding.model.clone(),
                _ => offline,
            },
            None => offline,
        }
    }
}

/// Daily spend caps (UTC days). Unset means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// All personas together.
    pub global_daily_tokens: Option<u64>,
    pub global_daily_usd: Option<f64>,
    /// Each persona, unless its file sets its own `budget`.
    pub persona_daily_tokens: Option<u64>,
    pub persona_daily_usd: Option<f64>,
}

/// A persona's own daily caps, overriding `llm.budget.persona_daily_*`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersonaBudget {
    pub daily_tokens: Option<u64>,
    pub daily_usd: Option<f64>,
}

/// Provider chains by task, overriding the persona's `llm_chain` for that task.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskChains {
    pub reply: Vec<String>,
    pub post: Vec<String>,
    pub trade: Vec<String>,
    /// The optional tone review of the policy review.
    pub review: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlatformsConfig {
    pub local: LocalPlatformConfig,
    pub x: XPlatformConfig,
    pub reddit: RedditPlatformConfig,
    pub discord: DiscordPlatformConfig,
}

/// X (Twitter) API v2.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XPlatformConfig {
    pub enabled: bool,
    /// In sandbox mode: talk to the built-in X simulator instead of `base_url` (no account needed).
    pub simulated: bool,
    pub base_url: String,
    pub poll_every: Dur,
    pub timeout: Dur,
    /// Mentions read per poll (5 to 100).
    pub mentions_per_poll: u32,
    /// Posting budget per account on top of what the headers report, e.g. your plan's quota.
    pub rate_limit: RateLimitConfig,
}

impl Default for XPlatformConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            simulated: false,
            base_url: "https://api.x.com".to_owned(),
            poll_every: Dur::secs(60),
            timeout: Dur::secs(30),
            mentions_per_poll: 20,
            // The free plan's 17 posts per 24 hours per user.
            rate_limit: RateLimitConfig { burst: 17, per: Dur::secs(86_400), max_wait: Dur::secs(60) },
        }
    }
}

/// Reddit's OAuth API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedditPlatformConfig {
    pub enabled: bool,
    /// In sandbox mode: talk to the built-in Reddit simulator (no account needed).
    pub simulated: bool,
    pub auth_base_url: String,
    pub api_base_url: String,
    /// A descriptive User-Agent, as Reddit requires: `<app>/<version> (by u/<username>)`.
    pub user_agent: String,
    pub poll_every: Dur,
    pub timeout: Dur,
    /// Posting budget per account on top of what the headers report.
    pub rate_limit: RateLimitConfig,
}

impl Default for RedditPlatformConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            simulated: false,
            auth_base_url: "https://www.reddit.com".to_owned(),
            api_base_url: "https://oauth.reddit.com".to_owned(),
            user_agent: concat!("chorus/", env!("CARGO_PKG_VERSION"), " (multi-persona agent service)").to_owned(),
            poll_every: Dur::secs(60),
            timeout: Dur::secs(30),
            rate_limit: RateLimitConfig { burst: 10, per: Dur::secs(600), max_wait: Dur::secs(60) },
        }
    }
}

/// Discord: the REST API at `api_base_url` and the gateway websocket it reports.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordPlatformConfig {
    pub enabled: bool,
    /// In sandbox mode: talk to the built-in Discord simulator (no bot token needed).
    pub simulated: bool,
    /// `https://discord.com`; requests go to `{api_base_url}/api/v10/...`.
    pub api_base_url: String,
    pub timeout: Dur,
    /// Longest reply, in characters, before it is cut back to full sentences. Anything over
    /// 2000 characters is sent as several messages in order.
    pub max_reply_chars: usize,
    /// Sending budget per bot on top of what the headers report (Discord allows about 5
    /// messages per 5 seconds in one channel).
    pub rate_limit: RateLimitConfig,
}

impl Default for DiscordPlatformConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            simulated: false,
            api_base_url: "https://discord.com".to_owned(),
            timeout: Dur::secs(15),
            max_reply_chars: 6000,
            rate_limit: RateLimitConfig { burst: 5, per: Dur::secs(5), max_wait: Dur::secs(30) },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalPlatformConfig {
    pub enabled: bool,
    /// How often each agent reads its mentions.
    pub poll_every: Dur,
    /// Publishing budget per account.
    pub rate_limit: RateLimitConfig,
}

impl Default for LocalPlatformConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_every: Dur::secs(2),
            rate_limit: RateLimitConfig { burst: 10, per: Dur::secs(60), max_wait: Dur::secs(60) },
        }
    }
}

/// A token bucket: `burst` tokens, refilled evenly over `per`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub burst: u32,
    pub per: Dur,
    /// A caller that would wait longer than this is refused instead (and retries later).
    #[serde(default = "default_max_wait")]
    pub max_wait: Dur,
}

fn default_max_wait() -> Dur {
    Dur::secs(60)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublisherConfig {
    /// Rows published per pass.
    pub batch: u32,
    /// First retry delay of a failed publish; doubles up to `retry_max`.
    pub retry_initial: Dur,
    pub retry_max: Dur,
    /// How often pending rows are looked at even without new work.
    pub sweep_every: Dur,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self { batch: 64, retry_initial: Dur::secs(2), retry_max: Dur::secs(300), sweep_every: Dur::secs(1) }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Recent items of the persona given to each generation.
    pub recall_recent: u32,
    /// Recent items of the same conversation given to each reply.
    pub recall_conversation: u32,
    /// Budget, in estimated tokens, of the conversation turns given verbatim to a reply. Older
    /// turns beyond it are summarised (a short line each, then a count), never silently dropped.
    pub context_tokens: u32,
    /// Memories most similar to a mention given to its reply (the persona's posts and facts, and
    /// its public replies and mentions), within a quarter of `context_tokens`.
    pub recall_relevant: u32,
    /// A post or reply at least this similar (cosine) to a recent output of any persona on any
    /// platform is a duplicate: it is written again, or dropped.
    pub dedup_threshold: f32,
    /// How far back "recent outputs" go for dedup.
    pub dedup_window: Dur,
    /// New drafts written after a duplicate (or empty) one before the item is dropped.
    pub dedup_attempts: u32,
    /// How long memories of each kind are kept (absent: forever), and the cap per persona.
    pub retention: RetentionConfig,
    /// How often retention runs and memories without a vector of the current model are embedded.
    pub sweep_every: Dur,
    /// Vectors a persona's index (and the team's outputs index) searches exactly; past it, an
    /// HNSW graph is built from them in the background and searched instead.
    pub exact_threshold: u32,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            recall_recent: 5,
            recall_conversation: 24,
            context_tokens: 1200,
            recall_relevant: 4,
            dedup_threshold: 0.85,
            dedup_window: Dur::secs(7 * 86_400),
            dedup_attempts: 2,
            retention: RetentionConfig::default(),
            sweep_every: Dur::secs(60),
            exact_threshold: crate::memory::index::EXACT_THRESHOLD as u32,
        }
    }
}

/// `[memory.retention]`: the age past which memories of a kind are deleted, and a cap per persona
/// (its oldest memories past it are deleted; facts from the persona file are always kept).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub inbound: Option<Dur>,
    pub reply: Option<Dur>,
    pub post: Option<Dur>,
    pub max_per_persona: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { inbound: Some(Dur::secs(30 * 86_400)), reply: None, post: None, max_per_persona: 100_000 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// Mentions an agent generates replies for at once; the rest wait in the database.
    pub max_in_flight: usize,
    /// Stored, unanswered mentions an agent holds before it stops reading more: past it, new
    /// mentions wait on the platform (a poll platform's cursor stays put) until the backlog
    /// drains. Pushed mentions (Discord) are stored regardless.
    pub max_pending: usize,
    /// Replies an agent may have drafted and not yet published: its account's rows waiting in the
    /// outbox plus the replies being written. At the bound it starts no new reply until there is
    /// room for an eighth of them again (at least one).
    pub max_unpublished: usize,
    /// Turns another persona may take in one conversation before we stop answering it.
    pub max_bot_turns: u32,
    /// Failed polls in a row (each already retried) before the agent asks to be restarted.
    pub max_poll_failures: u32,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self { max_in_flight: 4, max_pending: 1_000, max_unpublished: 16, max_bot_turns: 2, max_poll_failures: 3 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// A simulated crowd that mentions personas on the local platform (sandbox mode only).
    pub crowd: bool,
    pub crowd_every: Dur,
    /// Start the LLM simulator (OpenAI-compatible and Anthropic wire formats) on this loopback
    /// address, so providers can point at it without any account (sandbox mode only).
    pub llm_simulator: Option<std::net::SocketAddr>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self { crowd: true, crowd_every: Dur::secs(5), llm_simulator: None }
    }
}

/// `personas/<name>.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persona {
    /// Handle on every platform (`@name` on the local platform); lowercase letters, digits, `_`.
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub bio: String,
    /// How the persona writes.
    pub voice: String,
    pub topics: Vec<String>,
    #[serde(default)]
    pub example_posts: Vec<String>,
    pub platforms: Vec<PlatformKind>,
    pub schedule: Schedule,
    /// LLM providers to try in order; the service's `llm.default_chain` when empty.
    #[serde(default)]
    pub llm_chain: Vec<String>,
    // The sections from here on are boxed: most personas leave most of them out, and inline they
    // made every loaded persona 1,168 bytes (10,000 personas: 11 MB); boxed, 392 bytes.
    /// Chains for one task (`reply`, `post`, `trade`), overriding `llm_chain` for it (see
    /// [`Persona::chains`]).
    #[serde(default)]
    pub llm_chains: Option<Box<TaskChains>>,
    /// Daily LLM spend caps of this persona.
    #[serde(default)]
    pub budget: Option<Box<PersonaBudget>>,
    /// The persona's X account (not needed with the simulator).
    #[serde(default)]
    pub x: Option<Box<PersonaX>>,
    /// The persona's Reddit account (not needed with the simulator).
    #[serde(default)]
    pub reddit: Option<Box<PersonaReddit>>,
    /// The persona's Discord bot (optional with the simulator).
    #[serde(default)]
    pub discord: Option<Box<PersonaDiscord>>,
    /// The persona's Trader, if it trades.
    #[serde(default)]
    pub trading: Option<Box<PersonaTrading>>,
    /// Policy rules added to the service's `[policy]`.
    #[serde(default)]
    pub policy: Option<Box<PolicyConfig>>,
    /// Overrides of the service's `[airlock]`.
    #[serde(default)]
    pub airlock: Option<Box<PersonaAirlock>>,
}

/// The chains of a persona without `[llm_chains]`.
static NO_TASK_CHAINS: TaskChains =
    TaskChains { reply: Vec::new(), post: Vec::new(), trade: Vec::new(), review: Vec::new() };

impl Persona {
    /// The persona's chains by task (all empty without `[llm_chains]`).
    pub fn chains(&self) -> &TaskChains {
        self.llm_chains.as_deref().unwrap_or(&NO_TASK_CHAINS)
    }

    /// Whether the persona has a Trader.
    pub fn trades(&self) -> bool {
        self.trading.as_ref().is_some_and(|trading| trading.enabled)
    }

    /// The persona's handle on `platform`: its account's username where one is configured,
    /// else its name (the local platform, the simulators).
    pub fn handle_on(&self, platform: PlatformKind) -> String {
        let configured = match platform {
            PlatformKind::Local => None,
            PlatformKind::X => self.x.as_ref().map(|x| x.username.clone()),
            PlatformKind::Reddit => self.reddit.as_ref().map(|reddit| reddit.username.clone()),
            PlatformKind::Discord => self.discord.as_ref().and_then(|discord| discord.username.clone()),
        };
        configured.unwrap_or_else(|| self.name.clone()).to_ascii_lowercase()
    }
}

/// An X account: OAuth 1.0a user context or an OAuth 2.0 user token.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonaX {
    pub username: String,
    pub auth: XAuthConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum XAuthConfig {
    Oauth1 {
        consumer_key: SecretRef,
        consumer_secret: SecretRef,
        access_token: SecretRef,
        access_token_secret: SecretRef,
    },
    Oauth2 {
        client_id: String,
        client_secret: Option<SecretRef>,
        access_token: SecretRef,
        refresh_token: Option<SecretRef>,
    },
}

/// A Reddit script-app account.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonaReddit {
    pub username: String,
    pub client_id: String,
    pub client_secret: SecretRef,
    pub password: SecretRef,
    /// Where scheduled posts go, e.g. `"test"` for r/test.
    pub subreddit: String,
}

/// A Discord bot. It answers direct messages, @mentions and replies to its own messages
/// everywhere it is, and every message in `channels`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonaDiscord {
    /// The bot's username, used in prompts; the persona's name when omitted.
    #[serde(default)]
    pub username: Option<String>,
    /// The bot token (without the `Bot ` prefix). Not needed with the simulator.
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// Channel ids where the bot answers every message, not only mentions and replies (needs the
    /// privileged Message Content intent, which is only requested when this is set).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Channel id where scheduled posts go; without one the persona posts nothing on its own on
    /// Discord and only answers.
    #[serde(default)]
    pub post_channel: Option<String>,
}

/// A duration written like `"90m"`, `"2s"` or `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
    pub const fn millis(millis: u64) -> Self {
        Self(Duration::from_millis(millis))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Dur;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration like \"90m\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Dur, E> {
                humantime::parse_duration(text)
                    .map(Dur)
                    .map_err(|_| E::custom(format!("expected a duration like \"90m\", got {text:?}")))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Writes `text` to `name` under `dir`, creating its directories (configuration files for tests).
#[cfg(test)]
pub(crate) fn write_test_file(dir: &std::path::Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

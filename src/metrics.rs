//! Every metric Chorus exports, declared once.
//!
//! Names follow `chorus_<noun>_<unit>_total` for counters; labels come only from small fixed sets
//! (platform, provider, actor kind, outcome) — never persona text, user ids or error strings.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Label, Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

// Supervision
pub const SUPERVISOR_RESTARTS: &str = "chorus_supervisor_restarts_total";
pub const SUPERVISOR_CIRCUIT_OPENED: &str = "chorus_supervisor_circuit_opened_total";
pub const SUPERVISOR_CHILDREN: &str = "chorus_supervisor_children";
// Store
pub const STORE_UP: &str = "chorus_store_up";
pub const STORE_ERRORS: &str = "chorus_store_errors_total";
pub const STORE_WAL_CHECKPOINTS: &str = "chorus_store_wal_checkpoints_total";
// Inbound
pub const INBOUND_EVENTS: &str = "chorus_inbound_events_total";
pub const POLL_FAILURES: &str = "chorus_platform_poll_failures_total";
pub const MALFORMED_PAYLOADS: &str = "chorus_platform_malformed_payloads_total";
// Outbox
pub const OUTBOX_ENQUEUED: &str = "chorus_outbox_enqueued_total";
pub const OUTBOX_PUBLISHED: &str = "chorus_outbox_published_total";
pub const OUTBOX_PENDING: &str = "chorus_outbox_pending";
pub const PUBLISH_SECONDS: &str = "chorus_publish_duration_seconds";
// LLM
pub const LLM_REQUESTS: &str = "chorus_llm_requests_total";
pub const LLM_TOKENS: &str = "chorus_llm_tokens_total";
pub const LLM_SECONDS: &str = "chorus_llm_request_duration_seconds";
pub const LLM_ERRORS: &str = "chorus_llm_errors_total";
pub const LLM_COST: &str = "chorus_llm_cost_microusd_total";
pub const LLM_BREAKER_STATE: &str = "chorus_llm_breaker_state";
pub const LLM_FAILOVERS: &str = "chorus_llm_failovers_total";
pub const LLM_RETRIES: &str = "chorus_llm_retries_total";
pub const LLM_TOKEN_ESCALATIONS: &str = "chorus_llm_token_escalations_total";
pub const LLM_BUDGET_REFUSALS: &str = "chorus_llm_budget_refusals_total";
pub const LLM_EMBEDDINGS: &str = "chorus_llm_embedding_requests_total";
pub const LLM_EMBEDDING_JOBS: &str = "chorus_llm_embedding_jobs_total";
// Rate limits
pub const RATE_LIMIT_WAITS: &str = "chorus_rate_limit_waits_total";
pub const RATE_LIMIT_REFUSALS: &str = "chorus_rate_limit_refusals_total";
pub const POLLS_HELD: &str = "chorus_agent_polls_held_total";
pub const DRAFTING_HELD: &str = "chorus_agent_drafting_held_total";
// Memory
pub const MEMORIES_STORED: &str = "chorus_memories_stored_total";
pub const CONTEXT_SUMMARISED: &str = "chorus_context_turns_summarised_total";
pub const MEMORIES_DELETED: &str = "chorus_memories_deleted_total";
pub const MEMORY_SEARCH_SECONDS: &str = "chorus_memory_search_duration_seconds";
pub const MEMORY_INDEX_VECTORS: &str = "chorus_memory_index_vectors";
pub const MEMORY_INDEX_BYTES: &str = "chorus_memory_index_bytes";
pub const MEMORY_GRAPH_BUILDS: &str = "chorus_memory_graph_builds_total";
pub const MEMORY_OUTPUTS_VECTORS: &str = "chorus_memory_outputs_vectors";
pub const DEDUP_CHECKS: &str = "chorus_dedup_checks_total";
pub const DEDUP_OUTCOMES: &str = "chorus_dedup_outcomes_total";
// Trader
pub const TRADER_DECISIONS: &str = "chorus_trader_decisions_total";
pub const TRADER_REFUSALS: &str = "chorus_trader_refusals_total";
pub const TRADER_TRADES: &str = "chorus_trader_trades_total";
pub const TRADER_VOLUME: &str = "chorus_trader_volume_microusd_total";
pub const TRADER_PAPER_PNL: &str = "chorus_trader_paper_pnl_usd";
pub const TRADER_KILL_SWITCH: &str = "chorus_trader_kill_switch";
// Content pipeline (TeamLeader)
pub const CONTENT_PLANNED: &str = "chorus_content_planned_total";
pub const CONTENT_DECISIONS: &str = "chorus_content_decisions_total";
pub const POLICY_VIOLATIONS: &str = "chorus_policy_violations_total";
pub const AIRLOCK_DECISIONS: &str = "chorus_airlock_decisions_total";
pub const AIRLOCK_HELD: &str = "chorus_airlock_held";
pub const COORDINATION: &str = "chorus_coordination_total";
pub const ENGAGEMENT_FETCHES: &str = "chorus_engagement_fetches_total";
pub const REPORTS: &str = "chorus_reports_total";
// Service
pub const CONFIG_RELOADS: &str = "chorus_config_reloads_total";
pub const LOCAL_POSTS: &str = "chorus_local_posts_total";
pub const AGENTS: &str = "chorus_agents";

/// Installs the process-wide Prometheus recorder once and returns its handle. Later calls (more
/// services in one test process) share it.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0])
                .expect("static bucket list is not empty")
                .install_recorder()
                .expect("the metrics recorder is installed once per process");
            INSTALLED.store(true, Ordering::Release);
            describe();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".to_owned())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn metrics upkeep thread");
            handle
        })
        .clone()
}

/// Whether [`install`] has installed the recorder. Until then a handle is the no-op one, and
/// [`Kept`] does not keep it.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether [`install`] has run in this process.
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// A metric's handles by their label values (all `'static`), each registered with the recorder
/// once, at its first use, and kept.
///
/// A `counter!(…)` call registers its key on every call: it builds the key, hashes it, finds it
/// in the recorder's registry by comparing names and labels, and drops its labels. At the twenty
/// or so counts a reply makes, that was about 2 % of a reply's instructions (31.5k of 1.525
/// million at 20/s, callgrind). A kept handle is one atomic add, after a lock and a lookup by the
/// few values.
///
/// Handles are kept only once [`install`] has run: one registered before would stay a no-op.
pub struct Kept<H, const N: usize> {
    name: &'static str,
    labels: [&'static str; N],
    handles: LazyLock<Mutex<HashMap<[&'static str; N], H>>>,
}

/// A kind of metric handle, as [`Kept`] registers it.
pub trait Handle: Clone {
    fn register(name: &'static str, labels: Vec<Label>) -> Self;
}

impl Handle for Counter {
    fn register(name: &'static str, labels: Vec<Label>) -> Self {
        metrics::counter!(name, labels)
    }
}

impl Handle for Gauge {
    fn register(name: &'static str, labels: Vec<Label>) -> Self {
        metrics::gauge!(name, labels)
    }
}

impl Handle for Histogram {
    fn register(name: &'static str, labels: Vec<Label>) -> Self {
        metrics::histogram!(name, labels)
    }
}

impl<H: Handle, const N: usize> Kept<H, N> {
    /// The handles of metric `name`, labelled `labels` (names, in the order [`Kept::get`] takes
    /// their values).
    pub const fn new(name: &'static str, labels: [&'static str; N]) -> Self {
        Kept { name, labels, handles: LazyLock::new(|| Mutex::new(HashMap::new())) }
    }

    /// The handle for these label values.
    pub fn get(&self, values: [&'static str; N]) -> H {
        let register = || {
            let labels = self.labels.iter().zip(values).map(|(key, value)| Label::from_static_parts(key, value));
            H::register(self.name, labels.collect())
        };
        if !installed() {
            return register();
        }
        let mut handles = self.handles.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        handles.entry(values).or_insert_with(register).clone()
    }
}

fn describe() {
    describe_counter!(SUPERVISOR_RESTARTS, "Child actors restarted, by actor kind.");
    describe_counter!(SUPERVISOR_CIRCUIT_OPENED, "Child circuits opened (child parked), by actor kind and reason.");
    describe_gauge!(SUPERVISOR_CHILDREN, "Supervised children, by actor kind and state (running, restarting, parked).");
    describe_gauge!(STORE_UP, "1 when the last database health check succeeded.");
    describe_counter!(STORE_ERRORS, "Failed database operations, by operation.");
    describe_counter!(
        STORE_WAL_CHECKPOINTS,
        "SQLite WAL checkpoints run, by who ran them: the chorus-wal thread, or a commit past the log's bound."
    );
    describe_counter!(INBOUND_EVENTS, "Inbound mentions, by platform and outcome.");
    describe_counter!(POLL_FAILURES, "Failed platform polls, by platform.");
    describe_counter!(MALFORMED_PAYLOADS, "Platform payload items that did not parse and were skipped, by platform.");
    describe_counter!(OUTBOX_ENQUEUED, "Items written to the outbox, by platform and kind.");
    describe_counter!(OUTBOX_PUBLISHED, "Publish attempts, by platform and outcome.");
    describe_gauge!(OUTBOX_PENDING, "Outbox rows waiting to be published.");
    describe_histogram!(PUBLISH_SECONDS, Unit::Seconds, "Time of one platform publish call, by platform.");
    describe_counter!(LLM_REQUESTS, "LLM provider calls, by provider, persona and outcome.");
    describe_counter!(LLM_TOKENS, "LLM tokens, by provider, persona and direction (in, out).");
    describe_counter!(LLM_ERRORS, "Failed LLM provider calls, by provider and error class.");
    describe_counter!(LLM_COST, "LLM spend in millionths of a US dollar, by provider and persona.");
    describe_gauge!(LLM_BREAKER_STATE, "Provider circuit breaker: 0 closed, 1 open, 2 half-open.");
    describe_counter!(
        LLM_FAILOVERS,
        "Requests moved on from a provider to the next in the chain, by provider and reason."
    );
    describe_counter!(LLM_RETRIES, "Retries of a provider call after a retryable error, by provider.");
    describe_counter!(LLM_TOKEN_ESCALATIONS, "Calls repeated with a larger output budget after stopping for length.");
    describe_counter!(LLM_BUDGET_REFUSALS, "Requests refused by a daily spend cap, by persona, scope and unit.");
    describe_counter!(LLM_EMBEDDINGS, "Embedding requests, by provider and outcome.");
    describe_counter!(
        LLM_EMBEDDING_JOBS,
        "Embeddings asked of the pool, by provider; several go in one request while the embedder is busy."
    );
    describe_histogram!(LLM_SECONDS, Unit::Seconds, "LLM request latency, by provider.");
    describe_counter!(RATE_LIMIT_WAITS, "Permits that had to wait for the bucket, by platform.");
    describe_counter!(RATE_LIMIT_REFUSALS, "Permits refused because the wait was too long, by platform.");
    describe_counter!(
        POLLS_HELD,
        "Times an agent stopped reading mentions because its backlog reached agents.max_pending, by platform."
    );
    describe_counter!(
        DRAFTING_HELD,
        "Times an agent stopped starting replies because its account's outbox backlog reached agents.max_unpublished, by platform."
    );
    describe_counter!(MEMORIES_STORED, "Memories stored, by kind.");
    describe_counter!(MEMORIES_DELETED, "Memories deleted by retention, by kind (or over_cap).");
    describe_histogram!(
        MEMORY_SEARCH_SECONDS,
        Unit::Seconds,
        "One vector search (recall, dedup check or admin search)."
    );
    describe_gauge!(MEMORY_INDEX_VECTORS, "Vectors in the personas' memory indexes.");
    describe_gauge!(MEMORY_INDEX_BYTES, Unit::Bytes, "Bytes held by the personas' memory indexes.");
    describe_gauge!(
        MEMORY_OUTPUTS_VECTORS,
        "Vectors in the team's index of recent outputs for dedup, drafts checked but not yet stored included."
    );
    describe_counter!(
        MEMORY_GRAPH_BUILDS,
        "Memory indexes moved to an HNSW graph past memory.exact_threshold, by outcome (built, failed)."
    );
    describe_counter!(DEDUP_CHECKS, "Drafts compared with the team's recent outputs, by outcome (unique, duplicate).");
    describe_counter!(
        DEDUP_OUTCOMES,
        "What happened to drafts that were duplicates or empty, by outcome (rewritten, dropped) and kind (post, reply)."
    );
    describe_counter!(
        CONTEXT_SUMMARISED,
        "Conversation turns given to a reply only as a shortened summary (over the context budget), by platform."
    );
    describe_counter!(
        TRADER_DECISIONS,
        "Trading decisions asked of a persona's model, by persona and outcome (hold, trade, malformed, llm_error, killed)."
    );
    describe_counter!(TRADER_REFUSALS, "Trades refused before execution, by persona and the limit that refused them.");
    describe_counter!(
        TRADER_TRADES,
        "Trades by persona, mode and outcome (awaiting_approval, filled, confirmed, failed, expired, rejected)."
    );
    describe_counter!(TRADER_VOLUME, "Value traded in millionths of a US dollar, by persona and mode.");
    describe_gauge!(TRADER_PAPER_PNL, "Paper profit and loss in US dollars (marked to market), by persona.");
    describe_gauge!(TRADER_KILL_SWITCH, "1 while the trading kill switch is on.");
    describe_counter!(CONTENT_PLANNED, "Posts the TeamLeader planned, by platform.");
    describe_counter!(
        CONTENT_DECISIONS,
        "Drafts after review and airlock, by platform and decision (queued, held, blocked)."
    );
    describe_counter!(POLICY_VIOLATIONS, "Policy review violations, by platform and rule.");
    describe_counter!(
        AIRLOCK_DECISIONS,
        "Human decisions on held items, by decision (approved, edited, rejected, expired)."
    );
    describe_gauge!(AIRLOCK_HELD, "Items waiting in the airlock for a human.");
    describe_counter!(
        COORDINATION,
        "Mentions of several personas, by platform and role (first, joiner, skipped, promoted, timed_out)."
    );
    describe_counter!(ENGAGEMENT_FETCHES, "Engagement fetches of published items, by platform and outcome.");
    describe_counter!(REPORTS, "Weekly reports written, by trigger (schedule, admin, cli).");
    describe_counter!(CONFIG_RELOADS, "Configuration reloads, by outcome (applied, rejected).");
    describe_counter!(LOCAL_POSTS, "Posts on the local platform, by source (persona, crowd, api).");
    describe_gauge!(AGENTS, "Agents in the tree, by platform.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_handles_count_into_the_series_the_macros_register() {
        let prometheus = install();
        static SENT: Kept<Counter, 2> = Kept::new("chorus_test_kept_total", ["platform", "outcome"]);
        static PENDING: Kept<Gauge, 0> = Kept::new("chorus_test_kept_pending", []);
        SENT.get(["local", "sent"]).increment(2);
        SENT.get(["local", "sent"]).increment(3);
        metrics::counter!("chorus_test_kept_total", "platform" => "local", "outcome" => "sent").increment(1);
        SENT.get(["local", "failed"]).increment(1);
        PENDING.get([]).set(7.0);
        let text = prometheus.render();
        assert!(text.contains("chorus_test_kept_total{platform=\"local\",outcome=\"sent\"} 6\n"), "{text}");
        assert!(text.contains("chorus_test_kept_total{platform=\"local\",outcome=\"failed\"} 1\n"), "{text}");
        assert!(text.contains("chorus_test_kept_pending 7\n"), "{text}");
        assert_eq!(SENT.handles.lock().unwrap().len(), 2, "one handle kept a set of values");
    }
}

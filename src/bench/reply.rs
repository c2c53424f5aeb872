//! Reply benchmarks: mention → reply published on the local platform, for one persona or a team
//! (mention `i` names persona `i mod personas`), offered open loop (mention `i` is posted at
//! `start + i / rate` whatever the replies do), against the offline LLM provider (zero latency) or
//! the LLM simulator with a fixed delay.
//!
//! What is measured, from outside the service:
//! - latency: a mention stored on the timeline → its reply stored on the timeline (the Publisher
//!   writes it after the outbox row is committed), from [`LocalPlatform::subscribe`];
//! - throughput: replies per second over the window, and the highest rate the service sustains
//!   ([`max_rate`]);
//! - cost: process CPU per reply published; LLM completions (`llm_usage` rows) and embeddings per
//!   reply written to the outbox (published, or still pending when the run stops);
//! - durability: the outbox once the service stopped (every reply counted is a `sent` row,
//!   nothing pending).
//!
//! The questions are written in made-up words drawn per mention, so that no two replies (which
//! quote the question) look alike to Memory's dedup: a redraft would be a second completion.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::{Measurement, ScratchDir, cpu_time, percentile, persona_name, write_config};
use crate::llm::offline_embed;
use crate::platform::local::{LocalPlatform, Posted};
use crate::service::{self, Service};
use crate::sim::llm::{LlmSim, SimFault};
use crate::store::{Db, MemoryKind, NewMemory, OutboxCounts, ToInsert};

/// Who posts the mentions.
const AUTHOR: &str = "human";
/// Dimensions of the simulator's embeddings when it is the embedding model (those of the
/// offline embedder, so the dedup check compares alike).
const REMOTE_EMBEDDING_DIMENSION: usize = 384;
/// Replies an agent generates at once, and requests the LLM provider serves at once: well above
/// what `rate × LLM delay` needs, so the benchmark measures the service, not a configured cap.
const MAX_IN_FLIGHT: usize = 512;
/// Replies the agent may have drafted and not yet published (`agents.max_unpublished`): under
/// overload the backlog waits as mentions, not as drafted replies. Eight times what it drafts at
/// once, about five seconds of the one account's publishing: at 1,000 mentions/s a bound of
/// 1,024 published a sixth fewer replies (drafting held back runs later, when the persona's exact
/// memory index is larger), at 5,000/s the two did the same.
const MAX_UNPUBLISHED: usize = 4096;
/// How long the service may take to become ready and answer its first mention.
const WARM_UP_LIMIT: Duration = Duration::from_secs(30);
/// After the last mention: stop waiting for replies when none came for this long ...
const STALL_LIMIT: Duration = Duration::from_secs(5);
/// ... or after this long in any case.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// After the last mention, no reply for this long: look up the mentions closed without one (and
/// again at most this often: the query walks the platform's mentions).
const QUIET_BEFORE_LOOKUP: Duration = Duration::from_millis(500);
/// Requests of the bare round trip to the LLM simulator.
const ROUND_TRIPS: usize = 200;
/// Offered rates [`max_rate`] steps through, lowest first, a half or a third apart: the ceiling it
/// reports is within a third of where latency runs away (doubling steps put 500/s and 1,000/s
/// next to each other, and a service sustaining 750/s read 500).
pub const MAX_RATE_STEPS: &[u32] =
    &[250, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000, 16000, 24000, 32000, 48000, 64000];
/// A step of [`max_rate`] is sustained when replies keep up with at least this share of the
/// offered rate ...
const SUSTAINED_SHARE: f64 = 0.95;
/// ... with a p99 under this (latency has not run away), nothing unanswered and every reply durable.
const SUSTAINED_P99_US: f64 = 100_000.0;

/// Latency percentiles of a bare request to the LLM simulator, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundTrip {
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Where a latency run's completions and embeddings are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Llm {
    /// The offline provider and the offline embedder: zero latency, in process.
    Offline,
    /// Completions at an in-process LLM simulator answering after `delay`; with `embeddings`,
    /// embeddings there too (384 dimensions, the same delay), as with a remote embedding model.
    Simulated { delay: Duration, embeddings: bool },
}

/// Offers `rate` mentions per second for `seconds` to `personas` personas in turn (each an agent
/// on the local platform, each its own account, so each publishes through a worker of its own)
/// and measures the replies; with [`Llm::Simulated`], completions (and embeddings, if asked) go to
/// an in-process LLM simulator answering after a delay.
///
/// Values: `offered_rate`, `achieved_rate` (replies per second, from the first mention due to the
/// last reply, at least `seconds`), `mentions`, `mentions_stored`, `post_errors`, `replies`,
/// `personas_replying` (the personas that published a reply to a mention of the run),
/// `unanswered`, `closed_without_reply`, `duplicate_replies`, latencies `p50_us`, `p99_us`,
/// `p999_us`, `max_us`, `mean_us` (mention stored → reply stored), `p99_from_due_us` (from when the mention was due),
/// `mention_store_lag_p99_us`, `cpu_per_reply_us`, `llm_calls_per_reply`, `embeddings_per_reply`
/// (requests to the embedder), `embedding_jobs_per_reply` (embeddings asked of the pool),
/// `outbox_sent` (warm-up excluded), `outbox_pending`, `outbox_failed`, `warm_up_mentions`,
/// `memories_embedded` (memories with a vector in the database at the end, the `memories` seeded
/// for each persona before the start included: [`seed_memories`]); with a delay also
/// `bare_p50_us`, `bare_p99_us` ([`round_trip`] with the body Chorus sent) and `ratio_p50`,
/// `ratio_p99` (reply latency ÷ bare round trip). When replies fall behind, waiting
/// stops after 5 s without a reply or 30 s after the last mention; what the shutdown drains is
/// still counted. A mention the service closed without a reply (the persona's duplicate guard
/// dropped every draft: `memory.dedup_attempts`) is `closed_without_reply`, not `unanswered`, and
/// is not waited for.
pub async fn latency(
    rate: u32,
    seconds: f64,
    llm: Llm,
    personas: usize,
    memories: usize,
) -> anyhow::Result<Measurement> {
    anyhow::ensure!(rate > 0, "the offered rate must be at least 1 mention per second");
    anyhow::ensure!(personas > 0, "the team must have at least one persona");
    anyhow::ensure!(seconds > 0.0 && seconds.is_finite(), "the duration must be a positive number of seconds");
    // Seeded memories carry the offline embedder's vectors, which a remote model's index would not
    // load.
    anyhow::ensure!(
        memories == 0 || !matches!(llm, Llm::Simulated { embeddings: true, .. }),
        "seeded memories are embedded offline: --memories does not go with --remote-embedder"
    );
    let dir = ScratchDir::create("reply")?;
    let (sim, llm_delay, remote_embedder) = match llm {
        Llm::Simulated { delay, embeddings } => {
            let sim = LlmSim::start().await.context("cannot start the LLM simulator")?;
            sim.fail_always(Some(SimFault::SlowFirstByte(delay)));
            sim.set_embedding_dimension(REMOTE_EMBEDDING_DIMENSION);
            (Some(sim), Some(delay), embeddings)
        }
        Llm::Offline => (None, None, false),
    };
    let llm_section = sim.as_ref().map(|sim| simulated_provider(sim, remote_embedder));
    let extra = format!("[agents]\nmax_in_flight = {MAX_IN_FLIGHT}\nmax_unpublished = {MAX_UNPUBLISHED}\n");
    let mut config = write_config(dir.path(), personas, "10s", llm_section.as_deref(), &extra)?;
    // The admin API is not used here; a token is set directly (no `set_var` in a threaded process).
    config.admin_token = Some(crate::config::Secret::new(format!("bench-{}", std::process::id())));
    let store_url = config.service.store.url.clone();
    if memories > 0 {
        seed_memories(&store_url, personas, memories).await.context("cannot seed the personas' memories")?;
    }
    let service = service::start(config).await.context("cannot start the service")?;

    let observed = observe(&service, rate, seconds, personas).await;
    let shutdown = service.shutdown().await;
    let mut observation = observed?;
    observation.drain();
    // Completions: `llm_usage` rows of the window, all written by now (the writer flushes at stop).
    let db = Db::connect(&store_url, 1).await.context("cannot reopen the database")?;
    // Mentions closed while the service shut down count as closed too.
    let closed = observation.look_up_closed(&db).await;
    let calls = db.llm_tally(observation.window_ms, i64::MAX).await;
    let embedded = db.embedding_models().await;
    db.close().await;
    closed?;
    let calls: i64 = calls.context("cannot count the llm calls")?.iter().map(|tally| tally.calls).sum();
    let embedded: i64 = embedded
        .context("cannot count the memories")?
        .iter()
        .filter_map(|(model, count)| model.as_ref().map(|_| count))
        .sum();
    let mut run = summarise(&mut observation, shutdown.outbox, calls);
    run.values.insert("memories_embedded".to_owned(), embedded as f64);
    if shutdown.tree.is_none() {
        run.notes.push("the supervision tree did not report its shutdown in time".to_owned());
    }

    let mut measurement = Measurement::new("latency")
        .param("rate", rate)
        .param("seconds", seconds)
        .param("llm_delay_ms", llm_delay.map_or(0, |delay| delay.as_millis() as u64))
        .param("embedder", if remote_embedder { "simulator" } else { "offline" })
        .param("personas", personas as u64)
        .param("memories", memories as u64)
        .param("max_in_flight", MAX_IN_FLIGHT as u64)
        .param("max_unpublished", MAX_UNPUBLISHED as u64);
    measurement.values = std::mem::take(&mut run.values);
    measurement.notes = std::mem::take(&mut run.notes);

    if let Some(sim) = &sim {
        // The same body Chorus sent (the last completion request), so only Chorus's work differs.
        let body = sim
            .requests()
            .into_iter()
            .rev()
            .find(|request| request.path.ends_with("/chat/completions"))
            .map(|request| request.body)
            .unwrap_or_else(sample_body);
        let bare = round_trip_on(sim, &body).await?;
        measurement.set("bare_p50_us", bare.p50_us);
        measurement.set("bare_p99_us", bare.p99_us);
        if let (Some(p50), Some(p99)) = (measurement.values.get("p50_us"), measurement.values.get("p99_us")) {
            let (ratio_p50, ratio_p99) = (p50 / bare.p50_us, p99 / bare.p99_us);
            measurement.set("ratio_p50", ratio_p50);
            measurement.set("ratio_p99", ratio_p99);
        }
    }
    Ok(measurement)
}

/// p50 / p99 of a bare chat completion request to an LLM simulator answering after `llm_delay`:
/// 200 sequential POSTs of a typical reply request, on one kept-alive connection.
pub async fn round_trip(llm_delay: Duration) -> anyhow::Result<RoundTrip> {
    let sim = LlmSim::start().await.context("cannot start the LLM simulator")?;
    sim.fail_always(Some(SimFault::SlowFirstByte(llm_delay)));
    round_trip_on(&sim, &sample_body()).await
}

/// Steps the offered rate up through [`MAX_RATE_STEPS`] and reports the highest one sustained.
pub async fn max_rate(seconds_per_step: f64) -> anyhow::Result<Measurement> {
    max_rate_up_to(seconds_per_step, u32::MAX).await
}

/// [`max_rate`] over the steps up to `highest` mentions per second. A step is sustained when
/// replies keep up with 95 % of the offered rate, p99 stays under 100 ms, every mention is stored
/// and answered, and every reply is a `sent` outbox row with nothing pending; stepping stops at
/// the first step that is not (its achieved rate is reported too: what the service does overloaded).
pub async fn max_rate_up_to(seconds_per_step: f64, highest: u32) -> anyhow::Result<Measurement> {
    let mut measurement = Measurement::new("max-rate")
        .param("seconds_per_step", seconds_per_step)
        .param("up_to", highest)
        .param("criterion", "achieved >= 95% of offered, p99 < 100 ms, unanswered 0, outbox sent = replies, pending 0");
    let steps: Vec<u32> = MAX_RATE_STEPS.iter().copied().filter(|&rate| rate <= highest).collect();
    let mut sustained: Option<Measurement> = None;
    let mut tried = 0;
    for &rate in &steps {
        tried += 1;
        let step =
            latency(rate, seconds_per_step, Llm::Offline, 1, 0).await.with_context(|| format!("step at {rate}/s"))?;
        let value = |name: &str| step.values.get(name).copied().unwrap_or(f64::NAN);
        let kept_up = value("achieved_rate") >= SUSTAINED_SHARE * f64::from(rate);
        let fast = value("p99_us") < SUSTAINED_P99_US;
        let answered = value("unanswered") == 0.0 && value("post_errors") == 0.0;
        let durable = value("outbox_pending") == 0.0 && value("outbox_sent") == value("replies");
        let held = kept_up && fast && answered && durable;
        measurement.notes.push(format!(
            "offered {rate}/s: achieved {:.0}/s, p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs, unanswered {}, \
             closed without a reply {}, outbox sent {} pending {}, cpu/reply {:.0} µs → {}",
            value("achieved_rate"),
            value("p50_us"),
            value("p99_us"),
            value("max_us"),
            value("unanswered"),
            value("closed_without_reply"),
            value("outbox_sent"),
            value("outbox_pending"),
            value("cpu_per_reply_us"),
            if held { "sustained" } else { "not sustained" },
        ));
        if !held {
            measurement.set("first_unsustained_rate", f64::from(rate));
            measurement.set("first_unsustained_achieved_rate", value("achieved_rate"));
            break;
        }
        sustained = Some(step);
    }
    measurement.set("steps", tried as f64);
    let Some(best) = sustained else {
        measurement.set("max_sustained_rate", 0.0);
        measurement.notes.push("no step was sustained".to_owned());
        return Ok(measurement);
    };
    let value = |name: &str| best.values.get(name).copied().unwrap_or(f64::NAN);
    measurement.set("max_sustained_rate", value("offered_rate"));
    for name in ["achieved_rate", "p50_us", "p99_us", "p999_us", "cpu_per_reply_us"] {
        measurement.set(&format!("at_max_{name}"), value(name));
    }
    if !measurement.values.contains_key("first_unsustained_rate") {
        measurement.notes.push("every step was sustained: the ceiling is above the highest step".to_owned());
    }
    Ok(measurement)
}

/// What one run measured, before it is labelled.
struct Run {
    values: BTreeMap<String, f64>,
    notes: Vec<String>,
}

/// What a run saw of the timeline: mentions, the replies to them, and when.
struct Observation {
    rate: u32,
    seconds: f64,
    /// Personas the mentions name in turn.
    personas: usize,
    posted: broadcast::Receiver<Posted>,
    warm_ups: usize,
    /// Usage rows of the measured window are stamped from this millisecond on.
    window_ms: i64,
    /// When mention 0 was due.
    start: Instant,
    /// Mentions offered, stored ones (with when each was due) and refused ones.
    offered: u64,
    stored: Vec<(i64, Instant)>,
    post_errors: u64,
    /// Mentions seen on the timeline, by id, with when they were stored.
    mentions: HashMap<i64, Instant>,
    answered: HashSet<i64>,
    /// The personas that published a reply to a mention of the run.
    repliers: HashSet<String>,
    /// Stored mentions the service closed without a reply, as far as looked up.
    closed: HashSet<i64>,
    latencies_us: Vec<f64>,
    replies_at: Vec<(i64, Instant)>,
    duplicates: u64,
    lagged: u64,
    last_reply: Instant,
    cpu_before: Option<Duration>,
    /// CPU when the observation stopped, if every mention was answered by then.
    cpu_all_answered: Option<Duration>,
    embeddings_before: Option<f64>,
    embedding_jobs_before: Option<f64>,
}

impl Observation {
    /// An observation of `offered` mentions at `rate` for `seconds` to `personas` personas, the
    /// first due at `start`, from `posted` (subscribed before the first is offered); its CPU and
    /// embedding counts start now.
    fn new(
        rate: u32,
        seconds: f64,
        personas: usize,
        posted: broadcast::Receiver<Posted>,
        warm_ups: usize,
        offered: u64,
        start: Instant,
    ) -> Self {
        Observation {
            rate,
            seconds,
            personas,
            posted,
            warm_ups,
            window_ms: crate::store::now_ms(),
            start,
            offered,
            stored: Vec::new(),
            post_errors: 0,
            mentions: HashMap::with_capacity(offered as usize),
            answered: HashSet::with_capacity(offered as usize),
            repliers: HashSet::new(),
            closed: HashSet::new(),
            latencies_us: Vec::with_capacity(offered as usize),
            replies_at: Vec::with_capacity(offered as usize),
            duplicates: 0,
            lagged: 0,
            last_reply: start,
            cpu_before: cpu_time(),
            cpu_all_answered: None,
            embeddings_before: metric_total(crate::metrics::LLM_EMBEDDINGS),
            embedding_jobs_before: metric_total(crate::metrics::LLM_EMBEDDING_JOBS),
        }
    }

    /// Takes one timeline event into account.
    fn record(&mut self, posted: Posted) {
        match posted {
            Posted { id, author, reply_to: None, at } if author == AUTHOR => {
                self.mentions.insert(id, at);
            }
            Posted { reply_to: Some(parent), author, at, .. } => {
                let Some(&mentioned_at) = self.mentions.get(&parent) else { return };
                if !self.answered.insert(parent) {
                    self.duplicates += 1;
                    return;
                }
                self.repliers.insert(author);
                self.latencies_us.push(at.duration_since(mentioned_at).as_secs_f64() * 1e6);
                self.replies_at.push((parent, at));
                self.last_reply = self.last_reply.max(at);
            }
            Posted { .. } => {}
        }
    }

    /// Takes the events still buffered (the replies published while the service shut down).
    fn drain(&mut self) {
        loop {
            match self.posted.try_recv() {
                Ok(posted) => self.record(posted),
                Err(TryRecvError::Lagged(missed)) => self.lagged += missed,
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    fn unanswered(&self) -> usize {
        self.stored.iter().filter(|(id, _)| !self.answered.contains(id) && !self.closed.contains(id)).count()
    }

    /// Whether every stored mention has its reply or was closed. Asked after every timeline event:
    /// it counts first and scans the stored mentions ([`Self::unanswered`]) only when the answered
    /// and closed ones are enough to cover them. Scanning every time made the observer quadratic:
    /// at 5,000/s for 10 s, a quarter of the process's CPU or more.
    fn all_settled(&self) -> bool {
        self.answered.len() + self.closed.len() >= self.stored.len() && self.unanswered() == 0
    }

    /// Looks up which of the stored mentions the service closed without a reply.
    async fn look_up_closed(&mut self, db: &Db) -> anyhow::Result<()> {
        let stored: HashSet<i64> = self.stored.iter().map(|(id, _)| *id).collect();
        let mut closed = HashSet::new();
        for persona in 0..self.personas {
            let ids =
                db.closed_inbound(&persona_name(persona), "local").await.context("cannot read the closed mentions")?;
            closed.extend(ids.iter().filter_map(|id| id.parse::<i64>().ok()).filter(|id| stored.contains(id)));
        }
        self.closed = closed;
        Ok(())
    }
}

/// Waits for readiness and a first answered mention, offers the load, and collects the replies
/// until every mention is answered, none came for [`STALL_LIMIT`], or [`DRAIN_LIMIT`] passed.
async fn observe(service: &Service, rate: u32, seconds: f64, personas: usize) -> anyhow::Result<Observation> {
    let local = service.local().clone();
    let warm_ups = warm_up(service, personas).await?;
    // Usage rows of the warm-up are stamped before this millisecond.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let offered = ((f64::from(rate) * seconds).round() as u64).max(1);
    let start = Instant::now() + Duration::from_millis(5);
    let mut observation = Observation::new(rate, seconds, personas, local.subscribe(), warm_ups, offered, start);
    let failures = Arc::new(AtomicU64::new(0));
    let mut sender = tokio::spawn(offer(local, rate, personas, offered, start, failures.clone()));
    let mut sent = false;
    let mut sending_done_at = start;
    let mut looked_up_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        if sent {
            let now = Instant::now();
            let quiet = now.duration_since(observation.last_reply.max(sending_done_at));
            let due = looked_up_at.is_none_or(|at| now.duration_since(at) > QUIET_BEFORE_LOOKUP);
            if observation.answered.len() < observation.stored.len() && quiet > QUIET_BEFORE_LOOKUP && due {
                // Replies stopped coming: the service may have closed the rest without one.
                observation.look_up_closed(service.db()).await?;
                looked_up_at = Some(now);
            }
            if observation.all_settled() {
                observation.cpu_all_answered = cpu_time();
                break;
            }
            if quiet > STALL_LIMIT || now.duration_since(sending_done_at) > DRAIN_LIMIT {
                break;
            }
        }
        tokio::select! {
            stored = &mut sender, if !sent => {
                observation.stored = stored.context("the mention sender failed")?;
                observation.post_errors = failures.load(Ordering::Relaxed);
                sent = true;
                sending_done_at = Instant::now();
            }
            event = observation.posted.recv() => match event {
                Ok(posted) => observation.record(posted),
                Err(RecvError::Lagged(missed)) => observation.lagged += missed,
                Err(RecvError::Closed) => anyhow::bail!("the local platform stopped"),
            },
            _ = tick.tick() => {}
        }
    }
    Ok(observation)
}

/// The numbers of a finished run: `outbox` is the outbox after the service stopped, `calls` the
/// `llm_usage` rows of the window.
fn summarise(observation: &mut Observation, outbox: Option<OutboxCounts>, calls: i64) -> Run {
    let cpu_after = observation.cpu_all_answered.or_else(cpu_time);
    let embeddings_after = metric_total(crate::metrics::LLM_EMBEDDINGS);
    let embedding_jobs_after = metric_total(crate::metrics::LLM_EMBEDDING_JOBS);
    let replies = observation.latencies_us.len() as f64;
    let mut values = BTreeMap::new();
    let mut notes = Vec::new();
    let mut set = |name: &str, value: f64| {
        values.insert(name.to_owned(), value);
    };
    set("offered_rate", f64::from(observation.rate));
    set("mentions", observation.offered as f64);
    set("mentions_stored", observation.stored.len() as f64);
    set("post_errors", observation.post_errors as f64);
    set("replies", replies);
    set("personas_replying", observation.repliers.len() as f64);
    set("unanswered", observation.unanswered() as f64);
    set("closed_without_reply", observation.closed.len() as f64);
    set("duplicate_replies", observation.duplicates as f64);
    set("warm_up_mentions", observation.warm_ups as f64);
    let window = observation.last_reply.duration_since(observation.start).as_secs_f64().max(observation.seconds);
    set("achieved_rate", replies / window);

    let latencies = &mut observation.latencies_us;
    latencies.sort_by(f64::total_cmp);
    if let Some(&max) = latencies.last() {
        set("p50_us", percentile(latencies, 0.50));
        set("p99_us", percentile(latencies, 0.99));
        set("p999_us", percentile(latencies, 0.999));
        set("max_us", max);
        set("mean_us", latencies.iter().sum::<f64>() / replies);
    }
    // When the mentions were due: lateness here is the load generator's or the store's.
    let due: HashMap<i64, Instant> = observation.stored.iter().copied().collect();
    let since_due =
        |(id, at): (&i64, &Instant)| due.get(id).map(|due| at.saturating_duration_since(*due).as_secs_f64() * 1e6);
    let mut store_lag: Vec<f64> = observation.mentions.iter().filter_map(since_due).collect();
    store_lag.sort_by(f64::total_cmp);
    if !store_lag.is_empty() {
        set("mention_store_lag_p99_us", percentile(&store_lag, 0.99));
    }
    let mut from_due: Vec<f64> = observation.replies_at.iter().map(|(id, at)| (id, at)).filter_map(since_due).collect();
    from_due.sort_by(f64::total_cmp);
    if !from_due.is_empty() {
        set("p99_from_due_us", percentile(&from_due, 0.99));
    }
    if replies > 0.0
        && let (Some(before), Some(after)) = (observation.cpu_before, cpu_after)
    {
        set("cpu_per_reply_us", after.saturating_sub(before).as_secs_f64() * 1e6 / replies);
    }
    // Completions and embeddings were spent on every reply written to the outbox, published or
    // still pending at the stop (under overload the outbox holds a backlog): count per those.
    let written = outbox.map_or(replies, |counts| {
        (counts.sent - observation.warm_ups as i64 + counts.pending + counts.failed).max(0) as f64
    });
    if written > 0.0 {
        set("llm_calls_per_reply", calls as f64 / written);
        if let (Some(before), Some(after)) = (observation.embeddings_before, embeddings_after) {
            set("embeddings_per_reply", (after - before) / written);
        }
        if let (Some(before), Some(after)) = (observation.embedding_jobs_before, embedding_jobs_after) {
            set("embedding_jobs_per_reply", (after - before) / written);
        }
    }
    match outbox {
        Some(counts) => {
            set("outbox_sent", (counts.sent - observation.warm_ups as i64) as f64);
            set("outbox_pending", counts.pending as f64);
            set("outbox_failed", counts.failed as f64);
        }
        None => notes.push("the outbox could not be counted after the shutdown".to_owned()),
    }

    if observation.lagged > 0 {
        notes.push(format!(
            "the observer lagged and missed {} timeline events: replies are undercounted",
            observation.lagged
        ));
    }
    if observation.cpu_all_answered.is_none() {
        notes.push(format!(
            "not every mention was answered within the limits: the replies published while the service shut down \
             (in-flight work drained) are counted, cpu up to the end of the shutdown; {} mentions never answered",
            observation.unanswered()
        ));
    }
    notes.push(
        "latency: mention stored on the local timeline → reply stored there by the Publisher (after its outbox \
         row is committed); cpu: the whole process (service, load generator and observer), per reply published; \
         llm calls (llm_usage rows of the window), embedding requests to the embedder \
         (chorus_llm_embedding_requests_total) and embeddings asked of the pool, joined into those requests \
         (chorus_llm_embedding_jobs_total): per reply written to the outbox, published or pending at the stop"
            .to_owned(),
    );
    Run { values, notes }
}

/// Posts mention `i`, naming persona `i mod personas`, at `start + i / rate` (open loop), each in
/// a task of its own so that a slow insert never delays the schedule. Returns the stored mentions
/// with when each was due.
async fn offer(
    local: LocalPlatform,
    rate: u32,
    personas: usize,
    total: u64,
    start: Instant,
    failures: Arc<AtomicU64>,
) -> Vec<(i64, Instant)> {
    let mentions: Vec<String> = (0..personas).map(|persona| format!("@{}", persona_name(persona))).collect();
    let due = |index: u64| start + Duration::from_secs_f64(index as f64 / f64::from(rate));
    let mut posts = Vec::with_capacity(total as usize);
    let mut index = 0;
    while index < total {
        tokio::time::sleep_until(due(index).into()).await;
        // The timer has a millisecond grain: post everything that is due by now.
        let now = Instant::now();
        while index < total && due(index) <= now {
            let (local, failures, text, at) = (
                local.clone(),
                failures.clone(),
                question(&mentions[(index % personas as u64) as usize], index),
                due(index),
            );
            posts.push(tokio::spawn(async move {
                match local.post(AUTHOR, &text, None, None, "api").await {
                    Ok(post) => Some((post.id, at)),
                    Err(err) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %err, "benchmark mention not stored");
                        None
                    }
                }
            }));
            index += 1;
        }
    }
    let mut stored = Vec::with_capacity(posts.len());
    for post in posts {
        if let Ok(Some(entry)) = post.await {
            stored.push(entry);
        }
    }
    stored
}

/// Syllables of the made-up words the questions are written in.
const SYLLABLES: &[&str] = &[
    "ba", "ko", "tu", "mi", "se", "ra", "no", "vi", "la", "pe", "du", "zo", "ki", "fa", "gu", "ne", "sho", "ta", "ri",
    "mo", "ve", "lu", "po", "xi", "da", "je", "hu", "sa", "wo", "ci", "be", "ny",
];

/// The mention with index `index`: "what about" six made-up words drawn by a hash of the index
/// (32,768 words), so that no two questions — and no two replies, which quote them — are near
/// duplicates that Memory's dedup would send back to be written again.
pub(super) fn question(mention: &str, index: u64) -> String {
    let mut state = index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut words = Vec::with_capacity(6);
    for _ in 0..6 {
        state ^= state >> 29;
        state = state.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        state ^= state >> 32;
        let word: String = (0..3).map(|shift| SYLLABLES[((state >> (shift * 5)) & 31) as usize]).collect();
        words.push(word);
    }
    format!("{mention} what about {}?", words.join(" "))
}

/// Memories a seeding statement group writes at once.
const SEED_BATCH: usize = 512;

/// Stores `memories` earlier mentions for each of the `personas` personas, with their offline
/// embeddings, before the service starts: what a persona that has been answering for a while
/// holds, so that recall searches an index of that size (exact up to its threshold, 40,000).
/// Each is a question in made-up words from a conversation of its own, as the run's mentions.
async fn seed_memories(store_url: &str, personas: usize, memories: usize) -> anyhow::Result<()> {
    let db = Db::connect(store_url, 1).await?;
    db.migrate().await?;
    for persona in (0..personas).map(persona_name) {
        for start in (0..memories).step_by(SEED_BATCH) {
            let batch: Vec<(NewMemory, Vec<f32>)> = (start..memories.min(start + SEED_BATCH))
                .map(|index| {
                    let text = question(&format!("@{persona}"), SEED_INDEX_BASE + index as u64);
                    let vector = offline_embed::embed_text(&text);
                    let memory = NewMemory {
                        persona: persona.clone(),
                        platform: "local".to_owned(),
                        kind: MemoryKind::Inbound,
                        conversation: Some(format!("seed-{index}")),
                        author: "seed".to_owned(),
                        text,
                    };
                    (memory, vector)
                })
                .collect();
            let rows: Vec<ToInsert<'_>> = batch
                .iter()
                .map(|(memory, vector)| (memory, Some((offline_embed::MODEL, vector.as_slice()))))
                .collect();
            db.insert_memories(&rows).await?;
        }
    }
    db.close().await;
    Ok(())
}

/// Where the seeded memories' questions are drawn from, past any run's mention indexes.
const SEED_INDEX_BASE: u64 = 1 << 40;

/// Posts a mention to each of the `personas` personas every 200 ms until it answers one, then waits
/// for the answers to all of them: every agent is connected, and the first (cold) replies are out
/// of the measurement. Returns how many were posted.
async fn warm_up(service: &Service, personas: usize) -> anyhow::Result<usize> {
    let started = Instant::now();
    while !service.health().readiness().ready {
        anyhow::ensure!(started.elapsed() < WARM_UP_LIMIT, "the service was not ready within {WARM_UP_LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let local = service.local();
    let mut posted = local.subscribe();
    // Warm-up mentions posted, by id, with the persona each names.
    let mut asked: HashMap<i64, usize> = HashMap::new();
    let mut answered: HashSet<i64> = HashSet::new();
    let mut warm: HashSet<usize> = HashSet::new();
    let mut next_ask = Instant::now();
    loop {
        if warm.len() == personas && answered.len() == asked.len() {
            return Ok(asked.len());
        }
        anyhow::ensure!(
            started.elapsed() < WARM_UP_LIMIT,
            "{} of {personas} personas did not answer a warm-up mention within {WARM_UP_LIMIT:?}",
            personas - warm.len()
        );
        if Instant::now() >= next_ask {
            for persona in (0..personas).filter(|persona| !warm.contains(persona)) {
                // Made-up words of their own (numbered from the top, away from the run's), so no
                // two warm-up replies look alike to the dedup check.
                let mention = question(&format!("@{} warm-up:", persona_name(persona)), u64::MAX - asked.len() as u64);
                let post =
                    local.post(AUTHOR, &mention, None, None, "api").await.context("cannot post a warm-up mention")?;
                asked.insert(post.id, persona);
            }
            next_ask = Instant::now() + Duration::from_millis(200);
        }
        let wake = tokio::time::sleep_until(next_ask.max(Instant::now() + Duration::from_millis(10)).into());
        tokio::select! {
            event = posted.recv() => match event {
                Ok(Posted { reply_to: Some(parent), .. }) if asked.contains_key(&parent) => {
                    answered.insert(parent);
                    warm.insert(asked[&parent]);
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => anyhow::bail!("the local platform stopped"),
            },
            _ = wake => {}
        }
    }
}

/// The sum over every series of a counter in this process's metrics (`None` if unreadable).
fn metric_total(name: &str) -> Option<f64> {
    let text = crate::metrics::install().render();
    let mut total = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        total += line.rsplit(' ').next()?.parse::<f64>().ok()?;
    }
    Some(total)
}

/// The `[llm]` section of an `openai_compat` provider at the simulator: no streaming, no retries,
/// limits well above the load; with `embeddings`, Memory's embedding model too (the default
/// `max_in_flight`).
fn simulated_provider(sim: &LlmSim, embeddings: bool) -> String {
    let embedding = if embeddings { "embedding = { provider = \"sim\", model = \"bench-embed\" }\n" } else { "" };
    format!(
        "[llm]\ndefault_chain = [\"sim\"]\n{embedding}\n[llm.providers.sim]\nkind = \"openai_compat\"\nbase_url = \"{}\"\n\
         model = \"bench\"\nstream = false\nretries = 0\ntimeout = \"30s\"\nmax_concurrency = {MAX_IN_FLIGHT}\n\
         max_queue = 65536\n",
        sim.openai_base_url()
    )
}

/// A reply request like the ones Chorus sends, for a round trip without Chorus.
fn sample_body() -> Value {
    json!({
        "model": "bench",
        "max_tokens": 256,
        "stream": false,
        "messages": [
            {"role": "system", "content": "You are p000000. A benchmark persona. Voice: Plain."},
            {"role": "user", "content": "@p000000 question 0?"},
        ],
    })
}

/// [`ROUND_TRIPS`] sequential POSTs of `body` to the simulator's chat completions.
async fn round_trip_on(sim: &LlmSim, body: &Value) -> anyhow::Result<RoundTrip> {
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", sim.openai_base_url());
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let started = Instant::now();
        let response = client.post(&url).json(body).send().await.context("bare round trip to the LLM simulator")?;
        let status = response.status();
        response.bytes().await.context("bare round trip: reading the answer")?;
        anyhow::ensure!(status.is_success(), "bare round trip: the LLM simulator answered {status}");
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    Ok(RoundTrip { p50_us: percentile(&samples, 0.50), p99_us: percentile(&samples, 0.99) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewInbound;

    #[tokio::test]
    async fn a_mention_closed_without_a_reply_is_neither_answered_nor_unanswered() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/chorus.db", dir.path().display()), 1).await.unwrap();
        db.migrate().await.unwrap();
        let persona = persona_name(0);
        let mention = |remote_id| NewInbound {
            platform: "local",
            remote_id,
            persona: &persona,
            author: AUTHOR,
            author_is_persona: false,
            text: "a question",
            conversation: remote_id,
        };
        // Timeline posts 7 and 8 mention the persona; the agent closes 8 without a reply.
        let stored = db.store_inbound(&[mention("7"), mention("8")], None).await.unwrap();
        db.ignore_inbound(stored[1].as_ref().unwrap().id, "dedup_dropped").await.unwrap();

        let start = Instant::now();
        let (sender, posted) = broadcast::channel(4);
        let mut observation = Observation::new(10, 1.0, 1, posted, 1, 2, start);
        observation.stored = vec![(7, start), (8, start)];
        for id in [7, 8] {
            observation.record(Posted { id, author: AUTHOR.to_owned(), reply_to: None, at: start });
        }
        assert_eq!(observation.unanswered(), 2);
        assert!(!observation.all_settled());
        observation.look_up_closed(&db).await.unwrap();
        assert_eq!(observation.unanswered(), 1, "8 was closed, 7 waits for its reply");
        assert!(!observation.all_settled());
        // A reply to a mention of the timeline the sender did not count as stored (its post call
        // failed after the post landed) settles nothing of the run's.
        observation.record(Posted { id: 5, author: AUTHOR.to_owned(), reply_to: None, at: start });
        observation.record(Posted { id: 6, author: persona.clone(), reply_to: Some(5), at: Instant::now() });
        assert_eq!(observation.unanswered(), 1);
        assert!(!observation.all_settled(), "two settled, but not the stored 7");
        observation.record(Posted { id: 9, author: persona.clone(), reply_to: Some(7), at: Instant::now() });
        assert_eq!(observation.unanswered(), 0);
        assert!(observation.all_settled());
        let run = summarise(&mut observation, None, 1);
        // Replies 6 and 9 were published; 8 was closed.
        assert_eq!((run.values["replies"], run.values["closed_without_reply"]), (2.0, 1.0));
        assert_eq!(run.values["unanswered"], 0.0);
        drop(sender);
        db.close().await;
    }
}

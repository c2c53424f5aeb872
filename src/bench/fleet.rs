//! Fleet benchmarks: many agents at once, measured from outside the service.
//!
//! - [`idle`]: N personas on the local platform that post nothing and poll once an hour — how long
//!   from `service::start` until every agent runs (`/readyz` ready, every child running), the
//!   resident memory they hold, and the CPU they burn doing nothing. Each phase is bounded (time,
//!   and a memory cap well below what the machine has): a fleet too large for this machine is
//!   reported with how far it got and a projection, never left hanging or swapping.
//! - [`shutdown`]: the path SIGTERM takes ([`service::Service::shutdown`]) while mentions keep arriving,
//!   then an audit of the database file, reopened: every mention the platform acknowledged is
//!   answered, queued in the outbox, pending as a stored mention, or still unread after the
//!   agent's cursor — anything else is lost — and no mention has two replies.
//!
//! Memory is the whole process's (VmRSS), so run each scenario in a process of its own
//! (`chorus bench --scenario …`); inside the test suite the numbers are only sanity-checked.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{Measurement, Resident, ScratchDir, cpu_time, persona_name, resident, rss_bytes, write_config};
use crate::health::Health;
use crate::platform::local::LocalPlatform;
use crate::service;
use crate::store::{Db, OutboxStatus};

/// How long a fleet may take from `service::start` until every agent runs.
const READY_LIMIT: Duration = Duration::from_secs(120);
/// The fleet may use at most this share of the memory available when the run began.
const MEMORY_SHARE: f64 = 0.6;
/// How long the fleet idles while memory and CPU are sampled ...
const IDLE_FOR: Duration = Duration::from_secs(2);
/// ... taking a memory sample this often (the largest counts).
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// How often the readiness wait records how many agents run (for the projection).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// At most this many of those samples go into the notes.
const PROGRESS_NOTED: usize = 12;
/// After ready, the fleet is given this long per agent to finish its start-up work, within these
/// bounds (a busy test suite shares the process: a small fleet does not wait for it) ...
const SETTLE_PER_AGENT: Duration = Duration::from_millis(2);
const SETTLE_LIMITS: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(60));
/// ... measured in windows of this length ...
const SETTLE_WINDOW: Duration = Duration::from_secs(1);
/// ... and quiet once a window uses less than this share of one core.
const SETTLED_CPU_PERCENT: f64 = 10.0;
/// The readiness probe spends at most about a tenth of the wait probing (a `Health` snapshot
/// copies the degraded children's status, which may be many while a fleet starts), judged by the cheapest of its
/// latest probes (a probe descheduled on a busy machine looks expensive without being so) ...
const PROBE_COST_FACTOR: u32 = 10;
const PROBE_COST_WINDOW: usize = 8;
/// ... and runs at least this often, which bounds the resolution of `ready_ms`.
const PROBE_EVERY_MAX: Duration = Duration::from_millis(50);
/// The memory cap is checked this often.
const MEMORY_CHECK_EVERY: Duration = Duration::from_millis(10);
/// How long `Service::shutdown` may take before the benchmark stops waiting for it.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(60);

/// Personas the shutdown scenario spreads its mentions over.
const SHUTDOWN_PERSONAS: usize = 10;
/// How long mentions are offered before the shutdown begins.
const LOAD_FOR: Duration = Duration::from_secs(2);
/// Replies each agent of the shutdown scenario generates at once: enough that the offered rate,
/// not the cap, decides how much is in flight when the shutdown begins.
const SHUTDOWN_MAX_IN_FLIGHT: usize = 64;
/// How long the 10 personas may take to become ready.
const SHUTDOWN_READY_LIMIT: Duration = Duration::from_secs(30);
/// Who posts the mentions.
const AUTHOR: &str = "human";

/// N idle agents (N personas on the local platform, posting nothing, polling every hour): start to
/// ready, and resident memory.
///
/// Values: `baseline_rss_bytes` (before the service starts, the loaded configuration included),
/// `start_ms` (`service::start` returned), `ready_ms` (every agent running), `rss_at_ready_bytes`,
/// `settle_ms` (ready → the first second under [`SETTLED_CPU_PERCENT`] of a core: the start's
/// background work, such as Memory storing every persona's facts, is over), then over [`IDLE_FOR`]
/// of idling `rss_bytes` (largest sample; of it `rss_anon_bytes`, the process's own memory, and
/// `rss_file_bytes`, mapped files such as the binary's code), `bytes_per_agent` (over the baseline) and
/// `cpu_idle_percent` (of one core); `shutdown_ms`. A fleet that is not ready within
/// [`READY_LIMIT`] or outgrows the memory cap reports instead how far it got
/// (`stopped_after_ms`, `agents_running`, `children_running`, `bytes_per_child`) and where it was
/// heading (`projected_ready_ms`, `growth_exponent`, `projected_rss_bytes`), with the reason in
/// `notes`.
pub async fn idle(agents: usize) -> anyhow::Result<Measurement> {
    anyhow::ensure!(agents > 0, "the fleet needs at least one agent");
    let dir = ScratchDir::create("idle")?;
    let mut config = write_config(dir.path(), agents, "1h", None, "")?;
    // The admin API is not used here; a token is set directly (no `set_var` in a threaded process).
    config.admin_token = Some(crate::config::Secret::new(format!("bench-{}", std::process::id())));
    let mut measurement = Measurement::new("idle")
        .param("agents", agents as u64)
        .param("poll_every", "1h")
        .param("idle_seconds", IDLE_FOR.as_secs_f64());

    let baseline = rss_bytes().context("cannot read this process's resident memory")?;
    let memory_cap = baseline + (MEMORY_SHARE * available_memory().unwrap_or(8 << 30) as f64) as u64;
    measurement.set("baseline_rss_bytes", baseline as f64);
    measurement.set("memory_cap_bytes", memory_cap as f64);

    let started = Instant::now();
    let service = match tokio::time::timeout(READY_LIMIT, service::start(config)).await {
        Ok(started) => started.context("cannot start the service")?,
        Err(_) => {
            measurement.notes.push(format!("service::start did not return within {READY_LIMIT:?}"));
            return Ok(measurement);
        }
    };
    measurement.set("start_ms", millis(started.elapsed()));

    let limits = WaitLimits { deadline: started + READY_LIMIT, memory_cap };
    let wait = wait_until_running(service.health(), agents, started, limits).await;
    if wait.progress.len() > 1 {
        let every = wait.progress.len().div_ceil(PROGRESS_NOTED);
        let samples: Vec<String> = wait
            .progress
            .iter()
            .enumerate()
            .filter(|(index, _)| index % every == 0 || *index == wait.progress.len() - 1)
            .map(|(_, sample)| format!("{:.0} s: {}/{}", sample.seconds, sample.census.agents, sample.census.children))
            .collect();
        measurement.notes.push(format!("agents/children running over time: {}", samples.join(", ")));
    }
    match wait.outcome {
        Waited::Ready(after) => {
            measurement.set("ready_ms", millis(after));
            measurement.set("probe_interval_ms", millis(wait.probe_interval));
            if let Some(rss) = rss_bytes() {
                measurement.set("rss_at_ready_bytes", rss as f64);
            }
            let settle_limit = (SETTLE_PER_AGENT * agents as u32).clamp(SETTLE_LIMITS.0, SETTLE_LIMITS.1);
            let settled = settle(settle_limit).await;
            measurement.set("settle_ms", millis(settled.after));
            if !settled.settled {
                measurement.notes.push(format!(
                    "still busy {settle_limit:?} after ready (over {SETTLED_CPU_PERCENT} % of a core): the idle numbers \
                     include start-up work still running"
                ));
            }
            let idled = idle_for(IDLE_FOR).await;
            if let Some(peak) = idled.peak {
                measurement.set("rss_bytes", peak.total as f64);
                measurement.set("rss_anon_bytes", peak.anon as f64);
                measurement.set("rss_file_bytes", peak.file as f64);
                measurement.set("bytes_per_agent", peak.total.saturating_sub(baseline) as f64 / agents as f64);
            }
            if let Some(cpu) = idled.cpu {
                measurement.set("cpu_idle_percent", 100.0 * cpu.as_secs_f64() / idled.wall.as_secs_f64());
            }
        }
        Waited::Stopped { reason, after, census, rss } => {
            let expected = expected_children(agents);
            measurement.set("stopped_after_ms", millis(after));
            measurement.set("agents_running", census.agents as f64);
            measurement.set("children_running", census.children as f64);
            measurement.set("rss_bytes", rss as f64);
            if census.children > 0 {
                let per_child = rss.saturating_sub(baseline) as f64 / census.children as f64;
                measurement.set("bytes_per_child", per_child);
                measurement.set("projected_rss_bytes", baseline as f64 + per_child * expected as f64);
            }
            if let Some(projection) = project_ready(&wait.progress, expected) {
                measurement.set("projected_ready_ms", projection.ready_ms);
                measurement.set("growth_exponent", projection.exponent);
            }
            measurement.notes.push(format!(
                "{reason}: stopped after {:.1} s with {} of {agents} agents and {} of {expected} children running; \
                 projections extrapolate the children started (time ∝ children^growth_exponent, memory ∝ children)",
                after.as_secs_f64(),
                census.agents,
                census.children,
            ));
            // The supervision tree starts its children in one uninterruptible loop, and a shutdown
            // waits for it; without the pool every remaining start fails at once (nothing more is
            // allocated), so the shutdown below is bounded.
            measurement.notes.push(
                "the pool was closed before the shutdown so that the children still being started fail fast".to_owned(),
            );
            let _ = tokio::time::timeout(Duration::from_secs(5), service.db().close()).await;
        }
    }

    let stopping = Instant::now();
    match tokio::time::timeout(SHUTDOWN_LIMIT, service.shutdown()).await {
        Ok(outcome) => {
            measurement.set("shutdown_ms", millis(stopping.elapsed()));
            if outcome.tree.is_none() {
                measurement.notes.push("the supervision tree did not report its shutdown in time".to_owned());
            }
        }
        Err(_) => measurement.notes.push(format!("Service::shutdown did not return within {SHUTDOWN_LIMIT:?}")),
    }
    Ok(measurement)
}

/// SIGTERM-equivalent shutdown (`Service::shutdown`, the path SIGTERM takes) while `rate`
/// mentions/s are offered to 10 personas: how long until everything stopped, and that nothing
/// was lost.
///
/// Mentions go round robin to the personas, open loop, for [`LOAD_FOR`], in the latency runs'
/// made-up words (so Memory's dedup check takes none for a repeat and the drain is of real
/// replies); then the shutdown is called while they still arrive, and the sender stops right
/// after. Values: `injected` (mentions
/// the platform acknowledged), `post_errors` (refused, mostly once the pool closed), `exit_ms`
/// (the call until it returned), and each acknowledged mention in exactly one of `answered` (its
/// reply is on the timeline), `queued` (answered, the reply's outbox row still pending: published
/// at the next start), `pending` (stored, not answered yet: answered at the next start), `unread`
/// (after the agent's stored cursor: read at the next start), `ignored`, `held`, `failed`
/// (decisions, not losses) or `lost`; plus `duplicates` (mentions with two replies).
pub async fn shutdown(rate: u32) -> anyhow::Result<Measurement> {
    anyhow::ensure!(rate > 0, "the offered rate must be at least 1 mention per second");
    let dir = ScratchDir::create("shutdown")?;
    let extra = format!("[agents]\nmax_in_flight = {SHUTDOWN_MAX_IN_FLIGHT}\n");
    let mut config = write_config(dir.path(), SHUTDOWN_PERSONAS, "10s", None, &extra)?;
    config.admin_token = Some(crate::config::Secret::new(format!("bench-{}", std::process::id())));
    let store_url = config.service.store.url.clone();
    let deadline = config.service.shutdown.deadline.get();
    let mut measurement = Measurement::new("shutdown")
        .param("rate", rate)
        .param("personas", SHUTDOWN_PERSONAS as u64)
        .param("load_seconds", LOAD_FOR.as_secs_f64())
        .param("max_in_flight", SHUTDOWN_MAX_IN_FLIGHT as u64)
        .param("shutdown_deadline_ms", deadline.as_millis() as u64);

    let started = Instant::now();
    let service = service::start(config).await.context("cannot start the service")?;
    let limits = WaitLimits { deadline: started + SHUTDOWN_READY_LIMIT, memory_cap: u64::MAX };
    if let Waited::Stopped { reason, census, .. } =
        wait_until_running(service.health(), SHUTDOWN_PERSONAS, started, limits).await.outcome
    {
        let _ = tokio::time::timeout(SHUTDOWN_LIMIT, service.shutdown()).await;
        anyhow::bail!("{reason}, with {} of {SHUTDOWN_PERSONAS} agents running", census.agents);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let load_start = Instant::now() + Duration::from_millis(5);
    let sender = tokio::spawn(offer(service.local().clone(), rate, load_start, stop.clone()));
    tokio::time::sleep_until((load_start + LOAD_FOR).into()).await;

    let called = Instant::now();
    let stopping = tokio::spawn(async move {
        let outcome = tokio::time::timeout(SHUTDOWN_LIMIT, service.shutdown()).await;
        (outcome, called.elapsed())
    });
    stop.store(true, Ordering::Relaxed);
    let offered = sender.await.context("the mention sender failed")?;
    let (outcome, exit) = stopping.await.context("the shutdown task failed")?;
    match outcome {
        Ok(outcome) => {
            measurement.set("exit_ms", millis(exit));
            measurement
                .set("agents_drained", f64::from(u8::from(outcome.tree.is_some_and(|tree| tree.agents_drained))));
            if let Some(counts) = outcome.outbox {
                measurement.set("outbox_pending_at_exit", counts.pending as f64);
            }
            if outcome.tree.is_none() {
                measurement.notes.push("the supervision tree did not report its shutdown in time".to_owned());
            }
        }
        Err(_) => measurement.notes.push(format!("Service::shutdown did not return within {SHUTDOWN_LIMIT:?}")),
    }
    measurement.set("offered", offered.attempted as f64);
    measurement.set("injected", offered.acknowledged.len() as f64);
    measurement.set("post_errors", offered.errors as f64);

    let db = Db::connect(&store_url, 1).await.context("cannot reopen the database")?;
    let audit = audit(&db, &offered.acknowledged).await;
    db.close().await;
    let audit = audit?;
    for (name, count) in [
        ("answered", audit.answered),
        ("queued", audit.queued),
        ("pending", audit.pending),
        ("unread", audit.unread),
        ("ignored", audit.ignored),
        ("held", audit.held),
        ("failed", audit.failed),
        ("lost", audit.lost),
        ("duplicates", audit.duplicates),
    ] {
        measurement.set(name, count as f64);
    }
    if !audit.ignored_by_reason.is_empty() {
        let reasons: Vec<String> =
            audit.ignored_by_reason.iter().map(|(reason, count)| format!("{reason} {count}")).collect();
        measurement.notes.push(format!("ignored (a decision, not a loss): {}", reasons.join(", ")));
    }
    measurement.notes.extend(audit.examples);
    measurement.notes.push(
        "exit: Service::shutdown called while mentions still arrive → returned (tree drained and stopped, \
         admin server stopped, pool closed); every acknowledged mention audited in the reopened database"
            .to_owned(),
    );
    Ok(measurement)
}

/// Bounds of [`wait_until_running`].
#[derive(Debug, Clone, Copy)]
struct WaitLimits {
    deadline: Instant,
    memory_cap: u64,
}

/// How a readiness wait ended.
enum Waited {
    /// Ready with every agent running, this long after the start.
    Ready(Duration),
    /// Given up: out of time or over the memory cap.
    Stopped { reason: String, after: Duration, census: Census, rss: u64 },
}

struct Wait {
    outcome: Waited,
    /// Children running over time, every [`PROGRESS_EVERY`].
    progress: Vec<Progress>,
    /// The readiness probe's interval at the end (the resolution of `ready_ms`).
    probe_interval: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    seconds: f64,
    census: Census,
}

/// Children of the supervision tree whose status is `running`.
#[derive(Debug, Clone, Copy, Default)]
struct Census {
    agents: usize,
    children: usize,
}

impl Census {
    fn of(health: &Health) -> Census {
        let running = health.running();
        Census { agents: running.get("agent").copied().unwrap_or(0), children: running.values().sum() }
    }
}

/// Waits until the service is ready (tree up, store reachable, no child degraded) and `agents`
/// agents run. The probe reads [`Health`] like `/readyz` does, spacing its probes so that they
/// cost at most a tenth of the time; the memory cap is checked between probes.
async fn wait_until_running(health: &Health, agents: usize, started: Instant, limits: WaitLimits) -> Wait {
    let mut progress = Vec::new();
    let mut next_progress = started + PROGRESS_EVERY;
    let mut probe_interval = Duration::from_millis(1);
    let mut probe_costs: VecDeque<Duration> = VecDeque::with_capacity(PROBE_COST_WINDOW);
    let mut next_probe = Instant::now();
    loop {
        let now = Instant::now();
        let rss = rss_bytes().unwrap_or(0);
        let over = if rss > limits.memory_cap {
            Some(format!("resident memory passed the cap of {} bytes", limits.memory_cap))
        } else if now >= limits.deadline {
            Some(format!("not ready within {:?}", limits.deadline.duration_since(started)))
        } else {
            None
        };
        if let Some(reason) = over {
            let census = Census::of(health);
            let after = now.duration_since(started);
            progress.push(Progress { seconds: after.as_secs_f64(), census });
            return Wait { outcome: Waited::Stopped { reason, after, census, rss }, progress, probe_interval };
        }
        if now >= next_probe {
            let probing = Instant::now();
            let readiness = health.readiness();
            if readiness.ready && readiness.degraded.is_empty() && Census::of(health).agents == agents {
                return Wait { outcome: Waited::Ready(probing.duration_since(started)), progress, probe_interval };
            }
            if probe_costs.len() == PROBE_COST_WINDOW {
                probe_costs.pop_front();
            }
            probe_costs.push_back(probing.elapsed());
            let cost = probe_costs.iter().min().copied().unwrap_or_default();
            probe_interval = (cost * PROBE_COST_FACTOR).clamp(Duration::from_millis(1), PROBE_EVERY_MAX);
            next_probe = Instant::now() + probe_interval;
        }
        if now >= next_progress {
            progress.push(Progress { seconds: now.duration_since(started).as_secs_f64(), census: Census::of(health) });
            next_progress += PROGRESS_EVERY;
        }
        let wake = next_probe.min(Instant::now() + MEMORY_CHECK_EVERY);
        tokio::time::sleep_until(wake.into()).await;
    }
}

/// The children the tree starts for `agents` benchmark personas — Store, LlmPool, Memory,
/// Publisher, the local platform's RateLimiter and one Agent per persona — used only to
/// extrapolate a start that did not finish.
fn expected_children(agents: usize) -> usize {
    agents + 5
}

/// Where a fleet's start would end, extrapolated from its progress.
struct Projection {
    ready_ms: f64,
    /// `k` in time ∝ children^k, between the latest sample and the one nearest half its children.
    exponent: f64,
}

fn project_ready(progress: &[Progress], expected_children: usize) -> Option<Projection> {
    let last = progress.last().filter(|sample| sample.census.children > 0)?;
    let half = progress
        .iter()
        .filter(|sample| sample.census.children > 0 && sample.census.children < last.census.children)
        .min_by_key(|sample| sample.census.children.abs_diff(last.census.children / 2))?;
    let ratio = last.census.children as f64 / half.census.children as f64;
    let exponent = (last.seconds / half.seconds).ln() / ratio.ln();
    if !exponent.is_finite() {
        return None;
    }
    let ready_s = last.seconds * (expected_children as f64 / last.census.children as f64).powf(exponent);
    Some(Projection { ready_ms: ready_s * 1e3, exponent })
}

/// How the wait for a quiet service ended.
struct Settled {
    /// From ready to the first quiet window (or to the limit).
    after: Duration,
    settled: bool,
}

/// Waits, one [`SETTLE_WINDOW`] at a time, until the process uses less than
/// [`SETTLED_CPU_PERCENT`] of a core: what a start leaves running in the background (Memory
/// storing and embedding every persona's facts) is not idling.
async fn settle(limit: Duration) -> Settled {
    let started = Instant::now();
    while started.elapsed() < limit {
        let (wall, cpu_before) = (Instant::now(), cpu_time());
        tokio::time::sleep(SETTLE_WINDOW).await;
        let Some(used) = cpu_before.zip(cpu_time()).map(|(before, after)| after.saturating_sub(before)) else {
            break;
        };
        if 100.0 * used.as_secs_f64() / wall.elapsed().as_secs_f64() < SETTLED_CPU_PERCENT {
            return Settled { after: started.elapsed(), settled: true };
        }
    }
    Settled { after: started.elapsed(), settled: false }
}

/// What idling showed.
struct Idled {
    /// The sample with the largest resident memory.
    peak: Option<Resident>,
    cpu: Option<Duration>,
    wall: Duration,
}

/// Lets the service idle for `period`, sampling resident memory and CPU time.
async fn idle_for(period: Duration) -> Idled {
    let (wall_before, cpu_before) = (Instant::now(), cpu_time());
    let mut peak = resident();
    let end = wall_before + period;
    while Instant::now() < end {
        tokio::time::sleep(RSS_SAMPLE_EVERY.min(end.saturating_duration_since(Instant::now()))).await;
        if let Some(sample) = resident()
            && peak.is_none_or(|peak| sample.total > peak.total)
        {
            peak = Some(sample);
        }
    }
    let (wall, cpu_after) = (wall_before.elapsed(), cpu_time());
    let cpu = cpu_before.zip(cpu_after).map(|(before, after)| after.saturating_sub(before));
    Idled { peak, cpu, wall }
}

/// The mentions the platform acknowledged, by persona index and post id.
struct Offered {
    attempted: u64,
    acknowledged: Vec<(usize, i64)>,
    errors: u64,
}

/// Posts mention `i` to persona `i mod 10` at `start + i / rate` (open loop, each in a task of its
/// own) until `stop`, then waits for the posts in flight.
async fn offer(local: LocalPlatform, rate: u32, start: Instant, stop: Arc<AtomicBool>) -> Offered {
    let due = |index: u64| start + Duration::from_secs_f64(index as f64 / f64::from(rate));
    let errors = Arc::new(AtomicU64::new(0));
    let mut posts = Vec::new();
    let mut index = 0u64;
    'offering: loop {
        tokio::time::sleep_until(due(index).into()).await;
        // The timer has a millisecond grain: post everything that is due by now.
        let now = Instant::now();
        while due(index) <= now {
            if stop.load(Ordering::Relaxed) {
                break 'offering;
            }
            let persona = (index as usize) % SHUTDOWN_PERSONAS;
            let text = super::reply::question(&format!("@{}", persona_name(persona)), index);
            let (local, errors) = (local.clone(), errors.clone());
            posts.push(tokio::spawn(async move {
                match local.post(AUTHOR, &text, None, None, "api").await {
                    Ok(post) => Some((persona, post.id)),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
            }));
            index += 1;
        }
    }
    let mut acknowledged = Vec::with_capacity(posts.len());
    for post in posts {
        if let Ok(Some(entry)) = post.await {
            acknowledged.push(entry);
        }
    }
    Offered { attempted: index, acknowledged, errors: errors.load(Ordering::Relaxed) }
}

/// Where each acknowledged mention ended up.
#[derive(Debug, Default)]
struct Audit {
    answered: u64,
    queued: u64,
    pending: u64,
    unread: u64,
    ignored: u64,
    held: u64,
    failed: u64,
    lost: u64,
    duplicates: u64,
    /// Why the ignored mentions were not answered (the reply item's reason).
    ignored_by_reason: BTreeMap<String, u64>,
    /// The first few lost mentions, described.
    examples: Vec<String>,
}

/// Classifies every acknowledged mention from the database alone: its replies on the timeline,
/// the persona's copy in `inbound_events`, the reply's outbox row and the persona's cursor.
async fn audit(db: &Db, acknowledged: &[(usize, i64)]) -> anyhow::Result<Audit> {
    let mut audit = Audit::default();
    let mut cursors: HashMap<usize, i64> = HashMap::new();
    for &(persona_index, id) in acknowledged {
        let persona = persona_name(persona_index);
        let remote_id = id.to_string();
        let replies = db.local_replies(id).await?.iter().filter(|reply| reply.author == persona).count();
        if replies > 1 {
            audit.duplicates += 1;
        }
        if replies > 0 {
            audit.answered += 1;
            continue;
        }
        let lost_because = match db.inbound_state("local", &remote_id, &persona).await?.as_deref() {
            Some("answered") => {
                let key = format!("reply:local:{persona}:{remote_id}");
                match db.outbox_row(&key).await?.map(|row| row.status) {
                    Some(OutboxStatus::Pending) => {
                        audit.queued += 1;
                        continue;
                    }
                    Some(OutboxStatus::Failed) => {
                        audit.failed += 1;
                        continue;
                    }
                    Some(OutboxStatus::Sent) => "answered, its outbox row sent, but no reply on the timeline",
                    None => "answered, but no outbox row",
                }
            }
            Some("pending") => {
                audit.pending += 1;
                continue;
            }
            Some("ignored") => {
                audit.ignored += 1;
                let key = format!("reply:local:{persona}:{remote_id}");
                let reason = db.content_by_key(&key).await?.and_then(|item| item.reason);
                *audit.ignored_by_reason.entry(reason.unwrap_or_else(|| "no reply started".to_owned())).or_default() +=
                    1;
                continue;
            }
            Some("held") => {
                audit.held += 1;
                continue;
            }
            Some(_) => "stored in an unknown state",
            None => {
                let cursor = match cursors.get(&persona_index) {
                    Some(&cursor) => cursor,
                    None => {
                        let stored = db.cursor(&persona, "local").await?;
                        let cursor = stored.and_then(|cursor| cursor.parse::<i64>().ok()).unwrap_or(0);
                        *cursors.entry(persona_index).or_insert(cursor)
                    }
                };
                if id > cursor {
                    audit.unread += 1;
                    continue;
                }
                "not stored, yet the agent's cursor is past it"
            }
        };
        audit.lost += 1;
        if audit.examples.len() < 5 {
            audit.examples.push(format!("lost: mention {id} to {persona}: {lost_because}"));
        }
    }
    Ok(audit)
}

/// Memory the kernel could still give this process (`MemAvailable`), in bytes.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(measurement: &Measurement, name: &str) -> f64 {
        measurement.values.get(name).copied().unwrap_or_else(|| panic!("no {name} in {measurement:?}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_idle_fleet_becomes_ready_and_stops() {
        let measurement = idle(3).await.expect("idle fleet");
        assert!(value(&measurement, "ready_ms") > 0.0, "{measurement:?}");
        assert!(value(&measurement, "rss_bytes") > value(&measurement, "baseline_rss_bytes"), "{measurement:?}");
        let (anon, file) = (value(&measurement, "rss_anon_bytes"), value(&measurement, "rss_file_bytes"));
        assert!(anon > 0.0 && file > 0.0, "{measurement:?}");
        assert!(anon + file <= value(&measurement, "rss_bytes"), "{measurement:?}");
        assert!(value(&measurement, "cpu_idle_percent") >= 0.0, "{measurement:?}");
        assert!(measurement.values.contains_key("shutdown_ms"), "{measurement:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shutdown_under_load_loses_and_duplicates_nothing() {
        let measurement = shutdown(50).await.expect("shutdown under load");
        assert!(value(&measurement, "injected") > 0.0, "{measurement:?}");
        assert_eq!(value(&measurement, "lost"), 0.0, "{measurement:?}");
        assert_eq!(value(&measurement, "duplicates"), 0.0, "{measurement:?}");
        assert!(value(&measurement, "exit_ms") > 0.0, "{measurement:?}");
        let accounted: f64 = ["answered", "queued", "pending", "unread", "ignored", "held", "failed", "lost"]
            .iter()
            .map(|name| value(&measurement, name))
            .sum();
        assert_eq!(accounted, value(&measurement, "injected"), "{measurement:?}");
    }

    #[test]
    fn a_quadratic_start_is_projected_as_such() {
        let progress: Vec<Progress> = (1..=4)
            .map(|second| Progress {
                seconds: f64::from(second),
                census: Census { agents: 0, children: (1000.0 * f64::from(second).sqrt()) as usize },
            })
            .collect();
        let projection = project_ready(&progress, 4000).expect("a projection");
        assert!((projection.exponent - 2.0).abs() < 0.05, "exponent {}", projection.exponent);
        assert!((projection.ready_ms - 16_000.0).abs() < 500.0, "ready {}", projection.ready_ms);
    }
}

//! The TeamLeader: the root of the supervision tree.
//!
//! It spawns every child (Store, LlmPool, Memory, one RateLimiter per platform in use, the
//! Publisher, one Trader per trading persona, one Agent per persona × platform, and in sandbox mode
//! the Crowd), supervises them
//! one-for-one through [`Supervision`], applies configuration reloads as a diff of the tree, and
//! runs the ordered part of graceful shutdown (stop intake, drain agents, drain the outbox, stop
//! the children).

pub mod coordinate;
pub mod plan;
mod work;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::agent::clock::PollClock;
use crate::agent::{Agent, AgentArgs, AgentMsg, AgentSettings, FirstStart, Roster};
use crate::config::{AgentKey, Config, Mode, PlatformKind};
use crate::directory::Directory;
use crate::health::Health;
use crate::llm::{LlmMsg, LlmPool, LlmPoolArgs};
use crate::memory::{Memory, MemoryArgs};
use crate::metrics as m;
use crate::pipeline::Gatekeeper;
use crate::platform::Platforms;
use crate::platform::local::LocalPlatform;
use crate::policy::SecretSet;
use crate::publisher::{Publisher, PublisherArgs, PublisherMsg};
use crate::rate_limit::{RateLimiter, RateLimiterArgs, RateLimiterMsg};
use crate::sim::crowd::{Crowd, CrowdArgs};
use crate::sim::jupiter::JupiterSim;
use crate::sim::solana::SolanaSim;
use crate::store::actor::{Store, StoreArgs};
use crate::store::{Db, OutboxCounts};
use crate::supervisor::{Decision, Exit, RestartPolicy, Supervision};
use crate::task::AbortOnDrop;
use crate::trader::{Trader, TraderArgs, TradingControl};

/// Every kind of child, the `kind` label of the supervisor metrics.
pub const CHILD_KINDS: &[&str] =
    &["store", "llm_pool", "memory", "rate_limiter", "publisher", "trader", "agent", "crowd"];

pub struct TeamLeader;

pub struct TeamLeaderArgs {
    pub config: Arc<Config>,
    pub db: Db,
    pub health: Arc<Health>,
    pub directory: Arc<Directory>,
    pub platforms: Platforms,
    pub local: LocalPlatform,
    /// The sandbox's simulators, for the Crowd and the Traders.
    pub sims: crate::sim::SandboxSims,
    /// The trading kill switch, shared with the admin API.
    pub trading: Arc<TradingControl>,
    /// Every configured secret value, kept out of anything published (rebuilt on reload).
    pub secrets: Arc<SecretSet>,
    /// Each platform's team (handles and roster), built once and shared by its agents (cleared
    /// on reload).
    pub teams: TeamCache,
    /// Sends every agent its polls.
    pub poll_clock: PollClock,
}

/// The team on each platform, shared by every agent there: one copy, not one per agent (with
/// N personas, N copies of N handles would grow as N²).
#[derive(Default)]
pub struct TeamCache {
    teams: std::sync::Mutex<BTreeMap<PlatformKind, Team>>,
    /// Every agent's rows for its first start, read at once before the first spawn loop and
    /// dropped after it: a restart or a reload reads fresh rows, never this snapshot.
    first_starts: std::sync::Mutex<Option<Arc<FirstStarts>>>,
}

/// What [`TeamCache::load_first_starts`] read, by `(persona, platform)`.
struct FirstStarts {
    cursors: HashMap<(String, String), String>,
    dispatched_posts: HashSet<(String, String)>,
    pending_inbound: HashMap<(String, String), i64>,
}

/// What the agents on one platform share.
#[derive(Clone)]
struct Team {
    /// Every persona's handle on the platform.
    handles: Arc<BTreeSet<String>>,
    roster: Arc<Roster>,
    /// The gatekeeper of the personas without their own policy or airlock.
    keeper: Arc<Gatekeeper>,
}

impl TeamCache {
    fn get(&self, config: &Config, platform: PlatformKind, secrets: &Arc<SecretSet>) -> Team {
        crate::sync::lock(&self.teams)
            .entry(platform)
            .or_insert_with(|| {
                let handles = Arc::new(crate::pipeline::team_handles(config, platform));
                let keeper = Arc::new(Gatekeeper::service_wide(config, secrets.clone(), handles.clone()));
                Team { handles, roster: Arc::new(Roster::new(config, platform)), keeper }
            })
            .clone()
    }

    /// Reads every agent's cursor, and which agents have posts to resume or mentions to answer,
    /// in three queries. On an error the agents read their own rows, as on a restart.
    async fn load_first_starts(&self, db: &Db) {
        let read = async {
            Ok::<_, crate::store::StoreError>(FirstStarts {
                cursors: db.all_cursors().await?,
                dispatched_posts: db.agents_with_dispatched_posts().await?,
                pending_inbound: db.agents_with_pending_inbound().await?,
            })
        };
        match read.await {
            Ok(first_starts) => *crate::sync::lock(&self.first_starts) = Some(Arc::new(first_starts)),
            Err(err) => tracing::warn!(error = %err, "cannot read the agents' rows at once; each reads its own"),
        }
    }

    /// Agent `key`'s part of the snapshot, while it lasts.
    fn first_start(&self, key: &AgentKey) -> Option<FirstStart> {
        let first_starts = crate::sync::lock(&self.first_starts).clone()?;
        let id = (key.persona.clone(), key.platform.as_str().to_owned());
        Some(FirstStart {
            cursor: first_starts.cursors.get(&id).cloned(),
            dispatched_posts: first_starts.dispatched_posts.contains(&id),
            pending_inbound: first_starts.pending_inbound.get(&id).map_or(0, |count| (*count).max(0) as usize),
        })
    }

    fn end_first_starts(&self) {
        *crate::sync::lock(&self.first_starts) = None;
    }

    fn clear(&self) {
        crate::sync::lock(&self.teams).clear();
        self.end_first_starts();
    }
}

pub struct TeamLeaderState {
    args: TeamLeaderArgs,
    supervision: Supervision,
    specs: BTreeMap<String, ChildSpec>,
    shutting_down: bool,
    /// The team's content plan (rebuilt on reload).
    planner: Arc<tokio::sync::Mutex<work::Planner>>,
    /// The round of each kind of work running now, if any.
    rounds: BTreeMap<Work, AbortOnDrop>,
    /// The work timers; dropped (cancelled) at shutdown.
    timers: Vec<AbortOnDrop>,
}

/// The TeamLeader's own periodic work (see [`work`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Work {
    Plan,
    Measure,
    Report,
}

/// What a child id stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ChildSpec {
    Store,
    LlmPool,
    Memory,
    /// One per platform with agents, holding a bucket per account (the persona's handle there):
    /// personas sharing an account share its budget.
    RateLimiter(PlatformKind),
    Publisher,
    /// One per persona that trades.
    Trader(String),
    Agent(AgentKey),
    Crowd,
}

impl ChildSpec {
    fn kind(&self) -> &'static str {
        match self {
            ChildSpec::Store => "store",
            ChildSpec::LlmPool => "llm_pool",
            ChildSpec::Memory => "memory",
            ChildSpec::RateLimiter(_) => "rate_limiter",
            ChildSpec::Publisher => "publisher",
            ChildSpec::Trader(_) => "trader",
            ChildSpec::Agent(_) => "agent",
            ChildSpec::Crowd => "crowd",
        }
    }

    fn id(&self) -> String {
        match self {
            ChildSpec::RateLimiter(platform) => format!("rate_limiter:{}", platform.as_str()),
            ChildSpec::Agent(key) => format!("agent:{key}"),
            ChildSpec::Trader(persona) => format!("trader:{persona}"),
            other => other.kind().to_owned(),
        }
    }
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub restarted: Vec<String>,
}

/// What graceful shutdown achieved before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Agents finished their in-flight replies in time.
    pub agents_drained: bool,
    /// The outbox after the drain (None when the drain ran out of time).
    pub outbox: Option<OutboxCounts>,
}

pub enum TeamLeaderMsg {
    /// Spawn a child again (after its backoff or cool-down).
    Restart { id: String, after_cooldown: bool },
    /// Apply a new, validated configuration.
    Reload { config: Arc<Config>, reply: RpcReplyPort<ReloadSummary> },
    /// Stop intake, drain agents and the outbox until `deadline`, stop every child.
    Shutdown { deadline: Instant, reply: RpcReplyPort<ShutdownReport> },
    /// Time for a round of `Work` (its timer), unless one is running.
    Tick(Work),
    /// A round finished.
    RoundDone(Work),
}

impl Actor for TeamLeader {
    type Msg = TeamLeaderMsg;
    type State = TeamLeaderState;
    type Arguments = TeamLeaderArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: TeamLeaderArgs,
    ) -> Result<TeamLeaderState, ActorProcessingErr> {
        let policy = RestartPolicy::from(&args.config.service.supervisor);
        let supervision = Supervision::new(policy, args.health.clone());
        let planner = Arc::new(tokio::sync::Mutex::new(work::Planner::new(&args.config, &args.platforms)));
        Ok(TeamLeaderState {
            args,
            supervision,
            specs: BTreeMap::new(),
            shutting_down: false,
            planner,
            rounds: BTreeMap::new(),
            timers: Vec::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut TeamLeaderState,
    ) -> Result<(), ActorProcessingErr> {
        state.args.teams.load_first_starts(&state.args.db).await;
        for spec in desired_children(&state.args.config) {
            self.add_child(&myself, state, spec).await;
        }
        state.args.teams.end_first_starts();
        update_agent_gauge(state);
        state.args.health.set_tree_up(true);
        tracing::info!(children = state.specs.len(), "supervision tree is up");
        let team = &state.args.config.service.team;
        let measure = work::MeasureSettings::from_config(&state.args.config);
        state.timers.push(myself.send_interval(team.plan_every.get(), || TeamLeaderMsg::Tick(Work::Plan)).into());
        state.timers.push(myself.send_interval(measure.tick(), || TeamLeaderMsg::Tick(Work::Measure)).into());
        state.timers.push(myself.send_interval(REPORT_EVERY, || TeamLeaderMsg::Tick(Work::Report)).into());
        myself.send_message(TeamLeaderMsg::Tick(Work::Plan))?;
        myself.send_message(TeamLeaderMsg::Tick(Work::Report))?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: TeamLeaderMsg,
        state: &mut TeamLeaderState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TeamLeaderMsg::Restart { id, after_cooldown } => {
                if state.shutting_down || !state.supervision.contains(&id) || state.supervision.cell(&id).is_some() {
                    return Ok(());
                }
                if after_cooldown {
                    tracing::info!(child = %id, "cool-down over, trying the child again");
                    state.supervision.cooldown_over(&id, Instant::now());
                }
                self.spawn_child(&myself, state, &id).await;
            }
            TeamLeaderMsg::Reload { config, reply } => {
                let summary = self.reload(&myself, state, config).await;
                let _ = reply.send(summary);
            }
            TeamLeaderMsg::Shutdown { deadline, reply } => {
                let report = self.shutdown(&myself, state, deadline).await;
                let _ = reply.send(report);
            }
            TeamLeaderMsg::Tick(kind) => {
                if !state.shutting_down && !state.rounds.contains_key(&kind) {
                    let round = self.start_round(&myself, state, kind);
                    if let Some(round) = round {
                        state.rounds.insert(kind, round);
                    }
                }
            }
            TeamLeaderMsg::RoundDone(kind) => {
                state.rounds.remove(&kind);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut TeamLeaderState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, exit) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Exit::from_error(&err)),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, Exit::Stopped { reason }),
            _ => return Ok(()),
        };
        if state.shutting_down {
            return Ok(());
        }
        let Some(id) = state.supervision.child_of(cell.get_id()).map(str::to_owned) else { return Ok(()) };
        if let Some(spec) = state.specs.get(&id) {
            clear_directory(&state.args.directory, spec);
        }
        if let Some((id, decision)) = state.supervision.on_exit(cell.get_id(), &exit, Instant::now()) {
            record_exit(state, &id, &decision);
            schedule(&myself, id, decision);
        }
        Ok(())
    }
}

/// How often the TeamLeader checks that last week's report is written.
const REPORT_EVERY: Duration = Duration::from_secs(3600);

impl TeamLeader {
    /// Starts one round of `kind` in a task that reports back with `RoundDone`.
    fn start_round(
        &self,
        myself: &ActorRef<TeamLeaderMsg>,
        state: &TeamLeaderState,
        kind: Work,
    ) -> Option<AbortOnDrop> {
        let db = state.args.db.clone();
        let done = myself.clone();
        let task = match kind {
            Work::Plan => {
                let planner = state.planner.clone();
                let agents: std::collections::HashMap<String, ActorRef<AgentMsg>> = state
                    .supervision
                    .cells_of_kind("agent")
                    .into_iter()
                    .map(|(id, cell)| (id.trim_start_matches("agent:").to_owned(), cell.into()))
                    .collect();
                tokio::spawn(async move {
                    if let Err(err) = work::plan_round(&db, &planner, &agents).await {
                        tracing::warn!(error = %err, "planning round failed; the next one tries again");
                    }
                    let _ = done.send_message(TeamLeaderMsg::RoundDone(Work::Plan));
                })
            }
            Work::Measure => {
                let platforms = state.args.platforms.clone();
                let settings = work::MeasureSettings::from_config(&state.args.config);
                tokio::spawn(async move {
                    if let Err(err) = work::measure_round(&db, &platforms, settings).await {
                        tracing::warn!(error = %err, "measuring round failed; the next one tries again");
                    }
                    let _ = done.send_message(TeamLeaderMsg::RoundDone(Work::Measure));
                })
            }
            Work::Report => {
                if !state.args.config.service.team.weekly_report {
                    return None;
                }
                tokio::spawn(async move {
                    if let Err(err) = work::report_round(&db).await {
                        tracing::warn!(error = %err, "weekly report failed; trying again in an hour");
                    }
                    let _ = done.send_message(TeamLeaderMsg::RoundDone(Work::Report));
                })
            }
        };
        Some(task.into())
    }

    async fn add_child(&self, myself: &ActorRef<TeamLeaderMsg>, state: &mut TeamLeaderState, spec: ChildSpec) {
        let id = spec.id();
        state.supervision.add(&id, spec.kind());
        state.specs.insert(id.clone(), spec);
        self.spawn_child(myself, state, &id).await;
    }

    /// Stops and forgets a child.
    fn remove_child(&self, state: &mut TeamLeaderState, id: &str, reason: &str) {
        if let Some(spec) = state.specs.remove(id) {
            clear_directory(&state.args.directory, &spec);
        }
        if let Some(cell) = state.supervision.remove(id) {
            cell.stop(Some(reason.to_owned()));
        }
    }

    /// Spawns child `id`; a failed start counts as a failure under the restart policy.
    async fn spawn_child(&self, myself: &ActorRef<TeamLeaderMsg>, state: &mut TeamLeaderState, id: &str) {
        let Some(spec) = state.specs.get(id).cloned() else { return };
        match spawn(myself.get_cell(), &spec, &state.args).await {
            Ok(cell) => state.supervision.started(id, cell),
            Err(err) => {
                let exit = Exit::from_error(&err);
                if let Some(decision) = state.supervision.on_child_exit(id, &exit, Instant::now()) {
                    record_exit(state, id, &decision);
                    schedule(myself, id.to_owned(), decision);
                }
            }
        }
    }

    async fn reload(
        &self,
        myself: &ActorRef<TeamLeaderMsg>,
        state: &mut TeamLeaderState,
        config: Arc<Config>,
    ) -> ReloadSummary {
        let old = state.args.config.clone();
        let mut summary = ReloadSummary::default();
        if old.service.store.url != config.service.store.url || old.service.admin.listen != config.service.admin.listen
        {
            tracing::warn!("store.url and admin.listen changes take effect after a restart");
        }
        state.args.config = config.clone();
        state.args.secrets = Arc::new(SecretSet::from_config(&config));
        state.args.teams.clear();
        state.planner = Arc::new(tokio::sync::Mutex::new(work::Planner::new(&config, &state.args.platforms)));
        state.supervision.set_policy(RestartPolicy::from(&config.service.supervisor));

        let desired: BTreeMap<String, ChildSpec> =
            desired_children(&config).into_iter().map(|spec| (spec.id(), spec)).collect();
        let current: Vec<String> = state.specs.keys().cloned().collect();
        for id in &current {
            if !desired.contains_key(id) {
                self.remove_child(state, id, "removed by a configuration reload");
                summary.removed.push(id.clone());
            }
        }
        for (id, spec) in desired {
            let existed = state.specs.contains_key(&id);
            let changed = existed && child_changed(&spec, &old, &config);
            if changed {
                self.remove_child(state, &id, "restarted by a configuration reload");
                summary.restarted.push(id.clone());
            } else if !existed {
                summary.added.push(id.clone());
            }
            if !existed || changed {
                self.add_child(myself, state, spec).await;
            }
        }
        if let Some(llm) = state.args.directory.llm() {
            let _ = llm.send_message(LlmMsg::Reconfigure { config: config.clone() });
        }
        for (id, cell) in state.supervision.cells_of_kind("rate_limiter") {
            if let Some(ChildSpec::RateLimiter(platform)) = state.specs.get(&id) {
                let limiter: ActorRef<RateLimiterMsg> = cell.into();
                let (config, accounts) =
                    (config.service.rate_limit(*platform).clone(), accounts_on(&config, *platform));
                let _ = limiter.send_message(RateLimiterMsg::Reconfigure { config, accounts });
            }
        }
        update_agent_gauge(state);
        state.args.trading.set_configured(config.service.trading.kill_switch);
        metrics::counter!(m::CONFIG_RELOADS, "outcome" => "applied").increment(1);
        tracing::info!(added = ?summary.added, removed = ?summary.removed, restarted = ?summary.restarted, "configuration reloaded");
        summary
    }

    async fn shutdown(
        &self,
        myself: &ActorRef<TeamLeaderMsg>,
        state: &mut TeamLeaderState,
        deadline: Instant,
    ) -> ShutdownReport {
        state.shutting_down = true;
        state.args.health.set_shutting_down();
        state.timers.clear();
        state.rounds.clear();
        let remaining = || deadline.saturating_duration_since(Instant::now());

        // 1. Stop intake: the crowd, then agents' polls and schedules; wait for in-flight replies.
        for (_, cell) in state.supervision.cells_of_kind("crowd") {
            cell.stop(Some("shutdown".into()));
        }
        let agents: Vec<ActorRef<AgentMsg>> =
            state.supervision.cells_of_kind("agent").into_iter().map(|(_, cell)| cell.into()).collect();
        let timeout_ms = remaining().as_millis() as u64;
        let drains = agents
            .iter()
            .map(|agent| async move { ractor::call_t!(agent, |reply| AgentMsg::Drain { reply }, timeout_ms.max(1)) });
        let agents_drained = futures::future::join_all(drains).await.iter().all(Result::is_ok);
        tracing::info!(agents = agents.len(), drained = agents_drained, "agents drained");

        // 2. Publish what is due in the outbox.
        let outbox = match state.args.directory.publisher() {
            Some(publisher) => {
                let timeout_ms = remaining().as_millis() as u64;
                ractor::call_t!(publisher, |reply| PublisherMsg::Drain { reply }, timeout_ms.max(1)).ok()
            }
            None => None,
        };
        match outbox {
            Some(counts) => tracing::info!(pending = counts.pending, sent = counts.sent, "outbox drained"),
            None => {
                tracing::warn!("outbox drain ran out of time; pending rows stay in the database for the next start")
            }
        }

        // 3. Stop every child.
        let stop_wait = remaining().max(Duration::from_millis(500));
        let _ = myself.get_cell().stop_children_and_wait(Some("shutdown".into()), Some(stop_wait)).await;
        state.args.health.set_tree_up(false);
        ShutdownReport { agents_drained, outbox }
    }
}

/// The children a configuration asks for, in start order.
fn desired_children(config: &Config) -> Vec<ChildSpec> {
    let mut specs = vec![ChildSpec::Store, ChildSpec::LlmPool, ChildSpec::Memory];
    let keys = config.agent_keys();
    let platforms: BTreeSet<PlatformKind> = keys.iter().map(|key| key.platform).collect();
    specs.extend(platforms.into_iter().map(ChildSpec::RateLimiter));
    specs.push(ChildSpec::Publisher);
    specs.extend(config.trading_personas().iter().map(|persona| ChildSpec::Trader(persona.name.clone())));
    specs.extend(keys.into_iter().map(ChildSpec::Agent));
    if config.service.mode == Mode::Sandbox
        && config.service.sandbox.crowd
        && PlatformKind::ALL.iter().any(|platform| config.service.platform_enabled(*platform))
    {
        specs.push(ChildSpec::Crowd);
    }
    specs
}

/// Whether a reload changes what a running child was started with.
fn child_changed(spec: &ChildSpec, old: &Config, new: &Config) -> bool {
    match spec {
        ChildSpec::Agent(key) => {
            old.personas.get(&key.persona) != new.personas.get(&key.persona)
                || old.personas.keys().ne(new.personas.keys())
                || old.service.team != new.service.team
                || old.service.policy != new.service.policy
                || old.service.airlock != new.service.airlock
                || old.llm_keys != new.llm_keys
                || old.persona_secrets != new.persona_secrets
                || old.admin_token != new.admin_token
                || old.store_password != new.store_password
                || old.jupiter_key != new.jupiter_key
                || AgentSettings::from_config(old, key.platform) != AgentSettings::from_config(new, key.platform)
        }
        ChildSpec::Crowd => {
            old.personas != new.personas || old.service.sandbox.crowd_every != new.service.sandbox.crowd_every
        }
        ChildSpec::Store => old.service.store.health_every != new.service.store.health_every,
        ChildSpec::Publisher => old.service.publisher != new.service.publisher,
        // Memory's settings, the embedding model its vectors belong to, and the personas' facts.
        ChildSpec::Memory => {
            old.service.memory != new.service.memory
                || old.embedding_model() != new.embedding_model()
                || old.personas != new.personas
        }
        ChildSpec::Trader(persona) => {
            old.service.trading != new.service.trading
                || old.service.airlock != new.service.airlock
                || old.personas.get(persona) != new.personas.get(persona)
                || old.persona_secret(persona, "trading.keypair") != new.persona_secret(persona, "trading.keypair")
                || old.jupiter_key != new.jupiter_key
        }
        // A RateLimiter is reconfigured in place (its buckets keep what they have spent).
        ChildSpec::LlmPool | ChildSpec::RateLimiter(_) => false,
    }
}

/// Keeps a restart or an opened circuit for the weekly report, in a task (the mailbox never
/// waits for the database); a failed write is only logged.
fn record_exit(state: &TeamLeaderState, id: &str, decision: &Decision) {
    let kind = match decision {
        Decision::Restart(_) => "restart",
        Decision::Park(_) => "circuit_open",
    };
    let (persona, platform) = match state.specs.get(id) {
        Some(ChildSpec::Agent(key)) => (Some(key.persona.clone()), Some(key.platform.as_str())),
        Some(ChildSpec::Trader(persona)) => (Some(persona.clone()), None),
        Some(ChildSpec::RateLimiter(platform)) => (None, Some(platform.as_str())),
        _ => (None, None),
    };
    let (db, id) = (state.args.db.clone(), id.to_owned());
    tokio::spawn(async move {
        if let Err(err) = db.record_ops_event(kind, persona.as_deref(), platform, &id, 0).await {
            tracing::debug!(error = %err, child = %id, "could not record the exit for the report");
        }
    });
}

fn schedule(myself: &ActorRef<TeamLeaderMsg>, id: String, decision: Decision) {
    let (delay, after_cooldown) = match decision {
        Decision::Restart(delay) => (delay, false),
        Decision::Park(cooldown) => (cooldown, true),
    };
    myself.send_after(delay, move || TeamLeaderMsg::Restart { id, after_cooldown });
}

fn clear_directory(directory: &Directory, spec: &ChildSpec) {
    match spec {
        ChildSpec::LlmPool => directory.set_llm(None),
        ChildSpec::Memory => directory.set_memory(None),
        ChildSpec::Publisher => directory.set_publisher(None),
        ChildSpec::Trader(persona) => directory.set_trader(persona, None),
        ChildSpec::RateLimiter(platform) => directory.set_rate_limiter(platform.as_str(), None),
        ChildSpec::Store | ChildSpec::Agent(_) | ChildSpec::Crowd => {}
    }
}

/// Each persona's account (handle) on `platform`, for its RateLimiter; only the personas whose
/// account is not their own name are listed (the limiter's default).
fn accounts_on(config: &Config, platform: PlatformKind) -> HashMap<String, String> {
    config
        .personas
        .values()
        .filter(|persona| persona.platforms.contains(&platform))
        .map(|persona| (persona.name.clone(), persona.handle_on(platform)))
        .filter(|(name, account)| name != account)
        .collect()
}

fn update_agent_gauge(state: &TeamLeaderState) {
    let mut agents: BTreeMap<&'static str, usize> = BTreeMap::new();
    for spec in state.specs.values() {
        if let ChildSpec::Agent(key) = spec {
            *agents.entry(key.platform.as_str()).or_default() += 1;
        }
    }
    // One gauge per platform Chorus knows, zero included.
    for platform in PlatformKind::ALL {
        let name = platform.as_str();
        metrics::gauge!(m::AGENTS, "platform" => name).set(agents.get(name).copied().unwrap_or(0) as f64);
    }
}

/// Spawns the actor a spec stands for, linked to the TeamLeader, and publishes it in the directory.
async fn spawn(
    supervisor: ActorCell,
    spec: &ChildSpec,
    args: &TeamLeaderArgs,
) -> Result<ActorCell, ActorProcessingErr> {
    let config = &args.config;
    let directory = &args.directory;
    let cell = match spec {
        ChildSpec::Store => {
            let store_args = StoreArgs {
                db: args.db.clone(),
                health: args.health.clone(),
                every: config.service.store.health_every.get(),
            };
            Store::spawn_linked(None, Store, store_args, supervisor).await?.0.get_cell()
        }
        ChildSpec::LlmPool => {
            let llm_args = LlmPoolArgs { config: config.clone(), db: args.db.clone() };
            let (actor, _) = LlmPool::spawn_linked(None, LlmPool, llm_args, supervisor).await?;
            directory.set_llm(Some(actor.clone()));
            actor.get_cell()
        }
        ChildSpec::Memory => {
            let memory_args = MemoryArgs::from_config(config, args.db.clone(), directory.clone());
            let (actor, _) = Memory::spawn_linked(None, Memory, memory_args, supervisor).await?;
            directory.set_memory(Some(actor.clone()));
            actor.get_cell()
        }
        ChildSpec::RateLimiter(platform) => {
            let limiter_args = RateLimiterArgs {
                platform: platform.as_str(),
                config: config.service.rate_limit(*platform).clone(),
                accounts: accounts_on(config, *platform),
            };
            let (actor, _) = RateLimiter::spawn_linked(None, RateLimiter, limiter_args, supervisor).await?;
            directory.set_rate_limiter(platform.as_str(), Some(actor.clone()));
            actor.get_cell()
        }
        ChildSpec::Publisher => {
            let publisher_args = PublisherArgs {
                db: args.db.clone(),
                platforms: args.platforms.clone(),
                directory: directory.clone(),
                config: config.service.publisher.clone(),
            };
            let (actor, _) = Publisher::spawn_linked(None, Publisher, publisher_args, supervisor).await?;
            directory.set_publisher(Some(actor.clone()));
            actor.get_cell()
        }
        ChildSpec::Trader(persona) => {
            let persona = config.personas.get(persona).cloned().ok_or("persona no longer configured")?;
            let trading = &config.service.trading;
            let trader_args = TraderArgs {
                persona: persona.clone(),
                config: config.clone(),
                db: args.db.clone(),
                directory: directory.clone(),
                control: args.trading.clone(),
                jupiter_url: args
                    .sims
                    .jupiter
                    .as_ref()
                    .map_or_else(|| trading.jupiter_url.clone(), JupiterSim::base_url),
                rpc_url: args.sims.solana.as_ref().map_or_else(|| trading.rpc_url.clone(), SolanaSim::url),
            };
            let (actor, _) = Trader::spawn_linked(None, Trader, trader_args, supervisor).await?;
            directory.set_trader(&persona.name, Some(actor.clone()));
            actor.get_cell()
        }
        ChildSpec::Agent(key) => {
            let persona = config.personas.get(&key.persona).cloned().ok_or("persona no longer configured")?;
            let platform = args.platforms.get(key.platform).ok_or("platform not available")?;
            let team = args.teams.get(config, key.platform, &args.secrets);
            let keeper = if Gatekeeper::is_shared_by(&persona) {
                team.keeper
            } else {
                Arc::new(Gatekeeper::new(config, &persona, args.secrets.clone(), team.handles))
            };
            let agent_args = Arc::new(AgentArgs {
                key: key.clone(),
                persona,
                keeper,
                roster: team.roster,
                platform,
                db: args.db.clone(),
                directory: directory.clone(),
                settings: AgentSettings::from_config(config, key.platform),
                first_start: args.teams.first_start(key),
                clock: args.poll_clock.clone(),
            });
            Agent::spawn_linked(None, Agent, agent_args, supervisor).await?.0.get_cell()
        }
        ChildSpec::Crowd => {
            let personas = config.personas.values().cloned().collect();
            let crowd_args = CrowdArgs {
                local: args.local.clone(),
                sims: args.sims.clone(),
                config: config.clone(),
                personas,
                every: config.service.sandbox.crowd_every.get(),
            };
            Crowd::spawn_linked(None, Crowd, crowd_args, supervisor).await?.0.get_cell()
        }
    };
    Ok(cell)
}

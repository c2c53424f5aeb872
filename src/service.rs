//! The service: wires storage, the admin server and the supervision tree together, and owns
//! their lifecycle (start, reload, ordered shutdown). `main` and the in-process tests both start
//! Chorus through [`start`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ractor::{Actor, ActorRef};
use tokio::sync::{mpsc, oneshot, watch};

use crate::admin::{self, AdminState, ReloadRequest};
use crate::config::{self, Config, ConfigErrors, Mode};
use crate::directory::Directory;
use crate::health::Health;
use crate::metrics as m;
use crate::platform::Platforms;
use crate::platform::local::LocalPlatform;
use crate::store::{Db, OutboxCounts};
use crate::team_leader::{ReloadSummary, ShutdownReport, TeamLeader, TeamLeaderArgs, TeamLeaderMsg};
use crate::trader::TradingControl;

/// A running Chorus.
pub struct Service {
    inner: Arc<Inner>,
    admin_addr: SocketAddr,
    admin_task: tokio::task::JoinHandle<()>,
    admin_stop: oneshot::Sender<()>,
    /// Turns true when the TeamLeader (the whole tree) has stopped.
    tree_exited: watch::Receiver<bool>,
}

struct Inner {
    config_path: PathBuf,
    /// The running configuration, shared with the admin server.
    config: Arc<std::sync::Mutex<Arc<Config>>>,
    db: Db,
    health: Arc<Health>,
    local: LocalPlatform,
    sims: crate::sim::SandboxSims,
    directory: Arc<Directory>,
    team_leader: ActorRef<TeamLeaderMsg>,
}

/// Why a reload was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration is invalid; the running one stays.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The supervision tree did not take the new configuration; the running one stays.
    #[error("the supervision tree did not answer the reload")]
    TreeUnavailable,
}

/// How a shutdown went.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownOutcome {
    pub tree: Option<ShutdownReport>,
    pub elapsed: Duration,
    /// Outbox after everything stopped.
    pub outbox: Option<OutboxCounts>,
}

/// Connects and migrates the store, starts the admin server and the supervision tree.
pub async fn start(config: Config) -> anyhow::Result<Service> {
    start_with(config, crate::sim::SandboxSims::default()).await
}

/// [`start`] against simulators that already run (tests that restart a service in the same
/// simulated world); simulated platforms without one here start their own.
pub async fn start_with(config: Config, existing_sims: crate::sim::SandboxSims) -> anyhow::Result<Service> {
    let prometheus = m::install();
    let config = Arc::new(config);
    let store = &config.service.store;
    let db = Db::connect_with_password(&store.url, config.store_password.as_ref(), store.max_connections)
        .await
        .context("store.url: cannot open the database")?;
    db.migrate().await.context("cannot migrate the database")?;
    let health = Arc::new(Health::default());
    health.set_migrated();

    start_llm_simulator(&config).await?;
    let trading = Arc::new(
        TradingControl::load(db.clone(), config.service.trading.kill_switch)
            .await
            .context("cannot read the trading kill switch")?,
    );
    let directory = Arc::new(Directory::default());
    let local = LocalPlatform::new(db.clone());
    let mut platforms = Platforms::default();
    platforms.insert(Arc::new(local.clone()));
    let sims = crate::platform::connect::connect(&config, &directory, &mut platforms, existing_sims).await?;

    if config.admin_token.is_none() {
        tracing::warn!("no admin token configured (CHORUS_ADMIN_TOKEN): /admin routes are disabled");
    }
    let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let running_config = Arc::new(std::sync::Mutex::new(config.clone()));
    let admin_state = AdminState {
        health: health.clone(),
        db: db.clone(),
        local: local.clone(),
        prometheus,
        token: config.admin_token.clone(),
        reload: reload_tx,
        directory: directory.clone(),
        trading: trading.clone(),
        config: running_config.clone(),
        platforms: platforms.clone(),
    };
    let (admin_stop, admin_stopped) = oneshot::channel::<()>();
    let (admin_addr, admin_task) = admin::serve(config.service.admin.listen, admin_state, async move {
        let _ = admin_stopped.await;
    })
    .await
    .with_context(|| format!("admin.listen: cannot listen on {}", config.service.admin.listen))?;
    tracing::info!(addr = %admin_addr, "admin server listening");

    let args = TeamLeaderArgs {
        config: config.clone(),
        db: db.clone(),
        health: health.clone(),
        directory: directory.clone(),
        platforms,
        local: local.clone(),
        sims: sims.clone(),
        trading,
        secrets: Arc::new(crate::policy::SecretSet::from_config(&config)),
        teams: Default::default(),
        poll_clock: crate::agent::clock::PollClock::start(),
    };
    let (team_leader, team_leader_task) =
        Actor::spawn(None, TeamLeader, args).await.context("cannot start the supervision tree")?;

    // Nothing supervises the root: if it ever stops outside a shutdown, readiness drops and
    // `shutdown::run_until_signalled` exits non-zero so the service manager restarts Chorus.
    let (exited_tx, tree_exited) = watch::channel(false);
    let watched_health = health.clone();
    tokio::spawn(async move {
        let _ = team_leader_task.await;
        watched_health.set_tree_up(false);
        let _ = exited_tx.send(true);
    });

    let inner = Arc::new(Inner {
        config_path: config.path.clone(),
        config: running_config,
        db,
        health,
        local,
        sims,
        directory,
        team_leader,
    });
    tokio::spawn(serve_reloads(Arc::downgrade(&inner), reload_rx));
    tracing::info!(
        mode = ?config.service.mode,
        personas = config.personas.len(),
        agents = config.agent_keys().len(),
        timeline = %format!("http://{admin_addr}/"),
        "chorus is running"
    );
    Ok(Service { inner, admin_addr, admin_task, admin_stop, tree_exited })
}

/// In sandbox mode, `sandbox.llm_simulator` starts the LLM simulator for providers to point at.
async fn start_llm_simulator(config: &Config) -> anyhow::Result<()> {
    let (Mode::Sandbox, Some(addr)) = (config.service.mode, config.service.sandbox.llm_simulator) else {
        return Ok(());
    };
    let sim = crate::sim::llm::LlmSim::start_on(addr)
        .await
        .with_context(|| format!("sandbox.llm_simulator: cannot listen on {addr}"))?;
    tracing::info!(openai = %sim.openai_base_url(), anthropic = %sim.anthropic_base_url(), "llm simulator listening");
    Ok(())
}

async fn serve_reloads(inner: std::sync::Weak<Inner>, mut requests: mpsc::Receiver<ReloadRequest>) {
    while let Some(request) = requests.recv().await {
        let Some(inner) = inner.upgrade() else { break };
        let _ = request.reply.send(inner.reload().await);
    }
}

impl Inner {
    async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let config = match config::load(&self.config_path) {
            Ok(config) => Arc::new(config),
            Err(errors) => {
                metrics::counter!(m::CONFIG_RELOADS, "outcome" => "rejected").increment(1);
                for error in &errors.0 {
                    tracing::error!(error = %error, "configuration rejected; keeping the running one");
                }
                return Err(ReloadError::Invalid(errors));
            }
        };
        let reload =
            ractor::call_t!(self.team_leader, |reply| TeamLeaderMsg::Reload { config: config.clone(), reply }, 30_000);
        let Ok(summary) = reload else {
            tracing::error!("the supervision tree did not take the new configuration; keeping the running one");
            return Err(ReloadError::TreeUnavailable);
        };
        *self.config.lock().expect("config lock") = config;
        Ok(summary)
    }
}

impl Service {
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.inner.health
    }

    pub fn local(&self) -> &LocalPlatform {
        &self.inner.local
    }

    /// The X, Reddit and Discord simulators this sandbox runs, if any.
    pub fn sims(&self) -> &crate::sim::SandboxSims {
        &self.inner.sims
    }

    /// The Memory actor right now (`None` while it restarts).
    pub fn memory(&self) -> Option<ActorRef<crate::memory::MemoryMsg>> {
        self.inner.directory.memory()
    }

    /// The Publisher right now (`None` while it restarts).
    pub fn publisher(&self) -> Option<ActorRef<crate::publisher::PublisherMsg>> {
        self.inner.directory.publisher()
    }

    pub fn config(&self) -> Arc<Config> {
        self.inner.config.lock().expect("config lock").clone()
    }

    /// Resolves once the supervision tree has stopped (at shutdown, or if its root failed).
    pub fn tree_exited(&self) -> watch::Receiver<bool> {
        self.tree_exited.clone()
    }

    pub fn config_path(&self) -> &Path {
        &self.inner.config_path
    }

    /// Re-reads the configuration file; a valid one is applied, an invalid one is rejected (its
    /// errors returned and logged) and the running configuration kept.
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        self.inner.reload().await
    }

    /// Ordered shutdown: stop intake and schedules, drain agents and the outbox up to the
    /// configured deadline, stop the tree, stop the admin server, close the pool.
    pub async fn shutdown(self) -> ShutdownOutcome {
        let started = Instant::now();
        let deadline_after = self.config().service.shutdown.deadline.get();
        let deadline = started + deadline_after;
        tracing::info!(deadline_ms = deadline_after.as_millis() as u64, "shutting down");
        self.inner.health.set_shutting_down();

        let grace = deadline_after + Duration::from_secs(2);
        let tree = ractor::call_t!(
            self.inner.team_leader,
            |reply| TeamLeaderMsg::Shutdown { deadline, reply },
            grace.as_millis() as u64
        )
        .ok();
        let _ = self.inner.team_leader.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(2))).await;
        let mut tree_exited = self.tree_exited.clone();
        let _ = tokio::time::timeout(Duration::from_secs(1), tree_exited.wait_for(|exited| *exited)).await;

        let _ = self.admin_stop.send(());
        if tokio::time::timeout(Duration::from_secs(2), self.admin_task).await.is_err() {
            tracing::warn!("admin server did not stop in time");
        }
        let outbox = self.inner.db.outbox_counts().await.ok();
        if tokio::time::timeout(Duration::from_secs(2), self.inner.db.close()).await.is_err() {
            tracing::warn!("database pool did not close in time");
        }
        let elapsed = started.elapsed();
        match outbox {
            Some(counts) => tracing::info!(
                elapsed_ms = elapsed.as_millis() as u64,
                pending = counts.pending,
                sent = counts.sent,
                "stopped"
            ),
            None => tracing::info!(elapsed_ms = elapsed.as_millis() as u64, "stopped"),
        }
        ShutdownOutcome { tree, elapsed, outbox }
    }
}

//! One-for-one supervision with backoff and circuit parking — the one restart policy of the tree.
//!
//! ractor stops a parent when a child dies unless the parent decides otherwise, and has no
//! restart strategy of its own. `ractor-supervisor` 0.2 was evaluated: its meltdown limit stops
//! the *supervisor* when a child restarts too often, while Chorus must park only that child (its
//! circuit opens for a cool-down and every sibling keeps working), open the circuit at once on an
//! authentication error, and report each child on `/readyz`. Its children are also global
//! registry names, which clash when several services share a process (the tests). So the policy
//! is written here, as plain bookkeeping a supervising actor drives:
//!
//! 1. the actor registers each child ([`Supervision::add`]) and reports it started;
//! 2. on a `SupervisionEvent` (or a failed spawn) it asks [`Supervision::on_exit`] what to do;
//! 3. it carries the [`Decision`] out with a timer message (`send_after`) that re-spawns the child.
//!
//! Restart `n` within the window waits `backoff_initial · 2^(n-1)` (capped at `backoff_max`,
//! ±20 % jitter; [`crate::backoff`]). More than `max_restarts` restarts within `window` open the circuit: the child is
//! parked for `cooldown`, then tried once more (half-open); failing again within the window parks
//! it again. An [`is_auth_failure`] exit opens the circuit at once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{ActorCell, ActorId, ActorProcessingErr};

use crate::config::SupervisorConfig;
use crate::health::{ChildState, ChildStatus, Health};
use crate::metrics as m;

/// Restart limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub max_restarts: u32,
    pub window: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub cooldown: Duration,
}

impl From<&SupervisorConfig> for RestartPolicy {
    fn from(config: &SupervisorConfig) -> Self {
        Self {
            max_restarts: config.max_restarts,
            window: config.window.get(),
            backoff_initial: config.backoff_initial.get(),
            backoff_max: config.backoff_max.get(),
            cooldown: config.cooldown.get(),
        }
    }
}

/// Errors that mean "credentials were refused": restarting cannot help.
pub trait AuthFailure {
    fn is_auth(&self) -> bool;
}

/// Whether a child's failure is an authentication failure. Children report one by failing with
/// a [`crate::platform::PlatformError::Auth`] or [`crate::llm::LlmError::Auth`], or by stopping
/// with a reason that starts with `auth:`.
pub fn is_auth_failure(err: &ActorProcessingErr) -> bool {
    if let Some(ractor::SpawnErr::StartupFailed(inner)) = err.downcast_ref::<ractor::SpawnErr>() {
        return is_auth_failure(inner);
    }
    if let Some(err) = err.downcast_ref::<crate::platform::PlatformError>() {
        return err.is_auth();
    }
    if let Some(err) = err.downcast_ref::<crate::llm::LlmError>() {
        return err.is_auth();
    }
    false
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Returned `Err`, panicked, or failed to start.
    Failed { auth: bool, message: String },
    /// Stopped on its own.
    Stopped { reason: Option<String> },
}

impl Exit {
    pub fn from_error(err: &ActorProcessingErr) -> Self {
        Exit::Failed { auth: is_auth_failure(err), message: err.to_string() }
    }

    fn is_auth(&self) -> bool {
        match self {
            Exit::Failed { auth, .. } => *auth,
            Exit::Stopped { reason } => reason.as_deref().is_some_and(|reason| reason.starts_with("auth:")),
        }
    }

    fn message(&self) -> String {
        match self {
            Exit::Failed { message, .. } => message.clone(),
            Exit::Stopped { reason } => reason.clone().unwrap_or_else(|| "stopped".to_owned()),
        }
    }
}

/// What to do about a child that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Spawn it again after this delay.
    Restart(Duration),
    /// Its circuit is open: try again only after this cool-down.
    Park(Duration),
}

#[derive(Debug)]
struct Child {
    kind: &'static str,
    cell: Option<ActorCell>,
    state: ChildState,
    /// The state last counted in [`Supervision::counts`] (`None` before the first publish).
    counted: Option<ChildState>,
    /// Set at the child's first exit: most children never exit, and a fleet of 10,000 agents
    /// keeps one `Child` each (boxed, the map's entries are 64 bytes instead of 160).
    history: Option<Box<History>>,
}

/// A child's exits.
#[derive(Debug, Default)]
struct History {
    /// Restart times inside the window.
    restarts_in_window: VecDeque<Instant>,
    total_restarts: u32,
    recent_backoff: VecDeque<Duration>,
    /// Set when the child is tried again after a cool-down; one failure then re-parks it.
    half_open_since: Option<Instant>,
    /// Why the circuit is open, while parked.
    reason: Option<String>,
}

/// Restart bookkeeping for the children of one supervising actor.
pub struct Supervision {
    policy: RestartPolicy,
    children: HashMap<String, Child>,
    by_actor: HashMap<ActorId, String>,
    /// Children by (kind, state), kept as they change: the `chorus_supervisor_children` gauges are
    /// set from it for the pairs a transition touched, never by recounting every child (which made
    /// a start of N children cost N²).
    counts: HashMap<(&'static str, ChildState), u32>,
    health: Arc<Health>,
}

impl Supervision {
    pub fn new(policy: RestartPolicy, health: Arc<Health>) -> Self {
        let supervision =
            Self { policy, children: HashMap::new(), by_actor: HashMap::new(), counts: HashMap::new(), health };
        // Every (kind, state) gauge exists from the start, zero included.
        for kind in crate::team_leader::CHILD_KINDS {
            for state in [ChildState::Running, ChildState::Restarting, ChildState::Parked] {
                supervision.set_gauge(kind, state);
            }
        }
        supervision
    }

    pub fn set_policy(&mut self, policy: RestartPolicy) {
        self.policy = policy;
    }

    /// Registers a child before its first spawn.
    pub fn add(&mut self, id: &str, kind: &'static str) {
        self.children.insert(
            id.to_owned(),
            Child { kind, cell: None, state: ChildState::Restarting, counted: None, history: None },
        );
        self.publish(id);
    }

    /// The child is running as `cell`.
    pub fn started(&mut self, id: &str, cell: ActorCell) {
        let Some(child) = self.children.get_mut(id) else { return };
        self.by_actor.insert(cell.get_id(), id.to_owned());
        child.cell = Some(cell);
        child.state = ChildState::Running;
        if let Some(history) = &mut child.history {
            history.reason = None;
        }
        self.publish(id);
    }

    /// Forgets a child (removed by a reload); returns its cell so the caller can stop it.
    pub fn remove(&mut self, id: &str) -> Option<ActorCell> {
        let child = self.children.remove(id)?;
        if let Some(cell) = &child.cell {
            self.by_actor.remove(&cell.get_id());
        }
        self.health.remove_child(id);
        if let Some(state) = child.counted {
            self.count(child.kind, state, -1);
        }
        child.cell
    }

    pub fn contains(&self, id: &str) -> bool {
        self.children.contains_key(id)
    }

    /// Child id of a running actor.
    pub fn child_of(&self, actor: ActorId) -> Option<&str> {
        self.by_actor.get(&actor).map(String::as_str)
    }

    pub fn cell(&self, id: &str) -> Option<&ActorCell> {
        self.children.get(id).and_then(|child| child.cell.as_ref())
    }

    pub fn ids(&self) -> Vec<String> {
        self.children.keys().cloned().collect()
    }

    /// Cells of running children of one kind.
    pub fn cells_of_kind(&self, kind: &str) -> Vec<(String, ActorCell)> {
        self.children
            .iter()
            .filter(|(_, child)| child.kind == kind)
            .filter_map(|(id, child)| child.cell.clone().map(|cell| (id.clone(), cell)))
            .collect()
    }

    /// Decides what happens to an actor that exited. `None` when it is not (or no longer) ours.
    pub fn on_exit(&mut self, actor: ActorId, exit: &Exit, now: Instant) -> Option<(String, Decision)> {
        let id = self.by_actor.remove(&actor)?;
        let decision = self.on_child_exit(&id, exit, now)?;
        Some((id, decision))
    }

    /// Decides what happens to child `id` after `exit` (also used when a spawn fails).
    pub fn on_child_exit(&mut self, id: &str, exit: &Exit, now: Instant) -> Option<Decision> {
        let policy = self.policy;
        let child = self.children.get_mut(id)?;
        child.cell = None;
        let kind = child.kind;
        let history = child.history.get_or_insert_with(Box::default);

        let park_reason = if exit.is_auth() {
            Some(format!("authentication failed: {}", exit.message()))
        } else if history.half_open_since.is_some_and(|since| now.duration_since(since) < policy.window) {
            Some(format!("failed again after cool-down: {}", exit.message()))
        } else {
            history.half_open_since = None;
            while history.restarts_in_window.front().is_some_and(|at| now.duration_since(*at) > policy.window) {
                history.restarts_in_window.pop_front();
            }
            (history.restarts_in_window.len() as u32 >= policy.max_restarts).then(|| {
                format!("{} restarts within {:?}; last error: {}", policy.max_restarts, policy.window, exit.message())
            })
        };

        let decision = match park_reason {
            Some(reason) => {
                let label = if exit.is_auth() { "auth" } else { "intensity" };
                metrics::counter!(m::SUPERVISOR_CIRCUIT_OPENED, "kind" => kind, "reason" => label).increment(1);
                tracing::error!(child = id, kind, cooldown_ms = policy.cooldown.as_millis() as u64, reason = %reason,
                    "child circuit opened, parking it");
                child.state = ChildState::Parked;
                history.reason = Some(reason);
                history.restarts_in_window.clear();
                Decision::Park(policy.cooldown)
            }
            None => {
                let attempt = history.restarts_in_window.len() as u32;
                let delay = crate::backoff::delay(policy.backoff_initial, policy.backoff_max, attempt);
                history.restarts_in_window.push_back(now);
                history.total_restarts += 1;
                history.recent_backoff.push_back(delay);
                if history.recent_backoff.len() > 16 {
                    history.recent_backoff.pop_front();
                }
                child.state = ChildState::Restarting;
                metrics::counter!(m::SUPERVISOR_RESTARTS, "kind" => kind).increment(1);
                tracing::warn!(child = id, kind, delay_ms = delay.as_millis() as u64, error = %exit.message(),
                    "child exited, restarting");
                Decision::Restart(delay)
            }
        };
        self.publish(id);
        Some(decision)
    }

    /// A parked child's cool-down is over: it is tried once more, half-open.
    pub fn cooldown_over(&mut self, id: &str, now: Instant) {
        if let Some(child) = self.children.get_mut(id) {
            child.history.get_or_insert_with(Box::default).half_open_since = Some(now);
        }
    }

    fn publish(&mut self, id: &str) {
        let Some(child) = self.children.get_mut(id) else { return };
        let history = child.history.as_deref();
        self.health.set_child(
            id,
            ChildStatus {
                kind: child.kind,
                state: child.state,
                restarts: history.map_or(0, |history| history.total_restarts),
                recent_backoff_ms: history
                    .map(|history| history.recent_backoff.iter().map(|d| d.as_millis() as u64).collect())
                    .unwrap_or_default(),
                reason: history.and_then(|history| history.reason.clone()),
            },
        );
        let (kind, state) = (child.kind, child.state);
        let before = child.counted.replace(state);
        if before == Some(state) {
            return;
        }
        if let Some(before) = before {
            self.count(kind, before, -1);
        }
        self.count(kind, state, 1);
    }

    /// Adds `delta` to the children of `kind` in `state` and sets that one gauge.
    fn count(&mut self, kind: &'static str, state: ChildState, delta: i32) {
        let count = self.counts.entry((kind, state)).or_default();
        *count = count.saturating_add_signed(delta);
        self.set_gauge(kind, state);
    }

    fn set_gauge(&self, kind: &'static str, state: ChildState) {
        let count = self.counts.get(&(kind, state)).copied().unwrap_or(0);
        metrics::gauge!(m::SUPERVISOR_CHILDREN, "kind" => kind, "state" => state.as_str()).set(f64::from(count));
    }

    /// How many children of `kind` are in `state` (what the gauge says).
    #[cfg(test)]
    fn counted(&self, kind: &str, state: ChildState) -> u32 {
        self.counts.iter().filter(|((k, s), _)| *k == kind && *s == state).map(|(_, count)| *count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 3,
            window: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            cooldown: Duration::from_secs(300),
        }
    }

    fn failed() -> Exit {
        Exit::Failed { auth: false, message: "boom".into() }
    }

    #[test]
    fn too_many_restarts_in_the_window_park_the_child_then_half_open_retries_once() {
        let health = Arc::new(Health::default());
        let mut supervision = Supervision::new(policy(), health.clone());
        supervision.add("agent:bob@local", "agent");
        let start = Instant::now();
        let mut delays = Vec::new();
        for n in 0..3 {
            match supervision.on_child_exit("agent:bob@local", &failed(), start + Duration::from_secs(n)) {
                Some(Decision::Restart(delay)) => delays.push(delay),
                other => panic!("expected a restart, got {other:?}"),
            }
        }
        assert!(delays[0] < delays[1] && delays[1] < delays[2], "{delays:?}");
        let decision = supervision.on_child_exit("agent:bob@local", &failed(), start + Duration::from_secs(4));
        assert_eq!(decision, Some(Decision::Park(Duration::from_secs(300))));
        assert_eq!(health.readiness().degraded["agent:bob@local"].state, ChildState::Parked);

        // Half-open: one more failure soon after the cool-down parks it again at once.
        let after = start + Duration::from_secs(310);
        supervision.cooldown_over("agent:bob@local", after);
        let decision = supervision.on_child_exit("agent:bob@local", &failed(), after + Duration::from_secs(1));
        assert!(matches!(decision, Some(Decision::Park(_))));
    }

    #[test]
    fn child_counts_follow_each_transition() {
        let health = Arc::new(Health::default());
        let mut supervision = Supervision::new(policy(), health.clone());
        supervision.add("agent:ada@local", "agent");
        supervision.add("agent:bob@local", "agent");
        supervision.add("memory", "memory");
        assert_eq!(supervision.counted("agent", ChildState::Restarting), 2);
        let exit = Exit::Failed { auth: true, message: "401".into() };
        supervision.on_child_exit("agent:bob@local", &exit, Instant::now());
        assert_eq!(supervision.counted("agent", ChildState::Restarting), 1);
        assert_eq!(supervision.counted("agent", ChildState::Parked), 1);
        assert_eq!(health.readiness().degraded.len(), 3);
        supervision.remove("agent:bob@local");
        assert_eq!(supervision.counted("agent", ChildState::Parked), 0);
        assert_eq!(supervision.counted("memory", ChildState::Restarting), 1);
        assert!(!health.readiness().degraded.contains_key("agent:bob@local"));
    }

    #[test]
    fn restarts_outside_the_window_do_not_count() {
        let mut supervision = Supervision::new(policy(), Arc::new(Health::default()));
        supervision.add("memory", "memory");
        let start = Instant::now();
        for n in 0..10 {
            let decision = supervision.on_child_exit("memory", &failed(), start + Duration::from_secs(61 * n));
            assert!(matches!(decision, Some(Decision::Restart(_))), "restart {n}: {decision:?}");
        }
    }

    #[test]
    fn auth_failure_opens_the_circuit_at_once() {
        let mut supervision = Supervision::new(policy(), Arc::new(Health::default()));
        supervision.add("agent:ada@local", "agent");
        let exit = Exit::Failed { auth: true, message: "401".into() };
        let decision = supervision.on_child_exit("agent:ada@local", &exit, Instant::now());
        assert!(matches!(decision, Some(Decision::Park(_))));
        let stopped = Exit::Stopped { reason: Some("auth: token revoked".into()) };
        supervision.add("agent:bob@local", "agent");
        assert!(matches!(
            supervision.on_child_exit("agent:bob@local", &stopped, Instant::now()),
            Some(Decision::Park(_))
        ));
    }
}

//! The readiness board: what `/readyz` and `/admin/status` report. Written by the supervision
//! tree and the service lifecycle, read by the admin server.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// How a supervised child is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChildStatus {
    pub kind: &'static str,
    pub state: ChildState,
    /// Restarts since the service started.
    pub restarts: u32,
    /// The delays chosen before the latest restarts, oldest first (at most 16).
    pub recent_backoff_ms: Vec<u64>,
    /// Why the circuit is open, while parked.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    Running,
    Restarting,
    Parked,
}

impl ChildState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChildState::Running => "running",
            ChildState::Restarting => "restarting",
            ChildState::Parked => "parked",
        }
    }
}

#[derive(Debug, Default)]
pub struct Health {
    migrated: AtomicBool,
    tree_up: AtomicBool,
    store_ok: AtomicBool,
    shutting_down: AtomicBool,
    children: RwLock<Board>,
}

/// Every child's status, and what the probes read kept as it changes: the children that are not
/// running (a readiness probe copies only those, not every child) and how many run of each kind.
#[derive(Debug, Default)]
struct Board {
    children: BTreeMap<String, ChildStatus>,
    degraded: BTreeMap<String, ChildStatus>,
    running: HashMap<&'static str, usize>,
}

impl Board {
    fn forget(&mut self, id: &str) {
        let Some(old) = self.children.remove(id) else { return };
        if old.state == ChildState::Running {
            if let Some(count) = self.running.get_mut(old.kind) {
                *count = count.saturating_sub(1);
            }
        } else {
            self.degraded.remove(id);
        }
    }
}

/// A snapshot for the probes.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub status: &'static str,
    pub migrated: bool,
    pub tree_up: bool,
    pub store_ok: bool,
    pub shutting_down: bool,
    /// Children not running, by id.
    pub degraded: BTreeMap<String, ChildStatus>,
}

impl Health {
    pub fn set_migrated(&self) {
        self.migrated.store(true, Ordering::SeqCst);
    }
    pub fn set_tree_up(&self, up: bool) {
        self.tree_up.store(up, Ordering::SeqCst);
    }
    pub fn set_store_ok(&self, ok: bool) {
        self.store_ok.store(ok, Ordering::SeqCst);
    }
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub fn set_child(&self, id: &str, status: ChildStatus) {
        let mut board = crate::sync::write(&self.children);
        board.forget(id);
        if status.state == ChildState::Running {
            *board.running.entry(status.kind).or_default() += 1;
        } else {
            board.degraded.insert(id.to_owned(), status.clone());
        }
        board.children.insert(id.to_owned(), status);
    }
    pub fn remove_child(&self, id: &str) {
        crate::sync::write(&self.children).forget(id);
    }
    pub fn children(&self) -> BTreeMap<String, ChildStatus> {
        crate::sync::read(&self.children).children.clone()
    }
    /// How many children run, by kind.
    pub fn running(&self) -> BTreeMap<&'static str, usize> {
        crate::sync::read(&self.children).running.iter().map(|(kind, count)| (*kind, *count)).collect()
    }

    /// Ready when the store is migrated and reachable, the tree is up and no shutdown has begun.
    /// Parked or restarting children make the service `degraded`, not unready: the rest of the
    /// team keeps working and should keep receiving traffic.
    pub fn readiness(&self) -> Readiness {
        let migrated = self.migrated.load(Ordering::SeqCst);
        let tree_up = self.tree_up.load(Ordering::SeqCst);
        let store_ok = self.store_ok.load(Ordering::SeqCst);
        let shutting_down = self.shutting_down();
        let degraded = crate::sync::read(&self.children).degraded.clone();
        let ready = migrated && tree_up && store_ok && !shutting_down;
        let status = match (ready, degraded.is_empty()) {
            (false, _) => "unready",
            (true, true) => "ready",
            (true, false) => "degraded",
        };
        Readiness { ready, status, migrated, tree_up, store_ok, shutting_down, degraded }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(kind: &'static str, state: ChildState) -> ChildStatus {
        ChildStatus { kind, state, restarts: 0, recent_backoff_ms: Vec::new(), reason: None }
    }

    #[test]
    fn degraded_children_and_running_counts_follow_every_change() {
        let health = Health::default();
        health.set_child("agent:ada@local", status("agent", ChildState::Restarting));
        health.set_child("agent:bob@local", status("agent", ChildState::Running));
        health.set_child("memory", status("memory", ChildState::Running));
        assert_eq!(health.readiness().degraded.keys().collect::<Vec<_>>(), ["agent:ada@local"]);
        assert_eq!(health.running(), BTreeMap::from([("agent", 1), ("memory", 1)]));

        health.set_child("agent:ada@local", status("agent", ChildState::Running));
        health.set_child("agent:bob@local", status("agent", ChildState::Parked));
        assert_eq!(health.readiness().degraded.keys().collect::<Vec<_>>(), ["agent:bob@local"]);
        assert_eq!(health.running()["agent"], 1);

        health.remove_child("agent:bob@local");
        health.remove_child("memory");
        assert!(health.readiness().degraded.is_empty());
        assert_eq!(health.running(), BTreeMap::from([("agent", 1), ("memory", 0)]));
        assert_eq!(health.children().len(), 1);
    }
}

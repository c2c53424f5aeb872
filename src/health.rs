//! The readiness board: what `/readyz` and `/admin/status` report. Written by the supervision
//! tree and the service lifecycle, read by the admin server.

use std::collections::BTreeMap;
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
    children: RwLock<BTreeMap<String, ChildStatus>>,
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
        self.children.write().expect("health lock").insert(id.to_owned(), status);
    }
    pub fn remove_child(&self, id: &str) {
        self.children.write().expect("health lock").remove(id);
    }
    pub fn children(&self) -> BTreeMap<String, ChildStatus> {
        self.children.read().expect("health lock").clone()
    }

    /// Ready when the store is migrated and reachable, the tree is up and no shutdown has begun.
    /// Parked or restarting children make the service `degraded`, not unready: the rest of the
    /// team keeps working and should keep receiving traffic.
    pub fn readiness(&self) -> Readiness {
        let migrated = self.migrated.load(Ordering::SeqCst);
        let tree_up = self.tree_up.load(Ordering::SeqCst);
        let store_ok = self.store_ok.load(Ordering::SeqCst);
        let shutting_down = self.shutting_down();
        let degraded: BTreeMap<_, _> =
            self.children().into_iter().filter(|(_, child)| child.state != ChildState::Running).collect();
        let ready = migrated && tree_up && store_ok && !shutting_down;
        let status = match (ready, degraded.is_empty()) {
            (false, _) => "unready",
            (true, true) => "ready",
            (true, false) => "degraded",
        };
        Readiness { ready, status, migrated, tree_up, store_ok, shutting_down, degraded }
    }
}

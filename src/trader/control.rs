//! The kill switch, shared by every Trader and the admin API.
//!
//! It is on when either `trading.kill_switch` is set in the configuration or an operator switched
//! it on through the admin route. The operator's switch is stored in the database (flag
//! `kill_switch`) before it takes effect, so it survives restarts; the admin route cannot switch
//! off what the configuration switched on. Traders read it before every step that could move money
//! (asking the model, executing a trade, sending a signed transaction).

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::metrics as m;
use crate::store::{Db, StoreResult};

/// The database flag holding the operator's kill switch (`on` / `off`).
pub const KILL_SWITCH_FLAG: &str = "kill_switch";

pub struct TradingControl {
    db: Db,
    configured: AtomicBool,
    operator: AtomicBool,
}

/// Where the kill switch stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KillSwitchState {
    /// `trading.kill_switch` in the configuration.
    pub configured: bool,
    /// The operator's switch (admin route).
    pub operator: bool,
    /// Who last set the operator's switch, and when (epoch ms).
    pub set_by: Option<String>,
    pub set_at: Option<i64>,
    /// On if either is on: nothing trades.
    pub on: bool,
}

impl TradingControl {
    /// Reads the operator's switch from the database.
    pub async fn load(db: Db, configured: bool) -> StoreResult<TradingControl> {
        let operator = db.flag(KILL_SWITCH_FLAG).await?.is_some_and(|(value, _, _)| value == "on");
        let control =
            TradingControl { db, configured: AtomicBool::new(configured), operator: AtomicBool::new(operator) };
        control.publish();
        Ok(control)
    }

    /// Whether nothing may trade right now.
    pub fn killed(&self) -> bool {
        self.configured.load(Ordering::SeqCst) || self.operator.load(Ordering::SeqCst)
    }

    /// The configured switch changed (a reload).
    pub fn set_configured(&self, on: bool) {
        self.configured.store(on, Ordering::SeqCst);
        self.publish();
    }

    /// Sets the operator's switch: stored first, then in effect. Switching on takes effect for
    /// every Trader's next step at once.
    pub async fn set_operator(&self, on: bool, by: &str) -> StoreResult<KillSwitchState> {
        self.db.set_flag(KILL_SWITCH_FLAG, if on { "on" } else { "off" }, by).await?;
        self.operator.store(on, Ordering::SeqCst);
        self.publish();
        if on {
            tracing::warn!(by, "kill switch on: nothing trades");
        } else {
            tracing::warn!(by, configured = self.configured.load(Ordering::SeqCst), "operator kill switch off");
        }
        self.state().await
    }

    pub async fn state(&self) -> StoreResult<KillSwitchState> {
        let flag = self.db.flag(KILL_SWITCH_FLAG).await?;
        let (configured, operator) = (self.configured.load(Ordering::SeqCst), self.operator.load(Ordering::SeqCst));
        Ok(KillSwitchState {
            configured,
            operator,
            set_by: flag.as_ref().map(|(_, by, _)| by.clone()),
            set_at: flag.map(|(_, _, at)| at),
            on: configured || operator,
        })
    }

    fn publish(&self) {
        metrics::gauge!(m::TRADER_KILL_SWITCH).set(if self.killed() { 1.0 } else { 0.0 });
    }
}

//! The Store actor: the database's place in the supervision tree. The connections are shared (a
//! [`Db`] handle is cheap to clone and safe to use from any task); this actor watches it. Every
//! `store.health_every` it checks the database answers, publishes the result to `/readyz` and the
//! `chorus_store_up` gauge, and every 12th check asks for the SQLite WAL to be folded back into
//! the database file (see `checkpoint`: at low load the log rarely reaches the length that
//! asks). Three failed checks in a row return `Err`, so the supervisor's backoff and circuit
//! apply to a database outage the same way as to any other child.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::Db;
use crate::health::Health;
use crate::metrics as m;
use crate::task::AbortOnDrop;

const FAILURES_BEFORE_RESTART: u32 = 3;
/// WAL checkpoints happen every this many health checks.
const CHECKPOINT_EVERY: u32 = 12;

pub struct Store;

pub struct StoreArgs {
    pub db: Db,
    pub health: Arc<Health>,
    pub every: Duration,
}

pub struct StoreState {
    args: StoreArgs,
    failures: u32,
    checks: u32,
    _timer: AbortOnDrop,
}

pub enum StoreMsg {
    /// Check the database now.
    HealthCheck,
}

impl Actor for Store {
    type Msg = StoreMsg;
    type State = StoreState;
    type Arguments = StoreArgs;

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, args: StoreArgs) -> Result<StoreState, ActorProcessingErr> {
        args.db.ping().await?;
        args.health.set_store_ok(true);
        metrics::gauge!(m::STORE_UP).set(1.0);
        let timer = myself.send_interval(args.every, || StoreMsg::HealthCheck).into();
        Ok(StoreState { args, failures: 0, checks: 0, _timer: timer })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: StoreMsg,
        state: &mut StoreState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            StoreMsg::HealthCheck => {
                let check = tokio::time::timeout(Duration::from_secs(5), state.args.db.ping()).await;
                match check {
                    Ok(Ok(())) => {
                        state.failures = 0;
                        state.args.health.set_store_ok(true);
                        metrics::gauge!(m::STORE_UP).set(1.0);
                    }
                    Ok(Err(_)) | Err(_) => {
                        state.failures += 1;
                        state.args.health.set_store_ok(false);
                        metrics::gauge!(m::STORE_UP).set(0.0);
                        metrics::counter!(m::STORE_ERRORS, "operation" => "health").increment(1);
                        tracing::warn!(failures = state.failures, "database health check failed");
                        if state.failures >= FAILURES_BEFORE_RESTART {
                            return Err("database unreachable".into());
                        }
                    }
                }
                state.checks = state.checks.wrapping_add(1);
                if state.checks.is_multiple_of(CHECKPOINT_EVERY)
                    && let Err(err) = state.args.db.checkpoint().await
                {
                    tracing::debug!(error = %err, "wal checkpoint skipped");
                }
            }
        }
        Ok(())
    }
}

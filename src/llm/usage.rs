//! Writes `llm_usage` rows in batches: request tasks hand rows to a bounded channel and one
//! writer task inserts whatever has queued up within `LINGER` in one multi-row statement, so
//! accounting costs the hot path a channel send, not a database round trip. Budget checks use
//! in-memory counters (`budget.rs`); these rows are what they restart from.

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::metrics as m;
use crate::store::{Db, LlmUsage};

/// Rows waiting to be written before senders have to wait.
const QUEUE: usize = 4096;
/// Rows per statement at most.
const BATCH: usize = 256;
/// How long the first row of a batch waits for others: one insert for the calls of the next
/// moments instead of one a call, off the single writer connection the replies use. A crash
/// loses at most this much accounting (a graceful stop writes everything).
const LINGER: std::time::Duration = std::time::Duration::from_millis(50);

/// The writer task and the way to stop it.
pub struct UsageWriter {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl UsageWriter {
    /// Starts the writer and returns the sender request tasks use.
    pub fn spawn(db: Db) -> (Self, mpsc::Sender<LlmUsage>) {
        let (tx, mut rx) = mpsc::channel::<LlmUsage>(QUEUE);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                tokio::select! {
                    received = rx.recv_many(&mut batch, BATCH) => {
                        if received == 0 {
                            return;
                        }
                        if batch.len() < BATCH {
                            tokio::time::sleep(LINGER).await;
                            while batch.len() < BATCH && let Ok(row) = rx.try_recv() {
                                batch.push(row);
                            }
                        }
                        write(&db, &mut batch).await;
                    }
                    _ = &mut stopped => break,
                }
            }
            // Stopping: refuse new rows, write what is queued.
            rx.close();
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                write(&db, &mut batch).await;
            }
        });
        (Self { stop: Some(stop), task: Some(task) }, tx)
    }

    /// Writes what is queued and stops, waiting at most two seconds.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
        }
    }
}

async fn write(db: &Db, batch: &mut Vec<LlmUsage>) {
    if let Err(err) = db.record_llm_usage_batch(batch).await {
        metrics::counter!(m::STORE_ERRORS, "operation" => "llm_usage").increment(1);
        tracing::warn!(error = %err, rows = batch.len(), "cannot record llm usage");
    }
    batch.clear();
}

//! Tasks owned by actor state. An [`AbortOnDrop`] aborts its task when dropped, so a stopped (or
//! restarted) actor leaves no timer ticking and no worker running behind it, and needs no
//! `post_stop` to clean up. A task aborted mid-way leaves its work in the database, where the
//! next incarnation picks it up (a pending mention, an outbox row with `attempts > 0`).

use tokio::task::{AbortHandle, JoinHandle};

#[derive(Debug)]
pub struct AbortOnDrop(AbortHandle);

impl AbortOnDrop {
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl<T> From<JoinHandle<T>> for AbortOnDrop {
    fn from(handle: JoinHandle<T>) -> Self {
        AbortOnDrop(handle.abort_handle())
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

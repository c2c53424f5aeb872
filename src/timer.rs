//! Timers owned by actor state: a [`Timer`] aborts its task when dropped, so a stopped (or
//! restarted) actor never leaves a ticking timer behind and needs no `post_stop` to clean up.

use tokio::task::{AbortHandle, JoinHandle};

#[derive(Debug)]
pub struct Timer(AbortHandle);

impl Timer {
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl<T> From<JoinHandle<T>> for Timer {
    fn from(handle: JoinHandle<T>) -> Self {
        Timer(handle.abort_handle())
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

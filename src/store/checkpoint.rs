//! SQLite's write-ahead log folded back into the database file on a thread of its own.
//!
//! SQLite checkpoints on the connection that commits, inside the commit, once the log holds
//! `wal_autocheckpoint` frames (1,000 by default): it copies the log's pages into the database
//! file and syncs both. The native writer commits on the runtime's thread (see `native`), and a
//! reply writes about 40 frames, so every 25 replies or so one reply's commit did that too,
//! holding the writer's permit while every queued write waited: it was most of the p99 (in
//! 10 s runs at 250 mentions/s, 6.6–7.3 ms with it, 1.0–1.1 ms with the checkpoints here). So
//! the native writer only reports the log's length after each commit
//! ([`Checkpointer::hand_over`]), and each time the log has grown by [`ASK_FRAMES`] frames it
//! wakes the checkpointer, a thread with a connection of its own that runs a `PASSIVE`
//! checkpoint: one that never waits for the writer or the readers, and that the writer never
//! waits for. Each syncs the log and copies it into the file, so commits are made durable as
//! often as before (`synchronous = NORMAL`).
//!
//! The log starts again from its beginning at the first write after a checkpoint that copied
//! all of it. Under steady load a commit nearly always lands while the thread's checkpoint runs,
//! so the log keeps growing until a commit takes it past [`INLINE_FRAMES`] and checkpoints
//! itself, as SQLite would: in the thousand frames before, every commit asks, so by then the
//! thread has copied all but the last few milliseconds' frames and that checkpoint is short;
//! the next write starts the log again ([`Checkpointer::on_log`]). The log's file
//! therefore reaches about 40 MiB under sustained load (37–42 MB in 10 s runs at 250 and
//! 1,000/s), where SQLite's default kept it near 4 MiB; SQLite reuses the file rather than
//! shrinking it. The same length bounds the log should the thread be gone or behind. The sqlx
//! writer, which rarely writes, keeps SQLite's automatic checkpoints at that length.

use std::ffi::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::ffi;

use crate::metrics as m;

/// The frames (pages) the log grows by between two asks for a checkpoint: SQLite's own default
/// for `wal_autocheckpoint`, so the log is synced as often as before.
pub(super) const ASK_FRAMES: c_int = 1_000;

/// The log's length past which the committing connection checkpoints itself (40 MiB of pages):
/// where the log starts again under steady load, and its bound should the thread be gone.
pub(super) const INLINE_FRAMES: c_int = 10_000;

/// The sqlx writer's `wal_autocheckpoint`: [`INLINE_FRAMES`].
pub(super) fn sqlx_writer_autocheckpoint() -> String {
    format!("PRAGMA wal_autocheckpoint = {INLINE_FRAMES}")
}

/// The least time between two checkpoints: asks that come sooner wait for it.
const PAUSE: Duration = Duration::from_millis(10);

/// The least time between two starts of the thread: one that could not open the database ended,
/// and an ask after this long starts it again (asks come as often as every commit).
const RESTART_AFTER: Duration = Duration::from_secs(60);

/// The checkpoints of one SQLite file: the thread, started at the first ask, and what wakes it.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    path: PathBuf,
    signals: Arc<Signals>,
    /// The thread, and when it was started.
    thread: Mutex<Option<(JoinHandle<()>, Instant)>>,
}

/// What the thread shares with the checkpointer (not the checkpointer itself: its drop is what
/// stops the thread).
#[derive(Debug, Default)]
struct Signals {
    /// Set by an ask ([`Checkpointer::ask`]: a commit's, or the Store actor's), cleared by the
    /// thread as it starts a checkpoint.
    asked: AtomicBool,
    /// Whether the checkpointer is closed; the thread waits on `wake` under this lock.
    closed: Mutex<bool>,
    wake: Condvar,
    /// Checkpoints the thread has run.
    runs: AtomicU64,
    /// The log's length after the last commit, and at the last commit that asked (0 once the
    /// log started again), for [`Checkpointer::on_log`].
    log: AtomicI32,
    asked_at: AtomicI32,
}

impl Checkpointer {
    /// The checkpointer of the SQLite file at `path`. No thread runs until a commit asks.
    pub(super) fn new(path: PathBuf) -> Arc<Self> {
        Arc::new(Checkpointer { path, signals: Arc::default(), thread: Mutex::new(None) })
    }

    /// Makes `conn`'s commits report the log's length to this checkpointer instead of
    /// checkpointing at SQLite's `wal_autocheckpoint`. The caller keeps `self` alive as long as
    /// `conn` (a held connection keeps the `Arc` beside its native connection).
    pub(super) fn hand_over(self: &Arc<Self>, conn: &rusqlite::Connection) {
        // SAFETY: `conn`'s handle is open for as long as `conn`; the hook's data is this
        // checkpointer, which the caller keeps alive at least as long as `conn` (see above), and
        // `on_commit` only reads it through a shared reference. The hook replaces SQLite's
        // automatic checkpoints on this connection alone.
        unsafe {
            ffi::sqlite3_wal_hook(conn.handle(), Some(on_commit), Arc::as_ptr(self).cast_mut().cast::<c_void>());
        }
    }

    /// A commit left the log `frames` long: asks for a checkpoint once the log has grown by
    /// [`ASK_FRAMES`] since the last commit that asked, or since it started again. Under steady
    /// load the log does not start again (see the module's doc), so asking at every commit past
    /// the threshold, as before, had the thread checkpoint, and sync the log, after nearly every
    /// commit; this asks once every thousand frames, SQLite's own cadence. In the last
    /// thousand frames before [`INLINE_FRAMES`] every commit asks again (the thread still runs
    /// at most one a [`PAUSE`]), so that the commit that checkpoints itself there finds all but
    /// the last few milliseconds' frames copied: with a thousand frames left to copy and sync,
    /// it took the p99.9 at 250 mentions/s from 1.5–2.3 to 6.9–7.4 ms. Called by the one writing
    /// connection's commits, one at a time. Never panics: it runs inside SQLite's commit.
    fn on_log(&self, frames: c_int) {
        let signals = &self.signals;
        if frames < signals.log.swap(frames, Ordering::Relaxed) {
            // Shorter than after the last commit: the log started again.
            signals.asked_at.store(0, Ordering::Relaxed);
        }
        if frames - signals.asked_at.load(Ordering::Relaxed) >= ASK_FRAMES || frames >= INLINE_FRAMES - ASK_FRAMES {
            signals.asked_at.store(frames, Ordering::Relaxed);
            self.ask();
        }
    }

    /// Wakes the thread (starting it the first time) unless it is asked already. A thread that
    /// ended while the checkpointer is open could not open the database (or panicked), and left
    /// the ask unanswered: it is started again, to answer it, by an ask once [`RESTART_AFTER`] has
    /// passed since its start; so is a thread that could not be spawned, at the next ask. Never
    /// panics: it runs inside SQLite's commit.
    pub(super) fn ask(&self) {
        let already = self.signals.asked.swap(true, Ordering::AcqRel);
        let closed = self.signals.lock_closed();
        if *closed {
            return;
        }
        let mut thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((handle, started)) = thread.take() {
            if handle.is_finished() && started.elapsed() >= RESTART_AFTER {
                if handle.join().is_err() {
                    tracing::warn!("the checkpoint thread panicked; starting it again");
                }
            } else {
                *thread = Some((handle, started));
            }
        }
        if thread.is_none() {
            let (signals, path) = (self.signals.clone(), self.path.clone());
            match std::thread::Builder::new().name("chorus-wal".into()).spawn(move || signals.run(&path)) {
                Ok(handle) => *thread = Some((handle, Instant::now())),
                Err(err) => {
                    metrics::counter!(m::STORE_ERRORS, "operation" => "checkpoint").increment(1);
                    tracing::warn!(error = %err, "the checkpoint thread did not start; commits checkpoint past {INLINE_FRAMES} frames");
                }
            }
        }
        if !already {
            self.signals.wake.notify_one();
        }
    }

    /// Checkpoints the thread has run.
    #[cfg(test)]
    pub(super) fn runs(&self) -> u64 {
        self.signals.runs.load(Ordering::Acquire)
    }

    /// Whether the thread is started and not joined.
    #[cfg(test)]
    pub(super) fn running(&self) -> bool {
        self.thread.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// Stops the thread after the checkpoint it runs, if any, and waits for it.
    pub(super) fn close(&self) {
        self.signals.close();
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some((thread, _)) = thread
            && thread.join().is_err()
        {
            tracing::warn!("the checkpoint thread panicked");
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // A database dropped without `close`: the thread ends after its checkpoint, if any.
        self.signals.close();
    }
}

impl Signals {
    fn lock_closed(&self) -> MutexGuard<'_, bool> {
        self.closed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        *self.lock_closed() = true;
        self.wake.notify_one();
    }

    /// The thread: opens its connection, then runs a checkpoint each time it is asked, at most
    /// one a [`PAUSE`] (an ask that comes sooner waits for the rest of it), until closed.
    fn run(&self, path: &Path) {
        let conn = match super::native::open_for_checkpoints(path) {
            Ok(conn) => conn,
            Err(err) => {
                metrics::counter!(m::STORE_ERRORS, "operation" => "checkpoint").increment(1);
                tracing::warn!(error = %err, "the checkpoint thread could not open the database; commits checkpoint past {INLINE_FRAMES} frames until it starts again (at an ask a minute later or more)");
                return;
            }
        };
        loop {
            let closed = self
                .wake
                .wait_while(self.lock_closed(), |closed| !*closed && !self.asked.load(Ordering::Acquire))
                .unwrap_or_else(PoisonError::into_inner);
            if *closed {
                return;
            }
            drop(closed);
            self.asked.store(false, Ordering::Release);
            let started = Instant::now();
            let ran = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            });
            self.runs.fetch_add(1, Ordering::Release);
            match ran {
                Ok((log, copied)) => {
                    metrics::counter!(m::STORE_WAL_CHECKPOINTS, "by" => "thread").increment(1);
                    let elapsed_us = started.elapsed().as_micros() as u64;
                    tracing::debug!(target: super::native::LOG_TARGET, log, copied, elapsed_us, "wal checkpoint");
                }
                Err(err) => {
                    metrics::counter!(m::STORE_ERRORS, "operation" => "checkpoint").increment(1);
                    tracing::warn!(error = %err, "wal checkpoint failed");
                }
            }
            // Asks meanwhile wait for the rest of the pause; only a close ends it.
            let (closed, _) = self
                .wake
                .wait_timeout_while(self.lock_closed(), PAUSE.saturating_sub(started.elapsed()), |closed| !*closed)
                .unwrap_or_else(PoisonError::into_inner);
            if *closed {
                return;
            }
        }
    }
}

/// SQLite's write-ahead-log hook on the native writer, called after each commit with the log's
/// length in frames.
unsafe extern "C" fn on_commit(data: *mut c_void, db: *mut ffi::sqlite3, name: *const c_char, frames: c_int) -> c_int {
    if frames >= INLINE_FRAMES {
        // SAFETY: SQLite passes its own open handle and the database's name; checkpointing from
        // the hook is what SQLite's default hook does.
        match unsafe { ffi::sqlite3_wal_checkpoint(db, name) } {
            ffi::SQLITE_OK => metrics::counter!(m::STORE_WAL_CHECKPOINTS, "by" => "commit").increment(1),
            // The thread holds the checkpoint's lock: it is copying the log already.
            ffi::SQLITE_BUSY => {}
            _ => metrics::counter!(m::STORE_ERRORS, "operation" => "checkpoint").increment(1),
        }
    } else {
        // SAFETY: `data` is the checkpointer `hand_over` registered, alive as long as the
        // connection.
        unsafe { &*data.cast_const().cast::<Checkpointer>() }.on_log(frames);
    }
    ffi::SQLITE_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAL-mode file with a table `t (n)`, a checkpointer, and a writing connection whose
    /// commits report to it (last, so that it drops first).
    fn writer() -> (tempfile::TempDir, Arc<Checkpointer>, rusqlite::Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        // The table is checkpointed into the file, so that the file alone shows what later
        // checkpoints copy ([`rows_in_file`]).
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; CREATE TABLE t (n INTEGER); \
             PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .unwrap();
        let checkpointer = Checkpointer::new(path);
        checkpointer.hand_over(&conn);
        (dir, checkpointer, conn)
    }

    /// `commits` one-row commits, each at least one frame of the log.
    fn commit(conn: &rusqlite::Connection, commits: usize) {
        for n in 0..commits {
            conn.execute("INSERT INTO t (n) VALUES (?1)", [n as i64]).unwrap();
        }
    }

    /// The log's length in frames, as a passive checkpoint of another connection finds it (it
    /// then copies what it can, as any checkpoint).
    fn log_frames(dir: &tempfile::TempDir) -> i64 {
        let other = rusqlite::Connection::open(dir.path().join("x.db")).unwrap();
        other.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1)).unwrap()
    }

    /// The rows of `t` in the database file itself, its log ignored: those a checkpoint copied.
    /// An error while a checkpoint writes into the file (the read takes no lock).
    fn try_rows_in_file(dir: &tempfile::TempDir) -> rusqlite::Result<i64> {
        let uri = format!("file:{}?immutable=1", dir.path().join("x.db").display());
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        let file = rusqlite::Connection::open_with_flags(uri, flags)?;
        file.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
    }

    /// [`try_rows_in_file`] where nothing writes into the file.
    fn rows_in_file(dir: &tempfile::TempDir) -> i64 {
        try_rows_in_file(dir).unwrap()
    }

    #[test]
    fn commits_past_the_threshold_leave_the_checkpoint_to_the_thread() {
        let (dir, checkpointer, conn) = writer();
        let rows = ASK_FRAMES as usize + 200;
        commit(&conn, rows);
        // The commit that took the log past the threshold asked; then an ask (the Store actor's,
        // once a minute) has the thread copy the whole log, however short.
        let deadline = Instant::now() + Duration::from_secs(10);
        while checkpointer.runs() == 0 {
            assert!(Instant::now() < deadline, "no checkpoint ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        checkpointer.ask();
        while try_rows_in_file(&dir).ok() != Some(rows as i64) {
            assert!(Instant::now() < deadline, "{:?} of {rows} rows in the file", try_rows_in_file(&dir));
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(checkpointer.running());
        checkpointer.close();
        assert!(!checkpointer.running());
    }

    /// Whether a commit that left the log `frames` long asked for a checkpoint (the checkpointer
    /// is closed: asking only sets the flag).
    fn asks(checkpointer: &Checkpointer, frames: c_int) -> bool {
        checkpointer.on_log(frames);
        checkpointer.signals.asked.swap(false, Ordering::AcqRel)
    }

    #[test]
    fn commits_ask_once_every_thousand_frames_of_log() {
        let checkpointer = Checkpointer::new(PathBuf::from("unused.db"));
        checkpointer.close();
        assert!(!asks(&checkpointer, 500));
        assert!(!asks(&checkpointer, ASK_FRAMES - 1));
        assert!(asks(&checkpointer, ASK_FRAMES + 20));
        // The log goes on growing (under steady load a checkpoint leaves its newest frames, so the
        // log does not start again): not again before it grew by a thousand frames since the ask.
        // Before, every commit past the threshold asked.
        assert!(!asks(&checkpointer, ASK_FRAMES + 40));
        assert!(!asks(&checkpointer, 2 * ASK_FRAMES + 19));
        assert!(asks(&checkpointer, 2 * ASK_FRAMES + 20));
        assert!(!asks(&checkpointer, 2 * ASK_FRAMES + 900));
        // Near the length where a commit checkpoints itself, every commit asks.
        assert!(asks(&checkpointer, INLINE_FRAMES - ASK_FRAMES));
        assert!(asks(&checkpointer, INLINE_FRAMES - ASK_FRAMES + 1));
        assert!(asks(&checkpointer, INLINE_FRAMES - 1));
        // The log started again (shorter than after the last commit): a thousand frames from there.
        assert!(!asks(&checkpointer, 3));
        assert!(!asks(&checkpointer, ASK_FRAMES - 1));
        assert!(asks(&checkpointer, ASK_FRAMES));
        assert!(!checkpointer.running(), "a closed checkpointer started its thread");
    }

    /// A thread that could not open the database ends; an ask after [`RESTART_AFTER`] starts it
    /// again, one before does not.
    #[test]
    fn a_thread_that_could_not_open_the_database_is_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let checkpointer = Checkpointer::new(path.clone());
        // No file yet: the thread cannot open it, and ends.
        checkpointer.ask();
        let deadline = Instant::now() + Duration::from_secs(10);
        let finished = |checkpointer: &Checkpointer| {
            let thread = checkpointer.thread.lock().unwrap();
            thread.as_ref().is_some_and(|(handle, _)| handle.is_finished())
        };
        while !finished(&checkpointer) {
            assert!(Instant::now() < deadline, "the thread did not end");
            std::thread::sleep(Duration::from_millis(5));
        }
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER);").unwrap();
        // Too soon: the ended thread stays, nothing checkpoints.
        checkpointer.ask();
        assert!(finished(&checkpointer), "started again before the pause");
        assert_eq!(checkpointer.runs(), 0);
        // As if it had been started a minute ago.
        if let Some((_, started)) = checkpointer.thread.lock().unwrap().as_mut() {
            *started = Instant::now().checked_sub(RESTART_AFTER).expect("the clock has run for a minute");
        }
        checkpointer.ask();
        while checkpointer.runs() == 0 {
            assert!(Instant::now() < deadline, "the thread was not started again");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(checkpointer.running());
        checkpointer.close();
        assert!(!checkpointer.running());
    }

    #[test]
    fn a_commit_checkpoints_itself_only_past_ten_thousand_frames() {
        let (dir, checkpointer, conn) = writer();
        // Closed: asking does nothing, as if the thread had fallen behind or were gone.
        checkpointer.close();
        commit(&conn, ASK_FRAMES as usize + 200);
        // SQLite's own automatic checkpoint would have copied 1,000 frames or so into the file.
        assert_eq!(rows_in_file(&dir), 0);
        let frames = log_frames(&dir);
        assert!(frames > i64::from(ASK_FRAMES), "{frames} frames: a commit checkpointed");
        assert_eq!(checkpointer.runs(), 0);
        // Past it the commit checkpoints, and the log starts again at the next one.
        commit(&conn, INLINE_FRAMES as usize + 500);
        let frames = log_frames(&dir);
        assert!(frames < i64::from(INLINE_FRAMES), "{frames} frames: no commit checkpointed");
        assert!(!checkpointer.running(), "a closed checkpointer started its thread");
    }
}

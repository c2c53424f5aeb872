//! The native writer's VFS: SQLite's own (`unix`), except that each frame of the write-ahead log
//! reaches the file in one `pwrite` instead of two.
//!
//! SQLite appends a frame as its 24-byte header and then its page, two calls at adjacent offsets
//! with nothing in between (`walWriteOneFrame`). Each is a system call into the file system's
//! write path, whose fixed cost is most of a frame's on this kind of machine (measured
//! standalone: 3.2–3.4 µs a frame as SQLite writes them, 2.0–2.2 µs in one call), and a reply
//! writes dozens of frames. Here a header's write is held back and made with the write that
//! follows it when that one starts where the header ends (the frame's page), as one call of
//! both; any other call on the file makes a held header's write first, alone, before anything
//! else.
//!
//! SQLite writes a header alone in one other place: a commit that wrote over frames of its own
//! transaction rewrites the checksums of its frames (`walRewriteChecksums`), reading each frame
//! and then writing its header, and the last of those writes is the commit's last call on the
//! log. Such a header would stay held past the commit, so a header written where the file was
//! last read from is never held. Every commit's frames are therefore in the file when SQLite
//! publishes them in the log's index, as before, and in the order SQLite wrote them; an error of
//! a joined write is the page's write's error to SQLite, which fails the commit as before; a
//! crash between a frame's two writes leaves it incomplete either way, and recovery ignores it.
//! The test that recovers a log written through this VFS covers both kinds of commit.
//!
//! Other files (the database, its shared memory) are the `unix` VFS's own, untouched: this VFS
//! opens them with its methods and no wrapper.

use std::ffi::{CStr, c_int, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};

use rusqlite::ffi;

/// The name this VFS is registered under (see [`name`]).
const NAME: &CStr = c"chorus-joined-frames";

/// The length of a write-ahead-log frame's header (SQLite's `WAL_FRAME_HDRSIZE`).
const FRAME_HEADER: usize = 24;

/// The VFS this one wraps: SQLite's default when it was registered.
static BASE: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(std::ptr::null_mut());

/// Registers this VFS (once a process) and gives its name, for
/// [`rusqlite::Connection::open_with_flags_and_vfs`]; `Err` with SQLite's code if it could not.
pub(super) fn name() -> Result<&'static CStr, c_int> {
    static REGISTERED: OnceLock<c_int> = OnceLock::new();
    // SAFETY: `sqlite3_vfs_find` initialises SQLite and returns its default VFS, which SQLite
    // never frees; the registered copy is leaked, so it lives as long as the process, as a
    // registered VFS must.
    let rc = *REGISTERED.get_or_init(|| unsafe {
        let base = ffi::sqlite3_vfs_find(std::ptr::null());
        if base.is_null() {
            return ffi::SQLITE_ERROR;
        }
        BASE.store(base, Ordering::Release);
        let mut vfs = *base;
        // A log's file is this wrapper followed by the base VFS's file; any other file is the
        // base VFS's alone, at the start of the same allocation.
        vfs.szOsFile = (REAL_OFFSET + (*base).szOsFile as usize) as c_int;
        vfs.pNext = std::ptr::null_mut();
        vfs.zName = NAME.as_ptr();
        vfs.xOpen = Some(open);
        // The other methods are the base VFS's, called with this VFS instead of theirs: those
        // of `unix` (SQLite's default here) ignore the VFS they are given; its `xOpen`, which
        // reads the VFS's `pAppData`, is called by `open` with its own.
        ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 0)
    });
    if rc == ffi::SQLITE_OK { Ok(NAME) } else { Err(rc) }
}

/// A log frame's header held back until the next call on its file: written with its page as
/// one call, or alone first.
#[derive(Debug, Default)]
struct Joiner {
    /// The header held and where it goes, if one is.
    held: Option<([u8; FRAME_HEADER], i64)>,
    /// Where the file was last read from: a header written there is a rewritten checksum.
    last_read: Option<i64>,
    /// The joined header and page, kept between frames.
    joined: Vec<u8>,
}

impl Joiner {
    /// Notes a read of the file at `offset`.
    fn read_at(&mut self, offset: i64) {
        self.last_read = Some(offset);
    }

    /// Writes `data` at `offset` through `write`: holds a frame header back (unless it is
    /// written where the file was last read from), writes a held one with `data` as one call
    /// when `data` follows it, alone first otherwise.
    fn write(&mut self, data: &[u8], offset: i64, mut write: impl FnMut(&[u8], i64) -> c_int) -> c_int {
        if let Some((header, at)) = self.held.take() {
            if at + FRAME_HEADER as i64 == offset {
                self.joined.clear();
                self.joined.extend_from_slice(&header);
                self.joined.extend_from_slice(data);
                return write(&self.joined, at);
            }
            let rc = write(&header, at);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        if let Ok(header) = <[u8; FRAME_HEADER]>::try_from(data)
            && self.last_read != Some(offset)
        {
            self.held = Some((header, offset));
            return ffi::SQLITE_OK;
        }
        write(data, offset)
    }

    /// Writes a held header, alone, through `write`.
    fn flush(&mut self, write: impl FnOnce(&[u8], i64) -> c_int) -> c_int {
        match self.held.take() {
            Some((header, at)) => write(&header, at),
            None => ffi::SQLITE_OK,
        }
    }
}

/// A log's file: SQLite's handle (`base`, which SQLite hands back to the methods) and the base
/// VFS's file it wraps, which lives at [`REAL_OFFSET`] in the same allocation.
#[repr(C)]
struct LogFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    joiner: Joiner,
}

/// Where the wrapped file starts in a log file's allocation.
const REAL_OFFSET: usize = std::mem::size_of::<LogFile>().next_multiple_of(16);

/// The methods of a log's file: each writes a held header first, except a write that joins it,
/// and then calls the base VFS's file.
static LOG_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// Opens a file with the base VFS; a write-ahead log's behind a [`LogFile`].
unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let base = BASE.load(Ordering::Acquire);
    // SAFETY: `BASE` was set before this VFS was registered, so before SQLite could call this;
    // `file` is `szOsFile` bytes, which hold the base VFS's file at its start or at REAL_OFFSET
    // after a `LogFile` (aligned as SQLite aligns its allocations, to 8 bytes).
    unsafe {
        let Some(base_open) = (*base).xOpen else { return ffi::SQLITE_ERROR };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return base_open(base, name, file, flags, out_flags);
        }
        let real = file.cast::<u8>().add(REAL_OFFSET).cast::<ffi::sqlite3_file>();
        let rc = base_open(base, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // SQLite closes a file whose open failed only if its methods are set: the base
            // VFS's, if it set them, are closed here, and this one's stay unset.
            if !(*real).pMethods.is_null()
                && let Some(real_close) = (*(*real).pMethods).xClose
            {
                real_close(real);
            }
            (*file).pMethods = std::ptr::null();
            return rc;
        }
        file.cast::<LogFile>().write(LogFile {
            base: ffi::sqlite3_file { pMethods: &LOG_METHODS },
            real,
            joiner: Joiner::default(),
        });
        ffi::SQLITE_OK
    }
}

/// The log file behind SQLite's handle, and the base VFS's methods of the file it wraps.
///
/// # Safety
/// `file` is a handle [`open`] set up as a [`LogFile`] and not closed yet, used by one thread
/// at a time (as SQLite uses a file).
unsafe fn log_file<'a>(file: *mut ffi::sqlite3_file) -> (&'a mut LogFile, &'a ffi::sqlite3_io_methods) {
    // SAFETY: see the function's contract; the base VFS's methods outlive its open files.
    unsafe {
        let log = &mut *file.cast::<LogFile>();
        let methods = &*(*log.real).pMethods;
        (log, methods)
    }
}

/// The base file's `xWrite` as the [`Joiner`] calls it, if it has one.
///
/// # Safety
/// `real` is the open base file whose methods are `methods`, and stays open while the writer
/// is called.
unsafe fn base_write(
    real: *mut ffi::sqlite3_file,
    methods: &ffi::sqlite3_io_methods,
) -> Option<impl FnMut(&[u8], i64) -> c_int> {
    let real_write = methods.xWrite?;
    // SAFETY: see the function's contract; the bytes live through the call.
    Some(move |data: &[u8], at| unsafe { real_write(real, data.as_ptr().cast(), data.len() as c_int, at) })
}

/// Writes a held header of `log`'s, alone, with the base VFS's `xWrite`.
///
/// # Safety
/// As [`log_file`]'s.
unsafe fn flush(log: &mut LogFile, methods: &ffi::sqlite3_io_methods) -> c_int {
    // SAFETY: `log.real` is open while `log` is.
    let Some(write) = (unsafe { base_write(log.real, methods) }) else { return ffi::SQLITE_IOERR_WRITE };
    log.joiner.flush(write)
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a file it opened once, and uses it no more; the `LogFile` written
    // at `open` is dropped in place here, after the base file is closed.
    unsafe {
        let (log, methods) = log_file(file);
        let flushed = flush(log, methods);
        let closed = methods.xClose.map_or(ffi::SQLITE_OK, |real_close| real_close(log.real));
        std::ptr::drop_in_place(file.cast::<LogFile>());
        if flushed != ffi::SQLITE_OK { flushed } else { closed }
    }
}

unsafe extern "C" fn write(file: *mut ffi::sqlite3_file, data: *const c_void, amount: c_int, offset: i64) -> c_int {
    // SAFETY: SQLite passes `amount` readable bytes at `data`; see `log_file`.
    unsafe {
        let (log, methods) = log_file(file);
        let Some(write) = base_write(log.real, methods) else { return ffi::SQLITE_IOERR_WRITE };
        let data = std::slice::from_raw_parts(data.cast::<u8>(), amount as usize);
        log.joiner.write(data, offset, write)
    }
}

/// Defines a method that writes a held header, then calls the base file's method of the same
/// name with the same arguments (or returns `$missing` if it has none).
macro_rules! flushed_then {
    ($name:ident, $method:ident, $missing:expr, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: see `log_file`; the arguments are SQLite's, passed on unchanged.
            unsafe {
                let (log, methods) = log_file(file);
                let flushed = flush(log, methods);
                if flushed != ffi::SQLITE_OK {
                    return flushed;
                }
                match methods.$method {
                    Some(method) => method(log.real $(, $arg)*),
                    None => $missing,
                }
            }
        }
    };
}

unsafe extern "C" fn read(file: *mut ffi::sqlite3_file, data: *mut c_void, amount: c_int, offset: i64) -> c_int {
    // SAFETY: see `log_file`; the arguments are SQLite's, passed on unchanged.
    unsafe {
        let (log, methods) = log_file(file);
        let flushed = flush(log, methods);
        if flushed != ffi::SQLITE_OK {
            return flushed;
        }
        log.joiner.read_at(offset);
        methods.xRead.map_or(ffi::SQLITE_IOERR_READ, |method| method(log.real, data, amount, offset))
    }
}

flushed_then!(truncate, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, (size: i64));
flushed_then!(sync, xSync, ffi::SQLITE_IOERR_FSYNC, (flags: c_int));
flushed_then!(file_size, xFileSize, ffi::SQLITE_IOERR_FSTAT, (size: *mut i64));
flushed_then!(lock, xLock, ffi::SQLITE_IOERR_LOCK, (level: c_int));
flushed_then!(unlock, xUnlock, ffi::SQLITE_IOERR_UNLOCK, (level: c_int));
flushed_then!(check_reserved_lock, xCheckReservedLock, ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, (out: *mut c_int));
flushed_then!(file_control, xFileControl, ffi::SQLITE_NOTFOUND, (op: c_int, arg: *mut c_void));
flushed_then!(shm_map, xShmMap, ffi::SQLITE_IOERR_SHMMAP, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void));
flushed_then!(shm_lock, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, (offset: c_int, n: c_int, flags: c_int));
flushed_then!(shm_unmap, xShmUnmap, ffi::SQLITE_OK, (delete: c_int));
flushed_then!(fetch, xFetch, { *out = std::ptr::null_mut(); ffi::SQLITE_OK }, (offset: i64, amount: c_int, out: *mut *mut c_void));
flushed_then!(unfetch, xUnfetch, ffi::SQLITE_OK, (offset: i64, page: *mut c_void));

// The three that cannot report an error write nothing first (a log is never a memory map's or
// a lock's: SQLite calls these on the database's file).
unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: see `log_file`.
    unsafe {
        let (log, methods) = log_file(file);
        methods.xSectorSize.map_or(4096, |method| method(log.real))
    }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: see `log_file`.
    unsafe {
        let (log, methods) = log_file(file);
        methods.xDeviceCharacteristics.map_or(0, |method| method(log.real))
    }
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: see `log_file`.
    unsafe {
        let (log, methods) = log_file(file);
        if let Some(method) = methods.xShmBarrier {
            method(log.real);
        }
    }
}

/// Whether `conn`'s write-ahead log is open through this VFS (it opens at the first statement).
#[cfg(test)]
pub(super) fn joins_log_frames(conn: &rusqlite::Connection) -> bool {
    let mut log: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: `conn`'s handle is open; the control writes the log's handle (or null) to `log`.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_JOURNAL_POINTER,
            (&raw mut log).cast(),
        )
    };
    // SAFETY: a non-null handle is the open log's.
    rc == ffi::SQLITE_OK && !log.is_null() && std::ptr::eq(unsafe { (*log).pMethods }, &LOG_METHODS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A joiner's writes through a recorder: (offset, bytes) of each call it made.
    fn writes(steps: &[(&[u8], i64)], failing: Option<usize>) -> (Vec<(i64, Vec<u8>)>, Vec<c_int>) {
        let mut joiner = Joiner::default();
        let mut made = Vec::new();
        let mut codes = Vec::new();
        let mut record = |data: &[u8], at: i64| {
            made.push((at, data.to_vec()));
            if failing == Some(made.len()) { ffi::SQLITE_IOERR_WRITE } else { ffi::SQLITE_OK }
        };
        for (data, at) in steps {
            codes.push(joiner.write(data, *at, &mut record));
        }
        codes.push(joiner.flush(&mut record));
        (made, codes)
    }

    #[test]
    fn a_frames_header_and_page_are_one_write() {
        let header = [1u8; FRAME_HEADER];
        let page = [2u8; 4096];
        let next_header = [3u8; FRAME_HEADER];
        let (made, codes) = writes(&[(&header, 32), (&page, 56), (&next_header, 4152), (&page, 4176)], None);
        assert_eq!(codes, vec![ffi::SQLITE_OK; 5]);
        assert_eq!(made.len(), 2, "two frames, two writes");
        assert_eq!(made[0].0, 32);
        assert_eq!(made[0].1, [&header[..], &page[..]].concat());
        assert_eq!(made[1].0, 4152);
        assert_eq!(made[1].1, [&next_header[..], &page[..]].concat());
    }

    #[test]
    fn a_header_not_followed_by_its_page_is_written_alone_first() {
        let header = [1u8; FRAME_HEADER];
        let elsewhere = [9u8; 100];
        let (made, _) = writes(&[(&header, 32), (&elsewhere, 0)], None);
        assert_eq!(made, vec![(32, header.to_vec()), (0, elsewhere.to_vec())]);
        // Held to the end: the flush writes it.
        let (made, codes) = writes(&[(&header, 32)], None);
        assert_eq!(made, vec![(32, header.to_vec())]);
        assert_eq!(codes, vec![ffi::SQLITE_OK, ffi::SQLITE_OK]);
    }

    #[test]
    fn a_header_written_where_the_file_was_last_read_is_not_held() {
        let header = [1u8; FRAME_HEADER];
        let mut joiner = Joiner::default();
        let mut made = Vec::new();
        joiner.read_at(4152);
        let rc = joiner.write(&header, 4152, |data, at| {
            made.push((at, data.to_vec()));
            ffi::SQLITE_OK
        });
        assert_eq!(rc, ffi::SQLITE_OK);
        assert_eq!(made, vec![(4152, header.to_vec())], "written at once, nothing held");
        assert!(joiner.held.is_none());
    }

    #[test]
    fn other_writes_pass_through_at_once() {
        let wal_header = [7u8; 32];
        let page = [2u8; 4096];
        let (made, _) = writes(&[(&wal_header, 0), (&page, 56)], None);
        assert_eq!(made, vec![(0, wal_header.to_vec()), (56, page.to_vec())]);
    }

    #[test]
    fn a_failed_write_of_a_held_header_is_reported_and_stops_the_next() {
        let header = [1u8; FRAME_HEADER];
        let elsewhere = [9u8; 100];
        let (made, codes) = writes(&[(&header, 32), (&elsewhere, 0)], Some(1));
        assert_eq!(made, vec![(32, header.to_vec())], "the write after the failed one is not made");
        assert_eq!(codes[1], ffi::SQLITE_IOERR_WRITE);
        // A joined write's failure is the page's write's.
        let (_, codes) = writes(&[(&header, 32), (&[2u8; 4096], 56)], Some(1));
        assert_eq!(codes[..2], [ffi::SQLITE_OK, ffi::SQLITE_IOERR_WRITE]);
    }

    fn rows(conn: &rusqlite::Connection) -> i64 {
        conn.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0)).unwrap()
    }

    /// A connection to a copy of `dir`'s database and log as a crash would leave them now (the
    /// writer still open, nothing checkpointed), which recovers the log.
    fn crashed(dir: &std::path::Path) -> (tempfile::TempDir, rusqlite::Connection) {
        let copy = tempfile::tempdir().unwrap();
        for file in ["a.db", "a.db-wal"] {
            std::fs::copy(dir.join(file), copy.path().join(file)).unwrap();
        }
        assert!(std::fs::metadata(copy.path().join("a.db-wal")).unwrap().len() > 0);
        let conn = rusqlite::Connection::open(copy.path().join("a.db")).unwrap();
        (copy, conn)
    }

    #[test]
    fn a_log_written_through_the_vfs_recovers_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_CREATE;
        let conn = rusqlite::Connection::open_with_flags_and_vfs(&path, flags, name().unwrap()).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL); CREATE INDEX t_body ON t (body);",
        )
        .unwrap();
        assert!(joins_log_frames(&conn), "the log is opened through the VFS");
        for commit in 0..50 {
            let tx = conn.unchecked_transaction().unwrap();
            for row in 0..20 {
                tx.execute("INSERT INTO t (body) VALUES (?1)", [format!("{commit}-{row}-{}", "x".repeat(200))])
                    .unwrap();
            }
            tx.commit().unwrap();
        }
        assert_eq!(rows(&crashed(dir.path()).1), 1000, "every commit of appended frames is in the log");
        // A transaction larger than the page cache spills frames to the log before its commit,
        // writes over them when it changes their pages again, and rewrites their checksums.
        conn.execute_batch(
            "PRAGMA cache_size = 5; BEGIN; UPDATE t SET body = body || 'a'; UPDATE t SET body = body || 'b'; COMMIT;",
        )
        .unwrap();
        let (_copy, recovered) = crashed(dir.path());
        assert_eq!(rows(&recovered), 1000);
        let check: String = recovered.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap();
        assert_eq!(check, "ok");
        let unchanged: i64 =
            recovered.query_row("SELECT COUNT(*) FROM t WHERE body NOT LIKE '%ab'", [], |row| row.get(0)).unwrap();
        assert_eq!(unchanged, 0, "the last commit is recovered too");
        drop(conn);
    }

    #[test]
    fn the_native_writer_joins_its_frames_and_a_reader_opens_the_log_as_sqlite_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let setup = rusqlite::Connection::open(&path).unwrap();
        setup.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY);").unwrap();
        let writer = super::super::native::open(&path, false).unwrap();
        writer.execute("INSERT INTO t DEFAULT VALUES", []).unwrap();
        assert!(joins_log_frames(&writer));
        let reader = super::super::native::open(&path, true).unwrap();
        assert_eq!(rows(&reader), 1);
        assert!(!joins_log_frames(&reader));
    }
}

//! The only module with `unsafe`: thin wrappers over system calls std does not expose.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `lseek(SEEK_DATA)`: the next offset at or after `offset` that holds data, or `None` when
/// only a hole follows.
pub fn seek_data(file: &File, offset: u64) -> io::Result<Option<u64>> {
    seek(file, offset, libc::SEEK_DATA)
}

/// `lseek(SEEK_HOLE)`: the next hole at or after `offset` (the end of the file counts).
pub fn seek_hole(file: &File, offset: u64) -> io::Result<Option<u64>> {
    seek(file, offset, libc::SEEK_HOLE)
}

fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
    // SAFETY: lseek takes a file descriptor we own for the duration of the call (borrowed from
    // `file`) and plain integers; it touches no memory of ours. It moves the shared file
    // offset, which nothing here relies on: all reads are positional (pread).
    let r = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if r >= 0 {
        return Ok(Some(r as u64));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENXIO) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// `fallocate(PUNCH_HOLE | KEEP_SIZE)`: turns `offset..offset + len` of a file into a hole
/// that reads as zeros. Fails with `EOPNOTSUPP` on filesystems that cannot.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let off = libc::off_t::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::other("length too large"))?;
    // SAFETY: fallocate takes a file descriptor borrowed from `file` for the call and plain
    // integers; it touches no memory of ours.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Starts writing back `len` bytes of `file` from `offset` to the device without waiting, so
/// that a final `fsync` finds little left to flush. Best effort: errors are ignored (the
/// final `fsync` reports any that matter).
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    // SAFETY: sync_file_range only reads its integer arguments.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

/// The logical block size of a block device (`BLKSSZGET`).
pub fn logical_block_size(path: &str) -> io::Result<u32> {
    let file = File::open(path)?;
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points at `size`, alive for
    // the call; the descriptor is borrowed from `file`.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::BLKSSZGET, &mut size) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size as u32)
}

/// Bytes free for an unprivileged user on the filesystem holding `path` (`statvfs`).
pub fn free_space(path: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path holds a NUL byte"))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated string and `st` a statvfs, both alive for the call.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Sends SIGKILL to the process group `pgid` (a child started with `process_group(0)`).
pub fn kill_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    // SAFETY: kill takes plain integers and touches no memory of ours; a negative pid names
    // the process group, which we created for this child alone.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// A read-only, shared memory map of a whole file.
///
/// Reading an image through its mapping skips the kernel's copy into a user buffer (about a
/// tenth of a backup's CPU time on page-cached images). If the file shrinks or the device
/// fails while mapped, touching the lost pages raises SIGBUS, which
/// [`install_signal_handlers`] turns into a one-line error and exit status 1: the backup
/// commits nothing, as with any other read error.
pub struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned; sharing `&[u8]` views of it across threads is
// like sharing any immutable buffer.
unsafe impl Send for Mapping {}
// SAFETY: as above: no interior mutability.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `file` read-only. `None` for an empty file.
    pub fn new(file: &File, len: u64) -> io::Result<Option<Mapping>> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("file too large to map"))?;
        if len == 0 {
            return Ok(None);
        }
        // SAFETY: a fresh shared read-only mapping of a file descriptor we hold open; the
        // kernel picks the address, so no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: advice on the range we just mapped; failure is harmless and ignored.
        unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
        Ok(Some(Mapping { ptr, len }))
    }

    /// Drops the pages of `offset..offset + len` from this process's page tables (the page
    /// cache keeps them), so the resident size stays bounded by what is in flight rather
    /// than growing with the image. `offset` must be page aligned (chunk offsets are).
    pub fn release(&self, offset: usize, len: usize) {
        let end = offset.saturating_add(len).min(self.len);
        if offset >= end {
            return;
        }
        // SAFETY: the range lies inside our mapping, and the caller holds no slice into it
        // any more; MADV_DONTNEED on a shared file mapping only unmaps pages, which are read
        // back from the file if touched again.
        unsafe {
            libc::madvise(
                self.ptr.cast::<u8>().add(offset).cast(),
                end - offset,
                libc::MADV_DONTNEED,
            )
        };
    }

    /// The mapped bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points at `len` readable bytes for as long as `self` lives. The file
        // is a point-in-time image that nothing writes while it is backed up (a concurrent
        // writer would make the chunk's hash disagree with its bytes, which restore detects).
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the range mmap returned; no slice of it outlives `self`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

extern "C" fn on_sigbus(_: libc::c_int) {
    const MSG: &[u8] = b"mover: the source could not be read (an I/O error, or the image shrank while it was backed up); nothing was committed\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe; MSG is a static buffer.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        libc::_exit(1);
    }
}

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    // Only async-signal-safe work here: an atomic add, and _exit on the second signal.
    if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(130) };
    }
}

/// Installs the SIGINT/SIGTERM handler: the first signal asks running work to stop cleanly
/// (see [`interrupted`]); the second exits at once with status 130. Also turns SIGBUS from a
/// [`Mapping`] into an error message and exit status 1.
///
/// Work blocked on input (a FIFO without a writer, a stalled stdin, an NBD server that
/// never answers) cannot notice the first signal: a watchdog gives it [`STOP_GRACE`], then
/// calls `on_stuck` (which says so), removes the files registered with
/// [`remove_on_forced_exit`] and exits with status 130. It never does so while a commit is
/// in progress ([`CommitGuard`]), nor after one finished: that run ends on its own.
pub fn install_signal_handlers(on_stuck: fn()) {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installing a handler that only does async-signal-safe work.
        unsafe { libc::signal(sig, handler) };
    }
    let bus = on_sigbus as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGBUS, bus) };
    let spawned = std::thread::Builder::new()
        .name("signal-watchdog".into())
        .spawn(move || watchdog(on_stuck));
    if let Err(e) = spawned {
        tracing::warn!("cannot start the signal watchdog: {e}");
    }
}

/// How long work has, after the first SIGINT/SIGTERM, to stop on its own.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Commits in progress.
static COMMITTING: AtomicUsize = AtomicUsize::new(0);
/// Set when a commit ends after a signal: the run finishes on its own.
static COMMIT_ENDED_AFTER_SIGNAL: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);
/// Files to remove when the watchdog ends the process.
static CLEANUP: std::sync::Mutex<Vec<(u64, std::path::PathBuf)>> =
    std::sync::Mutex::new(Vec::new());
static CLEANUP_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn watchdog(on_stuck: fn()) {
    let mut since = None;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if !interrupted() {
            continue;
        }
        let first = *since.get_or_insert_with(std::time::Instant::now);
        let committing = COMMITTING.load(Ordering::SeqCst) > 0
            || COMMIT_ENDED_AFTER_SIGNAL.load(Ordering::SeqCst);
        if committing || first.elapsed() < STOP_GRACE {
            continue;
        }
        on_stuck();
        // A lock held by a thread that is stuck forever is not waited on.
        if let Ok(files) = CLEANUP.try_lock() {
            for (_, path) in files.iter() {
                let _ = std::fs::remove_file(path);
            }
        }
        // SAFETY: _exit never returns; nothing of this process is committed (see above).
        unsafe { libc::_exit(130) };
    }
}

/// Held while a snapshot or an archive is committed: the watchdog waits for it.
#[derive(Debug)]
pub struct CommitGuard(());

impl CommitGuard {
    /// Enters a commit; `None` when a signal already asked to stop (commit nothing).
    pub fn enter() -> Option<CommitGuard> {
        COMMITTING.fetch_add(1, Ordering::SeqCst);
        if interrupted() {
            COMMITTING.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(CommitGuard(()))
    }
}

impl Drop for CommitGuard {
    fn drop(&mut self) {
        if interrupted() {
            COMMIT_ENDED_AFTER_SIGNAL.store(true, Ordering::SeqCst);
        }
        COMMITTING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A file this run created and must not leave behind if the watchdog ends the process;
/// dropping the guard takes it off the list (the file stays).
#[derive(Debug)]
pub struct CleanupGuard(u64);

/// Registers `path` for removal when the watchdog ends the process.
pub fn remove_on_forced_exit(path: impl Into<std::path::PathBuf>) -> CleanupGuard {
    let id = CLEANUP_IDS.fetch_add(1, Ordering::SeqCst);
    CLEANUP
        .lock()
        .expect("cleanup list")
        .push((id, path.into()));
    CleanupGuard(id)
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if let Ok(mut files) = CLEANUP.lock() {
            files.retain(|(id, _)| *id != self.0);
        }
    }
}

/// Reads what `r` gives, at most `limit` bytes: `Ok(None)` when it gives more (a device or
/// FIFO that never ends, a file larger than it said). Input is never buffered past its
/// limit, whatever size was reported beforehand.
pub fn read_to_limit(r: impl io::Read, limit: u64) -> io::Result<Option<Vec<u8>>> {
    use io::Read;
    let mut out = Vec::new();
    r.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    Ok((out.len() as u64 <= limit).then_some(out))
}

/// [`read_to_limit`] on a file by its path (`-`: stdin).
pub fn read_file_to_limit(path: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
    match path {
        "-" => read_to_limit(io::stdin().lock(), limit),
        _ => read_to_limit(File::open(path)?, limit),
    }
}

/// True once SIGINT or SIGTERM was received.
pub fn interrupted() -> bool {
    SIGNALS.load(Ordering::Relaxed) > 0
}

/// Reads one line from stdin (a terminal) with echo turned off, for a password prompt; the
/// terminal's settings are restored afterwards, whatever happens.
pub fn read_line_without_echo() -> io::Result<Vec<u8>> {
    use std::io::BufRead;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a descriptor that stays open (stdin)
    // and touches nothing else.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    // SAFETY: as above; the settings passed are a copy of the terminal's own with echo off.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut line = Vec::new();
    let read = io::stdin().lock().read_until(b'\n', &mut line);
    // SAFETY: restores the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    read?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(line)
}

/// Keeps freed chunk-sized buffers in the process for reuse instead of handing them back to
/// the kernel at once. glibc's allocator maps each buffer over its dynamic threshold fresh and
/// unmaps it when freed, so every chunk's output buffer cost page faults, zeroed pages and a
/// TLB shootdown: about a tenth of a backup's system time and several percent of its wall
/// time on two cores. With the thresholds raised, what is kept is at most what the pipeline
/// had in flight, which the memory budget bounds. Does nothing under other C libraries.
pub fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // 32 MiB: glibc's largest mmap threshold (packs, being larger, are still mapped).
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD: libc::c_int = 256 << 20;
        // SAFETY: mallopt only sets allocator parameters; called before any worker thread
        // starts, so no allocation races with the change.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}

/// [`keep_freed_buffers`] for a long-running process that must stay within its memory
/// budget: freed chunk buffers are kept, but in one shared arena, where any thread reuses
/// them, instead of one arena per thread, each keeping its own.
pub fn keep_freed_buffers_shared() {
    keep_freed_buffers();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: as in keep_freed_buffers.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

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

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    // Only async-signal-safe work here: an atomic add, and _exit on the second signal.
    if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(130) };
    }
}

/// Installs the SIGINT/SIGTERM handler: the first signal asks running work to stop cleanly
/// (see [`interrupted`]); the second exits at once with status 130.
pub fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installing a handler that only does async-signal-safe work.
        unsafe { libc::signal(sig, handler) };
    }
}

/// True once SIGINT or SIGTERM was received.
pub fn interrupted() -> bool {
    SIGNALS.load(Ordering::Relaxed) > 0
}

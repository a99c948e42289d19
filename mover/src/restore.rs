//! Restore: manifest -> chunks fetched, decoded and checked in parallel -> destination.
//!
//! Files and block devices are written positionally by the workers themselves, in any order.
//! A new or replaced file is written under a temporary name beside the destination, fsynced
//! and renamed into place, so a failed restore never leaves a half-written image under the
//! destination's name (and a replaced file survives a failed restore). Zero chunks become
//! holes in files and are written as zeros on devices.
//!
//! Streams (stdout, pipes, character devices) need order: workers hand decoded chunks to one
//! writer that reorders them. A window of tokens bounds how far workers run ahead, so memory
//! stays within the budget however slow the reader of the stream is.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::PathBuf;
use std::time::Instant;

use chunker::format::{Disk, Entry};
use chunker::Decoder;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use targets::ChunkStore;

use crate::pipeline::{channel_capacity, memory_slots, FirstError};
use crate::{Error, Progress, Result};

mod delta;
mod request;

pub use delta::{restore_delta, DeltaTarget, FileDelta};
pub use request::{
    create_destination, restore_snapshot, save_attachment, DeltaRequest, RestoreRequest,
};

/// Where a snapshot is restored to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Standard output (ordered stream).
    Stdout,
    /// A path: a new or existing file, a block device, or a character device / FIFO.
    Path(PathBuf),
}

/// Settings of one restore.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Replace an existing regular file.
    pub force: bool,
    /// Worker threads.
    pub threads: usize,
    /// Memory budget in bytes.
    pub memory: u64,
    /// Most plaintext bytes of the chunks one worker fetches together (one ranged read where
    /// they are stored side by side): [`LOCAL_TASK_BYTES`] or [`REMOTE_TASK_BYTES`].
    pub task_bytes: u64,
    /// fsync the destination before reporting success (and before renaming a file into
    /// place). Off only when the caller accepts losing the restore on a power failure.
    pub sync: bool,
}

/// What a restore did.
#[derive(Clone, Debug, Default)]
pub struct RestoreReport {
    /// Bytes of the image (logical size).
    pub bytes_total: u64,
    /// Bytes written (zeros on devices and streams included, holes in files not).
    pub bytes_written: u64,
    /// Chunks fetched and checked.
    pub chunks_fetched: u64,
    /// Bytes of the existing destination read and compared (delta restore).
    pub bytes_compared: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

pub(crate) enum Sink {
    /// Positional writes; `zeros` says whether zero chunks must be written. `direct`, when the
    /// restore syncs and the file system takes it, is a second descriptor on the same file
    /// opened with `O_DIRECT` (see [`DIRECT_ALIGN`]).
    Positional {
        file: File,
        zeros: bool,
        direct: Option<File>,
    },
    /// Ordered writes.
    Stream(File),
}

/// One chunk of the image to restore.
struct Item {
    index: u64,
    offset: u64,
    entry: Entry,
}

/// Consecutive chunks handed to one worker, fetched together: neighbours stored side by side
/// come back in one request (see [`ChunkStore::get_many`]).
type Task = Vec<Item>;

/// Task size for a local repository: reads cost little, small tasks start the stream sooner
/// and hold less memory.
pub const LOCAL_TASK_BYTES: u64 = 8 << 20;
/// Task size for a remote repository: a few large ranged reads cost the server far less
/// than many small ones (Garage reads and checks whole blocks at both ends of each read, and
/// serves 8 MiB reads at about half the rate of whole packs).
pub const REMOTE_TASK_BYTES: u64 = 32 << 20;

/// How large a task may grow: in chunks, and in plaintext bytes.
#[derive(Clone, Copy)]
struct GroupLimit {
    items: usize,
    bytes: u64,
}

impl GroupLimit {
    /// Up to `task_bytes` per task, within half the memory budget shared among the workers,
    /// and at least one chunk.
    fn new(memory: u64, threads: usize, max_chunk: u64, task_bytes: u64) -> Self {
        let bytes = (memory / 2 / threads.max(1) as u64)
            .min(task_bytes)
            .max(max_chunk);
        GroupLimit {
            items: (bytes / max_chunk.max(1)).max(1) as usize,
            bytes,
        }
    }

    /// In a stream the token window must hold every worker's task, or tasks are cut short
    /// whenever the window runs dry.
    fn within_window(self, window: usize, threads: usize) -> Self {
        let items = self.items.min((window / threads.max(1)).max(1));
        GroupLimit {
            items,
            bytes: self.bytes,
        }
    }
}

/// Fetches the frames of a task's data chunks, in order.
fn fetch(store: &dyn ChunkStore, task: &Task) -> Result<std::vec::IntoIter<chunker::Frame>> {
    let ids: Vec<_> = task.iter().filter_map(|i| i.entry.id).collect();
    Ok(store.get_many(&ids)?.into_iter())
}

/// Restores one `disk` of a snapshot to `dest`, checking every chunk against its id before writing it.
pub fn restore(
    store: &dyn ChunkStore,
    disk: &Disk,
    dest: &Destination,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreReport> {
    let start = Instant::now();
    progress.set_total(disk.source_len);
    let mut report = with_destination(
        dest,
        disk.source_len,
        opts.force,
        // A durable restore writes whole blocks past the page cache (see `write_chunk`).
        opts.sync,
        opts.sync,
        |sink, label| run(store, disk, sink, label, opts, progress),
    )?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Opens `dest` for an image of `len` bytes and runs `body` on it. A new or replaced file is
/// written under a temporary name and renamed into place only when `body` succeeds (then the
/// directory is fsynced when `sync`); on failure the temporary file is removed. A file or
/// block device also gets a direct-I/O descriptor when `direct` and the file system takes one.
pub(crate) fn with_destination<T>(
    dest: &Destination,
    len: u64,
    force: bool,
    sync: bool,
    direct: bool,
    body: impl FnOnce(Sink, &str) -> Result<T>,
) -> Result<T> {
    let (sink, label, temp) = open_destination(dest, len, force, direct)?;
    let _cleanup = temp
        .as_ref()
        .map(|(tmp, _)| crate::sys::remove_on_forced_exit(tmp));
    match (body(sink, &label), temp) {
        (Ok(v), Some((tmp, final_path))) => {
            if let Err(e) = std::fs::rename(&tmp, &final_path) {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::destination(&label, e));
            }
            if let Some(dir) = final_path.parent().filter(|_| sync) {
                targets::fsync_dir(dir).map_err(|e| Error::destination(&label, e))?;
            }
            Ok(v)
        }
        (Ok(v), None) => Ok(v),
        (Err(e), temp) => {
            if let Some((tmp, _)) = temp {
                let _ = std::fs::remove_file(tmp);
            }
            Err(e)
        }
    }
}

type Opened = (Sink, String, Option<(PathBuf, PathBuf)>);

fn open_destination(dest: &Destination, len: u64, force: bool, direct: bool) -> Result<Opened> {
    let path = match dest {
        Destination::Stdout => {
            // A plain File on a duplicate of fd 1: no line buffering of binary data.
            let fd = std::io::stdout()
                .lock()
                .as_fd_owned()
                .map_err(|e| Error::destination("standard output", e))?;
            return Ok((Sink::Stream(File::from(fd)), "standard output".into(), None));
        }
        Destination::Path(p) => p,
    };
    let label = path.display().to_string();
    let err = |e| Error::destination(&label, e);
    match std::fs::metadata(path) {
        Ok(meta) if meta.file_type().is_block_device() => {
            let mut file = OpenOptions::new().write(true).open(path).map_err(err)?;
            let have = file.seek(SeekFrom::End(0)).map_err(err)?;
            if have < len {
                return Err(Error::DestinationTooSmall {
                    path: label,
                    have,
                    need: len,
                });
            }
            let direct = direct.then(|| open_direct(path)).flatten();
            Ok((
                Sink::Positional {
                    file,
                    zeros: true,
                    direct,
                },
                label,
                None,
            ))
        }
        Ok(meta) if meta.file_type().is_char_device() || meta.file_type().is_fifo() => {
            let file = OpenOptions::new().write(true).open(path).map_err(err)?;
            Ok((Sink::Stream(file), label, None))
        }
        Ok(meta) if meta.is_dir() => Err(Error::Destination {
            path: label,
            source: std::io::Error::other("is a directory; give a file name"),
        }),
        Ok(_) if !force => Err(Error::DestinationExists { path: label }),
        Ok(_) | Err(_) => {
            let name = path.file_name().ok_or_else(|| Error::Destination {
                path: label.clone(),
                source: std::io::Error::other("not a file name"),
            })?;
            let mut tmp_name = std::ffi::OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(format!(".mover-{}.tmp", std::process::id()));
            let tmp = path.with_file_name(tmp_name);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(err)?;
            // A sparse file of the right size: unwritten zero chunks stay holes.
            if let Err(e) = file.set_len(len) {
                let _ = std::fs::remove_file(&tmp);
                return Err(err(e));
            }
            let direct = direct.then(|| open_direct(&tmp)).flatten();
            Ok((
                Sink::Positional {
                    file,
                    zeros: false,
                    direct,
                },
                label,
                Some((tmp, path.clone())),
            ))
        }
    }
}

/// Alignment of offsets, lengths and memory for direct writes, the same as for packs. Chunks
/// are at least 64 KiB and start on multiples of their size, so every chunk but a short last
/// one is written whole.
use targets::DIRECT_IO_ALIGN as DIRECT_ALIGN;

/// A second descriptor on `path` with `O_DIRECT`, or `None` when the file system refuses it
/// (tmpfs, some network and FUSE file systems): the restore then writes through the page cache.
///
/// A durable restore writes each chunk straight to the device instead of copying it into the
/// page cache and flushing 1 GB or more at the end: on a VM's disk that turned a 3.3 s restore
/// of the benchmark image into about 1 s, and a restore no longer evicts the host's cache.
fn open_direct(path: &std::path::Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| tracing::debug!("no direct I/O for {}: {e}", path.display()))
        .ok()
}

/// A window of `len` bytes of `buf` that starts on a [`DIRECT_ALIGN`] boundary (`buf` grows
/// as needed).
fn aligned_window(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buf.len() < len + DIRECT_ALIGN {
        buf.resize(len + DIRECT_ALIGN, 0);
    }
    let at = (DIRECT_ALIGN - buf.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
    &mut buf[at..at + len]
}

/// Writes `data` at `offset`: its whole blocks through `direct` while that works, the rest
/// (a short last chunk's tail, everything after a refusal) through `file`. Returns whether
/// any of it went through the page cache (and so needs writeback).
fn write_chunk(
    file: &File,
    direct: Option<&File>,
    direct_ok: &std::sync::atomic::AtomicBool,
    data: &[u8],
    offset: u64,
) -> std::io::Result<bool> {
    use std::sync::atomic::Ordering::Relaxed;
    let aligned = offset.is_multiple_of(DIRECT_ALIGN as u64)
        && (data.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN);
    let bulk = data.len() - data.len() % DIRECT_ALIGN;
    if let Some(direct) = direct.filter(|_| aligned && bulk > 0 && direct_ok.load(Relaxed)) {
        match direct.write_all_at(&data[..bulk], offset) {
            Ok(()) if bulk == data.len() => return Ok(false),
            Ok(()) => {
                file.write_all_at(&data[bulk..], offset + bulk as u64)?;
                return Ok(true);
            }
            // Refused after all (a device with larger blocks, say): the page cache from here.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!("direct write refused ({e}); writing through the page cache");
                direct_ok.store(false, Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    file.write_all_at(data, offset)?;
    Ok(true)
}

trait AsFdOwned {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd>;
}

impl<T: std::os::fd::AsFd> AsFdOwned for T {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        self.as_fd().try_clone_to_owned()
    }
}

fn run(
    store: &dyn ChunkStore,
    disk: &Disk,
    sink: Sink,
    label: &str,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreReport> {
    let max_chunk = disk
        .entries
        .iter()
        .map(|e| u64::from(e.len))
        .max()
        .unwrap_or(1);
    let threads = opts.threads.max(1);
    let fixed = 2 * threads as u64 * max_chunk;
    let limit = GroupLimit::new(opts.memory, threads, max_chunk, opts.task_bytes);
    let (window, limit) = match sink {
        // The tokens bound a stream's memory by themselves, so the window may pass the
        // channels' cap of 64 chunks: large tasks need room for every worker's.
        Sink::Stream(_) => {
            // No more chunks can be in flight than the disk has: a tiny disk (one byte, or
            // none) would otherwise make a window of millions of one-byte slots.
            let window = memory_slots(opts.memory, fixed, max_chunk).min(disk.entries.len().max(2));
            (window, limit.within_window(window, threads))
        }
        Sink::Positional { .. } => (channel_capacity(opts.memory, fixed, max_chunk), limit),
    };
    let (task_tx, task_rx) = bounded::<Task>((window / limit.items).max(1));
    let errors = FirstError::default();
    let mut report = RestoreReport {
        bytes_total: disk.source_len,
        ..Default::default()
    };
    let counters = Counters::default();
    match &sink {
        Sink::Positional {
            file,
            zeros,
            direct,
        } => {
            let direct_ok = std::sync::atomic::AtomicBool::new(true);
            std::thread::scope(|s| {
                let errors = &errors;
                let counters = &counters;
                let out = Out {
                    file,
                    direct: direct.as_ref(),
                    direct_ok: &direct_ok,
                    zeros: *zeros,
                    writeback: opts.sync,
                    label,
                };
                for _ in 0..threads {
                    let rx = task_rx.clone();
                    s.spawn(move || {
                        errors
                            .run(|| positional_worker(store, out, &rx, errors, progress, counters))
                    });
                }
                drop(task_rx);
                errors.run(|| feed(disk, limit, &task_tx, None, errors));
                drop(task_tx);
            });
            errors.into_result()?;
            if opts.sync {
                file.sync_all().map_err(|e| Error::destination(label, e))?;
            }
        }
        Sink::Stream(file) => {
            // Tokens bound chunks in flight (queued, being decoded, waiting to be written).
            let (token_tx, token_rx) = bounded::<()>(window);
            for _ in 0..window {
                token_tx
                    .send(())
                    .expect("the token channel has room for the window");
            }
            let (out_tx, out_rx) = bounded::<(u64, Option<Vec<u8>>)>(window);
            std::thread::scope(|s| {
                let errors = &errors;
                let counters = &counters;
                for _ in 0..threads {
                    let (rx, tx) = (task_rx.clone(), out_tx.clone());
                    s.spawn(move || {
                        errors.run(|| stream_worker(store, &rx, &tx, errors, counters))
                    });
                }
                drop(task_rx);
                drop(out_tx);
                s.spawn(move || {
                    errors.run(|| feed(disk, limit, &task_tx, Some(&token_rx), errors));
                });
                errors.run(|| {
                    stream_writer(
                        disk, file, label, &out_rx, &token_tx, errors, progress, counters,
                    )
                });
                drop(out_rx);
            });
            errors.into_result()?;
        }
    }
    report.bytes_written = counters.written.load(std::sync::atomic::Ordering::Relaxed);
    report.chunks_fetched = counters.fetched.load(std::sync::atomic::Ordering::Relaxed);
    Ok(report)
}

#[derive(Default)]
struct Counters {
    written: std::sync::atomic::AtomicU64,
    fetched: std::sync::atomic::AtomicU64,
}

fn feed(
    disk: &Disk,
    limit: GroupLimit,
    tasks: &Sender<Task>,
    tokens: Option<&Receiver<()>>,
    errors: &FirstError,
) -> Result<()> {
    let mut offset = 0u64;
    let mut group: Task = Vec::new();
    let mut group_bytes = 0u64;
    for (index, entry) in disk.entries.iter().enumerate() {
        if errors.should_stop() {
            return Ok(());
        }
        if let Some(tokens) = tokens {
            // Wait for room in the window, but keep watching for a failure downstream (a
            // writer that stopped never hands tokens back).
            loop {
                match tokens.recv_timeout(std::time::Duration::from_millis(50)) {
                    Ok(()) => break,
                    Err(RecvTimeoutError::Timeout) if !errors.should_stop() => {}
                    Err(_) => return Ok(()),
                }
            }
        }
        let len = u64::from(entry.len);
        let full = group.len() >= limit.items || group_bytes + len > limit.bytes;
        if !group.is_empty() && (entry.id.is_none() || full) {
            if tasks.send(std::mem::take(&mut group)).is_err() {
                return Ok(());
            }
            group_bytes = 0;
        }
        group.push(Item {
            index: index as u64,
            offset,
            entry: *entry,
        });
        group_bytes += len;
        // A zero chunk needs no fetch: it goes alone, at once; so does a group that holds
        // every token of a small window.
        let window_full = tokens.is_some_and(|t| t.is_empty());
        if (entry.id.is_none() || window_full) && tasks.send(std::mem::take(&mut group)).is_err() {
            return Ok(());
        }
        if group.is_empty() {
            group_bytes = 0;
        }
        offset += len;
    }
    if !group.is_empty() {
        let _ = tasks.send(group);
    }
    Ok(())
}

pub(crate) static ZEROS: [u8; 1 << 16] = [0; 1 << 16];

/// Where positional workers write, and how.
#[derive(Clone, Copy)]
struct Out<'a> {
    file: &'a File,
    direct: Option<&'a File>,
    direct_ok: &'a std::sync::atomic::AtomicBool,
    /// Zero chunks are written (a device), not left as holes.
    zeros: bool,
    /// Start writeback of what goes through the page cache as it is written (a durable
    /// restore).
    writeback: bool,
    label: &'a str,
}

fn positional_worker(
    store: &dyn ChunkStore,
    out: Out<'_>,
    tasks: &Receiver<Task>,
    errors: &FirstError,
    progress: &Progress,
    counters: &Counters,
) -> Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut decoder = Decoder::with_id_key(store.id_key());
    let mut buf = Vec::new();
    for task in tasks {
        if errors.should_stop() {
            return Ok(());
        }
        let mut frames = fetch(store, &task)?;
        for task in task {
            let len = u64::from(task.entry.len);
            match task.entry.id {
                None if !out.zeros => {}
                None => {
                    let mut done = 0;
                    while done < len {
                        let n = (len - done).min(ZEROS.len() as u64) as usize;
                        out.file
                            .write_all_at(&ZEROS[..n], task.offset + done)
                            .map_err(|e| Error::destination(out.label, e))?;
                        done += n as u64;
                    }
                    counters.written.fetch_add(len, Relaxed);
                }
                Some(id) => {
                    let frame = frames.next().expect("one frame per data chunk");
                    let data = aligned_window(&mut buf, len as usize);
                    decoder.decode_to(&frame, &id, data)?;
                    let cached =
                        write_chunk(out.file, out.direct, out.direct_ok, data, task.offset)
                            .map_err(|e| Error::destination(out.label, e))?;
                    if cached && out.writeback {
                        crate::sys::start_writeback(out.file, task.offset, len);
                    }
                    counters.written.fetch_add(len, Relaxed);
                    counters.fetched.fetch_add(1, Relaxed);
                }
            }
            progress.add(len);
        }
    }
    Ok(())
}

fn stream_worker(
    store: &dyn ChunkStore,
    tasks: &Receiver<Task>,
    out: &Sender<(u64, Option<Vec<u8>>)>,
    errors: &FirstError,
    counters: &Counters,
) -> Result<()> {
    let mut decoder = Decoder::with_id_key(store.id_key());
    for task in tasks {
        if errors.should_stop() {
            return Ok(());
        }
        let mut frames = fetch(store, &task)?;
        for task in task {
            let data = match task.entry.id {
                None => None,
                Some(id) => {
                    let frame = frames.next().expect("one frame per data chunk");
                    counters
                        .fetched
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Some(decoder.decode(&frame, &id)?)
                }
            };
            if out.send((task.index, data)).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn stream_writer(
    disk: &Disk,
    mut file: &File,
    label: &str,
    out: &Receiver<(u64, Option<Vec<u8>>)>,
    tokens: &Sender<()>,
    errors: &FirstError,
    progress: &Progress,
    counters: &Counters,
) -> Result<()> {
    let mut waiting = std::collections::BTreeMap::new();
    let mut next = 0u64;
    for (index, data) in out {
        if errors.should_stop() {
            return Ok(());
        }
        waiting.insert(index, data);
        while let Some(data) = waiting.remove(&next) {
            let len = disk.entries[next as usize].len as usize;
            match data {
                Some(bytes) => file.write_all(&bytes),
                None => (0..len)
                    .step_by(ZEROS.len())
                    .try_for_each(|at| file.write_all(&ZEROS[..(len - at).min(ZEROS.len())])),
            }
            .map_err(|e| Error::destination(label, e))?;
            counters
                .written
                .fetch_add(len as u64, std::sync::atomic::Ordering::Relaxed);
            progress.add(len as u64);
            next += 1;
            let _ = tokens.send(());
        }
    }
    if next as usize != disk.entries.len() && !errors.should_stop() {
        return Err(Error::Interrupted);
    }
    file.flush().map_err(|e| Error::destination(label, e))
}

#[cfg(test)]
mod tests {
    use super::delta::{write_differences, DELTA_BLOCK};
    use super::*;
    use crate::Source;
    use std::sync::Mutex;

    /// The bytes, and every write as (offset, length).
    type Written = (Vec<u8>, Vec<(u64, usize)>);

    /// A destination in memory that records its writes.
    struct Memory(Mutex<Written>);

    impl DeltaTarget for Memory {
        fn source(&self) -> &dyn Source {
            unreachable!("write_differences does not read")
        }
        fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
            let mut m = self.0.lock().unwrap();
            let o = offset as usize;
            m.0[o..o + data.len()].copy_from_slice(data);
            m.1.push((offset, data.len()));
            Ok(())
        }
        fn write_zeroes(&self, _: u64, _: u64) -> Result<()> {
            unreachable!()
        }
        fn sync(&self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn aligned_windows_start_on_a_block() {
        let mut buf = Vec::new();
        for len in [1, 4095, 4096, 1 << 20, (1 << 20) + 17, 3] {
            let w = aligned_window(&mut buf, len);
            assert_eq!(w.len(), len);
            assert_eq!(w.as_ptr() as usize % DIRECT_ALIGN, 0);
        }
    }

    /// Chunks of whole blocks, a short last chunk, and unaligned buffers, written through a
    /// direct descriptor where the file system of the build directory takes one: the file
    /// holds exactly the bytes written.
    #[test]
    fn chunks_written_directly_read_back() {
        use std::sync::atomic::AtomicBool;
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("image");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let size = (3 << 16) + 1000;
        file.set_len(size).unwrap();
        let direct = open_direct(&path);
        let direct_ok = AtomicBool::new(true);
        let chunk = |seed: u8, len: usize| -> Vec<u8> {
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect()
        };
        let mut want = vec![0u8; size as usize];
        let mut buf = Vec::new();
        let mut unaligned = vec![0u8; (1 << 16) + 1];
        for (offset, len, seed) in [(0usize, 1 << 16, 1u8), (2 << 16, (1 << 16) + 1000, 2)] {
            let data = chunk(seed, len);
            let w = aligned_window(&mut buf, len);
            w.copy_from_slice(&data);
            let cached = write_chunk(&file, direct.as_ref(), &direct_ok, w, offset as u64).unwrap();
            // Whole blocks go around the page cache; a tail does not.
            assert_eq!(cached, direct.is_none() || len % DIRECT_ALIGN != 0);
            want[offset..offset + len].copy_from_slice(&data);
        }
        // A buffer off the block boundary goes through the page cache, direct or not.
        let data = chunk(3, 1 << 16);
        unaligned[1..].copy_from_slice(&data);
        assert!(write_chunk(&file, direct.as_ref(), &direct_ok, &unaligned[1..], 1 << 16).unwrap());
        want[1 << 16..2 << 16].copy_from_slice(&data);
        assert!(direct_ok.load(std::sync::atomic::Ordering::Relaxed));
        drop(direct);
        file.sync_all().unwrap();
        assert!(
            std::fs::read(&path).unwrap() == want,
            "the file differs from what was written"
        );
    }

    #[test]
    fn tasks_grow_to_their_size_within_the_memory_budget() {
        const MIB: u64 = 1 << 20;
        let limit = |memory, threads, task| {
            let l = GroupLimit::new(memory, threads, MIB, task);
            (l.items, l.bytes)
        };
        assert_eq!(limit(256 * MIB, 4, REMOTE_TASK_BYTES), (32, 32 * MIB));
        assert_eq!(limit(256 * MIB, 16, REMOTE_TASK_BYTES), (8, 8 * MIB));
        assert_eq!(limit(256 * MIB, 2, LOCAL_TASK_BYTES), (8, 8 * MIB));
        assert_eq!(
            limit(MIB, 4, REMOTE_TASK_BYTES),
            (1, MIB),
            "at least one chunk"
        );
        // A stream's window holds every worker's task.
        let l = GroupLimit::new(256 * MIB, 4, MIB, REMOTE_TASK_BYTES).within_window(40, 4);
        assert_eq!(l.items, 10);
    }

    #[test]
    fn only_differing_blocks_are_written_in_runs() {
        let len = 10 * DELTA_BLOCK + 100;
        let want: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut current = want.clone();
        current[5] ^= 1; // block 0
        current[DELTA_BLOCK + 7] ^= 1; // block 1: a run with block 0
        current[6 * DELTA_BLOCK] ^= 1; // block 6 alone
        current[len - 1] ^= 1; // the short last block
        let mem = Memory(Mutex::new((current.clone(), Vec::new())));
        let n =
            write_differences(&mem, 0, Some(&current), &want).unwrap_or_else(|_| unreachable!());
        assert_eq!(n, (3 * DELTA_BLOCK + 100) as u64);
        let m = mem.0.into_inner().unwrap();
        assert_eq!(m.0, want);
        let runs = m.1;
        assert_eq!(
            runs,
            vec![
                (0, 2 * DELTA_BLOCK),
                (6 * DELTA_BLOCK as u64, DELTA_BLOCK),
                (10 * DELTA_BLOCK as u64, 100)
            ]
        );
    }

    #[test]
    fn a_hole_gets_only_the_non_zero_blocks() {
        let mut want = vec![0u8; 4 * DELTA_BLOCK];
        want[2 * DELTA_BLOCK + 1] = 9;
        let mem = Memory(Mutex::new((vec![0; 4 * DELTA_BLOCK], Vec::new())));
        let n = write_differences(&mem, 0, None, &want).unwrap_or_else(|_| unreachable!());
        assert_eq!(n, DELTA_BLOCK as u64);
        let m = mem.0.into_inner().unwrap();
        assert_eq!(m.0, want);
        assert_eq!(m.1, vec![(2 * DELTA_BLOCK as u64, DELTA_BLOCK)]);
    }
}

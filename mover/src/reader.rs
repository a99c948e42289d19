//! Random access to one disk of a snapshot: what NBD serving and file-level restore read
//! through (issue 15).
//!
//! An offset maps to its chunk through the manifest (a binary search over chunk starts, so
//! fixed and content-defined chunking both work). Zero chunks are never fetched. Decoded
//! chunks live in one cache shared by every caller, bounded by the memory budget; a chunk is
//! fetched once however many callers want it at the same moment.
//!
//! Readahead: the reader remembers a few recent streams of reads. A read that continues one
//! (it starts near where that stream's last read ended) twice in a row makes the stream
//! sequential, if its reads cover at least half of the range they span (random reads that
//! happen to land near each other do not), and the chunks ahead of it, up to a window of a quarter of the budget, are
//! fetched by a small pool of fetch threads, several tasks in flight, neighbouring chunks in
//! one request ([`ChunkStore::get_many`]). A read spanning several chunks hands all but its
//! first chunk to the pool before it waits for the first. Readahead never blocks a reader:
//! when the pool's queue is full, the stream's next read hands out the rest (and a chunk the
//! reader reaches first it fetches itself). A stream does not fetch into the area of another
//! stream ahead of it (the next connection of a parallel copy has read or is reading it).
//!
//! Drop-behind: a chunk only sequential streams have read leaves the cache once they are
//! past it by 16 MiB, or by half the readahead window if less (or have ended: nobody
//! continued them for a while); a chunk any other read used stays, in least-recently-used
//! order. A copy of the whole disk (a mirror job moving a running VM to production storage)
//! thus neither pushes out the chunks the VM reads nor grows the cache onto fresh memory, a
//! page fault every 4 KiB.
//!
//! Buffers: chunks decode into buffers that come back when evicted (`reader/pool.rs`), and
//! while the cache is still growing the fetch threads keep a couple of spare buffers with
//! their pages touched, so that a chunk fetched on demand does not fault in fresh memory on
//! the reader's time. [`SnapshotReader::pieces`] hands out the cached chunks themselves, for
//! a server to write out without copying.
//!
//! ```no_run
//! use std::sync::Arc;
//! use mover::{ReaderOptions, SnapshotReader};
//! use targets::{LocalBackend, Repository, RepositoryOptions};
//!
//! let backend = Arc::new(LocalBackend::new("/srv/backup/repo"));
//! let repo = Arc::new(Repository::open(backend, RepositoryOptions::default())?);
//! let (_id, manifest) = repo.find_snapshot("latest", None)?;
//! let reader = SnapshotReader::new(repo, &manifest.disks[0], &ReaderOptions::default());
//! let mut sector = [0u8; 512];
//! reader.read_at(0, &mut sector)?;
//! for run in reader.allocation(0, reader.len()) {
//!     println!("{} +{} {}", run.offset, run.len, if run.zero { "zero" } else { "data" });
//! }
//! # Ok::<(), mover::Error>(())
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chunker::format::{Disk, Entry};
use chunker::{ChunkId, Decoder};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use targets::ChunkStore;

use crate::{Error, Result, Source};

mod cache;
mod latency;
mod pool;

use cache::{Cache, Claim};
pub(crate) use latency::Latencies;
pub(crate) use pool::Chunk;
use pool::Pool;

/// Settings of a [`SnapshotReader`].
#[derive(Clone, Debug)]
pub struct ReaderOptions {
    /// Bytes of decoded chunks held at once: the cache and the readahead window together.
    pub memory: u64,
    /// Threads fetching ahead of sequential readers.
    pub fetchers: usize,
    /// Most plaintext bytes of neighbouring chunks fetched with one request.
    pub task_bytes: u64,
    /// Bytes fetched ahead of a sequential reader; `None` for a quarter of `memory`. Readers
    /// that jump around (file-system metadata: directories, inodes) want 0, so that only the
    /// chunks they read are fetched.
    pub window: Option<u64>,
    /// Remember which chunks reads touched ([`SnapshotReader::touched`]).
    pub track: bool,
}

/// [`ReaderOptions::task_bytes`] for a local repository: about one chunk a fetch. A local
/// pack is read chunk by chunk anyway, so larger fetches only make the fetch threads decode
/// their chunks one after another; with one each, they decode the chunks nearest the reader
/// first, several at once (in a sequential pass through `mover serve`, 5 % less CPU than
/// fetches of 8 MiB).
pub const LOCAL_FETCH_BYTES: u64 = 1 << 20;

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            memory: crate::DEFAULT_MEMORY,
            fetchers: 4,
            task_bytes: LOCAL_FETCH_BYTES,
            window: None,
            track: false,
        }
    }
}

/// A run of a disk that is all data or all zeros (see [`SnapshotReader::allocation`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Start, bytes from the start of the disk.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// All zeros, never stored (a hole of the source or a zero chunk).
    pub zero: bool,
}

/// Part of a read (see [`SnapshotReader::pieces`]).
pub(crate) enum Piece {
    /// This many zero bytes.
    Zero(usize),
    /// `chunk[from..to]`.
    Data {
        chunk: Arc<Chunk>,
        from: usize,
        to: usize,
    },
}

impl Piece {
    pub(crate) fn len(&self) -> usize {
        match self {
            Piece::Zero(n) => *n,
            Piece::Data { from, to, .. } => to - from,
        }
    }

    /// The bytes, or `None` for zeros.
    pub(crate) fn data(&self) -> Option<&[u8]> {
        match self {
            Piece::Zero(_) => None,
            Piece::Data { chunk, from, to } => Some(&chunk[*from..*to]),
        }
    }
}

/// Counters of a reader's work since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Chunks fetched from the store and decoded (on demand or ahead).
    pub chunks_fetched: u64,
    /// Chunks read from the disk's source instead (see [`SnapshotReader::with_source`]).
    pub chunks_from_source: u64,
    /// Stored bytes (compressed frames) of the chunks fetched.
    pub bytes_fetched: u64,
    /// Chunk lookups answered from the cache.
    pub cache_hits: u64,
    /// Bytes of decoded chunks held now.
    pub cached_bytes: u64,
    /// Chunks a caller fetched and decoded itself, waiting for them (not found in the cache
    /// nor being fetched ahead).
    pub demand_fetches: u64,
    /// The median of those fetches' durations, store read and decode together (within
    /// 2.5 %; `None` before the first).
    pub demand_fetch_p50: Option<Duration>,
    /// Their 99th percentile, likewise.
    pub demand_fetch_p99: Option<Duration>,
}

/// Positional reads of one disk of a snapshot, from many threads at once.
///
/// # Contract
///
/// - `read_at` returns exactly the bytes the disk held when it was backed up, each chunk
///   checked against its id; reads past the end are refused.
/// - All methods take `&self`; any number of threads may read at once.
/// - Memory: decoded chunks held stay within [`ReaderOptions::memory`], plus the chunks
///   callers are copying from at that moment.
/// - Dropping the reader stops its fetch threads (after the fetches in progress).
pub struct SnapshotReader {
    inner: Arc<Inner>,
    tasks: Option<Sender<Task>>,
    fetchers: Vec<JoinHandle<()>>,
}

struct Inner {
    store: Arc<dyn ChunkStore>,
    len: u64,
    /// Start offset of each chunk.
    starts: Vec<u64>,
    entries: Vec<Entry>,
    cache: Cache,
    /// Buffers of evicted chunks, decoded into again.
    pool: Arc<Pool>,
    /// The largest chunk, bytes.
    max_chunk: usize,
    /// Free buffers the pool should hold while the cache is not full, and whether the fetch
    /// threads were asked to add them.
    spare: usize,
    prefaulting: AtomicBool,
    decoders: Mutex<Vec<Decoder>>,
    streams: Mutex<Vec<Stream>>,
    /// Readahead window, bytes.
    window: u64,
    task_bytes: u64,
    fetched: AtomicU64,
    fetched_bytes: AtomicU64,
    hits: AtomicU64,
    /// How long fetches on demand took.
    demand: Latencies,
    /// One bit a chunk: read by a caller (zero chunks included), when tracking.
    touched: Option<Mutex<Vec<u64>>>,
    /// The disk's source, tried before the store (see [`SnapshotReader::with_source`]).
    source: Option<Arc<dyn Source>>,
    sourced: AtomicU64,
}

/// Work for the fetch threads.
enum Task {
    /// Fetch and cache these chunks (claimed already).
    Fetch(Vec<usize>),
    /// Fill the buffer pool with buffers whose pages are touched already.
    Prefault,
}

/// A recent stream of reads: where its next read would start and how many continued it.
#[derive(Clone, Copy, Default)]
struct Stream {
    next: u64,
    /// Where its lowest read started, and the bytes its reads asked for.
    start: u64,
    bytes: u64,
    hits: u32,
    /// Chunks up to (not including) this index were handed to the fetchers.
    ahead: usize,
    /// Chunks from this index on were not yet dropped behind the stream.
    behind: usize,
    /// Sequential, and not ended (see [`STALE_AFTER`]).
    live: bool,
    used: u64,
}

impl Stream {
    /// Read in order: it continued at least [`SEQUENTIAL_AFTER`] times, and covered at least
    /// half of the range it spans (out-of-order requests of a sequential reader still cover
    /// their span densely; random reads near each other leave most of it unread).
    fn is_sequential(&self) -> bool {
        self.hits >= SEQUENTIAL_AFTER && self.bytes.saturating_mul(2) >= self.next - self.start
    }

    /// The chunks it leaves behind up to (not including) `upto`, not left behind before.
    fn leave_behind(&mut self, upto: usize) -> std::ops::Range<usize> {
        let left = self.behind..upto.max(self.behind);
        self.behind = left.end;
        left
    }
}

/// What a read asks of the reader (see [`Inner::track`]).
struct Track {
    /// The sequential stream the read belongs to, if any (its index, and its `used` tick
    /// after this read).
    stream: Option<(usize, u64)>,
    /// Chunks to fetch ahead of it, not handed out before.
    ahead: std::ops::Range<usize>,
    /// Chunks sequential streams have left behind for good (see [`Cache::drop_behind`]).
    behind: Vec<std::ops::Range<usize>>,
}

/// Spare buffers kept ready at most (see [`Inner::wants_prefault`]).
const SPARE: u64 = 2;
/// Streams remembered at once (several connections each reading their own area).
const STREAMS: usize = 16;
/// Reads in a row that make a stream sequential.
const SEQUENTIAL_AFTER: u32 = 2;
/// Reads (of any stream) after which a sequential stream nobody continued has ended.
const STALE_AFTER: u64 = 64;
/// How far behind a sequential stream its chunks stay cached: a copy with several requests
/// in flight (`qemu-img convert`, a mirror job: up to 16 MiB) sends them a little out of
/// order.
const DROP_LAG: u64 = 16 << 20;

impl SnapshotReader {
    /// A reader of `disk` (one disk of a snapshot manifest) on `store`.
    pub fn new(store: Arc<dyn ChunkStore>, disk: &Disk, opts: &ReaderOptions) -> Self {
        Self::with_source(store, disk, opts, None)
    }

    /// Like [`SnapshotReader::new`], reading each chunk first from `source` (what the disk
    /// was backed up from, still open: the backup's file catalog reads this way) at the
    /// chunk's offset. The bytes are used only when they hash to the chunk's id, so the
    /// reader returns the snapshot's content whatever the source holds now; any other chunk,
    /// or a failed read, comes from the store. No decode, no fetch: over S3, no round trip.
    pub fn with_source(
        store: Arc<dyn ChunkStore>,
        disk: &Disk,
        opts: &ReaderOptions,
        source: Option<Arc<dyn Source>>,
    ) -> Self {
        let mut starts = Vec::with_capacity(disk.entries.len());
        let mut at = 0u64;
        for e in &disk.entries {
            starts.push(at);
            at += u64::from(e.len);
        }
        let max_chunk = disk.entries.iter().map(|e| u64::from(e.len)).max();
        let keep = (opts.memory / 32).max(max_chunk.unwrap_or(0));
        let inner = Arc::new(Inner {
            store,
            len: at,
            starts,
            entries: disk.entries.clone(),
            cache: Cache::new(opts.memory),
            // A few chunks' worth: what is evicted while the next chunks are decoded.
            pool: Pool::new(keep as usize),
            max_chunk: max_chunk.unwrap_or(0) as usize,
            spare: (keep / max_chunk.unwrap_or(1).max(1)).min(SPARE) as usize,
            prefaulting: AtomicBool::new(false),
            decoders: Mutex::new(Vec::new()),
            streams: Mutex::new(vec![Stream::default(); STREAMS]),
            window: (opts.window.unwrap_or(opts.memory / 4)).max(max_chunk.unwrap_or(0)),
            task_bytes: opts.task_bytes.max(1),
            fetched: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            demand: Latencies::new(),
            touched: opts
                .track
                .then(|| Mutex::new(vec![0; disk.entries.len().div_ceil(64)])),
            source,
            sourced: AtomicU64::new(0),
        });
        let (tx, rx) = crossbeam_channel::bounded(opts.fetchers.max(1) * 2);
        let fetchers = (0..opts.fetchers.max(1))
            .map(|_| {
                let (inner, rx): (_, Receiver<Task>) = (inner.clone(), rx.clone());
                std::thread::spawn(move || {
                    for task in rx {
                        match task {
                            // A failed readahead is not an error: the reader fetches on
                            // demand and reports it then.
                            Task::Fetch(chunks) => drop(inner.fetch_task(&chunks)),
                            Task::Prefault => inner.prefault(),
                        }
                    }
                })
            })
            .collect();
        SnapshotReader {
            inner,
            tasks: Some(tx),
            fetchers,
        }
    }

    /// Length of the disk in bytes.
    pub fn len(&self) -> u64 {
        self.inner.len
    }

    /// True for a disk of no bytes.
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// Fills `buf` with the disk's bytes from `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read_with(offset, buf, true)
    }

    /// Like [`SnapshotReader::read_at`] for a reader that fetches ahead of itself with
    /// [`SnapshotReader::prefetch`] (it knows where its data lies, as a file-system reader
    /// knows a file's blocks): the read is not tracked as a stream, so no window past the
    /// file's end is fetched and decoded for nothing.
    pub fn read_planned(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read_with(offset, buf, false)
    }

    /// Hands the chunks of `offset..end` that are not cached or being fetched to the fetch
    /// threads (for readers that plan their own readahead: [`SnapshotReader::read_planned`]).
    pub fn prefetch(&self, offset: u64, end: u64) {
        let end = end.min(self.inner.len);
        if offset < end {
            let inner = &*self.inner;
            self.fetch(inner.index_of(offset)..inner.index_of(end - 1) + 1);
        }
    }

    /// The largest chunk of the disk, bytes.
    pub fn max_chunk(&self) -> u64 {
        self.inner.max_chunk as u64
    }

    /// Bytes a sequential reader is fetched ahead of (the readahead window).
    pub fn window(&self) -> u64 {
        self.inner.window
    }

    fn read_with(&self, offset: u64, buf: &mut [u8], track: bool) -> Result<()> {
        let mut at = 0;
        for piece in self.pieces_with(offset, buf.len() as u64, track)? {
            let out = &mut buf[at..at + piece.len()];
            match piece.data() {
                None => out.fill(0),
                Some(data) => out.copy_from_slice(data),
            }
            at += out.len();
        }
        Ok(())
    }

    /// Tells the reader that its caller is done with the bytes `offset..end`: the chunks
    /// that lie wholly inside are dropped from the cache, and their buffers are decoded into
    /// again once the last holder lets go. A reader of a large file calls it for the part it
    /// has read (no other file shares those chunks): otherwise the cache grows to its budget
    /// on fresh memory, a page fault every 4 KiB of every chunk. Chunks still being fetched,
    /// and those shared with bytes outside the range, stay.
    pub fn forget(&self, offset: u64, end: u64) {
        let inner = &*self.inner;
        let end = end.min(inner.len);
        if offset >= end {
            return;
        }
        let mut i = inner.index_of(offset);
        if inner.starts[i] < offset {
            i += 1;
        }
        while i < inner.entries.len() && inner.starts[i] + u64::from(inner.entries[i].len) <= end {
            if let Some(id) = inner.entries[i].id {
                inner.cache.forget(&id);
            }
            i += 1;
        }
    }

    /// The disk's `len` bytes from `offset` as they lie in the cache, without copying them (a
    /// server writes them out directly): one piece per chunk, in order.
    pub(crate) fn pieces(&self, offset: u64, len: u64) -> Result<Vec<Piece>> {
        self.pieces_with(offset, len, true)
    }

    /// [`SnapshotReader::pieces`]; `stream`: track the read as part of a stream and fetch
    /// ahead of it (the rest of the read's chunks are handed to the fetchers either way).
    fn pieces_with(&self, offset: u64, len: u64, stream: bool) -> Result<Vec<Piece>> {
        let inner = &*self.inner;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= inner.len)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "read of {len} bytes at {offset} is past the end of the disk ({} bytes)",
                    inner.len
                ))
            })?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let first = inner.index_of(offset);
        let last = inner.index_of(end - 1);
        if let Some(touched) = &inner.touched {
            let mut bits = touched.lock().unwrap_or_else(PoisonError::into_inner);
            for i in first..=last {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        // Chunks read other than by a sequential stream are kept from dropping behind.
        let keep = if stream {
            !self.readahead(offset, end, first, last)
        } else {
            self.fetch(first + 1..last + 1);
            true
        };
        let mut pieces = Vec::with_capacity(last + 1 - first);
        for i in first..=last {
            let cs = inner.starts[i];
            let ce = cs + u64::from(inner.entries[i].len);
            let (from, to) = ((cs.max(offset) - cs) as usize, (ce.min(end) - cs) as usize);
            pieces.push(match inner.chunk(i, keep)? {
                None => Piece::Zero(to - from),
                Some(chunk) => Piece::Data { chunk, from, to },
            });
        }
        Ok(pieces)
    }

    /// The runs of data and zeros covering `offset..offset + len` (clipped to the disk),
    /// neighbouring runs of the same kind merged.
    pub fn allocation(&self, offset: u64, len: u64) -> Vec<Run> {
        let inner = &*self.inner;
        let end = offset.saturating_add(len).min(inner.len);
        let mut runs: Vec<Run> = Vec::new();
        if offset >= end {
            return runs;
        }
        let mut i = inner.index_of(offset);
        while i < inner.entries.len() && inner.starts[i] < end {
            let cs = inner.starts[i].max(offset);
            let ce = (inner.starts[i] + u64::from(inner.entries[i].len)).min(end);
            let zero = inner.entries[i].id.is_none();
            match runs.last_mut() {
                Some(r) if r.zero == zero => r.len += ce - cs,
                _ => runs.push(Run {
                    offset: cs,
                    len: ce - cs,
                    zero,
                }),
            }
            i += 1;
        }
        runs
    }

    /// The indices of the chunks reads have touched so far, in order (zero chunks included,
    /// readahead not); `None` unless [`ReaderOptions::track`] was set.
    pub fn touched(&self) -> Option<Vec<usize>> {
        let bits = self.inner.touched.as_ref()?;
        let bits = bits.lock().unwrap_or_else(PoisonError::into_inner);
        let n = self.inner.entries.len();
        Some(
            (0..n)
                .filter(|&i| bits[i / 64] >> (i % 64) & 1 == 1)
                .collect(),
        )
    }

    /// What the reader did so far.
    pub fn stats(&self) -> ReaderStats {
        ReaderStats {
            chunks_fetched: self.inner.fetched.load(Ordering::Relaxed),
            chunks_from_source: self.inner.sourced.load(Ordering::Relaxed),
            bytes_fetched: self.inner.fetched_bytes.load(Ordering::Relaxed),
            cache_hits: self.inner.hits.load(Ordering::Relaxed),
            cached_bytes: self.inner.cache.bytes(),
            demand_fetches: self.inner.demand.count(),
            demand_fetch_p50: self.inner.demand.percentile(0.5),
            demand_fetch_p99: self.inner.demand.percentile(0.99),
        }
    }

    /// Hands chunks to the fetch threads: those of this read after its first, and for a
    /// sequential stream the window ahead of it; drops what such a stream left behind. True
    /// when the read belongs to a sequential stream.
    fn readahead(&self, offset: u64, end: u64, first: usize, last: usize) -> bool {
        let inner = &*self.inner;
        let mut want = (first + 1)..(last + 1);
        let track = inner.track(offset, end, last);
        if !track.ahead.is_empty() {
            want = want.start..track.ahead.end.max(want.end);
        }
        for i in track.behind.into_iter().flatten() {
            if let Some(id) = inner.entries[i].id {
                inner.cache.drop_behind(&id);
            }
        }
        let reached = self.fetch(want.clone());
        if let (true, Some((k, tick))) = (reached < want.end, track.stream) {
            inner.rewind(k, tick, reached);
        }
        track.stream.is_some()
    }

    /// Hands the chunks `want` that nobody holds or fetches to the fetch threads, in tasks
    /// of about `task_bytes`; returns the first chunk it could not hand out (the queue was
    /// full), or `want.end`.
    fn fetch(&self, want: std::ops::Range<usize>) -> usize {
        let inner = &*self.inner;
        let Some(tasks) = &self.tasks else {
            return want.start;
        };
        if inner.wants_prefault() && tasks.try_send(Task::Prefault).is_err() {
            inner.prefaulting.store(false, Ordering::Relaxed);
        }
        let mut group = Vec::new();
        let mut bytes = 0;
        let mut reached = want.end;
        for i in want {
            // A full queue would refuse the task: claiming its chunks only to give them up
            // again costs a lock each, and they are fetched on demand anyway.
            if tasks.is_full() {
                reached = i;
                break;
            }
            let e = inner.entries[i];
            let Some(id) = e.id else { continue };
            if !inner.cache.try_claim(&id, u64::from(e.len)) {
                continue;
            }
            group.push(i);
            bytes += u64::from(e.len);
            if bytes >= inner.task_bytes {
                let first = group[0];
                if !inner.send(tasks, std::mem::take(&mut group)) {
                    return first;
                }
                bytes = 0;
            }
        }
        match group.first().copied() {
            Some(first) if !inner.send(tasks, group) => first,
            _ => reached,
        }
    }
}

impl Drop for SnapshotReader {
    fn drop(&mut self) {
        self.tasks.take();
        for f in self.fetchers.drain(..) {
            let _ = f.join();
        }
    }
}

impl Inner {
    /// Index of the chunk holding `offset` (< len).
    fn index_of(&self, offset: u64) -> usize {
        self.starts.partition_point(|&s| s <= offset) - 1
    }

    /// Records a read of `offset..end`: whether it belongs to a sequential stream, what to
    /// fetch ahead of it, and the chunks sequential streams have left behind.
    fn track(&self, offset: u64, end: u64, last: usize) -> Track {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let slack = self.window / 2;
        let tick = streams.iter().map(|s| s.used).max().unwrap_or(0) + 1;
        let mut track = Track {
            stream: None,
            ahead: 0..0,
            behind: Vec::new(),
        };
        // A sequential stream no read has continued for a while has ended (a copy went on
        // elsewhere): all it passed is left behind.
        for s in streams.iter_mut() {
            if s.live && tick - s.used > STALE_AFTER {
                let passed = if s.next >= self.len {
                    self.entries.len()
                } else {
                    self.index_of(s.next)
                };
                track.behind.push(s.leave_behind(passed));
                s.live = false;
            }
        }
        let found = streams
            .iter()
            .position(|s| s.used > 0 && offset + slack >= s.next && offset <= s.next + slack);
        let Some(k) = found else {
            let oldest = (0..streams.len())
                .min_by_key(|&k| streams[k].used)
                .expect("streams is not empty");
            streams[oldest] = Stream {
                next: end,
                start: offset,
                bytes: end - offset,
                hits: 0,
                ahead: last + 1,
                behind: self.index_of(offset),
                live: false,
                used: tick,
            };
            return track;
        };
        // Another sequential stream's area ahead of this one is that stream's to fetch: it has
        // read or is reading it (and may have left it behind already). Random reads ahead do
        // not count.
        let next = streams[k].next.max(end);
        let front = streams
            .iter()
            .filter(|o| o.used > 0 && o.start >= next && o.is_sequential())
            .map(|o| o.start)
            .min()
            .unwrap_or(self.len);
        let s = &mut streams[k];
        s.next = next;
        s.start = s.start.min(offset);
        s.bytes = s.bytes.saturating_add(end - offset);
        s.hits += 1;
        s.used = tick;
        if !s.is_sequential() {
            return track;
        }
        s.live = true;
        track.stream = Some((k, tick));
        let stop = match (s.next + self.window).min(front) {
            0 => 0,
            to => self.index_of(to - 1) + 1,
        };
        let start = s.ahead.max(last + 1);
        s.ahead = stop.max(s.ahead);
        track.ahead = start..stop.max(start);
        // Requests a little out of order still come back this far behind the stream.
        let lag = slack.min(DROP_LAG);
        let passed = match s.next.checked_sub(lag) {
            Some(at) if at > 0 => self.index_of(at - 1),
            _ => 0,
        };
        track.behind.push(s.leave_behind(passed));
        track
    }

    /// Queues a task of claimed chunks; false (the claims given up) when the queue is full.
    fn send(&self, tasks: &Sender<Task>, task: Vec<usize>) -> bool {
        match tasks.try_send(Task::Fetch(task)) {
            Ok(()) => true,
            Err(
                TrySendError::Full(Task::Fetch(task))
                | TrySendError::Disconnected(Task::Fetch(task)),
            ) => {
                let ids: Vec<ChunkId> = task.iter().filter_map(|&i| self.entries[i].id).collect();
                self.cache.abandon_all(&ids);
                false
            }
            Err(_) => false,
        }
    }

    /// The fetch threads' queue filled before chunk `reached` of the window of stream `k`
    /// (as `track` left it at `tick`): its next read hands out the rest.
    fn rewind(&self, k: usize, tick: u64, reached: usize) {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let s = &mut streams[k];
        if s.used == tick {
            s.ahead = s.ahead.min(reached);
        }
    }

    /// The decoded chunk `i` (`None` for a zero chunk), from the cache or fetched now; `keep`
    /// as for [`Cache::claim`].
    fn chunk(&self, i: usize, keep: bool) -> Result<Option<Arc<Chunk>>> {
        let Some(id) = self.entries[i].id else {
            return Ok(None);
        };
        match self.cache.claim(&id, u64::from(self.entries[i].len), keep) {
            Claim::Ready(data) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Ok(Some(data))
            }
            Claim::Fetch => {
                let started = Instant::now();
                let result = match self.read_source(i, &id) {
                    Some(data) => Ok(data),
                    None => self
                        .store
                        .get(&id)
                        .map_err(Error::from)
                        .and_then(|frame| self.decode(&frame, &id)),
                };
                match result {
                    Ok(data) => {
                        self.demand.record(started.elapsed());
                        self.cache.fill(&id, data.clone(), keep);
                        Ok(Some(data))
                    }
                    Err(e) => {
                        self.cache.abandon(&id);
                        Err(e)
                    }
                }
            }
        }
    }

    /// True (once, until [`Inner::prefault`] ran) when the pool is short of spare buffers
    /// and the cache has room for them: a chunk fetched on demand then decodes into pages
    /// touched ahead by a fetch thread, instead of faulting in a fresh megabyte on the reader's
    /// time (the cache grows to its budget on fresh memory).
    fn wants_prefault(&self) -> bool {
        let room = self.cache.room();
        self.pool.len() < self.spare
            && room >= ((self.spare + 1) * self.max_chunk) as u64
            && !self.prefaulting.swap(true, Ordering::Relaxed)
    }

    /// Adds spare buffers, their pages touched, while the cache has room for them.
    fn prefault(&self) {
        while self.pool.len() < self.spare
            && self.cache.room() >= ((self.pool.len() + 2) * self.max_chunk) as u64
        {
            // Written, not just allocated: fresh memory from the allocator is not mapped yet.
            let mut buf = Vec::with_capacity(self.max_chunk);
            buf.resize(self.max_chunk, 1);
            if !self.pool.give(buf) {
                break;
            }
        }
        self.prefaulting.store(false, Ordering::Relaxed);
    }

    /// Fetches claimed chunks with one request and stores them; on failure gives up every
    /// claim left.
    fn fetch_task(&self, task: &[usize]) -> Result<()> {
        let mut ids: Vec<ChunkId> = Vec::with_capacity(task.len());
        for &i in task {
            let Some(id) = self.entries[i].id else {
                continue;
            };
            match self.read_source(i, &id) {
                Some(data) => self.cache.fill(&id, data, false),
                None => ids.push(id),
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        let mut done = 0;
        let result = (|| {
            let frames = self.store.get_many(&ids)?;
            for (frame, id) in frames.iter().zip(&ids) {
                let data = self.decode(frame, id)?;
                self.cache.fill(id, data, false);
                done += 1;
            }
            Ok(())
        })();
        if result.is_err() {
            for id in &ids[done..] {
                self.cache.abandon(id);
            }
        }
        result
    }

    /// Chunk `i` read from the disk's source, when it still holds the chunk `id` there.
    fn read_source(&self, i: usize, id: &ChunkId) -> Option<Arc<Chunk>> {
        let source = self.source.as_ref()?;
        let mut buf = self.pool.take();
        buf.resize(self.entries[i].len as usize, 0);
        let same =
            source.read_at(self.starts[i], &mut buf).is_ok() && self.store.id_key().id(&buf) == *id;
        if !same {
            self.pool.give(buf);
            return None;
        }
        self.sourced.fetch_add(1, Ordering::Relaxed);
        Some(Arc::new(self.pool.chunk(buf)))
    }

    fn decode(&self, frame: &chunker::Frame, id: &ChunkId) -> Result<Arc<Chunk>> {
        let pooled = self
            .decoders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut decoder = pooled.unwrap_or_else(|| Decoder::with_id_key(self.store.id_key()));
        let mut buf = self.pool.take();
        let result = decoder.decode_into(frame, id, &mut buf);
        self.decoders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(decoder);
        self.fetched.fetch_add(1, Ordering::Relaxed);
        (self.fetched_bytes).fetch_add(frame.bytes.len() as u64, Ordering::Relaxed);
        match result {
            Ok(()) => Ok(Arc::new(self.pool.chunk(buf))),
            Err(e) => {
                self.pool.give(buf);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chunker::format::{BackupStats, Chunking};
    use chunker::Encoder;
    use targets::{LocalBackend, Repository, RepositoryOptions};

    const CH: usize = 4096;

    /// A repository holding a disk of `chunks` chunks; chunk `i` is zero when `i % 3 == 1`.
    fn disk(chunks: usize) -> (tempfile::TempDir, Arc<Repository>, Disk, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(LocalBackend::new(dir.path().join("repo")));
        Repository::init(backend.clone()).unwrap();
        let repo = Arc::new(Repository::open(backend, RepositoryOptions::default()).unwrap());
        let mut image = Vec::new();
        let mut entries = Vec::new();
        for i in 0..chunks {
            let data: Vec<u8> = if i % 3 == 1 {
                vec![0; CH]
            } else {
                (0..CH).map(|b| (b * 7 + i * 13) as u8 | 1).collect()
            };
            let id = (i % 3 != 1).then(|| {
                let id = ChunkId::of(&data);
                repo.put(&id, Encoder::new(1).encode(&data)).unwrap();
                id
            });
            entries.push(Entry { len: CH as u32, id });
            image.extend_from_slice(&data);
        }
        repo.flush().unwrap();
        let disk = Disk {
            name: "d".into(),
            source: "test".into(),
            chunking: Chunking::Fixed(CH as u32),
            source_len: image.len() as u64,
            change_token: String::new(),
            stats: BackupStats::default(),
            entries,
        };
        (dir, repo, disk, image)
    }

    fn opts(memory: u64) -> ReaderOptions {
        ReaderOptions {
            memory,
            fetchers: 2,
            task_bytes: 3 * CH as u64,
            window: None,
            track: true,
        }
    }

    #[test]
    fn reads_any_range_exactly() {
        let (_d, repo, disk, image) = disk(10);
        let r = SnapshotReader::new(repo, &disk, &opts(1 << 20));
        assert_eq!(r.len(), image.len() as u64);
        for (off, len) in [
            (0, 1),
            (100, 5000),
            (4095, 2),
            (0, 40960),
            (40959, 1),
            (8192, 0),
        ] {
            let mut buf = vec![0xAA; len];
            r.read_at(off as u64, &mut buf).unwrap();
            assert_eq!(buf, image[off..off + len], "{off}+{len}");
        }
        assert!(r.read_at(40960, &mut [0]).is_err());
        assert!(r.read_at(u64::MAX, &mut [0]).is_err());
    }

    #[test]
    fn chunks_come_from_the_source_while_it_matches_the_snapshot() {
        let (dir, repo, disk, image) = disk(10);
        // The source changed after the snapshot: chunk 2 no longer matches it.
        let mut changed = image.clone();
        changed[2 * CH + 7] ^= 1;
        let path = dir.path().join("source.img");
        std::fs::write(&path, &changed).unwrap();
        let source: Arc<dyn Source> =
            Arc::new(crate::FileSource::open(path.to_str().unwrap()).unwrap());
        let r = SnapshotReader::with_source(repo, &disk, &opts(1 << 20), Some(source));
        let mut buf = vec![0; image.len()];
        r.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, image, "the snapshot's bytes, not the source's");
        let s = r.stats();
        // Seven data chunks (every third is zero): six from the source, the changed one fetched.
        assert_eq!((s.chunks_from_source, s.chunks_fetched), (6, 1));
    }

    #[test]
    fn touched_chunks_are_those_read_zero_chunks_included() {
        let (_d, repo, disk, _image) = disk(10);
        let r = SnapshotReader::new(repo, &disk, &opts(1 << 20));
        assert_eq!(r.touched(), Some(vec![]));
        let mut buf = vec![0; 10];
        r.read_at(2 * CH as u64 + 5, &mut buf).unwrap();
        r.read_at(4 * CH as u64, &mut buf).unwrap(); // a zero chunk
        r.read_at(6 * CH as u64 - 5, &mut buf).unwrap(); // chunks 5 and 6
        assert_eq!(r.touched(), Some(vec![2, 4, 5, 6]));
        let untracked = ReaderOptions {
            track: false,
            ..opts(1 << 20)
        };
        let (_d, repo, disk, _image) = self::disk(3);
        assert_eq!(SnapshotReader::new(repo, &disk, &untracked).touched(), None);
    }

    #[test]
    fn sequential_reads_fetch_ahead_and_memory_stays_bounded() {
        let (_d, repo, disk, image) = disk(60);
        let budget = 8 * CH as u64;
        let r = SnapshotReader::new(repo, &disk, &opts(budget));
        let mut buf = vec![0; 1024];
        for off in (0..image.len()).step_by(1024) {
            r.read_at(off as u64, &mut buf).unwrap();
            assert_eq!(buf, image[off..off + 1024]);
            assert!(r.stats().cached_bytes <= budget, "{:?}", r.stats());
        }
        let s = r.stats();
        assert_eq!(s.chunks_fetched, 40, "each data chunk fetched once: {s:?}");
        assert!(s.cache_hits > 100, "{s:?}");
    }

    #[test]
    fn a_sequential_pass_leaves_behind_only_its_own_chunks() {
        let (_d, repo, disk, image) = disk(60);
        let budget = 8 * CH as u64;
        let r = SnapshotReader::new(repo, &disk, &opts(budget));
        let mut small = vec![0; 100];
        // Another reader's chunks (30 and 33, data both), read at random.
        for i in [30, 33] {
            r.read_at((i * CH) as u64, &mut small).unwrap();
        }
        let mut buf = vec![0; 1024];
        for off in (0..image.len()).step_by(1024) {
            r.read_at(off as u64, &mut buf).unwrap();
            assert_eq!(buf, image[off..off + 1024]);
        }
        let after = r.stats();
        // Least-recently-used order alone would have filled the budget and pushed 30 and 33
        // out long before the pass ended.
        assert!(after.cached_bytes < budget - CH as u64, "{after:?}");
        for i in [30, 33] {
            r.read_at((i * CH) as u64, &mut small).unwrap();
            assert_eq!(small, image[i * CH..i * CH + 100]);
        }
        assert_eq!(
            r.stats().chunks_fetched,
            after.chunks_fetched,
            "still cached"
        );
    }

    /// A reader of 300 chunks with a readahead window of 16.
    fn tracked() -> (tempfile::TempDir, SnapshotReader) {
        let (dir, repo, disk, _) = disk(300);
        let opts = ReaderOptions {
            window: Some(16 * CH as u64),
            ..opts(64 * CH as u64)
        };
        (dir, SnapshotReader::new(repo, &disk, &opts))
    }

    /// The readahead range and the chunks left behind that a read of chunk `i` (whole)
    /// yields.
    fn track(r: &SnapshotReader, i: usize) -> (std::ops::Range<usize>, Vec<usize>) {
        let c = CH as u64;
        let t = r.inner.track(i as u64 * c, (i as u64 + 1) * c, i);
        (t.ahead, t.behind.into_iter().flatten().collect())
    }

    #[test]
    fn readahead_stops_at_another_copy_but_not_at_random_reads() {
        let (_d, r) = tracked();
        // A random read at chunk 10, then a stream from 0: its window goes past chunk 10.
        track(&r, 10);
        for i in 0..2 {
            assert!(track(&r, i).0.is_empty(), "not sequential yet");
        }
        assert_eq!(track(&r, 2).0, 3..19);
        // Another copy reading from chunk 100: a stream from 90 fetches only up to it.
        for i in 100..103 {
            track(&r, i);
        }
        for i in 90..92 {
            track(&r, i);
        }
        assert_eq!(track(&r, 92).0, 93..100);
    }

    #[test]
    fn a_stream_leaves_behind_what_it_passed_and_all_of_it_when_it_ends() {
        let (_d, r) = tracked();
        // Half the window (8 chunks) behind the stream is kept for late requests.
        let mut behind = Vec::new();
        for i in 0..20 {
            behind.extend(track(&r, i).1);
        }
        assert_eq!(behind, (0..11).collect::<Vec<_>>());
        // Another stream reads on and on: the first one has ended, all it passed goes.
        let mut behind = Vec::new();
        for i in 200..200 + STALE_AFTER as usize + 2 {
            behind.extend(track(&r, i).1.into_iter().filter(|&i| i < 100));
        }
        assert_eq!(behind, (11..20).collect::<Vec<_>>());
    }

    #[test]
    fn random_reads_near_each_other_fetch_nothing_ahead() {
        let (_d, repo, disk, image) = disk(300);
        let r = SnapshotReader::new(repo, &disk, &opts(64 * CH as u64));
        let mut buf = vec![0; 512];
        let mut touched = std::collections::HashSet::new();
        let mut off = 7u64;
        for _ in 0..200 {
            // Within the slack of each other, but far apart compared to what they read.
            off = off
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let at = ((off >> 24) % (image.len() as u64 - 512)) & !511;
            r.read_at(at, &mut buf).unwrap();
            assert_eq!(buf, image[at as usize..at as usize + 512]);
            let i = at as usize / CH;
            if i % 3 != 1 {
                touched.insert(i);
            }
        }
        // Readahead would fetch chunks no read asked for.
        let fetched = r.stats().chunks_fetched;
        assert!(
            fetched <= touched.len() as u64,
            "{fetched} fetched for {} chunks read",
            touched.len()
        );
    }

    #[test]
    fn many_threads_read_at_once() {
        let (_d, repo, disk, image) = disk(30);
        let r = SnapshotReader::new(repo, &disk, &opts(4 * CH as u64));
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (r, image) = (&r, &image);
                s.spawn(move || {
                    for k in 0..200u64 {
                        let off = (k * 7919 + t * 104_729) % (image.len() as u64 - 6000);
                        let mut buf = vec![0; 6000];
                        r.read_at(off, &mut buf).unwrap();
                        assert_eq!(buf, image[off as usize..off as usize + 6000]);
                    }
                });
            }
        });
    }

    #[test]
    fn spare_buffers_are_prepared_while_the_cache_has_room() {
        let (_d, repo, disk, image) = disk(6);
        let r = SnapshotReader::new(repo, &disk, &opts(64 * CH as u64));
        let mut buf = vec![0; 100];
        r.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, image[..100]);
        let inner = &r.inner;
        assert_eq!(inner.spare, 2);
        // The chunk read on demand may take a buffer the fetch thread has just prepared (a
        // race of the two threads); the next read, from the cache, asks for more.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while inner.pool.len() < inner.spare && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
            r.read_at(0, &mut buf).unwrap();
        }
        assert_eq!(inner.pool.len(), 2, "two spare buffers ready");
        // Decoded into a spare buffer, the next chunk reads back exactly.
        r.read_at(2 * CH as u64, &mut buf).unwrap();
        assert_eq!(buf, image[2 * CH..2 * CH + 100]);
    }

    #[test]
    fn allocation_merges_runs() {
        let (_d, repo, disk, _) = disk(4);
        let r = SnapshotReader::new(repo, &disk, &opts(1 << 20));
        let c = CH as u64;
        let run = |offset, len, zero| Run { offset, len, zero };
        assert_eq!(
            r.allocation(0, 4 * c),
            [run(0, c, false), run(c, c, true), run(2 * c, 2 * c, false)]
        );
        assert_eq!(r.allocation(c + 10, 20), [run(c + 10, 20, true)]);
        assert!(r.allocation(4 * c, 10).is_empty());
    }

    #[test]
    fn a_missing_chunk_is_an_error_not_zeros() {
        let (_d, _repo, disk, _) = disk(3);
        let (_d2, empty, _, _) = self::disk(0);
        let r = SnapshotReader::new(empty, &disk, &opts(1 << 20));
        let mut buf = vec![0; CH];
        assert!(r.read_at(0, &mut buf).is_err());
        r.read_at(CH as u64, &mut buf).unwrap();
    }
}

//! Backup: source -> chunks -> repository -> committed snapshot.
//!
//! ```text
//! planner ──tasks──► workers ×N ──done──► writer ──► Repository (packs) ──► manifest
//! (extents,          (read, zero check,    (put, entries,
//!  holes → zero)      hash, dedup lookup,   stats)
//!                     compress)
//! ```
//!
//! Each worker reads, hashes and compresses its own chunk: the chunk stays in that core's
//! cache from `pread` to zstd, which measured faster on small machines than handing buffers
//! between a reader pool and a separate compute pool. `--threads` raises the number of
//! workers (and so reads in flight) for slow devices.

use std::io::Read;
use std::time::Instant;

use chunker::format::{Attachment, BackupStats, Chunking, Disk, Entry, Manifest, ObjectId};
use chunker::{fixed_chunks, is_zero, ChunkId, Encoder, Extent, Frame, StreamChunker};
use crossbeam_channel::{bounded, Receiver, Sender};
use targets::{now_ms, random_bytes, ChunkStore, Put, Repository};

/// Where a backup's chunks and its snapshot go: a repository, or a sequential archive.
///
/// # Contract
///
/// - `has` and `put` behave as [`ChunkStore`]'s (idempotent puts; `has` is true for a chunk
///   put earlier in this backup, and for one the target already holds or, for an archive,
///   that an earlier archive of the chain holds). `has` is called from many threads, `put`
///   from one.
/// - `commit` makes every chunk durable, then publishes the manifest; it returns the
///   snapshot id. Nothing is visible before it returns `Ok`.
pub trait BackupTarget: Sync {
    /// Whether the chunk is already held.
    fn has(&self, id: &ChunkId) -> targets::Result<bool>;
    /// Stores a chunk.
    fn put(&self, id: &ChunkId, frame: Frame) -> targets::Result<Put>;
    /// Bytes the target buffers on its own (for the memory budget).
    fn buffered_bytes(&self) -> u64;
    /// Makes the chunks durable and publishes the snapshot.
    fn commit(&self, manifest: &Manifest) -> Result<ObjectId>;
    /// True when the target needs [`BackupTarget::place`] calls in source order (a stream
    /// that is restored in one pass); the pipeline then reorders what its workers finish.
    fn ordered(&self) -> bool {
        false
    }
    /// Says where a chunk goes: entry `index` of disk `disk` (in [`DiskJob`] order). Called
    /// for every entry, before the `put` of a new chunk; in source order when
    /// [`BackupTarget::ordered`].
    fn place(&self, disk: usize, index: u64, entry: &Entry) -> Result<()> {
        let _ = (disk, index, entry);
        Ok(())
    }
    /// How chunk ids are computed for this target (keyed when it is encrypted).
    fn id_key(&self) -> chunker::IdKey {
        chunker::IdKey::PLAIN
    }
}

impl BackupTarget for Repository {
    fn has(&self, id: &ChunkId) -> targets::Result<bool> {
        ChunkStore::has(self, id)
    }
    fn put(&self, id: &ChunkId, frame: Frame) -> targets::Result<Put> {
        ChunkStore::put(self, id, frame)
    }
    fn buffered_bytes(&self) -> u64 {
        self.options().buffered_bytes()
    }
    fn id_key(&self) -> chunker::IdKey {
        Repository::id_key(self)
    }
    fn commit(&self, manifest: &Manifest) -> Result<ObjectId> {
        // Every chunk durable first, then one more look at the interrupt flag: a signal that
        // arrived while the last pack was written must still commit nothing.
        self.flush()?;
        let Some(_committing) = crate::sys::CommitGuard::enter() else {
            return Err(Error::Interrupted);
        };
        Ok(self.commit_snapshot(manifest)?)
    }
}

use crate::pipeline::{channel_capacity, FirstError};
use crate::{Error, Progress, Result, Source};

/// Settings of one backup.
pub struct BackupOptions {
    /// Name recorded with the snapshot (defaults to the source path in the CLI).
    pub name: String,
    /// Fixed chunk size for images; average size for streams.
    pub chunk_size: u32,
    /// zstd level.
    pub level: i32,
    /// Worker threads.
    pub threads: usize,
    /// Memory budget in bytes for everything in flight.
    pub memory: u64,
    /// The snapshot this one is an incremental of, with its manifest. Its disks are matched
    /// by name (or the only disk to the only disk).
    pub parent: Option<(ObjectId, Manifest)>,
    /// Clean chunks to read and compare with the parent, to catch a change map that lies.
    pub verify_changes: usize,
    /// Small files stored with the snapshot.
    pub attachments: Vec<Attachment>,
}

/// Where one disk's bytes come from.
pub enum DiskInput<'a> {
    /// An image, block device or NBD export: fixed chunks, read positionally.
    Image(&'a dyn Source),
    /// A stream of unknown length: FastCDC.
    Stream(Box<dyn Read + Send + 'a>),
}

/// What changed on a disk since the parent snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ChangeMap {
    /// Unknown: read everything (with a parent, chunks are compared through their hashes).
    #[default]
    Unknown,
    /// Only these byte ranges (offset, length) may differ from the parent.
    Changed(Vec<(u64, u64)>),
}

/// One disk of a backup.
pub struct DiskJob<'a> {
    /// Name of the disk in the snapshot.
    pub name: String,
    /// The source as given, for the record.
    pub label: String,
    /// The bytes.
    pub input: DiskInput<'a>,
    /// What changed since the parent (images only).
    pub changes: ChangeMap,
    /// Token the next incremental starts from (bitmap name or `--change-id`).
    pub change_token: String,
}

/// What a committed backup did.
#[derive(Clone, Debug)]
pub struct BackupReport {
    /// The new snapshot.
    pub snapshot: ObjectId,
    /// Its manifest (entries included).
    pub manifest: Manifest,
    /// Chunks that were all zero (holes included).
    pub chunks_zero: u64,
    /// Chunks taken from the parent without reading them (a change map called them clean).
    pub chunks_unchanged: u64,
    /// Bytes in those chunks.
    pub bytes_unchanged: u64,
    /// Things the caller should know; the snapshot is committed but the run exits 3.
    pub warnings: Vec<String>,
    /// Wall time in seconds.
    pub seconds: f64,
}

struct Task {
    /// Position in the planner's order.
    seq: u64,
    disk: usize,
    index: u64,
    offset: u64,
    len: u32,
    /// The bytes, for streams; `None` means read them from the source.
    data: Option<Vec<u8>>,
}

enum Done {
    Zero {
        seq: u64,
        disk: usize,
        index: u64,
        len: u32,
        read: bool,
    },
    Data {
        seq: u64,
        disk: usize,
        index: u64,
        len: u32,
        id: ChunkId,
        frame: Option<Frame>,
    },
    /// Taken from the parent unread.
    Unchanged {
        seq: u64,
        disk: usize,
        index: u64,
        entry: Entry,
    },
}

impl Done {
    fn seq(&self) -> u64 {
        match self {
            Done::Zero { seq, .. } | Done::Data { seq, .. } | Done::Unchanged { seq, .. } => *seq,
        }
    }
}

#[derive(Default)]
struct DiskTally {
    entries: Vec<Option<Entry>>,
    stats: BackupStats,
}

impl DiskTally {
    fn set(&mut self, index: u64, entry: Entry) {
        let i = index as usize;
        if self.entries.len() <= i {
            self.entries.resize(i + 1, None);
        }
        self.entries[i] = Some(entry);
    }
}

#[derive(Default)]
struct Tally {
    disks: Vec<DiskTally>,
    chunks_zero: u64,
    chunks_unchanged: u64,
    bytes_unchanged: u64,
}

/// The plan for one image disk: its extents and, for an incremental, the parent's entries of
/// the chunks that need not be read.
struct ImagePlan {
    extents: Vec<Extent>,
    /// Per chunk: `Some(entry)` when the parent's entry is taken as is.
    unchanged: Vec<Option<Entry>>,
}

/// Backs up one image or block device into `repo` and commits a snapshot.
pub fn backup_image(
    repo: &dyn BackupTarget,
    source: &dyn Source,
    label: &str,
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<BackupReport> {
    let job = DiskJob {
        name: opts.name.clone(),
        label: label.to_string(),
        input: DiskInput::Image(source),
        changes: ChangeMap::Unknown,
        change_token: String::new(),
    };
    backup(repo, vec![job], opts, progress)
}

/// Backs up a stream of unknown length (stdin, a pipe), cut with FastCDC, and commits a
/// snapshot.
pub fn backup_stream(
    repo: &dyn BackupTarget,
    reader: impl Read + Send,
    label: &str,
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<BackupReport> {
    let job = DiskJob {
        name: opts.name.clone(),
        label: label.to_string(),
        input: DiskInput::Stream(Box::new(reader)),
        changes: ChangeMap::Unknown,
        change_token: String::new(),
    };
    backup(repo, vec![job], opts, progress)
}

/// Backs up the disks of `jobs` (names unique) into `repo` as one snapshot and commits it.
///
/// With a parent, an image disk whose size and chunk size match the parent's disk of the
/// same name is incremental: chunks the change map calls clean are taken from the parent
/// unread (when the repository still holds them); everything else is read, hashed and stored
/// only when new. A parent that does not match falls back to a full read with a warning.
pub fn backup(
    repo: &dyn BackupTarget,
    jobs: Vec<DiskJob<'_>>,
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<BackupReport> {
    let start = Instant::now();
    let mut warnings = Vec::new();
    let mut plans = Vec::with_capacity(jobs.len());
    let mut sources: Vec<Option<&dyn Source>> = Vec::with_capacity(jobs.len());
    let mut streams = Vec::new();
    let mut meta = Vec::with_capacity(jobs.len());
    let mut total = 0u64;
    let single = jobs.len() == 1;
    for (i, job) in jobs.into_iter().enumerate() {
        match job.input {
            DiskInput::Image(source) => {
                total += source.len();
                plans.push(Some(plan_image(
                    repo,
                    &job.name,
                    source,
                    &job.changes,
                    single,
                    opts,
                    &mut warnings,
                )?));
                sources.push(Some(source));
            }
            DiskInput::Stream(reader) => {
                plans.push(None);
                sources.push(None);
                streams.push((i, reader, job.label.clone()));
            }
        }
        meta.push((job.name, job.label, job.change_token));
    }
    progress.set_total(total);
    let chunk_size = opts.chunk_size;
    let planner_plans = &plans;
    let tally = run_pipeline(
        repo,
        opts,
        progress,
        &sources,
        meta.len(),
        |tasks, done, errors| {
            // Image disks are read side by side, a batch of chunks of each in turn, so that
            // the disks of a VM are read in parallel; streams follow, one after the other.
            let mut spans: Vec<_> = planner_plans
                .iter()
                .enumerate()
                .filter_map(|(disk, plan)| {
                    let plan = plan.as_ref()?;
                    let len = sources[disk].expect("image disks have a source").len();
                    let it = fixed_chunks(len, chunk_size, plan.extents.iter().copied());
                    Some((disk, plan, it.peekable()))
                })
                .collect();
            let mut seq = 0u64;
            while !spans.is_empty() {
                for (disk, plan, it) in spans.iter_mut() {
                    for span in it.by_ref().take(DISK_BATCH) {
                        if errors.should_stop() {
                            return Ok(());
                        }
                        let sent = plan_span(seq, *disk, plan, span, tasks, done, progress);
                        seq += 1;
                        if !sent {
                            return Ok(()); // a later stage stopped; its error is recorded
                        }
                    }
                }
                spans.retain_mut(|(_, _, it)| it.peek().is_some());
            }
            for (disk, reader, label) in streams {
                plan_stream(&mut seq, disk, reader, &label, chunk_size, tasks, errors)?;
            }
            Ok(())
        },
    )?;
    let chunkings = plans
        .iter()
        .map(|p| match p {
            Some(_) => Chunking::Fixed(chunk_size),
            None => Chunking::Cdc(chunk_size),
        })
        .collect();
    commit(repo, opts, meta, chunkings, tally, warnings, start)
}

/// Chunks of one image disk queued before the planner turns to the next disk.
const DISK_BATCH: usize = 16;

/// Queues one chunk of an image disk: unchanged (from the parent), to read, or a hole.
/// Returns false when a later stage has stopped.
fn plan_span(
    seq: u64,
    disk: usize,
    plan: &ImagePlan,
    span: chunker::ChunkSpan,
    tasks: &Sender<Task>,
    done: &Sender<Done>,
    progress: &Progress,
) -> bool {
    let unchanged = plan.unchanged.get(span.index as usize).copied().flatten();
    if let Some(entry) = unchanged {
        progress.add(u64::from(span.len));
        return done
            .send(Done::Unchanged {
                seq,
                disk,
                index: span.index,
                entry,
            })
            .is_ok();
    }
    if span.has_data {
        return tasks
            .send(Task {
                seq,
                disk,
                index: span.index,
                offset: span.offset,
                len: span.len,
                data: None,
            })
            .is_ok();
    }
    progress.add(u64::from(span.len));
    done.send(Done::Zero {
        seq,
        disk,
        index: span.index,
        len: span.len,
        read: false,
    })
    .is_ok()
}

/// Resolves the parent disk for `name` and turns the change map into per-chunk decisions.
#[allow(clippy::too_many_arguments)]
fn plan_image(
    repo: &dyn BackupTarget,
    name: &str,
    source: &dyn Source,
    changes: &ChangeMap,
    single: bool,
    opts: &BackupOptions,
    warnings: &mut Vec<String>,
) -> Result<ImagePlan> {
    let extents: Vec<Extent> = source.extents()?.collect::<Result<_>>()?;
    let mut plan = ImagePlan {
        extents,
        unchanged: Vec::new(),
    };
    let Some((parent_id, parent)) = &opts.parent else {
        return Ok(plan);
    };
    let short = &parent_id.to_hex()[..12];
    let disk = parent
        .disk(name)
        .or_else(|| (single && parent.disks.len() == 1).then(|| &parent.disks[0]));
    let Some(disk) = disk else {
        warnings.push(format!(
            "parent {short} has no disk {name}; read it in full"
        ));
        return Ok(plan);
    };
    if disk.chunking != Chunking::Fixed(opts.chunk_size) {
        warnings.push(format!(
            "parent {short} of disk {name} was cut into other chunks; read it in full"
        ));
        return Ok(plan);
    }
    if disk.source_len != source.len() {
        warnings.push(format!(
            "disk {name} is {} bytes, its parent {short} was {}; the disk changed size, so it was read in full",
            source.len(),
            disk.source_len
        ));
        return Ok(plan);
    }
    let ChangeMap::Changed(ranges) = changes else {
        return Ok(plan); // compare mode: read everything, store only new chunks
    };
    let cs = u64::from(opts.chunk_size);
    let count = disk.entries.len();
    let mut dirty = vec![false; count];
    for &(offset, len) in ranges {
        if len == 0 {
            continue;
        }
        let first = (offset / cs) as usize;
        let last = (offset.saturating_add(len).min(source.len()).div_ceil(cs) as usize).min(count);
        for d in dirty.iter_mut().take(last).skip(first) {
            *d = true;
        }
    }
    // A clean chunk is taken from the parent only while the repository still holds it.
    let mut missing = 0u64;
    plan.unchanged = disk
        .entries
        .iter()
        .zip(&dirty)
        .map(|(e, &dirty)| {
            if dirty {
                return None;
            }
            match e.id {
                Some(id) if !repo.has(&id).unwrap_or(false) => {
                    missing += 1;
                    None
                }
                _ => Some(*e),
            }
        })
        .collect();
    if missing > 0 {
        warnings.push(format!(
            "{missing} chunks of parent {short} are missing from the repository; disk {name} read them again"
        ));
    }
    if opts.verify_changes > 0 {
        if let Some(offset) = check_clean(
            source,
            &plan.unchanged,
            cs,
            opts.verify_changes,
            repo.id_key(),
        )? {
            warnings.push(format!(
                "the change map of disk {name} called the chunk at offset {offset} clean but it differs from parent {short}; the whole disk was compared instead"
            ));
            plan.unchanged.clear();
        }
    }
    Ok(plan)
}

/// Reads up to `n` randomly chosen chunks the change map calls clean and compares them with
/// the parent; returns the offset of the first that differs.
fn check_clean(
    source: &dyn Source,
    unchanged: &[Option<Entry>],
    chunk_size: u64,
    n: usize,
    id_key: chunker::IdKey,
) -> Result<Option<u64>> {
    let clean: Vec<usize> = (0..unchanged.len())
        .filter(|&i| unchanged[i].is_some())
        .collect();
    let mut seed = u64::from_le_bytes(random_bytes::<8>()) | 1;
    let mut picked = std::collections::BTreeSet::new();
    while picked.len() < n.min(clean.len()) {
        // xorshift64: a uniform enough pick, no dependency.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        picked.insert(clean[(seed % clean.len() as u64) as usize]);
    }
    let mut buf = Vec::new();
    for i in picked {
        let entry = unchanged[i].expect("picked from the clean chunks");
        let offset = i as u64 * chunk_size;
        buf.resize(entry.len as usize, 0);
        source.read_at(offset, &mut buf)?;
        let same = match entry.id {
            None => is_zero(&buf),
            Some(id) => id_key.id(&buf) == id,
        };
        if !same {
            return Ok(Some(offset));
        }
    }
    Ok(None)
}

/// Cuts a stream disk with FastCDC and queues its chunks.
fn plan_stream(
    seq: &mut u64,
    disk: usize,
    reader: Box<dyn Read + Send + '_>,
    label: &str,
    chunk_size: u32,
    tasks: &Sender<Task>,
    errors: &FirstError,
) -> Result<()> {
    let mut total = 0u64;
    for (index, chunk) in StreamChunker::new(reader, chunk_size).enumerate() {
        if errors.should_stop() {
            return Ok(());
        }
        let data = chunk.map_err(|e| match e {
            chunker::Error::Read(source) => Error::Source {
                path: label.to_string(),
                source,
            },
            e => e.into(),
        })?;
        let len = data.len() as u32;
        let task = Task {
            seq: *seq,
            disk,
            index: index as u64,
            offset: total,
            len,
            data: Some(data),
        };
        total += u64::from(len);
        *seq += 1;
        if tasks.send(task).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Runs planner, workers and writer; returns the tally once every chunk is stored.
fn run_pipeline<P>(
    repo: &dyn BackupTarget,
    opts: &BackupOptions,
    progress: &Progress,
    sources: &[Option<&dyn Source>],
    disk_count: usize,
    planner: P,
) -> Result<Tally>
where
    P: FnOnce(&Sender<Task>, &Sender<Done>, &FirstError) -> Result<()> + Send,
{
    let chunk = u64::from(opts.chunk_size);
    let threads = opts.threads.max(1);
    // Packs (one filling, one per writer) plus a read and a compressed buffer per worker are
    // fixed; the channels get what is left.
    let fixed = repo.buffered_bytes() + 2 * threads as u64 * chunk;
    let cap = channel_capacity(opts.memory, fixed, chunk);
    let (task_tx, task_rx) = bounded::<Task>(cap);
    let (done_tx, done_rx) = bounded::<Done>(cap);
    let errors = FirstError::default();
    let mut tally = Tally::default();
    tally.disks.resize_with(disk_count, DiskTally::default);
    std::thread::scope(|s| {
        let errors = &errors;
        for _ in 0..threads {
            let (rx, tx) = (task_rx.clone(), done_tx.clone());
            s.spawn(move || {
                errors.run(|| worker(repo, sources, opts.level, &rx, &tx, errors, progress))
            });
        }
        drop(task_rx);
        let planner_done = done_tx.clone();
        drop(done_tx);
        s.spawn(move || {
            errors.run(|| planner(&task_tx, &planner_done, errors));
            // Dropping task_tx and planner_done here ends the workers, then the writer.
        });
        errors.run(|| writer(repo, &done_rx, &mut tally, errors));
        drop(done_rx);
    });
    errors.into_result()?;
    Ok(tally)
}

fn worker(
    store: &dyn BackupTarget,
    sources: &[Option<&dyn Source>],
    level: i32,
    tasks: &Receiver<Task>,
    done: &Sender<Done>,
    errors: &FirstError,
    progress: &Progress,
) -> Result<()> {
    let mut encoder = Encoder::new(level);
    let id_key = store.id_key();
    let mut buf = Vec::new();
    for task in tasks {
        if errors.should_stop() {
            return Ok(());
        }
        let source = sources[task.disk];
        let data: &[u8] = match &task.data {
            Some(d) => d,
            None => {
                let source = source.expect("image tasks have a source");
                match source.slice_at(task.offset, task.len as usize) {
                    Some(mapped) => mapped,
                    None => {
                        buf.resize(task.len as usize, 0);
                        source.read_at(task.offset, &mut buf)?;
                        &buf
                    }
                }
            }
        };
        progress.add(u64::from(task.len));
        let (seq, disk, index, len) = (task.seq, task.disk, task.index, task.len);
        let result = if is_zero(data) {
            Done::Zero {
                seq,
                disk,
                index,
                len,
                read: true,
            }
        } else {
            let id = id_key.id(data);
            // Look the hash up before compressing: a known chunk costs no zstd time.
            let frame = if store.has(&id)? {
                None
            } else {
                Some(encoder.encode(data))
            };
            Done::Data {
                seq,
                disk,
                index,
                len,
                id,
                frame,
            }
        };
        if task.data.is_none() {
            if let Some(source) = source {
                source.release(task.offset, task.len as usize);
            }
        }
        if done.send(result).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

fn writer(
    store: &dyn BackupTarget,
    done: &Receiver<Done>,
    tally: &mut Tally,
    errors: &FirstError,
) -> Result<()> {
    // An ordered target gets everything in the planner's order: what workers finish early
    // waits here (at most the chunks in flight, bounded by the channels).
    let ordered = store.ordered();
    let mut waiting = std::collections::BTreeMap::new();
    let mut next = 0u64;
    for d in done {
        if errors.should_stop() {
            return Ok(());
        }
        if !ordered {
            record(store, d, tally)?;
            continue;
        }
        waiting.insert(d.seq(), d);
        while let Some(d) = waiting.remove(&next) {
            record(store, d, tally)?;
            next += 1;
        }
    }
    Ok(())
}

/// Places one finished chunk, stores it when new, and counts it.
fn record(store: &dyn BackupTarget, d: Done, tally: &mut Tally) -> Result<()> {
    match d {
        Done::Zero {
            disk,
            index,
            len,
            read,
            ..
        } => {
            let entry = Entry { len, id: None };
            store.place(disk, index, &entry)?;
            let t = &mut tally.disks[disk];
            if read {
                t.stats.bytes_read += u64::from(len);
            }
            t.stats.bytes_zero += u64::from(len);
            tally.chunks_zero += 1;
            t.set(index, entry);
        }
        Done::Data {
            disk,
            index,
            len,
            id,
            frame,
            ..
        } => {
            let entry = Entry { len, id: Some(id) };
            store.place(disk, index, &entry)?;
            let stored = frame.as_ref().map(|f| f.bytes.len() as u64);
            let put = match frame {
                Some(f) => store.put(&id, f)?,
                None => Put::AlreadyPresent,
            };
            let t = &mut tally.disks[disk];
            if put == Put::Stored {
                t.stats.chunks_new += 1;
                t.stats.bytes_new += u64::from(len);
                t.stats.bytes_stored += stored.unwrap_or(0);
            } else {
                t.stats.chunks_reused += 1;
            }
            t.stats.bytes_read += u64::from(len);
            t.set(index, entry);
        }
        Done::Unchanged {
            disk, index, entry, ..
        } => {
            store.place(disk, index, &entry)?;
            let t = &mut tally.disks[disk];
            if entry.id.is_some() {
                t.stats.chunks_reused += 1;
            } else {
                t.stats.bytes_zero += u64::from(entry.len);
                tally.chunks_zero += 1;
            }
            tally.chunks_unchanged += 1;
            tally.bytes_unchanged += u64::from(entry.len);
            t.set(index, entry);
        }
    }
    Ok(())
}

fn commit(
    repo: &dyn BackupTarget,
    opts: &BackupOptions,
    meta: Vec<(String, String, String)>,
    chunkings: Vec<Chunking>,
    tally: Tally,
    warnings: Vec<String>,
    start: Instant,
) -> Result<BackupReport> {
    let duration_ms = start.elapsed().as_millis() as u64;
    let mut total = BackupStats {
        duration_ms,
        ..Default::default()
    };
    let mut disks = Vec::with_capacity(meta.len());
    for (((name, source, change_token), chunking), t) in
        meta.into_iter().zip(chunkings).zip(tally.disks)
    {
        let entries: Vec<Entry> = t
            .entries
            .into_iter()
            .map(|e| e.expect("a pipeline that returned Ok tallied every chunk"))
            .collect();
        let mut stats = t.stats;
        stats.duration_ms = duration_ms;
        total.bytes_read += stats.bytes_read;
        total.bytes_new += stats.bytes_new;
        total.bytes_stored += stats.bytes_stored;
        total.bytes_zero += stats.bytes_zero;
        total.chunks_new += stats.chunks_new;
        total.chunks_reused += stats.chunks_reused;
        disks.push(Disk {
            name,
            source,
            chunking,
            source_len: entries.iter().map(|e| u64::from(e.len)).sum(),
            change_token,
            stats,
            entries,
        });
    }
    let manifest = Manifest {
        created_ms: now_ms(),
        nonce: random_bytes(),
        parent: opts.parent.as_ref().map(|(id, _)| *id),
        stats: total,
        name: opts.name.clone(),
        disks,
        attachments: opts.attachments.clone(),
    };
    let snapshot = repo.commit(&manifest)?;
    Ok(BackupReport {
        snapshot,
        manifest,
        chunks_zero: tally.chunks_zero,
        chunks_unchanged: tally.chunks_unchanged,
        bytes_unchanged: tally.bytes_unchanged,
        warnings,
        seconds: start.elapsed().as_secs_f64(),
    })
}

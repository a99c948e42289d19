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

use chunker::format::{BackupStats, Chunking, Entry, Manifest, ObjectId};
use chunker::{fixed_chunks, is_zero, ChunkId, Encoder, Extent, Frame, StreamChunker};
use crossbeam_channel::{bounded, Receiver, Sender};
use targets::{now_ms, random_bytes, ChunkStore, Put, Repository};

use crate::pipeline::{channel_capacity, FirstError};
use crate::{Error, Progress, Result, Source};

/// Settings of one backup.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Name recorded with the snapshot (defaults to the source path in the CLI).
    pub name: String,
    /// The source as given, for the record.
    pub source_label: String,
    /// Fixed chunk size for images; average size for streams.
    pub chunk_size: u32,
    /// zstd level.
    pub level: i32,
    /// Worker threads.
    pub threads: usize,
    /// Memory budget in bytes for everything in flight.
    pub memory: u64,
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
    /// Wall time in seconds.
    pub seconds: f64,
}

struct Task {
    index: u64,
    offset: u64,
    len: u32,
    /// The bytes, for streams; `None` means read them from the source.
    data: Option<Vec<u8>>,
}

enum Done {
    Zero {
        index: u64,
        len: u32,
        read: bool,
    },
    Data {
        index: u64,
        len: u32,
        id: ChunkId,
        frame: Option<Frame>,
    },
}

#[derive(Default)]
struct Tally {
    entries: Vec<Option<Entry>>,
    stats: BackupStats,
    chunks_zero: u64,
}

impl Tally {
    fn set(&mut self, index: u64, entry: Entry) {
        let i = index as usize;
        if self.entries.len() <= i {
            self.entries.resize(i + 1, None);
        }
        self.entries[i] = Some(entry);
    }
}

/// Backs up an image or block device into `repo` and commits a snapshot.
pub fn backup_image(
    repo: &Repository,
    source: &dyn Source,
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<BackupReport> {
    let start = Instant::now();
    let len = source.len();
    progress.set_total(len);
    let extents: Vec<Extent> = source.extents()?.collect::<Result<_>>()?;
    let chunk_size = opts.chunk_size;
    let tally = run_pipeline(repo, opts, progress, Some(source), |tasks, done, errors| {
        for span in fixed_chunks(len, chunk_size, extents) {
            if errors.should_stop() {
                return Ok(());
            }
            let sent = if span.has_data {
                tasks
                    .send(Task {
                        index: span.index,
                        offset: span.offset,
                        len: span.len,
                        data: None,
                    })
                    .is_ok()
            } else {
                progress.add(u64::from(span.len));
                done.send(Done::Zero {
                    index: span.index,
                    len: span.len,
                    read: false,
                })
                .is_ok()
            };
            if !sent {
                return Ok(()); // a later stage stopped; its error is recorded
            }
        }
        Ok(())
    })?;
    commit(repo, opts, Chunking::Fixed(chunk_size), len, tally, start)
}

/// Backs up a stream of unknown length (stdin, a pipe), cut with FastCDC, and commits a
/// snapshot.
pub fn backup_stream(
    repo: &Repository,
    reader: impl Read + Send,
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<BackupReport> {
    let start = Instant::now();
    let label = opts.source_label.clone();
    let mut total = 0u64;
    let tally = run_pipeline(repo, opts, progress, None, |tasks, _done, errors| {
        for (index, chunk) in StreamChunker::new(reader, opts.chunk_size).enumerate() {
            if errors.should_stop() {
                return Ok(());
            }
            let data = chunk.map_err(|e| match e {
                chunker::Error::Read(source) => Error::Source {
                    path: label.clone(),
                    source,
                },
                e => e.into(),
            })?;
            let len = data.len() as u32;
            let task = Task {
                index: index as u64,
                offset: total,
                len,
                data: Some(data),
            };
            total += u64::from(len);
            if tasks.send(task).is_err() {
                return Ok(());
            }
        }
        Ok(())
    })?;
    let len = tally
        .entries
        .iter()
        .flatten()
        .map(|e| u64::from(e.len))
        .sum();
    commit(
        repo,
        opts,
        Chunking::Cdc(opts.chunk_size),
        len,
        tally,
        start,
    )
}

/// Runs planner, workers and writer; returns the tally once every chunk is stored.
fn run_pipeline<P>(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &Progress,
    source: Option<&dyn Source>,
    planner: P,
) -> Result<Tally>
where
    P: FnOnce(&Sender<Task>, &Sender<Done>, &FirstError) -> Result<()> + Send,
{
    let chunk = u64::from(opts.chunk_size);
    let threads = opts.threads.max(1);
    // Packs (one filling, one per writer) plus a read and a compressed buffer per worker are
    // fixed; the channels get what is left.
    let fixed = repo.options().buffered_bytes() + 2 * threads as u64 * chunk;
    let cap = channel_capacity(opts.memory, fixed, chunk);
    let (task_tx, task_rx) = bounded::<Task>(cap);
    let (done_tx, done_rx) = bounded::<Done>(cap);
    let errors = FirstError::default();
    let mut tally = Tally::default();
    std::thread::scope(|s| {
        let errors = &errors;
        for _ in 0..threads {
            let (rx, tx) = (task_rx.clone(), done_tx.clone());
            s.spawn(move || {
                errors.run(|| worker(repo, source, opts.level, &rx, &tx, errors, progress))
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
    store: &dyn ChunkStore,
    source: Option<&dyn Source>,
    level: i32,
    tasks: &Receiver<Task>,
    done: &Sender<Done>,
    errors: &FirstError,
    progress: &Progress,
) -> Result<()> {
    let mut encoder = Encoder::new(level);
    let mut buf = Vec::new();
    for task in tasks {
        if errors.should_stop() {
            return Ok(());
        }
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
        let (index, len) = (task.index, task.len);
        let result = if is_zero(data) {
            Done::Zero {
                index,
                len,
                read: true,
            }
        } else {
            let id = ChunkId::of(data);
            // Look the hash up before compressing: a known chunk costs no zstd time.
            let frame = if store.has(&id)? {
                None
            } else {
                Some(encoder.encode(data))
            };
            Done::Data {
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
    store: &dyn ChunkStore,
    done: &Receiver<Done>,
    tally: &mut Tally,
    errors: &FirstError,
) -> Result<()> {
    for d in done {
        if errors.should_stop() {
            return Ok(());
        }
        match d {
            Done::Zero { index, len, read } => {
                if read {
                    tally.stats.bytes_read += u64::from(len);
                }
                tally.stats.bytes_zero += u64::from(len);
                tally.chunks_zero += 1;
                tally.set(index, Entry { len, id: None });
            }
            Done::Data {
                index,
                len,
                id,
                frame,
            } => {
                let stored = frame.as_ref().map(|f| f.bytes.len() as u64);
                let put = match frame {
                    Some(f) => store.put(&id, f)?,
                    None => Put::AlreadyPresent,
                };
                if put == Put::Stored {
                    tally.stats.chunks_new += 1;
                    tally.stats.bytes_new += u64::from(len);
                    tally.stats.bytes_stored += stored.unwrap_or(0);
                } else {
                    tally.stats.chunks_reused += 1;
                }
                tally.stats.bytes_read += u64::from(len);
                tally.set(index, Entry { len, id: Some(id) });
            }
        }
    }
    Ok(())
}

fn commit(
    repo: &Repository,
    opts: &BackupOptions,
    chunking: Chunking,
    len: u64,
    tally: Tally,
    start: Instant,
) -> Result<BackupReport> {
    let Tally {
        entries,
        mut stats,
        chunks_zero,
    } = tally;
    let entries: Vec<Entry> = entries
        .into_iter()
        .map(|e| e.expect("a pipeline that returned Ok tallied every chunk"))
        .collect();
    // Make every chunk durable first, then look at the interrupt flag once more: a signal
    // that arrived while the last pack was being written must still commit nothing.
    repo.flush()?;
    if crate::sys::interrupted() {
        return Err(Error::Interrupted);
    }
    stats.duration_ms = start.elapsed().as_millis() as u64;
    let manifest = Manifest {
        chunking,
        source_len: len,
        created_ms: now_ms(),
        nonce: random_bytes(),
        parent: None,
        stats,
        name: opts.name.clone(),
        source: opts.source_label.clone(),
        entries,
    };
    let snapshot = repo.commit_snapshot(&manifest)?;
    Ok(BackupReport {
        snapshot,
        manifest,
        chunks_zero,
        seconds: start.elapsed().as_secs_f64(),
    })
}

//! Delta restore: an existing destination read back, hashed, and only what differs written.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::time::Instant;

use chunker::format::Disk;
use chunker::Decoder;
use targets::ChunkStore;

use super::{RestoreOptions, RestoreReport, ZEROS};
use crate::pipeline::FirstError;
use crate::{Error, Progress, Result, Source};

/// A destination that is read back and rewritten in place by a delta restore.
///
/// # Contract
///
/// - `source()` reads the destination as it is now (with its allocation map: regions it
///   reports `Zero` read as zeros and are not read); it is called from many threads at once.
/// - `write_at` and `write_zeroes` write in place; `write_zeroes` may punch a hole instead.
/// - `sync` makes every write durable.
pub trait DeltaTarget: Sync {
    /// The destination's current contents.
    fn source(&self) -> &dyn Source;
    /// Writes `data` at `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()>;
    /// Makes `offset..offset + len` read as zeros.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()>;
    /// Makes the writes durable.
    fn sync(&self) -> Result<()>;
    /// The destination as the user named it, for messages.
    fn label(&self) -> String {
        "(delta target)".into()
    }
}

/// An existing image file or block device, rolled back in place.
pub struct FileDelta {
    read: crate::FileSource,
    file: File,
    label: String,
    punch: bool,
}

impl FileDelta {
    /// Opens an existing file or block device for a delta restore of `len` bytes. A file of
    /// another size is cut or extended to `len` first; a device must hold at least `len`.
    pub fn open(path: &std::path::Path, len: u64) -> Result<Self> {
        let label = path.display().to_string();
        let err = |e| Error::destination(&label, e);
        let meta = std::fs::metadata(path).map_err(|e| Error::Destination {
            path: label.clone(),
            source: std::io::Error::new(
                e.kind(),
                format!("{e}; a delta restore rolls back an existing image or device"),
            ),
        })?;
        let ft = meta.file_type();
        if !(ft.is_file() || ft.is_block_device()) {
            return Err(Error::Destination {
                path: label,
                source: std::io::Error::other(
                    "a delta restore needs a regular file or a block device",
                ),
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(err)?;
        if ft.is_file() {
            if meta.len() != len {
                file.set_len(len).map_err(err)?;
            }
        } else {
            let have = (&file).seek(SeekFrom::End(0)).map_err(err)?;
            if have < len {
                return Err(Error::DestinationTooSmall {
                    path: label,
                    have,
                    need: len,
                });
            }
        }
        let read = crate::FileSource::open(&label)?;
        Ok(FileDelta {
            read,
            file,
            label,
            punch: ft.is_file(),
        })
    }
}

impl DeltaTarget for FileDelta {
    fn source(&self) -> &dyn Source {
        &self.read
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.file
            .write_all_at(data, offset)
            .map_err(|e| Error::destination(&self.label, e))
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        if self.punch && crate::sys::punch_hole(&self.file, offset, len).is_ok() {
            return Ok(());
        }
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROS.len() as u64) as usize;
            self.write_at(offset + done, &ZEROS[..n])?;
            done += n as u64;
        }
        Ok(())
    }
    fn sync(&self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::destination(&self.label, e))
    }
    fn label(&self) -> String {
        self.label.clone()
    }
}

/// Granularity of the comparison inside a chunk that differs: a filesystem block.
pub(super) const DELTA_BLOCK: usize = 4096;

/// Writes the blocks of `want` that differ from `current` (`None`: a hole, all zeros), runs of
/// neighbours as one write, so a chunk with a few changed blocks costs a few blocks of I/O.
/// Returns the bytes written.
pub(super) fn write_differences(
    target: &dyn DeltaTarget,
    offset: u64,
    current: Option<&[u8]>,
    want: &[u8],
) -> Result<u64> {
    let differs = |i: usize| {
        let end = (i + DELTA_BLOCK).min(want.len());
        match current {
            Some(c) => c[i..end] != want[i..end],
            None => !chunker::is_zero(&want[i..end]),
        }
    };
    let mut written = 0;
    let mut run: Option<usize> = None;
    for i in (0..want.len()).step_by(DELTA_BLOCK).chain([want.len()]) {
        let d = i < want.len() && differs(i);
        match (d, run) {
            (true, None) => run = Some(i),
            (false, Some(start)) => {
                target.write_at(offset + start as u64, &want[start..i])?;
                written += (i - start) as u64;
                run = None;
            }
            _ => {}
        }
    }
    Ok(written)
}

/// Rolls `target` back to `disk`: reads and hashes the destination chunk by chunk in
/// parallel, and writes only the chunks that differ (each checked against its id first).
/// Regions that are holes on both sides are neither read nor written. With `changed` (byte
/// ranges the destination may have changed in since it held this snapshot: a dirty bitmap or
/// changed-extent list of the destination), chunks outside them are not even read.
///
/// Writes go in place: a delta restore that fails leaves the destination partly rolled back;
/// run it again to finish.
pub fn restore_delta(
    store: &dyn ChunkStore,
    disk: &Disk,
    target: &dyn DeltaTarget,
    changed: Option<&[(u64, u64)]>,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreReport> {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
    let start = Instant::now();
    let chunker::format::Chunking::Fixed(chunk_size) = disk.chunking else {
        return Err(Error::Incremental(
            "a delta restore needs a snapshot of an image or device (fixed chunks); this one came from a stream, restore it in full".into(),
        ));
    };
    let source = target.source();
    if source.len() < disk.source_len {
        return Err(Error::DestinationTooSmall {
            path: target.label(),
            have: source.len(),
            need: disk.source_len,
        });
    }
    progress.set_total(disk.source_len);
    let extents: Vec<chunker::Extent> = source.extents()?.collect::<Result<_>>()?;
    let spans: Vec<chunker::ChunkSpan> =
        chunker::fixed_chunks(disk.source_len, chunk_size, extents).collect();
    debug_assert_eq!(spans.len(), disk.entries.len());
    let wanted: Option<Vec<bool>> = changed.map(|ranges| {
        let mut w = vec![false; spans.len()];
        let cs = u64::from(chunk_size);
        for &(off, len) in ranges {
            let end = off.saturating_add(len).min(disk.source_len).div_ceil(cs) as usize;
            for x in w.iter_mut().take(end).skip((off / cs) as usize) {
                *x = true;
            }
        }
        w
    });
    let next = AtomicUsize::new(0);
    let (compared, written, fetched) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let errors = FirstError::default();
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            s.spawn(|| {
                errors.run(|| {
                    let mut decoder = Decoder::with_id_key(store.id_key());
                    let mut buf = Vec::new();
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Relaxed);
                        if i >= spans.len() || errors.should_stop() {
                            return Ok(());
                        }
                        let (span, entry) = (spans[i], disk.entries[i]);
                        let len = u64::from(span.len);
                        if wanted.as_ref().is_some_and(|w| !w[i]) {
                            progress.add(len);
                            continue;
                        }
                        // What the destination holds now: a hole reads as zeros unread.
                        // What the destination holds now; `None`: a hole, zeros unread.
                        let current: Option<&[u8]> = if span.has_data {
                            compared.fetch_add(len, Relaxed);
                            Some(match source.slice_at(span.offset, span.len as usize) {
                                Some(m) => m,
                                None => {
                                    buf.resize(span.len as usize, 0);
                                    source.read_at(span.offset, &mut buf)?;
                                    &buf
                                }
                            })
                        } else {
                            None
                        };
                        let current_zero = current.is_none_or(chunker::is_zero);
                        match entry.id {
                            None if current_zero => {}
                            None => {
                                target.write_zeroes(span.offset, len)?;
                                written.fetch_add(len, Relaxed);
                            }
                            Some(id)
                                if !current_zero
                                    && current.map(|c| store.id_key().id(c)) == Some(id) => {}
                            Some(id) => {
                                let frame = store.get(&id)?;
                                decoder.decode_into(&frame, &id, &mut out)?;
                                let n = write_differences(target, span.offset, current, &out)?;
                                written.fetch_add(n, Relaxed);
                                fetched.fetch_add(1, Relaxed);
                            }
                        }
                        if current.is_some() {
                            source.release(span.offset, span.len as usize);
                        }
                        progress.add(len);
                    }
                })
            });
        }
    });
    errors.into_result()?;
    if opts.sync {
        target.sync()?;
    }
    Ok(RestoreReport {
        bytes_total: disk.source_len,
        bytes_written: written.into_inner(),
        chunks_fetched: fetched.into_inner(),
        bytes_compared: compared.into_inner(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

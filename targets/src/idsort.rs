//! Sets of chunk ids larger than memory (issue 17): an external sort. Ids are gathered in runs
//! of bounded size; each run is sorted, deduplicated and spilled to an unlinked temporary
//! file; the runs are then merged into one sorted, deduplicated file, which is read as a
//! stream (in id order) or searched for one id through a sparse table of every
//! [`FENCE`]-th id kept in memory.
//!
//! Memory: one run ([`RUN_IDS`] ids, 32 MiB) while gathering, a read buffer per run while
//! merging, and 1/[`FENCE`] of the ids (about 0.13 bytes an id) afterwards.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use chunker::format::ObjectId;
use chunker::ChunkId;

use crate::layout::random_bytes;
use crate::{Error, Result};

/// Ids in one run (32 bytes each).
pub(crate) const RUN_IDS: usize = 1 << 20;

/// One id in this many is kept in memory to search the merged file.
const FENCE: usize = 256;

/// Gathers chunk ids, in any order and with repeats.
pub(crate) struct IdSorter {
    dir: PathBuf,
    run: Vec<ChunkId>,
    max: usize,
    runs: Vec<File>,
}

impl IdSorter {
    /// A sorter spilling runs of `max` ids into unlinked files in the system's temporary
    /// directory.
    pub(crate) fn new(max: usize) -> Self {
        IdSorter {
            dir: std::env::temp_dir(),
            run: Vec::new(),
            max: max.max(1),
            runs: Vec::new(),
        }
    }

    /// Adds one id.
    pub(crate) fn push(&mut self, id: ChunkId) -> Result<()> {
        self.run.push(id);
        if self.run.len() >= self.max {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        self.run.sort_unstable();
        self.run.dedup();
        let file = unlinked_file(&self.dir)?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        for id in self.run.drain(..) {
            out.write_all(id.as_bytes())
                .map_err(|e| Error::io("write", &self.dir, e))?;
        }
        let mut file = out
            .into_inner()
            .map_err(|e| Error::io("write", &self.dir, e.into_error()))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("seek", &self.dir, e))?;
        self.runs.push(file);
        Ok(())
    }

    /// The sorted, deduplicated set of the ids pushed.
    pub(crate) fn finish(mut self) -> Result<SortedIds> {
        if self.runs.is_empty() {
            self.run.sort_unstable();
            self.run.dedup();
            return Ok(SortedIds {
                file: None,
                len: self.run.len() as u64,
                fences: self.run,
            });
        }
        if !self.run.is_empty() {
            self.spill()?;
        }
        let dir = self.dir.clone();
        let io = |what: &'static str| {
            let dir = dir.clone();
            move |e: std::io::Error| Error::io(what, dir, e)
        };
        let mut readers: Vec<_> = self
            .runs
            .into_iter()
            .map(|f| BufReader::with_capacity(1 << 16, f))
            .collect();
        let mut heap = BinaryHeap::new();
        for (n, r) in readers.iter_mut().enumerate() {
            if let Some(id) = read_id(r).map_err(io("read"))? {
                heap.push(Reverse((id, n)));
            }
        }
        let file = unlinked_file(&self.dir)?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        let (mut len, mut last, mut fences) = (0u64, None, Vec::new());
        while let Some(Reverse((id, n))) = heap.pop() {
            if let Some(next) = read_id(&mut readers[n]).map_err(io("read"))? {
                heap.push(Reverse((next, n)));
            }
            if last == Some(id) {
                continue;
            }
            if len % FENCE as u64 == 0 {
                fences.push(id);
            }
            out.write_all(id.as_bytes()).map_err(io("write"))?;
            last = Some(id);
            len += 1;
        }
        let file = out.into_inner().map_err(|e| io("write")(e.into_error()))?;
        Ok(SortedIds {
            file: Some(file),
            len,
            fences,
        })
    }
}

/// A new file in `dir`, unlinked at once: the open file is all there is, gone when closed.
fn unlinked_file(dir: &Path) -> Result<File> {
    let path = dir.join(format!(".ids-{}", ObjectId(random_bytes::<32>()).to_hex()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io("create", &path, e))?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

fn read_id(r: &mut impl Read) -> std::io::Result<Option<ChunkId>> {
    let mut buf = [0u8; 32];
    match r.read_exact(&mut buf) {
        Ok(()) => Ok(Some(ChunkId::from_bytes(buf))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// A sorted set of distinct chunk ids: in memory when it fit in one run, else in an unlinked
/// file with every [`FENCE`]-th id in memory.
pub(crate) struct SortedIds {
    file: Option<File>,
    len: u64,
    /// Every id (no file), or every [`FENCE`]-th one.
    fences: Vec<ChunkId>,
}

impl SortedIds {
    /// Distinct ids.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    fn io(e: std::io::Error) -> Error {
        Error::io("read", "sorted chunk ids", e)
    }

    /// Whether `id` is in the set: at most one read of [`FENCE`] ids.
    pub(crate) fn contains(&self, id: &ChunkId) -> Result<bool> {
        let Some(file) = &self.file else {
            return Ok(self.fences.binary_search(id).is_ok());
        };
        let block = match self.fences.binary_search(id) {
            Ok(_) => return Ok(true),
            Err(0) => return Ok(false),
            Err(i) => i - 1,
        };
        let start = (block * FENCE) as u64;
        let end = (start + FENCE as u64).min(self.len);
        let mut buf = vec![0u8; (end - start) as usize * 32];
        file.read_exact_at(&mut buf, start * 32).map_err(Self::io)?;
        Ok(buf.chunks_exact(32).any(|b| b == &id.as_bytes()[..]))
    }

    /// The ids in order.
    pub(crate) fn iter(&self) -> SortedIdsIter<'_> {
        SortedIdsIter {
            ids: self,
            next: 0,
            block: Vec::new(),
            at: 0,
        }
    }
}

/// Streams a [`SortedIds`] in order.
pub(crate) struct SortedIdsIter<'a> {
    ids: &'a SortedIds,
    next: u64,
    block: Vec<u8>,
    at: usize,
}

impl Iterator for SortedIdsIter<'_> {
    type Item = Result<ChunkId>;

    fn next(&mut self) -> Option<Self::Item> {
        let Some(file) = &self.ids.file else {
            let id = self.ids.fences.get(self.next as usize).copied();
            self.next += 1;
            return id.map(Ok);
        };
        if self.at == self.block.len() {
            if self.next == self.ids.len {
                return None;
            }
            let end = (self.next + 4096).min(self.ids.len);
            self.block = vec![0; (end - self.next) as usize * 32];
            if let Err(e) = file.read_exact_at(&mut self.block, self.next * 32) {
                self.next = self.ids.len;
                self.block.clear();
                self.at = 0;
                return Some(Err(SortedIds::io(e)));
            }
            self.next = end;
            self.at = 0;
        }
        let id = ChunkId::from_bytes(
            self.block[self.at..self.at + 32]
                .try_into()
                .expect("32 bytes"),
        );
        self.at += 32;
        Some(Ok(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_and_deduplicates_across_runs() {
        for max in [1000, 7, 1] {
            let mut sorter = IdSorter::new(max);
            for i in (0..500u32).chain(100..300) {
                sorter.push(ChunkId::of(&i.to_le_bytes())).unwrap();
            }
            let ids = sorter.finish().unwrap();
            assert_eq!(ids.len(), 500);
            let got: Vec<ChunkId> = ids.iter().map(Result::unwrap).collect();
            let mut want: Vec<ChunkId> =
                (0..500u32).map(|i| ChunkId::of(&i.to_le_bytes())).collect();
            want.sort();
            assert_eq!(got, want);
            for i in 0..1000u32 {
                let id = ChunkId::of(&i.to_le_bytes());
                assert_eq!(
                    ids.contains(&id).unwrap(),
                    i < 500,
                    "{i} with runs of {max}"
                );
            }
        }
    }
}

//! Sets of chunk ids (or other fixed-size records) larger than memory (issue 17): an external
//! sort. Records are gathered in runs of bounded size; each run is sorted, deduplicated and
//! spilled to an unlinked temporary file; the runs are then merged into one sorted,
//! deduplicated file, which is read as a stream (in order) or searched for one record through
//! a sparse table of every [`FENCE`]-th record kept in memory.
//!
//! Memory: one run ([`RUN_IDS`] records, 32 MiB of chunk ids) while gathering, a read buffer
//! per run while merging, and 1/[`FENCE`] of the records afterwards.

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

/// Records in one run.
pub(crate) const RUN_IDS: usize = 1 << 20;

/// One record in this many is kept in memory to search the merged file.
const FENCE: usize = 256;

/// A fixed-size record the sorter spills; its order is the sort's.
pub trait Record: Ord + Copy {
    /// Encoded length, at most 128.
    const LEN: usize;
    /// Appends its [`Record::LEN`] bytes.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes [`Record::LEN`] bytes.
    fn decode(b: &[u8]) -> Self;
}

impl Record for ChunkId {
    const LEN: usize = 32;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        ChunkId::from_bytes(b.try_into().expect("32 bytes"))
    }
}

/// Gathers chunk ids, in any order and with repeats.
pub(crate) type IdSorter = Sorter<ChunkId>;

/// A sorted set of distinct chunk ids.
pub(crate) type SortedIds = Sorted<ChunkId>;

/// Gathers records, in any order and with repeats, into a [`Sorted`] set, in runs of bounded
/// size spilled to unlinked temporary files.
pub struct Sorter<T> {
    dir: PathBuf,
    run: Vec<T>,
    max: usize,
    runs: Vec<File>,
}

fn write_all<T: Record>(out: &mut impl Write, r: &T, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    r.encode(buf);
    out.write_all(buf)
}

impl<T: Record> Sorter<T> {
    /// A sorter spilling runs of `max` records into unlinked files in the system's temporary
    /// directory.
    pub fn new(max: usize) -> Self {
        Sorter {
            dir: std::env::temp_dir(),
            run: Vec::new(),
            max: max.max(1),
            runs: Vec::new(),
        }
    }

    /// Adds one record.
    pub fn push(&mut self, r: T) -> Result<()> {
        self.run.push(r);
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
        let mut buf = Vec::with_capacity(T::LEN);
        for r in self.run.drain(..) {
            write_all(&mut out, &r, &mut buf).map_err(|e| Error::io("write", &self.dir, e))?;
        }
        let mut file = out
            .into_inner()
            .map_err(|e| Error::io("write", &self.dir, e.into_error()))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("seek", &self.dir, e))?;
        self.runs.push(file);
        Ok(())
    }

    /// The sorted, deduplicated set of the records pushed.
    pub fn finish(mut self) -> Result<Sorted<T>> {
        if self.runs.is_empty() {
            self.run.sort_unstable();
            self.run.dedup();
            return Ok(Sorted {
                file: None,
                len: self.run.len() as u64,
                fences: self.run,
            });
        }
        if !self.run.is_empty() {
            self.spill()?;
        }
        let dir = self.dir.clone();
        let io = |e: std::io::Error| Error::io("merge sorted runs", dir.clone(), e);
        let mut readers: Vec<_> = self
            .runs
            .into_iter()
            .map(|f| BufReader::with_capacity(1 << 16, f))
            .collect();
        let mut heap = BinaryHeap::new();
        for (n, r) in readers.iter_mut().enumerate() {
            if let Some(first) = read_record::<T>(r).map_err(io)? {
                heap.push(Reverse((first, n)));
            }
        }
        let file = unlinked_file(&self.dir)?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        let (mut len, mut last, mut fences) = (0u64, None, Vec::new());
        let mut buf = Vec::with_capacity(T::LEN);
        while let Some(Reverse((r, n))) = heap.pop() {
            if let Some(next) = read_record::<T>(&mut readers[n]).map_err(io)? {
                heap.push(Reverse((next, n)));
            }
            if last == Some(r) {
                continue;
            }
            if len % FENCE as u64 == 0 {
                fences.push(r);
            }
            write_all(&mut out, &r, &mut buf).map_err(io)?;
            last = Some(r);
            len += 1;
        }
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        Ok(Sorted {
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

fn read_record<T: Record>(r: &mut impl Read) -> std::io::Result<Option<T>> {
    let mut buf = [0u8; 128];
    let buf = &mut buf[..T::LEN];
    match r.read_exact(buf) {
        Ok(()) => Ok(Some(T::decode(buf))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// A sorted set of distinct records: in memory when it fit in one run, else in an unlinked
/// file with every [`FENCE`]-th record in memory.
pub struct Sorted<T> {
    file: Option<File>,
    len: u64,
    /// Every record (no file), or every [`FENCE`]-th one.
    fences: Vec<T>,
}

impl<T: Record> Sorted<T> {
    /// Distinct records.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn io(e: std::io::Error) -> Error {
        Error::io("read", "sorted records", e)
    }

    /// Whether `r` is in the set: at most one read of [`FENCE`] records.
    pub fn contains(&self, r: &T) -> Result<bool> {
        let Some(file) = &self.file else {
            return Ok(self.fences.binary_search(r).is_ok());
        };
        let block = match self.fences.binary_search(r) {
            Ok(_) => return Ok(true),
            Err(0) => return Ok(false),
            Err(i) => i - 1,
        };
        let start = (block * FENCE) as u64;
        let end = (start + FENCE as u64).min(self.len);
        let mut buf = vec![0u8; (end - start) as usize * T::LEN];
        file.read_exact_at(&mut buf, start * T::LEN as u64)
            .map_err(Self::io)?;
        Ok(buf.chunks_exact(T::LEN).any(|b| T::decode(b) == *r))
    }

    /// The records in order.
    pub fn iter(&self) -> SortedIter<'_, T> {
        SortedIter {
            set: self,
            next: 0,
            block: Vec::new(),
            at: 0,
        }
    }
}

/// Streams a [`Sorted`] in order.
pub struct SortedIter<'a, T> {
    set: &'a Sorted<T>,
    next: u64,
    block: Vec<u8>,
    at: usize,
}

impl<T: Record> Iterator for SortedIter<'_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        let Some(file) = &self.set.file else {
            let r = self.set.fences.get(self.next as usize).copied();
            self.next += 1;
            return r.map(Ok);
        };
        if self.at == self.block.len() {
            if self.next == self.set.len {
                return None;
            }
            let end = (self.next + 4096).min(self.set.len);
            self.block = vec![0; (end - self.next) as usize * T::LEN];
            if let Err(e) = file.read_exact_at(&mut self.block, self.next * T::LEN as u64) {
                self.next = self.set.len;
                self.block.clear();
                self.at = 0;
                return Some(Err(Sorted::<T>::io(e)));
            }
            self.next = end;
            self.at = 0;
        }
        let r = T::decode(&self.block[self.at..self.at + T::LEN]);
        self.at += T::LEN;
        Some(Ok(r))
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

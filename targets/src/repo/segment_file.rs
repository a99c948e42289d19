//! One index segment read in place (issue 17): its pack table, fan-out and filter in memory,
//! its entries read from the file with positional reads, one bucket a lookup.
//!
//! Reads go through the operating system's page cache, which is shared, bounded and not part
//! of the process's memory; nothing here caches entries. A lookup of a chunk the segment does
//! not hold is answered by the filter, with no read at all.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use chunker::format::{
    IndexEntry, SortedLayout, SortedSegment, SORTED_ENTRY_LEN, SORTED_HEAD_LEN, SORTED_TAIL_LEN,
};
use chunker::ChunkId;

use crate::{Error, Result};

/// Entries read at once when a segment is streamed.
const STREAM_ENTRIES: u64 = 2048;

/// A sorted index segment open for lookups.
pub(crate) struct SegmentFile {
    /// `index/<name>`.
    pub(crate) key: String,
    file: File,
    table: SortedSegment,
}

impl std::fmt::Debug for SegmentFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentFile")
            .field("key", &self.key)
            .field("entries", &self.table.len())
            .finish_non_exhaustive()
    }
}

impl SegmentFile {
    /// Opens a version 3 segment: reads its tables and checks them against their checksum.
    /// The entries are not read (a wrong one is caught when the chunk it names is read and
    /// checked against its id; `check` reads whole segments).
    pub(crate) fn open(key: &str, file: File, path: &Path) -> Result<Self> {
        let corrupt = |detail: String| Error::Corrupt {
            what: format!("index segment {key}"),
            detail,
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        if len < (SORTED_HEAD_LEN + SORTED_TAIL_LEN) as u64 {
            return Err(corrupt("truncated".into()));
        }
        let read = |at: u64, n: usize| -> Result<Vec<u8>> {
            let mut buf = vec![0; n];
            file.read_exact_at(&mut buf, at)
                .map_err(|e| Error::io("read", path, e))?;
            Ok(buf)
        };
        let head = read(0, SORTED_HEAD_LEN)?;
        let tail = read(len - SORTED_TAIL_LEN as u64, SORTED_TAIL_LEN)?;
        let layout = SortedLayout::parse(&head, &tail, len).map_err(|e| corrupt(e.to_string()))?;
        let tables = read(layout.tables_at(), layout.tables_len())?;
        let table = layout.open(&tables).map_err(|e| corrupt(e.to_string()))?;
        Ok(SegmentFile {
            key: key.to_string(),
            file,
            table,
        })
    }

    /// Entries in the segment.
    pub(crate) fn len(&self) -> u64 {
        self.table.len()
    }

    /// The first and last chunk ids it holds; `None` when it holds none.
    pub(crate) fn id_range(&self) -> Option<(ChunkId, ChunkId)> {
        self.table.id_range()
    }

    /// False when the segment surely does not hold `id` (its range and filter, no read).
    pub(crate) fn may_contain(&self, id: &ChunkId) -> bool {
        self.table.may_contain(id)
    }

    /// Bytes of memory its tables take.
    pub(crate) fn memory(&self) -> usize {
        self.table.memory()
    }

    fn read(&self, at: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.file
            .read_exact_at(&mut buf, at)
            .map_err(|e| Error::io("read index segment", &self.key, e))?;
        Ok(buf)
    }

    /// The entries naming `id`, in the order written; no read when the filter rules it out.
    pub(crate) fn lookup(&self, id: &ChunkId) -> Result<Vec<IndexEntry>> {
        if !self.table.may_contain(id) {
            return Ok(Vec::new());
        }
        self.lookup_unfiltered(id)
    }

    /// The entries naming `id`, read from its bucket without asking the filter.
    pub(crate) fn lookup_unfiltered(&self, id: &ChunkId) -> Result<Vec<IndexEntry>> {
        let (at, len) = self.table.bucket(id);
        if len == 0 {
            return Ok(Vec::new());
        }
        let bytes = self.read(at, len)?;
        self.table.find(id, &bytes).map_err(|e| Error::Corrupt {
            what: format!("index segment {}", self.key),
            detail: e.to_string(),
        })
    }

    /// Checks the whole segment against its trailing BLAKE3, reading it a block at a time.
    pub(crate) fn verify(&self) -> Result<()> {
        let len = self
            .file
            .metadata()
            .map_err(|e| Error::io("stat index segment", &self.key, e))?
            .len();
        let body = len.saturating_sub(32);
        let mut hasher = blake3::Hasher::new();
        let mut at = 0;
        while at < body {
            let n = (body - at).min(1 << 20) as usize;
            hasher.update(&self.read(at, n)?);
            at += n as u64;
        }
        if hasher.finalize().as_bytes()[..] != self.read(body, 32)?[..] {
            return Err(Error::Corrupt {
                what: format!("index segment {}", self.key),
                detail: "checksum mismatch".into(),
            });
        }
        Ok(())
    }

    /// Every entry, in id order, read a block at a time.
    pub(crate) fn entries(&self) -> SegmentEntries<'_> {
        SegmentEntries {
            segment: self,
            next: 0,
            block: Vec::new(),
            at: 0,
        }
    }
}

/// Streams the entries of a [`SegmentFile`].
pub(crate) struct SegmentEntries<'a> {
    segment: &'a SegmentFile,
    next: u64,
    block: Vec<u8>,
    at: usize,
}

impl Iterator for SegmentEntries<'_> {
    type Item = Result<IndexEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at == self.block.len() {
            let count = self.segment.len();
            if self.next == count {
                return None;
            }
            let end = (self.next + STREAM_ENTRIES).min(count);
            let (at, len) = SortedSegment::entries_range(self.next, end);
            match self.segment.read(at, len) {
                Ok(block) => self.block = block,
                Err(e) => {
                    self.next = count;
                    self.block.clear();
                    self.at = 0;
                    return Some(Err(e));
                }
            }
            self.next = end;
            self.at = 0;
        }
        let e = &self.block[self.at..self.at + SORTED_ENTRY_LEN];
        self.at += SORTED_ENTRY_LEN;
        Some(self.segment.table.decode(e).map_err(Error::Format))
    }
}

/// The entries of several segments merged in id order; the entries of one chunk in segment
/// order, then in the order each segment holds them (the first copy stays first).
pub(crate) struct Merged<'a> {
    streams: Vec<SegmentEntries<'a>>,
    heads: Vec<Option<IndexEntry>>,
    heap: BinaryHeap<Reverse<(ChunkId, usize)>>,
    started: bool,
    failed: bool,
}

impl<'a> Merged<'a> {
    pub(crate) fn new(segments: &'a [SegmentFile]) -> Self {
        Merged {
            streams: segments.iter().map(SegmentFile::entries).collect(),
            heads: vec![None; segments.len()],
            heap: BinaryHeap::new(),
            started: false,
            failed: false,
        }
    }

    fn advance(&mut self, n: usize) -> Result<()> {
        self.heads[n] = self.streams[n].next().transpose()?;
        if let Some(e) = &self.heads[n] {
            self.heap.push(Reverse((e.blob.id, n)));
        }
        Ok(())
    }
}

impl Iterator for Merged<'_> {
    type Item = Result<IndexEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if !self.started {
            self.started = true;
            for n in 0..self.streams.len() {
                if let Err(e) = self.advance(n) {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        let Reverse((_, n)) = self.heap.pop()?;
        let e = self.heads[n]
            .take()
            .expect("a stream in the heap has a head");
        if let Err(err) = self.advance(n) {
            self.failed = true;
            return Some(Err(err));
        }
        Some(Ok(e))
    }
}

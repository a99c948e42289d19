//! Compaction of index segments (issue 17): many small segments (one per backup) merged into
//! few large sorted ones, without a lock, beside running backups, `gc` and other compactions.
//!
//! The discipline is gc's, in two phases with a grace period G:
//!
//! 1. **Merge** (a run at time T). The small segments are merged in id order into segments of
//!    up to `max_entries` entries, which are written first; then a *compaction record*
//!    (`compactions/<id>`) names the segments they replace, stamped with T and G. Nothing is
//!    deleted: for a while the index names those chunks twice, which readers take in their
//!    stride (the first live copy wins, counts merge the duplicates).
//! 2. **Remove** (any later run at T + G or after). The replaced segments are deleted, then the
//!    record.
//!
//! Why this is safe: a segment is deleted only when every entry it holds has been in another
//! segment for at least G, so any reader that runs for less than G (a backup opening its
//! index, `gc` reading its view, `check`) never finds a segment it listed gone; and readers
//! that did list it and find it gone list again, as they do for `gc`'s rewrites. A merge
//! racing a `gc` sweep may write back entries of packs the sweep deleted: that is the case of
//! two overlapping `gc` runs, covered the same way (the sweep's tombstone stays a week, so
//! backups treat those packs as condemned, and the next rewrite drops the entries). Two
//! compactions at once repeat each other's work and stay correct: each deletes only segments
//! whose entries its own merged segments hold.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use chunker::format::{ObjectId, SegmentBuilder};
use chunker::le::{Reader, Writer};

use crate::layout::{now_ms, INDEX_DIR};
use crate::repo::{open_segment, SegmentFile};
use crate::{Error, Repository, Result};

/// Where compaction records live.
pub const COMPACTIONS_DIR: &str = "compactions";

/// Magic of a compaction record: BLAKE3("mover compaction v1")[..8]. DO NOT MODIFY.
pub const COMPACTION_MAGIC: [u8; 8] = [0x83, 0x94, 0xd3, 0x67, 0x55, 0xcc, 0x91, 0x89];

/// Settings of a compaction run.
#[derive(Clone, Debug)]
pub struct CompactOptions {
    /// Segments with fewer entries are merged.
    pub small_entries: u64,
    /// Entries of one merged segment, at most (its size in memory while it is written: 49
    /// bytes an entry).
    pub max_entries: u64,
    /// Replaced segments are deleted by a run this long after the merge, ms.
    pub grace_ms: i64,
    /// Small segments are merged only when there are at least this many (2 or more).
    pub min_segments: usize,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            small_entries: 1 << 20,
            max_entries: 4 << 20,
            grace_ms: 3_600_000,
            min_segments: 2,
        }
    }
}

/// What a compaction run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Segments merged by this run.
    pub merged: usize,
    /// Segments it wrote.
    pub written: usize,
    /// Entries it wrote.
    pub entries: u64,
    /// Segments replaced by earlier runs that it deleted.
    pub removed: usize,
    /// Records of earlier runs still within their grace period.
    pub pending: usize,
}

/// A compaction record: which segments a merge replaced, and when they may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactionRecord {
    /// When the merge wrote it, ms since the Unix epoch.
    pub created_ms: i64,
    /// The grace period, ms.
    pub grace_ms: i64,
    /// Names of the replaced segments.
    pub replaced: Vec<ObjectId>,
    /// Names of the segments written.
    pub written: Vec<ObjectId>,
}

impl CompactionRecord {
    /// Encodes a record.
    ///
    /// | offset | size | field |
    /// |---|---|---|
    /// | 0 | 8 | [`COMPACTION_MAGIC`] |
    /// | 8 | 4 | version (1) |
    /// | 12 | 4 | replaced count R |
    /// | 16 | 4 | written count W |
    /// | 20 | 4 | reserved, 0 |
    /// | 24 | 8 | created, ms since the Unix epoch (i64) |
    /// | 32 | 8 | grace period, ms (i64) |
    /// | 40 | 32 × R | names of the replaced segments |
    /// | 40 + 32R | 32 × W | names of the segments written |
    /// | end − 32 | 32 | BLAKE3 of all preceding bytes |
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Writer::with_capacity(72 + 32 * (self.replaced.len() + self.written.len()));
        o.bytes(&COMPACTION_MAGIC);
        o.u32(1);
        o.u32(self.replaced.len() as u32);
        o.u32(self.written.len() as u32);
        o.zeros(4);
        o.i64(self.created_ms);
        o.i64(self.grace_ms);
        for id in self.replaced.iter().chain(&self.written) {
            o.bytes(&id.0);
        }
        o.into_checksummed()
    }

    /// Decodes and checks a record.
    pub fn decode(key: &str, b: &[u8]) -> Result<Self> {
        let corrupt = |detail: &str| Error::Corrupt {
            what: format!("compaction record {key}"),
            detail: detail.into(),
        };
        if b.len() < 72 || b[..8] != COMPACTION_MAGIC {
            return Err(corrupt("bad magic or truncated"));
        }
        let (body, sum) = b.split_at(b.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(corrupt("checksum mismatch"));
        }
        let mut r = Reader::new("compaction record", &body[8..]);
        if r.u32()? != 1 {
            return Err(corrupt("unknown version"));
        }
        let (replaced, written) = (r.u32()? as usize, r.u32()? as usize);
        r.skip(4)?;
        let (created_ms, grace_ms) = (r.i64()?, r.i64()?);
        if r.remaining() != 32 * (replaced + written) {
            return Err(corrupt("counts do not match the length"));
        }
        let mut ids = |n| {
            (0..n)
                .map(|_| r.array().map(ObjectId))
                .collect::<chunker::Result<Vec<_>>>()
        };
        Ok(CompactionRecord {
            created_ms,
            grace_ms,
            replaced: ids(replaced)?,
            written: ids(written)?,
        })
    }
}

/// Runs both phases: removes what earlier merges replaced once their grace period is over,
/// then merges the small segments.
pub fn compact(repo: &Repository, options: &CompactOptions) -> Result<CompactReport> {
    let mut report = CompactReport::default();
    let backend = repo.backend();
    let mut waiting = HashSet::new();
    for key in backend.list(COMPACTIONS_DIR)? {
        let record = match backend.get(&key) {
            Ok(bytes) => CompactionRecord::decode(&key, &bytes)?,
            Err(Error::NotFound { .. }) => continue, // another run removed it
            Err(e) => return Err(e),
        };
        if now_ms() >= record.created_ms.saturating_add(record.grace_ms) {
            for name in &record.replaced {
                backend.delete(&format!("{INDEX_DIR}/{}", name.to_hex()))?;
                report.removed += 1;
            }
            backend.delete(&key)?;
        } else {
            report.pending += 1;
            // Neither side of a pending merge is merged again until it is done.
            let both = record.replaced.iter().chain(&record.written);
            waiting.extend(both.map(ObjectId::to_hex));
        }
    }
    let mut small = Vec::new();
    for key in backend.list(INDEX_DIR)? {
        let name = key.rsplit('/').next().unwrap_or(&key);
        if waiting.contains(name) || ObjectId::from_hex(name).is_none() {
            continue;
        }
        match open_segment(&repo.segment_source(), &key, None) {
            Ok(s) if s.len() < options.small_entries => small.push(s),
            Ok(_) => {}
            // Gone (a concurrent gc or compaction replaced it) or damaged (check reports it):
            // left alone.
            Err(e) if e.is_damage() => tracing::warn!("compaction skips {key}: {e}"),
            Err(e) => return Err(e),
        }
    }
    if small.len() < options.min_segments.max(2) {
        return Ok(report);
    }
    let written = merge(repo, &small, options.max_entries.max(1), &mut report)?;
    let record = CompactionRecord {
        created_ms: now_ms(),
        grace_ms: options.grace_ms,
        replaced: small
            .iter()
            .filter_map(|s| ObjectId::from_hex(s.key.rsplit('/').next().unwrap_or("")))
            .collect(),
        written,
    };
    let bytes = record.encode();
    let key = format!("{COMPACTIONS_DIR}/{}", ObjectId::of(&bytes).to_hex());
    backend.put(&key, &bytes)?;
    report.merged = small.len();
    Ok(report)
}

/// Merges `segments` in id order (entries of one chunk in segment order, so the first copy
/// stays first) into segments of at most `max` entries; returns their names.
fn merge(
    repo: &Repository,
    segments: &[SegmentFile],
    max: u64,
    report: &mut CompactReport,
) -> Result<Vec<ObjectId>> {
    let mut streams: Vec<_> = segments.iter().map(SegmentFile::entries).collect();
    let mut heads = Vec::with_capacity(streams.len());
    let mut heap = BinaryHeap::new();
    for (n, s) in streams.iter_mut().enumerate() {
        let head = s.next().transpose()?;
        if let Some(e) = &head {
            heap.push(Reverse((e.blob.id, n)));
        }
        heads.push(head);
    }
    let mut written = Vec::new();
    let cap = max.min(1 << 24) as usize;
    let mut builder = SegmentBuilder::new(cap);
    let mut last = None;
    while let Some(Reverse((id, n))) = heap.pop() {
        let e = heads[n].take().expect("a stream in the heap has a head");
        heads[n] = streams[n].next().transpose()?;
        if let Some(next) = &heads[n] {
            heap.push(Reverse((next.blob.id, n)));
        }
        if builder.len() >= max && last != Some(id) {
            let full = std::mem::replace(&mut builder, SegmentBuilder::new(cap));
            written.push(store(repo, full, report)?);
        }
        builder.push(&e);
        last = Some(id);
    }
    if !builder.is_empty() {
        written.push(store(repo, builder, report)?);
    }
    Ok(written)
}

fn store(
    repo: &Repository,
    builder: SegmentBuilder,
    report: &mut CompactReport,
) -> Result<ObjectId> {
    report.entries += builder.len();
    report.written += 1;
    let (key, _) = repo.store_segment(builder.finish(), false)?;
    ObjectId::from_hex(key.rsplit('/').next().unwrap_or("")).ok_or_else(|| Error::Corrupt {
        what: key.clone(),
        detail: "not a segment name".into(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chunker::{ChunkId, Encoder};

    use super::*;
    use crate::{Backend, ChunkStore, LocalBackend, RepositoryOptions};

    #[test]
    fn magic_is_a_blake3_prefix() {
        assert_eq!(
            blake3::hash(b"mover compaction v1").as_bytes()[..8],
            COMPACTION_MAGIC
        );
        let record = CompactionRecord {
            created_ms: 5,
            grace_ms: 7,
            replaced: vec![ObjectId([1; 32]), ObjectId([2; 32])],
            written: vec![ObjectId([3; 32])],
        };
        let bytes = record.encode();
        assert_eq!(CompactionRecord::decode("k", &bytes).unwrap(), record);
        let mut bad = bytes.clone();
        bad[50] ^= 1;
        assert!(CompactionRecord::decode("k", &bad).is_err());
    }

    fn id(i: u32) -> ChunkId {
        ChunkId::of(&i.to_le_bytes())
    }

    /// Ten backups of 50 chunks each (every tenth chunk repeated from the backup before).
    fn backups(backend: &Arc<dyn Backend>) {
        for b in 0..10u32 {
            let repo = Repository::open(Arc::clone(backend), RepositoryOptions::default()).unwrap();
            for i in b * 45..b * 45 + 50 {
                let bytes = i.to_le_bytes().repeat(100);
                repo.put(&id(i), Encoder::new(1).encode(&bytes)).unwrap();
            }
            repo.flush().unwrap();
        }
    }

    fn segments(backend: &dyn Backend) -> usize {
        backend.list(INDEX_DIR).unwrap().len()
    }

    #[test]
    fn merges_small_segments_and_removes_them_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        Repository::init(Arc::clone(&backend)).unwrap();
        backups(&backend);
        assert_eq!(segments(&*backend), 10);
        let all: Vec<ChunkId> = (0..455).map(id).collect();
        // A backup that opened before the compaction and goes on after it.
        let running = Repository::open(Arc::clone(&backend), RepositoryOptions::default()).unwrap();
        let repo = Repository::open(Arc::clone(&backend), RepositoryOptions::default()).unwrap();
        let options = CompactOptions {
            small_entries: 100,
            max_entries: 200,
            grace_ms: 3_600_000,
            min_segments: 2,
        };
        let report = compact(&repo, &options).unwrap();
        assert_eq!(
            (report.merged, report.written, report.entries),
            (10, 3, 455)
        );
        // Within the grace period nothing is removed, and the merged segments are not merged
        // again while they wait.
        assert_eq!(segments(&*backend), 13);
        let again = compact(&repo, &options).unwrap();
        assert_eq!((again.removed, again.pending, again.merged), (0, 1, 0));
        // Past it, the replaced segments go.
        let options = CompactOptions {
            grace_ms: 0,
            ..options
        };
        let record = backend.list(COMPACTIONS_DIR).unwrap().pop().unwrap();
        let mut old = CompactionRecord::decode(&record, &backend.get(&record).unwrap()).unwrap();
        old.grace_ms = 0;
        backend.delete(&record).unwrap();
        backend
            .put(&format!("{COMPACTIONS_DIR}/x"), &old.encode())
            .unwrap();
        let last = compact(&repo, &options).unwrap();
        assert_eq!((last.removed, last.pending, last.merged), (10, 0, 0));
        assert_eq!(segments(&*backend), 3);
        assert!(backend.list(COMPACTIONS_DIR).unwrap().is_empty());
        // Every chunk is still found: by a fresh open, and by the backup that opened before.
        let fresh = Repository::open(Arc::clone(&backend), RepositoryOptions::default()).unwrap();
        assert_eq!(fresh.chunk_count(), 455);
        for c in &all {
            assert!(fresh.has(c).unwrap() && running.has(c).unwrap());
            assert_eq!(fresh.get(c).unwrap().bytes, running.get(c).unwrap().bytes);
        }
        running
            .put(&id(1000), Encoder::new(1).encode(&[9; 64]))
            .unwrap();
        running.flush().unwrap();
    }
}

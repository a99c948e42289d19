//! The index of an open repository (issue 17): sorted segments read in place, each with its
//! tables in memory, plus a small in-memory delta of the chunks this process stored and has
//! not yet read back from a segment of its own; and which packs garbage collection condemned.
//!
//! Memory grows with the segments' tables (about 2 bytes a chunk: filter, fan-out, pack
//! table), not with their entries. A chunk named by several segments, or twice in one, is
//! found at its first live copy in segment order; a chunk whose only copies are in condemned
//! packs is still found (reads work until the sweep) but does not count as stored.
//!
//! A lookup does not visit every segment: the segments are kept in layers, each a list of
//! segments whose id ranges do not overlap, sorted by range, and a lookup binary-searches
//! each layer for the one segment whose range may hold the id. Compacted segments cover
//! disjoint ranges and share a layer; a small segment of one backup spans nearly the whole id
//! space and takes a layer of its own. The cost of a lookup grows with the number of layers
//! (one plus the small segments not yet compacted) and the logarithm of the segments.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use chunker::format::{IndexEntry, ObjectId};
use chunker::{ChunkId, IdHasher};

use super::segment_file::SegmentFile;
use crate::Result;

#[derive(Default)]
pub(super) struct Index {
    segments: Vec<SegmentFile>,
    /// Positions in `segments`, in layers of disjoint id ranges, each sorted by range.
    layers: Vec<Vec<Layered>>,
    /// Chunks of packs this process wrote that no open segment names yet.
    delta: HashMap<ChunkId, IndexEntry, IdHasher>,
    condemned: HashSet<ObjectId>,
}

/// Where a chunk is, and whether that copy counts as stored (its pack is not condemned).
pub(super) struct Found {
    pub(super) entry: IndexEntry,
    pub(super) live: bool,
}

/// A segment in a layer: its id range and its position in segment order.
struct Layered {
    first: ChunkId,
    last: ChunkId,
    at: usize,
}

impl Index {
    /// Adds a segment after those already open (it comes last in segment order).
    pub(super) fn push(&mut self, segment: SegmentFile) {
        let at = self.segments.len();
        if let Some((first, last)) = segment.id_range() {
            let entry = Layered { first, last, at };
            match self.layers.iter_mut().find(|l| fits(l, &entry)) {
                Some(layer) => {
                    let i = layer.partition_point(|s| s.first < first);
                    layer.insert(i, entry);
                }
                None => self.layers.push(vec![entry]),
            }
        }
        self.segments.push(segment);
    }

    /// Open segments.
    pub(super) fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Marks packs as condemned: their chunks stop counting as stored.
    pub(super) fn condemn(&mut self, packs: &[ObjectId]) {
        self.condemned.extend(packs.iter().copied());
    }

    fn is_live(&self, e: &IndexEntry) -> bool {
        !self.condemned.contains(&e.pack)
    }

    /// The first live copy of `id`, else its first condemned one.
    pub(super) fn find(&self, id: &ChunkId) -> Result<Option<Found>> {
        let mut condemned = None;
        if let Some(e) = self.delta.get(id) {
            if self.is_live(e) {
                return Ok(Some(Found {
                    entry: *e,
                    live: true,
                }));
            }
            condemned = Some(*e);
        }
        // At most one segment a layer may hold it; they are taken in segment order. The
        // filter is asked first, so a miss reads and allocates nothing, and the common case,
        // one candidate, allocates no list.
        let (mut one, mut more) = (None, Vec::new());
        for layer in &self.layers {
            let i = layer.partition_point(|s| s.first <= *id);
            if let Some(s) = i.checked_sub(1).map(|i| &layer[i]) {
                if *id <= s.last && self.segments[s.at].may_contain(id) {
                    match one {
                        None => one = Some(s.at),
                        Some(_) => more.push(s.at),
                    }
                }
            }
        }
        let single = one.filter(|_| more.is_empty());
        if !more.is_empty() {
            more.extend(one);
            more.sort_unstable();
        }
        for at in single.into_iter().chain(more) {
            for e in self.segments[at].lookup_unfiltered(id)? {
                if self.is_live(&e) {
                    return Ok(Some(Found {
                        entry: e,
                        live: true,
                    }));
                }
                condemned.get_or_insert(e);
            }
        }
        Ok(condemned.map(|entry| Found { entry, live: false }))
    }

    /// Whether a live copy of `id` is indexed. A segment that cannot be read counts as not
    /// holding it (the chunk is stored again: a wasted copy, never a lost one).
    pub(super) fn has_live(&self, id: &ChunkId) -> bool {
        match self.find(id) {
            Ok(found) => found.is_some_and(|f| f.live),
            Err(e) => {
                tracing::warn!("index lookup of chunk {id} failed: {e}");
                false
            }
        }
    }

    /// Adds the chunks of a pack just made durable.
    pub(super) fn insert(&mut self, e: &IndexEntry) {
        self.delta.entry(e.blob.id).or_insert(*e);
    }

    /// Adds a segment just written, naming `entries`, which leave the delta.
    pub(super) fn attach(&mut self, segment: SegmentFile, entries: &[IndexEntry]) {
        for e in entries {
            if self.delta.get(&e.blob.id) == Some(e) {
                self.delta.remove(&e.blob.id);
            }
        }
        self.push(segment);
    }

    /// Bytes of memory the segments' tables take.
    pub(super) fn memory(&self) -> usize {
        self.segments.iter().map(SegmentFile::memory).sum()
    }

    /// Distinct chunks with a live copy: a merge of the segments' sorted entries (read as a
    /// stream), plus the delta.
    pub(super) fn live_count(&self) -> Result<usize> {
        let mut streams: Vec<_> = self.segments.iter().map(SegmentFile::entries).collect();
        let mut heap = BinaryHeap::new();
        for (n, s) in streams.iter_mut().enumerate() {
            if let Some(e) = s.next().transpose()? {
                heap.push(Reverse((e.blob.id, n, e.pack)));
            }
        }
        let (mut count, mut last, mut last_live) = (0usize, None, false);
        while let Some(Reverse((id, n, pack))) = heap.pop() {
            if let Some(e) = streams[n].next().transpose()? {
                heap.push(Reverse((e.blob.id, n, e.pack)));
            }
            if last != Some(id) {
                last = Some(id);
                last_live = false;
            }
            if !last_live && !self.condemned.contains(&pack) {
                last_live = true;
                count += 1;
            }
        }
        for e in self.delta.values() {
            if self.is_live(e) && !self.segments.iter().any(|s| s.has_live(&e.blob.id, self)) {
                count += 1;
            }
        }
        Ok(count)
    }
}

/// Whether `entry`'s range overlaps no range of `layer`.
fn fits(layer: &[Layered], entry: &Layered) -> bool {
    let i = layer.partition_point(|s| s.first < entry.first);
    let before = i.checked_sub(1).is_none_or(|i| layer[i].last < entry.first);
    let after = layer.get(i).is_none_or(|s| entry.last < s.first);
    before && after
}

impl SegmentFile {
    fn has_live(&self, id: &ChunkId, index: &Index) -> bool {
        self.lookup(id)
            .is_ok_and(|found| found.iter().any(|e| index.is_live(e)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chunker::format::{encode_index, encode_index_v1, BlobEntry, IndexEntry, ObjectId};
    use chunker::{ChunkId, Compression};

    use crate::layout::segment_key;
    use crate::{Backend, ChunkStore, LocalBackend, Repository, RepositoryOptions};

    fn entry(i: u32, pack: u8) -> IndexEntry {
        IndexEntry {
            pack: ObjectId([pack; 32]),
            blob: BlobEntry {
                id: ChunkId::of(&i.to_le_bytes()),
                offset: i,
                stored_len: 10,
                raw_len: 10,
                compression: Compression::None,
            },
        }
    }

    fn put(backend: &dyn Backend, bytes: &[u8]) {
        let key = segment_key(&ObjectId::of(bytes).to_hex());
        backend.put(&key, bytes).unwrap();
    }

    #[test]
    fn old_and_sorted_segments_read_together() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        Repository::init(Arc::clone(&backend)).unwrap();
        // Version 1: chunks 0..100 in pack 1; version 3: chunks 50..150 in pack 2.
        put(
            &*backend,
            &encode_index_v1(&(0..100).map(|i| entry(i, 1)).collect::<Vec<_>>()),
        );
        put(
            &*backend,
            &encode_index(&(50..150).map(|i| entry(i, 2)).collect::<Vec<_>>()),
        );
        for cache in [None, Some(dir.path().join("cache"))] {
            let options = RepositoryOptions {
                cache_dir: cache,
                ..RepositoryOptions::default()
            };
            let repo = Repository::open(Arc::clone(&backend), options).unwrap();
            assert_eq!(repo.index_footprint().0, 2);
            assert_eq!(repo.chunk_count(), 150);
            for i in 0..150 {
                let id = ChunkId::of(&u32::to_le_bytes(i));
                let (pack, blob) = repo.locate(&id).expect("indexed");
                assert_eq!((blob.id, blob.offset), (id, i));
                assert!(pack == ObjectId([1; 32]) || pack == ObjectId([2; 32]));
                assert!(repo.has(&id).unwrap());
            }
            assert!(repo.locate(&ChunkId::of(b"absent")).is_none());
            // Condemned: chunks only pack 1 holds stop counting, yet are still found.
            repo.condemn(&[ObjectId([1; 32])]);
            assert_eq!(repo.chunk_count(), 100);
            let only_in_1 = ChunkId::of(&u32::to_le_bytes(10));
            assert!(!repo.has(&only_in_1).unwrap());
            assert_eq!(repo.locate(&only_in_1).unwrap().0, ObjectId([1; 32]));
            let in_both = ChunkId::of(&u32::to_le_bytes(60));
            assert!(repo.has(&in_both).unwrap());
            assert_eq!(repo.locate(&in_both).unwrap().0, ObjectId([2; 32]));
        }
    }

    #[test]
    fn disjoint_and_overlapping_segments_are_searched_by_range() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        Repository::init(Arc::clone(&backend)).unwrap();
        // Chunks 0..300 in pack 1, split by id into three segments over disjoint ranges;
        // chunks 100..200 in pack 2 in one segment that overlaps them all.
        let mut sorted: Vec<IndexEntry> = (0..300).map(|i| entry(i, 1)).collect();
        sorted.sort_by_key(|e| e.blob.id);
        for part in sorted.chunks(100) {
            put(&*backend, &encode_index(part));
        }
        put(
            &*backend,
            &encode_index(&(100..200).map(|i| entry(i, 2)).collect::<Vec<_>>()),
        );
        let repo = Repository::open(Arc::clone(&backend), RepositoryOptions::default()).unwrap();
        assert_eq!(repo.index_footprint().0, 4);
        assert_eq!(repo.chunk_count(), 300);
        for i in 0..300 {
            let id = ChunkId::of(&u32::to_le_bytes(i));
            assert_eq!(repo.locate(&id).expect("indexed").1.id, id);
        }
        for i in 300..1300 {
            assert!(!repo.has(&ChunkId::of(&u32::to_le_bytes(i))).unwrap());
        }
        repo.condemn(&[ObjectId([1; 32])]);
        assert_eq!(repo.chunk_count(), 100);
        for i in 0..300 {
            let id = ChunkId::of(&u32::to_le_bytes(i));
            assert_eq!(repo.has(&id).unwrap(), (100..200).contains(&i));
            let pack = if (100..200).contains(&i) { 2 } else { 1 };
            assert_eq!(repo.locate(&id).unwrap().0, ObjectId([pack; 32]));
        }
    }
}

//! The repository as stored, read and rewritten by the maintenance commands (`gc`, `check`,
//! `repair`): every index segment with its entries, the packs that exist, and rewriting the
//! index in one pass.

use std::collections::HashSet;

use chunker::format::{IndexEntry, ObjectId, SegmentBuilder};

use crate::layout::{object_ids, INDEX_DIR, PACKS_DIR};
use crate::repo::{open_segment, Merged, SegmentFile};
use crate::{Backend, Error, Repository, Result};

/// Index entries per rewritten segment (49 MiB while written; those of a merge cover disjoint
/// id ranges and are not small enough for compaction to merge again).
const MERGED_ENTRIES: usize = 1 << 20;

/// Segments opened, and damaged segments with what is wrong.
pub(crate) type OpenSegments = (Vec<SegmentFile>, Vec<(String, Error)>);

/// Every index segment opened for streaming, each checked whole against its checksum (read
/// a block at a time, never held), and the damaged segments. Retries a listing like
/// `Repository::open` does.
pub(crate) fn open_segments(repo: &Repository) -> Result<OpenSegments> {
    let mut loaded: Vec<SegmentFile> = Vec::new();
    let mut damaged = Vec::new();
    for attempt in 0..4 {
        let mut vanished = false;
        for key in repo.backend().list(INDEX_DIR)? {
            if loaded.iter().any(|s| s.key == key) || damaged.iter().any(|(k, _)| *k == key) {
                continue;
            }
            match open_segment(&repo.segment_source(), &key, None).and_then(|s| {
                s.verify()?;
                Ok(s)
            }) {
                Ok(s) => loaded.push(s),
                Err(Error::NotFound { .. }) if attempt < 3 => vanished = true,
                Err(e) if e.is_damage() => damaged.push((key, e)),
                Err(e) => return Err(e),
            }
        }
        if !vanished {
            break;
        }
    }
    Ok((loaded, damaged))
}

/// Rewrites the index as the entries of `old` that `keep` accepts, merged in id order (each
/// chunk once a pack), in segments of at most [`MERGED_ENTRIES`]; then removes `old`.
/// Returns the number of segments written.
pub(crate) fn rewrite_merged(
    repo: &Repository,
    old: &[SegmentFile],
    keep: impl Fn(&IndexEntry) -> bool,
) -> Result<usize> {
    let mut written = HashSet::new();
    let mut builder = SegmentBuilder::new(MERGED_ENTRIES);
    let mut last: Option<chunker::ChunkId> = None;
    // Packs already written for the chunk `last`.
    let mut packs: Vec<ObjectId> = Vec::new();
    for e in Merged::new(old) {
        let e = e?;
        if !keep(&e) {
            continue;
        }
        if last != Some(e.blob.id) {
            packs.clear();
            if builder.len() >= MERGED_ENTRIES as u64 {
                let full = std::mem::replace(&mut builder, SegmentBuilder::new(MERGED_ENTRIES));
                written.insert(repo.store_segment(full.finish(), false)?.0);
            }
        } else if packs.contains(&e.pack) {
            continue;
        }
        packs.push(e.pack);
        builder.push(&e);
        last = Some(e.blob.id);
    }
    if !builder.is_empty() {
        written.insert(repo.store_segment(builder.finish(), false)?.0);
    }
    for s in old {
        if !written.contains(&s.key) {
            repo.backend().delete(&s.key)?;
        }
    }
    Ok(written.len())
}

pub(crate) fn existing_packs(backend: &dyn Backend) -> Result<HashSet<ObjectId>> {
    object_ids(backend, PACKS_DIR)
}

/// `None` for an object that is gone: removed by a concurrent run after this one listed it.
pub(crate) fn unless_gone<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Size of a pack of `chunks` blobs of `stored` bytes in all (packs are header, blobs back
/// to back, trailer).
pub(crate) fn pack_size(chunks: u64, stored: u64) -> u64 {
    (chunker::format::PACK_HEADER_LEN + chunker::format::PACK_FOOTER_LEN) as u64
        + chunks * chunker::format::PACK_ENTRY_LEN as u64
        + stored
}

/// Writes index segments of at most [`MERGED_ENTRIES`] entries as entries come, holding one
/// segment's worth; [`SegmentWriter::finish`] then removes the old segments.
pub(crate) struct SegmentWriter<'a> {
    repo: &'a Repository,
    batch: Vec<IndexEntry>,
    written: HashSet<String>,
    dry_run: bool,
}

impl<'a> SegmentWriter<'a> {
    /// With `dry_run`, nothing is written nor removed.
    pub(crate) fn new(repo: &'a Repository, dry_run: bool) -> Self {
        SegmentWriter {
            repo,
            batch: Vec::new(),
            written: HashSet::new(),
            dry_run,
        }
    }

    pub(crate) fn push(&mut self, e: IndexEntry) -> Result<()> {
        self.batch.push(e);
        if self.batch.len() >= MERGED_ENTRIES {
            self.write()?;
        }
        Ok(())
    }

    fn write(&mut self) -> Result<()> {
        if !self.dry_run && !self.batch.is_empty() {
            self.written.insert(self.repo.write_segment(&self.batch)?);
        }
        self.batch.clear();
        Ok(())
    }

    /// Writes what is left, then removes the segments of `old` not written again; returns the
    /// number of segments written.
    pub(crate) fn finish(mut self, old: &[String]) -> Result<usize> {
        self.write()?;
        if !self.dry_run {
            for key in old {
                if !self.written.contains(key) {
                    self.repo.backend().delete(key)?;
                }
            }
        }
        Ok(self.written.len())
    }
}

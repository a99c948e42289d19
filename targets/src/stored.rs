//! The repository as stored, read and rewritten by the maintenance commands (`gc`, `check`,
//! `repair`): every index segment with its entries, the packs that exist, and rewriting the
//! index in one pass.

use std::collections::HashSet;

use chunker::format::{BlobEntry, IndexEntry, ObjectId};

use crate::layout::{object_ids, INDEX_DIR, PACKS_DIR};
use crate::{Backend, Error, Repository, Result};

/// Index entries per rewritten index segment.
const SEGMENT_ENTRIES: usize = 100_000;

/// Segment keys loaded, their entries, and damaged segments with what is wrong.
pub(crate) type Segments = (Vec<String>, Vec<IndexEntry>, Vec<(String, Error)>);

/// Every index segment's entries, and the damaged segments. A segment listed but gone when
/// read was replaced by a concurrent `gc` (which writes its replacement first): the listing
/// is read again.
pub(crate) fn load_segments(repo: &Repository) -> Result<Segments> {
    let mut loaded = Vec::new();
    let mut entries = Vec::new();
    let mut damaged = Vec::new();
    for attempt in 0..4 {
        let mut vanished = false;
        for key in repo.backend().list(INDEX_DIR)? {
            if loaded.contains(&key) {
                continue;
            }
            match repo.segment_entries(&key) {
                Ok(e) => {
                    entries.extend(e);
                    loaded.push(key);
                }
                Err(Error::NotFound { .. }) if attempt < 3 => vanished = true,
                Err(e) if e.is_damage() => damaged.push((key, e)),
                Err(e) => return Err(e),
            }
        }
        if !vanished {
            break;
        }
    }
    Ok((loaded, entries, damaged))
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

/// Size of a pack from its index entries (packs are header, blobs back to back, trailer).
pub(crate) fn pack_bytes(entries: &[BlobEntry]) -> u64 {
    let blobs: u64 = entries.iter().map(|b| u64::from(b.stored_len)).sum();
    (chunker::format::PACK_HEADER_LEN
        + chunker::format::PACK_FOOTER_LEN
        + entries.len() * chunker::format::PACK_ENTRY_LEN) as u64
        + blobs
}

/// Rewrites the index as `entries` (in segments), then removes the segments in `old`.
pub(crate) fn rewrite_index(
    repo: &Repository,
    entries: &[IndexEntry],
    old: &[String],
) -> Result<usize> {
    let mut written = HashSet::new();
    for part in entries.chunks(SEGMENT_ENTRIES) {
        written.insert(repo.write_segment(part)?);
    }
    for key in old {
        if !written.contains(key) {
            repo.backend().delete(key)?;
        }
    }
    Ok(written.len())
}

//! `repair index` and `repair snapshots`: rebuilding the index from the packs, and marking the
//! snapshots whose chunks are gone.

use std::collections::{HashMap, HashSet};

use chunker::format::{BlobEntry, IndexEntry, ObjectId};

use crate::idsort::{IdSorter, RUN_IDS};
use crate::layout::{damage_key, now_ms, object_ids, DAMAGED_DIR, INDEX_DIR};
use crate::salvage::salvage;
use crate::stored::{existing_packs, open_segments, SegmentWriter};
use crate::{Backend, Error, Repository, Result};

/// What `repair index` did.
#[derive(Clone, Debug, Default)]
pub struct RepairIndexReport {
    /// Packs read.
    pub packs: usize,
    /// Chunks in the rebuilt index.
    pub chunks: usize,
    /// Segments replaced.
    pub old_segments: usize,
    /// Segments written.
    pub new_segments: usize,
    /// Packs whose own list could not be read and from which nothing was recovered (their
    /// chunks are not indexed).
    pub unreadable: Vec<String>,
    /// Packs whose own list could not be read but whose entries were recovered, each saying
    /// how (see [`repair_index`]).
    pub recovered: Vec<String>,
}

/// Rebuilds the index from the packs' own lists of contents, then removes the old segments.
///
/// A pack whose list does not read is salvaged, never dropped while its chunks can be found:
/// a list followed by appended bytes is found by the pack's id; otherwise the entries the old
/// index and the damaged list still give are kept where their bytes decode to their chunks.
/// Each such pack is named in [`RepairIndexReport::recovered`].
pub fn repair_index(repo: &Repository, dry_run: bool) -> Result<RepairIndexReport> {
    let backend = repo.backend();
    let old = backend.list(INDEX_DIR)?;
    let mut packs: Vec<ObjectId> = existing_packs(&**backend)?.into_iter().collect();
    packs.sort();
    let mut r = RepairIndexReport {
        packs: packs.len(),
        old_segments: old.len(),
        ..RepairIndexReport::default()
    };
    // Written as the packs are read (issue 17): one segment's worth in memory, the distinct
    // chunks counted by an external sort.
    let mut out = SegmentWriter::new(repo, dry_run);
    let mut ids = IdSorter::new(RUN_IDS);
    let mut add = |p: &ObjectId, blobs: &[BlobEntry]| -> Result<()> {
        for &blob in blobs {
            ids.push(blob.id)?;
            out.push(IndexEntry { pack: *p, blob })?;
        }
        Ok(())
    };
    let mut damaged = Vec::new();
    for p in &packs {
        match repo.pack_contents(p) {
            Ok(blobs) => add(p, &blobs)?,
            Err(e) if e.is_damage() => damaged.push((*p, e)),
            Err(e) => return Err(e),
        }
    }
    let known = known_entries(repo, &damaged)?;
    for (p, e) in &damaged {
        let known = known.get(p).map_or(&[][..], Vec::as_slice);
        match salvage(repo, p, known) {
            Ok(s) if !s.entries().is_empty() => {
                r.recovered.push(s.describe(p));
                add(p, s.entries())?;
            }
            Ok(_) => r.unreadable.push(format!("pack {}: {e}", p.to_hex())),
            Err(e2) if e2.is_damage() || matches!(e2, Error::NotFound { .. }) => {
                r.unreadable.push(format!("pack {}: {e}", p.to_hex()))
            }
            Err(e2) => return Err(e2),
        }
    }
    r.chunks = ids.finish()?.len() as usize;
    r.new_segments = out.finish(&old)?;
    Ok(r)
}

/// What the old index says the packs of `damaged` hold (read as a stream; segments that do
/// not read give nothing).
fn known_entries(
    repo: &Repository,
    damaged: &[(ObjectId, Error)],
) -> Result<HashMap<ObjectId, Vec<BlobEntry>>> {
    let mut known: HashMap<ObjectId, Vec<BlobEntry>> = HashMap::new();
    if damaged.is_empty() {
        return Ok(known);
    }
    let wanted: HashSet<ObjectId> = damaged.iter().map(|(p, _)| *p).collect();
    for segment in open_segments(repo)?.0 {
        for e in segment.entries() {
            let e = e?;
            if wanted.contains(&e.pack) {
                known.entry(e.pack).or_default().push(e.blob);
            }
        }
    }
    Ok(known)
}

/// A snapshot `repair snapshots` found damaged.
#[derive(Clone, Debug)]
pub struct DamagedSnapshot {
    /// The snapshot.
    pub id: ObjectId,
    /// Its name.
    pub name: String,
    /// Distinct chunks it references that no intact pack holds.
    pub missing_chunks: usize,
    /// Bytes of the disks those chunks cover.
    pub bytes_lost: u64,
}

/// Snapshots marked damaged by `repair snapshots`.
pub fn damaged_marks(backend: &dyn Backend) -> Result<HashSet<ObjectId>> {
    object_ids(backend, DAMAGED_DIR)
}

/// Marks every snapshot that references chunks no pack holds (writes `damaged/<id>`), and
/// clears the mark of snapshots that are whole again. Deletes nothing else.
pub fn repair_snapshots(repo: &Repository, dry_run: bool) -> Result<Vec<DamagedSnapshot>> {
    let backend = repo.backend();
    let existing = existing_packs(&**backend)?;
    let marked = damaged_marks(&**backend)?;
    let mut out = Vec::new();
    for (id, m) in repo.snapshots()? {
        let mut seen = HashSet::new();
        let (mut missing, mut lost) = (0, 0u64);
        for d in &m.disks {
            for e in &d.entries {
                let Some(c) = e.id else { continue };
                let gone = repo.locate(&c).is_none_or(|(p, _)| !existing.contains(&p));
                if gone {
                    lost += u64::from(e.len);
                    if seen.insert(c) {
                        missing += 1;
                    }
                }
            }
        }
        if missing > 0 {
            if !dry_run {
                let text = format!(
                    "mover damaged snapshot 1\nmissing_chunks {missing}\nbytes_lost {lost}\nmarked_ms {}\n",
                    now_ms()
                );
                backend.put(&damage_key(&id), text.as_bytes())?;
            }
            out.push(DamagedSnapshot {
                id,
                name: m.name.clone(),
                missing_chunks: missing,
                bytes_lost: lost,
            });
        } else if marked.contains(&id) && !dry_run {
            backend.delete(&damage_key(&id))?;
        }
    }
    Ok(out)
}

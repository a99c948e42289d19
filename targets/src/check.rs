//! `check`: the repository's structure, read without chunk data.

use chunker::le;
use std::collections::HashSet;

use chunker::format::ObjectId;
use chunker::ChunkId;

use crate::idsort::{IdSorter, Record, Sorted, SortedIds, Sorter, RUN_IDS};
use crate::layout::{now_ms, pack_key};
use crate::repo::SegmentFile;
use crate::stored::{existing_packs, open_segments};
use crate::tombstones::load_tombstones;
use crate::{Error, Repository, Result};

/// What `check` found.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Repository format version.
    pub format_version: u32,
    /// Counts of what was looked at.
    pub snapshots: usize,
    /// Packs present.
    pub packs: usize,
    /// Index segments.
    pub segments: usize,
    /// Chunks named by the index.
    pub chunks: usize,
    /// Damage: each makes `check` fail.
    pub errors: Vec<String>,
    /// Worth knowing, not damage (orphaned packs, pending garbage collection).
    pub notes: Vec<String>,
}

/// Checks the repository's structure without reading chunk data: index segments and pack
/// trailers agree, every pack the index names exists, every snapshot decodes and every chunk
/// it references is indexed in a pack that exists.
///
/// Backups, `forget` and `gc` may run meanwhile: what they change between two listings can
/// look like damage, so a scan that finds any is repeated once and only what both scans find
/// is reported.
pub fn check(repo: &Repository) -> Result<CheckReport> {
    let first = scan(repo)?;
    if first.errors.is_empty() {
        return Ok(first);
    }
    let mut r = scan(repo)?;
    r.errors.retain(|e| first.errors.contains(e));
    Ok(r)
}

fn scan(repo: &Repository) -> Result<CheckReport> {
    let backend = repo.backend();
    let mut r = CheckReport {
        format_version: chunker::format::FORMAT_VERSION,
        ..CheckReport::default()
    };
    let tombstones = load_tombstones(&**backend)?;
    if let Some(e) = &tombstones.newer {
        r.errors.push(e.to_string());
    }
    for (key, e) in &tombstones.damaged {
        r.errors.push(format!(
            "{e} ({key}); it condemns nothing, `mover gc` removes it"
        ));
    }
    // Snapshots, then the index, then packs: the reverse of a backup's commit order, so a
    // backup committing meanwhile never looks like a snapshot without its chunks.
    let snapshot_ids = repo.snapshot_ids()?;
    let stored = Stored::load(repo)?;
    r.segments = stored.segments.len() + stored.damaged.len();
    for (key, e) in &stored.damaged {
        r.errors.push(format!(
            "index segment {key}: {e}; run `mover repair index` to rebuild the index from the packs"
        ));
    }
    r.packs = stored.existing.len();
    let condemned: HashSet<ObjectId> = tombstones.ok.iter().flat_map(|t| t.packs.clone()).collect();
    let held = check_packs(repo, &stored, &condemned, &mut r)?;
    r.chunks = held.indexed.len() as usize;
    let orphans = stored
        .existing
        .iter()
        .filter(|p| !stored.named.contains(p))
        .count();
    if orphans > 0 {
        r.notes.push(format!(
            "{orphans} packs are named by no index segment (left by interrupted backups, or \
             written by one still running); `mover gc` removes them after its grace period, \
             `mover repair index` indexes them"
        ));
    }
    let now = now_ms();
    for t in tombstones.ok.iter().filter(|t| now < t.due_ms()) {
        r.notes.push(format!(
            "garbage collection pending: {} packs condemned by {} may be deleted from {} ms \
             since the epoch on",
            t.packs.len(),
            t.key,
            t.due_ms()
        ));
    }
    check_snapshots(repo, snapshot_ids, held, &mut r)?;
    let grace_ms = crate::gc::GcOptions::default().grace_ms;
    let temporaries = crate::temporaries::temporaries(&**backend, grace_ms)?;
    r.notes.extend(temporaries.describe(grace_ms));
    Ok(r)
}

/// One index entry, ordered by pack: what `check` compares with the pack's own list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PackEntry {
    pack: ObjectId,
    id: ChunkId,
    offset: u32,
    stored_len: u32,
}

impl Record for PackEntry {
    const LEN: usize = 72;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.pack.0);
        out.extend_from_slice(self.id.as_bytes());
        le::push(out, self.offset);
        le::push(out, self.stored_len);
    }
    fn decode(b: &[u8]) -> Self {
        let u32_at = |i: usize| le::u32_at(b, i);
        PackEntry {
            pack: ObjectId(b[..32].try_into().expect("32 bytes")),
            id: ChunkId::decode(&b[32..64]),
            offset: u32_at(64),
            stored_len: u32_at(68),
        }
    }
}

/// The index as stored, sorted by pack outside memory (issue 17), and the packs that exist.
struct Stored {
    segments: Vec<SegmentFile>,
    damaged: Vec<(String, Error)>,
    by_pack: Sorted<PackEntry>,
    /// Packs the index names.
    named: HashSet<ObjectId>,
    existing: HashSet<ObjectId>,
}

/// The entries of `segments` sorted by pack, and the packs they name.
fn by_pack_of(segments: &[SegmentFile]) -> Result<(Sorted<PackEntry>, HashSet<ObjectId>)> {
    let mut sorter = Sorter::new(RUN_IDS / 2);
    let mut named = HashSet::new();
    for segment in segments {
        for e in segment.entries() {
            let e = e?;
            named.insert(e.pack);
            sorter.push(PackEntry {
                pack: e.pack,
                id: e.blob.id,
                offset: e.blob.offset,
                stored_len: e.blob.stored_len,
            })?;
        }
    }
    Ok((sorter.finish()?, named))
}

impl Stored {
    fn load(repo: &Repository) -> Result<Self> {
        let backend = repo.backend();
        let (mut segments, mut damaged) = open_segments(repo)?;
        let (mut by_pack, mut named) = by_pack_of(&segments)?;
        let mut existing = existing_packs(&**backend)?;
        if named.iter().any(|p| !existing.contains(p)) {
            // A pack the index named is gone: a concurrent gc swept it after rewriting the
            // index. Read the index again (it now names where those chunks live) and ask about
            // packs written since the listing one by one.
            (segments, damaged) = open_segments(repo)?;
            (by_pack, named) = by_pack_of(&segments)?;
            for p in &named {
                if !existing.contains(p) && backend.size(&pack_key(p)).is_ok() {
                    existing.insert(*p);
                }
            }
        }
        Ok(Stored {
            segments,
            damaged,
            by_pack,
            named,
            existing,
        })
    }

    /// Calls `f` with each pack the index names and its entries (each once), in pack order.
    fn each_pack(&self, mut f: impl FnMut(&ObjectId, &[PackEntry]) -> Result<()>) -> Result<()> {
        let mut group: Vec<PackEntry> = Vec::new();
        for e in self.by_pack.iter() {
            let e = e?;
            if group.first().is_some_and(|g| g.pack != e.pack) {
                f(&group[0].pack, &group)?;
                group.clear();
            }
            group.push(e);
        }
        if let Some(first) = group.first() {
            f(&first.pack, &group)?;
        }
        Ok(())
    }
}

/// Where the chunks are, as far as `check` can tell without reading chunk data.
struct Held {
    /// Chunks indexed in an intact pack whose own list agrees with the index.
    indexed: SortedIds,
    /// Chunks the index places in a pack whose own list does not read (`repair index`
    /// salvages what it can of such a pack).
    in_damaged: SortedIds,
    /// Existing packs whose own list the index does not give in full: named by no segment,
    /// or with entries that disagree with it.
    unindexed_packs: Vec<ObjectId>,
}

/// Checks every indexed pack against its own list of contents; returns where the chunks are.
fn check_packs(
    repo: &Repository,
    stored: &Stored,
    condemned: &HashSet<ObjectId>,
    r: &mut CheckReport,
) -> Result<Held> {
    let mut indexed = IdSorter::new(RUN_IDS);
    let mut in_damaged = IdSorter::new(RUN_IDS);
    let mut unindexed_packs = Vec::new();
    stored.each_pack(|p, blobs| {
        if !stored.existing.contains(p) {
            // A condemned pack already swept: its entries go at the next index rewrite.
            if !condemned.contains(p) {
                r.errors.push(format!(
                    "pack {} is missing: the index names {} chunks in it; `mover repair index` \
                     drops its entries, `mover repair snapshots` marks the snapshots that used it",
                    p.to_hex(),
                    blobs.len()
                ));
            }
            return Ok(());
        }
        match repo.pack_contents(p) {
            Ok(trailer) => {
                let own: HashSet<(ChunkId, u32, u32)> = trailer
                    .iter()
                    .map(|b| (b.id, b.offset, b.stored_len))
                    .collect();
                let wrong = blobs
                    .iter()
                    .filter(|b| !own.contains(&(b.id, b.offset, b.stored_len)))
                    .count();
                if wrong > 0 {
                    r.errors.push(format!(
                        "pack {}: {wrong} index entries do not match the pack's own list; run \
                         `mover repair index`",
                        p.to_hex()
                    ));
                    unindexed_packs.push(*p);
                } else {
                    for b in blobs {
                        indexed.push(b.id)?;
                    }
                }
            }
            Err(Error::NotFound { .. }) => {} // swept meanwhile
            Err(e) if e.is_damage() => {
                r.errors.push(format!(
                    "pack {}: {e}; run `mover repair index` (it recovers the entries it can \
                     prove), then `mover verify` tells which snapshots are still affected",
                    p.to_hex()
                ));
                for b in blobs {
                    in_damaged.push(b.id)?;
                }
            }
            Err(e) => return Err(e),
        }
        Ok(())
    })?;
    let mut orphans: Vec<ObjectId> = (stored.existing.iter())
        .filter(|p| !stored.named.contains(p))
        .copied()
        .collect();
    orphans.sort();
    unindexed_packs.extend(orphans);
    Ok(Held {
        indexed: indexed.finish()?,
        in_damaged: in_damaged.finish()?,
        unindexed_packs,
    })
}

/// The chunks that `packs` hold by their own lists (packs whose list does not read, or that
/// are gone meanwhile, give none).
fn listed_in(repo: &Repository, packs: &[ObjectId]) -> Result<HashSet<ChunkId>> {
    let mut listed = HashSet::new();
    for p in packs {
        match repo.pack_contents(p) {
            Ok(blobs) => listed.extend(blobs.into_iter().map(|b| b.id)),
            Err(Error::NotFound { .. }) => {}
            Err(e) if e.is_damage() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(listed)
}

/// What fixes a snapshot whose chunks are not all indexed in an intact pack (issue 14, item
/// 8): chunks that a pack holds although the index does not say so, or that the index places
/// in a pack with a damaged list, come back with `repair index`; only chunks that no pack
/// holds make the snapshot damaged.
fn snapshot_advice(lost: usize, in_packs: usize, in_damaged: usize) -> String {
    let gone = lost - in_packs - in_damaged;
    let mut parts = Vec::new();
    if in_packs > 0 {
        parts.push(format!(
            "{in_packs} are in packs the index does not name correctly (an index segment lost \
             or damaged)"
        ));
    }
    if in_damaged > 0 {
        parts.push(format!(
            "{in_damaged} are in packs whose own list is damaged"
        ));
    }
    if gone > 0 {
        parts.push(format!("{gone} are in no pack"));
    }
    let fix = if gone == lost {
        "`mover repair snapshots` marks it damaged".to_string()
    } else if gone == 0 && in_damaged == 0 {
        "run `mover repair index` (nothing is lost)".to_string()
    } else {
        "run `mover repair index` first, then `mover repair snapshots` marks it damaged if \
         chunks are still missing"
            .to_string()
    };
    format!("{}; {fix}", parts.join(", "))
}

/// The distinct chunks `m` references that `set` lacks: the snapshot's ids sorted, read
/// beside the set in order.
fn not_in(m: &chunker::format::Manifest, set: &SortedIds) -> Result<Vec<ChunkId>> {
    let mut ids: Vec<ChunkId> = (m.disks.iter())
        .flat_map(|d| &d.entries)
        .filter_map(|e| e.id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut lost = Vec::new();
    let mut stream = set.iter().peekable();
    for id in ids {
        let mut found = false;
        while let Some(next) = stream.peek() {
            match next {
                Ok(s) if *s < id => {
                    stream.next();
                }
                Ok(s) => {
                    found = *s == id;
                    break;
                }
                Err(_) => return Err(stream.next().expect("peeked").expect_err("an error")),
            }
        }
        if !found {
            lost.push(id);
        }
    }
    Ok(lost)
}

/// Checks that every snapshot decodes and that each chunk it references is indexed in an
/// intact pack; for those that are not, says which repair brings them back.
fn check_snapshots(
    repo: &Repository,
    ids: Vec<ObjectId>,
    held: Held,
    r: &mut CheckReport,
) -> Result<()> {
    // What the packs the index misses hold: read once, and only if some snapshot needs it.
    let mut unindexed: Option<HashSet<ChunkId>> = None;
    for id in ids {
        match repo.load_snapshot(&id) {
            Ok(m) => {
                r.snapshots += 1;
                let lost = not_in(&m, &held.indexed)?;
                if lost.is_empty() {
                    continue;
                }
                let unindexed = match &mut unindexed {
                    Some(u) => &*u,
                    None => unindexed.insert(listed_in(repo, &held.unindexed_packs)?),
                };
                let in_packs = lost.iter().filter(|c| unindexed.contains(c)).count();
                let mut in_damaged = 0;
                for c in lost.iter().filter(|c| !unindexed.contains(c)) {
                    in_damaged += usize::from(held.in_damaged.contains(c)?);
                }
                r.errors.push(format!(
                    "snapshot {} ({}): {} chunks it references are indexed in no intact pack: {}",
                    id.to_hex(),
                    m.name,
                    lost.len(),
                    snapshot_advice(lost.len(), in_packs, in_damaged)
                ));
            }
            Err(Error::NotFound { .. }) => {} // forgotten meanwhile
            Err(e) if e.is_damage() => {
                r.snapshots += 1;
                r.errors.push(format!(
                    "snapshot {}: {e}; `mover forget` it if it cannot be restored from elsewhere",
                    id.to_hex()
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

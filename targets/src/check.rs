//! `check`: the repository's structure, read without chunk data.

use std::collections::{HashMap, HashSet};

use chunker::format::{BlobEntry, IndexEntry, ObjectId};
use chunker::ChunkId;

use crate::layout::{now_ms, pack_key};
use crate::stored::{existing_packs, load_segments};
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
    r.chunks = held.indexed.len();
    let orphans = stored
        .existing
        .iter()
        .filter(|p| !stored.by_pack.contains_key(p))
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

/// The index as stored, by pack, and the packs that exist.
struct Stored {
    segments: Vec<String>,
    damaged: Vec<(String, Error)>,
    by_pack: HashMap<ObjectId, Vec<BlobEntry>>,
    existing: HashSet<ObjectId>,
}

impl Stored {
    fn load(repo: &Repository) -> Result<Self> {
        let backend = repo.backend();
        let by_pack_of = |entries: Vec<IndexEntry>| {
            let mut by_pack: HashMap<ObjectId, Vec<BlobEntry>> = HashMap::new();
            for e in entries {
                by_pack.entry(e.pack).or_default().push(e.blob);
            }
            by_pack
        };
        let (mut segments, entries, mut damaged) = load_segments(repo)?;
        let mut by_pack = by_pack_of(entries);
        let mut existing = existing_packs(&**backend)?;
        if by_pack.keys().any(|p| !existing.contains(p)) {
            // A pack the index named is gone: a concurrent gc swept it after rewriting the
            // index. Read the index again (it now names where those chunks live) and ask about
            // packs written since the listing one by one.
            let (s2, e2, d2) = load_segments(repo)?;
            (segments, damaged, by_pack) = (s2, d2, by_pack_of(e2));
            for p in by_pack.keys() {
                if !existing.contains(p) && backend.size(&pack_key(p)).is_ok() {
                    existing.insert(*p);
                }
            }
        }
        Ok(Stored {
            segments,
            damaged,
            by_pack,
            existing,
        })
    }
}

/// Where the chunks are, as far as `check` can tell without reading chunk data.
#[derive(Default)]
struct Held {
    /// Chunks indexed in an intact pack whose own list agrees with the index.
    indexed: HashSet<ChunkId>,
    /// Chunks the index places in a pack whose own list does not read (`repair index`
    /// salvages what it can of such a pack).
    in_damaged: HashSet<ChunkId>,
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
    let mut held = Held::default();
    let mut packs: Vec<(&ObjectId, &Vec<BlobEntry>)> = stored.by_pack.iter().collect();
    packs.sort_by_key(|(p, _)| **p);
    for (p, blobs) in packs {
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
            continue;
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
                    held.unindexed_packs.push(*p);
                } else {
                    held.indexed.extend(blobs.iter().map(|b| b.id));
                }
            }
            Err(Error::NotFound { .. }) => {} // swept meanwhile
            Err(e) if e.is_damage() => {
                r.errors.push(format!(
                    "pack {}: {e}; run `mover repair index` (it recovers the entries it can \
                     prove), then `mover verify` tells which snapshots are still affected",
                    p.to_hex()
                ));
                held.in_damaged.extend(blobs.iter().map(|b| b.id));
            }
            Err(e) => return Err(e),
        }
    }
    let mut orphans: Vec<ObjectId> = (stored.existing.iter())
        .filter(|p| !stored.by_pack.contains_key(p))
        .copied()
        .collect();
    orphans.sort();
    held.unindexed_packs.extend(orphans);
    Ok(held)
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
                let mut seen = HashSet::new();
                let lost: Vec<ChunkId> = m
                    .disks
                    .iter()
                    .flat_map(|d| &d.entries)
                    .filter_map(|e| e.id)
                    .filter(|c| seen.insert(*c))
                    .filter(|c| !held.indexed.contains(c))
                    .collect();
                if lost.is_empty() {
                    continue;
                }
                let unindexed = match &mut unindexed {
                    Some(u) => &*u,
                    None => unindexed.insert(listed_in(repo, &held.unindexed_packs)?),
                };
                let in_packs = lost.iter().filter(|c| unindexed.contains(c)).count();
                let in_damaged = (lost.iter())
                    .filter(|c| !unindexed.contains(c) && held.in_damaged.contains(c))
                    .count();
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

//! Repository lifecycle: garbage collection without a lock, `check` and `repair`.
//!
//! # Garbage collection in two phases
//!
//! Backups on other hosts may be running against the same repository while `gc` runs, and
//! they reuse chunks that are already stored without telling anyone. So `gc` never deletes
//! what it finds unreferenced right away:
//!
//! 1. **Mark** (run at time T): every pack that holds no chunk referenced by any snapshot, or
//!    that is mostly garbage and was repacked (its live chunks copied into new packs first),
//!    is *condemned*: listed in a tombstone `gc/<id>` stamped with T and the grace period G.
//! 2. **Sweep** (a later `gc` run, at T + G or after): every snapshot is read again, and a
//!    condemned pack is deleted only if each chunk in it that a snapshot now references has
//!    another copy in a pack that is not condemned. A chunk that a backup reused in the
//!    meantime keeps its pack alive. Then the index is rewritten without the deleted packs
//!    and the tombstone is kept for [`TOMBSTONE_RETENTION_MS`] more (see below), then removed.
//!
//! A backup plays its part at commit: [`check_commit`] refuses to publish a snapshot that
//! references a chunk located in a pack condemned more than G/2 ago (nothing is committed;
//! running the backup again stores fresh copies, because a repository opened after a
//! tombstone treats condemned chunks as absent). A snapshot committed before T + G/2 is seen
//! by the sweep (which starts after T + G), so it keeps its chunks; one that would commit
//! later is refused. A backup that began before a tombstone and ends after its sweep still
//! finds the tombstone, because a swept tombstone stays for a week. Clocks of the hosts must
//! agree to within G/2; the default G of one hour must exceed the longest backup, or that
//! backup fails at commit instead of reusing data (and no backup may run longer than a week).

use std::collections::{HashMap, HashSet};

use chunker::format::{BlobEntry, ObjectId};
use chunker::ChunkId;

use crate::compact::CompactOptions;
use crate::idsort::{IdSorter, SortedIds, RUN_IDS};
use crate::layout::{now_ms, pack_key, tombstone_key, INDEX_DIR};
use crate::repo::{Merged, SegmentFile};
use crate::salvage::embedded_trailer;
use crate::stored::{existing_packs, open_segments, pack_size, rewrite_merged, unless_gone};
use crate::{ChunkStore, Error, Repository, Result};

// `check`, `repair` and the tombstones have their own modules; their public items keep the
// paths under `targets::gc` that callers use.
pub use crate::check::{check, CheckReport};
pub use crate::config_repair::{repair_config, RepairConfigReport};
pub use crate::layout::damage_key;
pub use crate::repair::{
    damaged_marks, repair_index, repair_snapshots, DamagedSnapshot, RepairIndexReport,
};
pub use crate::temporaries::{temporaries, Temporaries};
pub use crate::tombstones::{
    check_commit, load_tombstones, Tombstone, TombstoneSet, TOMBSTONE_MAGIC, TOMBSTONE_RETENTION_MS,
};

/// How a `gc` run behaves.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// How long a condemned pack waits before it may be deleted, ms.
    pub grace_ms: i64,
    /// Report what would be done; change nothing.
    pub dry_run: bool,
    /// Live bytes this run may copy out of mostly-garbage packs.
    pub max_repack_bytes: u64,
    /// A pack whose live share of bytes is below this is repacked.
    pub repack_below: f64,
    /// The index's small segments (one per backup) are compacted when there are at least
    /// this many (`targets::compact`, with this run's grace period); 0: never.
    pub compact_segments: usize,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace_ms: 3_600_000,
            dry_run: false,
            max_repack_bytes: u64::MAX,
            repack_below: 0.5,
            compact_segments: 16,
        }
    }
}

/// A tombstone still inside its grace period.
#[derive(Clone, Debug)]
pub struct Pending {
    /// Its key.
    pub key: String,
    /// Packs it condemns.
    pub packs: usize,
    /// When they may be deleted, ms since the Unix epoch.
    pub due_ms: i64,
}

/// What a `gc` run did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    /// Snapshots read to find the chunks in use.
    pub snapshots: usize,
    /// Distinct chunks in use.
    pub live_chunks: usize,
    /// Packs in the repository when the run began.
    pub packs: usize,
    /// Packs deleted by the sweep.
    pub swept_packs: usize,
    /// Bytes of packs deleted by the sweep (reclaimed).
    pub swept_bytes: u64,
    /// Condemned packs the sweep kept, because a snapshot references a chunk in them that has
    /// no other copy (reused by a backup after they were condemned).
    pub kept_packs: usize,
    /// Packs condemned by this run (deleted by a run after the grace period).
    pub condemned_packs: usize,
    /// Bytes of the packs condemned by this run.
    pub condemned_bytes: u64,
    /// Bytes in them that no snapshot references (what the sweep will reclaim, less copies).
    pub garbage_bytes: u64,
    /// Mostly-garbage packs whose live chunks were copied into new packs.
    pub repacked_packs: usize,
    /// Live bytes copied by the repack.
    pub repacked_bytes: u64,
    /// Index segments before and after the run.
    pub segments_before: usize,
    /// Index segments after the run.
    pub segments_after: usize,
    /// Small index segments this run merged into large ones (compaction).
    pub segments_merged: usize,
    /// Segments merged by an earlier run that this run deleted (their grace period over).
    pub segments_removed: usize,
    /// Tombstones still waiting for their grace period after this run.
    pub pending: Vec<Pending>,
    /// Temporary files of killed writes removed (older than the grace period, their writer
    /// gone; see `targets::gc::temporaries`).
    pub temporaries_removed: usize,
    /// Their bytes.
    pub temporary_bytes: u64,
    /// Problems that did not stop the run (damaged chunks left in place, damaged tombstones).
    pub warnings: Vec<String>,
}

/// The repository's index as stored, every segment opened to be streamed (issue 17: its
/// entries are never all in memory).
fn load_index(repo: &Repository) -> Result<Vec<SegmentFile>> {
    let (segments, damaged) = open_segments(repo)?;
    if let Some((key, e)) = damaged.into_iter().next() {
        return Err(Error::Corrupt {
            what: format!("index segment {key}"),
            detail: format!("{e}; run `mover repair index` first"),
        });
    }
    Ok(segments)
}

/// Every chunk referenced by a snapshot, sorted and deduplicated outside memory. Fails when a
/// snapshot cannot be read: its references are unknown, so nothing could be collected safely.
fn live_chunks(repo: &Repository) -> Result<(usize, SortedIds)> {
    let ids = repo.snapshot_ids()?;
    let mut count = 0;
    let mut live = IdSorter::new(RUN_IDS);
    for id in &ids {
        let m = match repo.load_snapshot(id) {
            Err(Error::NotFound { .. }) => continue, // forgotten meanwhile
            other => other,
        };
        let m = m.map_err(|e| match e {
            e if e.is_damage() => Error::Corrupt {
                what: format!("snapshot {}", id.to_hex()),
                detail: format!(
                    "{e}; gc needs every snapshot to know which chunks are in use: run \
                     `mover check`, and `mover forget {}` if it cannot be repaired",
                    &id.to_hex()[..12]
                ),
            },
            e => e,
        })?;
        count += 1;
        for id in m.disks.iter().flat_map(|d| &d.entries).filter_map(|e| e.id) {
            live.push(id)?;
        }
    }
    Ok((count, live.finish()?))
}

/// Runs garbage collection: sweeps tombstones whose grace period is over, then condemns
/// packs that hold only garbage and repacks those that are mostly garbage.
pub fn collect(repo: &Repository, opts: &GcOptions) -> Result<GcReport> {
    let mut report = GcReport::default();
    let tombstones = usable_tombstones(repo, opts, &mut report)?;
    let view = View::load(repo, &tombstones, &mut report)?;
    let (due, pending): (Vec<&Tombstone>, Vec<&Tombstone>) =
        tombstones.iter().partition(|t| view.now >= t.due_ms());
    let deleted = sweep(repo, opts, &view, &due, &mut report)?;
    let still_condemned: HashSet<ObjectId> = pending.iter().flat_map(|t| t.packs.clone()).collect();
    let condemn = mark(repo, opts, &view, &deleted, &still_condemned, &mut report)?;
    report.condemned_packs = condemn.len();
    for t in &pending {
        report.pending.push(Pending {
            key: t.key.clone(),
            packs: t.packs.len(),
            due_ms: t.due_ms(),
        });
    }
    if !opts.dry_run && !condemn.is_empty() {
        let created = now_ms();
        let bytes = Tombstone::encode(created, opts.grace_ms, &condemn);
        let key = tombstone_key(&ObjectId::of(&bytes));
        repo.backend().put(&key, &bytes)?;
        report.pending.push(Pending {
            key,
            packs: condemn.len(),
            due_ms: created.saturating_add(opts.grace_ms),
        });
    }
    (report.temporaries_removed, report.temporary_bytes) =
        crate::temporaries::remove_stale(&**repo.backend(), opts.grace_ms, opts.dry_run)?;
    if !opts.dry_run {
        remove_orphan_catalogs(repo, &mut report)?;
    }
    if !opts.dry_run && opts.compact_segments > 0 {
        let compact = CompactOptions {
            grace_ms: opts.grace_ms,
            min_segments: opts.compact_segments,
            ..CompactOptions::default()
        };
        let c = crate::compact::compact(repo, &compact)?;
        (report.segments_merged, report.segments_removed) = (c.merged, c.removed);
        if c.merged > 0 || c.removed > 0 {
            report.segments_after = repo.backend().list(INDEX_DIR)?.len();
        }
    }
    Ok(report)
}

/// Removes the file catalogs of snapshots that are gone (forgotten by a `forget` that could
/// not remove the catalog, or by hand). Catalogs are listed before snapshots: a catalog is
/// written after its snapshot, so one listed first whose snapshot is then missing is an orphan.
fn remove_orphan_catalogs(repo: &Repository, report: &mut GcReport) -> Result<()> {
    let catalogs = repo.catalog_ids()?;
    if catalogs.is_empty() {
        return Ok(());
    }
    let snapshots: HashSet<ObjectId> = repo.snapshot_ids()?.into_iter().collect();
    for id in catalogs.iter().filter(|id| !snapshots.contains(id)) {
        if let Err(e) = repo.backend().delete(&crate::layout::catalog_key(id)) {
            report.warnings.push(format!(
                "the file catalog of forgotten snapshot {} stays: {e}",
                &id.to_hex()[..12]
            ));
        }
    }
    Ok(())
}

/// The readable tombstones. Damaged ones are removed (they condemn nothing: no run can read
/// what they list, so removing them loses nothing); one from a newer mover stops the run.
fn usable_tombstones(
    repo: &Repository,
    opts: &GcOptions,
    report: &mut GcReport,
) -> Result<Vec<Tombstone>> {
    let tombstones = load_tombstones(&**repo.backend())?;
    if let Some(e) = tombstones.newer {
        return Err(e);
    }
    for (key, e) in &tombstones.damaged {
        if !opts.dry_run {
            repo.backend().delete(key)?;
        }
        report
            .warnings
            .push(format!("{e}; it condemned nothing and was removed"));
    }
    Ok(tombstones.ok)
}

/// What one run sees of the repository. Its memory grows with the packs, not the chunks:
/// the index is read from its segments as a stream or one chunk at a time, and the chunks in
/// use are a sorted file.
struct View {
    now: i64,
    /// Packs that exist.
    existing: HashSet<ObjectId>,
    /// The index segments.
    index: Vec<SegmentFile>,
    /// Chunks referenced by a snapshot.
    live: SortedIds,
    /// What the index says each pack holds (each chunk once).
    by_pack: HashMap<ObjectId, PackStat>,
    /// Packs listed by any readable tombstone.
    condemned: HashSet<ObjectId>,
}

/// What the index says a pack holds, counting each chunk once.
#[derive(Clone, Copy, Debug, Default)]
struct PackStat {
    chunks: u64,
    /// Stored bytes of its chunks.
    stored: u64,
    /// Stored bytes of its chunks that a snapshot references.
    in_use: u64,
    /// Chunks a snapshot references that the index places in no other pack that exists and
    /// is not condemned.
    needed: u64,
}

impl PackStat {
    fn bytes(&self) -> u64 {
        pack_size(self.chunks, self.stored)
    }
}

/// Reads the index once, in id order beside the chunks in use, and sums up each pack.
fn pack_stats(
    index: &[SegmentFile],
    live: &SortedIds,
    existing: &HashSet<ObjectId>,
    condemned: &HashSet<ObjectId>,
) -> Result<HashMap<ObjectId, PackStat>> {
    let mut stats: HashMap<ObjectId, PackStat> = HashMap::new();
    let mut live_ids = live.iter().peekable();
    // The packs holding the current chunk, each once, with its stored length there.
    let mut group: Vec<(ObjectId, u32)> = Vec::new();
    let mut current: Option<ChunkId> = None;
    let mut flush = |id: ChunkId, group: &mut Vec<(ObjectId, u32)>| -> Result<()> {
        let mut in_use = false;
        while let Some(next) = live_ids.peek() {
            match next {
                Ok(l) if *l < id => {
                    live_ids.next();
                }
                Ok(l) => {
                    in_use = *l == id;
                    break;
                }
                Err(_) => return Err(live_ids.next().expect("peeked").expect_err("an error")),
            }
        }
        let good = |q: &ObjectId| existing.contains(q) && !condemned.contains(q);
        for (p, len) in group.iter() {
            let s = stats.entry(*p).or_default();
            s.chunks += 1;
            s.stored += u64::from(*len);
            if in_use {
                s.in_use += u64::from(*len);
                if !group.iter().any(|(q, _)| q != p && good(q)) {
                    s.needed += 1;
                }
            }
        }
        group.clear();
        Ok(())
    };
    for e in Merged::new(index) {
        let e = e?;
        if current != Some(e.blob.id) {
            if let Some(id) = current {
                flush(id, &mut group)?;
            }
            current = Some(e.blob.id);
        }
        if !group.iter().any(|(q, _)| *q == e.pack) {
            group.push((e.pack, e.blob.stored_len));
        }
    }
    if let Some(id) = current {
        flush(id, &mut group)?;
    }
    Ok(stats)
}

impl View {
    /// Packs, then the index, then snapshots: a backup commits in the opposite order (packs,
    /// then its index segment, then its manifest), so whatever this run sees of a backup that
    /// commits meanwhile is consistent, and its packs are never mistaken for unreferenced ones
    /// while its chunks are in use.
    fn load(repo: &Repository, tombstones: &[Tombstone], report: &mut GcReport) -> Result<Self> {
        let now = now_ms();
        let existing = existing_packs(&**repo.backend())?;
        report.packs = existing.len();
        let index = load_index(repo)?;
        report.segments_before = index.len();
        report.segments_after = index.len();
        let (snapshots, live) = live_chunks(repo)?;
        report.snapshots = snapshots;
        report.live_chunks = live.len() as usize;
        let condemned = tombstones.iter().flat_map(|t| t.packs.clone()).collect();
        let by_pack = pack_stats(&index, &live, &existing, &condemned)?;
        Ok(View {
            now,
            existing,
            index,
            live,
            by_pack,
            condemned,
        })
    }

    /// Size of a pack: from its index entries, or asked of the backend for one no index names.
    fn size_of(&self, repo: &Repository, p: &ObjectId) -> Result<u64> {
        match self.by_pack.get(p) {
            Some(s) => Ok(s.bytes()),
            None => repo.backend().size(&pack_key(p)),
        }
    }

    /// Whether a chunk has a copy in a pack other than `p` that exists, is not condemned and
    /// is not in `gone` (asked of every segment: a filter, then one bucket read).
    fn copied_elsewhere(
        &self,
        id: &ChunkId,
        p: &ObjectId,
        gone: &HashSet<ObjectId>,
    ) -> Result<bool> {
        for segment in &self.index {
            for e in segment.lookup(id)? {
                let q = &e.pack;
                if q != p
                    && self.existing.contains(q)
                    && !self.condemned.contains(q)
                    && !gone.contains(q)
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// The chunks of `listed` a snapshot references that have no copy outside `p` and `gone`.
    fn needed(
        &self,
        listed: &[BlobEntry],
        p: &ObjectId,
        gone: &HashSet<ObjectId>,
    ) -> Result<Vec<BlobEntry>> {
        let mut needed = Vec::new();
        for b in listed {
            if self.live.contains(&b.id)? && !self.copied_elsewhere(&b.id, p, gone)? {
                needed.push(*b);
            }
        }
        Ok(needed)
    }
}

/// Deletes the packs of due tombstones that no snapshot needs any more, after rewriting the
/// index without them; removes tombstones past their retention. Returns the deleted packs.
fn sweep(
    repo: &Repository,
    opts: &GcOptions,
    view: &View,
    due: &[&Tombstone],
    report: &mut GcReport,
) -> Result<HashSet<ObjectId>> {
    let mut delete = Vec::new();
    let mut seen = HashSet::new();
    let none = HashSet::new();
    for p in due.iter().flat_map(|t| &t.packs) {
        if !seen.insert(*p) || !view.existing.contains(p) {
            continue;
        }
        let safe = view.by_pack.get(p).is_none_or(|s| s.needed == 0);
        // The index may not tell everything a pack holds (a lost segment): its own list is
        // asked as well.
        let safe = safe && {
            let Some(safe) = may_remove(repo, view, p, &none, report)? else {
                continue; // swept by a concurrent run
            };
            safe
        };
        if safe {
            // None: swept by a concurrent run.
            let Some(bytes) = unless_gone(view.size_of(repo, p))? else {
                continue;
            };
            report.swept_bytes += bytes;
            delete.push(*p);
        } else {
            report.kept_packs += 1;
        }
    }
    report.swept_packs = delete.len();
    let deleted: HashSet<ObjectId> = delete.iter().copied().collect();
    if !opts.dry_run {
        drop_stale_entries(repo, view, &deleted, report)?;
        for p in &delete {
            repo.backend().delete(&pack_key(p))?;
        }
        for t in due
            .iter()
            .filter(|t| view.now >= t.due_ms().saturating_add(TOMBSTONE_RETENTION_MS))
        {
            repo.backend().delete(&t.key)?;
        }
    }
    Ok(deleted)
}

/// Rewrites the index without the entries of `deleted` packs and of condemned packs that are
/// already gone (swept by an earlier or a concurrent run, which an overlapping run may have
/// written back), before the tombstone that would warn backups about them expires. The
/// index goes first: a crash after it leaves only packs no index names, which the next run
/// condemns and deletes again.
fn drop_stale_entries(
    repo: &Repository,
    view: &View,
    deleted: &HashSet<ObjectId>,
    report: &mut GcReport,
) -> Result<()> {
    let gone = |p: &ObjectId| {
        deleted.contains(p) || (view.condemned.contains(p) && !view.existing.contains(p))
    };
    if !view.by_pack.keys().any(gone) {
        return Ok(());
    }
    report.segments_after = rewrite_merged(repo, &view.index, |e| !gone(&e.pack))?;
    Ok(())
}

/// Chooses the packs to condemn: those that hold only garbage, unindexed ones older than the
/// grace period (a running backup writes its index segment only at its end), and mostly-garbage
/// ones once their live chunks are copied out. Returns them.
fn mark(
    repo: &Repository,
    opts: &GcOptions,
    view: &View,
    deleted: &HashSet<ObjectId>,
    still_condemned: &HashSet<ObjectId>,
    report: &mut GcReport,
) -> Result<Vec<ObjectId>> {
    let mut condemn = Vec::new();
    let mut repack = Vec::new();
    let mut repack_budget = opts.max_repack_bytes;
    let mut candidates: Vec<&ObjectId> = view
        .existing
        .iter()
        .filter(|p| !deleted.contains(p) && !still_condemned.contains(p))
        .collect();
    candidates.sort();
    for p in candidates {
        let Some(stat) = view.by_pack.get(p) else {
            // None: removed meanwhile.
            let Some(modified) = unless_gone(repo.backend().modified_ms(&pack_key(p)))? else {
                continue;
            };
            if modified.is_none_or(|m| view.now.saturating_sub(m) >= opts.grace_ms) {
                if may_remove(repo, view, p, &HashSet::new(), report)? != Some(true) {
                    continue;
                }
                let Some(bytes) = unless_gone(view.size_of(repo, p))? else {
                    continue;
                };
                report.condemned_bytes += bytes;
                report.garbage_bytes += bytes;
                condemn.push(*p);
            }
            continue;
        };
        let (total, in_use) = (stat.stored, stat.in_use);
        if in_use == 0 {
            if may_remove(repo, view, p, &HashSet::new(), report)? != Some(true) {
                continue;
            }
            report.condemned_bytes += stat.bytes();
            report.garbage_bytes += total;
            condemn.push(*p);
        } else if (in_use as f64) < opts.repack_below * total as f64 && in_use <= repack_budget {
            repack_budget -= in_use;
            repack.push(*p);
        }
    }
    if !repack.is_empty() {
        condemn.extend(repack_packs(repo, opts, view, &repack, report)?);
    }
    Ok(condemn)
}

/// Copies the live chunks of mostly-garbage packs into new packs; returns the packs whose
/// chunks were all copied (to be condemned).
fn repack_packs(
    repo: &Repository,
    opts: &GcOptions,
    view: &View,
    repack: &[ObjectId],
    report: &mut GcReport,
) -> Result<Vec<ObjectId>> {
    if !opts.dry_run {
        repo.condemn(repack);
    }
    let mut done = Vec::new();
    let mut decoder = chunker::Decoder::with_id_key(repo.id_key());
    let repacking: HashSet<ObjectId> = repack.iter().copied().collect();
    for p in repack {
        let bytes = view.by_pack[p].bytes();
        // What the pack holds by its own list, which the index may not tell in full.
        let listed = match own_contents(repo, p)? {
            Contents::Listed(listed) => listed,
            Contents::Gone => continue,
            Contents::Unreadable(e) => {
                report.warnings.push(unreadable_warning(p, &e));
                continue;
            }
        };
        // Live chunks without another good copy (one may exist from an earlier repack that
        // crashed before its tombstone).
        let wanted = view.needed(&listed, p, &repacking)?;
        let result = if opts.dry_run {
            Ok(wanted.iter().map(|b| u64::from(b.stored_len)).sum())
        } else {
            copy_live(repo, p, &wanted, &mut decoder)
        };
        match result {
            Ok(copied) => {
                report.repacked_packs += 1;
                report.repacked_bytes += copied;
                report.condemned_bytes += bytes;
                report.garbage_bytes += bytes.saturating_sub(copied);
                done.push(*p);
            }
            // Swept by a concurrent run after this one listed it: nothing to do.
            Err(Error::NotFound { .. }) => {}
            Err(e) if e.is_damage() => report.warnings.push(format!(
                "pack {} not repacked: {e}; `mover check` and `mover verify` tell which \
                 snapshots it affects",
                p.to_hex()
            )),
            Err(e) => return Err(e),
        }
    }
    if !opts.dry_run {
        repo.flush()?;
        report.segments_after = repo.backend().list(INDEX_DIR)?.len();
    }
    Ok(done)
}

/// What a pack holds by its own list.
enum Contents {
    /// Its trailer (or the trailer found before bytes appended to it) lists these.
    Listed(Vec<BlobEntry>),
    /// Removed meanwhile.
    Gone,
    /// Its list does not read: what it holds is unknown.
    Unreadable(String),
}

/// Reads a pack's own list of contents. A list followed by appended bytes is found by the
/// pack's id, which it must hash to, so it is exactly what the pack held.
fn own_contents(repo: &Repository, p: &ObjectId) -> Result<Contents> {
    let damage = match repo.pack_contents(p) {
        Ok(listed) => return Ok(Contents::Listed(listed)),
        Err(Error::NotFound { .. }) => return Ok(Contents::Gone),
        Err(e) if e.is_damage() => e,
        Err(e) => return Err(e),
    };
    match repo.backend().get(&pack_key(p)) {
        Ok(bytes) => Ok(match embedded_trailer(repo.crypto(), p, &bytes) {
            Some((_, listed)) => Contents::Listed(listed),
            None => Contents::Unreadable(damage.to_string()),
        }),
        Err(Error::NotFound { .. }) => Ok(Contents::Gone),
        Err(e) if e.is_damage() => Ok(Contents::Unreadable(damage.to_string())),
        Err(e) => Err(e),
    }
}

fn unreadable_warning(p: &ObjectId, e: &str) -> String {
    format!(
        "pack {}: {e}; gc cannot tell what it holds, so it leaves it; `mover repair index` \
         recovers its entries",
        p.to_hex()
    )
}

/// Whether `p` may be condemned or deleted, by its own list: every chunk in it that a snapshot
/// references must have a copy the index places in another pack that stays (not condemned,
/// not in `gone`). A pack whose list does not read is kept. `None`: the pack is gone. Why a
/// pack is kept goes into the report's warnings.
///
/// This is what keeps a lost or stale index segment from costing data (issue 14): the index
/// alone would take such a pack for garbage.
fn may_remove(
    repo: &Repository,
    view: &View,
    p: &ObjectId,
    gone: &HashSet<ObjectId>,
    report: &mut GcReport,
) -> Result<Option<bool>> {
    let listed = match own_contents(repo, p)? {
        Contents::Listed(listed) => listed,
        Contents::Gone => return Ok(None),
        Contents::Unreadable(e) => {
            report.warnings.push(unreadable_warning(p, &e));
            return Ok(Some(false));
        }
    };
    let needed: HashSet<ChunkId> = view
        .needed(&listed, p, gone)?
        .iter()
        .map(|b| b.id)
        .collect();
    if needed.is_empty() {
        return Ok(Some(true));
    }
    report.warnings.push(format!(
        "pack {} holds {} chunks that snapshots use and the index places nowhere else, but \
         the index does not name them there (an index segment lost or damaged?); gc leaves \
         it; run `mover repair index`",
        p.to_hex(),
        needed.len()
    ));
    Ok(Some(false))
}

/// Copies chunks of `pack` into the repository's open pack (checking each against its id
/// first, so damage is never copied). Returns the stored bytes copied.
fn copy_live(
    repo: &Repository,
    pack: &ObjectId,
    blobs: &[BlobEntry],
    decoder: &mut chunker::Decoder,
) -> Result<u64> {
    let bytes = repo.backend().get(&pack_key(pack))?;
    let mut copied = 0;
    let mut plain = Vec::new();
    if blobs.is_empty() {
        return Ok(0);
    }
    for b in blobs {
        let (start, end) = (b.offset as usize, (b.offset + b.stored_len) as usize);
        let stored = bytes.get(start..end).ok_or_else(|| Error::Corrupt {
            what: format!("pack {}", pack.to_hex()),
            detail: "shorter than its index says (truncated)".into(),
        })?;
        // Opened (in an encrypted repository) here, sealed afresh by `put`.
        let frame = chunker::Frame {
            compression: b.compression,
            raw_len: b.raw_len,
            bytes: crate::crypt::blob_in(repo.crypto(), pack, &b.id, stored.to_vec())?,
        };
        decoder.decode_into(&frame, &b.id, &mut plain)?;
        repo.put(&b.id, frame)?;
        copied += u64::from(b.stored_len);
    }
    Ok(copied)
}

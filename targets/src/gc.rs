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

use chunker::format::{BlobEntry, IndexEntry, Manifest, ObjectId};
use chunker::ChunkId;

use crate::repo::{now_ms, object_ids, pack_key};
use crate::{Backend, ChunkStore, Error, Repository, Result};

/// Magic of a tombstone.
pub const TOMBSTONE_MAGIC: [u8; 8] = *b"mvr-gc\x00\x01";

/// How long a tombstone stays after its grace period, so that a backup that began before it
/// still sees, at commit, that packs it reused were swept: 7 days.
pub const TOMBSTONE_RETENTION_MS: i64 = 7 * 86_400_000;

/// Index entries per rewritten index segment.
const SEGMENT_ENTRIES: usize = 100_000;

/// A set of packs condemned by one `gc` run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// Its key (`gc/<id>`).
    pub key: String,
    /// When the packs were condemned, ms since the Unix epoch.
    pub created_ms: i64,
    /// The grace period, ms: the packs may be deleted from `created_ms + grace_ms` on.
    pub grace_ms: i64,
    /// The condemned packs.
    pub packs: Vec<ObjectId>,
}

impl Tombstone {
    /// Encodes a tombstone.
    ///
    /// | offset | size | field |
    /// |---|---|---|
    /// | 0 | 8 | [`TOMBSTONE_MAGIC`] |
    /// | 8 | 4 | format version (1) |
    /// | 12 | 4 | pack count N |
    /// | 16 | 8 | created, ms since the Unix epoch (i64) |
    /// | 24 | 8 | grace period, ms (i64) |
    /// | 32 | 32 × N | pack ids |
    /// | end − 32 | 32 | BLAKE3 of all preceding bytes |
    pub fn encode(created_ms: i64, grace_ms: i64, packs: &[ObjectId]) -> Vec<u8> {
        let mut o = Vec::with_capacity(64 + 32 * packs.len());
        o.extend_from_slice(&TOMBSTONE_MAGIC);
        o.extend_from_slice(&1u32.to_le_bytes());
        o.extend_from_slice(&(packs.len() as u32).to_le_bytes());
        o.extend_from_slice(&created_ms.to_le_bytes());
        o.extend_from_slice(&grace_ms.to_le_bytes());
        for p in packs {
            o.extend_from_slice(&p.0);
        }
        let sum = blake3::hash(&o);
        o.extend_from_slice(sum.as_bytes());
        o
    }

    /// Decodes and checks a tombstone stored under `key`.
    pub fn decode(key: &str, b: &[u8]) -> Result<Self> {
        let corrupt = |detail: &str| Error::Corrupt {
            what: format!("tombstone {key}"),
            detail: detail.into(),
        };
        if b.len() < 64 || b[..8] != TOMBSTONE_MAGIC {
            return Err(corrupt("bad magic or truncated"));
        }
        let (body, sum) = b.split_at(b.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(corrupt("checksum mismatch"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let i64_at = |i: usize| i64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if u32_at(8) != 1 {
            return Err(Error::Format(chunker::Error::UnsupportedVersion {
                what: "tombstone",
                found: u32_at(8),
                supported: 1,
            }));
        }
        let count = u32_at(12) as usize;
        if body.len() != 32 + 32 * count {
            return Err(corrupt("pack count does not match the length"));
        }
        Ok(Tombstone {
            key: key.to_string(),
            created_ms: i64_at(16),
            grace_ms: i64_at(24),
            packs: body[32..]
                .chunks_exact(32)
                .map(|p| ObjectId(p.try_into().expect("32 bytes")))
                .collect(),
        })
    }

    /// From when the packs may be deleted.
    pub fn due_ms(&self) -> i64 {
        self.created_ms.saturating_add(self.grace_ms)
    }

    /// Until when a backup that reuses a chunk of these packs may still commit.
    pub fn commit_deadline_ms(&self) -> i64 {
        self.created_ms.saturating_add(self.grace_ms / 2)
    }
}

/// The tombstones of a repository.
#[derive(Debug, Default)]
pub struct TombstoneSet {
    /// Every readable tombstone, oldest first.
    pub ok: Vec<Tombstone>,
    /// Tombstones that do not decode (key, what is wrong). They condemn nothing: no `gc` can
    /// sweep what they list, so their packs stay.
    pub damaged: Vec<(String, String)>,
    /// A tombstone written by a newer mover, which this one cannot read: backups must not
    /// commit (a newer `gc` will sweep what it lists) and `gc` must not run.
    pub newer: Option<Error>,
}

/// Every tombstone in the repository.
pub fn load_tombstones(backend: &dyn Backend) -> Result<TombstoneSet> {
    let mut set = TombstoneSet::default();
    for key in backend.list("gc")? {
        match backend.get(&key) {
            Ok(b) => match Tombstone::decode(&key, &b) {
                Ok(t) => set.ok.push(t),
                Err(e @ Error::Format(chunker::Error::UnsupportedVersion { .. })) => {
                    set.newer.get_or_insert(Error::Backend {
                        location: key.clone(),
                        detail: e.to_string(),
                    });
                }
                Err(e) => set.damaged.push((key.clone(), e.to_string())),
            },
            Err(Error::NotFound { .. }) => {} // removed meanwhile
            Err(e) => return Err(e),
        }
    }
    set.ok.sort_by_key(|t| t.created_ms);
    Ok(set)
}

/// Refuses to commit `manifest` when it references a chunk that `locate` places in a pack
/// condemned long enough ago that a sweep may remove it before the snapshot is visible.
pub fn check_commit(
    tombstones: &[Tombstone],
    manifest: &Manifest,
    locate: impl Fn(&ChunkId) -> Option<ObjectId>,
) -> Result<()> {
    if tombstones.is_empty() {
        return Ok(());
    }
    let mut deadline: HashMap<ObjectId, i64> = HashMap::new();
    for t in tombstones {
        for p in &t.packs {
            let d = deadline.entry(*p).or_insert(i64::MAX);
            *d = (*d).min(t.commit_deadline_ms());
        }
    }
    let now = now_ms();
    let mut seen = HashSet::new();
    let at_risk = manifest
        .disks
        .iter()
        .flat_map(|d| &d.entries)
        .filter_map(|e| e.id)
        .filter(|id| seen.insert(*id))
        .filter(|id| locate(id).is_some_and(|p| deadline.get(&p).is_some_and(|&d| now >= d)))
        .count();
    if at_risk > 0 {
        return Err(Error::Collected {
            detail: format!(
                "{at_risk} chunks this backup reused are in packs that garbage collection condemned"
            ),
        });
    }
    Ok(())
}

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
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace_ms: 3_600_000,
            dry_run: false,
            max_repack_bytes: u64::MAX,
            repack_below: 0.5,
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
    /// Tombstones still waiting for their grace period after this run.
    pub pending: Vec<Pending>,
    /// Problems that did not stop the run (damaged chunks left in place, damaged tombstones).
    pub warnings: Vec<String>,
}

/// The repository's index as stored: every segment with its entries.
struct StoredIndex {
    segments: Vec<String>,
    entries: Vec<IndexEntry>,
}

fn load_index(repo: &Repository) -> Result<StoredIndex> {
    let (segments, entries, damaged) = load_segments(repo)?;
    if let Some((key, e)) = damaged.into_iter().next() {
        return Err(Error::Corrupt {
            what: format!("index segment {key}"),
            detail: format!("{e}; run `mover repair index` first"),
        });
    }
    Ok(StoredIndex { segments, entries })
}

/// Segment keys loaded, their entries, and damaged segments with what is wrong.
type Segments = (Vec<String>, Vec<IndexEntry>, Vec<(String, Error)>);

/// Every index segment's entries, and the damaged segments. A segment listed but gone when
/// read was replaced by a concurrent `gc` (which writes its replacement first): the listing
/// is read again.
fn load_segments(repo: &Repository) -> Result<Segments> {
    let mut loaded = Vec::new();
    let mut entries = Vec::new();
    let mut damaged = Vec::new();
    for attempt in 0..4 {
        let mut vanished = false;
        for key in repo.backend().list("index")? {
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

/// Every chunk referenced by a snapshot. Fails when a snapshot cannot be read: its
/// references are unknown, so nothing could be collected safely.
fn live_chunks(repo: &Repository) -> Result<(usize, HashSet<ChunkId>)> {
    let ids = repo.snapshot_ids()?;
    let mut count = 0;
    let mut live = HashSet::new();
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
        live.extend(m.disks.iter().flat_map(|d| &d.entries).filter_map(|e| e.id));
    }
    Ok((count, live))
}

fn existing_packs(backend: &dyn Backend) -> Result<HashSet<ObjectId>> {
    object_ids(backend, "packs")
}

/// `None` for an object that is gone: removed by a concurrent run after this one listed it.
fn unless_gone<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Size of a pack from its index entries (packs are header, blobs back to back, trailer).
fn pack_bytes(entries: &[BlobEntry]) -> u64 {
    let blobs: u64 = entries.iter().map(|b| u64::from(b.stored_len)).sum();
    (chunker::format::PACK_HEADER_LEN
        + chunker::format::PACK_FOOTER_LEN
        + entries.len() * chunker::format::PACK_ENTRY_LEN) as u64
        + blobs
}

/// Rewrites the index as `entries` (in segments), then removes the segments in `old`.
fn rewrite_index(repo: &Repository, entries: &[IndexEntry], old: &[String]) -> Result<usize> {
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

/// Runs garbage collection: sweeps tombstones whose grace period is over, then condemns
/// packs that hold only garbage and repacks those that are mostly garbage.
pub fn collect(repo: &Repository, opts: &GcOptions) -> Result<GcReport> {
    let backend = repo.backend();
    let now = now_ms();
    let mut report = GcReport::default();
    let tombstones = load_tombstones(&**backend)?;
    if let Some(e) = tombstones.newer {
        return Err(e);
    }
    for (key, e) in &tombstones.damaged {
        // It condemns nothing (no run can read what it lists), so removing it loses nothing.
        if !opts.dry_run {
            backend.delete(key)?;
        }
        report
            .warnings
            .push(format!("{e}; it condemned nothing and was removed"));
    }
    let tombstones = tombstones.ok;
    // Packs, then the index, then snapshots: a backup commits in the opposite order (packs,
    // then its index segment, then its manifest), so whatever this run sees of a backup that
    // commits meanwhile is consistent, and its packs are never mistaken for unreferenced ones
    // while its chunks are in use.
    let existing = existing_packs(&**backend)?;
    report.packs = existing.len();
    let index = load_index(repo)?;
    report.segments_before = index.segments.len();
    let (snapshots, live) = live_chunks(repo)?;
    report.snapshots = snapshots;
    report.live_chunks = live.len();

    let mut by_pack: HashMap<ObjectId, Vec<BlobEntry>> = HashMap::new();
    let mut holders: HashMap<ChunkId, Vec<ObjectId>> = HashMap::new();
    for e in &index.entries {
        let blobs = by_pack.entry(e.pack).or_default();
        if !blobs.iter().any(|b| b.id == e.blob.id) {
            blobs.push(e.blob);
            holders.entry(e.blob.id).or_default().push(e.pack);
        }
    }
    let condemned: HashSet<ObjectId> = tombstones.iter().flat_map(|t| t.packs.clone()).collect();
    let size_of = |p: &ObjectId| match by_pack.get(p) {
        Some(b) => Ok(pack_bytes(b)),
        None => backend.size(&pack_key(p)),
    };
    // Whether a chunk has a copy in a pack other than `p` that exists and is not condemned.
    let copied_elsewhere = |id: &ChunkId, p: &ObjectId, gone: &HashSet<ObjectId>| {
        holders[id]
            .iter()
            .any(|q| q != p && existing.contains(q) && !condemned.contains(q) && !gone.contains(q))
    };

    // Sweep.
    let (due, pending): (Vec<&Tombstone>, Vec<&Tombstone>) =
        tombstones.iter().partition(|t| now >= t.due_ms());
    let mut delete = Vec::new();
    let mut seen = HashSet::new();
    for p in due.iter().flat_map(|t| &t.packs) {
        if !seen.insert(*p) || !existing.contains(p) {
            continue;
        }
        let none = HashSet::new();
        let safe = by_pack.get(p).is_none_or(|blobs| {
            blobs
                .iter()
                .filter(|b| live.contains(&b.id))
                .all(|b| copied_elsewhere(&b.id, p, &none))
        });
        if safe {
            // None: swept by a concurrent run.
            let Some(bytes) = unless_gone(size_of(p))? else {
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
    // Entries of condemned packs that are already gone (swept by an earlier or a concurrent
    // run, which an overlapping run may have written back): dropped with the deleted ones,
    // before the tombstone that would warn backups about them expires.
    let gone =
        |p: &ObjectId| deleted.contains(p) || (condemned.contains(p) && !existing.contains(p));
    let stale = index.entries.iter().any(|e| gone(&e.pack));
    let mut segments_after = index.segments.len();
    if !opts.dry_run && stale {
        // The index first: a crash after it leaves only packs no index names, which the
        // next run condemns and deletes again.
        let mut kept: Vec<IndexEntry> = index
            .entries
            .iter()
            .filter(|e| !gone(&e.pack))
            .copied()
            .collect();
        kept.sort_by_key(|e| (e.pack, e.blob.offset));
        kept.dedup();
        segments_after = rewrite_index(repo, &kept, &index.segments)?;
    }
    if !opts.dry_run {
        for p in &delete {
            backend.delete(&pack_key(p))?;
        }
    }
    if !opts.dry_run {
        for t in due
            .iter()
            .filter(|t| now >= t.due_ms().saturating_add(TOMBSTONE_RETENTION_MS))
        {
            backend.delete(&t.key)?;
        }
    }

    // Mark.
    let still_condemned: HashSet<ObjectId> = pending.iter().flat_map(|t| t.packs.clone()).collect();
    let mut condemn = Vec::new();
    let mut repack = Vec::new();
    let mut repack_budget = opts.max_repack_bytes;
    let mut candidates: Vec<&ObjectId> = existing
        .iter()
        .filter(|p| !deleted.contains(p) && !still_condemned.contains(p))
        .collect();
    candidates.sort();
    // An unindexed pack younger than the grace period may belong to a backup still running
    // (its index segment comes at its end).
    let orphan_age = opts.grace_ms;
    for p in candidates {
        let Some(blobs) = by_pack.get(p) else {
            // None: removed meanwhile.
            let Some(modified) = unless_gone(backend.modified_ms(&pack_key(p)))? else {
                continue;
            };
            if modified.is_none_or(|m| now.saturating_sub(m) >= orphan_age) {
                let Some(bytes) = unless_gone(size_of(p))? else {
                    continue;
                };
                report.condemned_bytes += bytes;
                report.garbage_bytes += bytes;
                condemn.push(*p);
            }
            continue;
        };
        let total: u64 = blobs.iter().map(|b| u64::from(b.stored_len)).sum();
        let in_use: u64 = blobs
            .iter()
            .filter(|b| live.contains(&b.id))
            .map(|b| u64::from(b.stored_len))
            .sum();
        if in_use == 0 {
            report.condemned_bytes += pack_bytes(blobs);
            report.garbage_bytes += total;
            condemn.push(*p);
        } else if (in_use as f64) < opts.repack_below * total as f64 && in_use <= repack_budget {
            repack_budget -= in_use;
            repack.push(*p);
        }
    }
    if !repack.is_empty() {
        if !opts.dry_run {
            repo.condemn(&repack);
        }
        let mut decoder = chunker::Decoder::with_id_key(repo.id_key());
        let repacking: HashSet<ObjectId> = repack.iter().copied().collect();
        for p in &repack {
            let blobs = &by_pack[p];
            // Live chunks without another good copy (one may exist from an earlier repack
            // that crashed before its tombstone).
            let wanted: Vec<BlobEntry> = blobs
                .iter()
                .filter(|b| live.contains(&b.id) && !copied_elsewhere(&b.id, p, &repacking))
                .copied()
                .collect();
            let result = if opts.dry_run {
                Ok(wanted.iter().map(|b| u64::from(b.stored_len)).sum())
            } else {
                copy_live(repo, p, &wanted, &mut decoder)
            };
            match result {
                Ok(copied) => {
                    report.repacked_packs += 1;
                    report.repacked_bytes += copied;
                    report.condemned_bytes += pack_bytes(blobs);
                    report.garbage_bytes += pack_bytes(blobs).saturating_sub(copied);
                    condemn.push(*p);
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
            segments_after = backend.list("index")?.len();
        }
    }
    report.condemned_packs = condemn.len();
    report.segments_after = segments_after;
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
        let key = format!("gc/{}", ObjectId::of(&bytes).to_hex());
        backend.put(&key, &bytes)?;
        report.pending.push(Pending {
            key,
            packs: condemn.len(),
            due_ms: created.saturating_add(opts.grace_ms),
        });
    }
    Ok(report)
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
        // A pack the index named is gone: a concurrent gc swept it after rewriting the index.
        // Read the index again (it now names where those chunks live) and ask about packs
        // written since the listing one by one.
        let (s2, e2, d2) = load_segments(repo)?;
        (segments, damaged, by_pack) = (s2, d2, by_pack_of(e2));
        for p in by_pack.keys() {
            if !existing.contains(p) && backend.size(&pack_key(p)).is_ok() {
                existing.insert(*p);
            }
        }
    }
    r.segments = segments.len() + damaged.len();
    for (key, e) in damaged {
        r.errors.push(format!(
            "index segment {key}: {e}; run `mover repair index` to rebuild the index from the packs"
        ));
    }
    r.packs = existing.len();
    let condemned: HashSet<ObjectId> = tombstones.ok.iter().flat_map(|t| t.packs.clone()).collect();
    let mut indexed: HashSet<ChunkId> = HashSet::new();
    let mut packs: Vec<(&ObjectId, &Vec<BlobEntry>)> = by_pack.iter().collect();
    packs.sort_by_key(|(p, _)| **p);
    for (p, blobs) in packs {
        if !existing.contains(p) {
            // A condemned pack already swept: its entries go at the next index rewrite.
            if !condemned.contains(p) {
                r.errors.push(format!(
                    "pack {} is missing: the index names {} chunks in it",
                    p.to_hex(),
                    blobs.len()
                ));
            }
            continue;
        }
        match repo.pack_contents(p) {
            Ok(trailer) => {
                let held: HashSet<(ChunkId, u32, u32)> = trailer
                    .iter()
                    .map(|b| (b.id, b.offset, b.stored_len))
                    .collect();
                let wrong = blobs
                    .iter()
                    .filter(|b| !held.contains(&(b.id, b.offset, b.stored_len)))
                    .count();
                if wrong > 0 {
                    r.errors.push(format!(
                        "pack {}: {wrong} index entries do not match the pack's own list; run \
                         `mover repair index`",
                        p.to_hex()
                    ));
                } else {
                    indexed.extend(blobs.iter().map(|b| b.id));
                }
            }
            Err(Error::NotFound { .. }) => {} // swept meanwhile
            Err(e) if e.is_damage() => r.errors.push(format!(
                "pack {}: {e}; `mover verify` tells which snapshots it affects",
                p.to_hex()
            )),
            Err(e) => return Err(e),
        }
    }
    r.chunks = indexed.len();
    let orphans = existing.iter().filter(|p| !by_pack.contains_key(p)).count();
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
    for id in snapshot_ids {
        match repo.load_snapshot(&id) {
            Ok(m) => {
                r.snapshots += 1;
                let mut seen = HashSet::new();
                let lost = m
                    .disks
                    .iter()
                    .flat_map(|d| &d.entries)
                    .filter_map(|e| e.id)
                    .filter(|c| seen.insert(*c))
                    .filter(|c| !indexed.contains(c))
                    .count();
                if lost > 0 {
                    r.errors.push(format!(
                        "snapshot {} ({}): {lost} chunks it references are in no intact pack; \
                         `mover repair snapshots` marks it damaged",
                        id.to_hex(),
                        m.name
                    ));
                }
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
    Ok(r)
}

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
    /// Packs whose own list could not be read (their chunks are not indexed).
    pub unreadable: Vec<String>,
}

/// Rebuilds the index from the packs' own lists of contents, then removes the old segments.
pub fn repair_index(repo: &Repository, dry_run: bool) -> Result<RepairIndexReport> {
    let backend = repo.backend();
    let old = backend.list("index")?;
    let mut packs: Vec<ObjectId> = existing_packs(&**backend)?.into_iter().collect();
    packs.sort();
    let mut entries = Vec::new();
    let mut r = RepairIndexReport {
        packs: packs.len(),
        old_segments: old.len(),
        ..RepairIndexReport::default()
    };
    for p in &packs {
        match repo.pack_contents(p) {
            Ok(blobs) => {
                entries.extend(blobs.into_iter().map(|blob| IndexEntry { pack: *p, blob }))
            }
            Err(e) if e.is_damage() => r.unreadable.push(format!("pack {}: {e}", p.to_hex())),
            Err(e) => return Err(e),
        }
    }
    r.chunks = entries
        .iter()
        .map(|e| e.blob.id)
        .collect::<HashSet<_>>()
        .len();
    if !dry_run {
        r.new_segments = rewrite_index(repo, &entries, &old)?;
    }
    Ok(r)
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

/// The key of a snapshot's damage mark.
pub fn damage_key(id: &ObjectId) -> String {
    format!("damaged/{}", id.to_hex())
}

/// Snapshots marked damaged by `repair snapshots`.
pub fn damaged_marks(backend: &dyn Backend) -> Result<HashSet<ObjectId>> {
    object_ids(backend, "damaged")
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

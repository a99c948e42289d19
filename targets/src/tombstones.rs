//! Tombstones: the packs one `gc` run condemned, and what a backup checks against them before
//! it commits (see `gc.rs` for the whole protocol and `docs/FORMAT.md` for the bytes).

use std::collections::{HashMap, HashSet};

use chunker::format::{Manifest, ObjectId};
use chunker::le::{Reader, Writer};
use chunker::ChunkId;

use crate::layout::{now_ms, GC_DIR};
use crate::{Backend, Error, Result};

/// Magic of a tombstone.
pub const TOMBSTONE_MAGIC: [u8; 8] = *b"mvr-gc\x00\x01";

/// How long a tombstone stays after its grace period, so that a backup that began before it
/// still sees, at commit, that packs it reused were swept: 7 days.
pub const TOMBSTONE_RETENTION_MS: i64 = 7 * 86_400_000;

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
        let mut o = Writer::with_capacity(64 + 32 * packs.len());
        o.bytes(&TOMBSTONE_MAGIC);
        o.u32(1);
        o.u32(packs.len() as u32);
        o.i64(created_ms);
        o.i64(grace_ms);
        for p in packs {
            o.bytes(&p.0);
        }
        o.into_checksummed()
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
        let mut r = Reader::new("tombstone", body);
        r.skip(8)?;
        let version = r.u32()?;
        if version != 1 {
            return Err(Error::Format(chunker::Error::UnsupportedVersion {
                what: "tombstone",
                found: version,
                supported: 1,
            }));
        }
        let count = r.u32()? as usize;
        if r.remaining() != 16 + 32 * count {
            return Err(corrupt("pack count does not match the length"));
        }
        let created_ms = r.i64()?;
        let grace_ms = r.i64()?;
        let packs = (0..count)
            .map(|_| r.array().map(ObjectId))
            .collect::<chunker::Result<_>>()?;
        Ok(Tombstone {
            key: key.to_string(),
            created_ms,
            grace_ms,
            packs,
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
    for key in backend.list(GC_DIR)? {
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

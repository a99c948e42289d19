//! How much of a locked repository its locks cover, for `check` and `doctor` (issue 18).

use std::collections::HashMap;

use chunker::format::ObjectId;

use super::generations::packs_of;
use super::LockPolicy;
use crate::layout::{now_ms, pack_key};
use crate::{Repository, Result};

/// How much of a locked repository is covered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockCoverage {
    /// The policy (`None`: the repository is not locked, the rest is empty).
    pub policy: Option<LockPolicy>,
    /// Snapshots whose manifest and every pack are locked now.
    pub snapshots_locked: usize,
    /// All snapshots.
    pub snapshots: usize,
    /// Packs referenced by a snapshot and locked now.
    pub packs_locked: usize,
    /// Packs referenced by a snapshot.
    pub packs: usize,
    /// Snapshots younger than the lock window that are not wholly locked: a problem.
    pub exposed: usize,
    /// The earliest lock end among referenced packs and snapshots, ms since the epoch.
    pub earliest_until_ms: Option<i64>,
}

/// Asks the server how far each snapshot (its manifest object and every pack it
/// references) is locked. A repository without a lock policy costs one cached lookup.
pub fn lock_coverage(repo: &Repository) -> Result<LockCoverage> {
    let backend = repo.backend();
    let Some(policy) = backend.lock_policy()? else {
        return Ok(LockCoverage::default());
    };
    let now = now_ms();
    let mut report = LockCoverage {
        policy: Some(policy),
        ..LockCoverage::default()
    };
    let mut until_of: HashMap<ObjectId, Option<i64>> = HashMap::new();
    let mut note = |u: Option<i64>| {
        if let Some(u) = u {
            report.earliest_until_ms = Some(report.earliest_until_ms.map_or(u, |e| e.min(u)));
        }
        u.is_some_and(|u| u > now)
    };
    for (id, manifest) in repo.snapshots()? {
        let packs = packs_of(&manifest, |c| repo.locate(c).map(|l| l.0));
        let young = manifest.created_ms + policy.window_ms() > now;
        let own = note(backend.locked_until_ms(&format!("snapshots/{}", id.to_hex()))?);
        let mut all = own;
        for pack in &packs {
            let u = match until_of.get(pack) {
                Some(u) => *u,
                None => {
                    let u = backend.locked_until_ms(&pack_key(pack))?;
                    until_of.insert(*pack, u);
                    all &= note(u);
                    u
                }
            };
            all &= u.is_some_and(|u| u > now);
        }
        report.snapshots += 1;
        report.snapshots_locked += usize::from(all);
        report.exposed += usize::from(young && !all);
    }
    report.packs = until_of.len();
    report.packs_locked = until_of
        .values()
        .filter(|u| u.is_some_and(|u| u > now))
        .count();
    Ok(report)
}

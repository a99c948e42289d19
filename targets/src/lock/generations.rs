//! Locks that follow the snapshots: the packs a backup needs are extended, in generations,
//! before it commits (see `crate::lock`).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use chunker::format::{Manifest, ObjectId};
use chunker::ChunkId;

use super::GENERATION_MS;
use crate::backend::Backend;
use crate::error::Result;
use crate::layout::{now_ms, pack_key};

/// The packs `manifest` references, by `locate` (chunk → pack).
pub fn packs_of(
    manifest: &Manifest,
    locate: impl Fn(&ChunkId) -> Option<ObjectId>,
) -> BTreeSet<ObjectId> {
    manifest
        .disks
        .iter()
        .flat_map(|d| &d.entries)
        .filter_map(|e| e.id)
        .filter_map(|id| locate(&id))
        .collect()
}

fn load_cache(path: Option<&Path>) -> HashMap<ObjectId, i64> {
    let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else {
        return HashMap::new();
    };
    text.lines()
        .filter_map(|l| {
            let (id, until) = l.split_once(' ')?;
            Some((ObjectId::from_hex(id)?, until.parse().ok()?))
        })
        .collect()
}

fn save_cache(path: Option<&Path>, known: &HashMap<ObjectId, i64>) {
    let Some(path) = path else { return };
    let text: String = known
        .iter()
        .map(|(id, until)| format!("{} {until}\n", id.to_hex()))
        .collect();
    let tmp = path.with_extension("tmp");
    let saved = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&tmp, text))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = saved {
        tracing::debug!("lock cache {}: {e}", path.display());
    }
}

/// Makes sure every pack of `packs` is locked for the policy's window from now, extending
/// those whose lock ends sooner by a generation; `cache` is the local record of what each
/// pack is known to be locked until. Returns how many were extended. A backend without a
/// lock policy costs nothing.
pub fn cover_packs(
    backend: &dyn Backend,
    packs: &BTreeSet<ObjectId>,
    cache: Option<&Path>,
) -> Result<usize> {
    let Some(policy) = backend.lock_policy()? else {
        return Ok(0);
    };
    let need = now_ms() + policy.window_ms();
    let mut known = load_cache(cache);
    let mut extended = 0;
    for pack in packs {
        let key = pack_key(pack);
        let until = match known.get(pack) {
            Some(u) if *u >= need => continue,
            Some(u) => Some(*u),
            None => backend.locked_until_ms(&key)?,
        };
        let until = match until {
            Some(u) if u >= need => u,
            _ => {
                let later = need + GENERATION_MS;
                backend.extend_lock(&key, later)?;
                extended += 1;
                later
            }
        };
        known.insert(*pack, until);
    }
    save_cache(cache, &known);
    if extended > 0 {
        tracing::info!("extended the lock of {extended} packs to the next generation");
    }
    Ok(extended)
}

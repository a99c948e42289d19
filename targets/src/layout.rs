//! Where things live in a repository: the keys of its objects, and the small helpers every
//! part of the repository shares (object listings, the clock, random bytes).
//!
//! ```text
//! config                 repository config (format version, id)
//! keys/<id>              key objects of an encrypted repository
//! packs/ab/<pack id>     packs of encoded chunks, each with a trailer listing its contents
//! index/<segment id>     index segments: chunk id -> pack, offset, lengths
//! snapshots/<id>         snapshot manifests
//! gc/<id>                tombstones of garbage collection
//! damaged/<snapshot id>  damage marks written by `repair snapshots`
//! lock                   Object Lock policy (`mode=…`, `days=…`) of an immutable S3 repository
//! ```

use chunker::format::ObjectId;

use crate::{Backend, Result};

/// The repository config.
pub(crate) const CONFIG_KEY: &str = "config";
/// Key objects of an encrypted repository.
pub(crate) const KEYS_DIR: &str = "keys";
/// Packs, fanned out by the first byte of their id.
pub(crate) const PACKS_DIR: &str = "packs";
/// Index segments.
pub(crate) const INDEX_DIR: &str = "index";
/// Snapshot manifests.
pub(crate) const SNAPSHOTS_DIR: &str = "snapshots";
/// Tombstones of garbage collection.
pub(crate) const GC_DIR: &str = "gc";
/// Damage marks of snapshots.
pub(crate) const DAMAGED_DIR: &str = "damaged";
/// File catalogs of snapshots.
pub(crate) const CATALOGS_DIR: &str = "catalogs";

/// The key of a pack.
pub fn pack_key(id: &ObjectId) -> String {
    let hex = id.to_hex();
    format!("{PACKS_DIR}/{}/{hex}", &hex[..2])
}

/// The key of a snapshot manifest.
pub(crate) fn snapshot_key(id: &ObjectId) -> String {
    format!("{SNAPSHOTS_DIR}/{}", id.to_hex())
}

/// The key of the index segment named `name` (its id in hex).
pub(crate) fn segment_key(name: &str) -> String {
    format!("{INDEX_DIR}/{name}")
}

/// The key of a key object.
pub(crate) fn key_object_key(id: &str) -> String {
    format!("{KEYS_DIR}/{id}")
}

/// The key of a tombstone.
pub(crate) fn tombstone_key(id: &ObjectId) -> String {
    format!("{GC_DIR}/{}", id.to_hex())
}

/// The key of a snapshot's damage mark.
pub fn damage_key(id: &ObjectId) -> String {
    format!("{DAMAGED_DIR}/{}", id.to_hex())
}

/// The key of a snapshot's file catalog.
pub fn catalog_key(id: &ObjectId) -> String {
    format!("{CATALOGS_DIR}/{}", id.to_hex())
}

/// The last part of a key (`index/<name>` → `<name>`).
pub(crate) fn key_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// The ids of the objects below `dir` that are named by an id (`dir/<hex>` or
/// `dir/<fan-out>/<hex>`); other names are skipped.
pub(crate) fn object_ids<C: FromIterator<ObjectId>>(backend: &dyn Backend, dir: &str) -> Result<C> {
    Ok(backend
        .list(dir)?
        .iter()
        .filter_map(|k| ObjectId::from_hex(key_name(k)))
        .collect())
}

// A damaged or lost config (issue 14, item 9): what tells it apart from a location that
// holds no repository. `repo.rs` reports it, `config_repair.rs` repairs it.

/// Whether a location whose config does not decode holds a repository: the config starts with
/// the config magic, or there are packs, index segments, snapshots or key objects.
pub(crate) fn holds_repository(backend: &dyn Backend, config: Option<&[u8]>) -> Result<bool> {
    if config.is_some_and(|c| c.starts_with(&chunker::format::CONFIG_MAGIC)) {
        return Ok(true);
    }
    for dir in [SNAPSHOTS_DIR, INDEX_DIR, KEYS_DIR, PACKS_DIR] {
        if !backend.list(dir)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether stored config bytes carry a good checksum (the last 32 bytes are BLAKE3 of the
/// rest): a config from a newer mover does, a damaged one does not.
pub(crate) fn checksum_holds(bytes: &[u8]) -> bool {
    bytes.len() > 32 && {
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        chunker::format::ObjectId::of(body).0[..] == sum[..]
    }
}

/// The error for a repository whose config is damaged or lost.
pub(crate) fn config_damaged(location: &str, detail: impl Into<String>) -> crate::Error {
    crate::Error::ConfigDamaged {
        location: location.to_string(),
        detail: detail.into(),
    }
}

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use std::io::Read;
    let mut out = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut out))
        .expect("/dev/urandom is readable");
    out
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_documented_layout() {
        let id = ObjectId([0xab; 32]);
        let hex = id.to_hex();
        assert_eq!(pack_key(&id), format!("packs/ab/{hex}"));
        assert_eq!(snapshot_key(&id), format!("snapshots/{hex}"));
        assert_eq!(segment_key(&hex), format!("index/{hex}"));
        assert_eq!(tombstone_key(&id), format!("gc/{hex}"));
        assert_eq!(damage_key(&id), format!("damaged/{hex}"));
        assert_eq!(key_object_key("k"), "keys/k");
        assert_eq!(key_name("packs/ab/cd"), "cd");
    }
}

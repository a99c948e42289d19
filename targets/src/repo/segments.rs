//! Reading index segments, through a local cache of the segments already seen.

use chunker::format::{decode_index, IndexEntry, ObjectId};

use crate::crypt::{self, RepoCrypto};
use crate::{Backend, Error, Result};

/// Loads an index segment, from the local cache when a valid copy is there.
pub(super) fn load_segment(
    backend: &dyn Backend,
    key: &str,
    cache: Option<&std::path::Path>,
    crypto: Option<&RepoCrypto>,
) -> Result<Vec<IndexEntry>> {
    let name = key.rsplit('/').next().unwrap_or(key);
    let valid = |bytes: &[u8]| ObjectId::from_hex(name) == Some(ObjectId::of(bytes));
    if let Some(bytes) = cache.and_then(|c| std::fs::read(c.join(name)).ok()) {
        if valid(&bytes) {
            return Ok(decode_index(&crypt::index_in(crypto, key, &bytes)?)?);
        }
    }
    let bytes = backend.get(key)?;
    if !valid(&bytes) {
        return Err(Error::Corrupt {
            what: key.into(),
            detail: "content does not match its name".into(),
        });
    }
    let entries = decode_index(&crypt::index_in(crypto, key, &bytes)?)?;
    if let Some(cache) = cache {
        store_cached(cache, name, &bytes);
    }
    Ok(entries)
}

/// Best effort: a cache that cannot be written only costs a download next time.
pub(super) fn store_cached(dir: &std::path::Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let ok = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, dir.join(name)));
    if let Err(e) = ok {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!(
            "cannot cache index segment {name} in {}: {e}",
            dir.display()
        );
    }
}

//! Reading index segments, through a local cache of the segments already seen, and opening
//! them for lookups in place.
//!
//! A plain version 3 segment is read where it lies: in the repository's own directory, or in
//! the cache of a remote one. Anything else (a version 1 segment, a sealed one, a remote one
//! with no cache) is checked against its name, decoded, written in version 3 form to a
//! private file that is unlinked at once, and read from there, so that memory never holds a
//! whole segment for longer than it takes to convert it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chunker::format::{
    decode_index, encode_sorted, index_version, IndexEntry, ObjectId, INDEX_VERSION_SORTED,
};

use super::segment_file::SegmentFile;
use crate::crypt::{self, RepoCrypto};
use crate::layout::random_bytes;
use crate::{Backend, Error, Result};

/// Where segments come from.
pub(crate) struct Source<'a> {
    pub(crate) backend: &'a dyn Backend,
    pub(crate) cache: Option<&'a Path>,
    pub(crate) crypto: Option<&'a RepoCrypto>,
}

fn name_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Opens a plain version 3 segment in the local file `path`, if it is one.
fn open_in_place(key: &str, path: &Path) -> Option<Result<SegmentFile>> {
    let file = File::open(path).ok()?;
    let mut head = [0u8; 12];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).ok()?;
    (index_version(&head) == Some(INDEX_VERSION_SORTED)).then(|| SegmentFile::open(key, file, path))
}

/// Opens index segment `key` for lookups. `plain` is its plain encoding when the caller has
/// it (a segment just written).
pub(crate) fn open_segment(
    src: &Source<'_>,
    key: &str,
    plain: Option<Vec<u8>>,
) -> Result<SegmentFile> {
    let name = name_of(key);
    if src.crypto.is_none() {
        let local = src.backend.local_file(key);
        let cached = src.cache.map(|c| c.join(name));
        for path in local.iter().chain(cached.iter()) {
            match open_in_place(key, path) {
                Some(Ok(segment)) => return Ok(segment),
                // A damaged cached copy is fetched again below.
                Some(Err(e)) if local.is_some() => return Err(e),
                _ => {}
            }
        }
    }
    let plain = match plain {
        Some(plain) => plain,
        None => load_plain(src.backend, key, src.cache, src.crypto)?,
    };
    let sorted = if index_version(&plain) == Some(INDEX_VERSION_SORTED) {
        plain
    } else {
        encode_sorted(&decode_index(&plain)?)
    };
    let dir = src.cache.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let (file, path) = spill(&dir, &sorted)?;
    SegmentFile::open(key, file, &path)
}

/// Writes `bytes` to a new file in `dir` and unlinks it: the open file is all that is left.
fn spill(dir: &Path, bytes: &[u8]) -> Result<(File, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let path = dir.join(format!(
        ".segment-{}",
        ObjectId(random_bytes::<32>()).to_hex()
    ));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io("create", &path, e))?;
    let written = file.write_all(bytes);
    let _ = std::fs::remove_file(&path);
    written.map_err(|e| Error::io("write", &path, e))?;
    Ok((file, path))
}

/// The plain encoding of segment `key`, checked against its name, from the local cache when
/// a valid copy is there.
fn load_plain(
    backend: &dyn Backend,
    key: &str,
    cache: Option<&Path>,
    crypto: Option<&RepoCrypto>,
) -> Result<Vec<u8>> {
    let name = name_of(key);
    let valid = |bytes: &[u8]| ObjectId::from_hex(name) == Some(ObjectId::of(bytes));
    if let Some(bytes) = cache.and_then(|c| std::fs::read(c.join(name)).ok()) {
        if valid(&bytes) {
            return crypt::index_in(crypto, key, &bytes);
        }
    }
    let bytes = backend.get(key)?;
    if !valid(&bytes) {
        return Err(Error::Corrupt {
            what: key.into(),
            detail: "content does not match its name".into(),
        });
    }
    let plain = crypt::index_in(crypto, key, &bytes)?;
    if let Some(cache) = cache {
        store_cached(cache, name, &bytes);
    }
    Ok(plain)
}

/// Loads an index segment whole, from the local cache when a valid copy is there.
pub(super) fn load_segment(
    backend: &dyn Backend,
    key: &str,
    cache: Option<&Path>,
    crypto: Option<&RepoCrypto>,
) -> Result<Vec<IndexEntry>> {
    Ok(decode_index(&load_plain(backend, key, cache, crypto)?)?)
}

/// Best effort: a cache that cannot be written only costs a download next time.
pub(super) fn store_cached(dir: &Path, name: &str, bytes: &[u8]) {
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

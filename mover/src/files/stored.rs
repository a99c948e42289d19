//! Between a snapshot's stored file catalog and the entries the file commands print: loading
//! and decoding the catalog object, and converting records both ways. A leaf of `files`, so
//! listing, finding and cataloguing can all use it.

use chunker::format::{catalog_inodes, decode_catalog, CatalogEntry, CatalogKind, ObjectId};
use targets::Repository;

use super::{FileEntry, FileKind};

/// The catalog of snapshot `id`, when it has a readable one.
pub(crate) fn from_catalog(repo: &Repository, id: &ObjectId) -> Option<Vec<CatalogEntry>> {
    let short = &id.to_hex()[..12];
    match repo.load_catalog(id) {
        Ok(Some(bytes)) => match decode_catalog(&bytes, id) {
            Ok(entries) => Some(entries),
            Err(e) => {
                tracing::warn!("snapshot {short}: its file catalog is unreadable ({e}); reading its disks instead");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(
                "snapshot {short}: cannot load its file catalog ({e}); reading its disks instead"
            );
            None
        }
    }
}

/// Largest catalog body (uncompressed) looked into for a few paths' inode numbers: about
/// 200,000 paths, a few milliseconds to decompress and scan. Past it, walking the directories
/// above a path costs less.
const MAX_LOOKUP_BODY: u64 = 8 << 20;

/// The inode numbers snapshot `id`'s catalog records for `paths` (0 where it holds none),
/// when it has a readable catalog small enough to look into.
pub(crate) fn inodes_from_catalog(
    repo: &Repository,
    id: &ObjectId,
    paths: &[&str],
) -> Option<Vec<u64>> {
    let bytes = repo.load_catalog(id).ok()??;
    match catalog_inodes(&bytes, id, paths, MAX_LOOKUP_BODY) {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!("file catalog not used to find paths: {e}");
            None
        }
    }
}

/// The catalog record of `e`.
pub(crate) fn record_of(e: &FileEntry) -> CatalogEntry {
    CatalogEntry {
        path: e.path.clone(),
        kind: match e.kind {
            FileKind::Dir => CatalogKind::Dir,
            FileKind::File => CatalogKind::File,
            FileKind::Symlink => CatalogKind::Symlink,
            FileKind::Other => CatalogKind::Other,
            FileKind::Disk => CatalogKind::Disk,
            FileKind::Partition => CatalogKind::Partition,
        },
        size: e.size,
        mtime: e.mtime,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        inode: e.node,
    }
}

/// The entry a catalog record stands for.
pub(crate) fn entry_of(c: CatalogEntry) -> FileEntry {
    let name = c.path.rsplit('/').next().unwrap_or_default().to_string();
    FileEntry {
        name,
        kind: match c.kind {
            CatalogKind::Dir => FileKind::Dir,
            CatalogKind::File => FileKind::File,
            CatalogKind::Symlink => FileKind::Symlink,
            CatalogKind::Other => FileKind::Other,
            CatalogKind::Disk => FileKind::Disk,
            CatalogKind::Partition => FileKind::Partition,
        },
        size: c.size,
        mode: c.mode,
        uid: c.uid,
        gid: c.gid,
        mtime: c.mtime,
        path: c.path,
        ..FileEntry::default()
    }
}

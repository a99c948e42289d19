//! The file catalog of a snapshot, written by the backup right after its commit: every path
//! of the file systems mover reads in the snapshot's disks, read back through the snapshot
//! reader (only the chunks of directories and inodes are fetched). See docs/FORMAT.md,
//! "File catalog".

use std::sync::Arc;
use std::time::Instant;

use chunker::format::{encode_catalog, Manifest, ObjectId};
use targets::Repository;

use super::ops::walk;
use super::stored::record_of;
use super::tree::Snapshot;
use super::FileEntry;
use crate::{Error, ReaderOptions, Result};

/// Most paths a catalog records; a snapshot with more gets none (its `find` reads the disks),
/// which bounds the memory a backup spends on it.
pub const CATALOG_MAX_ENTRIES: usize = 2_000_000;

/// Memory of decoded chunks the catalog's reader may hold.
const READER_MEMORY: u64 = 64 << 20;

/// Builds and stores the file catalog of the committed snapshot `id`. Returns the number of
/// paths recorded, or `None` (with a log line, never a warning) when the snapshot holds no file
/// system mover reads, has too many paths, or the catalog cannot be read or stored: `find`
/// then reads the snapshot's disks.
pub fn write_catalog(repo: &Arc<Repository>, id: ObjectId, manifest: &Manifest) -> Option<usize> {
    let start = Instant::now();
    let short = &id.to_hex()[..12];
    match build(repo, id, manifest) {
        Ok(Some(count)) => {
            tracing::info!(
                "snapshot {short}: file catalog of {count} paths written in {:.2} s",
                start.elapsed().as_secs_f64()
            );
            Some(count)
        }
        Ok(None) => {
            tracing::info!("snapshot {short}: no file system to catalog");
            None
        }
        Err(e) => {
            tracing::info!("snapshot {short}: no file catalog: {}", crate::one_line(&e));
            None
        }
    }
}

fn build(repo: &Arc<Repository>, id: ObjectId, manifest: &Manifest) -> Result<Option<usize>> {
    let options = ReaderOptions {
        memory: READER_MEMORY,
        window: Some(0),
        ..ReaderOptions::default()
    };
    let snap = Snapshot::with(repo, id, manifest.clone(), &options);
    let mut records = Vec::new();
    let mut files = false;
    let mut sink = |e: FileEntry| {
        if records.len() >= CATALOG_MAX_ENTRIES {
            return Err(Error::Refused(format!(
                "more than {CATALOG_MAX_ENTRIES} paths"
            )));
        }
        files |= !matches!(e.kind, super::FileKind::Disk | super::FileKind::Partition);
        records.push(record_of(&e));
        Ok(())
    };
    let mut notes = Vec::new();
    let target = snap.resolve("")?;
    walk(&snap, target, true, &mut sink, &mut notes, true)?;
    for n in &notes {
        tracing::info!(
            "snapshot {}: not in the file catalog: {n}",
            &id.to_hex()[..12]
        );
    }
    if !files {
        return Ok(None);
    }
    let bytes = encode_catalog(&id, &mut records, 9);
    repo.put_catalog(&id, &bytes)?;
    Ok(Some(records.len()))
}

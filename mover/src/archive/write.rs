//! Writing a whole archive to a destination path, removing what a failure leaves.

use std::time::Duration;

use chunker::crypto::Aead;
use chunker::ChunkId;
use targets::archive::{ArchiveHeader, ArchiveKey, ArchiveSummary};

use super::target::ArchiveTarget;
use crate::{Hook, Result};

/// How a tape-style archive is written.
#[derive(Clone, Debug)]
pub struct ArchiveFormat {
    /// Block size of the stream.
    pub block_size: u32,
    /// Split into numbered volume files of this size.
    pub volume_size: Option<u64>,
    /// Command run before each further volume.
    pub next_volume: Option<String>,
    /// Overwrite an existing file.
    pub force: bool,
    /// Encrypt the archive.
    pub encrypt: bool,
    /// The cipher of an encrypted archive (default: the preferred one on this host).
    pub cipher: Option<Aead>,
}

/// Writes an archive on `path`: opens the destination, runs `body` on the archive target,
/// and returns what it gave with the sealed archive's summary and the chunks it wrote. What
/// a failure leaves (the file, or its volume files, when this run created them) is removed.
pub fn write_archive<T>(
    path: &str,
    format: &ArchiveFormat,
    header: ArchiveHeader,
    known: Vec<ChunkId>,
    key: Option<ArchiveKey>,
    body: impl FnOnce(&ArchiveTarget) -> Result<T>,
) -> Result<(T, ArchiveSummary, Vec<ChunkId>)> {
    let created = archive_created(path, format);
    let _cleanup = created.then(|| crate::sys::remove_on_forced_exit(path));
    let result = (|| {
        let hook = format.next_volume.as_ref().map(|c| Hook {
            name: "next-volume",
            command: c.clone(),
            timeout: Duration::from_secs(24 * 3600),
        });
        let (sink, _) = super::io::open_sink(path, format.volume_size, hook, format.force)?;
        let options = targets::archive::ArchiveOptions {
            block_size: format.block_size,
            volume_size: format.volume_size,
        };
        let target = ArchiveTarget::new(sink, &options, header, known, key)?;
        let out = body(&target)?;
        let (summary, written) = target.finished().expect("a committed archive");
        Ok((out, summary, written))
    })();
    if result.is_err() {
        remove_archive(path, created);
    }
    result
}

/// Whether writing the archive creates files that a failure must remove.
fn archive_created(path: &str, f: &ArchiveFormat) -> bool {
    path != "-"
        && std::fs::metadata(path).map_or(true, |m| m.is_file())
        && (f.volume_size.is_some() || f.force || std::fs::metadata(path).is_err())
}

/// Removes what a failed archive left: the file, or its volume files.
fn remove_archive(path: &str, created: bool) {
    if !created {
        return;
    }
    let _ = std::fs::remove_file(path);
    for n in 0.. {
        let v = targets::archive::FileVolumes::volume_path(std::path::Path::new(path), n);
        if std::fs::remove_file(v).is_err() {
            break;
        }
    }
}

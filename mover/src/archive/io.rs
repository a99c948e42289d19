//! Opening archive destinations and inputs; the header of a new archive.

use std::fs::File;
use std::io::{Seek, SeekFrom};

use targets::archive::{ArchiveHeader, ArchiveId, VolumeSink};

use super::restore::ArchiveInput;
use crate::{Error, Result};

/// The archive header for a backup of `disks` (name, size).
pub fn header_for(
    disks: &[(String, u64)],
    chunk_size: u32,
    parents: Vec<ArchiveId>,
    name: &str,
) -> ArchiveHeader {
    let mut h = ArchiveHeader::new(format!("mover {}", env!("CARGO_PKG_VERSION")));
    h.chunk_size = chunk_size;
    h.disks = disks
        .iter()
        .map(|(name, size)| targets::archive::DiskInfo {
            name: name.clone(),
            size: *size,
        })
        .collect();
    h.parents = parents;
    h.labels = vec![("name".into(), name.into())];
    h
}

/// Opens a `--to-archive` destination path: a tape or character device (written in place),
/// numbered volume files when `volume_size` is given, or a new file. `next_volume` runs (with
/// `sh -c`, `MOVER_VOLUME` set) before each further volume.
pub fn open_sink(
    path: &str,
    volume_size: Option<u64>,
    next_volume: Option<crate::Hook>,
    force: bool,
) -> Result<(Box<dyn VolumeSink + Send>, Option<std::path::PathBuf>)> {
    use std::os::unix::fs::FileTypeExt;
    use targets::archive::{FileVolumes, StreamSink};
    let err = |e: std::io::Error| Error::destination(path, e);
    let run_hook = move |hook: &Option<crate::Hook>, n: u32| -> std::io::Result<()> {
        if let Some(h) = hook {
            h.run(&[("MOVER_VOLUME", n.to_string())])
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        Ok(())
    };
    if path == "-" {
        let sink = StreamSink::stdout().map_err(err)?;
        return Ok((Box::new(sink), None));
    }
    let meta = std::fs::metadata(path);
    let is_device = meta.as_ref().is_ok_and(|m| {
        m.file_type().is_char_device() || m.file_type().is_block_device() || m.file_type().is_fifo()
    });
    if is_device {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(err)?;
        let reopen = path.to_string();
        let sink = StreamSink::with_next_volume(file, path, move |n| {
            run_hook(&next_volume, n)?;
            std::fs::OpenOptions::new().write(true).open(&reopen)
        });
        return Ok((Box::new(sink), None));
    }
    if next_volume.is_some() && volume_size.is_none() {
        // A file on a removable medium: when it fills up (ENOSPC), the hook changes the
        // medium and the next volume is written to the same path.
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create(true).truncate(true);
        if !force && meta.is_ok() {
            return Err(Error::DestinationExists { path: path.into() });
        }
        let file = open.open(path).map_err(err)?;
        let reopen = path.to_string();
        let sink = StreamSink::with_next_volume(file, path, move |n| {
            run_hook(&next_volume, n)?;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&reopen)
        });
        return Ok((Box::new(sink), Some(std::path::PathBuf::from(path))));
    }
    if volume_size.is_some() {
        let mut v = FileVolumes::create(path).map_err(err)?;
        v.on_next_volume(move |n, _| run_hook(&next_volume, n));
        return Ok((Box::new(v), None));
    }
    let file = crate::create_destination(path, force)?;
    Ok((
        Box::new(StreamSink::new(file, path)),
        Some(std::path::PathBuf::from(path)),
    ))
}

/// Opens a `--from-archive` input: `-` (stdin), a file or device, or, when PATH does not
/// exist but `PATH.000` does, the numbered volume set.
pub fn open_input(path: &str) -> Result<ArchiveInput> {
    if path == "-" {
        return Ok(ArchiveInput::Stream(Box::new(crate::source::stdin_file()?)));
    }
    let err = |e| Error::Source {
        path: path.into(),
        source: e,
    };
    if std::fs::metadata(path).is_err() {
        let first = targets::archive::FileVolumes::volume_path(std::path::Path::new(path), 0);
        if first.exists() {
            let set = targets::archive::FileVolumeSet::open(path).map_err(err)?;
            return Ok(ArchiveInput::Volumes(set));
        }
    }
    let mut f = File::open(path).map_err(err)?;
    let _ = f.seek(SeekFrom::Start(0));
    Ok(ArchiveInput::Stream(Box::new(f)))
}

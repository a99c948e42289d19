//! `mover restore` as a request: the snapshot and disk chosen, the destination opened (whole
//! or as a delta); saving an attachment.

use std::fs::OpenOptions;
use std::io::{self, Write};

use super::{
    restore, restore_delta, DeltaTarget, Destination, FileDelta, RestoreOptions, RestoreReport,
};
use crate::{Error, Progress, Result};

/// Creates the file `path` for writing: a new one, or with `force` one truncated in place of
/// what is there. Without `force` an existing file is [`Error::DestinationExists`] and is
/// left as it was.
pub fn create_destination(path: &str, force: bool) -> Result<std::fs::File> {
    let mut open = OpenOptions::new();
    open.write(true);
    if force {
        open.create(true).truncate(true);
    } else {
        open.create_new(true);
    }
    open.open(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => Error::DestinationExists { path: path.into() },
        _ => Error::destination(path, e),
    })
}

/// Writes the attachment `name` of a snapshot to `to`: a new file (`force`: or in place of
/// one), fsynced, or `-` (stdout). Returns its size.
pub fn save_attachment(
    manifest: &chunker::format::Manifest,
    name: &str,
    to: &str,
    force: bool,
) -> Result<usize> {
    let Some(att) = manifest.attachments.iter().find(|x| x.name == name) else {
        let names: Vec<_> = manifest
            .attachments
            .iter()
            .map(|x| x.name.as_str())
            .collect();
        return Err(Error::Usage(format!(
            "the snapshot has no attachment {name}; it has: {}",
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        )));
    };
    if to == "-" {
        let mut out = io::stdout().lock();
        out.write_all(&att.data)
            .and_then(|()| out.flush())
            .map_err(|e| Error::destination("stdout", e))?;
    } else {
        let mut f = create_destination(to, force)?;
        f.write_all(&att.data)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::destination(to, e))?;
    }
    Ok(att.data.len())
}

/// A delta restore's destination and what is known about where it changed.
#[derive(Clone, Debug, Default)]
pub struct DeltaRequest {
    /// A changed-extent list of the destination: (file name, its text).
    pub changed_extents: Option<(String, String)>,
    /// A dirty bitmap of an NBD destination.
    pub bitmap: Option<String>,
}

/// `mover restore` from a repository.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    /// The snapshot: an id, a unique prefix, or `latest`.
    pub snapshot: String,
    /// With `latest`: the snapshot name to choose among.
    pub name: Option<String>,
    /// The disk of a multi-disk snapshot.
    pub disk: Option<String>,
    /// A file, a block device, an NBD URI (delta only), or `-` (stdout).
    pub to: String,
    /// Roll an existing destination back in place, writing only the chunks that differ.
    pub delta: Option<DeltaRequest>,
    /// Pipeline settings.
    pub options: RestoreOptions,
}

/// Restores one disk of a snapshot, whole or as a delta.
pub fn restore_snapshot(
    repo: &targets::Repository,
    request: &RestoreRequest,
    progress: &Progress,
) -> Result<(chunker::format::ObjectId, RestoreReport)> {
    let (id, manifest) = repo.find_snapshot(&request.snapshot, request.name.as_deref())?;
    let short = &id.to_hex()[..12];
    let names = || {
        let n: Vec<_> = manifest.disks.iter().map(|d| d.name.as_str()).collect();
        n.join(", ")
    };
    let disk = match (&request.disk, manifest.disks.as_slice()) {
        (Some(n), _) => manifest.disk(n).ok_or_else(|| {
            Error::Usage(format!(
                "snapshot {short} has no disk {n}; its disks are {}",
                names()
            ))
        })?,
        (None, [one]) => one,
        (None, _) => {
            return Err(Error::Usage(format!(
                "snapshot {short} holds several disks ({}); pick one with --disk NAME",
                names()
            )))
        }
    };
    let to = &request.to;
    let result = match &request.delta {
        Some(delta) => open_delta(to, delta, disk.source_len).and_then(|(t, changed)| {
            restore_delta(
                repo,
                disk,
                t.as_ref(),
                changed.as_deref(),
                &request.options,
                progress,
            )
        }),
        None => {
            let dest = match to.as_str() {
                "-" => Destination::Stdout,
                _ => Destination::Path(to.into()),
            };
            restore(repo, disk, &dest, &request.options, progress)
        }
    };
    let report =
        result.map_err(|e| e.failed(format!("restore of snapshot {short} to {to}"), ""))?;
    Ok((id, report))
}

/// Opens the destination of a delta restore (an existing file, block device or writable NBD
/// export) and reads what is known about where it changed.
#[allow(clippy::type_complexity)]
fn open_delta(
    to: &str,
    delta: &DeltaRequest,
    len: u64,
) -> Result<(Box<dyn DeltaTarget>, Option<Vec<(u64, u64)>>)> {
    if to == "-" {
        return Err(Error::Usage(
            "--delta needs an existing file, device or NBD export to compare, not stdout".into(),
        ));
    }
    let mut changed = match &delta.changed_extents {
        Some((file, text)) => Some(crate::parse_disk_change_info(text, len, file)?),
        None => None,
    };
    if crate::nbd::is_nbd(to) {
        let opts = crate::NbdOptions {
            bitmap: delta.bitmap.clone(),
            ..Default::default()
        };
        let nbd = crate::NbdSource::connect(to, &opts)?;
        if nbd.is_read_only() {
            return Err(Error::Refused(format!(
                "NBD export {to} is read-only; export it writable for a delta restore"
            )));
        }
        if delta.bitmap.is_some() {
            changed = Some(nbd.dirty_extents()?);
        }
        return Ok((Box::new(nbd), changed));
    }
    if delta.bitmap.is_some() {
        return Err(Error::Usage(format!(
            "--bitmap needs an NBD destination, and {to} is not one; use --changed-extents"
        )));
    }
    let file = FileDelta::open(std::path::Path::new(to), len)?;
    Ok((Box::new(file), changed))
}

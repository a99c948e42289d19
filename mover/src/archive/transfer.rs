//! ls, verify, import into a repository, export from one.

use std::collections::HashMap;

use chunker::crypto::{Aead, Password};
use chunker::format::{Manifest, ObjectId};
use chunker::{ChunkId, Decoder, IdKey};
use targets::archive::{ArchiveHeader, ArchiveId, Event, Trailer};
use targets::{ChunkStore, Put, Repository};

use super::restore::{damage_line, ArchiveInput};
use super::target::ArchiveTarget;
use crate::{BackupTarget, Error, Progress, Result};

/// What `mover archive ls` / `verify` found in an archive.
#[derive(Clone, Debug, Default)]
pub struct ArchiveListing {
    /// The header, when it was read.
    pub header: Option<ArchiveHeader>,
    /// The manifest, when it was read.
    pub manifest: Option<Manifest>,
    /// The trailer, when it was read.
    pub trailer: Option<Trailer>,
    /// Volumes seen.
    pub volumes: u32,
    /// Chunks read (and, with `check`, verified against their ids).
    pub chunks: u64,
    /// Their plaintext bytes.
    pub chunk_bytes: u64,
    /// Damage, one line each.
    pub damage: Vec<String>,
    /// The cipher of an encrypted archive (the password opened it).
    pub cipher: Option<Aead>,
}

/// Reads a whole archive; with `check`, decodes every chunk and checks it against its id.
/// An input holding several archives (`cat a b`) gives the first; [`read_archives`] gives
/// them all.
pub fn read_archive(
    input: ArchiveInput,
    check: bool,
    progress: &Progress,
    password: Option<&Password>,
) -> Result<ArchiveListing> {
    let all = read_archives(input, check, progress, password)?;
    Ok(all.into_iter().next().unwrap_or_default())
}

/// Reads every archive of an input, in order (archives concatenated in one stream, or one
/// after another on a tape: issue 14, item 10); with `check`, decodes every chunk and checks
/// it against its id. One listing per archive; damage between two archives belongs to the
/// first.
pub fn read_archives(
    input: ArchiveInput,
    check: bool,
    progress: &Progress,
    password: Option<&Password>,
) -> Result<Vec<ArchiveListing>> {
    let mut all = Vec::new();
    let mut l = ArchiveListing::default();
    let mut current: Option<ArchiveId> = None;
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    for event in input.reader(false, password) {
        let event = event?;
        // After a trailer, anything but damage (trailing bytes) is the next archive; so is a
        // volume of another archive (one that starts after a truncated archive).
        let next = match &event {
            Event::Damage(_) => false,
            Event::Volume(v) => current.is_some_and(|c| c != v.archive) || l.trailer.is_some(),
            _ => l.trailer.is_some(),
        };
        if next {
            all.push(end_listing(std::mem::take(&mut l)));
            decoder = Decoder::new();
        }
        match event {
            Event::Keyed(k, aead) => {
                decoder = Decoder::with_id_key(k);
                l.cipher = Some(aead);
            }
            Event::Volume(v) => {
                current = Some(v.archive);
                l.volumes += 1;
            }
            Event::Header(h) => {
                current = Some(h.id);
                progress.set_total(h.disks.iter().map(|d| d.size).sum());
                l.header = Some(h);
            }
            Event::ChunkFrame { id, frame } => {
                if check {
                    if let Err(e) = decoder.decode_into(&frame, &id, &mut out) {
                        l.damage.push(format!("chunk {}: {e}", id.to_hex()));
                        continue;
                    }
                }
                l.chunks += 1;
                l.chunk_bytes += u64::from(frame.raw_len);
                progress.add(u64::from(frame.raw_len));
            }
            Event::Manifest(bytes) => match Manifest::decode(&bytes) {
                Ok(m) => l.manifest = Some(m),
                Err(e) => l.damage.push(format!("the manifest is damaged: {e}")),
            },
            Event::Damage(d) => l.damage.push(damage_line(&d)),
            Event::Trailer(t) => {
                l.trailer = Some(t);
            }
            _ => {}
        }
    }
    all.push(end_listing(l));
    Ok(all)
}

fn end_listing(mut l: ArchiveListing) -> ArchiveListing {
    if l.trailer.is_none() {
        l.damage
            .push("the archive ends without its trailer (truncated)".into());
    }
    l
}

/// Loads an archive's chunks and snapshot into a repository. The snapshot is committed only
/// when every chunk it references is in the repository (an incremental needs its chain
/// imported first) and no damage was found.
///
/// When the archive's chunk ids are computed otherwise than the repository's (one of them is
/// encrypted, or both under different keys), each chunk is stored under the id the
/// repository computes and the manifest is rewritten to match; an incremental archive can
/// then refer only to chunks of its own chain that the same import saw, so import such a
/// chain into a repository with the same ids (or restore it from the archives).
pub fn import_archive(
    repo: &Repository,
    input: ArchiveInput,
    progress: &Progress,
    password: Option<&Password>,
) -> Result<(ObjectId, Manifest, u64)> {
    let mut decoder = Decoder::new();
    let mut archive_key = IdKey::PLAIN;
    let mut renamed: HashMap<ChunkId, ChunkId> = HashMap::new();
    let mut out = Vec::new();
    let mut manifest = None;
    let mut damage = Vec::new();
    let mut new = 0u64;
    let mut ended = false;
    for event in input.reader(false, password) {
        let event = event?;
        if ended {
            continue; // drain the input (see Restorer::run)
        }
        match event {
            Event::Keyed(k, _) => {
                decoder = Decoder::with_id_key(k);
                archive_key = k;
            }
            Event::Header(h) => progress.set_total(h.disks.iter().map(|d| d.size).sum()),
            Event::ChunkFrame { id, frame } => {
                decoder.decode_into(&frame, &id, &mut out)?;
                progress.add(u64::from(frame.raw_len));
                let stored_id = if archive_key == repo.id_key() {
                    id
                } else {
                    let new_id = repo.id_key().id(&out);
                    renamed.insert(id, new_id);
                    new_id
                };
                if ChunkStore::put(repo, &stored_id, frame)? == Put::Stored {
                    new += 1;
                }
            }
            Event::Manifest(bytes) => manifest = Some(Manifest::decode(&bytes)?),
            Event::Damage(d) => damage.push(damage_line(&d)),
            Event::Trailer(_) => ended = true,
            _ => {}
        }
    }
    if !damage.is_empty() {
        return Err(Error::Incremental(format!(
            "the archive is damaged ({}); nothing was imported as a snapshot",
            damage.join("; ")
        )));
    }
    let mut manifest: Manifest = manifest.ok_or_else(|| {
        Error::Incremental(
            "the archive holds no manifest; nothing was imported as a snapshot".into(),
        )
    })?;
    if archive_key != repo.id_key() {
        for e in manifest.disks.iter_mut().flat_map(|d| d.entries.iter_mut()) {
            if let Some(new_id) = e.id.and_then(|id| renamed.get(&id)) {
                e.id = Some(*new_id);
            }
        }
    }
    let missing = manifest
        .disks
        .iter()
        .flat_map(|d| &d.entries)
        .filter_map(|e| e.id)
        .filter(|id| !ChunkStore::has(repo, id).unwrap_or(false))
        .count();
    if missing > 0 {
        return Err(Error::Incremental(format!(
            "{missing} chunks of this incremental archive are in earlier archives of its chain; import those first"
        )));
    }
    repo.flush()?;
    let Some(_committing) = crate::sys::CommitGuard::enter() else {
        return Err(Error::Interrupted);
    };
    let id = repo.commit_snapshot(&manifest)?;
    Ok((id, manifest, new))
}

/// Writes a self-contained full archive of a repository snapshot (a "virtual full"): every
/// chunk once, copied as stored (no recompression), with maps in disk order. When the
/// archive computes chunk ids otherwise than the repository (one of them is encrypted), each
/// chunk goes on the archive under the archive's id, and so does the manifest's entry.
pub fn export_archive(
    repo: &Repository,
    manifest: &Manifest,
    target: &ArchiveTarget,
    progress: &Progress,
) -> Result<ObjectId> {
    progress.set_total(manifest.total_len());
    let mut decoder = Decoder::with_id_key(repo.id_key());
    let rename = BackupTarget::id_key(target) != repo.id_key();
    let mut renamed: HashMap<ChunkId, ChunkId> = HashMap::new();
    let mut out_manifest = manifest.clone();
    let mut out = Vec::new();
    for (d, disk) in out_manifest.disks.iter_mut().enumerate() {
        for (index, entry) in disk.entries.iter_mut().enumerate() {
            if crate::sys::interrupted() {
                return Err(Error::Interrupted);
            }
            let Some(id) = entry.id else {
                target.place(d, index as u64, entry)?;
                progress.add(u64::from(entry.len));
                continue;
            };
            let known = renamed.get(&id).copied();
            let new_frame = match known {
                Some(new_id) => {
                    entry.id = Some(new_id);
                    None
                }
                None if !rename && BackupTarget::has(target, &id)? => None,
                None => {
                    let frame = repo.get(&id)?;
                    // Checked before it goes on the archive: a damaged repository chunk must
                    // not become a damaged archive.
                    decoder.decode_into(&frame, &id, &mut out)?;
                    if rename {
                        let new_id = BackupTarget::id_key(target).id(&out);
                        renamed.insert(id, new_id);
                        entry.id = Some(new_id);
                    }
                    Some(frame)
                }
            };
            // The map entry goes before the chunk frame it names.
            target.place(d, index as u64, entry)?;
            if let (Some(frame), Some(new_id)) = (new_frame, entry.id) {
                BackupTarget::put(target, &new_id, frame)?;
            }
            progress.add(u64::from(entry.len));
        }
    }
    target.commit(&out_manifest)
}

/// `mover archive export`: a repository snapshot to write as a self-contained archive.
#[derive(Clone, Debug)]
pub struct ExportRequest {
    /// The snapshot: an id, a unique prefix, or `latest`.
    pub snapshot: String,
    /// With `latest`: the snapshot name to choose among.
    pub name: Option<String>,
    /// The destination: a path, a device, or `-` (stdout).
    pub to: String,
    /// How the archive is written.
    pub format: super::write::ArchiveFormat,
    /// The password of an encrypted archive (`format.encrypt`).
    pub password: Option<Password>,
}

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct ExportReport {
    /// The snapshot exported.
    pub snapshot: ObjectId,
    /// The sealed archive.
    pub summary: targets::archive::ArchiveSummary,
}

/// Writes a repository snapshot as a self-contained archive ([`export_archive`]); what a
/// failure leaves at the destination is removed.
pub fn export_snapshot(
    repo: &Repository,
    request: &ExportRequest,
    progress: &Progress,
) -> Result<ExportReport> {
    let (id, manifest) = repo.find_snapshot(&request.snapshot, request.name.as_deref())?;
    let key = match (&request.password, request.format.encrypt) {
        (Some(p), true) => Some(targets::archive::ArchiveKey::new(
            p,
            chunker::crypto::KdfParams::default(),
            request.format.cipher.unwrap_or_else(Aead::preferred),
        )?),
        (None, true) => {
            return Err(Error::Usage(
                "the archive needs a password: set MOVER_PASSWORD or give --password-file FILE"
                    .into(),
            ))
        }
        (_, false) => None,
    };
    let disks: Vec<(String, u64)> = manifest
        .disks
        .iter()
        .map(|d| (d.name.clone(), d.source_len))
        .collect();
    let chunk = match manifest.disks[0].chunking {
        chunker::format::Chunking::Fixed(s) | chunker::format::Chunking::Cdc(s) => s,
    };
    let header = super::io::header_for(&disks, chunk, Vec::new(), &manifest.name);
    let short = &id.to_hex()[..12];
    let (_, summary, _) = super::write::write_archive(
        &request.to,
        &request.format,
        header,
        Vec::new(),
        key,
        |target| export_archive(repo, &manifest, target, progress),
    )
    .map_err(|e| e.failed(format!("export of snapshot {short}"), ""))?;
    Ok(ExportReport {
        snapshot: id,
        summary,
    })
}

//! The summaries of the archive commands: restore from archives, ls and verify, import and
//! export.

use chunker::format::{Manifest, ObjectId};
use serde::Serialize;

use super::{mb_per_s, timestamp};
use crate::archive::{ArchiveListing, ArchiveRestoreReport, ExportReport};

/// A range of a disk that could not be restored.
#[derive(Clone, Debug, Serialize)]
pub struct LostRange {
    pub offset: u64,
    pub length: u64,
}

/// `mover restore --from-archive`'s summary.
#[derive(Clone, Debug, Serialize)]
pub struct ArchiveRestoreSummary {
    pub command: &'static str,
    pub from_archive: bool,
    pub disk: String,
    pub snapshot_id: Option<String>,
    pub bytes_total: u64,
    pub bytes_written: u64,
    pub chunks_read: u64,
    pub verified: bool,
    pub damage: Vec<String>,
    pub lost: Vec<LostRange>,
    pub seconds: f64,
    pub mb_per_s: f64,
}

impl ArchiveRestoreSummary {
    /// What restoring from an archive did in `seconds`.
    pub fn new(r: &ArchiveRestoreReport, seconds: f64) -> Self {
        ArchiveRestoreSummary {
            command: "restore",
            from_archive: true,
            disk: r.disk.clone(),
            snapshot_id: r.snapshot.map(|s| s.to_hex()),
            bytes_total: r.bytes_total,
            bytes_written: r.bytes_written,
            chunks_read: r.chunks_read,
            verified: r.verified,
            damage: r.damage.clone(),
            lost: r
                .lost
                .iter()
                .map(|&(offset, length)| LostRange { offset, length })
                .collect(),
            seconds,
            mb_per_s: mb_per_s(r.bytes_total, seconds),
        }
    }
}

/// A disk of an archive and its size.
#[derive(Clone, Debug, Serialize)]
pub struct ArchiveDisk {
    pub name: String,
    pub size: u64,
}

impl ArchiveDisk {
    /// The disks of a listing: from the manifest when it was read (a stream source's size is
    /// known only there), else from the header.
    pub fn of(l: &ArchiveListing) -> Vec<ArchiveDisk> {
        let disk = |name: &String, size| ArchiveDisk {
            name: name.clone(),
            size,
        };
        match (&l.manifest, &l.header) {
            (Some(m), _) => m
                .disks
                .iter()
                .map(|d| disk(&d.name, d.source_len))
                .collect(),
            (None, Some(h)) => h.disks.iter().map(|d| disk(&d.name, d.size)).collect(),
            (None, None) => Vec::new(),
        }
    }
}

/// One archive as `mover archive ls` and `verify` list it.
#[derive(Clone, Debug, Serialize)]
pub struct ArchiveListed {
    pub archive_id: Option<String>,
    pub tool: Option<String>,
    pub created: Option<String>,
    pub chunk_size: Option<u32>,
    pub disks: Vec<ArchiveDisk>,
    pub parents: Option<Vec<String>>,
    pub snapshot_name: Option<String>,
    pub volumes: u32,
    pub chunks: u64,
    pub chunk_bytes: u64,
    pub complete: bool,
    pub verified: bool,
    pub encrypted: bool,
    pub cipher: Option<&'static str>,
    pub damage: Vec<String>,
}

impl ArchiveListed {
    /// One archive of a listing.
    pub fn new(l: &ArchiveListing) -> Self {
        let h = l.header.as_ref();
        ArchiveListed {
            archive_id: h.map(|h| h.id.to_hex()),
            tool: h.map(|h| h.tool_version.clone()),
            created: h.map(|h| timestamp(h.created_ms)),
            chunk_size: h.map(|h| h.chunk_size),
            disks: ArchiveDisk::of(l),
            parents: h.map(|h| h.parents.iter().map(|p| p.to_hex()).collect()),
            snapshot_name: l.manifest.as_ref().map(|m| m.name.clone()),
            volumes: l.volumes,
            chunks: l.chunks,
            chunk_bytes: l.chunk_bytes,
            complete: l.trailer.is_some_and(|t| !t.incomplete),
            verified: l.trailer.is_some_and(|t| t.verified),
            encrypted: l.cipher.is_some(),
            cipher: l.cipher.map(|a| a.name()),
            damage: l.damage.clone(),
        }
    }
}

/// `mover archive ls` and `mover archive verify`'s summary: the fields of the first archive
/// of the input, and `archives` with every archive in it (several when archives were
/// concatenated).
#[derive(Clone, Debug, Serialize)]
pub struct ArchiveListingSummary {
    pub command: &'static str,
    #[serde(flatten)]
    pub first: ArchiveListed,
    pub archives: Vec<ArchiveListed>,
}

impl ArchiveListingSummary {
    /// The archives read by `archive ls` (or, `checked`, by `archive verify`).
    pub fn new(all: &[ArchiveListing], checked: bool) -> Self {
        let archives: Vec<ArchiveListed> = all.iter().map(ArchiveListed::new).collect();
        let first = archives
            .first()
            .cloned()
            .unwrap_or_else(|| ArchiveListed::new(&ArchiveListing::default()));
        ArchiveListingSummary {
            command: if checked {
                "archive verify"
            } else {
                "archive ls"
            },
            first,
            archives,
        }
    }
}

/// `mover archive import`'s summary.
#[derive(Clone, Debug, Serialize)]
pub struct ImportSummary {
    pub command: &'static str,
    pub snapshot_id: String,
    pub name: String,
    pub source_bytes: u64,
    pub chunks_new: u64,
}

impl ImportSummary {
    /// The snapshot `id` committed from an archive, with `new` chunks the repository lacked.
    pub fn new(id: &ObjectId, m: &Manifest, new: u64) -> Self {
        ImportSummary {
            command: "archive import",
            snapshot_id: id.to_hex(),
            name: m.name.clone(),
            source_bytes: m.total_len(),
            chunks_new: new,
        }
    }
}

/// `mover archive export`'s summary.
#[derive(Clone, Debug, Serialize)]
pub struct ExportSummary {
    pub command: &'static str,
    pub snapshot_id: String,
    pub archive_id: String,
    pub volumes: u32,
    pub chunks: u64,
    pub bytes_written: u64,
}

impl From<&ExportReport> for ExportSummary {
    fn from(r: &ExportReport) -> Self {
        ExportSummary {
            command: "archive export",
            snapshot_id: r.snapshot.to_hex(),
            archive_id: r.summary.id.to_hex(),
            volumes: r.summary.volumes,
            chunks: r.summary.chunks,
            bytes_written: r.summary.bytes_written,
        }
    }
}

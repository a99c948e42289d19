//! The summaries of the commands that make and read snapshots: backup, the snapshot list,
//! restore and verify.

use chunker::format::{Disk, Manifest, ObjectId};
use serde::Serialize;

use super::{chunking, chunks_total, mb_per_s, timestamp};
use crate::{ArchiveWritten, BackupOutcome, RestoreReport, SnapshotCheck, VerifyReport};

/// One disk of a snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct DiskSummary {
    pub name: String,
    pub source: String,
    pub source_bytes: u64,
    pub chunking: &'static str,
    pub chunk_size: u32,
    pub chunks: usize,
    pub change_token: String,
    pub bytes_read: u64,
    pub bytes_new: u64,
    pub bytes_stored: u64,
    pub bytes_zero: u64,
}

impl From<&Disk> for DiskSummary {
    fn from(d: &Disk) -> Self {
        let (kind, size) = chunking(d.chunking);
        DiskSummary {
            name: d.name.clone(),
            source: d.source.clone(),
            source_bytes: d.source_len,
            chunking: kind,
            chunk_size: size,
            chunks: d.entries.len(),
            change_token: d.change_token.clone(),
            bytes_read: d.stats.bytes_read,
            bytes_new: d.stats.bytes_new,
            bytes_stored: d.stats.bytes_stored,
            bytes_zero: d.stats.bytes_zero,
        }
    }
}

/// A file stored with a snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct AttachmentSummary {
    pub name: String,
    pub bytes: usize,
}

fn attachments(m: &Manifest) -> Vec<AttachmentSummary> {
    m.attachments
        .iter()
        .map(|a| AttachmentSummary {
            name: a.name.clone(),
            bytes: a.data.len(),
        })
        .collect()
}

/// `mover backup`'s summary, and the run's catalog entry (`--catalog-out`).
#[derive(Clone, Debug, Serialize)]
pub struct BackupSummary {
    pub command: &'static str,
    pub snapshot_id: String,
    pub name: String,
    /// The first disk's source.
    pub source: String,
    pub parent: Option<String>,
    pub created: String,
    pub source_bytes: u64,
    pub bytes_read: u64,
    pub bytes_new: u64,
    pub bytes_stored: u64,
    pub bytes_zero: u64,
    pub bytes_unchanged: u64,
    pub chunks_total: u64,
    pub chunks_new: u64,
    pub chunks_reused: u64,
    pub chunks_zero: u64,
    pub chunks_unchanged: u64,
    /// The first disk's chunking.
    pub chunking: &'static str,
    pub chunk_size: u32,
    pub disks: Vec<DiskSummary>,
    pub attachments: Vec<AttachmentSummary>,
    pub warnings: Vec<String>,
    pub seconds: f64,
    pub mb_per_s: f64,
    /// For a backup onto an archive: what was written (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveWritten>,
}

impl From<&BackupOutcome> for BackupSummary {
    fn from(outcome: &BackupOutcome) -> Self {
        let r = &outcome.report;
        let m = &r.manifest;
        let s = &m.stats;
        let (kind, size) = chunking(m.disks[0].chunking);
        BackupSummary {
            command: "backup",
            snapshot_id: r.snapshot.to_hex(),
            name: m.name.clone(),
            source: m.disks[0].source.clone(),
            parent: m.parent.map(|p| p.to_hex()),
            created: timestamp(m.created_ms),
            source_bytes: m.total_len(),
            bytes_read: s.bytes_read,
            bytes_new: s.bytes_new,
            bytes_stored: s.bytes_stored,
            bytes_zero: s.bytes_zero,
            bytes_unchanged: r.bytes_unchanged,
            chunks_total: chunks_total(m),
            chunks_new: s.chunks_new,
            chunks_reused: s.chunks_reused,
            chunks_zero: r.chunks_zero,
            chunks_unchanged: r.chunks_unchanged,
            chunking: kind,
            chunk_size: size,
            disks: m.disks.iter().map(DiskSummary::from).collect(),
            attachments: attachments(m),
            warnings: r.warnings.clone(),
            seconds: r.seconds,
            mb_per_s: mb_per_s(m.total_len(), r.seconds),
            archive: outcome.archive.clone(),
        }
    }
}

/// One entry of `mover snapshots`.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotItem {
    pub id: String,
    pub short_id: String,
    pub name: String,
    pub source: String,
    pub created: String,
    pub created_ms: i64,
    pub source_bytes: u64,
    pub bytes_new: u64,
    pub bytes_stored: u64,
    pub chunking: &'static str,
    pub chunk_size: u32,
    pub chunks: u64,
    pub parent: Option<String>,
    /// `repair snapshots` marked it damaged.
    pub damaged: bool,
    pub disks: Vec<DiskSummary>,
    pub attachments: Vec<AttachmentSummary>,
}

impl SnapshotItem {
    /// The snapshot `id` with its manifest `m`.
    pub fn new(id: &ObjectId, m: &Manifest, damaged: bool) -> Self {
        let (kind, size) = chunking(m.disks[0].chunking);
        let hex = id.to_hex();
        SnapshotItem {
            short_id: hex[..12].to_string(),
            id: hex,
            name: m.name.clone(),
            source: m.disks[0].source.clone(),
            created: timestamp(m.created_ms),
            created_ms: m.created_ms,
            source_bytes: m.total_len(),
            bytes_new: m.stats.bytes_new,
            bytes_stored: m.stats.bytes_stored,
            chunking: kind,
            chunk_size: size,
            chunks: chunks_total(m),
            parent: m.parent.map(|p| p.to_hex()),
            damaged,
            disks: m.disks.iter().map(DiskSummary::from).collect(),
            attachments: attachments(m),
        }
    }
}

/// `mover restore`'s summary (from a repository).
#[derive(Clone, Debug, Serialize)]
pub struct RestoreSummary {
    pub command: &'static str,
    pub snapshot_id: String,
    pub bytes_total: u64,
    pub bytes_written: u64,
    pub bytes_compared: u64,
    pub chunks_fetched: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
}

impl RestoreSummary {
    /// What restoring snapshot `id` did.
    pub fn new(id: &ObjectId, r: &RestoreReport) -> Self {
        RestoreSummary {
            command: "restore",
            snapshot_id: id.to_hex(),
            bytes_total: r.bytes_total,
            bytes_written: r.bytes_written,
            bytes_compared: r.bytes_compared,
            chunks_fetched: r.chunks_fetched,
            seconds: r.seconds,
            mb_per_s: mb_per_s(r.bytes_total, r.seconds),
        }
    }
}

/// One snapshot `verify` checked.
#[derive(Clone, Debug, Serialize)]
pub struct VerifiedSnapshot {
    pub id: String,
    pub name: Option<String>,
    pub ok: bool,
    pub problems: Vec<String>,
}

impl From<&SnapshotCheck> for VerifiedSnapshot {
    fn from(s: &SnapshotCheck) -> Self {
        VerifiedSnapshot {
            id: s.id.to_hex(),
            name: s.name.clone(),
            ok: s.is_ok(),
            problems: s.problems.clone(),
        }
    }
}

/// `mover verify`'s summary.
#[derive(Clone, Debug, Serialize)]
pub struct VerifySummary {
    pub command: &'static str,
    pub chunks_total: u64,
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    pub snapshots: Vec<VerifiedSnapshot>,
}

impl From<&VerifyReport> for VerifySummary {
    fn from(r: &VerifyReport) -> Self {
        VerifySummary {
            command: "verify",
            chunks_total: r.chunks_total,
            chunks_checked: r.chunks_checked,
            bytes_checked: r.bytes_checked,
            snapshots: r.snapshots.iter().map(VerifiedSnapshot::from).collect(),
        }
    }
}

/// The `serving` event of `mover serve`: what is served, once the server listens.
#[derive(Clone, Debug, Serialize)]
pub struct ServingEvent {
    pub snapshot: String,
    pub exports: Vec<ServingExport>,
}

/// One export being served.
#[derive(Clone, Debug, Serialize)]
pub struct ServingExport {
    pub name: String,
    pub uri: String,
    pub size: u64,
    pub read_only: bool,
}

impl From<&crate::Serving> for ServingEvent {
    fn from(s: &crate::Serving) -> Self {
        ServingEvent {
            snapshot: s.snapshot.to_hex(),
            exports: s
                .exports
                .iter()
                .map(|e| ServingExport {
                    name: e.name.clone(),
                    uri: e.uri.clone(),
                    size: e.size,
                    read_only: e.read_only,
                })
                .collect(),
        }
    }
}

/// The `stopped` event of `mover serve`: what each export's reader did, after a clean stop.
#[derive(Clone, Debug, Serialize)]
pub struct StoppedEvent {
    pub exports: Vec<StoppedExport>,
}

/// What one export's reader did while it was served, and how long its reads took.
#[derive(Clone, Debug, Serialize)]
pub struct StoppedExport {
    pub name: String,
    pub chunks_fetched: u64,
    pub bytes_fetched: u64,
    pub cache_hits: u64,
    pub demand_fetches: u64,
    pub demand_fetch_p50_ms: Option<f64>,
    pub demand_fetch_p99_ms: Option<f64>,
    pub reads: u64,
    pub read_p50_ms: Option<f64>,
    pub read_p99_ms: Option<f64>,
}

impl From<&[crate::ExportStats]> for StoppedEvent {
    fn from(stats: &[crate::ExportStats]) -> Self {
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1e3);
        StoppedEvent {
            exports: (stats.iter())
                .map(|e| StoppedExport {
                    name: e.name.clone(),
                    chunks_fetched: e.reader.chunks_fetched,
                    bytes_fetched: e.reader.bytes_fetched,
                    cache_hits: e.reader.cache_hits,
                    demand_fetches: e.reader.demand_fetches,
                    demand_fetch_p50_ms: ms(e.reader.demand_fetch_p50),
                    demand_fetch_p99_ms: ms(e.reader.demand_fetch_p99),
                    reads: e.reads,
                    read_p50_ms: ms(e.read_p50),
                    read_p99_ms: ms(e.read_p99),
                })
                .collect(),
        }
    }
}

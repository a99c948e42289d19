//! What `--json` prints: one serializable summary per command, built from the library's own
//! reports. Field names and meanings are documented in `docs/JSON.md` (a test of the binary
//! compares the two); fields are only ever added within a schema version.
//!
//! Every summary has a `command` field naming the command that printed it. Ids are lower-case
//! hex, times are both `created` (`2026-11-25T01:24:04Z`, UTC) and `created_ms` (ms since the
//! Unix epoch) where a list is meant for scripts, sizes are bytes.

use chunker::format::{Chunking, Disk, Manifest, ObjectId};
use serde::Serialize;

use crate::archive::{ArchiveListing, ArchiveRestoreReport, ExportReport};
use crate::benchmark::{BenchReport, Row, SourceInfo};
use crate::forget::ForgetRow;
use crate::{ArchiveWritten, BackupOutcome, RestoreReport, SnapshotCheck, VerifyReport};

/// `2026-11-25T01:24:04Z` from ms since the epoch (UTC, no time-zone database needed).
pub fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::forget::civil(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Source bytes per second, in 10⁶ bytes.
fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds.max(1e-9) / 1e6
}

/// The chunking's name (`fixed` or `fastcdc`) and its (average) chunk size.
fn chunking(c: Chunking) -> (&'static str, u32) {
    match c {
        Chunking::Fixed(s) => ("fixed", s),
        Chunking::Cdc(s) => ("fastcdc", s),
    }
}

fn chunks_total(m: &Manifest) -> u64 {
    m.disks.iter().map(|d| d.entries.len() as u64).sum()
}

// ---------------------------------------------------------------------------------------------
// Events other than the summary.

/// The `begin` event: the arguments are valid and the command starts.
#[derive(Clone, Debug, Serialize)]
pub struct BeginEvent {
    pub command: String,
    /// The binary's version.
    pub version: String,
    pub pid: u32,
}

/// The `progress` event, at most once a second while data moves.
#[derive(Clone, Debug, Serialize)]
pub struct ProgressEvent {
    pub command: String,
    pub bytes_done: u64,
    /// 0 while unknown (a stream).
    pub bytes_total: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
}

impl ProgressEvent {
    /// `done` of `total` bytes after `seconds`.
    pub fn new(command: &str, done: u64, total: u64, seconds: f64) -> Self {
        ProgressEvent {
            command: command.to_string(),
            bytes_done: done,
            bytes_total: total,
            seconds,
            mb_per_s: done as f64 / seconds / 1e6,
        }
    }
}

/// The `warning` event: one per warning of a committed run.
#[derive(Clone, Debug, Serialize)]
pub struct WarningEvent {
    pub message: String,
}

/// The `error` event: the run failed.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorEvent {
    pub command: String,
    /// The same one line as on stderr.
    pub message: String,
    pub exit_code: u8,
}

// ---------------------------------------------------------------------------------------------
// Snapshots: backup, the snapshot list, restore, verify, import.

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

// ---------------------------------------------------------------------------------------------
// Maintenance: forget, gc, check, repair, keys.

/// A snapshot `forget` kept or removed.
#[derive(Clone, Debug, Serialize)]
pub struct ForgetItem {
    pub id: String,
    pub name: String,
    pub created: String,
    pub created_ms: i64,
    pub reasons: Vec<String>,
}

impl From<&ForgetRow> for ForgetItem {
    fn from(r: &ForgetRow) -> Self {
        ForgetItem {
            id: r.id.to_hex(),
            name: r.name.clone(),
            created: timestamp(r.created_ms),
            created_ms: r.created_ms,
            reasons: r.reasons.clone(),
        }
    }
}

/// `mover forget`'s summary.
#[derive(Clone, Debug, Serialize)]
pub struct ForgetSummary {
    pub command: &'static str,
    pub dry_run: bool,
    pub kept: Vec<ForgetItem>,
    pub removed: Vec<ForgetItem>,
}

impl ForgetSummary {
    /// The rows of a `forget` run, kept ones apart from removed ones.
    pub fn new(rows: &[ForgetRow], dry_run: bool) -> Self {
        let pick = |keep: bool| {
            rows.iter()
                .filter(|r| r.keep == keep)
                .map(ForgetItem::from)
                .collect()
        };
        ForgetSummary {
            command: "forget",
            dry_run,
            kept: pick(true),
            removed: pick(false),
        }
    }
}

/// A tombstone still inside its grace period.
#[derive(Clone, Debug, Serialize)]
pub struct PendingTombstone {
    pub tombstone: String,
    pub packs: usize,
    pub due: String,
    pub due_ms: i64,
}

/// `mover gc`'s summary.
#[derive(Clone, Debug, Serialize)]
pub struct GcSummary {
    pub command: &'static str,
    pub dry_run: bool,
    pub snapshots: usize,
    pub live_chunks: usize,
    pub packs: usize,
    pub swept_packs: usize,
    pub reclaimed_bytes: u64,
    pub kept_packs: usize,
    pub condemned_packs: usize,
    pub condemned_bytes: u64,
    pub garbage_bytes: u64,
    pub repacked_packs: usize,
    pub repacked_bytes: u64,
    pub index_segments_before: usize,
    pub index_segments_after: usize,
    pub pending: Vec<PendingTombstone>,
    pub warnings: Vec<String>,
}

impl GcSummary {
    /// What a `gc` run did (or, with `dry_run`, would do).
    pub fn new(r: &targets::gc::GcReport, dry_run: bool) -> Self {
        GcSummary {
            command: "gc",
            dry_run,
            snapshots: r.snapshots,
            live_chunks: r.live_chunks,
            packs: r.packs,
            swept_packs: r.swept_packs,
            reclaimed_bytes: r.swept_bytes,
            kept_packs: r.kept_packs,
            condemned_packs: r.condemned_packs,
            condemned_bytes: r.condemned_bytes,
            garbage_bytes: r.garbage_bytes,
            repacked_packs: r.repacked_packs,
            repacked_bytes: r.repacked_bytes,
            index_segments_before: r.segments_before,
            index_segments_after: r.segments_after,
            pending: r
                .pending
                .iter()
                .map(|p| PendingTombstone {
                    tombstone: p.key.clone(),
                    packs: p.packs,
                    due: timestamp(p.due_ms),
                    due_ms: p.due_ms,
                })
                .collect(),
            warnings: r.warnings.clone(),
        }
    }
}

/// `mover check`'s summary.
#[derive(Clone, Debug, Serialize)]
pub struct CheckSummary {
    pub command: &'static str,
    pub ok: bool,
    pub format_version: u32,
    pub snapshots: usize,
    pub packs: usize,
    pub index_segments: usize,
    pub chunks: usize,
    pub errors: Vec<String>,
    pub notes: Vec<String>,
}

impl CheckSummary {
    /// What `check` found; `open_warnings` (damage found while opening the repository) count
    /// as errors, first.
    pub fn new(r: &targets::gc::CheckReport, open_warnings: &[String]) -> Self {
        let errors: Vec<String> = open_warnings.iter().chain(&r.errors).cloned().collect();
        CheckSummary {
            command: "check",
            ok: errors.is_empty(),
            format_version: r.format_version,
            snapshots: r.snapshots,
            packs: r.packs,
            index_segments: r.segments,
            chunks: r.chunks,
            errors,
            notes: r.notes.clone(),
        }
    }
}

/// `mover repair index`'s summary.
#[derive(Clone, Debug, Serialize)]
pub struct RepairIndexSummary {
    pub command: &'static str,
    pub dry_run: bool,
    pub packs: usize,
    pub chunks: usize,
    pub old_segments: usize,
    pub new_segments: usize,
    pub unreadable: Vec<String>,
}

impl RepairIndexSummary {
    /// What `repair index` did (or would do).
    pub fn new(r: &targets::gc::RepairIndexReport, dry_run: bool) -> Self {
        RepairIndexSummary {
            command: "repair index",
            dry_run,
            packs: r.packs,
            chunks: r.chunks,
            old_segments: r.old_segments,
            new_segments: r.new_segments,
            unreadable: r.unreadable.clone(),
        }
    }
}

/// A snapshot `repair snapshots` found damaged.
#[derive(Clone, Debug, Serialize)]
pub struct DamagedItem {
    pub id: String,
    pub name: String,
    pub missing_chunks: usize,
    pub bytes_lost: u64,
}

/// `mover repair snapshots`'s summary.
#[derive(Clone, Debug, Serialize)]
pub struct RepairSnapshotsSummary {
    pub command: &'static str,
    pub dry_run: bool,
    pub damaged: Vec<DamagedItem>,
}

impl RepairSnapshotsSummary {
    /// The snapshots `repair snapshots` marked (or would mark) damaged.
    pub fn new(damaged: &[targets::gc::DamagedSnapshot], dry_run: bool) -> Self {
        RepairSnapshotsSummary {
            command: "repair snapshots",
            dry_run,
            damaged: damaged
                .iter()
                .map(|d| DamagedItem {
                    id: d.id.to_hex(),
                    name: d.name.clone(),
                    missing_chunks: d.missing_chunks,
                    bytes_lost: d.bytes_lost,
                })
                .collect(),
        }
    }
}

/// One entry of `mover key list`.
#[derive(Clone, Debug, Serialize)]
pub struct KeyItem {
    pub id: String,
    pub created: String,
    pub created_ms: i64,
    pub kdf: &'static str,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub in_use: bool,
}

impl From<&targets::KeyInfo> for KeyItem {
    fn from(k: &targets::KeyInfo) -> Self {
        KeyItem {
            id: k.id.clone(),
            created: timestamp(k.created_ms),
            created_ms: k.created_ms,
            kdf: "argon2id",
            memory_kib: k.params.memory_kib,
            iterations: k.params.iterations,
            parallelism: k.params.parallelism,
            in_use: k.in_use,
        }
    }
}

/// One check of `mover doctor`.
#[derive(Clone, Debug, Serialize)]
pub struct DoctorCheck {
    /// What was checked: `source X` or `repository Y`.
    pub subject: String,
    /// The check's name (`readable`, `writable`, …).
    pub check: String,
    pub ok: bool,
    pub detail: String,
    /// What to do about it, when broken.
    pub fix: Option<String>,
}

/// `mover doctor`'s summary.
#[derive(Clone, Debug, Serialize)]
pub struct DoctorSummary {
    pub command: &'static str,
    pub ok: bool,
    /// Checks that failed.
    pub problems: usize,
    pub checks: Vec<DoctorCheck>,
}

impl DoctorSummary {
    /// The summary of `checks`.
    pub fn new(checks: Vec<DoctorCheck>) -> Self {
        let problems = checks.iter().filter(|c| !c.ok).count();
        DoctorSummary {
            command: "doctor",
            ok: problems == 0,
            problems,
            checks,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Archives.

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

/// `mover archive ls` and `mover archive verify`'s summary.
#[derive(Clone, Debug, Serialize)]
pub struct ArchiveListingSummary {
    pub command: &'static str,
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

impl ArchiveListingSummary {
    /// A listing read by `archive ls` (or, `checked`, by `archive verify`).
    pub fn new(l: &ArchiveListing, checked: bool) -> Self {
        let h = l.header.as_ref();
        ArchiveListingSummary {
            command: if checked {
                "archive verify"
            } else {
                "archive ls"
            },
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

// ---------------------------------------------------------------------------------------------
// Benchmark.

/// The synthetic data the benchmark measures.
#[derive(Clone, Debug, Serialize)]
pub struct BenchCorpus {
    pub bytes: u64,
    pub chunk_size: usize,
    /// Half the chunks are text-like, half random.
    pub compressible_fraction: f64,
}

/// The source measured with `--source`.
#[derive(Clone, Debug, Serialize)]
pub struct BenchSource {
    pub spec: String,
    pub len: u64,
    pub data_bytes: u64,
    pub read_whole: bool,
}

impl From<&SourceInfo> for BenchSource {
    fn from(s: &SourceInfo) -> Self {
        BenchSource {
            spec: s.spec.clone(),
            len: s.len,
            data_bytes: s.data_bytes,
            read_whole: s.read_whole,
        }
    }
}

/// One measurement.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    pub stage: &'static str,
    pub level: Option<i32>,
    pub cipher: Option<&'static str>,
    pub threads: usize,
    pub bytes: u64,
    pub stored_bytes: Option<u64>,
    pub seconds: f64,
    pub mb_per_s: f64,
}

impl From<&Row> for BenchRow {
    fn from(r: &Row) -> Self {
        BenchRow {
            stage: r.stage.key(),
            level: r.stage.level(),
            cipher: r.stage.cipher().map(chunker::crypto::Aead::name),
            threads: r.threads,
            bytes: r.bytes,
            stored_bytes: r.stored_bytes,
            seconds: r.seconds,
            mb_per_s: r.mb_per_s(),
        }
    }
}

/// `mover benchmark`'s summary.
#[derive(Clone, Debug, Serialize)]
pub struct BenchmarkSummary {
    pub command: &'static str,
    pub threads: usize,
    pub seconds_per_row: f64,
    pub level: i32,
    pub corpus: BenchCorpus,
    pub source: Option<BenchSource>,
    pub rows: Vec<BenchRow>,
    /// What limits a backup, most limiting first.
    pub limits: Vec<String>,
}

impl From<&BenchReport> for BenchmarkSummary {
    fn from(r: &BenchReport) -> Self {
        BenchmarkSummary {
            command: "benchmark",
            threads: r.threads,
            seconds_per_row: r.seconds,
            level: r.level,
            corpus: BenchCorpus {
                bytes: r.corpus_bytes,
                chunk_size: r.chunk_size,
                compressible_fraction: 0.5,
            },
            source: r.source.as_ref().map(BenchSource::from),
            rows: r.rows.iter().map(BenchRow::from).collect(),
            limits: r.limits(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(timestamp(1_795_569_844_000), "2026-11-25T01:24:04Z");
        assert_eq!(timestamp(1_717_243_200_000), "2024-06-01T12:00:00Z");
    }

    #[test]
    fn chunking_names() {
        assert_eq!(chunking(Chunking::Fixed(4096)), ("fixed", 4096));
        assert_eq!(chunking(Chunking::Cdc(1 << 20)), ("fastcdc", 1 << 20));
    }
}

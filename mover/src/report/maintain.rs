//! The summaries of the maintenance commands: forget, gc, check, repair, key list and doctor.

use serde::Serialize;

use super::timestamp;
use crate::forget::ForgetRow;

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
    pub index_segments_merged: usize,
    pub index_segments_removed: usize,
    pub temporaries_removed: usize,
    pub temporary_bytes: u64,
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
            index_segments_merged: r.segments_merged,
            index_segments_removed: r.segments_removed,
            temporaries_removed: r.temporaries_removed,
            temporary_bytes: r.temporary_bytes,
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
    pub recovered: Vec<String>,
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
            recovered: r.recovered.clone(),
        }
    }
}

/// `mover repair config`'s summary.
#[derive(Clone, Debug, Serialize)]
pub struct RepairConfigSummary {
    pub command: &'static str,
    pub dry_run: bool,
    pub intact: bool,
    pub id: String,
    pub created_ms: i64,
    pub encryption: Option<&'static str>,
    pub recovered: Vec<String>,
}

impl RepairConfigSummary {
    /// What `repair config` found and wrote (or would write).
    pub fn new(r: &targets::gc::RepairConfigReport, dry_run: bool) -> Self {
        RepairConfigSummary {
            command: "repair config",
            dry_run,
            intact: r.intact,
            id: chunker::hex::encode(&r.config.id),
            created_ms: r.config.created_ms,
            encryption: r.config.encryption.map(|a| a.name()),
            recovered: r.recovered.clone(),
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

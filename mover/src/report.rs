//! What `--json` prints: one serializable summary per command, built from the library's own
//! reports. Field names and meanings are documented in `docs/JSON.md` (a test of the binary
//! compares the two); fields are only ever added within a schema version.
//!
//! Every summary has a `command` field naming the command that printed it. Ids are lower-case
//! hex, times are both `created` (`2026-11-25T01:24:04Z`, UTC) and `created_ms` (ms since the
//! Unix epoch) where a list is meant for scripts, sizes are bytes.

use chunker::format::{Chunking, Manifest};
use serde::Serialize;

mod archive;
mod bench;
mod files;
mod maintain;
mod snapshot;

pub use archive::{
    ArchiveDisk, ArchiveListed, ArchiveListingSummary, ArchiveRestoreSummary, ExportSummary,
    ImportSummary, LostRange,
};
pub use bench::{BenchCorpus, BenchRow, BenchSource, BenchmarkSummary};
pub use files::{ExtractSummary, FileItem, FoundItem};
pub use maintain::{
    CheckSummary, DamagedItem, DoctorCheck, DoctorSummary, ForgetItem, ForgetSummary, GcSummary,
    KeyItem, PendingTombstone, RepairConfigSummary, RepairIndexSummary, RepairSnapshotsSummary,
};
pub use snapshot::{
    AttachmentSummary, BackupSummary, DiskSummary, RestoreSummary, ServingEvent, ServingExport,
    SnapshotItem, StoppedEvent, StoppedExport, VerifiedSnapshot, VerifySummary,
};

/// `2026-11-25T01:24:04Z` from ms since the epoch (UTC, no time-zone database needed).
pub fn timestamp(ms: i64) -> String {
    let t = crate::forget::utc(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
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
            mb_per_s: mb_per_s(done, seconds),
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

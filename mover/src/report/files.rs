//! `mover ls`, `find` and `extract`: their JSON Lines entries and summary.

use serde::Serialize;

use super::timestamp;
use crate::{ExtractReport, FileEntry, FindHit};

/// One entry of `mover ls --json` (one JSON object a line).
#[derive(Clone, Debug, Serialize)]
pub struct FileItem {
    pub path: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub mtime: String,
    pub mtime_ns: i128,
    pub target: Option<String>,
    pub part_type: Option<String>,
    pub fs_type: Option<String>,
    pub label: Option<String>,
}

impl From<&FileEntry> for FileItem {
    fn from(e: &FileEntry) -> Self {
        FileItem {
            path: e.path.clone(),
            name: e.name.clone(),
            kind: e.kind.as_str(),
            size: e.size,
            mode: format!("{:04o}", e.mode),
            uid: e.uid,
            gid: e.gid,
            mtime: timestamp(e.mtime.0.saturating_mul(1000)),
            mtime_ns: i128::from(e.mtime.0) * 1_000_000_000 + i128::from(e.mtime.1),
            target: e.target.clone(),
            part_type: e.part_type.clone(),
            fs_type: e.fs_type.clone(),
            label: e.label.clone(),
        }
    }
}

/// One match of `mover find --json`: the entry, and the snapshot that holds it.
#[derive(Clone, Debug, Serialize)]
pub struct FoundItem {
    #[serde(flatten)]
    pub entry: FileItem,
    pub snapshot_id: String,
    pub snapshot_name: String,
    pub created: String,
}

impl From<&FindHit> for FoundItem {
    fn from(h: &FindHit) -> Self {
        FoundItem {
            entry: FileItem::from(&h.entry),
            snapshot_id: h.snapshot.to_hex(),
            snapshot_name: h.snapshot_name.clone(),
            created: timestamp(h.created_ms),
        }
    }
}

/// `mover extract`'s summary.
#[derive(Clone, Debug, Serialize)]
pub struct ExtractSummary {
    pub command: &'static str,
    pub snapshot_id: Option<String>,
    pub to: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    pub bytes: u64,
    pub notes: Vec<String>,
    pub seconds: f64,
}

impl ExtractSummary {
    /// What an extract to `to` wrote in `seconds`.
    pub fn new(r: &ExtractReport, to: &str, seconds: f64) -> Self {
        ExtractSummary {
            command: "extract",
            snapshot_id: r.snapshot.map(|id| id.to_hex()),
            to: to.into(),
            files: r.files,
            dirs: r.dirs,
            symlinks: r.symlinks,
            hard_links: r.hard_links,
            bytes: r.bytes,
            notes: r.notes.clone(),
            seconds,
        }
    }
}

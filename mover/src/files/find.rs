//! `mover find`: which snapshots hold a path matching a pattern. A snapshot with a file
//! catalog is answered from it, without reading its disks; one without is read on demand.

use std::sync::Arc;

use chunker::format::{Manifest, ObjectId};
use targets::Repository;

use super::ops::walk;
use super::stored::{entry_of, from_catalog};
use super::tree::Snapshot;
use super::{glob, FileEntry};
use crate::{ReaderOptions, Result};

/// `mover find`: which snapshots hold a path matching a pattern.
#[derive(Clone, Debug)]
pub struct FindRequest {
    /// Only snapshots of this name.
    pub name: Option<String>,
    /// A shell pattern: matched against the last component of each path, or against the
    /// whole path when it holds a `/`.
    pub pattern: String,
    /// The reader's cache and readahead.
    pub reader: ReaderOptions,
}

/// One match of [`find_files`].
#[derive(Clone, Debug)]
pub struct FindHit {
    /// The snapshot holding it.
    pub snapshot: ObjectId,
    /// The snapshot's name.
    pub snapshot_name: String,
    /// The snapshot's creation time, ms since the Unix epoch.
    pub created_ms: i64,
    /// The entry: path, name, kind, size, mtime, mode and owner (what a catalog holds).
    pub entry: FileEntry,
}

/// What [`find_files`] found.
#[derive(Clone, Debug, Default)]
pub struct FindReport {
    /// Matches, newest snapshot first, sorted by path within one.
    pub hits: Vec<FindHit>,
    /// Snapshots searched.
    pub snapshots: usize,
    /// Of those, the snapshots answered from their file catalog.
    pub from_catalog: usize,
    /// Places that could not be searched, one line each.
    pub notes: Vec<String>,
}

/// Searches every snapshot (of `request.name`, if given), newest first: from its file
/// catalog where it has one, else by reading its file systems' directories.
pub fn find_files(repo: &Arc<Repository>, request: &FindRequest) -> Result<FindReport> {
    let mut snapshots: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, m)| request.name.as_ref().is_none_or(|n| *n == m.name))
        .collect();
    snapshots.sort_by_key(|(_, m)| std::cmp::Reverse(m.created_ms));
    let pattern = request.pattern.trim_start_matches('/');
    let whole = pattern.contains('/');
    let matches = |e: &FileEntry| glob::matches(pattern, if whole { &e.path } else { &e.name });
    let mut report = FindReport {
        snapshots: snapshots.len(),
        ..FindReport::default()
    };
    for (id, manifest) in snapshots {
        let (name, created_ms) = (manifest.name.clone(), manifest.created_ms);
        let mut found = match from_catalog(repo, &id) {
            Some(entries) => {
                report.from_catalog += 1;
                entries.into_iter().map(entry_of).filter(&matches).collect()
            }
            None => on_demand(repo, id, manifest, request, &matches, &mut report.notes),
        };
        found.sort_by(|a: &FileEntry, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        report.hits.extend(found.into_iter().map(|entry| FindHit {
            snapshot: id,
            snapshot_name: name.clone(),
            created_ms,
            entry,
        }));
    }
    Ok(report)
}

/// The matching entries of a snapshot without a catalog, read from its file systems.
fn on_demand(
    repo: &Arc<Repository>,
    id: ObjectId,
    manifest: Manifest,
    request: &FindRequest,
    matches: &dyn Fn(&FileEntry) -> bool,
    notes: &mut Vec<String>,
) -> Vec<FileEntry> {
    let snap = Snapshot::with(repo, id, manifest, &request.reader);
    let mut found = Vec::new();
    let mut sink = |e: FileEntry| {
        if matches(&e) {
            found.push(slim(e));
        }
        Ok(())
    };
    let mut lines = Vec::new();
    match snap.resolve("") {
        Ok(t) => {
            if let Err(e) = walk(&snap, t, true, &mut sink, &mut lines, true) {
                lines.push(crate::one_line(&e));
            }
        }
        Err(e) => lines.push(crate::one_line(&e)),
    }
    let short = &id.to_hex()[..12];
    notes.extend(lines.into_iter().map(|n| format!("snapshot {short}: {n}")));
    found
}

/// `e` reduced to what a catalog records, so a hit reads the same from either source.
fn slim(e: FileEntry) -> FileEntry {
    FileEntry {
        path: e.path,
        name: e.name,
        kind: e.kind,
        size: e.size,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        mtime: e.mtime,
        ..FileEntry::default()
    }
}

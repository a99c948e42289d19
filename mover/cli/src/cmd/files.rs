//! `mover ls`, `cat`, `extract` and `find`: files inside the disks of snapshots, with their
//! printing (tables for people, JSON Lines for scripts).

use std::io::Write;
use std::sync::Arc;

use mover::report::{ExtractSummary, FileItem, FoundItem};
use mover::{FileEntry, FileKind, ReaderOptions};

use crate::args::{CatArgs, ExtractArgs, FilesCommand, FindArgs, LsArgs, RepoArg};
use crate::human::{bytes, timestamp};
use crate::repo::{is_s3, open_repo, Secrets};
use crate::{events, Exit};

/// Runs one of the file-level commands.
pub fn files(c: &FilesCommand, secrets: &Secrets, quiet: bool) -> anyhow::Result<Exit> {
    match c {
        FilesCommand::Ls(a) => ls(a, secrets, quiet),
        FilesCommand::Cat(a) => cat(a, secrets),
        FilesCommand::Extract(a) => extract(a, secrets, quiet),
        FilesCommand::Find(a) => find(a, secrets, quiet),
    }
}

/// Reader options; `browse` for commands that only walk directories (`ls`, `find`), which
/// fetch no chunk ahead. Commands that read files (`cat`, `extract`) fetch ahead of a
/// sequential read, but by a small window: the reader does not know where a file ends, and
/// the window of a whole-disk restore (a quarter of the budget, 64 MiB by default) fetched
/// 5.4 times the stored bytes of a 30 MiB file. From a local repository the window is
/// `FILE_WINDOW` in fetches of one chunk each, so several decode at once; from S3 it is two
/// of the usual large fetches, which hide the latency.
fn reader(repo: &RepoArg, memory: u64, browse: bool) -> ReaderOptions {
    let remote = is_s3(repo);
    let (task_bytes, window) = match (remote, browse) {
        (true, _) => (mover::REMOTE_TASK_BYTES, 2 * mover::REMOTE_TASK_BYTES),
        (false, true) => (mover::LOCAL_TASK_BYTES, 0),
        (false, false) => (mover::LOCAL_FETCH_BYTES, FILE_WINDOW),
    };
    ReaderOptions {
        memory,
        window: Some(if browse { 0 } else { window.min(memory / 4) }),
        task_bytes,
        ..ReaderOptions::default()
    }
}

/// Bytes a file reader of a local repository fetches ahead of itself.
const FILE_WINDOW: u64 = 8 << 20;

fn ls(a: &LsArgs, secrets: &Secrets, quiet: bool) -> anyhow::Result<Exit> {
    let repo = Arc::new(open_repo(&a.repo, secrets)?);
    let request = mover::LsRequest {
        snapshot: a.snapshot.clone(),
        name: a.name.clone(),
        path: a.path.clone(),
        recursive: a.recursive,
        reader: reader(&a.repo, a.memory, true),
    };
    let report = mover::list_files(&repo, &request)?;
    let mut out = std::io::stdout().lock();
    for e in &report.entries {
        let line = if a.json {
            serde_json::to_string(&FileItem::from(e))?
        } else {
            entry_line(e, a.long, a.recursive)
        };
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    notes(&report.notes, quiet);
    Ok(Exit::Success)
}

fn cat(a: &CatArgs, secrets: &Secrets) -> anyhow::Result<Exit> {
    let repo = Arc::new(open_repo(&a.repo, secrets)?);
    let request = mover::CatRequest {
        snapshot: a.snapshot.clone(),
        name: a.name.clone(),
        path: a.path.clone(),
        reader: reader(&a.repo, a.memory, false),
    };
    let mut out = std::io::stdout().lock();
    mover::cat_file(&repo, &request, &mut out)?;
    out.flush()?;
    Ok(Exit::Success)
}

fn extract(a: &ExtractArgs, secrets: &Secrets, quiet: bool) -> anyhow::Result<Exit> {
    let repo = Arc::new(open_repo(&a.repo, secrets)?);
    let request = mover::ExtractRequest {
        snapshot: a.snapshot.clone(),
        name: a.name.clone(),
        paths: a.paths.clone(),
        to: a.to.clone().into(),
        force: a.force,
        reader: reader(&a.repo, a.memory, false),
    };
    let start = std::time::Instant::now();
    let r = mover::extract_files(&repo, &request)?;
    let seconds = start.elapsed().as_secs_f64();
    notes(&r.notes, quiet);
    events::emit(
        "summary",
        serde_json::to_value(ExtractSummary::new(&r, &a.to, seconds))?,
    );
    if !quiet && !a.json {
        note!(
            "extracted {} files ({}), {} directories, {} symbolic links, {} hard links to {} in {:.2}s",
            r.files,
            bytes(r.bytes),
            r.dirs,
            r.symlinks,
            r.hard_links,
            a.to,
            seconds
        );
    }
    Ok(Exit::Success)
}

fn find(a: &FindArgs, secrets: &Secrets, quiet: bool) -> anyhow::Result<Exit> {
    let repo = Arc::new(open_repo(&a.repo, secrets)?);
    let request = mover::FindRequest {
        name: a.name.clone(),
        pattern: a.pattern.clone(),
        reader: reader(&a.repo, a.memory, true),
    };
    let report = mover::find_files(&repo, &request)?;
    let mut out = std::io::stdout().lock();
    for h in &report.hits {
        let short = &h.snapshot.to_hex()[..12];
        if a.json {
            writeln!(out, "{}", serde_json::to_string(&FoundItem::from(h))?)?;
        } else {
            writeln!(
                out,
                "{short}  {}  {:>10}  {}  {}",
                timestamp(h.created_ms),
                bytes(h.entry.size),
                timestamp(h.entry.mtime.0 * 1000),
                h.entry.path
            )?;
        }
    }
    out.flush()?;
    notes(&report.notes, quiet);
    if !quiet && !a.json {
        note!(
            "{} matches in {} snapshots ({} answered from their file catalog)",
            report.hits.len(),
            report.snapshots,
            report.from_catalog
        );
    }
    Ok(Exit::Success)
}

/// Places that could not be read, on stderr (and as warning events).
fn notes(notes: &[String], quiet: bool) {
    for n in notes {
        if !quiet {
            note!("mover: note: {n}");
        }
        events::warning(n);
    }
}

/// `drwxr-xr-x`-style type and permission bits.
fn mode_string(e: &FileEntry) -> String {
    let t = match e.kind {
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::Other => '?',
        FileKind::Disk | FileKind::Partition => 'b',
        FileKind::File => '-',
    };
    let mut s = String::from(t);
    for (shift, special, set, unset) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (e.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, e.mode & special != 0) {
            (true, true) => set,
            (false, true) => unset,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// One line of a listing for people.
fn entry_line(e: &FileEntry, long: bool, recursive: bool) -> String {
    let name = if recursive { &e.path } else { &e.name };
    if matches!(e.kind, FileKind::Disk | FileKind::Partition) {
        let what = [e.fs_type.as_deref(), e.part_type.as_deref()];
        let what: Vec<&str> = what.into_iter().flatten().collect();
        let label = e
            .label
            .as_deref()
            .map(|l| format!("  \"{l}\""))
            .unwrap_or_default();
        return format!(
            "{name:<8} {:>10}  {}{label}",
            bytes(e.size),
            what.join(", ")
        );
    }
    let target = e
        .target
        .as_deref()
        .map(|t| format!(" -> {t}"))
        .unwrap_or_default();
    if !long {
        let slash = if e.kind == FileKind::Dir { "/" } else { "" };
        return format!("{name}{slash}{target}");
    }
    format!(
        "{} {:>5} {:>5} {:>12}  {}  {name}{target}",
        mode_string(e),
        e.uid,
        e.gid,
        e.size,
        timestamp(e.mtime.0 * 1000)
    )
}

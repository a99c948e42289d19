//! `ls`, `cat` and `find`: request structs in, typed reports out.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;

use chunker::format::ObjectId;
use targets::Repository;

use super::tree::{child, join, Snapshot, Target};
use super::{FileData, FileEntry, FileKind, Volume};
use crate::{Error, ReaderOptions, Result};

/// `mover ls`: what a path of a snapshot holds.
#[derive(Clone, Debug)]
pub struct LsRequest {
    /// The snapshot: an id, a unique prefix, or `latest`.
    pub snapshot: String,
    /// With `latest`: the snapshot name to choose among.
    pub name: Option<String>,
    /// The path in the snapshot (empty for its top).
    pub path: String,
    /// Everything below the path too, each entry before what it holds.
    pub recursive: bool,
    /// The reader's cache and readahead.
    pub reader: ReaderOptions,
}

/// What [`list_files`] found.
#[derive(Clone, Debug)]
pub struct LsReport {
    /// The snapshot listed.
    pub snapshot: ObjectId,
    /// The entries of the directory (or the one entry of a file), sorted by name within
    /// each directory.
    pub entries: Vec<FileEntry>,
    /// Places a recursive listing could not enter (a partition without a readable file
    /// system), one line each.
    pub notes: Vec<String>,
}

/// Lists `request.path` of a snapshot: a directory's entries, or a file itself. A recursive
/// listing takes what lies below each file system's directory from the snapshot's file
/// catalog when it has one (the directories of a file system are scattered over the disk, so
/// reading them fetches many chunks), and reads the disks otherwise.
pub fn list_files(repo: &Arc<Repository>, request: &LsRequest) -> Result<LsReport> {
    let mut snap = Snapshot::open(
        repo,
        &request.snapshot,
        request.name.as_deref(),
        &request.reader,
    )?;
    if request.recursive {
        if let Some(entries) = super::stored::from_catalog(repo, &snap.id) {
            snap.use_catalog(entries.into_iter().map(super::stored::entry_of).collect());
        }
    }
    let mut report = LsReport {
        snapshot: snap.id,
        entries: Vec::new(),
        notes: Vec::new(),
    };
    let target = snap.resolve(&request.path)?;
    let entries = &mut report.entries;
    let mut sink = |e: FileEntry| {
        entries.push(e);
        Ok(())
    };
    walk(
        &snap,
        target,
        request.recursive,
        &mut sink,
        &mut report.notes,
        true,
    )?;
    snap.log_reads();
    Ok(report)
}

/// Where a walk puts each entry it finds, in listing order.
pub(crate) type Sink<'a> = dyn FnMut(FileEntry) -> Result<()> + 'a;

/// Gives `sink` what `target` holds (the target itself when it is no directory); places a
/// recursive walk cannot enter go to `notes`.
pub(crate) fn walk(
    snap: &Snapshot,
    target: Target,
    recursive: bool,
    sink: &mut Sink<'_>,
    notes: &mut Vec<String>,
    top: bool,
) -> Result<()> {
    match target {
        Target::Virtual { mut children, .. } => {
            children.sort_by(|a, b| natural(&a.name, &b.name));
            for child in children {
                let path = child.path.clone();
                sink(child)?;
                if recursive {
                    match snap.resolve(&path) {
                        Ok(t) => walk(snap, t, true, sink, notes, false)?,
                        Err(e) => notes.push(crate::one_line(&e)),
                    }
                }
            }
            Ok(())
        }
        Target::Fs { vol, prefix, inner } => {
            let at = in_place(&prefix, vol.stat(&inner))?;
            if at.kind != FileKind::Dir {
                if top {
                    sink(finish(&*vol, &prefix, &inner, at)?)?;
                }
                return Ok(());
            }
            let below = recursive
                .then(|| snap.catalog_below(&join(&prefix, &inner)))
                .flatten();
            if let Some(below) = below {
                for e in below {
                    let inner = format!("/{}", e.path[prefix.len()..].trim_start_matches('/'));
                    sink(finish(&*vol, &prefix, &inner, e.clone())?)?;
                }
                return Ok(());
            }
            list_dir(&*vol, &prefix, &inner, recursive, sink)
        }
    }
}

/// Sorts `p2` before `p10`, else by bytes.
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    let num = |s: &str| s.strip_prefix('p').and_then(|n| n.parse::<u32>().ok());
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// The entries of directory `inner`, and with `recursive` those below, in preorder.
fn list_dir(
    vol: &dyn Volume,
    prefix: &str,
    inner: &str,
    recursive: bool,
    sink: &mut Sink<'_>,
) -> Result<()> {
    let mut children = in_place(prefix, vol.list(inner))?;
    children.sort_by(|a, b| a.name.cmp(&b.name));
    for c in children {
        let path = child(inner, &c.name);
        let c = finish(vol, prefix, &path, c)?;
        let dir = c.kind == FileKind::Dir;
        sink(c)?;
        if recursive && dir {
            list_dir(vol, prefix, &path, true, sink)?;
        }
    }
    Ok(())
}

/// `e` (at `inner`) with its snapshot path and, for a symbolic link, its target.
pub(crate) fn finish(
    vol: &dyn Volume,
    prefix: &str,
    inner: &str,
    e: FileEntry,
) -> Result<FileEntry> {
    let mut e = placed(prefix, inner, e)?;
    if e.kind == FileKind::Symlink {
        e.target = Some(in_place(prefix, vol.read_link(inner))?);
    }
    Ok(e)
}

/// Longest path inside a file system that listings and extracts follow (Linux's `PATH_MAX`):
/// a longer one means a directory that contains itself, in a damaged file system, and would
/// send a walk around forever.
const MAX_PATH: usize = 4096;

/// `e` (at `inner`) with its snapshot path; a symbolic link's target is not read (the file
/// catalog does not record it, and reading it looks the path up again). A path longer than
/// `MAX_PATH` is refused as a directory cycle.
pub(crate) fn placed(prefix: &str, inner: &str, mut e: FileEntry) -> Result<FileEntry> {
    if inner.len() > MAX_PATH {
        let start: String = inner.chars().take(60).collect();
        return Err(Error::Refused(format!(
            "{}…: a path longer than {MAX_PATH} bytes, which means a directory that contains \
             itself; the file system is damaged",
            join(prefix, &start)
        )));
    }
    if e.name.contains('/') || e.name.contains('\0') {
        return Err(Error::Refused(format!(
            "{}: a directory entry has the impossible name {:?}; the file system is damaged",
            join(prefix, inner),
            e.name
        )));
    }
    e.path = join(prefix, inner);
    if e.name.is_empty() {
        e.name = e.path.rsplit('/').next().unwrap_or_default().to_string();
    }
    Ok(e)
}

/// Puts the snapshot place before a file system's message (`sdb/p2: /etc/x: …`).
pub(crate) fn in_place<T>(prefix: &str, r: Result<T>) -> Result<T> {
    r.map_err(|e| match e {
        Error::Refused(m) if !prefix.is_empty() => Error::Refused(format!("{prefix}: {m}")),
        e => e,
    })
}

/// `mover cat`: one file of a snapshot.
#[derive(Clone, Debug)]
pub struct CatRequest {
    /// The snapshot: an id, a unique prefix, or `latest`.
    pub snapshot: String,
    /// With `latest`: the snapshot name to choose among.
    pub name: Option<String>,
    /// The file's path in the snapshot (a symbolic link is followed).
    pub path: String,
    /// The reader's cache and readahead.
    pub reader: ReaderOptions,
}

/// Writes the file at `request.path` to `out`; returns the bytes written.
pub fn cat_file(repo: &Arc<Repository>, request: &CatRequest, out: &mut dyn Write) -> Result<u64> {
    let mut snap = Snapshot::open(
        repo,
        &request.snapshot,
        request.name.as_deref(),
        &request.reader,
    )?;
    snap.hint(repo, std::slice::from_ref(&request.path));
    let (vol, prefix, inner) = match snap.resolve(&request.path)? {
        Target::Fs { vol, prefix, inner } => (vol, prefix, inner),
        Target::Virtual { .. } => {
            return Err(Error::Refused(format!(
                "{}: this lists disks or partitions, not a file; see `mover ls`, or `mover restore` a whole disk",
                request.path
            )))
        }
    };
    let mut file = in_place(&prefix, vol.open(&inner))?;
    let n = copy(
        &mut *file,
        out,
        &join(&prefix, &inner),
        &mut Vec::new(),
        None,
    )?;
    drop(file);
    snap.log_reads();
    Ok(n)
}

/// Copies `from` to `out` in large pieces (a file-system reader may return one block per
/// read; the buffer is filled before each write); returns the bytes copied. `buf` is the
/// buffer, kept by callers that copy many files (grown to 1 MiB once, never zeroed again).
/// With `sparse` (the file `out` writes to), holes the reader knows are skipped rather than
/// written as zeros, and the file's length is set at the end, so a trailing hole counts.
pub(crate) fn copy(
    from: &mut dyn FileData,
    out: &mut dyn Write,
    what: &str,
    buf: &mut Vec<u8>,
    sparse: Option<&File>,
) -> Result<u64> {
    if buf.len() < 1 << 20 {
        buf.resize(1 << 20, 0);
    }
    let dest = |source| Error::Destination {
        path: "the output".into(),
        source,
    };
    let mut total = 0u64;
    loop {
        if let Some(mut file) = sparse {
            let hole = from.hole();
            if hole > 0 {
                from.skip(hole);
                total += hole;
                let step = i64::try_from(hole)
                    .map_err(|_| dest(std::io::Error::other("a hole too large to skip")))?;
                file.seek(SeekFrom::Current(step)).map_err(dest)?;
                continue;
            }
        }
        let mut n = 0;
        while n < buf.len() {
            match from.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(got) => n += got,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Refused(format!("{what}: cannot read the file: {e}"))),
            }
            if sparse.is_some() && from.hole() > 0 {
                break;
            }
        }
        if n == 0 {
            if let Some(file) = sparse {
                file.set_len(total).map_err(dest)?;
            }
            return Ok(total);
        }
        out.write_all(&buf[..n]).map_err(dest)?;
        total += n as u64;
    }
}

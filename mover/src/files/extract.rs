//! `extract`: files and directory trees of a snapshot written to a local directory, with
//! their permission bits, owners (when allowed), times, symbolic links and hard links.
//!
//! Every path is resolved and every destination checked before the first byte is written,
//! so bad input (a missing path, an unreadable file system, a partition that is not there,
//! an existing destination without `force`) leaves the destination as it was. Directories
//! get their permission bits and times last, deepest first, so that writing into them does
//! not change their times and a read-only directory can still be filled.

use std::collections::HashMap;
use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chunker::format::ObjectId;
use targets::Repository;

use super::ops::{copy, finish, in_place};
use super::tree::{child, Snapshot, Target};
use super::{FileEntry, FileKind, Volume};
use crate::{Error, ReaderOptions, Result};

/// `mover extract`: paths of a snapshot copied out to a directory.
#[derive(Clone, Debug)]
pub struct ExtractRequest {
    /// The snapshot: an id, a unique prefix, or `latest`.
    pub snapshot: String,
    /// With `latest`: the snapshot name to choose among.
    pub name: Option<String>,
    /// Files or directories (whole trees) in the snapshot; each lands in `to` under its own
    /// name.
    pub paths: Vec<String>,
    /// The destination directory (made if missing).
    pub to: PathBuf,
    /// Overwrite files that exist at the destination.
    pub force: bool,
    /// The reader's cache and readahead.
    pub reader: ReaderOptions,
}

/// What [`extract_files`] wrote.
#[derive(Clone, Debug, Default)]
pub struct ExtractReport {
    /// The snapshot read.
    pub snapshot: Option<ObjectId>,
    /// Regular files written (hard links not counted).
    pub files: u64,
    /// Directories made.
    pub dirs: u64,
    /// Symbolic links made.
    pub symlinks: u64,
    /// Names made as hard links to a file written before.
    pub hard_links: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// What could not be restored exactly (owners without root, device nodes), one line each.
    pub notes: Vec<String>,
}

/// One thing to write: `entry`, at `inner` in its file system, to `dest`.
struct Item {
    dest: PathBuf,
    inner: String,
    entry: FileEntry,
}

/// One requested path: its file system and everything to write from it.
struct Source {
    vol: Box<dyn Volume>,
    /// Where the file system lies in the snapshot (`p2`, `sdb/p1`; empty for a whole disk).
    prefix: String,
    items: Vec<Item>,
}

/// Extracts `request.paths` of a snapshot into `request.to`.
pub fn extract_files(repo: &Arc<Repository>, request: &ExtractRequest) -> Result<ExtractReport> {
    if request.paths.is_empty() {
        return Err(Error::Usage("name at least one path to extract".into()));
    }
    let mut snap = Snapshot::open(
        repo,
        &request.snapshot,
        request.name.as_deref(),
        &request.reader,
    )?;
    snap.hint(repo, &request.paths);
    let sources = request
        .paths
        .iter()
        .map(|p| plan(&snap, p, &request.to))
        .collect::<Result<Vec<_>>>()?;
    check(&sources, request)?;
    fs::create_dir_all(&request.to).map_err(|e| dest_err(&request.to, e))?;
    let mut w = Writer {
        report: ExtractReport {
            snapshot: Some(snap.id),
            ..ExtractReport::default()
        },
        links: HashMap::new(),
        owners_kept: 0,
        force: request.force,
        buf: Vec::new(),
        fs: String::new(),
    };
    for s in &sources {
        w.fs.clone_from(&s.prefix);
        for item in &s.items {
            w.write(&*s.vol, item)?;
        }
    }
    snap.log_reads();
    for s in &sources {
        for item in s.items.iter().rev() {
            if item.entry.kind == FileKind::Dir {
                let f = File::open(&item.dest).map_err(|e| dest_err(&item.dest, e))?;
                w.attributes(&f, &item.dest, &item.entry, s.vol.has_owners())?;
            }
        }
    }
    if w.owners_kept > 0 {
        w.report.notes.push(format!(
            "{} entries keep this user as owner: only root may give files to other owners",
            w.owners_kept
        ));
    }
    Ok(w.report)
}

/// Resolves `path` and lists everything under it, with destinations under `to`.
fn plan(snap: &Snapshot, path: &str, to: &Path) -> Result<Source> {
    let (vol, prefix, inner) = match snap.resolve(path)? {
        Target::Fs { vol, prefix, inner } => (vol, prefix, inner),
        Target::Virtual { .. } => {
            return Err(Error::Refused(format!(
                "{path}: this lists disks or partitions; extract a partition (p1) or a path in one"
            )))
        }
    };
    let top = in_place(&prefix, vol.stat(&inner))?;
    let top = finish(&*vol, &prefix, &inner, top)?;
    let name = top.path.rsplit('/').next().filter(|n| !n.is_empty());
    let dest = to.join(name.unwrap_or("root"));
    // Depth first, each directory before what it holds, names in order: a stack of what is
    // still to visit, the next one on top.
    let mut items = Vec::new();
    let mut todo = vec![Item {
        dest,
        inner: inner.clone(),
        entry: top,
    }];
    while let Some(item) = todo.pop() {
        if item.entry.kind == FileKind::Dir {
            let mut children = in_place(&prefix, vol.list(&item.inner))?;
            children.sort_by(|a, b| b.name.cmp(&a.name));
            for c in children {
                let inner = child(&item.inner, &c.name);
                let entry = finish(&*vol, &prefix, &inner, c)?;
                todo.push(Item {
                    dest: item.dest.join(&entry.name),
                    inner,
                    entry,
                });
            }
        }
        items.push(item);
    }
    Ok(Source { vol, prefix, items })
}

/// Refuses before anything is written: two paths with one name, an existing destination
/// without `force`, a destination directory that is a file.
fn check(sources: &[Source], request: &ExtractRequest) -> Result<()> {
    if request.to.exists() && !request.to.is_dir() {
        return Err(Error::Refused(format!(
            "{} exists and is not a directory; extract into a directory",
            request.to.display()
        )));
    }
    let mut tops = std::collections::HashSet::new();
    for s in sources {
        if !tops.insert(&s.items[0].dest) {
            return Err(Error::Refused(format!(
                "two paths would both be extracted to {}; extract them one at a time",
                s.items[0].dest.display()
            )));
        }
    }
    if request.force {
        return Ok(());
    }
    for item in sources.iter().flat_map(|s| &s.items) {
        if item.dest.symlink_metadata().is_ok() {
            return Err(Error::DestinationExists {
                path: item.dest.display().to_string(),
            });
        }
    }
    Ok(())
}

struct Writer {
    report: ExtractReport,
    /// The first file written for each hard-link key.
    links: HashMap<(String, u64), PathBuf>,
    /// Entries whose owner could not be set.
    owners_kept: u64,
    force: bool,
    /// The copy buffer, for every file.
    buf: Vec<u8>,
    /// The file system being written (a [`Source`]'s prefix): hard-link keys are inode
    /// numbers, which two file systems share.
    fs: String,
}

impl Writer {
    fn write(&mut self, vol: &dyn Volume, item: &Item) -> Result<()> {
        let (dest, e) = (&item.dest, &item.entry);
        match e.kind {
            FileKind::Dir => {
                match fs::create_dir(dest) {
                    Err(err) if !(self.force && dest.is_dir()) => return Err(dest_err(dest, err)),
                    _ => {}
                }
                self.report.dirs += 1;
            }
            FileKind::File => self.file(vol, item)?,
            FileKind::Symlink => {
                if self.force && dest.symlink_metadata().is_ok() {
                    fs::remove_file(dest).map_err(|err| dest_err(dest, err))?;
                }
                let target = e.target.as_deref().unwrap_or_default();
                std::os::unix::fs::symlink(target, dest).map_err(|err| dest_err(dest, err))?;
                if vol.has_owners() {
                    self.owner(std::os::unix::fs::lchown(dest, Some(e.uid), Some(e.gid)));
                }
                self.report.symlinks += 1;
            }
            FileKind::Other | FileKind::Disk | FileKind::Partition => {
                self.report.notes.push(format!(
                    "{}: a device node, FIFO, socket or NTFS reparse point; not extracted",
                    e.path
                ));
            }
        }
        Ok(())
    }

    fn file(&mut self, vol: &dyn Volume, item: &Item) -> Result<()> {
        let (dest, e) = (&item.dest, &item.entry);
        if let Some(first) = e.link.and_then(|k| self.links.get(&(self.fs.clone(), k))) {
            let mut a = in_place("", vol.open(&item.inner))?;
            let b = File::open(first).map_err(|err| dest_err(first, err))?;
            if same(&mut *a, b).map_err(|err| dest_err(first, err))? {
                if self.force && dest.symlink_metadata().is_ok() {
                    fs::remove_file(dest).map_err(|err| dest_err(dest, err))?;
                }
                fs::hard_link(first, dest).map_err(|err| dest_err(dest, err))?;
                self.report.hard_links += 1;
                return Ok(());
            }
        }
        let mut open = OpenOptions::new();
        open.write(true);
        if self.force {
            open.create(true).truncate(true);
        } else {
            open.create_new(true);
        }
        let f = open.open(dest).map_err(|err| dest_err(dest, err))?;
        let mut from = vol.open(&item.inner)?;
        self.report.bytes += copy(&mut *from, &mut &f, &e.path, &mut self.buf, Some(&f)).map_err(
            |err| match err {
                Error::Destination { source, .. } => dest_err(dest, source),
                err => err,
            },
        )?;
        self.attributes(&f, dest, e, vol.has_owners())?;
        if let Some(k) = e.link {
            self.links.insert((self.fs.clone(), k), dest.clone());
        }
        self.report.files += 1;
        Ok(())
    }

    /// Owner (where allowed), permission bits and times of a file or directory.
    fn attributes(&mut self, f: &File, dest: &Path, e: &FileEntry, owners: bool) -> Result<()> {
        if owners {
            self.owner(std::os::unix::fs::fchown(f, Some(e.uid), Some(e.gid)));
        }
        f.set_permissions(Permissions::from_mode(e.mode))
            .map_err(|err| dest_err(dest, err))?;
        let times = FileTimes::new()
            .set_accessed(time(e.atime))
            .set_modified(time(e.mtime));
        f.set_times(times).map_err(|err| dest_err(dest, err))
    }

    fn owner(&mut self, r: io::Result<()>) {
        if r.is_err() {
            self.owners_kept += 1;
        }
    }
}

fn time((secs, nanos): (i64, u32)) -> SystemTime {
    let d = Duration::new(secs.unsigned_abs(), 0);
    let t = if secs >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    };
    t + Duration::from_nanos(u64::from(nanos))
}

/// True when both streams hold the same bytes.
fn same(a: &mut dyn Read, mut b: File) -> io::Result<bool> {
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = fill(a, &mut x)?;
        let m = fill(&mut b, &mut y)?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn fill(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn dest_err(path: &Path, e: io::Error) -> Error {
    Error::destination(&path.display().to_string(), e)
}

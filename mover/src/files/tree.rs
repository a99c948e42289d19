//! Paths in a snapshot: disks, then partitions, then a file system's own path.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use chunker::format::{Manifest, ObjectId};
use targets::{ChunkStore, Repository};

use super::ext::ExtVolume;
use super::fat::FatVolume;
use super::ntfs::NtfsVolume;
use super::probe::{self, Found, Layout, Part};
use super::view::RangeReader;
use super::{FileEntry, FileKind, Volume};
use crate::{Error, ReaderOptions, ReaderStats, Result, SnapshotReader, Source};

/// One snapshot opened for reading files, with one reader (and chunk cache) per disk.
pub(crate) struct Snapshot {
    pub id: ObjectId,
    pub manifest: Manifest,
    store: Arc<dyn ChunkStore>,
    options: ReaderOptions,
    readers: RefCell<HashMap<usize, Arc<SnapshotReader>>>,
    /// Per disk, the source it was backed up from, read first where it still matches (see
    /// [`SnapshotReader::with_source`]).
    sources: Vec<Option<Arc<dyn Source>>>,
    /// The snapshot's file catalog, when a recursive listing may answer from it: every
    /// entry, in listing order (see [`Snapshot::use_catalog`]).
    catalog: Option<Vec<FileEntry>>,
    /// Inode numbers of snapshot paths, from the file catalog (see [`Snapshot::hint`]).
    hints: HashMap<String, u64>,
}

/// What a path names.
pub(crate) enum Target {
    /// A list made by mover, not a file system: the disks of a snapshot or the partitions of
    /// a disk.
    Virtual { children: Vec<FileEntry> },
    /// A path in a file system; the snapshot path is `prefix` joined with `inner`.
    Fs {
        vol: Box<dyn Volume>,
        prefix: String,
        inner: String,
    },
}

/// `a` and `b` joined with one slash (either may be empty).
pub(crate) fn join(a: &str, b: &str) -> String {
    let b = b.trim_start_matches('/');
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (false, true) => a.to_string(),
        (false, false) => format!("{a}/{b}"),
    }
}

/// The path of `name` in the directory `dir`, both inside a file system (`/etc` and `fstab`
/// give `/etc/fstab`; `/` and `etc` give `/etc`).
pub(crate) fn child(dir: &str, name: &str) -> String {
    format!("/{}", join(dir.trim_matches('/'), name))
}

/// The components of a snapshot path (`.` and empty ones dropped; `..` refused).
fn components(path: &str) -> Result<Vec<&str>> {
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if comps.contains(&"..") {
        return Err(Error::Refused(format!(
            "{path}: `..` is not allowed in a snapshot path; name the place from the top"
        )));
    }
    Ok(comps)
}

impl Snapshot {
    /// Opens snapshot `spec` (an id, a unique prefix or `latest`, among `name` if given).
    pub(crate) fn open(
        repo: &Arc<Repository>,
        spec: &str,
        name: Option<&str>,
        options: &ReaderOptions,
    ) -> Result<Self> {
        let (id, manifest) = repo.find_snapshot(spec, name)?;
        Ok(Self::with(repo, id, manifest, options))
    }

    /// The snapshot `id` whose manifest is loaded.
    pub(crate) fn with(
        repo: &Arc<Repository>,
        id: ObjectId,
        manifest: Manifest,
        options: &ReaderOptions,
    ) -> Self {
        Snapshot {
            id,
            manifest,
            store: repo.clone(),
            options: options.clone(),
            readers: RefCell::new(HashMap::new()),
            sources: Vec::new(),
            catalog: None,
            hints: HashMap::new(),
        }
    }

    /// Reads disk `d`'s chunks first from `sources[d]` where given (before any reader is
    /// made).
    pub(crate) fn with_sources(mut self, sources: Vec<Option<Arc<dyn Source>>>) -> Self {
        self.sources = sources;
        self
    }

    /// What the readers did, summed over the disks (the fetch percentiles: the largest of
    /// the disks').
    pub(crate) fn read_stats(&self) -> ReaderStats {
        let readers = self.readers.borrow();
        readers.values().fold(ReaderStats::default(), |t, r| {
            let s = r.stats();
            ReaderStats {
                chunks_fetched: t.chunks_fetched + s.chunks_fetched,
                chunks_from_source: t.chunks_from_source + s.chunks_from_source,
                bytes_fetched: t.bytes_fetched + s.bytes_fetched,
                cache_hits: t.cache_hits + s.cache_hits,
                cached_bytes: t.cached_bytes + s.cached_bytes,
                demand_fetches: t.demand_fetches + s.demand_fetches,
                demand_fetch_p50: t.demand_fetch_p50.max(s.demand_fetch_p50),
                demand_fetch_p99: t.demand_fetch_p99.max(s.demand_fetch_p99),
            }
        })
    }

    /// Lets recursive walks below a file system's directory take its entries from `entries`
    /// (the snapshot's file catalog) instead of reading the directories: names and
    /// metadata come from the catalog, symbolic-link targets from the file system.
    pub(crate) fn use_catalog(&mut self, mut entries: Vec<FileEntry>) {
        // Listing order: each directory before what it holds, names sorted by bytes within
        // a directory ("a", "a/x", "a-b"; the catalog sorts whole paths: "a-b" before "a/x").
        entries.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
        self.catalog = Some(entries);
    }

    /// Looks `paths` (snapshot paths a command is about to read) up in the snapshot's file
    /// catalog, when it has one: the file system that holds one is then told its inode
    /// number ([`Volume::hint`]), and opening it reads that inode rather than every
    /// directory and inode above it, a chunk fetched and decoded for each, one after
    /// another. Paths the catalog does not hold (through a symbolic link, say), or holds
    /// without an inode number, resolve as always.
    pub(crate) fn hint(&mut self, repo: &Repository, paths: &[String]) {
        let mut wanted = Vec::new();
        for p in paths {
            if let Ok(comps) = components(p) {
                if !comps.is_empty() {
                    wanted.push(comps.join("/"));
                }
            }
        }
        if wanted.is_empty() {
            return;
        }
        let asked: Vec<&str> = wanted.iter().map(String::as_str).collect();
        let Some(found) = super::stored::inodes_from_catalog(repo, &self.id, &asked) else {
            return;
        };
        for (path, inode) in wanted.into_iter().zip(found) {
            if inode != 0 {
                self.hints.insert(path, inode);
            }
        }
    }

    /// The catalog's entries below the directory at snapshot path `dir`, in listing order;
    /// `None` without a catalog or when it does not hold `dir` (a case-insensitive name
    /// spelled otherwise, say), so the caller reads the directories.
    pub(crate) fn catalog_below(&self, dir: &str) -> Option<&[FileEntry]> {
        let entries = self.catalog.as_deref()?;
        if dir.is_empty() {
            return (!entries.is_empty()).then_some(entries);
        }
        let key = |e: &FileEntry| e.path.split('/').cmp(dir.split('/'));
        let at = entries.binary_search_by(key).ok()?;
        if !matches!(
            entries[at].kind,
            FileKind::Dir | FileKind::Disk | FileKind::Partition
        ) {
            return None;
        }
        let inside = format!("{dir}/");
        let end = at + 1 + entries[at + 1..].partition_point(|e| e.path.starts_with(&inside));
        Some(&entries[at + 1..end])
    }

    /// The same snapshot for another thread, reading through this one's readers (one cache
    /// for both): every disk's reader is made first.
    pub(crate) fn sharing(&self) -> Self {
        for disk in 0..self.manifest.disks.len() {
            self.reader(disk);
        }
        Snapshot {
            id: self.id,
            manifest: self.manifest.clone(),
            store: self.store.clone(),
            options: self.options.clone(),
            readers: RefCell::new(self.readers.borrow().clone()),
            sources: self.sources.clone(),
            catalog: None,
            hints: self.hints.clone(),
        }
    }

    /// For each disk, the chunks its reader has touched (an empty list for a disk nothing
    /// read); `None` unless the readers were made with [`ReaderOptions::track`].
    pub(crate) fn touched(&self) -> Option<Vec<Vec<u32>>> {
        (0..self.manifest.disks.len())
            .map(|d| {
                let touched = self.reader(d).touched()?;
                Some(touched.into_iter().map(|i| i as u32).collect())
            })
            .collect()
    }

    fn reader(&self, disk: usize) -> Arc<SnapshotReader> {
        let mut readers = self.readers.borrow_mut();
        readers
            .entry(disk)
            .or_insert_with(|| {
                Arc::new(SnapshotReader::with_source(
                    self.store.clone(),
                    &self.manifest.disks[disk],
                    &self.options,
                    self.sources.get(disk).cloned().flatten(),
                ))
            })
            .clone()
    }

    /// Logs (at info) what the readers fetched: chunks and their stored bytes.
    pub(crate) fn log_reads(&self) {
        let s = self.read_stats();
        let (chunks, bytes) = (s.chunks_fetched, s.bytes_fetched);
        tracing::info!(
            "snapshot {}: read {chunks} chunks, {bytes} stored bytes",
            &self.id.to_hex()[..12]
        );
    }

    /// What `path` names.
    pub(crate) fn resolve(&self, path: &str) -> Result<Target> {
        let comps = components(path)?;
        let disks = &self.manifest.disks;
        if disks.len() == 1 {
            return self.disk_level(0, "", &comps);
        }
        let Some(first) = comps.first() else {
            let children = (0..disks.len())
                .map(|i| self.disk_entry(i))
                .collect::<Result<_>>()?;
            return Ok(Target::Virtual { children });
        };
        let Some(i) = disks.iter().position(|d| d.name == *first) else {
            let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
            return Err(Error::Refused(format!(
                "{path}: the snapshot has no disk {first}; its disks are {}",
                names.join(", ")
            )));
        };
        self.disk_level(i, first, &comps[1..])
    }

    fn disk_entry(&self, i: usize) -> Result<FileEntry> {
        let disk = &self.manifest.disks[i];
        let r = self.reader(i);
        let mut view = RangeReader::new(r.clone(), 0, r.len());
        let layout = probe::layout(&mut view).map_err(|e| refused(&disk.name, &e))?;
        let (fs_type, label) = match layout {
            Layout::Table { scheme, .. } => (scheme.to_string(), None),
            Layout::Whole(found) => self.describe(found, view, &disk.name),
        };
        Ok(FileEntry {
            path: disk.name.clone(),
            name: disk.name.clone(),
            kind: FileKind::Disk,
            size: disk.source_len,
            fs_type: Some(fs_type),
            label,
            ..FileEntry::default()
        })
    }

    /// The kind and label of what `view` holds.
    fn describe(&self, found: Found, view: RangeReader, what: &str) -> (String, Option<String>) {
        match found {
            Found::Other(name) => (name.to_string(), None),
            Found::Empty => ("empty".to_string(), None),
            Found::Unknown => ("unknown".to_string(), None),
            f => match open_volume(f, view, what) {
                Ok(vol) => (vol.kind().to_string(), vol.label()),
                Err(_) => ("damaged".to_string(), None),
            },
        }
    }

    /// Disk `i` (named `prefix` in paths), then `rest`.
    fn disk_level(&self, i: usize, prefix: &str, rest: &[&str]) -> Result<Target> {
        let r = self.reader(i);
        let what = if prefix.is_empty() {
            "the disk"
        } else {
            prefix
        };
        let mut view = RangeReader::new(r.clone(), 0, r.len());
        let layout = probe::layout(&mut view).map_err(|e| refused(what, &e))?;
        let (scheme, parts) = match layout {
            Layout::Whole(found) => {
                let vol = open_volume(found, view, what)?;
                return Ok(self.fs_target(vol, prefix, rest));
            }
            Layout::Table { scheme, parts } => (scheme, parts),
        };
        let Some(first) = rest.first() else {
            let children = parts
                .iter()
                .map(|p| self.part_entry(&r, prefix, p))
                .collect();
            return Ok(Target::Virtual { children });
        };
        let numbers: Vec<String> = parts.iter().map(|p| format!("p{}", p.number)).collect();
        let part = first
            .strip_prefix('p')
            .and_then(|n| n.parse::<u32>().ok())
            .and_then(|n| parts.iter().find(|p| p.number == n))
            .ok_or_else(|| {
                Error::Refused(format!(
                    "{}: {what} is partitioned ({scheme}) and has no partition {first}; its partitions are {}",
                    join(prefix, &rest.join("/")),
                    if numbers.is_empty() { "none".to_string() } else { numbers.join(", ") }
                ))
            })?;
        let name = join(prefix, &format!("p{}", part.number));
        let mut view = RangeReader::new(r, part.start, part.len);
        let found = probe::file_system(&mut view).map_err(|e| refused(&name, &e))?;
        let vol = open_volume(found, view, &name)?;
        Ok(self.fs_target(vol, &name, &rest[1..]))
    }

    fn part_entry(&self, r: &Arc<SnapshotReader>, prefix: &str, p: &Part) -> FileEntry {
        let name = format!("p{}", p.number);
        let path = join(prefix, &name);
        let mut view = RangeReader::new(r.clone(), p.start, p.len);
        let (fs_type, label) = match probe::file_system(&mut view) {
            Ok(found) => self.describe(found, view, &path),
            Err(_) => ("unreadable".to_string(), None),
        };
        FileEntry {
            path,
            name,
            kind: FileKind::Partition,
            size: p.len,
            part_type: Some(p.kind.clone()),
            fs_type: Some(fs_type),
            label: label.or_else(|| (!p.name.is_empty()).then(|| p.name.clone())),
            ..FileEntry::default()
        }
    }

    /// The path `rest` in the file system `vol` (at snapshot path `prefix`), its inode
    /// number passed on where the catalog gave one.
    fn fs_target(&self, vol: Box<dyn Volume>, prefix: &str, rest: &[&str]) -> Target {
        let inner = rest.join("/");
        if let Some(&node) = self.hints.get(&join(prefix, &inner)) {
            vol.hint(&inner, node);
        }
        Target::Fs {
            vol,
            prefix: prefix.to_string(),
            inner: format!("/{inner}"),
        }
    }
}

fn refused(what: &str, e: &std::io::Error) -> Error {
    Error::Refused(format!("{what}: {e}"))
}

/// Opens the file system `found` behind `view`, or says why it cannot be read here.
pub(crate) fn open_volume(found: Found, view: RangeReader, what: &str) -> Result<Box<dyn Volume>> {
    let serve = "export the snapshot with `mover serve` and mount it to reach its files";
    match found {
        Found::Ext => Ok(Box::new(ExtVolume::open(view, what)?)),
        Found::Fat => Ok(Box::new(FatVolume::open(view, what)?)),
        Found::Ntfs => Ok(Box::new(NtfsVolume::open(view, what)?)),
        Found::Other(name) => Err(Error::Refused(format!(
            "{what} holds {name}, which mover does not read file by file; {serve}"
        ))),
        Found::Empty => Err(Error::Refused(format!(
            "{what} holds no file system (its first 64 KiB are zeros)"
        ))),
        Found::Unknown => Err(Error::Refused(format!(
            "{what} holds no file system mover knows (ext2/3/4, FAT, NTFS, exFAT, XFS, Btrfs, LVM, LUKS, swap); {serve}"
        ))),
    }
}

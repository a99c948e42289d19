//! The file catalog of a snapshot, written by the backup right after its commit: every path
//! of the file systems mover reads in the snapshot's disks, read back through the snapshot
//! reader (only the chunks of directories and inodes are read, from the backup's sources
//! where they still match the snapshot: [`crate::SnapshotReader::with_source`]). See
//! docs/FORMAT.md, "File catalog".

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use chunker::format::{
    decode_catalog_with, encode_catalog_with, CatalogEntry, CatalogKind, CatalogReads, Manifest,
    ObjectId,
};
use targets::Repository;

use super::ops::{finish, in_place, placed};
use super::stored::record_of;
use super::tree::{Snapshot, Target};
use super::{FileKind, Volume};
use crate::{Error, ReaderOptions, Result, Source};

/// Most paths a catalog records; a snapshot with more gets none (its `find` reads the disks),
/// which bounds the memory a backup spends on it.
pub const CATALOG_MAX_ENTRIES: usize = 2_000_000;

/// Memory of decoded chunks the catalog's reader may hold.
const READER_MEMORY: u64 = 64 << 20;

/// Builds and stores the file catalog of the committed snapshot `id`. Returns the number of
/// paths recorded, or `None` (with a log line, never a warning) when the snapshot holds no file
/// system mover reads, has too many paths, or the catalog cannot be read or stored: `find`
/// then reads the snapshot's disks.
///
/// `threads` workers list the directories (the backup's pipeline has finished, so its cores
/// are free). `sources[d]`, where given, is the source the backup read disk `d` from: chunks
/// it still holds unchanged (checked against their ids) are read from it rather than fetched
/// from the repository and decoded.
///
/// `parent` is the snapshot this one is an incremental of: when its catalog records the
/// chunks it was read from and this snapshot holds the same chunks at all of them, listing
/// would read the same bytes, so the parent's catalog is stored for this snapshot without
/// reading anything.
pub fn write_catalog(
    repo: &Arc<Repository>,
    id: ObjectId,
    manifest: &Manifest,
    threads: usize,
    sources: Vec<Option<Arc<dyn Source>>>,
    parent: Option<&(ObjectId, Manifest)>,
) -> Option<usize> {
    let start = Instant::now();
    let short = &id.to_hex()[..12];
    if let Some((mut entries, reads)) = parent.and_then(|p| unchanged_catalog(repo, p, manifest)) {
        let bytes = encode_catalog_with(&id, &mut entries, Some(&reads), 9);
        return match repo.put_catalog(&id, &bytes) {
            Ok(()) => {
                tracing::info!(
                    "snapshot {short}: file catalog of {} paths kept from the parent \
                     (none of the chunks it was read from changed)",
                    entries.len()
                );
                Some(entries.len())
            }
            Err(e) => {
                tracing::info!("snapshot {short}: no file catalog: {e}");
                None
            }
        };
    }
    match build(repo, id, manifest, threads, sources) {
        Ok(Some((count, (read, fetched)))) => {
            tracing::info!(
                "snapshot {short}: file catalog of {count} paths written in {:.2} s \
                 ({read} chunks read from the sources, {fetched} fetched)",
                start.elapsed().as_secs_f64()
            );
            Some(count)
        }
        Ok(None) => {
            tracing::info!("snapshot {short}: no file system to catalog");
            None
        }
        Err(e) => {
            tracing::info!("snapshot {short}: no file catalog: {}", crate::one_line(&e));
            None
        }
    }
}

/// The parent's catalog and the chunks it was read from, when every one of those chunks is
/// the same in `manifest` (same disks, in order, of the same sizes).
fn unchanged_catalog(
    repo: &Repository,
    (parent, old): &(ObjectId, Manifest),
    manifest: &Manifest,
) -> Option<(Vec<CatalogEntry>, CatalogReads)> {
    if old.disks.len() != manifest.disks.len() {
        return None;
    }
    let bytes = repo.load_catalog(parent).ok()??;
    let (entries, reads) = decode_catalog_with(&bytes, parent).ok()?;
    let reads = reads?;
    if reads.len() != manifest.disks.len() {
        return None;
    }
    for ((a, b), read) in old.disks.iter().zip(&manifest.disks).zip(&reads) {
        let same_disk =
            a.name == b.name && a.source_len == b.source_len && a.entries.len() == b.entries.len();
        if !same_disk
            || read
                .iter()
                .any(|&i| a.entries.get(i as usize) != b.entries.get(i as usize))
        {
            return None;
        }
    }
    Some((entries, reads))
}

/// The catalog's path count and the chunks read (from the sources, from the repository).
type Built = (usize, (u64, u64));

fn build(
    repo: &Arc<Repository>,
    id: ObjectId,
    manifest: &Manifest,
    threads: usize,
    sources: Vec<Option<Arc<dyn Source>>>,
) -> Result<Option<Built>> {
    let threads = threads.clamp(1, 8);
    let options = ReaderOptions {
        memory: READER_MEMORY,
        window: Some(0),
        // Its planned fetches group neighbouring chunks, which a repository on S3 reads with
        // one request.
        task_bytes: crate::LOCAL_TASK_BYTES,
        track: true,
        ..ReaderOptions::default()
    };
    let snap = Snapshot::with(repo, id, manifest.clone(), &options).with_sources(sources);
    let mut records = Vec::new();
    let mut notes = Vec::new();
    // The disks and partitions, and the roots of the file systems in them, on this thread.
    let mut roots = Vec::new();
    let mut virtuals = vec![snap.resolve("")?];
    while let Some(target) = virtuals.pop() {
        match target {
            Target::Virtual { children } => {
                for child in children {
                    let path = child.path.clone();
                    records.push(record_of(&child));
                    match snap.resolve(&path) {
                        Ok(t) => virtuals.push(t),
                        Err(e) => notes.push(crate::one_line(&e)),
                    }
                }
            }
            Target::Fs { vol, prefix, inner } => {
                let at = in_place(&prefix, vol.stat(&inner))?;
                if at.kind == FileKind::Dir {
                    roots.push(prefix);
                } else if virtuals.is_empty() && roots.is_empty() && records.is_empty() {
                    records.push(record_of(&finish(&*vol, &prefix, &inner, at)?));
                }
            }
        }
    }
    let mut files = records
        .iter()
        .any(|r| !matches!(r.kind, CatalogKind::Disk | CatalogKind::Partition));
    if !roots.is_empty() {
        let walked = walk_parallel(&snap, &roots, threads)?;
        files |= !walked.is_empty();
        records.extend(walked);
    }
    for n in &notes {
        tracing::info!(
            "snapshot {}: not in the file catalog: {n}",
            &id.to_hex()[..12]
        );
    }
    if !files {
        return Ok(None);
    }
    let reads = snap.touched();
    let bytes = encode_catalog_with(&id, &mut records, reads.as_ref(), 9);
    repo.put_catalog(&id, &bytes)?;
    let stats = snap.read_stats();
    Ok(Some((
        records.len(),
        (stats.chunks_from_source, stats.chunks_fetched),
    )))
}

/// Directories still to list, as (file system root, path inside it), and how many workers are
/// listing one now: the walk is over when both are empty.
#[derive(Default)]
struct Queue {
    /// (file system root, path inside it, inode number or 0 where unknown).
    dirs: Vec<(usize, String, u64)>,
    busy: usize,
    failed: bool,
}

/// Every entry below the file system roots `roots` (snapshot paths), listed by `threads`
/// workers taking directories from one queue; each worker opens the file systems itself, all
/// through `snap`'s readers (one cache).
fn walk_parallel(snap: &Snapshot, roots: &[String], threads: usize) -> Result<Vec<CatalogEntry>> {
    let queue = Mutex::new(Queue {
        dirs: (0..roots.len()).map(|r| (r, "/".to_string(), 0)).collect(),
        ..Queue::default()
    });
    let wake = Condvar::new();
    let count = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let snap = snap.sharing();
                let (queue, wake, count) = (&queue, &wake, &count);
                s.spawn(move || {
                    let r = walk_worker(&snap, roots, queue, wake, count);
                    if r.is_err() {
                        queue.lock().expect("catalog queue").failed = true;
                        wake.notify_all();
                    }
                    r
                })
            })
            .collect();
        let mut out = Vec::new();
        let mut first_err = None;
        for w in workers {
            match w.join().expect("catalog worker panicked") {
                Ok(mut r) => out.append(&mut r),
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    })
}

fn walk_worker(
    snap: &Snapshot,
    roots: &[String],
    queue: &Mutex<Queue>,
    wake: &Condvar,
    count: &AtomicUsize,
) -> Result<Vec<CatalogEntry>> {
    let mut vols: Vec<Option<(Box<dyn Volume>, String)>> = roots.iter().map(|_| None).collect();
    let mut out = Vec::new();
    loop {
        let (root, inner, node) = {
            let mut q = queue.lock().expect("catalog queue");
            loop {
                if q.failed {
                    return Ok(out);
                }
                if let Some(d) = q.dirs.pop() {
                    q.busy += 1;
                    break d;
                }
                if q.busy == 0 {
                    return Ok(out);
                }
                q = wake.wait(q).expect("catalog queue");
            }
        };
        if vols[root].is_none() {
            match snap.resolve(&roots[root])? {
                Target::Fs { vol, prefix, .. } => vols[root] = Some((vol, prefix)),
                Target::Virtual { .. } => {
                    return Err(Error::Refused(format!(
                        "{}: not a file system",
                        roots[root]
                    )))
                }
            }
        }
        let (vol, prefix) = vols[root].as_ref().expect("opened above");
        // Down by inode number where the volume can (no path resolved again); by path else.
        let node = if inner == "/" { vol.root_node() } else { node };
        let mut children = match (node != 0).then(|| vol.list_node(node)).flatten() {
            Some(children) => children,
            None => in_place(prefix, vol.list(&inner))?,
        };
        children.sort_by(|a, b| a.name.cmp(&b.name));
        let mut subdirs = Vec::new();
        for child in children {
            let path = super::tree::child(&inner, &child.name);
            let child = placed(prefix, &path, child)?;
            if child.kind == FileKind::Dir {
                subdirs.push((root, path, child.node));
            }
            if count.fetch_add(1, Ordering::Relaxed) >= CATALOG_MAX_ENTRIES {
                return Err(Error::Refused(format!(
                    "more than {CATALOG_MAX_ENTRIES} paths"
                )));
            }
            out.push(record_of(&child));
        }
        let mut q = queue.lock().expect("catalog queue");
        q.busy -= 1;
        // Deepest last, so that workers go down one subtree (its blocks stay in their cache).
        q.dirs.extend(subdirs.into_iter().rev());
        wake.notify_all();
    }
}

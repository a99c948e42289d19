//! Verify: read every chunk a set of snapshots references and check it against its id.

use chunker::le;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chunker::format::{Manifest, ObjectId};
use chunker::{ChunkId, Decoder};
use targets::{ChunkStore, Record, Repository, Sorted, Sorter};

use crate::pipeline::FirstError;
use crate::{Progress, Result};

/// The outcome for one snapshot.
#[derive(Clone, Debug)]
pub struct SnapshotCheck {
    /// The snapshot.
    pub id: ObjectId,
    /// Its name, when the manifest could be read.
    pub name: Option<String>,
    /// Damaged or missing chunks (or the manifest itself), with what is wrong.
    pub problems: Vec<String>,
}

impl SnapshotCheck {
    /// True when the snapshot restores bit-exact.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What verify found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// One entry per snapshot checked.
    pub snapshots: Vec<SnapshotCheck>,
    /// Distinct chunks the snapshots reference.
    pub chunks_total: u64,
    /// Distinct chunks read (fewer than `chunks_total` when a subset was asked for).
    pub chunks_checked: u64,
    /// Plaintext bytes checked.
    pub bytes_checked: u64,
}

/// A chunk to check: where it lives (pack, offset; `None` when not indexed), its id, and its
/// plaintext length. Ordered by place, so chunks are read in pack order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Work {
    at: Option<(ObjectId, u32)>,
    id: ChunkId,
    len: u64,
}

impl Record for Work {
    const LEN: usize = 77;
    fn encode(&self, out: &mut Vec<u8>) {
        let (flag, pack, offset) = match self.at {
            Some((p, o)) => (1u8, p.0, o),
            None => (0, [0; 32], 0),
        };
        out.push(flag);
        out.extend_from_slice(&pack);
        le::push(out, offset);
        out.extend_from_slice(self.id.as_bytes());
        le::push(out, self.len);
    }
    fn decode(b: &[u8]) -> Self {
        let pack = ObjectId(b[1..33].try_into().expect("32 bytes"));
        let offset = le::u32_at(b, 33);
        Work {
            at: (b[0] == 1).then_some((pack, offset)),
            id: ChunkId::decode(&b[37..69]),
            len: le::u64_at(b, 69),
        }
    }
}

/// Records in one run of verify's external sorts (about 80 MiB of work records).
const RUN: usize = 1 << 20;

/// Loads a snapshot's manifest; `Err(problem)` when it is damaged.
type Load<'a> = dyn Fn(&ObjectId) -> Result<std::result::Result<Manifest, String>> + 'a;

/// Checks `snapshots` (a manifest that failed to load counts as damaged). Every distinct
/// chunk for which `select` is true is read once, in pack order (`|_| true` reads them all).
pub fn verify(
    repo: &Repository,
    snapshots: Vec<(ObjectId, std::result::Result<Manifest, String>)>,
    threads: usize,
    progress: &Progress,
    select: &(dyn Fn(&ChunkId) -> bool + Sync),
) -> Result<VerifyReport> {
    let ids: Vec<ObjectId> = snapshots.iter().map(|(id, _)| *id).collect();
    let load = |id: &ObjectId| {
        let (_, m) = snapshots.iter().find(|(s, _)| s == id).expect("listed");
        Ok(m.clone())
    };
    verify_each(repo, &ids, &load, threads, progress, select)
}

/// [`verify`] with each manifest loaded when needed (twice: to gather the chunks, then to
/// report), so that memory holds one at a time (issue 17): the distinct chunks and the work
/// list are sorted outside memory.
fn verify_each(
    repo: &Repository,
    snapshots: &[ObjectId],
    load: &Load<'_>,
    threads: usize,
    progress: &Progress,
    select: &(dyn Fn(&ChunkId) -> bool + Sync),
) -> Result<VerifyReport> {
    let mut unique = Sorter::new(RUN);
    for id in snapshots {
        if let Ok(m) = load(id)? {
            for c in m.disks.iter().flat_map(|d| &d.entries).filter_map(|e| e.id) {
                unique.push(c)?;
            }
        }
    }
    let unique: Sorted<ChunkId> = unique.finish()?;
    // Read in pack order: sequential I/O, each pack opened while it is hot.
    let mut work = Sorter::new(RUN);
    let (mut chunks_checked, mut bytes_checked) = (0u64, 0u64);
    for id in unique.iter() {
        let id = id?;
        if !select(&id) {
            continue;
        }
        let w = match repo.locate(&id) {
            Some((pack, blob)) => Work {
                at: Some((pack, blob.offset)),
                id,
                len: u64::from(blob.raw_len),
            },
            None => Work {
                at: None,
                id,
                len: 0,
            },
        };
        chunks_checked += 1;
        bytes_checked += w.len;
        work.push(w)?;
    }
    let work: Sorted<Work> = work.finish()?;
    progress.set_total(bytes_checked);
    let bad = check_chunks(repo, &work, threads, progress)?;
    let mut report = VerifyReport {
        chunks_total: unique.len(),
        chunks_checked,
        bytes_checked,
        snapshots: Vec::new(),
    };
    for id in snapshots {
        let check = match load(id)? {
            Err(problem) => SnapshotCheck {
                id: *id,
                name: None,
                problems: vec![problem],
            },
            Ok(m) => {
                let mut seen = HashSet::new();
                let problems = m
                    .disks
                    .iter()
                    .flat_map(|d| &d.entries)
                    .filter_map(|e| e.id)
                    .filter(|c| bad.contains_key(c) && seen.insert(*c))
                    .filter_map(|c| bad.get(&c).cloned())
                    .collect();
                SnapshotCheck {
                    id: *id,
                    name: Some(m.name),
                    problems,
                }
            }
        };
        report.snapshots.push(check);
    }
    Ok(report)
}

/// Reads every chunk of `work` on `threads` workers, taking it in batches in order; returns
/// the damaged or missing ones with what is wrong.
fn check_chunks(
    repo: &Repository,
    work: &Sorted<Work>,
    threads: usize,
    progress: &Progress,
) -> Result<HashMap<ChunkId, String>> {
    let bad: Mutex<HashMap<ChunkId, String>> = Mutex::default();
    let queue = Mutex::new(work.iter());
    let errors = FirstError::default();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                errors.run(|| {
                    let mut decoder = Decoder::with_id_key(repo.id_key());
                    let mut buf = Vec::new();
                    loop {
                        let batch: Vec<_> = queue
                            .lock()
                            .expect("queue lock")
                            .by_ref()
                            .take(64)
                            .collect();
                        if batch.is_empty() || errors.should_stop() {
                            return Ok(());
                        }
                        for w in batch {
                            let Work { id, len, .. } = w?;
                            let checked = repo
                                .get(&id)
                                .map_err(crate::Error::from)
                                .and_then(|f| Ok(decoder.decode_into(&f, &id, &mut buf)?));
                            match checked {
                                Ok(()) => {}
                                Err(e) if e.is_damage() => {
                                    bad.lock().expect("bad lock").insert(id, e.to_string());
                                }
                                Err(e) => return Err(e),
                            }
                            progress.add(len);
                        }
                    }
                })
            });
        }
    });
    errors.into_result()?;
    Ok(bad.into_inner().expect("bad lock"))
}

/// Which chunks `verify --subset` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subset {
    /// The `n`-th (1-based) of `m` parts, chosen by chunk id: `m` runs cover every chunk.
    Part(u32, u32),
    /// A random sample of this percentage.
    Percent(f64),
}

/// `mover verify`: which snapshots and which of their chunks to read.
#[derive(Clone, Debug, Default)]
pub struct VerifyRequest {
    /// One snapshot (an id, a unique prefix or `latest`); `None`: all of them.
    pub snapshot: Option<String>,
    /// Only snapshots of this name (with `latest`: the one to choose among).
    pub name: Option<String>,
    /// Read only this part of the chunks.
    pub subset: Option<Subset>,
    /// Workers fetching chunks.
    pub threads: usize,
}

/// Verifies the snapshots a request selects ([`verify`]). A snapshot whose manifest is
/// damaged is reported as damaged, not an error.
pub fn verify_repository(
    repo: &Repository,
    request: &VerifyRequest,
    progress: &Progress,
) -> Result<VerifyReport> {
    let name = request.name.as_deref();
    // The snapshots to check; their manifests are loaded again by verify, one at a time.
    let (selected, one) = match &request.snapshot {
        Some(spec) => {
            let (id, m) = repo.find_snapshot(spec, name)?;
            (vec![id], Some(m))
        }
        None => {
            let mut all = Vec::new();
            for id in repo.snapshot_ids()? {
                match repo.load_snapshot(&id) {
                    Ok(m) if name.is_some_and(|n| m.name != n) => {}
                    Ok(_) => all.push(id),
                    Err(e) if e.is_damage() => all.push(id),
                    Err(e) => return Err(e.into()),
                }
            }
            (all, None)
        }
    };
    let load = |id: &ObjectId| -> Result<std::result::Result<Manifest, String>> {
        if let Some(m) = &one {
            return Ok(Ok(m.clone()));
        }
        match repo.load_snapshot(id) {
            Ok(m) => Ok(Ok(m)),
            Err(e) if e.is_damage() => Ok(Err(e.to_string())),
            Err(e) => Err(e.into()),
        }
    };
    let seed = u64::from_le_bytes(targets::random_bytes());
    let select = |id: &ChunkId| {
        let b = id.as_bytes();
        let word = |i: usize| le::u64_at(b, i);
        match request.subset {
            None => true,
            Some(Subset::Part(n, m)) => word(8) % u64::from(m) == u64::from(n - 1),
            Some(Subset::Percent(p)) => (((word(0) ^ seed) % 1_000_000) as f64) < p * 10_000.0,
        }
    };
    verify_each(repo, &selected, &load, request.threads, progress, &select)
        .map_err(|e| e.failed("verify", ""))
}

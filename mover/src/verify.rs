//! Verify: read every chunk a set of snapshots references and check it against its id.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chunker::format::{Manifest, ObjectId};
use chunker::{ChunkId, Decoder};
use targets::{ChunkStore, Repository};

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
/// plaintext length.
type Work = (Option<(ObjectId, u32)>, ChunkId, u64);

/// Checks `snapshots` (a manifest that failed to load counts as damaged). Every distinct
/// chunk for which `select` is true is read once, in pack order (`|_| true` reads them all).
pub fn verify(
    repo: &Repository,
    snapshots: Vec<(ObjectId, Result<Manifest, String>)>,
    threads: usize,
    progress: &Progress,
    select: &(dyn Fn(&ChunkId) -> bool + Sync),
) -> Result<VerifyReport> {
    let mut unique: HashSet<ChunkId> = HashSet::new();
    for (_, m) in &snapshots {
        if let Ok(m) = m {
            unique.extend(m.disks.iter().flat_map(|d| &d.entries).filter_map(|e| e.id));
        }
    }
    let chunks_total = unique.len() as u64;
    unique.retain(|id| select(id));
    // Read in pack order: sequential I/O, each pack opened while it is hot.
    let mut work: Vec<Work> = unique
        .into_iter()
        .map(|id| match repo.locate(&id) {
            Some((pack, blob)) => (Some((pack, blob.offset)), id, u64::from(blob.raw_len)),
            None => (None, id, 0),
        })
        .collect();
    work.sort_unstable_by_key(|w| w.0);
    progress.set_total(work.iter().map(|w| w.2).sum());
    let bad: Mutex<HashMap<ChunkId, String>> = Mutex::default();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let errors = FirstError::default();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                errors.run(|| {
                    let mut decoder = Decoder::with_id_key(repo.id_key());
                    let mut buf = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= work.len() || errors.should_stop() {
                            return Ok(());
                        }
                        let (_, id, len) = work[i];
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
                })
            });
        }
    });
    errors.into_result()?;
    let bad = bad.into_inner().expect("bad lock");
    let mut report = VerifyReport {
        chunks_total,
        chunks_checked: work.len() as u64,
        bytes_checked: work.iter().map(|w| w.2).sum(),
        snapshots: Vec::new(),
    };
    for (id, m) in snapshots {
        let check = match m {
            Err(problem) => SnapshotCheck {
                id,
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
                    .filter(|id| seen.insert(*id))
                    .filter_map(|id| bad.get(&id).cloned())
                    .collect();
                SnapshotCheck {
                    id,
                    name: Some(m.name),
                    problems,
                }
            }
        };
        report.snapshots.push(check);
    }
    Ok(report)
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
    let selected = match &request.snapshot {
        Some(spec) => {
            let (id, m) = repo.find_snapshot(spec, name)?;
            vec![(id, Ok(m))]
        }
        None => {
            let mut all = Vec::new();
            for id in repo.snapshot_ids()? {
                match repo.load_snapshot(&id) {
                    Ok(m) if name.is_some_and(|n| m.name != n) => {}
                    Ok(m) => all.push((id, Ok(m))),
                    Err(e) if e.is_damage() => all.push((id, Err(e.to_string()))),
                    Err(e) => return Err(e.into()),
                }
            }
            all
        }
    };
    let seed = u64::from_le_bytes(targets::random_bytes());
    let select = |id: &ChunkId| {
        let b = id.as_bytes();
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        match request.subset {
            None => true,
            Some(Subset::Part(n, m)) => word(8) % u64::from(m) == u64::from(n - 1),
            Some(Subset::Percent(p)) => (((word(0) ^ seed) % 1_000_000) as f64) < p * 10_000.0,
        }
    };
    verify(repo, selected, request.threads, progress, &select).map_err(|e| e.failed("verify", ""))
}

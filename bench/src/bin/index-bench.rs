//! `index-bench`: the repository index at scale, with synthetic chunk ids (issue 17).
//!
//! ```text
//! index-bench build DIR CHUNKS [--segment-entries 4194304] [--chunks-per-pack 32]
//! index-bench probe DIR CHUNKS [--segment-entries 4194304] [--seconds 2]
//! index-bench gc-build DIR CHUNKS [--segment-entries 4194304] [--snapshot-chunks 1048576]
//! index-bench gc DIR CHUNKS
//! index-bench open DIR [--seconds 2]
//! ```
//!
//! `build` makes a repository in DIR whose index names CHUNKS chunks (no packs: lookups never
//! read them) as large sorted segments over disjoint id ranges, what a full compaction leaves.
//! `probe` opens it in a fresh process and prints one JSON object: open time, resident memory
//! before and after opening, and single-threaded lookup rates for chunks it does not hold
//! (misses, as a backup of new data asks) and for chunks it holds (hits, `has` and `locate`).
//!
//! `gc-build` makes the same index, plus an empty object for every pack it names and
//! snapshots (of `--snapshot-chunks` chunks each, a 1 TiB disk at 1 MiB chunks) that reference
//! every chunk; `gc` runs garbage collection over it in a fresh process and prints its time
//! and peak resident memory. Nothing is garbage: the run reads every snapshot, every segment
//! and the pack listing, sorts the chunks in use and sums up each pack, which is the part of
//! gc whose memory grows with the repository.
//!
//! `open` opens any repository (one built by real backups, say) in a fresh process and prints
//! its open time, resident memory before and after opening, and the lookup rates for random
//! ids (misses) and for up to 2^20 ids of its largest snapshot (hits, in a random order),
//! read after the memory figures are taken.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chunker::format::{BlobEntry, IndexEntry, ObjectId, SegmentBuilder};
use chunker::{ChunkId, Compression};
use targets::{Backend, ChunkStore, LocalBackend, Repository, RepositoryOptions};

const USAGE: &str = "\
usage: index-bench build DIR CHUNKS [--segment-entries N] [--chunks-per-pack N]
       index-bench probe DIR CHUNKS [--segment-entries N] [--seconds S]
       index-bench gc-build DIR CHUNKS [--segment-entries N] [--snapshot-chunks N]
       index-bench gc DIR CHUNKS
       index-bench open DIR [--seconds S]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("index-bench: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn flag(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a number")),
        None => Ok(default),
    }
}

fn run(args: &[String]) -> Result<(), String> {
    if let [cmd, dir, ..] = args {
        if cmd == "open" {
            return open(dir, flag(args, "--seconds", 2)?);
        }
    }
    let (cmd, dir, chunks) = match args {
        [cmd, dir, chunks, ..] => (cmd.as_str(), dir, chunks),
        _ => return Err("missing arguments".into()),
    };
    let chunks: u64 = chunks.parse().map_err(|_| "CHUNKS must be a number")?;
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir));
    match cmd {
        "build" => build(
            &backend,
            chunks,
            flag(args, "--segment-entries", 4 << 20)?,
            flag(args, "--chunks-per-pack", 32)?,
        ),
        "probe" => probe(
            backend,
            chunks,
            flag(args, "--segment-entries", 4 << 20)?,
            flag(args, "--seconds", 2)?,
        ),
        "gc-build" => {
            let per = flag(args, "--segment-entries", 4 << 20)?;
            build(&backend, chunks, per, 32)?;
            gc_build(
                &backend,
                chunks,
                per,
                flag(args, "--snapshot-chunks", 1 << 20)?,
            )
        }
        "gc" => gc(backend, chunks),
        _ => Err(format!("unknown command {cmd}")),
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn random32(seed: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, w) in out.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&splitmix(seed.wrapping_mul(4).wrapping_add(i as u64)).to_le_bytes());
    }
    out
}

/// Chunk `k` of `segments` range-partitioned segments of `per` chunks: random, except that its
/// first four bytes fall in segment `k / per`'s share of the id space.
fn chunk_id(k: u64, per: u64, segments: u64) -> ChunkId {
    let mut id = random32(k);
    let span = (1u64 << 32) / segments;
    let top =
        (k / per) * span + u64::from(u32::from_le_bytes(id[..4].try_into().expect("4"))) % span;
    id[..4].copy_from_slice(&(top as u32).to_le_bytes());
    id[..4].reverse(); // the first byte is the most significant one of the id's order
    ChunkId::from_bytes(id)
}

fn build(backend: &Arc<dyn Backend>, chunks: u64, per: u64, per_pack: u64) -> Result<(), String> {
    Repository::init(Arc::clone(backend)).map_err(|e| e.to_string())?;
    let segments = chunks.div_ceil(per);
    let started = Instant::now();
    for s in 0..segments {
        let range = s * per..((s + 1) * per).min(chunks);
        let mut entries: Vec<IndexEntry> = range
            .map(|k| IndexEntry {
                pack: ObjectId(random32(u64::MAX / 2 + k / per_pack)),
                blob: BlobEntry {
                    id: chunk_id(k, per, segments),
                    offset: (k % per_pack) as u32 * (1 << 20),
                    stored_len: 1 << 20,
                    raw_len: 1 << 20,
                    compression: Compression::Zstd,
                },
            })
            .collect();
        entries.sort_unstable_by_key(|e| e.blob.id);
        let mut builder = SegmentBuilder::new(entries.len());
        entries.iter().for_each(|e| {
            builder.push(e);
        });
        drop(entries);
        let bytes = builder.finish();
        let key = format!("index/{}", ObjectId::of(&bytes).to_hex());
        backend.put(&key, &bytes).map_err(|e| e.to_string())?;
    }
    println!(
        "{{\"built\":{chunks},\"segments\":{segments},\"seconds\":{:.1}}}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn probe(backend: Arc<dyn Backend>, chunks: u64, per: u64, seconds: u64) -> Result<(), String> {
    let segments_hint = chunks.div_ceil(per);
    // Ids to look up, made before opening so they are in the baseline.
    let n = 1 << 20;
    let hits: Vec<ChunkId> = (0..n)
        .map(|i| chunk_id(splitmix(i) % chunks, per, segments_hint.max(1)))
        .collect();
    let misses: Vec<ChunkId> = (0..n)
        .map(|i| ChunkId::from_bytes(random32(u64::MAX - i)))
        .collect();
    let before = rss_kib();
    let started = Instant::now();
    let repo =
        Repository::open(backend, RepositoryOptions::default()).map_err(|e| e.to_string())?;
    let open_s = started.elapsed().as_secs_f64();
    let after = rss_kib();
    let (segments, tables) = repo.index_footprint();
    let (miss_rate, miss_yes, miss_calls) =
        lookups(&misses, seconds, &mut |id| repo.has(id).unwrap_or(false));
    let (hit_rate, hit_yes, hit_calls) =
        lookups(&hits, seconds, &mut |id| repo.has(id).unwrap_or(false));
    let (locate_rate, ..) = lookups(&hits, seconds, &mut |id| repo.locate(id).is_some());
    if hit_yes != hit_calls {
        return Err(format!(
            "{} of {hit_calls} hits not found",
            hit_calls - hit_yes
        ));
    }
    let grown = after.saturating_sub(before) * 1024;
    println!(
        "{{\"chunks\":{chunks},\"segments\":{segments},\"open_s\":{open_s:.3},\
         \"rss_before_kib\":{before},\"rss_after_open_kib\":{after},\
         \"rss_bytes_per_chunk\":{:.2},\"table_bytes\":{tables},\"table_bytes_per_chunk\":{:.2},\
         \"misses_per_s\":{miss_rate:.0},\"misses_found\":{miss_yes},\"miss_calls\":{miss_calls},\
         \"hits_per_s\":{hit_rate:.0},\"locates_per_s\":{locate_rate:.0},\"rss_end_kib\":{}}}",
        grown as f64 / chunks as f64,
        tables as f64 / chunks as f64,
        rss_kib()
    );
    Ok(())
}

/// Looks up `ids` in turn, again and again, for `seconds`: (calls a second, found, calls).
fn lookups(ids: &[ChunkId], seconds: u64, f: &mut dyn FnMut(&ChunkId) -> bool) -> (f64, u64, u64) {
    let started = Instant::now();
    let mut yes = 0u64;
    let mut calls = 0u64;
    'outer: loop {
        for id in ids {
            yes += u64::from(f(id));
            calls += 1;
            if calls.is_multiple_of(4096) && started.elapsed() >= Duration::from_secs(seconds) {
                break 'outer;
            }
        }
    }
    (calls as f64 / started.elapsed().as_secs_f64(), yes, calls)
}

/// Opens a repository that real backups made and looks up random ids and its largest
/// snapshot's chunks.
fn open(dir: &str, seconds: u64) -> Result<(), String> {
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir));
    let before = rss_kib();
    let started = Instant::now();
    let repo =
        Repository::open(backend, RepositoryOptions::default()).map_err(|e| e.to_string())?;
    let open_s = started.elapsed().as_secs_f64();
    let after = rss_kib();
    let chunks = repo.chunk_count();
    let (segments, tables) = repo.index_footprint();
    let snapshots = repo.snapshots().map_err(|e| e.to_string())?;
    let largest = snapshots
        .iter()
        .max_by_key(|(_, m)| m.disks.iter().map(|d| d.entries.len()).sum::<usize>())
        .ok_or("the repository has no snapshot")?;
    let mut hits: Vec<ChunkId> = largest
        .1
        .disks
        .iter()
        .flat_map(|d| d.entries.iter())
        .filter_map(|e| e.id)
        .take(1 << 20)
        .collect();
    drop(snapshots);
    hits.sort_unstable_by_key(|id| {
        splitmix(u64::from_le_bytes(
            id.as_bytes()[..8].try_into().expect("8"),
        ))
    });
    let misses: Vec<ChunkId> = (0..1u64 << 20)
        .map(|i| ChunkId::from_bytes(random32(u64::MAX - i)))
        .collect();
    let (miss_rate, miss_yes, _) =
        lookups(&misses, seconds, &mut |id| repo.has(id).unwrap_or(false));
    let (hit_rate, hit_yes, hit_calls) =
        lookups(&hits, seconds, &mut |id| repo.has(id).unwrap_or(false));
    let (locate_rate, ..) = lookups(&hits, seconds, &mut |id| repo.locate(id).is_some());
    if hit_yes != hit_calls {
        return Err(format!(
            "{} of {hit_calls} hits not found",
            hit_calls - hit_yes
        ));
    }
    println!(
        "{{\"chunks\":{chunks},\"segments\":{segments},\"open_s\":{open_s:.3},\
         \"rss_before_kib\":{before},\"rss_after_open_kib\":{after},\
         \"table_bytes\":{tables},\"hit_ids\":{},\"misses_per_s\":{miss_rate:.0},\
         \"misses_found\":{miss_yes},\"hits_per_s\":{hit_rate:.0},\
         \"locates_per_s\":{locate_rate:.0},\"rss_end_kib\":{},\"peak_rss_kib\":{}}}",
        hits.len(),
        rss_kib(),
        peak_rss_kib()
    );
    Ok(())
}

/// Empty pack objects for the packs `build` named, and snapshots referencing every chunk.
fn gc_build(backend: &Arc<dyn Backend>, chunks: u64, per: u64, snap: u64) -> Result<(), String> {
    use chunker::format::{BackupStats, Chunking, Disk, Entry, Manifest};
    let started = Instant::now();
    for p in 0..chunks.div_ceil(32) {
        let key = targets::pack_key(&ObjectId(random32(u64::MAX / 2 + p)));
        backend.put(&key, b"").map_err(|e| e.to_string())?;
    }
    let repo = Repository::open(Arc::clone(backend), RepositoryOptions::default())
        .map_err(|e| e.to_string())?;
    let segments = chunks.div_ceil(per);
    let mut k = 0;
    while k < chunks {
        let n = snap.min(chunks - k);
        let entries: Vec<Entry> = (k..k + n)
            .map(|i| Entry {
                len: 1 << 20,
                id: Some(chunk_id(i, per, segments)),
            })
            .collect();
        let name = format!("disk{}", k / snap);
        let manifest = Manifest {
            created_ms: targets::now_ms(),
            nonce: targets::random_bytes(),
            parent: None,
            stats: BackupStats::default(),
            name: name.clone(),
            disks: vec![Disk {
                name,
                source: "synthetic".into(),
                chunking: Chunking::Fixed(1 << 20),
                source_len: n << 20,
                change_token: String::new(),
                stats: BackupStats::default(),
                entries,
            }],
            attachments: Vec::new(),
        };
        repo.commit_snapshot(&manifest).map_err(|e| e.to_string())?;
        k += n;
    }
    println!(
        "{{\"gc_built\":{chunks},\"snapshots\":{},\"seconds\":{:.1}}}",
        chunks.div_ceil(snap),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs gc over a repository `gc-build` made.
fn gc(backend: Arc<dyn Backend>, chunks: u64) -> Result<(), String> {
    let before = rss_kib();
    let started = Instant::now();
    let repo =
        Repository::open(backend, RepositoryOptions::default()).map_err(|e| e.to_string())?;
    let options = targets::gc::GcOptions {
        compact_segments: 0,
        ..targets::gc::GcOptions::default()
    };
    let r = targets::gc::collect(&repo, &options).map_err(|e| e.to_string())?;
    if r.live_chunks as u64 != chunks {
        return Err(format!("{} chunks in use, not {chunks}", r.live_chunks));
    }
    println!(
        "{{\"chunks\":{chunks},\"snapshots\":{},\"packs\":{},\"segments\":{},\
         \"seconds\":{:.1},\"rss_before_kib\":{before},\"peak_rss_kib\":{},\
         \"condemned_packs\":{},\"warnings\":{}}}",
        r.snapshots,
        r.packs,
        r.segments_before,
        started.elapsed().as_secs_f64(),
        peak_rss_kib(),
        r.condemned_packs,
        r.warnings.len()
    );
    Ok(())
}

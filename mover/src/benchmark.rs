//! `mover benchmark`: what this host can do, stage by stage (like
//! `proxmox-backup-client benchmark`), so an admin sees what to expect and which stage limits.
//!
//! Each row runs one stage of the pipeline for about [`BenchOptions::seconds`] on one core and
//! then on every core (`threads` workers, each with its own zstd context, taking chunks in
//! turn), over a corpus made here: half text-like data (log lines, which zstd shrinks several
//! times) and half random data (what compressed or encrypted guest files look like):
//!
//! | stage | what it measures | who pays it |
//! |---|---|---|
//! | hash | BLAKE3 of every chunk ([`chunker::ChunkId::of`]) | every backup, every chunk read |
//! | compress L | zstd at level L over the whole chunk ([`chunker::Encoder::compress`]) | backup, new chunks |
//! | incompressible | the encoder's probe on random chunks, which then skips zstd ([`chunker::Encoder::encode`]) | backup, new incompressible chunks |
//! | decode | zstd decompression plus the BLAKE3 check ([`chunker::Decoder`]) | restore and verify |
//! | read | sequential reads of `--source` (its data extents only, as a backup reads) | backup |
//!
//! Throughput is plaintext megabytes (10^6 bytes) per wall-clock second. Rows are short
//! (1 s by default), so numbers vary by a few percent between runs; a second `read` of a file
//! source may come from the page cache.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chunker::crypto::Aead;
use chunker::{ChunkId, Decoder, Encoder, ExtentKind, Frame};

use crate::{FileSource, NbdOptions, NbdSource, Result, Source, SourceKind};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Seconds per row (each row runs at least one chunk per worker).
    pub seconds: f64,
    /// Workers of the all-core rows [default: available parallelism].
    pub threads: usize,
    /// zstd levels to measure.
    pub levels: Vec<i32>,
    /// The level the backup uses: its rows decide the limits (measured even when not in
    /// `levels`).
    pub level: i32,
    /// Chunk size of the corpus (the backup's fixed chunk size).
    pub chunk_size: usize,
    /// Bytes of corpus, half text-like and half random.
    pub corpus_bytes: usize,
    /// A source to measure the read throughput of (image, block device, NBD URI).
    pub source: Option<String>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            seconds: 1.0,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            levels: vec![1, 3, 6, 9, 19],
            level: crate::DEFAULT_LEVEL,
            chunk_size: chunker::DEFAULT_CHUNK_SIZE as usize,
            corpus_bytes: 16 << 20,
            source: None,
        }
    }
}

/// One stage of the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// BLAKE3 of each chunk.
    Hash,
    /// zstd over the whole chunk at this level.
    Compress(i32),
    /// The encoder at this level on random chunks: its probe finds them incompressible and
    /// stores them without a full zstd pass.
    Incompressible(i32),
    /// Decompression plus the BLAKE3 check of frames made at this level.
    Decode(i32),
    /// Sealing each chunk with an AEAD of encrypted repositories and archives.
    Seal(Aead),
    /// Opening (authenticating and decrypting) sealed chunks.
    Open(Aead),
    /// Sequential reads of the source.
    Read,
}

impl Stage {
    /// A short machine name: `hash`, `compress`, `incompressible`, `decode`, `read`.
    pub fn key(self) -> &'static str {
        match self {
            Stage::Hash => "hash",
            Stage::Compress(_) => "compress",
            Stage::Incompressible(_) => "incompressible",
            Stage::Decode(_) => "decode",
            Stage::Seal(_) => "seal",
            Stage::Open(_) => "open",
            Stage::Read => "read",
        }
    }

    /// The zstd level, for the stages that have one.
    pub fn level(self) -> Option<i32> {
        match self {
            Stage::Compress(l) | Stage::Incompressible(l) | Stage::Decode(l) => Some(l),
            Stage::Hash | Stage::Seal(_) | Stage::Open(_) | Stage::Read => None,
        }
    }

    /// The cipher, for the stages that have one.
    pub fn cipher(self) -> Option<Aead> {
        match self {
            Stage::Seal(a) | Stage::Open(a) => Some(a),
            _ => None,
        }
    }

    /// What the row is called in the table.
    pub fn label(self) -> String {
        match self {
            Stage::Hash => "BLAKE3 hash".into(),
            Stage::Compress(l) => format!("zstd level {l}"),
            Stage::Incompressible(l) => format!("incompressible fast path (level {l})"),
            Stage::Decode(l) => format!("decode level {l} (zstd + BLAKE3)"),
            Stage::Seal(a) => format!("encrypt ({})", a.name()),
            Stage::Open(a) => format!("decrypt ({})", a.name()),
            Stage::Read => "read source".into(),
        }
    }
}

/// One measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// What was measured.
    pub stage: Stage,
    /// Workers (readers for [`Stage::Read`]).
    pub threads: usize,
    /// Plaintext bytes processed.
    pub bytes: u64,
    /// Bytes the encoder produced, for the compressing stages.
    pub stored_bytes: Option<u64>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl Row {
    /// Megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.seconds.max(1e-9) / 1e6
    }
}

/// The source measured, when one was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    /// As given.
    pub spec: String,
    /// Size in bytes.
    pub len: u64,
    /// Bytes in data extents (what a full backup reads).
    pub data_bytes: u64,
    /// The source is small: all its data was read before the time was up, and the reads after
    /// that came from the page cache (for files and devices).
    pub read_whole: bool,
}

/// Everything measured, in the order measured.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    /// Workers of the all-core rows.
    pub threads: usize,
    /// Seconds per row asked for.
    pub seconds: f64,
    /// The level the limits are computed for.
    pub level: i32,
    /// Corpus size in bytes.
    pub corpus_bytes: u64,
    /// Chunk size of the corpus.
    pub chunk_size: usize,
    /// The rows.
    pub rows: Vec<Row>,
    /// The source, with `--source`.
    pub source: Option<SourceInfo>,
}

/// Runs every row: hash, compression at each level, the incompressible fast path and decode,
/// on one core and on `threads`; then the source's read throughput with one reader and with
/// `threads` readers.
///
/// # Errors
///
/// The source cannot be opened or read, or is a stream (it can be measured only by consuming
/// it).
pub fn run(opts: &BenchOptions) -> Result<BenchReport> {
    let chunk_size = opts.chunk_size.max(4096);
    let count = (opts.corpus_bytes / chunk_size).max(2) & !1;
    let chunks: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            if i % 2 == 0 {
                text_like(chunk_size, i as u64)
            } else {
                random(chunk_size, i as u64)
            }
        })
        .collect();
    let random_chunks: Vec<Vec<u8>> = chunks.iter().skip(1).step_by(2).cloned().collect();
    let for_decode: Vec<(ChunkId, Frame)> = {
        let mut enc = Encoder::new(opts.level);
        chunks
            .iter()
            .map(|c| (ChunkId::of(c), enc.compress(c)))
            .collect()
    };
    let duration = Duration::from_secs_f64(opts.seconds.clamp(0.0, 600.0));
    let threads = opts.threads.max(1);
    let mut counts = vec![1];
    if threads > 1 {
        counts.push(threads);
    }
    let mut levels = opts.levels.clone();
    if !levels.contains(&opts.level) {
        levels.push(opts.level);
    }
    let mut stages = vec![Stage::Hash];
    stages.extend(levels.iter().map(|&l| Stage::Compress(l)));
    stages.push(Stage::Incompressible(opts.level));
    stages.push(Stage::Decode(opts.level));
    // Throwaway keys: the cost of sealing does not depend on them.
    let master = chunker::crypto::MasterKey::random();
    let mut crypt = Vec::new();
    for aead in [Aead::Aes256Gcm, Aead::XChaCha20Poly1305] {
        stages.extend([Stage::Seal(aead), Stage::Open(aead)]);
        let keys = chunker::crypto::Keys::derive(&master, aead);
        let sealed: Vec<Vec<u8>> = chunks.iter().map(|c| keys.seal(b"bench", c)).collect();
        crypt.push((keys, sealed));
    }
    let keys_of = |a: Aead| {
        let (keys, sealed) = crypt
            .iter()
            .find(|(k, _)| k.aead() == a)
            .expect("both ciphers have keys");
        (keys, sealed)
    };
    let mut rows = Vec::new();
    for stage in stages {
        for &n in &counts {
            let input = match stage {
                Stage::Incompressible(_) => Input::Plain(&random_chunks),
                Stage::Decode(_) => Input::Frames(&for_decode),
                Stage::Seal(a) => Input::Crypt(&chunks, keys_of(a).0),
                Stage::Open(a) => Input::Crypt(keys_of(a).1, keys_of(a).0),
                _ => Input::Plain(&chunks),
            };
            rows.push(measure(stage, input, n, duration));
        }
    }
    let source = match &opts.source {
        Some(spec) => Some(read_rows(spec, &counts, duration, &mut rows)?),
        None => None,
    };
    Ok(BenchReport {
        threads,
        seconds: duration.as_secs_f64(),
        level: opts.level,
        corpus_bytes: (count * chunk_size) as u64,
        chunk_size,
        rows,
        source,
    })
}

impl BenchReport {
    /// The row of `stage` with `threads` workers.
    pub fn row(&self, stage: Stage, threads: usize) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.stage == stage && r.threads == threads)
    }

    /// Which stage limits, one line each for backup and restore, e.g. "compression at level
    /// 3 on all cores: 410 MB/s — the backup of compressible data is bound by this".
    pub fn limits(&self) -> Vec<String> {
        let all = |s| self.row(s, self.threads).map(Row::mb_per_s);
        let mut out = Vec::new();
        let level = self.level;
        let (Some(hash), Some(zstd)) = (all(Stage::Hash), all(Stage::Compress(level))) else {
            return out;
        };
        // Both run on the same cores, one after the other for each chunk.
        let compute = 1.0 / (1.0 / hash + 1.0 / zstd);
        let cores = if self.threads == 1 {
            "one core".to_string()
        } else {
            format!("all {} cores", self.threads)
        };
        // A source read whole within the time was measured from the page cache: no limit.
        let read = all(Stage::Read).filter(|_| !self.source.as_ref().is_some_and(|s| s.read_whole));
        out.push(match read {
            Some(r) if r < compute => format!(
                "reading the source with {} readers: {r:.0} MB/s — the backup of this source is \
                 bound by its read speed (hash + compression at level {level} on {cores}: \
                 {compute:.0} MB/s)",
                self.threads
            ),
            _ if zstd <= hash => format!(
                "compression at level {level} on {cores}: {zstd:.0} MB/s — the backup of \
                 compressible data is bound by this (with hashing: {compute:.0} MB/s{})",
                read.map_or(String::new(), |r| format!(
                    "; the source reads at {r:.0} MB/s"
                ))
            ),
            _ => format!(
                "BLAKE3 hashing on {cores}: {hash:.0} MB/s — the backup is bound by this \
                 (with compression at level {level}: {compute:.0} MB/s)"
            ),
        });
        let aead = Aead::preferred();
        if let (Some(seal), Some(open)) = (all(Stage::Seal(aead)), all(Stage::Open(aead))) {
            out.push(format!(
                "encryption ({}, the default on this processor) on {cores}: {seal:.0} MB/s \
                 sealing, {open:.0} MB/s opening — what an encrypted repository or archive adds \
                 per stored byte",
                aead.name()
            ));
        }
        if let Some(decode) = all(Stage::Decode(level)) {
            out.push(format!(
                "decoding level {level} frames on {cores}: {decode:.0} MB/s — the fastest a \
                 restore or verify can go before the destination's write speed"
            ));
        }
        out
    }

    /// A table for people: one line per stage, one column per worker count, then the limits.
    pub fn to_table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "mover benchmark: {} worker(s), {:.1} s per row, {} MiB corpus in {} KiB chunks \
             (half text-like, half random)\n",
            self.threads,
            self.seconds,
            self.corpus_bytes >> 20,
            self.chunk_size >> 10
        );
        let counts: Vec<usize> = if self.threads > 1 {
            vec![1, self.threads]
        } else {
            vec![1]
        };
        let _ = write!(out, "{:<40}", "stage");
        for n in &counts {
            let _ = write!(out, "{:>16}", format!("{n} thread(s)"));
        }
        let _ = writeln!(out, "  stored");
        let mut seen: Vec<Stage> = Vec::new();
        for row in &self.rows {
            if seen.contains(&row.stage) {
                continue;
            }
            seen.push(row.stage);
            let label = match (row.stage, &self.source) {
                (Stage::Read, Some(s)) => format!("read {}", s.spec),
                _ => row.stage.label(),
            };
            let _ = write!(out, "{label:<40}");
            for &n in &counts {
                let cell = self
                    .row(row.stage, n)
                    .map_or("-".to_string(), |r| format!("{:.0} MB/s", r.mb_per_s()));
                let _ = write!(out, "{cell:>16}");
            }
            if let Some(stored) = row.stored_bytes {
                let pct = stored as f64 * 100.0 / row.bytes.max(1) as f64;
                let _ = write!(out, "  {pct:.0}%");
            }
            out.push('\n');
        }
        if let Some(s) = self.source.as_ref().filter(|s| s.read_whole) {
            let _ = writeln!(
                out,
                "\nnote: all {:.1} MiB of data of {} were read within the time; later reads came \
                 from the page cache (not counted in the limits)",
                s.data_bytes as f64 / f64::from(1 << 20),
                s.spec
            );
        }
        out.push_str("\nlimits:\n");
        for l in self.limits() {
            let _ = writeln!(out, "  {l}");
        }
        out
    }
}

enum Input<'a> {
    Plain(&'a [Vec<u8>]),
    Frames(&'a [(ChunkId, Frame)]),
    /// Chunks to seal (or sealed chunks to open) with these keys.
    Crypt(&'a [Vec<u8>], &'a chunker::crypto::Keys),
}

impl Input<'_> {
    fn len(&self) -> usize {
        match self {
            Input::Plain(c) | Input::Crypt(c, _) => c.len(),
            Input::Frames(f) => f.len(),
        }
    }
}

/// Runs `stage` on `threads` workers for about `duration`; each worker goes through all the
/// chunks in order, wrapping around, from its own starting point, and does at least one. (Each
/// worker sees the same mix of text-like and random chunks: were the chunks dealt out, a
/// worker given only fast ones would tilt the mix and inflate the all-core rate.)
fn measure(stage: Stage, input: Input<'_>, threads: usize, duration: Duration) -> Row {
    let start = Instant::now();
    let (bytes, stored) = std::thread::scope(|s| {
        let input = &input;
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut enc = stage.level().map(Encoder::new);
                    let mut dec = Decoder::new();
                    let mut out = Vec::new();
                    let (mut bytes, mut stored) = (0u64, 0u64);
                    // Start on a text-like chunk, so each worker's mix stays even.
                    let mut i = (t * input.len() / threads) & !1;
                    loop {
                        let k = i % input.len();
                        match (stage, input, enc.as_mut()) {
                            (Stage::Decode(_), Input::Frames(f), _) => {
                                let (id, frame) = &f[k];
                                dec.decode_into(frame, id, &mut out)
                                    .expect("frames made by this run decode");
                                bytes += out.len() as u64;
                            }
                            (Stage::Compress(_), Input::Plain(c), Some(e)) => {
                                stored += e.compress(&c[k]).bytes.len() as u64;
                                bytes += c[k].len() as u64;
                            }
                            (Stage::Incompressible(_), Input::Plain(c), Some(e)) => {
                                stored += e.encode(&c[k]).bytes.len() as u64;
                                bytes += c[k].len() as u64;
                            }
                            (_, Input::Plain(c), _) => {
                                std::hint::black_box(ChunkId::of(&c[k]));
                                bytes += c[k].len() as u64;
                            }
                            (Stage::Seal(_), Input::Crypt(c, keys), _) => {
                                out.clear();
                                keys.seal_into(b"bench", &c[k], &mut out);
                                bytes += c[k].len() as u64;
                            }
                            (Stage::Open(_), Input::Crypt(c, keys), _) => {
                                let plain = keys
                                    .open(b"bench", &c[k])
                                    .expect("chunks sealed by this run open");
                                bytes += plain.len() as u64;
                            }
                            (_, Input::Crypt(..), _) => unreachable!("only seal and open use keys"),
                            (_, Input::Frames(_), _) => unreachable!("only decode reads frames"),
                        }
                        i += 1;
                        // Whole pairs only (text-like, then random), however late a thread
                        // starts, so every worker's mix stays even.
                        let done = i - ((t * input.len() / threads) & !1);
                        if done.is_multiple_of(2) && start.elapsed() >= duration {
                            break (bytes, stored);
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("benchmark worker"))
            .fold((0, 0), |(b, s), (b2, s2)| (b + b2, s + s2))
    });
    Row {
        stage,
        threads,
        bytes,
        stored_bytes: matches!(stage, Stage::Compress(_) | Stage::Incompressible(_))
            .then_some(stored),
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// Block size of the source reads.
const READ_BLOCK: u64 = 4 << 20;

/// Opens `spec`, then reads its data extents in order: first with one reader, then with
/// `threads` readers carrying on where the first stopped (so neither reads what the other
/// already brought into the page cache, unless the source is small).
fn read_rows(
    spec: &str,
    counts: &[usize],
    duration: Duration,
    rows: &mut Vec<Row>,
) -> Result<SourceInfo> {
    let source: Box<dyn Source> = if spec.starts_with("nbd://") || spec.starts_with("nbd+unix://") {
        Box::new(NbdSource::connect(spec, &NbdOptions::default())?)
    } else {
        let f = FileSource::open(spec)?;
        if f.kind() == SourceKind::Stream {
            return Err(crate::Error::Source {
                path: spec.to_string(),
                source: std::io::Error::other(
                    "a stream (pipe or character device) can be measured only by consuming it; \
                     give an image, a block device or an NBD export",
                ),
            });
        }
        Box::new(f)
    };
    let mut blocks = Vec::new();
    for extent in source.extents()? {
        let e = extent?;
        if e.kind == ExtentKind::Zero {
            continue;
        }
        let mut off = e.offset;
        while off < e.offset + e.len {
            let len = (e.offset + e.len - off).min(READ_BLOCK);
            blocks.push((off, len));
            off += len;
        }
    }
    let mut info = SourceInfo {
        spec: spec.to_string(),
        len: source.len(),
        data_bytes: blocks.iter().map(|b| b.1).sum(),
        read_whole: false,
    };
    let next = AtomicUsize::new(0);
    for &n in counts {
        let start = Instant::now();
        let results: Vec<Result<u64>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..n)
                .map(|_| {
                    s.spawn(|| {
                        let mut buf = vec![0u8; READ_BLOCK as usize];
                        let mut bytes = 0;
                        // At least one block each, however late a thread starts.
                        while bytes == 0 || start.elapsed() < duration {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            // Wrap around a small source rather than stop early.
                            let Some(&(off, len)) = blocks.get(i % blocks.len().max(1)) else {
                                break;
                            };
                            source.read_at(off, &mut buf[..len as usize])?;
                            bytes += len;
                        }
                        Ok(bytes)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("reader"))
                .collect()
        });
        let mut bytes = 0;
        for r in results {
            bytes += r?;
        }
        rows.push(Row {
            stage: Stage::Read,
            threads: n,
            bytes,
            stored_bytes: None,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    info.read_whole = next.load(Ordering::Relaxed) > blocks.len();
    Ok(info)
}

/// A splitmix64 stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Incompressible bytes.
fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed ^ 0x5eed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        chunker::le::push(&mut out, rng.next());
    }
    out.truncate(len);
    out
}

/// Log-like lines: a timestamp, a host, a service and a few words from a small vocabulary
/// with numbers, which zstd shrinks about as much as the text and binaries of a guest.
fn text_like(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "connection",
        "from",
        "accepted",
        "session",
        "opened",
        "closed",
        "for",
        "user",
        "root",
        "backup",
        "disk",
        "read",
        "write",
        "error",
        "warning",
        "retry",
        "timeout",
        "eth0",
        "link",
        "up",
        "down",
        "kernel:",
        "systemd[1]:",
        "sshd",
        "cron",
        "started",
        "stopped",
        "request",
        "GET",
        "POST",
        "/api/v1/items",
        "status",
        "200",
        "404",
        "bytes",
        "ms",
    ];
    const SERVICES: &[&str] = &["kernel", "sshd", "nginx", "postgres", "cron", "systemd"];
    let mut rng = Rng(seed ^ 0x7e47);
    let mut out = String::with_capacity(len + 200);
    let mut t = 1_700_000_000 + (seed % 1000) * 86_400;
    while out.len() < len {
        t += rng.next() % 5;
        let r = rng.next();
        out.push_str(&format!(
            "{t} host-{} {}[{}]: ",
            r % 16,
            SERVICES[(r >> 8) as usize % SERVICES.len()],
            (r >> 16) % 30_000
        ));
        for _ in 0..3 + rng.next() % 8 {
            let w = rng.next();
            out.push_str(WORDS[w as usize % WORDS.len()]);
            // About one word in eight is followed by a number.
            if w.trailing_zeros() >= 3 {
                out.push_str(&format!(" {}", (w >> 32) % 100_000));
            }
            out.push(' ');
        }
        out.push('\n');
    }
    let mut bytes = out.into_bytes();
    bytes.truncate(len);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report as `mover benchmark --json` prints it.
    fn json(r: &BenchReport) -> serde_json::Value {
        serde_json::to_value(crate::report::BenchmarkSummary::from(r)).unwrap()
    }

    fn tiny() -> BenchOptions {
        BenchOptions {
            seconds: 0.01,
            threads: 2,
            levels: vec![1, 19],
            level: 3,
            // The probe of the fast path needs chunks of 128 KiB or more.
            chunk_size: 128 << 10,
            corpus_bytes: 512 << 10,
            source: None,
        }
    }

    #[test]
    fn corpus_is_half_compressible() {
        let text = text_like(128 << 10, 1);
        let rand = random(128 << 10, 2);
        assert_eq!((text.len(), rand.len()), (128 << 10, 128 << 10));
        let mut enc = Encoder::new(3);
        let t = enc.compress(&text).bytes.len();
        assert!(t * 3 < text.len(), "text-like data shrinks: {t}");
        assert_eq!(
            enc.encode(&rand).bytes.len(),
            rand.len(),
            "random data does not"
        );
        assert_eq!(text_like(1000, 1), text_like(1000, 1), "deterministic");
    }

    #[test]
    fn every_stage_on_one_and_all_cores() {
        let r = run(&tiny()).unwrap();
        let stages = [
            Stage::Hash,
            Stage::Compress(1),
            Stage::Compress(19),
            Stage::Compress(3),
            Stage::Incompressible(3),
            Stage::Decode(3),
            Stage::Seal(Aead::Aes256Gcm),
            Stage::Open(Aead::Aes256Gcm),
            Stage::Seal(Aead::XChaCha20Poly1305),
            Stage::Open(Aead::XChaCha20Poly1305),
        ];
        assert_eq!(r.rows.len(), stages.len() * 2);
        for s in stages {
            for n in [1, 2] {
                let row = r.row(s, n).unwrap_or_else(|| panic!("{s:?} x{n}"));
                assert!(row.bytes >= (128 << 10) * n as u64, "{row:?}");
                assert!(row.mb_per_s() > 0.0);
            }
        }
        let c1 = r.row(Stage::Compress(1), 1).unwrap();
        let stored = c1.stored_bytes.unwrap();
        assert!(
            stored < c1.bytes && stored > c1.bytes / 3,
            "half compresses: {c1:?}"
        );
        let fast = r.row(Stage::Incompressible(3), 1).unwrap();
        assert_eq!(
            fast.stored_bytes,
            Some(fast.bytes),
            "random chunks are stored raw"
        );
        assert!(r.row(Stage::Hash, 1).unwrap().stored_bytes.is_none());
        assert!(r.source.is_none());
    }

    #[test]
    fn single_core_host_has_one_column() {
        let r = run(&BenchOptions {
            threads: 1,
            levels: vec![3],
            ..tiny()
        })
        .unwrap();
        // hash, compress, incompressible, decode, and seal and open for each of two ciphers
        assert_eq!(r.rows.len(), 8);
        assert!(r.limits()[0].contains("on one core"), "{:?}", r.limits());
    }

    #[test]
    fn source_reads_only_data_extents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(64 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &random(1 << 20, 9), 8 << 20).unwrap();
        drop(f);
        let spec = path.to_str().unwrap().to_string();
        let r = run(&BenchOptions {
            source: Some(spec.clone()),
            levels: vec![3],
            ..tiny()
        })
        .unwrap();
        let info = r.source.clone().unwrap();
        assert_eq!(info.len, 64 << 20);
        // Where the file system reports holes, only the data is read.
        assert!(info.data_bytes >= 1 << 20 && info.data_bytes <= 64 << 20);
        for n in [1, 2] {
            assert!(r.row(Stage::Read, n).unwrap().bytes > 0);
        }
        let table = r.to_table();
        assert!(table.contains(&format!("read {spec}")), "{table}");
        // 1 MiB of data (where holes are reported) is read whole long before the rows end.
        if info.data_bytes <= 4 << 20 {
            assert!(info.read_whole && table.contains("page cache"), "{table}");
        }
        let j = json(&r);
        assert_eq!(j["source"]["len"], 64 << 20);
        assert!(j["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["stage"] == "read"));
    }

    #[test]
    fn a_stream_or_missing_source_is_an_error() {
        let e = run(&BenchOptions {
            source: Some("/dev/null".into()),
            ..tiny()
        })
        .unwrap_err();
        assert!(e.to_string().contains("stream"), "{e}");
        let e = run(&BenchOptions {
            source: Some("/no/such/disk".into()),
            ..tiny()
        })
        .unwrap_err();
        assert!(e.to_string().contains("/no/such/disk"), "{e}");
    }

    /// A report with chosen numbers, to check the limit lines.
    fn report(hash: f64, zstd: f64, read: Option<f64>) -> BenchReport {
        let row = |stage, mbs: f64| Row {
            stage,
            threads: 4,
            bytes: (mbs * 1e6) as u64,
            stored_bytes: None,
            seconds: 1.0,
        };
        let mut rows = vec![
            row(Stage::Hash, hash),
            row(Stage::Compress(3), zstd),
            row(Stage::Decode(3), 2000.0),
        ];
        rows.extend(read.map(|r| row(Stage::Read, r)));
        BenchReport {
            threads: 4,
            seconds: 1.0,
            level: 3,
            corpus_bytes: 16 << 20,
            chunk_size: 1 << 20,
            rows,
            source: None,
        }
    }

    #[test]
    fn limits_name_the_slowest_stage() {
        let l = report(4000.0, 400.0, None).limits();
        assert!(
            l[0].starts_with(
                "compression at level 3 on all 4 cores: 400 MB/s — the backup of \
                              compressible data is bound by this (with hashing: 364 MB/s)"
            ),
            "{l:?}"
        );
        assert!(
            l[1].contains("decoding level 3 frames on all 4 cores: 2000 MB/s"),
            "{l:?}"
        );
        let l = report(4000.0, 400.0, Some(150.0)).limits();
        assert!(
            l[0].starts_with("reading the source with 4 readers: 150 MB/s"),
            "{l:?}"
        );
        let l = report(4000.0, 400.0, Some(900.0)).limits();
        assert!(l[0].contains("the source reads at 900 MB/s"), "{l:?}");
        let l = report(300.0, 400.0, None).limits();
        assert!(
            l[0].starts_with("BLAKE3 hashing on all 4 cores: 300 MB/s"),
            "{l:?}"
        );
    }

    #[test]
    fn table_and_json_carry_every_row() {
        let r = report(4000.0, 400.0, None);
        let t = r.to_table();
        assert!(t.contains("BLAKE3 hash") && t.contains("4000 MB/s"), "{t}");
        assert!(t.contains("zstd level 3") && t.contains("limits:"), "{t}");
        let j = json(&r);
        assert_eq!(j["command"], "benchmark");
        assert_eq!(j["rows"].as_array().unwrap().len(), 3);
        assert_eq!(j["rows"][1]["stage"], "compress");
        assert_eq!(j["rows"][1]["level"], 3);
        assert_eq!(j["rows"][0]["level"], serde_json::Value::Null);
        assert!((j["rows"][0]["mb_per_s"].as_f64().unwrap() - 4000.0).abs() < 1e-6);
        assert_eq!(j["limits"].as_array().unwrap().len(), 2);
    }
}

//! Benchmark helpers for `mover`: the compute limit of the backup engine on this machine.
//!
//! The compute limit is what hashing (BLAKE3, [`chunker::ChunkId::of`]) and compressing
//! ([`chunker::Encoder`]) the non-zero chunks of an image costs when every core works on it and
//! nothing else happens: no reads (chunks are loaded before timing), no writes, no index. A
//! backup cannot be faster than this; `scripts/bench.sh` divides mover's throughput by it.
//!
//! [`link`] is the link emulator that `scripts/bench-s3.sh` puts between mover and an S3
//! server: added delay in each direction and a rate cap.

mod codec_table;
pub mod link;

pub use codec_table::codec_table;

use std::fs::File;
use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use chunker::{is_zero, ChunkId, Encoder};

/// Non-zero chunks of an image, loaded into memory (possibly a sample of them).
pub struct Loaded {
    /// Size of the image in bytes.
    pub image_bytes: u64,
    /// Bytes in all non-zero chunks of the image.
    pub nonzero_bytes: u64,
    /// Number of non-zero chunks in the image.
    pub nonzero_chunks: u64,
    /// The chunks kept: every `stride`-th non-zero chunk.
    pub chunks: Vec<Vec<u8>>,
    /// 1 when every non-zero chunk was kept.
    pub stride: u64,
}

impl Loaded {
    /// Bytes in the kept chunks.
    pub fn sampled_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.len() as u64).sum()
    }
}

/// Reads `reader` in `chunk_size` pieces and keeps the non-zero ones. When they exceed
/// `max_bytes`, keeps an evenly spread sample instead: every `stride`-th non-zero chunk, the
/// stride doubling each time the kept chunks outgrow `max_bytes`.
pub fn load_nonzero(
    mut reader: impl Read,
    chunk_size: usize,
    max_bytes: u64,
) -> io::Result<Loaded> {
    let mut loaded = Loaded {
        image_bytes: 0,
        nonzero_bytes: 0,
        nonzero_chunks: 0,
        chunks: Vec::new(),
        stride: 1,
    };
    let mut kept_bytes = 0u64;
    let mut buf = vec![0u8; chunk_size];
    loop {
        let n = read_full(&mut reader, &mut buf)?;
        if n == 0 {
            break;
        }
        loaded.image_bytes += n as u64;
        let chunk = &buf[..n];
        if !is_zero(chunk) {
            // `stride` is a power of two.
            if loaded.nonzero_chunks & (loaded.stride - 1) == 0 {
                loaded.chunks.push(chunk.to_vec());
                kept_bytes += n as u64;
                if kept_bytes > max_bytes {
                    // Keep every other kept chunk: still every `stride`-th of all of them.
                    let mut i = 0;
                    loaded.chunks.retain(|_| {
                        i += 1;
                        (i - 1) % 2 == 0
                    });
                    loaded.stride *= 2;
                    kept_bytes = loaded.chunks.iter().map(|c| c.len() as u64).sum();
                }
            }
            loaded.nonzero_chunks += 1;
            loaded.nonzero_bytes += n as u64;
        }
        if n < chunk_size {
            break;
        }
    }
    Ok(loaded)
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What one timed pass over the chunks did.
#[derive(Clone, Copy, Debug)]
pub struct Pass {
    /// Wall seconds of the pass.
    pub seconds: f64,
    /// Bytes of plaintext processed.
    pub bytes: u64,
    /// Bytes the encoder produced (0 for hash-only passes).
    pub stored_bytes: u64,
}

/// What a pass does to each chunk besides hashing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// BLAKE3 only.
    HashOnly,
    /// BLAKE3 plus zstd over the whole chunk at this level: the compute limit as the issue
    /// defines it ([`Encoder::compress`]).
    Zstd(i32),
    /// BLAKE3 plus mover's encoder at this level, which skips zstd on chunks its probe finds
    /// incompressible ([`Encoder::encode`]).
    Encoder(i32),
}

/// Hashes and compresses every chunk on `threads` threads, each with its own [`Encoder`];
/// chunks are handed out one at a time from a shared counter.
pub fn run_pass(chunks: &[Vec<u8>], work: Work, threads: usize) -> Pass {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let stored: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut encoder = match work {
                        Work::HashOnly => None,
                        Work::Zstd(level) | Work::Encoder(level) => Some(Encoder::new(level)),
                    };
                    let mut stored = 0u64;
                    let mut check = 0u8;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(chunk) = chunks.get(i) else { break };
                        let id = ChunkId::of(chunk);
                        check ^= id.as_bytes()[0];
                        if let Some(enc) = encoder.as_mut() {
                            let frame = if matches!(work, Work::Encoder(_)) {
                                enc.encode(chunk)
                            } else {
                                enc.compress(chunk)
                            };
                            stored += frame.bytes.len() as u64;
                        }
                    }
                    std::hint::black_box(check);
                    stored
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .sum()
    });
    Pass {
        seconds: start.elapsed().as_secs_f64(),
        bytes: chunks.iter().map(|c| c.len() as u64).sum(),
        stored_bytes: stored,
    }
}

/// Options of `bench compute-limit`.
#[derive(Clone, Debug)]
pub struct ComputeLimitOpts {
    /// Fixed chunk size in bytes.
    pub chunk_size: usize,
    /// zstd level.
    pub level: i32,
    /// Worker threads.
    pub threads: usize,
    /// Most bytes of chunks to hold in memory; beyond that the chunks are sampled.
    pub max_sample_bytes: u64,
    /// Timed passes; the fastest counts.
    pub repeat: usize,
}

/// Measures the compute limit of the image at `path` and returns it as one JSON object.
pub fn compute_limit(path: &str, opts: &ComputeLimitOpts) -> io::Result<String> {
    let file = File::open(path)?;
    let loaded = load_nonzero(
        io::BufReader::with_capacity(1 << 20, file),
        opts.chunk_size,
        opts.max_sample_bytes,
    )?;
    let sampled = loaded.sampled_bytes();
    // Warm-up on a few chunks: thread start, encoder allocation, page faults of the output.
    let warm = loaded.chunks.len().min(opts.threads * 2);
    run_pass(&loaded.chunks[..warm], Work::Zstd(opts.level), opts.threads);
    // A limit: the best of `repeat` passes, so that noise from other processes only hurts
    // passes that are thrown away.
    let best = |work: Work| {
        (0..opts.repeat.max(1))
            .map(|_| run_pass(&loaded.chunks, work, opts.threads))
            .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
            .expect("at least one pass")
    };
    let hash = best(Work::HashOnly);
    let full = best(Work::Zstd(opts.level));
    let encoder = best(Work::Encoder(opts.level));
    // Extrapolate from the sample to all non-zero data.
    let scale = if sampled == 0 {
        0.0
    } else {
        loaded.nonzero_bytes as f64 / sampled as f64
    };
    let seconds = full.seconds * scale;
    let rate = |bytes: u64, secs: f64| {
        if secs > 0.0 {
            bytes as f64 / secs / 1e6
        } else {
            0.0
        }
    };
    Ok(format!(
        concat!(
            "{{\"image\":{},\"image_bytes\":{},\"nonzero_bytes\":{},\"nonzero_chunks\":{},",
            "\"sampled_bytes\":{},\"sample_stride\":{},\"chunk_size\":{},\"level\":{},\"threads\":{},",
            "\"repeat\":{},",
            "\"seconds\":{:.4},\"measured_seconds\":{:.4},\"mb_per_s_nonzero\":{:.1},",
            "\"image_mb_per_s\":{:.1},\"hash_only_mb_per_s_nonzero\":{:.1},",
            "\"compressed_bytes_sample\":{},\"compression_ratio\":{:.3},",
            "\"encoder_seconds\":{:.4},\"encoder_mb_per_s_nonzero\":{:.1},",
            "\"encoder_stored_bytes_sample\":{}}}"
        ),
        json_str(path),
        loaded.image_bytes,
        loaded.nonzero_bytes,
        loaded.nonzero_chunks,
        sampled,
        loaded.stride,
        opts.chunk_size,
        opts.level,
        opts.threads,
        opts.repeat,
        seconds,
        full.seconds,
        rate(full.bytes, full.seconds),
        rate(loaded.image_bytes, seconds),
        rate(hash.bytes, hash.seconds),
        full.stored_bytes,
        if full.stored_bytes == 0 { 0.0 } else { sampled as f64 / full.stored_bytes as f64 },
        encoder.seconds * scale,
        rate(encoder.bytes, encoder.seconds),
        encoder.stored_bytes,
    ))
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_zero_chunks_and_samples_evenly() {
        let cs = 64 * 1024;
        let mut image = Vec::new();
        for i in 0..64u32 {
            let fill = if i % 4 == 3 { 0 } else { (i + 1) as u8 };
            image.extend(std::iter::repeat_n(fill, cs));
        }
        image.extend(std::iter::repeat_n(9u8, 100)); // a short tail chunk
        let all = load_nonzero(&image[..], cs, u64::MAX).unwrap();
        assert_eq!(all.image_bytes, image.len() as u64);
        assert_eq!(all.nonzero_chunks, 49);
        assert_eq!(all.nonzero_bytes, 48 * cs as u64 + 100);
        assert_eq!(all.stride, 1);
        assert_eq!(all.chunks.len(), 49);

        let some = load_nonzero(&image[..], cs, 10 * cs as u64).unwrap();
        assert_eq!(some.nonzero_bytes, all.nonzero_bytes);
        assert!(some.sampled_bytes() <= 10 * cs as u64);
        assert!(some.stride > 1);
        let n = (all.nonzero_chunks as usize).div_ceil(some.stride as usize);
        assert_eq!(some.chunks.len(), n);
        for (k, c) in some.chunks.iter().enumerate() {
            assert_eq!(c, &all.chunks[k * some.stride as usize]);
        }
    }

    #[test]
    fn pass_counts_bytes() {
        let chunks: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 100_000]).collect();
        let p = run_pass(&chunks, Work::Zstd(3), 3);
        assert_eq!(p.bytes, 800_000);
        assert!(p.stored_bytes > 0 && p.stored_bytes < p.bytes);
        assert_eq!(run_pass(&chunks, Work::HashOnly, 2).stored_bytes, 0);
    }
}

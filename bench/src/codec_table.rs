//! `bench codec-table`: what each way of encoding an image's chunks costs and stores, chunk by
//! chunk, on one core: BLAKE3, zstd at each level over every chunk, and mover's encoder
//! ([`Encoder::encode`], whose probe stores chunks it finds incompressible without a zstd
//! pass). Times are the thread's CPU time, so other processes on a busy machine do not count;
//! each chunk is timed `repeat` times and the fastest counts.
//!
//! Besides the table, it tells how the encoder's decisions went: chunks the probe skipped, and
//! chunks that zstd ran over in full and that were then stored raw anyway (work wasted).

use std::fmt::Write as _;
use std::time::Duration;

use chunker::{ChunkId, Compression, Encoder};

/// The CPU time this thread has used.
#[allow(unsafe_code)]
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant libc knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is available on Linux");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The fastest of `repeat` runs of `f`, in CPU seconds, and its last result.
fn timed<T>(repeat: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..repeat.max(1) {
        let t = thread_cpu();
        let r = f();
        best = best.min((thread_cpu() - t).as_secs_f64());
        out = Some(r);
    }
    (best, out.expect("at least one run"))
}

#[derive(Default, Clone, Copy)]
struct Row {
    seconds: f64,
    stored: u64,
    raw_chunks: u64,
    raw_bytes: u64,
}

#[derive(Default, Clone, Copy)]
struct Decisions {
    probe_seconds: f64,
    skipped_bytes: u64,
    wasted_bytes: u64,
    wasted_seconds: f64,
}

/// One method of the table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Hash,
    Zstd(i32),
    Encoder(i32),
}

/// Measures every method over `chunks` and returns the table as Markdown.
pub fn codec_table(chunks: &[Vec<u8>], levels: &[i32], repeat: usize) -> String {
    let mut methods = vec![Method::Hash];
    methods.extend(levels.iter().map(|&l| Method::Zstd(l)));
    methods.extend(levels.iter().map(|&l| Method::Encoder(l)));
    let mut rows = vec![Row::default(); methods.len()];
    let mut encoders: Vec<Option<Encoder>> = methods
        .iter()
        .map(|m| match m {
            Method::Hash => None,
            Method::Zstd(l) | Method::Encoder(l) => Some(Encoder::new(*l)),
        })
        .collect();
    let mut decisions = vec![Decisions::default(); levels.len()];
    let mut total = 0u64;
    for chunk in chunks {
        total += chunk.len() as u64;
        for (k, m) in methods.iter().enumerate() {
            let (secs, frame) = match (m, encoders[k].as_mut()) {
                (Method::Hash, _) => (timed(repeat, || ChunkId::of(chunk)).0, None),
                (Method::Zstd(_), Some(e)) => {
                    let (s, f) = timed(repeat, || e.compress(chunk));
                    (s, Some(f))
                }
                (Method::Encoder(_), Some(e)) => {
                    let (s, f) = timed(repeat, || e.encode(chunk));
                    (s, Some(f))
                }
                _ => unreachable!("every compressing method has an encoder"),
            };
            let row = &mut rows[k];
            row.seconds += secs;
            if let Some(f) = frame {
                row.stored += f.bytes.len() as u64;
                if f.compression == Compression::None {
                    row.raw_chunks += 1;
                    row.raw_bytes += chunk.len() as u64;
                }
            }
        }
        // The encoder's decisions: the probe alone, and full zstd passes that ended raw.
        for (zi, &l) in levels.iter().enumerate() {
            let k = methods
                .iter()
                .position(|x| *x == Method::Encoder(l))
                .expect("listed");
            let e = encoders[k].as_mut().expect("encoder");
            let (ps, skipped) = timed(repeat, || e.probe_incompressible(chunk));
            let d = &mut decisions[zi];
            d.probe_seconds += ps;
            if skipped {
                d.skipped_bytes += chunk.len() as u64;
            } else {
                let (s, f) = timed(1, || e.compress(chunk));
                if f.compression == Compression::None {
                    d.wasted_bytes += chunk.len() as u64;
                    d.wasted_seconds += s;
                }
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} chunks, {} bytes; CPU seconds of one core, best of {repeat} per chunk\n",
        chunks.len(),
        total
    );
    out.push_str("| method | CPU s | MB/s per core | stored bytes | stored / data | chunks stored raw | bytes stored raw |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for (m, r) in methods.iter().zip(&rows) {
        let name = match m {
            Method::Hash => "BLAKE3".to_string(),
            Method::Zstd(l) => format!("zstd {l}, every chunk"),
            Method::Encoder(l) => format!("encoder {l} (probe, then zstd)"),
        };
        let stored = if *m == Method::Hash {
            "".into()
        } else {
            r.stored.to_string()
        };
        let ratio = if *m == Method::Hash {
            "".into()
        } else {
            format!("{:.4}", r.stored as f64 / total.max(1) as f64)
        };
        let _ = writeln!(
            out,
            "| {name} | {:.3} | {:.0} | {stored} | {ratio} | {} | {} |",
            r.seconds,
            total as f64 / 1e6 / r.seconds.max(1e-9),
            r.raw_chunks,
            r.raw_bytes
        );
    }
    for (l, d) in levels.iter().zip(&decisions) {
        let _ = writeln!(
            out,
            "\nencoder {l}: the probe took {:.3} CPU s and skipped zstd on {} bytes; zstd ran in \
             full over {} bytes that were then stored raw ({:.3} CPU s)",
            d.probe_seconds, d.skipped_bytes, d.wasted_bytes, d.wasted_seconds
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_counts_what_each_method_stores_and_what_the_probe_skips() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let text: Vec<u8> = b"a line of text that zstd shrinks well\n"
            .iter()
            .cycle()
            .take(1 << 20)
            .copied()
            .collect();
        let table = codec_table(&[random, text], &[1, 3], 1);
        assert!(table.starts_with("2 chunks, 2097152 bytes"), "{table}");
        let row = |name: &str| {
            table
                .lines()
                .find(|l| l.starts_with(&format!("| {name} |")))
                .unwrap_or_else(|| panic!("no row {name}: {table}"))
                .split('|')
                .map(|c| c.trim().to_string())
                .collect::<Vec<_>>()
        };
        // The random chunk is stored raw by every method; the text one shrinks.
        for name in ["zstd 3, every chunk", "encoder 3 (probe, then zstd)"] {
            let r = row(name);
            let stored: u64 = r[4].parse().unwrap();
            assert!(
                stored > 1 << 20 && stored < (1 << 20) + 4096,
                "{name}: {stored}"
            );
            assert_eq!(r[6], "1", "{name}: one chunk stored raw");
        }
        assert!(table.contains("encoder 3: the probe took"), "{table}");
        assert!(table.contains("skipped zstd on 1048576 bytes"), "{table}");
        assert!(
            table.contains("full over 0 bytes that were then stored raw"),
            "{table}"
        );
    }
}

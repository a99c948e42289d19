//! `bench`: benchmark helpers for mover. See `bench/README.md`.
//!
//! ```text
//! bench compute-limit IMAGE [--chunk-size 1048576] [--level 3] [--threads N] [--repeat 3]
//!                           [--max-sample-mib 2048]
//! bench codec-table IMAGE [--levels 1,2,3] [--repeat 2] [--max-sample-mib 256]
//! ```

use std::process::ExitCode;

use bench::{codec_table, compute_limit, load_nonzero, ComputeLimitOpts};

const USAGE: &str = "\
usage: bench compute-limit IMAGE [--chunk-size BYTES] [--level L] [--threads N] [--repeat R]
                           [--max-sample-mib M]

compute-limit  Hash (BLAKE3) and compress (zstd) the image's non-zero fixed chunks on all cores,
               with the chunks preloaded into memory, and print one JSON object with the rate.
  --chunk-size BYTES    fixed chunk size (default 1048576)
  --level L             zstd level (default 3)
  --threads N           worker threads (default: all cores)
  --repeat R            timed passes; the fastest is reported (default 3)
  --max-sample-mib M    hold at most M MiB of chunks; beyond that, sample evenly (default 2048)

usage: bench codec-table IMAGE [--levels 1,2,3] [--repeat R] [--max-sample-mib M]

codec-table    For each zstd level: the CPU time of one core and the bytes stored when every
               non-zero 1 MiB chunk is compressed, and when mover's encoder (probe first) does
               it, as a Markdown table; best of R timings per chunk (default 2), chunks sampled
               evenly to M MiB (default 256).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("bench: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("compute-limit") => {}
        Some("codec-table") => return run_codec_table(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return Ok(());
        }
        _ => return Err(format!("expected a subcommand\n{USAGE}")),
    }
    let mut opts = ComputeLimitOpts {
        chunk_size: chunker::DEFAULT_CHUNK_SIZE as usize,
        level: 3,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        max_sample_bytes: 2048 << 20,
        repeat: 3,
    };
    let mut image = None;
    let mut it = args[1..].iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or(format!("{name} needs a value"))
        };
        match flag {
            "--chunk-size" => {
                let v = parse::<u64>(&value(flag)?, flag)?;
                opts.chunk_size = chunker::check_chunk_size(v).map_err(|e| e.to_string())? as usize;
            }
            "--level" => opts.level = parse(&value(flag)?, flag)?,
            "--threads" => opts.threads = parse::<usize>(&value(flag)?, flag)?.max(1),
            "--repeat" => opts.repeat = parse::<usize>(&value(flag)?, flag)?.max(1),
            "--max-sample-mib" => opts.max_sample_bytes = parse::<u64>(&value(flag)?, flag)? << 20,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            f if f.starts_with('-') && f != "-" => {
                return Err(format!("unknown flag {f}\n{USAGE}"))
            }
            _ if image.is_none() => image = Some(arg.clone()),
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    let image = image.ok_or(format!("compute-limit needs an IMAGE\n{USAGE}"))?;
    let json = compute_limit(&image, &opts).map_err(|e| format!("{image}: {e}"))?;
    println!("{json}");
    Ok(())
}

fn run_codec_table(args: &[String]) -> Result<(), String> {
    let (mut levels, mut repeat, mut max_mib) = (vec![1, 2, 3], 2usize, 256u64);
    let mut image = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--levels" => {
                levels = value()?
                    .split(',')
                    .map(|l| parse::<i32>(l, "--levels"))
                    .collect::<Result<_, _>>()?
            }
            "--repeat" => repeat = parse::<usize>(&value()?, arg)?.max(1),
            "--max-sample-mib" => max_mib = parse(&value()?, arg)?,
            f if f.starts_with('-') => return Err(format!("unknown flag {f}\n{USAGE}")),
            _ if image.is_none() => image = Some(arg.clone()),
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    let image = image.ok_or(format!("codec-table needs an IMAGE\n{USAGE}"))?;
    let file = std::fs::File::open(&image).map_err(|e| format!("{image}: {e}"))?;
    let loaded = load_nonzero(
        std::io::BufReader::with_capacity(1 << 20, file),
        chunker::DEFAULT_CHUNK_SIZE as usize,
        max_mib << 20,
    )
    .map_err(|e| format!("{image}: {e}"))?;
    println!("{}", codec_table(&loaded.chunks, &levels, repeat));
    Ok(())
}

fn parse<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{flag}: invalid value {s:?}"))
}

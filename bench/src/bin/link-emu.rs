//! `link-emu`: a TCP proxy that adds delay in each direction and caps the rate (issue 18).
//!
//! ```text
//! link-emu --upstream HOST:PORT [--listen 127.0.0.1:0] [--delay-ms 10] [--rate-mbit 200]
//!          [--stats FILE]
//! ```
//!
//! Prints `listening on ADDR` on stdout once it accepts, then serves until killed. With
//! `--stats`, rewrites FILE every 100 ms with the bytes forwarded so far: `UP DOWN`
//! (client → server, server → client). See [`bench::link`] for the model.

use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bench::link::{Link, LinkOptions};

const USAGE: &str = "\
usage: link-emu --upstream HOST:PORT [--listen ADDR] [--delay-ms MS] [--rate-mbit MBIT]
                [--stats FILE]
  --upstream HOST:PORT  the server to forward to
  --listen ADDR         where to accept (default 127.0.0.1:0, a free port)
  --delay-ms MS         added one-way delay; a round trip adds twice this (default 10)
  --rate-mbit MBIT      cap of each direction in Mbit/s (10^6 bits), 0 for none (default 200)
  --stats FILE          rewrite FILE every 100 ms with `UP DOWN` bytes forwarded";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("link-emu: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).map(String::as_str)
}

fn number(args: &[String], name: &str, default: f64) -> Result<f64, String> {
    value(args, name).map_or(Ok(default), |v| {
        v.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .ok_or_else(|| format!("{name} takes a number ≥ 0, not {v:?}"))
    })
}

fn run(args: &[String]) -> Result<(), String> {
    let upstream = value(args, "--upstream").ok_or("--upstream is required")?;
    let upstream = upstream
        .to_socket_addrs()
        .map_err(|e| format!("--upstream {upstream}: {e}"))?
        .next()
        .ok_or_else(|| format!("--upstream {upstream}: no address"))?;
    let listen = value(args, "--listen").unwrap_or("127.0.0.1:0");
    let delay = Duration::from_secs_f64(number(args, "--delay-ms", 10.0)? / 1e3);
    let mbit = number(args, "--rate-mbit", 200.0)?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rate = (mbit > 0.0).then(|| (mbit * 1e6 / 8.0) as u64);
    let link = Link::start(listen, upstream, LinkOptions { delay, rate })
        .map_err(|e| format!("--listen {listen}: {e}"))?;
    println!("listening on {}", link.local_addr());
    let stats = value(args, "--stats");
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(path) = stats {
            let c = link.counters();
            let line = format!(
                "{} {}\n",
                c.up.load(Ordering::Relaxed),
                c.down.load(Ordering::Relaxed)
            );
            let tmp = format!("{path}.tmp");
            std::fs::write(&tmp, line)
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|e| format!("--stats {path}: {e}"))?;
        }
    }
}

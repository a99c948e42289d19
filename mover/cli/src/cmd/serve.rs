//! `mover serve`: a snapshot as NBD exports until SIGINT/SIGTERM.
//!
//! Once the server listens, each export's URI goes to stdout, one a line (with `--json`, the
//! `serving` event carries them instead), and a line for people to stderr. A clean stop
//! reports what each export's reader did (the `stopped` event with `--json`).

use std::sync::Arc;

use crate::args::ServeArgs;
use crate::repo::{fetch_threads, is_s3, open_repo, Secrets};
use crate::{events, human, Exit};

/// `mover serve`.
pub fn serve(a: &ServeArgs, secrets: &Secrets, quiet: bool) -> anyhow::Result<Exit> {
    let listen = match (&a.socket, &a.listen) {
        (Some(path), _) => mover::Listen::Unix(path.clone()),
        (None, Some(addr)) => mover::Listen::Tcp(addr.clone()),
        (None, None) => unreachable!("clap requires --socket or --listen"),
    };
    let repo = Arc::new(open_repo(&a.repo, secrets)?);
    let request = mover::ServeRequest {
        snapshot: a.snapshot.clone(),
        name: a.name.clone(),
        disk: a.disk.clone(),
        listen,
        overlay: a.overlay.clone(),
        reader: mover::ReaderOptions {
            memory: a.perf.memory,
            fetchers: fetch_threads(&a.perf, &a.repo).clamp(2, 16),
            task_bytes: if is_s3(&a.repo) {
                mover::REMOTE_TASK_BYTES
            } else {
                mover::LOCAL_FETCH_BYTES
            },
            window: None,
            track: false,
        },
    };
    let json = a.json;
    let mut ready = |s: &mover::Serving| announce(s, json, quiet);
    let stats = mover::serve(repo, &request, &mut ready, &mover::sys::interrupted)?;
    let event = mover::report::StoppedEvent::from(&stats[..]);
    if !quiet {
        for e in &event.exports {
            let mut line = format!(
                "mover: disk {}: {} chunks fetched ({} stored), {} cache hits",
                e.name,
                e.chunks_fetched,
                human::bytes(e.bytes_fetched),
                e.cache_hits
            );
            if let (Some(p50), Some(p99)) = (e.demand_fetch_p50_ms, e.demand_fetch_p99_ms) {
                line += &format!(
                    "; {} fetched on demand, p50 {p50:.2} ms, p99 {p99:.2} ms",
                    e.demand_fetches
                );
            }
            if let (Some(p50), Some(p99)) = (e.read_p50_ms, e.read_p99_ms) {
                line += &format!(
                    "; {} reads answered, p50 {p50:.2} ms, p99 {p99:.2} ms",
                    e.reads
                );
            }
            note!("{line}");
        }
        note!("mover: stopped serving");
    }
    events::emit(
        "stopped",
        serde_json::to_value(&event).expect("a serializable event"),
    );
    Ok(Exit::Success)
}

fn announce(s: &mover::Serving, json: bool, quiet: bool) {
    let id = s.snapshot.to_hex();
    if !json {
        for e in &s.exports {
            println!("{}", e.uri);
        }
    }
    if !quiet {
        for e in &s.exports {
            let mode = if e.read_only {
                "read-only"
            } else {
                "writable through the overlay"
            };
            note!(
                "mover: serving disk {} of snapshot {} ({}, {mode}) at {}",
                e.name,
                &id[..12],
                human::bytes(e.size),
                e.uri
            );
        }
        note!("mover: stop with Ctrl-C or SIGTERM");
    }
    let event = mover::report::ServingEvent::from(s);
    events::emit(
        "serving",
        serde_json::to_value(&event).expect("a serializable event"),
    );
}

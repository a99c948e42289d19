//! JSON Lines events for machines (`docs/JSON.md`): `begin`, `progress` (at most once a
//! second), `warning`, `error` and `summary`, each one line
//! `{"type": …, "schema": 1, "time": …, "data": {…}}`.
//!
//! They go to stdout with `--json`, to stderr when the data itself goes to stdout, or to the
//! file given with `--events FILE` (a path, `/dev/fd/N`, or `-` for stdout).

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use anyhow::Context;
use mover::report::{BeginEvent, ErrorEvent, WarningEvent};
use serde_json::{json, Value};

use crate::human::timestamp;

/// Version of the JSON output documented in `docs/JSON.md`.
pub const JSON_SCHEMA: u32 = 1;

enum Sink {
    Stdout,
    Stderr,
    File(File),
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Chooses where events go for this run: `events_file` when given, else stdout with `json`
/// (stderr when `data_on_stdout`), else nowhere.
pub fn init(events_file: Option<&str>, json: bool, data_on_stdout: bool) -> anyhow::Result<()> {
    let sink = match events_file {
        Some("-") if data_on_stdout => {
            anyhow::bail!(
                "--events - would mix events with the data on stdout; give a file or /dev/fd/N"
            )
        }
        Some("-") => Some(Sink::Stdout),
        Some(path) => Some(Sink::File(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the events file {path}"))?,
        )),
        None if json && data_on_stdout => Some(Sink::Stderr),
        None if json => Some(Sink::Stdout),
        None => None,
    };
    *SINK.lock().expect("events lock") = sink;
    Ok(())
}

/// True when events are written somewhere.
pub fn enabled() -> bool {
    SINK.lock().expect("events lock").is_some()
}

/// An event's data as JSON: plain structs with string keys, which always serialize.
fn value<T: serde::Serialize>(data: &T) -> Value {
    serde_json::to_value(data).expect("an event serializes")
}

/// The `begin` event of `command`.
pub fn begin(command: &str) {
    let data = BeginEvent {
        command: command.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
    };
    emit("begin", value(&data));
}

/// A `warning` event (the caller prints the warning for people).
pub fn warning(message: &str) {
    let data = WarningEvent {
        message: message.to_string(),
    };
    emit("warning", value(&data));
}

/// The `error` event that ends a failed run.
pub fn error(command: &str, message: &str, exit_code: u8) {
    let data = ErrorEvent {
        command: command.to_string(),
        message: message.to_string(),
        exit_code,
    };
    emit("error", value(&data));
}

/// Writes one event; a failure to write it is logged, never fatal to the run.
pub fn emit(kind: &str, data: Value) {
    let mut guard = SINK.lock().expect("events lock");
    let Some(sink) = guard.as_mut() else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut line =
        json!({"type": kind, "schema": JSON_SCHEMA, "time": timestamp(now), "data": data})
            .to_string();
    line.push('\n');
    let result = match sink {
        Sink::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes()).and_then(|()| out.flush())
        }
        Sink::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
        Sink::File(f) => f.write_all(line.as_bytes()),
    };
    if let Err(e) = result {
        WRITE_FAILED.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::warn!("cannot write an event: {e}");
    }
}

/// Set once an event could not be written.
static WRITE_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True when an event could not be written (stdout or the events file full or closed).
pub fn write_failed() -> bool {
    WRITE_FAILED.load(std::sync::atomic::Ordering::SeqCst)
}

/// The command running, for events sent from outside its flow.
static COMMAND: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Records the command running (once).
pub fn set_command(command: &'static str) {
    let _ = COMMAND.set(command);
}

/// Called when work blocked on input did not stop within the grace after SIGINT/SIGTERM:
/// says so on stderr and as the run's error event.
pub fn stuck_on_input() {
    let m = "interrupted; nothing was committed";
    let _ = writeln!(std::io::stderr(), "mover: {m}");
    error(COMMAND.get().copied().unwrap_or(""), m, 130);
}

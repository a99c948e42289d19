//! The contract with backup software: hooks around the snapshot point with the run's facts in
//! the environment, and JSON Lines events on stdout, stderr or a file of the caller's choice.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// A hook command that appends `NAME VAR=value…` for the given variables to `log`.
fn logger(log: &std::path::Path, name: &str, vars: &[&str]) -> String {
    let fields: Vec<String> = vars.iter().map(|v| format!("{v}=${{{v}}}")).collect();
    format!(
        "echo \"{name} $MOVER_HOOK {}\" >> '{}'",
        fields.join(" "),
        log.display()
    )
}

fn log_lines(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn hooks_run_in_order_with_the_facts_of_the_run() {
    let env = Env::new();
    let src = env.path("disk.img");
    write_sparse(&src, 2 * MIB as u64, &[(0, &random_bytes(300_000, 5))]);
    let log = env.path("hooks.log");
    let out = env
        .cmd(
            "backup",
            &["--json", "--name", "vm1", "--chunk-size", CHUNK_ARG],
        )
        .arg("--source")
        .arg(&src)
        .arg("--pre-snapshot")
        .arg(logger(&log, "pre", &["MOVER_SOURCE", "MOVER_NAME"]))
        .arg("--post-snapshot")
        .arg(logger(&log, "thaw", &["MOVER_STATUS"]))
        .arg("--post-backup")
        .arg(logger(
            &log,
            "done",
            &[
                "MOVER_STATUS",
                "MOVER_EXIT_CODE",
                "MOVER_SNAPSHOT_ID",
                "MOVER_BYTES_READ",
            ],
        ))
        .run()
        .ok();
    let d = out.json();
    let id = d["data"]["snapshot_id"].as_str().unwrap().to_string();
    let read = d["data"]["bytes_read"].as_u64().unwrap();
    let src_s = src.display().to_string();
    assert_eq!(
        log_lines(&log),
        [
            format!("pre pre-snapshot MOVER_SOURCE={src_s} MOVER_NAME=vm1"),
            "thaw post-snapshot MOVER_STATUS=ok".to_string(),
            format!(
                "done post-backup MOVER_STATUS=success MOVER_EXIT_CODE=0 MOVER_SNAPSHOT_ID={id} MOVER_BYTES_READ={read}"
            ),
        ],
        "{out}"
    );
    // Hook output never reaches stdout: it carries only events.
    out.events();
}

#[test]
fn a_failing_pre_hook_reads_nothing_and_still_thaws() {
    let env = Env::new();
    let src = env.path("disk.img");
    write_file(&src, &random_bytes(100_000, 6));
    let log = env.path("hooks.log");
    let out = env
        .cmd("backup", &["--name", "vm1"])
        .arg("--source")
        .arg(&src)
        .arg("--pre-snapshot")
        .arg(format!("{} ; exit 4", logger(&log, "pre", &[])))
        .arg("--post-snapshot")
        .arg(logger(&log, "thaw", &["MOVER_STATUS"]))
        .arg("--post-backup")
        .arg(logger(&log, "done", &["MOVER_STATUS", "MOVER_EXIT_CODE"]))
        .run();
    out.assert_error(
        1,
        &["pre-snapshot hook", "status 4", "nothing was committed"],
    );
    assert_eq!(env.snapshot_count(), 0, "{out}");
    assert_eq!(
        log_lines(&log),
        [
            "pre pre-snapshot ",
            "thaw post-snapshot MOVER_STATUS=failed",
            "done post-backup MOVER_STATUS=failed MOVER_EXIT_CODE=1",
        ],
        "{out}"
    );
}

#[test]
fn a_hook_past_its_time_limit_is_killed() {
    let env = Env::new();
    let src = env.path("disk.img");
    write_file(&src, &random_bytes(100_000, 7));
    let start = Instant::now();
    let out = env
        .cmd("backup", &["--hook-timeout", "1"])
        .arg("--source")
        .arg(&src)
        .arg("--pre-snapshot")
        .arg("sleep 60 & sleep 60")
        .run();
    out.assert_error(1, &["pre-snapshot hook", "time limit"]);
    assert!(start.elapsed() < Duration::from_secs(20), "{out}");
    assert_eq!(env.snapshot_count(), 0);
}

#[test]
fn a_failing_thaw_or_post_backup_hook_is_a_warning_of_a_committed_backup() {
    let env = Env::new();
    let src = env.path("disk.img");
    let data = random_bytes(200_000, 8);
    write_file(&src, &data);
    let (d, out) = env.backup_args(
        &[
            "--source",
            src.to_str().unwrap(),
            "--post-snapshot",
            "exit 1",
            "--post-backup",
            "exit 2",
        ],
        3,
    );
    let warnings: Vec<&str> = d["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 2, "{out}");
    assert!(warnings[0].contains("post-snapshot hook"), "{out}");
    assert!(warnings[1].contains("post-backup hook"), "{out}");
    assert_eq!(
        out.event_types(),
        ["begin", "warning", "warning", "summary"],
        "{out}"
    );
    let restored = env.path("restored.img");
    env.restore_to(text(&d, "snapshot_id"), &restored);
    assert_same(&read(&restored), &data, "restored");
}

#[test]
fn events_go_to_stderr_or_a_file_when_the_data_uses_stdout() {
    let env = Env::new();
    let data = random_bytes(400_000, 9);
    let d = env.backup_stdin(&data, &[]);
    let id = text(&d, "snapshot_id").to_string();

    // --json alone: events on stderr, the image alone on stdout.
    let out = env
        .cmd("restore", &[id.as_str(), "--to", "-", "--json"])
        .run()
        .ok();
    assert_same(&out.stdout, &data, "stdout holds only the image");
    let types: Vec<String> = out
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(types.first().map(String::as_str), Some("begin"), "{out}");
    assert_eq!(types.last().map(String::as_str), Some("summary"), "{out}");

    // --events FILE: the events in the file, nothing else anywhere.
    let events = env.path("events.jsonl");
    let out = env
        .cmd("restore", &[id.as_str(), "--to", "-", "--events"])
        .arg(&events)
        .run()
        .ok();
    assert_same(&out.stdout, &data, "stdout holds only the image");
    let lines: Vec<Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.first().unwrap()["type"], "begin");
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["data"]["bytes_total"], data.len() as u64);

    // `--events -` with the data on stdout would mix them: a usage error.
    env.cmd("restore", &[id.as_str(), "--to", "-", "--events", "-"])
        .run()
        .assert_error(2, &["--events"]);
}

#[test]
fn a_failed_run_ends_with_an_error_event() {
    let env = Env::new();
    let out = env
        .cmd("backup", &["--json", "--source"])
        .arg(env.path("missing.img"))
        .run();
    out.assert_error(1, &["missing.img"]);
    let events = out.events();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error", "{out}");
    assert_eq!(last["data"]["exit_code"], 1, "{out}");
    let message = last["data"]["message"].as_str().unwrap();
    assert!(out.stderr.contains(message), "{out}");
}

#[test]
fn slow_sources_report_progress_at_a_bounded_rate() {
    let env = Env::new();
    let fifo = env.path("slow.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let feeder = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            for i in 0..6 {
                f.write_all(&random_bytes(200_000, 100 + i)).unwrap();
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let start = Instant::now();
    let out = env
        .cmd("backup", &["--json", "--name", "slow", "--source"])
        .arg(&fifo)
        .run()
        .ok();
    let secs = start.elapsed().as_secs_f64();
    feeder.join().unwrap();
    let progress: Vec<Value> = out
        .events()
        .into_iter()
        .filter(|e| e["type"] == "progress")
        .collect();
    assert!(!progress.is_empty(), "a 3 s run reports progress:\n{out}");
    assert!(
        progress.len() as f64 <= secs + 1.0,
        "at most one progress event a second:\n{out}"
    );
    let done: Vec<u64> = progress
        .iter()
        .map(|e| e["data"]["bytes_done"].as_u64().unwrap())
        .collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{out}");
}

#[test]
fn catalog_out_holds_the_runs_catalog_entry() {
    let env = Env::new();
    let src = env.path("disk.img");
    write_sparse(&src, 3 * MIB as u64, &[(0, &random_bytes(300_000, 4))]);
    let catalog = env.path("entry.json");

    // Beside --json: the same facts as the summary event, as one document.
    let (d, _) = env.backup_args(
        &[
            "--source".as_ref(),
            src.as_os_str(),
            "--catalog-out".as_ref(),
            catalog.as_os_str(),
        ],
        0,
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&catalog).unwrap()).unwrap();
    assert_eq!(doc["type"], "catalog", "{doc}");
    assert_eq!(doc["schema"], 1, "{doc}");
    assert_eq!(doc["data"], d, "the catalog entry is the summary");
    assert!(is_hex_id(text(&doc["data"], "snapshot_id")), "{doc}");
    assert_eq!(num(&doc["data"], "source_bytes"), 3 * MIB as u64, "{doc}");

    // Without --json, and with the archive on stdout: still written, stdout holds the archive.
    let out = mover(["backup", "-q", "--to-archive", "-", "--source"])
        .arg(&src)
        .arg("--catalog-out")
        .arg(&catalog)
        .run()
        .ok();
    assert!(
        out.stdout.len() > 300_000,
        "the archive is on stdout: {out}"
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&catalog).unwrap()).unwrap();
    assert_eq!(num(&doc["data"], "source_bytes"), 3 * MIB as u64, "{doc}");
    assert_eq!(
        doc["data"]["disks"][0]["source_bytes"],
        3 * MIB as u64,
        "{doc}"
    );

    // A catalog that cannot be written: the snapshot is committed, exit 3 with a warning.
    let out = env
        .cmd("backup", &["--source".as_ref(), src.as_os_str()])
        .arg("--catalog-out")
        .arg(env.path("no-such-dir/entry.json"))
        .run();
    assert_eq!(out.exit(), 3, "{out}");
    assert!(
        out.stderr.contains("--catalog-out") && out.stderr.contains("committed"),
        "{out}"
    );
    assert_eq!(env.snapshot_count(), 2, "{out}");
}

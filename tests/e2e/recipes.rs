//! The integration recipes of `scripts/integrations/`, run exactly as the backup software
//! runs them: the Bareos/Bacula bpipe plugin line (split as bpipe splits it, reader's stdout
//! stored, stored bytes fed to the writer's stdin) and the Amanda application script (each
//! command with Amanda's options, the archive on fd 1, messages on fd 3, the index on fd 4,
//! the stored stream on stdin for restore).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

const LIMIT: Duration = Duration::from_secs(120);

fn recipe(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/integrations")
        .join(name)
}

/// A sparse 4 MiB disk with random and text-like data.
fn disk(dir: &Path) -> (PathBuf, Vec<u8>) {
    let src = dir.join("vm1.img");
    let text = b"line of a guest's log file\n".repeat(20_000);
    write_sparse(
        &src,
        4 * MIB as u64,
        &[(0, &random_bytes(300_000, 41)), (2 * MIB as u64, &text)],
    );
    let data = read(&src);
    (src, data)
}

/// What a finished process did; stdout and stderr went to files.
struct Ran {
    what: String,
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Ran {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}`: {}\n--- stderr ---\n{}--- stdout ({} bytes) ---\n{}",
            self.what,
            self.status,
            self.stderr,
            self.stdout.len(),
            String::from_utf8_lossy(&self.stdout[..self.stdout.len().min(2000)])
        )
    }
}

/// Runs `cmd` with `stdin` (a file, or nothing), stdout and stderr into files of `dir`, and a
/// time limit; a hang fails the test.
fn run(mut cmd: Command, what: &str, stdin: Option<&Path>, dir: &Path) -> Ran {
    let out_path = dir.join(format!("{}.stdout", what.replace(['/', ' '], "_")));
    let err_path = dir.join(format!("{}.stderr", what.replace(['/', ' '], "_")));
    cmd.stdin(match stdin {
        Some(p) => Stdio::from(File::open(p).expect("open stdin file")),
        None => Stdio::null(),
    })
    .stdout(File::create(&out_path).expect("stdout file"))
    .stderr(File::create(&err_path).expect("stderr file"));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let (status, hung) = wait_timeout(&mut child, LIMIT);
    let ran = Ran {
        what: what.to_string(),
        status,
        stdout: read(&out_path),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    };
    assert!(!hung, "hung:\n{ran}");
    ran
}

// ---------------------------------------------------------------------------------------
// Bareos / Bacula bpipe

/// The fields of a bpipe plugin string, as bpipe-fd parses them: after `bpipe:`, fields
/// separated by `:` unless escaped as `\:`, each `keyword=value`, backslashes then removed.
fn bpipe_fields(plugin: &str) -> Vec<(String, String)> {
    let rest = plugin
        .strip_prefix("bpipe:")
        .unwrap_or_else(|| panic!("not a bpipe plugin string: {plugin}"));
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut prev = '\0';
    for c in rest.chars() {
        if c == ':' && prev != '\\' {
            fields.push(std::mem::take(&mut field));
        } else {
            field.push(c);
        }
        prev = c;
    }
    fields.push(field);
    fields
        .into_iter()
        .filter(|f| !f.is_empty())
        .map(|f| {
            let (k, v) = f
                .split_once('=')
                .unwrap_or_else(|| panic!("bpipe field without '=': {f}"));
            (k.to_string(), v.replace('\\', ""))
        })
        .collect()
}

/// bpipe's writer codes: `%w` the restore's "where", `%r` its replace flag, `%%` a `%`.
fn apply_rp_codes(writer: &str, where_: &str, replace: char) -> String {
    let mut out = String::new();
    let mut chars = writer.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('%', Some('w')) => {
                out.push_str(where_);
                chars.next();
            }
            ('%', Some('r')) => {
                out.push(replace);
                chars.next();
            }
            ('%', Some('%')) => {
                out.push('%');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// The `Plugin = "…"` line of the FileSet (comments skipped).
fn plugin_line(conf: &str) -> String {
    let lines: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.starts_with("Plugin"))
        .collect();
    assert_eq!(lines.len(), 1, "one Plugin line in the FileSet: {lines:?}");
    let value = lines[0]
        .split_once('=')
        .map(|(_, v)| v.trim())
        .expect("Plugin = \"…\"");
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .expect("the plugin string is quoted")
        .to_string()
}

/// The command with this host's paths in place of the recipe's example paths. bpipe runs it
/// without a shell, so it must not use one: no pipes, redirections, variables or quotes here.
fn localise(cmd: &str, paths: &[(&str, &Path)]) -> String {
    assert!(
        !cmd.contains(['|', '&', ';', '<', '>', '$', '`', '(', ')', '"', '\'']),
        "bpipe runs commands without a shell: {cmd}"
    );
    let mut cmd = cmd.to_string();
    for (example, here) in paths {
        assert!(cmd.contains(example), "{cmd} should mention {example}");
        cmd = cmd.replace(example, &here.display().to_string());
    }
    let rest = cmd
        .strip_prefix("mover ")
        .unwrap_or_else(|| panic!("the command runs mover: {cmd}"));
    format!("{} {rest}", mover_bin().display())
}

fn sh(cmd: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd);
    c
}

#[test]
fn bareos_bpipe_reader_and_writer_round_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (src, data) = disk(dir.path());
    let conf = fs::read_to_string(recipe("bareos-bpipe.conf")).expect("read the recipe");
    let fields = bpipe_fields(&plugin_line(&conf));
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["file", "reader", "writer"], "{fields:?}");
    assert!(fields[0].1.starts_with('/') && fields[0].1[1..].contains('/'));

    // Backup: the file daemon runs the reader and stores its stdout.
    let events = dir.path().join("events.jsonl");
    let reader = localise(
        &fields[1].1,
        &[
            ("/var/lib/images/vm1.img", &src),
            ("/var/log/mover/events.jsonl", &events),
        ],
    );
    let stored = dir.path().join("stored.bin");
    let backup = run(sh(&reader), "reader", None, dir.path());
    assert_eq!(backup.code(), Some(0), "{backup}");
    fs::write(&stored, &backup.stdout).expect("store the stream");
    let summary: Value = fs::read_to_string(&events)
        .expect("events file")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .find(|e| e["type"] == "summary")
        .unwrap_or_else(|| panic!("no summary event:\n{backup}"));
    assert_eq!(summary["data"]["command"], "backup");
    assert_eq!(
        summary["data"]["archive"]["bytes_written"].as_u64(),
        Some(backup.stdout.len() as u64),
        "{summary}"
    );

    // Restore: the file daemon feeds the stored bytes to the writer, %w being "where".
    let where_ = dir.path().join("bareos-restores");
    fs::create_dir(&where_).expect("where");
    let writer = localise(
        &apply_rp_codes(&fields[2].1, &where_.display().to_string(), 'a'),
        &[],
    );
    let restore = run(sh(&writer), "writer", Some(&stored), dir.path());
    assert_eq!(restore.code(), Some(0), "{restore}");
    assert_same(&read(&where_.join("vm1.img")), &data, "restored image");

    // A second restore never overwrites what is there.
    let again = run(sh(&writer), "writer again", Some(&stored), dir.path());
    assert_ne!(again.code(), Some(0), "{again}");
}

#[test]
fn bpipe_parsing_matches_the_plugin() {
    let f = bpipe_fields(r"bpipe:file=/A/b:reader=cat nbd+unix\:///x:writer=w %w");
    assert_eq!(f[1], ("reader".into(), "cat nbd+unix:///x".into()));
    assert_eq!(apply_rp_codes("w %w %r %% %x", "/r", 'a'), "w /r a % %x");
}

// ---------------------------------------------------------------------------------------
// Amanda

/// The options Amanda gives every command of an application for this disk list entry.
fn amanda_args(command: &str, src: &Path) -> Vec<String> {
    let mut a: Vec<String> = [command, "--config", "DailySet1", "--host", "client1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(["--disk".into(), "vm1".into()]);
    a.extend(["--device".into(), src.display().to_string()]);
    // The application-tool's property MOVER-BIN.
    a.extend(["--mover-bin".into(), mover_bin().display().to_string()]);
    a
}

/// Runs the Amanda script as sendbackup does: fd 1 to `stdout`, fd 3 (messages) and fd 4
/// (index) to files, stdin from `stdin`; returns what ran plus fd 3 and fd 4.
fn amanda(args: &[String], stdin: Option<&Path>, cwd: &Path, tag: &str) -> (Ran, String, String) {
    let fd3 = cwd.join(format!("{tag}.fd3"));
    let fd4 = cwd.join(format!("{tag}.fd4"));
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"exec "$@" 3>"$AMANDA_TEST_FD3" 4>"$AMANDA_TEST_FD4""#)
        .arg("sendbackup")
        .arg(recipe("amanda-mover"))
        .args(args)
        .env("AMANDA_TEST_FD3", &fd3)
        .env("AMANDA_TEST_FD4", &fd4)
        .current_dir(cwd);
    let ran = run(cmd, tag, stdin, cwd);
    let m = fs::read_to_string(&fd3).unwrap_or_default();
    let i = fs::read_to_string(&fd4).unwrap_or_default();
    (ran, m, i)
}

#[test]
fn amanda_application_answers_every_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let (src, data) = disk(d);

    // support: capabilities on stdout.
    let (s, _, _) = amanda(&amanda_args("support", &src), None, d, "support");
    assert_eq!(s.code(), Some(0), "{s}");
    let caps = s.stdout_str();
    for line in [
        "CONFIG YES",
        "MAX-LEVEL 0",
        "MESSAGE-LINE YES",
        "CLIENT-ESTIMATE YES",
    ] {
        assert!(
            caps.lines().any(|l| l == line),
            "support lacks {line}:\n{s}"
        );
    }

    // selfcheck: OK lines; an unreadable device is an ERROR and exit 1.
    let mut args = amanda_args("selfcheck", &src);
    args.extend(["--level", "0", "--message", "line"].map(String::from));
    let (s, _, _) = amanda(&args, None, d, "selfcheck");
    assert_eq!(s.code(), Some(0), "{s}");
    assert!(
        !s.stdout.is_empty() && s.stdout_str().lines().all(|l| l.starts_with("OK ")),
        "{s}"
    );
    let (s, _, _) = amanda(
        &amanda_args("selfcheck", &d.join("missing.img")),
        None,
        d,
        "bad",
    );
    assert_eq!(s.code(), Some(1), "{s}");
    assert!(
        s.stdout_str().lines().any(|l| l.starts_with("ERROR ")),
        "{s}"
    );

    // estimate: "LEVEL KIB 1" for level 0 (the data in the disk); level 1 is not offered.
    let mut args = amanda_args("estimate", &src);
    args.extend(["--level", "0", "--level", "1", "--message", "line"].map(String::from));
    let (s, _, _) = amanda(&args, None, d, "estimate");
    assert_eq!(s.code(), Some(0), "{s}");
    let lines: Vec<Vec<i64>> = s
        .stdout_str()
        .lines()
        .map(|l| l.split(' ').map(|n| n.parse().expect("numbers")).collect())
        .collect();
    assert_eq!(lines.len(), 2, "{s}");
    assert_eq!((lines[0][0], lines[0][2]), (0, 1), "{s}");
    let data_kib = (300_000 + 540_000) / 1024;
    assert!(lines[0][1] >= data_kib && lines[0][1] <= 4096, "{s}");
    assert_eq!(lines[1], [1, -1, -1], "{s}");

    // backup: the archive on fd 1, messages ending in the size and `end` on fd 3, the index
    // on fd 4, events appended to the EVENTS property's file.
    let events = d.join("amanda-events.jsonl");
    let mut args = amanda_args("backup", &src);
    args.extend(
        [
            "--level",
            "0",
            "--index",
            "line",
            "--message",
            "line",
            "--record",
        ]
        .map(String::from),
    );
    args.extend(["--events".to_string(), events.display().to_string()]);
    let (b, messages, index) = amanda(&args, None, d, "backup");
    assert_eq!(b.code(), Some(0), "{b}\n--- fd 3 ---\n{messages}");
    let archive = d.join("dump.bin");
    fs::write(&archive, &b.stdout).expect("keep the dump");
    let tail: Vec<&str> = messages.lines().rev().take(2).collect();
    let kib = (b.stdout.len() as u64).div_ceil(1024);
    assert_eq!(
        tail,
        ["sendbackup: end", &format!("sendbackup: size {kib}")],
        "{messages}"
    );
    assert!(
        messages
            .lines()
            .all(|l| l.starts_with("| ") || l.starts_with("sendbackup: ")),
        "only information and the result on fd 3:\n{messages}"
    );
    assert_eq!(index, "/\n");
    let ev = fs::read_to_string(&events).expect("events appended");
    assert!(
        ev.lines().any(|l| l.contains("\"type\":\"summary\"")),
        "{ev}"
    );
    let verify = mover(["archive", "verify"]).arg(&archive).run();
    assert_eq!(verify.exit(), 0, "the dump is a sound archive:\n{verify}");

    // A level Amanda was told is not supported fails with `sendbackup: error`.
    let mut args = amanda_args("backup", &src);
    args.extend(["--level", "1"].map(String::from));
    let (b, messages, _) = amanda(&args, None, d, "backup1");
    assert_eq!(b.code(), Some(1), "{b}");
    assert!(messages.starts_with("sendbackup: error ["), "{messages}");
    assert!(b.stdout.is_empty(), "no data for a refused level");

    // restore: the dump on stdin, the image written in the current directory (amrecover's);
    // never over an existing file.
    let cwd = d.join("recover");
    fs::create_dir(&cwd).expect("recover dir");
    let mut args = amanda_args("restore", &src);
    args.extend(["--level", "0"].map(String::from));
    let (r, _, _) = amanda(&args, Some(&archive), &cwd, "restore");
    assert_eq!(r.code(), Some(0), "{r}");
    assert_same(&read(&cwd.join("vm1.img")), &data, "restored image");
    let (r, _, _) = amanda(&args, Some(&archive), &cwd, "restore-again");
    assert_eq!(r.code(), Some(1), "{r}");
    assert_same(&read(&cwd.join("vm1.img")), &data, "left alone");

    // validate: a sound dump passes; a damaged one fails.
    let (v, _, _) = amanda(
        &amanda_args("validate", &src),
        Some(&archive),
        d,
        "validate",
    );
    assert_eq!(v.code(), Some(0), "{v}");
    let mut damaged = read(&archive);
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0xff;
    let bad = d.join("damaged.bin");
    fs::write(&bad, &damaged).expect("damaged dump");
    let (v, _, _) = amanda(
        &amanda_args("validate", &src),
        Some(&bad),
        d,
        "validate-bad",
    );
    assert_eq!(v.code(), Some(1), "{v}");

    // An unknown command is an error.
    let (u, _, _) = amanda(&amanda_args("frobnicate", &src), None, d, "unknown");
    assert_eq!(u.code(), Some(1), "{u}");
}

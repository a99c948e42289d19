//! Input and output a hostile or careless caller gives: endless attachments and password
//! files, a stdout or stderr that cannot be written. Limits hold on the bytes actually read;
//! output never panics; a committed backup whose summary is lost exits 3.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn an_endless_attachment_is_refused_at_its_limit() {
    let env = Env::new();
    let image = env.path("disk.img");
    write_file(&image, &random_bytes(1 << 20, 11));
    let started = Instant::now();
    let out = env
        .cmd("backup", &["--source"])
        .arg(&image)
        .args(&["--attach", "/dev/zero"])
        .run();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(started.elapsed() < Duration::from_secs(30), "{out}");
    assert!(out.stderr.contains("too large for an attachment"), "{out}");
    assert_eq!(out.stderr.lines().count(), 1, "one line:\n{out}");
    assert!(env.snapshots().is_empty(), "nothing committed");
}

#[test]
fn an_attachment_fifo_that_gives_too_much_is_refused() {
    let env = Env::new();
    let image = env.path("disk.img");
    write_file(&image, &random_bytes(1 << 20, 12));
    let fifo = env.path("big.xml");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // A writer that offers 20 MiB; mover stops reading at 16 MiB and the writer sees EPIPE.
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            let block = vec![7u8; 1 << 20];
            for _ in 0..20 {
                if f.write_all(&block).is_err() {
                    break;
                }
            }
        })
    };
    let out = env
        .cmd("backup", &["--source"])
        .arg(&image)
        .arg("--attach")
        .arg(&fifo)
        .run();
    writer.join().unwrap();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("too large for an attachment"), "{out}");
    assert!(env.snapshots().is_empty(), "nothing committed");
}

#[test]
fn an_endless_password_file_is_refused() {
    let env = Env::new();
    let out = env
        .cmd("snapshots", &["--password-file", "/dev/zero"])
        .run();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("larger than 64 KiB"), "{out}");
}

/// `mover backup` with stdout or stderr on `/dev/full`.
fn backup_with(
    env: &Env,
    image: &std::path::Path,
    json: bool,
    stdout_full: bool,
) -> (Option<i32>, String) {
    let full = || Stdio::from(File::options().write(true).open("/dev/full").unwrap());
    let mut cmd = Command::new(mover_bin());
    cmd.args(["backup", "-r"])
        .arg(&env.repo)
        .arg("--source")
        .arg(image);
    if json {
        cmd.arg("--json");
    }
    cmd.env_remove("MOVER_REPO").stdin(Stdio::null());
    let out = if stdout_full {
        cmd.stdout(full()).stderr(Stdio::piped()).output().unwrap()
    } else {
        cmd.stdout(Stdio::piped()).stderr(full()).output().unwrap()
    };
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_committed_backup_whose_summary_cannot_be_written_exits_3() {
    let env = Env::new();
    let image = env.path("disk.img");
    write_file(&image, &random_bytes(1 << 20, 13));
    for (n, json) in [false, true].into_iter().enumerate() {
        let (code, err) = backup_with(&env, &image, json, true);
        assert_eq!(code, Some(3), "json {json}: {err}");
        assert!(!err.contains("panicked"), "json {json}: {err}");
        assert!(
            err.contains("is committed, but its summary cannot be written"),
            "json {json}: {err}"
        );
        assert_eq!(
            env.snapshots().len(),
            n + 1,
            "json {json}: the snapshot is committed"
        );
    }
}

#[test]
fn an_unwritable_stderr_never_panics() {
    let env = Env::new();
    let image = env.path("disk.img");
    write_file(&image, &random_bytes(1 << 20, 14));
    let (code, _) = backup_with(&env, &image, false, false);
    assert_eq!(
        code,
        Some(0),
        "stderr on /dev/full: the backup still succeeds"
    );
    assert_eq!(env.snapshots().len(), 1);
    // A failing command with stderr on /dev/full: its exit code still tells, no panic (101).
    let missing = env.path("missing.img");
    let (code, _) = backup_with(&env, &missing, false, false);
    assert_eq!(code, Some(1));
}

#[test]
fn quiet_means_errors_only() {
    let env = Env::new();
    let image = env.path("disk.img");
    for seed in [15, 16] {
        write_file(&image, &random_bytes(1 << 20, seed));
        env.backup(&image, &[]);
    }
    let quiet = |args: &[&str]| mover(["-q"]).args(args).arg("-r").arg(&env.repo);
    for args in [
        vec!["check"],
        vec!["verify"],
        vec!["forget", "--keep-last", "1"],
        vec!["gc", "--grace", "0s"],
        vec!["repair", "index"],
        vec!["repair", "snapshots"],
        vec!["doctor"],
    ] {
        let out = quiet(&args).run();
        assert_eq!(out.code, Some(0), "{out}");
        assert!(
            out.stdout.is_empty(),
            "-q {args:?} printed on stdout:\n{out}"
        );
        assert!(
            out.stderr.is_empty(),
            "-q {args:?} printed on stderr:\n{out}"
        );
    }
    // Errors still show: a lost pack is reported by check and verify under -q.
    for p in env.packs() {
        std::fs::remove_file(p).unwrap();
    }
    let out = quiet(&["check"]).run();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ERROR"),
        "{out}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("no problems"),
        "{out}"
    );
    let out = quiet(&["verify"]).run();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("DAMAGED"),
        "{out}"
    );
}

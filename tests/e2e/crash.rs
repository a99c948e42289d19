//! Crash consistency: a backup killed with SIGKILL at any moment, or interrupted with SIGINT,
//! leaves a repository that verifies, whose every snapshot restores bit-exact, and that takes
//! later backups.

use std::collections::HashMap;
use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

const IMAGE: usize = 24 * MIB;

struct Crash {
    env: Env,
    /// Snapshot name -> seed of its image.
    seeds: HashMap<String, u64>,
    /// Snapshot ids already restored and compared.
    checked: Vec<String>,
}

impl Crash {
    fn image(&self, seed: u64) -> std::path::PathBuf {
        let p = self.env.path("src.img");
        write_file(&p, &random_bytes(IMAGE, seed));
        p
    }

    /// Starts a backup of a fresh image named `name`.
    fn start(&mut self, name: &str, seed: u64) -> std::process::Child {
        self.seeds.insert(name.to_string(), seed);
        let src = self.image(seed);
        let (child, _) = self
            .env
            .cmd(
                "backup",
                &["--chunk-size", CHUNK_ARG, "--name", name, "--source"],
            )
            .arg(&src)
            .spawn();
        child
    }

    /// The repository verifies and every snapshot restores to its source.
    fn check(&mut self, what: &str) {
        let out = self.env.cmd("verify", &[] as &[&str]).run();
        assert_eq!(out.exit(), 0, "{what}: verify after the crash:\n{out}");
        for s in self.env.snapshots() {
            let id = text(&s, "id").to_string();
            if self.checked.contains(&id) {
                continue;
            }
            let name = text(&s, "name");
            let seed = self.seeds[name];
            let dest = self.env.path("restored.img");
            self.env.restore_to(&id, &dest);
            assert_same(
                &read(&dest),
                &random_bytes(IMAGE, seed),
                &format!("{what}: {name}"),
            );
            std::fs::remove_file(&dest).unwrap();
            self.checked.push(id);
        }
    }
}

#[test]
fn killed_and_interrupted_backups_leave_a_consistent_repository() {
    let seed = time_seed();
    eprintln!("crash test seed: {seed}");
    let mut rng = random_bytes(64, seed).into_iter();
    let mut frac = move || f64::from(rng.next().unwrap_or(128)) / 256.0;
    let mut c = Crash {
        env: Env::new(),
        seeds: HashMap::new(),
        checked: Vec::new(),
    };

    // One complete run, to learn how long a backup takes here.
    let mut child = c.start("complete", 1);
    let started = Instant::now();
    let (status, hung) = wait_timeout(&mut child, DEFAULT_TIMEOUT);
    let typical = started.elapsed();
    assert!(
        !hung && status.success(),
        "reference backup failed: {status}\n{}",
        stderr_of(&mut child)
    );
    c.check("reference backup");
    eprintln!("a {} MiB backup takes {typical:?}", IMAGE / MIB);

    // SIGKILL at delays spread over the run time.
    let kills = 6;
    for k in 0..kills {
        let delay = typical.mul_f64((k as f64 + frac()) / kills as f64);
        let name = format!("killed-{k}");
        let mut child = c.start(&name, 100 + k);
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        eprintln!("{name}: killed after {delay:?}: {status}");
        c.check(&format!("SIGKILL after {delay:?}"));
    }

    // SIGINT while running: exit 130 and nothing committed (or, if it had already finished,
    // success and a snapshot).
    let before = c.env.snapshots().len();
    let delay = typical.mul_f64(0.2 + 0.4 * frac());
    let mut child = c.start("interrupted", 200);
    std::thread::sleep(delay);
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success() || child.try_wait().unwrap().is_some());
    let (status, hung) = wait_timeout(&mut child, Duration::from_secs(30));
    let err = stderr_of(&mut child);
    assert!(!hung, "backup hung after SIGINT:\n{err}");
    let after = c.env.snapshots().len();
    match status.code() {
        Some(130) => {
            assert_eq!(after, before, "an interrupted backup committed a snapshot");
            assert!(err.contains("interrupted"), "{err}");
            assert!(err.contains("nothing was committed"), "{err}");
        }
        Some(0) => {
            // Tolerated here: the backup may have been past its last check (see the next test).
            eprintln!("note: SIGINT after {delay:?} did not stop the backup");
            assert_eq!(after, before + 1);
        }
        _ => panic!("SIGINT after {delay:?}: expected exit 130, got {status}:\n{err}"),
    }
    c.check("SIGINT");

    // Later backups work (a new image, and one that dedups against what survived).
    for (name, seed) in [("after", 300), ("complete-again", 1)] {
        let mut child = c.start(name, seed);
        let (status, hung) = wait_timeout(&mut child, DEFAULT_TIMEOUT);
        assert!(
            !hung && status.success(),
            "{name}: {status}\n{}",
            stderr_of(&mut child)
        );
    }
    c.check("backups after the crashes");
    assert!(c.checked.len() >= 3, "{:?}", c.checked);
}

/// SIGINT is sent at the moment the backup's pack is being written (its temporary file has
/// appeared in `packs/`): the data is all read, nothing is committed yet, so the backup must
/// stop with 130 and commit nothing.
#[test]
fn sigint_while_the_pack_is_written_commits_nothing() {
    let env = Env::new();
    let src = env.path("src.img");
    let seed = time_seed();
    for attempt in 0..4u64 {
        // A fresh image each time: a pack that already landed would make the next one dedup.
        write_file(&src, &random_bytes(IMAGE, seed.wrapping_add(attempt)));
        let (mut child, line) = env
            .cmd("backup", &["--chunk-size", CHUNK_ARG, "--source"])
            .arg(&src)
            .spawn();
        let prefix = format!(".tmp-{}-", child.id());
        // A shell that is already running sends the signal on one line of input: a pipe's
        // wake-up, not a fork and exec, between seeing the pack and signalling. Without the
        // line (its input closed) it sends nothing.
        let mut killer = Command::new("sh")
            .arg("-c")
            .arg(format!("read _ && kill -INT {}", child.id()))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run sh");
        let mut trigger = killer.stdin.take();
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            let writing = files_under(&env.repo.join("packs"))
                .iter()
                .any(|p| name_of(p).starts_with(&prefix));
            if writing {
                if let Some(mut t) = trigger.take() {
                    let _ = std::io::Write::write_all(&mut t, b"\n");
                }
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        drop(trigger);
        let signalled = killer.wait().expect("wait for sh").success();
        let (status, hung) = wait_timeout(&mut child, Duration::from_secs(30));
        let err = stderr_of(&mut child);
        assert!(!hung, "`{line}` hung after SIGINT:\n{err}");
        if !signalled {
            eprintln!("attempt {attempt}: the pack write was not caught; trying again");
            continue;
        }
        let snaps = env.snapshots();
        assert_eq!(
            status.code(),
            Some(130),
            "`{line}`: SIGINT while its pack was being written was ignored: {status}, {} \
             snapshot(s) committed\n{err}",
            snaps.len()
        );
        assert!(
            snaps.is_empty(),
            "an interrupted backup committed a snapshot:\n{err}"
        );
        env.cmd("verify", &[] as &[&str]).run().ok();
        return;
    }
    eprintln!("!!!!!!!! could not catch a pack being written in 4 attempts; not checked !!!!!!!!");
}

/// An image that shrinks while it is backed up (read through a memory map, so the lost pages
/// raise SIGBUS): either the backup finished first and its snapshot restores to the original
/// bytes, or it fails with one line and exit 1 and commits nothing. Never a crash, never a
/// snapshot of the wrong bytes.
#[test]
fn image_truncated_during_backup_fails_cleanly() {
    let env = Env::new();
    let data = random_bytes(IMAGE, 77);
    for delay_ms in [0u64, 3, 10, 40] {
        let src = env.path("shrinking.img");
        write_file(&src, &data);
        let (mut child, line) = env
            .cmd(
                "backup",
                &["--chunk-size", CHUNK_ARG, "--threads", "1", "--source"],
            )
            .arg(&src)
            .spawn();
        std::thread::sleep(Duration::from_millis(delay_ms));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&src)
            .unwrap()
            .set_len(4096)
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let (status, timed_out) = wait_timeout(&mut child, Duration::from_secs(60));
        assert!(!timed_out, "{line} hung");
        match status.code() {
            Some(0) => {
                let snaps = env.snapshots();
                let id = text(snaps.last().unwrap(), "id").to_string();
                let dest = env.path("restored.img");
                let _ = std::fs::remove_file(&dest);
                env.restore_to(&id, &dest);
                // Truncated before mover looked at it: a backup of the 4 KiB file is right too.
                let got = read(&dest);
                if got.len() == 4096 {
                    assert_same(&got, &data[..4096], "backup of the already truncated image");
                } else {
                    assert_same(&got, &data, "backup that finished before the truncation");
                }
            }
            Some(1) => {
                let lines: Vec<&str> = err.lines().collect();
                assert_eq!(lines.len(), 1, "one line on stderr:\n{err}");
                assert!(lines[0].starts_with("mover: "), "{err}");
                assert!(err.contains("nothing was committed"), "{err}");
            }
            other => panic!("{line}: exit {other:?} (status {status}), stderr:\n{err}"),
        }
    }
    let out = env.cmd("verify", &[] as &[&str]).run();
    assert_eq!(out.exit(), 0, "{out}");
}

//! The S3 target against a three-node Garage cluster (replication factor 3, so a write or a
//! read needs two nodes) that `scripts/s3-servers.sh` starts on loopback: a node killed with
//! SIGKILL in the middle of a backup, two nodes down at once, and four movers backing up at
//! once while `forget` and `gc` run beside them.
//!
//! mover talks to node 1; the tests kill and restart nodes 2 and 3 by the PIDs the script
//! writes to `MOVER_TEST_CLUSTER_STATE` and restart them with its `start-node` command. The
//! tests take turns (one lock), since each one changes the cluster every other one uses.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::s3::{server, Server};
use crate::util::*;

static CLUSTER: Mutex<()> = Mutex::new(());

/// The cluster's state directory, with its nodes' PIDs and configs.
struct Cluster {
    state: PathBuf,
}

impl Cluster {
    fn pid(&self, n: usize) -> i32 {
        let text = std::fs::read_to_string(self.state.join(format!("node{n}.pid")))
            .expect("node pid file");
        text.trim().parse().expect("a pid")
    }

    /// SIGKILL to node `n`, as a crash or a pulled plug would stop it.
    fn kill(&self, n: usize) {
        assert!(self.is_up(n), "node {n} is down already");
        let pid = self.pid(n);
        let ok = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -9 node {n} (pid {pid})");
        let gone = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}/stat")).exists() && Instant::now() < gone {
            // A zombie until the shell that started it reaps it (it was disowned: init does).
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.split_whitespace().nth(2) == Some("Z") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn is_up(&self, n: usize) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid(n)));
        stat.is_ok_and(|s| s.split_whitespace().nth(2) != Some("Z"))
    }

    /// Restarts node `n` through the script, which waits until node 1 sees it healthy.
    fn start(&self, n: usize) {
        if let Err(e) = self.try_start(n) {
            panic!("{e}");
        }
    }

    fn try_start(&self, n: usize) -> Result<(), String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/s3-servers.sh");
        let state = self
            .state
            .parent()
            .expect("the cluster dir is in the state dir");
        let out = Command::new("bash")
            .arg(script)
            .arg("start-node")
            .arg(state)
            .arg(n.to_string())
            .output()
            .map_err(|e| format!("run s3-servers.sh start-node: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "start-node {n}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }
}

/// Restarts whatever node a test left down, also when it panicked.
struct Restart<'a>(&'a Cluster);

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        for n in 1..=3 {
            if !self.0.is_up(n) {
                // No panic in a drop that may run while unwinding: say it and go on.
                if let Err(e) = self.0.try_start(n) {
                    eprintln!("could not restart cluster node {n}: {e}");
                }
            }
        }
    }
}

/// The cluster and its server entry, or `None` (a loud skip outside CI) when it is not running.
fn cluster() -> Option<(Cluster, Server)> {
    let server = server("CLUSTER")?;
    let state = std::env::var("MOVER_TEST_CLUSTER_STATE").expect("MOVER_TEST_CLUSTER_STATE");
    Some((
        Cluster {
            state: state.into(),
        },
        server,
    ))
}

/// A repository under a fresh prefix of the cluster's bucket.
struct Repo {
    server: Server,
    url: String,
    dir: TempDir,
}

impl Repo {
    fn new(server: &Server) -> Repo {
        let repo = Repo {
            url: format!("s3://{}/{}", server.bucket, unique_name("cluster")),
            server: server.clone(),
            dir: tempfile::tempdir().unwrap(),
        };
        repo.cmd("init", &[]).run().ok();
        repo
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self, sub: &str, args: &[&str]) -> Mover {
        mover([sub, "-r", &self.url, "--s3-endpoint", &self.server.endpoint])
            .args(&["--s3-region", &self.server.region, "--s3-allow-http"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.server.access)
            .env("AWS_SECRET_ACCESS_KEY", &self.server.secret)
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .timeout(Duration::from_secs(180))
    }

    fn backup(&self, src: &Path, name: &str) -> Mover {
        self.cmd(
            "backup",
            &["--json", "--chunk-size", CHUNK_ARG, "--name", name],
        )
        .arg("--source")
        .arg(src)
    }

    fn snapshots(&self) -> Vec<Value> {
        let out = self.cmd("snapshots", &["--json"]).run().ok();
        out.json().as_array().cloned().unwrap_or_default()
    }

    fn restores(&self, id: &str, want: &[u8], what: &str) {
        let out = self.cmd("restore", &[id, "--to", "-"]).run().ok();
        assert_same(&out.stdout, want, what);
    }
}

#[test]
fn a_node_killed_mid_backup_loses_nothing() {
    let Some((cluster, server)) = cluster() else {
        return;
    };
    let _turn = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let _restart = Restart(&cluster);
    let repo = Repo::new(&server);
    let data = random_bytes(48 * MIB, 5);

    // The disk comes through stdin, so the backup cannot finish before node 3 is killed
    // however fast it runs: half of it goes in (packs are sent), node 3 is killed, then the
    // rest follows.
    let (mut child, line) = repo.backup(Path::new("-"), "a").stdin(&[]).spawn();
    let mut input = child.stdin.take().expect("stdin is piped");
    let half = data.len() / 2;
    input
        .write_all(&data[..half])
        .expect("first half to the backup");
    std::thread::sleep(Duration::from_millis(500));
    let running = child.try_wait().expect("wait").is_none();
    cluster.kill(3);
    input
        .write_all(&data[half..])
        .expect("second half to the backup");
    drop(input);
    let (status, timed_out) = wait_timeout(&mut child, Duration::from_secs(180));
    let err = stderr_of(&mut child);
    assert!(!timed_out && status.success(), "{line}: {status}\n{err}");
    assert!(
        running,
        "the backup ended before node 3 was killed, with half its input unread"
    );

    // Node 3 is still down: everything is on the other two.
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let id = snaps[0]["id"].as_str().expect("snapshot id").to_string();
    repo.restores(&id, &data, "restore with node 3 down");

    cluster.start(3);
    let out = repo.cmd("verify", &["--json"]).run();
    assert_eq!(out.exit(), 0, "verify after node 3 rejoined:\n{out}");
    repo.restores(&id, &data, "restore after node 3 rejoined");
}

#[test]
fn two_nodes_down_fails_cleanly_and_a_later_backup_succeeds() {
    let Some((cluster, server)) = cluster() else {
        return;
    };
    let _turn = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let _restart = Restart(&cluster);
    let repo = Repo::new(&server);
    let src = repo.path("a.img");
    let data = random_bytes(4 * MIB, 6);
    write_file(&src, &data);

    cluster.kill(2);
    cluster.kill(3);
    let t = Instant::now();
    let out = repo
        .backup(&src, "a")
        .args(&["--s3-retry-timeout", "5"])
        .run();
    assert_eq!(out.exit(), 1, "no quorum: the backup fails\n{out}");
    assert!(!out.stderr.is_empty(), "it says why:\n{out}");
    eprintln!("no quorum: failed in {:?}", t.elapsed());
    cluster.start(2);
    cluster.start(3);
    assert!(repo.snapshots().is_empty(), "nothing committed");

    let out = repo.backup(&src, "a").run().ok();
    let summary = check_backup_summary(&out.json(), &out);
    repo.restores(text(&summary, "snapshot_id"), &data, "the later backup");
    let out = repo.cmd("check", &[]).run();
    assert_eq!(out.exit(), 0, "check after the failed run:\n{out}");
}

#[test]
fn four_movers_with_forget_and_gc_beside_them() {
    let Some((_cluster, server)) = cluster() else {
        return;
    };
    let _turn = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let repo = Repo::new(&server);
    // Four disks that share half their data, each backed up twice: the first generation is
    // forgotten and collected while the second is written.
    let shared = random_bytes(2 * MIB, 70);
    let disk = |i: u64, generation: u64| {
        let mut d = shared.clone();
        d.extend(random_bytes(2 * MIB, 100 + 10 * i + generation));
        d
    };
    let mut first = Vec::new();
    for i in 0..4u64 {
        let src = repo.path(&format!("d{i}-0.img"));
        write_file(&src, &disk(i, 0));
        let out = repo.backup(&src, &format!("d{i}")).run().ok();
        first.push(text(&check_backup_summary(&out.json(), &out), "snapshot_id").to_string());
    }
    let mut movers = Vec::new();
    for i in 0..4u64 {
        let src = repo.path(&format!("d{i}-1.img"));
        write_file(&src, &disk(i, 1));
        movers.push(repo.backup(&src, &format!("d{i}")).spawn());
    }
    let forget: Vec<&str> = first.iter().map(String::as_str).collect();
    let out = repo.cmd("forget", &forget).run();
    assert_eq!(out.exit(), 0, "forget beside the backups:\n{out}");
    for _ in 0..2 {
        let out = repo.cmd("gc", &["--grace", "0s"]).run();
        assert_eq!(out.exit(), 0, "gc beside the backups:\n{out}");
    }
    for (child, line) in &mut movers {
        let (status, timed_out) = wait_timeout(child, Duration::from_secs(180));
        assert!(!timed_out && status.success(), "{line}: {status}");
    }
    // gc again after they finished: it must not take what they stored.
    let out = repo.cmd("gc", &["--grace", "0s"]).run();
    assert_eq!(out.exit(), 0, "gc after:\n{out}");
    let out = repo.cmd("check", &[]).run();
    assert_eq!(out.exit(), 0, "check:\n{out}");
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 4, "the second generation: {snaps:?}");
    for s in &snaps {
        let name = s["name"].as_str().expect("name");
        let i: u64 = name[1..].parse().expect("d<i>");
        let id = s["id"].as_str().expect("id");
        repo.restores(id, &disk(i, 1), &format!("{name} after forget and gc"));
    }
}

//! `mover serve` (issue 15): snapshots as NBD exports, checked with real clients
//! (`qemu-img`, `nbdinfo`, `nbdcopy`, `qemu-io` from Debian's `qemu-utils` and `libnbd-bin`)
//! and with a raw-socket client that sends malformed requests.

// NBD's wire format is network byte order (big-endian) throughout.
#![allow(clippy::big_endian_bytes)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

const C: u64 = CHUNK as u64;

fn tools(names: &[&str]) -> bool {
    names.iter().all(|n| have_tool("serve", n))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// Runs a tool; returns (success, stdout, stderr).
fn run_tool(program: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a tool that must succeed; returns its stdout.
fn tool(program: &str, args: &[&str]) -> String {
    let (ok, out, err) = run_tool(program, args);
    assert!(ok, "{program} {args:?} failed:\n{out}\n{err}");
    out
}

/// A running `mover serve --json`, stopped (SIGTERM) when dropped.
struct Served {
    child: Option<Child>,
    /// The `serving` event's data.
    serving: Value,
    /// The lines of stdout after the `serving` event.
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Served {
    /// `mover serve -r REPO --json ARGS…`; waits for the `serving` event.
    fn start(env: &Env, tag: &str, args: &[&str]) -> Served {
        Served::start_in(&env.repo, &env.path(&format!("{tag}.log")), args, &[])
    }

    /// `mover serve` of the repository `repo` (a directory or an `s3://` URL) with
    /// environment variables `vars`.
    fn start_in(
        repo: impl AsRef<OsStr>,
        log: &Path,
        args: &[&str],
        vars: &[(&str, &str)],
    ) -> Served {
        let log = log.to_path_buf();
        let mut child = Command::new(mover_bin())
            .arg("serve")
            .arg("-r")
            .arg(repo)
            .arg("--json")
            .args(args)
            .env_remove("MOVER_REPO")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start mover serve");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout piped");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mover serve {args:?} announced nothing:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
            let v: Value = serde_json::from_str(&line).expect("a JSON event");
            if v["type"] == "serving" {
                return Served {
                    child: Some(child),
                    serving: v["data"].clone(),
                    lines: rx,
                    log,
                };
            }
        }
    }

    /// The URI of export `name` (or the first).
    fn uri(&self, name: Option<&str>) -> String {
        let exports = self.serving["exports"].as_array().expect("exports");
        let e = match name {
            Some(n) => exports.iter().find(|e| e["name"] == n).expect("export"),
            None => &exports[0],
        };
        e["uri"].as_str().expect("uri").to_string()
    }

    /// SIGTERM; returns the exit code.
    fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let (status, killed) = wait_timeout(&mut child, Duration::from_secs(20));
        assert!(!killed, "mover serve ignored SIGTERM:\n{}", self.log_text());
        status.code()
    }

    /// The `stopped` event's data, once the server has stopped.
    fn stopped(&self) -> Value {
        let lines: Vec<String> = self.lines.iter().collect();
        let events: Vec<Value> = (lines.iter())
            .map(|l| serde_json::from_str(l).expect("a JSON event"))
            .collect();
        let stopped = events.iter().find(|v| v["type"] == "stopped");
        stopped.unwrap_or_else(|| panic!("no stopped event in {lines:?}:\n{}", self.log_text()))
            ["data"]
            .clone()
    }

    /// SIGKILL, as a crash.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An 8 MiB image: data islands, holes, and a chunk of written zeros (a zero chunk that is
/// not a hole in the file).
fn image(env: &Env, name: &str, seed: u64) -> (PathBuf, Vec<u8>) {
    let path = env.path(name);
    let a = random_bytes(300_000, seed);
    let b = random_bytes(70_000, seed + 1);
    let zeros = vec![0u8; 2 * CHUNK];
    write_sparse(
        &path,
        8 * MIB as u64,
        &[(0, &a), (C * 20 + 17, &b), (C * 40, &zeros), (C * 100, &a)],
    );
    let data = read(&path);
    (path, data)
}

/// The runs of data and zero chunks of `data`, as `(offset, len, zero)`.
fn expected_map(data: &[u8]) -> Vec<(u64, u64, bool)> {
    let mut runs: Vec<(u64, u64, bool)> = Vec::new();
    for (i, c) in data.chunks(CHUNK).enumerate() {
        let zero = c.iter().all(|&b| b == 0);
        match runs.last_mut() {
            Some(r) if r.2 == zero => r.1 += c.len() as u64,
            _ => runs.push((i as u64 * C, c.len() as u64, zero)),
        }
    }
    runs
}

/// `nbdinfo --map` as `(offset, len, zero)` runs.
fn nbd_map(uri: &str) -> Vec<(u64, u64, bool)> {
    tool("nbdinfo", &["--map", uri])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().expect("offset"),
                f[1].parse().expect("length"),
                f[2] == "3",
            )
        })
        .collect()
}

#[test]
fn serve_is_bit_exact_maps_holes_and_stops_on_sigterm() {
    if !tools(&["qemu-img", "nbdinfo"]) {
        return;
    }
    let env = Env::new();
    let (img, data) = image(&env, "disk.img", 11);
    env.backup(&img, &[]);
    let sock = env.path("s.sock");
    let mut srv = Served::start(&env, "serve", &["latest", "--socket", s(&sock)]);
    let uri = srv.uri(None);
    // The export is named by the disk: for one disk, the source as given.
    assert_eq!(
        uri,
        format!("nbd+unix:///{}?socket={}", img.display(), sock.display())
    );
    assert_eq!(srv.serving["exports"][0]["size"], data.len() as u64);
    assert_eq!(srv.serving["exports"][0]["read_only"], true);
    let out = tool(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", s(&img), &uri],
    );
    assert!(out.contains("identical"), "{out}");
    assert_eq!(nbd_map(&uri), expected_map(&data));
    // The empty export name is the only disk.
    let bare = format!("nbd+unix:///?socket={}", sock.display());
    let converted = env.path("converted.raw");
    tool("qemu-img", &["convert", "-O", "raw", &bare, s(&converted)]);
    assert_same(&read(&converted), &data, "qemu-img convert of the export");
    assert_eq!(srv.stop(), Some(0), "{}", srv.log_text());
    assert!(!sock.exists(), "the socket is removed on exit");
    // What the reader did: every distinct data chunk fetched at least once, some by the
    // requests themselves, with their durations.
    let distinct: std::collections::HashSet<blake3::Hash> = (data.chunks(CHUNK))
        .filter(|c| c.iter().any(|&b| b != 0))
        .map(blake3::hash)
        .collect();
    let stopped = srv.stopped();
    let e = &stopped["exports"][0];
    assert_eq!(e["name"], srv.serving["exports"][0]["name"], "{stopped}");
    let fetched = e["chunks_fetched"].as_u64().expect("chunks_fetched");
    assert!(fetched >= distinct.len() as u64, "{stopped}");
    assert!(e["bytes_fetched"].as_u64() > Some(0), "{stopped}");
    let demand = e["demand_fetches"].as_u64().expect("demand_fetches");
    assert!((1..=fetched).contains(&demand), "{stopped}");
    let (p50, p99) = (
        e["demand_fetch_p50_ms"].as_f64(),
        e["demand_fetch_p99_ms"].as_f64(),
    );
    assert!(p50 > Some(0.0) && p50 <= p99, "{stopped}");
    // Every read request: qemu-img compare and convert each read the whole export.
    let reads = e["reads"].as_u64().expect("reads");
    assert!(reads >= 2, "{stopped}");
    let (r50, r99) = (e["read_p50_ms"].as_f64(), e["read_p99_ms"].as_f64());
    assert!(r50 > Some(0.0) && r50 <= r99, "{stopped}");
    // The same figures for people, on stderr.
    let log = srv.log_text();
    assert!(
        log.contains(&format!("{fetched} chunks fetched"))
            && log.contains(&format!("{demand} fetched on demand, p50 "))
            && log.contains(&format!("{reads} reads answered, p50 ")),
        "{log}"
    );
}

#[test]
fn serve_prints_the_uri_and_serves_over_tcp_to_several_connections() {
    if !tools(&["nbdcopy"]) {
        return;
    }
    let env = Env::new();
    let (img, data) = image(&env, "vm.img", 12);
    env.backup(&img, &[]);
    // Plain mode: the URI on stdout.
    let mut child = Command::new(mover_bin())
        .args([
            "serve",
            "-r",
            s(&env.repo),
            "latest",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("a line");
    let uri = line.trim().to_string();
    assert!(
        uri.starts_with("nbd://127.0.0.1:") && uri.ends_with("/vm.img"),
        "{uri}"
    );
    let out = env.path("copy.raw");
    tool(
        "nbdcopy",
        &["--connections=4", "--requests=8", &uri, s(&out)],
    );
    assert_same(&read(&out), &data, "nbdcopy with 4 connections");
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let (status, killed) = wait_timeout(&mut child, Duration::from_secs(20));
    assert!(!killed && status.code() == Some(0), "{status:?}");
}

#[test]
fn serve_incremental_and_multi_disk_snapshots() {
    if !tools(&["qemu-img", "nbdinfo"]) {
        return;
    }
    let env = Env::new();
    let (a, mut da) = image(&env, "a.img", 21);
    let (b, db) = image(&env, "b.img", 22);
    env.backup(
        img_arg("sda", &a),
        &["--source", &img_arg("sdb", &b), "--name", "vm"],
    );
    // An incremental of one disk serves as the full disk it is.
    let patch = random_bytes(10_000, 23);
    da[C as usize * 60..C as usize * 60 + patch.len()].copy_from_slice(&patch);
    write_file(&a, &da);
    env.backup(
        img_arg("sda", &a),
        &[
            "--source",
            &img_arg("sdb", &b),
            "--name",
            "vm",
            "--parent",
            "latest",
        ],
    );
    let sock = env.path("m.sock");
    let srv = Served::start(&env, "multi", &["latest", "--socket", s(&sock)]);
    let list = tool(
        "nbdinfo",
        &["--list", &format!("nbd+unix:///?socket={}", sock.display())],
    );
    assert!(list.contains("sda") && list.contains("sdb"), "{list}");
    for (name, want) in [("sda", &da), ("sdb", &db)] {
        let out = env.path(&format!("{name}.raw"));
        tool(
            "qemu-img",
            &["convert", "-O", "raw", &srv.uri(Some(name)), s(&out)],
        );
        assert_same(&read(&out), want, name);
    }
    drop(srv);
    let sock2 = env.path("one.sock");
    let srv = Served::start(
        &env,
        "one",
        &["latest", "--disk", "sdb", "--socket", s(&sock2)],
    );
    assert_eq!(srv.serving["exports"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        srv.uri(None),
        format!("nbd+unix:///sdb?socket={}", sock2.display())
    );
}

fn img_arg(name: &str, p: &Path) -> String {
    format!("{name}={}", p.display())
}

#[test]
fn serve_refuses_bad_input_with_one_line() {
    let env = Env::new();
    let (img, _) = image(&env, "d.img", 31);
    env.backup(&img, &[]);
    let sock = env.path("x.sock");
    let out = env
        .cmd("serve", &["0123456789ab", "--socket", s(&sock)])
        .run();
    out.assert_error(1, &["0123456789ab"]);
    let out = env
        .cmd("serve", &["latest", "--disk", "nope", "--socket", s(&sock)])
        .run();
    out.assert_error(2, &["no disk nope"]);
    let out = env.cmd("serve", &["latest"]).run();
    out.assert_error(2, &["--socket"]);
    let taken = env.path("taken");
    write_file(&taken, b"not a socket");
    let out = env.cmd("serve", &["latest", "--socket", s(&taken)]).run();
    out.assert_error(2, &["not a socket"]);
    assert_eq!(read(&taken), b"not a socket", "the file is left alone");
    let _srv = Served::start(&env, "first", &["latest", "--socket", s(&sock)]);
    let out = env.cmd("serve", &["latest", "--socket", s(&sock)]).run();
    out.assert_error(1, &["in use"]);
}

/// Hashes of every file in the repository, to show that serving never writes it.
fn repo_state(env: &Env) -> Vec<(PathBuf, blake3::Hash)> {
    files_under(&env.repo)
        .into_iter()
        .map(|p| {
            let h = blake3::hash(&read(&p));
            (p, h)
        })
        .collect()
}

#[test]
fn serve_overlay_takes_writes_that_survive_kill9_after_flush() {
    if !tools(&["qemu-io", "qemu-img"]) {
        return;
    }
    let env = Env::new();
    let (img, mut want) = image(&env, "d.img", 51);
    env.backup(&img, &["--name", "vm"]);
    let before = repo_state(&env);
    let sock = env.path("o.sock");
    let overlay = env.path("vm.overlay");
    let args = ["latest", "--socket", s(&sock), "--overlay", s(&overlay)];
    let mut srv = Served::start(&env, "o1", &args);
    assert_eq!(srv.serving["exports"][0]["read_only"], false);
    let uri = srv.uri(None);
    // Partial blocks over data and over holes, a zeroed range, a discarded block.
    let cmds = [
        "write -P 0x11 1000 5000",
        "write -P 0x22 1966080 200000",
        "write -z 196708 70000",
        "discard 6291456 131072",
        "flush",
    ];
    let mut args_io = vec!["-f", "raw"];
    for c in &cmds {
        args_io.extend_from_slice(&["-c", c]);
    }
    args_io.push(&uri);
    tool("qemu-io", &args_io);
    want[1000..6000].fill(0x11);
    want[1_966_080..2_166_080].fill(0x22);
    want[196_708..266_708].fill(0);
    want[6_291_456..6_422_528].fill(0);
    srv.kill9();
    let mut srv = Served::start(&env, "o2", &args);
    let out = env.path("after.raw");
    tool(
        "qemu-img",
        &["convert", "-O", "raw", &srv.uri(None), s(&out)],
    );
    assert_same(&read(&out), &want, "the export after kill -9 and a restart");
    // A backup of the served export captures the changes.
    let mut b = env.cmd(
        "backup",
        &["--json", "--name", "changed", "--chunk-size", CHUNK_ARG],
    );
    b = b.arg("--source").arg(srv.uri(None));
    b.run().ok();
    assert_eq!(srv.stop(), Some(0), "{}", srv.log_text());
    let restored = env.restore_stdout("latest");
    assert_same(&restored, &want, "a backup of the overlay export");
    for (p, h) in &before {
        assert_eq!(blake3::hash(&read(p)), *h, "{} changed", p.display());
    }
}

#[test]
fn serve_refuses_an_overlay_of_another_snapshot() {
    let env = Env::new();
    let (img, _) = image(&env, "d.img", 61);
    let first = env.backup(&img, &["--name", "a"]);
    let first = text(&first, "snapshot_id").to_string();
    env.backup(&img, &["--name", "b"]);
    let sock = env.path("r.sock");
    let overlay = env.path("a.overlay");
    let ok = ["--socket", s(&sock), "--overlay", s(&overlay)];
    let mut srv = Served::start(&env, "a", &[&[first.as_str()][..], &ok].concat());
    assert_eq!(srv.stop(), Some(0));
    let out = env.cmd("serve", &["latest", "--name", "b"]).args(&ok).run();
    out.assert_error(2, &["made for another snapshot"]);
    let two = env.path("two.img");
    write_sparse(&two, MIB as u64, &[(0, b"x")]);
    env.backup(
        img_arg("x", &img),
        &["--source", &img_arg("y", &two), "--name", "multi"],
    );
    let out = env
        .cmd("serve", &["latest", "--name", "multi"])
        .args(&["--socket", s(&sock), "--overlay", s(&env.path("m.ov"))])
        .run();
    out.assert_error(2, &["--disk"]);
}

#[test]
fn serve_an_encrypted_repository() {
    if !tools(&["qemu-img"]) {
        return;
    }
    let env = Env::new();
    let (img, _) = image(&env, "d.img", 71);
    let repo = env.path("enc");
    let pw = ("MOVER_PASSWORD", "correct horse");
    mover(["init", "--encrypt", "-r"])
        .arg(&repo)
        .env(pw.0, pw.1)
        .run()
        .ok();
    mover(["backup", "--name", "vm", "--source"])
        .arg(&img)
        .args(&["-r", s(&repo)])
        .env(pw.0, pw.1)
        .run()
        .ok();
    let sock = env.path("e.sock");
    let out = mover(["serve", "latest", "--socket", s(&sock), "-r", s(&repo)]).run();
    assert_ne!(out.exit(), 0, "no password, no service:\n{out}");
    out.assert_stderr_has(&["password"]);
    let args = ["latest", "--socket", s(&sock)];
    let mut srv = Served::start_in(&repo, &env.path("enc.log"), &args, &[pw]);
    let cmp = tool(
        "qemu-img",
        &["compare", "-f", "raw", s(&img), &srv.uri(None)],
    );
    assert!(cmp.contains("identical"), "{cmp}");
    assert_eq!(srv.stop(), Some(0));
}

/// Serves a snapshot from each S3 test server (Garage and s3s-fs, from the `MOVER_TEST_*`
/// variables `scripts/test.sh` sets; under `CI=true` a missing server fails the test).
#[test]
fn serve_a_snapshot_from_s3_bit_exact() {
    let servers = crate::s3::servers();
    if servers.is_empty() || !tools(&["qemu-img", "nbdinfo", "nbdcopy"]) {
        return;
    }
    let env = Env::new();
    let (img, data) = image(&env, "vm.img", 81);
    for server in &servers {
        let url = format!("s3://{}/{}", server.bucket, unique_name("serve"));
        let s3_args = [
            "--s3-endpoint",
            server.endpoint.as_str(),
            "--s3-region",
            server.region.as_str(),
            "--s3-allow-http",
        ];
        let cache = env.path(&format!("cache-{}", server.name));
        let vars = [
            ("AWS_ACCESS_KEY_ID", server.access.as_str()),
            ("AWS_SECRET_ACCESS_KEY", server.secret.as_str()),
            ("XDG_CACHE_HOME", s(&cache)),
        ];
        let s3 = |sub: &str| {
            let mut m = mover([sub, "-r", &url]).args(&s3_args);
            for (k, v) in vars {
                m = m.env(k, v);
            }
            m.timeout(Duration::from_secs(120))
        };
        s3("init").run().ok();
        s3("backup")
            .args(&["--name", "vm", "--chunk-size", CHUNK_ARG, "--source"])
            .arg(&img)
            .run()
            .ok();
        let sock = env.path(&format!("{}.sock", server.name));
        let log = env.path(&format!("{}.log", server.name));
        let args = [&["latest", "--socket", s(&sock)][..], &s3_args].concat();
        let mut srv = Served::start_in(&url, &log, &args, &vars);
        let uri = srv.uri(None);
        let cmp = tool("qemu-img", &["compare", "-f", "raw", s(&img), &uri]);
        assert!(cmp.contains("identical"), "{}: {cmp}", server.name);
        assert_eq!(nbd_map(&uri), expected_map(&data), "{}", server.name);
        let out = env.path(&format!("{}.raw", server.name));
        tool("nbdcopy", &["--connections=4", &uri, s(&out)]);
        assert_same(&read(&out), &data, server.name);
        assert_eq!(srv.stop(), Some(0), "{}: {}", server.name, srv.log_text());
    }
}

/// Runs `scripts/NAME --mover MOVER` in its own process group, with a time limit; returns its
/// stderr when it passed. Exit 77 means a prerequisite (a tool, root, FUSE, a kernel) is
/// missing: a loud skip, a failure under `CI=true`.
fn run_script(name: &str, limit: Duration) -> Option<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name);
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("stderr");
    let mut child = Command::new(&script)
        .arg("--mover")
        .arg(mover_bin())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("run scripts/{name}: {e}"));
    let (status, killed) = wait_timeout(&mut child, limit);
    if killed {
        // The servers, clients and VMs it started are in its process group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .status();
    }
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!killed, "scripts/{name} hung:\n{err}");
    match status.code() {
        Some(0) => {
            assert!(err.contains("all checks passed"), "{err}");
            Some(err)
        }
        Some(77) => {
            skip("serve", err.trim());
            None
        }
        _ => panic!("scripts/{name} failed ({status}):\n{err}"),
    }
}

/// The README's instant-recovery recipe, as `scripts/instant-recovery.sh` runs it: a served
/// export mirrored to production storage by QMP `blockdev-mirror` while it is written, the
/// `qemu-img convert` fallback, and a file system mounted from the export.
#[test]
fn serve_instant_recovery_recipe_script() {
    run_script("instant-recovery.sh", Duration::from_secs(180));
}

/// `scripts/instant-recovery-demo.sh`: a Linux guest booted under TCG from an overlay export
/// reads a backed-up file and writes one, found in the overlay after it powers off (about 15 s
/// on two cores; `scripts/setup.sh --demo` installs QEMU and unpacks the kernel).
#[test]
fn serve_boots_a_guest_from_its_backup() {
    run_script("instant-recovery-demo.sh", Duration::from_secs(400));
}

// ---- a raw client ----

const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const REQUEST_MAGIC: u32 = 0x2560_9513;

struct Raw(UnixStream);

impl Raw {
    fn connect(sock: &Path) -> Raw {
        let s = UnixStream::connect(sock).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut raw = Raw(s);
        let mut hello = [0u8; 18];
        raw.0.read_exact(&mut hello).expect("greeting");
        assert_eq!(&hello[..8], b"NBDMAGIC");
        raw.0.write_all(&3u32.to_be_bytes()).expect("client flags");
        raw
    }

    fn option(&mut self, option: u32, data: &[u8]) {
        let mut m = IHAVEOPT.to_be_bytes().to_vec();
        m.extend_from_slice(&option.to_be_bytes());
        m.extend_from_slice(&(data.len() as u32).to_be_bytes());
        m.extend_from_slice(data);
        self.0.write_all(&m).expect("send option");
    }

    /// One option reply: (type, data).
    fn option_reply(&mut self) -> (u32, Vec<u8>) {
        let mut h = [0u8; 20];
        self.0.read_exact(&mut h).expect("option reply");
        let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut d = vec![0; len as usize];
        self.0.read_exact(&mut d).expect("option reply data");
        (kind, d)
    }

    /// Option replies up to the final one (ACK or an error); returns its type.
    fn option_final(&mut self) -> u32 {
        loop {
            let (kind, _) = self.option_reply();
            if kind == 1 || kind & (1 << 31) != 0 {
                return kind;
            }
        }
    }

    fn request(&mut self, flags: u16, kind: u16, offset: u64, len: u32, payload: &[u8]) {
        let mut m = REQUEST_MAGIC.to_be_bytes().to_vec();
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&7u64.to_be_bytes());
        m.extend_from_slice(&offset.to_be_bytes());
        m.extend_from_slice(&len.to_be_bytes());
        m.extend_from_slice(payload);
        self.0.write_all(&m).expect("send request");
    }

    /// Structured reply chunks up to the last: (type, payload) each.
    fn chunks(&mut self) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let mut h = [0u8; 20];
            self.0.read_exact(&mut h).expect("reply chunk");
            assert_eq!(u32::from_be_bytes(h[..4].try_into().unwrap()), 0x668e_33ef);
            let flags = u16::from_be_bytes([h[4], h[5]]);
            let kind = u16::from_be_bytes([h[6], h[7]]);
            let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
            let mut d = vec![0; len as usize];
            self.0.read_exact(&mut d).expect("chunk payload");
            out.push((kind, d));
            if flags & 1 != 0 {
                return out;
            }
        }
    }

    /// The NBD error of a structured error reply.
    fn error(&mut self) -> u32 {
        let c = self.chunks();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, 0x8001, "an error chunk");
        u32::from_be_bytes(c[0].1[..4].try_into().unwrap())
    }

    fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0) | Err(_))
    }
}

fn go_data(name: &str) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&0u16.to_be_bytes());
    d
}

#[test]
fn serve_answers_malformed_requests_with_errors_and_keeps_serving() {
    let env = Env::new();
    let (img, data) = image(&env, "d.img", 41);
    env.backup(&img, &[]);
    let sock = env.path("raw.sock");
    let mut srv = Served::start(&env, "raw", &["latest", "--socket", s(&sock)]);
    let mut c = Raw::connect(&sock);
    c.option(7, &[1, 2, 3]); // GO with a truncated name
    assert_eq!(c.option_final(), (1 << 31) + 3, "ERR_INVALID");
    c.option(7, &go_data("nope"));
    assert_eq!(c.option_final(), (1 << 31) + 6, "ERR_UNKNOWN");
    let name = srv.serving["exports"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    c.option(10, &go_data(&name)); // meta context before structured replies
    assert_eq!(c.option_final(), (1 << 31) + 3, "ERR_INVALID");
    c.option(99, b"whatever");
    assert_eq!(c.option_final(), (1 << 31) + 1, "ERR_UNSUP");
    c.option(8, &[]);
    assert_eq!(c.option_final(), 1);
    c.option(7, &go_data(&name));
    assert_eq!(c.option_final(), 1);
    let size = data.len() as u64;
    c.request(0, 0, size - 10, 20, &[]); // read past the end
    assert_eq!(c.error(), 22);
    c.request(0, 0, u64::MAX - 5, 10, &[]); // offset overflow
    assert_eq!(c.error(), 22);
    c.request(0, 0, 0, 64 << 20, &[]); // over the block size
    assert_eq!(c.error(), 22);
    c.request(0, 1, 0, 4, b"abcd"); // write to a read-only export
    assert_eq!(c.error(), 1);
    c.request(0, 42, 0, 4, &[]); // unknown command
    assert_eq!(c.error(), 22);
    c.request(1 << 9, 0, 0, 4, &[]); // unknown flag
    assert_eq!(c.error(), 22);
    c.request(0, 7, 0, 4096, &[]); // block status without the context
    assert_eq!(c.error(), 22);
    c.request(0, 0, 100, 1000, &[]); // still serving
    let got = c.chunks();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1[8..], data[100..1100]);
    c.request(0, 0, 40 * C, 16, &[]); // a zero chunk is a hole
    assert_eq!(c.chunks()[0].0, 2, "OFFSET_HOLE");
    // Across data and a hole: a data chunk then a hole chunk; with DF, one data chunk
    // holding the zeros too.
    let (from, to) = (3 * C + 5, 7 * C + 3);
    c.request(0, 0, from, (to - from) as u32, &[]);
    let got = c.chunks();
    let kinds: Vec<u16> = got.iter().map(|g| g.0).collect();
    assert_eq!(kinds, [1, 2], "OFFSET_DATA, OFFSET_HOLE");
    assert_eq!(got[0].1[8..], data[from as usize..5 * CHUNK]);
    assert_eq!(got[1].1[..8], (5 * C).to_be_bytes());
    assert_eq!(got[1].1[8..], ((to - 5 * C) as u32).to_be_bytes());
    c.request(1 << 2, 0, from, (to - from) as u32, &[]);
    let got = c.chunks();
    assert_eq!((got.len(), got[0].0), (1, 1));
    assert_eq!(got[0].1[8..], data[from as usize..to as usize]);
    c.0.write_all(&[0xde; 28]).expect("garbage"); // bad magic ends the connection
    assert!(c.is_closed());
    // Garbage in the handshake, and a client that hangs up midway, harm nothing.
    let mut g = UnixStream::connect(&sock).expect("connect");
    let _ = g.write_all(&[0xff; 64]);
    drop(g);
    drop(UnixStream::connect(&sock).expect("connect"));
    let mut c = Raw::connect(&sock);
    c.option(8, &[]);
    assert_eq!(c.option_final(), 1);
    c.option(7, &go_data(""));
    assert_eq!(c.option_final(), 1);
    c.request(0, 0, 0, 512, &[]);
    assert_eq!(c.chunks()[0].1[8..], data[..512]);
    // Without structured replies a read's data holds its holes' zeros.
    let mut c = Raw::connect(&sock);
    c.option(7, &go_data(""));
    assert_eq!(c.option_final(), 1);
    let (from, to) = (4 * C + 9, 22 * C);
    c.request(0, 0, from, (to - from) as u32, &[]);
    let mut reply = vec![0; 16 + (to - from) as usize];
    c.0.read_exact(&mut reply).expect("simple reply");
    assert_eq!(reply[..8], [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 0], "no error");
    assert_eq!(reply[16..], data[from as usize..to as usize]);
    assert_eq!(srv.stop(), Some(0), "{}", srv.log_text());
}

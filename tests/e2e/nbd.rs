//! NBD sources and destinations against real servers (issue 7): qemu-nbd exporting qcow2
//! images with persistent dirty bitmaps (written with qemu-io), and nbdkit with its error
//! filter and without structured replies. Every server listens on a unix socket in the
//! test's temporary directory and is stopped by a guard.
//!
//! The tools come from Debian's `qemu-utils`, `nbdkit` and `libnbd-bin`; a missing tool skips
//! loudly, or fails with `CI=true`.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

const C: u64 = CHUNK as u64;
const M: u64 = MIB as u64;

/// True when every tool is installed (else a loud skip, or a failure with `CI=true`).
fn tools(what: &str, names: &[&str]) -> bool {
    names.iter().all(|n| have_tool(what, n))
}

/// Runs a tool that must succeed; returns its stdout.
fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// An NBD server running for the life of the guard, listening on a unix socket (or TCP).
struct Server {
    child: Option<Child>,
    uri: String,
    log: PathBuf,
}

impl Server {
    /// `qemu-nbd` exporting `file` as `disk` on `<dir>/<tag>.sock`, persistent, with `opts`
    /// (`--read-only`, `--format qcow2`, `--bitmap b0`…).
    fn qemu_nbd(dir: &Path, tag: &str, file: &Path, opts: &[&str]) -> Server {
        let sock = dir.join(format!("{tag}.sock"));
        let mut args = vec![
            "--socket",
            s(&sock),
            "--export-name",
            "disk",
            "--persistent",
        ];
        args.extend_from_slice(&["--shared", "16"]);
        args.extend_from_slice(opts);
        args.push(s(file));
        let uri = format!("nbd+unix:///disk?socket={}", sock.display());
        Server::start(dir, tag, "qemu-nbd", &args, uri, &sock)
    }

    /// `qemu-nbd` on loopback TCP; the URI is `nbd://127.0.0.1:PORT/disk`.
    fn qemu_nbd_tcp(dir: &Path, tag: &str, file: &Path, opts: &[&str]) -> Server {
        let port = free_port();
        let port_s = port.to_string();
        let mut args = vec![
            "--bind",
            "127.0.0.1",
            "--port",
            &port_s,
            "--export-name",
            "disk",
        ];
        args.extend_from_slice(&["--persistent", "--shared", "16"]);
        args.extend_from_slice(opts);
        args.push(s(file));
        let uri = format!("nbd://127.0.0.1:{port}/disk");
        let mut srv = Server::spawn(dir, tag, "qemu-nbd", &args, uri);
        srv.wait_until(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        srv
    }

    /// `nbdkit ARGS…` (plugin, parameters, `--filter=…`) on `<dir>/<tag>.sock`.
    fn nbdkit(dir: &Path, tag: &str, args: &[&str]) -> Server {
        let sock = dir.join(format!("{tag}.sock"));
        let mut all = vec!["--foreground", "--exit-with-parent", "--unix", s(&sock)];
        all.extend_from_slice(args);
        let uri = format!("nbd+unix:///disk?socket={}", sock.display());
        Server::start(dir, tag, "nbdkit", &all, uri, &sock)
    }

    fn start(
        dir: &Path,
        tag: &str,
        program: &str,
        args: &[&str],
        uri: String,
        sock: &Path,
    ) -> Self {
        let mut srv = Server::spawn(dir, tag, program, args, uri);
        srv.wait_until(|| UnixStream::connect(sock).is_ok());
        srv
    }

    fn spawn(dir: &Path, tag: &str, program: &str, args: &[&str], uri: String) -> Self {
        let log = dir.join(format!("{tag}.log"));
        let err = std::fs::File::create(&log).expect("server log");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Server {
            child: Some(child),
            uri,
            log,
        }
    }

    /// Waits (up to 20 s) until `ready`; fails with the server's log if it exits first.
    fn wait_until(&mut self, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let child = self.child.as_mut().expect("server running");
        loop {
            if ready() {
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "NBD server exited ({status}) before listening:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "NBD server not listening after 20 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s) and waits for it, so the image is
    /// closed (bitmaps stored, locks released).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let (_, killed) = wait_timeout(&mut child, Duration::from_secs(10));
        if killed {
            eprintln!("NBD server ignored SIGTERM; killed:\n{}", self.log_text());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP port that was free a moment ago, below Linux's ephemeral range (32768 and up), so
/// that no listener another test binds to port 0 meanwhile can be handed the same port.
fn free_port() -> u16 {
    let mut x = time_seed() ^ u64::from(std::process::id());
    for _ in 0..1000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = 20_000 + (x >> 33) as u16 % 10_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 30000")
}

/// `qemu-img convert -O raw` of `image` (format `fmt`), read back.
fn raw_of(dir: &Path, image: &Path, fmt: &str) -> Vec<u8> {
    let out = dir.join("converted.raw");
    tool(
        "qemu-img",
        &["convert", "-f", fmt, "-O", "raw", s(image), s(&out)],
    );
    let data = read(&out);
    std::fs::remove_file(&out).expect("remove converted image");
    data
}

/// `qemu-io -f FMT -c CMD… IMAGE`.
fn qemu_io(image: &Path, fmt: &str, cmds: &[&str]) {
    let mut args = vec!["-f", fmt];
    for c in cmds {
        args.extend_from_slice(&["-c", c]);
    }
    args.push(s(image));
    let out = tool("qemu-io", &args);
    assert!(
        !out.to_lowercase().contains("error"),
        "qemu-io {cmds:?}: {out}"
    );
}

/// `nbdinfo --map[=CONTEXT] URI` as (offset, length, type).
fn nbd_map(uri: &str, context: &str) -> Vec<(u64, u64, u32)> {
    let map = format!("--map={context}");
    tool("nbdinfo", &[&map, uri])
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// The 64 KiB chunk indices that `extents` touch.
fn chunks_of(extents: impl IntoIterator<Item = (u64, u64)>) -> std::collections::BTreeSet<u64> {
    extents
        .into_iter()
        .filter(|e| e.1 > 0)
        .flat_map(|(off, len)| off / C..(off + len).div_ceil(C))
        .collect()
}

/// A 64 MiB qcow2 with 2 MiB of random data at 1 MiB, 1 MiB of 0xa5 at 10 MiB, and a zeroed
/// cluster run at 20 MiB (allocated, but reads as zeros).
fn make_qcow2(dir: &Path, name: &str) -> PathBuf {
    let img = dir.join(name);
    tool("qemu-img", &["create", "-q", "-f", "qcow2", s(&img), "64M"]);
    let rand = dir.join("random.bin");
    write_file(&rand, &random_bytes(2 * MIB, 901));
    let w = format!("write -q -s {} 1M 2M", rand.display());
    qemu_io(
        &img,
        "qcow2",
        &[&w, "write -q -P 0xa5 10M 1M", "write -q -z 20M 1M"],
    );
    img
}

#[test]
fn full_backup_from_qemu_nbd_reads_only_allocated_data() {
    let what = "full backup from qemu-nbd";
    if !tools(what, &["qemu-img", "qemu-io", "qemu-nbd", "nbdinfo"]) {
        return;
    }
    let env = Env::new();
    let img = make_qcow2(env.dir.path(), "vm.qcow2");
    let want = raw_of(env.dir.path(), &img, "qcow2");
    let srv = Server::qemu_nbd(
        env.dir.path(),
        "q",
        &img,
        &["--read-only", "--format", "qcow2"],
    );

    // What base:allocation says is data, as nbdinfo sees it: 1..3 MiB and 10..11 MiB.
    let data = chunks_of(
        nbd_map(&srv.uri, "base:allocation")
            .into_iter()
            .filter(|e| e.2 & 2 == 0)
            .map(|e| (e.0, e.1)),
    );
    assert_eq!(data.len() as u64, 3 * M / C, "nbdinfo --map: {data:?}");

    let (d, _) = env.backup_args(&["--source", &srv.uri, "--name", "vm"], 0);
    assert_eq!(num(&d, "source_bytes"), 64 * M, "{d}");
    assert_eq!(
        num(&d, "bytes_read"),
        data.len() as u64 * C,
        "holes and zeros are not read: {d}"
    );
    assert_eq!(num(&d, "bytes_zero"), 61 * M, "{d}");
    assert_eq!(num(&d, "chunks_total"), 64 * M / C, "{d}");
    assert_eq!(text(&d["disks"][0], "source"), srv.uri, "{d}");
    let id1 = text(&d, "snapshot_id").to_string();
    let out = env.path("restored.img");
    env.restore_to(&id1, &out);
    assert_same(&read(&out), &want, "restore equals qemu-img convert -O raw");
    assert!(
        !fs_keeps_holes(env.dir.path()) || is_sparse(&out),
        "restored sparse"
    );

    // The same export over loopback TCP: the same snapshot contents, nothing new stored.
    drop(srv);
    let tcp = Server::qemu_nbd_tcp(env.dir.path(), "t", &img, &["--read-only", "-f", "qcow2"]);
    let (d, _) = env.backup_args(&["--source", &tcp.uri, "--name", "vm"], 0);
    assert_eq!(num(&d, "bytes_read"), 3 * M, "{d}");
    assert_eq!(num(&d, "bytes_new"), 0, "{d}");
    assert_same(
        &env.restore_stdout("latest"),
        &want,
        "restore of the TCP backup",
    );
}

#[test]
fn dirty_bitmap_incremental_reads_only_dirty_data() {
    let what = "dirty-bitmap incremental";
    if !tools(what, &["qemu-img", "qemu-io", "qemu-nbd", "nbdinfo"]) {
        return;
    }
    let env = Env::new();
    let dir = env.dir.path();
    let img = make_qcow2(dir, "vm.qcow2");
    tool("qemu-img", &["bitmap", "--add", s(&img), "b0"]);
    let ro = ["--read-only", "--format", "qcow2"];
    let mut srv = Server::qemu_nbd(dir, "q0", &img, &ro);
    let (d, _) = env.backup_args(
        &["--source", &srv.uri, "--name", "vm", "--change-id", "b0"],
        0,
    );
    let id1 = text(&d, "snapshot_id").to_string();
    let v1 = raw_of(dir, &img, "qcow2");
    srv.stop();

    // 100 KiB into a hole at 5 MiB (2 chunks), 4 KiB inside the data at 2 MiB (1 chunk),
    // and 512 KiB of the 0xa5 MiB discarded (8 chunks dirty, but now zero: not read).
    qemu_io(
        &img,
        "qcow2",
        &[
            "write -q -P 0x11 5M 100k",
            "write -q -P 0x22 2M 4k",
            "discard -q 10M 512k",
        ],
    );
    let v2 = raw_of(dir, &img, "qcow2");
    assert!(
        v2[10 * MIB..10 * MIB + 512 * 1024].iter().all(|&b| b == 0),
        "discard reads as zeros"
    );

    let mut srv = Server::qemu_nbd(
        dir,
        "q1",
        &img,
        &["--read-only", "-f", "qcow2", "--bitmap", "b0"],
    );
    let dirty = chunks_of(
        nbd_map(&srv.uri, "qemu:dirty-bitmap:b0")
            .into_iter()
            .filter(|e| e.2 & 1 == 1)
            .map(|e| (e.0, e.1)),
    );
    let data = chunks_of(
        nbd_map(&srv.uri, "base:allocation")
            .into_iter()
            .filter(|e| e.2 & 2 == 0)
            .map(|e| (e.0, e.1)),
    );
    let dirty_data = dirty.intersection(&data).count() as u64;
    assert_eq!(dirty.len(), 11, "nbdinfo: dirty chunks {dirty:?}");

    // doctor names the bitmaps the export offers.
    let out = mover([
        "doctor",
        "--json",
        "--read-seconds",
        "0.1",
        "--source",
        &srv.uri,
    ])
    .run()
    .ok();
    let checks = out.json()["data"]["checks"].clone();
    let bitmaps = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "dirty bitmaps")
        .unwrap_or_else(|| panic!("no dirty bitmaps check: {out}"));
    assert_eq!(bitmaps["ok"], true, "{out}");
    assert_eq!(bitmaps["detail"], "b0", "{out}");
    assert_eq!(dirty_data, 3, "nbdinfo: dirty data chunks");

    let (d, _) = env.backup_args(
        &[
            "--source", &srv.uri, "--name", "vm", "--parent", "latest", "--bitmap", "b0",
        ],
        0,
    );
    assert_eq!(text(&d, "parent"), id1, "{d}");
    assert_eq!(
        num(&d, "bytes_read"),
        dirty_data * C,
        "only dirty data is read: {d}"
    );
    assert_eq!(num(&d, "chunks_unchanged"), 64 * M / C - 11, "{d}");
    assert_eq!(num(&d, "bytes_new"), 3 * C, "{d}");
    assert_eq!(d["disks"][0]["change_token"], "b0", "{d}");
    let id2 = text(&d, "snapshot_id").to_string();
    assert_same(
        &env.restore_stdout(&id2),
        &v2,
        "incremental equals qemu-img convert -O raw",
    );
    assert_same(&env.restore_stdout(&id1), &v1, "the parent is unchanged");

    // A bitmap the export does not have: one clear error, nothing committed.
    let out = env
        .cmd(
            "backup",
            &["--source", &srv.uri, "--name", "vm", "--parent", "latest"],
        )
        .args(&["--bitmap", "nope"])
        .run();
    out.assert_error(1, &["nope", "nothing was committed"]);
    assert!(out.stdout.is_empty(), "{out}");
    srv.stop();
    // An export without any bitmap: doctor says how to get one.
    let srv = Server::qemu_nbd(dir, "q2", &img, &ro);
    let out = mover(["doctor", "--read-seconds", "0.1", "--source", &srv.uri])
        .run()
        .ok();
    assert!(
        out.stdout_str().contains("none exported") && out.stdout_str().contains("--bitmap"),
        "{out}"
    );
    let out = env
        .cmd(
            "backup",
            &["--source", &srv.uri, "--name", "vm", "--parent", "latest"],
        )
        .args(&["--bitmap", "b0"])
        .run();
    out.assert_error(1, &["b0", "nothing was committed"]);
    assert_eq!(env.snapshot_count(), 2, "failed backups commit nothing");
}

/// `backup` from nbdkit's `pattern` plugin with every read failing with EIO.
fn backup_with_read_errors(env: &Env) -> Output {
    let srv = Server::nbdkit(
        env.dir.path(),
        "e",
        &[
            "--filter=error",
            "pattern",
            "size=4M",
            "error-pread-rate=100%",
            "error-pread=EIO",
        ],
    );
    env.cmd("backup", &["--source", &srv.uri, "--name", "vm"])
        .run()
}

#[test]
fn read_errors_from_the_server_fail_cleanly() {
    let what = "nbdkit error filter";
    if !tools(what, &["nbdkit", "nbdcopy"]) {
        return;
    }
    let env = Env::new();
    let out = backup_with_read_errors(&env);
    assert_eq!(out.exit(), 1, "{out}");
    let last = out.stderr.lines().last().unwrap_or_default().to_lowercase();
    for needle in ["mover: ", "nothing was committed", "input/output error"] {
        assert!(last.contains(needle), "the error names {needle:?}:\n{out}");
    }
    assert!(out.stdout.is_empty(), "{out}");
    assert_eq!(env.snapshot_count(), 0);

    // A failing block-status request (the allocation map) fails the same way.
    let srv = Server::nbdkit(
        env.dir.path(),
        "x",
        &["--filter=error", "memory", "4M", "error-extents-rate=100%"],
    );
    let out = env
        .cmd("backup", &["--source", &srv.uri, "--name", "vm"])
        .run();
    out.assert_error(
        1,
        &[
            "input/output error",
            "block status",
            "nothing was committed",
        ],
    );
    assert_eq!(env.snapshot_count(), 0);
    drop(srv);

    // Without errors the same plugin backs up fine (the filter is what failed it).
    let srv = Server::nbdkit(env.dir.path(), "p", &["pattern", "size=4M"]);
    let (d, _) = env.backup_args(&["--source", &srv.uri, "--name", "vm"], 0);
    assert_eq!(num(&d, "bytes_read"), 4 * M, "{d}");
    let got = env.restore_stdout("latest");
    let want = tool_bytes(&["nbdcopy", &srv.uri, "-"]);
    assert_same(&got, &want, "restore equals nbdcopy of the export");
}

#[test]
fn read_errors_after_retries_print_one_line() {
    // "Retried where that is safe, then one clear error" (issue 7), and every failure is one
    // line on stderr (README): the retries must not print lines of their own by default.
    let what = "nbdkit error filter";
    if !tools(what, &["nbdkit"]) {
        return;
    }
    let env = Env::new();
    let out = backup_with_read_errors(&env);
    out.assert_error(1, &["input/output error", "nothing was committed"]);
    // With -v the retries may be logged.
}

/// Runs a tool that must succeed; returns its raw stdout.
fn tool_bytes(args: &[&str]) -> Vec<u8> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", args[0]));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn a_server_without_structured_replies_has_no_bitmaps() {
    let what = "nbdkit --no-sr";
    if !tools(what, &["nbdkit"]) {
        return;
    }
    let env = Env::new();
    // A parent of the same name, from a file.
    let file = env.path("vm.img");
    write_file(&file, &random_bytes(2 * MIB, 911));
    env.backup(&file, &["--name", "vm"]);
    let srv = Server::nbdkit(env.dir.path(), "n", &["--no-sr", "memory", "2M"]);
    let out = env
        .cmd(
            "backup",
            &["--source", &srv.uri, "--name", "vm", "--parent", "latest"],
        )
        .args(&["--bitmap", "b0"])
        .run();
    out.assert_error(1, &["structured"]);
    assert!(out.stdout.is_empty(), "{out}");
    assert_eq!(env.snapshot_count(), 1);

    // Plain reads need no structured replies: a full backup works (reading everything).
    let (d, _) = env.backup_args(&["--source", &srv.uri, "--name", "empty"], 0);
    assert_eq!(num(&d, "source_bytes"), 2 * M, "{d}");
    assert_same(
        &env.restore_stdout("latest"),
        &vec![0u8; 2 * MIB],
        "restore",
    );
}

#[test]
fn a_server_that_goes_away_mid_backup_fails_cleanly() {
    let what = "NBD server killed mid-backup";
    if !tools(what, &["nbdkit"]) {
        return;
    }
    let env = Env::new();
    // Slow reads: a second a request, so no read can finish before the server is killed at
    // 0.5 s, however many run in parallel (64 MiB takes at least several seconds).
    let mut srv = Server::nbdkit(
        env.dir.path(),
        "d",
        &["--filter=delay", "pattern", "size=64M", "rdelay=1"],
    );
    let (mut child, line) = env
        .cmd("backup", &["--source", &srv.uri, "--name", "vm"])
        .spawn();
    std::thread::sleep(Duration::from_millis(500));
    if let Some(c) = srv.child.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    srv.child = None;
    let (status, hung) = wait_timeout(&mut child, Duration::from_secs(90));
    let err = stderr_of(&mut child);
    assert!(!hung, "`{line}` hung after the server went away:\n{err}");
    assert_eq!(status.code(), Some(1), "`{line}`:\n{err}");
    assert_eq!(err.lines().count(), 1, "one line on stderr:\n{err}");
    assert!(
        err.starts_with("mover: ") && err.contains("nothing was committed"),
        "{err}"
    );
    assert_eq!(env.snapshot_count(), 0);
}

#[test]
fn delta_restore_to_a_writable_nbd_export() {
    let what = "delta restore to NBD";
    if !tools(what, &["qemu-img", "qemu-nbd"]) {
        return;
    }
    let env = Env::new();
    let dir = env.dir.path();
    let src = env.path("v1.img");
    let mut v1 = random_bytes(8 * MIB, 921);
    v1[6 * MIB..7 * MIB].fill(0);
    write_sparse(&src, 8 * M, &[(0, &v1[..6 * MIB]), (7 * M, &v1[7 * MIB..])]);
    let id = text(&env.backup(&src, &[]), "snapshot_id").to_string();

    // The destination drifted: 2 chunks changed, and data in the hole.
    let mut drifted = v1.clone();
    drifted[3 * CHUNK..3 * CHUNK + 10].copy_from_slice(b"drifted!!!");
    drifted[90 * CHUNK + 5] ^= 0xff;
    drifted[6 * MIB + 100..6 * MIB + 200].fill(7);
    // Two 4 KiB blocks, and the whole chunk that is a hole in the snapshot.
    let differing = delta_cost(&drifted, &v1);
    assert_eq!(differing, 2 * DELTA_BLOCK as u64 + C, "test setup");

    // A raw file and a qcow2, each exported writable.
    for fmt in ["raw", "qcow2"] {
        let dest = env.path(&format!("dest.{fmt}"));
        let raw = env.path("drifted.raw");
        write_file(&raw, &drifted);
        tool(
            "qemu-img",
            &["convert", "-f", "raw", "-O", fmt, s(&raw), s(&dest)],
        );
        let mut srv = Server::qemu_nbd(dir, fmt, &dest, &["--format", fmt]);
        let out = env
            .cmd(
                "restore",
                &[id.as_str(), "--delta", "--json", "--to", &srv.uri],
            )
            .run()
            .ok();
        let d = out.json()["data"].clone();
        assert_eq!(num(&d, "bytes_written"), differing, "{fmt}: {d}");
        assert!(num(&d, "bytes_compared") <= 8 * M, "{fmt}: {d}");
        // Again: nothing differs now.
        let out = env
            .cmd(
                "restore",
                &[id.as_str(), "--delta", "--json", "--to", &srv.uri],
            )
            .run()
            .ok();
        assert_eq!(
            num(&out.json()["data"], "bytes_written"),
            0,
            "{fmt}:\n{out}"
        );
        srv.stop();
        assert_same(
            &raw_of(dir, &dest, fmt),
            &v1,
            &format!("{fmt} export rolled back"),
        );
    }

    // A read-only export is refused before anything is written.
    let dest = env.path("ro.raw");
    write_file(&dest, &drifted);
    let srv = Server::qemu_nbd(dir, "ro", &dest, &["--format", "raw", "--read-only"]);
    let out = env
        .cmd("restore", &[id.as_str(), "--delta", "--to", &srv.uri])
        .run();
    out.assert_error(1, &["read-only"]);
    drop(srv);
    assert_same(&read(&dest), &drifted, "the read-only export is untouched");
}

#[test]
fn delta_restore_reads_only_what_the_destination_bitmap_marks() {
    let what = "delta restore with a destination bitmap";
    if !tools(what, &["qemu-img", "qemu-io", "qemu-nbd", "nbdinfo"]) {
        return;
    }
    let env = Env::new();
    let dir = env.dir.path();
    let src = env.path("v1.img");
    let v1 = random_bytes(8 * MIB, 951);
    write_file(&src, &v1);
    let id = text(&env.backup(&src, &[]), "snapshot_id").to_string();
    // The VM's disk held v1; a bitmap was started; the guest wrote at 1 MiB and across the
    // boundary of chunks 79 and 80.
    let dest = env.path("vm.qcow2");
    tool(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "qcow2", s(&src), s(&dest)],
    );
    tool("qemu-img", &["bitmap", "--add", s(&dest), "b1"]);
    qemu_io(
        &dest,
        "qcow2",
        &["write -q -P 0x33 1M 4k", "write -q -P 0x44 5056k 70k"],
    );
    let now = raw_of(dir, &dest, "qcow2");

    let mut srv = Server::qemu_nbd(dir, "w", &dest, &["-f", "qcow2", "--bitmap", "b1"]);
    let dirty = chunks_of(
        nbd_map(&srv.uri, "qemu:dirty-bitmap:b1")
            .into_iter()
            .filter(|e| e.2 & 1 == 1)
            .map(|e| (e.0, e.1)),
    );
    assert_eq!(dirty.len(), 3, "nbdinfo: dirty chunks {dirty:?}");

    // A bitmap the export does not have: a clear error, nothing written.
    let out = env
        .cmd(
            "restore",
            &[id.as_str(), "--delta", "--bitmap", "nope", "--to", &srv.uri],
        )
        .run();
    out.assert_error(1, &["nope"]);

    let out = env
        .cmd(
            "restore",
            &[
                id.as_str(),
                "--delta",
                "--json",
                "--bitmap",
                "b1",
                "--to",
                &srv.uri,
            ],
        )
        .run()
        .ok();
    let d = out.json()["data"].clone();
    assert_eq!(
        num(&d, "bytes_compared"),
        3 * C,
        "only the dirty chunks are read: {d}"
    );
    assert_eq!(num(&d, "bytes_written"), delta_cost(&now, &v1), "{d}");
    srv.stop();
    assert_same(
        &raw_of(dir, &dest, "qcow2"),
        &v1,
        "rolled back to the snapshot",
    );
}

#[test]
fn delta_restore_to_a_smaller_nbd_export_is_refused_before_writing() {
    // An NBD export cannot be grown; like a block device that is too small (checked before
    // anything is written), the restore must refuse it up front and say what size it needs.
    let what = "delta restore to a small NBD export";
    if !tools(what, &["qemu-nbd"]) {
        return;
    }
    let env = Env::new();
    let src = env.path("v1.img");
    write_file(&src, &random_bytes(8 * MIB, 941));
    let id = text(&env.backup(&src, &[]), "snapshot_id").to_string();
    let small = env.path("small.raw");
    let before = random_bytes(4 * MIB, 942);
    write_file(&small, &before);
    let mut srv = Server::qemu_nbd(env.dir.path(), "small", &small, &["--format", "raw"]);
    let out = env
        .cmd("restore", &[id.as_str(), "--delta", "--to", &srv.uri])
        .run();
    srv.stop();
    assert_eq!(out.exit(), 1, "{out}");
    assert_same(&read(&small), &before, "the small export is untouched");
    out.assert_error(1, &[&(8 * M).to_string(), &(4 * M).to_string()]);
}

#[test]
fn multi_disk_with_an_nbd_disk_and_a_file_disk() {
    let what = "multi-disk NBD + file";
    if !tools(what, &["qemu-img", "qemu-io", "qemu-nbd"]) {
        return;
    }
    let env = Env::new();
    let dir = env.dir.path();
    let img = make_qcow2(dir, "sda.qcow2");
    let sda = raw_of(dir, &img, "qcow2");
    let file = env.path("sdb.img");
    let mut sdb = random_bytes(3 * MIB, 931);
    write_file(&file, &sdb);
    let cfg = env.path("vm.xml");
    write_file(&cfg, b"<domain/>");
    let mut srv = Server::qemu_nbd(dir, "a", &img, &["--read-only", "-f", "qcow2"]);
    let a = format!("sda={}", srv.uri);
    let b = format!("sdb={}", file.display());
    let (d, _) = env.backup_args(
        &[
            "--source",
            &a,
            "--source",
            &b,
            "--name",
            "vm",
            "--attach",
            s(&cfg),
        ],
        0,
    );
    let disks = d["disks"].as_array().expect("disks").clone();
    assert_eq!(disks.len(), 2, "{d}");
    assert_eq!(
        num(&disks[0], "bytes_read"),
        3 * M,
        "sda: only allocated data: {d}"
    );
    assert_eq!(num(&disks[1], "bytes_read"), 3 * M, "{d}");
    assert_eq!(num(&d, "source_bytes"), 67 * M, "{d}");
    let id1 = text(&d, "snapshot_id").to_string();
    let restore = |snap: &str, disk: &str| {
        env.cmd("restore", &[snap, "--disk", disk, "--to", "-"])
            .run()
            .ok()
            .stdout
    };
    assert_same(&restore(&id1, "sda"), &sda, "sda");
    assert_same(&restore(&id1, "sdb"), &sdb, "sdb");
    let att = env.cmd(
        "restore",
        &[id1.as_str(), "--attachment", "vm.xml", "--to", "-"],
    );
    assert_same(&att.run().ok().stdout, b"<domain/>", "attachment");

    // Incremental: sda compared over NBD, sdb from a changed-extent list.
    sdb[MIB + 3..MIB + 8].copy_from_slice(b"new!!");
    write_file(&file, &sdb);
    let map = env.path("sdb.json");
    write_file(&map, change_info(0, 3 * M, &[(M + 3, 5)]).as_bytes());
    let bmap = format!("sdb={}", map.display());
    let (d, _) = env.backup_args(
        &[
            "--source",
            &a,
            "--source",
            &b,
            "--name",
            "vm",
            "--parent",
            "latest",
            "--changed-extents",
            &bmap,
        ],
        0,
    );
    let disks = d["disks"].as_array().expect("disks").clone();
    assert_eq!(num(&disks[0], "bytes_read"), 3 * M, "sda compared: {d}");
    assert_eq!(num(&disks[1], "bytes_read"), C, "sdb: one chunk: {d}");
    assert_eq!(num(&d, "bytes_new"), C, "{d}");
    let id2 = text(&d, "snapshot_id").to_string();
    assert_same(&restore(&id2, "sda"), &sda, "sda v2");
    assert_same(&restore(&id2, "sdb"), &sdb, "sdb v2");
    srv.stop();
    assert_eq!(env.snapshot_count(), 2);
}

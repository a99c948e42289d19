//! `NbdSource` against real NBD servers: qemu-nbd exporting qcow2 and raw images (with dirty
//! bitmaps written by qemu-img and qemu-io) and nbdkit with its `memory`, `pattern` and
//! `null` plugins and its `error`, `delay`, `nozero` and `blocksize-policy` filters.
//!
//! Every server listens on a unix socket (or a free loopback port) in the test's own
//! temporary directory and is killed by a guard. A missing tool skips loudly, or fails
//! under `CI=true`; the tools are Debian's `qemu-utils`, `nbdkit` and `libnbd-bin`.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chunker::ExtentKind;
use mover::{Error, NbdOptions, NbdSource, Source};

const K: u64 = 1 << 10;
const M: u64 = 1 << 20;
const G: u64 = 1 << 30;

/// True when every tool is on `PATH`; otherwise skips loudly, or panics under `CI=true`.
fn have(tools: &[&str]) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg =
        format!("{missing:?} not installed; install Debian's qemu-utils, nbdkit and libnbd-bin");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    false
}

/// Runs a tool that must succeed and returns its stdout.
fn run(program: &str, args: &[&str]) -> String {
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

/// A server process, killed on drop.
struct Server {
    child: Child,
    uri: String,
    log: PathBuf,
}

impl Server {
    /// `qemu-nbd` exporting `file` (default export name) with `opts`.
    fn qemu_nbd(dir: &Path, tag: &str, file: &Path, opts: &[&str]) -> Server {
        let sock = dir.join(format!("{tag}.sock"));
        let mut args = vec!["--socket", s(&sock), "--persistent", "--shared=8"];
        args.extend_from_slice(opts);
        args.push(s(file));
        Server::unix(dir, tag, "qemu-nbd", &args, &sock)
    }

    /// `nbdkit ARGS` on a unix socket.
    fn nbdkit(dir: &Path, tag: &str, args: &[&str]) -> Server {
        let sock = dir.join(format!("{tag}.sock"));
        let mut all = vec!["--foreground", "--exit-with-parent", "--unix", s(&sock)];
        all.extend_from_slice(args);
        Server::unix(dir, tag, "nbdkit", &all, &sock)
    }

    fn unix(dir: &Path, tag: &str, program: &str, args: &[&str], sock: &Path) -> Server {
        let uri = format!("nbd+unix:///?socket={}", sock.display());
        let mut srv = Server::spawn(dir, tag, program, args, uri);
        srv.wait_until(|| UnixStream::connect(sock).is_ok());
        srv
    }

    fn spawn(dir: &Path, tag: &str, program: &str, args: &[&str], uri: String) -> Server {
        let log = dir.join(format!("{tag}.log"));
        let out = std::fs::File::create(&log).expect("create log");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Server { child, uri, log }
    }

    fn wait_until(&mut self, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("server exited with {status}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "server not ready: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn connect(&self) -> NbdSource {
        self.connect_with(&NbdOptions::default())
    }

    fn connect_with(&self, opts: &NbdOptions) -> NbdSource {
        NbdSource::connect(&self.uri, opts).unwrap_or_else(|e| panic!("{e}"))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn qemu_io(file: &Path, cmds: &[&str]) {
    let mut args = vec!["-f", "qcow2"];
    for c in cmds {
        args.extend_from_slice(&["-c", c]);
    }
    args.push(s(file));
    run("qemu-io", &args);
}

fn qcow2(dir: &Path, name: &str, size: &str) -> PathBuf {
    let f = dir.join(name);
    run("qemu-img", &["create", "-q", "-f", "qcow2", s(&f), size]);
    f
}

fn nbd_detail(e: Error) -> String {
    match e {
        Error::Nbd { detail, .. } => detail,
        other => panic!("expected Error::Nbd, got {other}"),
    }
}

fn connect_err(uri: &str, opts: &NbdOptions) -> String {
    match NbdSource::connect(uri, opts) {
        Ok(_) => panic!("connecting to {uri} should fail"),
        Err(e) => nbd_detail(e),
    }
}

fn read_all(src: &NbdSource, chunk: u64) -> Vec<u8> {
    let mut out = vec![0; src.len() as usize];
    for (i, part) in out.chunks_mut(chunk as usize).enumerate() {
        src.read_at(i as u64 * chunk, part).expect("read");
    }
    out
}

/// `(offset, len, is_zero)` runs, merged.
fn merged(runs: impl IntoIterator<Item = (u64, u64, bool)>) -> Vec<(u64, u64, bool)> {
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    for (o, l, z) in runs {
        match out.last_mut() {
            Some(last) if last.2 == z && last.0 + last.1 == o => last.1 += l,
            _ => out.push((o, l, z)),
        }
    }
    out
}

fn our_map(src: &NbdSource) -> Vec<(u64, u64, bool)> {
    let extents = src.extents().expect("extents");
    merged(extents.map(|e| {
        let e = e.expect("extent");
        (e.offset, e.len, e.kind == ExtentKind::Zero)
    }))
}

/// `nbdinfo --map --json`: zero where the type has `NBD_STATE_ZERO`.
fn nbdinfo_map(uri: &str) -> Vec<(u64, u64, bool)> {
    let json = run("nbdinfo", &["--map", "--json", uri]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("nbdinfo JSON");
    let runs = v.as_array().expect("array").iter().map(|e| {
        let n = |k: &str| e[k].as_u64().expect("number");
        (n("offset"), n("length"), n("type") & 2 != 0)
    });
    merged(runs)
}

/// Offset-dependent bytes, so misplaced data shows.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn bad_uris_name_the_accepted_forms() {
    for uri in ["http://h/", "nbd+unix:///x", "nbd://:9/", "nbd://h:port/"] {
        let detail = connect_err(uri, &NbdOptions::default());
        assert!(detail.contains("nbd://HOST[:PORT]/EXPORT"), "{detail}");
        assert!(
            detail.contains("nbd+unix:///EXPORT?socket=PATH"),
            "{detail}"
        );
    }
}

#[test]
fn missing_socket_asks_whether_the_server_runs() {
    let dir = tmp();
    let uri = format!(
        "nbd+unix:///?socket={}",
        dir.path().join("none.sock").display()
    );
    let detail = connect_err(&uri, &NbdOptions::default());
    assert!(detail.contains("is the NBD server running?"), "{detail}");
}

#[test]
fn qcow2_reads_like_qemu_img_convert() {
    if !have(&["qemu-img", "qemu-io", "qemu-nbd"]) {
        return;
    }
    let dir = tmp();
    let f = qcow2(dir.path(), "a.qcow2", "16M");
    qemu_io(&f, &["write -P 0xab 1M 3M", "write -P 0x5c 9M 4097"]);
    let raw = dir.path().join("a.raw");
    run("qemu-img", &["convert", "-O", "raw", s(&f), s(&raw)]);
    let want = std::fs::read(&raw).expect("raw");
    let srv = Server::qemu_nbd(dir.path(), "a", &f, &["--format=qcow2", "--read-only"]);
    let src = srv.connect();
    assert_eq!(src.len(), 16 * M);
    assert!(src.is_read_only());
    assert!(
        read_all(&src, M) == want,
        "1 MiB reads differ from qemu-img convert"
    );
    // One read spanning several server pieces (32 MiB cap is not hit, but 16 MiB at once is).
    let mut all = vec![0; 16 * M as usize];
    src.read_at(0, &mut all).expect("whole read");
    assert!(all == want);
    // Unaligned, odd-sized reads.
    for (off, len) in [(1, 1), (M - 3, 7), (9 * M + 4000, 200), (16 * M - 5, 5)] {
        let mut buf = vec![0; len as usize];
        src.read_at(off, &mut buf).expect("read");
        assert_eq!(buf, want[off as usize..(off + len) as usize], "at {off}");
    }
    let detail = nbd_detail(src.read_at(16 * M - 1, &mut [0; 2]).unwrap_err());
    assert!(detail.contains("beyond the export"), "{detail}");
}

#[test]
fn extents_match_nbdinfo() {
    if !have(&["qemu-img", "qemu-io", "qemu-nbd", "nbdinfo"]) {
        return;
    }
    let dir = tmp();
    let f = qcow2(dir.path(), "m.qcow2", "32M");
    qemu_io(
        &f,
        &[
            "write -P 1 1M 3M",
            "write -P 2 8M 2M",
            "write -z 8M 1M",
            "write -P 3 20M 5000",
            "write -P 4 31M 1M",
        ],
    );
    let srv = Server::qemu_nbd(dir.path(), "m", &f, &["--format=qcow2", "--read-only"]);
    let src = srv.connect();
    let ours = our_map(&src);
    assert_eq!(ours, nbdinfo_map(&srv.uri));
    assert!(ours.contains(&(M, 3 * M, false)), "{ours:?}");
    assert_eq!(ours.last(), Some(&(31 * M, M, false)));
    // The extents hold: what is Zero reads as zeros.
    let data = read_all(&src, 4 * M);
    for (o, l, z) in ours {
        if z {
            assert!(data[o as usize..(o + l) as usize].iter().all(|&b| b == 0));
        }
    }
}

#[test]
fn sparse_64g_extents_and_reads_beyond_4g() {
    if !have(&["qemu-img", "qemu-io", "qemu-nbd", "nbdinfo"]) {
        return;
    }
    let dir = tmp();
    let f = qcow2(dir.path(), "big.qcow2", "64G");
    qemu_io(
        &f,
        &[
            "write -P 0x11 1M 1M",
            "write -P 0x22 5G 2M",
            "write -P 0x33 63G 1M",
        ],
    );
    let srv = Server::qemu_nbd(dir.path(), "big", &f, &["--format=qcow2", "--read-only"]);
    let src = srv.connect();
    assert_eq!(src.len(), 64 * G);
    let want = vec![
        (0, M, true),
        (M, M, false),
        (2 * M, 5 * G - 2 * M, true),
        (5 * G, 2 * M, false),
        (5 * G + 2 * M, 58 * G - 2 * M, true),
        (63 * G, M, false),
        (63 * G + M, G - M, true),
    ];
    assert_eq!(our_map(&src), want);
    assert_eq!(nbdinfo_map(&srv.uri), want);
    let mut buf = [0; 6];
    src.read_at(5 * G + 2 * M - 3, &mut buf).expect("read");
    assert_eq!(buf, [0x22, 0x22, 0x22, 0, 0, 0]);
    src.read_at(63 * G - 2, &mut buf).expect("read");
    assert_eq!(buf, [0, 0, 0x33, 0x33, 0x33, 0x33]);
    src.read_at(64 * G - 6, &mut buf).expect("read");
    assert_eq!(buf, [0; 6]);
}

#[test]
fn dirty_bitmap_covers_exactly_the_written_granules() {
    if !have(&["qemu-img", "qemu-io", "qemu-nbd"]) {
        return;
    }
    let dir = tmp();
    let f = qcow2(dir.path(), "d.qcow2", "8G");
    qemu_io(&f, &["write -P 9 0 8M"]); // before the bitmap: not dirty
    run("qemu-img", &["bitmap", "--add", s(&f), "b0"]);
    qemu_io(
        &f,
        &[
            "write -P 1 0 4k",
            "write -P 2 1M 64k",
            "write -P 3 10M 100k",
            "write -z 20M 64k",
            "write -P 4 5G 4k",
        ],
    );
    let srv = Server::qemu_nbd(
        dir.path(),
        "d",
        &f,
        &["--format=qcow2", "--read-only", "--bitmap=b0"],
    );
    let opts = NbdOptions {
        bitmap: Some("b0".into()),
        ..NbdOptions::default()
    };
    let src = srv.connect_with(&opts);
    let want = vec![
        (0, 64 * K),
        (M, 64 * K),
        (10 * M, 128 * K),
        (20 * M, 64 * K),
        (5 * G, 64 * K),
    ];
    assert_eq!(src.dirty_extents().expect("dirty extents"), want);
    // Allocation still works with both contexts selected.
    let map = our_map(&src);
    assert_eq!(map.first(), Some(&(0, 8 * M, false)), "{map:?}");
    assert_eq!(map.last().map(|e| e.0 + e.1), Some(8 * G));

    // Without a bitmap selected, asking for dirty extents is an error, not "nothing dirty".
    let plain = srv.connect();
    assert!(nbd_detail(plain.dirty_extents().unwrap_err()).contains("no dirty bitmap"));
}

#[test]
fn unexported_bitmap_and_unknown_export_are_clear_errors() {
    if !have(&["qemu-img", "qemu-nbd"]) {
        return;
    }
    let dir = tmp();
    let f = qcow2(dir.path(), "e.qcow2", "4M");
    let srv = Server::qemu_nbd(
        dir.path(),
        "e",
        &f,
        &["--format=qcow2", "--read-only", "--export-name=disk"],
    );
    let sock = srv.uri.split_once("socket=").expect("socket").1.to_string();
    let named = format!("nbd+unix:///disk?socket={sock}");
    assert_eq!(
        NbdSource::connect(&named, &NbdOptions::default())
            .expect("named export")
            .len(),
        4 * M
    );
    let detail = connect_err(
        &format!("nbd+unix:///nope?socket={sock}"),
        &NbdOptions::default(),
    );
    assert!(
        detail.contains("export \"nope\" does not exist on the server"),
        "{detail}"
    );
    let opts = NbdOptions {
        bitmap: Some("b0".into()),
        ..NbdOptions::default()
    };
    let detail = connect_err(&named, &opts);
    eprintln!("{detail}");
    assert!(
        detail.contains("dirty bitmap b0 is not exported; start qemu-nbd with --bitmap b0"),
        "{detail}"
    );
}

#[test]
fn server_eio_is_reported_and_does_not_hang() {
    if !have(&["nbdkit"]) {
        return;
    }
    let dir = tmp();
    let srv = Server::nbdkit(
        dir.path(),
        "eio",
        &["--filter=error", "memory", "64M", "error-pread-rate=1"],
    );
    let src = srv.connect();
    let started = Instant::now();
    let mut buf = vec![0; 4 * M as usize];
    let detail = nbd_detail(src.read_at(M, &mut buf).unwrap_err());
    eprintln!("{detail}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(detail.contains("input/output error"), "{detail}");
    assert!(detail.contains("at offset 1048576"), "{detail}");
    assert!(detail.contains("tried 3 times"), "{detail}");
    // A server error leaves the connection usable.
    assert_eq!(our_map(&src), vec![(0, 64 * M, true)]);
}

#[test]
fn without_structured_replies_reads_work_and_bitmaps_fail_clearly() {
    if !have(&["nbdkit"]) {
        return;
    }
    let dir = tmp();
    let srv = Server::nbdkit(dir.path(), "nosr", &["--no-sr", "memory", "1M"]);
    let src = srv.connect();
    assert_eq!(src.len(), M);
    let data = pattern(64 * K as usize, 7);
    src.write_at(128 * K, &data).expect("write");
    let mut back = vec![0; data.len()];
    src.read_at(128 * K, &mut back).expect("read");
    assert!(back == data);
    assert_eq!(
        our_map(&src),
        vec![(0, M, false)],
        "no block status: all data"
    );
    let opts = NbdOptions {
        bitmap: Some("b0".into()),
        ..NbdOptions::default()
    };
    let detail = connect_err(&srv.uri, &opts);
    assert!(
        detail.contains("does not support structured replies, needed for dirty bitmaps"),
        "{detail}"
    );
}

#[test]
fn concurrent_reads_from_8_threads() {
    if !have(&["qemu-nbd"]) {
        return;
    }
    let dir = tmp();
    let raw = dir.path().join("c.raw");
    let want = Arc::new(pattern(48 * M as usize, 42));
    std::fs::write(&raw, &*want).expect("write image");
    let srv = Server::qemu_nbd(dir.path(), "c", &raw, &["--format=raw", "--read-only"]);
    for connections in [1, 4] {
        let src = Arc::new(srv.connect_with(&NbdOptions {
            connections,
            ..NbdOptions::default()
        }));
        std::thread::scope(|scope| {
            for t in 0..8u64 {
                let (src, want) = (Arc::clone(&src), Arc::clone(&want));
                scope.spawn(move || {
                    // Interleaved, odd-sized reads, some spanning server pieces.
                    let step = M + 4099 * t + 1;
                    let mut off = t * 777;
                    let mut buf = vec![0; step as usize];
                    while off + step <= want.len() as u64 {
                        src.read_at(off, &mut buf).expect("read");
                        assert!(buf == want[off as usize..(off + step) as usize], "at {off}");
                        off += step * 8;
                    }
                });
            }
        });
    }
}

#[test]
fn unaligned_reads_on_a_4k_block_export() {
    if !have(&["nbdkit"]) {
        return;
    }
    let dir = tmp();
    let srv = Server::nbdkit(
        dir.path(),
        "bs",
        &[
            "--filter=blocksize-policy",
            "pattern",
            "8M",
            "blocksize-minimum=4096",
            "blocksize-error-policy=error",
        ],
    );
    let src = srv.connect();
    assert_eq!(src.block_size().0, 4096);
    // The pattern plugin stores each 8-byte word's own offset, big-endian.
    // (The plugin's format is big-endian; the byte at `o` is a shift of its word.)
    let word = |o: u64| ((o / 8 * 8) >> (8 * (7 - o % 8))) as u8;
    for (off, len) in [(3, 10), (4095, 2), (M + 100, 70_000), (8 * M - 9, 9)] {
        let mut buf = vec![0; len as usize];
        src.read_at(off, &mut buf).expect("read");
        let want: Vec<u8> = (off..off + len).map(word).collect();
        assert_eq!(buf, want, "at {off}");
    }
}

#[test]
fn tcp_uri_form() {
    if !have(&["nbdkit"]) {
        return;
    }
    let dir = tmp();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let p = port.to_string();
    let args = [
        "--foreground",
        "--exit-with-parent",
        "--ipaddr",
        "127.0.0.1",
        "--port",
        &p,
        "memory",
        "4M",
    ];
    let uri = format!("nbd://127.0.0.1:{port}");
    let mut srv = Server::spawn(dir.path(), "tcp", "nbdkit", &args, uri.clone());
    srv.wait_until(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let src = srv.connect();
    assert_eq!(src.len(), 4 * M);
    src.write_at(M, &[7; 4096]).expect("write");
    let again = NbdSource::connect(&format!("{uri}/"), &NbdOptions::default()).expect("uri/");
    let mut buf = [0; 4096];
    again.read_at(M, &mut buf).expect("read");
    assert_eq!(buf, [7; 4096]);
}

#[test]
fn writes_zeroes_and_flush_reach_the_image() {
    if !have(&["qemu-img", "qemu-nbd"]) {
        return;
    }
    let dir = tmp();
    let f = qcow2(dir.path(), "w.qcow2", "8M");
    let mut srv = Server::qemu_nbd(dir.path(), "w", &f, &["--format=qcow2"]);
    let mut want = vec![0u8; 8 * M as usize];
    {
        let src = srv.connect();
        assert!(!src.is_read_only());
        let a = pattern(3 * M as usize, 1);
        src.write_at(0, &a).expect("write");
        want[..a.len()].copy_from_slice(&a);
        src.write_zeroes(512 * K, M).expect("write zeroes");
        want[512 * K as usize..(512 * K + M) as usize].fill(0);
        let b = pattern(40 * M as usize / 10, 2); // 4 MiB, two pieces at most
        src.write_at(4 * M, &b).expect("write");
        want[4 * M as usize..].copy_from_slice(&b);
        src.flush().expect("flush");
        assert!(read_all(&src, M) == want);
        // The zeroed range is known zero now, so a backup would skip it.
        let map = our_map(&src);
        assert!(
            map.iter()
                .any(|&(o, l, z)| z && o <= 512 * K && o + l >= 512 * K + M),
            "{map:?}"
        );
    }
    srv.kill();
    let raw = dir.path().join("w.raw");
    run("qemu-img", &["convert", "-O", "raw", s(&f), s(&raw)]);
    assert!(
        std::fs::read(&raw).expect("raw") == want,
        "image differs after flush"
    );

    // A read-only export refuses writes up front.
    let ro = Server::qemu_nbd(dir.path(), "ro", &f, &["--format=qcow2", "--read-only"]);
    let src = ro.connect();
    assert!(src.is_read_only());
    assert!(nbd_detail(src.write_at(0, &[1; 512]).unwrap_err()).contains("read-only"));
}

#[test]
fn write_zeroes_without_server_support_writes_zeros() {
    if !have(&["nbdkit"]) {
        return;
    }
    let dir = tmp();
    let srv = Server::nbdkit(dir.path(), "nz", &["--filter=nozero", "memory", "4M"]);
    let src = srv.connect();
    src.write_at(0, &pattern(4 * M as usize, 3)).expect("write");
    src.write_zeroes(M, 2 * M + 4096).expect("write zeroes");
    let data = read_all(&src, M);
    assert!(data[M as usize..(3 * M + 4096) as usize]
        .iter()
        .all(|&b| b == 0));
    assert!(data[(3 * M + 4096) as usize..].iter().any(|&b| b != 0));
}

#[test]
fn dropped_connection_fails_waiting_reads_promptly() {
    if !have(&["nbdkit"]) {
        return;
    }
    let dir = tmp();
    let mut srv = Server::nbdkit(
        dir.path(),
        "drop",
        &["--filter=delay", "memory", "64M", "rdelay=20"],
    );
    let src = srv.connect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        let reads: Vec<_> = (0..3u64)
            .map(|i| {
                let src = &src;
                scope.spawn(move || src.read_at(i * 8 * M, &mut vec![0; 8 * M as usize]))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        srv.kill();
        for r in reads {
            let detail = nbd_detail(r.join().expect("thread").unwrap_err());
            eprintln!("{detail}");
            assert!(
                detail.contains("the server closed the connection"),
                "{detail}"
            );
        }
    });
    assert!(started.elapsed() < Duration::from_secs(10));
    // Later calls fail at once too.
    let detail = nbd_detail(src.read_at(0, &mut [0; 512]).unwrap_err());
    assert!(detail.contains("closed the connection"), "{detail}");
}

#[test]
fn a_hung_server_times_out() {
    if !have(&["nbdkit"]) {
        return;
    }
    let dir = tmp();
    let srv = Server::nbdkit(
        dir.path(),
        "hung",
        &["--filter=delay", "memory", "1M", "rdelay=60"],
    );
    let src = srv.connect_with(&NbdOptions {
        timeout: Duration::from_secs(1),
        ..NbdOptions::default()
    });
    let started = Instant::now();
    let detail = nbd_detail(src.read_at(0, &mut [0; 4096]).unwrap_err());
    assert!(
        detail.contains("no answer from the server within 1 s"),
        "{detail}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Reads a fully written 1 GiB raw image with 3 threads, 1 MiB per `read_at`, and prints
/// MB/s beside `nbdcopy … null:` on the same export. Run with
/// `cargo test --release -p mover --test nbd -- --ignored --nocapture throughput`.
#[test]
#[ignore = "benchmark"]
fn throughput_1gib_raw() {
    if !have(&["qemu-nbd", "nbdcopy"]) {
        return;
    }
    let dir = tmp();
    let raw = dir.path().join("t.raw");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&raw).expect("create");
        let block = pattern(M as usize, 5);
        for _ in 0..1024 {
            f.write_all(&block).expect("write");
        }
    }
    let srv = Server::qemu_nbd(dir.path(), "t", &raw, &["--format=raw", "--read-only"]);
    let src = srv.connect();
    let len = src.len();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..7 {
        let next = std::sync::atomic::AtomicU64::new(0);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    let mut buf = vec![0; M as usize];
                    loop {
                        let off = next.fetch_add(M, std::sync::atomic::Ordering::Relaxed);
                        if off >= len {
                            break;
                        }
                        src.read_at(off, &mut buf).expect("read");
                    }
                });
            }
        });
        ours.push(len as f64 / started.elapsed().as_secs_f64() / 1e6);
        let started = Instant::now();
        run("nbdcopy", &[&srv.uri, "null:"]);
        theirs.push(len as f64 / started.elapsed().as_secs_f64() / 1e6);
        eprintln!(
            "round {round}: NbdSource 3 threads x 1 MiB: {:.0} MB/s; nbdcopy: {:.0} MB/s",
            ours[round], theirs[round]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    eprintln!(
        "median of 7: NbdSource {:.0} MB/s; nbdcopy {:.0} MB/s",
        median(&mut ours),
        median(&mut theirs)
    );
}

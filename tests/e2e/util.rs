//! Helpers: locate and run the `mover` binary (always with a time limit, so a hang fails the
//! test instead of the suite), temporary repositories, test data, and guards for root-only
//! fixtures (tmpfs mounts, loop devices).

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// Time limit for an ordinary command on the few MiB these tests use.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Chunk size that gives many chunks from little data.
pub const CHUNK: usize = 64 << 10;
pub const CHUNK_ARG: &str = "64KiB";
pub const MIB: usize = 1 << 20;

/// The `mover` binary built next to this test executable (`target/<profile>/mover`).
pub fn mover_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("mover");
    assert!(
        bin.is_file(),
        "{} not found: run `cargo build -p mover-cli` (same profile as the tests) first",
        bin.display()
    );
    bin
}

/// A `mover` invocation being built.
pub struct Mover {
    cmd: Command,
    line: String,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

/// `mover ARGS...`, with `MOVER_REPO` removed from the environment.
pub fn mover<I, S>(args: I) -> Mover
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(mover_bin());
    let mut line = String::from("mover");
    for a in args {
        line.push(' ');
        line.push_str(&a.as_ref().to_string_lossy());
        cmd.arg(a);
    }
    cmd.env_remove("MOVER_REPO");
    Mover {
        cmd,
        line,
        stdin: None,
        timeout: DEFAULT_TIMEOUT,
    }
}

impl Mover {
    pub fn stdin(mut self, data: &[u8]) -> Self {
        self.stdin = Some(data.to_vec());
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.cmd.env_remove(key);
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Starts the command with stdin (null unless data was given), stdout and stderr piped.
    /// The caller writes the stdin data, if any.
    pub fn spawn(mut self) -> (Child, String) {
        let piped = self.stdin.is_some();
        self.start(piped)
    }

    fn start(&mut self, stdin_piped: bool) -> (Child, String) {
        self.cmd
            .stdin(if stdin_piped {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.line));
        (child, self.line.clone())
    }

    /// Runs to completion, or kills it once the time limit passes.
    pub fn run(mut self) -> Output {
        let input = self.stdin.take();
        let (mut child, line) = self.start(input.is_some());
        let writer = input.map(|data| {
            let mut pipe = child.stdin.take().expect("stdin piped");
            std::thread::spawn(move || {
                // A mover that stops reading early makes this fail; its exit status tells.
                let _ = pipe.write_all(&data);
            })
        });
        let out = reader(child.stdout.take().expect("stdout piped"));
        let err = reader(child.stderr.take().expect("stderr piped"));
        let (status, timed_out) = wait_timeout(&mut child, self.timeout);
        if let Some(w) = writer {
            let _ = w.join();
        }
        Output {
            line,
            code: status.code(),
            signal: status.signal(),
            stdout: out.join().expect("stdout reader"),
            stderr: String::from_utf8_lossy(&err.join().expect("stderr reader")).into_owned(),
            timed_out,
            timeout: self.timeout,
        }
    }
}

fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// What a spawned child wrote to its piped stderr.
pub fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut s);
    }
    s
}

/// Waits for `child`; kills it (SIGKILL) once `timeout` passes. Returns its status and
/// whether it had to be killed.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> (std::process::ExitStatus, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for mover") {
            return (status, false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return (child.wait().expect("wait for killed mover"), true);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a finished `mover` run did.
pub struct Output {
    pub line: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub timed_out: bool,
    timeout: Duration,
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}`: exit {:?}, signal {:?}{}\n--- stderr ---\n{}--- stdout ({} bytes) ---\n{}",
            self.line,
            self.code,
            self.signal,
            if self.timed_out {
                format!(", HUNG (killed after {:?})", self.timeout)
            } else {
                String::new()
            },
            self.stderr,
            self.stdout.len(),
            String::from_utf8_lossy(&self.stdout[..self.stdout.len().min(2000)]),
        )
    }
}

impl Output {
    /// The exit code; fails the test if mover hung or died from a signal.
    pub fn exit(&self) -> i32 {
        assert!(!self.timed_out, "mover hung:\n{self}");
        self.code
            .unwrap_or_else(|| panic!("mover died from a signal:\n{self}"))
    }

    /// Asserts exit 0.
    pub fn ok(self) -> Self {
        assert_eq!(self.exit(), 0, "expected success:\n{self}");
        self
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8(self.stdout.clone())
            .unwrap_or_else(|_| panic!("stdout is not UTF-8:\n{self}"))
    }

    /// stdout parsed as JSON: the document itself (`snapshots --json`), or for JSON Lines
    /// events the `summary` event.
    pub fn json(&self) -> Value {
        if let Ok(v) = serde_json::from_slice::<Value>(&self.stdout) {
            if v.get("type").is_none_or(|t| t == "summary") {
                return v;
            }
        }
        let events = self.events();
        events
            .into_iter()
            .find(|e| e["type"] == "summary")
            .unwrap_or_else(|| panic!("no summary event on stdout:\n{self}"))
    }

    /// The types of the JSON events on stdout, in order, without `progress` events: those
    /// come once a second, so a slow run may hold some.
    pub fn event_types(&self) -> Vec<Value> {
        self.events()
            .iter()
            .map(|e| e["type"].clone())
            .filter(|t| t != "progress")
            .collect()
    }

    /// stdout as JSON Lines events: every line one event with a type, the schema, a time and
    /// data; the first is `begin`, and a successful run ends with exactly one `summary`.
    pub fn events(&self) -> Vec<Value> {
        let events: Vec<Value> = self
            .stdout_str()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}\n{self}"))
            })
            .collect();
        for e in &events {
            assert!(
                e["type"].is_string()
                    && e["schema"] == 1
                    && e["time"].is_string()
                    && e["data"].is_object(),
                "malformed event {e}:\n{self}"
            );
        }
        assert_eq!(
            events.first().map(|e| &e["type"]),
            Some(&Value::from("begin")),
            "{self}"
        );
        let summaries = events.iter().filter(|e| e["type"] == "summary").count();
        if self.code == Some(0) || self.code == Some(3) {
            assert_eq!(summaries, 1, "one summary event:\n{self}");
            assert_eq!(
                events.last().map(|e| &e["type"]),
                Some(&Value::from("summary")),
                "{self}"
            );
        }
        events
    }

    /// Asserts the exit code, that stderr is exactly one line starting with `mover:`, and
    /// that it contains each of `needles` (case-insensitive).
    pub fn assert_error(&self, code: i32, needles: &[&str]) {
        assert_eq!(self.exit(), code, "wrong exit code:\n{self}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "stderr must be exactly one line:\n{self}");
        assert!(
            lines[0].starts_with("mover: "),
            "stderr must start with `mover: `:\n{self}"
        );
        self.assert_stderr_has(needles);
    }

    pub fn assert_stderr_has(&self, needles: &[&str]) {
        let lower = self.stderr.to_lowercase();
        for n in needles {
            assert!(
                lower.contains(&n.to_lowercase()),
                "stderr should mention {n:?}:\n{self}"
            );
        }
    }
}

/// A temporary directory holding an initialised repository at `<dir>/repo`.
pub struct Env {
    pub dir: TempDir,
    pub repo: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path().join("repo");
        let env = Env { dir, repo };
        let out = mover(["init", "-r"]).arg(&env.repo).run().ok();
        assert!(
            out.stdout.is_empty(),
            "init prints nothing on stdout:\n{out}"
        );
        assert!(env.repo.join("config").is_file(), "init wrote no config");
        env
    }

    /// A path inside the temporary directory (outside the repository).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `mover SUB -r REPO ARGS...`
    pub fn cmd<S: AsRef<OsStr>>(&self, sub: &str, args: &[S]) -> Mover {
        mover([sub, "-r"]).arg(&self.repo).args(args)
    }

    /// Backs up `src` with `--json` (and `--chunk-size 64KiB` unless `extra` sets one);
    /// checks the summary's invariants and returns its `data`.
    pub fn backup(&self, src: impl AsRef<OsStr>, extra: &[&str]) -> Value {
        self.backup_with(src, extra, None)
    }

    pub fn backup_stdin(&self, data: &[u8], extra: &[&str]) -> Value {
        self.backup_with("-", extra, Some(data))
    }

    fn backup_with(&self, src: impl AsRef<OsStr>, extra: &[&str], input: Option<&[u8]>) -> Value {
        let mut m = self.cmd("backup", &["--json"]).arg("--source").arg(src);
        if !extra.contains(&"--chunk-size") {
            m = m.arg("--chunk-size").arg(CHUNK_ARG);
        }
        for a in extra {
            m = m.arg(a);
        }
        if let Some(d) = input {
            m = m.stdin(d);
        }
        let out = m.run().ok();
        out.events();
        check_backup_summary(&out.json(), &out)
    }

    /// Restores `snap` to `dest` (must succeed).
    pub fn restore_to(&self, snap: &str, dest: &Path) {
        self.cmd("restore", &[snap, "--to"]).arg(dest).run().ok();
    }

    /// Restores `snap` to stdout and returns the bytes.
    pub fn restore_stdout(&self, snap: &str) -> Vec<u8> {
        self.cmd("restore", &[snap, "--to", "-"]).run().ok().stdout
    }

    /// `snapshots --json`.
    pub fn snapshots(&self) -> Vec<Value> {
        let out = self.cmd("snapshots", &["--json"]).run().ok();
        out.json()
            .as_array()
            .unwrap_or_else(|| panic!("snapshots --json is an array:\n{out}"))
            .clone()
    }

    /// Every pack file under `packs/*/*` (temporary files excluded).
    pub fn packs(&self) -> Vec<PathBuf> {
        files_under(&self.repo.join("packs"))
            .into_iter()
            .filter(|p| !name_of(p).starts_with('.'))
            .collect()
    }

    /// Total size of every file in the repository.
    pub fn repo_bytes(&self) -> u64 {
        files_under(&self.repo)
            .iter()
            .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

impl Mover {
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.line.push(' ');
        self.line.push_str(&a.as_ref().to_string_lossy());
        self.cmd.arg(a);
        self
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: &[S]) -> Self {
        for a in args {
            self = self.arg(a);
        }
        self
    }
}

/// Checks the documented shape and invariants of a backup summary; returns `data`.
pub fn check_backup_summary(v: &Value, out: &Output) -> Value {
    assert_eq!(v["type"], "summary", "{out}");
    assert_eq!(v["schema"], 1, "{out}");
    let d = v["data"].clone();
    assert_eq!(d["command"], "backup", "{out}");
    let id = d["snapshot_id"].as_str().unwrap_or_default();
    assert!(is_hex_id(id), "snapshot_id is 64 hex digits:\n{out}");
    let n = |k: &str| {
        d[k].as_u64()
            .unwrap_or_else(|| panic!("{k} is a number:\n{out}"))
    };
    assert_eq!(
        n("chunks_total"),
        n("chunks_new") + n("chunks_reused") + n("chunks_zero"),
        "chunks_total = new + reused + zero:\n{out}"
    );
    assert!(n("bytes_read") <= n("source_bytes"), "{out}");
    assert!(n("bytes_new") <= n("bytes_read"), "{out}");
    assert!(n("bytes_zero") <= n("source_bytes"), "{out}");
    d
}

pub fn is_hex_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// `data[key]` as u64.
pub fn num(d: &Value, key: &str) -> u64 {
    d[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or not a number in {d}"))
}

/// `data[key]` as a string.
pub fn text<'a>(d: &'a Value, key: &str) -> &'a str {
    d[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing or not a string in {d}"))
}

pub fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every regular file below `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Deterministic pseudo-random bytes (splitmix64).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A seed that differs between runs (printed by the tests that use it, for reproduction).
pub fn time_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// A name no other test of any run uses at the same time (an S3 prefix): the clock, this
/// process and a counter, since two threads may read the same clock tick.
pub fn unique_name(stem: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{stem}-{:016x}-{}-{n}", time_seed(), std::process::id())
}

pub fn write_file(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A sparse file of `len` bytes holding `data` at each `(offset, data)`; the rest are holes.
pub fn write_sparse(path: &Path, len: u64, islands: &[(u64, &[u8])]) {
    let f = File::create(path).expect("create sparse file");
    f.set_len(len).expect("set_len");
    for (off, data) in islands {
        f.write_all_at(data, *off).expect("write island");
    }
    f.sync_all().expect("fsync sparse file");
}

/// The file's contents as a Vec (a clear panic if it is missing).
pub fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Asserts two byte strings are equal, reporting the first difference rather than dumping
/// megabytes.
#[track_caller]
pub fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: contents differ: got {} bytes, want {}; first difference at byte {first}",
        got.len(),
        want.len()
    );
}

/// Bytes actually allocated to a file.
pub fn allocated(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").blocks() * 512
}

/// True when the filesystem holding `path` keeps holes (the file was written sparse).
pub fn is_sparse(path: &Path) -> bool {
    allocated(path) < fs::metadata(path).expect("stat").len() / 2
}

// ---- root-only fixtures -------------------------------------------------------------------

/// True when running as root. Otherwise skips (loudly), or fails when `CI=true`.
pub fn have_root(what: &str) -> bool {
    let root = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    root || skip(what, "not running as root")
}

/// Reports a test that cannot run here: fails under `CI=true`, otherwise a loud skip.
pub fn skip(what: &str, why: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what}: cannot run here ({why}), and CI=true forbids skipping it");
    }
    eprintln!("\n!!!!!!!! SKIPPED {what}: {why} (set CI=true to make this a failure) !!!!!!!!\n");
    false
}

fn sh(program: &str, args: &[&OsStr]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{program} {:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A tmpfs mounted for the life of the guard.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Result<Self, String> {
        fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let opt = format!("size={size}");
        sh(
            "mount",
            &[
                "-t".as_ref(),
                "tmpfs".as_ref(),
                "-o".as_ref(),
                opt.as_ref(),
                "tmpfs".as_ref(),
                path.as_os_str(),
            ],
        )?;
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if sh("umount", &[self.path.as_os_str()]).is_err() {
            let _ = sh("umount", &["-l".as_ref(), self.path.as_os_str()]);
        }
    }
}

/// Serialises tests that attach loop devices (`losetup -f` picks a free one racily).
pub static LOOP_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A loop device over an image file, detached when dropped.
pub struct LoopDev {
    pub dev: PathBuf,
}

impl LoopDev {
    pub fn attach(img: &Path) -> Result<Self, String> {
        let dev = sh(
            "losetup",
            &["-f".as_ref(), "--show".as_ref(), img.as_os_str()],
        )?;
        Ok(LoopDev {
            dev: PathBuf::from(dev),
        })
    }

    /// Size as the device reports it.
    pub fn size(&self) -> u64 {
        use std::io::Seek;
        let mut f = File::open(&self.dev).expect("open loop device");
        f.seek(std::io::SeekFrom::End(0)).expect("seek loop device")
    }

    pub fn contents(&self) -> Vec<u8> {
        read(&self.dev)
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = sh("losetup", &["-d".as_ref(), self.dev.as_os_str()]);
    }
}

/// True when the filesystem holding `dir` keeps holes in sparse files.
pub fn fs_keeps_holes(dir: &Path) -> bool {
    let probe = dir.join(".sparse-probe");
    write_sparse(&probe, 8 << 20, &[(4 << 20, b"x")]);
    let sparse = is_sparse(&probe);
    let _ = fs::remove_file(&probe);
    if !sparse {
        eprintln!(
            "note: {} keeps no holes; sparse checks skipped",
            dir.display()
        );
    }
    sparse
}

// ---- incrementals, multi-disk, NBD (issue 7) ----------------------------------------------

impl Env {
    /// `backup --json ARGS...` (with `--chunk-size 64KiB` unless `args` sets one) that must
    /// exit `code` (0, or 3 for a commit with warnings); checks the summary's invariants and
    /// returns its `data` and the run.
    pub fn backup_args<S: AsRef<OsStr>>(&self, args: &[S], code: i32) -> (Value, Output) {
        let mut m = self.cmd("backup", &["--json"]);
        if !args.iter().any(|a| a.as_ref() == "--chunk-size") {
            m = m.arg("--chunk-size").arg(CHUNK_ARG);
        }
        let out = m.args(args).run();
        assert_eq!(out.exit(), code, "wrong exit code:\n{out}");
        out.events();
        let d = check_backup_summary(&out.json(), &out);
        let warnings = d["warnings"].as_array().map_or(0, Vec::len);
        assert_eq!(
            warnings > 0,
            code == 3,
            "exit 3 if and only if warnings were recorded:\n{out}"
        );
        (d, out)
    }

    /// How many snapshots the repository lists.
    pub fn snapshot_count(&self) -> usize {
        self.snapshots().len()
    }
}

/// A VMware-style `DiskChangeInfo` document (byte units).
pub fn change_info(start: u64, len: u64, areas: &[(u64, u64)]) -> String {
    let areas: Vec<Value> = areas
        .iter()
        .map(|&(s, l)| serde_json::json!({"start": s, "length": l}))
        .collect();
    serde_json::json!({"startOffset": start, "length": len, "changedArea": areas}).to_string()
}

/// The warnings of a backup summary, lower-cased and joined by newlines.
pub fn warnings_of(d: &Value) -> String {
    d["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("warnings is an array in {d}"))
        .iter()
        .map(|w| w.as_str().unwrap_or_default().to_lowercase())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The program `name` is on PATH. Otherwise skips (loudly), or fails when `CI=true`.
pub fn have_tool(what: &str, name: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|d| fs::metadata(d.join(name)).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
    });
    found || skip(what, &format!("{name} is not installed"))
}

/// The block a delta restore compares inside a chunk that differs: only the 4 KiB blocks that
/// differ are written. A chunk that is a hole in the snapshot is zeroed whole.
pub const DELTA_BLOCK: usize = 4096;

/// The bytes a delta restore writes to turn `current` (holes read as zeros) into `want`.
pub fn delta_cost(current: &[u8], want: &[u8]) -> u64 {
    let mut cost = 0;
    for (cur, w) in current.chunks(CHUNK).zip(want.chunks(CHUNK)) {
        if w.iter().all(|&b| b == 0) {
            if cur.iter().any(|&b| b != 0) {
                cost += w.len() as u64;
            }
            continue;
        }
        cost += cur
            .chunks(DELTA_BLOCK)
            .zip(w.chunks(DELTA_BLOCK))
            .filter(|(a, b)| a != b)
            .map(|(_, b)| b.len() as u64)
            .sum::<u64>();
    }
    cost
}

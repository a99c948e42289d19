//! Tape-style archives (issue 4) through the built binary: `backup --to-archive` to files,
//! volume sets, stdout and a full removable medium; `restore --from-archive` from files,
//! volume sets and stdin, with damaged media reported as exact lost byte ranges (exit 3, or
//! exit 1 with `--strict`); incremental chains with `--catalog`; `archive ls`, `verify`,
//! `import` and `export`; and the archive's size against a repository's.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// The block (record) size these tests write: the smallest, so small images make several.
const BLOCK: u64 = 64 << 10;
const BLOCK_ARG: &str = "64KiB";
/// `mover archive v1`: the first 8 bytes of every frame (docs/ARCHIVE.md).
const MAGIC: [u8; 8] = [0xff, 0x56, 0xc3, 0xe8, 0x60, 0x6c, 0xe5, 0xfe];
const FRAME_HEADER: usize = 64;
const CHUNK_PREFIX: usize = 48;
const FRAME_CHUNK: u8 = 3;

/// `mover backup --json --chunk-size 64KiB --block-size 64KiB --source SRC --to-archive TO`
/// (not yet run; more arguments may follow).
fn backup_to(src: impl AsRef<OsStr>, to: impl AsRef<OsStr>) -> Mover {
    mover([
        "backup",
        "--json",
        "--chunk-size",
        CHUNK_ARG,
        "--block-size",
        BLOCK_ARG,
    ])
    .arg("--source")
    .arg(src)
    .arg("--to-archive")
    .arg(to)
}

/// Runs a `backup --to-archive` that must succeed; checks its summary and returns its `data`
/// (with the `archive` object).
fn archive_backup(m: Mover) -> Value {
    archive_summary(&m.run().ok())
}

/// The checked summary of a successful `backup --json --to-archive` run.
fn archive_summary(out: &Output) -> Value {
    out.events();
    let d = check_backup_summary(&out.json(), out);
    assert!(
        d["archive"].is_object(),
        "summary has an archive object:\n{out}"
    );
    let a = &d["archive"];
    for k in ["volumes", "bytes_written", "chunks", "stored_bytes"] {
        num(a, k);
    }
    assert_eq!(
        text(a, "id").len(),
        32,
        "archive id is 32 hex digits:\n{out}"
    );
    assert!(a["parents"].is_array(), "{out}");
    d
}

/// `mover restore --from-archive A... --to DEST EXTRA...` (not yet run).
fn restore_cmd(archives: &[&Path], dest: &Path, extra: &[&str]) -> Mover {
    let mut m = mover(["restore"]);
    for a in archives {
        m = m.arg("--from-archive").arg(a);
    }
    m.arg("--to").arg(dest).args(extra)
}

/// `mover ARGS...` as a plain `Command`, for pipelines between processes.
fn mover_command<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut c = Command::new(mover_bin());
    c.args(args).env_remove("MOVER_REPO");
    c
}

/// `mover backup --source SRC --to-archive -` (64 KiB chunks and records) as a plain `Command`.
fn backup_to_stdout_command(src: &Path) -> Command {
    let mut c = mover_command(&[
        "backup",
        "--chunk-size",
        CHUNK_ARG,
        "--block-size",
        BLOCK_ARG,
    ]);
    c.arg("--source").arg(src).args(["--to-archive", "-"]);
    c
}

/// Reads `r` to its end on a thread of its own (so a hung writer cannot hang the test).
fn read_in_background(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// A chunk frame found in an archive: where the frame starts and its stored bytes.
struct ChunkFrame {
    at: usize,
    compression: u8,
    stored: std::ops::Range<usize>,
}

/// The chunk frames of an undamaged archive, in order (found by their magic and type; the
/// payload length in the header tells where the stored bytes end).
fn chunk_frames(archive: &[u8]) -> Vec<ChunkFrame> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + FRAME_HEADER <= archive.len() {
        if archive[i..i + 8] != MAGIC {
            i += 1;
            continue;
        }
        let kind = archive[i + 8];
        let len = u32::from_le_bytes(archive[i + 12..i + 16].try_into().unwrap()) as usize;
        if kind == FRAME_CHUNK {
            let p = i + FRAME_HEADER;
            out.push(ChunkFrame {
                at: i,
                compression: archive[p + 40],
                stored: p + CHUNK_PREFIX..p + len,
            });
        }
        i += FRAME_HEADER + len;
    }
    out
}

/// The frame of the chunk holding `data[index * CHUNK..]`, found by its stored bytes (the
/// chunk must be stored uncompressed, as random data is).
fn frame_of_chunk(archive: &[u8], data: &[u8], index: usize) -> ChunkFrame {
    let want = &data[index * CHUNK..(index + 1) * CHUNK];
    chunk_frames(archive)
        .into_iter()
        .find(|f| f.compression == 0 && &archive[f.stored.clone()] == want)
        .unwrap_or_else(|| panic!("no uncompressed chunk frame holds chunk {index}"))
}

/// The lost ranges of `disk` from the restore's `mover: warning: disk NAME: bytes A..B are
/// lost` lines (end exclusive), sorted. A disk's name is its source as given.
pub(crate) fn lost_ranges(out: &Output, disk: &Path) -> Vec<(u64, u64)> {
    let prefix = format!("mover: warning: disk {}: bytes ", disk.display());
    let mut ranges: Vec<(u64, u64)> = out
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let range = rest.split_whitespace().next().unwrap_or_default();
            let (a, b) = range
                .split_once("..")
                .unwrap_or_else(|| panic!("lost range {range:?} is not A..B:\n{out}"));
            let n = |s: &str| {
                s.parse::<u64>()
                    .unwrap_or_else(|_| panic!("lost range {range:?} is not numeric:\n{out}"))
            };
            (n(a), n(b))
        })
        .collect();
    ranges.sort_unstable();
    ranges
}

/// Asserts `got` has `want`'s length, is zero inside `lost` (nothing wrong is written), and
/// equals `want` everywhere else.
#[track_caller]
pub(crate) fn assert_intact_except(got: &[u8], want: &[u8], lost: &[(u64, u64)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: restored length");
    let mut pos = 0usize;
    for &(a, b) in lost {
        let (a, b) = (a as usize, b as usize);
        assert!(
            a >= pos && b <= want.len() && a < b,
            "{what}: bad lost range {a}..{b}"
        );
        assert_same(
            &got[pos..a],
            &want[pos..a],
            &format!("{what}: bytes {pos}..{a}"),
        );
        assert!(
            got[a..b].iter().all(|&x| x == 0),
            "{what}: the lost range {a}..{b} must be left as zeros, not filled with other data"
        );
        pos = b;
    }
    assert_same(&got[pos..], &want[pos..], &format!("{what}: bytes {pos}.."));
}

/// A 4 MiB image of 64 KiB chunks: holes, a chunk of written zeros, random chunks (two of them
/// the same), compressible text and a short random tail chunk.
fn mixed_sparse_image(path: &Path) -> Vec<u8> {
    let len = 4 * MIB as u64 + 12_345;
    let dup = random_bytes(CHUNK, 4001);
    let text: Vec<u8> = (0..3 * CHUNK)
        .map(|i| b"the quick brown fox jumps over the lazy dog, "[i % 45])
        .collect();
    let zeros = vec![0u8; CHUNK];
    let tail = random_bytes(12_345, 4002);
    let random = random_bytes(2 * CHUNK + 777, 4003);
    let islands: Vec<(u64, &[u8])> = vec![
        (0, &dup),
        (CHUNK as u64, &zeros), // written zeros: a zero chunk, not a hole
        (5 * CHUNK as u64, &text),
        (20 * CHUNK as u64, &dup), // the same chunk again: stored once
        (40 * CHUNK as u64, &random),
        (4 * MIB as u64, &tail),
    ];
    write_sparse(path, len, &islands);
    read(path)
}

// ---- 1. file archive round trip -------------------------------------------------------------

#[test]
fn archive_file_round_trip_keeps_holes_and_stores_duplicates_once() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    let data = mixed_sparse_image(&src);
    let arc = dir.path().join("disk.arc");

    let d = archive_backup(backup_to(&src, &arc));
    let a = &d["archive"];
    assert_eq!(num(a, "volumes"), 1, "{d}");
    assert_eq!(
        num(a, "bytes_written"),
        fs::metadata(&arc).unwrap().len(),
        "{d}"
    );
    assert_eq!(
        fs::metadata(&arc).unwrap().len() % BLOCK,
        0,
        "whole records"
    );
    assert_eq!(
        num(a, "chunks"),
        num(&d, "chunks_new"),
        "the archive holds exactly the new chunks: {d}"
    );
    assert!(
        num(&d, "chunks_reused") >= 1,
        "the duplicate chunk is stored once: {d}"
    );
    assert!(
        num(&d, "chunks_zero") >= 1,
        "written zeros are recorded, not stored: {d}"
    );
    assert!(
        num(a, "bytes_written") < 10 * CHUNK as u64 + 4 * BLOCK,
        "holes and zeros are not stored: {d}"
    );

    let out = dir.path().join("restored.img");
    let r = restore_cmd(&[&arc], &out, &[]).run().ok();
    assert!(
        r.stdout.is_empty(),
        "restore to a file prints nothing on stdout:\n{r}"
    );
    assert_same(&read(&out), &data, "restored from the archive");
    if fs_keeps_holes(dir.path()) {
        assert!(
            is_sparse(&out),
            "the restored file is sparse ({} allocated)",
            allocated(&out)
        );
    }

    let ls = mover(["archive", "ls"]).arg(&arc).run().ok();
    let human = ls.stdout_str();
    let name = src.to_string_lossy();
    assert!(human.contains(&*name), "ls names the disk:\n{ls}");
    assert!(human.contains("4.0 MiB"), "ls shows the disk's size:\n{ls}");
    assert!(
        human.contains(text(a, "id")),
        "ls shows the archive id:\n{ls}"
    );
    let ls = mover(["archive", "ls", "--json"]).arg(&arc).run().ok();
    let v = ls.json();
    assert_eq!(
        v["data"]["disks"],
        serde_json::json!([{"name": name, "size": data.len()}]),
        "{ls}"
    );
    assert_eq!(v["data"]["parents"], serde_json::json!([]), "{ls}");

    let ver = mover(["archive", "verify"]).arg(&arc).run();
    assert_eq!(ver.exit(), 0, "a clean archive verifies:\n{ver}");
    assert!(!ver.stderr.contains("warning"), "{ver}");
}

// ---- 2. stdout -> stdin pipe ----------------------------------------------------------------

#[test]
fn archive_to_stdout_piped_into_restore_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    let data = mixed_sparse_image(&src);

    // What backup writes on stdout is the archive and nothing else.
    let b = backup_to(&src, "-").run().ok();
    assert!(!b.stdout.is_empty(), "{b}");
    assert_eq!(
        b.stdout.len() as u64 % BLOCK,
        0,
        "stdout is a whole number of {BLOCK}-byte records, nothing else:\n{b}"
    );
    assert_eq!(
        b.stdout[..8],
        MAGIC,
        "stdout starts with the archive's first frame"
    );
    let summary = b
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["type"] == "summary")
        .unwrap_or_else(|| panic!("the JSON summary goes to stderr:\n{b}"));
    assert_eq!(
        num(&summary["data"]["archive"], "bytes_written"),
        b.stdout.len() as u64,
        "{b}"
    );
    let r = mover(["restore", "--from-archive", "-", "--to", "-"])
        .stdin(&b.stdout)
        .run()
        .ok();
    assert_same(&r.stdout, &data, "restored from the captured stream");

    // The same as a real pipeline between the two processes.
    let mut backup = backup_to_stdout_command(&src)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut restore = mover_command(&["restore", "--from-archive", "-", "--to", "-"])
        .stdin(Stdio::from(backup.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let got = read_in_background(restore.stdout.take().unwrap());
    let err = read_in_background(restore.stderr.take().unwrap());
    let (bs, bhung) = wait_timeout(&mut backup, DEFAULT_TIMEOUT);
    let (rs, rhung) = wait_timeout(&mut restore, DEFAULT_TIMEOUT);
    let (got, err) = (got.join().unwrap(), err.join().unwrap());
    let err = String::from_utf8_lossy(&err);
    assert!(!bhung && !rhung, "the pipeline hung:\n{err}");
    assert!(bs.success(), "backup in the pipeline: {bs}");
    assert!(rs.success(), "restore in the pipeline: {rs}\n{err}");
    assert_same(
        &got,
        &data,
        "backup --to-archive - | restore --from-archive - --to -",
    );
}

// ---- 3. broken pipe -------------------------------------------------------------------------

#[test]
fn archive_to_a_reader_that_closes_early_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.img");
    write_file(&src, &random_bytes(8 * MIB, 4101));
    let mut backup = backup_to_stdout_command(&src)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = Command::new("head")
        .args(["-c", "1000"])
        .stdin(Stdio::from(backup.stdout.take().unwrap()))
        .stdout(Stdio::null())
        .spawn()
        .expect("run head");
    let err = read_in_background(backup.stderr.take().unwrap());
    let (hs, _) = wait_timeout(&mut head, Duration::from_secs(20));
    assert!(hs.success(), "head: {hs}");
    let (status, hung) = wait_timeout(&mut backup, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    assert!(
        !hung,
        "backup --to-archive - | head -c 1000: mover did not exit:\n{err}"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "backup --to-archive - | head -c 1000 must fail with exit 1, got {status}:\n{err}"
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one error line on stderr:\n{err}");
    assert!(lines[0].starts_with("mover: "), "{err}");
    assert!(
        err.to_lowercase().contains("pipe"),
        "the error says the pipe broke:\n{err}"
    );
}

// ---- 4. volumes ----------------------------------------------------------------------------

/// The files `NAME.000`, `NAME.001`, … next to `base`, in order.
fn volume_files(base: &Path) -> Vec<PathBuf> {
    (0..)
        .map(|n| PathBuf::from(format!("{}.{n:03}", base.display())))
        .take_while(|p| p.exists())
        .collect()
}

#[test]
fn volumes_split_restore_and_a_missing_volume_loses_only_its_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    let data = random_bytes(8 * MIB, 4201);
    write_file(&src, &data);
    let base = dir.path().join("set");
    let volume_size = MIB as u64;
    let d = archive_backup(backup_to(&src, &base).args(&["--volume-size", "1MiB"]));
    assert!(
        !base.exists(),
        "with --volume-size only NAME.NNN files are written"
    );
    let vols = volume_files(&base);
    assert!(
        vols.len() >= 8,
        "8 MiB of random data in 1 MiB volumes: {vols:?}"
    );
    assert_eq!(num(&d["archive"], "volumes"), vols.len() as u64, "{d}");
    let mut total = 0;
    for v in &vols {
        let len = fs::metadata(v).unwrap().len();
        assert!(
            len > 0 && len % BLOCK == 0,
            "{} is {len} bytes: whole records",
            v.display()
        );
        assert!(
            len <= volume_size,
            "{} is {len} bytes, over the volume size",
            v.display()
        );
        total += len;
    }
    assert_eq!(num(&d["archive"], "bytes_written"), total, "{d}");

    let out = dir.path().join("restored.img");
    restore_cmd(&[&base], &out, &[]).run().ok();
    assert_same(&read(&out), &data, "restored from the volume set");

    // Lose a volume in the middle.
    let gone = dir.path().join("gone");
    fs::rename(&vols[3], &gone).unwrap();
    let out2 = dir.path().join("restored2.img");
    let r = restore_cmd(&[&base], &out2, &[]).run();
    assert_eq!(
        r.exit(),
        3,
        "a missing volume: restore what is intact, exit 3:\n{r}"
    );
    assert!(r.stderr.contains("mover: warning:"), "{r}");
    let lost = lost_ranges(&r, &src);
    assert!(!lost.is_empty(), "the lost byte ranges are reported:\n{r}");
    let lost_bytes: u64 = lost.iter().map(|(a, b)| b - a).sum();
    assert!(
        lost_bytes >= volume_size / 2 && lost_bytes <= volume_size + 2 * CHUNK as u64,
        "about one volume's worth is lost, not {lost_bytes} bytes:\n{r}"
    );
    assert!(
        lost[0].0 > 0 && lost.last().unwrap().1 < data.len() as u64,
        "{r}"
    );
    assert_intact_except(&read(&out2), &data, &lost, "missing volume 3");
    restore_damaged_to_stdout(&[&base], &src, &data, &lost, "missing volume 3");

    let out3 = dir.path().join("restored3.img");
    let r = restore_cmd(&[&base], &out3, &["--strict"]).run();
    assert_eq!(r.exit(), 1, "--strict stops at the missing volume:\n{r}");
    assert!(!out3.exists(), "--strict leaves no destination file");

    let v = mover(["archive", "verify"]).arg(&base).run();
    assert_eq!(v.exit(), 1, "verify of a set with a missing volume:\n{v}");
}

// ---- 5. end of medium on a small tmpfs -----------------------------------------------------

#[test]
fn full_medium_runs_the_next_volume_hook_and_the_volumes_restore() {
    let what = "archive onto a full removable medium";
    if !have_root(what) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let _mount = match Tmpfs::mount(&mnt, "1m") {
        Ok(m) => m,
        Err(e) => {
            skip(what, &format!("cannot mount a tmpfs: {e}"));
            return;
        }
    };
    let src = dir.path().join("disk.img");
    let data = random_bytes(3 * MIB + 4321, 4301);
    write_file(&src, &data);
    let arc = mnt.join("tape");
    let log = dir.path().join("hook.log");
    // The operator's hook: take the full medium away (to outside the tmpfs) and record which
    // volume comes next.
    let hook = r#"mv "$ARC" "$KEEP/vol.$((MOVER_VOLUME - 1))" && echo "$MOVER_VOLUME" >> "$KEEP/hook.log""#;
    let out = backup_to(&src, &arc)
        .args(&["--next-volume", hook])
        .env("ARC", &arc)
        .env("KEEP", dir.path())
        .run()
        .ok();
    let d = archive_summary(&out);
    let n = num(&d["archive"], "volumes") as usize;
    assert!(
        n >= 4,
        "3 MiB on a 1 MiB medium needs at least 4 volumes: {d}"
    );
    let hooks: Vec<String> = fs::read_to_string(&log)
        .expect("the hook ran")
        .lines()
        .map(String::from)
        .collect();
    let want: Vec<String> = (1..n).map(|v| v.to_string()).collect();
    assert_eq!(
        hooks, want,
        "the hook ran before each further volume with MOVER_VOLUME"
    );
    fs::copy(&arc, dir.path().join(format!("vol.{}", n - 1))).expect("the last volume");

    let mut stream = Vec::new();
    for v in 0..n {
        stream.extend(read(&dir.path().join(format!("vol.{v}"))));
    }
    let r = mover(["restore", "--from-archive", "-", "--to", "-"])
        .stdin(&stream)
        .run()
        .ok();
    assert!(
        !r.stderr.contains("warning"),
        "a clean volume sequence:\n{r}"
    );
    assert_same(&r.stdout, &data, "restored from the volumes in order");
    mover(["archive", "verify", "-"]).stdin(&stream).run().ok();
}

// ---- 6. damaged archives --------------------------------------------------------------------

struct Damaged {
    dir: tempfile::TempDir,
    src: PathBuf,
    data: Vec<u8>,
    arc: PathBuf,
    bytes: Vec<u8>,
}

/// A 2 MiB random image (32 chunks, each stored uncompressed) in a one-file archive.
fn damaged_fixture(seed: u64) -> Damaged {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    let data = random_bytes(2 * MIB, seed);
    write_file(&src, &data);
    let arc = dir.path().join("disk.arc");
    archive_backup(backup_to(&src, &arc));
    let bytes = read(&arc);
    assert_eq!(chunk_frames(&bytes).len(), 32, "one frame per chunk");
    Damaged {
        dir,
        src,
        data,
        arc,
        bytes,
    }
}

impl Damaged {
    /// Restores the damaged archive: exit 3, the report's lost ranges are `want_lost`, every
    /// other byte is the source's. Then `--strict` (exit 1, no file) and `verify` (exit 1).
    fn check(&self, how: &str, want_lost: &[(u64, u64)]) {
        let out = self.dir.path().join("restored.img");
        let r = restore_cmd(&[&self.arc], &out, &[]).run();
        assert_eq!(r.exit(), 3, "{how}: restore what is intact, exit 3:\n{r}");
        let lost = lost_ranges(&r, &self.src);
        assert_eq!(lost, want_lost, "{how}: the lost ranges of the disk:\n{r}");
        assert_intact_except(&read(&out), &self.data, &lost, how);

        let strict = self.dir.path().join("strict.img");
        let r = restore_cmd(&[&self.arc], &strict, &["--strict"]).run();
        assert_eq!(r.exit(), 1, "{how}: --strict fails:\n{r}");
        assert!(
            !strict.exists(),
            "{how}: --strict leaves no destination file"
        );

        let v = mover(["archive", "verify"]).arg(&self.arc).run();
        assert_eq!(v.exit(), 1, "{how}: verify reports the damage:\n{v}");

        restore_damaged_to_stdout(&[&self.arc], &self.src, &self.data, want_lost, how);
    }
}

/// Restores damaged `archives` to stdout: exit 3, the same lost ranges reported as for a file,
/// and a stream of the disk's length that is zero inside them and the source elsewhere.
fn restore_damaged_to_stdout(
    archives: &[&Path],
    src: &Path,
    data: &[u8],
    want_lost: &[(u64, u64)],
    how: &str,
) {
    let mut m = mover(["restore"]);
    for a in archives {
        m = m.arg("--from-archive").arg(a);
    }
    let r = m.args(&["--to", "-"]).run();
    // The image is binary: show the command, exit code and stderr, not the bytes.
    let shown = format!(
        "`{}`: exit {:?}, {} bytes on stdout (the disk has {})\n--- stderr ---\n{}",
        r.line,
        r.code,
        r.stdout.len(),
        data.len(),
        r.stderr
    );
    assert_eq!(r.exit(), 3, "{how}, to stdout: exit 3:\n{shown}");
    let lost = lost_ranges(&r, src);
    assert_eq!(
        lost, want_lost,
        "{how}, to stdout: the lost ranges:\n{shown}"
    );
    assert_intact_except(&r.stdout, data, want_lost, &format!("{how}, to stdout"));
}

const DAMAGED_CHUNK: usize = 10;

fn chunk_range(index: usize) -> (u64, u64) {
    ((index * CHUNK) as u64, ((index + 1) * CHUNK) as u64)
}

#[test]
fn damage_flipped_byte_in_a_chunk_loses_that_chunk_only() {
    let fx = damaged_fixture(4401);
    let f = frame_of_chunk(&fx.bytes, &fx.data, DAMAGED_CHUNK);
    let mut bytes = fx.bytes.clone();
    bytes[f.stored.start + 1000] ^= 0x40;
    write_file(&fx.arc, &bytes);
    fx.check("a flipped byte", &[chunk_range(DAMAGED_CHUNK)]);
}

#[test]
fn damage_flipped_byte_in_a_frame_header_loses_that_chunk_only() {
    let fx = damaged_fixture(4402);
    let f = frame_of_chunk(&fx.bytes, &fx.data, DAMAGED_CHUNK);
    let mut bytes = fx.bytes.clone();
    bytes[f.at + 13] ^= 0x01; // the payload length
    write_file(&fx.arc, &bytes);
    fx.check("a flipped length", &[chunk_range(DAMAGED_CHUNK)]);
}

#[test]
fn damage_garbage_inside_a_chunk_frame_loses_that_chunk_only() {
    let fx = damaged_fixture(4403);
    let f = frame_of_chunk(&fx.bytes, &fx.data, DAMAGED_CHUNK);
    let at = f.stored.start + 5000;
    let mut bytes = fx.bytes[..at].to_vec();
    bytes.extend(random_bytes(100_000, 4404));
    bytes.extend(&fx.bytes[at..]);
    write_file(&fx.arc, &bytes);
    fx.check("garbage inserted", &[chunk_range(DAMAGED_CHUNK)]);
}

#[test]
fn damage_truncated_archive_keeps_everything_before_the_cut() {
    let fx = damaged_fixture(4405);
    let f = frame_of_chunk(&fx.bytes, &fx.data, DAMAGED_CHUNK);
    write_file(&fx.arc, &fx.bytes[..f.stored.start + 30_000]);
    fx.check(
        "a truncated archive",
        &[(chunk_range(DAMAGED_CHUNK).0, fx.data.len() as u64)],
    );
}

// ---- 7. incremental chains with --catalog --------------------------------------------------

struct Chain {
    dir: tempfile::TempDir,
    old: Vec<u8>,
    new: Vec<u8>,
    full: PathBuf,
    inc: PathBuf,
    full_id: String,
    catalog: PathBuf,
}

/// Chunks an incremental changes (of 64).
const CHANGED: [usize; 3] = [5, 20, 41];

/// A 4 MiB random image archived full with `--catalog`, then 3 chunks changed and archived
/// as an incremental of it.
fn chain() -> Chain {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    let old = random_bytes(4 * MIB, 4501);
    write_file(&src, &old);
    let catalog = dir.path().join("catalog.json");
    let full = dir.path().join("full.arc");
    let inc = dir.path().join("inc.arc");
    let backup = |to: &Path| backup_to(&src, to).arg("--catalog").arg(&catalog);
    let f = archive_backup(backup(&full));
    assert_eq!(num(&f["archive"], "chunks"), 64, "{f}");
    assert!(
        catalog.is_file(),
        "the catalog is written after the full archive"
    );
    let full_id = text(&f["archive"], "id").to_string();

    let mut new = old.clone();
    for &c in &CHANGED {
        new[c * CHUNK + 100..c * CHUNK + 200].copy_from_slice(&random_bytes(100, c as u64));
    }
    write_file(&src, &new);
    let i = archive_backup(backup(&inc).args(&["--parent", "latest"]));
    assert_eq!(
        num(&i["archive"], "chunks"),
        CHANGED.len() as u64,
        "the incremental holds only the changed chunks: {i}"
    );
    assert_eq!(i["archive"]["parents"], serde_json::json!([full_id]), "{i}");
    let (fl, il) = (
        fs::metadata(&full).unwrap().len(),
        fs::metadata(&inc).unwrap().len(),
    );
    assert!(
        il * 10 < fl,
        "the incremental ({il} bytes) is much smaller than the full ({fl} bytes)"
    );
    Chain {
        dir,
        old,
        new,
        full,
        inc,
        full_id,
        catalog,
    }
}

#[test]
fn incremental_chain_restores_and_needs_its_parent() {
    let c = chain();
    let out = c.dir.path().join("restored.img");
    restore_cmd(&[&c.full, &c.inc], &out, &[]).run().ok();
    assert_same(&read(&out), &c.new, "full + incremental");
    let out = c.dir.path().join("full-only.img");
    restore_cmd(&[&c.full], &out, &[]).run().ok();
    assert_same(&read(&out), &c.old, "the full alone is the old image");

    let ls = mover(["archive", "ls", "--json"]).arg(&c.inc).run().ok();
    assert_eq!(
        ls.json()["data"]["parents"],
        serde_json::json!([c.full_id]),
        "{ls}"
    );

    let lone = c.dir.path().join("lone.img");
    let r = restore_cmd(&[&c.inc], &lone, &[]).run();
    r.assert_error(1, &[&c.full_id]);
    assert!(!lone.exists(), "no destination file without the parent");

    // A failed backup leaves the catalog as it was, and no archive.
    let before = read(&c.catalog);
    let bad = c.dir.path().join("bad.arc");
    let missing = c.dir.path().join("no-such.img");
    let r = backup_to(&missing, &bad)
        .arg("--catalog")
        .arg(&c.catalog)
        .args(&["--parent", "latest"])
        .run();
    assert_eq!(r.exit(), 1, "{r}");
    assert_eq!(
        read(&c.catalog),
        before,
        "the catalog is unchanged by a failed backup"
    );
    assert!(!bad.exists(), "a failed backup leaves no archive file");
}

// ---- 8. import and export -------------------------------------------------------------------

/// `mover archive SUB -r REPO`.
fn archive_cmd(env: &Env, sub: &str) -> Mover {
    mover(["archive", sub, "-r"]).arg(&env.repo)
}

#[test]
fn import_chain_into_a_repository_and_export_a_virtual_full() {
    let c = chain();
    let env = Env::new();
    archive_cmd(&env, "import").arg(&c.full).run().ok();
    archive_cmd(&env, "import").arg(&c.inc).run().ok();
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert_same(
        &env.restore_stdout("latest"),
        &c.new,
        "imported chain, latest",
    );

    // An incremental alone cannot be imported: exit 1, no snapshot.
    let empty = Env::new();
    let r = archive_cmd(&empty, "import").arg(&c.inc).run();
    r.assert_error(1, &["import"]);
    assert!(empty.snapshots().is_empty(), "nothing committed");

    // A virtual full of the latest snapshot restores on its own.
    let exp = c.dir.path().join("export.arc");
    archive_cmd(&env, "export")
        .args(&["latest", "--block-size", BLOCK_ARG, "--to"])
        .arg(&exp)
        .run()
        .ok();
    assert_eq!(fs::metadata(&exp).unwrap().len() % BLOCK, 0);
    let ls = mover(["archive", "ls", "--json"]).arg(&exp).run().ok();
    assert_eq!(
        ls.json()["data"]["parents"],
        serde_json::json!([]),
        "a full: {ls}"
    );
    mover(["archive", "verify"]).arg(&exp).run().ok();
    let r = mover(["restore", "--from-archive"])
        .arg(&exp)
        .args(&["--to", "-"])
        .run()
        .ok();
    assert_same(&r.stdout, &c.new, "restored from the exported archive");
}

#[test]
fn export_of_a_damaged_snapshot_fails_and_leaves_no_archive() {
    let env = Env::new();
    let src = env.path("disk.img");
    write_file(&src, &random_bytes(2 * MIB, 4601));
    env.backup(&src, &[]);
    let packs = env.packs();
    assert_eq!(packs.len(), 1, "{packs:?}");
    let mut pack = read(&packs[0]);
    let mid = pack.len() / 2;
    pack[mid] ^= 0x5a;
    write_file(&packs[0], &pack);

    let exp = env.path("export.arc");
    let r = archive_cmd(&env, "export")
        .args(&["latest", "--to"])
        .arg(&exp)
        .run();
    assert_eq!(r.exit(), 1, "export of a damaged snapshot fails:\n{r}");
    assert!(r.stderr.starts_with("mover: "), "{r}");
    let left: Vec<_> = fs::read_dir(env.dir.path())
        .unwrap()
        .flatten()
        .map(|e| name_of(&e.path()))
        .filter(|n| n.contains("export"))
        .collect();
    assert!(
        left.is_empty(),
        "a failed export leaves no archive file: {left:?}"
    );
}

// ---- 9. multi-disk archives -----------------------------------------------------------------

#[test]
fn multi_disk_archive_restores_each_disk_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.img"), dir.path().join("b.img"));
    let da = mixed_sparse_image(&pa);
    let db = random_bytes(MIB + 333, 4701);
    write_file(&pb, &db);
    let arc = dir.path().join("vm.arc");
    let (sa, sb) = (
        format!("alpha={}", pa.display()),
        format!("beta={}", pb.display()),
    );
    let d = archive_backup(backup_to(&sa, &arc).args(&["--source", &sb, "--name", "vm"]));
    assert_eq!(text(&d, "name"), "vm", "{d}");

    let ls = mover(["archive", "ls", "--json"]).arg(&arc).run().ok();
    assert_eq!(
        ls.json()["data"]["disks"],
        serde_json::json!([{"name": "alpha", "size": da.len()}, {"name": "beta", "size": db.len()}]),
        "{ls}"
    );
    for (disk, want) in [("alpha", &da), ("beta", &db)] {
        let out = dir.path().join(format!("{disk}.out"));
        restore_cmd(&[&arc], &out, &["--disk", disk]).run().ok();
        assert_same(&read(&out), want, disk);
    }
    let out = dir.path().join("which.out");
    let r = restore_cmd(&[&arc], &out, &[]).run();
    r.assert_error(1, &["alpha", "beta", "--disk"]);
    assert!(
        !out.exists(),
        "no destination file when the disk is not named"
    );
}

// ---- 10. a stream source --------------------------------------------------------------------

#[test]
fn stdin_source_into_an_archive_on_stdout_and_back() {
    let mut data = random_bytes(MIB, 4801);
    data.extend_from_within(..300_000); // repeated content, shifted
    data.extend(vec![0u8; 200_000]);
    data.extend(random_bytes(77_777, 4802));
    let b = backup_to("-", "-").stdin(&data).run().ok();
    assert_eq!(b.stdout.len() as u64 % BLOCK, 0, "{b}");
    let r = mover(["restore", "--from-archive", "-", "--to", "-"])
        .stdin(&b.stdout)
        .run()
        .ok();
    assert_same(&r.stdout, &data, "stdin -> archive -> stdout");

    let dir = tempfile::tempdir().unwrap();
    let arc = dir.path().join("stream.arc");
    let d = archive_backup(backup_to("-", &arc).stdin(&data));
    assert_eq!(num(&d, "source_bytes"), data.len() as u64, "{d}");
    let out = dir.path().join("restored");
    restore_cmd(&[&arc], &out, &[]).run().ok();
    assert_same(&read(&out), &data, "stdin -> archive file -> file");
    // `archive ls` reads the whole archive, manifest included: it knows the disk's size even
    // though the header, written before the stream was read, could not.
    let ls = mover(["archive", "ls", "--json"]).arg(&arc).run().ok();
    assert_eq!(
        ls.json()["data"]["disks"],
        serde_json::json!([{"name": "stdin", "size": data.len()}]),
        "archive ls of a stream source's archive shows its size:\n{ls}"
    );
}

// ---- 11. archive size against a repository -------------------------------------------------

#[test]
fn archive_size_is_within_2_percent_of_the_repository() {
    let env = Env::new();
    let src = env.path("mixed.img");
    let mut data = random_bytes(2 * MIB, 4901);
    let text = b"0123456789 lorem ipsum dolor sit amet, ";
    data.extend((0..2 * MIB).map(|i| text[(i * 7 / 5) % text.len()]));
    data.extend(vec![0u8; MIB]);
    data.extend_from_within(..MIB); // duplicates
    data.extend(random_bytes(MIB / 2 + 1234, 4902));
    write_file(&src, &data);

    let repo = env.backup(&src, &[]);
    let repo_bytes = env.repo_bytes();
    let arc = env.path("mixed.arc");
    let d = archive_backup(backup_to(&src, &arc));
    let arc_bytes = fs::metadata(&arc).unwrap().len();
    assert_eq!(
        num(&d["archive"], "stored_bytes"),
        num(&repo, "bytes_stored"),
        "the same chunks compress to the same bytes: archive {d}\nrepository {repo}"
    );
    let limit = repo_bytes + repo_bytes / 50 + BLOCK;
    assert!(
        arc_bytes <= limit,
        "archive {arc_bytes} bytes > repository {repo_bytes} bytes + 2% + one record"
    );
    eprintln!(
        "archive {arc_bytes} bytes, repository {repo_bytes} bytes ({:.4})",
        arc_bytes as f64 / repo_bytes as f64
    );
}

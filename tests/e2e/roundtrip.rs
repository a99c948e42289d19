//! restore(backup(x)) == x for assorted images, through every source and destination kind:
//! image file -> file, image file -> stdout, stdin -> file, stdin -> stdout.

use serde_json::Value;

use crate::util::*;

/// Backs `src` up as an image and from stdin, restores each to a file and to stdout, and
/// checks every result against the source. Returns the image backup's summary.
pub fn roundtrip_all(env: &Env, src: &std::path::Path) -> Value {
    let want = read(src);
    let image = env.backup(src, &[]);
    assert_eq!(num(&image, "source_bytes"), want.len() as u64, "{image}");
    assert_eq!(num(&image, "chunk_size"), CHUNK as u64, "{image}");
    assert_eq!(text(&image, "chunking"), "fixed", "{image}");
    let id = text(&image, "snapshot_id").to_string();

    let dest = env.path("restored.img");
    env.restore_to(&id, &dest);
    assert_same(&read(&dest), &want, "image -> file");
    std::fs::remove_file(&dest).expect("remove restored file");
    assert_same(&env.restore_stdout(&id), &want, "image -> stdout");

    let stream = env.backup_stdin(&want, &[]);
    assert_eq!(num(&stream, "source_bytes"), want.len() as u64, "{stream}");
    assert_eq!(text(&stream, "chunking"), "fastcdc", "{stream}");
    assert_eq!(text(&stream, "name"), "stdin", "{stream}");
    let sid = text(&stream, "snapshot_id").to_string();
    let sdest = env.path("restored-stdin.img");
    env.restore_to(&sid, &sdest);
    assert_same(&read(&sdest), &want, "stdin -> file");
    std::fs::remove_file(&sdest).expect("remove restored file");
    assert_same(&env.restore_stdout(&sid), &want, "stdin -> stdout");
    image
}

#[test]
fn empty_file() {
    let env = Env::new();
    let src = env.path("empty.img");
    write_file(&src, b"");
    let d = roundtrip_all(&env, &src);
    assert_eq!(num(&d, "chunks_total"), 0, "{d}");
    assert_eq!(num(&d, "bytes_read"), 0, "{d}");
}

#[test]
fn one_byte() {
    let env = Env::new();
    let src = env.path("one.img");
    write_file(&src, b"\x7f");
    let d = roundtrip_all(&env, &src);
    assert_eq!(num(&d, "chunks_total"), 1, "{d}");
    assert_eq!(num(&d, "bytes_new"), 1, "{d}");
}

#[test]
fn one_zero_byte() {
    let env = Env::new();
    let src = env.path("zero1.img");
    write_file(&src, b"\0");
    let d = roundtrip_all(&env, &src);
    assert_eq!(num(&d, "chunks_zero"), 1, "{d}");
}

#[test]
fn size_not_a_multiple_of_the_chunk_size() {
    let env = Env::new();
    let src = env.path("odd.img");
    let len = 2 * MIB + 12_345;
    write_file(&src, &random_bytes(len, 11));
    let d = roundtrip_all(&env, &src);
    assert_eq!(num(&d, "chunks_total"), len.div_ceil(CHUNK) as u64, "{d}");
    assert_eq!(num(&d, "bytes_read"), len as u64, "{d}");
    assert_eq!(num(&d, "bytes_new"), len as u64, "{d}");
}

#[test]
fn random_data() {
    let env = Env::new();
    let src = env.path("random.img");
    write_file(&src, &random_bytes(3 * MIB, 12));
    let d = roundtrip_all(&env, &src);
    assert_eq!(num(&d, "chunks_new"), (3 * MIB / CHUNK) as u64, "{d}");
    assert_eq!(num(&d, "chunks_zero"), 0, "{d}");
}

#[test]
fn all_holes_are_never_read() {
    let env = Env::new();
    let src = env.path("holes.img");
    let len = 4 * MIB as u64 + 4096;
    write_sparse(&src, len, &[]);
    let d = roundtrip_all(&env, &src);
    assert_eq!(num(&d, "bytes_read"), 0, "holes must not be read: {d}");
    assert_eq!(num(&d, "chunks_zero"), num(&d, "chunks_total"), "{d}");
    assert_eq!(num(&d, "bytes_zero"), len, "{d}");
    assert_eq!(num(&d, "bytes_new"), 0, "{d}");
    assert_eq!(num(&d, "bytes_stored"), 0, "{d}");
    // The restored file is all holes too.
    let dest = env.path("holes.out");
    env.restore_to(text(&d, "snapshot_id"), &dest);
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), len);
    if fs_keeps_holes(env.dir.path()) {
        assert!(
            allocated(&dest) <= 64 << 10,
            "restored all-zero image should be sparse, has {} bytes allocated",
            allocated(&dest)
        );
    }
}

#[test]
fn written_zeros_are_read_but_not_stored() {
    let env = Env::new();
    let src = env.path("zeros.img");
    let len = 2 * MIB;
    write_file(&src, &vec![0u8; len]);
    let d = roundtrip_all(&env, &src);
    assert_eq!(num(&d, "chunks_zero"), num(&d, "chunks_total"), "{d}");
    assert_eq!(num(&d, "bytes_stored"), 0, "{d}");
    let dest = env.path("zeros.out");
    env.restore_to(text(&d, "snapshot_id"), &dest);
    assert_same(&read(&dest), &vec![0u8; len], "zeros");
    if fs_keeps_holes(env.dir.path()) {
        assert!(
            allocated(&dest) <= 64 << 10,
            "zero chunks should be restored as holes; {} of {len} bytes allocated",
            allocated(&dest)
        );
    }
}

#[test]
fn sparse_with_holes_and_data() {
    let env = Env::new();
    let src = env.path("sparse.img");
    let len = 8 * MIB as u64;
    let a = random_bytes(CHUNK, 21);
    let b = random_bytes(2 * CHUNK, 22);
    let c = random_bytes(5000, 23); // inside one chunk, not aligned
    write_sparse(
        &src,
        len,
        &[
            (0, &a),
            (3 * MIB as u64, &b),
            (5 * MIB as u64 + 700, &c),
            (len - 1, b"!"),
        ],
    );
    let d = roundtrip_all(&env, &src);
    let data_chunks = 1 + 2 + 1 + 1;
    assert_eq!(num(&d, "chunks_total"), len / CHUNK as u64, "{d}");
    if fs_keeps_holes(env.dir.path()) {
        assert_eq!(
            num(&d, "chunks_zero"),
            len / CHUNK as u64 - data_chunks,
            "{d}"
        );
        assert!(
            num(&d, "bytes_read") <= 2 * data_chunks * CHUNK as u64,
            "holes must not be read: {d}"
        );
        let dest = env.path("sparse.out");
        env.restore_to(text(&d, "snapshot_id"), &dest);
        assert_same(&read(&dest), &read(&src), "sparse -> file");
        assert!(
            allocated(&dest) < len / 4,
            "restored file should be sparse: {} of {len} bytes allocated",
            allocated(&dest)
        );
    }
}

#[test]
fn highly_repetitive() {
    let env = Env::new();
    let src = env.path("repeat.img");
    let pattern = random_bytes(4096, 31);
    let len = 3 * MIB + 5;
    let data: Vec<u8> = pattern.iter().copied().cycle().take(len).collect();
    write_file(&src, &data);
    let d = roundtrip_all(&env, &src);
    // Every full chunk is the same bytes; the last, short one differs.
    assert_eq!(num(&d, "chunks_new"), 2, "{d}");
    assert_eq!(num(&d, "chunks_reused"), num(&d, "chunks_total") - 2, "{d}");
    assert!(
        num(&d, "bytes_stored") < 32 << 10,
        "a repeated pattern should compress: {d}"
    );
}

#[test]
fn source_given_as_dev_stdin_is_a_stream() {
    let env = Env::new();
    let data = random_bytes(MIB + 3, 41);
    let out = env
        .cmd(
            "backup",
            &["--json", "--source", "/dev/stdin", "--name", "piped"],
        )
        .stdin(&data)
        .run()
        .ok();
    let d = check_backup_summary(&out.json(), &out);
    assert_eq!(num(&d, "source_bytes"), data.len() as u64, "{d}");
    assert_same(
        &env.restore_stdout(text(&d, "snapshot_id")),
        &data,
        "/dev/stdin",
    );
}

#[test]
fn every_chunk_size_and_thread_count_roundtrips() {
    let env = Env::new();
    let src = env.path("img");
    let data = random_bytes(MIB + 100, 51);
    write_file(&src, &data);
    for (cs, threads) in [("64KiB", "1"), ("128K", "3"), ("1MiB", "2"), ("16MiB", "1")] {
        let out = env
            .cmd(
                "backup",
                &["--json", "--chunk-size", cs, "--threads", threads],
            )
            .arg("--source")
            .arg(&src)
            .run()
            .ok();
        let d = check_backup_summary(&out.json(), &out);
        let id = text(&d, "snapshot_id");
        let restored = env
            .cmd(
                "restore",
                &[id, "--to", "-", "--threads", threads, "--memory", "32MiB"],
            )
            .run()
            .ok()
            .stdout;
        assert_same(
            &restored,
            &data,
            &format!("--chunk-size {cs} --threads {threads}"),
        );
    }
}

#[test]
fn restore_json_summary_goes_to_stderr_when_the_image_goes_to_stdout() {
    let env = Env::new();
    let data = random_bytes(300_000, 61);
    let d = env.backup_stdin(&data, &[]);
    let id = text(&d, "snapshot_id");
    let out = env.cmd("restore", &[id, "--to", "-", "--json"]).run().ok();
    assert_same(&out.stdout, &data, "stdout holds only the image");
    let line = out.stderr.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}:\n{out}"));
    assert_eq!(v["data"]["command"], "restore", "{out}");
    assert_eq!(v["data"]["bytes_total"], data.len() as u64, "{out}");
}

/// `--no-sync` skips only the final fsync: the restored file is the same, sparse, and no
/// temporary file is left beside it.
#[test]
fn restore_without_final_fsync_is_identical() {
    let env = Env::new();
    let src = env.path("nosync.img");
    let len = 4 * MIB as u64;
    write_sparse(
        &src,
        len,
        &[(0, &random_bytes(3 * CHUNK, 31)), (len - 10, b"tail bytes")],
    );
    let d = env.backup(&src, &[]);
    let dest = env.path("nosync.out");
    env.cmd("restore", &[text(&d, "snapshot_id"), "--no-sync", "--to"])
        .arg(&dest)
        .run()
        .ok();
    assert_same(&read(&dest), &read(&src), "restore --no-sync");
    if fs_keeps_holes(env.dir.path()) {
        assert!(allocated(&dest) < len / 2, "restored file should be sparse");
    }
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".mover-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

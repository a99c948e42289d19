//! Incrementals from files (issue 7): changed-extent lists (`DiskChangeInfo`), compare mode,
//! change maps that lie, parents that do not fit, change tokens, multi-disk snapshots with
//! attachments, and delta restores. Every snapshot must restore alone, bit-exact.

use std::path::Path;

use crate::util::*;

const IMG: usize = 8 * MIB;
const CHUNKS: u64 = (IMG / CHUNK) as u64;
const C: u64 = CHUNK as u64;
const M: u64 = MIB as u64;

/// Overwrites `data[off..]` with `bytes`.
fn poke(data: &mut [u8], off: usize, bytes: &[u8]) {
    data[off..off + bytes.len()].copy_from_slice(bytes);
}

/// Writes `data` to `path` and backs it up in full; returns the snapshot id.
fn full_backup(env: &Env, path: &Path, data: &[u8], extra: &[&str]) -> String {
    write_file(path, data);
    let d = env.backup(path, extra);
    assert_eq!(d["parent"], serde_json::Value::Null, "{d}");
    text(&d, "snapshot_id").to_string()
}

/// `restore SNAP --to -` plus `--disk`/other flags.
fn restore_args(env: &Env, args: &[&str]) -> Vec<u8> {
    env.cmd("restore", args)
        .arg("--to")
        .arg("-")
        .run()
        .ok()
        .stdout
}

/// Writes a `DiskChangeInfo` to `name` in the test directory and returns its path as a string.
fn map_file(env: &Env, name: &str, start: u64, len: u64, areas: &[(u64, u64)]) -> String {
    let p = env.path(name);
    write_file(&p, change_info(start, len, areas).as_bytes());
    p.to_str().expect("UTF-8 temp path").to_string()
}

#[test]
fn changed_extent_list_reads_only_the_listed_chunks() {
    let env = Env::new();
    let src = env.path("disk.img");
    let v1 = random_bytes(IMG, 701);
    let id1 = full_backup(&env, &src, &v1, &[]);

    // A few bytes at two places: chunk 1 and chunk 80.
    let mut v2 = v1.clone();
    let (a, b) = (100_000usize, 80 * CHUNK + 1234);
    poke(&mut v2, a, b"ABCDEFG");
    poke(&mut v2, b, b"xyz");
    write_file(&src, &v2);
    let map = map_file(
        &env,
        "changes.json",
        0,
        IMG as u64,
        &[(a as u64, 7), (b as u64, 3)],
    );
    let s = src.to_str().unwrap();
    let (d, _) = env.backup_args(
        &[
            "--source",
            s,
            "--parent",
            "latest",
            "--changed-extents",
            &map,
        ],
        0,
    );
    assert_eq!(text(&d, "parent"), id1, "{d}");
    assert_eq!(
        num(&d, "bytes_read"),
        2 * C,
        "only the two dirty chunks are read: {d}"
    );
    assert_eq!(num(&d, "chunks_unchanged"), CHUNKS - 2, "{d}");
    assert_eq!(num(&d, "bytes_unchanged"), (CHUNKS - 2) * C, "{d}");
    assert_eq!(num(&d, "chunks_new"), 2, "{d}");
    assert_eq!(num(&d, "bytes_new"), 2 * C, "{d}");
    assert_eq!(num(&d, "chunks_total"), CHUNKS, "{d}");
    assert_eq!(num(&d, "source_bytes"), IMG as u64, "{d}");
    assert_eq!(num(&d["disks"][0], "bytes_read"), 2 * C, "{d}");
    let id2 = text(&d, "snapshot_id").to_string();

    assert_same(
        &env.restore_stdout(&id2),
        &v2,
        "the incremental restores the new image",
    );
    assert_same(
        &env.restore_stdout(&id1),
        &v1,
        "the parent still restores the old image",
    );
    let listed = env.snapshots();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["parent"], id1.as_str(), "{:?}", listed[1]);

    // Every snapshot is logically full: with the parent's manifest gone, the incremental
    // still restores alone.
    std::fs::remove_file(env.repo.join("snapshots").join(&id1)).expect("remove parent manifest");
    assert_eq!(env.snapshot_count(), 1);
    assert_same(
        &env.restore_stdout(&id2),
        &v2,
        "the incremental restores without its parent",
    );
    env.cmd("verify", &[id2.as_str()]).run().ok();
}

#[test]
fn changed_areas_round_out_to_chunks_and_unqueried_ranges_are_read() {
    let env = Env::new();
    let src = env.path("disk.img");
    let v1 = random_bytes(IMG, 711);
    full_backup(&env, &src, &v1, &[]);

    // One area of 10 bytes across the boundary of chunks 20 and 21; the map queries only
    // 1 MiB..7 MiB, so the first and last MiB are unknown and must be read (the change at
    // byte 0 is found that way).
    let mut v2 = v1.clone();
    let edge = 21 * CHUNK - 5;
    poke(&mut v2, edge, b"0123456789");
    poke(&mut v2, 0, b"boot sector changed");
    poke(&mut v2, IMG - 3, b"end");
    write_file(&src, &v2);
    let map = map_file(
        &env,
        "m.json",
        MIB as u64,
        6 * MIB as u64,
        &[(edge as u64, 10)],
    );
    let (d, _) = env.backup_args(
        &[
            "--source",
            src.to_str().unwrap(),
            "--parent",
            "latest",
            "--changed-extents",
            &map,
        ],
        0,
    );
    let unqueried = 2 * MIB as u64;
    assert_eq!(num(&d, "bytes_read"), unqueried + 2 * C, "{d}");
    assert_eq!(
        num(&d, "chunks_unchanged"),
        CHUNKS - 2 - unqueried / C,
        "{d}"
    );
    assert_eq!(
        num(&d, "chunks_new"),
        4,
        "chunks 0, 20, 21 and the last: {d}"
    );
    assert_same(&env.restore_stdout("latest"), &v2, "restore");

    // The same map from stdin, on an unchanged image: an empty list reads only the
    // unqueried MiBs and stores nothing new.
    let doc = change_info(0, IMG as u64, &[]);
    let out = env
        .cmd(
            "backup",
            &["--json", "--chunk-size", CHUNK_ARG, "--parent", "latest"],
        )
        .args(&["--changed-extents", "-", "--source", src.to_str().unwrap()])
        .stdin(doc.as_bytes())
        .run()
        .ok();
    let d = check_backup_summary(&out.json(), &out);
    assert_eq!(num(&d, "bytes_read"), 0, "{d}");
    assert_eq!(num(&d, "chunks_unchanged"), CHUNKS, "{d}");
    assert_eq!(num(&d, "bytes_new"), 0, "{d}");
    assert_same(
        &env.restore_stdout("latest"),
        &v2,
        "restore of the empty incremental",
    );
}

#[test]
fn compare_mode_reads_everything_and_stores_only_changed_chunks() {
    let env = Env::new();
    let src = env.path("disk.img");
    // Data with a hole: 0..3 MiB and 5..8 MiB; holes are not read, even in compare mode.
    let mut v1 = random_bytes(IMG, 721);
    v1[3 * MIB..5 * MIB].fill(0);
    write_sparse(
        &src,
        IMG as u64,
        &[(0, &v1[..3 * MIB]), (5 * MIB as u64, &v1[5 * MIB..])],
    );
    let d1 = env.backup(&src, &[]);
    let id1 = text(&d1, "snapshot_id").to_string();
    let data_bytes = 6 * MIB as u64;

    let mut v2 = v1.clone();
    // Written in place, so the hole stays a hole.
    let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
    for off in [7 * CHUNK + 9, 40 * CHUNK, 127 * CHUNK + 100] {
        poke(&mut v2, off, b"!!!!!");
        std::os::unix::fs::FileExt::write_all_at(&f, b"!!!!!", off as u64).unwrap();
    }
    drop(f);
    assert_same(&read(&src), &v2, "test setup");

    let (d, _) = env.backup_args(
        &["--source", src.to_str().unwrap(), "--parent", "latest"],
        0,
    );
    assert_eq!(text(&d, "parent"), id1, "{d}");
    assert_eq!(
        num(&d, "bytes_read"),
        data_bytes,
        "compare mode reads all data: {d}"
    );
    assert_eq!(num(&d, "chunks_new"), 3, "{d}");
    assert_eq!(
        num(&d, "bytes_new"),
        3 * C,
        "only the changed chunks are new: {d}"
    );
    assert_eq!(num(&d, "chunks_zero"), 2 * MIB as u64 / C, "{d}");
    assert_eq!(
        num(&d, "chunks_unchanged"),
        0,
        "nothing is taken unread: {d}"
    );
    assert_eq!(num(&d, "chunks_total"), CHUNKS, "{d}");
    assert_same(
        &env.restore_stdout("latest"),
        &v2,
        "restore of the compare-mode incremental",
    );
    assert_same(&env.restore_stdout(&id1), &v1, "restore of the parent");
}

/// v1, and v2 = v1 with chunk 10 (listed in the map) and chunk 50 (not listed) changed.
fn lying_setup(env: &Env) -> (Vec<u8>, Vec<u8>, String, String) {
    let src = env.path("disk.img");
    let v1 = random_bytes(IMG, 731);
    full_backup(env, &src, &v1, &[]);
    let mut v2 = v1.clone();
    poke(&mut v2, 10 * CHUNK + 77, b"listed");
    poke(&mut v2, 50 * CHUNK + 4000, b"NOT LISTED");
    write_file(&src, &v2);
    let map = map_file(env, "lie.json", 0, IMG as u64, &[(10 * C + 77, 6)]);
    (v1, v2, src.to_str().unwrap().to_string(), map)
}

#[test]
fn a_lying_map_is_caught_by_verify_changes() {
    let env = Env::new();
    let (_, v2, src, map) = lying_setup(&env);
    // More samples than clean chunks: every clean chunk is checked, so the lie is found.
    let (d, out) = env.backup_args(
        &[
            "--source",
            &src,
            "--parent",
            "latest",
            "--changed-extents",
            &map,
            "--verify-changes",
            "1000",
        ],
        3,
    );
    let w = warnings_of(&d);
    assert!(
        w.contains("change map"),
        "the warning names the change map: {d}"
    );
    assert!(
        w.contains(&(50 * C).to_string()),
        "the warning gives the offset: {d}"
    );
    out.assert_stderr_has(&["mover: warning:", "change map"]);
    assert_eq!(num(&d, "chunks_new"), 2, "{d}");
    assert_eq!(num(&d, "bytes_new"), 2 * C, "{d}");
    assert_eq!(
        num(&d, "chunks_unchanged"),
        0,
        "the fallback compares every chunk: {d}"
    );
    assert_eq!(env.snapshot_count(), 2, "exit 3 commits the snapshot");
    assert_same(
        &env.restore_stdout("latest"),
        &v2,
        "the fallback is bit-exact",
    );

    // A map that tells the truth passes the same check with exit 0.
    let honest = map_file(&env, "ok.json", 0, IMG as u64, &[]);
    let (d, _) = env.backup_args(
        &[
            "--source",
            &src,
            "--parent",
            "latest",
            "--changed-extents",
            &honest,
            "--verify-changes",
            "1000",
        ],
        0,
    );
    assert_eq!(num(&d, "chunks_unchanged"), CHUNKS, "{d}");
    assert_eq!(num(&d, "bytes_new"), 0, "{d}");
}

#[test]
fn without_verify_changes_the_map_is_trusted_as_given() {
    // The documented contract: a change map is a hint that is used as given unless
    // --verify-changes samples it. A chunk the map calls clean is taken from the parent, so
    // the restored image has the OLD bytes there (and only there).
    let env = Env::new();
    let (v1, v2, src, map) = lying_setup(&env);
    let (d, _) = env.backup_args(
        &[
            "--source",
            &src,
            "--parent",
            "latest",
            "--changed-extents",
            &map,
        ],
        0,
    );
    assert_eq!(
        num(&d, "bytes_read"),
        C,
        "only the listed chunk is read: {d}"
    );
    assert_eq!(num(&d, "chunks_unchanged"), CHUNKS - 1, "{d}");
    let mut want = v2.clone();
    let stale = 50 * CHUNK..51 * CHUNK;
    want[stale.clone()].copy_from_slice(&v1[stale.clone()]);
    let got = env.restore_stdout("latest");
    assert_same(&got, &want, "v2 with chunk 50 as in v1");
    assert_ne!(
        got[stale.clone()],
        v2[stale],
        "the unlisted change is not in the snapshot"
    );
}

#[test]
fn a_disk_that_changed_size_is_read_in_full() {
    let env = Env::new();
    let src = env.path("disk.img");
    let v1 = random_bytes(IMG, 741);
    full_backup(&env, &src, &v1, &[]);

    // Grown by 1 MiB, with a map over the new size that lists only the new MiB.
    let mut v2 = v1.clone();
    v2.extend_from_slice(&random_bytes(MIB, 742));
    poke(&mut v2, 3 * CHUNK, b"unlisted, found by the full read");
    write_file(&src, &v2);
    let len2 = v2.len() as u64;
    let map = map_file(&env, "grow.json", 0, len2, &[(IMG as u64, MIB as u64)]);
    let s = src.to_str().unwrap();
    let (d, out) = env.backup_args(
        &[
            "--source",
            s,
            "--parent",
            "latest",
            "--changed-extents",
            &map,
        ],
        3,
    );
    let w = warnings_of(&d);
    assert!(w.contains("size") && w.contains(&len2.to_string()), "{d}");
    out.assert_stderr_has(&["mover: warning:", "size"]);
    assert_eq!(num(&d, "source_bytes"), len2, "{d}");
    assert_eq!(
        num(&d, "bytes_read"),
        len2,
        "a grown disk is read in full: {d}"
    );
    assert_eq!(num(&d, "chunks_unchanged"), 0, "{d}");
    assert_eq!(num(&d, "chunks_new"), 1 + MIB as u64 / C, "{d}");
    assert_same(
        &env.restore_stdout("latest"),
        &v2,
        "restore of the grown disk",
    );

    // Shrunk to 6 MiB, compare mode.
    let v3 = v2[..6 * MIB].to_vec();
    write_file(&src, &v3);
    let (d, _) = env.backup_args(&["--source", s, "--parent", "latest"], 3);
    assert!(warnings_of(&d).contains("size"), "{d}");
    assert_eq!(num(&d, "bytes_read"), 6 * MIB as u64, "{d}");
    assert_eq!(
        num(&d, "bytes_new"),
        0,
        "every chunk of v3 is in the repository: {d}"
    );
    assert_same(
        &env.restore_stdout("latest"),
        &v3,
        "restore of the shrunk disk",
    );
    assert_eq!(env.snapshot_count(), 3);
}

#[test]
fn a_parent_that_is_not_there_gives_a_full_backup_with_a_warning() {
    let env = Env::new();
    let src = env.path("disk.img");
    let data = random_bytes(3 * MIB, 751);
    write_file(&src, &data);
    let s = src.to_str().unwrap();
    let map = map_file(&env, "m.json", 0, data.len() as u64, &[]);
    // In an empty repository; with a change map that would otherwise read nothing.
    let (d, out) = env.backup_args(
        &[
            "--source",
            s,
            "--parent",
            "latest",
            "--changed-extents",
            &map,
        ],
        3,
    );
    assert!(warnings_of(&d).contains("not found"), "{d}");
    out.assert_stderr_has(&["mover: warning:", "not found"]);
    assert_eq!(d["parent"], serde_json::Value::Null, "{d}");
    assert_eq!(num(&d, "bytes_read"), data.len() as u64, "a full read: {d}");
    assert_eq!(num(&d, "chunks_unchanged"), 0, "{d}");
    assert_same(&env.restore_stdout("latest"), &data, "restore");

    // `latest` is the latest of the same name: another name has no parent either.
    let (d, _) = env.backup_args(&["--source", s, "--name", "other", "--parent", "latest"], 3);
    assert!(warnings_of(&d).contains("not found"), "{d}");
    assert_eq!(num(&d, "bytes_read"), data.len() as u64, "{d}");
    // An id that is in no snapshot.
    let (d, _) = env.backup_args(&["--source", s, "--parent", &"0".repeat(64)], 3);
    assert!(warnings_of(&d).contains("not found"), "{d}");
    assert_eq!(env.snapshot_count(), 3);
    let out = env.cmd("snapshots", &["--json"]).run().ok();
    for item in out.json().as_array().unwrap() {
        assert_eq!(item["parent"], serde_json::Value::Null, "{item}");
    }
}

/// Broken `DiskChangeInfo` files next to a committed 2 MiB `disk.img`: (path, what the error
/// must say besides the file's name).
fn bad_lists(env: &Env) -> (String, Vec<(String, &'static str)>) {
    let src = env.path("disk.img");
    let v1 = random_bytes(2 * MIB, 761);
    full_backup(env, &src, &v1, &[]);
    let len = v1.len() as u64;
    let not_json = env.path("not.json");
    write_file(&not_json, b"changedArea: everything");
    let ci = |p: &Path| p.to_str().unwrap().to_string();
    let cases = vec![
        (ci(&not_json), "json"),
        (ci(&env.path("missing.json")), "no such file"),
        (
            map_file(env, "outside.json", 0, len, &[(len - 10, 20)]),
            "outside",
        ),
        (
            map_file(env, "before.json", C, len - C, &[(0, 10)]),
            "outside",
        ),
        (map_file(env, "past.json", 0, len + C, &[]), "past"),
    ];
    (ci(&src), cases)
}

fn backup_with_list(env: &Env, src: &str, list: &str) -> Output {
    env.cmd(
        "backup",
        &["--json", "--chunk-size", CHUNK_ARG, "--source", src],
    )
    .args(&["--parent", "latest", "--changed-extents", list])
    .run()
}

#[test]
fn bad_change_lists_fail_and_commit_nothing() {
    let env = Env::new();
    let (s, cases) = bad_lists(&env);
    let s = s.as_str();
    for (file, needle) in &cases {
        let out = backup_with_list(&env, s, file);
        out.assert_error(1, &[needle]);
        // stdout holds only the begin and error events, no summary.
        assert_eq!(out.event_types(), ["begin", "error"], "{out}");
        assert_eq!(
            env.snapshot_count(),
            1,
            "a failed backup commits nothing:\n{out}"
        );
    }
    let len = 2 * M;

    // Usage errors (exit 2): a map without --parent, a map and a bitmap, a bitmap on a file.
    let ok_map = map_file(&env, "ok.json", 0, len, &[]);
    for (args, needle) in [
        (vec!["--changed-extents", ok_map.as_str()], "--parent"),
        (
            vec![
                "--parent",
                "latest",
                "--changed-extents",
                ok_map.as_str(),
                "--bitmap",
                "b0",
            ],
            "--bitmap",
        ),
        (vec!["--parent", "latest", "--bitmap", "b0"], "nbd"),
    ] {
        let out = env.cmd("backup", &["--source", s]).args(&args).run();
        out.assert_error(2, &[needle]);
        assert!(out.stdout.is_empty(), "{out}");
    }
    assert_eq!(env.snapshot_count(), 1);
}

#[test]
fn bad_change_list_errors_name_the_file() {
    // The user has to know WHICH file to fix: with several disks each has its own list.
    let env = Env::new();
    let (s, cases) = bad_lists(&env);
    for (file, _) in &cases {
        let out = backup_with_list(&env, &s, file);
        let base = Path::new(file).file_name().unwrap().to_str().unwrap();
        out.assert_error(1, &[base]);
    }
}

#[test]
fn change_tokens_are_recorded_for_the_next_run() {
    let env = Env::new();
    let src = env.path("disk.img");
    let mut data = random_bytes(MIB, 771);
    write_file(&src, &data);
    let s = src.to_str().unwrap();
    let (d, _) = env.backup_args(&["--source", s, "--change-id", "t0"], 0);
    assert_eq!(d["disks"][0]["change_token"], "t0", "{d}");
    poke(&mut data, 5, b"changed");
    write_file(&src, &data);
    let map = map_file(&env, "m.json", 0, MIB as u64, &[(5, 7)]);
    let (d, _) = env.backup_args(
        &[
            "--source",
            s,
            "--parent",
            "latest",
            "--changed-extents",
            &map,
            "--change-id",
            "abc",
        ],
        0,
    );
    assert_eq!(d["disks"][0]["change_token"], "abc", "{d}");
    // Without --change-id (and no bitmap) the token is empty.
    let (d, _) = env.backup_args(&["--source", s, "--parent", "latest"], 0);
    assert_eq!(d["disks"][0]["change_token"], "", "{d}");

    let list = env.snapshots();
    let tokens: Vec<&str> = list
        .iter()
        .map(|m| {
            let disks = m["disks"]
                .as_array()
                .unwrap_or_else(|| panic!("disks in {m}"));
            assert_eq!(disks.len(), 1, "{m}");
            disks[0]["change_token"]
                .as_str()
                .unwrap_or_else(|| panic!("token in {m}"))
        })
        .collect();
    assert_eq!(tokens, ["t0", "abc", ""]);
    assert_same(&env.restore_stdout("latest"), &data, "restore");
}

#[test]
fn multi_disk_snapshot_with_an_attachment() {
    let env = Env::new();
    let (x, y) = (env.path("x.img"), env.path("y.img"));
    let xdata = random_bytes(3 * MIB, 781);
    write_file(&x, &xdata);
    // y: 4 MiB with data only in its second MiB.
    let ydata_island = random_bytes(MIB, 782);
    write_sparse(&y, 4 * MIB as u64, &[(MIB as u64, &ydata_island)]);
    let ydata = read(&y);
    let cfg = env.path("cfg.xml");
    let cfg_bytes = b"<domain type='kvm'><name>vm</name></domain>\n";
    write_file(&cfg, cfg_bytes);
    let sa = format!("a={}", x.display());
    let sb = format!("b={}", y.display());
    let cfgs = cfg.to_str().unwrap();

    let (d, _) = env.backup_args(
        &[
            "--source", &sa, "--source", &sb, "--name", "vm", "--attach", cfgs,
        ],
        0,
    );
    assert_eq!(text(&d, "name"), "vm", "{d}");
    assert_eq!(num(&d, "source_bytes"), 7 * MIB as u64, "{d}");
    assert_eq!(
        num(&d, "bytes_read"),
        4 * MIB as u64,
        "holes are not read: {d}"
    );
    let disks = d["disks"].as_array().expect("disks");
    assert_eq!(disks.len(), 2, "{d}");
    assert_eq!(
        (text(&disks[0], "name"), text(&disks[1], "name")),
        ("a", "b"),
        "{d}"
    );
    assert_eq!(num(&disks[0], "source_bytes"), 3 * MIB as u64, "{d}");
    assert_eq!(num(&disks[1], "source_bytes"), 4 * MIB as u64, "{d}");
    assert_eq!(num(&disks[1], "bytes_read"), MIB as u64, "{d}");
    let cfg_len = std::fs::metadata(&cfg).unwrap().len();
    assert_eq!(
        d["attachments"],
        serde_json::json!([{"name": "cfg.xml", "bytes": cfg_len}]),
        "{d}"
    );
    let id = text(&d, "snapshot_id").to_string();

    let list = env.snapshots();
    assert_eq!(list.len(), 1);
    let names: Vec<&str> = list[0]["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .map(|d| text(d, "name"))
        .collect();
    assert_eq!(names, ["a", "b"], "{:?}", list[0]);
    let atts = list[0]["attachments"].as_array().expect("attachments");
    assert_eq!(atts.len(), 1, "{:?}", list[0]);
    assert_eq!(text(&atts[0], "name"), "cfg.xml", "{:?}", list[0]);
    assert_eq!(
        num(&atts[0], "bytes"),
        cfg_bytes.len() as u64,
        "{:?}",
        list[0]
    );

    assert_same(&restore_args(&env, &[&id, "--disk", "a"]), &xdata, "disk a");
    assert_same(
        &restore_args(&env, &["latest", "--name", "vm", "--disk", "b"]),
        &ydata,
        "disk b",
    );
    // To a file: sparse, and equal.
    let out_b = env.path("b.out");
    env.cmd("restore", &[id.as_str(), "--disk", "b", "--to"])
        .arg(&out_b)
        .run()
        .ok();
    assert_same(&read(&out_b), &ydata, "disk b to a file");

    // Which disk? The error names them.
    let out = env.cmd("restore", &[id.as_str(), "--to", "-"]).run();
    out.assert_error(2, &["--disk", "a, b"]);
    assert!(out.stdout.is_empty(), "{out}");
    let out = env
        .cmd("restore", &[id.as_str(), "--disk", "c", "--to", "-"])
        .run();
    out.assert_error(2, &["c", "a, b"]);
    assert!(out.stdout.is_empty(), "{out}");

    // The attachment, to stdout and to a file.
    let got = restore_args(&env, &[&id, "--attachment", "cfg.xml"]);
    assert_same(&got, cfg_bytes, "attachment to stdout");
    let saved = env.path("saved.xml");
    env.cmd("restore", &[id.as_str(), "--attachment", "cfg.xml", "--to"])
        .arg(&saved)
        .run()
        .ok();
    assert_same(&read(&saved), cfg_bytes, "attachment to a file");
    let out = env
        .cmd(
            "restore",
            &[id.as_str(), "--attachment", "nope", "--to", "-"],
        )
        .run();
    out.assert_error(2, &["nope", "cfg.xml"]);

    // Usage errors commit nothing.
    let xs = x.to_str().unwrap();
    for (args, needles) in [
        (
            vec!["--source", sa.as_str(), "--source", sb.as_str()],
            vec!["--name"],
        ),
        (
            vec![
                "--source",
                sa.as_str(),
                "--source",
                &format!("a={}", y.display()),
                "--name",
                "vm",
            ],
            vec!["a", "twice"],
        ),
        (
            vec!["--source", sa.as_str(), "--source", xs, "--name", "vm"],
            vec!["NAME="],
        ),
    ] {
        let out = env.cmd("backup", &args).run();
        out.assert_error(2, &needles);
    }
    assert_eq!(env.snapshot_count(), 1);

    // An incremental of the group: a map for disk a, compare mode for disk b.
    let mut x2 = xdata.clone();
    poke(&mut x2, 2 * MIB + 17, b"changed");
    write_file(&x, &x2);
    let map = map_file(
        &env,
        "a.json",
        0,
        3 * MIB as u64,
        &[(2 * MIB as u64 + 17, 7)],
    );
    let amap = format!("a={map}");
    let (d, _) = env.backup_args(
        &[
            "--source",
            &sa,
            "--source",
            &sb,
            "--name",
            "vm",
            "--parent",
            "latest",
            "--changed-extents",
            &amap,
        ],
        0,
    );
    assert_eq!(text(&d, "parent"), id, "{d}");
    let disks = d["disks"].as_array().expect("disks");
    assert_eq!(
        num(&disks[0], "bytes_read"),
        C,
        "disk a reads one chunk: {d}"
    );
    assert_eq!(
        num(&disks[1], "bytes_read"),
        MIB as u64,
        "disk b is compared: {d}"
    );
    assert_eq!(num(&d, "bytes_new"), C, "{d}");
    assert_eq!(
        d["attachments"],
        serde_json::json!([]),
        "attachments are per snapshot: {d}"
    );
    assert_same(
        &restore_args(&env, &["latest", "--name", "vm", "--disk", "a"]),
        &x2,
        "a v2",
    );
    assert_same(
        &restore_args(&env, &["latest", "--name", "vm", "--disk", "b"]),
        &ydata,
        "b v2",
    );
    // A map without NAME= is ambiguous with two disks.
    let out = env
        .cmd(
            "backup",
            &["--source", &sa, "--source", &sb, "--name", "vm"],
        )
        .args(&["--parent", "latest", "--changed-extents", &map])
        .run();
    out.assert_error(2, &["NAME=FILE"]);
    assert_eq!(env.snapshot_count(), 2);
}

/// `restore SNAP --delta --json --to DEST` (must succeed); returns the summary's data.
fn delta(env: &Env, snap: &str, dest: &Path) -> serde_json::Value {
    let out = env
        .cmd("restore", &[snap, "--delta", "--json", "--to"])
        .arg(dest)
        .run()
        .ok();
    let v = out.json();
    assert_eq!(v["type"], "summary", "{out}");
    v["data"].clone()
}

#[test]
fn delta_restore_writes_only_the_differing_chunks() {
    let env = Env::new();
    let src = env.path("disk.img");
    // v1: data with a hole at 6..7 MiB.
    let mut v1 = random_bytes(IMG, 791);
    v1[6 * MIB..7 * MIB].fill(0);
    write_sparse(
        &src,
        IMG as u64,
        &[(0, &v1[..6 * MIB]), (7 * MIB as u64, &v1[7 * MIB..])],
    );
    let id1 = text(&env.backup(&src, &[]), "snapshot_id").to_string();
    // v2: three chunks changed, and data in the first chunk of v1's hole.
    let mut v2 = v1.clone();
    poke(&mut v2, 3 * CHUNK + 1, b"three");
    poke(&mut v2, 40 * CHUNK, b"forty");
    poke(&mut v2, 41 * CHUNK + DELTA_BLOCK - 1, b"41");
    v2[6 * MIB..6 * MIB + CHUNK].copy_from_slice(&random_bytes(CHUNK, 792));
    write_file(&src, &v2);
    let id2 = text(&env.backup(&src, &[]), "snapshot_id").to_string();
    // 3 changed blocks of 4 KiB (one change straddles two blocks: 4), and one whole chunk of
    // data where v1 had a hole; 4 chunks differ.
    let differing = delta_cost(&v1, &v2);
    assert_eq!(differing, 4 * DELTA_BLOCK as u64 + C, "test setup");
    assert_eq!(delta_cost(&v2, &v1), differing, "test setup");

    let dest = env.path("vm.img");
    env.restore_to(&id1, &dest);
    assert_same(&read(&dest), &v1, "full restore of v1");

    let d = delta(&env, &id2, &dest);
    assert_same(&read(&dest), &v2, "delta v1 -> v2");
    assert_eq!(num(&d, "bytes_written"), differing, "{d}");
    assert!(num(&d, "bytes_compared") <= IMG as u64, "{d}");
    assert!(
        num(&d, "bytes_compared") >= 6 * MIB as u64,
        "the data was compared: {d}"
    );

    // Back to v1: the chunk that is a hole in v1 becomes zeros again.
    let d = delta(&env, &id1, &dest);
    assert_same(&read(&dest), &v1, "delta v2 -> v1");
    assert_eq!(num(&d, "bytes_written"), delta_cost(&v2, &v1), "{d}");
    assert!(
        num(&d, "bytes_written") <= 4 * C,
        "no more than the 4 differing chunks: {d}"
    );
    // Nothing differs: nothing is written.
    let d = delta(&env, &id1, &dest);
    assert_eq!(num(&d, "bytes_written"), 0, "{d}");
    assert_same(&read(&dest), &v1, "idempotent");

    // A destination of another size is cut or extended first.
    for len in [5 * MIB, 10 * MIB] {
        let mut junk = v1.clone();
        junk.resize(len, 0x5a);
        write_file(&dest, &junk);
        delta(&env, &id2, &dest);
        assert_same(&read(&dest), &v2, &format!("delta onto a {len}-byte file"));
    }

    // Data where the snapshot has a hole: the hole becomes zeros.
    let junk = random_bytes(IMG, 793);
    write_file(&dest, &junk);
    let d = delta(&env, &id1, &dest);
    assert_same(&read(&dest), &v1, "delta onto junk");
    assert_eq!(
        num(&d, "bytes_written"),
        IMG as u64,
        "every block differs: {d}"
    );
    assert_eq!(num(&d, "bytes_compared"), IMG as u64, "{d}");

    // No destination to compare: stdout is a usage error; a missing file a failure.
    let out = env
        .cmd("restore", &[id1.as_str(), "--delta", "--to", "-"])
        .run();
    out.assert_error(2, &["--delta"]);
    let missing = env.path("missing.img");
    let out = env
        .cmd("restore", &[id1.as_str(), "--delta", "--to"])
        .arg(&missing)
        .run();
    out.assert_error(1, &["missing.img"]);
    assert!(!missing.exists(), "a failed delta restore creates nothing");
}

#[test]
fn delta_restore_of_one_disk_of_a_group() {
    let env = Env::new();
    let (x, y) = (env.path("x.img"), env.path("y.img"));
    let xdata = random_bytes(2 * MIB, 801);
    let ydata = random_bytes(MIB, 802);
    write_file(&x, &xdata);
    write_file(&y, &ydata);
    let sa = format!("a={}", x.display());
    let sb = format!("b={}", y.display());
    let (d, _) = env.backup_args(&["--source", &sa, "--source", &sb, "--name", "vm"], 0);
    let id = text(&d, "snapshot_id").to_string();
    let mut changed = ydata.clone();
    poke(&mut changed, 70_000, b"scribbled over");
    write_file(&y, &changed);
    let out = env
        .cmd(
            "restore",
            &[id.as_str(), "--disk", "b", "--delta", "--json", "--to"],
        )
        .arg(&y)
        .run()
        .ok();
    // One 14-byte change inside one 4 KiB block.
    assert_eq!(
        num(&out.json()["data"], "bytes_written"),
        DELTA_BLOCK as u64,
        "{out}"
    );
    assert_same(&read(&y), &ydata, "disk b rolled back");
    assert_same(&read(&x), &xdata, "disk a untouched");
}

#[test]
fn delta_restore_reads_only_what_the_destination_change_list_names() {
    let env = Env::new();
    let src = env.path("disk.img");
    let v1 = random_bytes(IMG, 811);
    let id1 = full_backup(&env, &src, &v1, &[]);
    let dest = env.path("vm.img");
    env.restore_to(&id1, &dest);
    // The VM wrote at two places since the restore, and its change tracking says so.
    let mut now = v1.clone();
    poke(&mut now, 9 * CHUNK + 5, b"guest write");
    poke(&mut now, 100 * CHUNK - 3, b"straddles");
    write_file(&dest, &now);
    let map = map_file(
        &env,
        "dest.json",
        0,
        IMG as u64,
        &[(9 * C + 5, 11), (100 * C - 3, 9)],
    );
    let out = env
        .cmd(
            "restore",
            &[id1.as_str(), "--delta", "--json", "--changed-extents", &map],
        )
        .arg("--to")
        .arg(&dest)
        .run()
        .ok();
    let d = out.json()["data"].clone();
    assert_eq!(
        num(&d, "bytes_compared"),
        3 * C,
        "chunks 9, 99 and 100 only: {d}"
    );
    assert_eq!(num(&d, "bytes_written"), delta_cost(&now, &v1), "{d}");
    assert_same(&read(&dest), &v1, "rolled back");

    // The same list from stdin; nothing differs any more.
    let doc = change_info(0, IMG as u64, &[(9 * C + 5, 11)]);
    let out = env
        .cmd(
            "restore",
            &[
                id1.as_str(),
                "--delta",
                "--json",
                "--changed-extents",
                "-",
                "--to",
            ],
        )
        .arg(&dest)
        .stdin(doc.as_bytes())
        .run()
        .ok();
    let d = out.json()["data"].clone();
    assert_eq!(
        (num(&d, "bytes_compared"), num(&d, "bytes_written")),
        (C, 0),
        "{d}"
    );

    // Without --delta a change list means nothing: a usage error.
    let out = env
        .cmd(
            "restore",
            &[id1.as_str(), "--changed-extents", &map, "--force", "--to"],
        )
        .arg(&dest)
        .run();
    out.assert_error(2, &["--delta"]);
    assert_same(&read(&dest), &v1, "untouched");
}

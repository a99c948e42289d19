//! Repository lifecycle through the binary: forget, gc (two phases, safe beside running
//! backups), check, verify subsets, repair.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// Every file of a directory tree with its bytes, to show that nothing changed.
pub(crate) fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .map(|p| (p.clone(), read(&p)))
        .collect()
}

pub(crate) fn summary(out: &Output) -> Value {
    out.json()["data"].clone()
}

pub(crate) fn ids(env: &Env) -> Vec<String> {
    env.snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// `gc --grace 0s --json`: sweeps what an earlier run condemned, condemns what is garbage now.
fn gc_now(env: &Env) -> Value {
    summary(&env.cmd("gc", &["--grace", "0s", "--json"]).run().ok())
}

/// `mover repair WHAT -r REPO ARGS`.
fn repair(env: &Env, what: &str, args: &[&str]) -> Mover {
    mover(["repair", what, "-r"]).arg(&env.repo).args(args)
}

pub(crate) fn check_clean(env: &Env) {
    let out = env.cmd("check", &["--json"]).run();
    assert_eq!(out.exit(), 0, "check is clean: {out}");
    assert_eq!(summary(&out)["ok"], true, "{out}");
}

#[test]
fn forget_by_id_and_by_policy_per_name() {
    let env = Env::new();
    let (a, b) = (env.path("a.img"), env.path("b.img"));
    let mut made = Vec::new();
    for i in 0..3 {
        write_file(&a, &random_bytes(200_000, 10 + i));
        write_file(&b, &random_bytes(200_000, 20 + i));
        made.push(text(&env.backup(&a, &["--name", "a"]), "snapshot_id").to_string());
        made.push(text(&env.backup(&b, &["--name", "b"]), "snapshot_id").to_string());
    }
    assert_eq!(env.snapshot_count(), 6);

    // Nothing to go by: a usage error, nothing removed.
    env.cmd("forget", &[] as &[&str])
        .run()
        .assert_error(2, &["--keep-last"]);
    env.cmd("forget", &["--keep-last", "1", made[0].as_str()])
        .run()
        .assert_error(2, &["not both"]);
    env.cmd("forget", &["0123456789ab"])
        .run()
        .assert_error(1, &["0123456789ab", "not found"]);
    assert_eq!(env.snapshot_count(), 6);

    // A dry run says what would go and changes nothing.
    let before = tree(&env.repo);
    let out = env
        .cmd("forget", &["--keep-last", "2", "--dry-run", "--json"])
        .run()
        .ok();
    let d = summary(&out);
    assert_eq!(d["removed"].as_array().unwrap().len(), 2, "{out}");
    assert_eq!(d["kept"].as_array().unwrap().len(), 4, "{out}");
    assert_eq!(tree(&env.repo), before, "a dry run changes nothing");

    // Keep the last 2 of each name: the oldest of each goes.
    let out = env.cmd("forget", &["--keep-last", "2"]).run().ok();
    assert!(
        out.stdout_str().contains("last 1"),
        "reasons are shown: {out}"
    );
    let left = ids(&env);
    assert_eq!(left.len(), 4, "{out}");
    assert!(
        !left.contains(&made[0]) && !left.contains(&made[1]),
        "{out}"
    );

    // Only one name, by policy; then one snapshot by id prefix.
    env.cmd("forget", &["--name", "a", "--keep-last", "1"])
        .run()
        .ok();
    let left = ids(&env);
    assert_eq!(left.len(), 3);
    assert!(left.contains(&made[4]) && !left.contains(&made[2]));
    env.cmd("forget", &[&made[5][..10]]).run().ok();
    let left = ids(&env);
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&made[5]));
    // What is left still restores.
    assert_same(&env.restore_stdout(&made[4]), &read(&a), "a survives");
    check_clean(&env);
}

#[test]
fn gc_reclaims_in_two_phases_and_never_touches_what_is_used() {
    let env = Env::new();
    let (a, b) = (env.path("a.img"), env.path("b.img"));
    let da = random_bytes(3 * MIB, 1);
    let mut db = da[..MIB].to_vec(); // b shares its first MiB with a
    db.extend(random_bytes(2 * MIB, 2));
    write_file(&a, &da);
    write_file(&b, &db);
    let ia = text(&env.backup(&a, &["--name", "a"]), "snapshot_id").to_string();
    let ib = text(&env.backup(&b, &["--name", "b"]), "snapshot_id").to_string();

    // Nothing is garbage yet.
    let d = gc_now(&env);
    assert_eq!(num(&d, "condemned_packs"), 0, "{d}");
    env.cmd("forget", &[ia.as_str()]).run().ok();
    let full = env.repo_bytes();

    // A dry run reports and changes nothing.
    let before = tree(&env.repo);
    let d = summary(&env.cmd("gc", &["--dry-run", "--json"]).run().ok());
    assert_eq!(num(&d, "condemned_packs"), 1, "{d}");
    assert_eq!(num(&d, "repacked_packs"), 1, "{d}");
    assert_eq!(tree(&env.repo), before, "a dry run changes nothing");
    // --max-repack bounds the live bytes one run copies: too small a budget, no repack.
    let d = summary(
        &env.cmd("gc", &["--dry-run", "--json", "--max-repack", "64KiB"])
            .run()
            .ok(),
    );
    assert_eq!(num(&d, "repacked_packs"), 0, "{d}");
    assert_eq!(num(&d, "condemned_packs"), 0, "{d}");

    // Phase one with a long grace period: a's pack is condemned, nothing is deleted; the
    // shared MiB is live, so the pack is repacked (its live third copied out first).
    let d = summary(&env.cmd("gc", &["--grace", "1h", "--json"]).run().ok());
    assert_eq!(num(&d, "condemned_packs"), 1, "{d}");
    assert_eq!(num(&d, "repacked_packs"), 1, "{d}");
    assert_eq!(num(&d, "reclaimed_bytes"), 0, "{d}");
    assert!(num(&d, "garbage_bytes") >= 2 * MIB as u64 - 4096, "{d}");
    assert!(
        env.repo_bytes() >= full,
        "nothing deleted inside the grace period"
    );
    // doctor says what waits.
    let out = mover(["doctor", "--json", "-r"]).arg(&env.repo).run().ok();
    let gc_check = out.json()["data"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "garbage collection")
        .cloned()
        .unwrap_or_else(|| panic!("no garbage collection check: {out}"));
    assert!(
        gc_check["detail"]
            .as_str()
            .unwrap()
            .starts_with("1 condemned packs"),
        "{out}"
    );
    // A second run inside the grace period sweeps nothing.
    let d = summary(&env.cmd("gc", &["--json"]).run().ok());
    assert_eq!(num(&d, "swept_packs"), 0, "{d}");
    assert_eq!(num(&d, "condemned_packs"), 0, "condemned once: {d}");
    assert_same(&env.restore_stdout(&ib), &db, "b restores meanwhile");
    check_clean(&env);

    // Two hours later (the tombstone's time moved back): the grace period is over.
    assert_eq!(files_under(&env.repo.join("gc")).len(), 1);
    age_tombstones(&env.repo, 2 * 3_600_000);
    let d = gc_now(&env);
    assert_eq!(num(&d, "swept_packs"), 1, "{d}");
    assert!(num(&d, "reclaimed_bytes") >= 3 * MIB as u64, "{d}");
    assert!(env.repo_bytes() < full - MIB as u64, "space came back");
    assert_eq!(d["pending"], serde_json::json!([]), "nothing pending: {d}");
    assert_same(&env.restore_stdout(&ib), &db, "b restores after the sweep");
    check_clean(&env);
    let out = env.cmd("verify", &[] as &[&str]).run();
    assert_eq!(out.exit(), 0, "{out}");
}

/// Moves the created time of every tombstone of a local repository back by `ms`, as if it
/// had been written that long ago (the format is documented in docs/FORMAT.md: created ms at
/// 16, then a BLAKE3 trailer).
pub(crate) fn age_tombstones(repo: &Path, ms: i64) {
    for p in files_under(&repo.join("gc")) {
        let mut b = read(&p);
        let created = i64::from_le_bytes(b[16..24].try_into().unwrap()) - ms;
        b[16..24].copy_from_slice(&created.to_le_bytes());
        let n = b.len() - 32;
        let sum = blake3::hash(&b[..n]);
        b[n..].copy_from_slice(sum.as_bytes());
        std::fs::write(&p, &b).unwrap();
    }
}

#[test]
fn a_backup_that_reused_condemned_data_past_the_deadline_commits_nothing() {
    let env = Env::new();
    let data = random_bytes(2 * MIB, 5);
    let first = text(&env.backup_stdin(&data, &["--name", "s"]), "snapshot_id").to_string();
    env.cmd("forget", &[first.as_str()]).run().ok();

    // A backup of the same stream starts (it will reuse every chunk) and stalls before its
    // end, until told to go on; meanwhile gc condemns the now unreferenced pack with a 2 s
    // grace period; the backup goes on only after the commit deadline (1 s after the
    // tombstone) and must refuse to commit. Files, not sleeps, order the steps, so a slow
    // machine changes nothing.
    let dir = env.dir.path();
    let feed = dir.join("feed.sh");
    std::fs::write(
        &feed,
        "cat \"$1\"; touch \"$2/fed\"; while [ ! -e \"$2/go\" ]; do sleep 0.05; done\n",
    )
    .unwrap();
    let input = dir.join("input");
    write_file(&input, &data);
    let mover_bin = mover_bin();
    let child = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "bash {} {} {} | {} backup -q -r {} --chunk-size {CHUNK_ARG} --name s --source -",
            feed.display(),
            input.display(),
            dir.display(),
            mover_bin.display(),
            env.repo.display()
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // All but the pipe's buffer of the stream is read: the backup has opened the repository.
    let started = std::time::Instant::now();
    while !dir.join("fed").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the feed never ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let d = summary(&env.cmd("gc", &["--grace", "2s", "--json"]).run().ok());
    assert_eq!(num(&d, "condemned_packs"), 1, "{d}");
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(dir.join("go"), b"").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("garbage collection") && stderr.contains("nothing was committed"),
        "{stderr}"
    );
    assert_eq!(env.snapshot_count(), 0, "nothing committed");

    // A backup started after the tombstone stores fresh copies and commits; the sweep then
    // deletes the condemned pack and the new snapshot still restores.
    let id = text(&env.backup_stdin(&data, &["--name", "s"]), "snapshot_id").to_string();
    std::thread::sleep(Duration::from_millis(2100));
    let d = gc_now(&env);
    assert_eq!(num(&d, "swept_packs"), 1, "{d}");
    assert_same(&env.restore_stdout(&id), &data, "restores after the sweep");
    check_clean(&env);
}

#[test]
fn backups_in_parallel_with_forget_and_gc_loops_stay_restorable() {
    let env = Arc::new(Env::new());
    let stop = Arc::new(AtomicBool::new(false));
    // Snapshot id -> the bytes it must restore to.
    let expected: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let refused = Arc::new(Mutex::new(0usize));
    let base = random_bytes(2 * MIB, 77);
    let mut workers = Vec::new();
    for w in 0..2u64 {
        let (env, stop, expected, refused) = (
            Arc::clone(&env),
            Arc::clone(&stop),
            Arc::clone(&expected),
            Arc::clone(&refused),
        );
        let base = base.clone();
        workers.push(std::thread::spawn(move || {
            let src = env.path(&format!("w{w}.img"));
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Mostly shared data, a changing part: reuse across runs and workers.
                let mut data = base.clone();
                let patch = random_bytes(256 * 1024, 1000 * w + i);
                let at = ((i % 6) as usize) * 256 * 1024;
                data[at..at + patch.len()].copy_from_slice(&patch);
                write_file(&src, &data);
                let out = env
                    .cmd("backup", &["--json", "--chunk-size", CHUNK_ARG, "--name"])
                    .arg(format!("w{w}"))
                    .arg("--source")
                    .arg(&src)
                    .run();
                match out.exit() {
                    0 => {
                        let id = text(&out.json()["data"], "snapshot_id").to_string();
                        expected.lock().unwrap().insert(id, data);
                    }
                    1 if out.stderr.contains("garbage collection may remove") => {
                        *refused.lock().unwrap() += 1;
                    }
                    _ => panic!("backup failed: {out}"),
                }
                i += 1;
            }
        }));
    }
    // At least 12 s and at least 5 gc cycles, however slow the machine.
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut cycles = 0;
    while Instant::now() < deadline || cycles < 5 {
        env.cmd("forget", &["--keep-last", "2"]).run().ok();
        let out = env.cmd("gc", &["--grace", "2s", "--json"]).run();
        assert!(out.exit() == 0, "gc beside backups: {out}");
        cycles += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    // Let the last tombstones come due, collect everything collectable, then check.
    std::thread::sleep(Duration::from_millis(2100));
    for _ in 0..2 {
        env.cmd("gc", &["--grace", "0s"]).run().ok();
    }
    check_clean(&env);
    let left = ids(&env);
    assert!(left.len() >= 2, "the newest snapshots of each name remain");
    let expected = expected.lock().unwrap();
    for id in &left {
        let want = expected
            .get(id)
            .unwrap_or_else(|| panic!("unknown snapshot {id}"));
        assert_same(&env.restore_stdout(id), want, "snapshot restores bit-exact");
    }
    let out = env.cmd("verify", &[] as &[&str]).run();
    assert_eq!(out.exit(), 0, "{out}");
    eprintln!(
        "{} backups committed, {} refused at commit, {cycles} gc cycles",
        expected.len(),
        refused.lock().unwrap()
    );
}

#[test]
fn check_finds_structural_damage_and_repair_rebuilds_the_index() {
    let env = Env::new();
    let src = env.path("a.img");
    let data = random_bytes(MIB + 5000, 9);
    write_file(&src, &data);
    let id = text(&env.backup(&src, &[]), "snapshot_id").to_string();
    check_clean(&env);

    // Lose the index: check reports it, repair index rebuilds it from the packs.
    let segs = files_under(&env.repo.join("index"));
    assert_eq!(segs.len(), 1);
    std::fs::remove_file(&segs[0]).unwrap();
    let out = env.cmd("check", &[] as &[&str]).run();
    assert_eq!(out.exit(), 1, "{out}");
    assert!(
        out.stdout_str().contains("repair snapshots")
            || out.stdout_str().contains("no intact pack"),
        "{out}"
    );
    let d = summary(&repair(&env, "index", &["--json"]).run().ok());
    assert_eq!(
        num(&d, "chunks") as usize,
        data.len().div_ceil(CHUNK),
        "{d}"
    );
    check_clean(&env);
    assert_same(
        &env.restore_stdout(&id),
        &data,
        "restores after repair index",
    );

    // A damaged segment is named by check.
    let seg = files_under(&env.repo.join("index")).remove(0);
    let mut b = read(&seg);
    b[20] ^= 1;
    std::fs::write(&seg, &b).unwrap();
    let out = env.cmd("check", &[] as &[&str]).run();
    assert_eq!(out.exit(), 1, "{out}");
    assert!(out.stdout_str().contains(&name_of(&seg)[..8]), "{out}");
    repair(&env, "index", &[]).run().ok();
    check_clean(&env);

    // A lost pack: check and repair snapshots name the snapshot; it is marked, not deleted.
    for p in env.packs() {
        std::fs::remove_file(p).unwrap();
    }
    let out = env.cmd("check", &[] as &[&str]).run();
    assert_eq!(out.exit(), 1, "{out}");
    assert!(out.stdout_str().contains("missing"), "{out}");
    let before = tree(&env.repo);
    let out = repair(&env, "snapshots", &["--dry-run"]).run();
    assert_eq!(tree(&env.repo), before, "a dry run changes nothing: {out}");
    let out = repair(&env, "snapshots", &["--json"]).run();
    assert_eq!(out.exit(), 3, "{out}");
    let d = summary(&out);
    assert_eq!(d["damaged"][0]["id"], id.as_str(), "{out}");
    assert_eq!(
        num(&d["damaged"][0], "bytes_lost"),
        data.len() as u64,
        "{out}"
    );
    assert_eq!(env.snapshot_count(), 1, "marked, not deleted");
    assert_eq!(env.snapshots()[0]["damaged"], true);
    let out = mover(["doctor", "-r"]).arg(&env.repo).run();
    assert_eq!(out.exit(), 1, "{out}");
    assert!(out.stdout_str().contains("marked damaged"), "{out}");
    let out = env.cmd("snapshots", &[] as &[&str]).run().ok();
    assert!(out.stdout_str().contains("DAMAGED"), "{out}");
}

#[test]
fn verify_reads_a_subset_when_asked() {
    let env = Env::new();
    let src = env.path("a.img");
    write_file(&src, &random_bytes(4 * MIB, 3));
    env.backup(&src, &[]);
    let total = 4 * MIB / CHUNK;
    let mut covered = 0;
    for n in 1..=4 {
        let out = env
            .cmd("verify", &["--read-data", "--json", "--subset"])
            .arg(format!("{n}/4"))
            .run()
            .ok();
        let d = summary(&out);
        assert_eq!(num(&d, "chunks_total") as usize, total, "{out}");
        let part = num(&d, "chunks_checked") as usize;
        assert!(part < total, "a part is smaller than the whole: {out}");
        covered += part;
    }
    assert_eq!(covered, total, "the parts 1/4 … 4/4 cover every chunk once");
    let d = summary(&env.cmd("verify", &["--json", "--subset", "25%"]).run().ok());
    let n = num(&d, "chunks_checked") as usize;
    assert!(n > 0 && n < total, "25 % of {total} chunks: {n}");
    for bad in ["0/4", "5/4", "0%", "150%", "x"] {
        env.cmd("verify", &["--subset", bad])
            .run()
            .assert_error(2, &["subset"]);
    }
    // A damaged chunk inside the part that is read is reported.
    let pack = env.packs().remove(0);
    let mut b = read(&pack);
    b[100] ^= 0xff;
    std::fs::write(&pack, &b).unwrap();
    let failures = (1..=4)
        .filter(|n| {
            env.cmd("verify", &["--subset"])
                .arg(format!("{n}/4"))
                .run()
                .exit()
                == 1
        })
        .count();
    assert_eq!(failures, 1, "exactly one part holds the damaged chunk");
}

#[test]
fn gc_compacts_the_index_once_it_has_many_small_segments() {
    let env = Env::new();
    let img = env.path("a.img");
    let segments = || std::fs::read_dir(env.repo.join("index")).unwrap().count();
    let mut last = String::new();
    for seed in 0..4 {
        write_file(&img, &random_bytes(MIB, 10 + seed));
        last = text(&env.backup(&img, &["--name", "a"]), "snapshot_id").to_string();
    }
    assert_eq!(segments(), 4, "one segment a backup");
    // Below the threshold nothing is merged.
    let d = gc_now(&env);
    assert_eq!(num(&d, "index_segments_merged"), 0, "{d}");
    // At it, the four are merged into one; they stay beside it for the grace period...
    let args = ["--grace", "0s", "--compact-segments", "4", "--json"];
    let d = summary(&env.cmd("gc", &args).run().ok());
    assert_eq!(num(&d, "index_segments_merged"), 4, "{d}");
    assert_eq!(num(&d, "index_segments_after"), 5, "{d}");
    assert_eq!(segments(), 5);
    // ...and a later run removes them.
    let d = summary(&env.cmd("gc", &args).run().ok());
    assert_eq!(num(&d, "index_segments_removed"), 4, "{d}");
    assert_eq!(num(&d, "index_segments_merged"), 0, "{d}");
    assert_eq!(segments(), 1);
    // The compacted index serves check, verify, restore and deduplication.
    env.cmd("check", &[] as &[&str]).run().ok();
    env.cmd("verify", &[] as &[&str]).run().ok();
    assert_eq!(env.restore_stdout(&last), read(&img));
    let again = env.backup(&img, &["--name", "a"]);
    assert_eq!(num(&again, "chunks_new"), 0, "{again}");
}

//! What a hostile tester found (issue 14, items 6 and 8 to 11): check naming the right repair,
//! temporary files of killed backups, a damaged config, archives out of order or
//! concatenated, and a damaged archive header.

use std::path::Path;

use crate::util::*;

/// A repository with one backup of random data; returns the snapshot id and the data.
fn one_backup(env: &Env, seed: u64) -> (String, Vec<u8>) {
    let src = env.path(&format!("{seed}.img"));
    let data = random_bytes(MIB + 5000, seed);
    write_file(&src, &data);
    (
        text(&env.backup(&src, &[]), "snapshot_id").to_string(),
        data,
    )
}

fn flip(path: &Path, at: impl Fn(usize) -> usize) {
    let mut b = read(path);
    let i = at(b.len());
    b[i] ^= 0x40;
    std::fs::write(path, &b).unwrap();
}

// ---- item 8: check names the repair that fixes what it found ------------------------------

/// A lost index segment leaves every chunk in its pack: check must point to `repair index`,
/// not to `repair snapshots` (which would mark a whole snapshot damaged).
#[test]
fn check_recommends_repair_index_for_a_lost_segment() {
    let env = Env::new();
    let (id, data) = one_backup(&env, 81);
    for seg in files_under(&env.repo.join("index")) {
        std::fs::remove_file(seg).unwrap();
    }
    let out = env.cmd("check", &[] as &[&str]).run();
    assert_eq!(out.exit(), 1, "{out}");
    let text = out.stdout_str();
    assert!(text.contains("repair index"), "names `repair index`: {out}");
    assert!(
        !text.contains("repair snapshots"),
        "not `repair snapshots`: {out}"
    );
    mover(["repair", "index", "-r"]).arg(&env.repo).run().ok();
    env.cmd("check", &[] as &[&str]).run().ok();
    assert_same(&env.restore_stdout(&id), &data, "after repair index");
}

/// A pack whose own list is damaged: `repair index` recovers its entries, so check names it
/// for the snapshot too; a pack that is gone leaves `repair snapshots` as the fix.
#[test]
fn check_recommends_the_repair_that_fits_each_damage() {
    let env = Env::new();
    let (_, _) = one_backup(&env, 82);
    let packs = env.packs();
    assert_eq!(packs.len(), 1);
    flip(&packs[0], |len| len - 20);
    let out = env.cmd("check", &[] as &[&str]).run();
    assert_eq!(out.exit(), 1, "{out}");
    let snapshot_line = out
        .stdout_str()
        .lines()
        .find(|l| l.starts_with("ERROR  snapshot"))
        .unwrap_or_default()
        .to_string();
    assert!(
        snapshot_line.contains("repair index"),
        "a damaged pack list: the snapshot's line names `repair index`: {out}"
    );
    std::fs::remove_file(&packs[0]).unwrap();
    let out = env.cmd("check", &[] as &[&str]).run();
    assert_eq!(out.exit(), 1, "{out}");
    assert!(
        out.stdout_str().contains("repair snapshots"),
        "a lost pack: {out}"
    );
}

// ---- item 6: temporary files of killed writes ---------------------------------------------

fn summary(out: &Output) -> serde_json::Value {
    out.json()["data"].clone()
}

/// Sets a file's modification time `secs` seconds into the past.
fn age(path: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(secs))
        .unwrap();
}

/// A backup killed (SIGKILL) while its pack is written leaves the pack's temporary file; the
/// run is repeated until the kill lands during the write. Returns the file.
fn kill_a_backup_mid_write(env: &Env) -> Option<std::path::PathBuf> {
    let src = env.path("big.img");
    for attempt in 0..6u64 {
        write_file(&src, &random_bytes(24 * MIB, 600 + attempt));
        let (mut child, _) = env
            .cmd("backup", &["-q", "--chunk-size", CHUNK_ARG, "--source"])
            .arg(&src)
            .spawn();
        let prefix = format!(".tmp-{}-", child.id());
        let deadline = std::time::Instant::now() + DEFAULT_TIMEOUT;
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            let writing = files_under(&env.repo.join("packs"))
                .into_iter()
                .find(|p| name_of(p).starts_with(&prefix));
            if writing.is_some() {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        let _ = child.kill();
        let _ = child.wait();
        let left = files_under(&env.repo.join("packs"))
            .into_iter()
            .find(|p| name_of(p).starts_with(&prefix));
        if left.is_some() {
            return left;
        }
    }
    None
}

#[test]
fn gc_removes_temporary_files_of_killed_writes_and_check_and_doctor_report_them() {
    let env = Env::new();
    let (id, data) = one_backup(&env, 61);
    let Some(killed) = kill_a_backup_mid_write(&env) else {
        panic!("no kill landed while a pack was written in six tries");
    };
    // Temporary files elsewhere in the repository, as killed writes of segments or the
    // config leave them; one is written now (a write that may still be running).
    let index_tmp = env.repo.join("index/.tmp-4999999-7");
    let root_tmp = env.repo.join(".tmp-4999999-8");
    let fresh = env.repo.join("snapshots/.tmp-4999999-9");
    for p in [&index_tmp, &root_tmp, &fresh] {
        write_file(p, b"partial");
    }
    for p in [&killed, &index_tmp, &root_tmp] {
        age(p, 2 * 3600);
    }

    let out = env.cmd("check", &["--json"]).run();
    assert_eq!(out.exit(), 0, "temporary files are not damage: {out}");
    let notes = summary(&out)["notes"].to_string();
    assert!(
        notes.contains("4 temporary files") && notes.contains("`mover gc` removes them"),
        "check reports them, with what to do: {out}"
    );
    let out = mover(["doctor", "-r"]).arg(&env.repo).run();
    assert!(
        out.stdout_str().contains("temporary files") && out.stdout_str().contains("mover gc"),
        "doctor reports them, with what to do: {out}"
    );

    // gc with the default grace: the old ones go, the fresh one stays.
    let out = env.cmd("gc", &["--json"]).run().ok();
    assert_eq!(num(&summary(&out), "temporaries_removed"), 3, "{out}");
    for p in [&killed, &index_tmp, &root_tmp] {
        assert!(!p.exists(), "{} is removed: {out}", p.display());
    }
    assert!(
        fresh.exists(),
        "a temporary file younger than the grace period stays"
    );
    env.cmd("check", &[] as &[&str]).run().ok();
    assert_same(&env.restore_stdout(&id), &data, "after gc");
}

// ---- item 9: a damaged config -------------------------------------------------------------

#[test]
fn a_damaged_config_is_named_and_repair_config_brings_the_repository_back() {
    let env = Env::new();
    let (id, data) = one_backup(&env, 91);
    let config = env.repo.join("config");
    flip(&config, |_| 60); // a byte of its checksum
    let out = env.cmd("snapshots", &[] as &[&str]).run();
    out.assert_error(1, &["config is damaged", "mover repair config"]);
    assert!(
        !out.stderr.contains("mover init"),
        "init is not the fix: {out}"
    );
    mover(["init", "-r"])
        .arg(&env.repo)
        .run()
        .assert_error(1, &["config is damaged", "mover repair config"]);

    let before = read(&config);
    mover(["repair", "config", "--dry-run", "-r"])
        .arg(&env.repo)
        .run()
        .ok();
    assert_eq!(read(&config), before, "a dry run writes nothing");
    let out = mover(["repair", "config", "--json", "-r"])
        .arg(&env.repo)
        .run()
        .ok();
    let d = summary(&out);
    assert_eq!(d["intact"], false, "{out}");
    assert!(d["encryption"].is_null(), "{out}");
    assert_eq!(
        read(&env.repo.join("config.damaged")),
        before,
        "the old one is kept"
    );
    env.cmd("check", &[] as &[&str]).run().ok();
    assert_same(&env.restore_stdout(&id), &data, "after repair config");

    // A lost config: the same.
    std::fs::remove_file(&config).unwrap();
    env.cmd("snapshots", &[] as &[&str])
        .run()
        .assert_error(1, &["damaged or lost", "mover repair config"]);
    mover(["repair", "config", "-r"]).arg(&env.repo).run().ok();
    assert_same(&env.restore_stdout(&id), &data, "after a lost config");
}

#[test]
fn repair_config_of_an_encrypted_repository_needs_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let pw = |m: Mover| m.env("MOVER_PASSWORD", "correct horse");
    pw(mover(["init", "--encrypt", "--cipher", "aes-256-gcm", "-r"]).arg(&repo))
        .run()
        .ok();
    let data = random_bytes(300_000, 92);
    let out = pw(mover(["backup", "--json", "--source", "-", "-r"]).arg(&repo))
        .stdin(&data)
        .run()
        .ok();
    let id = text(&summary(&out), "snapshot_id").to_string();
    std::fs::remove_file(repo.join("config")).unwrap();

    mover(["repair", "config", "-r"])
        .arg(&repo)
        .env_remove("MOVER_PASSWORD")
        .run()
        .assert_error(1, &["encrypted", "password"]);
    assert!(
        !repo.join("config").exists(),
        "nothing written without the password"
    );
    let out = pw(mover(["repair", "config", "--json", "-r"]).arg(&repo))
        .run()
        .ok();
    assert_eq!(summary(&out)["encryption"], "aes-256-gcm", "{out}");
    let out = pw(mover(["restore", id.as_str(), "--to", "-", "-r"]).arg(&repo))
        .run()
        .ok();
    assert_same(&out.stdout, &data, "after repair config");
}

// ---- item 10: archives out of order, unrelated or concatenated ----------------------------

/// `backup --to-archive TO` of `src` (with `--catalog`, `--parent latest` when `parent`);
/// returns the archive id.
fn archive_of(src: &Path, to: &Path, catalog: &Path, parent: bool) -> String {
    let mut m = mover(["backup", "--json", "--chunk-size", CHUNK_ARG, "--source"])
        .arg(src)
        .arg("--to-archive")
        .arg(to)
        .arg("--catalog")
        .arg(catalog);
    if parent {
        m = m.args(&["--parent", "latest"]);
    }
    let out = m.run().ok();
    text(&summary(&out)["archive"], "id").to_string()
}

struct Archives {
    dir: tempfile::TempDir,
    full: std::path::PathBuf,
    inc: std::path::PathBuf,
    other: std::path::PathBuf,
    ids: [String; 3],
    old: Vec<u8>,
    new: Vec<u8>,
}

/// A full archive and an incremental of it, and an unrelated full archive.
fn archives() -> Archives {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let old = random_bytes(MIB, 1001);
    let mut new = old.clone();
    new[CHUNK * 3..CHUNK * 3 + 100].copy_from_slice(&random_bytes(100, 1002));
    write_file(&p("disk.img"), &old);
    let full_id = archive_of(&p("disk.img"), &p("full.arc"), &p("cat.json"), false);
    write_file(&p("disk.img"), &new);
    let inc_id = archive_of(&p("disk.img"), &p("inc.arc"), &p("cat.json"), true);
    write_file(&p("other.img"), &random_bytes(MIB / 2, 1003));
    let other_id = archive_of(&p("other.img"), &p("other.arc"), &p("cat2.json"), false);
    Archives {
        full: p("full.arc"),
        inc: p("inc.arc"),
        other: p("other.arc"),
        ids: [full_id, inc_id, other_id],
        dir,
        old,
        new,
    }
}

fn restore_from(archives: &[&Path], to: &Path) -> Output {
    let mut m = mover(["restore"]);
    for a in archives {
        m = m.arg("--from-archive").arg(a);
    }
    m.arg("--to").arg(to).run()
}

#[test]
fn a_chain_out_of_order_or_with_an_unrelated_archive_is_refused_or_warned() {
    let a = archives();
    let to = a.dir.path().join("restored.img");
    // The incremental first, the full last: that would restore the old image silently.
    let out = restore_from(&[&a.inc, &a.full], &to);
    out.assert_error(1, &["order", &a.ids[1], &a.ids[0]]);
    assert!(!to.exists(), "nothing written: {out}");
    // An unrelated archive before the one restored: restored, with a warning and exit 3.
    let out = restore_from(&[&a.other, &a.full], &to);
    assert_eq!(out.exit(), 3, "{out}");
    out.assert_stderr_has(&[&a.ids[2], "not in the chain"]);
    assert_same(&read(&to), &a.old, "the full archive");
    std::fs::remove_file(&to).unwrap();
    // The right order.
    restore_from(&[&a.full, &a.inc], &to).ok();
    assert_same(&read(&to), &a.new, "full, then incremental");
}

#[test]
fn archive_ls_and_verify_report_every_archive_of_a_concatenation() {
    let a = archives();
    let cat = a.dir.path().join("all.arc");
    let mut bytes = read(&a.full);
    bytes.extend(read(&a.inc));
    bytes.extend(read(&a.other));
    write_file(&cat, &bytes);
    for sub in ["ls", "verify"] {
        let out = mover(["archive", sub, "--json"]).arg(&cat).run().ok();
        let d = summary(&out);
        assert_eq!(
            text(&d, "archive_id"),
            a.ids[0],
            "the first archive, as before: {out}"
        );
        let ids: Vec<String> = (d["archives"].as_array().unwrap().iter())
            .map(|e| text(e, "archive_id").to_string())
            .collect();
        assert_eq!(ids, a.ids, "`archive {sub}` reports every archive: {out}");
        let out = mover(["archive", sub]).arg(&cat).run().ok();
        for id in &a.ids {
            assert!(out.stdout_str().contains(id.as_str()), "{sub}: {out}");
        }
    }
    // Restoring from the concatenation restores its first archive and says the rest was not
    // used.
    let to = a.dir.path().join("first.img");
    let out = restore_from(&[&cat], &to);
    assert_eq!(out.exit(), 3, "{out}");
    out.assert_stderr_has(&["another archive", &a.ids[1]]);
    assert_same(&read(&to), &a.old, "the first archive of the concatenation");
}

// ---- item 11: a damaged archive header ----------------------------------------------------

/// One flipped byte in the header frame: the archive still restores bit-exact (from the
/// header's copy), with the damage reported and exit 3.
#[test]
fn an_archive_with_a_damaged_header_frame_restores_from_its_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (src, arc) = (dir.path().join("disk.img"), dir.path().join("a.arc"));
    let data = random_bytes(MIB + 3000, 1101);
    write_file(&src, &data);
    archive_of(&src, &arc, &dir.path().join("cat.json"), false);
    // Past the volume frame (64 + 32 bytes) and the header's frame header: its payload.
    flip(&arc, |_| 96 + 64 + 30);
    let to = dir.path().join("restored.img");
    let out = restore_from(&[&arc], &to);
    assert_eq!(out.exit(), 3, "the damage is reported: {out}");
    assert_same(&read(&to), &data, "restored from the header's copy");
    let out = mover(["archive", "ls", "--json"]).arg(&arc).run();
    assert!(
        summary(&out)["archive_id"].is_string(),
        "ls reads the header: {out}"
    );
}

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

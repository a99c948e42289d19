//! Repair and gc never lose data a snapshot needs, even when the index lies (issue 14, items 1
//! and 2): a lost index segment, or a pack whose trailer is damaged.

use std::path::PathBuf;

use serde_json::Value;

use crate::util::*;

fn summary(out: &Output) -> Value {
    out.json()["data"].clone()
}

/// `gc --grace 0s --json` (exit 0 or 3), its summary.
fn gc_now(env: &Env) -> (Value, Output) {
    let out = env.cmd("gc", &["--grace", "0s", "--json"]).run();
    assert!(matches!(out.exit(), 0 | 3), "gc ran: {out}");
    (summary(&out), out)
}

/// Two backups of different data; returns their snapshot ids and data.
fn two_backups(env: &Env) -> Vec<(String, Vec<u8>)> {
    (0..2)
        .map(|i| {
            let src = env.path(&format!("{i}.img"));
            let data = random_bytes(MIB + 5000, 40 + i);
            write_file(&src, &data);
            let id = text(&env.backup(&src, &[]), "snapshot_id").to_string();
            (id, data)
        })
        .collect()
}

fn assert_all_restore(env: &Env, snaps: &[(String, Vec<u8>)], when: &str) {
    for (id, data) in snaps {
        let out = env.cmd("restore", &[id.as_str(), "--to", "-"]).run();
        assert_eq!(out.exit(), 0, "{when}: restore of {id} fails: {out}");
        assert_same(&out.stdout, data, when);
    }
}

fn segments(env: &Env) -> Vec<PathBuf> {
    files_under(&env.repo.join("index"))
}

#[test]
fn gc_after_a_lost_index_segment_deletes_no_pack_a_snapshot_needs() {
    let env = Env::new();
    let first = two_backups(&env);
    let before = segments(&env);
    assert_eq!(before.len(), 2, "one segment per backup");
    let packs = env.packs();
    // The segment of one backup is lost; its packs are now named by no index segment.
    std::fs::remove_file(&before[0]).unwrap();
    let runs: Vec<Output> = (0..3).map(|_| gc_now(&env).1).collect();
    assert_eq!(env.packs(), packs, "every pack is still there");
    for out in &runs {
        assert!(
            out.stderr.contains("repair index"),
            "points to `repair index`: {out}"
        );
    }
    // The fix gc points to: the index is whole again, and gc is clean.
    mover(["repair", "index", "-r"]).arg(&env.repo).run().ok();
    let (d, out) = gc_now(&env);
    assert_eq!(num(&d, "condemned_packs"), 0, "{out}");
    assert!(!out.stderr.contains("warning"), "{out}");
    assert_all_restore(&env, &first, "after repair index and gc");
}

/// Damages the trailer of the only pack of a fresh repository with `damage`, then runs
/// `repair index` and gc twice: every snapshot still restores, and the pack stays.
fn repair_and_gc_survive(damage: impl Fn(&mut Vec<u8>), what: &str) {
    let env = Env::new();
    let src = env.path("a.img");
    let data = random_bytes(MIB + 5000, 77);
    write_file(&src, &data);
    let id = text(&env.backup(&src, &[]), "snapshot_id").to_string();
    let snaps = vec![(id, data)];
    let packs = env.packs();
    assert_eq!(packs.len(), 1);
    let mut bytes = read(&packs[0]);
    damage(&mut bytes);
    std::fs::write(&packs[0], &bytes).unwrap();
    assert_all_restore(&env, &snaps, &format!("{what}: before repair"));

    let out = mover(["repair", "index", "--json", "-r"])
        .arg(&env.repo)
        .run();
    assert!(matches!(out.exit(), 0 | 3), "{what}: {out}");
    let d = summary(&out);
    assert_eq!(
        num(&d, "chunks") as usize,
        snaps[0].1.len().div_ceil(CHUNK),
        "{what}: every chunk is still indexed: {out}"
    );
    assert!(
        out.stderr.contains(&name_of(&packs[0])[..12]),
        "{what}: repair says what it did with the pack: {out}"
    );
    assert_all_restore(&env, &snaps, &format!("{what}: after repair index"));
    for _ in 0..2 {
        let (d, out) = gc_now(&env);
        assert_eq!(num(&d, "swept_packs"), 0, "{what}: {out}");
    }
    assert_eq!(env.packs(), packs, "{what}: the pack stays");
    assert_all_restore(&env, &snaps, &format!("{what}: after repair index and gc"));
}

#[test]
fn repair_index_keeps_a_pack_with_bytes_appended() {
    repair_and_gc_survive(|b| b.extend_from_slice(&[0x5a; 100]), "bytes appended");
}

#[test]
fn repair_index_keeps_a_pack_with_a_flipped_byte_in_its_trailer() {
    // Chunks of 64 KiB: 17 entries of 48 bytes, then the 32-byte footer. A byte of the
    // first entry's chunk id, and one of the footer's checksum.
    let entries = 17 * 48;
    repair_and_gc_survive(
        |b| {
            let at = b.len() - 32 - entries + 5;
            b[at] ^= 0x40;
        },
        "flip in an entry",
    );
    repair_and_gc_survive(
        |b| {
            let at = b.len() - 20;
            b[at] ^= 0x40;
        },
        "flip in the footer",
    );
}

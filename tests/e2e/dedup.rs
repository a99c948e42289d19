//! Deduplication across backups.

use crate::util::*;

#[test]
fn same_image_twice_stores_nothing_new() {
    let env = Env::new();
    let src = env.path("a.img");
    let data = random_bytes(2 * MIB + 777, 101);
    write_file(&src, &data);
    let first = env.backup(&src, &[]);
    assert_eq!(num(&first, "bytes_new"), data.len() as u64, "{first}");
    let before = env.repo_bytes();
    let packs_before = env.packs();

    let second = env.backup(&src, &[]);
    assert_eq!(num(&second, "bytes_new"), 0, "{second}");
    assert_eq!(num(&second, "bytes_stored"), 0, "{second}");
    assert_eq!(num(&second, "chunks_new"), 0, "{second}");
    assert_eq!(
        num(&second, "chunks_reused"),
        num(&first, "chunks_total"),
        "{second}"
    );
    let grown = env.repo_bytes() - before;
    assert!(
        grown < 4096,
        "a fully deduplicated backup of {} chunks grew the repository by {grown} bytes",
        num(&second, "chunks_total")
    );
    assert_eq!(
        env.packs(),
        packs_before,
        "no new pack for a duplicate backup"
    );
    assert_ne!(
        first["snapshot_id"], second["snapshot_id"],
        "each backup is a new snapshot"
    );
    for d in [&first, &second] {
        assert_same(
            &env.restore_stdout(text(d, "snapshot_id")),
            &data,
            "dedup restore",
        );
    }
}

#[test]
fn images_sharing_half_share_chunks() {
    let env = Env::new();
    let half = MIB; // a multiple of the chunk size
    let common = random_bytes(half, 111);
    let a: Vec<u8> = [common.clone(), random_bytes(half, 112)].concat();
    let b: Vec<u8> = [common, random_bytes(half, 113)].concat();
    let (pa, pb) = (env.path("a.img"), env.path("b.img"));
    write_file(&pa, &a);
    write_file(&pb, &b);
    let da = env.backup(&pa, &[]);
    let db = env.backup(&pb, &[]);
    assert_eq!(num(&da, "bytes_new"), a.len() as u64, "{da}");
    assert_eq!(num(&db, "bytes_new"), half as u64, "half of b is new: {db}");
    assert_eq!(num(&db, "chunks_reused"), (half / CHUNK) as u64, "{db}");
    assert_eq!(num(&db, "chunks_new"), (half / CHUNK) as u64, "{db}");
    assert_same(&env.restore_stdout(text(&da, "snapshot_id")), &a, "a");
    assert_same(&env.restore_stdout(text(&db, "snapshot_id")), &b, "b");
}

#[test]
fn stdin_backups_deduplicate_shifted_content() {
    // Content-defined chunking: inserting a few bytes at the front re-cuts only the first
    // chunk or two.
    let env = Env::new();
    let data = random_bytes(3 * MIB, 121);
    let first = env.backup_stdin(&data, &[]);
    assert_eq!(num(&first, "bytes_new"), data.len() as u64, "{first}");
    let again = env.backup_stdin(&data, &[]);
    assert_eq!(num(&again, "bytes_new"), 0, "{again}");
    let shifted: Vec<u8> = [b"inserted!".as_slice(), &data].concat();
    let third = env.backup_stdin(&shifted, &[]);
    assert!(
        num(&third, "bytes_new") < shifted.len() as u64 / 4,
        "shifted stream should mostly deduplicate: {third}"
    );
    assert_same(
        &env.restore_stdout(text(&third, "snapshot_id")),
        &shifted,
        "shifted stream",
    );
}

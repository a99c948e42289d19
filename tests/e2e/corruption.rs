//! Damaged packs: `verify` names the damaged snapshot and exits 1; `restore` exits 1 and
//! leaves no destination (never wrong data); an undamaged snapshot still verifies and
//! restores.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::*;

struct Fixture {
    env: Env,
    a: (String, Vec<u8>, PathBuf), // id, content, its only pack
    b: (String, Vec<u8>),
}

/// Two unrelated images, each in its own pack. A has more chunks (96) than a restore keeps
/// in flight (at most 64).
fn fixture() -> Fixture {
    let env = Env::new();
    let (pa, pb) = (env.path("a.img"), env.path("b.img"));
    let (da, db) = (random_bytes(6 * MIB, 501), random_bytes(MIB + 99, 502));
    write_file(&pa, &da);
    write_file(&pb, &db);
    let a = text(&env.backup(&pa, &["--name", "A"]), "snapshot_id").to_string();
    let packs = env.packs();
    assert_eq!(packs.len(), 1, "one small backup makes one pack: {packs:?}");
    let b = text(&env.backup(&pb, &["--name", "B"]), "snapshot_id").to_string();
    assert_eq!(env.packs().len(), 2, "the second image gets its own pack");
    // Both are fine before any damage.
    env.cmd("verify", &[] as &[&str]).run().ok();
    Fixture {
        env,
        a: (a, da, packs[0].clone()),
        b: (b, db),
    }
}

fn flip_byte(path: &Path, at: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 0x5a], at).unwrap();
    f.sync_all().unwrap();
}

fn check_damage_detected(fx: &Fixture, how: &str) {
    let env = &fx.env;
    let a = &fx.a.0;
    let (b, db) = &fx.b;

    // verify (everything): exit 1, A listed as DAMAGED by its short id, B ok.
    let out = env.cmd("verify", &[] as &[&str]).run();
    assert_eq!(out.exit(), 1, "{how}: verify must fail:\n{out}");
    let stdout = out.stdout_str();
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("DAMAGED") && l.contains(&a[..12])),
        "{how}: verify must name {} as DAMAGED:\n{out}",
        &a[..12]
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains(&b[..12])),
        "{how}: the undamaged snapshot {} must be ok:\n{out}",
        &b[..12]
    );
    assert!(out.stderr.contains("mover: "), "{how}:\n{out}");

    // verify --json agrees.
    let out = env.cmd("verify", &["--json"]).run();
    assert_eq!(out.exit(), 1, "{how}:\n{out}");
    let v = out.json();
    let snaps = v["data"]["snapshots"].as_array().expect("snapshots array");
    for s in snaps {
        let ok = s["ok"].as_bool().unwrap();
        if s["id"] == a.as_str() {
            assert!(!ok, "{how}: {s}");
            assert!(!s["problems"].as_array().unwrap().is_empty(), "{how}: {s}");
        } else {
            assert!(ok, "{how}: {s}");
        }
    }

    // verify of B alone passes; of A alone fails.
    env.cmd("verify", &[&b[..12]]).run().ok();
    let out = env.cmd("verify", &[&a[..12]]).run();
    assert_eq!(out.exit(), 1, "{how}:\n{out}");

    // restore of A fails and leaves nothing; B restores.
    let dest = env.path("restored-a");
    let out = env.cmd("restore", &[a.as_str(), "--to"]).arg(&dest).run();
    out.assert_error(1, &[&a[..12]]);
    assert!(
        !dest.exists(),
        "{how}: a failed restore must leave no destination"
    );
    let left: Vec<_> = files_under(env.dir.path())
        .into_iter()
        .filter(|p| name_of(p).starts_with(".restored-a"))
        .collect();
    assert!(left.is_empty(), "{how}: temporary files left: {left:?}");

    // --force over an existing file: the old file survives a failed restore.
    write_file(&dest, b"old contents");
    let out = env
        .cmd("restore", &[a.as_str(), "--force", "--to"])
        .arg(&dest)
        .run();
    assert_eq!(out.exit(), 1, "{how}:\n{out}");
    assert_eq!(
        read(&dest),
        b"old contents",
        "{how}: failed --force restore replaced the file"
    );
    std::fs::remove_file(&dest).unwrap();

    let dest_b = env.path("restored-b");
    env.restore_to(b, &dest_b);
    assert_same(&read(&dest_b), db, "undamaged snapshot");
}

#[test]
fn flipped_byte_in_a_pack() {
    let fx = fixture();
    let pack = &fx.a.2;
    let len = std::fs::metadata(pack).unwrap().len();
    flip_byte(pack, len / 2);
    check_damage_detected(&fx, "flipped byte");
}

#[test]
fn truncated_pack() {
    let fx = fixture();
    let pack = &fx.a.2;
    let len = std::fs::metadata(pack).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    check_damage_detected(&fx, "truncated pack");
}

#[test]
fn deleted_pack() {
    let fx = fixture();
    std::fs::remove_file(&fx.a.2).unwrap();
    check_damage_detected(&fx, "deleted pack");
}

#[test]
fn damaged_restore_to_stdout_fails_promptly() {
    // Streaming a damaged snapshot to stdout cannot take back what was written, but it must
    // stop with exit 1, not hang. Damage the first chunk, so the ordered writer can never
    // proceed while the feeder has many more chunks to hand out.
    let fx = fixture();
    flip_byte(&fx.a.2, 100);
    let out = fx
        .env
        .cmd("restore", &[fx.a.0.as_str(), "--to", "-"])
        .timeout(Duration::from_secs(20))
        .run();
    out.assert_error(1, &[&fx.a.0[..12]]);
    assert!(
        fx.a.1.starts_with(&out.stdout),
        "what was written before the failure must be a prefix of the image"
    );
}

//! Repositories written by earlier format versions must keep restoring bit-exact.
//! Fixtures live in `tests/fixtures/repo-v<N>/` beside the source they were made from.

use std::path::PathBuf;
use std::sync::Arc;

use chunker::format::{Disk, Manifest, ObjectId};
use mover::{restore, verify, Destination, Progress, RestoreOptions};
use targets::{LocalBackend, Repository, RepositoryOptions};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The repository's snapshots, oldest first, checked against their pinned short ids.
fn pinned_snapshots(repo: &Repository, want: [&str; 2]) -> Vec<(ObjectId, Manifest)> {
    let snaps = repo.snapshots().unwrap();
    let ids: Vec<String> = snaps
        .iter()
        .map(|(id, _)| id.to_hex()[..12].to_string())
        .collect();
    assert_eq!(ids, want, "fixture snapshot ids are pinned");
    snaps
}

/// Restores `disk` to `out` and returns the bytes written.
fn restore_disk(repo: &Repository, disk: &Disk, out: PathBuf) -> Vec<u8> {
    let opts = RestoreOptions {
        force: false,
        threads: 2,
        memory: 64 << 20,
        task_bytes: mover::LOCAL_TASK_BYTES,
        sync: false,
    };
    restore(
        repo,
        disk,
        &Destination::Path(out.clone()),
        &opts,
        &Progress::default(),
    )
    .unwrap();
    std::fs::read(&out).unwrap()
}

/// Verifies every snapshot; each must be whole.
fn verify_all(repo: &Repository, snaps: Vec<(ObjectId, Manifest)>) {
    let count = snaps.len();
    let all = snaps.into_iter().map(|(id, m)| (id, Ok(m))).collect();
    let report = verify(repo, all, 2, &Progress::default(), &|_| true).unwrap();
    assert!(report.snapshots.iter().all(|s| s.is_ok()));
    assert_eq!(report.snapshots.len(), count);
}

#[test]
fn repository_v1_restores_bit_exact() {
    let source = std::fs::read(fixtures().join("source-v1.bin")).unwrap();
    // Copy the fixture: opening must not need to write, but tests never touch fixtures.
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    copy_dir(&fixtures().join("repo-v1"), &repo_dir);
    let repo = Repository::open(
        Arc::new(LocalBackend::new(&repo_dir)),
        RepositoryOptions::default(),
    )
    .unwrap();
    let snaps = pinned_snapshots(&repo, ["7bc79a4c2f1c", "597d7d14c274"]);
    for (i, (_, manifest)) in snaps.iter().enumerate() {
        assert_eq!(manifest.disks.len(), 1, "a v1 manifest holds one disk");
        assert_eq!(manifest.disks[0].name, manifest.name);
        assert!(manifest.disks[0].change_token.is_empty());
        let out = tmp.path().join(format!("restored-{i}"));
        assert_eq!(
            restore_disk(&repo, &manifest.disks[0], out),
            source,
            "snapshot {} ({})",
            i,
            manifest.name
        );
    }
    verify_all(&repo, snaps);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Manifest v2: a two-disk snapshot with an attachment, then an incremental of it made from a
/// changed-extent list.
#[test]
fn repository_v2_multi_disk_restores_bit_exact() {
    let fx = fixtures();
    let sda = std::fs::read(fx.join("source-v1.bin")).unwrap();
    let sdb = [
        std::fs::read(fx.join("v2/disk-b.bin")).unwrap(),
        std::fs::read(fx.join("v2/disk-b2.bin")).unwrap(),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    copy_dir(&fx.join("repo-v2"), &repo_dir);
    let repo = Repository::open(
        Arc::new(LocalBackend::new(&repo_dir)),
        RepositoryOptions::default(),
    )
    .unwrap();
    let snaps = pinned_snapshots(&repo, ["0f04e2056423", "af70ab35e07b"]);
    let (first, second) = (&snaps[0].1, &snaps[1].1);
    assert_eq!(second.parent, Some(snaps[0].0));
    assert_eq!(first.attachments.len(), 1);
    assert_eq!(first.attachments[0].name, "vm.xml");
    assert_eq!(
        first.attachments[0].data,
        std::fs::read(fx.join("v2/vm.xml")).unwrap()
    );
    for (i, (_, m)) in snaps.iter().enumerate() {
        assert_eq!(m.name, "vm");
        let names: Vec<_> = m.disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sda", "sdb"]);
        for d in &m.disks {
            assert_eq!(d.change_token, ["t1", "t2"][i]);
            let expect = if d.name == "sda" { &sda } else { &sdb[i] };
            let out = tmp.path().join(format!("{}-{i}", d.name));
            assert!(
                restore_disk(&repo, d, out) == *expect,
                "{} of snapshot {i}",
                d.name
            );
        }
    }
}

/// Archives written by `mover backup --to-archive` (format v1, map layout 1): a full archive
/// and an incremental of it, restored alone and as a chain.
#[test]
fn archive_v1_restores_bit_exact() {
    use mover::archive::{open_input, restore_archive, ArchiveRestoreOptions};
    let fx = fixtures();
    let dir = fx.join("archive-v1/mover");
    let full = std::fs::read(fx.join("source-v1.bin")).unwrap();
    let changed = std::fs::read(dir.join("source-changed.bin")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let opts = ArchiveRestoreOptions::default();
    let path = |n: &str| dir.join(n).display().to_string();
    let cases: [(&[&str], &[u8], &str); 2] = [
        (&["full.archive"], &full, "cc139c16627f"),
        (&["full.archive", "inc.archive"], &changed, "a12d25158269"),
    ];
    for (i, (chain, want, id)) in cases.into_iter().enumerate() {
        let inputs = chain
            .iter()
            .map(|n| open_input(&path(n)).unwrap())
            .collect();
        let out = tmp.path().join(format!("restored-{i}"));
        let report = restore_archive(
            inputs,
            &Destination::Path(out.clone()),
            &opts,
            &Progress::default(),
        )
        .unwrap();
        assert!(report.verified && report.damage.is_empty() && report.lost.is_empty());
        assert_eq!(
            &report.snapshot.unwrap().to_hex()[..12],
            id,
            "pinned snapshot id"
        );
        assert!(std::fs::read(&out).unwrap() == want, "chain {chain:?}");
    }
}

/// The password of the encrypted fixtures (`tests/fixtures/repo-enc-v1`, `repo-aes-v1`,
/// `archive-enc-v1` and `archive-aes-v1`).
const FIXTURE_PASSWORD: &[u8] = b"mover fixture password";

/// Encrypted repository, first version (config version 2, XChaCha20-Poly1305): a full backup
/// of `source-v1.bin` and an incremental.
#[test]
fn encrypted_repository_v1_restores_bit_exact() {
    encrypted_repository_restores_bit_exact(
        "repo-enc-v1",
        chunker::crypto::Aead::XChaCha20Poly1305,
        ["3cda6813248e", "7f2408e87fc5"],
    );
}

/// Encrypted repository, config version 3 (AES-256-GCM): two backups of `source-v1.bin`.
#[test]
fn encrypted_repository_aes_v1_restores_bit_exact() {
    encrypted_repository_restores_bit_exact(
        "repo-aes-v1",
        chunker::crypto::Aead::Aes256Gcm,
        ["3a31ec984242", "f7408387a2a5"],
    );
}

fn encrypted_repository_restores_bit_exact(
    fixture: &str,
    aead: chunker::crypto::Aead,
    ids: [&str; 2],
) {
    use chunker::crypto::Password;
    let source = std::fs::read(fixtures().join("source-v1.bin")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    copy_dir(&fixtures().join(fixture), &repo_dir);
    let open = |pw: &[u8]| {
        Repository::open(
            Arc::new(LocalBackend::new(&repo_dir)),
            RepositoryOptions {
                password: Some(Password::new(pw.to_vec())),
                ..Default::default()
            },
        )
    };
    assert!(matches!(
        open(b"wrong"),
        Err(targets::Error::WrongPassword { .. })
    ));
    let repo = open(FIXTURE_PASSWORD).unwrap();
    assert!(repo.config().encryption == Some(aead) && repo.id_key().is_keyed());
    let snaps = pinned_snapshots(&repo, ids);
    for (i, (_, manifest)) in snaps.iter().enumerate() {
        let out = tmp.path().join(format!("restored-{i}"));
        assert_eq!(
            restore_disk(&repo, &manifest.disks[0], out),
            source,
            "snapshot {i}"
        );
    }
    verify_all(&repo, snaps);
}

/// Encrypted archive, format version 2 (XChaCha20-Poly1305).
#[test]
fn encrypted_archive_v2_restores_bit_exact() {
    encrypted_archive_restores_bit_exact("archive-enc-v1/full.archive");
}

/// Encrypted archive, format version 3 (AES-256-GCM).
#[test]
fn encrypted_archive_v3_restores_bit_exact() {
    encrypted_archive_restores_bit_exact("archive-aes-v1/full.archive");
}

fn encrypted_archive_restores_bit_exact(fixture: &str) {
    use chunker::crypto::Password;
    use mover::archive::{open_input, restore_archive, ArchiveRestoreOptions};
    let source = std::fs::read(fixtures().join("source-v1.bin")).unwrap();
    let path = fixtures().join(fixture);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let opts = |pw: &[u8]| ArchiveRestoreOptions {
        password: Some(Password::new(pw.to_vec())),
        ..Default::default()
    };
    let input = || open_input(path.to_str().unwrap()).unwrap();
    let dest = Destination::Path(out.clone());
    assert!(restore_archive(vec![input()], &dest, &opts(b"wrong"), &Progress::default()).is_err());
    assert!(!out.exists());
    let report = restore_archive(
        vec![input()],
        &dest,
        &opts(FIXTURE_PASSWORD),
        &Progress::default(),
    )
    .unwrap();
    assert!(report.verified && report.damage.is_empty() && report.lost.is_empty());
    assert_eq!(std::fs::read(&out).unwrap(), source);
}

//! A full disk under the repository or under the restore destination (tmpfs; needs root).

use crate::util::*;

/// Mounts a small tmpfs at `<temp>/mnt`, or reports why it cannot.
fn small_tmpfs(dir: &tempfile::TempDir, what: &str) -> Option<Tmpfs> {
    if !have_root(what) {
        return None;
    }
    match Tmpfs::mount(&dir.path().join("mnt"), "6m") {
        Ok(m) => Some(m),
        Err(e) => {
            skip(what, &format!("cannot mount a tmpfs: {e}"));
            None
        }
    }
}

#[test]
fn backup_into_a_full_repository_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_mount) = small_tmpfs(&dir, "backup onto a full disk") else {
        return;
    };
    let repo = dir.path().join("mnt").join("repo");
    mover(["init", "-r"]).arg(&repo).run().ok();
    let src = dir.path().join("big.img");
    write_file(&src, &random_bytes(16 * MIB, 701));
    let out = mover(["backup", "--chunk-size", CHUNK_ARG, "-r"])
        .arg(&repo)
        .arg("--source")
        .arg(&src)
        .run();
    out.assert_error(1, &["no space", "nothing was committed"]);
    assert!(out.stdout.is_empty(), "no snapshot id on failure:\n{out}");

    let list = mover(["snapshots", "--json", "-r"]).arg(&repo).run().ok();
    assert_eq!(list.json(), serde_json::json!([]), "{list}");
    let temps: Vec<_> = files_under(&repo)
        .into_iter()
        .filter(|p| name_of(p).starts_with('.'))
        .collect();
    assert!(
        temps.is_empty(),
        "temporary files left on the full disk: {temps:?}"
    );

    // Once there is room again (a smaller image), backups work.
    let small = dir.path().join("small.img");
    let data = random_bytes(MIB, 702);
    write_file(&small, &data);
    let out = mover(["backup", "-r"])
        .arg(&repo)
        .arg("--source")
        .arg(&small)
        .run()
        .ok();
    let id = out.stdout_str().trim().to_string();
    let out = mover(["restore", "-r"])
        .arg(&repo)
        .args(&[id.as_str(), "--to", "-"])
        .run()
        .ok();
    assert_same(&out.stdout, &data, "backup after a full disk");
}

#[test]
fn restore_onto_a_full_disk_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_mount) = small_tmpfs(&dir, "restore onto a full disk") else {
        return;
    };
    let repo = dir.path().join("repo");
    mover(["init", "-r"]).arg(&repo).run().ok();
    let src = dir.path().join("big.img");
    write_file(&src, &random_bytes(16 * MIB, 703));
    let out = mover(["backup", "-r"])
        .arg(&repo)
        .arg("--source")
        .arg(&src)
        .run()
        .ok();
    let id = out.stdout_str().trim().to_string();

    let mnt = dir.path().join("mnt");
    let dest = mnt.join("out.img");
    let out = mover(["restore", "-r"])
        .arg(&repo)
        .args(&[id.as_str(), "--to"])
        .arg(&dest)
        .run();
    out.assert_error(1, &["no space"]);
    assert!(
        !dest.exists(),
        "a failed restore must leave no destination file"
    );
    assert_eq!(
        files_under(&mnt),
        Vec::<std::path::PathBuf>::new(),
        "nothing may be left on the full disk"
    );
}

//! Failures: each gives the documented exit code and ONE line on stderr, starting `mover:`,
//! that says what is wrong and what to do; none leaves anything behind.

use crate::util::*;

#[test]
fn missing_source() {
    let env = Env::new();
    let missing = env.path("no-such.img");
    let out = env.cmd("backup", &["--source"]).arg(&missing).run();
    out.assert_error(
        1,
        &["no-such.img", "nothing was committed", "check the path"],
    );
    assert!(out.stdout.is_empty(), "{out}");
    assert!(env.snapshots().is_empty());
}

#[test]
fn error_messages_state_the_os_error_once() {
    // `mover: {e:#}` prints the error chain; an error whose message already includes its
    // source must not print that source a second time.
    let env = Env::new();
    let out = env
        .cmd("backup", &["--source"])
        .arg(env.path("no-such.img"))
        .run();
    assert_eq!(out.exit(), 1, "{out}");
    let os = "No such file or directory";
    assert_eq!(
        out.stderr.matches(os).count(),
        1,
        "the OS error is repeated in the message:\n{out}"
    );
}

#[test]
fn repository_that_is_not_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a.img");
    write_file(&src, b"data");
    // An empty directory, a directory of other files, and a missing one.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    write_file(&other.join("notes.txt"), b"hello");
    let missing = dir.path().join("missing");
    for repo in [&empty, &other, &missing] {
        for args in [
            vec!["backup", "--source", src.to_str().unwrap()],
            vec!["snapshots"],
            vec!["restore", "latest", "--to", "-"],
            vec!["verify"],
        ] {
            let mut m = mover(&args[..1]).arg("-r").arg(repo);
            for a in &args[1..] {
                m = m.arg(a);
            }
            let out = m.run();
            out.assert_error(1, &["not a mover repository", "mover init"]);
        }
    }
    assert!(
        !missing.exists(),
        "a failed command must not create the repository"
    );
    assert_eq!(files_under(&empty), Vec::<std::path::PathBuf>::new());
    assert_eq!(files_under(&other), vec![other.join("notes.txt")]);
}

#[test]
fn init_refuses_a_non_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("full");
    std::fs::create_dir(&target).unwrap();
    write_file(&target.join("keep.txt"), b"keep");
    let out = mover(["init", "-r"]).arg(&target).run();
    out.assert_error(1, &["not empty"]);
    assert_eq!(files_under(&target), vec![target.join("keep.txt")]);
    assert_eq!(read(&target.join("keep.txt")), b"keep");

    // Nor an existing repository.
    let env = Env::new();
    let config = read(&env.repo.join("config"));
    let out = mover(["init", "-r"]).arg(&env.repo).run();
    out.assert_error(1, &["not empty"]);
    assert_eq!(
        read(&env.repo.join("config")),
        config,
        "config must be untouched"
    );
}

#[test]
fn restore_over_an_existing_file_needs_force() {
    let env = Env::new();
    let src = env.path("a.img");
    let data = random_bytes(700_000, 401);
    write_file(&src, &data);
    let id = text(&env.backup(&src, &[]), "snapshot_id").to_string();

    let dest = env.path("precious");
    write_file(&dest, b"do not lose me");
    let out = env.cmd("restore", &[id.as_str(), "--to"]).arg(&dest).run();
    out.assert_error(1, &["exists", "--force"]);
    assert_eq!(
        read(&dest),
        b"do not lose me",
        "the existing file must be untouched"
    );
    let left: Vec<_> = files_under(env.dir.path())
        .into_iter()
        .filter(|p| name_of(p).starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");

    env.cmd("restore", &[id.as_str(), "--force", "--to"])
        .arg(&dest)
        .run()
        .ok();
    assert_same(&read(&dest), &data, "--force replaces the file");
    // Replacing a larger file must not keep its tail.
    write_file(&dest, &random_bytes(2 * data.len(), 402));
    env.cmd("restore", &[id.as_str(), "--force", "--to"])
        .arg(&dest)
        .run()
        .ok();
    assert_same(&read(&dest), &data, "--force over a larger file");
}

#[test]
fn restore_to_a_directory_or_a_missing_directory() {
    let env = Env::new();
    let src = env.path("a.img");
    write_file(&src, b"abc");
    let id = text(&env.backup(&src, &[]), "snapshot_id").to_string();
    let out = env
        .cmd("restore", &[id.as_str(), "--to"])
        .arg(env.dir.path())
        .run();
    out.assert_error(1, &["directory"]);
    let out = env
        .cmd("restore", &[id.as_str(), "--to"])
        .arg(env.path("no/such/dir/out.img"))
        .run();
    out.assert_error(1, &["no/such/dir/out.img"]);
}

#[test]
fn bad_chunk_size_is_a_usage_error() {
    let env = Env::new();
    let src = env.path("a.img");
    write_file(&src, b"abc");
    for bad in ["3MiB", "32KiB", "32MiB", "lots"] {
        let out = env
            .cmd("backup", &["--chunk-size", bad, "--source"])
            .arg(&src)
            .run();
        out.assert_error(2, &["chunk-size", bad]);
        assert!(out.stdout.is_empty(), "{out}");
    }
    assert!(env.snapshots().is_empty());
}

#[test]
fn no_repository_given_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a.img");
    write_file(&src, b"abc");
    let out = mover(["backup", "--source"]).arg(&src).run();
    out.assert_error(2, &["--repo", "mover --help"]);
    for args in [vec!["init"], vec!["snapshots"], vec!["verify"]] {
        let out = mover(args).run();
        out.assert_error(2, &["--repo"]);
    }
}

#[test]
fn mover_repo_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let src = dir.path().join("a.img");
    let data = random_bytes(200_000, 403);
    write_file(&src, &data);
    mover(["init"]).env("MOVER_REPO", &repo).run().ok();
    let out = mover(["backup", "--source"])
        .arg(&src)
        .env("MOVER_REPO", &repo)
        .run()
        .ok();
    let id = out.stdout_str().trim().to_string();
    assert!(is_hex_id(&id), "backup prints the snapshot id:\n{out}");
    let out = mover(["snapshots", "--json"])
        .env("MOVER_REPO", &repo)
        .run()
        .ok();
    assert_eq!(out.json()[0]["id"], id.as_str(), "{out}");
    let out = mover(["restore", &id[..12], "--to", "-"])
        .env("MOVER_REPO", &repo)
        .run()
        .ok();
    assert_same(&out.stdout, &data, "MOVER_REPO restore");
    // -r wins over MOVER_REPO.
    let elsewhere = dir.path().join("elsewhere");
    let out = mover(["snapshots", "-r"])
        .arg(&elsewhere)
        .env("MOVER_REPO", &repo)
        .run();
    out.assert_error(1, &["mover init"]);
}

#[test]
fn other_usage_errors() {
    let env = Env::new();
    let src = env.path("a.img");
    write_file(&src, b"abc");
    for args in [
        vec!["--compression", "0"],
        vec!["--compression", "20"],
        vec!["--threads", "0"],
        vec!["--memory", "1MiB"],
    ] {
        let out = env.cmd("backup", &args).arg("--source").arg(&src).run();
        out.assert_error(2, &[args[0]]);
    }
    let out = env.cmd("restore", &["latest"]).run(); // no --to
    out.assert_error(2, &["--to"]);
    let out = mover(["frobnicate"]).run();
    out.assert_error(2, &["frobnicate"]);
    let out = mover(["--help"]).run();
    assert_eq!(out.exit(), 0, "{out}");
    assert!(out.stdout_str().contains("Usage"), "{out}");
    assert!(env.snapshots().is_empty());
}

//! Listing snapshots and choosing one: full id, unique prefix, `latest`, `--name`.

use std::collections::HashMap;

use crate::util::*;

#[test]
fn snapshots_json_lists_every_backup_oldest_first() {
    let env = Env::new();
    assert!(
        env.snapshots().is_empty(),
        "a new repository has no snapshots"
    );
    let (pa, pb) = (env.path("a.img"), env.path("b.img"));
    write_file(&pa, &random_bytes(300_000, 201));
    write_file(&pb, &random_bytes(500_000, 202));
    let a = env.backup(&pa, &["--name", "alpha"]);
    let b = env.backup(&pb, &[]);
    let list = env.snapshots();
    assert_eq!(list.len(), 2, "{list:?}");
    for (item, d, name, size) in [
        (&list[0], &a, "alpha", 300_000u64),
        (&list[1], &b, pb.to_str().unwrap(), 500_000),
    ] {
        let id = text(item, "id");
        assert_eq!(id, text(d, "snapshot_id"), "{item}");
        assert_eq!(text(item, "short_id"), &id[..12], "{item}");
        assert_eq!(text(item, "name"), name, "{item}");
        assert_eq!(num(item, "source_bytes"), size, "{item}");
        assert_eq!(num(item, "chunks"), num(d, "chunks_total"), "{item}");
    }
    // --name filters
    let out = env
        .cmd("snapshots", &["--json", "--name", "alpha"])
        .run()
        .ok();
    assert_eq!(out.json().as_array().map(Vec::len), Some(1), "{out}");
    // The table names both.
    let table = env.cmd("snapshots", &[] as &[&str]).run().ok().stdout_str();
    for item in &list {
        assert!(table.contains(text(item, "short_id")), "{table}");
    }
}

#[test]
fn restore_by_prefix_latest_and_name() {
    let env = Env::new();
    let mut contents: HashMap<String, Vec<u8>> = HashMap::new();
    let mut ids: Vec<String> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    let src = env.path("img");
    // Back up until two ids share their first hex digit (at most 17 backups).
    let mut shared = None;
    for i in 0..17u64 {
        let data = random_bytes(1000 + i as usize, 300 + i);
        write_file(&src, &data);
        let name = ["even", "odd"][i as usize % 2];
        let d = env.backup(&src, &["--name", name]);
        let id = text(&d, "snapshot_id").to_string();
        if let Some(other) = ids.iter().find(|o| o[..1] == id[..1]) {
            shared = Some((other.clone(), id.clone()));
        }
        contents.insert(id.clone(), data);
        ids.push(id);
        names.push(name);
        if shared.is_some() && ids.len() >= 3 {
            break;
        }
    }
    let (x, y) = shared.expect("17 ids always share a first digit");

    // An ambiguous prefix is refused, writing nothing.
    let dest = env.path("out");
    let out = env.cmd("restore", &[&x[..1], "--to"]).arg(&dest).run();
    out.assert_error(1, &["ambiguous"]);
    assert!(!dest.exists(), "an ambiguous restore must write nothing");
    let out = env.cmd("verify", &[&x[..1]]).run();
    out.assert_error(1, &["ambiguous"]);

    // The shortest unique prefix of x, and of y, restore the right snapshot.
    for id in [&x, &y] {
        let n = (1..=64)
            .find(|&n| ids.iter().filter(|o| o[..n] == id[..n]).count() == 1)
            .expect("a full id is unique");
        assert!(n >= 2);
        let got = env.restore_stdout(&id[..n]);
        assert_same(&got, &contents[id.as_str()], "restore by unique prefix");
        // Upper-case hex is accepted too.
        let got = env.restore_stdout(&id[..n].to_uppercase());
        assert_same(&got, &contents[id.as_str()], "restore by upper-case prefix");
    }

    // latest, and latest of a name.
    let last = ids.last().unwrap();
    assert_same(&env.restore_stdout("latest"), &contents[last], "latest");
    // The one before the last has the other name.
    let (other_name, last_other) = (names[ids.len() - 2], &ids[ids.len() - 2]);
    let got = env
        .cmd("restore", &["latest", "--name", other_name, "--to", "-"])
        .run()
        .ok()
        .stdout;
    assert_same(&got, &contents[last_other], "latest --name");

    // Unknown snapshots.
    let missing = "0".repeat(64);
    let missing = if ids.contains(&missing) {
        "f".repeat(64)
    } else {
        missing
    };
    let out = env
        .cmd("restore", &[missing.as_str(), "--to"])
        .arg(&dest)
        .run();
    out.assert_error(1, &["not found"]);
    assert!(!dest.exists());
    let out = env
        .cmd("restore", &["latest", "--name", "nobody", "--to"])
        .arg(&dest)
        .run();
    out.assert_error(1, &["not found"]);
    assert!(!dest.exists());
}

#[test]
fn latest_in_an_empty_repository_is_not_found() {
    let env = Env::new();
    let out = env.cmd("restore", &["latest", "--to", "-"]).run();
    out.assert_error(1, &["not found"]);
    assert!(out.stdout.is_empty(), "{out}");
}

//! File-level restore (issue 16): `mover ls`, `cat`, `extract` and `find` on snapshots of
//! disk images made with the real tools (mkfs.ext4 -d, mkfs.vfat + mcopy, sgdisk, sfdisk).
//! Extracted trees are compared with the source tree: content hashes, modes, mtimes,
//! symbolic link targets and hard links.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, FileTimes};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use crate::util::*;

pub(super) const MIB: u64 = 1 << 20;

/// Runs a tool; panics with its output when it fails.
pub(super) fn tool(program: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) {
    let out = Command::new(program)
        .args(args.iter().map(|a| a.as_ref()))
        .env("TZ", "UTC")
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(super) fn set_mtime(path: &Path, secs: u64, nanos: u32) {
    let t = UNIX_EPOCH + Duration::new(secs, nanos);
    let f = fs::File::options()
        .write(true)
        .open(path)
        .or_else(|_| fs::File::open(path));
    f.expect("open to set times")
        .set_times(FileTimes::new().set_modified(t).set_accessed(t))
        .expect("set times");
}

/// A tree with what an extract must keep: nested directories with their own modes, an empty
/// file, a larger random file, a symbolic link, a hard link, odd mode bits and times with
/// nanoseconds.
pub(super) fn source_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/conf.d")).unwrap();
    fs::create_dir_all(root.join("home/user/empty-dir")).unwrap();
    write_file(&root.join("etc/fstab"), b"/dev/sda2 / ext4 defaults 0 1\n");
    write_file(&root.join("etc/conf.d/net.conf"), b"dhcp=yes\n");
    write_file(&root.join("home/user/notes.txt"), b"remember the milk\n");
    write_file(&root.join("home/user/empty"), b"");
    write_file(&root.join("home/user/data.bin"), &random_bytes(700_000, 7));
    write_file(&root.join("home/user/script.sh"), b"#!/bin/sh\necho hi\n");
    fs::hard_link(
        root.join("home/user/notes.txt"),
        root.join("etc/notes-link"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../../etc/fstab", root.join("home/user/fstab-link")).unwrap();
    std::os::unix::fs::symlink("dangling/target", root.join("home/dangling")).unwrap();
    let modes = [
        ("home/user/script.sh", 0o4755),
        ("etc/conf.d/net.conf", 0o600),
        ("home/user/empty-dir", 0o700),
        ("etc/conf.d", 0o750),
    ];
    for (p, m) in modes {
        fs::set_permissions(
            root.join(p),
            std::os::unix::fs::PermissionsExt::from_mode(m),
        )
        .unwrap();
    }
    let mut t = 1_700_000_000u64;
    for p in [
        "etc/fstab",
        "etc/conf.d/net.conf",
        "home/user/notes.txt",
        "home/user/empty",
        "home/user/data.bin",
        "home/user/script.sh",
        "home/user/empty-dir",
        "etc/conf.d",
        "home/user",
        "home",
        "etc",
    ] {
        t += 86_400 + 7;
        set_mtime(&root.join(p), t, 123_456_789);
    }
}

/// What a tree holds, by path relative to its root: kind, mode, size, content hash, mtime,
/// link target, and the group of names sharing its inode.
pub(super) fn describe(root: &Path, times: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, String> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap()).collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == "lost+found" {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            // Whole seconds: mkfs.ext4 -d does not copy nanoseconds into the image.
            let mtime = if times && !m.file_type().is_symlink() {
                format!("{}", m.mtime())
            } else {
                String::new()
            };
            let what = if m.file_type().is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o} {mtime}", m.mode() & 0o7777)
            } else {
                let hash = blake3::hash(&fs::read(&p).unwrap()).to_hex()[..16].to_string();
                let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
                format!(
                    "file {:o} {} {hash} {mtime} inode-of:{first}",
                    m.mode() & 0o7777,
                    m.len()
                )
            };
            out.insert(rel, what);
        }
    }
    out
}

pub(super) fn ext4_image(src: &Path, image: &Path, size_mib: u64, label: &str) -> bool {
    if !have_tool("file-level restore of ext4", "mkfs.ext4") {
        return false;
    }
    let size = format!("{size_mib}M");
    tool(
        "mkfs.ext4",
        &[&"-q", &"-F", &"-L", &label, &"-d", &src, &image, &size],
    );
    true
}

pub(super) fn fat_image(src_files: &[(&str, &[u8])], image: &Path, size_mib: u64) -> bool {
    if !have_tool("file-level restore of FAT", "mkfs.vfat")
        || !have_tool("file-level restore of FAT", "mcopy")
    {
        return false;
    }
    fs::File::create(image)
        .unwrap()
        .set_len(size_mib * MIB)
        .unwrap();
    tool("mkfs.vfat", &[&"-n", &"BOOTFAT", &image]);
    let stage = image.with_extension("stage");
    for (name, data) in src_files {
        let p = stage.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_file(&p, data);
        set_mtime(&p, 1_700_000_000, 0);
    }
    for e in fs::read_dir(&stage).unwrap() {
        let p = e.unwrap().path();
        tool("mcopy", &[&"-s", &"-m", &"-i", &image, &p, &"::/"]);
    }
    true
}

/// Writes `part` into `disk` at `sector` (512-byte sectors).
pub(super) fn put(disk: &Path, sector: u64, part: &Path) {
    let f = fs::File::options().write(true).open(disk).unwrap();
    f.write_all_at(&fs::read(part).unwrap(), sector * 512)
        .unwrap();
}

pub(super) fn ls(env: &Env, path: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = env
        .cmd("ls", &["latest", path, "--json"])
        .args(extra)
        .run()
        .ok();
    out.stdout_str()
        .lines()
        .map(|l| serde_json::from_str(l).expect("ls --json prints JSON Lines"))
        .collect()
}

pub(super) fn names(entries: &[serde_json::Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ext4_disk_lists_cats_and_extracts_trees_exactly() {
    let env = Env::new();
    let src = env.path("src");
    source_tree(&src);
    let image = env.path("root.img");
    if !ext4_image(&src, &image, 8, "rootfs") {
        return;
    }
    env.backup(&image, &[]);

    let top = ls(&env, "", &[]);
    assert_eq!(names(&top), ["etc", "home", "lost+found"], "{top:?}");
    let user = ls(&env, "home/user", &[]);
    let link = user.iter().find(|e| e["name"] == "fstab-link").unwrap();
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["target"], "../../etc/fstab");
    let script = user.iter().find(|e| e["name"] == "script.sh").unwrap();
    assert_eq!(script["mode"], "4755");
    let all = ls(&env, "", &["--recursive"]);
    assert!(
        all.iter().any(|e| e["path"] == "etc/conf.d/net.conf"),
        "{all:?}"
    );
    let long = env.cmd("ls", &["latest", "home/user", "-l"]).run().ok();
    assert!(long.stdout_str().contains("-rwsr-xr-x"), "{long}");

    let cat = env
        .cmd("cat", &["latest", "home/user/fstab-link"])
        .run()
        .ok();
    assert_eq!(cat.stdout, b"/dev/sda2 / ext4 defaults 0 1\n");
    let big = env
        .cmd("cat", &["latest", "/home/user/data.bin"])
        .run()
        .ok();
    assert_same(
        &big.stdout,
        &random_bytes(700_000, 7),
        "cat of a 700 KB file",
    );

    let out = env.path("out");
    env.cmd("extract", &["latest", "/", "--to"])
        .arg(&out)
        .run()
        .ok();
    assert_eq!(describe(&out.join("root"), true), describe(&src, true));

    // Two paths at once; again without --force is refused before anything is written.
    let two = env.path("two");
    env.cmd(
        "extract",
        &["latest", "etc/conf.d", "home/user/notes.txt", "--to"],
    )
    .arg(&two)
    .run()
    .ok();
    assert_eq!(
        describe(&two.join("conf.d"), true),
        describe(&src.join("etc/conf.d"), true)
    );
    let again = env
        .cmd(
            "extract",
            &["latest", "etc/fstab", "home/user/notes.txt", "--to"],
        )
        .arg(&two)
        .run();
    again.assert_error(1, &["exists", "--force"]);
    assert!(!two.join("fstab").exists(), "a refused extract wrote fstab");
    env.cmd(
        "extract",
        &["latest", "home/user/notes.txt", "--force", "--to"],
    )
    .arg(&two)
    .run()
    .ok();
}

#[test]
fn gpt_disk_lists_partitions_and_reads_fat_and_ext4() {
    let env = Env::new();
    if !have_tool("file-level restore of GPT disks", "sgdisk") {
        return;
    }
    let src = env.path("src");
    source_tree(&src);
    let (fat, ext, disk) = (
        env.path("fat.img"),
        env.path("ext.img"),
        env.path("disk.img"),
    );
    let big = random_bytes(200_000, 3);
    let files: [(&str, &[u8]); 3] = [
        ("EFI/BOOT/grub.cfg", b"set timeout=5\n"),
        ("Readme Long Name.txt", b"long file names work\n"),
        ("kernel.bin", &big),
    ];
    if !fat_image(&files, &fat, 4) || !ext4_image(&src, &ext, 6, "data") {
        return;
    }
    fs::File::create(&disk).unwrap().set_len(12 * MIB).unwrap();
    tool(
        "sgdisk",
        &[
            &"-n",
            &"1:2048:10239",
            &"-t",
            &"1:ef00",
            &"-c",
            &"1:esp",
            &"-n",
            &"2:10240:22527",
            &"-t",
            &"2:8300",
            &"-c",
            &"2:root",
            &disk,
        ],
    );
    put(&disk, 2048, &fat);
    put(&disk, 10240, &ext);
    env.backup(&disk, &[]);

    let parts = ls(&env, "", &[]);
    assert_eq!(names(&parts), ["p1", "p2"], "{parts:?}");
    assert_eq!(parts[0]["fs_type"], "fat12");
    assert_eq!(parts[0]["part_type"], "EFI System");
    assert_eq!(parts[0]["label"], "BOOTFAT");
    assert_eq!(parts[0]["size"], 4 * MIB);
    assert_eq!(parts[1]["fs_type"], "ext4");
    assert_eq!(parts[1]["label"], "data");
    let table = env.cmd("ls", &["latest"]).run().ok();
    assert!(table.stdout_str().contains("Linux filesystem"), "{table}");

    let cat = env
        .cmd("cat", &["latest", "p1/EFI/BOOT/grub.cfg"])
        .run()
        .ok();
    assert_eq!(cat.stdout, b"set timeout=5\n");
    let fat_top = ls(&env, "p1", &[]);
    assert_eq!(
        names(&fat_top),
        ["EFI", "Readme Long Name.txt", "kernel.bin"]
    );
    assert_eq!(
        fat_top[2]["mtime"], "2023-11-14T22:13:20Z",
        "FAT times read as UTC"
    );

    let out = env.path("out");
    env.cmd("extract", &["latest", "p1", "p2/etc", "--to"])
        .arg(&out)
        .run()
        .ok();
    assert_eq!(
        describe(&out.join("etc"), true),
        describe(&src.join("etc"), true)
    );
    assert_same(&read(&out.join("p1/kernel.bin")), &big, "FAT file");
    let m = fs::metadata(out.join("p1/kernel.bin")).unwrap();
    assert_eq!(m.mtime(), 1_700_000_000);

    let err = env.cmd("ls", &["latest", "p3"]).run();
    err.assert_error(1, &["no partition p3", "p1, p2"]);
}

#[test]
fn mbr_disk_with_a_logical_partition() {
    let env = Env::new();
    if !have_tool("file-level restore of MBR disks", "sfdisk") {
        return;
    }
    let src = env.path("src");
    source_tree(&src);
    let (fat, ext, disk) = (
        env.path("fat.img"),
        env.path("ext.img"),
        env.path("disk.img"),
    );
    if !fat_image(&[("HELLO.TXT", b"hi\n")], &fat, 4) || !ext4_image(&src, &ext, 4, "logical") {
        return;
    }
    fs::File::create(&disk).unwrap().set_len(12 * MIB).unwrap();
    let mut child = Command::new("sfdisk")
        .args(["-q", disk.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\n2048,8192,c\n10240,,5\n12288,8192,83\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    put(&disk, 2048, &fat);
    put(&disk, 12288, &ext);
    env.backup(&disk, &[]);
    let parts = ls(&env, "", &[]);
    assert_eq!(names(&parts), ["p1", "p2", "p5"], "{parts:?}");
    assert_eq!(parts[0]["part_type"], "0x0c FAT32");
    assert_eq!(parts[2]["fs_type"], "ext4");
    let cat = env
        .cmd("cat", &["latest", "p5/etc/conf.d/net.conf"])
        .run()
        .ok();
    assert_eq!(cat.stdout, b"dhcp=yes\n");
    let cat = env.cmd("cat", &["latest", "p1/hello.txt"]).run().ok();
    assert_eq!(cat.stdout, b"hi\n");
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let env = Env::new();
    let src = env.path("src");
    source_tree(&src);
    let image = env.path("root.img");
    if !ext4_image(&src, &image, 4, "r") {
        return;
    }
    let other = env.path("other.img");
    let mut xfs = vec![0u8; 2 * MIB as usize];
    xfs[..4].copy_from_slice(b"XFSB");
    write_file(&other, &xfs);
    let noise = env.path("noise.img");
    write_file(&noise, &random_bytes(MIB as usize, 9));
    env.backup(&image, &["--name", "root"]);
    env.backup(&other, &["--name", "xfs"]);
    env.backup(&noise, &["--name", "noise"]);

    let dest = env.path("dest");
    let to = dest.to_str().unwrap();
    let missing = env
        .cmd(
            "extract",
            &["latest", "--name", "root", "etc/nope", "--to", to],
        )
        .run();
    missing.assert_error(1, &["etc/nope", "no such file"]);
    let mixed = env
        .cmd(
            "extract",
            &["latest", "--name", "root", "etc", "nope", "--to", to],
        )
        .run();
    mixed.assert_error(1, &["nope"]);
    let part = env
        .cmd(
            "extract",
            &["latest", "--name", "root", "p1/etc", "--to", to],
        )
        .run();
    part.assert_error(1, &["no such file"]);
    let xfs = env
        .cmd("extract", &["latest", "--name", "xfs", "etc", "--to", to])
        .run();
    xfs.assert_error(1, &["XFS", "mover serve"]);
    let unknown = env.cmd("ls", &["latest", "--name", "noise"]).run();
    unknown.assert_error(1, &["no file system", "mover serve"]);
    let dir = env.cmd("cat", &["latest", "--name", "root", "etc"]).run();
    dir.assert_error(1, &["etc", "directory"]);
    assert!(!dest.exists(), "a refused extract made the destination");
}

#[test]
fn find_reads_every_snapshot_newest_first() {
    let env = Env::new();
    let src = env.path("src");
    source_tree(&src);
    let image = env.path("root.img");
    if !ext4_image(&src, &image, 4, "r") {
        return;
    }
    env.backup(&image, &["--name", "vm"]);
    write_file(&src.join("home/user/later.txt"), b"new\n");
    fs::remove_file(&image).unwrap();
    ext4_image(&src, &image, 4, "r");
    std::thread::sleep(Duration::from_millis(20));
    let second = env.backup(&image, &["--name", "vm"]);
    let out = env.cmd("find", &["*.txt", "--json"]).run().ok();
    let hits: Vec<serde_json::Value> = out
        .stdout_str()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let paths: Vec<(&str, &str)> = hits
        .iter()
        .map(|h| {
            (
                &h["snapshot_id"].as_str().unwrap()[..8],
                h["path"].as_str().unwrap(),
            )
        })
        .collect();
    let newest = &text(&second, "snapshot_id")[..8];
    assert_eq!(
        paths.iter().map(|p| p.1).collect::<Vec<_>>(),
        [
            "home/user/later.txt",
            "home/user/notes.txt",
            "home/user/notes.txt"
        ],
        "{out}"
    );
    assert_eq!(paths[0].0, newest);
    assert_eq!(hits[0]["size"], 4);
    let deep = env.cmd("find", &["etc/**.conf"]).run().ok();
    assert_eq!(deep.stdout_str().lines().count(), 2, "{deep}");
}

#[test]
fn a_multi_disk_snapshot_lists_its_disks_first() {
    let env = Env::new();
    let src = env.path("src");
    source_tree(&src);
    let (a, b) = (env.path("a.img"), env.path("b.img"));
    if !ext4_image(&src, &a, 4, "first") {
        return;
    }
    let mut blank = vec![0u8; 2 * MIB as usize];
    blank[0x10040..0x10048].copy_from_slice(b"_BHRfS_M");
    write_file(&b, &blank);
    let sda = format!("sda={}", a.display());
    let sdb = format!("sdb={}", b.display());
    env.cmd(
        "backup",
        &["--source", &sda, "--source", &sdb, "--name", "vm"],
    )
    .run()
    .ok();
    let disks = ls(&env, "", &[]);
    assert_eq!(names(&disks), ["sda", "sdb"], "{disks:?}");
    assert_eq!(disks[0]["type"], "disk");
    assert_eq!(disks[0]["fs_type"], "ext4");
    assert_eq!(disks[0]["label"], "first");
    assert_eq!(disks[1]["fs_type"], "Btrfs");
    let cat = env.cmd("cat", &["latest", "sda/etc/fstab"]).run().ok();
    assert_eq!(cat.stdout, b"/dev/sda2 / ext4 defaults 0 1\n");
    let all = env.cmd("ls", &["latest", "-R"]).run().ok();
    assert!(
        all.stdout_str().contains("sda/home/user/notes.txt"),
        "{all}"
    );
    all.assert_stderr_has(&["sdb holds Btrfs", "mover serve"]);
    let none = env.cmd("ls", &["latest", "sdc/etc"]).run();
    none.assert_error(1, &["no disk sdc", "sda, sdb"]);
}

/// The lines of `find --json`, parsed.
fn find_json(env: &Env, pattern: &str) -> (Vec<serde_json::Value>, Output) {
    let out = env.cmd("find", &[pattern, "--json"]).run().ok();
    let hits = (out.stdout_str().lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (hits, out)
}

#[test]
fn find_answers_from_catalogs_without_reading_packs() {
    let env = Env::new();
    let src = env.path("src");
    source_tree(&src);
    let image = env.path("root.img");
    if !ext4_image(&src, &image, 4, "r") {
        return;
    }
    let mut ids = Vec::new();
    for i in 0..3 {
        write_file(&src.join(format!("home/user/day-{i}.txt")), b"x\n");
        fs::remove_file(&image).unwrap();
        ext4_image(&src, &image, 4, "r");
        std::thread::sleep(Duration::from_millis(20));
        ids.push(text(&env.backup(&image, &["--name", "vm"]), "snapshot_id").to_string());
    }
    let catalog = |id: &str| env.repo.join("catalogs").join(id);
    for id in &ids {
        assert!(catalog(id).is_file(), "no catalog for {id}");
    }
    let (all, out) = find_json(&env, "*.txt");
    let plain = env.cmd("find", &["*.txt"]).run().ok();
    plain.assert_stderr_has(&["9 matches in 3 snapshots (3 answered from their file catalog)"]);
    // notes.txt in each snapshot, day-0 in three, day-1 in two, day-2 in one.
    assert_eq!(all.len(), 3 + 3 + 2 + 1, "{out}");
    assert_eq!(all[0]["snapshot_id"], ids[2].as_str());
    assert_eq!(all[0]["path"], "home/user/day-0.txt");
    assert_eq!(all[0]["size"], 2);
    assert_eq!(all[0]["mode"], "0644");

    // A snapshot without a catalog is read on demand, with the same answer.
    let kept = env.path("kept-catalog");
    fs::rename(catalog(&ids[0]), &kept).unwrap();
    let (on_demand, out) = find_json(&env, "*.txt");
    let plain = env.cmd("find", &["*.txt"]).run().ok();
    plain.assert_stderr_has(&["(2 answered from their file catalog)"]);
    assert_eq!(on_demand, all, "{out}");

    // With every catalog present, no pack is read: find answers with the packs gone.
    fs::rename(&kept, catalog(&ids[0])).unwrap();
    fs::rename(env.repo.join("packs"), env.path("packs-away")).unwrap();
    let (catalogs_only, out) = find_json(&env, "*.txt");
    assert_eq!(catalogs_only, all, "{out}");
    let deep = env.cmd("find", &["etc/**.conf"]).run().ok();
    assert_eq!(deep.stdout_str().lines().count(), 3, "{deep}");
    fs::rename(env.path("packs-away"), env.repo.join("packs")).unwrap();

    // forget removes a snapshot's catalog with it.
    env.cmd("forget", &[ids[1].as_str()]).run().ok();
    assert!(!catalog(&ids[1]).exists());
    assert!(catalog(&ids[0]).is_file());
}

#[test]
fn a_snapshot_without_a_file_system_gets_no_catalog() {
    let env = Env::new();
    let image = env.path("noise.img");
    write_file(&image, &random_bytes(2 * MIB as usize, 3));
    let id = text(&env.backup(&image, &["--name", "noise"]), "snapshot_id").to_string();
    assert!(!env.repo.join("catalogs").join(&id).exists());
    let out = env.cmd("find", &["*"]).run().ok();
    out.assert_stderr_has(&["0 matches in 1 snapshots"]);
}

/// The `-v` log line about the catalog of a backup.
fn catalog_line(out: &Output) -> String {
    out.stderr
        .lines()
        .find(|l| l.contains("file catalog"))
        .unwrap_or_else(|| panic!("no catalog line:\n{out}"))
        .to_string()
}

#[test]
fn an_incremental_whose_metadata_did_not_change_keeps_its_parents_catalog() {
    let env = Env::new();
    let src = env.path("src");
    source_tree(&src);
    let image = env.path("root.img");
    if !ext4_image(&src, &image, 4, "r") {
        return;
    }
    let backup = |parent: bool| {
        let mut args = vec!["--name", "vm", "-v", "--json"];
        if parent {
            args.extend(["--parent", "latest"]);
        }
        let out = env
            .cmd("backup", &args)
            .arg("--source")
            .arg(&image)
            .run()
            .ok();
        let id = text(&out.json()["data"], "snapshot_id").to_string();
        (id, catalog_line(&out))
    };
    let (first, line) = backup(false);
    assert!(line.contains("written"), "{line}");
    // The same disk again: nothing the catalog was read from changed.
    let (same, line) = backup(true);
    assert!(line.contains("kept from the parent"), "{line}");
    let listing = |id: &str| env.cmd("ls", &[id, "-R", "--json"]).run().ok().stdout_str();
    assert_eq!(listing(&same), listing(&first));
    assert!(env.repo.join("catalogs").join(&same).is_file());

    // A new file changes directories and inodes: the catalog is read again and holds it.
    write_file(&src.join("home/user/added.txt"), b"new\n");
    fs::remove_file(&image).unwrap();
    ext4_image(&src, &image, 4, "r");
    let (changed, line) = backup(true);
    assert!(line.contains("written"), "{line}");
    let (hits, out) = find_json(&env, "added.txt");
    assert_eq!(hits.len(), 1, "{out}");
    assert_eq!(hits[0]["snapshot_id"], changed.as_str());
    let plain = env.cmd("find", &["added.txt"]).run().ok();
    plain.assert_stderr_has(&["(3 answered from their file catalog)"]);
}

//! mover reads ext2/3/4 by inode number with its own reader (directories, path resolution
//! through symbolic links, file contents by their runs of blocks), and the file catalog walks
//! it the same way: on every layout, the catalog, the listing, the extracted tree and `cat`
//! through linked directories must match what the kernel shows for a loop mount of the same
//! image. Layouts: block maps with indirect blocks and 1 KiB blocks (ext2), ext3, hashed
//! directories (`e2fsck -D`) with 4 KiB and 1 KiB blocks, 128-byte inodes without
//! nanoseconds and 32-byte group descriptors.

use std::fs;
use std::path::Path;

use super::files::{describe, source_tree, tool, MIB};
use super::files_real::{listed, mounted, Mount};
use crate::util::*;

/// A tree with a directory too big for the inode's direct blocks (about 60 KiB of entries)
/// and a few levels of nesting, next to the usual test tree.
fn big_tree(root: &Path) {
    source_tree(root);
    let big = root.join("big");
    fs::create_dir_all(&big).unwrap();
    for i in 0..1500 {
        write_file(
            &big.join(format!("a-file-with-a-rather-long-name-{i:05}")),
            format!("{i}\n").as_bytes(),
        );
    }
    let deep = root.join("d1/d2/d3/d4");
    fs::create_dir_all(&deep).unwrap();
    write_file(&deep.join("leaf.txt"), b"deep\n");
    // Paths through links: relative, absolute, and a target too long for the inode.
    std::os::unix::fs::symlink("d1/d2", root.join("to-d2")).unwrap();
    std::os::unix::fs::symlink("/d1/d2/d3", root.join("d1/to-d3")).unwrap();
    let long = format!("{}/../d2/d3/d4", ["."; 40].join("/"));
    std::os::unix::fs::symlink(&long, root.join("d1/d2/long-link")).unwrap();
    // 1.5 MiB of data (double indirect blocks with 1 KiB blocks) and a sparse file.
    write_file(&root.join("large.bin"), &random_bytes(1_500_000, 11));
    let sparse = fs::File::create(root.join("sparse.bin")).unwrap();
    sparse.set_len(3 * MIB).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"start", 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &random_bytes(70_000, 12), 2 * MIB).unwrap();
}

/// The recursive JSON listing of the latest snapshot, with its catalog and without it.
fn both_listings(env: &Env, name: &str) -> (String, String) {
    let catalogs = env.repo.join("catalogs");
    assert_eq!(
        fs::read_dir(&catalogs).map(|d| d.count()).unwrap_or(0),
        1,
        "{name}: the backup wrote no catalog"
    );
    let with = env.cmd("ls", &["latest", "-R", "--json"]).run().ok();
    let away = env.path("catalogs-away");
    fs::rename(&catalogs, &away).unwrap();
    let without = env.cmd("ls", &["latest", "-R", "--json"]).run().ok();
    fs::rename(&away, &catalogs).unwrap();
    (with.stdout_str(), without.stdout_str())
}

#[test]
fn every_ext_layout_reads_as_the_kernel_mounts_it() {
    let what = "ext layouts against a loop mount";
    if !have_tool(what, "mke2fs") || !have_tool(what, "e2fsck") || !have_root(what) {
        return;
    }
    // (name, mke2fs options, rebuild directories as htrees, inodes hold nanoseconds)
    let layouts: [(&str, &[&str], bool, bool); 5] = [
        ("ext2-1k", &["-t", "ext2", "-b", "1024"], false, false),
        ("ext3", &["-t", "ext3"], false, false),
        (
            "ext4-htree",
            &["-t", "ext4", "-b", "4096", "-I", "256"],
            true,
            true,
        ),
        (
            "ext4-1k-htree",
            &["-t", "ext4", "-b", "1024", "-I", "256", "-O", "64bit"],
            true,
            true,
        ),
        (
            "ext4-small-inodes",
            &["-t", "ext4", "-I", "128", "-O", "^64bit,^metadata_csum"],
            false,
            false,
        ),
    ];
    for (name, options, index, nanos) in layouts {
        let env = Env::new();
        let src = env.path("src");
        big_tree(&src);
        let image = env.path("disk.img");
        fs::File::create(&image).unwrap().set_len(24 * MIB).unwrap();
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"-q", &"-F", &"-d", &src];
        args.extend(options.iter().map(|o| o as &dyn AsRef<std::ffi::OsStr>));
        args.push(&image);
        tool("mke2fs", &args);
        if index {
            // Rebuilds every directory; the big one becomes a hashed (htree) directory.
            let out = std::process::Command::new("e2fsck")
                .args(["-f", "-y", "-D"])
                .arg(&image)
                .output()
                .unwrap();
            assert!(
                out.status.code().unwrap_or(8) < 4,
                "{name}: e2fsck: {out:?}"
            );
        }
        if nanos {
            // mke2fs -d copies whole seconds only: nanoseconds, an epoch bit (a time past
            // 2038) and the high halves of owner and group are set on one inode here.
            let script = env.path("inode.cmds");
            let extra = (123_456_789u32 << 2) | 1;
            write_file(
                &script,
                format!(
                    "sif /etc/fstab mtime_extra {extra}\nsif /etc/fstab uid 65537\n\
                     sif /etc/fstab gid 131074\n"
                )
                .as_bytes(),
            );
            tool("debugfs", &[&"-w", &"-f", &script, &image]);
        }
        let image_arg = image.to_string_lossy().into_owned();
        let (_, out) = env.backup_args(&["--source", &image_arg, "--log-level", "debug"], 0);
        // Every directory was read by inode, none handed back to ext4-view.
        assert!(!out.stderr.contains("listed by path"), "{name}: {out}");
        let (with, without) = both_listings(&env, name);
        assert_eq!(
            with, without,
            "{name}: the catalog lists otherwise than the disk"
        );
        for path in [
            "big/a-file-with-a-rather-long-name-01499",
            "d1/d2/d3/d4/leaf.txt",
            "home/user/fstab-link",
            "etc/conf.d/net.conf",
        ] {
            assert!(
                with.contains(&format!("\"path\":\"{path}\"")),
                "{name}: no {path} in\n{with}"
            );
        }
        if nanos {
            let fstab = with.lines().find(|l| l.contains("\"path\":\"etc/fstab\""));
            let fstab = fstab.unwrap_or_default();
            assert!(
                fstab.contains("123456789,") && fstab.contains("\"uid\":65537,\"gid\":131074,"),
                "{name}: {fstab}"
            );
        }
        assert_eq!(
            with.matches("\"path\":\"big/a-file-with").count(),
            1500,
            "{name}"
        );
        against_the_kernel(&env, &image, name);
    }
}

/// The listing, an extract of the whole tree and `cat` through linked directories, against
/// a loop mount of `image`.
fn against_the_kernel(env: &Env, image: &Path, name: &str) {
    let _serial = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let m = Mount::new(image, &env.path("mnt"), "ro");
    let kernel: std::collections::BTreeMap<String, String> = mounted(&m.dir, "")
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches('/').to_string(), v))
        .collect();
    assert_eq!(listed(env, ""), kernel, "{name}: listing");
    let out = env.path("out");
    env.cmd("extract", &["latest", "/", "--to"])
        .arg(&out)
        .run()
        .ok();
    let root = out.join("root");
    assert_eq!(
        describe(&root, true),
        describe(&m.dir, true),
        "{name}: extract"
    );
    for path in [
        "to-d2/d3/d4/leaf.txt",
        "d1/to-d3/d4/leaf.txt",
        "d1/d2/long-link/leaf.txt",
    ] {
        let cat = env.cmd("cat", &["latest", path]).run().ok();
        assert_eq!(cat.stdout, b"deep\n", "{name}: cat {path}");
    }
    // The extract keeps the sparse file's holes as holes.
    let kept = fs::metadata(root.join("sparse.bin")).unwrap();
    let source = fs::metadata(m.dir.join("sparse.bin")).unwrap();
    assert!(
        kept.len() == 3 * MIB && std::os::unix::fs::MetadataExt::blocks(&kept) * 512 < MIB,
        "{name}: sparse.bin: {} bytes in {} blocks (the source: {} blocks)",
        kept.len(),
        std::os::unix::fs::MetadataExt::blocks(&kept),
        std::os::unix::fs::MetadataExt::blocks(&source)
    );
    let sparse = env.cmd("cat", &["latest", "sparse.bin"]).run().ok();
    assert!(
        sparse.stdout == fs::read(m.dir.join("sparse.bin")).unwrap(),
        "{name}: sparse.bin"
    );
    drop(m);
}

#[test]
fn a_directory_that_contains_itself_is_reported_not_followed_forever() {
    let what = "a damaged ext file system";
    if !have_tool(what, "mke2fs") || !have_tool(what, "debugfs") {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d1/d2")).unwrap();
    write_file(&src.join("d1/d2/file.txt"), b"inside\n");
    let image = env.path("loop.img");
    fs::File::create(&image).unwrap().set_len(8 * MIB).unwrap();
    tool(
        "mke2fs",
        &[&"-q", &"-F", &"-t", &"ext4", &"-d", &src, &image],
    );
    // A second name for d1 inside its own subdirectory: a cycle no kernel would make.
    tool("debugfs", &[&"-w", &"-R", &"ln /d1 /d1/d2/back", &image]);
    // The backup succeeds; its catalog is left out (the walk refuses the cycle).
    env.backup(&image, &[]);
    assert!(
        !env.repo.join("catalogs").exists()
            || fs::read_dir(env.repo.join("catalogs")).unwrap().count() == 0
    );
    let ls = env.cmd("ls", &["latest", "-R"]).run();
    assert_eq!(ls.exit(), 1, "{ls}");
    ls.assert_stderr_has(&["contains itself", "damaged"]);
    let out = env.path("out");
    let ex = env
        .cmd("extract", &["latest", "d1", "--to"])
        .arg(&out)
        .run();
    assert_eq!(ex.exit(), 1, "{ex}");
    assert!(!out.exists(), "the extract wrote something");
    // What lies outside the cycle still reads.
    let cat = env.cmd("cat", &["latest", "d1/d2/file.txt"]).run().ok();
    assert_eq!(cat.stdout, b"inside\n");
}

#[test]
fn damaged_ext_metadata_gives_an_answer_or_one_line_never_a_crash_or_a_hang() {
    let what = "damaged ext metadata";
    if !have_tool(what, "mke2fs") {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    big_tree(&src);
    let clean = env.path("clean.img");
    fs::File::create(&clean).unwrap().set_len(24 * MIB).unwrap();
    let opts: [&dyn AsRef<std::ffi::OsStr>; 8] =
        [&"-q", &"-F", &"-t", &"ext4", &"-b", &"1024", &"-d", &src];
    let mut args = opts.to_vec();
    args.push(&clean);
    tool("mke2fs", &args);
    let bytes = fs::read(&clean).unwrap();
    // Where the metadata lies: from the group descriptors to the end of the used blocks of
    // the first group (inode table, directories, extent blocks), the superblock left alone.
    let span = 2048..(2 * MIB as usize);
    for seed in 0..8u64 {
        let mut damaged = bytes.clone();
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        for _ in 0..64 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let at = span.start + (state >> 11) as usize % (span.end - span.start);
            damaged[at] ^= (state >> 3) as u8 | 1;
        }
        let image = env.path(&format!("damaged-{seed}.img"));
        fs::write(&image, &damaged).unwrap();
        env.backup(&image, &["--name", &format!("d{seed}")]);
        let limit = std::time::Duration::from_secs(20);
        for args in [
            vec!["latest", "--name", &format!("d{seed}"), "-R"],
            vec![
                "latest",
                "--name",
                &format!("d{seed}"),
                "big/a-file-with-a-rather-long-name-00007",
            ],
        ] {
            let out = env.cmd("ls", &args).timeout(limit).run();
            assert!(out.exit() <= 1, "seed {seed}: {out}");
            if out.exit() == 1 {
                assert_eq!(out.stderr.trim().lines().count(), 1, "seed {seed}: {out}");
            }
        }
        let to = env.path(&format!("out-{seed}"));
        let name = format!("d{seed}");
        let ex = env
            .cmd("extract", &["latest", "--name", &name, "/", "--to"])
            .arg(&to)
            .timeout(limit)
            .run();
        assert!(ex.exit() <= 1, "seed {seed}: {ex}");
    }
}

#[test]
fn files_of_two_file_systems_with_one_inode_number_are_not_linked() {
    let what = "hard links across file systems";
    if !have_tool(what, "mkfs.ext4") || !have_tool(what, "sgdisk") {
        return;
    }
    let env = Env::new();
    // Two file systems from trees of the same shape: the same inode numbers, the same bytes,
    // different times.
    let mut parts = Vec::new();
    for (i, secs) in [(1u64, 1_600_000_000u64), (2, 1_700_000_000)] {
        let src = env.path(&format!("src{i}"));
        fs::create_dir_all(&src).unwrap();
        write_file(&src.join("same.txt"), b"the same bytes\n");
        super::files::set_mtime(&src.join("same.txt"), secs, 0);
        let image = env.path(&format!("fs{i}.img"));
        assert!(super::files::ext4_image(&src, &image, 4, "fs"));
        parts.push(image);
    }
    back_up_two_partitions(&env, &parts, 4);
    let out = env.path("out");
    env.cmd("extract", &["latest", "p1/same.txt", "p2", "--to"])
        .arg(&out)
        .run()
        .ok();
    let a = fs::metadata(out.join("same.txt")).unwrap();
    let b = fs::metadata(out.join("p2/same.txt")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(a.ino(), b.ino(), "two file systems' files were hard-linked");
    assert_eq!((a.mtime(), b.mtime()), (1_600_000_000, 1_700_000_000));
}

/// Backs up a GPT disk whose two partitions of `mib` MiB each hold the images `parts`.
fn back_up_two_partitions(env: &Env, parts: &[std::path::PathBuf], mib: u64) {
    let sectors = mib * 2048;
    let (first, second) = (2048, 2048 + sectors);
    let disk = env.path("disk.img");
    fs::File::create(&disk)
        .unwrap()
        .set_len((2 * mib + 2) * MIB)
        .unwrap();
    let p1 = format!("1:{first}:{}", second - 1);
    let p2 = format!("2:{second}:{}", second + sectors - 1);
    tool("sgdisk", &[&"-n", &p1, &"-n", &p2, &disk]);
    super::files::put(&disk, first, &parts[0]);
    super::files::put(&disk, second, &parts[1]);
    env.backup(&disk, &[]);
}

/// Chunks a command's readers fetched, from its `-v` log line.
fn chunks_read(out: &Output) -> u64 {
    let log = &out.stderr;
    let line = log
        .lines()
        .find(|l| l.contains(" chunks, "))
        .unwrap_or_else(|| panic!("no line of chunks read in {log}"));
    let n = line
        .split("read ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    n.parse().unwrap()
}

#[test]
fn cat_and_extract_open_a_catalogued_path_by_its_inode_in_the_right_file_system() {
    let what = "paths opened through the catalog";
    if !have_tool(what, "mkfs.ext4") || !have_tool(what, "sgdisk") {
        return;
    }
    let env = Env::new();
    // Two file systems of the same shape (the same inode numbers) holding different bytes at
    // the end of a deep path, each level with a file big enough to spread the directories
    // over the disk's 64 KiB chunks.
    let deep = "a/b/c/d/e/leaf.txt";
    let mut parts = Vec::new();
    for i in 1..=2u8 {
        let src = env.path(&format!("src{i}"));
        let mut dir = src.clone();
        for level in ["a", "b", "c", "d", "e"] {
            dir = dir.join(level);
            fs::create_dir_all(&dir).unwrap();
            write_file(
                &dir.join("filler.bin"),
                &random_bytes(200_000, u64::from(i)),
            );
        }
        write_file(
            &src.join(deep),
            format!("leaf of file system {i}\n").as_bytes(),
        );
        std::os::unix::fs::symlink("a/b/c", src.join("to-c")).unwrap();
        let image = env.path(&format!("fs{i}.img"));
        assert!(super::files::ext4_image(&src, &image, 8, "fs"));
        parts.push(image);
    }
    back_up_two_partitions(&env, &parts, 8);

    let cat = |path: &str| env.cmd("cat", &["latest", path, "-v"]).run().ok();
    for i in 1..=2 {
        let want = format!("leaf of file system {i}\n");
        let with = cat(&format!("p{i}/{deep}"));
        assert_eq!(with.stdout_str(), want, "cat of p{i}/{deep}");
        // Through a symbolic link (a path the catalog does not hold) it resolves as always.
        assert_eq!(cat(&format!("p{i}/to-c/d/e/leaf.txt")).stdout_str(), want);
        let out = env.path(&format!("out{i}"));
        env.cmd("extract", &["latest", &format!("p{i}/{deep}"), "--to"])
            .arg(&out)
            .run()
            .ok();
        assert_eq!(fs::read_to_string(out.join("leaf.txt")).unwrap(), want);
    }
    // The same cat without the catalog walks every directory above the file and reads more
    // chunks.
    let with = chunks_read(&cat(&format!("p2/{deep}")));
    let catalogs = env.repo.join("catalogs");
    let away = env.path("catalogs-away");
    fs::rename(&catalogs, &away).unwrap();
    let walked = cat(&format!("p2/{deep}"));
    fs::rename(&away, &catalogs).unwrap();
    assert_eq!(walked.stdout_str(), "leaf of file system 2\n");
    let without = chunks_read(&walked);
    assert!(
        with < without,
        "with the catalog {with} chunks were read, without it {without}"
    );
    // And no readahead for the metadata: the partition table, the superblock and group
    // descriptors, the inode's table, the file's block (about 20 chunks of each file system
    // hold data; reads of a few inodes in a row once fetched them all).
    assert!(with <= 6, "a cat of one small file read {with} chunks");
}

//! File-level restore (issue 16) checked against the real file-system code: an ext4 image
//! left with an unreplayed journal (written by `debugfs`'s journal commands, as e2fsprogs'
//! own tests do), listings compared with what the kernel shows for a loop mount of the
//! restored disk, and NTFS made by `mkntfs` and filled through `ntfs-3g`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::files::{describe, ext4_image, fat_image, ls, names, put, source_tree, tool, MIB};
use crate::util::*;

/// Runs a tool and returns its standard output; panics when it fails.
fn tool_out(program: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let out = Command::new(program)
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const BLOCK: usize = 4096;
const FRESH: &[u8] = b"this file exists only in the journal\n";

/// The ext4 superblock's incompatible feature "needs_recovery" (the journal holds
/// transactions not yet written to their places).
fn needs_recovery(image: &Path) -> bool {
    let sb = &read(image)[1024..1024 + 0x68];
    u32::from_le_bytes(sb[0x60..0x64].try_into().unwrap()) & 0x4 != 0
}

/// Makes `image`: an ext4 file system whose journal holds one committed transaction never
/// written to its places, as a crash right after the commit leaves it. The transaction adds
/// `only-in-journal.txt` (its directory entry, inode, bitmaps and data) and rewrites the data
/// of `journal.txt` from "old content" to "new content". With `checksums`, the journal carries
/// 64-bit block numbers and v3 checksums, as the kernel writes it on a file system with
/// metadata checksums (the default of mkfs.ext4); without, it is an older journal. Returns
/// false when a tool is missing.
fn journaled_image(env: &Env, image: &Path, checksums: bool) -> bool {
    let what = "file-level restore of an ext4 journal";
    if !have_tool(what, "mkfs.ext4") || !have_tool(what, "debugfs") {
        return false;
    }
    let src = env.path("jsrc");
    fs::create_dir_all(&src).unwrap();
    write_file(&src.join("journal.txt"), b"old content\n");
    write_file(&src.join("keep.txt"), b"kept as it was\n");
    tool(
        "mkfs.ext4",
        &[
            &"-q",
            &"-F",
            &"-b",
            &"4096",
            &"-L",
            &"journaled",
            &"-d",
            &src,
            &image,
            &"8M",
        ],
    );
    // The file system as it is after the transaction, made by debugfs on a copy.
    let after = env.path("after.img");
    fs::copy(image, &after).unwrap();
    let fresh = env.path("fresh.txt");
    write_file(&fresh, FRESH);
    let cmd = format!("write {} only-in-journal.txt", fresh.display());
    tool("debugfs", &[&"-w", &"-R", &cmd, &after]);
    let bmap = tool_out("debugfs", &[&"-R", &"bmap /journal.txt 0", &image]);
    let data_block: usize = bmap.trim().parse().expect("bmap prints a block number");
    let mut after_bytes = read(&after);
    after_bytes[data_block * BLOCK..][..12].copy_from_slice(b"new content\n");
    // Every block that differs (but the superblock's, whose counters the kernel does not
    // journal either) goes into one transaction.
    let before = read(image);
    let (mut blocks, mut data) = (Vec::new(), Vec::new());
    for (i, (a, b)) in before
        .chunks(BLOCK)
        .zip(after_bytes.chunks(BLOCK))
        .enumerate()
    {
        if i > 0 && a != b {
            blocks.push(i.to_string());
            data.extend_from_slice(b);
        }
    }
    assert!(blocks.len() >= 4, "the transaction touches {blocks:?}");
    let payload = env.path("transaction.bin");
    write_file(&payload, &data);
    let script = env.path("journal.cmds");
    let open = if checksums { "jo -c -v 3" } else { "jo" };
    let cmds = format!(
        "{open}\njw -b {} {}\njc\n",
        blocks.join(","),
        payload.display()
    );
    write_file(&script, cmds.as_bytes());
    tool("debugfs", &[&"-w", &"-f", &script, &image]);
    true
}

#[test]
fn ext4_with_an_unreplayed_journal_reads_the_replayed_tree() {
    let env = Env::new();
    let image = env.path("journaled.img");
    if !journaled_image(&env, &image, true) {
        return;
    }
    // What is in place on the disk is the old state: debugfs does not replay the journal.
    assert!(needs_recovery(&image), "the journal must need recovery");
    let raw_ls = tool_out("debugfs", &[&"-R", &"ls -l /", &image]);
    assert!(!raw_ls.contains("only-in-journal.txt"), "{raw_ls}");
    let raw_cat = tool_out("debugfs", &[&"-R", &"cat /journal.txt", &image]);
    assert_eq!(raw_cat, "old content\n");
    let pristine = read(&image);
    env.backup(&image, &[]);

    let top = ls(&env, "", &[]);
    assert_eq!(
        names(&top),
        [
            "journal.txt",
            "keep.txt",
            "lost+found",
            "only-in-journal.txt"
        ],
        "{top:?}"
    );
    let fresh = top.iter().find(|e| e["name"] == "only-in-journal.txt");
    assert_eq!(fresh.unwrap()["size"], FRESH.len());
    let cat = |path: &str| env.cmd("cat", &["latest", path]).run().ok().stdout;
    assert_eq!(cat("only-in-journal.txt"), FRESH);
    assert_eq!(cat("journal.txt"), b"new content\n");
    assert_eq!(cat("keep.txt"), b"kept as it was\n");
    let disks = ls(&env, "", &["--recursive"]);
    assert_eq!(disks.len(), 4, "{disks:?}");

    // e2fsck's replay agrees.
    let fixed = env.path("fixed.img");
    fs::copy(&image, &fixed).unwrap();
    let fsck = Command::new("e2fsck")
        .arg("-fy")
        .arg(&fixed)
        .output()
        .unwrap();
    assert!(fsck.status.code().is_some_and(|c| c <= 1), "{fsck:?}");
    let replayed = tool_out("debugfs", &[&"-R", &"cat /only-in-journal.txt", &fixed]);
    assert_eq!(replayed.as_bytes(), FRESH);

    // The replay happened in memory: the source, the snapshot and an extract leave the
    // journal as it was.
    assert_eq!(read(&image), pristine, "the source image was written");
    let restored = env.path("restored.img");
    env.cmd("restore", &["latest", "--to"])
        .arg(&restored)
        .run()
        .ok();
    assert_same(&read(&restored), &pristine, "the restored snapshot");
    let out = env.path("out");
    env.cmd("extract", &["latest", "/", "--to"])
        .arg(&out)
        .run()
        .ok();
    assert_eq!(read(&out.join("root/only-in-journal.txt")), FRESH);
    let again = env.path("again.img");
    env.cmd("restore", &["latest", "--to"])
        .arg(&again)
        .run()
        .ok();
    assert!(
        needs_recovery(&again),
        "the snapshot's journal still needs recovery"
    );
}

/// A read-only loop mount, unmounted when dropped.
pub(super) struct Mount {
    pub(super) dir: PathBuf,
}

impl Mount {
    /// A kernel mount of `image` (read-only, through a loop device) with `options`.
    pub(super) fn new(image: &Path, dir: &Path, options: &str) -> Mount {
        fs::create_dir_all(dir).unwrap();
        let opts = format!("ro,loop,{options}");
        tool("mount", &[&"-o", &opts, &image, &dir]);
        Mount {
            dir: dir.to_path_buf(),
        }
    }

    /// An ntfs-3g (FUSE) mount of `image` with `options`.
    fn ntfs(image: &Path, dir: &Path, options: &str) -> Mount {
        fs::create_dir_all(dir).unwrap();
        tool("ntfs-3g", &[&"-o", &options, &image, &dir]);
        Mount {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.dir).status();
        if !ok.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// What the kernel shows below `root`: for each path (relative, `prefix/` in front), its
/// kind, mode, owner, mtime in ns, size (not for directories: FAT's differ by design) and
/// link target.
pub(super) fn mounted(root: &Path, prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let t = m.file_type();
            let (kind, size, target) = if t.is_symlink() {
                let target = fs::read_link(&p).unwrap().to_string_lossy().into_owned();
                ("symlink", m.len().to_string(), target)
            } else if t.is_dir() {
                stack.push(p.clone());
                ("dir", String::new(), String::new())
            } else if t.is_file() {
                ("file", m.len().to_string(), String::new())
            } else {
                ("other", m.len().to_string(), String::new())
            };
            let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
            let line = format!(
                "{kind} {:04o} {}:{} {mtime} {size} {target}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            );
            out.insert(format!("{prefix}/{rel}"), line);
        }
    }
    out
}

/// The same fields from `mover ls --recursive --json` of `path`.
pub(super) fn listed(env: &Env, path: &str) -> BTreeMap<String, String> {
    let field = |e: &serde_json::Value, k: &str| e[k].as_str().unwrap_or_default().to_string();
    ls(env, path, &["--recursive"])
        .iter()
        .map(|e| {
            let kind = field(e, "type");
            let size = if kind == "dir" {
                String::new()
            } else {
                e["size"].to_string()
            };
            let line = format!(
                "{kind} {} {}:{} {} {size} {}",
                field(e, "mode"),
                e["uid"],
                e["gid"],
                e["mtime_ns"],
                field(e, "target")
            );
            (field(e, "path"), line)
        })
        .collect()
}

#[test]
fn listings_match_a_loop_mount_of_the_restored_disk() {
    let what = "listings against a loop mount";
    if !have_root(what) || !have_tool(what, "sgdisk") {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    source_tree(&src);
    // A name that sorts between a directory and what it holds ("conf.d-old" after
    // "conf.d", before "conf.d/net.conf" byte-wise), and owners other than root, which
    // mkfs.ext4 -d copies.
    write_file(&src.join("etc/conf.d-old"), b"old\n");
    for p in ["home/user", "home/user/notes.txt", "home/user/fstab-link"] {
        std::os::unix::fs::lchown(src.join(p), Some(1000), Some(1001)).unwrap();
    }
    let (fat, ext, disk) = (
        env.path("fat.img"),
        env.path("ext.img"),
        env.path("disk.img"),
    );
    let files: [(&str, &[u8]); 3] = [
        ("EFI/BOOT/grub.cfg", b"set timeout=5\n"),
        ("Readme Long Name.txt", b"long file names work\n"),
        ("kernel.bin", &random_bytes(100_000, 5)),
    ];
    if !fat_image(&files, &fat, 4) || !ext4_image(&src, &ext, 6, "data") {
        return;
    }
    fs::File::create(&disk).unwrap().set_len(12 * MIB).unwrap();
    let parts: [&dyn AsRef<std::ffi::OsStr>; 6] = [
        &"-n",
        &"1:2048:10239",
        &"-n",
        &"2:10240:22527",
        &"-t",
        &"2:8300",
    ];
    let mut args = parts.to_vec();
    args.push(&disk);
    tool("sgdisk", &args);
    put(&disk, 2048, &fat);
    put(&disk, 10240, &ext);
    env.backup(&disk, &[]);
    let restored = env.path("restored.img");
    env.cmd("restore", &["latest", "--to"])
        .arg(&restored)
        .run()
        .ok();

    let _serial = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let ext_at = format!("offset={},sizelimit={}", 10240 * 512, 6 * MIB);
    let m = Mount::new(&restored, &env.path("mnt-ext"), &ext_at);
    let kernel = mounted(&m.dir, "p2");
    assert!(kernel.len() >= 12, "{kernel:#?}");
    assert_eq!(listed(&env, "p2"), kernel);
    // A recursive listing answers from the file catalog; without it, from the disk: the
    // same lines in the same order, each directory before what it holds.
    let from_catalog = env.cmd("ls", &["latest", "-R", "--json"]).run().ok();
    let text = from_catalog.stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    let at = |p: &str| {
        lines
            .iter()
            .position(|l| l.contains(&format!("\"path\":\"{p}\"")))
    };
    assert!(at("p2/etc/conf.d") < at("p2/etc/conf.d/net.conf"));
    assert!(at("p2/etc/conf.d/net.conf") < at("p2/etc/conf.d-old"));
    let chunks = |out: &Output| -> u64 {
        let n = out
            .stderr
            .split(": read ")
            .nth(1)
            .and_then(|r| r.split(' ').next());
        n.and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no read count: {out}"))
    };
    let catalog_chunks = chunks(&env.cmd("ls", &["latest", "-R", "-v"]).run().ok());
    fs::rename(env.repo.join("catalogs"), env.path("catalogs-away")).unwrap();
    let from_disk = env.cmd("ls", &["latest", "-R", "--json"]).run().ok();
    assert_eq!(from_catalog.stdout_str(), from_disk.stdout_str());
    let disk_chunks = chunks(&env.cmd("ls", &["latest", "-R", "-v"]).run().ok());
    assert!(
        catalog_chunks < disk_chunks,
        "{catalog_chunks} {disk_chunks}"
    );
    assert_eq!(listed(&env, "p2"), kernel);
    fs::rename(env.path("catalogs-away"), env.repo.join("catalogs")).unwrap();
    // The extract of the whole partition matches the mount too (contents, hard links).
    let out = env.path("out");
    env.cmd("extract", &["latest", "p2", "--to"])
        .arg(&out)
        .run()
        .ok();
    assert_eq!(describe(&out.join("p2"), true), describe(&m.dir, true));
    drop(m);

    // FAT has no owners or modes: the mount is told the ones mover shows (0755 directories,
    // 0644 files, owner 0) and to read times as UTC. Kernels built without vfat (small VM
    // kernels) cannot mount it; the FAT listing is then checked against its source only
    // (gpt_disk_lists_partitions_and_reads_fat_and_ext4).
    let kernel = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !kernel.split_whitespace().any(|f| f == "vfat") {
        eprintln!("note: this kernel cannot mount vfat; the FAT partition was not compared");
        return;
    }
    let fat_at = format!(
        "offset={},sizelimit={},uid=0,gid=0,dmask=0022,fmask=0133,tz=UTC",
        2048 * 512,
        4 * MIB
    );
    let m = Mount::new(&restored, &env.path("mnt-fat"), &fat_at);
    assert_eq!(listed(&env, "p1"), mounted(&m.dir, "p1"));
}

#[test]
fn an_older_unreplayed_journal_is_refused_with_the_way_to_mount_it() {
    let env = Env::new();
    let image = env.path("journaled.img");
    if !journaled_image(&env, &image, false) {
        return;
    }
    assert!(needs_recovery(&image));
    env.backup(&image, &[]);
    let to = env.path("out");
    for (cmd, args) in [
        ("ls", vec!["latest"]),
        ("cat", vec!["latest", "keep.txt"]),
        ("extract", vec!["latest", "/", "--to", to.to_str().unwrap()]),
    ] {
        let out = env.cmd(cmd, &args).run();
        out.assert_error(
            1,
            &["not unmounted cleanly", "journal", "mover serve --overlay"],
        );
        assert!(out.stdout.is_empty(), "{out}");
    }
    assert!(!to.exists(), "a refused extract created its destination");
}

/// Mode, owner and times for what an ntfs-3g mount shows, and what mover shows for NTFS.
const NTFS_MOUNT: &str = "fmask=0133,dmask=0022,uid=0,gid=0";

#[test]
fn ntfs_lists_cats_and_extracts_and_matches_an_ntfs_3g_mount() {
    let what = "file-level restore of NTFS";
    if !have_root(what) || !have_tool(what, "mkntfs") || !have_tool(what, "ntfs-3g") {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    source_tree(&src);
    write_file(&src.join("home/Ünïcödé name.txt"), "grüße\n".as_bytes());
    // NTFS keeps Windows ACLs, not modes: mover shows 0644 and 0755, so the source has those.
    for p in ["home/user/script.sh", "etc/conf.d/net.conf"] {
        fs::set_permissions(src.join(p), mode(0o644)).unwrap();
    }
    for p in ["home/user/empty-dir", "etc/conf.d"] {
        fs::set_permissions(src.join(p), mode(0o755)).unwrap();
    }
    let image = env.path("ntfs.img");
    fs::File::create(&image).unwrap().set_len(16 * MIB).unwrap();
    tool("mkntfs", &[&"-q", &"-F", &"-f", &"-L", &"WINDISK", &image]);
    {
        let m = Mount::ntfs(&image, &env.path("fill"), "rw");
        let from = format!("{}/.", src.display());
        tool("cp", &[&"-a", &from, &m.dir]);
    }
    env.backup(&image, &[]);

    let disk = ls(&env, "", &[]);
    assert_eq!(
        names(&disk),
        ["etc", "home"],
        "metadata files are hidden: {disk:?}"
    );
    let mover = env.cmd("ls", &["latest", "--json"]).run().ok();
    assert!(!mover.stdout_str().contains("$MFT"), "{mover}");
    let cat = env
        .cmd("cat", &["latest", "HOME/user/notes.txt"])
        .run()
        .ok();
    assert_eq!(
        cat.stdout, b"remember the milk\n",
        "names compare without case"
    );
    let home = ls(&env, "home", &[]);
    assert_eq!(
        names(&home),
        ["dangling", "user", "Ünïcödé name.txt"],
        "{home:?}"
    );
    let found = env.cmd("find", &["*name.txt"]).run().ok();
    found.assert_stderr_has(&["1 matches in 1 snapshots (1 answered from their file catalog)"]);
    assert!(
        found.stdout_str().contains("home/Ünïcödé name.txt"),
        "{found}"
    );
    let big = env.cmd("cat", &["latest", "home/user/data.bin"]).run().ok();
    assert_same(
        &big.stdout,
        &random_bytes(700_000, 7),
        "cat of a 700 KB file",
    );

    // ntfs-3g keeps symbolic links as Interix links; cat follows them.
    let user = ls(&env, "home/user", &[]);
    let link = user.iter().find(|e| e["name"] == "fstab-link").unwrap();
    assert_eq!(link["type"], "symlink", "{link}");
    assert_eq!(link["target"], "../../etc/fstab");
    let cat = env
        .cmd("cat", &["latest", "home/user/fstab-link"])
        .run()
        .ok();
    assert_eq!(cat.stdout, b"/dev/sda2 / ext4 defaults 0 1\n");
    let out = env.path("out");
    env.cmd("extract", &["latest", "/", "--to"])
        .arg(&out)
        .run()
        .ok();
    assert_eq!(describe(&out.join("root"), true), describe(&src, true));

    // The listing matches ntfs-3g's view of the restored disk, times to the 100 ns.
    let restored = env.path("restored.img");
    env.cmd("restore", &["latest", "--to"])
        .arg(&restored)
        .run()
        .ok();
    let opts = format!("ro,{NTFS_MOUNT}");
    let m = Mount::ntfs(&restored, &env.path("mnt"), &opts);
    let kernel: BTreeMap<String, String> = (mounted(&m.dir, "").into_iter())
        .map(|(k, v)| (k.trim_start_matches('/').to_string(), v))
        .collect();
    assert!(kernel.len() >= 12, "{kernel:#?}");
    let listed = listed(&env, "");
    assert_eq!(listed, kernel);
    let ns = listed["home/user/notes.txt"]
        .split(' ')
        .nth(3)
        .unwrap()
        .to_string();
    assert!(ns.ends_with("123456700"), "NTFS keeps 100 ns: {ns}");
}

fn mode(m: u32) -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(m)
}

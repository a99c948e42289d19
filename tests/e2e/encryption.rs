//! Encrypted repositories and archives through the binary: round trips (local and S3), keyed
//! chunk ids and no plaintext at rest, wrong and missing passwords, tampering reported with the
//! object it is in, key management, and encrypted archives through a pipe.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::archive::{assert_intact_except, lost_ranges};
use crate::util::*;

const PASSWORD: &str = "correct horse battery staple";

/// `mover ARGS…` with the password in `MOVER_PASSWORD`.
fn m<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Mover {
    mover(args).env("MOVER_PASSWORD", PASSWORD)
}

/// A temporary directory with an encrypted repository at `<dir>/repo`.
struct Enc {
    dir: tempfile::TempDir,
    repo: PathBuf,
}

impl Enc {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let out = m(&["init", "--encrypt", "-r"]).arg(&repo).run().ok();
        out.assert_stderr_has(&["repository encrypted with"]);
        Enc { dir, repo }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn cmd(&self, sub: &str, args: &[&str]) -> Mover {
        m(&[sub, "-r"]).arg(&self.repo).args(args)
    }
    /// An encrypted repository holding one backup of a fresh [`image`] (`seed`) at
    /// `<dir>/disk.img`; returns the image's path and bytes too.
    fn with_backup(seed: u64) -> (Self, PathBuf, Vec<u8>) {
        let e = Enc::new();
        let src = e.path("disk.img");
        let data = image(&src, seed);
        e.backup(&src, &[]);
        (e, src, data)
    }
    fn backup(&self, src: &Path, extra: &[&str]) -> serde_json::Value {
        let out = self
            .cmd("backup", &["--json", "--chunk-size", CHUNK_ARG, "--source"])
            .arg(src)
            .args(extra)
            .run()
            .ok();
        check_backup_summary(&out.json(), &out)
    }
}

/// An image with a recognisable text pattern, random data and a hole.
fn image(path: &Path, seed: u64) -> Vec<u8> {
    let mut data = b"RECOGNISABLE-SOURCE-PATTERN 0123456789 "
        .iter()
        .copied()
        .cycle()
        .take(300_000)
        .collect::<Vec<u8>>();
    data.extend(random_bytes(200_000, seed));
    data.extend(vec![0u8; 131_072]);
    data.extend(b"tail of the disk".repeat(2000));
    write_file(path, &data);
    data
}

/// What a full archive and one incremental of its chain restore to, on stdout.
fn restore_chain(full: &Path, inc: &Path) -> Vec<u8> {
    m(&["restore", "--from-archive"])
        .arg(full)
        .arg("--from-archive")
        .arg(inc)
        .args(&["--to", "-"])
        .run()
        .ok()
        .stdout
}

/// Every file of a directory with its bytes.
fn snapshot_dir(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .map(|p| (p.clone(), read(&p)))
        .collect()
}

#[test]
fn encrypted_repository_round_trip_incremental_delta_verify_doctor() {
    let e = Enc::new();
    let src = e.path("disk.img");
    let mut data = image(&src, 1);
    let full = e.backup(&src, &["--name", "vm"]);
    data[1000..1100].copy_from_slice(&[7; 100]);
    write_file(&src, &data);
    let inc = e.backup(&src, &["--name", "vm", "--parent", "latest"]);
    assert!(
        num(&inc, "chunks_reused") > 0,
        "the incremental deduplicates: {inc}"
    );
    let out = e.path("restored.img");
    e.cmd("restore", &["latest", "--name", "vm", "--to"])
        .arg(&out)
        .run()
        .ok();
    assert_same(&read(&out), &data, "restore of the incremental");
    let first = text(&full, "snapshot_id").to_string();
    let stdout = e.cmd("restore", &[&first, "--to", "-"]).run().ok().stdout;
    assert_same(
        &stdout,
        &image(&e.path("again.img"), 1),
        "restore of the full",
    );
    // Roll the restored image back to the full in place.
    e.cmd("restore", &[&first, "--delta", "--to"])
        .arg(&out)
        .run()
        .ok();
    assert_same(&read(&out), &stdout, "delta restore");
    e.cmd("verify", &[]).run().ok();
    let doctor = m(&["doctor", "-r"]).arg(&e.repo).run();
    assert_eq!(doctor.exit(), 0, "{doctor}");
    let said = format!("{doctor}");
    assert!(
        said.contains("encrypted with aes-256-gcm")
            || said.contains("encrypted with xchacha20-poly1305"),
        "doctor names the cipher: {said}"
    );
    // Two disks of one VM and an attachment.
    let b = e.path("b.img");
    write_file(&b, &random_bytes(70_000, 5));
    let att = e.path("vm.xml");
    write_file(&att, b"<domain>SECRET-ATTACHMENT</domain>");
    e.cmd(
        "backup",
        &["--name", "two", "--chunk-size", CHUNK_ARG, "--source"],
    )
    .arg(format!("sda={}", src.display()))
    .arg("--source")
    .arg(format!("sdb={}", b.display()))
    .arg("--attach")
    .arg(&att)
    .run()
    .ok();
    let got = e
        .cmd(
            "restore",
            &[
                "latest",
                "--name",
                "two",
                "--attachment",
                "vm.xml",
                "--to",
                "-",
            ],
        )
        .run()
        .ok();
    assert_eq!(got.stdout, b"<domain>SECRET-ATTACHMENT</domain>");
    assert_no_plaintext(
        &e.repo,
        &[
            b"RECOGNISABLE-SOURCE",
            b"SECRET-ATTACHMENT",
            b"disk.img",
            b"vm.xml",
        ],
    );
}

/// No file under `dir` holds any of `needles`.
fn assert_no_plaintext(dir: &Path, needles: &[&[u8]]) {
    for f in files_under(dir) {
        let bytes = read(&f);
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == *needle),
                "{} holds plaintext {:?}",
                f.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
}

#[test]
fn chunk_ids_are_keyed_and_nothing_is_in_clear() {
    let plain = Env::new();
    let e = Enc::new();
    let src = e.path("disk.img");
    let data = image(&src, 2);
    plain.backup(&src, &[]);
    e.backup(&src, &[]);
    // The plain BLAKE3 ids of the source's chunks are in the clear repository's index, and
    // nowhere in the encrypted one.
    let ids: Vec<[u8; 32]> = data
        .chunks(64 * 1024)
        .filter(|c| c.iter().any(|&b| b != 0))
        .map(|c| *blake3::hash(c).as_bytes())
        .collect();
    let all = |dir: &Path| -> Vec<u8> { files_under(dir).iter().flat_map(|p| read(p)).collect() };
    let (plain_bytes, enc_bytes) = (all(&plain.repo), all(&e.repo));
    for id in &ids {
        assert!(
            plain_bytes.windows(32).any(|w| w == id),
            "a clear repository names its ids"
        );
        assert!(
            !enc_bytes.windows(32).any(|w| w == id),
            "an encrypted repository leaks an id"
        );
    }
    for needle in [&b"RECOGNISABLE-SOURCE"[..], b"tail of the disk"] {
        assert!(plain_bytes.windows(needle.len()).any(|w| w == needle));
        assert!(!enc_bytes.windows(needle.len()).any(|w| w == needle));
    }
    // The config says the repository is encrypted and with what (and holds no key): version 3
    // for AES-256-GCM, the choice where the processor has AES instructions, else 2.
    let config = read(&e.repo.join("config"));
    assert_eq!(config.len(), 88);
    assert!(
        [[3, 0, 0, 0, 1, 0, 0, 0], [2, 0, 0, 0, 1, 0, 0, 0]]
            .contains(&config[8..16].try_into().unwrap()),
        "{:?}",
        &config[8..16]
    );
}

/// `--cipher` picks the AEAD of a repository or an archive chain; both restore bit-exact, each
/// says which it is in its format version, and a bad or misplaced choice is a usage error.
#[test]
fn both_ciphers_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    let data = image(&src, 9);
    for (cipher, version) in [("xchacha20-poly1305", 2u8), ("aes-256-gcm", 3)] {
        let repo = dir.path().join(cipher);
        m(&["init", "--encrypt", "--cipher", cipher, "-r"])
            .arg(&repo)
            .run()
            .ok()
            .assert_stderr_has(&[&format!("repository encrypted with {cipher}")]);
        assert_eq!(read(&repo.join("config"))[8], version, "{cipher}");
        m(&["backup", "--chunk-size", CHUNK_ARG, "-r"])
            .arg(&repo)
            .arg("--source")
            .arg(&src)
            .run()
            .ok();
        let out = m(&["restore", "latest", "--to", "-", "-r"])
            .arg(&repo)
            .run()
            .ok();
        assert_same(
            &out.stdout,
            &data,
            &format!("restore from a {cipher} repository"),
        );
        m(&["verify", "--read-data", "-r"]).arg(&repo).run().ok();
        let at_rest: Vec<u8> = files_under(&repo).iter().flat_map(|f| read(f)).collect();
        assert!(!at_rest
            .windows(27)
            .any(|w| w == b"RECOGNISABLE-SOURCE-PATTERN"));

        // An archive chain: the full picks the cipher, the catalog keeps it, the incremental
        // follows it and refuses another.
        let catalog = dir.path().join(format!("{cipher}.json"));
        let full = dir.path().join(format!("{cipher}.arc"));
        let archive = |to: &Path, extra: &[&str]| {
            m(&["backup", "--chunk-size", CHUNK_ARG, "--block-size", "64KiB"])
                .args(extra)
                .arg("--to-archive")
                .arg(to)
                .arg("--source")
                .arg(&src)
                .arg("--catalog")
                .arg(&catalog)
                .run()
        };
        archive(&full, &["--encrypt", "--cipher", cipher]).ok();
        // The volume frame (the first) says the version in clear; `archive ls` names the cipher.
        assert_eq!(read(&full)[64], version, "{cipher} archive version");
        let ls = m(&["archive", "ls", "--json"]).arg(&full).run().ok().json();
        let ls = &ls["data"];
        assert_eq!(
            (&ls["encrypted"], &ls["cipher"]),
            (&true.into(), &cipher.into())
        );
        let cat: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&catalog).unwrap()).unwrap();
        assert_eq!(cat["cipher"], cipher);
        let other = if version == 2 {
            "aes-256-gcm"
        } else {
            "xchacha20-poly1305"
        };
        let inc = dir.path().join(format!("{cipher}-inc.arc"));
        archive(
            &inc,
            &["--parent", "latest", "--encrypt", "--cipher", other],
        )
        .assert_error(2, &[&format!("encrypted with {cipher}"), "--cipher"]);
        assert!(!inc.exists(), "nothing written for a refused incremental");
        archive(&inc, &["--parent", "latest"]).ok();
        assert_eq!(
            read(&inc)[64],
            version,
            "the incremental keeps the chain's cipher"
        );
        assert_same(
            &restore_chain(&full, &inc),
            &data,
            &format!("restore of a {cipher} chain"),
        );
    }
    let repo = dir.path().join("bad");
    m(&["init", "--encrypt", "--cipher", "rot13", "-r"])
        .arg(&repo)
        .run()
        .assert_error(2, &["unknown cipher", "aes-256-gcm", "xchacha20-poly1305"]);
    m(&["init", "--cipher", "aes-256-gcm", "-r"])
        .arg(&repo)
        .run()
        .assert_error(2, &["--encrypt"]);
    assert!(!repo.exists(), "a refused init makes nothing");
}

#[test]
fn wrong_or_missing_password_fails_and_touches_nothing() {
    let (e, src, _) = Enc::with_backup(3);
    let before = snapshot_dir(&e.repo);
    let wrong = |sub: &str, extra: &[&str]| {
        mover([sub, "-r"])
            .arg(&e.repo)
            .args(extra)
            .env("MOVER_PASSWORD", "not the password")
            .run()
    };
    wrong("snapshots", &[]).assert_error(1, &["wrong password"]);
    wrong("backup", &["--source", src.to_str().unwrap()]).assert_error(1, &["wrong password"]);
    wrong("restore", &["latest", "--to", "-"]).assert_error(1, &["wrong password"]);
    wrong("verify", &[]).assert_error(1, &["wrong password"]);
    // No password and no terminal: one line saying how to give it.
    mover(["snapshots", "-r"])
        .arg(&e.repo)
        .env_remove("MOVER_PASSWORD")
        .run()
        .assert_error(1, &["encrypted", "MOVER_PASSWORD", "--password-file"]);
    assert!(before == snapshot_dir(&e.repo), "the repository changed");
    // A password file works.
    let pw = e.path("pw");
    write_file(&pw, format!("{PASSWORD}\n").as_bytes());
    mover(["snapshots", "--password-file"])
        .arg(&pw)
        .arg("-r")
        .arg(&e.repo)
        .run()
        .ok();
    // init --encrypt without any password and no terminal is a usage error.
    mover(["init", "--encrypt", "-r"])
        .arg(e.path("other"))
        .env_remove("MOVER_PASSWORD")
        .run()
        .assert_error(2, &["password", "MOVER_PASSWORD"]);
}

/// Flips one byte of `path` at `at` (from the end when negative).
fn flip(path: &Path, at: i64) {
    let mut bytes = read(path);
    let i = if at < 0 { bytes.len() as i64 + at } else { at } as usize;
    bytes[i] ^= 0x01;
    write_file(path, &bytes);
}

#[test]
fn a_flipped_byte_is_reported_with_its_object_and_nothing_wrong_is_written() {
    // In a pack: the chunk's AEAD fails, naming the pack.
    let (e, src, _) = Enc::with_backup(4);
    let packs = files_under(&e.repo.join("packs"));
    assert_eq!(packs.len(), 1);
    flip(&packs[0], 1000);
    let dest = e.path("out.img");
    let out = e.cmd("restore", &["latest", "--to"]).arg(&dest).run();
    out.assert_error(
        1,
        &["failed authentication", "pack", &name_of(&packs[0])[..16]],
    );
    assert!(!dest.exists(), "a failed restore leaves no file");
    let v = e.cmd("verify", &[]).run();
    assert_eq!(v.exit(), 1, "{v}");
    assert!(
        v.stdout_str().contains("failed authentication") || v.stderr.contains("damaged"),
        "{v}"
    );

    // In an index segment: skipped with a warning naming it; its chunks cannot be found.
    let e = Enc::new();
    e.backup(&src, &[]);
    let seg = files_under(&e.repo.join("index")).remove(0);
    flip(&seg, 40);
    let out = e.cmd("restore", &["latest", "--to"]).arg(&dest).run();
    assert_eq!(out.exit(), 1, "{out}");
    out.assert_stderr_has(&["index segment", &name_of(&seg)[..16]]);
    assert!(!dest.exists());

    // In a manifest: reported with the snapshot.
    let e = Enc::new();
    let snap = text(&e.backup(&src, &[]), "snapshot_id").to_string();
    let manifest = e.repo.join("snapshots").join(&snap);
    flip(&manifest, -20);
    let out = e.cmd("restore", &[&snap, "--to"]).arg(&dest).run();
    out.assert_error(1, &["snapshot", &snap[..12]]);
    assert!(!dest.exists());
    // Renamed to its new hash, the forged manifest still fails authentication.
    let forged = read(&manifest);
    let new_id = blake3::hash(&forged).to_hex().to_string();
    std::fs::rename(&manifest, e.repo.join("snapshots").join(&new_id)).unwrap();
    let out = e.cmd("restore", &[&new_id, "--to"]).arg(&dest).run();
    out.assert_error(1, &["failed authentication", &new_id[..12]]);
}

#[test]
fn keys_add_list_remove_passwd() {
    let (e, _, data) = Enc::with_backup(5);
    let list = |pw: &str| -> Vec<serde_json::Value> {
        let out = mover(["key", "list", "--json", "-r"])
            .arg(&e.repo)
            .env("MOVER_PASSWORD", pw)
            .run()
            .ok();
        out.json().as_array().unwrap().clone()
    };
    let first = list(PASSWORD);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["in_use"], true);
    assert_eq!(first[0]["kdf"], "argon2id");
    let first_id = first[0]["id"].as_str().unwrap().to_string();
    // The last key cannot be removed.
    m(&["key", "remove", "-r"])
        .arg(&e.repo)
        .arg(&first_id[..12])
        .run()
        .assert_error(1, &["last key"]);
    // add: a second password.
    let added = m(&["key", "add", "-r"])
        .arg(&e.repo)
        .env("MOVER_NEW_PASSWORD", "second password")
        .run()
        .ok();
    let second_id = added.stdout_str().trim().to_string();
    assert!(is_hex_id(&second_id), "{added}");
    assert_eq!(list("second password").len(), 2);
    // The key in use cannot be removed.
    m(&["key", "remove", "-r"])
        .arg(&e.repo)
        .arg(&first_id[..12])
        .run()
        .assert_error(1, &["in use", "passwd"]);
    // passwd (new password from a file): the old one stops working, the other still works.
    let pw = e.path("new-pw");
    write_file(&pw, b"third password\n");
    m(&["key", "passwd", "--new-password-file"])
        .arg(&pw)
        .arg("-r")
        .arg(&e.repo)
        .run()
        .ok();
    e.cmd("snapshots", &[])
        .run()
        .assert_error(1, &["wrong password"]);
    let restored = mover(["restore", "latest", "--to", "-", "-r"])
        .arg(&e.repo)
        .env("MOVER_PASSWORD", "second password")
        .run()
        .ok();
    assert_same(&restored.stdout, &data, "restore with the second key");
    let keys = list("third password");
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k["id"] != first_id.as_str()));
    // remove: the second key, with the third password.
    mover(["key", "remove", "-r"])
        .arg(&e.repo)
        .arg(&second_id[..16])
        .env("MOVER_PASSWORD", "third password")
        .run()
        .ok();
    mover(["snapshots", "-r"])
        .arg(&e.repo)
        .env("MOVER_PASSWORD", "second password")
        .run()
        .assert_error(1, &["wrong password"]);
    // key commands on a clear repository say so.
    let plain = Env::new();
    m(&["key", "list", "-r"])
        .arg(&plain.repo)
        .run()
        .assert_error(1, &["not encrypted"]);
}

#[test]
fn encrypted_archive_through_a_pipe_chain_import_export() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    let mut data = image(&src, 6);
    let catalog = dir.path().join("catalog.json");
    let archive = m(&[
        "backup",
        "--chunk-size",
        CHUNK_ARG,
        "--block-size",
        "64KiB",
        "--encrypt",
    ])
    .args(&["--to-archive", "-"])
    .arg("--source")
    .arg(&src)
    .arg("--catalog")
    .arg(&catalog)
    .run()
    .ok()
    .stdout;
    for needle in [
        &b"RECOGNISABLE-SOURCE"[..],
        b"tail of the disk",
        b"disk.img",
    ] {
        assert!(!archive.windows(needle.len()).any(|w| w == needle));
    }
    let cat = std::fs::read_to_string(&catalog).unwrap();
    assert!(!cat.contains(&blake3::hash(b"x").to_hex().to_string()));
    assert!(
        cat.contains("\"key\""),
        "the catalog keeps the chain's wrapped key"
    );
    // Restore from the pipe (stdin) to stdout.
    let out = m(&["restore", "--from-archive", "-", "--to", "-"])
        .stdin(&archive)
        .run()
        .ok();
    assert_same(
        &out.stdout,
        &data,
        "restore of an encrypted archive from a pipe",
    );
    let full = dir.path().join("full.arc");
    write_file(&full, &archive);
    m(&["archive", "verify"]).arg(&full).run().ok();
    // Without a password, or with a wrong one: one clear line, exit 1.
    mover(["archive", "ls"])
        .arg(&full)
        .run()
        .assert_error(1, &["encrypted", "MOVER_PASSWORD"]);
    mover(["restore", "--from-archive", "-", "--to", "-"])
        .stdin(&archive)
        .env("MOVER_PASSWORD", "nope")
        .run()
        .assert_error(1, &["wrong password"]);
    // An incremental of the chain uses the same key (from the catalog).
    data[70_000..70_010].copy_from_slice(b"0123456789");
    write_file(&src, &data);
    let inc = dir.path().join("inc.arc");
    m(&[
        "backup",
        "--chunk-size",
        CHUNK_ARG,
        "--block-size",
        "64KiB",
        "--parent",
    ])
    .args(&["latest", "--to-archive"])
    .arg(&inc)
    .arg("--source")
    .arg(&src)
    .arg("--catalog")
    .arg(&catalog)
    .run()
    .ok();
    assert!(
        read(&inc).len() < archive.len() / 2,
        "the incremental holds only new chunks"
    );
    assert_same(
        &restore_chain(&full, &inc),
        &data,
        "restore of the encrypted chain",
    );
    // Import into an encrypted repository and into a clear one; export both ways.
    let e = Enc::new();
    let plain = Env::new();
    for repo in [&e.repo, &plain.repo] {
        m(&["archive", "import", "-r"])
            .arg(repo)
            .arg(&full)
            .run()
            .ok();
    }
    let first = image(&e.path("first.img"), 6);
    assert_same(
        &plain.restore_stdout("latest"),
        &first,
        "clear repository after import",
    );
    let exported = e.path("exported.arc");
    m(&["archive", "export", "latest", "--encrypt", "-r"])
        .arg(&e.repo)
        .arg("--to")
        .arg(&exported)
        .run()
        .ok();
    let back = m(&["restore", "--from-archive"])
        .arg(&exported)
        .args(&["--to", "-"])
        .run()
        .ok();
    assert_same(
        &back.stdout,
        &first,
        "encrypted export of an encrypted repository",
    );
    let clear = e.path("clear.arc");
    m(&["archive", "export", "latest", "-r"])
        .arg(&e.repo)
        .arg("--to")
        .arg(&clear)
        .run()
        .ok();
    let back = mover(["restore", "--from-archive"])
        .arg(&clear)
        .args(&["--to", "-"])
        .run()
        .ok();
    assert_same(
        &back.stdout,
        &first,
        "clear export of an encrypted repository",
    );
}

#[test]
fn a_tampered_encrypted_archive_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    let data = image(&src, 7);
    let arc = dir.path().join("a.arc");
    m(&[
        "backup",
        "--chunk-size",
        CHUNK_ARG,
        "--encrypt",
        "--to-archive",
    ])
    .arg(&arc)
    .arg("--source")
    .arg(&src)
    .run()
    .ok();
    flip(&arc, 200_000);
    let out = dir.path().join("out.img");
    let r = m(&["restore", "--from-archive"])
        .arg(&arc)
        .arg("--to")
        .arg(&out)
        .run();
    assert_eq!(
        r.exit(),
        3,
        "damage is reported, what is intact restored:\n{r}"
    );
    r.assert_stderr_has(&["warning", "at byte"]);
    let lost = lost_ranges(&r, &src);
    assert!(!lost.is_empty(), "{r}");
    assert_intact_except(&read(&out), &data, &lost, "tampered encrypted archive");
    let strict = m(&["restore", "--strict", "--from-archive"])
        .arg(&arc)
        .arg("--to")
        .arg(dir.path().join("strict.img"))
        .run();
    assert_eq!(strict.exit(), 1, "{strict}");
    let v = m(&["archive", "verify"]).arg(&arc).run();
    assert_eq!(v.exit(), 1, "{v}");
}

#[test]
fn encrypted_repository_on_s3() {
    let servers = crate::s3::servers();
    for s in servers {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("s3://{}/{}", s.bucket, unique_name("e2e-enc"));
        let cmd = |sub: &str| {
            m(&[
                sub,
                "-r",
                &url,
                "--s3-endpoint",
                &s.endpoint,
                "--s3-region",
                &s.region,
            ])
            .arg("--s3-allow-http")
            .env("AWS_ACCESS_KEY_ID", &s.access)
            .env("AWS_SECRET_ACCESS_KEY", &s.secret)
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .timeout(Duration::from_secs(120))
        };
        cmd("init").arg("--encrypt").run().ok();
        let src = dir.path().join("disk.img");
        let data = image(&src, 8);
        cmd("backup")
            .args(&["--chunk-size", CHUNK_ARG, "--source"])
            .arg(&src)
            .run()
            .ok();
        cmd("backup")
            .args(&["--chunk-size", CHUNK_ARG, "--parent", "latest", "--source"])
            .arg(&src)
            .run()
            .ok();
        let out = cmd("restore").args(&["latest", "--to", "-"]).run().ok();
        assert_same(
            &out.stdout,
            &data,
            &format!("{}: encrypted S3 restore", s.name),
        );
        cmd("verify").run().ok();
        let wrong = cmd("snapshots").env("MOVER_PASSWORD", "wrong").run();
        wrong.assert_error(1, &["wrong password"]);
        // The cached index segments are sealed too.
        assert_no_plaintext(&dir.path().join("cache"), &[b"RECOGNISABLE-SOURCE"]);
    }
}

#[test]
fn a_profile_takes_the_password_from_its_repository_password_file() {
    let e = Enc::new();
    let src = e.path("disk.img");
    let data = image(&src, 9);
    let pw = e.path("repo.pass");
    write_file(&pw, format!("{PASSWORD}\n").as_bytes());
    let config = e.path("config.toml");
    let toml = format!(
        "[repositories.r]\nlocation = {:?}\npassword_file = {:?}\n\n[profiles.p]\nrepository = \"r\"\nsources = [{:?}]\nname = \"p\"\n",
        e.repo.display().to_string(),
        pw.display().to_string(),
        src.display().to_string()
    );
    write_file(&config, toml.as_bytes());
    mover(["backup", "--profile", "p", "--config"])
        .arg(&config)
        .run()
        .ok();
    let out = e
        .cmd("restore", &["latest", "--name", "p", "--to", "-"])
        .run()
        .ok();
    assert_same(&out.stdout, &data, "restore of the profile's backup");
}

#[test]
fn forget_gc_check_and_repair_on_an_encrypted_repository() {
    let env = Enc::new();
    let (a, b) = (env.path("a.img"), env.path("b.img"));
    image(&a, 51);
    let want_b = image(&b, 52);
    let ia = text(&env.backup(&a, &["--name", "a"]), "snapshot_id").to_string();
    let ib = text(&env.backup(&b, &["--name", "b"]), "snapshot_id").to_string();
    env.cmd("forget", &[ia.as_str()]).run().ok();
    // b shares a's text pattern, so a's pack is partly live: repacked, then swept.
    let gc = || {
        env.cmd("gc", &["--grace", "0s", "--json"])
            .run()
            .ok()
            .json()["data"]
            .clone()
    };
    let d = gc();
    assert_eq!(num(&d, "condemned_packs"), 1, "{d}");
    let d = gc();
    assert_eq!(num(&d, "swept_packs"), 1, "{d}");
    env.cmd("check", &[]).run().ok();
    // Rebuilt from the sealed pack trailers, the index still opens every chunk.
    m(&["repair", "index", "-r"]).arg(&env.repo).run().ok();
    env.cmd("check", &[]).run().ok();
    let out = env.cmd("restore", &[ib.as_str(), "--to", "-"]).run().ok();
    assert_same(&out.stdout, &want_b, "b restores after gc and repair");
    env.cmd("verify", &[]).run().ok();
    // Nothing in clear: no file of the repository holds the source's text.
    assert_no_plaintext(&env.repo, &[b"RECOGNISABLE-SOURCE-PATTERN"]);
    // Without the password: one clear line, nothing touched.
    mover(["gc", "-r"])
        .arg(&env.repo)
        .env_remove("MOVER_PASSWORD")
        .run()
        .assert_error(1, &["encrypted", "MOVER_PASSWORD"]);
}

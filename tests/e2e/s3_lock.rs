//! Immutable repositories with S3 Object Lock, against moto's S3 server (which enforces
//! locks), started by `scripts/s3-servers.sh`: refused configurations, every object locked,
//! reused packs extended in generations, `forget` and `gc` waiting for locks, and an attacker
//! holding the repository's own credentials who cannot destroy a snapshot.
//!
//! The attacker speaks S3 directly, with boto3 from moto's Python (`MOVER_TEST_MOTO_PYTHON`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::s3::{server, Server};
use crate::util::*;

const DAY_MS: i64 = 86_400_000;

struct Repo {
    server: Server,
    bucket: String,
    prefix: String,
    dir: TempDir,
    cache: PathBuf,
}

impl Repo {
    fn new(server: &Server, bucket: &str) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        Repo {
            server: server.clone(),
            bucket: bucket.to_string(),
            prefix: unique_name("lock"),
            cache: dir.path().join("cache"),
            dir,
        }
    }

    fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn cmd(&self, sub: &str, args: &[&str]) -> Mover {
        mover([
            sub,
            "-r",
            &self.url(),
            "--s3-endpoint",
            &self.server.endpoint,
        ])
        .args(&["--s3-region", &self.server.region, "--s3-allow-http"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", &self.server.access)
        .env("AWS_SECRET_ACCESS_KEY", &self.server.secret)
        .env("XDG_CACHE_HOME", &self.cache)
        .timeout(Duration::from_secs(120))
    }

    fn backup(&self, src: &Path) -> Value {
        let out = self
            .cmd("backup", &["--json", "--chunk-size", CHUNK_ARG, "--source"])
            .arg(src)
            .run()
            .ok();
        check_backup_summary(&out.json(), &out)
    }

    fn snapshots(&self) -> usize {
        let out = self.cmd("snapshots", &["--json"]).run().ok();
        out.json().as_array().map_or(0, Vec::len)
    }

    /// Runs `script` in moto's Python with boto3 client `s3` (the repository's credentials),
    /// `bucket` and `prefix` set; returns its stdout as JSON.
    fn boto(&self, script: &str) -> Value {
        let python = std::env::var("MOVER_TEST_MOTO_PYTHON").expect("MOVER_TEST_MOTO_PYTHON");
        let prelude = format!(
            "import boto3, json, datetime\n\
             s3 = boto3.client('s3', endpoint_url={:?}, region_name={:?},\n\
                 aws_access_key_id={:?}, aws_secret_access_key={:?})\n\
             bucket, prefix = {:?}, {:?}\n",
            self.server.endpoint,
            self.server.region,
            self.server.access,
            self.server.secret,
            self.bucket,
            format!("{}/", self.prefix),
        );
        let out = Command::new(python)
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .output()
            .expect("run moto's python");
        assert!(
            out.status.success(),
            "boto3 script failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("the script prints JSON")
    }

    /// Every current object of the repository with its retain-until date, ms.
    fn locks(&self) -> Vec<(String, Option<i64>)> {
        let v = self.boto(
            "out = []\n\
             for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get('Contents', []):\n\
             \x20   h = s3.head_object(Bucket=bucket, Key=o['Key'])\n\
             \x20   u = h.get('ObjectLockRetainUntilDate')\n\
             \x20   out.append([o['Key'], int(u.timestamp() * 1000) if u else None])\n\
             print(json.dumps(out))\n",
        );
        v.as_array()
            .expect("a list")
            .iter()
            .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_i64()))
            .collect()
    }
}

fn moto() -> Option<Server> {
    server("MOTO")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn refused_lock_configurations_are_clear_errors() {
    let Some(server) = moto() else { return };
    let plain = std::env::var("MOVER_TEST_MOTO_UNLOCKED_BUCKET").expect("unlocked bucket");
    let repo = Repo::new(&server, &plain);
    let out = repo.cmd("init", &["--lock-days", "7"]).run();
    assert_ne!(out.exit(), 0, "{out}");
    out.assert_stderr_has(&["no Object Lock"]);
    assert!(
        repo.locks().is_empty(),
        "nothing written: {:?}",
        repo.locks()
    );

    let repo = Repo::new(&server, &server.bucket);
    let out = repo.cmd("init", &["--lock-days", "0"]).run();
    assert_eq!(out.exit(), 2, "{out}");
    let out = repo.cmd("init", &["--lock-mode", "compliance"]).run();
    assert_eq!(out.exit(), 2, "a mode needs --lock-days: {out}");
    let local = tempfile::tempdir().unwrap();
    let out = mover(["init", "-r"])
        .arg(local.path().join("r"))
        .args(&["--lock-days", "3"])
        .run();
    out.assert_error(2, &["S3"]);

    // gc's grace period may not outlast the lock.
    repo.cmd("init", &["--lock-days", "1"]).run().ok();
    let out = repo.cmd("gc", &["--grace", "2d"]).run();
    assert_ne!(out.exit(), 0, "{out}");
    out.assert_stderr_has(&["shorter than gc's grace"]);
}

#[test]
fn every_object_is_locked_and_reused_packs_are_extended_in_generations() {
    let Some(server) = moto() else { return };
    let repo = Repo::new(&server, &server.bucket);
    repo.cmd("init", &["--lock-days", "1"]).run().ok();
    let src = repo.dir.path().join("a.img");
    let data = random_bytes(3 * MIB, 81);
    write_file(&src, &data);
    let first = repo.backup(&src);
    let t = now_ms();
    let locks = repo.locks();
    for (key, until) in &locks {
        let until = until.unwrap_or_else(|| panic!("{key} is not locked"));
        assert!(
            until > t + DAY_MS - 120_000,
            "{key} locked for a day: {until}"
        );
    }
    let pack_until = |locks: &[(String, Option<i64>)]| -> Vec<i64> {
        locks
            .iter()
            .filter(|(k, _)| k.contains("/packs/"))
            .map(|(_, u)| u.expect("locked"))
            .collect()
    };
    let packs = pack_until(&locks);
    assert!(!packs.is_empty());
    // A new pack starts a generation: locked for the window and 10 more days.
    assert!(packs.iter().all(|u| *u > t + 10 * DAY_MS), "{packs:?}");

    let out = repo.cmd("check", &[]).run();
    assert_eq!(out.exit(), 0, "{out}");
    out.assert_stderr_has(&["lock: 1 days, governance mode: 1 of 1 snapshots", "locked"]);
    let out = repo.cmd("doctor", &[]).run();
    assert!(
        out.to_string().contains("lock"),
        "doctor reports the locks:\n{out}"
    );

    // The window grows to 30 days (the policy object rewritten by the administrator): the
    // next backup extends the reused pack past it, by a generation; the one after extends
    // nothing, also from a machine without the local record (a fresh cache).
    repo.boto(
        "s3.put_object(Bucket=bucket, Key=prefix + 'lock', Body=b'mode=governance\\ndays=30\\n')\n\
         print('null')\n",
    );
    repo.backup(&src);
    let t2 = now_ms();
    let extended = pack_until(&repo.locks());
    assert!(
        extended.iter().all(|u| *u > t2 + 40 * DAY_MS - 120_000),
        "extended to the window and a generation: {extended:?}"
    );
    let mut fresh = Repo::new(&server, &server.bucket);
    fresh.prefix = repo.prefix.clone();
    fresh.backup(&src);
    assert_eq!(
        pack_until(&repo.locks()),
        extended,
        "no extension inside a generation"
    );

    // forget keeps what is locked and says until when; gc deletes nothing and fails nothing.
    let id = text(&first, "snapshot_id").to_string();
    let out = repo.cmd("forget", &[id.as_str()]).run().ok();
    assert!(out.stdout_str().contains("locked until"), "{out}");
    assert_eq!(repo.snapshots(), 3, "a locked snapshot stays");
    for _ in 0..2 {
        repo.cmd("gc", &["--grace", "0s"]).run().ok();
    }
    let out = repo.cmd("restore", &[id.as_str(), "--to", "-"]).run().ok();
    assert_same(&out.stdout, &data, "the locked snapshot restores");
}

#[test]
fn the_repository_credentials_cannot_destroy_locked_snapshots() {
    let Some(server) = moto() else { return };
    let repo = Repo::new(&server, &server.bucket);
    repo.cmd("init", &["--lock-days", "1", "--lock-mode", "compliance"])
        .run()
        .ok();
    let src = repo.dir.path().join("a.img");
    let data = random_bytes(3 * MIB, 91);
    write_file(&src, &data);
    let id = text(&repo.backup(&src), "snapshot_id").to_string();

    // The attacker: delete every version of the repository's objects for good (with the
    // governance bypass, too), then overwrite each object and delete it by name. (Probe
    // objects that `init` wrote and removed are no part of the repository, and not locked.)
    let v = repo.boto(
        "refused, deleted = 0, 0\n\
         versions = s3.list_object_versions(Bucket=bucket, Prefix=prefix)['Versions']\n\
         versions = [v for v in versions if '/probe/' not in v['Key']]\n\
         for v in versions:\n\
         \x20   try:\n\
         \x20       s3.delete_object(Bucket=bucket, Key=v['Key'], VersionId=v['VersionId'],\n\
         \x20                        BypassGovernanceRetention=True)\n\
         \x20       deleted += 1\n\
         \x20   except Exception:\n\
         \x20       refused += 1\n\
         for v in versions:\n\
         \x20   s3.put_object(Bucket=bucket, Key=v['Key'], Body=b'encrypted by ransomware')\n\
         \x20   s3.delete_object(Bucket=bucket, Key=v['Key'])\n\
         print(json.dumps({'versions': len(versions), 'refused': refused, 'deleted': deleted}))\n",
    );
    assert_eq!(v["deleted"], 0, "no locked version deleted: {v}");
    assert!(v["refused"].as_u64().unwrap() >= 4, "{v}");
    // The repository looks gone now (delete markers hide it)...
    let out = repo.cmd("snapshots", &[]).run();
    out.assert_error(1, &["not a mover repository"]);
    // ...but every locked version is still there, byte for byte: removing what the attacker
    // added (delete markers and unlocked versions) brings the repository back.
    let v = repo.boto(
        "r = s3.list_object_versions(Bucket=bucket, Prefix=prefix)\n\
         undone = 0\n\
         for m in r.get('DeleteMarkers', []):\n\
         \x20   s3.delete_object(Bucket=bucket, Key=m['Key'], VersionId=m['VersionId'])\n\
         \x20   undone += 1\n\
         for v in r['Versions']:\n\
         \x20   h = s3.head_object(Bucket=bucket, Key=v['Key'], VersionId=v['VersionId'])\n\
         \x20   if not h.get('ObjectLockRetainUntilDate'):\n\
         \x20       s3.delete_object(Bucket=bucket, Key=v['Key'], VersionId=v['VersionId'])\n\
         \x20       undone += 1\n\
         print(json.dumps({'undone': undone}))\n",
    );
    assert!(v["undone"].as_u64().unwrap() >= 8, "{v}");
    assert_eq!(repo.snapshots(), 1);
    let out = repo.cmd("verify", &[]).run();
    assert_eq!(out.exit(), 0, "verify after the attack was undone:\n{out}");
    let out = repo.cmd("restore", &[id.as_str(), "--to", "-"]).run().ok();
    assert_same(
        &out.stdout,
        &data,
        "the snapshot survives its own credentials",
    );
}

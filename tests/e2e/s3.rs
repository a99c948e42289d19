//! The S3 target end to end, against the real servers `scripts/test.sh` starts (Garage and
//! s3s-fs): every command with `-r s3://BUCKET/PREFIX`, concurrent backups into one bucket,
//! clear errors for bad credentials, missing buckets and unreachable endpoints, and backups
//! through a fault-injecting proxy.

use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::faultproxy::FaultProxy;
use crate::util::*;

#[derive(Clone)]
pub(crate) struct Server {
    pub(crate) name: &'static str,
    pub(crate) endpoint: String,
    pub(crate) bucket: String,
    pub(crate) access: String,
    pub(crate) secret: String,
    pub(crate) region: String,
}

pub(crate) fn server(name: &'static str) -> Option<Server> {
    let var = |k: &str| std::env::var(format!("MOVER_TEST_{name}_{k}")).ok();
    let Some(endpoint) = var("ENDPOINT") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "MOVER_TEST_{name}_ENDPOINT is not set: the S3 test servers did not start"
        );
        eprintln!("SKIPPED: no {name} S3 server; run the tests through scripts/test.sh");
        return None;
    };
    Some(Server {
        name,
        endpoint,
        bucket: var("BUCKET").expect("bucket"),
        access: var("ACCESS_KEY").expect("access key"),
        secret: var("SECRET_KEY").expect("secret key"),
        region: var("REGION").unwrap_or_else(|| "us-east-1".into()),
    })
}

pub(crate) fn servers() -> Vec<Server> {
    ["GARAGE", "S3S"].into_iter().filter_map(server).collect()
}

/// A repository under a fresh prefix of the server's bucket.
struct S3Env {
    server: Server,
    url: String,
    endpoint: String,
    dir: TempDir,
}

impl S3Env {
    fn new(server: &Server) -> S3Env {
        let env = S3Env::empty(server);
        env.cmd("init", &[] as &[&str]).run().ok();
        env
    }

    /// A fresh prefix with no repository yet.
    fn empty(server: &Server) -> S3Env {
        S3Env {
            url: format!("s3://{}/{}", server.bucket, unique_name("e2e")),
            endpoint: server.endpoint.clone(),
            server: server.clone(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// `mover SUB -r URL --s3-… ARGS`, credentials in the standard variables.
    fn cmd<S: AsRef<std::ffi::OsStr>>(&self, sub: &str, args: &[S]) -> Mover {
        self.cmd_via(&self.endpoint, sub, args)
    }

    fn cmd_via<S: AsRef<std::ffi::OsStr>>(&self, endpoint: &str, sub: &str, args: &[S]) -> Mover {
        mover([
            sub,
            "-r",
            &self.url,
            "--s3-endpoint",
            endpoint,
            "--s3-region",
        ])
        .arg(&self.server.region)
        .arg("--s3-allow-http")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", &self.server.access)
        .env("AWS_SECRET_ACCESS_KEY", &self.server.secret)
        .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
        .timeout(Duration::from_secs(120))
    }

    fn backup(&self, src: &std::path::Path) -> Value {
        let out = self
            .cmd("backup", &["--json", "--chunk-size", CHUNK_ARG, "--source"])
            .arg(src)
            .run()
            .ok();
        check_backup_summary(&out.json(), &out)
    }

    fn snapshots(&self) -> Vec<Value> {
        let out = self.cmd("snapshots", &["--json"]).run().ok();
        out.json().as_array().cloned().unwrap_or_default()
    }
}

/// A fault-injecting proxy in front of `server`, failing `per_mille` of its connections.
fn proxy_for(server: &Server, per_mille: usize) -> FaultProxy {
    FaultProxy::start(server.endpoint.trim_start_matches("http://"), per_mille)
}

fn image(path: &std::path::Path, seed: u64) -> Vec<u8> {
    // Data, a hole, data: a few MiB with zero chunks in the middle.
    let mut data = random_bytes(2 * MIB, seed);
    data.extend(std::iter::repeat_n(0u8, MIB));
    data.extend(random_bytes(MIB + 12_345, seed + 1));
    write_file(path, &data);
    data
}

#[test]
fn s3_backup_restore_verify_round_trip() {
    for server in servers() {
        let env = S3Env::new(&server);
        let src = env.path("a.img");
        let data = image(&src, 11);
        let first = env.backup(&src);
        assert!(num(&first, "bytes_new") > 0, "{}", server.name);
        let again = env.backup(&src);
        assert_eq!(
            num(&again, "bytes_new"),
            0,
            "{}: second backup stores nothing",
            server.name
        );
        let snaps = env.snapshots();
        assert_eq!(snaps.len(), 2, "{}", server.name);

        let dest = env.path("restored.img");
        env.cmd("restore", &["latest", "--to"])
            .arg(&dest)
            .run()
            .ok();
        assert_same(
            &read(&dest),
            &data,
            &format!("{}: restore to a file", server.name),
        );
        let id = text(&first, "snapshot_id");
        let out = env.cmd("restore", &[&id[..10], "--to", "-"]).run().ok();
        assert_same(
            &out.stdout,
            &data,
            &format!("{}: restore to stdout", server.name),
        );

        let out = env
            .cmd("backup", &["--json", "--source", "-", "--name", "piped"])
            .stdin(&data)
            .run()
            .ok();
        let piped = check_backup_summary(&out.json(), &out);
        let out = env
            .cmd("restore", &[text(&piped, "snapshot_id"), "--to", "-"])
            .run()
            .ok();
        assert_same(
            &out.stdout,
            &data,
            &format!("{}: stdin snapshot", server.name),
        );

        let out = env.cmd("verify", &["--json"]).run();
        assert_eq!(out.exit(), 0, "{}: verify:\n{out}", server.name);
        assert_eq!(out.json()["data"]["snapshots"].as_array().unwrap().len(), 3);
    }
}

#[test]
fn two_movers_back_up_into_one_bucket_at_once() {
    for server in servers() {
        let env = S3Env::new(&server);
        let (a, b) = (env.path("a.img"), env.path("b.img"));
        let (da, db) = (image(&a, 21), image(&b, 31));
        let start = |src: &std::path::Path, name: &str| {
            env.cmd(
                "backup",
                &["--chunk-size", CHUNK_ARG, "--name", name, "--source"],
            )
            .arg(src)
            .spawn()
        };
        let (mut pa, la) = start(&a, "a");
        let (mut pb, lb) = start(&b, "b");
        for (p, l) in [(&mut pa, la), (&mut pb, lb)] {
            let (status, timed_out) = wait_timeout(p, Duration::from_secs(120));
            assert!(
                !timed_out && status.success(),
                "{}: {l}: {status}",
                server.name
            );
        }
        for (name, data) in [("a", &da), ("b", &db)] {
            let out = env
                .cmd("restore", &["latest", "--name", name, "--to", "-"])
                .run()
                .ok();
            assert_same(
                &out.stdout,
                data,
                &format!("{}: concurrent backup {name}", server.name),
            );
        }
        assert_eq!(env.cmd("verify", &[] as &[&str]).run().exit(), 0);
    }
}

#[test]
fn s3_errors_are_one_clear_line() {
    for server in servers() {
        let env = S3Env::new(&server);
        let src = env.path("a.img");
        image(&src, 41);
        // Wrong secret.
        let mut bad = S3Env {
            server: server.clone(),
            url: env.url.clone(),
            endpoint: env.endpoint.clone(),
            dir: tempfile::tempdir().unwrap(),
        };
        bad.server.secret = "0".repeat(64);
        let out = bad.cmd("backup", &["--source"]).arg(&src).run();
        out.assert_error(1, &["access denied"]);
        // A bucket that does not exist.
        let out = mover([
            "snapshots",
            "-r",
            "s3://no-such-bucket-mover/x",
            "--s3-endpoint",
            &server.endpoint,
            "--s3-allow-http",
            "--s3-region",
            &server.region,
        ])
        .env("AWS_ACCESS_KEY_ID", &server.access)
        .env("AWS_SECRET_ACCESS_KEY", &server.secret)
        .run();
        assert_eq!(out.exit(), 1, "{}: missing bucket:\n{out}", server.name);
        out.assert_error(1, &["bucket"]);
        // Nothing listens on port 1 (a free port picked by binding and closing could be taken
        // by a server another test starts meanwhile).
        assert!(
            std::net::TcpStream::connect("127.0.0.1:1").is_err(),
            "something listens on 127.0.0.1:1"
        );
        let t = Instant::now();
        let out = env
            .cmd_via(
                "http://127.0.0.1:1",
                "snapshots",
                &["--s3-retry-timeout", "2"],
            )
            .run();
        out.assert_error(1, &["cannot reach"]);
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "gave up in {:?}",
            t.elapsed()
        );
        // Not an S3 URL.
        let out = mover(["snapshots", "-r", "s3://"]).run();
        out.assert_error(1, &["s3://BUCKET"]);
        assert!(
            env.snapshots().is_empty(),
            "{}: no failed run committed",
            server.name
        );
    }
}

/// The server stores the snapshot, and the answer to that create-only PUT is lost: the
/// connection is closed in order (the client sends the request again and the server refuses
/// it, the object being there) or reset (the client gives up and mover asks again). Either
/// way the backup finds its own snapshot there and succeeds: never "nothing was committed"
/// with a snapshot in the bucket. The same for `init`, whose config is its first create.
#[test]
fn a_lost_answer_to_a_create_is_asked_again() {
    for server in servers() {
        for reset in [false, true] {
            let what = format!(
                "{}, lost to a {}",
                server.name,
                ["close", "reset"][reset as usize]
            );
            let env = S3Env::new(&server);
            let src = env.path("a.img");
            let data = image(&src, 61);
            let proxy = proxy_for(&server, 0);
            proxy.lose_create_answers(1, reset);
            let out = env
                .cmd_via(
                    &proxy.endpoint(),
                    "backup",
                    &["--chunk-size", CHUNK_ARG, "--source"],
                )
                .arg(&src)
                .run();
            assert_eq!(out.exit(), 0, "{what}: commit:\n{out}");
            assert_eq!(proxy.answers_left_to_lose(), 0, "{what}: no answer lost");
            assert_eq!(env.snapshots().len(), 1, "{what}");
            let restored = env.cmd("restore", &["latest", "--to", "-"]).run().ok();
            assert_same(&restored.stdout, &data, &format!("{what}: restore"));

            let fresh = S3Env::empty(&server);
            proxy.lose_create_answers(1, reset);
            let out = fresh
                .cmd_via(&proxy.endpoint(), "init", &[] as &[&str])
                .run();
            assert_eq!(out.exit(), 0, "{what}: init:\n{out}");
            assert_eq!(proxy.answers_left_to_lose(), 0, "{what}: no answer lost");
            fresh.backup(&src);
        }
    }
}

#[test]
fn backups_through_faults_complete_or_commit_nothing() {
    for server in servers() {
        let env = S3Env::new(&server);
        let proxy = proxy_for(&server, 250);
        let src = env.path("a.img");
        let data = image(&src, 51);
        // A quarter of the connections fail: retries carry the backup through.
        let out = env
            .cmd_via(
                &proxy.endpoint(),
                "backup",
                &["--json", "--chunk-size", CHUNK_ARG, "--source"],
            )
            .arg(&src)
            .run();
        assert_eq!(
            out.exit(),
            0,
            "{}: backup through 25% faults:\n{out}",
            server.name
        );
        assert!(
            proxy.faults.load(std::sync::atomic::Ordering::SeqCst) > 0,
            "faults were injected"
        );
        let out = env
            .cmd_via(&proxy.endpoint(), "restore", &["latest", "--to", "-"])
            .run();
        assert_eq!(
            out.exit(),
            0,
            "{}: restore through faults:\n{out}",
            server.name
        );
        assert_same(
            &out.stdout,
            &data,
            &format!("{}: restore through faults", server.name),
        );

        // Every connection fails: past the retry budget the backup fails and commits nothing.
        proxy.fail_everything();
        let src2 = env.path("b.img");
        image(&src2, 61);
        let out = env
            .cmd_via(
                &proxy.endpoint(),
                "backup",
                &[
                    "--s3-retry-timeout",
                    "3",
                    "--chunk-size",
                    CHUNK_ARG,
                    "--source",
                ],
            )
            .arg(&src2)
            .run();
        assert_eq!(
            out.exit(),
            1,
            "{}: backup through 100% faults:\n{out}",
            server.name
        );
        assert_eq!(out.stderr.lines().count(), 1, "{out}");
        assert_eq!(
            env.snapshots().len(),
            1,
            "{}: the failed backup committed nothing",
            server.name
        );
    }
}

#[test]
fn server_gone_mid_backup_fails_and_the_next_backup_succeeds() {
    for server in servers() {
        let env = S3Env::new(&server);
        let proxy = proxy_for(&server, 0);
        let src = env.path("big.img");
        let data = random_bytes(24 * MIB, 71);
        write_file(&src, &data);
        let (mut child, line) = env
            .cmd_via(
                &proxy.endpoint(),
                "backup",
                &[
                    "--s3-retry-timeout",
                    "3",
                    "--chunk-size",
                    CHUNK_ARG,
                    "--source",
                ],
            )
            .arg(&src)
            .spawn();
        std::thread::sleep(Duration::from_millis(300));
        proxy.kill();
        let (status, timed_out) = wait_timeout(&mut child, Duration::from_secs(90));
        assert!(!timed_out, "{line} hung after the server went away");
        let err = stderr_of(&mut child);
        let snaps = env.snapshots();
        match status.code() {
            // Cut during the commit itself, with no way left to ask whether it landed: said
            // so, and a snapshot that did land is whole.
            Some(1) if err.contains("could not be checked") => {
                assert!(snaps.len() <= 1, "{}: {err}", server.name);
                if !snaps.is_empty() {
                    let out = env.cmd("restore", &["latest", "--to", "-"]).run().ok();
                    assert_same(&out.stdout, &data, "the snapshot whose commit was cut");
                }
            }
            Some(1) => assert!(
                snaps.is_empty(),
                "{}: nothing committed:\n{err}",
                server.name
            ),
            Some(0) => assert_eq!(snaps.len(), 1, "{}: finished before the cut", server.name),
            other => panic!("{}: {line}: exit {other:?}\n{err}", server.name),
        }
        // The server is back (direct endpoint): the next backup succeeds and restores.
        let d = env.backup(&src);
        let out = env
            .cmd("restore", &[text(&d, "snapshot_id"), "--to", "-"])
            .run()
            .ok();
        assert_same(
            &out.stdout,
            &data,
            &format!("{}: backup after the outage", server.name),
        );
    }
}

/// `init` on S3 says whether the server honours conditional writes: Garage ignores
/// `If-None-Match`, s3s-fs enforces it.
#[test]
fn init_reports_conditional_write_support() {
    for server in servers() {
        let env = S3Env::new(&server);
        let fresh = S3Env {
            url: format!("{}-init", env.url),
            ..env
        };
        let out = fresh.cmd("init", &[] as &[&str]).run().ok();
        let expected = if server.name == "GARAGE" {
            "ignores conditional writes"
        } else {
            "honours conditional writes"
        };
        out.assert_stderr_has(&["created repository", expected]);
        assert!(out.stdout.is_empty(), "{out}");
    }
}

#[test]
fn s3_forget_gc_check_and_repair() {
    for server in servers() {
        let env = S3Env::new(&server);
        let (a, b) = (env.path("a.img"), env.path("b.img"));
        image(&a, 31);
        let want_b = image(&b, 41);
        let ia = text(&env.backup(&a), "snapshot_id").to_string();
        let ib = text(&env.backup(&b), "snapshot_id").to_string();
        env.cmd("forget", &[ia.as_str()]).run().ok();
        assert_eq!(env.snapshots().len(), 1, "{}", server.name);
        let gc = |what: &str| {
            let out = env.cmd("gc", &["--grace", "0s", "--json"]).run().ok();
            let d = out.json()["data"].clone();
            eprintln!("{} gc {what}: {d}", server.name);
            d
        };
        let d = gc("mark");
        assert_eq!(num(&d, "condemned_packs"), 1, "{}: {d}", server.name);
        let d = gc("sweep");
        assert_eq!(num(&d, "swept_packs"), 1, "{}: {d}", server.name);
        assert!(
            num(&d, "reclaimed_bytes") > 3 * MIB as u64,
            "{}: {d}",
            server.name
        );
        let out = env.cmd("check", &["--json"]).run();
        assert_eq!(out.exit(), 0, "{}: {out}", server.name);
        let out = env.cmd("restore", &[ib.as_str(), "--to", "-"]).run().ok();
        assert_same(&out.stdout, &want_b, "b restores after gc");

        // repair index on S3: the same index again, then the same bytes restored.
        let out = mover([
            "repair",
            "index",
            "-r",
            &env.url,
            "--s3-endpoint",
            &env.endpoint,
        ])
        .args(&[
            "--s3-region",
            &env.server.region,
            "--s3-allow-http",
            "--json",
        ])
        .env("AWS_ACCESS_KEY_ID", &env.server.access)
        .env("AWS_SECRET_ACCESS_KEY", &env.server.secret)
        .env("XDG_CACHE_HOME", env.dir.path().join("cache"))
        .run()
        .ok();
        assert!(
            num(&out.json()["data"], "chunks") > 0,
            "{}: {out}",
            server.name
        );
        let out = env.cmd("verify", &["--subset", "1/2", "--json"]).run().ok();
        assert!(num(&out.json()["data"], "chunks_checked") > 0, "{out}");
        let out = env.cmd("restore", &[ib.as_str(), "--to", "-"]).run().ok();
        assert_same(&out.stdout, &want_b, "b restores after repair index");
    }
}

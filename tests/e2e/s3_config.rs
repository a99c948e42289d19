//! S3 settings that cannot work, end to end: plain HTTP not allowed, an endpoint that is not a
//! URL, no region for AWS, no credentials or half a key pair. Each fails before anything is
//! sent, with exit 2 (a usage error: bad flag or value) and one line on stderr that names the
//! cause and the fix; `mover doctor` reports the same. `AWS_ALLOW_HTTP` stands for
//! `--s3-allow-http`.
//!
//! No S3 server is needed. The endpoint, and the HTTP proxy every run is given (so that a
//! request meant for AWS stays on this machine too), is a loopback socket that counts the
//! connections it gets and closes them: a refused setting must leave that count at zero.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::util::*;

const PROXIES: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// A loopback port that takes connections, counts them and closes them.
struct Tripwire {
    url: String,
    hits: Arc<AtomicUsize>,
}

impl Tripwire {
    fn new() -> Tripwire {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = hits.clone();
        // Held open (and the thread blocked in accept) until the test binary exits.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                seen.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        Tripwire { url, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A place to run in: `home` is HOME and the XDG directories, and must stay empty.
struct Place {
    dir: TempDir,
    wire: Tripwire,
}

impl Place {
    fn new() -> Place {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Place {
            dir,
            wire: Tripwire::new(),
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// `mover ARGS` with exactly the `AWS_*` variables in `env`: every other one of the test
    /// process is removed, and the proxies point at the tripwire.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut m = mover(args).timeout(Duration::from_secs(60));
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("AWS_")
                || k.starts_with("MOVER_")
                || k.eq_ignore_ascii_case("no_proxy")
            {
                m = m.env_remove(&k);
            }
        }
        for p in PROXIES {
            m = m.env(p, &self.wire.url);
        }
        let home = self.home();
        m = m
            .env("HOME", &home)
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("XDG_CONFIG_HOME", home.join("config"));
        for (k, v) in env {
            m = m.env(k, v);
        }
        m.run()
    }

    /// `mover SUB -r s3://mover-test/repo` against the tripwire, with a region and a key
    /// pair: settings that are complete but for `args` and `env`.
    fn s3(&self, sub: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut all = vec![sub, "-r", "s3://mover-test/repo", "--s3-region", "garage"];
        all.extend_from_slice(args);
        let mut vars = vec![
            ("AWS_ACCESS_KEY_ID", "GK1"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
        ];
        vars.extend_from_slice(env);
        self.run(&all, &vars)
    }

    /// `--s3-endpoint` at the tripwire.
    fn endpoint(&self) -> [&str; 2] {
        ["--s3-endpoint", self.wire.url.as_str()]
    }

    /// Exit 2, one line naming each of `needles`, nothing on stdout, nothing sent, nothing
    /// created.
    fn assert_refused(&self, out: &Output, needles: &[&str]) {
        out.assert_error(2, needles);
        assert!(out.stdout.is_empty(), "nothing on stdout:\n{out}");
        assert_eq!(self.wire.hits(), 0, "nothing may be sent:\n{out}");
        let made: Vec<_> = std::fs::read_dir(self.home()).unwrap().flatten().collect();
        assert!(made.is_empty(), "nothing is created: {made:?}\n{out}");
    }

    /// The settings were taken: the request went out (to the tripwire, which is no S3
    /// server, so the run fails with exit 1 and no word about settings).
    fn assert_sent(&self, out: &Output, hits_before: usize) {
        assert_eq!(out.exit(), 1, "{out}");
        assert!(self.wire.hits() > hits_before, "a request went out:\n{out}");
        for word in ["plain HTTP", "not a URL", "no S3 region", "credentials"] {
            assert!(
                !out.stderr.contains(word),
                "{word:?} is not the problem:\n{out}"
            );
        }
    }
}

#[test]
fn s3_config_plain_http_is_refused_with_the_fix() {
    let p = Place::new();
    let needles = [
        "mover: s3://mover-test/repo",
        &p.wire.url,
        "plain HTTP",
        "--s3-allow-http",
        "AWS_ALLOW_HTTP=true",
    ];
    let out = p.s3("init", &p.endpoint(), &[]);
    p.assert_refused(&out, &needles);
    for off in ["false", "0", "no"] {
        let out = p.s3("init", &p.endpoint(), &[("AWS_ALLOW_HTTP", off)]);
        p.assert_refused(&out, &needles);
    }
    // The endpoint from the environment, and a command that would commit a snapshot.
    let src = p.dir.path().join("disk.img");
    write_file(&src, &random_bytes(1 << 16, 7));
    let out = p.s3(
        "backup",
        &["--source", src.to_str().unwrap()],
        &[("AWS_ENDPOINT_URL", &p.wire.url)],
    );
    p.assert_refused(&out, &needles);
    let out = p.s3("snapshots", &p.endpoint(), &[]);
    p.assert_refused(&out, &needles);
}

#[test]
fn s3_config_aws_allow_http_stands_for_the_flag() {
    let p = Place::new();
    let retry = ["--s3-retry-timeout", "1"];
    let args = [&p.endpoint()[..], &retry].concat();
    // (--s3-allow-http given, AWS_ALLOW_HTTP); the flag wins over the variable.
    for (flag, var) in [
        (true, None),
        (false, Some("true")),
        (false, Some("1")),
        (false, Some("TRUE")),
        (true, Some("false")),
    ] {
        let mut args = args.clone();
        if flag {
            args.push("--s3-allow-http");
        }
        let env: Vec<_> = var.map(|v| ("AWS_ALLOW_HTTP", v)).into_iter().collect();
        let before = p.wire.hits();
        let out = p.s3("init", &args, &env);
        p.assert_sent(&out, before);
    }
    // A value that is neither true nor false (empty included) is a usage error.
    for bad in ["maybe", ""] {
        let wire = Place::new();
        let out = wire.s3("init", &wire.endpoint(), &[("AWS_ALLOW_HTTP", bad)]);
        wire.assert_refused(&out, &[&format!("'{bad}'"), "--s3-allow-http"]);
    }
    // --help names the variable.
    for sub in ["init", "backup", "doctor"] {
        let out = p.run(&[sub, "--help"], &[]).ok();
        let help = out.stdout_str();
        let line = help.lines().find(|l| l.contains("--s3-allow-http"));
        assert!(
            line.is_some_and(|l| l.contains("[env: AWS_ALLOW_HTTP")),
            "`{sub} --help` shows AWS_ALLOW_HTTP on the flag's line:\n{help}"
        );
    }
}

#[test]
fn s3_config_endpoint_that_is_not_a_url() {
    for bad in [
        "not-a-url",
        "127.0.0.1:9000",
        "s3.example.net",
        "https://exa mple.net",
    ] {
        let p = Place::new();
        let out = p.s3("init", &["--s3-allow-http", "--s3-endpoint", bad], &[]);
        p.assert_refused(
            &out,
            &[bad, "is not a URL", "https://HOST", "--s3-endpoint"],
        );
        let p = Place::new();
        let out = p.s3("init", &[], &[("AWS_ENDPOINT_URL", bad)]);
        p.assert_refused(&out, &[bad, "is not a URL", "AWS_ENDPOINT_URL"]);
    }
}

#[test]
fn s3_config_aws_needs_a_region() {
    // No endpoint: AWS itself, which needs the bucket's region.
    let p = Place::new();
    let keys = [
        ("AWS_ACCESS_KEY_ID", "AKIA1"),
        ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
    ];
    let out = p.run(&["init", "-r", "s3://mover-test/repo"], &keys);
    p.assert_refused(
        &out,
        &["no S3 region", "--s3-region", "AWS_REGION", "--s3-endpoint"],
    );
    let out = p.run(
        &[
            "init",
            "-r",
            "s3://mover-test/repo",
            "--s3-endpoint",
            "https://s3.amazonaws.com",
        ],
        &keys,
    );
    p.assert_refused(&out, &["no S3 region", "--s3-region"]);
    // Given, from the flag or either variable, it is taken (the request goes to the proxy).
    let retry = [
        "init",
        "-r",
        "s3://mover-test/repo",
        "--s3-retry-timeout",
        "1",
    ];
    for (flag, var) in [
        (Some("eu-west-1"), None),
        (None, Some(("AWS_REGION", "eu-west-1"))),
        (None, Some(("AWS_DEFAULT_REGION", "eu-west-1"))),
    ] {
        let mut args = retry.to_vec();
        if let Some(r) = flag {
            args.extend(["--s3-region", r]);
        }
        let env: Vec<_> = keys.iter().copied().chain(var).collect();
        let before = p.wire.hits();
        let out = p.run(&args, &env);
        p.assert_sent(&out, before);
    }
}

#[test]
fn s3_config_credentials_missing_or_half() {
    let p = Place::new();
    let allow = [("AWS_ALLOW_HTTP", "true")];
    let run = |env: &[(&str, &str)]| {
        let args = [
            "init",
            "-r",
            "s3://mover-test/repo",
            "--s3-region",
            "garage",
            "--s3-endpoint",
            &p.wire.url,
        ];
        p.run(&args, &[&allow[..], env].concat())
    };
    let none = [
        "no S3 credentials",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ];
    p.assert_refused(&run(&[]), &none);
    // Empty values count as unset.
    let empty = [("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")];
    p.assert_refused(&run(&empty), &none);
    p.assert_refused(
        &run(&[("AWS_ACCESS_KEY_ID", "GK1")]),
        &[
            "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
            "set AWS_SECRET_ACCESS_KEY",
        ],
    );
    p.assert_refused(
        &run(&[("AWS_SECRET_ACCESS_KEY", "s3cr3t")]),
        &[
            "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not",
            "set AWS_ACCESS_KEY_ID",
        ],
    );
}

/// The check `mover doctor -r … --json` reports for the repository's settings.
fn doctor_check(out: &Output) -> Value {
    let checks = out.json()["data"]["checks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(checks.len(), 1, "one check of the repository:\n{out}");
    checks[0].clone()
}

#[test]
fn s3_config_doctor_reports_the_same() {
    let p = Place::new();
    let doctor = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec![
            "doctor",
            "-r",
            "s3://mover-test/repo",
            "--s3-region",
            "garage",
        ];
        all.extend_from_slice(&p.endpoint());
        all.extend_from_slice(args);
        p.run(&all, env)
    };
    let keys = [
        ("AWS_ACCESS_KEY_ID", "GK1"),
        ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
    ];
    // Plain HTTP: doctor's exit 1 (a check failed), the cause and the fix as for any command.
    let out = doctor(&[], &keys);
    assert_eq!(out.exit(), 1, "{out}");
    let text = out.stdout_str();
    assert!(
        text.contains("FAIL configuration")
            && text.contains("plain HTTP")
            && text.contains("fix: use https://, or allow plain HTTP with --s3-allow-http or AWS_ALLOW_HTTP=true"),
        "{out}"
    );
    let out = doctor(&["--json"], &keys);
    assert_eq!(out.exit(), 1, "{out}");
    let check = doctor_check(&out);
    assert_eq!(check["check"], "configuration", "{out}");
    assert_eq!(check["ok"], false, "{out}");
    assert!(
        check["detail"].as_str().unwrap().contains("plain HTTP"),
        "{out}"
    );
    assert!(
        check["fix"]
            .as_str()
            .unwrap()
            .contains("AWS_ALLOW_HTTP=true"),
        "{out}"
    );
    // With AWS_ALLOW_HTTP=true doctor looks further, and finds no credentials.
    let out = doctor(&["--json"], &[("AWS_ALLOW_HTTP", "true")]);
    let check = doctor_check(&out);
    assert_eq!(check["check"], "configuration", "{out}");
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains("no S3 credentials"),
        "{out}"
    );
    assert!(
        check["fix"]
            .as_str()
            .unwrap()
            .contains("AWS_SECRET_ACCESS_KEY"),
        "{out}"
    );
    assert_eq!(p.wire.hits(), 0, "doctor sent nothing:\n{out}");
    assert!(files_under(&p.home()).is_empty(), "{out}");
}

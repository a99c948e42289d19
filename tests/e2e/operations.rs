//! Operations through the binary: configuration profiles, doctor, support bundles, log files,
//! the benchmark, completions and the man page.

use std::process::Command;

use crate::util::*;

fn write_config(env: &Env, body: &str) -> std::path::PathBuf {
    let path = env.path("config.toml");
    write_file(&path, body.as_bytes());
    path
}

#[test]
fn a_profile_runs_a_configured_job_and_flags_win() {
    let env = Env::new();
    let src = env.path("vm1.img");
    let data = random_bytes(300_000, 21);
    write_file(&src, &data);
    let log = env.path("hooks.log");
    let config = write_config(
        &env,
        &format!(
            r#"
[repositories.local]
location = "{repo}"

[hooks.h]
post_backup = "echo $MOVER_STATUS >> '{log}'"

[profiles.vm1]
repository = "local"
hooks = "h"
sources = ["{src}"]
name = "vm1"
chunk_size = "64KiB"
compression = 5
"#,
            repo = env.repo.display(),
            log = log.display(),
            src = src.display()
        ),
    );
    let out = mover(["backup", "--json", "--profile", "vm1", "--config"])
        .arg(&config)
        .run()
        .ok();
    let d = out.json()["data"].clone();
    assert_eq!(d["name"], "vm1", "{out}");
    assert_eq!(d["chunk_size"], 64 * 1024, "{out}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "success\n");
    // A flag beats the profile.
    let out = mover([
        "backup",
        "--json",
        "--profile",
        "vm1",
        "--name",
        "other",
        "--config",
    ])
    .arg(&config)
    .run()
    .ok();
    assert_eq!(out.json()["data"]["name"], "other", "{out}");
    let restored = env.path("restored.img");
    env.restore_to(
        out.json()["data"]["snapshot_id"].as_str().unwrap(),
        &restored,
    );
    assert_same(&read(&restored), &data, "restored");
    // An unknown profile is a usage error.
    mover(["backup", "--profile", "nope", "--config"])
        .arg(&config)
        .run()
        .assert_error(2, &["nope"]);
}

#[test]
fn secrets_and_typos_in_the_configuration_are_refused() {
    let env = Env::new();
    let config = write_config(
        &env,
        "[repositories.s3]\nlocation = \"s3://b/p\"\naws_secret_access_key = \"hunter2\"\n\n[profiles.p]\nrepository = \"s3\"\nsources = [\"x\"]\n",
    );
    let out = mover(["backup", "--profile", "p", "--config"])
        .arg(&config)
        .run();
    out.assert_error(2, &["secret", "environment"]);
    assert!(!out.stderr.contains("hunter2"), "{out}");
    let config = write_config(&env, "[profiles.p]\nsources = [\"x\"]\ncompresion = 3\n");
    mover(["backup", "--profile", "p", "--config"])
        .arg(&config)
        .run()
        .assert_error(2, &["compresion"]);
}

#[test]
fn doctor_reports_problems_with_fixes_and_exit_codes() {
    let env = Env::new();
    let src = env.path("disk.img");
    write_sparse(
        &src,
        4 * MIB as u64,
        &[(MIB as u64, &random_bytes(100_000, 3))],
    );
    let out = mover(["doctor", "--json", "--read-seconds", "0.1", "--source"])
        .arg(&src)
        .arg("-r")
        .arg(&env.repo)
        .run()
        .ok();
    let d = out.json()["data"].clone();
    assert_eq!(d["ok"], true, "{out}");
    let checks: Vec<&str> = d["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    for want in [
        "visible",
        "size",
        "readable",
        "allocation",
        "throughput",
        "reachable",
        "writable",
    ] {
        assert!(checks.contains(&want), "{want} missing: {out}");
    }
    let out = mover(["doctor", "--source"])
        .arg(env.path("missing.img"))
        .arg("-r")
        .arg(env.path("not-a-repo"))
        .run();
    assert_eq!(out.exit(), 1, "{out}");
    let text = out.stdout_str();
    assert!(text.contains("FAIL") && text.contains("fix:"), "{out}");
    assert!(text.contains("mover init"), "{out}");
    mover(["doctor"]).run().assert_error(2, &["--source"]);
}

#[test]
fn support_bundle_holds_the_facts_and_no_secret() {
    let env = Env::new();
    let src = env.path("disk.img");
    write_file(&src, &random_bytes(100_000, 4));
    let log = env.path("mover.log");
    mover(["backup", "-q", "--log-file"])
        .arg(&log)
        .arg("-r")
        .arg(&env.repo)
        .arg("--source")
        .arg(&src)
        .run()
        .ok();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("INFO") && log_text.contains("exit code 0"),
        "{log_text}"
    );
    let bundle = env.path("bundle.tar.zst");
    mover(["support-bundle", "--read-seconds", "0.1", "--out"])
        .arg(&bundle)
        .arg("-r")
        .arg(&env.repo)
        .arg("--source")
        .arg(&src)
        .arg("--include-log")
        .arg(&log)
        .env("AWS_SECRET_ACCESS_KEY", "hunter2-secret")
        .env("AWS_REGION", "garage")
        .run()
        .ok();
    let tar = Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -dc '{}' | tar xOf - ", bundle.display()))
        .output()
        .expect("zstd and tar");
    assert!(tar.status.success(), "the bundle is a valid tar.zst");
    let all = String::from_utf8_lossy(&tar.stdout);
    assert!(!all.contains("hunter2-secret"), "a secret leaked:\n{all}");
    assert!(all.contains("AWS_SECRET_ACCESS_KEY=<redacted>"), "{all}");
    assert!(all.contains("AWS_REGION=garage"), "{all}");
    assert!(all.contains("1 snapshots"), "repository summary:\n{all}");
    assert!(all.contains("exit code 0"), "log tail:\n{all}");
    let names = Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -dc '{}' | tar tf -", bundle.display()))
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&names.stdout);
    for want in [
        "versions.txt",
        "environment.txt",
        "config.toml",
        "doctor.txt",
        "repository.txt",
    ] {
        assert!(names.contains(want), "{want} missing:\n{names}");
    }
}

#[test]
fn benchmark_completions_and_man_page() {
    let out = mover(["benchmark", "--json", "--seconds", "0.02"])
        .run()
        .ok();
    let d = out.json()["data"].clone();
    assert_eq!(d["command"], "benchmark", "{out}");
    assert!(d.to_string().contains("hash"), "{out}");
    // Every stage, encryption included, on one core and on all.
    let stages: Vec<&str> = d["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["bytes"].as_u64().unwrap_or(0) > 0)
        .map(|r| r["stage"].as_str().unwrap())
        .collect();
    for want in ["hash", "compress", "decode", "seal", "open"] {
        assert!(stages.contains(&want), "{want} missing: {out}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = mover(["completions", shell]).run().ok();
        let text = out.stdout_str();
        assert!(
            text.contains("backup") && text.contains("to-archive"),
            "{shell}:\n{out}"
        );
    }
    let man = mover(["man"]).run().ok().stdout_str();
    assert!(man.contains(".TH") && man.contains("support"), "{man}");
    mover(["completions", "tcsh"])
        .run()
        .assert_error(2, &["tcsh"]);
}

//! The repository commands: init, key, snapshots, forget, gc, check, repair, verify, and
//! benchmark.

use std::io::Write as _;
use std::sync::Arc;

use anyhow::Context;
use chunker::crypto::Aead;
use mover::Progress;
use targets::lock::{LockMode, LockPolicy};
use targets::{Backend, Repository};

use crate::args::{self, KeyCommand, RepairCommand, RepoArg, SnapshotsArgs, VerifyArgs};
use crate::repo::{backend, fetch_threads, is_s3, new_secret, open_repo, s3_backend, Secrets};
use crate::{output, show_progress, usage, Exit};

/// The lock policy `--lock-days` and `--lock-mode` ask for.
pub fn lock_policy(a: &args::InitArgs) -> Option<LockPolicy> {
    let mode = a.lock_mode.as_deref().and_then(LockMode::parse);
    a.lock_days.map(|days| LockPolicy {
        days,
        mode: mode.unwrap_or(LockMode::Governance),
    })
}

/// `mover init`.
pub fn init(
    repo: &RepoArg,
    encrypt: Option<Aead>,
    lock: Option<LockPolicy>,
    secrets: &Secrets,
    quiet: bool,
) -> anyhow::Result<Exit> {
    if lock.is_some() && !is_s3(repo) {
        return Err(usage(
            "--lock-days needs an S3 repository on a bucket with Object Lock",
        ));
    }
    let key = match encrypt {
        Some(aead) => Some((secrets.password_for_new("the new repository")?, aead)),
        None => None,
    };
    let create = |b: Arc<dyn Backend>| -> anyhow::Result<()> {
        match &key {
            Some((p, aead)) => {
                Repository::init_encrypted(b, p, chunker::crypto::KdfParams::default(), *aead)?
            }
            None => Repository::init(b)?,
        };
        Ok(())
    };
    let what = match encrypt {
        Some(aead) => format!("repository encrypted with {}", aead.name()),
        None => "repository".to_string(),
    };
    if !is_s3(repo) {
        create(backend(repo)?)?;
        if !quiet {
            note!("created {what} {}", repo.repo);
        }
        return Ok(Exit::Success);
    }
    let s3 = Arc::new(s3_backend(repo)?);
    if let Some(policy) = lock {
        // Refused before anything is written: a bucket without Object Lock, a short lock.
        s3.check_lock(policy, targets::gc::GcOptions::default().grace_ms)?;
    }
    create(s3.clone())?;
    if let Some(policy) = lock {
        s3.enable_lock(policy, targets::gc::GcOptions::default().grace_ms)?;
        if !quiet {
            note!(
                "every object is locked for {} days ({} mode)",
                policy.days,
                policy.mode.s3_name().to_ascii_lowercase()
            );
        }
    }
    if !quiet {
        note!("created {what} {}", repo.repo);
        // Worth knowing about a server, though mover never relies on it (docs/FORMAT.md).
        match s3.honours_conditional_put() {
            Ok(true) => note!("the server honours conditional writes (If-None-Match)"),
            Ok(false) => note!(
                "note: the server ignores conditional writes (If-None-Match); mover does not \
                 depend on them, snapshot names are content hashes"
            ),
            Err(e) => tracing::warn!("could not probe conditional writes: {e}"),
        }
    }
    Ok(Exit::Success)
}

/// `mover key …`.
pub fn key(cmd: &KeyCommand, secrets: &Secrets, quiet: bool) -> anyhow::Result<Exit> {
    let params = chunker::crypto::KdfParams::default();
    let new_password = |a: &args::KeyNewArgs| {
        new_secret(
            a.new_password_file.as_deref(),
            "MOVER_NEW_PASSWORD",
            "the new key",
        )
    };
    match cmd {
        KeyCommand::Add(a) => {
            let repo = open_repo(&a.repo, secrets)?;
            let new = new_password(a)?;
            let id = repo.add_key(&new, params)?;
            if !quiet {
                note!("added key {}", &id[..12]);
            }
            writeln!(std::io::stdout(), "{id}")?;
        }
        KeyCommand::Passwd(a) => {
            let repo = open_repo(&a.repo, secrets)?;
            let new = new_password(a)?;
            let id = repo.change_password(&new, params)?;
            if !quiet {
                note!(
                    "password changed: key {} replaces the one in use",
                    &id[..12]
                );
            }
            writeln!(std::io::stdout(), "{id}")?;
        }
        KeyCommand::Remove(a) => {
            let repo = open_repo(&a.repo, secrets)?;
            let id = repo.remove_key(&a.id)?;
            if !quiet {
                note!("removed key {}", &id[..12]);
            }
        }
        KeyCommand::List(a) => {
            let repo = open_repo(&a.repo, secrets)?;
            output::key_list(&repo.list_keys()?, a.json)?;
        }
    }
    Ok(Exit::Success)
}

/// `mover snapshots`.
pub fn snapshots(a: &SnapshotsArgs, secrets: &Secrets) -> anyhow::Result<Exit> {
    let repo = open_repo(&a.repo, secrets)?;
    let list: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, m)| a.name.as_ref().is_none_or(|n| &m.name == n))
        .collect();
    let damaged = targets::gc::damaged_marks(&**repo.backend())?;
    output::snapshot_list(&list, &damaged, a.json)?;
    Ok(Exit::Success)
}

/// `mover forget`.
pub fn forget(a: &args::ForgetArgs, secrets: &Secrets, quiet: bool) -> anyhow::Result<Exit> {
    let request = mover::forget::ForgetRequest {
        snapshots: a.snapshots.clone(),
        name: a.name.clone(),
        policy: mover::forget::Policy {
            last: a.keep_last,
            hourly: a.keep_hourly,
            daily: a.keep_daily,
            weekly: a.keep_weekly,
            monthly: a.keep_monthly,
            yearly: a.keep_yearly,
            within_ms: a.keep_within,
        },
        dry_run: a.dry_run,
    };
    // A request without ids or a policy is refused before the repository is opened.
    mover::forget::forget_check(&request)?;
    let repo = open_repo(&a.repo, secrets)?;
    let rows = mover::forget::forget(&repo, &request)?;
    output::forget_report(&rows, a.dry_run, a.json, quiet)?;
    Ok(Exit::Success)
}

/// `mover gc`.
pub fn gc(a: &args::GcArgs, secrets: &Secrets, quiet: bool) -> anyhow::Result<Exit> {
    let repo = open_repo(&a.repo, secrets)?;
    if let Some(policy) = repo.backend().lock_policy()? {
        policy.check_grace(repo.location(), a.grace)?;
    }
    let opts = targets::gc::GcOptions {
        grace_ms: a.grace,
        dry_run: a.dry_run,
        max_repack_bytes: a.max_repack.unwrap_or(u64::MAX),
        compact_segments: a.compact_segments,
        ..targets::gc::GcOptions::default()
    };
    let report = targets::gc::collect(&repo, &opts).context("garbage collection stopped")?;
    output::gc_report(&report, a.dry_run, a.json, quiet)?;
    Ok(if report.warnings.is_empty() {
        Exit::Success
    } else {
        Exit::Warnings
    })
}

/// `mover check`.
pub fn check(a: &args::CheckArgs, secrets: &Secrets, quiet: bool) -> anyhow::Result<Exit> {
    let repo = open_repo(&a.repo, secrets)?;
    let report = targets::gc::check(&repo).context("check could not finish")?;
    output::check_report(&report, repo.warnings(), a.json, quiet)?;
    let locks = targets::lock_coverage(&repo).context("check could not read the locks")?;
    if !quiet || locks.exposed > 0 {
        if let Some(line) = crate::human::lock_line(&locks) {
            note!("{line}");
        }
    }
    if report.errors.is_empty() && repo.warnings().is_empty() && locks.exposed == 0 {
        Ok(Exit::Success)
    } else {
        note!(
            "mover: the repository has {} problem(s); see above for what to do",
            report.errors.len() + repo.warnings().len()
        );
        Ok(Exit::Failure)
    }
}

/// `mover repair index|snapshots`.
pub fn repair(c: &RepairCommand, secrets: &Secrets, quiet: bool) -> anyhow::Result<Exit> {
    match c {
        RepairCommand::Index(a) => {
            let repo = open_repo(&a.repo, secrets)?;
            let r = targets::gc::repair_index(&repo, a.dry_run).context("repair index stopped")?;
            output::repair_index_report(&r, a.dry_run, a.json, quiet)?;
            Ok(if r.unreadable.is_empty() && r.recovered.is_empty() {
                Exit::Success
            } else {
                Exit::Warnings
            })
        }
        RepairCommand::Snapshots(a) => {
            let repo = open_repo(&a.repo, secrets)?;
            let r = targets::gc::repair_snapshots(&repo, a.dry_run)
                .context("repair snapshots stopped")?;
            output::repair_snapshots_report(&r, a.dry_run, a.json, quiet)?;
            Ok(if r.is_empty() {
                Exit::Success
            } else {
                Exit::Warnings
            })
        }
        RepairCommand::Config(a) => {
            let password = secrets.password()?;
            let r = targets::gc::repair_config(backend(&a.repo)?, password.as_ref(), a.dry_run)
                .context("repair config stopped")?;
            output::repair_config_report(&r, a.dry_run, a.json, quiet)?;
            Ok(Exit::Success)
        }
    }
}

/// `mover verify`.
pub fn verify(a: &VerifyArgs, secrets: &Secrets, quiet: bool) -> anyhow::Result<Exit> {
    let repo = open_repo(&a.repo, secrets)?;
    let request = mover::VerifyRequest {
        snapshot: a.snapshot.clone(),
        name: a.name.clone(),
        subset: a.subset,
        threads: fetch_threads(&a.perf, &a.repo),
    };
    let progress = Arc::new(Progress::default());
    let bar = output::ProgressBar::start(&progress, show_progress(quiet), "verify");
    let result = mover::verify_repository(&repo, &request, &progress);
    bar.finish();
    let report = result?;
    output::verify_report(&report, a.json, quiet)?;
    let damaged = report.snapshots.iter().filter(|s| !s.is_ok()).count();
    if damaged > 0 {
        note!(
            "mover: {damaged} of {} snapshots are damaged; they cannot be restored bit-exact",
            report.snapshots.len()
        );
        return Ok(Exit::Failure);
    }
    Ok(Exit::Success)
}

/// `mover benchmark`.
pub fn benchmark(a: &args::BenchmarkArgs) -> anyhow::Result<Exit> {
    use std::io::Write;
    if !(0.01..=60.0).contains(&a.seconds) {
        return Err(usage("--seconds takes 0.01 to 60 seconds"));
    }
    let mut opts = mover::benchmark::BenchOptions {
        seconds: a.seconds,
        level: a.compression,
        source: a.source.clone(),
        ..Default::default()
    };
    if let Some(n) = a.threads {
        opts.threads = usize::from(n);
    }
    let report = mover::benchmark::run(&opts)?;
    if a.json {
        output::benchmark_summary(&report);
    } else {
        std::io::stdout()
            .lock()
            .write_all(report.to_table().as_bytes())?;
    }
    Ok(Exit::Success)
}

//! `mover restore`: from a repository (whole, delta, or an attachment) or from archives.

use std::sync::Arc;

use anyhow::Context;
use mover::{Destination, Progress};

use crate::args::RestoreArgs;
use crate::repo::{is_s3, open_repo, restore_threads, Secrets};
use crate::{events, output, show_progress, usage, Exit};

/// `mover restore`.
pub fn restore(a: &RestoreArgs, secrets: &Secrets, quiet: bool) -> anyhow::Result<Exit> {
    if !a.from_archive.is_empty() {
        return restore_from_archive(a, secrets, quiet);
    }
    let repo = open_repo(&a.repo, secrets)?;
    let spec = a.snapshot.as_deref().unwrap_or("latest");
    if let Some(name) = &a.attachment {
        let (_, manifest) = repo.find_snapshot(spec, a.name.as_deref())?;
        let len = mover::save_attachment(&manifest, name, &a.to, a.force)?;
        if !quiet && a.to != "-" {
            note!("saved attachment {name} ({len} bytes) to {}", a.to);
        }
        return Ok(Exit::Success);
    }
    let options = mover::RestoreOptions {
        force: a.force,
        threads: restore_threads(&a.perf, &a.repo),
        memory: a.perf.memory,
        task_bytes: if is_s3(&a.repo) {
            mover::REMOTE_TASK_BYTES
        } else {
            mover::LOCAL_TASK_BYTES
        },
        sync: !a.no_sync,
    };
    let delta = match a.delta {
        true => Some(mover::DeltaRequest {
            changed_extents: match &a.changed_extents {
                Some(file) => Some((file.clone(), read_text(file, "changed-extent list")?)),
                None => None,
            },
            bitmap: a.bitmap.clone(),
        }),
        false => None,
    };
    let request = mover::RestoreRequest {
        snapshot: spec.to_string(),
        name: a.name.clone(),
        disk: a.disk.clone(),
        to: a.to.clone(),
        delta,
        options,
    };
    let progress = Arc::new(Progress::default());
    let bar = output::ProgressBar::start(&progress, show_progress(quiet), "restore");
    let result = mover::restore_snapshot(&repo, &request, &progress);
    bar.finish();
    let (id, report) = result?;
    output::restore_summary(&id, &report, a.json, quiet)?;
    Ok(Exit::Success)
}

/// The largest text file (a changed-extent list) read whole.
const MAX_TEXT: u64 = 256 << 20;

/// The contents of FILE, or of stdin for `-`, at most [`MAX_TEXT`] bytes.
pub fn read_text(file: &str, what: &str) -> anyhow::Result<String> {
    let from = match file {
        "-" => "stdin".to_string(),
        _ => file.to_string(),
    };
    let bytes = mover::sys::read_file_to_limit(file, MAX_TEXT)
        .with_context(|| format!("cannot read the {what} {from}"))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the {what} {from} is larger than {} MiB; give the file itself, not a device or a stream without end",
                MAX_TEXT >> 20
            )
        })?;
    String::from_utf8(bytes).with_context(|| format!("the {what} {from} is not UTF-8 text"))
}

fn restore_from_archive(a: &RestoreArgs, secrets: &Secrets, quiet: bool) -> anyhow::Result<Exit> {
    let inputs = a
        .from_archive
        .iter()
        .map(|p| mover::archive::open_input(p))
        .collect::<Result<Vec<_>, _>>()?;
    if a.from_archive.iter().filter(|p| *p == "-").count() > 1 {
        return Err(usage("only one --from-archive can be stdin (-)"));
    }
    let dest = if a.to == "-" {
        Destination::Stdout
    } else {
        Destination::Path(a.to.clone().into())
    };
    let opts = mover::archive::ArchiveRestoreOptions {
        password: secrets.password()?,
        disk: a.disk.clone(),
        strict: a.strict,
        force: a.force,
        sync: !a.no_sync,
    };
    let progress = Arc::new(Progress::default());
    let bar = output::ProgressBar::start(&progress, show_progress(quiet), "restore");
    let start = std::time::Instant::now();
    let result = mover::archive::restore_archive(inputs, &dest, &opts, &progress);
    bar.finish();
    let report = result.with_context(|| format!("restore from archive to {} failed", a.to))?;
    let seconds = start.elapsed().as_secs_f64();
    for d in &report.damage {
        note!("mover: warning: {d}");
        events::warning(d);
    }
    for (off, len) in &report.lost {
        let m = format!(
            "disk {}: bytes {off}..{} are lost (left as zeros)",
            report.disk,
            off + len
        );
        note!("mover: warning: {m}");
        events::warning(&m);
    }
    output::archive_restore_summary(&report, seconds, a.json, quiet);
    Ok(
        if report.damage.is_empty() && report.lost.is_empty() && report.verified {
            Exit::Success
        } else {
            Exit::Warnings
        },
    )
}

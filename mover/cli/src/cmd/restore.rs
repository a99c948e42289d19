//! `mover restore`: from a repository (whole, delta, or an attachment) or from archives.

use std::sync::Arc;

use anyhow::Context;
use mover::{is_nbd, Destination, Progress};

use crate::args::RestoreArgs;
use crate::repo::{is_s3, open_repo, restore_threads, Secrets};
use crate::{events, output, short, show_progress, usage, Exit};

/// `mover restore`.
pub fn restore(a: &RestoreArgs, secrets: &Secrets, quiet: bool) -> anyhow::Result<Exit> {
    if !a.from_archive.is_empty() {
        return restore_from_archive(a, secrets, quiet);
    }
    let repo = open_repo(&a.repo, secrets)?;
    let spec = a.snapshot.as_deref().unwrap_or("latest");
    let (id, manifest) = repo.find_snapshot(spec, a.name.as_deref())?;
    let dest = if a.to == "-" {
        Destination::Stdout
    } else {
        Destination::Path(a.to.clone().into())
    };
    let opts = mover::RestoreOptions {
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
    if let Some(name) = &a.attachment {
        return save_attachment(&manifest, name, a, quiet);
    }
    let disk = match (&a.disk, manifest.disks.as_slice()) {
        (Some(n), _) => manifest.disk(n).ok_or_else(|| {
            usage(format!(
                "snapshot {} has no disk {n}; its disks are {}",
                short(&id),
                disk_names(&manifest)
            ))
        })?,
        (None, [one]) => one,
        (None, _) => {
            return Err(usage(format!(
                "snapshot {} holds several disks ({}); pick one with --disk NAME",
                short(&id),
                disk_names(&manifest)
            )))
        }
    };
    let progress = Arc::new(Progress::default());
    let bar = output::ProgressBar::start(&progress, show_progress(quiet), "restore");
    let result = if a.delta {
        delta_target(a, disk.source_len).and_then(|(t, changed)| {
            Ok(mover::restore_delta(
                &repo,
                disk,
                t.as_ref(),
                changed.as_deref(),
                &opts,
                &progress,
            )?)
        })
    } else {
        mover::restore(&repo, disk, &dest, &opts, &progress).map_err(anyhow::Error::from)
    };
    bar.finish();
    let report =
        result.with_context(|| format!("restore of snapshot {} to {} failed", short(&id), a.to))?;
    output::restore_summary(&id, &report, a.json, quiet)?;
    Ok(Exit::Success)
}

/// Opens the destination of a delta restore (an existing file, block device or writable NBD
/// export) and reads what is known about where it changed.
#[allow(clippy::type_complexity)]
fn delta_target(
    a: &RestoreArgs,
    len: u64,
) -> anyhow::Result<(Box<dyn mover::DeltaTarget>, Option<Vec<(u64, u64)>>)> {
    let to = &a.to;
    if to == "-" {
        return Err(usage(
            "--delta needs an existing file, device or NBD export to compare, not stdout",
        ));
    }
    let mut changed = match &a.changed_extents {
        Some(file) => {
            let text = read_text(file, "changed-extent list")?;
            Some(mover::parse_disk_change_info(&text, len, file)?)
        }
        None => None,
    };
    if is_nbd(to) {
        let opts = mover::NbdOptions {
            bitmap: a.bitmap.clone(),
            ..Default::default()
        };
        let nbd = mover::NbdSource::connect(to, &opts)?;
        if nbd.is_read_only() {
            anyhow::bail!("NBD export {to} is read-only; export it writable for a delta restore");
        }
        if a.bitmap.is_some() {
            changed = Some(nbd.dirty_extents()?);
        }
        return Ok((Box::new(nbd), changed));
    }
    if a.bitmap.is_some() {
        return Err(usage(format!(
            "--bitmap needs an NBD destination, and {to} is not one; use --changed-extents"
        )));
    }
    let file = mover::FileDelta::open(std::path::Path::new(to), len)?;
    Ok((Box::new(file), changed))
}

/// The contents of FILE, or of stdin for `-`.
pub fn read_text(file: &str, what: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
            .with_context(|| format!("cannot read the {what} from stdin"))?;
        return Ok(t);
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read the {what} {file}"))
}

fn disk_names(m: &chunker::format::Manifest) -> String {
    m.disks
        .iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes an attachment of a snapshot to `--to` (a new file, or stdout).
fn save_attachment(
    m: &chunker::format::Manifest,
    name: &str,
    a: &RestoreArgs,
    quiet: bool,
) -> anyhow::Result<Exit> {
    let Some(att) = m.attachments.iter().find(|x| x.name == name) else {
        let names: Vec<_> = m.attachments.iter().map(|x| x.name.as_str()).collect();
        return Err(usage(format!(
            "the snapshot has no attachment {name}; it has: {}",
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        )));
    };
    if a.to == "-" {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(&att.data)
            .and_then(|()| out.flush())
            .context("cannot write stdout")?;
    } else {
        let mut open = std::fs::OpenOptions::new();
        open.write(true);
        if a.force {
            open.create(true).truncate(true);
        } else {
            open.create_new(true);
        }
        let mut f = open.open(&a.to).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                anyhow::Error::from(mover::Error::DestinationExists { path: a.to.clone() })
            }
            _ => anyhow::Error::from(e).context(format!("cannot write {}", a.to)),
        })?;
        std::io::Write::write_all(&mut f, &att.data).context(format!("cannot write {}", a.to))?;
        f.sync_all().context(format!("cannot write {}", a.to))?;
        if !quiet {
            eprintln!(
                "saved attachment {name} ({} bytes) to {}",
                att.data.len(),
                a.to
            );
        }
    }
    Ok(Exit::Success)
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
        eprintln!("mover: warning: {d}");
        events::emit("warning", serde_json::json!({"message": d}));
    }
    for (off, len) in &report.lost {
        let m = format!(
            "disk {}: bytes {off}..{} are lost (left as zeros)",
            report.disk,
            off + len
        );
        eprintln!("mover: warning: {m}");
        events::emit("warning", serde_json::json!({"message": m}));
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

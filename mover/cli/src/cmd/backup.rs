//! `mover backup`: arguments into a [`mover::BackupRequest`], the job, its summary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mover::{is_nbd, Progress};

use super::restore::read_text;
use crate::args::{ArchiveFormat, BackupArgs};
use crate::repo::{open_repo, threads, Secrets};
use crate::{events, output, show_progress, usage, Exit};

/// Splits `--source` values into (disk name, source). `NAME=SRC` names a disk; a single
/// unnamed source is named after the snapshot.
fn disk_specs(a: &BackupArgs, group: &str) -> anyhow::Result<Vec<(String, String)>> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.len() <= 64
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    let mut specs = Vec::new();
    for s in &a.source {
        let named = s
            .split_once('=')
            .filter(|(n, src)| valid_name(n) && !src.is_empty());
        specs.push(match named {
            Some((n, src)) => (Some(n.to_string()), src.to_string()),
            None => (None, s.clone()),
        });
    }
    if specs.len() == 1 {
        let (name, src) = specs.pop().expect("one");
        return Ok(vec![(name.unwrap_or_else(|| group.to_string()), src)]);
    }
    let mut out = Vec::new();
    for (name, src) in specs {
        let Some(name) = name else {
            return Err(usage(format!(
                "--source {src}: name each disk of a multi-disk backup, as --source NAME={src}"
            )));
        };
        if out.iter().any(|(n, _)| n == &name) {
            return Err(usage(format!(
                "disk name {name} is given twice; names must be unique"
            )));
        }
        out.push((name, src));
    }
    if out.iter().filter(|(_, s)| s == "-").count() > 1 {
        return Err(usage("only one disk can come from stdin (-)"));
    }
    Ok(out)
}

/// Reads `--changed-extents` values into per-disk change lists (by disk name).
fn changed_extents(
    a: &BackupArgs,
    disks: &[(String, String)],
) -> anyhow::Result<HashMap<String, (String, String)>> {
    let mut out = HashMap::new();
    for v in &a.changed_extents {
        let (disk, file) = match v.split_once('=') {
            Some((d, f)) if disks.iter().any(|(n, _)| n == d) => (d.to_string(), f.to_string()),
            _ if disks.len() == 1 => (disks[0].0.clone(), v.clone()),
            _ => {
                return Err(usage(format!(
                    "--changed-extents {v}: say which disk, as --changed-extents NAME=FILE"
                )))
            }
        };
        let text = read_text(&file, "changed-extent list")?;
        if out.insert(disk.clone(), (file, text)).is_some() {
            return Err(usage(format!(
                "--changed-extents is given twice for disk {disk}"
            )));
        }
    }
    Ok(out)
}

/// `mover backup`: validates the arguments, opens the repository (unless the backup goes to
/// an archive), runs the job and prints its summary.
pub fn backup(a: &BackupArgs, secrets: &Secrets, quiet: bool) -> anyhow::Result<Exit> {
    let group = match (&a.name, a.source.as_slice()) {
        (Some(n), _) => n.clone(),
        (None, [one]) if one == "-" => "stdin".into(),
        (None, [one]) => one.clone(),
        (None, _) => return Err(usage("a multi-disk backup needs --name for the snapshot")),
    };
    let specs = disk_specs(a, &group)?;
    if a.bitmap.is_some() && !specs.iter().any(|(_, s)| is_nbd(s)) {
        return Err(usage(
            "--bitmap needs an NBD source (nbd:// or nbd+unix://); use --changed-extents for files and devices",
        ));
    }
    let mut change_lists = changed_extents(a, &specs)?;
    if a.bitmap.is_some() {
        if let Some((name, _)) = specs
            .iter()
            .find(|(n, s)| is_nbd(s) && change_lists.contains_key(n))
        {
            return Err(usage(format!(
                "disk {name} has both --bitmap and --changed-extents; give one change map per disk"
            )));
        }
    }
    let attachments = mover::read_attachments(&a.attach)?;
    let hook = |name, cmd: &Option<String>| {
        cmd.as_ref().map(|c| mover::Hook {
            name,
            command: c.clone(),
            timeout: std::time::Duration::from_secs(a.hook_timeout),
        })
    };
    let hooks = mover::BackupHooks {
        pre_snapshot: hook("pre-snapshot", &a.pre_snapshot),
        post_snapshot: hook("post-snapshot", &a.post_snapshot),
        post_backup: hook("post-backup", &a.post_backup),
    };
    let repo;
    let destination = match &a.archive.to_archive {
        None if a.archive.format.encrypt => {
            return Err(usage(
                "--encrypt applies to --to-archive; a repository is encrypted when it is created (mover init --encrypt)",
            ))
        }
        None => {
            repo = std::sync::Arc::new(open_repo(&a.repo, secrets)?);
            mover::BackupDestination::Repository(&repo)
        }
        Some(path) => {
            let f = &a.archive.format;
            let password = match f.encrypt && a.parent.is_none() {
                true => Some(secrets.password_for_new("the archive")?),
                false => secrets.password()?,
            };
            mover::BackupDestination::Archive {
                path: path.clone(),
                format: archive_format(f),
                catalog: a.catalog.as_ref().map(PathBuf::from),
                password,
            }
        }
    };
    let request = mover::BackupRequest {
        name: group,
        disks: specs
            .into_iter()
            .map(|(name, source)| mover::DiskRequest {
                changed_extents: change_lists.remove(&name),
                name,
                source,
            })
            .collect(),
        bitmap: a.bitmap.clone(),
        change_id: a.change_id.clone(),
        parent: a.parent.clone(),
        options: mover::BackupOptions {
            name: String::new(),
            chunk_size: a.chunk_size,
            level: a.compression,
            threads: threads(&a.perf),
            memory: a.perf.memory,
            parent: None,
            verify_changes: a.verify_changes,
            attachments,
        },
        hooks,
        repository: a.repo.repo.clone(),
        destination,
    };
    let progress = Arc::new(Progress::default());
    let bar = output::ProgressBar::start(&progress, show_progress(quiet), "backup");
    let outcome = mover::run_backup(request, &progress);
    bar.finish();
    print_outcome(a, &outcome?, quiet)
}

/// Prints a committed backup's warnings and summary, and writes `--catalog-out`.
fn print_outcome(
    a: &BackupArgs,
    outcome: &mover::BackupOutcome,
    quiet: bool,
) -> anyhow::Result<Exit> {
    let report = &outcome.report;
    for w in &report.warnings {
        note!("mover: warning: {w}");
        events::warning(w);
    }
    let data_on_stdout = a.archive.to_archive.as_deref() == Some("-");
    let summary = match output::backup_summary(outcome, a.json, quiet, data_on_stdout) {
        Ok(summary) => summary,
        Err(e) => return Ok(unreported(report, &format!("{e:#}"))),
    };
    if let Some(path) = &a.catalog_out {
        // The run's catalog entry, for the backup software's own catalog: the summary event's
        // data, as one JSON document (written atomically).
        let doc =
            serde_json::json!({"type": "catalog", "schema": events::JSON_SCHEMA, "data": summary});
        if let Err(e) = write_atomically(Path::new(path), doc.to_string().as_bytes()) {
            let m = format!(
                "the snapshot is committed, but --catalog-out {path} cannot be written: {e}"
            );
            note!("mover: warning: {m}");
            events::warning(&m);
            return Ok(Exit::Warnings);
        }
    }
    if events::write_failed() {
        return Ok(unreported(report, "its events cannot be written"));
    }
    Ok(if report.warnings.is_empty() {
        Exit::Success
    } else {
        Exit::Warnings
    })
}

/// A committed backup whose summary cannot be written (stdout closed or full): the caller
/// cannot learn its snapshot id from the output, so the run exits 3, with the snapshot
/// committed.
fn unreported(report: &mover::BackupReport, why: &str) -> Exit {
    note!(
        "mover: warning: snapshot {} is committed, but its summary cannot be written: {why}",
        report.snapshot.to_hex()
    );
    Exit::Warnings
}

/// The library's archive format from `--block-size`, `--volume-size`, … .
pub fn archive_format(f: &ArchiveFormat) -> mover::ArchiveFormat {
    mover::ArchiveFormat {
        block_size: f.block_size,
        volume_size: f.volume_size,
        next_volume: f.next_volume.clone(),
        force: f.force,
        encrypt: f.encrypt,
        cipher: f.cipher,
    }
}

/// Writes `data` to `path` through a temporary file, fsync and rename.
fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".mover-{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

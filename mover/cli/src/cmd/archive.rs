//! `mover archive ls|verify|import|export`.

use std::sync::Arc;

use anyhow::Context;
use mover::Progress;

use super::backup::archive_format;
use crate::args::ArchiveCommand;
use crate::repo::{open_repo, Secrets};
use crate::{output, show_progress, Exit};

/// `mover archive …`.
pub fn archive(cmd: &ArchiveCommand, secrets: &Secrets, quiet: bool) -> anyhow::Result<Exit> {
    let progress = Arc::new(Progress::default());
    match cmd {
        ArchiveCommand::Ls(a) | ArchiveCommand::Verify(a) => {
            let check = matches!(cmd, ArchiveCommand::Verify(_));
            let input = mover::archive::open_input(&a.path)?;
            let bar =
                output::ProgressBar::start(&progress, check && show_progress(quiet), "verify");
            let result = mover::archive::read_archives(
                input,
                check,
                &progress,
                secrets.password()?.as_ref(),
            );
            bar.finish();
            let listings = result.with_context(|| format!("cannot read archive {}", a.path))?;
            // Every archive of the input (`cat a b`), one report each.
            output::archive_listing(&listings, check, a.json, quiet)?;
            let ok = listings
                .iter()
                .all(|l| l.damage.is_empty() && l.trailer.is_some_and(|t| t.verified));
            Ok(match (ok, check) {
                (true, _) => Exit::Success,
                (false, true) => Exit::Failure,
                (false, false) => Exit::Warnings,
            })
        }
        ArchiveCommand::Import(a) => {
            let repo = open_repo(&a.repo, secrets)?;
            let input = mover::archive::open_input(&a.path)?;
            let bar = output::ProgressBar::start(&progress, show_progress(quiet), "import");
            let result = mover::archive::import_archive(
                &repo,
                input,
                &progress,
                secrets.password()?.as_ref(),
            );
            bar.finish();
            let (id, m, new) = result.map_err(|e| {
                let what = format!("import of {}", a.path);
                e.failed(what, "no snapshot was committed")
            })?;
            output::import_summary(&id, &m, new, a.json, quiet)?;
            Ok(Exit::Success)
        }
        ArchiveCommand::Export(a) => {
            let repo = open_repo(&a.repo, secrets)?;
            let password = match a.format.encrypt {
                true => Some(secrets.password_for_new("the archive")?),
                false => None,
            };
            let request = mover::archive::ExportRequest {
                snapshot: a.snapshot.clone(),
                name: a.name.clone(),
                to: a.to.clone(),
                format: archive_format(&a.format),
                password,
            };
            let bar = output::ProgressBar::start(&progress, show_progress(quiet), "export");
            let result = mover::archive::export_snapshot(&repo, &request, &progress);
            bar.finish();
            let report = result?;
            output::export_summary(&report, a.json, quiet);
            Ok(Exit::Success)
        }
    }
}

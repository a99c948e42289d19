//! What the binary prints: JSON for machines on stdout, tables, summaries and the progress bar
//! for people on stderr. The JSON shapes are documented in `docs/JSON.md`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chunker::format::{Manifest, ObjectId};
use mover::report::{
    ArchiveListingSummary, ArchiveRestoreSummary, BackupSummary, CheckSummary, DoctorCheck,
    DoctorSummary, ExportSummary, ForgetSummary, GcSummary, ImportSummary, KeyItem, ProgressEvent,
    RepairIndexSummary, RepairSnapshotsSummary, RestoreSummary, SnapshotItem, VerifySummary,
};
use mover::{BackupOutcome, Progress, RestoreReport, VerifyReport};
use serde::Serialize;

use crate::events;
use crate::human::{bytes, duration, timestamp};

/// A one-line progress display on stderr, redrawn a few times a second.
pub struct ProgressBar {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressBar {
    pub fn start(progress: &Arc<Progress>, show: bool, what: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (show || events::enabled()).then(|| {
            let (progress, stop) = (Arc::clone(progress), Arc::clone(&stop));
            std::thread::spawn(move || draw(&progress, &stop, what, show))
        });
        ProgressBar { stop, thread }
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Redraws the bar (when `show`) and emits a progress event at most once a second.
fn draw(progress: &Progress, stop: &AtomicBool, what: &str, show: bool) {
    let start = Instant::now();
    let mut last_event = Instant::now();
    let mut err = std::io::stderr();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        let (done, total) = progress.get();
        let secs = start.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        if last_event.elapsed() >= Duration::from_secs(1) {
            last_event = Instant::now();
            events::emit(
                "progress",
                value(&ProgressEvent::new(what, done, total, secs)),
            );
        }
        if !show {
            continue;
        }
        let line = if total > 0 {
            let pct = (done as f64 / total as f64 * 100.0).min(100.0);
            let eta = if rate > 0.0 {
                (total.saturating_sub(done)) as f64 / rate
            } else {
                0.0
            };
            format!(
                "{what}: {} / {} ({pct:.0}%)  {}/s  ETA {}",
                bytes(done),
                bytes(total),
                bytes(rate as u64),
                duration(eta)
            )
        } else {
            format!("{what}: {}  {}/s", bytes(done), bytes(rate as u64))
        };
        let _ = write!(err, "\r\x1b[K{line}");
        let _ = err.flush();
    }
    if show {
        let _ = write!(err, "\r\x1b[K");
    }
}

/// A summary as JSON. The summaries are plain structs with string keys: serializing cannot fail.
fn value<T: Serialize>(summary: &T) -> serde_json::Value {
    serde_json::to_value(summary).expect("a summary serializes")
}

/// Emits a command's `summary` event.
fn summary<T: Serialize>(summary: &T) {
    events::emit("summary", value(summary));
}

/// Prints a JSON document (a list, for the listing commands) on stdout, keys sorted.
fn print_json<T: Serialize>(items: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &value(items))?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Prints a committed backup's summary; returns the summary event's data (the catalog entry).
pub fn backup_summary(
    outcome: &BackupOutcome,
    as_json: bool,
    quiet: bool,
    data_on_stdout: bool,
) -> anyhow::Result<serde_json::Value> {
    let r = &outcome.report;
    let m = &r.manifest;
    let s = &m.stats;
    let typed = BackupSummary::from(outcome);
    let (chunks_total, total_len, mbps) = (typed.chunks_total, typed.source_bytes, typed.mb_per_s);
    let data = value(&typed);
    events::emit("summary", data.clone());
    if as_json {
        return Ok(data);
    }
    if data_on_stdout {
        note!("{}", m_id(&r.snapshot));
    } else {
        writeln!(std::io::stdout(), "{}", m_id(&r.snapshot))?;
    }
    if !quiet {
        let unchanged = if r.chunks_unchanged > 0 {
            format!(", {} unchanged since the parent", bytes(r.bytes_unchanged))
        } else {
            String::new()
        };
        note!(
            "snapshot {} of {}: {} in {:.1}s ({mbps:.0} MB/s); read {}, new {} stored as {}, {} zero{unchanged}; chunks {} ({} new, {} reused, {} zero)",
            &m_id(&r.snapshot)[..12],
            m.name,
            bytes(total_len),
            r.seconds,
            bytes(s.bytes_read),
            bytes(s.bytes_new),
            bytes(s.bytes_stored),
            bytes(s.bytes_zero),
            chunks_total,
            s.chunks_new,
            s.chunks_reused,
            r.chunks_zero,
        );
    }
    Ok(data)
}

fn m_id(id: &ObjectId) -> String {
    id.to_hex()
}

/// `mover key list`: one line per key object (or a JSON array).
pub fn key_list(keys: &[targets::KeyInfo], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return print_json(&keys.iter().map(KeyItem::from).collect::<Vec<_>>());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<12}  {:<20}  {:<22}  IN USE",
        "ID", "TIME (UTC)", "KDF"
    )?;
    for k in keys {
        let kdf = format!(
            "argon2id {}MiB t={} p={}",
            k.params.memory_kib / 1024,
            k.params.iterations,
            k.params.parallelism
        );
        let used = if k.in_use { "*" } else { "" };
        writeln!(
            out,
            "{:<12}  {:<20}  {kdf:<22}  {used}",
            &k.id[..12],
            timestamp(k.created_ms)
        )?;
    }
    Ok(())
}

pub fn snapshot_list(
    list: &[(ObjectId, Manifest)],
    damaged: &std::collections::HashSet<ObjectId>,
    as_json: bool,
) -> anyhow::Result<()> {
    if as_json {
        let items: Vec<_> = list
            .iter()
            .map(|(id, m)| SnapshotItem::new(id, m, damaged.contains(id)))
            .collect();
        return print_json(&items);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<12}  {:<20}  {:>10}  {:>10}  NAME",
        "ID", "TIME (UTC)", "SIZE", "NEW"
    )?;
    for (id, m) in list {
        let disks = if m.disks.len() > 1 {
            let names: Vec<_> = m.disks.iter().map(|d| d.name.as_str()).collect();
            format!(" [{}]", names.join(", "))
        } else {
            String::new()
        };
        let mark = if damaged.contains(id) {
            "  (DAMAGED: `mover repair snapshots` found lost chunks)"
        } else {
            ""
        };
        writeln!(
            out,
            "{:<12}  {:<20}  {:>10}  {:>10}  {}{disks}{mark}",
            &id.to_hex()[..12],
            timestamp(m.created_ms),
            bytes(m.total_len()),
            bytes(m.stats.bytes_new),
            m.name
        )?;
    }
    writeln!(out, "{} snapshots", list.len())?;
    Ok(())
}

pub fn restore_summary(
    id: &ObjectId,
    r: &RestoreReport,
    as_json: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let typed = RestoreSummary::new(id, r);
    let mbps = typed.mb_per_s;
    summary(&typed);
    if as_json {
        return Ok(());
    }
    if !quiet && r.bytes_compared > 0 {
        note!(
            "rolled back to snapshot {}: {} in {:.1}s; compared {}, wrote {} ({} chunks fetched and checked)",
            &id.to_hex()[..12],
            bytes(r.bytes_total),
            r.seconds,
            bytes(r.bytes_compared),
            bytes(r.bytes_written),
            r.chunks_fetched
        );
    } else if !quiet {
        note!(
            "restored snapshot {}: {} in {:.1}s ({mbps:.0} MB/s), {} chunks checked",
            &id.to_hex()[..12],
            bytes(r.bytes_total),
            r.seconds,
            r.chunks_fetched
        );
    }
    Ok(())
}

pub fn verify_report(r: &VerifyReport, as_json: bool, quiet: bool) -> anyhow::Result<()> {
    summary(&VerifySummary::from(r));
    if as_json {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for s in &r.snapshots {
        let name = s.name.as_deref().unwrap_or("?");
        if s.is_ok() {
            if !quiet {
                writeln!(out, "ok       {}  {name}", &s.id.to_hex()[..12])?;
            }
        } else {
            writeln!(
                out,
                "DAMAGED  {}  {name}: {} problem(s)",
                &s.id.to_hex()[..12],
                s.problems.len()
            )?;
            for p in s.problems.iter().take(5) {
                writeln!(out, "         {p}")?;
            }
            if s.problems.len() > 5 {
                writeln!(out, "         … and {} more", s.problems.len() - 5)?;
            }
        }
    }
    if !quiet {
        note!(
            "checked {} of {} chunks ({})",
            r.chunks_checked,
            r.chunks_total,
            bytes(r.bytes_checked)
        );
    }
    Ok(())
}

/// Doctor's checks; with `quiet` only the failed ones and their fixes.
pub fn doctor_report(
    checks: &[crate::doctor::Check],
    as_json: bool,
    quiet: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let bad = checks.iter().filter(|c| !c.ok).count();
    if as_json {
        let checks = checks.iter().map(|c| DoctorCheck {
            subject: c.subject.clone(),
            check: c.name.to_string(),
            ok: c.ok,
            detail: c.detail.clone(),
            fix: c.fix.clone(),
        });
        summary(&DoctorSummary::new(checks.collect()));
        return Ok(());
    }
    let mut subject = "";
    for c in checks.iter().filter(|c| !quiet || !c.ok) {
        if c.subject != subject {
            subject = &c.subject;
            writeln!(out, "{subject}")?;
        }
        let mark = if c.ok { "ok  " } else { "FAIL" };
        writeln!(out, "  {mark} {:<18} {}", c.name, c.detail)?;
        if let Some(fix) = &c.fix {
            writeln!(out, "       {:<18} fix: {fix}", "")?;
        }
    }
    if !quiet {
        writeln!(
            out,
            "{}",
            if bad == 0 {
                "no problems found".to_string()
            } else {
                format!("{bad} problem(s) found")
            }
        )?;
    }
    Ok(())
}

pub fn archive_restore_summary(
    r: &mover::archive::ArchiveRestoreReport,
    seconds: f64,
    as_json: bool,
    quiet: bool,
) {
    let typed = ArchiveRestoreSummary::new(r, seconds);
    let mbps = typed.mb_per_s;
    summary(&typed);
    if !as_json && !quiet {
        note!(
            "restored disk {} from the archive: {} in {seconds:.1}s ({mbps:.0} MB/s), {} chunks checked{}",
            r.disk,
            bytes(r.bytes_total),
            r.chunks_read,
            if r.lost.is_empty() { String::new() } else { format!(", {} ranges LOST", r.lost.len()) }
        );
    }
}

/// `archive ls|verify`: one summary for the input, its fields those of the first archive, and
/// `archives` with every archive of the input (several when archives were concatenated).
pub fn archive_listing(
    all: &[mover::archive::ArchiveListing],
    checked: bool,
    as_json: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    summary(&ArchiveListingSummary::new(all, checked));
    if as_json {
        return Ok(());
    }
    for l in all {
        archive_text(l, checked, quiet)?;
    }
    Ok(())
}

fn archive_text(
    l: &mover::archive::ArchiveListing,
    checked: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let h = l.header.as_ref();
    let disks = mover::report::ArchiveDisk::of(l);
    let mut out = std::io::stdout().lock();
    match h {
        Some(h) => {
            writeln!(
                out,
                "archive {} written by {} at {}",
                h.id,
                h.tool_version,
                timestamp(h.created_ms)
            )?;
            for d in &disks {
                writeln!(out, "  disk {:<12} {:>12}", d.name, bytes(d.size))?;
            }
            if let Some(aead) = l.cipher {
                writeln!(out, "  encrypted ({})", aead.name())?;
            }
            if h.parents.is_empty() {
                writeln!(out, "  full archive (no parent)")?;
            } else {
                let p: Vec<String> = h.parents.iter().map(|p| p.to_hex()).collect();
                writeln!(out, "  incremental of: {}", p.join(" "))?;
            }
        }
        None => writeln!(out, "archive header not found")?,
    }
    writeln!(
        out,
        "  {} volume(s), {} chunks ({}){}",
        l.volumes,
        l.chunks,
        bytes(l.chunk_bytes),
        match l.trailer {
            Some(t) if t.verified => ", complete and verified",
            Some(t) if t.incomplete => ", INCOMPLETE (interrupted backup)",
            Some(_) => ", totals do not match",
            None => ", TRUNCATED (no trailer)",
        }
    )?;
    for d in &l.damage {
        writeln!(out, "  damage: {d}")?;
    }
    if checked && !quiet && l.damage.is_empty() {
        writeln!(out, "  every chunk checked against its id")?;
    }
    Ok(())
}

pub fn import_summary(
    id: &ObjectId,
    m: &Manifest,
    new: u64,
    as_json: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    summary(&ImportSummary::new(id, m, new));
    if as_json {
        return Ok(());
    }
    writeln!(std::io::stdout(), "{}", id.to_hex())?;
    if !quiet {
        note!(
            "imported snapshot {} of {} ({} new chunks)",
            &id.to_hex()[..12],
            m.name,
            new
        );
    }
    Ok(())
}

pub fn export_summary(report: &mover::archive::ExportReport, as_json: bool, quiet: bool) {
    summary(&ExportSummary::from(report));
    let (id, s) = (&report.snapshot, &report.summary);
    if as_json || quiet {
        return;
    }
    let line = format!(
        "exported snapshot {} as archive {}: {} chunks, {} in {} volume(s)",
        &id.to_hex()[..12],
        s.id,
        s.chunks,
        bytes(s.bytes_written),
        s.volumes
    );
    note!("{line}"); // stderr: the archive may be on stdout
}

/// `forget`: rows of (id, name, created ms, kept, reasons).
pub fn forget_report(
    rows: &[mover::forget::ForgetRow],
    dry_run: bool,
    as_json: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let typed = ForgetSummary::new(rows, dry_run);
    summary(&typed);
    if as_json || quiet {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for mover::forget::ForgetRow {
        id,
        name,
        created_ms: created,
        keep,
        reasons,
    } in rows
    {
        let verdict = match (keep, dry_run) {
            (true, _) => "keep  ",
            (false, true) => "would remove",
            (false, false) => "remove",
        };
        writeln!(
            out,
            "{verdict:<12}  {}  {:<20}  {name}  {}",
            &id.to_hex()[..12],
            timestamp(*created),
            reasons.join(", ")
        )?;
    }
    let (n, kept) = (typed.removed.len(), &typed.kept);
    if dry_run {
        writeln!(
            out,
            "{n} snapshots would be removed, {} kept (dry run: nothing changed)",
            kept.len()
        )?;
    } else {
        writeln!(
            out,
            "{n} snapshots removed, {} kept; `mover gc` reclaims their space",
            kept.len()
        )?;
    }
    Ok(())
}

pub fn gc_report(
    r: &targets::gc::GcReport,
    dry_run: bool,
    as_json: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    summary(&GcSummary::new(r, dry_run));
    for w in &r.warnings {
        note!("mover: warning: {w}");
    }
    if as_json || quiet {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    let would = if dry_run { "would be " } else { "" };
    writeln!(
        out,
        "{} snapshots use {} chunks in {} packs",
        r.snapshots, r.live_chunks, r.packs
    )?;
    writeln!(
        out,
        "swept: {} packs {would}deleted, {} reclaimed; {} condemned packs kept (a backup reused their data)",
        r.swept_packs,
        bytes(r.swept_bytes),
        r.kept_packs
    )?;
    writeln!(
        out,
        "marked: {} packs {would}condemned ({}, of which {} garbage), {} repacked ({} copied)",
        r.condemned_packs,
        bytes(r.condemned_bytes),
        bytes(r.garbage_bytes),
        r.repacked_packs,
        bytes(r.repacked_bytes)
    )?;
    if r.segments_merged > 0 || r.segments_removed > 0 {
        writeln!(
            out,
            "index: {} small segments merged, {} merged earlier removed; {} segments now",
            r.segments_merged, r.segments_removed, r.segments_after
        )?;
    }
    if r.temporaries_removed > 0 {
        writeln!(
            out,
            "temporary files of killed writes: {} {would}removed ({})",
            r.temporaries_removed,
            bytes(r.temporary_bytes)
        )?;
    }
    for p in &r.pending {
        writeln!(
            out,
            "pending: {} packs may be deleted by a gc run from {} UTC on",
            p.packs,
            timestamp(p.due_ms)
        )?;
    }
    if dry_run {
        writeln!(out, "dry run: nothing changed")?;
    }
    Ok(())
}

/// Check's findings; with `quiet` only the errors.
pub fn check_report(
    r: &targets::gc::CheckReport,
    open_warnings: &[String],
    as_json: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let typed = CheckSummary::new(r, open_warnings);
    summary(&typed);
    if as_json {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    if !quiet {
        writeln!(
            out,
            "format {}: {} snapshots, {} packs, {} index segments, {} chunks",
            r.format_version, r.snapshots, r.packs, r.segments, r.chunks
        )?;
    }
    for e in &typed.errors {
        writeln!(out, "ERROR  {e}")?;
    }
    if quiet {
        return Ok(());
    }
    for n in &r.notes {
        writeln!(out, "note   {n}")?;
    }
    if typed.ok {
        writeln!(out, "no problems found")?;
    }
    Ok(())
}

pub fn repair_index_report(
    r: &targets::gc::RepairIndexReport,
    dry_run: bool,
    as_json: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    summary(&RepairIndexSummary::new(r, dry_run));
    for u in &r.unreadable {
        note!("mover: warning: {u}; its chunks are not indexed");
    }
    for u in &r.recovered {
        note!("mover: warning: {u}");
    }
    if as_json || quiet {
        return Ok(());
    }
    let verb = if dry_run { "would index" } else { "indexed" };
    writeln!(
        std::io::stdout(),
        "{verb} {} chunks from {} packs ({} old segments replaced by {}){}",
        r.chunks,
        r.packs,
        r.old_segments,
        r.new_segments,
        if dry_run {
            "; dry run: nothing changed"
        } else {
            ""
        }
    )?;
    Ok(())
}

pub fn repair_config_report(
    r: &targets::gc::RepairConfigReport,
    dry_run: bool,
    as_json: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    summary(&mover::report::RepairConfigSummary::new(r, dry_run));
    if as_json || quiet {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    if r.intact {
        writeln!(out, "the config is intact; nothing to do")?;
        return Ok(());
    }
    let verb = if dry_run { "would write" } else { "wrote" };
    writeln!(out, "{verb} a new config:")?;
    for line in &r.recovered {
        writeln!(out, "  {line}")?;
    }
    if dry_run {
        writeln!(out, "dry run: nothing changed")?;
    }
    Ok(())
}

/// The snapshots marked damaged; with `quiet` only those, without the count.
pub fn repair_snapshots_report(
    r: &[targets::gc::DamagedSnapshot],
    dry_run: bool,
    as_json: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    summary(&RepairSnapshotsSummary::new(r, dry_run));
    if as_json {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for d in r {
        writeln!(
            out,
            "{} {}  {}: {} chunks lost ({} of the disk)",
            if dry_run { "would mark" } else { "marked" },
            &d.id.to_hex()[..12],
            d.name,
            d.missing_chunks,
            bytes(d.bytes_lost)
        )?;
    }
    if quiet {
        return Ok(());
    }
    writeln!(
        out,
        "{} damaged snapshots{}",
        r.len(),
        if r.is_empty() {
            ""
        } else {
            "; they stay until you `mover forget` them"
        }
    )?;
    Ok(())
}

/// `mover benchmark --json`: the summary event (the table is the report's own).
pub fn benchmark_summary(report: &mover::benchmark::BenchReport) {
    summary(&mover::report::BenchmarkSummary::from(report));
}

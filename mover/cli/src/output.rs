//! What the binary prints: JSON for machines on stdout, tables, summaries and the progress bar
//! for people on stderr. The JSON shapes are documented in `docs/JSON.md`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chunker::format::{Chunking, Disk, Manifest, ObjectId};
use mover::{BackupReport, Progress, RestoreReport, VerifyReport};
use serde_json::json;

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
                json!({"command": what, "bytes_done": done, "bytes_total": total,
                       "seconds": secs, "mb_per_s": rate / 1e6}),
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

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

fn chunking(c: Chunking) -> (&'static str, u32) {
    match c {
        Chunking::Fixed(s) => ("fixed", s),
        Chunking::Cdc(s) => ("fastcdc", s),
    }
}

fn disk_json(d: &Disk) -> serde_json::Value {
    let (kind, size) = chunking(d.chunking);
    json!({
        "name": d.name,
        "source": d.source,
        "source_bytes": d.source_len,
        "chunking": kind,
        "chunk_size": size,
        "chunks": d.entries.len(),
        "change_token": d.change_token,
        "bytes_read": d.stats.bytes_read,
        "bytes_new": d.stats.bytes_new,
        "bytes_stored": d.stats.bytes_stored,
        "bytes_zero": d.stats.bytes_zero,
    })
}

fn chunks_total(m: &Manifest) -> u64 {
    m.disks.iter().map(|d| d.entries.len() as u64).sum()
}

pub fn backup_summary(
    r: &BackupReport,
    extra: Option<serde_json::Value>,
    as_json: bool,
    quiet: bool,
    data_on_stdout: bool,
) -> anyhow::Result<serde_json::Value> {
    let m = &r.manifest;
    let s = &m.stats;
    let chunks_total = chunks_total(m);
    let total_len = m.total_len();
    let mbps = total_len as f64 / r.seconds.max(1e-9) / 1e6;
    let data = {
        let (kind, size) = chunking(m.disks[0].chunking);
        let mut data = json!({
                    "command": "backup",
                    "snapshot_id": m_id(&r.snapshot),
                    "name": m.name,
                    "source": m.disks[0].source,
                    "parent": m.parent.map(|p| p.to_hex()),
                    "created": timestamp(m.created_ms),
                    "source_bytes": total_len,
                    "bytes_read": s.bytes_read,
                    "bytes_new": s.bytes_new,
                    "bytes_stored": s.bytes_stored,
                    "bytes_zero": s.bytes_zero,
                    "bytes_unchanged": r.bytes_unchanged,
                    "chunks_total": chunks_total,
                    "chunks_new": s.chunks_new,
                    "chunks_reused": s.chunks_reused,
                    "chunks_zero": r.chunks_zero,
                    "chunks_unchanged": r.chunks_unchanged,
                    "chunking": kind,
                    "chunk_size": size,
                    "disks": m.disks.iter().map(disk_json).collect::<Vec<_>>(),
                    "attachments": m.attachments.iter().map(|a| json!({"name": a.name, "bytes": a.data.len()})).collect::<Vec<_>>(),
                    "warnings": r.warnings,
                    "seconds": r.seconds,
                    "mb_per_s": mbps,
        });
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) = (extra, data.as_object_mut()) {
            obj.extend(extra);
        }
        events::emit("summary", data.clone());
        data
    };
    if as_json {
        return Ok(data);
    }
    if data_on_stdout {
        eprintln!("{}", m_id(&r.snapshot));
    } else {
        println!("{}", m_id(&r.snapshot));
    }
    if !quiet {
        let unchanged = if r.chunks_unchanged > 0 {
            format!(", {} unchanged since the parent", bytes(r.bytes_unchanged))
        } else {
            String::new()
        };
        eprintln!(
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
        let items: Vec<_> = keys
            .iter()
            .map(|k| {
                json!({
                    "id": k.id,
                    "created": timestamp(k.created_ms),
                    "created_ms": k.created_ms,
                    "kdf": "argon2id",
                    "memory_kib": k.params.memory_kib,
                    "iterations": k.params.iterations,
                    "parallelism": k.params.parallelism,
                    "in_use": k.in_use,
                })
            })
            .collect();
        return print_json(&serde_json::Value::Array(items));
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
            .map(|(id, m)| {
                let (kind, size) = chunking(m.disks[0].chunking);
                json!({
                    "id": id.to_hex(),
                    "short_id": &id.to_hex()[..12],
                    "name": m.name,
                    "source": m.disks[0].source,
                    "created": timestamp(m.created_ms),
                    "created_ms": m.created_ms,
                    "source_bytes": m.total_len(),
                    "bytes_new": m.stats.bytes_new,
                    "bytes_stored": m.stats.bytes_stored,
                    "chunking": kind,
                    "chunk_size": size,
                    "chunks": chunks_total(m),
                    "parent": m.parent.map(|p| p.to_hex()),
                    "damaged": damaged.contains(id),
                    "disks": m.disks.iter().map(disk_json).collect::<Vec<_>>(),
                    "attachments": m.attachments.iter().map(|a| json!({"name": a.name, "bytes": a.data.len()})).collect::<Vec<_>>(),
                })
            })
            .collect();
        return print_json(&serde_json::Value::Array(items));
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
    let mbps = r.bytes_total as f64 / r.seconds.max(1e-9) / 1e6;
    events::emit(
        "summary",
        json!({
            "command": "restore",
            "snapshot_id": id.to_hex(),
            "bytes_total": r.bytes_total,
            "bytes_written": r.bytes_written,
            "bytes_compared": r.bytes_compared,
            "chunks_fetched": r.chunks_fetched,
            "seconds": r.seconds,
            "mb_per_s": mbps,
        }),
    );
    if as_json {
        return Ok(());
    }
    if !quiet && r.bytes_compared > 0 {
        eprintln!(
            "rolled back to snapshot {}: {} in {:.1}s; compared {}, wrote {} ({} chunks fetched and checked)",
            &id.to_hex()[..12],
            bytes(r.bytes_total),
            r.seconds,
            bytes(r.bytes_compared),
            bytes(r.bytes_written),
            r.chunks_fetched
        );
    } else if !quiet {
        eprintln!(
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
    {
        let snaps: Vec<_> = r
            .snapshots
            .iter()
            .map(|s| {
                json!({
                    "id": s.id.to_hex(),
                    "name": s.name,
                    "ok": s.is_ok(),
                    "problems": s.problems,
                })
            })
            .collect();
        events::emit(
            "summary",
            json!({
                "command": "verify",
                "chunks_total": r.chunks_total,
                "chunks_checked": r.chunks_checked,
                "bytes_checked": r.bytes_checked,
                "snapshots": snaps,
            }),
        );
    }
    if as_json {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for s in &r.snapshots {
        let name = s.name.as_deref().unwrap_or("?");
        if s.is_ok() {
            writeln!(out, "ok       {}  {name}", &s.id.to_hex()[..12])?;
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
        eprintln!(
            "checked {} of {} chunks ({})",
            r.chunks_checked,
            r.chunks_total,
            bytes(r.bytes_checked)
        );
    }
    Ok(())
}

pub fn doctor_report(
    checks: &[crate::doctor::Check],
    as_json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let bad = checks.iter().filter(|c| !c.ok).count();
    if as_json {
        let items: Vec<_> = checks
            .iter()
            .map(|c| {
                json!({"subject": c.subject, "check": c.name, "ok": c.ok,
                       "detail": c.detail, "fix": c.fix})
            })
            .collect();
        events::emit(
            "summary",
            json!({"command": "doctor", "ok": bad == 0, "problems": bad, "checks": items}),
        );
        return Ok(());
    }
    let mut subject = "";
    for c in checks {
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
    writeln!(
        out,
        "{}",
        if bad == 0 {
            "no problems found".to_string()
        } else {
            format!("{bad} problem(s) found")
        }
    )?;
    Ok(())
}

pub fn archive_restore_summary(
    r: &mover::archive::ArchiveRestoreReport,
    seconds: f64,
    as_json: bool,
    quiet: bool,
) {
    let mbps = r.bytes_total as f64 / seconds.max(1e-9) / 1e6;
    events::emit(
        "summary",
        json!({
            "command": "restore",
            "from_archive": true,
            "disk": r.disk,
            "snapshot_id": r.snapshot.map(|s| s.to_hex()),
            "bytes_total": r.bytes_total,
            "bytes_written": r.bytes_written,
            "chunks_read": r.chunks_read,
            "verified": r.verified,
            "damage": r.damage,
            "lost": r.lost.iter().map(|(o, l)| json!({"offset": o, "length": l})).collect::<Vec<_>>(),
            "seconds": seconds,
            "mb_per_s": mbps,
        }),
    );
    if !as_json && !quiet {
        eprintln!(
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
    let command = if checked {
        "archive verify"
    } else {
        "archive ls"
    };
    let each: Vec<serde_json::Value> = all.iter().map(archive_json).collect();
    let mut summary = each.first().cloned().unwrap_or_else(|| json!({}));
    summary["command"] = json!(command);
    summary["archives"] = json!(each);
    events::emit("summary", summary);
    if as_json {
        return Ok(());
    }
    for l in all {
        archive_text(l, checked, quiet)?;
    }
    Ok(())
}

/// Disk names and sizes: from the manifest when it was read (a stream source's size is known
/// only there), else from the header.
fn archive_disks(l: &mover::archive::ArchiveListing) -> Vec<(String, u64)> {
    match (&l.manifest, &l.header) {
        (Some(m), _) => m
            .disks
            .iter()
            .map(|d| (d.name.clone(), d.source_len))
            .collect(),
        (None, Some(h)) => h.disks.iter().map(|d| (d.name.clone(), d.size)).collect(),
        (None, None) => Vec::new(),
    }
}

fn archive_json(l: &mover::archive::ArchiveListing) -> serde_json::Value {
    let h = l.header.as_ref();
    let disks: Vec<_> = archive_disks(l)
        .iter()
        .map(|(name, size)| json!({"name": name, "size": size}))
        .collect();
    json!({
        "archive_id": h.map(|h| h.id.to_hex()),
        "tool": h.map(|h| h.tool_version.clone()),
        "created": h.map(|h| timestamp(h.created_ms)),
        "chunk_size": h.map(|h| h.chunk_size),
        "disks": disks,
        "parents": h.map(|h| h.parents.iter().map(|p| p.to_hex()).collect::<Vec<_>>()),
        "snapshot_name": l.manifest.as_ref().map(|m| m.name.clone()),
        "volumes": l.volumes,
        "chunks": l.chunks,
        "chunk_bytes": l.chunk_bytes,
        "complete": l.trailer.is_some_and(|t| !t.incomplete),
        "verified": l.trailer.is_some_and(|t| t.verified),
        "encrypted": l.cipher.is_some(),
        "cipher": l.cipher.map(|a| a.name()),
        "damage": l.damage,
    })
}

fn archive_text(
    l: &mover::archive::ArchiveListing,
    checked: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let h = l.header.as_ref();
    let sizes = archive_disks(l);
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
            for (name, size) in &sizes {
                writeln!(out, "  disk {:<12} {:>12}", name, bytes(*size))?;
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

pub fn import_summary(id: &ObjectId, m: &Manifest, new: u64, as_json: bool, quiet: bool) {
    events::emit(
        "summary",
        json!({"command": "archive import", "snapshot_id": id.to_hex(), "name": m.name,
               "source_bytes": m.total_len(), "chunks_new": new}),
    );
    if as_json {
        return;
    }
    println!("{}", id.to_hex());
    if !quiet {
        eprintln!(
            "imported snapshot {} of {} ({} new chunks)",
            &id.to_hex()[..12],
            m.name,
            new
        );
    }
}

pub fn export_summary(
    id: &ObjectId,
    s: &targets::archive::ArchiveSummary,
    as_json: bool,
    quiet: bool,
) {
    events::emit(
        "summary",
        json!({"command": "archive export", "snapshot_id": id.to_hex(), "archive_id": s.id.to_hex(),
               "volumes": s.volumes, "chunks": s.chunks, "bytes_written": s.bytes_written}),
    );
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
    eprintln!("{line}"); // stderr: the archive may be on stdout
}

/// `forget`: rows of (id, name, created ms, kept, reasons).
pub fn forget_report(
    rows: &[mover::forget::ForgetRow],
    dry_run: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let item = |r: &mover::forget::ForgetRow| {
        json!({"id": r.id.to_hex(), "name": r.name, "created": timestamp(r.created_ms),
               "created_ms": r.created_ms, "reasons": r.reasons})
    };
    let kept: Vec<_> = rows.iter().filter(|r| r.keep).map(item).collect();
    let removed: Vec<_> = rows.iter().filter(|r| !r.keep).map(item).collect();
    events::emit(
        "summary",
        json!({"command": "forget", "dry_run": dry_run, "kept": kept, "removed": removed}),
    );
    if as_json {
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
    let n = removed.len();
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

pub fn gc_report(r: &targets::gc::GcReport, dry_run: bool, as_json: bool) -> anyhow::Result<()> {
    let pending: Vec<_> = r
        .pending
        .iter()
        .map(|p| json!({"tombstone": p.key, "packs": p.packs, "due": timestamp(p.due_ms), "due_ms": p.due_ms}))
        .collect();
    events::emit(
        "summary",
        json!({
            "command": "gc",
            "dry_run": dry_run,
            "snapshots": r.snapshots,
            "live_chunks": r.live_chunks,
            "packs": r.packs,
            "swept_packs": r.swept_packs,
            "reclaimed_bytes": r.swept_bytes,
            "kept_packs": r.kept_packs,
            "condemned_packs": r.condemned_packs,
            "condemned_bytes": r.condemned_bytes,
            "garbage_bytes": r.garbage_bytes,
            "repacked_packs": r.repacked_packs,
            "repacked_bytes": r.repacked_bytes,
            "index_segments_before": r.segments_before,
            "index_segments_after": r.segments_after,
            "temporaries_removed": r.temporaries_removed,
            "temporary_bytes": r.temporary_bytes,
            "pending": pending,
            "warnings": r.warnings,
        }),
    );
    for w in &r.warnings {
        eprintln!("mover: warning: {w}");
    }
    if as_json {
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

pub fn check_report(
    r: &targets::gc::CheckReport,
    open_warnings: &[String],
    as_json: bool,
) -> anyhow::Result<()> {
    let errors: Vec<&String> = open_warnings.iter().chain(&r.errors).collect();
    events::emit(
        "summary",
        json!({
            "command": "check",
            "ok": errors.is_empty(),
            "format_version": r.format_version,
            "snapshots": r.snapshots,
            "packs": r.packs,
            "index_segments": r.segments,
            "chunks": r.chunks,
            "errors": errors,
            "notes": r.notes,
        }),
    );
    if as_json {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "format {}: {} snapshots, {} packs, {} index segments, {} chunks",
        r.format_version, r.snapshots, r.packs, r.segments, r.chunks
    )?;
    for e in &errors {
        writeln!(out, "ERROR  {e}")?;
    }
    for n in &r.notes {
        writeln!(out, "note   {n}")?;
    }
    if errors.is_empty() {
        writeln!(out, "no problems found")?;
    }
    Ok(())
}

pub fn repair_index_report(
    r: &targets::gc::RepairIndexReport,
    dry_run: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    events::emit(
        "summary",
        json!({"command": "repair index", "dry_run": dry_run, "packs": r.packs, "chunks": r.chunks,
               "old_segments": r.old_segments, "new_segments": r.new_segments,
               "unreadable": r.unreadable, "recovered": r.recovered}),
    );
    for u in &r.unreadable {
        eprintln!("mover: warning: {u}; its chunks are not indexed");
    }
    for u in &r.recovered {
        eprintln!("mover: warning: {u}");
    }
    if as_json {
        return Ok(());
    }
    let verb = if dry_run { "would index" } else { "indexed" };
    println!(
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
    );
    Ok(())
}

pub fn repair_config_report(
    r: &targets::gc::RepairConfigReport,
    dry_run: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let encryption = r.config.encryption.map(|a| a.name());
    events::emit(
        "summary",
        json!({"command": "repair config", "dry_run": dry_run, "intact": r.intact,
               "id": chunker::hex::encode(&r.config.id), "created_ms": r.config.created_ms,
               "encryption": encryption, "recovered": r.recovered}),
    );
    if as_json {
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

pub fn repair_snapshots_report(
    r: &[targets::gc::DamagedSnapshot],
    dry_run: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let items: Vec<_> = r
        .iter()
        .map(|d| {
            json!({"id": d.id.to_hex(), "name": d.name, "missing_chunks": d.missing_chunks,
                        "bytes_lost": d.bytes_lost})
        })
        .collect();
    events::emit(
        "summary",
        json!({"command": "repair snapshots", "dry_run": dry_run, "damaged": items}),
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(timestamp(1_795_569_844_000), "2026-11-25T01:24:04Z");
    }
}

//! `mover doctor`: checks a source and a repository and says what to do about each problem
//! (the `vcbSanDbg` of mover).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chunker::ExtentKind;
use targets::{Backend, Repository, RepositoryOptions};

use crate::human::bytes;
use mover::{FileSource, NbdOptions, NbdSource, Source, SourceKind};

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// What was checked: `source X` or `repository Y`.
    pub subject: String,
    /// The check's name (`readable`, `writable`, …).
    pub name: &'static str,
    /// False when something is broken.
    pub ok: bool,
    /// What was found, one line.
    pub detail: String,
    /// What to do about it, when broken.
    pub fix: Option<String>,
}

struct Checks {
    subject: String,
    out: Vec<Check>,
}

impl Checks {
    fn ok(&mut self, name: &'static str, detail: impl Into<String>) {
        self.out.push(Check {
            subject: self.subject.clone(),
            name,
            ok: true,
            detail: detail.into(),
            fix: None,
        });
    }
    fn bad(&mut self, name: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.out.push(Check {
            subject: self.subject.clone(),
            name,
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        });
    }
}

/// Checks a source: that it opens, its size and block size, that its first and last bytes
/// read, its allocation map (and the dirty bitmaps of an NBD export), and its sequential read
/// throughput for about `read_for`.
pub fn check_source(spec: &str, read_for: Duration) -> Vec<Check> {
    let mut c = Checks {
        subject: format!("source {spec}"),
        out: Vec::new(),
    };
    let Some(source) = open_source(spec, &mut c) else {
        return c.out;
    };
    check_reads(source.as_ref(), &mut c, read_for);
    c.out
}

/// Opens a source for [`check_source`], saying what it is; `None` when it cannot be read
/// (or is a stream, which is read once).
fn open_source(spec: &str, c: &mut Checks) -> Option<Box<dyn Source>> {
    if mover::is_nbd(spec) {
        match NbdSource::connect(spec, &NbdOptions::default()) {
            Ok(n) => {
                let (min, pref, max) = n.block_size();
                c.ok(
                    "visible",
                    format!(
                        "NBD export, {}; block sizes minimum {min}, preferred {pref}, maximum {max}",
                        if n.is_read_only() { "read-only" } else { "writable" }
                    ),
                );
                match n.dirty_bitmaps() {
                    [] => c.ok(
                        "dirty bitmaps",
                        "none exported (incrementals need qemu-nbd --bitmap NAME, or --changed-extents)",
                    ),
                    b => c.ok("dirty bitmaps", b.join(", ")),
                }
                Some(Box::new(n))
            }
            Err(e) => {
                c.bad(
                    "visible",
                    e.to_string(),
                    "start the NBD server (qemu-nbd, nbdkit) and check the URI",
                );
                None
            }
        }
    } else {
        match FileSource::open(spec) {
            Ok(f) if f.kind() == SourceKind::Stream => {
                c.ok(
                    "visible",
                    "a stream (pipe or character device): read once, cut with FastCDC",
                );
                None
            }
            Ok(f) => {
                let what = match f.kind() {
                    SourceKind::BlockDevice => {
                        let bs = mover::sys::logical_block_size(spec)
                            .map_or_else(|e| format!("unknown ({e})"), |b| b.to_string());
                        format!("block device, logical block size {bs}")
                    }
                    _ => "image file".to_string(),
                };
                c.ok("visible", what);
                Some(Box::new(f))
            }
            Err(e) => {
                c.bad(
                    "visible",
                    e.to_string(),
                    "check the path, and run mover as a user who may read it",
                );
                None
            }
        }
    }
}

/// Reads a source for [`check_source`]: its size, first and last bytes, allocation map and
/// sequential throughput.
fn check_reads(source: &dyn Source, c: &mut Checks, read_for: Duration) {
    let len = source.len();
    if len == 0 {
        c.bad("size", "0 bytes", "check that this is the disk you mean");
        return;
    }
    c.ok("size", format!("{len} bytes ({})", bytes(len)));
    let probe = len.min(64 << 10) as usize;
    let mut buf = vec![0; probe];
    match source
        .read_at(0, &mut buf)
        .and_then(|()| source.read_at(len - probe as u64, &mut buf))
    {
        Ok(()) => c.ok("readable", "first and last 64 KiB read"),
        Err(e) => {
            c.bad(
                "readable",
                e.to_string(),
                "check permissions and the device's health",
            );
            return;
        }
    }
    match source
        .extents()
        .and_then(|it| it.collect::<mover::Result<Vec<_>>>())
    {
        Ok(extents) => {
            let zero: u64 = extents
                .iter()
                .filter(|e| e.kind == ExtentKind::Zero)
                .map(|e| e.len)
                .sum();
            c.ok(
                "allocation",
                format!(
                    "{} of data or unknown, {} known zero (never read) in {} extents",
                    bytes(len - zero),
                    bytes(zero),
                    extents.len()
                ),
            );
        }
        Err(e) => c.bad(
            "allocation",
            e.to_string(),
            "the allocation map cannot be read; a backup will read every byte",
        ),
    }
    let start = Instant::now();
    let (mut off, mut read) = (0u64, 0u64);
    let mut buf = vec![0; 4 << 20];
    while start.elapsed() < read_for && off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        if let Err(e) = source.read_at(off, &mut buf[..n]) {
            c.bad(
                "throughput",
                format!("read failed at {off}: {e}"),
                "check the device's health",
            );
            return;
        }
        off += n as u64;
        read += n as u64;
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    c.ok(
        "throughput",
        format!(
            "{:.0} MB/s sequential, one reader ({} in {secs:.1} s; page cache counts)",
            read as f64 / secs / 1e6,
            bytes(read)
        ),
    );
}

/// Checks a repository: that it opens, that a probe object can be written, read and deleted,
/// its snapshots and index, and (for a local one) the free space.
pub fn check_repository(
    location: &str,
    backend: Arc<dyn Backend>,
    options: RepositoryOptions,
    local_dir: Option<&std::path::Path>,
) -> Vec<Check> {
    let mut c = Checks {
        subject: format!("repository {location}"),
        out: Vec::new(),
    };
    let repo = match Repository::open(backend.clone(), options) {
        Ok(r) => {
            let sealing = match r.config().encryption {
                Some(aead) => format!("encrypted with {}", aead.name()),
                None => "not encrypted".to_string(),
            };
            c.ok(
                "reachable",
                format!(
                    "repository id {}, {sealing}",
                    chunker::hex::encode(&r.config().id[..6])
                ),
            );
            r
        }
        Err(e) => {
            let fix = match e {
                targets::Error::ConfigDamaged { .. } => {
                    "run `mover repair config`, which writes a new config from what the \
                     repository holds"
                }
                _ => "check the location and credentials; create it with `mover init`",
            };
            c.bad("reachable", e.to_string(), fix);
            return c.out;
        }
    };
    for w in repo.warnings() {
        c.bad(
            "index",
            w.clone(),
            "run `mover verify` to see which snapshots are affected",
        );
    }
    check_writable(&*backend, &mut c);
    check_locks(&repo, &mut c);
    match repo.snapshot_ids() {
        Ok(ids) => {
            let damaged = ids
                .iter()
                .filter(|id| repo.load_snapshot(id).is_err())
                .count();
            if damaged == 0 {
                c.ok(
                    "snapshots",
                    format!(
                        "{} snapshots, {} chunks indexed",
                        ids.len(),
                        repo.chunk_count()
                    ),
                );
            } else {
                c.bad(
                    "snapshots",
                    format!(
                        "{damaged} of {} snapshot manifests cannot be read",
                        ids.len()
                    ),
                    "run `mover verify` for details",
                );
            }
        }
        Err(e) => c.bad(
            "snapshots",
            e.to_string(),
            "check read access to the repository",
        ),
    }
    check_pending_gc(&*backend, &mut c);
    check_temporaries(&*backend, &mut c);
    match targets::gc::damaged_marks(&*backend) {
        Ok(marks) if !marks.is_empty() => c.bad(
            "damaged snapshots",
            format!("{} snapshots are marked damaged", marks.len()),
            "`mover snapshots` shows them; restore what you can, then `mover forget` them",
        ),
        Ok(_) => {}
        Err(e) => c.bad(
            "damaged snapshots",
            e.to_string(),
            "check read access to the repository",
        ),
    }
    if let Some(dir) = local_dir {
        match mover::sys::free_space(dir) {
            Ok(free) if free < 1 << 30 => c.bad(
                "free space",
                format!("{} free", bytes(free)),
                "free space or move the repository: a backup needs room for its new chunks",
            ),
            Ok(free) => c.ok("free space", format!("{} free", bytes(free))),
            Err(e) => c.ok("free space", format!("unknown ({e})")),
        }
    }
    c.out
}

/// Writes, reads back and deletes a probe object.
/// In a repository with Object Lock: how much is locked (issue 18).
fn check_locks(repo: &Repository, c: &mut Checks) {
    match targets::lock_coverage(repo) {
        Ok(cov) => match crate::human::lock_line(&cov) {
            Some(line) if cov.exposed == 0 => c.ok("lock", line),
            Some(line) => c.bad(
                "lock",
                line,
                "run a backup: it extends the locks of the packs it reuses",
            ),
            None => {}
        },
        Err(e) => c.bad(
            "lock",
            e.to_string(),
            "check that the credentials may read object retention (s3:GetObjectRetention)",
        ),
    }
}

fn check_writable(backend: &dyn Backend, c: &mut Checks) {
    let key = format!(
        "probe/doctor-{}",
        chunker::hex::encode(&targets::random_bytes::<8>())
    );
    let wrote = backend
        .put(&key, b"mover doctor")
        .and_then(|()| backend.get(&key))
        .and_then(|got| match got == b"mover doctor" {
            true => Ok(()),
            false => Err(targets::Error::Corrupt {
                what: key.clone(),
                detail: "read back other bytes than written".into(),
            }),
        });
    let _ = backend.delete(&key);
    match wrote {
        Ok(()) => c.ok(
            "writable",
            "a probe object was written, read back and deleted",
        ),
        Err(e) => c.bad(
            "writable",
            e.to_string(),
            "give this user write access (S3: PutObject, GetObject, DeleteObject)",
        ),
    }
}

/// Temporary files of killed writes (a backup killed while it wrote a pack leaves one of up
/// to a pack's size), reported against gc's default grace period.
fn check_temporaries(backend: &dyn Backend, c: &mut Checks) {
    let grace_ms = targets::gc::GcOptions::default().grace_ms;
    match targets::gc::temporaries(backend, grace_ms) {
        Ok(t) if t.stale.is_empty() => c.ok(
            "temporary files",
            t.describe(grace_ms).unwrap_or_else(|| "none".to_string()),
        ),
        Ok(t) => c.bad(
            "temporary files",
            format!(
                "{} temporary files of killed writes hold {}",
                t.stale.len(),
                bytes(t.stale_bytes())
            ),
            "run `mover gc`, which removes temporary files older than its grace period",
        ),
        Err(e) => c.bad(
            "temporary files",
            e.to_string(),
            "check read access to the repository",
        ),
    }
}

/// What garbage collection has pending: condemned packs waiting for their grace period.
fn check_pending_gc(backend: &dyn Backend, c: &mut Checks) {
    match targets::gc::load_tombstones(backend) {
        Ok(t) => {
            if let Some(e) = t.newer {
                c.bad(
                    "garbage collection",
                    e.to_string(),
                    "upgrade mover: a newer version collects garbage in this repository",
                );
            } else if !t.damaged.is_empty() {
                c.bad(
                    "garbage collection",
                    format!("{} damaged tombstones", t.damaged.len()),
                    "run `mover gc`, which removes them (they condemn nothing)",
                );
            } else {
                let now = targets::now_ms();
                let pending: Vec<_> = t.ok.iter().filter(|t| now < t.due_ms()).collect();
                let packs: usize = pending.iter().map(|t| t.packs.len()).sum();
                c.ok(
                    "garbage collection",
                    match pending.iter().map(|t| t.due_ms()).min() {
                        Some(due) => format!(
                            "{packs} condemned packs wait for their grace period (the first may \
                             be deleted {} s from now)",
                            (due - now).max(0) / 1000
                        ),
                        None => "nothing pending".to_string(),
                    },
                );
            }
        }
        Err(e) => c.bad(
            "garbage collection",
            e.to_string(),
            "check read access to the repository",
        ),
    }
}

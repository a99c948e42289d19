//! A backup job, the whole of `mover backup`: the snapshot point between its hooks, the
//! sources opened and their change maps read, the pipeline run into a repository or onto a
//! tape-style archive, the archive chain's catalog updated, and the post-backup hook told the
//! outcome.
//!
//! # Order
//!
//! 1. The parent is found (a repository snapshot, or the last archive of `--catalog`); a
//!    missing one makes a full backup with a warning.
//! 2. The pre-snapshot hook (freeze, take the snapshot); then every source is opened and its
//!    change map read; then the post-snapshot hook (thaw), which runs whenever the pre hook ran,
//!    with `MOVER_STATUS` saying whether the sources opened.
//! 3. The pipeline; an archive that fails is removed (files this run created).
//! 4. The catalog is saved only after the archive is sealed.
//! 5. The post-backup hook runs with the outcome, whatever it is; its failure is one more
//!    warning of a committed backup.

use std::path::PathBuf;
use std::sync::Arc;

use chunker::crypto::{Aead, KdfParams, Password};
use chunker::format::{Attachment, Manifest, ObjectId, MAX_ATTACHMENT};
use targets::archive::{ArchiveKey, ArchiveSummary};
use targets::Repository;

use crate::archive::{write_archive, ArchiveFormat, Catalog, CatalogArchive};
use crate::nbd::is_nbd;
use crate::{
    BackupOptions, BackupReport, ChangeMap, DiskInput, DiskJob, Error, FileSource, Hook,
    NbdOptions, NbdSource, Progress, Result, Source, SourceKind,
};

/// One disk of a backup request.
#[derive(Clone, Debug)]
pub struct DiskRequest {
    /// The disk's name in the snapshot.
    pub name: String,
    /// The source: a path, `-` (stdin), or an NBD URI.
    pub source: String,
    /// A VMware-style changed-extent list for this disk: (file name, its text).
    pub changed_extents: Option<(String, String)>,
}

/// The three hooks of a backup.
#[derive(Clone, Debug, Default)]
pub struct BackupHooks {
    /// Before the sources are opened (freeze, take a snapshot).
    pub pre_snapshot: Option<Hook>,
    /// After they are opened (thaw).
    pub post_snapshot: Option<Hook>,
    /// After the backup, with its outcome.
    pub post_backup: Option<Hook>,
}

/// Where a backup goes.
pub enum BackupDestination<'a> {
    /// A repository, opened by the caller. The snapshot's file catalog is written there too.
    Repository(&'a Arc<Repository>),
    /// A tape-style archive.
    Archive {
        /// A path, a device, or `-` (stdout).
        path: String,
        /// How it is written.
        format: ArchiveFormat,
        /// The chain's catalog file (`--catalog`), for incrementals.
        catalog: Option<PathBuf>,
        /// The password: of the chain (an incremental of an encrypted chain) or for a new
        /// encrypted archive.
        password: Option<Password>,
    },
}

/// Everything `mover backup` needs, validated by the caller's argument parsing.
pub struct BackupRequest<'a> {
    /// The snapshot's name.
    pub name: String,
    /// The disks, in order; at least one.
    pub disks: Vec<DiskRequest>,
    /// The QEMU dirty bitmap of the NBD disks (an incremental reads only what it marks).
    pub bitmap: Option<String>,
    /// The change token recorded for the next incremental (default: the bitmap's name).
    pub change_id: Option<String>,
    /// The parent: `latest` or a snapshot id (prefix); on an archive, `latest` of the catalog.
    pub parent: Option<String>,
    /// Pipeline settings; `name` and `parent` are filled in by the job.
    pub options: BackupOptions,
    /// The hooks.
    pub hooks: BackupHooks,
    /// `MOVER_REPO` for the hooks.
    pub repository: String,
    /// Where the snapshot goes.
    pub destination: BackupDestination<'a>,
}

/// What was written to an archive.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ArchiveWritten {
    /// The archive's id (hex).
    pub id: String,
    /// Volumes written.
    pub volumes: u32,
    /// Bytes written, framing included.
    pub bytes_written: u64,
    /// Chunks written.
    pub chunks: u64,
    /// Bytes of stored (compressed) chunk data.
    pub stored_bytes: u64,
    /// The ids (hex) of the chain's earlier archives this one builds on.
    pub parents: Vec<String>,
}

impl ArchiveWritten {
    fn new(summary: &ArchiveSummary, parents: Vec<String>) -> Self {
        ArchiveWritten {
            id: summary.id.to_hex(),
            volumes: summary.volumes,
            bytes_written: summary.bytes_written,
            chunks: summary.chunks,
            stored_bytes: summary.stored_bytes,
            parents,
        }
    }
}

/// What a committed backup did.
#[derive(Clone, Debug)]
pub struct BackupOutcome {
    /// The pipeline's report; its warnings include the job's own (a missing parent, a hook
    /// that failed after the data was read).
    pub report: BackupReport,
    /// For a backup onto an archive: what was written.
    pub archive: Option<ArchiveWritten>,
}

/// Runs a backup job (see the module's order). A backup that fails commits nothing, unless
/// the error says that the commit's outcome is unknown.
pub fn run_backup(mut req: BackupRequest<'_>, progress: &Progress) -> Result<BackupOutcome> {
    let label = req
        .disks
        .iter()
        .map(|d| d.source.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let env = vec![
        ("MOVER_SOURCE", label.clone()),
        ("MOVER_NAME", req.name.clone()),
        ("MOVER_REPO", req.repository.clone()),
    ];
    let mut outcome = run_job(&mut req, &env, &label, progress);
    if let Some(post) = &req.hooks.post_backup {
        post_backup(post, env, &mut outcome);
    }
    outcome
}

/// Runs the post-backup hook with the outcome in its environment.
fn post_backup(
    post: &Hook,
    mut env: Vec<(&'static str, String)>,
    outcome: &mut Result<BackupOutcome>,
) {
    let (status, code) = match &*outcome {
        Ok(o) if o.report.warnings.is_empty() => ("success", 0),
        Ok(_) => ("warnings", 3),
        Err(e) if e.is_interrupted() => ("interrupted", 130),
        Err(e) if e.is_usage() => ("usage-error", 2),
        Err(e) => {
            env.push(("MOVER_ERROR", crate::error::one_line(e)));
            ("failed", 1)
        }
    };
    env.push(("MOVER_STATUS", status.into()));
    env.push(("MOVER_EXIT_CODE", code.to_string()));
    if let Ok(o) = &*outcome {
        let (r, s) = (&o.report, &o.report.manifest.stats);
        env.push(("MOVER_SNAPSHOT_ID", r.snapshot.to_hex()));
        env.push(("MOVER_SOURCE_BYTES", r.manifest.total_len().to_string()));
        env.push(("MOVER_BYTES_READ", s.bytes_read.to_string()));
        env.push(("MOVER_BYTES_NEW", s.bytes_new.to_string()));
        env.push(("MOVER_BYTES_STORED", s.bytes_stored.to_string()));
    }
    if let Err(e) = post.run(&env) {
        match outcome {
            Ok(o) => o.report.warnings.push(e.to_string()),
            Err(_) => tracing::warn!("{e}"),
        }
    }
}

/// An opened source of one disk.
enum Opened {
    Image(FileSource),
    Nbd(NbdSource),
    Stream(std::fs::File),
}

impl Opened {
    /// The source for positional reads after the backup (none for a stream).
    fn into_source(self) -> Option<Arc<dyn Source>> {
        match self {
            Opened::Image(f) => Some(Arc::new(f)),
            Opened::Nbd(n) => Some(Arc::new(n)),
            Opened::Stream(_) => None,
        }
    }

    fn len(&self) -> u64 {
        match self {
            Opened::Image(f) => f.len(),
            Opened::Nbd(n) => n.len(),
            Opened::Stream(_) => 0,
        }
    }
}

/// The parent and, on an archive, the chain it extends.
struct Parent {
    found: Option<(ObjectId, Manifest)>,
    catalog: Option<(PathBuf, Catalog)>,
    chain_key: Option<ArchiveKey>,
}

fn run_job(
    req: &mut BackupRequest<'_>,
    env: &[(&'static str, String)],
    label: &str,
    progress: &Progress,
) -> Result<BackupOutcome> {
    let mut warnings = Vec::new();
    let parent = find_parent(req, &mut warnings)?;
    let failed = |e: Error| e.failed(format!("backup of {label}"), "nothing was committed");
    if let Some(pre) = &req.hooks.pre_snapshot {
        if let Err(e) = pre.run(env) {
            post_snapshot(req, env, false, &mut warnings);
            return Err(failed(e));
        }
    }
    let opened = open_sources(req, parent.found.is_some());
    post_snapshot(req, env, opened.is_ok(), &mut warnings);
    let (mut opened, mut changes) = opened.map_err(failed)?;
    let disks: Vec<(String, u64)> = req
        .disks
        .iter()
        .zip(&opened)
        .map(|(d, o)| (d.name.clone(), o.len()))
        .collect();
    let token = req.change_id.clone().or_else(|| req.bitmap.clone());
    let mut jobs = Vec::with_capacity(req.disks.len());
    for (d, disk) in req.disks.iter().zip(opened.iter_mut()) {
        let input = match disk {
            Opened::Image(f) => DiskInput::Image(f),
            Opened::Nbd(n) => DiskInput::Image(n),
            Opened::Stream(f) => {
                let f = f.try_clone().map_err(|e| {
                    failed(Error::Source {
                        path: d.source.clone(),
                        source: e,
                    })
                })?;
                DiskInput::Stream(Box::new(f))
            }
        };
        jobs.push(DiskJob {
            name: d.name.clone(),
            label: d.source.clone(),
            input,
            changes: changes.remove(0),
            change_token: token.clone().unwrap_or_default(),
        });
    }
    req.options.name = req.name.clone();
    let incremental = parent.found.is_some();
    req.options.parent = parent.found;
    let (mut report, archive) = match &req.destination {
        BackupDestination::Repository(repo) => {
            let report = crate::backup(&***repo, jobs, &req.options, progress).map_err(failed)?;
            // After the commit, and never failing the backup: `find` reads the disks of a
            // snapshot without a catalog.
            crate::files::write_catalog(
                repo,
                report.snapshot,
                &report.manifest,
                req.options.threads,
                opened.into_iter().map(Opened::into_source).collect(),
                req.options.parent.as_ref(),
            );
            (report, None)
        }
        BackupDestination::Archive {
            path,
            format,
            password,
            ..
        } => {
            let key = archive_key(format, parent.chain_key, incremental, password.as_ref())?;
            let (known, parents) = match (&parent.catalog, incremental) {
                (Some((p, c)), true) => (c.chunks(p)?, c.ids()),
                _ => (Vec::new(), Vec::new()),
            };
            let parent_ids = parents.iter().map(|p| p.to_hex()).collect();
            let header =
                crate::archive::header_for(&disks, req.options.chunk_size, parents, &req.name);
            let (report, summary, written) =
                write_archive(path, format, header, known, key.clone(), |target| {
                    crate::backup(target, jobs, &req.options, progress)
                })
                .map_err(failed)?;
            if let Some((path, mut c)) = parent.catalog {
                let entry = CatalogArchive {
                    id: summary.id.to_hex(),
                    created_ms: report.manifest.created_ms,
                    chunks: written.iter().map(|id| id.to_hex()).collect(),
                };
                if !incremental {
                    c.chain.clear();
                }
                c.version = 1;
                c.chain.push(entry);
                c.set_manifest(&report.manifest, key.as_ref());
                c.save(&path)?;
            }
            (report, Some(ArchiveWritten::new(&summary, parent_ids)))
        }
    };
    warnings.append(&mut report.warnings);
    report.warnings = warnings;
    Ok(BackupOutcome { report, archive })
}

/// Finds the parent snapshot; a missing one means a full backup with a warning.
fn find_parent(req: &BackupRequest<'_>, warnings: &mut Vec<String>) -> Result<Parent> {
    let mut parent = Parent {
        found: None,
        catalog: None,
        chain_key: None,
    };
    match &req.destination {
        BackupDestination::Repository(repo) => {
            let Some(spec) = &req.parent else {
                return Ok(parent);
            };
            let latest = spec.eq_ignore_ascii_case("latest");
            parent.found = match repo.find_snapshot(spec, latest.then_some(req.name.as_str())) {
                Ok(found) => Some(found),
                Err(targets::Error::NotFound { what }) => {
                    warnings.push(format!(
                        "{what} not found; this backup reads everything (a full backup)"
                    ));
                    None
                }
                Err(e) if e.is_damage() => {
                    warnings.push(format!(
                        "parent {spec} cannot be read ({e}); this backup reads everything"
                    ));
                    None
                }
                Err(e) => return Err(e.into()),
            };
        }
        BackupDestination::Archive {
            catalog, password, ..
        } => {
            if let Some(path) = catalog {
                parent.catalog = Some((path.clone(), Catalog::load(path)?));
            }
            let Some(spec) = &req.parent else {
                return Ok(parent);
            };
            let Some((path, c)) = &parent.catalog else {
                return Err(Error::Usage(
                    "--parent with --to-archive needs --catalog FILE (the chain of archives)"
                        .into(),
                ));
            };
            if !spec.eq_ignore_ascii_case("latest") {
                return Err(Error::Usage(
                    "with --to-archive, --parent takes latest: the last archive of --catalog"
                        .into(),
                ));
            }
            if !c.chain.is_empty() {
                // An incremental of an encrypted chain uses the chain's key.
                parent.chain_key = c.chain_key(path, password.as_ref())?;
            }
            parent.found = c.parent(path, parent.chain_key.as_ref())?;
            if parent.found.is_none() {
                warnings.push(format!(
                    "catalog {} holds no archive yet; this archive is a full one",
                    path.display()
                ));
            }
        }
    }
    Ok(parent)
}

/// The key of the archive being written: the chain's for an incremental, a new one for a
/// new encrypted archive.
fn archive_key(
    format: &ArchiveFormat,
    chain_key: Option<ArchiveKey>,
    incremental: bool,
    password: Option<&Password>,
) -> Result<Option<ArchiveKey>> {
    match chain_key {
        Some(k) if format.cipher.is_some_and(|c| c != k.keys.aead()) => Err(Error::Usage(format!(
            "the archive chain of --catalog is encrypted with {}; an incremental uses its chain's cipher: leave out --cipher, or start a new chain with a full archive (no --parent)",
            k.keys.aead().name()
        ))),
        Some(k) => Ok(Some(k)),
        None if incremental && format.encrypt => Err(Error::Usage(
            "the archive chain of --catalog is not encrypted; an incremental uses its chain's key: start a new, encrypted chain with a full archive (no --parent)".into(),
        )),
        None if format.encrypt => {
            let Some(password) = password else {
                return Err(Error::Usage(
                    "the archive needs a password: set MOVER_PASSWORD or give --password-file FILE"
                        .into(),
                ));
            };
            Ok(Some(ArchiveKey::new(
                password,
                KdfParams::default(),
                format.cipher.unwrap_or_else(Aead::preferred),
            )?))
        }
        None => Ok(None),
    }
}

/// Runs the post-snapshot hook, if any; its failure is a warning (the data was read).
fn post_snapshot(
    req: &BackupRequest<'_>,
    env: &[(&'static str, String)],
    ok: bool,
    warnings: &mut Vec<String>,
) {
    if let Some(post) = &req.hooks.post_snapshot {
        let mut env = env.to_vec();
        env.push(("MOVER_STATUS", if ok { "ok" } else { "failed" }.into()));
        if let Err(e) = post.run(&env) {
            warnings.push(e.to_string());
        }
    }
}

/// Opens every source and reads its change map.
fn open_sources(
    req: &mut BackupRequest<'_>,
    has_parent: bool,
) -> Result<(Vec<Opened>, Vec<ChangeMap>)> {
    let mut opened = Vec::with_capacity(req.disks.len());
    let mut changes = Vec::with_capacity(req.disks.len());
    for d in &mut req.disks {
        // Without a parent a bitmap has nothing to be relative to: do not ask for it. In a
        // group, the bitmap applies to the NBD disks; the others use their change list or
        // compare mode.
        let bitmap = req
            .bitmap
            .as_deref()
            .filter(|_| has_parent && is_nbd(&d.source));
        let disk = open_disk(&d.source, bitmap)?;
        let mut change = ChangeMap::Unknown;
        if let (Opened::Nbd(n), Some(_)) = (&disk, bitmap) {
            change = ChangeMap::Changed(n.dirty_extents()?);
        }
        if let Some((file, text)) = d.changed_extents.take() {
            if let Opened::Stream(_) = disk {
                return Err(Error::Usage(format!(
                    "--changed-extents cannot apply to {}, a stream; it needs an image, device or NBD source",
                    d.source
                )));
            }
            if has_parent {
                change =
                    ChangeMap::Changed(crate::parse_disk_change_info(&text, disk.len(), &file)?);
            }
        }
        opened.push(disk);
        changes.push(change);
    }
    Ok((opened, changes))
}

fn open_disk(src: &str, bitmap: Option<&str>) -> Result<Opened> {
    if is_nbd(src) {
        let opts = NbdOptions {
            bitmap: bitmap.map(str::to_string),
            ..Default::default()
        };
        return Ok(Opened::Nbd(NbdSource::connect(src, &opts)?));
    }
    if src == "-" {
        return Ok(Opened::Stream(crate::source::stdin_file()?));
    }
    let source = FileSource::open(src)?;
    Ok(match source.kind() {
        SourceKind::Stream => Opened::Stream(source.into_file()),
        _ => Opened::Image(source),
    })
}

/// Reads the files to attach to a snapshot (`--attach`), each at most
/// [`MAX_ATTACHMENT`] bytes, with unique file names.
pub fn read_attachments(paths: &[String]) -> Result<Vec<Attachment>> {
    let mut out: Vec<Attachment> = Vec::new();
    for path in paths {
        let p = std::path::Path::new(path);
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Usage(format!("--attach {path}: not a file name")))?;
        let unreadable = |e| Error::Attachment {
            path: path.clone(),
            source: e,
        };
        let too_large = |len: String| {
            Error::Usage(format!(
                "--attach {path}: {len} is too large for an attachment (at most 16 MiB); back it up as a disk"
            ))
        };
        let len = std::fs::metadata(p).map_err(unreadable)?.len();
        if len > MAX_ATTACHMENT as u64 {
            return Err(too_large(format!("{len} bytes")));
        }
        if out.iter().any(|x| x.name == name) {
            return Err(Error::Usage(format!(
                "--attach: two attachments are named {name}"
            )));
        }
        // The size a device or FIFO reports says nothing: the limit holds on what is read.
        let Some(data) =
            crate::sys::read_file_to_limit(path, MAX_ATTACHMENT as u64).map_err(unreadable)?
        else {
            return Err(too_large("what it gives".into()));
        };
        out.push(Attachment { name, data });
    }
    Ok(out)
}

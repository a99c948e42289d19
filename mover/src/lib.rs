//! `mover`: sources, the backup and restore pipelines, verify, and the thin binary on top.
//!
//! - [`Source`] / [`FileSource`]: raw images and block devices, read positionally by many
//!   threads, with holes found by `SEEK_DATA`/`SEEK_HOLE` and never read.
//! - [`backup`] (with [`backup_image`] and [`backup_stream`] for one disk): the pipeline that chunks, hashes, deduplicates,
//!   compresses and packs a source into a [`targets::Repository`], then commits a snapshot.
//! - [`restore`]: the parallel, verifying restore to a sparse file, a device or a stream.
//! - [`verify`]: checks that snapshots restore, without writing anything.
//! - [`list_files`], [`cat_file`], [`extract_files`], [`find_files`]: files inside the disks
//!   of a snapshot (partitions, ext2/3/4, FAT), read without restoring the disk.
//! - [`SnapshotReader`]: random access to one disk of a snapshot through a shared chunk cache,
//!   with readahead for sequential readers (what NBD serving reads through).
//! - [`serve`]: a snapshot as NBD exports, one per disk, read-only.
//! - [`report`]: what each command prints with `--json`, built from the reports above.
//!
//! ```no_run
//! use std::sync::Arc;
//! use mover::{backup_image, BackupOptions, FileSource, Progress};
//! use targets::{LocalBackend, Repository, RepositoryOptions};
//!
//! let backend = Arc::new(LocalBackend::new("/srv/backup/repo"));
//! let repo = Repository::open(backend, RepositoryOptions::default())?;
//! let source = FileSource::open("/var/lib/images/vm1.img")?;
//! let opts = BackupOptions {
//!     name: "vm1".into(),
//!     chunk_size: chunker::DEFAULT_CHUNK_SIZE,
//!     level: 3,
//!     threads: 2,
//!     memory: 256 << 20,
//!     parent: None,
//!     verify_changes: 0,
//!     attachments: Vec::new(),
//! };
//! let report = backup_image(&repo, &source, "/var/lib/images/vm1.img", &opts, &Progress::default())?;
//! println!("snapshot {}", report.snapshot.to_hex());
//! # Ok::<(), mover::Error>(())
//! ```

pub mod archive;
mod backup;
pub mod benchmark;
mod changes;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
mod error;
mod files;
pub mod forget;
mod hooks;
mod job;
mod nbd;
mod pipeline;
mod progress;
mod reader;
pub mod report;
mod restore;
mod serve;
mod source;
pub mod sys;
mod verify;

pub use archive::ArchiveFormat;
pub use backup::{
    backup, backup_image, backup_stream, BackupOptions, BackupReport, BackupTarget, ChangeMap,
    DiskInput, DiskJob,
};
pub use changes::{merge as merge_ranges, parse_disk_change_info};
pub use error::{one_line, Error, Result};
pub use files::{
    cat_file, extract_files, find_files, list_files, write_catalog, CatRequest, ExtractReport,
    ExtractRequest, FileEntry, FileKind, FindHit, FindReport, FindRequest, LsReport, LsRequest,
    CATALOG_MAX_ENTRIES,
};
pub use hooks::Hook;
pub use job::{
    read_attachments, run_backup, ArchiveWritten, BackupDestination, BackupHooks, BackupOutcome,
    BackupRequest, DiskRequest,
};
pub use nbd::{is_nbd, NbdOptions, NbdSource};
pub use pipeline::default_threads;
pub use progress::Progress;
pub use reader::{ReaderOptions, ReaderStats, Run, SnapshotReader, LOCAL_FETCH_BYTES};
pub use restore::{
    create_destination, restore, restore_delta, restore_snapshot, save_attachment, DeltaRequest,
    DeltaTarget, Destination, FileDelta, RestoreOptions, RestoreReport, RestoreRequest,
    LOCAL_TASK_BYTES, REMOTE_TASK_BYTES,
};
pub use serve::{serve, ExportStats, Listen, ServeRequest, ServedExport, Serving};
pub use source::{FileSource, Source, SourceKind};
pub use verify::{verify, verify_repository, SnapshotCheck, Subset, VerifyReport, VerifyRequest};

/// Default zstd level: level 3 measured the best stored-bytes for the time on mixed VM images
/// (see `bench/results/`).
pub const DEFAULT_LEVEL: i32 = 3;
/// Default memory budget for data in flight.
pub const DEFAULT_MEMORY: u64 = 256 << 20;

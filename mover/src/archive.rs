//! Tape-style archives in the pipeline: [`ArchiveTarget`] takes a backup's chunks in source
//! order and writes them, with map frames that say where each chunk goes, so that
//! [`restore_archive`] can put the image back together in one sequential read, as frames
//! arrive, without a repository. Also: loading an archive into a repository, writing one from
//! a repository snapshot, and the catalog file of incremental archive chains.
//!
//! # Map frames (mover's use of the format's opaque map payload, `docs/ARCHIVE.md`)
//!
//! Before each chunk frame the target writes a map frame holding the entries placed since the
//! last one: version u8 (1), entry count u32, then per entry disk u32, index u64, offset u64,
//! length u32, kind u8 (0 zero, 1 data) and chunk id (32; zero for kind 0) — 57 bytes. A data
//! entry's chunk is either the next chunk frame, a chunk earlier in this archive, or (for an
//! incremental) one held by an earlier archive of the chain.

mod catalog;
mod io;
mod map;
mod restore;
mod spool;
mod target;
mod transfer;
mod write;

pub use catalog::{Catalog, CatalogArchive};
pub use io::{header_for, open_input, open_sink};
pub use restore::{restore_archive, ArchiveInput, ArchiveRestoreOptions, ArchiveRestoreReport};
pub use target::ArchiveTarget;
pub use transfer::{
    export_archive, export_snapshot, import_archive, read_archive, read_archives, ArchiveListing,
    ExportReport, ExportRequest,
};
pub use write::{write_archive, ArchiveFormat};

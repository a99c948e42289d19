//! Where `mover`'s bytes go.
//!
//! - [`Backend`]: the object seam (whole immutable objects under keys), with
//!   [`LocalBackend`] for a directory and [`S3Backend`] for any S3-compatible store.
//! - [`ChunkStore`]: the content-addressed chunk seam the backup pipeline writes through.
//! - [`Repository`]: the repository layout on any backend (packs, index segments, snapshot
//!   manifests), which is a `ChunkStore` and commits snapshots durably.
//! - [`archive`]: tape-style archives ([`ArchiveWriter`], [`ArchiveReader`]), single-pass
//!   streams of checksummed frames for pipes, files and tape devices, in volumes.
//! - Test doubles, outside the default API: `FaultyBackend` (feature `testing`) fails chosen
//!   writes; the `conformance` module (feature `conformance`) checks any backend or store
//!   against the contracts.
//!
//! ```
//! use std::sync::Arc;
//! use chunker::{ChunkId, Encoder};
//! use targets::{ChunkStore, LocalBackend, Put, Repository, RepositoryOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let backend = Arc::new(LocalBackend::new(dir.path().join("repo")));
//! Repository::init(backend.clone()).unwrap();
//! let repo = Repository::open(backend, RepositoryOptions::default()).unwrap();
//! let data = b"hello".repeat(1000);
//! let id = ChunkId::of(&data);
//! assert_eq!(repo.put(&id, Encoder::new(3).encode(&data)).unwrap(), Put::Stored);
//! repo.flush().unwrap();
//! assert!(repo.has(&id).unwrap());
//! ```
#![deny(missing_docs)]

pub mod archive;
mod backend;
mod check;
pub mod compact;
mod config_repair;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod crypt;
mod error;
#[cfg(any(test, feature = "testing"))]
mod faulty;
pub mod gc;
mod idsort;
mod keys;
mod layout;
pub mod lock;
mod repair;
mod repo;
mod s3;
mod salvage;
mod store;
mod stored;
mod temporaries;
mod tombstones;

pub use archive::{ArchiveReader, ArchiveWriter};
pub use backend::{fsync_dir, Backend, LocalBackend, Temporary, DIRECT_IO_ALIGN};
pub use error::{Error, Result};
#[cfg(any(test, feature = "testing"))]
pub use faulty::FaultyBackend;
pub use idsort::{Record, Sorted, SortedIter, Sorter};
pub use keys::KeyInfo;
pub use layout::{catalog_key, now_ms, pack_key, random_bytes};
pub use lock::{lock_coverage, LockCoverage};
pub use repo::{Repository, RepositoryOptions};
pub use s3::{parse_s3_url, S3Backend, S3Options};
pub use store::{ChunkStore, ChunkStoreExt, Put};

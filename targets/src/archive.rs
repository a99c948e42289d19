//! Tape-style archives: a self-describing, single-pass stream of checksummed frames that
//! needs no repository, can be written to anything sequential (a pipe, a file, a tape device
//! in fixed blocks) and is restored by one sequential read with no seeks (issue 4). The byte
//! format is documented in `docs/ARCHIVE.md`.
//!
//! # Shape
//!
//! The writer turns calls into a **logical stream** of frames: a header, chunk frames (and
//! optional map frames), the manifest, the catalog and a trailer. Each frame has a 64-byte
//! header with a magic, type, length, sequence number, logical position, archive tag and two
//! checksums. The stream is cut into **volumes**; each volume starts with a volume frame and is
//! written in fixed-size **records** (the last record of a volume padded with zeros).
//!
//! # Invariants
//!
//! - **A frame never spans two volumes.** When a volume ends, because the size limit is
//!   reached, the medium warns of its end, or a write fails with `ENOSPC`, every frame that is
//!   not wholly on the old volume is written again, whole, on the next one. A volume frame
//!   names the first frame that follows it, so a reader drops the partial copy at the end of
//!   the old volume without calling it damage.
//! - **Sequence numbers are dense.** A reader that sees frame `n + k` after frame `n` knows
//!   exactly which frames were lost; a frame with a number it has already seen is a re-sent
//!   copy and is skipped.
//! - **Nothing is trusted before its checksum.** A header is used only when its own checksum
//!   matches (so a damaged length never makes the reader allocate or skip wrongly), a payload
//!   only when its checksum matches, and a chunk only when its plaintext hashes to its id.
//!   After damage the reader scans byte by byte for the next header that checks out.
//! - **Frames of another archive are never mixed in.** Every header carries the first 8 bytes
//!   of the random archive id; while scanning, frames with another tag (an archive stored
//!   inside a chunk, say) are skipped.
//!
//! # Example
//!
//! ```
//! use chunker::{ChunkId, Encoder};
//! use targets::archive::{
//!     ArchiveHeader, ArchiveOptions, ArchiveReader, ArchiveWriter, Event, ReaderOptions,
//!     StreamSink,
//! };
//!
//! let mut out = Vec::new();
//! let options = ArchiveOptions { block_size: 64 * 1024, ..Default::default() };
//! let mut w = ArchiveWriter::new(StreamSink::new(&mut out, "memory"), &options,
//!     ArchiveHeader::new("mover test")).unwrap();
//! let data = b"hello".repeat(1000);
//! let id = ChunkId::of(&data);
//! assert!(w.put_chunk(&id, Encoder::new(3).encode(&data)).unwrap());
//! assert!(!w.put_chunk(&id, Encoder::new(3).encode(&data)).unwrap()); // deduplicated
//! let summary = w.finish(b"manifest bytes").unwrap();
//! assert_eq!(out.len(), 64 * 1024);
//!
//! let mut chunks = 0;
//! for event in ArchiveReader::new(&out[..], ReaderOptions::default()) {
//!     match event.unwrap() {
//!         Event::Chunk { id: got, data: bytes } => { assert_eq!((got, bytes), (id, data.clone())); chunks += 1 }
//!         Event::Manifest(m) => assert_eq!(m, b"manifest bytes"),
//!         Event::Trailer(t) => assert!(t.verified),
//!         Event::Damage(d) => panic!("{d}"),
//!         _ => {}
//!     }
//! }
//! assert_eq!((chunks, summary.chunks), (1, 1));
//! ```

mod frame;
mod reader;
mod volume;
mod writer;

use std::fmt;

pub use frame::{
    ARCHIVE_MAGIC, ARCHIVE_VERSION, ARCHIVE_VERSION_AES, ARCHIVE_VERSION_ENCRYPTED,
    FRAME_HEADER_LEN, MAX_PAYLOAD,
};
pub use reader::{ArchiveReader, Damage, Event, ReaderOptions, Trailer, VolumeInfo};
pub use volume::{
    EmulatedTape, FileVolumeSet, FileVolumes, StreamSink, VolumeSink, VolumeSource, Written,
};
pub use writer::{ArchiveOptions, ArchiveSummary, ArchiveWriter};

/// Smallest record (block) size: 64 KiB.
pub const MIN_BLOCK_SIZE: u32 = 64 * 1024;
/// Largest record (block) size: 4 MiB.
pub const MAX_BLOCK_SIZE: u32 = 4 * 1024 * 1024;
/// Default record (block) size: 256 KiB.
pub const DEFAULT_BLOCK_SIZE: u32 = 256 * 1024;

/// The random id of one archive (all its volumes share it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArchiveId(pub [u8; 16]);

impl ArchiveId {
    /// A fresh random id.
    pub fn random() -> Self {
        ArchiveId(crate::random_bytes())
    }

    /// Lower-case hex, 32 characters.
    pub fn to_hex(&self) -> String {
        chunker::hex::encode(&self.0)
    }

    /// Parses 32 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        chunker::hex::decode_array(s).map(ArchiveId)
    }

    /// The first 8 bytes, carried in every frame header.
    pub(crate) fn tag(&self) -> [u8; 8] {
        self.0[..8].try_into().expect("8 of 16 bytes")
    }
}

impl fmt::Display for ArchiveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ArchiveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArchiveId({})", self.to_hex())
    }
}

/// What encrypts an archive: the keys of its chain (one master key for a full archive and its
/// incrementals, so chunk ids stay comparable) and the key object that wraps that master key
/// with the password, recorded in the archive's header so that each archive opens alone.
#[derive(Clone, Debug)]
pub struct ArchiveKey {
    /// The keys derived from the chain's master key.
    pub keys: chunker::crypto::Keys,
    /// The master key wrapped with the password.
    pub key_file: chunker::crypto::KeyFile,
}

impl ArchiveKey {
    /// A fresh master key for a new chain sealed with `aead`, wrapped with `password` (runs
    /// Argon2id once).
    pub fn new(
        password: &chunker::crypto::Password,
        params: chunker::crypto::KdfParams,
        aead: chunker::crypto::Aead,
    ) -> crate::Result<Self> {
        let master = chunker::crypto::MasterKey::random();
        let key_file = chunker::crypto::KeyFile::wrap(&master, password, params, crate::now_ms())?;
        Ok(ArchiveKey {
            keys: chunker::crypto::Keys::derive(&master, aead),
            key_file,
        })
    }

    /// The key of a chain sealed with `aead`, from its key object (`location` names it in
    /// errors).
    pub fn open(
        key_file: &[u8],
        password: &chunker::crypto::Password,
        location: &str,
        aead: chunker::crypto::Aead,
    ) -> crate::Result<Self> {
        let key_file = chunker::crypto::KeyFile::decode(key_file)?;
        let master = key_file.unwrap_key(password).map_err(|e| match e {
            chunker::Error::WrongPassword => crate::Error::WrongPassword {
                location: location.to_string(),
            },
            e => e.into(),
        })?;
        Ok(ArchiveKey {
            keys: chunker::crypto::Keys::derive(&master, aead),
            key_file,
        })
    }
}

/// One disk of the source, as the caller describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    /// Name of the disk (e.g. `vda` or the source path).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// What the archive header records: who wrote the archive, when, from what, and which
/// archives it depends on. Informational for `ls`; restores use the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveHeader {
    /// The archive's id; every volume and frame carries it.
    pub id: ArchiveId,
    /// The writing tool and its version, e.g. `mover 0.1.0`.
    pub tool_version: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
    /// Fixed chunk size, or the FastCDC average size, of the source's chunks.
    pub chunk_size: u32,
    /// The disks of the source.
    pub disks: Vec<DiskInfo>,
    /// Archives this one depends on (an incremental's chain), oldest first.
    pub parents: Vec<ArchiveId>,
    /// Free-form key/value pairs (host, snapshot label, …).
    pub labels: Vec<(String, String)>,
}

impl ArchiveHeader {
    /// A header with a fresh random id, the current time and no source details.
    pub fn new(tool_version: impl Into<String>) -> Self {
        ArchiveHeader {
            id: ArchiveId::random(),
            tool_version: tool_version.into(),
            created_ms: crate::now_ms(),
            chunk_size: 0,
            disks: Vec::new(),
            parents: Vec::new(),
            labels: Vec::new(),
        }
    }
}

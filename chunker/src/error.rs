use crate::ChunkId;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in pure compute and decoding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A chunk's bytes do not hash to its id, or its frame cannot be decompressed.
    #[error("chunk {id} is corrupt: {detail}")]
    CorruptChunk {
        /// The id the chunk was stored under.
        id: ChunkId,
        /// What was wrong.
        detail: String,
    },
    /// A structure (manifest, pack trailer, index segment, config) failed to decode.
    #[error("{what} is corrupt: {detail}")]
    CorruptStructure {
        /// Which structure.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A structure carries a format version this build cannot read.
    #[error(
        "{what} has format version {found}, this mover reads up to {supported}; upgrade mover"
    )]
    UnsupportedVersion {
        /// Which structure.
        what: &'static str,
        /// Version found.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
    /// The password does not open the key object.
    #[error("wrong password")]
    WrongPassword,
    /// A sealed object failed authentication: it was tampered with or damaged.
    #[error("{what} failed authentication: it was tampered with or damaged")]
    Tampered {
        /// The object.
        what: String,
    },
    /// A chunk size outside the accepted range.
    #[error("chunk size {size} is not a power of two from 64 KiB to 16 MiB")]
    InvalidChunkSize {
        /// The rejected size.
        size: u64,
    },
    /// Reading the stream being chunked failed.
    #[error("reading the input stream failed: {0}")]
    Read(#[source] std::io::Error),
}

impl Error {
    pub(crate) fn structure(what: &'static str, detail: impl Into<String>) -> Self {
        Error::CorruptStructure {
            what,
            detail: detail.into(),
        }
    }
}

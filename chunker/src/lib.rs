//! The data model and pure compute of `mover`.
//!
//! This crate owns everything that can be computed without touching a disk or a network:
//!
//! - [`ChunkId`]: the BLAKE3-256 of a chunk's plaintext, the name every chunk is stored under.
//! - [`Extent`]: a region of a source and what is known about it (data, zero, unchanged).
//! - Chunking: fixed, aligned chunks for images ([`fixed_chunks`]) and FastCDC for streams of
//!   unknown shape ([`StreamChunker`]).
//! - The blob codec: [`Encoder`] compresses a chunk with zstd (or keeps it raw when it does not
//!   shrink) into a [`Frame`]; [`Decoder`] reverses it and checks the id.
//! - Encryption ([`crypto`]): the master key and its derived [`crypto::Keys`] (XChaCha20-Poly1305
//!   sealing, keyed chunk ids through [`IdKey`]), and the password-wrapped [`crypto::KeyFile`].
//! - The on-disk format ([`format`]): snapshot manifests, pack trailers, index segments and the
//!   repository config, each documented byte by byte there and in `docs/FORMAT.md`, all
//!   written with the one little-endian codec, [`le`]. Ids are written in [`hex`].
//!
//! No threads, no I/O beyond [`std::io::Read`] (and the operating system's random source, for
//! keys, salts and nonces).
//!
//! ```
//! use chunker::{ChunkId, Decoder, Encoder};
//!
//! let data = vec![7u8; 64 * 1024];
//! let id = ChunkId::of(&data);
//! let frame = Encoder::new(3).encode(&data);
//! assert!(frame.bytes.len() < data.len());
//! let back = Decoder::new().decode(&frame, &id).unwrap();
//! assert_eq!(back, data);
//! ```
#![deny(missing_docs)]

mod cdc;
mod codec;
pub mod crypto;
mod error;
mod extent;
pub mod format;
pub mod hex;
mod id;
pub mod le;

pub use cdc::{cdc_bounds, StreamChunker};
pub use codec::{is_zero, Compression, Decoder, Encoder, Frame};
pub use error::{Error, Result};
pub use extent::{fixed_chunks, ChunkSpan, Extent, ExtentKind};
pub use id::{ChunkId, IdHasher, IdKey};

/// Smallest fixed chunk size accepted (64 KiB).
pub const MIN_CHUNK_SIZE: u32 = 64 * 1024;
/// Largest fixed chunk size accepted (16 MiB).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Default fixed chunk size (1 MiB).
pub const DEFAULT_CHUNK_SIZE: u32 = 1024 * 1024;

/// Checks a fixed chunk size: a power of two from [`MIN_CHUNK_SIZE`] to [`MAX_CHUNK_SIZE`].
pub fn check_chunk_size(size: u64) -> Result<u32> {
    if size.is_power_of_two() && (MIN_CHUNK_SIZE as u64..=MAX_CHUNK_SIZE as u64).contains(&size) {
        Ok(size as u32)
    } else {
        Err(Error::InvalidChunkSize { size })
    }
}

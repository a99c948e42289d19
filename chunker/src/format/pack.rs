//! Packs: a header, frames back to back, and the trailer that lists them.

use super::{FORMAT_VERSION, PACK_MAGIC};
use crate::le::{Reader, Writer};
use crate::{ChunkId, Compression, Error, Result};

/// Where a chunk lives inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobEntry {
    /// The chunk.
    pub id: ChunkId,
    /// Offset of its stored bytes from the start of the pack.
    pub offset: u32,
    /// Stored (encoded) length.
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// Encoding of the stored bytes.
    pub compression: Compression,
}

/// Length of a pack's header: magic, version, reserved u32.
pub const PACK_HEADER_LEN: usize = 16;
/// Length of one blob entry in a pack trailer.
pub const PACK_ENTRY_LEN: usize = 48;
/// Length of a pack's footer.
pub const PACK_FOOTER_LEN: usize = 32;

/// The start of every pack.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | [`PACK_MAGIC`] |
/// | 8 | 4 | format version (1) |
/// | 12 | 4 | reserved, 0 |
pub fn pack_header() -> [u8; PACK_HEADER_LEN] {
    let mut w = Writer::with_capacity(PACK_HEADER_LEN);
    w.bytes(&PACK_MAGIC);
    w.u32(FORMAT_VERSION);
    w.zeros(4);
    w.into_vec().try_into().expect("16 bytes")
}

/// Appends the trailer that makes a pack self-describing: the blob entries, then the footer.
///
/// Entry (48 bytes): chunk id 32 | offset u32 | stored length u32 | raw length u32 |
/// compression u8 | reserved 3.
///
/// Footer (32 bytes): entry count u32 | reserved u32 | BLAKE3(entries)[..16] | [`PACK_MAGIC`].
pub fn write_pack_trailer(pack: &mut Vec<u8>, entries: &[BlobEntry]) {
    let start = pack.len();
    push_pack_entries(pack, entries);
    push_pack_footer(pack, start, entries.len() as u32, 0);
}

/// Appends the 48-byte entries of a pack trailer.
pub(super) fn push_pack_entries(out: &mut Vec<u8>, entries: &[BlobEntry]) {
    let mut w = Writer::from_vec(std::mem::take(out));
    w.as_mut_vec().reserve(entries.len() * PACK_ENTRY_LEN);
    for e in entries {
        w.bytes(e.id.as_bytes());
        w.u32(e.offset);
        w.u32(e.stored_len);
        w.u32(e.raw_len);
        w.u8(e.compression as u8);
        w.zeros(3);
    }
    *out = w.into_vec();
}

/// Appends a pack footer: `first` u32 (the entry count, or a sealed trailer's length) |
/// `flags` u32 | the first 16 bytes of BLAKE3 of `pack[start..]` | [`PACK_MAGIC`].
pub(super) fn push_pack_footer(pack: &mut Vec<u8>, start: usize, first: u32, flags: u32) {
    let sum = blake3::hash(&pack[start..]);
    let mut w = Writer::from_vec(std::mem::take(pack));
    w.u32(first);
    w.u32(flags);
    w.bytes(&sum.as_bytes()[..16]);
    w.bytes(&PACK_MAGIC);
    *pack = w.into_vec();
}

/// Reads the entry count from a pack's footer (its last [`PACK_FOOTER_LEN`] bytes).
pub fn pack_footer_count(footer: &[u8]) -> Result<u32> {
    const W: &str = "pack footer";
    if footer.len() != PACK_FOOTER_LEN || footer[24..] != PACK_MAGIC {
        return Err(Error::structure(W, "bad magic (truncated or not a pack)"));
    }
    Reader::new(W, footer).u32()
}

/// Decodes a pack trailer: `tail` is the entries followed by the footer.
pub fn read_pack_trailer(tail: &[u8]) -> Result<Vec<BlobEntry>> {
    const W: &str = "pack trailer";
    if tail.len() < PACK_FOOTER_LEN {
        return Err(Error::structure(W, "truncated"));
    }
    let (entries, footer) = tail.split_at(tail.len() - PACK_FOOTER_LEN);
    let count = pack_footer_count(footer)? as usize;
    if entries.len() != count * PACK_ENTRY_LEN {
        return Err(Error::structure(W, "entry count does not match"));
    }
    if blake3::hash(entries).as_bytes()[..16] != footer[8..24] {
        return Err(Error::structure(W, "checksum mismatch"));
    }
    decode_pack_entries(entries)
}

/// Decodes 48-byte pack entries back to back, without any checksum: for a trailer whose
/// checksum held, or to salvage the entries of one whose did not (each entry must then be
/// checked against the chunk it names before it is trusted).
pub fn decode_pack_entries(entries: &[u8]) -> Result<Vec<BlobEntry>> {
    const W: &str = "pack trailer";
    if !entries.len().is_multiple_of(PACK_ENTRY_LEN) {
        return Err(Error::structure(W, "entry length"));
    }
    let mut r = Reader::new(W, entries);
    let mut out = Vec::with_capacity(entries.len() / PACK_ENTRY_LEN);
    while r.remaining() > 0 {
        let id = ChunkId::from_bytes(r.array()?);
        let offset = r.u32()?;
        let stored_len = r.u32()?;
        let raw_len = r.u32()?;
        let compression =
            Compression::from_u8(r.u8()?).ok_or_else(|| r.error("unknown compression"))?;
        r.skip(3)?;
        out.push(BlobEntry {
            id,
            offset,
            stored_len,
            raw_len,
            compression,
        });
    }
    Ok(out)
}

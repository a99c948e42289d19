//! Index segments.

use super::pack::BlobEntry;
use super::{open, ObjectId, FORMAT_VERSION, INDEX_MAGIC};
use crate::le::Writer;
use crate::{ChunkId, Compression, Error, Result};

/// One index record: a chunk and the pack that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The pack.
    pub pack: ObjectId,
    /// The blob inside it.
    pub blob: BlobEntry,
}

/// An index segment of version 1 (read only since version 3; written here for tests of
/// that reading): which pack holds which chunk, in the order written.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | [`INDEX_MAGIC`] |
/// | 8 | 4 | format version (1) |
/// | 12 | 4 | entry count N |
/// | 16 | 80 × N | chunk id 32, pack id 32, offset u32, stored length u32, raw length u32, compression u8, reserved 3 |
/// | end − 32 | 32 | BLAKE3 of all preceding bytes |
pub fn encode_index_v1(entries: &[IndexEntry]) -> Vec<u8> {
    let mut o = Writer::with_capacity(16 + 80 * entries.len() + 32);
    o.bytes(&INDEX_MAGIC);
    o.u32(FORMAT_VERSION);
    o.u32(entries.len() as u32);
    for e in entries {
        o.bytes(e.blob.id.as_bytes());
        o.bytes(&e.pack.0);
        o.u32(e.blob.offset);
        o.u32(e.blob.stored_len);
        o.u32(e.blob.raw_len);
        o.u8(e.blob.compression as u8);
        o.bytes(&[0; 3]);
    }
    o.into_checksummed()
}

/// Decodes and checks an index segment of version 1.
pub(super) fn decode_index_v1(buf: &[u8]) -> Result<Vec<IndexEntry>> {
    const W: &str = "index segment";
    let (mut r, _) = open(W, buf, &INDEX_MAGIC, true, FORMAT_VERSION)?;
    let count = r.u32()? as usize;
    if r.remaining() != count * 80 {
        return Err(Error::structure(W, "entry count does not match the length"));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let id = ChunkId::from_bytes(r.array()?);
        let pack = ObjectId(r.array()?);
        let offset = r.u32()?;
        let stored_len = r.u32()?;
        let raw_len = r.u32()?;
        let compression = Compression::from_u8(r.u8()?)
            .ok_or_else(|| Error::structure(W, "unknown compression"))?;
        r.take(3)?;
        out.push(IndexEntry {
            pack,
            blob: BlobEntry {
                id,
                offset,
                stored_len,
                raw_len,
                compression,
            },
        });
    }
    Ok(out)
}

//! Sorted index segments (index segment version 3): entries sorted by chunk id behind a
//! fan-out table, packs named once in a pack table, and a filter, so a reader keeps only the
//! tables in memory and reads one bucket of entries per lookup (issue 17).
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | [`INDEX_MAGIC`] |
//! | 8 | 4 | version (3) |
//! | 12 | 4 | reserved, 0 |
//! | 16 | 49 × N | entries, sorted by chunk id: chunk id 32, pack number u32, offset u32, stored length u32, plaintext length u32, compression u8 |
//! | E = 16 + 49N | 32 × P | pack table: pack ids |
//! | E + 32P | 4 × 2^F | fan-out: entry i is the number of entries whose id's first F bits are ≤ i |
//! | … | 32 × M | filter: M blocks of eight u32 words (see [`BlockFilter`]) |
//! | end − 152 | 8 | entry count N |
//! | end − 144 | 4 | pack count P |
//! | end − 140 | 4 | filter block count M |
//! | end − 136 | 1 | fan-out bits F (8 to 24) |
//! | end − 135 | 7 | reserved, 0 |
//! | end − 128 | 32 | first chunk id (zero when N = 0) |
//! | end − 96 | 32 | last chunk id (zero when N = 0) |
//! | end − 64 | 32 | BLAKE3 of the bytes from E to end − 64 (the tables and the fields above) |
//! | end − 32 | 32 | BLAKE3 of all preceding bytes |

use std::collections::HashMap;

use super::filter::{BlockFilter, FILTER_BLOCK_LEN};
use super::index::IndexEntry;
use super::pack::BlobEntry;
use super::{ObjectId, INDEX_MAGIC};
use crate::le::{self, Reader};
use crate::{ChunkId, Compression, Error, Result};

/// Version of a sorted index segment.
pub const INDEX_VERSION_SORTED: u32 = 3;
/// Bytes of one entry of a sorted segment.
pub const SORTED_ENTRY_LEN: usize = 49;
/// Bytes before the first entry.
pub const SORTED_HEAD_LEN: usize = 16;
/// Bytes of the footer and checksums at the end.
pub const SORTED_TAIL_LEN: usize = 152;
const _: () = assert!(SORTED_TAIL_LEN == 8 + 4 + 4 + 1 + 7 + 32 + 32 + 32 + 32);
const W: &str = "sorted index segment";

/// Fan-out bits for `n` entries: about eight entries a bucket.
fn fanout_bits(n: u64) -> u8 {
    let mut bits = 8u8;
    while bits < 24 && (n >> bits) > 8 {
        bits += 1;
    }
    bits
}

/// The first `bits` bits of an id, as a number (the id's order).
fn prefix(id: &ChunkId, bits: u8) -> usize {
    let b = id.as_bytes();
    let top = (u32::from(b[0]) << 24) | (u32::from(b[1]) << 16) | (u32::from(b[2]) << 8);
    (top | u32::from(b[3])) as usize >> (32 - u32::from(bits))
}

/// Writes a sorted segment from entries given in id order (see the module docs).
#[derive(Debug)]
pub struct SegmentBuilder {
    buf: Vec<u8>,
    count: u64,
    packs: Vec<ObjectId>,
    pack_numbers: HashMap<ObjectId, u32>,
    first: Option<ChunkId>,
    last: Option<(ChunkId, ObjectId)>,
}

impl SegmentBuilder {
    /// A builder expecting about `entries` entries.
    pub fn new(entries: usize) -> Self {
        let mut buf = Vec::with_capacity(SORTED_HEAD_LEN + entries * SORTED_ENTRY_LEN);
        buf.extend_from_slice(&INDEX_MAGIC);
        le::push(&mut buf, INDEX_VERSION_SORTED);
        buf.extend_from_slice(&[0; 4]);
        SegmentBuilder {
            buf,
            count: 0,
            packs: Vec::new(),
            pack_numbers: HashMap::new(),
            first: None,
            last: None,
        }
    }

    /// Entries so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether no entry was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds an entry. Ids must come in ascending order; an entry repeating the previous one's
    /// chunk and pack is dropped. Returns whether it was added.
    pub fn push(&mut self, e: &IndexEntry) -> bool {
        let id = e.blob.id;
        if let Some((last, pack)) = self.last {
            assert!(last <= id, "entries of a sorted segment come in id order");
            if last == id && pack == e.pack {
                return false;
            }
        }
        let next = self.packs.len() as u32;
        let number = *self.pack_numbers.entry(e.pack).or_insert(next);
        if number == next {
            self.packs.push(e.pack);
        }
        let b = &e.blob;
        self.buf.extend_from_slice(id.as_bytes());
        for v in [number, b.offset, b.stored_len, b.raw_len] {
            le::push(&mut self.buf, v);
        }
        self.buf.push(b.compression as u8);
        self.first.get_or_insert(id);
        self.last = Some((id, e.pack));
        self.count += 1;
        true
    }

    /// The finished segment.
    pub fn finish(self) -> Vec<u8> {
        let SegmentBuilder {
            mut buf,
            count,
            packs,
            ..
        } = self;
        let bits = fanout_bits(count);
        let mut fanout = vec![0u32; 1 << bits];
        let mut filter = BlockFilter::with_keys(count);
        for e in buf[SORTED_HEAD_LEN..].chunks_exact(SORTED_ENTRY_LEN) {
            let id = ChunkId::from_bytes(e[..32].try_into().expect("32 bytes"));
            fanout[prefix(&id, bits)] += 1;
            filter.insert(&id);
        }
        let tables_at = buf.len();
        buf.reserve(packs.len() * 32 + fanout.len() * 4 + filter.len() * 32 + 160);
        packs.iter().for_each(|p| buf.extend_from_slice(&p.0));
        let mut sum = 0u32;
        for n in fanout {
            sum += n;
            le::push(&mut buf, sum);
        }
        filter.write(&mut buf);
        le::push(&mut buf, count);
        le::push(&mut buf, packs.len() as u32);
        le::push(&mut buf, filter.len() as u32);
        buf.push(bits);
        buf.extend_from_slice(&[0; 7]);
        let edge = |at: usize| buf.get(at..at + 32).map(<[u8]>::to_vec);
        let (first, last) = if count == 0 {
            (vec![0; 32], vec![0; 32])
        } else {
            let last_at = tables_at - SORTED_ENTRY_LEN;
            (
                edge(SORTED_HEAD_LEN).expect("an entry"),
                edge(last_at).expect("an entry"),
            )
        };
        buf.extend_from_slice(&first);
        buf.extend_from_slice(&last);
        let tables_sum = blake3::hash(&buf[tables_at..]);
        buf.extend_from_slice(tables_sum.as_bytes());
        let all = blake3::hash(&buf);
        buf.extend_from_slice(all.as_bytes());
        buf
    }
}

/// Encodes `entries` (in any order) as a sorted segment. Entries of one chunk keep their
/// order, so the first one written stays the first one found.
pub fn encode_sorted(entries: &[IndexEntry]) -> Vec<u8> {
    let mut sorted: Vec<&IndexEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.blob.id);
    let mut builder = SegmentBuilder::new(entries.len());
    for e in sorted {
        builder.push(e);
    }
    builder.finish()
}

/// Encodes an index segment in the current form, sorted (version 3, see
/// [`super::encode_sorted`]).
pub fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    encode_sorted(entries)
}

/// Decodes and checks an index segment of any version a plain repository holds (1 or 3).
pub fn decode_index(buf: &[u8]) -> Result<Vec<IndexEntry>> {
    if index_version(buf) == Some(INDEX_VERSION_SORTED) {
        return decode_sorted(buf);
    }
    super::index::decode_index_v1(buf)
}

/// The version field of an index segment, if it has the index magic.
pub fn index_version(buf: &[u8]) -> Option<u32> {
    if buf.len() < 12 || buf[..8] != INDEX_MAGIC {
        return None;
    }
    Some(le::u32_at(buf, 8))
}

/// Where the parts of a sorted segment lie, from its first and last bytes.
#[derive(Clone, Debug)]
pub struct SortedLayout {
    /// Entry count N.
    pub entries: u64,
    packs: u32,
    filter_blocks: u32,
    bits: u8,
    first: ChunkId,
    last: ChunkId,
    tables_sum: [u8; 32],
}

impl SortedLayout {
    /// Reads the layout of a sorted segment of `len` bytes from its first
    /// [`SORTED_HEAD_LEN`] and last [`SORTED_TAIL_LEN`] bytes, and checks that the lengths
    /// agree. Nothing here is checked against a checksum yet: [`SortedLayout::open`] checks
    /// the tables.
    pub fn parse(head: &[u8], tail: &[u8], len: u64) -> Result<Self> {
        if head.len() < SORTED_HEAD_LEN || head[..8] != INDEX_MAGIC {
            return Err(Error::structure(W, "bad magic"));
        }
        let version = Reader::new(W, &head[8..12]).u32()?;
        if version != INDEX_VERSION_SORTED {
            return Err(Error::structure(W, "not a version 3 index segment"));
        }
        let mut r = Reader::new(W, tail);
        let entries = r.u64()?;
        let packs = r.u32()?;
        let filter_blocks = r.u32()?;
        let bits = r.u8()?;
        r.take(7)?;
        let layout = SortedLayout {
            entries,
            packs,
            filter_blocks,
            bits,
            first: ChunkId::from_bytes(r.array()?),
            last: ChunkId::from_bytes(r.array()?),
            tables_sum: r.array()?,
        };
        let expected = layout
            .tables_at()
            .checked_add(layout.tables_len() as u64 + 64)
            .ok_or_else(|| Error::structure(W, "counts too large"))?;
        if !(8..=24).contains(&bits) || filter_blocks == 0 || expected != len {
            return Err(Error::structure(W, "counts do not match the length"));
        }
        Ok(layout)
    }

    /// Offset of the tables (pack table, fan-out, filter).
    pub fn tables_at(&self) -> u64 {
        SORTED_HEAD_LEN as u64 + self.entries.saturating_mul(SORTED_ENTRY_LEN as u64)
    }

    /// Bytes from the tables to the tables' checksum.
    pub fn tables_len(&self) -> usize {
        self.packs as usize * 32
            + (4usize << self.bits)
            + self.filter_blocks as usize * FILTER_BLOCK_LEN
            + 88
    }

    /// Checks `tables` (the [`SortedLayout::tables_len`] bytes at
    /// [`SortedLayout::tables_at`]) against their checksum and reads them.
    pub fn open(self, tables: &[u8]) -> Result<SortedSegment> {
        if tables.len() != self.tables_len() || blake3::hash(tables).as_bytes() != &self.tables_sum
        {
            return Err(Error::structure(W, "tables checksum mismatch"));
        }
        let mut r = Reader::new(W, tables);
        let packs = (0..self.packs)
            .map(|_| r.array().map(ObjectId))
            .collect::<Result<Vec<_>>>()?;
        let fanout = (0..1u32 << self.bits)
            .map(|_| r.u32())
            .collect::<Result<Vec<_>>>()?;
        if fanout.windows(2).any(|w| w[0] > w[1]) || fanout.last() != Some(&(self.entries as u32)) {
            return Err(Error::structure(W, "fan-out does not add up"));
        }
        let filter = BlockFilter::read(r.take(self.filter_blocks as usize * FILTER_BLOCK_LEN)?)
            .ok_or_else(|| Error::structure(W, "bad filter"))?;
        Ok(SortedSegment {
            layout: self,
            packs,
            fanout,
            filter,
        })
    }
}

/// The parts of a sorted segment a reader keeps in memory: its pack table, fan-out and filter.
/// Entries are read from the segment's bytes as needed.
#[derive(Clone, Debug)]
pub struct SortedSegment {
    layout: SortedLayout,
    packs: Vec<ObjectId>,
    fanout: Vec<u32>,
    filter: BlockFilter,
}

impl SortedSegment {
    /// Entry count.
    pub fn len(&self) -> u64 {
        self.layout.entries
    }

    /// Whether the segment has no entries.
    pub fn is_empty(&self) -> bool {
        self.layout.entries == 0
    }

    /// The packs the segment names.
    pub fn packs(&self) -> &[ObjectId] {
        &self.packs
    }

    /// Bytes of memory the tables take.
    pub fn memory(&self) -> usize {
        self.packs.len() * 32 + self.fanout.len() * 4 + self.filter.len() * FILTER_BLOCK_LEN
    }

    /// The first and last chunk ids it holds; `None` when it holds none.
    pub fn id_range(&self) -> Option<(ChunkId, ChunkId)> {
        (!self.is_empty()).then_some((self.layout.first, self.layout.last))
    }

    /// False when the segment surely does not hold `id` (no disk read needed).
    pub fn may_contain(&self, id: &ChunkId) -> bool {
        !self.is_empty()
            && self.layout.first <= *id
            && *id <= self.layout.last
            && self.filter.may_contain(id)
    }

    /// The byte range (offset, length) of the entries that may hold `id`.
    pub fn bucket(&self, id: &ChunkId) -> (u64, usize) {
        let i = prefix(id, self.layout.bits);
        let start = if i == 0 { 0 } else { self.fanout[i - 1] };
        let end = self.fanout[i];
        Self::entries_range(u64::from(start), u64::from(end))
    }

    /// The byte range (offset, length) of entries `start..end`.
    pub fn entries_range(start: u64, end: u64) -> (u64, usize) {
        let len = (end - start) as usize * SORTED_ENTRY_LEN;
        (
            SORTED_HEAD_LEN as u64 + start * SORTED_ENTRY_LEN as u64,
            len,
        )
    }

    /// The entries for `id` among `bytes` (whole entries, as read from [`SortedSegment::bucket`]).
    pub fn find(&self, id: &ChunkId, bytes: &[u8]) -> Result<Vec<IndexEntry>> {
        let mut out = Vec::new();
        for e in bytes.chunks_exact(SORTED_ENTRY_LEN) {
            if e[..32] == id.as_bytes()[..] {
                out.push(self.decode(e)?);
            }
        }
        Ok(out)
    }

    /// Decodes one entry.
    pub fn decode(&self, e: &[u8]) -> Result<IndexEntry> {
        let mut r = Reader::new(W, e);
        let id = ChunkId::from_bytes(r.array()?);
        let pack = *self
            .packs
            .get(r.u32()? as usize)
            .ok_or_else(|| Error::structure(W, "pack number out of range"))?;
        let (offset, stored_len, raw_len) = (r.u32()?, r.u32()?, r.u32()?);
        let compression = Compression::from_u8(r.u8()?)
            .ok_or_else(|| Error::structure(W, "unknown compression"))?;
        Ok(IndexEntry {
            pack,
            blob: BlobEntry {
                id,
                offset,
                stored_len,
                raw_len,
                compression,
            },
        })
    }
}

/// Decodes a whole sorted segment (checked against its trailing BLAKE3).
pub fn decode_sorted(buf: &[u8]) -> Result<Vec<IndexEntry>> {
    if buf.len() < SORTED_HEAD_LEN + SORTED_TAIL_LEN {
        return Err(Error::structure(W, "truncated"));
    }
    let (body, sum) = buf.split_at(buf.len() - 32);
    if blake3::hash(body).as_bytes()[..] != sum[..] {
        return Err(Error::structure(W, "checksum mismatch"));
    }
    let tail = &buf[buf.len() - SORTED_TAIL_LEN..];
    let layout = SortedLayout::parse(buf, tail, buf.len() as u64)?;
    let (at, len) = (layout.tables_at() as usize, layout.tables_len());
    let segment = layout.open(&buf[at..at + len])?;
    buf[SORTED_HEAD_LEN..at]
        .chunks_exact(SORTED_ENTRY_LEN)
        .map(|e| segment.decode(e))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u32, pack: u8) -> IndexEntry {
        IndexEntry {
            pack: ObjectId([pack; 32]),
            blob: BlobEntry {
                id: ChunkId::of(&i.to_le_bytes()),
                offset: i,
                stored_len: 100 + i,
                raw_len: 200 + i,
                compression: Compression::Zstd,
            },
        }
    }

    fn open(buf: &[u8]) -> SortedSegment {
        let layout = SortedLayout::parse(
            &buf[..SORTED_HEAD_LEN],
            &buf[buf.len() - SORTED_TAIL_LEN..],
            buf.len() as u64,
        )
        .unwrap();
        let at = layout.tables_at() as usize;
        let len = layout.tables_len();
        layout.open(&buf[at..at + len]).unwrap()
    }

    #[test]
    fn every_entry_is_found_through_its_bucket() {
        for n in [0u32, 1, 7, 3000] {
            let mut entries: Vec<_> = (0..n).map(|i| entry(i, (i % 5) as u8)).collect();
            entries.push(entries.first().map_or(entry(9, 9), |e| IndexEntry {
                pack: ObjectId([77; 32]),
                ..*e
            }));
            let buf = encode_sorted(&entries);
            let seg = open(&buf);
            assert_eq!(seg.len(), u64::from(n) + 1);
            assert!(seg.packs().len() <= 6);
            let mut decoded = decode_sorted(&buf).unwrap();
            decoded.sort_by_key(|e| (e.blob.id, e.pack));
            let mut want = entries.clone();
            want.sort_by_key(|e| (e.blob.id, e.pack));
            assert_eq!(decoded, want);
            for e in &entries {
                assert!(seg.may_contain(&e.blob.id));
                let (at, len) = seg.bucket(&e.blob.id);
                let found = seg
                    .find(&e.blob.id, &buf[at as usize..at as usize + len])
                    .unwrap();
                assert!(found.contains(e));
            }
            // The first entry of a chunk written stays the first found.
            let first = &entries[0];
            let (at, len) = seg.bucket(&first.blob.id);
            let found = seg
                .find(&first.blob.id, &buf[at as usize..at as usize + len])
                .unwrap();
            assert_eq!(found[0], *first);
            let absent = (n..n + 2000)
                .filter(|i| seg.may_contain(&ChunkId::of(&(i + 100_000).to_le_bytes())))
                .count();
            assert!(absent < 40, "{absent} false positives");
        }
    }

    #[test]
    fn damage_is_detected() {
        let buf = encode_sorted(&(0..100).map(|i| entry(i, 1)).collect::<Vec<_>>());
        for at in [0, 9, 20, buf.len() - 100, buf.len() - 1] {
            let mut bad = buf.clone();
            bad[at] ^= 1;
            assert!(decode_sorted(&bad).is_err(), "flip at {at}");
        }
        let tail = &buf[buf.len() - SORTED_TAIL_LEN..];
        assert!(SortedLayout::parse(&buf, tail, buf.len() as u64 - 1).is_err());
        let mut bad = buf.clone();
        let at = SortedLayout::parse(&buf, tail, buf.len() as u64)
            .unwrap()
            .tables_at() as usize;
        bad[at + 3] ^= 1;
        let tail = &bad[bad.len() - SORTED_TAIL_LEN..];
        let layout = SortedLayout::parse(&bad, tail, bad.len() as u64).unwrap();
        let len = layout.tables_len();
        assert!(layout.open(&bad[at..at + len]).is_err());
    }
}

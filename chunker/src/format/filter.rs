//! The filter of a sorted index segment: a split-block Bloom filter, kept in memory so that a
//! lookup of a chunk the segment does not hold costs no disk read (issue 17).
//!
//! Each block is 256 bits, eight `u32` words; a key sets one bit in every word of one block,
//! so a lookup touches one cache line. Chunk ids are BLAKE3 outputs (uniform, and keyed in an
//! encrypted repository), so their bytes serve as the hash: bytes 8..16 pick the block,
//! bytes 16..20 the bits. (Bytes 0..8 are what the fan-out and the sort use.)
//!
//! At [`FILTER_BITS_PER_KEY`] bits a key the false-positive rate is about 0.5 %.

use crate::le;
use crate::ChunkId;

/// Bits of filter per entry of a segment.
pub const FILTER_BITS_PER_KEY: u64 = 12;

/// Bytes of one filter block.
pub const FILTER_BLOCK_LEN: usize = 32;

// DO NOT MODIFY: part of the index segment format (version 3).
const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

/// A split-block Bloom filter over chunk ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockFilter {
    blocks: Vec<[u32; 8]>,
}

impl BlockFilter {
    /// Blocks for `keys` entries.
    pub fn block_count(keys: u64) -> u32 {
        let blocks = (keys * FILTER_BITS_PER_KEY).div_ceil(256).max(1);
        u32::try_from(blocks).unwrap_or(u32::MAX)
    }

    /// An empty filter sized for `keys` entries.
    pub fn with_keys(keys: u64) -> Self {
        BlockFilter {
            blocks: vec![[0; 8]; Self::block_count(keys) as usize],
        }
    }

    fn slot(&self, id: &ChunkId) -> (usize, u32) {
        let b = id.as_bytes();
        let h1 = le::u64_at(b, 8);
        let h2 = le::u32_at(b, 16);
        let block = ((u128::from(h1) * self.blocks.len() as u128) >> 64) as usize;
        (block, h2)
    }

    /// Adds a key.
    pub fn insert(&mut self, id: &ChunkId) {
        let (block, h) = self.slot(id);
        for (word, salt) in self.blocks[block].iter_mut().zip(SALT) {
            *word |= 1 << (h.wrapping_mul(salt) >> 27);
        }
    }

    /// False only when the key was never added.
    pub fn may_contain(&self, id: &ChunkId) -> bool {
        let (block, h) = self.slot(id);
        let words = &self.blocks[block];
        words
            .iter()
            .zip(SALT)
            .all(|(word, salt)| word & (1 << (h.wrapping_mul(salt) >> 27)) != 0)
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether the filter has no blocks (never true of a built one).
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Appends the blocks, words little-endian.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.reserve(self.blocks.len() * FILTER_BLOCK_LEN);
        for block in &self.blocks {
            for word in block {
                le::push(out, *word);
            }
        }
    }

    /// Reads blocks written by [`BlockFilter::write`]; `bytes` holds whole blocks.
    pub fn read(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(FILTER_BLOCK_LEN) {
            return None;
        }
        let blocks = bytes
            .chunks_exact(FILTER_BLOCK_LEN)
            .map(|c| std::array::from_fn(|i| le::u32_at(c, i * 4)))
            .collect();
        Some(BlockFilter { blocks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_every_key_and_rejects_most_others() {
        let n = 50_000u32;
        let mut f = BlockFilter::with_keys(u64::from(n));
        for i in 0..n {
            f.insert(&ChunkId::of(&i.to_le_bytes()));
        }
        assert!((0..n).all(|i| f.may_contain(&ChunkId::of(&i.to_le_bytes()))));
        let false_hits = (n..2 * n)
            .filter(|i| f.may_contain(&ChunkId::of(&i.to_le_bytes())))
            .count();
        assert!(
            false_hits < n as usize / 100,
            "{false_hits} false positives"
        );
        let mut bytes = Vec::new();
        f.write(&mut bytes);
        assert_eq!(BlockFilter::read(&bytes), Some(f));
        assert_eq!(BlockFilter::read(&bytes[1..]), None);
    }
}

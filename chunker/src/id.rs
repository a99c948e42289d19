use std::fmt;
use std::hash::{BuildHasher, Hasher};

/// The id of a chunk: BLAKE3-256 of its plaintext.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChunkId([u8; 32]);

impl std::hash::Hash for ChunkId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The id is uniformly random already: its first eight bytes are a good hash.
        state.write(&self.0[..8]);
    }
}

impl ChunkId {
    /// The id of `data`.
    pub fn of(data: &[u8]) -> Self {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    /// Wraps raw id bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        ChunkId(bytes)
    }

    /// The raw id bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        crate::hex::encode(&self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        crate::hex::decode_array(s).map(ChunkId)
    }
}

/// How chunk ids are computed: BLAKE3-256 of the plaintext, keyed (BLAKE3 keyed hash) in an
/// encrypted repository or archive so that ids reveal nothing about content.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct IdKey(Option<[u8; 32]>);

impl IdKey {
    /// Plain BLAKE3 ids (unencrypted repositories and archives).
    pub const PLAIN: IdKey = IdKey(None);

    /// Ids keyed with `key`.
    pub const fn keyed(key: [u8; 32]) -> Self {
        IdKey(Some(key))
    }

    /// Whether ids are keyed.
    pub const fn is_keyed(&self) -> bool {
        self.0.is_some()
    }

    /// The id of `data` under this scheme.
    pub fn id(&self, data: &[u8]) -> ChunkId {
        match &self.0 {
            None => ChunkId::of(data),
            Some(k) => ChunkId(*blake3::keyed_hash(k, data).as_bytes()),
        }
    }
}

impl fmt::Debug for IdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_keyed() {
            "IdKey(keyed)"
        } else {
            "IdKey(plain)"
        })
    }
}

impl fmt::Display for ChunkId {
    /// Shows the first 16 hex digits, enough to name a chunk in a message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex::encode(&self.0[..8]))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.to_hex())
    }
}

/// A `BuildHasher` for maps keyed by [`ChunkId`]: the id is already uniformly random, so its
/// first eight bytes are the hash. Not for keys an attacker chooses freely.
#[derive(Clone, Copy, Default, Debug)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }
}

impl BuildHasher for IdHasher {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ChunkId::of(b"hello");
        assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(
            id.to_hex(),
            "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
        );
        assert_eq!(ChunkId::from_hex("zz"), None);
        assert_eq!(id.to_string().len(), 16);
    }
}

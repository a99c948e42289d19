use chunker::{ChunkId, Frame};

use crate::Result;

/// The outcome of [`ChunkStore::put`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// The chunk was new and is now stored (durable after [`ChunkStore::flush`]).
    Stored,
    /// The store already had a chunk with this id; nothing was written.
    AlreadyPresent,
}

/// A content-addressed store of encoded chunks.
///
/// # Contract
///
/// - `put` is idempotent: a second put of the same id returns [`Put::AlreadyPresent`] and
///   writes nothing. The caller guarantees that `frame` decodes to a plaintext with id `id`.
/// - A chunk is visible to `has` and `get` as soon as `put` returns, and durable once a later
///   [`flush`](ChunkStore::flush) returns `Ok`. A snapshot that references a chunk must not be
///   committed before that.
/// - All methods take `&self` and may be called from many threads at once.
/// - After a failed `put` or `flush` the store is poisoned: every later write returns
///   `Error::Poisoned`, so a half-written backup can never be committed.
/// - Dropping the store without `flush` loses chunks that were not flushed; it never damages
///   what was flushed before.
pub trait ChunkStore: Send + Sync + std::fmt::Debug {
    /// Whether a chunk with this id is stored (or pending).
    fn has(&self, id: &ChunkId) -> Result<bool>;
    /// Stores a chunk under its id.
    fn put(&self, id: &ChunkId, frame: Frame) -> Result<Put>;
    /// The stored frame of a chunk; `Error::NotFound` when absent. The caller decodes it and
    /// checks it against `id`.
    fn get(&self, id: &ChunkId) -> Result<Frame>;
    /// The frames of several chunks, in order. Stores that keep chunks side by side in remote
    /// objects fetch neighbours with one request (one ranged read of a pack instead of one per
    /// chunk).
    fn get_many(&self, ids: &[ChunkId]) -> Result<Vec<Frame>> {
        ids.iter().map(|id| self.get(id)).collect()
    }
    /// Makes every chunk put so far durable.
    fn flush(&self) -> Result<()>;
    /// How this store's chunk ids are computed (keyed in an encrypted repository): what a
    /// reader checks decoded chunks against.
    fn id_key(&self) -> chunker::IdKey {
        chunker::IdKey::PLAIN
    }
}

impl<T: ChunkStore + ?Sized> ChunkStore for Box<T> {
    fn has(&self, id: &ChunkId) -> Result<bool> {
        (**self).has(id)
    }
    fn get_many(&self, ids: &[ChunkId]) -> Result<Vec<Frame>> {
        (**self).get_many(ids)
    }
    fn put(&self, id: &ChunkId, frame: Frame) -> Result<Put> {
        (**self).put(id, frame)
    }
    fn get(&self, id: &ChunkId) -> Result<Frame> {
        (**self).get(id)
    }
    fn flush(&self) -> Result<()> {
        (**self).flush()
    }
    fn id_key(&self) -> chunker::IdKey {
        (**self).id_key()
    }
}

impl<T: ChunkStore + ?Sized> ChunkStore for std::sync::Arc<T> {
    fn has(&self, id: &ChunkId) -> Result<bool> {
        (**self).has(id)
    }
    fn get_many(&self, ids: &[ChunkId]) -> Result<Vec<Frame>> {
        (**self).get_many(ids)
    }
    fn put(&self, id: &ChunkId, frame: Frame) -> Result<Put> {
        (**self).put(id, frame)
    }
    fn get(&self, id: &ChunkId) -> Result<Frame> {
        (**self).get(id)
    }
    fn flush(&self) -> Result<()> {
        (**self).flush()
    }
    fn id_key(&self) -> chunker::IdKey {
        (**self).id_key()
    }
}

/// Conveniences on top of [`ChunkStore`], for every store.
pub trait ChunkStoreExt: ChunkStore {
    /// Fetches, decodes and checks a chunk in one call.
    fn read_chunk(&self, id: &ChunkId, decoder: &mut chunker::Decoder) -> Result<Vec<u8>> {
        let frame = self.get(id)?;
        Ok(decoder.decode(&frame, id)?)
    }
}

impl<T: ChunkStore + ?Sized> ChunkStoreExt for T {}

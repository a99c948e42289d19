//! The pack writers: the pack being filled, the threads that store sealed packs, and the state
//! they share with the repository.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, RwLock};

use chunker::format::{BlobEntry, IndexEntry, ObjectId};
use chunker::{ChunkId, IdHasher};
use crossbeam_channel::Receiver;

use super::index::Index;
use crate::backend::DIRECT_IO_ALIGN;
use crate::crypt::RepoCrypto;
use crate::layout::pack_key;
use crate::{Backend, Error, Result};

/// The bytes of a pack being filled. They start on a direct-I/O boundary, so the local
/// backend writes them to the device with no copy (`backend::write_direct`): `vec` holds
/// `start` bytes of padding, then the pack. (Were `vec` ever to grow past its capacity, the
/// pack would move off the boundary and simply be written the ordinary way.)
#[derive(Default)]
pub(super) struct PackBuf {
    pub(super) vec: Vec<u8>,
    pub(super) start: usize,
}

impl PackBuf {
    /// An empty buffer with room for `capacity` bytes of pack.
    pub(super) fn with_capacity(capacity: usize) -> Self {
        let mut vec = Vec::with_capacity(capacity + DIRECT_IO_ALIGN);
        let addr = vec.as_ptr() as usize;
        let start = addr.next_multiple_of(DIRECT_IO_ALIGN) - addr;
        vec.resize(start, 0);
        PackBuf { vec, start }
    }

    /// Bytes of pack so far.
    pub(super) fn len(&self) -> usize {
        self.vec.len() - self.start
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn room(&self) -> usize {
        self.vec.capacity() - self.vec.len()
    }

    /// The pack.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.vec[self.start..]
    }

    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.vec[self.start..]
    }

    /// The vector to append to (the writers of trailers only append).
    pub(super) fn appender(&mut self) -> &mut Vec<u8> {
        &mut self.vec
    }

    pub(super) fn clear(&mut self) {
        self.vec.truncate(self.start);
    }
}

/// The pack being filled, and every chunk put but not yet durable.
pub(super) struct Packer {
    pub(super) buf: PackBuf,
    pub(super) entries: Vec<BlobEntry>,
    pub(super) pending: HashSet<ChunkId, IdHasher>,
}

pub(super) struct Job {
    pub(super) buf: PackBuf,
    pub(super) entries: Vec<BlobEntry>,
    pub(super) trailer_len: usize,
}

pub(super) struct Shared {
    pub(super) backend: Arc<dyn Backend>,
    /// The keys of an encrypted repository.
    pub(super) crypto: Option<RepoCrypto>,
    pub(super) index: RwLock<Index>,
    pub(super) packer: Mutex<Packer>,
    /// Durable chunks not yet named by an index segment.
    pub(super) session: Mutex<Vec<IndexEntry>>,
    pub(super) poison: Mutex<Option<String>>,
    /// Pack buffers handed back by the writer, reused so each pack does not fault in fresh
    /// pages.
    pub(super) spare: Mutex<Vec<PackBuf>>,
    /// Packs handed to writers and not yet durable (or failed); `idle` signals zero.
    pub(super) inflight: Mutex<usize>,
    pub(super) idle: Condvar,
}

impl Shared {
    pub(super) fn check_poison(&self) -> Result<()> {
        match &*self.poison.lock().expect("poison lock") {
            Some(first) => Err(Error::Poisoned {
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }
    /// Whether a durable, indexed copy of the chunk exists.
    pub(super) fn is_indexed(&self, id: &ChunkId) -> bool {
        self.index.read().expect("index lock").has_live(id)
    }
    pub(super) fn pack_done(&self) {
        let mut n = self.inflight.lock().expect("inflight lock");
        *n -= 1;
        if *n == 0 {
            self.idle.notify_all();
        }
    }
    pub(super) fn set_poison(&self, e: &Error) {
        self.poison
            .lock()
            .expect("poison lock")
            .get_or_insert_with(|| e.to_string());
    }
}

pub(super) fn take_open_pack(packer: &mut Packer) -> Option<(PackBuf, Vec<BlobEntry>)> {
    if packer.entries.is_empty() {
        return None;
    }
    Some((
        std::mem::take(&mut packer.buf),
        std::mem::take(&mut packer.entries),
    ))
}

/// A writer thread: stores sealed packs, then makes their chunks visible in the index.
pub(super) fn pack_writer(shared: &Shared, jobs: &Receiver<Job>) {
    for Job {
        buf,
        entries,
        trailer_len,
    } in jobs
    {
        write_pack(shared, buf, &entries, trailer_len);
        shared.pack_done();
    }
}

pub(super) fn write_pack(
    shared: &Shared,
    mut buf: PackBuf,
    entries: &[BlobEntry],
    trailer_len: usize,
) {
    if shared.check_poison().is_err() {
        return; // a poisoned store writes nothing more
    }
    let trailer_start = buf.len() - trailer_len;
    let id = ObjectId::of(&buf.bytes()[trailer_start..]);
    if let Err(e) = shared.backend.put(&pack_key(&id), buf.bytes()) {
        tracing::debug!("pack write failed: {e}");
        shared.set_poison(&e);
        return;
    }
    buf.clear();
    {
        let mut spare = shared.spare.lock().expect("spare lock");
        if spare.len() < 2 {
            spare.push(buf);
        }
    }
    let new: Vec<IndexEntry> = entries
        .iter()
        .map(|&blob| IndexEntry { pack: id, blob })
        .collect();
    {
        let mut index = shared.index.write().expect("index lock");
        new.iter().for_each(|e| index.insert(e));
    }
    {
        let mut packer = shared.packer.lock().expect("packer lock");
        for e in entries {
            packer.pending.remove(&e.id);
        }
    }
    shared.session.lock().expect("session lock").extend(new);
}

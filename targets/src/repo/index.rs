//! The in-memory index of an open repository: where each chunk is, and which chunks only
//! condemned packs hold.

use std::collections::{HashMap, HashSet};

use chunker::format::{IndexEntry, ObjectId};
use chunker::{ChunkId, IdHasher};

#[derive(Clone, Copy, Debug)]
pub(super) struct Loc {
    pub(super) pack: u32,
    pub(super) offset: u32,
    pub(super) stored_len: u32,
    pub(super) raw_len: u32,
    pub(super) compression: chunker::Compression,
}

#[derive(Default)]
pub(super) struct Index {
    pub(super) map: HashMap<ChunkId, Loc, IdHasher>,
    /// Chunks whose only known copies are in packs that garbage collection condemned: still
    /// readable until the sweep, never reused by a backup (which stores a fresh copy).
    pub(super) condemned_map: HashMap<ChunkId, Loc, IdHasher>,
    pub(super) packs: Vec<ObjectId>,
    pub(super) pack_numbers: HashMap<ObjectId, u32>,
    pub(super) condemned: HashSet<u32>,
}

impl Index {
    pub(super) fn pack_number(&mut self, pack: ObjectId) -> u32 {
        *self.pack_numbers.entry(pack).or_insert_with(|| {
            self.packs.push(pack);
            (self.packs.len() - 1) as u32
        })
    }

    /// Marks packs as condemned: their chunks stop counting as stored.
    pub(super) fn condemn(&mut self, packs: &[ObjectId]) {
        for p in packs {
            let n = self.pack_number(*p);
            self.condemned.insert(n);
        }
        let moved: Vec<(ChunkId, Loc)> = self
            .map
            .iter()
            .filter(|(_, l)| self.condemned.contains(&l.pack))
            .map(|(id, l)| (*id, *l))
            .collect();
        for (id, loc) in moved {
            self.map.remove(&id);
            self.condemned_map.entry(id).or_insert(loc);
        }
    }

    pub(super) fn get(&self, id: &ChunkId) -> Option<&Loc> {
        self.map.get(id).or_else(|| self.condemned_map.get(id))
    }

    pub(super) fn insert(&mut self, e: &IndexEntry) {
        let pack = self.pack_number(e.pack);
        let b = &e.blob;
        let loc = Loc {
            pack,
            offset: b.offset,
            stored_len: b.stored_len,
            raw_len: b.raw_len,
            compression: b.compression,
        };
        if self.condemned.contains(&pack) {
            self.condemned_map.entry(b.id).or_insert(loc);
        } else {
            self.condemned_map.remove(&b.id);
            self.map.entry(b.id).or_insert(loc);
        }
    }
}

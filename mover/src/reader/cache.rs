//! The decoded-chunk cache shared by every reader of a snapshot: least recently used chunks
//! go first once the bytes held pass the budget. A chunk being fetched holds a `Loading` slot
//! (its bytes counted in advance), so a second caller waits for that fetch instead of
//! starting its own; when a fetch fails its slot is removed and waiters fetch it themselves.
//!
//! A chunk only sequential streams have read can be dropped once they are past it
//! ([`Cache::drop_behind`]); one that any other read used is *kept*, left to the LRU order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use chunker::ChunkId;

use super::pool::Chunk;

enum Slot {
    Loading {
        bytes: u64,
    },
    /// `kept`: a read other than a sequential stream's used it.
    Ready {
        data: Arc<Chunk>,
        tick: u64,
        kept: bool,
    },
}

#[derive(Default)]
struct State {
    slots: HashMap<ChunkId, Slot>,
    /// Ready chunks by last use, oldest first.
    lru: BTreeMap<u64, ChunkId>,
    tick: u64,
    /// Bytes of ready and loading chunks.
    bytes: u64,
    /// Callers waiting for a fetch to end: a fill or an abandon wakes them only if there are
    /// any (a wake is a system call even with nobody waiting, one per chunk at least).
    waiting: usize,
}

/// What [`Cache::claim`] found.
pub(super) enum Claim {
    /// The chunk, already decoded.
    Ready(Arc<Chunk>),
    /// The caller now owns the fetch: it must call [`Cache::fill`] or [`Cache::abandon`].
    Fetch,
}

pub(super) struct Cache {
    state: Mutex<State>,
    done: Condvar,
    budget: u64,
}

impl Cache {
    pub(super) fn new(budget: u64) -> Self {
        Cache {
            state: Mutex::new(State::default()),
            done: Condvar::new(),
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements: a panicking holder leaves it usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The chunk if it is cached (waiting for a fetch in progress); otherwise a claim to
    /// fetch it. `keep`: the caller is not a sequential stream, so the chunk is kept from
    /// [`Cache::drop_behind`].
    pub(super) fn claim(&self, id: &ChunkId, bytes: u64, keep: bool) -> Claim {
        let mut st = self.lock();
        loop {
            match st.slots.get_mut(id) {
                Some(Slot::Ready { data, tick, kept }) => {
                    *kept |= keep;
                    let (data, old) = (data.clone(), *tick);
                    touch(&mut st, id, old);
                    return Claim::Ready(data);
                }
                Some(Slot::Loading { .. }) => {
                    st.waiting += 1;
                    st = self.done.wait(st).unwrap_or_else(PoisonError::into_inner);
                    st.waiting -= 1;
                }
                None => {
                    st.slots.insert(*id, Slot::Loading { bytes });
                    st.bytes += bytes;
                    self.evict(&mut st);
                    return Claim::Fetch;
                }
            }
        }
    }

    /// Claims the fetch of a chunk only if nobody holds or fetches it (readahead).
    pub(super) fn try_claim(&self, id: &ChunkId, bytes: u64) -> bool {
        let mut st = self.lock();
        if st.slots.contains_key(id) {
            return false;
        }
        st.slots.insert(*id, Slot::Loading { bytes });
        st.bytes += bytes;
        self.evict(&mut st);
        true
    }

    /// Stores a claimed chunk and wakes its waiters; `kept` as for [`Cache::claim`] (false
    /// for a chunk fetched ahead).
    pub(super) fn fill(&self, id: &ChunkId, data: Arc<Chunk>, kept: bool) {
        let mut st = self.lock();
        if let Some(Slot::Loading { bytes }) = st.slots.remove(id) {
            st.bytes -= bytes;
        }
        st.tick += 1;
        let tick = st.tick;
        st.bytes += data.len() as u64;
        st.slots.insert(*id, Slot::Ready { data, tick, kept });
        st.lru.insert(tick, *id);
        self.evict(&mut st);
        self.wake(st);
    }

    /// Gives up a claim (the fetch failed); waiters try themselves.
    pub(super) fn abandon(&self, id: &ChunkId) {
        self.abandon_all(std::slice::from_ref(id));
    }

    /// Gives up the claims of `ids` at once.
    pub(super) fn abandon_all(&self, ids: &[ChunkId]) {
        let mut st = self.lock();
        for id in ids {
            if let Some(Slot::Loading { bytes }) = st.slots.get(id) {
                let bytes = *bytes;
                st.slots.remove(id);
                st.bytes -= bytes;
            }
        }
        self.wake(st);
    }

    /// Releases the lock and wakes the callers waiting for a fetch, if any wait.
    fn wake(&self, st: MutexGuard<'_, State>) {
        let waiting = st.waiting > 0;
        drop(st);
        if waiting {
            self.done.notify_all();
        }
    }

    /// Drops a ready chunk (its reader is done with it): its buffer goes back to the pool
    /// once the last caller holding it lets go. A chunk being fetched stays.
    pub(super) fn forget(&self, id: &ChunkId) {
        self.drop_ready(id, false);
    }

    /// Drops a ready chunk that sequential streams have read and passed, unless it is kept:
    /// a pass over the whole disk (a mirror job, a copy) then neither grows the cache onto
    /// fresh memory nor pushes out the chunks other readers use.
    pub(super) fn drop_behind(&self, id: &ChunkId) {
        self.drop_ready(id, true);
    }

    /// Drops the chunk `id` if it is ready (and, with `spare_kept`, not kept).
    fn drop_ready(&self, id: &ChunkId, spare_kept: bool) {
        let mut st = self.lock();
        if let Some(&Slot::Ready { tick, kept, .. }) = st.slots.get(id) {
            if !(spare_kept && kept) {
                st.lru.remove(&tick);
                remove_ready(&mut st, id);
            }
        }
    }

    /// Bytes the budget has left.
    pub(super) fn room(&self) -> u64 {
        self.budget.saturating_sub(self.lock().bytes)
    }

    /// Bytes held (ready and loading).
    pub(super) fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Drops the least recently used ready chunks until the budget holds (loading slots
    /// cannot go; their callers hold what they fetch anyway).
    fn evict(&self, st: &mut State) {
        while st.bytes > self.budget {
            let Some((_, id)) = st.lru.pop_first() else {
                break;
            };
            remove_ready(st, &id);
        }
    }
}

/// Removes the ready chunk `id` (whose LRU entry is gone already) and its bytes.
fn remove_ready(st: &mut State, id: &ChunkId) {
    if let Some(Slot::Ready { data, .. }) = st.slots.remove(id) {
        st.bytes -= data.len() as u64;
    }
}

fn touch(st: &mut State, id: &ChunkId, old: u64) {
    st.lru.remove(&old);
    st.tick += 1;
    let tick = st.tick;
    st.lru.insert(tick, *id);
    if let Some(Slot::Ready { tick: t, .. }) = st.slots.get_mut(id) {
        *t = tick;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId::of(&[n])
    }

    fn chunk(n: u8, len: usize) -> Arc<Chunk> {
        Arc::new(super::super::pool::Pool::new(0).chunk(vec![n; len]))
    }

    impl Cache {
        fn holds(&self, id: &ChunkId) -> bool {
            self.lock().slots.contains_key(id)
        }
    }

    #[test]
    fn evicts_least_recently_used_within_budget() {
        let c = Cache::new(300);
        for n in 0..3 {
            assert!(matches!(c.claim(&id(n), 100, true), Claim::Fetch));
            c.fill(&id(n), chunk(n, 100), true);
        }
        // Use 0, so 1 is the oldest.
        assert!(matches!(c.claim(&id(0), 100, true), Claim::Ready(_)));
        assert!(matches!(c.claim(&id(3), 100, true), Claim::Fetch));
        c.fill(&id(3), chunk(3, 100), true);
        assert!(c.bytes() <= 300);
        assert!(c.holds(&id(0)) && !c.holds(&id(1)) && c.holds(&id(2)));
    }

    #[test]
    fn waiters_get_the_fetched_chunk_and_abandon_hands_over() {
        let c = Arc::new(Cache::new(1 << 20));
        assert!(matches!(c.claim(&id(7), 10, true), Claim::Fetch));
        assert!(!c.try_claim(&id(7), 10));
        let c2 = c.clone();
        let waiter = std::thread::spawn(move || match c2.claim(&id(7), 10, true) {
            Claim::Ready(d) => d.len(),
            Claim::Fetch => 0,
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        c.fill(&id(7), chunk(1, 10), true);
        assert_eq!(waiter.join().unwrap(), 10);

        assert!(matches!(c.claim(&id(8), 10, true), Claim::Fetch));
        let c3 = c.clone();
        let waiter = std::thread::spawn(move || matches!(c3.claim(&id(8), 10, true), Claim::Fetch));
        std::thread::sleep(std::time::Duration::from_millis(20));
        c.abandon(&id(8));
        assert!(waiter.join().unwrap(), "the waiter takes the fetch over");
    }

    #[test]
    fn drop_behind_spares_chunks_other_reads_used() {
        let c = Cache::new(1 << 20);
        // 1 and 2 were fetched ahead of a sequential stream; 2 was then read at random too;
        // 3 was fetched for a random read.
        for n in 1..=2 {
            assert!(c.try_claim(&id(n), 10));
            c.fill(&id(n), chunk(n, 10), false);
        }
        assert!(matches!(c.claim(&id(2), 10, true), Claim::Ready(_)));
        assert!(matches!(c.claim(&id(3), 10, true), Claim::Fetch));
        c.fill(&id(3), chunk(3, 10), true);
        for n in 1..=3 {
            c.drop_behind(&id(n));
        }
        assert!(!c.holds(&id(1)) && c.holds(&id(2)) && c.holds(&id(3)));
        assert_eq!(c.bytes(), 20);
        // A sequential stream's own reads do not keep a chunk.
        assert!(c.try_claim(&id(4), 10));
        c.fill(&id(4), chunk(4, 10), false);
        assert!(matches!(c.claim(&id(4), 10, false), Claim::Ready(_)));
        c.drop_behind(&id(4));
        assert!(!c.holds(&id(4)));
    }
}

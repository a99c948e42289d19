//! Decoded chunks and the buffers they are decoded into.
//!
//! A chunk is decoded straight into the buffer the cache keeps and callers read from (no copy
//! into a second allocation), and when the last holder of an evicted chunk lets go, its
//! buffer goes back to the reader's pool for the next fetch. A recycled buffer is not cleared:
//! the decoder overwrites every byte. Sequential reading through the cache thus allocates,
//! zeroes and frees nothing per chunk, and the process keeps reusing the same pages instead of
//! asking the allocator for a megabyte per chunk (issue 15: the copies and fresh buffers cost
//! about as much as decoding when an export is read end to end).

use std::sync::{Arc, Mutex, PoisonError};

/// A decoded chunk, shared by the cache and the callers reading it.
pub(crate) struct Chunk {
    data: Vec<u8>,
    pool: Arc<Pool>,
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.data));
    }
}

/// Free chunk buffers, at most `keep` bytes of them (the rest go back to the allocator).
pub(super) struct Pool {
    free: Mutex<Free>,
    keep: usize,
}

#[derive(Default)]
struct Free {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
}

impl Pool {
    pub(super) fn new(keep: usize) -> Arc<Self> {
        Arc::new(Pool {
            free: Mutex::new(Free::default()),
            keep,
        })
    }

    /// A buffer to decode into (any length: the decoder sizes it).
    pub(super) fn take(&self) -> Vec<u8> {
        let mut free = self.lock();
        let buf = free.bufs.pop().unwrap_or_default();
        free.bytes -= buf.capacity();
        buf
    }

    /// Wraps a decoded buffer as a chunk that returns to this pool.
    pub(super) fn chunk(self: &Arc<Self>, data: Vec<u8>) -> Chunk {
        Chunk {
            data,
            pool: self.clone(),
        }
    }

    /// Takes a buffer back (one that was never wrapped, after a failed decode, say); false
    /// when the pool is full and the buffer was freed.
    pub(super) fn give(&self, buf: Vec<u8>) -> bool {
        if buf.capacity() == 0 {
            return false;
        }
        let mut free = self.lock();
        let kept = free.bytes + buf.capacity() <= self.keep;
        if kept {
            free.bytes += buf.capacity();
            free.bufs.push(buf);
        }
        kept
    }

    /// Free buffers held.
    pub(super) fn len(&self) -> usize {
        self.lock().bufs.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Free> {
        // A list of buffers is consistent between statements.
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_up_to_the_limit() {
        let pool = Pool::new(25);
        let a = pool.chunk(vec![1; 10]);
        let b = pool.chunk(vec![2; 20]);
        assert_eq!((&a[..], b.len()), (&[1u8; 10][..], 20));
        drop(a);
        drop(b);
        // The first back is kept, the second is over the limit and freed.
        let buf = pool.take();
        assert_eq!(buf, vec![1; 10]);
        assert!(pool.take().is_empty());
    }
}

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::{Backend, Error, Result, Temporary};

/// A test double: a backend that fails writes after the first `ok_writes`, as a full disk
/// would. Reads pass through.
#[derive(Debug)]
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    ok_writes: usize,
    writes: AtomicUsize,
}

impl FaultyBackend {
    /// Wraps `inner`; write number `ok_writes` (from 0) and every later one fail with
    /// [`Error::NoSpace`].
    pub fn new(inner: Arc<dyn Backend>, ok_writes: usize) -> Self {
        FaultyBackend {
            inner,
            ok_writes,
            writes: AtomicUsize::new(0),
        }
    }

    fn write_allowed(&self, key: &str) -> Result<()> {
        if self.writes.fetch_add(1, Ordering::SeqCst) >= self.ok_writes {
            return Err(Error::NoSpace { path: key.into() });
        }
        Ok(())
    }
}

#[deny(clippy::missing_trait_methods)]
impl Backend for FaultyBackend {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.write_allowed(key)?;
        self.inner.put(key, data)
    }
    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool> {
        self.write_allowed(key)?;
        self.inner.put_new(key, data)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.inner.get_range(key, offset, len)
    }
    fn get_range_pieces(
        &self,
        key: &str,
        offset: u64,
        len: usize,
        piece: &mut dyn FnMut(&[u8]),
    ) -> Result<()> {
        self.inner.get_range_pieces(key, offset, len, piece)
    }
    fn size(&self, key: &str) -> Result<u64> {
        self.inner.size(key)
    }
    fn modified_ms(&self, key: &str) -> Result<Option<i64>> {
        self.inner.modified_ms(key)
    }
    fn lock_policy(&self) -> Result<Option<crate::lock::LockPolicy>> {
        self.inner.lock_policy()
    }
    fn locked_until_ms(&self, key: &str) -> Result<Option<i64>> {
        self.inner.locked_until_ms(key)
    }
    fn extend_lock(&self, key: &str, until_ms: i64) -> Result<()> {
        self.write_allowed(key)?;
        self.inner.extend_lock(key, until_ms)
    }
    fn list(&self, dir: &str) -> Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.write_allowed(key)?;
        self.inner.delete(key)
    }
    fn temporaries(&self) -> Result<Vec<Temporary>> {
        self.inner.temporaries()
    }
    fn local_file(&self, key: &str) -> Option<std::path::PathBuf> {
        self.inner.local_file(key)
    }
}

//! Reads on the calling thread: one S3 client and one single-threaded runtime per thread that
//! reads.
//!
//! A restore reads through many worker threads at once, each waiting on one ranged GET at a
//! time. Through the shared multi-threaded runtime every piece of a response crosses threads:
//! a runtime worker wakes on the socket, reads what arrived (some 16 KiB on a link of a few
//! hundred Mbit/s), hands it to the body channel and wakes the waiting thread with a futex,
//! which copies it and sleeps again, while the runtime's workers park and unpark around it.
//! Measured on a restore through a 200 Mbit/s link, that hand-off cost mover as much CPU as
//! decompressing the whole image (issue 18). Here the thread that asks drives its own runtime:
//! it waits in `epoll` and reads the socket itself, so a piece costs two system calls and no
//! hand-off.
//!
//! Each thread gets its own client, and so its own connection pool: a connection's task lives
//! on the runtime that opened it, which runs only while its thread waits on a request, so a
//! connection must never pass to another thread. At most [`MAX_READERS`] are kept; past that
//! the oldest is dropped (a thread that comes back opens a new connection).

use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use std::ops::Range;

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore};

use crate::{Error, Result};

/// Threads whose clients are kept (a restore or a server uses far fewer).
const MAX_READERS: usize = 64;

/// One thread's client and runtime.
pub(super) struct Reader {
    runtime: tokio::runtime::Runtime,
    pub(super) store: AmazonS3,
}

impl Reader {
    /// Runs `f` to completion on this thread.
    pub(super) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Hands the bytes of `range` of `path` to `piece` as they come off the socket; the number
    /// of bytes handed over.
    pub(super) fn get_range_pieces(
        &self,
        path: &Path,
        range: Range<u64>,
        piece: &mut dyn FnMut(&[u8]),
    ) -> std::result::Result<usize, object_store::Error> {
        let opts = GetOptions {
            range: Some(range.into()),
            ..Default::default()
        };
        self.block_on(async {
            let mut body = self.store.get_opts(path, opts).await?.into_stream();
            let mut got = 0;
            while let Some(bytes) = body.next().await {
                let bytes = bytes?;
                got += bytes.len();
                piece(&bytes);
            }
            Ok(got)
        })
    }
}

/// The clients of the threads that read, made from the backend's settings.
pub(super) struct Readers {
    builder: AmazonS3Builder,
    location: String,
    by_thread: Mutex<Vec<(ThreadId, Arc<Reader>)>>,
}

impl Readers {
    /// Clients built from `builder`, which has built the backend's own client already.
    pub(super) fn new(builder: AmazonS3Builder, location: &str) -> Self {
        Readers {
            builder,
            location: location.to_string(),
            by_thread: Mutex::new(Vec::new()),
        }
    }

    /// The calling thread's client, made on its first read.
    pub(super) fn current(&self) -> Result<Arc<Reader>> {
        let me = std::thread::current().id();
        let mut all = self.by_thread.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, r)) = all.iter().find(|(t, _)| *t == me) {
            return Ok(r.clone());
        }
        let failed = |what: &str, detail: String| Error::Backend {
            location: self.location.clone(),
            detail: format!("{what}: {detail}"),
        };
        let store = (self.builder.clone().build())
            .map_err(|e| failed("cannot make the S3 client", e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed("cannot start the S3 runtime", e.to_string()))?;
        let reader = Arc::new(Reader { runtime, store });
        if all.len() >= MAX_READERS {
            // Dropped here unless its thread is reading now (then when it is done).
            drop(all.remove(0));
        }
        all.push((me, reader.clone()));
        Ok(reader)
    }
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.by_thread.lock().map(|v| v.len()).unwrap_or(0);
        f.debug_struct("Readers").field("threads", &n).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_keeps_its_own_client_and_the_oldest_go() {
        let builder = AmazonS3Builder::new()
            .with_bucket_name("b")
            .with_region("us-east-1")
            .with_access_key_id("a")
            .with_secret_access_key("s")
            .with_endpoint("http://127.0.0.1:1")
            .with_allow_http(true);
        let readers = Readers::new(builder, "s3://b");
        let mine = readers.current().unwrap();
        assert!(Arc::ptr_eq(&mine, &readers.current().unwrap()));
        let others: Vec<_> = (0..MAX_READERS)
            .map(|_| std::thread::scope(|s| s.spawn(|| readers.current().unwrap()).join()))
            .map(|r| r.unwrap())
            .collect();
        assert!(others.iter().all(|r| !Arc::ptr_eq(r, &mine)));
        assert_eq!(readers.by_thread.lock().unwrap().len(), MAX_READERS);
        // This thread's client was the oldest: it went, and a new one is made.
        assert!(!Arc::ptr_eq(&mine, &readers.current().unwrap()));
    }
}

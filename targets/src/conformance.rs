//! Checks that a [`Backend`] or [`ChunkStore`] keeps its written contract. Every
//! implementation runs these, also through `Box` and `Arc`.

use chunker::{ChunkId, Decoder, Encoder};

use crate::{Backend, ChunkStore, Error, Put};

/// Deterministic test data for chunk `seed`: half of it repeats, so zstd has something to do.
pub fn chunk(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Half of each chunk repeats, so zstd has something to do.
            if i % 2 == 0 {
                x as u8
            } else {
                (i % 7) as u8
            }
        })
        .collect()
}

/// Runs every [`Backend`] check against `b`, which must start empty.
pub fn backend(b: &dyn Backend) {
    assert!(matches!(b.get("a/missing"), Err(Error::NotFound { .. })));
    assert!(b.list("a").unwrap().is_empty());

    b.put("a/one", b"first").unwrap();
    assert_eq!(b.get("a/one").unwrap(), b"first");
    b.put("a/one", b"second!").unwrap();
    assert_eq!(b.get("a/one").unwrap(), b"second!", "put replaces");
    assert_eq!(b.size("a/one").unwrap(), 7);
    assert_eq!(b.get_range("a/one", 2, 3).unwrap(), b"con");
    assert!(matches!(
        b.get_range("a/one", 5, 10),
        Err(Error::Corrupt { .. })
    ));

    assert!(b.put_new("a/b/two", b"x").unwrap());
    assert!(
        !b.put_new("a/b/two", b"y").unwrap(),
        "put_new never replaces"
    );
    assert_eq!(b.get("a/b/two").unwrap(), b"x");

    let mut keys = b.list("a").unwrap();
    keys.sort();
    assert_eq!(keys, vec!["a/b/two".to_string(), "a/one".to_string()]);

    b.delete("a/one").unwrap();
    b.delete("a/one").unwrap();
    assert!(matches!(b.get("a/one"), Err(Error::NotFound { .. })));

    std::thread::scope(|s| {
        for t in 0..4u32 {
            s.spawn(move || {
                for i in 0..10u32 {
                    b.put(&format!("c/{t}-{i}"), &chunk(t * 100 + i, 1000))
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(b.list("c").unwrap().len(), 40);
    assert_eq!(b.get("c/2-3").unwrap(), chunk(203, 1000));
}

/// Runs every [`ChunkStore`] check against `store`, which must start empty; `reopen` opens
/// the same store anew (to check durability after `flush`).
pub fn chunk_store(store: &dyn ChunkStore, reopen: &dyn Fn() -> Box<dyn ChunkStore>) {
    let mut enc = Encoder::new(3);
    let mut dec = Decoder::new();
    let data = chunk(1, 100_000);
    let id = ChunkId::of(&data);
    assert!(!store.has(&id).unwrap());
    assert!(matches!(store.get(&id), Err(Error::NotFound { .. })));
    assert_eq!(store.put(&id, enc.encode(&data)).unwrap(), Put::Stored);
    assert!(store.has(&id).unwrap(), "visible as soon as put returns");
    assert_eq!(
        store.put(&id, enc.encode(&data)).unwrap(),
        Put::AlreadyPresent
    );
    assert_eq!(
        dec.decode(&store.get(&id).unwrap(), &id).unwrap(),
        data,
        "readable before flush"
    );

    // Many writers, overlapping ids.
    let stored = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let stored = &stored;
            s.spawn(move || {
                let mut enc = Encoder::new(1);
                for i in 0..60u32 {
                    let d = chunk(1000 + (t * 30 + i), 20_000 + i as usize);
                    let d = if i % 2 == 0 {
                        d
                    } else {
                        chunk(5000 + i, 20_000 + i as usize)
                    };
                    if store.put(&ChunkId::of(&d), enc.encode(&d)).unwrap() == Put::Stored {
                        stored.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    store.flush().unwrap();

    let again = reopen();
    assert_eq!(
        dec.decode(&again.get(&id).unwrap(), &id).unwrap(),
        data,
        "durable after flush"
    );
    let mut distinct = std::collections::HashSet::new();
    for t in 0..4u32 {
        for i in 0..60u32 {
            let d = chunk(1000 + (t * 30 + i), 20_000 + i as usize);
            let d = if i % 2 == 0 {
                d
            } else {
                chunk(5000 + i, 20_000 + i as usize)
            };
            let cid = ChunkId::of(&d);
            distinct.insert(cid);
            assert_eq!(dec.decode(&again.get(&cid).unwrap(), &cid).unwrap(), d);
        }
    }
    assert_eq!(
        stored.into_inner(),
        distinct.len(),
        "each distinct chunk stored exactly once"
    );
    // Fetching many at once (neighbours in one request where the store can) gives the same
    // frames in the same order, repeats and a chunk from an earlier flush included.
    let mut ids: Vec<ChunkId> = distinct.iter().copied().collect();
    ids.sort();
    ids.insert(3, id);
    ids.push(ids[0]);
    let many = again.get_many(&ids).unwrap();
    assert_eq!(many.len(), ids.len());
    for (cid, frame) in ids.iter().zip(&many) {
        assert_eq!(frame, &again.get(cid).unwrap(), "get_many agrees with get");
    }
    assert!(matches!(
        again.get_many(&[id, ChunkId::of(b"never put")]),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        again.get(&ChunkId::of(b"never put")),
        Err(Error::NotFound { .. })
    ));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{FaultyBackend, LocalBackend, Repository, RepositoryOptions, Result};

    fn new_repo(dir: &std::path::Path) -> Repository {
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir));
        Repository::init(backend.clone()).unwrap();
        small_packs(backend)
    }

    fn small_packs(backend: Arc<dyn Backend>) -> Repository {
        Repository::open(
            backend,
            RepositoryOptions {
                pack_size: 300_000,
                writers: 3,
                cache_dir: None,
                password: None,
                // Small, so the suite also runs with segments written during a backup.
                segment_entries: 8,
            },
        )
        .unwrap()
    }

    #[test]
    fn local_backend_conforms() {
        let dir = tempfile::tempdir().unwrap();
        backend(&LocalBackend::new(dir.path()));
    }

    #[test]
    fn repository_conforms_directly_and_through_box_and_arc() {
        for wrap in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("repo");
            let repo = new_repo(&path);
            let reopen = || -> Box<dyn ChunkStore> {
                Box::new(small_packs(Arc::new(LocalBackend::new(&path))))
            };
            match wrap {
                0 => chunk_store(&repo, &reopen),
                1 => chunk_store(&(Box::new(repo) as Box<dyn ChunkStore>), &reopen),
                _ => chunk_store(&Arc::new(repo), &reopen),
            }
        }
    }

    #[test]
    fn init_refuses_non_empty_and_open_refuses_non_repository() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let b: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        assert!(matches!(
            Repository::init(b.clone()),
            Err(Error::NotEmpty { .. })
        ));
        assert!(matches!(
            Repository::open(b, RepositoryOptions::default()),
            Err(Error::NotARepository { .. })
        ));
    }

    #[test]
    fn failed_write_poisons_and_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let local: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        Repository::init(local.clone()).unwrap();
        // The first pack goes through; the second pack fails like a full disk.
        let faulty: Arc<dyn Backend> = Arc::new(FaultyBackend::new(local.clone(), 1));
        let repo = small_packs(faulty);
        let mut enc = Encoder::new(1);
        let mut err = None;
        for i in 0..40 {
            let d = chunk(i, 100_000);
            if let Err(e) = repo.put(&ChunkId::of(&d), enc.encode(&d)) {
                err = Some(e);
                break;
            }
        }
        let flushed = repo.flush();
        assert!(
            err.is_some() || flushed.is_err(),
            "the full disk is reported"
        );
        let d = chunk(99, 10);
        assert!(matches!(
            repo.put(&ChunkId::of(&d), enc.encode(&d)),
            Err(Error::Poisoned { .. })
        ));
        drop(repo);
        let reopened = small_packs(local);
        assert!(reopened.snapshot_ids().unwrap().is_empty());
        assert_eq!(
            reopened.chunk_count(),
            0,
            "no index segment names chunks of a failed run"
        );
    }

    /// A backend whose snapshot creates fail without an answer: the snapshot lands or not,
    /// and afterwards the snapshot can be looked up or not (the server went away).
    #[derive(Debug)]
    struct LostCommit {
        inner: Arc<dyn Backend>,
        lands: bool,
        reachable: bool,
    }

    impl Backend for LostCommit {
        fn location(&self) -> &str {
            self.inner.location()
        }
        fn put(&self, key: &str, data: &[u8]) -> Result<()> {
            self.inner.put(key, data)
        }
        fn put_new(&self, key: &str, data: &[u8]) -> Result<bool> {
            if !key.starts_with("snapshots/") {
                return self.inner.put_new(key, data);
            }
            if self.lands {
                self.inner.put_new(key, data)?;
            }
            Err(Error::Backend {
                location: key.into(),
                detail: "connection reset".into(),
            })
        }
        fn get(&self, key: &str) -> Result<Vec<u8>> {
            self.inner.get(key)
        }
        fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
            self.inner.get_range(key, offset, len)
        }
        fn size(&self, key: &str) -> Result<u64> {
            if !self.reachable && key.starts_with("snapshots/") {
                return Err(Error::Backend {
                    location: key.into(),
                    detail: "cannot reach the S3 endpoint".into(),
                });
            }
            self.inner.size(key)
        }
        fn list(&self, dir: &str) -> Result<Vec<String>> {
            self.inner.list(dir)
        }
        fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key)
        }
    }

    /// A commit whose answer is lost succeeds when the snapshot landed, fails when it did
    /// not, and says that it cannot tell when the store cannot be asked: never "failed" with
    /// a snapshot in place, never "committed" without one.
    #[test]
    fn a_commit_without_an_answer_is_checked() {
        use chunker::format::{BackupStats, Chunking, Disk, Entry, Manifest};
        let manifest = Manifest {
            created_ms: 1,
            nonce: [7; 16],
            parent: None,
            stats: BackupStats::default(),
            name: "vm".into(),
            disks: vec![Disk {
                name: "vm".into(),
                source: "vm.img".into(),
                chunking: Chunking::Fixed(1 << 20),
                source_len: 1 << 20,
                change_token: String::new(),
                stats: BackupStats::default(),
                entries: vec![Entry {
                    len: 1 << 20,
                    id: None,
                }],
            }],
            attachments: Vec::new(),
        };
        for (lands, reachable) in [(true, true), (false, true), (true, false)] {
            let dir = tempfile::tempdir().unwrap();
            let local: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
            Repository::init(local.clone()).unwrap();
            let repo = small_packs(Arc::new(LostCommit {
                inner: local.clone(),
                lands,
                reachable,
            }));
            let committed = repo.commit_snapshot(&manifest);
            let listed = small_packs(local).snapshot_ids().unwrap();
            match (lands, reachable) {
                (true, true) => assert_eq!(listed, [committed.unwrap()]),
                (false, _) => {
                    assert!(matches!(committed, Err(Error::Backend { .. })));
                    assert!(listed.is_empty());
                }
                (true, false) => {
                    let e = committed.unwrap_err();
                    assert!(matches!(e, Error::CommitUnknown { .. }), "{e}");
                    assert!(e.to_string().contains("mover snapshots"), "{e}");
                    assert_eq!(listed.len(), 1);
                }
            }
        }
    }
}

//! The repository: packs, index segments and snapshot manifests on top of a [`Backend`].
//!
//! # Layout
//!
//! ```text
//! config                 repository config (format version, id)
//! packs/ab/<pack id>     packs of encoded chunks, each with a trailer listing its contents
//! index/<segment id>     index segments: chunk id -> pack, offset, lengths
//! snapshots/<id>         snapshot manifests
//! ```
//!
//! # Commit order (durable before visible)
//!
//! 1. Chunks are appended to an in-memory pack. A full pack is handed to a writer thread,
//!    which stores it through [`Backend::put`] (atomic and durable when it returns).
//! 2. Only after a pack is durable do its chunks enter the in-memory index and the list of
//!    entries for this session's index segment.
//! 3. [`ChunkStore::flush`] seals the open pack, waits for the writer, then stores one index
//!    segment naming the new chunks. A long backup also stores one whenever
//!    [`RepositoryOptions::segment_entries`] durable chunks are not yet in a segment, so the
//!    chunks it holds in memory stay bounded.
//! 4. [`Repository::commit_snapshot`] flushes, then publishes the manifest with
//!    [`Backend::put_new`]. The manifest is the last thing written: a crash at any earlier
//!    point leaves only unreferenced packs or segments, which nothing trips over.
//!
//! A pack id is the BLAKE3 of its trailer (which lists the ids of every chunk in it, and so
//! covers its contents); each chunk is checked against its own id when read.

mod catalogs;
mod chunk_store;
mod index;
mod segment_file;
mod segments;
mod spans;
mod writer;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;

use chunker::format::{
    encode_index, BlobEntry, Config, IndexEntry, Manifest, ObjectId, PACK_HEADER_LEN,
};
use chunker::ChunkId;
use crossbeam_channel::{bounded, Sender};

use crate::crypt::{self, RepoCrypto};
use crate::layout::{
    checksum_holds, config_damaged, holds_repository, now_ms, object_ids, pack_key, random_bytes,
    segment_key, snapshot_key, CONFIG_KEY, INDEX_DIR, SNAPSHOTS_DIR,
};
use crate::tombstones::{check_commit, load_tombstones};
use crate::{Backend, ChunkStore, Error, Result};
use index::Index;
pub(crate) use segment_file::{Merged, SegmentFile};
use segments::{load_segment, store_cached};
pub(crate) use segments::{open_segment, Source};
use writer::{pack_writer, Job, PackBuf, Packer, Shared};

/// Settings of an open repository.
#[derive(Clone, Debug)]
pub struct RepositoryOptions {
    /// A pack is sealed once its data reaches this many bytes.
    pub pack_size: usize,
    /// Packs written at the same time (one thread each); more for remote stores, where each
    /// upload waits on the network.
    pub writers: usize,
    /// A local directory that caches index segments (keyed by repository id), so opening a
    /// remote repository downloads only segments it has not seen. Every cached segment is
    /// checked against its name before use.
    pub cache_dir: Option<PathBuf>,
    /// The password of an encrypted repository (ignored for an unencrypted one).
    pub password: Option<chunker::crypto::Password>,
    /// Once this many durable chunks of this process are not yet named by an index segment,
    /// they are written as one while the backup goes on (its packs are durable already), so
    /// a large backup's memory does not grow with the chunks it stores.
    pub segment_entries: usize,
}

impl RepositoryOptions {
    /// Bytes of packs that can be in memory at once (the one filling plus one per writer).
    pub fn buffered_bytes(&self) -> u64 {
        (self.pack_size as u64 + (1 << 20)) * (self.writers as u64 + 1)
    }
}

impl Default for RepositoryOptions {
    fn default() -> Self {
        RepositoryOptions {
            pack_size: 32 << 20,
            writers: 1,
            cache_dir: None,
            password: None,
            segment_entries: 1 << 17,
        }
    }
}

/// A mover repository. Implements [`ChunkStore`]; see the module docs for the commit order.
pub struct Repository {
    shared: Arc<Shared>,
    config: Config,
    options: RepositoryOptions,
    jobs: Mutex<Option<Sender<Job>>>,
    writers: Mutex<Vec<JoinHandle<()>>>,
    cache: Option<PathBuf>,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.location())
            .finish()
    }
}

/// The repository's config. A config that does not decode, or a lost one, in a location that
/// holds a repository's objects is damage with a remedy (`repair config`), not "no repository"
/// (issue 14, item 9).
fn read_config(backend: &dyn Backend, location: &str) -> Result<Config> {
    match backend.get(CONFIG_KEY) {
        Ok(bytes) => Config::decode(&bytes).or_else(|e| match e {
            e @ chunker::Error::UnsupportedVersion { .. } if checksum_holds(&bytes) => {
                Err(Error::Format(e))
            }
            e if holds_repository(backend, Some(&bytes))? => {
                Err(config_damaged(location, e.to_string()))
            }
            e => Err(Error::NotARepository {
                location: location.to_string(),
                detail: e.to_string(),
            }),
        }),
        Err(Error::NotFound { .. }) if holds_repository(backend, None)? => {
            Err(config_damaged(location, "no config found"))
        }
        Err(Error::NotFound { .. }) => Err(Error::NotARepository {
            location: location.to_string(),
            detail: "no config found".into(),
        }),
        Err(e) => Err(e),
    }
}

/// `init` refuses a location that holds objects, and says so when they are a repository whose
/// config is damaged.
pub(crate) fn refuse_non_empty(backend: &dyn Backend) -> Result<()> {
    if backend.list("")?.is_empty() {
        return Ok(());
    }
    let location = backend.location().to_string();
    Err(match read_config(backend, &location) {
        Err(e @ Error::ConfigDamaged { .. }) => e,
        _ => Error::NotEmpty { location },
    })
}

impl Repository {
    /// Creates a new, empty repository. Refuses a location that already holds objects, and
    /// says so when they are a repository whose config is damaged.
    pub fn init(backend: Arc<dyn Backend>) -> Result<Config> {
        refuse_non_empty(&*backend)?;
        let config = Config {
            id: random_bytes(),
            created_ms: now_ms(),
            encryption: None,
        };
        if !backend.put_new(CONFIG_KEY, &config.encode())? {
            return Err(Error::NotEmpty {
                location: backend.location().to_string(),
            });
        }
        Ok(config)
    }

    /// Opens an existing repository and loads its index.
    pub fn open(backend: Arc<dyn Backend>, options: RepositoryOptions) -> Result<Self> {
        let location = backend.location().to_string();
        let config = read_config(&*backend, &location)?;
        let crypto = crypt::unlock(&*backend, &config, options.password.as_ref())?;
        let cache = options
            .cache_dir
            .as_ref()
            .map(|d| d.join(ObjectId(config.id).to_hex()).join(INDEX_DIR));
        let mut index = Index::default();
        let mut warnings = Vec::new();
        let tombstones = load_tombstones(&*backend)?;
        for (key, e) in &tombstones.damaged {
            tracing::warn!("tombstone {key}: {e}; `mover check` reports it, `mover gc` removes it");
        }
        index.condemn(
            &tombstones
                .ok
                .iter()
                .flat_map(|t| t.packs.clone())
                .collect::<Vec<_>>(),
        );
        // A segment listed but gone when read was replaced by garbage collection, which
        // writes the segments replacing it first: listing again finds them.
        let mut loaded = HashSet::new();
        for attempt in 0..3 {
            let mut vanished = false;
            for key in backend.list(INDEX_DIR)? {
                if loaded.contains(&key) {
                    continue;
                }
                let src = Source {
                    backend: &*backend,
                    cache: cache.as_deref(),
                    crypto: crypto.as_ref(),
                };
                match open_segment(&src, &key, None) {
                    Ok(segment) => index.push(segment),
                    Err(Error::NotFound { .. }) if attempt < 2 => vanished = true,
                    Err(e) if e.is_damage() => {
                        tracing::warn!("skipping index segment {key}: {e}");
                        warnings.push(format!("index segment {key} skipped: {e}"));
                    }
                    Err(e) => return Err(e),
                }
                loaded.insert(key);
            }
            if !vanished {
                break;
            }
        }
        tracing::debug!(
            segments = index.segment_count(),
            memory = index.memory(),
            "index opened"
        );
        let shared = Arc::new(Shared {
            backend,
            crypto,
            index: RwLock::new(index),
            packer: Mutex::new(Packer {
                buf: PackBuf::default(),
                entries: Vec::new(),
                pending: HashSet::default(),
            }),
            session: Mutex::new(Vec::new()),
            poison: Mutex::new(None),
            spare: Mutex::new(Vec::new()),
            inflight: Mutex::new(0),
            idle: Condvar::new(),
        });
        let (tx, rx) = bounded(0);
        let mut writers = Vec::new();
        for n in 0..options.writers.max(1) {
            let (shared, rx) = (Arc::clone(&shared), rx.clone());
            let writer = std::thread::Builder::new()
                .name(format!("pack-writer-{n}"))
                .spawn(move || pack_writer(&shared, &rx))
                .map_err(|e| Error::io("start pack writer thread", "", e))?;
            writers.push(writer);
        }
        Ok(Repository {
            shared,
            config,
            options,
            jobs: Mutex::new(Some(tx)),
            writers: Mutex::new(writers),
            cache,
            warnings,
        })
    }

    /// Where the repository lives.
    pub fn location(&self) -> &str {
        self.shared.backend.location()
    }

    /// The options the repository was opened with.
    pub fn options(&self) -> &RepositoryOptions {
        &self.options
    }

    /// The repository config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How chunk ids are computed in this repository (keyed when it is encrypted).
    pub fn id_key(&self) -> chunker::IdKey {
        self.crypto()
            .map_or(chunker::IdKey::PLAIN, RepoCrypto::id_key)
    }

    pub(crate) fn crypto(&self) -> Option<&RepoCrypto> {
        self.shared.crypto.as_ref()
    }

    /// The backend under the repository.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.shared.backend
    }

    /// Problems found while opening (damaged index segments that were skipped).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Number of chunks in the index (with a copy in a pack that is not condemned). This
    /// reads every segment: it is for reports, not for loops.
    pub fn chunk_count(&self) -> usize {
        let index = self.shared.index.read().expect("index lock");
        index.live_count().unwrap_or_else(|e| {
            tracing::warn!("cannot count the chunks of the index: {e}");
            0
        })
    }

    /// Index segments open, and the bytes of memory their tables take.
    pub fn index_footprint(&self) -> (usize, usize) {
        let index = self.shared.index.read().expect("index lock");
        (index.segment_count(), index.memory())
    }

    /// The pack and blob entry holding a chunk, if indexed. A segment that cannot be read
    /// counts as not holding it (with a warning); [`Repository::try_locate`] says why.
    pub fn locate(&self, id: &ChunkId) -> Option<(ObjectId, BlobEntry)> {
        self.try_locate(id).unwrap_or_else(|e| {
            tracing::warn!("index lookup of chunk {id} failed: {e}");
            None
        })
    }

    /// The pack and blob entry holding a chunk, if indexed.
    pub fn try_locate(&self, id: &ChunkId) -> Result<Option<(ObjectId, BlobEntry)>> {
        let index = self.shared.index.read().expect("index lock");
        Ok(index.find(id)?.map(|f| (f.entry.pack, f.entry.blob)))
    }

    /// Flushes every chunk, then publishes `manifest`. Returns the snapshot id.
    pub fn commit_snapshot(&self, manifest: &Manifest) -> Result<ObjectId> {
        self.flush()?;
        // Garbage collection may have condemned packs this backup reused since it began: it
        // commits only while the sweep of those packs is still far enough away (see gc).
        let tombstones = load_tombstones(&*self.shared.backend)?;
        if let Some(e) = tombstones.newer {
            return Err(e);
        }
        check_commit(&tombstones.ok, manifest, |id| self.locate(id).map(|l| l.0))?;
        // In a locked repository every pack the snapshot needs is locked as long as it is.
        if self.shared.backend.lock_policy()?.is_some() {
            let packs = crate::lock::packs_of(manifest, |id| self.locate(id).map(|l| l.0));
            let cache = (self.options().cache_dir.as_ref())
                .map(|d| d.join(ObjectId(self.config().id).to_hex()).join("locks"));
            crate::lock::cover_packs(&*self.shared.backend, &packs, cache.as_deref())?;
        }
        let bytes = crypt::manifest_out(self.crypto(), manifest.encode());
        let id = ObjectId::of(&bytes);
        let key = snapshot_key(&id);
        match self.shared.backend.put_new(&key, &bytes) {
            Ok(true) => {}
            // Same bytes, same name: the snapshot is already there (a retried commit).
            Ok(false) => tracing::debug!("snapshot {} already committed", id.to_hex()),
            // A remote create may have landed with its answer lost: the snapshot's name is the
            // hash of its bytes, so if it is there, it is this one, whole. (A local failure,
            // a full disk or a failed fsync, is not looked past: it may not be durable.)
            Err(e @ Error::Backend { .. }) => match self.shared.backend.size(&key) {
                Ok(_) => tracing::info!("snapshot {} committed, its answer lost: {e}", id.to_hex()),
                Err(Error::NotFound { .. }) => return Err(e),
                Err(_) => {
                    return Err(Error::CommitUnknown {
                        snapshot: id.to_hex(),
                        detail: e.to_string(),
                    })
                }
            },
            Err(e) => return Err(e),
        }
        Ok(id)
    }

    /// Treats the chunks of `packs` as absent from now on (garbage collection condemned them):
    /// `has` stops reporting them and `put` stores fresh copies; reads still find them.
    pub fn condemn(&self, packs: &[ObjectId]) {
        self.shared
            .index
            .write()
            .expect("index lock")
            .condemn(packs);
    }

    /// The entries of an index segment (`index/<name>`), checked against its name.
    pub fn segment_entries(&self, key: &str) -> Result<Vec<IndexEntry>> {
        load_segment(
            &*self.shared.backend,
            key,
            self.cache.as_deref(),
            self.crypto(),
        )
    }

    /// Stores an index segment naming `entries`; returns its key.
    pub fn write_segment(&self, entries: &[IndexEntry]) -> Result<String> {
        self.store_segment(encode_index(entries), false)
            .map(|(key, _)| key)
    }

    /// Stores the index segment `plain`; returns its key, and with `keep` the plain bytes
    /// (for a remote repository without a cache, where they cannot be read back in place).
    pub(crate) fn store_segment(
        &self,
        plain: Vec<u8>,
        keep: bool,
    ) -> Result<(String, Option<Vec<u8>>)> {
        let local = self.crypto().is_none() && self.shared.backend.local_file("").is_some();
        let keep = keep && (self.cache.is_none() || self.crypto().is_some()) && !local;
        let kept = keep.then(|| plain.clone());
        let bytes = crypt::index_out(self.crypto(), plain);
        let name = ObjectId::of(&bytes).to_hex();
        let key = segment_key(&name);
        self.shared.backend.put(&key, &bytes)?;
        if let Some(cache) = &self.cache {
            store_cached(cache, &name, &bytes);
        }
        Ok((key, kept))
    }

    /// Where this repository's segments come from.
    pub(crate) fn segment_source(&self) -> Source<'_> {
        Source {
            backend: &*self.shared.backend,
            cache: self.cache.as_deref(),
            crypto: self.crypto(),
        }
    }

    /// What a pack says it holds: the entries of its trailer, checked against its checksum
    /// and the pack's id.
    pub fn pack_contents(&self, pack: &ObjectId) -> Result<Vec<BlobEntry>> {
        let key = pack_key(pack);
        let backend = &self.shared.backend;
        let size = backend.size(&key)?;
        let footer_len = chunker::format::PACK_FOOTER_LEN as u64;
        let corrupt = |detail: &str| Error::Corrupt {
            what: format!("pack {}", pack.to_hex()),
            detail: detail.into(),
        };
        if size < PACK_HEADER_LEN as u64 + footer_len {
            return Err(corrupt("shorter than a header and footer (truncated)"));
        }
        let footer = backend.get_range(&key, size - footer_len, footer_len as usize)?;
        let tail_len = crypt::trailer_len(self.crypto(), &footer)?;
        if tail_len + PACK_HEADER_LEN as u64 > size {
            return Err(corrupt("its trailer is longer than the pack (truncated)"));
        }
        let tail = backend.get_range(&key, size - tail_len, tail_len as usize)?;
        if ObjectId::of(&tail) != *pack {
            return Err(corrupt("its trailer does not match its id"));
        }
        crypt::trailer_in(self.crypto(), pack, &tail)
    }

    /// Ids of every committed snapshot.
    pub fn snapshot_ids(&self) -> Result<Vec<ObjectId>> {
        object_ids(&*self.shared.backend, SNAPSHOTS_DIR)
    }

    /// Loads a snapshot manifest and checks it against its id.
    pub fn load_snapshot(&self, id: &ObjectId) -> Result<Manifest> {
        let key = snapshot_key(id);
        let bytes = self.shared.backend.get(&key)?;
        if ObjectId::of(&bytes) != *id {
            return Err(Error::Corrupt {
                what: format!("snapshot {}", id.to_hex()),
                detail: "content does not match its id".into(),
            });
        }
        let bytes = crypt::manifest_in(self.crypto(), id, bytes)?;
        Manifest::decode(&bytes).map_err(|e| Error::Corrupt {
            what: format!("snapshot {}", id.to_hex()),
            detail: e.to_string(),
        })
    }

    /// Every readable snapshot, oldest first. A damaged manifest is skipped with a warning
    /// (`verify` reports it), so one bad file does not hide every other snapshot.
    pub fn snapshots(&self) -> Result<Vec<(ObjectId, Manifest)>> {
        let mut out = Vec::new();
        for id in self.snapshot_ids()? {
            match self.load_snapshot(&id) {
                Ok(m) => out.push((id, m)),
                Err(e) if e.is_damage() => {
                    tracing::warn!("skipping snapshot {}: {e}; run `mover verify`", id.to_hex());
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|(id, m)| (m.created_ms, *id));
        Ok(out)
    }

    /// Resolves `latest`, a full id or a unique id prefix, among snapshots named `name` when
    /// given.
    pub fn find_snapshot(&self, spec: &str, name: Option<&str>) -> Result<(ObjectId, Manifest)> {
        let spec = spec.to_ascii_lowercase();
        let what = |s: &str| match name {
            Some(n) => format!("snapshot '{s}' of '{n}'"),
            None => format!("snapshot '{s}'"),
        };
        if spec == "latest" {
            let all = self.snapshots()?;
            return all
                .into_iter()
                .rev()
                .find(|(_, m)| name.is_none_or(|n| m.name == n))
                .ok_or_else(|| Error::NotFound {
                    what: what("latest"),
                });
        }
        let matches: Vec<ObjectId> = self
            .snapshot_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&spec))
            .collect();
        let mut found = Vec::new();
        for id in matches {
            let m = self.load_snapshot(&id)?;
            if name.is_none_or(|n| m.name == n) {
                found.push((id, m));
            }
        }
        match found.len() {
            1 if !spec.is_empty() => Ok(found.pop().expect("one element")),
            0 => Err(Error::NotFound { what: what(&spec) }),
            count => Err(Error::Ambiguous {
                prefix: spec,
                count,
            }),
        }
    }
}

impl Drop for Repository {
    fn drop(&mut self) {
        // Closing the channel ends the writer; unflushed chunks are dropped (see the contract).
        self.jobs.lock().expect("jobs lock").take();
        for w in self.writers.lock().expect("writers lock").drain(..) {
            let _ = w.join();
        }
    }
}

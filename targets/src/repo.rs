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
//!    segment naming the new chunks.
//! 4. [`Repository::commit_snapshot`] flushes, then publishes the manifest with
//!    [`Backend::put_new`]. The manifest is the last thing written: a crash at any earlier
//!    point leaves only unreferenced packs or segments, which nothing trips over.
//!
//! A pack id is the BLAKE3 of its trailer (which lists the ids of every chunk in it, and so
//! covers its contents); each chunk is checked against its own id when read.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;

use chunker::format::{
    decode_index, encode_index, BlobEntry, Config, IndexEntry, Manifest, ObjectId, PACK_HEADER_LEN,
};
use chunker::{ChunkId, Frame, IdHasher};
use crossbeam_channel::{bounded, Receiver, Sender};

use crate::backend::DIRECT_IO_ALIGN;
use crate::crypt::{self, RepoCrypto};
use crate::layout::{
    now_ms, object_ids, pack_key, random_bytes, segment_key, snapshot_key, CONFIG_KEY, INDEX_DIR,
    SNAPSHOTS_DIR,
};
use crate::tombstones::{check_commit, load_tombstones};
use crate::{Backend, ChunkStore, Error, Put, Result};

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
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Loc {
    pack: u32,
    offset: u32,
    stored_len: u32,
    raw_len: u32,
    compression: chunker::Compression,
}

#[derive(Default)]
struct Index {
    map: HashMap<ChunkId, Loc, IdHasher>,
    /// Chunks whose only known copies are in packs that garbage collection condemned: still
    /// readable until the sweep, never reused by a backup (which stores a fresh copy).
    condemned_map: HashMap<ChunkId, Loc, IdHasher>,
    packs: Vec<ObjectId>,
    pack_numbers: HashMap<ObjectId, u32>,
    condemned: HashSet<u32>,
}

impl Index {
    fn pack_number(&mut self, pack: ObjectId) -> u32 {
        *self.pack_numbers.entry(pack).or_insert_with(|| {
            self.packs.push(pack);
            (self.packs.len() - 1) as u32
        })
    }

    /// Marks packs as condemned: their chunks stop counting as stored.
    fn condemn(&mut self, packs: &[ObjectId]) {
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

    fn get(&self, id: &ChunkId) -> Option<&Loc> {
        self.map.get(id).or_else(|| self.condemned_map.get(id))
    }

    fn insert(&mut self, e: &IndexEntry) {
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

/// The bytes of a pack being filled. They start on a direct-I/O boundary, so the local
/// backend writes them to the device with no copy (`backend::write_direct`): `vec` holds
/// `start` bytes of padding, then the pack. (Were `vec` ever to grow past its capacity, the
/// pack would move off the boundary and simply be written the ordinary way.)
#[derive(Default)]
struct PackBuf {
    vec: Vec<u8>,
    start: usize,
}

impl PackBuf {
    /// An empty buffer with room for `capacity` bytes of pack.
    fn with_capacity(capacity: usize) -> Self {
        let mut vec = Vec::with_capacity(capacity + DIRECT_IO_ALIGN);
        let addr = vec.as_ptr() as usize;
        let start = addr.next_multiple_of(DIRECT_IO_ALIGN) - addr;
        vec.resize(start, 0);
        PackBuf { vec, start }
    }

    /// Bytes of pack so far.
    fn len(&self) -> usize {
        self.vec.len() - self.start
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn room(&self) -> usize {
        self.vec.capacity() - self.vec.len()
    }

    /// The pack.
    fn bytes(&self) -> &[u8] {
        &self.vec[self.start..]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.vec[self.start..]
    }

    /// The vector to append to (the writers of trailers only append).
    fn appender(&mut self) -> &mut Vec<u8> {
        &mut self.vec
    }

    fn clear(&mut self) {
        self.vec.truncate(self.start);
    }
}

/// The pack being filled, and every chunk put but not yet durable.
struct Packer {
    buf: PackBuf,
    entries: Vec<BlobEntry>,
    pending: HashSet<ChunkId, IdHasher>,
}

struct Job {
    buf: PackBuf,
    entries: Vec<BlobEntry>,
    trailer_len: usize,
}

struct Shared {
    backend: Arc<dyn Backend>,
    /// The keys of an encrypted repository.
    crypto: Option<RepoCrypto>,
    index: RwLock<Index>,
    packer: Mutex<Packer>,
    /// Durable chunks not yet named by an index segment.
    session: Mutex<Vec<IndexEntry>>,
    poison: Mutex<Option<String>>,
    /// Pack buffers handed back by the writer, reused so each pack does not fault in fresh
    /// pages.
    spare: Mutex<Vec<PackBuf>>,
    /// Packs handed to writers and not yet durable (or failed); `idle` signals zero.
    inflight: Mutex<usize>,
    idle: Condvar,
}

impl Shared {
    fn check_poison(&self) -> Result<()> {
        match &*self.poison.lock().expect("poison lock") {
            Some(first) => Err(Error::Poisoned {
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }
    /// Whether a durable, indexed copy of the chunk exists.
    fn is_indexed(&self, id: &ChunkId) -> bool {
        self.index.read().expect("index lock").map.contains_key(id)
    }
    fn pack_done(&self) {
        let mut n = self.inflight.lock().expect("inflight lock");
        *n -= 1;
        if *n == 0 {
            self.idle.notify_all();
        }
    }
    fn set_poison(&self, e: &Error) {
        self.poison
            .lock()
            .expect("poison lock")
            .get_or_insert_with(|| e.to_string());
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

impl Repository {
    /// Creates a new, empty repository. Refuses a location that already holds objects.
    pub fn init(backend: Arc<dyn Backend>) -> Result<Config> {
        if !backend.list("")?.is_empty() {
            return Err(Error::NotEmpty {
                location: backend.location().to_string(),
            });
        }
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
        let config = match backend.get(CONFIG_KEY) {
            Ok(bytes) => Config::decode(&bytes).map_err(|e| match e {
                e @ chunker::Error::UnsupportedVersion { .. } => Error::Format(e),
                e => Error::NotARepository {
                    location: location.clone(),
                    detail: e.to_string(),
                },
            })?,
            Err(Error::NotFound { .. }) => {
                return Err(Error::NotARepository {
                    location,
                    detail: "no config found".into(),
                })
            }
            Err(e) => return Err(e),
        };
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
                match load_segment(&*backend, &key, cache.as_deref(), crypto.as_ref()) {
                    Ok(entries) => entries.iter().for_each(|e| index.insert(e)),
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
            chunks = index.map.len(),
            packs = index.packs.len(),
            "index loaded"
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

    /// Number of chunks in the index.
    pub fn chunk_count(&self) -> usize {
        self.shared.index.read().expect("index lock").map.len()
    }

    /// The pack and blob entry holding a chunk, if indexed.
    pub fn locate(&self, id: &ChunkId) -> Option<(ObjectId, BlobEntry)> {
        let index = self.shared.index.read().expect("index lock");
        index.get(id).map(|l| {
            let blob = BlobEntry {
                id: *id,
                offset: l.offset,
                stored_len: l.stored_len,
                raw_len: l.raw_len,
                compression: l.compression,
            };
            (index.packs[l.pack as usize], blob)
        })
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
        let bytes = crypt::index_out(self.crypto(), encode_index(entries));
        let name = ObjectId::of(&bytes).to_hex();
        let key = segment_key(&name);
        self.shared.backend.put(&key, &bytes)?;
        if let Some(cache) = &self.cache {
            store_cached(cache, &name, &bytes);
        }
        Ok(key)
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

    /// Hands the open pack to the writer. Called without the packer lock held: the writer
    /// takes that lock when a pack becomes durable.
    fn seal(&self, sealed: Option<(PackBuf, Vec<BlobEntry>)>) -> Result<()> {
        let Some((mut pack, entries)) = sealed else {
            return Ok(());
        };
        let trailer_len = crypt::trailer_out(self.crypto(), pack.appender(), &entries);
        let buf = pack.bytes_mut();
        if self.crypto().is_none() {
            // The footer's salt (see docs/FORMAT.md): a pack with the same contents list as a
            // condemned one must get a new id, or the fresh copy would land in the condemned
            // name. (A sealed trailer has a random nonce already.) The low byte stays 0: it
            // holds the flags of the footer.
            let salt_at = buf.len() - chunker::format::PACK_FOOTER_LEN + 4;
            let salt = u32::from_le_bytes(random_bytes::<4>()) & !0xff;
            buf[salt_at..salt_at + 4].copy_from_slice(&salt.to_le_bytes());
        }
        *self.shared.inflight.lock().expect("inflight lock") += 1;
        let jobs = self.jobs.lock().expect("jobs lock");
        let tx = jobs
            .as_ref()
            .expect("writers run while the repository is open");
        tx.send(Job {
            buf: pack,
            entries,
            trailer_len,
        })
        .map_err(|_| {
            self.shared.pack_done();
            Error::Poisoned {
                first: "pack writer stopped".into(),
            }
        })
    }

    /// Waits until every sealed pack is durable (or has failed).
    fn wait_for_writers(&self) {
        let mut n = self.shared.inflight.lock().expect("inflight lock");
        while *n > 0 {
            n = self.shared.idle.wait(n).expect("inflight lock");
        }
    }

    fn flush_inner(&self) -> Result<()> {
        let sealed = take_open_pack(&mut self.shared.packer.lock().expect("packer lock"));
        self.seal(sealed)?;
        self.wait_for_writers();
        self.shared.check_poison()?;
        let entries = std::mem::take(&mut *self.shared.session.lock().expect("session lock"));
        if entries.is_empty() {
            return Ok(());
        }
        self.write_segment(&entries).map(drop)
    }

    /// Cuts the bytes of `span` (read from its pack) into the frames of its chunks, each with
    /// its position in the request. A span of one chunk hands its buffer over uncopied.
    fn split_span(
        &self,
        span: &Span,
        located: &[Option<(ObjectId, BlobEntry)>],
        mut bytes: Vec<u8>,
    ) -> Result<Vec<(usize, Frame)>> {
        let mut out = Vec::with_capacity(span.members.len());
        for &i in &span.members {
            let (_, blob) = located[i].expect("span members are located");
            let at = (u64::from(blob.offset) - span.start) as usize;
            let len = blob.stored_len as usize;
            let stored = if span.members.len() == 1 && at == 0 && len == bytes.len() {
                std::mem::take(&mut bytes)
            } else {
                bytes[at..at + len].to_vec()
            };
            out.push((
                i,
                Frame {
                    compression: blob.compression,
                    raw_len: blob.raw_len,
                    bytes: crypt::blob_in(self.crypto(), &span.pack, &blob.id, stored)?,
                },
            ));
        }
        Ok(out)
    }
}

fn take_open_pack(packer: &mut Packer) -> Option<(PackBuf, Vec<BlobEntry>)> {
    if packer.entries.is_empty() {
        return None;
    }
    Some((
        std::mem::take(&mut packer.buf),
        std::mem::take(&mut packer.entries),
    ))
}

/// Most bytes between two chunks of one pack that a read spans rather than split in two:
/// one request costs the server more than reading a little further (Garage, for one, reads
/// whole 1 MiB blocks either way).
const READ_THROUGH: u64 = 1 << 20;

/// One ranged read of a pack that serves several chunks of a [`ChunkStore::get_many`] call.
#[derive(Debug, PartialEq, Eq)]
struct Span {
    pack: ObjectId,
    /// Byte range in the pack.
    start: u64,
    end: u64,
    /// Positions in the request of the chunks it serves, in pack order.
    members: Vec<usize>,
}

/// Groups located chunks into ranged reads: sorted by pack and offset, neighbours (at most
/// [`READ_THROUGH`] bytes apart) share one read. A backup's workers finish chunks in any
/// order, so chunks that neighbour in the image neighbour in the pack only as a set; this
/// finds them whatever order they are asked for in. Chunks asked for twice share a read.
fn pack_spans(located: &[Option<(ObjectId, BlobEntry)>]) -> Vec<Span> {
    let mut order: Vec<(ObjectId, u64, u64, usize)> = located
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            l.map(|(pack, b)| {
                let start = u64::from(b.offset);
                (pack, start, start + u64::from(b.stored_len), i)
            })
        })
        .collect();
    order.sort_unstable_by_key(|&(pack, start, _, i)| (pack, start, i));
    let mut spans: Vec<Span> = Vec::new();
    for (pack, start, end, i) in order {
        match spans.last_mut() {
            Some(s) if s.pack == pack && start <= s.end + READ_THROUGH => {
                s.end = s.end.max(end);
                s.members.push(i);
            }
            _ => spans.push(Span {
                pack,
                start,
                end,
                members: vec![i],
            }),
        }
    }
    spans
}

/// Loads an index segment, from the local cache when a valid copy is there.
fn load_segment(
    backend: &dyn Backend,
    key: &str,
    cache: Option<&std::path::Path>,
    crypto: Option<&RepoCrypto>,
) -> Result<Vec<IndexEntry>> {
    let name = key.rsplit('/').next().unwrap_or(key);
    let valid = |bytes: &[u8]| ObjectId::from_hex(name) == Some(ObjectId::of(bytes));
    if let Some(bytes) = cache.and_then(|c| std::fs::read(c.join(name)).ok()) {
        if valid(&bytes) {
            return Ok(decode_index(&crypt::index_in(crypto, key, &bytes)?)?);
        }
    }
    let bytes = backend.get(key)?;
    if !valid(&bytes) {
        return Err(Error::Corrupt {
            what: key.into(),
            detail: "content does not match its name".into(),
        });
    }
    let entries = decode_index(&crypt::index_in(crypto, key, &bytes)?)?;
    if let Some(cache) = cache {
        store_cached(cache, name, &bytes);
    }
    Ok(entries)
}

/// Best effort: a cache that cannot be written only costs a download next time.
fn store_cached(dir: &std::path::Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let ok = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, dir.join(name)));
    if let Err(e) = ok {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!(
            "cannot cache index segment {name} in {}: {e}",
            dir.display()
        );
    }
}

/// A writer thread: stores sealed packs, then makes their chunks visible in the index.
fn pack_writer(shared: &Shared, jobs: &Receiver<Job>) {
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

fn write_pack(shared: &Shared, mut buf: PackBuf, entries: &[BlobEntry], trailer_len: usize) {
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

impl ChunkStore for Repository {
    fn has(&self, id: &ChunkId) -> Result<bool> {
        if self.shared.is_indexed(id) {
            return Ok(true);
        }
        Ok(self
            .shared
            .packer
            .lock()
            .expect("packer lock")
            .pending
            .contains(id))
    }

    fn put(&self, id: &ChunkId, frame: Frame) -> Result<Put> {
        self.shared.check_poison()?;
        if self.shared.crypto.is_some() && self.has(id)? {
            return Ok(Put::AlreadyPresent); // known: not sealed for nothing
        }
        // Sealed before the lock, so workers asking `has` do not wait on the cipher.
        let frame = crypt::seal_frame(self.crypto(), id, frame);
        let mut packer = self.shared.packer.lock().expect("packer lock");
        if packer.pending.contains(id) || self.shared.is_indexed(id) {
            return Ok(Put::AlreadyPresent);
        }
        if packer.buf.is_empty() {
            let room = self.options.pack_size + (1 << 20);
            if let Some(spare) = self.shared.spare.lock().expect("spare lock").pop() {
                packer.buf = spare;
            }
            if packer.buf.room() < room {
                packer.buf = PackBuf::with_capacity(room);
            }
            packer
                .buf
                .appender()
                .extend_from_slice(&crypt::pack_header(self.crypto()));
        }
        let offset = packer.buf.len();
        if offset + frame.bytes.len() > u32::MAX as usize {
            return Err(Error::Corrupt {
                what: format!("chunk {id}"),
                detail: "frame too large for a pack".into(),
            });
        }
        packer.buf.appender().extend_from_slice(&frame.bytes);
        packer.entries.push(BlobEntry {
            id: *id,
            offset: offset as u32,
            stored_len: frame.bytes.len() as u32,
            raw_len: frame.raw_len,
            compression: frame.compression,
        });
        packer.pending.insert(*id);
        if packer.buf.len() - PACK_HEADER_LEN >= self.options.pack_size {
            let sealed = take_open_pack(&mut packer);
            drop(packer);
            if let Err(e) = self.seal(sealed) {
                self.shared.set_poison(&e);
                return Err(e);
            }
        }
        Ok(Put::Stored)
    }

    fn get(&self, id: &ChunkId) -> Result<Frame> {
        let mut located = self.locate(id);
        if located.is_none()
            && self
                .shared
                .packer
                .lock()
                .expect("packer lock")
                .pending
                .contains(id)
        {
            self.flush()?;
            located = self.locate(id);
        }
        let (pack, blob) = located.ok_or_else(|| Error::NotFound {
            what: format!("chunk {id}"),
        })?;
        let bytes = self.shared.backend.get_range(
            &pack_key(&pack),
            u64::from(blob.offset),
            blob.stored_len as usize,
        )?;
        Ok(Frame {
            compression: blob.compression,
            raw_len: blob.raw_len,
            bytes: crypt::blob_in(self.crypto(), &pack, id, bytes)?,
        })
    }

    fn get_many(&self, ids: &[ChunkId]) -> Result<Vec<Frame>> {
        let located: Vec<_> = ids.iter().map(|id| self.locate(id)).collect();
        let mut out: Vec<Option<Frame>> = std::iter::repeat_with(|| None).take(ids.len()).collect();
        for span in pack_spans(&located) {
            let bytes = self.shared.backend.get_range(
                &pack_key(&span.pack),
                span.start,
                (span.end - span.start) as usize,
            )?;
            for (i, frame) in self.split_span(&span, &located, bytes)? {
                out[i] = Some(frame);
            }
        }
        ids.iter()
            .zip(out)
            .map(|(id, frame)| frame.map_or_else(|| self.get(id), Ok))
            .collect()
    }

    fn flush(&self) -> Result<()> {
        self.shared.check_poison()?;
        let result = self.flush_inner();
        if let Err(e) = &result {
            self.shared.set_poison(e);
        }
        result
    }

    fn id_key(&self) -> chunker::IdKey {
        Repository::id_key(self)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pack: u8, offset: u32, len: u32) -> Option<(ObjectId, BlobEntry)> {
        let blob = BlobEntry {
            id: ChunkId::of(&[pack, offset as u8]),
            offset,
            stored_len: len,
            raw_len: len,
            compression: chunker::Compression::None,
        };
        Some((ObjectId([pack; 32]), blob))
    }

    fn ranges(spans: &[Span]) -> Vec<(u8, u64, u64, Vec<usize>)> {
        spans
            .iter()
            .map(|s| (s.pack.0[0], s.start, s.end, s.members.clone()))
            .collect()
    }

    #[test]
    fn neighbours_in_a_pack_share_a_read_in_any_order() {
        // Stored as 30, 10, 20 (workers finished out of order); asked for as 10, 20, 30.
        let located = [at(1, 130, 30), at(1, 100, 30), at(1, 160, 5)];
        let spans = pack_spans(&located);
        assert_eq!(ranges(&spans), vec![(1, 100, 165, vec![1, 0, 2])]);
    }

    #[test]
    fn other_packs_gaps_repeats_and_unknown_chunks() {
        let gap = READ_THROUGH as u32;
        let located = [
            at(2, 0, 10),
            at(1, 50, 10),
            None,
            at(1, 60 + gap, 10),         // a gap it reads through
            at(1, 50, 10),               // asked for twice: one read
            at(1, 70 + 2 * gap + 1, 10), // a gap one byte too long: a second read
        ];
        let spans = pack_spans(&located);
        let far = u64::from(70 + 2 * gap + 1);
        assert_eq!(
            ranges(&spans),
            vec![
                (1, 50, u64::from(70 + gap), vec![1, 4, 3]),
                (1, far, far + 10, vec![5]),
                (2, 0, 10, vec![0])
            ]
        );
    }
}

//! Tape-style archives in the pipeline: [`ArchiveTarget`] takes a backup's chunks in source
//! order and writes them, with map frames that say where each chunk goes, so that
//! [`restore_archive`] can put the image back together in one sequential read, as frames
//! arrive, without a repository. Also: loading an archive into a repository, writing one from
//! a repository snapshot, and the catalog file of incremental archive chains.
//!
//! # Map frames (mover's use of the format's opaque map payload, `docs/ARCHIVE.md`)
//!
//! Before each chunk frame the target writes a map frame holding the entries placed since the
//! last one: version u8 (1), entry count u32, then per entry disk u32, index u64, offset u64,
//! length u32, kind u8 (0 zero, 1 data) and chunk id (32; zero for kind 0) — 57 bytes. A data
//! entry's chunk is either the next chunk frame, a chunk earlier in this archive, or (for an
//! incremental) one held by an earlier archive of the chain.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use chunker::crypto::{Aead, Password};
use chunker::format::{Entry, Manifest, ObjectId};
use chunker::{ChunkId, Compression, Decoder, Frame, IdKey};
use serde::{Deserialize, Serialize};
use targets::archive::{
    ArchiveHeader, ArchiveId, ArchiveKey, ArchiveReader, ArchiveSummary, ArchiveWriter, Damage,
    Event, ReaderOptions, Trailer, VolumeSink,
};
use targets::{ChunkStore, Put, Repository};

use crate::restore::{with_destination, Sink, ZEROS};
use crate::{BackupTarget, Destination, Error, Progress, Result};

const MAP_VERSION: u8 = 1;
const MAP_ENTRY: usize = 57;
/// A map frame is flushed before the next chunk frame, or when it grows this large.
const MAP_FLUSH: usize = 1 << 20;

/// One placed entry, as carried by a map frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Placed {
    disk: u32,
    index: u64,
    offset: u64,
    len: u32,
    id: Option<ChunkId>,
}

fn encode_entry(out: &mut Vec<u8>, p: &Placed) {
    out.extend_from_slice(&p.disk.to_le_bytes());
    out.extend_from_slice(&p.index.to_le_bytes());
    out.extend_from_slice(&p.offset.to_le_bytes());
    out.extend_from_slice(&p.len.to_le_bytes());
    out.push(u8::from(p.id.is_some()));
    out.extend_from_slice(p.id.as_ref().map_or(&[0; 32], |id| id.as_bytes()));
}

fn decode_map(buf: &[u8]) -> Option<Vec<Placed>> {
    let (&version, rest) = buf.split_first()?;
    if version != MAP_VERSION || rest.len() < 4 {
        return None;
    }
    let count = u32::from_le_bytes(rest[..4].try_into().ok()?) as usize;
    let body = &rest[4..];
    if body.len() != count.checked_mul(MAP_ENTRY)? {
        return None;
    }
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8"));
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4"));
    body.chunks_exact(MAP_ENTRY)
        .map(|e| {
            let id = match e[24] {
                0 => None,
                1 => Some(ChunkId::from_bytes(e[25..57].try_into().expect("32"))),
                _ => return None,
            };
            Some(Placed {
                disk: u32_at(e, 0),
                index: u64_at(e, 4),
                offset: u64_at(e, 12),
                len: u32_at(e, 20),
                id,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Writing.

type Writer = ArchiveWriter<Box<dyn VolumeSink + Send>>;

struct WriteState {
    writer: Option<Writer>,
    map: Vec<u8>,
    map_entries: u32,
    /// The encoded last entry of the map frame before, repeated at the start of the next:
    /// it names the chunk frame between them, so that chunk can still be placed when that
    /// earlier map frame is lost.
    last_entry: Vec<u8>,
    /// Next offset of each disk (entries arrive in order).
    offsets: Vec<u64>,
    /// Chunks written to this archive, for the catalog file.
    written: Vec<ChunkId>,
    summary: Option<ArchiveSummary>,
}

impl WriteState {
    fn writer(&mut self) -> targets::Result<&mut Writer> {
        self.writer.as_mut().ok_or_else(poisoned)
    }

    fn flush_map(&mut self) -> targets::Result<()> {
        if self.map_entries == 0 {
            return Ok(());
        }
        let repeated = u32::from(!self.last_entry.is_empty());
        let mut payload = Vec::with_capacity(5 + MAP_ENTRY + self.map.len());
        payload.push(MAP_VERSION);
        payload.extend_from_slice(&(self.map_entries + repeated).to_le_bytes());
        payload.extend_from_slice(&self.last_entry);
        self.last_entry = self.map[self.map.len() - MAP_ENTRY..].to_vec();
        payload.append(&mut self.map);
        self.map_entries = 0;
        self.writer()?.put_map(&payload)
    }
}

fn poisoned() -> targets::Error {
    targets::Error::Poisoned {
        first: "an earlier write to this archive failed".into(),
    }
}

/// A backup target that writes a tape-style archive (to a file, volumes, a pipe or a tape).
pub struct ArchiveTarget {
    state: Mutex<WriteState>,
    /// Chunks this archive (or an earlier archive of its chain) holds: for `has`, which many
    /// workers ask while the writer thread is busy writing.
    held: Mutex<HashSet<ChunkId>>,
    /// How chunk ids are computed for this archive (keyed when it is encrypted).
    id_key: IdKey,
}

impl ArchiveTarget {
    /// Starts an archive on `sink`; `known` are the chunks earlier archives of the chain hold
    /// (an incremental writes only the others). With a key the archive is encrypted.
    pub fn new(
        sink: Box<dyn VolumeSink + Send>,
        options: &targets::archive::ArchiveOptions,
        header: ArchiveHeader,
        known: Vec<ChunkId>,
        key: Option<ArchiveKey>,
    ) -> Result<Self> {
        let disks = header.disks.len();
        let id_key = key.as_ref().map_or(IdKey::PLAIN, |k| k.keys.id_key());
        let mut writer = ArchiveWriter::with_key(sink, options, header, key)?;
        writer.add_known(known.iter().copied());
        Ok(ArchiveTarget {
            state: Mutex::new(WriteState {
                writer: Some(writer),
                map: Vec::new(),
                map_entries: 0,
                last_entry: Vec::new(),
                offsets: vec![0; disks],
                written: Vec::new(),
                summary: None,
            }),
            held: Mutex::new(known.into_iter().collect()),
            id_key,
        })
    }

    /// The archive's id.
    pub fn id(&self) -> Option<ArchiveId> {
        let state = self.state.lock().expect("archive lock");
        state
            .writer
            .as_ref()
            .map(|w| w.id())
            .or(state.summary.as_ref().map(|s| s.id))
    }

    /// What the finished archive holds, and the chunks it wrote (once committed).
    pub fn finished(&self) -> Option<(ArchiveSummary, Vec<ChunkId>)> {
        let state = self.state.lock().expect("archive lock");
        state.summary.clone().map(|s| (s, state.written.clone()))
    }
}

impl BackupTarget for ArchiveTarget {
    fn has(&self, id: &ChunkId) -> targets::Result<bool> {
        Ok(self.held.lock().expect("held lock").contains(id))
    }

    fn put(&self, id: &ChunkId, frame: Frame) -> targets::Result<Put> {
        let mut state = self.state.lock().expect("archive lock");
        let result = state
            .flush_map()
            .and_then(|()| state.writer()?.put_chunk(id, frame));
        match result {
            Ok(true) => {
                state.written.push(*id);
                self.held.lock().expect("held lock").insert(*id);
                Ok(Put::Stored)
            }
            Ok(false) => Ok(Put::AlreadyPresent),
            Err(e) => {
                state.writer = None; // poisoned: nothing more is written
                Err(e)
            }
        }
    }

    fn buffered_bytes(&self) -> u64 {
        // A frame being written plus the record buffer.
        8 << 20
    }

    fn ordered(&self) -> bool {
        true
    }

    fn id_key(&self) -> IdKey {
        self.id_key
    }

    fn place(&self, disk: usize, index: u64, entry: &Entry) -> Result<()> {
        let mut state = self.state.lock().expect("archive lock");
        let offset = state.offsets[disk];
        state.offsets[disk] += u64::from(entry.len);
        let placed = Placed {
            disk: disk as u32,
            index,
            offset,
            len: entry.len,
            id: entry.id,
        };
        encode_entry(&mut state.map, &placed);
        state.map_entries += 1;
        if state.map.len() >= MAP_FLUSH {
            state.flush_map()?;
        }
        Ok(())
    }

    fn commit(&self, manifest: &Manifest) -> Result<ObjectId> {
        let mut state = self.state.lock().expect("archive lock");
        state.flush_map()?;
        if crate::sys::interrupted() {
            return Err(Error::Interrupted);
        }
        let bytes = manifest.encode();
        let writer = state.writer.take().ok_or_else(poisoned)?;
        state.summary = Some(writer.finish(&bytes)?);
        Ok(ObjectId::of(&bytes))
    }
}

// ---------------------------------------------------------------------------------------------
// The catalog of an incremental chain (like GNU tar's --listed-incremental).

/// What `--catalog FILE` keeps between runs: the archives of the current chain, the chunks
/// each holds, and the last archive's manifest (the next incremental's parent).
#[derive(Serialize, Deserialize, Default)]
pub struct Catalog {
    /// Format of this file (1).
    pub version: u32,
    /// The chain, oldest (the full) first.
    pub chain: Vec<CatalogArchive>,
    /// Hex of the last archive's manifest encoding (sealed with the chain's key when the
    /// chain is encrypted).
    pub manifest: String,
    /// Hex of the key object of an encrypted chain (its master key wrapped with the
    /// password): every archive of the chain uses that key, so chunk ids stay comparable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The cipher of an encrypted chain (`aes-256-gcm` or `xchacha20-poly1305`); absent in
    /// catalogs written before AES-256-GCM was offered, whose chains are XChaCha20-Poly1305.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
}

/// One archive of a chain.
#[derive(Serialize, Deserialize)]
pub struct CatalogArchive {
    /// Archive id, hex.
    pub id: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
    /// Hex ids of the chunks it holds.
    pub chunks: Vec<String>,
}

impl Catalog {
    /// Reads a catalog file; a missing file is an empty catalog.
    pub fn load(path: &std::path::Path) -> Result<Catalog> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Catalog::default()),
            Err(e) => return Err(catalog_error(path, &e.to_string())),
        };
        let c: Catalog =
            serde_json::from_str(&text).map_err(|e| catalog_error(path, &e.to_string()))?;
        if c.version != 1 {
            return Err(catalog_error(
                path,
                &format!("unknown version {}", c.version),
            ));
        }
        Ok(c)
    }

    /// The key of an encrypted chain, opened with `password`; `None` for a clear chain.
    pub fn chain_key(
        &self,
        path: &std::path::Path,
        password: Option<&Password>,
    ) -> Result<Option<ArchiveKey>> {
        let Some(hex) = &self.key else {
            return Ok(None);
        };
        let bytes = unhex(hex).ok_or_else(|| catalog_error(path, "bad key"))?;
        let location = format!("the archive chain of catalog {}", path.display());
        let password = password.ok_or_else(|| targets::Error::PasswordRequired {
            location: location.clone(),
        })?;
        let aead = match &self.cipher {
            None => Aead::XChaCha20Poly1305,
            Some(name) => Aead::from_name(name)
                .ok_or_else(|| catalog_error(path, &format!("unknown cipher {name}")))?,
        };
        Ok(Some(ArchiveKey::open(&bytes, password, &location, aead)?))
    }

    /// Records the last archive's manifest (sealed with the chain's key, if any).
    pub fn set_manifest(&mut self, manifest: &Manifest, key: Option<&ArchiveKey>) {
        let plain = manifest.encode();
        self.manifest = hex(&match key {
            Some(k) => chunker::format::seal_object(
                &k.keys,
                &chunker::format::MANIFEST_MAGIC,
                chunker::format::MANIFEST_VERSION_SEALED,
                &plain,
            ),
            None => plain,
        });
        self.key = key.map(|k| hex(&k.key_file.encode()));
        self.cipher = key.map(|k| k.keys.aead().name().to_string());
    }

    /// The last archive's manifest and its snapshot id, when the chain is not empty.
    pub fn parent(
        &self,
        path: &std::path::Path,
        key: Option<&ArchiveKey>,
    ) -> Result<Option<(ObjectId, Manifest)>> {
        if self.chain.is_empty() {
            return Ok(None);
        }
        let bytes = unhex(&self.manifest).ok_or_else(|| catalog_error(path, "bad manifest"))?;
        let bytes = match key {
            Some(k) => chunker::format::open_object(
                &k.keys,
                "the catalog's manifest",
                &chunker::format::MANIFEST_MAGIC,
                chunker::format::MANIFEST_VERSION_SEALED,
                &bytes,
            )
            .map_err(|e| catalog_error(path, &e.to_string()))?,
            None => bytes,
        };
        let m = Manifest::decode(&bytes).map_err(|e| catalog_error(path, &e.to_string()))?;
        Ok(Some((ObjectId::of(&bytes), m)))
    }

    /// Every chunk the chain holds.
    pub fn chunks(&self, path: &std::path::Path) -> Result<Vec<ChunkId>> {
        self.chain
            .iter()
            .flat_map(|a| &a.chunks)
            .map(|h| ChunkId::from_hex(h).ok_or_else(|| catalog_error(path, "bad chunk id")))
            .collect()
    }

    /// The chain's archive ids, oldest first.
    pub fn ids(&self) -> Vec<ArchiveId> {
        self.chain
            .iter()
            .filter_map(|a| ArchiveId::from_hex(&a.id))
            .collect()
    }

    /// Writes the catalog atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let text = serde_json::to_string(self).expect("a catalog serialises");
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".mover-{}.tmp", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            catalog_error(path, &e.to_string())
        })
    }
}

fn catalog_error(path: &std::path::Path, detail: &str) -> Error {
    Error::Incremental(format!(
        "catalog {}: {detail}; give the catalog file the last archive wrote, or start a new chain with a full archive",
        path.display()
    ))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Reading: a spool for chunks that may be needed again.

/// Chunks kept aside (as stored frames) in an unlinked temporary file, for data a later map
/// entry may ask for again. Memory holds only the index.
struct Spool {
    file: Option<File>,
    end: u64,
    index: HashMap<ChunkId, (u64, u32, Compression, u32)>,
}

impl Spool {
    fn new() -> Self {
        Spool {
            file: None,
            end: 0,
            index: HashMap::new(),
        }
    }

    fn file(&mut self) -> Result<&mut File> {
        if self.file.is_none() {
            let dir = std::env::temp_dir();
            let path = dir.join(format!(
                ".mover-spool-{}-{}",
                std::process::id(),
                hex(&targets::random_bytes::<6>())
            ));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| spool_error(&dir, e))?;
            let _ = std::fs::remove_file(&path); // unlinked: gone when closed
            self.file = Some(f);
        }
        Ok(self.file.as_mut().expect("just opened"))
    }

    fn has(&self, id: &ChunkId) -> bool {
        self.index.contains_key(id)
    }

    fn put(&mut self, id: &ChunkId, frame: &Frame) -> Result<()> {
        if self.has(id) {
            return Ok(());
        }
        let at = self.end;
        let f = self.file()?;
        f.write_all_at(&frame.bytes, at)
            .map_err(|e| spool_error(&std::env::temp_dir(), e))?;
        self.end += frame.bytes.len() as u64;
        self.index.insert(
            *id,
            (
                at,
                frame.bytes.len() as u32,
                frame.compression,
                frame.raw_len,
            ),
        );
        Ok(())
    }

    fn get(&mut self, id: &ChunkId, decoder: &mut Decoder, out: &mut Vec<u8>) -> Result<bool> {
        let Some(&(at, len, compression, raw_len)) = self.index.get(id) else {
            return Ok(false);
        };
        let mut bytes = vec![0; len as usize];
        self.file()?
            .read_exact_at(&mut bytes, at)
            .map_err(|e| spool_error(&std::env::temp_dir(), e))?;
        let frame = Frame {
            compression,
            raw_len,
            bytes,
        };
        decoder.decode_into(&frame, id, out)?;
        Ok(true)
    }
}

fn spool_error(dir: &std::path::Path, e: std::io::Error) -> Error {
    Error::Destination {
        path: format!("the spool in {}", dir.display()),
        source: std::io::Error::new(
            e.kind(),
            format!("{e}; set TMPDIR to a filesystem with room for the archive's chunks"),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Restoring.

/// Where an archive comes from: one stream (a file, a pipe, stdin, a tape) or numbered volume
/// files.
pub enum ArchiveInput {
    /// A stream.
    Stream(Box<dyn Read + Send>),
    /// `NAME.000`, `NAME.001`, …
    Volumes(targets::archive::FileVolumeSet),
}

impl ArchiveInput {
    fn reader<'a>(self, strict: bool, password: Option<&Password>) -> ArchiveReader<'a> {
        let options = ReaderOptions {
            strict,
            decode: false,
            password: password.cloned(),
        };
        match self {
            ArchiveInput::Stream(r) => ArchiveReader::new(r, options),
            ArchiveInput::Volumes(v) => ArchiveReader::from_volumes(v, options),
        }
    }
}

/// Settings of an archive restore.
#[derive(Clone, Debug, Default)]
pub struct ArchiveRestoreOptions {
    /// The disk to restore, for an archive of several.
    pub disk: Option<String>,
    /// Stop at the first damage (exit 1) instead of restoring what is intact.
    pub strict: bool,
    /// Replace an existing regular file.
    pub force: bool,
    /// fsync before reporting success.
    pub sync: bool,
    /// The password of encrypted archives.
    pub password: Option<Password>,
}

/// What an archive restore did.
#[derive(Clone, Debug, Default)]
pub struct ArchiveRestoreReport {
    /// The restored disk.
    pub disk: String,
    /// Its length.
    pub bytes_total: u64,
    /// Bytes written (holes in files not counted).
    pub bytes_written: u64,
    /// Chunks read from the archives.
    pub chunks_read: u64,
    /// The snapshot id of the restored archive's manifest, when it was read.
    pub snapshot: Option<ObjectId>,
    /// Damage found, one line each.
    pub damage: Vec<String>,
    /// Byte ranges of the disk that could not be restored (zeros were left there).
    pub lost: Vec<(u64, u64)>,
    /// The trailer checked out (every frame read, totals and archive hash match).
    pub verified: bool,
}

/// Restores one disk from a chain of archives (the full first, the incremental to restore
/// last), reading each once, in order. Chunks of the earlier archives, and chunks that a later
/// entry may need again, are kept aside in a spool in `$TMPDIR`; the last archive's chunks are
/// written as they arrive (positionally, or in order to a stream).
///
/// Damage is skipped and reported (`report.damage`, `report.lost`); with `strict` the first
/// damage is an error. Wrong data is never written: every chunk is checked against its id.
pub fn restore_archive(
    inputs: Vec<ArchiveInput>,
    dest: &Destination,
    opts: &ArchiveRestoreOptions,
    progress: &Progress,
) -> Result<ArchiveRestoreReport> {
    let mut spool = Spool::new();
    let mut decoder = Decoder::new();
    let mut report = ArchiveRestoreReport::default();
    let count = inputs.len();
    let mut inputs = inputs.into_iter();
    let mut chain: Vec<ArchiveId> = Vec::new();
    for _ in 1..count {
        let input = inputs.next().expect("count");
        for event in input.reader(opts.strict, opts.password.as_ref()) {
            match event? {
                Event::Keyed(k, _) => decoder = Decoder::with_id_key(k),
                Event::Header(h) => chain.push(h.id),
                Event::ChunkFrame { id, frame } => {
                    let mut out = Vec::new();
                    decoder.decode_into(&frame, &id, &mut out)?;
                    spool.put(&id, &frame)?;
                    report.chunks_read += 1;
                }
                Event::Damage(d) => report.damage.push(damage_line(&d)),
                _ => {}
            }
        }
    }
    let last = inputs.next().ok_or_else(|| {
        Error::Incremental("no archive given; name one with --from-archive".into())
    })?;
    let mut reader = last.reader(opts.strict, opts.password.as_ref());
    // Everything before the header (volume frames, damage) is noted; the header picks the disk.
    let header =
        loop {
            match reader.next().transpose()? {
                Some(Event::Header(h)) => break h,
                Some(Event::Keyed(k, _)) => decoder = Decoder::with_id_key(k),
                Some(Event::Damage(d)) => report.damage.push(damage_line(&d)),
                Some(_) => {}
                None => return Err(Error::Incremental(
                    "the archive holds no header: it is not a mover archive, or its start is lost"
                        .into(),
                )),
            }
        };
    if let Some(missing) = header.parents.iter().find(|p| !chain.contains(p)) {
        return Err(Error::Incremental(format!(
            "archive {} is an incremental of archive {missing}, which was not given; give the chain in order: --from-archive FULL --from-archive … --from-archive {}",
            header.id, header.id
        )));
    }
    let names: Vec<&str> = header.disks.iter().map(|d| d.name.as_str()).collect();
    let disk = match (&opts.disk, header.disks.len()) {
        (Some(n), _) => names.iter().position(|x| x == n).ok_or_else(|| {
            Error::Incremental(format!(
                "the archive has no disk {n}; its disks are {}",
                names.join(", ")
            ))
        })?,
        (None, 1) => 0,
        (None, _) => {
            return Err(Error::Incremental(format!(
                "the archive holds several disks ({}); pick one with --disk NAME",
                names.join(", ")
            )))
        }
    };
    report.disk = names[disk].to_string();
    let size = header.disks[disk].size;
    progress.set_total(size);
    // One thread decodes and writes in archive order: writes through the page cache let the
    // kernel's writeback overlap the decoding, where direct writes would wait in turn.
    with_destination(dest, size, opts.force, opts.sync, false, |sink, label| {
        let mut r = Restorer {
            sink,
            label,
            disk: disk as u32,
            spool,
            decoder,
            out: Vec::new(),
            placed: HashMap::new(),
            waiting: HashMap::new(),
            queue: std::collections::VecDeque::new(),
            written_at: HashMap::new(),
            next_offset: 0,
            covered: Vec::new(),
            size,
            report,
            progress,
        };
        r.run(&mut reader, opts.strict)?;
        Ok(r.report)
    })
}

fn damage_line(d: &Damage) -> String {
    d.to_string()
}

struct Restorer<'a> {
    sink: Sink,
    label: &'a str,
    disk: u32,
    spool: Spool,
    decoder: Decoder,
    out: Vec<u8>,
    /// Positional: which entries are in place (by index).
    placed: HashMap<u64, Option<ChunkId>>,
    /// Positional: entries waiting for their chunk frame.
    waiting: HashMap<ChunkId, Vec<Placed>>,
    /// Stream: entries in order, waiting for their data.
    queue: std::collections::VecDeque<Placed>,
    /// Positional: where a chunk was written first (to copy it again from there).
    written_at: HashMap<ChunkId, (u64, u32)>,
    /// Stream: bytes written so far.
    next_offset: u64,
    /// Positional: the byte ranges the maps placed (to find what no map reached).
    covered: Vec<(u64, u64)>,
    /// The disk's size from the archive header (0 when the source was a stream).
    size: u64,
    report: ArchiveRestoreReport,
    progress: &'a Progress,
}

impl Restorer<'_> {
    fn positional(&self) -> Option<(&File, bool)> {
        match &self.sink {
            Sink::Positional { file, zeros, .. } => Some((file, *zeros)),
            Sink::Stream(_) => None,
        }
    }

    fn dest_err(&self, e: std::io::Error) -> Error {
        Error::destination(self.label, e)
    }

    fn run(&mut self, reader: &mut ArchiveReader<'_>, strict: bool) -> Result<()> {
        let mut manifest = None;
        let mut trailer: Option<Trailer> = None;
        for event in reader {
            if crate::sys::interrupted() {
                return Err(Error::Interrupted);
            }
            let event = event?;
            if trailer.is_some() {
                // Read on to the end, so that the writer of a pipe is not cut off while it
                // writes its last padding; what follows the trailer is not this archive.
                continue;
            }
            match event {
                Event::Map(bytes) => {
                    let Some(entries) = decode_map(&bytes) else {
                        self.report
                            .damage
                            .push("a map frame of an unknown layout was skipped".into());
                        continue;
                    };
                    let disk = self.disk;
                    for e in entries.into_iter().filter(|e| e.disk == disk) {
                        self.entry(e)?;
                    }
                }
                Event::ChunkFrame { id, frame } => {
                    self.decoder.decode_into(&frame, &id, &mut self.out)?;
                    self.report.chunks_read += 1;
                    self.chunk(&id, &frame)?;
                }
                Event::Manifest(bytes) => match Manifest::decode(&bytes) {
                    Ok(m) => {
                        self.report.snapshot = Some(ObjectId::of(&bytes));
                        manifest = Some(m);
                    }
                    Err(e) => self
                        .report
                        .damage
                        .push(format!("the manifest is damaged: {e}")),
                },
                Event::Damage(d) => {
                    if strict {
                        return Err(Error::Incremental(format!("archive damaged: {d}")));
                    }
                    self.report.damage.push(damage_line(&d));
                    if self.positional().is_none() {
                        self.give_up_queue()?;
                    }
                }
                Event::Trailer(t) => {
                    trailer = Some(t);
                }
                _ => {}
            }
        }
        self.finish(manifest, trailer)
    }

    /// A map entry of the disk being restored.
    fn entry(&mut self, e: Placed) -> Result<()> {
        if self.positional().is_some() {
            let waiting = e.id.is_some_and(|id| {
                self.waiting
                    .get(&id)
                    .is_some_and(|w| w.iter().any(|x| x.index == e.index))
            });
            if self.placed.contains_key(&e.index) || waiting {
                return Ok(()); // a repeated entry (see WriteState::last_entry)
            }
            self.covered.push((e.offset, u64::from(e.len)));
            let Some(id) = e.id else {
                self.zero(e.offset, u64::from(e.len))?;
                self.placed.insert(e.index, None);
                return Ok(());
            };
            if self.copy_known(&id, e.offset)? {
                self.placed.insert(e.index, Some(id));
            } else {
                self.waiting.entry(id).or_default().push(e);
            }
            return Ok(());
        }
        let expected = self.queued_end();
        if e.offset < expected {
            return Ok(()); // a repeated entry, already queued or written
        }
        if e.offset > expected {
            // Entries went missing with a damaged map frame: those bytes are lost. What is
            // queued before them goes out first (or is lost too), then zeros for the gap.
            self.give_up_queue()?;
            let gap = e.offset - self.next_offset;
            self.report.lost.push((self.next_offset, gap));
            self.stream_zeros(gap)?;
        }
        self.queue.push_back(e);
        self.drain()
    }

    /// Stream: where the next entry should start (after everything written and queued).
    fn queued_end(&self) -> u64 {
        self.queue
            .back()
            .map_or(self.next_offset, |e| e.offset + u64::from(e.len))
    }

    /// Stream, after damage: a queued entry whose chunk has not arrived never will (a new
    /// chunk's frame follows its map entry at once), so queued entries go out now, with zeros
    /// for the lost ones, and the stream stays aligned.
    fn give_up_queue(&mut self) -> Result<()> {
        while let Some(e) = self.queue.pop_front() {
            if let Some(id) = e.id {
                let mut data = std::mem::take(&mut self.out);
                let found = self.spool.get(&id, &mut self.decoder, &mut data)?;
                if found {
                    self.stream_write(&data)?;
                }
                self.out = data;
                if found {
                    continue;
                }
                self.report.lost.push((e.offset, u64::from(e.len)));
            }
            self.stream_zeros(u64::from(e.len))?;
        }
        Ok(())
    }

    /// Writes `len` zeros at `offset` (positional): a hole in a file, zeros on a device.
    fn zero(&mut self, offset: u64, len: u64) -> Result<()> {
        self.progress.add(len);
        let Some((file, zeros)) = self.positional() else {
            return Ok(());
        };
        if !zeros {
            return Ok(());
        }
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROS.len() as u64) as usize;
            file.write_all_at(&ZEROS[..n], offset + done)
                .map_err(|e| self.dest_err(e))?;
            done += n as u64;
        }
        self.report.bytes_written += len;
        Ok(())
    }

    /// Positional: writes chunk `id` at `offset` if its bytes are known (written earlier or
    /// spooled).
    fn copy_known(&mut self, id: &ChunkId, offset: u64) -> Result<bool> {
        let mut data = std::mem::take(&mut self.out);
        let found = if let Some(&(at, len)) = self.written_at.get(id) {
            let (file, _) = self.positional().expect("positional");
            data.resize(len as usize, 0);
            file.read_exact_at(&mut data, at)
                .map_err(|e| self.dest_err(e))?;
            true
        } else {
            self.spool.get(id, &mut self.decoder, &mut data)?
        };
        if found {
            self.write_at(offset, &data)?;
        }
        self.out = data;
        Ok(found)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let (file, _) = self.positional().expect("positional");
        file.write_all_at(data, offset)
            .map_err(|e| self.dest_err(e))?;
        self.report.bytes_written += data.len() as u64;
        self.progress.add(data.len() as u64);
        Ok(())
    }

    /// A chunk frame (decoded into `self.out`).
    fn chunk(&mut self, id: &ChunkId, frame: &Frame) -> Result<()> {
        if self.positional().is_some() {
            match self.waiting.remove(id) {
                Some(entries) => {
                    let data = std::mem::take(&mut self.out);
                    for e in &entries {
                        self.write_at(e.offset, &data)?;
                        self.placed.insert(e.index, Some(*id));
                    }
                    self.written_at
                        .insert(*id, (entries[0].offset, data.len() as u32));
                    self.out = data;
                }
                // Not (yet) placed on this disk: another disk's, or a later entry's.
                None => self.spool.put(id, frame)?,
            }
            return Ok(());
        }
        self.spool.put(id, frame)?;
        self.drain()
    }

    /// Stream: writes queued entries, in order, while their data is at hand.
    fn drain(&mut self) -> Result<()> {
        while let Some(e) = self.queue.front().copied() {
            match e.id {
                None => self.stream_zeros(u64::from(e.len))?,
                Some(id) => {
                    let mut data = std::mem::take(&mut self.out);
                    let found = self.spool.get(&id, &mut self.decoder, &mut data)?;
                    if found {
                        self.stream_write(&data)?;
                    }
                    self.out = data;
                    if !found {
                        return Ok(());
                    }
                }
            }
            self.queue.pop_front();
        }
        Ok(())
    }

    fn stream_write(&mut self, data: &[u8]) -> Result<()> {
        let Sink::Stream(file) = &self.sink else {
            unreachable!("stream writes go to a stream");
        };
        let mut f: &File = file;
        f.write_all(data).map_err(|e| self.dest_err(e))?;
        self.next_offset += data.len() as u64;
        self.report.bytes_written += data.len() as u64;
        self.progress.add(data.len() as u64);
        Ok(())
    }

    fn stream_zeros(&mut self, mut len: u64) -> Result<()> {
        while len > 0 {
            let n = len.min(ZEROS.len() as u64) as usize;
            self.stream_write(&ZEROS[..n])?;
            len -= n as u64;
        }
        Ok(())
    }

    /// After the last frame: places what the manifest says and the maps missed, reports what
    /// is lost, and makes the destination durable.
    fn finish(&mut self, manifest: Option<Manifest>, trailer: Option<Trailer>) -> Result<()> {
        self.report.verified = trailer.is_some_and(|t| t.verified);
        match trailer {
            None => self
                .report
                .damage
                .push("the archive ends without its trailer (truncated)".into()),
            Some(t) if t.incomplete => self
                .report
                .damage
                .push("the archive was sealed incomplete (its backup was interrupted)".into()),
            _ => {}
        }
        let disk = manifest
            .as_ref()
            .and_then(|m| m.disks.get(self.disk as usize));
        let mut lost = std::mem::take(&mut self.report.lost);
        if disk.is_none() {
            self.report
                .damage
                .push("the manifest is missing; what the maps placed was restored".into());
            // Whatever no map frame reached is lost.
            if self.positional().is_some() {
                let mut at = 0;
                for (off, len) in crate::merge_ranges(std::mem::take(&mut self.covered)) {
                    if off > at {
                        lost.push((at, off - at));
                    }
                    at = at.max(off + len);
                }
                if self.size > at {
                    lost.push((at, self.size - at));
                }
            }
        }
        if let Some(disk) = disk {
            self.report.bytes_total = disk.source_len;
            let mut offset = 0u64;
            for (index, entry) in disk.entries.iter().enumerate() {
                let index = index as u64;
                let len = u64::from(entry.len);
                if self.positional().is_some() {
                    match self.placed.get(&index) {
                        Some(id) if *id == entry.id => {}
                        Some(_) => {
                            return Err(Error::Incremental(format!(
                                "the archive's map and manifest disagree about the chunk at offset {offset}; the archive is not trustworthy"
                            )))
                        }
                        None => match entry.id {
                            None => self.zero(offset, len)?,
                            Some(id) => {
                                if !self.copy_known(&id, offset)? {
                                    lost.push((offset, len));
                                }
                            }
                        },
                    }
                }
                offset += len;
            }
            // A file's length comes from the manifest (a stream disk's size was unknown at
            // the start); a device keeps its own.
            if let Some((file, false)) = self.positional() {
                file.set_len(disk.source_len)
                    .map_err(|e| self.dest_err(e))?;
            }
        }
        if self.positional().is_none() {
            // Whatever is still queued never arrived: zeros, reported.
            while let Some(e) = self.queue.pop_front() {
                if let Some(id) = e.id {
                    let mut data = std::mem::take(&mut self.out);
                    let found = self.spool.get(&id, &mut self.decoder, &mut data)?;
                    if found {
                        self.stream_write(&data)?;
                        self.out = data;
                        continue;
                    }
                    self.out = data;
                    lost.push((e.offset, u64::from(e.len)));
                }
                self.stream_zeros(u64::from(e.len))?;
            }
            let end = disk.map_or(self.size, |d| d.source_len);
            if self.next_offset < end {
                let gap = end - self.next_offset;
                lost.push((self.next_offset, gap));
                self.stream_zeros(gap)?;
            }
        } else {
            for entries in self.waiting.values() {
                for e in entries {
                    if !lost.iter().any(|&(o, _)| o == e.offset) {
                        lost.push((e.offset, u64::from(e.len)));
                    }
                }
            }
        }
        lost.sort_unstable();
        lost.dedup();
        self.report.lost = crate::merge_ranges(lost);
        if self.report.bytes_total == 0 {
            self.report.bytes_total = self.next_offset.max(self.report.bytes_written);
        }
        match &self.sink {
            Sink::Positional { file, .. } => file.sync_all().map_err(|e| self.dest_err(e))?,
            Sink::Stream(file) => {
                let mut f: &File = file;
                f.flush().map_err(|e| self.dest_err(e))?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// ls, verify, import, export.

/// What `mover archive ls` / `verify` found in an archive.
#[derive(Clone, Debug, Default)]
pub struct ArchiveListing {
    /// The header, when it was read.
    pub header: Option<ArchiveHeader>,
    /// The manifest, when it was read.
    pub manifest: Option<Manifest>,
    /// The trailer, when it was read.
    pub trailer: Option<Trailer>,
    /// Volumes seen.
    pub volumes: u32,
    /// Chunks read (and, with `check`, verified against their ids).
    pub chunks: u64,
    /// Their plaintext bytes.
    pub chunk_bytes: u64,
    /// Damage, one line each.
    pub damage: Vec<String>,
    /// The cipher of an encrypted archive (the password opened it).
    pub cipher: Option<Aead>,
}

/// Reads a whole archive; with `check`, decodes every chunk and checks it against its id.
pub fn read_archive(
    input: ArchiveInput,
    check: bool,
    progress: &Progress,
    password: Option<&Password>,
) -> Result<ArchiveListing> {
    let mut l = ArchiveListing::default();
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    for event in input.reader(false, password) {
        let event = event?;
        if l.trailer.is_some() {
            continue; // drain the input (see Restorer::run)
        }
        match event {
            Event::Keyed(k, aead) => {
                decoder = Decoder::with_id_key(k);
                l.cipher = Some(aead);
            }
            Event::Volume(_) => l.volumes += 1,
            Event::Header(h) => {
                progress.set_total(h.disks.iter().map(|d| d.size).sum());
                l.header = Some(h);
            }
            Event::ChunkFrame { id, frame } => {
                if check {
                    if let Err(e) = decoder.decode_into(&frame, &id, &mut out) {
                        l.damage.push(format!("chunk {}: {e}", id.to_hex()));
                        continue;
                    }
                }
                l.chunks += 1;
                l.chunk_bytes += u64::from(frame.raw_len);
                progress.add(u64::from(frame.raw_len));
            }
            Event::Manifest(bytes) => match Manifest::decode(&bytes) {
                Ok(m) => l.manifest = Some(m),
                Err(e) => l.damage.push(format!("the manifest is damaged: {e}")),
            },
            Event::Damage(d) => l.damage.push(damage_line(&d)),
            Event::Trailer(t) => {
                l.trailer = Some(t);
            }
            _ => {}
        }
    }
    if l.trailer.is_none() {
        l.damage
            .push("the archive ends without its trailer (truncated)".into());
    }
    Ok(l)
}

/// Loads an archive's chunks and snapshot into a repository. The snapshot is committed only
/// when every chunk it references is in the repository (an incremental needs its chain
/// imported first) and no damage was found.
///
/// When the archive's chunk ids are computed otherwise than the repository's (one of them is
/// encrypted, or both under different keys), each chunk is stored under the id the
/// repository computes and the manifest is rewritten to match; an incremental archive can
/// then refer only to chunks of its own chain that the same import saw, so import such a
/// chain into a repository with the same ids (or restore it from the archives).
pub fn import_archive(
    repo: &Repository,
    input: ArchiveInput,
    progress: &Progress,
    password: Option<&Password>,
) -> Result<(ObjectId, Manifest, u64)> {
    let mut decoder = Decoder::new();
    let mut archive_key = IdKey::PLAIN;
    let mut renamed: HashMap<ChunkId, ChunkId> = HashMap::new();
    let mut out = Vec::new();
    let mut manifest = None;
    let mut damage = Vec::new();
    let mut new = 0u64;
    let mut ended = false;
    for event in input.reader(false, password) {
        let event = event?;
        if ended {
            continue; // drain the input (see Restorer::run)
        }
        match event {
            Event::Keyed(k, _) => {
                decoder = Decoder::with_id_key(k);
                archive_key = k;
            }
            Event::Header(h) => progress.set_total(h.disks.iter().map(|d| d.size).sum()),
            Event::ChunkFrame { id, frame } => {
                decoder.decode_into(&frame, &id, &mut out)?;
                progress.add(u64::from(frame.raw_len));
                let stored_id = if archive_key == repo.id_key() {
                    id
                } else {
                    let new_id = repo.id_key().id(&out);
                    renamed.insert(id, new_id);
                    new_id
                };
                if ChunkStore::put(repo, &stored_id, frame)? == Put::Stored {
                    new += 1;
                }
            }
            Event::Manifest(bytes) => manifest = Some(Manifest::decode(&bytes)?),
            Event::Damage(d) => damage.push(damage_line(&d)),
            Event::Trailer(_) => ended = true,
            _ => {}
        }
    }
    if !damage.is_empty() {
        return Err(Error::Incremental(format!(
            "the archive is damaged ({}); nothing was imported as a snapshot",
            damage.join("; ")
        )));
    }
    let mut manifest: Manifest = manifest.ok_or_else(|| {
        Error::Incremental(
            "the archive holds no manifest; nothing was imported as a snapshot".into(),
        )
    })?;
    if archive_key != repo.id_key() {
        for e in manifest.disks.iter_mut().flat_map(|d| d.entries.iter_mut()) {
            if let Some(new_id) = e.id.and_then(|id| renamed.get(&id)) {
                e.id = Some(*new_id);
            }
        }
    }
    let missing = manifest
        .disks
        .iter()
        .flat_map(|d| &d.entries)
        .filter_map(|e| e.id)
        .filter(|id| !ChunkStore::has(repo, id).unwrap_or(false))
        .count();
    if missing > 0 {
        return Err(Error::Incremental(format!(
            "{missing} chunks of this incremental archive are in earlier archives of its chain; import those first"
        )));
    }
    repo.flush()?;
    let id = repo.commit_snapshot(&manifest)?;
    Ok((id, manifest, new))
}

/// Writes a self-contained full archive of a repository snapshot (a "virtual full"): every
/// chunk once, copied as stored (no recompression), with maps in disk order. When the
/// archive computes chunk ids otherwise than the repository (one of them is encrypted), each
/// chunk goes on the archive under the archive's id, and so does the manifest's entry.
pub fn export_archive(
    repo: &Repository,
    manifest: &Manifest,
    target: &ArchiveTarget,
    progress: &Progress,
) -> Result<ObjectId> {
    progress.set_total(manifest.total_len());
    let mut decoder = Decoder::with_id_key(repo.id_key());
    let rename = BackupTarget::id_key(target) != repo.id_key();
    let mut renamed: HashMap<ChunkId, ChunkId> = HashMap::new();
    let mut out_manifest = manifest.clone();
    let mut out = Vec::new();
    for (d, disk) in out_manifest.disks.iter_mut().enumerate() {
        for (index, entry) in disk.entries.iter_mut().enumerate() {
            if crate::sys::interrupted() {
                return Err(Error::Interrupted);
            }
            let Some(id) = entry.id else {
                target.place(d, index as u64, entry)?;
                progress.add(u64::from(entry.len));
                continue;
            };
            let known = renamed.get(&id).copied();
            let new_frame = match known {
                Some(new_id) => {
                    entry.id = Some(new_id);
                    None
                }
                None if !rename && BackupTarget::has(target, &id)? => None,
                None => {
                    let frame = repo.get(&id)?;
                    // Checked before it goes on the archive: a damaged repository chunk must
                    // not become a damaged archive.
                    decoder.decode_into(&frame, &id, &mut out)?;
                    if rename {
                        let new_id = BackupTarget::id_key(target).id(&out);
                        renamed.insert(id, new_id);
                        entry.id = Some(new_id);
                    }
                    Some(frame)
                }
            };
            // The map entry goes before the chunk frame it names.
            target.place(d, index as u64, entry)?;
            if let (Some(frame), Some(new_id)) = (new_frame, entry.id) {
                BackupTarget::put(target, &new_id, frame)?;
            }
            progress.add(u64::from(entry.len));
        }
    }
    target.commit(&out_manifest)
}

/// The archive header for a backup of `disks` (name, size).
pub fn header_for(
    disks: &[(String, u64)],
    chunk_size: u32,
    parents: Vec<ArchiveId>,
    name: &str,
) -> ArchiveHeader {
    let mut h = ArchiveHeader::new(format!("mover {}", env!("CARGO_PKG_VERSION")));
    h.chunk_size = chunk_size;
    h.disks = disks
        .iter()
        .map(|(name, size)| targets::archive::DiskInfo {
            name: name.clone(),
            size: *size,
        })
        .collect();
    h.parents = parents;
    h.labels = vec![("name".into(), name.into())];
    h
}

/// Opens a `--to-archive` destination path: a tape or character device (written in place),
/// numbered volume files when `volume_size` is given, or a new file. `next_volume` runs (with
/// `sh -c`, `MOVER_VOLUME` set) before each further volume.
pub fn open_sink(
    path: &str,
    volume_size: Option<u64>,
    next_volume: Option<crate::Hook>,
    force: bool,
) -> Result<(Box<dyn VolumeSink + Send>, Option<std::path::PathBuf>)> {
    use std::os::unix::fs::FileTypeExt;
    use targets::archive::{FileVolumes, StreamSink};
    let err = |e: std::io::Error| Error::destination(path, e);
    let run_hook = move |hook: &Option<crate::Hook>, n: u32| -> std::io::Result<()> {
        if let Some(h) = hook {
            h.run(&[("MOVER_VOLUME", n.to_string())])
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        Ok(())
    };
    if path == "-" {
        let sink = StreamSink::stdout().map_err(err)?;
        return Ok((Box::new(sink), None));
    }
    let meta = std::fs::metadata(path);
    let is_device = meta.as_ref().is_ok_and(|m| {
        m.file_type().is_char_device() || m.file_type().is_block_device() || m.file_type().is_fifo()
    });
    if is_device {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(err)?;
        let reopen = path.to_string();
        let sink = StreamSink::with_next_volume(file, path, move |n| {
            run_hook(&next_volume, n)?;
            std::fs::OpenOptions::new().write(true).open(&reopen)
        });
        return Ok((Box::new(sink), None));
    }
    if next_volume.is_some() && volume_size.is_none() {
        // A file on a removable medium: when it fills up (ENOSPC), the hook changes the
        // medium and the next volume is written to the same path.
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create(true).truncate(true);
        if !force && meta.is_ok() {
            return Err(Error::DestinationExists { path: path.into() });
        }
        let file = open.open(path).map_err(err)?;
        let reopen = path.to_string();
        let sink = StreamSink::with_next_volume(file, path, move |n| {
            run_hook(&next_volume, n)?;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&reopen)
        });
        return Ok((Box::new(sink), Some(std::path::PathBuf::from(path))));
    }
    if volume_size.is_some() {
        let mut v = FileVolumes::create(path).map_err(err)?;
        v.on_next_volume(move |n, _| run_hook(&next_volume, n));
        return Ok((Box::new(v), None));
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true);
    if force {
        open.create(true).truncate(true);
    } else {
        open.create_new(true);
    }
    let file = open.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::DestinationExists { path: path.into() },
        _ => err(e),
    })?;
    Ok((
        Box::new(StreamSink::new(file, path)),
        Some(std::path::PathBuf::from(path)),
    ))
}

/// Opens a `--from-archive` input: `-` (stdin), a file or device, or, when PATH does not
/// exist but `PATH.000` does, the numbered volume set.
pub fn open_input(path: &str) -> Result<ArchiveInput> {
    if path == "-" {
        use std::os::fd::AsFd;
        let fd = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::Source {
                path: "stdin".into(),
                source: e,
            })?;
        return Ok(ArchiveInput::Stream(Box::new(File::from(fd))));
    }
    let err = |e| Error::Source {
        path: path.into(),
        source: e,
    };
    if std::fs::metadata(path).is_err() {
        let first = targets::archive::FileVolumes::volume_path(std::path::Path::new(path), 0);
        if first.exists() {
            let set = targets::archive::FileVolumeSet::open(path).map_err(err)?;
            return Ok(ArchiveInput::Volumes(set));
        }
    }
    let mut f = File::open(path).map_err(err)?;
    let _ = f.seek(SeekFrom::Start(0));
    Ok(ArchiveInput::Stream(Box::new(f)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_entries_round_trip() {
        let a = Placed {
            disk: 1,
            index: 7,
            offset: 7 << 20,
            len: 1 << 20,
            id: Some(ChunkId::of(b"x")),
        };
        let z = Placed { id: None, ..a };
        let mut body = Vec::new();
        encode_entry(&mut body, &a);
        encode_entry(&mut body, &z);
        let mut payload = vec![MAP_VERSION];
        payload.extend_from_slice(&2u32.to_le_bytes());
        payload.extend_from_slice(&body);
        assert_eq!(decode_map(&payload), Some(vec![a, z]));
        assert_eq!(decode_map(&payload[..payload.len() - 1]), None);
        payload[0] = 9;
        assert_eq!(decode_map(&payload), None);
    }
}

//! The archive writer: frames in, fixed-size records out, volume changes handled.

use std::collections::{HashSet, VecDeque};
use std::io;

use chunker::{ChunkId, Frame, IdHasher};

use super::frame::{
    archive_version, chunk_prefix, encode_header, encode_sealed_header, frame_aad, part_prefix,
    Header, Kind, TrailerPayload, VolumePayload, FRAME_HEADER_LEN, MAX_PAYLOAD, PART_PREFIX_LEN,
    VOLUME_FRAME_LEN, VOLUME_HEADER_COPY,
};
use super::{ArchiveHeader, ArchiveId, ArchiveKey, VolumeSink, Written, DEFAULT_BLOCK_SIZE};
use super::{MAX_BLOCK_SIZE, MIN_BLOCK_SIZE};
use crate::{Error, Result};

/// Largest manifest or catalog part.
const PART_MAX: usize = 4 << 20;

/// Settings of an [`ArchiveWriter`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveOptions {
    /// Record (block) size: a power of two from 64 KiB to 4 MiB. Default 256 KiB.
    pub block_size: u32,
    /// Byte limit of one volume, rounded down to whole records; `None` for no limit. Every
    /// volume must hold at least one whole frame after its volume frame.
    pub volume_size: Option<u64>,
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        ArchiveOptions {
            block_size: DEFAULT_BLOCK_SIZE,
            volume_size: None,
        }
    }
}

impl ArchiveOptions {
    /// Checks the settings; returns the volume capacity in bytes (whole records).
    fn capacity(&self) -> Result<Option<u64>> {
        let b = self.block_size;
        if !b.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&b) {
            return Err(Error::InvalidArgument {
                detail: format!("block size {b} is not a power of two from 64 KiB to 4 MiB"),
            });
        }
        let Some(v) = self.volume_size else {
            return Ok(None);
        };
        let cap = v / u64::from(b) * u64::from(b);
        if cap == 0 {
            return Err(Error::InvalidArgument {
                detail: format!("volume size {v} is smaller than one {b}-byte record"),
            });
        }
        Ok(Some(cap))
    }
}

/// What a finished archive holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// The archive's id.
    pub id: ArchiveId,
    /// Volumes written.
    pub volumes: u32,
    /// Logical frames before the trailer (header, chunks, maps, manifest and catalog parts).
    pub frames: u64,
    /// Chunk frames written.
    pub chunks: u64,
    /// Plaintext bytes of those chunks.
    pub chunk_bytes: u64,
    /// Stored (encoded) bytes of those chunks.
    pub stored_bytes: u64,
    /// Bytes written to the sink, records and padding included, over all volumes.
    pub bytes_written: u64,
    /// The archive hash recorded in the trailer.
    pub archive_hash: [u8; 32],
}

/// A frame not yet wholly on the medium, kept to be written again on the next volume.
struct Pending {
    header: [u8; FRAME_HEADER_LEN],
    prefix: Vec<u8>,
    body: Vec<u8>,
    seq: u64,
    pos: u64,
    /// Offset from the start of the current volume just past this frame.
    vol_end: u64,
}

impl Pending {
    fn len(&self) -> u64 {
        (FRAME_HEADER_LEN + self.prefix.len() + self.body.len()) as u64
    }
}

/// Cuts bytes into records and hands them to the sink.
struct Records<S> {
    sink: S,
    block: usize,
    /// The record being filled (shorter than a block).
    out: Vec<u8>,
    /// Bytes of the current volume in records the sink accepted.
    written: u64,
    /// Bytes written over all volumes.
    total: u64,
    near_end: bool,
}

impl<S: VolumeSink> Records<S> {
    /// Bytes of the current volume, the partial record included.
    fn used(&self) -> u64 {
        self.written + self.out.len() as u64
    }

    /// Writes one record; `Ok(false)` when the medium is full.
    fn write(&mut self, record: &[u8]) -> io::Result<bool> {
        match self.sink.write_record(record) {
            Ok(w) => {
                self.near_end |= w == Written::NearEnd;
                self.written += record.len() as u64;
                self.total += record.len() as u64;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::StorageFull => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Appends bytes, writing every record they complete; `Ok(false)` when the medium is
    /// full (the rest of `data` is dropped: the caller re-sends whole frames).
    fn push(&mut self, mut data: &[u8]) -> io::Result<bool> {
        if !self.out.is_empty() {
            let take = (self.block - self.out.len()).min(data.len());
            self.out.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.out.len() < self.block {
                return Ok(true);
            }
            let record = std::mem::take(&mut self.out);
            let ok = self.write(&record)?;
            self.out = record;
            self.out.clear();
            if !ok {
                return Ok(false);
            }
        }
        while data.len() >= self.block {
            if !self.write(&data[..self.block])? {
                return Ok(false);
            }
            data = &data[self.block..];
        }
        self.out.extend_from_slice(data);
        Ok(true)
    }

    /// Pads the partial record with zeros and writes it; `Ok(false)` when the medium is full.
    fn pad(&mut self) -> io::Result<bool> {
        if self.out.is_empty() {
            return Ok(true);
        }
        self.out.resize(self.block, 0);
        let record = std::mem::take(&mut self.out);
        let ok = self.write(&record)?;
        self.out = record;
        self.out.clear();
        Ok(ok)
    }
}

fn push_frame<S: VolumeSink>(rec: &mut Records<S>, f: &Pending) -> io::Result<bool> {
    Ok(rec.push(&f.header)? && rec.push(&f.prefix)? && rec.push(&f.body)?)
}

/// Writes one archive, frame by frame, into fixed-size records on a [`VolumeSink`].
///
/// # Contract
///
/// - Calls are sequential (`&mut self`); the order of `put_chunk` calls is the order of the
///   chunk frames in the archive.
/// - `put_chunk` writes a chunk at most once per archive, and never one that [`has`] reports
///   (chunks added with [`add_known`] are held by earlier archives of the chain). The caller
///   guarantees that `frame` decodes to a plaintext with id `id`.
/// - [`finish`] must be called: it writes the manifest, catalog and trailer, pads the last
///   record and ends the volume. An archive is complete only once it returns `Ok`. Dropping
///   the writer without it leaves a stream without a trailer, which a reader reports as
///   truncated; nothing already written is damaged.
/// - A write that fails (broken pipe, I/O error, no next volume) fails the call, and every
///   later call returns [`Error::Poisoned`]. A full medium is not a failure while the sink can
///   provide a next volume.
///
/// [`has`]: ArchiveWriter::has
/// [`add_known`]: ArchiveWriter::add_known
/// [`finish`]: ArchiveWriter::finish
pub struct ArchiveWriter<S: VolumeSink> {
    rec: Records<S>,
    capacity: Option<u64>,
    id: ArchiveId,
    volume: u32,
    /// A frame was completed on the current volume (a volume that completes none is too small).
    progress: bool,
    pending: VecDeque<Pending>,
    next_seq: u64,
    next_pos: u64,
    hasher: blake3::Hasher,
    seen: HashSet<ChunkId, IdHasher>,
    catalog: Vec<ChunkId>,
    chunk_bytes: u64,
    stored_bytes: u64,
    poisoned: Option<String>,
    /// Seals every logical frame's payload (an encrypted archive, format version 2).
    key: Option<ArchiveKey>,
}

impl<S: VolumeSink> ArchiveWriter<S> {
    /// Starts an archive on `sink`: volume 0 begins with its volume frame and the archive
    /// header. Fails on invalid options or a header that does not fit in a frame.
    pub fn new(sink: S, options: &ArchiveOptions, header: ArchiveHeader) -> Result<Self> {
        Self::with_key(sink, options, header, None)
    }

    /// Like [`ArchiveWriter::new`]; with a key, the archive is encrypted (format version 2):
    /// the header records the key object, and every logical frame's payload is sealed.
    pub fn with_key(
        sink: S,
        options: &ArchiveOptions,
        header: ArchiveHeader,
        key: Option<ArchiveKey>,
    ) -> Result<Self> {
        let capacity = options.capacity()?;
        // The header, and its copy right after it (frame 1): one damaged frame no longer loses
        // the archive (issue 14, item 11). A sealed copy is sealed for its own place.
        let encode = |kind: Kind, seq: u64| {
            let payload = match &key {
                Some(k) => encode_sealed_header(&header, options.block_size, k, kind, seq),
                None => encode_header(&header, options.block_size),
            };
            payload
                .filter(|p| p.len() <= MAX_PAYLOAD)
                .ok_or_else(|| Error::InvalidArgument {
                    detail: "archive header too large (a string over 64 KiB or too many entries)"
                        .into(),
                })
        };
        let payload = encode(Kind::Header, 0)?;
        let copy = encode(Kind::HeaderCopy, 1)?;
        let mut w = ArchiveWriter {
            rec: Records {
                sink,
                block: options.block_size as usize,
                out: Vec::with_capacity(options.block_size as usize),
                written: 0,
                total: 0,
                near_end: false,
            },
            capacity,
            id: header.id,
            volume: 0,
            progress: false,
            pending: VecDeque::new(),
            next_seq: 0,
            next_pos: 0,
            hasher: blake3::Hasher::new(),
            seen: HashSet::default(),
            catalog: Vec::new(),
            chunk_bytes: 0,
            stored_bytes: 0,
            poisoned: None,
            key,
        };
        w.push_volume_frame()?;
        w.emit(Kind::Header, payload, Vec::new())?;
        w.emit(Kind::HeaderCopy, copy, Vec::new())?;
        Ok(w)
    }

    /// The archive's id.
    pub fn id(&self) -> ArchiveId {
        self.id
    }

    /// Declares chunks held by earlier archives of the chain (an incremental's catalog):
    /// [`has`](ArchiveWriter::has) reports them and `put_chunk` skips them.
    pub fn add_known(&mut self, ids: impl IntoIterator<Item = ChunkId>) {
        self.seen.extend(ids);
    }

    /// Whether the chunk is already in this archive or held by an earlier one.
    pub fn has(&self, id: &ChunkId) -> bool {
        self.seen.contains(id)
    }

    /// Writes a chunk frame unless [`has`](ArchiveWriter::has) reports the chunk; returns
    /// whether it was written.
    pub fn put_chunk(&mut self, id: &ChunkId, frame: Frame) -> Result<bool> {
        self.check()?;
        if self.seen.contains(id) {
            return Ok(false);
        }
        let overhead = super::frame::CHUNK_PREFIX_LEN + chunker::crypto::SEAL_OVERHEAD;
        if frame.bytes.len() > MAX_PAYLOAD - overhead {
            return Err(Error::InvalidArgument {
                detail: format!("chunk {id} is too large for an archive frame"),
            });
        }
        let (raw, stored) = (u64::from(frame.raw_len), frame.bytes.len() as u64);
        let prefix = chunk_prefix(id, &frame).to_vec();
        self.guard(|w| w.emit(Kind::Chunk, prefix, frame.bytes))?;
        self.seen.insert(*id);
        self.catalog.push(*id);
        self.chunk_bytes += raw;
        self.stored_bytes += stored;
        Ok(true)
    }

    /// Writes a map frame: opaque placement data (e.g. the manifest entries of the chunks
    /// written since the last map), so a single-pass restore can place chunks before the
    /// manifest arrives. At most [`MAX_PAYLOAD`] bytes.
    pub fn put_map(&mut self, bytes: &[u8]) -> Result<()> {
        self.check()?;
        if bytes.len() > MAX_PAYLOAD {
            return Err(Error::InvalidArgument {
                detail: format!("map frame of {} bytes is too large", bytes.len()),
            });
        }
        self.guard(|w| w.emit(Kind::Map, bytes.to_vec(), Vec::new()))
    }

    /// Completes the archive: writes the manifest (opaque bytes, in parts), the catalog of the
    /// chunks written, the trailer, and pads the last record; then ends the volume.
    pub fn finish(mut self, manifest: &[u8]) -> Result<ArchiveSummary> {
        self.check()?;
        self.guard(|w| w.seal(Some(manifest)))
    }

    /// Completes an interrupted archive without a manifest: catalog and a trailer flagged
    /// incomplete. The chunks written stay readable; the archive restores nothing by itself.
    pub fn seal_incomplete(mut self) -> Result<ArchiveSummary> {
        self.check()?;
        self.guard(|w| w.seal(None))
    }

    fn check(&self) -> Result<()> {
        match &self.poisoned {
            Some(first) => Err(Error::Poisoned {
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }

    fn guard<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let r = f(self);
        if let Err(e) = &r {
            self.poisoned = Some(e.to_string());
        }
        r
    }

    fn io_err(&self, op: &'static str, e: io::Error) -> Error {
        Error::io(op, self.rec.sink.location(), e)
    }

    fn seal(&mut self, manifest: Option<&[u8]>) -> Result<ArchiveSummary> {
        if let Some(m) = manifest {
            self.emit_parts(Kind::Manifest, m)?;
        }
        let catalog: Vec<u8> = self.catalog.iter().flat_map(|id| *id.as_bytes()).collect();
        self.emit_parts(Kind::Catalog, &catalog)?;
        let trailer = TrailerPayload {
            incomplete: manifest.is_none(),
            frames: self.next_seq,
            chunks: self.catalog.len() as u64,
            chunk_bytes: self.chunk_bytes,
            stored_bytes: self.stored_bytes,
            hash: *self.hasher.finalize().as_bytes(),
        };
        self.emit(Kind::Trailer, trailer.encode(), Vec::new())?;
        loop {
            let padded = self.rec.pad().map_err(|e| self.io_err("write", e))?;
            self.trim();
            if padded {
                break;
            }
            self.resend()?;
        }
        debug_assert!(self.pending.is_empty());
        let volume = self.volume;
        self.rec
            .sink
            .finish_volume()
            .map_err(|e| self.io_err("finish", e))?;
        Ok(ArchiveSummary {
            id: self.id,
            volumes: volume + 1,
            frames: trailer.frames,
            chunks: trailer.chunks,
            chunk_bytes: trailer.chunk_bytes,
            stored_bytes: trailer.stored_bytes,
            bytes_written: self.rec.total,
            archive_hash: trailer.hash,
        })
    }

    /// Writes `data` as parts small enough for the payload limit and for one volume.
    fn emit_parts(&mut self, kind: Kind, data: &[u8]) -> Result<()> {
        let mut max = PART_MAX;
        if let Some(cap) = self.capacity {
            let room = cap as usize - VOLUME_FRAME_LEN - FRAME_HEADER_LEN - PART_PREFIX_LEN;
            let room = room.saturating_sub(chunker::crypto::SEAL_OVERHEAD);
            max = max.min(room.max(1));
        }
        let total = data.len() as u64;
        let mut offset = 0;
        loop {
            let part = &data[offset..(offset + max).min(data.len())];
            let prefix = part_prefix(total, offset as u64).to_vec();
            self.emit(kind, prefix, part.to_vec())?;
            offset += part.len();
            if offset == data.len() {
                return Ok(());
            }
        }
    }

    /// Writes the volume frame that starts the current volume, naming the first frame that
    /// follows it (the oldest unfinished one, or the next new one).
    fn push_volume_frame(&mut self) -> Result<()> {
        let (seq, pos) = self
            .pending
            .front()
            .map_or((self.next_seq, self.next_pos), |f| (f.seq, f.pos));
        let version = archive_version(self.key.as_ref().map(|k| k.keys.aead()));
        let payload = VolumePayload {
            version,
            number: self.volume,
            block_size: self.rec.block as u32,
            flags: VOLUME_HEADER_COPY,
            id: self.id,
        }
        .encode();
        let header = Header::new(Kind::Volume, seq, pos, self.id.tag(), &[&payload]);
        let mut bytes = header.encode().to_vec();
        bytes.extend_from_slice(&payload);
        // Shorter than a record, so it stays in the partial record: nothing can fail here.
        let ok = self.rec.push(&bytes).map_err(|e| self.io_err("write", e))?;
        debug_assert!(ok && self.rec.written == 0);
        Ok(())
    }

    /// Appends one logical frame, changing volumes as needed.
    fn emit(&mut self, kind: Kind, prefix: Vec<u8>, body: Vec<u8>) -> Result<()> {
        if self.rec.near_end {
            self.roll()?;
        }
        // The header payload is sealed as it is made (its key object stays in clear).
        let (prefix, body) = match &self.key {
            Some(k) if kind != Kind::Header && kind != Kind::HeaderCopy => {
                let aad = frame_aad(&self.id, kind as u8, self.next_seq);
                let mut plain = prefix;
                plain.extend_from_slice(&body);
                (Vec::new(), k.keys.seal(&aad, &plain))
            }
            _ => (prefix, body),
        };
        let header = Header::new(
            kind,
            self.next_seq,
            self.next_pos,
            self.id.tag(),
            &[&prefix, &body],
        )
        .encode();
        let mut f = Pending {
            header,
            prefix,
            body,
            seq: self.next_seq,
            pos: self.next_pos,
            vol_end: 0,
        };
        if let Some(cap) = self.capacity {
            if f.len() > cap - VOLUME_FRAME_LEN as u64 {
                return Err(Error::InvalidArgument {
                    detail: format!(
                        "volume size {cap} cannot hold a frame of {} bytes; use a larger \
                         volume size",
                        f.len()
                    ),
                });
            }
            if self.rec.used() + f.len() > cap {
                self.roll()?;
            }
        }
        if kind != Kind::Trailer {
            self.hasher.update(&f.header);
        }
        self.next_seq += 1;
        self.next_pos += f.len();
        f.vol_end = self.rec.used() + f.len();
        let ok = push_frame(&mut self.rec, &f).map_err(|e| self.io_err("write", e));
        self.pending.push_back(f);
        let ok = ok?;
        self.trim();
        if !ok {
            self.resend()?;
        }
        Ok(())
    }

    /// Forgets frames that are wholly on the medium.
    fn trim(&mut self) {
        while self
            .pending
            .front()
            .is_some_and(|f| f.vol_end <= self.rec.written)
        {
            self.pending.pop_front();
            self.progress = true;
        }
    }

    /// Ends the volume at a frame boundary (size limit or early warning) and starts the next.
    fn roll(&mut self) -> Result<()> {
        let padded = self.rec.pad().map_err(|e| self.io_err("write", e))?;
        self.trim();
        if !padded {
            return self.resend();
        }
        debug_assert!(self.pending.is_empty());
        self.next_volume()
    }

    /// The medium is full: start the next volume and write every unfinished frame again.
    fn resend(&mut self) -> Result<()> {
        loop {
            if !self.progress {
                return Err(Error::EndOfMedia {
                    location: self.rec.sink.location(),
                    detail: format!(
                        "volume {} is full before it holds one whole frame",
                        self.volume
                    ),
                });
            }
            self.next_volume()?;
            let mut ok = true;
            for f in self.pending.iter_mut() {
                f.vol_end = self.rec.used() + f.len();
                ok = push_frame(&mut self.rec, f)
                    .map_err(|e| Error::io("write", self.rec.sink.location(), e))?;
                if !ok {
                    break;
                }
            }
            self.trim();
            if ok {
                return Ok(());
            }
        }
    }

    fn next_volume(&mut self) -> Result<()> {
        self.rec
            .sink
            .finish_volume()
            .map_err(|e| self.io_err("finish", e))?;
        self.volume += 1;
        let n = self.volume;
        self.rec
            .sink
            .next_volume(n)
            .map_err(|e| self.io_err("start the next volume on", e))?;
        self.rec.out.clear();
        self.rec.written = 0;
        self.rec.near_end = false;
        self.progress = false;
        self.push_volume_frame()
    }
}

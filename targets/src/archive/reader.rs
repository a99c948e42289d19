//! The archive reader: one sequential pass over one or more inputs, yielding events, with
//! resynchronisation after damage.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read};

use chunker::{is_zero, ChunkId, Compression, Decoder, Frame};

use super::frame::{
    archive_aead, check_header_version, decode_chunk, decode_header, decode_part, frame_aad,
    split_sealed_header, Header, Kind, TrailerPayload, VolumePayload, ARCHIVE_MAGIC,
    FRAME_HEADER_LEN,
};
use super::{ArchiveHeader, ArchiveId, ArchiveKey, VolumeSource, MAX_BLOCK_SIZE};
use crate::{Error, Result};

/// Bytes asked of the input per read: at least the largest block, so a tape read in
/// variable-block mode returns whole blocks.
const READ_SIZE: usize = MAX_BLOCK_SIZE as usize;

/// Settings of an [`ArchiveReader`].
#[derive(Clone, Debug)]
pub struct ReaderOptions {
    /// Stop with [`Error::Corrupt`] at the first damage instead of reporting it and reading
    /// on.
    pub strict: bool,
    /// Decode chunks and check them against their ids ([`Event::Chunk`]); when false, yield
    /// the stored frames ([`Event::ChunkFrame`]) for the caller to decode (in parallel, say).
    pub decode: bool,
    /// The password of an encrypted archive; reading one without it fails with
    /// [`Error::PasswordRequired`], with a wrong one with [`Error::WrongPassword`].
    pub password: Option<chunker::crypto::Password>,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            strict: false,
            decode: true,
            password: None,
        }
    }
}

/// A volume frame: where a volume starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeInfo {
    /// The archive the volume belongs to.
    pub archive: ArchiveId,
    /// Its number (0, 1, …).
    pub number: u32,
    /// The archive's record size.
    pub block_size: u32,
}

/// The end of an archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// The archive was sealed after an interruption and holds no manifest.
    pub incomplete: bool,
    /// Logical frames before the trailer.
    pub frames: u64,
    /// Chunk frames in the archive.
    pub chunks: u64,
    /// Their plaintext bytes.
    pub chunk_bytes: u64,
    /// Their stored bytes.
    pub stored_bytes: u64,
    /// The archive hash (BLAKE3 over the headers of all frames before the trailer).
    pub archive_hash: [u8; 32],
    /// Every frame of the archive was read without damage, and the totals and archive hash
    /// match what was read.
    pub verified: bool,
}

/// Damage found in the input: what was skipped, where, and which frames were lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The input (0 for a single stream; the n-th volume opened from a [`VolumeSource`])
    /// where the unreadable bytes start.
    pub input: u32,
    /// Offset of the first unreadable byte in that input.
    pub offset: u64,
    /// Bytes skipped from there (possibly running on into later inputs).
    pub len: u64,
    /// Sequence number of the first lost frame.
    pub first_lost_frame: u64,
    /// Number of frames lost from there; `None` when the archive ends inside the damage (its
    /// trailer is missing, so how many frames followed is unknown).
    pub lost_frames: Option<u64>,
    /// What happened, for people.
    pub detail: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "input {} at byte {}: {} bytes unreadable, ",
            self.input, self.offset, self.len
        )?;
        match self.lost_frames {
            Some(0) => write!(f, "no frame lost")?,
            Some(n) => write!(
                f,
                "frames {}..{} lost",
                self.first_lost_frame,
                self.first_lost_frame + n
            )?,
            None => write!(f, "frames from {} on lost", self.first_lost_frame)?,
        }
        write!(f, " ({})", self.detail)
    }
}

/// What the reader found, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A volume begins.
    Volume(VolumeInfo),
    /// The archive is encrypted with this cipher and the password opened its key: its chunk
    /// ids are keyed with this id key (check decoded chunks with
    /// [`chunker::Decoder::with_id_key`]). Comes just before the archive's [`Event::Header`].
    Keyed(chunker::IdKey, chunker::crypto::Aead),
    /// The archive header.
    Header(ArchiveHeader),
    /// A chunk, decoded; its plaintext hashes to `id`.
    Chunk {
        /// The chunk's id.
        id: ChunkId,
        /// Its plaintext.
        data: Vec<u8>,
    },
    /// A chunk as stored (with [`ReaderOptions::decode`] off). Its frame passed its checksum
    /// but is not yet checked against `id`: decode it with [`chunker::Decoder`], which does.
    ChunkFrame {
        /// The chunk's id.
        id: ChunkId,
        /// The stored frame.
        frame: Frame,
    },
    /// A map frame: opaque placement data from the writer.
    Map(Vec<u8>),
    /// The snapshot manifest, whole (all its parts arrived).
    Manifest(Vec<u8>),
    /// The ids of the chunks this archive holds, whole.
    Catalog(Vec<ChunkId>),
    /// The end of the archive.
    Trailer(Trailer),
    /// Damage; reading goes on at the next good frame.
    Damage(Damage),
}

/// One manifest or catalog being put together from its parts.
#[derive(Default)]
struct Assembly {
    total: u64,
    data: Vec<u8>,
    active: bool,
}

impl Assembly {
    /// Adds a part; the whole once the last part arrives. A missing part drops the assembly
    /// (the gap is reported as damage where it was found).
    fn add(&mut self, total: u64, offset: u64, bytes: &[u8]) -> Option<Vec<u8>> {
        if offset == 0 {
            self.active = true;
            self.total = total;
            self.data = Vec::with_capacity(total.min(64 << 20) as usize);
        }
        if !self.active || offset != self.data.len() as u64 || total != self.total {
            self.active = false;
            return None;
        }
        self.data.extend_from_slice(bytes);
        if (self.data.len() as u64) < total {
            return None;
        }
        self.active = false;
        let data = std::mem::take(&mut self.data);
        (data.len() as u64 == total).then_some(data)
    }
}

/// What the reader knows about the archive it is in.
struct State {
    tag: [u8; 8],
    volume: Option<u32>,
    next_seq: u64,
    damaged: bool,
    complete: bool,
    hasher: blake3::Hasher,
    chunks: u64,
    chunk_bytes: u64,
    stored_bytes: u64,
    manifest: Assembly,
    catalog: Assembly,
    /// The archive's id (from its volume frame or header), for the associated data of
    /// sealed payloads.
    id: Option<ArchiveId>,
    /// The archive is encrypted (format version 2).
    encrypted: bool,
    /// Its keys, once the header was read and the password opened its key object.
    key: Option<ArchiveKey>,
    /// The header was read (from its frame or from its copy).
    has_header: bool,
}

impl State {
    fn new(tag: [u8; 8]) -> Self {
        State {
            tag,
            volume: None,
            next_seq: 0,
            damaged: false,
            complete: false,
            hasher: blake3::Hasher::new(),
            chunks: 0,
            chunk_bytes: 0,
            stored_bytes: 0,
            manifest: Assembly::default(),
            catalog: Assembly::default(),
            id: None,
            encrypted: false,
            key: None,
            has_header: false,
        }
    }
}

/// Bytes skipped since the last good frame.
#[derive(Clone, Copy, Debug)]
struct Skip {
    input: u32,
    offset: u64,
    len: u64,
    zero: bool,
}

/// Joins two skipped regions (the second follows the first, perhaps in a later input).
fn merge(first: Option<Skip>, then: Option<Skip>) -> Option<Skip> {
    match (first, then) {
        (Some(a), Some(b)) => Some(Skip {
            len: a.len + b.len,
            zero: a.zero && b.zero,
            ..a
        }),
        (a, b) => a.or(b),
    }
}

/// Where a good frame was found: input and offset.
type At = (u32, u64);

/// Reads archives sequentially from a stream or a sequence of volumes and yields
/// [`Event`]s.
///
/// # Contract
///
/// - One pass, no seeks: bytes are read once, in order, with reads of at least 4 MiB.
/// - Nothing damaged is returned as good: a frame is used only when its header and payload
///   checksums match, and a chunk only when its plaintext hashes to its id. Damage is
///   reported as [`Event::Damage`] (or, with [`ReaderOptions::strict`], as
///   [`Error::Corrupt`]), and reading resumes at the next good frame.
/// - Frames repeated at the start of a volume (written again after a volume filled up) and
///   padding are skipped silently. Several archives in one stream are read one after another;
///   a [`VolumeSource`] is asked for another input only while the current archive lacks its
///   trailer.
/// - Errors: [`Error::Io`] when the input fails, [`Error::Format`] for an archive of a newer
///   format version, [`Error::Corrupt`] when the input holds no archive frame at all. After an
///   error the reader yields nothing more.
pub struct ArchiveReader<'a> {
    source: Option<Box<dyn VolumeSource + Send + 'a>>,
    input: Option<Box<dyn Read + Send + 'a>>,
    inputs: u32,
    buf: Vec<u8>,
    lo: usize,
    hi: usize,
    base: u64,
    eof: bool,
    options: ReaderOptions,
    decoder: Decoder,
    decoder_key: chunker::IdKey,
    arc: Option<State>,
    skip: Option<Skip>,
    /// Zeros skipped at the end of an earlier input: the padding of a volume, unless frames
    /// turn out to be lost there.
    held: Option<Skip>,
    events: VecDeque<Event>,
    done: bool,
}

impl<'a> ArchiveReader<'a> {
    /// Reads one stream (a pipe, stdin, a file, a tape); volumes concatenated in it are read
    /// in turn.
    pub fn new(input: impl Read + Send + 'a, options: ReaderOptions) -> Self {
        let mut r = Self::empty(options);
        r.input = Some(Box::new(input));
        r.inputs = 1;
        r
    }

    /// Reads the volumes `source` hands out, one after another.
    pub fn from_volumes(source: impl VolumeSource + Send + 'a, options: ReaderOptions) -> Self {
        let mut r = Self::empty(options);
        r.source = Some(Box::new(source));
        r
    }

    fn empty(options: ReaderOptions) -> Self {
        ArchiveReader {
            source: None,
            input: None,
            inputs: 0,
            buf: Vec::new(),
            lo: 0,
            hi: 0,
            base: 0,
            eof: false,
            options,
            decoder: Decoder::new(),
            decoder_key: chunker::IdKey::PLAIN,
            arc: None,
            skip: None,
            held: None,
            events: VecDeque::new(),
            done: false,
        }
    }

    /// The next event; `Ok(None)` at the end of the input.
    pub fn next_event(&mut self) -> Result<Option<Event>> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(Some(e));
            }
            if self.done {
                return Ok(None);
            }
            if let Err(e) = self.step() {
                self.done = true;
                self.events.clear();
                return Err(e);
            }
        }
    }

    /// Looks at the next frame position: uses a good frame, or skips bytes towards the next.
    fn step(&mut self) -> Result<()> {
        if self.input.is_none() {
            return self.open_next();
        }
        if !self.fill(FRAME_HEADER_LEN)? {
            self.skip(self.hi - self.lo);
            if let Some(s) = self.skip.take_if(|s| s.zero) {
                self.held = merge(self.held.take(), Some(s));
            }
            self.input = None;
            return Ok(());
        }
        let Some(h) = Header::decode(&self.buf[self.lo..self.hi]) else {
            self.scan();
            return Ok(());
        };
        let total = FRAME_HEADER_LEN + h.len as usize;
        if !self.fill(total)?
            || !h.payload_matches(&self.buf[self.lo + FRAME_HEADER_LEN..self.lo + total])
        {
            self.skip(1);
            return Ok(());
        }
        // Lend the buffer out so the frame can be used in place while the state changes.
        let buf = std::mem::take(&mut self.buf);
        let used = self.use_frame(&h, &buf[self.lo..self.lo + total]);
        self.buf = buf;
        if !used? {
            self.skip(total);
        }
        Ok(())
    }

    /// Uses a good frame (header and payload) at the current position, unless it belongs to
    /// another archive (false).
    fn use_frame(&mut self, h: &Header, frame: &[u8]) -> Result<bool> {
        if !self.admit(h, &frame[FRAME_HEADER_LEN..])? {
            return Ok(false);
        }
        let at = (self.inputs - 1, self.base + self.lo as u64);
        self.lo += frame.len();
        self.accept(h, frame, at)?;
        Ok(true)
    }

    /// Makes at least `n` bytes available; false when the input ends first.
    fn fill(&mut self, n: usize) -> Result<bool> {
        while self.hi - self.lo < n {
            if self.eof {
                return Ok(false);
            }
            if self.buf.len() - self.hi < READ_SIZE && self.lo > 0 {
                self.buf.copy_within(self.lo..self.hi, 0);
                self.base += self.lo as u64;
                self.hi -= self.lo;
                self.lo = 0;
            }
            if self.buf.len() - self.hi < READ_SIZE {
                self.buf.resize(self.hi + READ_SIZE, 0);
            }
            let input = self.input.as_mut().expect("an input is open");
            match input.read(&mut self.buf[self.hi..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.hi += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::io(
                        "read",
                        format!("archive input {}", self.inputs - 1),
                        e,
                    ))
                }
            }
        }
        Ok(true)
    }

    /// Skips `n` bytes as unusable.
    fn skip(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let bytes = &self.buf[self.lo..self.lo + n];
        let s = self.skip.get_or_insert(Skip {
            input: self.inputs.saturating_sub(1),
            offset: self.base + self.lo as u64,
            len: 0,
            zero: true,
        });
        s.len += n as u64;
        s.zero &= is_zero(bytes);
        self.lo += n;
    }

    /// No frame header here: skips to the next occurrence of the magic (keeping a possible
    /// partial magic at the end of the buffer).
    fn scan(&mut self) {
        let window = &self.buf[self.lo + 1..self.hi];
        let mut i = 0;
        let found = loop {
            let Some(p) = window[i..].iter().position(|&b| b == ARCHIVE_MAGIC[0]) else {
                break None;
            };
            let at = i + p;
            if window.len() - at < ARCHIVE_MAGIC.len() {
                break None;
            }
            if window[at..at + ARCHIVE_MAGIC.len()] == ARCHIVE_MAGIC {
                break Some(at);
            }
            i = at + 1;
        };
        let n = match found {
            Some(at) => at + 1,
            None => (self.hi - self.lo)
                .saturating_sub(ARCHIVE_MAGIC.len() - 1)
                .max(1),
        };
        self.skip(n);
    }

    /// The current input is exhausted: opens the next one, or ends.
    fn open_next(&mut self) -> Result<()> {
        let wanted = self.arc.as_ref().is_none_or(|a| !a.complete);
        if let (true, Some(source)) = (wanted, self.source.as_mut()) {
            let expected = self
                .arc
                .as_ref()
                .and_then(|a| a.volume)
                .map_or(0, |v| v + 1);
            let next = source
                .next_volume(expected)
                .map_err(|e| Error::io("open", format!("archive volume {expected}"), e))?;
            if let Some(input) = next {
                self.input = Some(input);
                self.inputs += 1;
                (self.lo, self.hi, self.base, self.eof) = (0, 0, 0, false);
                return Ok(());
            }
        }
        self.done = true;
        if self.arc.is_none() {
            return Err(Error::Corrupt {
                what: "archive input".into(),
                detail: "no archive frame found (not a mover archive, or wholly damaged)".into(),
            });
        }
        self.close_archive()
    }

    /// Reports what the end of the current archive leaves unexplained: trailing garbage after
    /// a complete archive, or a missing trailer.
    fn close_archive(&mut self) -> Result<()> {
        let Some(a) = self.arc.as_ref() else {
            return Ok(());
        };
        let skip = merge(self.held.take(), self.skip.take());
        let (input, offset, len) = skip.map_or(
            (self.inputs.saturating_sub(1), self.base + self.lo as u64, 0),
            |s| (s.input, s.offset, s.len),
        );
        if a.complete {
            if skip.is_some_and(|s| !s.zero) {
                return self.report(Damage {
                    input,
                    offset,
                    len,
                    first_lost_frame: a.next_seq,
                    lost_frames: Some(0),
                    detail: "unrecognised bytes after the archive's trailer".into(),
                });
            }
            return Ok(());
        }
        self.report(Damage {
            input,
            offset,
            len,
            first_lost_frame: a.next_seq,
            lost_frames: None,
            detail: "the archive ends without its trailer (truncated, or volumes missing)".into(),
        })
    }

    /// Decides whether a good frame belongs to the archive being read, starting a new archive
    /// when one begins; false for a frame of another archive (skipped as garbage).
    fn admit(&mut self, h: &Header, payload: &[u8]) -> Result<bool> {
        let starts_archive = h.kind == Kind::Volume as u8
            && VolumePayload::decode(payload).is_ok_and(|v| v.number == 0);
        match &self.arc {
            Some(a) if a.tag == h.tag => Ok(true),
            Some(a) if !a.complete && !starts_archive => Ok(false),
            _ => {
                self.close_archive()?;
                self.arc = Some(State::new(h.tag));
                Ok(true)
            }
        }
    }

    fn report(&mut self, d: Damage) -> Result<()> {
        if let Some(a) = self.arc.as_mut() {
            a.damaged = true;
        }
        if self.options.strict {
            return Err(Error::Corrupt {
                what: "archive".into(),
                detail: d.to_string(),
            });
        }
        self.events.push_back(Event::Damage(d));
        Ok(())
    }

    /// Settles the bytes between the last good frame and this one (sequence number `seq`,
    /// found at `at`): reports lost frames and unexplained skipped bytes.
    fn settle(&mut self, seq: u64, explained: bool, at: At, detail: Option<String>) -> Result<()> {
        let (held, skip) = (self.held.take(), self.skip.take());
        let a = self.arc.as_ref().expect("an archive is open");
        let lost = seq.saturating_sub(a.next_seq);
        if lost == 0 && (skip.is_none() || explained) {
            return Ok(());
        }
        // Zeros held from the end of an earlier input were padding unless frames were lost.
        let skip = if lost > 0 { merge(held, skip) } else { skip };
        let (input, offset, len) = skip.map_or((at.0, at.1, 0), |s| (s.input, s.offset, s.len));
        let detail = detail.unwrap_or_else(|| {
            if lost == 0 {
                "unrecognised bytes skipped".into()
            } else if len == 0 {
                "frames missing from the stream".into()
            } else {
                "damaged data".into()
            }
        });
        let first_lost_frame = a.next_seq;
        self.report(Damage {
            input,
            offset,
            len,
            first_lost_frame,
            lost_frames: Some(lost),
            detail,
        })
    }

    /// Reports one good-looking frame that cannot be used.
    fn lost_frame(&mut self, h: &Header, at: At, detail: String) -> Result<()> {
        self.report(Damage {
            input: at.0,
            offset: at.1,
            len: FRAME_HEADER_LEN as u64 + u64::from(h.len),
            first_lost_frame: h.seq,
            lost_frames: Some(1),
            detail,
        })
    }

    /// Uses a good frame of the current archive (`frame` is header and payload).
    fn accept(&mut self, h: &Header, frame: &[u8], at: At) -> Result<()> {
        let payload = &frame[FRAME_HEADER_LEN..];
        if h.kind == Kind::Volume as u8 {
            return self.accept_volume(h, payload, at);
        }
        let a = self.arc.as_ref().expect("admitted");
        let (next, complete) = (a.next_seq, a.complete);
        if h.seq < next {
            // A copy written again after a volume change, or a repeated volume.
            let explained = complete && self.skip.is_some_and(|s| s.zero);
            return self.settle(next, explained, at, None);
        }
        self.settle(h.seq, false, at, None)?;
        let a = self.arc.as_mut().expect("admitted");
        a.next_seq = h.seq + 1;
        if h.kind != Kind::Trailer as u8 {
            a.hasher.update(&frame[..FRAME_HEADER_LEN]);
        }
        let Some(kind) = Kind::from_u8(h.kind) else {
            if h.kind >= 0x80 {
                return Ok(()); // optional, unknown to this version
            }
            let detail = format!("frame type {} is unknown (a newer mover?)", h.kind);
            return self.lost_frame(h, at, detail);
        };
        let malformed = |e: &dyn std::fmt::Display| format!("malformed {kind:?} frame: {e}");
        if kind == Kind::HeaderCopy && self.arc.as_ref().is_some_and(|a| a.has_header) {
            return Ok(()); // the header itself was read
        }
        let opened;
        let payload = match self.open_payload(h, kind, payload)? {
            Ok(Some(plain)) => {
                opened = plain;
                &opened[..]
            }
            Ok(None) => payload,
            Err(detail) => return self.lost_frame(h, at, detail),
        };
        match kind {
            Kind::Volume => unreachable!("handled above"),
            Kind::Header | Kind::HeaderCopy => match decode_header(payload) {
                Ok((header, version, _)) => {
                    check_header_version(version)?;
                    self.arc.as_mut().expect("admitted").has_header = true;
                    self.events.push_back(Event::Header(header));
                    Ok(())
                }
                Err(e) => self.lost_frame(h, at, malformed(&e)),
            },
            Kind::Chunk => match decode_chunk(payload) {
                Ok((id, frame)) => self.accept_chunk(h, at, id, frame),
                Err(e) => self.lost_frame(h, at, malformed(&e)),
            },
            Kind::Map => {
                self.events.push_back(Event::Map(payload.to_vec()));
                Ok(())
            }
            Kind::Manifest | Kind::Catalog => {
                let Ok((total, offset, bytes)) = decode_part(payload) else {
                    return self.lost_frame(h, at, malformed(&"too short"));
                };
                let a = self.arc.as_mut().expect("admitted");
                let asm = if kind == Kind::Manifest {
                    &mut a.manifest
                } else {
                    &mut a.catalog
                };
                let Some(whole) = asm.add(total, offset, bytes) else {
                    return Ok(());
                };
                if kind == Kind::Manifest {
                    self.events.push_back(Event::Manifest(whole));
                } else if !whole.len().is_multiple_of(32) {
                    return self.lost_frame(h, at, malformed(&"catalog length"));
                } else {
                    let ids = whole.chunks_exact(32);
                    let ids = ids.map(|c| ChunkId::from_bytes(c.try_into().expect("32 bytes")));
                    self.events.push_back(Event::Catalog(ids.collect()));
                }
                Ok(())
            }
            Kind::Trailer => match TrailerPayload::decode(payload) {
                Ok(t) => self.accept_trailer(h, t),
                Err(e) => self.lost_frame(h, at, malformed(&e)),
            },
        }
    }

    /// The plaintext of a frame's payload in an encrypted archive (`Ok(None)` in a clear
    /// one); the inner `Err` says why a frame cannot be used. The header's key object is
    /// opened here with the password.
    fn open_payload(
        &mut self,
        h: &Header,
        kind: Kind,
        payload: &[u8],
    ) -> Result<Result<Option<Vec<u8>>, String>> {
        let a = self.arc.as_mut().expect("admitted");
        if kind == Kind::Header || kind == Kind::HeaderCopy {
            let Some(split) = split_sealed_header(payload) else {
                return Ok(Ok(None));
            };
            let Ok((id, aead, key_file, sealed)) = split else {
                return Ok(Err("malformed encrypted header".into()));
            };
            let Some(password) = &self.options.password else {
                return Err(Error::PasswordRequired {
                    location: format!("archive {id}"),
                });
            };
            let key = ArchiveKey::open(key_file, password, &format!("archive {id}"), aead)?;
            let plain = key.keys.open(&frame_aad(&id, h.kind, h.seq), sealed);
            a.id = Some(id);
            a.encrypted = true;
            self.events
                .push_back(Event::Keyed(key.keys.id_key(), key.keys.aead()));
            a.key = Some(key);
            return Ok(plain.map(Some).ok_or_else(|| {
                "the header failed authentication: tampered with or damaged".to_string()
            }));
        }
        if !a.encrypted {
            return Ok(Ok(None));
        }
        let (Some(key), Some(id)) = (&a.key, &a.id) else {
            return Ok(Err(
                "the archive is encrypted and its header, which holds the key, was not read".into(),
            ));
        };
        Ok(key
            .keys
            .open(&frame_aad(id, h.kind, h.seq), payload)
            .map(Some)
            .ok_or_else(|| {
                format!("{kind:?} frame failed authentication: tampered with, or sealed under another key")
            }))
    }

    fn accept_chunk(&mut self, h: &Header, at: At, id: ChunkId, frame: Frame) -> Result<()> {
        let a = self.arc.as_mut().expect("admitted");
        a.chunks += 1;
        a.chunk_bytes += u64::from(frame.raw_len);
        a.stored_bytes += frame.bytes.len() as u64;
        if !self.options.decode {
            self.events.push_back(Event::ChunkFrame { id, frame });
            return Ok(());
        }
        let id_key = a
            .key
            .as_ref()
            .map_or(chunker::IdKey::PLAIN, |k| k.keys.id_key());
        if id_key != self.decoder_key {
            self.decoder = Decoder::with_id_key(id_key);
            self.decoder_key = id_key;
        }
        let decoded = if frame.compression == Compression::None {
            // The check Decoder makes, without copying the plaintext again.
            let ok = frame.bytes.len() == frame.raw_len as usize && id_key.id(&frame.bytes) == id;
            ok.then_some(frame.bytes)
                .ok_or_else(|| "content does not match its id".to_string())
        } else {
            self.decoder.decode(&frame, &id).map_err(|e| e.to_string())
        };
        match decoded {
            Ok(data) => {
                self.events.push_back(Event::Chunk { id, data });
                Ok(())
            }
            Err(e) => self.lost_frame(h, at, format!("chunk {id}: {e}")),
        }
    }

    fn accept_trailer(&mut self, h: &Header, t: TrailerPayload) -> Result<()> {
        let a = self.arc.as_mut().expect("admitted");
        a.complete = true;
        let matches = t.hash == *a.hasher.finalize().as_bytes()
            && t.frames == h.seq
            && (t.chunks, t.chunk_bytes, t.stored_bytes)
                == (a.chunks, a.chunk_bytes, a.stored_bytes);
        let verified = !a.damaged && matches;
        if !a.damaged && !matches {
            self.report(Damage {
                input: self.inputs - 1,
                offset: self.base + self.lo as u64,
                len: 0,
                first_lost_frame: h.seq,
                lost_frames: Some(0),
                detail: "the trailer's totals or archive hash do not match the frames read".into(),
            })?;
        }
        self.events.push_back(Event::Trailer(Trailer {
            incomplete: t.incomplete,
            frames: t.frames,
            chunks: t.chunks,
            chunk_bytes: t.chunk_bytes,
            stored_bytes: t.stored_bytes,
            archive_hash: t.hash,
            verified,
        }));
        Ok(())
    }

    /// A volume frame: checks the volume sequence and reports missing volumes.
    fn accept_volume(&mut self, h: &Header, payload: &[u8], at: At) -> Result<()> {
        let Ok(v) = VolumePayload::decode(payload) else {
            return self.settle(h.seq, false, at, Some("malformed volume frame".into()));
        };
        v.check_version()?;
        if archive_aead(v.version).is_some() {
            let a = self.arc.as_mut().expect("admitted");
            a.encrypted = true;
            a.id = Some(v.id);
        }
        let a = self.arc.as_ref().expect("admitted");
        let prev = a.volume;
        // Nothing lost since the last good frame: what was skipped is the unusable end of the
        // previous volume (padding, or a frame cut off by the end of the medium and written
        // again here).
        let nothing_lost = h.seq <= a.next_seq;
        let follows = nothing_lost && (prev.is_some() || a.next_seq > 0);
        let detail = match prev {
            _ if nothing_lost => None,
            Some(p) if v.number > p + 1 => Some(format!("volumes {}..{} missing", p + 1, v.number)),
            None if v.number > 0 && a.next_seq == 0 => {
                Some(format!("volumes 0..{} missing", v.number))
            }
            _ => None,
        };
        self.settle(h.seq, follows, at, detail)?;
        let a = self.arc.as_mut().expect("admitted");
        a.next_seq = a.next_seq.max(h.seq);
        if prev.is_none_or(|p| v.number > p) {
            a.volume = Some(v.number);
            self.events.push_back(Event::Volume(VolumeInfo {
                archive: v.id,
                number: v.number,
                block_size: v.block_size,
            }));
        }
        Ok(())
    }
}

impl Iterator for ArchiveReader<'_> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

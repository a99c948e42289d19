//! The on-disk format, version 1. Byte tables here match `docs/FORMAT.md`.
//!
//! Every structure starts with an 8-byte magic (the first 8 bytes of BLAKE3 of
//! `"<name> v1"`) and a `u32` format version, and ends with a checksum, so a reader can tell a
//! foreign or damaged object from a valid one. All integers are little-endian.
//!
//! Objects are named by content: a pack, an index segment and a snapshot are stored under the
//! hex BLAKE3 of their bytes, so any copy can be checked against its own name.

use crate::crypto::{Aead, Keys};
use crate::id::hex;
use crate::{ChunkId, Compression, Error, Result};

/// Format version written by this build, and the highest it reads.
pub const FORMAT_VERSION: u32 = 1;

// DO NOT MODIFY: the magics identify files written by every earlier release.
/// Magic of the repository config: BLAKE3("mover config v1")[..8].
pub const CONFIG_MAGIC: [u8; 8] = [0xbe, 0xea, 0x9b, 0x0d, 0x63, 0x79, 0xce, 0xb9];
/// Magic of a snapshot manifest: BLAKE3("mover manifest v1")[..8].
pub const MANIFEST_MAGIC: [u8; 8] = [0xcd, 0x37, 0x9b, 0x26, 0x0c, 0xb4, 0x3d, 0x08];
/// Magic of a pack file: BLAKE3("mover pack v1")[..8].
pub const PACK_MAGIC: [u8; 8] = [0x11, 0x46, 0x94, 0xd6, 0xef, 0x46, 0x83, 0x58];
/// Magic of an index segment: BLAKE3("mover index v1")[..8].
pub const INDEX_MAGIC: [u8; 8] = [0x81, 0x53, 0xdf, 0x3f, 0xb9, 0x3b, 0xbb, 0xab];

/// A 32-byte object name (BLAKE3 of the object's bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ObjectId(pub [u8; 32]);

impl ObjectId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ObjectId(*blake3::hash(bytes).as_bytes())
    }
    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        ChunkId::from_hex(s).map(|c| ObjectId(*c.as_bytes()))
    }
}

// ---------------------------------------------------------------------------------------------
// Little-endian cursor helpers.

struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    fn str(&mut self, s: &str) {
        let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        self.u16(b.len() as u16);
        self.bytes(b);
    }
    fn checksum(mut self) -> Vec<u8> {
        let sum = blake3::hash(&self.0);
        self.0.extend_from_slice(sum.as_bytes());
        self.0
    }
}

struct In<'a> {
    what: &'static str,
    buf: &'a [u8],
    pos: usize,
    version: u32,
}

impl<'a> In<'a> {
    /// Checks magic, version and (when `checked`) the trailing BLAKE3, and positions after the
    /// version.
    fn open(what: &'static str, buf: &'a [u8], magic: &[u8; 8], checked: bool) -> Result<Self> {
        Self::open_impl(what, buf, magic, checked, FORMAT_VERSION)
    }

    /// Like [`In::open`] for a checksummed structure that has versions up to `max`.
    fn open_versioned(
        what: &'static str,
        buf: &'a [u8],
        magic: &[u8; 8],
        max: u32,
    ) -> Result<Self> {
        Self::open_impl(what, buf, magic, true, max)
    }

    fn open_impl(
        what: &'static str,
        buf: &'a [u8],
        magic: &[u8; 8],
        checked: bool,
        max: u32,
    ) -> Result<Self> {
        if buf.len() < 12 || buf[..8] != magic[..] {
            return Err(Error::structure(
                what,
                "bad magic (not a mover object of this kind)",
            ));
        }
        let version = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
        if version == 0 || version > max {
            return Err(Error::UnsupportedVersion {
                what,
                found: version,
                supported: max,
            });
        }
        let body = if checked {
            if buf.len() < 44 {
                return Err(Error::structure(what, "truncated"));
            }
            let (body, sum) = buf.split_at(buf.len() - 32);
            if blake3::hash(body).as_bytes()[..] != sum[..] {
                return Err(Error::structure(what, "checksum mismatch"));
            }
            body
        } else {
            buf
        };
        Ok(In {
            what,
            buf: body,
            pos: 12,
            version,
        })
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| Error::structure(self.what, "truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn str(&mut self) -> Result<String> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| Error::structure(self.what, "string not UTF-8"))
    }
    fn end(&self) -> Result<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(Error::structure(self.what, "trailing bytes"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Repository config.

/// The repository config, stored as the object `config`.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | [`CONFIG_MAGIC`] |
/// | 8 | 4 | format version: 1; 2 for a repository encrypted with XChaCha20-Poly1305; 3 for one encrypted with AES-256-GCM |
/// | 12 | 4 | flags (versions 2 and 3): bit 0 = encrypted; reserved, 0 in version 1 |
/// | 16 | 32 | repository id (random) |
/// | 48 | 8 | created, ms since the Unix epoch (i64) |
/// | 56 | 32 | BLAKE3 of bytes 0..56 |
///
/// The cipher is told by the version, not by a flag, so that a release that knows only
/// XChaCha20-Poly1305 refuses an AES-256-GCM repository as a newer format instead of taking
/// every object in it for tampered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Random repository id.
    pub id: [u8; 32],
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
    /// The cipher that seals every object, for an encrypted repository (the master key is in
    /// the key objects under `keys/`); `None` for one in clear.
    pub encryption: Option<Aead>,
}

/// Config version of a repository encrypted with XChaCha20-Poly1305 (version 1 stays byte for
/// byte what it was).
pub const CONFIG_VERSION_ENCRYPTED: u32 = 2;
/// Config version of a repository encrypted with AES-256-GCM.
pub const CONFIG_VERSION_AES: u32 = 3;

/// Length of an encoded [`Config`].
pub const CONFIG_LEN: usize = 88;

impl Config {
    /// Encodes the config (88 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Out(Vec::with_capacity(CONFIG_LEN));
        o.bytes(&CONFIG_MAGIC);
        let (version, flags) = match self.encryption {
            None => (FORMAT_VERSION, 0),
            Some(Aead::XChaCha20Poly1305) => (CONFIG_VERSION_ENCRYPTED, 1),
            Some(Aead::Aes256Gcm) => (CONFIG_VERSION_AES, 1),
        };
        o.u32(version);
        o.u32(flags);
        o.bytes(&self.id);
        o.u64(self.created_ms as u64);
        o.checksum()
    }

    /// Decodes and checks a config.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        const W: &str = "repository config";
        let mut r = In::open_versioned(W, buf, &CONFIG_MAGIC, CONFIG_VERSION_AES)?;
        let flags = r.u32()?;
        let encryption = match r.version {
            _ if flags & 1 == 0 => None,
            CONFIG_VERSION_ENCRYPTED => Some(Aead::XChaCha20Poly1305),
            CONFIG_VERSION_AES => Some(Aead::Aes256Gcm),
            _ => None,
        };
        let id = r.arr()?;
        let created_ms = r.u64()? as i64;
        r.end()?;
        Ok(Config {
            id,
            created_ms,
            encryption,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshot manifest.

/// How a snapshot's source was cut into chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunking {
    /// Fixed, aligned chunks of this size (images).
    Fixed(u32),
    /// FastCDC around this average size (streams).
    Cdc(u32),
}

/// One chunk of a snapshot, in source order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Length of the chunk's plaintext.
    pub len: u32,
    /// The chunk's id, or `None` for an all-zero chunk (never stored).
    pub id: Option<ChunkId>,
}

/// What a backup did, recorded with its snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackupStats {
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Plaintext bytes of chunks that were new to the repository.
    pub bytes_new: u64,
    /// Bytes written for those new chunks, after compression.
    pub bytes_stored: u64,
    /// Bytes in all-zero chunks and holes (never stored).
    pub bytes_zero: u64,
    /// Chunks new to the repository.
    pub chunks_new: u64,
    /// Chunks already present (deduplicated).
    pub chunks_reused: u64,
    /// Wall time of the backup, ms.
    pub duration_ms: u64,
}

/// Version of the snapshot manifest written by this build (version 1 is still read).
pub const MANIFEST_VERSION: u32 = 2;

/// One disk of a snapshot: everything needed to reassemble it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// Name of the disk within its snapshot (`sda`, or the snapshot name for one disk).
    pub name: String,
    /// Where the data came from, as given.
    pub source: String,
    /// How the source was chunked.
    pub chunking: Chunking,
    /// Length in bytes (the sum of entry lengths).
    pub source_len: u64,
    /// The change token the next incremental can start from (a dirty bitmap's name or an
    /// opaque `--change-id`); empty for none.
    pub change_token: String,
    /// What the backup did for this disk.
    pub stats: BackupStats,
    /// Every chunk of the disk in order.
    pub entries: Vec<Entry>,
}

/// A small file stored with a snapshot (a VM's configuration, for example).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// File name, as given.
    pub name: String,
    /// Its bytes (at most [`MAX_ATTACHMENT`]).
    pub data: Vec<u8>,
}

/// Largest attachment a manifest holds, bytes.
pub const MAX_ATTACHMENT: usize = 16 << 20;

/// A snapshot: one point in time of a group of disks (one disk, or every disk of a VM).
///
/// Version 2 (written by this build):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | [`MANIFEST_MAGIC`] |
/// | 8 | 4 | manifest version (2) |
/// | 12 | 4 | flags, 0 |
/// | 16 | 8 | created, ms since the Unix epoch (i64) |
/// | 24 | 16 | nonce (random; makes every snapshot id unique) |
/// | 40 | 32 | parent snapshot id, all zero for none |
/// | 72 | 56 | [`BackupStats`] of the whole snapshot: seven u64 in field order |
/// | 128 | 4 | disk count D |
/// | 132 | 4 | attachment count A |
/// | 136 | 2 + n | name: u16 length, UTF-8 |
/// | … | | D disks, each: name, source and change token (u16 length + UTF-8 each); chunking u8 (0 fixed, 1 FastCDC); 3 reserved; chunk size u32; length u64; [`BackupStats`] (56); entry count N u64; N entries of 37 bytes: kind u8 (0 zero, 1 data), length u32, chunk id (32; zero for kind 0) |
/// | … | | A attachments, each: name (u16 length + UTF-8), length u32, bytes |
/// | end − 32 | 32 | BLAKE3 of all preceding bytes |
///
/// Version 1 (read only) held one disk; it decodes into a manifest with one disk named after
/// the snapshot and an empty change token. The snapshot id is the BLAKE3 of the whole encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
    /// Random nonce.
    pub nonce: [u8; 16],
    /// Parent snapshot, if this backup was incremental.
    pub parent: Option<ObjectId>,
    /// What the backup did, summed over the disks.
    pub stats: BackupStats,
    /// Name of the snapshot's group (by default the source path).
    pub name: String,
    /// The disks, at least one, names unique.
    pub disks: Vec<Disk>,
    /// Small files stored with the snapshot.
    pub attachments: Vec<Attachment>,
}

const ENTRY_SIZE: usize = 37;

fn put_stats(o: &mut Out, s: &BackupStats) {
    for v in [
        s.bytes_read,
        s.bytes_new,
        s.bytes_stored,
        s.bytes_zero,
        s.chunks_new,
        s.chunks_reused,
        s.duration_ms,
    ] {
        o.u64(v);
    }
}

fn get_stats(r: &mut In) -> Result<BackupStats> {
    Ok(BackupStats {
        bytes_read: r.u64()?,
        bytes_new: r.u64()?,
        bytes_stored: r.u64()?,
        bytes_zero: r.u64()?,
        chunks_new: r.u64()?,
        chunks_reused: r.u64()?,
        duration_ms: r.u64()?,
    })
}

fn get_chunking(r: &mut In) -> Result<Chunking> {
    let kind = r.u8()?;
    r.take(3)?;
    let size = r.u32()?;
    match kind {
        0 => Ok(Chunking::Fixed(size)),
        1 => Ok(Chunking::Cdc(size)),
        k => Err(Error::structure(r.what, format!("unknown chunking {k}"))),
    }
}

fn get_entries(r: &mut In, count: u64, source_len: u64) -> Result<Vec<Entry>> {
    let remaining = (r.buf.len() - r.pos) as u64;
    if count
        .checked_mul(ENTRY_SIZE as u64)
        .is_none_or(|n| n > remaining)
    {
        return Err(Error::structure(
            r.what,
            "entry count does not match the length",
        ));
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut total = 0u64;
    for _ in 0..count {
        let kind = r.u8()?;
        let len = r.u32()?;
        let id: [u8; 32] = r.arr()?;
        let id = match kind {
            0 => None,
            1 => Some(ChunkId::from_bytes(id)),
            k => return Err(Error::structure(r.what, format!("unknown entry kind {k}"))),
        };
        total += u64::from(len);
        entries.push(Entry { len, id });
    }
    if total != source_len {
        return Err(Error::structure(
            r.what,
            "entry lengths do not add up to the source length",
        ));
    }
    Ok(entries)
}

impl Manifest {
    /// Encodes the manifest (version 2); its snapshot id is `ObjectId::of` the result.
    pub fn encode(&self) -> Vec<u8> {
        let entries: usize = self.disks.iter().map(|d| d.entries.len()).sum();
        let mut o = Out(Vec::with_capacity(256 + ENTRY_SIZE * entries));
        o.bytes(&MANIFEST_MAGIC);
        o.u32(MANIFEST_VERSION);
        o.u32(0);
        o.u64(self.created_ms as u64);
        o.bytes(&self.nonce);
        o.bytes(&self.parent.map_or([0; 32], |p| p.0));
        put_stats(&mut o, &self.stats);
        o.u32(self.disks.len() as u32);
        o.u32(self.attachments.len() as u32);
        o.str(&self.name);
        for d in &self.disks {
            o.str(&d.name);
            o.str(&d.source);
            o.str(&d.change_token);
            let (kind, size) = match d.chunking {
                Chunking::Fixed(s) => (0, s),
                Chunking::Cdc(s) => (1, s),
            };
            o.u8(kind);
            o.bytes(&[0; 3]);
            o.u32(size);
            o.u64(d.source_len);
            put_stats(&mut o, &d.stats);
            o.u64(d.entries.len() as u64);
            for e in &d.entries {
                o.u8(u8::from(e.id.is_some()));
                o.u32(e.len);
                o.bytes(e.id.as_ref().map_or(&[0; 32], |id| id.as_bytes()));
            }
        }
        for a in &self.attachments {
            o.str(&a.name);
            o.u32(a.data.len() as u32);
            o.bytes(&a.data);
        }
        o.checksum()
    }

    /// Decodes and checks a manifest of version 1 or 2.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        const W: &str = "snapshot manifest";
        let mut r = In::open_versioned(W, buf, &MANIFEST_MAGIC, MANIFEST_VERSION)?;
        if r.version == 1 {
            return Self::decode_v1(r);
        }
        r.u32()?;
        let created_ms = r.u64()? as i64;
        let nonce = r.arr()?;
        let parent: [u8; 32] = r.arr()?;
        let stats = get_stats(&mut r)?;
        let disk_count = r.u32()?;
        let attachment_count = r.u32()?;
        let name = r.str()?;
        if disk_count == 0 {
            return Err(Error::structure(W, "no disks"));
        }
        let mut disks = Vec::new();
        for _ in 0..disk_count {
            let name = r.str()?;
            let source = r.str()?;
            let change_token = r.str()?;
            let chunking = get_chunking(&mut r)?;
            let source_len = r.u64()?;
            let stats = get_stats(&mut r)?;
            let count = r.u64()?;
            let entries = get_entries(&mut r, count, source_len)?;
            disks.push(Disk {
                name,
                source,
                chunking,
                source_len,
                change_token,
                stats,
                entries,
            });
        }
        let mut attachments = Vec::new();
        for _ in 0..attachment_count {
            let name = r.str()?;
            let len = r.u32()? as usize;
            let data = r.take(len)?.to_vec();
            attachments.push(Attachment { name, data });
        }
        r.end()?;
        Ok(Manifest {
            created_ms,
            nonce,
            parent: (parent != [0; 32]).then_some(ObjectId(parent)),
            stats,
            name,
            disks,
            attachments,
        })
    }

    /// Version 1: one disk, fixed header of 152 bytes (see `docs/FORMAT.md`).
    fn decode_v1(mut r: In) -> Result<Self> {
        let chunking = get_chunking(&mut r)?;
        r.u32()?;
        let source_len = r.u64()?;
        let created_ms = r.u64()? as i64;
        let nonce = r.arr()?;
        let parent: [u8; 32] = r.arr()?;
        let stats = get_stats(&mut r)?;
        let count = r.u64()?;
        let name = r.str()?;
        let source = r.str()?;
        let entries = get_entries(&mut r, count, source_len)?;
        r.end()?;
        Ok(Manifest {
            created_ms,
            nonce,
            parent: (parent != [0; 32]).then_some(ObjectId(parent)),
            stats,
            disks: vec![Disk {
                name: name.clone(),
                source,
                chunking,
                source_len,
                change_token: String::new(),
                stats,
                entries,
            }],
            name,
            attachments: Vec::new(),
        })
    }

    /// Total length of all disks, bytes.
    pub fn total_len(&self) -> u64 {
        self.disks.iter().map(|d| d.source_len).sum()
    }

    /// The disk called `name`.
    pub fn disk(&self, name: &str) -> Option<&Disk> {
        self.disks.iter().find(|d| d.name == name)
    }
}

// ---------------------------------------------------------------------------------------------
// Packs.

/// Where a chunk lives inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobEntry {
    /// The chunk.
    pub id: ChunkId,
    /// Offset of its stored bytes from the start of the pack.
    pub offset: u32,
    /// Stored (encoded) length.
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// Encoding of the stored bytes.
    pub compression: Compression,
}

/// Length of a pack's header: magic, version, reserved u32.
pub const PACK_HEADER_LEN: usize = 16;
/// Length of one blob entry in a pack trailer.
pub const PACK_ENTRY_LEN: usize = 48;
/// Length of a pack's footer.
pub const PACK_FOOTER_LEN: usize = 32;

/// The start of every pack.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | [`PACK_MAGIC`] |
/// | 8 | 4 | format version (1) |
/// | 12 | 4 | reserved, 0 |
pub fn pack_header() -> [u8; PACK_HEADER_LEN] {
    let mut h = [0u8; PACK_HEADER_LEN];
    h[..8].copy_from_slice(&PACK_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Appends the trailer that makes a pack self-describing: the blob entries, then the footer.
///
/// Entry (48 bytes): chunk id 32 | offset u32 | stored length u32 | raw length u32 |
/// compression u8 | reserved 3.
///
/// Footer (32 bytes): entry count u32 | reserved u32 | BLAKE3(entries)[..16] | [`PACK_MAGIC`].
pub fn write_pack_trailer(pack: &mut Vec<u8>, entries: &[BlobEntry]) {
    let start = pack.len();
    push_pack_entries(pack, entries);
    push_pack_footer(pack, start, entries.len() as u32, 0);
}

/// Appends the 48-byte entries of a pack trailer.
fn push_pack_entries(out: &mut Vec<u8>, entries: &[BlobEntry]) {
    out.reserve(entries.len() * PACK_ENTRY_LEN);
    for e in entries {
        out.extend_from_slice(e.id.as_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
        out.push(e.compression as u8);
        out.extend_from_slice(&[0; 3]);
    }
}

/// Appends a pack footer: `first` u32 (the entry count, or a sealed trailer's length) |
/// `flags` u32 | the first 16 bytes of BLAKE3 of `pack[start..]` | [`PACK_MAGIC`].
fn push_pack_footer(pack: &mut Vec<u8>, start: usize, first: u32, flags: u32) {
    let sum = blake3::hash(&pack[start..]);
    pack.extend_from_slice(&first.to_le_bytes());
    pack.extend_from_slice(&flags.to_le_bytes());
    pack.extend_from_slice(&sum.as_bytes()[..16]);
    pack.extend_from_slice(&PACK_MAGIC);
}

/// Reads the entry count from a pack's footer (its last [`PACK_FOOTER_LEN`] bytes).
pub fn pack_footer_count(footer: &[u8]) -> Result<u32> {
    const W: &str = "pack footer";
    if footer.len() != PACK_FOOTER_LEN || footer[24..] != PACK_MAGIC {
        return Err(Error::structure(W, "bad magic (truncated or not a pack)"));
    }
    Ok(u32::from_le_bytes(footer[..4].try_into().expect("4 bytes")))
}

/// Decodes a pack trailer: `tail` is the entries followed by the footer.
pub fn read_pack_trailer(tail: &[u8]) -> Result<Vec<BlobEntry>> {
    const W: &str = "pack trailer";
    if tail.len() < PACK_FOOTER_LEN {
        return Err(Error::structure(W, "truncated"));
    }
    let (entries, footer) = tail.split_at(tail.len() - PACK_FOOTER_LEN);
    let count = pack_footer_count(footer)? as usize;
    if entries.len() != count * PACK_ENTRY_LEN {
        return Err(Error::structure(W, "entry count does not match"));
    }
    if blake3::hash(entries).as_bytes()[..16] != footer[8..24] {
        return Err(Error::structure(W, "checksum mismatch"));
    }
    entries
        .chunks_exact(PACK_ENTRY_LEN)
        .map(|e| {
            let u = |i: usize| u32::from_le_bytes(e[i..i + 4].try_into().expect("4 bytes"));
            Ok(BlobEntry {
                id: ChunkId::from_bytes(e[..32].try_into().expect("32 bytes")),
                offset: u(32),
                stored_len: u(36),
                raw_len: u(40),
                compression: Compression::from_u8(e[44])
                    .ok_or_else(|| Error::structure(W, "unknown compression"))?,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Index segments.

/// One index record: a chunk and the pack that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The pack.
    pub pack: ObjectId,
    /// The blob inside it.
    pub blob: BlobEntry,
}

/// An index segment: which pack holds which chunk, for the packs one backup wrote.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | [`INDEX_MAGIC`] |
/// | 8 | 4 | format version (1) |
/// | 12 | 4 | entry count N |
/// | 16 | 80 × N | chunk id 32, pack id 32, offset u32, stored length u32, raw length u32, compression u8, reserved 3 |
/// | end − 32 | 32 | BLAKE3 of all preceding bytes |
pub fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut o = Out(Vec::with_capacity(16 + 80 * entries.len() + 32));
    o.bytes(&INDEX_MAGIC);
    o.u32(FORMAT_VERSION);
    o.u32(entries.len() as u32);
    for e in entries {
        o.bytes(e.blob.id.as_bytes());
        o.bytes(&e.pack.0);
        o.u32(e.blob.offset);
        o.u32(e.blob.stored_len);
        o.u32(e.blob.raw_len);
        o.u8(e.blob.compression as u8);
        o.bytes(&[0; 3]);
    }
    o.checksum()
}

/// Decodes and checks an index segment.
pub fn decode_index(buf: &[u8]) -> Result<Vec<IndexEntry>> {
    const W: &str = "index segment";
    let mut r = In::open(W, buf, &INDEX_MAGIC, true)?;
    let count = r.u32()? as usize;
    if (r.buf.len() - r.pos) != count * 80 {
        return Err(Error::structure(W, "entry count does not match the length"));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let id = ChunkId::from_bytes(r.arr()?);
        let pack = ObjectId(r.arr()?);
        let offset = r.u32()?;
        let stored_len = r.u32()?;
        let raw_len = r.u32()?;
        let compression = Compression::from_u8(r.u8()?)
            .ok_or_else(|| Error::structure(W, "unknown compression"))?;
        r.take(3)?;
        out.push(IndexEntry {
            pack,
            blob: BlobEntry {
                id,
                offset,
                stored_len,
                raw_len,
                compression,
            },
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Encrypted repositories: sealed objects.

/// Version of an index segment that is sealed (its plaintext is a version 1 segment).
pub const INDEX_VERSION_SEALED: u32 = 2;
/// Version of a manifest object that is sealed (its plaintext is a version 2 manifest).
pub const MANIFEST_VERSION_SEALED: u32 = 3;
/// Version of a pack whose blobs and trailer are sealed.
pub const PACK_VERSION_SEALED: u32 = 2;
/// Length of the clear header of a sealed object.
pub const SEALED_HEADER_LEN: usize = 16;

/// Seals a whole object (an index segment, a manifest): a 16-byte clear header (the kind's
/// magic, `version`, reserved u32) that is also the associated data, then the plain encoding
/// sealed (nonce 24, ciphertext, tag 16). Its object id is BLAKE3 of the result.
pub fn seal_object(keys: &Keys, magic: &[u8; 8], version: u32, plain: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(SEALED_HEADER_LEN + plain.len() + crate::crypto::SEAL_OVERHEAD);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let header: [u8; SEALED_HEADER_LEN] = out[..].try_into().expect("16 bytes");
    keys.seal_into(&header, plain, &mut out);
    out
}

/// Opens an object sealed by [`seal_object`]; `what` names it in errors.
pub fn open_object(
    keys: &Keys,
    what: &str,
    magic: &[u8; 8],
    version: u32,
    buf: &[u8],
) -> Result<Vec<u8>> {
    if buf.len() < SEALED_HEADER_LEN || buf[..8] != magic[..] {
        return Err(Error::Tampered {
            what: format!("{what} (not a sealed object of this kind)"),
        });
    }
    let found = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
    if found != version {
        return Err(Error::Tampered {
            what: format!("{what} (format version {found}, not a sealed object)"),
        });
    }
    keys.open(&buf[..SEALED_HEADER_LEN], &buf[SEALED_HEADER_LEN..])
        .ok_or_else(|| Error::Tampered { what: what.into() })
}

/// The start of every sealed pack: [`PACK_MAGIC`], version 2, reserved u32.
pub fn sealed_pack_header() -> [u8; PACK_HEADER_LEN] {
    let mut h = pack_header();
    h[8..12].copy_from_slice(&PACK_VERSION_SEALED.to_le_bytes());
    h
}

/// The associated data of a chunk blob in a sealed pack: [`PACK_MAGIC`] and the chunk id, so
/// a blob moved under another id fails to open.
fn blob_aad(id: &ChunkId) -> [u8; 40] {
    let mut aad = [0u8; 40];
    aad[..8].copy_from_slice(&PACK_MAGIC);
    aad[8..].copy_from_slice(id.as_bytes());
    aad
}

/// Appends the sealed blob of a chunk's stored (compressed) bytes to `out`; returns its
/// length (stored bytes + 40).
pub fn seal_blob(keys: &Keys, id: &ChunkId, stored: &[u8], out: &mut Vec<u8>) -> usize {
    let start = out.len();
    keys.seal_into(&blob_aad(id), stored, out);
    out.len() - start
}

/// Opens a sealed blob (in its own buffer); `None` when it fails authentication.
pub fn open_blob(keys: &Keys, id: &ChunkId, sealed: Vec<u8>) -> Option<Vec<u8>> {
    keys.open_owned(&blob_aad(id), sealed)
}

/// Associated data of a sealed pack trailer.
const TRAILER_AAD: [u8; 12] = {
    let mut a = [0u8; 12];
    let mut i = 0;
    while i < 8 {
        a[i] = PACK_MAGIC[i];
        i += 1;
    }
    a[8] = PACK_VERSION_SEALED as u8;
    a
};

/// Appends the trailer of a sealed pack: the entries (as in a plain pack) sealed, then the
/// footer: sealed length u32 | flags u32 (bit 0: sealed) | BLAKE3(sealed entries)[..16] |
/// [`PACK_MAGIC`]. Returns the trailer's length (the pack id is BLAKE3 of the trailer).
pub fn write_sealed_pack_trailer(pack: &mut Vec<u8>, entries: &[BlobEntry], keys: &Keys) -> usize {
    let start = pack.len();
    let mut plain = Vec::new();
    push_pack_entries(&mut plain, entries);
    keys.seal_into(&TRAILER_AAD, &plain, pack);
    let sealed_len = pack.len() - start;
    push_pack_footer(pack, start, sealed_len as u32, 1);
    pack.len() - start
}

/// Decodes the trailer of a sealed pack (`tail`: the sealed entries and the footer).
pub fn read_sealed_pack_trailer(tail: &[u8], keys: &Keys) -> Result<Vec<BlobEntry>> {
    const W: &str = "pack trailer";
    if tail.len() < PACK_FOOTER_LEN {
        return Err(Error::structure(W, "truncated"));
    }
    let (sealed, footer) = tail.split_at(tail.len() - PACK_FOOTER_LEN);
    let len = pack_footer_count(footer)? as usize;
    if sealed.len() != len || footer[4] & 1 == 0 {
        return Err(Error::structure(W, "sealed length does not match"));
    }
    if blake3::hash(sealed).as_bytes()[..16] != footer[8..24] {
        return Err(Error::structure(W, "checksum mismatch"));
    }
    let plain = keys
        .open(&TRAILER_AAD, sealed)
        .ok_or_else(|| Error::Tampered {
            what: "pack trailer".into(),
        })?;
    if plain.len() % PACK_ENTRY_LEN != 0 {
        return Err(Error::structure(W, "entry length"));
    }
    let mut fake = plain;
    let n = fake.len() / PACK_ENTRY_LEN;
    let sum = blake3::hash(&fake);
    fake.extend_from_slice(&(n as u32).to_le_bytes());
    fake.extend_from_slice(&[0; 4]);
    fake.extend_from_slice(&sum.as_bytes()[..16]);
    fake.extend_from_slice(&PACK_MAGIC);
    read_pack_trailer(&fake)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics_are_blake3_prefixes() {
        for (name, magic) in [
            ("mover config v1", CONFIG_MAGIC),
            ("mover manifest v1", MANIFEST_MAGIC),
            ("mover pack v1", PACK_MAGIC),
            ("mover index v1", INDEX_MAGIC),
        ] {
            assert_eq!(
                blake3::hash(name.as_bytes()).as_bytes()[..8],
                magic,
                "{name}"
            );
        }
    }

    fn sample_manifest() -> Manifest {
        let stats = BackupStats {
            bytes_read: 1,
            bytes_new: 2,
            bytes_stored: 3,
            bytes_zero: 4,
            chunks_new: 5,
            chunks_reused: 6,
            duration_ms: 7,
        };
        Manifest {
            created_ms: 1_700_000_000_123,
            nonce: [9; 16],
            parent: Some(ObjectId([4; 32])),
            stats,
            name: "vm1".into(),
            disks: vec![
                Disk {
                    name: "sda".into(),
                    source: "/dev/vg/vm1".into(),
                    chunking: Chunking::Fixed(65536),
                    source_len: 65536 + 10,
                    change_token: "b0".into(),
                    stats,
                    entries: vec![
                        Entry {
                            len: 65536,
                            id: None,
                        },
                        Entry {
                            len: 10,
                            id: Some(ChunkId::of(b"x")),
                        },
                    ],
                },
                Disk {
                    name: "sdb".into(),
                    source: "-".into(),
                    chunking: Chunking::Cdc(1 << 20),
                    source_len: 3,
                    change_token: String::new(),
                    stats: BackupStats::default(),
                    entries: vec![Entry {
                        len: 3,
                        id: Some(ChunkId::of(b"abc")),
                    }],
                },
            ],
            attachments: vec![Attachment {
                name: "vm1.xml".into(),
                data: b"<domain/>".to_vec(),
            }],
        }
    }

    #[test]
    fn manifest_round_trip_and_corruption() {
        let m = sample_manifest();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        for i in [0, 9, 20, 100, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(Manifest::decode(&bad).is_err(), "flip at {i} not detected");
        }
        assert!(Manifest::decode(&bytes[..bytes.len() - 5]).is_err());
        let mut future = bytes.clone();
        future[8] = 3;
        assert!(matches!(
            Manifest::decode(&future),
            Err(Error::UnsupportedVersion { found: 3, .. })
        ));
    }

    #[test]
    fn pack_trailer_and_index_round_trip() {
        let e = BlobEntry {
            id: ChunkId::of(b"a"),
            offset: 16,
            stored_len: 5,
            raw_len: 9,
            compression: Compression::Zstd,
        };
        let mut pack = pack_header().to_vec();
        pack.extend_from_slice(b"abcde");
        let start = pack.len();
        write_pack_trailer(&mut pack, &[e, e]);
        assert_eq!(read_pack_trailer(&pack[start..]).unwrap(), vec![e, e]);
        let mut bad = pack.clone();
        bad[start + 3] ^= 1;
        assert!(read_pack_trailer(&bad[start..]).is_err());

        let ie = IndexEntry {
            pack: ObjectId([1; 32]),
            blob: e,
        };
        let seg = encode_index(&[ie]);
        assert_eq!(decode_index(&seg).unwrap(), vec![ie]);
        let mut bad = seg.clone();
        bad[40] ^= 1;
        assert!(decode_index(&bad).is_err());
        let c = Config {
            id: [3; 32],
            created_ms: 5,
            encryption: None,
        };
        assert_eq!(c.encode().len(), CONFIG_LEN);
        assert_eq!(Config::decode(&c.encode()).unwrap(), c);
        assert_eq!(c.encode()[8..16], [1, 0, 0, 0, 0, 0, 0, 0]);
        for (aead, version) in [(Aead::XChaCha20Poly1305, 2), (Aead::Aes256Gcm, 3)] {
            let e = Config {
                encryption: Some(aead),
                ..c.clone()
            };
            assert_eq!(e.encode().len(), CONFIG_LEN);
            assert_eq!(Config::decode(&e.encode()).unwrap(), e);
            assert_eq!(e.encode()[8..16], [version, 0, 0, 0, 1, 0, 0, 0]);
        }
    }

    #[test]
    fn sealed_objects_and_packs() {
        let keys = Keys::derive(&crate::crypto::MasterKey::random(), Aead::preferred());
        let other = Keys::derive(&crate::crypto::MasterKey::random(), Aead::preferred());
        let plain = sample_manifest().encode();
        let sealed = seal_object(&keys, &MANIFEST_MAGIC, MANIFEST_VERSION_SEALED, &plain);
        assert_eq!(
            open_object(
                &keys,
                "m",
                &MANIFEST_MAGIC,
                MANIFEST_VERSION_SEALED,
                &sealed
            )
            .unwrap(),
            plain
        );
        // Another kind, another key, a flipped byte: all refused.
        assert!(open_object(&keys, "m", &INDEX_MAGIC, INDEX_VERSION_SEALED, &sealed).is_err());
        assert!(open_object(
            &other,
            "m",
            &MANIFEST_MAGIC,
            MANIFEST_VERSION_SEALED,
            &sealed
        )
        .is_err());
        let mut bad = sealed.clone();
        bad[100] ^= 1;
        assert!(matches!(
            open_object(&keys, "m", &MANIFEST_MAGIC, MANIFEST_VERSION_SEALED, &bad),
            Err(Error::Tampered { .. })
        ));
        assert!(!sealed.windows(3).any(|w| w == b"vm1"));

        let id = ChunkId::of(b"a");
        let mut pack = sealed_pack_header().to_vec();
        let n = seal_blob(&keys, &id, b"abcde", &mut pack);
        assert_eq!(
            open_blob(&keys, &id, pack[16..16 + n].to_vec()).unwrap(),
            b"abcde"
        );
        assert!(open_blob(&keys, &ChunkId::of(b"b"), pack[16..16 + n].to_vec()).is_none());
        let e = BlobEntry {
            id,
            offset: 16,
            stored_len: n as u32,
            raw_len: 9,
            compression: Compression::Zstd,
        };
        let start = pack.len();
        let len = write_sealed_pack_trailer(&mut pack, &[e, e], &keys);
        assert_eq!(len, pack.len() - start);
        assert_eq!(
            read_sealed_pack_trailer(&pack[start..], &keys).unwrap(),
            vec![e, e]
        );
        assert!(read_sealed_pack_trailer(&pack[start..], &other).is_err());
    }
}

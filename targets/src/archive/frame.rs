//! The wire format of archive frames, version 1. Byte tables match `docs/ARCHIVE.md`.
//!
//! A frame is a 64-byte header and a payload. The header carries the frame's type, payload
//! length, sequence number, logical position and the first 8 bytes of the archive id, a
//! BLAKE3 checksum of the payload and a BLAKE3 checksum of the header itself, so a reader can
//! trust the length before it reads the payload and find the next good frame after damage.

use chunker::le::{self, Reader, Writer};
use chunker::{ChunkId, Compression, Frame};

use super::{ArchiveHeader, ArchiveId, DiskInfo};

/// Format version of unencrypted archives (written byte for byte as by every release).
pub const ARCHIVE_VERSION: u32 = 1;
/// Format version of archives encrypted with XChaCha20-Poly1305.
pub const ARCHIVE_VERSION_ENCRYPTED: u32 = 2;
/// Format version of archives encrypted with AES-256-GCM, and the highest this build reads.
pub const ARCHIVE_VERSION_AES: u32 = 3;

/// The format version of an archive sealed with `aead` (`None`: in clear).
pub fn archive_version(aead: Option<chunker::crypto::Aead>) -> u32 {
    match aead {
        None => ARCHIVE_VERSION,
        Some(chunker::crypto::Aead::XChaCha20Poly1305) => ARCHIVE_VERSION_ENCRYPTED,
        Some(chunker::crypto::Aead::Aes256Gcm) => ARCHIVE_VERSION_AES,
    }
}

/// The cipher of an archive of format `version` (`None`: in clear).
pub fn archive_aead(version: u32) -> Option<chunker::crypto::Aead> {
    match version {
        ARCHIVE_VERSION_ENCRYPTED => Some(chunker::crypto::Aead::XChaCha20Poly1305),
        ARCHIVE_VERSION_AES => Some(chunker::crypto::Aead::Aes256Gcm),
        _ => None,
    }
}

// DO NOT MODIFY: the magic identifies archives written by every earlier release.
/// Magic at the start of every frame: BLAKE3("mover archive v1")[..8].
pub const ARCHIVE_MAGIC: [u8; 8] = [0xff, 0x56, 0xc3, 0xe8, 0x60, 0x6c, 0xe5, 0xfe];

/// Length of a frame header.
pub const FRAME_HEADER_LEN: usize = 64;
/// Largest payload a reader accepts: a chunk of the largest chunk size plus its prefix, with
/// room to spare. Bounds the memory a damaged length can make a reader allocate.
pub const MAX_PAYLOAD: usize = (16 << 20) + 4096;
/// Length of the prefix of a chunk payload (before the stored bytes).
pub const CHUNK_PREFIX_LEN: usize = 48;
/// Length of a volume payload.
pub const VOLUME_PAYLOAD_LEN: usize = 32;
/// Length of a whole volume frame.
pub const VOLUME_FRAME_LEN: usize = FRAME_HEADER_LEN + VOLUME_PAYLOAD_LEN;
/// Length of the prefix of a manifest or catalog part (total length, offset).
pub const PART_PREFIX_LEN: usize = 16;
/// Length of a trailer payload.
pub const TRAILER_PAYLOAD_LEN: usize = 72;

const _: () = assert!(CHUNK_PREFIX_LEN + chunker::MAX_CHUNK_SIZE as usize <= MAX_PAYLOAD);

/// Frame types. Types from 0x80 up are optional: a reader skips one it does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Starts every volume; outside the logical stream.
    Volume = 1,
    /// The archive header (first logical frame).
    Header = 2,
    /// One stored chunk.
    Chunk = 3,
    /// Opaque placement data from the caller.
    Map = 4,
    /// A part of the snapshot manifest.
    Manifest = 5,
    /// A part of the catalog (ids of the chunks in this archive).
    Catalog = 6,
    /// Totals and the archive hash (last logical frame).
    Trailer = 7,
    /// A copy of the header, written right after it (issue 14, item 11): an optional type, so
    /// readers that predate it skip it.
    HeaderCopy = 0x80,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Kind::Volume,
            2 => Kind::Header,
            3 => Kind::Chunk,
            4 => Kind::Map,
            5 => Kind::Manifest,
            6 => Kind::Catalog,
            7 => Kind::Trailer,
            0x80 => Kind::HeaderCopy,
            _ => return None,
        })
    }
}

/// A decoded frame header.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | [`ARCHIVE_MAGIC`] |
/// | 8 | 1 | frame type |
/// | 9 | 3 | reserved, 0 |
/// | 12 | 4 | payload length |
/// | 16 | 8 | sequence number (volume frame: of the next logical frame) |
/// | 24 | 8 | logical position (volume frame: of the next logical frame) |
/// | 32 | 8 | archive tag: the first 8 bytes of the archive id |
/// | 40 | 16 | BLAKE3(payload)[..16] |
/// | 56 | 8 | BLAKE3(bytes 0..56)[..8] |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub len: u32,
    pub seq: u64,
    pub pos: u64,
    pub tag: [u8; 8],
    pub sum: [u8; 16],
}

impl Header {
    /// A header for a payload made of `parts`, concatenated.
    pub fn new(kind: Kind, seq: u64, pos: u64, tag: [u8; 8], parts: &[&[u8]]) -> Self {
        let mut h = blake3::Hasher::new();
        let mut len = 0;
        for p in parts {
            h.update(p);
            len += p.len();
        }
        Header {
            kind: kind as u8,
            len: u32::try_from(len).expect("payloads are bounded by MAX_PAYLOAD"),
            seq,
            pos,
            tag,
            sum: h.finalize().as_bytes()[..16].try_into().expect("16 bytes"),
        }
    }

    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[..8].copy_from_slice(&ARCHIVE_MAGIC);
        b[8] = self.kind;
        le::put_at(&mut b, 12, self.len);
        le::put_at(&mut b, 16, self.seq);
        le::put_at(&mut b, 24, self.pos);
        b[32..40].copy_from_slice(&self.tag);
        b[40..56].copy_from_slice(&self.sum);
        let check = blake3::hash(&b[..56]);
        b[56..].copy_from_slice(&check.as_bytes()[..8]);
        b
    }

    /// Decodes a header; `None` unless the magic and header checksum match and the length is
    /// within [`MAX_PAYLOAD`].
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; FRAME_HEADER_LEN] = b.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
        if b[..8] != ARCHIVE_MAGIC || blake3::hash(&b[..56]).as_bytes()[..8] != b[56..] {
            return None;
        }
        let len = le::u32_at(b, 12);
        if len as usize > MAX_PAYLOAD {
            return None;
        }
        Some(Header {
            kind: b[8],
            len,
            seq: le::u64_at(b, 16),
            pos: le::u64_at(b, 24),
            tag: b[32..40].try_into().expect("8 bytes"),
            sum: b[40..56].try_into().expect("16 bytes"),
        })
    }

    /// Whether `payload` matches the checksum in this header.
    pub fn payload_matches(&self, payload: &[u8]) -> bool {
        payload.len() == self.len as usize && blake3::hash(payload).as_bytes()[..16] == self.sum
    }
}

// ---------------------------------------------------------------------------------------------
// Payloads are written and read with chunker's little-endian codec. A payload passed its
// checksum, so a failure to read one means a writer bug, never damage on the medium.

/// What a payload decodes to, or why it does not.
type Parsed<T> = chunker::Result<T>;

/// A reader of a payload.
fn payload(buf: &[u8]) -> Reader<'_> {
    Reader::new("archive payload", buf)
}

/// Refuses a structure of a newer format version.
fn check_version(v: u32) -> Result<(), chunker::Error> {
    if v == 0 || v > ARCHIVE_VERSION_AES {
        return Err(chunker::Error::UnsupportedVersion {
            what: "archive",
            found: v,
            supported: ARCHIVE_VERSION_AES,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Payloads.

/// Volume payload (32 bytes): format version u32 | volume number u32 | block size u32 |
/// reserved u32 | archive id 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumePayload {
    pub version: u32,
    pub number: u32,
    pub block_size: u32,
    /// [`VOLUME_HEADER_COPY`]; 0 in archives written before it existed.
    pub flags: u32,
    pub id: ArchiveId,
}

/// Volume flag: the archive's header frame is followed by a copy of it (frame type 0x80).
pub const VOLUME_HEADER_COPY: u32 = 1;

impl VolumePayload {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Writer::with_capacity(VOLUME_PAYLOAD_LEN);
        o.u32(self.version);
        o.u32(self.number);
        o.u32(self.block_size);
        o.u32(self.flags);
        o.bytes(&self.id.0);
        o.into_vec()
    }
    pub fn decode(buf: &[u8]) -> Parsed<Self> {
        let mut r = payload(buf);
        let v = VolumePayload {
            version: r.u32()?,
            number: r.u32()?,
            block_size: r.u32()?,
            flags: r.u32()?,
            id: ArchiveId(r.array()?),
        };
        r.end()?;
        Ok(v)
    }
    pub fn check_version(&self) -> Result<(), chunker::Error> {
        check_version(self.version)
    }
}

/// Encodes the archive header payload; `None` when a string is longer than 65535 bytes.
pub fn encode_header(h: &ArchiveHeader, block_size: u32) -> Option<Vec<u8>> {
    let mut o = Writer::with_capacity(256);
    o.u32(ARCHIVE_VERSION);
    o.u32(block_size);
    o.bytes(&h.id.0);
    o.u64(h.created_ms as u64);
    o.u32(h.chunk_size);
    o.u32(0);
    o.str16(&h.tool_version)?;
    o.u32(u32::try_from(h.disks.len()).ok()?);
    for d in &h.disks {
        o.u64(d.size);
        o.str16(&d.name)?;
    }
    o.u32(u32::try_from(h.parents.len()).ok()?);
    for p in &h.parents {
        o.bytes(&p.0);
    }
    o.u32(u32::try_from(h.labels.len()).ok()?);
    for (k, v) in &h.labels {
        o.str16(k)?;
        o.str16(v)?;
    }
    Some(o.into_vec())
}

/// Decodes the archive header payload: the header, its format version and block size.
pub fn decode_header(buf: &[u8]) -> Parsed<(ArchiveHeader, u32, u32)> {
    let mut r = payload(buf);
    let version = r.u32()?;
    let block_size = r.u32()?;
    let id = ArchiveId(r.array()?);
    let created_ms = r.u64()? as i64;
    let chunk_size = r.u32()?;
    r.u32()?;
    let tool_version = r.str16()?;
    let mut disks = Vec::new();
    for _ in 0..r.count(10)? {
        let size = r.u64()?;
        disks.push(DiskInfo {
            name: r.str16()?,
            size,
        });
    }
    let mut parents = Vec::new();
    for _ in 0..r.count(16)? {
        parents.push(ArchiveId(r.array()?));
    }
    let mut labels = Vec::new();
    for _ in 0..r.count(4)? {
        labels.push((r.str16()?, r.str16()?));
    }
    r.end()?;
    let header = ArchiveHeader {
        id,
        tool_version,
        created_ms,
        chunk_size,
        disks,
        parents,
        labels,
    };
    Ok((header, version, block_size))
}

/// The version check of a decoded header.
pub fn check_header_version(version: u32) -> Result<(), chunker::Error> {
    check_version(version)
}

/// The associated data of a sealed frame payload: [`ARCHIVE_MAGIC`], archive id, frame type
/// and sequence number, so a sealed payload moved to another place or archive fails to open.
pub fn frame_aad(id: &ArchiveId, kind: u8, seq: u64) -> [u8; 33] {
    let mut a = [0u8; 33];
    a[..8].copy_from_slice(&ARCHIVE_MAGIC);
    a[8..24].copy_from_slice(&id.0);
    a[24] = kind;
    le::put_at(&mut a, 25, seq);
    a
}

/// Length of the clear prefix of an encrypted archive's header payload.
pub const SEALED_HEADER_PREFIX_LEN: usize = 24 + chunker::crypto::KEY_FILE_LEN;

/// Encodes the header payload of an encrypted archive (version 2 or 3, by its cipher): version
/// u32 | block size u32 | archive id 16 | key object 176 | the version 1 header payload, sealed.
pub fn encode_sealed_header(
    h: &ArchiveHeader,
    block_size: u32,
    key: &super::ArchiveKey,
    kind: Kind,
    seq: u64,
) -> Option<Vec<u8>> {
    let plain = encode_header(h, block_size)?;
    let mut o = Writer::with_capacity(SEALED_HEADER_PREFIX_LEN + plain.len() + 40);
    o.u32(archive_version(Some(key.keys.aead())));
    o.u32(block_size);
    o.bytes(&h.id.0);
    o.bytes(&key.key_file.encode());
    key.keys
        .seal_into(&frame_aad(&h.id, kind as u8, seq), &plain, o.as_mut_vec());
    Some(o.into_vec())
}

/// The parts of an encrypted archive's header payload: archive id, cipher, key object, sealed
/// rest.
pub type SealedHeader<'a> = (ArchiveId, chunker::crypto::Aead, &'a [u8], &'a [u8]);

/// Splits the header payload of an encrypted archive: archive id, cipher, key object, sealed
/// rest; `None` for a version 1 header.
pub fn split_sealed_header(buf: &[u8]) -> Option<Parsed<SealedHeader<'_>>> {
    let mut r = payload(buf);
    let aead = archive_aead(r.u32().ok()?)?;
    Some((|| {
        r.u32()?;
        let id = ArchiveId(r.array()?);
        let key = r.take(chunker::crypto::KEY_FILE_LEN)?;
        Ok((id, aead, key, r.rest()))
    })())
}

/// Chunk payload prefix (48 bytes): chunk id 32 | plaintext length u32 | stored length u32 |
/// compression u8 | reserved 7. The stored bytes follow.
pub fn chunk_prefix(id: &ChunkId, frame: &Frame) -> [u8; CHUNK_PREFIX_LEN] {
    let mut b = [0u8; CHUNK_PREFIX_LEN];
    b[..32].copy_from_slice(id.as_bytes());
    le::put_at(&mut b, 32, frame.raw_len);
    let stored = u32::try_from(frame.bytes.len()).expect("frames are bounded by MAX_PAYLOAD");
    le::put_at(&mut b, 36, stored);
    b[40] = frame.compression as u8;
    b
}

/// Splits a chunk payload into its id and frame.
pub fn decode_chunk(buf: &[u8]) -> Parsed<(ChunkId, Frame)> {
    let mut r = payload(buf);
    let id = ChunkId::from_bytes(r.array()?);
    let raw_len = r.u32()?;
    let stored = r.u32()? as usize;
    let compression =
        Compression::from_u8(r.take(8)?[0]).ok_or_else(|| r.error("unknown compression"))?;
    if stored != r.remaining() {
        return Err(r.error("stored length does not match the payload"));
    }
    let frame = Frame {
        compression,
        raw_len,
        bytes: r.rest().to_vec(),
    };
    Ok((id, frame))
}

/// Part prefix (16 bytes): total length u64 | offset of this part u64. The bytes follow.
pub fn part_prefix(total: u64, offset: u64) -> [u8; PART_PREFIX_LEN] {
    let mut b = [0u8; PART_PREFIX_LEN];
    le::put_at(&mut b, 0, total);
    le::put_at(&mut b, 8, offset);
    b
}

/// Splits a part payload into total length, offset and bytes.
pub fn decode_part(buf: &[u8]) -> Parsed<(u64, u64, &[u8])> {
    let mut r = payload(buf);
    Ok((r.u64()?, r.u64()?, r.rest()))
}

/// Trailer payload (72 bytes): flags u32 (bit 0: incomplete) | reserved u32 |
/// frames before the trailer u64 | chunk frames u64 | chunk plaintext bytes u64 | chunk stored
/// bytes u64 | archive hash 32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrailerPayload {
    pub incomplete: bool,
    pub frames: u64,
    pub chunks: u64,
    pub chunk_bytes: u64,
    pub stored_bytes: u64,
    pub hash: [u8; 32],
}

impl TrailerPayload {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Writer::with_capacity(TRAILER_PAYLOAD_LEN);
        o.u32(u32::from(self.incomplete));
        o.u32(0);
        o.u64(self.frames);
        o.u64(self.chunks);
        o.u64(self.chunk_bytes);
        o.u64(self.stored_bytes);
        o.bytes(&self.hash);
        o.into_vec()
    }
    pub fn decode(buf: &[u8]) -> Parsed<Self> {
        let mut r = payload(buf);
        let t = TrailerPayload {
            incomplete: r.u32()? & 1 != 0,
            frames: {
                r.u32()?;
                r.u64()?
            },
            chunks: r.u64()?,
            chunk_bytes: r.u64()?,
            stored_bytes: r.u64()?,
            hash: r.array()?,
        };
        r.end()?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_is_blake3_of_its_name() {
        assert_eq!(
            blake3::hash(b"mover archive v1").as_bytes()[..8],
            ARCHIVE_MAGIC
        );
    }

    #[test]
    fn header_round_trip_and_damage() {
        let h = Header::new(Kind::Chunk, 7, 1234, [9; 8], &[b"ab", b"cd"]);
        let b = h.encode();
        assert_eq!(Header::decode(&b), Some(h));
        assert!(h.payload_matches(b"abcd"));
        assert!(!h.payload_matches(b"abce"));
        for i in 0..FRAME_HEADER_LEN {
            let mut d = b;
            d[i] ^= 0x10;
            assert_eq!(Header::decode(&d), None, "flip at {i}");
        }
    }

    #[test]
    fn payload_round_trips() {
        let v = VolumePayload {
            version: 1,
            number: 3,
            block_size: 65536,
            flags: VOLUME_HEADER_COPY,
            id: ArchiveId([5; 16]),
        };
        assert_eq!(v.encode().len(), VOLUME_PAYLOAD_LEN);
        assert_eq!(VolumePayload::decode(&v.encode()).unwrap(), v);
        let t = TrailerPayload {
            incomplete: true,
            frames: 10,
            chunks: 8,
            chunk_bytes: 100,
            stored_bytes: 90,
            hash: [3; 32],
        };
        assert_eq!(t.encode().len(), TRAILER_PAYLOAD_LEN);
        assert_eq!(TrailerPayload::decode(&t.encode()).unwrap(), t);
        let h = ArchiveHeader {
            id: ArchiveId([1; 16]),
            tool_version: "mover 0.1.0".into(),
            created_ms: 42,
            chunk_size: 1 << 20,
            disks: vec![DiskInfo {
                name: "vda".into(),
                size: 1 << 30,
            }],
            parents: vec![ArchiveId([2; 16])],
            labels: vec![("host".into(), "h1".into())],
        };
        let enc = encode_header(&h, 65536).unwrap();
        assert_eq!(decode_header(&enc).unwrap(), (h.clone(), 1, 65536));
        let pw = chunker::crypto::Password::new(b"pw".to_vec());
        let params = chunker::crypto::KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        for (aead, version) in [
            (chunker::crypto::Aead::XChaCha20Poly1305, 2),
            (chunker::crypto::Aead::Aes256Gcm, 3),
        ] {
            let key = super::super::ArchiveKey::new(&pw, params, aead).unwrap();
            let sealed = encode_sealed_header(&h, 65536, &key, Kind::Header, 0).unwrap();
            assert_eq!(sealed[..4], [version, 0, 0, 0]);
            let (id, got, kf, rest) = split_sealed_header(&sealed).unwrap().unwrap();
            assert_eq!(
                (id, got, kf.len()),
                (h.id, aead, chunker::crypto::KEY_FILE_LEN)
            );
            let plain = key
                .keys
                .open(&frame_aad(&h.id, Kind::Header as u8, 0), rest)
                .unwrap();
            assert_eq!(plain, enc);
        }
        assert!(split_sealed_header(&enc).is_none());
        assert!(decode_header(&enc[..enc.len() - 1]).is_err());
    }
}

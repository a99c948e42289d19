//! Snapshot manifests.

use super::{open, ObjectId, MANIFEST_MAGIC};
use crate::le::{Reader, Writer};
use crate::{ChunkId, Error, Result};

/// Writes a string with its `u16` length, cut to 65535 bytes (as every release has).
fn put_str(o: &mut Writer, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    o.bytes16(b).expect("at most 65535 bytes");
}

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

fn put_stats(o: &mut Writer, s: &BackupStats) {
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

fn get_stats(r: &mut Reader) -> Result<BackupStats> {
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

fn get_chunking(r: &mut Reader) -> Result<Chunking> {
    let kind = r.u8()?;
    r.take(3)?;
    let size = r.u32()?;
    match kind {
        0 => Ok(Chunking::Fixed(size)),
        1 => Ok(Chunking::Cdc(size)),
        k => Err(Error::structure(r.what(), format!("unknown chunking {k}"))),
    }
}

fn get_entries(r: &mut Reader, count: u64, source_len: u64) -> Result<Vec<Entry>> {
    let remaining = r.remaining() as u64;
    if count
        .checked_mul(ENTRY_SIZE as u64)
        .is_none_or(|n| n > remaining)
    {
        return Err(Error::structure(
            r.what(),
            "entry count does not match the length",
        ));
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut total = 0u64;
    for _ in 0..count {
        let kind = r.u8()?;
        let len = r.u32()?;
        let id: [u8; 32] = r.array()?;
        let id = match kind {
            0 => None,
            1 => Some(ChunkId::from_bytes(id)),
            k => {
                return Err(Error::structure(
                    r.what(),
                    format!("unknown entry kind {k}"),
                ))
            }
        };
        total += u64::from(len);
        entries.push(Entry { len, id });
    }
    if total != source_len {
        return Err(Error::structure(
            r.what(),
            "entry lengths do not add up to the source length",
        ));
    }
    Ok(entries)
}

impl Manifest {
    /// Encodes the manifest (version 2); its snapshot id is `ObjectId::of` the result.
    pub fn encode(&self) -> Vec<u8> {
        let entries: usize = self.disks.iter().map(|d| d.entries.len()).sum();
        let mut o = Writer::with_capacity(256 + ENTRY_SIZE * entries);
        o.bytes(&MANIFEST_MAGIC);
        o.u32(MANIFEST_VERSION);
        o.u32(0);
        o.u64(self.created_ms as u64);
        o.bytes(&self.nonce);
        o.bytes(&self.parent.map_or([0; 32], |p| p.0));
        put_stats(&mut o, &self.stats);
        o.u32(self.disks.len() as u32);
        o.u32(self.attachments.len() as u32);
        put_str(&mut o, &self.name);
        for d in &self.disks {
            put_str(&mut o, &d.name);
            put_str(&mut o, &d.source);
            put_str(&mut o, &d.change_token);
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
            put_str(&mut o, &a.name);
            o.u32(a.data.len() as u32);
            o.bytes(&a.data);
        }
        o.into_checksummed()
    }

    /// Decodes and checks a manifest of version 1 or 2.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        const W: &str = "snapshot manifest";
        let (mut r, version) = open(W, buf, &MANIFEST_MAGIC, true, MANIFEST_VERSION)?;
        if version == 1 {
            return Self::decode_v1(r);
        }
        r.u32()?;
        let created_ms = r.u64()? as i64;
        let nonce = r.array()?;
        let parent: [u8; 32] = r.array()?;
        let stats = get_stats(&mut r)?;
        let disk_count = r.u32()?;
        let attachment_count = r.u32()?;
        let name = r.str16()?;
        if disk_count == 0 {
            return Err(Error::structure(W, "no disks"));
        }
        let mut disks = Vec::new();
        for _ in 0..disk_count {
            let name = r.str16()?;
            let source = r.str16()?;
            let change_token = r.str16()?;
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
            let name = r.str16()?;
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
    fn decode_v1(mut r: Reader) -> Result<Self> {
        let chunking = get_chunking(&mut r)?;
        r.u32()?;
        let source_len = r.u64()?;
        let created_ms = r.u64()? as i64;
        let nonce = r.array()?;
        let parent: [u8; 32] = r.array()?;
        let stats = get_stats(&mut r)?;
        let count = r.u64()?;
        let name = r.str16()?;
        let source = r.str16()?;
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

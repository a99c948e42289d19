//! The file catalog of a snapshot (`catalogs/<snapshot id>`): every path of the file systems
//! mover reads in the snapshot's disks, with size, modification time and inode, so that
//! `mover find` answers without reading the disks. See docs/FORMAT.md, "File catalog".
//!
//! Paths are sorted by their bytes and each stores only what differs from the one before
//! (the length of the shared prefix, then the rest); numbers are LEB128 varints; the whole
//! body is one zstd frame.

use super::{open, ObjectId};
use crate::le::{Reader, Writer};
use crate::{Error, Result};

// DO NOT MODIFY: the magic identifies catalogs written by every earlier release.
/// Magic of a file catalog: BLAKE3("mover catalog v1")[..8].
pub const CATALOG_MAGIC: [u8; 8] = [0xf7, 0x43, 0xce, 0xa6, 0xa9, 0xe5, 0x1c, 0x26];
/// Catalog version written by this build, and the highest it reads.
pub const CATALOG_VERSION: u32 = 1;
/// Largest body a reader accepts (uncompressed), bytes.
pub const MAX_CATALOG_BODY: u64 = 1 << 30;
const WHAT: &str = "file catalog";
/// Flag: the body ends with the chunks the catalog was read from ([`CatalogReads`]).
const FLAG_READS: u32 = 1;

/// The chunks a catalog was built from: for each disk of the snapshot in order, the indices
/// of its chunks that listing the file systems read, ascending (zero chunks included). A later
/// snapshot whose disks hold the same chunks at all those indices has the same catalog.
pub type CatalogReads = Vec<Vec<u32>>;
const HEAD_LEN: usize = 64;

/// What a catalog entry is (the byte stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CatalogKind {
    /// A directory.
    Dir = 0,
    /// A regular file.
    File = 1,
    /// A symbolic link.
    Symlink = 2,
    /// A device node, FIFO or socket.
    Other = 3,
    /// A disk of a multi-disk snapshot.
    Disk = 4,
    /// A partition.
    Partition = 5,
}

impl CatalogKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => CatalogKind::Dir,
            1 => CatalogKind::File,
            2 => CatalogKind::Symlink,
            3 => CatalogKind::Other,
            4 => CatalogKind::Disk,
            5 => CatalogKind::Partition,
            _ => return None,
        })
    }
}

/// One path of a catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The path in the snapshot, as `mover ls` names it (no leading slash).
    pub path: String,
    /// What it is.
    pub kind: CatalogKind,
    /// Bytes of data.
    pub size: u64,
    /// Last modification: seconds since the Unix epoch and nanoseconds.
    pub mtime: (i64, u32),
    /// Permission bits (`0o7777` at most; 0 where the file system has none).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The inode (or file record) number; 0 where the reader does not know it.
    pub inode: u64,
}

fn put_varint(o: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        o.push((v as u8) | 0x80);
        v >>= 7;
    }
    o.push(v as u8);
}

fn get_varint(r: &mut Reader) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = r.u8()?;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(r.error("a varint is longer than 10 bytes"))
}

/// Encodes the catalog of snapshot `snapshot`; sorts `entries` by path and drops repeated
/// paths first.
pub fn encode_catalog(snapshot: &ObjectId, entries: &mut Vec<CatalogEntry>, level: i32) -> Vec<u8> {
    encode_catalog_with(snapshot, entries, None, level)
}

/// Like [`encode_catalog`], recording the chunks the catalog was read from.
pub fn encode_catalog_with(
    snapshot: &ObjectId,
    entries: &mut Vec<CatalogEntry>,
    reads: Option<&CatalogReads>,
    level: i32,
) -> Vec<u8> {
    entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    entries.dedup_by(|a, b| a.path == b.path);
    let mut body = Vec::with_capacity(entries.len() * 24);
    let mut prev: &[u8] = &[];
    for e in entries.iter() {
        let p = e.path.as_bytes();
        let shared = prev.iter().zip(p).take_while(|(a, b)| a == b).count();
        put_varint(&mut body, shared as u64);
        put_varint(&mut body, (p.len() - shared) as u64);
        body.extend_from_slice(&p[shared..]);
        body.push(e.kind as u8);
        put_varint(&mut body, e.size);
        put_varint(&mut body, ((e.mtime.0 << 1) ^ (e.mtime.0 >> 63)) as u64);
        put_varint(&mut body, u64::from(e.mtime.1));
        put_varint(&mut body, u64::from(e.mode));
        put_varint(&mut body, u64::from(e.uid));
        put_varint(&mut body, u64::from(e.gid));
        put_varint(&mut body, e.inode);
        prev = p;
    }
    if let Some(reads) = reads {
        put_varint(&mut body, reads.len() as u64);
        for disk in reads {
            // Runs of consecutive indices: (gap from the end of the previous run, length).
            let mut runs: Vec<(u32, u32)> = Vec::new();
            for &i in disk {
                match runs.last_mut() {
                    Some((s, n)) if *s + *n == i => *n += 1,
                    _ => runs.push((i, 1)),
                }
            }
            put_varint(&mut body, runs.len() as u64);
            let mut end = 0;
            for (s, n) in runs {
                put_varint(&mut body, u64::from(s - end));
                put_varint(&mut body, u64::from(n));
                end = s + n;
            }
        }
    }
    let frame = zstd::bulk::compress(&body, level).expect("zstd compresses into a Vec");
    let mut w = Writer::with_capacity(HEAD_LEN + frame.len() + 32);
    w.bytes(&CATALOG_MAGIC);
    w.u32(CATALOG_VERSION);
    w.u32(if reads.is_some() { FLAG_READS } else { 0 });
    w.bytes(&snapshot.0);
    w.u64(entries.len() as u64);
    w.u64(body.len() as u64);
    w.bytes(&frame);
    w.into_checksummed()
}

/// Decodes a catalog, checking that it belongs to snapshot `snapshot`.
pub fn decode_catalog(buf: &[u8], snapshot: &ObjectId) -> Result<Vec<CatalogEntry>> {
    decode_catalog_with(buf, snapshot).map(|(entries, _)| entries)
}

/// Like [`decode_catalog`], with the chunks the catalog was read from when it records them.
pub fn decode_catalog_with(
    buf: &[u8],
    snapshot: &ObjectId,
) -> Result<(Vec<CatalogEntry>, Option<CatalogReads>)> {
    let (flags, count, body) = open_body(buf, snapshot)?;
    let mut r = Reader::new(WHAT, &body);
    let mut out = Vec::with_capacity(count as usize);
    each_entry(&mut r, count, |path, e| {
        out.push(CatalogEntry {
            path: path.to_string(),
            ..e
        });
        true
    })?;
    let reads = if flags & FLAG_READS != 0 {
        Some(decode_reads(&mut r)?)
    } else {
        None
    };
    r.end()?;
    Ok((out, reads))
}

/// The inode numbers the catalog of `snapshot` records for `paths` (0 for a path it does not
/// hold), without building its entries: a command that opens a few paths reads the catalog in
/// a few milliseconds however many paths it holds. The scan stops past the last path asked
/// for (paths are sorted). A catalog whose body is larger than `max_body` bytes is not read
/// (`None`): walking the file system is then cheaper than decompressing it.
pub fn catalog_inodes(
    buf: &[u8],
    snapshot: &ObjectId,
    paths: &[&str],
    max_body: u64,
) -> Result<Option<Vec<u64>>> {
    let (_, count, body_len, frame) = open_head(buf, snapshot)?;
    if body_len > max_body {
        return Ok(None);
    }
    let body = decompress(frame, body_len)?;
    let mut found = vec![0; paths.len()];
    let last = paths.iter().max().map_or(&[][..], |p| p.as_bytes());
    let mut r = Reader::new(WHAT, &body);
    each_entry(&mut r, count, |path, e| {
        if let Some(i) = paths.iter().position(|p| *p == path) {
            found[i] = e.inode;
        }
        path.as_bytes() < last
    })?;
    Ok(Some(found))
}

/// The catalog's flags, entry count, body length and compressed body, its header checked.
fn open_head<'a>(buf: &'a [u8], snapshot: &ObjectId) -> Result<(u32, u64, u64, &'a [u8])> {
    let (mut r, _) = open(WHAT, buf, &CATALOG_MAGIC, true, CATALOG_VERSION)?;
    let flags = r.u32()?;
    if flags & !FLAG_READS != 0 {
        return Err(Error::structure(WHAT, format!("unknown flags {flags:#x}")));
    }
    if r.array::<32>()? != snapshot.0 {
        return Err(Error::structure(WHAT, "it belongs to another snapshot"));
    }
    let count = r.u64()?;
    let body_len = r.u64()?;
    if body_len > MAX_CATALOG_BODY || count > body_len / 9 + 1 {
        return Err(Error::structure(WHAT, "its lengths are out of range"));
    }
    Ok((flags, count, body_len, r.rest()))
}

fn decompress(frame: &[u8], body_len: u64) -> Result<Vec<u8>> {
    let body = zstd::bulk::decompress(frame, body_len as usize)
        .map_err(|e| Error::structure(WHAT, format!("its body does not decompress: {e}")))?;
    if body.len() as u64 != body_len {
        return Err(Error::structure(WHAT, "its body has the wrong length"));
    }
    Ok(body)
}

/// The catalog's flags, entry count and decompressed body.
fn open_body(buf: &[u8], snapshot: &ObjectId) -> Result<(u32, u64, Vec<u8>)> {
    let (flags, count, body_len, frame) = open_head(buf, snapshot)?;
    Ok((flags, count, decompress(frame, body_len)?))
}

/// Reads the `count` entries of a body, checking each, and hands each to `f` with its path
/// (the entry's own `path` left empty); stops early when `f` returns false.
fn each_entry(
    r: &mut Reader<'_>,
    count: u64,
    mut f: impl FnMut(&str, CatalogEntry) -> bool,
) -> Result<()> {
    let mut prev: Vec<u8> = Vec::new();
    for k in 0..count {
        let shared = get_varint(r)? as usize;
        let rest = get_varint(r)? as usize;
        if shared > prev.len() {
            return Err(r.error("a path shares more than the previous path holds"));
        }
        let tail = r.take(rest)?;
        // Sorted: past the shared prefix, the new path's bytes come after the old one's.
        if k > 0 && tail <= &prev[shared..] {
            return Err(r.error("paths are not sorted"));
        }
        prev.truncate(shared);
        prev.extend_from_slice(tail);
        let path = std::str::from_utf8(&prev).map_err(|_| r.error("a path is not UTF-8"))?;
        let kind = CatalogKind::from_u8(r.u8()?).ok_or_else(|| r.error("unknown entry kind"))?;
        let size = get_varint(r)?;
        let z = get_varint(r)?;
        let secs = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let nanos = u32::try_from(get_varint(r)?)
            .ok()
            .filter(|n| *n < 1_000_000_000)
            .ok_or_else(|| r.error("nanoseconds out of range"))?;
        let mut small = || {
            let v = get_varint(r)?;
            u32::try_from(v).map_err(|_| r.error("mode, uid or gid out of range"))
        };
        let (mode, uid, gid) = (small()?, small()?, small()?);
        let inode = get_varint(r)?;
        let entry = CatalogEntry {
            path: String::new(),
            kind,
            size,
            mtime: (secs, nanos),
            mode,
            uid,
            gid,
            inode,
        };
        if !f(path, entry) {
            return Ok(());
        }
    }
    Ok(())
}

fn decode_reads(r: &mut Reader<'_>) -> Result<CatalogReads> {
    let disks = get_varint(r)?;
    if disks > r.remaining() as u64 {
        return Err(r.error("too many disks in its chunk list"));
    }
    let mut reads = Vec::with_capacity(disks as usize);
    for _ in 0..disks {
        let runs = get_varint(r)?;
        if runs > r.remaining() as u64 {
            return Err(r.error("too many runs in its chunk list"));
        }
        let mut disk = Vec::new();
        let mut end = 0u64;
        for _ in 0..runs {
            let start = end + get_varint(r)?;
            let n = get_varint(r)?;
            end = start + n;
            if n == 0 || end > u64::from(u32::MAX) || (disk.len() as u64 + n) > MAX_CATALOG_BODY {
                return Err(r.error("a run of its chunk list is out of range"));
            }
            disk.extend(start as u32..end as u32);
        }
        reads.push(disk);
    }
    Ok(reads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_is_a_blake3_prefix() {
        assert_eq!(
            blake3::hash(b"mover catalog v1").as_bytes()[..8],
            CATALOG_MAGIC
        );
    }

    #[test]
    fn round_trip_sorts_and_checks() {
        let e = |p: &str, kind, size, t: i64| CatalogEntry {
            path: p.into(),
            kind,
            size,
            mtime: (t, 5),
            mode: 0o644,
            uid: 1000,
            gid: 0,
            inode: 0,
        };
        let mut entries = vec![
            e("etc/fstab", CatalogKind::File, 120, 1_700_000_000),
            e("etc", CatalogKind::Dir, 4096, -3),
            e("etc/fstab", CatalogKind::File, 120, 1_700_000_000),
            e("etc/fs", CatalogKind::Symlink, 5, 0),
            e("p1", CatalogKind::Partition, 1 << 40, 0),
        ];
        let id = ObjectId([7; 32]);
        let bytes = encode_catalog(&id, &mut entries, 3);
        assert_eq!(entries.len(), 4);
        assert_eq!(decode_catalog(&bytes, &id).unwrap(), entries);
        assert!(decode_catalog(&bytes, &ObjectId([8; 32])).is_err());
        let mut bad = bytes.clone();
        bad[HEAD_LEN] ^= 1;
        assert!(decode_catalog(&bad, &id).is_err());
        assert_eq!(decode_catalog_with(&bytes, &id).unwrap().1, None);

        // With the chunks it was read from: runs, gaps, an empty disk.
        let reads: CatalogReads = vec![vec![0, 1, 2, 7, 9, 10, 4000], vec![], vec![5]];
        let with = encode_catalog_with(&id, &mut entries, Some(&reads), 3);
        let (back, got) = decode_catalog_with(&with, &id).unwrap();
        assert_eq!((back, got), (entries.clone(), Some(reads)));
        assert_eq!(decode_catalog(&with, &id).unwrap(), entries);
    }

    #[test]
    fn inodes_are_found_by_path_without_decoding_entries() {
        let mut entries: Vec<CatalogEntry> = ["a", "a/b", "a/b/c.txt", "a-b", "p1", "p1/etc"]
            .iter()
            .enumerate()
            .map(|(i, p)| CatalogEntry {
                path: (*p).into(),
                kind: CatalogKind::File,
                size: 1,
                mtime: (0, 0),
                mode: 0,
                uid: 0,
                gid: 0,
                inode: 10 + i as u64,
            })
            .collect();
        let id = ObjectId([3; 32]);
        let bytes = encode_catalog_with(&id, &mut entries, Some(&vec![vec![1]]), 3);
        let look = |paths: &[&str]| catalog_inodes(&bytes, &id, paths, 1 << 20).unwrap();
        // In any order, present or not; a path before others in sort order stops no lookup.
        assert_eq!(
            look(&["p1/etc", "a/b/c.txt", "a/b/c", "zzz", "a"]),
            Some(vec![15, 12, 0, 0, 10])
        );
        assert_eq!(look(&["a-b"]), Some(vec![13]));
        assert_eq!(look(&[]), Some(vec![]));
        // Too large to look into, or another snapshot's.
        assert_eq!(catalog_inodes(&bytes, &id, &["a"], 8).unwrap(), None);
        assert!(catalog_inodes(&bytes, &ObjectId([4; 32]), &["a"], 1 << 20).is_err());
    }
}

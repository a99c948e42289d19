//! The copy-on-write overlay of a writable export: a sparse file of the caller's holding the
//! blocks written since the snapshot, and its own allocation map. The repository is never
//! written.
//!
//! # Layout (integers little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic: the first 8 bytes of BLAKE3("mover overlay v1") (DO NOT MODIFY) |
//! | 8 | 4 | version (1) |
//! | 12 | 4 | block size ([`BLOCK`]) |
//! | 16 | 8 | disk length, bytes |
//! | 24 | 32 | id of the snapshot the overlay was made for |
//! | 56 | 2 | length of the disk's name, at most [`MAX_NAME`] |
//! | 58 | n | the disk's name (UTF-8) |
//! | 4096 | one byte a block | the map: 0 the snapshot's bytes, 1 written here, 2 zeros |
//! | data | disk length | the blocks, at their disk offsets; `data` is the first multiple of [`BLOCK`] past the map |
//!
//! # Durability
//!
//! A write goes to the data area first and marks its block in the map in memory; the map in
//! the file changes only in `flush`, after the data area is synced. So the map in the file
//! never names a block whose data is not on disk, and everything acknowledged before a
//! completed `FLUSH` (or written with `FUA`) survives a crash of the server. Each map byte
//! stands alone (a block's state is one byte), so a torn map write still leaves every block
//! in a state it had at one flush or the next. A partial write to a block still holding the
//! snapshot's bytes copies the block first, under a lock striped by block, so two partial
//! writes to one block cannot lose each other's bytes.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chunker::format::ObjectId;
use chunker::le;

use crate::reader::{Run, SnapshotReader};
use crate::{Error, Result};

/// Copy-on-write granularity (qcow2's default cluster size).
pub(super) const BLOCK: u64 = 64 << 10;
const VERSION: u32 = 1;
const MAP_OFFSET: u64 = 4096;
const MAP_PAGE: usize = 4096;
const MAX_NAME: usize = 2048;
const HEADER_FIXED: usize = 58;
const _: () = assert!(HEADER_FIXED + MAX_NAME <= MAP_OFFSET as usize);

const BASE: u8 = 0;
const DATA: u8 = 1;
const ZERO: u8 = 2;

/// Lock stripes for copy-on-write of partial blocks.
const STRIPES: usize = 64;

fn magic() -> [u8; 8] {
    let id = ObjectId::of(b"mover overlay v1");
    let mut m = [0; 8];
    m.copy_from_slice(&id.0[..8]);
    m
}

struct Map {
    states: Vec<u8>,
    /// Map pages changed since the last flush.
    dirty: BTreeSet<usize>,
}

pub(crate) struct Overlay {
    file: File,
    path: PathBuf,
    len: u64,
    data: u64,
    map: Mutex<Map>,
    stripes: Vec<Mutex<()>>,
    flushing: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Overlay {
    /// Opens the overlay at `path` made for this snapshot's disk, or creates it when the file
    /// is missing or empty. An overlay of another snapshot or disk is refused.
    pub(crate) fn open(path: &Path, snapshot: &ObjectId, disk: &str, len: u64) -> Result<Self> {
        let shown = path.display().to_string();
        let io_err = |e: io::Error| Error::destination(&shown, e);
        if disk.len() > MAX_NAME {
            return Err(Error::Usage(format!(
                "disk name of {} bytes is too long for an overlay",
                disk.len()
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        let blocks = len.div_ceil(BLOCK) as usize;
        let data = (MAP_OFFSET + blocks as u64).div_ceil(BLOCK) * BLOCK;
        let header = header(snapshot, disk, len);
        let size = file.metadata().map_err(io_err)?.len();
        let states = if size == 0 {
            file.write_all_at(&header, 0).map_err(io_err)?;
            file.set_len(data + len).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                targets::fsync_dir(dir).map_err(io_err)?;
            }
            vec![BASE; blocks]
        } else {
            let mut found = vec![0; header.len()];
            let read = file.read_exact_at(&mut found, 0);
            if read.is_err() || found[..8] != magic() {
                return Err(Error::Usage(format!(
                    "{shown} is not a mover overlay; give a new or empty file to --overlay"
                )));
            }
            if found != header {
                return Err(Error::Usage(format!(
                    "overlay {shown} was made for another snapshot or disk ({}); serve that \
                     snapshot with it, or give a new --overlay file",
                    describe(&found)
                )));
            }
            let mut states = vec![0; blocks];
            file.read_exact_at(&mut states, MAP_OFFSET)
                .map_err(io_err)?;
            if states.iter().any(|&s| s > ZERO) {
                return Err(Error::Refused(format!(
                    "overlay {shown} is damaged (bad map); give a new --overlay file"
                )));
            }
            states
        };
        Ok(Overlay {
            file,
            path: path.to_path_buf(),
            len,
            data,
            map: Mutex::new(Map {
                states,
                dirty: BTreeSet::new(),
            }),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            flushing: Mutex::new(()),
        })
    }

    fn io(&self, e: io::Error) -> Error {
        Error::destination(&self.path.display().to_string(), e)
    }

    fn block_len(&self, b: usize) -> u64 {
        BLOCK.min(self.len - b as u64 * BLOCK)
    }

    /// The states of blocks `first..=last`.
    fn states(&self, first: usize, last: usize) -> Vec<u8> {
        lock(&self.map).states[first..=last].to_vec()
    }

    fn set(&self, b: usize, state: u8) {
        let mut map = lock(&self.map);
        if map.states[b] != state {
            map.states[b] = state;
            map.dirty.insert(b / MAP_PAGE);
        }
    }

    /// Runs of one state over `offset..offset + len`: (offset, len, state).
    fn runs(&self, offset: u64, len: u64) -> Vec<(u64, u64, u8)> {
        let mut out: Vec<(u64, u64, u8)> = Vec::new();
        if len == 0 {
            return out;
        }
        let end = offset + len;
        let (first, last) = ((offset / BLOCK) as usize, ((end - 1) / BLOCK) as usize);
        for (k, state) in self.states(first, last).into_iter().enumerate() {
            let bs = (first + k) as u64 * BLOCK;
            let (from, to) = (bs.max(offset), (bs + BLOCK).min(end));
            match out.last_mut() {
                Some(r) if r.2 == state => r.1 += to - from,
                _ => out.push((from, to - from, state)),
            }
        }
        out
    }

    /// Reads through the overlay: written blocks from the file, the rest from `base`.
    pub(crate) fn read(&self, base: &SnapshotReader, offset: u64, buf: &mut [u8]) -> Result<()> {
        for (off, n, state) in self.runs(offset, buf.len() as u64) {
            let at = (off - offset) as usize;
            let out = &mut buf[at..at + n as usize];
            match state {
                DATA => self
                    .file
                    .read_exact_at(out, self.data + off)
                    .map_err(|e| self.io(e))?,
                ZERO => out.fill(0),
                _ => base.read_at(off, out)?,
            }
        }
        Ok(())
    }

    /// Allocation through the overlay: written blocks are data, zeroed ones zeros, the rest
    /// as the snapshot has them.
    pub(crate) fn allocation(&self, base: &SnapshotReader, offset: u64, len: u64) -> Vec<Run> {
        let mut out: Vec<Run> = Vec::new();
        for (off, n, state) in self.runs(offset, len.min(self.len.saturating_sub(offset))) {
            let runs = match state {
                BASE => base.allocation(off, n),
                s => vec![Run {
                    offset: off,
                    len: n,
                    zero: s == ZERO,
                }],
            };
            for r in runs {
                match out.last_mut() {
                    Some(l) if l.zero == r.zero => l.len += r.len,
                    _ => out.push(r),
                }
            }
        }
        out
    }

    /// Writes `data` at `offset`, copying partially written blocks from below first.
    pub(crate) fn write(&self, base: &SnapshotReader, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset + data.len() as u64;
        let mut at = offset;
        while at < end {
            let b = (at / BLOCK) as usize;
            let bs = b as u64 * BLOCK;
            let to = (bs + BLOCK).min(end);
            let piece = &data[(at - offset) as usize..(to - offset) as usize];
            let _guard = lock(&self.stripes[b % STRIPES]);
            let state = self.states(b, b)[0];
            let whole = at == bs && to - bs == self.block_len(b);
            if state == DATA || whole {
                self.file
                    .write_all_at(piece, self.data + at)
                    .map_err(|e| self.io(e))?;
            } else {
                let mut block = vec![0u8; self.block_len(b) as usize];
                if state == BASE {
                    base.read_at(bs, &mut block)?;
                }
                let from = (at - bs) as usize;
                block[from..from + piece.len()].copy_from_slice(piece);
                self.file
                    .write_all_at(&block, self.data + bs)
                    .map_err(|e| self.io(e))?;
            }
            self.set(b, DATA);
            at = to;
        }
        Ok(())
    }

    /// Zeros `offset..offset + len`: whole blocks by marking them (and punching their data
    /// out when `punch`), partial blocks by writing zeros.
    pub(crate) fn zero(
        &self,
        base: &SnapshotReader,
        offset: u64,
        len: u64,
        punch: bool,
    ) -> Result<()> {
        let end = offset + len;
        let mut at = offset;
        while at < end {
            let b = (at / BLOCK) as usize;
            let bs = b as u64 * BLOCK;
            let to = (bs + BLOCK).min(end);
            if at == bs && to - bs == self.block_len(b) {
                let _guard = lock(&self.stripes[b % STRIPES]);
                self.set(b, ZERO);
                if punch {
                    // Best effort: the map already says zeros; the hole only saves space.
                    let _ = crate::sys::punch_hole(&self.file, self.data + bs, to - bs);
                }
            } else {
                self.write(base, at, &vec![0u8; (to - at) as usize])?;
            }
            at = to;
        }
        Ok(())
    }

    /// Makes every write acknowledged so far durable: the data first, then the map.
    pub(crate) fn flush(&self) -> Result<()> {
        let _one = lock(&self.flushing);
        let pages: Vec<(usize, Vec<u8>)> = {
            let mut map = lock(&self.map);
            let dirty = std::mem::take(&mut map.dirty);
            dirty
                .into_iter()
                .map(|p| {
                    let end = ((p + 1) * MAP_PAGE).min(map.states.len());
                    (p, map.states[p * MAP_PAGE..end].to_vec())
                })
                .collect()
        };
        self.file.sync_data().map_err(|e| self.io(e))?;
        if pages.is_empty() {
            return Ok(());
        }
        for (p, bytes) in &pages {
            self.file
                .write_all_at(bytes, MAP_OFFSET + (p * MAP_PAGE) as u64)
                .map_err(|e| self.io(e))?;
        }
        self.file.sync_data().map_err(|e| self.io(e))
    }
}

fn header(snapshot: &ObjectId, disk: &str, len: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_FIXED + disk.len());
    h.extend_from_slice(&magic());
    le::push(&mut h, VERSION);
    le::push(&mut h, BLOCK as u32);
    le::push(&mut h, len);
    h.extend_from_slice(&snapshot.0);
    le::push(&mut h, disk.len() as u16);
    h.extend_from_slice(disk.as_bytes());
    h
}

/// What an overlay's header says it was made for, for an error message.
fn describe(found: &[u8]) -> String {
    let id: String = found[24..56].iter().map(|b| format!("{b:02x}")).collect();
    format!("snapshot {}", &id[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_fixed() {
        let h = header(&ObjectId([7; 32]), "sda", 1 << 30);
        assert_eq!(h.len(), HEADER_FIXED + 3);
        assert_eq!(h[8..12], 1u32.to_le_bytes());
        assert_eq!(h[24..56], [7; 32]);
        assert_eq!(&h[58..], b"sda");
    }

    #[test]
    fn another_snapshot_or_disk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o");
        drop(Overlay::open(&p, &ObjectId([1; 32]), "sda", 1 << 20).unwrap());
        assert!(Overlay::open(&p, &ObjectId([1; 32]), "sda", 1 << 20).is_ok());
        for (id, disk) in [([2; 32], "sda"), ([1; 32], "sdb")] {
            let e = Overlay::open(&p, &ObjectId(id), disk, 1 << 20)
                .err()
                .unwrap();
            assert!(e.to_string().contains("made for another"), "{e}");
        }
        std::fs::write(dir.path().join("junk"), b"junk").unwrap();
        let e = Overlay::open(&dir.path().join("junk"), &ObjectId([1; 32]), "sda", 10);
        assert!(e.err().unwrap().to_string().contains("not a mover overlay"));
    }
}

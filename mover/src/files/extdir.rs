//! Directories of an ext2/3/4 file system listed by inode number, for the file catalog's walk.
//!
//! `ext4-view` lists a directory by path: every listing resolves the path again from the root
//! and re-checks the CRC32C of each directory block and inode it passes, which made the
//! catalog of a root disk cost a quarter of its backup. This reader goes down by inode number,
//! reads each directory block and inode once and checks no metadata checksum (the chunks
//! under it were verified against their ids). It handles extent trees and the block maps of
//! ext2/3, linear and hashed (htree) directories, and both directory entry layouts.
//!
//! It declines (`None` from [`ExtDirs::open`], an error from [`ExtDirs::list`]) whatever it
//! does not read the way `ext4-view` does, and the catalog then lists that directory by path
//! through `ext4-view`: a journal that needs replaying (the directories on the disk are not
//! the ones `ext4-view` shows), `meta_bg` group descriptors, inline-data and encrypted
//! directories, and anything inconsistent.

use std::sync::Mutex;

use chunker::le::{u16_at, u32_at};

use super::view::RangeReader;
use super::{FileEntry, FileKind};
use crate::{Error, Result};

/// The root directory's inode.
pub(crate) const ROOT: u64 = 2;

/// Incompatible features: directory entries carry a file type, the journal needs
/// recovery, group descriptors are in meta block groups, 64-bit block numbers.
const FILETYPE: u32 = 0x2;
const RECOVER: u32 = 0x4;
const META_BG: u32 = 0x10;
const BIT64: u32 = 0x80;
/// Inode flags: encrypted, extents, inline data.
const ENCRYPTED: u32 = 0x800;
const EXTENTS: u32 = 0x8_0000;
const INLINE_DATA: u32 = 0x1000_0000;
/// Most blocks a directory may have here (256 MiB of 4 KiB blocks): more is damage.
const MAX_DIR_BLOCKS: u64 = 1 << 16;

/// An ext2/3/4 file system's directories, read by inode number.
pub(crate) struct ExtDirs {
    r: Mutex<RangeReader>,
    block: u64,
    inodes_per_group: u64,
    inode_size: usize,
    filetype: bool,
    /// The first block of each group's inode table.
    tables: Vec<u64>,
}

fn damaged(what: String) -> Error {
    Error::Refused(format!("the ext file system is damaged: {what}"))
}

impl ExtDirs {
    /// The directory reader of the file system behind `r`, or `None` where it must be read
    /// through `ext4-view` (see the module's documentation).
    pub(crate) fn open(mut r: RangeReader) -> Option<Self> {
        let mut sb = [0u8; 0x100];
        r.read_exact_at(1024, &mut sb).ok()?;
        if u16_at(&sb, 0x38) != 0xEF53 {
            return None;
        }
        let incompat = u32_at(&sb, 0x60);
        if incompat & (RECOVER | META_BG) != 0 {
            return None;
        }
        let log = u32_at(&sb, 0x18);
        let block = 1024u64.checked_shl(log).filter(|&b| b <= 1 << 16)?;
        let inodes = u64::from(u32_at(&sb, 0x00));
        let inodes_per_group = u64::from(u32_at(&sb, 0x28));
        let inode_size = if u32_at(&sb, 0x4C) == 0 {
            128
        } else {
            usize::from(u16_at(&sb, 0x58))
        };
        let desc_size = if incompat & BIT64 != 0 {
            u64::from(u16_at(&sb, 0xFE)).max(32)
        } else {
            32
        };
        if inodes_per_group == 0 || !(128..=block as usize).contains(&inode_size) {
            return None;
        }
        let groups = inodes.div_ceil(inodes_per_group);
        let first_data = u64::from(u32_at(&sb, 0x14));
        let mut descs = vec![0u8; usize::try_from(groups.checked_mul(desc_size)?).ok()?];
        r.read_exact_at((first_data + 1) * block, &mut descs).ok()?;
        let tables = descs
            .chunks_exact(desc_size as usize)
            .map(|d| {
                let hi = if desc_size >= 64 { u32_at(d, 0x28) } else { 0 };
                u64::from(u32_at(d, 0x08)) | u64::from(hi) << 32
            })
            .collect();
        Some(ExtDirs {
            r: Mutex::new(r),
            block,
            inodes_per_group,
            inode_size,
            filetype: incompat & FILETYPE != 0,
            tables,
        })
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        self.r
            .lock()
            .expect("ext reader")
            .read_exact_at(offset, out)
            .map_err(|e| Error::Refused(format!("cannot read the ext file system: {e}")))
    }

    /// The raw inode `ino`.
    fn inode(&self, ino: u64) -> Result<Vec<u8>> {
        let i = ino
            .checked_sub(1)
            .ok_or_else(|| damaged("a directory entry names inode 0".into()))?;
        let table = self
            .tables
            .get((i / self.inodes_per_group) as usize)
            .ok_or_else(|| damaged(format!("inode {ino} is past the last group")))?;
        let at = table
            .checked_mul(self.block)
            .and_then(|t| t.checked_add(i % self.inodes_per_group * self.inode_size as u64))
            .ok_or_else(|| damaged(format!("inode {ino} has an impossible place")))?;
        let mut raw = vec![0u8; self.inode_size];
        self.read(at, &mut raw)?;
        Ok(raw)
    }

    /// The entries of directory `ino`, each with its inode number in `node`; `.` and `..`
    /// are left out. An error where `ext4-view` must list it (see the module's documentation).
    pub(crate) fn list(&self, ino: u64) -> Result<Vec<FileEntry>> {
        let raw = self.inode(ino)?;
        let flags = u32_at(&raw, 0x20);
        if u16_at(&raw, 0) & 0xF000 != 0x4000 {
            return Err(damaged(format!("inode {ino} is not a directory")));
        }
        if flags & (INLINE_DATA | ENCRYPTED) != 0 {
            return Err(Error::Refused(format!(
                "directory inode {ino} is inline or encrypted"
            )));
        }
        let size = u64::from(u32_at(&raw, 0x04)) | u64::from(u32_at(&raw, 0x6C)) << 32;
        let count = size.div_ceil(self.block);
        if count > MAX_DIR_BLOCKS {
            return Err(damaged(format!("directory inode {ino} has {size} bytes")));
        }
        let mut blocks = Vec::with_capacity(count as usize);
        if flags & EXTENTS != 0 {
            self.extents(&raw[0x28..0x64], count, 0, &mut blocks)?;
        } else {
            let direct: Vec<u64> = (0..15)
                .map(|k| u64::from(u32_at(&raw, 0x28 + 4 * k)))
                .collect();
            blocks.extend(direct[..12].iter().map(|&b| (b != 0).then_some(b)));
            for (depth, &b) in direct[12..].iter().enumerate() {
                self.mapped(b, depth as u32, count, &mut blocks)?;
            }
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; self.block as usize];
        for b in blocks.into_iter().take(count as usize).flatten() {
            self.read(b * self.block, &mut buf)?;
            self.entries(ino, &buf, &mut out)?;
        }
        Ok(out)
    }

    /// Appends the blocks of the extent tree node `node` (logical order, `None` for holes).
    fn extents(
        &self,
        node: &[u8],
        count: u64,
        depth: u32,
        out: &mut Vec<Option<u64>>,
    ) -> Result<()> {
        if u16_at(node, 0) != 0xF30A || depth > 5 {
            return Err(damaged("a directory's extent tree is unreadable".into()));
        }
        let entries = usize::from(u16_at(node, 2));
        let level = u16_at(node, 6);
        if 12 + 12 * entries > node.len() {
            return Err(damaged("a directory's extent tree is unreadable".into()));
        }
        for e in node[12..12 + 12 * entries].chunks_exact(12) {
            if out.len() as u64 >= count {
                break;
            }
            if level > 0 {
                let leaf = u64::from(u32_at(e, 4)) | u64::from(u16_at(e, 8)) << 32;
                let mut child = vec![0u8; self.block as usize];
                self.read(leaf * self.block, &mut child)?;
                self.extents(&child, count, depth + 1, out)?;
                continue;
            }
            let logical = u64::from(u32_at(e, 0));
            let len = u64::from(u16_at(e, 4));
            let start = u64::from(u32_at(e, 8)) | u64::from(u16_at(e, 6)) << 32;
            if logical < out.len() as u64 || logical >= count {
                return Err(damaged("a directory's extents overlap".into()));
            }
            out.resize(logical as usize, None);
            // An uninitialized extent (length over 32768) reads as zeros: no entries.
            let (len, written) = if len > 32768 {
                (len - 32768, false)
            } else {
                (len, true)
            };
            let len = len.min(count - logical);
            out.extend((0..len).map(|k| written.then_some(start + k)));
        }
        Ok(())
    }

    /// Appends the blocks mapped by the ext2/3 indirect block `b` of `depth` levels.
    fn mapped(&self, b: u64, depth: u32, count: u64, out: &mut Vec<Option<u64>>) -> Result<()> {
        let per = self.block / 4;
        if out.len() as u64 >= count {
            return Ok(());
        }
        if b == 0 {
            let span = per.pow(depth + 1).min(count - out.len() as u64);
            out.extend((0..span).map(|_| None));
            return Ok(());
        }
        let mut buf = vec![0u8; self.block as usize];
        self.read(b * self.block, &mut buf)?;
        for k in 0..per as usize {
            let p = u64::from(u32_at(&buf, 4 * k));
            if depth == 0 {
                if out.len() as u64 >= count {
                    break;
                }
                out.push((p != 0).then_some(p));
            } else {
                self.mapped(p, depth - 1, count, out)?;
            }
        }
        Ok(())
    }

    /// Appends the entries of one directory block of directory `dir`.
    fn entries(&self, dir: u64, block: &[u8], out: &mut Vec<FileEntry>) -> Result<()> {
        let mut at = 0;
        while at + 8 <= block.len() {
            let ino = u64::from(u32_at(block, at));
            let rec = usize::from(u16_at(block, at + 4));
            let name_len = if self.filetype {
                usize::from(block[at + 6])
            } else {
                usize::from(u16_at(block, at + 6))
            };
            if rec < 8 || at + rec > block.len() || (ino != 0 && 8 + name_len > rec) {
                return Err(damaged(format!("directory inode {dir} has a broken entry")));
            }
            let name = &block[at + 8..at + 8 + name_len.min(rec - 8)];
            if ino != 0 && !name.is_empty() && name != b"." && name != b".." {
                let raw = self.inode(ino)?;
                out.push(entry(String::from_utf8_lossy(name).into_owned(), ino, &raw));
            }
            at += rec;
        }
        Ok(())
    }
}

/// The listing entry of inode `ino` named `name`, as `ext4-view` reads its fields.
fn entry(name: String, ino: u64, raw: &[u8]) -> FileEntry {
    let mode = u16_at(raw, 0);
    let kind = match mode & 0xF000 {
        0x4000 => FileKind::Dir,
        0x8000 => FileKind::File,
        0xA000 => FileKind::Symlink,
        _ => FileKind::Other,
    };
    // The nanoseconds and epoch bits of the times, where the inode is large enough.
    let extra = raw.len() >= 0x98;
    let time = |secs: usize, more: usize| -> (i64, u32) {
        let s = i64::from(u32_at(raw, secs) as i32);
        if !extra {
            return (s, 0);
        }
        let x = u32_at(raw, more);
        (s + (i64::from(x & 3) << 32), x >> 2)
    };
    FileEntry {
        name,
        kind,
        size: u64::from(u32_at(raw, 0x04)) | u64::from(u32_at(raw, 0x6C)) << 32,
        mode: u32::from(mode) & 0o7777,
        uid: u32::from(u16_at(raw, 0x02)) | u32::from(u16_at(raw, 0x78)) << 16,
        gid: u32::from(u16_at(raw, 0x18)) | u32::from(u16_at(raw, 0x7A)) << 16,
        mtime: time(0x10, 0x88),
        atime: time(0x08, 0x8C),
        node: ino,
        ..FileEntry::default()
    }
}

//! ext2/3/4 read by inode number: directories, path resolution (through symbolic links) and
//! file contents, for listings, `cat`, `extract` and the file catalog's walk.
//!
//! `ext4-view` reads by path: every call resolves the path again from the root and re-checks
//! the CRC32C of each directory block and inode it passes, and files are read one block per
//! call. That made the catalog of a root disk cost a quarter of its backup and an extract of
//! `/usr` take 9 s. This reader goes down by inode number, reads each directory block and
//! inode once, remembers the inodes of the paths it listed, reads file data in large pieces
//! straight from the file's runs of blocks, and checks no metadata checksum (the chunks under
//! it were verified against their ids). It handles extent trees and the block maps of
//! ext2/3, linear and hashed (htree) directories, both directory entry layouts, holes and
//! uninitialized extents.
//!
//! It declines (`None` from [`ExtInodes::open`], an error from the directory and file calls)
//! what it does not read the way `ext4-view` does, which then reads it: a journal that needs
//! replaying (the blocks on the disk are not the ones `ext4-view` shows), `meta_bg` group
//! descriptors, inline-data and encrypted directories.

use std::collections::HashMap;
use std::io::{self, Read};
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
/// Largest directory (ext4's `large_dir` limit): more is damage.
const MAX_DIR_BYTES: u64 = 1 << 32;
/// Directory blocks read at once.
const DIR_SLICE: u64 = 256;

/// An ext2/3/4 file system's directories, read by inode number.
pub(crate) struct ExtInodes {
    r: Mutex<RangeReader>,
    block: u64,
    inodes_per_group: u64,
    inode_size: usize,
    filetype: bool,
    /// Block groups, where their descriptors start (bytes) and the size of one.
    groups: u64,
    descriptors: u64,
    desc_size: u64,
    /// The first block of the inode table of each group read so far (descriptors are read
    /// as needed: a 16 TiB file system has 8 MiB of them).
    tables: Mutex<HashMap<u64, u64>>,
    /// Inodes of paths listed before ([`ExtInodes::remember`]).
    known: Mutex<HashMap<String, u64>>,
}

fn damaged(what: String) -> Error {
    Error::Refused(format!("the ext file system is damaged: {what}"))
}

impl ExtInodes {
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
        let first_data = u64::from(u32_at(&sb, 0x14));
        Some(ExtInodes {
            r: Mutex::new(r),
            block,
            inodes_per_group,
            inode_size,
            filetype: incompat & FILETYPE != 0,
            groups: inodes.div_ceil(inodes_per_group),
            descriptors: (first_data + 1) * block,
            desc_size,
            tables: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
        })
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        self.r
            .lock()
            .expect("ext reader")
            .read_exact_at(offset, out)
            .map_err(|e| Error::Refused(format!("cannot read the ext file system: {e}")))
    }

    /// The first block of group `group`'s inode table.
    fn table(&self, group: u64) -> Result<u64> {
        if let Some(&t) = self.tables.lock().expect("inode tables").get(&group) {
            return Ok(t);
        }
        let mut d = [0u8; 64];
        let d = &mut d[..self.desc_size.min(64) as usize];
        self.read(self.descriptors + group * self.desc_size, d)?;
        let hi = if d.len() >= 64 { u32_at(d, 0x28) } else { 0 };
        let t = u64::from(u32_at(d, 0x08)) | u64::from(hi) << 32;
        self.tables.lock().expect("inode tables").insert(group, t);
        Ok(t)
    }

    /// Where inode `ino` lies, bytes into the file system.
    fn place(&self, ino: u64) -> Result<u64> {
        let i = ino
            .checked_sub(1)
            .ok_or_else(|| damaged("a directory entry names inode 0".into()))?;
        let group = i / self.inodes_per_group;
        if group >= self.groups {
            return Err(damaged(format!("inode {ino} is past the last group")));
        }
        let table = self.table(group)?;
        table
            .checked_mul(self.block)
            .and_then(|t| t.checked_add(i % self.inodes_per_group * self.inode_size as u64))
            .ok_or_else(|| damaged(format!("inode {ino} has an impossible place")))
    }

    /// The raw inode `ino`.
    pub(crate) fn inode(&self, ino: u64) -> Result<Vec<u8>> {
        let at = self.place(ino)?;
        let mut raw = vec![0u8; self.inode_size];
        self.read(at, &mut raw)?;
        Ok(raw)
    }

    /// Hands the chunks that hold the inodes `inos` to the reader's fetch threads, so that
    /// reading them one by one after it waits on fetches already in flight (the inodes of a
    /// directory's entries lie in one or a few stretches of the inode tables).
    fn prefetch_inodes(&self, inos: &[u64]) -> Result<()> {
        let mut places = inos
            .iter()
            .map(|&ino| self.place(ino))
            .collect::<Result<Vec<_>>>()?;
        places.sort_unstable();
        let r = self.r.lock().expect("ext reader");
        let gap = r.max_chunk().max(1);
        let mut stretch: Option<(u64, u64)> = None;
        for at in places {
            let end = at + self.inode_size as u64;
            match &mut stretch {
                Some((_, e)) if at <= *e + gap => *e = end,
                _ => {
                    if let Some((s, e)) = stretch.replace((at, end)) {
                        r.prefetch(s, e);
                    }
                }
            }
        }
        if let Some((s, e)) = stretch {
            r.prefetch(s, e);
        }
        Ok(())
    }

    /// The blocks of the inode `raw` (`ino`) as runs in logical order, holes left out.
    fn runs(&self, ino: u64, raw: &[u8]) -> Result<Vec<Run>> {
        let count = size_of(raw).div_ceil(self.block);
        let mut runs = Vec::new();
        // ext4 files hold at most 2^32 blocks; a larger size is damage.
        if count > 1 << 32 {
            return Err(damaged(format!(
                "inode {ino} claims {} bytes",
                size_of(raw)
            )));
        }
        if u32_at(raw, 0x20) & EXTENTS != 0 {
            self.extents(ino, &raw[0x28..0x64], count, None, &mut 0, &mut runs)?;
        } else {
            let mut logical = 0;
            for k in 0..15 {
                let b = u64::from(u32_at(raw, 0x28 + 4 * k));
                match k {
                    0..12 => {
                        if logical < count && b != 0 {
                            push_block(&mut runs, logical, b);
                        }
                        logical += 1;
                    }
                    _ => self.mapped(b, (k - 12) as u32, count, &mut logical, &mut runs)?,
                }
            }
        }
        // Every byte of every run has a place that fits in 64 bits (damage could say else).
        let fits = |r: &Run| {
            r.physical
                .checked_add(r.len)
                .and_then(|e| e.checked_mul(self.block))
        };
        if !runs.iter().all(|r| fits(r).is_some()) {
            return Err(damaged(format!("inode {ino} has blocks past any disk")));
        }
        Ok(runs)
    }

    /// Appends the runs of the extent tree node `node` of inode `ino`. `next` is the lowest
    /// logical block the next entry may name: every entry, index or leaf, used or skipped,
    /// must lie past the one before, so a damaged tree that points back at nodes already
    /// read is refused at once, and the work stays within one read of each tree block.
    fn extents(
        &self,
        ino: u64,
        node: &[u8],
        count: u64,
        level: Option<u16>,
        next: &mut u64,
        out: &mut Vec<Run>,
    ) -> Result<()> {
        let broken = || damaged(format!("inode {ino} has an unreadable extent tree"));
        let entries = usize::from(u16_at(node, 2));
        let here = u16_at(node, 6);
        let nested = level.is_some();
        if u16_at(node, 0) != 0xF30A
            || 12 + 12 * entries > node.len()
            || level.is_some_and(|l| l != here)
            || here > 5
            || (nested && entries == 0)
        {
            return Err(broken());
        }
        for e in node[12..12 + 12 * entries].chunks_exact(12) {
            let logical = u64::from(u32_at(e, 0));
            if logical < *next {
                return Err(damaged(format!("inode {ino} has overlapping extents")));
            }
            if here > 0 {
                let leaf = u64::from(u32_at(e, 4)) | u64::from(u16_at(e, 8)) << 32;
                let mut child = vec![0u8; self.block as usize];
                let at = leaf.checked_mul(self.block).ok_or_else(broken)?;
                self.read(at, &mut child)?;
                self.extents(ino, &child, count, Some(here - 1), next, out)?;
                continue;
            }
            let raw_len = u64::from(u16_at(e, 4));
            let start = u64::from(u32_at(e, 8)) | u64::from(u16_at(e, 6)) << 32;
            // An uninitialized extent (length over 32768) reads as zeros: a hole here.
            let (len, written) = match raw_len {
                0 => return Err(broken()),
                l if l > 32768 => (l - 32768, false),
                l => (l, true),
            };
            *next = logical + len;
            if !written || logical >= count {
                continue;
            }
            if out.len() >= MAX_RUNS {
                return Err(damaged(format!(
                    "inode {ino} is in more than {MAX_RUNS} pieces"
                )));
            }
            out.push(Run {
                logical,
                len: len.min(count - logical),
                physical: start,
            });
        }
        Ok(())
    }

    /// Appends the blocks mapped by the ext2/3 indirect block `b` of `depth` levels below,
    /// from logical block `*logical` on.
    fn mapped(
        &self,
        b: u64,
        depth: u32,
        count: u64,
        logical: &mut u64,
        out: &mut Vec<Run>,
    ) -> Result<()> {
        let per = self.block / 4;
        if *logical >= count {
            return Ok(());
        }
        if b == 0 {
            *logical += per.pow(depth + 1);
            return Ok(());
        }
        let mut buf = vec![0u8; self.block as usize];
        self.read(b * self.block, &mut buf)?;
        for k in 0..per as usize {
            let p = u64::from(u32_at(&buf, 4 * k));
            if depth > 0 {
                self.mapped(p, depth - 1, count, logical, out)?;
                continue;
            }
            if *logical >= count {
                break;
            }
            if p != 0 {
                if out.len() >= MAX_RUNS {
                    return Err(damaged(format!("a file is in more than {MAX_RUNS} pieces")));
                }
                push_block(out, *logical, p);
            }
            *logical += 1;
        }
        Ok(())
    }

    /// Calls `f(inode, name)` for each entry of directory `dir` (inode bytes `raw`), `.` and
    /// `..` left out, until it returns false.
    fn each_entry(
        &self,
        dir: u64,
        raw: &[u8],
        mut f: impl FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let flags = u32_at(raw, 0x20);
        if u16_at(raw, 0) & 0xF000 != 0x4000 {
            return Err(damaged(format!("inode {dir} is not a directory")));
        }
        if flags & (INLINE_DATA | ENCRYPTED) != 0 {
            return Err(Error::Refused(format!(
                "directory inode {dir} is inline or encrypted"
            )));
        }
        if size_of(raw) > MAX_DIR_BYTES {
            return Err(damaged(format!("directory inode {dir} is too large")));
        }
        let bs = self.block as usize;
        let mut buf = Vec::new();
        for run in self.runs(dir, raw)? {
            let mut done = 0;
            while done < run.len {
                let n = (run.len - done).min(DIR_SLICE);
                buf.resize(n as usize * bs, 0);
                self.read((run.physical + done) * self.block, &mut buf)?;
                done += n;
                for block in buf.chunks_exact(bs) {
                    if !self.block_entries(dir, block, &mut f)? {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Calls `f` for the entries of one directory block; false once `f` said to stop.
    fn block_entries(
        &self,
        dir: u64,
        block: &[u8],
        f: &mut impl FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<bool> {
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
            if ino != 0 && !name.is_empty() && name != b"." && name != b".." && !f(ino, name)? {
                return Ok(false);
            }
            at += rec;
        }
        Ok(true)
    }

    /// The entries of directory `ino`, each with its inode number in `node`; `.` and `..`
    /// are left out. An error where `ext4-view` must list it (see the module's documentation).
    pub(crate) fn list(&self, ino: u64) -> Result<Vec<FileEntry>> {
        let raw = self.inode(ino)?;
        let mut children = Vec::new();
        self.each_entry(ino, &raw, |child, name| {
            children.push((child, String::from_utf8_lossy(name).into_owned()));
            Ok(true)
        })?;
        let inos: Vec<u64> = children.iter().map(|c| c.0).collect();
        self.prefetch_inodes(&inos)?;
        children
            .into_iter()
            .map(|(child, name)| Ok(entry(name, child, &self.inode(child)?)))
            .collect()
    }

    /// The inode named `name` in directory `dir` (inode bytes `raw`).
    fn lookup(&self, dir: u64, raw: &[u8], name: &[u8]) -> Result<Option<u64>> {
        let mut found = None;
        self.each_entry(dir, raw, |ino, n| {
            if n == name {
                found = Some(ino);
            }
            Ok(found.is_none())
        })?;
        Ok(found)
    }

    /// The target of the symbolic link inode `raw` (`ino`).
    pub(crate) fn link_target(&self, ino: u64, raw: &[u8]) -> Result<Vec<u8>> {
        let size = size_of(raw);
        if size == 0 || size > 4096 {
            return Err(damaged(format!(
                "symbolic link inode {ino} has {size} bytes"
            )));
        }
        if u32_at(raw, 0x20) & ENCRYPTED != 0 {
            return Err(Error::Refused(format!(
                "symbolic link inode {ino} is encrypted (fscrypt); it cannot be read here"
            )));
        }
        // Up to 59 bytes live in the inode itself (as ext4-view reads them).
        if size <= 59 {
            return Ok(raw[0x28..0x28 + size as usize].to_vec());
        }
        let mut target = Vec::new();
        self.file(ino, raw)?
            .read_to_end(&mut target)
            .map_err(|e| damaged(format!("symbolic link inode {ino} cannot be read: {e}")))?;
        Ok(target)
    }

    /// Resolves `path` (absolute, inside the file system) to its inode number and bytes,
    /// following symbolic links on the way, and the last one too with `follow`. `Ok(Err)` is
    /// the user's error (no such path, not a directory, a loop of links), in the words
    /// [`super::ext`] gives them; `Err` is this reader declining (damage, a directory kind it
    /// does not read), and `ext4-view` should be asked.
    pub(crate) fn resolve(&self, path: &str, follow: bool) -> Result<Result<(u64, Vec<u8>)>> {
        let known = self
            .known
            .lock()
            .expect("known paths")
            .get(key(path))
            .copied();
        if let Some(ino) = known {
            let raw = self.inode(ino)?;
            if !follow || u16_at(&raw, 0) & 0xF000 != 0xA000 {
                return Ok(Ok((ino, raw)));
            }
        }
        let mut todo: Vec<Vec<u8>> = path
            .split('/')
            .rev()
            .filter(|c| !c.is_empty())
            .map(|c| c.as_bytes().to_vec())
            .collect();
        let mut stack = vec![(ROOT, self.inode(ROOT)?)];
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c == b"." {
                continue;
            }
            if c == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let (dir, raw) = stack.last().expect("the root stays");
            if u16_at(raw, 0) & 0xF000 != 0x4000 {
                return Ok(Err(super::not_a_directory(path)));
            }
            let Some(ino) = self.lookup(*dir, raw, &c)? else {
                return Ok(Err(super::not_found(path)));
            };
            let raw = self.inode(ino)?;
            if u16_at(&raw, 0) & 0xF000 == 0xA000 && (follow || !todo.is_empty()) {
                hops += 1;
                if hops > 40 {
                    return Ok(Err(Error::Refused(format!(
                        "{path}: too many levels of symbolic links"
                    ))));
                }
                let target = self.link_target(ino, &raw)?;
                if target.first() == Some(&b'/') {
                    stack.truncate(1);
                }
                todo.extend(
                    target
                        .split(|&b| b == b'/')
                        .rev()
                        .filter(|c| !c.is_empty())
                        .map(<[u8]>::to_vec),
                );
                continue;
            }
            stack.push((ino, raw));
        }
        Ok(Ok(stack.pop().expect("the root stays")))
    }

    /// Remembers that `path` names inode `ino` (its directory was listed): the extract of a
    /// tree opens each file it listed without resolving its path again.
    pub(crate) fn remember(&self, path: String, ino: u64) {
        let mut known = self.known.lock().expect("known paths");
        if known.len() >= MAX_KNOWN {
            known.clear();
        }
        known.insert(key(&path).to_string(), ino);
    }

    /// A reader of the regular file (or long symbolic link) inode `raw` (`ino`).
    pub(crate) fn file(&self, ino: u64, raw: &[u8]) -> Result<ExtFile> {
        if u32_at(raw, 0x20) & INLINE_DATA != 0 {
            return Err(Error::Refused(format!("inode {ino} keeps its data inline")));
        }
        let runs = self.runs(ino, raw)?;
        let r = self.r.lock().expect("ext reader").sibling();
        Ok(ExtFile {
            r,
            runs,
            block: self.block,
            size: size_of(raw),
            pos: 0,
            ahead: 0,
        })
    }
}

/// The key a path is remembered by: without leading and trailing slashes.
fn key(path: &str) -> &str {
    path.trim_matches('/')
}

/// Most pieces a file's blocks may be in (24 bytes each): more is damage.
const MAX_RUNS: usize = 1 << 22;

/// Paths remembered at most by [`ExtInodes::remember`] (about 100 bytes each).
const MAX_KNOWN: usize = 4_000_000;

/// `len` blocks of a file from its logical block `logical`, at block `physical` of the disk.
#[derive(Clone, Copy, Debug)]
struct Run {
    logical: u64,
    len: u64,
    physical: u64,
}

/// Adds logical block `logical` at `physical` to `runs`, extending the last run when they
/// are contiguous on both sides.
fn push_block(runs: &mut Vec<Run>, logical: u64, physical: u64) {
    if let Some(r) = runs.last_mut() {
        if r.logical + r.len == logical && r.physical + r.len == physical {
            r.len += 1;
            return;
        }
    }
    runs.push(Run {
        logical,
        len: 1,
        physical,
    });
}

fn size_of(raw: &[u8]) -> u64 {
    u64::from(u32_at(raw, 0x04)) | u64::from(u32_at(raw, 0x6C)) << 32
}

/// A file's contents, read straight from its runs of blocks in large pieces (holes and
/// uninitialized extents read as zeros).
pub(crate) struct ExtFile {
    r: RangeReader,
    runs: Vec<Run>,
    block: u64,
    size: u64,
    pos: u64,
    /// The file's bytes up to here were handed to the reader's fetch threads.
    ahead: u64,
}

impl ExtFile {
    /// The run that holds the current position, or the bytes of hole from it on.
    fn here(&self) -> std::result::Result<Run, u64> {
        let block = self.pos / self.block;
        // The first run that ends after this block.
        let k = self.runs.partition_point(|r| r.logical + r.len <= block);
        match self.runs.get(k) {
            Some(r) if r.logical <= block => Ok(*r),
            next => {
                let end = next.map_or(self.size, |r| (r.logical * self.block).min(self.size));
                Err(end.saturating_sub(self.pos))
            }
        }
    }

    /// Fetches the file's blocks of the readahead window past `pos` that were not fetched
    /// yet: exactly the file's data, none past its end.
    fn plan(&mut self) {
        self.ahead = self.ahead.max(self.pos);
        let until = self.size.min(self.pos + self.r.window());
        if self.ahead >= until.min(self.pos + self.r.window() / 2) && self.ahead > self.pos {
            return;
        }
        let bs = self.block;
        let mut k = self
            .runs
            .partition_point(|r| (r.logical + r.len) * bs <= self.ahead);
        while self.ahead < until {
            let Some(r) = self.runs.get(k) else {
                self.ahead = until;
                break;
            };
            let from = self.ahead.max(r.logical * bs);
            let to = until.min((r.logical + r.len) * bs);
            if from < to {
                let at = r.physical * bs + (from - r.logical * bs);
                self.r.prefetch(at, at + (to - from));
            }
            self.ahead = to.max(self.ahead);
            k += 1;
        }
    }
}

impl super::FileData for ExtFile {
    fn hole(&self) -> u64 {
        self.here().err().unwrap_or(0)
    }

    fn skip(&mut self, n: u64) {
        self.pos = self.pos.saturating_add(n).min(self.size);
    }
}

impl Read for ExtFile {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let left = self.size.saturating_sub(self.pos);
        let want = (out.len() as u64).min(left) as usize;
        if want == 0 {
            return Ok(0);
        }
        self.plan();
        let n = match self.here() {
            Ok(r) => {
                let at = r.physical * self.block + (self.pos - r.logical * self.block);
                let end = (r.logical + r.len) * self.block;
                let n = (want as u64).min(end - self.pos) as usize;
                self.r.read_planned(at, &mut out[..n])?;
                // The chunks wholly inside what this run has given so far hold nothing else
                // (those that end before this read were dropped by the reads before it).
                let from = (r.physical * self.block).max(at.saturating_sub(self.r.max_chunk()));
                self.r.forget(from, at + n as u64);
                n
            }
            Err(hole) => {
                let n = (want as u64).min(hole) as usize;
                out[..n].fill(0);
                n
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// The listing entry of inode `ino` named `name`, as `ext4-view` reads its fields.
pub(crate) fn entry(name: String, ino: u64, raw: &[u8]) -> FileEntry {
    let mode = u16_at(raw, 0);
    let kind = match mode & 0xF000 {
        0x4000 => FileKind::Dir,
        0x8000 => FileKind::File,
        0xA000 => FileKind::Symlink,
        _ => FileKind::Other,
    };
    // The nanoseconds and epoch bits of the times, where the inode's extra part holds them
    // (`i_extra_isize` at 0x80 counts its bytes from 0x80; an ext3 inode may use the space
    // for extended attributes instead).
    let extra = if raw.len() >= 0x90 {
        usize::from(u16_at(raw, 0x80))
    } else {
        0
    };
    let time = |secs: usize, more: usize| -> (i64, u32) {
        let s = i64::from(u32_at(raw, secs) as i32);
        if 0x80 + extra < more + 4 {
            return (s, 0);
        }
        let x = u32_at(raw, more);
        match x >> 2 {
            ns if ns < 1_000_000_000 => (s + (i64::from(x & 3) << 32), ns),
            _ => (s, 0),
        }
    };
    FileEntry {
        name,
        kind,
        size: size_of(raw),
        mode: u32::from(mode) & 0o7777,
        uid: u32::from(u16_at(raw, 0x02)) | u32::from(u16_at(raw, 0x78)) << 16,
        gid: u32::from(u16_at(raw, 0x18)) | u32::from(u16_at(raw, 0x7A)) << 16,
        mtime: time(0x10, 0x88),
        atime: time(0x08, 0x8C),
        node: ino,
        link: (kind == FileKind::File).then_some(ino),
        ..FileEntry::default()
    }
}

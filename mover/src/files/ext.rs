//! ext2, ext3 and ext4: read-only by construction. mover's own reader
//! ([`super::extdir`]) resolves paths, lists directories and reads files by inode number,
//! each directory block and inode read once and file data in large pieces straight from its
//! runs of blocks. `ext4-view` loads and checks the file system first, and reads it where
//! mover's reader declines: a journal to replay (in memory, the disk is never written),
//! `meta_bg` group descriptors, inline data.
//!
//! Hard links are told by inode number where mover's reader lists them. `ext4-view` does not
//! expose inode numbers, so through it they are told by their inode's full metadata (size,
//! mode, owner and the four timestamps to the nanosecond): the extract links two names only
//! when that key matches and their contents are equal too.

use std::hash::{Hash, Hasher};

use ext4_view::{Ext4, Ext4Error, Metadata};

use super::extdir::{self, ExtInodes, ROOT};
use super::view::RangeReader;
use super::{FileEntry, FileKind, Volume};
use crate::{Error, Result};

/// An opened ext2/3/4 file system.
pub(crate) struct ExtVolume {
    fs: Ext4,
    kind: &'static str,
    /// Directories by inode number, for the catalog's walk (`None` where only `ext4-view`
    /// reads them right, as with a journal to replay).
    dirs: Option<ExtInodes>,
}

impl ExtVolume {
    /// Opens the file system behind `r` (its superblock at byte 1024).
    pub(crate) fn open(mut r: RangeReader, what: &str) -> Result<Self> {
        let mut sb = [0u8; 0x68];
        r.read_exact_at(1024, &mut sb)
            .map_err(|e| Error::Refused(format!("{what}: cannot read the ext superblock: {e}")))?;
        let compat = chunker::le::u32_at(&sb, 0x5C);
        let incompat = chunker::le::u32_at(&sb, 0x60);
        // Extents, 64-bit or flex_bg make it ext4; a journal without them ext3.
        let kind = if incompat & (0x40 | 0x80 | 0x200) != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        let dirs = ExtInodes::open(r.sibling().planned());
        let fs = Ext4::load(Box::new(r)).map_err(|e| damaged(what, kind, &e))?;
        Ok(ExtVolume { fs, kind, dirs })
    }

    fn err(&self, path: &str, e: Ext4Error) -> Error {
        match e {
            Ext4Error::NotFound => super::not_found(path),
            Ext4Error::NotADirectory => super::not_a_directory(path),
            Ext4Error::IsADirectory => is_a_directory(path),
            Ext4Error::IsASpecialFile => holds_no_data(path),
            Ext4Error::Encrypted => Error::Refused(format!(
                "{path} is encrypted (fscrypt); it cannot be read here"
            )),
            e => damaged(path, self.kind, &e),
        }
    }
}

fn damaged(what: &str, kind: &str, e: &Ext4Error) -> Error {
    match e {
        Ext4Error::Io(io) => {
            Error::Refused(format!("{what}: cannot read the {kind} file system: {io}"))
        }
        // ext4-view replays journals with 64-bit block numbers and v3 checksums, what the
        // kernel writes on file systems with metadata checksums; reading an older journal's
        // file system without its replay would show files as they were before the crash.
        Ext4Error::Incompatible(i) if i.to_string().contains("journal") => {
            Error::Refused(format!(
                "{what}: the {kind} file system was not unmounted cleanly and its journal is of a kind mover cannot replay ({i}); \
                 export the snapshot with `mover serve --overlay FILE` and mount it (the kernel replays the journal into the overlay)"
            ))
        }
        Ext4Error::Incompatible(i) => Error::Refused(format!(
            "{what}: the {kind} file system uses what mover cannot read: {i}"
        )),
        e => Error::Refused(format!("{what}: the {kind} file system is damaged: {e}")),
    }
}

/// The entry for `name` with the inode metadata `m`.
fn entry(name: String, m: &Metadata) -> FileEntry {
    let t = m.file_type();
    let kind = if t.is_dir() {
        FileKind::Dir
    } else if t.is_regular_file() {
        FileKind::File
    } else if t.is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::Other
    };
    let mut key = std::collections::hash_map::DefaultHasher::new();
    m.hash(&mut key);
    let (mt, at) = (m.modified(), m.accessed());
    FileEntry {
        name,
        kind,
        size: m.len(),
        mode: u32::from(m.mode()) & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: (mt.seconds(), mt.nanoseconds()),
        atime: (at.seconds(), at.nanoseconds()),
        link: (kind == FileKind::File).then(|| key.finish()),
        ..FileEntry::default()
    }
}

impl ExtVolume {
    /// The inode at `path`, by mover's own reader (`None` where ext4-view must read the
    /// file system).
    /// ext4-view's answer is asked for where mover's reader declines (damage, a kind of
    /// directory it does not read): it reads more, and says what is wrong in its words.
    fn by_inode(&self, path: &str, follow: bool) -> Option<Result<(u64, Vec<u8>)>> {
        match self.dirs.as_ref()?.resolve(path, follow) {
            Ok(answer) => Some(answer),
            Err(e) => {
                tracing::debug!("{path}: read through ext4-view: {}", crate::one_line(&e));
                None
            }
        }
    }
}

/// Refuses what holds no data to read: a directory, a device, FIFO or socket.
fn readable(path: &str, raw: &[u8]) -> Result<()> {
    match chunker::le::u16_at(raw, 0) & 0xF000 {
        0x8000 => Ok(()),
        0x4000 => Err(is_a_directory(path)),
        _ => Err(holds_no_data(path)),
    }
}

fn is_a_directory(path: &str) -> Error {
    Error::Refused(format!("{path} is a directory"))
}

fn holds_no_data(path: &str) -> Error {
    Error::Refused(format!(
        "{path} is a device, FIFO or socket: it holds no data to read"
    ))
}

impl Volume for ExtVolume {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn label(&self) -> Option<String> {
        let l = self.fs.label().to_str().ok()?.to_string();
        (!l.is_empty()).then_some(l)
    }

    fn stat(&self, path: &str) -> Result<FileEntry> {
        let name = path.rsplit('/').next().unwrap_or_default().to_string();
        if let Some(found) = self.by_inode(path, false) {
            let (ino, raw) = found?;
            return Ok(extdir::entry(name, ino, &raw));
        }
        let m = self
            .fs
            .symlink_metadata(path)
            .map_err(|e| self.err(path, e))?;
        Ok(entry(name, &m))
    }

    fn list(&self, path: &str) -> Result<Vec<FileEntry>> {
        if let Some(found) = self.by_inode(path, true) {
            let (ino, raw) = found?;
            if chunker::le::u16_at(&raw, 0) & 0xF000 != 0x4000 {
                return Err(super::not_a_directory(path));
            }
            let dirs = self.dirs.as_ref().expect("resolved by it");
            if let Some(children) = self.list_node(ino) {
                for c in &children {
                    dirs.remember(format!("{}/{}", path.trim_end_matches('/'), c.name), c.node);
                }
                return Ok(children);
            }
        }
        let mut out = Vec::new();
        for e in self.fs.read_dir(path).map_err(|e| self.err(path, e))? {
            let e = e.map_err(|e| self.err(path, e))?;
            let name = e.file_name();
            let name = String::from_utf8_lossy(name.as_ref()).into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let m = e.metadata().map_err(|e| self.err(path, e))?;
            out.push(entry(name, &m));
        }
        Ok(out)
    }

    fn open(&self, path: &str) -> Result<Box<dyn super::FileData + '_>> {
        if let Some(found) = self.by_inode(path, true) {
            let (ino, raw) = found?;
            readable(path, &raw)?;
            let dirs = self.dirs.as_ref().expect("resolved by it");
            if let Ok(file) = dirs.file(ino, &raw) {
                return Ok(Box::new(file));
            }
        }
        let f = self.fs.open(path).map_err(|e| self.err(path, e))?;
        Ok(Box::new(super::Plain(f)))
    }

    fn read_link(&self, path: &str) -> Result<String> {
        if let Some(found) = self.by_inode(path, false) {
            let (ino, raw) = found?;
            let dirs = self.dirs.as_ref().expect("resolved by it");
            let t = dirs.link_target(ino, &raw)?;
            return Ok(String::from_utf8_lossy(&t).into_owned());
        }
        let t = self.fs.read_link(path).map_err(|e| self.err(path, e))?;
        Ok(String::from_utf8_lossy(t.as_ref()).into_owned())
    }

    fn root_node(&self) -> u64 {
        if self.dirs.is_some() {
            ROOT
        } else {
            0
        }
    }

    fn hint(&self, path: &str, node: u64) {
        if let Some(dirs) = &self.dirs {
            dirs.remember(path.to_string(), node);
        }
    }

    fn list_node(&self, node: u64) -> Option<Vec<FileEntry>> {
        match self.dirs.as_ref()?.list(node) {
            Ok(entries) => Some(entries),
            Err(e) => {
                tracing::debug!("{}: listed by path: {}", self.kind, crate::one_line(&e));
                None
            }
        }
    }
}

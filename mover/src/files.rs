//! File-level restore: list, read, extract and find files inside the disks of a snapshot
//! without restoring them (issue 16).
//!
//! A path names a place in a snapshot the way a person would walk it: a snapshot of several
//! disks lists its disks first (`sdb/…`); a partitioned disk lists its partitions as
//! `p1`…`pN` (GPT, or MBR with logical partitions from `p5`); a disk that is one file system
//! shows its root directly. So `sdb/p2/etc/fstab` is `/etc/fstab` of the second partition of
//! disk `sdb`, and `etc/fstab` is that file on a one-disk, unpartitioned snapshot.
//!
//! Everything is read through one [`SnapshotReader`] per disk, so only the chunks that hold
//! the metadata and the files asked for are fetched, each once. The file-system readers are
//! maintained crates (`ext4-view` for ext2/3/4, `fatfs` for FAT12/16/32, `ntfs` for NTFS),
//! each behind a view that cannot write: an ext journal left unreplayed is replayed in memory
//! only. Other contents (XFS, Btrfs, LVM, LUKS, swap, exFAT) are named, and the message points to
//! `mover serve` and a mount.
//!
//! The requests: [`list_files`] (`mover ls`), [`cat_file`] (`mover cat`),
//! [`extract_files`] (`mover extract`) and [`find_files`] (`mover find`), which answers from
//! the file catalog a backup records with each snapshot ([`write_catalog`]) where it can.

use std::io::Read;

use crate::{Error, Result};

mod catalog;
mod ext;
mod extdir;
mod extract;
mod fat;
mod find;
mod glob;
mod ntfs;
mod ops;
mod probe;
mod stored;
mod tree;
mod view;

pub use catalog::{write_catalog, CATALOG_MAX_ENTRIES};
pub use extract::{extract_files, ExtractReport, ExtractRequest};
pub use find::{find_files, FindHit, FindReport, FindRequest};
pub use ops::{cat_file, list_files, CatRequest, LsReport, LsRequest};

/// What an entry of a listing is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileKind {
    /// A disk of a multi-disk snapshot.
    Disk,
    /// A partition of a partitioned disk.
    Partition,
    /// A directory (the root of a file system included).
    Dir,
    /// A regular file.
    #[default]
    File,
    /// A symbolic link.
    Symlink,
    /// A device node, FIFO or socket.
    Other,
}

impl FileKind {
    /// The word used in listings and JSON: disk, partition, dir, file, symlink, other.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Disk => "disk",
            FileKind::Partition => "partition",
            FileKind::Dir => "dir",
            FileKind::File => "file",
            FileKind::Symlink => "symlink",
            FileKind::Other => "other",
        }
    }
}

/// One entry of a listing: a disk, a partition, or a file of a file system.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileEntry {
    /// Its path in the snapshot (`sdb/p2/etc/fstab`; no leading slash).
    pub path: String,
    /// The last component of the path.
    pub name: String,
    /// What it is.
    pub kind: FileKind,
    /// Bytes of data (a disk's or partition's size for those).
    pub size: u64,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last modification: seconds since the Unix epoch and nanoseconds.
    pub mtime: (i64, u32),
    /// Last access: seconds since the Unix epoch and nanoseconds.
    pub atime: (i64, u32),
    /// A symbolic link's target.
    pub target: Option<String>,
    /// A partition's type ("Linux filesystem", "0x83 Linux").
    pub part_type: Option<String>,
    /// The file system (or other content) of a disk or partition: ext4, fat32, XFS, gpt…
    pub fs_type: Option<String>,
    /// The label of a disk's or partition's file system (or its GPT name).
    pub label: Option<String>,
    /// Equal for names of one inode (hard links); `None` where unknown.
    pub(crate) link: Option<u64>,
    /// The inode number, where the reader that listed it knows it (0 otherwise).
    pub(crate) node: u64,
}

/// One opened file system, read only. Paths are absolute within it (`/`, `/etc/fstab`).
pub(crate) trait Volume {
    /// ext2, ext3, ext4, fat12, fat16, fat32, ntfs.
    fn kind(&self) -> &'static str;
    /// The file system's label, if it has one.
    fn label(&self) -> Option<String>;
    /// True when entries carry real owners and permission bits (not FAT or NTFS).
    fn has_owners(&self) -> bool {
        true
    }
    /// The entry at `path`; a symbolic link is not followed.
    fn stat(&self, path: &str) -> Result<FileEntry>;
    /// The entries of the directory at `path`, without `.` and `..`.
    fn list(&self, path: &str) -> Result<Vec<FileEntry>>;
    /// The contents of the regular file at `path`.
    fn open(&self, path: &str) -> Result<Box<dyn FileData + '_>>;
    /// The target of the symbolic link at `path`.
    fn read_link(&self, path: &str) -> Result<String>;
    /// The inode number of the root directory, where [`Volume::list_node`] can list by
    /// inode number; 0 where it cannot.
    fn root_node(&self) -> u64 {
        0
    }
    /// The entries of the directory with inode number `node` (without `.` and `..`, each
    /// with its own `node`), for a walk that goes down by inode rather than by path. `None`
    /// where the volume declines it: the caller then lists the directory by path.
    fn list_node(&self, _node: u64) -> Option<Vec<FileEntry>> {
        None
    }
    /// Tells the volume that `path` names inode `node` (the snapshot's file catalog says
    /// so), so that reading it need not walk the directories above it. A volume that goes
    /// by path ignores it.
    fn hint(&self, _path: &str, _node: u64) {}
}

/// A file's contents as a volume reads them: bytes, and where the reader knows them, holes
/// (an extract writes those as holes, not as zeros).
pub(crate) trait FileData: Read {
    /// Bytes of hole from the current position on (0 where data, or the end, follows).
    fn hole(&self) -> u64 {
        0
    }
    /// Moves past `n` bytes (of a hole the caller skips).
    fn skip(&mut self, n: u64) {
        let _ = n;
    }
}

/// The contents of a file whose reader knows no holes.
pub(crate) struct Plain<R>(pub(crate) R);

impl<R: Read> Read for Plain<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(out)
    }
}

impl<R: Read> FileData for Plain<R> {}

pub(crate) fn not_a_directory(path: &str) -> Error {
    Error::Refused(format!("{path} is not a directory"))
}

pub(crate) fn not_found(path: &str) -> Error {
    Error::Refused(format!("{path}: no such file or directory"))
}

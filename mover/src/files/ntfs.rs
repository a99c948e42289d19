//! NTFS through the `ntfs` crate, which only ever reads (it asks for `Read + Seek`, never
//! `Write`).
//!
//! What a listing shows: the names of the Win32 (long) namespace, never the DOS 8.3 aliases;
//! the metadata files (`$MFT`, `$Bitmap`, … the first 16 file records) are hidden, as
//! `ntfs-3g` hides them. NTFS keeps Windows ACLs, not owners and permission bits: entries show
//! owner 0, mode 0755 (directories) or 0644 (files; 0444 with the read-only attribute), and
//! times from `$STANDARD_INFORMATION` to the 100 ns NTFS records. Names of one file record
//! are hard links. Symbolic links made by `ntfs-3g` (Interix links: a system file holding
//! `IntxLNK` and the target) are symbolic links; reparse points (Windows symbolic links,
//! junctions, deduplicated or cloud files) are listed as "other" and not followed; files stored with NTFS compression or EFS
//! encryption are listed but refused to read (the crate would return their stored bytes).

use std::cell::RefCell;
use std::io::{self, Read, SeekFrom};

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::{NtfsFileAttributeFlags, NtfsFileNamespace};
use ntfs::{Ntfs, NtfsAttributeFlags, NtfsError, NtfsFile, NtfsReadSeek, NtfsTime};

use super::view::RangeReader;
use super::{FileEntry, FileKind, Volume};
use crate::{Error, Result};

/// File records below this are the file system's own metadata files.
const FIRST_USER_RECORD: u64 = 16;

/// 100 ns intervals from 1601-01-01 (NTFS times) to 1970-01-01.
const UNIX_EPOCH_NT: i64 = 116_444_736_000_000_000;

/// An opened NTFS file system.
pub(crate) struct NtfsVolume {
    ntfs: Ntfs,
    disk: RefCell<RangeReader>,
    label: Option<String>,
}

impl NtfsVolume {
    /// Opens the NTFS file system behind `r`.
    pub(crate) fn open(mut r: RangeReader, what: &str) -> Result<Self> {
        let damaged =
            |e: NtfsError| Error::Refused(format!("{what}: the NTFS file system is damaged: {e}"));
        let mut ntfs = Ntfs::new(&mut r).map_err(damaged)?;
        ntfs.read_upcase_table(&mut r).map_err(damaged)?;
        let label = match ntfs.volume_name(&mut r) {
            Some(Ok(name)) => Some(name.name().to_string_lossy()),
            _ => None,
        };
        Ok(NtfsVolume {
            ntfs,
            disk: RefCell::new(r),
            label: label.filter(|l| !l.is_empty()),
        })
    }

    fn err(&self, path: &str, e: NtfsError) -> Error {
        Error::Refused(format!("{path}: cannot read the NTFS file system: {e}"))
    }

    /// The file record at `path`, looked up from the root (names compare as Windows does,
    /// without regard to case).
    fn file(&self, path: &str) -> Result<NtfsFile<'_>> {
        let fs = &mut *self.disk.borrow_mut();
        let mut file = (self.ntfs.root_directory(fs)).map_err(|e| self.err(path, e))?;
        for name in path.split('/').filter(|c| !c.is_empty()) {
            if !file.is_directory() {
                return Err(Error::Refused(format!(
                    "{path}: not a directory on the way"
                )));
            }
            let index = file.directory_index(fs).map_err(|e| self.err(path, e))?;
            let mut finder = index.finder();
            let entry = NtfsFileNameIndex::find(&mut finder, &self.ntfs, fs, name)
                .ok_or_else(|| super::not_found(path))?
                .map_err(|e| self.err(path, e))?;
            if entry.file_reference().file_record_number() < FIRST_USER_RECORD {
                return Err(super::not_found(path));
            }
            let next = entry.to_file(&self.ntfs, fs);
            file = next.map_err(|e| self.err(path, e))?;
        }
        Ok(file)
    }

    /// The entry of `file`, named `name`.
    fn entry(&self, name: String, file: &NtfsFile<'_>, path: &str) -> Result<FileEntry> {
        let fs = &mut *self.disk.borrow_mut();
        let info = file.info().map_err(|e| self.err(path, e))?;
        let attributes = info.file_attributes();
        let kind = if attributes.contains(NtfsFileAttributeFlags::REPARSE_POINT) {
            FileKind::Other
        } else if file.is_directory() {
            FileKind::Dir
        } else {
            FileKind::File
        };
        let mut size = match (kind, file.data(fs, "")) {
            (FileKind::File, Some(item)) => {
                let item = item.map_err(|e| self.err(path, e))?;
                (item.to_attribute().map_err(|e| self.err(path, e))?).value_length()
            }
            _ => 0,
        };
        let mut kind = kind;
        if kind == FileKind::File && attributes.contains(NtfsFileAttributeFlags::SYSTEM) {
            if let Some(target) = interix_link(file, fs, size).map_err(|e| self.err(path, e))? {
                kind = FileKind::Symlink;
                size = target.len() as u64;
            }
        }
        let read_only = attributes.contains(NtfsFileAttributeFlags::READ_ONLY);
        Ok(FileEntry {
            name,
            kind,
            size,
            mode: match (kind, read_only) {
                (FileKind::Dir, _) => 0o755,
                (FileKind::Symlink, _) => 0o777,
                (_, false) => 0o644,
                (_, true) => 0o444,
            },
            mtime: time(info.modification_time()),
            atime: time(info.access_time()),
            link: (kind == FileKind::File).then(|| file.file_record_number()),
            ..FileEntry::default()
        })
    }
}

/// Seconds and nanoseconds since the Unix epoch of an NTFS time.
fn time(t: NtfsTime) -> (i64, u32) {
    let since = i64::try_from(t.nt_timestamp()).unwrap_or(i64::MAX) - UNIX_EPOCH_NT;
    let nanos = u32::try_from(since.rem_euclid(10_000_000) * 100).expect("below 10^9");
    (since.div_euclid(10_000_000), nanos)
}

impl Volume for NtfsVolume {
    fn kind(&self) -> &'static str {
        "ntfs"
    }

    fn label(&self) -> Option<String> {
        self.label.clone()
    }

    fn has_owners(&self) -> bool {
        false
    }

    fn stat(&self, path: &str) -> Result<FileEntry> {
        let file = self.file(path)?;
        let name = path.rsplit('/').next().unwrap_or_default().to_string();
        self.entry(name, &file, path)
    }

    fn list(&self, path: &str) -> Result<Vec<FileEntry>> {
        let dir = self.file(path)?;
        if !dir.is_directory() {
            return Err(super::not_a_directory(path));
        }
        let mut files = Vec::new();
        {
            let fs = &mut *self.disk.borrow_mut();
            let index = dir.directory_index(fs).map_err(|e| self.err(path, e))?;
            let mut entries = index.entries();
            while let Some(e) = entries.next(fs) {
                let e = e.map_err(|e| self.err(path, e))?;
                let key = e
                    .key()
                    .ok_or_else(|| self.err(path, NtfsError::Io(bad_entry())));
                let key = key?.map_err(|e| self.err(path, e))?;
                let record = e.file_reference().file_record_number();
                if key.namespace() == NtfsFileNamespace::Dos || record < FIRST_USER_RECORD {
                    continue;
                }
                let file = e.to_file(&self.ntfs, fs).map_err(|e| self.err(path, e))?;
                files.push((key.name().to_string_lossy(), file));
            }
        }
        let mut out = Vec::with_capacity(files.len());
        for (name, file) in files {
            out.push(self.entry(name, &file, path)?);
        }
        Ok(out)
    }

    fn open(&self, path: &str) -> Result<Box<dyn super::FileData + '_>> {
        let mut at = path.to_string();
        let mut hops = 0;
        let (file, e) = loop {
            let file = self.file(&at)?;
            let e = self.entry(String::new(), &file, &at)?;
            if e.kind != FileKind::Symlink {
                break (file, e);
            }
            hops += 1;
            if hops > MAX_LINKS {
                return Err(Error::Refused(format!(
                    "{path}: more than {MAX_LINKS} symbolic links in a row"
                )));
            }
            let target = self.read_link(&at)?;
            let parent = at.rsplit_once('/').map_or("", |(p, _)| p);
            at = normalize(&format!("{parent}/{target}"), target.starts_with('/'));
        };
        let path = at.as_str();
        match e.kind {
            FileKind::Dir => return Err(Error::Refused(format!("{path} is a directory"))),
            FileKind::Other => {
                return Err(Error::Refused(format!(
                    "{path} is an NTFS reparse point (a symbolic link, junction or offloaded file); it holds no data to read here"
                )))
            }
            _ => {}
        }
        let fs = &mut *self.disk.borrow_mut();
        if let Some(item) = file.data(fs, "") {
            let item = item.map_err(|e| self.err(path, e))?;
            let flags = (item.to_attribute().map_err(|e| self.err(path, e))?).flags();
            if flags.intersects(NtfsAttributeFlags::COMPRESSED | NtfsAttributeFlags::ENCRYPTED) {
                return Err(Error::Refused(format!(
                    "{path} is stored with NTFS compression or encryption, which mover does not decode; export the snapshot with `mover serve` and mount it to read it"
                )));
            }
        }
        Ok(Box::new(FileReader {
            vol: self,
            record: file.file_record_number(),
            pos: 0,
            len: e.size,
        }))
    }

    fn read_link(&self, path: &str) -> Result<String> {
        let file = self.file(path)?;
        let fs = &mut *self.disk.borrow_mut();
        let size = match file.data(fs, "") {
            Some(item) => {
                let item = item.map_err(|e| self.err(path, e))?;
                (item.to_attribute().map_err(|e| self.err(path, e))?).value_length()
            }
            None => 0,
        };
        interix_link(&file, fs, size)
            .map_err(|e| self.err(path, e))?
            .ok_or_else(|| Error::Refused(format!("{path} is not a symbolic link")))
    }
}

/// Symbolic links followed in a row before `open` gives up (as Linux does).
const MAX_LINKS: u32 = 40;

/// `path` with `.` and `..` resolved (`..` at the root stays there); `from_root` drops what
/// comes before the target's leading slash.
fn normalize(path: &str, from_root: bool) -> String {
    let path = match (from_root, path.split_once("//")) {
        (true, Some((_, abs))) => abs,
        _ => path,
    };
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

/// Magic of an Interix (Services for Unix) symbolic link: a system file holding this, then
/// the target in UTF-16LE. `ntfs-3g` makes symbolic links this way.
const INTERIX_LINK: &[u8; 8] = b"IntxLNK\x01";

/// The target of `file` when it is an Interix symbolic link of `size` bytes.
fn interix_link(
    file: &NtfsFile<'_>,
    fs: &mut RangeReader,
    size: u64,
) -> std::result::Result<Option<String>, NtfsError> {
    // PATH_MAX UTF-16 units at most.
    if size <= 8 || size > 8 + 2 * 4096 || !size.is_multiple_of(2) {
        return Ok(None);
    }
    let Some(item) = file.data(fs, "") else {
        return Ok(None);
    };
    let item = item?;
    let attribute = item.to_attribute()?;
    let mut value = attribute.value(fs)?;
    let mut bytes = vec![0u8; usize::try_from(size).expect("at most 8 KiB")];
    let mut at = 0;
    while at < bytes.len() {
        match value.read(fs, &mut bytes[at..])? {
            0 => return Ok(None),
            n => at += n,
        }
    }
    if &bytes[..8] != INTERIX_LINK {
        return Ok(None);
    }
    let units: Vec<u16> = (bytes[8..].chunks_exact(2))
        .map(|c| chunker::le::u16_at(c, 0))
        .collect();
    Ok(Some(String::from_utf16_lossy(&units)))
}

fn bad_entry() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "a directory entry without a name",
    )
}

/// The unnamed data stream of one file, read in order. Each read looks the stream up from
/// the file record again (the crate's values borrow the record), which costs one record read
/// from the buffered view per call; callers read in large pieces.
struct FileReader<'v> {
    vol: &'v NtfsVolume,
    record: u64,
    pos: u64,
    len: u64,
}

impl super::FileData for FileReader<'_> {}

impl Read for FileReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || out.is_empty() {
            return Ok(0);
        }
        let fs = &mut *self.vol.disk.borrow_mut();
        let file = (self.vol.ntfs.file(fs, self.record)).map_err(io::Error::other)?;
        let item = file.data(fs, "").ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "the file lost its data stream")
        })?;
        let item = item.map_err(io::Error::other)?;
        let attribute = item.to_attribute().map_err(io::Error::other)?;
        let mut value = attribute.value(fs).map_err(io::Error::other)?;
        value
            .seek(fs, SeekFrom::Start(self.pos))
            .map_err(io::Error::other)?;
        let n = value.read(fs, out).map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_resolve_against_their_directory() {
        assert_eq!(normalize("/home/user/../../etc/fstab", false), "/etc/fstab");
        assert_eq!(normalize("/a/./b//c", false), "/a/b/c");
        assert_eq!(normalize("/../x", false), "/x");
        assert_eq!(normalize("/home/user//etc/hosts", true), "/etc/hosts");
    }

    #[test]
    fn ntfs_times_count_from_1601_in_100_ns() {
        assert_eq!(time(NtfsTime::from(116_444_736_000_000_000)), (0, 0));
        assert_eq!(
            time(NtfsTime::from(116_444_736_000_000_000 + 17_000_000_123)),
            (1700, 12_300)
        );
        assert_eq!(time(NtfsTime::from(116_444_735_990_000_000)), (-1, 0));
    }
}

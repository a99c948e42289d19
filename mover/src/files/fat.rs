//! FAT12, FAT16 and FAT32 through `fatfs`, over a view that refuses every write.
//!
//! FAT keeps no owner, no permission bits and local times without a zone: entries show
//! mode 0755 (directories) or 0644 (files; 0444 when read-only), owner 0, and times read as
//! UTC, to the 2 seconds FAT records.

use std::io;

use fatfs::{DirEntry, FatType, FileSystem, FsOptions};

use super::view::{RangeReader, ReadOnly};
use super::{FileEntry, FileKind, Volume};
use crate::{Error, Result};

type Disk = ReadOnly<RangeReader>;

/// An opened FAT file system.
pub(crate) struct FatVolume {
    fs: FileSystem<Disk>,
}

impl FatVolume {
    /// Opens the FAT file system behind `r`.
    pub(crate) fn open(r: RangeReader, what: &str) -> Result<Self> {
        let fs = FileSystem::new(ReadOnly(r), FsOptions::new().update_accessed_date(false))
            .map_err(|e| Error::Refused(format!("{what}: the FAT file system is damaged: {e}")))?;
        Ok(FatVolume { fs })
    }

    /// The entry named by `path` ("/a/b"), from its parent directory.
    fn find(&self, path: &str) -> Result<DirEntry<'_, Disk>> {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let dir = self.dir(parent)?;
        for e in dir.iter() {
            let e = e.map_err(|e| self.err(path, e))?;
            if e.file_name().eq_ignore_ascii_case(name) {
                return Ok(e);
            }
        }
        Err(super::not_found(path))
    }

    fn dir(&self, path: &str) -> Result<fatfs::Dir<'_, Disk>> {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() {
            return Ok(self.fs.root_dir());
        }
        self.fs
            .root_dir()
            .open_dir(rel)
            .map_err(|e| self.err(path, e))
    }

    fn err(&self, path: &str, e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::NotFound => super::not_found(path),
            _ => Error::Refused(format!("{path}: cannot read the FAT file system: {e}")),
        }
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn seconds(d: fatfs::Date, t: fatfs::Time) -> (i64, u32) {
    let days = days_from_civil(i64::from(d.year), i64::from(d.month), i64::from(d.day));
    let secs = i64::from(t.hour) * 3600 + i64::from(t.min) * 60 + i64::from(t.sec);
    (days * 86_400 + secs, u32::from(t.millis) * 1_000_000)
}

fn entry(e: &DirEntry<'_, Disk>) -> FileEntry {
    let dir = e.is_dir();
    let read_only = e.attributes().contains(fatfs::FileAttributes::READ_ONLY);
    let m = e.modified();
    let zero = fatfs::Time {
        hour: 0,
        min: 0,
        sec: 0,
        millis: 0,
    };
    FileEntry {
        name: e.file_name(),
        kind: if dir { FileKind::Dir } else { FileKind::File },
        size: if dir { 0 } else { e.len() },
        mode: match (dir, read_only) {
            (true, _) => 0o755,
            (false, false) => 0o644,
            (false, true) => 0o444,
        },
        mtime: seconds(m.date, m.time),
        atime: seconds(e.accessed(), zero),
        ..FileEntry::default()
    }
}

impl Volume for FatVolume {
    fn kind(&self) -> &'static str {
        match self.fs.fat_type() {
            FatType::Fat12 => "fat12",
            FatType::Fat16 => "fat16",
            FatType::Fat32 => "fat32",
        }
    }

    fn has_owners(&self) -> bool {
        false
    }

    fn label(&self) -> Option<String> {
        let from_root = self.fs.read_volume_label_from_root_dir().ok().flatten();
        let l = from_root.unwrap_or_else(|| self.fs.volume_label());
        let l = l.trim_end().to_string();
        (!l.is_empty() && l != "NO NAME").then_some(l)
    }

    fn stat(&self, path: &str) -> Result<FileEntry> {
        if path.trim_matches('/').is_empty() {
            return Ok(FileEntry {
                kind: FileKind::Dir,
                mode: 0o755,
                ..FileEntry::default()
            });
        }
        Ok(entry(&self.find(path)?))
    }

    fn list(&self, path: &str) -> Result<Vec<FileEntry>> {
        if self.stat(path)?.kind != FileKind::Dir {
            return Err(super::not_a_directory(path));
        }
        let mut out = Vec::new();
        for e in self.dir(path)?.iter() {
            let e = e.map_err(|e| self.err(path, e))?;
            let name = e.file_name();
            if name != "." && name != ".." {
                out.push(entry(&e));
            }
        }
        Ok(out)
    }

    fn open(&self, path: &str) -> Result<Box<dyn super::FileData + '_>> {
        let e = self.find(path)?;
        if e.is_dir() {
            return Err(Error::Refused(format!("{path} is a directory")));
        }
        Ok(Box::new(super::Plain(e.to_file())))
    }

    fn read_link(&self, path: &str) -> Result<String> {
        Err(Error::Refused(format!("{path} is not a symbolic link")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_count_days_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
    }
}

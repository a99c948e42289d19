use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};

use chunker::{Extent, ExtentKind};

use crate::{sys, Error, Result};

/// A disk to back up.
///
/// # Contract
///
/// - `len` is fixed for the life of the source.
/// - `extents` yields sorted, non-overlapping extents; regions it does not cover are data.
///   Holes are `Zero` and are never read.
/// - `read_at` fills the whole buffer or fails; it is called from many threads at once.
pub trait Source: Send + Sync {
    /// Size in bytes.
    fn len(&self) -> u64;
    /// True when the source is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// What is known about each region (allocation).
    fn extents(&self) -> Result<Box<dyn Iterator<Item = Result<Extent>> + Send + '_>>;
    /// Positional read of `buf.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// The bytes at `offset..offset + len` without copying them, when the source is mapped in
    /// memory; `None` means use [`Source::read_at`].
    fn slice_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let _ = (offset, len);
        None
    }
    /// Says that a range obtained from [`Source::slice_at`] is no longer used, so its memory
    /// can be released.
    fn release(&self, offset: u64, len: usize) {
        let _ = (offset, len);
    }
}

/// What a path points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A regular (image) file.
    File,
    /// A block device.
    BlockDevice,
    /// A pipe, FIFO or character device: a stream of unknown length.
    Stream,
}

/// Stdin as a file of its own (a duplicate of descriptor 0), to read as a stream.
pub fn stdin_file() -> Result<File> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::Source {
            path: "stdin".into(),
            source: e,
        })?;
    Ok(File::from(fd))
}

/// A raw image file or a block device.
pub struct FileSource {
    file: File,
    path: String,
    len: u64,
    kind: SourceKind,
    map: Option<sys::Mapping>,
}

impl FileSource {
    /// Opens `path` read-only and finds its size (from the device for block devices).
    pub fn open(path: &str) -> Result<Self> {
        let err = |source| Error::Source {
            path: path.to_string(),
            source,
        };
        let mut file = File::open(path).map_err(err)?;
        let ft = file.metadata().map_err(err)?.file_type();
        let kind = if ft.is_file() {
            SourceKind::File
        } else if ft.is_block_device() {
            SourceKind::BlockDevice
        } else {
            SourceKind::Stream
        };
        let len = match kind {
            SourceKind::File => file.metadata().map_err(err)?.len(),
            // stat reports 0 for devices; seeking to the end asks the device itself.
            SourceKind::BlockDevice => file.seek(SeekFrom::End(0)).map_err(err)?,
            SourceKind::Stream => 0,
        };
        // Regular files are read through a memory map (no copy); when mapping fails (some
        // filesystems cannot), positional reads do the same job.
        let map = match kind {
            SourceKind::File => sys::Mapping::new(&file, len).unwrap_or_else(|e| {
                tracing::debug!("not mapping {path}: {e}");
                None
            }),
            _ => None,
        };
        Ok(FileSource {
            file,
            path: path.to_string(),
            len,
            kind,
            map,
        })
    }

    /// What the path points at.
    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// Gives the open file back (to read a stream from it).
    pub fn into_file(self) -> File {
        self.file
    }

    fn allocation(&self) -> Result<Vec<Extent>> {
        let mut out = Vec::new();
        let mut pos = 0;
        let push = |out: &mut Vec<Extent>, offset, end, kind| {
            if end > offset {
                out.push(Extent {
                    offset,
                    len: end - offset,
                    kind,
                });
            }
        };
        while pos < self.len {
            let data = match sys::seek_data(&self.file, pos) {
                Ok(d) => d.unwrap_or(self.len).min(self.len),
                // No SEEK_DATA support (some filesystems): everything is data.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    return Ok(vec![Extent {
                        offset: 0,
                        len: self.len,
                        kind: ExtentKind::Data,
                    }])
                }
                Err(source) => {
                    return Err(Error::Source {
                        path: self.path.clone(),
                        source,
                    })
                }
            };
            push(&mut out, pos, data, ExtentKind::Zero);
            if data >= self.len {
                break;
            }
            let hole = sys::seek_hole(&self.file, data)
                .map_err(|source| Error::Source {
                    path: self.path.clone(),
                    source,
                })?
                .unwrap_or(self.len)
                .min(self.len);
            push(&mut out, data, hole, ExtentKind::Data);
            pos = hole;
        }
        Ok(out)
    }
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn extents(&self) -> Result<Box<dyn Iterator<Item = Result<Extent>> + Send + '_>> {
        let extents = match self.kind {
            SourceKind::File => self.allocation()?,
            _ => vec![Extent {
                offset: 0,
                len: self.len,
                kind: ExtentKind::Data,
            }],
        };
        Ok(Box::new(extents.into_iter().map(Ok)))
    }

    fn slice_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let map = self.map.as_ref()?.as_slice();
        let start = usize::try_from(offset).ok()?;
        map.get(start..start.checked_add(len)?)
    }

    fn release(&self, offset: u64, len: usize) {
        if let (Some(map), Ok(offset)) = (&self.map, usize::try_from(offset)) {
            map.release(offset, len);
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|source| {
            if source.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::SourceShrank {
                    path: self.path.clone(),
                    offset,
                    len: self.len,
                }
            } else {
                Error::Source {
                    path: self.path.clone(),
                    source,
                }
            }
        })
    }
}

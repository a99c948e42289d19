//! Byte views over a snapshot disk for the file-system readers: a `Read + Seek` window over a
//! range of a [`SnapshotReader`], and a wrapper that refuses every write for readers whose
//! API wants `Write` too (the snapshot is never written).

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use crate::SnapshotReader;

/// Bytes kept from the last small read: file-system readers often read a directory entry or
/// a sector at a time, and the chunk cache behind costs a lock per call.
const BUFFER: u64 = 64 << 10;

/// A window `start..start + len` of a snapshot disk, read sequentially or at random.
pub(crate) struct RangeReader {
    reader: Arc<SnapshotReader>,
    start: u64,
    len: u64,
    pos: u64,
    buf: Vec<u8>,
    /// Offset (within the window) of `buf[0]`.
    buf_at: u64,
    /// Reads fetch only their own chunks, never ahead (see [`RangeReader::planned`]).
    planned: bool,
}

impl RangeReader {
    /// The window `start..start + len` of `reader` (clipped to the disk).
    pub(crate) fn new(reader: Arc<SnapshotReader>, start: u64, len: u64) -> Self {
        let len = len.min(reader.len().saturating_sub(start));
        RangeReader {
            reader,
            start,
            len,
            pos: 0,
            buf: Vec::new(),
            buf_at: 0,
            planned: false,
        }
    }

    /// A second reader of the same window, with a buffer of its own (and the same way of
    /// reading).
    pub(crate) fn sibling(&self) -> Self {
        RangeReader {
            planned: self.planned,
            ..RangeReader::new(Arc::clone(&self.reader), self.start, self.len)
        }
    }

    /// This reader, for a reader of metadata that knows where it reads (directories and
    /// inodes by number): its reads are never taken for a stream to fetch ahead of
    /// ([`SnapshotReader::read_planned`]). Without it, a few inodes read in a row of the same
    /// table look sequential, and the readahead window (a quarter of the memory budget)
    /// is fetched and decoded for a `cat` of one small file.
    pub(crate) fn planned(mut self) -> Self {
        self.planned = true;
        self
    }

    /// Length of the window.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The end of a read of `len` bytes at `offset`; a read past the window's end is refused.
    fn end_of(&self, offset: u64, len: usize) -> io::Result<u64> {
        offset
            .checked_add(len as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {len} bytes at {offset} is past the end of the area ({} bytes)",
                        self.len
                    ),
                )
            })
    }

    /// Fills `out` from `offset` within the window; reads past its end are refused.
    pub(crate) fn read_exact_at(&mut self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let end = self.end_of(offset, out.len())?;
        let buffered = self.buf_at..self.buf_at + self.buf.len() as u64;
        if buffered.contains(&offset) && end <= buffered.end {
            let from = (offset - self.buf_at) as usize;
            out.copy_from_slice(&self.buf[from..from + out.len()]);
            return Ok(());
        }
        if out.len() as u64 >= BUFFER {
            return self.read_disk(offset, out);
        }
        let at = offset / BUFFER * BUFFER;
        let want = (end - at).max(BUFFER).min(self.len - at);
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(want as usize, 0);
        self.read_disk(at, &mut buf)?;
        let from = (offset - at) as usize;
        out.copy_from_slice(&buf[from..from + out.len()]);
        self.buf = buf;
        self.buf_at = at;
        Ok(())
    }

    /// Fills `out` from `offset` within the window without going through the buffer, and
    /// without fetching ahead ([`SnapshotReader::read_planned`]): for a file reader that
    /// reads each byte once and plans its own readahead with [`RangeReader::prefetch`].
    pub(crate) fn read_planned(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.end_of(offset, out.len())?;
        self.reader
            .read_planned(self.start + offset, out)
            .map_err(io::Error::other)
    }

    /// Fetches `offset..end` of the window ahead of a planned reader.
    pub(crate) fn prefetch(&self, offset: u64, end: u64) {
        self.reader
            .prefetch(self.start + offset, self.start + end.min(self.len));
    }

    /// The largest chunk of the disk, bytes.
    pub(crate) fn max_chunk(&self) -> u64 {
        self.reader.max_chunk()
    }

    /// The reader's readahead window, bytes.
    pub(crate) fn window(&self) -> u64 {
        self.reader.window()
    }

    /// The caller is done with `offset..end` of the window ([`SnapshotReader::forget`]).
    pub(crate) fn forget(&self, offset: u64, end: u64) {
        self.reader
            .forget(self.start + offset, self.start + end.min(self.len));
    }

    fn read_disk(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let at = self.start + offset;
        if self.planned {
            self.reader.read_planned(at, out)
        } else {
            self.reader.read_at(at, out)
        }
        .map_err(io::Error::other)
    }
}

impl Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = (out.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        self.read_exact_at(self.pos, &mut out[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RangeReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

impl ext4_view::Ext4Read for RangeReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(self.read_exact_at(start_byte, dst)?)
    }
}

/// A `Read + Seek` that also claims `Write` for readers that demand it, and refuses every
/// write: whatever a file-system library tries, the snapshot stays as it was backed up.
pub(crate) struct ReadOnly<T>(pub(crate) T);

impl<T: Read> Read for ReadOnly<T> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.0.read(out)
    }
}

impl<T: Seek> Seek for ReadOnly<T> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.0.seek(to)
    }
}

impl<T> Write for ReadOnly<T> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "a snapshot is read-only",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

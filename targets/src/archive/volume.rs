//! Where archive records go and where they come back from: the [`VolumeSink`] and
//! [`VolumeSource`] seams, a sink for any `Write` (pipe, stdout, file, tape device), numbered
//! volume files (`NAME.000`, `NAME.001`, …) and an emulated tape drive for tests.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// What a sink reports after writing a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// The record is written; there is room for more.
    Ok,
    /// The record is written, but the medium is near its end (a tape's early warning): the
    /// writer ends the volume at the next frame boundary.
    NearEnd,
}

/// A sequential medium that takes fixed-size records, one volume after another.
///
/// # Contract
///
/// - `write_record` writes one whole record (`record.len()` is the archive's block size).
///   An error of kind [`io::ErrorKind::StorageFull`] (`ENOSPC`, end of medium) means the
///   volume is full; the writer then calls `finish_volume` and `next_volume` and writes the
///   unfinished frames again. Bytes of the failed record that did reach the medium are
///   harmless (a reader drops them), but a sink that can remove them should. Any other error
///   fails the archive.
/// - `finish_volume` makes the current volume complete and durable (flush, fsync); it is
///   called once per volume, before `next_volume` and at the end of the archive.
/// - `next_volume(n)` starts volume `n` (1, 2, …). This is the moment to ask for a new medium
///   (run a changer hook, ask an operator); an error ends the archive with that error.
/// - Sinks are used from one thread; dropping one without `finish_volume` may lose the
///   records of the current volume that were not yet flushed.
pub trait VolumeSink {
    /// Writes one record.
    fn write_record(&mut self, record: &[u8]) -> io::Result<Written>;
    /// Ends the current volume.
    fn finish_volume(&mut self) -> io::Result<()>;
    /// Starts volume `number`.
    fn next_volume(&mut self, number: u32) -> io::Result<()>;
    /// Where the records go, for messages (a path, `stdout`, a device).
    fn location(&self) -> String;
}

impl<S: VolumeSink + ?Sized> VolumeSink for &mut S {
    fn write_record(&mut self, record: &[u8]) -> io::Result<Written> {
        (**self).write_record(record)
    }
    fn finish_volume(&mut self) -> io::Result<()> {
        (**self).finish_volume()
    }
    fn next_volume(&mut self, number: u32) -> io::Result<()> {
        (**self).next_volume(number)
    }
    fn location(&self) -> String {
        (**self).location()
    }
}

impl<S: VolumeSink + ?Sized> VolumeSink for Box<S> {
    fn write_record(&mut self, record: &[u8]) -> io::Result<Written> {
        (**self).write_record(record)
    }
    fn finish_volume(&mut self) -> io::Result<()> {
        (**self).finish_volume()
    }
    fn next_volume(&mut self, number: u32) -> io::Result<()> {
        (**self).next_volume(number)
    }
    fn location(&self) -> String {
        (**self).location()
    }
}

type NextWriter<W> = Box<dyn FnMut(u32) -> io::Result<W> + Send>;

/// A sink over any [`Write`]: a pipe, stdout, a file, or a tape device opened in fixed-block
/// mode (each record is one `write`). Without a next-volume callback it holds one volume, and a
/// full medium fails the archive; a broken pipe is always an error.
pub struct StreamSink<W: Write> {
    out: W,
    location: String,
    next: Option<NextWriter<W>>,
}

impl<W: Write> StreamSink<W> {
    /// One volume on `out`; `location` names it in messages.
    pub fn new(out: W, location: impl Into<String>) -> Self {
        StreamSink {
            out,
            location: location.into(),
            next: None,
        }
    }

    /// Volumes on a medium that can be changed: when one is full, `next(n)` is called to get
    /// the writer for volume `n` (after running a changer hook or asking an operator).
    pub fn with_next_volume(
        out: W,
        location: impl Into<String>,
        next: impl FnMut(u32) -> io::Result<W> + Send + 'static,
    ) -> Self {
        StreamSink {
            out,
            location: location.into(),
            next: Some(Box::new(next)),
        }
    }

    /// The writer of the current volume.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl StreamSink<File> {
    /// Standard output without Rust's line buffering (a duplicate of descriptor 1), so each
    /// record is exactly one `write`, as a tape device behind a shell redirect requires.
    pub fn stdout() -> io::Result<Self> {
        use std::os::fd::AsFd;
        let fd = io::stdout().as_fd().try_clone_to_owned()?;
        Ok(StreamSink::new(File::from(fd), "stdout"))
    }
}

impl<W: Write> VolumeSink for StreamSink<W> {
    fn write_record(&mut self, record: &[u8]) -> io::Result<Written> {
        self.out.write_all(record)?;
        Ok(Written::Ok)
    }
    fn finish_volume(&mut self) -> io::Result<()> {
        self.out.flush()
    }
    fn next_volume(&mut self, number: u32) -> io::Result<()> {
        let Some(next) = self.next.as_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "the medium is full and this output takes no further volume",
            ));
        };
        self.out = next(number)?;
        Ok(())
    }
    fn location(&self) -> String {
        self.location.clone()
    }
}

type NextHook = Box<dyn FnMut(u32, &Path) -> io::Result<()> + Send>;

/// Volumes as numbered files: `NAME.000`, `NAME.001`, … Each file is created new (an existing
/// one is an error, so an old volume set is never half overwritten) and synced when its volume
/// ends. A partial record left by `ENOSPC` is cut off again.
pub struct FileVolumes {
    base: PathBuf,
    file: File,
    path: PathBuf,
    len: u64,
    hook: Option<NextHook>,
}

impl FileVolumes {
    /// The path of volume `number` of the set named `base`.
    pub fn volume_path(base: &Path, number: u32) -> PathBuf {
        let mut name = base.as_os_str().to_owned();
        name.push(format!(".{number:03}"));
        PathBuf::from(name)
    }

    /// Creates `base.000`.
    pub fn create(base: impl Into<PathBuf>) -> io::Result<Self> {
        let base = base.into();
        let path = Self::volume_path(&base, 0);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(FileVolumes {
            base,
            file,
            path,
            len: 0,
            hook: None,
        })
    }

    /// Calls `hook(number, path)` before each further volume file is created (to free space,
    /// change disks or tell an operator); an error from it fails the archive.
    pub fn on_next_volume(
        &mut self,
        hook: impl FnMut(u32, &Path) -> io::Result<()> + Send + 'static,
    ) -> &mut Self {
        self.hook = Some(Box::new(hook));
        self
    }
}

impl VolumeSink for FileVolumes {
    fn write_record(&mut self, record: &[u8]) -> io::Result<Written> {
        if let Err(e) = self.file.write_all(record) {
            if e.kind() == io::ErrorKind::StorageFull {
                // Best effort: the reader copes with a partial record anyway.
                let _ = self.file.set_len(self.len);
            }
            return Err(e);
        }
        self.len += record.len() as u64;
        Ok(Written::Ok)
    }
    fn finish_volume(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }
    fn next_volume(&mut self, number: u32) -> io::Result<()> {
        let path = Self::volume_path(&self.base, number);
        if let Some(hook) = self.hook.as_mut() {
            hook(number, &path)?;
        }
        self.file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        self.path = path;
        self.len = 0;
        Ok(())
    }
    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

/// A test double of a tape drive in fixed-block mode: each tape takes `blocks_per_tape`
/// blocks of exactly `block_size` bytes and then fails with `ENOSPC`; with an early warning
/// at `warn_after` blocks, writes from there on succeed but report [`Written::NearEnd`].
/// A write of any other size is refused, as a drive in fixed-block mode would.
#[derive(Clone, Debug)]
pub struct EmulatedTape {
    block_size: usize,
    blocks_per_tape: u64,
    warn_after: Option<u64>,
    tapes: Vec<Vec<u8>>,
}

impl EmulatedTape {
    /// An empty drive with one blank tape loaded.
    pub fn new(block_size: u32, blocks_per_tape: u64, warn_after: Option<u64>) -> Self {
        EmulatedTape {
            block_size: block_size as usize,
            blocks_per_tape,
            warn_after,
            tapes: vec![Vec::new()],
        }
    }

    /// The tapes written so far, in order.
    pub fn tapes(&self) -> &[Vec<u8>] {
        &self.tapes
    }
}

impl VolumeSink for EmulatedTape {
    fn write_record(&mut self, record: &[u8]) -> io::Result<Written> {
        if record.len() != self.block_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}-byte write to a tape with {}-byte blocks",
                    record.len(),
                    self.block_size
                ),
            ));
        }
        let tape = self.tapes.last_mut().expect("a tape is loaded");
        let blocks = (tape.len() / self.block_size) as u64;
        if blocks >= self.blocks_per_tape {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "end of tape (ENOSPC)",
            ));
        }
        tape.extend_from_slice(record);
        match self.warn_after {
            Some(w) if blocks + 1 >= w => Ok(Written::NearEnd),
            _ => Ok(Written::Ok),
        }
    }
    fn finish_volume(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn next_volume(&mut self, _number: u32) -> io::Result<()> {
        self.tapes.push(Vec::new());
        Ok(())
    }
    fn location(&self) -> String {
        format!("emulated tape {}", self.tapes.len() - 1)
    }
}

/// Where a reader gets its volumes, one after another.
///
/// # Contract
///
/// `next_volume(expected)` returns the next input to read (its bytes are read to the end), or
/// `None` when there is none. `expected` is the volume number the reader hopes for next, for a
/// prompt; the reader checks the volume frames itself and reports missing, repeated or foreign
/// volumes, so a source need not. A reader asks for another volume only while its archive is
/// incomplete. Any `FnMut(u32) -> io::Result<Option<Box<dyn Read + Send>>>` is a source.
pub trait VolumeSource {
    /// The next input, or `None`.
    fn next_volume(&mut self, expected: u32) -> io::Result<Option<Box<dyn Read + Send>>>;
}

impl<F> VolumeSource for F
where
    F: FnMut(u32) -> io::Result<Option<Box<dyn Read + Send>>>,
{
    fn next_volume(&mut self, expected: u32) -> io::Result<Option<Box<dyn Read + Send>>> {
        self(expected)
    }
}

/// The volume files of a set written by [`FileVolumes`]: every existing `NAME.NNN`, in
/// number order. A missing file in the middle is reported by the reader as a missing volume.
#[derive(Debug)]
pub struct FileVolumeSet {
    paths: std::vec::IntoIter<PathBuf>,
}

impl FileVolumeSet {
    /// Lists the volumes of the set named `base`; `NotFound` when there is none.
    pub fn open(base: impl AsRef<Path>) -> io::Result<Self> {
        let base = base.as_ref();
        let dir = match base.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = base
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
            .to_string_lossy()
            .into_owned();
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let file_name = entry?.file_name();
            let Some(rest) = file_name.to_str().and_then(|f| f.strip_prefix(&name)) else {
                continue;
            };
            let Some(digits) = rest.strip_prefix('.') else {
                continue;
            };
            if digits.len() >= 3 && digits.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(n) = digits.parse::<u32>() {
                    found.push((n, FileVolumes::volume_path(base, n)));
                }
            }
        }
        if found.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no volume {}.000 (or later) found", base.display()),
            ));
        }
        found.sort();
        let paths: Vec<PathBuf> = found.into_iter().map(|(_, p)| p).collect();
        Ok(FileVolumeSet {
            paths: paths.into_iter(),
        })
    }
}

impl VolumeSource for FileVolumeSet {
    fn next_volume(&mut self, _expected: u32) -> io::Result<Option<Box<dyn Read + Send>>> {
        match self.paths.next() {
            Some(p) => Ok(Some(Box::new(File::open(p)?))),
            None => Ok(None),
        }
    }
}

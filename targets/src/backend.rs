//! The object seam: a flat namespace of immutable objects under `/`-separated keys.
//!
//! The repository layout (packs, index segments, snapshots) sits on top of this trait, so a
//! new place to keep a repository (S3, …) only has to store and fetch whole objects.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Where a repository's objects live.
///
/// # Contract
///
/// - Keys are relative, `/`-separated, made of `[0-9a-z._-]` segments.
/// - [`put`](Backend::put) is atomic (a reader sees the old object or all of the new one,
///   never part of it) and durable when it returns `Ok`: a crash right after loses nothing.
/// - [`put_new`](Backend::put_new) is `put` that never replaces: `Ok(false)` when the key
///   already existed. Backends that cannot enforce this atomically document it. A backend
///   whose own earlier attempt may have landed unseen (a remote store whose answer was lost)
///   may count an object that holds exactly `data` as created (`Ok(true)`); callers create
///   only keys whose bytes say who wrote them (content-named, or holding a random id).
/// - Reads of a missing key return [`Error::NotFound`]; a range past the end of an object
///   returns [`Error::Corrupt`] (it was truncated).
/// - All methods may be called from many threads at once.
/// - Nothing is cached or buffered across calls; dropping a backend loses nothing.
pub trait Backend: Send + Sync + Debug {
    /// Where this backend stores objects, for messages.
    fn location(&self) -> &str;
    /// Stores `data` under `key`, replacing any object of that name.
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Stores `data` under `key` only if no object of that name exists.
    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool>;
    /// The whole object.
    fn get(&self, key: &str) -> Result<Vec<u8>>;
    /// `len` bytes from `offset` of the object.
    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// The same bytes as [`get_range`](Backend::get_range), handed to `piece` in order as
    /// they arrive, so that a remote backend need not gather them into one buffer first (the
    /// default hands them over in one piece). On an error some pieces may have been handed
    /// over already.
    fn get_range_pieces(
        &self,
        key: &str,
        offset: u64,
        len: usize,
        piece: &mut dyn FnMut(&[u8]),
    ) -> Result<()> {
        piece(&self.get_range(key, offset, len)?);
        Ok(())
    }
    /// Size of the object in bytes.
    fn size(&self, key: &str) -> Result<u64>;
    /// Every key below `dir` (recursively), in no particular order.
    fn list(&self, dir: &str) -> Result<Vec<String>>;
    /// Removes the object; removing a missing key is not an error.
    fn delete(&self, key: &str) -> Result<()>;
    /// When the object was last written, ms since the Unix epoch; `None` when the backend
    /// cannot tell.
    fn modified_ms(&self, key: &str) -> Result<Option<i64>> {
        self.size(key).map(|_| None)
    }
    /// Temporary objects of writes that have not finished: ones whose writer was killed, and
    /// ones a running write is filling (see [`Temporary::writer_running`] and
    /// [`Temporary::modified_ms`]). [`list`](Backend::list) never names them; each can be
    /// removed with [`delete`](Backend::delete). Backends whose writes leave nothing behind
    /// return none.
    fn temporaries(&self) -> Result<Vec<Temporary>> {
        Ok(Vec::new())
    }
    /// The lock every object written here gets (S3 Object Lock, see [`crate::lock`]);
    /// `None` where objects are not locked.
    fn lock_policy(&self) -> Result<Option<crate::lock::LockPolicy>> {
        Ok(None)
    }
    /// Until when the object may be neither deleted nor overwritten, ms since the Unix epoch;
    /// `None` when it is not locked.
    fn locked_until_ms(&self, key: &str) -> Result<Option<i64>> {
        self.size(key).map(|_| None)
    }
    /// Extends the object's lock to `until_ms` (never shortens it). Nothing where objects are
    /// not locked.
    fn extend_lock(&self, key: &str, until_ms: i64) -> Result<()> {
        let _ = (key, until_ms);
        Ok(())
    }
    /// The local file holding the object, when the backend keeps objects in local files (the
    /// index reads its segments in place: issue 17); `None` otherwise.
    fn local_file(&self, key: &str) -> Option<PathBuf> {
        let _ = key;
        None
    }
}

/// A temporary object of a write that has not finished (issue 14, item 6): no reader looks
/// at it; if its writer was killed, it only takes space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Temporary {
    /// Its key (for a local repository, the file's path below the root).
    pub key: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// When it was last written, ms since the Unix epoch; `None` when unknown.
    pub modified_ms: Option<i64>,
    /// The process that writes it is still running on this machine.
    pub writer_running: bool,
}

/// A repository in a local directory.
///
/// Writes go to a temporary file beside the target, which is fsynced, renamed into place,
/// and then the directory is fsynced: the only commit order that survives a power loss.
#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
    location: String,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Temporary files are named `.tmp-<pid>-<n>`: the writing process and a counter.
const TMP_PREFIX: &str = ".tmp-";

/// Whether the process that named a temporary file `.tmp-<pid>-<n>` still runs on this
/// machine. Unknown (no `/proc`, or a name of another shape) counts as not running: the age of
/// the file then decides.
fn tmp_writer_running(name: &str) -> bool {
    let Some(pid) = name
        .strip_prefix(TMP_PREFIX)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
    else {
        return false;
    };
    Path::new("/proc/self").exists() && Path::new("/proc").join(pid.to_string()).exists()
}

impl LocalBackend {
    /// Calls `f(key, name, entry)` for every entry below key `dir` that is not a directory,
    /// descending into directories whose names do not start with '.'; a missing `dir` (or one
    /// removed meanwhile) holds nothing.
    fn walk(&self, dir: &str, f: &mut dyn FnMut(String, &str, &fs::DirEntry)) -> Result<()> {
        let mut stack = vec![dir.to_string()];
        while let Some(d) = stack.pop() {
            let path = self.path(&d);
            let rd = match fs::read_dir(&path) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("list", &path, e)),
            };
            for entry in rd {
                let entry = entry.map_err(|e| Error::io("list", &path, e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let key = if d.is_empty() {
                    name.to_string()
                } else {
                    format!("{d}/{name}")
                };
                let ft = entry.file_type().map_err(|e| Error::io("list", &path, e))?;
                if !ft.is_dir() {
                    f(key, name, &entry);
                } else if !name.starts_with('.') {
                    stack.push(key);
                }
            }
        }
        Ok(())
    }

    /// A backend rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let location = root.display().to_string();
        LocalBackend { root, location }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Writes `data` to a fresh temporary file in `dir`, fsynced.
    fn write_temp(&self, dir: &Path, data: &[u8]) -> Result<PathBuf> {
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
        let result = (|| {
            let f = match direct_io_suits(data) {
                true => write_direct(&tmp, data),
                false => None,
            };
            let f = match f {
                Some(f) => f.map_err(|e| Error::io("write", &tmp, e))?,
                None => {
                    let mut f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&tmp)
                        .map_err(|e| Error::io("create", &tmp, e))?;
                    f.write_all(data).map_err(|e| Error::io("write", &tmp, e))?;
                    f
                }
            };
            f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))
        })();
        match result {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

/// Alignment of memory, file offsets and lengths for direct I/O: the largest logical block
/// size of common devices.
pub const DIRECT_IO_ALIGN: usize = 4096;

/// Objects at least this large whose bytes start on a [`DIRECT_IO_ALIGN`] boundary (packs: see
/// `PackBuf`) are written with direct I/O.
const DIRECT_IO_MIN: usize = 1 << 20;

fn direct_io_suits(data: &[u8]) -> bool {
    data.len() >= DIRECT_IO_MIN && (data.as_ptr() as usize).is_multiple_of(DIRECT_IO_ALIGN)
}

/// Creates `path` and writes `data` to it with direct I/O (`O_DIRECT`): the aligned bulk goes
/// from `data` to the device with no copy into the page cache, the last partial block through
/// the page cache. A pack is written once and read back only by a restore, so caching it would
/// only evict what the host uses, and the kernel's copy costs about a tenth of a backup's CPU.
///
/// `None` when the file system refuses direct I/O (tmpfs, some network and FUSE file
/// systems): nothing is left behind and the caller writes the ordinary way.
fn write_direct(path: &Path, data: &[u8]) -> Option<std::io::Result<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return None,
        Err(e) => return Some(Err(e)),
    };
    let bulk = data.len() - data.len() % DIRECT_IO_ALIGN;
    if let Err(e) = f.write_all(&data[..bulk]) {
        let _ = fs::remove_file(path);
        return match e.raw_os_error() {
            Some(libc::EINVAL) => None,
            _ => Some(Err(e)),
        };
    }
    // The tail through the page cache, by a second descriptor: direct I/O writes whole
    // blocks only. (fsync of either descriptor makes the whole file durable.)
    drop(f);
    Some(
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.write_all_at(&data[bulk..], bulk as u64).map(|()| f)),
    )
}

/// fsyncs a directory (`""` means the current one) so a rename or create in it is durable.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir).and_then(|d| d.sync_all())
}

fn sync_dir(dir: &Path) -> Result<()> {
    fsync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))
}

impl Backend for LocalBackend {
    fn location(&self) -> &str {
        &self.location
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path(key);
        let dir = path.parent().expect("a key has a parent directory");
        let tmp = self.write_temp(dir, data)?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("rename into", &path, e));
        }
        sync_dir(dir)
    }

    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool> {
        let path = self.path(key);
        let dir = path.parent().expect("a key has a parent directory");
        let tmp = self.write_temp(dir, data)?;
        // link(2) fails if the target exists: an atomic create-only publish.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => sync_dir(dir).map(|()| true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io("link into", &path, e)),
        }
    }

    fn local_file(&self, key: &str) -> Option<PathBuf> {
        Some(self.path(key))
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path(key);
        fs::read(&path).map_err(|e| Error::io("read", &path, e))
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let path = self.path(key);
        let mut f = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        // The descriptor is this call's own, so its position is ours to move; reading into
        // spare capacity spares zeroing the buffer first (a pass over every byte read).
        let mut buf = Vec::with_capacity(len);
        f.seek(std::io::SeekFrom::Start(offset))
            .and_then(|_| (&mut f).take(len as u64).read_to_end(&mut buf))
            .map_err(|e| Error::io("read", &path, e))?;
        if buf.len() < len {
            return Err(Error::Corrupt {
                what: format!("{}", path.display()),
                detail: format!("truncated: {len} bytes at offset {offset} are past its end"),
            });
        }
        Ok(buf)
    }

    fn size(&self, key: &str) -> Result<u64> {
        let path = self.path(key);
        fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| Error::io("stat", &path, e))
    }

    fn modified_ms(&self, key: &str) -> Result<Option<i64>> {
        let path = self.path(key);
        let m = fs::metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        Ok(m.modified().ok().and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as i64)
        }))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.walk(dir.trim_end_matches('/'), &mut |key, name, _| {
            // Names starting with '.' are temporary files of interrupted writes.
            if !name.starts_with('.') {
                out.push(key);
            }
        })?;
        Ok(out)
    }

    fn temporaries(&self) -> Result<Vec<Temporary>> {
        let mut out = Vec::new();
        self.walk("", &mut |key, name, entry| {
            if !name.starts_with(TMP_PREFIX) {
                return;
            }
            // Gone meanwhile: its write finished.
            let Ok(meta) = entry.metadata() else { return };
            if !meta.is_file() {
                return;
            }
            out.push(Temporary {
                key,
                bytes: meta.len(),
                modified_ms: meta.modified().ok().and_then(|t| {
                    let since = t.duration_since(std::time::UNIX_EPOCH).ok()?;
                    i64::try_from(since.as_millis()).ok()
                }),
                writer_running: tmp_writer_running(name),
            });
        })?;
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` bytes of a pattern, starting `misalign` bytes past a direct-I/O boundary.
    fn buffer(len: usize, misalign: usize) -> (Vec<u8>, usize) {
        let mut v = vec![0u8; len + DIRECT_IO_ALIGN + misalign];
        let addr = v.as_ptr() as usize;
        let start = addr.next_multiple_of(DIRECT_IO_ALIGN) - addr + misalign;
        for (i, b) in v[start..].iter_mut().enumerate() {
            *b = (i * 7 + i / 4096) as u8;
        }
        (v, start)
    }

    fn round_trips(dir: &Path) {
        let b = LocalBackend::new(dir);
        let sizes = [
            DIRECT_IO_MIN,
            DIRECT_IO_MIN + 1,
            DIRECT_IO_MIN + DIRECT_IO_ALIGN - 1,
            3 * DIRECT_IO_MIN + 12345,
            DIRECT_IO_MIN - 1,
        ];
        for (i, len) in sizes.into_iter().enumerate() {
            for misalign in [0, 16] {
                let (v, start) = buffer(len, misalign);
                let data = &v[start..start + len];
                assert_eq!(direct_io_suits(data), misalign == 0 && len >= DIRECT_IO_MIN);
                let key = format!("packs/{i}-{misalign}");
                b.put(&key, data).unwrap();
                assert!(b.get(&key).unwrap() == data, "{key}: {len} bytes");
                assert!(!b.put_new(&key, data).unwrap());
            }
        }
        let names: Vec<_> = fs::read_dir(dir.join("packs")).unwrap().collect();
        assert_eq!(names.len(), sizes.len() * 2, "no temporary file left");
    }

    #[test]
    fn large_aligned_objects_go_direct_and_read_back_whole() {
        let tmp = tempfile::tempdir().unwrap();
        round_trips(tmp.path());
    }

    #[test]
    fn objects_round_trip_on_tmpfs_too() {
        // Older kernels refuse O_DIRECT on tmpfs at open (the write falls back to the page
        // cache); newer ones take it. Either way the bytes come back whole.
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI machines have /dev/shm"
            );
            return;
        }
        let tmp = tempfile::tempdir_in(shm).unwrap();
        round_trips(tmp.path());
    }
}

//! `mover serve`: any snapshot as an NBD export, at once, with nothing restored (issue 15).
//!
//! Each disk of the snapshot is one export, named by its disk, read through one
//! [`SnapshotReader`] whose cache every connection shares. The server speaks fixed newstyle
//! NBD with `NBD_OPT_GO`/`INFO`/`LIST`, structured replies (zero chunks go out as
//! `OFFSET_HOLE`) and `base:allocation` block status answered from the manifest, so clients
//! such as `qemu-img convert` and `nbdcopy` skip holes without reading them.
//!
//! Threads, no async: one accept loop, one thread per connection. Read-only exports announce
//! `CAN_MULTI_CONN` (nothing changes, so every connection sees the same bytes). With an
//! overlay (see `serve/overlay.rs`) writes go to a sparse file of the caller's; the repository
//! is never written.
//!
//! Stopping: the accept loop polls `stop` (the SIGINT/SIGTERM flag in the binary) every few
//! milliseconds; once it is set no connection is accepted, every open connection is shut down
//! (its thread sees EOF and ends), the threads are joined, an overlay is flushed, and a unix
//! socket is removed.

// NBD's wire format is network byte order (big-endian) throughout.
#![allow(clippy::big_endian_bytes)]

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chunker::format::ObjectId;
use targets::{ChunkStore, Repository};

use crate::reader::{ReaderOptions, ReaderStats, SnapshotReader};
use crate::{Error, Result};

mod conn;
mod export;
mod overlay;
mod proto;

use export::Export;
use overlay::Overlay;

/// How often the accept loop looks at the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A unix socket at this path (created; a stale socket nobody listens on is replaced).
    Unix(PathBuf),
    /// A TCP address, `HOST:PORT` (port 0: any free port, shown in the URIs).
    Tcp(String),
}

/// `mover serve`: what to serve, and where.
#[derive(Clone, Debug)]
pub struct ServeRequest {
    /// The snapshot: an id, a unique prefix, or `latest`.
    pub snapshot: String,
    /// With `latest`: the snapshot name to choose among.
    pub name: Option<String>,
    /// Serve only this disk (default: every disk of the snapshot).
    pub disk: Option<String>,
    /// Where to listen.
    pub listen: Listen,
    /// A copy-on-write overlay file: the export becomes writable (one disk only).
    pub overlay: Option<PathBuf>,
    /// The reader's memory budget and fetch threads.
    pub reader: ReaderOptions,
}

/// One export being served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedExport {
    /// Export name (the disk's name).
    pub name: String,
    /// The NBD URI a client connects to.
    pub uri: String,
    /// Size in bytes.
    pub size: u64,
    /// Writes are refused (no overlay).
    pub read_only: bool,
}

/// What is served, reported once the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Serving {
    /// The snapshot served.
    pub snapshot: ObjectId,
    /// Its exports.
    pub exports: Vec<ServedExport>,
}

/// What one export's reader did while it was served (see [`serve`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportStats {
    /// Export name (the disk's name).
    pub name: String,
    /// Chunks fetched, cache hits, how long fetches on demand took.
    pub reader: ReaderStats,
    /// Read requests answered.
    pub reads: u64,
    /// The median of their durations, from the request read to the reply written (within
    /// 2.5 %; `None` before the first).
    pub read_p50: Option<Duration>,
    /// Their 99th percentile, likewise.
    pub read_p99: Option<Duration>,
}

/// Serves one snapshot of `repo` until `stop` returns true. `ready` is called once, when the
/// server listens, with the URIs to connect to. Returns what each export's reader did.
pub fn serve(
    repo: Arc<Repository>,
    request: &ServeRequest,
    ready: &mut dyn FnMut(&Serving),
    stop: &dyn Fn() -> bool,
) -> Result<Vec<ExportStats>> {
    let (snapshot, manifest) = repo.find_snapshot(&request.snapshot, request.name.as_deref())?;
    let short = &snapshot.to_hex()[..12];
    let disks: Vec<_> = match &request.disk {
        Some(d) => vec![manifest.disk(d).ok_or_else(|| {
            let names: Vec<_> = manifest.disks.iter().map(|d| d.name.as_str()).collect();
            Error::Usage(format!(
                "snapshot {short} has no disk {d}; its disks are {}",
                names.join(", ")
            ))
        })?],
        None => manifest.disks.iter().collect(),
    };
    if request.overlay.is_some() && disks.len() > 1 {
        let names: Vec<_> = disks.iter().map(|d| d.name.as_str()).collect();
        return Err(Error::Usage(format!(
            "an overlay serves one disk; snapshot {short} holds {}: pick one with --disk NAME",
            names.join(", ")
        )));
    }
    let store: Arc<dyn ChunkStore> = repo;
    let mut exports = Vec::with_capacity(disks.len());
    for d in disks {
        let overlay = match &request.overlay {
            Some(path) => Some(Overlay::open(path, &snapshot, &d.name, d.source_len)?),
            None => None,
        };
        exports.push(Export {
            name: d.name.clone(),
            reader: SnapshotReader::new(store.clone(), d, &request.reader),
            overlay,
            reads: crate::reader::Latencies::new(),
        });
    }
    let listener = Listener::bind(&request.listen)?;
    let serving = Serving {
        snapshot,
        exports: exports
            .iter()
            .map(|e| ServedExport {
                name: e.name.clone(),
                uri: listener.uri(&e.name),
                size: e.size(),
                read_only: e.is_read_only(),
            })
            .collect(),
    };
    ready(&serving);
    let result = run(&listener, &exports, stop);
    let stats = (exports.iter())
        .map(|e| ExportStats {
            name: e.name.clone(),
            reader: e.reader.stats(),
            reads: e.reads.count(),
            read_p50: e.reads.percentile(0.5),
            read_p99: e.reads.percentile(0.99),
        })
        .collect();
    let flushed = exports.iter().try_for_each(Export::flush);
    listener.remove();
    result?;
    flushed.map_err(|f| Error::Refused(format!("the final flush failed: {}", f.message)))?;
    Ok(stats)
}

/// The accept loop: a thread per connection, all shut down and joined when `stop` says so.
fn run(listener: &Listener, exports: &[Export], stop: &dyn Fn() -> bool) -> Result<()> {
    let open: Mutex<HashMap<u64, Conn>> = Mutex::new(HashMap::new());
    std::thread::scope(|scope| {
        let mut next = 0u64;
        let result = loop {
            if stop() {
                break Ok(());
            }
            let conn = match listener.accept() {
                Ok(Some(c)) => c,
                Ok(None) => {
                    std::thread::sleep(POLL);
                    continue;
                }
                Err(e) => break Err(e),
            };
            next += 1;
            let id = next;
            let Ok(closer) = conn.try_clone() else {
                continue;
            };
            open.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, closer);
            let open = &open;
            scope.spawn(move || {
                if let Err(e) = connection(&conn, exports) {
                    tracing::info!("NBD connection ended: {e}");
                }
                conn.shutdown();
                open.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            });
        };
        for c in open.lock().unwrap_or_else(PoisonError::into_inner).values() {
            c.shutdown();
        }
        result
    })
    .map_err(|e| Error::Refused(format!("cannot accept NBD connections: {e}")))
}

fn connection(conn: &Conn, exports: &[Export]) -> io::Result<()> {
    let mut r = BufReader::with_capacity(256 << 10, conn.try_clone()?);
    let mut w = BufWriter::with_capacity(256 << 10, conn.try_clone()?);
    let Some(session) = proto::negotiate(&mut r, &mut w, exports)? else {
        return Ok(());
    };
    // Replies are written whole, each with one vectored write: no buffer in between.
    let mut w = w.into_inner().map_err(io::IntoInnerError::into_error)?;
    conn::transmit(&mut r, &mut w, &exports[session.export], &session)
}

/// An accepted connection.
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        // Already closed is fine: all that matters is that the connection's thread wakes up.
        let _ = match self {
            Conn::Unix(s) => s.shutdown(Shutdown::Both),
            Conn::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write_vectored(bufs),
            Conn::Tcp(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl Listener {
    fn bind(listen: &Listen) -> Result<Listener> {
        let listener = match listen {
            Listen::Unix(path) => Listener::Unix(bind_unix(path)?, path.clone()),
            Listen::Tcp(addr) => Listener::Tcp(TcpListener::bind(addr).map_err(|e| {
                Error::Refused(format!(
                    "cannot listen on {addr}: {e}; pick another address or port"
                ))
            })?),
        };
        let nonblocking = match &listener {
            Listener::Unix(l, _) => l.set_nonblocking(true),
            Listener::Tcp(l) => l.set_nonblocking(true),
        };
        nonblocking.map_err(|e| Error::Refused(format!("cannot listen: {e}")))?;
        Ok(listener)
    }

    /// The next connection, or `None` when none is waiting.
    fn accept(&self) -> io::Result<Option<Conn>> {
        let accepted = match self {
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Conn::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                // Replies are written whole; waiting to fill packets only adds latency.
                let _ = s.set_nodelay(true);
                Conn::Tcp(s)
            }),
        };
        match accepted {
            Ok(c) => {
                match &c {
                    Conn::Unix(s) => s.set_nonblocking(false)?,
                    Conn::Tcp(s) => s.set_nonblocking(false)?,
                }
                Ok(Some(c))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            // A client that gave up before it was accepted, or a signal: try again.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn uri(&self, export: &str) -> String {
        let name = encode(export);
        match self {
            Listener::Unix(_, path) => {
                format!(
                    "nbd+unix:///{name}?socket={}",
                    encode(&path.to_string_lossy())
                )
            }
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("nbd://{a}/{name}"),
                Err(_) => format!("nbd:///{name}"),
            },
        }
    }

    fn remove(&self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds a unix socket at `path`. Something else at the path is refused, and so is a socket
/// another server answers on; a socket nobody answers on (left by a killed server) is
/// replaced.
fn bind_unix(path: &Path) -> Result<UnixListener> {
    let shown = path.display();
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::Usage(format!(
                "{shown} exists and is not a socket; pick another --socket path"
            )));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(Error::Refused(format!(
                "socket {shown} is in use by another server; stop it or pick another --socket path"
            )));
        }
        let _ = std::fs::remove_file(path);
    }
    UnixListener::bind(path)
        .map_err(|e| Error::Refused(format!("cannot listen on socket {shown}: {e}")))
}

/// Percent-encodes what a URI path or query value cannot carry as is.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

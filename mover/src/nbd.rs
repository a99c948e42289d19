//! A native NBD client: any disk that qemu-nbd or nbdkit exports becomes a [`Source`].
//!
//! The handshake is fixed newstyle with `NBD_OPT_GO`, structured replies and the
//! `base:allocation` (plus, on request, `qemu:dirty-bitmap:NAME`) metadata contexts. In the
//! transmission phase many requests are in flight per connection: a caller sends under the
//! writer lock and waits on its own one-shot channel, and one reader thread per connection
//! hands each reply to its caller by cookie (see `nbd/wire.rs`). Concurrency comes from the
//! callers: `read_at` from N threads keeps at least N requests in flight, and a large read is
//! split into pieces within the server's maximum block size that are all sent before any is
//! awaited.
//!
//! Failure modes are bounded: a dropped connection fails every waiting request at once, a
//! request with no answer within [`NbdOptions::timeout`] ends the connection, and a read that
//! fails with EIO is tried twice more (reads are idempotent; writes are not retried).

// NBD's wire format is network byte order (big-endian) throughout.
#![allow(clippy::big_endian_bytes)]

pub(crate) mod wire;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chunker::{Extent, ExtentKind};

use crate::{DeltaTarget, Error, Result, Source};
use wire::{Addr, Conn, Export, Failure, Reply, Ticket};

/// `base:allocation`: reads of the range return zeros.
const STATE_ZERO: u32 = 1 << 1;
/// `qemu:dirty-bitmap:NAME`: the range changed since the bitmap was started.
const STATE_DIRTY: u32 = 1 << 0;
/// Largest piece one read or write request carries, whatever the server allows.
const MAX_PIECE: u32 = 32 << 20;
/// Largest single write-zeroes request: some servers refuse 4 GiB and up, and the protocol
/// offers no way to learn their limit.
const MAX_ZEROES: u64 = 1 << 30;
/// How many more times a read that failed with EIO is tried.
const READ_RETRIES: usize = 2;
const DEFAULT_PORT: u16 = 10809;
const URI_FORMS: &str =
    "not an NBD URI; use nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH";

/// True for an NBD URI.
pub fn is_nbd(src: &str) -> bool {
    src.starts_with("nbd://") || src.starts_with("nbd+unix://")
}

/// How to connect to an NBD export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NbdOptions {
    /// Connections to open (0 counts as 1). More than one is used only when the server
    /// advertises `NBD_FLAG_CAN_MULTI_CONN`; requests go round-robin over them.
    pub connections: usize,
    /// A dirty bitmap to read with [`NbdSource::dirty_extents`], as exported by
    /// `qemu-nbd --bitmap NAME`. Connecting fails when the server does not export it.
    pub bitmap: Option<String>,
    /// How long a request may wait for its answer before the connection counts as hung.
    pub timeout: Duration,
}

impl Default for NbdOptions {
    fn default() -> Self {
        NbdOptions {
            connections: 1,
            bitmap: None,
            timeout: Duration::from_secs(120),
        }
    }
}

/// A disk exported over NBD (`nbd://HOST[:PORT]/EXPORT` or
/// `nbd+unix:///EXPORT?socket=PATH`).
///
/// # Contract
///
/// - `len` is the export size the server announced at connect time.
/// - `read_at`, `write_at`, `write_zeroes` and `flush` may be called from many threads at
///   once; each call's requests are all in flight before it waits. A call returns only when
///   the server has answered all of them, or with the first error.
/// - Reads that fail with EIO are tried up to two more times; nothing else is retried.
/// - Every error is an [`Error::Nbd`] with a one-line detail. After the connection drops or
///   a request times out, every later call fails at once; connect again to recover.
/// - `extents` comes from `base:allocation`: only ranges the server reports as reading
///   zeros (`NBD_STATE_ZERO`) are `Zero`; everything else, including a server without
///   block status, is `Data`.
/// - Writes are acknowledged by the server but durable only after [`NbdSource::flush`].
/// - `Drop` sends `NBD_CMD_DISC` on each connection and closes it; it does not flush.
pub struct NbdSource {
    uri: String,
    export: Export,
    conns: Vec<Conn>,
    next: AtomicUsize,
}

impl NbdSource {
    /// Connects to `uri` and negotiates the export, with `opts.bitmap` selected when given.
    pub fn connect(uri: &str, opts: &NbdOptions) -> Result<NbdSource> {
        let err = |detail: String| Error::Nbd {
            uri: uri.to_string(),
            detail,
        };
        let (addr, name) = parse_uri(uri).ok_or_else(|| err(URI_FORMS.to_string()))?;
        let bitmap = opts.bitmap.as_deref();
        let (first, export) = Conn::open(&addr, &name, bitmap, opts.timeout).map_err(err)?;
        let mut conns = vec![first];
        let wanted = opts.connections.max(1);
        if wanted > 1 && export.flags & wire::FLAG_CAN_MULTI_CONN == 0 {
            tracing::info!("{uri}: the server does not allow multiple connections; using one");
        } else {
            for _ in 1..wanted {
                let (conn, other) = Conn::open(&addr, &name, bitmap, opts.timeout).map_err(err)?;
                if other.size != export.size || other.flags != export.flags {
                    return Err(err("the export changed between connections".into()));
                }
                conns.push(conn);
            }
        }
        tracing::debug!(
            "{uri}: {} bytes, flags {:#x}, blocks {}/{}/{}, structured {}, {} connection(s)",
            export.size,
            export.flags,
            export.min_block,
            export.pref_block,
            export.max_block,
            export.structured,
            conns.len()
        );
        Ok(NbdSource {
            uri: uri.to_string(),
            export,
            conns,
            next: AtomicUsize::new(0),
        })
    }

    /// True when the server refuses writes (`NBD_FLAG_READ_ONLY`).
    pub fn is_read_only(&self) -> bool {
        self.export.flags & wire::FLAG_READ_ONLY != 0
    }

    /// The dirty bitmaps the export offers (what `qemu-nbd --bitmap NAME` exported), by name.
    pub fn dirty_bitmaps(&self) -> &[String] {
        &self.export.bitmaps
    }

    /// The server's block sizes: (minimum, preferred, maximum) in bytes. Requests are
    /// aligned to the minimum; reads and writes are cut at the maximum (at most 32 MiB).
    pub fn block_size(&self) -> (u32, u32, u32) {
        let e = &self.export;
        (e.min_block, e.pref_block, e.max_block)
    }

    /// The ranges the dirty bitmap marks as changed, as sorted, merged `(offset, len)`.
    ///
    /// Fails when no bitmap was given in [`NbdOptions::bitmap`] at connect time.
    pub fn dirty_extents(&self) -> Result<Vec<(u64, u64)>> {
        let Some(ctx) = self.export.bitmap else {
            return Err(self.err("no dirty bitmap was selected when connecting".into()));
        };
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (offset, len, flags) in self.block_status(ctx)? {
            if flags & STATE_DIRTY == 0 {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.0 + last.1 == offset => last.1 += len,
                _ => out.push((offset, len)),
            }
        }
        Ok(out)
    }

    /// Writes `data` at `offset`. Offset and length must be multiples of the minimum block
    /// size.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_write(offset, data.len() as u64)?;
        let conn = self.conn();
        let piece = self.piece() as usize;
        let mut tickets = Vec::new();
        let mut pos = offset;
        for part in data.chunks(piece) {
            let t = conn.send(wire::CMD_WRITE, 0, pos, part.len() as u32, part);
            tickets.push((pos, part.len() as u64, t));
            pos += part.len() as u64;
        }
        self.wait_all(conn, "write", tickets)
    }

    /// Makes `offset..offset + len` read as zeros, with `NBD_CMD_WRITE_ZEROES` (which may
    /// punch holes) when the server supports it, else with plain writes of zeros.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.check_write(offset, len)?;
        if self.export.flags & wire::FLAG_SEND_WRITE_ZEROES == 0 {
            let zeros = vec![0; len.min(u64::from(self.piece())) as usize];
            let mut pos = offset;
            while pos < offset + len {
                let n = (offset + len - pos).min(zeros.len() as u64);
                self.write_at(pos, &zeros[..n as usize])?;
                pos += n;
            }
            return Ok(());
        }
        let conn = self.conn();
        let step = self.aligned(MAX_ZEROES);
        let mut tickets = Vec::new();
        let mut pos = offset;
        while pos < offset + len {
            let n = (offset + len - pos).min(step);
            let t = conn.send(wire::CMD_WRITE_ZEROES, 0, pos, n as u32, &[]);
            tickets.push((pos, n, t));
            pos += n;
        }
        self.wait_all(conn, "write zeroes", tickets)
    }

    /// Asks the server to make every acknowledged write durable (on every connection). A
    /// server without `NBD_FLAG_SEND_FLUSH` has nothing to flush, and this returns at once.
    pub fn flush(&self) -> Result<()> {
        if self.export.flags & wire::FLAG_SEND_FLUSH == 0 {
            return Ok(());
        }
        for conn in &self.conns {
            conn.call(wire::CMD_FLUSH, 0, 0, 0)
                .map_err(|f| self.failure("flush", 0, f))?;
        }
        Ok(())
    }

    fn err(&self, detail: String) -> Error {
        Error::Nbd {
            uri: self.uri.clone(),
            detail,
        }
    }

    /// The error for request `what` (at `offset`) that failed with `f`.
    fn failure(&self, what: &str, offset: u64, f: Failure) -> Error {
        self.err(match f {
            Failure::Broken(reason) => reason,
            Failure::Server {
                errno,
                message,
                offset: at,
            } => {
                let server = if message.is_empty() {
                    String::new()
                } else {
                    format!("; server: {message}")
                };
                format!(
                    "{} at offset {} ({what}{server})",
                    errno_text(errno),
                    at.unwrap_or(offset)
                )
            }
        })
    }

    fn conn(&self) -> &Conn {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        &self.conns[i]
    }

    /// Largest read or write request, a multiple of the minimum block size.
    fn piece(&self) -> u32 {
        let e = &self.export;
        (e.max_block.min(MAX_PIECE) / e.min_block * e.min_block).max(e.min_block)
    }

    /// `n` rounded down to the minimum block size.
    fn aligned(&self, n: u64) -> u64 {
        let min = u64::from(self.export.min_block);
        n / min * min
    }

    fn check_write(&self, offset: u64, len: u64) -> Result<()> {
        if self.is_read_only() {
            return Err(self.err("the export is read-only; export it writable".into()));
        }
        self.check_range("write", offset, len)?;
        let min = u64::from(self.export.min_block);
        if !offset.is_multiple_of(min) || !len.is_multiple_of(min) {
            return Err(self.err(format!(
                "write of {len} bytes at {offset} is not aligned to the server's \
                 minimum block size of {min} bytes"
            )));
        }
        Ok(())
    }

    fn check_range(&self, what: &str, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.export.size => Ok(()),
            _ => Err(self.err(format!(
                "{what} of {len} bytes at {offset} ends beyond the export's {} bytes",
                self.export.size
            ))),
        }
    }

    fn wait_all(
        &self,
        conn: &Conn,
        what: &str,
        tickets: Vec<(u64, u64, std::result::Result<Ticket, Failure>)>,
    ) -> Result<()> {
        for (pos, n, t) in tickets {
            t.and_then(|t| conn.wait(t))
                .map_err(|f| self.failure(&format!("{what} of {n} bytes at {pos}"), pos, f))?;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset`, both aligned to the minimum block size.
    fn read_aligned(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let conn = self.conn();
        let piece = self.piece() as usize;
        let mut tickets = Vec::new();
        for (i, part) in buf.chunks(piece).enumerate() {
            let pos = offset + (i * piece) as u64;
            tickets.push(conn.send(wire::CMD_READ, 0, pos, part.len() as u32, &[]));
        }
        for ((i, part), ticket) in buf.chunks_mut(piece).enumerate().zip(tickets) {
            let pos = offset + (i * piece) as u64;
            let len = part.len() as u32;
            let mut result = ticket.and_then(|t| conn.wait(t));
            let mut tries = 1;
            for attempt in 1..=READ_RETRIES {
                let Err(Failure::Server { errno, .. }) = &result else {
                    break;
                };
                if *errno != wire::EIO {
                    break;
                }
                tracing::info!(
                    "{}: EIO reading {len} bytes at {pos}, retry {attempt}",
                    self.uri
                );
                result = conn.call(wire::CMD_READ, 0, pos, len);
                tries += 1;
            }
            let Reply { data, .. } = result.map_err(|f| {
                let mut what = format!("read of {len} bytes at {pos}");
                if tries > 1 {
                    what += &format!(", tried {tries} times");
                }
                self.failure(&what, pos, f)
            })?;
            part.copy_from_slice(&data);
        }
        Ok(())
    }

    /// Queries one metadata context over the whole export: `(offset, len, flags)` runs.
    fn block_status(&self, ctx: u32) -> Result<Vec<(u64, u64, u32)>> {
        let conn = self.conn();
        let size = self.export.size;
        let step = self.aligned(u64::from(u32::MAX));
        let mut out: Vec<(u64, u64, u32)> = Vec::new();
        let mut pos = 0;
        while pos < size {
            let len = (size - pos).min(step);
            let reply = conn
                .call(wire::CMD_BLOCK_STATUS, 0, pos, len as u32)
                .map_err(|f| {
                    self.failure(&format!("block status of {len} bytes at {pos}"), pos, f)
                })?;
            let Some((_, descs)) = reply.status.iter().find(|(id, _)| *id == ctx) else {
                return Err(self.err(format!(
                    "protocol violation: no block status for context {ctx} at {pos}"
                )));
            };
            let mut done = 0;
            for &(n, flags) in descs {
                let n = u64::from(n).min(len - done);
                if n == 0 {
                    break;
                }
                match out.last_mut() {
                    Some(last) if last.2 == flags && last.0 + last.1 == pos + done => last.1 += n,
                    _ => out.push((pos + done, n, flags)),
                }
                done += n;
            }
            if done == 0 {
                return Err(self.err(format!("protocol violation: empty block status at {pos}")));
            }
            pos += done;
        }
        Ok(out)
    }
}

impl Source for NbdSource {
    fn len(&self) -> u64 {
        self.export.size
    }

    fn extents(&self) -> Result<Box<dyn Iterator<Item = Result<Extent>> + Send + '_>> {
        let runs = match self.export.allocation {
            Some(ctx) => self.block_status(ctx)?,
            None if self.export.size > 0 => vec![(0, self.export.size, 0)],
            None => Vec::new(),
        };
        let mut out: Vec<Extent> = Vec::new();
        for (offset, len, flags) in runs {
            let kind = extent_kind(flags);
            match out.last_mut() {
                Some(last) if last.kind == kind => last.len += len,
                _ => out.push(Extent { offset, len, kind }),
            }
        }
        Ok(Box::new(out.into_iter().map(Ok)))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        self.check_range("read", offset, len)?;
        let min = u64::from(self.export.min_block);
        if offset.is_multiple_of(min) && len.is_multiple_of(min) {
            return self.read_aligned(offset, buf);
        }
        // Widen to whole blocks (the export size is a multiple of the block size).
        let start = offset / min * min;
        let end = (offset + len).div_ceil(min) * min;
        let mut whole = vec![0; (end.min(self.export.size) - start) as usize];
        self.read_aligned(start, &mut whole)?;
        let rel = (offset - start) as usize;
        buf.copy_from_slice(&whole[rel..rel + buf.len()]);
        Ok(())
    }
}

impl DeltaTarget for NbdSource {
    fn source(&self) -> &dyn Source {
        self
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        NbdSource::write_at(self, offset, data)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        NbdSource::write_zeroes(self, offset, len)
    }
    fn sync(&self) -> Result<()> {
        self.flush()
    }
    fn label(&self) -> String {
        self.uri.clone()
    }
}

/// Only ranges known to read as zeros may be skipped; a hole without `NBD_STATE_ZERO` has
/// undefined contents and is read like data.
fn extent_kind(flags: u32) -> ExtentKind {
    if flags & STATE_ZERO != 0 {
        ExtentKind::Zero
    } else {
        ExtentKind::Data
    }
}

fn errno_text(errno: u32) -> String {
    match errno {
        1 => "operation not permitted (EPERM)".into(),
        5 => "input/output error (EIO)".into(),
        12 => "the server is out of memory (ENOMEM)".into(),
        22 => "invalid argument (EINVAL)".into(),
        28 => "no space left on the server's storage (ENOSPC)".into(),
        75 => "value too large (EOVERFLOW)".into(),
        95 => "operation not supported (ENOTSUP)".into(),
        108 => "the server is shutting down (ESHUTDOWN)".into(),
        e => format!("server error {e}"),
    }
}

/// Parses the two accepted URI forms into an address and an export name.
fn parse_uri(uri: &str) -> Option<(Addr, String)> {
    if let Some(rest) = uri.strip_prefix("nbd+unix://") {
        let (rest, query) = rest.split_once('?')?;
        let export = rest.strip_prefix('/').or(rest.is_empty().then_some(""))?;
        let mut socket = None;
        for param in query.split('&') {
            if let Some(path) = param.strip_prefix("socket=") {
                socket = Some(percent_decode(path)?);
            }
        }
        let socket = socket.filter(|s| !s.is_empty())?;
        return Some((Addr::Unix(socket), percent_decode(export)?));
    }
    let rest = uri.strip_prefix("nbd://")?;
    let (authority, export) = match rest.split_once('/') {
        Some((a, e)) => (a, e),
        None => (rest, ""),
    };
    if export.contains('?') {
        return None;
    }
    // [v6]:port, host:port or host.
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok().filter(|&p| p != 0)?,
        None => DEFAULT_PORT,
    };
    if host.is_empty() {
        return None;
    }
    Some((Addr::Tcp(host.to_string(), port), percent_decode(export)?))
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(path: &str, export: &str) -> Option<(Addr, String)> {
        Some((Addr::Unix(path.into()), export.into()))
    }
    fn tcp(host: &str, port: u16, export: &str) -> Option<(Addr, String)> {
        Some((Addr::Tcp(host.into(), port), export.into()))
    }

    #[test]
    fn unix_uris() {
        assert_eq!(parse_uri("nbd+unix:///?socket=/run/s"), unix("/run/s", ""));
        assert_eq!(parse_uri("nbd+unix://?socket=/run/s"), unix("/run/s", ""));
        assert_eq!(
            parse_uri("nbd+unix:///disk%201?socket=/tmp/a%20b"),
            unix("/tmp/a b", "disk 1")
        );
        assert_eq!(parse_uri("nbd+unix:///disk"), None);
        assert_eq!(parse_uri("nbd+unix:///disk?socket="), None);
        assert_eq!(parse_uri("nbd+unix://host/disk?socket=/s"), None);
    }

    #[test]
    fn tcp_uris() {
        assert_eq!(parse_uri("nbd://h"), tcp("h", 10809, ""));
        assert_eq!(parse_uri("nbd://h/"), tcp("h", 10809, ""));
        assert_eq!(
            parse_uri("nbd://127.0.0.1:1234/vm"),
            tcp("127.0.0.1", 1234, "vm")
        );
        assert_eq!(parse_uri("nbd://[::1]:99/a/b"), tcp("::1", 99, "a/b"));
        assert_eq!(parse_uri("nbd://[::1]/"), tcp("::1", 10809, ""));
        assert_eq!(parse_uri("nbd://:99/"), None);
        assert_eq!(parse_uri("nbd://h:x/"), None);
        assert_eq!(parse_uri("nbd://h:0/"), None);
        assert_eq!(parse_uri("nbd://h/x%zz"), None);
        assert_eq!(parse_uri("http://h/"), None);
    }

    #[test]
    fn only_known_zeros_are_zero() {
        assert_eq!(extent_kind(0), ExtentKind::Data);
        assert_eq!(
            extent_kind(1),
            ExtentKind::Data,
            "a hole alone is not known zero"
        );
        assert_eq!(extent_kind(2), ExtentKind::Zero);
        assert_eq!(extent_kind(3), ExtentKind::Zero);
    }

    #[test]
    fn errors_are_named() {
        assert!(errno_text(5).contains("input/output error"));
        assert!(errno_text(28).contains("ENOSPC"));
        assert_eq!(errno_text(999), "server error 999");
    }
}

//! One NBD connection: the fixed newstyle handshake, then many requests in flight.
//!
//! Callers send requests under the writer lock and wait on a one-shot channel; one reader
//! thread per connection reads every reply and hands it to the waiting caller by cookie. A
//! reply for a caller that stopped waiting is still read off the socket and dropped, so the
//! stream stays in step. Whatever ends the connection (EOF, a protocol violation, a request
//! that got no answer in time, `Drop`) fails every waiting request at once with the same
//! reason, and every later request before it is sent.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

pub(crate) const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
pub(crate) const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
pub(crate) const OLDSTYLE_MAGIC: u64 = 0x0000_4202_8186_1253;
pub(crate) const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub(crate) const REQUEST_MAGIC: u32 = 0x2560_9513;
pub(crate) const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub(crate) const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

pub(crate) const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub(crate) const FLAG_NO_ZEROES: u16 = 1 << 1;

pub(crate) const OPT_EXPORT_NAME: u32 = 1;
pub(crate) const OPT_ABORT: u32 = 2;
pub(crate) const OPT_GO: u32 = 7;
pub(crate) const OPT_STRUCTURED_REPLY: u32 = 8;
pub(crate) const OPT_LIST_META_CONTEXT: u32 = 9;
pub(crate) const OPT_SET_META_CONTEXT: u32 = 10;

pub(crate) const REP_ACK: u32 = 1;
pub(crate) const REP_INFO: u32 = 3;
pub(crate) const REP_META_CONTEXT: u32 = 4;
pub(crate) const REP_ERR: u32 = 1 << 31;
pub(crate) const REP_ERR_UNSUP: u32 = REP_ERR + 1;
pub(crate) const REP_ERR_POLICY: u32 = REP_ERR + 2;
pub(crate) const REP_ERR_INVALID: u32 = REP_ERR + 3;
pub(crate) const REP_ERR_TLS_REQD: u32 = REP_ERR + 5;
pub(crate) const REP_ERR_UNKNOWN: u32 = REP_ERR + 6;
pub(crate) const REP_ERR_SHUTDOWN: u32 = REP_ERR + 7;

pub(crate) const INFO_EXPORT: u16 = 0;
pub(crate) const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags.
pub(crate) const FLAG_HAS_FLAGS: u16 = 1 << 0;
pub(crate) const FLAG_READ_ONLY: u16 = 1 << 1;
pub(crate) const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub(crate) const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub(crate) const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

pub(crate) const CMD_READ: u16 = 0;
pub(crate) const CMD_WRITE: u16 = 1;
pub(crate) const CMD_DISC: u16 = 2;
pub(crate) const CMD_FLUSH: u16 = 3;
pub(crate) const CMD_WRITE_ZEROES: u16 = 6;
pub(crate) const CMD_BLOCK_STATUS: u16 = 7;

pub(crate) const REPLY_FLAG_DONE: u16 = 1 << 0;
pub(crate) const REPLY_NONE: u16 = 0;
pub(crate) const REPLY_OFFSET_DATA: u16 = 1;
pub(crate) const REPLY_OFFSET_HOLE: u16 = 2;
pub(crate) const REPLY_BLOCK_STATUS: u16 = 5;
pub(crate) const REPLY_ERROR_BIT: u16 = 1 << 15;
pub(crate) const REPLY_ERROR_OFFSET: u16 = REPLY_ERROR_BIT + 2;

/// NBD error values (the protocol fixes these numbers).
pub(crate) const EIO: u32 = 5;

/// Largest option reply or block status payload accepted: more is a confused server.
pub(crate) const MAX_REPLY: u32 = 64 << 20;
/// Without `NBD_INFO_BLOCK_SIZE` a client should not send more than this at once.
pub(crate) const DEFAULT_MAX_BLOCK: u32 = 32 << 20;

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Addr {
    Unix(String),
    Tcp(String, u16),
}

/// What the handshake agreed on.
#[derive(Clone, Debug)]
pub(super) struct Export {
    pub size: u64,
    pub flags: u16,
    pub min_block: u32,
    pub pref_block: u32,
    pub max_block: u32,
    pub structured: bool,
    /// Context id of `base:allocation`, when the server offers it.
    pub allocation: Option<u32>,
    /// Context id of the requested dirty bitmap.
    pub bitmap: Option<u32>,
    /// Names of the dirty bitmaps the server exports (`qemu:dirty-bitmap:NAME`).
    pub bitmaps: Vec<String>,
}

/// Why a request failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The server answered with an error.
    Server {
        errno: u32,
        message: String,
        offset: Option<u64>,
    },
    /// The connection is gone, or the answer made no sense.
    Broken(String),
}

/// A successful answer.
#[derive(Debug, Default)]
pub(super) struct Reply {
    /// Read data (holes as zeros).
    pub data: Vec<u8>,
    /// Block status: (context id, [(length, flags)]).
    pub status: Vec<(u32, Vec<(u32, u32)>)>,
}

/// A request on its way; [`Conn::wait`] turns it into the answer.
pub(super) struct Ticket(Receiver<Result<Reply, Failure>>);

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }
    fn shutdown(&self) {
        // Already closed is fine: all that matters is that the reader wakes up.
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One request waiting for (the rest of) its reply.
struct Inflight {
    cmd: u16,
    offset: u64,
    len: u32,
    /// Bytes of a read covered by data and hole chunks so far.
    covered: u64,
    reply: Reply,
    error: Option<Failure>,
    tx: Sender<Result<Reply, Failure>>,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Inflight>,
    /// Why the connection ended; set once.
    closed: Option<String>,
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the connection for good: records why (the first reason wins) and fails every
    /// waiting request with it.
    fn close(&self, reason: String) {
        let mut st = self.lock();
        let reason = st.closed.get_or_insert(reason).clone();
        for (_, inf) in st.pending.drain() {
            let _ = inf.tx.send(Err(Failure::Broken(reason.clone())));
        }
    }
}

/// A connection in the transmission phase.
pub(super) struct Conn {
    writer: Mutex<Stream>,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    next_cookie: AtomicU64,
    timeout: Duration,
}

/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the server may take to answer each step of the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to the first address of `host` that answers within [`CONNECT_TIMEOUT`].
fn connect_tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                last = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                );
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Conn {
    /// Connects, negotiates and starts the reader thread. Errors are one line.
    pub(super) fn open(
        addr: &Addr,
        export: &str,
        bitmap: Option<&str>,
        timeout: Duration,
    ) -> Result<(Conn, Export), String> {
        let mut stream = match addr {
            Addr::Unix(path) => UnixStream::connect(path).map(Stream::Unix).map_err(|e| {
                format!("cannot connect to socket {path}: {e}; is the NBD server running?")
            })?,
            Addr::Tcp(host, port) => {
                let s = connect_tcp(host, *port).map_err(|e| {
                    format!("cannot connect to {host}:{port}: {e}; is the NBD server running?")
                })?;
                // Requests are small and latency-bound: do not let Nagle hold them back.
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                Stream::Tcp(s)
            }
        };
        // A server that accepts and never negotiates is given less time than a request.
        let timeout = timeout.min(HANDSHAKE_TIMEOUT);
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let info = handshake(&mut stream, export, bitmap).map_err(|e| match e {
            HsError::Io(e) if is_disconnect(&e) => {
                "the server closed the connection during the handshake".to_string()
            }
            HsError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                format!(
                    "no answer from the server within {} s during the handshake",
                    timeout.as_secs_f64()
                )
            }
            HsError::Io(e) => format!("handshake failed: {e}"),
            HsError::Msg(m) => {
                // Leave politely (best effort): the server may log a hard disconnect as an error.
                let _ = send_option(&mut stream, OPT_ABORT, &[]);
                m
            }
        })?;
        stream.set_read_timeout(None).map_err(|e| e.to_string())?;
        let read_half = stream.try_clone().map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
        });
        let reader = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("nbd-reader".into())
                .spawn(move || read_loop(read_half, &shared))
                .map_err(|e| format!("cannot start the reader thread: {e}"))?
        };
        let conn = Conn {
            writer: Mutex::new(stream),
            shared,
            reader: Some(reader),
            next_cookie: AtomicU64::new(1),
            timeout,
        };
        Ok((conn, info))
    }

    /// Sends one request (with `payload` for writes) and returns without waiting.
    pub(super) fn send(
        &self,
        cmd: u16,
        flags: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) -> Result<Ticket, Failure> {
        let cookie = self.next_cookie.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::bounded(1);
        let data = if cmd == CMD_READ {
            vec![0; len as usize]
        } else {
            Vec::new()
        };
        {
            // Registered before it is sent: the answer may come back before `send` returns.
            let mut st = self.shared.lock();
            if let Some(reason) = &st.closed {
                return Err(Failure::Broken(reason.clone()));
            }
            st.pending.insert(
                cookie,
                Inflight {
                    cmd,
                    offset,
                    len,
                    covered: 0,
                    reply: Reply {
                        data,
                        status: Vec::new(),
                    },
                    error: None,
                    tx,
                },
            );
        }
        let mut header = [0u8; 28];
        header[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        header[4..6].copy_from_slice(&flags.to_be_bytes());
        header[6..8].copy_from_slice(&cmd.to_be_bytes());
        header[8..16].copy_from_slice(&cookie.to_be_bytes());
        header[16..24].copy_from_slice(&offset.to_be_bytes());
        header[24..28].copy_from_slice(&len.to_be_bytes());
        let sent = {
            let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            w.write_all(&header).and_then(|()| w.write_all(payload))
        };
        if let Err(e) = sent {
            // Half a request may be on the wire: the stream is out of step for good.
            let reason = if is_disconnect(&e) {
                "the server closed the connection".to_string()
            } else {
                format!("cannot send to the server: {e}")
            };
            self.abort(reason.clone());
            return Err(Failure::Broken(reason));
        }
        Ok(Ticket(rx))
    }

    /// Waits for the answer. A request with no answer within the timeout ends the whole
    /// connection (a server that silent is hung), so no other caller waits that long again.
    pub(super) fn wait(&self, ticket: Ticket) -> Result<Reply, Failure> {
        match ticket.0.recv_timeout(self.timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                let reason = format!(
                    "no answer from the server within {} s; it seems hung",
                    self.timeout.as_secs_f64()
                );
                self.abort(reason.clone());
                Err(Failure::Broken(reason))
            }
            Err(RecvTimeoutError::Disconnected) => Err(Failure::Broken(
                "the server closed the connection".to_string(),
            )),
        }
    }

    /// Sends and waits.
    pub(super) fn call(
        &self,
        cmd: u16,
        flags: u16,
        offset: u64,
        len: u32,
    ) -> Result<Reply, Failure> {
        self.wait(self.send(cmd, flags, offset, len, &[])?)
    }

    fn abort(&self, reason: String) {
        self.shared.close(reason);
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .shutdown();
    }
}

impl Drop for Conn {
    /// Says goodbye with `NBD_CMD_DISC` (no reply comes), closes the socket and joins the
    /// reader.
    fn drop(&mut self) {
        let mut header = [0u8; 28];
        header[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        header[6..8].copy_from_slice(&CMD_DISC.to_be_bytes());
        {
            let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            if self.shared.lock().closed.is_none() {
                let _ = w.write_all(&header);
            }
        }
        self.abort("the connection was closed by the client".into());
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

// ---- handshake ----

enum HsError {
    Io(io::Error),
    Msg(String),
}

impl From<io::Error> for HsError {
    fn from(e: io::Error) -> Self {
        HsError::Io(e)
    }
}

fn msg<T>(m: impl Into<String>) -> Result<T, HsError> {
    Err(HsError::Msg(m.into()))
}

fn handshake(s: &mut Stream, export: &str, bitmap: Option<&str>) -> Result<Export, HsError> {
    let no_zeroes = greet(s)?;
    send_option(s, OPT_STRUCTURED_REPLY, &[])?;
    let (kind, _) = option_reply(s, OPT_STRUCTURED_REPLY)?;
    let structured = match kind {
        REP_ACK => true,
        k if k & REP_ERR != 0 => false,
        k => {
            return msg(format!(
                "protocol violation: reply {k} to NBD_OPT_STRUCTURED_REPLY"
            ))
        }
    };
    let bitmaps = if structured {
        list_bitmaps(s, export)?
    } else {
        Vec::new()
    };
    let (allocation, bitmap_id) = match (structured, bitmap) {
        (true, _) => meta_contexts(s, export, bitmap)?,
        (false, None) => (None, None),
        (false, Some(_)) => {
            return msg(
                "the server does not support structured replies, needed for dirty bitmaps; \
                 export the disk with qemu-nbd --bitmap NAME",
            )
        }
    };
    if let (Some(b), None) = (bitmap, bitmap_id) {
        return msg(format!(
            "dirty bitmap {b} is not exported; start qemu-nbd with --bitmap {b}"
        ));
    }
    let (size, flags, blocks) = go(s, export, no_zeroes)?;
    if flags & FLAG_HAS_FLAGS == 0 {
        return msg("protocol violation: transmission flags lack NBD_FLAG_HAS_FLAGS");
    }
    let (min_block, pref_block, max_block) = sane_block_sizes(blocks);
    Ok(Export {
        size,
        flags,
        min_block,
        pref_block,
        max_block,
        structured,
        allocation,
        bitmap: bitmap_id,
        bitmaps,
    })
}

/// Reads the server's greeting and answers it; true when the server skips the 124 zeros.
fn greet(s: &mut Stream) -> Result<bool, HsError> {
    if read_u64(s)? != NBDMAGIC {
        return msg("not an NBD server (bad greeting)");
    }
    match read_u64(s)? {
        IHAVEOPT => {}
        OLDSTYLE_MAGIC => return msg("the server speaks oldstyle NBD, which is not supported"),
        _ => return msg("protocol violation: bad handshake magic"),
    }
    let server_flags = read_u16(s)?;
    if server_flags & FLAG_FIXED_NEWSTYLE == 0 {
        return msg("the server does not support fixed newstyle negotiation");
    }
    let client_flags = u32::from(FLAG_FIXED_NEWSTYLE | (server_flags & FLAG_NO_ZEROES));
    s.write_all(&client_flags.to_be_bytes())?;
    Ok(server_flags & FLAG_NO_ZEROES != 0)
}

/// Lists the dirty bitmaps the export offers (`NBD_OPT_LIST_META_CONTEXT` with the query
/// `qemu:dirty-bitmap:`); a server that cannot list them offers none.
fn list_bitmaps(s: &mut Stream, export: &str) -> Result<Vec<String>, HsError> {
    const PREFIX: &str = "qemu:dirty-bitmap:";
    let mut data = Vec::new();
    put_str(&mut data, export);
    data.extend_from_slice(&1u32.to_be_bytes());
    put_str(&mut data, PREFIX);
    send_option(s, OPT_LIST_META_CONTEXT, &data)?;
    let mut names = Vec::new();
    loop {
        let (kind, reply) = option_reply(s, OPT_LIST_META_CONTEXT)?;
        match kind {
            REP_ACK => return Ok(names),
            REP_META_CONTEXT if reply.len() >= 4 => {
                let name = String::from_utf8_lossy(&reply[4..]);
                if let Some(b) = name.strip_prefix(PREFIX) {
                    names.push(b.to_string());
                }
            }
            REP_ERR_UNKNOWN => return msg(unknown_export(export)),
            k if k & REP_ERR != 0 => return Ok(Vec::new()),
            k => {
                return msg(format!(
                    "protocol violation: reply {k} to NBD_OPT_LIST_META_CONTEXT"
                ))
            }
        }
    }
}

/// Selects `base:allocation` and the bitmap's context; returns the ids the server gave them.
fn meta_contexts(
    s: &mut Stream,
    export: &str,
    bitmap: Option<&str>,
) -> Result<(Option<u32>, Option<u32>), HsError> {
    let bitmap_ctx = bitmap.map(|b| format!("qemu:dirty-bitmap:{b}"));
    let mut queries = vec!["base:allocation"];
    queries.extend(bitmap_ctx.as_deref());
    let mut data = Vec::new();
    put_str(&mut data, export);
    data.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in &queries {
        put_str(&mut data, q);
    }
    send_option(s, OPT_SET_META_CONTEXT, &data)?;
    let (mut allocation, mut bitmap_id) = (None, None);
    loop {
        let (kind, reply) = option_reply(s, OPT_SET_META_CONTEXT)?;
        match kind {
            REP_ACK => return Ok((allocation, bitmap_id)),
            REP_META_CONTEXT if reply.len() >= 4 => {
                let id = u32::from_be_bytes(reply[..4].try_into().expect("4 bytes"));
                let name = String::from_utf8_lossy(&reply[4..]);
                if name == "base:allocation" {
                    allocation = Some(id);
                } else if Some(name.as_ref()) == bitmap_ctx.as_deref() {
                    bitmap_id = Some(id);
                }
            }
            REP_ERR_UNKNOWN => return msg(unknown_export(export)),
            // No metadata: reads still work, everything counts as data.
            k if k & REP_ERR != 0 && bitmap.is_none() => return Ok((None, None)),
            k if k & REP_ERR != 0 => {
                return msg(option_error("NBD_OPT_SET_META_CONTEXT", k, &reply))
            }
            k => {
                return msg(format!(
                    "protocol violation: reply {k} to NBD_OPT_SET_META_CONTEXT"
                ))
            }
        }
    }
}

type BlockSizes = Option<(u32, u32, u32)>;

/// Opens the export with `NBD_OPT_GO` (or, on servers too old for it,
/// `NBD_OPT_EXPORT_NAME`): its size, transmission flags and block sizes.
fn go(s: &mut Stream, export: &str, no_zeroes: bool) -> Result<(u64, u16, BlockSizes), HsError> {
    let mut data = Vec::new();
    put_str(&mut data, export);
    data.extend_from_slice(&1u16.to_be_bytes());
    data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    send_option(s, OPT_GO, &data)?;
    let (mut size_flags, mut blocks) = (None, None);
    loop {
        let (kind, reply) = option_reply(s, OPT_GO)?;
        match kind {
            REP_ACK => break,
            REP_INFO if reply.len() >= 2 => {
                let info = u16::from_be_bytes([reply[0], reply[1]]);
                let body = &reply[2..];
                if info == INFO_EXPORT && body.len() >= 10 {
                    let size = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
                    size_flags = Some((size, u16::from_be_bytes([body[8], body[9]])));
                } else if info == INFO_BLOCK_SIZE && body.len() >= 12 {
                    let at = |i: usize| u32::from_be_bytes(body[i..i + 4].try_into().expect("4"));
                    blocks = Some((at(0), at(4), at(8)));
                }
            }
            REP_ERR_UNSUP => {
                size_flags = Some(export_name(s, export, no_zeroes)?);
                break;
            }
            REP_ERR_UNKNOWN => return msg(unknown_export(export)),
            k if k & REP_ERR != 0 => return msg(option_error("NBD_OPT_GO", k, &reply)),
            k => return msg(format!("protocol violation: reply {k} to NBD_OPT_GO")),
        }
    }
    match size_flags {
        Some((size, flags)) => Ok((size, flags, blocks)),
        None => msg("protocol violation: the server did not send the export size"),
    }
}

/// Block size constraints; each one the server did not send, or sent inconsistent with the
/// protocol's rules, is replaced by the protocol's default.
fn sane_block_sizes(given: Option<(u32, u32, u32)>) -> (u32, u32, u32) {
    let (min, pref, max) = given.unwrap_or((1, 4096, DEFAULT_MAX_BLOCK));
    let min = if min.is_power_of_two() && min <= 64 << 10 {
        min
    } else {
        1
    };
    let pref = if pref.is_power_of_two() && pref >= min {
        pref
    } else {
        min.max(4096)
    };
    let max = if max >= min && (max.is_multiple_of(min) || max == u32::MAX) {
        max
    } else {
        DEFAULT_MAX_BLOCK
    };
    (min, pref, max)
}

fn export_name(s: &mut Stream, export: &str, no_zeroes: bool) -> Result<(u64, u16), HsError> {
    send_option(s, OPT_EXPORT_NAME, export.as_bytes())?;
    let size = read_u64(s)?;
    let flags = read_u16(s)?;
    if !no_zeroes {
        read_bytes(s, 124)?;
    }
    Ok((size, flags))
}

fn unknown_export(export: &str) -> String {
    format!("export {export:?} does not exist on the server")
}

fn option_error(option: &str, kind: u32, data: &[u8]) -> String {
    let what = match kind {
        REP_ERR_UNSUP => "is not supported",
        REP_ERR_POLICY => "is refused by the server's policy",
        REP_ERR_INVALID => "is invalid",
        REP_ERR_TLS_REQD => "needs TLS, which mover does not support",
        REP_ERR_SHUTDOWN => "failed: the server is shutting down",
        _ => "failed",
    };
    let text = String::from_utf8_lossy(data);
    if text.is_empty() {
        format!("{option} {what} (error {:#x})", kind)
    } else {
        format!("{option} {what}: {text}")
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn send_option(s: &mut Stream, option: u32, data: &[u8]) -> io::Result<()> {
    let mut msg = Vec::with_capacity(16 + data.len());
    msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
    msg.extend_from_slice(&option.to_be_bytes());
    msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
    msg.extend_from_slice(data);
    s.write_all(&msg)
}

fn option_reply(s: &mut Stream, option: u32) -> Result<(u32, Vec<u8>), HsError> {
    if read_u64(s)? != OPT_REPLY_MAGIC {
        return msg("protocol violation: bad option reply magic");
    }
    if read_u32(s)? != option {
        return msg(format!(
            "protocol violation: reply to another option than {option}"
        ));
    }
    let kind = read_u32(s)?;
    let len = read_u32(s)?;
    if len > MAX_REPLY {
        return msg(format!("protocol violation: option reply of {len} bytes"));
    }
    Ok((kind, read_bytes(s, len as usize)?))
}

pub(crate) fn read_bytes(r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0; n];
    r.read_exact(&mut v)?;
    Ok(v)
}

pub(crate) fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

pub(crate) fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

pub(crate) fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

// ---- transmission: the reader thread ----

fn read_loop(stream: Stream, shared: &Shared) {
    let closer = stream.try_clone();
    let mut r = BufReader::with_capacity(256 << 10, stream);
    let reason = loop {
        if let Err(reason) = read_reply(&mut r, shared) {
            break reason;
        }
    };
    shared.close(reason);
    // A protocol violation leaves the server talking: hang up so writers fail too.
    if let Ok(s) = closer {
        s.shutdown();
    }
}

fn io_reason(e: &io::Error) -> String {
    if is_disconnect(e) {
        "the server closed the connection".to_string()
    } else {
        format!("cannot read from the server: {e}")
    }
}

/// Reads one reply or chunk and delivers it. `Err` ends the connection.
fn read_reply(r: &mut impl Read, shared: &Shared) -> Result<(), String> {
    let io = |e: io::Error| io_reason(&e);
    let magic = read_u32(r).map_err(io)?;
    match magic {
        SIMPLE_REPLY_MAGIC => {
            let errno = read_u32(r).map_err(io)?;
            let cookie = read_u64(r).map_err(io)?;
            let mut inf = take(shared, cookie)?;
            if errno != 0 {
                inf.error = Some(server_error(errno, String::new(), None));
            } else if inf.cmd == CMD_READ {
                r.read_exact(&mut inf.reply.data).map_err(io)?;
                inf.covered = u64::from(inf.len);
            }
            finish(inf);
            Ok(())
        }
        STRUCTURED_REPLY_MAGIC => {
            let flags = read_u16(r).map_err(io)?;
            let kind = read_u16(r).map_err(io)?;
            let cookie = read_u64(r).map_err(io)?;
            let len = read_u32(r).map_err(io)?;
            let mut inf = take(shared, cookie)?;
            chunk(r, &mut inf, kind, len)?;
            if flags & REPLY_FLAG_DONE != 0 {
                finish(inf);
            } else {
                shared.lock().pending.insert(cookie, inf);
            }
            Ok(())
        }
        m => Err(format!("protocol violation: bad reply magic {m:#x}")),
    }
}

fn take(shared: &Shared, cookie: u64) -> Result<Inflight, String> {
    shared
        .lock()
        .pending
        .remove(&cookie)
        .ok_or_else(|| format!("protocol violation: reply for unknown request {cookie}"))
}

fn server_error(errno: u32, message: String, offset: Option<u64>) -> Failure {
    Failure::Server {
        errno,
        message,
        offset,
    }
}

/// Reads one structured chunk's payload into `inf`.
fn chunk(r: &mut impl Read, inf: &mut Inflight, kind: u16, len: u32) -> Result<(), String> {
    let io = |e: io::Error| io_reason(&e);
    let bad = |what: &str| Err(format!("protocol violation: {what}"));
    let (start, end) = (inf.offset, inf.offset + u64::from(inf.len));
    match kind {
        REPLY_NONE if len == 0 => Ok(()),
        REPLY_OFFSET_DATA if inf.cmd == CMD_READ && len > 8 => {
            let at = read_u64(r).map_err(io)?;
            let n = u64::from(len - 8);
            if at < start || at + n > end {
                return bad("data chunk outside the request");
            }
            let rel = (at - start) as usize;
            r.read_exact(&mut inf.reply.data[rel..rel + n as usize])
                .map_err(io)?;
            inf.covered += n;
            Ok(())
        }
        REPLY_OFFSET_HOLE if inf.cmd == CMD_READ && len == 12 => {
            let at = read_u64(r).map_err(io)?;
            let n = u64::from(read_u32(r).map_err(io)?);
            if at < start || at + n > end {
                return bad("hole chunk outside the request");
            }
            let rel = (at - start) as usize;
            inf.reply.data[rel..rel + n as usize].fill(0);
            inf.covered += n;
            Ok(())
        }
        REPLY_BLOCK_STATUS
            if inf.cmd == CMD_BLOCK_STATUS
                && len >= 12
                && (len - 4).is_multiple_of(8)
                && len <= MAX_REPLY =>
        {
            let body = read_bytes(r, len as usize).map_err(io)?;
            let word = |i: usize| u32::from_be_bytes(body[i..i + 4].try_into().expect("4 bytes"));
            let descs = (4..body.len())
                .step_by(8)
                .map(|i| (word(i), word(i + 4)))
                .collect();
            inf.reply.status.push((word(0), descs));
            Ok(())
        }
        k if k & REPLY_ERROR_BIT != 0 && (6..=MAX_REPLY).contains(&len) => {
            let errno = read_u32(r).map_err(io)?;
            let mlen = u32::from(read_u16(r).map_err(io)?);
            if mlen > len - 6 {
                return bad("error message longer than its chunk");
            }
            let message =
                String::from_utf8_lossy(&read_bytes(r, mlen as usize).map_err(io)?).into_owned();
            let mut rest = len - 6 - mlen;
            let mut offset = None;
            if k == REPLY_ERROR_OFFSET && rest >= 8 {
                offset = Some(read_u64(r).map_err(io)?);
                rest -= 8;
            }
            read_bytes(r, rest as usize).map_err(io)?;
            if inf.error.is_none() {
                inf.error = Some(server_error(errno, message, offset));
            }
            Ok(())
        }
        k => bad(&format!("unexpected reply chunk type {k} of {len} bytes")),
    }
}

fn finish(inf: Inflight) {
    let result = match inf.error {
        Some(e) => Err(e),
        None if inf.cmd == CMD_READ && inf.covered != u64::from(inf.len) => {
            Err(Failure::Broken(format!(
                "protocol violation: the server answered a read of {} bytes with {}",
                inf.len, inf.covered
            )))
        }
        None => Ok(inf.reply),
    };
    // The caller may have stopped waiting; then the answer is dropped.
    let _ = inf.tx.send(result);
}

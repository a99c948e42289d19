//! The transmission phase of one connection: requests are read and answered in order.
//!
//! A request the server cannot frame (bad magic, a write payload over the maximum block
//! size) ends the connection, since the stream cannot be resynchronised; every other bad
//! request (out of range, unknown command or flag, a write to a read-only export, block
//! status without the context) gets an NBD error and the connection goes on.
//!
//! Each reply goes out with one vectored write, its data straight from the chunks in the
//! reader's cache (issue 15: copying every byte into a reply buffer first cost about as much
//! as decoding it).

use std::io::{self, IoSlice, Read, Write};
use std::time::Instant;

use crate::nbd::wire::{
    CMD_BLOCK_STATUS, CMD_FLUSH, CMD_READ, CMD_WRITE, CMD_WRITE_ZEROES, REQUEST_MAGIC,
    SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC,
};

use super::export::{Data, Export, Fault, EINVAL, EIO, ENOSPC, EPERM};
use super::proto::{Session, ALLOCATION_ID, MAX_BLOCK};

const CMD_DISC: u16 = 2;
const CMD_TRIM: u16 = 4;
const CMD_CACHE: u16 = 5;

const CMD_FLAG_FUA: u16 = 1 << 0;
const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
const CMD_FLAG_DF: u16 = 1 << 2;
const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;
const KNOWN_FLAGS: u16 =
    CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_DF | CMD_FLAG_REQ_ONE | CMD_FLAG_FAST_ZERO;

const REPLY_FLAG_DONE: u16 = 1 << 0;
const REPLY_OFFSET_DATA: u16 = 1;
const REPLY_OFFSET_HOLE: u16 = 2;
const REPLY_BLOCK_STATUS: u16 = 5;
const REPLY_ERROR: u16 = (1 << 15) + 1;

/// Block status flags of `base:allocation`.
const STATE_HOLE: u32 = 1 << 0;
const STATE_ZERO: u32 = 1 << 1;

/// Most descriptors in one block status reply.
const MAX_DESCRIPTORS: usize = 1 << 16;

/// Where the zeros of a read reply's data come from (holes sent as data).
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

struct Request {
    flags: u16,
    kind: u16,
    cookie: u64,
    offset: u64,
    len: u32,
}

/// Serves requests until the client disconnects or the stream breaks.
pub(super) fn transmit(
    r: &mut impl Read,
    w: &mut impl Write,
    export: &Export,
    session: &Session,
) -> io::Result<()> {
    let mut header = [0u8; 28];
    loop {
        match r.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let be32 = |i: usize| u32::from_be_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let be64 = |i: usize| u64::from_be_bytes(header[i..i + 8].try_into().expect("8 bytes"));
        if be32(0) != REQUEST_MAGIC {
            return Ok(());
        }
        let req = Request {
            flags: u16::from_be_bytes([header[4], header[5]]),
            kind: u16::from_be_bytes([header[6], header[7]]),
            cookie: be64(8),
            offset: be64(16),
            len: be32(24),
        };
        let payload = if req.kind == CMD_WRITE {
            if req.len > MAX_BLOCK {
                return Ok(());
            }
            let mut p = vec![0; req.len as usize];
            r.read_exact(&mut p)?;
            Some(p)
        } else {
            None
        };
        if req.kind == CMD_DISC {
            return Ok(());
        }
        match answer(w, export, session, &req, payload.as_deref()) {
            Ok(()) => {}
            Err(Fault { errno, message }) => error(w, session, &req, errno, &message)?,
        }
        w.flush()?;
    }
}

/// Carries out one request and writes its successful reply; a fault is answered by the
/// caller.
fn answer(
    w: &mut impl Write,
    export: &Export,
    session: &Session,
    req: &Request,
    payload: Option<&[u8]>,
) -> Result<(), Fault> {
    if req.flags & !KNOWN_FLAGS != 0 {
        return Err(Fault::new(EINVAL, "unknown command flags"));
    }
    let len = u64::from(req.len);
    let in_range = req
        .offset
        .checked_add(len)
        .is_some_and(|end| end <= export.size());
    let writes = matches!(req.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
    if writes && export.is_read_only() {
        return Err(Fault::new(EPERM, "the export is read-only"));
    }
    if !in_range && req.kind != CMD_FLUSH {
        let errno = if req.kind == CMD_WRITE {
            ENOSPC
        } else {
            EINVAL
        };
        return Err(Fault::new(errno, "request past the end of the export"));
    }
    match req.kind {
        CMD_READ if req.len > MAX_BLOCK => Err(Fault::new(EINVAL, "read over the block size")),
        CMD_READ => {
            let started = Instant::now();
            read(w, export, session, req)?;
            export.reads.record(started.elapsed());
            Ok(())
        }
        CMD_WRITE => {
            let data = payload.expect("a write has its payload");
            export.write(req.offset, data, req.flags & CMD_FLAG_FUA != 0)?;
            simple(w, req.cookie, 0)
        }
        CMD_WRITE_ZEROES | CMD_TRIM => {
            let punch = req.kind == CMD_TRIM || req.flags & CMD_FLAG_NO_HOLE == 0;
            export.zero(req.offset, len, punch, req.flags & CMD_FLAG_FUA != 0)?;
            simple(w, req.cookie, 0)
        }
        CMD_FLUSH => {
            export.flush()?;
            simple(w, req.cookie, 0)
        }
        CMD_CACHE => simple(w, req.cookie, 0),
        CMD_BLOCK_STATUS if !session.allocation => Err(Fault::new(
            EINVAL,
            "block status needs the base:allocation context",
        )),
        CMD_BLOCK_STATUS if req.len == 0 => Err(Fault::new(EINVAL, "block status of 0 bytes")),
        CMD_BLOCK_STATUS => block_status(w, export, req),
        _ => Err(Fault::new(EINVAL, "unknown command")),
    }
}

fn io_fault(e: &io::Error) -> Fault {
    Fault::new(EIO, &format!("cannot send the reply: {e}"))
}

/// Writes all of `bufs`, in as few system calls as the socket takes.
fn send(w: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn simple_header(cookie: u64, errno: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    h[4..8].copy_from_slice(&errno.to_be_bytes());
    h[8..16].copy_from_slice(&cookie.to_be_bytes());
    h
}

fn simple(w: &mut impl Write, cookie: u64, errno: u32) -> Result<(), Fault> {
    w.write_all(&simple_header(cookie, errno))
        .map_err(|e| io_fault(&e))
}

/// A structured reply chunk's header followed by the first `extra` bytes of its payload.
fn chunk_header(flags: u16, kind: u16, cookie: u64, len: u32, extra: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(20 + extra.len());
    h.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    h.extend_from_slice(&flags.to_be_bytes());
    h.extend_from_slice(&kind.to_be_bytes());
    h.extend_from_slice(&cookie.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(extra);
    h
}

/// Answers a failed request: an error chunk with structured replies, else a simple reply
/// (with the zeros a read reply's data would have had skipped: the client expects none).
fn error(
    w: &mut impl Write,
    session: &Session,
    req: &Request,
    errno: u32,
    message: &str,
) -> io::Result<()> {
    if !session.structured {
        return simple(w, req.cookie, errno).map_err(|f| io::Error::other(f.message));
    }
    let msg = &message.as_bytes()[..message.len().min(4096)];
    let mut payload = errno.to_be_bytes().to_vec();
    payload.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    payload.extend_from_slice(msg);
    let h = chunk_header(
        REPLY_FLAG_DONE,
        REPLY_ERROR,
        req.cookie,
        payload.len() as u32,
        &payload,
    );
    w.write_all(&h)
}

/// Appends slices covering bytes `from..to` of a read's data (zeros from [`ZEROS`]).
fn slices<'a>(data: &'a Data, from: usize, to: usize, out: &mut Vec<IoSlice<'a>>) {
    let zeros = |mut n: usize, out: &mut Vec<IoSlice<'a>>| {
        while n > 0 {
            let k = n.min(ZEROS.len());
            out.push(IoSlice::new(&ZEROS[..k]));
            n -= k;
        }
    };
    let pieces = match data {
        Data::Buf(buf) => return out.push(IoSlice::new(&buf[from..to])),
        Data::Pieces(pieces) => pieces,
    };
    let mut at = 0;
    for p in pieces {
        let (start, end) = (at.max(from), (at + p.len()).min(to));
        if start < end {
            match p.data() {
                Some(bytes) => out.push(IoSlice::new(&bytes[start - at..end - at])),
                None => zeros(end - start, out),
            }
        }
        at += p.len();
        if at >= to {
            break;
        }
    }
}

/// A read: data and holes as structured chunks (one chunk with `DF`), or a simple reply.
fn read(
    w: &mut impl Write,
    export: &Export,
    session: &Session,
    req: &Request,
) -> Result<(), Fault> {
    let len = u64::from(req.len);
    let runs = export.allocation(req.offset, len);
    let data = export.read(req.offset, len, &runs)?;
    let mut bufs = Vec::new();
    if !session.structured {
        let h = simple_header(req.cookie, 0);
        bufs.push(IoSlice::new(&h));
        slices(&data, 0, req.len as usize, &mut bufs);
        return send(w, &mut bufs).map_err(|e| io_fault(&e));
    }
    let whole_hole = runs.len() == 1 && runs[0].zero;
    let pieces: Vec<(u64, u64, bool)> = if req.flags & CMD_FLAG_DF != 0 || req.len == 0 {
        vec![(req.offset, len, whole_hole)]
    } else {
        runs.iter().map(|r| (r.offset, r.len, r.zero)).collect()
    };
    let last = pieces.len() - 1;
    let headers: Vec<Vec<u8>> = (pieces.iter().enumerate())
        .map(|(k, &(off, n, zero))| {
            let flags = if k == last { REPLY_FLAG_DONE } else { 0 };
            if zero {
                let mut hole = off.to_be_bytes().to_vec();
                hole.extend_from_slice(&(n as u32).to_be_bytes());
                chunk_header(flags, REPLY_OFFSET_HOLE, req.cookie, 12, &hole)
            } else {
                let kind = REPLY_OFFSET_DATA;
                chunk_header(flags, kind, req.cookie, 8 + n as u32, &off.to_be_bytes())
            }
        })
        .collect();
    for (h, &(off, n, zero)) in headers.iter().zip(&pieces) {
        bufs.push(IoSlice::new(h));
        if !zero {
            let at = (off - req.offset) as usize;
            slices(&data, at, at + n as usize, &mut bufs);
        }
    }
    send(w, &mut bufs).map_err(|e| io_fault(&e))
}

/// `base:allocation` for the range asked (one descriptor with `REQ_ONE`).
fn block_status(w: &mut impl Write, export: &Export, req: &Request) -> Result<(), Fault> {
    let mut runs = export.allocation(req.offset, u64::from(req.len));
    let keep = if req.flags & CMD_FLAG_REQ_ONE != 0 {
        1
    } else {
        MAX_DESCRIPTORS
    };
    runs.truncate(keep);
    let mut d = Vec::with_capacity(4 + runs.len() * 8);
    d.extend_from_slice(&ALLOCATION_ID.to_be_bytes());
    for r in &runs {
        let state = if r.zero { STATE_HOLE | STATE_ZERO } else { 0 };
        d.extend_from_slice(&(r.len as u32).to_be_bytes());
        d.extend_from_slice(&state.to_be_bytes());
    }
    let h = chunk_header(
        REPLY_FLAG_DONE,
        REPLY_BLOCK_STATUS,
        req.cookie,
        d.len() as u32,
        &d,
    );
    w.write_all(&h).map_err(|e| io_fault(&e))
}

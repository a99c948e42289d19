//! The transmission phase of one connection: requests are read and answered in order.
//!
//! A request the server cannot frame (bad magic, a write payload over the maximum block
//! size) ends the connection, since the stream cannot be resynchronised; every other bad
//! request (out of range, unknown command or flag, a write to a read-only export, block
//! status without the context) gets an NBD error and the connection goes on.

use std::io::{self, Read, Write};

use crate::nbd::wire::{
    CMD_BLOCK_STATUS, CMD_FLUSH, CMD_READ, CMD_WRITE, CMD_WRITE_ZEROES, REQUEST_MAGIC,
    SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC,
};

use super::export::{Export, Fault, EINVAL, EIO, ENOSPC, EPERM};
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
        CMD_READ => read(w, export, session, req),
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

fn simple(w: &mut impl Write, cookie: u64, errno: u32) -> Result<(), Fault> {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    h[4..8].copy_from_slice(&errno.to_be_bytes());
    h[8..16].copy_from_slice(&cookie.to_be_bytes());
    w.write_all(&h).map_err(|e| io_fault(&e))
}

fn chunk_header(
    w: &mut impl Write,
    flags: u16,
    kind: u16,
    cookie: u64,
    len: u32,
) -> io::Result<()> {
    let mut h = [0u8; 20];
    h[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    h[4..6].copy_from_slice(&flags.to_be_bytes());
    h[6..8].copy_from_slice(&kind.to_be_bytes());
    h[8..16].copy_from_slice(&cookie.to_be_bytes());
    h[16..20].copy_from_slice(&len.to_be_bytes());
    w.write_all(&h)
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
    chunk_header(
        w,
        REPLY_FLAG_DONE,
        REPLY_ERROR,
        req.cookie,
        6 + msg.len() as u32,
    )?;
    w.write_all(&errno.to_be_bytes())?;
    w.write_all(&(msg.len() as u16).to_be_bytes())?;
    w.write_all(msg)
}

/// A read: data and holes as structured chunks (one chunk with `DF`), or a simple reply.
fn read(
    w: &mut impl Write,
    export: &Export,
    session: &Session,
    req: &Request,
) -> Result<(), Fault> {
    let len = u64::from(req.len);
    let mut buf = vec![0u8; req.len as usize];
    let runs = export.allocation(req.offset, len);
    for run in runs.iter().filter(|r| !r.zero) {
        let at = (run.offset - req.offset) as usize;
        export.read(run.offset, &mut buf[at..at + run.len as usize])?;
    }
    if !session.structured {
        simple(w, req.cookie, 0)?;
        return w.write_all(&buf).map_err(|e| io_fault(&e));
    }
    let whole_hole = runs.len() == 1 && runs[0].zero;
    let pieces: Vec<(u64, u64, bool)> = if req.flags & CMD_FLAG_DF != 0 || req.len == 0 {
        vec![(req.offset, len, whole_hole)]
    } else {
        runs.iter().map(|r| (r.offset, r.len, r.zero)).collect()
    };
    let last = pieces.len() - 1;
    let sent = pieces
        .iter()
        .enumerate()
        .try_for_each(|(k, &(off, n, zero))| {
            let flags = if k == last { REPLY_FLAG_DONE } else { 0 };
            if zero {
                chunk_header(w, flags, REPLY_OFFSET_HOLE, req.cookie, 12)?;
                w.write_all(&off.to_be_bytes())?;
                w.write_all(&(n as u32).to_be_bytes())
            } else {
                let at = (off - req.offset) as usize;
                chunk_header(w, flags, REPLY_OFFSET_DATA, req.cookie, 8 + n as u32)?;
                w.write_all(&off.to_be_bytes())?;
                w.write_all(&buf[at..at + n as usize])
            }
        });
    sent.map_err(|e| io_fault(&e))
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
    chunk_header(
        w,
        REPLY_FLAG_DONE,
        REPLY_BLOCK_STATUS,
        req.cookie,
        d.len() as u32,
    )
    .and_then(|()| w.write_all(&d))
    .map_err(|e| io_fault(&e))
}

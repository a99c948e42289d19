//! The server's side of the NBD handshake: fixed newstyle, `NBD_OPT_GO`/`INFO`/`LIST`/
//! `EXPORT_NAME`, structured replies and the `base:allocation` metadata context. Constants
//! shared with the client live in `nbd/wire.rs`; the ones only a server needs are here.
//!
//! Everything read from the client is bounded before it is trusted: option data over
//! [`MAX_OPTION`] ends the connection, and lengths inside an option are checked against the
//! option's own size, so a malformed option gets `NBD_REP_ERR_INVALID`, never a panic.

use std::io::{self, Read, Write};

use crate::nbd::wire::{
    read_bytes, read_u32, read_u64, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT, INFO_BLOCK_SIZE,
    INFO_EXPORT, NBDMAGIC, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO, OPT_LIST_META_CONTEXT,
    OPT_REPLY_MAGIC, OPT_SET_META_CONTEXT, OPT_STRUCTURED_REPLY, REP_ACK, REP_ERR_INVALID,
    REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_INFO, REP_META_CONTEXT,
};

use super::export::Export;

const OPT_LIST: u32 = 3;
const OPT_INFO: u32 = 6;
const REP_SERVER: u32 = 2;
const REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;
const INFO_NAME: u16 = 1;

/// Option data larger than this ends the connection (real options are a few hundred bytes).
const MAX_OPTION: u32 = 64 << 10;
/// The metadata context this server offers, and its id.
pub(super) const ALLOCATION: &str = "base:allocation";
pub(super) const ALLOCATION_ID: u32 = 1;
/// Block sizes announced: any alignment works, 4 KiB is best, 32 MiB at most per request.
pub(super) const MIN_BLOCK: u32 = 1;
pub(super) const PREF_BLOCK: u32 = 4096;
pub(super) const MAX_BLOCK: u32 = 32 << 20;

/// What the handshake agreed on.
pub(super) struct Session {
    /// Index of the export chosen.
    pub export: usize,
    pub structured: bool,
    pub allocation: bool,
}

/// Option state so far.
#[derive(Default)]
struct Agreed {
    structured: bool,
    allocation: bool,
}

/// Runs the handshake; `None` when the client went away or aborted.
pub(super) fn negotiate(
    r: &mut impl Read,
    w: &mut impl Write,
    exports: &[Export],
) -> io::Result<Option<Session>> {
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    w.write_all(&hello)?;
    w.flush()?;
    let client = read_u32(r)?;
    if client & !u32::from(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES) != 0 {
        return Ok(None);
    }
    let no_zeroes = client & u32::from(FLAG_NO_ZEROES) != 0;
    let mut agreed = Agreed::default();
    loop {
        if read_u64(r)? != IHAVEOPT {
            return Ok(None);
        }
        let option = read_u32(r)?;
        let len = read_u32(r)?;
        if len > MAX_OPTION {
            reply(w, option, REP_ERR_TOO_BIG, b"option data too large")?;
            return Ok(None);
        }
        let data = read_bytes(r, len as usize)?;
        let step = match option {
            OPT_EXPORT_NAME => {
                let Some(export) = find(exports, &String::from_utf8_lossy(&data)) else {
                    return Ok(None);
                };
                let e = &exports[export];
                let mut out = Vec::with_capacity(134);
                out.extend_from_slice(&e.size().to_be_bytes());
                out.extend_from_slice(&e.flags().to_be_bytes());
                if !no_zeroes {
                    out.extend_from_slice(&[0; 124]);
                }
                w.write_all(&out)?;
                Step::Go(export)
            }
            OPT_ABORT => {
                reply(w, option, REP_ACK, &[])?;
                Step::Quit
            }
            OPT_LIST => list(w, &data, exports)?,
            OPT_INFO | OPT_GO => info(w, option, &data, exports)?,
            OPT_STRUCTURED_REPLY if !data.is_empty() || agreed.structured => {
                reply(
                    w,
                    option,
                    REP_ERR_INVALID,
                    b"structured replies take no data, once",
                )?;
                Step::Next
            }
            OPT_STRUCTURED_REPLY => {
                agreed.structured = true;
                reply(w, option, REP_ACK, &[])?;
                Step::Next
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                meta(w, option, &data, exports, &mut agreed)?
            }
            _ => {
                reply(w, option, REP_ERR_UNSUP, b"option not supported")?;
                Step::Next
            }
        };
        w.flush()?;
        match step {
            Step::Next => {}
            Step::Quit => return Ok(None),
            Step::Go(export) => {
                return Ok(Some(Session {
                    export,
                    structured: agreed.structured,
                    allocation: agreed.structured && agreed.allocation,
                }))
            }
        }
    }
}

enum Step {
    Next,
    Quit,
    Go(usize),
}

/// The export a client names: by name, or `""` for the only one.
fn find(exports: &[Export], name: &str) -> Option<usize> {
    if name.is_empty() && exports.len() == 1 {
        return Some(0);
    }
    exports.iter().position(|e| e.name == name)
}

fn reply(w: &mut impl Write, option: u32, kind: u32, data: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    w.write_all(&out)
}

fn unknown(w: &mut impl Write, option: u32, name: &str, exports: &[Export]) -> io::Result<Step> {
    let names: Vec<&str> = exports.iter().map(|e| e.name.as_str()).collect();
    let text = format!("no export '{name}'; exports: {}", names.join(", "));
    reply(w, option, REP_ERR_UNKNOWN, text.as_bytes())?;
    Ok(Step::Next)
}

/// Reads a u32-length-prefixed string at `*at`, within `data`.
fn string(data: &[u8], at: &mut usize) -> Option<String> {
    let len = u32::from_be_bytes(data.get(*at..*at + 4)?.try_into().ok()?) as usize;
    let s = data.get(*at + 4..(*at + 4).checked_add(len)?)?;
    *at += 4 + len;
    Some(String::from_utf8_lossy(s).into_owned())
}

fn list(w: &mut impl Write, data: &[u8], exports: &[Export]) -> io::Result<Step> {
    if !data.is_empty() {
        reply(w, OPT_LIST, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data")?;
        return Ok(Step::Next);
    }
    for e in exports {
        let mut d = Vec::with_capacity(4 + e.name.len());
        d.extend_from_slice(&(e.name.len() as u32).to_be_bytes());
        d.extend_from_slice(e.name.as_bytes());
        reply(w, OPT_LIST, REP_SERVER, &d)?;
    }
    reply(w, OPT_LIST, REP_ACK, &[])?;
    Ok(Step::Next)
}

/// `NBD_OPT_INFO` and `NBD_OPT_GO`: the export's size and flags, its block sizes, and its
/// name when asked.
fn info(w: &mut impl Write, option: u32, data: &[u8], exports: &[Export]) -> io::Result<Step> {
    let mut at = 0;
    let parsed = string(data, &mut at).and_then(|name| {
        let n = u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?) as usize;
        let rest = data.get(at + 2..)?;
        (rest.len() == n * 2).then(|| {
            let asked: Vec<u16> = rest
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            (name, asked)
        })
    });
    let Some((name, asked)) = parsed else {
        reply(w, option, REP_ERR_INVALID, b"malformed NBD_OPT_INFO/GO")?;
        return Ok(Step::Next);
    };
    let Some(export) = find(exports, &name) else {
        return unknown(w, option, &name, exports);
    };
    let e = &exports[export];
    let mut d = Vec::with_capacity(12);
    d.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    d.extend_from_slice(&e.size().to_be_bytes());
    d.extend_from_slice(&e.flags().to_be_bytes());
    reply(w, option, REP_INFO, &d)?;
    let mut d = Vec::with_capacity(14);
    d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    for size in [MIN_BLOCK, PREF_BLOCK, MAX_BLOCK] {
        d.extend_from_slice(&size.to_be_bytes());
    }
    reply(w, option, REP_INFO, &d)?;
    if asked.contains(&INFO_NAME) {
        let mut d = INFO_NAME.to_be_bytes().to_vec();
        d.extend_from_slice(e.name.as_bytes());
        reply(w, option, REP_INFO, &d)?;
    }
    reply(w, option, REP_ACK, &[])?;
    Ok(if option == OPT_GO {
        Step::Go(export)
    } else {
        Step::Next
    })
}

/// `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT`: only `base:allocation`.
fn meta(
    w: &mut impl Write,
    option: u32,
    data: &[u8],
    exports: &[Export],
    agreed: &mut Agreed,
) -> io::Result<Step> {
    if !agreed.structured {
        reply(
            w,
            option,
            REP_ERR_INVALID,
            b"negotiate structured replies first",
        )?;
        return Ok(Step::Next);
    }
    let mut at = 0;
    let parsed = string(data, &mut at).and_then(|name| {
        let n = u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        let queries = (0..n)
            .map(|_| string(data, &mut at))
            .collect::<Option<Vec<_>>>()?;
        (at == data.len()).then_some((name, queries))
    });
    let Some((name, queries)) = parsed else {
        reply(
            w,
            option,
            REP_ERR_INVALID,
            b"malformed metadata context option",
        )?;
        return Ok(Step::Next);
    };
    if find(exports, &name).is_none() {
        return unknown(w, option, &name, exports);
    }
    let set = option == OPT_SET_META_CONTEXT;
    let wanted = queries.iter().any(|q| q == ALLOCATION)
        || (!set && (queries.is_empty() || queries.iter().any(|q| q == "base:")));
    if set {
        agreed.allocation = wanted;
    }
    if wanted {
        let mut d = ALLOCATION_ID.to_be_bytes().to_vec();
        d.extend_from_slice(ALLOCATION.as_bytes());
        reply(w, option, REP_META_CONTEXT, &d)?;
    }
    reply(w, option, REP_ACK, &[])?;
    Ok(Step::Next)
}

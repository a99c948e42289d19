//! One disk as an NBD export, and the NBD error a request gets.

use crate::reader::{Latencies, Piece, Run, SnapshotReader};
use crate::{Error, Result};

use super::overlay::Overlay;
use crate::nbd::wire::{
    FLAG_CAN_MULTI_CONN, FLAG_HAS_FLAGS, FLAG_READ_ONLY, FLAG_SEND_FLUSH, FLAG_SEND_WRITE_ZEROES,
};

const FLAG_SEND_FUA: u16 = 1 << 3;
const FLAG_SEND_TRIM: u16 = 1 << 5;
const FLAG_SEND_DF: u16 = 1 << 7;
const FLAG_SEND_FAST_ZERO: u16 = 1 << 11;

/// NBD error numbers (fixed by the protocol, not the host's errno values).
pub(super) const EPERM: u32 = 1;
pub(super) const EIO: u32 = 5;
pub(super) const EINVAL: u32 = 22;
pub(super) const ENOSPC: u32 = 28;

/// An NBD error for one request: the protocol's error number and a message for the log.
pub(crate) struct Fault {
    pub(super) errno: u32,
    pub(super) message: String,
}

impl Fault {
    pub(super) fn new(errno: u32, message: &str) -> Self {
        Fault {
            errno,
            message: message.into(),
        }
    }

    pub(super) fn io(e: &Error) -> Self {
        tracing::warn!("NBD request failed: {}", crate::one_line(e));
        Fault::new(EIO, &crate::one_line(e))
    }
}

/// The bytes a read replies with.
pub(super) enum Data {
    /// Straight from the reader's cache: written out without a copy (issue 15).
    Pieces(Vec<Piece>),
    /// Read through an overlay into a buffer.
    Buf(Vec<u8>),
}

/// One disk as an export: the snapshot's bytes, under an overlay when writable.
pub(crate) struct Export {
    pub(super) name: String,
    pub(super) reader: SnapshotReader,
    pub(super) overlay: Option<Overlay>,
    /// How long read requests took, from the request read to the reply written.
    pub(super) reads: Latencies,
}

impl Export {
    pub(super) fn size(&self) -> u64 {
        self.reader.len()
    }

    pub(super) fn is_read_only(&self) -> bool {
        self.overlay.is_none()
    }

    /// Both kinds announce `CAN_MULTI_CONN`: connections share one overlay, so a flush on
    /// any of them makes every acknowledged write durable.
    pub(super) fn flags(&self) -> u16 {
        let common = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_DF | FLAG_CAN_MULTI_CONN;
        match self.overlay {
            None => common | FLAG_READ_ONLY,
            Some(_) => {
                common
                    | FLAG_SEND_FUA
                    | FLAG_SEND_TRIM
                    | FLAG_SEND_WRITE_ZEROES
                    | FLAG_SEND_FAST_ZERO
            }
        }
    }

    pub(super) fn allocation(&self, offset: u64, len: u64) -> Vec<Run> {
        match &self.overlay {
            None => self.reader.allocation(offset, len),
            Some(o) => o.allocation(&self.reader, offset, len),
        }
    }

    /// The `len` bytes at `offset`, whose allocation is `runs` (only data runs are read).
    pub(super) fn read(&self, offset: u64, len: u64, runs: &[Run]) -> Result<Data, Fault> {
        let Some(o) = &self.overlay else {
            let pieces = self.reader.pieces(offset, len);
            return pieces.map(Data::Pieces).map_err(|e| Fault::io(&e));
        };
        let mut buf = vec![0u8; len as usize];
        for run in runs.iter().filter(|r| !r.zero) {
            let at = (run.offset - offset) as usize;
            o.read(
                &self.reader,
                run.offset,
                &mut buf[at..at + run.len as usize],
            )
            .map_err(|e| Fault::io(&e))?;
        }
        Ok(Data::Buf(buf))
    }

    pub(super) fn overlay(&self) -> Result<&Overlay, Fault> {
        self.overlay
            .as_ref()
            .ok_or_else(|| Fault::new(EPERM, "the export is read-only"))
    }

    pub(super) fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), Fault> {
        let o = self.overlay()?;
        o.write(&self.reader, offset, data)
            .map_err(|e| Fault::io(&e))?;
        if fua {
            self.flush()?;
        }
        Ok(())
    }

    pub(super) fn zero(&self, offset: u64, len: u64, punch: bool, fua: bool) -> Result<(), Fault> {
        let o = self.overlay()?;
        o.zero(&self.reader, offset, len, punch)
            .map_err(|e| Fault::io(&e))?;
        if fua {
            self.flush()?;
        }
        Ok(())
    }

    pub(super) fn flush(&self) -> Result<(), Fault> {
        match &self.overlay {
            None => Ok(()),
            Some(o) => o.flush().map_err(|e| Fault::io(&e)),
        }
    }
}

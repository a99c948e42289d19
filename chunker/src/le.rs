//! The little-endian codec every on-disk and on-tape structure of mover is written with: a
//! [`Writer`] that appends fields to a buffer and a [`Reader`] that takes them off a slice,
//! bounds-checked, failing with [`Error::CorruptStructure`] named after the structure read.
//!
//! Fields are fixed-width little-endian integers, raw byte strings, and strings with a `u16`
//! length prefix. Magic, version and checksum rules belong to each format, not to the codec.
//!
//! ```
//! use chunker::le::{Reader, Writer};
//!
//! let mut w = Writer::with_capacity(16);
//! w.u32(7);
//! w.str16("sda").unwrap();
//! let bytes = w.into_vec();
//! let mut r = Reader::new("example", &bytes);
//! assert_eq!(r.u32().unwrap(), 7);
//! assert_eq!(r.str16().unwrap(), "sda");
//! r.end().unwrap();
//! ```

use crate::{Error, Result};

/// Appends little-endian fields to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// A writer that appends to `buf`.
    pub fn from_vec(buf: Vec<u8>) -> Self {
        Writer { buf }
    }

    /// Appends a byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Appends a `u16`.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a `u32`.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a `u64`.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends an `i64` (two's complement, as a `u64`).
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// Appends `n` zero bytes (reserved fields).
    pub fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }

    /// Appends bytes with a `u16` length prefix; `None` (and nothing appended) when longer
    /// than 65535 bytes.
    pub fn bytes16(&mut self, v: &[u8]) -> Option<()> {
        self.u16(u16::try_from(v.len()).ok()?);
        self.bytes(v);
        Some(())
    }

    /// Appends a UTF-8 string with a `u16` length prefix; `None` when longer than 65535 bytes.
    pub fn str16(&mut self, s: &str) -> Option<()> {
        self.bytes16(s.as_bytes())
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The buffer, for appending what the codec does not write itself (a sealed message).
    pub fn as_mut_vec(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// The bytes written.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes written, followed by the BLAKE3 of all of them (32 bytes).
    pub fn into_checksummed(mut self) -> Vec<u8> {
        let sum = blake3::hash(&self.buf);
        self.buf.extend_from_slice(sum.as_bytes());
        self.buf
    }
}

/// Takes little-endian fields off a slice. Every read is bounds-checked; a failure names the
/// structure (`what`) being read.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    what: &'static str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`, which holds a `what` (named in errors).
    pub fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Reader { what, buf, pos: 0 }
    }

    /// The structure being read, as named in errors.
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// An error about the structure being read.
    pub fn error(&self, detail: impl Into<String>) -> Error {
        Error::CorruptStructure {
            what: self.what,
            detail: detail.into(),
        }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| self.error("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Skips `n` bytes (reserved fields).
    pub fn skip(&mut self, n: usize) -> Result<()> {
        self.take(n).map(drop)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// A `u16`.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// A `u32`.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A `u64`.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// An `i64`.
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Bytes with a `u16` length prefix.
    pub fn bytes16(&mut self) -> Result<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// A UTF-8 string with a `u16` length prefix.
    pub fn str16(&mut self) -> Result<String> {
        let b = self.bytes16()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.error("string not UTF-8"))
    }

    /// A `u32` count of items that take at least `min_item` bytes each, refused when the rest
    /// of the buffer cannot hold them (so a damaged count cannot make a reader allocate).
    pub fn count(&mut self, min_item: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.remaining() {
            return Err(self.error("count larger than the rest"));
        }
        Ok(n)
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Everything not yet read (the reader is then at the end).
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    /// Fails unless every byte was read.
    pub fn end(&self) -> Result<()> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.error("trailing bytes"))
        }
    }
}

/// A fixed-width little-endian integer field: what [`push`] and [`put_at`] write.
pub trait Field: Copy {
    /// The field's width in bytes.
    const WIDTH: usize;
    /// Writes the field into `dst`, exactly [`Field::WIDTH`] bytes.
    fn write(self, dst: &mut [u8]);
}

/// Appends the field `v` to `out`.
#[inline]
pub fn push<T: Field>(out: &mut Vec<u8>, v: T) {
    let at = out.len();
    out.resize(at + T::WIDTH, 0);
    v.write(&mut out[at..]);
}

/// Writes the field `v` at byte `at` of `b`, which the caller has sized (a frame header, a
/// record slot); a slice too short is a bug in the caller and panics.
#[inline]
pub fn put_at<T: Field>(b: &mut [u8], at: usize, v: T) {
    v.write(&mut b[at..at + T::WIDTH]);
}

/// Fields at known offsets of a record whose length the caller has already checked: each
/// getter panics on a slice too short, which is a bug in the caller, never bad input (bad
/// input goes through a [`Reader`]).
macro_rules! fixed_at {
    ($($get:ident $t:ty;)*) => {$(
        impl Field for $t {
            const WIDTH: usize = std::mem::size_of::<$t>();
            #[inline]
            fn write(self, dst: &mut [u8]) {
                dst.copy_from_slice(&self.to_le_bytes());
            }
        }

        #[doc = concat!("The `", stringify!($t), "` at byte `at` of `b`.")]
        #[inline]
        pub fn $get(b: &[u8], at: usize) -> $t {
            let mut a = [0u8; std::mem::size_of::<$t>()];
            a.copy_from_slice(&b[at..at + std::mem::size_of::<$t>()]);
            <$t>::from_le_bytes(a)
        }
    )*};
}

fixed_at! {
    u16_at u16;
    u32_at u32;
    u64_at u64;
    i64_at i64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_field() {
        let mut w = Writer::new();
        w.u8(1);
        w.u16(0x0203);
        w.u32(0x0405_0607);
        w.u64(0x0809_0a0b_0c0d_0e0f);
        w.i64(-2);
        w.zeros(3);
        w.bytes(b"ab");
        w.str16("é").unwrap();
        w.bytes16(b"xyz").unwrap();
        w.u32(2);
        w.bytes(&[7; 8]);
        let bytes = w.into_vec();
        assert_eq!(bytes[..3], [1, 3, 2], "little-endian");
        let mut r = Reader::new("test", &bytes);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16().unwrap(), 0x0203);
        assert_eq!(r.u32().unwrap(), 0x0405_0607);
        assert_eq!(r.u64().unwrap(), 0x0809_0a0b_0c0d_0e0f);
        assert_eq!(r.i64().unwrap(), -2);
        r.skip(3).unwrap();
        assert_eq!(r.array::<2>().unwrap(), *b"ab");
        assert_eq!(r.str16().unwrap(), "é");
        assert_eq!(r.bytes16().unwrap(), b"xyz");
        assert_eq!(r.count(4).unwrap(), 2);
        assert_eq!(r.rest(), &[7; 8]);
        r.end().unwrap();
    }

    #[test]
    fn refuses_short_long_and_oversized_input() {
        let mut r = Reader::new("thing", &[1, 2, 3]);
        let e = r.u32().unwrap_err().to_string();
        assert!(e.contains("thing") && e.contains("truncated"), "{e}");
        assert_eq!(r.u16().unwrap(), 0x0201, "a failed read consumes nothing");
        assert!(r.end().is_err());
        let mut r = Reader::new("thing", &[9, 0, 0, 0, 1]);
        assert!(r.count(1).is_err(), "9 items cannot fit in 1 byte");
        let mut r = Reader::new("thing", &[2, 0, 0xff, 0xfe]);
        assert!(r.str16().is_err());
        let mut w = Writer::new();
        assert_eq!(w.str16(&"x".repeat(70_000)), None);
        assert!(w.is_empty(), "nothing appended");
        let sum = Writer::from_vec(b"ab".to_vec()).into_checksummed();
        assert_eq!(sum[2..], blake3::hash(b"ab").as_bytes()[..]);
    }

    #[test]
    fn fixed_offsets_round_trip() {
        let mut b = vec![0u8; 16];
        put_at(&mut b, 1, 0x0102u16);
        put_at(&mut b, 3, 0x0304_0506u32);
        put_at(&mut b, 8, 0x0708_090a_0b0c_0d0eu64);
        assert_eq!(b[1..3], [2, 1], "little-endian");
        assert_eq!(u16_at(&b, 1), 0x0102);
        assert_eq!(u32_at(&b, 3), 0x0304_0506);
        assert_eq!(u64_at(&b, 8), 0x0708_090a_0b0c_0d0e);
        let mut v = Vec::new();
        push(&mut v, 1u16);
        push(&mut v, 2u32);
        push(&mut v, 3u64);
        assert_eq!(v.len(), 14);
        assert_eq!((u16_at(&v, 0), u32_at(&v, 2), u64_at(&v, 6)), (1, 2, 3));
    }
}

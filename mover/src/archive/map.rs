//! Map frames: mover's use of the archive format's opaque map payload (see the module above).

use chunker::le::{Reader, Writer};
use chunker::ChunkId;

pub(super) const MAP_VERSION: u8 = 1;
pub(super) const MAP_ENTRY: usize = 57;
/// A map frame is flushed before the next chunk frame, or when it grows this large.
pub(super) const MAP_FLUSH: usize = 1 << 20;

/// One placed entry, as carried by a map frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Placed {
    pub(super) disk: u32,
    pub(super) index: u64,
    pub(super) offset: u64,
    pub(super) len: u32,
    pub(super) id: Option<ChunkId>,
}

pub(super) fn encode_entry(out: &mut Vec<u8>, p: &Placed) {
    let mut w = Writer::from_vec(std::mem::take(out));
    w.u32(p.disk);
    w.u64(p.index);
    w.u64(p.offset);
    w.u32(p.len);
    w.u8(u8::from(p.id.is_some()));
    w.bytes(p.id.as_ref().map_or(&[0; 32], |id| id.as_bytes()));
    *out = w.into_vec();
}

pub(super) fn decode_map(buf: &[u8]) -> Option<Vec<Placed>> {
    let mut r = Reader::new("archive map", buf);
    if r.u8().ok()? != MAP_VERSION {
        return None;
    }
    let count = r.u32().ok()? as usize;
    if buf.len() - 5 != count.checked_mul(MAP_ENTRY)? {
        return None;
    }
    (0..count)
        .map(|_| {
            let (disk, index, offset, len) =
                (r.u32().ok()?, r.u64().ok()?, r.u64().ok()?, r.u32().ok()?);
            let kind = r.u8().ok()?;
            let id = r.array::<32>().ok()?;
            let id = match kind {
                0 => None,
                1 => Some(ChunkId::from_bytes(id)),
                _ => return None,
            };
            Some(Placed {
                disk,
                index,
                offset,
                len,
                id,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_entries_round_trip() {
        let a = Placed {
            disk: 1,
            index: 7,
            offset: 7 << 20,
            len: 1 << 20,
            id: Some(ChunkId::of(b"x")),
        };
        let z = Placed { id: None, ..a };
        let mut body = Vec::new();
        encode_entry(&mut body, &a);
        encode_entry(&mut body, &z);
        let mut payload = vec![MAP_VERSION];
        chunker::le::push(&mut payload, 2u32);
        payload.extend_from_slice(&body);
        assert_eq!(decode_map(&payload), Some(vec![a, z]));
        assert_eq!(decode_map(&payload[..payload.len() - 1]), None);
        payload[0] = 9;
        assert_eq!(decode_map(&payload), None);
    }
}

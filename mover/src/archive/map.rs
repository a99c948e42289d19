//! Map frames: mover's use of the archive format's opaque map payload (see the module above).

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
    out.extend_from_slice(&p.disk.to_le_bytes());
    out.extend_from_slice(&p.index.to_le_bytes());
    out.extend_from_slice(&p.offset.to_le_bytes());
    out.extend_from_slice(&p.len.to_le_bytes());
    out.push(u8::from(p.id.is_some()));
    out.extend_from_slice(p.id.as_ref().map_or(&[0; 32], |id| id.as_bytes()));
}

pub(super) fn decode_map(buf: &[u8]) -> Option<Vec<Placed>> {
    let (&version, rest) = buf.split_first()?;
    if version != MAP_VERSION || rest.len() < 4 {
        return None;
    }
    let count = u32::from_le_bytes(rest[..4].try_into().ok()?) as usize;
    let body = &rest[4..];
    if body.len() != count.checked_mul(MAP_ENTRY)? {
        return None;
    }
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8"));
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4"));
    body.chunks_exact(MAP_ENTRY)
        .map(|e| {
            let id = match e[24] {
                0 => None,
                1 => Some(ChunkId::from_bytes(e[25..57].try_into().expect("32"))),
                _ => return None,
            };
            Some(Placed {
                disk: u32_at(e, 0),
                index: u64_at(e, 4),
                offset: u64_at(e, 12),
                len: u32_at(e, 20),
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
        payload.extend_from_slice(&2u32.to_le_bytes());
        payload.extend_from_slice(&body);
        assert_eq!(decode_map(&payload), Some(vec![a, z]));
        assert_eq!(decode_map(&payload[..payload.len() - 1]), None);
        payload[0] = 9;
        assert_eq!(decode_map(&payload), None);
    }
}

//! Ranged reads of packs: chunks asked for together that lie near each other in one pack are
//! read with one request (from remote backends; a local pack is read chunk by chunk, see
//! `read_span`).

use chunker::format::{BlobEntry, ObjectId};

/// Most bytes between two chunks of one pack that a read spans rather than split in two:
/// one request costs the server more than reading a little further (Garage, for one, reads
/// whole 1 MiB blocks either way).
pub(super) const READ_THROUGH: u64 = 1 << 20;

/// One ranged read of a pack that serves several chunks of a [`ChunkStore::get_many`] call.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) pack: ObjectId,
    /// Byte range in the pack.
    pub(super) start: u64,
    pub(super) end: u64,
    /// Positions in the request of the chunks it serves, in pack order.
    pub(super) members: Vec<usize>,
}

/// Groups located chunks into ranged reads: sorted by pack and offset, neighbours (at most
/// [`READ_THROUGH`] bytes apart) share one read. A backup's workers finish chunks in any
/// order, so chunks that neighbour in the image neighbour in the pack only as a set; this
/// finds them whatever order they are asked for in. Chunks asked for twice share a read.
pub(super) fn pack_spans(located: &[Option<(ObjectId, BlobEntry)>]) -> Vec<Span> {
    let mut order: Vec<(ObjectId, u64, u64, usize)> = located
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            l.map(|(pack, b)| {
                let start = u64::from(b.offset);
                (pack, start, start + u64::from(b.stored_len), i)
            })
        })
        .collect();
    order.sort_unstable_by_key(|&(pack, start, _, i)| (pack, start, i));
    let mut spans: Vec<Span> = Vec::new();
    for (pack, start, end, i) in order {
        match spans.last_mut() {
            Some(s) if s.pack == pack && start <= s.end + READ_THROUGH => {
                s.end = s.end.max(end);
                s.members.push(i);
            }
            _ => spans.push(Span {
                pack,
                start,
                end,
                members: vec![i],
            }),
        }
    }
    spans
}

/// Cuts the bytes of a [`Span`], as they arrive in pieces, into the stored bytes of its
/// chunks: each piece is copied once, into the chunks it overlaps (bytes between chunks are
/// dropped).
pub(super) struct Cutter {
    /// Position in the request, offset in the span, stored bytes so far; by offset.
    parts: Vec<(usize, u64, Vec<u8>)>,
    /// Lengths of the parts' stored bytes.
    lens: Vec<u64>,
    /// Bytes of the span seen so far.
    seen: u64,
    /// Parts before this one are complete.
    next: usize,
}

impl Cutter {
    pub(super) fn new(span: &Span, located: &[Option<(ObjectId, BlobEntry)>]) -> Self {
        let (parts, lens) = span
            .members
            .iter()
            .map(|&i| {
                let (_, b) = located[i].expect("span members are located");
                let len = u64::from(b.stored_len);
                let at = u64::from(b.offset) - span.start;
                ((i, at, Vec::with_capacity(len as usize)), len)
            })
            .unzip();
        Cutter {
            parts,
            lens,
            seen: 0,
            next: 0,
        }
    }

    /// The next `piece` of the span.
    pub(super) fn feed(&mut self, piece: &[u8]) {
        let (start, end) = (self.seen, self.seen + piece.len() as u64);
        for (j, (_, at, bytes)) in self.parts.iter_mut().enumerate().skip(self.next) {
            if *at >= end {
                break;
            }
            let from = start.max(*at);
            let to = end.min(*at + self.lens[j]);
            if from < to {
                bytes.extend_from_slice(&piece[(from - start) as usize..(to - start) as usize]);
            }
        }
        self.seen = end;
        while self.next < self.parts.len() && self.parts[self.next].1 + self.lens[self.next] <= end
        {
            self.next += 1;
        }
    }

    /// Each chunk's position in the request and stored bytes; `None` unless every chunk came
    /// whole.
    pub(super) fn finish(self) -> Option<Vec<(usize, Vec<u8>)>> {
        let whole = self.next == self.parts.len();
        whole.then(|| self.parts.into_iter().map(|(i, _, b)| (i, b)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chunker::ChunkId;

    fn at(pack: u8, offset: u32, len: u32) -> Option<(ObjectId, BlobEntry)> {
        let blob = BlobEntry {
            id: ChunkId::of(&[pack, offset as u8]),
            offset,
            stored_len: len,
            raw_len: len,
            compression: chunker::Compression::None,
        };
        Some((ObjectId([pack; 32]), blob))
    }

    fn ranges(spans: &[Span]) -> Vec<(u8, u64, u64, Vec<usize>)> {
        spans
            .iter()
            .map(|s| (s.pack.0[0], s.start, s.end, s.members.clone()))
            .collect()
    }

    #[test]
    fn neighbours_in_a_pack_share_a_read_in_any_order() {
        // Stored as 30, 10, 20 (workers finished out of order); asked for as 10, 20, 30.
        let located = [at(1, 130, 30), at(1, 100, 30), at(1, 160, 5)];
        let spans = pack_spans(&located);
        assert_eq!(ranges(&spans), vec![(1, 100, 165, vec![1, 0, 2])]);
    }

    #[test]
    fn other_packs_gaps_repeats_and_unknown_chunks() {
        let gap = READ_THROUGH as u32;
        let located = [
            at(2, 0, 10),
            at(1, 50, 10),
            None,
            at(1, 60 + gap, 10),         // a gap it reads through
            at(1, 50, 10),               // asked for twice: one read
            at(1, 70 + 2 * gap + 1, 10), // a gap one byte too long: a second read
        ];
        let spans = pack_spans(&located);
        let far = u64::from(70 + 2 * gap + 1);
        assert_eq!(
            ranges(&spans),
            vec![
                (1, 50, u64::from(70 + gap), vec![1, 4, 3]),
                (1, far, far + 10, vec![5]),
                (2, 0, 10, vec![0])
            ]
        );
    }

    #[test]
    fn pieces_of_any_size_are_cut_into_the_chunks_of_a_span() {
        // Gaps between chunks, a chunk asked for twice, chunks out of request order.
        let located = [
            at(1, 40, 7),
            at(1, 10, 5),
            None,
            at(1, 15, 20),
            at(1, 10, 5),
        ];
        let span = pack_spans(&located).remove(0);
        let bytes: Vec<u8> = (span.start..span.end).map(|b| b as u8).collect();
        let want = |i: usize| {
            let (_, b) = located[i].unwrap();
            let at = (u64::from(b.offset) - span.start) as usize;
            bytes[at..at + b.stored_len as usize].to_vec()
        };
        for size in [1, 2, 3, 5, 7, 11, bytes.len()] {
            let mut cut = Cutter::new(&span, &located);
            bytes.chunks(size).for_each(|p| cut.feed(p));
            let mut got = cut.finish().expect("every chunk whole");
            got.sort();
            let expected: Vec<_> = [0, 1, 3, 4].iter().map(|&i| (i, want(i))).collect();
            assert_eq!(got, expected, "pieces of {size}");
        }
        // A span cut short leaves a chunk incomplete.
        let mut cut = Cutter::new(&span, &located);
        cut.feed(&bytes[..bytes.len() - 1]);
        assert!(cut.finish().is_none());
    }
}

/// What is known about a region of a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentKind {
    /// Allocated data that must be read.
    Data,
    /// Known to read as zeros (a hole, or an unallocated range): never read.
    Zero,
    /// Unchanged since the parent snapshot (from a change map): taken from the parent.
    Unchanged,
}

/// A region of a source, `offset..offset + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Start, in bytes.
    pub offset: u64,
    /// Length, in bytes.
    pub len: u64,
    /// What the region holds.
    pub kind: ExtentKind,
}

impl Extent {
    /// End offset (exclusive).
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// One fixed chunk of an image and whether any byte of it may hold data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSpan {
    /// Chunk number, from 0.
    pub index: u64,
    /// Start, in bytes (`index * chunk_size`).
    pub offset: u64,
    /// Length: the chunk size, or less for the last chunk.
    pub len: u32,
    /// False when the whole span lies in `Zero` extents, so it need not be read.
    pub has_data: bool,
}

/// Maps sorted, non-overlapping extents covering `0..len` onto fixed, aligned chunks.
///
/// A chunk is `has_data` when any byte of it lies in a `Data` or `Unchanged` extent. Regions
/// the extents do not cover are treated as data (never skip what you do not know).
pub fn fixed_chunks(
    len: u64,
    chunk_size: u32,
    extents: impl IntoIterator<Item = Extent>,
) -> impl Iterator<Item = ChunkSpan> {
    let cs = u64::from(chunk_size);
    let count = len.div_ceil(cs);
    let mut zero_ranges = extents
        .into_iter()
        .filter(|e| e.kind == ExtentKind::Zero)
        .peekable();
    (0..count).map(move |index| {
        let offset = index * cs;
        let end = (offset + cs).min(len);
        // Is [offset, end) fully covered by zero extents? Extents are sorted and
        // non-overlapping, so walk them forward.
        let mut pos = offset;
        while let Some(z) = zero_ranges.peek() {
            if z.end() <= pos {
                zero_ranges.next();
                continue;
            }
            if z.offset > pos {
                break;
            }
            pos = z.end().min(end);
            if pos >= end {
                break;
            }
        }
        ChunkSpan {
            index,
            offset,
            len: (end - offset) as u32,
            has_data: pos < end,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn z(offset: u64, len: u64) -> Extent {
        Extent {
            offset,
            len,
            kind: ExtentKind::Zero,
        }
    }
    fn d(offset: u64, len: u64) -> Extent {
        Extent {
            offset,
            len,
            kind: ExtentKind::Data,
        }
    }

    #[test]
    fn holes_map_to_chunks() {
        // 10 units of 4; zero 0..8, data 8..9, zero 9..40 (chunk 4 spans 16..20 fully zero).
        let spans: Vec<_> = fixed_chunks(38, 4, [z(0, 8), d(8, 1), z(9, 29)]).collect();
        assert_eq!(spans.len(), 10);
        let data: Vec<u64> = spans
            .iter()
            .filter(|s| s.has_data)
            .map(|s| s.index)
            .collect();
        assert_eq!(data, vec![2]);
        assert_eq!(spans[9].len, 2);
    }

    #[test]
    fn uncovered_is_data() {
        let spans: Vec<_> = fixed_chunks(16, 4, [z(0, 5)]).collect();
        let data: Vec<bool> = spans.iter().map(|s| s.has_data).collect();
        assert_eq!(data, vec![false, true, true, true]);
    }

    #[test]
    fn zero_extent_split_across_boundaries() {
        let spans: Vec<_> = fixed_chunks(8, 4, [z(0, 2), z(2, 2), z(4, 1), d(5, 3)]).collect();
        assert!(!spans[0].has_data);
        assert!(spans[1].has_data);
    }

    #[test]
    fn empty_source_has_no_chunks() {
        assert_eq!(fixed_chunks(0, 4, []).count(), 0);
    }
}

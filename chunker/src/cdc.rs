use std::io::Read;

use crate::{Error, Result};

/// FastCDC bounds `(min, avg, max)` for a target average chunk size: `avg/4`, `avg`, `avg*4`,
/// clamped to what FastCDC accepts.
pub fn cdc_bounds(avg: u32) -> (u32, u32, u32) {
    use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MINIMUM_MAX};
    let avg = avg.clamp(AVERAGE_MIN, AVERAGE_MAX);
    (
        (avg / 4).min(MINIMUM_MAX),
        avg,
        avg.saturating_mul(4).min(MAXIMUM_MAX),
    )
}

/// Cuts a stream of unknown length into content-defined chunks (FastCDC 2020), so an insert
/// or delete early in a stream does not shift every later chunk.
pub struct StreamChunker<R: Read> {
    inner: fastcdc::v2020::StreamCDC<R>,
}

impl<R: Read> StreamChunker<R> {
    /// Chunks `reader` around an average of `avg` bytes (see [`cdc_bounds`]).
    pub fn new(reader: R, avg: u32) -> Self {
        let (min, avg, max) = cdc_bounds(avg);
        StreamChunker {
            inner: fastcdc::v2020::StreamCDC::new(reader, min, avg, max),
        }
    }
}

impl<R: Read> Iterator for StreamChunker<R> {
    /// The next chunk's bytes, in stream order.
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|r| {
            r.map(|c| c.data).map_err(|e| match e {
                fastcdc::v2020::Error::IoError(io) => Error::Read(io),
                other => Error::Read(std::io::Error::other(other.to_string())),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    #[test]
    fn chunks_stay_in_bounds_and_resync_after_insert() {
        let data = noise(3 << 20, 7);
        let (min, _, max) = cdc_bounds(256 * 1024);
        let a: Vec<Vec<u8>> = StreamChunker::new(&data[..], 256 * 1024)
            .collect::<Result<_>>()
            .unwrap();
        for c in &a[..a.len() - 1] {
            assert!(c.len() >= min as usize && c.len() <= max as usize);
        }
        let mut shifted = b"inserted".to_vec();
        shifted.extend_from_slice(&data);
        let b: Vec<Vec<u8>> = StreamChunker::new(&shifted[..], 256 * 1024)
            .collect::<Result<_>>()
            .unwrap();
        let shared = a.iter().filter(|c| b.contains(c)).count();
        assert!(
            shared + 2 >= a.len(),
            "only {shared} of {} chunks survived an insert",
            a.len()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn chunks_concatenate_to_input(len in 0usize..600_000, seed in any::<u64>()) {
            let data = noise(len, seed);
            let chunks: Vec<Vec<u8>> =
                StreamChunker::new(&data[..], 64 * 1024).collect::<Result<_>>().unwrap();
            prop_assert_eq!(chunks.concat(), data);
        }
    }
}

use crate::{ChunkId, Error, IdKey, Result};

/// How a frame's bytes are encoded. Stored as one byte; see `docs/FORMAT.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    /// The plaintext itself (used when compression does not shrink the chunk).
    None = 0,
    /// One zstd frame.
    Zstd = 1,
}

impl Compression {
    /// Decodes the stored byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// A chunk as stored: its encoded bytes, the encoding and the plaintext length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Encoding of `bytes`.
    pub compression: Compression,
    /// Length of the plaintext.
    pub raw_len: u32,
    /// The stored bytes.
    pub bytes: Vec<u8>,
}

/// Returns true when every byte of `buf` is zero. Runs at memory speed.
pub fn is_zero(buf: &[u8]) -> bool {
    const ZEROS: [u8; 4096] = [0; 4096];
    let mut chunks = buf.chunks_exact(ZEROS.len());
    // `==` on slices is a memcmp, vectorised by libc.
    chunks.all(|c| c == ZEROS) && chunks.remainder().iter().all(|&b| b == 0)
}

/// Compresses chunks. Keeps one zstd context, so reuse it for many chunks (one per thread).
pub struct Encoder {
    level: i32,
    zstd: zstd::bulk::Compressor<'static>,
    probe: zstd::bulk::Compressor<'static>,
    probe_out: Vec<u8>,
}

/// Chunks at least this large are probed before they are compressed.
const PROBE_MIN: usize = 128 * 1024;
/// Samples taken by the probe, and their size.
const PROBE_SAMPLES: usize = 8;
const PROBE_LEN: usize = 4096;
/// The most a `PROBE_LEN` sample can take once compressed (zstd's `ZSTD_COMPRESSBOUND`).
const PROBE_BOUND: usize = PROBE_LEN + (PROBE_LEN >> 8) + ((128 * 1024 - PROBE_LEN) >> 11);

impl Encoder {
    /// An encoder at zstd `level` (1..=19; 0 means zstd's default).
    pub fn new(level: i32) -> Self {
        let zstd = zstd::bulk::Compressor::new(level).expect("zstd context allocation succeeds");
        let probe = zstd::bulk::Compressor::new(1).expect("zstd context allocation succeeds");
        Encoder {
            level,
            zstd,
            probe,
            probe_out: Vec::with_capacity(2 * PROBE_LEN),
        }
    }

    /// Whether `data` looks incompressible (already compressed, encrypted or random): a few
    /// small samples spread over it are compressed at level 1, which costs ~1 % of
    /// compressing the whole chunk and saves the full zstd pass on such data (measured: about
    /// a third of a typical VM image).
    pub fn probe_incompressible(&mut self, data: &[u8]) -> bool {
        if data.len() < PROBE_MIN {
            return false;
        }
        let step = (data.len() - PROBE_LEN) / (PROBE_SAMPLES - 1);
        // The samples together at ≥ 97 % of their size: nothing for zstd to find here.
        let threshold = PROBE_SAMPLES * PROBE_LEN * 97;
        let mut packed = 0;
        for i in 0..PROBE_SAMPLES {
            let sample = &data[i * step..i * step + PROBE_LEN];
            self.probe_out.clear();
            match self.probe.compress_to_buffer(sample, &mut self.probe_out) {
                Ok(n) => packed += n,
                Err(_) => packed += PROBE_LEN,
            }
            // Stop as soon as the samples left could not reach the threshold even if none of
            // them shrank (each at most zstd's bound): on compressible data (most chunks of a
            // real disk) one sample decides, not eight. The answer is the same as with all.
            let left = PROBE_SAMPLES - 1 - i;
            if (packed + left * PROBE_BOUND) * 100 < threshold {
                return false;
            }
        }
        packed * 100 >= threshold
    }

    /// The zstd level this encoder uses.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Encodes `data`: zstd when that saves at least 1/64 of the size, the plaintext otherwise.
    /// Data that a quick probe finds incompressible is stored raw without a full zstd pass.
    pub fn encode(&mut self, data: &[u8]) -> Frame {
        if self.probe_incompressible(data) {
            return Frame {
                compression: Compression::None,
                raw_len: data.len() as u32,
                bytes: data.to_vec(),
            };
        }
        self.compress(data)
    }

    /// Like [`Encoder::encode`] but always runs zstd over the whole chunk (no probe): what the
    /// benchmarks call the compute limit.
    pub fn compress(&mut self, data: &[u8]) -> Frame {
        let limit = data.len() - data.len() / 64;
        let mut out = Vec::with_capacity(limit);
        // Output that would not fit under `limit` makes zstd fail with dstSize_tooSmall:
        // the chunk does not shrink, so it is stored raw without compressing it twice.
        match self.zstd.compress_to_buffer(data, &mut out) {
            Ok(n) if n < limit && !data.is_empty() => Frame {
                compression: Compression::Zstd,
                raw_len: data.len() as u32,
                bytes: out,
            },
            _ => Frame {
                compression: Compression::None,
                raw_len: data.len() as u32,
                bytes: data.to_vec(),
            },
        }
    }
}

/// Decompresses frames and checks them against their ids. One per thread.
pub struct Decoder {
    zstd: zstd::bulk::Decompressor<'static>,
    id_key: IdKey,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with its own zstd context.
    pub fn new() -> Self {
        Self::with_id_key(IdKey::PLAIN)
    }

    /// A decoder that checks ids computed under `id_key` (keyed in an encrypted repository).
    pub fn with_id_key(id_key: IdKey) -> Self {
        Decoder {
            zstd: zstd::bulk::Decompressor::new().expect("zstd context allocation succeeds"),
            id_key,
        }
    }

    /// Decodes `frame` and checks that the plaintext hashes to `id`.
    pub fn decode(&mut self, frame: &Frame, id: &ChunkId) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.decode_into(frame, id, &mut out)?;
        Ok(out)
    }

    /// Like [`Decoder::decode`], writing the plaintext into `out` (resized to the chunk), so one
    /// buffer serves many chunks. The decoder writes into the buffer's spare capacity: a
    /// reused or fresh buffer is never zeroed first.
    pub fn decode_into(&mut self, frame: &Frame, id: &ChunkId, out: &mut Vec<u8>) -> Result<()> {
        let expected = frame.raw_len as usize;
        out.clear();
        let decoded = match frame.compression {
            Compression::None => {
                out.extend_from_slice(&frame.bytes);
                out.len()
            }
            Compression::Zstd => {
                out.reserve(expected);
                self.zstd
                    .decompress_to_buffer(&frame.bytes[..], out)
                    .map_err(|e| Error::CorruptChunk {
                        id: *id,
                        detail: format!("zstd: {e}"),
                    })?
            }
        };
        self.check(id, out, decoded, expected)
    }

    /// Like [`Decoder::decode`], into `out`, which must be exactly `frame.raw_len` bytes long
    /// (a window of an aligned buffer for direct I/O, say).
    pub fn decode_to(&mut self, frame: &Frame, id: &ChunkId, out: &mut [u8]) -> Result<()> {
        let corrupt = |detail: String| Error::CorruptChunk { id: *id, detail };
        let expected = frame.raw_len as usize;
        if out.len() != expected {
            return Err(corrupt(format!(
                "a {expected}-byte chunk cannot be decoded into {} bytes",
                out.len()
            )));
        }
        let decoded = match frame.compression {
            Compression::None if frame.bytes.len() == expected => {
                out.copy_from_slice(&frame.bytes);
                expected
            }
            Compression::None => frame.bytes.len(),
            Compression::Zstd => self
                .zstd
                .decompress_to_buffer(&frame.bytes[..], out)
                .map_err(|e| corrupt(format!("zstd: {e}")))?,
        };
        self.check(id, out, decoded, expected)
    }

    /// Checks `decoded` bytes, `out`, against the frame's length and the chunk's id.
    fn check(&self, id: &ChunkId, out: &[u8], decoded: usize, expected: usize) -> Result<()> {
        let corrupt = |detail: String| Error::CorruptChunk { id: *id, detail };
        if decoded != expected {
            return Err(corrupt(format!(
                "{decoded} bytes decoded, {expected} expected"
            )));
        }
        if self.id_key.id(out) != *id {
            return Err(corrupt("content does not match its id".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 10_000]));
        let mut v = vec![0u8; 10_000];
        v[9_999] = 1;
        assert!(!is_zero(&v));
        v[9_999] = 0;
        v[5] = 1;
        assert!(!is_zero(&v));
    }

    /// Seeded xorshift bytes: incompressible test data, the same on every run.
    struct Noise(u64);

    impl Noise {
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n)
                .map(|_| {
                    self.0 ^= self.0 << 13;
                    self.0 ^= self.0 >> 7;
                    self.0 ^= self.0 << 17;
                    self.0 as u8
                })
                .collect()
        }
    }

    #[test]
    fn incompressible_is_stored_raw() {
        let data = Noise(0x1234_5678_9abc_def0).bytes(100_000);
        let frame = Encoder::new(3).encode(&data);
        assert_eq!(frame.compression, Compression::None);
        assert_eq!(frame.bytes, data);
    }

    #[test]
    fn probe_keeps_compressible_data_compressed() {
        let mut rng = Noise(0x9e37_79b9_7f4a_7c15);
        let mut noise = |n: usize| rng.bytes(n);
        let mut enc = Encoder::new(3);
        let random = noise(1 << 20);
        assert_eq!(enc.encode(&random).compression, Compression::None);
        // Half random, half text: the samples in the text half make it worth compressing.
        let mut mixed = noise(512 << 10);
        mixed.extend(b"log line with words in it ".iter().cycle().take(512 << 10));
        let frame = enc.encode(&mixed);
        assert_eq!(frame.compression, Compression::Zstd);
        assert!(frame.bytes.len() < mixed.len() * 6 / 10);
    }

    /// The probe without its early exit: every sample compressed, then the sum compared.
    fn probe_all_samples(data: &[u8]) -> bool {
        let mut probe = zstd::bulk::Compressor::new(1).unwrap();
        let step = (data.len() - PROBE_LEN) / (PROBE_SAMPLES - 1);
        let packed: usize = (0..PROBE_SAMPLES)
            .map(|i| {
                let mut out = Vec::with_capacity(2 * PROBE_LEN);
                let sample = &data[i * step..i * step + PROBE_LEN];
                probe
                    .compress_to_buffer(sample, &mut out)
                    .unwrap_or(PROBE_LEN)
            })
            .sum();
        packed * 100 >= PROBE_SAMPLES * PROBE_LEN * 97
    }

    #[test]
    fn probe_stopping_early_decides_like_all_samples() {
        let mut rng = Noise(0x2545_f491_4f6c_dd1d);
        let mut noise = |n: usize| rng.bytes(n);
        let mut enc = Encoder::new(3);
        let (mut raw, mut compressed) = (0, 0);
        // Random chunks with 0 to 8 text pieces where the samples fall, and random data made
        // a little compressible (a byte in every n cleared), both sides of the threshold.
        for text_pieces in 0..=PROBE_SAMPLES {
            for clear_every in [0usize, 8, 16, 24, 32, 48, 64, 128] {
                let mut chunk = noise(1 << 20);
                if clear_every > 0 {
                    chunk.iter_mut().step_by(clear_every).for_each(|b| *b = 0);
                }
                let step = (chunk.len() - PROBE_LEN) / (PROBE_SAMPLES - 1);
                for i in 0..text_pieces {
                    let at = (PROBE_SAMPLES - 1 - i) * step;
                    let text = b"text that zstd shrinks ".iter().cycle().take(PROBE_LEN);
                    chunk[at..at + PROBE_LEN].copy_from_slice(&text.copied().collect::<Vec<_>>());
                }
                let expected = probe_all_samples(&chunk);
                assert_eq!(enc.probe_incompressible(&chunk), expected);
                if expected {
                    raw += 1;
                } else {
                    compressed += 1;
                }
            }
        }
        assert!(
            raw > 0 && compressed > 0,
            "both answers covered: {raw} raw, {compressed} not"
        );
    }

    #[test]
    fn corruption_is_detected() {
        let data = b"some text that compresses, some text that compresses".repeat(100);
        let id = ChunkId::of(&data);
        let mut frame = Encoder::new(3).encode(&data);
        assert_eq!(frame.compression, Compression::Zstd);
        let mid = frame.bytes.len() / 2;
        frame.bytes[mid] ^= 0x40;
        assert!(matches!(
            Decoder::new().decode(&frame, &id),
            Err(Error::CorruptChunk { .. })
        ));
        let raw = Frame {
            compression: Compression::None,
            raw_len: 3,
            bytes: b"abd".to_vec(),
        };
        assert!(Decoder::new().decode(&raw, &ChunkId::of(b"abc")).is_err());
    }

    #[test]
    fn one_buffer_serves_chunks_of_every_size_and_encoding() {
        // Larger, smaller, raw and compressed in turn: the buffer keeps capacity and stale
        // bytes between chunks, and each decode must be exactly its chunk.
        let big = b"compressible text, again and again. ".repeat(5000);
        let small = b"short".repeat(30);
        let noise: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for data in [&big[..], &small[..], &noise[..], &small[..], &big[..]] {
            let frame = Encoder::new(3).encode(data);
            decoder
                .decode_into(&frame, &ChunkId::of(data), &mut out)
                .unwrap();
            assert_eq!(out, data);
        }
        // A frame that claims fewer bytes than it decodes to is refused.
        let mut frame = Encoder::new(3).encode(&big);
        frame.raw_len -= 1;
        assert!(decoder
            .decode_into(&frame, &ChunkId::of(&big), &mut out)
            .is_err());
    }

    proptest! {
        #[test]
        fn decode_encode_is_identity(data in proptest::collection::vec(0u8..4, 0..20_000), level in 1i32..6) {
            let id = ChunkId::of(&data);
            let frame = Encoder::new(level).encode(&data);
            prop_assert_eq!(Decoder::new().decode(&frame, &id).unwrap(), data);
        }

        #[test]
        fn decode_to_fills_exactly_the_chunk(data in proptest::collection::vec(0u8..4, 1..20_000)) {
            let id = ChunkId::of(&data);
            let mut decoder = Decoder::new();
            for frame in [Encoder::new(3).encode(&data), Encoder::new(3).compress(&data)] {
                // A buffer one byte short or long is refused, whatever the frame's encoding.
                let mut out = vec![0xa5; data.len() + 1];
                prop_assert!(decoder.decode_to(&frame, &id, &mut out).is_err());
                prop_assert!(decoder.decode_to(&frame, &id, &mut out[..data.len() - 1]).is_err());
                decoder.decode_to(&frame, &id, &mut out[..data.len()]).unwrap();
                prop_assert_eq!(&out[..data.len()], &data[..]);
                prop_assert_eq!(out[data.len()], 0xa5);
            }
        }
    }
}

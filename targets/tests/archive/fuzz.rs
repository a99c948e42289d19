//! Fuzzing the reader with random mutations of valid archives, and the format's throughput.

use super::*;

#[derive(Clone, Debug)]
pub(crate) enum Mutation {
    Flip { at: usize, xor: u8 },
    Truncate { keep: usize },
    Insert { at: usize, garbage: Vec<u8> },
    Zero { at: usize, len: usize },
    DropRecord { index: usize },
}

pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..3000)
        )
            .prop_map(|(at, garbage)| Mutation::Insert { at, garbage }),
        (any::<usize>(), 1usize..20_000).prop_map(|(at, len)| Mutation::Zero { at, len }),
        any::<usize>().prop_map(|index| Mutation::DropRecord { index }),
    ]
}

pub(crate) fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len();
    match m {
        Mutation::Flip { at, xor } => bytes[at % n] ^= xor,
        Mutation::Truncate { keep } => bytes.truncate(keep % n),
        Mutation::Insert { at, garbage } => {
            let at = at % n;
            bytes.splice(at..at, garbage.iter().copied());
        }
        Mutation::Zero { at, len } => {
            let at = at % n;
            let end = (at + len).min(n);
            bytes[at..end].fill(0);
        }
        Mutation::DropRecord { index } => {
            let records = n.div_ceil(B as usize);
            let start = index % records * B as usize;
            bytes.drain(start..(start + B as usize).min(n));
        }
    }
}

/// Each chunk's id and the bytes of its frame (header and payload).
type ChunkFrames = Vec<(ChunkId, Vec<u8>)>;

/// Finds each chunk's frame in a clean archive.
fn chunk_frames(clean: &[u8], chunks: &[Vec<u8>]) -> ChunkFrames {
    let mut enc = Encoder::new(3); // as `write` encodes
    chunks
        .iter()
        .map(|c| {
            let id = ChunkId::of(c);
            let f = enc.encode(c);
            let mut payload = id.as_bytes().to_vec();
            payload.extend_from_slice(&f.raw_len.to_le_bytes());
            payload.extend_from_slice(&(f.bytes.len() as u32).to_le_bytes());
            payload.push(f.compression as u8);
            payload.extend_from_slice(&[0; 7]);
            payload.extend_from_slice(&f.bytes);
            let p = find(clean, &payload).expect("every chunk is in the archive");
            let start = p - FRAME_HEADER_LEN;
            assert_eq!(clean[start..start + 8], ARCHIVE_MAGIC);
            (id, clean[start..p + payload.len()].to_vec())
        })
        .collect()
}

/// Reads `inputs` (the volumes of a mutated archive of `chunks`, or one stream) and checks the
/// reader's promises: no panic, no chunk that does not match its id (checked in `read_all`),
/// every chunk whose frame is intact recovered, no loss without a damage report.
fn check_read(inputs_: Vec<Vec<u8>>, frames: &[(ChunkId, Vec<u8>)], single: bool) {
    let got = if single {
        read_bytes(&inputs_[0])
    } else {
        read_all(ArchiveReader::from_volumes(
            inputs(inputs_.clone()),
            ReaderOptions::default(),
        ))
    };
    if got.error.is_some() {
        // Only "no archive frame at all" is acceptable here.
        assert!(
            matches!(got.error, Some(Error::Corrupt { .. })),
            "{:?}",
            got.error
        );
    }
    let recovered: std::collections::HashSet<_> = got.chunks.iter().map(|c| c.0).collect();
    for (id, frame) in frames {
        if inputs_.iter().any(|i| find(i, frame).is_some()) {
            assert!(recovered.contains(id), "intact chunk {id} not recovered");
        }
    }
    let all: std::collections::HashSet<_> = frames.iter().map(|f| f.0).collect();
    if recovered.len() < all.len() && got.error.is_none() {
        assert!(
            !got.damage.is_empty(),
            "chunks lost without a damage report"
        );
    }
    if got.damage.is_empty() && got.error.is_none() {
        assert!(got.trailers.iter().all(|t| t.verified));
    }
}

fn fuzz_archive(
    seed: u64,
    count: usize,
    split: Option<u64>,
    tape: Option<u64>,
) -> (Vec<Vec<u8>>, ChunkFrames) {
    let chunks: Vec<_> = (0..count as u64)
        .map(|i| {
            let len = (seed.wrapping_mul(31).wrapping_add(i * 7919) % 20_000) as usize;
            if i % 3 == 0 {
                text(seed + i, len)
            } else {
                noise(seed + i, len)
            }
        })
        .collect();
    let mut t = EmulatedTape::new(B, tape.unwrap_or(u64::MAX), None);
    write(&mut t, &opts(split), &chunks, &noise(seed, 3000)).unwrap();
    let tapes = t.tapes().to_vec();
    let frames = chunk_frames(&tapes.concat(), &chunks);
    (tapes, frames)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_archives_never_mislead_the_reader(
        seed in any::<u64>(),
        count in 1usize..25,
        layout in 0u8..3,
        records in 1u64..3,
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let (split, tape) = match layout {
            0 => (None, None),
            1 => (Some(records * B as u64), None),
            _ => (None, Some(records)),
        };
        let (volumes, frames) = fuzz_archive(seed, count, split, tape);
        let mut bytes = volumes.concat();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        check_read(vec![bytes], &frames, true);
    }

    #[test]
    fn mutated_volume_sets_never_mislead_the_reader(
        seed in any::<u64>(),
        count in 1usize..25,
        tape in any::<bool>(),
        records in 1u64..3,
        victim in any::<usize>(),
        drop_volume in any::<bool>(),
        mutations in proptest::collection::vec(mutation(), 0..3),
    ) {
        let (split, tape) = if tape {
            (None, Some(records))
        } else {
            (Some(records * B as u64), None)
        };
        let (mut volumes, frames) = fuzz_archive(seed, count, split, tape);
        let victim = victim % volumes.len();
        for m in &mutations {
            apply(&mut volumes[victim], m);
        }
        if drop_volume {
            volumes.remove(victim);
        }
        check_read(volumes, &frames, false);
    }
}

/// Found by the fuzzer (with a reader that trusted the length of a frame whose payload failed
/// its checksum): a record dropped from the middle of a frame. The frames after it must be
/// found by scanning, not by skipping the damaged frame's declared length.
#[test]
fn regression_record_dropped_inside_a_frame() {
    let (volumes, frames) = fuzz_archive(1_121_077_620_565_354_863, 22, None, None);
    let mut bytes = volumes.concat();
    apply(
        &mut bytes,
        &Mutation::DropRecord {
            index: 509_242_804_892_260_930,
        },
    );
    check_read(vec![bytes.clone()], &frames, true);
    let got = read_bytes(&bytes);
    assert_eq!(got.damage.len(), 1, "{:#?}", got.damage);
    assert!(got.damage[0].lost_frames.unwrap() >= 1);
}

// ---------------------------------------------------------------------------------------------
// Throughput of the format alone.

/// Writes 1 GiB of incompressible 1 MiB chunks to /dev/null and into memory, then reads it
/// back from memory, decoded and as frames. Run by hand:
/// `cargo test --release -p targets --test archive throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement; run by hand in release mode"]
fn throughput() {
    const N: usize = 1024;
    const SIZE: usize = 1 << 20;
    let base = noise(1, SIZE);
    let frames = || -> Vec<(ChunkId, Frame)> {
        (0..N)
            .map(|i| {
                let mut d = base.clone();
                d[..8].copy_from_slice(&(i as u64).to_le_bytes());
                let f = Frame {
                    compression: Compression::None,
                    raw_len: SIZE as u32,
                    bytes: d,
                };
                (ChunkId::of(&f.bytes), f)
            })
            .collect()
    };
    let rate = |bytes: usize, t: std::time::Instant| bytes as f64 / t.elapsed().as_secs_f64() / 1e6;
    let run = |sink: &mut dyn VolumeSink, frames: Vec<(ChunkId, Frame)>| {
        let mut w = ArchiveWriter::new(
            sink,
            &ArchiveOptions::default(),
            ArchiveHeader::new("bench"),
        )
        .unwrap();
        for (id, f) in frames {
            w.put_chunk(&id, f).unwrap();
        }
        w.finish(&[7; 37 * 1024]).unwrap();
    };

    let f = frames();
    let null = std::fs::File::create("/dev/null").unwrap();
    let t = std::time::Instant::now();
    run(&mut StreamSink::new(null, "/dev/null"), f);
    println!("write to /dev/null: {:.0} MB/s", rate(N * SIZE, t));

    let f = frames();
    let mut out = Vec::with_capacity(N * SIZE + (64 << 20));
    let t = std::time::Instant::now();
    run(&mut StreamSink::new(&mut out, "memory"), f);
    println!("write to memory:    {:.0} MB/s", rate(N * SIZE, t));

    for decode in [true, false] {
        let t = std::time::Instant::now();
        let mut n = 0;
        for e in ArchiveReader::new(
            &out[..],
            ReaderOptions {
                strict: true,
                decode,
                ..Default::default()
            },
        ) {
            if let Event::Chunk { .. } | Event::ChunkFrame { .. } = e.unwrap() {
                n += 1;
            }
        }
        assert_eq!(n, N);
        println!("read (decode {decode:5}): {:.0} MB/s", rate(N * SIZE, t));
    }
}

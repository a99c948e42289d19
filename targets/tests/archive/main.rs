//! Tape-style archives (issue 4): round trips, volumes (files, an emulated tape, size limits),
//! damage recovery, golden fixtures and a mutation fuzzer of the reader.

use std::io::{self, Cursor, Read, Write};
use std::path::{Path, PathBuf};

use chunker::{ChunkId, Compression, Encoder, Frame};
use proptest::prelude::*;
use targets::archive::{
    ArchiveHeader, ArchiveId, ArchiveOptions, ArchiveReader, ArchiveSummary, ArchiveWriter, Damage,
    DiskInfo, EmulatedTape, Event, FileVolumeSet, FileVolumes, ReaderOptions, StreamSink, Trailer,
    VolumeSink, VolumeSource, ARCHIVE_MAGIC, FRAME_HEADER_LEN,
};
use targets::Error;

const B: u32 = 64 * 1024;

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn text(seed: u64, len: usize) -> Vec<u8> {
    format!("line {seed} of a log that compresses well. ")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(len)
        .collect()
}

fn opts(volume_size: Option<u64>) -> ArchiveOptions {
    ArchiveOptions {
        block_size: B,
        volume_size,
    }
}

/// Writes `chunks` (plus a map frame after the first) and finishes with `manifest`.
fn write<S: VolumeSink>(
    sink: S,
    options: &ArchiveOptions,
    chunks: &[Vec<u8>],
    manifest: &[u8],
) -> targets::Result<ArchiveSummary> {
    let mut w = ArchiveWriter::new(sink, options, ArchiveHeader::new("mover test"))?;
    let mut enc = Encoder::new(3);
    for (i, c) in chunks.iter().enumerate() {
        w.put_chunk(&ChunkId::of(c), enc.encode(c))?;
        if i == 0 {
            w.put_map(b"map after the first chunk")?;
        }
    }
    w.finish(manifest)
}

fn write_vec(options: &ArchiveOptions, chunks: &[Vec<u8>], manifest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write(
        StreamSink::new(&mut out, "memory"),
        options,
        chunks,
        manifest,
    )
    .unwrap();
    out
}

/// Everything a reader yielded.
#[derive(Debug, Default)]
struct Got {
    volumes: Vec<u32>,
    header: Option<ArchiveHeader>,
    chunks: Vec<(ChunkId, Vec<u8>)>,
    maps: Vec<Vec<u8>>,
    manifest: Option<Vec<u8>>,
    catalog: Option<Vec<ChunkId>>,
    trailers: Vec<Trailer>,
    damage: Vec<Damage>,
    error: Option<Error>,
}

fn read_all(reader: ArchiveReader<'_>) -> Got {
    let mut got = Got::default();
    for ev in reader {
        match ev {
            Ok(Event::Volume(v)) => got.volumes.push(v.number),
            Ok(Event::Header(h)) => got.header = Some(h),
            Ok(Event::Chunk { id, data }) => {
                assert_eq!(ChunkId::of(&data), id, "a chunk that does not match its id");
                got.chunks.push((id, data));
            }
            Ok(Event::ChunkFrame { id, frame }) => {
                let data = chunker::Decoder::new().decode(&frame, &id).unwrap();
                got.chunks.push((id, data));
            }
            Ok(Event::Map(m)) => got.maps.push(m),
            Ok(Event::Keyed(..)) => {}
            Ok(Event::Manifest(m)) => got.manifest = Some(m),
            Ok(Event::Catalog(c)) => got.catalog = Some(c),
            Ok(Event::Trailer(t)) => got.trailers.push(t),
            Ok(Event::Damage(d)) => got.damage.push(d),
            Err(e) => got.error = Some(e),
        }
    }
    got
}

fn read_bytes(bytes: &[u8]) -> Got {
    read_all(ArchiveReader::new(bytes, ReaderOptions::default()))
}

fn inputs(list: Vec<Vec<u8>>) -> impl VolumeSource + Send {
    let mut it = list.into_iter();
    move |_: u32| {
        Ok(it
            .next()
            .map(|v| Box::new(Cursor::new(v)) as Box<dyn Read + Send>))
    }
}

/// Asserts a clean, complete read of exactly `chunks` and `manifest`.
fn assert_clean(got: &Got, chunks: &[Vec<u8>], manifest: &[u8]) {
    assert!(got.error.is_none(), "{:?}", got.error);
    assert!(got.damage.is_empty(), "{:#?}", got.damage);
    let want: Vec<_> = chunks.iter().map(|c| (ChunkId::of(c), c.clone())).collect();
    assert_eq!(got.chunks, want);
    assert_eq!(got.manifest.as_deref(), Some(manifest));
    let ids: Vec<_> = want.iter().map(|(id, _)| *id).collect();
    assert_eq!(got.catalog.as_ref(), Some(&ids));
    assert_eq!(got.trailers.len(), 1);
    assert!(got.trailers[0].verified && !got.trailers[0].incomplete);
    assert_eq!(got.trailers[0].chunks, chunks.len() as u64);
}

fn sample_chunks() -> Vec<Vec<u8>> {
    vec![
        text(1, 50_000),
        noise(2, 100_000),
        Vec::new(),
        noise(3, 7),
        text(4, 300_000),
        noise(5, 70_000),
    ]
}

mod encrypted;
mod fuzz;
mod golden;

// ---------------------------------------------------------------------------------------------
// Round trips.

#[test]
fn round_trip_in_one_stream() {
    let chunks = sample_chunks();
    let manifest = noise(9, 5000);
    let bytes = write_vec(&opts(None), &chunks, &manifest);
    assert_eq!(bytes.len() % B as usize, 0);
    let got = read_bytes(&bytes);
    assert_clean(&got, &chunks, &manifest);
    assert_eq!(got.volumes, [0]);
    assert_eq!(got.maps, [b"map after the first chunk".to_vec()]);
    assert_eq!(got.header.unwrap().tool_version, "mover test");

    // Undecoded frames for a parallel decoder.
    let options = ReaderOptions {
        decode: false,
        ..Default::default()
    };
    assert_clean(
        &read_all(ArchiveReader::new(&bytes[..], options)),
        &chunks,
        &manifest,
    );
}

#[test]
fn writer_and_reader_can_move_to_other_threads() {
    fn send<T: Send>() {}
    send::<ArchiveWriter<StreamSink<std::fs::File>>>();
    send::<ArchiveWriter<FileVolumes>>();
    send::<ArchiveReader<'static>>();
    assert!(StreamSink::stdout().is_ok());
}

#[test]
fn header_fields_round_trip() {
    let mut header = ArchiveHeader::new("mover 9.9");
    header.chunk_size = 1 << 20;
    header.disks = vec![
        DiskInfo {
            name: "vda".into(),
            size: 10 << 30,
        },
        DiskInfo {
            name: "vdb".into(),
            size: 1 << 20,
        },
    ];
    header.parents = vec![ArchiveId::random(), ArchiveId::random()];
    header.labels = vec![("host".into(), "h1".into())];
    let mut out = Vec::new();
    let w = ArchiveWriter::new(StreamSink::new(&mut out, "m"), &opts(None), header.clone());
    assert_eq!(w.as_ref().unwrap().id(), header.id);
    w.unwrap().finish(b"").unwrap();
    let got = read_bytes(&out);
    assert_eq!(got.header, Some(header));
    assert_eq!(got.manifest, Some(Vec::new()));
    assert_eq!(got.catalog, Some(Vec::new()));
}

#[test]
fn dedup_within_the_archive_and_against_a_catalog() {
    let (a, b, c) = (noise(1, 1000), noise(2, 1000), noise(3, 1000));
    let mut out = Vec::new();
    let mut w = ArchiveWriter::new(
        StreamSink::new(&mut out, "m"),
        &opts(None),
        ArchiveHeader::new("t"),
    )
    .unwrap();
    w.add_known([ChunkId::of(&b)]);
    let mut enc = Encoder::new(1);
    assert!(!w.has(&ChunkId::of(&a)));
    assert!(w.put_chunk(&ChunkId::of(&a), enc.encode(&a)).unwrap());
    assert!(w.has(&ChunkId::of(&a)));
    assert!(!w.put_chunk(&ChunkId::of(&a), enc.encode(&a)).unwrap());
    assert!(w.has(&ChunkId::of(&b)));
    assert!(!w.put_chunk(&ChunkId::of(&b), enc.encode(&b)).unwrap());
    assert!(w.put_chunk(&ChunkId::of(&c), enc.encode(&c)).unwrap());
    let s = w.finish(b"m").unwrap();
    assert_eq!((s.chunks, s.chunk_bytes, s.volumes), (2, 2000, 1));
    let got = read_bytes(&out);
    assert_eq!(got.catalog, Some(vec![ChunkId::of(&a), ChunkId::of(&c)]));
}

#[test]
fn bad_options_are_refused() {
    for (block_size, volume_size) in [
        (1000, None),
        (32 << 10, None),
        (8 << 20, None),
        (B, Some(B as u64 - 1)),
    ] {
        let o = ArchiveOptions {
            block_size,
            volume_size,
        };
        let r = ArchiveWriter::new(
            StreamSink::new(Vec::new(), "m"),
            &o,
            ArchiveHeader::new("t"),
        );
        assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{o:?}");
    }
    // A frame larger than a volume.
    let mut w = ArchiveWriter::new(
        StreamSink::new(Vec::new(), "m"),
        &opts(Some(B as u64)),
        ArchiveHeader::new("t"),
    )
    .unwrap();
    let big = noise(1, 70_000);
    let r = w.put_chunk(&ChunkId::of(&big), Encoder::new(1).encode(&big));
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    assert!(matches!(w.put_map(b"x"), Err(Error::Poisoned { .. })));
}

#[test]
fn sealed_incomplete_archive() {
    let chunks = [noise(1, 3000)];
    let mut out = Vec::new();
    let mut w = ArchiveWriter::new(
        StreamSink::new(&mut out, "m"),
        &opts(None),
        ArchiveHeader::new("t"),
    )
    .unwrap();
    w.put_chunk(&ChunkId::of(&chunks[0]), Encoder::new(1).encode(&chunks[0]))
        .unwrap();
    w.seal_incomplete().unwrap();
    let got = read_bytes(&out);
    assert!(got.damage.is_empty());
    assert_eq!(got.chunks.len(), 1);
    assert_eq!(got.manifest, None);
    assert!(got.trailers[0].incomplete && got.trailers[0].verified);
}

#[test]
fn several_archives_in_one_stream() {
    let (a, b) = (sample_chunks(), vec![noise(11, 5000)]);
    let mut bytes = write_vec(&opts(None), &a, b"first");
    bytes.extend(write_vec(
        &ArchiveOptions {
            block_size: 128 << 10,
            volume_size: None,
        },
        &b,
        b"second",
    ));
    let got = read_bytes(&bytes);
    assert!(got.damage.is_empty(), "{:?}", got.damage);
    assert_eq!(got.trailers.len(), 2);
    assert!(got.trailers.iter().all(|t| t.verified));
    assert_eq!(got.chunks.len(), a.len() + b.len());
    assert_eq!(got.manifest.as_deref(), Some(&b"second"[..]));
}

#[test]
fn an_archive_inside_a_chunk_is_just_data() {
    let inner = write_vec(&opts(None), &sample_chunks(), b"inner");
    let chunks = vec![noise(1, 500), inner, noise(2, 500)];
    let mut bytes = write_vec(&opts(None), &chunks, b"outer");
    assert_clean(&read_bytes(&bytes), &chunks, b"outer");
    // Damage just before the inner archive makes the reader scan through it: its frames carry
    // another archive's tag and are skipped, the outer chunks after it are found.
    let at = find(&bytes, &noise(1, 500)).unwrap() + 100;
    bytes[at] ^= 1;
    let got = read_bytes(&bytes);
    assert_eq!(got.damage.len(), 1, "{:#?}", got.damage);
    assert_eq!(got.damage[0].lost_frames, Some(1));
    let ids: Vec<_> = got.chunks.iter().map(|c| c.0).collect();
    assert_eq!(ids, [ChunkId::of(&chunks[1]), ChunkId::of(&chunks[2])]);
    assert_eq!(got.manifest.as_deref(), Some(&b"outer"[..]));
}

// ---------------------------------------------------------------------------------------------
// Volumes.

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn file_volumes_split_by_size() {
    let dir = tmp();
    let base = dir.path().join("backup");
    let chunks = sample_chunks();
    let manifest = noise(7, 300_000); // spans several parts at this volume size
    let volume_size = 3 * B as u64 + 1000;
    let s = write(
        FileVolumes::create(&base).unwrap(),
        &opts(Some(volume_size)),
        &chunks,
        &manifest,
    )
    .unwrap();
    assert!(s.volumes >= 3, "{s:?}");
    let mut all = Vec::new();
    for n in 0..s.volumes {
        let v = std::fs::read(FileVolumes::volume_path(&base, n)).unwrap();
        assert!(v.len() as u64 <= 3 * B as u64 && v.len().is_multiple_of(B as usize));
        all.extend(v);
    }
    assert_eq!(all.len() as u64, s.bytes_written);
    assert!(!FileVolumes::volume_path(&base, s.volumes).exists());

    let set = FileVolumeSet::open(&base).unwrap();
    let got = read_all(ArchiveReader::from_volumes(set, ReaderOptions::default()));
    assert_clean(&got, &chunks, &manifest);
    assert_eq!(got.volumes, (0..s.volumes).collect::<Vec<_>>());
    // The same volumes concatenated on one stream (`cat backup.* |`).
    assert_clean(&read_bytes(&all), &chunks, &manifest);
    // An existing volume set is never overwritten.
    assert!(FileVolumes::create(&base).is_err());
}

#[test]
fn missing_and_repeated_volumes() {
    let dir = tmp();
    let base = dir.path().join("b");
    let chunks: Vec<_> = (0..15).map(|i| noise(i, 40_000)).collect();
    let s = write(
        FileVolumes::create(&base).unwrap(),
        &opts(Some(2 * B as u64)),
        &chunks,
        b"manifest",
    )
    .unwrap();
    assert!(s.volumes >= 5);
    let vols: Vec<_> = (0..s.volumes)
        .map(|n| std::fs::read(FileVolumes::volume_path(&base, n)).unwrap())
        .collect();
    let vol = |n: u32| vols[n as usize].clone();

    // Volume 1 repeated: nothing lost, nothing reported.
    let got = read_all(ArchiveReader::from_volumes(
        inputs(
            (0..s.volumes)
                .flat_map(|n| {
                    if n == 1 {
                        vec![vol(1), vol(1)]
                    } else {
                        vec![vol(n)]
                    }
                })
                .collect(),
        ),
        ReaderOptions::default(),
    ));
    assert_clean(&got, &chunks, b"manifest");

    // Volume 2 missing: reported, everything else restored.
    std::fs::remove_file(FileVolumes::volume_path(&base, 2)).unwrap();
    let got = read_all(ArchiveReader::from_volumes(
        FileVolumeSet::open(&base).unwrap(),
        ReaderOptions::default(),
    ));
    assert_eq!(got.damage.len(), 1, "{:#?}", got.damage);
    let d = &got.damage[0];
    assert!(d.detail.contains("volumes 2..3 missing"), "{d}");
    let lost = d.lost_frames.unwrap() as usize;
    assert!(lost >= 1);
    assert_eq!(got.chunks.len(), chunks.len() - lost);
    assert_eq!(got.manifest.as_deref(), Some(&b"manifest"[..]));
    assert!(!got.trailers[0].verified);

    // The last volume missing: truncated.
    let got = read_all(ArchiveReader::from_volumes(
        inputs((0..s.volumes - 1).map(vol).collect()),
        ReaderOptions::default(),
    ));
    assert_eq!(got.damage.last().unwrap().lost_frames, None);
    assert!(got.trailers.is_empty());
}

#[test]
fn emulated_tape_end_of_medium() {
    let chunks: Vec<_> = (0..20)
        .map(|i| noise(i, 50_000 + i as usize * 3001))
        .collect();
    for warn in [None, Some(4)] {
        let mut tape = EmulatedTape::new(B, 7, warn);
        let s = write(&mut tape, &opts(None), &chunks, b"tape manifest").unwrap();
        let tapes = tape.tapes().to_vec();
        assert_eq!(s.volumes as usize, tapes.len());
        assert!(tapes.len() >= 3, "{}", tapes.len());
        assert!(tapes
            .iter()
            .all(|t| t.len().is_multiple_of(B as usize) && t.len() <= 7 * B as usize));
        let got = read_all(ArchiveReader::from_volumes(
            inputs(tapes.clone()),
            ReaderOptions {
                strict: true,
                decode: true,
                password: None,
            },
        ));
        assert_clean(&got, &chunks, b"tape manifest");
        assert_clean(&read_bytes(&tapes.concat()), &chunks, b"tape manifest");
    }
}

#[test]
fn a_tape_too_small_for_one_frame_is_an_error() {
    let mut tape = EmulatedTape::new(B, 1, None);
    let big = noise(1, 200_000);
    let r = write(&mut tape, &opts(None), &[big], b"");
    assert!(matches!(r, Err(Error::EndOfMedia { .. })), "{r:?}");
}

#[test]
fn tape_device_through_a_stream_sink() {
    // A `Write` that behaves like a tape device: whole blocks, ENOSPC after `left` blocks.
    struct Dev(Vec<u8>, usize);
    impl Write for Dev {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.1 == 0 {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            assert_eq!(buf.len(), B as usize);
            self.1 -= 1;
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let done = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = done.clone();
    let chunks: Vec<_> = (0..6).map(|i| noise(i, 90_000)).collect();
    let sink = StreamSink::with_next_volume(Dev(Vec::new(), 5), "/dev/nst0", move |n| {
        assert!(n >= 1);
        Ok(Dev(Vec::new(), 5))
    });
    struct Keep<W: Write>(
        StreamSink<W>,
        std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    );
    impl VolumeSink for Keep<Dev> {
        fn write_record(&mut self, r: &[u8]) -> io::Result<targets::archive::Written> {
            self.0.write_record(r)
        }
        fn finish_volume(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn next_volume(&mut self, n: u32) -> io::Result<()> {
            let old = std::mem::replace(&mut self.0, StreamSink::new(Dev(Vec::new(), 0), ""));
            self.1.lock().unwrap().push(old.into_inner().0);
            let mut fresh = StreamSink::new(Dev(Vec::new(), 5), "/dev/nst0");
            fresh.next_volume(n).ok(); // a sink without a callback refuses
            self.0 = fresh;
            Ok(())
        }
        fn location(&self) -> String {
            self.0.location()
        }
    }
    let mut k = Keep(sink, keep);
    write(&mut k, &opts(None), &chunks, b"m").unwrap();
    let mut tapes = done.lock().unwrap().clone();
    tapes.push(k.0.into_inner().0);
    assert!(tapes.len() >= 2);
    assert_clean(&read_bytes(&tapes.concat()), &chunks, b"m");
}

#[test]
fn a_full_stream_without_next_volume_fails() {
    let mut tape = EmulatedTape::new(B, 3, None);
    struct One<'a>(&'a mut EmulatedTape);
    impl VolumeSink for One<'_> {
        fn write_record(&mut self, r: &[u8]) -> io::Result<targets::archive::Written> {
            self.0.write_record(r)
        }
        fn finish_volume(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn next_volume(&mut self, n: u32) -> io::Result<()> {
            StreamSink::new(Vec::new(), "x").next_volume(n)
        }
        fn location(&self) -> String {
            "one tape".into()
        }
    }
    let chunks: Vec<_> = (0..6).map(|i| noise(i, 90_000)).collect();
    let r = write(One(&mut tape), &opts(None), &chunks, b"m");
    assert!(matches!(r, Err(Error::NoSpace { .. })), "{r:?}");
}

#[test]
fn broken_pipe_is_an_error() {
    let mut child = std::process::Command::new("true")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = child.stdin.take().unwrap();
    child.wait().unwrap();
    let mut w = ArchiveWriter::new(
        StreamSink::new(pipe, "stdout"),
        &opts(None),
        ArchiveHeader::new("t"),
    )
    .unwrap();
    let mut failed = None;
    for i in 0..10 {
        let c = noise(i, 100_000);
        if let Err(e) = w.put_chunk(&ChunkId::of(&c), Encoder::new(1).encode(&c)) {
            failed = Some(e);
            break;
        }
    }
    let e = failed.expect("writing into a closed pipe fails");
    assert!(e.to_string().contains("stdout"), "{e}");
    assert!(matches!(w.finish(b""), Err(Error::Poisoned { .. })));
    // Even when the pipe breaks only at the last record, finish fails.
    let mut child = std::process::Command::new("true")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = child.stdin.take().unwrap();
    child.wait().unwrap();
    let w = ArchiveWriter::new(
        StreamSink::new(pipe, "stdout"),
        &opts(None),
        ArchiveHeader::new("t"),
    )
    .unwrap();
    assert!(w.finish(b"").is_err());
}

// ---------------------------------------------------------------------------------------------
// Damage.

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn a_flipped_byte_loses_one_frame() {
    let chunks = sample_chunks();
    let clean = write_vec(&opts(None), &chunks, b"m");
    let mut bytes = clean.clone();
    let at = find(&bytes, &chunks[1][..64]).unwrap() + 5000;
    bytes[at] ^= 0x80;
    let got = read_bytes(&bytes);
    assert_eq!(got.damage.len(), 1, "{:#?}", got.damage);
    let d = &got.damage[0];
    assert_eq!(
        (d.input, d.first_lost_frame, d.lost_frames),
        (0, 4, Some(1))
    );
    // The report starts at the damaged frame and covers it.
    let frame_start = find(&bytes, &chunks[1][..64]).unwrap() - 48 - FRAME_HEADER_LEN;
    assert_eq!(d.offset, frame_start as u64);
    assert!(d.len >= 100_000 && d.len < 101_000, "{d}");
    let mut want: Vec<_> = chunks.iter().map(|c| ChunkId::of(c)).collect();
    want.remove(1);
    assert_eq!(got.chunks.iter().map(|c| c.0).collect::<Vec<_>>(), want);
    assert_eq!(got.manifest.as_deref(), Some(&b"m"[..]));
    assert!(!got.trailers[0].verified);

    // Strict mode stops there.
    let mut r = ArchiveReader::new(
        &bytes[..],
        ReaderOptions {
            strict: true,
            decode: true,
            password: None,
        },
    );
    let mut n = 0;
    let err = loop {
        match r.next_event() {
            Ok(Some(Event::Chunk { .. })) => n += 1,
            Ok(Some(_)) => {}
            Ok(None) => panic!("strict reading ended without an error"),
            Err(e) => break e,
        }
    };
    assert_eq!(n, 1);
    assert!(
        matches!(err, Error::Corrupt { .. }) && err.is_damage(),
        "{err}"
    );
    assert!(r.next_event().unwrap().is_none());
}

#[test]
fn a_damaged_header_is_skipped_by_scanning() {
    let chunks = sample_chunks();
    let mut bytes = write_vec(&opts(None), &chunks, b"m");
    let at = find(&bytes, &chunks[1][..64]).unwrap() - 48 - FRAME_HEADER_LEN + 13; // length field
    bytes[at] ^= 0x7f;
    let got = read_bytes(&bytes);
    assert_eq!(got.damage.len(), 1);
    assert_eq!(got.damage[0].lost_frames, Some(1));
    assert_eq!(got.chunks.len(), chunks.len() - 1);
}

#[test]
fn truncation_and_garbage() {
    let chunks = sample_chunks();
    let clean = write_vec(&opts(None), &chunks, b"m");
    // Truncated inside chunk 5: chunks 0..5 survive, the loss is open-ended.
    let cut = find(&clean, &chunks[5][..64]).unwrap() + 10;
    let got = read_bytes(&clean[..cut]);
    assert_eq!(got.damage.len(), 1);
    assert_eq!(
        (got.damage[0].first_lost_frame, got.damage[0].lost_frames),
        (8, None)
    );
    assert_eq!(got.chunks.len(), 5);
    assert!(got.trailers.is_empty());

    // Garbage inserted between two frames: nothing lost, but reported.
    let at = find(&clean, &chunks[3]).unwrap() + chunks[3].len();
    let mut bytes = clean[..at].to_vec();
    bytes.extend(noise(99, 3333));
    bytes.extend_from_slice(&clean[at..]);
    let got = read_bytes(&bytes);
    assert_eq!(got.damage.len(), 1, "{:#?}", got.damage);
    assert_eq!((got.damage[0].offset, got.damage[0].len), (at as u64, 3333));
    assert_eq!(got.damage[0].lost_frames, Some(0));
    assert_eq!(got.chunks.len(), chunks.len());
    assert!(!got.trailers[0].verified);

    // Zeros after the end of an archive are padding; anything else is reported.
    let mut bytes = clean.clone();
    bytes.extend(vec![0; 5000]);
    assert!(read_bytes(&bytes).damage.is_empty());
    bytes.extend(b"junk");
    let got = read_bytes(&bytes);
    assert_eq!(got.damage.len(), 1);
    assert!(got.trailers[0].verified);

    // Nothing at all.
    assert!(matches!(read_bytes(&[]).error, Some(Error::Corrupt { .. })));
    assert!(matches!(
        read_bytes(&noise(1, 100_000)).error,
        Some(Error::Corrupt { .. })
    ));
}

#[test]
fn a_damaged_volume_frame_loses_nothing() {
    let dir = tmp();
    let base = dir.path().join("v");
    let chunks: Vec<_> = (0..6).map(|i| noise(i, 40_000)).collect();
    let s = write(
        FileVolumes::create(&base).unwrap(),
        &opts(Some(2 * B as u64)),
        &chunks,
        b"m",
    )
    .unwrap();
    assert!(s.volumes >= 2);
    let mut vols: Vec<_> = (0..s.volumes)
        .map(|n| std::fs::read(FileVolumes::volume_path(&base, n)).unwrap())
        .collect();
    vols[0][20] ^= 1;
    vols[1][20] ^= 1;
    let got = read_all(ArchiveReader::from_volumes(
        inputs(vols),
        ReaderOptions::default(),
    ));
    assert_eq!(got.chunks.len(), chunks.len());
    assert_eq!(got.damage.len(), 2, "{:#?}", got.damage);
    for (i, d) in got.damage.iter().enumerate() {
        assert_eq!((d.input, d.offset, d.len), (i as u32, 0, 96), "{d}");
        assert_eq!(d.lost_frames, Some(0));
        assert!(!d.detail.contains("missing"), "{d}");
    }
    assert_eq!(got.volumes, (2..s.volumes).collect::<Vec<_>>());
    assert_eq!(got.manifest.as_deref(), Some(&b"m"[..]));
}

#[test]
fn a_newer_format_version_is_refused() {
    // Forge a volume frame of version 4 (2 and 3 are the encrypted formats) with valid
    // checksums.
    let bytes = write_vec(&opts(None), &[], b"");
    let mut payload = bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 32].to_vec();
    payload[0] = 4;
    let mut header: [u8; 64] = bytes[..64].try_into().unwrap();
    header[40..56].copy_from_slice(&blake3::hash(&payload).as_bytes()[..16]);
    let check = blake3::hash(&header[..56]);
    header[56..].copy_from_slice(&check.as_bytes()[..8]);
    let mut forged = header.to_vec();
    forged.extend(payload);
    forged.extend_from_slice(&bytes[96..]);
    let got = read_bytes(&forged);
    assert!(
        matches!(
            got.error,
            Some(Error::Format(chunker::Error::UnsupportedVersion {
                found: 4,
                ..
            }))
        ),
        "{:?}",
        got.error
    );
}

// ---------------------------------------------------------------------------------------------

/// A flipped byte anywhere in the header frame (issue 14, item 11): the header is read from
/// its copy, every chunk and the manifest arrive, and the damage is reported (frame 0 only).
#[test]
fn a_damaged_header_frame_is_recovered_from_its_copy() {
    let chunks = sample_chunks();
    let clean = write_vec(&opts(None), &chunks, b"m");
    let want = read_bytes(&clean);
    let header_at = FRAME_HEADER_LEN + 32; // after the volume frame
    for offset in [
        0,
        9,
        13,
        20,
        40,
        60,
        FRAME_HEADER_LEN + 2,
        FRAME_HEADER_LEN + 30,
    ] {
        let mut bytes = clean.clone();
        bytes[header_at + offset] ^= 0x10;
        let got = read_bytes(&bytes);
        assert_eq!(got.header, want.header, "flip at {offset}");
        assert_eq!(got.chunks, want.chunks, "flip at {offset}");
        assert_eq!(got.manifest.as_deref(), Some(&b"m"[..]), "flip at {offset}");
        assert_eq!(got.damage.len(), 1, "flip at {offset}: {:#?}", got.damage);
        assert_eq!(
            (got.damage[0].first_lost_frame, got.damage[0].lost_frames),
            (0, Some(1)),
            "flip at {offset}"
        );
    }
}

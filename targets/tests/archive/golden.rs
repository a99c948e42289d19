//! Golden fixtures: archives written by every format revision must keep reading, and this
//! build must keep writing the newest byte for byte. `MOVER_WRITE_FIXTURES=1` rewrites them
//! (only ever for a new revision's directory).
//!
//! - `archive-v1`: format version 1 as first released.
//! - `archive-v1.1`: version 1 with the header copy (volume flag bit 0, frame type 0x80 after
//!   the header; issue 14, item 11).

use super::*;

/// The revision this build writes.
const NEWEST: &str = "archive-v1.1";

fn fixture_dir(revision: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(revision)
}

fn fixture_header() -> ArchiveHeader {
    ArchiveHeader {
        id: ArchiveId([0x5a; 16]),
        tool_version: "mover 0.1.0".into(),
        created_ms: 1_750_000_000_000,
        chunk_size: 64 << 10,
        disks: vec![DiskInfo {
            name: "vda".into(),
            size: 192 << 10,
        }],
        parents: vec![ArchiveId([0xa5; 16])],
        labels: vec![("host".into(), "fixture".into())],
    }
}

/// The fixture content: chunk plaintexts, and the map and manifest bytes.
fn fixture_content(split: bool) -> (Vec<Vec<u8>>, Vec<u8>, Vec<u8>) {
    let chunks = if split {
        vec![noise(21, 24_000), noise(22, 24_000), noise(23, 24_000)]
    } else {
        vec![text(11, 40_000), noise(12, 20_000), noise(13, 4_000)]
    };
    (chunks, b"map v1".to_vec(), b"opaque manifest v1".repeat(10))
}

/// Writes a fixture archive from chunk frames (so the bytes do not depend on zstd's version).
fn write_fixture<S: VolumeSink>(sink: S, split: bool, frames: &[(ChunkId, Frame)]) {
    let (_, map, manifest) = fixture_content(split);
    let volume_size = split.then_some(B as u64);
    let mut w = ArchiveWriter::new(sink, &opts(volume_size), fixture_header()).unwrap();
    for (i, (id, f)) in frames.iter().enumerate() {
        w.put_chunk(id, f.clone()).unwrap();
        if i == 0 {
            w.put_map(&map).unwrap();
        }
    }
    // A duplicate is not written again.
    assert!(!w.put_chunk(&frames[0].0, frames[0].1.clone()).unwrap());
    w.finish(&manifest).unwrap();
}

fn check_fixture(got: &Got, split: bool) {
    let (chunks, map, manifest) = fixture_content(split);
    assert_clean(got, &chunks, &manifest);
    assert_eq!(got.header, Some(fixture_header()));
    assert_eq!(got.maps, [map]);
}

#[test]
fn golden_archive_v1_single_volume() {
    golden_single_volume("archive-v1");
}

#[test]
fn golden_archive_v1_1_single_volume() {
    golden_single_volume(NEWEST);
}

#[test]
fn golden_archive_v1_two_volumes() {
    golden_two_volumes("archive-v1");
}

#[test]
fn golden_archive_v1_1_two_volumes() {
    golden_two_volumes(NEWEST);
}

/// The header copy: the newest revision says so in its volume frames, the first does not.
#[test]
fn only_the_newest_revision_carries_the_header_copy_flag() {
    for (revision, flag) in [("archive-v1", 0u8), (NEWEST, 1)] {
        let golden = std::fs::read(fixture_dir(revision).join("small.archive")).unwrap();
        // Volume payload offset 12: flags.
        assert_eq!(golden[FRAME_HEADER_LEN + 12], flag, "{revision}");
    }
}

fn golden_single_volume(revision: &str) {
    let writes = revision == NEWEST;
    let path = fixture_dir(revision).join("small.archive");
    if writes && std::env::var_os("MOVER_WRITE_FIXTURES").is_some() {
        let (chunks, ..) = fixture_content(false);
        let mut enc = Encoder::new(3);
        let frames: Vec<_> = chunks
            .iter()
            .map(|c| (ChunkId::of(c), enc.encode(c)))
            .collect();
        assert_eq!(frames[0].1.compression, Compression::Zstd);
        std::fs::create_dir_all(fixture_dir(revision)).unwrap();
        write_fixture(
            FileVolumesAt(std::fs::File::create(&path).unwrap()),
            false,
            &frames,
        );
    }
    let golden = std::fs::read(&path).unwrap();
    assert_eq!(golden.len(), B as usize);
    check_fixture(&read_bytes(&golden), false);
    if !writes {
        return;
    }

    // Rewriting the same frames gives the same bytes.
    let options = ReaderOptions {
        decode: false,
        ..Default::default()
    };
    let frames: Vec<_> = ArchiveReader::new(&golden[..], options)
        .filter_map(|e| match e.unwrap() {
            Event::ChunkFrame { id, frame } => Some((id, frame)),
            _ => None,
        })
        .collect();
    let mut again = Vec::new();
    write_fixture(StreamSink::new(&mut again, "m"), false, &frames);
    assert!(
        again == golden,
        "the writer no longer writes {revision} byte for byte"
    );
}

fn golden_two_volumes(revision: &str) {
    let writes = revision == NEWEST;
    let base = fixture_dir(revision).join("split.archive");
    if writes && std::env::var_os("MOVER_WRITE_FIXTURES").is_some() {
        let (chunks, ..) = fixture_content(true);
        let mut enc = Encoder::new(3);
        let frames: Vec<_> = chunks
            .iter()
            .map(|c| (ChunkId::of(c), enc.encode(c)))
            .collect();
        for n in 0..2 {
            let _ = std::fs::remove_file(FileVolumes::volume_path(&base, n));
        }
        write_fixture(FileVolumes::create(&base).unwrap(), true, &frames);
    }
    let set = FileVolumeSet::open(&base).unwrap();
    let got = read_all(ArchiveReader::from_volumes(set, ReaderOptions::default()));
    assert_eq!(got.volumes, [0, 1]);
    check_fixture(&got, true);
    if !writes {
        return;
    }

    let dir = tmp();
    let copy = dir.path().join("split.archive");
    let (chunks, ..) = fixture_content(true);
    let frames: Vec<_> = chunks
        .iter()
        .map(|c| {
            (
                ChunkId::of(c),
                Frame {
                    compression: Compression::None,
                    raw_len: c.len() as u32,
                    bytes: c.clone(),
                },
            )
        })
        .collect();
    write_fixture(FileVolumes::create(&copy).unwrap(), true, &frames);
    for n in 0..2 {
        let golden = std::fs::read(FileVolumes::volume_path(&base, n)).unwrap();
        assert_eq!(golden.len(), B as usize);
        let again = std::fs::read(FileVolumes::volume_path(&copy, n)).unwrap();
        assert!(again == golden, "volume {n} differs from the golden file");
    }
}

/// One file as a single-volume sink.
struct FileVolumesAt(std::fs::File);

impl VolumeSink for FileVolumesAt {
    fn write_record(&mut self, r: &[u8]) -> io::Result<targets::archive::Written> {
        self.0.write_all(r)?;
        Ok(targets::archive::Written::Ok)
    }
    fn finish_volume(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn next_volume(&mut self, _: u32) -> io::Result<()> {
        Err(io::ErrorKind::StorageFull.into())
    }
    fn location(&self) -> String {
        "fixture".into()
    }
}

//! The on-disk format, version 1. Byte tables here match `docs/FORMAT.md`.
//!
//! Every structure starts with an 8-byte magic (the first 8 bytes of BLAKE3 of
//! `"<name> v1"`) and a `u32` format version, and ends with a checksum, so a reader can tell a
//! foreign or damaged object from a valid one. All integers are little-endian.
//!
//! Objects are named by content: a pack, an index segment and a snapshot are stored under the
//! hex BLAKE3 of their bytes, so any copy can be checked against its own name.

mod catalog;
mod config;
mod filter;
mod index;
mod manifest;
mod pack;
mod sealed;
mod sorted;

pub use catalog::{
    catalog_inodes, decode_catalog, decode_catalog_with, encode_catalog, encode_catalog_with,
    CatalogEntry, CatalogKind, CatalogReads, CATALOG_MAGIC, CATALOG_VERSION, MAX_CATALOG_BODY,
};
pub use config::{Config, CONFIG_LEN, CONFIG_VERSION_AES, CONFIG_VERSION_ENCRYPTED};
pub use filter::{BlockFilter, FILTER_BITS_PER_KEY, FILTER_BLOCK_LEN};
pub use index::{encode_index_v1, IndexEntry};
pub use manifest::{
    Attachment, BackupStats, Chunking, Disk, Entry, Manifest, MANIFEST_VERSION, MAX_ATTACHMENT,
};
pub use pack::{
    decode_pack_entries, pack_footer_count, pack_header, read_pack_trailer, write_pack_trailer,
    BlobEntry, PACK_ENTRY_LEN, PACK_FOOTER_LEN, PACK_HEADER_LEN,
};
pub use sealed::{
    open_blob, open_object, read_sealed_pack_trailer, seal_blob, seal_object, sealed_pack_header,
    write_sealed_pack_trailer, INDEX_VERSION_SEALED, MANIFEST_VERSION_SEALED, PACK_VERSION_SEALED,
    SEALED_HEADER_LEN,
};
pub use sorted::{
    decode_index, decode_sorted, encode_index, encode_sorted, index_version, SegmentBuilder,
    SortedLayout, SortedSegment, INDEX_VERSION_SORTED, SORTED_ENTRY_LEN, SORTED_HEAD_LEN,
    SORTED_TAIL_LEN,
};

use crate::le::Reader;
use crate::{ChunkId, Error, Result};

/// Format version written by this build, and the highest it reads.
pub const FORMAT_VERSION: u32 = 1;

// DO NOT MODIFY: the magics identify files written by every earlier release.
/// Magic of the repository config: BLAKE3("mover config v1")[..8].
pub const CONFIG_MAGIC: [u8; 8] = [0xbe, 0xea, 0x9b, 0x0d, 0x63, 0x79, 0xce, 0xb9];
/// Magic of a snapshot manifest: BLAKE3("mover manifest v1")[..8].
pub const MANIFEST_MAGIC: [u8; 8] = [0xcd, 0x37, 0x9b, 0x26, 0x0c, 0xb4, 0x3d, 0x08];
/// Magic of a pack file: BLAKE3("mover pack v1")[..8].
pub const PACK_MAGIC: [u8; 8] = [0x11, 0x46, 0x94, 0xd6, 0xef, 0x46, 0x83, 0x58];
/// Magic of an index segment: BLAKE3("mover index v1")[..8].
pub const INDEX_MAGIC: [u8; 8] = [0x81, 0x53, 0xdf, 0x3f, 0xb9, 0x3b, 0xbb, 0xab];

/// A 32-byte object name (BLAKE3 of the object's bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ObjectId(pub [u8; 32]);

impl ObjectId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ObjectId(*blake3::hash(bytes).as_bytes())
    }
    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        crate::hex::encode(&self.0)
    }
    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        ChunkId::from_hex(s).map(|c| ObjectId(*c.as_bytes()))
    }
}

/// Opens a structure `what` in `buf`: checks its magic, that its version is from 1 to `max`
/// and, when `checked`, its trailing BLAKE3. Returns a reader over the bytes before the
/// checksum, positioned after the version, and the version.
fn open<'a>(
    what: &'static str,
    buf: &'a [u8],
    magic: &[u8; 8],
    checked: bool,
    max: u32,
) -> Result<(Reader<'a>, u32)> {
    if buf.len() < 12 || buf[..8] != magic[..] {
        return Err(Error::structure(
            what,
            "bad magic (not a mover object of this kind)",
        ));
    }
    let version = Reader::new(what, &buf[8..12]).u32()?;
    if version == 0 || version > max {
        return Err(Error::UnsupportedVersion {
            what,
            found: version,
            supported: max,
        });
    }
    let body = if checked {
        if buf.len() < 44 {
            return Err(Error::structure(what, "truncated"));
        }
        let (body, sum) = buf.split_at(buf.len() - 32);
        if blake3::hash(body).as_bytes()[..] != sum[..] {
            return Err(Error::structure(what, "checksum mismatch"));
        }
        body
    } else {
        buf
    };
    let mut r = Reader::new(what, body);
    r.skip(12)?;
    Ok((r, version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Aead, Keys};
    use crate::Compression;

    #[test]
    fn magics_are_blake3_prefixes() {
        for (name, magic) in [
            ("mover config v1", CONFIG_MAGIC),
            ("mover manifest v1", MANIFEST_MAGIC),
            ("mover pack v1", PACK_MAGIC),
            ("mover index v1", INDEX_MAGIC),
        ] {
            assert_eq!(
                blake3::hash(name.as_bytes()).as_bytes()[..8],
                magic,
                "{name}"
            );
        }
    }

    fn sample_manifest() -> Manifest {
        let stats = BackupStats {
            bytes_read: 1,
            bytes_new: 2,
            bytes_stored: 3,
            bytes_zero: 4,
            chunks_new: 5,
            chunks_reused: 6,
            duration_ms: 7,
        };
        Manifest {
            created_ms: 1_700_000_000_123,
            nonce: [9; 16],
            parent: Some(ObjectId([4; 32])),
            stats,
            name: "vm1".into(),
            disks: vec![
                Disk {
                    name: "sda".into(),
                    source: "/dev/vg/vm1".into(),
                    chunking: Chunking::Fixed(65536),
                    source_len: 65536 + 10,
                    change_token: "b0".into(),
                    stats,
                    entries: vec![
                        Entry {
                            len: 65536,
                            id: None,
                        },
                        Entry {
                            len: 10,
                            id: Some(ChunkId::of(b"x")),
                        },
                    ],
                },
                Disk {
                    name: "sdb".into(),
                    source: "-".into(),
                    chunking: Chunking::Cdc(1 << 20),
                    source_len: 3,
                    change_token: String::new(),
                    stats: BackupStats::default(),
                    entries: vec![Entry {
                        len: 3,
                        id: Some(ChunkId::of(b"abc")),
                    }],
                },
            ],
            attachments: vec![Attachment {
                name: "vm1.xml".into(),
                data: b"<domain/>".to_vec(),
            }],
        }
    }

    #[test]
    fn manifest_round_trip_and_corruption() {
        let m = sample_manifest();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        for i in [0, 9, 20, 100, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(Manifest::decode(&bad).is_err(), "flip at {i} not detected");
        }
        assert!(Manifest::decode(&bytes[..bytes.len() - 5]).is_err());
        let mut future = bytes.clone();
        future[8] = 3;
        assert!(matches!(
            Manifest::decode(&future),
            Err(Error::UnsupportedVersion { found: 3, .. })
        ));
    }

    #[test]
    fn pack_trailer_and_index_round_trip() {
        let e = BlobEntry {
            id: ChunkId::of(b"a"),
            offset: 16,
            stored_len: 5,
            raw_len: 9,
            compression: Compression::Zstd,
        };
        let mut pack = pack_header().to_vec();
        pack.extend_from_slice(b"abcde");
        let start = pack.len();
        write_pack_trailer(&mut pack, &[e, e]);
        assert_eq!(read_pack_trailer(&pack[start..]).unwrap(), vec![e, e]);
        let mut bad = pack.clone();
        bad[start + 3] ^= 1;
        assert!(read_pack_trailer(&bad[start..]).is_err());

        let ie = IndexEntry {
            pack: ObjectId([1; 32]),
            blob: e,
        };
        let seg = encode_index(&[ie]);
        assert_eq!(decode_index(&seg).unwrap(), vec![ie]);
        let mut bad = seg.clone();
        bad[40] ^= 1;
        assert!(decode_index(&bad).is_err());
        let c = Config {
            id: [3; 32],
            created_ms: 5,
            encryption: None,
        };
        assert_eq!(c.encode().len(), CONFIG_LEN);
        assert_eq!(Config::decode(&c.encode()).unwrap(), c);
        assert_eq!(c.encode()[8..16], [1, 0, 0, 0, 0, 0, 0, 0]);
        for (aead, version) in [(Aead::XChaCha20Poly1305, 2), (Aead::Aes256Gcm, 3)] {
            let e = Config {
                encryption: Some(aead),
                ..c.clone()
            };
            assert_eq!(e.encode().len(), CONFIG_LEN);
            assert_eq!(Config::decode(&e.encode()).unwrap(), e);
            assert_eq!(e.encode()[8..16], [version, 0, 0, 0, 1, 0, 0, 0]);
        }
    }

    #[test]
    fn sealed_objects_and_packs() {
        let keys = Keys::derive(&crate::crypto::MasterKey::random(), Aead::preferred());
        let other = Keys::derive(&crate::crypto::MasterKey::random(), Aead::preferred());
        let plain = sample_manifest().encode();
        let sealed = seal_object(&keys, &MANIFEST_MAGIC, MANIFEST_VERSION_SEALED, &plain);
        assert_eq!(
            open_object(
                &keys,
                "m",
                &MANIFEST_MAGIC,
                MANIFEST_VERSION_SEALED,
                &sealed
            )
            .unwrap(),
            plain
        );
        // Another kind, another key, a flipped byte: all refused.
        assert!(open_object(&keys, "m", &INDEX_MAGIC, INDEX_VERSION_SEALED, &sealed).is_err());
        assert!(open_object(
            &other,
            "m",
            &MANIFEST_MAGIC,
            MANIFEST_VERSION_SEALED,
            &sealed
        )
        .is_err());
        let mut bad = sealed.clone();
        bad[100] ^= 1;
        assert!(matches!(
            open_object(&keys, "m", &MANIFEST_MAGIC, MANIFEST_VERSION_SEALED, &bad),
            Err(Error::Tampered { .. })
        ));
        assert!(!sealed.windows(3).any(|w| w == b"vm1"));

        let id = ChunkId::of(b"a");
        let mut pack = sealed_pack_header().to_vec();
        let n = seal_blob(&keys, &id, b"abcde", &mut pack);
        assert_eq!(
            open_blob(&keys, &id, pack[16..16 + n].to_vec()).unwrap(),
            b"abcde"
        );
        assert!(open_blob(&keys, &ChunkId::of(b"b"), pack[16..16 + n].to_vec()).is_none());
        let e = BlobEntry {
            id,
            offset: 16,
            stored_len: n as u32,
            raw_len: 9,
            compression: Compression::Zstd,
        };
        let start = pack.len();
        let len = write_sealed_pack_trailer(&mut pack, &[e, e], &keys);
        assert_eq!(len, pack.len() - start);
        assert_eq!(
            read_sealed_pack_trailer(&pack[start..], &keys).unwrap(),
            vec![e, e]
        );
        assert!(read_sealed_pack_trailer(&pack[start..], &other).is_err());
    }
}

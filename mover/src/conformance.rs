//! Checks that a [`BackupTarget`] keeps its written contract. Every target runs these: the
//! repository and the tape-style archive (this crate's tests), and any other a caller writes
//! (feature `testing`).

use chunker::format::{BackupStats, Chunking, Disk, Entry, Manifest, ObjectId};
use chunker::{ChunkId, Encoder};
use targets::conformance::chunk;
use targets::{now_ms, random_bytes, Put};

use crate::BackupTarget;

/// Runs every check on `t`, which must be empty and accept one snapshot of one disk of
/// `chunks` chunks of `chunk_len` bytes (the last one all zero). Returns the committed
/// snapshot's id and its manifest, for the caller to check that the target holds it.
pub fn backup_target(t: &dyn BackupTarget, chunks: u32, chunk_len: u32) -> (ObjectId, Manifest) {
    assert!(chunks >= 3, "the checks need at least three chunks");
    let key = t.id_key();
    let data: Vec<Vec<u8>> = (0..chunks - 1)
        .map(|i| chunk(i, chunk_len as usize))
        .chain([vec![0; chunk_len as usize]])
        .collect();
    let ids: Vec<ChunkId> = data.iter().map(|d| key.id(d)).collect();
    for id in &ids {
        assert!(!t.has(id).unwrap(), "an empty target holds nothing");
    }
    let mut entries = Vec::new();
    let mut encoder = Encoder::new(3);
    for (i, (d, id)) in data.iter().zip(&ids).enumerate() {
        let zero = i + 1 == data.len();
        let entry = Entry {
            len: chunk_len,
            id: (!zero).then_some(*id),
        };
        t.place(0, i as u64, &entry).unwrap();
        if !zero {
            let frame = encoder.encode(d);
            assert_eq!(
                t.put(id, frame).unwrap(),
                Put::Stored,
                "a new chunk is stored"
            );
            assert!(t.has(id).unwrap(), "a chunk put is held at once");
        }
        entries.push(entry);
    }
    // Puts are idempotent, and `has` answers from many threads at once.
    let again = encoder.encode(&data[0]);
    assert_eq!(t.put(&ids[0], again).unwrap(), Put::AlreadyPresent);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for id in &ids[..ids.len() - 1] {
                    assert!(t.has(id).unwrap());
                }
            });
        }
    });
    let _ = t.buffered_bytes();
    let manifest = Manifest {
        created_ms: now_ms(),
        nonce: random_bytes(),
        parent: None,
        stats: BackupStats::default(),
        name: "conformance".into(),
        disks: vec![Disk {
            name: "disk".into(),
            source: "conformance".into(),
            chunking: Chunking::Fixed(chunk_len),
            source_len: u64::from(chunks) * u64::from(chunk_len),
            change_token: String::new(),
            stats: BackupStats::default(),
            entries,
        }],
        attachments: Vec::new(),
    };
    let id = t.commit(&manifest).expect("commit");
    (id, manifest)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use targets::{LocalBackend, Repository, RepositoryOptions};

    use super::*;
    use crate::archive::{read_archive, ArchiveInput, ArchiveTarget};
    use crate::Progress;

    #[test]
    fn the_repository_keeps_the_backup_target_contract() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(LocalBackend::new(dir.path().join("repo")));
        Repository::init(backend.clone()).unwrap();
        let repo = Repository::open(backend, RepositoryOptions::default()).unwrap();
        let (id, manifest) = backup_target(&repo, 5, 64 << 10);
        let (_, stored) = repo.find_snapshot(&id.to_hex(), None).unwrap();
        assert_eq!(stored.disks[0].entries, manifest.disks[0].entries);
        for e in &manifest.disks[0].entries {
            if let Some(chunk) = e.id {
                assert!(repo.locate(&chunk).is_some(), "every chunk is in the index");
            }
        }
    }

    #[test]
    fn the_archive_keeps_the_backup_target_contract() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.archive");
        let (sink, _) =
            crate::archive::open_sink(path.to_str().unwrap(), None, None, false).unwrap();
        let header = crate::archive::header_for(
            &[("disk".into(), 5 * (64 << 10))],
            64 << 10,
            Vec::new(),
            "conformance",
        );
        let options = targets::archive::ArchiveOptions {
            block_size: 64 << 10,
            volume_size: None,
        };
        let target = ArchiveTarget::new(sink, &options, header, Vec::new(), None).unwrap();
        let (_, manifest) = backup_target(&target, 5, 64 << 10);
        let file = std::fs::File::open(&path).unwrap();
        let listing = read_archive(
            ArchiveInput::Stream(Box::new(file)),
            true,
            &Progress::default(),
            None,
        )
        .unwrap();
        assert!(listing.damage.is_empty(), "{:?}", listing.damage);
        assert_eq!(listing.chunks, 4, "every data chunk is on the archive once");
        assert_eq!(
            listing.manifest.unwrap().disks[0].entries,
            manifest.disks[0].entries
        );
    }
}

//! The chunks of a snapshot just taken, read back from the sources it was taken from. The file
//! catalog a backup writes after its commit reads directories and inodes; the sources are
//! still open and hold them, so a positional read of the source replaces a fetch from the
//! repository and a decode (over S3, a round trip each). A chunk read from a source is used
//! only when its bytes hash to the chunk's id (the snapshot's content, whatever the source
//! holds now); any other chunk, or a failed read, comes from the repository.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chunker::format::Manifest;
use chunker::{ChunkId, Compression, Frame, IdKey};
use targets::{ChunkStore, Put};

use crate::source::Source;

/// A [`ChunkStore`] for reading one snapshot: chunks from the snapshot's sources where they
/// still match, else from `repo`. Writes go to `repo` (nothing writes through it).
pub(crate) struct SourceFirst {
    repo: Arc<dyn ChunkStore>,
    key: IdKey,
    /// One per disk of the manifest; `None` where the disk was a stream.
    sources: Vec<Option<Arc<dyn Source>>>,
    /// Each disk's chunk starts.
    starts: Vec<Vec<u64>>,
    /// Every data chunk of the sourced disks as (first 8 bytes of its id, disk, entry),
    /// sorted: 16 bytes a chunk, where a map of whole ids would take several times that.
    places: Vec<(u64, u32, u32)>,
    lens: Vec<Vec<u32>>,
    ids: Vec<Vec<Option<ChunkId>>>,
    /// Chunks read from a source, and from the repository.
    sourced: AtomicU64,
    fetched: AtomicU64,
}

fn prefix(id: &ChunkId) -> u64 {
    chunker::le::u64_at(id.as_bytes(), 0)
}

impl SourceFirst {
    /// `sources[d]` read the disk `manifest.disks[d]` during the backup.
    pub(crate) fn new(
        repo: Arc<dyn ChunkStore>,
        manifest: &Manifest,
        sources: Vec<Option<Arc<dyn Source>>>,
    ) -> Self {
        let mut places = Vec::new();
        let (mut starts, mut lens, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for (d, disk) in manifest.disks.iter().enumerate() {
            let sourced = sources.get(d).is_some_and(Option::is_some);
            let mut at = 0u64;
            let mut s = Vec::new();
            for (i, e) in disk.entries.iter().enumerate() {
                s.push(at);
                at += u64::from(e.len);
                if let (true, Some(id)) = (sourced, e.id) {
                    places.push((prefix(&id), d as u32, i as u32));
                }
            }
            starts.push(if sourced { s } else { Vec::new() });
            lens.push(disk.entries.iter().map(|e| e.len).collect());
            ids.push(disk.entries.iter().map(|e| e.id).collect());
        }
        places.sort_unstable();
        SourceFirst {
            key: repo.id_key(),
            repo,
            sources,
            starts,
            places,
            lens,
            ids,
            sourced: AtomicU64::new(0),
            fetched: AtomicU64::new(0),
        }
    }

    /// Chunks read so far from the sources, and from the repository.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.sourced.load(Ordering::Relaxed),
            self.fetched.load(Ordering::Relaxed),
        )
    }

    /// The chunk read from a source that still holds it.
    fn read_source(&self, id: &ChunkId) -> Option<Vec<u8>> {
        let p = prefix(id);
        let from = self.places.partition_point(|&(q, _, _)| q < p);
        for &(q, d, i) in &self.places[from..] {
            if q != p {
                break;
            }
            let (d, i) = (d as usize, i as usize);
            if self.ids[d][i] != Some(*id) {
                continue;
            }
            let source = self.sources[d].as_ref()?;
            let mut buf = vec![0u8; self.lens[d][i] as usize];
            if source.read_at(self.starts[d][i], &mut buf).is_ok() && self.key.id(&buf) == *id {
                return Some(buf);
            }
        }
        None
    }
}

impl std::fmt::Debug for SourceFirst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceFirst")
            .field("repo", &self.repo)
            .field("chunks", &self.places.len())
            .finish_non_exhaustive()
    }
}

impl ChunkStore for SourceFirst {
    fn has(&self, id: &ChunkId) -> targets::Result<bool> {
        self.repo.has(id)
    }

    fn put(&self, id: &ChunkId, frame: Frame) -> targets::Result<Put> {
        self.repo.put(id, frame)
    }

    fn get(&self, id: &ChunkId) -> targets::Result<Frame> {
        match self.read_source(id) {
            Some(bytes) => {
                self.sourced.fetch_add(1, Ordering::Relaxed);
                Ok(Frame {
                    compression: Compression::None,
                    raw_len: bytes.len() as u32,
                    bytes,
                })
            }
            None => {
                self.fetched.fetch_add(1, Ordering::Relaxed);
                self.repo.get(id)
            }
        }
    }

    fn get_many(&self, ids: &[ChunkId]) -> targets::Result<Vec<Frame>> {
        ids.iter().map(|id| self.get(id)).collect()
    }

    fn flush(&self) -> targets::Result<()> {
        self.repo.flush()
    }

    fn id_key(&self) -> IdKey {
        self.key
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chunker::Decoder;
    use targets::{ChunkStore, LocalBackend, Repository, RepositoryOptions};

    use super::SourceFirst;
    use crate::{backup_image, BackupOptions, FileSource, Progress, Source};

    #[test]
    fn chunks_come_from_the_source_while_it_matches_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        let data: Vec<u8> = (0..4u32 << 18)
            .flat_map(|i| (i * 31).to_le_bytes())
            .collect();
        std::fs::write(&img, &data).unwrap(); // 4 MiB: four 1 MiB chunks
        let backend = Arc::new(LocalBackend::new(dir.path().join("repo")));
        Repository::init(backend.clone()).unwrap();
        let repo = Arc::new(Repository::open(backend, RepositoryOptions::default()).unwrap());
        let opts = BackupOptions {
            name: "d".into(),
            chunk_size: chunker::DEFAULT_CHUNK_SIZE,
            level: 3,
            threads: 2,
            memory: 64 << 20,
            parent: None,
            verify_changes: 0,
            attachments: Vec::new(),
        };
        let source = FileSource::open(img.to_str().unwrap()).unwrap();
        let report =
            backup_image(&*repo, &source, "disk.img", &opts, &Progress::default()).unwrap();
        // The source changes after the snapshot: its second chunk no longer matches.
        let mut changed = data.clone();
        changed[(1 << 20) + 5] ^= 1;
        std::fs::write(&img, &changed).unwrap();
        let source: Arc<dyn Source> = Arc::new(FileSource::open(img.to_str().unwrap()).unwrap());
        let store = SourceFirst::new(repo.clone(), &report.manifest, vec![Some(source)]);
        let mut dec = Decoder::new();
        for (i, e) in report.manifest.disks[0].entries.iter().enumerate() {
            let id = e.id.expect("no zero chunk");
            let chunk = dec.decode(&store.get(&id).unwrap(), &id).unwrap();
            assert_eq!(
                chunk,
                data[i << 20..(i + 1) << 20],
                "chunk {i} is the snapshot's"
            );
        }
        assert_eq!(
            store.counts(),
            (3, 1),
            "three from the source, the changed one fetched"
        );
    }
}

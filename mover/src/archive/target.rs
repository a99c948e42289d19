//! Writing: the backup target that puts a backup's chunks on an archive, with map frames.

use chunker::le;
use std::collections::HashSet;
use std::sync::Mutex;

use chunker::format::{Entry, Manifest, ObjectId};
use chunker::{ChunkId, Frame, IdKey};
use targets::archive::{
    ArchiveHeader, ArchiveId, ArchiveKey, ArchiveSummary, ArchiveWriter, VolumeSink,
};
use targets::Put;

use super::map::{encode_entry, Placed, MAP_ENTRY, MAP_FLUSH, MAP_VERSION};
use crate::{BackupTarget, Error, Result};

type Writer = ArchiveWriter<Box<dyn VolumeSink + Send>>;

struct WriteState {
    writer: Option<Writer>,
    map: Vec<u8>,
    map_entries: u32,
    /// The encoded last entry of the map frame before, repeated at the start of the next:
    /// it names the chunk frame between them, so that chunk can still be placed when that
    /// earlier map frame is lost.
    last_entry: Vec<u8>,
    /// Next offset of each disk (entries arrive in order).
    offsets: Vec<u64>,
    /// Chunks written to this archive, for the catalog file.
    written: Vec<ChunkId>,
    summary: Option<ArchiveSummary>,
}

impl WriteState {
    fn writer(&mut self) -> targets::Result<&mut Writer> {
        self.writer.as_mut().ok_or_else(poisoned)
    }

    fn flush_map(&mut self) -> targets::Result<()> {
        if self.map_entries == 0 {
            return Ok(());
        }
        let repeated = u32::from(!self.last_entry.is_empty());
        let mut payload = Vec::with_capacity(5 + MAP_ENTRY + self.map.len());
        payload.push(MAP_VERSION);
        le::push(&mut payload, self.map_entries + repeated);
        payload.extend_from_slice(&self.last_entry);
        self.last_entry = self.map[self.map.len() - MAP_ENTRY..].to_vec();
        payload.append(&mut self.map);
        self.map_entries = 0;
        self.writer()?.put_map(&payload)
    }
}

fn poisoned() -> targets::Error {
    targets::Error::Poisoned {
        first: "an earlier write to this archive failed".into(),
    }
}

/// A backup target that writes a tape-style archive (to a file, volumes, a pipe or a tape).
pub struct ArchiveTarget {
    state: Mutex<WriteState>,
    /// Chunks this archive (or an earlier archive of its chain) holds: for `has`, which many
    /// workers ask while the writer thread is busy writing.
    held: Mutex<HashSet<ChunkId>>,
    /// How chunk ids are computed for this archive (keyed when it is encrypted).
    id_key: IdKey,
}

impl ArchiveTarget {
    /// Starts an archive on `sink`; `known` are the chunks earlier archives of the chain hold
    /// (an incremental writes only the others). With a key the archive is encrypted.
    pub fn new(
        sink: Box<dyn VolumeSink + Send>,
        options: &targets::archive::ArchiveOptions,
        header: ArchiveHeader,
        known: Vec<ChunkId>,
        key: Option<ArchiveKey>,
    ) -> Result<Self> {
        let disks = header.disks.len();
        let id_key = key.as_ref().map_or(IdKey::PLAIN, |k| k.keys.id_key());
        let mut writer = ArchiveWriter::with_key(sink, options, header, key)?;
        writer.add_known(known.iter().copied());
        Ok(ArchiveTarget {
            state: Mutex::new(WriteState {
                writer: Some(writer),
                map: Vec::new(),
                map_entries: 0,
                last_entry: Vec::new(),
                offsets: vec![0; disks],
                written: Vec::new(),
                summary: None,
            }),
            held: Mutex::new(known.into_iter().collect()),
            id_key,
        })
    }

    /// The archive's id.
    pub fn id(&self) -> Option<ArchiveId> {
        let state = self.state.lock().expect("archive lock");
        state
            .writer
            .as_ref()
            .map(|w| w.id())
            .or(state.summary.as_ref().map(|s| s.id))
    }

    /// What the finished archive holds, and the chunks it wrote (once committed).
    pub fn finished(&self) -> Option<(ArchiveSummary, Vec<ChunkId>)> {
        let state = self.state.lock().expect("archive lock");
        state.summary.clone().map(|s| (s, state.written.clone()))
    }
}

impl BackupTarget for ArchiveTarget {
    fn has(&self, id: &ChunkId) -> targets::Result<bool> {
        Ok(self.held.lock().expect("held lock").contains(id))
    }

    fn put(&self, id: &ChunkId, frame: Frame) -> targets::Result<Put> {
        let mut state = self.state.lock().expect("archive lock");
        let result = state
            .flush_map()
            .and_then(|()| state.writer()?.put_chunk(id, frame));
        match result {
            Ok(true) => {
                state.written.push(*id);
                self.held.lock().expect("held lock").insert(*id);
                Ok(Put::Stored)
            }
            Ok(false) => Ok(Put::AlreadyPresent),
            Err(e) => {
                state.writer = None; // poisoned: nothing more is written
                Err(e)
            }
        }
    }

    fn buffered_bytes(&self) -> u64 {
        // A frame being written plus the record buffer.
        8 << 20
    }

    fn ordered(&self) -> bool {
        true
    }

    fn id_key(&self) -> IdKey {
        self.id_key
    }

    fn place(&self, disk: usize, index: u64, entry: &Entry) -> Result<()> {
        let mut state = self.state.lock().expect("archive lock");
        let offset = state.offsets[disk];
        state.offsets[disk] += u64::from(entry.len);
        let placed = Placed {
            disk: disk as u32,
            index,
            offset,
            len: entry.len,
            id: entry.id,
        };
        encode_entry(&mut state.map, &placed);
        state.map_entries += 1;
        if state.map.len() >= MAP_FLUSH {
            state.flush_map()?;
        }
        Ok(())
    }

    fn commit(&self, manifest: &Manifest) -> Result<ObjectId> {
        let mut state = self.state.lock().expect("archive lock");
        state.flush_map()?;
        let Some(_committing) = crate::sys::CommitGuard::enter() else {
            return Err(Error::Interrupted);
        };
        let bytes = manifest.encode();
        let writer = state.writer.take().ok_or_else(poisoned)?;
        state.summary = Some(writer.finish(&bytes)?);
        Ok(ObjectId::of(&bytes))
    }
}

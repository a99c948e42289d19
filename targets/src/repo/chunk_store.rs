//! The repository as a [`ChunkStore`]: putting chunks into packs, reading them back, and
//! flushing (see the commit order in `repo.rs`).

use chunker::format::{encode_index, BlobEntry, ObjectId, PACK_HEADER_LEN};
use chunker::le;
use chunker::{ChunkId, Frame};

use super::segments::open_segment;
use super::spans::{pack_spans, Cutter, Span};
use super::writer::{take_open_pack, Job, PackBuf};
use super::Repository;
use crate::crypt;
use crate::layout::{pack_key, random_bytes};
use crate::{ChunkStore, Error, Put, Result};

impl ChunkStore for Repository {
    fn has(&self, id: &ChunkId) -> Result<bool> {
        if self.shared.is_indexed(id) {
            return Ok(true);
        }
        Ok(self
            .shared
            .packer
            .lock()
            .expect("packer lock")
            .pending
            .contains(id))
    }

    fn put(&self, id: &ChunkId, frame: Frame) -> Result<Put> {
        self.shared.check_poison()?;
        if self.shared.crypto.is_some() && self.has(id)? {
            return Ok(Put::AlreadyPresent); // known: not sealed for nothing
        }
        // Sealed before the lock, so workers asking `has` do not wait on the cipher.
        let frame = crypt::seal_frame(self.crypto(), id, frame);
        let mut packer = self.shared.packer.lock().expect("packer lock");
        if packer.pending.contains(id) || self.shared.is_indexed(id) {
            return Ok(Put::AlreadyPresent);
        }
        if packer.buf.is_empty() {
            let room = self.options.pack_size + (1 << 20);
            if let Some(spare) = self.shared.spare.lock().expect("spare lock").pop() {
                packer.buf = spare;
            }
            if packer.buf.room() < room {
                packer.buf = PackBuf::with_capacity(room);
            }
            packer
                .buf
                .appender()
                .extend_from_slice(&crypt::pack_header(self.crypto()));
        }
        let offset = packer.buf.len();
        if offset + frame.bytes.len() > u32::MAX as usize {
            return Err(Error::Corrupt {
                what: format!("chunk {id}"),
                detail: "frame too large for a pack".into(),
            });
        }
        packer.buf.appender().extend_from_slice(&frame.bytes);
        packer.entries.push(BlobEntry {
            id: *id,
            offset: offset as u32,
            stored_len: frame.bytes.len() as u32,
            raw_len: frame.raw_len,
            compression: frame.compression,
        });
        packer.pending.insert(*id);
        if packer.buf.len() - PACK_HEADER_LEN >= self.options.pack_size {
            let sealed = take_open_pack(&mut packer);
            drop(packer);
            if let Err(e) = self.seal(sealed).and_then(|()| self.segment_if_many()) {
                self.shared.set_poison(&e);
                return Err(e);
            }
        }
        Ok(Put::Stored)
    }

    fn get(&self, id: &ChunkId) -> Result<Frame> {
        let mut located = self.locate(id);
        if located.is_none()
            && self
                .shared
                .packer
                .lock()
                .expect("packer lock")
                .pending
                .contains(id)
        {
            self.flush()?;
            located = self.locate(id);
        }
        let (pack, blob) = located.ok_or_else(|| Error::NotFound {
            what: format!("chunk {id}"),
        })?;
        let bytes = self.shared.backend.get_range(
            &pack_key(&pack),
            u64::from(blob.offset),
            blob.stored_len as usize,
        )?;
        Ok(Frame {
            compression: blob.compression,
            raw_len: blob.raw_len,
            bytes: crypt::blob_in(self.crypto(), &pack, id, bytes)?,
        })
    }

    fn get_many(&self, ids: &[ChunkId]) -> Result<Vec<Frame>> {
        let located: Vec<_> = ids.iter().map(|id| self.locate(id)).collect();
        let mut out: Vec<Option<Frame>> = std::iter::repeat_with(|| None).take(ids.len()).collect();
        for span in pack_spans(&located) {
            for (i, frame) in self.read_span(&span, &located)? {
                out[i] = Some(frame);
            }
        }
        ids.iter()
            .zip(out)
            .map(|(id, frame)| frame.map_or_else(|| self.get(id), Ok))
            .collect()
    }

    fn flush(&self) -> Result<()> {
        self.shared.check_poison()?;
        let result = self.flush_inner();
        if let Err(e) = &result {
            self.shared.set_poison(e);
        }
        result
    }

    fn id_key(&self) -> chunker::IdKey {
        Repository::id_key(self)
    }
}

impl Repository {
    /// Hands the open pack to the writer. Called without the packer lock held: the writer
    /// takes that lock when a pack becomes durable.
    pub(super) fn seal(&self, sealed: Option<(PackBuf, Vec<BlobEntry>)>) -> Result<()> {
        let Some((mut pack, entries)) = sealed else {
            return Ok(());
        };
        let trailer_len = crypt::trailer_out(self.crypto(), pack.appender(), &entries);
        let buf = pack.bytes_mut();
        if self.crypto().is_none() {
            // The footer's salt (see docs/FORMAT.md): a pack with the same contents list as a
            // condemned one must get a new id, or the fresh copy would land in the condemned
            // name. (A sealed trailer has a random nonce already.) The low byte stays 0: it
            // holds the flags of the footer.
            let salt_at = buf.len() - chunker::format::PACK_FOOTER_LEN + 4;
            let salt = u32::from_le_bytes(random_bytes::<4>()) & !0xff;
            le::put_at(buf, salt_at, salt);
        }
        *self.shared.inflight.lock().expect("inflight lock") += 1;
        let jobs = self.jobs.lock().expect("jobs lock");
        let tx = jobs
            .as_ref()
            .expect("writers run while the repository is open");
        tx.send(Job {
            buf: pack,
            entries,
            trailer_len,
        })
        .map_err(|_| {
            self.shared.pack_done();
            Error::Poisoned {
                first: "pack writer stopped".into(),
            }
        })
    }

    /// Waits until every sealed pack is durable (or has failed).
    pub(super) fn wait_for_writers(&self) {
        let mut n = self.shared.inflight.lock().expect("inflight lock");
        while *n > 0 {
            n = self.shared.idle.wait(n).expect("inflight lock");
        }
    }

    pub(super) fn flush_inner(&self) -> Result<()> {
        let sealed = take_open_pack(&mut self.shared.packer.lock().expect("packer lock"));
        self.seal(sealed)?;
        self.wait_for_writers();
        self.shared.check_poison()?;
        let entries = std::mem::take(&mut *self.shared.session.lock().expect("session lock"));
        self.write_session_segment(entries)
    }

    /// Writes the durable chunks not yet in a segment as one, once there are
    /// [`RepositoryOptions::segment_entries`](crate::RepositoryOptions) of them: a backup of
    /// millions of new chunks keeps a bounded number in memory. Their packs are durable, so
    /// the segment is as safe as the one written at the end; until a snapshot names the
    /// chunks, gc treats them like those of any unfinished backup.
    fn segment_if_many(&self) -> Result<()> {
        let entries = {
            let mut session = self.shared.session.lock().expect("session lock");
            if session.len() < self.options.segment_entries.max(1) {
                return Ok(());
            }
            std::mem::take(&mut *session)
        };
        self.write_session_segment(entries)
    }

    fn write_session_segment(&self, entries: Vec<chunker::format::IndexEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let (key, plain) = self.store_segment(encode_index(&entries), true)?;
        // The new chunks leave the in-memory delta for the segment just written, read in
        // place like every other; if it cannot be opened they simply stay in the delta.
        match open_segment(&self.segment_source(), &key, plain) {
            Ok(segment) => self
                .shared
                .index
                .write()
                .expect("index lock")
                .attach(segment, &entries),
            Err(e) => tracing::debug!("keeping the chunks of {key} in memory: {e}"),
        }
        Ok(())
    }

    /// Reads `span` from its pack as the frames of its chunks, each with its position in the
    /// request. A span of one chunk is read into its own buffer; a longer one is cut into its
    /// chunks as it arrives, never held whole.
    pub(super) fn read_span(
        &self,
        span: &Span,
        located: &[Option<(ObjectId, BlobEntry)>],
    ) -> Result<Vec<(usize, Frame)>> {
        let key = pack_key(&span.pack);
        let len = (span.end - span.start) as usize;
        let backend = &self.shared.backend;
        let stored = match span.members[..] {
            [i] => vec![(i, backend.get_range(&key, span.start, len)?)],
            // In a local file, one positional read per chunk, each into its own buffer, costs
            // no more than one read of the span, and spares the span's buffer (megabytes of
            // fresh memory, faulted in page by page) and the copy out of it.
            _ if backend.local_file(&key).is_some() => span
                .members
                .iter()
                .map(|&i| {
                    let (_, b) = located[i].expect("span members are located");
                    let bytes = backend.get_range(&key, u64::from(b.offset), b.stored_len as usize);
                    Ok((i, bytes?))
                })
                .collect::<Result<Vec<_>>>()?,
            _ => {
                let mut cut = Cutter::new(span, located);
                backend.get_range_pieces(&key, span.start, len, &mut |p| cut.feed(p))?;
                cut.finish().ok_or_else(|| Error::Corrupt {
                    what: format!("{}/{key}", backend.location()),
                    detail: format!("truncated: a read of {len} bytes came back short"),
                })?
            }
        };
        let mut out = Vec::with_capacity(stored.len());
        for (i, bytes) in stored {
            let (_, blob) = located[i].expect("span members are located");
            out.push((
                i,
                Frame {
                    compression: blob.compression,
                    raw_len: blob.raw_len,
                    bytes: crypt::blob_in(self.crypto(), &span.pack, &blob.id, bytes)?,
                },
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chunker::{ChunkId, Decoder, Encoder};

    use crate::{Backend, ChunkStore, LocalBackend, Repository, RepositoryOptions};

    fn open(backend: &Arc<dyn Backend>) -> Repository {
        let options = RepositoryOptions {
            pack_size: 4_000,
            writers: 2,
            segment_entries: 40,
            ..RepositoryOptions::default()
        };
        Repository::open(Arc::clone(backend), options).unwrap()
    }

    #[test]
    fn a_long_backup_writes_segments_as_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        Repository::init(Arc::clone(&backend)).unwrap();
        let repo = open(&backend);
        let mut enc = Encoder::new(1);
        let data: Vec<Vec<u8>> = (0..600u32)
            .map(|i| {
                (0..500u32)
                    .flat_map(|j| (i * 7919 + j).to_le_bytes())
                    .collect()
            })
            .collect();
        for d in &data {
            repo.put(&ChunkId::of(d), enc.encode(d)).unwrap();
        }
        // Before the backup's flush, most chunks are named by segments on disk already: a
        // second process sees them, and this one no longer holds them in memory.
        let (segments, _) = repo.index_footprint();
        assert!(
            segments >= 5,
            "{segments} segments written during the backup"
        );
        let other = open(&backend);
        let seen = data.iter().filter(|d| other.has(&ChunkId::of(d)).unwrap());
        assert!(seen.count() >= 400, "durable and indexed before the flush");
        repo.flush().unwrap();
        let reopened = open(&backend);
        let mut dec = Decoder::new();
        for d in &data {
            let id = ChunkId::of(d);
            assert_eq!(&dec.decode(&reopened.get(&id).unwrap(), &id).unwrap(), d);
        }
        assert_eq!(reopened.chunk_count(), data.len());
    }
}

//! Reading: a spool for chunks that may be needed again.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use chunker::{ChunkId, Compression, Decoder, Frame};

use crate::{Error, Result};

/// Chunks kept aside (as stored frames) in an unlinked temporary file, for data a later map
/// entry may ask for again. Memory holds only the index.
pub(super) struct Spool {
    file: Option<File>,
    end: u64,
    index: HashMap<ChunkId, (u64, u32, Compression, u32)>,
}

impl Spool {
    pub(super) fn new() -> Self {
        Spool {
            file: None,
            end: 0,
            index: HashMap::new(),
        }
    }

    pub(super) fn file(&mut self) -> Result<&mut File> {
        if self.file.is_none() {
            let dir = std::env::temp_dir();
            let path = dir.join(format!(
                ".mover-spool-{}-{}",
                std::process::id(),
                chunker::hex::encode(&targets::random_bytes::<6>())
            ));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| spool_error(&dir, e))?;
            let _ = std::fs::remove_file(&path); // unlinked: gone when closed
            self.file = Some(f);
        }
        Ok(self.file.as_mut().expect("just opened"))
    }

    pub(super) fn has(&self, id: &ChunkId) -> bool {
        self.index.contains_key(id)
    }

    pub(super) fn put(&mut self, id: &ChunkId, frame: &Frame) -> Result<()> {
        if self.has(id) {
            return Ok(());
        }
        let at = self.end;
        let f = self.file()?;
        f.write_all_at(&frame.bytes, at)
            .map_err(|e| spool_error(&std::env::temp_dir(), e))?;
        self.end += frame.bytes.len() as u64;
        self.index.insert(
            *id,
            (
                at,
                frame.bytes.len() as u32,
                frame.compression,
                frame.raw_len,
            ),
        );
        Ok(())
    }

    pub(super) fn get(
        &mut self,
        id: &ChunkId,
        decoder: &mut Decoder,
        out: &mut Vec<u8>,
    ) -> Result<bool> {
        let Some(&(at, len, compression, raw_len)) = self.index.get(id) else {
            return Ok(false);
        };
        let mut bytes = vec![0; len as usize];
        self.file()?
            .read_exact_at(&mut bytes, at)
            .map_err(|e| spool_error(&std::env::temp_dir(), e))?;
        let frame = Frame {
            compression,
            raw_len,
            bytes,
        };
        decoder.decode_into(&frame, id, out)?;
        Ok(true)
    }
}

fn spool_error(dir: &std::path::Path, e: std::io::Error) -> Error {
    Error::Destination {
        path: format!("the spool in {}", dir.display()),
        source: std::io::Error::new(
            e.kind(),
            format!("{e}; set TMPDIR to a filesystem with room for the archive's chunks"),
        ),
    }
}

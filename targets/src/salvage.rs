//! Reading what a pack holds when its trailer is damaged (issue 14): `repair index` must never
//! make things worse, and `gc` must never condemn a pack whose contents it cannot tell.
//!
//! Two ways back, both checked, never guessed:
//!
//! - **Bytes appended after the trailer.** The pack id is BLAKE3 of its trailer, so the
//!   original trailer is found by looking backwards for a footer whose trailer hashes to the
//!   pack's id. What it lists is exactly what the pack held.
//! - **A damaged trailer.** Entries are taken from wherever they are still known (the old
//!   index, and the trailer's entries read without their checksum), and each one is kept only
//!   if the bytes it points at decode to the chunk it names. A chunk that neither lists is not
//!   found: a frame stored raw carries no length, so frames cannot be walked on their own.

use std::collections::HashSet;

use chunker::format::{decode_pack_entries, BlobEntry, ObjectId, PACK_FOOTER_LEN, PACK_HEADER_LEN};
use chunker::{Decoder, Frame};

use crate::crypt::{self, RepoCrypto};
use crate::layout::pack_key;
use crate::{Repository, Result};

/// How a pack's contents were recovered.
#[derive(Debug)]
pub(crate) enum Salvaged {
    /// The trailer was found `extra` bytes before the end of the pack: bytes were appended.
    Appended { extra: u64, entries: Vec<BlobEntry> },
    /// The trailer is damaged: `entries` are the candidates that decode to their chunk, out of
    /// `candidates`.
    Checked {
        candidates: usize,
        entries: Vec<BlobEntry>,
    },
}

impl Salvaged {
    /// The recovered entries.
    pub(crate) fn entries(&self) -> &[BlobEntry] {
        match self {
            Salvaged::Appended { entries, .. } | Salvaged::Checked { entries, .. } => entries,
        }
    }

    /// What was done, for a report.
    pub(crate) fn describe(&self, pack: &ObjectId) -> String {
        match self {
            Salvaged::Appended { extra, entries } => format!(
                "pack {}: {extra} bytes follow its trailer (appended); its {} entries were read \
                 from the trailer found before them",
                pack.to_hex(),
                entries.len()
            ),
            Salvaged::Checked {
                candidates,
                entries,
            } => format!(
                "pack {}: its trailer is damaged; {} of {candidates} entries known from the old \
                 index and the trailer decode to their chunks and were kept",
                pack.to_hex(),
                entries.len()
            ),
        }
    }
}

/// Finds the trailer of `pack` inside `bytes` when bytes were appended after it.
pub(crate) fn embedded_trailer(
    crypto: Option<&RepoCrypto>,
    pack: &ObjectId,
    bytes: &[u8],
) -> Option<(u64, Vec<BlobEntry>)> {
    let magic = chunker::format::PACK_MAGIC;
    let mut end = bytes.len();
    while end >= PACK_HEADER_LEN + PACK_FOOTER_LEN {
        if bytes[end - 8..end] == magic {
            let footer = &bytes[end - PACK_FOOTER_LEN..end];
            if let Ok(len) = crypt::trailer_len(crypto, footer) {
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if len <= end - PACK_HEADER_LEN {
                    let tail = &bytes[end - len..end];
                    if ObjectId::of(tail) == *pack {
                        let entries = crypt::trailer_in(crypto, pack, tail).ok()?;
                        return Some(((bytes.len() - end) as u64, entries));
                    }
                }
            }
        }
        end -= 1;
    }
    None
}

/// The entries a damaged trailer still lists, read without its checksum (the footer's count
/// must still be readable). Unchecked: each must be verified against its chunk.
fn unchecked_trailer_entries(bytes: &[u8]) -> Vec<BlobEntry> {
    if bytes.len() < PACK_HEADER_LEN + PACK_FOOTER_LEN {
        return Vec::new();
    }
    let footer = &bytes[bytes.len() - PACK_FOOTER_LEN..];
    let Ok(count) = chunker::format::pack_footer_count(footer) else {
        return Vec::new();
    };
    let len = (count as usize).saturating_mul(chunker::format::PACK_ENTRY_LEN);
    let Some(start) = (bytes.len() - PACK_FOOTER_LEN).checked_sub(len) else {
        return Vec::new();
    };
    decode_pack_entries(&bytes[start..bytes.len() - PACK_FOOTER_LEN]).unwrap_or_default()
}

/// Whether the bytes `entry` points at in `bytes` decode to the chunk it names.
fn holds(
    crypto: Option<&RepoCrypto>,
    decoder: &mut Decoder,
    pack: &ObjectId,
    bytes: &[u8],
    entry: &BlobEntry,
) -> bool {
    let start = entry.offset as usize;
    let Some(stored) = start
        .checked_add(entry.stored_len as usize)
        .and_then(|end| bytes.get(start..end))
    else {
        return false;
    };
    let Ok(opened) = crypt::blob_in(crypto, pack, &entry.id, stored.to_vec()) else {
        return false;
    };
    let frame = Frame {
        compression: entry.compression,
        raw_len: entry.raw_len,
        bytes: opened,
    };
    let mut plain = Vec::new();
    decoder.decode_into(&frame, &entry.id, &mut plain).is_ok()
}

/// Recovers what `pack`, whose trailer does not read, holds: from a trailer found before
/// appended bytes, or else from `known` entries (the old index) and the damaged trailer's
/// own, each checked against its chunk.
pub(crate) fn salvage(repo: &Repository, pack: &ObjectId, known: &[BlobEntry]) -> Result<Salvaged> {
    let bytes = repo.backend().get(&pack_key(pack))?;
    if let Some((extra, entries)) = embedded_trailer(repo.crypto(), pack, &bytes) {
        return Ok(Salvaged::Appended { extra, entries });
    }
    let mut seen = HashSet::new();
    let candidates: Vec<BlobEntry> = known
        .iter()
        .copied()
        .chain(unchecked_trailer_entries(&bytes))
        .filter(|e| seen.insert((e.id, e.offset, e.stored_len)))
        .collect();
    let mut decoder = Decoder::with_id_key(repo.id_key());
    let mut chunks = HashSet::new();
    let entries = candidates
        .iter()
        .filter(|e| holds(repo.crypto(), &mut decoder, pack, &bytes, e))
        .filter(|e| chunks.insert(e.id))
        .copied()
        .collect();
    Ok(Salvaged::Checked {
        candidates: candidates.len(),
        entries,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{ChunkStore, LocalBackend, RepositoryOptions};

    /// A repository with one pack of three chunks; returns it, the pack's path and entries.
    fn one_pack(dir: &std::path::Path) -> (Repository, std::path::PathBuf, ObjectId) {
        let backend = Arc::new(LocalBackend::new(dir));
        Repository::init(backend.clone()).unwrap();
        let repo = Repository::open(backend, RepositoryOptions::default()).unwrap();
        let mut encoder = chunker::Encoder::new(3);
        for i in 0..3u8 {
            let data = vec![i + 1; 5000];
            repo.put(&chunker::ChunkId::of(&data), encoder.encode(&data))
                .unwrap();
        }
        repo.flush().unwrap();
        let pack = repo.locate(&chunker::ChunkId::of(&[1; 5000])).unwrap().0;
        (repo, dir.join(pack_key(&pack)), pack)
    }

    #[test]
    fn a_trailer_before_appended_bytes_is_found_by_the_pack_id() {
        let tmp = tempfile::tempdir().unwrap();
        let (repo, path, pack) = one_pack(tmp.path());
        let listed = repo.pack_contents(&pack).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&chunker::format::PACK_MAGIC.repeat(9));
        std::fs::write(&path, &bytes).unwrap();
        assert!(repo.pack_contents(&pack).is_err());
        match salvage(&repo, &pack, &[]).unwrap() {
            Salvaged::Appended { extra, entries } => {
                assert_eq!(extra, 72);
                assert_eq!(entries, listed);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn entries_of_a_damaged_trailer_are_kept_only_when_they_decode() {
        let tmp = tempfile::tempdir().unwrap();
        let (repo, path, pack) = one_pack(tmp.path());
        let listed = repo.pack_contents(&pack).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let first_entry = bytes.len() - PACK_FOOTER_LEN - 3 * chunker::format::PACK_ENTRY_LEN;
        bytes[first_entry] ^= 1; // the first entry's chunk id
        std::fs::write(&path, &bytes).unwrap();
        // From the trailer alone: two of three; with the old index's entry: all three.
        let s = salvage(&repo, &pack, &[]).unwrap();
        assert_eq!(s.entries(), &listed[1..], "{s:?}");
        let s = salvage(&repo, &pack, &listed[..1]).unwrap();
        let mut got = s.entries().to_vec();
        got.sort_by_key(|e| e.offset);
        assert_eq!(got, listed);
        assert!(
            s.describe(&pack).contains("3 of 4"),
            "{}",
            s.describe(&pack)
        );
    }
}

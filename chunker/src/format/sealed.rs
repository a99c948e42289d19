//! Encrypted repositories: sealed objects, blobs and pack trailers.

use super::pack::{
    decode_pack_entries, pack_footer_count, push_pack_entries, push_pack_footer, BlobEntry,
    PACK_FOOTER_LEN, PACK_HEADER_LEN,
};
use super::PACK_MAGIC;
use crate::crypto::Keys;
use crate::le::{Reader, Writer};
use crate::{ChunkId, Error, Result};

/// Version of an index segment that is sealed (its plaintext is a version 1 segment).
pub const INDEX_VERSION_SEALED: u32 = 2;
/// Version of a manifest object that is sealed (its plaintext is a version 2 manifest).
pub const MANIFEST_VERSION_SEALED: u32 = 3;
/// Version of a pack whose blobs and trailer are sealed.
pub const PACK_VERSION_SEALED: u32 = 2;
/// Length of the clear header of a sealed object.
pub const SEALED_HEADER_LEN: usize = 16;

/// Seals a whole object (an index segment, a manifest): a 16-byte clear header (the kind's
/// magic, `version`, reserved u32) that is also the associated data, then the plain encoding
/// sealed (nonce 24, ciphertext, tag 16). Its object id is BLAKE3 of the result.
pub fn seal_object(keys: &Keys, magic: &[u8; 8], version: u32, plain: &[u8]) -> Vec<u8> {
    let mut out =
        Writer::with_capacity(SEALED_HEADER_LEN + plain.len() + crate::crypto::SEAL_OVERHEAD);
    out.bytes(magic);
    out.u32(version);
    out.zeros(4);
    let mut out = out.into_vec();
    let header: [u8; SEALED_HEADER_LEN] = out[..].try_into().expect("16 bytes");
    keys.seal_into(&header, plain, &mut out);
    out
}

/// Opens an object sealed by [`seal_object`]; `what` names it in errors.
pub fn open_object(
    keys: &Keys,
    what: &str,
    magic: &[u8; 8],
    version: u32,
    buf: &[u8],
) -> Result<Vec<u8>> {
    if buf.len() < SEALED_HEADER_LEN || buf[..8] != magic[..] {
        return Err(Error::Tampered {
            what: format!("{what} (not a sealed object of this kind)"),
        });
    }
    let found = Reader::new("sealed object", &buf[8..12]).u32()?;
    if found != version {
        return Err(Error::Tampered {
            what: format!("{what} (format version {found}, not a sealed object)"),
        });
    }
    keys.open(&buf[..SEALED_HEADER_LEN], &buf[SEALED_HEADER_LEN..])
        .ok_or_else(|| Error::Tampered { what: what.into() })
}

/// The start of every sealed pack: [`PACK_MAGIC`], version 2, reserved u32.
pub fn sealed_pack_header() -> [u8; PACK_HEADER_LEN] {
    let mut w = Writer::with_capacity(PACK_HEADER_LEN);
    w.bytes(&PACK_MAGIC);
    w.u32(PACK_VERSION_SEALED);
    w.zeros(4);
    w.into_vec().try_into().expect("16 bytes")
}

/// The associated data of a chunk blob in a sealed pack: [`PACK_MAGIC`] and the chunk id, so
/// a blob moved under another id fails to open.
fn blob_aad(id: &ChunkId) -> [u8; 40] {
    let mut aad = [0u8; 40];
    aad[..8].copy_from_slice(&PACK_MAGIC);
    aad[8..].copy_from_slice(id.as_bytes());
    aad
}

/// Appends the sealed blob of a chunk's stored (compressed) bytes to `out`; returns its
/// length (stored bytes + 40).
pub fn seal_blob(keys: &Keys, id: &ChunkId, stored: &[u8], out: &mut Vec<u8>) -> usize {
    let start = out.len();
    keys.seal_into(&blob_aad(id), stored, out);
    out.len() - start
}

/// Opens a sealed blob (in its own buffer); `None` when it fails authentication.
pub fn open_blob(keys: &Keys, id: &ChunkId, sealed: Vec<u8>) -> Option<Vec<u8>> {
    keys.open_owned(&blob_aad(id), sealed)
}

/// Associated data of a sealed pack trailer.
const TRAILER_AAD: [u8; 12] = {
    let mut a = [0u8; 12];
    let mut i = 0;
    while i < 8 {
        a[i] = PACK_MAGIC[i];
        i += 1;
    }
    a[8] = PACK_VERSION_SEALED as u8;
    a
};

/// Appends the trailer of a sealed pack: the entries (as in a plain pack) sealed, then the
/// footer: sealed length u32 | flags u32 (bit 0: sealed) | BLAKE3(sealed entries)[..16] |
/// [`PACK_MAGIC`]. Returns the trailer's length (the pack id is BLAKE3 of the trailer).
pub fn write_sealed_pack_trailer(pack: &mut Vec<u8>, entries: &[BlobEntry], keys: &Keys) -> usize {
    let start = pack.len();
    let mut plain = Vec::new();
    push_pack_entries(&mut plain, entries);
    keys.seal_into(&TRAILER_AAD, &plain, pack);
    let sealed_len = pack.len() - start;
    push_pack_footer(pack, start, sealed_len as u32, 1);
    pack.len() - start
}

/// Decodes the trailer of a sealed pack (`tail`: the sealed entries and the footer).
pub fn read_sealed_pack_trailer(tail: &[u8], keys: &Keys) -> Result<Vec<BlobEntry>> {
    const W: &str = "pack trailer";
    if tail.len() < PACK_FOOTER_LEN {
        return Err(Error::structure(W, "truncated"));
    }
    let (sealed, footer) = tail.split_at(tail.len() - PACK_FOOTER_LEN);
    let len = pack_footer_count(footer)? as usize;
    if sealed.len() != len || footer[4] & 1 == 0 {
        return Err(Error::structure(W, "sealed length does not match"));
    }
    if blake3::hash(sealed).as_bytes()[..16] != footer[8..24] {
        return Err(Error::structure(W, "checksum mismatch"));
    }
    let plain = keys
        .open(&TRAILER_AAD, sealed)
        .ok_or_else(|| Error::Tampered {
            what: "pack trailer".into(),
        })?;
    decode_pack_entries(&plain)
}

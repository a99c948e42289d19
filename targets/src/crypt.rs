//! Encrypted repositories: unlocking with a password, reading and writing the key objects under
//! `keys/`, and the sealing the repository applies where it encodes and decodes objects
//! (`docs/FORMAT.md`, "Encryption"). Managing keys of an open repository is `keys.rs`.
//!
//! One random master key per repository; each key object (`keys/<id>`, the id being BLAKE3 of
//! the object) wraps it with one password, so several passwords open the same repository and a
//! password is changed by writing a new key object and removing the old one. The `config`
//! object says only that the repository is encrypted.
//!
//! Every other object is sealed: each chunk blob in a pack (associated data: the chunk id), the
//! pack trailer, every index segment and every snapshot manifest. An encrypted repository
//! accepts only sealed objects, so an object planted in clear is refused like a tampered one.

use chunker::crypto::{KdfParams, KeyFile, Keys, MasterKey, Password};
use chunker::format::{
    open_blob, open_object, seal_blob, seal_object, sealed_pack_header, write_pack_trailer,
    write_sealed_pack_trailer, BlobEntry, Config, ObjectId, INDEX_MAGIC, INDEX_VERSION_SEALED,
    MANIFEST_MAGIC, MANIFEST_VERSION_SEALED, PACK_ENTRY_LEN, PACK_FOOTER_LEN, PACK_HEADER_LEN,
};
use chunker::{ChunkId, Frame, IdKey};

use crate::layout::{key_name, key_object_key, now_ms, KEYS_DIR};
use crate::{Backend, Error, Result};

/// The unlocked keys of an encrypted repository.
pub(crate) struct RepoCrypto {
    pub(crate) master: MasterKey,
    keys: Keys,
    /// The key object the password opened.
    pub(crate) key_in_use: String,
}

/// Stores a key object wrapping `master` with `password`; returns its id.
pub(crate) fn store_key(
    backend: &dyn Backend,
    master: &MasterKey,
    password: &Password,
    params: KdfParams,
) -> Result<String> {
    let file = KeyFile::wrap(master, password, params, now_ms())?;
    let bytes = file.encode();
    let id = ObjectId::of(&bytes).to_hex();
    backend.put_new(&key_object_key(&id), &bytes)?;
    Ok(id)
}

/// Every key object of the repository (damaged ones skipped with a warning).
pub(crate) fn key_files(backend: &dyn Backend) -> Result<Vec<(String, KeyFile)>> {
    let mut out = Vec::new();
    for key in backend.list(KEYS_DIR)? {
        let name = key_name(&key).to_string();
        let bytes = backend.get(&key)?;
        if ObjectId::from_hex(&name) != Some(ObjectId::of(&bytes)) {
            tracing::warn!("key object {key} is damaged (content does not match its name)");
            continue;
        }
        match KeyFile::decode(&bytes) {
            Ok(f) => out.push((name, f)),
            Err(e) => tracing::warn!("key object {key} is damaged: {e}"),
        }
    }
    out.sort_by_key(|(name, f)| (f.created_ms, name.clone()));
    Ok(out)
}

/// Unlocks the repository described by `config`: `None` for an unencrypted one.
pub(crate) fn unlock(
    backend: &dyn Backend,
    config: &Config,
    password: Option<&Password>,
) -> Result<Option<RepoCrypto>> {
    let Some(aead) = config.encryption else {
        if password.is_some() {
            tracing::debug!(
                "{} is not encrypted; the password is not used",
                backend.location()
            );
        }
        return Ok(None);
    };
    let location = backend.location().to_string();
    let Some(password) = password else {
        return Err(Error::PasswordRequired { location });
    };
    let files = key_files(backend)?;
    if files.is_empty() {
        return Err(Error::Corrupt {
            what: format!("{location}/keys"),
            detail: "the repository is encrypted but holds no readable key object".into(),
        });
    }
    for (name, file) in files {
        match file.unwrap_key(password) {
            Ok(master) => {
                return Ok(Some(RepoCrypto {
                    keys: Keys::derive(&master, aead),
                    master,
                    key_in_use: name,
                }))
            }
            Err(chunker::Error::WrongPassword) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::WrongPassword { location })
}

impl RepoCrypto {
    pub(crate) fn id_key(&self) -> IdKey {
        self.keys.id_key()
    }

    /// The same master key sealing with `aead` (`repair config` tries each cipher).
    pub(crate) fn with_aead(&self, aead: chunker::crypto::Aead) -> RepoCrypto {
        RepoCrypto {
            keys: Keys::derive(&self.master, aead),
            master: self.master.clone(),
            key_in_use: self.key_in_use.clone(),
        }
    }
}

// The hooks below are what `repo.rs` calls where it encodes or decodes an object; each is the
// identity for an unencrypted repository, whose format stays byte for byte what it was.

/// Bytes of a pack's header.
pub(crate) fn pack_header(c: Option<&RepoCrypto>) -> [u8; PACK_HEADER_LEN] {
    match c {
        Some(_) => sealed_pack_header(),
        None => chunker::format::pack_header(),
    }
}

/// A chunk's frame as it goes into a pack: its stored bytes sealed in an encrypted repository.
pub(crate) fn seal_frame(c: Option<&RepoCrypto>, id: &ChunkId, frame: Frame) -> Frame {
    match c {
        Some(c) => {
            let mut sealed = Vec::new();
            seal_blob(&c.keys, id, &frame.bytes, &mut sealed);
            Frame {
                bytes: sealed,
                ..frame
            }
        }
        None => frame,
    }
}

/// The stored bytes of a chunk read from `pack`.
pub(crate) fn blob_in(
    c: Option<&RepoCrypto>,
    pack: &ObjectId,
    id: &ChunkId,
    bytes: Vec<u8>,
) -> Result<Vec<u8>> {
    match c {
        Some(c) => open_blob(&c.keys, id, bytes).ok_or_else(|| Error::Tampered {
            object: format!("pack {} (chunk {})", pack.to_hex(), id.to_hex()),
        }),
        None => Ok(bytes),
    }
}

/// Appends a pack's trailer; returns its length (the pack id is BLAKE3 of the trailer).
pub(crate) fn trailer_out(
    c: Option<&RepoCrypto>,
    pack: &mut Vec<u8>,
    entries: &[BlobEntry],
) -> usize {
    match c {
        Some(c) => write_sealed_pack_trailer(pack, entries, &c.keys),
        None => {
            write_pack_trailer(pack, entries);
            entries.len() * PACK_ENTRY_LEN + PACK_FOOTER_LEN
        }
    }
}

/// The length of a pack's trailer (entries and footer) from its footer.
pub(crate) fn trailer_len(c: Option<&RepoCrypto>, footer: &[u8]) -> Result<u64> {
    let n = u64::from(chunker::format::pack_footer_count(footer)?);
    Ok(match c {
        // A sealed footer gives the sealed entries' length.
        Some(_) => n + PACK_FOOTER_LEN as u64,
        None => n * PACK_ENTRY_LEN as u64 + PACK_FOOTER_LEN as u64,
    })
}

/// The entries of a pack's trailer (`tail`: entries and footer).
pub(crate) fn trailer_in(
    c: Option<&RepoCrypto>,
    pack: &ObjectId,
    tail: &[u8],
) -> Result<Vec<BlobEntry>> {
    match c {
        Some(c) => chunker::format::read_sealed_pack_trailer(tail, &c.keys).map_err(|e| match e {
            chunker::Error::Tampered { .. } => Error::Tampered {
                object: format!("pack {} (trailer)", pack.to_hex()),
            },
            e => Error::Format(e),
        }),
        None => Ok(chunker::format::read_pack_trailer(tail)?),
    }
}

/// The stored form of an index segment.
pub(crate) fn index_out(c: Option<&RepoCrypto>, plain: Vec<u8>) -> Vec<u8> {
    match c {
        Some(c) => seal_object(&c.keys, &INDEX_MAGIC, INDEX_VERSION_SEALED, &plain),
        None => plain,
    }
}

/// The plain encoding of the index segment `key`.
pub(crate) fn index_in(c: Option<&RepoCrypto>, key: &str, stored: &[u8]) -> Result<Vec<u8>> {
    match c {
        Some(c) => {
            open_object(&c.keys, "", &INDEX_MAGIC, INDEX_VERSION_SEALED, stored).map_err(|_| {
                Error::Tampered {
                    object: format!("index segment {key}"),
                }
            })
        }
        None => Ok(stored.to_vec()),
    }
}

/// The stored form of a manifest.
pub(crate) fn manifest_out(c: Option<&RepoCrypto>, plain: Vec<u8>) -> Vec<u8> {
    match c {
        Some(c) => seal_object(&c.keys, &MANIFEST_MAGIC, MANIFEST_VERSION_SEALED, &plain),
        None => plain,
    }
}

/// The plain encoding of snapshot `id`.
pub(crate) fn manifest_in(
    c: Option<&RepoCrypto>,
    id: &ObjectId,
    stored: Vec<u8>,
) -> Result<Vec<u8>> {
    match c {
        Some(c) => open_object(
            &c.keys,
            "",
            &MANIFEST_MAGIC,
            MANIFEST_VERSION_SEALED,
            &stored,
        )
        .map_err(|_| Error::Tampered {
            object: format!("snapshot {}", id.to_hex()),
        }),
        None => Ok(stored),
    }
}

/// Version of a sealed file catalog (the plain one inside has its own).
const CATALOG_VERSION_SEALED: u32 = 2;

/// The stored form of a file catalog.
pub(crate) fn catalog_out(c: Option<&RepoCrypto>, plain: &[u8]) -> Vec<u8> {
    match c {
        Some(c) => seal_object(
            &c.keys,
            &chunker::format::CATALOG_MAGIC,
            CATALOG_VERSION_SEALED,
            plain,
        ),
        None => plain.to_vec(),
    }
}

/// The plain encoding of the file catalog of snapshot `id`.
pub(crate) fn catalog_in(
    c: Option<&RepoCrypto>,
    id: &ObjectId,
    stored: Vec<u8>,
) -> Result<Vec<u8>> {
    match c {
        Some(c) => open_object(
            &c.keys,
            "",
            &chunker::format::CATALOG_MAGIC,
            CATALOG_VERSION_SEALED,
            &stored,
        )
        .map_err(|_| Error::Tampered {
            object: format!("file catalog of snapshot {}", id.to_hex()),
        }),
        None => Ok(stored),
    }
}

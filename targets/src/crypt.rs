//! Encrypted repositories: unlocking with a password, the key objects under `keys/`, and the
//! sealing the repository applies where it encodes and decodes objects (`docs/FORMAT.md`,
//! "Encryption").
//!
//! One random master key per repository; each key object (`keys/<id>`, the id being BLAKE3 of
//! the object) wraps it with one password, so several passwords open the same repository and a
//! password is changed by writing a new key object and removing the old one. The `config`
//! object says only that the repository is encrypted.
//!
//! Every other object is sealed: each chunk blob in a pack (associated data: the chunk id), the
//! pack trailer, every index segment and every snapshot manifest. An encrypted repository
//! accepts only sealed objects, so an object planted in clear is refused like a tampered one.

use std::sync::Arc;

use chunker::crypto::{Aead, KdfParams, KeyFile, Keys, MasterKey, Password};
use chunker::format::{
    open_blob, open_object, seal_blob, seal_object, sealed_pack_header, write_pack_trailer,
    write_sealed_pack_trailer, BlobEntry, Config, ObjectId, INDEX_MAGIC, INDEX_VERSION_SEALED,
    MANIFEST_MAGIC, MANIFEST_VERSION_SEALED, PACK_ENTRY_LEN, PACK_FOOTER_LEN, PACK_HEADER_LEN,
};
use chunker::{ChunkId, Frame, IdKey};

use crate::repo::{now_ms, random_bytes};
use crate::{Backend, Error, Repository, Result};

/// The unlocked keys of an encrypted repository.
pub(crate) struct RepoCrypto {
    master: MasterKey,
    keys: Keys,
    /// The key object the password opened.
    key_in_use: String,
}

/// A key object of a repository, for `mover key list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// Its id (64 hex; the object is `keys/<id>`).
    pub id: String,
    /// When it was made, ms since the Unix epoch.
    pub created_ms: i64,
    /// Its Argon2id parameters.
    pub params: KdfParams,
    /// The password given opened this one.
    pub in_use: bool,
}

const KEYS_DIR: &str = "keys";

fn key_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Stores a key object wrapping `master` with `password`; returns its id.
fn store_key(
    backend: &dyn Backend,
    master: &MasterKey,
    password: &Password,
    params: KdfParams,
) -> Result<String> {
    let file = KeyFile::wrap(master, password, params, now_ms())?;
    let bytes = file.encode();
    let id = ObjectId::of(&bytes).to_hex();
    backend.put_new(&format!("{KEYS_DIR}/{id}"), &bytes)?;
    Ok(id)
}

/// Every key object of the repository (damaged ones skipped with a warning).
fn key_files(backend: &dyn Backend) -> Result<Vec<(String, KeyFile)>> {
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

impl Repository {
    /// Creates a new, empty repository encrypted with `aead`: a random master key, wrapped
    /// with `password` in the first key object, and a config that says the repository is
    /// encrypted and with what. Refuses a location that already holds objects.
    pub fn init_encrypted(
        backend: Arc<dyn Backend>,
        password: &Password,
        params: KdfParams,
        aead: Aead,
    ) -> Result<Config> {
        if !backend.list("")?.is_empty() {
            return Err(Error::NotEmpty {
                location: backend.location().to_string(),
            });
        }
        let master = MasterKey::random();
        store_key(&*backend, &master, password, params)?;
        let config = Config {
            id: random_bytes(),
            created_ms: now_ms(),
            encryption: Some(aead),
        };
        // The config last: a location with keys but no config is not yet a repository.
        if !backend.put_new("config", &config.encode())? {
            return Err(Error::NotEmpty {
                location: backend.location().to_string(),
            });
        }
        Ok(config)
    }

    fn unlocked(&self) -> Result<&RepoCrypto> {
        self.crypto().ok_or_else(|| Error::InvalidArgument {
            detail: format!(
                "{} is not encrypted; it has no keys (create an encrypted repository with `mover init --encrypt`)",
                self.location()
            ),
        })
    }

    /// The key objects of an encrypted repository, oldest first.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let c = self.unlocked()?;
        Ok(key_files(&**self.backend())?
            .into_iter()
            .map(|(id, f)| KeyInfo {
                in_use: id == c.key_in_use,
                id,
                created_ms: f.created_ms,
                params: f.params,
            })
            .collect())
    }

    /// Adds a key object: one more password that opens this repository. Returns its id.
    pub fn add_key(&self, password: &Password, params: KdfParams) -> Result<String> {
        let c = self.unlocked()?;
        store_key(&**self.backend(), &c.master, password, params)
    }

    /// Removes the key object whose id starts with `prefix`. Refuses the last key and the one
    /// the password in use opened (change that one with [`Repository::change_password`]).
    pub fn remove_key(&self, prefix: &str) -> Result<String> {
        let c = self.unlocked()?;
        let keys = key_files(&**self.backend())?;
        let prefix = prefix.to_ascii_lowercase();
        let found: Vec<&String> = keys
            .iter()
            .map(|(id, _)| id)
            .filter(|id| !prefix.is_empty() && id.starts_with(&prefix))
            .collect();
        let id = match found.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(Error::NotFound {
                    what: format!("key '{prefix}'"),
                })
            }
            _ => {
                return Err(Error::InvalidArgument {
                    detail: format!(
                        "key '{prefix}' matches {} keys; give more characters",
                        found.len()
                    ),
                })
            }
        };
        if keys.len() < 2 {
            return Err(Error::InvalidArgument {
                detail: "this is the repository's last key; removing it would make the repository unreadable".into(),
            });
        }
        if id == c.key_in_use {
            return Err(Error::InvalidArgument {
                detail: format!(
                    "key {} is in use (the given password opens it); remove it with another password, or change it with `mover key passwd`",
                    &id[..12]
                ),
            });
        }
        self.backend().delete(&format!("{KEYS_DIR}/{id}"))?;
        Ok(id)
    }

    /// Replaces the key object in use with one for `password`; returns the new key's id. The
    /// new key is durable before the old one is removed.
    pub fn change_password(&self, password: &Password, params: KdfParams) -> Result<String> {
        let c = self.unlocked()?;
        let new = store_key(&**self.backend(), &c.master, password, params)?;
        if new != c.key_in_use {
            self.backend()
                .delete(&format!("{KEYS_DIR}/{}", c.key_in_use))?;
        }
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChunkStore, LocalBackend, RepositoryOptions};

    fn fast() -> KdfParams {
        KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    fn open(dir: &std::path::Path, pw: &[u8]) -> Result<Repository> {
        let options = RepositoryOptions {
            password: Some(Password::new(pw.to_vec())),
            ..Default::default()
        };
        Repository::open(Arc::new(LocalBackend::new(dir)), options)
    }

    fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out
    }

    #[test]
    fn encrypted_repository_behaves_and_reveals_nothing() {
        for aead in [Aead::XChaCha20Poly1305, Aead::Aes256Gcm] {
            behaves_and_reveals_nothing(aead);
        }
    }

    fn behaves_and_reveals_nothing(aead: Aead) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("repo");
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&dir));
        let config =
            Repository::init_encrypted(backend, &Password::new(b"pw".to_vec()), fast(), aead)
                .unwrap();
        assert_eq!(config.encryption, Some(aead));
        let repo = open(&dir, b"pw").unwrap();
        assert!(repo.id_key().is_keyed());
        let reopen = || -> Box<dyn ChunkStore> { Box::new(open(&dir, b"pw").unwrap()) };
        crate::conformance::chunk_store(&repo, &reopen);
        drop(repo);

        // A recognisable pattern stored in a chunk and a manifest appears in no file.
        let repo = open(&dir, b"pw").unwrap();
        let data = b"RECOGNISABLE-PATTERN ".repeat(5000);
        let id = repo.id_key().id(&data);
        repo.put(&id, chunker::Encoder::new(3).encode(&data))
            .unwrap();
        repo.flush().unwrap();
        for f in files(&dir) {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !bytes.windows(12).any(|w| w == b"RECOGNISABLE"),
                "{}",
                f.display()
            );
        }

        // Wrong or missing password.
        assert!(matches!(
            open(&dir, b"nope"),
            Err(Error::WrongPassword { .. })
        ));
        let plain = Repository::open(Arc::new(LocalBackend::new(&dir)), Default::default());
        assert!(matches!(plain, Err(Error::PasswordRequired { .. })));

        // A flipped byte in the chunk's blob is reported with its pack.
        let (pack, blob) = repo.locate(&id).unwrap();
        let path = dir.join(crate::pack_key(&pack));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(blob.offset + blob.stored_len / 2) as usize] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        match repo.get(&id) {
            Err(Error::Tampered { object }) => assert!(object.contains(&pack.to_hex())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_add_list_remove_passwd() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("repo");
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&dir));
        Repository::init_encrypted(
            backend,
            &Password::new(b"one".to_vec()),
            fast(),
            Aead::preferred(),
        )
        .unwrap();
        let repo = open(&dir, b"one").unwrap();
        let first = repo.list_keys().unwrap();
        assert_eq!(first.len(), 1);
        assert!(first[0].in_use);
        assert!(
            repo.remove_key(&first[0].id[..8]).is_err(),
            "the last key stays"
        );
        let second = repo
            .add_key(&Password::new(b"two".to_vec()), fast())
            .unwrap();
        assert_eq!(repo.list_keys().unwrap().len(), 2);
        assert!(
            repo.remove_key(&first[0].id).is_err(),
            "the key in use stays"
        );
        let other = open(&dir, b"two").unwrap();
        assert!(other
            .list_keys()
            .unwrap()
            .iter()
            .any(|k| k.in_use && k.id == second));
        // passwd: the old password stops working, the other key still works.
        let third = repo
            .change_password(&Password::new(b"three".to_vec()), fast())
            .unwrap();
        assert!(matches!(
            open(&dir, b"one"),
            Err(Error::WrongPassword { .. })
        ));
        assert!(open(&dir, b"two").is_ok());
        let repo = open(&dir, b"three").unwrap();
        assert_eq!(repo.remove_key(&second[..10]).unwrap(), second);
        assert!(matches!(
            open(&dir, b"two"),
            Err(Error::WrongPassword { .. })
        ));
        assert_eq!(repo.list_keys().unwrap()[0].id, third);
    }
}

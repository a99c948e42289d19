//! Key management of an open encrypted repository: creating one, listing, adding and removing
//! its key objects, changing a password. The objects themselves are read and written by
//! `crypt.rs`, which this module builds on.

use std::sync::Arc;

use chunker::crypto::{Aead, KdfParams, MasterKey, Password};
use chunker::format::Config;

use crate::crypt::{key_files, store_key, RepoCrypto};
use crate::layout::{key_object_key, now_ms, random_bytes, CONFIG_KEY};
use crate::{Backend, Error, Repository, Result};

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
        crate::repo::refuse_non_empty(&*backend)?;
        let master = MasterKey::random();
        store_key(&*backend, &master, password, params)?;
        let config = Config {
            id: random_bytes(),
            created_ms: now_ms(),
            encryption: Some(aead),
        };
        // The config last: a location with keys but no config is not yet a repository.
        if !backend.put_new(CONFIG_KEY, &config.encode())? {
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
        self.backend().delete(&key_object_key(&id))?;
        Ok(id)
    }

    /// Replaces the key object in use with one for `password`; returns the new key's id. The
    /// new key is durable before the old one is removed.
    pub fn change_password(&self, password: &Password, params: KdfParams) -> Result<String> {
        let c = self.unlocked()?;
        let new = store_key(&**self.backend(), &c.master, password, params)?;
        if new != c.key_in_use {
            self.backend().delete(&key_object_key(&c.key_in_use))?;
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

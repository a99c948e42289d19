//! A damaged or lost `config` (issue 14, item 9): telling it apart from a location that holds
//! no repository, and `repair config`, which writes a new one from what the repository holds.
//!
//! # What a config holds, and where else it is recorded
//!
//! The config is 88 bytes: the format version, whether the repository is encrypted and with
//! which cipher, a random repository id and the creation time (`docs/FORMAT.md`). Packs,
//! index segments, snapshots and key objects record **neither the id nor the creation time**;
//! the id only names the index cache on machines that open the repository over S3. So:
//!
//! - *Encryption* is told by the objects: a plain repository has no key objects and clear
//!   packs, segments and manifests; an encrypted one has key objects and sealed objects.
//! - *The cipher* of an encrypted repository is told only by trying: its password unwraps the
//!   master key from a key object, and the cipher under which an index segment, a snapshot or
//!   a pack trailer opens is the one. Without the password nothing can be told.
//! - *The id* is taken from the damaged config when it is 88 bytes long (its id field may be
//!   the damaged part: nothing else can check it, and a changed id only makes clients fill
//!   their index cache again); otherwise a new random id.
//! - *The creation time* is taken from the damaged config when it is 88 bytes long and the
//!   time is plausible, otherwise the oldest modification time of a key object or snapshot
//!   (the backend's), otherwise now.
//!
//! The damaged config is kept as `config.damaged` before the new one is written.

use std::sync::Arc;

use chunker::crypto::{Aead, Password};
use chunker::format::{
    Config, ObjectId, CONFIG_LEN, INDEX_VERSION_SEALED, MANIFEST_VERSION_SEALED, PACK_HEADER_LEN,
    PACK_VERSION_SEALED,
};

use crate::crypt::{self, RepoCrypto};
use crate::layout::{
    checksum_holds, config_damaged as damaged, holds_repository, now_ms, pack_key, random_bytes,
    CONFIG_KEY, INDEX_DIR, KEYS_DIR, PACKS_DIR, SNAPSHOTS_DIR,
};
use crate::{Backend, Error, Repository, RepositoryOptions, Result};

/// Where the damaged config is kept by `repair config`.
pub(crate) const DAMAGED_CONFIG_KEY: &str = "config.damaged";

/// What `repair config` found and wrote.
#[derive(Clone, Debug)]
pub struct RepairConfigReport {
    /// The config was intact: nothing was done.
    pub intact: bool,
    /// The config written (or, with `dry_run`, that would be).
    pub config: Config,
    /// How each field was recovered, one line each.
    pub recovered: Vec<String>,
}

/// Writes a new config for a repository whose config is damaged or lost, from what the
/// repository holds (see the module docs for what can be recovered). An encrypted repository
/// needs `password`. The new config is checked by opening the repository with it.
pub fn repair_config(
    backend: Arc<dyn Backend>,
    password: Option<&Password>,
    dry_run: bool,
) -> Result<RepairConfigReport> {
    let location = backend.location().to_string();
    let old = match backend.get(CONFIG_KEY) {
        Ok(bytes) => Some(bytes),
        Err(Error::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    if let Some(bytes) = &old {
        match Config::decode(bytes) {
            Ok(config) => {
                return Ok(RepairConfigReport {
                    intact: true,
                    config,
                    recovered: Vec::new(),
                })
            }
            Err(e @ chunker::Error::UnsupportedVersion { .. }) if checksum_holds(bytes) => {
                return Err(Error::Format(e))
            }
            Err(_) => {}
        }
    }
    if !holds_repository(&*backend, old.as_deref())? {
        return Err(Error::NotARepository {
            location,
            detail: "no config, packs, index or snapshots: nothing to recover".into(),
        });
    }
    let mut recovered = Vec::new();
    let encryption = recover_encryption(&*backend, password, &mut recovered)?;
    let (id, created_ms) = recover_id_and_time(&*backend, old.as_deref(), &mut recovered)?;
    let config = Config {
        id,
        created_ms,
        encryption,
    };
    if !dry_run {
        if let Some(bytes) = &old {
            backend.put(DAMAGED_CONFIG_KEY, bytes)?;
            recovered.push(format!(
                "the damaged config is kept as {DAMAGED_CONFIG_KEY}"
            ));
        }
        backend.put(CONFIG_KEY, &config.encode())?;
        let options = RepositoryOptions {
            password: password.cloned(),
            ..RepositoryOptions::default()
        };
        Repository::open(backend, options)?;
    }
    Ok(RepairConfigReport {
        intact: false,
        config,
        recovered,
    })
}

/// Plain or encrypted, and with which cipher (see the module docs).
fn recover_encryption(
    backend: &dyn Backend,
    password: Option<&Password>,
    recovered: &mut Vec<String>,
) -> Result<Option<Aead>> {
    let keys = backend.list(KEYS_DIR)?;
    let sealed = sealed_objects(backend)?;
    if keys.is_empty() && sealed.is_none_or(|s| !s) {
        recovered.push("not encrypted: no key objects, and the objects are in clear".into());
        return Ok(None);
    }
    let location = backend.location().to_string();
    if keys.is_empty() {
        return Err(damaged(
            &location,
            "its objects are sealed but it holds no key object: without one nothing in it can \
             be read, and no config can help",
        ));
    }
    let Some(password) = password else {
        return Err(damaged(
            &location,
            "it is encrypted, and which cipher seals it can only be told with its key: give \
             its password (MOVER_PASSWORD or --password-file) to `mover repair config`",
        ));
    };
    // The key objects wrap the master key the same way whatever the cipher.
    let probe = Config {
        id: [0; 32],
        created_ms: 0,
        encryption: Some(Aead::XChaCha20Poly1305),
    };
    let unlocked = crypt::unlock(backend, &probe, Some(password))?
        .expect("an encrypted config unlocks to keys");
    for aead in [Aead::Aes256Gcm, Aead::XChaCha20Poly1305] {
        if opens_an_object(backend, &unlocked.with_aead(aead))? {
            recovered.push(format!(
                "encrypted with {}: the password opens a key object, and the repository's \
                 objects open under this cipher",
                aead.name()
            ));
            return Ok(Some(aead));
        }
    }
    Err(damaged(
        &location,
        "it is encrypted, but no index segment, snapshot or pack opens under either cipher with \
         the key this password unwraps; nothing was written",
    ))
}

/// Whether the first objects found are sealed: `None` when there are none to look at.
fn sealed_objects(backend: &dyn Backend) -> Result<Option<bool>> {
    // Byte 8..12 of an index segment, manifest and pack is its version.
    let version = |bytes: &[u8]| {
        let mut r = chunker::le::Reader::new("object header", bytes);
        r.skip(8).and_then(|()| r.u32()).ok()
    };
    for (dir, sealed) in [
        (INDEX_DIR, INDEX_VERSION_SEALED),
        (SNAPSHOTS_DIR, MANIFEST_VERSION_SEALED),
    ] {
        if let Some(key) = backend.list(dir)?.first() {
            let head = backend.get_range(key, 0, 12)?;
            if let Some(v) = version(&head) {
                return Ok(Some(v == sealed));
            }
        }
    }
    if let Some(key) = backend.list(PACKS_DIR)?.first() {
        let head = backend.get_range(key, 0, PACK_HEADER_LEN)?;
        return Ok(version(&head).map(|v| v == PACK_VERSION_SEALED));
    }
    Ok(None)
}

/// Whether an index segment, a snapshot or a pack trailer (the first few found) opens with
/// `c`: a sealed object that opens proves the cipher.
fn opens_an_object(backend: &dyn Backend, c: &RepoCrypto) -> Result<bool> {
    for key in backend.list(INDEX_DIR)?.iter().take(3) {
        if crypt::index_in(Some(c), key, &backend.get(key)?).is_ok() {
            return Ok(true);
        }
    }
    for key in backend.list(SNAPSHOTS_DIR)?.iter().take(3) {
        let Some(id) = ObjectId::from_hex(crate::layout::key_name(key)) else {
            continue;
        };
        if crypt::manifest_in(Some(c), &id, backend.get(key)?).is_ok() {
            return Ok(true);
        }
    }
    for key in backend.list(PACKS_DIR)?.iter().take(3) {
        let Some(pack) = ObjectId::from_hex(crate::layout::key_name(key)) else {
            continue;
        };
        let bytes = backend.get(&pack_key(&pack))?;
        let footer_len = chunker::format::PACK_FOOTER_LEN;
        let Some(footer) = bytes.len().checked_sub(footer_len).map(|at| &bytes[at..]) else {
            continue;
        };
        let Ok(tail_len) = crypt::trailer_len(Some(c), footer) else {
            continue;
        };
        let Some(tail) = usize::try_from(tail_len)
            .ok()
            .and_then(|n| bytes.len().checked_sub(n))
            .map(|at| &bytes[at..])
        else {
            continue;
        };
        if crypt::trailer_in(Some(c), &pack, tail).is_ok() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The id and creation time (see the module docs).
fn recover_id_and_time(
    backend: &dyn Backend,
    old: Option<&[u8]>,
    recovered: &mut Vec<String>,
) -> Result<([u8; 32], i64)> {
    let whole = old.filter(|b| b.len() == CONFIG_LEN);
    let id = match whole {
        Some(b) => {
            recovered.push(
                "repository id: kept from the damaged config (nothing else records it, so it \
                 cannot be checked; it only names the index cache of S3 clients)"
                    .into(),
            );
            b[16..48].try_into().expect("32 bytes")
        }
        None => {
            recovered.push(
                "repository id: new (the config was lost or truncated, and nothing else \
                 records it; it only names the index cache of S3 clients, which fills again)"
                    .into(),
            );
            random_bytes()
        }
    };
    let now = now_ms();
    // 2020-01-01: no mover repository is older.
    let plausible = |t: i64| (1_577_836_800_000..=now).contains(&t);
    if let Some(t) = whole
        .and_then(|b| chunker::le::Reader::new("config", &b[48..56]).i64().ok())
        .filter(|t| plausible(*t))
    {
        recovered.push("creation time: kept from the damaged config".into());
        return Ok((id, t));
    }
    let mut oldest: Option<i64> = None;
    for dir in [KEYS_DIR, SNAPSHOTS_DIR] {
        for key in backend.list(dir)? {
            if let Ok(Some(t)) = backend.modified_ms(&key) {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
    }
    let created = oldest.filter(|t| plausible(*t)).unwrap_or(now);
    recovered.push(match oldest {
        Some(_) => "creation time: the oldest key object or snapshot's modification time".into(),
        None => "creation time: now (nothing records it)".into(),
    });
    Ok((id, created))
}

#[cfg(test)]
mod tests {
    use chunker::crypto::KdfParams;
    use chunker::{ChunkId, Encoder};

    use super::*;
    use crate::{ChunkStore, LocalBackend};

    fn fill(repo: &Repository) -> ChunkId {
        let data = b"some data ".repeat(5000);
        let id = repo.id_key().id(&data);
        repo.put(&id, Encoder::new(3).encode(&data)).unwrap();
        repo.flush().unwrap();
        id
    }

    fn options(pw: Option<&Password>) -> RepositoryOptions {
        RepositoryOptions {
            password: pw.cloned(),
            ..RepositoryOptions::default()
        }
    }

    /// Damages the config with `damage`; open and init say so, and `repair config` writes one
    /// that opens with the same chunks, keeping the id and creation time it could read.
    fn damaged_then_repaired(pw: Option<&Password>, aead: Option<Aead>, damage: fn(&mut Vec<u8>)) {
        let dir = tempfile::tempdir().unwrap();
        let b: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        let config = match (pw, aead) {
            (Some(pw), Some(aead)) => {
                let fast = KdfParams {
                    memory_kib: 64,
                    iterations: 1,
                    parallelism: 1,
                };
                Repository::init_encrypted(b.clone(), pw, fast, aead).unwrap()
            }
            _ => Repository::init(b.clone()).unwrap(),
        };
        let chunk = fill(&Repository::open(b.clone(), options(pw)).unwrap());
        let original = b.get(CONFIG_KEY).unwrap();
        let mut bytes = original.clone();
        damage(&mut bytes);
        if bytes.is_empty() {
            b.delete(CONFIG_KEY).unwrap();
        } else {
            b.put(CONFIG_KEY, &bytes).unwrap();
        }
        let e = Repository::open(b.clone(), options(pw)).unwrap_err();
        assert!(matches!(e, Error::ConfigDamaged { .. }), "{e}");
        assert!(e.to_string().contains("repair config"), "{e}");
        let e = Repository::init(b.clone()).unwrap_err();
        assert!(matches!(e, Error::ConfigDamaged { .. }), "init: {e}");

        if pw.is_some() {
            let e = repair_config(b.clone(), None, false).unwrap_err();
            assert!(e.to_string().contains("password"), "{e}");
        }
        let dry = repair_config(b.clone(), pw, true).unwrap();
        assert!(!dry.intact);
        assert!(
            Repository::open(b.clone(), options(pw)).is_err(),
            "a dry run writes nothing"
        );
        let r = repair_config(b.clone(), pw, false).unwrap();
        assert_eq!(r.config.encryption, config.encryption, "{:?}", r.recovered);
        // The id and time are kept as the damaged config has them: right unless the damage
        // is in them (nothing else records them).
        if bytes.len() == CONFIG_LEN && bytes[16..56] == original[16..56] {
            assert_eq!(r.config.id, config.id, "{:?}", r.recovered);
            assert_eq!(r.config.created_ms, config.created_ms, "{:?}", r.recovered);
        }
        let repo = Repository::open(b.clone(), options(pw)).unwrap();
        assert!(repo.has(&chunk).unwrap(), "every chunk is there again");
        assert!(repair_config(b, pw, false).unwrap().intact);
    }

    #[test]
    fn a_plain_repository_gets_its_config_back() {
        damaged_then_repaired(None, None, |b| b[60] ^= 1); // the checksum
        damaged_then_repaired(None, None, |b| b[9] ^= 0x40); // the version: "newer"?
        damaged_then_repaired(None, None, |b| b[0] ^= 1); // the magic
        damaged_then_repaired(None, None, |b| b.truncate(40));
        damaged_then_repaired(None, None, Vec::clear); // lost
    }

    #[test]
    fn an_encrypted_repository_gets_its_config_back_with_its_password() {
        let pw = Password::new(b"pw".to_vec());
        for aead in [Aead::XChaCha20Poly1305, Aead::Aes256Gcm] {
            damaged_then_repaired(Some(&pw), Some(aead), |b| b[20] ^= 1); // the id
            damaged_then_repaired(Some(&pw), Some(aead), |b| b[12] ^= 1); // the flags
            damaged_then_repaired(Some(&pw), Some(aead), Vec::clear);
        }
    }

    #[test]
    fn a_location_without_a_repository_is_not_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config"), b"[core]\n").unwrap();
        let b: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        let e = Repository::open(b.clone(), RepositoryOptions::default()).unwrap_err();
        assert!(matches!(e, Error::NotARepository { .. }), "{e}");
        assert!(matches!(
            repair_config(b, None, false),
            Err(Error::NotARepository { .. })
        ));
    }
}

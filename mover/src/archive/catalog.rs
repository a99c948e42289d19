//! The catalog of an incremental chain (like GNU tar's --listed-incremental).

use std::fs::File;
use std::io::Write;

use chunker::crypto::{Aead, Password};
use chunker::format::{Manifest, ObjectId};
use chunker::ChunkId;
use serde::{Deserialize, Serialize};
use targets::archive::{ArchiveId, ArchiveKey};

use crate::{Error, Result};

/// What `--catalog FILE` keeps between runs: the archives of the current chain, the chunks
/// each holds, and the last archive's manifest (the next incremental's parent).
#[derive(Serialize, Deserialize, Default)]
pub struct Catalog {
    /// Format of this file (1).
    pub version: u32,
    /// The chain, oldest (the full) first.
    pub chain: Vec<CatalogArchive>,
    /// Hex of the last archive's manifest encoding (sealed with the chain's key when the
    /// chain is encrypted).
    pub manifest: String,
    /// Hex of the key object of an encrypted chain (its master key wrapped with the
    /// password): every archive of the chain uses that key, so chunk ids stay comparable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The cipher of an encrypted chain (`aes-256-gcm` or `xchacha20-poly1305`); absent in
    /// catalogs written before AES-256-GCM was offered, whose chains are XChaCha20-Poly1305.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
}

/// One archive of a chain.
#[derive(Serialize, Deserialize)]
pub struct CatalogArchive {
    /// Archive id, hex.
    pub id: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
    /// Hex ids of the chunks it holds.
    pub chunks: Vec<String>,
}

impl Catalog {
    /// Reads a catalog file; a missing file is an empty catalog.
    pub fn load(path: &std::path::Path) -> Result<Catalog> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Catalog::default()),
            Err(e) => return Err(catalog_error(path, &e.to_string())),
        };
        // A catalog lists every chunk of its chain: 1 GiB holds some 15 million.
        let text = crate::sys::read_to_limit(file, 1 << 30)
            .map_err(|e| catalog_error(path, &e.to_string()))?
            .ok_or_else(|| catalog_error(path, "larger than 1 GiB; start a new chain"))?;
        let text = String::from_utf8(text).map_err(|_| catalog_error(path, "not UTF-8 text"))?;
        let c: Catalog =
            serde_json::from_str(&text).map_err(|e| catalog_error(path, &e.to_string()))?;
        if c.version != 1 {
            return Err(catalog_error(
                path,
                &format!("unknown version {}", c.version),
            ));
        }
        Ok(c)
    }

    /// The key of an encrypted chain, opened with `password`; `None` for a clear chain.
    pub fn chain_key(
        &self,
        path: &std::path::Path,
        password: Option<&Password>,
    ) -> Result<Option<ArchiveKey>> {
        let Some(hex) = &self.key else {
            return Ok(None);
        };
        let bytes = chunker::hex::decode(hex).ok_or_else(|| catalog_error(path, "bad key"))?;
        let location = format!("the archive chain of catalog {}", path.display());
        let password = password.ok_or_else(|| targets::Error::PasswordRequired {
            location: location.clone(),
        })?;
        let aead = match &self.cipher {
            None => Aead::XChaCha20Poly1305,
            Some(name) => Aead::from_name(name)
                .ok_or_else(|| catalog_error(path, &format!("unknown cipher {name}")))?,
        };
        Ok(Some(ArchiveKey::open(&bytes, password, &location, aead)?))
    }

    /// Records the last archive's manifest (sealed with the chain's key, if any).
    pub fn set_manifest(&mut self, manifest: &Manifest, key: Option<&ArchiveKey>) {
        let plain = manifest.encode();
        self.manifest = chunker::hex::encode(&match key {
            Some(k) => chunker::format::seal_object(
                &k.keys,
                &chunker::format::MANIFEST_MAGIC,
                chunker::format::MANIFEST_VERSION_SEALED,
                &plain,
            ),
            None => plain,
        });
        self.key = key.map(|k| chunker::hex::encode(&k.key_file.encode()));
        self.cipher = key.map(|k| k.keys.aead().name().to_string());
    }

    /// The last archive's manifest and its snapshot id, when the chain is not empty.
    pub fn parent(
        &self,
        path: &std::path::Path,
        key: Option<&ArchiveKey>,
    ) -> Result<Option<(ObjectId, Manifest)>> {
        if self.chain.is_empty() {
            return Ok(None);
        }
        let bytes = chunker::hex::decode(&self.manifest)
            .ok_or_else(|| catalog_error(path, "bad manifest"))?;
        let bytes = match key {
            Some(k) => chunker::format::open_object(
                &k.keys,
                "the catalog's manifest",
                &chunker::format::MANIFEST_MAGIC,
                chunker::format::MANIFEST_VERSION_SEALED,
                &bytes,
            )
            .map_err(|e| catalog_error(path, &e.to_string()))?,
            None => bytes,
        };
        let m = Manifest::decode(&bytes).map_err(|e| catalog_error(path, &e.to_string()))?;
        Ok(Some((ObjectId::of(&bytes), m)))
    }

    /// Every chunk the chain holds.
    pub fn chunks(&self, path: &std::path::Path) -> Result<Vec<ChunkId>> {
        self.chain
            .iter()
            .flat_map(|a| &a.chunks)
            .map(|h| ChunkId::from_hex(h).ok_or_else(|| catalog_error(path, "bad chunk id")))
            .collect()
    }

    /// The chain's archive ids, oldest first.
    pub fn ids(&self) -> Vec<ArchiveId> {
        self.chain
            .iter()
            .filter_map(|a| ArchiveId::from_hex(&a.id))
            .collect()
    }

    /// Writes the catalog atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let text = serde_json::to_string(self).expect("a catalog serialises");
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".mover-{}.tmp", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            catalog_error(path, &e.to_string())
        })
    }
}

fn catalog_error(path: &std::path::Path, detail: &str) -> Error {
    Error::Incremental(format!(
        "catalog {}: {detail}; give the catalog file the last archive wrote, or start a new chain with a full archive",
        path.display()
    ))
}

//! The repository config.

use super::{open, CONFIG_MAGIC, FORMAT_VERSION};
use crate::crypto::Aead;
use crate::le::Writer;
use crate::Result;

/// The repository config, stored as the object `config`.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | [`CONFIG_MAGIC`] |
/// | 8 | 4 | format version: 1; 2 for a repository encrypted with XChaCha20-Poly1305; 3 for one encrypted with AES-256-GCM |
/// | 12 | 4 | flags (versions 2 and 3): bit 0 = encrypted; reserved, 0 in version 1 |
/// | 16 | 32 | repository id (random) |
/// | 48 | 8 | created, ms since the Unix epoch (i64) |
/// | 56 | 32 | BLAKE3 of bytes 0..56 |
///
/// The cipher is told by the version, not by a flag, so that a release that knows only
/// XChaCha20-Poly1305 refuses an AES-256-GCM repository as a newer format instead of taking
/// every object in it for tampered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Random repository id.
    pub id: [u8; 32],
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
    /// The cipher that seals every object, for an encrypted repository (the master key is in
    /// the key objects under `keys/`); `None` for one in clear.
    pub encryption: Option<Aead>,
}

/// Config version of a repository encrypted with XChaCha20-Poly1305 (version 1 stays byte for
/// byte what it was).
pub const CONFIG_VERSION_ENCRYPTED: u32 = 2;
/// Config version of a repository encrypted with AES-256-GCM.
pub const CONFIG_VERSION_AES: u32 = 3;

/// Length of an encoded [`Config`].
pub const CONFIG_LEN: usize = 88;

impl Config {
    /// Encodes the config (88 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Writer::with_capacity(CONFIG_LEN);
        o.bytes(&CONFIG_MAGIC);
        let (version, flags) = match self.encryption {
            None => (FORMAT_VERSION, 0),
            Some(Aead::XChaCha20Poly1305) => (CONFIG_VERSION_ENCRYPTED, 1),
            Some(Aead::Aes256Gcm) => (CONFIG_VERSION_AES, 1),
        };
        o.u32(version);
        o.u32(flags);
        o.bytes(&self.id);
        o.u64(self.created_ms as u64);
        o.into_checksummed()
    }

    /// Decodes and checks a config.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        const W: &str = "repository config";
        let (mut r, version) = open(W, buf, &CONFIG_MAGIC, true, CONFIG_VERSION_AES)?;
        let flags = r.u32()?;
        let encryption = match version {
            _ if flags & 1 == 0 => None,
            CONFIG_VERSION_ENCRYPTED => Some(Aead::XChaCha20Poly1305),
            CONFIG_VERSION_AES => Some(Aead::Aes256Gcm),
            _ => None,
        };
        let id = r.array()?;
        let created_ms = r.u64()? as i64;
        r.end()?;
        Ok(Config {
            id,
            created_ms,
            encryption,
        })
    }
}

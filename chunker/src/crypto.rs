//! Encryption: the master key, the keys derived from it, sealing with an AEAD, and the key
//! object that wraps the master key with a password. Byte tables match `docs/FORMAT.md`
//! ("Encryption").
//!
//! # Choices
//!
//! - **AEAD, chosen per repository and archive when it is made** ([`Aead`]): AES-256-GCM
//!   where the processor has AES and carry-less multiply instructions, XChaCha20-Poly1305
//!   elsewhere. Measured on the 2-core reference VM (AES-NI, VAES, VPCLMULQDQ; 1 MiB messages,
//!   one core): AES-256-GCM (`ring`) 7.0 GB/s, XChaCha20-Poly1305 1.2–1.4 GB/s, BLAKE3
//!   4.0 GB/s. Repositories and archives made before AES-256-GCM was offered keep
//!   XChaCha20-Poly1305 and still open.
//! - **Nonces are 192 bits, drawn at random, for both.** XChaCha20 takes them as they are.
//!   AES-256-GCM takes a 96-bit nonce, too short to draw at random for every chunk of a
//!   repository's lifetime (about 2^32 messages per key), so each message gets its own key:
//!   BLAKE3 keyed with the data key over the nonce's first 12 bytes, with the last 12 bytes as
//!   the GCM nonce (the construction of XChaCha20's HChaCha20 step, with BLAKE3 as the
//!   pseudo-random function). No limit on how many messages one master key seals.
//! - **A sealed message** is `nonce (24, random) | ciphertext | tag (16)`: 40 bytes more
//!   than the plaintext. The associated data binds it to its place (a chunk to its id, an
//!   object to its kind and version, an archive frame to its archive, type and sequence
//!   number), so a sealed message moved elsewhere fails to open.
//! - **Subkeys** come from the 256-bit random master key through BLAKE3's `derive_key` with
//!   fixed context strings: one key seals data, one keys the chunk ids (BLAKE3 keyed hash),
//!   so that ids reveal nothing about content.
//! - **Passwords** are stretched with Argon2id (v1.3; default 64 MiB, 3 passes, 1 lane);
//!   the parameters and a random 32-byte salt are recorded in each key object.

use std::fmt;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

use crate::id::IdKey;
use crate::le::{Reader, Writer};
use crate::{Error, Result};

/// Length of a nonce (both AEADs: see the module notes).
pub const NONCE_LEN: usize = 24;
/// Length of an authentication tag (Poly1305).
pub const TAG_LEN: usize = 16;
/// Bytes a sealed message adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

// DO NOT MODIFY: changing a context string changes every key derived from a master key.
const DATA_KEY_CONTEXT: &str = "mover 2026-11-25 data key v1";
// DO NOT MODIFY: AES-256-GCM data keys of existing repositories and archives.
const AES_DATA_KEY_CONTEXT: &str = "mover 2026-11-25 aes-256-gcm data key v1";
const ID_KEY_CONTEXT: &str = "mover 2026-11-25 chunk id key v1";

/// Fills `buf` from the operating system's random source.
pub fn random_fill(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source works");
}

/// A 256-bit master key, wiped from memory when dropped.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    /// A fresh random key.
    pub fn random() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        random_fill(&mut k[..]);
        MasterKey(k)
    }

    /// Wraps key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(Zeroizing::new(bytes))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// The authenticated cipher that seals a repository's or an archive's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aead {
    /// XChaCha20-Poly1305: every encrypted repository and archive made before AES-256-GCM was
    /// offered, and the choice on processors without AES instructions.
    XChaCha20Poly1305,
    /// AES-256-GCM with a per-message key (see the module notes).
    Aes256Gcm,
}

impl Aead {
    /// The faster of the two on this processor: AES-256-GCM where it has AES and carry-less
    /// multiply instructions (then about five times faster), XChaCha20-Poly1305 elsewhere.
    pub fn preferred() -> Self {
        if aes_in_hardware() {
            Aead::Aes256Gcm
        } else {
            Aead::XChaCha20Poly1305
        }
    }

    /// Its name in messages, options and JSON: `xchacha20-poly1305` or `aes-256-gcm`.
    pub fn name(self) -> &'static str {
        match self {
            Aead::XChaCha20Poly1305 => "xchacha20-poly1305",
            Aead::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// The cipher a name given by [`Aead::name`] stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        [Aead::XChaCha20Poly1305, Aead::Aes256Gcm]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

#[cfg(target_arch = "x86_64")]
fn aes_in_hardware() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn aes_in_hardware() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn aes_in_hardware() -> bool {
    false
}

/// The data key in the form its cipher uses.
#[derive(Clone)]
enum Sealer {
    XChaCha(XChaCha20Poly1305),
    /// The key that per-message AES-256-GCM keys are derived from.
    Aes(Zeroizing<[u8; 32]>),
}

/// The keys derived from a master key: one seals data, one keys chunk ids.
#[derive(Clone)]
pub struct Keys {
    sealer: Sealer,
    id: IdKey,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keys({}, ..)", self.aead().name())
    }
}

impl Keys {
    /// Derives the keys of `master` for data sealed with `aead`.
    pub fn derive(master: &MasterKey, aead: Aead) -> Self {
        let id = blake3::derive_key(ID_KEY_CONTEXT, master.as_bytes());
        let sealer = match aead {
            Aead::XChaCha20Poly1305 => {
                let data = Zeroizing::new(blake3::derive_key(DATA_KEY_CONTEXT, master.as_bytes()));
                Sealer::XChaCha(XChaCha20Poly1305::new((&*data).into()))
            }
            Aead::Aes256Gcm => Sealer::Aes(Zeroizing::new(blake3::derive_key(
                AES_DATA_KEY_CONTEXT,
                master.as_bytes(),
            ))),
        };
        Keys {
            sealer,
            id: IdKey::keyed(id),
        }
    }

    /// The cipher these keys seal with.
    pub fn aead(&self) -> Aead {
        match self.sealer {
            Sealer::XChaCha(_) => Aead::XChaCha20Poly1305,
            Sealer::Aes(_) => Aead::Aes256Gcm,
        }
    }

    /// How chunk ids are computed under these keys (keyed BLAKE3).
    pub fn id_key(&self) -> IdKey {
        self.id
    }

    /// Seals `plaintext` under a fresh random nonce: `nonce | ciphertext | tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(aad, plaintext, &mut out);
        out
    }

    /// Like [`Keys::seal`], appending to `out`.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        random_fill(&mut nonce);
        out.reserve(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag: [u8; TAG_LEN] = match &self.sealer {
            Sealer::XChaCha(cipher) => cipher
                .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[start..])
                .expect("messages are far below XChaCha20-Poly1305's length limit")
                .into(),
            Sealer::Aes(key) => {
                let (key, nonce) = aes_message_key(key, &nonce);
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut out[start..])
                    .expect("messages are far below AES-256-GCM's length limit");
                tag.as_ref()
                    .try_into()
                    .expect("an AES-256-GCM tag is 16 bytes")
            }
        };
        out.extend_from_slice(&tag);
    }

    /// Like [`Keys::open`], decrypting in the buffer that holds the sealed message (no second
    /// buffer: restores open every chunk this way).
    pub fn open_owned(&self, aad: &[u8], mut sealed: Vec<u8>) -> Option<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let end = sealed.len() - TAG_LEN;
        let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().ok()?;
        let tag: [u8; TAG_LEN] = sealed[end..].try_into().ok()?;
        self.open_in_place(aad, &nonce, &mut sealed[NONCE_LEN..end], &tag)?;
        sealed.copy_within(NONCE_LEN..end, 0);
        sealed.truncate(end - NONCE_LEN);
        Some(sealed)
    }

    /// Opens a sealed message; `None` when it fails authentication (tampered, damaged, sealed
    /// under another key or for another place).
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut out = ciphertext.to_vec();
        self.open_in_place(aad, nonce.try_into().ok()?, &mut out, tag.try_into().ok()?)?;
        Some(out)
    }

    /// Decrypts `data` in place if `tag` authenticates it.
    fn open_in_place(
        &self,
        aad: &[u8],
        nonce: &[u8; NONCE_LEN],
        data: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Option<()> {
        match &self.sealer {
            Sealer::XChaCha(cipher) => cipher
                .decrypt_in_place_detached(
                    XNonce::from_slice(nonce),
                    aad,
                    data,
                    Tag::from_slice(tag),
                )
                .ok(),
            Sealer::Aes(key) => {
                let (key, nonce) = aes_message_key(key, nonce);
                key.open_in_place_separate_tag(nonce, Aad::from(aad), (*tag).into(), data, 0..)
                    .ok()
                    .map(|_| ())
            }
        }
    }
}

/// The AES-256-GCM key and 96-bit nonce of one message: the key is BLAKE3 keyed with the data
/// key over the first 12 bytes of the message's nonce, the GCM nonce its last 12 bytes.
fn aes_message_key(data_key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
    let (head, tail) = nonce.split_at(12);
    let key = Zeroizing::new(*blake3::keyed_hash(data_key, head).as_bytes());
    let key = UnboundKey::new(&AES_256_GCM, &key[..]).expect("a 32-byte AES-256 key");
    let nonce = Nonce::try_assume_unique_for_key(tail).expect("a 12-byte nonce");
    (LessSafeKey::new(key), nonce)
}

/// A password, wiped from memory when dropped.
#[derive(Clone)]
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    /// Wraps password bytes (UTF-8 or not; one trailing newline is the caller's to strip).
    pub fn new(bytes: Vec<u8>) -> Self {
        Password(Zeroizing::new(bytes))
    }

    /// The password bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Argon2id parameters, recorded in every key object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about 0.2 s on the reference VM.
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// Refuses parameters too weak to mean anything, or so large that a damaged key object
    /// could make a reader allocate without bound.
    fn check(&self) -> Result<()> {
        let ok = (1..=16).contains(&self.parallelism)
            && (1..=64).contains(&self.iterations)
            && (8 * self.parallelism..=4 << 20).contains(&self.memory_kib);
        if ok {
            Ok(())
        } else {
            Err(Error::structure(
                "key object",
                "Argon2id parameters out of range",
            ))
        }
    }

    /// The 32-byte key Argon2id derives from `password` and `salt`.
    fn derive(&self, password: &Password, salt: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>> {
        self.check()?;
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| Error::structure("key object", format!("Argon2id: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(password.as_bytes(), salt, &mut out[..])
            .map_err(|e| Error::structure("key object", format!("Argon2id: {e}")))?;
        Ok(out)
    }
}

// DO NOT MODIFY: the magic identifies key objects written by every earlier release.
/// Magic of a key object: BLAKE3("mover key v1")[..8].
pub const KEY_MAGIC: [u8; 8] = [0x07, 0x53, 0x2f, 0x4f, 0x21, 0x7f, 0x2c, 0xc6];
/// Length of an encoded [`KeyFile`].
pub const KEY_FILE_LEN: usize = 176;
const KEY_FILE_VERSION: u32 = 1;
const KDF_ARGON2ID: u32 = 1;
const WRAPPED_LEN: usize = 32 + SEAL_OVERHEAD;

/// A key object: the master key, sealed under a key that Argon2id derives from a password.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | [`KEY_MAGIC`] |
/// | 8 | 4 | format version (1) |
/// | 12 | 4 | KDF: 1 = Argon2id v1.3 |
/// | 16 | 4 | memory, KiB |
/// | 20 | 4 | iterations |
/// | 24 | 4 | parallelism (lanes) |
/// | 28 | 4 | reserved, 0 |
/// | 32 | 32 | salt (random) |
/// | 64 | 8 | created, ms since the Unix epoch (i64) |
/// | 72 | 72 | the master key sealed with XChaCha20-Poly1305 under the derived key: nonce 24, ciphertext 32, tag 16; associated data: bytes 0..72 |
/// | 144 | 32 | BLAKE3 of bytes 0..144 |
#[derive(Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// How the wrapping key is derived from the password.
    pub params: KdfParams,
    /// Random salt.
    pub salt: [u8; 32],
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
    wrapped: [u8; WRAPPED_LEN],
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field("params", &self.params)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

impl KeyFile {
    /// Wraps `master` with `password` (runs Argon2id once).
    pub fn wrap(
        master: &MasterKey,
        password: &Password,
        params: KdfParams,
        created_ms: i64,
    ) -> Result<Self> {
        let mut salt = [0u8; 32];
        random_fill(&mut salt);
        let mut k = KeyFile {
            params,
            salt,
            created_ms,
            wrapped: [0; WRAPPED_LEN],
        };
        let kek = params.derive(password, &salt)?;
        let cipher = XChaCha20Poly1305::new((&*kek).into());
        let mut nonce = [0u8; NONCE_LEN];
        random_fill(&mut nonce);
        let mut ct = Zeroizing::new(*master.as_bytes());
        let aad = k.header();
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, &mut ct[..])
            .expect("32 bytes seal");
        k.wrapped[..NONCE_LEN].copy_from_slice(&nonce);
        k.wrapped[NONCE_LEN..NONCE_LEN + 32].copy_from_slice(&ct[..]);
        k.wrapped[NONCE_LEN + 32..].copy_from_slice(&tag);
        Ok(k)
    }

    /// The master key, if `password` is the one this key object was made with
    /// ([`Error::WrongPassword`] otherwise). Runs Argon2id once.
    pub fn unwrap_key(&self, password: &Password) -> Result<MasterKey> {
        let kek = self.params.derive(password, &self.salt)?;
        let cipher = XChaCha20Poly1305::new((&*kek).into());
        let (nonce, rest) = self.wrapped.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(32);
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(ct);
        cipher
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &self.header(),
                &mut key[..],
                Tag::from_slice(tag),
            )
            .map_err(|_| Error::WrongPassword)?;
        Ok(MasterKey(key))
    }

    /// Bytes 0..72: everything the wrapped key is bound to.
    fn header(&self) -> [u8; 72] {
        let mut w = Writer::with_capacity(72);
        w.bytes(&KEY_MAGIC);
        w.u32(KEY_FILE_VERSION);
        w.u32(KDF_ARGON2ID);
        w.u32(self.params.memory_kib);
        w.u32(self.params.iterations);
        w.u32(self.params.parallelism);
        w.zeros(4);
        w.bytes(&self.salt);
        w.i64(self.created_ms);
        w.into_vec().try_into().expect("72 bytes")
    }

    /// Encodes the key object ([`KEY_FILE_LEN`] bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(KEY_FILE_LEN);
        w.bytes(&self.header());
        w.bytes(&self.wrapped);
        w.into_checksummed()
    }

    /// Decodes and checks a key object (not the password: see [`KeyFile::unwrap_key`]).
    pub fn decode(buf: &[u8]) -> Result<Self> {
        const W: &str = "key object";
        if buf.len() < 12 || buf[..8] != KEY_MAGIC {
            return Err(Error::structure(W, "bad magic (not a mover key object)"));
        }
        let mut r = Reader::new(W, buf);
        r.skip(8)?;
        let version = r.u32()?;
        if version != KEY_FILE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: W,
                found: version,
                supported: KEY_FILE_VERSION,
            });
        }
        if buf.len() != KEY_FILE_LEN {
            return Err(Error::structure(W, "wrong length"));
        }
        if blake3::hash(&buf[..144]).as_bytes()[..] != buf[144..] {
            return Err(Error::structure(W, "checksum mismatch"));
        }
        if r.u32()? != KDF_ARGON2ID {
            return Err(Error::structure(W, "unknown key derivation function"));
        }
        let params = KdfParams {
            memory_kib: r.u32()?,
            iterations: r.u32()?,
            parallelism: r.u32()?,
        };
        params.check()?;
        r.skip(4)?;
        Ok(KeyFile {
            params,
            salt: r.array()?,
            created_ms: r.i64()?,
            wrapped: r.array()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> KdfParams {
        KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    const BOTH: [Aead; 2] = [Aead::XChaCha20Poly1305, Aead::Aes256Gcm];

    #[test]
    fn seal_open_round_trip_and_tamper() {
        for aead in BOTH {
            round_trip_and_tamper(&Keys::derive(&MasterKey::random(), aead));
        }
    }

    fn round_trip_and_tamper(keys: &Keys) {
        let sealed = keys.seal(b"place", b"secret data");
        assert_eq!(sealed.len(), 11 + SEAL_OVERHEAD);
        assert_eq!(keys.open(b"place", &sealed).unwrap(), b"secret data");
        assert_eq!(
            keys.open_owned(b"place", sealed.clone()).unwrap(),
            b"secret data"
        );
        assert!(keys.open_owned(b"other", sealed.clone()).is_none());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(keys.open(b"place", &bad).is_none(), "flip at {i}");
        }
        assert!(keys.open(b"other place", &sealed).is_none());
        assert!(keys.open(b"place", &sealed[..sealed.len() - 1]).is_none());
        assert!(keys.open(b"place", &sealed[..10]).is_none());
        let empty = keys.seal(b"", b"");
        assert_eq!(keys.open(b"", &empty).unwrap(), b"");
    }

    #[test]
    fn wrong_key_or_cipher_fails() {
        for aead in BOTH {
            let a = Keys::derive(&MasterKey::random(), aead);
            let b = Keys::derive(&MasterKey::random(), aead);
            let sealed = a.seal(b"x", b"data");
            assert!(b.open(b"x", &sealed).is_none());
            assert_ne!(a.id_key().id(b"data"), b.id_key().id(b"data"));
            assert_ne!(a.id_key().id(b"data"), crate::ChunkId::of(b"data"));
        }
        // The same master key under the other cipher opens nothing; ids stay the same.
        let master = MasterKey::random();
        let x = Keys::derive(&master, Aead::XChaCha20Poly1305);
        let g = Keys::derive(&master, Aead::Aes256Gcm);
        assert!(g.open(b"x", &x.seal(b"x", b"data")).is_none());
        assert!(x.open(b"x", &g.seal(b"x", b"data")).is_none());
        assert_eq!(x.id_key().id(b"data"), g.id_key().id(b"data"));
        assert_eq!(
            (x.aead(), g.aead()),
            (Aead::XChaCha20Poly1305, Aead::Aes256Gcm)
        );
    }

    #[test]
    fn nonces_are_unique_and_ciphertexts_differ() {
        for aead in BOTH {
            let keys = Keys::derive(&MasterKey::random(), aead);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..10_000 {
                let s = keys.seal(b"", b"same plaintext");
                assert!(seen.insert(s[..NONCE_LEN].to_vec()), "nonce repeated");
            }
            assert_ne!(keys.seal(b"", b"p"), keys.seal(b"", b"p"));
        }
    }

    #[test]
    fn aes_message_keys_are_derived_as_documented() {
        // Pins the per-message key of AES-256-GCM: a message sealed by hand with the key and
        // nonce docs/FORMAT.md describes opens, so a change would be caught.
        let master = [9u8; 32];
        let keys = Keys::derive(&MasterKey::from_bytes(master), Aead::Aes256Gcm);
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| i as u8);
        let data_key = blake3::derive_key("mover 2026-11-25 aes-256-gcm data key v1", &master);
        let message_key = blake3::keyed_hash(&data_key, &nonce[..12]);
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, message_key.as_bytes()).unwrap());
        let mut ct = b"pinned plaintext".to_vec();
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::try_assume_unique_for_key(&nonce[12..]).unwrap(),
                Aad::from(b"aad"),
                &mut ct,
            )
            .unwrap();
        let sealed = [&nonce[..], &ct, tag.as_ref()].concat();
        assert_eq!(keys.open(b"aad", &sealed).unwrap(), b"pinned plaintext");
        assert!(Aead::preferred() == Aead::Aes256Gcm || !aes_in_hardware());
        assert_eq!(Aead::from_name("aes-256-gcm"), Some(Aead::Aes256Gcm));
        assert_eq!(
            Aead::from_name("xchacha20-poly1305"),
            Some(Aead::XChaCha20Poly1305)
        );
        assert_eq!(Aead::from_name("aes"), None);
    }

    #[test]
    fn derivation_is_stable() {
        // Pins the subkey derivation: a change here would make every repository unreadable.
        let keys = Keys::derive(&MasterKey::from_bytes([7; 32]), Aead::XChaCha20Poly1305);
        assert_eq!(
            keys.id_key().id(b"hello").to_hex(),
            crate::ChunkId::from_bytes(
                *blake3::keyed_hash(&blake3::derive_key(ID_KEY_CONTEXT, &[7; 32]), b"hello")
                    .as_bytes()
            )
            .to_hex()
        );
    }

    #[test]
    fn key_file_round_trip_wrong_password_and_damage() {
        let master = MasterKey::random();
        let pw = Password::new(b"correct horse".to_vec());
        let k = KeyFile::wrap(&master, &pw, fast(), 42).unwrap();
        let bytes = k.encode();
        assert_eq!(bytes.len(), KEY_FILE_LEN);
        let back = KeyFile::decode(&bytes).unwrap();
        assert_eq!(back, k);
        assert_eq!(back.unwrap_key(&pw).unwrap().as_bytes(), master.as_bytes());
        assert!(matches!(
            back.unwrap_key(&Password::new(b"wrong".to_vec())),
            Err(Error::WrongPassword)
        ));
        for i in [0, 9, 17, 40, 70, 100, 150] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(KeyFile::decode(&bad).is_err(), "flip at {i}");
        }
        // A valid checksum over a changed salt still fails: the salt is bound to the key.
        let mut forged = bytes.clone();
        forged[40] ^= 1;
        let sum = blake3::hash(&forged[..144]);
        forged[144..].copy_from_slice(sum.as_bytes());
        assert!(KeyFile::decode(&forged).unwrap().unwrap_key(&pw).is_err());
    }

    #[test]
    fn magic_is_blake3_prefix() {
        assert_eq!(blake3::hash(b"mover key v1").as_bytes()[..8], KEY_MAGIC);
    }
}

//! Encrypted archives (format version 2): round trip, password errors, nothing in clear, and
//! tampering that also fixes up the frame checksums caught by the AEAD.

use super::*;
use chunker::crypto::{Aead, KdfParams, Password};
use targets::archive::ArchiveKey;

fn fast() -> KdfParams {
    KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    }
}

/// Writes an encrypted archive of `chunks` (ids keyed with the archive's key).
fn write_encrypted(options: &ArchiveOptions, chunks: &[Vec<u8>], key: &ArchiveKey) -> Vec<u8> {
    let mut out = Vec::new();
    let mut header = ArchiveHeader::new("mover test");
    header.labels = vec![("name".into(), "SECRET-LABEL".into())];
    let mut w = ArchiveWriter::with_key(
        StreamSink::new(&mut out, "memory"),
        options,
        header,
        Some(key.clone()),
    )
    .unwrap();
    let mut enc = Encoder::new(3);
    for c in chunks {
        w.put_chunk(&key.keys.id_key().id(c), enc.encode(c))
            .unwrap();
        w.put_map(b"SECRET-MAP").unwrap();
    }
    w.finish(b"SECRET-MANIFEST").unwrap();
    out
}

fn with_password(pw: &[u8]) -> ReaderOptions {
    ReaderOptions {
        password: Some(Password::new(pw.to_vec())),
        ..Default::default()
    }
}

#[test]
fn encrypted_round_trip_and_passwords() {
    for aead in [Aead::XChaCha20Poly1305, Aead::Aes256Gcm] {
        round_trip_and_passwords(aead);
    }
}

fn round_trip_and_passwords(aead: Aead) {
    let key = ArchiveKey::new(&Password::new(b"pw".to_vec()), fast(), aead).unwrap();
    let chunks = vec![text(1, 300_000), noise(2, 70_000)];
    let bytes = write_encrypted(&opts(None), &chunks, &key);
    for secret in [&b"SECRET"[..], b"line 1 of a log", b"mover test"] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret));
    }
    let mut got = Vec::new();
    let mut manifest = None;
    let mut verified = false;
    for ev in ArchiveReader::new(&bytes[..], with_password(b"pw")) {
        match ev.unwrap() {
            Event::Chunk { id, data } => {
                assert_eq!(key.keys.id_key().id(&data), id);
                got.push(data);
            }
            Event::Header(h) => assert_eq!(h.labels[0].1, "SECRET-LABEL"),
            Event::Manifest(m) => manifest = Some(m),
            Event::Trailer(t) => verified = t.verified,
            Event::Damage(d) => panic!("{d}"),
            _ => {}
        }
    }
    assert_eq!(got, chunks);
    assert_eq!(manifest.as_deref(), Some(&b"SECRET-MANIFEST"[..]));
    assert!(verified);

    let first_error = |options| ArchiveReader::new(&bytes[..], options).find_map(Result::err);
    assert!(matches!(
        first_error(ReaderOptions::default()),
        Some(Error::PasswordRequired { .. })
    ));
    assert!(matches!(
        first_error(with_password(b"wrong")),
        Some(Error::WrongPassword { .. })
    ));
}

#[test]
fn tampering_with_fixed_checksums_fails_authentication() {
    let key = ArchiveKey::new(&Password::new(b"pw".to_vec()), fast(), Aead::preferred()).unwrap();
    let chunks = vec![noise(3, 100_000)];
    let mut bytes = write_encrypted(&opts(None), &chunks, &key);
    // Find the chunk frame (type 3), flip a payload byte and recompute both checksums, as an
    // attacker would: only the AEAD can tell.
    let mut at = 0;
    let chunk_at = loop {
        let h = &bytes[at..at + FRAME_HEADER_LEN];
        assert_eq!(h[..8], ARCHIVE_MAGIC);
        let len = u32::from_le_bytes(h[12..16].try_into().unwrap()) as usize;
        if h[8] == 3 {
            break at;
        }
        at += FRAME_HEADER_LEN + len;
    };
    let len = u32::from_le_bytes(bytes[chunk_at + 12..chunk_at + 16].try_into().unwrap()) as usize;
    let payload = chunk_at + FRAME_HEADER_LEN;
    bytes[payload + len / 2] ^= 0x20;
    let sum = blake3::hash(&bytes[payload..payload + len]);
    bytes[chunk_at + 40..chunk_at + 56].copy_from_slice(&sum.as_bytes()[..16]);
    let check = blake3::hash(&bytes[chunk_at..chunk_at + 56]);
    bytes[chunk_at + 56..chunk_at + 64].copy_from_slice(&check.as_bytes()[..8]);
    let mut damage = Vec::new();
    for ev in ArchiveReader::new(&bytes[..], with_password(b"pw")) {
        match ev.unwrap() {
            Event::Chunk { .. } => panic!("a tampered chunk was delivered"),
            Event::Damage(d) => damage.push(d),
            _ => {}
        }
    }
    assert!(
        damage
            .iter()
            .any(|d| d.detail.contains("failed authentication") && d.offset == chunk_at as u64),
        "{damage:#?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random damage to an encrypted archive: no panic, never a chunk that is not one of the
    /// originals, and the only errors are "no archive frame at all".
    #[test]
    fn damaged_encrypted_archives_never_yield_wrong_data(
        mutations in proptest::collection::vec(super::fuzz::mutation(), 1..4)
    ) {
        static KEY: std::sync::OnceLock<(ArchiveKey, Vec<u8>, Vec<Vec<u8>>)> =
            std::sync::OnceLock::new();
        let (key, clean, chunks) = KEY.get_or_init(|| {
            let key = ArchiveKey::new(&Password::new(b"pw".to_vec()), fast(), Aead::preferred()).unwrap();
            let chunks = vec![text(11, 90_000), noise(12, 80_000), noise(13, 5_000)];
            let bytes = write_encrypted(&opts(None), &chunks, &key);
            (key, bytes, chunks)
        });
        let mut bytes = clean.clone();
        for m in &mutations {
            super::fuzz::apply(&mut bytes, m);
        }
        for ev in ArchiveReader::new(&bytes[..], with_password(b"pw")) {
            match ev {
                Ok(Event::Chunk { id, data }) => {
                    prop_assert_eq!(key.keys.id_key().id(&data), id);
                    prop_assert!(chunks.contains(&data));
                }
                Ok(_) => {}
                Err(e) => prop_assert!(matches!(e, Error::Corrupt { .. }), "{e}"),
            }
        }
    }
}

/// The key lives in the header: a damaged header frame is recovered from its copy, which is
/// sealed for its own place (issue 14, item 11).
#[test]
fn a_damaged_encrypted_header_is_recovered_from_its_copy() {
    let key = ArchiveKey::new(&Password::new(b"pw".to_vec()), fast(), Aead::Aes256Gcm).unwrap();
    let chunks = vec![text(1, 300_000), noise(2, 70_000)];
    let mut bytes = write_encrypted(&opts(None), &chunks, &key);
    bytes[FRAME_HEADER_LEN + 32 + FRAME_HEADER_LEN + 100] ^= 1; // inside the key object
    let (mut got, mut damage, mut header) = (Vec::new(), 0, false);
    for ev in ArchiveReader::new(&bytes[..], with_password(b"pw")) {
        match ev.unwrap() {
            Event::Chunk { data, .. } => got.push(data),
            Event::Header(h) => header = h.labels[0].1 == "SECRET-LABEL",
            Event::Damage(_) => damage += 1,
            _ => {}
        }
    }
    assert!(header, "the header is read from its copy");
    assert_eq!(got, chunks);
    assert_eq!(damage, 1);
}

//! AES-256-GCM sealing of the store file (the whole header is the associated data) and the
//! PBKDF2-HMAC-SHA256 key derivation.

use std::io;
use std::path::Path;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::StoreError;
#[cfg(feature = "fuzzing")]
use super::format::NONCE_LEN;
use super::format::{
    Entries, HEADER_LEN, Header, SALT_LEN, TAG_LEN, decode_entries, encode_entries,
};
#[cfg(feature = "fuzzing")]
use crate::secrets::SecretValue;

pub(super) const KEY_LEN: usize = 32;

pub(super) fn derive_key(
    secret: &[u8],
    salt: &[u8; SALT_LEN],
    iterations: u32,
) -> Zeroizing<[u8; KEY_LEN]> {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    pbkdf2::pbkdf2_hmac::<Sha256>(secret, salt, iterations, &mut out[..]);
    out
}

/// Encodes and encrypts `entries` into a complete store file.
pub(super) fn seal(
    path: &Path,
    header: &Header,
    key: &[u8; KEY_LEN],
    entries: &Entries,
) -> Result<Vec<u8>, StoreError> {
    seal_plaintext(header, key, encode_entries(entries)).ok_or_else(|| StoreError::Corrupt {
        path: path.to_path_buf(),
    })
}

/// Encrypts `plain` in place into a complete store file: header (the associated data),
/// ciphertext, tag. `None` only for plaintexts beyond AES-GCM's limit (64 GiB).
pub(super) fn seal_plaintext(
    header: &Header,
    key: &[u8; KEY_LEN],
    mut plain: Zeroizing<Vec<u8>>,
) -> Option<Vec<u8>> {
    let aad = header.encode();
    let cipher = Aes256Gcm::new(key.into());
    let tag = cipher
        .encrypt_in_place_detached((&header.nonce).into(), &aad, &mut plain[..])
        .ok()?;
    // `plain` now holds ciphertext.
    let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + TAG_LEN);
    out.extend_from_slice(&aad);
    out.extend_from_slice(&plain);
    out.extend_from_slice(&tag);
    Some(out)
}

/// Authenticates and decrypts a complete store file.
pub(super) fn open_sealed(
    path: &Path,
    raw: &[u8],
    header: &Header,
    key: &[u8; KEY_LEN],
) -> Result<Entries, StoreError> {
    let body = &raw[HEADER_LEN..raw.len() - TAG_LEN];
    let tag = &raw[raw.len() - TAG_LEN..];
    let mut plain = Zeroizing::new(body.to_vec());
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt_in_place_detached(
            (&header.nonce).into(),
            &header.encode(),
            &mut plain[..],
            aes_gcm::Tag::from_slice(tag),
        )
        .map_err(|_| StoreError::Decrypt {
            path: path.to_path_buf(),
        })?;
    decode_entries(&plain).ok_or_else(|| StoreError::Corrupt {
        path: path.to_path_buf(),
    })
}

/// Everything `open` does once the key is derived: header checks (weak KDF parameters refused),
/// then authenticated decryption and decoding, with `key` taken as the derived key. The seam the
/// fuzzer drives (PBKDF2 at 600 000 rounds is far too slow to run per input).
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_with_key(
    path: &Path,
    raw: &[u8],
    key: &[u8; KEY_LEN],
) -> Result<Vec<(String, SecretValue, u64, u64)>, StoreError> {
    let header = Header::parse(path, raw)?;
    let entries = open_sealed(path, raw, &header, key)?;
    Ok(entries
        .into_iter()
        .map(|(name, e)| (name, e.value, e.version, e.updated))
        .collect())
}

/// A store file holding `plaintext` (any bytes, well-formed or not) sealed under `key` the way
/// every write seals, with the header fields as given (no range check on `iterations`): what a
/// writer holding the key could produce. For the fuzzer and its seeds; empty if `plaintext` is
/// beyond AES-GCM's limit.
#[cfg(feature = "fuzzing")]
pub(crate) fn seal_raw(
    iterations: u32,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
    key: &[u8; KEY_LEN],
    plaintext: &[u8],
) -> Vec<u8> {
    let header = Header {
        iterations,
        salt,
        nonce,
    };
    seal_plaintext(&header, key, Zeroizing::new(plaintext.to_vec())).unwrap_or_default()
}

pub(super) fn random(path: &Path, buf: &mut [u8]) -> Result<(), StoreError> {
    getrandom::getrandom(buf).map_err(|e| StoreError::Random {
        path: path.to_path_buf(),
        source: e
            .raw_os_error()
            .map(io::Error::from_raw_os_error)
            .unwrap_or_else(|| io::Error::other(e.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::local::Store;
    use crate::providers::local::tests::{create, fixture, open, opts, val, write_key};
    use std::fs;

    #[test]
    fn tampered_header_or_body_refused() {
        let fx = fixture();
        let mut s = create(&fx);
        s.set("db", val(b"secret-value")).unwrap();
        let good = fs::read(&fx.store).unwrap();
        let decrypt_msg = format!(
            "cannot decrypt store {}: wrong key or file tampered with",
            fx.store.display()
        );
        // Every byte of the file, header and body, checked with the right key (what `open`
        // does once it has the key; deriving it 600k rounds per byte would take minutes).
        let check = |raw: &[u8]| -> Result<Entries, StoreError> {
            let header = Header::parse(&fx.store, raw)?;
            open_sealed(&fx.store, raw, &header, &s.key.bytes)
        };
        assert!(check(&good).is_ok());
        for pos in 0..good.len() {
            let mut bad = good.clone();
            bad[pos] ^= 0x01;
            let err = check(&bad).expect_err(&format!("flipped byte {pos} was accepted"));
            let msg = err.to_string();
            assert!(!msg.contains("secret-value"));
            match pos {
                0..8 => assert!(matches!(err, StoreError::BadFormat { .. }), "{pos}: {msg}"),
                8 => assert!(
                    matches!(err, StoreError::UnsupportedVersion { .. }),
                    "{msg}"
                ),
                9 => assert!(matches!(err, StoreError::UnsupportedKdf { .. }), "{msg}"),
                10..14 => assert!(
                    matches!(
                        err,
                        StoreError::Iterations { .. } | StoreError::Decrypt { .. }
                    ),
                    "{pos}: {msg}"
                ),
                _ => assert_eq!(msg, decrypt_msg, "byte {pos}"),
            }
        }
        // End to end through `open` (key from the keyring cache or derived): a salt byte, the
        // lowest iteration byte (600001 rounds), a nonce byte, a ciphertext byte, a tag byte.
        for pos in [14, 13, 14 + SALT_LEN, HEADER_LEN + 3, good.len() - 1] {
            let mut bad = good.clone();
            bad[pos] ^= 0x01;
            fs::write(&fx.store, &bad).unwrap();
            let err = open(&fx).expect_err(&format!("flipped byte {pos} was accepted"));
            assert_eq!(err.to_string(), decrypt_msg, "byte {pos}");
        }
        // Truncated and empty files are refused too.
        for len in [0, 4, 8, HEADER_LEN, HEADER_LEN + TAG_LEN - 1] {
            fs::write(&fx.store, &good[..len]).unwrap();
            assert!(
                matches!(open(&fx), Err(StoreError::BadFormat { .. })),
                "truncated to {len}"
            );
        }
        for len in [HEADER_LEN + TAG_LEN, good.len() - 1] {
            assert!(check(&good[..len]).is_err(), "truncated to {len}");
        }
        fs::write(&fx.store, &good).unwrap();
        let s = open(&fx).unwrap();
        assert_eq!(s.get("db").unwrap().0.expose(), b"secret-value");
        s.forget_cached_key();
    }

    #[test]
    fn wrong_key_refused() {
        let fx = fixture();
        let mut s = create(&fx);
        s.set("db", val(b"v")).unwrap();
        s.forget_cached_key();
        let other = fx.dir.path().join("other.key");
        write_key(&other, b"a different passphrase");
        let err = Store::open_with(&fx.store, &other, opts()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot decrypt store {}: wrong key or file tampered with",
                fx.store.display()
            )
        );
    }

    #[test]
    fn fresh_nonce_on_every_write() {
        let fx = fixture();
        let mut s = create(&fx);
        s.set("a", val(b"same")).unwrap();
        // Rewrite the same content twice.
        s.modify(|_| true).unwrap();
        let first = fs::read(&fx.store).unwrap();
        s.modify(|_| true).unwrap();
        let second = fs::read(&fx.store).unwrap();
        assert_eq!(first.len(), second.len());
        assert_ne!(first, second);
        let h1 = Header::parse(&fx.store, &first).unwrap();
        let h2 = Header::parse(&fx.store, &second).unwrap();
        assert_ne!(h1.nonce, h2.nonce);
        assert_eq!((h1.salt, h1.iterations), (h2.salt, h2.iterations));
        assert_eq!(open(&fx).unwrap().get("a").unwrap().0.expose(), b"same");
        s.forget_cached_key();
    }

    /// Claim 12: every store gets its own random salt, so two stores under the same key file
    /// have different derived keys.
    #[test]
    fn salt_is_random_per_store() {
        let fx = fixture();
        let a = create(&fx);
        let other = fx.dir.path().join("other.vault");
        let b = Store::create_with(&other, &fx.key, opts()).unwrap();
        let salt = |p: &Path| Header::parse(p, &fs::read(p).unwrap()).unwrap().salt;
        assert_ne!(salt(&fx.store), salt(&other));
        assert_ne!(salt(&fx.store), [0u8; SALT_LEN]);
        assert_ne!(*a.key.bytes, *b.key.bytes);
        a.forget_cached_key();
        b.forget_cached_key();
    }
}

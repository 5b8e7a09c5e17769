//! The store file's layout (all integers big-endian):
//!
//! ```text
//! magic "DSOSTORE" (8) | format version u8 | KDF id u8 | PBKDF2 iterations u32 | salt (16) | nonce (12)
//! AES-256-GCM ciphertext | tag (16)          -- the whole 42-byte header is the associated data
//! ```
//!
//! Plaintext: entry count u32, then per entry: name length u16, name, version u64, updated
//! (unix seconds) u64, value length u32, value. It is only ever built and parsed inside
//! zeroizing buffers of their final size, so no value is left behind in freed memory.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use zeroize::Zeroizing;

use super::crypto::random;
use super::{MAX_ITERATIONS, MIN_ITERATIONS, StoreError, io_err};
use crate::secrets::{SecretValue, validate_name};

pub(super) const MAGIC: &[u8; 8] = b"DSOSTORE";
pub(super) const FORMAT_VERSION: u8 = 1;
pub(super) const KDF_PBKDF2_HMAC_SHA256: u8 = 1;
pub(super) const SALT_LEN: usize = 16;
pub(super) const NONCE_LEN: usize = 12;
pub(super) const TAG_LEN: usize = 16;
pub(super) const HEADER_LEN: usize = 8 + 1 + 1 + 4 + SALT_LEN + NONCE_LEN;
pub(super) const MAX_STORE_LEN: u64 = 256 << 20;

#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) value: SecretValue,
    pub(super) version: u64,
    pub(super) updated: u64,
}

pub(super) type Entries = BTreeMap<String, Entry>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) iterations: u32,
    pub(super) salt: [u8; SALT_LEN],
    pub(super) nonce: [u8; NONCE_LEN],
}

impl Header {
    /// A header for a new write: the given KDF parameters and a fresh random nonce.
    pub(super) fn fresh(
        path: &Path,
        salt: [u8; SALT_LEN],
        iterations: u32,
    ) -> Result<Header, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        random(path, &mut nonce)?;
        Ok(Header {
            iterations,
            salt,
            nonce,
        })
    }

    pub(super) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(MAGIC);
        out[8] = FORMAT_VERSION;
        out[9] = KDF_PBKDF2_HMAC_SHA256;
        out[10..14].copy_from_slice(&self.iterations.to_be_bytes());
        out[14..14 + SALT_LEN].copy_from_slice(&self.salt);
        out[14 + SALT_LEN..].copy_from_slice(&self.nonce);
        out
    }

    /// Parses and checks the header of a whole store file (`raw`). Refuses weak KDF parameters
    /// before any key is derived.
    pub(super) fn parse(path: &Path, raw: &[u8]) -> Result<Header, StoreError> {
        let bad = |why| StoreError::BadFormat {
            path: path.to_path_buf(),
            why,
        };
        if raw.len() < MAGIC.len() || &raw[..MAGIC.len()] != MAGIC {
            return Err(bad("wrong magic bytes"));
        }
        if raw.len() < HEADER_LEN + TAG_LEN {
            return Err(bad("file is truncated"));
        }
        if raw[8] != FORMAT_VERSION {
            return Err(StoreError::UnsupportedVersion {
                path: path.to_path_buf(),
                version: raw[8],
            });
        }
        if raw[9] != KDF_PBKDF2_HMAC_SHA256 {
            return Err(StoreError::UnsupportedKdf {
                path: path.to_path_buf(),
                kdf: raw[9],
            });
        }
        let mut it = [0u8; 4];
        it.copy_from_slice(&raw[10..14]);
        let iterations = u32::from_be_bytes(it);
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(StoreError::Iterations {
                path: path.to_path_buf(),
                iterations,
            });
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&raw[14..14 + SALT_LEN]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[14 + SALT_LEN..HEADER_LEN]);
        Ok(Header {
            iterations,
            salt,
            nonce,
        })
    }
}

/// The plaintext encoding of `(name, value, version, updated)` entries, as `seal` writes it.
#[cfg(feature = "fuzzing")]
pub(crate) fn encode_plaintext(entries: &[(String, SecretValue, u64, u64)]) -> Zeroizing<Vec<u8>> {
    let map: Entries = entries
        .iter()
        .map(|(name, value, version, updated)| {
            (
                name.clone(),
                Entry {
                    value: value.clone(),
                    version: *version,
                    updated: *updated,
                },
            )
        })
        .collect();
    encode_entries(&map)
}

pub(super) fn encode_entries(entries: &Entries) -> Zeroizing<Vec<u8>> {
    let len = 4 + entries
        .iter()
        .map(|(name, e)| 2 + name.len() + 8 + 8 + 4 + e.value.len())
        .sum::<usize>();
    // Sized up front: growing the buffer would leave copies of values in freed memory.
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (name, e) in entries {
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&e.version.to_be_bytes());
        out.extend_from_slice(&e.updated.to_be_bytes());
        out.extend_from_slice(&(e.value.len() as u32).to_be_bytes());
        out.extend_from_slice(e.value.expose());
    }
    debug_assert_eq!(out.len(), len);
    out
}

pub(super) fn decode_entries(mut buf: &[u8]) -> Option<Entries> {
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if buf.len() < n {
            return None;
        }
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        Some(head)
    }
    fn int<const N: usize>(buf: &mut &[u8]) -> Option<[u8; N]> {
        take(buf, N)?.try_into().ok()
    }
    let count = u32::from_be_bytes(int(&mut buf)?);
    let mut entries = Entries::new();
    for _ in 0..count {
        let name_len = u16::from_be_bytes(int(&mut buf)?) as usize;
        let name = std::str::from_utf8(take(&mut buf, name_len)?).ok()?;
        validate_name(name).ok()?;
        let version = u64::from_be_bytes(int(&mut buf)?);
        let updated = u64::from_be_bytes(int(&mut buf)?);
        let value_len = u32::from_be_bytes(int(&mut buf)?) as usize;
        let value = take(&mut buf, value_len)?;
        let value = SecretValue::from_zeroizing(Zeroizing::new(value.to_vec()));
        let entry = Entry {
            value,
            version,
            updated,
        };
        if entries.insert(name.to_string(), entry).is_some() {
            return None;
        }
    }
    buf.is_empty().then_some(entries)
}

pub(super) fn read_store_file(path: &Path) -> Result<Vec<u8>, StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::StoreMissing {
                path: path.to_path_buf(),
            },
            _ => io_err("open store", path)(e),
        })?;
    let meta = file.metadata().map_err(io_err("inspect store", path))?;
    if !meta.file_type().is_file() {
        return Err(StoreError::StoreNotRegular {
            path: path.to_path_buf(),
        });
    }
    let mut raw = Vec::new();
    file.take(MAX_STORE_LEN + 1)
        .read_to_end(&mut raw)
        .map_err(io_err("read store", path))?;
    if raw.len() as u64 > MAX_STORE_LEN {
        return Err(StoreError::BadFormat {
            path: path.to_path_buf(),
            why: "file is larger than 256 MiB",
        });
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::local::tests::{create, fixture, open, opts};
    use crate::providers::local::{Store, StoreOptions};
    use std::fs;

    #[test]
    fn iteration_count_at_least_600k() {
        let fx = fixture();
        let s = create(&fx);
        let raw = fs::read(&fx.store).unwrap();
        assert_eq!(&raw[..8], b"DSOSTORE");
        let iterations = u32::from_be_bytes(raw[10..14].try_into().unwrap());
        assert!(iterations >= 600_000, "{iterations}");
        s.forget_cached_key();

        // A header lowered to 1000 rounds is refused before any key is derived.
        let mut weak = raw.clone();
        weak[10..14].copy_from_slice(&1000u32.to_be_bytes());
        fs::write(&fx.store, &weak).unwrap();
        let err = open(&fx).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Iterations {
                    iterations: 1000,
                    ..
                }
            ),
            "{err}"
        );

        // And a new store cannot be made weak.
        let other = fx.dir.path().join("weak.vault");
        let weak_opts = StoreOptions {
            iterations: 1000,
            ..opts()
        };
        let err = Store::create_with(&other, &fx.key, weak_opts).unwrap_err();
        assert!(matches!(err, StoreError::Iterations { .. }));
        assert!(!other.exists());
    }
}

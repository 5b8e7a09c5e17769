//! [`Store`]: an open local store, its decrypted entries and the key that opened it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use super::crypto::{KEY_LEN, derive_key, open_sealed, random, seal};
use super::format::{Entries, Entry, Header, NONCE_LEN, SALT_LEN, read_store_file};
use super::keycache::{self, cache_description};
use super::keyfile::{FileId, KeyFile};
use super::lock::{Placement, StoreLock, write_atomic};
use super::{
    DEFAULT_ITERATIONS, DEFAULT_KEY_CACHE_TTL, MAX_ITERATIONS, MAX_VALUE_LEN, MIN_ITERATIONS,
    StoreError, io_err,
};
use crate::secrets::{SecretValue, validate_name};

/// Tunables; the defaults are what `dso` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// PBKDF2 iterations written into a new store's header (existing stores keep theirs).
    pub iterations: u32,
    /// Keep the derived key in the kernel user keyring for this long; `None`: never.
    pub key_cache_ttl: Option<Duration>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            iterations: DEFAULT_ITERATIONS,
            key_cache_ttl: Some(DEFAULT_KEY_CACHE_TTL),
        }
    }
}

/// Name, version and last update of a stored secret: what `dso secret ls` shows. No value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub name: String,
    pub version: u64,
    /// Unix seconds.
    pub updated: u64,
}

/// Where the key that opened the store came from (for diagnostics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// Derived from the key file just now (PBKDF2).
    Derived,
    /// Found in the kernel keyring cache.
    Keyring,
    /// Kept in memory from an earlier open of this `Store`.
    Memory,
}

pub(super) struct DerivedKey {
    pub(super) bytes: Zeroizing<[u8; KEY_LEN]>,
    pub(super) salt: [u8; SALT_LEN],
    pub(super) iterations: u32,
    pub(super) key_file: FileId,
    pub(super) origin: KeySource,
}

/// An open local store: its decrypted entries and the key that opened it. Writes go back to the
/// file at once (read-modify-write under a lock), so two `dso` processes never lose an update.
pub struct Store {
    pub(super) path: PathBuf,
    pub(super) key_file: PathBuf,
    pub(super) options: StoreOptions,
    pub(super) key: DerivedKey,
    pub(super) entries: Entries,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("key_file", &self.key_file)
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens and decrypts the store at `path` with the key derived from `key_file`.
    pub fn open(path: &Path, key_file: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, key_file, StoreOptions::default())
    }

    pub fn open_with(
        path: &Path,
        key_file: &Path,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        let kf = KeyFile::open(key_file)?;
        let raw = read_store_file(path)?;
        let header = Header::parse(path, &raw)?;
        let (key, entries) = unlock(path, &raw, &header, &kf, None, &options)?;
        Ok(Store {
            path: path.to_path_buf(),
            key_file: key_file.to_path_buf(),
            options,
            key,
            entries,
        })
    }

    /// Creates a new, empty store at `path` (its directory must exist). Never overwrites.
    pub fn create(path: &Path, key_file: &Path) -> Result<Store, StoreError> {
        Self::create_with(path, key_file, StoreOptions::default())
    }

    pub fn create_with(
        path: &Path,
        key_file: &Path,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&options.iterations) {
            return Err(StoreError::Iterations {
                path: path.to_path_buf(),
                iterations: options.iterations,
            });
        }
        let kf = KeyFile::open(key_file)?;
        let _lock = StoreLock::acquire(path)?;
        match fs::symlink_metadata(path) {
            Ok(_) => {
                return Err(StoreError::StoreExists {
                    path: path.to_path_buf(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", path)(e)),
        }
        let mut salt = [0u8; SALT_LEN];
        random(path, &mut salt)?;
        let bytes = {
            let secret = kf.read_secret()?;
            derive_key(&secret, &salt, options.iterations)
        };
        let entries = Entries::new();
        let header = Header::fresh(path, salt, options.iterations)?;
        let sealed = seal(path, &header, &bytes, &entries)?;
        write_atomic(path, &sealed, Placement::New)?;
        if let Some(ttl) = options.key_cache_ttl {
            keycache::store(&cache_description(path, &header, kf.id), &bytes, ttl);
        }
        Ok(Store {
            path: path.to_path_buf(),
            key_file: key_file.to_path_buf(),
            key: DerivedKey {
                bytes,
                salt,
                iterations: options.iterations,
                key_file: kf.id,
                origin: KeySource::Derived,
            },
            options,
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the key in use came from (keyring cache, memory, or a fresh derivation).
    pub fn key_source(&self) -> KeySource {
        self.key.origin
    }

    /// Re-reads the store from disk (after another process changed it). The key in memory is
    /// reused while the salt, the iteration count and the key file stay the same.
    pub fn reload(&mut self) -> Result<(), StoreError> {
        let kf = KeyFile::open(&self.key_file)?;
        let raw = read_store_file(&self.path)?;
        let header = Header::parse(&self.path, &raw)?;
        let (key, entries) = unlock(
            &self.path,
            &raw,
            &header,
            &kf,
            Some(&self.key),
            &self.options,
        )?;
        self.key = key;
        self.entries = entries;
        Ok(())
    }

    /// The value of `name` and its version, as of the last open, reload or write.
    pub fn get(&self, name: &str) -> Option<(SecretValue, u64)> {
        self.entries.get(name).map(|e| (e.value.clone(), e.version))
    }

    /// Names, versions and update times, sorted by name.
    pub fn list(&self) -> Vec<EntryInfo> {
        self.entries
            .iter()
            .map(|(name, e)| EntryInfo {
                name: name.clone(),
                version: e.version,
                updated: e.updated,
            })
            .collect()
    }

    /// Creates or replaces `name`; returns its new version (1 for a new secret).
    pub fn set(&mut self, name: &str, value: SecretValue) -> Result<u64, StoreError> {
        self.check_name(name)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(StoreError::ValueTooLarge {
                path: self.path.clone(),
                name: name.to_string(),
                len: value.len(),
            });
        }
        let mut version = 0;
        self.modify(|entries| {
            version = entries.get(name).map_or(1, |e| e.version.saturating_add(1));
            entries.insert(
                name.to_string(),
                Entry {
                    value,
                    version,
                    updated: unix_now(),
                },
            );
            true
        })?;
        Ok(version)
    }

    /// Removes `name`; `false` if there was no such secret (the file is then left untouched).
    pub fn remove(&mut self, name: &str) -> Result<bool, StoreError> {
        self.check_name(name)?;
        let mut removed = false;
        self.modify(|entries| {
            removed = entries.remove(name).is_some();
            removed
        })?;
        Ok(removed)
    }

    /// Drops this store's derived key from the kernel keyring (the next open derives it again).
    pub fn forget_cached_key(&self) {
        if let Ok(kf) = KeyFile::open(&self.key_file) {
            let header = Header {
                iterations: self.key.iterations,
                salt: self.key.salt,
                nonce: [0; NONCE_LEN],
            };
            keycache::forget(&cache_description(&self.path, &header, kf.id));
        }
    }

    fn check_name(&self, name: &str) -> Result<(), StoreError> {
        validate_name(name).map_err(|source| StoreError::BadName {
            path: self.path.clone(),
            source: Box::new(source),
        })
    }

    /// Read-modify-write under the store lock. `change` edits a copy of the current entries and
    /// says whether it changed anything; the copy becomes the store only once it is on disk.
    pub(super) fn modify(
        &mut self,
        change: impl FnOnce(&mut Entries) -> bool,
    ) -> Result<(), StoreError> {
        let _lock = StoreLock::acquire(&self.path)?;
        self.reload()?;
        let mut next = self.entries.clone();
        if !change(&mut next) {
            return Ok(());
        }
        let header = Header::fresh(&self.path, self.key.salt, self.key.iterations)?;
        let sealed = seal(&self.path, &header, &self.key.bytes, &next)?;
        write_atomic(&self.path, &sealed, Placement::Replace)?;
        self.entries = next;
        Ok(())
    }
}

/// Finds the key that opens `raw` and decrypts it: the key in memory if its parameters still
/// match, else the keyring's cached one, else a fresh derivation (which is then cached).
pub(super) fn unlock(
    path: &Path,
    raw: &[u8],
    header: &Header,
    kf: &KeyFile,
    in_memory: Option<&DerivedKey>,
    options: &StoreOptions,
) -> Result<(DerivedKey, Entries), StoreError> {
    let make = |bytes, origin| DerivedKey {
        bytes,
        salt: header.salt,
        iterations: header.iterations,
        key_file: kf.id,
        origin,
    };
    if let Some(k) = in_memory.filter(|k| {
        k.salt == header.salt && k.iterations == header.iterations && k.key_file == kf.id
    }) {
        if let Ok(entries) = open_sealed(path, raw, header, &k.bytes) {
            return Ok((make(k.bytes.clone(), KeySource::Memory), entries));
        }
    }
    let description = cache_description(path, header, kf.id);
    if options.key_cache_ttl.is_some()
        && let Some(bytes) = keycache::lookup(&description)
    {
        match open_sealed(path, raw, header, &bytes) {
            Ok(entries) => return Ok((make(bytes, KeySource::Keyring), entries)),
            // A stale or planted entry: drop it and derive.
            Err(StoreError::Decrypt { .. }) => keycache::forget(&description),
            Err(e) => return Err(e),
        }
    }
    let bytes = {
        let secret = kf.read_secret()?;
        derive_key(&secret, &header.salt, header.iterations)
    };
    let entries = open_sealed(path, raw, header, &bytes)?;
    if let Some(ttl) = options.key_cache_ttl {
        keycache::store(&description, &bytes, ttl);
    }
    Ok((make(bytes, KeySource::Derived), entries))
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::local::tests::{create, fixture, open, val};

    #[test]
    fn round_trip_with_versions() {
        let fx = fixture();
        let mut s = create(&fx);
        assert!(s.list().is_empty());
        assert_eq!(s.set("db_password", val(b"pw1")).unwrap(), 1);
        assert_eq!(s.set("api.key-2", val(b"k")).unwrap(), 1);
        assert_eq!(s.set("db_password", val(b"pw2")).unwrap(), 2);

        let s2 = open(&fx).unwrap();
        let (v, version) = s2.get("db_password").unwrap();
        assert_eq!((v.expose(), version), (&b"pw2"[..], 2));
        let names: Vec<_> = s2.list().into_iter().map(|e| (e.name, e.version)).collect();
        assert_eq!(
            names,
            vec![("api.key-2".to_string(), 1), ("db_password".to_string(), 2)]
        );
        assert!(s2.list().iter().all(|e| e.updated > 1_600_000_000));

        assert!(s.remove("api.key-2").unwrap());
        assert!(!s.remove("api.key-2").unwrap());
        let s3 = open(&fx).unwrap();
        assert!(s3.get("api.key-2").is_none());
        assert_eq!(s3.list().len(), 1);
        s3.forget_cached_key();
    }

    #[test]
    fn binary_value_and_trailing_newlines_kept() {
        let fx = fixture();
        let mut s = create(&fx);
        let value: Vec<u8> = [
            &b"\x00\xff\x80line\r\n"[..],
            &(0..=255).collect::<Vec<u8>>(),
            b"\n\n",
        ]
        .concat();
        s.set("bin", val(&value)).unwrap();
        s.set("empty", val(b"")).unwrap();
        let s2 = open(&fx).unwrap();
        assert_eq!(s2.get("bin").unwrap().0.expose(), &value[..]);
        assert_eq!(s2.get("empty").unwrap().0.expose(), b"");
        s2.forget_cached_key();
    }

    #[test]
    fn bad_names_and_oversized_values_refused() {
        let fx = fixture();
        let mut s = create(&fx);
        for bad in ["", "..", "a/b", "a b", "x\0"] {
            assert!(
                matches!(s.set(bad, val(b"v")), Err(StoreError::BadName { .. })),
                "{bad:?}"
            );
        }
        let big = vec![0u8; MAX_VALUE_LEN + 1];
        let err = s.set("big", SecretValue::new(big)).unwrap_err();
        assert!(matches!(err, StoreError::ValueTooLarge { .. }));
        assert!(s.list().is_empty());
        s.forget_cached_key();
    }

    #[test]
    fn debug_shows_no_values() {
        let fx = fixture();
        let mut s = create(&fx);
        s.set("a", val(b"hunter2")).unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        s.forget_cached_key();
    }
}

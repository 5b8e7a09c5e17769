//! The local provider: an AES-256-GCM encrypted store file, key derived with PBKDF2-HMAC-SHA256
//! from a key file; the derived key cached in the kernel keyring, never on disk.
//!
//! File layout (all integers big-endian):
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
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{FetchRequest, Fetched, Provider, ProviderError};
pub use crate::config::{DEFAULT_KEY_FILE, DEFAULT_STORE_PATH, LocalSettings};
use crate::secrets::{RefError, SecretValue, validate_name};

/// The lowest PBKDF2 iteration count accepted, in new stores and in headers read from disk.
pub const MIN_ITERATIONS: u32 = 600_000;
/// The highest count accepted: a forged header must not be able to stall every open for hours.
pub const MAX_ITERATIONS: u32 = 10_000_000;
pub const DEFAULT_ITERATIONS: u32 = MIN_ITERATIONS;
/// How long a derived key stays in the kernel keyring.
pub const DEFAULT_KEY_CACHE_TTL: Duration = Duration::from_secs(3600);
/// Largest secret value the store accepts (the container tmpfs defaults to 1 MiB anyway).
pub const MAX_VALUE_LEN: usize = 1 << 20;

const MAGIC: &[u8; 8] = b"DSOSTORE";
const FORMAT_VERSION: u8 = 1;
const KDF_PBKDF2_HMAC_SHA256: u8 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
const HEADER_LEN: usize = 8 + 1 + 1 + 4 + SALT_LEN + NONCE_LEN;
const MAX_KEY_FILE_LEN: usize = 4096;
const MAX_STORE_LEN: u64 = 256 << 20;
const KEY_CACHE_PREFIX: &str = "dso:local:";

/// Why the store could not be opened, read or written. Messages carry the path and say what to
/// do; none ever carries a value or key material.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key file {path} does not exist; run `dso init` to create a key file and a store")]
    KeyFileMissing { path: PathBuf },
    #[error("key file {path} is not a regular file")]
    KeyFileNotRegular { path: PathBuf },
    #[error(
        "key file {path} has mode {mode:04o}, readable by group or others; refusing it (fix: chmod 600 {path})"
    )]
    KeyFileLoose { path: PathBuf, mode: u32 },
    #[error(transparent)]
    Untrusted(Box<crate::trust::Untrusted>),
    #[error("key file {path} is empty")]
    KeyFileEmpty { path: PathBuf },
    #[error("key file {path} is larger than {MAX_KEY_FILE_LEN} bytes")]
    KeyFileTooLarge { path: PathBuf },
    #[error("store {path} does not exist; run `dso init` to create it")]
    StoreMissing { path: PathBuf },
    #[error("store {path} already exists; not overwriting it")]
    StoreExists { path: PathBuf },
    #[error("store {path} is not a regular file")]
    StoreNotRegular { path: PathBuf },
    #[error("store {path} is not a dso store: {why}")]
    BadFormat { path: PathBuf, why: &'static str },
    #[error("store {path} has format version {version}; this dso reads version {FORMAT_VERSION}")]
    UnsupportedVersion { path: PathBuf, version: u8 },
    #[error("store {path} uses key derivation {kdf}, which this dso does not know")]
    UnsupportedKdf { path: PathBuf, kdf: u8 },
    #[error(
        "store {path}: {iterations} PBKDF2 iterations is outside {MIN_ITERATIONS}..={MAX_ITERATIONS}; refusing it"
    )]
    Iterations { path: PathBuf, iterations: u32 },
    #[error("cannot decrypt store {path}: wrong key or file tampered with")]
    Decrypt { path: PathBuf },
    #[error("store {path} decrypted but its contents are malformed")]
    Corrupt { path: PathBuf },
    #[error(
        "store {path}: the value of {name:?} is {len} bytes, more than the {MAX_VALUE_LEN} allowed"
    )]
    ValueTooLarge {
        path: PathBuf,
        name: String,
        len: usize,
    },
    #[error("store {path}: {source}")]
    BadName {
        path: PathBuf,
        #[source]
        source: Box<RefError>,
    },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("store {path}: cannot get random bytes from the OS: {source}")]
    Random {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

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

#[derive(Debug, Clone)]
struct Entry {
    value: SecretValue,
    version: u64,
    updated: u64,
}

type Entries = BTreeMap<String, Entry>;

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

/// What identifies a key file without reading it (for the keyring cache description).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

struct DerivedKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    salt: [u8; SALT_LEN],
    iterations: u32,
    key_file: FileId,
    origin: KeySource,
}

/// An open local store: its decrypted entries and the key that opened it. Writes go back to the
/// file at once (read-modify-write under a lock), so two `dso` processes never lose an update.
pub struct Store {
    path: PathBuf,
    key_file: PathBuf,
    options: StoreOptions,
    key: DerivedKey,
    entries: Entries,
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
    fn modify(&mut self, change: impl FnOnce(&mut Entries) -> bool) -> Result<(), StoreError> {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    iterations: u32,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
}

impl Header {
    /// A header for a new write: the given KDF parameters and a fresh random nonce.
    fn fresh(path: &Path, salt: [u8; SALT_LEN], iterations: u32) -> Result<Header, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        random(path, &mut nonce)?;
        Ok(Header {
            iterations,
            salt,
            nonce,
        })
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
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
    fn parse(path: &Path, raw: &[u8]) -> Result<Header, StoreError> {
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

/// An opened, checked key file. Its bytes are read only when a key must be derived.
struct KeyFile {
    path: PathBuf,
    file: File,
    id: FileId,
}

impl KeyFile {
    fn open(path: &Path) -> Result<KeyFile, StoreError> {
        // O_NONBLOCK: a FIFO planted at the path must not hang us; regular files ignore it.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => StoreError::KeyFileMissing {
                    path: path.to_path_buf(),
                },
                _ => io_err("open key file", path)(e),
            })?;
        // Checked on the open descriptor, so the file checked is the file read.
        let meta = file.metadata().map_err(io_err("inspect key file", path))?;
        if !meta.file_type().is_file() {
            return Err(StoreError::KeyFileNotRegular {
                path: path.to_path_buf(),
            });
        }
        if let Err(e @ crate::trust::Untrusted::Owner { .. }) =
            crate::trust::check(&meta, path, "key file", crate::trust::Use::Secret)
        {
            return Err(StoreError::Untrusted(Box::new(e)));
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(StoreError::KeyFileLoose {
                path: path.to_path_buf(),
                mode,
            });
        }
        if meta.len() == 0 {
            return Err(StoreError::KeyFileEmpty {
                path: path.to_path_buf(),
            });
        }
        if meta.len() > MAX_KEY_FILE_LEN as u64 {
            return Err(StoreError::KeyFileTooLarge {
                path: path.to_path_buf(),
            });
        }
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        };
        Ok(KeyFile {
            path: path.to_path_buf(),
            file,
            id,
        })
    }

    /// The key file's exact bytes, in a zeroizing buffer that never reallocates.
    fn read_secret(&self) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let mut buf = Zeroizing::new(vec![0u8; MAX_KEY_FILE_LEN + 1]);
        let mut len = 0;
        let mut reader = &self.file;
        while len < buf.len() {
            match reader.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("read key file", &self.path)(e)),
            }
        }
        if len == 0 {
            return Err(StoreError::KeyFileEmpty {
                path: self.path.clone(),
            });
        }
        if len > MAX_KEY_FILE_LEN {
            return Err(StoreError::KeyFileTooLarge {
                path: self.path.clone(),
            });
        }
        buf.truncate(len);
        Ok(buf)
    }
}

fn derive_key(secret: &[u8], salt: &[u8; SALT_LEN], iterations: u32) -> Zeroizing<[u8; KEY_LEN]> {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    pbkdf2::pbkdf2_hmac::<Sha256>(secret, salt, iterations, &mut out[..]);
    out
}

/// Finds the key that opens `raw` and decrypts it: the key in memory if its parameters still
/// match, else the keyring's cached one, else a fresh derivation (which is then cached).
fn unlock(
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

/// The keyring description of a store's derived key. It hashes only public facts (where the
/// store is, its KDF parameters, which key file), nothing that would help guess the key file's
/// contents.
fn cache_description(path: &Path, header: &Header, key_file: FileId) -> String {
    let path = fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf());
    let path_bytes = path.as_os_str().as_encoded_bytes();
    let mut h = Sha256::new();
    h.update(b"dso local key cache v1\0");
    h.update((path_bytes.len() as u64).to_be_bytes());
    h.update(path_bytes);
    h.update(header.salt);
    h.update(header.iterations.to_be_bytes());
    h.update(key_file.dev.to_be_bytes());
    h.update(key_file.ino.to_be_bytes());
    h.update(key_file.size.to_be_bytes());
    h.update(key_file.mtime_ns.to_be_bytes());
    format!("{KEY_CACHE_PREFIX}{}", hex::encode(h.finalize()))
}

/// Encodes and encrypts `entries` into a complete store file.
fn seal(
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
fn seal_plaintext(
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
fn open_sealed(
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

fn encode_entries(entries: &Entries) -> Zeroizing<Vec<u8>> {
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

fn decode_entries(mut buf: &[u8]) -> Option<Entries> {
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

fn read_store_file(path: &Path) -> Result<Vec<u8>, StoreError> {
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

/// An exclusive `flock` on `<store>.lock`, held until dropped (closing the descriptor releases
/// it, so there is no unlock that could fail).
struct StoreLock {
    _file: File,
}

impl StoreLock {
    fn acquire(store: &Path) -> Result<StoreLock, StoreError> {
        let mut name = OsString::from(store.as_os_str());
        name.push(".lock");
        let lock_path = PathBuf::from(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(io_err("open lock file", &lock_path))?;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive) {
                Ok(()) => return Ok(StoreLock { _file: file }),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(io_err("lock", &lock_path)(e.into())),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Atomically replace the existing store.
    Replace,
    /// Create the store; fail if anything exists at the path.
    New,
}

/// Writes `bytes` to a temp file next to `path` (0600), fsyncs it, moves it into place and
/// fsyncs the directory ([`crate::atomic_file`]). On failure the old store is untouched and the
/// temp file is gone.
fn write_atomic(path: &Path, bytes: &[u8], placement: Placement) -> Result<(), StoreError> {
    let opts = crate::atomic_file::Options {
        durable: true,
        // No window to overwrite a store that appeared since we checked.
        no_clobber: placement == Placement::New,
        ..crate::atomic_file::Options::new(0o600)
    };
    crate::atomic_file::write_with(path, opts, |f| {
        fail_point(FailPoint::TempCreated)?;
        f.write_all(bytes)?;
        fail_point(FailPoint::TempWritten)?;
        fail_point(FailPoint::BeforeRename)
    })
    .map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists if placement == Placement::New => StoreError::StoreExists {
            path: path.to_path_buf(),
        },
        _ => io_err("write store", path)(e),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailPoint {
    TempCreated,
    TempWritten,
    BeforeRename,
}

#[cfg(test)]
thread_local! {
    static FAIL_AT: std::cell::Cell<Option<FailPoint>> = const { std::cell::Cell::new(None) };
}

/// Fault injection for the tests of the atomic write; a no-op outside tests.
fn fail_point(_at: FailPoint) -> io::Result<()> {
    #[cfg(test)]
    if FAIL_AT.with(|f| f.get()) == Some(_at) {
        return Err(io::Error::other(format!("injected failure at {_at:?}")));
    }
    Ok(())
}

fn random(path: &Path, buf: &mut [u8]) -> Result<(), StoreError> {
    getrandom::getrandom(buf).map_err(|e| StoreError::Random {
        path: path.to_path_buf(),
        source: e
            .raw_os_error()
            .map(io::Error::from_raw_os_error)
            .unwrap_or_else(|| io::Error::other(e.to_string())),
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The derived-key cache in the kernel user keyring of the calling uid (see [`crate::keyring`]).
/// Every failure (no keyring in this sandbox, EPERM from seccomp, quota) just means "derive the
/// key again".
/// The derived-key cache in the kernel user keyring, sealed. The user keyring is not
/// namespaced: any uid-0 process of the initial user namespace whose seccomp profile allows
/// `keyctl` (a privileged or `seccomp=unconfined` container, a Kubernetes pod by default) can
/// read root's entries. So the entry is the key sealed (AES-256-GCM, the description as AAD)
/// with a random wrapping key kept in a root-only file on the host's tmpfs
/// ([`wrap_key_path`], 0600, recreated after a reboot): what such a process reads is useless
/// without a file it cannot reach, and a stolen store backup stays protected by PBKDF2
/// (issue 14 point 1).
mod keycache {
    use std::io::{Read, Write};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use aes_gcm::aead::AeadInPlace;
    use aes_gcm::{Aes256Gcm, KeyInit};
    use zeroize::Zeroizing;

    use super::KEY_LEN;

    const NONCE_LEN: usize = 12;
    const TAG_LEN: usize = 16;
    const SEALED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

    /// Where the wrapping key lives: `/run/dso/keyring-wrap` for root, else
    /// `$XDG_RUNTIME_DIR/dso-keyring-wrap` (no cache without one).
    pub(super) fn wrap_key_path() -> Option<PathBuf> {
        if nix::unistd::geteuid().is_root() {
            return Some(PathBuf::from("/run/dso/keyring-wrap"));
        }
        std::env::var_os("XDG_RUNTIME_DIR").map(|d| PathBuf::from(d).join("dso-keyring-wrap"))
    }

    /// The wrapping key at `path`; made (32 random bytes, 0600, in a 0700 dir created only if
    /// missing) when `create` and absent. `None` when it cannot be had or is not trusted.
    fn wrap_key(path: &Path, create: bool) -> Option<Zeroizing<[u8; KEY_LEN]>> {
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
        };
        let mut file = match open() {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                if let Some(dir) = path.parent().filter(|d| !d.exists()) {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .ok()?;
                }
                let mut key = Zeroizing::new([0u8; KEY_LEN]);
                getrandom::getrandom(&mut key[..]).ok()?;
                // O_EXCL: of two creators, one writes; the other (and a reader meanwhile)
                // finds a short file, caches nothing this time and derives.
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(path)
                    .ok()?;
                f.write_all(&key[..]).ok()?;
                return Some(key);
            }
            Err(_) => return None,
        };
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.len() != KEY_LEN as u64 {
            return None;
        }
        crate::trust::check(
            &meta,
            path,
            "keyring wrapping key",
            crate::trust::Use::Secret,
        )
        .ok()?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        file.read_exact(&mut key[..]).ok()?;
        Some(key)
    }

    pub(super) fn lookup(description: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
        let wrap = wrap_key(&wrap_key_path()?, false)?;
        let mut sealed = Zeroizing::new([0u8; SEALED_LEN]);
        crate::keyring::read_exact(description, &mut sealed[..])?;
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(KEY_LEN);
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        out.copy_from_slice(body);
        Aes256Gcm::new((&*wrap).into())
            .decrypt_in_place_detached(
                nonce.into(),
                description.as_bytes(),
                &mut out[..],
                tag.into(),
            )
            .ok()?;
        Some(out)
    }

    pub(super) fn store(description: &str, key: &[u8; KEY_LEN], ttl: Duration) {
        let Some(wrap) = wrap_key_path().and_then(|p| wrap_key(&p, true)) else {
            return;
        };
        let mut sealed = Zeroizing::new([0u8; SEALED_LEN]);
        if getrandom::getrandom(&mut sealed[..NONCE_LEN]).is_err() {
            return;
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let (body, tag_out) = rest.split_at_mut(KEY_LEN);
        body.copy_from_slice(key);
        let Ok(tag) = Aes256Gcm::new((&*wrap).into()).encrypt_in_place_detached(
            (&*nonce).into(),
            description.as_bytes(),
            body,
        ) else {
            return;
        };
        tag_out.copy_from_slice(&tag);
        crate::keyring::store(description, &sealed[..], ttl);
    }

    pub(super) fn forget(description: &str) {
        crate::keyring::forget(description);
    }
}

/// The `type: local` provider. Opens the store on first use and re-reads it whenever the store
/// or the key file changed since (the derived key stays in memory), so a `dso secret set` is
/// seen at once while the fetches of one create decrypt the store once.
pub struct LocalProvider {
    name: String,
    settings: LocalSettings,
    store: Mutex<Option<(Store, Stamp)>>,
}

/// What identifies the contents of the store and the key file without reading them: device,
/// inode, size, mtime and ctime of each. Every write of the store is a rename of a new file (a
/// new inode); an edit, chmod or chown of the key file moves its ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp([i64; 14]);

impl Stamp {
    fn of(store: &Path, key_file: &Path) -> Option<Stamp> {
        let a = fs::metadata(store).ok()?;
        let b = fs::metadata(key_file).ok()?;
        let f = |m: &fs::Metadata| {
            [
                m.dev() as i64,
                m.ino() as i64,
                m.size() as i64,
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            ]
        };
        let (a, b) = (f(&a), f(&b));
        let mut out = [0i64; 14];
        out[..7].copy_from_slice(&a);
        out[7..].copy_from_slice(&b);
        Some(Stamp(out))
    }
}

impl LocalProvider {
    pub fn new(name: &str, settings: LocalSettings) -> Self {
        Self {
            name: name.to_string(),
            settings,
            store: Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &LocalSettings {
        &self.settings
    }

    fn store_error(&self, source: StoreError) -> ProviderError {
        ProviderError::Local {
            kind: "local",
            provider: self.name.clone(),
            source,
        }
    }
}

impl Provider for LocalProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn fetch(&self, req: &FetchRequest) -> Result<Fetched, ProviderError> {
        // One fetch at a time: concurrent first fetches must not each derive the key.
        let mut guard = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        // Stat before reading: a change racing with the read shows as a new stamp next time.
        let now = Stamp::of(&self.settings.path, &self.settings.key_file);
        let store = match &mut *guard {
            Some((store, stamp)) => {
                if now.is_none() || now != Some(*stamp) {
                    store.reload().map_err(|e| self.store_error(e))?;
                    if let Some(now) = now {
                        *stamp = now;
                    }
                }
                store
            }
            slot @ None => {
                let store = Store::open(&self.settings.path, &self.settings.key_file)
                    .map_err(|e| self.store_error(e))?;
                let stamp = now.unwrap_or(Stamp([-1; 14]));
                &mut slot.insert((store, stamp)).0
            }
        };
        let (value, version) = store
            .get(&req.path)
            .ok_or_else(|| ProviderError::NotFound {
                kind: "local",
                provider: self.name.clone(),
                path: req.path.clone(),
            })?;
        let version = version.to_string();
        if let Some(want) = req.version.as_deref()
            && want != version
        {
            return Err(ProviderError::Unavailable {
                kind: "local",
                provider: self.name.clone(),
                detail: format!(
                    "{:?}: version {want} is not available; the local store keeps only the current version ({version})",
                    req.path
                ),
            });
        }
        let value = match req.key.as_deref() {
            None => value,
            Some(key) => value.select_key(key).map_err(|source| ProviderError::Key {
                kind: "local",
                provider: self.name.clone(),
                path: req.path.clone(),
                source,
            })?,
        };
        Ok(Fetched {
            value,
            version: Some(version),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    struct Fixture {
        dir: TempDir,
        store: PathBuf,
        key: PathBuf,
    }

    /// A temp dir with a 0600 key file (64 hex chars, as `dso init` writes) and no store yet.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("master.key");
        write_key(
            &key,
            b"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        );
        let store = dir.path().join("local.vault");
        Fixture { dir, store, key }
    }

    fn write_key(path: &Path, bytes: &[u8]) {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    /// The keyring cache with a short life, so that test keys do not linger.
    fn opts() -> StoreOptions {
        StoreOptions {
            key_cache_ttl: Some(Duration::from_secs(120)),
            ..StoreOptions::default()
        }
    }

    fn create(fx: &Fixture) -> Store {
        Store::create_with(&fx.store, &fx.key, opts()).unwrap()
    }

    fn open(fx: &Fixture) -> Result<Store, StoreError> {
        Store::open_with(&fx.store, &fx.key, opts())
    }

    fn val(bytes: &[u8]) -> SecretValue {
        SecretValue::new(bytes.to_vec())
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn keyring_available() -> bool {
        KeyRingProbe::available()
    }

    struct KeyRingProbe;
    impl KeyRingProbe {
        fn available() -> bool {
            let desc = format!("dso:test-probe:{}", std::process::id());
            keycache::store(&desc, &[7u8; KEY_LEN], Duration::from_secs(5));
            let ok = keycache::lookup(&desc).is_some_and(|k| *k == [7u8; KEY_LEN]);
            keycache::forget(&desc);
            ok
        }
    }

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
    fn loose_missing_or_odd_key_file_refused() {
        let fx = fixture();
        let s = create(&fx);
        for mode in [0o644, 0o640, 0o604, 0o610] {
            fs::set_permissions(&fx.key, fs::Permissions::from_mode(mode)).unwrap();
            let err = open(&fx).unwrap_err();
            assert!(matches!(err, StoreError::KeyFileLoose { .. }));
            let msg = err.to_string();
            let path = fx.key.display().to_string();
            assert!(msg.contains(&path), "{msg}");
            assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
            assert!(msg.contains(&format!("chmod 600 {path}")), "{msg}");
            assert!(!msg.contains('\n'));
        }
        for mode in [0o600, 0o400] {
            fs::set_permissions(&fx.key, fs::Permissions::from_mode(mode)).unwrap();
            open(&fx).unwrap();
        }
        s.forget_cached_key();

        let missing = fx.dir.path().join("nope.key");
        let err = Store::open_with(&fx.store, &missing, opts()).unwrap_err();
        assert!(matches!(err, StoreError::KeyFileMissing { .. }));
        assert!(err.to_string().contains("dso init"));

        let err = Store::open_with(&fx.store, fx.dir.path(), opts()).unwrap_err();
        assert!(matches!(err, StoreError::KeyFileNotRegular { .. }), "{err}");

        let empty = fx.dir.path().join("empty.key");
        write_key(&empty, b"");
        let err = Store::open_with(&fx.store, &empty, opts()).unwrap_err();
        assert!(matches!(err, StoreError::KeyFileEmpty { .. }), "{err}");

        let err = Store::open_with(&fx.dir.path().join("none.vault"), &fx.key, opts()).unwrap_err();
        assert!(matches!(err, StoreError::StoreMissing { .. }));
        assert!(err.to_string().contains("dso init"));
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

    #[test]
    fn failed_write_leaves_old_store_and_no_temp_file() {
        let fx = fixture();
        let mut s = create(&fx);
        s.set("a", val(b"old")).unwrap();
        let before = fs::read(&fx.store).unwrap();
        let names_before = dir_names(fx.dir.path());
        for point in [
            FailPoint::TempCreated,
            FailPoint::TempWritten,
            FailPoint::BeforeRename,
        ] {
            FAIL_AT.with(|f| f.set(Some(point)));
            let res = s.set("a", val(b"new"));
            FAIL_AT.with(|f| f.set(None));
            let err = res.unwrap_err();
            assert!(err.to_string().contains("injected failure"), "{err}");
            assert_eq!(fs::read(&fx.store).unwrap(), before, "{point:?}");
            assert_eq!(dir_names(fx.dir.path()), names_before, "{point:?}");
            // The in-memory view did not move on either.
            assert_eq!(s.get("a").unwrap(), (val(b"old"), 1));
        }
        assert_eq!(open(&fx).unwrap().get("a").unwrap().0.expose(), b"old");
        // A failed create leaves nothing behind either.
        let other = fx.dir.path().join("new.vault");
        FAIL_AT.with(|f| f.set(Some(FailPoint::TempWritten)));
        let res = Store::create_with(&other, &fx.key, opts());
        FAIL_AT.with(|f| f.set(None));
        assert!(res.is_err());
        assert!(!other.exists());
        assert_eq!(
            dir_names(fx.dir.path()),
            [names_before.clone(), vec!["new.vault.lock".to_string()]]
                .concat()
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
        s.forget_cached_key();
    }

    #[test]
    fn create_never_overwrites() {
        let fx = fixture();
        let mut s = create(&fx);
        s.set("a", val(b"keep")).unwrap();
        let before = fs::read(&fx.store).unwrap();
        let err = Store::create_with(&fx.store, &fx.key, opts()).unwrap_err();
        assert!(matches!(err, StoreError::StoreExists { .. }));
        assert_eq!(fs::read(&fx.store).unwrap(), before);

        let plain = fx.dir.path().join("plain.txt");
        fs::write(&plain, b"not a store").unwrap();
        let err = Store::create_with(&plain, &fx.key, opts()).unwrap_err();
        assert!(matches!(err, StoreError::StoreExists { .. }));
        assert_eq!(fs::read(&plain).unwrap(), b"not a store");
        s.forget_cached_key();
    }

    #[test]
    fn store_file_mode_is_0600() {
        let fx = fixture();
        let mut s = create(&fx);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&fx.store), 0o600);
        s.set("a", val(b"v")).unwrap();
        assert_eq!(mode(&fx.store), 0o600);
        s.forget_cached_key();
    }

    #[test]
    fn keyring_cache_is_used_and_repaired() {
        if !keyring_available() {
            crate::test_support::skipped("kernel keyring not available here");
            return;
        }
        let fx = fixture();
        let mut s = create(&fx);
        s.set("a", val(b"v")).unwrap();
        let raw = fs::read(&fx.store).unwrap();
        let header = Header::parse(&fx.store, &raw).unwrap();
        let kf = KeyFile::open(&fx.key).unwrap();
        let desc = cache_description(&fx.store, &header, kf.id);
        assert!(desc.starts_with("dso:local:"));
        assert_eq!(desc.len(), "dso:local:".len() + 64);
        assert_eq!(*keycache::lookup(&desc).unwrap(), *s.key.bytes);

        // Only possessor and user may touch the cached key; group and others nothing.
        let ring = linux_keyutils::KeyRing::from_special_id(
            linux_keyutils::KeyRingIdentifier::User,
            false,
        )
        .unwrap();
        let perms = ring.search(&desc).unwrap().metadata().unwrap().get_perms();
        assert_eq!(perms.bits() & 0xffff, 0, "perms {:08x}", perms.bits());

        let s2 = open(&fx).unwrap();
        assert_eq!(s2.key_source(), KeySource::Keyring);
        // A reload of the same store keeps the key in memory.
        s.reload().unwrap();
        assert_eq!(s.key_source(), KeySource::Memory);

        // A wrong key planted under the description is dropped and replaced.
        keycache::store(&desc, &[0u8; KEY_LEN], Duration::from_secs(60));
        let s3 = open(&fx).unwrap();
        assert_eq!(s3.key_source(), KeySource::Derived);
        assert_eq!(s3.get("a").unwrap().0.expose(), b"v");
        assert_eq!(*keycache::lookup(&desc).unwrap(), *s.key.bytes);

        // Without the cache, the key is derived each time.
        let no_cache = StoreOptions {
            key_cache_ttl: None,
            ..opts()
        };
        s.forget_cached_key();
        assert!(keycache::lookup(&desc).is_none());
        let s4 = Store::open_with(&fx.store, &fx.key, no_cache).unwrap();
        assert_eq!(s4.key_source(), KeySource::Derived);
        assert!(keycache::lookup(&desc).is_none());
    }

    /// Issue 14 point 1: what any uid-0 process can read from root's user keyring (a root
    /// process in a container whose seccomp allows keyctl, in another session) is the derived
    /// key sealed with a wrapping key that lives in a root-only file on the host: the entry
    /// holds no copy of the key, and it does not open the store.
    #[test]
    fn the_keyring_entry_is_sealed_and_useless_without_the_host_file() {
        if !keyring_available() {
            crate::test_support::skipped("kernel keyring not available here");
            return;
        }
        let fx = fixture();
        let mut s = create(&fx);
        s.set("a", val(b"v")).unwrap();
        let raw = fs::read(&fx.store).unwrap();
        let header = Header::parse(&fx.store, &raw).unwrap();
        let desc = cache_description(&fx.store, &header, KeyFile::open(&fx.key).unwrap().id);
        // Read the entry as any other process would: the raw payload, through keyctl.
        let ring = linux_keyutils::KeyRing::from_special_id(
            linux_keyutils::KeyRingIdentifier::User,
            false,
        )
        .unwrap();
        let key = ring.search(&desc).unwrap();
        let mut entry = vec![0u8; 256];
        let n = key.read(&mut entry).unwrap();
        entry.truncate(n);
        assert_eq!(entry.len(), 12 + KEY_LEN + 16, "nonce, sealed key, tag");
        let derived: &[u8] = &s.key.bytes[..];
        assert!(
            !entry.windows(KEY_LEN).any(|w| w == derived),
            "the derived key is in the keyring entry"
        );
        for w in entry.windows(KEY_LEN) {
            let k: [u8; KEY_LEN] = w.try_into().unwrap();
            assert!(open_sealed(&fx.store, &raw, &header, &k).is_err());
        }
        // The wrapping key is a root-only file, not in the keyring.
        let wrap = keycache::wrap_key_path().unwrap();
        let meta = fs::metadata(&wrap).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), KEY_LEN as u64);
        // And the cache still serves dso.
        assert_eq!(open(&fx).unwrap().key_source(), KeySource::Keyring);
        s.forget_cached_key();
    }

    #[test]
    fn cache_description_ignores_key_contents() {
        let fx = fixture();
        let s = create(&fx);
        let raw = fs::read(&fx.store).unwrap();
        let header = Header::parse(&fx.store, &raw).unwrap();
        let id = KeyFile::open(&fx.key).unwrap().id;
        // Same facts, same description; the description is a pure function of public facts.
        assert_eq!(
            cache_description(&fx.store, &header, id),
            cache_description(&fx.store, &header, id)
        );
        let other_salt = Header {
            salt: [9; SALT_LEN],
            ..header
        };
        assert_ne!(
            cache_description(&fx.store, &header, id),
            cache_description(&fx.store, &other_salt, id)
        );
        s.forget_cached_key();
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let fx = fixture();
        create(&fx);
        let handles: Vec<_> = ["x", "y"]
            .into_iter()
            .map(|prefix| {
                let (store, key) = (fx.store.clone(), fx.key.clone());
                std::thread::spawn(move || {
                    let mut s = Store::open_with(&store, &key, opts()).unwrap();
                    for i in 0..10 {
                        s.set(&format!("{prefix}{i}"), val(b"v")).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let s = open(&fx).unwrap();
        assert_eq!(s.list().len(), 20);
        s.forget_cached_key();
    }

    #[test]
    fn provider_fetches_by_path_and_key() {
        let fx = fixture();
        let mut s = create(&fx);
        s.set("db", val(br#"{"password":"pw","port":5432}"#))
            .unwrap();
        s.set("db", val(br#"{"password":"pw2","port":5432}"#))
            .unwrap();
        let settings = serde_json::from_value(serde_json::json!({
            "path": fx.store,
            "key_file": fx.key,
        }))
        .unwrap();
        let p = LocalProvider::new("local", settings);
        let req = |path: &str, key: Option<&str>, version: Option<&str>| FetchRequest {
            path: path.into(),
            key: key.map(Into::into),
            version: version.map(Into::into),
            workload: None,
        };
        let f = p.fetch(&req("db", Some("password"), None)).unwrap();
        assert_eq!(
            (f.value.expose(), f.version.as_deref()),
            (&b"pw2"[..], Some("2"))
        );
        let f = p.fetch(&req("db", None, Some("2"))).unwrap();
        assert_eq!(f.value.expose(), br#"{"password":"pw2","port":5432}"#);
        // A later write is seen by the same provider.
        s.set("db", val(br#"{"password":"pw3"}"#)).unwrap();
        let f = p.fetch(&req("db", Some("password"), None)).unwrap();
        assert_eq!(
            (f.value.expose(), f.version.as_deref()),
            (&b"pw3"[..], Some("3"))
        );

        let err = p.fetch(&req("nope", None, None)).unwrap_err();
        assert!(matches!(err, ProviderError::NotFound { .. }), "{err}");
        let err = p.fetch(&req("db", None, Some("1"))).unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
        let err = p.fetch(&req("db", Some("user"), None)).unwrap_err();
        assert!(matches!(err, ProviderError::Key { .. }), "{err}");
        assert!(!err.to_string().contains("pw"), "{err}");

        fs::set_permissions(&fx.key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = p.fetch(&req("db", None, None)).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&fx.key, fs::Permissions::from_mode(0o600)).unwrap();
        s.forget_cached_key();
    }

    #[test]
    fn settings_defaults_and_errors() {
        let s: LocalSettings = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(s.path, Path::new(DEFAULT_STORE_PATH));
        assert_eq!(s.key_file, Path::new(DEFAULT_KEY_FILE));
        let err = crate::config::Config::from_str_at(
            "provider: {type: local, path: 3}\n",
            Path::new("t.yaml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("provider.path"), "{err}");
    }

    #[test]
    fn errors_stay_small() {
        // StoreError travels inside ProviderError; keep Result<_, ProviderError> cheap.
        assert!(std::mem::size_of::<StoreError>() <= 64);
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

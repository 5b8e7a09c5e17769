//! The local provider: an AES-256-GCM encrypted store file (`format`, `crypto`), key derived
//! with PBKDF2-HMAC-SHA256 from a key file (`keyfile`); the derived key cached in the kernel
//! keyring (`keycache`), never on disk; writes under a lock, atomically (`lock`).

mod crypto;
mod format;
mod keycache;
mod keyfile;
mod lock;
mod store;

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::{FetchRequest, Fetched, Provider, ProviderError, Reason};
pub use crate::config::{DEFAULT_KEY_FILE, DEFAULT_STORE_PATH, LocalSettings};
use crate::secrets::RefError;
#[cfg(feature = "fuzzing")]
pub(crate) use crypto::{decode_with_key, seal_raw};
use format::FORMAT_VERSION;
#[cfg(feature = "fuzzing")]
pub(crate) use format::encode_plaintext;
use keyfile::MAX_KEY_FILE_LEN;
pub use store::{EntryInfo, KeySource, Store, StoreOptions};

/// The lowest PBKDF2 iteration count accepted, in new stores and in headers read from disk.
pub const MIN_ITERATIONS: u32 = 600_000;
/// The highest count accepted: a forged header must not be able to stall every open for hours.
pub const MAX_ITERATIONS: u32 = 10_000_000;
pub const DEFAULT_ITERATIONS: u32 = MIN_ITERATIONS;
/// How long a derived key stays in the kernel keyring.
pub const DEFAULT_KEY_CACHE_TTL: Duration = Duration::from_secs(3600);
/// Largest secret value the store accepts (the container tmpfs defaults to 1 MiB anyway).
pub const MAX_VALUE_LEN: usize = 1 << 20;

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

pub(super) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
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
pub(super) struct Stamp([i64; 14]);

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
        ProviderError::new("local", &self.name, Reason::Local(source))
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
            .ok_or_else(|| ProviderError::not_found("local", &self.name, &req.path))?;
        let version = version.to_string();
        if let Some(want) = req.version.as_deref()
            && want != version
        {
            let detail = format!(
                "{:?}: version {want} is not available; the local store keeps only the current version ({version})",
                req.path
            );
            return Err(ProviderError::unavailable("local", &self.name, detail));
        }
        let value = match req.key.as_deref() {
            None => value,
            Some(key) => value
                .select_key(key)
                .map_err(|source| ProviderError::key("local", &self.name, &req.path, source))?,
        };
        Ok(Fetched {
            value,
            version: Some(version),
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use std::path::PathBuf;

    use crate::secrets::SecretValue;
    use tempfile::TempDir;

    pub(super) struct Fixture {
        pub(super) dir: TempDir,
        pub(super) store: PathBuf,
        pub(super) key: PathBuf,
    }

    /// A temp dir with a 0600 key file (64 hex chars, as `dso init` writes) and no store yet.
    pub(super) fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("master.key");
        write_key(
            &key,
            b"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        );
        let store = dir.path().join("local.vault");
        Fixture { dir, store, key }
    }

    pub(super) fn write_key(path: &Path, bytes: &[u8]) {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    /// The keyring cache with a short life, so that test keys do not linger.
    pub(super) fn opts() -> StoreOptions {
        StoreOptions {
            key_cache_ttl: Some(Duration::from_secs(120)),
            ..StoreOptions::default()
        }
    }

    pub(super) fn create(fx: &Fixture) -> Store {
        Store::create_with(&fx.store, &fx.key, opts()).unwrap()
    }

    pub(super) fn open(fx: &Fixture) -> Result<Store, StoreError> {
        Store::open_with(&fx.store, &fx.key, opts())
    }

    pub(super) fn val(bytes: &[u8]) -> SecretValue {
        SecretValue::new(bytes.to_vec())
    }

    pub(super) fn dir_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
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
        assert!(matches!(err.reason, Reason::NotFound(_)), "{err}");
        let err = p.fetch(&req("db", None, Some("1"))).unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
        let err = p.fetch(&req("db", Some("user"), None)).unwrap_err();
        assert!(matches!(err.reason, Reason::Key { .. }), "{err}");
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
}

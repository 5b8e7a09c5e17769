//! The key file: opened once, checked on the open descriptor (regular, trusted owner, mode 0600
//! or stricter, size), read only when a key must be derived.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{StoreError, io_err};

pub(super) const MAX_KEY_FILE_LEN: usize = 4096;

/// What identifies a key file without reading it (for the keyring cache description).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) size: u64,
    pub(super) mtime_ns: i128,
}

/// An opened, checked key file. Its bytes are read only when a key must be derived.
pub(super) struct KeyFile {
    pub(super) path: PathBuf,
    pub(super) file: File,
    pub(super) id: FileId,
}

impl KeyFile {
    pub(super) fn open(path: &Path) -> Result<KeyFile, StoreError> {
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
    pub(super) fn read_secret(&self) -> Result<Zeroizing<Vec<u8>>, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::local::tests::{create, fixture, open, opts, write_key};
    use crate::providers::local::{Store, StoreError};
    use std::fs;

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
}

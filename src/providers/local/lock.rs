//! Writing the store: an exclusive lock on `<store>.lock` around every read-modify-write, and the
//! atomic replace (with fault injection points for the tests).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{StoreError, io_err};

/// An exclusive `flock` on `<store>.lock`, held until dropped (closing the descriptor releases
/// it, so there is no unlock that could fail).
pub(super) struct StoreLock {
    pub(super) _file: File,
}

impl StoreLock {
    pub(super) fn acquire(store: &Path) -> Result<StoreLock, StoreError> {
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
pub(super) enum Placement {
    /// Atomically replace the existing store.
    Replace,
    /// Create the store; fail if anything exists at the path.
    New,
}

/// Writes `bytes` to a temp file next to `path` (0600), fsyncs it, moves it into place and
/// fsyncs the directory ([`crate::atomic_file`]). On failure the old store is untouched and the
/// temp file is gone.
pub(super) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    placement: Placement,
) -> Result<(), StoreError> {
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
pub(super) enum FailPoint {
    TempCreated,
    TempWritten,
    BeforeRename,
}

#[cfg(test)]
thread_local! {
    pub(super) static FAIL_AT: std::cell::Cell<Option<FailPoint>> = const { std::cell::Cell::new(None) };
}

/// Fault injection for the tests of the atomic write; a no-op outside tests.
pub(super) fn fail_point(_at: FailPoint) -> io::Result<()> {
    #[cfg(test)]
    if FAIL_AT.with(|f| f.get()) == Some(_at) {
        return Err(io::Error::other(format!("injected failure at {_at:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::local::Store;
    use crate::providers::local::tests::{create, dir_names, fixture, open, opts, val};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

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
}

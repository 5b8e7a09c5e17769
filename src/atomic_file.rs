//! Replacing a file atomically: a temp file in the target's directory (`tempfile`: O_EXCL, a
//! random dot-name, so never through a planted symlink), filled, renamed over the target. A
//! reader sees the old file or the new one, never a torn one; on failure the temp file is gone.

use std::ffi::OsString;
use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// How [`write`] and [`write_with`] create and place the file.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The new file's exact mode (the umask does not narrow it).
    pub mode: u32,
    /// Owner (uid, gid), set before any byte is written.
    pub owner: Option<(u32, u32)>,
    /// fsync the file before the rename and the directory after it: for what must survive a
    /// crash (stores, daemon.json, dso.yaml). Records that live no longer than a boot skip it.
    pub durable: bool,
    /// Fail with `AlreadyExists` instead of replacing a file that is there.
    pub no_clobber: bool,
}

impl Options {
    /// `mode`, owner unchanged, no fsync, replacing.
    pub const fn new(mode: u32) -> Options {
        Options {
            mode,
            owner: None,
            durable: false,
            no_clobber: false,
        }
    }
}

/// Writes `bytes` to `path` atomically (see the module docs).
pub fn write(path: &Path, bytes: &[u8], opts: Options) -> io::Result<()> {
    write_with(path, opts, |f| f.write_all(bytes))
}

/// As [`write`], the content written by `fill` into the temp file.
pub fn write_with(
    path: &Path,
    opts: Options,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(Permissions::from_mode(opts.mode))
        .tempfile_in(dir)?;
    let f = tmp.as_file_mut();
    if let Some((uid, gid)) = opts.owner {
        std::os::unix::fs::fchown(&*f, Some(uid), Some(gid))?;
    }
    // The umask may have narrowed the mode, and chown clears set-id bits: set it exactly.
    f.set_permissions(Permissions::from_mode(opts.mode))?;
    fill(f)?;
    if opts.durable {
        f.sync_all()?;
    }
    let placed = if opts.no_clobber {
        tmp.persist_noclobber(path)
    } else {
        tmp.persist(path)
    };
    placed.map_err(|e| e.error)?;
    if opts.durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_with_the_exact_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        fs::write(&path, b"old").unwrap();
        let opts = Options {
            durable: true,
            ..Options::new(0o640)
        };
        write(&path, b"new", opts).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert_eq!(names(dir.path()), ["f.json"]);
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"old").unwrap();
        let err = write_with(&path, Options::new(0o600), |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("injected"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "injected");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["f"]);
    }

    #[test]
    fn no_clobber_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"old").unwrap();
        let opts = Options {
            no_clobber: true,
            ..Options::new(0o600)
        };
        let err = write(&path, b"new", opts).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["f"]);
        let fresh = dir.path().join("g");
        write(&fresh, b"new", opts).unwrap();
        assert_eq!(fs::read(&fresh).unwrap(), b"new");
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let path = dir.path().join("f");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write(&path, b"new", Options::new(0o600)).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(!fs::symlink_metadata(&path).unwrap().is_symlink());
    }
}

//! Files dso trusts: dso.yaml, the dso-init binary (`runtime.init_path`), key and credential
//! files. Whoever can write one of them controls dso: points it at their own provider, runs
//! their binary as PID 1 in every env-ref container, or swaps a key. So each must be owned by
//! root or by the user dso runs as, and must not be writable by group or others; a key file
//! must not even be readable by them. The check is made on the open descriptor's metadata where
//! the file is read (the file checked is the file used), at create, in the agent and by
//! `dso doctor`, with the same messages.
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How a file is used, which decides what others may do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Read for what it says (dso.yaml) or run (dso-init): others must not write it.
    Trusted,
    /// A secret (a key, a token): others must neither write nor read it.
    Secret,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Untrusted {
    #[error(
        "{what} {path} is owned by uid {uid}, neither root nor this user (uid {me}); refusing it (fix: chown root {path})"
    )]
    Owner {
        what: String,
        path: PathBuf,
        uid: u32,
        me: u32,
    },
    #[error(
        "{what} {path} has mode {mode:04o}, writable by group or others; refusing it (fix: chmod go-w {path})"
    )]
    Writable {
        what: String,
        path: PathBuf,
        mode: u32,
    },
    #[error(
        "{what} {path} has mode {mode:04o}, readable by group or others; refusing it (fix: chmod 600 {path})"
    )]
    Readable {
        what: String,
        path: PathBuf,
        mode: u32,
    },
}

/// Checks owner and mode of a file (or directory) `what` at `path` from its metadata.
pub fn check(meta: &Metadata, path: &Path, what: &str, usage: Use) -> Result<(), Untrusted> {
    check_as(
        meta.uid(),
        meta.mode(),
        nix::unistd::geteuid().as_raw(),
        path,
        what,
        usage,
    )
}

fn check_as(
    uid: u32,
    mode: u32,
    me: u32,
    path: &Path,
    what: &str,
    usage: Use,
) -> Result<(), Untrusted> {
    let mode = mode & 0o7777;
    if uid != 0 && uid != me {
        return Err(Untrusted::Owner {
            what: what.to_string(),
            path: path.to_path_buf(),
            uid,
            me,
        });
    }
    if mode & 0o022 != 0 {
        return Err(Untrusted::Writable {
            what: what.to_string(),
            path: path.to_path_buf(),
            mode,
        });
    }
    if usage == Use::Secret && mode & 0o077 != 0 {
        return Err(Untrusted::Readable {
            what: what.to_string(),
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(uid: u32, mode: u32, me: u32, usage: Use) -> Result<(), Untrusted> {
        check_as(uid, mode, me, Path::new("/f"), "file", usage)
    }

    #[test]
    fn owner_must_be_root_or_this_user() {
        assert_eq!(at(0, 0o644, 0, Use::Trusted), Ok(()));
        assert_eq!(at(1000, 0o644, 1000, Use::Trusted), Ok(()));
        assert_eq!(at(0, 0o644, 1000, Use::Trusted), Ok(()));
        let err = at(1000, 0o644, 0, Use::Trusted).unwrap_err();
        assert_eq!(
            err.to_string(),
            "file /f is owned by uid 1000, neither root nor this user (uid 0); refusing it (fix: chown root /f)"
        );
    }

    #[test]
    fn group_or_other_write_is_refused() {
        for mode in [0o664, 0o646, 0o777, 0o100666] {
            let err = at(0, mode, 0, Use::Trusted).unwrap_err();
            assert!(matches!(err, Untrusted::Writable { .. }), "{mode:o}");
            assert!(err.to_string().contains("chmod go-w /f"), "{err}");
        }
    }

    #[test]
    fn secrets_must_not_be_readable_by_others() {
        assert_eq!(at(0, 0o600, 0, Use::Secret), Ok(()));
        assert_eq!(at(0, 0o400, 0, Use::Secret), Ok(()));
        for mode in [0o640, 0o604, 0o644] {
            let err = at(0, mode, 0, Use::Secret).unwrap_err();
            assert!(matches!(err, Untrusted::Readable { .. }), "{mode:o}");
        }
        assert_eq!(at(0, 0o644, 0, Use::Trusted), Ok(()));
    }
}

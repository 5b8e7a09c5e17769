//! Writing secret files into a created container. The container's root is opened through
//! `/proc/<pid>/root` and the secrets dir is resolved *inside* it (pathrs: openat2
//! `RESOLVE_IN_ROOT`), so a symlink planted by the image can never lead a write onto the host.
//! The dir must be a tmpfs; each file is written under a temp name and renamed into place, so a
//! reader sees the old value or the new one, never a torn one.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use pathrs::Root;
use pathrs::flags::OpenFlags;

use crate::secrets::SecretValue;

const TMPFS_MAGIC: i64 = 0x0102_1994;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("cannot open the root of container process {pid}: {source}")]
    Root {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot resolve {dir} inside the container: {source}")]
    Resolve {
        dir: String,
        #[source]
        source: pathrs::error::Error,
    },
    #[error("{dir} inside the container is not a tmpfs; refusing to write secrets to it")]
    NotTmpfs { dir: String },
    #[error(
        "{dir} inside the container is no longer the tmpfs dso mounted at create (device {found_dev}, inode {found_ino} instead of {dev}, {ino}: the container's init moved to another mount); refusing to write secrets to it"
    )]
    Moved {
        dir: String,
        dev: u64,
        ino: u64,
        found_dev: u64,
        found_ino: u64,
    },
    #[error("cannot write secret file {name:?} in {dir}: {source}")]
    Write {
        dir: String,
        name: String,
        #[source]
        source: std::io::Error,
    },
}

pub use crate::state::MountIdentity;

/// One file to put in the secrets dir.
pub struct SecretFile<'a> {
    pub name: &'a str,
    pub value: &'a SecretValue,
    /// Host uid/gid (already mapped through the container's user namespace, if any).
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// The secrets dir of a running (created) container, opened safely.
pub struct SecretsDir {
    fd: OwnedFd,
    dir: String,
    /// The tmpfs belongs to a user namespace where the host's root has no id (learnt on the
    /// first write).
    in_userns: std::cell::Cell<bool>,
}

impl SecretsDir {
    /// Opens `secrets_dir` inside the root of process `pid` and checks it is a tmpfs.
    pub fn open(pid: i32, secrets_dir: &str) -> Result<SecretsDir, InjectError> {
        // /proc/<pid>/root is a magic link into the container's mount namespace: it is opened
        // (followed) here, once, and everything below is resolved relative to that handle.
        let root_fd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(format!("/proc/{pid}/root"))
            .map_err(|source| InjectError::Root { pid, source })?;
        Self::open_in(&Root::from_fd(root_fd), secrets_dir)
    }

    /// Opens `secrets_dir` inside an already opened root.
    pub fn open_in(root: &Root, secrets_dir: &str) -> Result<SecretsDir, InjectError> {
        let resolve_err = |source| InjectError::Resolve {
            dir: secrets_dir.to_string(),
            source,
        };
        // Resolved and opened in one openat2 (a resolve and a reopen would go through procfs).
        let file = root
            .open_subpath(
                secrets_dir,
                OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY | OpenFlags::O_CLOEXEC,
            )
            .map_err(resolve_err)?;
        let fd = OwnedFd::from(file);
        #[allow(clippy::unnecessary_cast)] // f_type is narrower on 32-bit targets
        if !rustix::fs::fstatfs(&fd).is_ok_and(|st| st.f_type as i64 == TMPFS_MAGIC) {
            return Err(InjectError::NotTmpfs {
                dir: secrets_dir.to_string(),
            });
        }
        Ok(SecretsDir {
            fd,
            dir: secrets_dir.to_string(),
            in_userns: std::cell::Cell::new(false),
        })
    }

    /// The identity of the opened dir (see [`MountIdentity`]).
    pub fn identity(&self) -> Result<MountIdentity, InjectError> {
        let st = rustix::fs::fstat(&self.fd).map_err(|e| InjectError::Write {
            dir: self.dir.clone(),
            name: ".".to_string(),
            source: e.into(),
        })?;
        Ok(MountIdentity {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    /// Fails unless the opened dir is the one recorded at create.
    pub fn require(&self, want: &MountIdentity) -> Result<(), InjectError> {
        let found = self.identity()?;
        if found != *want {
            return Err(InjectError::Moved {
                dir: self.dir.clone(),
                dev: want.dev,
                ino: want.ino,
                found_dev: found.dev,
                found_ino: found.ino,
            });
        }
        Ok(())
    }

    /// Writes one file: temp name (O_EXCL, O_NOFOLLOW), owner and mode set before any byte is
    /// written, then renamed over `name` (rename replaces a planted symlink; it never follows it).
    ///
    /// A tmpfs mounted inside a container's user namespace (`--userns-remap`) belongs to that
    /// namespace, where the host's root has no id: creating or renaming into it then fails
    /// with EOVERFLOW. The write is then done as the file's future owner (host ids of the
    /// container's ids, mapped by construction; see [`as_fs_ids`]), and so are the next ones.
    pub fn write(&self, file: &SecretFile<'_>) -> Result<(), InjectError> {
        let tmp = format!("{}{:08x}", temp_prefix(file.name), random_u32());
        self.place(file, Some(&tmp))
    }

    /// Writes a file that is not there yet, straight under its name (O_EXCL, O_NOFOLLOW: an
    /// entry already there, a planted symlink included, is an error), owner and mode set
    /// before any byte is written. For a create's injection only: its tmpfs is new and
    /// nothing in the container runs before runc's start, so no reader can see a file half
    /// written, and a failed create deletes the container. The ids are handled as in
    /// [`Self::write`].
    pub fn create(&self, file: &SecretFile<'_>) -> Result<(), InjectError> {
        self.place(file, None)
    }

    /// [`Self::write`] (through the temp file `tmp`) or [`Self::create`] (`None`).
    fn place(&self, file: &SecretFile<'_>, tmp: Option<&str>) -> Result<(), InjectError> {
        let werr = |source| InjectError::Write {
            dir: self.dir.clone(),
            name: file.name.to_string(),
            source,
        };
        let c_string = |s: &str| CString::new(s).map_err(|e| werr(std::io::Error::other(e)));
        let tmp_c = tmp.map(c_string).transpose()?;
        let name_c = c_string(file.name)?;
        let attempt = || self.write_as_is(file, tmp_c.as_ref(), &name_c);
        if self.in_userns.get() {
            return as_fs_ids(file.uid, file.gid, attempt).map_err(werr);
        }
        match attempt() {
            Err(e) if e.raw_os_error() == Some(libc::EOVERFLOW) => {
                self.in_userns.set(true);
                as_fs_ids(file.uid, file.gid, attempt).map_err(werr)
            }
            other => other.map_err(werr),
        }
    }

    /// One attempt of [`Self::place`] with the thread's current ids; no file is left when it
    /// fails.
    fn write_as_is(
        &self,
        file: &SecretFile<'_>,
        tmp_c: Option<&CString>,
        name_c: &CString,
    ) -> std::io::Result<()> {
        use rustix::fs::{AtFlags, Mode, OFlags};
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let created = tmp_c.unwrap_or(name_c).as_c_str();
        let fd = rustix::fs::openat(
            &self.fd,
            created,
            flags | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )?;
        let mut f = File::from(fd);
        let result = (|| -> std::io::Result<()> {
            nix::unistd::fchown(f.as_raw_fd(), Some(file.uid.into()), Some(file.gid.into()))
                .map_err(std::io::Error::from)?;
            nix::sys::stat::fchmod(
                f.as_raw_fd(),
                nix::sys::stat::Mode::from_bits_truncate(file.mode),
            )
            .map_err(std::io::Error::from)?;
            f.write_all(file.value.expose())?;
            if let Some(tmp_c) = tmp_c {
                rustix::fs::renameat(&self.fd, tmp_c.as_c_str(), &self.fd, name_c.as_c_str())?;
            }
            Ok(())
        })();
        drop(f);
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, created, AtFlags::empty());
        }
        result
    }
}

/// Runs `f` with this thread's filesystem uid and gid set to `uid`/`gid`, and the
/// filesystem capabilities (which the kernel drops from the effective set when the fsuid leaves
/// 0) raised again from the permitted set, so that directory permissions still do not stand in
/// the way. Per thread: other threads of the agent are not affected. Both ids are put back
/// before returning, whatever `f` did; leaving fsuid 0 restores the capabilities.
fn as_fs_ids<T>(uid: u32, gid: u32, f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    let old_gid = nix::unistd::setfsgid(gid.into());
    let old_uid = nix::unistd::setfsuid(uid.into());
    let result = raise_effective_caps().and_then(|()| f());
    nix::unistd::setfsuid(old_uid);
    nix::unistd::setfsgid(old_gid);
    result
}

/// Sets this thread's effective capabilities to its permitted ones (capget/capset, v3).
fn raise_effective_caps() -> std::io::Result<()> {
    let mut sets = rustix::thread::capabilities(None)?;
    sets.effective = sets.permitted;
    Ok(rustix::thread::set_capabilities(None, sets)?)
}

/// Temp files of `name` are `.<name>~<8 hex>`: `~` is never in a secret name (see
/// `validate_name`), so such an entry can only be a writer's temp file.
fn temp_prefix(name: &str) -> String {
    format!(".{name}~")
}

impl SecretsDir {
    /// Removes temp files left by a writer that died between creating its temp file and
    /// renaming it (the agent killed mid-rotation): those of `name`, or with `None` those of
    /// any secret. Rotation calls it for a name before rewriting it, and the agent for every
    /// container when it starts; create does not (its tmpfs is new). A concurrent writer of
    /// the same name (there is none: the agent rotates serially, and create runs before the
    /// container is known to it) would only see its rename fail, never publish a torn file.
    pub fn sweep_stale_temps(&self, name: Option<&str>) -> Result<usize, InjectError> {
        let werr = |source| InjectError::Write {
            dir: self.dir.clone(),
            name: name.unwrap_or("*").to_string(),
            source,
        };
        let mut dir = nix::dir::Dir::openat(
            Some(self.fd.as_raw_fd()),
            ".",
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| werr(std::io::Error::from(e)))?;
        let mut stale = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| werr(std::io::Error::from(e)))?;
            if is_temp_name(entry.file_name().to_bytes(), name) {
                stale.push(entry.file_name().to_owned());
            }
        }
        for n in &stale {
            match rustix::fs::unlinkat(&self.fd, n.as_c_str(), rustix::fs::AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(werr(e.into())),
            }
        }
        Ok(stale.len())
    }
}

/// `.<name>~<8 hex>` (see [`temp_prefix`]), for `name`, or with `None` for any valid name.
fn is_temp_name(entry: &[u8], name: Option<&str>) -> bool {
    let Some((head, hex)) = entry.len().checked_sub(8).map(|at| entry.split_at(at)) else {
        return false;
    };
    let Some(middle) = head.strip_prefix(b".").and_then(|h| h.strip_suffix(b"~")) else {
        return false;
    };
    hex.iter().all(u8::is_ascii_hexdigit)
        && match name {
            Some(n) => middle == n.as_bytes(),
            None => {
                !middle.is_empty()
                    && middle
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            }
        }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // A collision only makes O_EXCL fail, which is reported; no need for more than best effort.
    let _ = getrandom::getrandom(&mut b);
    u32::from_ne_bytes(b) ^ std::process::id()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// Needs a tmpfs: /dev/shm is one on Linux hosts.
    fn shm_root() -> Option<(tempfile::TempDir, Root)> {
        let dir = tempfile::tempdir_in("/dev/shm").ok()?;
        let root = Root::open(dir.path()).ok()?;
        Some((dir, root))
    }

    #[test]
    fn stale_temps_of_a_name_are_swept_and_nothing_else() {
        let Some((dir, root)) = shm_root() else {
            eprintln!("skip: no /dev/shm tmpfs");
            return;
        };
        let d = dir.path().join("secrets");
        std::fs::create_dir(&d).unwrap();
        // Left by a writer killed between create and rename, and neighbours that must stay:
        // another secret's temp, a secret whose name merely looks like a temp, and the file.
        for n in [
            ".db~0badf00d",
            ".db~deadbeef",
            ".api~0badf00d",
            ".db.tmp-0badf00d",
            "db",
        ] {
            std::fs::write(d.join(n), b"x").unwrap();
        }
        let sd = SecretsDir::open_in(&root, "/secrets").unwrap();
        assert_eq!(sd.sweep_stale_temps(Some("db")).unwrap(), 2);
        let mut names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".api~0badf00d", ".db.tmp-0badf00d", "db"]);
        assert_eq!(sd.sweep_stale_temps(Some("db")).unwrap(), 0);
        // Any secret's (the agent at start): the other temp goes, nothing else.
        std::fs::write(d.join(".x~12"), b"x").unwrap();
        assert_eq!(sd.sweep_stale_temps(None).unwrap(), 1);
        let mut names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".db.tmp-0badf00d", ".x~12", "db"]);
    }

    /// A tmpfs root with an empty `/secrets` where a symlink named `planted` points at a host
    /// file outside (returned, to check it stays untouched), and the dir opened.
    fn planted_symlink(
        planted: &str,
    ) -> Option<(tempfile::TempDir, tempfile::NamedTempFile, SecretsDir)> {
        let (dir, root) = shm_root()?;
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        let link = dir.path().join("secrets").join(planted);
        std::os::unix::fs::symlink(outside.path(), link).unwrap();
        let sd = SecretsDir::open_in(&root, "/secrets").unwrap();
        Some((dir, outside, sd))
    }

    #[test]
    fn writes_atomically_and_replaces_symlinks() {
        // A symlink planted at the file name must be replaced, not followed.
        let Some((dir, outside, sd)) = planted_symlink("s") else {
            eprintln!("skip: no /dev/shm tmpfs");
            return;
        };
        let value = SecretValue::new(b"v1\n".to_vec());
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        sd.write(&SecretFile {
            name: "s",
            value: &value,
            uid,
            gid,
            mode: 0o400,
        })
        .unwrap();
        let meta = std::fs::symlink_metadata(dir.path().join("secrets/s")).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o400);
        assert_eq!(meta.uid(), uid);
        assert_eq!(
            std::fs::read(dir.path().join("secrets/s")).unwrap(),
            b"v1\n"
        );
        assert_eq!(std::fs::read(outside.path()).unwrap(), b"");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("secrets"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
    }

    #[test]
    fn create_writes_new_files_only_and_follows_no_symlink() {
        let Some((dir, outside, sd)) = planted_symlink("planted") else {
            eprintln!("skip: no /dev/shm tmpfs");
            return;
        };
        let value = SecretValue::new(b"v1\n".to_vec());
        let (uid, gid) = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let file = |name| SecretFile {
            name,
            value: &value,
            uid,
            gid,
            mode: 0o440,
        };
        sd.create(&file("s")).unwrap();
        let meta = std::fs::symlink_metadata(dir.path().join("secrets/s")).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o440);
        assert_eq!(
            std::fs::read(dir.path().join("secrets/s")).unwrap(),
            b"v1\n"
        );
        // Not twice, and never through a symlink: both are errors, and nothing is written.
        assert!(sd.create(&file("s")).is_err());
        assert!(sd.create(&file("planted")).is_err());
        assert_eq!(std::fs::read(outside.path()).unwrap(), b"");
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join("secrets"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["planted", "s"]);
    }

    #[test]
    fn symlinked_dir_resolves_inside_root() {
        let Some((dir, root)) = shm_root() else {
            eprintln!("skip: no /dev/shm tmpfs");
            return;
        };
        // /run -> /elsewhere (absolute): must resolve to <root>/elsewhere, not the host's.
        std::fs::create_dir_all(dir.path().join("elsewhere/secrets")).unwrap();
        std::os::unix::fs::symlink("/elsewhere", dir.path().join("run")).unwrap();
        let sd = SecretsDir::open_in(&root, "/run/secrets").unwrap();
        let value = SecretValue::new(b"x".to_vec());
        let (uid, gid) = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        sd.write(&SecretFile {
            name: "a",
            value: &value,
            uid,
            gid,
            mode: 0o400,
        })
        .unwrap();
        assert!(dir.path().join("elsewhere/secrets/a").exists());
        assert!(!std::path::Path::new("/elsewhere").exists());
        // ../ escapes are clamped to the root too.
        std::fs::remove_file(dir.path().join("run")).unwrap();
        std::os::unix::fs::symlink("../../../../elsewhere", dir.path().join("run")).unwrap();
        assert!(SecretsDir::open_in(&root, "/run/secrets").is_ok());
    }

    #[test]
    fn refuses_non_tmpfs() {
        // The source tree is on a disk filesystem, not a tmpfs.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        std::fs::create_dir(dir.path().join("s")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        assert!(matches!(
            SecretsDir::open_in(&root, "/s"),
            Err(InjectError::NotTmpfs { .. })
        ));
    }
}

//! Small caches in the kernel user keyring of the calling uid: the local store's derived key,
//! and the configs that passed validation (with the document read from them). Entries have a
//! timeout and are readable by their possessor and the uid only. Every failure (no keyring in
//! this sandbox, EPERM from seccomp, quota) reads as "not cached": callers then do the work
//! again.
//!
//! The user keyring is not namespaced: any uid-0 process of the initial user namespace whose
//! seccomp profile allows `keyctl` (a privileged or `seccomp=unconfined` container, a
//! Kubernetes pod by default) can read and write root's entries. So dso's entries are sealed
//! ([`store_sealed`]: AES-256-GCM, the description as AAD) with a random wrapping key kept in a
//! root-only file on the host's tmpfs ([`wrap_key_path`], 0600, recreated after a reboot): what
//! such a process reads is useless, and what it writes is refused, without a file it cannot
//! reach.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use linux_keyutils::{KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};
use zeroize::Zeroizing;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Reads the payload of `description`; `None` unless it is there and at most `max` bytes long.
fn read(description: &str, max: usize) -> Option<Zeroizing<Vec<u8>>> {
    let ring = KeyRing::from_special_id(KeyRingIdentifier::User, false).ok()?;
    let key = ring.search(description).ok()?;
    // One spare byte to notice a payload too long.
    let mut buf = Zeroizing::new(vec![0u8; max + 1]);
    let len = key.read(&mut *buf).ok()?;
    buf.truncate(len);
    (len <= max).then_some(buf)
}

/// Adds `payload` under `description` to the user keyring with a timeout. It is created in the
/// process keyring first, so that this process possesses it (and may set its timeout and
/// permissions) even when the user keyring is not linked into its session keyring (systemd
/// services); only then is it linked into the user keyring. False if it could not be stored.
fn store(description: &str, payload: &[u8], ttl: Duration) -> bool {
    let stored = (|| -> Result<(), linux_keyutils::KeyError> {
        let process = KeyRing::from_special_id(KeyRingIdentifier::Process, true)?;
        let user = KeyRing::from_special_id(KeyRingIdentifier::User, true)?;
        let k = process.add_key(description, payload)?;
        let perms = KeyPermissionsBuilder::builder()
            .posessor(Permission::ALL)
            .user(
                Permission::VIEW
                    | Permission::READ
                    | Permission::WRITE
                    | Permission::SEARCH
                    | Permission::SETATTR,
            )
            .build();
        let secs = usize::try_from(ttl.as_secs().max(1)).unwrap_or(usize::MAX);
        let linked = k
            .set_timeout(secs)
            .and_then(|()| k.set_perms(perms))
            .and_then(|()| user.link_key(k));
        let _ = process.unlink_key(k);
        if linked.is_err() {
            let _ = k.invalidate();
        }
        linked
    })();
    stored.is_ok()
}

/// Removes `description` from the user keyring, if it is there.
pub fn forget(description: &str) {
    if let Ok(ring) = KeyRing::from_special_id(KeyRingIdentifier::User, false)
        && let Ok(key) = ring.search(description)
    {
        let _ = key.invalidate();
    }
}

/// Where the wrapping key lives: `/run/dso/keyring-wrap` for root, else
/// `$XDG_RUNTIME_DIR/dso-keyring-wrap` (no cache without one).
pub fn wrap_key_path() -> Option<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Some(PathBuf::from("/run/dso/keyring-wrap"));
    }
    std::env::var_os("XDG_RUNTIME_DIR").map(|d| PathBuf::from(d).join("dso-keyring-wrap"))
}

/// The wrapping key at `path`; made (32 random bytes, 0600, in a 0700 dir created only if
/// missing) when `create` and absent. `None` when it cannot be had or is not trusted.
pub fn wrap_key(path: &Path, create: bool) -> Option<Zeroizing<[u8; KEY_LEN]>> {
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

/// Adds `payload` sealed with the wrapping key (made if missing): nonce, ciphertext, tag.
pub fn store_sealed(description: &str, payload: &[u8], ttl: Duration) -> bool {
    let Some(wrap) = wrap_key_path().and_then(|p| wrap_key(&p, true)) else {
        return false;
    };
    let mut sealed = Zeroizing::new(vec![0u8; NONCE_LEN + payload.len() + TAG_LEN]);
    let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
    let (body, tag_out) = rest.split_at_mut(payload.len());
    body.copy_from_slice(payload);
    let sealed_ok = getrandom::getrandom(nonce).is_ok()
        && Aes256Gcm::new((&*wrap).into())
            .encrypt_in_place_detached((&*nonce).into(), description.as_bytes(), body)
            .map(|tag| tag_out.copy_from_slice(&tag))
            .is_ok();
    sealed_ok && store(description, &sealed, ttl)
}

/// The payload [`store_sealed`] stored under `description`, at most `max` bytes; `None` unless
/// it is there and opens with the wrapping key.
pub fn read_sealed(description: &str, max: usize) -> Option<Zeroizing<Vec<u8>>> {
    let wrap = wrap_key(&wrap_key_path()?, false)?;
    let mut sealed = read(description, NONCE_LEN + max + TAG_LEN)?;
    let body_len = sealed.len().checked_sub(NONCE_LEN + TAG_LEN)?;
    let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
    let (body, tag) = rest.split_at_mut(body_len);
    Aes256Gcm::new((&*wrap).into())
        .decrypt_in_place_detached(
            (&*nonce).into(),
            description.as_bytes(),
            body,
            (&*tag).into(),
        )
        .ok()?;
    Some(Zeroizing::new(body.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What another uid-0 process plants under a description dso uses is not taken: only what
    /// was sealed with the host's wrapping key, under that very description, opens.
    #[test]
    fn only_sealed_entries_open() {
        let desc = format!("dso:test-sealed:{}", std::process::id());
        if !store_sealed(&desc, b"c\x02", Duration::from_secs(30)) {
            return crate::test_support::skipped("kernel keyring not available here");
        }
        assert_eq!(
            read_sealed(&desc, 2).as_deref().map(|v| &v[..]),
            Some(&b"c\x02"[..])
        );
        assert!(read_sealed(&desc, 1).is_none(), "longer than asked");
        // Planted as plain bytes, or sealed for another description: refused.
        assert!(store(&desc, b"c\x01", Duration::from_secs(30)));
        assert!(read_sealed(&desc, 64).is_none());
        let other = format!("{desc}:other");
        assert!(store_sealed(&other, b"ok", Duration::from_secs(30)));
        let mut moved = read(&other, 64).expect("raw entry");
        assert!(store(&desc, &moved, Duration::from_secs(30)));
        assert!(
            read_sealed(&desc, 64).is_none(),
            "sealed for another description"
        );
        moved.iter_mut().for_each(|b| *b = 0);
        forget(&desc);
        forget(&other);
    }
}

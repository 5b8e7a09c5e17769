//! The derived-key cache in the kernel user keyring, sealed. The user keyring is not
//! namespaced: any uid-0 process of the initial user namespace whose seccomp profile allows
//! `keyctl` (a privileged or `seccomp=unconfined` container, a Kubernetes pod by default) can
//! read root's entries. So the entry is the key sealed (AES-256-GCM, the description as AAD)
//! with a random wrapping key kept in a root-only file on the host's tmpfs
//! ([`wrap_key_path`], 0600, recreated after a reboot): what such a process reads is useless
//! without a file it cannot reach, and a stolen store backup stays protected by PBKDF2
//! (issue 14 point 1).
//! Every failure (no keyring in this sandbox, EPERM from seccomp, quota) just means "derive the
//! key again" (see [`crate::keyring`]).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use zeroize::Zeroizing;

use sha2::{Digest, Sha256};

use super::crypto::KEY_LEN;
use super::format::Header;
use super::keyfile::FileId;

pub(super) const NONCE_LEN: usize = 12;
pub(super) const TAG_LEN: usize = 16;
pub(super) const SEALED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

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
pub(super) fn wrap_key(path: &Path, create: bool) -> Option<Zeroizing<[u8; KEY_LEN]>> {
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

pub(super) const KEY_CACHE_PREFIX: &str = "dso:local:";

/// The keyring description of a store's derived key. It hashes only public facts (where the
/// store is, its KDF parameters, which key file), nothing that would help guess the key file's
/// contents.
pub(super) fn cache_description(path: &Path, header: &Header, key_file: FileId) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::local::crypto::open_sealed;
    use crate::providers::local::format::SALT_LEN;
    use crate::providers::local::keycache;
    use crate::providers::local::keyfile::KeyFile;
    use crate::providers::local::tests::{create, fixture, open, opts, val};
    use crate::providers::local::{KeySource, Store, StoreOptions};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

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

    fn keyring_available() -> bool {
        KeyRingProbe::available()
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
}

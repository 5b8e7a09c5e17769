//! The derived-key cache in the kernel user keyring, sealed ([`crate::keyring::store_sealed`]):
//! what another uid-0 process reads from the entry is useless without the host's wrapping-key
//! file, and a stolen store backup stays protected by PBKDF2 (issue 14 point 1).
//! Every failure (no keyring in this sandbox, EPERM from seccomp, quota) just means "derive the
//! key again" (see [`crate::keyring`]).

use std::fs;
use std::path::Path;
use std::time::Duration;

use zeroize::Zeroizing;

use sha2::{Digest, Sha256};

use super::crypto::KEY_LEN;
use super::format::Header;
use super::keyfile::FileId;

pub(super) fn lookup(description: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let opened = crate::keyring::read_sealed(description, KEY_LEN)?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    (opened.len() == KEY_LEN).then(|| out.copy_from_slice(&opened))?;
    Some(out)
}

pub(super) fn store(description: &str, key: &[u8; KEY_LEN], ttl: Duration) {
    crate::keyring::store_sealed(description, key, ttl);
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
    use crate::providers::local::tests::{Fixture, create, fixture, open, opts, val};
    use crate::providers::local::{KeySource, Store, StoreOptions};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// A store with one secret, whose derived key is now cached: the store, its file's bytes
    /// and header, and the cache's description. None (the test skipped) without a keyring.
    fn cached_store() -> Option<(Fixture, Store, Vec<u8>, Header, String)> {
        let desc = format!("dso:test-probe:{}", std::process::id());
        keycache::store(&desc, &[7u8; KEY_LEN], Duration::from_secs(5));
        let ok = keycache::lookup(&desc).is_some_and(|k| *k == [7u8; KEY_LEN]);
        keycache::forget(&desc);
        if !ok {
            crate::test_support::skipped("kernel keyring not available here");
            return None;
        }
        let fx = fixture();
        let mut s = create(&fx);
        s.set("a", val(b"v")).unwrap();
        let raw = fs::read(&fx.store).unwrap();
        let header = Header::parse(&fx.store, &raw).unwrap();
        let desc = cache_description(&fx.store, &header, KeyFile::open(&fx.key).unwrap().id);
        Some((fx, s, raw, header, desc))
    }

    #[test]
    fn keyring_cache_is_used_and_repaired() {
        let Some((fx, mut s, _, _, desc)) = cached_store() else {
            return;
        };
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
        let Some((fx, s, raw, header, desc)) = cached_store() else {
            return;
        };
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
        let wrap = crate::keyring::wrap_key_path().unwrap();
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

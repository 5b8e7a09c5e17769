//! Small caches in the kernel user keyring of the calling uid: the local store's derived key,
//! and the configs that passed validation (by digest, with the document read from them). Entries have a timeout and are readable
//! by their possessor and the uid only. Every failure (no keyring in this sandbox, EPERM from
//! seccomp, quota) reads as "not cached": callers then do the work again.

use std::time::Duration;

use linux_keyutils::{KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};
use zeroize::Zeroizing;

/// Reads the payload of `description`; `None` unless it is there and at most `max` bytes long.
pub fn read(description: &str, max: usize) -> Option<Zeroizing<Vec<u8>>> {
    let ring = KeyRing::from_special_id(KeyRingIdentifier::User, false).ok()?;
    let key = ring.search(description).ok()?;
    // One spare byte to notice a payload too long.
    let mut buf = Zeroizing::new(vec![0u8; max + 1]);
    let len = key.read(&mut *buf).ok()?;
    buf.truncate(len);
    (len <= max).then_some(buf)
}

/// Reads the payload of `description` into `out`; `None` unless it is there and exactly
/// `out.len()` bytes long.
pub fn read_exact(description: &str, out: &mut [u8]) -> Option<()> {
    let buf = read(description, out.len())?;
    (buf.len() == out.len()).then(|| out.copy_from_slice(&buf))
}

/// Adds `payload` under `description` to the user keyring with a timeout. It is created in the
/// process keyring first, so that this process possesses it (and may set its timeout and
/// permissions) even when the user keyring is not linked into its session keyring (systemd
/// services); only then is it linked into the user keyring. False if it could not be stored.
pub fn store(description: &str, payload: &[u8], ttl: Duration) -> bool {
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

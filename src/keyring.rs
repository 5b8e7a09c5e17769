//! Small caches in the kernel user keyring of the calling uid: the local store's derived key,
//! and the digests of configs that passed validation. Entries have a timeout and are readable
//! by their possessor and the uid only. Every failure (no keyring in this sandbox, EPERM from
//! seccomp, quota) reads as "not cached": callers then do the work again.

use std::time::Duration;

use linux_keyutils::{KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};
use zeroize::Zeroizing;

/// Reads the payload of `description` into `out`; `None` unless it is there and exactly
/// `out.len()` bytes long.
pub fn read_exact(description: &str, out: &mut [u8]) -> Option<()> {
    let ring = KeyRing::from_special_id(KeyRingIdentifier::User, false).ok()?;
    let key = ring.search(description).ok()?;
    // One spare byte to notice a payload of the wrong size.
    let mut buf = Zeroizing::new(vec![0u8; out.len() + 1]);
    let len = key.read(&mut *buf).ok()?;
    if len != out.len() {
        return None;
    }
    out.copy_from_slice(&buf[..len]);
    Some(())
}

/// Adds `payload` under `description` to the user keyring with a timeout. It is created in the
/// process keyring first, so that this process possesses it (and may set its timeout and
/// permissions) even when the user keyring is not linked into its session keyring (systemd
/// services); only then is it linked into the user keyring.
pub fn store(description: &str, payload: &[u8], ttl: Duration) {
    let _ = (|| -> Result<(), linux_keyutils::KeyError> {
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
}

/// Removes `description` from the user keyring, if it is there.
pub fn forget(description: &str) {
    if let Ok(ring) = KeyRing::from_special_id(KeyRingIdentifier::User, false)
        && let Ok(key) = ring.search(description)
    {
        let _ = key.invalidate();
    }
}

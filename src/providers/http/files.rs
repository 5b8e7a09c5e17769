//! Credential files (token, secret id, client secret, CA bundle, client key): checked for a
//! trusted owner and mode, read into zeroizing memory.

use std::path::Path;

use zeroize::Zeroizing;

use super::{ProviderError, read_zeroizing};

/// Reads a credential file (token, secret id, client secret): whole file, surrounding
/// whitespace trimmed, must not be empty. `setting` names the dso.yaml key for messages.
pub fn read_credential_file(
    kind: &'static str,
    provider: &str,
    setting: &str,
    path: &Path,
) -> Result<Zeroizing<String>, ProviderError> {
    let bytes = read_file(kind, provider, setting, path)?;
    let bad = |what: &str| {
        ProviderError::config(
            kind,
            provider,
            format!("{setting} {}: {what}", path.display()),
        )
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("not UTF-8 text"))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad("the file is empty"));
    }
    Ok(Zeroizing::new(trimmed.to_string()))
}

pub(super) fn read_file(
    kind: &'static str,
    provider: &str,
    setting: &str,
    path: &Path,
) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
    let bad = |e: std::io::Error| {
        ProviderError::config(kind, provider, format!("{setting} {}: {e}", path.display()))
    };
    let mut f = std::fs::File::open(path).map_err(bad)?;
    // Whoever can write a CA bundle, a client key or a token file can make dso trust their
    // server or act as them: owner root (or this user), not writable by group or others.
    let meta = f.metadata().map_err(bad)?;
    crate::trust::check(&meta, path, setting, crate::trust::Use::Trusted)
        .map_err(|e| ProviderError::config(kind, provider, e.to_string()))?;
    read_zeroizing(&mut f, 4096, 1 << 20).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14 point 10: a token file (or CA bundle, client key) that group or others can
    /// write is refused where it is read, with the fix in the message.
    #[test]
    fn credential_files_others_can_write_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "s.token\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ok = read_credential_file("vault", "v", "auth.token_file", &f).unwrap();
        assert_eq!(ok.as_str(), "s.token");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o620)).unwrap();
        let err = read_credential_file("vault", "v", "auth.token_file", &f).unwrap_err();
        let want = format!(
            "auth.token_file {} has mode 0620, writable by group or others; refusing it (fix: chmod go-w {})",
            f.display(),
            f.display()
        );
        assert!(err.to_string().contains(&want), "{err}");
    }
}

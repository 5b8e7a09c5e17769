//! Secret values and secret references: the zeroizing type every value lives in, and the
//! `dso://` / `dsofile://` reference syntax found in a container's env and annotations.

mod refs;

pub use refs::{
    ANNOTATION_PREFIX, CRI_CONTAINER_NAME, FILE_SCHEME, MAX_NAME_LEN, RefError, RefKind, RefSource,
    SCOPED_ANNOTATION_PREFIX, SecretRef, Target, collect_refs, has_refs, is_reference, parse_ref,
    validate_name,
};

use std::fmt;
use zeroize::Zeroizing;

/// A secret value. Zeroized on drop; `Debug` never shows the bytes; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn from_zeroizing(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }

    /// The bytes, for writing into the container. Keep the borrow short.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Picks `key` out of a JSON object value (`dso://vault/app/db#password`). A string field
    /// gives its text; any other JSON value gives its compact JSON form.
    pub fn select_key(&self, key: &str) -> Result<SecretValue, KeyError> {
        // serde_json copies strings it parses; those copies are dropped (not zeroized) by serde.
        // We keep the window small: the parsed tree lives only inside this function.
        let parsed: serde_json::Value =
            serde_json::from_slice(self.expose()).map_err(|_| KeyError::NotJson)?;
        let obj = parsed.as_object().ok_or(KeyError::NotJson)?;
        let field = obj
            .get(key)
            .ok_or_else(|| KeyError::Missing(key.to_string()))?;
        let bytes = match field {
            serde_json::Value::String(s) => s.as_bytes().to_vec(),
            other => serde_json::to_vec(other).map_err(|_| KeyError::NotJson)?,
        };
        Ok(SecretValue::new(bytes))
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("value is not a JSON object, so no key can be selected")]
    NotJson,
    #[error("JSON key {0:?} not found in the value")]
    Missing(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let v = SecretValue::new(b"hunter2".to_vec());
        assert_eq!(format!("{v:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&v)), "Some([redacted])");
    }

    #[test]
    fn select_key_picks_string_and_json() {
        let v = SecretValue::new(br#"{"password":"pw","port":5432}"#.to_vec());
        assert_eq!(v.select_key("password").unwrap().expose(), b"pw");
        assert_eq!(v.select_key("port").unwrap().expose(), b"5432");
        assert_eq!(
            v.select_key("user").unwrap_err(),
            KeyError::Missing("user".into())
        );
        assert_eq!(
            SecretValue::new(b"plain".to_vec())
                .select_key("x")
                .unwrap_err(),
            KeyError::NotJson
        );
    }
}

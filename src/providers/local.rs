//! The local provider: an AES-256-GCM encrypted store file, key derived with PBKDF2-HMAC-SHA256
//! from a key file; the derived key cached in the kernel keyring, never on disk.

use super::{FetchRequest, Fetched, Provider, ProviderError};
use crate::config::ProviderConfig;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not implemented yet")]
    Todo,
}

pub struct LocalProvider {
    name: String,
}

impl LocalProvider {
    pub fn from_config(name: &str, _cfg: &ProviderConfig) -> Result<Self, ProviderError> {
        Ok(Self {
            name: name.to_string(),
        })
    }
}

impl Provider for LocalProvider {
    fn name(&self) -> &str {
        &self.name
    }
    fn fetch(&self, _req: &FetchRequest) -> Result<Fetched, ProviderError> {
        Err(ProviderError::Local {
            kind: "local",
            provider: self.name.clone(),
            source: StoreError::Todo,
        })
    }
}

//! Secret providers: one trait, one module per backend. `build` turns a dso.yaml provider entry
//! into a live provider.

pub mod aws;
pub mod azure;
pub mod http;
pub mod local;
pub mod pool;
pub mod vault;

use crate::config::{Config, ProviderConfig, ProviderSettings};
use crate::secrets::SecretValue;

/// What to fetch: a path in the provider, an optional JSON key and an optional pinned version,
/// and for whom (`workload`, e.g. `docker:billing-api`): named in the User-Agent of every
/// request the provider makes for it (see [`fetch_for`]), which the provider's own audit keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchRequest {
    pub path: String,
    pub key: Option<String>,
    pub version: Option<String>,
    pub workload: Option<String>,
}

/// `prov.fetch(req)` with every HTTP request it makes attributed to `req.workload`
/// (User-Agent `dso/<version> (<workload>)`, see [`http::attributed`]).
pub fn fetch_for(prov: &dyn Provider, req: &FetchRequest) -> Result<Fetched, ProviderError> {
    http::attributed(req.workload.as_deref(), || prov.fetch(req))
}

/// `prov.version(req)`, attributed like [`fetch_for`].
pub fn version_for(
    prov: &dyn Provider,
    req: &FetchRequest,
) -> Result<Option<String>, ProviderError> {
    http::attributed(req.workload.as_deref(), || prov.version(req))
}

/// A fetched value and the provider's version of it (for change detection).
#[derive(Debug)]
pub struct Fetched {
    pub value: SecretValue,
    pub version: Option<String>,
}

/// A value issued for one container (a dynamic secret): which engine, where, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicRequest {
    pub engine: crate::config::Engine,
    pub mount: String,
    pub role: String,
    pub common_name: Option<String>,
    pub ttl: Option<std::time::Duration>,
    pub alt_names: Vec<String>,
    pub ip_sans: Vec<String>,
}

impl DynamicRequest {
    /// The request a dso.yaml secret stands for (`None` for a kv secret).
    pub fn for_secret(sc: &crate::config::SecretConfig) -> Option<Self> {
        if !sc.engine.is_dynamic() {
            return None;
        }
        Some(DynamicRequest {
            engine: sc.engine,
            mount: sc
                .mount
                .clone()
                .unwrap_or_else(|| sc.engine.as_str().to_string()),
            role: sc.role.clone().unwrap_or_default(),
            common_name: sc.common_name.clone(),
            ttl: sc.ttl,
            alt_names: sc.alt_names.clone(),
            ip_sans: sc.ip_sans.clone(),
        })
    }

    /// Where the value is issued from: `<mount>/creds/<role>` or `<mount>/issue/<role>`.
    pub fn path(&self) -> String {
        let op = match self.engine {
            crate::config::Engine::Pki => "issue",
            _ => "creds",
        };
        format!("{}/{op}/{}", self.mount.trim_matches('/'), self.role)
    }
}

/// An issued value and its lifetime.
#[derive(Debug)]
pub struct Issued {
    /// The whole value (database: `{"username","password"}` JSON; pki: the PEM bundle). The
    /// caller selects a part with [`select_issued`].
    pub value: SecretValue,
    /// The provider's lease id, when the value has a lease that can be renewed or revoked
    /// (database credentials). Never a credential itself.
    pub lease_id: Option<String>,
    /// How long the value is valid from now.
    pub ttl: std::time::Duration,
    pub renewable: bool,
    /// A label that names the issued value without revealing it (the database username, the
    /// certificate serial), for status and audit.
    pub label: Option<String>,
}

/// A renewed lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    pub ttl: std::time::Duration,
    pub renewable: bool,
}

/// The part of an issued value that `key` names (`None`: the whole value).
pub fn select_issued(
    engine: crate::config::Engine,
    value: &SecretValue,
    key: Option<&str>,
) -> Result<SecretValue, crate::secrets::KeyError> {
    match (engine, key) {
        (_, None) => Ok(value.clone()),
        (crate::config::Engine::Pki, Some(k)) => vault::pem_part(value, k),
        (_, Some(k)) => value.select_key(k),
    }
}

/// A backend. Implementations must never put a value or a credential in an error.
pub trait Provider: Send + Sync {
    /// The provider's name in dso.yaml (for messages).
    fn name(&self) -> &str;
    fn fetch(&self, req: &FetchRequest) -> Result<Fetched, ProviderError>;
    /// The current version, as cheaply as the backend allows. Default: fetch and drop the value.
    fn version(&self, req: &FetchRequest) -> Result<Option<String>, ProviderError> {
        self.fetch(req).map(|f| f.version)
    }
    /// Issues a new value for one container (dynamic secrets). Default: not supported.
    fn issue(&self, req: &DynamicRequest) -> Result<Issued, ProviderError> {
        Err(ProviderError::Config {
            kind: "provider",
            provider: self.name().to_string(),
            detail: format!("engine {} is not supported here", req.engine.as_str()),
        })
    }
    /// Renews a lease by `increment`.
    fn renew_lease(
        &self,
        lease_id: &str,
        increment: std::time::Duration,
    ) -> Result<LeaseGrant, ProviderError> {
        let _ = (lease_id, increment);
        Err(ProviderError::Config {
            kind: "provider",
            provider: self.name().to_string(),
            detail: "leases are not supported here".into(),
        })
    }
    /// Revokes a lease (the value stops working).
    fn revoke_lease(&self, lease_id: &str) -> Result<(), ProviderError> {
        let _ = lease_id;
        Err(ProviderError::Config {
            kind: "provider",
            provider: self.name().to_string(),
            detail: "leases are not supported here".into(),
        })
    }
}

/// Why a fetch failed. `Display` names the provider and the kind of failure, never a value.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{kind} {provider:?}: {path:?} not found")]
    NotFound {
        kind: &'static str,
        provider: String,
        path: String,
    },
    #[error("{kind} {provider:?}: permission denied: {detail}")]
    Denied {
        kind: &'static str,
        provider: String,
        detail: String,
    },
    #[error("{kind} {provider:?}: timed out after {seconds}s")]
    Timeout {
        kind: &'static str,
        provider: String,
        seconds: u64,
    },
    #[error("{kind} {provider:?}: {detail}")]
    Unavailable {
        kind: &'static str,
        provider: String,
        detail: String,
    },
    /// The TLS handshake failed: untrusted, expired or misnamed certificate, no common
    /// protocol version (TLS 1.2+ only), refused client certificate.
    #[error("{kind} {provider:?}: {detail}")]
    Tls {
        kind: &'static str,
        provider: String,
        detail: String,
    },
    #[error("{kind} {provider:?}: {detail}")]
    Config {
        kind: &'static str,
        provider: String,
        detail: String,
    },
    #[error("{kind} {provider:?}: {path:?}: {source}")]
    Key {
        kind: &'static str,
        provider: String,
        path: String,
        #[source]
        source: crate::secrets::KeyError,
    },
    #[error("{kind} {provider:?}: {source}")]
    Local {
        kind: &'static str,
        provider: String,
        #[source]
        source: local::StoreError,
    },
}

impl ProviderError {
    /// A bad setting of provider `provider` (of kind `kind`).
    pub fn config(kind: &'static str, provider: &str, detail: impl Into<String>) -> Self {
        ProviderError::Config {
            kind,
            provider: provider.to_string(),
            detail: detail.into(),
        }
    }

    /// A short, stable name for the kind of failure (audit events, metrics).
    pub fn kind_label(&self) -> &'static str {
        match self {
            ProviderError::NotFound { .. } => "not_found",
            ProviderError::Denied { .. } => "denied",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::Unavailable { .. } => "unavailable",
            ProviderError::Tls { .. } => "tls",
            ProviderError::Config { .. } => "config",
            ProviderError::Key { .. } => "key",
            ProviderError::Local { .. } => "local",
        }
    }

    /// True when the provider refused our credentials or their permissions (an `auth_failed`
    /// audit event), as opposed to the secret or the network being the problem.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, ProviderError::Denied { .. })
    }
}

/// Builds the provider called `name` from its dso.yaml entry.
pub fn build(
    name: &str,
    cfg: &ProviderConfig,
    config: &Config,
) -> Result<Box<dyn Provider>, ProviderError> {
    let timeout = config.runtime.fetch_timeout;
    Ok(match &cfg.settings {
        ProviderSettings::Local(s) => Box::new(local::LocalProvider::new(name, s.clone())),
        ProviderSettings::Aws(s) => Box::new(aws::AwsProvider::from_settings(name, s, timeout)?),
        ProviderSettings::Vault(s) => {
            Box::new(vault::VaultProvider::from_settings(name, s, timeout)?)
        }
        ProviderSettings::Azure(s) => Box::new(azure::AzureProvider::new(name, s, timeout)?),
    })
}

impl ProviderError {
    /// True when a later try may succeed with nothing changed: the provider unreachable, a
    /// timeout, a 5xx or throttled answer, an I/O error of the local store. Refused credentials,
    /// a missing secret, a bad setting, certificate or value are not.
    pub fn is_transient(&self) -> bool {
        use local::StoreError as S;
        match self {
            ProviderError::Timeout { .. } | ProviderError::Unavailable { .. } => true,
            ProviderError::Local { source, .. } => {
                matches!(source, S::Io { .. } | S::Random { .. })
            }
            _ => false,
        }
    }
}

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
        Err(ProviderError::config(
            "provider",
            self.name(),
            format!("engine {} is not supported here", req.engine.as_str()),
        ))
    }
    /// Renews a lease by `increment`.
    fn renew_lease(
        &self,
        lease_id: &str,
        increment: std::time::Duration,
    ) -> Result<LeaseGrant, ProviderError> {
        let _ = (lease_id, increment);
        Err(ProviderError::config(
            "provider",
            self.name(),
            "leases are not supported here",
        ))
    }
    /// Revokes a lease (the value stops working).
    fn revoke_lease(&self, lease_id: &str) -> Result<(), ProviderError> {
        let _ = lease_id;
        Err(ProviderError::config(
            "provider",
            self.name(),
            "leases are not supported here",
        ))
    }
}

/// Why a provider call failed: which provider (`kind` and dso.yaml name) and the [`Reason`].
/// `Display` is `<kind> "<provider>": <reason>`, never a value.
#[derive(Debug)]
pub struct ProviderError {
    pub kind: &'static str,
    pub provider: String,
    pub reason: Reason,
}

/// What went wrong, without the provider (see [`ProviderError`]).
#[derive(Debug, thiserror::Error)]
pub enum Reason {
    /// Nothing at this path (the path is kept).
    #[error("{0:?} not found")]
    NotFound(String),
    #[error("permission denied: {0}")]
    Denied(String),
    /// Timed out after this many seconds.
    #[error("timed out after {0}s")]
    Timeout(u64),
    /// Unreachable, throttled, a server error, or an answer dso cannot use.
    #[error("{0}")]
    Unavailable(String),
    /// The TLS handshake failed: untrusted, expired or misnamed certificate, no common
    /// protocol version (TLS 1.2+ only), refused client certificate.
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Config(String),
    #[error("{path:?}: {source}")]
    Key {
        path: String,
        #[source]
        source: crate::secrets::KeyError,
    },
    #[error("{0}")]
    Local(#[source] local::StoreError),
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}: {}", self.kind, self.provider, self.reason)
    }
}

impl std::error::Error for ProviderError {
    /// The reason's own source (a key or store error), so a chain never repeats the reason.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.reason)
    }
}

impl ProviderError {
    pub fn new(kind: &'static str, provider: &str, reason: Reason) -> Self {
        let provider = provider.to_string();
        Self {
            kind,
            provider,
            reason,
        }
    }

    /// A bad setting of provider `provider` (of kind `kind`).
    pub fn config(kind: &'static str, provider: &str, detail: impl Into<String>) -> Self {
        Self::new(kind, provider, Reason::Config(detail.into()))
    }

    pub fn denied(kind: &'static str, provider: &str, detail: impl Into<String>) -> Self {
        Self::new(kind, provider, Reason::Denied(detail.into()))
    }

    pub fn not_found(kind: &'static str, provider: &str, path: impl Into<String>) -> Self {
        Self::new(kind, provider, Reason::NotFound(path.into()))
    }

    pub fn unavailable(kind: &'static str, provider: &str, detail: impl Into<String>) -> Self {
        Self::new(kind, provider, Reason::Unavailable(detail.into()))
    }

    pub fn key(
        kind: &'static str,
        provider: &str,
        path: impl Into<String>,
        source: crate::secrets::KeyError,
    ) -> Self {
        let path = path.into();
        Self::new(kind, provider, Reason::Key { path, source })
    }

    /// True when the provider refused our credentials or their permissions (an `auth_failed`
    /// audit event), as opposed to the secret or the network being the problem.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self.reason, Reason::Denied(_))
    }

    /// True when trying again later may succeed: a timeout, the provider unreachable,
    /// throttling or failing (HTTP 429, 5xx; every `Unavailable`, so an unexpected answer too),
    /// an I/O error of the local store. Refused credentials, a missing secret or key, a bad
    /// setting, a TLS failure or any other local store error stay until someone fixes them.
    pub fn is_transient(&self) -> bool {
        use local::StoreError as S;
        match &self.reason {
            Reason::Timeout(_) | Reason::Unavailable(_) => true,
            Reason::Local(source) => matches!(source, S::Io { .. } | S::Random { .. }),
            _ => false,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts users and tests rely on, byte for byte, and which failures are transient.
    #[test]
    fn error_texts_and_transience() {
        let key = crate::secrets::SecretValue::new(b"x".to_vec()).select_key("k");
        let cases = [
            (
                Reason::NotFound("a/b".into()),
                r#"vault "v": "a/b" not found"#,
                false,
            ),
            (
                Reason::Denied("HTTP 403".into()),
                r#"vault "v": permission denied: HTTP 403"#,
                false,
            ),
            (Reason::Timeout(3), r#"vault "v": timed out after 3s"#, true),
            (
                Reason::Unavailable("HTTP 503".into()),
                r#"vault "v": HTTP 503"#,
                true,
            ),
            (
                Reason::Tls("bad cert".into()),
                r#"vault "v": bad cert"#,
                false,
            ),
            (
                Reason::Config("no token".into()),
                r#"vault "v": no token"#,
                false,
            ),
        ];
        for (reason, text, transient) in cases {
            let e = ProviderError::new("vault", "v", reason);
            assert_eq!(
                (e.to_string().as_str(), e.is_transient()),
                (text, transient)
            );
            assert!(std::error::Error::source(&e).is_none());
        }
        let e = ProviderError::key("vault", "v", "a/b", key.unwrap_err());
        assert!(e.to_string().starts_with(r#"vault "v": "a/b": "#), "{e}");
        assert!(std::error::Error::source(&e).is_some() && !e.is_transient());
    }
}

//! The `providers:` entries of dso.yaml: one typed struct per provider kind, behind the `type`
//! tag. Each provider's constructor takes its struct; nothing reads provider settings as JSON.

use std::path::PathBuf;

use serde::Deserialize;

use super::AllowRule;

pub const DEFAULT_STORE_PATH: &str = "/var/lib/dso/local.vault";
pub const DEFAULT_KEY_FILE: &str = "/etc/dso/master.key";

/// One provider entry: who may name it inline, and its kind's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ProviderConfig {
    /// Who may use inline references (`dso://<provider>/<path>`) to this provider.
    #[serde(default)]
    pub allow: Option<Vec<AllowRule>>,
    /// Path prefixes inline references to this provider may name.
    #[serde(default)]
    pub allow_paths: Option<Vec<String>>,
    #[serde(flatten)]
    pub settings: ProviderSettings,
}

impl ProviderConfig {
    pub fn kind(&self) -> ProviderKind {
        match self.settings {
            ProviderSettings::Local(_) => ProviderKind::Local,
            ProviderSettings::Vault(_) => ProviderKind::Vault,
            ProviderSettings::Aws(_) => ProviderKind::Aws,
            ProviderSettings::Azure(_) => ProviderKind::Azure,
        }
    }

    /// The settings of a `type: local` provider.
    pub fn local(&self) -> Option<&LocalSettings> {
        match &self.settings {
            ProviderSettings::Local(s) => Some(s),
            _ => None,
        }
    }

    /// Files holding credentials (the `*_file` settings but `ca_file`), for `dso doctor`.
    pub fn credential_files(&self) -> Vec<&PathBuf> {
        match &self.settings {
            ProviderSettings::Local(s) => vec![&s.key_file],
            ProviderSettings::Vault(s) => match &s.auth {
                VaultAuthSettings::Token { token_file } => token_file.iter().collect(),
                VaultAuthSettings::Approle {
                    role_id_file,
                    secret_id_file,
                    ..
                } => std::iter::once(role_id_file)
                    .chain(secret_id_file)
                    .collect(),
            },
            ProviderSettings::Aws(_) => Vec::new(),
            ProviderSettings::Azure(s) => match &s.auth {
                AzureAuthSettings::ClientSecret {
                    client_secret_file, ..
                } => vec![client_secret_file],
                AzureAuthSettings::ManagedIdentity { .. } => Vec::new(),
            },
        }
    }
}

/// The settings of each provider kind, by `type`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ProviderSettings {
    Local(LocalSettings),
    Vault(VaultSettings),
    Aws(AwsSettings),
    Azure(AzureSettings),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Local,
    Vault,
    Aws,
    Azure,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Vault => "vault",
            ProviderKind::Aws => "aws",
            ProviderKind::Azure => "azure",
        }
    }
}

/// Where a `type: local` provider's store and key file are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    #[serde(default = "default_key_file")]
    pub key_file: PathBuf,
}

fn default_store_path() -> PathBuf {
    DEFAULT_STORE_PATH.into()
}
fn default_key_file() -> PathBuf {
    DEFAULT_KEY_FILE.into()
}

/// `type: vault`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSettings {
    pub address: String,
    #[serde(default = "default_mount")]
    pub mount: String,
    #[serde(default = "default_kv_version")]
    pub kv_version: u8,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "vault_auth")]
    pub auth: VaultAuthSettings,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

fn default_mount() -> String {
    "secret".into()
}
fn default_kv_version() -> u8 {
    2
}
fn default_approle_mount() -> String {
    "approle".into()
}

/// `auth:`; `method` defaults to `token`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum VaultAuthSettings {
    Token {
        /// Default: `VAULT_TOKEN` in dso's environment.
        #[serde(default)]
        token_file: Option<PathBuf>,
    },
    Approle {
        role_id_file: PathBuf,
        #[serde(default)]
        secret_id_file: Option<PathBuf>,
        #[serde(default = "default_approle_mount")]
        mount: String,
    },
}

impl Default for VaultAuthSettings {
    fn default() -> Self {
        VaultAuthSettings::Token { token_file: None }
    }
}

/// `type: aws`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// Region; default `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's, the instance's.
    #[serde(default)]
    pub region: Option<String>,
    /// Shared-file profile; default `AWS_PROFILE`, else `default`.
    #[serde(default)]
    pub profile: Option<String>,
    /// Secrets Manager endpoint override (VPC endpoint, test server).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// IMDS endpoint; default `http://169.254.169.254`.
    #[serde(default)]
    pub imds_endpoint: Option<String>,
    /// Extra CA certificates (PEM) for the endpoint.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// `type: azure`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSettings {
    pub vault_url: String,
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default, deserialize_with = "azure_auth")]
    pub auth: AzureAuthSettings,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// `auth:`; `method` defaults to `managed_identity`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum AzureAuthSettings {
    ManagedIdentity {
        /// A user-assigned identity; default the system-assigned one.
        #[serde(default)]
        client_id: Option<String>,
        /// Token endpoint override (tests, other hosts); default IMDS.
        #[serde(default)]
        endpoint: Option<String>,
    },
    ClientSecret {
        tenant_id: String,
        client_id: String,
        client_secret_file: PathBuf,
        #[serde(default)]
        authority_host: Option<String>,
    },
}

impl Default for AzureAuthSettings {
    fn default() -> Self {
        AzureAuthSettings::ManagedIdentity {
            client_id: None,
            endpoint: None,
        }
    }
}

/// An internally tagged `auth:` whose tag may be left out for the default method.
fn with_default_tag<'de, D, T>(d: D, tag: &str, default: &str) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let mut map = serde_json::Map::deserialize(d)?;
    map.entry(tag).or_insert_with(|| default.into());
    T::deserialize(serde_json::Value::Object(map)).map_err(serde::de::Error::custom)
}

fn vault_auth<'de, D: serde::Deserializer<'de>>(d: D) -> Result<VaultAuthSettings, D::Error> {
    with_default_tag(d, "method", "token")
}

fn azure_auth<'de, D: serde::Deserializer<'de>>(d: D) -> Result<AzureAuthSettings, D::Error> {
    with_default_tag(d, "method", "managed_identity")
}

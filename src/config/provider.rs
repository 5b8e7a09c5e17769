//! The `providers:` entries of dso.yaml: one typed struct per provider kind, behind the `type`
//! tag. Each provider's constructor takes its struct; nothing reads provider settings as JSON.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use super::json_schema::{AbsPath, AzureAuthSchema, UrlValue, VaultAuthSchema};

use super::AllowRule;

pub const DEFAULT_STORE_PATH: &str = "/var/lib/dso/local.vault";
pub const DEFAULT_KEY_FILE: &str = "/etc/dso/master.key";

/// One provider entry: who may name it inline, and its kind's settings.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(inline)]
pub struct ProviderConfig {
    /// # Inline allow
    /// Who may use inline references (dso://<provider>/<path>) to this provider, when
    /// policy.inline_references is true. Absent: policy.default decides.
    #[serde(default)]
    #[schemars(with = "Option<super::json_schema::AllowList>")]
    pub allow: Option<Vec<AllowRule>>,
    /// # Inline path prefixes
    /// Path prefixes (whole segments) that inline references to this provider may name. Absent: any
    /// path.
    #[serde(default)]
    pub allow_paths: Option<Vec<String>>,
    #[serde(flatten)]
    #[schemars(skip)]
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

/// # Provider
/// A secret backend. The keys beyond type depend on the type.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ProviderSettings {
    /// # Local provider
    /// An AES-256-GCM encrypted store file on this host, managed with dso secret set/get/ls/rm; the
    /// key is derived (PBKDF2-HMAC-SHA256) from a key file.
    Local(LocalSettings),
    /// # Vault provider
    /// HashiCorp Vault (or OpenBao) KV secrets engine, version 1 or 2.
    Vault(VaultSettings),
    /// # AWS provider
    /// AWS Secrets Manager. Credentials come from the environment, the shared profile files, or the
    /// instance role (IMDSv2).
    Aws(AwsSettings),
    /// # Azure provider
    /// Azure Key Vault, with a managed identity or a service principal's client secret.
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(inline)]
pub struct LocalSettings {
    /// # Store file
    /// The encrypted store file.
    #[serde(default = "default_store_path")]
    #[schemars(with = "AbsPath")]
    pub path: PathBuf,
    /// # Key file
    /// File holding the passphrase the store key is derived from (keep it root-only).
    #[serde(default = "default_key_file")]
    #[schemars(with = "AbsPath")]
    pub key_file: PathBuf,
}

fn default_store_path() -> PathBuf {
    DEFAULT_STORE_PATH.into()
}
fn default_key_file() -> PathBuf {
    DEFAULT_KEY_FILE.into()
}

/// `type: vault`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(inline, extend("dependentRequired" = {"client_cert": ["client_key"], "client_key": ["client_cert"]}))]
pub struct VaultSettings {
    /// # Vault address
    /// Base URL of the Vault server, e.g. https://vault.example.com:8200 (http only for a loopback
    /// host).
    #[schemars(with = "UrlValue")]
    pub address: String,
    /// # KV mount
    /// Mount path of the KV secrets engine. Default secret.
    #[serde(default = "default_mount")]
    #[schemars(length(min = 1))]
    pub mount: String,
    /// # KV version
    /// Version of the KV secrets engine: 1 or 2. Default 2.
    #[serde(default = "default_kv_version")]
    #[schemars(extend("enum" = [1, 2]))]
    pub kv_version: u8,
    /// # Namespace
    /// Vault Enterprise / HCP namespace (X-Vault-Namespace).
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub namespace: Option<String>,
    /// # Vault authentication
    /// How dso logs in to Vault. Default: token, from VAULT_TOKEN.
    #[serde(default, deserialize_with = "vault_auth")]
    #[schemars(with = "VaultAuthSchema")]
    pub auth: VaultAuthSettings,
    /// # CA file
    /// PEM file of extra CA certificates trusted for this server (in addition to the system roots).
    #[serde(default)]
    #[schemars(with = "Option<AbsPath>")]
    pub ca_file: Option<PathBuf>,
    /// # Client certificate
    /// PEM client certificate for mutual TLS; needs client_key.
    #[serde(default)]
    #[schemars(with = "Option<AbsPath>")]
    pub client_cert: Option<PathBuf>,
    /// # Client key
    /// PEM private key of client_cert.
    #[serde(default)]
    #[schemars(with = "Option<AbsPath>")]
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

/// # Vault authentication
/// How dso logs in to Vault. Default: token, from VAULT_TOKEN.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum VaultAuthSettings {
    /// # Vault token auth
    /// A Vault token read from token_file, else from VAULT_TOKEN in dso's environment; renewed
    /// before it expires.
    Token {
        /// # Token file
        /// File holding the Vault token. Default: the VAULT_TOKEN environment variable.
        #[serde(default)]
        #[schemars(with = "Option<AbsPath>")]
        token_file: Option<PathBuf>,
    },
    /// # Vault AppRole auth
    /// AppRole login with a role id and (unless the role does not bind one) a secret id.
    Approle {
        /// # Role id file
        /// File holding the AppRole role id.
        #[schemars(with = "AbsPath")]
        role_id_file: PathBuf,
        /// # Secret id file
        /// File holding the AppRole secret id.
        #[serde(default)]
        #[schemars(with = "Option<AbsPath>")]
        secret_id_file: Option<PathBuf>,
        /// # AppRole mount
        /// Mount path of the AppRole auth method. Default approle.
        #[serde(default = "default_approle_mount")]
        #[schemars(length(min = 1))]
        mount: String,
    },
}

impl Default for VaultAuthSettings {
    fn default() -> Self {
        VaultAuthSettings::Token { token_file: None }
    }
}

/// `type: aws`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(inline)]
pub struct AwsSettings {
    /// # Region
    /// AWS region, e.g. us-east-1. Default: AWS_REGION, the profile, or the instance's region.
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    pub region: Option<String>,
    /// # Profile
    /// Named profile of the shared config and credentials files. Default: AWS_PROFILE, else
    /// default.
    #[schemars(length(min = 1))]
    pub profile: Option<String>,
    /// # Endpoint
    /// Secrets Manager endpoint override (VPC endpoint, test server); https, or http for a loopback
    /// host.
    #[schemars(with = "Option<UrlValue>")]
    pub endpoint: Option<String>,
    /// # IMDS endpoint
    /// Instance metadata endpoint for the instance role; http only to 169.254.169.254,
    /// [fd00:ec2::254] or a loopback host. Default http://169.254.169.254.
    #[schemars(with = "Option<UrlValue>")]
    pub imds_endpoint: Option<String>,
    /// # CA file
    /// PEM file of extra CA certificates trusted for the endpoint (in addition to the system
    /// roots).
    #[schemars(with = "Option<AbsPath>")]
    pub ca_file: Option<PathBuf>,
}

/// `type: azure`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(inline)]
pub struct AzureSettings {
    /// # Vault URL
    /// The Key Vault's URL, e.g. https://myvault.vault.azure.net.
    #[schemars(with = "UrlValue")]
    pub vault_url: String,
    /// # Azure authentication
    /// How dso gets tokens for Key Vault. Default: managed identity.
    #[serde(default, deserialize_with = "azure_auth")]
    #[schemars(with = "AzureAuthSchema")]
    pub auth: AzureAuthSettings,
    /// # CA file
    /// PEM file of extra CA certificates trusted for Key Vault and the token endpoint (in addition
    /// to the system roots).
    #[serde(default)]
    #[schemars(with = "Option<AbsPath>")]
    pub ca_file: Option<PathBuf>,
    /// # API version
    /// Key Vault REST API version (api-version). Default: the version dso was built against.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[0-9][0-9A-Za-z.-]*$"))]
    pub api_version: Option<String>,
}

/// # Azure authentication
/// How dso gets tokens for Key Vault. Default: managed identity.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum AzureAuthSettings {
    /// # Azure managed identity auth
    /// Tokens from the managed identity endpoint of the VM or service.
    ManagedIdentity {
        /// # Client id
        /// Client id of a user-assigned identity. Default: the system-assigned identity.
        #[serde(default)]
        #[schemars(length(min = 1))]
        client_id: Option<String>,
        /// # Identity endpoint
        /// Token endpoint override; http only to 169.254.169.254 or a loopback host. Default: IMDS
        /// (http://169.254.169.254/metadata/identity/oauth2/token).
        #[serde(default)]
        #[schemars(with = "Option<UrlValue>")]
        endpoint: Option<String>,
    },
    /// # Azure client secret auth
    /// A service principal (app registration) with a client secret.
    ClientSecret {
        /// # Tenant id
        /// Directory (tenant) id.
        #[schemars(length(min = 1))]
        tenant_id: String,
        /// # Client id
        /// Application (client) id.
        #[schemars(length(min = 1))]
        client_id: String,
        /// # Client secret file
        /// File holding the client secret.
        #[schemars(with = "AbsPath")]
        client_secret_file: PathBuf,
        /// # Authority host
        /// Microsoft Entra authority URL, e.g. https://login.microsoftonline.us for a sovereign
        /// cloud. Default https://login.microsoftonline.com.
        #[serde(default)]
        #[schemars(with = "Option<UrlValue>")]
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

//! The Azure Key Vault provider: `GET {vault_url}/secrets/{name}[/{version}]`, with tokens from
//! a managed identity (IMDS) or a service principal's client secret, and Key Vault's 401
//! challenge flow, over the shared client of [`super::http`].
//!
//! dso.yaml: `{ type: azure, vault_url, api_version, ca_file, auth: { method: managed_identity,
//! client_id, endpoint } | { method: client_secret, tenant_id, client_id, client_secret_file,
//! authority_host } }`. A secret's `path` is the secret name, `version` pins a version, `key`
//! picks a field of a JSON value.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use super::http::{self, ClientOptions, HttpClient, Request, Response, TlsOptions, Url, UrlPolicy};
use super::{FetchRequest, Fetched, Provider, ProviderError};
pub use crate::config::{AzureAuthSettings, AzureSettings};

const KIND: &str = "azure";
pub const DEFAULT_API_VERSION: &str = "7.4";
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
const IMDS_API_VERSION: &str = "2018-02-01";
/// Key Vault token audiences of the Azure clouds (public, China, US Gov, Germany, Managed HSM).
/// A challenge may only send us to one of these, or to a parent domain of the vault's host.
const KEY_VAULT_RESOURCES: &[&str] = &[
    "vault.azure.net",
    "vault.azure.cn",
    "vault.usgovcloudapi.net",
    "vault.microsoftazure.de",
    "managedhsm.azure.net",
];
/// Refresh a cached token this long before it expires.
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);

#[derive(Debug)]
enum AzureAuth {
    ManagedIdentity {
        client_id: Option<String>,
        endpoint: Url,
    },
    /// The secret itself is read from its file at each token request, never kept.
    ClientSecret {
        client_id: String,
        client_secret_file: PathBuf,
        token_url: Url,
    },
}

/// An access token for one resource (audience).
struct CachedToken {
    resource: String,
    token: Zeroizing<String>,
    refresh_at: Instant,
}

#[derive(Default)]
struct AuthState {
    /// The resource Key Vault's challenge named (or the cloud's default).
    resource: Option<String>,
    tokens: Vec<CachedToken>,
}

/// Azure Key Vault.
pub struct AzureProvider {
    name: String,
    client: HttpClient,
    vault_url: Url,
    api_version: String,
    auth: AzureAuth,
    state: Mutex<AuthState>,
}

impl std::fmt::Debug for AzureProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureProvider")
            .field("name", &self.name)
            .field("vault_url", &self.vault_url.as_str())
            .field("api_version", &self.api_version)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl AzureProvider {
    pub fn new(
        name: &str,
        settings: &AzureSettings,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let vault_url = http::parse_url(
            KIND,
            name,
            "vault_url",
            &settings.vault_url,
            UrlPolicy::HttpsOrLoopback,
        )?;
        let api_version = settings
            .api_version
            .clone()
            .unwrap_or_else(|| DEFAULT_API_VERSION.to_string());
        if api_version.is_empty()
            || !api_version.starts_with(|c: char| c.is_ascii_digit())
            || !api_version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(ProviderError::config(
                KIND,
                name,
                format!("api_version: {api_version:?} is not an API version"),
            ));
        }
        let auth = match &settings.auth {
            AzureAuthSettings::ManagedIdentity {
                client_id,
                endpoint,
            } => AzureAuth::ManagedIdentity {
                client_id: client_id.clone(),
                endpoint: http::parse_url(
                    KIND,
                    name,
                    "auth.endpoint",
                    endpoint.as_deref().unwrap_or(DEFAULT_IMDS_ENDPOINT),
                    UrlPolicy::AllowMetadataHttp,
                )?,
            },
            AzureAuthSettings::ClientSecret {
                tenant_id,
                client_id,
                client_secret_file,
                authority_host,
            } => {
                if tenant_id.is_empty()
                    || !tenant_id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                {
                    return Err(ProviderError::config(
                        KIND,
                        name,
                        "auth.tenant_id: not a tenant id or domain",
                    ));
                }
                let mut token_url = http::parse_url(
                    KIND,
                    name,
                    "auth.authority_host",
                    authority_host.as_deref().unwrap_or(DEFAULT_AUTHORITY),
                    UrlPolicy::HttpsOrLoopback,
                )?;
                token_url
                    .path_segments_mut()
                    .map_err(|_| {
                        ProviderError::config(KIND, name, "auth.authority_host: not a base URL")
                    })?
                    .pop_if_empty()
                    .extend([tenant_id.as_str(), "oauth2", "v2.0", "token"]);
                AzureAuth::ClientSecret {
                    client_id: client_id.clone(),
                    client_secret_file: client_secret_file.clone(),
                    token_url,
                }
            }
        };
        let client = HttpClient::new(
            KIND,
            name,
            &ClientOptions::new(timeout).tls(TlsOptions {
                ca_file: settings.ca_file.clone(),
                client_cert: None,
                client_key: None,
            }),
        )?;
        let default_resource = vault_url.host_str().and_then(default_resource);
        Ok(Self {
            name: name.to_string(),
            client,
            vault_url,
            api_version,
            auth,
            state: Mutex::new(AuthState {
                resource: default_resource,
                tokens: Vec::new(),
            }),
        })
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A token for `resource`: cached unless near expiry or `refresh`. The lock is held while
    /// fetching, so concurrent fetches share one token request.
    fn token_for(
        &self,
        resource: &str,
        refresh: bool,
        deadline: Instant,
    ) -> Result<Zeroizing<String>, ProviderError> {
        let mut state = self.lock_state();
        let now = Instant::now();
        if !refresh
            && let Some(t) = state
                .tokens
                .iter()
                .find(|t| t.resource == resource && now < t.refresh_at)
        {
            return Ok(t.token.clone());
        }
        let (token, expires_in) = self.request_token(resource, deadline)?;
        let margin = TOKEN_REFRESH_MARGIN.min(expires_in / 2);
        state.tokens.retain(|t| t.resource != resource);
        state.tokens.push(CachedToken {
            resource: resource.to_string(),
            token: token.clone(),
            refresh_at: Instant::now() + expires_in.saturating_sub(margin),
        });
        Ok(token)
    }

    /// Asks the identity endpoint for a token for `resource`.
    fn request_token(
        &self,
        resource: &str,
        deadline: Instant,
    ) -> Result<(Zeroizing<String>, Duration), ProviderError> {
        match &self.auth {
            AzureAuth::ManagedIdentity {
                client_id,
                endpoint,
            } => {
                let mut url = endpoint.clone();
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("api-version", IMDS_API_VERSION);
                    q.append_pair("resource", resource);
                    if let Some(id) = client_id {
                        q.append_pair("client_id", id);
                    }
                }
                let req = Request::get(url)
                    .header("metadata", "true")
                    .map_err(|e| self.client.config_error(e.to_string()))?
                    .metadata_endpoint();
                // IMDS asks clients to retry 404 and 410 (identity not ready, IMDS updating)
                // as well as throttling and server errors.
                let resp = self.client.send_with_retries_if(&req, deadline, |r| {
                    matches!(r.status, 404 | 410) || http::is_retryable_status(r.status)
                })?;
                if !resp.is_success() {
                    return Err(self.token_error(&resp, "managed identity", &[]));
                }
                self.parse_token(&resp)
            }
            AzureAuth::ClientSecret {
                client_id,
                client_secret_file,
                token_url,
            } => {
                let secret = http::read_credential_file(
                    KIND,
                    &self.name,
                    "auth.client_secret_file",
                    client_secret_file,
                )?;
                let scope = format!("{}/.default", resource.trim_end_matches('/'));
                let req = Request::post(token_url.clone())
                    .form_body(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", client_id),
                        ("client_secret", &secret),
                        ("scope", &scope),
                    ])
                    .map_err(|e| self.client.config_error(e.to_string()))?;
                let resp = self.client.send_with_retries(&req, deadline)?;
                if !resp.is_success() {
                    return Err(self.token_error(&resp, "client credentials", &[&secret]));
                }
                self.parse_token(&resp)
            }
        }
    }

    fn parse_token(&self, resp: &Response) -> Result<(Zeroizing<String>, Duration), ProviderError> {
        #[derive(Deserialize)]
        struct TokenResponse<'a> {
            #[serde(borrow)]
            access_token: Option<&'a RawValue>,
            /// A number from Entra ID, a string from IMDS.
            #[serde(default)]
            expires_in: Option<serde_json::Value>,
        }
        let parsed: TokenResponse<'_> = serde_json::from_slice(&resp.body)
            .map_err(|_| self.client.unavailable("token response is not JSON"))?;
        let token = parsed
            .access_token
            .and_then(http::json_string)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                self.client
                    .unavailable("token response has no access_token")
            })?;
        let secs = match parsed.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .unwrap_or(300);
        Ok((token, Duration::from_secs(secs)))
    }

    /// A refused token request: 400/401/403 mean the identity or the credentials are wrong.
    fn token_error(&self, resp: &Response, what: &str, credentials: &[&str]) -> ProviderError {
        #[derive(Deserialize)]
        struct OAuthError {
            #[serde(default)]
            error: Option<serde_json::Value>,
            #[serde(default)]
            error_description: Option<String>,
        }
        let detail = serde_json::from_slice::<OAuthError>(&resp.body)
            .ok()
            .map(|e| {
                let code = match e.error {
                    Some(serde_json::Value::String(s)) => s,
                    _ => String::new(),
                };
                let desc = e.error_description.unwrap_or_default();
                // Entra descriptions end with trace and correlation ids: keep the first line.
                let desc = desc.split(" Trace ID:").next().unwrap_or_default();
                http::sanitize_detail(&format!("{code}: {desc}"), credentials)
            })
            .unwrap_or_default();
        match resp.status {
            400 | 401 | 403 => ProviderError::denied(
                KIND,
                &self.name,
                format!(
                    "{what} token request refused (HTTP {}): {detail}",
                    resp.status
                ),
            ),
            s => self
                .client
                .status_error(s, &format!("{what} token"), &detail),
        }
    }

    /// The resource a challenge names, if it is one we may send a token to.
    fn challenge_resource(&self, resp: &Response) -> Result<Option<String>, ProviderError> {
        let Some(resource) = resp
            .header_all("www-authenticate")
            .into_iter()
            .find_map(parse_bearer_challenge)
        else {
            return Ok(None);
        };
        let vault_host = self.vault_url.host_str().unwrap_or_default();
        if resource_allowed(&resource, vault_host) {
            Ok(Some(resource))
        } else {
            Err(self.client.unavailable(format!(
                "Key Vault's challenge asks for a token for {resource:?}, which is not a Key \
                 Vault audience for {vault_host}; refusing to send one"
            )))
        }
    }

    fn secret_url(&self, name: &str, version: Option<&str>) -> Result<Url, ProviderError> {
        let mut url = self.vault_url.clone();
        url.set_query(None);
        url.set_fragment(None);
        {
            let mut segs = url
                .path_segments_mut()
                .map_err(|_| self.client.config_error("vault_url: not a base URL"))?;
            segs.pop_if_empty().push("secrets").push(name);
            if let Some(v) = version {
                segs.push(v);
            }
        }
        url.query_pairs_mut()
            .append_pair("api-version", &self.api_version);
        Ok(url)
    }

    fn send_secret_request(
        &self,
        url: &Url,
        token: Option<&str>,
        deadline: Instant,
    ) -> Result<Response, ProviderError> {
        let mut req = Request::get(url.clone());
        if let Some(t) = token {
            req = req.bearer(t).map_err(|_| {
                self.client
                    .unavailable("the access token has characters HTTP cannot carry")
            })?;
        }
        self.client.send_with_retries(&req, deadline)
    }

    fn kv_error(&self, resp: &Response, label: &str, token: Option<&str>) -> ProviderError {
        #[derive(Deserialize)]
        struct ErrorBody {
            error: Option<ErrorInner>,
        }
        #[derive(Deserialize)]
        struct ErrorInner {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let detail = serde_json::from_slice::<ErrorBody>(&resp.body)
            .ok()
            .and_then(|b| b.error)
            .map(|e| {
                let creds: Vec<&str> = token.into_iter().collect();
                http::sanitize_detail(&format!("{}: {}", e.code, e.message), &creds)
            })
            .unwrap_or_default();
        self.client.status_error(resp.status, label, &detail)
    }
}

impl Provider for AzureProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn fetch(&self, req: &FetchRequest) -> Result<Fetched, ProviderError> {
        let deadline = self.client.deadline();
        let name = req.path.as_str();
        if !valid_secret_name(name) {
            return Err(self.client.config_error(format!(
                "{name:?} is not a Key Vault secret name (1-127 of 0-9, a-z, A-Z, -)"
            )));
        }
        let version = req.version.as_deref();
        if let Some(v) = version
            && (v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(self
                .client
                .config_error(format!("{name:?}: {v:?} is not a Key Vault secret version")));
        }
        let label = match version {
            Some(v) => format!("{name}/{v}"),
            None => name.to_string(),
        };
        let url = self.secret_url(name, version)?;

        // With a known audience, go straight in with a token; otherwise let Key Vault's
        // challenge say which audience it wants.
        let known = self.lock_state().resource.clone();
        let mut token = match &known {
            Some(r) => Some(self.token_for(r, false, deadline)?),
            None => None,
        };
        let mut resp =
            self.send_secret_request(&url, token.as_deref().map(|t| t.as_str()), deadline)?;
        if resp.status == 401 {
            // The challenge flow: take the audience from WWW-Authenticate, get a token for it
            // (a fresh one if ours was for that audience and got refused), retry once.
            let resource = match self.challenge_resource(&resp)? {
                Some(r) => r,
                None => known.clone().ok_or_else(|| {
                    let detail = "Key Vault answered 401 without a Bearer challenge";
                    ProviderError::denied(KIND, &self.name, detail)
                })?,
            };
            let refresh = token.is_some() && known.as_deref() == Some(resource.as_str());
            self.lock_state().resource = Some(resource.clone());
            token = Some(self.token_for(&resource, refresh, deadline)?);
            resp =
                self.send_secret_request(&url, token.as_deref().map(|t| t.as_str()), deadline)?;
            if resp.status == 401 {
                let detail = format!("Key Vault refused the access token for {label:?} (HTTP 401)");
                return Err(ProviderError::denied(KIND, &self.name, detail));
            }
        }
        if !resp.is_success() {
            return Err(self.kv_error(&resp, &label, token.as_deref().map(|t| t.as_str())));
        }

        #[derive(Deserialize)]
        struct Bundle<'a> {
            #[serde(borrow)]
            value: Option<&'a RawValue>,
            #[serde(default)]
            id: Option<String>,
        }
        let bundle: Bundle<'_> = serde_json::from_slice(&resp.body).map_err(|_| {
            self.client
                .unavailable(format!("the response for {label:?} is not a SecretBundle"))
        })?;
        let text = bundle.value.and_then(http::json_string).ok_or_else(|| {
            self.client
                .unavailable(format!("the response for {label:?} has no value"))
        })?;
        let mut bytes = Zeroizing::new(Vec::with_capacity(text.len()));
        bytes.extend_from_slice(text.as_bytes());
        let value = crate::secrets::SecretValue::from_zeroizing(bytes);
        let value = match req.key.as_deref() {
            Some(k) => value
                .select_key(k)
                .map_err(|source| ProviderError::key(KIND, &self.name, name, source))?,
            None => value,
        };
        let version = bundle
            .id
            .as_deref()
            .and_then(|id| id.trim_end_matches('/').rsplit('/').next())
            .filter(|v| !v.is_empty() && *v != name)
            .map(str::to_string);
        Ok(Fetched { value, version })
    }
}

/// Key Vault secret names: 1-127 characters of `0-9a-zA-Z-`.
fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The token audience for a vault in one of the Azure clouds, by its host name.
fn default_resource(host: &str) -> Option<String> {
    let host = host.to_ascii_lowercase();
    KEY_VAULT_RESOURCES
        .iter()
        .find(|r| host.ends_with(&format!(".{r}")))
        .map(|r| format!("https://{r}"))
}

/// The `resource` (or `scope`, without `/.default`) of a `Bearer` challenge.
fn parse_bearer_challenge(header: &str) -> Option<String> {
    let rest = header.trim_start();
    let rest = rest
        .get(..6)
        .filter(|s| s.eq_ignore_ascii_case("bearer"))
        .map(|_| &rest[6..])?;
    let mut resource = None;
    let mut scope = None;
    for (k, v) in auth_params(rest) {
        match k.to_ascii_lowercase().as_str() {
            "resource" => resource = Some(v),
            "scope" => scope = Some(v),
            _ => {}
        }
    }
    resource
        .or_else(|| {
            scope.map(|s| {
                s.trim()
                    .trim_end_matches("/.default")
                    .trim_end_matches(".default")
                    .to_string()
            })
        })
        .map(|r| r.trim_end_matches('/').to_string())
        .filter(|r| !r.is_empty())
}

/// `k1="v1", k2=v2` auth-params (RFC 9110 §11.2), quoted strings unescaped.
fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            return out;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            continue;
        }
        chars.next();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

/// May a token for `resource` go to the vault at `vault_host`? Only for a Key Vault audience of
/// an Azure cloud, or a parent domain of the vault's host (the SDK's rule): a challenge must
/// not talk us into handing out, say, an Azure Resource Manager token.
fn resource_allowed(resource: &str, vault_host: &str) -> bool {
    let Ok(url) = Url::parse(resource) else {
        return false;
    };
    if url.scheme() != "https" {
        return false;
    }
    let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
        return false;
    };
    let vault_host = vault_host.to_ascii_lowercase();
    // A known cloud's Key Vault audience, or Key Vault's own shape in a private cloud (Azure
    // Stack): `https://vault.<suffix>` for a vault `<name>.vault.<suffix>`. Never any other
    // parent domain of the vault's host (`https://azure.net` would be a token for more).
    KEY_VAULT_RESOURCES.contains(&host.as_str())
        || (host.starts_with("vault.")
            && vault_host
                .strip_suffix(host.as_str())
                .and_then(|label| label.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parsing() {
        assert_eq!(
            parse_bearer_challenge(
                r#"Bearer authorization="https://login.microsoftonline.com/72f988bf", resource="https://vault.azure.net""#
            )
            .as_deref(),
            Some("https://vault.azure.net")
        );
        assert_eq!(
            parse_bearer_challenge(
                r#"Bearer authorization="https://login.microsoftonline.com/t", scope="https://vault.azure.net/.default""#
            )
            .as_deref(),
            Some("https://vault.azure.net")
        );
        assert_eq!(
            parse_bearer_challenge(r#"bearer resource=https://vault.azure.cn/"#).as_deref(),
            Some("https://vault.azure.cn")
        );
        assert_eq!(parse_bearer_challenge(r#"PoP nonce="x""#), None);
        assert_eq!(parse_bearer_challenge(r#"Bearer authorization="x""#), None);
    }

    #[test]
    fn challenge_resource_must_be_key_vault() {
        assert!(resource_allowed(
            "https://vault.azure.net",
            "myvault.vault.azure.net"
        ));
        assert!(resource_allowed("https://vault.azure.net", "localhost"));
        // Parent domains of the vault's host are not Key Vault audiences.
        assert!(!resource_allowed("https://example.com", "kv.example.com"));
        assert!(!resource_allowed(
            "https://azure.net",
            "myvault.vault.azure.net"
        ));
        // A private cloud's Key Vault: https://vault.<suffix> for <name>.vault.<suffix> only.
        assert!(resource_allowed(
            "https://vault.local.azurestack.external",
            "kv1.vault.local.azurestack.external"
        ));
        assert!(!resource_allowed(
            "https://vault.local.azurestack.external",
            "a.kv1.vault.local.azurestack.external"
        ));
        assert!(!resource_allowed(
            "https://management.azure.com",
            "myvault.vault.azure.net"
        ));
        assert!(!resource_allowed(
            "http://vault.azure.net",
            "x.vault.azure.net"
        ));
        assert!(!resource_allowed(
            "https://evilvault.azure.net",
            "myvault.vault.azure.net"
        ));
    }

    #[test]
    fn default_resources_by_cloud() {
        assert_eq!(
            default_resource("myvault.vault.azure.net").as_deref(),
            Some("https://vault.azure.net")
        );
        assert_eq!(
            default_resource("kv.vault.usgovcloudapi.net").as_deref(),
            Some("https://vault.usgovcloudapi.net")
        );
        assert_eq!(default_resource("localhost"), None);
    }

    #[test]
    fn names_and_settings() {
        assert!(valid_secret_name("db-password"));
        assert!(!valid_secret_name("db_password"));
        assert!(!valid_secret_name("a/b"));
        assert!(!valid_secret_name(""));
        let s: AzureSettings = serde_json::from_value(serde_json::json!({
            "vault_url": "https://x.vault.azure.net",
            "auth": { "client_id": "abc" }
        }))
        .unwrap();
        assert_eq!(
            s.auth,
            AzureAuthSettings::ManagedIdentity {
                client_id: Some("abc".into()),
                endpoint: None
            }
        );
        let p = AzureProvider::new("a", &s, Duration::from_secs(1)).unwrap();
        assert_eq!(p.api_version, DEFAULT_API_VERSION);
        assert_eq!(
            p.secret_url("db", Some("abc123")).unwrap().as_str(),
            "https://x.vault.azure.net/secrets/db/abc123?api-version=7.4"
        );
        // IMDS endpoint may be plain http only to the metadata address or loopback.
        let bad = AzureSettings {
            vault_url: "https://x.vault.azure.net".into(),
            api_version: None,
            auth: AzureAuthSettings::ManagedIdentity {
                client_id: None,
                endpoint: Some("http://10.0.0.5/token".into()),
            },
            ca_file: None,
        };
        assert!(AzureProvider::new("a", &bad, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn client_secret_token_url() {
        let s = AzureSettings {
            vault_url: "https://x.vault.azure.net".into(),
            api_version: Some("7.5".into()),
            auth: AzureAuthSettings::ClientSecret {
                tenant_id: "contoso.onmicrosoft.com".into(),
                client_id: "cid".into(),
                client_secret_file: "/etc/dso/azure.secret".into(),
                authority_host: Some("https://login.microsoftonline.us/".into()),
            },
            ca_file: None,
        };
        let p = AzureProvider::new("a", &s, Duration::from_secs(1)).unwrap();
        match &p.auth {
            AzureAuth::ClientSecret { token_url, .. } => assert_eq!(
                token_url.as_str(),
                "https://login.microsoftonline.us/contoso.onmicrosoft.com/oauth2/v2.0/token"
            ),
            other => panic!("{other:?}"),
        }
        let dbg = format!("{p:?}");
        assert!(dbg.contains("client_secret_file"), "{dbg}");
    }
}

//! The Vault provider: KV v2 (`/v1/<mount>/data/<path>`, versions from its metadata) and KV v1,
//! token and AppRole auth, namespaces, over the shared client of [`super::http`].
//!
//! dso.yaml: `{ type: vault, address, mount, kv_version, namespace, auth: { method: token,
//! token_file } | { method: approle, role_id_file, secret_id_file, mount }, ca_file,
//! client_cert, client_key }`. A [`VaultSession`] holds the token; the long-lived agent keeps
//! one and calls [`VaultSession::renew_if_needed`], the shim logs in once per create.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use super::http::{self, ClientOptions, HttpClient, Request, Response, TlsOptions, Url, UrlPolicy};
use super::{
    DynamicRequest, FetchRequest, Fetched, Issued, LeaseGrant, Provider, ProviderError, Reason,
};
use crate::config::Engine;
pub use crate::config::{VaultAuthSettings, VaultSettings};
use crate::secrets::{KeyError, SecretValue};

const KIND: &str = "vault";
/// Renew once this fraction of the token's TTL has passed.
const RENEW_AT_FRACTION: f64 = 2.0 / 3.0;

/// Where tokens come from.
enum AuthMethod {
    /// A token file (re-read at every login, so an external rotation is picked up), else the
    /// `VAULT_TOKEN` captured when the provider was built.
    Token {
        token_file: Option<PathBuf>,
        env_token: Option<Zeroizing<String>>,
    },
    AppRole {
        role_id_file: PathBuf,
        secret_id_file: Option<PathBuf>,
        mount: String,
    },
}

impl std::fmt::Debug for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthMethod::Token {
                token_file,
                env_token,
            } => f
                .debug_struct("Token")
                .field("token_file", token_file)
                .field("env_token", &env_token.as_ref().map(|_| "[redacted]"))
                .finish(),
            AuthMethod::AppRole {
                role_id_file,
                secret_id_file,
                mount,
            } => f
                .debug_struct("AppRole")
                .field("role_id_file", role_id_file)
                .field("secret_id_file", secret_id_file)
                .field("mount", mount)
                .finish(),
        }
    }
}

/// A token as Vault (or the token file) handed it out.
pub struct TokenGrant {
    pub token: Zeroizing<String>,
    /// `lease_duration`; `None` when unknown (a token from a file) or 0 (a root token).
    pub ttl: Option<Duration>,
    pub renewable: bool,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("token", &"[redacted]")
            .field("ttl", &self.ttl)
            .field("renewable", &self.renewable)
            .finish()
    }
}

/// The two auth calls a session needs; [`VaultApi`] talks to Vault, tests use a stand-in.
pub trait VaultAuthApi {
    /// A fresh token: AppRole login, or (token auth) the token file / `VAULT_TOKEN` again.
    fn login(&self, deadline: Instant) -> Result<TokenGrant, ProviderError>;
    /// `POST /v1/auth/token/renew-self`.
    fn renew_self(&self, token: &str, deadline: Instant) -> Result<TokenGrant, ProviderError>;
}

/// What [`VaultSession::renew_if_needed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    NotNeeded,
    Renewed,
    /// Renewal was impossible or refused: a new login replaced the token.
    LoggedIn,
}

/// A logged-in token and what is known of its lifetime. Reusable across fetches; the agent
/// keeps one per provider and renews it before it expires.
pub struct VaultSession {
    token: Zeroizing<String>,
    /// When the current TTL started counting.
    since: Instant,
    ttl: Option<Duration>,
    renewable: bool,
}

impl std::fmt::Debug for VaultSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSession")
            .field("token", &"[redacted]")
            .field("ttl", &self.ttl)
            .field("renewable", &self.renewable)
            .finish()
    }
}

impl VaultSession {
    pub fn login(api: &impl VaultAuthApi, deadline: Instant) -> Result<Self, ProviderError> {
        Ok(Self::from_grant(api.login(deadline)?, Instant::now()))
    }

    pub fn from_grant(grant: TokenGrant, now: Instant) -> Self {
        Self {
            token: grant.token,
            since: now,
            ttl: grant.ttl,
            renewable: grant.renewable,
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// When the token expires, if it does and we know.
    pub fn expires_at(&self) -> Option<Instant> {
        self.ttl.map(|ttl| self.since + ttl)
    }

    /// True once two thirds of the TTL have passed.
    pub fn needs_renewal(&self, now: Instant) -> bool {
        self.ttl
            .is_some_and(|ttl| now >= self.since + ttl.mul_f64(RENEW_AT_FRACTION))
    }

    /// Renews the token when two thirds of its TTL have passed; logs in again when it is not
    /// renewable, when Vault refuses the renewal, or when the renewed TTL is shorter than the
    /// time to the next renewal would need (the token hit its max TTL).
    pub fn renew_if_needed(
        &mut self,
        api: &impl VaultAuthApi,
        now: Instant,
        deadline: Instant,
    ) -> Result<Renewal, ProviderError> {
        if !self.needs_renewal(now) {
            return Ok(Renewal::NotNeeded);
        }
        if self.renewable {
            match api.renew_self(&self.token, deadline) {
                Ok(grant) => {
                    let old_ttl = self.ttl;
                    // Vault returns the same token; keep ours unless it handed out another.
                    if !grant.token.is_empty() {
                        self.token = grant.token;
                    }
                    self.since = now;
                    self.ttl = grant.ttl;
                    self.renewable = grant.renewable;
                    // A renewal that no longer extends much means max TTL is near: log in.
                    let capped = match (old_ttl, grant.ttl) {
                        (Some(old), Some(new)) => new < old.mul_f64(1.0 - RENEW_AT_FRACTION),
                        _ => false,
                    };
                    if !capped {
                        return Ok(Renewal::Renewed);
                    }
                }
                // Refused (revoked, expired, not renewable after all): log in again below.
                Err(ProviderError {
                    reason: Reason::Denied(_),
                    ..
                })
                | Err(ProviderError {
                    reason: Reason::NotFound(_),
                    ..
                }) => {}
                // Transport trouble: a login would fail the same way; keep the token and let
                // the caller try again later.
                Err(e) => return Err(e),
            }
        }
        let grant = api.login(deadline)?;
        *self = Self::from_grant(grant, now);
        Ok(Renewal::LoggedIn)
    }
}

/// Vault's HTTP API as this provider uses it.
pub struct VaultApi {
    name: String,
    client: HttpClient,
    address: Url,
    namespace: Option<String>,
    auth: AuthMethod,
}

impl std::fmt::Debug for VaultApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultApi")
            .field("name", &self.name)
            .field("address", &self.address.as_str())
            .field("namespace", &self.namespace)
            .field("auth", &self.auth)
            .finish()
    }
}

impl VaultApi {
    /// `<address>/v1/<segments...>`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Result<Url, ProviderError> {
        let mut url = self.address.clone();
        url.set_query(None);
        url.set_fragment(None);
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|_| self.client.config_error("address: cannot be a base URL"))?;
            path.pop_if_empty().push("v1").extend(segments);
        }
        Ok(url)
    }

    fn request(&self, req: Request, token: Option<&str>) -> Result<Request, ProviderError> {
        let mut req = req
            .header("x-vault-request", "true")
            .map_err(|e| self.client.config_error(e.to_string()))?;
        if let Some(ns) = &self.namespace {
            req = req.header("x-vault-namespace", ns).map_err(|_| {
                self.client
                    .config_error("namespace: not a valid header value")
            })?;
        }
        if let Some(token) = token {
            req = req.secret_header("x-vault-token", token).map_err(|_| {
                self.client
                    .config_error("the Vault token has characters HTTP cannot carry")
            })?;
        }
        Ok(req)
    }

    /// The error for a non-2xx response: Vault's `{"errors": [...]}` text, sanitized, with
    /// `credentials` scrubbed from it.
    fn error_for(&self, resp: &Response, what: &str, credentials: &[&str]) -> ProviderError {
        let detail = vault_errors(resp)
            .map(|e| http::sanitize_detail(&e, credentials))
            .unwrap_or_default();
        self.client.status_error(resp.status, what, &detail)
    }

    fn parse_auth(&self, resp: &Response) -> Result<TokenGrant, ProviderError> {
        #[derive(Deserialize)]
        struct AuthResponse<'a> {
            #[serde(borrow)]
            auth: Option<Auth<'a>>,
        }
        #[derive(Deserialize)]
        struct Auth<'a> {
            #[serde(borrow)]
            client_token: Option<&'a RawValue>,
            #[serde(default)]
            lease_duration: u64,
            #[serde(default)]
            renewable: bool,
        }
        let parsed: AuthResponse<'_> = serde_json::from_slice(&resp.body).map_err(|_| {
            self.client
                .unavailable("login response is not the JSON Vault sends")
        })?;
        let auth = parsed
            .auth
            .ok_or_else(|| self.client.unavailable("login response has no auth block"))?;
        let token = match auth.client_token {
            Some(raw) => http::json_string(raw)
                .ok_or_else(|| self.client.unavailable("login response: client_token"))?,
            None => Zeroizing::new(String::new()),
        };
        Ok(TokenGrant {
            token,
            ttl: (auth.lease_duration > 0).then(|| Duration::from_secs(auth.lease_duration)),
            renewable: auth.renewable,
        })
    }
}

impl VaultAuthApi for VaultApi {
    fn login(&self, deadline: Instant) -> Result<TokenGrant, ProviderError> {
        match &self.auth {
            AuthMethod::Token {
                token_file,
                env_token,
            } => {
                let token = match (token_file, env_token) {
                    (Some(file), _) => {
                        http::read_credential_file(KIND, &self.name, "auth.token_file", file)?
                    }
                    (None, Some(t)) => t.clone(),
                    (None, None) => {
                        return Err(self
                            .client
                            .config_error("no token: set auth.token_file or VAULT_TOKEN"));
                    }
                };
                Ok(TokenGrant {
                    token,
                    ttl: None,
                    renewable: false,
                })
            }
            AuthMethod::AppRole {
                role_id_file,
                secret_id_file,
                mount,
            } => {
                let role_id = http::read_credential_file(
                    KIND,
                    &self.name,
                    "auth.role_id_file",
                    role_id_file,
                )?;
                let secret_id = match secret_id_file {
                    Some(f) => Some(http::read_credential_file(
                        KIND,
                        &self.name,
                        "auth.secret_id_file",
                        f,
                    )?),
                    None => None,
                };
                #[derive(serde::Serialize)]
                struct Login<'a> {
                    role_id: &'a str,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    secret_id: Option<&'a str>,
                }
                let login = Login {
                    role_id: &role_id,
                    secret_id: secret_id.as_deref().map(|s| s.as_str()),
                };
                // Room for the worst-case escaping, so the buffer never reallocates (and
                // leaves an unzeroized copy behind).
                let cap = 64 + 6 * (role_id.len() + secret_id.as_ref().map_or(0, |s| s.len()));
                let mut body = Zeroizing::new(Vec::with_capacity(cap));
                serde_json::to_writer(&mut *body, &login)
                    .map_err(|e| self.client.config_error(format!("login body: {e}")))?;

                let mut segments: Vec<&str> = vec!["auth"];
                segments.extend(mount_segments(mount));
                segments.push("login");
                let req = self.request(
                    Request::post(self.url(&segments)?)
                        .body("application/json", body)
                        .map_err(|e| self.client.config_error(e.to_string()))?,
                    None,
                )?;
                let resp = self.client.send_with_retries(&req, deadline)?;
                let creds: Vec<&str> = [
                    Some(role_id.as_str()),
                    secret_id.as_deref().map(|s| s.as_str()),
                ]
                .into_iter()
                .flatten()
                .collect();
                match resp.status {
                    200..=299 => {
                        let grant = self.parse_auth(&resp)?;
                        if grant.token.is_empty() {
                            return Err(self.client.unavailable("login response has no token"));
                        }
                        Ok(grant)
                    }
                    // Vault answers a bad role id or secret id with 400 "invalid role or
                    // secret ID": that is a refused login, not a malformed request.
                    400 | 401 | 403 => {
                        let detail = vault_errors(&resp)
                            .map(|e| http::sanitize_detail(&e, &creds))
                            .unwrap_or_default();
                        let detail = if detail.is_empty() {
                            format!("AppRole login refused (HTTP {})", resp.status)
                        } else {
                            format!("AppRole login refused (HTTP {}): {detail}", resp.status)
                        };
                        Err(ProviderError::denied(KIND, &self.name, detail))
                    }
                    _ => Err(self.error_for(&resp, "AppRole login", &creds)),
                }
            }
        }
    }

    fn renew_self(&self, token: &str, deadline: Instant) -> Result<TokenGrant, ProviderError> {
        let req = self.request(
            Request::post(self.url(&["auth", "token", "renew-self"])?)
                .body("application/json", Zeroizing::new(b"{}".to_vec()))
                .map_err(|e| self.client.config_error(e.to_string()))?,
            Some(token),
        )?;
        let resp = self.client.send_with_retries(&req, deadline)?;
        if resp.status == 400 {
            // "token not renewable" and friends: a refusal, so the session logs in again.
            return Err(ProviderError::denied(
                KIND,
                &self.name,
                "token renewal refused (HTTP 400)",
            ));
        }
        if !resp.is_success() {
            return Err(self.error_for(&resp, "token renewal", &[token]));
        }
        self.parse_auth(&resp)
    }
}

/// HashiCorp Vault KV.
pub struct VaultProvider {
    api: VaultApi,
    mount: String,
    kv_version: u8,
    session: Mutex<Option<VaultSession>>,
    /// Cleared once reading KV metadata was refused (a policy may grant `data/` only): version
    /// checks then read the secret itself.
    metadata_allowed: AtomicBool,
}

impl std::fmt::Debug for VaultProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultProvider")
            .field("api", &self.api)
            .field("mount", &self.mount)
            .field("kv_version", &self.kv_version)
            .finish_non_exhaustive()
    }
}

impl VaultProvider {
    /// The provider for a dso.yaml entry; `VAULT_TOKEN` is read from the process environment
    /// when token auth has no `token_file`.
    pub fn from_settings(
        name: &str,
        settings: &VaultSettings,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let env_token = std::env::var("VAULT_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(|t| Zeroizing::new(t.trim().to_string()));
        Self::new(name, settings, env_token, timeout)
    }

    /// The provider from explicit settings (nothing read from the environment).
    pub fn new(
        name: &str,
        settings: &VaultSettings,
        env_token: Option<Zeroizing<String>>,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let address = http::parse_url(
            KIND,
            name,
            "address",
            &settings.address,
            UrlPolicy::HttpsOrLoopback,
        )?;
        if settings.kv_version != 1 && settings.kv_version != 2 {
            return Err(ProviderError::config(
                KIND,
                name,
                "kv_version: must be 1 or 2",
            ));
        }
        check_mount(name, "mount", &settings.mount)?;
        if let Some(ns) = &settings.namespace
            && (ns.is_empty() || reqwest::header::HeaderValue::from_str(ns).is_err())
        {
            return Err(ProviderError::config(
                KIND,
                name,
                "namespace: not a valid header value",
            ));
        }
        let auth = match &settings.auth {
            VaultAuthSettings::Token { token_file } => AuthMethod::Token {
                token_file: token_file.clone(),
                env_token: if token_file.is_some() {
                    None
                } else {
                    env_token
                },
            },
            VaultAuthSettings::Approle {
                role_id_file,
                secret_id_file,
                mount,
            } => {
                check_mount(name, "auth.mount", mount)?;
                AuthMethod::AppRole {
                    role_id_file: role_id_file.clone(),
                    secret_id_file: secret_id_file.clone(),
                    mount: mount.clone(),
                }
            }
        };
        let client = HttpClient::new(
            KIND,
            name,
            &ClientOptions::new(timeout).tls(TlsOptions {
                ca_file: settings.ca_file.clone(),
                client_cert: settings.client_cert.clone(),
                client_key: settings.client_key.clone(),
            }),
        )?;
        Ok(Self {
            api: VaultApi {
                name: name.to_string(),
                client,
                address,
                namespace: settings.namespace.clone(),
                auth,
            },
            mount: settings.mount.clone(),
            kv_version: settings.kv_version,
            session: Mutex::new(None),
            metadata_allowed: AtomicBool::new(true),
        })
    }

    /// The current token: logs in on first use (once, even with many concurrent fetches),
    /// renews or logs in again when the session asks for it.
    fn token(&self, deadline: Instant) -> Result<Zeroizing<String>, ProviderError> {
        let mut guard = self
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match guard.as_mut() {
            Some(session) => {
                session.renew_if_needed(&self.api, Instant::now(), deadline)?;
            }
            None => *guard = Some(VaultSession::login(&self.api, deadline)?),
        }
        Ok(guard
            .as_ref()
            .map(|s| Zeroizing::new(s.token().to_string()))
            .unwrap_or_default())
    }

    /// Renews the session's token if it is due (for the agent's timer). `Ok(None)` when no
    /// session exists yet.
    pub fn renew_if_needed(&self) -> Result<Option<Renewal>, ProviderError> {
        let mut guard = self
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match guard.as_mut() {
            Some(s) => s
                .renew_if_needed(&self.api, Instant::now(), self.api.client.deadline())
                .map(Some),
            None => Ok(None),
        }
    }

    fn kv_url(&self, kind: &str, path: &str) -> Result<Url, ProviderError> {
        let path_segs = secret_segments(path).ok_or_else(|| {
            self.api.client.config_error(format!(
                "secret path {path:?}: empty, or has an empty, \".\" or \"..\" segment"
            ))
        })?;
        let mut segments: Vec<&str> = mount_segments(&self.mount).collect();
        if !kind.is_empty() {
            segments.push(kind);
        }
        segments.extend(path_segs);
        self.api.url(&segments)
    }

    fn get(
        &self,
        url: Url,
        what: &str,
        deadline: Instant,
    ) -> Result<(Response, Zeroizing<String>), ProviderError> {
        let token = self.token(deadline)?;
        let req = self.api.request(Request::get(url), Some(&token))?;
        let resp = self.api.client.send_with_retries(&req, deadline)?;
        if !resp.is_success() {
            return Err(self.api.error_for(&resp, what, &[&token]));
        }
        Ok((resp, token))
    }

    fn malformed(&self, path: &str) -> ProviderError {
        self.api.client.unavailable(format!(
            "the response for {path:?} is not the JSON a KV v{} engine sends",
            self.kv_version
        ))
    }
}

impl Provider for VaultProvider {
    fn name(&self) -> &str {
        &self.api.name
    }

    fn fetch(&self, req: &FetchRequest) -> Result<Fetched, ProviderError> {
        let deadline = self.api.client.deadline();
        let path = req.path.as_str();
        if self.kv_version == 1 {
            if req.version.is_some() {
                return Err(self
                    .api
                    .client
                    .config_error(format!("{path:?}: KV version 1 has no versions to pin")));
            }
            let (resp, _token) = self.get(self.kv_url("", path)?, path, deadline)?;
            #[derive(Deserialize)]
            struct V1<'a> {
                #[serde(borrow)]
                data: Option<&'a RawValue>,
            }
            let parsed: V1<'_> =
                serde_json::from_slice(&resp.body).map_err(|_| self.malformed(path))?;
            let data = parsed.data.ok_or_else(|| self.malformed(path))?;
            let value = select(data, req.key.as_deref())
                .map_err(|e| self.key_error(path, e))?
                .ok_or_else(|| self.malformed(path))?;
            return Ok(Fetched {
                value,
                version: None,
            });
        }

        let mut url = self.kv_url("data", path)?;
        if let Some(v) = &req.version {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(self.api.client.config_error(format!(
                    "{path:?}: version {v:?} is not a KV v2 version number"
                )));
            }
            url.query_pairs_mut().append_pair("version", v);
        }
        let (resp, _token) = self.get(url, path, deadline)?;
        #[derive(Deserialize)]
        struct V2<'a> {
            #[serde(borrow)]
            data: Option<V2Data<'a>>,
        }
        #[derive(Deserialize)]
        struct V2Data<'a> {
            #[serde(borrow)]
            data: Option<&'a RawValue>,
            metadata: Option<V2Meta>,
        }
        #[derive(Deserialize)]
        struct V2Meta {
            version: Option<u64>,
        }
        let parsed: V2<'_> =
            serde_json::from_slice(&resp.body).map_err(|_| self.malformed(path))?;
        let inner = parsed.data.ok_or_else(|| self.malformed(path))?;
        // A deleted or destroyed version has `"data": null`.
        let data = match inner.data {
            Some(raw) if raw.get() != "null" => raw,
            _ => {
                return Err(ProviderError::not_found(KIND, &self.api.name, path));
            }
        };
        let value = select(data, req.key.as_deref())
            .map_err(|e| self.key_error(path, e))?
            .ok_or_else(|| self.malformed(path))?;
        Ok(Fetched {
            value,
            version: inner
                .metadata
                .and_then(|m| m.version)
                .map(|v| v.to_string()),
        })
    }

    fn version(&self, req: &FetchRequest) -> Result<Option<String>, ProviderError> {
        if self.kv_version == 1 {
            return self.fetch(req).map(|f| f.version);
        }
        if let Some(v) = &req.version {
            return Ok(Some(v.clone()));
        }
        if !self.metadata_allowed.load(Ordering::Relaxed) {
            return self.fetch(req).map(|f| f.version);
        }
        let deadline = self.api.client.deadline();
        let path = req.path.as_str();
        let resp = match self.get(self.kv_url("metadata", path)?, path, deadline) {
            Ok((resp, _token)) => resp,
            Err(ProviderError {
                reason: Reason::Denied(_),
                ..
            }) => {
                self.metadata_allowed.store(false, Ordering::Relaxed);
                return self.fetch(req).map(|f| f.version);
            }
            Err(e) => return Err(e),
        };
        #[derive(Deserialize)]
        struct Meta {
            data: Option<MetaData>,
        }
        #[derive(Deserialize)]
        struct MetaData {
            current_version: Option<u64>,
        }
        let meta: Meta = serde_json::from_slice(&resp.body).map_err(|_| self.malformed(path))?;
        Ok(meta
            .data
            .and_then(|d| d.current_version)
            .map(|v| v.to_string()))
    }

    fn issue(&self, req: &DynamicRequest) -> Result<Issued, ProviderError> {
        match req.engine {
            Engine::Database => self.issue_database(req),
            Engine::Pki => self.issue_pki(req),
            Engine::Kv => Err(self
                .api
                .client
                .config_error("engine kv values are fetched, not issued")),
        }
    }

    fn renew_lease(
        &self,
        lease_id: &str,
        increment: Duration,
    ) -> Result<LeaseGrant, ProviderError> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            lease_id: &'a str,
            increment: u64,
        }
        let body = serde_json::to_vec(&Body {
            lease_id,
            increment: increment.as_secs().max(1),
        })
        .map_err(|e| self.api.client.config_error(e.to_string()))?;
        let resp = self.send(
            Request::put(self.api.url(&["sys", "leases", "renew"])?),
            Some(Zeroizing::new(body)),
            "lease renewal",
        )?;
        #[derive(Deserialize)]
        struct Renewed {
            #[serde(default)]
            lease_duration: u64,
            #[serde(default)]
            renewable: bool,
        }
        let r: Renewed = serde_json::from_slice(&resp.body).map_err(|_| {
            self.api
                .client
                .unavailable("lease renewal: not the JSON Vault sends")
        })?;
        Ok(LeaseGrant {
            ttl: Duration::from_secs(r.lease_duration),
            renewable: r.renewable,
        })
    }

    fn revoke_lease(&self, lease_id: &str) -> Result<(), ProviderError> {
        let body = serde_json::to_vec(&serde_json::json!({ "lease_id": lease_id }))
            .map_err(|e| self.api.client.config_error(e.to_string()))?;
        self.send(
            Request::put(self.api.url(&["sys", "leases", "revoke"])?),
            Some(Zeroizing::new(body)),
            "lease revocation",
        )?;
        Ok(())
    }
}

impl VaultProvider {
    /// A request with the session's token; non-2xx answers become errors (Vault's own text,
    /// with the token scrubbed). `what` names the operation in messages.
    fn send(
        &self,
        req: Request,
        body: Option<Zeroizing<Vec<u8>>>,
        what: &str,
    ) -> Result<Response, ProviderError> {
        let deadline = self.api.client.deadline();
        let token = self.token(deadline)?;
        let req = match body {
            Some(b) => req
                .body("application/json", b)
                .map_err(|e| self.api.client.config_error(e.to_string()))?,
            None => req,
        };
        let req = self.api.request(req, Some(&token))?;
        let resp = self.api.client.send_with_retries(&req, deadline)?;
        if !resp.is_success() {
            return Err(self.api.error_for(&resp, what, &[&token]));
        }
        Ok(resp)
    }

    /// `<mount>/<op>/<role>` for a dynamic request.
    fn engine_url(&self, req: &DynamicRequest, op: &str) -> Result<Url, ProviderError> {
        check_mount(&self.api.name, "mount", &req.mount)?;
        if req.role.is_empty() || secret_segments(&req.role).is_none_or(|s| s.len() != 1) {
            return Err(self
                .api
                .client
                .config_error(format!("role {:?} is not a role name", req.role)));
        }
        let mut segments: Vec<&str> = mount_segments(&req.mount).collect();
        segments.push(op);
        segments.push(&req.role);
        self.api.url(&segments)
    }

    /// `GET <mount>/creds/<role>`: a new database credential under a new lease. The value is
    /// `{"username":…,"password":…}`.
    fn issue_database(&self, req: &DynamicRequest) -> Result<Issued, ProviderError> {
        let what = format!("database credential from {}/creds/{}", req.mount, req.role);
        let resp = self.send(Request::get(self.engine_url(req, "creds")?), None, &what)?;
        #[derive(Deserialize)]
        struct Creds<'a> {
            #[serde(default)]
            lease_id: String,
            #[serde(default)]
            lease_duration: u64,
            #[serde(default)]
            renewable: bool,
            #[serde(borrow)]
            data: Option<CredsData<'a>>,
        }
        #[derive(Deserialize)]
        struct CredsData<'a> {
            #[serde(borrow)]
            username: Option<&'a RawValue>,
            #[serde(borrow)]
            password: Option<&'a RawValue>,
        }
        let malformed = || {
            self.api
                .client
                .unavailable(format!("{what}: not the JSON a database engine sends"))
        };
        let parsed: Creds<'_> = serde_json::from_slice(&resp.body).map_err(|_| malformed())?;
        let data = parsed.data.ok_or_else(malformed)?;
        let (Some(user), Some(pass)) = (data.username, data.password) else {
            return Err(malformed());
        };
        if !user.get().starts_with('"') || !pass.get().starts_with('"') {
            return Err(malformed());
        }
        // Both are JSON strings already escaped by Vault: copy them as they are.
        let mut buf = Zeroizing::new(Vec::with_capacity(32 + user.get().len() + pass.get().len()));
        buf.extend_from_slice(b"{\"username\":");
        buf.extend_from_slice(user.get().as_bytes());
        buf.extend_from_slice(b",\"password\":");
        buf.extend_from_slice(pass.get().as_bytes());
        buf.push(b'}');
        if parsed.lease_id.is_empty() {
            return Err(malformed());
        }
        Ok(Issued {
            value: SecretValue::from_zeroizing(buf),
            lease_id: Some(parsed.lease_id),
            ttl: Duration::from_secs(parsed.lease_duration),
            renewable: parsed.renewable,
            label: None,
        })
    }

    /// `POST <mount>/issue/<role>`: a new certificate and key. The value is PEM: the
    /// certificate, the issuing chain, the private key.
    fn issue_pki(&self, req: &DynamicRequest) -> Result<Issued, ProviderError> {
        let what = format!("certificate from {}/issue/{}", req.mount, req.role);
        let Some(cn) = req.common_name.as_deref() else {
            return Err(self.api.client.config_error("engine pki needs common_name"));
        };
        let mut body = serde_json::json!({ "common_name": cn });
        if let Some(ttl) = req.ttl {
            body["ttl"] = format!("{}s", ttl.as_secs().max(1)).into();
        }
        if !req.alt_names.is_empty() {
            body["alt_names"] = req.alt_names.join(",").into();
        }
        if !req.ip_sans.is_empty() {
            body["ip_sans"] = req.ip_sans.join(",").into();
        }
        let body =
            serde_json::to_vec(&body).map_err(|e| self.api.client.config_error(e.to_string()))?;
        let resp = self.send(
            Request::post(self.engine_url(req, "issue")?),
            Some(Zeroizing::new(body)),
            &what,
        )?;
        #[derive(Deserialize)]
        struct Cert<'a> {
            #[serde(borrow)]
            data: Option<CertData<'a>>,
        }
        #[derive(Deserialize)]
        struct CertData<'a> {
            certificate: Option<String>,
            #[serde(default)]
            ca_chain: Vec<String>,
            issuing_ca: Option<String>,
            #[serde(borrow)]
            private_key: Option<&'a RawValue>,
            serial_number: Option<String>,
            expiration: Option<i64>,
        }
        let malformed = || {
            self.api
                .client
                .unavailable(format!("{what}: not the JSON a pki engine sends"))
        };
        let parsed: Cert<'_> = serde_json::from_slice(&resp.body).map_err(|_| malformed())?;
        let data = parsed.data.ok_or_else(malformed)?;
        let (Some(cert), Some(key_raw), Some(exp)) =
            (data.certificate, data.private_key, data.expiration)
        else {
            return Err(malformed());
        };
        let key = http::json_string(key_raw).ok_or_else(malformed)?;
        let chain: Vec<String> = if data.ca_chain.is_empty() {
            data.issuing_ca.into_iter().collect()
        } else {
            data.ca_chain
        };
        let mut buf = Zeroizing::new(Vec::with_capacity(cert.len() + key.len() + 4096));
        for part in std::iter::once(cert.as_str()).chain(chain.iter().map(String::as_str)) {
            buf.extend_from_slice(part.trim_end().as_bytes());
            buf.push(b'\n');
        }
        buf.extend_from_slice(key.trim_end().as_bytes());
        buf.push(b'\n');
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Ok(Issued {
            value: SecretValue::from_zeroizing(buf),
            lease_id: None,
            ttl: Duration::from_secs(exp.saturating_sub(now).max(0) as u64),
            renewable: false,
            label: data.serial_number,
        })
    }
}

/// One part of a PEM bundle made by [`VaultProvider::issue_pki`]: `certificate` (the first
/// certificate), `ca_chain` (the certificates after it) or `private_key`.
pub fn pem_part(value: &SecretValue, key: &str) -> Result<SecretValue, KeyError> {
    let text = std::str::from_utf8(value.expose()).map_err(|_| KeyError::NotJson)?;
    let mut certs: Vec<&str> = Vec::new();
    let mut private: Option<&str> = None;
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let Some(label_end) = block[11..].find("-----") else {
            break;
        };
        let label = &block[11..11 + label_end];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = block.find(&end_marker) else {
            break;
        };
        let whole = &block[..end + end_marker.len()];
        if label == "CERTIFICATE" {
            certs.push(whole);
        } else if label.ends_with("PRIVATE KEY") {
            private = Some(whole);
        }
        rest = &block[end + end_marker.len()..];
    }
    let parts: Vec<&str> = match key {
        "certificate" => certs.first().copied().into_iter().collect(),
        "ca_chain" => certs.iter().skip(1).copied().collect(),
        "private_key" => private.into_iter().collect(),
        other => return Err(KeyError::Missing(other.to_string())),
    };
    if parts.is_empty() {
        return Err(KeyError::Missing(key.to_string()));
    }
    let mut out = Zeroizing::new(Vec::new());
    for p in parts {
        out.extend_from_slice(p.as_bytes());
        out.push(b'\n');
    }
    Ok(SecretValue::from_zeroizing(out))
}

impl VaultProvider {
    fn key_error(&self, path: &str, source: KeyError) -> ProviderError {
        ProviderError::key(KIND, &self.api.name, path, source)
    }
}

/// Mount paths may be nested (`kv/team-a`).
fn mount_segments(mount: &str) -> impl Iterator<Item = &str> {
    mount.split('/').filter(|s| !s.is_empty())
}

fn check_mount(name: &str, key: &str, mount: &str) -> Result<(), ProviderError> {
    if mount_segments(mount).next().is_none()
        || mount_segments(mount).any(|s| s == "." || s == "..")
    {
        return Err(ProviderError::config(
            KIND,
            name,
            format!("{key}: {mount:?} is not a mount path"),
        ));
    }
    Ok(())
}

/// The segments of a secret path; `None` for empty, `.` or `..` segments, which a URL would
/// resolve into another path (and so, potentially, another mount).
fn secret_segments(path: &str) -> Option<Vec<&str>> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return None;
    }
    let segs: Vec<&str> = trimmed.split('/').collect();
    if segs
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == ".." || s.contains('\0'))
    {
        return None;
    }
    Some(segs)
}

/// Picks the value out of a KV `data` object (raw JSON borrowed from the zeroizing body):
/// with `key`, that field; without, the only field if there is exactly one, else the whole
/// object as compact JSON. Strings give their text, anything else compact JSON.
/// `Ok(None)` when `data` is not a JSON object.
fn select(data: &RawValue, key: Option<&str>) -> Result<Option<SecretValue>, KeyError> {
    let Ok(fields) = parse_object(data) else {
        return Ok(None);
    };
    match key {
        Some(k) => match fields.iter().find(|(name, _)| name == k) {
            Some((_, raw)) => Ok(Some(http::raw_json_value(raw))),
            None => Err(KeyError::Missing(k.to_string())),
        },
        None if fields.len() == 1 => Ok(Some(http::raw_json_value(fields[0].1))),
        None => Ok(Some(SecretValue::from_zeroizing(http::compact_json(
            data.get(),
        )))),
    }
}

/// The fields of a JSON object, values still raw (borrowed) JSON.
fn parse_object(data: &RawValue) -> Result<Vec<(Cow<'_, str>, &RawValue)>, serde_json::Error> {
    struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);
    impl<'de> Deserialize<'de> for Fields<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Fields<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Self::Value, A::Error> {
                    let mut out = Vec::new();
                    while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                        let v: &'de RawValue = map.next_value()?;
                        out.push((k, v));
                    }
                    Ok(Fields(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Fields<'_>>(data.get()).map(|f| f.0)
}

/// Vault's `{"errors": ["...", ...]}`, joined.
fn vault_errors(resp: &Response) -> Option<String> {
    #[derive(Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    let e: Errors = serde_json::from_slice(&resp.body).ok()?;
    let joined = e.errors.join("; ");
    (!joined.is_empty()).then_some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn selection_rules() {
        let two = raw(r#"{"user": "app", "password":"p\"w", "port": 5432, "o": {"a": [1, 2]}}"#);
        let pick = |k: Option<&str>| select(&two, k).unwrap().unwrap();
        assert_eq!(pick(Some("user")).expose(), b"app");
        assert_eq!(pick(Some("password")).expose(), b"p\"w");
        assert_eq!(pick(Some("port")).expose(), b"5432");
        assert_eq!(pick(Some("o")).expose(), br#"{"a":[1,2]}"#);
        assert_eq!(
            pick(None).expose(),
            br#"{"user":"app","password":"p\"w","port":5432,"o":{"a":[1,2]}}"#
        );
        assert_eq!(
            select(&two, Some("nope")).unwrap_err(),
            KeyError::Missing("nope".into())
        );
        let one = raw(r#"{"value": "only one"}"#);
        assert_eq!(select(&one, None).unwrap().unwrap().expose(), b"only one");
        assert!(select(&raw("[1]"), None).unwrap().is_none());
    }

    #[test]
    fn pem_parts() {
        let bundle = SecretValue::new(
            b"-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n\
              -----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n\
              -----BEGIN CERTIFICATE-----\nCCC\n-----END CERTIFICATE-----\n\
              -----BEGIN RSA PRIVATE KEY-----\nKKK\n-----END RSA PRIVATE KEY-----\n"
                .to_vec(),
        );
        let part =
            |k: &str| String::from_utf8(pem_part(&bundle, k).unwrap().expose().to_vec()).unwrap();
        assert_eq!(
            part("certificate"),
            "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n"
        );
        assert!(part("ca_chain").contains("BBB") && part("ca_chain").contains("CCC"));
        assert!(!part("ca_chain").contains("AAA"));
        assert_eq!(
            part("private_key"),
            "-----BEGIN RSA PRIVATE KEY-----\nKKK\n-----END RSA PRIVATE KEY-----\n"
        );
        assert_eq!(
            pem_part(&bundle, "other").unwrap_err(),
            KeyError::Missing("other".into())
        );
    }

    #[test]
    fn compact_keeps_string_whitespace() {
        assert_eq!(
            &http::compact_json("{ \"a b\" : \" x \\\" y \" }")[..],
            b"{\"a b\":\" x \\\" y \"}"
        );
    }

    #[test]
    fn path_segments_refuse_traversal() {
        assert_eq!(secret_segments("app/db"), Some(vec!["app", "db"]));
        assert_eq!(secret_segments("/app/db/"), Some(vec!["app", "db"]));
        assert_eq!(secret_segments("app/../sys"), None);
        assert_eq!(secret_segments("app//db"), None);
        assert_eq!(secret_segments("."), None);
        assert_eq!(secret_segments(""), None);
    }

    #[test]
    fn settings_defaults_and_auth_method_default() {
        let s: VaultSettings = serde_json::from_value(serde_json::json!({
            "address": "https://vault:8200",
            "auth": { "token_file": "/etc/dso/vault.token" }
        }))
        .unwrap();
        assert_eq!(s.mount, "secret");
        assert_eq!(s.kv_version, 2);
        assert_eq!(
            s.auth,
            VaultAuthSettings::Token {
                token_file: Some("/etc/dso/vault.token".into())
            }
        );
        let s: VaultSettings = serde_json::from_value(serde_json::json!({
            "address": "https://vault:8200",
            "auth": { "method": "approle", "role_id_file": "/r" }
        }))
        .unwrap();
        match s.auth {
            VaultAuthSettings::Approle { mount, .. } => assert_eq!(mount, "approle"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_http_refused_for_remote_address() {
        let s = VaultSettings {
            address: "http://vault.example:8200".into(),
            mount: "secret".into(),
            kv_version: 2,
            namespace: None,
            auth: VaultAuthSettings::default(),
            ca_file: None,
            client_cert: None,
            client_key: None,
        };
        let err = VaultProvider::new("v", &s, None, Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("https is required"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_token() {
        let s = VaultSettings {
            address: "https://vault.example:8200".into(),
            mount: "secret".into(),
            kv_version: 2,
            namespace: None,
            auth: VaultAuthSettings::default(),
            ca_file: None,
            client_cert: None,
            client_key: None,
        };
        let p = VaultProvider::new(
            "v",
            &s,
            Some(Zeroizing::new("s.envtoken123".into())),
            Duration::from_secs(1),
        )
        .unwrap();
        let session = VaultSession::from_grant(
            TokenGrant {
                token: Zeroizing::new("s.sessiontoken".into()),
                ttl: None,
                renewable: false,
            },
            Instant::now(),
        );
        let dbg = format!("{p:?} {session:?}");
        assert!(
            !dbg.contains("envtoken") && !dbg.contains("sessiontoken"),
            "{dbg}"
        );
    }

    /// A stand-in for Vault's auth endpoints that records what was called.
    struct FakeAuth {
        calls: RefCell<Vec<&'static str>>,
        renew_ok: bool,
        renew_ttl: Duration,
    }

    impl VaultAuthApi for FakeAuth {
        fn login(&self, _deadline: Instant) -> Result<TokenGrant, ProviderError> {
            self.calls.borrow_mut().push("login");
            Ok(TokenGrant {
                token: Zeroizing::new("s.new".into()),
                ttl: Some(Duration::from_secs(3600)),
                renewable: true,
            })
        }
        fn renew_self(&self, token: &str, _deadline: Instant) -> Result<TokenGrant, ProviderError> {
            self.calls.borrow_mut().push("renew");
            if self.renew_ok {
                Ok(TokenGrant {
                    token: Zeroizing::new(token.to_string()),
                    ttl: Some(self.renew_ttl),
                    renewable: true,
                })
            } else {
                Err(ProviderError::denied(KIND, "v", "permission denied"))
            }
        }
    }

    fn session(ttl: u64, renewable: bool, t0: Instant) -> VaultSession {
        VaultSession::from_grant(
            TokenGrant {
                token: Zeroizing::new("s.old".into()),
                ttl: Some(Duration::from_secs(ttl)),
                renewable,
            },
            t0,
        )
    }

    #[test]
    fn renew_if_needed_renews_relogs_or_waits() {
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(86400);
        let fake = |renew_ok, renew_ttl| FakeAuth {
            calls: RefCell::new(Vec::new()),
            renew_ok,
            renew_ttl: Duration::from_secs(renew_ttl),
        };

        // Fresh: nothing to do.
        let api = fake(true, 60);
        let mut s = session(60, true, t0);
        assert_eq!(
            s.renew_if_needed(&api, t0 + Duration::from_secs(10), far)
                .unwrap(),
            Renewal::NotNeeded
        );
        assert!(api.calls.borrow().is_empty());

        // Two thirds through the TTL: renewed, same token, clock restarted.
        let now = t0 + Duration::from_secs(41);
        assert_eq!(s.renew_if_needed(&api, now, far).unwrap(), Renewal::Renewed);
        assert_eq!(*api.calls.borrow(), ["renew"]);
        assert_eq!(s.token(), "s.old");
        assert_eq!(s.expires_at(), Some(now + Duration::from_secs(60)));
        assert!(!s.needs_renewal(now + Duration::from_secs(1)));

        // Renewal refused: logged in again.
        let api = fake(false, 0);
        let mut s = session(60, true, t0);
        assert_eq!(
            s.renew_if_needed(&api, t0 + Duration::from_secs(50), far)
                .unwrap(),
            Renewal::LoggedIn
        );
        assert_eq!(*api.calls.borrow(), ["renew", "login"]);
        assert_eq!(s.token(), "s.new");

        // Not renewable: straight to login.
        let api = fake(true, 60);
        let mut s = session(60, false, t0);
        assert_eq!(
            s.renew_if_needed(&api, t0 + Duration::from_secs(50), far)
                .unwrap(),
            Renewal::LoggedIn
        );
        assert_eq!(*api.calls.borrow(), ["login"]);

        // Renewal capped by max TTL (much shorter than before): log in too.
        let api = fake(true, 5);
        let mut s = session(60, true, t0);
        assert_eq!(
            s.renew_if_needed(&api, t0 + Duration::from_secs(50), far)
                .unwrap(),
            Renewal::LoggedIn
        );
        assert_eq!(*api.calls.borrow(), ["renew", "login"]);

        // A token without a TTL (root, or from a file) is never renewed.
        let api = fake(true, 60);
        let mut s = VaultSession::from_grant(
            TokenGrant {
                token: Zeroizing::new("s.file".into()),
                ttl: None,
                renewable: false,
            },
            t0,
        );
        assert_eq!(
            s.renew_if_needed(&api, far, far).unwrap(),
            Renewal::NotNeeded
        );
    }
}

//! The AWS provider: Secrets Manager `GetSecretValue` (and `DescribeSecret` for cheap version
//! checks) over the JSON 1.1 protocol, signed with our own SigV4 ([`sigv4`]), with credentials
//! from the environment, the shared profile files or the EC2 instance role ([`credentials`]).
//!
//! dso.yaml: `{ type: aws, region, profile, endpoint, imds_endpoint, ca_file }`; a secret's
//! `path` is the secret's name or ARN, `key` picks a field of a JSON `SecretString`, `version`
//! pins a `VersionId`.

pub mod credentials;
pub mod imds;
pub mod sigv4;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::http::{self, ClientOptions, HttpClient, Request, TlsOptions, Url, UrlPolicy};
use super::{FetchRequest, Fetched, Provider, ProviderError, Reason};
pub use crate::config::AwsSettings;
use crate::secrets::SecretValue;
pub use credentials::{
    ChainSettings, CredentialSource, Credentials, CredentialsError, CredentialsProvider, Env,
};
pub use imds::ImdsClient;

const KIND: &str = "aws";
const SERVICE: &str = "secretsmanager";
const JSON_1_1: &str = "application/x-amz-json-1.1";
/// Largest response accepted from Secrets Manager (secrets are at most 64 KiB, base64 and JSON
/// around them included this leaves ample room).
const MAX_RESPONSE: usize = 1 << 20;

/// AWS Secrets Manager.
pub struct AwsProvider {
    name: String,
    region: String,
    /// `https://secretsmanager.<region>.amazonaws.com/` or the `endpoint` setting.
    url: Url,
    /// `host[:port]` of `url` as the HTTP client sends it (`Host` / `:authority`), signed.
    host: String,
    credentials: Arc<CredentialsProvider>,
    http: HttpClient,
    /// Cleared after `DescribeSecret` was refused: version checks then use `GetSecretValue`.
    describe_allowed: AtomicBool,
}

impl std::fmt::Debug for AwsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsProvider")
            .field("name", &self.name)
            .field("region", &self.region)
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl AwsProvider {
    /// The provider for a dso.yaml entry, reading the process environment for credentials,
    /// profile and region.
    pub fn from_settings(
        name: &str,
        settings: &AwsSettings,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        Self::new(name, settings, Env::from_process(), timeout)
    }

    /// The provider from explicit settings and environment (nothing read from the process
    /// environment), with the default credentials chain.
    pub fn new(
        name: &str,
        settings: &AwsSettings,
        env: Env,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let http = HttpClient::new(
            KIND,
            name,
            &ClientOptions::new(timeout).tls(TlsOptions {
                ca_file: settings.ca_file.clone(),
                ..TlsOptions::default()
            }),
        )?;
        let imds_endpoint = settings
            .imds_endpoint
            .as_deref()
            .unwrap_or(imds::DEFAULT_ENDPOINT);
        let imds = ImdsClient::new(name, imds_endpoint, imds::DEFAULT_TIMEOUT.min(timeout))?;
        let chain = ChainSettings {
            env,
            profile: settings.profile.clone(),
            imds: Some(imds),
        };
        let region = resolve_region(name, settings, &chain)?;
        let credentials = CredentialsProvider::chain(chain);
        Self::with_parts(
            name,
            &region,
            settings.endpoint.as_deref(),
            credentials,
            http,
        )
    }

    /// The provider with a given credentials provider (tests, the agent sharing one).
    pub fn with_parts(
        name: &str,
        region: &str,
        endpoint: Option<&str>,
        credentials: CredentialsProvider,
        http: HttpClient,
    ) -> Result<Self, ProviderError> {
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ProviderError::config(
                KIND,
                name,
                format!("invalid region {region:?}"),
            ));
        }
        let url = match endpoint {
            Some(e) => http::parse_url(KIND, name, "endpoint", e, UrlPolicy::HttpsOrLoopback)?,
            None => {
                let suffix = if region.starts_with("cn-") {
                    "amazonaws.com.cn"
                } else {
                    "amazonaws.com"
                };
                let default = format!("https://{SERVICE}.{region}.{suffix}/");
                http::parse_url(KIND, name, "endpoint", &default, UrlPolicy::HttpsOrLoopback)?
            }
        };
        let host = signed_host(&url).ok_or_else(|| {
            ProviderError::config(KIND, name, format!("endpoint {url} has no host"))
        })?;
        Ok(Self {
            name: name.to_string(),
            region: region.to_string(),
            url,
            host,
            credentials: Arc::new(credentials),
            http,
            describe_allowed: AtomicBool::new(true),
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn endpoint(&self) -> &str {
        self.url.as_str()
    }

    /// The credentials provider (the agent keeps it to refresh ahead of use).
    pub fn credentials(&self) -> &Arc<CredentialsProvider> {
        &self.credentials
    }

    fn denied(&self, detail: impl Into<String>) -> ProviderError {
        ProviderError::denied(KIND, &self.name, detail)
    }

    fn unavailable(&self, detail: impl Into<String>) -> ProviderError {
        ProviderError::unavailable(KIND, &self.name, detail)
    }

    fn credentials_error(&self, e: CredentialsError) -> ProviderError {
        match e {
            CredentialsError::NotFound { .. } => self.denied(e.to_string()),
            CredentialsError::Imds(_) => self.unavailable(e.to_string()),
            CredentialsError::PartialEnv { .. }
            | CredentialsError::Profile { .. }
            | CredentialsError::File { .. } => self.http.config_error(e.to_string()),
        }
    }

    /// One Secrets Manager action: sign, send (with the shared retries on throttling and 5xx),
    /// map errors. Retried once with reloaded credentials when AWS says the session token
    /// expired. The whole action, retries included, fits in `runtime.fetch_timeout`.
    fn call(
        &self,
        action: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        let deadline = self.http.deadline();
        let body =
            Zeroizing::new(serde_json::to_vec(body).map_err(|e| self.unavailable(e.to_string()))?);
        let mut reloaded = false;
        loop {
            let creds = self
                .credentials
                .credentials()
                .map_err(|e| self.credentials_error(e))?;
            match self.call_once(action, &body, &creds, deadline) {
                Err(AwsCallError::Service { code, .. })
                    if !reloaded && creds.expiration().is_some() && is_expired_code(&code) =>
                {
                    tracing::debug!(provider = %self.name, %code, "credentials expired; reloading");
                    self.credentials.invalidate();
                    reloaded = true;
                }
                Err(e) => return Err(self.map_call_error(e, path)),
                Ok(out) => return Ok(out),
            }
        }
    }

    fn call_once(
        &self,
        action: &str,
        body: &Zeroizing<Vec<u8>>,
        creds: &Credentials,
        deadline: Instant,
    ) -> Result<Zeroizing<Vec<u8>>, AwsCallError> {
        let target = format!("{SERVICE}.{action}");
        let signed = sigv4::sign(
            &sigv4::SignableRequest {
                method: "POST",
                path: self.url.path(),
                query: &[],
                headers: &[
                    ("host", self.host.as_str()),
                    ("content-type", JSON_1_1),
                    ("x-amz-target", target.as_str()),
                ],
                payload: body,
            },
            creds,
            &sigv4::SigningParams {
                region: &self.region,
                service: SERVICE,
                time: SystemTime::now(),
            },
        )
        .map_err(|e| AwsCallError::Local(format!("cannot sign the request: {e}")))?;
        let bad_header = |e: http::InvalidHeader| AwsCallError::Local(e.to_string());
        let mut req = Request::post(self.url.clone())
            .header("x-amz-target", &target)
            .map_err(bad_header)?
            .header("x-amz-date", &signed.amz_date)
            .map_err(bad_header)?;
        if let Some(token) = &signed.security_token {
            req = req
                .secret_header("x-amz-security-token", token)
                .map_err(bad_header)?;
        }
        let req = req
            .secret_header("authorization", &signed.authorization)
            .map_err(bad_header)?
            .body(JSON_1_1, body.clone())
            .map_err(bad_header)?;
        let resp = self
            .http
            .send_with_retries_if(&req, deadline, |r| {
                http::is_retryable_status(r.status)
                    || (r.status == 400
                        && error_code(r.header("x-amzn-errortype"), &r.body)
                            .0
                            .is_some_and(|c| is_throttling_code(&c)))
            })
            .map_err(AwsCallError::Transport)?;
        if resp.body.len() > MAX_RESPONSE {
            return Err(AwsCallError::Local(format!(
                "response larger than {MAX_RESPONSE} bytes"
            )));
        }
        if resp.is_success() {
            let mut resp = resp;
            return Ok(std::mem::take(&mut resp.body));
        }
        let (code, message) = error_code(resp.header("x-amzn-errortype"), &resp.body);
        Err(AwsCallError::Service {
            status: resp.status,
            code: code.unwrap_or_default(),
            message: message.map(|m| http::sanitize_detail(&m, &[])),
        })
    }

    fn map_call_error(&self, e: AwsCallError, path: &str) -> ProviderError {
        match e {
            AwsCallError::Transport(e) => e,
            AwsCallError::Local(detail) => self.unavailable(detail),
            AwsCallError::Service {
                status,
                code,
                message,
            } => {
                let shown = if code.is_empty() {
                    format!("HTTP {status}")
                } else {
                    code.clone()
                };
                let detail = match message {
                    Some(m) => format!("{shown}: {m}"),
                    None => shown,
                };
                if code == "ResourceNotFoundException" {
                    ProviderError::not_found(KIND, &self.name, path)
                } else if is_denied_code(&code) || status == 401 || status == 403 {
                    self.denied(detail)
                } else {
                    self.unavailable(detail)
                }
            }
        }
    }

    /// `GetSecretValue`: the value (`SecretString` bytes, or `SecretBinary` decoded) and its
    /// `VersionId`.
    pub fn get_secret_value(&self, req: &FetchRequest) -> Result<Fetched, ProviderError> {
        let mut body = serde_json::json!({ "SecretId": req.path });
        if let Some(v) = &req.version {
            body["VersionId"] = serde_json::Value::String(v.clone());
        }
        let raw = self.call("GetSecretValue", &req.path, &body)?;
        let out: GetSecretValueOutput = serde_json::from_slice(&raw).map_err(|e| {
            self.unavailable(format!(
                "GetSecretValue response is not the expected JSON ({e})"
            ))
        })?;
        let value = match (out.secret_string, out.secret_binary) {
            (Some(s), _) => SecretValue::from_zeroizing(Zeroizing::new(s.into_bytes())),
            (None, Some(b64)) => {
                let b64 = Zeroizing::new(b64);
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|_| self.unavailable("SecretBinary is not valid base64"))?;
                SecretValue::new(bytes)
            }
            (None, None) => {
                return Err(self.unavailable(format!(
                    "{:?} has neither SecretString nor SecretBinary",
                    req.path
                )));
            }
        };
        let value = match &req.key {
            Some(k) => value
                .select_key(k)
                .map_err(|source| ProviderError::key(KIND, &self.name, &req.path, source))?,
            None => value,
        };
        Ok(Fetched {
            value,
            version: out.version_id,
        })
    }

    /// `DescribeSecret`: the `VersionId` labelled `AWSCURRENT`, without reading the value. Needs
    /// `secretsmanager:DescribeSecret`.
    pub fn describe_current_version(&self, path: &str) -> Result<Option<String>, ProviderError> {
        let body = serde_json::json!({ "SecretId": path });
        let raw = self.call("DescribeSecret", path, &body)?;
        let out: DescribeSecretOutput = serde_json::from_slice(&raw).map_err(|e| {
            self.unavailable(format!(
                "DescribeSecret response is not the expected JSON ({e})"
            ))
        })?;
        Ok(out.version_ids_to_stages.and_then(|m| {
            m.into_iter()
                .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
                .map(|(v, _)| v)
        }))
    }
}

impl Provider for AwsProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn fetch(&self, req: &FetchRequest) -> Result<Fetched, ProviderError> {
        self.get_secret_value(req)
    }

    /// A pinned version is its own version. Otherwise `DescribeSecret` (no value leaves AWS);
    /// if the policy does not grant it, `GetSecretValue` from then on.
    fn version(&self, req: &FetchRequest) -> Result<Option<String>, ProviderError> {
        if let Some(v) = &req.version {
            return Ok(Some(v.clone()));
        }
        if self.describe_allowed.load(Ordering::Relaxed) {
            match self.describe_current_version(&req.path) {
                Err(ProviderError {
                    reason: Reason::Denied(detail),
                    ..
                }) if detail.starts_with("AccessDenied") => {
                    tracing::info!(
                        provider = %self.name,
                        "secretsmanager:DescribeSecret not granted; checking versions with GetSecretValue"
                    );
                    self.describe_allowed.store(false, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        self.get_secret_value(req).map(|f| f.version)
    }
}

#[derive(Deserialize)]
struct GetSecretValueOutput {
    #[serde(rename = "VersionId", default)]
    version_id: Option<String>,
    // Plain Strings, moved into zeroizing storage right after parsing.
    #[serde(rename = "SecretString", default)]
    secret_string: Option<String>,
    #[serde(rename = "SecretBinary", default)]
    secret_binary: Option<String>,
}

#[derive(Deserialize)]
struct DescribeSecretOutput {
    #[serde(rename = "VersionIdsToStages", default)]
    version_ids_to_stages: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

enum AwsCallError {
    /// From the shared HTTP client: timeout, TLS, connection (already a provider error).
    Transport(ProviderError),
    /// Ours: a header we could not build, an oversized response.
    Local(String),
    Service {
        status: u16,
        code: String,
        message: Option<String>,
    },
}

/// Error codes that mean "these credentials may not do this".
fn is_denied_code(code: &str) -> bool {
    matches!(
        code,
        "AccessDeniedException"
            | "AccessDenied"
            | "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "ExpiredTokenException"
            | "ExpiredToken"
            | "RequestExpired"
            | "DecryptionFailure"
    )
}

/// AWS's throttling codes, which come with HTTP 400.
fn is_throttling_code(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "SlowDown"
    )
}

fn is_expired_code(code: &str) -> bool {
    matches!(code, "ExpiredTokenException" | "ExpiredToken")
}

/// The error code (`__type` of a JSON error, `x-amzn-ErrorType`, or `<Code>` of an XML one)
/// and message, shortened. AWS error messages name the caller and the action, never a key.
fn error_code(header: Option<&str>, body: &[u8]) -> (Option<String>, Option<String>) {
    // "com.amazonaws.secretsmanager#ResourceNotFoundException" or
    // "ResourceNotFoundException:http://internal.amazon.com/..."
    let clean = |s: &str| -> String {
        let s = s.rsplit('#').next().unwrap_or(s);
        let s = s.split(':').next().unwrap_or(s);
        s.trim().to_string()
    };
    let short = |s: &str| -> String {
        let s = s.trim();
        if s.chars().count() > 300 {
            format!("{}…", s.chars().take(300).collect::<String>())
        } else {
            s.to_string()
        }
    };
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let code = v
            .get("__type")
            .or_else(|| v.get("code"))
            .or_else(|| v.get("Code"))
            .and_then(|c| c.as_str())
            .map(clean)
            .or_else(|| header.map(clean));
        let message = v
            .get("message")
            .or_else(|| v.get("Message"))
            .and_then(|m| m.as_str())
            .map(short);
        return (code.filter(|c| !c.is_empty()), message);
    }
    let text = String::from_utf8_lossy(body);
    let tag = |name: &str| -> Option<String> {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].to_string())
    };
    let code = tag("Code").map(|c| clean(&c)).or_else(|| header.map(clean));
    (
        code.filter(|c| !c.is_empty()),
        tag("Message").map(|m| short(&m)),
    )
}

/// `host[:port]` as reqwest/hyper send it: the port only when it is not the scheme's default
/// (`Url::port` is `None` then).
fn signed_host(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    })
}

/// `region` setting, `AWS_REGION`/`AWS_DEFAULT_REGION`, the profile's `region`, then (only when
/// the instance role is the credential source anyway) the instance's region.
fn resolve_region(
    name: &str,
    settings: &AwsSettings,
    chain: &ChainSettings,
) -> Result<String, ProviderError> {
    if let Some(r) = &settings.region {
        return Ok(r.clone());
    }
    if let Some(r) = chain.env.region() {
        return Ok(r.to_string());
    }
    let (profile, _) = chain.profile_name();
    match credentials::profile_region(&chain.env, &profile) {
        Ok(Some(r)) => return Ok(r),
        Ok(None) => {}
        Err(e) => return Err(ProviderError::config(KIND, name, e.to_string())),
    }
    if let Some(imds) = &chain.imds {
        if let Ok(r) = imds.region() {
            return Ok(r);
        }
    }
    Err(ProviderError::config(
        KIND,
        name,
        "no region: set `region` in dso.yaml, AWS_REGION, or `region` in the profile",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes() {
        assert_eq!(
            error_code(
                None,
                br#"{"__type":"com.amazonaws.secretsmanager#ResourceNotFoundException","message":"Secrets Manager can't find the specified secret."}"#
            ),
            (
                Some("ResourceNotFoundException".into()),
                Some("Secrets Manager can't find the specified secret.".into())
            )
        );
        assert_eq!(
            error_code(
                None,
                br#"{"__type":"AccessDeniedException:http://internal/"}"#
            )
            .0,
            Some("AccessDeniedException".into())
        );
        assert_eq!(
            error_code(
                None,
                b"<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code><Message>nope</Message></Error></ErrorResponse>"
            ),
            (Some("SignatureDoesNotMatch".into()), Some("nope".into()))
        );
        assert_eq!(
            error_code(Some("ThrottlingException"), b"").0,
            Some("ThrottlingException".into())
        );
        assert_eq!(error_code(None, b"garbage"), (None, None));
    }

    #[test]
    fn urls() {
        let host = |u: &str| signed_host(&Url::parse(u).unwrap());
        assert_eq!(
            host("https://secretsmanager.us-east-1.amazonaws.com/").as_deref(),
            Some("secretsmanager.us-east-1.amazonaws.com")
        );
        assert_eq!(
            host("http://127.0.0.1:5000/").as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(
            host("https://vpce.example:443/").as_deref(),
            Some("vpce.example")
        );
        assert_eq!(host("http://[::1]:4566").as_deref(), Some("[::1]:4566"));
        let creds = || CredentialsProvider::fixed(Credentials::new("a", "b", None));
        for bad in [
            "http://10.0.0.1:4566",
            "https://u:p@h",
            "ftp://h",
            "not a url",
        ] {
            assert!(
                AwsProvider::with_parts("a", "us-east-1", Some(bad), creds(), client()).is_err(),
                "{bad}"
            );
        }
    }

    fn client() -> HttpClient {
        HttpClient::new(KIND, "a", &ClientOptions::new(Duration::from_secs(1))).unwrap()
    }

    #[test]
    fn settings_and_region() {
        let s: AwsSettings = serde_json::from_value(serde_json::json!({
            "region": "eu-west-1", "profile": "prod"
        }))
        .unwrap();
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        let bad = serde_json::from_value::<AwsSettings>(serde_json::json!({"regoin": "x"}));
        assert!(bad.is_err());

        let chain = |env: Env| ChainSettings {
            env,
            profile: None,
            imds: None,
        };
        let none = AwsSettings::default();
        assert_eq!(
            resolve_region(
                "a",
                &none,
                &chain(Env::from_pairs([("AWS_DEFAULT_REGION", "us-west-2")]))
            )
            .unwrap(),
            "us-west-2"
        );
        assert_eq!(
            resolve_region(
                "a",
                &none,
                &chain(Env::from_pairs([
                    ("AWS_REGION", "eu-central-1"),
                    ("AWS_DEFAULT_REGION", "x")
                ]))
            )
            .unwrap(),
            "eu-central-1"
        );
        assert!(
            resolve_region(
                "a",
                &none,
                &chain(Env::from_pairs([("HOME", "/nonexistent")]))
            )
            .is_err()
        );
    }

    #[test]
    fn default_endpoints() {
        let creds = || CredentialsProvider::fixed(Credentials::new("a", "b", None));
        let t = client;
        let p = AwsProvider::with_parts("a", "us-east-1", None, creds(), t()).unwrap();
        assert_eq!(
            p.endpoint(),
            "https://secretsmanager.us-east-1.amazonaws.com/"
        );
        let p = AwsProvider::with_parts("a", "cn-north-1", None, creds(), t()).unwrap();
        assert_eq!(
            p.endpoint(),
            "https://secretsmanager.cn-north-1.amazonaws.com.cn/"
        );
        assert!(AwsProvider::with_parts("a", "us-east-1.evil.com/", None, creds(), t()).is_err());
        let p = AwsProvider::with_parts(
            "a",
            "us-east-1",
            Some("http://127.0.0.1:5000"),
            creds(),
            t(),
        )
        .unwrap();
        assert_eq!(p.endpoint(), "http://127.0.0.1:5000/");
        assert_eq!(p.host, "127.0.0.1:5000");
    }
}

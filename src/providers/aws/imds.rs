//! IMDSv2 client for the EC2 instance role: session token (`PUT /latest/api/token`), role name,
//! role credentials, and the instance's region. Short timeouts, so that a host that is not on
//! EC2 gives up within about a second instead of stalling a `docker run`.

use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::credentials::{CredentialSource, Credentials};
use crate::audit::parse_rfc3339;
use crate::providers::ProviderError;
use crate::providers::http::{self, ClientOptions, HttpClient, Request, RetryPolicy, Url};

pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
/// Connect and whole-request timeout of each IMDS call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Lifetime asked for the session token; one token serves the two or three calls of a load.
const TOKEN_TTL_SECONDS: &str = "60";
const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials/";
/// Responses larger than this are refused (credentials are ~1.5 KiB).
const MAX_RESPONSE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    /// Nothing answered (not on EC2, IMDS disabled, hop limit too low for a container).
    #[error("IMDS at {endpoint} not reachable: {detail}")]
    Unreachable { endpoint: String, detail: String },
    /// IMDS answered but the instance has no IAM role.
    #[error("the instance has no IAM role attached")]
    NoRole,
    #[error("IMDS at {endpoint}: {what}: HTTP {status}")]
    Status {
        endpoint: String,
        what: &'static str,
        status: u16,
    },
    #[error("IMDS at {endpoint}: {what}: {detail}")]
    Invalid {
        endpoint: String,
        what: &'static str,
        detail: String,
    },
}

impl ImdsError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ImdsError::Unreachable { .. } | ImdsError::Status { status: 500.., .. }
        )
    }
}

/// Where IMDS is and how to reach it.
#[derive(Clone)]
pub struct ImdsClient {
    endpoint: String,
    base: Url,
    http: HttpClient,
}

impl std::fmt::Debug for ImdsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImdsClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleCredentials {
    #[serde(default)]
    code: Option<String>,
    access_key_id: String,
    // Plain Strings, moved into zeroizing storage as soon as they are parsed.
    secret_access_key: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
}

impl ImdsClient {
    /// The client for `endpoint` (e.g. `http://169.254.169.254`; plain http is accepted for the
    /// metadata addresses and loopback only), each call limited to `timeout`, no retries.
    pub fn new(provider: &str, endpoint: &str, timeout: Duration) -> Result<Self, ProviderError> {
        let base = http::parse_url(
            super::KIND,
            provider,
            "imds_endpoint",
            endpoint,
            http::UrlPolicy::AllowMetadataHttp,
        )?;
        let http = HttpClient::new(
            super::KIND,
            provider,
            &ClientOptions::new(timeout).retry(RetryPolicy::none()),
        )?;
        Ok(Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            base,
            http,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn url(&self, path: &str) -> Result<Url, ImdsError> {
        self.base
            .join(path)
            .map_err(|e| self.invalid("URL", e.to_string()))
    }

    fn send(&self, req: &Request) -> Result<http::Response, ImdsError> {
        self.http
            .send(req, self.http.deadline())
            .map_err(|e| ImdsError::Unreachable {
                endpoint: self.endpoint.clone(),
                detail: match e {
                    ProviderError::Timeout { seconds, .. } => {
                        format!("no answer within {seconds}s")
                    }
                    ProviderError::Unavailable { detail, .. }
                    | ProviderError::Tls { detail, .. }
                    | ProviderError::Config { detail, .. } => detail,
                    other => other.to_string(),
                },
            })
    }

    fn token(&self) -> Result<Zeroizing<String>, ImdsError> {
        let req = Request::put(self.url("/latest/api/token")?)
            .header("x-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS)
            .map_err(|e| self.invalid("session token", e.to_string()))?
            .metadata_endpoint();
        let resp = self.send(&req)?;
        if resp.status != 200 {
            // 403: IMDS disabled; 405: a proxy in the way. Either way, no instance role here.
            return Err(ImdsError::Status {
                endpoint: self.endpoint.clone(),
                what: "session token",
                status: resp.status,
            });
        }
        let token = Zeroizing::new(
            String::from_utf8(resp.body.to_vec())
                .map_err(|_| self.invalid("session token", "not UTF-8"))?
                .trim()
                .to_string(),
        );
        if token.is_empty() {
            return Err(self.invalid("session token", "empty"));
        }
        Ok(token)
    }

    fn invalid(&self, what: &'static str, detail: impl Into<String>) -> ImdsError {
        ImdsError::Invalid {
            endpoint: self.endpoint.clone(),
            what,
            detail: detail.into(),
        }
    }

    fn get(
        &self,
        token: &str,
        path: &str,
        what: &'static str,
    ) -> Result<(u16, Zeroizing<Vec<u8>>), ImdsError> {
        let req = Request::get(self.url(path)?)
            .secret_header("x-aws-ec2-metadata-token", token)
            .map_err(|e| self.invalid(what, e.to_string()))?
            .metadata_endpoint();
        let mut resp = self.send(&req)?;
        if resp.body.len() > MAX_RESPONSE {
            return Err(self.invalid(what, "response too large"));
        }
        Ok((resp.status, std::mem::take(&mut resp.body)))
    }

    /// The instance role's temporary credentials.
    pub fn role_credentials(&self) -> Result<Credentials, ImdsError> {
        let token = self.token()?;
        let (status, body) = self.get(&token, CREDENTIALS_PATH, "role name")?;
        match status {
            200 => {}
            404 => return Err(ImdsError::NoRole),
            status => {
                return Err(ImdsError::Status {
                    endpoint: self.endpoint.clone(),
                    what: "role name",
                    status,
                });
            }
        }
        let text =
            std::str::from_utf8(&body).map_err(|_| self.invalid("role name", "not UTF-8"))?;
        let role = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or(ImdsError::NoRole)?;
        if role.contains(['/', '?', '#']) || role.contains("..") {
            return Err(self.invalid("role name", format!("unexpected role name {role:?}")));
        }
        let role = role.to_string();

        let (status, body) = self.get(
            &token,
            &format!("{CREDENTIALS_PATH}{role}"),
            "role credentials",
        )?;
        match status {
            200 => {}
            404 => return Err(ImdsError::NoRole),
            status => {
                return Err(ImdsError::Status {
                    endpoint: self.endpoint.clone(),
                    what: "role credentials",
                    status,
                });
            }
        }
        // Deserialize errors from serde_json name the position, never the input.
        let rc: RoleCredentials = serde_json::from_slice(&body).map_err(|e| {
            self.invalid("role credentials", format!("not the expected JSON ({e})"))
        })?;
        if let Some(code) = rc.code.as_deref().filter(|c| *c != "Success") {
            return Err(self.invalid("role credentials", format!("Code {code:?}")));
        }
        let expiration = match rc.expiration.as_deref() {
            Some(s) => Some(parse_rfc3339(s).ok_or_else(|| {
                self.invalid(
                    "role credentials",
                    format!("Expiration {s:?} is not an RFC 3339 time"),
                )
            })?),
            None => None,
        };
        let secret = Zeroizing::new(rc.secret_access_key);
        let token = rc.token.map(Zeroizing::new).filter(|t| !t.is_empty());
        if rc.access_key_id.is_empty() || secret.is_empty() {
            return Err(self.invalid("role credentials", "empty AccessKeyId or SecretAccessKey"));
        }
        Ok(
            Credentials::new(rc.access_key_id, secret.as_str(), token.as_deref().cloned())
                .with_expiration(expiration)
                .with_source(CredentialSource::InstanceRole { role }),
        )
    }

    /// The instance's region (`placement/region`).
    pub fn region(&self) -> Result<String, ImdsError> {
        let token = self.token()?;
        let (status, body) = self.get(&token, "/latest/meta-data/placement/region", "region")?;
        if status != 200 {
            return Err(ImdsError::Status {
                endpoint: self.endpoint.clone(),
                what: "region",
                status,
            });
        }
        let region =
            String::from_utf8(body.to_vec()).map_err(|_| self.invalid("region", "not UTF-8"))?;
        let region = region.trim();
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(self.invalid("region", format!("unexpected region {region:?}")));
        }
        Ok(region.to_string())
    }
}

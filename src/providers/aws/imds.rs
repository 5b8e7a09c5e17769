//! IMDSv2 client for the EC2 instance role: session token (`PUT /latest/api/token`), role name,
//! role credentials (read in `credentials.rs`, which owns the credential types), and the
//! instance's region. Short timeouts, so that a host that is not on
//! EC2 gives up within about a second instead of stalling a `docker run`.

use std::time::Duration;

use zeroize::Zeroizing;

use crate::providers::http::{self, ClientOptions, HttpClient, Request, RetryPolicy, Url};
use crate::providers::{ProviderError, Reason};

pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
/// Connect and whole-request timeout of each IMDS call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Lifetime asked for the session token; one token serves the two or three calls of a load.
const TOKEN_TTL_SECONDS: &str = "60";
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
    pub(super) endpoint: String,
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
                detail: match e.reason {
                    Reason::Timeout(seconds) => format!("no answer within {seconds}s"),
                    Reason::Unavailable(detail) | Reason::Tls(detail) | Reason::Config(detail) => {
                        detail
                    }
                    _ => e.to_string(),
                },
            })
    }

    pub(super) fn token(&self) -> Result<Zeroizing<String>, ImdsError> {
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

    pub(super) fn invalid(&self, what: &'static str, detail: impl Into<String>) -> ImdsError {
        ImdsError::Invalid {
            endpoint: self.endpoint.clone(),
            what,
            detail: detail.into(),
        }
    }

    pub(super) fn get(
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

//! The one HTTP client every network provider uses: rustls (ring) with TLS 1.2/1.3 only, the
//! system roots plus a per-provider `ca_file`, an optional client certificate, the
//! `runtime.fetch_timeout` deadline, bounded retries with backoff, and the mapping of HTTP and
//! transport failures onto [`ProviderError`].
//!
//! There is deliberately no way to turn certificate verification off. Plain `http://` is allowed
//! only to a loopback host, or to a cloud metadata address (`169.254.169.254`,
//! `fd00:ec2::254`) for requests marked with [`Request::metadata_endpoint`].
//!
//! Proxies from the environment (`HTTPS_PROXY`, ...) are ignored: the shim inherits dockerd's
//! environment, whose proxy is meant for image pulls, and sending provider credentials (or
//! metadata-service requests) through it would widen who sees them. Provider endpoints are
//! reached directly.
//!
//! Uses `reqwest::blocking`: call it from plain threads, not from inside an async runtime.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
pub use reqwest::{Method, Url};
use zeroize::Zeroizing;

mod error_text;
mod files;
mod form;
mod json;
mod tls;
mod url_policy;

use error_text::{error_chain, io_error_detail, redacted_url};
pub use error_text::{sanitize_detail, status_error};
pub use files::read_credential_file;
use files::read_file;
pub(crate) use form::NOT_UNRESERVED;
pub use form::{encode_path_segment, form_urlencode};
pub use json::{compact_json, json_string, raw_json_value};
pub use tls::TlsOptions;
use tls::tls_failure;
pub use url_policy::{UrlPolicy, check_url, is_loopback_host, is_metadata_host, parse_url};

use super::{ProviderError, Reason};

/// Largest response body accepted (secrets are small; this bounds memory against a hostile or
/// broken server).
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Connect timeout when the total timeout is longer than this.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const USER_AGENT: &str = concat!("dso/", env!("CARGO_PKG_VERSION"));

thread_local! {
    /// The workload the requests made on this thread are for (see [`attributed`]).
    static WORKLOAD: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with every request this thread sends attributed to `workload`: the User-Agent
/// becomes `dso/<version> (<workload>)` — what CloudTrail, Azure's logs and Vault/OpenBao's
/// audit device record — so the provider's audit trail names the container a secret went to.
/// The provider code between the caller and this client does not need to carry it.
pub fn attributed<R>(workload: Option<&str>, f: impl FnOnce() -> R) -> R {
    let prev = WORKLOAD.with(|w| w.replace(workload.map(user_agent)));
    let out = f();
    WORKLOAD.with(|w| *w.borrow_mut() = prev);
    out
}

/// `dso/<version> (<workload>)`, the workload cut to what a header may carry (visible ASCII,
/// no parentheses, at most 128 bytes).
pub fn user_agent(workload: &str) -> String {
    let clean: String = workload
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '(' && c != ')' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    format!("{USER_AGENT} ({clean})")
}

/// Retries on throttling (429), server errors (5xx) and connection failures; never on other
/// 4xx. Delays grow exponentially with jitter, and no retry starts past the deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retries).
    pub max_attempts: u32,
    /// Delay before the first retry (before jitter).
    pub base_delay: Duration,
    /// Upper bound of any one delay, `Retry-After` included.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The delay before retry number `retry` (1-based): `base * 2^(retry-1)`, capped, then
    /// jittered into `[d/2, d]` so that concurrent clients do not retry in lockstep.
    pub fn delay(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        half + half.mul_f64(jitter_fraction())
    }
}

/// A uniformly random fraction in [0, 1), from the OS (falls back to 0.5).
fn jitter_fraction() -> f64 {
    let mut b = [0u8; 4];
    match getrandom::getrandom(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

/// How a provider's client is built.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Total time for one logical operation (all attempts); normally `runtime.fetch_timeout`.
    pub timeout: Duration,
    /// Connect timeout; default `min(timeout, DEFAULT_CONNECT_TIMEOUT)`.
    pub connect_timeout: Option<Duration>,
    pub tls: TlsOptions,
    pub retry: RetryPolicy,
}

impl ClientOptions {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            connect_timeout: None,
            tls: TlsOptions::default(),
            retry: RetryPolicy::default(),
        }
    }

    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = Some(d);
        self
    }
}

/// One HTTP request. Header values marked secret are flagged sensitive (never in `Debug`).
#[derive(Clone)]
pub struct Request {
    method: Method,
    url: Url,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<Arc<Zeroizing<Vec<u8>>>>,
    metadata_http: bool,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &redacted_url(&self.url))
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.as_ref().map(|b| b.len()))
            .finish()
    }
}

impl Request {
    pub fn new(method: Method, url: Url) -> Self {
        Self {
            method,
            url,
            headers: Vec::new(),
            body: None,
            metadata_http: false,
        }
    }

    pub fn get(url: Url) -> Self {
        Self::new(Method::GET, url)
    }

    pub fn post(url: Url) -> Self {
        Self::new(Method::POST, url)
    }

    pub fn put(url: Url) -> Self {
        Self::new(Method::PUT, url)
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// A non-secret header. Fails on a name or value HTTP does not allow (e.g. a newline in a
    /// configured namespace).
    pub fn header(self, name: &str, value: &str) -> Result<Self, InvalidHeader> {
        self.add_header(name, value, false)
    }

    /// A header holding a credential: marked sensitive (hidden from `Debug`, not indexed by
    /// HPACK).
    pub fn secret_header(self, name: &str, value: &str) -> Result<Self, InvalidHeader> {
        self.add_header(name, value, true)
    }

    /// `Authorization: Bearer <token>`, sensitive.
    pub fn bearer(self, token: &str) -> Result<Self, InvalidHeader> {
        let value = Zeroizing::new(format!("Bearer {token}"));
        self.add_header("authorization", &value, true)
    }

    fn add_header(mut self, name: &str, value: &str, secret: bool) -> Result<Self, InvalidHeader> {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| InvalidHeader {
            name: name.to_string(),
        })?;
        let mut value = HeaderValue::from_str(value).map_err(|_| InvalidHeader {
            name: name.to_string(),
        })?;
        value.set_sensitive(secret);
        self.headers.push((name, value));
        Ok(self)
    }

    /// A body with its content type. The bytes stay in a zeroizing buffer on our side.
    pub fn body(self, content_type: &str, body: Zeroizing<Vec<u8>>) -> Result<Self, InvalidHeader> {
        let mut me = self.header("content-type", content_type)?;
        me.body = Some(Arc::new(body));
        Ok(me)
    }

    /// An `application/x-www-form-urlencoded` body.
    pub fn form_body(self, pairs: &[(&str, &str)]) -> Result<Self, InvalidHeader> {
        let form = form_urlencode(pairs);
        let mut body = Zeroizing::new(Vec::with_capacity(form.len()));
        body.extend_from_slice(form.as_bytes());
        self.body("application/x-www-form-urlencoded", body)
    }

    /// Allows plain http to a cloud metadata address for this request (IMDS only).
    pub fn metadata_endpoint(mut self) -> Self {
        self.metadata_http = true;
        self
    }
}

/// A header name or value HTTP cannot carry. Names the header, never the value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("header {name:?}: invalid name or value")]
pub struct InvalidHeader {
    pub name: String,
}

/// A response: status, headers and the whole body in a zeroizing buffer.
pub struct Response {
    pub status: u16,
    headers: HeaderMap,
    /// The body, read straight into memory that is zeroized on drop. Parse from here.
    pub body: Zeroizing<Vec<u8>>,
    /// Attempts it took (1 = no retry).
    pub attempts: u32,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A response header as text (first value), if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// All values of a header (e.g. several `WWW-Authenticate`).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// Parses the body as JSON. Strings in `T` are copies the caller must treat as secret
    /// (e.g. hold them in `Zeroizing`) when the body carries a value or a token.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Reads all of `r` into a zeroizing buffer, at most `limit` bytes (`InvalidData` beyond).
/// Grows by allocating a new zeroizing buffer and copying, so no freed allocation keeps a copy.
pub fn read_zeroizing(
    r: &mut impl Read,
    size_hint: usize,
    limit: usize,
) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(size_hint.clamp(256, limit.max(256))));
    let mut chunk = Zeroizing::new([0u8; 8192]);
    loop {
        let n = match r.read(&mut chunk[..]) {
            Ok(0) => return Ok(buf),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.len() + n > limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("response larger than {limit} bytes"),
            ));
        }
        if buf.len() + n > buf.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(
                (buf.capacity() * 2).max(buf.len() + n).min(limit),
            ));
            bigger.extend_from_slice(&buf);
            buf = bigger; // the old one is zeroized as it drops
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The shared client of one provider. Cheap to clone; one connection pool per provider, shared
/// by all threads (reqwest's blocking client is `Send + Sync`).
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::blocking::Client,
    kind: &'static str,
    provider: Arc<str>,
    timeout: Duration,
    retry: RetryPolicy,
    /// Until one request has completed, requests go one at a time, so that concurrent fetches
    /// at startup share one TLS handshake (HTTP/2) or resume its session (HTTP/1.1) instead of
    /// each doing a full handshake.
    warmed: Arc<AtomicBool>,
    warm_gate: Arc<Mutex<()>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("kind", &self.kind)
            .field("provider", &self.provider)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Builds the client for provider `provider` of type `kind` (both used in every error).
    /// Reads `ca_file`, `client_cert` and `client_key` now, so a bad file fails at build time.
    pub fn new(
        kind: &'static str,
        provider: &str,
        opts: &ClientOptions,
    ) -> Result<Self, ProviderError> {
        let connect_timeout = opts
            .connect_timeout
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
            .min(opts.timeout);
        let mut builder = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .min_tls_version(reqwest::tls::Version::TLS_1_2)
            .tls_built_in_root_certs(true)
            .https_only(false) // checked per request: http only to loopback (or IMDS)
            .no_proxy()
            .user_agent(USER_AGENT)
            .connect_timeout(connect_timeout)
            .timeout(opts.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            // Never follow a redirect: provider requests carry credentials in headers
            // (X-Vault-Token, X-Amz-Security-Token, the IMDS token, Authorization) and reqwest
            // strips only Authorization and Cookie on a redirect. The 3xx comes back to the
            // provider, which reports it.
            .redirect(reqwest::redirect::Policy::none());

        if let Some(ca) = &opts.tls.ca_file {
            let pem = read_file(kind, provider, "ca_file", ca)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ProviderError::config(
                    kind,
                    provider,
                    format!("ca_file {}: not PEM certificates: {e}", ca.display()),
                )
            })?;
            if certs.is_empty() {
                return Err(ProviderError::config(
                    kind,
                    provider,
                    format!("ca_file {}: no certificate in it", ca.display()),
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        match (&opts.tls.client_cert, &opts.tls.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read_file(kind, provider, "client_cert", cert)?;
                let key_pem = read_file(kind, provider, "client_key", key)?;
                pem.push(b'\n');
                pem.extend_from_slice(&key_pem);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    ProviderError::config(
                        kind,
                        provider,
                        format!(
                            "client_cert {} / client_key {}: not a PEM certificate and key: {}",
                            cert.display(),
                            key.display(),
                            error_chain(&e)
                        ),
                    )
                })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err(ProviderError::config(
                    kind,
                    provider,
                    "client_cert and client_key go together",
                ));
            }
        }
        let client = builder.build().map_err(|e| {
            ProviderError::config(
                kind,
                provider,
                format!("cannot build the HTTPS client: {}", error_chain(&e)),
            )
        })?;
        Ok(Self {
            client,
            kind,
            provider: Arc::from(provider),
            timeout: opts.timeout,
            retry: opts.retry.clone(),
            warmed: Arc::new(AtomicBool::new(false)),
            warm_gate: Arc::new(Mutex::new(())),
        })
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The configured total timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A deadline `timeout` from now: pass it to every request of one logical operation
    /// (login + read), so the whole operation fits in the timeout.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// One attempt, no retry. `Ok` for any HTTP status; `Err` for transport failures (refused,
    /// reset, TLS, timeout) and for a URL that breaks the transport rules.
    pub fn send(&self, req: &Request, deadline: Instant) -> Result<Response, ProviderError> {
        self.send_once(req, deadline).map_err(|f| f.error)
    }

    /// [`send`](Self::send) with the retry policy: retries 429, 5xx and connection failures.
    /// After the last attempt, a 429/5xx response is returned as `Ok` (map it with
    /// [`status_error`](Self::status_error)); the last transport failure as `Err`.
    pub fn send_with_retries(
        &self,
        req: &Request,
        deadline: Instant,
    ) -> Result<Response, ProviderError> {
        self.send_with_retries_if(req, deadline, |r| is_retryable_status(r.status))
    }

    /// Like [`send_with_retries`](Self::send_with_retries) with the caller deciding which
    /// responses are worth retrying (e.g. AWS's `400 ThrottlingException`). Transport failures
    /// that may be transient (connect, reset) are always retried; TLS failures never.
    pub fn send_with_retries_if(
        &self,
        req: &Request,
        deadline: Instant,
        retry_on: impl Fn(&Response) -> bool,
    ) -> Result<Response, ProviderError> {
        let max = self.retry.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let outcome = self.send_once(req, deadline);
            let wait = match &outcome {
                Ok(resp) if retry_on(resp) => retry_after(resp),
                Ok(_) => return outcome.map_err(|f| f.error),
                Err(f) if f.retryable => None,
                Err(_) => return outcome.map_err(|f| f.error),
            };
            if attempt >= max {
                return finish(outcome, attempt);
            }
            let delay = wait
                .unwrap_or_else(|| self.retry.delay(attempt))
                .min(self.retry.max_delay);
            // No retry that could not complete in time: report what we have.
            if Instant::now() + delay >= deadline {
                return finish(outcome, attempt);
            }
            tracing::debug!(
                kind = self.kind,
                provider = %self.provider,
                attempt,
                delay_ms = delay.as_millis() as u64,
                "retrying provider request"
            );
            std::thread::sleep(delay);
            attempt += 1;
        }

        fn finish(
            outcome: Result<Response, Failure>,
            attempts: u32,
        ) -> Result<Response, ProviderError> {
            match outcome {
                Ok(mut r) => {
                    r.attempts = attempts;
                    Ok(r)
                }
                Err(f) => Err(f.error),
            }
        }
    }

    fn send_once(&self, req: &Request, deadline: Instant) -> Result<Response, Failure> {
        let policy = if req.metadata_http {
            UrlPolicy::AllowMetadataHttp
        } else {
            UrlPolicy::HttpsOrLoopback
        };
        if let Err(why) = check_url(&req.url, policy) {
            return Err(Failure::fatal(self.config_error(why)));
        }
        if !self.warmed.load(Ordering::Acquire) {
            // Poisoning only means another thread panicked mid-request; the gate is still fine.
            let _gate = self
                .warm_gate
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !self.warmed.load(Ordering::Acquire) {
                let out = self.attempt(req, deadline);
                if out.is_ok() {
                    self.warmed.store(true, Ordering::Release);
                }
                return out;
            }
        }
        self.attempt(req, deadline)
    }

    fn attempt(&self, req: &Request, deadline: Instant) -> Result<Response, Failure> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Failure::fatal(self.timeout_error()));
        }
        let mut builder = self
            .client
            .request(req.method.clone(), req.url.clone())
            .timeout(remaining);
        for (name, value) in &req.headers {
            builder = builder.header(name.clone(), value.clone());
        }
        if let Some(ua) = WORKLOAD.with(|w| w.borrow().clone())
            && let Ok(v) = HeaderValue::from_str(&ua)
        {
            builder = builder.header(reqwest::header::USER_AGENT, v);
        }
        if let Some(body) = &req.body {
            // reqwest owns its copy of the body; ours stays zeroizing.
            builder = builder.body(body.to_vec());
        }
        let mut resp = builder.send().map_err(|e| self.classify(&e, deadline))?;
        let status = resp.status().as_u16();
        let headers = std::mem::take(resp.headers_mut());
        let hint = resp
            .content_length()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        if hint > MAX_RESPONSE_BYTES {
            return Err(Failure::fatal(
                self.unavailable(format!("response too large ({hint} bytes)")),
            ));
        }
        let body = read_zeroizing(&mut resp, hint, MAX_RESPONSE_BYTES).map_err(|e| {
            if Instant::now() >= deadline || e.kind() == std::io::ErrorKind::TimedOut {
                Failure::fatal(self.timeout_error())
            } else if e.kind() == std::io::ErrorKind::InvalidData {
                Failure::fatal(self.unavailable(e.to_string()))
            } else {
                // Reset while reading the body: transient, like a failed connect.
                Failure::retryable(self.unavailable(format!(
                    "connection failed while reading the response: {}",
                    io_error_detail(&e)
                )))
            }
        })?;
        Ok(Response {
            status,
            headers,
            body,
            attempts: 1,
        })
    }

    fn classify(&self, e: &reqwest::Error, deadline: Instant) -> Failure {
        let chain = error_chain(e);
        if let Some(tls) = tls_failure(e) {
            return Failure::fatal(self.error(Reason::Tls(tls)));
        }
        if e.is_timeout() || Instant::now() >= deadline {
            return Failure::fatal(self.timeout_error());
        }
        if e.is_builder() || e.is_redirect() {
            return Failure::fatal(self.unavailable(chain));
        }
        // Connect errors (refused, unreachable, DNS) and request errors (reset, closed
        // mid-request) may be transient.
        let what = if e.is_connect() {
            "cannot connect"
        } else {
            "connection failed"
        };
        Failure::retryable(self.unavailable(format!("{what}: {chain}")))
    }

    /// Maps a non-success HTTP status to an error: 401/403 → `Denied`, 404 → `NotFound`,
    /// anything else → `Unavailable`. `path` names the secret; `detail` is the server's
    /// message (run it through [`sanitize_detail`] first).
    pub fn status_error(&self, status: u16, path: &str, detail: &str) -> ProviderError {
        status_error(self.kind, &self.provider, status, path, detail)
    }

    /// An error of this client's provider.
    pub fn error(&self, reason: Reason) -> ProviderError {
        ProviderError::new(self.kind, &self.provider, reason)
    }

    pub fn timeout_error(&self) -> ProviderError {
        self.error(Reason::Timeout(self.timeout.as_secs().max(1)))
    }

    pub fn unavailable(&self, detail: impl Into<String>) -> ProviderError {
        self.error(Reason::Unavailable(detail.into()))
    }

    pub fn config_error(&self, detail: impl Into<String>) -> ProviderError {
        ProviderError::config(self.kind, &self.provider, detail)
    }
}

/// A transport failure and whether retrying could help.
struct Failure {
    error: ProviderError,
    retryable: bool,
}

impl Failure {
    fn fatal(error: ProviderError) -> Self {
        Self {
            error,
            retryable: false,
        }
    }
    fn retryable(error: ProviderError) -> Self {
        Self {
            error,
            retryable: true,
        }
    }
}

/// 429 and 5xx.
pub fn is_retryable_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// `Retry-After` in seconds (the HTTP-date form is ignored), if the server sent one.
fn retry_after(resp: &Response) -> Option<Duration> {
    resp.header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_names_the_workload_and_is_scoped() {
        let v = env!("CARGO_PKG_VERSION");
        assert_eq!(
            user_agent("docker:billing-api"),
            format!("dso/{v} (docker:billing-api)")
        );
        // Nothing a header cannot carry, no nested parentheses, bounded.
        assert_eq!(user_agent("a\nb(c)é"), format!("dso/{v} (a_b_c__)"));
        assert_eq!(
            user_agent(&"x".repeat(500)).len(),
            format!("dso/{v} ()").len() + 128
        );
        let seen = |w: Option<&str>| attributed(w, || WORKLOAD.with(|x| x.borrow().clone()));
        assert_eq!(
            seen(Some("k8s:ns/pod")),
            Some(format!("dso/{v} (k8s:ns/pod)"))
        );
        assert_eq!(seen(None), None);
        // Nested: the outer attribution comes back.
        let outer = attributed(Some("a"), || {
            attributed(Some("b"), || ());
            WORKLOAD.with(|x| x.borrow().clone())
        });
        assert_eq!(outer, Some(format!("dso/{v} (a)")));
        assert_eq!(WORKLOAD.with(|x| x.borrow().clone()), None);
    }

    #[test]
    fn retry_delays_grow_and_stay_bounded() {
        let p = RetryPolicy::default();
        for retry in 1..=10 {
            let d = p.delay(retry);
            let nominal = (p.base_delay * 2u32.pow(retry - 1)).min(p.max_delay);
            assert!(d >= nominal / 2 && d <= nominal, "{retry}: {d:?}");
        }
        assert!(is_retryable_status(429));
        assert!(is_retryable_status(503));
        assert!(!is_retryable_status(404));
        assert!(!is_retryable_status(403));
        assert!(!is_retryable_status(400));
    }

    #[test]
    fn zeroizing_reader_limits_and_reads_all() {
        let data = vec![7u8; 20_000];
        let got = read_zeroizing(&mut &data[..], 0, 1 << 20).unwrap();
        assert_eq!(&got[..], &data[..]);
        let err = read_zeroizing(&mut &data[..], 0, 1000).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn debug_hides_secret_headers_and_bodies() {
        let url = Url::parse("https://vault.example/v1/secret/data/x?token=t").unwrap();
        let req = Request::get(url)
            .secret_header("x-vault-token", "s.supersecret")
            .unwrap()
            .body(
                "application/json",
                Zeroizing::new(b"{\"pw\":\"v\"}".to_vec()),
            )
            .unwrap();
        let dbg = format!("{req:?}");
        assert!(!dbg.contains("supersecret"), "{dbg}");
        assert!(!dbg.contains("token=t"), "{dbg}");
        assert!(!dbg.contains("pw"), "{dbg}");
    }

    #[test]
    fn plain_http_refused_at_send_time() {
        let client = HttpClient::new("vault", "v", &ClientOptions::new(Duration::from_secs(2)))
            .expect("client");
        let req = Request::get(Url::parse("http://vault.example:8200/v1/x").unwrap());
        let err = client.send(&req, client.deadline()).unwrap_err();
        assert!(matches!(err.reason, Reason::Config(_)), "{err}");
        // IMDS over http only when the request says it is one.
        let req = Request::get(Url::parse("http://169.254.169.254/metadata").unwrap());
        let err = client.send(&req, client.deadline()).unwrap_err();
        assert!(matches!(err.reason, Reason::Config(_)), "{err}");
    }

    #[test]
    fn client_cert_without_key_is_refused() {
        let opts = ClientOptions::new(Duration::from_secs(1)).tls(TlsOptions {
            ca_file: None,
            client_cert: Some("/nonexistent/cert.pem".into()),
            client_key: None,
        });
        assert!(matches!(
            HttpClient::new("vault", "v", &opts),
            Err(ProviderError {
                reason: Reason::Config(_),
                ..
            })
        ));
    }
}

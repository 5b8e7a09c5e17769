//! Error text: HTTP statuses mapped onto [`ProviderError`], server text made fit for a message,
//! and transport errors described without URLs or credentials.

use super::{ProviderError, Url};

/// Longest server-supplied text put into an error message.
const MAX_DETAIL_CHARS: usize = 200;

/// See [`super::HttpClient::status_error`].
pub fn status_error(
    kind: &'static str,
    provider: &str,
    status: u16,
    path: &str,
    detail: &str,
) -> ProviderError {
    let with = |what: &str| {
        if detail.is_empty() {
            what.to_string()
        } else {
            format!("{what}: {detail}")
        }
    };
    let unavailable = |detail| ProviderError::unavailable(kind, provider, detail);
    match status {
        401 | 403 => {
            ProviderError::denied(kind, provider, with(&format!("HTTP {status} for {path:?}")))
        }
        404 => ProviderError::not_found(kind, provider, path),
        429 => unavailable(with("throttled (HTTP 429), retries exhausted")),
        500..=599 => unavailable(with(&format!(
            "server error (HTTP {status}), retries exhausted"
        ))),
        300..=399 => unavailable(format!(
            "redirect (HTTP {status}) not followed: dso sends credentials with every request and follows no redirect; set the provider's address to the server that answers (for Vault HA, the active node or a load balancer)"
        )),
        _ => unavailable(with(&format!("unexpected HTTP {status} for {path:?}"))),
    }
}

/// Makes server-supplied text fit for an error message: drops control characters, removes
/// every occurrence of the given credentials (a server may echo what it was sent), truncates.
pub fn sanitize_detail(text: &str, credentials: &[&str]) -> String {
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    for cred in credentials.iter().filter(|c| c.len() >= 4) {
        if s.contains(cred) {
            s = s.replace(cred, "[redacted]");
        }
    }
    let s = s.trim();
    if s.chars().count() > MAX_DETAIL_CHARS {
        let cut: String = s.chars().take(MAX_DETAIL_CHARS).collect();
        format!("{cut}…")
    } else {
        s.to_string()
    }
}

/// Scheme, host and path of a URL (no query: it may carry ids that do not belong in logs).
pub(super) fn redacted_url(url: &Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.path()
    )
}

/// The error and its sources, `a: b: c`, without reqwest's URL (which may carry query ids).
pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = match err.downcast_ref::<reqwest::Error>() {
            Some(re) => describe_reqwest(re),
            None => match err.downcast_ref::<std::io::Error>() {
                Some(io) => io_error_detail(io),
                None => err.to_string(),
            },
        };
        // hyper-util's "client error (Connect)" wrappers add nothing a user can act on.
        let noise = text.starts_with("client error (") && text.ends_with(')');
        if !text.is_empty() && !noise && parts.last().is_none_or(|p| !p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connect error".into()
    } else if e.is_body() || e.is_decode() {
        "error reading the response body".into()
    } else if e.is_request() {
        "error sending the request".into()
    } else {
        String::new()
    }
}

/// An io::Error's text including the error it wraps (io::Error::source skips that one).
pub(super) fn io_error_detail(e: &std::io::Error) -> String {
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Reason;

    #[test]
    fn status_mapping() {
        assert!(matches!(
            status_error("vault", "v", 403, "a/b", "permission denied").reason,
            Reason::Denied(_)
        ));
        assert!(matches!(
            status_error("vault", "v", 401, "a/b", "").reason,
            Reason::Denied(_)
        ));
        assert!(matches!(
            status_error("vault", "v", 404, "a/b", "").reason,
            Reason::NotFound(_)
        ));
        assert!(matches!(
            status_error("vault", "v", 503, "a/b", "").reason,
            Reason::Unavailable(_)
        ));
        assert!(matches!(
            status_error("vault", "v", 400, "a/b", "").reason,
            Reason::Unavailable(_)
        ));
    }

    #[test]
    fn sanitize_removes_credentials_and_control_chars() {
        let s = sanitize_detail("bad token s.abcdef\nline2", &["s.abcdef"]);
        assert_eq!(s, "bad token [redacted] line2");
        let long = "x".repeat(1000);
        assert!(sanitize_detail(&long, &[]).chars().count() <= MAX_DETAIL_CHARS + 1);
    }
}

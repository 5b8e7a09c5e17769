//! Where a provider may be reached: `https`, or plain `http` only to loopback (or, for requests
//! marked so, a cloud metadata address); never credentials in the URL.

use super::{ProviderError, Url};

/// Which plain-http URLs a setting may hold. https is always fine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlPolicy {
    /// http only for loopback hosts (development, tests).
    HttpsOrLoopback,
    /// Also http to a cloud metadata address (IMDS is plain http by design: link-local,
    /// unroutable, hop-limited).
    AllowMetadataHttp,
}

/// True for `localhost`, `127.0.0.0/8` and `::1` (`host` as in a URL: IPv6 in brackets or not).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// True for the well-known instance metadata addresses (`169.254.169.254`, `fd00:ec2::254`).
pub fn is_metadata_host(host: &str) -> bool {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => v4 == std::net::Ipv4Addr::new(169, 254, 169, 254),
        Ok(std::net::IpAddr::V6(v6)) => {
            v6 == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
        Err(_) => false,
    }
}

/// Parses a URL from a provider setting and enforces the transport rules: `https`, or `http`
/// to a host `policy` allows; no `user:password@`; a host present.
pub fn parse_url(
    kind: &'static str,
    provider: &str,
    setting: &str,
    url: &str,
    policy: UrlPolicy,
) -> Result<Url, ProviderError> {
    let parsed = Url::parse(url)
        .map_err(|e| ProviderError::config(kind, provider, format!("{setting}: not a URL: {e}")))?;
    check_url(&parsed, policy)
        .map_err(|why| ProviderError::config(kind, provider, format!("{setting}: {why}")))?;
    Ok(parsed)
}

/// The transport rules of [`parse_url`], on a parsed URL; `Err` says why not.
pub fn check_url(url: &Url, policy: UrlPolicy) -> Result<(), String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not accepted".into());
    }
    let Some(host) = url.host_str() else {
        return Err("the URL has no host".into());
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_host(host) => Ok(()),
        "http" if policy == UrlPolicy::AllowMetadataHttp && is_metadata_host(host) => Ok(()),
        "http" => Err(format!(
            "https is required (http only for a loopback host), got http://{host}"
        )),
        other => Err(format!("unsupported URL scheme {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_metadata_hosts() {
        for h in [
            "localhost",
            "127.0.0.1",
            "127.1.2.3",
            "[::1]",
            "::1",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["10.0.0.1", "vault", "169.254.169.254", "localhost.evil.com"] {
            assert!(!is_loopback_host(h), "{h}");
        }
        assert!(is_metadata_host("169.254.169.254"));
        assert!(is_metadata_host("[fd00:ec2::254]"));
        assert!(!is_metadata_host("169.254.169.253"));
    }

    #[test]
    fn url_policy() {
        let ok = |u: &str, p| parse_url("vault", "v", "address", u, p).is_ok();
        assert!(ok("https://vault.example:8200", UrlPolicy::HttpsOrLoopback));
        assert!(ok("http://127.0.0.1:8200", UrlPolicy::HttpsOrLoopback));
        assert!(ok("http://[::1]:8200", UrlPolicy::HttpsOrLoopback));
        assert!(!ok("http://vault.example:8200", UrlPolicy::HttpsOrLoopback));
        assert!(!ok("http://169.254.169.254/x", UrlPolicy::HttpsOrLoopback));
        assert!(ok("http://169.254.169.254/x", UrlPolicy::AllowMetadataHttp));
        assert!(!ok("http://10.1.1.1/x", UrlPolicy::AllowMetadataHttp));
        assert!(!ok("https://u:p@vault", UrlPolicy::HttpsOrLoopback));
        assert!(!ok("ftp://vault", UrlPolicy::HttpsOrLoopback));
        assert!(!ok("not a url", UrlPolicy::HttpsOrLoopback));
        let err = parse_url(
            "vault",
            "v",
            "address",
            "http://vault:8200",
            UrlPolicy::HttpsOrLoopback,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("https is required"), "{err}");
    }
}

//! TLS: a provider's CA bundle and client certificate settings, and the text of a failed
//! handshake.

use std::path::PathBuf;

/// TLS settings of one provider: extra trusted CAs and an optional client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of CA certificates trusted in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert`.
    pub client_key: Option<PathBuf>,
}

/// If a rustls error (certificate or handshake) is anywhere in the chain, its description.
pub(super) fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(describe_tls(tls));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(describe_tls(tls));
            }
            if let Some(found) = tls_failure(inner) {
                return Some(found);
            }
        }
        cur = err.source();
    }
    None
}

fn describe_tls(e: &rustls::Error) -> String {
    use rustls::{AlertDescription, CertificateError, Error};
    let what = match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the server's certificate is not signed by a trusted CA (set ca_file?)"
        }
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            "the server's certificate has expired"
        }
        Error::InvalidCertificate(CertificateError::NotValidYet)
        | Error::InvalidCertificate(CertificateError::NotValidYetContext { .. }) => {
            "the server's certificate is not valid yet"
        }
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "the server's certificate is not valid for this host name"
        }
        Error::InvalidCertificate(CertificateError::Revoked) => {
            "the server's certificate is revoked"
        }
        Error::InvalidCertificate(_) => "the server's certificate is invalid",
        Error::PeerIncompatible(_) | Error::AlertReceived(AlertDescription::ProtocolVersion) => {
            "no common TLS version or cipher (dso requires TLS 1.2 or 1.3)"
        }
        Error::AlertReceived(AlertDescription::BadCertificate)
        | Error::AlertReceived(AlertDescription::CertificateRequired)
        | Error::AlertReceived(AlertDescription::UnknownCA)
        | Error::AlertReceived(AlertDescription::CertificateUnknown) => {
            "the server refused our client certificate (client_cert/client_key)"
        }
        _ => "TLS handshake failed",
    };
    format!("TLS certificate/handshake error: {what} ({e})")
}

//! The providers' TLS, through the shared client (`dso::providers::http`), against servers
//! with certificates made here (rcgen): a trusted CA is accepted; an unknown CA, a wrong host
//! name, an expired certificate and a server offering only TLS 1.0/1.1 are refused, with a
//! TLS error that says so. Plain http is refused off loopback, and nothing in the tree can turn
//! verification off.

use dso_testkit::support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use dso::providers::http::{ClientOptions, HttpClient, Request, TlsOptions, Url};
use dso::providers::{ProviderError, Reason};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::{Pki, Validity};

/// A rustls server (ring) on loopback answering every request with `200 ok`, speaking only
/// `versions`. Runs until the test process exits.
fn serve(cert: &Path, key: &Path, versions: &[&'static rustls::SupportedProtocolVersion]) -> u16 {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("cert pem")
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_file(key).expect("key pem");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tls.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    port
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn client(ca: Option<&Path>) -> HttpClient {
    HttpClient::new(
        "vault",
        "tls-test",
        &ClientOptions::new(Duration::from_secs(5)).tls(TlsOptions {
            ca_file: ca.map(Path::to_path_buf),
            client_cert: None,
            client_key: None,
        }),
    )
    .expect("client")
}

fn get(client: &HttpClient, url: &str) -> Result<dso::providers::http::Response, ProviderError> {
    client.send_with_retries(&Request::get(Url::parse(url).unwrap()), client.deadline())
}

fn expect_tls_error(res: Result<dso::providers::http::Response, ProviderError>, words: &str) {
    match res {
        Err(
            e @ ProviderError {
                reason: Reason::Tls(_),
                ..
            },
        ) => {
            let msg = e.to_string();
            assert!(msg.contains("TLS"), "{msg}");
            assert!(msg.contains(words), "{msg:?} should mention {words:?}");
        }
        Err(other) => panic!("expected a TLS error, got {other:?}: {other}"),
        Ok(r) => panic!("expected a TLS error, got HTTP {}", r.status),
    }
}

#[test]
fn trusted_ca_is_accepted_over_tls13_and_tls12() {
    let pki = Pki::new("trusted CA");
    let (cert, key) = pki.localhost();
    let c = client(Some(&pki.ca_pem));
    for versions in [
        BOTH,
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let port = serve(&cert, &key, versions);
        for host in ["localhost", "127.0.0.1"] {
            let resp = get(&c, &format!("https://{host}:{port}/")).expect("trusted server");
            assert_eq!(resp.status, 200);
            assert_eq!(&resp.body[..], b"ok");
        }
    }
}

#[test]
fn unknown_ca_is_refused() {
    let pki = Pki::new("CA nobody trusts");
    let (cert, key) = pki.localhost();
    let port = serve(&cert, &key, BOTH);
    // System roots only.
    expect_tls_error(
        get(&client(None), &format!("https://localhost:{port}/")),
        "not signed by a trusted CA",
    );
}

#[test]
fn server_from_another_ca_is_refused() {
    let trusted = Pki::new("trusted CA");
    let other = Pki::new("other CA");
    let (cert, key) = other.localhost();
    let port = serve(&cert, &key, BOTH);
    expect_tls_error(
        get(
            &client(Some(&trusted.ca_pem)),
            &format!("https://localhost:{port}/"),
        ),
        "not signed by a trusted CA",
    );
}

#[test]
fn wrong_hostname_is_refused() {
    let pki = Pki::new("trusted CA");
    let (cert, key) = pki.server(&["vault.other.example"], Validity::Current);
    let port = serve(&cert, &key, BOTH);
    let c = client(Some(&pki.ca_pem));
    expect_tls_error(
        get(&c, &format!("https://localhost:{port}/")),
        "not valid for this host name",
    );
    expect_tls_error(
        get(&c, &format!("https://127.0.0.1:{port}/")),
        "not valid for this host name",
    );
}

#[test]
fn expired_certificate_is_refused() {
    let pki = Pki::new("trusted CA");
    let (cert, key) = pki.server(&["localhost", "127.0.0.1"], Validity::Expired);
    let port = serve(&cert, &key, BOTH);
    expect_tls_error(
        get(
            &client(Some(&pki.ca_pem)),
            &format!("https://localhost:{port}/"),
        ),
        "expired",
    );
}

/// A server whose only answer to any ClientHello is a TLS 1.1 ServerHello: what an old server
/// that cannot do TLS 1.2 says. Needs no OpenSSL on the server side.
#[test]
fn tls11_server_hello_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut hello = [0u8; 5];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(hello[0], 0x16, "a handshake record");
        let len = usize::from(u16::from_be_bytes([hello[3], hello[4]]));
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        assert_eq!(body[0], 0x01, "a ClientHello");
        // ServerHello, legacy_version TLS 1.1, no supported_versions extension.
        let mut sh = vec![0x03, 0x02];
        sh.extend_from_slice(&[0x42; 32]); // random
        sh.push(0); // session id
        sh.extend_from_slice(&[0xc0, 0x14]); // ECDHE_RSA_WITH_AES_256_CBC_SHA
        sh.push(0); // null compression
        let mut hs = vec![0x02, 0, 0, sh.len() as u8];
        hs.extend_from_slice(&sh);
        let mut rec = vec![0x16, 0x03, 0x02, 0, hs.len() as u8];
        rec.extend_from_slice(&hs);
        s.write_all(&rec).unwrap();
        // Whatever the client says next (an alert), then close.
        let mut rest = [0u8; 64];
        let _ = s.read(&mut rest);
    });
    let pki = Pki::new("ca");
    expect_tls_error(
        get(
            &client(Some(&pki.ca_pem)),
            &format!("https://localhost:{port}/"),
        ),
        "TLS 1.2 or 1.3",
    );
    server.join().unwrap();
}

/// A real TLS stack (Python's OpenSSL) configured to offer TLS 1.0-1.1 only, with a
/// certificate the client trusts: still refused.
#[test]
fn openssl_server_offering_only_tls10_and_11_is_refused() {
    if !support::python_available(&["ssl"]) {
        return;
    }
    let pki = Pki::new("trusted CA");
    let (cert, key) = pki.localhost();
    const SERVER: &str = r#"
import socket, ssl, sys, warnings
warnings.simplefilter("ignore")
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # Debian's OpenSSL refuses TLS < 1.2 at level 1+
ctx.minimum_version = ssl.TLSVersion.TLSv1
ctx.maximum_version = ssl.TLSVersion.TLSv1_1
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
for _ in range(4):
    c, _ = s.accept()
    try:
        ctx.wrap_socket(c, server_side=True)
        print("accepted", flush=True)
    except Exception as e:
        print("refused:", e, flush=True)
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(SERVER)
        .arg(&cert)
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let port: u16 = line.trim().parse().expect("port");
    // First prove the server does speak TLS 1.1: an OpenSSL client limited to it gets through.
    const PROBE: &str = r#"
import socket, ssl, sys, warnings
warnings.simplefilter("ignore")
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
ctx.minimum_version = ssl.TLSVersion.TLSv1
ctx.maximum_version = ssl.TLSVersion.TLSv1_1
ctx.load_verify_locations(sys.argv[2])
with ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))), server_hostname="localhost") as t:
    print(t.version())
"#;
    let probe = Command::new("python3")
        .arg("-c")
        .arg(PROBE)
        .arg(port.to_string())
        .arg(&pki.ca_pem)
        .output()
        .expect("probe");
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout).trim(),
        "TLSv1.1",
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(line.starts_with("accepted"), "server side: {line}");
    let res = get(
        &client(Some(&pki.ca_pem)),
        &format!("https://localhost:{port}/"),
    );
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    // The server really did offer TLS 1.1 and no more: it failed the handshake on its side.
    assert!(line.starts_with("refused:"), "server side: {line}");
    expect_tls_error(res, "TLS 1.2 or 1.3");
}

#[test]
fn plain_http_is_refused_off_loopback() {
    let pki = Pki::new("ca");
    let token = pki.file("t", "s.token");
    let yaml = format!(
        "providers:\n  v: {{ type: vault, address: 'http://vault.example:8200', auth: {{ token_file: {} }} }}\n",
        token.display()
    );
    let cfg = dso::config::Config::from_str_at(&yaml, Path::new("t.yaml"));
    // Refused by config validation, or at the latest when the provider is built.
    if let Ok(cfg) = cfg {
        match dso::providers::build("v", &cfg.providers["v"], &cfg) {
            Err(e) => assert!(e.to_string().contains("https is required"), "{e}"),
            Ok(_) => panic!("http:// to a remote host accepted"),
        }
    }
    // And the client re-checks every request.
    let c = client(None);
    let e = get(&c, "http://vault.example:8200/v1/secret/data/x").unwrap_err();
    assert!(matches!(e.reason, Reason::Config(_)), "{e}");
}

/// A redirect is never followed: the credential header would go to the redirect's target
/// (reqwest strips only Authorization and Cookie).
#[test]
fn credentialed_requests_follow_no_redirect() {
    use std::io::{BufRead, BufReader, Write as _};
    // The target: records whatever reaches it.
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let target_port = target.local_addr().unwrap().port();
    target.set_nonblocking(true).unwrap();
    // The server the client asks: answers 307 to the target.
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = first.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in first.incoming().take(1) {
            let mut conn = conn.unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let _ = write!(
                conn,
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{target_port}/v1/secret/data/x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    let c = client(None);
    let req =
        Request::get(Url::parse(&format!("http://127.0.0.1:{port}/v1/secret/data/x")).unwrap())
            .secret_header("x-vault-token", "s.must-not-travel")
            .unwrap();
    let res = c.send(&req, c.deadline());
    let err = match res {
        Ok(r) => c.status_error(r.status, "x", ""),
        Err(e) => e,
    };
    assert!(
        err.to_string().contains("redirect (HTTP 307) not followed"),
        "{err}"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(target.accept().is_err(), "the redirect was followed");
}

#[test]
fn nothing_in_the_tree_disables_certificate_verification() {
    // Spelled in two halves so that this file does not match its own search.
    let needles = [
        format!("{}{}", "danger_accept_", "invalid"),
        format!("{}{}", "dangerous", "()"),
        format!("{}{}", "NoCertificate", "Verification"),
    ];
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for n in &needles {
                    assert!(
                        !text.contains(n.as_str()),
                        "{} contains {n}",
                        path.display()
                    );
                }
            }
        }
    }
}

//! The rotation webhook (DESIGN.md, "Webhooks"): `POST /v1/webhook` with a JSON body
//! `{"secrets":["name",...]}`, `X-DSO-Timestamp` (unix seconds) and
//! `X-DSO-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`. The signature is checked
//! in constant time (`hmac`'s `verify_slice`), timestamps more than 5 minutes off are refused
//! (replay), bodies over 64 KiB are refused with 413, bad signatures and stale timestamps with 401;
//! an accepted request gets 202 and refreshes the named secrets. Every refusal is a
//! `webhook_rejected` audit event. A small std-only HTTP/1.1 server, one thread per connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::Trigger;
use crate::audit::{Audit, Event};

pub const MAX_BODY: usize = 64 * 1024;
pub const MAX_SKEW_SECS: i64 = 300;
const MAX_HEAD: usize = 16 * 1024;
const PATH: &str = "/v1/webhook";

/// `agent.webhook` of dso.yaml.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub listen: String,
    pub secret_file: PathBuf,
}

impl WebhookSettings {
    /// From the `agent.webhook` JSON of dso.yaml (schema-checked already).
    pub fn from_value(v: &serde_json::Value) -> Result<WebhookSettings, String> {
        let listen = v
            .get("listen")
            .and_then(|l| l.as_str())
            .ok_or("agent.webhook.listen is missing")?;
        let secret_file = v
            .get("secret_file")
            .and_then(|l| l.as_str())
            .ok_or("agent.webhook.secret_file is missing")?;
        Ok(WebhookSettings {
            listen: listen.to_string(),
            secret_file: PathBuf::from(secret_file),
        })
    }
}

/// Reads the HMAC key (trailing newline ignored).
pub fn read_key(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    read_key_file(path, "webhook key")
}

/// Reads an HMAC key file (`what` names it in errors); trailing whitespace ignored.
pub fn read_key_file(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    use std::io::Read;
    let fail = |e: std::io::Error| format!("{what} {}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    crate::trust::check(&meta, path, what, crate::trust::Use::Secret).map_err(|e| e.to_string())?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    file.read_to_end(&mut bytes).map_err(fail)?;
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(format!("{what} {} is empty", path.display()));
    }
    Ok(bytes)
}

/// A bound webhook listener.
pub struct Webhook {
    listener: TcpListener,
    key: Arc<Zeroizing<Vec<u8>>>,
    audit: Arc<Audit>,
    tx: mpsc::Sender<Trigger>,
}

impl Webhook {
    pub fn bind(
        listen: &str,
        key: Zeroizing<Vec<u8>>,
        audit: Arc<Audit>,
        tx: mpsc::Sender<Trigger>,
    ) -> std::io::Result<Webhook> {
        Ok(Webhook {
            listener: TcpListener::bind(listen)?,
            key: Arc::new(key),
            audit,
            tx,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves forever on a background thread.
    pub fn spawn(self) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            for conn in self.listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (key, audit, tx) = (self.key.clone(), self.audit.clone(), self.tx.clone());
                std::thread::spawn(move || handle(conn, &key, &audit, &tx));
            }
        })
    }
}

/// A parsed request head.
struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn respond(conn: &mut TcpStream, code: u16, reason: &str, body: &str) {
    let resp = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(resp.as_bytes());
    let _ = conn.flush();
}

fn handle(mut conn: TcpStream, key: &[u8], audit: &Audit, tx: &mpsc::Sender<Trigger>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let clock = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64
    };
    match process_request(&mut conn, key, clock) {
        Outcome::Closed => {}
        Outcome::Rejected { code, reason, why } => {
            let msg = format!("{why} (from {peer})");
            audit.record(&Event::new("webhook_rejected", "failure").error(&msg));
            respond(
                &mut conn,
                code,
                reason,
                &serde_json::json!({ "error": why }).to_string(),
            );
        }
        Outcome::Accepted(secrets) => {
            for s in &secrets {
                audit.record(&Event::new("webhook_accepted", "success").secret(s));
            }
            let _ = tx.send(Trigger::Secrets(secrets));
            respond(&mut conn, 202, "Accepted", "{\"status\":\"accepted\"}");
        }
    }
}

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Signed, fresh, well-formed: refresh these secrets (answered 202).
    Accepted(Vec<String>),
    /// Refused with this HTTP status; `why` goes into the audit event and the response body.
    Rejected {
        code: u16,
        reason: &'static str,
        why: &'static str,
    },
    /// The peer went away (or timed out) before sending a whole request: nothing to answer.
    Closed,
}

/// Reads one request from `conn` and decides it with `key`; `now` gives the unix time, read
/// once the whole body is in (a slow sender does not widen the replay window). No I/O other
/// than reading `conn`: the caller answers and audits.
pub fn process_request<R: Read>(conn: &mut R, key: &[u8], now: impl FnOnce() -> i64) -> Outcome {
    let reject = |code, reason, why| Outcome::Rejected { code, reason, why };

    // Head: up to the blank line, at most MAX_HEAD bytes.
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return reject(431, "Request Header Fields Too Large", "header too large");
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return Outcome::Closed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let Some(head) = parse_head(&buf[..head_end]) else {
        return reject(400, "Bad Request", "malformed request");
    };
    if head.path.split('?').next() != Some(PATH) {
        return reject(404, "Not Found", "no such endpoint");
    }
    if head.method != "POST" {
        return reject(405, "Method Not Allowed", "only POST");
    }
    let Some(len) = head
        .header("content-length")
        .and_then(|v| v.trim().parse::<usize>().ok())
    else {
        return reject(411, "Length Required", "Content-Length required");
    };
    if len > MAX_BODY {
        return reject(413, "Payload Too Large", "body over 64 KiB");
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return Outcome::Closed,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    if body.len() > len {
        return reject(413, "Payload Too Large", "body longer than Content-Length");
    }

    if let Err(why) = verify(
        key,
        head.header("x-dso-timestamp"),
        head.header("x-dso-signature"),
        &body,
        now(),
    ) {
        return reject(401, "Unauthorized", why);
    }
    match parse_body(&body) {
        Ok(secrets) => Outcome::Accepted(secrets),
        Err(why) => reject(400, "Bad Request", why),
    }
}

/// Checks timestamp window and signature. The error is the reason, for the audit event.
pub fn verify(
    key: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), &'static str> {
    let ts = timestamp.ok_or("missing X-DSO-Timestamp")?.trim();
    let t: i64 = ts.parse().map_err(|_| "malformed X-DSO-Timestamp")?;
    // abs_diff: `now - t` overflows for a timestamp near i64::MIN (a panic, which aborts).
    if now.abs_diff(t) > MAX_SKEW_SECS as u64 {
        return Err("stale timestamp");
    }
    let sig = signature
        .ok_or("missing X-DSO-Signature")?
        .trim()
        .strip_prefix("sha256=")
        .ok_or("malformed X-DSO-Signature")?;
    let sig = hex_decode(sig).ok_or("malformed X-DSO-Signature")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| "bad key")?;
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| "bad signature")
}

/// `sha256=<hex>` for `"<timestamp>.<body>"` (for senders and tests).
pub fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn parse_body(body: &[u8]) -> Result<Vec<String>, &'static str> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| "body is not JSON")?;
    let arr = v
        .get("secrets")
        .and_then(|s| s.as_array())
        .ok_or("body needs {\"secrets\": [names]}")?;
    let names: Vec<String> = arr
        .iter()
        .map(|n| n.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or("secret names must be strings")?;
    if names.is_empty() {
        return Err("no secret named");
    }
    Ok(names)
}

/// Strict hex: digits and letters only (`u8::from_str_radix` alone would also take a sign,
/// `+a`, so one MAC would have several accepted spellings).
fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(bytes: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    first.next().filter(|v| v.starts_with("HTTP/1."))?;
    let mut headers = Vec::new();
    for l in lines {
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Some(Head {
        method,
        path,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuditConfig;

    const KEY: &[u8] = b"webhook-test-key";

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    /// One raw HTTP request; returns the status code.
    fn send(addr: SocketAddr, headers: &[(&str, String)], body: &[u8]) -> u16 {
        let mut c = TcpStream::connect(addr).unwrap();
        let mut req = format!(
            "POST /v1/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        c.write_all(req.as_bytes()).unwrap();
        // The server may refuse before reading the whole body (413): ignore write errors.
        let _ = c.write_all(body);
        let mut resp = String::new();
        let _ = c.read_to_string(&mut resp);
        resp.split(' ').nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn verify_checks_window_and_signature() {
        let body = br#"{"secrets":["db"]}"#;
        let ts = "1700000000";
        let sig = sign(KEY, ts, body);
        assert_eq!(
            verify(KEY, Some(ts), Some(&sig), body, 1_700_000_100),
            Ok(())
        );
        assert_eq!(
            verify(KEY, Some(ts), Some(&sig), body, 1_700_000_301),
            Err("stale timestamp")
        );
        assert_eq!(
            verify(KEY, Some(ts), Some(&sig), b"{}", 1_700_000_000),
            Err("bad signature")
        );
        assert_eq!(
            verify(b"other", Some(ts), Some(&sig), body, 1_700_000_000),
            Err("bad signature")
        );
        assert!(verify(KEY, None, Some(&sig), body, 1_700_000_000).is_err());
        assert!(verify(KEY, Some(ts), Some("sha256=zz"), body, 1_700_000_000).is_err());
        // Found in review while writing the fuzz target: i64::MIN overflowed `now - t`.
        let min = i64::MIN.to_string();
        let sig_min = sign(KEY, &min, body);
        assert_eq!(
            verify(KEY, Some(&min), Some(&sig_min), body, 1_700_000_000),
            Err("stale timestamp")
        );
        // Found by fuzzing: a sign inside the hex ("+a" for "0a") was taken as the same MAC.
        let plus = sig.replacen("0", "+", 1);
        assert_ne!(plus, sig);
        assert_eq!(
            verify(KEY, Some(ts), Some(&plus), body, 1_700_000_000),
            Err("malformed X-DSO-Signature")
        );
        assert_eq!(
            verify(
                KEY,
                Some(ts),
                Some(&sig.to_uppercase().replace("SHA256=", "sha256=")),
                body,
                1_700_000_000
            ),
            Ok(())
        );
    }

    #[test]
    fn serves_real_http_requests() {
        let dir = tempfile::tempdir().unwrap();
        let audit_path = dir.path().join("audit.log");
        let audit = Arc::new(Audit::new(&AuditConfig {
            path: Some(audit_path.clone()),
            ..Default::default()
        }));
        let (tx, rx) = mpsc::channel();
        let hook = Webhook::bind("127.0.0.1:0", Zeroizing::new(KEY.to_vec()), audit, tx).unwrap();
        let addr = hook.local_addr().unwrap();
        hook.spawn();

        let body = br#"{"secrets":["db","api"]}"#.to_vec();
        let ts = now().to_string();
        let good = vec![
            ("X-DSO-Timestamp", ts.clone()),
            ("X-DSO-Signature", sign(KEY, &ts, &body)),
        ];
        assert_eq!(send(addr, &good, &body), 202);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            Trigger::Secrets(vec!["db".into(), "api".into()])
        );

        // Bad signature.
        let bad = vec![
            ("X-DSO-Timestamp", ts.clone()),
            ("X-DSO-Signature", sign(b"wrong", &ts, &body)),
        ];
        assert_eq!(send(addr, &bad, &body), 401);
        // Stale timestamp (correctly signed).
        let old = (now() - 301).to_string();
        let stale = vec![
            ("X-DSO-Timestamp", old.clone()),
            ("X-DSO-Signature", sign(KEY, &old, &body)),
        ];
        assert_eq!(send(addr, &stale, &body), 401);
        // Oversized body.
        let big = vec![b'x'; MAX_BODY + 1];
        let bigh = vec![
            ("X-DSO-Timestamp", ts.clone()),
            ("X-DSO-Signature", sign(KEY, &ts, &big)),
        ];
        assert_eq!(send(addr, &bigh, &big), 413);
        // No signature at all.
        assert_eq!(send(addr, &[("X-DSO-Timestamp", ts.clone())], &body), 401);
        assert!(rx.try_recv().is_err(), "no refused request may trigger");

        let log = std::fs::read_to_string(&audit_path).unwrap();
        let rejected: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|e: &serde_json::Value| e["event"] == "webhook_rejected")
            .collect();
        assert_eq!(rejected.len(), 4, "{log}");
        let reasons: Vec<&str> = rejected
            .iter()
            .map(|e| e["error"].as_str().unwrap())
            .collect();
        assert!(reasons.iter().any(|r| r.starts_with("bad signature")));
        assert!(reasons.iter().any(|r| r.starts_with("stale timestamp")));
        assert!(reasons.iter().any(|r| r.starts_with("body over 64 KiB")));
        assert!(!log.contains("webhook-test-key"));
    }
}

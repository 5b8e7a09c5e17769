//! The rotation webhook (docs/agent.md, "Webhook"): `POST /v1/webhook` with a JSON body
//! `{"secrets":["name",...]}`, `X-DSO-Timestamp` (unix seconds) and
//! `X-DSO-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`. The signature is checked
//! in constant time (`hmac`'s `verify_slice`), timestamps more than 5 minutes off are refused
//! (replay), and so is a second use of one signed request inside that window (409); bodies over
//! 64 KiB are refused with 413, bad signatures and stale timestamps with 401; an accepted
//! request gets 202 and refreshes the named secrets. Refusals are `webhook_rejected` audit
//! events, at most [`REJECTION_BURST`] at once and one per [`REJECTION_REFILL`] after that (a
//! flood from anyone cannot flood the audit trail; the rest are counted). HTTP/1.1 through
//! [`super::http`], with bounded workers and connections and a deadline per request
//! ([`super::listen`]). The key must be at least [`MIN_KEY_LEN`] bytes, in a file only its
//! owner can read.

use std::collections::HashMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::AgentError;
use super::Trigger;
use super::http::{self, HeadRead};
use super::listen::{self, Deadlined, Limits, ListenerStats, bump};
use crate::audit::{Audit, Event};

pub const MAX_BODY: usize = 64 * 1024;
pub const MAX_SKEW_SECS: i64 = 300;
/// The shortest webhook key accepted (the HMAC-SHA256 block is 64; 32 random bytes is the
/// strength of the MAC itself).
pub const MIN_KEY_LEN: usize = 32;
/// Rejections audited at once before the rate limit applies.
pub const REJECTION_BURST: u32 = 10;
/// After the burst, one more rejection is audited per this long (10 a minute).
pub const REJECTION_REFILL: Duration = Duration::from_secs(6);
/// Signatures remembered for replay detection; a full cache refuses new requests (503) rather
/// than forget one still inside its window. Only requests signed with the key get in.
pub const MAX_REPLAY_ENTRIES: usize = 100_000;
const MAX_HEAD: usize = 16 * 1024;
const PATH: &str = "/v1/webhook";
/// How long the answer may take to write.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// `agent.webhook` of dso.yaml.
pub use crate::config::WebhookConfig as WebhookSettings;

/// Reads the webhook's HMAC key ([`read_key_file`]), which must hold at least [`MIN_KEY_LEN`]
/// bytes.
pub fn read_key(path: &Path) -> Result<Zeroizing<Vec<u8>>, AgentError> {
    let bytes = read_key_file(path, "webhook key")?;
    if bytes.len() < MIN_KEY_LEN {
        return Err(AgentError::ShortKey(path.into(), bytes.len()));
    }
    Ok(bytes)
}

/// Reads an HMAC key file (`what` names it in errors; trailing whitespace ignored): a regular,
/// non-empty file owned by root (or this user) that group and others can neither read nor
/// write ([`crate::trust`]). Checked on the open descriptor, so the file checked is the file
/// read; O_NONBLOCK, so that a FIFO planted at the path cannot hang the agent.
pub fn read_key_file(path: &Path, what: &'static str) -> Result<Zeroizing<Vec<u8>>, AgentError> {
    let fail = |e: std::io::Error| AgentError::Key(what, path.into(), e);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.file_type().is_file() {
        return Err(AgentError::BadKey(what, path.into(), "not a regular file"));
    }
    crate::trust::check(&meta, path, what, crate::trust::Use::Secret)?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    file.read_to_end(&mut bytes).map_err(fail)?;
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(AgentError::BadKey(what, path.into(), "empty"));
    }
    Ok(bytes)
}

/// The signatures of accepted requests still inside their timestamp window: a second use of
/// one is a replay.
#[derive(Debug, Default)]
pub struct ReplayCache {
    seen: Mutex<HashMap<Vec<u8>, i64>>,
}

impl ReplayCache {
    /// Records the MAC of a request stamped `ts`; `Err` (status, reason, why) when it was used
    /// before inside the window, or when the cache is full.
    fn first_use(
        &self,
        mac: Vec<u8>,
        ts: i64,
        now: i64,
    ) -> Result<(), (u16, &'static str, &'static str)> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.contains_key(&mac) {
            return Err((409, "Conflict", "replayed request"));
        }
        if seen.len() >= MAX_REPLAY_ENTRIES / 2 {
            // A request stamped t can be replayed while now - t <= MAX_SKEW_SECS.
            seen.retain(|_, t| now.saturating_sub(*t) <= MAX_SKEW_SECS);
        }
        if seen.len() >= MAX_REPLAY_ENTRIES {
            return Err((503, "Service Unavailable", "replay cache full"));
        }
        seen.insert(mac, ts);
        Ok(())
    }
}

/// Writes `webhook_rejected` events at a bounded rate (a token bucket: [`REJECTION_BURST`],
/// one more per [`REJECTION_REFILL`]); the next event written says how many were not.
#[derive(Debug)]
struct RejectionLog {
    state: Mutex<(f64, Instant, u64)>,
}

impl RejectionLog {
    fn new() -> Self {
        RejectionLog {
            state: Mutex::new((f64::from(REJECTION_BURST), Instant::now(), 0)),
        }
    }

    fn record(&self, audit: &Audit, stats: &ListenerStats, why: &str, peer: &str) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, last, unaudited) = &mut *st;
        let now = Instant::now();
        *tokens = (*tokens
            + now.duration_since(*last).as_secs_f64() / REJECTION_REFILL.as_secs_f64())
        .min(f64::from(REJECTION_BURST));
        *last = now;
        if *tokens < 1.0 {
            *unaudited += 1;
            bump(&stats.webhook_rejections_unaudited);
            return;
        }
        *tokens -= 1.0;
        let skipped = std::mem::take(unaudited);
        drop(st);
        let msg = if skipped > 0 {
            format!("{why} (from {peer}; {skipped} earlier rejections not audited: rate limit)")
        } else {
            format!("{why} (from {peer})")
        };
        audit.record(&Event::new("webhook_rejected", "failure").error(&msg));
    }
}

/// A bound webhook listener.
pub struct Webhook {
    listener: TcpListener,
    shared: Shared,
    limits: Limits,
}

struct Shared {
    key: Zeroizing<Vec<u8>>,
    audit: Arc<Audit>,
    tx: mpsc::Sender<Trigger>,
    stats: Arc<ListenerStats>,
    replay: ReplayCache,
    rejections: RejectionLog,
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
            shared: Shared {
                key,
                audit,
                tx,
                stats: Arc::default(),
                replay: ReplayCache::default(),
                rejections: RejectionLog::new(),
            },
            limits: listen::WEBHOOK_LIMITS,
        })
    }

    /// Counts into `stats` (shared with the metrics).
    pub fn with_stats(mut self, stats: Arc<ListenerStats>) -> Self {
        self.shared.stats = stats;
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves forever on background threads.
    pub fn spawn(self) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let Webhook {
                listener,
                shared,
                limits,
            } = self;
            let shared = Arc::new(shared);
            let stats = shared.stats.clone();
            listen::serve(
                || Some(listener.accept().map(|(c, _)| c)),
                limits,
                move |conn, deadline| handle(conn, deadline, &shared),
                |conn| {
                    bump(&stats.webhook_connections_refused);
                    refuse_busy(conn)
                },
                &stats.clone(),
            );
        })
    }
}

/// Over the connection cap: a 503 written without blocking (what fits), then closed.
fn refuse_busy(conn: TcpStream) {
    let _ = conn.set_nonblocking(true);
    let busy = r#"{"error":"busy"}"#;
    http::respond(
        &mut &conn,
        "503 Service Unavailable",
        JSON,
        "Retry-After: 1\r\n",
        busy,
    );
    let _ = conn.shutdown(std::net::Shutdown::Write);
}

const JSON: &str = "application/json";

fn handle(conn: TcpStream, deadline: Instant, s: &Shared) {
    let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let clock = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64
    };
    let outcome = process_request(
        &mut Deadlined::new(&conn, deadline),
        &s.key,
        clock,
        &s.replay,
    );
    let mut out = Deadlined::new(&conn, Instant::now() + RESPONSE_TIMEOUT);
    match outcome {
        Outcome::Closed => {}
        Outcome::Rejected { code, reason, why } => {
            bump(&s.stats.webhook_rejected);
            if code == 409 {
                bump(&s.stats.webhook_replays);
            }
            s.rejections.record(&s.audit, &s.stats, why, &peer);
            let body = serde_json::json!({ "error": why }).to_string();
            http::respond(&mut out, &format!("{code} {reason}"), JSON, "", &body);
        }
        Outcome::Accepted(secrets) => {
            for name in &secrets {
                s.audit
                    .record(&Event::new("webhook_accepted", "success").secret(name));
            }
            let _ = s.tx.send(Trigger::Secrets(secrets));
            http::respond(
                &mut out,
                "202 Accepted",
                JSON,
                "",
                r#"{"status":"accepted"}"#,
            );
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
/// once the whole body is in (a slow sender does not widen the replay window); an accepted
/// request's signature goes into `replay`, and a second use is refused. No I/O other than
/// reading `conn`: the caller answers and audits.
pub fn process_request<R: Read>(
    conn: &mut R,
    key: &[u8],
    now: impl FnOnce() -> i64,
    replay: &ReplayCache,
) -> Outcome {
    let reject = |code, reason, why| Outcome::Rejected { code, reason, why };

    let (head, mut body) = match http::read_head(conn, MAX_HEAD) {
        HeadRead::Head { head, rest } => (head, rest),
        HeadRead::Closed => return Outcome::Closed,
        HeadRead::TooLarge => {
            return reject(431, "Request Header Fields Too Large", "header too large");
        }
        HeadRead::Malformed => return reject(400, "Bad Request", "malformed request"),
    };
    if head.route() != PATH {
        return reject(404, "Not Found", "no such endpoint");
    }
    if head.method != "POST" {
        return reject(405, "Method Not Allowed", "only POST");
    }
    let Some(len) = head
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return reject(411, "Length Required", "Content-Length required");
    };
    if len > MAX_BODY {
        return reject(413, "Payload Too Large", "body over 64 KiB");
    }
    let mut chunk = [0u8; 4096];
    while body.len() < len {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return Outcome::Closed,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    if body.len() > len {
        return reject(413, "Payload Too Large", "body longer than Content-Length");
    }

    let now = now();
    let (ts, sig) = (
        head.header("x-dso-timestamp"),
        head.header("x-dso-signature"),
    );
    if let Err(why) = verify(key, ts, sig, &body, now) {
        return reject(401, "Unauthorized", why);
    }
    let secrets = match parse_body(&body) {
        Ok(secrets) => secrets,
        Err(why) => return reject(400, "Bad Request", why),
    };
    // Verified: both headers are there and well-formed.
    let t = ts.and_then(|t| t.trim().parse::<i64>().ok()).unwrap_or(now);
    let mac = sig
        .and_then(|s| s.trim().strip_prefix("sha256="))
        .and_then(hex_decode)
        .unwrap_or_default();
    match replay.first_use(mac, t, now) {
        Ok(()) => Outcome::Accepted(secrets),
        Err((code, reason, why)) => reject(code, reason, why),
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
    format!("sha256={}", hex::encode(tag))
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

/// Strict hex (digits and letters only: no sign, so one MAC has one spelling per case).
fn hex_decode(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuditConfig;
    use std::io::Write;
    use std::path::PathBuf;

    const KEY: &[u8] = b"webhook-test-key-of-32-bytes-or-more";

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

    fn serve(dir: &Path) -> (SocketAddr, mpsc::Receiver<Trigger>, PathBuf) {
        let (addr, rx, audit, _) = serve_counted(dir);
        (addr, rx, audit)
    }

    fn serve_counted(
        dir: &Path,
    ) -> (
        SocketAddr,
        mpsc::Receiver<Trigger>,
        PathBuf,
        Arc<ListenerStats>,
    ) {
        let audit_path = dir.join("audit.log");
        let audit = Arc::new(Audit::new(&AuditConfig {
            path: Some(audit_path.clone()),
            ..Default::default()
        }));
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(ListenerStats::default());
        let hook = Webhook::bind("127.0.0.1:0", Zeroizing::new(KEY.to_vec()), audit, tx)
            .unwrap()
            .with_stats(stats.clone());
        let addr = hook.local_addr().unwrap();
        hook.spawn();
        (addr, rx, audit_path, stats)
    }

    fn signed(body: &[u8]) -> Vec<(&'static str, String)> {
        let ts = now().to_string();
        let sig = sign(KEY, &ts, body);
        vec![("X-DSO-Timestamp", ts), ("X-DSO-Signature", sig)]
    }

    fn audited(audit_path: &Path, event: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|e: &serde_json::Value| e["event"] == event)
            .collect()
    }

    /// Issue 14 item 3: the same signed request is accepted once; its replay inside the window
    /// is refused with 409 (and triggers nothing).
    #[test]
    fn a_replayed_request_is_refused_with_409() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, rx, audit_path) = serve(dir.path());
        let body = br#"{"secrets":["db"]}"#.to_vec();
        let headers = signed(&body);
        assert_eq!(send(addr, &headers, &body), 202);
        assert_eq!(send(addr, &headers, &body), 409);
        assert_eq!(send(addr, &headers, &body), 409);
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        assert!(rx.try_recv().is_err(), "a replay triggered a rotation");
        // A fresh signature for the same body is a new request.
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(send(addr, &signed(&body), &body), 202);
        let rejected = audited(&audit_path, "webhook_rejected");
        assert!(
            rejected
                .iter()
                .any(|e| e["error"].as_str().unwrap().starts_with("replayed request")),
            "{rejected:?}"
        );
    }

    /// Issue 14 item 3: a key shorter than 32 bytes, or in a file group or others may read, is
    /// refused; 32 bytes in a 0600 file are taken.
    #[test]
    fn a_short_key_or_a_loose_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhook.key");
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("k\n", 0o600);
        let err = read_key(&path).unwrap_err().to_string();
        assert!(err.contains("at least 32 bytes"), "{err}");
        write(&"k".repeat(31), 0o600);
        assert!(read_key(&path).is_err());
        write(&"k".repeat(32), 0o644);
        let err = read_key(&path).unwrap_err().to_string();
        assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
        write(&"k".repeat(32), 0o640);
        assert!(read_key(&path).is_err());
        write(&format!("{}\n", "k".repeat(32)), 0o600);
        assert_eq!(&read_key(&path).unwrap()[..], "k".repeat(32).as_bytes());
        write(&"k".repeat(32), 0o400);
        assert!(read_key(&path).is_ok());
    }

    /// Issue 14 item 3: a flood of bad requests from anyone is refused, but only a bounded
    /// number of `webhook_rejected` lines reach the audit trail (the rest are counted).
    #[test]
    fn rejections_are_audited_at_a_bounded_rate() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, _rx, audit_path, stats) = serve_counted(dir.path());
        let body = br#"{"secrets":["db"]}"#.to_vec();
        let ts = now().to_string();
        let bad = vec![
            ("X-DSO-Timestamp", ts.clone()),
            ("X-DSO-Signature", sign(b"wrong", &ts, &body)),
        ];
        for _ in 0..100 {
            assert_eq!(send(addr, &bad, &body), 401);
        }
        let rejected = audited(&audit_path, "webhook_rejected");
        assert!(
            !rejected.is_empty() && rejected.len() <= 20,
            "{} rejection lines for 100 refusals",
            rejected.len()
        );
        // Every refusal is counted, audited or not.
        let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(n(&stats.webhook_rejected), 100);
        assert_eq!(
            n(&stats.webhook_rejections_unaudited),
            100 - rejected.len() as u64
        );
    }

    /// Reads until the server answers or closes; the status code, or 0 when it closed without
    /// an answer.
    fn status_of(c: &mut TcpStream) -> u16 {
        let mut resp = String::new();
        let _ = c.read_to_string(&mut resp);
        resp.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// Issue 14 item 3: connections over the cap are answered 503 at once (no thread, no wait),
    /// and once the idle ones are gone a signed request is served again.
    #[test]
    fn connections_over_the_cap_are_refused_and_service_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, rx, _audit) = serve(dir.path());
        let idle: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut over = TcpStream::connect(addr).unwrap();
        assert_eq!(status_of(&mut over), 503);
        drop(idle);
        let body = br#"{"secrets":["db"]}"#.to_vec();
        // The workers notice the closed connections one by one: retried until there is room.
        let mut code = 0;
        for _ in 0..200 {
            code = send(addr, &signed(&body), &body);
            if code != 503 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(code, 202);
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
    }

    /// Issue 14 item 3: a client that trickles its request (a byte at a time, never idle long
    /// enough for a per-read timeout) is cut off at the per-request deadline, and others are
    /// served meanwhile.
    #[test]
    fn a_slow_client_is_cut_off_at_the_deadline_and_others_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, rx, _audit) = serve(dir.path());
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let body = br#"{"secrets":["db"]}"#.to_vec();
        assert_eq!(send(addr, &signed(&body), &body), 202);
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        // A header line that never ends, one byte every 500 ms; 3 times the deadline at most.
        let mut cut = false;
        for _ in 0..60 {
            if slow.write_all(b"X").is_err() {
                cut = true;
                break;
            }
            let mut buf = [0u8; 256];
            match slow.read(&mut buf) {
                Ok(_) => {
                    cut = true; // an answer (408) or the close
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => {
                    cut = true;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(400));
        }
        assert!(cut, "a trickling client was still connected after 30 s");
        assert_eq!(send(addr, &signed(&body), &body), 202);
    }
}

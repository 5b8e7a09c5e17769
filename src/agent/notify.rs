//! `notifications:` — the agent POSTs chosen audit events (JSON, names only, never a value) to
//! configured URLs, signed like the inbound webhook (`X-DSO-Timestamp`, `X-DSO-Signature:
//! sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, see [`super::webhook::sign`]). Events
//! come from the audit file ([`crate::audit::follow`]), so those written by dso-runc count as
//! well as the agent's own. Each target has a bounded queue and one sender thread; a delivery
//! is retried with backoff (connection failures, 429, 5xx) within `timeout`, and one that
//! cannot be made — or an event dropped because the queue is full — is itself an audit event
//! (`notification_failed`) and a line on the agent's stderr: never lost without a trace.

use std::sync::Arc;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::AgentError;
use crate::audit::follow::Follower;
use crate::audit::{Audit, Event};
use crate::config::NotificationConfig;
use crate::providers::http::{ClientOptions, HttpClient, Request, RetryPolicy, Url};

/// Events waiting per target; more are dropped (and audited).
pub const QUEUE: usize = 1024;
/// How often the audit file is read for new events.
const POLL: Duration = Duration::from_millis(200);

/// One configured receiver.
struct Target {
    url: Url,
    events: Vec<String>,
    tx: SyncSender<serde_json::Map<String, serde_json::Value>>,
}

/// The events a target gets when `events` is not given.
pub const DEFAULT_EVENTS: &[&str] = &[
    "rotation_completed",
    "rotation_failed",
    "lease_failed",
    "access_denied",
    "auth_failed",
];

/// Starts one sender thread per target and the thread that follows the audit file. Fails (a
/// config error) on a URL that is not https (or http to loopback) or an unreadable key.
pub fn start(targets: &[NotificationConfig], audit: Arc<Audit>) -> Result<(), AgentError> {
    if targets.is_empty() {
        return Ok(());
    }
    let mut live = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let bad_url = |e: String| AgentError::NotifyUrl(i, e);
        let url = Url::parse(&t.url).map_err(|e| bad_url(e.to_string()))?;
        crate::providers::http::check_url(&url, crate::providers::http::UrlPolicy::HttpsOrLoopback)
            .map_err(bad_url)?;
        let key = super::webhook::read_key_file(&t.secret_file, "notification key")?;
        let opts = ClientOptions::new(t.timeout).retry(RetryPolicy {
            max_attempts: t.max_attempts.max(1),
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
        });
        let client = HttpClient::new("notify", &format!("notifications[{i}]"), &opts)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let events = if t.events.is_empty() {
            DEFAULT_EVENTS.iter().map(|s| s.to_string()).collect()
        } else {
            t.events.clone()
        };
        let sender = Sender {
            client,
            url: url.clone(),
            key,
            timeout: t.timeout,
            audit: audit.clone(),
        };
        std::thread::spawn(move || {
            for ev in rx {
                sender.deliver(&ev);
            }
        });
        live.push(Target { url, events, tx });
    }
    let path = audit.path().to_path_buf();
    std::thread::spawn(move || {
        let mut follow = Follower::at_end(&path);
        loop {
            for ev in follow.poll() {
                dispatch(&live, &audit, ev);
            }
            std::thread::sleep(POLL);
        }
    });
    Ok(())
}

fn dispatch(targets: &[Target], audit: &Audit, ev: serde_json::Map<String, serde_json::Value>) {
    let Some(name) = ev.get("event").and_then(|e| e.as_str()).map(str::to_string) else {
        return;
    };
    for t in targets.iter().filter(|t| t.events.contains(&name)) {
        match t.tx.try_send(ev.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let why = format!(
                    "{}: queue full ({QUEUE} waiting), event {name} seq {} dropped",
                    t.url,
                    ev.get("seq").map(|s| s.to_string()).unwrap_or_default()
                );
                eprintln!("dso agent: notification {why}");
                audit.record(&Event::new("notification_failed", "failure").error(&why));
            }
        }
    }
}

struct Sender {
    client: HttpClient,
    url: Url,
    key: Zeroizing<Vec<u8>>,
    timeout: Duration,
    audit: Arc<Audit>,
}

impl Sender {
    /// One event, retried within `timeout`; a failure is audited.
    fn deliver(&self, ev: &serde_json::Map<String, serde_json::Value>) {
        let mut body = ev.clone();
        if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            body.insert("host".into(), host.trim().into());
        }
        let body = serde_json::Value::Object(body).to_string().into_bytes();
        let name = ev.get("event").and_then(|e| e.as_str()).unwrap_or("?");
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        let sig = super::webhook::sign(&self.key, &ts, &body);
        let req = Request::post(self.url.clone())
            .header("x-dso-timestamp", &ts)
            .and_then(|r| r.header("x-dso-signature", &sig))
            .and_then(|r| r.body("application/json", Zeroizing::new(body)));
        let outcome = match req {
            Ok(req) => match self
                .client
                .send_with_retries(&req, Instant::now() + self.timeout)
            {
                Ok(resp) if resp.is_success() => return,
                Ok(resp) => format!("HTTP {} after {} attempt(s)", resp.status, resp.attempts),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        let why = format!("{}: event {name}: {outcome}", self.url);
        eprintln!("dso agent: notification {why}");
        self.audit
            .record(&Event::new("notification_failed", "failure").error(&why));
    }
}

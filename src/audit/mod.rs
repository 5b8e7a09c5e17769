//! The audit trail: one JSON line per event (`secret_fetched`, `secret_injected`, …) appended to
//! `audit.path` (default `/var/log/dso/audit.log`), hash-chained ([`chain`]), optionally copied
//! to syslog/journald. Never on stdout/stderr: dso-runc's stdio is the container's. An event
//! carries names, never a value.

pub mod chain;
pub mod follow;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::config::AuditConfig;

/// Where events go when dso.yaml has no `audit.path`.
pub const DEFAULT_AUDIT_PATH: &str = "/var/log/dso/audit.log";
/// The host's syslog socket (journald listens on it too).
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// One audit event. Only names, ids, durations and statuses: there is no field for a value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Event<'a> {
    pub timestamp: String,
    pub event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// Of a failed rotation: `transient` or `config` ([`crate::rotation::FailureClass`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<&'a str>,
    /// Who did the work when it was not this process (`"agent"`: served over its socket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'a str>,
    /// A dynamic secret's lease: a short hash of its lease id (never the id, never a value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<&'a str>,
    /// When that lease (or certificate) expires (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<&'a str>,
    /// The container's identity as its engine recorded it (never a value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<&'a crate::policy::Workload>,
}

impl<'a> Event<'a> {
    pub fn new(event: &'a str, status: &'a str) -> Self {
        Event {
            timestamp: now_rfc3339(),
            event,
            status,
            ..Default::default()
        }
    }
    pub fn secret(mut self, s: &'a str) -> Self {
        self.secret = Some(s);
        self
    }
    pub fn provider(mut self, p: &'a str) -> Self {
        self.provider = Some(p);
        self
    }
    pub fn container(mut self, c: &'a str) -> Self {
        self.container = Some(c);
        self
    }
    pub fn version(mut self, v: Option<&'a str>) -> Self {
        self.version = v;
        self
    }
    pub fn duration(mut self, d: Duration) -> Self {
        self.duration_ms = Some(d.as_millis() as u64);
        self
    }
    pub fn error(mut self, e: &'a str) -> Self {
        self.error = Some(e);
        self
    }
    pub fn class(mut self, c: &'a str) -> Self {
        self.class = Some(c);
        self
    }
    pub fn via(mut self, v: &'a str) -> Self {
        self.via = Some(v);
        self
    }
    pub fn lease(mut self, hash: &'a str, expires: &'a str) -> Self {
        self.lease = Some(hash);
        self.expires = Some(expires);
        self
    }
    pub fn workload(mut self, w: &'a crate::policy::Workload) -> Self {
        self.workload = Some(w);
        self
    }
}

/// An event that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("the audit log {path} could not be written: {source}")]
pub struct AuditError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Where failures to audit are reported (they must leave a trace somewhere): runc's log on the
/// create path, stderr (journald) in the agent and the CLI.
pub type Fallback = Box<dyn Fn(&str) + Send + Sync>;

/// Where events go.
pub struct Audit {
    path: PathBuf,
    /// The default path: its directory is created (0700) when missing.
    default_path: bool,
    syslog: Option<PathBuf>,
    required: bool,
    fallback: Fallback,
    syslog_warned: AtomicBool,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("path", &self.path)
            .field("syslog", &self.syslog)
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

impl Audit {
    pub fn new(cfg: &AuditConfig) -> Self {
        Audit {
            path: cfg
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_AUDIT_PATH)),
            default_path: cfg.path.is_none(),
            syslog: cfg.syslog.then(|| PathBuf::from(SYSLOG_SOCKET)),
            required: cfg.required,
            fallback: Box::new(|msg| eprintln!("dso: {msg}")),
            syslog_warned: AtomicBool::new(false),
        }
    }

    /// The default sink, for events before a config could be read (`config_rejected`).
    pub fn default_sink() -> Self {
        Self::new(&AuditConfig::default())
    }

    /// Reports failures to write through `f` instead of stderr.
    pub fn on_failure(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.fallback = Box::new(f);
        self
    }

    /// Sends the syslog copy to `socket` instead of /dev/log (tests).
    pub fn with_syslog_socket(mut self, socket: PathBuf) -> Self {
        self.syslog = Some(socket);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `audit.required`: an event that cannot be written fails the operation.
    pub fn required(&self) -> bool {
        self.required
    }

    /// Writes one event; a failure is reported through the fallback and otherwise ignored.
    pub fn record(&self, ev: &Event<'_>) {
        let _ = self.write(ev);
    }

    /// Writes one event; with `audit.required`, a failure is an error the caller must act on
    /// (fail closed). Without it, like [`Audit::record`].
    pub fn must_record(&self, ev: &Event<'_>) -> Result<(), AuditError> {
        match self.write(ev) {
            Err(e) if self.required => Err(e),
            _ => Ok(()),
        }
    }

    /// Writes several events under one lock and in one `write` (a rotation of many
    /// containers, the fetches of one create); failures as [`Audit::record`].
    pub fn record_all(&self, evs: &[Event<'_>]) {
        let _ = self.write_all(evs);
    }

    /// [`Audit::must_record`] for several events, written together.
    pub fn must_record_all(&self, evs: &[Event<'_>]) -> Result<(), AuditError> {
        match self.write_all(evs) {
            Err(e) if self.required => Err(e),
            _ => Ok(()),
        }
    }

    fn write_all(&self, evs: &[Event<'_>]) -> Result<(), AuditError> {
        let objs: Vec<_> = evs
            .iter()
            .filter_map(|ev| match serde_json::to_value(ev) {
                Ok(serde_json::Value::Object(m)) => Some(m),
                _ => None,
            })
            .collect();
        if objs.is_empty() {
            return Ok(());
        }
        if self.syslog.is_some() {
            for obj in &objs {
                self.to_syslog(obj);
            }
        }
        let res = self
            .ensure_dir()
            .and_then(|()| chain::append(&self.path, &objs, self.required));
        res.map_err(|source| {
            let err = AuditError {
                path: self.path.clone(),
                source,
            };
            for obj in objs {
                let line = serde_json::Value::Object(obj).to_string();
                (self.fallback)(&format!("{err}; the event was: {line}"));
            }
            err
        })
    }

    fn write(&self, ev: &Event<'_>) -> Result<(), AuditError> {
        let obj = match serde_json::to_value(ev) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return Ok(()),
        };
        if self.syslog.is_some() {
            self.to_syslog(&obj);
        }
        let res = self
            .ensure_dir()
            .and_then(|()| chain::append(&self.path, std::slice::from_ref(&obj), self.required));
        res.map_err(|source| {
            let err = AuditError {
                path: self.path.clone(),
                source,
            };
            let line = serde_json::Value::Object(obj).to_string();
            (self.fallback)(&format!("{err}; the event was: {line}"));
            err
        })
    }

    fn ensure_dir(&self) -> std::io::Result<()> {
        if !self.default_path {
            return Ok(());
        }
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => {
                match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// One datagram per event to the syslog socket: facility authpriv, severity info (or
    /// warning for a failure), tag `dso`. A host without one is reported once.
    fn to_syslog(&self, obj: &serde_json::Map<String, serde_json::Value>) {
        let Some(socket) = &self.syslog else { return };
        const AUTHPRIV: u8 = 10;
        let severity = if obj.get("status").and_then(|s| s.as_str()) == Some("failure") {
            4
        } else {
            6
        };
        let msg = format!(
            "<{}>dso[{}]: {}",
            u16::from(AUTHPRIV) * 8 + severity,
            std::process::id(),
            serde_json::Value::Object(obj.clone())
        );
        let sent = std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.send_to(msg.as_bytes(), socket));
        if let Err(e) = sent
            && !self.syslog_warned.swap(true, Ordering::Relaxed)
        {
            (self.fallback)(&format!(
                "audit.syslog: cannot send to {}: {e} (the file {} still has every event)",
                socket.display(),
                self.path.display()
            ));
        }
    }
}

/// UTC time as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    format!("{:.3}", jiff::Timestamp::now())
}

/// Unix time as RFC 3339 UTC with milliseconds (`2023-11-14T22:13:20.005Z`): the one formatter.
pub fn format_rfc3339(secs: i64, millis: u32) -> String {
    let nanos = i32::try_from(millis.min(999) * 1_000_000).unwrap_or(0);
    let t = jiff::Timestamp::new(secs, nanos).unwrap_or(jiff::Timestamp::MAX);
    format!("{t:.3}")
}

/// Parses an RFC 3339 timestamp in UTC or with an offset (`2024-05-01T12:00:00Z`,
/// `2024-05-01T12:00:00.123+02:00`) as STS, IMDS and Vault give them, to the whole second;
/// `None` before 1970.
pub fn parse_rfc3339(s: &str) -> Option<std::time::SystemTime> {
    let t: jiff::Timestamp = s.trim().parse().ok()?;
    let secs = u64::try_from(t.as_second()).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(1_700_000_000, 5), "2023-11-14T22:13:20.005Z");
        assert_eq!(format_rfc3339(951_782_400, 0), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn rfc3339() {
        const T0: u64 = 1_700_000_000;
        let at = |secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(at(0)));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(at(T0)));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.123Z"), Some(at(T0)));
        assert_eq!(parse_rfc3339("2023-11-15T00:13:20+02:00"), Some(at(T0)));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(at(951_782_400)));
        assert_eq!(parse_rfc3339("2023-13-14T22:13:20Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20"), None);
    }

    #[test]
    fn event_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::new(&AuditConfig {
            path: Some(path.clone()),
            ..Default::default()
        });
        audit.record(
            &Event::new("secret_injected", "success")
                .secret("db_password")
                .container("c1")
                .duration(Duration::from_millis(48)),
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["event"], "secret_injected");
        assert_eq!(v["secret"], "db_password");
        assert_eq!(v["container"], "c1");
        assert_eq!(v["duration_ms"], 48);
        assert_eq!(v["status"], "success");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn syslog_copy_goes_to_the_socket_with_authpriv() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("log.sock");
        let server = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
        let audit = Audit::new(&AuditConfig {
            path: Some(dir.path().join("audit.log")),
            syslog: true,
            ..Default::default()
        })
        .with_syslog_socket(sock.clone());
        audit.record(&Event::new("secret_fetched", "success").secret("db"));
        audit.record(&Event::new("auth_failed", "failure").secret("db"));
        let mut buf = [0u8; 4096];
        let n = server.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(msg.starts_with("<86>dso["), "{msg}");
        assert!(msg.contains("\"event\":\"secret_fetched\""), "{msg}");
        let n = server.recv(&mut buf).unwrap();
        assert!(
            std::str::from_utf8(&buf[..n])
                .unwrap()
                .starts_with("<84>dso[")
        );
        // A host without the socket: the file still has the events; one warning.
        let warned = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let w = warned.clone();
        let audit = Audit::new(&AuditConfig {
            path: Some(dir.path().join("audit2.log")),
            syslog: true,
            ..Default::default()
        })
        .with_syslog_socket(dir.path().join("nope.sock"))
        .on_failure(move |_| {
            w.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        audit.record(&Event::new("a", "success"));
        audit.record(&Event::new("b", "success"));
        assert_eq!(warned.load(std::sync::atomic::Ordering::SeqCst), 1);
        let text = std::fs::read_to_string(dir.path().join("audit2.log")).unwrap();
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn required_reports_and_fails_optional_reports_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir/audit.log");
        let reported = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let r = reported.clone();
        let audit = Audit::new(&AuditConfig {
            path: Some(path.clone()),
            required: true,
            ..Default::default()
        })
        .on_failure(move |m| r.lock().unwrap().push(m.to_string()));
        let err = audit
            .must_record(&Event::new("secret_fetched", "success").secret("db"))
            .unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "the audit log {} could not be written",
                path.display()
            )),
            "{err}"
        );
        let reported = reported.lock().unwrap();
        assert!(
            reported[0].contains("\"event\":\"secret_fetched\""),
            "{reported:?}"
        );
        let optional = Audit::new(&AuditConfig {
            path: Some(path),
            ..Default::default()
        })
        .on_failure(|_| {});
        assert!(optional.must_record(&Event::new("x", "success")).is_ok());
    }
}

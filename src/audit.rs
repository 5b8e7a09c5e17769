//! The audit trail: one JSON line per event (`secret_fetched`, `secret_injected`, …) appended to
//! `audit.path`, or to stderr. An event carries names, never a value.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::config::AuditConfig;

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

/// Where events go.
#[derive(Debug)]
pub struct Audit {
    path: Option<PathBuf>,
    lock: Mutex<()>,
}

impl Audit {
    pub fn new(cfg: &AuditConfig) -> Self {
        Audit {
            path: cfg.path.clone(),
            lock: Mutex::new(()),
        }
    }

    /// Audit to stderr (used before a config could be read).
    pub fn stderr() -> Self {
        Audit {
            path: None,
            lock: Mutex::new(()),
        }
    }

    /// Appends one event as a single `write` (O_APPEND), so concurrent writers never interleave
    /// within a line. Audit failures are reported on stderr but never stop the operation.
    pub fn record(&self, ev: &Event<'_>) {
        let Ok(mut line) = serde_json::to_vec(ev) else {
            return;
        };
        line.push(b'\n');
        let _guard = self.lock.lock();
        let res = match &self.path {
            Some(path) => OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut f| f.write_all(&line)),
            None => std::io::stderr().write_all(&line),
        };
        if let Err(e) = res {
            eprintln!("dso: audit log {:?}: {e}", self.path);
        }
    }
}

/// UTC time as RFC 3339 with milliseconds, without pulling in a date crate.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_rfc3339(now.as_secs() as i64, now.subsec_millis())
}

/// Unix time as RFC 3339 UTC with milliseconds.
pub fn format_rfc3339(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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
    fn event_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::new(&AuditConfig {
            path: Some(path.clone()),
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
}

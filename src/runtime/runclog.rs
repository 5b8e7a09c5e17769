//! Logging in runc's own format, to runc's `--log` file: JSON lines
//! `{"level":"error","msg":"…","time":"…"}` with `--log-format json` (what containerd reads to
//! show `docker run` the reason of a failure), logfmt-style text otherwise. The shim never
//! writes to stdout: stdout may be the container's.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};

use super::argv::Invocation;
use crate::audit::now_rfc3339;

/// Where runc logs go for this invocation.
#[derive(Debug, Clone)]
pub struct RuncLog {
    path: Option<PathBuf>,
    json: bool,
    debug: bool,
}

impl RuncLog {
    pub fn from_invocation(inv: &Invocation) -> Self {
        RuncLog {
            path: inv.log.clone(),
            json: inv.log_format.as_deref() == Some("json"),
            debug: inv.debug,
        }
    }

    /// Formats one line in runc's shape.
    pub fn format(&self, level: &str, msg: &str) -> String {
        let time = now_rfc3339();
        if self.json {
            let line = serde_json::json!({"level": level, "msg": msg, "time": time});
            format!("{line}\n")
        } else {
            format!("time={time:?} level={level} msg={msg:?}\n")
        }
    }

    /// Appends one line to `--log` (or stderr when runc would log there).
    pub fn write(&self, level: &str, msg: &str) {
        let line = self.format(level, msg);
        let written = self.path.as_ref().is_some_and(|p| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .is_ok()
        });
        if !written {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }

    /// Reports a failure in the log (containerd reads it and `docker run` shows it). Not also
    /// on stderr, as runc does: a create's stderr is the container's, and a line there would
    /// land in the application's log stream (`docker logs`). Only without `--log` does the
    /// line go to stderr (someone ran dso-runc by hand).
    pub fn error(&self, msg: &str) {
        self.write("error", msg);
    }

    /// Installs a tracing subscriber that writes to this log (debug level with `--debug`).
    pub fn install_tracing(&self) {
        use tracing_subscriber::prelude::*;
        let level = if self.debug {
            tracing::level_filters::LevelFilter::DEBUG
        } else {
            tracing::level_filters::LevelFilter::WARN
        };
        let _ = tracing_subscriber::registry()
            .with(RuncLogLayer { log: self.clone() }.with_filter(level))
            .try_init();
    }
}

struct RuncLogLayer {
    log: RuncLog,
}

#[derive(Default)]
struct MsgVisitor {
    msg: String,
    fields: String,
}

impl Visit for MsgVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.msg, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for RuncLogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut v = MsgVisitor::default();
        event.record(&mut v);
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        self.log
            .write(&level, &format!("dso: {}{}", v.msg, v.fields));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_text_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let log = RuncLog {
            path: Some(path.clone()),
            json: true,
            debug: false,
        };
        log.write("error", "dso: secret \"x\" is not defined");
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
        assert_eq!(line["level"], "error");
        assert_eq!(line["msg"], "dso: secret \"x\" is not defined");
        assert!(line["time"].is_string());

        let text = RuncLog {
            path: None,
            json: false,
            debug: false,
        }
        .format("error", "a \"b\"");
        assert!(text.contains("level=error msg=\"a \\\"b\\\"\""), "{text}");
    }
}

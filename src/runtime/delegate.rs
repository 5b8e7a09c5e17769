//! The delegate runtime (runc by default): exec'd for passthrough, run as a child for the
//! steps of a create with secrets (`create`, `state`, `start`, `delete --force`).

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};

use super::argv::Invocation;

pub const DELEGATE_ENV: &str = "DSO_DELEGATE";
pub const DEFAULT_DELEGATE: &str = "runc";

#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    #[error("cannot run {delegate:?}: {source}")]
    Spawn {
        delegate: OsString,
        #[source]
        source: std::io::Error,
    },
    #[error("{delegate:?} {what} failed ({status}): {stderr}")]
    Failed {
        delegate: OsString,
        what: &'static str,
        status: ExitStatus,
        stderr: String,
    },
    #[error("cannot read the pid of container {id}: {detail}")]
    Pid { id: String, detail: String },
}

/// The delegate: `--dso-delegate`, else `DSO_DELEGATE`, else `runc` on PATH. Chosen without
/// reading dso.yaml so that every runc call (create, delete, …) of a container agrees on it,
/// and a broken dso.yaml can never stop Docker from cleaning up.
pub fn resolve(inv: &Invocation) -> OsString {
    inv.delegate
        .clone()
        .or_else(|| std::env::var_os(DELEGATE_ENV).filter(|v| !v.is_empty()))
        .unwrap_or_else(|| OsString::from(DEFAULT_DELEGATE))
}

/// Replaces this process with the delegate, argv unchanged. Returns only on failure.
pub fn exec(delegate: &OsStr, args: &[OsString]) -> std::io::Error {
    Command::new(delegate).arg0(delegate).args(args).exec()
}

/// Runs the delegate with `args`, inheriting stdio (so the container's stdio is what the engine
/// gave us), and waits.
pub fn run(delegate: &OsStr, args: &[OsString]) -> Result<ExitStatus, DelegateError> {
    Command::new(delegate)
        .args(args)
        .status()
        .map_err(|source| DelegateError::Spawn {
            delegate: delegate.to_os_string(),
            source,
        })
}

/// Runs `<delegate> <global flags> <cmd...>` capturing its output (stdout returned).
fn run_captured(
    delegate: &OsStr,
    inv: &Invocation,
    what: &'static str,
    tail: &[&OsStr],
) -> Result<Vec<u8>, DelegateError> {
    let out = Command::new(delegate)
        .args(inv.global_args())
        .args(tail)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| DelegateError::Spawn {
            delegate: delegate.to_os_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(DelegateError::Failed {
            delegate: delegate.to_os_string(),
            what,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// `runc delete --force <id>`: nothing half-made is left behind.
pub fn delete_force(delegate: &OsStr, inv: &Invocation, id: &str) -> Result<(), DelegateError> {
    run_captured(
        delegate,
        inv,
        "delete",
        &["delete".as_ref(), "--force".as_ref(), id.as_ref()],
    )
    .map(drop)
}

/// `runc start <id>`.
pub fn start(delegate: &OsStr, inv: &Invocation, id: &str) -> Result<(), DelegateError> {
    run_captured(delegate, inv, "start", &["start".as_ref(), id.as_ref()]).map(drop)
}

/// The container's init pid: from `--pid-file` when runc wrote one, else `runc state`.
pub fn init_pid(delegate: &OsStr, inv: &Invocation, id: &str) -> Result<i32, DelegateError> {
    let perr = |detail: String| DelegateError::Pid {
        id: id.to_string(),
        detail,
    };
    if let Some(pid_file) = &inv.pid_file {
        let text = std::fs::read_to_string(pid_file)
            .map_err(|e| perr(format!("{}: {e}", pid_file.display())))?;
        return text
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                perr(format!(
                    "{}: {:?} is not a pid",
                    pid_file.display(),
                    text.trim()
                ))
            });
    }
    let out = run_captured(delegate, inv, "state", &["state".as_ref(), id.as_ref()])?;
    let state: serde_json::Value =
        serde_json::from_slice(&out).map_err(|e| perr(format!("runc state: {e}")))?;
    state
        .get("pid")
        .and_then(serde_json::Value::as_i64)
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| perr("runc state has no pid".into()))
}

//! The delegate runtime (runc by default) behind the [`Delegate`] trait: exec'd for passthrough,
//! run as a child for the steps of a create with secrets (`create`, `state`, `start`,
//! `delete --force`). [`Runc`] is the real one; unit tests use `fake::FakeDelegate`.

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

/// The runc calls dso makes. `inv` gives the global flags (`--root`, `--log`, …) that every
/// follow-up call of a container must repeat.
pub trait Delegate {
    /// The delegate's program, recorded with the container so that later calls agree on it.
    fn program(&self) -> &OsStr;
    /// Replaces this process with the delegate, argv unchanged. Returns only on failure.
    fn exec(&self, args: &[OsString]) -> std::io::Error;
    /// Runs the delegate with `args` (a `create`), inheriting stdio (so the container's stdio
    /// is what the engine gave us), and waits.
    fn create(&self, args: &[OsString]) -> Result<ExitStatus, DelegateError>;
    /// `state <id>`: runc's JSON.
    fn state(&self, inv: &Invocation, id: &str) -> Result<Vec<u8>, DelegateError>;
    /// `start <id>`.
    fn start(&self, inv: &Invocation, id: &str) -> Result<(), DelegateError>;
    /// `delete --force <id>`: nothing half-made is left behind.
    fn delete_force(&self, inv: &Invocation, id: &str) -> Result<(), DelegateError>;
}

/// The real delegate: a runc-compatible program.
#[derive(Debug, Clone)]
pub struct Runc(pub OsString);

impl Runc {
    /// `--dso-delegate`, else `DSO_DELEGATE`, else `runc` on PATH. Chosen without reading
    /// dso.yaml so that every runc call (create, delete, …) of a container agrees on it, and a
    /// broken dso.yaml can never stop Docker from cleaning up.
    pub fn resolve(inv: &Invocation) -> Runc {
        Runc(
            inv.delegate
                .clone()
                .or_else(|| std::env::var_os(DELEGATE_ENV).filter(|v| !v.is_empty()))
                .unwrap_or_else(|| OsString::from(DEFAULT_DELEGATE)),
        )
    }

    fn spawn_error(&self, source: std::io::Error) -> DelegateError {
        DelegateError::Spawn {
            delegate: self.0.clone(),
            source,
        }
    }

    /// Runs `<delegate> <global flags> <what> <id>` capturing its output (stdout returned).
    fn run_captured(
        &self,
        inv: &Invocation,
        what: &'static str,
        tail: &[&str],
    ) -> Result<Vec<u8>, DelegateError> {
        let out = Command::new(&self.0)
            .args(inv.global_args())
            .args(tail)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(e))?;
        if !out.status.success() {
            return Err(DelegateError::Failed {
                delegate: self.0.clone(),
                what,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }
}

impl Delegate for Runc {
    fn program(&self) -> &OsStr {
        &self.0
    }

    fn exec(&self, args: &[OsString]) -> std::io::Error {
        Command::new(&self.0).arg0(&self.0).args(args).exec()
    }

    fn create(&self, args: &[OsString]) -> Result<ExitStatus, DelegateError> {
        let status = Command::new(&self.0).args(args).status();
        status.map_err(|e| self.spawn_error(e))
    }

    fn state(&self, inv: &Invocation, id: &str) -> Result<Vec<u8>, DelegateError> {
        self.run_captured(inv, "state", &["state", id])
    }

    fn start(&self, inv: &Invocation, id: &str) -> Result<(), DelegateError> {
        self.run_captured(inv, "start", &["start", id]).map(drop)
    }

    fn delete_force(&self, inv: &Invocation, id: &str) -> Result<(), DelegateError> {
        self.run_captured(inv, "delete", &["delete", "--force", id])
            .map(drop)
    }
}

/// The container's init pid: from `--pid-file` when runc wrote one, else `runc state`.
pub fn init_pid(delegate: &dyn Delegate, inv: &Invocation, id: &str) -> Result<i32, DelegateError> {
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
    let out = delegate.state(inv, id)?;
    let state: serde_json::Value =
        serde_json::from_slice(&out).map_err(|e| perr(format!("runc state: {e}")))?;
    state
        .get("pid")
        .and_then(serde_json::Value::as_i64)
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| perr("runc state has no pid".into()))
}

/// A delegate for unit tests: records each call, answers `state` with a given pid, and fails
/// the one call it is told to.
#[cfg(test)]
pub(crate) mod fake {
    use std::cell::RefCell;
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Call {
        Exec,
        Create,
        State,
        Start,
        Delete,
    }

    #[derive(Default)]
    pub struct FakeDelegate {
        pub calls: RefCell<Vec<Call>>,
        /// The call that fails (`create` exits 1, the others report a failure).
        pub fail: Option<Call>,
        /// What `state` reports (`{"pid": …}`).
        pub pid: i32,
        /// Run by `create` (a fault that strikes while runc creates the container).
        pub on_create: Option<Box<dyn Fn()>>,
    }

    impl FakeDelegate {
        pub fn new(pid: i32, fail: Option<Call>) -> Self {
            FakeDelegate {
                pid,
                fail,
                ..Default::default()
            }
        }

        pub fn calls(&self) -> Vec<Call> {
            self.calls.borrow().clone()
        }

        fn call(&self, call: Call, what: &'static str) -> Result<(), DelegateError> {
            self.calls.borrow_mut().push(call);
            match self.fail == Some(call) {
                true => Err(DelegateError::Failed {
                    delegate: "fake-runc".into(),
                    what,
                    status: ExitStatus::from_raw(1 << 8),
                    stderr: "told to fail".into(),
                }),
                false => Ok(()),
            }
        }
    }

    impl Delegate for FakeDelegate {
        fn program(&self) -> &OsStr {
            "fake-runc".as_ref()
        }

        fn exec(&self, _: &[OsString]) -> std::io::Error {
            let _ = self.call(Call::Exec, "exec");
            std::io::Error::other("fake exec")
        }

        fn create(&self, _: &[OsString]) -> Result<ExitStatus, DelegateError> {
            let failed = self.call(Call::Create, "create").is_err();
            self.on_create.iter().for_each(|f| f());
            Ok(ExitStatus::from_raw(if failed { 1 << 8 } else { 0 }))
        }

        fn state(&self, _: &Invocation, _: &str) -> Result<Vec<u8>, DelegateError> {
            self.call(Call::State, "state")?;
            Ok(serde_json::json!({ "pid": self.pid })
                .to_string()
                .into_bytes())
        }

        fn start(&self, _: &Invocation, _: &str) -> Result<(), DelegateError> {
            self.call(Call::Start, "start")
        }

        fn delete_force(&self, _: &Invocation, _: &str) -> Result<(), DelegateError> {
            self.call(Call::Delete, "delete")
        }
    }
}

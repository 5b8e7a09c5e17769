//! How dso meets the container engines on a host: its runtime entry in dockerd's daemon.json
//! ([`daemon_json`]), asking dockerd to reload, the Engine API ([`docker_api`]) and the host
//! checks of `dso doctor` ([`doctor`]).

pub mod daemon_json;
pub mod docker_api;
pub mod doctor;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why talking to dockerd failed (its pid file, a signal, its Engine API).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot read {p}: {1}", p = .0.display())]
    PidFile(PathBuf, #[source] std::io::Error),
    #[error("{p} does not hold a pid", p = .0.display())]
    NoPid(PathBuf),
    #[error("{p} names pid {1}, which is not a running dockerd; reload dockerd yourself (systemctl reload docker) or pass --dockerd-pidfile PATH", p = .0.display())]
    NotDockerd(PathBuf, i32),
    #[error("cannot send SIGHUP to dockerd (pid {0}): {1}")]
    Reload(i32, #[source] nix::Error),
    #[error("{0} {1:?} is not a unix socket; dso talks to dockerd over unix:///path only")]
    NotUnix(&'static str, String),
    #[error("Docker API at {p}: {1}", p = .0.display())]
    Api(PathBuf, #[source] std::io::Error),
    #[error("Docker API at {p}: GET /info: HTTP {1}: {2}", p = .0.display())]
    Info(PathBuf, u16, String),
    #[error("container id {0:?} cannot be used in a Docker API path")]
    BadId(String),
    #[error("restarting {0} through the Docker API at {p}: {2}", p = .1.display())]
    Restart(String, PathBuf, #[source] std::io::Error),
    #[error("restarting {0} through the Docker API at {p}: HTTP {2}: {3}", p = .1.display())]
    RestartStatus(String, PathBuf, u16, String),
}

/// Where dockerd writes its pid by default.
pub const DEFAULT_DOCKERD_PIDFILE: &str = "/var/run/docker.pid";

/// The pid of the dockerd named by `pidfile`: None when the file does not exist (dockerd is
/// not running); an error when it names something that is not a live dockerd (a stale file
/// must never make dso signal an unrelated process).
pub fn dockerd_pid(pidfile: &Path) -> Result<Option<i32>, EngineError> {
    let text = match fs::read_to_string(pidfile) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EngineError::PidFile(pidfile.into(), e)),
    };
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|&p: &i32| p > 0)
        .ok_or_else(|| EngineError::NoPid(pidfile.into()))?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "dockerd" {
        return Err(EngineError::NotDockerd(pidfile.into(), pid));
    }
    Ok(Some(pid))
}

/// Asks dockerd to re-read daemon.json (SIGHUP reloads `runtimes` and `default-runtime`).
pub fn reload_dockerd(pid: i32) -> Result<(), EngineError> {
    use nix::sys::signal::{Signal, kill};
    kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP).map_err(|e| EngineError::Reload(pid, e))
}

/// Polls the Engine API at `socket` until runtime `name` is registered (`present`) or gone;
/// true if that happened before `deadline`.
pub fn wait_for_runtime(socket: &Path, name: &str, present: bool, deadline: Duration) -> bool {
    let started = Instant::now();
    loop {
        let registered = docker_api::info(socket, Duration::from_secs(5))
            .map(|info| docker_api::runtime_path(&info, name).is_some());
        if registered.is_ok_and(|r| r == present) {
            return true;
        }
        if started.elapsed() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `dso-runc` next to the running `dso` (the packaged layout: both in /usr/bin), else
/// `/usr/bin/dso-runc`.
pub fn default_runtime_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("dso-runc")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/dso-runc"))
}

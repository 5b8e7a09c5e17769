//! `dso doctor`: the checks that tell whether this host can run containers with secrets —
//! delegate runtime, dso's binaries, dockerd, the runtime registration, dso.yaml, permissions of
//! the config and key files, the agent, and every provider (a real version lookup). Each check
//! says what it found and, when it is not `ok`, what to do.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::daemon_json::DaemonJson;
use super::docker_api;
use crate::config::Config;
use crate::providers::FetchRequest;
use crate::providers::pool::{self, Pool};

/// How a check came out. Only `Fail` makes `dso doctor` exit non-zero: a `Warn` is something
/// that works but could be better (no agent: no automatic rotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    pub status: Status,
    pub detail: String,
}

fn check(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Check {
    Check {
        check: name.into(),
        status,
        detail: detail.into(),
    }
}

/// What to check against.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    pub config_path: PathBuf,
    pub daemon_json: PathBuf,
    /// The Engine API socket (`None`: Docker is not checked).
    pub docker_socket: Option<PathBuf>,
    pub runtime_name: String,
    /// Checks to leave out, by name (`dockerd`, `runtime`, `agent`, `providers`, ...).
    pub skip: Vec<String>,
    /// Per-provider deadline for the version lookup.
    pub provider_timeout: Duration,
}

/// Runs every check, in order.
pub fn run(opts: &DoctorOptions) -> Vec<Check> {
    let mut out = vec![check_delegate(), check_binaries()];
    if let Some(socket) = &opts.docker_socket {
        let (c, info) = check_dockerd(socket);
        out.push(c);
        out.push(check_runtime(opts, info.as_ref()));
    }
    let cfg = match Config::load(&opts.config_path) {
        Ok(cfg) => {
            out.push(check(
                "config",
                Status::Ok,
                format!("{} is valid", opts.config_path.display()),
            ));
            Some(cfg)
        }
        Err(crate::config::ConfigError::Read { path, source })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            out.push(check(
                "config",
                Status::Fail,
                format!(
                    "{} does not exist; run `dso init` (it creates a key file, a local store and this config)",
                    path.display()
                ),
            ));
            None
        }
        Err(e) => {
            out.push(check(
                "config",
                Status::Fail,
                format!(
                    "{}; fix it (`dso config validate` lists every problem)",
                    e.messages().join("; ")
                ),
            ));
            None
        }
    };
    out.extend(check_permissions(&opts.config_path, cfg.as_ref()));
    match &cfg {
        Some(cfg) => {
            out.push(check_policy(cfg));
            out.push(check_socket_dir(cfg));
            out.push(check_agent(cfg));
            out.extend(check_providers(cfg, opts.provider_timeout));
        }
        None => {
            out.push(check("policy", Status::Skip, "no valid config"));
            out.push(check("socket dir", Status::Skip, "no valid config"));
            out.push(check("agent", Status::Skip, "no valid config"));
            out.push(check("providers", Status::Skip, "no valid config"));
        }
    }
    out.into_iter()
        .map(|mut c| {
            let family = c.check.split(':').next().unwrap_or("").to_string();
            if opts.skip.iter().any(|s| *s == c.check || *s == family) {
                c.status = Status::Skip;
                c.detail = "skipped (--skip)".into();
            }
            c
        })
        .collect()
}

/// The access policy: warns where it lets more through than deny-by-default with declared
/// secrets would (docs/policy.md).
fn check_policy(cfg: &Config) -> Check {
    use crate::policy::DefaultDecision;
    let mut loose = Vec::new();
    if cfg.policy.default == DefaultDecision::Allow {
        let open: Vec<&str> = cfg
            .secrets
            .iter()
            .filter(|(_, s)| s.allow.is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        loose.push(format!(
            "policy.default is allow: any container that names a secret without allow rules gets it ({})",
            if open.is_empty() {
                "none now".to_string()
            } else {
                open.join(", ")
            }
        ));
    }
    if cfg.policy.inline_references {
        loose.push(
            "policy.inline_references is true: containers can name provider paths that are not declared under secrets:"
                .to_string(),
        );
    }
    if loose.is_empty() {
        check(
            "policy",
            Status::Ok,
            "deny by default; only declared secrets, only to the workloads they grant",
        )
    } else {
        check(
            "policy",
            Status::Warn,
            format!("{}; see `dso policy explain`", loose.join("; ")),
        )
    }
}

/// The control socket belongs in dso's own state dir: elsewhere the agent leaves the
/// directory's mode alone (it is not dso's), so who can reach the socket is up to that directory.
fn check_socket_dir(cfg: &Config) -> Check {
    let socket = crate::control::socket_path(cfg);
    let dir = socket.parent().unwrap_or(Path::new("/"));
    if dir == cfg.runtime.state_dir {
        return check(
            "socket dir",
            Status::Ok,
            format!("{} is in dso's state dir", socket.display()),
        );
    }
    check(
        "socket dir",
        Status::Warn,
        format!(
            "agent.socket {} is in {}, which dso does not own: the agent leaves its mode as it is; put the socket in runtime.state_dir ({}) or check who can enter {}",
            socket.display(),
            dir.display(),
            cfg.runtime.state_dir.display(),
            dir.display()
        ),
    )
}

/// True when no check failed.
pub fn passed(checks: &[Check]) -> bool {
    !checks.iter().any(|c| c.status == Status::Fail)
}

fn check_delegate() -> Check {
    let delegate = std::env::var(crate::runtime::delegate::DELEGATE_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| crate::runtime::delegate::DEFAULT_DELEGATE.to_string());
    match Command::new(&delegate).arg("--version").output() {
        Ok(out) if out.status.success() => {
            let first = String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            check("runc", Status::Ok, format!("{delegate}: {first}"))
        }
        Ok(out) => check(
            "runc",
            Status::Fail,
            format!(
                "`{delegate} --version` failed ({}); reinstall runc (apt-get install runc)",
                out.status
            ),
        ),
        Err(e) => check(
            "runc",
            Status::Fail,
            format!(
                "cannot run {delegate:?}: {e}; install runc (apt-get install runc) or set {}",
                crate::runtime::delegate::DELEGATE_ENV
            ),
        ),
    }
}

fn check_binaries() -> Check {
    let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    else {
        return check("binaries", Status::Warn, "cannot tell where dso runs from");
    };
    let missing: Vec<String> = ["dso-runc", "dso-init"]
        .iter()
        .map(|b| dir.join(b))
        .filter(|p| !is_executable(p))
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        check(
            "binaries",
            Status::Ok,
            format!("dso-runc and dso-init in {}", dir.display()),
        )
    } else {
        check(
            "binaries",
            Status::Fail,
            format!(
                "missing or not executable: {}; reinstall dso (dso-runc looks for dso and dso-init next to itself)",
                missing.join(", ")
            ),
        )
    }
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn check_dockerd(socket: &Path) -> (Check, Option<Value>) {
    match docker_api::info(socket, Duration::from_secs(10)) {
        Ok(info) => {
            let version = info
                .get("ServerVersion")
                .and_then(Value::as_str)
                .unwrap_or("?");
            (
                check(
                    "dockerd",
                    Status::Ok,
                    format!("Docker {version} at {}", socket.display()),
                ),
                Some(info),
            )
        }
        Err(e) => (
            check(
                "dockerd",
                Status::Fail,
                format!(
                    "{e}; start dockerd, or pass --docker-host unix:///PATH (--skip dockerd on hosts without Docker)"
                ),
            ),
            None,
        ),
    }
}

fn check_runtime(opts: &DoctorOptions, info: Option<&Value>) -> Check {
    let name = &opts.runtime_name;
    let file_entry = DaemonJson::load(&opts.daemon_json)
        .ok()
        .and_then(|d| d.runtime(name).ok().flatten().cloned());
    let live = info.and_then(|i| docker_api::runtime_path(i, name));
    match (live, file_entry) {
        (Some(path), _) => {
            if path.starts_with('/') && !is_executable(Path::new(&path)) {
                check(
                    "runtime",
                    Status::Fail,
                    format!(
                        "dockerd has runtime {name:?} at {path}, which is not an executable file; run `dso install`"
                    ),
                )
            } else {
                check(
                    "runtime",
                    Status::Ok,
                    format!("dockerd has runtime {name:?}: {path}"),
                )
            }
        }
        (None, Some(_)) if info.is_some() => check(
            "runtime",
            Status::Fail,
            format!(
                "{} has runtime {name:?} but dockerd has not loaded it; reload dockerd (systemctl reload docker)",
                opts.daemon_json.display()
            ),
        ),
        (None, Some(_)) => check(
            "runtime",
            Status::Warn,
            format!(
                "{} has runtime {name:?}; dockerd could not be asked whether it loaded it",
                opts.daemon_json.display()
            ),
        ),
        (None, None) => check(
            "runtime",
            Status::Fail,
            format!(
                "runtime {name:?} is not registered with dockerd nor in {}; run `dso install`",
                opts.daemon_json.display()
            ),
        ),
    }
}

/// The config and dso-init must not be writable by others (whoever can edit the config can
/// point dso at their own provider; dso-init runs as PID 1 in containers); key files must not be
/// readable by others at all. The same checks ([`crate::trust`]) refuse them at use.
fn check_permissions(config_path: &Path, cfg: Option<&Config>) -> Vec<Check> {
    use crate::trust::{self, Use};
    let mut problems = Vec::new();
    let mut seen = 0;
    let mut look = |path: &Path, what: &str, usage: Use| {
        seen += 1;
        match fs::metadata(path) {
            Ok(m) => {
                if let Err(e) = trust::check(&m, path, what, usage) {
                    problems.push(e.to_string());
                }
            }
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    };
    if config_path.exists() {
        look(config_path, "config", Use::Trusted);
        if let Some(dir) = config_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            look(dir, "config directory", Use::Trusted);
        }
    }
    if let Some(cfg) = cfg {
        let init = crate::runtime::init_location(cfg);
        if init.exists() {
            look(&init, "dso-init", Use::Trusted);
        }
        let mut files = Vec::new();
        for p in cfg.providers.values() {
            files.extend(p.credential_files().iter().map(|f| f.display().to_string()));
        }
        if let Some(w) = &cfg.agent.webhook {
            files.push(w.secret_file.display().to_string());
        }
        files.sort();
        files.dedup();
        for f in files {
            look(Path::new(&f), "key file", Use::Secret);
        }
    }
    if problems.is_empty() {
        vec![check(
            "permissions",
            Status::Ok,
            format!("{seen} config, dso-init and key file(s) and directories: owner and mode fine"),
        )]
    } else {
        problems
            .into_iter()
            .map(|p| check("permissions", Status::Fail, p))
            .collect()
    }
}

/// Whether an agent answers on the control socket.
fn check_agent(cfg: &Config) -> Check {
    // The control socket (default <runtime.state_dir>/dso.sock), asked for a `ping`.
    let socket = crate::control::socket_path(cfg);
    let ping = serde_json::json!({"op": "ping"});
    match crate::control::request(&socket, &ping, Duration::from_secs(3)) {
        Ok(v) if v.get("ok").and_then(Value::as_bool) == Some(true) => check(
            "agent",
            Status::Ok,
            format!("answering on {}", socket.display()),
        ),
        Ok(_) => check(
            "agent",
            Status::Warn,
            format!(
                "{}: something answered that is not a dso agent; check agent.socket",
                socket.display()
            ),
        ),
        Err(e) => check(
            "agent",
            Status::Warn,
            format!(
                "{e}; start it (systemctl enable --now dso-agent): without it secrets rotate only on `dso rotate`"
            ),
        ),
    }
}

/// One real lookup per provider: the version of the first secret that uses it, all at once
/// (through the provider [`Pool`]), each under the deadline. The value, if the backend returns
/// one, is dropped (zeroized) unseen.
fn check_providers(cfg: &Config, timeout: Duration) -> Vec<Check> {
    if cfg.providers.is_empty() {
        return vec![check(
            "providers",
            Status::Warn,
            "no provider configured in dso.yaml",
        )];
    }
    let deadline = Instant::now() + timeout;
    let pool = Pool::default();
    // Per provider: its check already (no secret uses it, or it cannot be built), or what to ask.
    let plan: Vec<Result<_, Check>> = cfg
        .providers
        .iter()
        .map(|(name, pcfg)| {
            let label = format!("provider:{name}");
            let Some((sname, s)) = cfg
                .secrets
                .iter()
                .find(|(_, s)| cfg.provider_of(s) == Some(name.as_str()))
            else {
                return Err(check(label, Status::Skip, "no secret in dso.yaml uses it"));
            };
            let provider = pool
                .get(cfg, name)
                .map_err(|e| check(&label, Status::Fail, format!("{e}; fix dso.yaml")))?;
            let req = FetchRequest {
                path: s.path.clone().unwrap_or_else(|| sname.clone()),
                key: s.key.clone(),
                version: s.version.clone(),
                workload: None,
            };
            Ok((label, sname, pcfg.kind().as_str(), provider, req))
        })
        .collect();
    let jobs: Vec<_> = plan
        .iter()
        .flatten()
        .map(|(.., p, r)| (p.clone(), r.clone()))
        .collect();
    let mut answers: Vec<_> = jobs.iter().map(|_| None).collect();
    let rx = pool::run(jobs.len(), jobs.len(), move |j| {
        jobs[j].0.version(&jobs[j].1)
    });
    while let Ok((j, res, _)) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        answers[j] = Some(res);
    }
    let mut answers = answers.into_iter();
    plan.into_iter()
        .map(|p| {
            let (label, sname, kind, ..) = p?;
            Ok(match answers.next().flatten() {
                Some(Ok(v)) => check(
                    label,
                    Status::Ok,
                    format!(
                        "{kind} reached: secret {sname:?} at version {}",
                        v.as_deref().unwrap_or("-")
                    ),
                ),
                Some(Err(e)) => check(label, Status::Fail, format!("secret {sname:?}: {e}")),
                None => check(
                    label,
                    Status::Fail,
                    format!(
                        "no answer within {}s (secret {sname:?}); check the network path to the provider",
                        timeout.as_secs()
                    ),
                ),
            })
        })
        .map(|c: Result<Check, Check>| c.unwrap_or_else(|c| c))
        .collect()
}

/// The table `dso doctor` prints.
pub fn render_table(checks: &[Check]) -> String {
    let w = checks
        .iter()
        .map(|c| c.check.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut s = format!("{:<w$}  {:<6}  DETAIL\n", "CHECK", "STATUS");
    for c in checks {
        s.push_str(&format!(
            "{:<w$}  {:<6}  {}\n",
            c.check,
            c.status.label(),
            c.detail
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_found_at_any_depth_but_not_ca_bundles() {
        let cfg = Config::from_str_at(
            "providers:\n  l: {type: local, path: /s, key_file: /k}\n  v: {type: vault, address: \"https://v\", ca_file: /ca, auth: {role_id_file: /r, method: approle}}\n",
            Path::new("t.yaml"),
        )
        .unwrap();
        let mut out: Vec<_> = cfg
            .providers
            .values()
            .flat_map(|p| p.credential_files())
            .collect();
        out.sort();
        assert_eq!(out, ["/k", "/r"]);
    }

    #[test]
    fn permissions_flag_readable_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("master.key");
        fs::write(&key, "k").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let cfg_path = dir.path().join("dso.yaml");
        let text = format!(
            "provider: {{ type: local, path: {}/s, key_file: {} }}\n",
            dir.path().display(),
            key.display()
        );
        fs::write(&cfg_path, &text).unwrap();
        fs::set_permissions(&cfg_path, fs::Permissions::from_mode(0o644)).unwrap();
        let cfg = Config::from_str_at(&text, &cfg_path).unwrap();
        let checks = check_permissions(&cfg_path, Some(&cfg));
        assert_eq!(checks.len(), 1, "{checks:?}");
        assert_eq!(checks[0].status, Status::Fail);
        assert!(checks[0].detail.contains("chmod 600"), "{checks:?}");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).unwrap();
        let checks = check_permissions(&cfg_path, Some(&cfg));
        assert_eq!(checks[0].status, Status::Ok, "{checks:?}");
        fs::set_permissions(&cfg_path, fs::Permissions::from_mode(0o666)).unwrap();
        let checks = check_permissions(&cfg_path, Some(&cfg));
        assert!(checks[0].detail.contains("chmod go-w"), "{checks:?}");
    }

    #[test]
    fn doctor_warns_on_a_socket_outside_the_state_dir() {
        let cfg = |agent: &str| {
            Config::from_str_at(
                &format!("provider: {{type: local, path: /s, key_file: /k}}\n{agent}"),
                Path::new("/etc/dso/dso.yaml"),
            )
            .unwrap()
        };
        assert_eq!(check_socket_dir(&cfg("")).status, Status::Ok);
        let c = check_socket_dir(&cfg("agent: { socket: /run/dso.sock }\n"));
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail.contains("is in /run, which dso does not own"),
            "{c:?}"
        );
    }

    #[test]
    fn doctor_warns_on_a_loose_policy() {
        let load = |extra: &str| {
            Config::from_str_at(
                &format!("provider: {{type: local, path: /s, key_file: /k}}\nsecrets:\n  a: {{}}\n{extra}"),
                Path::new("/etc/dso/dso.yaml"),
            )
            .unwrap()
        };
        let strict = check_policy(&load(""));
        assert_eq!(strict.status, Status::Ok, "{strict:?}");
        let c = check_policy(&load("policy: {default: allow}\n"));
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.starts_with("policy.default is allow: any container that names a secret without allow rules gets it (a)"), "{c:?}");
        let c = check_policy(&load("policy: {inline_references: true}\n"));
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail.starts_with("policy.inline_references is true"),
            "{c:?}"
        );
    }

    #[test]
    fn table_has_a_header_and_one_row_per_check() {
        let t = render_table(&[
            check("runc", Status::Ok, "runc version 1.1"),
            check("provider:local", Status::Fail, "boom"),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("CHECK"));
        assert!(lines[2].contains("FAIL") && lines[2].ends_with("boom"));
    }
}

//! Rotation: rerun the injection step for running containers (DESIGN.md, "Rotation reruns step
//! 7"). The registry is the state dir (`<runtime.state_dir>/<id>.json`, names and versions, never
//! values); records of containers that are gone are dropped. One fetch per secret however many
//! containers use it; each file is rewritten with the same in-root resolution and temp + rename
//! as at create, so a reader sees the old value or the new one, never a torn or empty file. Then
//! the secret's strategy: `none`, `signal` (to the container's init) or `restart` (Docker Engine
//! API over its unix socket).

pub mod docker;
pub mod registry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::audit::{Audit, Event};
use crate::config::Config;
use crate::policy::{self, Ask, Workload};
use crate::providers::{self, FetchRequest, Fetched, Provider, ProviderError};
use crate::runtime::inject::{SecretFile, SecretsDir};
use crate::runtime::spec::Spec;
use crate::runtime::{StateRecord, StateSecret};
use crate::secrets::SecretValue;

pub use registry::{Record, load_records, prune};

/// The default Docker Engine socket (restart strategy).
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Which running secrets a rotation touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every container that uses the secret of this name.
    Secret(String),
    /// Every container that uses any of these secrets (the agent's due list).
    Secrets(Vec<String>),
    /// Every secret of this container.
    Container(String),
    /// Everything in use.
    All,
}

/// Whether to re-inject unconditionally (`dso rotate`) or only when the version moved (agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Force,
    IfChanged,
}

/// What to do after the files are rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    None,
    Signal(nix::sys::signal::Signal),
    Restart,
}

impl Strategy {
    /// The strategy of secret `name` in dso.yaml (`secrets.<name>.rotation`); `none` by default.
    pub fn of(cfg: &Config, name: &str) -> Result<Strategy, String> {
        let Some(rot) = cfg.secrets.get(name).and_then(|s| s.rotation.as_ref()) else {
            return Ok(Strategy::None);
        };
        match rot.strategy.as_deref().unwrap_or("none") {
            "none" => Ok(Strategy::None),
            "restart" => Ok(Strategy::Restart),
            "signal" => {
                parse_signal(rot.signal.as_deref().unwrap_or("SIGHUP")).map(Strategy::Signal)
            }
            other => Err(format!("unknown rotation strategy {other:?}")),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Strategy::None => "none",
            Strategy::Signal(_) => "signal",
            Strategy::Restart => "restart",
        }
    }
}

/// `SIGHUP`, `HUP`, `sighup` → the signal.
pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal, String> {
    let up = s.trim().to_ascii_uppercase();
    let full = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    full.parse()
        .map_err(|_| format!("{s:?} is not a signal name"))
}

/// Settings of a rotation run that do not come from dso.yaml.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Docker Engine socket for `restart`.
    pub docker_socket: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            docker_socket: docker_socket_from_env(),
        }
    }
}

/// `DOCKER_HOST=unix:///path` if set, else the default socket.
pub fn docker_socket_from_env() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => PathBuf::from(&h["unix://".len()..]),
        _ => PathBuf::from(DEFAULT_DOCKER_SOCKET),
    }
}

/// The result for one (secret, container) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub secret: String,
    pub container: String,
    pub version: Option<String>,
    pub status: OutcomeStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeStatus {
    /// Re-injected (and the strategy applied).
    Rotated,
    /// The version did not change (agent mode).
    Unchanged,
    /// Env-only secret with a strategy other than restart: nothing could change.
    EnvNeedsRestart,
    Failed(String),
}

/// The key one fetch serves: same provider, path and JSON key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FetchKey {
    provider: String,
    path: String,
    key: Option<String>,
}

/// Rotates secrets of running containers. Keeps built providers (sessions, the derived local
/// key) between runs, so an agent pays for them once.
pub struct Rotator {
    cfg: Config,
    audit: Audit,
    opts: Options,
    providers: Mutex<BTreeMap<String, Arc<dyn Provider>>>,
    /// One rotation at a time (the poll loop, the webhook and the control socket share this).
    serial: Mutex<()>,
    /// Per provider: the outcome of its last call (names and error text only).
    health: Mutex<BTreeMap<String, ProviderHealth>>,
    /// `(container, secret)` → when its value was last re-injected.
    last_rotation: Mutex<BTreeMap<(String, String), String>>,
    pub counters: Counters,
}

/// What the last call to a provider said.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProviderHealth {
    pub ok: bool,
    pub at: String,
    pub error: Option<String>,
}

/// Totals since the agent started (Prometheus counters).
#[derive(Debug, Default)]
pub struct Counters {
    pub rotations_completed: std::sync::atomic::AtomicU64,
    pub rotations_failed: std::sync::atomic::AtomicU64,
    pub fetches: std::sync::atomic::AtomicU64,
    pub fetch_errors: std::sync::atomic::AtomicU64,
    pub auth_failures: std::sync::atomic::AtomicU64,
    pub agent_fetches_served: std::sync::atomic::AtomicU64,
}

fn bump(c: &std::sync::atomic::AtomicU64) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

impl Rotator {
    pub fn new(cfg: Config, opts: Options) -> Rotator {
        let audit = Audit::new(&cfg.audit);
        Rotator {
            cfg,
            audit,
            opts,
            providers: Mutex::new(BTreeMap::new()),
            serial: Mutex::new(()),
            health: Mutex::new(BTreeMap::new()),
            last_rotation: Mutex::new(BTreeMap::new()),
            counters: Counters::default(),
        }
    }

    /// Fetches through the cached provider `provider` (the control socket's `fetch`: dso-runc's
    /// fast path), recording the provider's health.
    pub fn fetch(&self, provider: &str, req: &FetchRequest) -> Result<Fetched, ProviderError> {
        let res = self
            .provider(provider)
            .and_then(|p| providers::fetch_for(&*p, req));
        self.note(provider, res.as_ref().err());
        bump(&self.counters.agent_fetches_served);
        res
    }

    /// Records the outcome of a provider call for `status` and the counters.
    fn note(&self, provider: &str, err: Option<&ProviderError>) {
        bump(&self.counters.fetches);
        if let Some(e) = err {
            bump(&self.counters.fetch_errors);
            if e.is_auth_failure() {
                bump(&self.counters.auth_failures);
            }
        }
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                provider.to_string(),
                ProviderHealth {
                    ok: err.is_none(),
                    at: crate::audit::now_rfc3339(),
                    error: err.map(|e| e.to_string()),
                },
            );
    }

    /// Provider name → what its last call said (providers not called yet are absent).
    pub fn provider_health(&self) -> BTreeMap<String, ProviderHealth> {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// When `secret` was last re-injected into `container` by this process.
    pub fn last_rotation(&self, container: &str, secret: &str) -> Option<String> {
        self.last_rotation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(container.to_string(), secret.to_string()))
            .cloned()
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    fn provider(&self, name: &str) -> Result<Arc<dyn Provider>, ProviderError> {
        let mut map = self
            .providers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = map.get(name) {
            return Ok(p.clone());
        }
        let pc = self
            .cfg
            .providers
            .get(name)
            .ok_or_else(|| ProviderError::Config {
                kind: "config",
                provider: name.to_string(),
                detail: format!("provider is not defined in {}", self.cfg.source.display()),
            })?;
        let p: Arc<dyn Provider> = Arc::from(providers::build(name, pc, &self.cfg)?);
        map.insert(name.to_string(), p.clone());
        Ok(p)
    }

    /// How often secret `name` is checked: its `rotation.interval`, else `watch.interval`.
    pub fn interval_of(&self, name: &str) -> std::time::Duration {
        self.cfg
            .secrets
            .get(name)
            .and_then(|s| s.rotation.as_ref())
            .and_then(|r| r.interval)
            .unwrap_or(self.cfg.watch.interval)
    }

    /// The state dir of the config.
    pub fn state_dir(&self) -> &Path {
        &self.cfg.runtime.state_dir
    }

    /// Removes the temp files a writer killed mid-rotation left in the secrets dirs of the
    /// managed containers (the agent, when it starts: its predecessor may have been killed).
    /// Returns how many were removed; a container that cannot be opened is skipped (its next
    /// rotation reports why).
    pub fn sweep_stale_temps(&self) -> usize {
        prune(self.state_dir())
            .iter()
            .filter_map(|r| SecretsDir::open(r.rec.pid, &r.rec.secrets_dir).ok())
            .filter_map(|dir| dir.sweep_stale_temps(None).ok())
            .sum()
    }

    /// Loads the registry, drops gone containers, and rotates what `sel` selects.
    pub fn rotate(&self, sel: &Selector, mode: Mode) -> Vec<Outcome> {
        let _serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
        let records = prune(self.state_dir());
        self.rotate_records(records, sel, mode)
    }

    /// Rotates what `sel` selects among `records` (already pruned).
    pub fn rotate_records(
        &self,
        mut records: Vec<Record>,
        sel: &Selector,
        mode: Mode,
    ) -> Vec<Outcome> {
        // Group (record index, secret index) by what one fetch serves.
        let mut groups: BTreeMap<FetchKey, Vec<(usize, usize)>> = BTreeMap::new();
        let mut out = Vec::new();
        for (ri, r) in records.iter().enumerate() {
            if let Selector::Container(id) = sel
                && &r.rec.id != id
            {
                continue;
            }
            for (si, s) in r.rec.secrets.iter().enumerate() {
                if let Selector::Secret(name) = sel
                    && &s.name != name
                {
                    continue;
                }
                if let Selector::Secrets(names) = sel
                    && !names.contains(&s.name)
                {
                    continue;
                }
                // The policy of the dso.yaml in force now: a grant removed since the create
                // stops new values reaching the container.
                if let Err(refusal) = self.authorize(&r.rec, s) {
                    out.push(Outcome {
                        secret: s.name.clone(),
                        container: r.rec.id.clone(),
                        version: s.version.clone(),
                        status: OutcomeStatus::Failed(refusal),
                    });
                    continue;
                }
                groups
                    .entry(FetchKey {
                        provider: s.provider.clone(),
                        path: s.path.clone(),
                        key: s.key.clone(),
                    })
                    .or_default()
                    .push((ri, si));
            }
        }
        for (fk, users) in groups {
            out.extend(self.rotate_group(&mut records, &fk, &users, mode));
        }
        out
    }

    /// Is `s` still granted to the container of `rec`, under this agent's dso.yaml? A record
    /// made under another dso.yaml (`--dso-config`) is not this agent's to rotate: the same
    /// secret name may mean another provider there. Refusals are audited.
    fn authorize(&self, rec: &StateRecord, s: &StateSecret) -> Result<(), String> {
        if !same_file(&rec.config, &self.cfg.source) {
            let msg = format!(
                "created under {}, not this agent's {}; rotate it with an agent on that dso.yaml",
                rec.config.display(),
                self.cfg.source.display()
            );
            self.audit.record(
                &Event::new("rotation_failed", "skipped")
                    .secret(&s.name)
                    .provider(&s.provider)
                    .container(&rec.id)
                    .error(&msg),
            );
            return Err(msg);
        }
        let unknown;
        let workload = match &rec.workload {
            Some(w) => w,
            None => {
                unknown = Workload::unknown(&rec.id, "created before access policy; recreate it");
                &unknown
            }
        };
        // Inline references are recorded as `provider/path`; secret names have no `/`.
        let ask = if s.name.contains('/') {
            Ask::Inline {
                provider: &s.provider,
                path: &s.path,
            }
        } else {
            Ask::Named {
                name: &s.name,
                key: s.key.as_deref(),
            }
        };
        policy::check(&self.cfg, ask, workload)
            .map(|_| ())
            .map_err(|refusal| {
                let msg = refusal.to_string();
                bump(&self.counters.rotations_failed);
                self.audit.record(
                    &Event::new("access_denied", "failure")
                        .secret(&s.name)
                        .provider(&s.provider)
                        .container(&rec.id)
                        .workload(workload)
                        .error(&msg),
                );
                msg
            })
    }

    fn rotate_group(
        &self,
        records: &mut [Record],
        fk: &FetchKey,
        users: &[(usize, usize)],
        mode: Mode,
    ) -> Vec<Outcome> {
        let started = Instant::now();
        let (ri0, si0) = users[0];
        let name = records[ri0].rec.secrets[si0].name.clone();
        // One fetch serves every container using this secret: the User-Agent names them.
        let mut labels: Vec<String> = users
            .iter()
            .map(|&(ri, _)| match &records[ri].rec.workload {
                Some(w) => w.label(),
                None => Workload::unknown(&records[ri].rec.id, "").label(),
            })
            .collect();
        labels.dedup();
        let req = FetchRequest {
            path: fk.path.clone(),
            key: fk.key.clone(),
            version: None,
            workload: Some(labels.join(",")),
        };
        let fail_all = |records: &[Record], msg: &str| -> Vec<Outcome> {
            bump(&self.counters.rotations_failed);
            self.audit.record(
                &Event::new("rotation_failed", "failure")
                    .secret(&name)
                    .provider(&fk.provider)
                    .duration(started.elapsed())
                    .error(msg),
            );
            users
                .iter()
                .map(|&(ri, si)| Outcome {
                    secret: records[ri].rec.secrets[si].name.clone(),
                    container: records[ri].rec.id.clone(),
                    version: records[ri].rec.secrets[si].version.clone(),
                    status: OutcomeStatus::Failed(msg.to_string()),
                })
                .collect()
        };
        let provider = match self.provider(&fk.provider) {
            Ok(p) => p,
            Err(e) => return fail_all(records, &e.to_string()),
        };
        let audit_provider_error = |e: &ProviderError| {
            if e.is_auth_failure() {
                self.audit.record(
                    &Event::new("auth_failed", "failure")
                        .secret(&name)
                        .provider(&fk.provider)
                        .error(&e.to_string()),
                );
            }
        };
        if mode == Mode::IfChanged {
            // The cheapest check first; fetch only when some container is behind.
            let checked = providers::version_for(&*provider, &req);
            self.note(&fk.provider, checked.as_ref().err());
            match checked {
                Ok(Some(v)) => {
                    let behind = users.iter().any(|&(ri, si)| {
                        records[ri].rec.secrets[si].version.as_deref() != Some(&v)
                    });
                    if !behind {
                        return users
                            .iter()
                            .map(|&(ri, si)| Outcome {
                                secret: records[ri].rec.secrets[si].name.clone(),
                                container: records[ri].rec.id.clone(),
                                version: Some(v.clone()),
                                status: OutcomeStatus::Unchanged,
                            })
                            .collect();
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    audit_provider_error(&e);
                    return fail_all(records, &e.to_string());
                }
            }
        }
        // audit.required: a value that cannot be audited is not applied.
        if let Err(e) = self.audit.must_record(
            &Event::new("rotation_started", "started")
                .secret(&name)
                .provider(&fk.provider),
        ) {
            return fail_all(records, &format!("{e} (audit.required: not rotated)"));
        }
        let fetched = providers::fetch_for(&*provider, &req);
        self.note(&fk.provider, fetched.as_ref().err());
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => {
                audit_provider_error(&e);
                return fail_all(records, &e.to_string());
            }
        };
        if let Err(e) = self.audit.must_record(
            &Event::new("secret_fetched", "success")
                .secret(&name)
                .provider(&fk.provider)
                .version(fetched.version.as_deref())
                .duration(started.elapsed()),
        ) {
            return fail_all(records, &format!("{e} (audit.required: not rotated)"));
        }
        let limit = self.cfg.runtime.max_secret_size;
        if fetched.value.len() as u64 > limit {
            // Refused before any container is touched: every file keeps its current value.
            let msg = format!(
                "secret {name:?} is {} bytes, more than runtime.max_secret_size ({limit} bytes) in {}",
                fetched.value.len(),
                self.cfg.source.display()
            );
            return fail_all(records, &msg);
        }
        let mut out = Vec::new();
        for &(ri, si) in users {
            let rec = &mut records[ri];
            let t0 = Instant::now();
            let res = self.apply(rec, si, &fetched.value, fetched.version.as_deref(), mode);
            let secret = rec.rec.secrets[si].name.clone();
            let container = rec.rec.id.clone();
            let status = match res {
                Ok(status) => {
                    if status == OutcomeStatus::Rotated {
                        bump(&self.counters.rotations_completed);
                        self.last_rotation
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(
                                (container.clone(), secret.clone()),
                                crate::audit::now_rfc3339(),
                            );
                        self.audit.record(
                            &Event::new("rotation_completed", "success")
                                .secret(&secret)
                                .provider(&fk.provider)
                                .container(&container)
                                .version(fetched.version.as_deref())
                                .duration(t0.elapsed()),
                        );
                    } else if status == OutcomeStatus::EnvNeedsRestart {
                        let msg = "env-injected secret: the new value reaches the container only with rotation strategy restart";
                        tracing::warn!(secret = %secret, container = %container, "{msg}");
                        self.audit.record(
                            &Event::new("rotation_completed", "skipped")
                                .secret(&secret)
                                .provider(&fk.provider)
                                .container(&container)
                                .version(fetched.version.as_deref())
                                .duration(t0.elapsed())
                                .error(msg),
                        );
                    }
                    status
                }
                Err(msg) => {
                    bump(&self.counters.rotations_failed);
                    self.audit.record(
                        &Event::new("rotation_failed", "failure")
                            .secret(&secret)
                            .provider(&fk.provider)
                            .container(&container)
                            .duration(t0.elapsed())
                            .error(&msg),
                    );
                    OutcomeStatus::Failed(msg)
                }
            };
            out.push(Outcome {
                secret,
                container,
                version: fetched.version.clone(),
                status,
            });
        }
        out
    }

    /// Writes the value into one container, records the version, applies the strategy.
    fn apply(
        &self,
        rec: &mut Record,
        si: usize,
        value: &SecretValue,
        version: Option<&str>,
        mode: Mode,
    ) -> Result<OutcomeStatus, String> {
        let s = rec.rec.secrets[si].clone();
        if mode == Mode::IfChanged && version.is_some() && s.version.as_deref() == version {
            return Ok(OutcomeStatus::Unchanged);
        }
        let strategy = Strategy::of(&self.cfg, &s.name)?;
        if let Some(file) = &s.file {
            let (uid, gid) = s
                .host_ids
                .unwrap_or_else(|| host_ids(&rec.rec.bundle, s.uid, s.gid));
            let dir =
                SecretsDir::open(rec.rec.pid, &rec.rec.secrets_dir).map_err(|e| e.to_string())?;
            dir.sweep_stale_temps(Some(file))
                .map_err(|e| e.to_string())?;
            dir.write(&SecretFile {
                name: file,
                value,
                uid,
                gid,
                mode: s.mode,
            })
            .map_err(|e| e.to_string())?;
        }
        rec.set_version(si, version).map_err(|e| e.to_string())?;
        match strategy {
            Strategy::None => {}
            Strategy::Signal(sig) => {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(rec.rec.pid), sig)
                    .map_err(|e| format!("sending {sig} to pid {}: {e}", rec.rec.pid))?;
            }
            Strategy::Restart => {
                docker::restart(&self.opts.docker_socket, &rec.rec.id)?;
                return Ok(OutcomeStatus::Rotated);
            }
        }
        if s.file.is_none() {
            return Ok(OutcomeStatus::EnvNeedsRestart);
        }
        Ok(OutcomeStatus::Rotated)
    }
}

/// The same file, however the two paths spell it (relative, through symlinks).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}

/// Host ids of a container uid/gid, through the bundle's user-namespace mappings when it has any.
fn host_ids(bundle: &Path, uid: u32, gid: u32) -> (u32, u32) {
    Spec::load(bundle)
        .ok()
        .and_then(|spec| spec.host_ids(uid, gid))
        .unwrap_or((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse() {
        use nix::sys::signal::Signal;
        assert_eq!(parse_signal("SIGHUP"), Ok(Signal::SIGHUP));
        assert_eq!(parse_signal("hup"), Ok(Signal::SIGHUP));
        assert_eq!(parse_signal("USR1"), Ok(Signal::SIGUSR1));
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn records_of_another_dso_yaml_are_not_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        let text = format!(
            "providers:\n  l: {{ type: local, path: {}, key_file: /k }}\nsecrets:\n  db: {{}}\npolicy: {{ default: allow }}\naudit: {{ path: {} }}\n",
            dir.path().join("store").display(),
            dir.path().join("audit.log").display()
        );
        std::fs::write(&a, &text).unwrap();
        std::fs::write(&b, &text).unwrap();
        let cfg = Config::load(&b).unwrap();
        let rec = StateRecord {
            id: "c1".into(),
            bundle: "/nonexistent".into(),
            runc_root: None,
            delegate: "/nonexistent/runc".into(),
            pid: 1,
            config: a.clone(),
            secrets_dir: "/run/secrets".into(),
            secrets: vec![StateSecret {
                name: "db".into(),
                file: Some("db".into()),
                env: vec![],
                provider: "l".into(),
                path: "db".into(),
                key: None,
                version: None,
                uid: 0,
                gid: 0,
                mode: 0o400,
                host_ids: None,
            }],
            created: String::new(),
            workload: None,
        };
        let record = registry::Record {
            path: dir.path().join("c1.json"),
            raw: serde_json::to_value(&rec).unwrap(),
            rec,
        };
        let out = Rotator::new(cfg, Options::default()).rotate_records(
            vec![record],
            &Selector::All,
            Mode::Force,
        );
        assert_eq!(out.len(), 1);
        match &out[0].status {
            OutcomeStatus::Failed(m) => assert!(m.contains("not this agent's"), "{m}"),
            other => panic!("rotated a record of another dso.yaml: {other:?}"),
        }
        let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        assert!(
            audit.contains(r#""event":"rotation_failed","#) && audit.contains("not this agent's"),
            "{audit}"
        );
    }

    #[test]
    fn strategy_from_config() {
        let cfg = Config::from_str_at(
            "providers:\n  l: { type: local, path: /s, key_file: /k }\nsecrets:\n  a: { rotation: { strategy: signal, signal: USR1 } }\n  b: { rotation: { strategy: restart } }\n  c: {}\n",
            Path::new("t.yaml"),
        )
        .unwrap();
        assert_eq!(
            Strategy::of(&cfg, "a"),
            Ok(Strategy::Signal(nix::sys::signal::Signal::SIGUSR1))
        );
        assert_eq!(Strategy::of(&cfg, "b"), Ok(Strategy::Restart));
        assert_eq!(Strategy::of(&cfg, "c"), Ok(Strategy::None));
        assert_eq!(Strategy::of(&cfg, "inline/x"), Ok(Strategy::None));
    }
}

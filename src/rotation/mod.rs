//! Rotation: rerun the injection step for running containers (docs/agent.md, "What it does";
//! README.md, "Rotation: the agent"). The registry is the state dir (`<runtime.state_dir>/<id>.json`, names and versions, never
//! values); records of containers that are gone are dropped. One fetch per secret however many
//! containers use it; each file is rewritten with the same in-root resolution and temp + rename
//! as at create, so a reader sees the old value or the new one, never a torn or empty file. Then
//! the secret's strategy: `none`, `signal` (to the container's init) or `restart` (Docker Engine
//! API over its unix socket).

mod error;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use crate::audit::{Audit, Event};
use crate::config::Config;
use crate::engine::docker_api;
use crate::policy::{self, Ask, Workload};
use crate::providers::pool::Pool;
use crate::providers::{self, FetchRequest, Provider, ProviderError};
use crate::runtime::inject::{SecretFile, SecretsDir};
use crate::runtime::spec::Spec;
use crate::secrets::SecretValue;
use crate::state::{LiveRegistry, Record, StateRecord, StateSecret, leases, prune, registry};
pub use error::{FailureClass, RotationError, StrategyError};

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
    pub fn of(cfg: &Config, name: &str) -> Result<Strategy, StrategyError> {
        let Some(rot) = cfg.secrets.get(name).and_then(|s| s.rotation.as_ref()) else {
            return Ok(Strategy::None);
        };
        match rot.strategy.as_deref().unwrap_or("none") {
            "none" => Ok(Strategy::None),
            "restart" => Ok(Strategy::Restart),
            "signal" => {
                parse_signal(rot.signal.as_deref().unwrap_or("SIGHUP")).map(Strategy::Signal)
            }
            other => Err(StrategyError::Unknown(other.to_string())),
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
pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal, StrategyError> {
    let up = s.trim().to_ascii_uppercase();
    let full = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    full.parse()
        .map_err(|_| StrategyError::Signal(s.to_string()))
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
        _ => PathBuf::from(docker_api::DEFAULT_SOCKET),
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
    /// Shared by every container of a fetch that failed.
    Failed(Arc<RotationError>),
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
    /// The config in force; replaced as a whole by [`Rotator::reload`].
    cfg: RwLock<Arc<Config>>,
    audit: Audit,
    opts: Options,
    /// The built providers, their health and the fetch counters.
    pub pool: Arc<Pool>,
    /// One rotation at a time (the poll loop, the webhook and the control socket share this).
    serial: Mutex<()>,
    /// The agent's in-memory registry (see [`Rotator::keep_registry`]); `None`: every run
    /// scans the state dir ([`prune`]), as a one-shot `dso rotate` does.
    live: Mutex<Option<LiveRegistry>>,
    /// `(container, secret)` → when its value was last re-injected.
    last_rotation: Mutex<BTreeMap<(String, String), String>>,
    /// When the config in force was loaded, and the last reload that was refused.
    config_events: Mutex<ConfigEvents>,
    pub counters: Counters,
}

/// The history of the config in force (for `dso status`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigEvents {
    pub loaded_at: String,
    /// The newest refused reload, cleared by the next successful one.
    pub rejected: Option<RejectedConfig>,
}

/// A dso.yaml the agent refused to switch to (the previous config stays in force).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RejectedConfig {
    pub at: String,
    /// SHA-256 of the refused text (empty when it could not be read).
    pub digest: String,
    pub error: String,
}

/// Totals since the agent started (Prometheus counters).
#[derive(Debug, Default)]
pub struct Counters {
    pub rotations_completed: std::sync::atomic::AtomicU64,
    pub rotations_failed: std::sync::atomic::AtomicU64,
    /// Of `rotations_failed`, those of [`FailureClass::Config`].
    pub rotations_failed_config: std::sync::atomic::AtomicU64,
    /// Secrets fetched for those creates (distinct fetches).
    pub agent_fetches_served: std::sync::atomic::AtomicU64,
    /// Creates dso-runc handed to the agent that it finished (see `runtime::handoff`).
    pub agent_creates_served: std::sync::atomic::AtomicU64,
}

fn bump(c: &std::sync::atomic::AtomicU64) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

impl Counters {
    fn failed(&self, class: FailureClass) {
        bump(&self.rotations_failed);
        if class == FailureClass::Config {
            bump(&self.rotations_failed_config);
        }
    }
}

impl Rotator {
    pub fn new(cfg: Config, opts: Options) -> Rotator {
        let audit = Audit::new(&cfg.audit);
        Rotator {
            cfg: RwLock::new(Arc::new(cfg)),
            audit,
            opts,
            pool: Arc::default(),
            serial: Mutex::new(()),
            live: Mutex::new(None),
            last_rotation: Mutex::new(BTreeMap::new()),
            config_events: Mutex::new(ConfigEvents {
                loaded_at: crate::audit::now_rfc3339(),
                rejected: None,
            }),
            counters: Counters::default(),
        }
    }

    /// When `secret` was last re-injected into `container` by this process.
    pub fn last_rotation(&self, container: &str, secret: &str) -> Option<String> {
        self.last_rotation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(container.to_string(), secret.to_string()))
            .cloned()
    }

    /// The config in force now (a reload does not change the one a caller holds).
    pub fn config(&self) -> Arc<Config> {
        self.cfg
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `cfg` in force, between two rotations (never during one). A cached provider is
    /// kept only when its settings and the fetch timeout are unchanged (its session and derived
    /// key stay valid); a removed or changed one is dropped, so the next use sees the new file.
    /// Returns the names of the providers that are gone.
    pub fn reload(&self, cfg: Config) -> Vec<String> {
        let _serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.config();
        self.pool.reload(&old, &cfg);
        let removed = old
            .providers
            .keys()
            .filter(|n| !cfg.providers.contains_key(*n))
            .cloned()
            .collect();
        *self.cfg.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(cfg);
        *self
            .config_events
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = ConfigEvents {
            loaded_at: crate::audit::now_rfc3339(),
            rejected: None,
        };
        removed
    }

    /// Records a refused reload (the config in force does not change).
    pub fn reject_config(&self, digest: &str, error: &str) {
        self.config_events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rejected = Some(RejectedConfig {
            at: crate::audit::now_rfc3339(),
            digest: digest.to_string(),
            error: error.to_string(),
        });
    }

    /// When the config in force was loaded, and the last refused reload.
    pub fn config_events(&self) -> ConfigEvents {
        self.config_events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    fn provider(&self, name: &str) -> Result<Arc<dyn Provider>, ProviderError> {
        self.pool.get(&self.config(), name)
    }

    /// How often secret `name` is checked: its `rotation.interval`, else `watch.interval`.
    pub fn interval_of(&self, name: &str) -> std::time::Duration {
        let cfg = self.config();
        cfg.secrets
            .get(name)
            .and_then(|s| s.rotation.as_ref())
            .and_then(|r| r.interval)
            .unwrap_or(cfg.watch.interval)
    }

    /// The state dir of the config.
    pub fn state_dir(&self) -> PathBuf {
        self.config().runtime.state_dir.clone()
    }

    /// Keeps the registry in memory from now on, up to date through inotify and pidfds
    /// ([`LiveRegistry`]) instead of a scan of the state dir and a liveness check per container
    /// on every run: what a long-running agent with many containers needs. The state dir is
    /// scanned here, by the caller's thread: the records are kept for the agent's life, and
    /// glibc places them in the arena of the thread that reads them. Read by the start-up
    /// sweep's thread instead, among that thread's short-lived allocations, they pinned 7 MiB
    /// of freed memory at 1000 containers in 2 agent starts of 8 (issue 18, RSS ≤ 20 MiB).
    pub fn keep_registry(&self) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if live.is_none() {
            let mut reg = LiveRegistry::new(&self.state_dir());
            reg.refresh();
            *live = Some(reg);
        }
    }

    /// `kept(registry)` on the registry brought up to date when it is kept in memory, else
    /// `scanned(records)` on a scan of the state dir; either way gone containers are dropped
    /// (as [`prune`] does).
    fn with_registry<T>(
        &self,
        kept: impl FnOnce(&LiveRegistry) -> T,
        scanned: impl FnOnce(Vec<Record>) -> T,
    ) -> T {
        let state_dir = self.state_dir();
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(reg) = live.as_mut() else {
            drop(live);
            return scanned(prune(&state_dir));
        };
        if reg.state_dir() != state_dir {
            // runtime.state_dir changed with a reload: start over there.
            *reg = LiveRegistry::new(&state_dir);
        }
        reg.refresh();
        kept(reg)
    }

    /// The live records `want` selects, each with its JSON tree (what a rewrite of the record
    /// needs).
    pub fn live_records(&self, want: impl Fn(&StateRecord) -> bool) -> Vec<Record> {
        self.with_registry(
            |reg| reg.take(&want),
            |all| all.into_iter().filter(|r| want(&r.rec)).collect(),
        )
    }

    /// The names of the secrets the live containers use (gone containers dropped).
    pub fn secrets_in_use(&self) -> std::collections::BTreeSet<String> {
        self.with_registry(
            |reg| {
                reg.records()
                    .flat_map(|r| r.secrets.iter().map(|s| s.name.clone()))
                    .collect()
            },
            |all| {
                all.into_iter()
                    .flat_map(|r| r.rec.secrets.into_iter().map(|s| s.name))
                    .collect()
            },
        )
    }

    /// Removes the temp files a writer killed mid-rotation left in the secrets dirs of the
    /// managed containers (the agent, when it starts: its predecessor may have been killed).
    /// Returns how many were removed; a container that cannot be opened is skipped (its next
    /// rotation reports why). One container at a time under the rotation lock: a temp file a
    /// rotation is writing is never swept, and a rotation waits for one container's sweep at
    /// most, not for all of them (issue 18: the agent sweeps in the background at start).
    /// Only the typed records are copied out (no JSON trees: the sweep never rewrites one), and
    /// what it allocated is given back when it is done.
    pub fn sweep_stale_temps(&self) -> usize {
        let records: Vec<StateRecord> = self.with_registry(
            |reg| reg.records().cloned().collect(),
            |all| all.into_iter().map(|r| r.rec).collect(),
        );
        let swept = records
            .iter()
            .filter_map(|rec| {
                let _serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
                open_for_write(rec).ok()?.sweep_stale_temps(None).ok()
            })
            .sum();
        drop(records);
        registry::trim_heap();
        swept
    }

    /// Loads the registry, drops gone containers, and rotates what `sel` selects.
    pub fn rotate(&self, sel: &Selector, mode: Mode) -> Vec<Outcome> {
        let _serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the records `sel` can touch are copied out of the registry.
        let records = self.live_records(|r| selects(sel, r));
        let out = self.rotate_records(records, sel, mode);
        // A rotation of many containers allocates and frees a few MiB: given back at once.
        registry::trim_heap();
        out
    }

    /// Rotates what `sel` selects among `records` (already pruned).
    pub fn rotate_records(
        &self,
        mut records: Vec<Record>,
        sel: &Selector,
        mode: Mode,
    ) -> Vec<Outcome> {
        // Group (record index, secret index) by what one fetch serves. Dynamic secrets are
        // never grouped: each container has its own, re-issued only when forced (or by the
        // lease work of `lease_tick`).
        let mut groups: BTreeMap<FetchKey, Vec<(usize, usize)>> = BTreeMap::new();
        let mut dynamic: Vec<(usize, usize)> = Vec::new();
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
                        status: OutcomeStatus::Failed(Arc::new(refusal)),
                    });
                    continue;
                }
                if s.lease.is_some() {
                    if mode == Mode::Force {
                        dynamic.push((ri, si));
                    }
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
        for (ri, si) in dynamic {
            let old = records[ri].rec.secrets[si].lease.clone();
            out.push(self.reissue(&mut records[ri], si, old.as_ref()));
        }
        out
    }

    /// The agent's lease work, run every few seconds: revoke the leases of containers that are
    /// gone (and retry revocations that failed), renew leases at two thirds of their TTL, and
    /// re-issue (and rotate in, with the secret's strategy) what cannot be renewed: a
    /// certificate, a lease at its max TTL, a lease that was revoked or expired.
    pub fn lease_tick(&self) -> Vec<Outcome> {
        let _serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
        // Records of gone containers are dropped here, their leases written down as owed.
        let state_dir = self.state_dir();
        let mut records = self.live_records(|r| r.secrets.iter().any(|s| s.lease.is_some()));
        let provider = |name: &str| self.provider(name).ok();
        leases::settle(&state_dir, &self.audit, &provider);
        let now = leases::unix_now();
        let mut out = Vec::new();
        for rec in records.iter_mut() {
            for si in 0..rec.rec.secrets.len() {
                let Some(lease) = rec.rec.secrets[si].lease.clone() else {
                    continue;
                };
                if lease.is_due(now) {
                    out.extend(self.renew_or_reissue(rec, si, &lease, now));
                }
            }
        }
        out
    }

    /// Renews a due lease; re-issues when renewal is impossible, refused or capped.
    fn renew_or_reissue(
        &self,
        rec: &mut Record,
        si: usize,
        lease: &leases::LeaseState,
        now: u64,
    ) -> Option<Outcome> {
        let s = rec.rec.secrets[si].clone();
        if let (true, Some(id)) = (lease.renewable, lease.id.as_deref()) {
            let renewed = self
                .provider(&s.provider)
                .and_then(|p| p.renew_lease(id, leases::increment(lease)));
            match renewed {
                // Less than a third of the TTL granted: the max TTL is near; re-issue now.
                Ok(g) if g.ttl.as_secs().saturating_mul(3) >= lease.ttl => {
                    let new = leases::LeaseState {
                        since: now,
                        ttl: g.ttl.as_secs(),
                        renewable: g.renewable,
                        ..lease.clone()
                    };
                    let hash = new.hash();
                    let expires = leases::rfc3339(new.expires());
                    match rec.set_lease(si, &new) {
                        Ok(()) => self.audit.record(
                            &Event::new("lease_renewed", "success")
                                .secret(&s.name)
                                .provider(&s.provider)
                                .container(&rec.rec.id)
                                .lease(&hash, &expires),
                        ),
                        Err(e) => self.audit.record(
                            &Event::new("lease_failed", "failure")
                                .secret(&s.name)
                                .provider(&s.provider)
                                .container(&rec.rec.id)
                                .lease(&hash, &expires)
                                .error(&format!("recording the renewal: {e}")),
                        ),
                    }
                    return None;
                }
                Ok(_) => {}
                Err(e) => {
                    // Revoked or expired leases cannot be renewed: a new credential replaces
                    // it. Anything else (server down) is retried while the lease lives.
                    tracing::info!(secret = %s.name, container = %rec.rec.id, error = %e, "lease renewal failed");
                }
            }
        }
        Some(self.reissue(rec, si, Some(lease)))
    }

    /// Issues a new value for secret `si` of one container, writes it in, applies the
    /// strategy, records the new lease and revokes the old one.
    fn reissue(&self, rec: &mut Record, si: usize, old: Option<&leases::LeaseState>) -> Outcome {
        let started = Instant::now();
        let s = rec.rec.secrets[si].clone();
        let container = rec.rec.id.clone();
        let fail = |e: RotationError| -> Outcome {
            self.counters.failed(e.class());
            let (hash, expires) = old
                .map(|l| (l.hash(), leases::rfc3339(l.expires())))
                .unwrap_or_default();
            let msg = e.to_string();
            let mut ev = Event::new("lease_failed", "failure")
                .secret(&s.name)
                .provider(&s.provider)
                .container(&container)
                .error(&msg)
                .class(e.class().label());
            if old.is_some() {
                ev = ev.lease(&hash, &expires);
            }
            self.audit.record(&ev);
            Outcome {
                secret: s.name.clone(),
                container: container.clone(),
                version: None,
                status: OutcomeStatus::Failed(Arc::new(e)),
            }
        };
        // Every new value is checked against the policy in force now (a refusal is audited).
        if let Err(refusal) = self.authorize(&rec.rec, &s) {
            self.counters.failed(refusal.class());
            return Outcome {
                secret: s.name.clone(),
                container,
                version: None,
                status: OutcomeStatus::Failed(Arc::new(refusal)),
            };
        }
        let cfg = self.config();
        let Some(dreq) = cfg
            .secrets
            .get(&s.name)
            .and_then(crate::providers::DynamicRequest::for_secret)
        else {
            return fail(RotationError::NotDynamic(
                s.name.clone(),
                cfg.source.clone(),
            ));
        };
        let strategy = Strategy::of(&cfg, &s.name);
        // Only a restart changes an environment variable: a new value could not reach the
        // container, and revoking the old one would cut it off.
        if s.file.is_none() && strategy != Ok(Strategy::Restart) {
            return fail(RotationError::EnvLease(s.name.clone()));
        }
        // A restart creates the container again, and that create issues its own value (and
        // owes the old record's leases): issuing one here would only leak it.
        if strategy == Ok(Strategy::Restart) {
            if let Err(e) = docker_api::restart(&self.opts.docker_socket, &container) {
                return fail(e.into());
            }
            bump(&self.counters.rotations_completed);
            self.audit.record(
                &Event::new("rotation_completed", "success")
                    .secret(&s.name)
                    .provider(&s.provider)
                    .container(&container)
                    .duration(started.elapsed()),
            );
            return Outcome {
                secret: s.name.clone(),
                container,
                version: None,
                status: OutcomeStatus::Rotated,
            };
        }
        let prov = match self.provider(&s.provider) {
            Ok(p) => p,
            Err(e) => return fail(e.into()),
        };
        let issued = prov.issue(&dreq);
        self.pool.note(&s.provider, issued.as_ref().err());
        let issued = match issued {
            Ok(i) => i,
            Err(e) => return fail(RotationError::Issue(s.name.clone(), e)),
        };
        let new = leases::LeaseState::from_issued(dreq.engine, &issued, leases::unix_now());
        let (hash, expires) = (new.hash(), leases::rfc3339(new.expires()));
        self.audit.record(
            &Event::new("lease_issued", "success")
                .secret(&s.name)
                .provider(&s.provider)
                .container(&container)
                .lease(&hash, &expires),
        );
        // A lease revoked now, or written down as owed when that fails.
        let revoke = |lease: &leases::LeaseState| {
            let pending = leases::Pending {
                container: container.clone(),
                secret: s.name.clone(),
                provider: s.provider.clone(),
                lease: lease.clone(),
                attempts: 1,
                last_error: None,
            };
            if let leases::Revoked::Failed(m) =
                leases::revoke(Some(&*prov), &pending, &self.audit, leases::unix_now())
            {
                let last_error = Some(m);
                let _ = leases::owe(
                    &self.state_dir(),
                    &leases::Pending {
                        last_error,
                        ..pending
                    },
                );
            }
        };
        // From here on the new lease must not be forgotten: revoked if it cannot be used.
        let drop_new = |why: RotationError| -> Outcome {
            revoke(&new);
            fail(why)
        };
        let value = match providers::select_issued(dreq.engine, &issued.value, s.key.as_deref()) {
            Ok(v) => v,
            Err(e) => return drop_new(RotationError::Key(s.name.clone(), e)),
        };
        let status = match self.apply(rec, si, &value, None, Mode::Force) {
            Ok(st) => st,
            Err(e) => return drop_new(e),
        };
        if let Err(e) = rec.set_lease(si, &new) {
            return drop_new(RotationError::Lease(e));
        }
        if let Some(old) = old
            && old.id.is_some()
        {
            revoke(old);
        }
        bump(&self.counters.rotations_completed);
        self.last_rotation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                (container.clone(), s.name.clone()),
                crate::audit::now_rfc3339(),
            );
        self.audit.record(
            &Event::new("rotation_completed", "success")
                .secret(&s.name)
                .provider(&s.provider)
                .container(&container)
                .duration(started.elapsed()),
        );
        Outcome {
            secret: s.name.clone(),
            container,
            version: None,
            status,
        }
    }

    /// Is `s` still granted to the container of `rec`, under this agent's dso.yaml? A record
    /// made under another dso.yaml (`--dso-config`) is not this agent's to rotate: the same
    /// secret name may mean another provider there. Refusals are audited.
    fn authorize(&self, rec: &StateRecord, s: &StateSecret) -> Result<(), RotationError> {
        let cfg = self.config();
        if !same_file(&rec.config, &cfg.source) {
            let e = RotationError::OtherConfig(rec.config.clone(), cfg.source.clone());
            self.audit.record(
                &Event::new("rotation_failed", "skipped")
                    .secret(&s.name)
                    .provider(&s.provider)
                    .container(&rec.id)
                    .error(&e.to_string())
                    .class(e.class().label()),
            );
            return Err(e);
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
        policy::check(&cfg, ask, workload)
            .map(|_| ())
            .map_err(|refusal| {
                let e = RotationError::from(refusal);
                self.counters.failed(e.class());
                self.audit.record(
                    &Event::new("access_denied", "failure")
                        .secret(&s.name)
                        .provider(&s.provider)
                        .container(&rec.id)
                        .workload(workload)
                        .error(&e.to_string()),
                );
                e
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
        let fail_all = |records: &[Record], e: RotationError| -> Vec<Outcome> {
            let e = Arc::new(e);
            self.counters.failed(e.class());
            self.audit.record(
                &Event::new("rotation_failed", "failure")
                    .secret(&name)
                    .provider(&fk.provider)
                    .duration(started.elapsed())
                    .error(&e.to_string())
                    .class(e.class().label()),
            );
            users
                .iter()
                .map(|&(ri, si)| Outcome {
                    secret: records[ri].rec.secrets[si].name.clone(),
                    container: records[ri].rec.id.clone(),
                    version: records[ri].rec.secrets[si].version.clone(),
                    status: OutcomeStatus::Failed(e.clone()),
                })
                .collect()
        };
        let provider = match self.provider(&fk.provider) {
            Ok(p) => p,
            Err(e) => return fail_all(records, e.into()),
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
            self.pool.note(&fk.provider, checked.as_ref().err());
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
                    return fail_all(records, e.into());
                }
            }
        }
        // audit.required: a value that cannot be audited is not applied.
        if let Err(e) = self.audit.must_record(
            &Event::new("rotation_started", "started")
                .secret(&name)
                .provider(&fk.provider),
        ) {
            return fail_all(records, RotationError::Audit(e));
        }
        let fetched = providers::fetch_for(&*provider, &req);
        self.pool.note(&fk.provider, fetched.as_ref().err());
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => {
                audit_provider_error(&e);
                return fail_all(records, e.into());
            }
        };
        if let Err(e) = self.audit.must_record(
            &Event::new("secret_fetched", "success")
                .secret(&name)
                .provider(&fk.provider)
                .version(fetched.version.as_deref())
                .duration(started.elapsed()),
        ) {
            return fail_all(records, RotationError::Audit(e));
        }
        let cfg = self.config();
        let limit = cfg.runtime.max_secret_size;
        if fetched.value.len() as u64 > limit {
            // Refused before any container is touched: every file keeps its current value.
            let (size, source) = (fetched.value.len(), cfg.source.clone());
            return fail_all(
                records,
                RotationError::TooLarge(name.clone(), size, limit, source),
            );
        }
        let mut out = Vec::new();
        // Audited together after the group: one lock and one append for 100 containers.
        let mut done: Vec<Done> = Vec::new();
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
                        done.push(Done::new(
                            "rotation_completed",
                            "success",
                            &secret,
                            &container,
                            t0,
                            None,
                            None,
                        ));
                    } else if status == OutcomeStatus::EnvNeedsRestart {
                        let msg = "env-injected secret: the new value reaches the container only with rotation strategy restart";
                        tracing::warn!(secret = %secret, container = %container, "{msg}");
                        done.push(Done::new(
                            "rotation_completed",
                            "skipped",
                            &secret,
                            &container,
                            t0,
                            Some(msg),
                            None,
                        ));
                    }
                    status
                }
                Err(e) => {
                    self.counters.failed(e.class());
                    done.push(Done::new(
                        "rotation_failed",
                        "failure",
                        &secret,
                        &container,
                        t0,
                        Some(&e.to_string()),
                        Some(e.class()),
                    ));
                    OutcomeStatus::Failed(Arc::new(e))
                }
            };
            out.push(Outcome {
                secret,
                container,
                version: fetched.version.clone(),
                status,
            });
        }
        let events: Vec<Event<'_>> = done
            .iter()
            .map(|d| {
                let mut ev = Event::new(d.event, d.status)
                    .secret(&d.secret)
                    .provider(&fk.provider)
                    .container(&d.container)
                    .duration(d.took);
                ev.timestamp = d.at.clone();
                ev.class = d.class.map(FailureClass::label);
                match &d.error {
                    // A failed write has no new version in the container.
                    Some(e) if d.status == "failure" => ev.error(e),
                    Some(e) => ev.version(fetched.version.as_deref()).error(e),
                    None => ev.version(fetched.version.as_deref()),
                }
            })
            .collect();
        self.audit.record_all(&events);
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
    ) -> Result<OutcomeStatus, RotationError> {
        let s = rec.rec.secrets[si].clone();
        if mode == Mode::IfChanged && version.is_some() && s.version.as_deref() == version {
            return Ok(OutcomeStatus::Unchanged);
        }
        let strategy = Strategy::of(&self.config(), &s.name)?;
        if let Some(file) = &s.file {
            let (uid, gid) = s
                .host_ids
                .unwrap_or_else(|| host_ids(&rec.rec.bundle, s.uid, s.gid));
            let dir = open_for_write(&rec.rec)?;
            dir.sweep_stale_temps(Some(file))?;
            dir.write(&SecretFile {
                name: file,
                value,
                uid,
                gid,
                mode: s.mode,
            })?;
        }
        rec.set_version(si, version)
            .map_err(RotationError::Record)?;
        match strategy {
            Strategy::None => {}
            Strategy::Signal(sig) => {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(rec.rec.pid), sig)
                    .map_err(|e| RotationError::Signal(sig, rec.rec.pid, e))?;
            }
            Strategy::Restart => {
                // Docker stops the container first and waits for it: say so, a silent pause of
                // seconds looks like a hang.
                eprintln!(
                    "dso: {}: {}: restarting the container through the Docker API at {}; Docker waits up to {}s for it to stop",
                    short_id(&rec.rec.id),
                    s.name,
                    self.opts.docker_socket.display(),
                    docker_api::STOP_TIMEOUT_SECS
                );
                docker_api::restart(&self.opts.docker_socket, &rec.rec.id)?;
                return Ok(OutcomeStatus::Rotated);
            }
        }
        if s.file.is_none() {
            return Ok(OutcomeStatus::EnvNeedsRestart);
        }
        Ok(OutcomeStatus::Rotated)
    }
}

/// The container's secrets dir, opened for a write only if `rec.pid` is still the container's
/// init (its start time is the one recorded at create, checked through a pidfd that pins the
/// process while its root is opened) and the dir is still the tmpfs seen at create (issue 14
/// point 5: a root PID 1 that moved to another mount must not receive the write there).
fn open_for_write(rec: &StateRecord) -> Result<SecretsDir, RotationError> {
    use rustix::event::{PollFd, PollFlags, poll};
    let id = short_id(&rec.id);
    let (Some(start), Some(mount)) = (rec.pid_start, rec.secrets_mount) else {
        return Err(RotationError::OldRecord(id.to_string()));
    };
    let gone = || RotationError::InitGone(id.to_string(), rec.pid);
    let pid = rustix::process::Pid::from_raw(rec.pid).ok_or_else(gone)?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|_| gone())?;
    if crate::state::process_start_time(rec.pid) != Some(start) {
        return Err(gone());
    }
    let dir = SecretsDir::open(rec.pid, &rec.secrets_dir)?;
    dir.require(&mount)?;
    // A pidfd turns readable when its process exits: still not readable now, the pid named
    // the same process when /proc/<pid>/root was opened above.
    let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&zero)) {
        Ok(0) => Ok(dir),
        _ => Err(gone()),
    }
}

/// One container's outcome in a group, audited when the group is done (with the time it
/// happened).
struct Done {
    event: &'static str,
    status: &'static str,
    secret: String,
    container: String,
    took: std::time::Duration,
    at: String,
    error: Option<String>,
    class: Option<FailureClass>,
}

impl Done {
    fn new(
        event: &'static str,
        status: &'static str,
        secret: &str,
        container: &str,
        started: Instant,
        error: Option<&str>,
        class: Option<FailureClass>,
    ) -> Done {
        Done {
            event,
            status,
            secret: secret.to_string(),
            container: container.to_string(),
            took: started.elapsed(),
            at: crate::audit::now_rfc3339(),
            error: error.map(str::to_string),
            class,
        }
    }
}

/// Whether `sel` can touch any secret of `r`.
fn selects(sel: &Selector, r: &StateRecord) -> bool {
    match sel {
        Selector::All => true,
        Selector::Container(id) => &r.id == id,
        Selector::Secret(name) => r.secrets.iter().any(|s| &s.name == name),
        Selector::Secrets(names) => r.secrets.iter().any(|s| names.contains(&s.name)),
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

/// The first 12 characters of a container id, as `docker ps` shows it.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
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

    /// Issue 14 point 5: a write needs the init recorded at create (same start time) and a
    /// record that says which tmpfs that was.
    #[test]
    fn a_record_whose_init_changed_or_is_unknown_is_not_written() {
        let me = std::process::id() as i32;
        let start = crate::state::process_start_time(me).unwrap();
        let mut rec = StateRecord {
            id: "c1".into(),
            bundle: "/nonexistent".into(),
            runc_root: None,
            delegate: "runc".into(),
            pid: me,
            config: "/nonexistent/dso.yaml".into(),
            secrets_dir: "/run/secrets".into(),
            secrets: Vec::new(),
            created: String::new(),
            workload: None,
            pid_start: Some(start + 1),
            secrets_mount: Some(crate::runtime::inject::MountIdentity { dev: 1, ino: 2 }),
        };
        let err = open_for_write(&rec).err().unwrap().to_string();
        assert!(
            err.contains(&format!("pid {me} is no longer the container's init")),
            "{err}"
        );
        rec.pid = i32::MAX;
        assert!(
            open_for_write(&rec)
                .err()
                .unwrap()
                .to_string()
                .contains("no longer the container's init")
        );
        rec.pid_start = None;
        let err = open_for_write(&rec).err().unwrap().to_string();
        assert!(err.contains("written by an older dso"), "{err}");
    }

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
                lease: None,
            }],
            created: String::new(),
            workload: None,
            pid_start: None,
            secrets_mount: None,
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
            OutcomeStatus::Failed(m) => assert!(m.to_string().contains("not this agent's"), "{m}"),
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

//! The create flow with secrets (README.md, "How it works"): resolve every reference against
//! dso.yaml, fetch all values concurrently, rewrite the spec, run the delegate's create, inject
//! into the container's tmpfs, register. Any failure after runc's create deletes the container.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Instant;

use zeroize::Zeroizing;

use super::argv::Invocation;
use super::delegate::{self, Delegate, DelegateError};
use super::inject::{InjectError, MountIdentity, SecretFile, SecretsDir};
use super::modify::{self, ENV_FILE_NAME};
use super::runclog::RuncLog;
use super::spec::{Spec, SpecError};
use crate::audit::{Audit, AuditError, Event};
use crate::config::{Config, ConfigError, ProviderKind, config_path};
use crate::policy::{self, Ask, Refusal, Workload};
use crate::providers::pool::{self, Pool};
use crate::providers::{self, DynamicRequest, FetchRequest, Fetched, Provider, ProviderError};
use crate::secrets::{RefError, RefKind, SecretRef, SecretValue, Target, collect_refs};
use crate::state::leases::{self, IssuedLeases, LeaseState};
use crate::state::{StateError, StateRecord, StateSecret, register};

/// Most fetches run at once in one create.
const MAX_PARALLEL_FETCHES: usize = 16;
/// tmpfs allocates whole pages: the size check counts each file as whole pages.
const PAGE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Ref(#[from] RefError),
    #[error("{0}")]
    Spec(#[from] SpecError),
    #[error(
        "secret {secret:?} is not defined in {config}; declare it under secrets: there with the containers it is for, e.g. `dso secret set {secret} --declare --allow docker:CONTAINER_NAME` (stores the value and adds {secret}: {{ provider: ..., allow: [ {{docker: {{name: \"CONTAINER_NAME\"}}}} ] }})"
    )]
    UnknownSecret { secret: String, config: PathBuf },
    #[error("{0}")]
    Denied(#[from] Refusal),
    #[error(
        "secret {secret:?}: provider {provider:?} is not defined in {config}; add it under providers: there (`dso config reference` lists the settings of each type)"
    )]
    UnknownProvider {
        secret: String,
        provider: String,
        config: PathBuf,
    },
    #[error(
        "secret {secret:?}: no provider given and {config} does not define exactly one; add provider: NAME to the secret"
    )]
    NoProvider { secret: String, config: PathBuf },
    #[error("secret file {file:?} is referenced with two different meanings ({a} and {b})")]
    Conflict { file: String, a: String, b: String },
    #[error("secret {secret:?}: {source}")]
    Fetch {
        secret: String,
        #[source]
        source: ProviderError,
    },
    #[error("secret {secret:?}: no answer from provider {provider:?} within {seconds}s")]
    FetchTimeout {
        secret: String,
        provider: String,
        seconds: u64,
    },
    #[error(
        "secret {secret:?} contains a NUL byte and cannot be put in the environment variable {var}; use dsofile:// instead"
    )]
    NulInEnv { secret: String, var: String },
    #[error(
        "the secrets need {needed} bytes, more than runtime.tmpfs_size ({limit} bytes) in {config}"
    )]
    TooLarge {
        needed: u64,
        limit: u64,
        config: PathBuf,
    },
    #[error(
        "secret {secret:?} is {size} bytes, more than runtime.max_secret_size ({limit} bytes) in {config}"
    )]
    SecretTooLarge {
        secret: String,
        size: u64,
        limit: u64,
        config: PathBuf,
    },
    #[error("{count} secret references, more than runtime.max_references ({limit}) in {config}")]
    TooManyReferences {
        count: usize,
        limit: usize,
        config: PathBuf,
    },
    #[error(
        "the secrets add up to {total} bytes, more than runtime.max_total_secret_size ({limit} bytes) in {config}"
    )]
    TooManyBytes {
        total: u64,
        limit: u64,
        config: PathBuf,
    },
    #[error("the container user {uid}:{gid} is not mapped in the container's user namespace")]
    Unmapped { uid: u32, gid: u32 },
    #[error("container id is missing from the {0} command line")]
    NoContainerId(&'static str),
    #[error("dso-init not found at {path}: {source} (set runtime.init_path in dso.yaml)")]
    Init {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Untrusted(Box<crate::trust::Untrusted>),
    #[error("{0}")]
    Delegate(#[from] DelegateError),
    #[error("injecting secrets: {0}")]
    Inject(#[from] InjectError),
    #[error("{0} (audit.required is set: the container is not created)")]
    Audit(#[from] AuditError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Handoff(String),
}

/// One secret to fetch and where it goes.
#[derive(Debug, Clone)]
struct Planned {
    /// File name in the secrets dir (and key of the plan).
    file: String,
    /// A label for messages and audit: the secret's name or `provider/path`.
    label: String,
    provider: String,
    request: FetchRequest,
    /// Write a file for it (a `dsofile://` reference uses it).
    as_file: bool,
    /// Env variables that get the value (`dso://` references).
    env_vars: Vec<String>,
    uid: u32,
    gid: u32,
    mode: u32,
    /// A value issued for this container (engine database/pki), never shared or cached.
    dynamic: Option<DynamicRequest>,
}

/// Resolves references against the config into a fetch plan (one entry per file name).
fn plan(cfg: &Config, refs: &[SecretRef], user: (u32, u32)) -> Result<Vec<Planned>, CreateError> {
    let mut by_file: BTreeMap<String, Planned> = BTreeMap::new();
    for r in refs {
        let p = match &r.target {
            Target::Named { name, key } => {
                let sc = cfg
                    .secrets
                    .get(name)
                    .ok_or_else(|| CreateError::UnknownSecret {
                        secret: name.clone(),
                        config: cfg.source.clone(),
                    })?;
                let provider = match &sc.provider {
                    Some(p) => p.clone(),
                    None => cfg
                        .provider_of(sc)
                        .ok_or_else(|| CreateError::NoProvider {
                            secret: name.clone(),
                            config: cfg.source.clone(),
                        })?
                        .to_string(),
                };
                let dynamic = crate::providers::DynamicRequest::for_secret(sc);
                Planned {
                    file: r.file_name().to_string(),
                    label: name.clone(),
                    provider,
                    request: FetchRequest {
                        path: match &dynamic {
                            // Where it is issued from (for status and messages).
                            Some(d) => d.path(),
                            None => sc.path.clone().unwrap_or_else(|| name.clone()),
                        },
                        key: key.clone().or_else(|| sc.key.clone()),
                        version: sc.version.clone(),
                        workload: None,
                    },
                    dynamic,
                    as_file: false,
                    env_vars: Vec::new(),
                    uid: sc.uid.unwrap_or(user.0),
                    gid: sc.gid.unwrap_or(user.1),
                    mode: sc.mode.unwrap_or(cfg.runtime.file_mode),
                }
            }
            Target::Inline {
                provider,
                path,
                key,
            } => Planned {
                file: r.file_name().to_string(),
                label: r.describe(),
                provider: provider.clone(),
                request: FetchRequest {
                    path: path.clone(),
                    key: key.clone(),
                    version: None,
                    workload: None,
                },
                as_file: false,
                env_vars: Vec::new(),
                uid: user.0,
                gid: user.1,
                mode: cfg.runtime.file_mode,
                dynamic: None,
            },
        };
        if !cfg.providers.contains_key(&p.provider) {
            return Err(CreateError::UnknownProvider {
                secret: p.label,
                provider: p.provider,
                config: cfg.source.clone(),
            });
        }
        let entry = by_file.entry(p.file.clone()).or_insert(p.clone());
        if entry.provider != p.provider || entry.request != p.request {
            return Err(CreateError::Conflict {
                file: p.file,
                a: entry.label.clone(),
                b: p.label,
            });
        }
        match r.kind {
            RefKind::File => entry.as_file = true,
            RefKind::Env => entry.env_vars.push(r.var.clone()),
        }
    }
    Ok(by_file.into_values().collect())
}

/// What the policy asks of one reference.
pub(crate) fn ask_of(r: &SecretRef) -> Ask<'_> {
    match &r.target {
        Target::Named { name, key } => Ask::Named {
            name,
            key: key.as_deref(),
        },
        Target::Inline { provider, path, .. } => Ask::Inline { provider, path },
    }
}

/// Every reference must be granted to the workload; the first refusal is audited (`"via":
/// "agent"` when the agent checked it) and returned.
fn authorize(
    cfg: &Config,
    refs: &[SecretRef],
    workload: &Workload,
    audit: &Audit,
    by_agent: bool,
) -> Result<(), CreateError> {
    for r in refs {
        if let Err(refusal) = policy::check(cfg, ask_of(r), workload) {
            let why = refusal.to_string();
            let ev = Event::new("access_denied", "failure")
                .secret(refusal.subject())
                .container(&workload.id)
                .workload(workload)
                .error(&why);
            audit.record(&if by_agent { ev.via("agent") } else { ev });
            return Err(refusal.into());
        }
    }
    Ok(())
}

/// A fetched value and its version.
type Value = (SecretValue, Option<String>);

/// One fetch or issue: the value, its version, and the lease of an issued value.
fn fetch_one(
    prov: &dyn Provider,
    req: &FetchRequest,
    dynamic: Option<&DynamicRequest>,
) -> Result<(Fetched, Option<LeaseState>), ProviderError> {
    let Some(d) = dynamic else {
        return providers::fetch_for(prov, req).map(|f| (f, None));
    };
    let issued = prov.issue(d)?;
    let lease = LeaseState::from_issued(d.engine, &issued, leases::unix_now());
    // Issued: from here on a failure must not forget the lease.
    let value = match providers::select_issued(d.engine, &issued.value, req.key.as_deref()) {
        Ok(v) => v,
        Err(source) => {
            if let Some(id) = &issued.lease_id {
                let _ = prov.revoke_lease(id);
            }
            return Err(ProviderError::key("vault", prov.name(), &req.path, source));
        }
    };
    Ok((
        Fetched {
            value,
            version: None,
        },
        Some(lease),
    ))
}

/// Where a create's values come from.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// dso's own process: providers built here.
    Direct,
    /// Inside the agent (a create handed over by dso-runc): its providers, already built.
    Agent(&'a Pool),
}

/// Fetches every planned secret: up to [`MAX_PARALLEL_FETCHES`] at once (through the provider
/// [`Pool`]), all within `timeout`.
fn fetch_all<'a>(
    cfg: &'a Config,
    planned: &[Planned],
    audit: &'a Audit,
    container: &str,
    source: Source<'_>,
) -> Result<(Vec<Value>, IssuedLeases<'a>), CreateError> {
    let timeout = cfg.runtime.fetch_timeout;
    let deadline = Instant::now() + timeout;
    let mut results: Vec<Option<(SecretValue, Option<String>)>> =
        (0..planned.len()).map(|_| None).collect();
    // Leases issued so far: revoked if this create fails at any later point.
    let mut leases = IssuedLeases::new(cfg, audit, container, planned.len());

    // One fetch per distinct secret (issue 14 point 4): two file names for the same provider,
    // path, key and version share one fetch. Dynamic secrets are issued once per reference.
    let (pending, of) = pool::distinct(planned.iter().map(|p| {
        let r = &p.request;
        p.dynamic
            .is_none()
            .then_some((&p.provider, &r.path, &r.key, &r.version))
    }));
    let copies: Vec<(usize, usize)> = (of.iter().enumerate())
        .filter(|&(i, &d)| pending[d] != i)
        .map(|(i, &d)| (i, pending[d]))
        .collect();

    // Each provider is built once and shared by its fetches (the agent's were built before).
    let own = Pool::default();
    let pool = match source {
        Source::Direct => &own,
        Source::Agent(pool) => pool,
    };
    let mut jobs = Vec::with_capacity(pending.len());
    for &i in &pending {
        let p = &planned[i];
        let prov = pool
            .get(cfg, &p.provider)
            .map_err(|source| CreateError::Fetch {
                secret: p.label.clone(),
                source,
            })?;
        jobs.push((prov, p.request.clone(), p.dynamic.clone()));
    }
    // The local store is read from disk and decrypted once, in memory: threads would only add
    // their own start-up cost. Anything with a network round trip runs concurrently.
    let all_local = pending
        .iter()
        .all(|&i| cfg.providers[&planned[i].provider].kind() == ProviderKind::Local);
    let threads = if all_local {
        0
    } else {
        pending.len().min(MAX_PARALLEL_FETCHES)
    };
    let provs: Vec<Arc<dyn Provider>> = jobs.iter().map(|(p, _, _)| p.clone()).collect();
    let rx = pool::run(jobs.len(), threads, move |j| {
        let (prov, req, dynamic) = &jobs[j];
        fetch_one(&**prov, req, dynamic.as_ref())
    });

    let mut fetched_in: Vec<(usize, std::time::Duration)> = Vec::new();
    for _ in 0..pending.len() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let (j, i, res, took) = match rx.recv_timeout(remaining) {
            Ok((j, res, took)) => (j, pending[j], res, took),
            Err(_) => {
                let pending = planned
                    .iter()
                    .zip(&results)
                    .find(|(_, r)| r.is_none())
                    .map(|(p, _)| p);
                let (secret, provider) = pending
                    .map(|p| (p.label.clone(), p.provider.clone()))
                    .unwrap_or_default();
                audit.record_all(&fetched_events(planned, &results, &fetched_in));
                audit.record(
                    &Event::new("secret_fetched", "failure")
                        .secret(&secret)
                        .provider(&provider)
                        .error("timeout"),
                );
                return Err(CreateError::FetchTimeout {
                    secret,
                    provider,
                    seconds: timeout.as_secs(),
                });
            }
        };
        let p = &planned[i];
        // The provider's health, for the agent's status and metrics.
        pool.note(&p.provider, res.as_ref().err());
        match res {
            Ok((f, lease)) => {
                if let Some(lease) = lease {
                    // The provider that issued it revokes it if this create fails.
                    leases.add(i, &p.label, provs[j].clone(), lease);
                }
                fetched_in.push((i, took));
                results[i] = Some((f.value, f.version));
            }
            Err(source) => {
                // What was fetched before this failure is on record too.
                audit.record_all(&fetched_events(planned, &results, &fetched_in));
                let msg = source.to_string();
                if source.is_auth_failure() {
                    audit.record(
                        &Event::new("auth_failed", "failure")
                            .secret(&p.label)
                            .provider(&p.provider)
                            .error(&msg),
                    );
                }
                audit.record(
                    &Event::new("secret_fetched", "failure")
                        .secret(&p.label)
                        .provider(&p.provider)
                        .duration(took)
                        .error(&msg),
                );
                return Err(CreateError::Fetch {
                    secret: p.label.clone(),
                    source,
                });
            }
        }
    }
    // The successes in one append; the values are used only after this returns, so with
    // audit.required none is injected unless its fetch is on record.
    let events = fetched_events(planned, &results, &fetched_in).into_iter();
    let events: Vec<_> = match source {
        Source::Direct => events.collect(),
        Source::Agent(_) => events.map(|e| e.via("agent")).collect(),
    };
    audit.must_record_all(&events)?;
    for (i, u) in copies {
        results[i] = results[u].clone();
    }
    Ok((results.into_iter().flatten().collect(), leases))
}

/// `secret_fetched` (success) of the fetches `fetched_in` names (plan index, duration).
fn fetched_events<'a>(
    planned: &'a [Planned],
    results: &'a [Option<(SecretValue, Option<String>)>],
    fetched_in: &[(usize, std::time::Duration)],
) -> Vec<Event<'a>> {
    fetched_in
        .iter()
        .map(|&(i, took)| {
            let version = results[i].as_ref().and_then(|(_, v)| v.as_deref());
            Event::new("secret_fetched", "success")
                .secret(&planned[i].label)
                .provider(&planned[i].provider)
                .version(version)
                .duration(took)
        })
        .collect()
}

/// The env hand-off file for dso-init: `VAR=value\0` records, built in zeroizing memory.
fn env_file(
    planned: &[Planned],
    values: &[(SecretValue, Option<String>)],
) -> Result<Option<SecretValue>, CreateError> {
    let mut buf = Zeroizing::new(Vec::new());
    let mut any = false;
    for (p, (value, _)) in planned.iter().zip(values) {
        for var in &p.env_vars {
            if value.expose().contains(&0) {
                return Err(CreateError::NulInEnv {
                    secret: p.label.clone(),
                    var: var.clone(),
                });
            }
            // Reserve first so the buffer never reallocates (a realloc would leave a copy).
            let need = buf.len() + var.len() + 2 + value.len();
            if buf.capacity() < need {
                let mut bigger = Zeroizing::new(Vec::with_capacity(need * 2));
                bigger.extend_from_slice(&buf);
                buf = bigger;
            }
            buf.extend_from_slice(var.as_bytes());
            buf.push(b'=');
            buf.extend_from_slice(value.expose());
            buf.push(0);
            any = true;
        }
    }
    Ok(any.then(|| SecretValue::from_zeroizing(buf)))
}

fn pages(n: u64) -> u64 {
    n.div_ceil(PAGE).max(1) * PAGE
}

/// Where dso-init lives: `runtime.init_path`, else next to this executable.
pub fn init_location(cfg: &Config) -> PathBuf {
    match &cfg.runtime.init_path {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("dso-init")))
            .unwrap_or_else(|| PathBuf::from("/usr/bin/dso-init")),
    }
}

/// [`init_location`], which must exist and be trusted ([`crate::trust`]).
fn init_path(cfg: &Config) -> Result<PathBuf, CreateError> {
    let path = init_location(cfg);
    let meta = fs::metadata(&path).map_err(|source| CreateError::Init {
        path: path.clone(),
        source,
    })?;
    // It runs as PID 1 in every env-ref container: whoever can replace it owns them all.
    crate::trust::check(&meta, &path, "dso-init", crate::trust::Use::Trusted)
        .map_err(|e| CreateError::Untrusted(Box::new(e)))?;
    Ok(path)
}

/// `DSO_TIMING=1`: how long each step of a create took, on stderr (for benchmarks; names and
/// durations only). In the agent the lines are kept and sent back to dso-runc, which prints them.
pub struct Timing {
    last: Option<Instant>,
    kept: Option<Vec<String>>,
}

impl Timing {
    /// On when `DSO_TIMING` is set.
    pub fn from_env() -> Timing {
        Timing {
            last: std::env::var_os("DSO_TIMING").map(|_| Instant::now()),
            kept: None,
        }
    }

    /// On when `on`; the lines are kept for [`Timing::lines`].
    pub fn kept(on: bool) -> Timing {
        Timing {
            last: on.then(Instant::now),
            kept: Some(Vec::new()),
        }
    }

    /// The lines kept so far.
    pub fn lines(&mut self) -> Vec<String> {
        self.kept.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn line(&mut self, line: String) {
        match &mut self.kept {
            Some(kept) => kept.push(line),
            None => eprintln!("{line}"),
        }
    }

    /// The process's peak resident set (VmHWM), for the benchmark's footprint row.
    fn peak_rss(&mut self) {
        if self.last.is_some()
            && self.kept.is_none()
            && let Ok(status) = fs::read_to_string("/proc/self/status")
            && let Some(hwm) = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))
        {
            self.line(format!("dso timing: peak rss: {}", hwm.trim()));
        }
    }

    pub fn mark(&mut self, step: &str) {
        if let Some(last) = self.last {
            let now = Instant::now();
            let ms = (now - last).as_secs_f64() * 1000.0;
            self.line(format!("dso timing: {step}: {ms:.2} ms"));
            self.last = Some(now);
        }
    }
}

/// The create path's audit: a failure to write is reported in runc's log (which `docker run`
/// shows), never on stderr.
pub fn audit_for(audit: Audit, log: &RuncLog) -> Audit {
    let log = log.clone();
    audit.on_failure(move |msg| log.write("warning", &format!("dso: {msg}")))
}

/// How many state records a create without the agent checks for a gone container
/// ([`crate::state::registry::prune_some`]).
const PRUNE_PER_CREATE: usize = 4;

/// The whole create flow. Returns the exit code to use.
pub fn create_with_secrets(
    inv: &Invocation,
    delegate: &dyn Delegate,
    mut spec: Spec,
    log: &RuncLog,
) -> Result<i32, CreateError> {
    let is_run = inv.command.as_deref() == Some("run");
    let what = if is_run { "run" } else { "create" };
    let id = inv.container_id.as_deref();
    let id = id.ok_or(CreateError::NoContainerId(what))?;
    let mut timing = Timing::from_env();
    // 1: config. Nothing exists yet; errors need no cleanup. Of dso.yaml's secrets, only those
    // the spec names are built; where its references cannot be read, all (plan says why).
    let named = collect_refs(&spec.env(), Some(&spec.annotations()))
        .ok()
        .map(|refs| {
            refs.into_iter()
                .filter_map(|r| match r.target {
                    Target::Named { name, .. } => Some(name),
                    Target::Inline { .. } => None,
                })
                .collect()
        });
    let cfg = load_config(inv, id, named.as_ref(), log)?;
    timing.mark("config");
    let audit = audit_for(Audit::new(&cfg.audit), log);
    let c = Create {
        inv,
        delegate,
        log,
        id,
        cfg: &cfg,
        audit: &audit,
    };
    let prepared = c.prepare(&mut spec, Source::Direct, timing)?;
    // 6: the delegate's create.
    let status = c.run_delegate_create(is_run)?;
    if !status.success() {
        // runc has reported why in its log already; nothing was created.
        return Ok(status.code().unwrap_or(1));
    }
    let (pid, _) = prepared.finish()?;
    // dso runs this create itself, so most likely no agent runs (one would have taken it,
    // unless it serves another dso.yaml): nothing else removes the records of deleted
    // containers.
    crate::state::registry::prune_some(&cfg.runtime.state_dir, id, PRUNE_PER_CREATE);
    if !is_run {
        return Ok(0);
    }
    c.run_rest(pid)
}

/// A create whose values are fetched and whose spec is rewritten, waiting for the delegate's
/// create: then [`Prepared::finish`] injects and registers. Dropped unfinished, the leases it
/// issued are revoked.
pub struct Prepared<'a> {
    c: Create<'a>,
    plan: CreatePlan,
    values: Vec<Value>,
    leases: IssuedLeases<'a>,
    env_blob: Option<SecretValue>,
    timing: Timing,
    /// Handed over: the agent injects (its audit events say so).
    by_agent: bool,
}

impl Prepared<'_> {
    /// How many values were fetched.
    pub fn fetched(&self) -> usize {
        self.values.len()
    }

    /// 7-8: inject and register; on any failure the container is deleted. Returns the init
    /// pid and the timing lines kept (see [`Timing::kept`]).
    pub fn finish(mut self) -> Result<(i32, Vec<String>), CreateError> {
        self.timing.mark("delegate create");
        let c = &self.c;
        let started = Instant::now();
        let injected = c
            .inject(&self.plan, &self.values, self.env_blob.as_ref())
            .and_then(|done| {
                let leases = &mut self.leases;
                c.record(
                    &self.plan,
                    &self.values,
                    leases,
                    done,
                    started,
                    self.by_agent,
                )
            });
        self.timing.mark("inject + register");
        let pid = injected.map_err(|e| c.undo(e, started))?;
        self.timing.mark("audit");
        self.timing.peak_rss();
        tracing::debug!(container = %c.id, secrets = self.plan.secrets.len(), "secrets injected");
        Ok((pid, self.timing.lines()))
    }

    /// The create cannot be finished (dso-runc went away): undone like a failed injection
    /// (the container, if runc made it, deleted; what was issued for it revoked).
    pub fn abandon(self, e: CreateError) {
        self.c.undo(e, Instant::now());
    }
}

/// Loads dso.yaml (of its secrets, those `named` where known: [`Config::load_only`]); a config
/// that cannot be used is audited as `config_rejected`.
fn load_config(
    inv: &Invocation,
    id: &str,
    named: Option<&BTreeSet<String>>,
    log: &RuncLog,
) -> Result<Config, CreateError> {
    let path = config_path(inv.dso_config.as_deref());
    match named {
        Some(named) => Config::load_only(&path, named),
        None => Config::load(&path),
    }
    .map_err(|e| {
        // The config's audit path is unknown: the default sink (never stderr, which is the
        // container's).
        audit_for(Audit::default_sink(), log).record(
            &Event::new("config_rejected", "failure")
                .container(id)
                .error(&e.to_string()),
        );
        e.into()
    })
}

/// Fails unless the fetched values fit the size limits and the tmpfs; returns the env
/// hand-off file (see [`env_file`]).
fn check_sizes(
    cfg: &Config,
    planned: &[Planned],
    values: &[Value],
) -> Result<Option<SecretValue>, CreateError> {
    let rt = &cfg.runtime;
    for (p, (v, _)) in planned.iter().zip(values) {
        if v.len() as u64 > rt.max_secret_size {
            return Err(CreateError::SecretTooLarge {
                secret: p.label.clone(),
                size: v.len() as u64,
                limit: rt.max_secret_size,
                config: cfg.source.clone(),
            });
        }
    }
    let total: u64 = values.iter().map(|(v, _)| v.len() as u64).sum();
    if total > rt.max_total_secret_size {
        return Err(CreateError::TooManyBytes {
            total,
            limit: rt.max_total_secret_size,
            config: cfg.source.clone(),
        });
    }
    let env_blob = env_file(planned, values)?;
    let needed: u64 = planned
        .iter()
        .zip(values)
        .filter(|(p, _)| p.as_file)
        .map(|(_, (v, _))| pages(v.len() as u64))
        .sum::<u64>()
        + env_blob.as_ref().map_or(0, |b| pages(b.len() as u64));
    if needed > rt.tmpfs_size {
        return Err(CreateError::TooLarge {
            needed,
            limit: rt.tmpfs_size,
            config: cfg.source.clone(),
        });
    }
    Ok(env_blob)
}

/// What a create will do, decided before anything is fetched or created.
struct CreatePlan {
    refs: Vec<SecretRef>,
    secrets: Vec<Planned>,
    /// The container's user, in the container and on the host.
    user: (u32, u32),
    host_user: (u32, u32),
    /// The host uid/gid owning each secret's file.
    host_ids: Vec<(u32, u32)>,
    bundle: PathBuf,
    workload: Workload,
    /// dso-init, when a value goes into the environment.
    init: Option<PathBuf>,
}

/// What injection leaves for the state record.
struct Injected {
    pid: i32,
    pid_start: Option<u64>,
    secrets_mount: MountIdentity,
}

/// One create with secrets: what its steps share.
#[derive(Clone, Copy)]
pub struct Create<'a> {
    pub inv: &'a Invocation,
    pub delegate: &'a dyn Delegate,
    pub log: &'a RuncLog,
    pub id: &'a str,
    pub cfg: &'a Config,
    pub audit: &'a Audit,
}

impl<'a> Create<'a> {
    /// 2-5: references, plan and grants, fetch, sizes, the spec rewritten (no value goes into
    /// it). Nothing exists yet; errors need no cleanup.
    pub fn prepare(
        self,
        spec: &mut Spec,
        source: Source<'_>,
        mut timing: Timing,
    ) -> Result<Prepared<'a>, CreateError> {
        let by_agent = matches!(source, Source::Agent(_));
        let plan = self.plan(spec, by_agent)?;
        timing.mark("plan");
        let (cfg, audit) = (self.cfg, self.audit);
        let (values, leases) = fetch_all(cfg, &plan.secrets, audit, self.id, source)?;
        timing.mark("fetch");
        let env_blob = check_sizes(cfg, &plan.secrets, &values)?;
        self.rewrite(spec, &plan)?;
        timing.mark("spec");
        Ok(Prepared {
            c: self,
            plan,
            values,
            leases,
            env_blob,
            timing,
            by_agent,
        })
    }

    /// References, limits, fetch plan, workload and its grants, dso-init, host ids.
    fn plan(&self, spec: &Spec, by_agent: bool) -> Result<CreatePlan, CreateError> {
        let cfg = self.cfg;
        let refs = collect_refs(&spec.env(), Some(&spec.annotations()))?;
        // Before anything is planned or fetched: a spec with thousands of references must not
        // turn into thousands of provider calls.
        if refs.len() > cfg.runtime.max_references {
            return Err(CreateError::TooManyReferences {
                count: refs.len(),
                limit: cfg.runtime.max_references,
                config: cfg.source.clone(),
            });
        }
        let user = spec.user();
        let mut secrets = plan(cfg, &refs, user)?;
        let bundle = self.inv.bundle_dir().unwrap_or_default();
        let workload = policy::identity::identify(spec.doc(), self.id, &bundle);
        authorize(cfg, &refs, &workload, self.audit, by_agent)?;
        // Attribution at the provider: every request names the workload in its User-Agent.
        for p in &mut secrets {
            p.request.workload = Some(workload.label());
        }
        let has_env = secrets.iter().any(|p| !p.env_vars.is_empty());
        let init = has_env.then(|| init_path(cfg)).transpose()?;
        let unmapped = |(uid, gid)| CreateError::Unmapped { uid, gid };
        let host_user = spec.host_ids(user.0, user.1).ok_or(unmapped(user))?;
        let host_ids = secrets
            .iter()
            .map(|p| spec.host_ids(p.uid, p.gid).ok_or(unmapped((p.uid, p.gid))))
            .collect::<Result<_, _>>()?;
        Ok(CreatePlan {
            refs,
            secrets,
            user,
            host_user,
            host_ids,
            bundle,
            workload,
            init,
        })
    }

    /// Rewrites config.json: the tmpfs, file paths, dso-init (no value goes into it).
    fn rewrite(&self, spec: &mut Spec, plan: &CreatePlan) -> Result<(), CreateError> {
        let user = plan.user;
        let all_owned_by_user = plan.secrets.iter().all(|p| (p.uid, p.gid) == user);
        let layout = modify::TmpfsLayout {
            secrets_dir: &self.cfg.runtime.secrets_dir,
            size: self.cfg.runtime.tmpfs_size,
            uid: user.0,
            gid: user.1,
            mode: if all_owned_by_user { 0o700 } else { 0o711 },
        };
        modify::rewrite_spec(spec, &plan.refs, layout, plan.init.as_deref())?;
        Ok(spec.flush()?)
    }

    /// The delegate's create (a `run` is created first, started after injection).
    fn run_delegate_create(&self, is_run: bool) -> Result<ExitStatus, CreateError> {
        let inv = self.inv;
        let args = if is_run {
            inv.run_as_create_args()
        } else {
            inv.args.clone()
        };
        if is_run && !inv.detach {
            // Foreground run: become the subreaper so the container's init is ours to wait for.
            let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
        }
        Ok(self.delegate.create(&args)?)
    }

    /// Writes the files (and the env hand-off file) into the created container's tmpfs: new
    /// files under their names ([`SecretsDir::create`]: nothing reads them before runc's start).
    fn inject(
        &self,
        plan: &CreatePlan,
        values: &[Value],
        env_blob: Option<&SecretValue>,
    ) -> Result<Injected, CreateError> {
        let pid = delegate::init_pid(self.delegate, self.inv, self.id)?;
        let dir = SecretsDir::open(pid, &self.cfg.runtime.secrets_dir)?;
        let secrets_mount = dir.identity()?;
        let pid_start = crate::state::process_start_time(pid);
        let files = plan.secrets.iter().zip(values).zip(&plan.host_ids);
        for ((p, (value, _)), &(uid, gid)) in files.filter(|((p, _), _)| p.as_file) {
            let mode = p.mode;
            let name = &p.file;
            dir.create(&SecretFile {
                name,
                value,
                uid,
                gid,
                mode,
            })?;
        }
        if let Some(value) = env_blob {
            let (uid, gid) = plan.host_user;
            dir.create(&SecretFile {
                name: ENV_FILE_NAME,
                value,
                uid,
                gid,
                mode: 0o400,
            })?;
        }
        Ok(Injected {
            pid,
            pid_start,
            secrets_mount,
        })
    }

    /// Registers the container (state record, which takes over the leases) and audits the
    /// injection. Returns the init pid.
    fn record(
        &self,
        plan: &CreatePlan,
        values: &[Value],
        leases: &mut IssuedLeases<'_>,
        done: Injected,
        started: Instant,
        by_agent: bool,
    ) -> Result<i32, CreateError> {
        let secrets = plan.secrets.iter().zip(values).zip(&plan.host_ids);
        let rec = StateRecord {
            id: self.id.to_string(),
            bundle: plan.bundle.clone(),
            runc_root: self.inv.root.clone(),
            delegate: self.delegate.program().to_os_string(),
            pid: done.pid,
            config: self.cfg.source.clone(),
            secrets_dir: self.cfg.runtime.secrets_dir.clone(),
            secrets: secrets
                .enumerate()
                .map(|(i, ((p, (_, version)), ids))| StateSecret {
                    name: p.label.clone(),
                    file: p.as_file.then(|| p.file.clone()),
                    env: p.env_vars.clone(),
                    provider: p.provider.clone(),
                    path: p.request.path.clone(),
                    key: p.request.key.clone(),
                    version: version.clone(),
                    uid: p.uid,
                    gid: p.gid,
                    mode: p.mode,
                    host_ids: Some(*ids),
                    lease: leases.get(i).cloned(),
                })
                .collect(),
            created: crate::audit::now_rfc3339(),
            workload: Some(plan.workload.clone()),
            pid_start: done.pid_start,
            secrets_mount: Some(done.secrets_mount),
        };
        register(&self.cfg.runtime.state_dir, &rec)?;
        // Registered: the record carries the leases now (revoked when the container goes).
        leases.keep();
        // Written before the create reports success: with audit.required, an injection that
        // cannot be audited is undone like any other failure here. One append for all (one
        // lock of the chain, one write), not one per secret.
        let took = started.elapsed();
        let events: Vec<Event<'_>> = plan
            .secrets
            .iter()
            .map(|p| {
                let ev = Event::new("secret_injected", "success")
                    .secret(&p.label)
                    .provider(&p.provider)
                    .container(self.id)
                    .workload(&plan.workload)
                    .duration(took);
                if by_agent { ev.via("agent") } else { ev }
            })
            .collect();
        self.audit.must_record_all(&events)?;
        Ok(done.pid)
    }

    /// A failure after the delegate's create: audited, the container deleted (its tmpfs goes
    /// with its mount namespace), its state record removed. Returns the failure.
    fn undo(&self, e: CreateError, started: Instant) -> CreateError {
        let id = self.id;
        self.audit.record(
            &Event::new("injection_failed", "failure")
                .container(id)
                .duration(started.elapsed())
                .error(&e.to_string()),
        );
        if let Err(del) = self.delegate.delete_force(self.inv, id) {
            self.log
                .write("error", &format!("dso: cleaning up {id}: {del}"));
        }
        let _ = fs::remove_file(self.cfg.runtime.state_dir.join(format!("{id}.json")));
        e
    }

    /// The rest of a `run`: start, and unless detached wait for the container like runc does.
    fn run_rest(&self, pid: i32) -> Result<i32, CreateError> {
        let (inv, id) = (self.inv, self.id);
        if let Err(e) = self.delegate.start(inv, id) {
            let _ = self.delegate.delete_force(inv, id);
            return Err(e.into());
        }
        if inv.detach {
            return Ok(0);
        }
        use nix::sys::wait::{WaitStatus, waitpid};
        let code = loop {
            match waitpid(nix::unistd::Pid::from_raw(pid), None) {
                Ok(WaitStatus::Exited(_, c)) => break c,
                Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    self.log
                        .write("warning", &format!("dso: waiting for {id}: {e}"));
                    break 1;
                }
            }
        };
        if !inv.keep
            && let Err(e) = self.delegate.delete_force(inv, id)
        {
            self.log
                .write("warning", &format!("dso: deleting {id}: {e}"));
        }
        Ok(code)
    }
}

#[cfg(test)]
mod cleanup_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::collect_refs;
    use std::path::Path;

    fn cfg(text: &str) -> Config {
        Config::from_str_at(text, Path::new("/etc/dso/dso.yaml")).unwrap()
    }

    const CFG: &str = "providers:\n  local: { type: local, path: /s, key_file: /k }\n  other: { type: local, path: /s2, key_file: /k }\nsecrets:\n  db: { provider: local, key: password, mode: \"0440\", uid: 7 }\n  api: { provider: other, path: prod/api }\n";

    #[test]
    fn plan_resolves_and_merges() {
        let c = cfg(CFG);
        let env = vec![
            "A_FILE=dsofile://db".to_string(),
            "A=dso://db".to_string(),
            "B=dso://api".to_string(),
            "C_FILE=dsofile://other/x/y#k".to_string(),
        ];
        let refs = collect_refs(&env, None).unwrap();
        let p = plan(&c, &refs, (1000, 1000)).unwrap();
        let db = p.iter().find(|p| p.file == "db").unwrap();
        assert!(db.as_file);
        assert_eq!(db.env_vars, ["A"]);
        assert_eq!(db.request.path, "db");
        assert_eq!(db.request.key.as_deref(), Some("password"));
        assert_eq!((db.uid, db.gid, db.mode), (7, 1000, 0o440));
        let api = p.iter().find(|p| p.file == "api").unwrap();
        assert_eq!(api.request.path, "prod/api");
        assert!(!api.as_file);
        let inline = p.iter().find(|p| p.file == "C").unwrap();
        assert_eq!(inline.provider, "other");
        assert_eq!(inline.request.path, "x/y");
        assert_eq!(inline.mode, 0o400);
    }

    #[test]
    fn plan_errors_name_the_secret() {
        let c = cfg(CFG);
        let refs = collect_refs(&["X=dsofile://no_such_secret".to_string()], None).unwrap();
        let err = plan(&c, &refs, (0, 0)).unwrap_err().to_string();
        assert_eq!(
            err,
            "secret \"no_such_secret\" is not defined in /etc/dso/dso.yaml; declare it under secrets: there with the containers it is for, e.g. `dso secret set no_such_secret --declare --allow docker:CONTAINER_NAME` (stores the value and adds no_such_secret: { provider: ..., allow: [ {docker: {name: \"CONTAINER_NAME\"}} ] })"
        );
        let refs = collect_refs(&["X=dso://nope/a".to_string()], None).unwrap();
        let err = plan(&c, &refs, (0, 0)).unwrap_err().to_string();
        assert_eq!(
            err,
            "secret \"nope/a\": provider \"nope\" is not defined in /etc/dso/dso.yaml; add it under providers: there (`dso config reference` lists the settings of each type)"
        );
    }

    #[test]
    fn env_file_refuses_nul_and_formats_records() {
        let c = cfg(CFG);
        let refs =
            collect_refs(&["A=dso://db".to_string(), "B=dso://api".to_string()], None).unwrap();
        let p = plan(&c, &refs, (0, 0)).unwrap();
        let vals: Vec<_> = p
            .iter()
            .map(|p| (SecretValue::new(format!("v-{}", p.file).into_bytes()), None))
            .collect();
        let blob = env_file(&p, &vals).unwrap().unwrap();
        assert_eq!(blob.expose(), b"B=v-api\0A=v-db\0");
        let bad = vec![
            (SecretValue::new(b"a\0b".to_vec()), None),
            (SecretValue::new(b"x".to_vec()), None),
        ];
        assert!(matches!(
            env_file(&p, &bad),
            Err(CreateError::NulInEnv { .. })
        ));
    }
}

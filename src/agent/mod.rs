//! `dso agent`: the foreground daemon that keeps secrets fresh in running containers. Every
//! `watch.interval` (± 10 % jitter) it asks each provider for the current version of every
//! secret in use (one cheap check per secret, however many containers use it) and re-injects
//! the ones that moved (see [`crate::rotation`]); a signed webhook (`agent.webhook`) triggers the
//! same for the named secrets at once. dso.yaml is read again on SIGHUP and when the file
//! changes (see [`reload`]); a file that does not validate leaves the running config in force.

pub mod control;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod notify;
pub mod webhook;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::audit::Event;
use crate::config::Config;
use crate::rotation::{Mode, OutcomeStatus, Rotator, Selector};

/// Why the agent could not start a listener, read a key, or serve one request of a fetch.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent.group {0:?}: {1}")]
    Group(String, #[source] nix::Error),
    #[error("agent.group {0:?}: no such group in /etc/group")]
    NoGroup(String),
    #[error("control socket {p}: {1}", p = .0.display())]
    Socket(PathBuf, #[source] std::io::Error),
    #[error("control socket {p}: {1}", p = .0.display())]
    SocketInUse(PathBuf, &'static str),
    #[error("metrics listener {0}: {1}")]
    Metrics(String, #[source] std::io::Error),
    #[error("notifications[{0}].url: {1}")]
    NotifyUrl(usize, String),
    #[error("{0} {p}: {2}", p = .1.display())]
    Key(&'static str, PathBuf, #[source] std::io::Error),
    #[error("{0} {p} is {2}", p = .1.display())]
    BadKey(&'static str, PathBuf, &'static str),
    #[error("webhook key {p} is {1} bytes; at least {MIN_KEY_LEN} bytes are needed (e.g. `openssl rand -hex 32 > {p}`)", p = .0.display(), MIN_KEY_LEN = webhook::MIN_KEY_LEN)]
    ShortKey(PathBuf, usize),
    #[error(transparent)]
    Untrusted(#[from] crate::trust::Untrusted),
    #[error(transparent)]
    Provider(#[from] crate::providers::ProviderError),
}

/// No secret is checked more often than this.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// How often the agent does its lease work (dynamic secrets): revocations owed by containers
/// that are gone, renewals and re-issues that are due. A removed container's lease is revoked
/// within about this long.
pub const LEASE_TICK: Duration = Duration::from_secs(2);

/// How long a webhook trigger waits for more before the rotation runs.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// How often the agent looks at dso.yaml's metadata for a change. A `stat` a second costs
/// nothing measurable, needs no inotify watch (which misses a ConfigMap's symlink swap or a
/// file on NFS unless the directory is watched too) and no new dependency.
const CONFIG_POLL: Duration = Duration::from_secs(1);

/// What wakes the agent besides its timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Refresh these secrets now (webhook).
    Secrets(Vec<String>),
    /// Read dso.yaml again (SIGHUP).
    Reload,
}

/// What identifies one version of the config file: any change (an edit in place, a rename
/// over it, a symlink pointed elsewhere) changes one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// Reads dso.yaml at `path` again and puts it in force if it is valid and differs from the
/// running one (`why` says what asked, for the log). An invalid or unreadable file changes
/// nothing: it is logged, recorded for `dso status` and audited as `config_rejected`. Returns
/// true when a new config is in force.
pub fn reload(rotator: &Rotator, path: &Path, why: &str) -> bool {
    let shown = path.display();
    let text = std::fs::read_to_string(path);
    let parsed = match &text {
        Ok(t) => Config::from_str_at(t, path).map_err(|e| e.messages().join("; ")),
        Err(e) => Err(format!("{shown}: {e}")),
    };
    let current = rotator.config();
    match parsed {
        Ok(cfg) if cfg.digest == current.digest => {
            eprintln!(
                "dso agent: {why}: {shown} unchanged (digest {})",
                short_digest(&cfg.digest)
            );
            false
        }
        Ok(cfg) => {
            let digest = cfg.digest.clone();
            let restart_only = [
                (
                    format!("{:?}", current.agent) != format!("{:?}", cfg.agent),
                    "agent",
                ),
                (
                    format!("{:?}", current.audit) != format!("{:?}", cfg.audit),
                    "audit",
                ),
            ];
            let removed = rotator.reload(cfg);
            eprintln!(
                "dso agent: {why}: reloaded {shown} (digest {}){}",
                short_digest(&digest),
                if removed.is_empty() {
                    String::new()
                } else {
                    format!("; providers removed: {}", removed.join(", "))
                }
            );
            for (changed, section) in restart_only {
                if changed {
                    eprintln!(
                        "dso agent: {section}: changes to this section take effect when the agent restarts"
                    );
                }
            }
            true
        }
        Err(error) => {
            let digest = text
                .as_deref()
                .map(crate::config::digest_of)
                .unwrap_or_default();
            eprintln!(
                "dso agent: {why}: {shown} rejected, keeping the config loaded at {} (digest {}): {error}",
                rotator.config_events().loaded_at,
                short_digest(&current.digest)
            );
            rotator.reject_config(&digest, &error);
            rotator
                .audit()
                .record(&Event::new("config_rejected", "failure").error(&error));
            false
        }
    }
}

/// The first 12 hex digits of a SHA-256, as logs and `dso status` show it.
pub fn short_digest(d: &str) -> &str {
    d.get(..12).unwrap_or(d)
}

/// `interval` ± 10 %, from a random draw.
pub fn jittered(interval: Duration) -> Duration {
    let mut b = [0u8; 4];
    let _ = getrandom::getrandom(&mut b);
    let r = u32::from_ne_bytes(b) as f64 / u32::MAX as f64; // 0..=1
    interval.mul_f64(0.9 + 0.2 * r)
}

/// Runs the agent until `stop` is set: a poll every jittered interval, and whatever arrives on
/// `triggers`. One cycle is one [`Rotator::rotate`] in [`Mode::IfChanged`]. With `config`,
/// that file is watched and read again when it changes (and on [`Trigger::Reload`]).
pub fn run(
    rotator: &Rotator,
    triggers: mpsc::Receiver<Trigger>,
    stop: Arc<AtomicBool>,
    config: Option<&Path>,
) {
    // Each secret has its own interval (`rotation.interval`, else `watch.interval`): the loop
    // wakes for the earliest one due and checks the secrets whose (jittered) time has come.
    // The registry stays in memory, kept current by inotify on the state dir and a pidfd per
    // container: an idle agent does no work per container (issue 18).
    rotator.keep_registry();
    // The sweep of what an interrupted rotation left opens every container's secrets dir: in
    // the background, so that a webhook arriving at start does not wait for it (issue 18).
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let swept = rotator.sweep_stale_temps();
            if swept > 0 {
                eprintln!("dso agent: removed {swept} temp file(s) an interrupted rotation left");
            }
        });
        run_loop(rotator, triggers, stop, config);
    });
}

/// [`run`]'s loop.
fn run_loop(
    rotator: &Rotator,
    triggers: mpsc::Receiver<Trigger>,
    stop: Arc<AtomicBool>,
    config: Option<&Path>,
) {
    let mut due_at: BTreeMap<String, Instant> = BTreeMap::new();
    let mut next = Instant::now();
    // The first lease tick runs at once: revocations owed since the last agent are settled
    // at start.
    let mut next_lease = Instant::now();
    // New containers are looked for as often as the shortest interval of any declared secret
    // (never less often than `watch.interval`): a container started after the agent, using a
    // secret with `rotation.interval: 1s`, is rotated within about a second, as configured.
    let discovery = |rotator: &Rotator| {
        let cfg = rotator.config();
        cfg.secrets
            .keys()
            .map(|name| rotator.interval_of(name))
            .chain([cfg.watch.interval])
            .min()
            .unwrap_or(cfg.watch.interval)
            .max(MIN_INTERVAL)
    };
    let mut discover_every = discovery(rotator);
    let mut config_stamp = config.and_then(stamp);
    let mut config_checked = Instant::now();
    let mut reload_why: Option<&str> = None;
    while !stop.load(Ordering::SeqCst) {
        if let Some(path) = config
            && config_checked.elapsed() >= CONFIG_POLL
        {
            config_checked = Instant::now();
            let now_stamp = stamp(path);
            if now_stamp != config_stamp {
                config_stamp = now_stamp;
                reload_why = reload_why.or(Some("file changed"));
            }
        }
        if let (Some(path), Some(why)) = (config, reload_why.take())
            && reload(rotator, path, why)
        {
            // Everything in use is checked again at once, under the new config.
            discover_every = discovery(rotator);
            due_at.clear();
            next = Instant::now();
        }
        // A webhook's trigger goes before due work (the lease tick, a polling cycle, the first
        // full check at start): a sender waits for one rotation, not for a cycle of all.
        if let Ok(first) = triggers.try_recv() {
            handle_trigger(rotator, &triggers, first, &mut reload_why);
            continue;
        }
        let now = Instant::now();
        if now >= next_lease {
            report(&rotator.lease_tick());
            next_lease = Instant::now() + LEASE_TICK;
            continue;
        }
        if now >= next {
            // prune: the records of containers that are gone are dropped here, at the
            // discovery cadence, not only when one of their secrets is due.
            let in_use = rotator.secrets_in_use();
            due_at.retain(|name, _| in_use.contains(name));
            let due: Vec<String> = in_use
                .iter()
                .filter(|n| due_at.get(*n).is_none_or(|t| *t <= now))
                .cloned()
                .collect();
            if !due.is_empty() {
                report(&rotator.rotate(&Selector::Secrets(due.clone()), Mode::IfChanged));
            }
            let after = Instant::now();
            for name in due {
                let every = rotator.interval_of(&name).max(MIN_INTERVAL);
                due_at.insert(name, after + jittered(every));
            }
            // New containers are looked for at least this often.
            next = due_at
                .values()
                .copied()
                .min()
                .unwrap_or(after + discover_every)
                .min(after + discover_every);
            continue;
        }
        let wait = (next.min(next_lease) - now).min(Duration::from_millis(200));
        match triggers.recv_timeout(wait) {
            Ok(first) => handle_trigger(rotator, &triggers, first, &mut reload_why),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(wait);
            }
        }
    }
}

/// A SIGHUP (noted in `reload_why`) or a webhook's secrets, rotated after the debounce: a
/// burst of triggers becomes one rotation per named secret.
fn handle_trigger(
    rotator: &Rotator,
    triggers: &mpsc::Receiver<Trigger>,
    first: Trigger,
    reload_why: &mut Option<&'static str>,
) {
    let first = match first {
        Trigger::Reload => {
            *reload_why = Some("SIGHUP");
            return;
        }
        Trigger::Secrets(first) => first,
    };
    let mut names = std::collections::BTreeSet::from_iter(first);
    let quiet = Instant::now() + DEBOUNCE;
    loop {
        match triggers.recv_timeout(quiet.saturating_duration_since(Instant::now())) {
            Ok(Trigger::Secrets(more)) => names.extend(more),
            Ok(Trigger::Reload) => *reload_why = Some("SIGHUP"),
            Err(_) => break,
        }
    }
    for name in names {
        report(&rotator.rotate(&Selector::Secret(name), Mode::IfChanged));
    }
}

/// Logs what a cycle (or a `dso rotate` served over the socket) did (stderr, for journald).
/// Audit events are written by the rotator.
pub fn report(outcomes: &[crate::rotation::Outcome]) {
    for o in outcomes {
        match &o.status {
            OutcomeStatus::Unchanged => {}
            OutcomeStatus::Rotated => eprintln!(
                "dso agent: {}: {}: rotated to version {}",
                o.container,
                o.secret,
                o.version.as_deref().unwrap_or("-")
            ),
            OutcomeStatus::EnvNeedsRestart => eprintln!(
                "dso agent: {}: {}: env-injected; new version {} needs rotation strategy restart",
                o.container,
                o.secret,
                o.version.as_deref().unwrap_or("-")
            ),
            OutcomeStatus::Failed(msg) => {
                eprintln!("dso agent: {}: {}: {msg}", o.container, o.secret)
            }
        }
    }
}

/// The agent holds a pidfd per managed container: the soft limit on descriptors (1024 under
/// systemd by default) is raised to the hard one, as Go programs do at start. A failure only
/// means containers past the limit are checked the slower way.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(30));
            assert!(
                d >= Duration::from_secs(27) && d <= Duration::from_secs(33),
                "{d:?}"
            );
        }
    }
}

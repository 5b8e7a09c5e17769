//! `dso agent`: the foreground daemon that keeps secrets fresh in running containers. Every
//! `watch.interval` (± 10 % jitter) it asks each provider for the current version of every
//! secret in use (one cheap check per secret, however many containers use it) and re-injects
//! the ones that moved (see [`crate::rotation`]); a signed webhook (`agent.webhook`) triggers the
//! same for the named secrets at once.

pub mod control;
pub mod metrics;
pub mod notify;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::rotation::{Mode, OutcomeStatus, Rotator, Selector};

/// No secret is checked more often than this.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// How long a webhook trigger waits for more before the rotation runs.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// What wakes the agent besides its timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Refresh these secrets now (webhook).
    Secrets(Vec<String>),
}

/// `interval` ± 10 %, from a random draw.
pub fn jittered(interval: Duration) -> Duration {
    let mut b = [0u8; 4];
    let _ = getrandom::getrandom(&mut b);
    let r = u32::from_ne_bytes(b) as f64 / u32::MAX as f64; // 0..=1
    interval.mul_f64(0.9 + 0.2 * r)
}

/// Runs the agent until `stop` is set: a poll every jittered interval, and whatever arrives on
/// `triggers`. One cycle is one [`Rotator::rotate`] in [`Mode::IfChanged`].
pub fn run(rotator: &Rotator, triggers: mpsc::Receiver<Trigger>, stop: Arc<AtomicBool>) {
    // Each secret has its own interval (`rotation.interval`, else `watch.interval`): the loop
    // wakes for the earliest one due and checks the secrets whose (jittered) time has come.
    let swept = rotator.sweep_stale_temps();
    if swept > 0 {
        eprintln!("dso agent: removed {swept} temp file(s) an interrupted rotation left");
    }
    let mut due_at: BTreeMap<String, Instant> = BTreeMap::new();
    let mut next = Instant::now();
    // New containers are looked for as often as the shortest interval of any declared secret
    // (never less often than `watch.interval`): a container started after the agent, using a
    // secret with `rotation.interval: 1s`, is rotated within about a second, as configured.
    let discover_every = rotator
        .config()
        .secrets
        .keys()
        .map(|name| rotator.interval_of(name))
        .chain([rotator.config().watch.interval])
        .min()
        .unwrap_or(rotator.config().watch.interval)
        .max(MIN_INTERVAL);
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= next {
            // prune: the records of containers that are gone are dropped here, at the
            // discovery cadence, not only when one of their secrets is due.
            let in_use: std::collections::BTreeSet<String> =
                crate::rotation::prune(rotator.state_dir())
                    .into_iter()
                    .flat_map(|r| r.rec.secrets.into_iter().map(|s| s.name))
                    .collect();
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
        let wait = (next - now).min(Duration::from_millis(200));
        match triggers.recv_timeout(wait) {
            Ok(Trigger::Secrets(first)) => {
                // Debounce: a burst of triggers becomes one rotation per named secret.
                let mut names = std::collections::BTreeSet::from_iter(first);
                let quiet = Instant::now() + DEBOUNCE;
                while let Ok(Trigger::Secrets(more)) =
                    triggers.recv_timeout(quiet.saturating_duration_since(Instant::now()))
                {
                    names.extend(more);
                }
                for name in names {
                    report(&rotator.rotate(&Selector::Secret(name), Mode::IfChanged));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(wait);
            }
        }
    }
}

/// Logs what a cycle did (stderr, for journald). Audit events are written by the rotator.
fn report(outcomes: &[crate::rotation::Outcome]) {
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

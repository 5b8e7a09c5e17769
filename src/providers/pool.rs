//! The provider pool: each provider built once and shared (sessions, tokens, the derived local
//! key), the health of its last call, the fetch counters, and the parallel fetch that create,
//! the agent's control socket, rotation and `dso doctor` all use.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use super::{FetchRequest, Fetched, Provider, ProviderError};
use crate::config::Config;

/// What the last call to a provider said.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProviderHealth {
    pub ok: bool,
    pub at: String,
    pub error: Option<String>,
}

/// Provider calls since the pool was made (the agent's Prometheus counters).
#[derive(Debug, Default)]
pub struct FetchCounters {
    pub fetches: AtomicU64,
    pub fetch_errors: AtomicU64,
    pub auth_failures: AtomicU64,
}

/// Providers by name, each built on first use and kept.
#[derive(Default)]
pub struct Pool {
    built: Mutex<BTreeMap<String, Arc<dyn Provider>>>,
    /// Per provider: the outcome of its last call (names and error text only).
    health: Mutex<BTreeMap<String, ProviderHealth>>,
    pub counters: FetchCounters,
}

impl Pool {
    /// Provider `name` of `cfg`, built on first use.
    pub fn get(&self, cfg: &Config, name: &str) -> Result<Arc<dyn Provider>, ProviderError> {
        let mut map = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = map.get(name) {
            return Ok(p.clone());
        }
        let pc = cfg
            .providers
            .get(name)
            .ok_or_else(|| {
                let detail = format!(
                    "provider is not defined in {}; add it under providers: there (a running agent reads the file again when it changes, or on SIGHUP)",
                    cfg.source.display()
                );
                ProviderError::config("config", name, detail)
            })?;
        let p: Arc<dyn Provider> = Arc::from(super::build(name, pc, cfg)?);
        map.insert(name.to_string(), p.clone());
        Ok(p)
    }

    /// Fetches through provider `name` (built once), recording its health.
    pub fn fetch(
        &self,
        cfg: &Config,
        name: &str,
        req: &FetchRequest,
    ) -> Result<Fetched, ProviderError> {
        let res = self.get(cfg, name).and_then(|p| super::fetch_for(&*p, req));
        self.note(name, res.as_ref().err());
        res
    }

    /// Records the outcome of a provider call for `status` and the counters.
    pub fn note(&self, provider: &str, err: Option<&ProviderError>) {
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
    pub fn health(&self) -> BTreeMap<String, ProviderHealth> {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Before `new` replaces `old`: a built provider is kept only when its settings and the
    /// fetch timeout are unchanged (its session and derived key stay valid); a removed or
    /// changed one is dropped, so the next use sees the new file.
    pub fn reload(&self, old: &Config, new: &Config) {
        let same_timeout = old.runtime.fetch_timeout == new.runtime.fetch_timeout;
        self.built
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|name, _| {
                same_timeout
                    && matches!((old.providers.get(name), new.providers.get(name)),
                        (Some(a), Some(b)) if a.settings == b.settings)
            });
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|name, _| new.providers.contains_key(name));
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The distinct fetches of a list of requests: `(first, of)`, where `first` holds the index of
/// the first request of each distinct key and `of[i]` the position in `first` that request `i`
/// shares. A `None` key is never shared (a dynamic secret is issued per request).
pub fn distinct<K: Ord>(keys: impl IntoIterator<Item = Option<K>>) -> (Vec<usize>, Vec<usize>) {
    let mut seen: BTreeMap<K, usize> = BTreeMap::new();
    let (mut first, mut of) = (Vec::new(), Vec::new());
    for (i, k) in keys.into_iter().enumerate() {
        let at = match k {
            Some(k) => *seen.entry(k).or_insert_with(|| {
                first.push(i);
                first.len() - 1
            }),
            None => {
                first.push(i);
                first.len() - 1
            }
        };
        of.push(at);
    }
    (first, of)
}

/// Runs `work(j)` for every job `j` in `0..jobs` on `threads` worker threads (none: one after
/// the other on this thread, before this returns) and sends `(j, result, how long it took)` as
/// each is done. The workers are detached on
/// purpose: a provider that hangs past the caller's deadline must not hold the caller up (it
/// stops reading the channel, and a create process exits, taking the thread with it).
pub fn run<R: Send + 'static>(
    jobs: usize,
    threads: usize,
    work: impl Fn(usize) -> R + Send + Sync + 'static,
) -> mpsc::Receiver<(usize, R, Duration)> {
    let (tx, rx) = mpsc::channel();
    if threads == 0 {
        for j in 0..jobs {
            let started = Instant::now();
            let res = work(j);
            // The receiver is alive: it is returned below.
            let _ = tx.send((j, res, started.elapsed()));
        }
        return rx;
    }
    let work = Arc::new(work);
    let next = Arc::new(AtomicUsize::new(0));
    for _ in 0..threads.min(jobs) {
        let (work, next, tx) = (work.clone(), next.clone(), tx.clone());
        std::thread::spawn(move || {
            loop {
                let j = next.fetch_add(1, Ordering::SeqCst);
                if j >= jobs {
                    break;
                }
                let started = Instant::now();
                let res = work(j);
                if tx.send((j, res, started.elapsed())).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_shares_equal_keys_but_never_none() {
        let (first, of) = distinct([Some("a"), None, Some("b"), Some("a"), None]);
        assert_eq!(first, [0, 1, 2, 4]);
        assert_eq!(of, [0, 1, 2, 0, 3]);
    }

    #[test]
    fn run_delivers_every_job_inline_or_on_threads() {
        for threads in [0, 1, 4] {
            let rx = run(10, threads, |j| j * 2);
            let mut got: Vec<(usize, usize)> = rx.iter().map(|(j, r, _)| (j, r)).collect();
            got.sort();
            assert_eq!(got, (0..10).map(|j| (j, j * 2)).collect::<Vec<_>>());
        }
    }
}

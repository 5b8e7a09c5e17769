//! Leases of dynamic secrets (Vault `engine: database` credentials, `engine: pki` certificates):
//! what the state record keeps about each (the lease id and its expiry, never a value), when
//! it is due (two thirds of its TTL), and the revocations still owed for containers that are
//! gone (`<state_dir>/revocations/*.json`, written before a record is dropped, so a revocation
//! survives an agent that is killed or not running; the agent retries each until it succeeds
//! or the lease has expired).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{Audit, Event};
use crate::config::Engine;
use crate::providers::{Issued, Provider};

/// Renew (or re-issue) once this fraction of a lease's TTL has passed.
pub const RENEW_AT: f64 = 2.0 / 3.0;

/// The sub-directory of the state dir that holds owed revocations.
pub const REVOCATIONS_DIR: &str = "revocations";

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 for a unix time.
pub fn rfc3339(secs: u64) -> String {
    crate::audit::format_rfc3339(secs as i64, 0)
}

/// What dso keeps of one issued value: never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseState {
    pub engine: Engine,
    /// Vault's lease id (database credentials); `None` for certificates, which have no lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The certificate serial (pki), for status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// When the current TTL started counting (issue, or the last renewal), unix seconds.
    pub since: u64,
    /// The TTL granted at `since`, seconds.
    pub ttl: u64,
    pub renewable: bool,
}

impl LeaseState {
    pub fn from_issued(engine: Engine, issued: &Issued, now: u64) -> Self {
        LeaseState {
            engine,
            id: issued.lease_id.clone(),
            serial: issued.label.clone(),
            since: now,
            ttl: issued.ttl.as_secs(),
            renewable: issued.renewable,
        }
    }

    pub fn expires(&self) -> u64 {
        self.since.saturating_add(self.ttl)
    }

    /// Unix time at which the agent renews or re-issues.
    pub fn due_at(&self) -> u64 {
        self.since + (self.ttl as f64 * RENEW_AT) as u64
    }

    pub fn is_due(&self, now: u64) -> bool {
        now >= self.due_at()
    }

    /// A short, stable name for audit and status: `sha256:<16 hex>` of the lease id (or the
    /// certificate serial). The id itself never leaves the state dir.
    pub fn hash(&self) -> String {
        let basis = self
            .id
            .as_deref()
            .or(self.serial.as_deref())
            .unwrap_or("none");
        let d = Sha256::digest(basis.as_bytes());
        format!("sha256:{}", hex::encode(&d[..8]))
    }
}

/// A revocation still owed: the lease of a container that is gone (or never started).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub container: String,
    pub secret: String,
    pub provider: String,
    pub lease: LeaseState,
    /// Attempts so far and the last error (for status).
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Pending {
    fn file_name(&self) -> String {
        let hash = self.lease.hash();
        format!("{}.json", hash.trim_start_matches("sha256:"))
    }
}

fn revocations_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(REVOCATIONS_DIR)
}

/// Records that `p` must be revoked (atomically; 0600 in a 0700 dir).
pub fn owe(state_dir: &Path, p: &Pending) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = revocations_dir(state_dir);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let value = serde_json::to_value(p).map_err(std::io::Error::other)?;
    super::registry::write_atomic(&dir.join(p.file_name()), &value)
}

/// Every owed revocation, with its file.
pub fn owed(state_dir: &Path) -> Vec<(PathBuf, Pending)> {
    let Ok(rd) = fs::read_dir(revocations_dir(state_dir)) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, Pending)> = rd
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            !n.starts_with('.') && n.ends_with(".json")
        })
        .filter_map(|e| {
            let bytes = fs::read(e.path()).ok()?;
            let p: Pending = serde_json::from_slice(&bytes).ok()?;
            Some((e.path(), p))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// What one attempt to revoke did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    Done,
    /// Nothing to revoke (a certificate), or the lease expired: the debt is dropped.
    Dropped(&'static str),
    Failed(String),
}

/// Revokes one lease through `provider` and audits the result (`lease_revoked` or
/// `lease_failed`). Certificates have no lease to revoke: they expire at their TTL.
pub fn revoke(provider: Option<&dyn Provider>, p: &Pending, audit: &Audit, now: u64) -> Revoked {
    let hash = p.lease.hash();
    let expires = rfc3339(p.lease.expires());
    let Some(id) = p.lease.id.as_deref() else {
        return Revoked::Dropped("no lease");
    };
    let res = match provider {
        Some(prov) => prov.revoke_lease(id).map_err(|e| e.to_string()),
        None => Err(format!("provider {:?} is not defined", p.provider)),
    };
    match res {
        Ok(()) => {
            audit.record(
                &Event::new("lease_revoked", "success")
                    .secret(&p.secret)
                    .provider(&p.provider)
                    .container(&p.container)
                    .lease(&hash, &expires),
            );
            Revoked::Done
        }
        Err(msg) => {
            let expired = now >= p.lease.expires();
            let status = if expired { "expired" } else { "failure" };
            let msg = if expired {
                format!("{msg}; the lease has expired: giving up")
            } else {
                format!("{msg}; will retry")
            };
            audit.record(
                &Event::new("lease_failed", status)
                    .secret(&p.secret)
                    .provider(&p.provider)
                    .container(&p.container)
                    .lease(&hash, &expires)
                    .error(&msg),
            );
            if expired {
                Revoked::Dropped("expired")
            } else {
                Revoked::Failed(msg)
            }
        }
    }
}

/// Works through the owed revocations once: revoked or expired ones are removed, failed ones
/// kept with their attempt count. `provider` builds (or returns the cached) provider by name.
pub fn settle(
    state_dir: &Path,
    audit: &Audit,
    provider: &dyn Fn(&str) -> Option<std::sync::Arc<dyn Provider>>,
) -> usize {
    let now = unix_now();
    let mut left = 0;
    for (path, mut p) in owed(state_dir) {
        let prov = provider(&p.provider);
        match revoke(prov.as_deref(), &p, audit, now) {
            Revoked::Done | Revoked::Dropped(_) => {
                let _ = fs::remove_file(&path);
            }
            Revoked::Failed(msg) => {
                p.attempts += 1;
                p.last_error = Some(msg);
                let _ = owe(state_dir, &p);
                left += 1;
            }
        }
    }
    left
}

/// One plan entry's lease: the secret, the provider that issued it (and revokes it) and the
/// lease.
type Issuance = (String, Arc<dyn Provider>, LeaseState);

/// The leases one create has issued, by plan index. Unless [`keep`](Self::keep) is called
/// (the container is registered, its record carries them), dropping this revokes them; a
/// revocation that fails is written down for the agent to retry.
pub struct IssuedLeases<'a> {
    cfg: &'a crate::config::Config,
    audit: &'a Audit,
    container: String,
    items: Vec<Option<Issuance>>,
    kept: bool,
}

impl<'a> IssuedLeases<'a> {
    pub fn new(
        cfg: &'a crate::config::Config,
        audit: &'a Audit,
        container: &str,
        n: usize,
    ) -> Self {
        IssuedLeases {
            cfg,
            audit,
            container: container.to_string(),
            items: (0..n).map(|_| None).collect(),
            kept: false,
        }
    }

    /// Records the lease of plan entry `i`, issued by `provider`, and audits `lease_issued`.
    pub fn add(&mut self, i: usize, secret: &str, provider: Arc<dyn Provider>, lease: LeaseState) {
        self.audit.record(
            &Event::new("lease_issued", "success")
                .secret(secret)
                .provider(provider.name())
                .container(&self.container)
                .lease(&lease.hash(), &rfc3339(lease.expires())),
        );
        if let Some(slot) = self.items.get_mut(i) {
            *slot = Some((secret.to_string(), provider, lease));
        }
    }

    pub fn get(&self, i: usize) -> Option<&LeaseState> {
        self.items.get(i)?.as_ref().map(|(_, _, l)| l)
    }

    /// The leases now belong to the container's record.
    pub fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for IssuedLeases<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let now = unix_now();
        for (secret, provider, lease) in self.items.iter().flatten() {
            if lease.id.is_none() {
                continue;
            }
            let pending = Pending {
                container: self.container.clone(),
                secret: secret.clone(),
                provider: provider.name().to_string(),
                lease: lease.clone(),
                attempts: 1,
                last_error: None,
            };
            if let Revoked::Failed(msg) = revoke(Some(&**provider), &pending, self.audit, now) {
                let _ = owe(
                    &self.cfg.runtime.state_dir,
                    &Pending {
                        last_error: Some(msg),
                        ..pending
                    },
                );
            }
        }
    }
}

/// The increment asked for on renewal: the original TTL again.
pub fn increment(l: &LeaseState) -> Duration {
    Duration::from_secs(l.ttl.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: Option<&str>, since: u64, ttl: u64) -> LeaseState {
        LeaseState {
            engine: Engine::Database,
            id: id.map(str::to_string),
            serial: None,
            since,
            ttl,
            renewable: true,
        }
    }

    #[test]
    fn due_at_two_thirds_and_hash_hides_the_id() {
        let l = lease(Some("database/creds/app/AbCdEf123"), 1000, 300);
        assert_eq!(l.due_at(), 1200);
        assert!(!l.is_due(1199));
        assert!(l.is_due(1200));
        assert_eq!(l.expires(), 1300);
        let h = l.hash();
        assert!(h.starts_with("sha256:") && h.len() == 7 + 16, "{h}");
        assert!(!h.contains("AbCdEf"));
        assert_eq!(h, lease(Some("database/creds/app/AbCdEf123"), 0, 1).hash());
    }

    #[test]
    fn owed_revocations_round_trip_and_expired_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let audit_path = dir.path().join("audit.log");
        let audit = Audit::new(&crate::config::AuditConfig {
            path: Some(audit_path.clone()),
            ..Default::default()
        });
        let now = unix_now();
        for (id, since) in [("live", now), ("old", now - 1000)] {
            owe(
                dir.path(),
                &Pending {
                    container: "c1".into(),
                    secret: "app_db".into(),
                    provider: "nowhere".into(),
                    lease: lease(Some(id), since, 100),
                    attempts: 0,
                    last_error: None,
                },
            )
            .unwrap();
        }
        assert_eq!(owed(dir.path()).len(), 2);
        // The provider is unknown: the live lease stays owed, the expired one is given up.
        let left = settle(dir.path(), &audit, &|_| None);
        assert_eq!(left, 1);
        let rest = owed(dir.path());
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].1.attempts, 1);
        assert_eq!(rest[0].1.lease.id.as_deref(), Some("live"));
        let log = fs::read_to_string(&audit_path).unwrap();
        assert_eq!(
            log.matches("\"event\":\"lease_failed\"").count(),
            2,
            "{log}"
        );
        assert!(
            !log.contains("\"live\"") && !log.contains("\"old\""),
            "{log}"
        );
    }

    /// A provider that only revokes: records the lease ids, refuses the one named `refuse`.
    struct Revoker {
        revoked: std::sync::Mutex<Vec<String>>,
        refuse: &'static str,
    }

    impl Provider for Revoker {
        fn name(&self) -> &str {
            "bao"
        }
        fn fetch(
            &self,
            _: &crate::providers::FetchRequest,
        ) -> Result<crate::providers::Fetched, crate::providers::ProviderError> {
            Err(crate::providers::ProviderError::config(
                "test", "bao", "no fetch",
            ))
        }
        fn revoke_lease(&self, id: &str) -> Result<(), crate::providers::ProviderError> {
            if id == self.refuse {
                return Err(crate::providers::ProviderError::unavailable(
                    "test", "bao", "HTTP 503",
                ));
            }
            self.revoked.lock().unwrap().push(id.to_string());
            Ok(())
        }
    }

    /// A create that fails after issuing revokes every lease it issued through the provider
    /// that issued it; a refused revocation is owed (written down for the agent); kept leases
    /// are left alone.
    #[test]
    fn issued_leases_are_revoked_by_their_provider_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::config::Config::default();
        cfg.runtime.state_dir = dir.path().to_path_buf();
        let audit = Audit::new(&crate::config::AuditConfig {
            path: Some(dir.path().join("audit.log")),
            ..Default::default()
        });
        let prov = Arc::new(Revoker {
            revoked: Default::default(),
            refuse: "lease/b",
        });
        let now = unix_now();
        {
            let mut issued = IssuedLeases::new(&cfg, &audit, "c1", 3);
            issued.add(0, "db_a", prov.clone(), lease(Some("lease/a"), now, 300));
            issued.add(2, "db_b", prov.clone(), lease(Some("lease/b"), now, 300));
            assert_eq!(issued.get(0).and_then(|l| l.id.as_deref()), Some("lease/a"));
            assert!(issued.get(1).is_none());
        }
        assert_eq!(*prov.revoked.lock().unwrap(), ["lease/a"]);
        let owed = owed(dir.path());
        assert_eq!(owed.len(), 1);
        assert_eq!(owed[0].1.lease.id.as_deref(), Some("lease/b"));
        assert_eq!(owed[0].1.provider, "bao");
        let log = fs::read_to_string(dir.path().join("audit.log")).unwrap();
        assert_eq!(
            log.matches("\"event\":\"lease_issued\"").count(),
            2,
            "{log}"
        );
        assert_eq!(
            log.matches("\"event\":\"lease_revoked\"").count(),
            1,
            "{log}"
        );

        let mut kept = IssuedLeases::new(&cfg, &audit, "c2", 1);
        kept.add(0, "db_a", prov.clone(), lease(Some("lease/c"), now, 300));
        kept.keep();
        drop(kept);
        assert_eq!(*prov.revoked.lock().unwrap(), ["lease/a"]);
    }
}

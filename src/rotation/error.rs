//! Why a rotation failed, and whether a later try can succeed with nothing changed
//! ([`FailureClass`], shown in the `rotation_failed` audit event and the agent's metrics).

use std::path::PathBuf;

use crate::engine::EngineError;
use crate::providers::ProviderError;
use crate::runtime::inject::InjectError;

/// A secret's `rotation` in dso.yaml that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    #[error("unknown rotation strategy {0:?}")]
    Unknown(String),
    #[error("{0:?} is not a signal name")]
    Signal(String),
}

/// Why a secret was not rotated into a container (or into any container of one fetch).
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("secret {0:?}: {1}")]
    Issue(String, #[source] ProviderError),
    #[error("secret {0:?}: {1}")]
    Key(String, #[source] crate::secrets::KeyError),
    #[error(transparent)]
    Strategy(#[from] StrategyError),
    #[error(transparent)]
    Denied(#[from] crate::policy::Refusal),
    #[error("created under {c}, not this agent's {a}; rotate it with an agent on that dso.yaml", c = .0.display(), a = .1.display())]
    OtherConfig(PathBuf, PathBuf),
    #[error("secret {0:?} is no longer a dynamic secret in {p}", p = .1.display())]
    NotDynamic(String, PathBuf),
    #[error(
        "secret {0:?} is env-injected: a new value reaches the container only with rotation strategy restart; the current one stays until its lease ends"
    )]
    EnvLease(String),
    #[error("secret {0:?} is {1} bytes, more than runtime.max_secret_size ({2} bytes) in {p}", p = .3.display())]
    TooLarge(String, usize, u64, PathBuf),
    #[error("{0} (audit.required: not rotated)")]
    Audit(#[source] crate::audit::AuditError),
    #[error(
        "{0}: its record has no init start time or secrets-mount identity (written by an older dso); not written to, restart the container"
    )]
    OldRecord(String),
    #[error("{0}: pid {1} is no longer the container's init")]
    InitGone(String, i32),
    #[error(transparent)]
    Inject(#[from] InjectError),
    /// The container's state record could not be updated.
    #[error(transparent)]
    Record(std::io::Error),
    #[error("recording the new lease: {0}")]
    Lease(#[source] std::io::Error),
    #[error("sending {0} to pid {1}: {2}")]
    Signal(nix::sys::signal::Signal, i32, #[source] nix::Error),
    #[error(transparent)]
    Restart(#[from] EngineError),
}

/// Whether a failed rotation may succeed on a later try with nothing changed (`transient`:
/// the provider unreachable, a timeout, a 5xx or throttled answer, an I/O error), or needs
/// someone to fix dso.yaml, a grant, a credential or the secret itself (`config`). Both are
/// tried again at the next check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    Transient,
    Config,
}

impl FailureClass {
    pub fn label(self) -> &'static str {
        match self {
            FailureClass::Transient => "transient",
            FailureClass::Config => "config",
        }
    }
}

impl RotationError {
    pub fn class(&self) -> FailureClass {
        use RotationError as E;
        let transient = match self {
            E::Provider(e) | E::Issue(_, e) => e.is_transient(),
            E::Inject(e) => !matches!(e, InjectError::NotTmpfs { .. } | InjectError::Moved { .. }),
            E::Restart(e) => !matches!(e, EngineError::BadId(_)),
            E::Audit(_) | E::InitGone(..) | E::Record(_) | E::Lease(_) | E::Signal(..) => true,
            E::Key(..) | E::Strategy(_) | E::Denied(_) | E::OtherConfig(..) => false,
            E::NotDynamic(..) | E::EnvLease(_) | E::TooLarge(..) | E::OldRecord(_) => false,
        };
        if transient {
            FailureClass::Transient
        } else {
            FailureClass::Config
        }
    }
}

/// Two failures are the same when they say the same (outcomes are compared in tests).
impl PartialEq for RotationError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for RotationError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::http::status_error;
    use crate::providers::local::StoreError;

    fn class(e: impl Into<RotationError>) -> &'static str {
        e.into().class().label()
    }

    /// Issue 12: a failed rotation tells a provider that may answer next time from one that
    /// refuses until someone fixes something.
    #[test]
    fn provider_failures_are_transient_or_config() {
        for (status, want) in [
            (500, "transient"),
            (503, "transient"),
            (429, "transient"),
            (404, "config"),
            (403, "config"),
            (401, "config"),
        ] {
            assert_eq!(
                class(status_error("vault", "v", status, "db", "")),
                want,
                "{status}"
            );
        }
        let (kind, provider) = ("aws", "a".to_string());
        let timeout = ProviderError::Timeout {
            kind,
            provider: provider.clone(),
            seconds: 10,
        };
        assert_eq!(class(timeout), "transient");
        let refused = ProviderError::Unavailable {
            kind,
            provider: provider.clone(),
            detail: "cannot connect".into(),
        };
        assert_eq!(class(refused), "transient");
        assert_eq!(
            class(ProviderError::config(kind, &provider, "no region")),
            "config"
        );
        let tls = ProviderError::Tls {
            kind,
            provider,
            detail: "untrusted certificate".into(),
        };
        assert_eq!(class(tls), "config");
        let local = |source| ProviderError::Local {
            kind: "local",
            provider: "l".into(),
            source,
        };
        let io = std::io::Error::other("EIO");
        let read = StoreError::Io {
            op: "read",
            path: "/s".into(),
            source: io,
        };
        assert_eq!(class(local(read)), "transient");
        assert_eq!(
            class(local(StoreError::Decrypt { path: "/s".into() })),
            "config"
        );
        let issue = RotationError::Issue("db".into(), status_error("vault", "v", 502, "db", ""));
        assert_eq!(class(issue), "transient");
    }

    #[test]
    fn other_failures_are_transient_or_config() {
        assert_eq!(class(RotationError::InitGone("c1".into(), 7)), "transient");
        assert_eq!(
            class(RotationError::Record(std::io::Error::other("ENOSPC"))),
            "transient"
        );
        let api = EngineError::Api("/d.sock".into(), std::io::Error::other("refused"));
        assert_eq!(class(api), "transient");
        assert_eq!(class(EngineError::BadId("../x".into())), "config");
        assert_eq!(class(StrategyError::Unknown("bounce".into())), "config");
        assert_eq!(class(RotationError::OldRecord("c1".into())), "config");
        assert_eq!(
            class(RotationError::TooLarge("db".into(), 9, 8, "/d.yaml".into())),
            "config"
        );
        let moved = InjectError::Moved {
            dir: "/run/secrets".into(),
            dev: 1,
            ino: 2,
            found_dev: 3,
            found_ino: 4,
        };
        assert_eq!(class(moved), "config");
        let write = InjectError::Write {
            dir: "/run/secrets".into(),
            name: "db".into(),
            source: std::io::Error::other("EIO"),
        };
        assert_eq!(class(write), "transient");
    }
}

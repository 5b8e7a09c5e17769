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
    use super::FailureClass::{Config as C, Transient as T};
    use super::*;
    use crate::providers::Reason;
    use crate::providers::http::status_error;
    use crate::providers::local::StoreError;

    /// Issue 12: a failed rotation tells a failure that may pass by itself from one that lasts
    /// until someone fixes something.
    #[test]
    fn failures_are_transient_or_config() {
        let http = |status| RotationError::from(status_error("vault", "v", status, "db", ""));
        let io = || std::io::Error::other("EIO");
        let (kind, provider, path) = ("local", String::from("l"), PathBuf::from("/s"));
        let timeout = ProviderError::new(kind, &provider, Reason::Timeout(1));
        let local = |source| {
            RotationError::from(ProviderError::new(kind, &provider, Reason::Local(source)))
        };
        let (dir, name) = (String::from("/run/secrets"), String::from("db"));
        let moved = InjectError::Moved {
            dir: dir.clone(),
            dev: 1,
            ino: 2,
            found_dev: 3,
            found_ino: 4,
        };
        let cases: Vec<(RotationError, FailureClass)> = vec![
            (http(500), T),
            (http(503), T),
            (http(429), T),
            (http(404), C),
            (http(403), C),
            (http(401), C),
            (timeout.into(), T),
            (ProviderError::config(kind, "l", "no region").into(), C),
            (
                local(StoreError::Io {
                    op: "read",
                    path: path.clone(),
                    source: io(),
                }),
                T,
            ),
            (local(StoreError::Decrypt { path: path.clone() }), C),
            (
                RotationError::Issue(name.clone(), status_error("vault", "v", 502, "db", "")),
                T,
            ),
            (RotationError::InitGone("c1".into(), 7), T),
            (RotationError::Record(io()), T),
            (EngineError::Api(path.clone(), io()).into(), T),
            (
                InjectError::Write {
                    dir,
                    name: name.clone(),
                    source: io(),
                }
                .into(),
                T,
            ),
            (EngineError::BadId("../x".into()).into(), C),
            (StrategyError::Unknown("bounce".into()).into(), C),
            (RotationError::OldRecord("c1".into()), C),
            (RotationError::TooLarge(name, 9, 8, path), C),
            (moved.into(), C),
        ];
        for (e, want) in cases {
            assert_eq!(e.class(), want, "{e}");
        }
    }
}

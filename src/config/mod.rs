//! dso.yaml: the typed configuration, how it is found (`--dso-config`, `DSO_CONFIG`, default),
//! loaded, checked against the JSON Schema in `runtime-config/dso.schema.json`, and validated.

pub(crate) mod json_schema;
mod provider;
pub mod reference;
mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

pub mod policy;
pub use policy::{AllowRule, PolicyConfig};
pub use provider::*;

pub use json_schema::generate as schema_json;
pub use schema::{Document, SCHEMA_JSON, validate_document};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/dso/dso.yaml";
pub const CONFIG_ENV: &str = "DSO_CONFIG";
/// The provider name given to the single-provider shorthand `provider: {type: ...}`.
pub const SHORTHAND_PROVIDER: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: YAML does not parse: {message}")]
    Yaml {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// Schema or semantic errors, each already formatted as `line N: key.path: message`.
    #[error("{path}: {}", .errors.join("; "))]
    Invalid { path: PathBuf, errors: Vec<String> },
    /// Owned by another user, or writable by group or others (see [`crate::trust`]).
    #[error(transparent)]
    Untrusted(#[from] crate::trust::Untrusted),
}

impl ConfigError {
    /// The individual messages (one per problem), for `dso config validate`.
    pub fn messages(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { errors, .. } => errors.clone(),
            other => vec![other.to_string()],
        }
    }
}

/// Picks the config path: `--dso-config` (given), else `DSO_CONFIG`, else the default.
pub fn config_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os(CONFIG_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_CONFIG_PATH),
    }
}

/// # dso.yaml
/// Configuration of dso, the secrets-injecting OCI runtime (default /etc/dso/dso.yaml; overridden
/// by --dso-config, then DSO_CONFIG). Secret values never appear in this file: it names where they
/// live and how they are delivered.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// # Providers
    /// The secret backends, by name. A secret or an inline reference (dso://<provider>/<path>)
    /// names one of them. Names are letters, digits, '_', '.' and '-'.
    #[schemars(with = "BTreeMap<String, json_schema::ProviderSchema>")]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// # Provider (shorthand)
    /// Single-provider shorthand: one provider, named "default". Cannot be combined with providers.
    #[schemars(with = "Option<json_schema::ProviderSchema>")]
    provider: Option<ProviderConfig>,
    /// # Secrets
    /// Named secrets that containers reference as dso://<name> (environment) or dsofile://<name>
    /// (file under runtime.secrets_dir). Names are letters, digits, '_', '.' and '-'.
    pub secrets: BTreeMap<String, SecretConfig>,
    /// # Watch
    /// How the agent looks for new versions of the secrets of running containers.
    pub watch: WatchConfig,
    /// # Audit log
    /// Where audit events (JSON lines, hash-chained, never a secret value) are written.
    pub audit: AuditConfig,
    /// # Agent
    /// The companion agent (dso agent): control socket, rotation webhooks and metrics.
    pub agent: AgentConfig,
    /// # Runtime
    /// How dso-runc delivers secrets into containers.
    pub runtime: RuntimeConfig,
    /// # Policy
    /// Who may have which secret. Each secret's allow rules decide for it; this says what happens
    /// to a secret without rules and to inline references. See docs/policy.md.
    pub policy: PolicyConfig,
    /// # Notifications
    /// Where the agent POSTs chosen audit events (JSON, names and statuses, never a value), signed
    /// like the inbound webhook: X-DSO-Timestamp and X-DSO-Signature: sha256=<hex HMAC-SHA256 of
    /// "<timestamp>.<body>">. Retried with backoff on connection failures, 429 and 5xx; an event
    /// that cannot be delivered (or is dropped from a full queue) is audited as
    /// notification_failed.
    pub notifications: Vec<NotificationConfig>,
    /// Where this config was read from (for messages).
    #[serde(skip)]
    pub source: PathBuf,
    /// SHA-256 (hex) of the config text: an agent serves values only to a shim with the same.
    #[serde(skip)]
    pub digest: String,
}

/// # Secret
/// Where a secret lives and how its file is delivered.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "secret")]
pub struct SecretConfig {
    /// # Provider
    /// Name of the provider (under providers, or "default" for the shorthand). May be omitted when
    /// exactly one provider is configured.
    #[schemars(length(min = 1))]
    pub provider: Option<String>,
    /// # Path
    /// Path or name of the secret in the provider. Default: the secret's name.
    #[schemars(length(min = 1))]
    pub path: Option<String>,
    /// # JSON key
    /// Field of a JSON value to deliver instead of the whole value.
    #[schemars(length(min = 1))]
    pub key: Option<String>,
    /// # Version
    /// A pinned version, where the provider has versions (Vault KV v2 version number, AWS version
    /// id or stage, Azure version). Default: the latest.
    #[serde(deserialize_with = "de_opt_version")]
    #[schemars(extend("type" = ["string", "integer"], "minLength" = 1, "minimum" = 0))]
    pub version: Option<String>,
    /// # Owner uid
    /// Numeric owner of the injected file. Default: the container process's user.
    #[schemars(range(max = 4294967295u32))]
    pub uid: Option<u32>,
    /// # Owner gid
    /// Numeric group of the injected file. Default: the container process's group.
    #[schemars(range(max = 4294967295u32))]
    pub gid: Option<u32>,
    /// # File mode
    /// Mode of the injected file, e.g. "0400". Default: runtime.file_mode.
    #[serde(deserialize_with = "de_mode")]
    #[schemars(with = "Option<json_schema::ModeValue>")]
    pub mode: Option<u32>,
    /// # Engine
    /// What kind of Vault secret this is: kv (a stored value, the default), database (a dynamic
    /// database credential issued per container from <mount>/creds/<role>: JSON {"username",
    /// "password"}; renewed by the agent, revoked when the container is removed) or pki (a
    /// certificate issued per container from <mount>/issue/<role>: PEM certificate, issuing chain
    /// and private key; re-issued by the agent at two thirds of its TTL). Vault providers only.
    pub engine: Engine,
    /// # Engine role
    /// The database or pki engine's role to issue from (required with engine database or pki).
    #[schemars(length(min = 1))]
    pub role: Option<String>,
    /// # Engine mount
    /// Where the database or pki engine is mounted. Default: database, or pki.
    #[schemars(length(min = 1))]
    pub mount: Option<String>,
    /// # Certificate common name
    /// engine pki: the certificate's common name (required).
    #[schemars(length(min = 1))]
    pub common_name: Option<String>,
    /// # Certificate TTL
    /// engine pki: the certificate's lifetime, e.g. 1h (default: the role's). The agent issues a
    /// new one at two thirds of it.
    #[serde(deserialize_with = "de_opt_duration")]
    #[schemars(with = "Option<json_schema::DurationValue>")]
    pub ttl: Option<Duration>,
    /// # DNS subject alternative names
    /// engine pki: further DNS names for the certificate.
    #[schemars(inner(length(min = 1)))]
    pub alt_names: Vec<String>,
    /// # IP subject alternative names
    /// engine pki: IP addresses for the certificate.
    #[schemars(inner(length(min = 1)))]
    pub ip_sans: Vec<String>,
    /// # Rotation
    /// What happens to running containers when the secret changes.
    pub rotation: Option<RotationConfig>,
    /// # Allow
    /// Who may have this secret (see allow rules). Absent: policy.default decides (deny unless set
    /// to allow).
    #[schemars(with = "Option<json_schema::AllowList>")]
    pub allow: Option<Vec<AllowRule>>,
    /// # Allowed keys
    /// JSON keys a reference may pick with #key besides key; a reference picking any other key is
    /// refused.
    #[schemars(inner(length(min = 1)))]
    pub keys: Option<Vec<String>>,
}

/// What kind of secret a Vault secret is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(inline)]
pub enum Engine {
    // (Plain comments: doc comments on variants would make the schema a oneOf.)
    // A stored value (KV v1/v2).
    #[default]
    Kv,
    // A database credential issued per container (`<mount>/creds/<role>`), under a lease.
    Database,
    // A certificate issued per container (`<mount>/issue/<role>`).
    Pki,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Kv => "kv",
            Engine::Database => "database",
            Engine::Pki => "pki",
        }
    }

    /// True for engines that issue a value per container.
    pub fn is_dynamic(self) -> bool {
        self != Engine::Kv
    }
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(inline)]
pub struct RotationConfig {
    /// # Rotation strategy
    /// none (files are rewritten in place), signal (rewrite, then signal the container's init) or
    /// restart (restart the container; the only way to change environment-injected values). Default
    /// none.
    #[schemars(extend("enum" = ["none", "signal", "restart"]), default = "json_schema::none")]
    pub strategy: Option<String>,
    /// # Signal
    /// Signal sent with strategy signal, e.g. SIGHUP or HUP. Default SIGHUP.
    #[schemars(
        regex(
            pattern = r"^(SIG)?(HUP|INT|QUIT|ILL|TRAP|ABRT|BUS|FPE|KILL|USR1|SEGV|USR2|PIPE|ALRM|TERM|STKFLT|CHLD|CONT|STOP|TSTP|TTIN|TTOU|URG|XCPU|XFSZ|VTALRM|PROF|WINCH|IO|PWR|SYS)$"
        ),
        default = "json_schema::sighup"
    )]
    pub signal: Option<String>,
    /// # Check interval
    /// How often to check this secret for a new version, overriding watch.interval.
    #[serde(deserialize_with = "de_opt_duration")]
    #[schemars(with = "Option<json_schema::DurationValue>")]
    pub interval: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(inline)]
pub struct WatchConfig {
    /// # Poll interval
    /// How often the agent polls providers for new versions. Default 30s.
    #[serde(deserialize_with = "de_duration")]
    #[schemars(with = "json_schema::DurationValue", default = "json_schema::s30")]
    pub interval: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(inline)]
pub struct AuditConfig {
    /// # Audit log file
    /// File the audit events are appended to, one JSON object per line, each carrying a sequence
    /// number and the SHA-256 of the line before it (a hash chain, checked by `dso audit verify`).
    /// Default: /var/log/dso/audit.log (mode 0600, directory 0700). Never stdout or stderr: those
    /// of dso-runc are the container's.
    #[schemars(with = "Option<json_schema::AbsPath>")]
    pub path: Option<PathBuf>,
    /// # Also to syslog
    /// Also send every event to the host's syslog socket /dev/log (journald or rsyslog), facility
    /// authpriv, tag dso. The file keeps every event either way; a host without the socket is
    /// reported once.
    pub syslog: bool,
    /// # Fail closed when auditing fails
    /// When an event cannot be written (unwritable path, full disk), the operation fails: a
    /// container create is refused and nothing of it is left, a rotation does not apply the new
    /// value. For PCI-DSS 10.x (audit trails that cannot be silently bypassed). Default false: the
    /// failure is reported (runc's log, the agent's stderr) and the operation goes on.
    pub required: bool,
}

/// One `notifications:` entry: where the agent POSTs which events.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(inline)]
pub struct NotificationConfig {
    /// # Receiver URL
    /// https URL to POST to; plain http only to a loopback host (127.0.0.0/8, ::1, localhost).
    #[schemars(with = "json_schema::UrlValue")]
    pub url: String,
    /// # Signing key file
    /// File holding the HMAC-SHA256 key the requests are signed with (share it with the receiver).
    #[schemars(with = "json_schema::AbsPath")]
    pub secret_file: PathBuf,
    /// # Events
    /// Which events are sent. Default: rotation_completed, rotation_failed, lease_failed,
    /// access_denied, auth_failed.
    #[serde(default)]
    #[schemars(extend("items" = {"enum": ["rotation_completed", "rotation_failed", "rotation_started", "lease_failed", "access_denied", "auth_failed", "secret_fetched", "secret_injected", "injection_failed", "config_rejected", "webhook_rejected"]}))]
    pub events: Vec<String>,
    /// # Attempts
    /// Attempts per event, the first included.
    #[serde(default = "default_notify_attempts")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: u32,
    /// # Delivery deadline
    /// Time for one event, every attempt included (30s, 2m, ...).
    #[serde(default = "default_notify_timeout", deserialize_with = "de_duration")]
    #[schemars(with = "json_schema::DurationValue", default = "json_schema::s30")]
    pub timeout: Duration,
}

fn default_notify_attempts() -> u32 {
    8
}
fn default_notify_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(inline)]
pub struct AgentConfig {
    /// # Control socket
    /// Unix socket the agent listens on and dso-runc connects to. Default
    /// <runtime.state_dir>/dso.sock, i.e. /run/dso/dso.sock.
    #[schemars(with = "Option<json_schema::AbsPath>")]
    pub socket: Option<PathBuf>,
    /// # Socket group
    /// Group (name or number) given access to the control socket; default: root only.
    #[schemars(length(min = 1))]
    pub group: Option<String>,
    /// # Webhook
    /// HTTP endpoint (POST /v1/webhook) that refreshes secrets when a provider reports a change.
    /// Requests are signed with HMAC-SHA256 over timestamp and body.
    pub webhook: Option<WebhookConfig>,
    /// # Metrics
    /// Prometheus metrics endpoint (GET /metrics).
    pub metrics: Option<MetricsConfig>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(inline)]
pub struct WebhookConfig {
    /// # Webhook listen address
    /// Address and port to listen on, e.g. 127.0.0.1:8472 or [::1]:8472.
    #[schemars(with = "json_schema::Listen")]
    pub listen: String,
    /// # Webhook key file
    /// File holding the shared HMAC-SHA256 key that signs webhook requests: at least 32 bytes
    /// (trailing whitespace ignored), readable by its owner only (0600 or 0400); the agent refuses
    /// to start otherwise. E.g. openssl rand -hex 32.
    #[schemars(with = "json_schema::AbsPath")]
    pub secret_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(inline)]
pub struct MetricsConfig {
    /// # Metrics listen address
    /// Address and port to listen on, e.g. 127.0.0.1:9477.
    #[schemars(with = "json_schema::Listen")]
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(inline)]
pub struct RuntimeConfig {
    /// # Secrets directory
    /// Where the secrets tmpfs is mounted inside the container; file references point here. Default
    /// /run/secrets.
    #[schemars(with = "json_schema::AbsPath")]
    pub secrets_dir: String,
    /// # Secrets tmpfs size
    /// Size cap of the secrets tmpfs: bytes, or a number with k, m or g (binary multiples), e.g.
    /// 1m, 512k. Default 1m.
    #[serde(deserialize_with = "de_size")]
    #[schemars(with = "json_schema::SizeValue", default = "json_schema::m1")]
    pub tmpfs_size: u64,
    /// # Largest secret
    /// Largest value one secret may have, checked when it is fetched, at create and on rotation: a
    /// larger one fails the create (nothing is created) or the rotation (the old file stays).
    /// Bytes, or a number with k, m or g. Default 1m.
    #[serde(deserialize_with = "de_size")]
    #[schemars(with = "json_schema::SizeValue", default = "json_schema::m1")]
    pub max_secret_size: u64,
    /// # Most references per container
    /// Most secret references one container may have (each env, file or annotation reference
    /// counts): more fail the create before anything is fetched or created. Default 256.
    #[schemars(range(min = 1))]
    pub max_references: usize,
    /// # Most bytes per container
    /// Most bytes of values one container's create may gather in all: more fail the create
    /// (nothing is created). Bytes, or a number with k, m or g. Default 16m.
    #[serde(deserialize_with = "de_size")]
    #[schemars(with = "json_schema::SizeValue", default = "json_schema::m16")]
    pub max_total_secret_size: u64,
    /// # Fetch timeout
    /// Deadline for fetching all of a container's secrets before the create fails. Default 10s.
    #[serde(deserialize_with = "de_duration")]
    #[schemars(with = "json_schema::DurationValue", default = "json_schema::s10")]
    pub fetch_timeout: Duration,
    /// # Default file mode
    /// Mode of injected secret files unless a secret sets its own. Default "0400".
    #[serde(deserialize_with = "de_mode_required")]
    #[schemars(with = "json_schema::ModeValue", default = "json_schema::mode0400")]
    pub file_mode: u32,
    /// # dso-init path
    /// Path of the dso-init binary on the host, bind-mounted into containers that use environment
    /// injection. Default: next to the dso-runc executable.
    #[schemars(with = "Option<json_schema::AbsPath>")]
    pub init_path: Option<PathBuf>,
    /// # State directory
    /// Host directory for dso's per-container state (references only, never values), readable by
    /// root only. Default /run/dso.
    #[schemars(with = "json_schema::AbsPath")]
    pub state_dir: PathBuf,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            secrets_dir: "/run/secrets".into(),
            tmpfs_size: 1024 * 1024,
            max_secret_size: 1024 * 1024,
            max_references: 256,
            max_total_secret_size: 16 * 1024 * 1024,
            fetch_timeout: Duration::from_secs(10),
            file_mode: 0o400,
            init_path: None,
            state_dir: PathBuf::from("/run/dso"),
        }
    }
}

/// Parses `30s`, `5m`, `1h`, `250ms`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// Parses `1m`, `512k`, `2g` (binary multiples) or a bare number of bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(u64),
    Str(String),
}

/// Durations and sizes must be above zero; the schema checked their form, so a string that does
/// not parse overflowed.
fn positive<T: PartialEq + Default, E: serde::de::Error>(v: Option<T>) -> Result<T, E> {
    match v {
        Some(v) if v == T::default() => Err(E::custom("must be greater than zero")),
        Some(v) => Ok(v),
        None => Err(E::custom("is too large")),
    }
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    positive(match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Some(Duration::from_secs(n)),
        NumOrStr::Str(s) => parse_duration(&s),
    })
}

fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    positive(match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Some(n),
        NumOrStr::Str(s) => parse_size(&s),
    })
}

/// How a mode error ends (`schema` words it otherwise when the YAML wrote the integer in
/// another base).
const NOT_OCTAL: &str = " is not an octal file mode (digits 0-7, e.g. \"0400\")";

/// Modes are written as octal strings (`"0400"`) or integers taken as octal digits (`400`).
fn de_mode_required<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let digits = match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => n.to_string(),
        NumOrStr::Str(s) => s,
    };
    u32::from_str_radix(digits.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| serde::de::Error::custom(format!("{digits}{NOT_OCTAL}")))
}

fn de_opt_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => n.to_string(),
        NumOrStr::Str(s) => s,
    }))
}

fn de_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    de_mode_required(d).map(Some)
}

impl Config {
    /// Reads, schema-checks and validates the config at `path`.
    /// Whoever can write the file controls dso, so it must be owned by root (or this user) and
    /// not writable by group or others ([`crate::trust`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, None)
    }

    /// [`Config::load`] for a create that names only the `secrets:` entries in `wanted`: where
    /// the text was validated before, only those entries are built (the others are still read
    /// and must still be valid JSON), so its cost no longer grows with the size of dso.yaml
    /// (BENCHMARKS.md). The config holds no other `secrets:` entry then; everything else is whole.
    pub fn load_only(path: &Path, wanted: &BTreeSet<String>) -> Result<Config, ConfigError> {
        Self::load_with(path, Some(wanted))
    }

    fn load_with(path: &Path, wanted: Option<&BTreeSet<String>>) -> Result<Config, ConfigError> {
        use std::io::Read;
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        crate::trust::check(&meta, path, "config", crate::trust::Use::Trusted)?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(read_err)?;
        Self::parse(&text, path, true, wanted)
    }

    /// Parses and validates config text; `path` is used in messages only.
    pub fn from_str_at(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Self::parse(text, path, false, None)
    }

    /// `remember`: look the text up in, and add it to, the cache of configs this build has
    /// validated (see [`validated_marker`]), which spares a create the schema compilation and,
    /// where the document is cached with the marker, the YAML parse. `wanted`: see
    /// [`Config::load_only`].
    fn parse(
        text: &str,
        path: &Path,
        remember: bool,
        wanted: Option<&BTreeSet<String>>,
    ) -> Result<Config, ConfigError> {
        let digest = digest_of(text);
        let marker = remember.then(|| validated_marker(&digest));
        let invalid = |errors| ConfigError::Invalid {
            path: path.to_path_buf(),
            errors,
        };
        let known = marker
            .as_deref()
            .and_then(|m| Some((m, crate::keyring::read_sealed(m, 2)?)));
        let mut cfg = if let Some((marker, state)) = known {
            // Validated before: the document as cached, else the values alone, without the
            // lines messages would need.
            match cached_document(marker, &state).and_then(|j| from_cached(&j, wanted)) {
                Some(cfg) => cfg,
                None => Config::deserialize(&yaml_document(text, path)?)
                    .map_err(|e| invalid(vec![e.to_string()]))?,
            }
        } else {
            let doc = parse_yaml(text, path)?;
            let cfg = validate_document(&doc).map_err(invalid)?;
            if let Some(m) = &marker {
                remember_valid(m, &doc.value);
            }
            cfg
        };
        cfg.source = path.to_path_buf();
        cfg.digest = digest;
        if let Some(p) = cfg.provider.take() {
            cfg.providers.insert(SHORTHAND_PROVIDER.to_string(), p);
        }
        Ok(cfg)
    }

    /// The provider name a secret uses: its `provider:`, or the only provider there is.
    pub fn provider_of<'a>(&'a self, secret: &'a SecretConfig) -> Option<&'a str> {
        match &secret.provider {
            Some(p) => Some(p.as_str()),
            None if self.providers.len() == 1 => self.providers.keys().next().map(String::as_str),
            None => None,
        }
    }
}

/// SHA-256 (hex) of config text: [`Config::digest`].
pub fn digest_of(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The YAML text parsed, with the line of each key, before any check. Empty text, or comments
/// only, is an empty mapping.
pub fn parse_yaml(text: &str, path: &Path) -> Result<Document, ConfigError> {
    Document::parse(text).map_err(|e| yaml_error(e, path))
}

/// The YAML text as a JSON document, before any check and without lines (see [`parse_yaml`]).
pub(crate) fn yaml_document(text: &str, path: &Path) -> Result<serde_json::Value, ConfigError> {
    Document::parse_values(text).map_err(|e| yaml_error(e, path))
}

fn yaml_error(e: schema::YamlError, path: &Path) -> ConfigError {
    ConfigError::Yaml {
        path: path.to_path_buf(),
        line: e.line,
        message: e.message,
    }
}

/// How long a config stays known-good in the keyring after it passed validation.
const VALIDATED_MARKER_TTL: Duration = Duration::from_secs(24 * 3600);

/// A validated document is cached as JSON in sealed keyring entries of at most this size (a
/// "user" key holds up to 32,767 bytes, with the seal's 28), at most [`MAX_CACHE_CHUNKS`] of
/// them (2 MiB).
const CACHE_CHUNK: usize = 32 * 1024 - 64;
const MAX_CACHE_CHUNKS: usize = 64;

/// Marks `marker`'s text as validated: the marker's payload is `c` and the number of entries
/// `marker:0`, `marker:1`, … that hold `doc` as JSON, or `ok` where they could not be stored
/// (a non-root uid's keyring quota is 20,000 bytes): a create then parses the YAML again.
/// All are sealed ([`crate::keyring::store_sealed`]): another uid-0 process (a container whose
/// seccomp allows `keyctl`) can neither read the document nor plant a marker or a document.
fn remember_valid(marker: &str, doc: &serde_json::Value) {
    let json = serde_json::to_vec(doc).unwrap_or_default();
    let chunks: Vec<&[u8]> = json.chunks(CACHE_CHUNK).collect();
    let stored = |i: usize, c: &[u8]| {
        crate::keyring::store_sealed(&format!("{marker}:{i}"), c, VALIDATED_MARKER_TTL)
    };
    let payload = match u8::try_from(chunks.len()) {
        Ok(n)
            if (1..=MAX_CACHE_CHUNKS).contains(&chunks.len())
                && chunks.iter().enumerate().all(|(i, c)| stored(i, c)) =>
        {
            [b'c', n]
        }
        _ => {
            (0..chunks.len()).for_each(|i| crate::keyring::forget(&format!("{marker}:{i}")));
            *b"ok"
        }
    };
    crate::keyring::store_sealed(marker, &payload, VALIDATED_MARKER_TTL);
}

/// A cached document ([`cached_document`]) as a config, with only the `secrets:` entries in
/// `wanted` (all where `None`). `None` where it cannot be read: the YAML is parsed instead.
fn from_cached(json: &[u8], wanted: Option<&BTreeSet<String>>) -> Option<Config> {
    use serde_json::value::RawValue;
    let Some(wanted) = wanted else {
        return serde_json::from_slice(json).ok();
    };
    // Keys are dso.yaml's own and secret names (letters, digits, '_', '.', '-'): a key with an
    // escape cannot be borrowed, and such a document is simply not used.
    let mut top: BTreeMap<&str, &RawValue> = serde_json::from_slice(json).ok()?;
    let secrets = top.remove("secrets");
    let mut cfg: Config = serde_json::from_str(&serde_json::to_string(&top).ok()?).ok()?;
    if let Some(secrets) = secrets {
        use serde::de::DeserializeSeed;
        let mut de = serde_json::Deserializer::from_str(secrets.get());
        cfg.secrets = Wanted(wanted).deserialize(&mut de).ok()?;
    }
    Some(cfg)
}

/// A `secrets:` mapping with only the entries named in the set; the others are skipped unread.
struct Wanted<'a>(&'a BTreeSet<String>);

impl<'de> serde::de::DeserializeSeed<'de> for Wanted<'_> {
    type Value = BTreeMap<String, SecretConfig>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Wanted<'_> {
    type Value = BTreeMap<String, SecretConfig>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a mapping of secrets")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut secrets = BTreeMap::new();
        while let Some(name) = m.next_key::<String>()? {
            if self.0.contains(&name) {
                secrets.insert(name, m.next_value()?);
            } else {
                m.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(secrets)
    }
}

/// The document cached with `marker` (see [`remember_valid`]), if all of it is still there.
fn cached_document(marker: &str, state: &[u8]) -> Option<Vec<u8>> {
    let &[b'c', n] = state else { return None };
    let mut json = Vec::new();
    for i in 0..usize::from(n).min(MAX_CACHE_CHUNKS) {
        json.extend_from_slice(&crate::keyring::read_sealed(
            &format!("{marker}:{i}"),
            CACHE_CHUNK,
        )?);
    }
    Some(json)
}

/// The keyring description that says "this exact text passed this build's schema and semantic
/// checks": a SHA-256 over dso's version, this build ([`build_identity`]), the schema and the
/// text's own SHA-256 ([`digest_of`], which the config keeps anyway: the text is hashed once).
/// Validation is a pure function of those, so a marker is as good as running it again; any
/// change to the text, or another build of dso, is a new digest and is validated afresh.
/// The document is cached beside it ([`remember_valid`]): the uid's own keyring holds what
/// its dso.yaml (readable by that uid) says, and nothing more.
/// Only the uid's own processes (root, for dso-runc) can add keys to its user keyring.
/// `text_digest`: the text's [`digest_of`].
fn validated_marker(text_digest: &str) -> String {
    marker_for_build(text_digest, &build_identity())
}

/// This very build of dso: the running executable's device, inode, size and mtime (one stat).
/// A version string would not do: a build with new validation rules keeps the version, and
/// must not trust what an older build validated.
fn build_identity() -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata("/proc/self/exe") {
        Ok(m) => format!(
            "{}:{}:{}:{}.{}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec()
        ),
        // Unknown build: a marker no other process can share.
        Err(_) => format!("unknown:{}", std::process::id()),
    }
}

/// The marker of the text whose [`digest_of`] is `text_digest`, for `build`.
fn marker_for_build(text_digest: &str, build: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        "dso config validated".as_bytes(),
        env!("CARGO_PKG_VERSION").as_bytes(),
        build.as_bytes(),
        schema::SCHEMA_JSON.as_bytes(),
        text_digest.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let digest = hex::encode(h.finalize());
    format!("dso:config-ok:{digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validated_marker_depends_on_the_build() {
        // Same version, same text, another build (a rebuilt binary): another marker, so a
        // config validated by an older build is validated again.
        let text = "providers: {}\n";
        assert_ne!(
            marker_for_build(text, "2049:1234:15000000:1700000000.1"),
            marker_for_build(text, "2049:1235:15000000:1700000060.7")
        );
        assert_eq!(
            validated_marker(&digest_of(text)),
            validated_marker(&digest_of(text))
        );
        assert!(build_identity().contains(':'));
    }

    #[test]
    fn validated_marker_depends_on_every_byte_of_the_text() {
        let a = validated_marker(&digest_of("providers: {}\n"));
        assert_eq!(a, validated_marker(&digest_of("providers: {}\n")));
        assert_ne!(a, validated_marker(&digest_of("providers: {} \n")));
        assert!(a.starts_with("dso:config-ok:") && a.len() == "dso:config-ok:".len() + 64);
    }

    #[test]
    fn a_cached_config_is_still_parsed_and_a_changed_one_validated_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dso.yaml");
        let good = "providers:\n  l: { type: local, path: /s, key_file: /k }\nsecrets:\n  a: {}\n";
        std::fs::write(&path, good).unwrap();
        let first = Config::load(&path).unwrap();
        assert!(first.secrets.contains_key("a"));
        // Second load: from the document cached with the marker where the keyring takes it
        // (not in every sandbox); the same config either way.
        let marker = validated_marker(&digest_of(good));
        match crate::keyring::read_sealed(&marker, 2) {
            Some(state) => {
                assert_eq!(&state[..], b"c\x01", "cached in one entry");
                let json = cached_document(&marker, &state).expect("cached");
                let from_cache: Config = serde_json::from_slice(&json).unwrap();
                assert!(
                    from_cache.providers.contains_key("l") && from_cache.secrets.contains_key("a")
                );
            }
            None => crate::test_support::skipped("kernel keyring not available here"),
        }
        let second = Config::load(&path).unwrap();
        assert_eq!(format!("{second:?}"), format!("{first:?}"));
        // One byte more: a new digest, validated again, and refused.
        std::fs::write(&path, good.replace("local", "lcoal")).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("not one of"), "{err}");
        crate::keyring::forget(&marker);
        crate::keyring::forget(&format!("{marker}:0"));
    }

    #[test]
    fn a_create_builds_only_the_secrets_it_names_from_a_cached_document() {
        let text = "provider: { type: local, path: /s, key_file: /k }\nsecrets:\n  a: { path: x, mode: \"0440\" }\n  b: { path: y }\n  c: {}\nruntime: { max_references: 7 }\n";
        let doc = parse_yaml(text, Path::new("dso.yaml")).unwrap();
        let json = serde_json::to_vec(&doc.value).unwrap();
        let whole = from_cached(&json, None).unwrap();
        assert_eq!(whole.secrets.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        let wanted = BTreeSet::from(["a".to_string(), "nope".to_string()]);
        let only = from_cached(&json, Some(&wanted)).unwrap();
        assert_eq!(only.secrets.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            format!("{:?}", only.secrets["a"]),
            format!("{:?}", whole.secrets["a"])
        );
        assert_eq!(only.secrets["a"].mode, Some(0o440));
        assert_eq!(only.runtime.max_references, 7);
        assert_eq!(
            format!("{:?}", only.provider),
            format!("{:?}", whole.provider)
        );
        // A document this build cannot read (a field it does not know in secret b): no config
        // where b is built, and the YAML is parsed instead; a create that does not name b
        // skips it unread. (Cached documents are this very build's: see validated_marker.)
        let odd = String::from_utf8(json)
            .unwrap()
            .replace("\"path\":\"y\"", "\"pth\":1");
        assert!(from_cached(odd.as_bytes(), None).is_none());
        assert!(from_cached(odd.as_bytes(), Some(&wanted)).is_some());
        assert!(from_cached(b"[]", Some(&wanted)).is_none());
    }

    #[test]
    fn a_large_document_is_cached_in_several_entries() {
        let mut text = "provider: { type: local, path: /s, key_file: /k }\nsecrets:\n".to_string();
        for i in 0..2000 {
            text.push_str(&format!("  secret{i}: {{ path: stored/secret{i} }}\n"));
        }
        let doc = parse_yaml(&text, Path::new("t.yaml")).unwrap();
        let marker = marker_for_build(&text, "test");
        remember_valid(&marker, &doc.value);
        if let Some(state) = crate::keyring::read_sealed(&marker, 2) {
            let json = cached_document(&marker, &state).expect("every entry");
            assert!(json.len() > 2 * CACHE_CHUNK && state[1] == 3);
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(&json).unwrap(),
                doc.value
            );
            crate::keyring::forget(&format!("{marker}:1"));
            assert!(
                cached_document(&marker, &state).is_none(),
                "an entry gone: parsed again"
            );
        } else {
            crate::test_support::skipped("kernel keyring not available here");
        }
        for k in [marker.clone(), format!("{marker}:0"), format!("{marker}:2")] {
            crate::keyring::forget(&k);
        }
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_size("1m"), Some(1 << 20));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1t"), None);
    }

    #[test]
    fn shorthand_provider_and_defaults() {
        let cfg = Config::from_str_at(
            "provider: { type: local, path: /tmp/s, key_file: /tmp/k }\nsecrets:\n  a: {}\n",
            Path::new("t.yaml"),
        )
        .unwrap();
        assert!(cfg.providers.contains_key(SHORTHAND_PROVIDER));
        assert_eq!(cfg.provider_of(&cfg.secrets["a"]), Some(SHORTHAND_PROVIDER));
        assert_eq!(cfg.runtime.secrets_dir, "/run/secrets");
        assert_eq!(cfg.runtime.file_mode, 0o400);
    }
}

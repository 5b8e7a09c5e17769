//! dso.yaml: the typed configuration, how it is found (`--dso-config`, `DSO_CONFIG`, default),
//! loaded, checked against the JSON Schema in `runtime-config/dso.schema.json`, and validated.

mod provider;
pub mod reference;
mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::policy::{AllowRule, PolicyConfig};
pub use provider::*;

pub use schema::{SCHEMA_JSON, validate_document};

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Single-provider shorthand; folded into `providers` under [`SHORTHAND_PROVIDER`].
    #[serde(default)]
    provider: Option<ProviderConfig>,
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretConfig>,
    #[serde(default)]
    pub watch: WatchConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Who may have which secret (see [`crate::policy`]).
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Signed event POSTs sent by the agent.
    #[serde(default)]
    pub notifications: Vec<NotificationConfig>,
    /// Where this config was read from (for messages).
    #[serde(skip)]
    pub source: PathBuf,
    /// SHA-256 (hex) of the config text: an agent serves values only to a shim with the same.
    #[serde(skip)]
    pub digest: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretConfig {
    /// Provider name; may be omitted when exactly one provider is configured.
    #[serde(default)]
    pub provider: Option<String>,
    /// Path in the provider; defaults to the secret's name.
    #[serde(default)]
    pub path: Option<String>,
    /// A field of a JSON value.
    #[serde(default)]
    pub key: Option<String>,
    /// A pinned version, where the provider has versions (YAML may give a number: `version: 3`).
    #[serde(default, deserialize_with = "de_opt_version")]
    pub version: Option<String>,
    /// Owner and mode of the injected file (default: the container's user, 0400).
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
    #[serde(default, deserialize_with = "de_mode")]
    pub mode: Option<u32>,
    #[serde(default)]
    pub rotation: Option<RotationConfig>,
    /// Who may have it: any rule matches = granted. Absent: `policy.default`.
    #[serde(default)]
    pub allow: Option<Vec<AllowRule>>,
    /// JSON keys a reference may pick with `#key` besides `key`.
    #[serde(default)]
    pub keys: Option<Vec<String>>,
    /// Vault: `kv` (default), `database` or `pki` (values issued per container, with leases).
    #[serde(default)]
    pub engine: Engine,
    /// The database or pki role to issue from.
    #[serde(default)]
    pub role: Option<String>,
    /// Where the engine is mounted (default: `database`, `pki`).
    #[serde(default)]
    pub mount: Option<String>,
    /// pki: the certificate's common name, lifetime and further names.
    #[serde(default)]
    pub common_name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub ttl: Option<Duration>,
    #[serde(default)]
    pub alt_names: Vec<String>,
    #[serde(default)]
    pub ip_sans: Vec<String>,
}

/// What kind of secret a Vault secret is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// A stored value (KV v1/v2).
    #[default]
    Kv,
    /// A database credential issued per container (`<mount>/creds/<role>`), under a lease.
    Database,
    /// A certificate issued per container (`<mount>/issue/<role>`).
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

impl SecretConfig {
    /// The dynamic-secret request this secret stands for (`None` for a kv secret).
    pub fn dynamic_request(&self) -> Option<crate::providers::DynamicRequest> {
        if !self.engine.is_dynamic() {
            return None;
        }
        Some(crate::providers::DynamicRequest {
            engine: self.engine,
            mount: self
                .mount
                .clone()
                .unwrap_or_else(|| self.engine.as_str().to_string()),
            role: self.role.clone().unwrap_or_default(),
            common_name: self.common_name.clone(),
            ttl: self.ttl,
            alt_names: self.alt_names.clone(),
            ip_sans: self.ip_sans.clone(),
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub signal: Option<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub interval: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    #[serde(default = "default_watch_interval", deserialize_with = "de_duration")]
    pub interval: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            interval: default_watch_interval(),
        }
    }
}

fn default_watch_interval() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// JSON-lines file, hash-chained; [`crate::audit::DEFAULT_AUDIT_PATH`] when absent.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Also send every event to the host's syslog socket (journald).
    #[serde(default)]
    pub syslog: bool,
    /// Fail closed: an operation whose event cannot be written does not happen.
    #[serde(default)]
    pub required: bool,
}

/// One `notifications:` entry: where the agent POSTs which events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationConfig {
    /// https (http only to a loopback host).
    pub url: String,
    /// HMAC-SHA256 key the requests are signed with.
    pub secret_file: PathBuf,
    /// Event names; default rotation_completed, rotation_failed, lease_failed,
    /// access_denied, auth_failed.
    #[serde(default)]
    pub events: Vec<String>,
    /// Attempts per event, the first included.
    #[serde(default = "default_notify_attempts")]
    pub max_attempts: u32,
    /// Time for one event, all attempts included.
    #[serde(default = "default_notify_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

fn default_notify_attempts() -> u32 {
    8
}
fn default_notify_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub webhook: Option<serde_json::Value>,
    #[serde(default)]
    pub metrics: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Where the tmpfs goes inside the container.
    #[serde(default = "default_secrets_dir")]
    pub secrets_dir: String,
    /// Size cap of the tmpfs, in bytes (YAML accepts `1m`, `512k`, `65536`).
    #[serde(default = "default_tmpfs_size", deserialize_with = "de_size")]
    pub tmpfs_size: u64,
    /// Largest value of one secret, in bytes: checked at create and on rotation.
    #[serde(default = "default_max_secret_size", deserialize_with = "de_size")]
    pub max_secret_size: u64,
    /// Most secret references one container may have (env, file and annotation references
    /// counted one by one); also the most requests one agent fetch may carry.
    #[serde(default = "default_max_references")]
    pub max_references: usize,
    /// Most bytes of values one container's create (or one agent fetch) may gather, in all.
    #[serde(
        default = "default_max_total_secret_size",
        deserialize_with = "de_size"
    )]
    pub max_total_secret_size: u64,
    #[serde(default = "default_fetch_timeout", deserialize_with = "de_duration")]
    pub fetch_timeout: Duration,
    /// Default mode of injected files.
    #[serde(default = "default_file_mode", deserialize_with = "de_mode_required")]
    pub file_mode: u32,
    /// Path of dso-init on the host; default: next to the dso-runc executable.
    #[serde(default)]
    pub init_path: Option<PathBuf>,
    /// Directory for dso's per-container state (references, never values).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            secrets_dir: default_secrets_dir(),
            tmpfs_size: default_tmpfs_size(),
            max_secret_size: default_max_secret_size(),
            max_references: default_max_references(),
            max_total_secret_size: default_max_total_secret_size(),
            fetch_timeout: default_fetch_timeout(),
            file_mode: default_file_mode(),
            init_path: None,
            state_dir: default_state_dir(),
        }
    }
}

fn default_secrets_dir() -> String {
    "/run/secrets".into()
}
fn default_tmpfs_size() -> u64 {
    1024 * 1024
}
fn default_max_secret_size() -> u64 {
    1024 * 1024
}
fn default_max_references() -> usize {
    256
}
fn default_max_total_secret_size() -> u64 {
    16 * 1024 * 1024
}
fn default_fetch_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_file_mode() -> u32 {
    0o400
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/run/dso")
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

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(Duration::from_secs(n)),
        NumOrStr::Str(s) => parse_duration(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a duration"))),
    }
}

fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(n),
        NumOrStr::Str(s) => {
            parse_size(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a size")))
        }
    }
}

/// Modes are written as octal strings (`"0400"`) or integers taken as octal digits (`400`).
fn de_mode_required<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let digits = match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => n.to_string(),
        NumOrStr::Str(s) => s,
    };
    u32::from_str_radix(digits.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| serde::de::Error::custom(format!("{digits:?} is not an octal file mode")))
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
        Self::parse(&text, path, true)
    }

    /// Parses and validates config text; `path` is used in messages only.
    pub fn from_str_at(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Self::parse(text, path, false)
    }

    /// `remember`: look the text up in, and add it to, the cache of configs this build has
    /// validated (see [`validated_marker`]), which spares a create the schema compilation.
    fn parse(text: &str, path: &Path, remember: bool) -> Result<Config, ConfigError> {
        let doc = yaml_document(text, path)?;
        let marker = remember.then(|| validated_marker(text));
        let known_good = marker
            .as_deref()
            .is_some_and(|m| crate::keyring::read_exact(m, &mut [0u8; 2]).is_some());
        if !known_good {
            validate_document(&doc, text).map_err(|errors| ConfigError::Invalid {
                path: path.to_path_buf(),
                errors,
            })?;
            if let Some(m) = &marker {
                crate::keyring::store(m, b"ok", VALIDATED_MARKER_TTL);
            }
        }
        let mut cfg: Config = serde_json::from_value(doc).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            errors: vec![e.to_string()],
        })?;
        cfg.source = path.to_path_buf();
        cfg.digest = digest_of(text);
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

/// The YAML text as a JSON document, before any check. Empty text, or comments only, is an
/// empty mapping.
pub(crate) fn yaml_document(text: &str, path: &Path) -> Result<serde_json::Value, ConfigError> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    match serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Yaml {
        path: path.to_path_buf(),
        line: e.location().map(|l| l.line()).unwrap_or(0),
        message: e.to_string(),
    })? {
        serde_json::Value::Null => Ok(serde_json::Value::Object(Default::default())),
        doc => Ok(doc),
    }
}

/// How long a config stays known-good in the keyring after it passed validation.
const VALIDATED_MARKER_TTL: Duration = Duration::from_secs(24 * 3600);

/// The keyring description that says "this exact text passed this build's schema and semantic
/// checks": a SHA-256 over dso's version, this build ([`build_identity`]), the schema and the
/// text. Validation is a pure function of those, so a marker is as good as running it again;
/// any change to the text, or another build of dso, is a new digest and is validated afresh. Nothing of the text can be read from the marker.
/// Only the uid's own processes (root, for dso-runc) can add keys to its user keyring.
fn validated_marker(text: &str) -> String {
    marker_for_build(text, &build_identity())
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

fn marker_for_build(text: &str, build: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        "dso config validated".as_bytes(),
        env!("CARGO_PKG_VERSION").as_bytes(),
        build.as_bytes(),
        schema::SCHEMA_JSON.as_bytes(),
        text.as_bytes(),
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
        assert_eq!(validated_marker(text), validated_marker(text));
        assert!(build_identity().contains(':'));
    }

    #[test]
    fn validated_marker_depends_on_every_byte_of_the_text() {
        let a = validated_marker("providers: {}\n");
        assert_eq!(a, validated_marker("providers: {}\n"));
        assert_ne!(a, validated_marker("providers: {} \n"));
        assert!(a.starts_with("dso:config-ok:") && a.len() == "dso:config-ok:".len() + 64);
    }

    #[test]
    fn a_cached_config_is_still_parsed_and_a_changed_one_validated_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dso.yaml");
        let good = "providers:\n  l: { type: local, path: /s, key_file: /k }\nsecrets:\n  a: {}\n";
        std::fs::write(&path, good).unwrap();
        let cfg = Config::load(&path).unwrap();
        assert!(cfg.secrets.contains_key("a"));
        // Second load: possibly from the marker; same result.
        let cfg = Config::load(&path).unwrap();
        assert!(cfg.secrets.contains_key("a"));
        // One byte more: a new digest, validated again, and refused.
        std::fs::write(&path, good.replace("local", "lcoal")).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("not one of"), "{err}");
        crate::keyring::forget(&validated_marker(good));
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

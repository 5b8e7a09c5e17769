//! AWS credentials: the zeroizing [`Credentials`] type and the [`CredentialsProvider`] chain
//! (environment, shared credentials/config profile, IMDSv2 instance role) with its cache, which
//! refreshes temporary credentials 5 minutes before they expire.
//!
//! Profiles: static keys only (`aws_access_key_id`, `aws_secret_access_key`,
//! `aws_session_token`). SSO, `role_arn`/`source_profile` (assume-role), `credential_process` and
//! web identity are not supported; a profile that uses them is reported, not skipped.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use zeroize::Zeroizing;

use super::imds::{ImdsClient, ImdsError};
use crate::audit::parse_rfc3339;

/// Temporary credentials are refreshed this long before their `Expiration`.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// Larger credentials or config files are refused (they are a few hundred bytes in practice).
const MAX_PROFILE_FILE_LEN: u64 = 1 << 20;

/// An access key, its secret and an optional session token. The secret and the token are
/// zeroized on drop and never shown by `Debug`; the access key id is an identifier, not a secret
/// (AWS prints it in CloudTrail and error messages), and is shown.
#[derive(Clone)]
pub struct Credentials {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    session_token: Option<Zeroizing<String>>,
    expiration: Option<SystemTime>,
    source: CredentialSource,
}

/// Where a set of credentials came from (for messages and `dso doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// Given directly by the caller.
    Static,
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`.
    Environment,
    /// A profile of the shared credentials or config file.
    Profile { profile: String, file: PathBuf },
    /// The EC2 instance role, through IMDSv2.
    InstanceRole { role: String },
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Static => f.write_str("static credentials"),
            CredentialSource::Environment => f.write_str("environment (AWS_ACCESS_KEY_ID)"),
            CredentialSource::Profile { profile, file } => {
                write!(f, "profile {profile:?} in {}", file.display())
            }
            CredentialSource::InstanceRole { role } => write!(f, "instance role {role:?} (IMDS)"),
        }
    }
}

impl Credentials {
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: Zeroizing::new(secret_access_key.into()),
            session_token: session_token.map(Zeroizing::new),
            expiration: None,
            source: CredentialSource::Static,
        }
    }

    pub fn with_expiration(mut self, expiration: Option<SystemTime>) -> Self {
        self.expiration = expiration;
        self
    }

    pub fn with_source(mut self, source: CredentialSource) -> Self {
        self.source = source;
        self
    }

    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret key, for signing. Keep the borrow short.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref().map(String::as_str)
    }

    pub fn expiration(&self) -> Option<SystemTime> {
        self.expiration
    }

    pub fn source(&self) -> &CredentialSource {
        &self.source
    }

    /// True when these credentials should be replaced at `now`: they expire within
    /// [`REFRESH_BEFORE_EXPIRY`] (or already have). Long-term keys never need a refresh.
    pub fn needs_refresh(&self, now: SystemTime) -> bool {
        self.expiration
            .is_some_and(|exp| now + REFRESH_BEFORE_EXPIRY >= exp)
    }

    /// True when these credentials can no longer be used at `now` at all.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expiration.is_some_and(|exp| now >= exp)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expiration", &self.expiration)
            .field("source", &self.source)
            .finish()
    }
}

/// Why no credentials could be had. Never carries a key, a secret or a token.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "no AWS credentials found (tried: {tried}); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile in the shared credentials file, or run on EC2 with an instance role"
    )]
    NotFound { tried: String },
    #[error("{var} is set but {missing} is not")]
    PartialEnv {
        var: &'static str,
        missing: &'static str,
    },
    #[error("profile {profile:?}: {detail}")]
    Profile { profile: String, detail: String },
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("instance role: {0}")]
    Imds(#[from] ImdsError),
}

impl CredentialsError {
    /// True when the failure is about reaching a service (IMDS), not about configuration.
    pub fn is_transient(&self) -> bool {
        matches!(self, CredentialsError::Imds(e) if e.is_transient())
    }
}

/// The environment variables the chain reads, captured once. Built from the process
/// environment ([`Env::from_process`]) or given explicitly (tests, `dso doctor`), so that
/// nothing has to mutate the process environment.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<&'static str, Zeroizing<String>>,
}

impl Env {
    /// Every variable the AWS provider looks at.
    pub const NAMES: &'static [&'static str] = &[
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_EC2_METADATA_DISABLED",
        "HOME",
    ];

    /// The process environment. Without `HOME` (dockerd under systemd has none), the home
    /// directory of the effective user from the password database, as the AWS SDKs do.
    pub fn from_process() -> Self {
        let mut env = Self::from_fn(|k| std::env::var(k).ok());
        if env.get("HOME").is_none() {
            if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::geteuid()) {
                if let Some(dir) = user.dir.to_str() {
                    env.vars.insert("HOME", Zeroizing::new(dir.to_string()));
                }
            }
        }
        env
    }

    pub fn from_fn(mut get: impl FnMut(&str) -> Option<String>) -> Self {
        let vars = Self::NAMES
            .iter()
            .filter_map(|&k| get(k).map(|v| (k, Zeroizing::new(v))))
            .collect();
        Self { vars }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let map: BTreeMap<&str, &str> = pairs.into_iter().collect();
        Self::from_fn(|k| map.get(k).map(|v| v.to_string()))
    }

    /// The variable's value; unset and empty are the same.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn home_file(&self, rel: &str) -> Option<PathBuf> {
        self.get("HOME").map(|h| Path::new(h).join(rel))
    }

    /// `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
    pub fn credentials_file(&self) -> Option<PathBuf> {
        match self.get("AWS_SHARED_CREDENTIALS_FILE") {
            Some(p) => Some(PathBuf::from(p)),
            None => self.home_file(".aws/credentials"),
        }
    }

    /// `AWS_CONFIG_FILE`, else `~/.aws/config`.
    pub fn config_file(&self) -> Option<PathBuf> {
        match self.get("AWS_CONFIG_FILE") {
            Some(p) => Some(PathBuf::from(p)),
            None => self.home_file(".aws/config"),
        }
    }

    /// `AWS_REGION`, else `AWS_DEFAULT_REGION`.
    pub fn region(&self) -> Option<&str> {
        self.get("AWS_REGION")
            .or_else(|| self.get("AWS_DEFAULT_REGION"))
    }

    fn imds_disabled(&self) -> bool {
        self.get("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.vars.iter().map(|(k, v)| {
                let shown = if matches!(*k, "AWS_SECRET_ACCESS_KEY" | "AWS_SESSION_TOKEN") {
                    "[redacted]"
                } else {
                    v.as_str()
                };
                (k, shown)
            }))
            .finish()
    }
}

/// The inputs of the default chain.
#[derive(Debug, Clone)]
pub struct ChainSettings {
    pub env: Env,
    /// The `profile` setting of dso.yaml; overrides `AWS_PROFILE`.
    pub profile: Option<String>,
    /// The instance metadata service; `None` skips the instance role.
    pub imds: Option<ImdsClient>,
}

impl ChainSettings {
    /// The profile to use and whether it was asked for explicitly (setting or `AWS_PROFILE`).
    pub fn profile_name(&self) -> (String, bool) {
        match self
            .profile
            .as_deref()
            .or_else(|| self.env.get("AWS_PROFILE"))
            .or_else(|| self.env.get("AWS_DEFAULT_PROFILE"))
        {
            Some(p) => (p.to_string(), true),
            None => ("default".to_string(), false),
        }
    }
}

/// A source of fresh credentials: the default chain, or anything a test or an embedding program
/// supplies.
pub type Loader = dyn Fn() -> Result<Credentials, CredentialsError> + Send + Sync;
/// The clock; injectable so the refresh decision can be tested.
pub type Clock = dyn Fn() -> SystemTime + Send + Sync;

/// Hands out credentials, loading them once and reloading temporary ones before they expire.
/// Shared by every fetch of a provider (and kept for its lifetime by the agent); concurrent
/// callers wait for one load instead of each asking IMDS.
pub struct CredentialsProvider {
    loader: Box<Loader>,
    clock: Box<Clock>,
    cached: Mutex<Option<Arc<Credentials>>>,
}

impl fmt::Debug for CredentialsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self
            .cached
            .lock()
            .map(|c| c.as_ref().map(|c| c.source().clone()))
            .unwrap_or(None);
        f.debug_struct("CredentialsProvider")
            .field("cached", &cached)
            .finish_non_exhaustive()
    }
}

impl CredentialsProvider {
    /// The default chain: environment, then the profile, then the instance role.
    pub fn chain(settings: ChainSettings) -> Self {
        Self::from_loader(move || load_chain(&settings))
    }

    /// Always the same credentials.
    pub fn fixed(creds: Credentials) -> Self {
        Self::from_loader(move || Ok(creds.clone()))
    }

    pub fn from_loader(
        loader: impl Fn() -> Result<Credentials, CredentialsError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            loader: Box::new(loader),
            clock: Box::new(SystemTime::now),
            cached: Mutex::new(None),
        }
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Credentials good for at least [`REFRESH_BEFORE_EXPIRY`] where possible. If a refresh
    /// fails while the cached credentials have not expired yet, those are used (and the refresh
    /// is tried again on the next call).
    pub fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        let now = (self.clock)();
        if let Some(c) = cached.as_ref() {
            if !c.needs_refresh(now) {
                return Ok(c.clone());
            }
        }
        match (self.loader)() {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *cached = Some(fresh.clone());
                Ok(fresh)
            }
            Err(e) => match cached.as_ref() {
                Some(c) if !c.is_expired(now) => {
                    tracing::warn!(error = %e, "refreshing AWS credentials failed; using the current ones until they expire");
                    Ok(c.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// Forgets the cached credentials (after the service said they expired or are invalid), so
    /// the next call loads them again.
    pub fn invalidate(&self) {
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Runs the default chain once.
pub fn load_chain(settings: &ChainSettings) -> Result<Credentials, CredentialsError> {
    let mut tried = Vec::new();

    if let Some(c) = from_env(&settings.env)? {
        return Ok(c);
    }
    tried.push("environment".to_string());

    let (profile, explicit) = settings.profile_name();
    if let Some(c) = from_profile(&settings.env, &profile, explicit)? {
        return Ok(c);
    }
    tried.push(format!("profile {profile:?}"));

    match &settings.imds {
        Some(imds) if !settings.env.imds_disabled() => match imds.role_credentials() {
            Ok(c) => return Ok(c),
            // Not on EC2 (nothing answered) or no role attached: say so in the list.
            Err(ImdsError::Unreachable { .. }) => {
                tried.push("instance role (IMDS not reachable)".to_string())
            }
            Err(ImdsError::NoRole) => tried.push("instance role (none attached)".to_string()),
            Err(e) => return Err(e.into()),
        },
        _ => tried.push("instance role (IMDS disabled)".to_string()),
    }
    Err(CredentialsError::NotFound {
        tried: tried.join(", "),
    })
}

/// IMDS path of the instance role's name, and (with the name appended) its credentials.
const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials/";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleCredentials {
    #[serde(default)]
    code: Option<String>,
    access_key_id: String,
    // Plain Strings, moved into zeroizing storage as soon as they are parsed.
    secret_access_key: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
}

// The instance role as a source of credentials: IMDS itself knows nothing of them.
impl ImdsClient {
    /// 200 goes on; 404 means no role is attached; anything else is an error naming `what`.
    fn role_status(&self, status: u16, what: &'static str) -> Result<(), ImdsError> {
        match status {
            200 => Ok(()),
            404 => Err(ImdsError::NoRole),
            status => Err(ImdsError::Status {
                endpoint: self.endpoint.clone(),
                what,
                status,
            }),
        }
    }

    /// The instance role's temporary credentials.
    pub fn role_credentials(&self) -> Result<Credentials, ImdsError> {
        let token = self.token()?;
        let (status, body) = self.get(&token, CREDENTIALS_PATH, "role name")?;
        self.role_status(status, "role name")?;
        let text =
            std::str::from_utf8(&body).map_err(|_| self.invalid("role name", "not UTF-8"))?;
        let role = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or(ImdsError::NoRole)?;
        if role.contains(['/', '?', '#']) || role.contains("..") {
            return Err(self.invalid("role name", format!("unexpected role name {role:?}")));
        }
        let role = role.to_string();

        let (status, body) = self.get(
            &token,
            &format!("{CREDENTIALS_PATH}{role}"),
            "role credentials",
        )?;
        self.role_status(status, "role credentials")?;
        // Deserialize errors from serde_json name the position, never the input.
        let rc: RoleCredentials = serde_json::from_slice(&body).map_err(|e| {
            self.invalid("role credentials", format!("not the expected JSON ({e})"))
        })?;
        if let Some(code) = rc.code.as_deref().filter(|c| *c != "Success") {
            return Err(self.invalid("role credentials", format!("Code {code:?}")));
        }
        let expiration = match rc.expiration.as_deref() {
            Some(s) => Some(parse_rfc3339(s).ok_or_else(|| {
                self.invalid(
                    "role credentials",
                    format!("Expiration {s:?} is not an RFC 3339 time"),
                )
            })?),
            None => None,
        };
        let secret = Zeroizing::new(rc.secret_access_key);
        let token = rc.token.map(Zeroizing::new).filter(|t| !t.is_empty());
        if rc.access_key_id.is_empty() || secret.is_empty() {
            return Err(self.invalid("role credentials", "empty AccessKeyId or SecretAccessKey"));
        }
        Ok(
            Credentials::new(rc.access_key_id, secret.as_str(), token.as_deref().cloned())
                .with_expiration(expiration)
                .with_source(CredentialSource::InstanceRole { role }),
        )
    }
}

/// `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`), if set.
pub fn from_env(env: &Env) -> Result<Option<Credentials>, CredentialsError> {
    match (
        env.get("AWS_ACCESS_KEY_ID"),
        env.get("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => Ok(Some(
            Credentials::new(id, secret, env.get("AWS_SESSION_TOKEN").map(str::to_string))
                .with_source(CredentialSource::Environment),
        )),
        (None, None) => Ok(None),
        (Some(_), None) => Err(CredentialsError::PartialEnv {
            var: "AWS_ACCESS_KEY_ID",
            missing: "AWS_SECRET_ACCESS_KEY",
        }),
        (None, Some(_)) => Err(CredentialsError::PartialEnv {
            var: "AWS_SECRET_ACCESS_KEY",
            missing: "AWS_ACCESS_KEY_ID",
        }),
    }
}

/// Static keys of `profile` from the shared credentials file, else the config file. `explicit`
/// (the profile was named by the setting or `AWS_PROFILE`) makes a missing profile an error
/// rather than a reason to try the next source.
pub fn from_profile(
    env: &Env,
    profile: &str,
    explicit: bool,
) -> Result<Option<Credentials>, CredentialsError> {
    let files = [
        (env.credentials_file(), ProfileFileKind::Credentials),
        (env.config_file(), ProfileFileKind::Config),
    ];
    let mut seen_in: Option<PathBuf> = None;
    for (path, kind) in files.iter() {
        let Some(path) = path else { continue };
        let Some(text) = read_profile_file(path)? else {
            continue;
        };
        let Some(section) = profile_section(&text, profile, *kind) else {
            continue;
        };
        let id = section.get("aws_access_key_id");
        let secret = section.get("aws_secret_access_key");
        match (id, secret) {
            (Some(id), Some(secret)) => {
                return Ok(Some(
                    Credentials::new(
                        id.as_str(),
                        secret.as_str(),
                        section.get("aws_session_token").map(|t| t.to_string()),
                    )
                    .with_source(CredentialSource::Profile {
                        profile: profile.to_string(),
                        file: path.clone(),
                    }),
                ));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(CredentialsError::Profile {
                    profile: profile.to_string(),
                    detail: format!(
                        "{} has only one of aws_access_key_id and aws_secret_access_key",
                        path.display()
                    ),
                });
            }
            (None, None) => {
                const UNSUPPORTED: &[&str] = &[
                    "role_arn",
                    "source_profile",
                    "credential_source",
                    "credential_process",
                    "sso_session",
                    "sso_start_url",
                    "web_identity_token_file",
                ];
                if let Some(k) = UNSUPPORTED.iter().find(|k| section.contains_key(**k)) {
                    return Err(CredentialsError::Profile {
                        profile: profile.to_string(),
                        detail: format!(
                            "{} uses {k}, which dso does not support; give the profile static keys, or use the instance role or AWS_ACCESS_KEY_ID",
                            path.display()
                        ),
                    });
                }
                // A config-file profile with only a region: keep looking.
                seen_in.get_or_insert_with(|| path.clone());
            }
        }
    }
    if explicit {
        let detail = match seen_in {
            Some(p) => format!(
                "{} has no aws_access_key_id/aws_secret_access_key",
                p.display()
            ),
            None => format!(
                "not found in {} or {}",
                show_opt(files[0].0.as_deref()),
                show_opt(files[1].0.as_deref())
            ),
        };
        return Err(CredentialsError::Profile {
            profile: profile.to_string(),
            detail,
        });
    }
    Ok(None)
}

/// The `region` of `profile` in the config file, if any.
pub fn profile_region(env: &Env, profile: &str) -> Result<Option<String>, CredentialsError> {
    let Some(path) = env.config_file() else {
        return Ok(None);
    };
    let Some(text) = read_profile_file(&path)? else {
        return Ok(None);
    };
    Ok(profile_section(&text, profile, ProfileFileKind::Config)
        .and_then(|s| s.get("region").map(|r| r.to_string())))
}

fn show_opt(p: Option<&Path>) -> String {
    p.map(|p| p.display().to_string())
        .unwrap_or_else(|| "(no HOME)".into())
}

/// The file's text, or `None` if it does not exist.
fn read_profile_file(path: &Path) -> Result<Option<Zeroizing<String>>, CredentialsError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CredentialsError::File {
                path: path.to_path_buf(),
                detail: e.to_string(),
            });
        }
    };
    // Whoever can write it decides which identity dso uses: owner root (or this user), not
    // writable by group or others.
    let meta = file.metadata().map_err(|e| CredentialsError::File {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    crate::trust::check(&meta, path, "AWS shared file", crate::trust::Use::Trusted).map_err(
        |e| CredentialsError::File {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
    )?;
    let mut text = Zeroizing::new(String::new());
    let mut limited = file.take(MAX_PROFILE_FILE_LEN + 1);
    limited
        .read_to_string(&mut text)
        .map_err(|e| CredentialsError::File {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if text.len() as u64 > MAX_PROFILE_FILE_LEN {
        return Err(CredentialsError::File {
            path: path.to_path_buf(),
            detail: format!("larger than {MAX_PROFILE_FILE_LEN} bytes"),
        });
    }
    Ok(Some(text))
}

/// The two shared files name their sections differently: `[name]` in the credentials file,
/// `[profile name]` (and `[default]`) in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileFileKind {
    Credentials,
    Config,
}

/// The keys of one profile section (lower-cased keys, trimmed values; values zeroized on drop).
/// Indented lines (nested settings such as `s3 =`) and comments are skipped. The last section of
/// that name wins, as in the AWS CLI.
pub fn profile_section(
    text: &str,
    profile: &str,
    kind: ProfileFileKind,
) -> Option<BTreeMap<String, Zeroizing<String>>> {
    let mut found: Option<BTreeMap<String, Zeroizing<String>>> = None;
    let mut in_section = false;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            // Continuation of a nested block (or a stray indented line): not ours.
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let name = header.split(']').next().unwrap_or_default().trim();
            in_section = section_matches(name, profile, kind);
            if in_section {
                found = Some(BTreeMap::new());
            }
            continue;
        }
        if !in_section {
            continue;
        }
        if let (Some((k, v)), Some(section)) = (line.split_once('='), found.as_mut()) {
            let v = v.trim();
            // Inline comments are only recognised after whitespace (`key = v # c`).
            let v = v
                .find(" #")
                .or_else(|| v.find(" ;"))
                .map_or(v, |i| v[..i].trim_end());
            section.insert(k.trim().to_ascii_lowercase(), Zeroizing::new(v.to_string()));
        }
    }
    found
}

fn section_matches(name: &str, profile: &str, kind: ProfileFileKind) -> bool {
    match kind {
        ProfileFileKind::Credentials => name == profile,
        ProfileFileKind::Config => match name.strip_prefix("profile") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim() == profile,
            _ => profile == "default" && name == "default",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    const T0: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn refresh_decision() {
        let long_term = Credentials::new("AKID", "s", None);
        assert!(!long_term.needs_refresh(at(T0)));
        let temp =
            Credentials::new("ASIA", "s", Some("t".into())).with_expiration(Some(at(T0 + 3600)));
        assert!(!temp.needs_refresh(at(T0)));
        assert!(!temp.needs_refresh(at(T0 + 3600 - 301)));
        assert!(temp.needs_refresh(at(T0 + 3600 - 300)));
        assert!(temp.needs_refresh(at(T0 + 3600 + 1)));
        assert!(!temp.is_expired(at(T0 + 3599)));
        assert!(temp.is_expired(at(T0 + 3600)));
    }

    /// A provider whose loader hands out credentials expiring an hour after the (fake) clock,
    /// counting loads; `fail` makes the loader fail.
    fn counting_provider(
        now: Arc<AtomicU64>,
        loads: Arc<AtomicUsize>,
        fail: Arc<std::sync::atomic::AtomicBool>,
    ) -> CredentialsProvider {
        let clock_now = now.clone();
        CredentialsProvider::from_loader(move || {
            if fail.load(Ordering::SeqCst) {
                return Err(CredentialsError::NotFound {
                    tried: "test".into(),
                });
            }
            let n = loads.fetch_add(1, Ordering::SeqCst);
            Ok(Credentials::new(format!("ASIA{n}"), "s", Some("t".into()))
                .with_expiration(Some(at(now.load(Ordering::SeqCst) + 3600))))
        })
        .with_clock(move || at(clock_now.load(Ordering::SeqCst)))
    }

    #[test]
    fn cache_refreshes_five_minutes_before_expiry() {
        let now = Arc::new(AtomicU64::new(T0));
        let loads = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let p = counting_provider(now.clone(), loads.clone(), fail.clone());

        assert_eq!(p.credentials().unwrap().access_key_id(), "ASIA0");
        // Within the hour minus 5 minutes: cached.
        now.store(T0 + 3600 - 301, Ordering::SeqCst);
        assert_eq!(p.credentials().unwrap().access_key_id(), "ASIA0");
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        // 5 minutes before expiry: reloaded.
        now.store(T0 + 3600 - 300, Ordering::SeqCst);
        assert_eq!(p.credentials().unwrap().access_key_id(), "ASIA1");
        assert_eq!(loads.load(Ordering::SeqCst), 2);

        // A failed refresh keeps the old credentials while they are still valid...
        fail.store(true, Ordering::SeqCst);
        let t1 = T0 + 3600 - 300;
        now.store(t1 + 3600 - 200, Ordering::SeqCst);
        assert_eq!(p.credentials().unwrap().access_key_id(), "ASIA1");
        // ...and fails once they have expired.
        now.store(t1 + 3600, Ordering::SeqCst);
        assert!(p.credentials().is_err());
        // Recovery.
        fail.store(false, Ordering::SeqCst);
        assert_eq!(p.credentials().unwrap().access_key_id(), "ASIA2");
        p.invalidate();
        assert_eq!(p.credentials().unwrap().access_key_id(), "ASIA3");
    }

    #[test]
    fn debug_is_redacted() {
        let c = Credentials::new(
            "AKIDEXAMPLE",
            "very-secret-key",
            Some("very-secret-token".into()),
        );
        let s = format!("{c:?}");
        assert!(s.contains("AKIDEXAMPLE"));
        assert!(!s.contains("very-secret"), "{s}");
        let env = Env::from_pairs([
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret-key"),
            ("AWS_SESSION_TOKEN", "very-secret-token"),
        ]);
        let s = format!("{env:?}");
        assert!(!s.contains("very-secret"), "{s}");
        let p = CredentialsProvider::fixed(c);
        p.credentials().unwrap();
        assert!(!format!("{p:?}").contains("very-secret"));
    }

    #[test]
    fn env_credentials() {
        let env = Env::from_pairs([
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "SECRET"),
            ("AWS_SESSION_TOKEN", "TOKEN"),
        ]);
        let c = from_env(&env).unwrap().unwrap();
        assert_eq!(c.access_key_id(), "AKID");
        assert_eq!(c.secret_access_key(), "SECRET");
        assert_eq!(c.session_token(), Some("TOKEN"));
        assert_eq!(c.source(), &CredentialSource::Environment);
        assert!(from_env(&Env::default()).unwrap().is_none());
        let partial = Env::from_pairs([("AWS_ACCESS_KEY_ID", "AKID")]);
        assert!(matches!(
            from_env(&partial),
            Err(CredentialsError::PartialEnv { .. })
        ));
    }

    #[test]
    fn profile_sections() {
        let creds = "\
# comment
[default]
aws_access_key_id = AKID_DEFAULT
aws_secret_access_key = SECRET_DEFAULT

[prod]
aws_access_key_id=AKID_PROD
aws_secret_access_key =  SECRET_PROD   # trailing comment
aws_session_token = TOKEN_PROD
s3 =
  max_concurrent_requests = 20
";
        let d = profile_section(creds, "default", ProfileFileKind::Credentials).unwrap();
        assert_eq!(d["aws_access_key_id"].as_str(), "AKID_DEFAULT");
        let p = profile_section(creds, "prod", ProfileFileKind::Credentials).unwrap();
        assert_eq!(p["aws_secret_access_key"].as_str(), "SECRET_PROD");
        assert_eq!(p["aws_session_token"].as_str(), "TOKEN_PROD");
        assert!(!p.contains_key("max_concurrent_requests"));
        assert!(profile_section(creds, "nope", ProfileFileKind::Credentials).is_none());

        let config = "[default]\nregion = eu-west-1\n[profile prod]\nregion=us-east-2\n[prod]\nregion=wrong\n";
        let d = profile_section(config, "default", ProfileFileKind::Config).unwrap();
        assert_eq!(d["region"].as_str(), "eu-west-1");
        let p = profile_section(config, "prod", ProfileFileKind::Config).unwrap();
        assert_eq!(p["region"].as_str(), "us-east-2");
    }

    #[test]
    fn profile_files_from_explicit_paths() {
        let dir = tempfile::tempdir().unwrap();
        let cred_path = dir.path().join("credentials");
        let conf_path = dir.path().join("config");
        std::fs::write(
            &cred_path,
            "[default]\naws_access_key_id=AKID_D\naws_secret_access_key=S_D\n",
        )
        .unwrap();
        std::fs::write(
            &conf_path,
            "[profile cfgonly]\naws_access_key_id=AKID_C\naws_secret_access_key=S_C\nregion=ap-south-1\n\
             [profile sso]\nsso_session=x\n[profile regiononly]\nregion=eu-north-1\n",
        )
        .unwrap();
        let env = Env::from_pairs([
            ("AWS_SHARED_CREDENTIALS_FILE", cred_path.to_str().unwrap()),
            ("AWS_CONFIG_FILE", conf_path.to_str().unwrap()),
        ]);
        let c = from_profile(&env, "default", false).unwrap().unwrap();
        assert_eq!(c.access_key_id(), "AKID_D");
        assert_eq!(
            c.source(),
            &CredentialSource::Profile {
                profile: "default".into(),
                file: cred_path.clone()
            }
        );
        let c = from_profile(&env, "cfgonly", true).unwrap().unwrap();
        assert_eq!(c.access_key_id(), "AKID_C");
        assert_eq!(
            profile_region(&env, "cfgonly").unwrap().as_deref(),
            Some("ap-south-1")
        );
        let e = from_profile(&env, "sso", true).unwrap_err().to_string();
        assert!(e.contains("sso_session"), "{e}");
        let e = from_profile(&env, "missing", true).unwrap_err().to_string();
        assert!(e.contains("not found"), "{e}");
        let e = from_profile(&env, "regiononly", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no aws_access_key_id"), "{e}");
        assert!(from_profile(&env, "missing", false).unwrap().is_none());

        // The chain: env first, then the profile; IMDS off.
        let settings = ChainSettings {
            env: env.clone(),
            profile: None,
            imds: None,
        };
        assert_eq!(load_chain(&settings).unwrap().access_key_id(), "AKID_D");
        let settings = ChainSettings {
            profile: Some("cfgonly".into()),
            ..settings
        };
        assert_eq!(load_chain(&settings).unwrap().access_key_id(), "AKID_C");
        let mut with_env = settings.clone();
        with_env.env = Env::from_pairs([
            ("AWS_ACCESS_KEY_ID", "AKID_ENV"),
            ("AWS_SECRET_ACCESS_KEY", "S_ENV"),
            ("AWS_SHARED_CREDENTIALS_FILE", cred_path.to_str().unwrap()),
        ]);
        assert_eq!(load_chain(&with_env).unwrap().access_key_id(), "AKID_ENV");
        // Nothing anywhere.
        let none = ChainSettings {
            env: Env::from_pairs([("HOME", dir.path().join("nohome").to_str().unwrap())]),
            profile: None,
            imds: None,
        };
        let e = load_chain(&none).unwrap_err().to_string();
        assert!(e.contains("no AWS credentials found"), "{e}");
    }
}

//! The reference syntax: `NAME=dso://secret`, `NAME=dsofile://secret`,
//! `NAME=dso://provider/path#key`, in `process.env` or in `dso.secrets/<NAME>` annotations.

use std::collections::BTreeMap;

pub const ENV_SCHEME: &str = "dso://";
pub const FILE_SCHEME: &str = "dsofile://";
pub const ANNOTATION_PREFIX: &str = "dso.secrets/";
/// `dso.secrets.<container>/<VAR>`: a pod annotation that applies only to the pod's container
/// named `<container>` (containerd's `pod_annotations` globs `dso.secrets/*` and
/// `dso.secrets.*/*` pass both kinds).
pub const SCOPED_ANNOTATION_PREFIX: &str = "dso.secrets.";
/// The container's name in its pod, as containerd's CRI records it.
pub const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
/// Longest secret name: file names inside the tmpfs get a temp prefix during the rename dance,
/// and the whole must stay below NAME_MAX (255).
pub const MAX_NAME_LEN: usize = 200;

/// How the value reaches the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// `dso://`: the env var itself holds the value (set by dso-init inside the container).
    Env,
    /// `dsofile://`: the value is a file in the secrets dir; the env var holds its path.
    File,
}

/// What the reference points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A `secrets:` entry of dso.yaml, with an optional `#key` override.
    Named { name: String, key: Option<String> },
    /// A provider of dso.yaml and a path in it.
    Inline {
        provider: String,
        path: String,
        key: Option<String>,
    },
}

/// Where the reference was found in the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefSource {
    /// Index into `process.env`.
    Env(usize),
    /// Annotation key (`dso.secrets/NAME`).
    Annotation(String),
}

/// One reference: env var `var` gets the secret `target` as value or as file path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub var: String,
    pub kind: RefKind,
    pub target: Target,
    pub source: RefSource,
}

impl SecretRef {
    /// The file name inside the secrets dir (file references, and the env-file transport of
    /// env references). Named secrets use their name; inline ones the variable's name with a
    /// trailing `_FILE` removed.
    pub fn file_name(&self) -> &str {
        match &self.target {
            Target::Named { name, .. } => name,
            Target::Inline { .. } => self.var.strip_suffix("_FILE").unwrap_or(&self.var),
        }
    }

    /// A short description for errors and audit: the secret's name, or `provider/path`.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Named { name, .. } => name.clone(),
            Target::Inline { provider, path, .. } => format!("{provider}/{path}"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RefError {
    #[error("secret reference {reference:?} in {var}: {why}")]
    Invalid {
        var: String,
        reference: String,
        why: String,
    },
    #[error("variable {var} is given a secret reference twice (env and annotation)")]
    Duplicate { var: String },
    #[error(
        "annotation {key:?} is scoped to a container of a Kubernetes pod, but this container is not one (no {CRI_CONTAINER_NAME} annotation); use dso.secrets/<VAR>"
    )]
    ScopedOutsidePod { key: String },
    #[error("annotation {key:?}: {why}")]
    BadAnnotation { key: String, why: String },
    #[error("secret name {name:?} is not valid: {why}")]
    BadName { name: String, why: &'static str },
}

/// Checks a secret or provider name: `[A-Za-z0-9_.-]+`, not `.` or `..`, at most
/// [`MAX_NAME_LEN`] bytes. Such a name can never climb out of the secrets dir.
pub fn validate_name(name: &str) -> Result<(), RefError> {
    let bad = |why| {
        Err(RefError::BadName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 200 bytes");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not names");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    Ok(())
}

fn valid_env_name(var: &str) -> bool {
    let mut bytes = var.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// True when `value` uses one of dso's schemes (cheap; used on the passthrough decision).
pub fn is_reference(value: &str) -> bool {
    value.starts_with(ENV_SCHEME) || value.starts_with(FILE_SCHEME)
}

/// Parses one reference `value` given to variable `var`.
pub fn parse_ref(var: &str, value: &str, source: RefSource) -> Result<SecretRef, RefError> {
    let invalid = |why: String| RefError::Invalid {
        var: var.to_string(),
        reference: value.to_string(),
        why,
    };
    let (kind, rest) = if let Some(rest) = value.strip_prefix(FILE_SCHEME) {
        (RefKind::File, rest)
    } else if let Some(rest) = value.strip_prefix(ENV_SCHEME) {
        (RefKind::Env, rest)
    } else {
        return Err(invalid("not a dso:// or dsofile:// reference".into()));
    };
    if !valid_env_name(var) {
        return Err(invalid(format!("{var:?} is not a valid variable name")));
    }
    if rest.bytes().any(|b| b == 0 || b.is_ascii_control()) {
        return Err(invalid("control characters are not allowed".into()));
    }
    let (body, key) = match rest.split_once('#') {
        Some((body, "")) => {
            return Err(invalid(format!("empty key after '#' in {body:?}")));
        }
        Some((body, key)) => (body, Some(key.to_string())),
        None => (rest, None),
    };
    let target = match body.split_once('/') {
        None => {
            validate_name(body).map_err(|e| invalid(e.to_string()))?;
            Target::Named {
                name: body.to_string(),
                key,
            }
        }
        Some((provider, path)) => {
            validate_name(provider).map_err(|e| invalid(format!("provider {e}")))?;
            if path.is_empty() || path.split('/').any(|seg| seg.is_empty() || seg == "..") {
                return Err(invalid(format!(
                    "path {path:?} must be non-empty with no empty or '..' segments"
                )));
            }
            Target::Inline {
                provider: provider.to_string(),
                path: path.to_string(),
                key,
            }
        }
    };
    let r = SecretRef {
        var: var.to_string(),
        kind,
        target,
        source,
    };
    validate_name(r.file_name()).map_err(|e| invalid(e.to_string()))?;
    Ok(r)
}

/// Collects every reference of a spec: `process.env` entries whose value uses a dso scheme,
/// and `dso.secrets/<VAR>` annotations.
pub fn collect_refs(
    env: &[String],
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<Vec<SecretRef>, RefError> {
    let mut refs = Vec::new();
    for (i, entry) in env.iter().enumerate() {
        let Some((var, value)) = entry.split_once('=') else {
            continue;
        };
        if is_reference(value) {
            refs.push(parse_ref(var, value, RefSource::Env(i))?);
        }
    }
    let container = annotations.and_then(|a| a.get(CRI_CONTAINER_NAME));
    for (key, value) in annotations.into_iter().flatten() {
        let var = if let Some(var) = key.strip_prefix(ANNOTATION_PREFIX) {
            var
        } else if let Some(scoped) = key.strip_prefix(SCOPED_ANNOTATION_PREFIX) {
            let Some((target, var)) = scoped.split_once('/') else {
                return Err(RefError::BadAnnotation {
                    key: key.clone(),
                    why: "expected dso.secrets.<container>/<VAR>".into(),
                });
            };
            let Some(container) = container else {
                return Err(RefError::ScopedOutsidePod { key: key.clone() });
            };
            if target != container {
                continue;
            }
            var
        } else {
            continue;
        };
        if refs.iter().any(|r| r.var == var) {
            return Err(RefError::Duplicate {
                var: var.to_string(),
            });
        }
        refs.push(parse_ref(
            var,
            value,
            RefSource::Annotation(key.to_string()),
        )?);
    }
    Ok(refs)
}

/// Cheap check used before anything is loaded: does the spec have any reference at all?
pub fn has_refs<'a>(
    env: impl IntoIterator<Item = &'a str>,
    annotation_keys: impl IntoIterator<Item = &'a str>,
) -> bool {
    env.into_iter()
        .any(|e| e.split_once('=').is_some_and(|(_, v)| is_reference(v)))
        || annotation_keys
            .into_iter()
            .any(|k| k.starts_with(ANNOTATION_PREFIX) || k.starts_with(SCOPED_ANNOTATION_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_scoped_annotations_reach_only_their_container() {
        let ann = |container: Option<&str>| {
            let mut a = BTreeMap::new();
            a.insert(
                "dso.secrets/SHARED_FILE".to_string(),
                "dsofile://shared".to_string(),
            );
            a.insert(
                "dso.secrets.app/A_FILE".to_string(),
                "dsofile://a".to_string(),
            );
            a.insert(
                "dso.secrets.sidecar/B_FILE".to_string(),
                "dsofile://b".to_string(),
            );
            if let Some(c) = container {
                a.insert(CRI_CONTAINER_NAME.to_string(), c.to_string());
            }
            a
        };
        let vars = |c: &str| -> Vec<String> {
            collect_refs(&[], Some(&ann(Some(c))))
                .unwrap()
                .into_iter()
                .map(|r| r.var)
                .collect()
        };
        assert_eq!(vars("app"), ["A_FILE", "SHARED_FILE"]);
        assert_eq!(vars("sidecar"), ["B_FILE", "SHARED_FILE"]);
        assert_eq!(vars("other"), ["SHARED_FILE"]);
        // Outside a pod, a scoped key is an error rather than silently ignored.
        let err = collect_refs(&[], Some(&ann(None))).unwrap_err();
        assert!(matches!(err, RefError::ScopedOutsidePod { .. }), "{err}");
        // The cheap passthrough check sees scoped keys too.
        assert!(has_refs([], ["dso.secrets.app/A_FILE"]));
        let mut bad = BTreeMap::new();
        bad.insert("dso.secrets.app".to_string(), "dsofile://a".to_string());
        bad.insert(CRI_CONTAINER_NAME.to_string(), "app".to_string());
        assert!(matches!(
            collect_refs(&[], Some(&bad)),
            Err(RefError::BadAnnotation { .. })
        ));
    }

    fn named(name: &str, key: Option<&str>) -> Target {
        Target::Named {
            name: name.into(),
            key: key.map(Into::into),
        }
    }

    #[test]
    fn parses_reference_table() {
        let cases: &[(&str, &str, RefKind, Target, &str)] = &[
            (
                "API_KEY",
                "dso://api_key",
                RefKind::Env,
                named("api_key", None),
                "api_key",
            ),
            (
                "DB_PASSWORD_FILE",
                "dsofile://db_password",
                RefKind::File,
                named("db_password", None),
                "db_password",
            ),
            (
                "X",
                "dso://db#password",
                RefKind::Env,
                named("db", Some("password")),
                "db",
            ),
            (
                "DB_FILE",
                "dsofile://vault/app/db#password",
                RefKind::File,
                Target::Inline {
                    provider: "vault".into(),
                    path: "app/db".into(),
                    key: Some("password".into()),
                },
                "DB",
            ),
            (
                "TOKEN",
                "dso://aws/prod/api",
                RefKind::Env,
                Target::Inline {
                    provider: "aws".into(),
                    path: "prod/api".into(),
                    key: None,
                },
                "TOKEN",
            ),
        ];
        for (var, value, kind, target, file) in cases {
            let r = parse_ref(var, value, RefSource::Env(0)).unwrap();
            assert_eq!(&r.kind, kind, "{value}");
            assert_eq!(&r.target, target, "{value}");
            assert_eq!(r.file_name(), *file, "{value}");
        }
    }

    #[test]
    fn rejects_bad_references() {
        for value in [
            "dsofile://..",
            "dsofile://.",
            "dsofile://../etc/passwd",
            "dso://a/../b",
            "dso://a//b",
            "dso://prov/",
            "dso://",
            "dsofile://bad\0name",
            "dsofile://sp ace",
            "dso://x#",
            "dso://bad$name",
        ] {
            assert!(
                parse_ref("VAR", value, RefSource::Env(0)).is_err(),
                "{value:?} should be refused"
            );
        }
        assert!(parse_ref("1VAR", "dso://x", RefSource::Env(0)).is_err());
        let long = format!("dso://{}", "a".repeat(MAX_NAME_LEN + 1));
        assert!(parse_ref("V", &long, RefSource::Env(0)).is_err());
        let at_limit = format!("dso://{}", "a".repeat(MAX_NAME_LEN));
        assert!(parse_ref("V", &at_limit, RefSource::Env(0)).is_ok());
    }

    #[test]
    fn collects_env_and_annotations() {
        let env = vec![
            "PATH=/bin".to_string(),
            "A=dso://a".to_string(),
            "NOEQ".to_string(),
            "B_FILE=dsofile://b".to_string(),
            "C=dso-not-a-ref".to_string(),
        ];
        let mut ann = BTreeMap::new();
        ann.insert("dso.secrets/D".to_string(), "dso://d".to_string());
        ann.insert("other".to_string(), "dso://ignored".to_string());
        let refs = collect_refs(&env, Some(&ann)).unwrap();
        let vars: Vec<_> = refs.iter().map(|r| r.var.as_str()).collect();
        assert_eq!(vars, ["A", "B_FILE", "D"]);
        assert_eq!(refs[1].source, RefSource::Env(3));
        assert_eq!(
            refs[2].source,
            RefSource::Annotation("dso.secrets/D".into())
        );

        ann.insert("dso.secrets/A".to_string(), "dso://a".to_string());
        assert_eq!(
            collect_refs(&env, Some(&ann)).unwrap_err(),
            RefError::Duplicate { var: "A".into() }
        );
    }

    #[test]
    fn has_refs_is_cheap_and_right() {
        assert!(!has_refs(["PATH=/bin", "X=dso"], ["a"]));
        assert!(has_refs(["X=dsofile://a"], []));
        assert!(has_refs([], ["dso.secrets/X"]));
    }

    #[test]
    fn names() {
        assert!(validate_name("db_password-1.v2").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0", "a b", "é"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}

//! Registering dso with dockerd: the `runtimes.<name>` entry (and `default-runtime`) of
//! daemon.json, edited in place — every other key kept, in order — and written atomically with
//! the file's own mode and owner, after a backup of what was there.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Where dockerd reads its configuration by default.
pub const DEFAULT_DAEMON_JSON: &str = "/etc/docker/daemon.json";
/// The runtime name dso registers under.
pub const DEFAULT_RUNTIME_NAME: &str = "dso";
/// Mode of a daemon.json that dso creates (dockerd's packages use 0644 too).
const NEW_FILE_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum DaemonJsonError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} does not parse as JSON (line {line}, column {column}: {message}); fix it by hand \
         (dockerd would refuse it too), then run this again"
    )]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {what}; fix it by hand, then run this again")]
    Shape { path: PathBuf, what: String },
    #[error(
        "directory {dir} does not exist: is Docker installed? Pass --daemon-json PATH for another \
         location"
    )]
    NoDirectory { dir: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid runtime name {name:?}: {why}")]
    Name { name: String, why: &'static str },
}

/// What the `runtimes.<name>` entry should say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEntry {
    pub name: String,
    /// Absolute path of `dso-runc`.
    pub path: PathBuf,
    /// Extra arguments dockerd passes before runc's own (`--dso-config=...`).
    pub runtime_args: Vec<String>,
}

impl RuntimeEntry {
    /// The entry of dso-runc at `path` reading `dso_config`. No `runtimeArgs` for the default
    /// dso.yaml, which dso-runc reads without a flag: with `runtimeArgs`, dockerd runs the
    /// runtime through a `/bin/sh` script it writes (`<data-root>/runtimes/<name>`), one more
    /// process on every runtime call of every container (BENCHMARKS.md, run K).
    pub fn new(name: &str, path: PathBuf, dso_config: &str) -> Self {
        let default = Path::new(dso_config) == Path::new(crate::config::DEFAULT_CONFIG_PATH);
        Self {
            name: name.to_string(),
            path,
            runtime_args: match default {
                true => Vec::new(),
                false => vec![format!("--dso-config={dso_config}")],
            },
        }
    }

    fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "path".into(),
            Value::String(self.path.display().to_string()),
        );
        if !self.runtime_args.is_empty() {
            m.insert(
                "runtimeArgs".into(),
                Value::Array(
                    self.runtime_args
                        .iter()
                        .map(|a| Value::String(a.clone()))
                        .collect(),
                ),
            );
        }
        Value::Object(m)
    }
}

/// Names dockerd reserves or that would not survive a round trip through its flags.
pub fn check_runtime_name(name: &str) -> Result<(), DaemonJsonError> {
    let bad = |why| {
        Err(DaemonJsonError::Name {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return bad("use letters, digits, '_', '.' and '-' only");
    }
    if [
        "runc",
        "default",
        "io.containerd.runc.v2",
        "io.containerd.runtime.v1.linux",
    ]
    .contains(&name)
    {
        return bad("dockerd reserves it");
    }
    Ok(())
}

/// The parsed daemon.json: an object (empty when the file is missing or blank).
#[derive(Debug, Clone)]
pub struct DaemonJson {
    pub path: PathBuf,
    pub doc: Map<String, Value>,
    /// False when the file does not exist yet.
    pub exists: bool,
}

impl DaemonJson {
    /// Reads `path`. A missing file is an empty configuration (its directory must exist); a
    /// file that does not parse, or is not a JSON object, is an error: dso never rewrites what
    /// it cannot understand.
    pub fn load(path: &Path) -> Result<DaemonJson, DaemonJsonError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = parent_dir(path);
                if !dir.is_dir() {
                    return Err(DaemonJsonError::NoDirectory { dir });
                }
                return Ok(DaemonJson {
                    path: path.to_path_buf(),
                    doc: Map::new(),
                    exists: false,
                });
            }
            Err(source) => {
                return Err(DaemonJsonError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let doc = Self::parse(path, &text)?;
        Ok(DaemonJson {
            path: path.to_path_buf(),
            doc,
            exists: true,
        })
    }

    /// Parses daemon.json text (blank means `{}`).
    pub fn parse(path: &Path, text: &str) -> Result<Map<String, Value>, DaemonJsonError> {
        if text.trim().is_empty() {
            return Ok(Map::new());
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(DaemonJsonError::Shape {
                path: path.to_path_buf(),
                what: "the top level is not a JSON object".into(),
            }),
            Err(e) => Err(DaemonJsonError::Parse {
                path: path.to_path_buf(),
                line: e.line(),
                column: e.column(),
                message: strip_position(&e.to_string()),
            }),
        }
    }

    /// The `runtimes` object, if any (an error if it is something else).
    fn runtimes(&self) -> Result<Option<&Map<String, Value>>, DaemonJsonError> {
        match self.doc.get("runtimes") {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(DaemonJsonError::Shape {
                path: self.path.clone(),
                what: "\"runtimes\" is not a JSON object".into(),
            }),
        }
    }

    /// The `runtimes.<name>` entry as it stands.
    pub fn runtime(&self, name: &str) -> Result<Option<&Value>, DaemonJsonError> {
        Ok(self.runtimes()?.and_then(|r| r.get(name)))
    }

    /// `default-runtime`, if set.
    pub fn default_runtime(&self) -> Option<&str> {
        self.doc.get("default-runtime").and_then(Value::as_str)
    }

    /// Sets `runtimes.<name>` (and `default-runtime` when `make_default`); returns whether
    /// anything changed. Other runtimes and keys stay as they are, in their order.
    pub fn install(
        &mut self,
        entry: &RuntimeEntry,
        make_default: bool,
    ) -> Result<bool, DaemonJsonError> {
        check_runtime_name(&entry.name)?;
        self.runtimes()?; // shape check
        let wanted = entry.to_value();
        let mut changed = false;
        let runtimes = self
            .doc
            .entry("runtimes")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .ok_or_else(|| DaemonJsonError::Shape {
                path: self.path.clone(),
                what: "\"runtimes\" is not a JSON object".into(),
            })?;
        if runtimes.get(&entry.name) != Some(&wanted) {
            runtimes.insert(entry.name.clone(), wanted);
            changed = true;
        }
        if make_default && self.default_runtime() != Some(entry.name.as_str()) {
            self.doc
                .insert("default-runtime".into(), Value::String(entry.name.clone()));
            changed = true;
        }
        Ok(changed)
    }

    /// Removes `runtimes.<name>` (and `runtimes` when it becomes empty), and `default-runtime`
    /// when it names it (dockerd would not start with a default that does not exist). Returns
    /// whether anything changed.
    pub fn uninstall(&mut self, name: &str) -> Result<bool, DaemonJsonError> {
        check_runtime_name(name)?;
        self.runtimes()?;
        let mut changed = false;
        if let Some(Value::Object(runtimes)) = self.doc.get_mut("runtimes") {
            changed |= runtimes.shift_remove(name).is_some();
            if runtimes.is_empty() {
                self.doc.shift_remove("runtimes");
            }
        }
        if self.default_runtime() == Some(name) {
            self.doc.shift_remove("default-runtime");
            changed = true;
        }
        Ok(changed)
    }

    /// The document as dso writes it: two-space indented, trailing newline.
    pub fn render(&self) -> String {
        let mut s = serde_json::to_string_pretty(&Value::Object(self.doc.clone()))
            .unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }

    /// Copies the current file next to itself (`<name>.<UTC time>.dso-backup`, same mode) and
    /// returns the copy's path; None when there was no file.
    pub fn backup(&self) -> Result<Option<PathBuf>, DaemonJsonError> {
        if !self.exists {
            return Ok(None);
        }
        let target = resolve_symlink(&self.path);
        let stamp = crate::audit::now_rfc3339().replace([':', '-'], "");
        let file_name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "daemon.json".into());
        let backup = parent_dir(&target).join(format!("{file_name}.{stamp}.dso-backup"));
        let data = fs::read(&target).map_err(|source| DaemonJsonError::Read {
            path: target.clone(),
            source,
        })?;
        let meta = fs::metadata(&target).map_err(|source| DaemonJsonError::Read {
            path: target.clone(),
            source,
        })?;
        write_atomic(
            &backup,
            data.as_slice(),
            meta.permissions().mode() & 0o7777,
            None,
        )?;
        Ok(Some(backup))
    }

    /// Writes the document back atomically (temp file in the same directory, fsync, rename,
    /// fsync of the directory), keeping the file's mode and owner; a symlinked daemon.json has
    /// its target replaced, the link stays.
    pub fn save(&self) -> Result<(), DaemonJsonError> {
        let target = resolve_symlink(&self.path);
        let (mode, owner) = match fs::metadata(&target) {
            Ok(m) => (m.permissions().mode() & 0o7777, Some((m.uid(), m.gid()))),
            Err(_) => (NEW_FILE_MODE, None),
        };
        write_atomic(&target, self.render().as_bytes(), mode, owner)
    }
}

/// The directory of `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Follows a symlinked daemon.json to the file it names (so the rename replaces the file, not
/// the link); the path itself otherwise.
fn resolve_symlink(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path).unwrap_or(path.into()),
        _ => path.to_path_buf(),
    }
}

/// serde_json appends " at line L column C"; the error already reports those.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// temp + fsync + rename + fsync(dir), with `mode` (and `owner`) set before any byte is written.
fn write_atomic(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), DaemonJsonError> {
    let opts = crate::atomic_file::Options {
        owner,
        durable: true,
        ..crate::atomic_file::Options::new(mode)
    };
    crate::atomic_file::write(path, data, opts).map_err(|source| DaemonJsonError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> RuntimeEntry {
        RuntimeEntry {
            name: name.into(),
            path: "/usr/bin/dso-runc".into(),
            runtime_args: vec!["--dso-config=/etc/dso/dso.yaml".into()],
        }
    }

    #[test]
    fn the_default_dso_yaml_needs_no_runtime_args() {
        let e = RuntimeEntry::new("dso", "/usr/bin/dso-runc".into(), "/etc/dso/dso.yaml");
        assert_eq!(
            e.to_value(),
            serde_json::json!({"path": "/usr/bin/dso-runc"})
        );
        let e = RuntimeEntry::new("dso", "/usr/bin/dso-runc".into(), "/srv/dso.yaml");
        assert_eq!(
            e.to_value(),
            serde_json::json!({"path": "/usr/bin/dso-runc", "runtimeArgs": ["--dso-config=/srv/dso.yaml"]})
        );
    }

    fn load_text(dir: &Path, text: &str) -> DaemonJson {
        let p = dir.join("daemon.json");
        fs::write(&p, text).unwrap();
        DaemonJson::load(&p).unwrap()
    }

    #[test]
    fn install_keeps_other_keys_in_order_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = load_text(
            dir.path(),
            r#"{"log-driver":"journald","runtimes":{"nvidia":{"path":"nvidia-container-runtime"}},"zeta":[1,2]}"#,
        );
        assert!(d.install(&entry("dso"), false).unwrap());
        let text = d.render();
        let keys: Vec<&str> = d.doc.keys().map(String::as_str).collect();
        assert_eq!(keys, ["log-driver", "runtimes", "zeta"]);
        assert!(text.contains("nvidia-container-runtime"));
        assert!(text.contains("\"--dso-config=/etc/dso/dso.yaml\""));
        assert!(d.default_runtime().is_none());
        assert!(!d.install(&entry("dso"), false).unwrap(), "second install");
        assert!(d.install(&entry("dso"), true).unwrap());
        assert_eq!(d.default_runtime(), Some("dso"));
        assert!(!d.install(&entry("dso"), true).unwrap());
    }

    #[test]
    fn uninstall_removes_only_ours_and_a_default_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = load_text(
            dir.path(),
            r#"{"default-runtime":"dso","runtimes":{"dso":{"path":"/x"},"crun":{"path":"/usr/bin/crun"}},"debug":true}"#,
        );
        assert!(d.uninstall("dso").unwrap());
        assert_eq!(
            Value::Object(d.doc.clone()),
            serde_json::json!({"runtimes":{"crun":{"path":"/usr/bin/crun"}},"debug":true})
        );
        assert!(!d.uninstall("dso").unwrap());
        let mut only = load_text(dir.path(), r#"{"runtimes":{"dso":{"path":"/x"}}}"#);
        assert!(only.uninstall("dso").unwrap());
        assert!(
            only.doc.is_empty(),
            "empty runtimes removed: {:?}",
            only.doc
        );
        // Someone else's default is left alone.
        let mut other = load_text(dir.path(), r#"{"default-runtime":"crun"}"#);
        assert!(!other.uninstall("dso").unwrap());
        assert_eq!(other.default_runtime(), Some("crun"));
    }

    #[test]
    fn refuses_what_it_cannot_understand() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.json");
        for (text, want) in [
            ("{\"a\": 1,,}", "line 1, column 9"),
            ("[1]", "not a JSON object"),
            ("{\n\"runtimes\": 3}", "\"runtimes\" is not a JSON object"),
        ] {
            fs::write(&p, text).unwrap();
            let msg = match DaemonJson::load(&p) {
                Err(e) => e.to_string(),
                Ok(mut d) => d.install(&entry("dso"), false).unwrap_err().to_string(),
            };
            assert!(msg.contains(want), "{text}: {msg}");
            assert!(msg.contains("fix it by hand"), "{msg}");
        }
        // Blank is `{}`; missing is `{}` if the directory exists, an error otherwise.
        fs::write(&p, " \n").unwrap();
        assert!(DaemonJson::load(&p).unwrap().doc.is_empty());
        let missing = DaemonJson::load(&dir.path().join("none.json")).unwrap();
        assert!(!missing.exists);
        let e = DaemonJson::load(Path::new("/nonexistent-dir/daemon.json")).unwrap_err();
        assert!(e.to_string().contains("is Docker installed"), "{e}");
        for bad in ["", "runc", "a b", "x/y"] {
            assert!(check_runtime_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn save_is_atomic_keeps_mode_and_backs_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.json");
        fs::write(&p, "{\"debug\": true}").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        let mut d = DaemonJson::load(&p).unwrap();
        d.install(&entry("dso"), false).unwrap();
        let backup = d.backup().unwrap().expect("a backup");
        d.save().unwrap();
        assert_eq!(fs::read_to_string(&backup).unwrap(), "{\"debug\": true}");
        assert_eq!(
            fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = DaemonJson::load(&p).unwrap();
        assert_eq!(again.doc, d.doc);
        // No temp file left behind.
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.contains("dso-tmp")), "{names:?}");
        // A new file gets 0644; a symlink keeps pointing at the rewritten file.
        let fresh = dir.path().join("new.json");
        let mut n = DaemonJson::load(&fresh).unwrap();
        n.install(&entry("dso"), false).unwrap();
        assert!(n.backup().unwrap().is_none());
        n.save().unwrap();
        assert_eq!(
            fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let mut l = DaemonJson::load(&link).unwrap();
        l.uninstall("dso").unwrap();
        l.save().unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&p).unwrap(), "{\n  \"debug\": true\n}\n");
    }
}

//! The bundle's `config.json`: loaded once, read through oci-spec's types, changed as a JSON
//! document (so that every field dso does not own, unknown ones included, survives), and
//! written back atomically (temp file in the bundle, fsync, rename, same mode).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxIdMapping, Spec as OciSpec};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("bundle {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid OCI runtime spec: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Shape { path: PathBuf, what: String },
}

/// Cheap check for the passthrough decision: does `<bundle>/config.json` hold any secret
/// reference (env value or `dso.secrets/` annotation)? Parses JSON only, no typed spec.
pub fn has_references(bundle: &Path) -> Result<bool, SpecError> {
    let path = bundle.join("config.json");
    let bytes = fs::read(&path).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    references_in(&bytes).map_err(|source| SpecError::Parse { path, source })
}

/// [`has_references`] on config.json's bytes.
pub fn references_in(bytes: &[u8]) -> Result<bool, serde_json::Error> {
    let doc: Value = serde_json::from_slice(bytes)?;
    // The CRI's sandbox (pause) container carries the pod's annotations too, references
    // included; it never gets secrets.
    if let Some(a) = doc.get("annotations").and_then(Value::as_object)
        && crate::policy::identity::is_sandbox(a)
    {
        return Ok(false);
    }
    let env = doc
        .pointer("/process/env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    let annotations = doc
        .get("annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.keys().map(String::as_str));
    Ok(crate::secrets::has_refs(env, annotations))
}

/// A runtime spec: the JSON document as the engine wrote it, plus a typed view of it.
pub struct Spec {
    path: PathBuf,
    doc: Value,
    typed: OciSpec,
}

impl Spec {
    /// Loads `<bundle>/config.json`.
    pub fn load(bundle: &Path) -> Result<Spec, SpecError> {
        let path = bundle.join("config.json");
        let bytes = fs::read(&path).map_err(|source| SpecError::Read {
            path: path.clone(),
            source,
        })?;
        Self::from_slice(&bytes, path)
    }

    /// Parses a spec held in memory; `path` is where `flush` will write it.
    pub fn from_slice(bytes: &[u8], path: PathBuf) -> Result<Spec, SpecError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|source| SpecError::Parse {
            path: path.clone(),
            source,
        })?;
        if !doc.is_object() {
            return Err(SpecError::Shape {
                path,
                what: "the top level is not a JSON object".into(),
            });
        }
        // Read through the document (no copy of its tree, as `from_value(doc.clone())` made).
        let typed = OciSpec::deserialize(&doc).map_err(|source| SpecError::Parse {
            path: path.clone(),
            source,
        })?;
        Ok(Spec { path, doc, typed })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn oci(&self) -> &OciSpec {
        &self.typed
    }

    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// The container's root filesystem on the host: `root.path`, relative to the bundle.
    pub fn rootfs(&self) -> Option<std::path::PathBuf> {
        let root = self.doc.get("root")?.get("path")?.as_str()?;
        let bundle = self.path.parent()?;
        Some(bundle.join(root))
    }

    /// `process.env`, as given.
    pub fn env(&self) -> Vec<String> {
        self.typed
            .process()
            .as_ref()
            .and_then(|p| p.env().clone())
            .unwrap_or_default()
    }

    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.typed
            .annotations()
            .as_ref()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// False when the references the scan found are all pod annotations scoped to other
    /// containers of the pod: nothing for this one (a create then runs the delegate as is).
    /// A reference that does not parse counts as one for this container (it is refused).
    pub fn has_own_references(&self) -> bool {
        !crate::secrets::collect_refs(&self.env(), Some(&self.annotations()))
            .is_ok_and(|refs| refs.is_empty())
    }

    /// The container user's uid and gid (`process.user`), as seen inside the container.
    pub fn user(&self) -> (u32, u32) {
        self.typed
            .process()
            .as_ref()
            .map(|p| (p.user().uid(), p.user().gid()))
            .unwrap_or((0, 0))
    }

    /// Maps container ids to host ids through `linux.uidMappings`/`gidMappings`, when the
    /// container has a user namespace. `None` when an id is not mapped.
    pub fn host_ids(&self, uid: u32, gid: u32) -> Option<(u32, u32)> {
        let linux = self.typed.linux().as_ref();
        let map = |maps: Option<&Vec<LinuxIdMapping>>, id: u32| -> Option<u32> {
            match maps {
                None => Some(id),
                Some(m) if m.is_empty() => Some(id),
                Some(m) => m.iter().find_map(|e| {
                    let off = id.checked_sub(e.container_id())?;
                    // checked: hostID + offset past u32::MAX is not a host id (and must not
                    // wrap onto a low one, or panic).
                    (off < e.size())
                        .then(|| e.host_id().checked_add(off))
                        .flatten()
                }),
            }
        };
        Some((
            map(linux.and_then(|l| l.uid_mappings().as_ref()), uid)?,
            map(linux.and_then(|l| l.gid_mappings().as_ref()), gid)?,
        ))
    }

    /// `process.env` as a mutable JSON array (created if absent). A missing `process` is an
    /// error, not created: `{"env": [...]}` alone is not a valid process (no `user`, no `cwd`).
    pub fn env_mut(&mut self) -> Result<&mut Vec<Value>, SpecError> {
        let path = self.path.clone();
        let process = self
            .doc
            .get_mut("process")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| SpecError::Shape {
                path: path.clone(),
                what: "process is missing or not an object".into(),
            })?;
        process
            .entry("env")
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
            .ok_or(SpecError::Shape {
                path,
                what: "process.env is not an array".into(),
            })
    }

    /// `process.args` as a mutable JSON array.
    pub fn args_mut(&mut self) -> Result<&mut Vec<Value>, SpecError> {
        let path = self.path.clone();
        self.doc
            .pointer_mut("/process/args")
            .and_then(Value::as_array_mut)
            .ok_or(SpecError::Shape {
                path,
                what: "process.args is missing or not an array".into(),
            })
    }

    /// `mounts` as a mutable JSON array (created if absent).
    pub fn mounts_mut(&mut self) -> Result<&mut Vec<Value>, SpecError> {
        let path = self.path.clone();
        self.doc
            .as_object_mut()
            .map(|o| {
                o.entry("mounts")
                    .or_insert_with(|| Value::Array(Vec::new()))
            })
            .and_then(Value::as_array_mut)
            .ok_or(SpecError::Shape {
                path,
                what: "mounts is not an array".into(),
            })
    }

    /// Writes the document back: a temp file next to config.json with the same mode, renamed
    /// over config.json, so a reader sees the old spec or the new one, never a torn one; a
    /// failure leaves the old file intact. No fsync: a bundle lives only as long as its
    /// container (containerd keeps it under /run), runc reads it back within the same boot, and
    /// an fsync here costs milliseconds on every create (and stalls runc's own writes behind the
    /// journal commit).
    pub fn flush(&self) -> Result<(), SpecError> {
        let werr = |source| SpecError::Write {
            path: self.path.clone(),
            source,
        };
        let mode = fs::metadata(&self.path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        let bytes = serde_json::to_vec(&self.doc).map_err(|e| werr(std::io::Error::other(e)))?;
        crate::atomic_file::write(&self.path, &bytes, crate::atomic_file::Options::new(mode))
            .map_err(werr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"{
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 1000, "gid": 1000}, "args": ["sh"], "env": ["A=dso://a"], "cwd": "/",
                    "futureProcessField": {"x": 1}},
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "mount"}], "someNewLinuxField": [1, 2, 3]},
        "annotations": {"dso.secrets/B": "dsofile://b"},
        "zzUnknownTopLevel": {"kept": true}
    }"#;

    #[test]
    fn sandbox_containers_have_no_references() {
        // A pod's annotations reach its pause container too (containerd's CRI).
        let pause = r#"{"process": {"env": ["A=dso://a"]}, "annotations": {
            "io.kubernetes.cri.container-type": "sandbox", "dso.secrets/B": "dsofile://b"}}"#;
        assert!(!references_in(pause.as_bytes()).unwrap());
        let app = pause.replace("\"sandbox\"", "\"container\"");
        assert!(references_in(app.as_bytes()).unwrap());
    }

    #[test]
    fn round_trip_keeps_unknown_fields_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(&path, SPEC).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let mut spec = Spec::load(dir.path()).unwrap();
        assert_eq!(spec.env(), vec!["A=dso://a".to_string()]);
        assert_eq!(spec.user(), (1000, 1000));
        assert_eq!(spec.annotations()["dso.secrets/B"], "dsofile://b");
        spec.env_mut().unwrap().push("C=d".into());
        spec.flush().unwrap();

        let after: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let before: Value = serde_json::from_str(SPEC).unwrap();
        assert_eq!(after["zzUnknownTopLevel"], before["zzUnknownTopLevel"]);
        assert_eq!(
            after["linux"]["someNewLinuxField"],
            before["linux"]["someNewLinuxField"]
        );
        assert_eq!(
            after["process"]["futureProcessField"],
            before["process"]["futureProcessField"]
        );
        assert_eq!(
            after["process"]["env"],
            serde_json::json!(["A=dso://a", "C=d"])
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // Nothing but config.json in the bundle: the temp file was renamed away.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.json")]);
    }

    #[test]
    fn bad_specs_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = Spec::load(dir.path()).err().unwrap().to_string();
        assert!(err.contains("config.json"), "{err}");
        fs::write(dir.path().join("config.json"), "{not json").unwrap();
        let err = Spec::load(dir.path()).err().unwrap().to_string();
        assert!(err.contains("not a valid OCI runtime spec"), "{err}");
        fs::write(dir.path().join("config.json"), "[1]").unwrap();
        assert!(Spec::load(dir.path()).is_err());
    }

    #[test]
    fn id_mapping() {
        let spec = Spec::from_slice(
            br#"{"ociVersion":"1.0.2","root":{"path":"r"},
                "linux":{"uidMappings":[{"containerID":0,"hostID":100000,"size":65536}],
                         "gidMappings":[{"containerID":0,"hostID":200000,"size":65536}]}}"#,
            PathBuf::from("x"),
        )
        .unwrap();
        assert_eq!(spec.host_ids(1000, 1000), Some((101000, 201000)));
        assert_eq!(spec.host_ids(70000, 0), None);
        let plain = Spec::from_slice(
            br#"{"ociVersion":"1.0.2","root":{"path":"r"}}"#,
            PathBuf::from("x"),
        )
        .unwrap();
        assert_eq!(plain.host_ids(5, 6), Some((5, 6)));
        // Found in review while writing the spec fuzz target: hostID + offset overflowed.
        let high = Spec::from_slice(
            br#"{"ociVersion":"1.0.2","root":{"path":"r"},
                "linux":{"uidMappings":[{"containerID":0,"hostID":4294967295,"size":10}]}}"#,
            PathBuf::from("x"),
        )
        .unwrap();
        assert_eq!(high.host_ids(0, 0), Some((u32::MAX, 0)));
        assert_eq!(high.host_ids(5, 0), None);
    }

    /// Found by fuzzing: file references in a spec without `process` made a `process` of
    /// `env` alone, which no longer parsed as a spec. Now an error before anything is written.
    #[test]
    fn env_needs_a_process() {
        let mut spec = Spec::from_slice(
            br#"{"ociVersion":"1.0.2","root":{"path":"r"}}"#,
            PathBuf::from("x"),
        )
        .unwrap();
        assert!(spec.env_mut().is_err());
        assert!(spec.doc().get("process").is_none());
    }
}

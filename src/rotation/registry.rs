//! The registry of managed containers: the state records `<state_dir>/<id>.json` that the create
//! flow writes (names, references and versions, never values). Records of containers that are
//! gone (init dead, or the delegate says stopped or unknown) are dropped.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::runtime::StateRecord;

/// One state record, with its file and raw JSON (fields dso does not know are kept on rewrite).
#[derive(Debug, Clone)]
pub struct Record {
    pub path: PathBuf,
    pub raw: serde_json::Value,
    pub rec: StateRecord,
}

impl Record {
    /// Records `version` for secret `si` and rewrites the file atomically (temp + rename).
    pub fn set_version(&mut self, si: usize, version: Option<&str>) -> std::io::Result<()> {
        if self.rec.secrets[si].version.as_deref() == version {
            return Ok(());
        }
        self.rec.secrets[si].version = version.map(str::to_string);
        if let Some(slot) = self
            .raw
            .get_mut("secrets")
            .and_then(|s| s.get_mut(si))
            .and_then(|s| s.as_object_mut())
        {
            slot.insert(
                "version".into(),
                version.map_or(serde_json::Value::Null, |v| v.into()),
            );
        }
        write_atomic(&self.path, &self.raw)
    }

    /// Records a new or renewed lease for secret `si` and rewrites the file atomically.
    pub fn set_lease(
        &mut self,
        si: usize,
        lease: &super::leases::LeaseState,
    ) -> std::io::Result<()> {
        self.rec.secrets[si].lease = Some(lease.clone());
        if let Some(slot) = self
            .raw
            .get_mut("secrets")
            .and_then(|s| s.get_mut(si))
            .and_then(|s| s.as_object_mut())
        {
            slot.insert(
                "lease".into(),
                serde_json::to_value(lease).map_err(std::io::Error::other)?,
            );
        }
        write_atomic(&self.path, &self.raw)
    }

    /// True while the container's init runs (and the delegate does not call it stopped).
    pub fn is_alive(&self) -> bool {
        let pid = self.rec.pid;
        if pid <= 0 || !Path::new(&format!("/proc/{pid}")).exists() {
            return false;
        }
        // runc's own record first (a file read); asking the delegate costs an exec per
        // container, which a rotation of many containers cannot afford.
        let state = runc_state_file(&self.rec).unwrap_or_else(|| delegate_state(&self.rec));
        match state {
            DelegateState::Running { pid: p } => p == 0 || p == pid,
            DelegateState::Gone => false,
            DelegateState::Unknown => true,
        }
    }
}

/// runc's root when none was recorded (runc's default for root).
const RUNC_DEFAULT_ROOT: &str = "/run/runc";

/// What runc's `<root>/<id>/state.json` says: the container is there with this init (pid and
/// start time both match the live process, so a recycled pid is not mistaken for it), or it
/// is gone. `None` when that file cannot tell (another delegate, an unreadable file): the
/// caller then asks the delegate.
fn runc_state_file(rec: &StateRecord) -> Option<DelegateState> {
    let is_runc = Path::new(&rec.delegate)
        .file_name()
        .is_some_and(|n| n == "runc");
    let root = match &rec.runc_root {
        Some(r) => r.clone(),
        // Another delegate keeps its state elsewhere, in its own format.
        None if is_runc => PathBuf::from(RUNC_DEFAULT_ROOT),
        None => return None,
    };
    if rec.id.is_empty() || rec.id.contains('/') || rec.id.starts_with('.') {
        return None;
    }
    let dir = root.join(&rec.id);
    let bytes = match fs::read(dir.join("state.json")) {
        Ok(b) => b,
        // The root is there but the container's dir is not: deleted.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (root.is_dir() && !dir.exists()).then_some(DelegateState::Gone);
        }
        Err(_) => return None,
    };
    // Only the two fields: the rest of runc's record (the whole spec, tens of KiB) is skipped
    // without being built into a tree, which a rotation does for every container.
    #[derive(serde::Deserialize)]
    struct RuncState {
        init_process_pid: i64,
        init_process_start: u64,
    }
    let v: RuncState = serde_json::from_slice(&bytes).ok()?;
    let (pid, start) = (
        i32::try_from(v.init_process_pid).ok()?,
        v.init_process_start,
    );
    match crate::runtime::process_start_time(pid) {
        Some(t) if t == start => Some(DelegateState::Running { pid }),
        _ => Some(DelegateState::Gone),
    }
}

enum DelegateState {
    Running {
        pid: i32,
    },
    Gone,
    /// The delegate could not be asked: trust the pid.
    Unknown,
}

fn delegate_state(rec: &StateRecord) -> DelegateState {
    let mut cmd = Command::new(&rec.delegate);
    if let Some(root) = &rec.runc_root {
        cmd.arg("--root").arg(root);
    }
    let out = match cmd
        .arg("state")
        .arg(&rec.id)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(out) => out,
        Err(_) => return DelegateState::Unknown,
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return if err.contains("does not exist") || err.contains("not exist") {
            DelegateState::Gone
        } else {
            DelegateState::Unknown
        };
    }
    let v: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(_) => return DelegateState::Unknown,
    };
    match v.get("status").and_then(|s| s.as_str()) {
        Some("stopped") => DelegateState::Gone,
        _ => DelegateState::Running {
            pid: v
                .get("pid")
                .and_then(|p| p.as_i64())
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0),
        },
    }
}

/// Every readable record in `state_dir` (temp files and unreadable ones skipped), by id.
pub fn load_records(state_dir: &Path) -> Vec<Record> {
    let Ok(rd) = fs::read_dir(state_dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let path = entry.path();
        let Ok(bytes) = fs::read(&path) else { continue };
        let Ok(raw) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let Ok(rec) = serde_json::from_value::<StateRecord>(raw.clone()) else {
            continue;
        };
        out.push(Record { path, raw, rec });
    }
    out.sort_by(|a, b| a.rec.id.cmp(&b.rec.id));
    out
}

/// Loads the records and removes those of containers that are gone; returns the live ones.
pub fn prune(state_dir: &Path) -> Vec<Record> {
    let mut live = Vec::new();
    for r in load_records(state_dir) {
        if r.is_alive() {
            live.push(r);
        } else {
            tracing::info!(container = %r.rec.id, "container is gone; dropping its record");
            // Leases are owed a revocation first: a record is dropped only once its leases
            // are written down where the agent will find them.
            if owe_leases(state_dir, &r.rec).is_ok() {
                let _ = fs::remove_file(&r.path);
            }
        }
    }
    live
}

/// Writes down a revocation for every lease of `rec` (a container that is gone).
pub fn owe_leases(state_dir: &Path, rec: &StateRecord) -> std::io::Result<()> {
    for s in &rec.secrets {
        if let Some(lease) = &s.lease
            && lease.id.is_some()
        {
            super::leases::owe(
                state_dir,
                &super::leases::Pending {
                    container: rec.id.clone(),
                    secret: s.name.clone(),
                    provider: s.provider.clone(),
                    lease: lease.clone(),
                    attempts: 0,
                    last_error: None,
                },
            )?;
        }
    }
    Ok(())
}

/// Writes JSON to `path` through a temp file in the same dir (0600), fsync, rename.
pub fn write_atomic(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut rnd = [0u8; 4];
    let _ = getrandom::getrandom(&mut rnd);
    let tmp = dir.join(format!(
        ".{file}.tmp-{}-{:08x}",
        std::process::id(),
        u32::from_ne_bytes(rnd)
    ));
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    fn record(id: &str, root: &Path, pid: i32) -> StateRecord {
        StateRecord {
            id: id.into(),
            bundle: "/nonexistent".into(),
            runc_root: Some(root.to_path_buf()),
            delegate: "/nonexistent/runc".into(),
            pid,
            config: "/nonexistent/dso.yaml".into(),
            secrets_dir: "/run/secrets".into(),
            secrets: Vec::new(),
            created: String::new(),
            workload: None,
            pid_start: None,
            secrets_mount: None,
        }
    }

    #[test]
    fn runc_state_file_decides_liveness_without_an_exec() {
        let root = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        let start = crate::runtime::process_start_time(me).expect("own start time");
        let write = |id: &str, pid: i32, start: u64| {
            fs::create_dir_all(root.path().join(id)).unwrap();
            fs::write(
                root.path().join(id).join("state.json"),
                format!(r#"{{"id":"{id}","init_process_pid":{pid},"init_process_start":{start}}}"#),
            )
            .unwrap();
        };
        write("live", me, start);
        assert!(matches!(
            super::runc_state_file(&record("live", root.path(), me)),
            Some(DelegateState::Running { pid }) if pid == me
        ));
        let rec = Record {
            path: root.path().join("live.json"),
            raw: serde_json::Value::Null,
            rec: record("live", root.path(), me),
        };
        assert!(rec.is_alive());
        // Same pid, another start time: a recycled pid, not our container.
        write("recycled", me, start + 1);
        assert!(matches!(
            super::runc_state_file(&record("recycled", root.path(), me)),
            Some(DelegateState::Gone)
        ));
        // Deleted from runc's root.
        assert!(matches!(
            super::runc_state_file(&record("deleted", root.path(), me)),
            Some(DelegateState::Gone)
        ));
        // No such root: runc's file cannot tell (another delegate); ask it.
        assert!(super::runc_state_file(&record("x", &root.path().join("nope"), me)).is_none());
    }

    use super::*;

    fn record_json(id: &str, pid: i32) -> serde_json::Value {
        serde_json::json!({
            "id": id, "bundle": "/nonexistent", "runc_root": null, "delegate": std::ffi::OsString::from("/nonexistent-runc"),
            "pid": pid, "config": "/etc/dso/dso.yaml", "secrets_dir": "/run/secrets",
            "secrets": [{"name": "db", "file": "db", "env": [], "provider": "local", "path": "db",
                         "key": null, "version": "1", "uid": 0, "gid": 0, "mode": 256,
                         "future_field": 7}],
            "created": "2026-01-01T00:00:00.000Z", "also_unknown": true
        })
    }

    #[test]
    fn loads_prunes_and_updates_versions() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        fs::write(
            dir.path().join("alive.json"),
            serde_json::to_vec(&record_json("alive", me)).unwrap(),
        )
        .unwrap();
        fs::write(
            dir.path().join("dead.json"),
            serde_json::to_vec(&record_json("dead", i32::MAX - 1)).unwrap(),
        )
        .unwrap();
        fs::write(dir.path().join(".x.json.tmp-1"), "{").unwrap();
        fs::write(dir.path().join("broken.json"), "{").unwrap();
        assert_eq!(load_records(dir.path()).len(), 2);
        let mut live = prune(dir.path());
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].rec.id, "alive");
        assert!(!dir.path().join("dead.json").exists());

        live[0].set_version(0, Some("2")).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("alive.json")).unwrap()).unwrap();
        assert_eq!(v["secrets"][0]["version"], "2");
        assert_eq!(v["secrets"][0]["future_field"], 7);
        assert_eq!(v["also_unknown"], true);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("alive"))
            .collect();
        assert_eq!(names, ["alive.json"], "no temp file left");
    }
}

//! The registry of managed containers: the state records `<state_dir>/<id>.json` that the create
//! flow writes (names, references and versions, never values). Records of containers that are
//! gone (init dead, or the delegate says stopped or unknown) are dropped.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::inotify::Inotify;

use crate::state::StateRecord;

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
        if let Some(slot) = self.raw_secret(si) {
            slot.insert(
                "version".into(),
                version.map_or(serde_json::Value::Null, |v| v.into()),
            );
        }
        write_record(&self.path, &self.raw)
    }

    /// Records a new or renewed lease for secret `si` and rewrites the file atomically.
    pub fn set_lease(
        &mut self,
        si: usize,
        lease: &super::leases::LeaseState,
    ) -> std::io::Result<()> {
        self.rec.secrets[si].lease = Some(lease.clone());
        if let Some(slot) = self.raw_secret(si) {
            slot.insert(
                "lease".into(),
                serde_json::to_value(lease).map_err(std::io::Error::other)?,
            );
        }
        write_record(&self.path, &self.raw)
    }

    /// Secret `si` of the record as read (its unknown fields kept when it is written back).
    fn raw_secret(&mut self, si: usize) -> Option<&mut serde_json::Map<String, serde_json::Value>> {
        self.raw
            .get_mut("secrets")
            .and_then(|s| s.get_mut(si))
            .and_then(|s| s.as_object_mut())
    }

    /// True while the container's init runs (and the delegate does not call it stopped).
    pub fn is_alive(&self) -> bool {
        is_alive(&self.rec)
    }

    /// Gone by what needs no exec: the init's start time, no process with its pid, or runc's
    /// own state file says so. A delegate other than runc is not asked (see [`prune_some`]).
    fn is_gone_without_exec(&self) -> bool {
        alive_without_exec(&self.rec) == Some(false)
    }
}

/// True while the container's init runs (and the delegate does not call it stopped).
fn is_alive(rec: &StateRecord) -> bool {
    // Asking the delegate costs an exec per container, which a rotation of many containers
    // cannot afford: only when nothing else can tell.
    alive_without_exec(rec).unwrap_or_else(|| alive_by(rec, delegate_state(rec)))
}

/// Liveness as far as it is known without an exec: by the init's start time, else gone when
/// no process has the init's pid, else what runc's own record says (a file read); `None` when
/// only the delegate can tell.
fn alive_without_exec(rec: &StateRecord) -> Option<bool> {
    if let Some(alive) = alive_by_start(rec) {
        return Some(alive);
    }
    if init_is_gone(rec.pid) {
        return Some(false);
    }
    runc_state_file(rec).map(|state| alive_by(rec, state))
}

/// Liveness by the init's start time, which records written since the start time was kept
/// hold (`None` for older ones): the process dso injected into still runs (not a zombie, not
/// a recycled pid), and runc, where it is the delegate, still has the container's directory.
/// runc removes that only once the init is dead, and knows no other proof of life than the
/// same pid and start time: its state file (the whole spec, tens of KiB) need not be read,
/// nor another delegate asked with an exec (one per container when the agent starts).
fn alive_by_start(rec: &StateRecord) -> Option<bool> {
    let start = rec.pid_start?;
    if rec.pid <= 0 || crate::state::process_start_time(rec.pid) != Some(start) {
        return Some(false);
    }
    Some(match runc_dirs(rec) {
        Some((root, dir)) => dir.is_dir() || !root.is_dir(),
        None => true,
    })
}

fn alive_by(rec: &StateRecord, state: DelegateState) -> bool {
    match state {
        DelegateState::Running { pid: p } => p == 0 || p == rec.pid,
        DelegateState::Gone => false,
        DelegateState::Unknown => true,
    }
}

/// No process `pid`: the container's init is gone.
fn init_is_gone(pid: i32) -> bool {
    pid <= 0 || !Path::new(&format!("/proc/{pid}")).exists()
}

/// runc's root when none was recorded (runc's default for root).
const RUNC_DEFAULT_ROOT: &str = "/run/runc";

/// runc's root and the container's directory in it; `None` for another delegate (which keeps
/// its state elsewhere, in its own format) or an id that is not one name.
fn runc_dirs(rec: &StateRecord) -> Option<(PathBuf, PathBuf)> {
    let is_runc = Path::new(&rec.delegate)
        .file_name()
        .is_some_and(|n| n == "runc");
    let root = match &rec.runc_root {
        Some(r) => r.clone(),
        None if is_runc => PathBuf::from(RUNC_DEFAULT_ROOT),
        None => return None,
    };
    if rec.id.is_empty() || rec.id.contains('/') || rec.id.starts_with('.') {
        return None;
    }
    let dir = root.join(&rec.id);
    Some((root, dir))
}

/// What runc's `<root>/<id>/state.json` says: the container is there with this init (pid and
/// start time both match the live process, so a recycled pid is not mistaken for it), or it
/// is gone. `None` when that file cannot tell (another delegate, an unreadable file): the
/// caller then asks the delegate.
fn runc_state_file(rec: &StateRecord) -> Option<DelegateState> {
    let (root, dir) = runc_dirs(rec)?;
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
    match crate::state::process_start_time(pid) {
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
        if let Some(r) = read_record(&entry.path()) {
            out.push(r);
        }
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
            drop_record(state_dir, &r.path, &r.rec);
        }
    }
    live
}

/// Drops the records of containers that are gone among up to `k` records of `state_dir`,
/// picked from a random place in it, never `keep`'s (the create that calls it).
/// A create with no agent running calls it: without it, nothing removed the records of
/// deleted containers, and they filled the state dir's tmpfs (`/run`). Checking a few records
/// per create keeps at most about `1/k` of the records dead while creates go on, at a cost
/// that does not grow with the number of containers. A record with a lease is left for the
/// agent, which owes and revokes it ([`prune`]).
pub fn prune_some(state_dir: &Path, keep: &str, k: usize) {
    let Ok(rd) = fs::read_dir(state_dir) else {
        return;
    };
    let keep = format!("{keep}.json");
    let mut names: Vec<_> = rd
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| {
            let n = n.to_string_lossy();
            !n.starts_with('.') && n.ends_with(".json") && *n != *keep
        })
        .collect();
    if names.is_empty() {
        return;
    }
    let mut seed = [0u8; 8];
    let _ = getrandom::getrandom(&mut seed);
    let start = u64::from_ne_bytes(seed) % names.len() as u64;
    names.rotate_left(usize::try_from(start).unwrap_or(0));
    for name in names.into_iter().take(k) {
        let path = state_dir.join(name);
        let Some(r) = read_record(&path) else {
            continue;
        };
        // Not `is_alive`: for a delegate other than runc it execs the delegate, per live
        // container; such records are left to the agent.
        let leased = r.rec.secrets.iter().any(|s| s.lease.is_some());
        if !leased && r.is_gone_without_exec() {
            let _ = fs::remove_file(&path);
        }
    }
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
    write_json(path, value, true)
}

/// Rewrites a state record: temp + rename, without fsync, as the create flow writes it
/// ([`super::register`]). A record lives only as long as its container, and rename
/// keeps it whole; an fsync per container made a rotation of 100 containers on a disk-backed
/// state dir wait for 100 journal commits (issue 18).
fn write_record(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    write_json(path, value, false)
}

fn write_json(path: &Path, value: &serde_json::Value, sync: bool) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let opts = crate::atomic_file::Options {
        durable: sync,
        ..crate::atomic_file::Options::new(0o600)
    };
    crate::atomic_file::write(path, &bytes, opts)
}

/// The agent's registry, kept in memory instead of rescanned: the state dir is watched with
/// inotify (a record written, renamed in or removed is read or dropped by name), and each
/// container's init is held by a pidfd, which becomes readable when that process exits. A
/// refresh with nothing new costs one `read` on the inotify fd and one `poll` over the pidfds,
/// however many containers there are; the full scan runs once, and again only when the kernel
/// says it dropped events (queue overflow) or the state dir itself went away.
///
/// inotify comes from nix (already a dependency, `inotify` feature): the `inotify` crate
/// would add a dependency for the same three syscalls.
pub struct LiveRegistry {
    state_dir: PathBuf,
    inotify: Option<Inotify>,
    /// By file name (`<id>.json`).
    entries: std::collections::BTreeMap<std::ffi::OsString, Entry>,
}

/// One live container. The record's JSON is kept as its bytes (about 1 KiB) and turned into a
/// tree only when a rotation takes the record out: 1000 trees cost the agent several MiB.
struct Entry {
    path: PathBuf,
    bytes: Box<[u8]>,
    rec: StateRecord,
    /// The container's init; `None` when it could not be opened (then liveness is checked the
    /// old way, with a file read per refresh).
    pidfd: Option<OwnedFd>,
}

impl Entry {
    fn record(&self) -> Option<Record> {
        Some(Record {
            path: self.path.clone(),
            raw: serde_json::from_slice(&self.bytes).ok()?,
            rec: self.rec.clone(),
        })
    }

    fn is_alive(&self) -> bool {
        is_alive(&self.rec)
    }
}

impl LiveRegistry {
    /// An empty registry of `state_dir`; the first [`refresh`](Self::refresh) fills it.
    pub fn new(state_dir: &Path) -> LiveRegistry {
        LiveRegistry {
            state_dir: state_dir.to_path_buf(),
            inotify: None,
            entries: Default::default(),
        }
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// How many live containers the registry holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The live containers' records (without their JSON), by file name.
    pub fn records(&self) -> impl Iterator<Item = &StateRecord> {
        self.entries.values().map(|e| &e.rec)
    }

    /// The live records `want` selects, as [`prune`] would return them (by id).
    pub fn take(&self, want: impl Fn(&StateRecord) -> bool) -> Vec<Record> {
        let mut out: Vec<Record> = self
            .entries
            .values()
            .filter(|e| want(&e.rec))
            .filter_map(Entry::record)
            .collect();
        out.sort_by(|a, b| a.rec.id.cmp(&b.rec.id));
        out
    }

    /// Brings the registry up to date: new and rewritten records read, removed ones dropped,
    /// records of containers that are gone dropped as [`prune`] drops them (leases owed first).
    pub fn refresh(&mut self) {
        if self.inotify.is_none() {
            self.watch_and_scan();
        } else if self.drain_events() {
            // The kernel dropped events (or the dir went away): read everything again.
            self.inotify = None;
            self.watch_and_scan();
        }
        self.drop_dead();
    }

    /// Sets the watch up, then reads every record (in that order: a record written between the
    /// two is seen by the scan or by an event, never missed). Without a watch (no state dir
    /// yet, no inotify) the next refresh tries again; meanwhile this is a plain scan.
    fn watch_and_scan(&mut self) {
        use nix::sys::inotify::{AddWatchFlags, InitFlags};
        let flags = AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR;
        self.inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .ok()
            .filter(|i| i.add_watch(&self.state_dir, flags).is_ok());
        let mut old = std::mem::take(&mut self.entries);
        if let Ok(rd) = fs::read_dir(&self.state_dir) {
            for entry in rd.flatten() {
                let name = entry.file_name();
                if !is_record_name(&name) {
                    continue;
                }
                if let Some(e) = read_entry(&entry.path()) {
                    let kept = old.remove(&name);
                    self.admit(name, e, kept);
                }
            }
        }
        drop(old);
        trim_heap();
    }

    /// Reads the pending inotify events and applies them. True when a rescan is needed.
    fn drain_events(&mut self) -> bool {
        use nix::sys::inotify::AddWatchFlags as F;
        let Some(ino) = &self.inotify else {
            return true;
        };
        let mut changed: std::collections::BTreeMap<std::ffi::OsString, bool> = Default::default();
        loop {
            match ino.read_events() {
                Ok(evs) if evs.is_empty() => break,
                Ok(evs) => {
                    for ev in evs {
                        if ev.mask.intersects(
                            F::IN_Q_OVERFLOW | F::IN_IGNORED | F::IN_DELETE_SELF | F::IN_MOVE_SELF,
                        ) {
                            return true;
                        }
                        let Some(name) = ev.name else { continue };
                        if !is_record_name(&name) {
                            continue;
                        }
                        // The last event of a name decides: present (read it) or gone.
                        let present = ev.mask.intersects(F::IN_CLOSE_WRITE | F::IN_MOVED_TO);
                        changed.insert(name, present);
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return true,
            }
        }
        for (name, present) in changed {
            let kept = self.entries.remove(&name);
            if !present {
                continue;
            }
            let path = self.state_dir.join(&name);
            // Gone again already, or unreadable: a later event brings it back.
            if let Some(e) = read_entry(&path) {
                self.admit(name, e, kept);
            }
        }
        false
    }

    /// Takes `r` in: a record already held for the same container and init keeps its pidfd
    /// (the agent rewriting versions must not cost a liveness check per container); a new one
    /// is checked as [`prune`] checks it and its init is opened.
    fn admit(&mut self, name: std::ffi::OsString, mut new: Entry, kept: Option<Entry>) {
        if let Some(e) = kept
            && e.rec.id == new.rec.id
            && e.rec.pid == new.rec.pid
            && e.pidfd.is_some()
        {
            new.pidfd = e.pidfd;
            self.entries.insert(name, new);
            return;
        }
        // The pidfd first, then the check: if the check passes, the fd holds that very
        // process (a pid recycled after the check cannot slip in).
        new.pidfd = pidfd_open(new.rec.pid);
        if new.is_alive() {
            self.entries.insert(name, new);
        } else {
            drop_record(&self.state_dir, &new.path, &new.rec);
        }
    }

    /// Drops the records whose init has exited.
    fn drop_dead(&mut self) {
        use nix::poll::{PollFd, PollFlags, PollTimeout};
        let mut dead: Vec<std::ffi::OsString> = Vec::new();
        {
            let (names, mut fds): (Vec<_>, Vec<_>) = self
                .entries
                .iter()
                .filter_map(|(n, e)| {
                    e.pidfd
                        .as_ref()
                        .map(|fd| (n, PollFd::new(fd.as_fd(), PollFlags::POLLIN)))
                })
                .unzip();
            if !fds.is_empty() && nix::poll::poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) > 0 {
                for (n, fd) in names.iter().zip(&fds) {
                    if fd.revents().is_some_and(|r| !r.is_empty()) {
                        dead.push((*n).clone());
                    }
                }
            }
        }
        // Without a pidfd, the way prune checks.
        dead.extend(
            self.entries
                .iter()
                .filter(|(_, e)| e.pidfd.is_none() && !e.is_alive())
                .map(|(n, _)| n.clone()),
        );
        for n in dead {
            if let Some(e) = self.entries.remove(&n) {
                drop_record(&self.state_dir, &e.path, &e.rec);
            }
        }
    }
}

/// `<id>.json`, not a temp file.
fn is_record_name(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    !name.starts_with('.') && name.ends_with(".json")
}

/// One record file as the registry keeps it, or `None` when it cannot be read or parsed.
fn read_entry(path: &Path) -> Option<Entry> {
    let bytes = fs::read(path).ok()?;
    let rec = serde_json::from_slice::<StateRecord>(&bytes).ok()?;
    Some(Entry {
        path: path.to_path_buf(),
        bytes: bytes.into_boxed_slice(),
        rec,
        pidfd: None,
    })
}

/// Gives the memory freed by a scan back to the system (glibc keeps it otherwise, and an
/// agent's RSS would stay at its peak).
pub(crate) fn trim_heap() {
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only releases free heap memory; no pointer is involved. No safe
    // wrapper exists (glibc-only).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Caps glibc's malloc at two arenas. By default each thread that allocates (the agent's 16
/// listener workers, each serving handed-over creates) may get an arena of its own, up to 8 per
/// core, and every arena keeps what it freed: 20 creates of 100 secrets through the agent left
/// it at 16.8 MiB, 11.0 MiB with two arenas (issue 18 point 4, RSS ≤ 20 MiB). Called by the
/// agent before it starts a thread.
pub(crate) fn limit_heap_arenas() {
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only sets an allocator parameter; no pointer is involved. No safe
    // wrapper exists (glibc-only).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// One record file, or `None` when it cannot be read or parsed.
fn read_record(path: &Path) -> Option<Record> {
    let bytes = fs::read(path).ok()?;
    let raw = serde_json::from_slice::<serde_json::Value>(&bytes).ok()?;
    let rec = serde_json::from_value::<StateRecord>(raw.clone()).ok()?;
    Some(Record {
        path: path.to_path_buf(),
        raw,
        rec,
    })
}

/// What [`prune`] does with the record of a container that is gone. Leases are owed a
/// revocation first: a record is dropped only once its leases are written down where the
/// agent will find them.
fn drop_record(state_dir: &Path, path: &Path, rec: &StateRecord) {
    tracing::info!(container = %rec.id, "container is gone; dropping its record");
    if owe_leases(state_dir, rec).is_ok() {
        let _ = fs::remove_file(path);
    }
}

/// A pidfd of `pid` (Linux 5.3+), `None` when it cannot be had (old kernel, no such process,
/// out of descriptors).
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    if pid <= 0 {
        return None;
    }
    let pid = rustix::process::Pid::from_raw(pid)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
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
        let start = crate::state::process_start_time(me).expect("own start time");
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

    #[test]
    fn the_init_start_time_decides_liveness_without_reading_runc_state() {
        let root = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        let start = crate::state::process_start_time(me).expect("own start time");
        let with_start = |id: &str, root: &Path, start: u64| StateRecord {
            pid_start: Some(start),
            ..record(id, root, me)
        };
        // runc's directory is there, with no state file in it: not read.
        fs::create_dir_all(root.path().join("live")).unwrap();
        assert_eq!(
            alive_by_start(&with_start("live", root.path(), start)),
            Some(true)
        );
        assert!(is_alive(&with_start("live", root.path(), start)));
        // Same pid, another start time: the init exited and the pid was given again.
        assert_eq!(
            alive_by_start(&with_start("live", root.path(), start + 1)),
            Some(false)
        );
        // runc deleted the container: its directory is gone from runc's root.
        assert_eq!(
            alive_by_start(&with_start("deleted", root.path(), start)),
            Some(false)
        );
        // Another delegate (no runc root): the init's start time alone.
        let other = StateRecord {
            runc_root: None,
            delegate: "/nonexistent/crun".into(),
            ..with_start("other", root.path(), start)
        };
        assert_eq!(alive_by_start(&other), Some(true));
        // A record from before start times were kept: the older checks decide.
        assert_eq!(alive_by_start(&record("live", root.path(), me)), None);
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

    #[test]
    fn a_create_drops_a_few_records_of_gone_containers() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        let write = |id: &str, v: &serde_json::Value| {
            let path = dir.path().join(format!("{id}.json"));
            fs::write(path, serde_json::to_vec(v).unwrap()).unwrap();
        };
        for i in 0..5 {
            write(
                &format!("dead{i}"),
                &record_json(&format!("dead{i}"), i32::MAX - 1),
            );
        }
        write("alive", &record_json("alive", me));
        // The create's own record, and a gone container's with a lease (the agent's to revoke).
        write("mine", &record_json("mine", i32::MAX - 1));
        let mut leased = record_json("leased", i32::MAX - 1);
        leased["secrets"][0]["lease"] = serde_json::json!({"engine": "database", "id": "database/creds/x/1", "since": 0, "ttl": 60, "renewable": true});
        write("leased", &leased);
        assert!(
            read_record(&dir.path().join("leased.json"))
                .unwrap()
                .rec
                .secrets[0]
                .lease
                .is_some()
        );

        prune_some(dir.path(), "mine", 3);
        let left = |prefix: &str| {
            fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(prefix)
                })
                .count()
        };
        assert!(left("dead") >= 2, "at most 3 records looked at");
        prune_some(dir.path(), "mine", 100);
        assert_eq!(left("dead"), 0);
        for kept in ["alive.json", "mine.json", "leased.json"] {
            assert!(dir.path().join(kept).exists(), "{kept}");
        }
    }

    #[test]
    fn live_registry_follows_the_state_dir_and_the_inits() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let write = |name: &str, id: &str, pid: i32| {
            // As the create flow writes it: temp + rename.
            let tmp = dir.path().join(format!(".{name}.tmp"));
            fs::write(&tmp, serde_json::to_vec(&record_json(id, pid)).unwrap()).unwrap();
            fs::rename(&tmp, dir.path().join(name)).unwrap();
        };
        write("before.json", "before", child.id() as i32);
        let mut reg = LiveRegistry::new(dir.path());
        reg.refresh();
        let ids =
            |reg: &LiveRegistry| -> Vec<String> { reg.records().map(|r| r.id.clone()).collect() };
        assert_eq!(ids(&reg), ["before"]);
        // Found through inotify, not a rescan: a new live record, a dead one, a temp file.
        let me = std::process::id() as i32;
        write("after.json", "after", me);
        write("dead.json", "dead", i32::MAX - 1);
        fs::write(dir.path().join(".x.json.tmp-1"), "{").unwrap();
        reg.refresh();
        assert_eq!(ids(&reg), ["after", "before"]);
        assert!(
            !dir.path().join("dead.json").exists(),
            "a dead record is dropped"
        );
        // A rewrite (the agent recording a version) is read again.
        let mut r = reg.take(|r| r.id == "after").pop().unwrap();
        r.set_version(0, Some("9")).unwrap();
        reg.refresh();
        let v = reg.records().find(|r| r.id == "after").unwrap();
        assert_eq!(v.secrets[0].version.as_deref(), Some("9"));
        // The init exits: its pidfd says so, and the record is dropped.
        child.kill().unwrap();
        child.wait().unwrap();
        reg.refresh();
        assert_eq!(ids(&reg), ["after"]);
        assert!(!dir.path().join("before.json").exists());
        // Removed by someone else (dso-runc delete).
        fs::remove_file(dir.path().join("after.json")).unwrap();
        reg.refresh();
        assert!(reg.is_empty());
    }
}

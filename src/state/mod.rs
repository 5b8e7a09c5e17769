//! The state record `<state_dir>/<id>.json`: what dso keeps about each container it created
//! (names, references, versions and leases, never values). One owner for the writer
//! ([`register`], the create flow) and the readers ([`registry`], the agent and `dso rotate`).

pub mod leases;
pub mod registry;

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::Workload;

pub use registry::{LiveRegistry, Record, load_records, prune};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("registering container in {path}: {source}")]
    Register {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What dso keeps about a container it created: names and references, never values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateRecord {
    pub id: String,
    pub bundle: PathBuf,
    /// runc's `--root`, if given.
    pub runc_root: Option<PathBuf>,
    pub delegate: OsString,
    pub pid: i32,
    pub config: PathBuf,
    pub secrets_dir: String,
    pub secrets: Vec<StateSecret>,
    pub created: String,
    /// Who the container is (engine, name…), as established at create; rotation checks the
    /// policy against it again. Absent in records written before access policy existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    /// The init's start time (clock ticks since boot, `/proc/<pid>/stat`), so that a rotation
    /// writes only while `pid` is still this container's init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// The secrets tmpfs as seen at create; a rotation writes only into the same one. Both
    /// are absent in records of older versions, which are not rotated (restart the container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_mount: Option<MountIdentity>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateSecret {
    pub name: String,
    pub file: Option<String>,
    pub env: Vec<String>,
    pub provider: String,
    pub path: String,
    pub key: Option<String>,
    pub version: Option<String>,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// `uid`/`gid` as the host sees them (through the bundle's user-namespace mappings), so
    /// that a rotation need not parse the bundle's spec again. Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ids: Option<(u32, u32)>,
    /// A dynamic secret's lease (id and expiry, never the value); absent for kv secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<leases::LeaseState>,
}

/// Which tmpfs, and which directory in it, a container's secrets dir is: recorded at create
/// (when the container's init has not run a single instruction of the image yet, so it is the
/// tmpfs dso added to the spec) and required on every later write. A root PID 1 that `chroot`s,
/// `unshare`s its mount namespace or mounts over the dir would otherwise have the agent's next
/// write land in whatever it sees now (a pod's shared `emptyDir`, a host path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountIdentity {
    pub dev: u64,
    pub ino: u64,
}

/// Field 22 of `/proc/<pid>/stat`: the process's start time in clock ticks since boot; `None`
/// for a process that is gone or dead (a zombie waiting to be reaped is not running).
///
/// One `read` into a buffer on the stack: the agent asks this of every container it admits at
/// start (over a third of its start-up scan at 1000 containers, issue 18), and `read_to_string`
/// made more system calls (a `statx` for a size that a /proc file does not have, and reads
/// until the end).
pub fn process_start_time(pid: i32) -> Option<u64> {
    use std::io::Read;
    // The line is at most 52 numbers and a command name of at most 64 bytes.
    let mut buf = [0u8; 2048];
    let n = std::fs::File::open(format!("/proc/{pid}/stat"))
        .and_then(|mut f| f.read(&mut buf))
        .ok()?;
    let stat = buf.get(..n).filter(|b| b.len() < buf.len())?;
    // The command name (field 2) may hold spaces, parentheses and bytes that are not UTF-8:
    // count from the last ')'.
    let after = stat.iter().rposition(|&b| b == b')')? + 1;
    let mut rest = std::str::from_utf8(&stat[after..]).ok()?.split_whitespace();
    if matches!(rest.next(), Some("Z" | "X" | "x")) {
        return None;
    }
    rest.nth(18)?.parse().ok()
}

/// Writes the state record `<state_dir>/<id>.json` (0600 in a 0700 dir), atomically (temp + rename).
pub fn register(state_dir: &Path, rec: &StateRecord) -> Result<(), StateError> {
    let path = state_dir.join(format!("{}.json", rec.id));
    let serr = |source| StateError::Register {
        path: path.clone(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(serr)?;
    // A record under this id already (the container was restarted): its leases are owed a
    // revocation before the record is replaced.
    if let Ok(bytes) = fs::read(&path)
        && let Ok(old) = serde_json::from_slice::<StateRecord>(&bytes)
    {
        registry::owe_leases(state_dir, &old).map_err(serr)?;
    }
    let bytes = serde_json::to_vec_pretty(rec).map_err(|e| serr(std::io::Error::other(e)))?;
    // No fsync: the record describes a running container, which does not outlive a reboot
    // (the state dir is /run/dso, a tmpfs, by default); rename keeps it whole for readers.
    crate::atomic_file::write(&path, &bytes, crate::atomic_file::Options::new(0o600)).map_err(serr)
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_start_time_reads_field_22_and_refuses_the_gone() {
        let me = std::process::id() as i32;
        // Field 22 the long way, to check the one-read parse against.
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let want: u64 = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .nth(19)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(super::process_start_time(me), Some(want));
        // A child: running, then a zombie, then reaped.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert!(super::process_start_time(pid).is_some());
        child.kill().unwrap();
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(super::process_start_time(pid), None, "a zombie");
        child.wait().unwrap();
        assert_eq!(super::process_start_time(pid), None, "reaped");
        assert_eq!(super::process_start_time(0), None);
        assert_eq!(super::process_start_time(-1), None);
    }
}

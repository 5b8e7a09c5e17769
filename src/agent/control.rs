//! The agent's control socket (`agent.socket`, default `<runtime.state_dir>/dso.sock`, i.e.
//! `/run/dso/dso.sock`): one JSON request per connection, one JSON line back.
//!
//! | request | who may ask | answer |
//! | --- | --- | --- |
//! | `{"op":"ping"}` | anyone who can connect | `{"ok":true,"version":"…"}` |
//! | `{"op":"status"}` | root, the socket's group | containers, secrets, versions, last rotation, provider health — never values |
//! | `{"op":"rotate","secret":"db"}` / `{"op":"rotate","container":"id"}` | root, the group | the outcomes |
//! | `{"op":"fetch","workload":{…},"requests":[{"secret","provider","path","key","version"}]}` | **root only** | per request `{"value":"<base64>","version"}` or `{"error"}`; each request is checked against the access policy for the workload |
//!
//! The peer is identified by the kernel (`SO_PEERCRED`), not by anything it says. The socket is
//! 0660, owned by root and `agent.group` (when set); values leave the agent only for uid 0, the
//! uid dso-runc runs as. Values are encoded into and decoded from zeroizing buffers.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::audit::Event;
use crate::policy::{self, Ask, Workload};
use crate::providers::{FetchRequest, Fetched};
use crate::rotation::{self, Mode, OutcomeStatus, Rotator, Selector, Strategy};
use crate::secrets::SecretValue;

/// The socket's file name in the state dir when dso.yaml does not place it (so the default is
/// `/run/dso/dso.sock`, and a shim and an agent that share a state dir find each other).
pub const DEFAULT_SOCKET_NAME: &str = "dso.sock";
/// The largest request accepted (a fetch of many secrets is still far below).
const MAX_REQUEST: u64 = 1 << 20;
/// The largest answer a client reads (values are capped by the tmpfs size anyway).
const MAX_ANSWER: u64 = 64 << 20;

/// The socket path of a config.
pub fn socket_path(cfg: &crate::config::Config) -> PathBuf {
    cfg.agent
        .socket
        .clone()
        .unwrap_or_else(|| cfg.runtime.state_dir.join(DEFAULT_SOCKET_NAME))
}

/// Who is on the other end, as the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// `SO_PEERCRED` of a connected unix socket.
pub fn peer_of(stream: &UnixStream) -> std::io::Result<Peer> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid fd, and `cred`/`len` describe a writable ucred of the right size.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Peer {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// What a peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// `ping` only.
    None,
    /// `status` and `rotate`.
    Operate,
    /// Everything, values included.
    Root,
}

/// Root gets everything; a member of the socket's group (primary or supplementary, read from
/// `/proc/<pid>/status` of the peer) may operate; anyone else may only ping.
pub fn access_of(peer: Peer, group: Option<u32>) -> Access {
    if peer.uid == 0 {
        return Access::Root;
    }
    let Some(g) = group else {
        return Access::None;
    };
    if peer.gid == g || supplementary_groups(peer.pid).contains(&g) {
        Access::Operate
    } else {
        Access::None
    }
}

fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Resolves `agent.group` (a name from /etc/group, or a number).
pub fn resolve_group(name: &str) -> Result<u32, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    nix::unistd::Group::from_name(name)
        .map_err(|e| format!("agent.group {name:?}: {e}"))?
        .map(|g| g.gid.as_raw())
        .ok_or_else(|| format!("agent.group {name:?}: no such group in /etc/group"))
}

/// Binds the socket: replaces a stale socket file (never anything else), mode 0660, group
/// `group`. Its directory, when dso creates it or it is dso's own `state_dir`, gets 0700, or
/// 0711 when a group needs to reach the socket; any other existing directory (`/run` for
/// `agent.socket: /run/dso.sock`) is left as it is.
pub fn bind(path: &Path, group: Option<u32>, state_dir: &Path) -> Result<UnixListener, String> {
    let what = |e: std::io::Error| format!("control socket {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        let ours = !dir.exists() || dir == state_dir;
        std::fs::create_dir_all(dir).map_err(what)?;
        let mode = if group.is_some() { 0o711 } else { 0o700 };
        let meta = std::fs::metadata(dir).map_err(what)?;
        if ours && meta.permissions().mode() & 0o7777 != mode {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(what)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "control socket {}: another agent is listening there",
                    path.display()
                ));
            }
            std::fs::remove_file(path).map_err(what)?;
        }
        Ok(_) => {
            return Err(format!(
                "control socket {}: something that is not a socket is in the way",
                path.display()
            ));
        }
        Err(_) => {}
    }
    // Bound under a temporary name, given its mode and group, then renamed into place: the
    // socket is never reachable at its path with the umask's permissions.
    let tmp = path.with_file_name(format!(
        ".{}.{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(what)?;
    let finish = || -> std::io::Result<()> {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660))?;
        if let Some(g) = group {
            nix::unistd::chown(&tmp, None, Some(nix::unistd::Gid::from_raw(g)))?;
        }
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = finish() {
        let _ = std::fs::remove_file(&tmp);
        return Err(what(e));
    }
    Ok(listener)
}

#[derive(Debug, Deserialize)]
struct Request {
    op: String,
    /// `fetch`: the SHA-256 of the client's dso.yaml; the agent serves only a client whose
    /// config is the one it runs with (the same provider names must mean the same providers).
    #[serde(default)]
    config_digest: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    container: Option<String>,
    #[serde(default)]
    requests: Vec<WireRequest>,
    /// `fetch`: the container the values are for, as the client established it.
    #[serde(default)]
    workload: Option<Workload>,
}

/// One fetch, as it travels (no value in it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct WireRequest {
    /// The `secrets:` entry asked for; None for an inline reference.
    #[serde(default)]
    pub secret: Option<String>,
    pub provider: String,
    pub path: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
}

/// Serves connections until the listener fails; one short-lived thread per connection.
pub fn serve(listener: UnixListener, rotator: Arc<Rotator>, group: Option<u32>) {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let rotator = rotator.clone();
        std::thread::spawn(move || {
            let _ = handle(stream, &rotator, group);
        });
    }
}

fn handle(mut stream: UnixStream, rotator: &Rotator, group: Option<u32>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let peer = peer_of(&stream)?;
    let access = access_of(peer, group);
    let mut line = Vec::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_until(b'\n', &mut line)?;
    let answer: Zeroizing<Vec<u8>> = match serde_json::from_slice::<Request>(&line) {
        Err(e) => plain(serde_json::json!({"ok": false, "error": format!("bad request: {e}")})),
        Ok(req) => answer(&req, access, peer, rotator),
    };
    stream.write_all(&answer)?;
    stream.write_all(b"\n")
}

fn plain(v: serde_json::Value) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(v.to_string().into_bytes())
}

fn denied(op: &str, peer: Peer) -> Zeroizing<Vec<u8>> {
    tracing::warn!(
        uid = peer.uid,
        pid = peer.pid,
        op,
        "control socket: refused"
    );
    plain(serde_json::json!({
        "ok": false,
        "error": format!("permission denied: uid {} may not {op}", peer.uid),
    }))
}

fn answer(req: &Request, access: Access, peer: Peer, rotator: &Rotator) -> Zeroizing<Vec<u8>> {
    match req.op.as_str() {
        "ping" => plain(serde_json::json!({"ok": true, "version": env!("CARGO_PKG_VERSION")})),
        "status" if access >= Access::Operate => plain(status_json(rotator)),
        "rotate" if access >= Access::Operate => {
            let sel = match (&req.secret, &req.container) {
                (Some(s), None) => Selector::Secret(s.clone()),
                (None, Some(c)) => Selector::Container(c.clone()),
                _ => {
                    return plain(
                        serde_json::json!({"ok": false, "error": "rotate needs one of secret, container"}),
                    );
                }
            };
            // In the agent's log too: a rotation asked for by `dso rotate` is as much the
            // agent's work as one it started itself.
            eprintln!(
                "dso agent: `dso rotate` by uid {} (pid {}): {}",
                peer.uid,
                peer.pid,
                match &sel {
                    Selector::Secret(s) => format!("secret {s:?}"),
                    Selector::Container(c) => format!("container {c:?}"),
                    _ => "everything".to_string(),
                }
            );
            let done = rotator.rotate(&sel, Mode::Force);
            if done.is_empty() {
                eprintln!("dso agent: `dso rotate`: no running container matched");
            }
            super::report(&done);
            let outcomes: Vec<serde_json::Value> = done.iter().map(outcome_json).collect();
            plain(serde_json::json!({"ok": true, "outcomes": outcomes}))
        }
        "fetch" if access == Access::Root => {
            if req.config_digest.as_deref() != Some(rotator.config().digest.as_str()) {
                return plain(serde_json::json!({
                    "ok": false,
                    "error": "the client's dso.yaml is not the agent's; fetch directly",
                }));
            }
            let workload = req
                .workload
                .clone()
                .unwrap_or_else(|| Workload::unknown("", "the client named no workload"));
            fetch_answer(&req.requests, &workload, rotator)
        }
        "status" | "rotate" | "fetch" => denied(&req.op, peer),
        other => plain(serde_json::json!({"ok": false, "error": format!("unknown op {other:?}")})),
    }
}

/// An outcome as JSON (names, versions, status; never a value).
pub fn outcome_json(o: &rotation::Outcome) -> serde_json::Value {
    let (status, error) = match &o.status {
        OutcomeStatus::Rotated => ("rotated", None),
        OutcomeStatus::Unchanged => ("unchanged", None),
        OutcomeStatus::EnvNeedsRestart => ("env_needs_restart", None),
        OutcomeStatus::Failed(m) => ("failed", Some(m.clone())),
    };
    serde_json::json!({
        "container": o.container, "secret": o.secret, "version": o.version,
        "status": status, "error": error,
    })
}

/// The managed containers (from the state dir), with what this agent knows about them.
pub fn status_json(rotator: &Rotator) -> serde_json::Value {
    let cfg = rotator.config();
    let cfg = &*cfg;
    let records = rotation::prune(&cfg.runtime.state_dir);
    let containers: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.rec.id,
                "name": r.rec.workload.as_ref().map(Workload::label),
                "workload": r.rec.workload,
                "pid": r.rec.pid,
                "bundle": r.rec.bundle,
                "created": r.rec.created,
                "secrets_dir": r.rec.secrets_dir,
                "secrets": r.rec.secrets.iter().map(|s| serde_json::json!({
                    "name": s.name,
                    "provider": s.provider,
                    "path": s.path,
                    "key": s.key,
                    "version": s.version,
                    "file": s.file,
                    "env": s.env,
                    "strategy": Strategy::of(cfg, &s.name).map(|st| st.label()).unwrap_or("invalid"),
                    "last_rotation": rotator.last_rotation(&r.rec.id, &s.name),
                    "lease": s.lease.as_ref().map(lease_json),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let events = rotator.config_events();
    let pending: Vec<serde_json::Value> = rotation::leases::owed(&cfg.runtime.state_dir)
        .into_iter()
        .map(|(_, p)| {
            serde_json::json!({
                "container": p.container,
                "secret": p.secret,
                "provider": p.provider,
                "lease": lease_json(&p.lease),
                "attempts": p.attempts,
                "last_error": p.last_error,
            })
        })
        .collect();
    serde_json::json!({
        "ok": true,
        "agent": true,
        "config": {
            "path": cfg.source,
            "digest": cfg.digest,
            "loaded_at": events.loaded_at,
            "rejected": events.rejected,
        },
        "containers": containers,
        "providers": rotator.provider_health(),
        "pending_revocations": pending,
    })
}

/// A lease as status shows it: a hash of its id, never the id or the value.
fn lease_json(l: &rotation::leases::LeaseState) -> serde_json::Value {
    use rotation::leases::rfc3339;
    serde_json::json!({
        "engine": l.engine,
        "lease": l.hash(),
        "serial": l.serial,
        "expires": rfc3339(l.expires()),
        "renews_at": rfc3339(l.due_at()),
        "renewable": l.renewable,
    })
}

/// The agent applies the same policy as the shim: a request is served only if the workload is
/// granted it, and a named request only for what that name means in the agent's dso.yaml.
fn authorize(r: &WireRequest, workload: &Workload, rotator: &Rotator) -> Result<(), String> {
    let cfg = rotator.config();
    let ask = match &r.secret {
        Some(name) => {
            let sc = cfg.secrets.get(name).ok_or_else(|| {
                format!("secret {name:?} is not defined in {}", cfg.source.display())
            })?;
            let provider = cfg.provider_of(sc).unwrap_or_default();
            let path = sc.path.as_deref().unwrap_or(name);
            if provider != r.provider || path != r.path {
                return Err(format!("secret {name:?} is not {}/{}", r.provider, r.path));
            }
            Ask::Named {
                name,
                key: r.key.as_deref(),
            }
        }
        None => Ask::Inline {
            provider: &r.provider,
            path: &r.path,
        },
    };
    policy::check(&cfg, ask, workload)
        .map(|_| ())
        .map_err(|refusal| {
            let msg = refusal.to_string();
            rotator.audit().record(
                &Event::new("access_denied", "failure")
                    .secret(refusal.subject())
                    .container(&workload.id)
                    .workload(workload)
                    .via("agent")
                    .error(&msg),
            );
            msg
        })
}

fn fetch_answer(
    reqs: &[WireRequest],
    workload: &Workload,
    rotator: &Rotator,
) -> Zeroizing<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Zeroizing::new(Vec::with_capacity(256));
    out.extend_from_slice(br#"{"ok":true,"results":["#);
    for (i, r) in reqs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let req = FetchRequest {
            path: r.path.clone(),
            key: r.key.clone(),
            version: r.version.clone(),
            // The provider's audit names the workload (User-Agent).
            workload: Some(workload.label()),
        };
        let fetched = authorize(r, workload, rotator)
            .and_then(|()| rotator.fetch(&r.provider, &req).map_err(|e| e.to_string()));
        match fetched {
            Ok(f) => {
                let mut enc = Zeroizing::new(vec![0u8; f.value.len().div_ceil(3) * 4 + 4]);
                let n = b64
                    .encode_slice(f.value.expose(), &mut enc[..])
                    .unwrap_or(0);
                out.extend_from_slice(br#"{"value":""#);
                out.extend_from_slice(&enc[..n]);
                out.extend_from_slice(br#"","version":"#);
                out.extend_from_slice(serde_json::json!(f.version).to_string().as_bytes());
                out.push(b'}');
            }
            Err(e) => {
                out.extend_from_slice(serde_json::json!({"error": e}).to_string().as_bytes());
            }
        }
    }
    out.extend_from_slice(b"]}");
    out
}

/// Sends one request and reads the answer (`timeout` for each read and write). `Err` when the
/// agent is not there or did not answer: the caller does the work itself.
pub fn request(
    socket: &Path,
    req: &serde_json::Value,
    timeout: Duration,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut s = UnixStream::connect(socket)
        .map_err(|e| format!("agent socket {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut line = req.to_string().into_bytes();
    line.push(b'\n');
    s.write_all(&line).map_err(|e| e.to_string())?;
    let mut buf = Zeroizing::new(Vec::new());
    BufReader::new(s.take(MAX_ANSWER))
        .read_until(b'\n', &mut buf)
        .map_err(|e| format!("agent socket {}: {e}", socket.display()))?;
    Ok(buf)
}

#[derive(Deserialize)]
struct FetchAnswer<'a> {
    ok: bool,
    #[serde(default, borrow)]
    results: Vec<FetchResult<'a>>,
}

#[derive(Deserialize)]
struct FetchResult<'a> {
    #[serde(default, borrow)]
    value: Option<&'a str>,
    #[serde(default)]
    version: Option<String>,
}

/// dso-runc's fast path: asks the agent for `reqs`. `None` when there is no agent (or it
/// refused, or answered nonsense); otherwise one entry per request, `None` where the agent's
/// fetch failed (the caller fetches that one itself, to report the error in its own words).
pub fn fetch_via_agent(
    cfg: &crate::config::Config,
    reqs: &[WireRequest],
    workload: &Workload,
    timeout: Duration,
) -> Option<Vec<Option<Fetched>>> {
    let socket = socket_path(cfg);
    let socket = socket.as_path();
    if !socket.exists() {
        return None;
    }
    let req = serde_json::json!({
        "op": "fetch", "config_digest": cfg.digest, "requests": reqs, "workload": workload,
    });
    let buf = request(socket, &req, timeout).ok()?;
    let ans: FetchAnswer<'_> = serde_json::from_slice(&buf).ok()?;
    if !ans.ok || ans.results.len() != reqs.len() {
        return None;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::with_capacity(reqs.len());
    for r in ans.results {
        out.push(match r.value {
            Some(v) => {
                let mut bytes = Zeroizing::new(vec![0u8; v.len() / 4 * 3 + 3]);
                let n = b64.decode_slice(v.as_bytes(), &mut bytes[..]).ok()?;
                bytes.truncate(n);
                Some(Fetched {
                    value: SecretValue::from_zeroizing(bytes),
                    version: r.version,
                })
            }
            None => None,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_dso_does_not_own_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        let state = dir.path().join("state");
        let _l = bind(&shared.join("dso.sock"), None, &state).unwrap();
        let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            mode, 0o755,
            "bind changed the mode of a directory it did not create"
        );
        // dso's own state dir, and a directory it creates, are made private.
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _l = bind(&state.join("dso.sock"), None, &state).unwrap();
        assert_eq!(
            std::fs::metadata(&state).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        let fresh = dir.path().join("fresh");
        let _l = bind(&fresh.join("dso.sock"), Some(0), &state).unwrap();
        assert_eq!(
            std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777,
            0o711
        );
    }

    #[test]
    fn access_rules() {
        let p = |uid, gid| Peer { pid: 0, uid, gid };
        assert_eq!(access_of(p(0, 0), None), Access::Root);
        assert_eq!(access_of(p(1000, 1000), None), Access::None);
        assert_eq!(access_of(p(1000, 998), Some(998)), Access::Operate);
        assert_eq!(access_of(p(1000, 1000), Some(998)), Access::None);
    }
}

//! The agent's control socket (`agent.socket`, default `<runtime.state_dir>/dso.sock`, i.e.
//! `/run/dso/dso.sock`): one JSON request per connection, one JSON line back.
//!
//! | request | who may ask | answer |
//! | --- | --- | --- |
//! | `{"op":"ping"}` | anyone who can connect | `{"ok":true,"version":"…"}` |
//! | `{"op":"status"}` | root, the socket's group | containers, secrets, versions, last rotation, provider health — never values |
//! | `{"op":"rotate","secret":"db"}` / `{"op":"rotate","container":"id"}` | root (forced), the group (if changed, one per secret or container per [`GROUP_ROTATE_EVERY`]) | the outcomes |
//! | `{"op":"create",…}` | **root only** | a create handed over by dso-runc, a conversation of its own: [`crate::runtime::handoff`] |
//!
//! The peer is identified by the kernel (`SO_PEERCRED`), not by anything it says. The socket is
//! 0660, owned by root and `agent.group` (when set). No op answers with a value: a create handed
//! over is fetched, checked against the access policy and injected inside the agent.
//!
//! Bounded like the webhook ([`super::listen`]): 16 workers, 64 connections (one more is
//! answered "busy", and dso-runc then runs `dso` itself), 10 s to send a request and 10 s to
//! read the answer.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;
use zeroize::Zeroizing;

use super::AgentError;
use super::listen::{self, Deadlined, Limits, ListenerStats, bump};
use crate::policy::Workload;
use crate::rotation::{self, Mode, OutcomeStatus, Rotator, Selector, Strategy};

/// The largest request accepted (a handed-over create's argv is far below).
const MAX_REQUEST: u64 = 1 << 20;
/// The socket's group may rotate one secret (or one container) this often.
pub const GROUP_ROTATE_EVERY: Duration = Duration::from_secs(10);
/// How long a client has to read the answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end, as the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// `SO_PEERCRED` of a connected unix socket.
pub fn peer_of(stream: &UnixStream) -> std::io::Result<Peer> {
    // nix, not rustix: the kernel reports pid 0 for a peer outside our pid namespace, which
    // rustix's non-zero Pid cannot hold.
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok(Peer {
        pid: cred.pid(),
        uid: cred.uid(),
        gid: cred.gid(),
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
pub fn resolve_group(name: &str) -> Result<u32, AgentError> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    nix::unistd::Group::from_name(name)
        .map_err(|e| AgentError::Group(name.into(), e))?
        .map(|g| g.gid.as_raw())
        .ok_or_else(|| AgentError::NoGroup(name.into()))
}

/// Binds the socket: replaces a stale socket file (never anything else), mode 0660, group
/// `group`. Its directory, when dso creates it or it is dso's own `state_dir`, gets 0700, or
/// 0711 when a group needs to reach the socket; any other existing directory (`/run` for
/// `agent.socket: /run/dso.sock`) is left as it is.
pub fn bind(path: &Path, group: Option<u32>, state_dir: &Path) -> Result<UnixListener, AgentError> {
    let what = |e: std::io::Error| AgentError::Socket(path.into(), e);
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
                let why = "another agent is listening there";
                return Err(AgentError::SocketInUse(path.into(), why));
            }
            std::fs::remove_file(path).map_err(what)?;
        }
        Ok(_) => {
            let why = "something that is not a socket is in the way";
            return Err(AgentError::SocketInUse(path.into(), why));
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
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    container: Option<String>,
}

/// What the connections of one socket share.
pub struct Server {
    rotator: Arc<Rotator>,
    group: Option<u32>,
    stats: Arc<ListenerStats>,
    /// When the group last rotated each selector (`secret:<name>`, `container:<id>`).
    group_rotations: Mutex<HashMap<String, Instant>>,
}

impl Server {
    pub fn new(rotator: Arc<Rotator>, group: Option<u32>, stats: Arc<ListenerStats>) -> Server {
        Server {
            rotator,
            group,
            stats,
            group_rotations: Mutex::new(HashMap::new()),
        }
    }

    /// The group's rotation of `key` may run now (and is recorded); `Err(wait)` otherwise.
    fn group_may_rotate(&self, key: String) -> Result<(), Duration> {
        let mut last = self
            .group_rotations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        last.retain(|_, t| now.duration_since(*t) < GROUP_ROTATE_EVERY);
        if let Some(t) = last.get(&key) {
            return Err(GROUP_ROTATE_EVERY.saturating_sub(now.duration_since(*t)));
        }
        last.insert(key, now);
        Ok(())
    }
}

/// Serves connections until the listener fails, within [`listen::CONTROL_LIMITS`].
pub fn serve(listener: UnixListener, server: Server) {
    serve_with(listener, server, listen::CONTROL_LIMITS)
}

pub fn serve_with(listener: UnixListener, server: Server, limits: Limits) {
    let server = Arc::new(server);
    let stats = server.stats.clone();
    listen::serve(
        || Some(listener.accept().map(|(c, _)| c)),
        limits,
        move |stream, deadline| {
            let _ = handle(stream, deadline, &server);
        },
        |stream| {
            bump(&stats.control_connections_refused);
            let _ = stream.set_nonblocking(true);
            let _ = (&stream)
                .write_all(b"{\"ok\":false,\"error\":\"agent busy: too many connections\"}\n");
        },
        &stats.clone(),
    );
}

fn handle(stream: UnixStream, deadline: Instant, server: &Server) -> std::io::Result<()> {
    let peer = peer_of(&stream)?;
    let access = access_of(peer, server.group);
    let mut line = Vec::new();
    BufReader::new(Deadlined::new(&stream, deadline).take(MAX_REQUEST))
        .read_until(b'\n', &mut line)?;
    let req = serde_json::from_slice::<Request>(&line);
    if let Ok(req) = &req
        && req.op == "create"
        && access == Access::Root
    {
        let rotator = &server.rotator;
        let served =
            crate::runtime::handoff::serve(&stream, &line, &rotator.config(), &rotator.pool);
        let c = &rotator.counters;
        c.agent_fetches_served
            .fetch_add(served.fetched as u64, Ordering::Relaxed);
        if served.created {
            bump(&c.agent_creates_served);
        }
        return Ok(());
    }
    let answer: Zeroizing<Vec<u8>> = match req {
        Err(e) => plain(serde_json::json!({"ok": false, "error": format!("bad request: {e}")})),
        Ok(req) => answer(&req, access, peer, server),
    };
    if peer_gone(&stream) {
        return Ok(());
    }
    let mut out = Deadlined::new(&stream, Instant::now() + ANSWER_TIMEOUT);
    out.write_all(&answer)?;
    out.write_all(b"\n")
}

/// Whether the client hung up (or reset): its end is closed, so nothing it asked for is
/// worth finishing. A client that only shut down its writing half (`nc -U` at the end of its
/// input) still waits for the answer: that is POLLRDHUP alone, not POLLHUP.
fn peer_gone(stream: &UnixStream) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(stream, PollFlags::RDHUP)];
    let zero = Timespec::default();
    rustix::event::poll(&mut fds, Some(&zero)).is_ok_and(|n| n > 0)
        && fds[0].revents().intersects(PollFlags::HUP | PollFlags::ERR)
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

fn answer(req: &Request, access: Access, peer: Peer, server: &Server) -> Zeroizing<Vec<u8>> {
    let rotator = &*server.rotator;
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
            let what = match &sel {
                Selector::Secret(s) => format!("secret {s:?}"),
                Selector::Container(c) => format!("container {c:?}"),
                _ => "everything".to_string(),
            };
            // Root forces (rewrite, signal or restart even when nothing changed); the group
            // may only ask for what changed to be applied now, and not too often: it must not
            // be able to restart containers at will.
            let mode = if access == Access::Root {
                Mode::Force
            } else {
                let key = match &sel {
                    Selector::Secret(s) => format!("secret:{s}"),
                    Selector::Container(c) => format!("container:{c}"),
                    _ => "all".to_string(),
                };
                if let Err(wait) = server.group_may_rotate(key) {
                    bump(&server.stats.group_rotations_refused);
                    return plain(serde_json::json!({
                        "ok": false,
                        "error": format!(
                            "rate limit: the socket's group may rotate {what} once per {}s; try again in {}s (root may force it)",
                            GROUP_ROTATE_EVERY.as_secs(),
                            wait.as_secs().max(1)
                        ),
                    }));
                }
                Mode::IfChanged
            };
            // In the agent's log too: a rotation asked for by `dso rotate` is as much the
            // agent's work as one it started itself.
            eprintln!(
                "dso agent: `dso rotate` by uid {} (pid {}): {what}{}",
                peer.uid,
                peer.pid,
                if mode == Mode::Force {
                    " (forced)"
                } else {
                    " (if changed)"
                }
            );
            let done = rotator.rotate(&sel, mode);
            if done.is_empty() {
                eprintln!("dso agent: `dso rotate`: no running container matched");
            }
            super::report(&done);
            let outcomes: Vec<serde_json::Value> = done.iter().map(outcome_json).collect();
            plain(serde_json::json!({"ok": true, "outcomes": outcomes}))
        }
        "status" | "rotate" | "create" => denied(&req.op, peer),
        other => plain(serde_json::json!({"ok": false, "error": format!("unknown op {other:?}")})),
    }
}

/// An outcome as JSON (names, versions, status; never a value).
pub fn outcome_json(o: &rotation::Outcome) -> serde_json::Value {
    let (status, error, class) = match &o.status {
        OutcomeStatus::Rotated => ("rotated", None, None),
        OutcomeStatus::Unchanged => ("unchanged", None, None),
        OutcomeStatus::EnvNeedsRestart => ("env_needs_restart", None, None),
        OutcomeStatus::Failed(e) => ("failed", Some(e.to_string()), Some(e.class().label())),
    };
    serde_json::json!({
        "container": o.container, "secret": o.secret, "version": o.version,
        "status": status, "error": error, "class": class,
    })
}

/// The managed containers (from the state dir), with what this agent knows about them.
pub fn status_json(rotator: &Rotator) -> serde_json::Value {
    let cfg = rotator.config();
    let cfg = &*cfg;
    let records = crate::state::prune(&cfg.runtime.state_dir);
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
    let pending: Vec<serde_json::Value> = crate::state::leases::owed(&cfg.runtime.state_dir)
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
        "providers": rotator.pool.health(),
        "pending_revocations": pending,
    })
}

/// A lease as status shows it: a hash of its id, never the id or the value.
fn lease_json(l: &crate::state::leases::LeaseState) -> serde_json::Value {
    use crate::state::leases::rfc3339;
    serde_json::json!({
        "engine": l.engine,
        "lease": l.hash(),
        "serial": l.serial,
        "expires": rfc3339(l.expires()),
        "renews_at": rfc3339(l.due_at()),
        "renewable": l.renewable,
    })
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

    /// A rotator over an empty local store.
    fn rotator_in(dir: &Path) -> Arc<Rotator> {
        let key = dir.join("key");
        std::fs::write(&key, b"control-test-key-control-test-key").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let store = dir.join("store");
        crate::providers::local::Store::create(&store, &key).unwrap();
        let text = format!(
            "providers:\n  l: {{ type: local, path: {}, key_file: {} }}\nsecrets:\n  unused: {{}}\naudit: {{ path: {} }}\nruntime: {{ state_dir: {} }}\n",
            store.display(),
            key.display(),
            dir.join("audit.log").display(),
            dir.join("state").display(),
        );
        let cfg = crate::config::Config::from_str_at(&text, &dir.join("dso.yaml")).unwrap();
        Arc::new(Rotator::new(cfg, Default::default()))
    }

    fn line_from(c: &mut UnixStream) -> String {
        let mut line = String::new();
        let _ = BufReader::new(c).read_line(&mut line);
        line
    }

    /// Issue 14 item 3 (same care for the control socket): connections over the cap get an
    /// immediate "busy" answer (dso-runc then runs `dso` itself), a client trickling its request
    /// is cut off at the per-request deadline, and others are served meanwhile.
    #[test]
    fn connections_are_capped_and_a_slow_client_is_cut_off() {
        // 70-odd sockets on each side, in a test process whose other tests hold descriptors
        // too: a connect failed once in a full `cargo test --lib` (EMFILE, presumably).
        crate::agent::raise_fd_limit();
        let dir = tempfile::tempdir().unwrap();
        let rotator = rotator_in(dir.path());
        let path = dir.path().join("ctl.sock");
        let listener = bind(&path, None, &dir.path().join("state")).unwrap();
        std::thread::spawn(move || serve(listener, Server::new(rotator, None, Arc::default())));
        let ping = |path: &Path| {
            let mut c = UnixStream::connect(path).unwrap();
            // Over the cap the agent answers "busy" and closes without reading: the write may
            // then fail (EPIPE) while the answer is still there to read.
            let _ = c.write_all(b"{\"op\":\"ping\"}\n");
            line_from(&mut c)
        };
        assert!(ping(&path).contains(r#""ok":true"#));

        // A trickling client: one byte every 400 ms, never idle long enough for a per-read
        // timeout; at most 3 times the deadline.
        let mut slow = UnixStream::connect(&path).unwrap();
        slow.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut cut = false;
        for i in 0..75 {
            if slow.write_all(b" ").is_err() {
                cut = true;
                break;
            }
            let mut buf = [0u8; 256];
            match slow.read(&mut buf) {
                Ok(_) => {
                    cut = true;
                    break;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => {
                    cut = true;
                    break;
                }
            }
            if i == 2 {
                assert!(
                    ping(&path).contains(r#""ok":true"#),
                    "not served beside a slow client"
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(cut, "a trickling client was still connected after 30 s");

        let idle: Vec<UnixStream> = (0..64)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        let mut over = UnixStream::connect(&path).unwrap();
        let ans = line_from(&mut over);
        assert!(ans.contains("busy"), "{ans:?}");
        drop(idle);
        let mut ans = String::new();
        for _ in 0..200 {
            ans = ping(&path);
            if !ans.contains("busy") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(ans.contains(r#""ok":true"#), "{ans}");
    }

    /// The hang-up check sees a closed peer, and not a live one.
    #[test]
    fn peer_gone_sees_a_hang_up() {
        let (a, b) = UnixStream::pair().unwrap();
        assert!(!peer_gone(&a));
        b.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(
            !peer_gone(&a),
            "a half-closed client still reads the answer"
        );
        drop(b);
        assert!(peer_gone(&a));
    }
}

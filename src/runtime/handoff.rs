//! A create handed over to the running agent (issue 18): with an agent serving the same
//! dso.yaml, dso-runc does not exec `dso` to load the config, build the providers and fetch.
//! It asks the agent, which holds all of that in memory, to do the steps before and after
//! runc's create, and runs runc's create itself in between, so the container's stdio, console
//! socket and pid file stay what the engine gave to dso-runc.
//!
//! One connection to the agent's control socket, found through a link per config file
//! (`/run/dso/agents/<sha256 of its canonical path>`, made by the agent):
//!
//! 1. dso-runc: `{"op":"create","config","args","delegate","bundle":[dev,ino],"timing"}`.
//! 2. agent: `{"handoff":"declined"}` (another dso.yaml, or one changed since the agent read
//!    it, another bundle than dso-runc's, a busy agent: dso-runc execs `dso` as without an
//!    agent; nothing was done), `"passthrough"` (no reference is for this container),
//!    `"refused"` with the error (for runc's log, as `dso` would write it), or `"ready"`: the
//!    values are fetched and held by the agent, the spec is rewritten.
//! 3. dso-runc runs runc's create and sends `{"status":N}` (-1: runc could not be run).
//! 4. agent: injects and registers (or, when runc failed, revokes what it issued) and answers
//!    `{"ok":true}` or `{"ok":false,"error"}` (the container is deleted then). If dso-runc goes
//!    away before step 3, the agent deletes the container and revokes what it issued.
//!
//! Only root may ask (the agent checks `SO_PEERCRED`), and dso-runc talks only to an agent
//! running as root. No value crosses the socket: the agent writes the files itself.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::argv::Invocation;
use super::create::{self, Create, CreateError, Source, Timing};
use super::delegate::{Delegate, Runc};
use super::runclog::RuncLog;
use super::spec::Spec;
use crate::audit::Audit;
use crate::config::Config;
use crate::providers::pool::Pool;

/// Where the agents publish their sockets, one link per config file.
pub const RENDEZVOUS_DIR: &str = "/run/dso/agents";
/// How long either side waits for the other's next line. runc's create, with the engine's
/// hooks, and the agent's fetches (bounded by `runtime.fetch_timeout`) fit well within it.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest line either side reads.
const MAX_LINE: u64 = 1 << 20;

/// The link to the socket of the agent serving the config at `canonical`.
pub fn rendezvous(canonical: &Path) -> PathBuf {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    Path::new(RENDEZVOUS_DIR).join(hex::encode(&digest[..16]))
}

/// The agent's side: links [`rendezvous`] of `config` to `socket` (replacing an older link).
/// The directory is root's alone (0700).
pub fn publish(config: &Path, socket: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let canonical = std::fs::canonicalize(config)?;
    let socket = std::fs::canonicalize(socket)?;
    let link = rendezvous(&canonical);
    let dir = Path::new(RENDEZVOUS_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let tmp = dir.join(format!(".{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&socket, &tmp)?;
    std::fs::rename(&tmp, &link)?;
    Ok(link)
}

#[derive(Serialize, Deserialize)]
struct CreateRequest {
    op: String,
    /// The canonical path of dso-runc's dso.yaml.
    config: PathBuf,
    /// runc's argv after argv[0].
    args: Vec<String>,
    /// The delegate dso-runc resolved (`--dso-delegate`, `DSO_DELEGATE`, runc).
    delegate: String,
    /// Device and inode of the bundle directory as dso-runc sees it.
    bundle: (u64, u64),
    /// `DSO_TIMING` was set for dso-runc: the agent sends the spans back.
    #[serde(default)]
    timing: bool,
}

#[derive(Serialize, Deserialize)]
struct Offer {
    handoff: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Finished {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    timing: Vec<String>,
}

fn read_line(stream: &UnixStream) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut line = Vec::new();
    BufReader::new(stream.take(MAX_LINE)).read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line)
}

fn send(mut stream: &UnixStream, value: &impl Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// dso-runc's side, for a `create` whose spec has references. `None`: no agent took it (none
/// runs for this dso.yaml, or it declined); the caller execs `dso` as without an agent.
/// `Some(code)`: the create is done (or failed, reported in runc's log); exit with `code`.
pub fn offer(inv: &Invocation, delegate: &Runc, log: &RuncLog) -> Option<i32> {
    if inv.command.as_deref() != Some("create") || inv.container_id.is_none() {
        return None;
    }
    let bundle = inv.bundle.as_deref().filter(|b| b.is_absolute())?;
    let meta = std::fs::metadata(bundle).ok()?;
    let args = (inv.args.iter().cloned())
        .map(OsString::into_string)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let delegate_name = delegate.program().to_str()?.to_string();
    let config = crate::config::config_path(inv.dso_config.as_deref());
    let config = std::fs::canonicalize(config).ok()?;
    let stream = UnixStream::connect(rendezvous(&config)).ok()?;
    // Only an agent running as root is asked: whoever else listens there is not dso's agent.
    let peer =
        nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    if peer.uid() != 0 {
        return None;
    }
    stream.set_read_timeout(Some(STEP_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(STEP_TIMEOUT)).ok()?;
    let req = CreateRequest {
        op: "create".into(),
        config,
        args,
        delegate: delegate_name,
        bundle: (meta.dev(), meta.ino()),
        timing: std::env::var_os("DSO_TIMING").is_some(),
    };
    send(&stream, &req).ok()?;
    // From here on the agent may have rewritten the spec: a failure is reported, never
    // retried by `dso` (which would see a spec without its references).
    let fail = |msg: &str| {
        log.error(&format!("dso: {msg}"));
        Some(1)
    };
    let answer = match read_line(&stream) {
        Ok(line) => line,
        Err(e) => return fail(&format!("the agent did not answer the create: {e}")),
    };
    // Anything else (an agent too busy to read the request, or one without this operation)
    // did nothing: declined.
    let offer: Offer = serde_json::from_slice(&answer).ok()?;
    match offer.handoff.as_str() {
        "ready" => {}
        "passthrough" => {
            let err = delegate.exec(&inv.args);
            return fail(&format!("cannot run {:?}: {err}", delegate.0));
        }
        "refused" => return fail(offer.error.as_deref().unwrap_or("the agent refused")),
        _ => return None,
    }
    let (status, spawn_error) = match delegate.create(&inv.args) {
        Ok(s) => (s.code().unwrap_or(1), None),
        Err(e) => (-1, Some(e)),
    };
    if let Err(e) = send(&stream, &serde_json::json!({ "status": status })) {
        return fail(&format!("the agent went away after the create: {e}"));
    }
    let finished = read_line(&stream).map_err(|e| e.to_string()).and_then(|l| {
        serde_json::from_slice::<Finished>(&l).map_err(|e| format!("bad answer: {e}"))
    });
    match finished {
        Ok(f) if f.ok => {
            for line in f.timing {
                eprintln!("{line}");
            }
            match spawn_error {
                Some(e) => fail(&e.to_string()),
                None => Some(status),
            }
        }
        Ok(f) => fail(f.error.as_deref().unwrap_or("the agent failed the create")),
        Err(e) => fail(&format!("the agent did not finish the create: {e}")),
    }
}

/// What the agent did for one handed-over create (for its counters).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Values fetched for it.
    pub fetched: usize,
    /// Injected and registered by the agent.
    pub created: bool,
}

/// The agent's side of one handed-over create: `line` is the request already read from
/// `stream`; `cfg` and `pool` are the agent's. Errors writing to dso-runc end the create the
/// way a failure would (the container deleted, issued leases revoked).
pub fn serve(stream: &UnixStream, line: &[u8], cfg: &Config, pool: &Pool) -> Served {
    let mut served = Served::default();
    if let Err(e) = converse(stream, line, cfg, pool, &mut served) {
        tracing::debug!(error = %e, "create handoff: dso-runc went away");
    }
    served
}

fn converse(
    stream: &UnixStream,
    line: &[u8],
    cfg: &Config,
    pool: &Pool,
    served: &mut Served,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    stream.set_write_timeout(Some(STEP_TIMEOUT))?;
    let declined = |why: &str| {
        tracing::debug!(why, "create handoff declined");
        send(
            stream,
            &Offer {
                handoff: "declined".into(),
                error: Some(why.into()),
            },
        )
    };
    let req: CreateRequest = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => return declined(&format!("bad request: {e}")),
    };
    let mut timing = Timing::kept(req.timing);
    if let Err(why) = same_config(&req.config, cfg) {
        return declined(why);
    }
    timing.mark("config");
    let inv = match Invocation::parse(req.args.into_iter().map(OsString::from)) {
        Ok(inv) => inv,
        Err(e) => return declined(&e.to_string()),
    };
    let (Some(bundle), Some(id)) = (&inv.bundle, inv.container_id.as_deref()) else {
        return declined("no bundle or container id");
    };
    let seen = std::fs::metadata(bundle).map(|m| (m.dev(), m.ino()));
    if inv.command.as_deref() != Some("create") || seen.ok() != Some(req.bundle) {
        return declined("the agent does not see dso-runc's bundle");
    }
    let refused = |e: &dyn std::fmt::Display| {
        send(
            stream,
            &Offer {
                handoff: "refused".into(),
                error: Some(e.to_string()),
            },
        )
    };
    let mut spec = match Spec::load(bundle) {
        Ok(spec) => spec,
        Err(e) => return refused(&e),
    };
    if !spec.has_own_references() {
        return send(
            stream,
            &Offer {
                handoff: "passthrough".into(),
                error: None,
            },
        );
    }
    let delegate = Runc(req.delegate.into());
    let log = RuncLog::from_invocation(&inv);
    let audit = create::audit_for(Audit::new(&cfg.audit), &log);
    let c = Create {
        inv: &inv,
        delegate: &delegate,
        log: &log,
        id,
        cfg,
        audit: &audit,
    };
    let prepared = match c.prepare(&mut spec, Source::Agent(pool), timing) {
        Ok(p) => p,
        Err(e) => return refused(&e),
    };
    served.fetched = prepared.fetched();
    let status = send(
        stream,
        &Offer {
            handoff: "ready".into(),
            error: None,
        },
    )
    .and_then(|()| read_line(stream))
    .and_then(|l| {
        serde_json::from_slice::<serde_json::Value>(&l)
            .ok()
            .and_then(|v| v.get("status")?.as_i64())
            .ok_or_else(|| std::io::Error::other("no status"))
    });
    let finished = match status {
        // runc failed (and said why in its log): nothing to inject; what was issued for the
        // container is revoked as `prepared` goes.
        Ok(code) if code != 0 => Finished {
            ok: true,
            error: None,
            timing: Vec::new(),
        },
        Ok(_) => match prepared.finish() {
            Ok((_, timing)) => {
                served.created = true;
                Finished {
                    ok: true,
                    error: None,
                    timing,
                }
            }
            Err(e) => Finished {
                ok: false,
                error: Some(e.to_string()),
                timing: Vec::new(),
            },
        },
        Err(e) => {
            let why = format!("dso-runc went away during the create: {e}");
            prepared.abandon(CreateError::Handoff(why));
            return Err(e);
        }
    };
    send(stream, &finished)
}

/// The agent serves the create only with the very dso.yaml dso-runc names, unchanged since
/// the agent read it (the same names must mean the same secrets, grants and providers).
fn same_config(asked: &Path, cfg: &Config) -> Result<(), &'static str> {
    if std::fs::canonicalize(&cfg.source).ok().as_deref() != Some(asked) {
        return Err("the agent serves another dso.yaml");
    }
    use std::io::Read;
    let unreadable = |_| "the agent cannot read dso.yaml";
    let mut file = std::fs::File::open(asked).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    // What `dso` would refuse (dso reports why), the agent does not serve either.
    crate::trust::check(&meta, asked, "config", crate::trust::Use::Trusted)
        .map_err(|_| "dso.yaml is not trusted now")?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(unreadable)?;
    if crate::config::digest_of(&text) != cfg.digest {
        return Err("dso.yaml changed since the agent read it");
    }
    Ok(())
}

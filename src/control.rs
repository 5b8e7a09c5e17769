//! The agent's control protocol as a client sees it: where the socket is, and the one-line
//! client that `dso rotate`/`status` and `dso doctor` use. No value ever crosses this socket:
//! a create dso-runc hands to the agent ([`crate::runtime::handoff`]) is fetched and injected
//! by the agent itself. The server is [`crate::agent::control`]; this file depends on neither
//! the agent nor rotation.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket's file name in the state dir when dso.yaml does not place it (so the default is
/// `/run/dso/dso.sock`, and a shim and an agent that share a state dir find each other).
pub const DEFAULT_SOCKET_NAME: &str = "dso.sock";
/// The largest answer a client reads (a status of many containers is still far below).
const MAX_ANSWER: u64 = 16 << 20;
/// The socket path of a config.
pub fn socket_path(cfg: &crate::config::Config) -> PathBuf {
    cfg.agent
        .socket
        .clone()
        .unwrap_or_else(|| cfg.runtime.state_dir.join(DEFAULT_SOCKET_NAME))
}

/// Sends one request and reads the one-line answer (`timeout` for each read and write). `Err`
/// when the agent is not there or did not answer JSON: the caller does the work itself.
pub fn request(
    socket: &Path,
    req: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let at = |e: &dyn std::fmt::Display| format!("agent socket {}: {e}", socket.display());
    let mut s = UnixStream::connect(socket).map_err(|e| at(&e))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| at(&e))?;
    s.set_write_timeout(Some(timeout)).map_err(|e| at(&e))?;
    let mut line = req.to_string().into_bytes();
    line.push(b'\n');
    s.write_all(&line).map_err(|e| at(&e))?;
    let mut answer = Vec::new();
    BufReader::new(s.take(MAX_ANSWER))
        .read_until(b'\n', &mut answer)
        .map_err(|e| at(&e))?;
    serde_json::from_slice(&answer).map_err(|e| at(&e))
}

//! The agent's control protocol as a client sees it: where the socket is, the wire form of a
//! fetch, and the client that dso-runc (fast path), `dso rotate`/`status` and `dso doctor` use.
//! The server is [`crate::agent::control`]; this file depends on neither the agent nor rotation.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::policy::Workload;
use crate::providers::Fetched;
use crate::secrets::SecretValue;

/// The socket's file name in the state dir when dso.yaml does not place it (so the default is
/// `/run/dso/dso.sock`, and a shim and an agent that share a state dir find each other).
pub const DEFAULT_SOCKET_NAME: &str = "dso.sock";
/// The largest answer a client reads (values are capped by the tmpfs size anyway).
const MAX_ANSWER: u64 = 64 << 20;
/// The socket path of a config.
pub fn socket_path(cfg: &crate::config::Config) -> PathBuf {
    cfg.agent
        .socket
        .clone()
        .unwrap_or_else(|| cfg.runtime.state_dir.join(DEFAULT_SOCKET_NAME))
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

/// Reads one line (up to `limit` bytes) into zeroizing memory. The buffer grows by copying into
/// a new zeroizing buffer, so the one left behind is wiped (a `Vec` that reallocates frees
/// its old block as it is).
fn read_line_zeroizing(mut r: impl Read, limit: usize) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(64 << 10));
    let mut chunk = Zeroizing::new([0u8; 16 << 10]);
    loop {
        let n = match r.read(&mut chunk[..]) {
            Ok(0) => return Ok(buf),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let (take, done) = match chunk[..n].iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (n, false),
        };
        if buf.len() + take > limit {
            return Err(std::io::Error::other("answer too large"));
        }
        if buf.len() + take > buf.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(
                (buf.capacity() * 2).max(buf.len() + take),
            ));
            bigger.extend_from_slice(&buf);
            buf = bigger;
        }
        buf.extend_from_slice(&chunk[..take]);
        if done {
            return Ok(buf);
        }
    }
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
    read_line_zeroizing(s, MAX_ANSWER as usize)
        .map_err(|e| format!("agent socket {}: {e}", socket.display()))
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

    /// The client reads the answer into zeroizing memory, one line, whatever its size.
    #[test]
    fn answers_are_read_whole_into_zeroizing_memory() {
        let line: Vec<u8> = (0..300_000u32)
            .map(|i| b'a' + (i % 26) as u8)
            .chain(*b"\nrest")
            .collect();
        let got = read_line_zeroizing(&line[..], 1 << 20).unwrap();
        assert_eq!(&got[..], &line[..300_001]);
        assert!(read_line_zeroizing(&line[..], 1000).is_err());
    }
}

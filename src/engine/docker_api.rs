//! The one Docker Engine API client, over its unix socket: `GET /info` for `install` and
//! `doctor`, `POST /containers/<id>/restart` for the `restart` rotation strategy. One request
//! per connection; the server closes after the body, so no chunked decoding is needed.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::EngineError;

/// Where dockerd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Seconds Docker waits for a container to stop before killing it, on restart.
pub const STOP_TIMEOUT_SECS: u32 = 10;

/// Where the Engine API listens: `--docker-host` (`unix:///path` or a path), else `DOCKER_HOST`
/// when it is a unix socket, else `/var/run/docker.sock`.
pub fn socket_path(flag: Option<&str>) -> Result<PathBuf, EngineError> {
    let from = |h: &str, source: &'static str| -> Result<PathBuf, EngineError> {
        if let Some(p) = h.strip_prefix("unix://") {
            Ok(PathBuf::from(p))
        } else if h.starts_with('/') {
            Ok(PathBuf::from(h))
        } else {
            Err(EngineError::NotUnix(source, h.to_string()))
        }
    };
    if let Some(h) = flag {
        return from(h, "--docker-host");
    }
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => from(&h, "DOCKER_HOST"),
        _ => Ok(PathBuf::from(DEFAULT_SOCKET)),
    }
}

/// Sends `head` (a whole request without body) and reads the answer to the end (at most 16
/// MiB): the status code and the body.
fn call(socket: &Path, head: &str, read_timeout: Duration) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(read_timeout))?;
    s.set_write_timeout(Some(Duration::from_secs(10).min(read_timeout)))?;
    // One write: a server may answer (and close) as soon as it has the head.
    s.write_all(head.as_bytes())?;
    let mut resp = Vec::new();
    s.take(16 << 20).read_to_end(&mut resp)?;
    let not_http = || std::io::Error::other("not an HTTP response");
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(not_http)?;
    let status = String::from_utf8_lossy(&resp[..split])
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(not_http)?;
    Ok((status, resp.split_off(split + 4)))
}

/// Restarts container `id` (`POST /containers/<id>/restart`).
pub fn restart(socket: &Path, id: &str) -> Result<(), EngineError> {
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(EngineError::BadId(id.to_string()));
    }
    let head = format!(
        "POST /containers/{id}/restart?t={STOP_TIMEOUT_SECS} HTTP/1.1\r\nHost: docker\r\nUser-Agent: dso\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let wait = Duration::from_secs(u64::from(STOP_TIMEOUT_SECS) + 30);
    let (status, body) =
        call(socket, &head, wait).map_err(|e| EngineError::Restart(id.into(), socket.into(), e))?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let body = String::from_utf8_lossy(&body).trim().to_string();
    Err(EngineError::RestartStatus(
        id.into(),
        socket.into(),
        status,
        body,
    ))
}

/// `GET /info`, which lists the registered runtimes; as HTTP/1.0, so that the answer is never
/// chunked.
pub fn info(socket: &Path, timeout: Duration) -> Result<Value, EngineError> {
    let head = "GET /info HTTP/1.0\r\nHost: docker\r\nUser-Agent: dso\r\n\r\n";
    let (status, body) =
        call(socket, head, timeout).map_err(|e| EngineError::Api(socket.into(), e))?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status == 200 {
        return Ok(v);
    }
    let message = v.get("message").and_then(Value::as_str).unwrap_or("");
    Err(EngineError::Info(socket.into(), status, message.into()))
}

/// The path dockerd has for runtime `name`, if it has one registered.
pub fn runtime_path(info: &Value, name: &str) -> Option<String> {
    let rt = info.get("Runtimes")?.get(name)?;
    Some(
        rt.get("path")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn reads_info_over_http_1_0() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("d.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 512];
            while !head.ends_with(b"\r\n\r\n") {
                let n = c.read(&mut buf).unwrap();
                head.extend_from_slice(&buf[..n]);
            }
            c.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"Runtimes\":{\"dso\":{\"path\":\"/usr/bin/dso-runc\"},\"runc\":{\"path\":\"runc\"}}}")
                .unwrap();
            String::from_utf8(head).unwrap()
        });
        let info = info(&sock, Duration::from_secs(5)).unwrap();
        assert_eq!(
            runtime_path(&info, "dso").as_deref(),
            Some("/usr/bin/dso-runc")
        );
        assert_eq!(runtime_path(&info, "nope"), None);
        assert!(server.join().unwrap().starts_with("GET /info HTTP/1.0\r\n"));
        assert!(info_err(&dir.path().join("none.sock")).contains("none.sock"));
    }

    fn info_err(p: &Path) -> String {
        info(p, Duration::from_secs(1)).unwrap_err().to_string()
    }

    #[test]
    fn docker_host_forms() {
        assert_eq!(
            socket_path(Some("unix:///tmp/x.sock")).unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        assert_eq!(
            socket_path(Some("/a.sock")).unwrap(),
            PathBuf::from("/a.sock")
        );
        assert!(socket_path(Some("tcp://1.2.3.4:2375")).is_err());
    }

    #[test]
    fn posts_restart_and_reads_the_status() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for code in ["204 No Content", "404 Not Found"] {
                let (mut c, _) = listener.accept().unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    let n = c.read(&mut buf).unwrap();
                    assert!(n > 0);
                    head.extend_from_slice(&buf[..n]);
                }
                seen.push(String::from_utf8_lossy(&head).into_owned());
                let body = if code.starts_with("404") {
                    "{\"message\":\"No such container\"}"
                } else {
                    ""
                };
                write!(
                    c,
                    "HTTP/1.1 {code}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
            seen
        });
        restart(&sock, "abc123").unwrap();
        let err = restart(&sock, "gone").unwrap_err().to_string();
        assert!(
            err.contains("HTTP 404") && err.contains("No such container"),
            "{err}"
        );
        let seen = server.join().unwrap();
        assert!(seen[0].starts_with("POST /containers/abc123/restart?t=10 HTTP/1.1\r\n"));
        assert!(restart(&sock, "../x").is_err());
    }
}

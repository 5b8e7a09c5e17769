//! Just enough of the Docker Engine API for `install` and `doctor`: one `GET` over the unix
//! socket, as HTTP/1.0 so that the answer is never chunked (dockerd closes after the body).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Where the Engine API listens: `--docker-host` (`unix:///path` or a path), else `DOCKER_HOST`
/// when it is a unix socket, else `/var/run/docker.sock`.
pub fn socket_path(flag: Option<&str>) -> Result<PathBuf, String> {
    let from = |h: &str, source: &str| -> Result<PathBuf, String> {
        if let Some(p) = h.strip_prefix("unix://") {
            Ok(PathBuf::from(p))
        } else if h.starts_with('/') {
            Ok(PathBuf::from(h))
        } else {
            Err(format!(
                "{source} {h:?} is not a unix socket; dso talks to dockerd over unix:///path only"
            ))
        }
    };
    if let Some(h) = flag {
        return from(h, "--docker-host");
    }
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => from(&h, "DOCKER_HOST"),
        _ => Ok(PathBuf::from(crate::rotation::DEFAULT_DOCKER_SOCKET)),
    }
}

/// `GET path`; the status code and the body parsed as JSON.
pub fn get_json(socket: &Path, path: &str, timeout: Duration) -> Result<(u16, Value), String> {
    let what = |e: std::io::Error| format!("Docker API at {}: {e}", socket.display());
    let mut s = UnixStream::connect(socket).map_err(what)?;
    s.set_read_timeout(Some(timeout)).map_err(what)?;
    s.set_write_timeout(Some(timeout)).map_err(what)?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: docker\r\nUser-Agent: dso\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(what)?;
    let mut resp = Vec::new();
    s.take(16 << 20).read_to_end(&mut resp).map_err(what)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("Docker API at {}: not an HTTP response", socket.display()))?;
    let head = String::from_utf8_lossy(&resp[..split]);
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("Docker API at {}: not an HTTP response", socket.display()))?;
    let body = &resp[split + 4..];
    let value = serde_json::from_slice(body).unwrap_or(Value::Null);
    Ok((status, value))
}

/// `GET /info`, which lists the registered runtimes.
pub fn info(socket: &Path, timeout: Duration) -> Result<Value, String> {
    match get_json(socket, "/info", timeout)? {
        (200, v) => Ok(v),
        (code, v) => Err(format!(
            "Docker API at {}: GET /info: HTTP {code}: {}",
            socket.display(),
            v.get("message").and_then(Value::as_str).unwrap_or("")
        )),
    }
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
        info(p, Duration::from_secs(1)).unwrap_err()
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
}

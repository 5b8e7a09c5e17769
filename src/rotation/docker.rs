//! The `restart` strategy: `POST /containers/<id>/restart` on the Docker Engine API, over its unix
//! socket, with a minimal HTTP/1.1 client (one request, `Connection: close`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Seconds Docker waits for the container to stop before killing it.
pub const STOP_TIMEOUT_SECS: u32 = 10;

/// Restarts container `id` through the Engine API at `socket`.
pub fn restart(socket: &Path, id: &str) -> Result<(), String> {
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(format!(
            "container id {id:?} cannot be used in a Docker API path"
        ));
    }
    let path = format!("/containers/{id}/restart?t={STOP_TIMEOUT_SECS}");
    let (status, body) = post(socket, &path).map_err(|e| {
        format!(
            "restarting {id} through the Docker API at {}: {e}",
            socket.display()
        )
    })?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!(
            "restarting {id} through the Docker API at {}: HTTP {status}: {}",
            socket.display(),
            body.trim()
        ))
    }
}

/// One `POST` with an empty body; returns the status code and the body (as text).
pub fn post(socket: &Path, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(STOP_TIMEOUT_SECS as u64 + 30)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    // One write: a server may answer (and close) as soon as it has the head.
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: dso\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    parse_response(&resp)
}

fn parse_response(resp: &[u8]) -> std::io::Result<(u16, String)> {
    let text = String::from_utf8_lossy(resp);
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

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
        let err = restart(&sock, "gone").unwrap_err();
        assert!(
            err.contains("HTTP 404") && err.contains("No such container"),
            "{err}"
        );
        let seen = server.join().unwrap();
        assert!(seen[0].starts_with("POST /containers/abc123/restart?t=10 HTTP/1.1\r\n"));
        assert!(restart(&sock, "../x").is_err());
    }
}

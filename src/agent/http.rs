//! The agent's two HTTP/1.1 endpoints (the webhook and the metrics) read a request head with
//! `httparse` and answer with [`respond`]: one parser and one response writer, no hand-split
//! request lines. Each connection carries one request and is closed after the answer.

use std::io::{Read, Write};

/// What [`read_head`] found.
pub enum HeadRead {
    /// A whole head; `rest` holds the body bytes read with it.
    Head { head: Head, rest: Vec<u8> },
    /// The peer went away or timed out before the head was whole.
    Closed,
    /// The head was not whole within the limit.
    TooLarge,
    /// Not an HTTP/1.x request head, or a header value that is not UTF-8.
    Malformed,
}

/// A request head: method, path (query included) and headers, names as sent.
pub struct Head {
    pub method: String,
    pub path: String,
    headers: Vec<(String, String)>,
}

impl Head {
    /// The first header of this name (any case), its value trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without its query.
    pub fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }
}

/// Reads from `conn` until a whole head is in, at most `max` bytes of it.
pub fn read_head(conn: &mut impl Read, max: usize) -> HeadRead {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let headers = (req.headers.iter())
                    .map(|h| {
                        Some((
                            h.name.to_string(),
                            std::str::from_utf8(h.value).ok()?.trim().to_string(),
                        ))
                    })
                    .collect::<Option<_>>();
                let Some(headers) = headers else {
                    return HeadRead::Malformed;
                };
                let head = Head {
                    method: req.method.unwrap_or_default().to_string(),
                    path: req.path.unwrap_or_default().to_string(),
                    headers,
                };
                return HeadRead::Head {
                    head,
                    rest: buf.split_off(n),
                };
            }
            Ok(httparse::Status::Partial) if buf.len() > max => return HeadRead::TooLarge,
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return HeadRead::TooLarge,
            Err(_) => return HeadRead::Malformed,
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return HeadRead::Closed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Writes a whole answer (`Connection: close`) in one write; `extra` is more header lines, each
/// ending in CRLF. Errors are the peer's problem: it gets what could be written.
pub fn respond(conn: &mut impl Write, status: &str, content_type: &str, extra: &str, body: &str) {
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(answer.as_bytes());
    let _ = conn.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], max: usize) -> HeadRead {
        read_head(&mut &bytes[..], max)
    }

    #[test]
    fn a_head_is_read_with_the_body_bytes_after_it() {
        let HeadRead::Head { head, rest } = read(
            b"POST /v1/webhook?x=1 HTTP/1.1\r\nContent-Length:  5 \r\nX-A: b\r\n\r\nhello",
            1024,
        ) else {
            panic!("no head")
        };
        assert_eq!(
            (head.method.as_str(), head.route()),
            ("POST", "/v1/webhook")
        );
        assert_eq!(head.header("content-length"), Some("5"));
        assert_eq!(head.header("x-a"), Some("b"));
        assert_eq!(rest, b"hello");
    }

    #[test]
    fn an_answer_is_one_write_with_its_length() {
        struct Writes(Vec<Vec<u8>>);
        impl Write for Writes {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.push(b.to_vec());
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = Writes(Vec::new());
        respond(
            &mut w,
            "503 Service Unavailable",
            "text/plain",
            "Retry-After: 1\r\n",
            "busy",
        );
        assert_eq!(w.0.len(), 1);
        assert_eq!(
            w.0[0],
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 4\r\nRetry-After: 1\r\nConnection: close\r\n\r\nbusy"
        );
    }

    #[test]
    fn short_long_and_broken_heads() {
        assert!(matches!(
            read(b"GET / HTTP/1.1\r\nHost: x\r\n", 1024),
            HeadRead::Closed
        ));
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(200));
        assert!(matches!(read(long.as_bytes(), 100), HeadRead::TooLarge));
        assert!(matches!(
            read(b"GET / SPDY/3\r\n\r\n", 1024),
            HeadRead::Malformed
        ));
        assert!(matches!(
            read(b"\x00\x01 / HTTP/1.1\r\n\r\n", 1024),
            HeadRead::Malformed
        ));
    }
}

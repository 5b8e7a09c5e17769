//! The hash chain of the audit file: every line carries `seq` (1, 2, 3, …) and `prev`, the
//! SHA-256 (hex) of the line before it (without its newline); the first line of a chain has
//! `prev` all zeros. A file that starts after a rotation opens with an `audit_chain_continued`
//! line whose `prev` is the hash of the previous file's last line. The head of the chain (last
//! seq and hash) is also kept in a sidecar file next to the log (`.<name>.chain`), which every
//! writer locks (flock) while it appends: concurrent dso-runc processes and the agent keep one
//! chain, and a file emptied by rotation continues from it. [`verify_files`] checks it all.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

/// `prev` of the first line of a new chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The event that opens a file continuing the chain of a rotated one.
pub const CONTINUED: &str = "audit_chain_continued";
/// How long a writer waits for the lock before it gives up (a stopped writer must not hang
/// every create on the host).
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// SHA-256 (lowercase hex) of one line, without its newline.
pub fn hash_line(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// The sidecar holding the chain head, next to the log: `<dir>/.<name>.chain`.
pub fn head_path(log: &Path) -> PathBuf {
    let name = log
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audit.log".into());
    log.with_file_name(format!(".{name}.chain"))
}

/// Last seq and the hash of the last line written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    fn parse(text: &str) -> Option<Head> {
        let mut it = text.split_whitespace();
        let seq = it.next()?.parse().ok()?;
        let hash = it.next()?;
        (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Head {
            seq,
            hash: hash.to_string(),
        })
    }
}

/// The sidecar, opened and exclusively locked (or shared, for readers).
pub struct Locked {
    file: Flock<File>,
}

impl Locked {
    /// Opens (creating it 0600) and locks the sidecar of `log`, waiting at most [`LOCK_WAIT`].
    pub fn acquire(log: &Path, exclusive: bool) -> std::io::Result<Locked> {
        let path = head_path(log);
        let file = if exclusive {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)?
        } else {
            File::open(&path)?
        };
        let arg = if exclusive {
            FlockArg::LockExclusiveNonblock
        } else {
            FlockArg::LockSharedNonblock
        };
        let deadline = Instant::now() + LOCK_WAIT;
        let mut file = file;
        loop {
            match Flock::lock(file, arg) {
                Ok(file) => return Ok(Locked { file }),
                Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    file = f;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((_, e)) => {
                    return Err(std::io::Error::other(format!(
                        "cannot lock {}: {}",
                        path.display(),
                        if e == nix::errno::Errno::EWOULDBLOCK {
                            format!("held by another writer for {}s", LOCK_WAIT.as_secs())
                        } else {
                            e.to_string()
                        }
                    )));
                }
            }
        }
    }

    pub fn head(&self) -> Option<Head> {
        let mut text = String::new();
        (&*self.file).seek(SeekFrom::Start(0)).ok()?;
        (&*self.file).take(256).read_to_string(&mut text).ok()?;
        Head::parse(&text)
    }

    /// Overwrites the head in place. Truncating to zero first made ext4 (`auto_da_alloc`)
    /// write the file back on every close: a block-device write per audit event (issue 18).
    /// The text only grows with `seq`; a shorter one (a new chain) is cut to its length after.
    fn set_head(&self, head: &Head) -> std::io::Result<()> {
        let text = format!("{} {}\n", head.seq, head.hash);
        self.file.write_all_at(text.as_bytes(), 0)?;
        if self.file.metadata()?.len() > text.len() as u64 {
            self.file.set_len(text.len() as u64)?;
        }
        Ok(())
    }
}

/// The last line of `f` (without newline) and whether the file ends with a newline. Reads
/// backwards in chunks, so a long log costs one small read.
fn last_line(f: &File, len: u64) -> std::io::Result<(Vec<u8>, bool)> {
    let mut tail: Vec<u8> = Vec::new();
    let mut pos = len;
    let mut ends_nl = None;
    loop {
        let n = pos.min(8192);
        pos -= n;
        let mut chunk = vec![0u8; n as usize];
        f.read_exact_at(&mut chunk, pos)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        let ends = *ends_nl.get_or_insert(tail.last() == Some(&b'\n'));
        let body = if ends {
            &tail[..tail.len() - 1]
        } else {
            &tail[..]
        };
        if let Some(i) = body.iter().rposition(|&b| b == b'\n') {
            return Ok((body[i + 1..].to_vec(), ends));
        }
        if pos == 0 {
            return Ok((body.to_vec(), ends));
        }
    }
}

fn seq_of(line: &[u8]) -> Option<u64> {
    /// Only `seq` is read; the rest of the line is skipped, not built.
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: Option<u64>,
    }
    serde_json::from_slice::<Seq>(line).ok()?.seq
}

/// Writes one line of the chain (no newline): the object `{"seq":…,"prev":"…",…ev}`, as
/// serde_json writes a map that holds `seq`, `prev` and then `ev`'s members in their order
/// (`seq` and `prev` of `ev` itself left out), without building that map.
fn chained_line(
    out: &mut Vec<u8>,
    seq: u64,
    prev: &str,
    ev: &serde_json::Map<String, serde_json::Value>,
) -> std::io::Result<()> {
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b",\"prev\":");
    serde_json::to_writer(&mut *out, prev).map_err(std::io::Error::other)?;
    for (k, v) in ev {
        if k != "seq" && k != "prev" {
            out.push(b',');
            serde_json::to_writer(&mut *out, k).map_err(std::io::Error::other)?;
            out.push(b':');
            serde_json::to_writer(&mut *out, v).map_err(std::io::Error::other)?;
        }
    }
    out.push(b'}');
    Ok(())
}

/// Appends events (each a JSON object without `seq`/`prev`) to `log` as chained lines, under
/// the lock, in one `write`. `sync`: fsync before returning (`audit.required`).
pub fn append(
    log: &Path,
    events: &[serde_json::Map<String, serde_json::Value>],
    sync: bool,
) -> std::io::Result<()> {
    let lock = Locked::acquire(log, true)?;
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(log)?;
    let len = f.metadata()?.len();
    let mut out = Vec::new();
    let (mut seq, mut prev, continued) = if len > 0 {
        let (line, ends_nl) = last_line(&f, len)?;
        if !ends_nl {
            // A torn last line (a crash, a full disk): keep it (verify will name it) and start
            // ours on a line of its own.
            out.push(b'\n');
        }
        // A last line without a seq (torn, or not ours): number on from the head.
        let seq = seq_of(&line).or_else(|| lock.head().map(|h| h.seq));
        (seq.unwrap_or(0), hash_line(&line), false)
    } else {
        match lock.head() {
            Some(h) => (h.seq, h.hash, true),
            None => (0, GENESIS.to_string(), false),
        }
    };
    let mut write_line = |out: &mut Vec<u8>, ev: &serde_json::Map<String, serde_json::Value>| {
        seq += 1;
        let start = out.len();
        chained_line(out, seq, &prev, ev)?;
        prev = hash_line(&out[start..]);
        out.push(b'\n');
        Ok::<(), std::io::Error>(())
    };
    if continued {
        let mut marker = serde_json::Map::new();
        marker.insert("timestamp".into(), super::now_rfc3339().into());
        marker.insert("event".into(), CONTINUED.into());
        marker.insert("status".into(), "success".into());
        write_line(&mut out, &marker)?;
    }
    for ev in events {
        write_line(&mut out, ev)?;
    }
    f.write_all(&out)?;
    if sync {
        f.sync_data()?;
    }
    lock.set_head(&Head { seq, hash: prev })
}

/// What an intact file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intact {
    pub lines: usize,
    pub first_seq: u64,
    pub last: Option<Head>,
    /// `prev` of the first line when it continues a rotated file's chain.
    pub continues: Option<Head>,
}

/// The first line that breaks the chain (1-based) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub line: usize,
    pub reason: String,
}

/// Checks one file's chain, and the chain head `head` (of the live file) against its lines.
/// A head behind the last line is fine when it names one of them with its hash (a writer
/// was killed between its two writes; the next writer reads the file, not the head).
pub fn verify_bytes(bytes: &[u8], head: Option<&Head>) -> Result<Intact, Broken> {
    if bytes.is_empty() {
        return Ok(Intact {
            lines: 0,
            first_seq: 0,
            last: None,
            continues: None,
        });
    }
    let body = match bytes.strip_suffix(b"\n") {
        Some(b) => b,
        None => bytes,
    };
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    let mut prev: Option<(u64, String)> = None;
    let mut first_seq = 0;
    let mut continues = None;
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let broken = |reason: String| Broken { line: n, reason };
        if n == lines.len() && !bytes.ends_with(b"\n") {
            return Err(broken("truncated: the last line has no newline".into()));
        }
        let v: serde_json::Value = serde_json::from_slice(line)
            .map_err(|_| broken("not a JSON audit line (edited or garbage)".into()))?;
        let seq = v
            .get("seq")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| broken("no \"seq\" (not a chained audit line)".into()))?;
        let p = v
            .get("prev")
            .and_then(serde_json::Value::as_str)
            .filter(|p| p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| broken("no valid \"prev\" hash".into()))?;
        match &prev {
            None => {
                first_seq = seq;
                if v.get("event").and_then(serde_json::Value::as_str) == Some(CONTINUED) {
                    continues = Some(Head {
                        seq: seq.saturating_sub(1),
                        hash: p.to_string(),
                    });
                } else if seq != 1 || p != GENESIS {
                    return Err(broken(format!(
                        "the file starts at seq {seq} without a chain start: lines before it were deleted"
                    )));
                }
            }
            Some((pseq, phash)) => {
                if seq != pseq + 1 {
                    let reordered =
                        seq > pseq + 1 && lines[n..].iter().any(|l| seq_of(l) == Some(pseq + 1));
                    let why = if reordered {
                        format!(
                            "seq {seq} follows seq {pseq}, and seq {} comes later: lines reordered",
                            pseq + 1
                        )
                    } else if seq > pseq + 1 && p != phash {
                        format!(
                            "seq {seq} follows seq {pseq}: {} line(s) deleted before this one",
                            seq - pseq - 1
                        )
                    } else if seq <= *pseq && p != phash {
                        format!(
                            "seq {seq} follows seq {pseq}: lines reordered, or one inserted before this one"
                        )
                    } else {
                        format!("seq {seq} follows seq {pseq}: this line was edited")
                    };
                    return Err(broken(why));
                }
                if p != phash {
                    // The sequence is unbroken, so the line before changed after this one was
                    // written (or this line's prev did).
                    return Err(Broken {
                        line: n - 1,
                        reason: format!(
                            "its hash does not match the prev of line {n}: line {} was edited",
                            n - 1
                        ),
                    });
                }
            }
        }
        let hash = hash_line(line);
        if let Some(h) = head
            && h.seq == seq
            && h.hash != hash
        {
            return Err(broken(format!(
                "seq {seq} does not match the chain head ({}): this line was edited",
                &h.hash[..12]
            )));
        }
        prev = Some((seq, hash));
    }
    if let (Some(h), Some((seq, _))) = (head, &prev)
        && h.seq > *seq
    {
        return Err(Broken {
            line: lines.len(),
            reason: format!(
                "the chain head is at seq {}: {} line(s) after this one were deleted",
                h.seq,
                h.seq - seq
            ),
        });
    }
    Ok(Intact {
        lines: lines.len(),
        first_seq,
        last: prev.map(|(seq, hash)| Head { seq, hash }),
        continues,
    })
}

/// A verification failure: which file, which line, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", .path.display(), .what)]
pub struct VerifyError {
    pub path: PathBuf,
    pub what: String,
}

/// Verifies `paths` in order (oldest first, e.g. `audit.log.1 audit.log`): each file's chain,
/// each file continuing the one before it, and the newest file against its sidecar head
/// (which catches lines cut off its end). Returns one summary per file.
pub fn verify_files(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Intact)>, VerifyError> {
    let mut out: Vec<(PathBuf, Intact)> = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let err = |what: String| VerifyError {
            path: path.clone(),
            what,
        };
        // A shared lock on the live file's sidecar: no writer is half-way through.
        let lock = if i + 1 == paths.len() {
            Locked::acquire(path, false).ok()
        } else {
            None
        };
        let head = lock.as_ref().and_then(Locked::head);
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let intact = verify_bytes(&bytes, head.as_ref())
            .map_err(|b| err(format!("line {}: {}", b.line, b.reason)))?;
        if let Some((prev_path, prev)) = out.last() {
            match (&prev.last, &intact.continues) {
                (Some(last), Some(cont)) if last == cont => {}
                (Some(last), _) => {
                    return Err(err(format!(
                        "line 1: does not continue {} (which ends at seq {} {}){}",
                        prev_path.display(),
                        last.seq,
                        &last.hash[..12],
                        match &intact.continues {
                            Some(c) => format!(
                                "; it continues seq {} {}: lines were lost between the files",
                                c.seq,
                                &c.hash[..12]
                            ),
                            None => String::new(),
                        }
                    )));
                }
                (None, _) => {}
            }
        }
        out.push((path.clone(), intact));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("timestamp".into(), "2026-01-01T00:00:00.000Z".into());
        m.insert("event".into(), name.into());
        m.insert("status".into(), "success".into());
        m
    }

    /// The line is written without building its map (issue 18): byte for byte what serde_json
    /// writes for the map of `seq`, `prev` and the event's members, escapes and nesting
    /// included, with an event's own `seq` and `prev` left out.
    #[test]
    fn a_chained_line_is_the_map_serde_json_would_write() {
        let mut e = ev("secret_injected");
        e.insert("seq".into(), 99.into());
        e.insert("error".into(), "quote \" backslash \\ nl \n \u{1} é".into());
        e.insert(
            "workload".into(),
            serde_json::json!({"engine": "docker", "labels": {"a": [1, 2.5, null, true]}}),
        );
        e.insert("prev".into(), "not ours".into());
        let prev = hash_line(b"x");
        let mut expected = serde_json::Map::new();
        expected.insert("seq".into(), 7.into());
        expected.insert("prev".into(), prev.clone().into());
        for (k, v) in &e {
            if k != "seq" && k != "prev" {
                expected.insert(k.clone(), v.clone());
            }
        }
        let mut out = b"before".to_vec();
        chained_line(&mut out, 7, &prev, &e).unwrap();
        assert_eq!(&out[..6], b"before");
        assert_eq!(out[6..], serde_json::to_vec(&expected).unwrap());
        assert_eq!(seq_of(&out[6..]), Some(7));
        assert_eq!(seq_of(br#"{"seq":"7"}"#), None);
        assert_eq!(seq_of(b"torn {\"seq\":7"), None);
    }

    /// A log of `n` lines in a temp dir.
    fn log(n: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        for i in 0..n {
            append(&path, &[ev(&format!("e{i}"))], false).unwrap();
        }
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).unwrap();
    }

    fn broken_line(path: &Path) -> (usize, String) {
        let err = verify_files(&[path.to_path_buf()]).unwrap_err();
        let line: usize = err
            .what
            .strip_prefix("line ")
            .and_then(|r| r.split(':').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no line in {err}"));
        (line, err.to_string())
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (_d, path) = log(5);
        let l = lines(&path);
        assert!(l[0].starts_with(&format!("{{\"seq\":1,\"prev\":\"{GENESIS}\"")));
        let v = verify_files(std::slice::from_ref(&path)).unwrap();
        assert_eq!(v[0].1.lines, 5);
        assert_eq!(v[0].1.last.as_ref().unwrap().seq, 5);
        assert_eq!(
            v[0].1.last.as_ref().unwrap().hash,
            hash_line(l[4].as_bytes())
        );
    }

    #[test]
    fn a_deleted_line_is_found() {
        let (_d, path) = log(6);
        let mut l = lines(&path);
        l.remove(2);
        write_lines(&path, &l);
        let (n, msg) = broken_line(&path);
        assert_eq!(n, 3, "{msg}");
        assert!(msg.contains("deleted"), "{msg}");
    }

    #[test]
    fn an_edited_line_is_found() {
        let (_d, path) = log(6);
        let mut l = lines(&path);
        l[3] = l[3].replace("\"e3\"", "\"e9\"");
        write_lines(&path, &l);
        let (n, msg) = broken_line(&path);
        assert_eq!(n, 4, "{msg}");
        assert!(msg.contains("edited"), "{msg}");
        // The last line edited: found against the chain head.
        let (_d2, path) = log(4);
        let mut l = lines(&path);
        l[3] = l[3].replace("\"e3\"", "\"e8\"");
        write_lines(&path, &l);
        let (n, msg) = broken_line(&path);
        assert_eq!(n, 4, "{msg}");
    }

    #[test]
    fn swapped_lines_are_found() {
        let (_d, path) = log(6);
        let mut l = lines(&path);
        l.swap(1, 2);
        write_lines(&path, &l);
        let (n, msg) = broken_line(&path);
        assert_eq!(n, 2, "{msg}");
        assert!(
            msg.contains("reordered") || msg.contains("deleted"),
            "{msg}"
        );
    }

    #[test]
    fn an_inserted_line_is_found() {
        // A forged line with the right seq and prev (anyone can compute SHA-256): the line
        // after it no longer matches.
        let (_d, path) = log(5);
        let mut l = lines(&path);
        let forged = format!(
            "{{\"seq\":3,\"prev\":\"{}\",\"event\":\"secret_injected\",\"status\":\"success\"}}",
            hash_line(l[1].as_bytes())
        );
        l.insert(2, forged);
        write_lines(&path, &l);
        let (n, msg) = broken_line(&path);
        assert_eq!(n, 4, "{msg}");
        assert!(msg.contains("inserted"), "{msg}");
        // A copy of an existing line inserted.
        let (_d, path) = log(5);
        let mut l = lines(&path);
        let copy = l[0].clone();
        l.insert(3, copy);
        write_lines(&path, &l);
        let (n, msg) = broken_line(&path);
        assert_eq!(n, 4, "{msg}");
    }

    #[test]
    fn deleted_first_and_last_lines_are_found() {
        let (_d, path) = log(5);
        let l = lines(&path);
        write_lines(&path, &l[2..]);
        let (n, msg) = broken_line(&path);
        assert_eq!(n, 1, "{msg}");
        let (_d, path) = log(5);
        let l = lines(&path);
        write_lines(&path, &l[..3]);
        let (n, msg) = broken_line(&path);
        assert_eq!(n, 3, "{msg}");
        assert!(
            msg.contains("2 line(s) after this one were deleted"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_and_garbage_files_are_errors() {
        let (_d, path) = log(3);
        let text = std::fs::read(&path).unwrap();
        std::fs::write(&path, &text[..text.len() - 10]).unwrap();
        let (n, msg) = broken_line(&path);
        assert_eq!(n, 3, "{msg}");
        assert!(msg.contains("truncated"), "{msg}");
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("garbage");
        std::fs::write(&g, b"\x00\xff binary junk\nmore\n").unwrap();
        let (n, _) = broken_line(&g);
        assert_eq!(n, 1);
        let missing = verify_files(&[dir.path().join("nope")]).unwrap_err();
        assert!(missing.what.contains("cannot read"), "{missing}");
    }

    #[test]
    fn a_writer_after_a_torn_line_starts_a_fresh_line() {
        let (_d, path) = log(2);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":3,\"pr").unwrap();
        append(&path, &[ev("after")], false).unwrap();
        let l = lines(&path);
        assert_eq!(l.len(), 4);
        assert!(l[3].contains("\"after\""));
        assert_eq!(broken_line(&path).0, 3);
    }

    #[test]
    fn rotation_continues_the_chain_in_both_logrotate_modes() {
        // copytruncate: the file is copied, then emptied in place.
        let (d, path) = log(3);
        let old = d.path().join("audit.log.1");
        std::fs::copy(&path, &old).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&path, &[ev("after")], false).unwrap();
        let l = lines(&path);
        assert!(
            l[0].contains(CONTINUED) && l[0].contains("\"seq\":4"),
            "{l:?}"
        );
        let v = verify_files(&[old.clone(), path.clone()]).unwrap();
        assert_eq!(v[1].1.last.as_ref().unwrap().seq, 5);
        // The new file alone verifies too (it says where it continues from).
        assert!(
            verify_files(std::slice::from_ref(&path)).unwrap()[0]
                .1
                .continues
                .is_some()
        );
        // create: the file is renamed and a new one made.
        let old2 = d.path().join("audit.log.2");
        std::fs::rename(&path, &old2).unwrap();
        std::fs::File::create(&path).unwrap();
        append(&path, &[ev("later")], false).unwrap();
        verify_files(&[old.clone(), old2.clone(), path.clone()]).unwrap();
        // Out of order, or a file left out: found.
        let err = verify_files(&[old.clone(), path.clone()]).unwrap_err();
        assert!(err.what.contains("does not continue"), "{err}");
    }

    #[test]
    fn concurrent_writers_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        append(&path, &[ev(&format!("t{t}-{i}"))], false).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let v = verify_files(&[path]).unwrap();
        assert_eq!(v[0].1.lines, 200);
    }
}

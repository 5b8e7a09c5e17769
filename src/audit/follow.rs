//! Following the audit file like `tail -F`: the agent reads every event written on the host
//! (by itself and by every dso-runc) from here, for notifications and metrics. Survives both
//! logrotate modes: a renamed file is read to its end before the new one is opened, a
//! truncated one is read again from the start.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Longest line kept while waiting for its newline; a longer one is dropped (not dso's).
const MAX_LINE: usize = 1 << 20;

pub struct Follower {
    path: PathBuf,
    file: Option<(File, u64, u64)>,
    offset: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// Starts at the current end of `path` (events already written are not replayed).
    pub fn at_end(path: &Path) -> Follower {
        let mut f = Follower {
            path: path.to_path_buf(),
            file: None,
            offset: 0,
            partial: Vec::new(),
        };
        if let Ok(file) = File::open(path)
            && let Ok(m) = file.metadata()
        {
            f.offset = m.len();
            f.file = Some((file, m.dev(), m.ino()));
        }
        f
    }

    /// The events appended since the last call, oldest first.
    pub fn poll(&mut self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let mut out = Vec::new();
        self.drain(&mut out);
        // Rotated away (renamed, or deleted and re-created)? The old file was drained above.
        let current = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let ours = self.file.as_ref().map(|(_, d, i)| (*d, *i));
        if current.is_some() && current != ours {
            self.file = File::open(&self.path)
                .ok()
                .and_then(|f| f.metadata().ok().map(|m| (f, m.dev(), m.ino())));
            self.offset = 0;
            self.partial.clear();
            self.drain(&mut out);
        }
        out
    }

    fn drain(&mut self, out: &mut Vec<serde_json::Map<String, serde_json::Value>>) {
        let Some((file, _, _)) = self.file.as_mut() else {
            return;
        };
        let Ok(len) = file.metadata().map(|m| m.len()) else {
            return;
        };
        if len < self.offset {
            // Truncated in place (copytruncate): start again from the top.
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset || file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if file.take(len - self.offset).read_to_end(&mut buf).is_err() {
            return;
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            if self.partial.len() > MAX_LINE {
                self.partial.clear();
            }
            return;
        };
        let rest = self.partial.split_off(end + 1);
        for line in self.partial.split(|&b| b == b'\n') {
            if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(line) {
                out.push(m);
            }
        }
        self.partial = rest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::append;

    fn ev(name: &str) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("event".into(), name.into());
        m
    }

    fn names(evs: &[serde_json::Map<String, serde_json::Value>]) -> Vec<String> {
        evs.iter()
            .map(|e| e["event"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn follows_appends_and_both_rotation_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        append(&path, &[ev("old")], false).unwrap();
        let mut f = Follower::at_end(&path);
        assert!(f.poll().is_empty());
        append(&path, &[ev("a")], false).unwrap();
        append(&path, &[ev("b")], false).unwrap();
        assert_eq!(names(&f.poll()), ["a", "b"]);
        // create mode: a line lands in the renamed file, then the new file starts.
        append(&path, &[ev("c")], false).unwrap();
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        append(&path, &[ev("d")], false).unwrap();
        assert_eq!(names(&f.poll()), ["c", "audit_chain_continued", "d"]);
        // copytruncate.
        append(&path, &[ev("e")], false).unwrap();
        assert_eq!(names(&f.poll()), ["e"]);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&path, &[ev("f")], false).unwrap();
        assert_eq!(names(&f.poll()), ["audit_chain_continued", "f"]);
        // A file that did not exist when following began.
        let late = dir.path().join("late.log");
        let mut g = Follower::at_end(&late);
        append(&late, &[ev("g")], false).unwrap();
        assert_eq!(names(&g.poll()), ["g"]);
    }
}

//! `dso secret set NAME --declare [--allow docker:GLOB ...]`: adds `NAME: { provider: ..., allow:
//! [...] }` under `secrets:` of dso.yaml by editing its text, so that every comment, blank line
//! and the order of keys stay as the user wrote them. Where the entry goes comes from a YAML
//! parse (event positions); the result is parsed again and must equal the old document plus
//! the one entry, else nothing is written. The file is replaced atomically with its mode and
//! owner.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use serde_json::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::config::{Config, yaml_document};
use crate::policy::{AllowRule, DockerRule, KubernetesRule};

/// One `--allow` value: `docker:NAME_GLOB` or `kubernetes:NAMESPACE_GLOB`.
pub(super) fn parse_allow(s: &str) -> Result<AllowRule, String> {
    let bad = || {
        format!(
            "--allow {s:?}: expected docker:CONTAINER_NAME_GLOB or kubernetes:NAMESPACE_GLOB (globs with * and ?)"
        )
    };
    let (engine, glob) = s.split_once(':').ok_or_else(bad)?;
    if glob.is_empty() || glob.chars().any(char::is_control) {
        return Err(bad());
    }
    match engine {
        "docker" => Ok(AllowRule {
            docker: Some(DockerRule {
                name: Some(glob.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        "kubernetes" | "k8s" => Ok(AllowRule {
            kubernetes: Some(KubernetesRule {
                namespace: Some(glob.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        _ => Err(bad()),
    }
}

/// What `--declare` did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Declared {
    Added,
    /// The entry is there already, with the same provider and grants.
    AlreadyThere,
}

/// A prepared edit: checked before the value is stored, written after.
pub(super) struct Declaration {
    path: PathBuf,
    new_text: Option<String>,
}

impl Declaration {
    /// Plans adding secret `name` (provider `provider`, grants `allow`) to the config at
    /// `config_path`. Refuses, changing nothing, when the entry exists with other settings or
    /// when the file's layout cannot be edited safely (the message gives the YAML to add).
    pub(super) fn plan(
        config_path: &Path,
        name: &str,
        provider: &str,
        allow: &[AllowRule],
    ) -> anyhow::Result<Declaration> {
        // Edit the file a symlink points to, not the link.
        let path = fs::canonicalize(config_path)
            .map_err(|e| anyhow!("cannot resolve {}: {e}", config_path.display()))?;
        let text = fs::read_to_string(&path)
            .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
        let entry = entry_yaml(provider, allow);
        let by_hand = || {
            format!(
                "add under secrets: in {}: {name}: {entry}",
                config_path.display()
            )
        };
        let cfg = Config::from_str_at(&text, &path).map_err(|e| anyhow!("{e}"))?;
        if let Some(existing) = cfg.secrets.get(name) {
            let same = cfg.provider_of(existing) == Some(provider)
                && existing.allow.as_deref().unwrap_or_default() == allow;
            if same {
                return Ok(Declaration {
                    path,
                    new_text: None,
                });
            }
            bail!(
                "secret {name:?} is already declared in {} with other settings; edit its entry there (nothing stored)",
                config_path.display()
            );
        }
        let new_text = insert_entry(&text, name, &entry).ok_or_else(|| {
            anyhow!(
                "cannot edit {} safely; {}",
                config_path.display(),
                by_hand()
            )
        })?;
        // The edit must add exactly this entry and change nothing else.
        let mut want = yaml_document(&text, &path).map_err(|e| anyhow!("{e}"))?;
        let got = yaml_document(&new_text, &path).map_err(|e| anyhow!("{e}"))?;
        let entry_value: Value = serde_json::from_str(&entry_json(provider, allow))
            .map_err(|e| anyhow!("internal: {e}"))?;
        match want.as_object_mut() {
            Some(top) => {
                let secrets = top
                    .entry("secrets")
                    .or_insert_with(|| Value::Object(Default::default()));
                if secrets.is_null() {
                    *secrets = Value::Object(Default::default());
                }
                match secrets.as_object_mut() {
                    Some(m) => {
                        m.insert(name.to_string(), entry_value);
                    }
                    None => bail!(
                        "cannot edit {} safely; {}",
                        config_path.display(),
                        by_hand()
                    ),
                }
            }
            None => bail!(
                "cannot edit {} safely; {}",
                config_path.display(),
                by_hand()
            ),
        }
        if got != want || Config::from_str_at(&new_text, &path).is_err() {
            bail!(
                "cannot edit {} safely; {}",
                config_path.display(),
                by_hand()
            );
        }
        Ok(Declaration {
            path,
            new_text: Some(new_text),
        })
    }

    /// Writes the planned edit (temp file in the same directory, fsync, the old file's mode
    /// and owner, rename, fsync of the directory).
    pub(super) fn write(self) -> anyhow::Result<Declared> {
        let Some(text) = self.new_text else {
            return Ok(Declared::AlreadyThere);
        };
        let path = &self.path;
        let fail = |e: std::io::Error| anyhow!("cannot write {}: {e}", path.display());
        let meta = fs::metadata(path).map_err(fail)?;
        let opts = crate::atomic_file::Options {
            owner: Some((meta.uid(), meta.gid())),
            durable: true,
            ..crate::atomic_file::Options::new(meta.mode() & 0o7777)
        };
        crate::atomic_file::write(path, text.as_bytes(), opts).map_err(fail)?;
        Ok(Declared::Added)
    }
}

/// The entry as one line of YAML flow style: `{ provider: local, allow: [ {docker: {name:
/// "web"}} ] }`.
fn entry_yaml(provider: &str, allow: &[AllowRule]) -> String {
    let q = |s: &str| Value::String(s.to_string()).to_string();
    let rules: Vec<String> = allow
        .iter()
        .map(|r| match (&r.docker, &r.kubernetes) {
            (Some(d), _) => format!(
                "{{docker: {{name: {}}}}}",
                q(d.name.as_deref().unwrap_or("*"))
            ),
            (None, Some(k)) => format!(
                "{{kubernetes: {{namespace: {}}}}}",
                q(k.namespace.as_deref().unwrap_or("*"))
            ),
            (None, None) => String::new(),
        })
        .collect();
    if rules.is_empty() {
        format!("{{ provider: {} }}", q(provider))
    } else {
        format!(
            "{{ provider: {}, allow: [ {} ] }}",
            q(provider),
            rules.join(", ")
        )
    }
}

/// The same entry as JSON, for the check of the edit.
fn entry_json(provider: &str, allow: &[AllowRule]) -> String {
    let rules: Vec<Value> = allow
        .iter()
        .map(|r| match (&r.docker, &r.kubernetes) {
            (Some(d), _) => serde_json::json!({"docker": {"name": d.name}}),
            (None, Some(k)) => serde_json::json!({"kubernetes": {"namespace": k.namespace}}),
            (None, None) => serde_json::json!({}),
        })
        .collect();
    if rules.is_empty() {
        serde_json::json!({ "provider": provider }).to_string()
    } else {
        serde_json::json!({ "provider": provider, "allow": rules }).to_string()
    }
}

/// A YAML event and where it starts (byte offset into the text).
struct Ev {
    ev: Event,
    at: usize,
}

struct Collect {
    /// Char index → byte offset.
    offsets: Vec<usize>,
    evs: Vec<Ev>,
}

impl MarkedEventReceiver for Collect {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = self
            .offsets
            .get(mark.index())
            .copied()
            .unwrap_or(*self.offsets.last().unwrap_or(&0));
        self.evs.push(Ev { ev, at });
    }
}

/// `text` with `name: entry` added to its top-level `secrets:` mapping (created at the end if
/// absent). `None` when the layout is not one this edit understands.
fn insert_entry(text: &str, name: &str, entry: &str) -> Option<String> {
    let mut offsets: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    offsets.push(text.len());
    let mut c = Collect {
        offsets,
        evs: Vec::new(),
    };
    Parser::new_from_str(text).load(&mut c, true).ok()?;
    let evs = &c.evs;
    let key = yaml_key(name);
    let docs = evs
        .iter()
        .filter(|e| matches!(e.ev, Event::DocumentStart))
        .count();
    let with_newline = |t: &str| {
        let mut t = t.to_string();
        if !t.is_empty() && !t.ends_with('\n') {
            t.push('\n');
        }
        t
    };
    // An empty file, or comments only.
    if docs == 0 || !evs.iter().any(|e| matches!(e.ev, Event::MappingStart(..))) {
        if evs.iter().any(|e| matches!(e.ev, Event::Scalar(..))) {
            return None;
        }
        return Some(format!(
            "{}secrets:\n  {key}: {entry}\n",
            with_newline(text)
        ));
    }
    if docs != 1 {
        return None;
    }
    // The top-level mapping: the first event after DocumentStart, in block style.
    let top = evs
        .iter()
        .position(|e| matches!(e.ev, Event::DocumentStart))?
        + 1;
    if !matches!(evs.get(top)?.ev, Event::MappingStart(..)) || text[evs[top].at..].starts_with('{')
    {
        return None;
    }
    // Walk the top-level entries: key event index, value start index, value end index.
    let mut i = top + 1;
    let mut secrets_value: Option<(usize, usize)> = None;
    while i < evs.len() {
        match &evs[i].ev {
            Event::MappingEnd => break,
            Event::Scalar(k, ..) => {
                let v = i + 1;
                let end = node_end(evs, v)?;
                if k == "secrets" {
                    secrets_value = Some((v, end));
                }
                i = end + 1;
            }
            _ => return None, // complex keys, aliases as keys
        }
    }
    let Some((v, end)) = secrets_value else {
        return Some(format!(
            "{}secrets:\n  {key}: {entry}\n",
            with_newline(text)
        ));
    };
    match &evs[v].ev {
        // `secrets:` with nothing after it.
        Event::Scalar(s, ..) if s.is_empty() || s == "~" || s == "null" => {
            let line_end = text[evs[v - 1].at..]
                .find('\n')
                .map(|n| evs[v - 1].at + n + 1);
            match line_end {
                Some(at) if text[evs[v - 1].at..at].trim_end().ends_with(':') => {
                    Some(format!("{}  {key}: {entry}\n{}", &text[..at], &text[at..]))
                }
                None if text[evs[v - 1].at..].trim_end().ends_with(':') => Some(format!(
                    "{}\n  {key}: {entry}\n",
                    text.trim_end_matches('\n')
                )),
                _ => None,
            }
        }
        Event::MappingStart(..) if text[evs[v].at..].starts_with('{') => {
            // Flow mapping: before its closing brace (where its MappingEnd event is).
            let close = evs[end].at;
            if !text[close..].starts_with('}') {
                return None;
            }
            let inner = text[evs[v].at + 1..close].trim();
            if inner.is_empty() {
                // `secrets: {}` becomes a block mapping with the entry.
                let key_line_start = text[..evs[v - 1].at].rfind('\n').map_or(0, |n| n + 1);
                let indent = &text[key_line_start..evs[v - 1].at];
                if !indent.trim().is_empty() {
                    return None;
                }
                Some(format!(
                    "{}\n{indent}  {key}: {entry}{}",
                    text[..evs[v].at].trim_end(),
                    &text[close + 1..]
                ))
            } else {
                Some(format!(
                    "{}, {key}: {entry}{}",
                    text[..close].trim_end(),
                    &text[close..]
                ))
            }
        }
        Event::MappingStart(..) => {
            // Block mapping: a new line at the indentation of its keys, after its last entry
            // (before any comment lines that belong to what follows).
            let first_key = evs.get(v + 1)?;
            if !matches!(first_key.ev, Event::Scalar(..)) {
                return None;
            }
            let line_start = text[..first_key.at].rfind('\n').map_or(0, |n| n + 1);
            let indent = &text[line_start..first_key.at];
            if !indent.chars().all(|c| c == ' ') {
                return None;
            }
            // Before the next top-level key (the start of its line), else at the end; then back
            // over blank and comment lines indented less than the entries.
            let mut at = match evs.get(end + 1) {
                Some(Ev {
                    ev: Event::Scalar(..),
                    at,
                }) => text[..*at].rfind('\n').map_or(0, |n| n + 1),
                _ => text.len(),
            };
            if at == 0 {
                return None;
            }
            loop {
                let prev_start = text[..at - 1].rfind('\n').map_or(0, |n| n + 1);
                let line = &text[prev_start..at - 1];
                let trimmed = line.trim_start();
                let depth = line.len() - trimmed.len();
                if prev_start > 0
                    && (trimmed.is_empty() || (trimmed.starts_with('#') && depth < indent.len()))
                {
                    at = prev_start;
                } else {
                    break;
                }
            }
            let mut out = text[..at].to_string();
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!("{indent}{key}: {entry}\n"));
            out.push_str(&text[at..]);
            Some(out)
        }
        _ => None,
    }
}

/// Index of the last event of the node that starts at `i`.
fn node_end(evs: &[Ev], i: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, e) in evs.iter().enumerate().skip(i) {
        match e.ev {
            Event::MappingStart(..) | Event::SequenceStart(..) => depth += 1,
            Event::MappingEnd | Event::SequenceEnd => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(j);
                }
            }
            Event::Scalar(..) | Event::Alias(..) if depth == 0 => return Some(j),
            _ => {}
        }
    }
    None
}

/// `name` as a YAML mapping key: plain when YAML reads it back as that string, else quoted.
fn yaml_key(name: &str) -> String {
    match yaml_document(name, Path::new(name)) {
        Ok(Value::String(s)) if s == name => name.to_string(),
        _ => Value::String(name.to_string()).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: &str = "{ provider: \"local\" }";

    #[test]
    fn block_mapping_keeps_comments_and_order() {
        let text = "# top\nproviders:\n  local: { type: local }  # mine\nsecrets:\n  a: {}  # a\n  b:\n    path: x\n\n# the watch section\nwatch: { interval: 5s }\n";
        assert_eq!(
            insert_entry(text, "db", E).unwrap(),
            "# top\nproviders:\n  local: { type: local }  # mine\nsecrets:\n  a: {}  # a\n  b:\n    path: x\n  db: { provider: \"local\" }\n\n# the watch section\nwatch: { interval: 5s }\n"
        );
        // Last section, no trailing newline.
        assert_eq!(
            insert_entry("secrets:\n    a: {}", "db", E).unwrap(),
            "secrets:\n    a: {}\n    db: { provider: \"local\" }\n"
        );
    }

    #[test]
    fn empty_flow_null_and_missing_secrets() {
        assert_eq!(
            insert_entry(
                "providers: {}\nsecrets: {}\n#  db_password:\n#    provider: local\n",
                "db",
                E
            )
            .unwrap(),
            "providers: {}\nsecrets:\n  db: { provider: \"local\" }\n#  db_password:\n#    provider: local\n"
        );
        assert_eq!(
            insert_entry("secrets: {a: {}}\nwatch: {}\n", "db", E).unwrap(),
            "secrets: {a: {}, db: { provider: \"local\" }}\nwatch: {}\n"
        );
        assert_eq!(
            insert_entry("secrets:\n# none yet\nwatch: {}\n", "db", E).unwrap(),
            "secrets:\n  db: { provider: \"local\" }\n# none yet\nwatch: {}\n"
        );
        assert_eq!(
            insert_entry("providers: {}\n", "db", E).unwrap(),
            "providers: {}\nsecrets:\n  db: { provider: \"local\" }\n"
        );
        assert_eq!(
            insert_entry("# nothing\n", "db", E).unwrap(),
            "# nothing\nsecrets:\n  db: { provider: \"local\" }\n"
        );
    }

    #[test]
    fn layouts_it_does_not_understand_are_refused() {
        assert!(insert_entry("{secrets: {}}\n", "db", E).is_none());
        assert!(insert_entry("a: 1\n---\nb: 2\n", "db", E).is_none());
        assert!(insert_entry("secrets: 3\n", "db", E).is_none());
        // A brace in a comment after an empty flow mapping is not its end.
        assert_eq!(
            insert_entry("secrets: {}\n# x: { a: b }\n", "db", E).unwrap(),
            "secrets:\n  db: { provider: \"local\" }\n# x: { a: b }\n"
        );
    }

    #[test]
    fn keys_and_allow_rules() {
        assert_eq!(yaml_key("db_password"), "db_password");
        assert_eq!(yaml_key("true"), "\"true\"");
        assert_eq!(yaml_key("1e3"), "\"1e3\"");
        let r = parse_allow("docker:web-*").unwrap();
        assert_eq!(r.docker.unwrap().name.as_deref(), Some("web-*"));
        let r = parse_allow("kubernetes:billing").unwrap();
        assert_eq!(r.kubernetes.unwrap().namespace.as_deref(), Some("billing"));
        assert!(parse_allow("podman:x").is_err());
        assert!(parse_allow("docker:").is_err());
        assert_eq!(
            entry_yaml("local", &[parse_allow("docker:web").unwrap()]),
            "{ provider: \"local\", allow: [ {docker: {name: \"web\"}} ] }"
        );
    }
}

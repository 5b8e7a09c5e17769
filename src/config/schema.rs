//! Checks dso.yaml against the JSON Schema in `runtime-config/dso.schema.json` and the rules a
//! schema cannot say (provider references, names, https only), as `line N: key.path: why`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use jsonschema::{JsonType, ValidationError, Validator};
use serde_json::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use serde::Deserialize;

use super::{
    AllowRule, AzureAuthSettings, Config, Engine, ProviderConfig, ProviderKind, ProviderSettings,
    SHORTHAND_PROVIDER, SecretConfig, parse_duration, parse_size,
};
use crate::secrets::{RefError, validate_name};

/// The schema shipped in `runtime-config/dso.schema.json`, compiled into the binaries.
pub const SCHEMA_JSON: &str = include_str!("../../runtime-config/dso.schema.json");

/// Checks a parsed dso.yaml document (as JSON) against the schema, reads it as the typed
/// config and checks that against the rules. Each error is formatted `line N: key.path:
/// message`. `text` is the YAML source, for lines.
pub fn validate_document(doc: &Value, text: &str) -> Result<Config, Vec<String>> {
    let lines = LineMap::build(text);
    let mut problems = lines.structural_problems();
    let schema = compiled();
    let schema_problems: Vec<Problem> = schema
        .validator
        .iter_errors(doc)
        .flat_map(|e| describe(&e, &schema.schema))
        .collect();
    let schema_ok = schema_problems.is_empty();
    problems.extend(schema_problems);
    // The typed config can only be read from a schema-valid document.
    let mut typed = None;
    if schema_ok {
        let before = problems.len();
        written_form_checks(doc, &lines, &mut problems);
        if problems.len() == before {
            match Config::deserialize(doc) {
                Ok(cfg) => {
                    rules(&cfg, doc.get("providers").is_some(), &mut problems);
                    typed = Some(cfg);
                }
                Err(e) => problems.push(Problem::at(Vec::new(), e.to_string())),
            }
        }
    }
    if let (true, Some(cfg)) = (problems.is_empty(), typed) {
        return Ok(cfg);
    }
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<(Pos, String)> = problems
        .into_iter()
        .map(|p| {
            let pos = p.pos.unwrap_or_else(|| lines.pos_of(&p.path));
            let msg = format!(
                "line {}: {}: {}",
                pos.0,
                dotted(&p.path),
                one_line(&p.message)
            );
            (pos, msg)
        })
        .filter(|(_, s)| seen.insert(s.clone()))
        .collect();
    // In document order; problems at one place keep the order they were found in.
    out.sort_by_key(|(pos, _)| *pos);
    Err(out.into_iter().map(|(_, s)| s).collect())
}

/// One problem before formatting: where (an instance path; the line comes from it unless set)
/// and why.
struct Problem {
    path: Vec<String>,
    pos: Option<Pos>,
    message: String,
}

impl Problem {
    fn at(path: Vec<String>, message: impl Into<String>) -> Self {
        Self {
            path,
            pos: None,
            message: message.into(),
        }
    }
}

/// A place in the YAML source: line (from 1) and column.
type Pos = (usize, usize);

struct CompiledSchema {
    schema: Value,
    validator: Validator,
}

fn compiled() -> &'static CompiledSchema {
    static SCHEMA: OnceLock<CompiledSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        // The schema is a constant of this build, checked by the tests: failing here is a bug.
        let schema: Value =
            serde_json::from_str(SCHEMA_JSON).expect("dso.schema.json is valid JSON");
        let validator = jsonschema::draft202012::options()
            .build(&schema)
            .expect("dso.schema.json is a valid JSON Schema");
        CompiledSchema { schema, validator }
    })
}

// ---------------------------------------------------------------------------------------------
// Schema errors → human messages

fn describe(err: &ValidationError<'_>, schema: &Value) -> Vec<Problem> {
    let path: Vec<String> = err
        .instance_path()
        .segments()
        .map(|s| match s {
            LocationSegment::Property(p) => p.into_owned(),
            LocationSegment::Index(i) => i.to_string(),
        })
        .collect();
    let schema_path: Vec<String> = err
        .schema_path()
        .segments()
        .map(|s| s.to_string())
        .collect();
    let instance = err.instance();
    let expected = def_name(&schema_path).and_then(def_phrase);
    match err.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let allowed = allowed_keys(schema, &schema_path);
            unexpected
                .iter()
                .map(|key| {
                    let mut p = path.clone();
                    p.push(key.clone());
                    let msg = if allowed.is_empty() {
                        "unknown key".to_string()
                    } else {
                        format!("unknown key (expected one of {})", allowed.join(", "))
                    };
                    Problem::at(p, msg)
                })
                .collect()
        }
        ValidationErrorKind::Required { property } => {
            let name = show(property);
            // For `dependentRequired`, name the key that made this one required.
            let trigger = (schema_path.last().map(String::as_str) == Some("dependentRequired"))
                .then(|| schema_at(schema, &schema_path))
                .flatten()
                .and_then(Value::as_object)
                .and_then(|deps| {
                    deps.iter()
                        .find(|(k, needs)| {
                            instance.get(k.as_str()).is_some()
                                && needs.as_array().is_some_and(|n| n.contains(property))
                        })
                        .map(|(k, _)| k)
                });
            let msg = match trigger {
                Some(t) => format!("missing required key {name} (needed with {})", show_str(t)),
                None => format!("missing required key {name}"),
            };
            vec![Problem::at(path, msg)]
        }
        ValidationErrorKind::Enum { options } => {
            let opts = match &**options {
                Value::Array(a) => a.iter().map(plain).collect::<Vec<_>>().join(", "),
                other => plain(other),
            };
            vec![Problem::at(
                path,
                format!("{} is not one of {opts}", show(instance)),
            )]
        }
        ValidationErrorKind::Type { kind } => {
            let msg = match expected {
                _ if instance.is_null() => {
                    let want = expected.map_or_else(|| type_phrase(kind), str::to_string);
                    let hint = if want == "a mapping" {
                        " (write {} for an empty mapping)"
                    } else {
                        ""
                    };
                    format!("expected {want}, found nothing{hint}")
                }
                Some(e) => format!("{} is not {e}", show(instance)),
                None => format!("expected {}, found {}", type_phrase(kind), show(instance)),
            };
            vec![Problem::at(path, msg)]
        }
        ValidationErrorKind::Pattern { pattern } => {
            let what = expected
                .or_else(|| pattern_phrase(pattern))
                .map(str::to_string)
                .unwrap_or_else(|| format!("matching {}", show_str(pattern)));
            vec![Problem::at(
                path,
                format!("{} is not {what}", show(instance)),
            )]
        }
        ValidationErrorKind::Minimum { limit } | ValidationErrorKind::Maximum { limit } => {
            let msg = match expected {
                Some(e) => format!("{} is not {e}", show(instance)),
                None => {
                    let side = if matches!(err.kind(), ValidationErrorKind::Minimum { .. }) {
                        "below the minimum"
                    } else {
                        "above the maximum"
                    };
                    format!("{} is {side} {limit}", show(instance))
                }
            };
            vec![Problem::at(path, msg)]
        }
        ValidationErrorKind::MinLength { limit: 1 } => {
            vec![Problem::at(path, "must not be empty")]
        }
        ValidationErrorKind::Constant { expected_value } => vec![Problem::at(
            path,
            format!("{} is not {}", show(instance), show(expected_value)),
        )],
        // Not used by dso.schema.json today; should it be, report the error about the deepest
        // part of the document rather than "not valid under any of the given schemas".
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            let deepest = context
                .iter()
                .flatten()
                .max_by_key(|e| e.instance_path().segments().count());
            match deepest {
                Some(e) => describe(e, schema),
                None => vec![Problem::at(path, err.to_string())],
            }
        }
        _ => vec![Problem::at(path, err.to_string())],
    }
}

/// The `$defs` entry whose own keyword failed (`/$defs/duration/pattern`). Schema paths are
/// canonical: they name where the keyword is written, not the `$ref`s that led there.
fn def_name(schema_path: &[String]) -> Option<&str> {
    match schema_path {
        [defs, name, _keyword] if defs == "$defs" => Some(name),
        _ => None,
    }
}

/// The schema node at `path`, following local `$ref`s met on the way.
fn schema_at<'a>(schema: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(schema, |node, seg| {
        if seg == "$ref" {
            let name = node.get("$ref")?.as_str()?.strip_prefix("#/$defs/")?;
            schema.get("$defs")?.get(name)
        } else {
            match node {
                Value::Array(a) => a.get(seg.parse::<usize>().ok()?),
                other => other.get(seg),
            }
        }
    })
}

/// The keys the object schema holding a failing `additionalProperties` allows.
fn allowed_keys(schema: &Value, schema_path: &[String]) -> Vec<String> {
    schema_path
        .split_last()
        .and_then(|(_, parents)| schema_at(schema, parents))
        .and_then(|node| node.get("properties"))
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// What a value of a `$defs` entry looks like, for "X is not <phrase>".
fn def_phrase(def: &str) -> Option<&'static str> {
    Some(match def {
        "duration" => "a duration (e.g. 30s, 250ms, 5m, 1h, or a number of seconds)",
        "size" => "a size (e.g. 512k, 1m, 1g, or a number of bytes)",
        "mode" => "an octal file mode (e.g. \"0400\")",
        "abs_path" => "an absolute path",
        "url" => "a URL like https://host[:port][/path]",
        "listen" => "a host:port address (e.g. 127.0.0.1:8472 or [::1]:8472)",
        _ => return None,
    })
}

/// Phrases for the patterns written inline in the schema (not through a `$defs` entry).
fn pattern_phrase(pattern: &str) -> Option<&'static str> {
    if pattern.starts_with("^(SIG)?(") {
        Some("a signal name (e.g. SIGHUP, HUP, SIGUSR1)")
    } else if pattern.starts_with("^[a-z]{2}(") {
        Some("an AWS region (e.g. us-east-1)")
    } else if pattern.starts_with("^[0-9][0-9A-Za-z.-]") {
        Some("an API version (e.g. 7.4)")
    } else {
        None
    }
}

fn type_phrase(kind: &TypeKind) -> String {
    let one = |t: JsonType| match t {
        JsonType::Object => "a mapping",
        JsonType::Array => "a list",
        JsonType::String => "a string",
        JsonType::Integer => "an integer",
        JsonType::Number => "a number",
        JsonType::Boolean => "true or false",
        JsonType::Null => "null",
    };
    match kind {
        TypeKind::Single(t) => one(*t).to_string(),
        TypeKind::Multiple(set) => set.iter().map(one).collect::<Vec<_>>().join(" or "),
    }
}

/// A value of the config as it appears in a message: scalars as JSON (strings quoted and
/// escaped, so a message stays on one line), collections by kind, long strings shortened.
fn show(v: &Value) -> String {
    match v {
        Value::Object(_) => "a mapping".into(),
        Value::Array(_) => "a list".into(),
        Value::Null => "null".into(),
        Value::String(s) => show_str(s),
        other => other.to_string(),
    }
}

fn show_str(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        return Value::String(s.to_string()).to_string();
    }
    let cut: String = s.chars().take(MAX).collect();
    format!("{}…", Value::String(cut))
}

/// An enum option as written in YAML: strings bare, the rest as JSON.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `providers.vault.auth`; keys that are not plain identifiers are quoted (`secrets."a.b"`).
fn dotted(path: &[String]) -> String {
    if path.is_empty() {
        return "(top level)".into();
    }
    path.iter()
        .map(|seg| {
            if !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                seg.clone()
            } else {
                show_str(seg)
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn one_line(s: &str) -> String {
    if s.contains(['\n', '\r']) {
        s.replace(['\n', '\r'], " ")
    } else {
        s.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Instance path → YAML line

/// Lines of the YAML source by instance path: a mapping key's line for the value under it, an
/// item's line for a list item. Also what a schema cannot see: duplicate and merge keys, and the
/// source text of plain scalars (YAML reads `0o400` as the integer 256).
#[derive(Default)]
struct LineMap {
    lines: HashMap<Vec<String>, Pos>,
    plain_scalars: HashMap<Vec<String>, String>,
    duplicates: Vec<(Vec<String>, Pos, usize)>,
    merge_keys: Vec<(Vec<String>, Pos)>,
}

impl LineMap {
    fn build(text: &str) -> LineMap {
        let mut walker = Walker::default();
        // A YAML error here was already reported by the parser that produced the document
        // (or this parser is stricter); the lines gathered so far are still good.
        let _ = Parser::new_from_str(text).load(&mut walker, false);
        walker.map
    }

    /// Where `path` is, else its nearest ancestor in the source, else line 1.
    fn pos_of(&self, path: &[String]) -> Pos {
        (0..=path.len())
            .rev()
            .find_map(|n| self.lines.get(&path[..n]).copied())
            .unwrap_or((1, 0))
    }

    fn structural_problems(&self) -> Vec<Problem> {
        let dups = self.duplicates.iter().map(|(path, pos, first)| Problem {
            path: path.clone(),
            pos: Some(*pos),
            message: format!("duplicate key (first given at line {first})"),
        });
        let merges = self.merge_keys.iter().map(|(path, pos)| Problem {
            path: path.clone(),
            pos: Some(*pos),
            message: "YAML merge keys (<<) are not supported; write the keys out".into(),
        });
        dups.chain(merges).collect()
    }
}

enum Frame {
    /// `path` is None inside a node with no instance path (a complex key).
    Map {
        path: Option<Vec<String>>,
        pending_key: Option<Option<String>>,
    },
    Seq {
        path: Option<Vec<String>>,
        next: usize,
    },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    map: LineMap,
}

impl Walker {
    /// Registers a node starting at `line`; returns its instance path (None if it has none, or
    /// if it is a mapping key).
    fn node(&mut self, pos: Pos, key_text: Option<&str>) -> (Option<Vec<String>>, bool) {
        match self.stack.last_mut() {
            None => {
                self.map.lines.entry(Vec::new()).or_insert(pos);
                (Some(Vec::new()), false)
            }
            Some(Frame::Seq { path, next }) => {
                let p = path.clone().map(|mut p| {
                    p.push(next.to_string());
                    p
                });
                *next += 1;
                if let Some(p) = &p {
                    self.map.lines.insert(p.clone(), pos);
                }
                (p, false)
            }
            Some(Frame::Map { path, pending_key }) => match pending_key.take() {
                None => {
                    // This node is a key.
                    *pending_key = Some(key_text.map(str::to_string));
                    if let (Some(parent), Some(k)) = (path.as_ref(), key_text) {
                        let mut p = parent.clone();
                        p.push(k.to_string());
                        if k == "<<" {
                            self.map.merge_keys.push((p.clone(), pos));
                        }
                        if let Some((first, _)) = self.map.lines.insert(p.clone(), pos) {
                            // The last occurrence is the one in the document: forget the
                            // lines under the first.
                            self.map
                                .lines
                                .retain(|k, _| k.len() == p.len() || !k.starts_with(&p));
                            self.map.duplicates.push((p, pos, first));
                        }
                    }
                    (None, true)
                }
                Some(key) => {
                    let p = match (path.as_ref(), key) {
                        (Some(parent), Some(k)) => {
                            let mut p = parent.clone();
                            p.push(k);
                            Some(p)
                        }
                        _ => None,
                    };
                    (p, false)
                }
            },
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = (mark.line(), mark.col());
        match ev {
            Event::Scalar(value, style, ..) => {
                let (path, _is_key) = self.node(pos, Some(&value));
                if let (Some(p), TScalarStyle::Plain) = (path, style) {
                    self.map.plain_scalars.insert(p, value);
                }
            }
            Event::Alias(_) => {
                let _ = self.node(pos, None);
            }
            Event::MappingStart(..) => {
                let (path, is_key) = self.node(pos, None);
                self.stack.push(Frame::Map {
                    path: path.filter(|_| !is_key),
                    pending_key: None,
                });
            }
            Event::SequenceStart(..) => {
                let (path, is_key) = self.node(pos, None);
                self.stack.push(Frame::Seq {
                    path: path.filter(|_| !is_key),
                    next: 0,
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// How values are written: a schema sees the parsed document, not the text

/// Whole numbers, file modes written in octal digits, durations and sizes that fit. The typed
/// config could not be read without these.
fn written_form_checks(doc: &Value, lines: &LineMap, out: &mut Vec<Problem>) {
    // JSON Schema's "integer" takes 30.0; the typed config does not.
    let mut floats = Vec::new();
    find_floats(doc, &mut Vec::new(), &mut floats);
    for (path, n) in floats {
        out.push(Problem::at(
            path,
            format!("expected a whole number, found {n}"),
        ));
    }
    let at = |path: &[&str]| -> (Vec<String>, Option<&Value>) {
        let v = path.iter().try_fold(doc, |v, k| v.get(*k));
        (key(path), v)
    };
    let mut durations = vec![
        at(&["watch", "interval"]),
        at(&["runtime", "fetch_timeout"]),
    ];
    let mut modes = vec![at(&["runtime", "file_mode"])];
    let sizes = ["tmpfs_size", "max_secret_size", "max_total_secret_size"];
    for (path, v) in sizes.map(|s| at(&["runtime", s])) {
        check_size(&path, v, out);
    }
    for name in doc
        .get("secrets")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(n, _)| n)
    {
        durations.push(at(&["secrets", name, "ttl"]));
        durations.push(at(&["secrets", name, "rotation", "interval"]));
        modes.push(at(&["secrets", name, "mode"]));
    }
    let notifications = doc.get("notifications").and_then(Value::as_array);
    for i in 0..notifications.map_or(0, Vec::len) {
        durations.push(at(&["notifications", &i.to_string(), "timeout"]));
    }
    for (path, v) in durations {
        check_duration(&path, v, out);
    }
    for (path, v) in modes {
        check_mode(lines, &path, v, out);
    }
}

// ---------------------------------------------------------------------------------------------
// Rules on the typed config

/// What a schema cannot say: names, which provider a secret comes from, which keys go with
/// which engine, rules that can never match, plain http, the secrets dir. `providers_given`:
/// the document has a `providers:` key (even an empty one).
fn rules(cfg: &Config, providers_given: bool, out: &mut Vec<Problem>) {
    if cfg.provider.is_some() && providers_given {
        out.push(Problem::at(
            key(&["provider"]),
            "cannot be used together with \"providers\"; move it under providers",
        ));
    }
    let mut entries: Vec<(Vec<String>, &ProviderConfig)> = Vec::new();
    for (name, p) in &cfg.providers {
        if let Err(e) = validate_name(name) {
            out.push(Problem::at(
                key(&["providers", name]),
                bad_name("provider", name, &e),
            ));
        }
        entries.push((key(&["providers", name]), p));
    }
    entries.extend(cfg.provider.iter().map(|p| (key(&["provider"]), p)));
    for (path, p) in &entries {
        check_provider_urls(path, p, out);
        check_allow(path, p.allow.as_deref(), out);
    }

    let provider_named = |name: &str| {
        cfg.providers
            .get(name)
            .or(cfg.provider.as_ref().filter(|_| name == SHORTHAND_PROVIDER))
    };
    let mut defined: Vec<&str> = cfg.providers.keys().map(String::as_str).collect();
    if cfg.provider.is_some() {
        defined.push(SHORTHAND_PROVIDER);
    }
    let listing = if defined.is_empty() {
        "no providers are defined".to_string()
    } else {
        format!("defined: {}", defined.join(", "))
    };
    for (name, s) in &cfg.secrets {
        let at = key(&["secrets", name]);
        if let Err(e) = validate_name(name) {
            out.push(Problem::at(at.clone(), bad_name("secret", name, &e)));
        }
        let provider = match s.provider.as_deref() {
            Some(p) if !defined.contains(&p) => {
                out.push(Problem::at(
                    key(&["secrets", name, "provider"]),
                    format!("provider {} is not defined ({listing})", show_str(p)),
                ));
                None
            }
            Some(p) => provider_named(p),
            None if defined.len() == 1 => provider_named(defined[0]),
            None if defined.is_empty() => {
                out.push(Problem::at(
                    at.clone(),
                    "no provider to fetch it from: define one under providers",
                ));
                None
            }
            None => {
                out.push(Problem::at(
                    at.clone(),
                    format!(
                        "missing required key \"provider\": there is more than one provider ({listing})"
                    ),
                ));
                None
            }
        };
        check_engine(name, s, provider, out);
        check_allow(&at, s.allow.as_deref(), out);
    }

    let dir = &cfg.runtime.secrets_dir;
    if dir.split('/').any(|c| c == "." || c == "..") || dir.trim_end_matches('/').is_empty() {
        out.push(Problem::at(
            key(&["runtime", "secrets_dir"]),
            format!(
                "{} must be a directory below / without \".\" or \"..\" components",
                show_str(dir)
            ),
        ));
    }
    for (i, n) in cfg.notifications.iter().enumerate() {
        if let Some(msg) = http_problem(&n.url, HttpAllowed::LoopbackOnly) {
            out.push(Problem::at(
                key(&["notifications", &i.to_string(), "url"]),
                msg,
            ));
        }
    }
}

/// `engine`, `role`, `mount`, `common_name`, `ttl`, `alt_names`, `ip_sans`: which go together,
/// and that dynamic engines come from a Vault provider.
fn check_engine(
    name: &str,
    s: &SecretConfig,
    provider: Option<&ProviderConfig>,
    out: &mut Vec<Problem>,
) {
    let at = |k: &str| key(&["secrets", name, k]);
    let pki_only = [
        ("common_name", s.common_name.is_some()),
        ("ttl", s.ttl.is_some()),
        ("alt_names", !s.alt_names.is_empty()),
        ("ip_sans", !s.ip_sans.is_empty()),
    ];
    let engine = s.engine.as_str();
    match s.engine {
        Engine::Kv => {
            let dynamic_only = [("role", s.role.is_some()), ("mount", s.mount.is_some())];
            for (k, _) in dynamic_only.iter().chain(&pki_only).filter(|(_, set)| *set) {
                out.push(Problem::at(
                    at(k),
                    "only used with engine database or pki (this secret is a kv secret)",
                ));
            }
            return;
        }
        Engine::Database => {
            for (k, _) in pki_only.iter().filter(|(_, set)| *set) {
                out.push(Problem::at(at(k), "only used with engine pki"));
            }
        }
        Engine::Pki if s.common_name.is_none() => out.push(Problem::at(
            at("engine"),
            "missing required key \"common_name\" (engine pki)",
        )),
        Engine::Pki => {}
    }
    if s.role.is_none() {
        out.push(Problem::at(
            at("engine"),
            format!("missing required key \"role\" (engine {engine})"),
        ));
    }
    // The parts an issued value has: a key outside them could only fail after issuing.
    let parts: &[&str] = if s.engine == Engine::Database {
        &["username", "password"]
    } else {
        &["certificate", "ca_chain", "private_key"]
    };
    if let Some(k) = s.key.as_deref().filter(|k| !parts.contains(k)) {
        out.push(Problem::at(
            at("key"),
            format!(
                "{} is not a part of an engine {engine} value (one of {})",
                show_str(k),
                parts.join(", ")
            ),
        ));
    }
    for (k, set) in [("path", s.path.is_some()), ("version", s.version.is_some())] {
        if set {
            out.push(Problem::at(
                at(k),
                format!(
                    "not used with engine {engine} (the engine issues a new value per container)"
                ),
            ));
        }
    }
    if let Some(kind) = provider.map(ProviderConfig::kind)
        && kind != ProviderKind::Vault
    {
        out.push(Problem::at(
            at("engine"),
            format!(
                "engine {engine} needs a vault provider, not {}",
                kind.as_str()
            ),
        ));
    }
}

/// Allow rules that can never match: none or two engine keys.
fn check_allow(owner: &[String], allow: Option<&[AllowRule]>, out: &mut Vec<Problem>) {
    for (i, rule) in allow.into_iter().flatten().enumerate() {
        if let Some(why) = rule.never_matches() {
            let mut at = owner.to_vec();
            at.extend(["allow".to_string(), i.to_string()]);
            out.push(Problem::at(at, why));
        }
    }
}

fn find_floats(v: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
    match v {
        Value::Number(n) if n.is_f64() => out.push((path.clone(), n.to_string())),
        Value::Object(m) => {
            for (k, child) in m {
                path.push(k.clone());
                find_floats(child, path, out);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                path.push(i.to_string());
                find_floats(child, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn key(segments: &[&str]) -> Vec<String> {
    segments.iter().map(|s| s.to_string()).collect()
}

fn bad_name(what: &str, name: &str, e: &RefError) -> String {
    match e {
        RefError::BadName { why, .. } => {
            format!("{what} name {} is not valid: {why}", show_str(name))
        }
        other => other.to_string(),
    }
}

fn check_duration(path: &[String], v: Option<&Value>, out: &mut Vec<Problem>) {
    let secs_or_parsed = match v {
        None => return,
        Some(Value::Number(n)) => n.as_u64().map(std::time::Duration::from_secs),
        Some(Value::String(s)) => parse_duration(s),
        Some(_) => return,
    };
    match secs_or_parsed {
        Some(d) if d.is_zero() => out.push(Problem::at(path.to_vec(), "must be greater than zero")),
        Some(_) => {}
        None => out.push(Problem::at(path.to_vec(), "is too large")),
    }
}

fn check_size(path: &[String], v: Option<&Value>, out: &mut Vec<Problem>) {
    let bytes = match v {
        None => return,
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => parse_size(s),
        Some(_) => return,
    };
    match bytes {
        Some(0) => out.push(Problem::at(path.to_vec(), "must be greater than zero")),
        Some(_) => {}
        None => out.push(Problem::at(path.to_vec(), "is too large")),
    }
}

/// Integer modes are read digit by digit as octal (`400` is 0o400), so every digit must be
/// octal, and the YAML must have said it in decimal digits: YAML reads `0o400` as 256 and
/// `0x1ff` as 511, which would silently become other modes.
fn check_mode(lines: &LineMap, path: &[String], v: Option<&Value>, out: &mut Vec<Problem>) {
    let Some(Value::Number(n)) = v else { return };
    let digits = n.to_string();
    let written = lines.plain_scalars.get(path).map(|s| s.trim());
    if written.is_some_and(|w| w != digits) {
        out.push(Problem::at(
            path.to_vec(),
            format!(
                "write the mode as a quoted octal string (e.g. \"0400\"), not {}",
                written.unwrap_or_default()
            ),
        ));
    } else if !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        out.push(Problem::at(
            path.to_vec(),
            format!("{digits} is not an octal file mode (digits 0-7, e.g. \"0400\")"),
        ));
    }
}

/// Which http endpoints a URL key may name besides loopback.
#[derive(Clone, Copy)]
enum HttpAllowed {
    LoopbackOnly,
    /// The AWS instance metadata service (IPv4 and IPv6).
    AwsImds,
    /// The Azure instance metadata service, which only speaks http.
    AzureImds,
}

fn check_provider_urls(path: &[String], provider: &ProviderConfig, out: &mut Vec<Problem>) {
    let mut check = |keys: &[&str], url: Option<&String>, allowed: HttpAllowed| {
        if let Some(msg) = url.and_then(|u| http_problem(u, allowed)) {
            let mut p = path.to_vec();
            p.extend(keys.iter().map(|k| k.to_string()));
            out.push(Problem::at(p, msg));
        }
    };
    use HttpAllowed::*;
    match &provider.settings {
        ProviderSettings::Vault(s) => check(&["address"], Some(&s.address), LoopbackOnly),
        ProviderSettings::Aws(s) => {
            check(&["endpoint"], s.endpoint.as_ref(), LoopbackOnly);
            check(&["imds_endpoint"], s.imds_endpoint.as_ref(), AwsImds);
        }
        ProviderSettings::Azure(s) => {
            check(&["vault_url"], Some(&s.vault_url), LoopbackOnly);
            match &s.auth {
                AzureAuthSettings::ManagedIdentity { endpoint, .. } => {
                    check(&["auth", "endpoint"], endpoint.as_ref(), AzureImds)
                }
                AzureAuthSettings::ClientSecret { authority_host, .. } => check(
                    &["auth", "authority_host"],
                    authority_host.as_ref(),
                    LoopbackOnly,
                ),
            }
        }
        ProviderSettings::Local(_) => {}
    }
}

/// None when `url` may be used: https, or http to a host that `allowed` permits.
fn http_problem(url: &str, allowed: HttpAllowed) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
        || (authority.starts_with('[') && host.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback()));
    let imds4 = host.parse::<Ipv4Addr>().ok() == Some(Ipv4Addr::new(169, 254, 169, 254));
    let imds6 = authority.starts_with('[')
        && host.parse::<Ipv6Addr>().ok()
            == Some(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254));
    let ok = loopback
        || match allowed {
            HttpAllowed::LoopbackOnly => false,
            HttpAllowed::AwsImds => imds4 || imds6,
            HttpAllowed::AzureImds => imds4,
        };
    if ok {
        return None;
    }
    let hosts = match allowed {
        HttpAllowed::LoopbackOnly => "a loopback host (127.0.0.0/8, ::1, localhost)",
        HttpAllowed::AwsImds => "169.254.169.254, [fd00:ec2::254] or a loopback host",
        HttpAllowed::AzureImds => "169.254.169.254 or a loopback host",
    };
    Some(format!(
        "https is required ({} is plain http, allowed only for {hosts})",
        show_str(url)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};
    use serde_json::Map;
    use std::path::Path;

    fn check(text: &str) -> Result<(), Vec<String>> {
        let doc: Value = match serde_yaml_ng::from_str(text).expect("test YAML parses") {
            Value::Null => Value::Object(Map::new()), // as Config::from_str_at does
            doc => doc,
        };
        validate_document(&doc, text).map(drop)
    }

    const ONE_LOCAL: &str = "provider: {type: local, path: /s, key_file: /k}\n";

    /// (config, the exact messages it gets)
    const BAD: &[(&str, &[&str])] = &[
        (
            "notifications:\n  - url: http://hooks.example.com/dso\n    secret_file: /etc/dso/n.key\n",
            &[
                r#"line 2: notifications.0.url: https is required ("http://hooks.example.com/dso" is plain http, allowed only for a loopback host (127.0.0.0/8, ::1, localhost))"#,
            ],
        ),
        (
            "providers:\n  local: { type: lcoal, path: /var/lib/dso/local.vault }\n",
            &[r#"line 2: providers.local.type: "lcoal" is not one of local, vault, aws, azure"#],
        ),
        (
            "provider: {type: local}\nsecrets: {a: {}}\nwatch: {interval: 30s}\nruntime:\n  secret_dir: /x\n",
            &[
                "line 5: runtime.secret_dir: unknown key (expected one of secrets_dir, tmpfs_size, max_secret_size, max_references, max_total_secret_size, fetch_timeout, file_mode, init_path, state_dir)",
            ],
        ),
        (
            "providers:\n  local: {type: local}\n  vault:\n    type: vault\n    mount: kv\n",
            &[r#"line 3: providers.vault: missing required key "address""#],
        ),
        (
            "secret:\n  a: {}\n",
            &[
                "line 1: secret: unknown key (expected one of providers, provider, secrets, watch, audit, agent, runtime, policy, notifications)",
            ],
        ),
        (
            "- a\n- b\n",
            &["line 1: (top level): expected a mapping, found a list"],
        ),
        (
            "watch: 30s\n",
            &[r#"line 1: watch: expected a mapping, found "30s""#],
        ),
        (
            "provider: {type: local}\nsecrets:\n  a:\n",
            &[
                "line 3: secrets.a: expected a mapping, found nothing (write {} for an empty mapping)",
            ],
        ),
        (
            "watch:\n  interval: 30 s\n",
            &[
                r#"line 2: watch.interval: "30 s" is not a duration (e.g. 30s, 250ms, 5m, 1h, or a number of seconds)"#,
            ],
        ),
        (
            "watch: {interval: true}\nruntime: {fetch_timeout: -1}\n",
            &[
                "line 1: watch.interval: true is not a duration (e.g. 30s, 250ms, 5m, 1h, or a number of seconds)",
                "line 2: runtime.fetch_timeout: -1 is not a duration (e.g. 30s, 250ms, 5m, 1h, or a number of seconds)",
            ],
        ),
        (
            "runtime:\n  tmpfs_size: 1q\n  file_mode: \"0800\"\n  state_dir: run/dso\n",
            &[
                r#"line 2: runtime.tmpfs_size: "1q" is not a size (e.g. 512k, 1m, 1g, or a number of bytes)"#,
                r#"line 3: runtime.file_mode: "0800" is not an octal file mode (e.g. "0400")"#,
                r#"line 4: runtime.state_dir: "run/dso" is not an absolute path"#,
            ],
        ),
        (
            "runtime:\n  file_mode: 0o400\n",
            &[
                r#"line 2: runtime.file_mode: write the mode as a quoted octal string (e.g. "0400"), not 0o400"#,
            ],
        ),
        (
            "provider: {type: local}\nsecrets:\n  a: {mode: 489}\n",
            &[r#"line 3: secrets.a.mode: 489 is not an octal file mode (digits 0-7, e.g. "0400")"#],
        ),
        (
            "provider: {type: local}\nsecrets:\n  a: {uid: 1000.0}\n",
            &["line 3: secrets.a.uid: expected a whole number, found 1000.0"],
        ),
        (
            "provider: {type: local}\nsecrets:\n  a: {uid: -1, gid: x}\n",
            &[
                "line 3: secrets.a.uid: -1 is below the minimum 0",
                r#"line 3: secrets.a.gid: expected an integer, found "x""#,
            ],
        ),
        (
            "watch: {interval: 0s}\nruntime: {tmpfs_size: 0k, fetch_timeout: 0}\n",
            &[
                "line 1: watch.interval: must be greater than zero",
                "line 2: runtime.tmpfs_size: must be greater than zero",
                "line 2: runtime.fetch_timeout: must be greater than zero",
            ],
        ),
        (
            "runtime: {secrets_dir: /run/../etc}\n",
            &[
                r#"line 1: runtime.secrets_dir: "/run/../etc" must be a directory below / without "." or ".." components"#,
            ],
        ),
        (
            "providers:\n  local: {type: local}\n  vault: {type: vault, address: https://v:8200}\nsecrets:\n  a: {provider: valut}\n  b: {}\n",
            &[
                r#"line 5: secrets.a.provider: provider "valut" is not defined (defined: local, vault)"#,
                r#"line 6: secrets.b: missing required key "provider": there is more than one provider (defined: local, vault)"#,
            ],
        ),
        (
            "secrets:\n  a: {}\n  b: {provider: x}\n",
            &[
                "line 2: secrets.a: no provider to fetch it from: define one under providers",
                r#"line 3: secrets.b.provider: provider "x" is not defined (no providers are defined)"#,
            ],
        ),
        (
            "providers:\n  \"my vault\": {type: local}\nsecrets:\n  \"db/password\": {}\n  \"..\": {}\n",
            &[
                r#"line 2: providers."my vault": provider name "my vault" is not valid: only letters, digits, '_', '.' and '-' are allowed"#,
                r#"line 4: secrets."db/password": secret name "db/password" is not valid: only letters, digits, '_', '.' and '-' are allowed"#,
                r#"line 5: secrets."..": secret name ".." is not valid: '.' and '..' are not names"#,
            ],
        ),
        (
            "provider: {type: local}\nproviders:\n  x: {type: local}\n",
            &[
                r#"line 1: provider: cannot be used together with "providers"; move it under providers"#,
            ],
        ),
        (
            "providers:\n  v:\n    type: vault\n    address: http://vault.example.com:8200\n",
            &[
                r#"line 4: providers.v.address: https is required ("http://vault.example.com:8200" is plain http, allowed only for a loopback host (127.0.0.0/8, ::1, localhost))"#,
            ],
        ),
        (
            "provider:\n  type: aws\n  endpoint: http://10.0.0.5:4566\n  imds_endpoint: http://169.254.170.2\n",
            &[
                r#"line 3: provider.endpoint: https is required ("http://10.0.0.5:4566" is plain http, allowed only for a loopback host (127.0.0.0/8, ::1, localhost))"#,
                r#"line 4: provider.imds_endpoint: https is required ("http://169.254.170.2" is plain http, allowed only for 169.254.169.254, [fd00:ec2::254] or a loopback host)"#,
            ],
        ),
        (
            "provider:\n  type: azure\n  vault_url: http://myvault.vault.azure.net\n  auth:\n    method: client_secret\n    tenant_id: t\n    client_id: c\n    client_secret_file: /s\n    authority_host: http://login.example\n",
            &[
                r#"line 3: provider.vault_url: https is required ("http://myvault.vault.azure.net" is plain http, allowed only for a loopback host (127.0.0.0/8, ::1, localhost))"#,
                r#"line 9: provider.auth.authority_host: https is required ("http://login.example" is plain http, allowed only for a loopback host (127.0.0.0/8, ::1, localhost))"#,
            ],
        ),
        (
            "provider:\n  type: azure\n  vault_url: https://x.vault.azure.net\n  auth: {endpoint: \"http://10.1.1.1/token\"}\n",
            &[
                r#"line 4: provider.auth.endpoint: https is required ("http://10.1.1.1/token" is plain http, allowed only for 169.254.169.254 or a loopback host)"#,
            ],
        ),
        (
            "provider:\n  type: vault\n  address: https://user:pw@vault:8200\n",
            &[
                r#"line 3: provider.address: "https://user:pw@vault:8200" is not a URL like https://host[:port][/path]"#,
            ],
        ),
        (
            "provider:\n  type: azure\n  vault_url: https://x.vault.azure.net\n  auth:\n    method: client_secret\n    client_id: c\n",
            &[
                r#"line 4: provider.auth: missing required key "tenant_id""#,
                r#"line 4: provider.auth: missing required key "client_secret_file""#,
            ],
        ),
        (
            // A bad discriminator gets one message, not one per variant it fails.
            "provider:\n  type: vault\n  address: https://v\n  auth: {method: ldap, role_id_file: /r}\n",
            &[r#"line 4: provider.auth.method: "ldap" is not one of token, approle"#],
        ),
        (
            "provider:\n  type: vault\n  address: https://v\n  auth:\n    method: approle\n    role_id_file: /r\n    token_file: /t\n",
            &[
                "line 7: provider.auth.token_file: unknown key (expected one of method, role_id_file, secret_id_file, mount)",
            ],
        ),
        (
            "provider:\n  type: vault\n  address: https://v\n  kv_version: 3\n  client_cert: /c.pem\n",
            &[
                r#"line 1: provider: missing required key "client_key" (needed with "client_cert")"#,
                "line 4: provider.kv_version: 3 is not one of 1, 2",
            ],
        ),
        (
            "provider:\n  key_file: /k\n",
            &[r#"line 1: provider: missing required key "type""#],
        ),
        (
            "provider:\n  type: aws\n  region: US-East-1\n",
            &[r#"line 3: provider.region: "US-East-1" is not an AWS region (e.g. us-east-1)"#],
        ),
        (
            "provider: {type: local}\nsecrets:\n  a:\n    rotation: {strategy: reload, signal: HANGUP, interval: 1d}\n",
            &[
                r#"line 4: secrets.a.rotation.strategy: "reload" is not one of none, signal, restart"#,
                r#"line 4: secrets.a.rotation.signal: "HANGUP" is not a signal name (e.g. SIGHUP, HUP, SIGUSR1)"#,
                r#"line 4: secrets.a.rotation.interval: "1d" is not a duration (e.g. 30s, 250ms, 5m, 1h, or a number of seconds)"#,
            ],
        ),
        (
            "agent:\n  webhook: {listen: 8472}\n  metrics: {listen: \"localhost\"}\n",
            &[
                r#"line 2: agent.webhook: missing required key "secret_file""#,
                "line 2: agent.webhook.listen: 8472 is not a host:port address (e.g. 127.0.0.1:8472 or [::1]:8472)",
                r#"line 3: agent.metrics.listen: "localhost" is not a host:port address (e.g. 127.0.0.1:8472 or [::1]:8472)"#,
            ],
        ),
        (
            "provider: {type: local}\nsecrets:\n  a: {path: x}\n  a: {path: y}\n",
            &["line 4: secrets.a: duplicate key (first given at line 3)"],
        ),
        (
            "base: &b {provider: default}\n",
            &[
                "line 1: base: unknown key (expected one of providers, provider, secrets, watch, audit, agent, runtime, policy, notifications)",
            ],
        ),
        (
            "provider: {type: local}\nsecrets:\n  a:\n    <<: {path: x}\n    key: k\n",
            &[
                "line 4: secrets.a.\"<<\": YAML merge keys (<<) are not supported; write the keys out",
                "line 4: secrets.a.\"<<\": unknown key (expected one of provider, path, key, version, uid, gid, mode, engine, role, mount, common_name, ttl, alt_names, ip_sans, rotation, allow, keys)",
            ],
        ),
        (
            "provider: {type: local}\nsecrets:\n  \"a\\nb\": {}\n",
            &[
                r#"line 3: secrets."a\nb": secret name "a\nb" is not valid: only letters, digits, '_', '.' and '-' are allowed"#,
            ],
        ),
        (
            "provider: {type: local}\nsecrets:\n  a:\n    allow: {}\n",
            &["line 4: secrets.a.allow: expected a list, found a mapping"],
        ),
        (
            "provider: {type: local}\nsecrets:\n  a:\n    allow: [ {swarm: {name: x}} ]\n",
            &[
                "line 4: secrets.a.allow.0.swarm: unknown key (expected one of docker, kubernetes, podman)",
            ],
        ),
        (
            "provider: {type: local}\nsecrets:\n  a:\n    allow: [ {docker: {name: 5}} ]\n",
            &["line 4: secrets.a.allow.0.docker.name: expected a string, found 5"],
        ),
        (
            "provider: {type: local}\nsecrets:\n  a:\n    allow: [ {docker: {name: \"\"}} ]\n",
            &["line 4: secrets.a.allow.0.docker.name: must not be empty"],
        ),
        (
            "provider: {type: local}\nsecrets:\n  a:\n    allow:\n      - docker: {name: a}\n        kubernetes: {namespace: b}\n",
            &[
                "line 5: secrets.a.allow.0: a rule naming two engines can never match (a container has one engine); make them two rules",
            ],
        ),
        (
            "provider: {type: local}\nsecrets:\n  a:\n    allow: [ {} ]\n",
            &[
                "line 4: secrets.a.allow.0: a rule needs an engine key (docker, kubernetes or podman)",
            ],
        ),
        (
            "provider: {type: local}\nsecrets:\n  a:\n    allow: [ {kubernetes: {ns: billing}} ]\n",
            &[
                "line 4: secrets.a.allow.0.kubernetes.ns: unknown key (expected one of namespace, pod, container, image)",
            ],
        ),
        (
            "policy: {default: maybe, inline: true}\n",
            &[
                r#"line 1: policy.default: "maybe" is not one of deny, allow"#,
                "line 1: policy.inline: unknown key (expected one of default, inline_references)",
            ],
        ),
        (
            "providers:\n  v: {type: local, allow: [ {docker: {}, podman: {}} ]}\n",
            &[
                "line 2: providers.v.allow.0: a rule naming two engines can never match (a container has one engine); make them two rules",
            ],
        ),
    ];

    #[test]
    fn bad_configs_get_exact_messages() {
        let mut failures = Vec::new();
        for (text, want) in BAD {
            let got = check(text).err().unwrap_or_default();
            if got != *want {
                failures.push(format!("config:\n{text}\nwant: {want:#?}\ngot:  {got:#?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    #[test]
    fn dynamic_engine_keys() {
        const V: &str = "provider: {type: vault, address: \"https://v\"}\nsecrets:\n";
        let ok = [
            "  db: {engine: database, role: app}\n",
            "  db: {engine: database, role: app, mount: pg, key: username}\n",
            "  tls: {engine: pki, role: web, common_name: web.internal, ttl: 1h, alt_names: [a.internal], ip_sans: [\"10.0.0.1\"]}\n",
            "  kv: {engine: kv, path: app/db}\n",
        ];
        for s in ok {
            assert_eq!(check(&format!("{V}{s}")), Ok(()), "{s}");
        }
        let err = |s: &str| check(&format!("{V}{s}")).unwrap_err().join("\n");
        let e = err("  db: {engine: mysql, role: app}\n");
        assert!(
            e.contains("secrets.db.engine") && e.contains("database"),
            "{e}"
        );
        let e = err("  db: {engine: database}\n");
        assert!(e.contains("missing required key \"role\""), "{e}");
        let e = err("  tls: {engine: pki, role: web}\n");
        assert!(e.contains("missing required key \"common_name\""), "{e}");
        let e = err("  db: {engine: database, role: app, common_name: x}\n");
        assert!(
            e.contains("secrets.db.common_name: only used with engine pki"),
            "{e}"
        );
        let e = err("  kv: {role: app}\n");
        assert!(
            e.contains("secrets.kv.role: only used with engine database or pki"),
            "{e}"
        );
        let e = err("  db: {engine: database, role: app, key: pass}\n");
        assert!(e.contains("secrets.db.key: \"pass\" is not a part of an engine database value (one of username, password)"), "{e}");
        let e = err("  t: {engine: pki, role: w, common_name: x, key: cert}\n");
        assert!(
            e.contains("one of certificate, ca_chain, private_key"),
            "{e}"
        );
        let e = err("  db: {engine: database, role: app, path: x}\n");
        assert!(
            e.contains("secrets.db.path: not used with engine database"),
            "{e}"
        );
        let e = check("provider: {type: local}\nsecrets:\n  db: {engine: database, role: app}\n")
            .unwrap_err()
            .join("\n");
        assert!(
            e.contains("engine database needs a vault provider, not local"),
            "{e}"
        );
    }

    #[test]
    fn good_configs_pass() {
        let good = [
            "",
            "{}",
            ONE_LOCAL,
            "provider: {type: local}\nsecrets: {a: {}, b: {provider: default}}\n",
            "providers:\n  a: {type: local}\n  b: {type: aws}\nsecrets:\n  x: {provider: a}\n  y: {provider: b, version: 3}\n",
            "provider: {type: vault, address: \"http://127.0.0.1:8200\"}\n",
            "provider: {type: vault, address: \"HTTP://localhost:8200/\"}\n",
            "provider: {type: vault, address: \"http://[::1]:8200\", auth: {token_file: /t}}\n",
            "provider: {type: vault, address: \"https://vault.example.com\", auth: {method: approle, role_id_file: /r}}\n",
            "provider: {type: aws, imds_endpoint: \"http://169.254.169.254\"}\n",
            "provider: {type: aws, imds_endpoint: \"http://[fd00:ec2::254]/\"}\n",
            "provider: {type: aws, imds_endpoint: \"http://127.0.0.1:1338\"}\n",
            "provider: {type: azure, vault_url: \"https://x.vault.azure.net\"}\n",
            "provider: {type: azure, vault_url: \"https://x\", auth: {endpoint: \"http://169.254.169.254/metadata/identity/oauth2/token\"}}\n",
            "provider: {type: local}\nsecrets:\n  a: {mode: 440}\n  b: {mode: \"0o440\"}\n  c: {mode: \"0440\"}\n",
            "watch: {interval: 250ms}\nruntime: {tmpfs_size: 65536, fetch_timeout: 10, file_mode: 600}\n",
            "runtime: {tmpfs_size: 512KiB}\nagent: {metrics: {listen: \"[::1]:9477\"}}\n",
            "secrets: {}\nwatch: {}\naudit: {}\nagent: {}\nruntime: {}\n",
            "provider: {type: local}\nsecrets:\n  a: {rotation: {strategy: signal, signal: USR1}}\n",
        ];
        for text in good {
            assert_eq!(check(text), Ok(()), "config:\n{text}");
            Config::from_str_at(text, Path::new("t.yaml")).expect(text);
        }
    }

    #[test]
    fn typed_config_takes_what_the_schema_takes() {
        let text = "provider: {type: local}\nsecrets:\n  a: {version: 3, mode: 440}\n  b: {version: v7, mode: \"0o640\"}\nruntime: {tmpfs_size: 2m, file_mode: \"0440\"}\n";
        let cfg = Config::from_str_at(text, Path::new("t.yaml")).expect("valid");
        assert_eq!(cfg.secrets["a"].version.as_deref(), Some("3"));
        assert_eq!(cfg.secrets["a"].mode, Some(0o440));
        assert_eq!(cfg.secrets["b"].version.as_deref(), Some("v7"));
        assert_eq!(cfg.secrets["b"].mode, Some(0o640));
        assert_eq!(cfg.runtime.tmpfs_size, 2 << 20);
        assert_eq!(cfg.runtime.file_mode, 0o440);
        let comments_only = Config::from_str_at("# nothing yet\n", Path::new("t.yaml"));
        assert!(comments_only.expect("empty config").secrets.is_empty());
    }

    #[test]
    fn examples_validate() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/runtime-config/examples");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).expect("examples dir") {
            let path = entry.expect("dir entry").path();
            let text = std::fs::read_to_string(&path).expect("read example");
            assert!(
                text.starts_with("# yaml-language-server: $schema=../dso.schema.json\n"),
                "{} lacks the schema modeline",
                path.display()
            );
            if let Err(e) = Config::from_str_at(&text, &path) {
                panic!("{}: {:#?}", path.display(), e.messages());
            }
            names.push(
                path.file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        names.sort();
        assert_eq!(
            names,
            [
                "aws.yaml",
                "azure.yaml",
                "full.yaml",
                "local.yaml",
                "vault.yaml"
            ]
        );
        let full = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/runtime-config/examples/full.yaml"
        ));
        let cfg = Config::from_str_at(full, Path::new("full.yaml")).expect("full.yaml");
        assert_eq!(cfg.providers.len(), 6);
        assert_eq!(cfg.secrets["cert"].mode, Some(0o440));
    }

    /// full.yaml is the reference example: it must use every key the schema defines.
    #[test]
    fn full_example_uses_every_key() {
        let full: Value = serde_yaml_ng::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/runtime-config/examples/full.yaml"
        )))
        .expect("full.yaml parses");
        let mut used = std::collections::BTreeSet::new();
        fn keys(v: &Value, used: &mut std::collections::BTreeSet<String>) {
            match v {
                Value::Object(m) => {
                    for (k, child) in m {
                        used.insert(k.clone());
                        keys(child, used);
                    }
                }
                Value::Array(a) => a.iter().for_each(|c| keys(c, used)),
                _ => {}
            }
        }
        keys(&full, &mut used);
        used.insert("provider".into()); // the shorthand cannot sit next to providers
        let mut defined = std::collections::BTreeSet::new();
        fn props(v: &Value, out: &mut std::collections::BTreeSet<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::Object(p)) = m.get("properties") {
                        out.extend(p.keys().cloned());
                    }
                    m.values().for_each(|c| props(c, out));
                }
                Value::Array(a) => a.iter().for_each(|c| props(c, out)),
                _ => {}
            }
        }
        props(&compiled().schema, &mut defined);
        let missing: Vec<_> = defined.difference(&used).collect();
        assert!(missing.is_empty(), "full.yaml lacks {missing:?}");
    }

    /// Every property has a title and a description (a config reference is generated from
    /// them), and every pattern has a phrase for its error message.
    #[test]
    fn schema_is_documented() {
        fn walk(v: &Value, at: &str, problems: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    for (k, child) in m {
                        let here = format!("{at}/{k}");
                        // `if` schemas only select a branch; the branch documents the keys.
                        if k == "properties" && !at.ends_with("/if") {
                            for (name, prop) in child.as_object().into_iter().flatten() {
                                for field in ["title", "description"] {
                                    if prop.get(field).and_then(Value::as_str).is_none() {
                                        problems.push(format!("{here}/{name}: no {field}"));
                                    }
                                }
                            }
                        }
                        if k == "pattern" {
                            let def = at.strip_prefix("/$defs/").filter(|d| !d.contains('/'));
                            let known = def.and_then(def_phrase).is_some()
                                || child.as_str().and_then(pattern_phrase).is_some();
                            if !known {
                                problems.push(format!("{here}: no phrase for the pattern"));
                            }
                        }
                        walk(child, &here, problems);
                    }
                }
                Value::Array(a) => {
                    for (i, c) in a.iter().enumerate() {
                        walk(c, &format!("{at}/{i}"), problems);
                    }
                }
                _ => {}
            }
        }
        let mut problems = Vec::new();
        if let Err(e) = jsonschema::meta::validate(&compiled().schema) {
            problems.push(format!("not a valid JSON Schema: {e}"));
        }
        walk(&compiled().schema, "", &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn yaml_errors_give_a_line() {
        let err = Config::from_str_at(
            "providers:\n  x: {type: local\nsecrets: {}\n",
            Path::new("t.yaml"),
        )
        .expect_err("bad YAML");
        match err {
            ConfigError::Yaml { line, .. } => assert!(line >= 2, "line {line}"),
            other => panic!("not a YAML error: {other}"),
        }
        let err = Config::from_str_at("a: [1, 2\n", Path::new("t.yaml")).expect_err("bad YAML");
        assert!(matches!(err, ConfigError::Yaml { line: 2, .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("t.yaml: line 2: YAML does not parse: ")
        );
    }

    #[test]
    fn invalid_config_error_lists_every_message() {
        let err = Config::from_str_at(
            "providers:\n  local: {type: lcoal}\nruntime: {secret_dir: /x}\n",
            Path::new("/etc/dso/dso.yaml"),
        )
        .expect_err("invalid");
        let messages = err.messages();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].starts_with("line 2: providers.local.type: "));
        assert!(messages[1].starts_with("line 3: runtime.secret_dir: unknown key"));
        assert!(messages.iter().all(|m| !m.contains('\n')));
    }

    #[test]
    fn http_hosts() {
        use HttpAllowed::*;
        for ok in [
            "https://anything",
            "http://127.0.0.1",
            "http://127.9.9.9:80/x",
            "http://LOCALHOST:8200",
            "http://[::1]:8200",
        ] {
            assert_eq!(http_problem(ok, LoopbackOnly), None, "{ok}");
        }
        for bad in [
            "http://127.0.0.1@evil.example",
            "http://localhost.evil.example",
            "http://[::ffff:127.0.0.1]",
            "http://0127.0.0.1",
            "http://169.254.169.254",
        ] {
            assert!(http_problem(bad, LoopbackOnly).is_some(), "{bad}");
        }
        assert_eq!(http_problem("http://[fd00:ec2::254]", AwsImds), None);
        assert!(http_problem("http://[fd00:ec2::254]", AzureImds).is_some());
        assert_eq!(http_problem("http://169.254.169.254/x", AzureImds), None);
    }
}

//! JSON Schema errors as the messages users read (`"lcoal" is not one of local, vault, ...`),
//! and how keys and values are shown in every message.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use jsonschema::{JsonType, ValidationError};
use serde_json::Value;

use super::Problem;
use crate::config::reference::plain;

pub(super) fn describe(err: &ValidationError<'_>, schema: &Value) -> Vec<Problem> {
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
pub(super) fn def_phrase(def: &str) -> Option<&'static str> {
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
pub(super) fn pattern_phrase(pattern: &str) -> Option<&'static str> {
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
pub(super) fn show(v: &Value) -> String {
    match v {
        Value::Object(_) => "a mapping".into(),
        Value::Array(_) => "a list".into(),
        Value::Null => "null".into(),
        Value::String(s) => show_str(s),
        other => other.to_string(),
    }
}

pub(super) fn show_str(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        return Value::String(s.to_string()).to_string();
    }
    let cut: String = s.chars().take(MAX).collect();
    format!("{}…", Value::String(cut))
}

/// `providers.vault.auth`; keys that are not plain identifiers are quoted (`secrets."a.b"`).
pub(super) fn dotted(path: &[String]) -> String {
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

pub(super) fn one_line(s: &str) -> String {
    if s.contains(['\n', '\r']) {
        s.replace(['\n', '\r'], " ")
    } else {
        s.to_string()
    }
}

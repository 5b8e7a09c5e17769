//! The dso.yaml reference (`docs/config-reference.md`), generated from the JSON Schema so that
//! the two cannot drift: `dso config reference` prints it, a test compares it with the file.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::SCHEMA_JSON;

/// Renders the whole reference as Markdown.
pub fn markdown() -> String {
    let schema: Value = serde_json::from_str(SCHEMA_JSON).unwrap_or(Value::Null);
    let mut out = String::new();
    let _ = writeln!(out, "# dso.yaml reference\n");
    let _ = writeln!(
        out,
        "<!-- Generated from runtime-config/dso.schema.json by `dso config reference`; do not \
         edit by hand. Regenerate: dso config reference > docs/config-reference.md -->\n"
    );
    let _ = writeln!(
        out,
        "The schema is `runtime-config/dso.schema.json` (also printed by `dso config schema`). \
         Editors with the YAML language server validate and complete dso.yaml when its first \
         line names it:\n\n```yaml\n# yaml-language-server: $schema=/usr/share/dso/dso.schema.json\n```\n\n\
         `dso config validate` checks a file against the same schema plus the rules a schema \
         cannot say (a secret names a provider that exists, `provider` and `providers` are \
         not both given, ...).\n"
    );
    section(&mut out, 2, "Top level", "top-level", "", &schema);
    if let Some(Value::Object(defs)) = schema.get("$defs") {
        let _ = writeln!(out, "## Types\n");
        for (name, def) in defs {
            let title = def.get("title").and_then(Value::as_str).unwrap_or(name);
            section(&mut out, 3, title, &anchor(name), "", def);
        }
    }
    // One trailing newline, whatever the last section left.
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

fn anchor(def_name: &str) -> String {
    format!("type-{}", def_name.replace('_', "-"))
}

/// A heading, its description, a table of its properties, then a sub-section for each
/// property that is an inline object with properties of its own.
fn section(out: &mut String, level: usize, title: &str, id: &str, key_path: &str, s: &Value) {
    let hashes = "#".repeat(level);
    let _ = writeln!(out, "<a id=\"{id}\"></a>\n\n{hashes} {title}\n");
    if let Some(d) = s.get("description").and_then(Value::as_str) {
        let _ = writeln!(out, "{d}\n");
    }
    let props = s.get("properties").and_then(Value::as_object);
    if props.is_none() {
        let _ = writeln!(out, "Type: {}\n", type_of(s));
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
        let _ = writeln!(out, "Pattern: `{p}`\n");
    }
    if let Some(alts) = s.get("allOf").and_then(Value::as_array) {
        let branches: Vec<String> = alts.iter().filter_map(conditional).collect();
        if !branches.is_empty() {
            let _ = writeln!(out, "Further keys, by value: {}.\n", branches.join("; "));
        }
    }
    if let Some(req) = s.get("dependentRequired").and_then(Value::as_object) {
        for (k, v) in req {
            let needs: Vec<String> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|x| format!("`{x}`"))
                .collect();
            let _ = writeln!(out, "With `{k}`, also give {}.\n", needs.join(", "));
        }
    }
    let Some(props) = props else { return };
    let required: Vec<&str> = s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let _ = writeln!(out, "| Key | Type | Default | Description |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    let mut nested = Vec::new();
    for (key, p) in props {
        let full = if key_path.is_empty() {
            key.clone()
        } else {
            format!("{key_path}.{key}")
        };
        let mut desc = p
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if required.contains(&key.as_str()) {
            desc = format!("**Required.** {desc}");
        }
        let items = p.get("items").filter(|i| i.get("properties").is_some());
        let ty = if p.get("properties").is_some() {
            let a = format!("{}-{}", id, key.replace('_', "-"));
            nested.push((full.clone(), a.clone(), p));
            format!("[object](#{a})")
        } else if let Some(items) = items {
            // A list of objects: its entries get a section of their own.
            let a = format!("{}-{}", id, key.replace('_', "-"));
            nested.push((format!("{full}[]"), a.clone(), items));
            format!("list of [object](#{a})")
        } else {
            type_of(p)
        };
        let default = p
            .get("default")
            .map(|d| format!("`{}`", plain(d)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| `{key}` | {ty} | {default} | {} |",
            escape_cell(&desc)
        );
    }
    let _ = writeln!(out);
    for (full, a, p) in nested {
        let sub = (level + 1).min(4);
        section(out, sub, &format!("`{full}`"), &a, &full, p);
    }
}

/// `if: {properties: {type: {const: local}}}, then: {$ref: ...}` → "`type: local` → [Local provider](#…)".
fn conditional(branch: &Value) -> Option<String> {
    let props = branch.get("if")?.get("properties")?.as_object()?;
    let (key, cond) = props.iter().next()?;
    let value = cond.get("const")?;
    let then = branch.get("then")?;
    Some(format!("`{key}: {}` → {}", plain(value), type_of(then)))
}

/// A short type description: a link for `$ref`, `a` or `b` for unions, values for enums.
fn type_of(s: &Value) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        let title = ref_title(name).unwrap_or_else(|| name.to_string());
        return format!("[{title}](#{})", anchor(name));
    }
    if let Some(c) = s.get("const") {
        return format!("`{}`", plain(c));
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        let vals: Vec<String> = e.iter().map(|v| format!("`{}`", plain(v))).collect();
        return format!("one of {}", vals.join(", "));
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array) {
            let ts: Vec<String> = alts.iter().map(type_of).collect();
            return ts.join(" or ");
        }
    }
    let base = match s.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => String::new(),
    };
    if base == "object" {
        if let Some(ap) = s.get("additionalProperties").filter(|v| v.is_object()) {
            return format!("map of name → {}", type_of(ap));
        }
    }
    if base.is_empty() && s.get("allOf").is_some() {
        return "object".into();
    }
    base
}

fn ref_title(def_name: &str) -> Option<String> {
    let schema: Value = serde_json::from_str(SCHEMA_JSON).ok()?;
    let defs: &Map<String, Value> = schema.get("$defs")?.as_object()?;
    Some(defs.get(def_name)?.get("title")?.as_str()?.to_string())
}

/// A JSON value as a YAML user would write it (strings unquoted).
pub(crate) fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn escape_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/config-reference.md must be what the schema generates today.
    #[test]
    fn docs_config_reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config-reference.md");
        if std::env::var_os("DSO_WRITE_SCHEMA").is_some() {
            std::fs::write(path, markdown()).expect("write the reference");
        }
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == markdown(),
            "docs/config-reference.md is stale: regenerate it with \
             `cargo run --bin dso -- config reference > docs/config-reference.md`"
        );
    }

    #[test]
    fn every_top_level_key_and_type_is_documented() {
        let md = markdown();
        for key in ["providers", "secrets", "watch", "audit", "agent", "runtime"] {
            assert!(md.contains(&format!("| `{key}` |")), "{key}");
        }
        for t in ["Vault provider", "AWS provider", "Azure provider", "Secret"] {
            assert!(md.contains(&format!("### {t}\n")), "{t}");
        }
        assert!(md.contains("[Duration](#type-duration)"));
        assert!(md.contains("`agent.webhook`"));
    }
}

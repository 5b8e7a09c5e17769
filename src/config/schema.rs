//! JSON Schema check of dso.yaml, with errors mapped back to YAML line numbers.

/// The schema shipped in `runtime-config/dso.schema.json`, compiled into the binaries.
pub const SCHEMA_JSON: &str = include_str!("../../runtime-config/dso.schema.json");

/// Checks a parsed dso.yaml document (as JSON) against the schema and the semantic rules.
/// Each error is formatted `line N: key.path: message`. `text` is the YAML source, for lines.
pub fn validate_document(_doc: &serde_json::Value, _text: &str) -> Result<(), Vec<String>> {
    // TODO(config helper): jsonschema validation + semantic checks + line mapping.
    Ok(())
}

//! The JSON Schema of dso.yaml, generated from the typed config ([`super::Config`]) with
//! `schemars`: doc comments (`# Title` line, then the description) become titles and
//! descriptions. `runtime-config/dso.schema.json` is this output, checked in (a test compares).

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings, json_schema};
use serde_json::{Map, Value};

/// The schema as `dso config schema` prints it and `runtime-config/dso.schema.json` holds it.
pub fn generate() -> String {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<super::Config>().to_value();
    tidy(&mut schema);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Joins wrapped doc-comment lines, and drops what says nothing to a dso.yaml author: integer
/// `format`s and the `null` / empty-list defaults of optional keys. An absent key is absent:
/// dso.yaml takes no `null`s, so the `null` schemars allows for `Option`s goes too.
fn tidy(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.shift_remove("format");
            if let Some(Value::Array(alts)) = m.get("anyOf") {
                let not_null: Vec<&Value> = alts.iter().filter(|a| a["type"] != "null").collect();
                if let [Value::Object(only)] = not_null[..] {
                    let only = only.clone();
                    m.shift_remove("anyOf");
                    m.extend(only);
                }
            }
            if let Some(Value::Array(types)) = m.get_mut("type") {
                types.retain(|t| t != "null");
                if let [only] = &types[..] {
                    let only = only.clone();
                    m.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(e)) = m.get_mut("enum") {
                e.retain(|v| !v.is_null());
            }
            if matches!(m.get("default"), Some(Value::Null))
                || m.get("default")
                    .and_then(Value::as_array)
                    .is_some_and(Vec::is_empty)
            {
                m.shift_remove("default");
            }
            if let Some(Value::String(d)) = m.get_mut("description") {
                *d = d.replace('\n', " ");
            }
            m.values_mut().for_each(tidy);
        }
        Value::Array(a) => a.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// A `$defs` entry written as JSON: the value kinds that have a phrase in error messages.
macro_rules! value_kind {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $schema:tt) => {
        $(#[$doc])*
        pub(crate) struct $ty;
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

value_kind!(Glob, "glob", {
    "title": "Glob",
    "description": "A pattern matched against the whole value: * is any run of characters, ? one character.",
    "type": "string",
    "minLength": 1
});
value_kind!(DurationValue, "duration", {
    "title": "Duration",
    "description": "A duration: a number with ms, s, m or h (250ms, 30s, 5m, 1h), or an integer number of seconds.",
    "type": ["string", "integer"],
    "pattern": "^[0-9]{1,15}(ms|s|m|h)?$",
    "minimum": 0
});
value_kind!(SizeValue, "size", {
    "title": "Size",
    "description": "A size: bytes, or a number with k, m or g (binary multiples; also ki/kib, ...), e.g. 512k, 1m.",
    "type": ["string", "integer"],
    "pattern": "^[0-9]{1,10}([bB]|[kKmMgG]([iI][bB]?)?)?$",
    "minimum": 1
});
value_kind!(ModeValue, "mode", {
    "title": "File mode",
    "description": "An octal file mode: a string such as \"0400\" or \"0o440\", or an integer whose digits are octal (400).",
    "type": ["string", "integer"],
    "pattern": "^(0o)?[0-7]{1,4}$",
    "minimum": 0,
    "maximum": 7777
});
value_kind!(AbsPath, "abs_path", {
    "title": "Absolute path",
    "description": "An absolute path.",
    "type": "string",
    "pattern": "^/"
});
value_kind!(UrlValue, "url", {
    "title": "URL",
    "description": "An https:// URL: scheme, host (name, IPv4 or [IPv6]), optional port and path; no user:password@ (http:// only for a loopback host).",
    "type": "string",
    "pattern": "^[hH][tT][tT][pP][sS]?://(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?([/?#]\\S*)?$"
});
value_kind!(Listen, "listen", {
    "title": "Listen address",
    "description": "host:port, e.g. 127.0.0.1:8472 or [::1]:8472.",
    "type": "string",
    "pattern": "^(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9.-]*):[0-9]{1,5}$"
});

/// `allow:` (a secret's, or a provider's for inline references): a list of rules.
pub(crate) struct AllowList;
impl JsonSchema for AllowList {
    fn schema_name() -> Cow<'static, str> {
        "allow".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let rule = g.subschema_for::<super::AllowRule>();
        json_schema!({
            "title": "Allow rules",
            "description": "Who may have the secret: a list of rules; a container that matches any rule gets it. Every key of a rule must match. An empty list grants it to no one. Globs take * (any run of characters) and ? (one character). See docs/policy.md.",
            "type": "array",
            "items": rule
        })
    }
}

/// An internally tagged enum as `if`/`then` branches, one `$defs` entry per variant: unlike
/// `oneOf`, a bad tag gets one "is not one of" message and an unknown key the variant's keys.
/// `enum_schema` is the derived schema of the enum (its `oneOf` lists the variants in order);
/// `defs` names the variants' entries; `extra` are properties every variant takes besides
/// the tag; `default` is the variant taken when the tag is absent.
pub(crate) struct TaggedUnion<'a> {
    pub tag: &'a str,
    pub title: &'a str,
    pub description: &'a str,
    pub defs: &'a [&'a str],
    pub default: Option<&'a str>,
    pub extra: Map<String, Value>,
}

impl TaggedUnion<'_> {
    pub fn build(self, g: &mut SchemaGenerator, of: fn(&mut SchemaGenerator) -> Schema) -> Schema {
        let enum_schema = of(g);
        let variants = enum_schema
            .get("oneOf")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut values = Vec::new();
        let mut branches = Vec::new();
        for (variant, def) in variants.into_iter().zip(self.defs) {
            let Value::Object(mut variant) = variant else {
                continue;
            };
            let mut props = variant
                .shift_remove("properties")
                .and_then(|p| match p {
                    Value::Object(m) => Some(m),
                    _ => None,
                })
                .unwrap_or_default();
            let value = props
                .shift_remove(self.tag)
                .and_then(|t| t.get("const").cloned())
                .unwrap_or_default();
            let mut ordered = self.extra.clone();
            ordered.insert(
                self.tag.into(),
                serde_json::json!({"title": self.title, "description": value, "const": value}),
            );
            ordered.extend(props);
            variant.insert("properties".into(), Value::Object(ordered));
            // The tag is required by the branch's `if`, not by the variant.
            if let Some(Value::Array(req)) = variant.get_mut("required") {
                req.retain(|r| r != self.tag);
                if req.is_empty() {
                    variant.shift_remove("required");
                }
            }
            g.definitions_mut()
                .insert(def.to_string(), Value::Object(variant));
            let mut cond = serde_json::json!({"properties": {self.tag: {"const": value}}});
            if self.default != value.as_str() {
                cond["required"] = serde_json::json!([self.tag]);
            }
            branches
                .push(serde_json::json!({"if": cond, "then": {"$ref": format!("#/$defs/{def}")}}));
            values.push(value);
        }
        let mut tag = serde_json::json!({
            "title": self.title,
            "description": self.description,
            "enum": values,
        });
        if let Some(d) = self.default {
            tag["default"] = d.into();
        }
        let mut out = serde_json::json!({"type": "object"});
        for key in ["title", "description"] {
            if let Some(v) = enum_schema.get(key) {
                out[key] = v.clone();
            }
        }
        if self.default.is_none() {
            out["required"] = serde_json::json!([self.tag]);
        }
        out["properties"] = serde_json::json!({ self.tag: tag });
        out["allOf"] = Value::Array(branches);
        Schema::try_from(out).unwrap_or_default()
    }
}

/// The `provider` entry: `type` picks one of the provider kinds' settings.
pub(crate) struct ProviderSchema;
impl JsonSchema for ProviderSchema {
    fn schema_name() -> Cow<'static, str> {
        "provider".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let common = super::ProviderConfig::json_schema(g);
        TaggedUnion {
            tag: "type",
            title: "Provider type",
            description: "local (encrypted file on this host), vault (HashiCorp Vault / OpenBao KV), aws (AWS Secrets Manager) or azure (Azure Key Vault).",
            defs: &["local_provider", "vault_provider", "aws_provider", "azure_provider"],
            default: None,
            extra: properties(&common),
        }
        .build(g, super::ProviderSettings::json_schema)
    }
}

/// An `auth:` entry whose `method` picks one of the settings of `$settings` (inline).
macro_rules! auth_union {
    ($(#[$doc:meta])* $name:ident, $schema_name:literal, $settings:ty, $description:literal,
     $defs:expr, $default:literal) => {
        $(#[$doc])*
        pub(crate) struct $name;
        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                $schema_name.into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(g: &mut SchemaGenerator) -> Schema {
                TaggedUnion {
                    tag: "method",
                    title: "Auth method",
                    description: $description,
                    defs: $defs,
                    default: Some($default),
                    extra: Map::new(),
                }
                .build(g, <$settings>::json_schema)
            }
        }
    };
}

auth_union!(
    /// Vault's `auth:`.
    VaultAuthSchema,
    "vault_auth",
    super::VaultAuthSettings,
    "token (a token file, or VAULT_TOKEN in dso's environment) or approle (role id and secret id files). Default token.",
    &["vault_token_auth", "vault_approle_auth"],
    "token"
);

auth_union!(
    /// Azure's `auth:`.
    AzureAuthSchema,
    "azure_auth",
    super::AzureAuthSettings,
    "managed_identity or client_secret. Default managed_identity.",
    &["azure_managed_identity_auth", "azure_client_secret_auth"],
    "managed_identity"
);

fn properties(s: &Schema) -> Map<String, Value> {
    s.get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Defaults as dso.yaml spells them, where the Rust value would serialize otherwise.
macro_rules! shown_default {
    ($($name:ident = $text:literal),*) => {
        $(pub(crate) fn $name() -> &'static str { $text })*
    };
}
shown_default!(
    none = "none",
    sighup = "SIGHUP",
    s10 = "10s",
    s30 = "30s",
    m1 = "1m",
    m16 = "16m",
    mode0400 = "0400"
);

#[cfg(test)]
mod tests {
    /// runtime-config/dso.schema.json (compiled into the binaries, shipped in the package) must
    /// be what the types generate today.
    #[test]
    fn checked_in_schema_is_current() {
        let generated = super::generate();
        if std::env::var_os("DSO_WRITE_SCHEMA").is_some() {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/runtime-config/dso.schema.json"
            );
            std::fs::write(path, &generated).expect("write the schema");
        }
        assert!(
            super::super::SCHEMA_JSON == generated,
            "runtime-config/dso.schema.json is stale: regenerate it with \
             `DSO_WRITE_SCHEMA=1 cargo test --lib checked_in_schema_is_current` \
             or `dso config schema > runtime-config/dso.schema.json`"
        );
    }
}

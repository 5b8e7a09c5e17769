//! Checks dso.yaml against the JSON Schema in `runtime-config/dso.schema.json` and the rules a
//! schema cannot say (provider references, names, https only), as `line N: key.path: why`:
//! [`position`] parses the YAML once, with the line of each key; [`message`] words schema
//! errors; [`rules`] holds the rest, which runs on the typed config.

mod message;
mod position;
mod rules;

use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::Value;
use serde_path_to_error::Segment;

use super::Config;
use message::{describe, dotted, one_line};
pub use position::{Document, YamlError};
use rules::{is_mode_key, mode_written, rules, whole_numbers};

/// The schema shipped in `runtime-config/dso.schema.json`, compiled into the binaries.
pub const SCHEMA_JSON: &str = include_str!("../../../runtime-config/dso.schema.json");

/// Checks a parsed dso.yaml document against the schema, reads it as the typed config and
/// checks that against the rules. Each error is formatted `line N: key.path: message`.
pub fn validate_document(parsed: &Document) -> Result<Config, Vec<String>> {
    let doc = &parsed.value;
    let mut problems = parsed.structural_problems();
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
        whole_numbers(doc, &mut Vec::new(), &mut problems);
        if problems.len() == before {
            typed = read_typed(parsed, &mut problems);
        }
        if let (Some(cfg), true) = (&typed, problems.len() == before) {
            rules(cfg, parsed, &mut problems);
        }
    }
    if let (true, Some(cfg)) = (problems.is_empty(), typed) {
        return Ok(cfg);
    }
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<(Pos, String)> = problems
        .into_iter()
        .map(|p| {
            let pos = p.pos.unwrap_or_else(|| parsed.pos_of(&p.path));
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

/// The typed config, read with serde: a value of the wrong form (a zero duration, a mode with
/// a digit 8) fails with its key path. The value is dropped and the rest read again, so that
/// every such problem is reported.
fn read_typed(doc: &Document, out: &mut Vec<Problem>) -> Option<Config> {
    let mut value = doc.value.clone();
    loop {
        let err = match serde_path_to_error::deserialize(&value) {
            Ok(cfg) => return Some(cfg),
            Err(e) => e,
        };
        let path: Vec<String> = (err.path().iter())
            .map(|s| match s {
                Segment::Seq { index } => index.to_string(),
                other => other.to_string(),
            })
            .collect();
        let message = err.into_inner().to_string();
        // A mode refused after YAML read `0o430` as 280: say how it was written instead.
        let written = is_mode_key(&path).then(|| mode_written(doc, &path));
        out.push(
            written
                .flatten()
                .unwrap_or_else(|| Problem::at(path.clone(), message)),
        );
        let (parent, last) = path.split_last().map(|(l, p)| (p, l))?;
        let parent = parent.iter().try_fold(&mut value, |v, k| match v {
            Value::Array(a) => a.get_mut(k.parse::<usize>().ok()?),
            other => other.get_mut(k.as_str()),
        });
        parent.and_then(Value::as_object_mut)?.shift_remove(last)?;
    }
}

/// One problem before formatting: where (an instance path; the line comes from it unless set)
/// and why.
pub(super) struct Problem {
    path: Vec<String>,
    pos: Option<Pos>,
    message: String,
}

impl Problem {
    pub(super) fn at(path: Vec<String>, message: impl Into<String>) -> Self {
        Self {
            path,
            pos: None,
            message: message.into(),
        }
    }
}

/// A place in the YAML source: line (from 1) and column.
pub(super) type Pos = (usize, usize);

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};
    use message::{def_phrase, pattern_phrase};
    use std::path::Path;

    fn check(text: &str) -> Result<(), Vec<String>> {
        let doc = Document::parse(text).unwrap_or_else(|e| panic!("test YAML: {}", e.message));
        validate_document(&doc).map(drop)
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
            // YAML reads 0o430 as 280, which the typed config refuses (an 8): same message.
            "provider: {type: local}\nsecrets:\n  a: {mode: 0o430}\n",
            &[
                r#"line 3: secrets.a.mode: write the mode as a quoted octal string (e.g. "0400"), not 0o430"#,
            ],
        ),
        (
            "provider: {type: local}\nsecrets:\n  a: {mode: 489}\n",
            &[r#"line 3: secrets.a.mode: 489 is not an octal file mode (digits 0-7, e.g. "0400")"#],
        ),
        (
            "provider: {type: local}\nsecrets:\n  a: {mode: 0x1ff}\nruntime: {file_mode: +400}\n",
            &[
                r#"line 3: secrets.a.mode: write the mode as a quoted octal string (e.g. "0400"), not 0x1ff"#,
                r#"line 4: runtime.file_mode: write the mode as a quoted octal string (e.g. "0400"), not +400"#,
            ],
        ),
        (
            "notifications:\n  - {url: \"https://a\", secret_file: /k, timeout: 0}\n  - {url: \"https://b\", secret_file: /k, timeout: 0s}\n",
            &[
                "line 2: notifications.0.timeout: must be greater than zero",
                "line 3: notifications.1.timeout: must be greater than zero",
            ],
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
        let full = Document::parse(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/runtime-config/examples/full.yaml"
        )))
        .map_or(Value::Null, |d| d.value);
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
}

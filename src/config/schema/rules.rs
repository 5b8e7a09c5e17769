//! What a schema cannot say: how values are written (a schema sees the parsed document, not
//! the text), and the rules on the typed config (names, providers, engines, plain http).

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use super::Problem;
use super::message::show_str;
use super::position::Document;
use crate::config::{
    AllowRule, AzureAuthSettings, Config, Engine, ProviderConfig, ProviderKind, ProviderSettings,
    SHORTHAND_PROVIDER, SecretConfig,
};
use crate::secrets::{RefError, validate_name};

/// JSON Schema's "integer" takes 30.0; the typed config does not: every number must be whole.
pub(super) fn whole_numbers(v: &Value, path: &mut Vec<String>, out: &mut Vec<Problem>) {
    let mut visit = |k: String, child, out: &mut Vec<Problem>| {
        path.push(k);
        whole_numbers(child, path, out);
        path.pop();
    };
    match v {
        Value::Number(n) if n.is_f64() => out.push(Problem::at(
            path.clone(),
            format!("expected a whole number, found {n}"),
        )),
        Value::Object(m) => m.iter().for_each(|(k, c)| visit(k.clone(), c, out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| visit(i.to_string(), c, out)),
        _ => {}
    }
}

/// YAML reads `0o400` as 256 and `0x1ff` as 511, which would silently become other modes: an
/// integer mode must be written in decimal digits (each taken as octal).
pub(super) fn mode_written(doc: &Document, path: &[String]) -> Option<Problem> {
    debug_assert!(is_mode_key(path));
    let written = doc.non_decimal.get(path)?;
    Some(Problem::at(
        path.to_vec(),
        format!("write the mode as a quoted octal string (e.g. \"0400\"), not {written}"),
    ))
}

/// The keys that hold a file mode: `runtime.file_mode` and `secrets.<name>.mode`.
pub(super) fn is_mode_key(path: &[String]) -> bool {
    match path {
        [runtime, file_mode] => runtime == "runtime" && file_mode == "file_mode",
        [secrets, _, mode] => secrets == "secrets" && mode == "mode",
        _ => false,
    }
}

/// What a schema cannot say: names, which provider a secret comes from, which keys go with
/// which engine, rules that can never match, plain http, the secrets dir, how modes were
/// written. `provider` and `providers` exclude each other even when `providers` is empty.
pub(super) fn rules(cfg: &Config, doc: &Document, out: &mut Vec<Problem>) {
    let providers_given = doc.value.get("providers").is_some();
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
        out.extend(mode_written(doc, &key(&["secrets", name, "mode"])));
    }

    out.extend(mode_written(doc, &key(&["runtime", "file_mode"])));
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

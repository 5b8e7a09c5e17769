//! Access policy: which workloads a secret reaches (dso.yaml `policy:`, per-secret `allow:` and
//! `keys:`, per-provider `allow:`/`allow_paths:` for inline references). Deny by default. The
//! workload's identity comes from what the engine recorded ([`identity`]), never from the image.
//! docs/policy.md explains the model to users.

pub mod identity;

use wildmatch::WildMatch;

pub use crate::config::policy::{
    AllowRule, DefaultDecision, DockerRule, KubernetesRule, PodmanRule, PolicyConfig,
};
use crate::config::{Config, SecretConfig};
pub use identity::{Engine, Workload};

/// Why a secret may be given to a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// `allow[index]` matched.
    Rule(usize),
    /// The secret has no `allow` and `policy.default` is allow.
    Default,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grant::Rule(i) => write!(f, "allow[{i}]"),
            Grant::Default => f.write_str("policy.default: allow"),
        }
    }
}

/// A refusal: the secret (or inline reference), the workload, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "secret {secret:?} is not allowed for {workload} (no allow rule matches; see dso policy explain)"
    )]
    NoRuleMatches { secret: String, workload: String },
    #[error(
        "secret {secret:?} is not allowed for {workload} (it has no allow rules and policy.default is deny; add an allow rule to it in {config}, see dso policy explain)"
    )]
    DefaultDeny {
        secret: String,
        workload: String,
        config: String,
    },
    #[error(
        "secret {secret:?}: key {key:?} is not allowed for {workload} (list it under the secret's keys: in {config})"
    )]
    Key {
        secret: String,
        key: String,
        workload: String,
        config: String,
    },
    #[error(
        "inline reference {reference:?} is not allowed for {workload} (policy.inline_references is false in {config}; declare the secret under secrets:)"
    )]
    InlineDisabled {
        reference: String,
        workload: String,
        config: String,
    },
    #[error(
        "inline reference {reference:?} is not allowed for {workload} (the path is outside providers.{provider}.allow_paths)"
    )]
    InlinePath {
        reference: String,
        provider: String,
        workload: String,
    },
    #[error(
        "inline reference {reference:?} is not allowed for {workload} (no allow rule of provider {provider:?} matches; see dso policy explain)"
    )]
    InlineRule {
        reference: String,
        provider: String,
        workload: String,
    },
}

impl Refusal {
    /// The secret or reference refused, for audit.
    pub fn subject(&self) -> &str {
        match self {
            Refusal::NoRuleMatches { secret, .. }
            | Refusal::DefaultDeny { secret, .. }
            | Refusal::Key { secret, .. } => secret,
            Refusal::InlineDisabled { reference, .. }
            | Refusal::InlinePath { reference, .. }
            | Refusal::InlineRule { reference, .. } => reference,
        }
    }
}

/// What a workload asks for, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub enum Ask<'a> {
    /// A `secrets:` entry, with the JSON key the reference picks (if it picks one).
    Named { name: &'a str, key: Option<&'a str> },
    /// `dso://<provider>/<path>`.
    Inline { provider: &'a str, path: &'a str },
}

/// Decides one ask for one workload under `cfg`.
pub fn check(cfg: &Config, ask: Ask<'_>, w: &Workload) -> Result<Grant, Refusal> {
    let config = cfg.source.display().to_string();
    match ask {
        Ask::Named { name, key } => {
            // An unknown name is the planner's error ("not defined"), never a grant.
            let Some(sc) = cfg.secrets.get(name) else {
                return Err(Refusal::NoRuleMatches {
                    secret: name.to_string(),
                    workload: w.to_string(),
                });
            };
            let grant = by_rules(sc.allow.as_deref(), cfg, w).map_err(|none| {
                if none {
                    Refusal::DefaultDeny {
                        secret: name.to_string(),
                        workload: w.to_string(),
                        config: config.clone(),
                    }
                } else {
                    Refusal::NoRuleMatches {
                        secret: name.to_string(),
                        workload: w.to_string(),
                    }
                }
            })?;
            if let Some(k) = key
                && !key_allowed(sc, k)
            {
                return Err(Refusal::Key {
                    secret: name.to_string(),
                    key: k.to_string(),
                    workload: w.to_string(),
                    config,
                });
            }
            Ok(grant)
        }
        Ask::Inline { provider, path } => {
            let reference = format!("{provider}/{path}");
            if !cfg.policy.inline_references {
                return Err(Refusal::InlineDisabled {
                    reference,
                    workload: w.to_string(),
                    config,
                });
            }
            let pc = cfg.providers.get(provider);
            if let Some(prefixes) = pc.and_then(|p| p.allow_paths.as_deref())
                && !prefixes.iter().any(|pre| path_under(path, pre))
            {
                return Err(Refusal::InlinePath {
                    reference,
                    provider: provider.to_string(),
                    workload: w.to_string(),
                });
            }
            by_rules(pc.and_then(|p| p.allow.as_deref()), cfg, w).map_err(|_| Refusal::InlineRule {
                reference,
                provider: provider.to_string(),
                workload: w.to_string(),
            })
        }
    }
}

/// A key other than the configured one must be listed in `keys:`.
fn key_allowed(sc: &SecretConfig, key: &str) -> bool {
    sc.key.as_deref() == Some(key) || sc.keys.iter().flatten().any(|k| k == key)
}

/// `path` is `prefix` or below it (whole segments: `app` covers `app/db`, not `apple`).
fn path_under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The first rule of `rules` that matches; without rules, `policy.default`.
/// `Err(true)`: no rules and default deny; `Err(false)`: rules, none matched.
fn by_rules(rules: Option<&[AllowRule]>, cfg: &Config, w: &Workload) -> Result<Grant, bool> {
    match rules {
        None => match cfg.policy.default {
            DefaultDecision::Allow => Ok(Grant::Default),
            DefaultDecision::Deny => Err(true),
        },
        Some(rules) => rules
            .iter()
            .position(|r| r.matches(w))
            .map(Grant::Rule)
            .ok_or(false),
    }
}

/// `*` and `?` globs over the whole string; an absent field matches no glob.
fn glob(pattern: &Option<String>, value: &Option<String>) -> bool {
    match (pattern, value) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(p), Some(v)) => WildMatch::new(p).matches(v),
    }
}

impl AllowRule {
    /// Every engine section present matches the workload (and there is at least one).
    pub fn matches(&self, w: &Workload) -> bool {
        let mut any = false;
        if let Some(d) = &self.docker {
            any = true;
            if w.engine != Engine::Docker
                || !glob(&d.name, &w.name)
                || !glob(&d.image, &w.image)
                || !glob(&d.compose_project, &w.compose_project)
                || !glob(&d.compose_service, &w.compose_service)
                || !glob(&d.swarm_service, &w.swarm_service)
            {
                return false;
            }
        }
        if let Some(k) = &self.kubernetes {
            any = true;
            if w.engine != Engine::Kubernetes
                || !glob(&k.namespace, &w.namespace)
                || !glob(&k.pod, &w.pod)
                || !glob(&k.container, &w.container)
                || !glob(&k.image, &w.image)
            {
                return false;
            }
        }
        if self.podman.is_some() {
            any = true;
            if w.engine != Engine::Podman {
                return false;
            }
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(text: &str) -> Config {
        Config::from_str_at(text, Path::new("/etc/dso/dso.yaml")).unwrap()
    }

    fn docker(name: &str) -> Workload {
        Workload {
            engine: Engine::Docker,
            id: "c0ffee".into(),
            name: Some(name.into()),
            image: Some("busybox:latest".into()),
            ..Default::default()
        }
    }

    fn k8s(ns: &str, pod: &str, container: &str) -> Workload {
        Workload {
            engine: Engine::Kubernetes,
            id: "abc".into(),
            namespace: Some(ns.into()),
            pod: Some(pod.into()),
            container: Some(container.into()),
            ..Default::default()
        }
    }

    const CFG: &str = r#"
providers:
  local: { type: local, path: /s, key_file: /k }
  vault:
    type: vault
    address: https://vault.example:8200
    allow_paths: [apps/billing]
    allow: [ { kubernetes: { namespace: billing } } ]
secrets:
  billing_db:
    provider: local
    key: password
    keys: [username]
    allow:
      - docker: { name: "billing-*" }
      - kubernetes: { namespace: billing }
  open: { provider: local }
  img:
    provider: local
    allow: [ { docker: { name: "w?b", image: "busybox:*" } } ]
  nobody: { provider: local, allow: [] }
  compose:
    provider: local
    allow: [ { docker: { compose_project: shop, compose_service: web } } ]
"#;

    fn named<'a>(name: &'a str, key: Option<&'a str>) -> Ask<'a> {
        Ask::Named { name, key }
    }

    #[test]
    fn matching_table() {
        let c = cfg(CFG);
        let mut compose = docker("shop-web-1");
        compose.compose_project = Some("shop".into());
        compose.compose_service = Some("web".into());
        let unknown = Workload::unknown("c1", "no engine record");
        #[rustfmt::skip]
        let cases: Vec<(Ask<'_>, Workload, Result<Grant, &str>)> = vec![
            // OR across rules; glob on the name.
            (named("billing_db", None), docker("billing-api"), Ok(Grant::Rule(0))),
            (named("billing_db", None), k8s("billing", "p", "c"), Ok(Grant::Rule(1))),
            (named("billing_db", None), docker("web"), Err("no allow rule matches")),
            (named("billing_db", None), k8s("default", "p", "c"), Err("no allow rule matches")),
            (named("billing_db", None), unknown.clone(), Err("no allow rule matches")),
            // AND within a rule: name and image; `?` is one character.
            (named("img", None), docker("web"), Ok(Grant::Rule(0))),
            (named("img", None), docker("weeb"), Err("no allow rule matches")),
            (named("img", None), Workload { image: Some("alpine:3".into()), ..docker("web") }, Err("no allow rule matches")),
            // A field the workload lacks matches no glob.
            (named("compose", None), compose.clone(), Ok(Grant::Rule(0))),
            (named("compose", None), docker("shop-web-1"), Err("no allow rule matches")),
            // No rules: the default (deny here); an empty list grants nothing.
            (named("open", None), docker("billing-api"), Err("policy.default is deny")),
            (named("nobody", None), docker("billing-api"), Err("no allow rule matches")),
            // #key: the configured key, a listed one, an unlisted one.
            (named("billing_db", Some("password")), docker("billing-x"), Ok(Grant::Rule(0))),
            (named("billing_db", Some("username")), docker("billing-x"), Ok(Grant::Rule(0))),
            (named("billing_db", Some("host")), docker("billing-x"), Err("key \"host\" is not allowed")),
            // Inline references are off by default.
            (Ask::Inline { provider: "vault", path: "apps/billing/db" }, k8s("billing", "p", "c"), Err("policy.inline_references is false")),
        ];
        for (ask, w, want) in cases {
            let got = check(&c, ask, &w);
            match (&got, &want) {
                (Ok(g), Ok(wg)) => assert_eq!(g, wg, "{ask:?} for {w}"),
                (Err(e), Err(frag)) => {
                    assert!(e.to_string().contains(frag), "{ask:?} for {w}: {e}")
                }
                _ => panic!("{ask:?} for {w}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn default_allow_and_inline_references() {
        let text = format!("policy: {{ default: allow, inline_references: true }}\n{CFG}");
        let c = cfg(&text);
        assert_eq!(
            check(&c, named("open", None), &docker("x")),
            Ok(Grant::Default)
        );
        // Rules still bind a secret that has them.
        assert!(check(&c, named("billing_db", None), &docker("x")).is_err());
        let inline = |path| Ask::Inline {
            provider: "vault",
            path,
        };
        assert_eq!(
            check(&c, inline("apps/billing/db"), &k8s("billing", "p", "c")),
            Ok(Grant::Rule(0))
        );
        assert_eq!(
            check(&c, inline("apps/billing"), &k8s("billing", "p", "c")),
            Ok(Grant::Rule(0))
        );
        let e = check(&c, inline("apps/billingx"), &k8s("billing", "p", "c")).unwrap_err();
        assert!(
            e.to_string()
                .contains("outside providers.vault.allow_paths"),
            "{e}"
        );
        let e = check(&c, inline("apps/billing/db"), &k8s("default", "p", "c")).unwrap_err();
        assert!(e.to_string().contains("no allow rule of provider"), "{e}");
        // A provider without rules or prefixes: the default (allow here).
        assert_eq!(
            check(
                &c,
                Ask::Inline {
                    provider: "local",
                    path: "anything"
                },
                &docker("x")
            ),
            Ok(Grant::Default)
        );
    }

    #[test]
    fn refusal_message_is_the_documented_one() {
        let c = cfg(CFG);
        let e = check(&c, named("billing_db", None), &docker("web")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret \"billing_db\" is not allowed for docker container \"web\" (no allow rule matches; see dso policy explain)"
        );
    }

    #[test]
    fn rules_that_never_match() {
        let two = AllowRule {
            docker: Some(DockerRule::default()),
            kubernetes: Some(KubernetesRule::default()),
            podman: None,
        };
        assert!(two.never_matches().is_some());
        assert!(!two.matches(&docker("x")));
        assert!(AllowRule::default().never_matches().is_some());
        assert!(!AllowRule::default().matches(&docker("x")));
        let any_docker = AllowRule {
            docker: Some(DockerRule::default()),
            ..Default::default()
        };
        assert!(any_docker.matches(&docker("x")));
        assert!(!any_docker.matches(&k8s("a", "b", "c")));
    }

    #[test]
    fn path_prefixes_are_whole_segments() {
        assert!(path_under("app/db", "app"));
        assert!(path_under("app/db", "app/"));
        assert!(path_under("app", "app"));
        assert!(!path_under("apple", "app"));
        assert!(path_under("x", ""));
    }
}

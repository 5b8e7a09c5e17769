//! Access policy: which workloads a secret reaches (dso.yaml `policy:`, per-secret `allow:` and
//! `keys:`, per-provider `allow:`/`allow_paths:` for inline references). Deny by default. The
//! workload's identity comes from what the engine recorded ([`identity`]), never from the image.
//! docs/policy.md explains the model to users.

pub mod identity;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use wildmatch::WildMatch;

use crate::config::{Config, SecretConfig};
pub use identity::{Engine, Workload};

/// `policy:` in dso.yaml.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(inline)]
pub struct PolicyConfig {
    /// # Default decision
    /// What a secret without allow rules gets: deny (no container gets it) or allow (every
    /// container that names it gets it). Default deny.
    pub default: DefaultDecision,
    /// # Inline references
    /// Whether references of the form dso://<provider>/<path> are honoured; they then obey the
    /// provider's allow and allow_paths. Default false: only secrets declared under secrets: can be
    /// referenced.
    pub inline_references: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(inline)]
pub enum DefaultDecision {
    #[default]
    Deny,
    Allow,
}

/// # Allow rule
/// One grant: exactly one engine key (docker, kubernetes or podman) with globs on what that engine
/// recorded for the container; all of them must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "allow_rule")]
pub struct AllowRule {
    /// # Docker grant
    /// Matches Docker containers by what dockerd recorded for them (never by what the image sets).
    /// An empty mapping matches every Docker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerRule>,
    /// # Kubernetes grant
    /// Matches containers of Kubernetes pods created through containerd's CRI, by the
    /// io.kubernetes.cri.* annotations containerd records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesRule>,
    /// # Podman grant
    /// Matches every podman container: podman records nothing about a container that its caller
    /// could not also set, so there is nothing finer to match on. Takes no keys: podman: {}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub podman: Option<PodmanRule>,
}

/// Globs on what dockerd recorded for the container (its `config.v2.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(inline)]
pub struct DockerRule {
    /// # Container name
    /// Glob on the container's name as dockerd recorded it (--name; compose's
    /// <project>-<service>-<n>; a swarm task's <service>.<slot>.<task-id>).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<crate::config::json_schema::Glob>")]
    pub name: Option<String>,
    /// # Image
    /// Glob on the image as the user named it (docker run IMAGE, compose image:).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<crate::config::json_schema::Glob>")]
    pub image: Option<String>,
    /// # Compose project
    /// Glob on the compose project (label com.docker.compose.project as the compose client set it;
    /// a label the image carries does not count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<crate::config::json_schema::Glob>")]
    pub compose_project: Option<String>,
    /// # Compose service
    /// Glob on the compose service (label com.docker.compose.service, set by the client, not the
    /// image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<crate::config::json_schema::Glob>")]
    pub compose_service: Option<String>,
    /// # Swarm service
    /// Glob on the swarm service of a task container (label com.docker.swarm.service.name, set by
    /// the swarm, not the image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<crate::config::json_schema::Glob>")]
    pub swarm_service: Option<String>,
}

/// Globs on what containerd's CRI recorded (`io.kubernetes.cri.*` annotations).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(inline)]
pub struct KubernetesRule {
    /// # Namespace
    /// Glob on the pod's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<crate::config::json_schema::Glob>")]
    pub namespace: Option<String>,
    /// # Pod
    /// Glob on the pod's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<crate::config::json_schema::Glob>")]
    pub pod: Option<String>,
    /// # Container
    /// Glob on the container's name in the pod spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<crate::config::json_schema::Glob>")]
    pub container: Option<String>,
    /// # Image
    /// Glob on the container's image as the pod spec names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<crate::config::json_schema::Glob>")]
    pub image: Option<String>,
}

/// Podman records nothing in the spec that its caller cannot also set, so a podman rule can
/// only say "any podman container" (`podman: {}`); see docs/policy.md.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(inline, extend("properties" = {}))]
pub struct PodmanRule {}

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

    /// Why this rule can never match anything, if so (for `dso config validate`).
    pub fn never_matches(&self) -> Option<&'static str> {
        let engines = [
            self.docker.is_some(),
            self.kubernetes.is_some(),
            self.podman.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        match engines {
            0 => Some("a rule needs an engine key (docker, kubernetes or podman)"),
            1 => None,
            _ => Some(
                "a rule naming two engines can never match (a container has one engine); make them two rules",
            ),
        }
    }
}

/// `docker name=billing-* image=busybox:*`, `kubernetes namespace=billing`, `podman (any)`.
impl std::fmt::Display for AllowRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        let mut section = |engine: &str, keys: &[(&str, &Option<String>)]| {
            let set: Vec<String> = keys
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
                .collect();
            parts.push(if set.is_empty() {
                format!("{engine} (any)")
            } else {
                format!("{engine} {}", set.join(" "))
            });
        };
        if let Some(d) = &self.docker {
            section(
                "docker",
                &[
                    ("name", &d.name),
                    ("image", &d.image),
                    ("compose_project", &d.compose_project),
                    ("compose_service", &d.compose_service),
                    ("swarm_service", &d.swarm_service),
                ],
            );
        }
        if let Some(k) = &self.kubernetes {
            section(
                "kubernetes",
                &[
                    ("namespace", &k.namespace),
                    ("pod", &k.pod),
                    ("container", &k.container),
                    ("image", &k.image),
                ],
            );
        }
        if self.podman.is_some() {
            section("podman", &[]);
        }
        if parts.is_empty() {
            return f.write_str("(no engine: never matches)");
        }
        f.write_str(&parts.join(" and "))
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

//! `policy:` and the allow rules of dso.yaml: what a grant says. Deciding whether a workload
//! matches is [`crate::policy`]'s job; these types only describe dso.yaml.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

impl AllowRule {
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

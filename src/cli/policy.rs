//! `dso policy explain`: who gets which secret under dso.yaml's access policy — for a running
//! container (`--container`), a bundle (`--bundle`), a hypothetical workload (`--docker-name`,
//! `--k8s-namespace`, …), or, with none of those, every secret and whom it is granted to.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::config::Config;
use crate::policy::{self, Ask, DefaultDecision, Engine, Workload};
use crate::runtime::spec::Spec;
use crate::secrets::{Target, collect_refs};
use crate::state::registry;

#[derive(Debug, Subcommand)]
pub(super) enum PolicyCommand {
    /// Show, per secret, whether a workload gets it and by which rule
    #[command(
        after_help = "Examples:\n  dso policy explain                              # every secret and whom it is granted to\n  dso policy explain --docker-name billing-api    # what would a container named billing-api get?\n  dso policy explain --k8s-namespace billing --k8s-pod api-1 --k8s-container app\n  dso policy explain --container 3f2a9c           # a running container dso manages\n  dso policy explain --bundle /run/containerd/io.containerd.runtime.v2.task/moby/<id>"
    )]
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub(super) struct ExplainArgs {
    /// A running container dso manages: its id or a unique prefix of it
    #[arg(long, value_name = "ID", conflicts_with_all = ["bundle", "docker_name", "k8s_namespace", "podman"])]
    container: Option<String>,
    /// An OCI bundle: the workload its engine recorded, and the references its spec makes
    #[arg(long, value_name = "DIR", conflicts_with_all = ["docker_name", "k8s_namespace", "podman"])]
    bundle: Option<PathBuf>,
    /// The container id to use with --bundle [default: the bundle directory's name]
    #[arg(long, value_name = "ID", requires = "bundle")]
    id: Option<String>,
    /// A Docker container of this name
    #[arg(long, value_name = "NAME", conflicts_with_all = ["k8s_namespace", "podman"])]
    docker_name: Option<String>,
    /// ... started from this image (as the user named it)
    #[arg(long, value_name = "IMAGE", requires = "docker_name")]
    docker_image: Option<String>,
    /// ... in this compose project
    #[arg(long, value_name = "PROJECT", requires = "docker_name")]
    compose_project: Option<String>,
    /// ... as this compose service
    #[arg(long, value_name = "SERVICE", requires = "docker_name")]
    compose_service: Option<String>,
    /// ... as a task of this swarm service
    #[arg(long, value_name = "SERVICE", requires = "docker_name")]
    swarm_service: Option<String>,
    /// A Kubernetes container in this namespace
    #[arg(long, value_name = "NAMESPACE", conflicts_with = "podman")]
    k8s_namespace: Option<String>,
    /// ... in this pod
    #[arg(long, value_name = "POD", requires = "k8s_namespace")]
    k8s_pod: Option<String>,
    /// ... with this container name
    #[arg(long, value_name = "NAME", requires = "k8s_namespace")]
    k8s_container: Option<String>,
    /// ... from this image
    #[arg(long, value_name = "IMAGE", requires = "k8s_namespace")]
    k8s_image: Option<String>,
    /// A podman container
    #[arg(long)]
    podman: bool,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

pub(super) fn run(config_path: &Path, cmd: PolicyCommand) -> anyhow::Result<i32> {
    let PolicyCommand::Explain(args) = cmd;
    let cfg = super::load_config(config_path)?;
    let Some((workload, asks)) = subject(&cfg, &args)? else {
        return Ok(matrix(&cfg, args.json));
    };
    let rows: Vec<Row> = asks
        .iter()
        .map(|(label, wanted)| {
            let ask = wanted.ask();
            let decision = policy::check(&cfg, ask, &workload);
            Row {
                secret: label.clone(),
                granted: decision.is_ok(),
                why: match &decision {
                    Ok(grant) => explain_grant(&cfg, ask, grant),
                    Err(refusal) => refusal.to_string(),
                },
            }
        })
        .collect();
    if args.json {
        let secrets: Vec<_> = rows
            .iter()
            .map(|r| json!({"secret": r.secret, "granted": r.granted, "why": r.why}))
            .collect();
        println!(
            "{}",
            json!({"workload": workload, "label": workload.label(), "secrets": secrets})
        );
    } else {
        println!("workload: {workload}");
        let width = rows
            .iter()
            .map(|r| r.secret.len())
            .max()
            .unwrap_or(6)
            .max(6);
        println!("{:width$}  DECISION  WHY", "SECRET");
        for r in &rows {
            let d = if r.granted { "granted" } else { "denied" };
            println!("{:width$}  {d:8}  {}", r.secret, r.why);
        }
        if rows.is_empty() {
            println!("(no secrets)");
        }
    }
    Ok(0)
}

struct Row {
    secret: String,
    granted: bool,
    why: String,
}

/// What a workload asks for, owned (the references of a bundle live only in this command).
enum Wanted {
    Named { name: String, key: Option<String> },
    Inline { provider: String, path: String },
}

impl Wanted {
    fn ask(&self) -> Ask<'_> {
        match self {
            Wanted::Named { name, key } => Ask::Named {
                name,
                key: key.as_deref(),
            },
            Wanted::Inline { provider, path } => Ask::Inline { provider, path },
        }
    }
}

/// The workload asked about and what it asks for, by label.
type Subject = (Workload, Vec<(String, Wanted)>);

/// The workload asked about and what it asks for (label, ask); None: no workload given.
fn subject(cfg: &Config, args: &ExplainArgs) -> anyhow::Result<Option<Subject>> {
    let every_secret = || -> Vec<(String, Wanted)> {
        cfg.secrets
            .keys()
            .map(|n| {
                let w = Wanted::Named {
                    name: n.clone(),
                    key: None,
                };
                (n.clone(), w)
            })
            .collect()
    };
    if let Some(prefix) = &args.container {
        let records = registry::load_records(&cfg.runtime.state_dir);
        let matching: Vec<_> = records
            .into_iter()
            .filter(|r| r.rec.id.starts_with(prefix.as_str()))
            .collect();
        let rec = match matching.as_slice() {
            [one] => one.rec.clone(),
            [] => bail!(
                "no container {prefix:?} in {} (dso status lists the containers dso manages)",
                cfg.runtime.state_dir.display()
            ),
            _ => bail!("{prefix:?} matches several containers; give more of the id"),
        };
        let w = rec.workload.clone().unwrap_or_else(|| {
            Workload::unknown(&rec.id, "created before access policy; recreate it")
        });
        return Ok(Some((w, every_secret())));
    }
    if let Some(bundle) = &args.bundle {
        let spec = Spec::load(bundle).map_err(|e| anyhow!("{e}"))?;
        let id = match &args.id {
            Some(id) => id.clone(),
            None => bundle
                .canonicalize()
                .ok()
                .and_then(|b| b.file_name().map(|n| n.to_string_lossy().into_owned()))
                .ok_or_else(|| anyhow!("cannot tell the container id; pass --id"))?,
        };
        let w = policy::identity::identify(spec.doc(), &id, bundle);
        let refs =
            collect_refs(&spec.env(), Some(&spec.annotations())).map_err(|e| anyhow!("{e}"))?;
        let wanted = refs
            .into_iter()
            .map(|r| match r.target {
                Target::Named { name, key } => {
                    let label = match &key {
                        Some(k) => format!("{name}#{k}"),
                        None => name.clone(),
                    };
                    (label, Wanted::Named { name, key })
                }
                Target::Inline { provider, path, .. } => (
                    format!("{provider}/{path}"),
                    Wanted::Inline { provider, path },
                ),
            })
            .collect();
        return Ok(Some((w, wanted)));
    }
    let mut w = Workload {
        id: "(hypothetical)".into(),
        ..Default::default()
    };
    if let Some(name) = &args.docker_name {
        w.engine = Engine::Docker;
        w.name = Some(name.clone());
        w.image = args.docker_image.clone();
        w.compose_project = args.compose_project.clone();
        w.compose_service = args.compose_service.clone();
        w.swarm_service = args.swarm_service.clone();
    } else if let Some(ns) = &args.k8s_namespace {
        w.engine = Engine::Kubernetes;
        w.namespace = Some(ns.clone());
        w.pod = args.k8s_pod.clone();
        w.container = args.k8s_container.clone();
        w.image = args.k8s_image.clone();
    } else if args.podman {
        w.engine = Engine::Podman;
    } else {
        return Ok(None);
    }
    Ok(Some((w, every_secret())))
}

fn explain_grant(cfg: &Config, ask: Ask<'_>, grant: &policy::Grant) -> String {
    let rules = match ask {
        Ask::Named { name, .. } => cfg.secrets.get(name).and_then(|s| s.allow.as_deref()),
        Ask::Inline { provider, .. } => {
            cfg.providers.get(provider).and_then(|p| p.allow.as_deref())
        }
    };
    match grant {
        policy::Grant::Rule(i) => match rules.and_then(|r| r.get(*i)) {
            Some(rule) => format!("allow[{i}]: {rule}"),
            None => format!("allow[{i}]"),
        },
        policy::Grant::Default => "no allow rules; policy.default is allow".into(),
    }
}

/// Every secret and whom it is granted to.
fn matrix(cfg: &Config, json: bool) -> i32 {
    let default = match cfg.policy.default {
        DefaultDecision::Deny => "deny",
        DefaultDecision::Allow => "allow",
    };
    let who = |rules: Option<&[policy::AllowRule]>| -> String {
        match rules {
            None => match cfg.policy.default {
                DefaultDecision::Deny => "nobody (no allow rules; policy.default is deny)".into(),
                DefaultDecision::Allow => {
                    "every container that names it (no allow rules; policy.default is allow)".into()
                }
            },
            Some([]) => "nobody (allow is empty)".into(),
            Some(rules) => rules
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" | "),
        }
    };
    let secrets: Vec<(String, String, Vec<String>)> = cfg
        .secrets
        .iter()
        .map(|(n, s)| {
            (
                n.clone(),
                who(s.allow.as_deref()),
                s.key
                    .iter()
                    .chain(s.keys.iter().flatten())
                    .cloned()
                    .collect(),
            )
        })
        .collect();
    let inline: Vec<(String, String, Option<Vec<String>>)> = cfg
        .providers
        .iter()
        .map(|(n, p)| (n.clone(), who(p.allow.as_deref()), p.allow_paths.clone()))
        .collect();
    if json {
        println!(
            "{}",
            json!({
                "default": default,
                "inline_references": cfg.policy.inline_references,
                "secrets": secrets.iter().map(|(n, w, k)| json!({"secret": n, "granted_to": w, "keys": k})).collect::<Vec<_>>(),
                "inline": inline.iter().map(|(n, w, p)| json!({"provider": n, "granted_to": w, "allow_paths": p})).collect::<Vec<_>>(),
            })
        );
        return 0;
    }
    println!(
        "policy.default: {default}; inline references: {}",
        if cfg.policy.inline_references {
            "on"
        } else {
            "off (only secrets declared under secrets: can be referenced)"
        }
    );
    let width = secrets.iter().map(|s| s.0.len()).max().unwrap_or(6).max(6);
    println!("{:width$}  GRANTED TO", "SECRET");
    for (n, w, keys) in &secrets {
        let keys = if keys.len() > 1 {
            format!("  (keys: {})", keys.join(", "))
        } else {
            String::new()
        };
        println!("{n:width$}  {w}{keys}");
    }
    if cfg.policy.inline_references {
        println!("\nINLINE REFERENCES (dso://<provider>/<path>)");
        for (n, w, paths) in &inline {
            let paths = match paths {
                Some(p) => format!(" under {}", p.join(", ")),
                None => String::new(),
            };
            println!("{n}{paths}: {w}");
        }
    }
    0
}

//! `dso rotate NAME` / `dso rotate --container ID`: re-fetch and re-inject now, directly (no agent
//! needed). `dso status` / `dso ps`: the managed containers, their secrets and versions.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;

use crate::rotation::{self, Mode, Options, OutcomeStatus, Rotator, Selector, Strategy};

#[derive(Debug, Args)]
pub(super) struct RotateArgs {
    /// The secret to rotate (its name in dso.yaml)
    #[arg(required_unless_present = "container", conflicts_with = "container")]
    name: Option<String>,
    /// Rotate every secret of this container instead
    #[arg(long, value_name = "ID")]
    container: Option<String>,
    /// Docker Engine socket for the restart strategy [default: $DOCKER_HOST, else /var/run/docker.sock]
    #[arg(long, value_name = "PATH")]
    docker_socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(super) struct StatusArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

pub(super) fn rotate(config_path: &Path, args: &RotateArgs) -> anyhow::Result<i32> {
    let cfg = super::load_config(config_path)?;
    let mut opts = Options::default();
    if let Some(s) = &args.docker_socket {
        opts.docker_socket = s.clone();
    }
    let sel = match (&args.name, &args.container) {
        (_, Some(id)) => Selector::Container(id.clone()),
        (Some(n), None) => Selector::Secret(n.clone()),
        (None, None) => bail!("give a secret name or --container ID"),
    };
    let rotator = Rotator::new(cfg, opts);
    let outcomes = rotator.rotate(&sel, Mode::Force);
    if outcomes.is_empty() {
        match &sel {
            Selector::Secret(n) => bail!("no running container managed by dso uses secret {n:?}"),
            Selector::Container(id) => {
                bail!("container {id:?} is not running or has no secrets managed by dso")
            }
            Selector::All => bail!("no running container is managed by dso"),
        }
    }
    let mut failed = false;
    for o in &outcomes {
        let version = o.version.as_deref().unwrap_or("-");
        match &o.status {
            OutcomeStatus::Rotated | OutcomeStatus::Unchanged => {
                println!("{}: {}: rotated (version {version})", o.container, o.secret)
            }
            OutcomeStatus::EnvNeedsRestart => println!(
                "{}: {}: env-injected; the new value (version {version}) reaches it only with rotation strategy restart",
                o.container, o.secret
            ),
            OutcomeStatus::Failed(msg) => {
                failed = true;
                eprintln!("dso: {}: {}: {msg}", o.container, o.secret);
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub(super) fn status(config_path: &Path, args: &StatusArgs) -> anyhow::Result<i32> {
    let cfg = super::load_config(config_path)?;
    let records = rotation::prune(&cfg.runtime.state_dir);
    let rows: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.rec.id,
                "pid": r.rec.pid,
                "bundle": r.rec.bundle,
                "created": r.rec.created,
                "secrets_dir": r.rec.secrets_dir,
                "secrets": r.rec.secrets.iter().map(|s| serde_json::json!({
                    "name": s.name,
                    "provider": s.provider,
                    "path": s.path,
                    "key": s.key,
                    "version": s.version,
                    "file": s.file,
                    "env": s.env,
                    "strategy": Strategy::of(&cfg, &s.name).map(|st| st.label()).unwrap_or("invalid"),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!(
        "{:<20} {:>8} {:<24} {:<12} {:<10} {:<9} INJECTED AS",
        "CONTAINER", "PID", "SECRET", "PROVIDER", "VERSION", "STRATEGY"
    );
    for r in &records {
        let id: String = r.rec.id.chars().take(20).collect();
        for s in &r.rec.secrets {
            let mut how = Vec::new();
            if let Some(f) = &s.file {
                how.push(format!(
                    "file {}/{f}",
                    r.rec.secrets_dir.trim_end_matches('/')
                ));
            }
            for e in &s.env {
                how.push(format!("env {e}"));
            }
            println!(
                "{:<20} {:>8} {:<24} {:<12} {:<10} {:<9} {}",
                id,
                r.rec.pid,
                s.name,
                s.provider,
                s.version.as_deref().unwrap_or("-"),
                Strategy::of(&cfg, &s.name)
                    .map(|st| st.label())
                    .unwrap_or("invalid"),
                how.join(", ")
            );
        }
    }
    Ok(0)
}

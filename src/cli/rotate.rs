//! `dso rotate NAME` / `dso rotate --container ID`: re-fetch and re-inject now, through the agent
//! when it answers, else directly. `dso status` / `dso ps`: the managed containers, their
//! secrets, versions, last rotation and provider health (from the agent; without one, what the
//! state records hold).

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;

use crate::agent::control;
use crate::rotation::{Mode, Options, Rotator, Selector};

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
    // Through the agent when it answers (its sessions, its serialisation of rotations), else
    // here, directly.
    let req = match &sel {
        Selector::Secret(n) => serde_json::json!({"op": "rotate", "secret": n}),
        Selector::Container(id) => serde_json::json!({"op": "rotate", "container": id}),
        Selector::All | Selector::Secrets(_) => serde_json::json!({"op": "rotate"}),
    };
    let via_agent = ask_agent(&cfg, &req, cfg.runtime.fetch_timeout * 4)
        .and_then(|v| v.get("outcomes").and_then(|o| o.as_array()).cloned());
    let outcomes: Vec<serde_json::Value> = match via_agent {
        Some(o) => o,
        None => Rotator::new(cfg, opts)
            .rotate(&sel, Mode::Force)
            .iter()
            .map(control::outcome_json)
            .collect(),
    };
    if outcomes.is_empty() {
        match &sel {
            Selector::Secret(n) => bail!("no running container managed by dso uses secret {n:?}"),
            Selector::Container(id) => {
                bail!("container {id:?} is not running or has no secrets managed by dso")
            }
            Selector::All | Selector::Secrets(_) => {
                bail!("no running container is managed by dso")
            }
        }
    }
    let mut failed = false;
    for o in &outcomes {
        let get = |k: &str| o.get(k).and_then(|v| v.as_str()).unwrap_or("-");
        let (container, secret, version) = (get("container"), get("secret"), get("version"));
        match get("status") {
            "rotated" | "unchanged" => {
                println!("{container}: {secret}: rotated (version {version})")
            }
            "env_needs_restart" => println!(
                "{container}: {secret}: env-injected; the new value (version {version}) reaches it only with rotation strategy restart"
            ),
            _ => {
                failed = true;
                eprintln!("dso: {container}: {secret}: {}", get("error"));
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// One request to the agent of this config; `None` when no agent answers, or it refused.
fn ask_agent(
    cfg: &crate::config::Config,
    req: &serde_json::Value,
    timeout: std::time::Duration,
) -> Option<serde_json::Value> {
    let socket = control::socket_path(cfg);
    if !socket.exists() {
        return None;
    }
    let bytes = control::request(&socket, req, timeout).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if v.get("ok") == Some(&serde_json::Value::Bool(true)) {
        Some(v)
    } else {
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            eprintln!(
                "dso: the agent at {} said: {e}; working directly",
                socket.display()
            );
        }
        None
    }
}

pub(super) fn status(config_path: &Path, args: &StatusArgs) -> anyhow::Result<i32> {
    let cfg = super::load_config(config_path)?;
    let report = match ask_agent(
        &cfg,
        &serde_json::json!({"op": "status"}),
        cfg.runtime.fetch_timeout,
    ) {
        Some(v) => v,
        None => {
            // No agent: the same report from the state dir, without what only an agent knows.
            let rotator = Rotator::new(cfg.clone(), Options::default());
            let mut v = control::status_json(&rotator);
            v["agent"] = serde_json::Value::Bool(false);
            v
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    let empty = Vec::new();
    let containers = report
        .get("containers")
        .and_then(|c| c.as_array())
        .unwrap_or(&empty);
    let s = |v: &serde_json::Value, k: &str| -> String {
        match v.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => "-".into(),
            Some(other) => other.to_string(),
        }
    };
    println!(
        "{:<20} {:>8} {:<24} {:<12} {:<10} {:<9} {:<24} INJECTED AS",
        "CONTAINER", "PID", "SECRET", "PROVIDER", "VERSION", "STRATEGY", "LAST ROTATION"
    );
    for c in containers {
        // The engine's name for it (docker:web, k8s:ns/pod/container), else the short id.
        let id: String = match c.get("name").and_then(|n| n.as_str()) {
            Some(name) => name.to_string(),
            None => s(c, "id").chars().take(12).collect(),
        };
        let dir = s(c, "secrets_dir");
        for sec in c
            .get("secrets")
            .and_then(|x| x.as_array())
            .unwrap_or(&empty)
        {
            let mut how = Vec::new();
            if let Some(f) = sec.get("file").and_then(|f| f.as_str()) {
                how.push(format!("file {}/{f}", dir.trim_end_matches('/')));
            }
            for e in sec.get("env").and_then(|e| e.as_array()).unwrap_or(&empty) {
                how.push(format!("env {}", e.as_str().unwrap_or("?")));
            }
            println!(
                "{:<20} {:>8} {:<24} {:<12} {:<10} {:<9} {:<24} {}",
                id,
                s(c, "pid"),
                s(sec, "name"),
                s(sec, "provider"),
                s(sec, "version"),
                s(sec, "strategy"),
                s(sec, "last_rotation"),
                how.join(", ")
            );
        }
    }
    if report.get("agent") == Some(&serde_json::Value::Bool(false)) {
        println!(
            "\n(no agent answering at {}: versions from the state records; no rotation history or provider health)",
            control::socket_path(&cfg).display()
        );
    } else if let Some(p) = report.get("providers").and_then(|p| p.as_object()) {
        println!();
        for (name, h) in p {
            let ok = h.get("ok").and_then(|o| o.as_bool()).unwrap_or(false);
            println!(
                "provider {name}: {} (last call {}){}",
                if ok { "ok" } else { "failing" },
                s(h, "at"),
                h.get("error")
                    .and_then(|e| e.as_str())
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(0)
}

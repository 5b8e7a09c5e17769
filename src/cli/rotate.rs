//! `dso rotate NAME` / `dso rotate --container ID`: re-fetch and re-inject now, through the agent
//! when it answers, else directly. `dso status` / `dso ps`: the managed containers, their
//! secrets, versions, last rotation and provider health (from the agent; without one, what the
//! state records hold).

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    ask_agent_at(&crate::control::socket_path(cfg), req, timeout)
}

/// [`ask_agent`] at a given socket.
fn ask_agent_at(
    socket: &Path,
    req: &serde_json::Value,
    timeout: std::time::Duration,
) -> Option<serde_json::Value> {
    if !socket.exists() {
        return None;
    }
    let v = crate::control::request(socket, req, timeout).ok()?;
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
    let status_req = serde_json::json!({"op": "status"});
    let cfg = match super::load_config(config_path) {
        Ok(cfg) => cfg,
        Err(e) => {
            // An agent may still run an earlier, valid version of this file (it refuses an
            // invalid one): ask it, where the file says it listens, and say what is wrong.
            let socket = lenient_socket_path(config_path);
            let Some(report) = ask_agent_at(&socket, &status_req, Duration::from_secs(10)) else {
                return Err(e);
            };
            eprintln!("dso: {e}");
            return print_status(&report, &socket, args.json);
        }
    };
    let socket = crate::control::socket_path(&cfg);
    let report = match ask_agent(&cfg, &status_req, cfg.runtime.fetch_timeout) {
        Some(v) => v,
        None => {
            // No agent: the same report from the state dir, without what only an agent knows.
            let rotator = Rotator::new(cfg.clone(), Options::default());
            let mut v = control::status_json(&rotator);
            v["agent"] = serde_json::Value::Bool(false);
            // What is on disk now, not what an agent runs with.
            v["config"]["loaded_at"] = serde_json::Value::Null;
            v
        }
    };
    print_status(&report, &socket, args.json)
}

/// Where the agent of a config that does not validate listens: its `agent.socket`, else
/// `<runtime.state_dir>/dso.sock`, else the default, read from the YAML without the schema.
fn lenient_socket_path(config_path: &Path) -> PathBuf {
    let doc = std::fs::read_to_string(config_path)
        .ok()
        .and_then(|t| crate::config::yaml_document(&t, config_path).ok())
        .unwrap_or_default();
    let str_at = |a: &str, b: &str| doc.get(a).and_then(|v| v.get(b)).and_then(|v| v.as_str());
    if let Some(s) = str_at("agent", "socket") {
        return PathBuf::from(s);
    }
    let state_dir = str_at("runtime", "state_dir").unwrap_or("/run/dso");
    Path::new(state_dir).join(crate::control::DEFAULT_SOCKET_NAME)
}

fn print_status(report: &serde_json::Value, socket: &Path, json: bool) -> anyhow::Result<i32> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
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
    print!("{}", config_lines(report));
    println!(
        "{:<12} {:<24} {:>8} {:<24} {:<12} {:<10} {:<9} {:<24} INJECTED AS",
        "CONTAINER", "NAME", "PID", "SECRET", "PROVIDER", "VERSION", "STRATEGY", "LAST ROTATION"
    );
    for c in containers {
        let full_id = s(c, "id");
        let id = crate::rotation::short_id(&full_id);
        // The engine's name for it (docker:web, k8s:ns/pod/container).
        let name = match c.get("name").and_then(|n| n.as_str()) {
            Some(label) => label.to_string(),
            None => workload_name(c),
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
                "{:<12} {:<24} {:>8} {:<24} {:<12} {:<10} {:<9} {:<24} {}",
                id,
                name,
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
    // Dynamic secrets: each container's leases and when they expire.
    let mut lease_lines = Vec::new();
    for c in containers {
        let id: String = s(c, "id").chars().take(20).collect();
        for sec in c
            .get("secrets")
            .and_then(|x| x.as_array())
            .unwrap_or(&empty)
        {
            if let Some(l) = sec.get("lease").filter(|l| l.is_object()) {
                lease_lines.push(format!(
                    "{:<20} {:<24} {:<9} {:<24} {:<24} {}",
                    id,
                    s(sec, "name"),
                    s(l, "engine"),
                    s(l, "lease"),
                    s(l, "expires"),
                    s(l, "renews_at"),
                ));
            }
        }
    }
    if !lease_lines.is_empty() {
        println!(
            "\n{:<20} {:<24} {:<9} {:<24} {:<24} RENEWS AT",
            "CONTAINER", "SECRET", "ENGINE", "LEASE", "EXPIRES"
        );
        for l in lease_lines {
            println!("{l}");
        }
    }
    let pending = report
        .get("pending_revocations")
        .and_then(|p| p.as_array())
        .unwrap_or(&empty);
    if !pending.is_empty() {
        println!("\npending revocations (retried by the agent until revoked or expired):");
        for p in pending {
            let l = p.get("lease").cloned().unwrap_or_default();
            println!(
                "  {} {} lease {} expires {} attempts {}{}",
                s(p, "container"),
                s(p, "secret"),
                s(&l, "lease"),
                s(&l, "expires"),
                s(p, "attempts"),
                p.get("last_error")
                    .and_then(|e| e.as_str())
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
    }
    if report.get("agent") == Some(&serde_json::Value::Bool(false)) {
        println!(
            "\n(no agent answering at {}: versions from the state records; no rotation history or provider health)",
            socket.display()
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

/// The container's name as its engine recorded it (the state record's `workload`): the Docker
/// name, or `namespace/pod/container` for Kubernetes; `-` when the record has none.
fn workload_name(c: &serde_json::Value) -> String {
    let w = &c["workload"];
    let get = |k: &str| w.get(k).and_then(|v| v.as_str()).filter(|v| !v.is_empty());
    if let (Some(ns), Some(pod)) = (get("namespace"), get("pod")) {
        return match get("container") {
            Some(ctr) => format!("{ns}/{pod}/{ctr}"),
            None => format!("{ns}/{pod}"),
        };
    }
    get("name")
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_else(|| "-".to_string())
}

/// The config the report describes: path, digest, when the agent loaded it, and a refused
/// reload if there was one.
fn config_lines(report: &serde_json::Value) -> String {
    let c = &report["config"];
    let get =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let Some(path) = get(c, "path") else {
        return String::new();
    };
    let digest = get(c, "digest").unwrap_or_default();
    let digest = crate::agent::short_digest(&digest);
    let mut out = match get(c, "loaded_at") {
        Some(at) => format!("config {path}: digest {digest}, loaded by the agent at {at}\n"),
        None => format!("config {path}: digest {digest} (as on disk now)\n"),
    };
    if let Some(r) = c.get("rejected").filter(|r| r.is_object()) {
        let rd = get(r, "digest").unwrap_or_default();
        out.push_str(&format!(
            "config REJECTED at {} (digest {}): {}; the agent keeps running the config above\n",
            get(r, "at").unwrap_or_default(),
            crate::agent::short_digest(&rd),
            get(r, "error").unwrap_or_default()
        ));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_workload_record() {
        let docker = serde_json::json!({"workload": {"engine": "docker", "name": "/web"}});
        assert_eq!(workload_name(&docker), "web");
        let k8s = serde_json::json!({"workload": {"engine": "kubernetes", "name": "x",
            "namespace": "billing", "pod": "api-0", "container": "app"}});
        assert_eq!(workload_name(&k8s), "billing/api-0/app");
        assert_eq!(workload_name(&serde_json::json!({"id": "abc"})), "-");
    }

    #[test]
    fn config_lines_show_digest_time_and_rejection() {
        let r = serde_json::json!({"config": {"path": "/etc/dso/dso.yaml",
            "digest": "0123456789abcdef0123", "loaded_at": "2026-01-01T00:00:00.000Z",
            "rejected": {"at": "2026-01-01T00:01:00.000Z", "digest": "fedcba9876543210",
                "error": "line 2: x: unknown key"}}});
        assert_eq!(
            config_lines(&r),
            "config /etc/dso/dso.yaml: digest 0123456789ab, loaded by the agent at 2026-01-01T00:00:00.000Z\n\
             config REJECTED at 2026-01-01T00:01:00.000Z (digest fedcba987654): line 2: x: unknown key; the agent keeps running the config above\n\n"
        );
    }
}

//! `dso doctor`: runs the host checks of [`crate::engine::doctor`], prints a table (or JSON) and
//! exits 1 when a check failed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::engine::daemon_json::{DEFAULT_DAEMON_JSON, DEFAULT_RUNTIME_NAME};
use crate::engine::docker_api;
use crate::engine::doctor::{self, DoctorOptions};

#[derive(Debug, Args)]
pub(super) struct DoctorArgs {
    /// Print JSON ({"ok": bool, "checks": [{check, status, detail}]}) instead of a table
    #[arg(long)]
    json: bool,
    /// dockerd's configuration file
    #[arg(long, value_name = "PATH", default_value = DEFAULT_DAEMON_JSON)]
    daemon_json: PathBuf,
    /// Engine API [default: $DOCKER_HOST, else unix:///var/run/docker.sock]
    #[arg(long, value_name = "unix:///PATH")]
    docker_host: Option<String>,
    /// The runtime name to look for in dockerd
    #[arg(long, value_name = "NAME", default_value = DEFAULT_RUNTIME_NAME)]
    name: String,
    /// Leave out a check (runc, binaries, dockerd, runtime, config, permissions, agent,
    /// provider or provider:NAME); repeatable. `--skip dockerd` also skips `runtime`
    #[arg(long, value_name = "CHECK")]
    skip: Vec<String>,
    /// Deadline for each provider's lookup, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    timeout: u64,
}

pub(super) fn run(config_path: &Path, args: &DoctorArgs) -> anyhow::Result<i32> {
    let skip_docker = args.skip.iter().any(|s| s == "dockerd");
    let docker_socket = if skip_docker {
        None
    } else {
        Some(docker_api::socket_path(args.docker_host.as_deref())?)
    };
    let mut skip = args.skip.clone();
    // `provider` is accepted for the whole family (checks are named provider:NAME).
    if skip.iter().any(|s| s == "providers") {
        skip.push("provider".into());
    }
    let opts = DoctorOptions {
        config_path: config_path.to_path_buf(),
        daemon_json: args.daemon_json.clone(),
        docker_socket,
        runtime_name: args.name.clone(),
        skip,
        provider_timeout: Duration::from_secs(args.timeout.max(1)),
    };
    let checks = doctor::run(&opts);
    let ok = doctor::passed(&checks);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "ok": ok, "checks": checks }))?
        );
    } else {
        print!("{}", doctor::render_table(&checks));
        if !ok {
            eprintln!("dso: some checks failed; each FAIL line says what to do");
        }
    }
    Ok(if ok { 0 } else { 1 })
}

//! `dso install` / `dso uninstall`: the `dso` runtime in dockerd's daemon.json, then a reload
//! (SIGHUP) of the running dockerd, confirmed through the Engine API when it answers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::Args;

use crate::engine::daemon_json::{
    DEFAULT_DAEMON_JSON, DEFAULT_RUNTIME_NAME, DaemonJson, RuntimeEntry,
};
use crate::engine::{self, DEFAULT_DOCKERD_PIDFILE, docker_api};

/// How long a reload may take to show in `GET /info`.
const RELOAD_DEADLINE: Duration = Duration::from_secs(15);

#[derive(Debug, Args)]
pub(super) struct DockerdArgs {
    /// dockerd's configuration file
    #[arg(long, value_name = "PATH", default_value = DEFAULT_DAEMON_JSON)]
    daemon_json: PathBuf,
    /// The runtime name in daemon.json (`docker run --runtime NAME`)
    #[arg(long, value_name = "NAME", default_value = DEFAULT_RUNTIME_NAME)]
    name: String,
    /// dockerd's pid file: who gets the SIGHUP that reloads daemon.json
    #[arg(long, value_name = "PATH", default_value = DEFAULT_DOCKERD_PIDFILE)]
    dockerd_pidfile: PathBuf,
    /// Engine API, to confirm the reload [default: $DOCKER_HOST, else unix:///var/run/docker.sock]
    #[arg(long, value_name = "unix:///PATH")]
    docker_host: Option<String>,
    /// Only edit daemon.json; do not signal dockerd
    #[arg(long)]
    no_reload: bool,
}

#[derive(Debug, Args)]
pub(super) struct InstallArgs {
    #[command(flatten)]
    dockerd: DockerdArgs,
    /// The dso-runc executable dockerd runs [default: next to this dso, else /usr/bin/dso-runc]
    #[arg(long, value_name = "PATH")]
    runtime_path: Option<PathBuf>,
    /// The dso.yaml dso-runc reads (its `--dso-config`) [default: --config, else $DSO_CONFIG, else /etc/dso/dso.yaml]
    #[arg(long, value_name = "PATH")]
    dso_config: Option<PathBuf>,
    /// Also make it dockerd's default runtime (`default-runtime`): every container goes through dso
    #[arg(long)]
    default: bool,
}

#[derive(Debug, Args)]
pub(super) struct UninstallArgs {
    #[command(flatten)]
    dockerd: DockerdArgs,
}

pub(super) fn install(config_path: &Path, args: &InstallArgs) -> anyhow::Result<i32> {
    let absolute = |p: &Path| {
        std::path::absolute(p).map_err(|e| anyhow!("cannot resolve {}: {e}", p.display()))
    };
    let runtime_path = absolute(
        &args
            .runtime_path
            .clone()
            .unwrap_or_else(engine::default_runtime_path),
    )?;
    let meta = std::fs::metadata(&runtime_path).map_err(|e| {
        anyhow!(
            "{}: {e}; pass --runtime-path PATH to the dso-runc executable",
            runtime_path.display()
        )
    })?;
    if !meta.is_file() || std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 == 0
    {
        bail!(
            "{} is not an executable file; pass --runtime-path PATH to the dso-runc executable",
            runtime_path.display()
        );
    }
    let dso_config = absolute(args.dso_config.as_deref().unwrap_or(config_path))?;
    let config_arg = dso_config
        .to_str()
        .ok_or_else(|| anyhow!("{} is not valid UTF-8", dso_config.display()))?;
    let entry = RuntimeEntry::new(&args.dockerd.name, runtime_path, config_arg);
    let mut doc = DaemonJson::load(&args.dockerd.daemon_json)?;
    let changed = doc.install(&entry, args.default)?;
    let path = args.dockerd.daemon_json.display();
    if changed {
        let backup = doc.backup()?;
        doc.save()?;
        match backup {
            Some(b) => println!(
                "{path}: runtime {:?} → {} (previous file kept as {})",
                entry.name,
                entry.path.display(),
                b.display()
            ),
            None => println!(
                "{path}: created with runtime {:?} → {}",
                entry.name,
                entry.path.display()
            ),
        }
        if args.default {
            println!("{path}: default-runtime is {:?}", entry.name);
        }
    } else {
        println!(
            "{path}: runtime {:?} already registered as asked; nothing to change",
            entry.name
        );
    }
    if !dso_config.exists() {
        println!(
            "note: {} does not exist yet; create it (`dso init`) before starting containers with secrets",
            dso_config.display()
        );
    }
    reload(&args.dockerd, changed, true)
}

pub(super) fn uninstall(args: &UninstallArgs) -> anyhow::Result<i32> {
    let mut doc = DaemonJson::load(&args.dockerd.daemon_json)?;
    let changed = doc.uninstall(&args.dockerd.name)?;
    let path = args.dockerd.daemon_json.display();
    if changed {
        let backup = doc.backup()?;
        doc.save()?;
        println!(
            "{path}: runtime {:?} removed{}",
            args.dockerd.name,
            backup
                .map(|b| format!(" (previous file kept as {})", b.display()))
                .unwrap_or_default()
        );
    } else {
        println!(
            "{path}: no runtime {:?}; nothing to change",
            args.dockerd.name
        );
    }
    reload(&args.dockerd, changed, false)
}

/// SIGHUP to dockerd when daemon.json changed, then wait until `GET /info` agrees.
fn reload(args: &DockerdArgs, changed: bool, present: bool) -> anyhow::Result<i32> {
    if !changed || args.no_reload {
        if changed {
            println!("not reloading dockerd (--no-reload): run `systemctl reload docker`");
        }
        return Ok(0);
    }
    let Some(pid) = engine::dockerd_pid(&args.dockerd_pidfile)? else {
        println!(
            "dockerd is not running ({} does not exist); it reads the change when it starts",
            args.dockerd_pidfile.display()
        );
        return Ok(0);
    };
    engine::reload_dockerd(pid)?;
    let socket = docker_api::socket_path(args.docker_host.as_deref())?;
    if engine::wait_for_runtime(&socket, &args.name, present, RELOAD_DEADLINE) {
        println!(
            "dockerd (pid {pid}) reloaded: runtime {:?} {}",
            args.name,
            if present { "is available" } else { "is gone" }
        );
        Ok(0)
    } else {
        bail!(
            "sent SIGHUP to dockerd (pid {pid}) but the Docker API at {} does not show runtime {:?} {} \
             after {}s; read dockerd's log (journalctl -u docker) for why it rejected daemon.json",
            socket.display(),
            args.name,
            if present { "registered" } else { "removed" },
            RELOAD_DEADLINE.as_secs()
        )
    }
}

//! `dso agent`: the foreground daemon (systemd: packaging/dso-agent.service). Polls the versions
//! of the secrets in use every `watch.interval`, re-injects what changed, and serves the signed
//! rotation webhook when `agent.webhook` is configured. Reads dso.yaml again on SIGHUP
//! (`systemctl reload dso-agent`) and when the file changes. Logs go to stderr (journald).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::anyhow;
use clap::Args;

use crate::agent::{self, control, metrics, webhook};
use crate::audit::Audit;
use crate::rotation::{Mode, Options, Rotator, Selector};

#[derive(Debug, Args)]
pub(super) struct AgentArgs {
    /// Docker Engine socket for the restart strategy [default: $DOCKER_HOST, else /var/run/docker.sock]
    #[arg(long, value_name = "PATH")]
    docker_socket: Option<PathBuf>,
    /// Run one watch cycle and exit
    #[arg(long)]
    once: bool,
}

pub(super) fn run(config_path: &Path, args: &AgentArgs) -> anyhow::Result<i32> {
    crate::state::registry::limit_heap_arenas();
    let cfg = super::load_config(config_path)?;
    let mut opts = Options::default();
    if let Some(s) = &args.docker_socket {
        opts.docker_socket = s.clone();
    }
    let audit = Arc::new(Audit::new(&cfg.audit));
    let webhook_cfg = cfg.agent.webhook.clone();
    let metrics_listen = cfg.agent.metrics.as_ref().map(|m| m.listen.clone());
    let group = match &cfg.agent.group {
        Some(g) => Some(control::resolve_group(g)?),
        None => None,
    };
    let socket = crate::control::socket_path(&cfg);
    let state_dir = cfg.runtime.state_dir.clone();
    let interval = cfg.watch.interval;
    let rotator = Arc::new(Rotator::new(cfg, opts));
    if args.once {
        for o in rotator.rotate(&Selector::All, Mode::IfChanged) {
            if let crate::rotation::OutcomeStatus::Failed(msg) = &o.status {
                eprintln!("dso agent: {}: {}: {msg}", o.container, o.secret);
            }
        }
        return Ok(0);
    }
    // SIGHUP is taken by a thread that waits for it (sigwait), not by a handler: blocked here,
    // before any thread starts, so that every thread inherits the mask and none dies of it.
    let mut hup = nix::sys::signal::SigSet::empty();
    hup.add(nix::sys::signal::Signal::SIGHUP);
    hup.thread_block()
        .map_err(|e| anyhow!("cannot block SIGHUP: {e}"))?;
    crate::agent::raise_fd_limit();
    let started = Instant::now();
    let listener = control::bind(&socket, group, &state_dir)?;
    eprintln!("dso agent: control socket {}", socket.display());
    // dso-runc finds this agent by its dso.yaml and hands its creates over (issue 18).
    match crate::runtime::handoff::publish(config_path, &socket) {
        Ok(link) => eprintln!("dso agent: serving creates for {}", link.display()),
        Err(e) => eprintln!(
            "dso agent: cannot publish the socket for dso-runc's creates: {e}; they exec dso"
        ),
    }
    // Counters of the control socket and the webhook, shown by the metrics.
    let listener_stats = Arc::new(agent::listen::ListenerStats::default());
    {
        let server = control::Server::new(rotator.clone(), group, listener_stats.clone());
        std::thread::spawn(move || control::serve(listener, server));
    }
    if let Some(listen) = metrics_listen {
        let listener = metrics::bind(&listen)?;
        eprintln!(
            "dso agent: metrics on http://{}/metrics",
            listener.local_addr()?
        );
        let metrics = Arc::new(metrics::Metrics::new(
            rotator.clone(),
            started,
            listener_stats.clone(),
        ));
        metrics.follow(audit.path());
        std::thread::spawn(move || metrics::serve(listener, metrics));
    }
    agent::notify::start(&rotator.config().notifications, audit.clone())?;
    let (tx, rx) = mpsc::channel();
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            while hup.wait().is_ok() {
                if tx.send(agent::Trigger::Reload).is_err() {
                    return;
                }
            }
        });
    }
    if let Some(settings) = webhook_cfg {
        let key = webhook::read_key(&settings.secret_file)?;
        let hook = webhook::Webhook::bind(&settings.listen, key, audit, tx.clone())
            .map_err(|e| anyhow!("webhook listener {}: {e}", settings.listen))?
            .with_stats(listener_stats.clone());
        eprintln!(
            "dso agent: webhook on http://{}/v1/webhook",
            hook.local_addr()?
        );
        hook.spawn();
    }
    drop(tx);
    let cfg = rotator.config();
    eprintln!(
        "dso agent: config {} (digest {}); read again on SIGHUP and when it changes",
        cfg.source.display(),
        agent::short_digest(&cfg.digest)
    );
    eprintln!(
        "dso agent: watching {} every {:?}",
        rotator.state_dir().display(),
        interval
    );
    agent::run(
        &rotator,
        rx,
        Arc::new(AtomicBool::new(false)),
        Some(config_path),
    );
    Ok(0)
}

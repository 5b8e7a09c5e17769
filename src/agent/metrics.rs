//! `GET /metrics` (Prometheus text format) and `GET /healthz` on `agent.metrics.listen`, a
//! localhost listener. Counters and gauges only: names, never values.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::rotation::Rotator;

/// Binds the listener (`host:port`).
pub fn bind(listen: &str) -> Result<TcpListener, String> {
    TcpListener::bind(listen).map_err(|e| format!("metrics listener {listen}: {e}"))
}

/// Serves until the listener fails, one connection at a time (scrapes are rare and small).
pub fn serve(listener: TcpListener, rotator: Arc<Rotator>, started: Instant) {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let _ = handle(stream, &rotator, started);
    }
}

fn handle(mut stream: TcpStream, rotator: &Rotator, started: Instant) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(std::io::Read::take(&stream, 8192)).read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = match (line.split_whitespace().next(), path) {
        (Some("GET"), "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4",
            render(rotator, started),
        ),
        (Some("GET"), "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The exposition text.
pub fn render(rotator: &Rotator, started: Instant) -> String {
    let c = &rotator.counters;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let containers = crate::rotation::load_records(&rotator.config().runtime.state_dir).len();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in samples {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    metric(
        "dso_managed_containers",
        "gauge",
        "Containers with dso-managed secrets (state records).",
        &[("", containers as u64)],
    );
    metric(
        "dso_rotations_total",
        "counter",
        "Re-injections of a secret into a container, by result.",
        &[
            ("{result=\"completed\"}", n(&c.rotations_completed)),
            ("{result=\"failed\"}", n(&c.rotations_failed)),
        ],
    );
    metric(
        "dso_provider_calls_total",
        "counter",
        "Provider fetches and version checks made by the agent, by result.",
        &[
            ("{result=\"ok\"}", n(&c.fetches) - n(&c.fetch_errors)),
            ("{result=\"error\"}", n(&c.fetch_errors)),
        ],
    );
    metric(
        "dso_auth_failures_total",
        "counter",
        "Provider calls refused for credentials or permissions.",
        &[("", n(&c.auth_failures))],
    );
    metric(
        "dso_agent_fetches_served_total",
        "counter",
        "Secrets fetched for dso-runc over the control socket.",
        &[("", n(&c.agent_fetches_served))],
    );
    let healthy: Vec<(String, u64)> = rotator
        .provider_health()
        .into_iter()
        .map(|(name, h)| (format!("{{provider=\"{name}\"}}"), u64::from(h.ok)))
        .collect();
    let healthy: Vec<(&str, u64)> = healthy.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        "dso_provider_up",
        "gauge",
        "1 if the provider's last call succeeded.",
        &healthy,
    );
    metric(
        "dso_agent_uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
        &[("", started.elapsed().as_secs())],
    );
    out
}

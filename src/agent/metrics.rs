//! `GET /metrics` (OpenMetrics text, which Prometheus scrapes) and `GET /healthz` on
//! `agent.metrics.listen`, a localhost listener. Names, counts and durations, never values.
//!
//! Two sources: the agent's own state (containers, rotations, provider calls and health,
//! uptime), read at scrape time; and every audit event written on the host — by the agent and by
//! each dso-runc — read from the audit file ([`crate::audit::follow`]): a counter per event kind
//! and status, and latency histograms per provider for fetches, injections and rotations.
//! Built on the `prometheus-client` crate (the Prometheus project's Rust client): the histogram
//! and OpenMetrics encodings are its, not hand-written.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::audit::follow::Follower;
use crate::rotation::Rotator;

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// 1 ms to ~33 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric the agent exposes.
pub struct Metrics {
    registry: Registry,
    events: Family<Labels, Counter>,
    fetch: Histograms,
    injection: Histograms,
    rotation: Histograms,
    /// Seconds until a lease or certificate expires (set by the lease and PKI code).
    pub lease_expiry: Family<Labels, Gauge>,
    pub certificate_expiry: Family<Labels, Gauge>,
}

impl Metrics {
    pub fn new(
        rotator: Arc<Rotator>,
        started: Instant,
        listeners: Arc<super::listen::ListenerStats>,
    ) -> Metrics {
        let mut registry = Registry::default();
        let events = Family::<Labels, Counter>::default();
        let hist = || Histograms::new_with_constructor(latency_histogram as fn() -> Histogram);
        let (fetch, injection, rotation) = (hist(), hist(), hist());
        let lease_expiry = Family::<Labels, Gauge>::default();
        let certificate_expiry = Family::<Labels, Gauge>::default();
        registry.register(
            "dso_audit_events",
            "Audit events written on this host (by the agent and every dso-runc) since the agent started, by event and status",
            events.clone(),
        );
        registry.register(
            "dso_fetch_duration_seconds",
            "Time to fetch a secret from its provider, by provider",
            fetch.clone(),
        );
        registry.register(
            "dso_injection_duration_seconds",
            "Time from runc's create to the secrets written into the container, by provider",
            injection.clone(),
        );
        registry.register(
            "dso_rotation_duration_seconds",
            "Time to re-inject a rotated secret into one container, by provider",
            rotation.clone(),
        );
        registry.register(
            "dso_lease_expiry_seconds",
            "Seconds until a dynamic secret's lease expires, by secret and container",
            lease_expiry.clone(),
        );
        registry.register(
            "dso_certificate_expiry_seconds",
            "Seconds until an issued certificate expires, by secret and container",
            certificate_expiry.clone(),
        );
        registry.register_collector(Box::new(AgentState {
            rotator,
            started,
            listeners,
        }));
        Metrics {
            registry,
            events,
            fetch,
            injection,
            rotation,
            lease_expiry,
            certificate_expiry,
        }
    }

    /// Counts one audit event (and its duration, where it has one).
    pub fn observe(&self, ev: &serde_json::Map<String, serde_json::Value>) {
        let s = |k: &str| ev.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let (event, status, provider) = (s("event"), s("status"), s("provider"));
        if event.is_empty() {
            return;
        }
        self.events
            .get_or_create(&vec![("event", event.clone()), ("status", status.clone())])
            .inc();
        let Some(ms) = ev.get("duration_ms").and_then(|d| d.as_u64()) else {
            return;
        };
        let hist = match (event.as_str(), status.as_str()) {
            ("secret_fetched", "success") => &self.fetch,
            ("secret_injected", "success") => &self.injection,
            ("rotation_completed", "success") => &self.rotation,
            _ => return,
        };
        hist.get_or_create(&vec![("provider", provider)])
            .observe(ms as f64 / 1000.0);
    }

    /// Follows the audit file at `path` on a background thread, counting every new event.
    pub fn follow(self: &Arc<Self>, path: &Path) {
        let me = self.clone();
        let mut follower = Follower::at_end(path);
        std::thread::spawn(move || {
            loop {
                for ev in follower.poll() {
                    me.observe(&ev);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    }

    /// The exposition text (OpenMetrics).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The agent's own state, read at each scrape.
struct AgentState {
    rotator: Arc<Rotator>,
    started: Instant,
    listeners: Arc<super::listen::ListenerStats>,
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentState").finish_non_exhaustive()
    }
}

impl Collector for AgentState {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.rotator.counters;
        let p = &self.rotator.pool.counters;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let containers = crate::state::load_records(&self.rotator.config().runtime.state_dir).len();
        let gauge = |enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64| {
            let g = ConstGauge::new(v);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
        };
        let counter = |enc: &mut DescriptorEncoder,
                       name: &str,
                       help: &str,
                       samples: &[(Labels, u64)]|
         -> Result<(), std::fmt::Error> {
            let mut fam =
                enc.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
            for (labels, v) in samples {
                ConstCounter::new(*v).encode(fam.encode_family(labels)?)?;
            }
            Ok(())
        };
        gauge(
            &mut enc,
            "dso_managed_containers",
            "Containers with dso-managed secrets (state records).",
            containers as i64,
        )?;
        counter(
            &mut enc,
            "dso_rotations",
            "Re-injections of a secret into a container, by result (and of failures, by class: transient or config).",
            &[
                (
                    vec![("result", "completed".into())],
                    n(&c.rotations_completed),
                ),
                (
                    vec![("result", "failed".into()), ("class", "transient".into())],
                    n(&c.rotations_failed).saturating_sub(n(&c.rotations_failed_config)),
                ),
                (
                    vec![("result", "failed".into()), ("class", "config".into())],
                    n(&c.rotations_failed_config),
                ),
            ],
        )?;
        counter(
            &mut enc,
            "dso_provider_calls",
            "Provider fetches and version checks made by the agent, by result.",
            &[
                (
                    vec![("result", "ok".into())],
                    n(&p.fetches).saturating_sub(n(&p.fetch_errors)),
                ),
                (vec![("result", "error".into())], n(&p.fetch_errors)),
            ],
        )?;
        counter(
            &mut enc,
            "dso_auth_failures",
            "Provider calls refused for credentials or permissions.",
            &[(vec![], n(&p.auth_failures))],
        )?;
        counter(
            &mut enc,
            "dso_agent_fetches_served",
            "Secrets fetched for creates dso-runc handed to the agent.",
            &[(vec![], n(&c.agent_fetches_served))],
        )?;
        counter(
            &mut enc,
            "dso_agent_creates_served",
            "Creates dso-runc handed to the agent, injected and registered by it.",
            &[(vec![], n(&c.agent_creates_served))],
        )?;
        let l = &self.listeners;
        counter(
            &mut enc,
            "dso_webhook_rejections",
            "Webhook requests refused, by whether the refusal was written to the audit trail (rejections beyond the audit rate limit are only counted here).",
            &[
                (
                    vec![("audited", "true".into())],
                    n(&l.webhook_rejected).saturating_sub(n(&l.webhook_rejections_unaudited)),
                ),
                (
                    vec![("audited", "false".into())],
                    n(&l.webhook_rejections_unaudited),
                ),
            ],
        )?;
        counter(
            &mut enc,
            "dso_webhook_replays",
            "Webhook requests refused because the same signed request was used before (409).",
            &[(vec![], n(&l.webhook_replays))],
        )?;
        counter(
            &mut enc,
            "dso_listener_connections_refused",
            "Connections answered busy because the listener's connection cap was reached, by listener.",
            &[
                (
                    vec![("listener", "webhook".into())],
                    n(&l.webhook_connections_refused),
                ),
                (
                    vec![("listener", "control".into())],
                    n(&l.control_connections_refused),
                ),
            ],
        )?;
        counter(
            &mut enc,
            "dso_listener_accept_backoffs",
            "Times accept failed for lack of file descriptors or memory and the listener waited.",
            &[(vec![], n(&l.accept_backoffs))],
        )?;
        counter(
            &mut enc,
            "dso_listener_handler_panics",
            "Requests whose handler panicked (a bug): the connection was dropped, the agent kept serving.",
            &[(vec![], n(&l.handler_panics))],
        )?;
        counter(
            &mut enc,
            "dso_group_rotations_refused",
            "Rotations asked for by the control socket's group and refused by its rate limit.",
            &[(vec![], n(&l.group_rotations_refused))],
        )?;
        let mut up = enc.encode_descriptor(
            "dso_provider_up",
            "1 if the provider's last call succeeded.",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for (name, h) in self.rotator.pool.health() {
            let labels: Labels = vec![("provider", name)];
            ConstGauge::new(i64::from(h.ok)).encode(up.encode_family(&labels)?)?;
        }
        gauge(
            &mut enc,
            "dso_agent_uptime_seconds",
            "Seconds since the agent started.",
            self.started.elapsed().as_secs() as i64,
        )
    }
}

/// Binds the listener (`host:port`).
pub fn bind(listen: &str) -> Result<TcpListener, super::AgentError> {
    TcpListener::bind(listen).map_err(|e| super::AgentError::Metrics(listen.into(), e))
}

/// Serves until the listener fails, one connection at a time (scrapes are rare and small).
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let _ = handle(stream, &metrics);
    }
}

fn handle(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let route = match super::http::read_head(&mut stream, 8192) {
        super::http::HeadRead::Head { head, .. } if head.method == "GET" => {
            head.route().to_string()
        }
        _ => String::new(),
    };
    let (status, ctype, body) = match route.as_str() {
        "/metrics" => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    super::http::respond(&mut stream, status, ctype, "", &body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn events_become_counters_and_histograms() {
        let cfg = Config::from_str_at(
            "providers:\n  l: { type: local, path: /s, key_file: /k }\nruntime: { state_dir: /nonexistent-dso-state }\n",
            Path::new("t.yaml"),
        )
        .unwrap();
        let rotator = Arc::new(Rotator::new(cfg, Default::default()));
        let m = Metrics::new(rotator, Instant::now(), Default::default());
        let ev = |json: &str| match serde_json::from_str(json).unwrap() {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        };
        m.observe(&ev(
            r#"{"event":"secret_fetched","status":"success","provider":"vault","duration_ms":12}"#,
        ));
        m.observe(&ev(
            r#"{"event":"secret_fetched","status":"success","provider":"vault","duration_ms":3}"#,
        ));
        m.observe(&ev(
            r#"{"event":"secret_injected","status":"success","provider":"vault","duration_ms":2}"#,
        ));
        m.observe(&ev(
            r#"{"event":"auth_failed","status":"failure","provider":"vault"}"#,
        ));
        let text = m.render();
        assert!(
            text.contains(r#"dso_audit_events_total{event="secret_fetched",status="success"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"dso_audit_events_total{event="auth_failed",status="failure"} 1"#));
        assert!(
            text.contains(r#"dso_fetch_duration_seconds_count{provider="vault"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"dso_fetch_duration_seconds_sum{provider="vault"} 0.015"#),
            "{text}"
        );
        assert!(text.contains(r#"dso_injection_duration_seconds_count{provider="vault"} 1"#));
        // The expiry gauges are registered; a family shows once it has a sample.
        assert!(!text.contains("dso_lease_expiry_seconds"), "{text}");
        m.lease_expiry
            .get_or_create(&vec![("secret", "db".into())])
            .set(60);
        let text = m.render();
        assert!(
            text.contains(r#"dso_lease_expiry_seconds{secret="db"} 60"#),
            "{text}"
        );
        assert!(text.contains("dso_managed_containers 0"), "{text}");
        assert!(text.contains("dso_agent_fetches_served_total 0"), "{text}");
        assert!(text.contains("dso_agent_creates_served_total 0"), "{text}");
        assert!(
            text.contains(r#"dso_webhook_rejections_total{audited="false"} 0"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

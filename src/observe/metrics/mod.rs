//! Prometheus metrics: PlanB's five metrics exactly (docs/compat/planb.md#metrics), the process collector, and hypache's own
//! operator metrics (prefix `hypache_`), served on `--metrics-address` at `/metrics` only (`endpoint`).
//!
//! Recording costs a few atomic operations per request: the `status_code` children are cached per status so
//! the hot path never hashes a label. Values that already live elsewhere (open tunnels, dropped log lines,
//! in-flight requests, runtime figures) are read when Prometheus scrapes, never pushed.
//!
//! What is counted follows PlanB: every request that gets an access-log line (including hypache's own 400 and
//! 503), and nothing for `__ping__` or WebSocket requests.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, PullingGauge, Registry, TextEncoder,
};

mod collectors;
mod endpoint;
mod per_backend;

pub use endpoint::{bind, serve};

use crate::observe::access_log::AccessEntry;
use crate::policy::PolicyStats;
use crate::upstream::UpstreamError;
use collectors::{PolicyCollector, PullingCounter};

/// Buckets for Redis round trips, which take well under a millisecond on a healthy network.
const REDIS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Why a backend was marked dead: the `cause` label of `hypache_backend_dead_marks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadCause {
    /// The TCP connection failed (refused, reset, unreachable).
    Refused,
    /// The backend's name did not resolve.
    Dns,
    /// The dial timeout expired.
    Timeout,
}

impl DeadCause {
    /// The cause of a connection-level failure; `None` for failures that do not mark a backend dead.
    pub fn of(error: &UpstreamError) -> Option<DeadCause> {
        // Not exhaustive on purpose: new failure kinds (upstream TLS) count as other errors until classified.
        match error {
            UpstreamError::Resolve(_) => Some(DeadCause::Dns),
            UpstreamError::Connect(_) => Some(DeadCause::Refused),
            UpstreamError::ConnectTimeout(_) => Some(DeadCause::Timeout),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            DeadCause::Refused => "refused",
            DeadCause::Dns => "dns",
            DeadCause::Timeout => "timeout",
        }
    }
}

/// Every metric hypache records, in one registry.
pub struct Metrics {
    registry: Registry,
    connections_open: IntGauge,
    request_duration: Histogram,
    backend_duration: Histogram,
    responses: IntCounterVec,
    /// `responses` children by status code, so recording never hashes a label.
    responses_by_status: Box<[OnceLock<IntCounter>]>,
    markdead: IntCounter,
    redis_lookup: Histogram,
    connect_failures: IntCounter,
    failover_retries: IntCounter,
    local_failures: IntCounter,
    dead_marks: IntCounterVec,
    listener_connections: IntCounterVec,
    listener_open: IntGaugeVec,
    /// TLS handshakes that failed on a TLS listener (incremented by the TLS accept path).
    pub tls_handshake_failures: IntCounter,
    /// Idle keep-alive connections parked without hyper's buffers (see `server::PARK_AFTER`).
    connections_parked: IntGauge,
    per_frontend: Option<PerFrontend>,
    per_backend: Option<per_backend::PerBackend>,
}

/// `--metrics-per-frontend`: one series per frontend key, which can be many.
struct PerFrontend {
    responses: IntCounterVec,
    duration: HistogramVec,
}

/// Values read at scrape time from the rest of the process.
pub struct Sources {
    /// Open WebSocket tunnels.
    pub tunnels: Box<dyn Fn() -> f64 + Send + Sync>,
    /// In-flight requests.
    pub inflight: Box<dyn Fn() -> f64 + Send + Sync>,
    /// Lines dropped by the access log and the error log because their queue was full.
    pub dropped_access: Arc<AtomicU64>,
    pub dropped_error: Arc<AtomicU64>,
    /// Lines `--access-log-url` could not ship (queue full, or the URL refused a batch), when it is set.
    pub dropped_shipping: Option<Arc<AtomicU64>>,
    /// The runtimes: the control runtime first, then one per worker thread (see `workers`).
    pub runtimes: Vec<tokio::runtime::Handle>,
    /// What the guards, rate limits and breakers decided.
    pub policy: Arc<PolicyStats>,
    /// Backends the breakers hold out of rotation right now.
    pub breaker_ejected: Box<dyn Fn() -> f64 + Send + Sync>,
    /// The mirrors' series (`hypache_mirror_*`), kept by the mirror module.
    pub mirror: Option<crate::mirror::MirrorMetrics>,
}

impl Metrics {
    /// Build the registry. `per_frontend` adds the frontend-labelled series; `per_backend` the backend-labelled
    /// ones, for at most that many backends.
    pub fn new(per_frontend: bool, per_backend: Option<usize>, sources: Sources) -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        // PlanB's five, with PlanB's names and help strings ("occurencies" is PlanB's spelling; dashboards
        // match the help text too).
        let connections_open = gauge(
            r,
            "planb_reverseproxy_connections_current_open",
            "The current number of open connections excluding hijacked ones.",
        );
        let request_duration = histogram(
            r,
            HistogramOpts::new(
                "planb_reverseproxy_http_request_duration_seconds",
                "The total HTTP request latencies in seconds.",
            ),
        );
        let backend_duration = histogram(
            r,
            HistogramOpts::new(
                "planb_reverseproxy_backend_request_duration_seconds",
                "The backends HTTP request latencies in seconds.",
            ),
        );
        let responses = counter_vec(
            r,
            "planb_reverseproxy_backends_responses_total",
            "The total backends responses by status code.",
            &["status_code"],
        );
        let markdead = counter(
            r,
            "planb_router_backend_markdead_total",
            "The total number of backend mark dead occurencies.",
        );
        register_pulled(r, sources);
        let metrics = Metrics {
            connections_open,
            request_duration,
            backend_duration,
            responses,
            responses_by_status: (0..1000).map(|_| OnceLock::new()).collect(),
            markdead,
            redis_lookup: histogram(
                r,
                HistogramOpts::new(
                    "hypache_redis_lookup_duration_seconds",
                    "Time to look a request's Host up in Redis (every pipeline of the lookup).",
                )
                .buckets(REDIS_BUCKETS.to_vec()),
            ),
            connect_failures: counter(
                r,
                "hypache_upstream_connect_failures_total",
                "Connections to backends that could not be opened (refused, name not resolved, dial timeout).",
            ),
            failover_retries: counter(
                r,
                "hypache_failover_retries_total",
                "Requests sent to another backend after the chosen one could not be connected to.",
            ),
            local_failures: counter(
                r,
                "hypache_local_failures_total",
                "Requests answered 503 because the proxy itself ran out of descriptors, buffers, memory or \
                 local ports while dialing a backend (never counted against the backend).",
            ),
            dead_marks: counter_vec(
                r,
                "hypache_backend_dead_marks_total",
                "Passive dead marks by cause (refused, dns, timeout).",
                &["cause"],
            ),
            listener_connections: counter_vec(
                r,
                "hypache_connections_total",
                "Client connections accepted, by listener (http, tls, sni).",
                &["listener"],
            ),
            listener_open: gauge_vec(
                r,
                "hypache_connections_open",
                "Client connections open, by listener (http, tls, sni), WebSocket tunnels excluded.",
                &["listener"],
            ),
            connections_parked: gauge(
                r,
                "hypache_connections_parked",
                "Idle HTTP/1 keep-alive connections parked: open, but holding no request buffers.",
            ),
            tls_handshake_failures: counter(
                r,
                "hypache_tls_handshake_failures_total",
                "TLS handshakes with clients that failed.",
            ),
            per_frontend: per_frontend.then(|| PerFrontend::register(r)),
            per_backend: per_backend.map(|limit| per_backend::PerBackend::register(r, limit)),
            registry,
        };
        for cause in [DeadCause::Refused, DeadCause::Dns, DeadCause::Timeout] {
            metrics.dead_marks.with_label_values(&[cause.label()]);
        }
        metrics
    }

    /// Whether `--metrics-per-frontend` series are kept (they read the access entry's frontend key).
    pub fn per_frontend(&self) -> bool {
        self.per_frontend.is_some()
    }

    /// Whether the backend-labelled series are on (the access entry then carries the backend URL).
    pub fn per_backend(&self) -> bool {
        self.per_backend.is_some()
    }

    /// A request got its access-log line: PlanB's two histograms and the status counter.
    pub fn request_logged(&self, entry: &AccessEntry) {
        let total = entry.total.as_secs_f64();
        self.request_duration.observe(total);
        self.backend_duration.observe(entry.backend.as_secs_f64());
        match self.responses_by_status.get(entry.status as usize) {
            Some(slot) => slot
                .get_or_init(|| {
                    self.responses
                        .with_label_values(&[entry.status.to_string().as_str()])
                })
                .inc(),
            None => self
                .responses
                .with_label_values(&[entry.status.to_string().as_str()])
                .inc(),
        }
        if let Some(per) = self
            .per_backend
            .as_ref()
            .filter(|_| !entry.backend_url.is_empty())
        {
            per.record(
                &entry.backend_url,
                entry.status,
                entry.backend.as_secs_f64(),
            );
        }
        if let Some(per) = &self.per_frontend {
            let status = entry.status.to_string();
            per.responses
                .with_label_values(&[entry.backend_key.as_str(), status.as_str()])
                .inc();
            per.duration
                .with_label_values(&[entry.backend_key.as_str()])
                .observe(total);
        }
    }

    /// A passive dead mark was decided (counted even if the Redis write then fails, as PlanB does).
    pub fn mark_dead(&self, cause: Option<DeadCause>) {
        self.markdead.inc();
        if let Some(cause) = cause {
            self.dead_marks.with_label_values(&[cause.label()]).inc();
        }
    }

    /// A connection to a backend could not be opened.
    pub fn connect_failed(&self) {
        self.connect_failures.inc();
    }

    /// The request moves on to the next live backend.
    /// A request failed on the proxy's own exhaustion (see `UpstreamError::Local`).
    pub fn local_failure(&self) {
        self.local_failures.inc();
    }

    pub fn failover(&self) {
        self.failover_retries.inc();
    }

    /// How long a Host lookup in Redis took.
    pub fn redis_lookup(&self, took: Duration) {
        self.redis_lookup.observe(took.as_secs_f64());
    }

    /// A client connection was accepted on `listener` (`http`, `https`); dropping the guard counts it closed.
    /// Drop it when the connection closes or is handed over to a tunnel (PlanB's "hijack").
    pub fn connection_opened(&self, listener: &'static str) -> ConnectionGuard {
        self.listener_connections
            .with_label_values(&[listener])
            .inc();
        ConnectionGuard {
            _planb: GaugeGuard::hold(&self.connections_open),
            _listener: GaugeGuard::hold(&self.listener_open.with_label_values(&[listener])),
        }
    }

    /// An idle HTTP/1 connection is parked until the guard is dropped.
    pub fn connection_parked(&self) -> GaugeGuard {
        GaugeGuard::hold(&self.connections_parked)
    }

    /// Client connections open (PlanB's gauge).
    pub fn connections_open(&self) -> i64 {
        self.connections_open.get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let encoder = TextEncoder::new();
        let _ = encoder.encode(&self.registry.gather(), &mut out);
        out
    }
}

/// Series read when Prometheus scrapes: open tunnels, in-flight requests, dropped log lines, policy decisions,
/// runtime figures and the process collector.
fn register_pulled(r: &Registry, sources: Sources) {
    let reg = |c: Box<dyn Collector>| r.register(c).expect("metric names are unique");
    let pulled = |name: &str, help: &str, value: Box<dyn Fn() -> f64 + Send + Sync>| {
        reg(Box::new(PullingGauge::new(name, help, value).unwrap()));
    };
    pulled(
        "hypache_websocket_tunnels_open",
        "WebSocket tunnels open.",
        sources.tunnels,
    );
    pulled(
        "hypache_requests_in_flight",
        "Requests between their head being read and their response being written out.",
        sources.inflight,
    );
    reg(Box::new(PullingCounter::new(
        "hypache_log_lines_dropped_total",
        "Log lines dropped, by log: access and error (their queue of 10,000 was full), shipping \
         (--access-log-url: its queue was full or the URL did not take a batch).",
        "log",
        [
            ("access", Some(sources.dropped_access)),
            ("error", Some(sources.dropped_error)),
            ("shipping", sources.dropped_shipping),
        ]
        .into_iter()
        .filter_map(|(log, count)| Some((log, count?)))
        .collect(),
    )));
    reg(Box::new(PolicyCollector::new(
        sources.policy,
        sources.breaker_ejected,
    )));
    if let Some(mirror) = sources.mirror {
        reg(Box::new(mirror.requests));
        reg(Box::new(mirror.dropped));
        reg(Box::new(mirror.errors));
        reg(Box::new(mirror.timeouts));
        reg(Box::new(mirror.mismatches));
        reg(Box::new(mirror.latency));
    }
    let workers = sources.runtimes.len().saturating_sub(1) as f64;
    pulled(
        "hypache_runtime_workers",
        "Worker threads serving connections, each with its own event loop (--workers).",
        Box::new(move || workers),
    );
    let runtimes = sources.runtimes;
    pulled(
        "hypache_runtime_alive_tasks",
        "Tasks alive on the worker threads and the control runtime.",
        Box::new(move || {
            runtimes
                .iter()
                .map(|r| r.metrics().num_alive_tasks() as f64)
                .sum()
        }),
    );
    #[cfg(target_os = "linux")]
    reg(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ));
}

impl PerFrontend {
    fn register(r: &Registry) -> PerFrontend {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "hypache_frontend_request_duration_seconds",
                "Time until response headers by frontend key (--metrics-per-frontend).",
            ),
            &["frontend"],
        )
        .unwrap();
        let responses = counter_vec(
            r,
            "hypache_frontend_responses_total",
            "Responses by frontend key and status code (--metrics-per-frontend).",
            &["frontend", "status_code"],
        );
        r.register(Box::new(duration.clone()))
            .expect("metric names are unique");
        PerFrontend {
            responses,
            duration,
        }
    }
}

/// A counter, registered.
fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap();
    r.register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

/// A gauge, registered.
fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap();
    r.register(Box::new(g.clone()))
        .expect("metric names are unique");
    g
}

/// A histogram, registered.
fn histogram(r: &Registry, opts: HistogramOpts) -> Histogram {
    let h = Histogram::with_opts(opts).unwrap();
    r.register(Box::new(h.clone()))
        .expect("metric names are unique");
    h
}

/// A labelled counter, registered.
fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap();
    r.register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

/// A labelled gauge, registered.
fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).unwrap();
    r.register(Box::new(g.clone()))
        .expect("metric names are unique");
    g
}

/// Counts one open connection until dropped.
pub struct ConnectionGuard {
    _planb: GaugeGuard,
    _listener: GaugeGuard,
}

/// One unit of a gauge, given back when dropped.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    fn hold(gauge: &IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::GuardReason;

    fn sources() -> Sources {
        Sources {
            tunnels: Box::new(|| 2.0),
            inflight: Box::new(|| 0.0),
            dropped_access: Arc::new(AtomicU64::new(5)),
            dropped_error: Arc::new(AtomicU64::new(0)),
            dropped_shipping: None,
            runtimes: Vec::new(),
            policy: Arc::default(),
            breaker_ejected: Box::new(|| 1.0),
            mirror: None,
        }
    }

    #[test]
    fn renders_planb_names_and_pulled_values() {
        let metrics = Metrics::new(true, None, sources());
        let entry = AccessEntry {
            status: 200,
            backend_key: "a.com".into(),
            total: Duration::from_millis(3),
            ..AccessEntry::default()
        };
        metrics.request_logged(&entry);
        metrics.mark_dead(Some(DeadCause::Dns));
        let guard = metrics.connection_opened("http");
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains("planb_reverseproxy_backends_responses_total{status_code=\"200\"} 1\n")
        );
        assert!(text.contains("planb_router_backend_markdead_total 1\n"));
        assert!(text.contains("hypache_backend_dead_marks_total{cause=\"dns\"} 1\n"));
        assert!(text.contains("planb_reverseproxy_connections_current_open 1\n"));
        assert!(text.contains("hypache_websocket_tunnels_open 2\n"));
        assert!(text.contains("hypache_log_lines_dropped_total{log=\"access\"} 5\n"));
        assert!(text.contains(
            "hypache_frontend_responses_total{frontend=\"a.com\",status_code=\"200\"} 1\n"
        ));
        // The policy series exist from the start, every label value at 0.
        assert!(text.contains("# TYPE hypache_guard_rejects_total counter\n"));
        for reason in GuardReason::ALL {
            let series = format!(
                "hypache_guard_rejects_total{{reason=\"{}\"}} 0\n",
                reason.label()
            );
            assert!(text.contains(&series), "{series}");
        }
        assert!(text.contains("hypache_policy_config_errors_total{feature=\"breaker\"} 0\n"));
        assert!(text.contains("hypache_rate_limited_total 0\n"));
        assert!(text.contains("# TYPE hypache_breaker_backends_ejected gauge\n"));
        assert!(text.contains("hypache_breaker_backends_ejected 1\n"));
        drop(guard);
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(text.contains("planb_reverseproxy_connections_current_open 0\n"));
    }
}

//! Prometheus metrics: PlanB's five metrics exactly (spec §10), the process collector, and hypache's own
//! operator metrics (prefix `hypache_`), served on `--metrics-address` at `/metrics` only.
//!
//! Recording costs a few atomic operations per request: the `status_code` children are cached per status so
//! the hot path never hashes a label. Values that already live elsewhere (open tunnels, dropped log lines,
//! in-flight requests, runtime figures) are read when Prometheus scrapes, never pushed.
//!
//! What is counted follows PlanB: every request that gets an access-log line (including hypache's own 400 and
//! 503), and nothing for `__ping__` or WebSocket requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, PullingGauge, Registry, TextEncoder,
};
use tokio::net::TcpListener;

use crate::observe::access_log::AccessEntry;
use crate::policy::{Feature, GuardReason, PolicyStats};
use crate::upstream::UpstreamError;

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
    /// The runtimes: the control runtime first, then one per worker thread (see `workers`).
    pub runtimes: Vec<tokio::runtime::Handle>,
    /// What the guards, rate limits and breakers decided.
    pub policy: Arc<PolicyStats>,
    /// Backends the breakers hold out of rotation right now.
    pub breaker_ejected: Box<dyn Fn() -> f64 + Send + Sync>,
}

impl Metrics {
    /// Build the registry. `per_frontend` adds the frontend-labelled series.
    pub fn new(per_frontend: bool, sources: Sources) -> Metrics {
        let registry = Registry::new();
        let reg = |c: Box<dyn Collector>| registry.register(c).expect("metric names are unique");

        let connections_open = IntGauge::new(
            "planb_reverseproxy_connections_current_open",
            "The current number of open connections excluding hijacked ones.",
        )
        .unwrap();
        let request_duration = Histogram::with_opts(HistogramOpts::new(
            "planb_reverseproxy_http_request_duration_seconds",
            "The total HTTP request latencies in seconds.",
        ))
        .unwrap();
        let backend_duration = Histogram::with_opts(HistogramOpts::new(
            "planb_reverseproxy_backend_request_duration_seconds",
            "The backends HTTP request latencies in seconds.",
        ))
        .unwrap();
        let responses = IntCounterVec::new(
            Opts::new(
                "planb_reverseproxy_backends_responses_total",
                "The total backends responses by status code.",
            ),
            &["status_code"],
        )
        .unwrap();
        // "occurencies" is PlanB's spelling; dashboards match the help text too.
        let markdead = IntCounter::new(
            "planb_router_backend_markdead_total",
            "The total number of backend mark dead occurencies.",
        )
        .unwrap();
        reg(Box::new(connections_open.clone()));
        reg(Box::new(request_duration.clone()));
        reg(Box::new(backend_duration.clone()));
        reg(Box::new(responses.clone()));
        reg(Box::new(markdead.clone()));

        let redis_lookup = Histogram::with_opts(
            HistogramOpts::new(
                "hypache_redis_lookup_duration_seconds",
                "Time to look a request's Host up in Redis (every pipeline of the lookup).",
            )
            .buckets(REDIS_BUCKETS.to_vec()),
        )
        .unwrap();
        let connect_failures = IntCounter::new(
            "hypache_upstream_connect_failures_total",
            "Connections to backends that could not be opened (refused, name not resolved, dial timeout).",
        )
        .unwrap();
        let failover_retries = IntCounter::new(
            "hypache_failover_retries_total",
            "Requests sent to another backend after the chosen one could not be connected to.",
        )
        .unwrap();
        let local_failures = IntCounter::new(
            "hypache_local_failures_total",
            "Requests answered 503 because the proxy itself ran out of descriptors, buffers, memory or local \
             ports while dialing a backend (never counted against the backend).",
        )
        .unwrap();
        let dead_marks = IntCounterVec::new(
            Opts::new(
                "hypache_backend_dead_marks_total",
                "Passive dead marks by cause (refused, dns, timeout).",
            ),
            &["cause"],
        )
        .unwrap();
        for cause in [DeadCause::Refused, DeadCause::Dns, DeadCause::Timeout] {
            dead_marks.with_label_values(&[cause.label()]);
        }
        let listener_connections = IntCounterVec::new(
            Opts::new(
                "hypache_connections_total",
                "Client connections accepted, by listener (http, https).",
            ),
            &["listener"],
        )
        .unwrap();
        let listener_open = IntGaugeVec::new(
            Opts::new(
                "hypache_connections_open",
                "Client connections open, by listener (http, https), WebSocket tunnels excluded.",
            ),
            &["listener"],
        )
        .unwrap();
        let tls_handshake_failures = IntCounter::new(
            "hypache_tls_handshake_failures_total",
            "TLS handshakes with clients that failed.",
        )
        .unwrap();
        reg(Box::new(redis_lookup.clone()));
        reg(Box::new(connect_failures.clone()));
        reg(Box::new(failover_retries.clone()));
        reg(Box::new(local_failures.clone()));
        reg(Box::new(dead_marks.clone()));
        reg(Box::new(listener_connections.clone()));
        reg(Box::new(listener_open.clone()));
        let connections_parked = IntGauge::new(
            "hypache_connections_parked",
            "Idle HTTP/1 keep-alive connections parked: open, but holding no request buffers.",
        )
        .unwrap();
        reg(Box::new(connections_parked.clone()));
        reg(Box::new(tls_handshake_failures.clone()));

        reg(Box::new(
            PullingGauge::new(
                "hypache_websocket_tunnels_open",
                "WebSocket tunnels open.",
                sources.tunnels,
            )
            .unwrap(),
        ));
        reg(Box::new(
            PullingGauge::new(
                "hypache_requests_in_flight",
                "Requests between their head being read and their response being written out.",
                sources.inflight,
            )
            .unwrap(),
        ));
        reg(Box::new(PullingCounter::new(
            "hypache_log_lines_dropped_total",
            "Log lines dropped because the log's queue of 10,000 was full, by log (access, error).",
            "log",
            vec![
                ("access", sources.dropped_access),
                ("error", sources.dropped_error),
            ],
        )));
        reg(Box::new(PolicyCollector::new(
            sources.policy,
            sources.breaker_ejected,
        )));
        let workers = sources.runtimes.len().saturating_sub(1) as f64;
        reg(Box::new(
            PullingGauge::new(
                "hypache_runtime_workers",
                "Worker threads serving connections, each with its own event loop (--workers).",
                Box::new(move || workers),
            )
            .unwrap(),
        ));
        let runtimes = sources.runtimes.clone();
        reg(Box::new(
            PullingGauge::new(
                "hypache_runtime_alive_tasks",
                "Tasks alive on the worker threads and the control runtime.",
                Box::new(move || {
                    runtimes
                        .iter()
                        .map(|r| r.metrics().num_alive_tasks() as f64)
                        .sum()
                }),
            )
            .unwrap(),
        ));
        #[cfg(target_os = "linux")]
        reg(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));

        let per_frontend = per_frontend.then(|| {
            let responses = IntCounterVec::new(
                Opts::new(
                    "hypache_frontend_responses_total",
                    "Responses by frontend key and status code (--metrics-per-frontend).",
                ),
                &["frontend", "status_code"],
            )
            .unwrap();
            let duration = HistogramVec::new(
                HistogramOpts::new(
                    "hypache_frontend_request_duration_seconds",
                    "Time until response headers by frontend key (--metrics-per-frontend).",
                ),
                &["frontend"],
            )
            .unwrap();
            reg(Box::new(responses.clone()));
            reg(Box::new(duration.clone()));
            PerFrontend {
                responses,
                duration,
            }
        });

        Metrics {
            registry,
            connections_open,
            request_duration,
            backend_duration,
            responses,
            responses_by_status: (0..1000).map(|_| OnceLock::new()).collect(),
            markdead,
            redis_lookup,
            connect_failures,
            failover_retries,
            local_failures,
            dead_marks,
            listener_connections,
            listener_open,
            tls_handshake_failures,
            connections_parked,
            per_frontend,
        }
    }

    /// Whether `--metrics-per-frontend` series are kept (they read the access entry's frontend key).
    pub fn per_frontend(&self) -> bool {
        self.per_frontend.is_some()
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

/// A counter whose values live in atomics owned by someone else (the log writers), one per label value.
struct PullingCounter {
    desc: Desc,
    label: &'static str,
    values: Vec<(&'static str, Arc<AtomicU64>)>,
}

impl PullingCounter {
    fn new(
        name: &str,
        help: &str,
        label: &'static str,
        values: Vec<(&'static str, Arc<AtomicU64>)>,
    ) -> PullingCounter {
        PullingCounter {
            desc: Desc::new(name.into(), help.into(), vec![label.into()], HashMap::new()).unwrap(),
            label,
            values,
        }
    }
}

impl Collector for PullingCounter {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let values = self
            .values
            .iter()
            .map(|(value, count)| (Some(*value), count.load(Ordering::Relaxed) as f64))
            .collect();
        vec![family(
            &self.desc.fq_name,
            &self.desc.help,
            MetricType::COUNTER,
            Some(self.label),
            values,
        )]
    }
}

/// The policy layer's decisions, read from [`PolicyStats`] when Prometheus scrapes (the request path only bumps
/// atomics). Every labelled series is present from the start, at 0, so a rate over it works before the first
/// rejection.
struct PolicyCollector {
    stats: Arc<PolicyStats>,
    ejected: Box<dyn Fn() -> f64 + Send + Sync>,
    descs: Vec<Desc>,
}

/// Name, help, label (if any) of each family [`PolicyCollector`] writes, in the order of its `collect`.
const POLICY_FAMILIES: [(&str, &str, Option<&str>); 8] = [
    (
        "hypache_guard_rejects_total",
        "Requests refused by a guard, by reason (missing_parameters, bad_signature, bad_timestamp, \
         replayed_nonce, misconfigured, body_too_large).",
        Some("reason"),
    ),
    (
        "hypache_rate_limited_total",
        "Requests refused by a rate limit (429, or 403 with compat entree).",
        None,
    ),
    (
        "hypache_ratelimit_errors_total",
        "Global rate-limit checks Redis could not answer; the requests were let through.",
        None,
    ),
    (
        "hypache_breaker_ejections_total",
        "Backends ejected by a circuit breaker (after failures, or after a failed half-open probe).",
        None,
    ),
    (
        "hypache_breaker_probes_total",
        "Half-open probes: requests let through to an ejected backend whose cooldown is over.",
        None,
    ),
    (
        "hypache_breaker_recoveries_total",
        "Ejected backends back in rotation after a successful probe.",
        None,
    ),
    (
        "hypache_breaker_backends_ejected",
        "Backends held out of rotation by circuit breakers right now (open, or half-open awaiting a probe).",
        None,
    ),
    (
        "hypache_policy_config_errors_total",
        "Requests that met a malformed policy hash, by feature (guard, ratelimit, breaker).",
        Some("feature"),
    ),
];

impl PolicyCollector {
    fn new(stats: Arc<PolicyStats>, ejected: Box<dyn Fn() -> f64 + Send + Sync>) -> Self {
        let descs = POLICY_FAMILIES
            .iter()
            .map(|(name, help, label)| {
                let labels = label.iter().map(|l| l.to_string()).collect();
                Desc::new(name.to_string(), help.to_string(), labels, HashMap::new()).unwrap()
            })
            .collect();
        PolicyCollector {
            stats,
            ejected,
            descs,
        }
    }
}

impl Collector for PolicyCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = &self.stats;
        let guard = GuardReason::ALL
            .iter()
            .map(|r| (Some(r.label()), s.guard_rejects(*r) as f64))
            .collect();
        let config = Feature::ALL
            .iter()
            .map(|f| (Some(f.label()), s.config_errors(*f) as f64))
            .collect();
        let one = |v: u64| vec![(None, v as f64)];
        let values: [Vec<(Option<&str>, f64)>; 8] = [
            guard,
            one(s.rate_limited()),
            one(s.ratelimit_errors()),
            one(s.breaker_ejections()),
            one(s.breaker_probes()),
            one(s.breaker_recoveries()),
            vec![(None, (self.ejected)())],
            config,
        ];
        POLICY_FAMILIES
            .iter()
            .zip(values)
            .map(|((name, help, label), values)| {
                let kind = if name.ends_with("_total") {
                    MetricType::COUNTER
                } else {
                    MetricType::GAUGE
                };
                family(name, help, kind, *label, values)
            })
            .collect()
    }
}

/// One metric family of counters or gauges, one series per value (labelled with `label` when given).
fn family(
    name: &str,
    help: &str,
    kind: MetricType,
    label: Option<&str>,
    values: Vec<(Option<&str>, f64)>,
) -> MetricFamily {
    let metrics = values
        .into_iter()
        .map(|(label_value, value)| {
            let pairs = match (label, label_value) {
                (Some(label), Some(label_value)) => {
                    let mut pair = proto::LabelPair::default();
                    pair.set_name(label.to_string());
                    pair.set_value(label_value.to_string());
                    vec![pair]
                }
                _ => Vec::new(),
            };
            let mut metric = proto::Metric::from_label(pairs);
            if kind == MetricType::COUNTER {
                let mut counter = proto::Counter::default();
                counter.set_value(value);
                metric.set_counter(counter);
            } else {
                let mut gauge = proto::Gauge::default();
                gauge.set_value(value);
                metric.set_gauge(gauge);
            }
            metric
        })
        .collect();
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// Bind the metrics listener (a failure is fatal at start-up, as in PlanB).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("listen tcp {addr}: {e}"))
}

/// Serve `/metrics` (and 404 for any other path) on `listener` for as long as the task runs.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("metrics listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &metrics)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        // Go's http.NotFound, as PlanB's mux answers.
        let mut resp = Response::new(Full::new(Bytes::from_static(b"404 page not found\n")));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return resp;
    }
    let mut resp = Response::new(Full::new(Bytes::from(metrics.render())));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> Sources {
        Sources {
            tunnels: Box::new(|| 2.0),
            inflight: Box::new(|| 0.0),
            dropped_access: Arc::new(AtomicU64::new(5)),
            dropped_error: Arc::new(AtomicU64::new(0)),
            runtimes: Vec::new(),
            policy: Arc::default(),
            breaker_ejected: Box::new(|| 1.0),
        }
    }

    #[test]
    fn renders_planb_names_and_pulled_values() {
        let metrics = Metrics::new(true, sources());
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

//! Prometheus metrics on `--metrics-address` (docs/compat/planb.md#metrics) and hypache's operator metrics.

mod support;

use std::net::TcpListener;
use support::metrics::{fetch, scrape};
use support::*;

const RESPONSES: &str = "planb_reverseproxy_backends_responses_total";
const MARKDEAD: &str = "planb_router_backend_markdead_total";
const OPEN: &str = "planb_reverseproxy_connections_current_open";
const TOTAL: &str = "planb_reverseproxy_http_request_duration_seconds";
const BACKEND: &str = "planb_reverseproxy_backend_request_duration_seconds";

fn start(redis: &RedisServer, extra: &[&str]) -> Proxy {
    let mut args = vec!["--metrics-address", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Proxy::start(redis, &args)
}

#[test]
fn planb_metrics_have_planb_names_types_and_help_strings() {
    let redis = RedisServer::start();
    let proxy = start(&redis, &[]);
    // Labelled series only show once they have a value; one request makes them appear.
    let backend = Backend::named("B");
    redis.set_frontend("a.com", &[&backend.url()]);
    get(proxy.addr(), "a.com", "/", &[]);
    let text = scrape(proxy.metrics_addr()).text;
    let expected = [
        "# HELP planb_reverseproxy_connections_current_open The current number of open connections excluding hijacked ones.\n# TYPE planb_reverseproxy_connections_current_open gauge\n",
        "# HELP planb_reverseproxy_http_request_duration_seconds The total HTTP request latencies in seconds.\n# TYPE planb_reverseproxy_http_request_duration_seconds histogram\n",
        "# HELP planb_reverseproxy_backend_request_duration_seconds The backends HTTP request latencies in seconds.\n# TYPE planb_reverseproxy_backend_request_duration_seconds histogram\n",
        "# HELP planb_reverseproxy_backends_responses_total The total backends responses by status code.\n# TYPE planb_reverseproxy_backends_responses_total counter\n",
        "# HELP planb_router_backend_markdead_total The total number of backend mark dead occurencies.\n# TYPE planb_router_backend_markdead_total counter\n",
    ];
    for block in expected {
        assert!(text.contains(block), "missing {block:?} in:\n{text}");
    }
    // client_golang's default buckets.
    for le in [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
    ] {
        for histogram in [TOTAL, BACKEND] {
            let series = format!("{histogram}_bucket{{le=\"{le}\"}}");
            assert!(text.contains(&series), "missing {series} in:\n{text}");
        }
    }
    // The process collector.
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "missing {name} in:\n{text}"
        );
    }
}

#[test]
fn known_traffic_gives_known_values() {
    let redis = RedisServer::start();
    let proxy = start(&redis, &[]);
    let backend = Backend::named("B");
    redis.set_frontend("a.com", &[&backend.url()]);
    for _ in 0..3 {
        assert_eq!(get(proxy.addr(), "a.com", "/", &[]).status, 200);
    }
    assert_eq!(get(proxy.addr(), "unknown.com", "/", &[]).status, 400);
    // Not counted: __ping__ and WebSocket requests (this one fails before a tunnel: 502).
    assert_eq!(get(proxy.addr(), "__ping__", "/", &[]).status, 200);
    let ws = get(
        proxy.addr(),
        "unknown.com",
        "/ws",
        &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
    );
    assert_eq!(ws.status, 502);

    let m = scrape(proxy.metrics_addr());
    assert_eq!(m.value(&format!("{RESPONSES}{{status_code=\"200\"}}")), 3.0);
    assert_eq!(m.value(&format!("{RESPONSES}{{status_code=\"400\"}}")), 1.0);
    assert!(
        !m.has(&format!("{RESPONSES}{{status_code=\"502\"}}")),
        "{}",
        m.text
    );
    assert_eq!(m.value(&format!("{TOTAL}_count")), 4.0);
    assert_eq!(m.value(&format!("{BACKEND}_count")), 4.0);
    assert_eq!(m.value(&format!("{TOTAL}_bucket{{le=\"+Inf\"}}")), 4.0);
    assert_eq!(m.value(MARKDEAD), 0.0);
    assert_eq!(m.value("hypache_redis_lookup_duration_seconds_count"), 4.0);
    // Every connection above was closed after its response (Connection: close).
    assert_eventually(SOON, "the connections gauge back at 0", || {
        scrape(proxy.metrics_addr()).value(OPEN) == 0.0
    });
    let m = scrape(proxy.metrics_addr());
    assert_eq!(m.value("hypache_connections_total{listener=\"http\"}"), 6.0);
    assert_eq!(m.value("hypache_connections_open{listener=\"http\"}"), 0.0);
    assert_eq!(
        m.value("hypache_log_lines_dropped_total{log=\"access\"}"),
        0.0
    );
    assert_eq!(m.value("hypache_tls_handshake_failures_total"), 0.0);
    assert!(!m.text.contains("hypache_frontend_"), "{}", m.text);
}

#[test]
fn synthesized_503_is_counted() {
    let redis = RedisServer::start();
    let proxy = start(&redis, &[]);
    let backend = Backend::named("B");
    redis.set_frontend("a.com", &[&backend.url()]);
    let _: i64 = redis.query(&["SADD", "dead:a.com", "0"]);
    assert_eq!(get(proxy.addr(), "a.com", "/", &[]).status, 503);
    let m = scrape(proxy.metrics_addr());
    assert_eq!(m.value(&format!("{RESPONSES}{{status_code=\"503\"}}")), 1.0);
    assert_eq!(m.value(&format!("{BACKEND}_sum")), 0.0);
}

#[test]
fn the_connections_gauge_follows_open_connections() {
    let redis = RedisServer::start();
    let proxy = start(&redis, &[]);
    let backend = Backend::named("B");
    redis.set_frontend("a.com", &[&backend.url()]);
    let mut conns: Vec<ClientConn> = (0..2).map(|_| ClientConn::connect(proxy.addr())).collect();
    for conn in &mut conns {
        conn.send(&build_request(
            "GET",
            Some("a.com"),
            "/",
            &[("Connection", "keep-alive")],
            b"",
        ))
        .unwrap();
        assert_eq!(conn.read_response().status, 200);
    }
    assert_eventually(SOON, "2 open connections", || {
        scrape(proxy.metrics_addr()).value(OPEN) == 2.0
    });
    drop(conns.pop());
    assert_eventually(SOON, "1 open connection", || {
        scrape(proxy.metrics_addr()).value(OPEN) == 1.0
    });
    drop(conns);
    assert_eventually(SOON, "no open connection", || {
        scrape(proxy.metrics_addr()).value(OPEN) == 0.0
    });
}

#[test]
fn a_refused_backend_is_counted_as_dead_mark_connect_failure_and_failover() {
    let redis = RedisServer::start();
    let proxy = start(&redis, &[]);
    let live = Backend::named("live");
    redis.set_frontend("a.com", &[&refused_url(), &live.url()]);
    let resp = get(proxy.addr(), "a.com", "/", &[]);
    assert_eq!(resp.body_str(), "live");
    let m = scrape(proxy.metrics_addr());
    assert_eq!(m.value(MARKDEAD), 1.0);
    assert_eq!(
        m.value("hypache_backend_dead_marks_total{cause=\"refused\"}"),
        1.0
    );
    assert_eq!(
        m.value("hypache_backend_dead_marks_total{cause=\"dns\"}"),
        0.0
    );
    assert_eq!(m.value("hypache_upstream_connect_failures_total"), 1.0);
    assert_eq!(m.value("hypache_failover_retries_total"), 1.0);
    assert_eq!(m.value(&format!("{RESPONSES}{{status_code=\"200\"}}")), 1.0);
}

#[test]
fn markdead_counts_even_when_the_redis_write_fails() {
    let redis = RedisServer::start();
    let mut write = RedisServer::start();
    let port = write.port().to_string();
    let proxy = start(
        &redis,
        &[
            "--write-redis-host",
            "127.0.0.1",
            "--write-redis-port",
            &port,
            "--no-failover",
        ],
    );
    write.stop();
    redis.set_frontend("a.com", &[&refused_url()]);
    assert_eq!(get(proxy.addr(), "a.com", "/", &[]).status, 503);
    let m = scrape(proxy.metrics_addr());
    assert_eq!(m.value(MARKDEAD), 1.0);
    assert_eq!(m.value(&format!("{RESPONSES}{{status_code=\"503\"}}")), 1.0);
    assert_eq!(m.value("hypache_failover_retries_total"), 0.0);
}

#[test]
fn policy_decisions_are_counted() {
    let redis = RedisServer::start();
    let proxy = start(&redis, &[]);
    let ok = Backend::named("ok");
    let broken = Backend::start(|_| Reply::text(500, "broken"));
    let hset = |key: &str, fields: &[&str]| {
        let mut args = vec!["HSET", key];
        args.extend_from_slice(fields);
        redis.query::<i64>(&args);
    };
    let status =
        |host: &str, headers: &[(&str, &str)]| get(proxy.addr(), host, "/", headers).status;
    // Before anything happened every series is there, at 0.
    let m = scrape(proxy.metrics_addr());
    assert!(
        m.has("hypache_guard_rejects_total{reason=\"bad_signature\"}"),
        "{}",
        m.text
    );
    assert!(m.has("hypache_breaker_backends_ejected"), "{}", m.text);

    // Guard: two requests without headers, one with a wrong signature, one over max_body.
    redis.set_frontend("guard.com", &[&ok.url()]);
    hset(
        "guard:guard.com",
        &["secret", "k", "sign_body", "1", "max_body", "4"],
    );
    assert_eq!(status("guard.com", &[]), 403);
    assert_eq!(status("guard.com", &[]), 403);
    let bad = [("X-Sign", "00"), ("X-Timestamp", "1"), ("X-Nonce", "n")];
    let resp = request(proxy.addr(), "POST", "guard.com", "/", &bad, b"0123456789");
    assert_eq!(resp.status, 413);
    assert_eq!(status("guard.com", &bad), 403);
    // A malformed guard: a rejection, and a configuration error.
    redis.set_frontend("broken-guard.com", &[&ok.url()]);
    hset("guard:broken-guard.com", &["mode", "md5", "secret", "k"]);
    assert_eq!(status("broken-guard.com", &[]), 403);

    // Rate limit: a burst of one, then two refused.
    redis.set_frontend("limited.com", &[&ok.url()]);
    hset(
        "ratelimit:limited.com",
        &["rate", "1", "period", "1m", "burst", "1"],
    );
    assert_eq!(status("limited.com", &[]), 200);
    assert_eq!(status("limited.com", &[]), 429);
    assert_eq!(status("limited.com", &[]), 429);
    // A malformed limit, met twice; a global limit Redis cannot run.
    redis.set_frontend("bad-limit.com", &[&ok.url()]);
    hset("ratelimit:bad-limit.com", &["rate", "lots"]);
    assert_eq!(status("bad-limit.com", &[]), 200);
    assert_eq!(status("bad-limit.com", &[]), 200);
    redis.set_frontend("global.com", &[&ok.url()]);
    hset("ratelimit:global.com", &["rate", "1", "scope", "global"]);
    redis.query::<i64>(&["RPUSH", "ratelimit-state:global.com:127.0.0.1", "x"]);
    assert_eq!(status("global.com", &[]), 200);

    // Breaker: one failure ejects the broken backend of two.
    redis.set_frontend("breaker.com", &[&broken.url(), &ok.url()]);
    hset(
        "breaker:breaker.com",
        &[
            "failures",
            "1",
            "cooldown",
            "1m",
            "max_ejection_percent",
            "50",
        ],
    );
    assert_eq!(status("breaker.com", &[]), 500);
    assert_eq!(status("breaker.com", &[]), 200);
    assert_eq!(status("breaker.com", &[]), 200);

    let m = scrape(proxy.metrics_addr());
    let guard = |reason: &str| {
        m.value(&format!(
            "hypache_guard_rejects_total{{reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(guard("missing_parameters"), 2.0, "{}", m.text);
    assert_eq!(guard("bad_signature"), 1.0);
    assert_eq!(guard("body_too_large"), 1.0);
    assert_eq!(guard("misconfigured"), 1.0);
    assert_eq!(guard("bad_timestamp"), 0.0);
    assert_eq!(guard("replayed_nonce"), 0.0);
    let config = |feature: &str| {
        m.value(&format!(
            "hypache_policy_config_errors_total{{feature=\"{feature}\"}}"
        ))
    };
    assert_eq!(config("guard"), 1.0);
    assert_eq!(config("ratelimit"), 2.0);
    assert_eq!(config("breaker"), 0.0);
    assert_eq!(m.value("hypache_rate_limited_total"), 2.0);
    assert_eq!(m.value("hypache_ratelimit_errors_total"), 1.0);
    assert_eq!(m.value("hypache_breaker_ejections_total"), 1.0);
    assert_eq!(m.value("hypache_breaker_backends_ejected"), 1.0);
    assert_eq!(m.value("hypache_breaker_probes_total"), 0.0);
    assert_eq!(m.value("hypache_breaker_recoveries_total"), 0.0);
    assert!(
        m.text
            .contains("# TYPE hypache_breaker_backends_ejected gauge\n"),
        "{}",
        m.text
    );
}

#[test]
fn other_paths_get_404() {
    let redis = RedisServer::start();
    let proxy = start(&redis, &[]);
    for path in ["/", "/metricsx", "/debug/pprof"] {
        let resp = fetch(proxy.metrics_addr(), path);
        assert_eq!(resp.status, 404, "{path}");
        assert_eq!(resp.body_str(), "404 page not found\n", "{path}");
    }
    let resp = fetch(proxy.metrics_addr(), "/metrics");
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
}

#[test]
fn per_frontend_series_only_with_the_flag() {
    let redis = RedisServer::start();
    let proxy = start(&redis, &["--metrics-per-frontend"]);
    let backend = Backend::named("B");
    redis.set_frontend("a.com", &[&backend.url()]);
    get(proxy.addr(), "a.com:80", "/", &[]);
    get(proxy.addr(), "b.com", "/", &[]);
    let m = scrape(proxy.metrics_addr());
    assert_eq!(
        m.value("hypache_frontend_responses_total{frontend=\"a.com\",status_code=\"200\"}"),
        1.0
    );
    // No route: the frontend key is empty, as in the access log, so unknown hosts add no series.
    assert_eq!(
        m.value("hypache_frontend_responses_total{frontend=\"\",status_code=\"400\"}"),
        1.0
    );
    assert_eq!(
        m.value("hypache_frontend_request_duration_seconds_count{frontend=\"a.com\"}"),
        1.0
    );
}

#[test]
fn no_metrics_listener_without_the_flag() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, &[]);
    assert!(
        !proxy
            .stderr_lines()
            .iter()
            .any(|l| l.contains("Serving metrics")),
        "{:?}",
        proxy.stderr_lines()
    );
}

#[test]
fn a_metrics_bind_failure_is_fatal() {
    let redis = RedisServer::start();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let port = redis.port().to_string();
    let out = spawn_raw(
        &[
            "--listen",
            "127.0.0.1:0",
            "--access-log",
            "none",
            "--read-redis-port",
            &port,
            "--write-redis-port",
            &port,
            "--metrics-address",
            &addr,
        ],
        &[],
        secs(15),
    );
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!("listen tcp {addr}")),
        "{out:?}"
    );
}

#[test]
fn per_backend_series_by_status_class_with_a_capped_label_set() {
    let redis = RedisServer::start();
    let proxy = start(
        &redis,
        &["--metrics-per-backend", "--metrics-backend-limit", "1"],
    );
    let ok = Backend::named("ok");
    let failing = Backend::start(|_| Reply::text(503, "down"));
    redis.set_frontend("pb.test", &[&ok.url(), &failing.url()]);
    for _ in 0..4 {
        get(proxy.addr(), "pb.test", "/", &[]);
    }
    let text = scrape(proxy.metrics_addr()).text;
    let first = format!(
        "hypache_backend_responses_total{{backend=\"{}\",class=\"2xx\"}} 2\n",
        ok.url()
    );
    assert!(text.contains(&first), "{first:?} missing in:\n{text}");
    // The second backend is past the cap of 1: it is counted under "other", never under its URL.
    assert!(
        text.contains("hypache_backend_responses_total{backend=\"other\",class=\"5xx\"} 2\n"),
        "{text}"
    );
    assert!(!text.contains(&failing.url()), "{text}");
    assert!(
        text.contains(&format!(
            "hypache_backend_response_seconds_count{{backend=\"{}\"}} 2\n",
            ok.url()
        )),
        "{text}"
    );
    // Off by default.
    let plain = start(&redis, &[]);
    get(plain.addr(), "pb.test", "/", &[]);
    assert!(!scrape(plain.metrics_addr())
        .text
        .contains("hypache_backend_responses_total"));
}

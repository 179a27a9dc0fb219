//! Per-frontend mirroring (`mirror:<key>`, docs/mirroring.md#per-frontend-shadows): real backends as the
//! active side and the shadows, a real Redis, and the metrics that count what happened to each copy.

mod support;

use std::time::{Duration, Instant};

use support::metrics::scrape;
use support::*;

fn start(extra: &[&str]) -> (RedisServer, Proxy) {
    let redis = RedisServer::start();
    let mut args = vec!["--metrics-address", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let proxy = Proxy::start(&redis, &args);
    (redis, proxy)
}

fn metric(proxy: &Proxy, series: &str) -> f64 {
    let scraped = scrape(proxy.metrics_addr());
    match scraped.has(series) {
        true => scraped.value(series),
        false => 0.0,
    }
}

fn hset(redis: &RedisServer, key: &str, fields: &[&str]) {
    let mut args = vec!["HSET", key];
    args.extend_from_slice(fields);
    let _: i64 = redis.query(&args);
}

#[test]
fn every_request_is_copied_with_x_nfork_and_the_original_host() {
    let (redis, proxy) = start(&[]);
    let (active, shadow) = (Backend::named("active"), Backend::named("shadow"));
    redis.set_frontend("m.test", &[&active.url()]);
    hset(&redis, "mirror:m.test", &["to:staging", &shadow.url()]);
    let resp = request(
        proxy.addr(),
        "POST",
        "m.test",
        "/orders?id=7",
        &[("Content-Type", "text/plain")],
        b"hello body",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_str(), "active");
    assert_eventually(Duration::from_secs(5), "the shadow's copy", || {
        shadow.hits() == 1
    });
    let copy = shadow.single_request();
    let original = active.single_request();
    assert_eq!(copy.method, "POST");
    assert_eq!(copy.target, "/orders?id=7");
    assert_eq!(copy.body, b"hello body");
    assert_eq!(copy.header("x-nfork"), Some("true"));
    assert_eq!(copy.header("host"), Some("m.test"));
    assert_eq!(
        copy.header("x-forwarded-for"),
        original.header("x-forwarded-for")
    );
    assert_eq!(
        original.header("x-nfork"),
        None,
        "the active backend gets no X-Nfork"
    );
    let series = "hypache_mirror_requests_total{frontend=\"m.test\",shadow=\"staging\"}";
    assert_eq!(metric(&proxy, series), 1.0);
}

#[test]
fn percent_samples_the_copies() {
    let (redis, proxy) = start(&[]);
    let (active, shadow) = (Backend::named("active"), Backend::named("shadow"));
    redis.set_frontend("p.test", &[&active.url()]);
    hset(
        &redis,
        "mirror:p.test",
        &["to:s", &shadow.url(), "percent", "0"],
    );
    for _ in 0..50 {
        assert_eq!(get(proxy.addr(), "p.test", "/", &[]).status, 200);
    }
    let sampled_out =
        "hypache_mirror_dropped_total{frontend=\"p.test\",reason=\"sampling\",shadow=\"s\"}";
    assert_eq!(metric(&proxy, sampled_out), 50.0);
    assert_eq!(shadow.hits(), 0);

    hset(&redis, "mirror:p.test", &["percent", "50"]);
    for _ in 0..200 {
        get(proxy.addr(), "p.test", "/", &[]);
    }
    let sent = "hypache_mirror_requests_total{frontend=\"p.test\",shadow=\"s\"}";
    assert_eventually(Duration::from_secs(5), "the sampled copies arrive", || {
        shadow.hits() as f64 == metric(&proxy, sent)
    });
    let hits = shadow.hits();
    assert!((60..=140).contains(&hits), "50% of 200 gave {hits}");

    hset(&redis, "mirror:p.test", &["percent", "100"]);
    for _ in 0..20 {
        get(proxy.addr(), "p.test", "/", &[]);
    }
    assert_eventually(Duration::from_secs(5), "all 20 copied", || {
        shadow.hits() == hits + 20
    });
}

#[test]
fn a_slow_or_refusing_shadow_costs_the_client_nothing() {
    let (redis, proxy) = start(&[]);
    let active = Backend::named("active");
    let slow = Backend::start(|_| Reply::text(200, "slow").delay(Duration::from_secs(3)));
    redis.set_frontend("s.test", &[&active.url()]);
    hset(
        &redis,
        "mirror:s.test",
        &[
            "to:slow",
            &slow.url(),
            "to:refusing",
            &refused_url(),
            "timeout",
            "5s",
        ],
    );
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        let resp = get(proxy.addr(), "s.test", "/", &[]);
        slowest = slowest.max(started.elapsed());
        assert_eq!((resp.status, resp.body_str().as_str()), (200, "active"));
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a request took {slowest:?}"
    );
    let refused = "hypache_mirror_timeouts_total{frontend=\"s.test\",shadow=\"refusing\"}";
    assert_eventually(
        Duration::from_secs(5),
        "refusals counted as timeouts",
        || metric(&proxy, refused) == 10.0,
    );
    assert_eventually(
        Duration::from_secs(10),
        "the slow shadow got its copies",
        || slow.hits() == 10,
    );
}

#[test]
fn a_stalled_shadow_drops_copies_past_its_concurrency() {
    let (redis, proxy) = start(&[]);
    let active = Backend::named("active");
    let gate = Gate::new();
    let stalled = {
        let gate = gate.clone();
        Backend::start(move |_| Reply::text(200, "late").wait_before_headers(&gate))
    };
    redis.set_frontend("c.test", &[&active.url()]);
    hset(
        &redis,
        "mirror:c.test",
        &[
            "to:stalled",
            &stalled.url(),
            "concurrency",
            "2",
            "timeout",
            "30s",
        ],
    );
    for _ in 0..10 {
        let started = Instant::now();
        assert_eq!(get(proxy.addr(), "c.test", "/", &[]).body_str(), "active");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    let full =
        "hypache_mirror_dropped_total{frontend=\"c.test\",reason=\"full\",shadow=\"stalled\"}";
    assert_eventually(Duration::from_secs(5), "8 copies dropped", || {
        metric(&proxy, full) == 8.0
    });
    assert_eventually(
        Duration::from_secs(5),
        "2 copies held by the shadow",
        || stalled.hits() == 2,
    );
    gate.open();
}

#[test]
fn removing_the_hash_stops_mirroring() {
    for mode in [&[][..], &["--backend-cache"][..]] {
        let (redis, proxy) = start(mode);
        let (active, shadow) = (Backend::named("active"), Backend::named("shadow"));
        redis.set_frontend("r.test", &[&active.url()]);
        redis.set_frontend("sentinel.test", &[&active.url()]);
        hset(&redis, "mirror:r.test", &["to:s", &shadow.url()]);
        hset(&redis, "mirror:sentinel.test", &["to:s", &shadow.url()]);
        let copied = |path: &str| shadow.requests().iter().any(|r| r.target == path);
        assert_eventually(Duration::from_secs(5), "copies flow", || {
            get(proxy.addr(), "r.test", "/before", &[]);
            copied("/before")
        });
        let _: i64 = redis.query(&["DEL", "mirror:r.test"]);
        let removed = Instant::now();
        // A request is known not to be copied once a later request of a still-mirrored frontend has been.
        let mut round = 0;
        assert_eventually(Duration::from_secs(4), "no more copies", || {
            round += 1;
            let (after, mark) = (format!("/after-{round}"), format!("/sentinel-{round}"));
            get(proxy.addr(), "r.test", &after, &[]);
            get(proxy.addr(), "sentinel.test", &mark, &[]);
            wait_until(Duration::from_secs(2), || copied(&mark)) && !copied(&after)
        });
        assert!(removed.elapsed() < Duration::from_secs(3), "{mode:?}");
    }
}

#[test]
fn compare_counts_status_and_body_mismatches() {
    let (redis, proxy) = start(&[]);
    let active = Backend::named("same");
    let failing = Backend::start(|_| Reply::text(500, "same"));
    let other = Backend::named("different");
    let twin = Backend::named("same");
    redis.set_frontend("cmp.test", &[&active.url()]);
    hset(
        &redis,
        "mirror:cmp.test",
        &[
            "to:failing",
            &failing.url(),
            "to:other",
            &other.url(),
            "to:twin",
            &twin.url(),
            "compare",
            "body",
        ],
    );
    for _ in 0..3 {
        assert_eq!(get(proxy.addr(), "cmp.test", "/x", &[]).body_str(), "same");
    }
    let series = |shadow: &str, kind: &str| {
        format!("hypache_mirror_mismatches_total{{frontend=\"cmp.test\",kind=\"{kind}\",shadow=\"{shadow}\"}}")
    };
    assert_eventually(Duration::from_secs(5), "the mismatches", || {
        metric(&proxy, &series("failing", "status")) == 3.0
            && metric(&proxy, &series("other", "body")) == 3.0
    });
    assert_eq!(metric(&proxy, &series("twin", "body")), 0.0);
    assert_eq!(metric(&proxy, &series("twin", "status")), 0.0);
    assert_eq!(metric(&proxy, &series("failing", "body")), 0.0);
}

#[test]
fn a_body_over_max_body_skips_the_shadows_and_the_request_still_succeeds() {
    let (redis, proxy) = start(&[]);
    let active = Backend::start(|req| Reply::text(200, &req.body.len().to_string()));
    let shadow = Backend::named("shadow");
    redis.set_frontend("big.test", &[&active.url()]);
    hset(
        &redis,
        "mirror:big.test",
        &["to:s", &shadow.url(), "max_body", "1000"],
    );
    let body = vec![b'x'; 5 << 20];
    let resp = request(proxy.addr(), "POST", "big.test", "/upload", &[], &body);
    assert_eq!((resp.status, resp.body_str()), (200, (5 << 20).to_string()));
    let too_large =
        "hypache_mirror_dropped_total{frontend=\"big.test\",reason=\"body_too_large\",shadow=\"s\"}";
    assert_eventually(Duration::from_secs(5), "counted as too large", || {
        metric(&proxy, too_large) == 1.0
    });
    // A small body is still copied.
    request(proxy.addr(), "POST", "big.test", "/small", &[], b"tiny");
    assert_eventually(Duration::from_secs(5), "the small copy", || {
        shadow.hits() == 1
    });
    assert_eq!(shadow.single_request().body, b"tiny");
}

#[test]
fn the_admin_api_shows_the_mirror_its_figures_and_the_route_options() {
    let (redis, proxy) = start(&["--admin-address", "127.0.0.1:0"]);
    let admin = support::admin::admin_addr(&proxy);
    let active = Backend::named("active");
    let failing = Backend::start(|_| Reply::text(503, "no"));
    redis.set_frontend("adm.test", &[&active.url()]);
    hset(
        &redis,
        "mirror:adm.test",
        &[
            "to:staging",
            &failing.url(),
            "percent",
            "100",
            "compare",
            "status",
        ],
    );
    hset(&redis, "route:adm.test", &["weights", "2"]);
    for _ in 0..2 {
        get(proxy.addr(), "adm.test", "/cart", &[]);
    }
    let one = support::admin::get_json(admin, "/api/v1/frontends/adm.test");
    assert_eq!(one.status(), 200);
    assert_eq!(one.json["mirror"]["shadows"]["staging"], failing.url());
    assert_eq!(one.json["mirror"]["compare"], "status");
    assert_eq!(one.json["options"]["weights"], serde_json::json!([2]));
    let shadow = eventually(
        Duration::from_secs(5),
        "the mismatches in the stats",
        || {
            let stats = support::admin::get_json(admin, "/api/v1/stats");
            let mirrors = stats.json["mirrors"].as_array()?.clone();
            let shadow = mirrors.into_iter().find(|m| m["frontend"] == "adm.test")?;
            (shadow["mismatches"] == 2).then_some(shadow)
        },
    );
    assert_eq!(shadow["sent"], 2);
    assert_eq!(
        shadow["recent_mismatches"][0],
        "GET /cart -> active 200, shadow 503 (status differs)"
    );
}

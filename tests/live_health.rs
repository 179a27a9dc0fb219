//! Active health checks of live backends: a `healthcheck:<key>` hash with `interval`, `fall` and `rise`
//! (docs/health-checks.md#live-backends), against a real Redis and backends whose health path can turn bad.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

/// A backend answering its name on every path but `/health`, which answers 500 while `sick` is set.
fn backend(name: &'static str, sick: &Arc<AtomicBool>) -> Backend {
    let sick = sick.clone();
    Backend::start(move |req| match req.target.as_str() {
        "/health" if sick.load(Ordering::SeqCst) => Reply::text(500, "sick"),
        "/health" => Reply::text(200, "ok"),
        _ => Reply::text(200, name),
    })
}

fn lock_holder(redis: &RedisServer, key: &str, url: &str) -> Option<String> {
    redis.query(&["GET", &format!("dead:{key}:{url}")])
}

#[test]
fn a_backend_whose_health_path_fails_is_marked_dead_then_revived_after_rise_passes() {
    let redis = RedisServer::start();
    let sick = Arc::new(AtomicBool::new(false));
    let fine = Arc::new(AtomicBool::new(false));
    let (one, two) = (backend("one", &sick), backend("two", &fine));
    redis.set_frontend("live.test", &[&one.url(), &two.url()]);
    let _: i64 = redis.query(&[
        "HSET",
        "healthcheck:live.test",
        "path",
        "/health",
        "interval",
        "500ms",
        "fall",
        "2",
        "rise",
        "2",
    ]);
    let proxy = Proxy::start(&redis, &["--active-healthcheck", "--monitor-id", "box-a"]);
    // One prober per backend, under PlanB's lock.
    assert_eventually(
        Duration::from_secs(5),
        "both probers hold their lock",
        || {
            lock_holder(&redis, "live.test", &one.url()).as_deref() == Some("box-a")
                && lock_holder(&redis, "live.test", &two.url()).as_deref() == Some("box-a")
        },
    );
    // Healthy backends are probed and left alone.
    assert_eventually(Duration::from_secs(3), "probes reach the backends", || {
        one.requests()
            .iter()
            .filter(|r| r.target == "/health")
            .count()
            >= 2
    });
    assert!(redis.dead_members("live.test").is_empty());

    let sub = redis.subscribe_dead();
    sick.store(true, Ordering::SeqCst);
    let turned = Instant::now();
    assert_eventually(Duration::from_secs(5), "one marked dead", || {
        redis.dead_members("live.test") == ["0"]
    });
    // interval × (fall + 1), with the ±10% jitter and the probe's own time.
    assert!(
        turned.elapsed() < Duration::from_millis(2_000),
        "marked after {:?}",
        turned.elapsed()
    );
    let message = sub.next(Duration::from_secs(2)).expect("a dead message");
    assert_eq!(message, format!("live.test;{};0;2", one.url()));
    // It still accepts connections, but gets no traffic.
    for _ in 0..6 {
        assert_eq!(get(proxy.addr(), "live.test", "/", &[]).body_str(), "two");
    }
    // Kept dead while it fails, past a plain dead set's life.
    let ttl: i64 = redis.query(&["TTL", "dead:live.test"]);
    assert!(ttl > 0, "the dead set has a TTL ({ttl})");

    sick.store(false, Ordering::SeqCst);
    let healed = Instant::now();
    assert_eventually(Duration::from_secs(5), "one revived", || {
        redis.dead_members("live.test").is_empty()
    });
    // rise = 2: at least one interval, at most interval × (rise + 1) and the jitter.
    let took = healed.elapsed();
    assert!(took >= Duration::from_millis(400), "revived after {took:?}");
    assert!(
        took < Duration::from_millis(2_000),
        "revived after {took:?}"
    );
    let bodies: Vec<String> = (0..4)
        .map(|_| get(proxy.addr(), "live.test", "/", &[]).body_str())
        .collect();
    assert!(bodies.contains(&"one".to_string()), "{bodies:?}");
}

#[test]
fn a_passive_mark_on_a_live_checked_frontend_is_revived_after_rise_probes() {
    let redis = RedisServer::start();
    let fine = Arc::new(AtomicBool::new(false));
    let (one, two) = (backend("one", &fine), backend("two", &fine));
    redis.set_frontend("rise.test", &[&one.url(), &two.url()]);
    let _: i64 = redis.query(&[
        "HSET",
        "healthcheck:rise.test",
        "path",
        "/health",
        "interval",
        "300ms",
    ]);
    let _proxy = Proxy::start(&redis, &["--active-healthcheck"]);
    assert_eventually(Duration::from_secs(5), "the prober holds its lock", || {
        lock_holder(&redis, "rise.test", &two.url()).is_some()
    });
    // Marked by someone else (a passive mark, an operator): the prober revives it once it passes.
    let _: i64 = redis.query(&["SADD", "dead:rise.test", "1"]);
    assert_eventually(Duration::from_secs(5), "two revived", || {
        redis.dead_members("rise.test").is_empty()
    });
    // Removing the interval stops the probers and releases their locks.
    let _: i64 = redis.query(&["HDEL", "healthcheck:rise.test", "interval"]);
    assert_eventually(Duration::from_secs(5), "the locks released", || {
        lock_holder(&redis, "rise.test", &one.url()).is_none()
            && lock_holder(&redis, "rise.test", &two.url()).is_none()
    });
}

//! `--active-healthcheck` (docs/compat/planb.md#active-health-check) against a real Redis and real backends.

mod support;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Instant;

use support::*;

fn lock_holder(redis: &RedisServer, host: &str, url: &str) -> Option<String> {
    redis.query(&["GET", &format!("dead:{host}:{url}")])
}

fn ttl(redis: &RedisServer, key: &str) -> i64 {
    redis.query(&["TTL", key])
}

#[test]
fn a_refused_backend_is_held_dead_then_revived_when_it_comes_back() {
    let redis = RedisServer::start();
    let down = refused_addr();
    let down_url = format!("http://{down}");
    let good = Backend::named("good");
    redis.set_frontend("hc.test", &[&down_url, &good.url()]);
    let proxy = Proxy::start(
        &redis,
        &[
            "--active-healthcheck",
            "--monitor-id",
            "box-a",
            "--dead-backend-time",
            "5",
        ],
    );
    // The refused backend is marked dead within the request (failover serves it from the good one).
    assert_eq!(get(proxy.addr(), "hc.test", "/", &[]).body_str(), "good");
    assert_eq!(redis.dead_members("hc.test"), vec!["0".to_string()]);
    // The monitor takes the lock with this machine's id...
    assert_eventually(secs(5), "the lock key", || {
        lock_holder(&redis, "hc.test", &down_url).as_deref() == Some("box-a")
    });
    let lock_ttl = ttl(&redis, &format!("dead:hc.test:{down_url}"));
    assert!((1..=30).contains(&lock_ttl), "lock TTL {lock_ttl}");
    // ...and keeps the dead set alive for 30 s while the backend fails, past --dead-backend-time.
    assert_eventually(secs(5), "the dead set renewed to 30 s", || {
        ttl(&redis, "dead:hc.test") > 10
    });

    let _back = Backend::start_on(down, |_| Reply::text(200, "back"));
    let revived = Instant::now();
    assert_eventually(secs(5), "the backend revived", || {
        redis.dead_members("hc.test").is_empty()
    });
    assert!(
        revived.elapsed() < secs(3),
        "revived after {:?}",
        revived.elapsed()
    );
    assert_eventually(secs(5), "the lock released", || {
        lock_holder(&redis, "hc.test", &down_url).is_none()
    });
}

#[test]
fn healthcheck_hash_path_status_and_body_are_honoured() {
    let redis = RedisServer::start();
    let status = Arc::new(AtomicU16::new(500));
    let answer = status.clone();
    let backend = Backend::start(move |_| {
        let code = answer.load(Ordering::SeqCst);
        Reply::text(code, if code == 200 { "all OK here" } else { "broken" })
    });
    redis.set_frontend("probe.test", &[&backend.url()]);
    redis.query::<()>(&[
        "HSET",
        "healthcheck:probe.test",
        "path",
        "//health",
        "status",
        "200",
        "body",
        "OK",
    ]);
    let _proxy = Proxy::start(&redis, &["--active-healthcheck"]);
    wait_for_subscribers(&redis, 1);
    // Mark it dead the way a proxy does: SADD, then PUBLISH on channel `dead`.
    redis.query::<()>(&["SADD", "dead:probe.test", "0"]);
    let message = format!("probe.test;{};0;1", backend.url());
    let subscribers: i64 = redis.query(&["PUBLISH", "dead", &message]);
    assert!(subscribers >= 1, "the monitor is subscribed");
    // Probes go to <url>/health; a 500 keeps it dead.
    assert_eventually(secs(5), "two probes of /health", || {
        backend
            .requests()
            .iter()
            .filter(|r| r.target == "/health")
            .count()
            >= 2
    });
    assert_eq!(redis.dead_members("probe.test"), vec!["0".to_string()]);
    let probe = backend.requests().into_iter().last().unwrap();
    assert_eq!(probe.header("user-agent"), Some("Go-http-client/1.1"));
    status.store(200, Ordering::SeqCst);
    assert_eventually(secs(5), "revived once status and body match", || {
        redis.dead_members("probe.test").is_empty()
    });
}

#[test]
fn dead_sets_that_exist_at_start_up_are_picked_up() {
    let redis = RedisServer::start();
    let backend = Backend::named("fine");
    redis.set_frontend("old.test", &[&backend.url()]);
    redis.query::<()>(&["SADD", "dead:old.test", "0"]);
    let _proxy = Proxy::start(&redis, &["--active-healthcheck"]);
    assert_eventually(secs(5), "the old dead set revived", || {
        redis.dead_members("old.test").is_empty()
    });
}

#[test]
fn two_processes_sharing_redis_take_the_lock_once() {
    let redis = RedisServer::start();
    let failing = Backend::start(|_| Reply::text(503, "nope"));
    redis.set_frontend("shared.test", &[&failing.url()]);
    redis.query::<()>(&["HSET", "healthcheck:shared.test", "status", "200"]);
    let a = Proxy::start(&redis, &["--active-healthcheck", "--monitor-id", "box-a"]);
    let b = Proxy::start(&redis, &["--active-healthcheck", "--monitor-id", "box-b"]);
    let _ = (a.addr(), b.addr());
    wait_for_subscribers(&redis, 2);
    redis.query::<()>(&["SADD", "dead:shared.test", "0"]);
    let message = format!("shared.test;{};0;1", failing.url());
    let subscribers: i64 = redis.query(&["PUBLISH", "dead", &message]);
    assert_eq!(subscribers, 2);
    let holder = eventually(secs(5), "a lock holder", || {
        lock_holder(&redis, "shared.test", &failing.url())
    });
    assert!(holder == "box-a" || holder == "box-b", "{holder}");
    // One process probes about once a second; two would double the rate.
    let start_hits = failing.hits();
    let window = Instant::now();
    assert_eventually(secs(10), "three more probes", || {
        failing.hits() >= start_hits + 3
    });
    let elapsed = window.elapsed();
    assert!(
        elapsed >= millis(1800),
        "3 probes in {elapsed:?}: more than one process is probing"
    );
    assert_eq!(
        lock_holder(&redis, "shared.test", &failing.url()).as_deref(),
        Some(holder.as_str())
    );
    assert_eq!(redis.dead_members("shared.test"), vec!["0".to_string()]);
}

/// The proxy listens before its subscription to `dead` is confirmed: wait for the subscribers.
fn wait_for_subscribers(redis: &RedisServer, n: i64) {
    assert_eventually(secs(5), "the monitors subscribed to dead", || {
        let counts: (String, i64) = redis.query(&["PUBSUB", "NUMSUB", "dead"]);
        counts.1 == n
    });
}

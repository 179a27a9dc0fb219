//! The route cache (`--backend-cache`), stale routes while the read Redis is down, and `--wait-for-redis`.

mod support;

use std::time::Instant;

use support::*;

fn body(proxy: &Proxy, host: &str) -> (u16, String) {
    let resp = get(proxy.addr(), host, "/", &[]);
    (resp.status, resp.body_str())
}

#[test]
fn backend_cache_delays_changes_by_about_two_seconds() {
    let redis = RedisServer::start();
    let one = Backend::named("one");
    let two = Backend::named("two");
    redis.set_frontend("cached.test", &[&one.url()]);
    let proxy = Proxy::start(&redis, &["--backend-cache"]);
    assert_eq!(body(&proxy, "cached.test"), (200, "one".into()));
    redis.set_frontend("cached.test", &[&two.url()]);
    let changed = Instant::now();
    // Still the cached list right after the change...
    assert_eq!(body(&proxy, "cached.test"), (200, "one".into()));
    // ...and the new one once the 2 s entry has expired.
    assert_eventually(secs(5), "the change to become visible", || {
        body(&proxy, "cached.test") == (200, "two".into())
    });
    let waited = changed.elapsed();
    assert!(
        waited >= millis(1500),
        "visible after {waited:?}: not cached?"
    );
    assert!(waited <= millis(3500), "visible only after {waited:?}");
}

#[test]
fn without_the_cache_changes_are_visible_at_once() {
    let redis = RedisServer::start();
    let one = Backend::named("one");
    let two = Backend::named("two");
    redis.set_frontend("live.test", &[&one.url()]);
    let proxy = Proxy::start(&redis, &[]);
    assert_eq!(body(&proxy, "live.test"), (200, "one".into()));
    redis.set_frontend("live.test", &[&two.url()]);
    assert_eq!(body(&proxy, "live.test"), (200, "two".into()));
}

#[test]
fn backend_cache_is_dropped_when_this_process_marks_a_backend_dead() {
    let redis = RedisServer::start();
    let good = Backend::named("good");
    redis.set_frontend("mark.test", &[&good.url(), &refused_url()]);
    let proxy = Proxy::start(&redis, &["--backend-cache", "--no-failover"]);
    // Round robin: index 0 (good), then index 1 (refused: 503 and marked dead).
    assert_eq!(body(&proxy, "mark.test"), (200, "good".into()));
    assert_eq!(body(&proxy, "mark.test").0, 503);
    assert_eventually(secs(5), "the dead mark in Redis", || {
        redis.dead_members("mark.test") == vec!["1".to_string()]
    });
    // Within the 2 s the entry would otherwise live, every request skips the dead backend.
    for _ in 0..4 {
        assert_eq!(body(&proxy, "mark.test"), (200, "good".into()));
    }
    assert_eq!(good.hits(), 5);
}

#[test]
fn stale_routes_are_served_while_the_read_redis_is_down_and_it_recovers() {
    let mut redis = RedisServer::start();
    let app = Backend::named("app");
    redis.set_frontend("seen.test", &[&app.url()]);
    let proxy = Proxy::start(&redis, &[]);
    assert_eq!(body(&proxy, "seen.test"), (200, "app".into()));

    redis.stop();
    let started = Instant::now();
    // A host seen recently is still served from its last route.
    assert_eq!(body(&proxy, "seen.test"), (200, "app".into()));
    // Anything else gets the usual empty 503, quickly.
    let resp = get(proxy.addr(), "never-seen.test", "/", &[]);
    assert_eq!((resp.status, resp.body.len()), (503, 0));
    assert!(
        started.elapsed() < secs(5),
        "requests waited on Redis for {:?}",
        started.elapsed()
    );
    // __ping__ tells a load balancer in front that Redis is gone.
    assert_eq!(get(proxy.addr(), "__ping__", "/", &[]).status, 500);

    redis.restart();
    redis.set_frontend("new.test", &[&app.url()]);
    assert_eventually(secs(10), "routing to recover after Redis came back", || {
        body(&proxy, "new.test") == (200, "app".into())
    });
    // Each worker thread has its own connection, which notices the restart on its next command.
    assert_eventually(secs(10), "__ping__ to recover on every worker", || {
        (0..4).all(|_| get(proxy.addr(), "__ping__", "/", &[]).status == 200)
    });
}

#[test]
fn stale_routes_can_be_turned_off() {
    let mut redis = RedisServer::start();
    let app = Backend::named("app");
    redis.set_frontend("seen.test", &[&app.url()]);
    let proxy = Proxy::start(&redis, &["--stale-routes-ttl", "0s"]);
    assert_eq!(body(&proxy, "seen.test"), (200, "app".into()));
    redis.stop();
    let resp = get(proxy.addr(), "seen.test", "/", &[]);
    assert_eq!((resp.status, resp.body.len()), (503, 0));
}

/// A proxy's flags for a Redis on `port` (read and write), no access log, plus `extra`.
fn on_port<'a>(port: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--read-redis-port",
        port,
        "--write-redis-port",
        port,
        "--access-log",
        "none",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn wait_for_redis_starts_once_redis_appears() {
    let port = refused_addr().port();
    let port_text = port.to_string();
    let args = on_port(&port_text, &["--wait-for-redis", "20s"]);
    // Start Redis from another thread a moment after the proxy, which must not give up meanwhile.
    let redis = std::thread::spawn(move || {
        std::thread::sleep(millis(700));
        RedisServer::start_on_port(port)
    });
    let proxy = Proxy::start_custom(&args, &[]).expect("started once Redis appeared");
    let redis = redis.join().unwrap();
    let app = Backend::named("app");
    redis.set_frontend("late.test", &[&app.url()]);
    assert_eq!(body(&proxy, "late.test"), (200, "app".into()));
}

#[test]
fn without_wait_for_redis_it_starts_while_redis_is_down_and_serves_once_it_answers() {
    let port = refused_addr().port();
    let port_text = port.to_string();
    let proxy = Proxy::start_custom(&on_port(&port_text, &[]), &[])
        .expect("listening although Redis is down");
    // Listening, and saying why requests fail: 503 for a request, 500 for `__ping__`.
    let resp = get(proxy.addr(), "early.test", "/", &[]);
    assert_eq!((resp.status, resp.body.len()), (503, 0));
    let ping = get(proxy.addr(), "__ping__", "/", &[]);
    assert_eq!(ping.status, 500);
    assert!(ping.body_str().contains(&port_text), "{}", ping.body_str());
    // Redis comes: the proxy serves without a restart.
    let redis = RedisServer::start_on_port(port);
    let app = Backend::named("app");
    redis.set_frontend("early.test", &[&app.url()]);
    // Every worker's connection retries with back-off up to 2 s; ask a few times, so all of them are seen.
    assert_eventually(SOON, "routes served once Redis answers", || {
        (0..4).all(|_| body(&proxy, "early.test") == (200, "app".into()))
    });
    assert_eventually(SOON, "__ping__ OK once Redis answers", || {
        (0..4).all(|_| get(proxy.addr(), "__ping__", "/", &[]).status == 200)
    });
}

#[test]
fn a_refused_password_stays_fatal_at_start() {
    let redis = RedisServer::start_with_password("right");
    let port = redis.port().to_string();
    let out = spawn_raw(
        &[
            "--listen",
            "127.0.0.1:0",
            "--read-redis-port",
            &port,
            "--write-redis-port",
            &port,
            "--read-redis-password",
            "wrong",
            "--write-redis-password",
            "wrong",
        ],
        &[],
        secs(15),
    );
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(!out.stderr.contains("Listening on"), "{out:?}");
}

//! Circuit breaker (`breaker:<host>` and `--breaker-*`): trip after failures, skip while open, one half-open
//! probe, recovery, the ejection cap, 503 when everything is out, per-frontend switches, bad configuration.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use support::*;

/// A backend answering 500 while `failing` is set, 200 `name` otherwise.
fn switchable(name: &str, failing: bool) -> (Backend, Arc<AtomicBool>) {
    let flag = Arc::new(AtomicBool::new(failing));
    let state = flag.clone();
    let name = name.to_string();
    let backend = Backend::start(move |_| {
        if state.load(Ordering::SeqCst) {
            Reply::text(500, "broken")
        } else {
            Reply::text(200, &name)
        }
    });
    (backend, flag)
}

fn set_breaker(redis: &RedisServer, host: &str, fields: &[&str]) {
    let key = format!("breaker:{host}");
    redis.query::<i64>(&["DEL", &key]);
    let mut args = vec!["HSET", key.as_str()];
    args.extend_from_slice(fields);
    redis.query::<i64>(&args);
}

fn bodies(proxy: &Proxy, host: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| get(proxy.addr(), host, "/", &[]).body_str())
        .collect()
}

#[test]
fn failures_eject_a_backend_until_the_cooldown() {
    let redis = RedisServer::start();
    let (bad, _) = switchable("bad", true);
    let good = Backend::named("good");
    redis.set_frontend("a.com", &[&bad.url(), &good.url()]);
    set_breaker(
        &redis,
        "a.com",
        &["failures", "3", "window", "1m", "cooldown", "1m"],
    );
    let proxy = Proxy::start(&redis, &[]);
    // Round robin: bad, good, bad, good, bad (third failure: ejected), good.
    assert_eq!(
        bodies(&proxy, "a.com", 6),
        ["broken", "good", "broken", "good", "broken", "good"]
    );
    assert_eq!(bodies(&proxy, "a.com", 10), vec!["good"; 10]);
    assert_eq!(bad.hits(), 3);
    let part = format!(
        "ERROR in a.com -> {} - / - : - circuit breaker: 3 failures within 60s, last status 500; backend ejected for 60s",
        bad.url()
    );
    proxy.wait_stderr(&format!("{part:?}"), |l| l == part);
    // Ejection is local state: dead:<host> is untouched.
    assert!(redis.dead_members("a.com").is_empty());
}

#[test]
fn a_half_open_backend_gets_one_probe_then_recovers() {
    let redis = RedisServer::start();
    let (flaky, failing) = switchable("flaky", true);
    let good = Backend::named("good");
    redis.set_frontend("a.com", &[&flaky.url(), &good.url()]);
    set_breaker(&redis, "a.com", &["failures", "2", "cooldown", "3s"]);
    let proxy = Proxy::start(&redis, &["--metrics-address", "127.0.0.1:0"]);
    assert_eq!(
        bodies(&proxy, "a.com", 4),
        ["broken", "good", "broken", "good"]
    );
    assert_eq!(bodies(&proxy, "a.com", 3), vec!["good"; 3]);
    assert_eq!(flaky.hits(), 2);

    // After the cooldown (3 s: a wide margin over the few requests made meanwhile on a loaded machine)
    // exactly one request probes it; it still fails, so it is ejected again.
    assert_eventually(secs(10), "a probe to reach the ejected backend", || {
        get(proxy.addr(), "a.com", "/", &[]);
        flaky.hits() == 3
    });
    assert_eq!(bodies(&proxy, "a.com", 3), vec!["good"; 3]);
    assert_eq!(flaky.hits(), 3, "one probe per cooldown");
    proxy.wait_stderr("a failed-probe line", |l| {
        l.contains("circuit breaker: probe failed (status 500); backend ejected again for 3s")
    });

    // Healthy again: the next probe succeeds and it takes its share of traffic at once.
    failing.store(false, Ordering::SeqCst);
    assert_eventually(secs(10), "the probe to succeed", || {
        get(proxy.addr(), "a.com", "/", &[]).body_str() == "flaky"
    });
    let after = bodies(&proxy, "a.com", 4);
    assert_eq!(
        after.iter().filter(|b| *b == "flaky").count(),
        2,
        "{after:?}"
    );
    proxy.wait_stderr("a recovery line", |l| {
        l.contains("circuit breaker: probe succeeded; backend back in rotation")
    });
    // Ejected, probed and ejected again, probed and recovered: on /metrics too.
    let m = support::metrics::scrape(proxy.metrics_addr());
    assert_eq!(
        m.value("hypache_breaker_ejections_total"),
        2.0,
        "{}",
        m.text
    );
    assert_eq!(m.value("hypache_breaker_probes_total"), 2.0);
    assert_eq!(m.value("hypache_breaker_recoveries_total"), 1.0);
    assert_eq!(m.value("hypache_breaker_backends_ejected"), 0.0);
}

#[test]
fn never_more_than_max_ejection_percent_are_ejected() {
    let redis = RedisServer::start();
    let (b0, _) = switchable("b0", true);
    let (b1, _) = switchable("b1", true);
    redis.set_frontend("a.com", &[&b0.url(), &b1.url()]);
    set_breaker(
        &redis,
        "a.com",
        &[
            "failures",
            "2",
            "cooldown",
            "1m",
            "max_ejection_percent",
            "50",
        ],
    );
    let proxy = Proxy::start(&redis, &[]);
    // b0 trips at its second failure; b1 reaches the threshold too, but one of two is the cap.
    bodies(&proxy, "a.com", 4);
    assert_eq!((b0.hits(), b1.hits()), (2, 2));
    bodies(&proxy, "a.com", 6);
    assert_eq!((b0.hits(), b1.hits()), (2, 8));
}

#[test]
fn every_backend_ejected_is_503_as_all_dead() {
    let redis = RedisServer::start();
    let (b0, _) = switchable("b0", true);
    redis.set_frontend("a.com", &[&b0.url()]);
    set_breaker(
        &redis,
        "a.com",
        &[
            "failures",
            "2",
            "cooldown",
            "1m",
            "max_ejection_percent",
            "100",
        ],
    );
    let proxy = Proxy::start(&redis, &[]);
    assert_eq!(bodies(&proxy, "a.com", 2), ["broken", "broken"]);
    let resp = get(proxy.addr(), "a.com", "/", &[]);
    assert_eq!(resp.status, 503);
    assert_eq!(resp.body_str(), "all backends are dead");
    assert_eq!(b0.hits(), 2);
    // With the default cap of 50%, a single backend is never ejected.
    set_breaker(&redis, "a.com", &["failures", "2"]);
    let fresh = Proxy::start(&redis, &[]);
    assert_eq!(bodies(&fresh, "a.com", 5), vec!["broken"; 5]);
}

#[test]
fn dead_and_ejected_backends_together_are_503_as_all_dead() {
    let redis = RedisServer::start();
    let (bad, _) = switchable("bad", true);
    let dead = Backend::named("dead");
    redis.set_frontend("a.com", &[&dead.url(), &bad.url()]);
    redis.query::<i64>(&["SADD", "dead:a.com", "0"]);
    // One of two may be ejected (50%): the dead one does not count against the cap.
    set_breaker(&redis, "a.com", &["failures", "1", "cooldown", "1m"]);
    let proxy = Proxy::start(&redis, &[]);
    assert_eq!(bodies(&proxy, "a.com", 1), ["broken"]);
    let resp = get(proxy.addr(), "a.com", "/", &[]);
    assert_eq!(resp.status, 503);
    assert_eq!(resp.body_str(), "all backends are dead");
    assert_eq!((dead.hits(), bad.hits()), (0, 1));
    // The dead one revived: it takes the traffic while the other is still ejected.
    redis.query::<i64>(&["DEL", "dead:a.com"]);
    assert_eq!(bodies(&proxy, "a.com", 3), vec!["dead"; 3]);
}

#[test]
fn flags_turn_it_on_everywhere_and_a_hash_turns_it_off_for_one_frontend() {
    let redis = RedisServer::start();
    let (bad, _) = switchable("bad", true);
    let good = Backend::named("good");
    redis.set_frontend("a.com", &[&bad.url(), &good.url()]);
    redis.set_frontend("b.com", &[&bad.url(), &good.url()]);
    set_breaker(&redis, "b.com", &["failures", "0"]);
    let proxy = Proxy::start(
        &redis,
        &["--breaker-failures", "2", "--breaker-cooldown", "1m"],
    );
    assert_eq!(
        bodies(&proxy, "a.com", 8),
        ["broken", "good", "broken", "good", "good", "good", "good", "good"]
    );
    // b.com opted out: its failing backend keeps its share.
    let b = bodies(&proxy, "b.com", 8);
    assert_eq!(b.iter().filter(|x| *x == "broken").count(), 4, "{b:?}");
}

#[test]
fn on_selects_what_counts_as_a_failure() {
    let redis = RedisServer::start();
    let (bad, _) = switchable("bad", true);
    let good = Backend::named("good");
    redis.set_frontend("a.com", &[&bad.url(), &good.url()]);
    set_breaker(&redis, "a.com", &["failures", "1", "on", "connect,timeout"]);
    let slow = Backend::start(|_| Reply::text(200, "slow").delay(secs(3)));
    redis.set_frontend("t.com", &[&slow.url(), &good.url()]);
    set_breaker(
        &redis,
        "t.com",
        &["failures", "1", "on", "timeout", "cooldown", "1m"],
    );
    let proxy = Proxy::start(&redis, &["--request-timeout", "1"]);
    // 500s are not failures here.
    let a = bodies(&proxy, "a.com", 6);
    assert_eq!(a.iter().filter(|x| *x == "broken").count(), 3, "{a:?}");
    // A --request-timeout expiry is: the slow backend is ejected after one.
    let first = get(proxy.addr(), "t.com", "/", &[]);
    assert_eq!(first.status, 503);
    assert_eq!(bodies(&proxy, "t.com", 4), vec!["good"; 4]);
    assert_eq!(slow.hits(), 1);
}

#[test]
fn a_malformed_breaker_fails_open_and_is_logged() {
    let redis = RedisServer::start();
    let (bad, _) = switchable("bad", true);
    redis.set_frontend("a.com", &[&bad.url()]);
    set_breaker(
        &redis,
        "a.com",
        &["failures", "1", "max_ejection_percent", "150"],
    );
    let proxy = Proxy::start(&redis, &[]);
    assert_eq!(bodies(&proxy, "a.com", 4), vec!["broken"; 4]);
    let part =
        r#"malformed breaker:a.com: field "max_ejection_percent": 150 is more than 100; ignored"#;
    proxy.wait_stderr(&format!("{part:?}"), |l| l.contains(part));
    let count = proxy
        .stderr_lines()
        .iter()
        .filter(|l| l.contains(part))
        .count();
    assert_eq!(count, 1);
    // Every other field that can be wrong, one at a time: each leaves the backend in rotation (a valid
    // `failures 1` with the cap at 100% would eject it at once) and is logged naming its field.
    for (field, value) in [
        ("failures", "-1"),
        ("window", "0"),
        ("cooldown", "soon"),
        ("on", "4xx"),
        ("max_ejection", "100"),
    ] {
        set_breaker(
            &redis,
            "a.com",
            &["failures", "1", "max_ejection_percent", "100", field, value],
        );
        assert_eq!(bodies(&proxy, "a.com", 3), vec!["broken"; 3], "{field}");
        let part = format!(r#"malformed breaker:a.com: field "{field}""#);
        proxy.wait_stderr(&part, |l| l.contains(&part) && l.ends_with("; ignored"));
    }
    // Not a hash: also ignored.
    redis.query::<i64>(&["DEL", "breaker:a.com"]);
    redis.query::<()>(&["SET", "breaker:a.com", "on"]);
    assert_eq!(bodies(&proxy, "a.com", 2), vec!["broken"; 2]);
    proxy.wait_stderr("WRONGTYPE for breaker:a.com", |l| {
        l.contains("malformed breaker:a.com: WRONGTYPE")
    });
}

#[test]
fn bad_breaker_flags_exit_2_naming_the_flag() {
    for (flag, value) in [
        ("--breaker-on", "4xx"),
        ("--breaker-max-ejection-percent", "101"),
        ("--breaker-cooldown", "soon"),
    ] {
        let out = spawn_raw(
            &[
                "--listen",
                "127.0.0.1:0",
                "--access-log",
                "none",
                flag,
                value,
            ],
            &[],
            secs(15),
        );
        assert_eq!(out.code(), Some(2), "{flag} {value}: {out:?}");
        assert!(out.stderr.contains(flag), "{flag}: {}", out.stderr);
    }
}

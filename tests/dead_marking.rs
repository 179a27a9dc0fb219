//! Passive dead marking (docs/compat/planb.md#dead-marks, docs/compat/planb.md#conformance-checklist items 6-8) and the failover extension.

mod support;

use support::*;

fn setup(extra: &[&str]) -> (RedisServer, Proxy) {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, extra);
    (redis, proxy)
}

#[track_caller]
fn assert_empty_503(resp: &Resp) {
    assert_eq!(resp.status, 503, "{}", resp.head_text());
    assert!(
        resp.body.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&resp.raw)
    );
    assert_eq!(
        resp.header_all("content-length"),
        ["0"],
        "{}",
        resp.head_text()
    );
}

fn ttl(redis: &RedisServer, key: &str) -> i64 {
    redis.query(&["TTL", &format!("dead:{key}")])
}

fn exists(redis: &RedisServer, key: &str) -> bool {
    redis.query(&["EXISTS", key])
}

#[test]
fn a_refused_backend_is_marked_dead_without_failover() {
    let (redis, proxy) = setup(&["--no-failover", "--dead-backend-time", "7"]);
    let good = Backend::named("good");
    let refused = refused_url();
    redis.set_frontend("a.com", &[&refused, &good.url()]);
    let sub = redis.subscribe_dead();

    assert_empty_503(&get(proxy.addr(), "a.com", "/some/path", &[]));
    assert_eq!(
        sub.next(SOON).as_deref(),
        Some(format!("a.com;{refused};0;2").as_str())
    );
    assert_eventually(SOON, "dead:a.com = {0}", || {
        redis.dead_members("a.com") == ["0"]
    });
    let t = ttl(&redis, "a.com");
    assert!((5..=7).contains(&t), "TTL dead:a.com = {t}, want about 7");

    let prefix =
        format!("ERROR in a.com -> {refused} - /some/path - : - error in backend request: ");
    let line = proxy.wait_stderr(&format!("containing {prefix:?}"), |l| l.contains(&prefix));
    assert!(line.ends_with("*DEAD*"), "{line:?}");

    // The dead backend is skipped afterwards.
    assert_eq!(get(proxy.addr(), "a.com", "/", &[]).body_str(), "good");
    assert_eq!(get(proxy.addr(), "a.com", "/", &[]).body_str(), "good");
}

#[test]
fn the_error_line_carries_the_request_id() {
    let (redis, proxy) = setup(&["--no-failover", "--request-id-header", "X-Request-Id"]);
    let refused = refused_url();
    redis.set_frontend("a.com", &[&refused]);
    assert_empty_503(&get(
        proxy.addr(),
        "a.com",
        "/p",
        &[("X-Request-Id", "rid-1")],
    ));
    let prefix = format!(
        "ERROR in a.com -> {refused} - /p - X-Request-Id:rid-1 - error in backend request: "
    );
    let line = proxy.wait_stderr(&format!("containing {prefix:?}"), |l| l.contains(&prefix));
    assert!(line.ends_with("*DEAD*"), "{line:?}");
}

#[test]
fn dead_backend_time_0_means_30_seconds() {
    let (redis, proxy) = setup(&["--no-failover", "--dead-backend-time", "0"]);
    redis.set_frontend("a.com", &[&refused_url()]);
    assert_empty_503(&get(proxy.addr(), "a.com", "/", &[]));
    assert_eventually(SOON, "dead:a.com = {0}", || {
        redis.dead_members("a.com") == ["0"]
    });
    let t = ttl(&redis, "a.com");
    assert!((25..=30).contains(&t), "TTL = {t}, want about 30");
}

#[test]
fn dead_backend_time_defaults_to_30_seconds() {
    let (redis, proxy) = setup(&["--no-failover"]);
    redis.set_frontend("a.com", &[&refused_url()]);
    assert_empty_503(&get(proxy.addr(), "a.com", "/", &[]));
    assert_eventually(SOON, "dead:a.com = {0}", || {
        redis.dead_members("a.com") == ["0"]
    });
    let t = ttl(&redis, "a.com");
    assert!((25..=30).contains(&t), "TTL = {t}, want about 30");
}

#[test]
fn the_port_less_key_is_marked_after_the_fallback() {
    let (redis, proxy) = setup(&["--no-failover"]);
    let refused = refused_url();
    let good = Backend::named("good");
    redis.set_frontend("a.com", &[&refused, &good.url()]);
    let sub = redis.subscribe_dead();
    assert_empty_503(&get(proxy.addr(), "a.com:8080", "/", &[]));
    assert_eq!(
        sub.next(SOON).as_deref(),
        Some(format!("a.com;{refused};0;2").as_str())
    );
    assert_eventually(SOON, "dead:a.com = {0}", || {
        redis.dead_members("a.com") == ["0"]
    });
    assert!(!exists(&redis, "dead:a.com:8080"));
}

#[test]
fn the_wildcard_key_is_marked() {
    let (redis, proxy) = setup(&["--no-failover"]);
    let refused = refused_url();
    let good = Backend::named("good");
    redis.set_frontend("*.example.com", &[&refused, &good.url()]);
    let sub = redis.subscribe_dead();
    assert_empty_503(&get(proxy.addr(), "foo.example.com", "/", &[]));
    assert_eq!(
        sub.next(SOON).as_deref(),
        Some(format!("*.example.com;{refused};0;2").as_str())
    );
    assert_eventually(SOON, "dead:*.example.com = {0}", || {
        redis.dead_members("*.example.com") == ["0"]
    });
    assert!(!exists(&redis, "dead:foo.example.com"));
}

#[test]
fn failover_sends_the_request_to_the_next_live_backend() {
    let (redis, proxy) = setup(&[]);
    let good = Backend::named("good");
    let refused = refused_url();
    redis.set_frontend("a.com", &[&refused, &good.url()]);
    let sub = redis.subscribe_dead();
    let resp = request(proxy.addr(), "POST", "a.com", "/f", &[], b"payload");
    assert_eq!(resp.status, 200, "{}", resp.head_text());
    assert_eq!(resp.body_str(), "good");
    let req = good.single_request();
    assert_eq!(
        (req.target.as_str(), req.body_str().as_str()),
        ("/f", "payload")
    );
    assert_eq!(
        sub.next(SOON).as_deref(),
        Some(format!("a.com;{refused};0;2").as_str())
    );
    assert_eventually(SOON, "dead:a.com = {0}", || {
        redis.dead_members("a.com") == ["0"]
    });
}

#[test]
fn failover_with_every_backend_refused_is_an_empty_503() {
    let (redis, proxy) = setup(&[]);
    let (r1, r2) = (refused_url(), refused_url());
    redis.set_frontend("a.com", &[&r1, &r2]);
    assert_empty_503(&get(proxy.addr(), "a.com", "/", &[]));
    assert_eventually(SOON, "dead:a.com = {0, 1}", || {
        redis.dead_members("a.com") == ["0", "1"]
    });
}

#[test]
fn a_request_timeout_is_an_empty_503_not_dead_and_not_retried() {
    let (redis, proxy) = setup(&["--request-timeout", "1"]);
    let slow = Backend::start(|_| Reply::text(200, "late").delay(secs(4)));
    let good = Backend::named("good");
    redis.set_frontend("a.com", &[&slow.url(), &good.url()]);
    let sub = redis.subscribe_dead();
    let started = std::time::Instant::now();
    let resp = get(proxy.addr(), "a.com", "/slow", &[]);
    let elapsed = started.elapsed();
    assert_empty_503(&resp);
    assert!(
        elapsed < secs(3),
        "answered after {elapsed:?}, before the backend's 4 s"
    );
    assert!(
        elapsed >= millis(900),
        "answered after {elapsed:?}, before the 1 s timeout"
    );
    assert_eq!(slow.hits(), 1);
    assert_eq!(
        good.hits(),
        0,
        "a request that reached a backend is not replayed"
    );
    let prefix = format!(
        "ERROR in a.com -> {} - /slow - : - request timeout after",
        slow.url()
    );
    let line = proxy.wait_stderr(&format!("containing {prefix:?}"), |l| l.contains(&prefix));
    assert!(!line.contains("*DEAD*"), "{line:?}");
    assert_eq!(sub.next(millis(500)), None, "no dead message");
    assert!(!exists(&redis, "dead:a.com"));
}

#[test]
fn a_backend_500_is_passed_through_and_not_dead() {
    let (redis, proxy) = setup(&[]);
    let failing = Backend::start(|_| Reply::text(500, "boom").header("X-From", "backend"));
    redis.set_frontend("a.com", &[&failing.url()]);
    let sub = redis.subscribe_dead();
    let resp = get(proxy.addr(), "a.com", "/", &[]);
    assert_eq!(resp.status, 500);
    assert_eq!(resp.body_str(), "boom");
    assert_eq!(resp.header("x-from"), Some("backend"));
    assert_eq!(failing.hits(), 1);
    proxy.wait_access_log_lines(1);
    assert_eq!(sub.next(millis(300)), None, "no dead message");
    assert!(!exists(&redis, "dead:a.com"));
    assert_eq!(
        get(proxy.addr(), "a.com", "/", &[]).status,
        500,
        "still routed to"
    );
}

#[test]
fn a_backend_closing_without_answering_is_503_not_dead_and_not_retried() {
    let (redis, proxy) = setup(&[]);
    let closer = Backend::start(|_| Reply::abort());
    let good = Backend::named("good");
    redis.set_frontend("a.com", &[&closer.url(), &good.url()]);
    let sub = redis.subscribe_dead();
    assert_empty_503(&get(proxy.addr(), "a.com", "/", &[]));
    assert!(closer.hits() >= 1);
    assert_eq!(
        good.hits(),
        0,
        "the request was sent, so it is not replayed elsewhere"
    );
    let prefix = format!(
        "ERROR in a.com -> {} - / - : - error in backend request",
        closer.url()
    );
    let line = proxy.wait_stderr(&format!("containing {prefix:?}"), |l| l.contains(&prefix));
    assert!(!line.ends_with("*DEAD*"), "{line:?}");
    assert_eq!(sub.next(millis(300)), None, "no dead message");
    assert!(!exists(&redis, "dead:a.com"));
}

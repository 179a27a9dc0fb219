//! Graceful shutdown on SIGTERM / SIGINT (hypache improvement over docs/compat/planb.md#signals).

mod support;

use std::time::Instant;
use support::*;

#[test]
fn sigterm_drains_the_request_in_flight_and_refuses_new_connections() {
    let redis = RedisServer::start();
    let release = Gate::new();
    let gate = release.clone();
    let backend = Backend::start(move |_| Reply::text(200, "drained").wait_before_headers(&gate));
    redis.set_frontend("a.com", &[&backend.url()]);
    let mut proxy = Proxy::start(&redis, &[]);
    let addr = proxy.addr();

    let client = std::thread::spawn(move || get(addr, "a.com", "/slow", &[]));
    assert_eventually(SOON, "the request to reach the backend", || {
        backend.hits() == 1
    });

    proxy.signal("TERM");
    assert_eventually(SOON, "new connections to be refused", || {
        connection_refused(addr)
    });
    assert!(
        !client.is_finished(),
        "the in-flight request must still be pending"
    );
    assert!(
        proxy.try_exit().is_none(),
        "the process must wait for the request in flight"
    );

    release.open();
    let resp = client.join().expect("client thread");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_str(), "drained");

    let status = proxy.wait_exit(SOON);
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    let lines = proxy.access_log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"GET /slow HTTP/1.1\" 200 7 ")),
        "the in-flight request is in the access log: {lines:#?}"
    );
}

#[test]
fn sigint_stops_an_idle_proxy_with_status_0() {
    let redis = RedisServer::start();
    let mut proxy = Proxy::start(&redis, &[]);
    assert_eq!(get(proxy.addr(), "__ping__", "/", &[]).status, 200);
    proxy.signal("INT");
    let status = proxy.wait_exit(SOON);
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(connection_refused(proxy.addr()));
}

#[test]
fn the_shutdown_timeout_bounds_the_drain() {
    let redis = RedisServer::start();
    let never = Gate::new();
    let gate = never.clone();
    let backend = Backend::start(move |_| Reply::text(200, "too late").wait_before_headers(&gate));
    redis.set_frontend("a.com", &[&backend.url()]);
    let mut proxy = Proxy::start(&redis, &["--shutdown-timeout", "500ms"]);
    let addr = proxy.addr();
    let client = std::thread::spawn(move || {
        let mut conn = ClientConn::connect(addr);
        conn.send(&build_request("GET", Some("a.com"), "/stuck", &[], b""))
            .unwrap();
        conn.try_read_response(secs(15), false)
    });
    assert_eventually(SOON, "the request to reach the backend", || {
        backend.hits() == 1
    });
    let signalled = Instant::now();
    proxy.signal("TERM");
    proxy.wait_exit(secs(8));
    let elapsed = signalled.elapsed();
    assert!(!never.is_open());
    assert!(
        elapsed >= millis(400),
        "exited after {elapsed:?}, without waiting for the 500 ms drain"
    );
    let resp = client.join().expect("client thread");
    assert!(
        resp.as_ref().is_none_or(|r| r.status != 200),
        "the stuck request cannot have succeeded: {resp:?}"
    );
    never.open();
}

#[test]
fn sigterm_right_after_the_listening_line_is_graceful() {
    // Once `Listening on ...` is printed, SIGTERM must already be handled (exit 0, not killed).
    let redis = RedisServer::start();
    for _ in 0..3 {
        let mut proxy = Proxy::start(&redis, &[]);
        proxy.signal("TERM");
        let status = proxy.wait_exit(SOON);
        assert_eq!(status.code(), Some(0), "exit status {status:?}");
    }
}

//! Client-side timeouts (`--client-read-header-timeout`, `--client-idle-timeout`).

mod support;

use std::time::Instant;
use support::*;

#[test]
fn a_client_stalling_in_its_request_head_is_cut_off() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, &["--client-read-header-timeout", "500ms"]);
    let mut conn = ClientConn::connect(proxy.addr());
    conn.send(b"GET / HTTP/1.1\r\nHost: __ping__\r\n").unwrap();
    let started = Instant::now();
    assert!(
        conn.wait_closed(secs(5)),
        "connection still open 5 s after a 500 ms header timeout"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= millis(350),
        "closed after {elapsed:?}, before the timeout"
    );
    assert!(
        !String::from_utf8_lossy(&conn.buf).contains("200 OK"),
        "the stalled request was not served"
    );
    // Others are still served.
    assert_eq!(get(proxy.addr(), "__ping__", "/", &[]).status, 200);
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let redis = RedisServer::start();
    let backend = Backend::named("B1");
    redis.set_frontend("a.com", &[&backend.url()]);
    let proxy = Proxy::start(&redis, &["--client-idle-timeout", "500ms"]);
    let mut conn = ClientConn::connect(proxy.addr());
    conn.send(&build_request(
        "GET",
        Some("a.com"),
        "/",
        &[("Connection", "keep-alive")],
        b"",
    ))
    .unwrap();
    let resp = conn.read_response();
    assert_eq!(resp.body_str(), "B1");
    let started = Instant::now();
    assert!(
        conn.wait_closed(secs(5)),
        "idle connection still open 5 s after a 500 ms idle timeout"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= millis(250),
        "closed after {elapsed:?}, before the idle timeout"
    );
    assert!(
        conn.buf.is_empty(),
        "nothing else was sent: {:?}",
        String::from_utf8_lossy(&conn.buf)
    );
}

#[test]
fn a_keep_alive_connection_in_use_is_not_cut_by_the_idle_timeout() {
    let redis = RedisServer::start();
    let backend = Backend::start(|_| Reply::text(200, "slow").delay(millis(800)));
    redis.set_frontend("a.com", &[&backend.url()]);
    let proxy = Proxy::start(&redis, &["--client-idle-timeout", "500ms"]);
    let mut conn = ClientConn::connect(proxy.addr());
    conn.send(&build_request(
        "GET",
        Some("a.com"),
        "/",
        &[("Connection", "keep-alive")],
        b"",
    ))
    .unwrap();
    // The backend takes longer than the idle timeout; the request is not idle.
    assert_eq!(conn.read_response().body_str(), "slow");
}

//! Idle keep-alive connections are parked: once a response is written and nothing else waits (or, for a
//! connection hyper serves, shortly after), the connection's buffers are dropped and the socket waits on its
//! own; the next request on it is served as before.

mod support;

use support::metrics::scrape;
use support::*;

const PARKED: &str = "hypache_connections_parked";

fn start(redis: &RedisServer, extra: &[&str]) -> Proxy {
    let mut args = vec!["--metrics-address", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Proxy::start(redis, &args)
}

fn parked(proxy: &Proxy) -> f64 {
    scrape(proxy.metrics_addr()).value(PARKED)
}

fn request(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// A backend for `ka.test`, and a client connection to `proxy` that served `GET /one` and is now parked.
fn parked_connection(redis: &RedisServer, proxy: &Proxy) -> (Backend, ClientConn) {
    let backend = Backend::named("kept");
    redis.set_frontend("ka.test", &[&backend.url()]);
    let mut conn = ClientConn::connect(proxy.addr());
    conn.send(&request("ka.test", "/one")).unwrap();
    assert_eq!(conn.read_response().body_str(), "kept");
    assert_eventually(secs(5), "the idle connection parked", || {
        parked(proxy) == 1.0
    });
    (backend, conn)
}

#[test]
fn an_idle_connection_is_parked_and_its_next_request_is_served() {
    let redis = RedisServer::start();
    let proxy = start(&redis, &[]);
    let (backend, mut conn) = parked_connection(&redis, &proxy);
    // The next request arrives in two parts: the first wakes the parked socket.
    conn.send(b"GET /two HTTP/1.1\r\nHo").unwrap();
    conn.send(b"st: ka.test\r\n\r\n").unwrap();
    let resp = conn.read_response();
    assert_eq!((resp.status, resp.body_str().as_str()), (200, "kept"));
    assert_ne!(resp.header("connection"), Some("close"));
    let paths: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(paths, ["/one", "/two"]);
    // And it parks again.
    assert_eventually(secs(5), "parked again", || parked(&proxy) == 1.0);
    conn.send(&request("ka.test", "/three")).unwrap();
    assert_eq!(conn.read_response().status, 200);
}

#[test]
fn pipelined_heads_longer_than_the_first_read_after_parking_are_answered_in_order() {
    let redis = RedisServer::start();
    let proxy = start(&redis, &[]);
    let (backend, mut conn) = parked_connection(&redis, &proxy);
    // A parked socket's first read takes at most 512 bytes; the engine reads the rest of these two heads.
    let long = "x".repeat(3000);
    let mut bytes =
        format!("GET /two HTTP/1.1\r\nHost: ka.test\r\nX-Long: {long}\r\n\r\n").into_bytes();
    bytes.extend_from_slice(&request("ka.test", "/three"));
    conn.send(&bytes).unwrap();
    for _ in 0..2 {
        let resp = conn.read_response();
        assert_eq!((resp.status, resp.body_str().as_str()), (200, "kept"));
    }
    let seen = backend.requests();
    let paths: Vec<&str> = seen.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(paths, ["/one", "/two", "/three"]);
    assert_eq!(seen[1].header("x-long"), Some(long.as_str()));
}

#[test]
fn a_parked_connection_still_gets_the_idle_timeout_and_closes_on_shutdown() {
    let redis = RedisServer::start();
    let proxy = start(&redis, &["--client-idle-timeout", "2s"]);
    let (_backend, mut conn) = parked_connection(&redis, &proxy);
    assert!(
        conn.wait_closed(secs(5)),
        "the idle timeout closes a parked connection"
    );
    assert_eventually(secs(5), "no longer counted", || parked(&proxy) == 0.0);

    let mut proxy = proxy;
    let (_backend, mut conn) = parked_connection(&redis, &proxy);
    proxy.signal("TERM");
    assert!(
        conn.wait_closed(secs(5)),
        "shutdown closes parked connections"
    );
    assert_eq!(proxy.wait_exit(secs(5)).code(), Some(0));
}

#[test]
fn an_upgrade_request_after_parking_reaches_the_backend() {
    let redis = RedisServer::start();
    let proxy = start(&redis, &[]);
    let (backend, mut conn) = parked_connection(&redis, &proxy);
    // A plain backend refuses the upgrade with an ordinary answer, which comes back on the same connection.
    conn.send(
        b"GET /ws HTTP/1.1\r\nHost: ka.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let resp = conn.read_response();
    assert_eq!(resp.status, 200, "{}", resp.head_text());
    assert_eq!(backend.requests().last().unwrap().target, "/ws");
}

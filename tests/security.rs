//! Security defaults (docs/routing.md#security-defaults): bad input gets a clear answer and nothing else is affected.

mod support;

use support::*;

/// A proxy with a catch-all frontend, so anything that got routed would reach the backend.
fn setup(extra: &[&str]) -> (RedisServer, Proxy, Backend) {
    let redis = RedisServer::start();
    let backend = Backend::start(|req| Reply::text(200, &format!("seen {}", req.target)));
    redis.set_frontend("*", &[&backend.url()]);
    let proxy = Proxy::start(&redis, extra);
    (redis, proxy, backend)
}

/// A normal request still works, and it is the only one the backend ever saw.
#[track_caller]
fn assert_only_the_follow_up_reached_the_backend(proxy: &Proxy, backend: &Backend) {
    let resp = get(proxy.addr(), "good.com", "/ok", &[]);
    assert_eq!(resp.status, 200, "{}", resp.head_text());
    assert_eq!(resp.body_str(), "seen /ok");
    let targets: Vec<String> = backend.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/ok"], "rejected requests must not be forwarded");
}

#[test]
fn content_length_with_transfer_encoding_is_rejected_and_not_forwarded() {
    let (_redis, proxy, backend) = setup(&[]);
    let resp = exchange(
        proxy.addr(),
        b"POST /smuggle HTTP/1.1\r\nHost: a.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /inner HTTP/1.1\r\nHost: a.com\r\n\r\n",
    );
    assert_eq!(resp.status, 400, "{}", resp.head_text());
    let resp = exchange(
        proxy.addr(),
        b"POST /smuggle2 HTTP/1.1\r\nHost: a.com\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nConnection: close\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(resp.status, 400, "{}", resp.head_text());
    assert_only_the_follow_up_reached_the_backend(&proxy, &backend);
}

/// The same on a connection that already served requests, sent after a response and pipelined behind a
/// request: a request the proxy's own engine answered leaves the head counting right for the next one.
#[test]
fn content_length_with_transfer_encoding_is_rejected_after_other_requests_on_the_connection() {
    let (_redis, proxy, backend) = setup(&[]);
    let smuggle = b"POST /smuggle HTTP/1.1\r\nHost: a.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let mut conn = ClientConn::connect(proxy.addr());
    for path in ["/first", "/again"] {
        let head = format!("GET {path} HTTP/1.1\r\nHost: a.com\r\n\r\n");
        conn.send(head.as_bytes()).unwrap();
        assert_eq!(conn.read_response().body_str(), format!("seen {path}"));
    }
    conn.send(smuggle).unwrap();
    let resp = conn.read_response();
    assert_eq!(resp.status, 400, "{}", resp.head_text());

    // Two requests ahead of it in the same write: the first read (at most 512 bytes) takes all three heads.
    let mut conn = ClientConn::connect(proxy.addr());
    let mut pipelined = b"GET /second HTTP/1.1\r\nHost: a.com\r\n\r\n".to_vec();
    pipelined.extend_from_slice(b"GET /third HTTP/1.1\r\nHost: a.com\r\n\r\n");
    pipelined.extend_from_slice(smuggle);
    conn.send(&pipelined).unwrap();
    assert_eq!(conn.read_response().body_str(), "seen /second");
    assert_eq!(conn.read_response().body_str(), "seen /third");
    let resp = conn.read_response();
    assert_eq!(resp.status, 400, "{}", resp.head_text());

    let resp = get(proxy.addr(), "good.com", "/ok", &[]);
    assert_eq!(resp.status, 200, "{}", resp.head_text());
    let targets: Vec<String> = backend.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(
        targets,
        ["/first", "/again", "/second", "/third", "/ok"],
        "rejected requests must not be forwarded"
    );
}

#[test]
fn invalid_host_values_are_rejected() {
    let (_redis, proxy, backend) = setup(&[]);
    for host in ["a b.com", "a.com/evil", "a.com\x01x"] {
        let bytes = format!("GET /bad HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let resp = exchange(proxy.addr(), bytes.as_bytes());
        assert_eq!(resp.status, 400, "Host {host:?}: {}", resp.head_text());
    }
    assert_only_the_follow_up_reached_the_backend(&proxy, &backend);
}

#[test]
fn more_than_one_host_header_is_rejected() {
    let (_redis, proxy, backend) = setup(&[]);
    let resp = exchange(
        proxy.addr(),
        b"GET /two HTTP/1.1\r\nHost: a.com\r\nHost: b.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 400, "{}", resp.head_text());
    assert_only_the_follow_up_reached_the_backend(&proxy, &backend);
}

#[test]
fn an_oversized_request_head_is_431_and_the_proxy_keeps_serving() {
    let (_redis, proxy, backend) = setup(&[]);
    let big = "a".repeat(70 * 1024);
    let resp = exchange(
        proxy.addr(),
        &build_request("GET", Some("a.com"), "/big", &[("X-Big", &big)], b""),
    );
    assert_eq!(resp.status, 431, "{}", resp.head_text());
    assert_only_the_follow_up_reached_the_backend(&proxy, &backend);
}

#[test]
fn max_header_bytes_sets_the_limit() {
    let (_redis, proxy, backend) = setup(&["--max-header-bytes", "16384"]);
    let big = "b".repeat(20 * 1024);
    let resp = exchange(
        proxy.addr(),
        &build_request("GET", Some("a.com"), "/big", &[("X-Big", &big)], b""),
    );
    assert_eq!(
        resp.status,
        431,
        "a 20 KiB head is over a 16 KiB limit: {}",
        resp.head_text()
    );
    assert_only_the_follow_up_reached_the_backend(&proxy, &backend);
    let small = "s".repeat(8 * 1024);
    let resp = get(proxy.addr(), "a.com", "/small", &[("X-Small", &small)]);
    assert_eq!(
        resp.status,
        200,
        "an 8 KiB head is under a 16 KiB limit: {}",
        resp.head_text()
    );
    assert_eq!(resp.body_str(), "seen /small");
}

#[test]
fn an_absolute_uri_is_not_an_open_proxy() {
    let redis = RedisServer::start();
    let backend = Backend::named("secret");
    let proxy = Proxy::start(&redis, &[]);
    let bytes = format!(
        "GET http://{}/secret HTTP/1.1\r\nHost: a.com\r\nConnection: close\r\n\r\n",
        backend.addr()
    );
    let resp = exchange(proxy.addr(), bytes.as_bytes());
    assert_eq!(resp.status, 400, "{}", resp.head_text());
    assert_eq!(resp.body_str(), "no such route");
    assert_eq!(backend.hits(), 0);
}

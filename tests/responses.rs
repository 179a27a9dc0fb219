//! The proxy's own responses (docs/compat/planb.md#special-endpoint-and-error-responses, docs/compat/planb.md#debug-headers, docs/compat/planb.md#conformance-checklist items 4, 5, 10-12).

mod support;

use support::*;

fn setup(extra: &[&str]) -> (RedisServer, Proxy) {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, extra);
    (redis, proxy)
}

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

#[track_caller]
fn assert_text_response(resp: &Resp, status: u16, body: &str) {
    assert_eq!(resp.status, status, "{}", resp.head_text());
    assert_eq!(resp.body_str(), body, "{}", resp.head_text());
    assert_eq!(
        resp.header_all("content-type"),
        [TEXT_PLAIN],
        "{}",
        resp.head_text()
    );
    assert_eq!(
        resp.header_all("content-length"),
        [body.len().to_string()],
        "{}",
        resp.head_text()
    );
    assert!(
        resp.has_header("date"),
        "Date is added: {}",
        resp.head_text()
    );
    for h in [
        "server",
        "retry-after",
        "access-control-allow-origin",
        "transfer-encoding",
    ] {
        assert!(!resp.has_header(h), "unexpected {h}: {}", resp.head_text());
    }
}

/// 503 with `Content-Length: 0`, no Content-Type, empty body.
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
    assert!(!resp.has_header("content-type"), "{}", resp.head_text());
}

#[test]
fn ping_answers_ok() {
    let (_redis, proxy) = setup(&[]);
    let resp = get(proxy.addr(), "__ping__", "/", &[]);
    assert_eq!(resp.version, "HTTP/1.1");
    assert_text_response(&resp, 200, "OK");
}

#[test]
fn ping_answers_500_with_the_error_when_redis_is_down() {
    let (mut redis, proxy) = setup(&[]);
    assert_eq!(get(proxy.addr(), "__ping__", "/", &[]).status, 200);
    redis.stop();
    let resp = eventually(SOON, "__ping__ to fail with 500", || {
        let r = get(proxy.addr(), "__ping__", "/", &[]);
        (r.status == 500).then_some(r)
    });
    assert!(!resp.body.is_empty(), "the body carries the error text");
    assert_ne!(resp.body_str(), "OK");
}

#[test]
fn unknown_host_is_400_no_such_route() {
    let (_redis, proxy) = setup(&[]);
    let resp = get(proxy.addr(), "nope.com", "/", &[]);
    assert_text_response(&resp, 400, "no such route");
    assert!(
        resp.raw.starts_with(b"HTTP/1.1 400 Bad Request\r\n"),
        "{}",
        resp.head_text()
    );
    for h in [
        "x-debug-backend-url",
        "x-debug-backend-id",
        "x-debug-frontend-key",
    ] {
        assert!(
            !resp.has_header(h),
            "no debug headers without X-Debug-Router: {}",
            resp.head_text()
        );
    }
}

#[test]
fn an_identifier_only_list_is_400_no_such_route() {
    let (redis, proxy) = setup(&[]);
    redis.set_frontend("a.com", &[]);
    assert_text_response(&get(proxy.addr(), "a.com", "/", &[]), 400, "no such route");
}

#[test]
fn all_backends_dead_is_503() {
    let (redis, proxy) = setup(&[]);
    let (b1, b2) = (Backend::named("B1"), Backend::named("B2"));
    redis.set_frontend("a.com", &[&b1.url(), &b2.url()]);
    let _: i64 = redis.query(&["SADD", "dead:a.com", "0", "1"]);
    assert_text_response(
        &get(proxy.addr(), "a.com", "/", &[]),
        503,
        "all backends are dead",
    );
    assert_eq!(b1.hits() + b2.hits(), 0);
}

#[test]
fn a_redis_error_is_an_empty_503_and_is_logged() {
    let (redis, proxy) = setup(&[]);
    let _: () = redis.query(&["SET", "frontend:wrongtype.com", "x"]);
    assert_empty_503(&get(proxy.addr(), "wrongtype.com", "/", &[]));
    proxy.wait_stderr("with `ERROR in` and WRONGTYPE", |l| {
        l.contains("ERROR in") && l.contains("WRONGTYPE")
    });
}

#[test]
fn a_redis_error_does_not_fall_back_to_the_port_less_key() {
    let (redis, proxy) = setup(&[]);
    let b1 = Backend::named("B1");
    redis.set_frontend("a.com", &[&b1.url()]);
    let _: () = redis.query(&["SET", "frontend:a.com:1234", "x"]);
    assert_empty_503(&get(proxy.addr(), "a.com:1234", "/", &[]));
    assert_eq!(b1.hits(), 0);
}

#[test]
fn http11_without_host_is_rejected_with_gos_exact_status_line() {
    let (_redis, proxy) = setup(&[]);
    let mut conn = ClientConn::connect(proxy.addr());
    conn.send(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(conn.wait_closed(SOON), "the connection is closed");
    let raw = conn.buf.clone();
    let (msg, _) = support::http::parse_message(&raw, true, true, false).expect("a response");
    let text = String::from_utf8_lossy(&raw).to_string();
    assert!(
        text.starts_with("HTTP/1.1 400 Bad Request: missing required Host header\r\n"),
        "{text:?}"
    );
    assert_eq!(
        support::http::header(&msg.headers, "connection"),
        Some("close"),
        "{text:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&msg.body),
        "400 Bad Request: missing required Host header",
        "{text:?}"
    );
}

#[test]
fn http10_without_host_is_no_such_route() {
    let (_redis, proxy) = setup(&[]);
    let resp = exchange(proxy.addr(), b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(resp.status, 400);
    assert_eq!(resp.body_str(), "no such route");
}

#[test]
fn debug_headers_on_success() {
    let (redis, proxy) = setup(&[]);
    let (b1, b2) = (Backend::named("B1"), Backend::named("B2"));
    redis.set_frontend("a.com", &[&b1.url(), &b2.url()]);
    let dbg = [("X-Debug-Router", "1")];
    let r1 = get(proxy.addr(), "a.com", "/", &dbg);
    let r2 = get(proxy.addr(), "a.com:8080", "/", &dbg);
    let r3 = get(proxy.addr(), "a.com", "/", &dbg);
    assert_eq!(r1.header_all("x-debug-backend-url"), [b1.url()]);
    assert_eq!(r1.header_all("x-debug-backend-id"), ["0"]);
    assert_eq!(r1.header_all("x-debug-frontend-key"), ["a.com"]);
    assert_eq!(
        r2.header_all("x-debug-frontend-key"),
        ["a.com"],
        "port-stripped key after the fallback"
    );
    assert_eq!(r3.header_all("x-debug-backend-url"), [b2.url()]);
    assert_eq!(r3.header_all("x-debug-backend-id"), ["1"]);
    assert_eq!(r3.body_str(), "B2");
}

#[test]
fn no_debug_headers_when_x_debug_router_is_empty() {
    let (redis, proxy) = setup(&[]);
    let b1 = Backend::named("B1");
    redis.set_frontend("a.com", &[&b1.url()]);
    let resp = get(proxy.addr(), "a.com", "/", &[("X-Debug-Router", "")]);
    assert_eq!(resp.status, 200);
    for h in [
        "x-debug-backend-url",
        "x-debug-backend-id",
        "x-debug-frontend-key",
    ] {
        assert!(!resp.has_header(h), "{}", resp.head_text());
    }
}

#[test]
fn debug_headers_on_no_route() {
    let (_redis, proxy) = setup(&[]);
    let resp = get(proxy.addr(), "nope.com", "/", &[("X-Debug-Router", "1")]);
    assert_text_response(&resp, 400, "no such route");
    assert_eq!(resp.header_all("x-debug-backend-url"), [""]);
    assert_eq!(resp.header_all("x-debug-backend-id"), ["0"]);
    assert_eq!(
        resp.header_all("x-debug-frontend-key").len(),
        1,
        "{}",
        resp.head_text()
    );
}

#[test]
fn debug_headers_on_all_dead() {
    let (redis, proxy) = setup(&[]);
    let b1 = Backend::named("B1");
    redis.set_frontend("a.com", &[&b1.url()]);
    let _: i64 = redis.query(&["SADD", "dead:a.com", "0"]);
    let resp = get(proxy.addr(), "a.com:8080", "/", &[("X-Debug-Router", "1")]);
    assert_text_response(&resp, 503, "all backends are dead");
    assert_eq!(resp.header_all("x-debug-backend-url"), [""]);
    assert_eq!(resp.header_all("x-debug-backend-id"), ["0"]);
    assert_eq!(resp.header_all("x-debug-frontend-key"), ["a.com"]);
}

#[test]
fn debug_headers_on_backend_failure() {
    let (redis, proxy) = setup(&["--no-failover"]);
    let refused = refused_url();
    redis.set_frontend("a.com", &[&refused]);
    let resp = get(proxy.addr(), "a.com", "/", &[("X-Debug-Router", "1")]);
    assert_empty_503(&resp);
    assert_eq!(resp.header_all("x-debug-backend-url"), [refused.as_str()]);
    assert_eq!(resp.header_all("x-debug-backend-id"), ["0"]);
    assert_eq!(resp.header_all("x-debug-frontend-key"), ["a.com"]);
}

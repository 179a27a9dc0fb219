//! What the backend receives and what the client gets back (docs/compat/planb.md#headers, docs/compat/planb.md#conformance-checklist item 9).

mod support;

use support::*;

fn setup(extra: &[&str]) -> (RedisServer, Proxy) {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, extra);
    (redis, proxy)
}

/// A proxy with `a.com` -> one backend answering `handler`.
fn one_backend(
    extra: &[&str],
    handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
) -> (RedisServer, Proxy, Backend) {
    let (redis, proxy) = setup(extra);
    let backend = Backend::start(handler);
    redis.set_frontend("a.com", &[&backend.url()]);
    (redis, proxy, backend)
}

fn ok(_: &Request) -> Reply {
    Reply::text(200, "ok")
}

#[test]
fn a_request_id_is_generated_when_missing_or_empty() {
    let (_r, proxy, backend) = one_backend(&["--request-id-header", "X-Request-Id"], ok);
    let r1 = get(proxy.addr(), "a.com", "/", &[]);
    let r2 = get(proxy.addr(), "a.com", "/", &[("X-Request-Id", "")]);
    assert_eq!((r1.status, r2.status), (200, 200));
    let reqs = backend.requests();
    let ids: Vec<Vec<&str>> = reqs.iter().map(|r| r.header_all("x-request-id")).collect();
    for id in &ids {
        assert_eq!(id.len(), 1, "exactly one id header: {ids:?}");
        assert!(
            is_uuid_v4_lower(id[0]),
            "not a lowercase v4 uuid: {:?}",
            id[0]
        );
    }
    assert_ne!(ids[0], ids[1], "ids are unique");
    assert!(
        !r1.has_header("x-request-id"),
        "the id is not in the response: {}",
        r1.head_text()
    );
}

#[test]
fn an_existing_request_id_is_kept() {
    let (_r, proxy, backend) = one_backend(&["--request-id-header", "x-request-id"], ok);
    let resp = get(proxy.addr(), "a.com", "/", &[("X-Request-Id", "given-id")]);
    assert!(!resp.has_header("x-request-id"));
    assert_eq!(
        backend.single_request().header_all("x-request-id"),
        ["given-id"]
    );
}

#[test]
fn no_request_id_header_without_the_flag() {
    let (_r, proxy, backend) = one_backend(&[], ok);
    get(proxy.addr(), "a.com", "/", &[]);
    let req = backend.single_request();
    assert!(!req.has_header("x-request-id"), "{req:?}");
}

#[test]
fn hop_by_hop_request_headers_are_removed() {
    let (_r, proxy, backend) = one_backend(&[], ok);
    let resp = get(
        proxy.addr(),
        "a.com",
        "/hop",
        &[
            ("Connection", "close, X-Hop"),
            ("X-Hop", "secret"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Upgrade", "h2c"),
            ("Trailer", "X-Whatever"),
            ("TE", "gzip"),
            ("X-Keep", "yes"),
        ],
    );
    assert_eq!(resp.status, 200);
    let req = backend.single_request();
    for h in [
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "upgrade",
        "trailer",
        "te",
    ] {
        assert!(
            !req.has_header(h),
            "{h} must not reach the backend: {:#?}",
            req.headers
        );
    }
    for v in req.header_all("connection") {
        assert!(
            v.eq_ignore_ascii_case("keep-alive"),
            "client Connection must not be forwarded: {v:?}"
        );
    }
    assert_eq!(req.header_all("x-keep"), ["yes"]);
    assert_eq!(req.version, "HTTP/1.1");
}

#[test]
fn te_trailers_is_kept() {
    let (_r, proxy, backend) = one_backend(&[], ok);
    get(proxy.addr(), "a.com", "/", &[("TE", "trailers")]);
    assert_eq!(backend.single_request().header_all("te"), ["trailers"]);
}

#[test]
fn x_forwarded_for_values_are_joined_and_the_peer_appended() {
    let (_r, proxy, backend) = one_backend(&[], ok);
    get(
        proxy.addr(),
        "a.com",
        "/",
        &[
            ("X-Forwarded-For", "1.1.1.1"),
            ("X-Forwarded-For", "2.2.2.2"),
        ],
    );
    get(proxy.addr(), "a.com", "/", &[]);
    let reqs = backend.requests();
    assert_eq!(
        reqs[0].header_all("x-forwarded-for"),
        ["1.1.1.1, 2.2.2.2, 127.0.0.1"]
    );
    assert_eq!(reqs[1].header_all("x-forwarded-for"), ["127.0.0.1"]);
}

#[test]
fn a_hostname_backend_gets_its_own_host_and_x_host() {
    let (redis, proxy) = setup(&[]);
    let backend = Backend::start(ok);
    redis.set_frontend("named.com", &[&backend.localhost_url()]);
    let resp = get(
        proxy.addr(),
        "named.com:8080",
        "/",
        &[("X-Forwarded-Host", "orig"), ("X-Host", "orig2")],
    );
    assert_eq!(resp.status, 200, "{}", resp.head_text());
    let req = backend.single_request();
    assert_eq!(req.header_all("host"), ["localhost"]);
    assert_eq!(req.header_all("x-host"), ["named.com:8080"]);
    assert_eq!(req.header_all("x-forwarded-host"), ["named.com:8080"]);
}

#[test]
fn an_ip_backend_keeps_host_and_client_x_host() {
    let (redis, proxy) = setup(&[]);
    let backend = Backend::start(ok);
    redis.set_frontend("myapp.com", &[&backend.url()]);
    get(
        proxy.addr(),
        "myapp.com:1234",
        "/",
        &[("X-Host", "mine"), ("X-Forwarded-Host", "fh")],
    );
    get(proxy.addr(), "myapp.com", "/", &[]);
    let reqs = backend.requests();
    assert_eq!(reqs[0].header_all("host"), ["myapp.com:1234"]);
    assert_eq!(reqs[0].header_all("x-host"), ["mine"]);
    assert_eq!(reqs[0].header_all("x-forwarded-host"), ["fh"]);
    assert!(
        !reqs[1].has_header("x-host") && !reqs[1].has_header("x-forwarded-host"),
        "{:#?}",
        reqs[1].headers
    );
}

#[test]
fn x_forwarded_proto_is_added_only_when_absent() {
    let (_r, proxy, backend) = one_backend(&[], ok);
    get(proxy.addr(), "a.com", "/", &[]);
    get(
        proxy.addr(),
        "a.com",
        "/",
        &[("X-Forwarded-Proto", "https")],
    );
    let reqs = backend.requests();
    assert_eq!(reqs[0].header_all("x-forwarded-proto"), ["http"]);
    assert_eq!(reqs[1].header_all("x-forwarded-proto"), ["https"]);
}

#[test]
fn no_via_real_ip_or_forwarded_is_added_and_client_values_pass() {
    let (_r, proxy, backend) = one_backend(&[], ok);
    get(proxy.addr(), "a.com", "/", &[]);
    get(
        proxy.addr(),
        "a.com",
        "/",
        &[
            ("Via", "1.1 upstream"),
            ("X-Real-IP", "9.9.9.9"),
            ("Forwarded", "for=9.9.9.9"),
        ],
    );
    let reqs = backend.requests();
    for h in ["via", "x-real-ip", "forwarded", "x-forwarded-port"] {
        assert!(!reqs[0].has_header(h), "{h} added: {:#?}", reqs[0].headers);
    }
    assert_eq!(reqs[1].header_all("via"), ["1.1 upstream"]);
    assert_eq!(reqs[1].header_all("x-real-ip"), ["9.9.9.9"]);
    assert_eq!(reqs[1].header_all("forwarded"), ["for=9.9.9.9"]);
}

#[test]
fn x_debug_router_is_not_forwarded() {
    let (_r, proxy, backend) = one_backend(&[], ok);
    let resp = get(proxy.addr(), "a.com", "/", &[("X-Debug-Router", "1")]);
    assert!(resp.has_header("x-debug-frontend-key"));
    assert!(!backend.single_request().has_header("x-debug-router"));
}

#[test]
fn path_and_query_are_forwarded_as_received() {
    let (_r, proxy, backend) = one_backend(&[], ok);
    get(proxy.addr(), "a.com", "/a%20b/c?x=1&y=%2F&z", &[]);
    assert_eq!(backend.single_request().target, "/a%20b/c?x=1&y=%2F&z");
}

#[test]
fn request_bodies_reach_the_backend() {
    let (_r, proxy, backend) = one_backend(&[], |req| {
        Reply::text(200, &format!("got {}", req.body.len()))
    });
    let resp = request(
        proxy.addr(),
        "POST",
        "a.com",
        "/up",
        &[("Content-Encoding", "gzip")],
        b"hello body",
    );
    assert_eq!(resp.body_str(), "got 10");
    let resp = request(
        proxy.addr(),
        "PUT",
        "a.com",
        "/up",
        &[("Transfer-Encoding", "chunked")],
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    assert_eq!(resp.body_str(), "got 5");
    let reqs = backend.requests();
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].body_str().as_str()),
        ("POST", "hello body")
    );
    assert_eq!(
        reqs[0].header_all("content-encoding"),
        ["gzip"],
        "Content-Encoding is kept"
    );
    assert_eq!(reqs[0].header_all("content-length"), ["10"]);
    assert_eq!(
        (reqs[1].method.as_str(), reqs[1].body_str().as_str()),
        ("PUT", "abcde")
    );
}

#[test]
fn status_headers_and_body_pass_through() {
    let (_r, proxy, _backend) = one_backend(&[], |_| {
        Reply::new(201)
            .header("X-Custom", "a")
            .header("X-Custom", "b")
            .header("Set-Cookie", "a=1")
            .header("Set-Cookie", "b=2")
            .header("Server", "test-backend/1.0")
            .header("Date", "Tue, 01 Jan 2030 00:00:00 GMT")
            .body(b"created")
    });
    let resp = get(proxy.addr(), "a.com", "/", &[]);
    assert_eq!(resp.status, 201);
    assert_eq!(resp.body_str(), "created");
    assert_eq!(resp.header_all("x-custom"), ["a", "b"]);
    assert_eq!(resp.header_all("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(resp.header_all("server"), ["test-backend/1.0"]);
    assert_eq!(resp.header_all("date"), ["Tue, 01 Jan 2030 00:00:00 GMT"]);
    assert_eq!(resp.header_all("content-length"), ["7"]);
}

#[test]
fn redirects_are_passed_to_the_client() {
    let (_r, proxy, backend) = one_backend(&[], |_| {
        Reply::new(302).header("Location", "http://elsewhere.example/")
    });
    let resp = get(proxy.addr(), "a.com", "/", &[]);
    assert_eq!(resp.status, 302);
    assert_eq!(resp.header("location"), Some("http://elsewhere.example/"));
    assert_eq!(backend.hits(), 1);
}

#[test]
fn hop_by_hop_response_headers_are_removed() {
    let (_r, proxy, _backend) = one_backend(&[], |_| {
        Reply::text(200, "hi")
            .header("Connection", "keep-alive, X-Backend-Hop")
            .header("Keep-Alive", "timeout=5, max=100")
            .header("X-Backend-Hop", "1")
            .header("X-Stay", "1")
    });
    let resp = get(proxy.addr(), "a.com", "/", &[]);
    assert_eq!(resp.body_str(), "hi");
    assert!(!resp.has_header("keep-alive"), "{}", resp.head_text());
    assert!(!resp.has_header("x-backend-hop"), "{}", resp.head_text());
    for v in resp.header_all("connection") {
        assert!(
            !v.to_ascii_lowercase().contains("keep-alive")
                && !v.to_ascii_lowercase().contains("x-backend-hop"),
            "{}",
            resp.head_text()
        );
    }
    assert_eq!(resp.header_all("x-stay"), ["1"]);
}

#[test]
fn trailers_are_forwarded() {
    let (_r, proxy, _backend) = one_backend(&[], |_| {
        Reply::new(200).header("Trailer", "X-Tr").chunked(
            vec![
                Step::Data(b"hello ".to_vec()),
                Step::Data(b"world".to_vec()),
            ],
            &[("X-Tr", "done")],
        )
    });
    let resp = get(proxy.addr(), "a.com", "/", &[("TE", "trailers")]);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_str(), "hello world");
    assert!(resp.chunked, "{}", resp.head_text());
    assert_eq!(
        resp.trailer("x-tr"),
        Some("done"),
        "trailers: {:?}",
        resp.trailers
    );
}

#[test]
fn a_streamed_response_reaches_the_client_chunk_by_chunk() {
    let (gate1, gate2) = (Gate::new(), Gate::new());
    let (g1, g2) = (gate1.clone(), gate2.clone());
    let (_r, proxy, _backend) = one_backend(&[], move |_| {
        Reply::new(200).chunked(
            vec![
                Step::Data(b"chunk-one;".to_vec()),
                Step::Wait(g1.clone()),
                Step::Data(b"chunk-two;".to_vec()),
                Step::Wait(g2.clone()),
                Step::Data(b"chunk-three".to_vec()),
            ],
            &[],
        )
    });
    let mut conn = ClientConn::connect(proxy.addr());
    conn.send(&build_request("GET", Some("a.com"), "/stream", &[], b""))
        .unwrap();
    // The backend holds the rest until the client has seen each chunk.
    assert!(
        conn.read_until_contains(b"chunk-one;", secs(5)),
        "first chunk not delivered while the backend waits"
    );
    assert!(!gate1.is_open());
    gate1.open();
    assert!(
        conn.read_until_contains(b"chunk-two;", secs(5)),
        "second chunk not delivered while the backend waits"
    );
    gate2.open();
    let resp = conn.read_response();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_str(), "chunk-one;chunk-two;chunk-three");
}

#[test]
fn a_keep_alive_client_can_send_several_requests() {
    let (redis, proxy) = setup(&[]);
    let (b1, b2) = (Backend::named("B1"), Backend::named("B2"));
    redis.set_frontend("a.com", &[&b1.url(), &b2.url()]);
    let mut conn = ClientConn::connect(proxy.addr());
    let mut bodies = Vec::new();
    for _ in 0..3 {
        conn.send(&build_request(
            "GET",
            Some("a.com"),
            "/",
            &[("Connection", "keep-alive")],
            b"",
        ))
        .unwrap();
        bodies.push(conn.read_response().body_str());
    }
    assert_eq!(bodies, ["B1", "B2", "B1"]);
}

#[test]
fn an_http10_client_is_answered_and_the_backend_gets_http11() {
    let (_r, proxy, backend) = one_backend(&[], ok);
    let resp = exchange(proxy.addr(), b"GET /old HTTP/1.0\r\nHost: a.com\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_str(), "ok");
    let req = backend.single_request();
    assert_eq!(req.version, "HTTP/1.1");
    assert_eq!(req.target, "/old");
}

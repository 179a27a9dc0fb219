//! The client side of HTTP/1 as the proxy's own server handles it (docs/http1.md): a client that goes away
//! while its request is handled, a client that asks to close, a connection whose requests alternate between
//! the proxy's server and hyper's, request bodies of both framings read on a kept-alive connection, and a body
//! the proxy never reads (skipped, or the connection closed after lingering). Some backends are raw sockets, so what they see is exact.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::sync::mpsc;

use support::*;

fn backend_for(redis: &RedisServer, host: &str) -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    redis.set_frontend(host, &[&url]);
    listener
}

/// Read until `buf` ends a request head; false when the stream ends first.
fn read_head(stream: &mut impl Read, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// Send `request`, for a host without a route, and read the proxy's `400`, which says the connection closes
/// (the request's body was not read to its end).
fn refused_saying_close(conn: &mut ClientConn, request: &[u8]) {
    conn.send(request).unwrap();
    let resp = conn.read_response();
    assert_eq!(resp.status, 400, "{}", resp.head_text());
    assert_eq!(
        resp.header("connection"),
        Some("close"),
        "{}",
        resp.head_text()
    );
}

#[test]
fn a_client_that_goes_away_while_its_request_is_handled_lets_go_of_the_backend() {
    let redis = RedisServer::start();
    let listener = backend_for(&redis, "slow.test");
    let proxy = Proxy::start(&redis, &[]);
    let (got_head, head_seen) = mpsc::channel();
    let backend = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(secs(20))).unwrap();
        let mut buf = Vec::new();
        assert!(read_head(&mut stream, &mut buf));
        got_head.send(()).unwrap();
        // Never answers: the proxy must close this connection once its client is gone.
        let mut rest = [0u8; 64];
        stream.read(&mut rest).map_err(|e| e.kind())
    });
    let mut client = ClientConn::connect(proxy.addr());
    client
        .send(b"GET /slow HTTP/1.1\r\nHost: slow.test\r\n\r\n")
        .unwrap();
    head_seen
        .recv_timeout(secs(10))
        .expect("the backend got the request");
    drop(client);
    // `Ok(0)`: the proxy closed it; a timeout would be an error of kind WouldBlock or TimedOut.
    assert_eq!(backend.join().unwrap(), Ok(0));
}

#[test]
fn a_client_that_asks_to_close_gets_connection_close_and_the_end_of_the_stream() {
    let redis = RedisServer::start();
    let backend = Backend::named("closing");
    redis.set_frontend("close.test", &[&backend.url()]);
    let proxy = Proxy::start(&redis, &[]);
    let mut conn = ClientConn::connect(proxy.addr());
    conn.send(b"GET / HTTP/1.1\r\nHost: close.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let resp = conn.read_response();
    assert_eq!(resp.status, 200, "{}", resp.head_text());
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(resp.header("date").is_some(), "{}", resp.head_text());
    assert!(
        conn.wait_closed(secs(5)),
        "the proxy closes after the answer"
    );
}

#[test]
fn requests_with_and_without_bodies_alternate_on_one_connection() {
    let redis = RedisServer::start();
    let backend = Backend::start(|req| {
        Reply::text(
            200,
            &format!("{} {} {}", req.method, req.target, req.body.len()),
        )
    });
    redis.set_frontend("mixed.test", &[&backend.url()]);
    let proxy = Proxy::start(&redis, &[]);
    let mut conn = ClientConn::connect(proxy.addr());
    let exchanges: [(&[u8], &str); 4] = [
        (b"GET /a HTTP/1.1\r\nHost: mixed.test\r\n\r\n", "GET /a 0"),
        (
            b"POST /b HTTP/1.1\r\nHost: mixed.test\r\nContent-Length: 5\r\n\r\nhello",
            "POST /b 5",
        ),
        (b"HEAD /c HTTP/1.1\r\nHost: mixed.test\r\n\r\n", ""),
        (b"GET /d HTTP/1.1\r\nHost: mixed.test\r\n\r\n", "GET /d 0"),
    ];
    for (request, body) in exchanges {
        conn.send(request).unwrap();
        let head_request = request.starts_with(b"HEAD");
        let resp = conn
            .try_read_response(secs(10), head_request)
            .expect("an answer");
        assert_eq!(resp.status, 200, "{}", resp.head_text());
        assert_eq!(
            resp.body_str(),
            body,
            "{}",
            String::from_utf8_lossy(request)
        );
    }
    let targets: Vec<String> = backend.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/a", "/b", "/c", "/d"]);
    // The same connection still serves, and ends when asked.
    conn.send(b"GET /e HTTP/1.1\r\nHost: mixed.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(conn.read_response().body_str(), "GET /e 0");
    assert!(conn.wait_closed(secs(5)));
}

#[test]
fn chunked_and_length_bodies_reach_the_backend_whole_and_the_connection_carries_on() {
    let redis = RedisServer::start();
    let backend = Backend::start(|req| {
        Reply::text(
            200,
            &format!("{} {} {}", req.target, req.chunked, req.body_str()),
        )
    });
    redis.set_frontend("bodies.test", &[&backend.url()]);
    let proxy = Proxy::start(&redis, &[]);
    let mut conn = ClientConn::connect(proxy.addr());
    // Three requests in one write: a chunked body with an extension and a trailer, a body by length, a GET.
    conn.send(
        b"POST /chunked HTTP/1.1\r\nHost: bodies.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n\
          PUT /length HTTP/1.1\r\nHost: bodies.test\r\nContent-Length: 7\r\n\r\nsized!!\
          GET /after HTTP/1.1\r\nHost: bodies.test\r\n\r\n",
    )
    .unwrap();
    for expected in [
        "/chunked true hello world",
        "/length false sized!!",
        "/after false ",
    ] {
        let resp = conn.read_response();
        assert_eq!(resp.status, 200, "{}", resp.head_text());
        assert_eq!(resp.body_str(), expected);
        assert_eq!(resp.header("connection"), None, "{}", resp.head_text());
    }
    assert_eq!(backend.hits(), 3);
}

#[test]
fn a_body_the_proxy_does_not_read_is_skipped_when_all_there_and_closes_the_connection_otherwise() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, &[]);
    // No route: the proxy answers without reading the body.
    let mut conn = ClientConn::connect(proxy.addr());
    conn.send(
        b"POST / HTTP/1.1\r\nHost: nowhere.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .unwrap();
    let resp = conn.read_response();
    assert_eq!(resp.status, 400, "{}", resp.head_text());
    assert_eq!(resp.header("connection"), None, "{}", resp.head_text());
    // Its body was all there: what the proxy had not read of it is skipped, and the next request on the
    // connection is read from after it.
    conn.send(b"GET /next HTTP/1.1\r\nHost: nowhere.test\r\n\r\n")
        .unwrap();
    assert_eq!(conn.read_response().body_str(), "no such route");
    // A body of which only a part has come: the answer says the connection closes, and it does.
    refused_saying_close(
        &mut conn,
        b"POST / HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: 100000\r\n\r\nfirst",
    );
    assert!(
        conn.wait_closed(secs(5)),
        "the proxy closes after the answer"
    );
}

#[test]
fn after_refusing_an_upload_the_proxy_lingers_until_the_client_stops_sending() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, &[]);
    let mut conn = ClientConn::connect(proxy.addr());
    // No route: answered at once, without reading the body.
    refused_saying_close(
        &mut conn,
        b"POST / HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: 4000000\r\n\r\n",
    );
    // The client goes on sending its body, as a client that does not read while it uploads would. Had the
    // proxy closed the socket with those bytes unread, its kernel would reset the connection: these writes
    // would fail, and a reset can destroy an answer the client has not read yet.
    for _ in 0..8 {
        conn.send(&[b'x'; 64 * 1024])
            .expect("the proxy still reads what the client sends");
    }
    conn.shutdown_write();
    assert!(
        conn.wait_closed(secs(10)),
        "the proxy closes once the client stopped sending"
    );
    assert!(conn.buf.is_empty(), "nothing after the answer");
}

#[test]
fn a_client_that_expects_100_continue_is_told_when_its_body_is_wanted() {
    let redis = RedisServer::start();
    let backend = Backend::start(|req| Reply::text(200, &format!("got {}", req.body_str())));
    redis.set_frontend("expect.test", &[&backend.url()]);
    let proxy = Proxy::start(&redis, &[]);
    let mut conn = ClientConn::connect(proxy.addr());
    conn.send(b"PUT /up HTTP/1.1\r\nHost: expect.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    // Nothing of the body is sent until the proxy says so.
    assert!(
        conn.read_until_contains(b"HTTP/1.1 100 Continue\r\n\r\n", secs(10)),
        "{:?}",
        String::from_utf8_lossy(&conn.buf)
    );
    conn.buf.drain(..25);
    conn.send(b"hello").unwrap();
    let resp = conn.read_response();
    assert_eq!(resp.status, 200, "{}", resp.head_text());
    assert_eq!(resp.body_str(), "got hello");
    // A request the proxy refuses before wanting its body: no 100, and the connection closes after the answer.
    refused_saying_close(
        &mut conn,
        b"PUT /up HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    assert!(conn.wait_closed(secs(5)));
    assert!(
        conn.buf.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&conn.buf)
    );
}

#[test]
fn bytes_sent_right_behind_an_upgrade_request_reach_the_tunnel() {
    let redis = RedisServer::start();
    let listener = backend_for(&redis, "ws.test");
    let proxy = Proxy::start(&redis, &[]);
    // A raw backend: answers 101, then echoes whatever comes.
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        assert!(read_head(&mut stream, &mut buf));
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        std::io::Write::write_all(
            &mut stream,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .unwrap();
        std::io::Write::write_all(&mut stream, &buf[end..]).unwrap();
        let mut chunk = [0u8; 1024];
        while let Ok(n) = stream.read(&mut chunk) {
            if n == 0 || std::io::Write::write_all(&mut stream, &chunk[..n]).is_err() {
                break;
            }
        }
    });
    let mut conn = ClientConn::connect(proxy.addr());
    // The first bytes of the upgraded protocol go out with the request, before any answer.
    conn.send(b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nearly")
        .unwrap();
    assert!(
        conn.read_until_contains(b"early", secs(10)),
        "{:?}",
        String::from_utf8_lossy(&conn.buf)
    );
    assert!(conn
        .buf
        .starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    conn.buf.clear();
    conn.send(b"later").unwrap();
    assert!(conn.read_until_contains(b"later", secs(10)));
}

#[test]
fn an_upgrade_the_backend_declines_leaves_an_http_connection() {
    let redis = RedisServer::start();
    let backend = Backend::start(|req| Reply::text(400, &format!("no upgrade for {}", req.target)));
    redis.set_frontend("declined.test", &[&backend.url()]);
    let proxy = Proxy::start(&redis, &[]);
    let mut conn = ClientConn::connect(proxy.addr());
    conn.send(b"GET /ws HTTP/1.1\r\nHost: declined.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        .unwrap();
    let resp = conn.read_response();
    assert_eq!(resp.status, 400, "{}", resp.head_text());
    assert_eq!(resp.body_str(), "no upgrade for /ws");
    conn.send(b"GET /next HTTP/1.1\r\nHost: declined.test\r\n\r\n")
        .unwrap();
    assert_eq!(conn.read_response().body_str(), "no upgrade for /next");
}

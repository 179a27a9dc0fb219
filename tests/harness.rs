//! Self-tests of the harness in `tests/support` (no hypache involved), so a failure elsewhere
//! can be told apart from a harness bug.

mod support;

use support::logline::{assert_access_line, parse_access_line};
use support::*;

#[test]
fn redis_tcp_unix_and_password_servers_answer() {
    let tcp = RedisServer::start();
    tcp.set_frontend("a.com", &["http://x", "http://y"]);
    let list: Vec<String> = tcp.query(&["LRANGE", "frontend:a.com", "0", "-1"]);
    assert_eq!(list, ["id-a.com", "http://x", "http://y"]);

    let unix = RedisServer::start_unix();
    assert!(unix.socket_path().exists());
    let pong: String = unix.query(&["PING"]);
    assert_eq!(pong, "PONG");

    let mut pw = RedisServer::start_with_password("s3cret");
    let pong: String = pw.query(&["PING"]);
    assert_eq!(pong, "PONG");
    let port = pw.port();
    pw.stop();
    assert!(connection_refused(
        format!("127.0.0.1:{port}").parse().unwrap()
    ));
}

#[test]
fn subscriber_sees_published_messages() {
    let redis = RedisServer::start();
    let sub = redis.subscribe_dead();
    let n: i64 = redis.query(&["PUBLISH", "dead", "a.com;http://x;0;2"]);
    assert_eq!(n, 1);
    assert_eq!(sub.next(secs(5)).as_deref(), Some("a.com;http://x;0;2"));
}

#[test]
fn backend_records_requests_and_streams_chunks_with_trailers() {
    let gate = Gate::new();
    let g = gate.clone();
    let backend = Backend::start(move |req| {
        if req.target == "/chunked" {
            Reply::new(200).header("Trailer", "X-Tr").chunked(
                vec![
                    Step::Data(b"one".to_vec()),
                    Step::Wait(g.clone()),
                    Step::Data(b"two".to_vec()),
                ],
                &[("X-Tr", "done")],
            )
        } else {
            Reply::text(201, &req.body_str())
        }
    });
    let resp = request(
        backend.addr(),
        "POST",
        "h.com",
        "/echo",
        &[
            ("X-Dup", "1"),
            ("X-Dup", "2"),
            ("Transfer-Encoding", "chunked"),
        ],
        b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Req-Tr: t\r\n\r\n",
    );
    assert_eq!(resp.status, 201);
    assert_eq!(resp.reason, "Created");
    assert_eq!(resp.body_str(), "abcde");
    let req = backend.single_request();
    assert_eq!(req.method, "POST");
    assert_eq!(req.target, "/echo");
    assert_eq!(req.header_all("x-dup"), ["1", "2"]);
    assert!(req.chunked);
    assert_eq!(req.trailers, [("X-Req-Tr".to_string(), "t".to_string())]);

    let mut conn = ClientConn::connect(backend.addr());
    conn.send(&build_request("GET", Some("h.com"), "/chunked", &[], b""))
        .unwrap();
    assert!(conn.read_until_contains(b"one", secs(5)));
    assert!(
        !conn.read_until_contains(b"two", millis(50)),
        "gate must hold the second chunk"
    );
    gate.open();
    let resp = conn.read_response();
    assert!(resp.chunked);
    assert_eq!(resp.body_str(), "onetwo");
    assert_eq!(resp.trailer("x-tr"), Some("done"));
    assert_eq!(backend.hits(), 2);
}

#[test]
fn response_parser_handles_close_delimited_bodies() {
    let backend = Backend::start(|_| Reply::new(400).until_close(b"bye"));
    let raw = raw_request(backend.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(raw, b"HTTP/1.1 400 Bad Request\r\n\r\nbye");
    let resp = get(backend.addr(), "x", "/", &[]);
    assert_eq!(resp.body_str(), "bye");
}

#[test]
fn refused_addr_refuses() {
    assert!(connection_refused(refused_addr()));
}

#[test]
fn access_line_checker_accepts_the_documented_shape() {
    let now = chrono::Local::now()
        .format("%d/%b/%Y:%H:%M:%S %z")
        .to_string();
    let line = format!("::ffff:127.0.0.1 - - [{now}] \"GET /h HTTP/1.1\" 200 212 \"\" \"curl/7.88.1\" \"X-Request-Id:given-id\" \"myapp.com\" \"1.1.1.1\" 0.001 0.012");
    let parsed = assert_access_line(
        &line,
        "\"GET /h HTTP/1.1\" 200 212 \"\" \"curl/7.88.1\" \"X-Request-Id:given-id\" \"myapp.com\" \"1.1.1.1\"",
    );
    assert_eq!(parsed.backend, 0.012);
    let bad = std::panic::catch_unwind(|| {
        parse_access_line("::ffff:127.0.0.1 - - [01/Jan/0001:00:00:00 +0000] \"  \" 0 0 \"\" \"\" \":\" \"\" \"\" 0.000 0.000")
    });
    assert!(bad.is_err(), "a time far from now must be rejected");
    assert!(is_uuid_v4_lower("8c995c37-6ef3-4506-59a0-db7e8c459509"));
    assert!(!is_uuid_v4_lower("8C995C37-6ef3-4506-59a0-db7e8c459509"));
    assert!(!is_uuid_v4_lower("8c995c37-6ef3-3506-59a0-db7e8c459509"));
}

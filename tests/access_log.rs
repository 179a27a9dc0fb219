//! The access log (docs/compat/planb.md#access-log, docs/compat/planb.md#conformance-checklist item 14).

mod support;

use std::os::unix::fs::PermissionsExt;
use support::logline::assert_access_line;
use support::*;

fn setup(extra: &[&str]) -> (RedisServer, Proxy) {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, extra);
    (redis, proxy)
}

#[track_caller]
fn single_line(proxy: &Proxy) -> String {
    let lines = proxy.wait_access_log_lines(1);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    lines[0].clone()
}

#[test]
fn a_proxied_request_is_logged_in_the_planb_format() {
    let (redis, proxy) = setup(&["--request-id-header", "X-Request-Id"]);
    let backend = Backend::start(|_| Reply::text(200, "hello"));
    redis.set_frontend("a.com", &[&backend.url()]);
    let resp = get(
        proxy.addr(),
        "a.com",
        "/some%20path/x?q=1&r=2",
        &[
            ("Referer", "http://ref.example/"),
            ("User-Agent", "test-ua/1.0"),
            ("X-Request-Id", "rid-1"),
            ("X-Forwarded-For", "10.9.8.7"),
            ("X-Forwarded-For", "1.2.3.4"),
        ],
    );
    assert_eq!(resp.status, 200);
    let line = single_line(&proxy);
    assert_access_line(
        &line,
        "\"GET /some path/x HTTP/1.1\" 200 5 \"http://ref.example/\" \"test-ua/1.0\" \"X-Request-Id:rid-1\" \"a.com\" \"10.9.8.7\"",
    );
}

#[test]
fn without_a_request_id_header_the_field_is_a_lone_colon() {
    let (redis, proxy) = setup(&[]);
    let backend = Backend::start(|_| Reply::text(200, "hi"));
    redis.set_frontend("a.com", &[&backend.url()]);
    get(proxy.addr(), "a.com:8080", "/", &[]);
    assert_access_line(
        &single_line(&proxy),
        "\"GET / HTTP/1.1\" 200 2 \"\" \"\" \":\" \"a.com\" \"\"",
    );
}

#[test]
fn a_generated_request_id_is_logged_under_the_canonical_header_name() {
    let (redis, proxy) = setup(&["--request-id-header", "x-request-id"]);
    let backend = Backend::start(|_| Reply::text(200, "hi"));
    redis.set_frontend("a.com", &[&backend.url()]);
    get(proxy.addr(), "a.com", "/", &[]);
    let id = backend
        .single_request()
        .header("x-request-id")
        .unwrap()
        .to_string();
    assert!(is_uuid_v4_lower(&id), "{id:?}");
    assert_access_line(
        &single_line(&proxy),
        &format!("\"GET / HTTP/1.1\" 200 2 \"\" \"\" \"X-Request-Id:{id}\" \"a.com\" \"\""),
    );
}

#[test]
fn a_chunked_response_logs_length_minus_one() {
    let (redis, proxy) = setup(&[]);
    let backend =
        Backend::start(|_| Reply::new(200).chunked(vec![Step::Data(b"abc".to_vec())], &[]));
    redis.set_frontend("a.com", &[&backend.url()]);
    let resp = request(
        proxy.addr(),
        "POST",
        "a.com",
        "/c",
        &[("User-Agent", "ua")],
        b"x",
    );
    assert_eq!(resp.body_str(), "abc");
    assert_access_line(
        &single_line(&proxy),
        "\"POST /c HTTP/1.1\" 200 -1 \"\" \"ua\" \":\" \"a.com\" \"\"",
    );
}

#[test]
fn no_route_is_logged_with_an_empty_key() {
    let (_redis, proxy) = setup(&[]);
    get(proxy.addr(), "nope.com", "/x", &[]);
    assert_access_line(
        &single_line(&proxy),
        "\"GET /x HTTP/1.1\" 400 13 \"\" \"\" \":\" \"\" \"\"",
    );
}

#[test]
fn all_dead_is_logged_with_the_key() {
    let (redis, proxy) = setup(&[]);
    let backend = Backend::named("B1");
    redis.set_frontend("a.com", &[&backend.url()]);
    let _: i64 = redis.query(&["SADD", "dead:a.com", "0"]);
    get(proxy.addr(), "a.com", "/d", &[]);
    let parsed = assert_access_line(
        &single_line(&proxy),
        "\"GET /d HTTP/1.1\" 503 21 \"\" \"\" \":\" \"a.com\" \"\"",
    );
    assert_eq!(
        parsed.backend, 0.0,
        "synthesized responses log 0.000 backend time"
    );
}

#[test]
fn a_backend_failure_is_logged_as_503_0() {
    let (redis, proxy) = setup(&["--no-failover"]);
    redis.set_frontend("a.com", &[&refused_url()]);
    get(proxy.addr(), "a.com", "/f", &[]);
    assert_access_line(
        &single_line(&proxy),
        "\"GET /f HTTP/1.1\" 503 0 \"\" \"\" \":\" \"a.com\" \"\"",
    );
}

#[test]
fn a_redis_error_is_logged_as_503_0_with_an_empty_key() {
    let (redis, proxy) = setup(&[]);
    let _: () = redis.query(&["SET", "frontend:wrongtype.com", "x"]);
    get(proxy.addr(), "wrongtype.com", "/", &[]);
    assert_access_line(
        &single_line(&proxy),
        "\"GET / HTTP/1.1\" 503 0 \"\" \"\" \":\" \"\" \"\"",
    );
}

#[test]
fn an_http10_request_logs_its_protocol() {
    let (redis, proxy) = setup(&[]);
    let backend = Backend::start(|_| Reply::text(200, "hi"));
    redis.set_frontend("a.com", &[&backend.url()]);
    exchange(proxy.addr(), b"GET /ten HTTP/1.0\r\nHost: a.com\r\n\r\n");
    assert_access_line(
        &single_line(&proxy),
        "\"GET /ten HTTP/1.0\" 200 2 \"\" \"\" \":\" \"a.com\" \"\"",
    );
}

#[test]
fn the_total_time_covers_a_slow_backend_and_ping_is_not_logged() {
    let (redis, proxy) = setup(&[]);
    let backend = Backend::start(|_| Reply::text(200, "slow").delay(millis(300)));
    redis.set_frontend("a.com", &[&backend.url()]);
    assert_eq!(get(proxy.addr(), "__ping__", "/", &[]).status, 200);
    get(proxy.addr(), "a.com", "/", &[]);
    let lines = proxy.wait_access_log_lines(1);
    assert_eq!(lines.len(), 1, "__ping__ must not be logged: {lines:#?}");
    let parsed = assert_access_line(
        &lines[0],
        "\"GET / HTTP/1.1\" 200 4 \"\" \"\" \":\" \"a.com\" \"\"",
    );
    assert!(
        parsed.total >= 0.25,
        "total {} should include the backend's 300 ms",
        parsed.total
    );
    assert!(
        parsed.backend >= 0.25,
        "backend {} should include the backend's 300 ms",
        parsed.backend
    );
    assert!(parsed.total >= parsed.backend, "{parsed:?}");
}

#[test]
fn the_file_is_private_and_appended_to() {
    let redis = RedisServer::start();
    // A fresh file is created owner-read/write and not world-accessible.
    let proxy = Proxy::start(&redis, &[]);
    get(proxy.addr(), "nope.com", "/", &[]);
    proxy.wait_access_log_lines(1);
    let mode = std::fs::metadata(proxy.access_log_path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode & 0o600, 0o600, "mode {mode:o}");
    assert_eq!(mode & 0o007, 0, "mode {mode:o} is world-accessible");
    assert_eq!(mode & 0o111, 0, "mode {mode:o} is executable");

    // An existing file is appended to.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("existing.log");
    std::fs::write(&path, "old line\n").unwrap();
    let proxy = Proxy::start(&redis, &["--access-log", path.to_str().unwrap()]);
    get(proxy.addr(), "nope.com", "/appended", &[]);
    let lines = eventually(SOON, "a second line in the existing file", || {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        (lines.len() >= 2).then_some(lines)
    });
    assert_eq!(lines[0], "old line");
    assert_access_line(
        &lines[1],
        "\"GET /appended HTTP/1.1\" 400 13 \"\" \"\" \":\" \"\" \"\"",
    );
}

#[test]
fn stdout_is_a_target() {
    let (_redis, proxy) = setup(&["--access-log", "stdout"]);
    get(proxy.addr(), "nope.com", "/out", &[]);
    let line = eventually(SOON, "an access-log line on stdout", || {
        proxy
            .stdout_lines()
            .into_iter()
            .find(|l| l.contains("\"GET /out HTTP/1.1\""))
    });
    assert_access_line(
        &line,
        "\"GET /out HTTP/1.1\" 400 13 \"\" \"\" \":\" \"\" \"\"",
    );
    assert!(
        std::fs::read_dir(proxy.dir()).unwrap().next().is_none(),
        "no file is created"
    );
}

#[test]
fn none_disables_the_log_and_creates_no_file() {
    let (_redis, mut proxy) = setup(&["--access-log", "none"]);
    assert_eq!(get(proxy.addr(), "nope.com", "/", &[]).status, 400);
    // A clean exit flushes whatever would have been written.
    proxy.signal("TERM");
    proxy.wait_exit(SOON);
    let files: Vec<_> = std::fs::read_dir(proxy.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        files.is_empty(),
        "files created in the working directory: {files:?}"
    );
    assert!(
        proxy.stdout_lines().iter().all(|l| !l.contains("GET /")),
        "{:?}",
        proxy.stdout_lines()
    );
}

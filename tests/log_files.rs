//! Log handling: SIGHUP reopens the access log (logrotate), the access-log formats, the event log.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::logline::parse_access_line;
use support::*;

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn rename_and_sighup_loses_no_line_and_new_lines_go_to_the_new_file() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, &[]);
    let backend = Backend::named("B");
    redis.set_frontend("a.com", &[&backend.url()]);
    let log = proxy.access_log_path().to_path_buf();
    let rotated = log.with_extension("log.1");

    const N: usize = 600;
    let sent = Arc::new(AtomicUsize::new(0));
    let addr = proxy.addr();
    let sender = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            for i in 0..N {
                let resp = get(addr, "a.com", &format!("/r/{i}"), &[]);
                assert_eq!(resp.status, 200);
                sent.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    assert_eventually(SOON, "traffic before the rotation", || {
        sent.load(Ordering::SeqCst) >= 100
    });
    // logrotate: rename, then SIGHUP (no copytruncate).
    std::fs::rename(&log, &rotated).unwrap();
    proxy.signal("HUP");
    assert_eventually(SOON, "the access log reopened at its path", || log.exists());
    // Every request answered from now on is queued after the reopen.
    let answered_after_reopen = sent.load(Ordering::SeqCst) + 1;
    assert!(
        answered_after_reopen < N,
        "the traffic ended before the reopen: make N larger"
    );
    sender.join().unwrap();

    let count = |path: &std::path::Path| lines(path).len();
    assert_eventually(SOON, "every line written", || {
        count(&log) + count(&rotated) == N
    });
    let mut seen: BTreeMap<usize, &str> = BTreeMap::new();
    let old = lines(&rotated);
    let new = lines(&log);
    for (file, content) in [("old", &old), ("new", &new)] {
        for line in content.iter() {
            let parsed = parse_access_line(line);
            let path = parsed.middle.split(' ').nth(1).unwrap();
            let i: usize = path.trim_start_matches("/r/").parse().unwrap();
            assert!(seen.insert(i, file).is_none(), "request {i} logged twice");
        }
    }
    assert_eq!(seen.len(), N, "lines lost");
    assert!(!old.is_empty() && !new.is_empty());
    for (i, file) in &seen {
        if *i >= answered_after_reopen {
            assert_eq!(*file, "new", "request {i} was answered after the reopen");
        }
    }
    // The old file is complete and no longer written to.
    assert!(seen.get(&0) == Some(&"old"));
    assert!(proxy
        .stderr_lines()
        .iter()
        .any(|l| l.contains("reopened the access log")));
}

#[test]
fn sighup_with_the_access_log_on_stdout_changes_nothing() {
    let redis = RedisServer::start();
    let mut proxy = Proxy::start(&redis, &["--access-log", "stdout"]);
    let backend = Backend::named("B");
    redis.set_frontend("a.com", &[&backend.url()]);
    proxy.signal("HUP");
    assert_eq!(get(proxy.addr(), "a.com", "/x", &[]).status, 200);
    assert_eventually(SOON, "the line on stdout", || {
        proxy
            .stdout_lines()
            .iter()
            .any(|l| l.contains("\"GET /x HTTP/1.1\" 200"))
    });
    assert!(proxy.try_exit().is_none());
}

#[test]
fn the_hipache_format() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, &["--access-log-format", "hipache"]);
    let backend = Backend::named("hello");
    redis.set_frontend("a.com", &[&backend.url()]);
    get(
        proxy.addr(),
        "a.com",
        "/p%20q?x=1",
        &[("User-Agent", "ua/1"), ("Referer", "http://r/")],
    );
    get(proxy.addr(), "unknown.com", "/", &[]);
    let lines = proxy.wait_access_log_lines(2);
    // `::ffff:127.0.0.1 - - [16/Feb/2014:00:43:10 +0000] "GET /p%20q?x=1 HTTP/1.1" 200 5 "http://r/" "ua/1" "a.com" 0.001 0`
    let check = |line: &str, middle: &str| {
        let (head, rest) = line.split_once(" - - [").unwrap();
        assert_eq!(head, "::ffff:127.0.0.1", "{line}");
        let (time, rest) = rest.split_once("] ").unwrap();
        let parsed = chrono::DateTime::parse_from_str(time, "%d/%b/%Y:%H:%M:%S %z").unwrap();
        assert_eq!(parsed.offset().local_minus_utc(), 0, "UTC time in {line}");
        assert!((chrono::Utc::now().timestamp() - parsed.timestamp()).abs() < 120);
        let mut parts = rest.rsplitn(3, ' ');
        let (backend, total) = (parts.next().unwrap(), parts.next().unwrap());
        for number in [backend, total] {
            // JavaScript numbers: `0`, `0.01`, `0.011`, `1.5`; never a trailing zero.
            assert!(number.parse::<f64>().is_ok(), "{number} in {line}");
            assert!(
                number == "0" || !number.ends_with('0'),
                "{number} in {line}"
            );
            assert!(number.split('.').nth(1).is_none_or(|d| d.len() <= 3));
        }
        assert_eq!(parts.next().unwrap(), middle, "{line}");
    };
    // The identifier (element 0: the harness stores `id-<host>`), the raw request target with its query, the declared length.
    check(
        &lines[0],
        "\"GET /p%20q?x=1 HTTP/1.1\" 200 5 \"http://r/\" \"ua/1\" \"id-a.com\"",
    );
    check(&lines[1], "\"GET / HTTP/1.1\" 400 13 \"\" \"\" \"\"");
}

#[test]
fn the_json_format() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(
        &redis,
        &[
            "--access-log-format",
            "json",
            "--request-id-header",
            "X-Request-Id",
        ],
    );
    let backend = Backend::named("hello");
    redis.set_frontend("a.com", &[&backend.url()]);
    get(
        proxy.addr(),
        "a.com:8080",
        "/p%20q?x=1",
        &[
            ("User-Agent", "say \"hi\""),
            ("X-Request-Id", "rid"),
            ("X-Forwarded-For", "1.2.3.4"),
        ],
    );
    let line = proxy.wait_access_log_lines(1).remove(0);
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    let time = value["time"].as_str().unwrap();
    let parsed = chrono::DateTime::parse_from_rfc3339(time).unwrap();
    assert!((chrono::Utc::now().timestamp() - parsed.timestamp()).abs() < 120);
    let total = value["total_seconds"].as_f64().unwrap();
    let backend_seconds = value["backend_seconds"].as_f64().unwrap();
    // Byte for byte, with the variable parts put back in.
    let expected = format!(
        "{{\"time\":\"{time}\",\"client_ip\":\"127.0.0.1\",\"method\":\"GET\",\"path\":\"/p q\",\"proto\":\"HTTP/1.1\",\"status\":200,\"content_length\":5,\"referer\":\"\",\"user_agent\":\"say \\\"hi\\\"\",\"request_id_header\":\"X-Request-Id\",\"request_id\":\"rid\",\"frontend_key\":\"a.com\",\"forwarded_for\":\"1.2.3.4\",\"total_seconds\":{total:.3},\"backend_seconds\":{backend_seconds:.3}}}"
    );
    assert_eq!(line, expected);
}

#[test]
fn the_planb_format_is_the_default() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, &[]);
    get(proxy.addr(), "unknown.com", "/x", &[]);
    let line = proxy.wait_access_log_lines(1).remove(0);
    support::logline::assert_access_line(
        &line,
        "\"GET /x HTTP/1.1\" 400 13 \"\" \"\" \":\" \"\" \"\"",
    );
}

#[test]
fn the_json_event_log_puts_every_stderr_line_in_an_object() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, &["--log-format", "json"]);
    redis.set_frontend("a.com", &[&refused_url()]);
    get(proxy.addr(), "a.com", "/x", &[]);
    proxy.signal("HUP");
    proxy.wait_stderr("the error-log event", |l| l.contains("ERROR in a.com"));
    proxy.wait_stderr("the reopen event", |l| {
        l.contains("reopened the access log")
    });
    let lines = proxy.stderr_lines();
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{lines:#?}"));
        assert!(value["timestamp"].is_string(), "{line}");
        assert!(value["level"].is_string(), "{line}");
    }
    let error = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| {
            v["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("ERROR in a.com")
        })
        .unwrap();
    assert_eq!(error["level"], "ERROR");
    assert_eq!(error["target"], "hypache::planb");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .ends_with("connect: connection refused *DEAD*"));
    let listening = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| {
            v["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("Listening on ")
        })
        .unwrap();
    assert_eq!(listening["level"], "INFO");
}

#[test]
fn the_text_event_log_keeps_planb_lines_verbatim_whatever_the_level() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, &["--log-level", "error"]);
    redis.set_frontend("a.com", &[&refused_url()]);
    get(proxy.addr(), "a.com", "/x", &[]);
    let line = proxy.wait_stderr("the error-log line", |l| l.starts_with("ERROR in a.com"));
    assert!(
        line.starts_with("ERROR in a.com -> http://127.0.0.1:"),
        "{line}"
    );
    let lines = proxy.stderr_lines();
    assert_eq!(lines[0], "Using native engine", "{lines:#?}");
    assert!(lines[1].starts_with("Listening on "), "{lines:#?}");
}

//! `--access-log-url`: access-log entries POSTed as newline-delimited JSON in batches (text/plain), dropped
//! and counted when the URL is down, and flushed on shutdown.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use support::metrics::scrape;
use support::*;

/// One POST the sink received: its Content-Type and body.
type Posts = Arc<Mutex<Vec<(String, String)>>>;

/// A log sink that answers 200 to every POST and keeps what it got.
fn sink() -> (String, Posts) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/bulk?tag=hypache", listener.local_addr().unwrap());
    let posts: Posts = Arc::default();
    let kept = posts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let message = loop {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                if let Some((msg, _)) = support::http::parse_message(&buf, false, false, false) {
                    break Some(msg);
                }
            };
            let Some(message) = message else { continue };
            let content_type = support::http::header(&message.headers, "content-type")
                .unwrap_or_default()
                .to_string();
            assert_eq!(message.start[1], "/bulk?tag=hypache");
            kept.lock().unwrap().push((
                content_type,
                String::from_utf8_lossy(&message.body).into_owned(),
            ));
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, posts)
}

#[test]
fn entries_are_posted_as_json_lines_in_batches() {
    let redis = RedisServer::start();
    let app = Backend::named("app");
    redis.set_frontend("ship.test", &[&app.url()]);
    let (url, posts) = sink();
    // `--logurl`: httprouter's name for the flag.
    let proxy = Proxy::start(&redis, &["--logurl", &url]);
    for path in ["/a", "/b", "/c"] {
        assert_eq!(get(proxy.addr(), "ship.test", path, &[]).status, 200);
    }
    let lines = eventually(secs(5), "three shipped lines", || {
        let lines: Vec<String> = posts
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, body)| body.lines().map(str::to_string).collect::<Vec<_>>())
            .collect();
        (lines.len() >= 3).then_some(lines)
    });
    for (content_type, body) in posts.lock().unwrap().iter() {
        assert_eq!(content_type, "text/plain");
        assert!(body.ends_with('\n'), "{body:?}");
    }
    let paths: Vec<String> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["status"], 200, "{l}");
            v["path"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(paths, ["/a", "/b", "/c"]);
    // The file access log still gets its PlanB lines.
    assert_eq!(proxy.wait_access_log_lines(3).len(), 3);
}

#[test]
fn lines_the_url_does_not_take_are_dropped_and_counted() {
    let redis = RedisServer::start();
    let app = Backend::named("app");
    redis.set_frontend("ship.test", &[&app.url()]);
    let down = format!("http://{}/bulk", refused_addr());
    let proxy = Proxy::start(
        &redis,
        &[
            "--access-log-url",
            &down,
            "--metrics-address",
            "127.0.0.1:0",
        ],
    );
    for _ in 0..3 {
        // Never held up by the shipping.
        assert_eq!(get(proxy.addr(), "ship.test", "/", &[]).status, 200);
    }
    assert_eventually(secs(6), "three lines counted as dropped", || {
        scrape(proxy.metrics_addr()).value("hypache_log_lines_dropped_total{log=\"shipping\"}")
            >= 3.0
    });
}

#[test]
fn the_last_batch_is_sent_on_shutdown() {
    let redis = RedisServer::start();
    let app = Backend::named("app");
    redis.set_frontend("ship.test", &[&app.url()]);
    let (url, posts) = sink();
    let mut proxy = Proxy::start(&redis, &["--access-log-url", &url, "--access-log", "none"]);
    assert_eq!(get(proxy.addr(), "ship.test", "/last", &[]).status, 200);
    proxy.signal("TERM");
    proxy.wait_exit(secs(10));
    let shipped = posts
        .lock()
        .unwrap()
        .iter()
        .any(|(_, b)| b.contains("\"/last\""));
    assert!(shipped, "{:?}", posts.lock().unwrap());
}

#[test]
fn a_bad_url_exits_2_naming_the_flag() {
    for bad in ["ftp://logs.example/x", "not a url", "http://"] {
        let out = spawn_raw(
            &["--listen", "127.0.0.1:0", "--access-log-url", bad],
            &[],
            secs(15),
        );
        assert_eq!(out.code(), Some(2), "{bad}: {out:?}");
        assert!(out.stderr.contains("--access-log-url"), "{bad}: {out:?}");
    }
}

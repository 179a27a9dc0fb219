//! Hostile clients, the proxy's own exhaustion and odd Redis data never cost a healthy backend: a client's
//! broken body is the client's 400, running out of descriptors is the proxy's 503, silent connections are
//! closed, a client that does not read holds little memory, and one broken list entry costs only itself.
//! Black-box, with a real redis-server, real backends and raw sockets.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

use support::metrics::scrape;
use support::*;

const EJECTIONS: &str = "hypache_breaker_ejections_total";

/// A proxy with metrics and a breaker that ejects after 2 failures, in front of two healthy backends.
fn with_breaker(redis: &RedisServer) -> (Proxy, Backend, Backend) {
    let (one, two) = (Backend::named("one"), Backend::named("two"));
    redis.set_frontend("body.test", &[&one.url(), &two.url()]);
    let proxy = Proxy::start(
        redis,
        &[
            "--metrics-address",
            "127.0.0.1:0",
            "--breaker-failures",
            "2",
        ],
    );
    (proxy, one, two)
}

/// Nothing was blamed on a backend: no dead mark, no ejection, and both still serve.
#[track_caller]
fn no_backend_blamed(redis: &RedisServer, proxy: &Proxy) {
    assert!(redis.dead_members("body.test").is_empty());
    let m = scrape(proxy.metrics_addr());
    assert_eq!(m.value(EJECTIONS), 0.0, "{}", m.text);
    let mut bodies: Vec<String> = (0..2)
        .map(|_| get(proxy.addr(), "body.test", "/", &[]).body_str())
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["one", "two"]);
}

/// Each malformed chunked body of the issue, after a valid head.
fn malformed_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let mut long_ext = b"5;".to_vec();
    long_ext.extend(std::iter::repeat_n(b'a', 256 * 1024));
    long_ext.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
    let mut many_params = b"5".to_vec();
    for _ in 0..50_000 {
        many_params.extend_from_slice(b";a=b");
    }
    many_params.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
    vec![
        ("size not hex", b"zz\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("negative size", b"-5\r\nhello\r\n0\r\n\r\n".to_vec()),
        (
            "size overflowing 64 bits",
            b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "size wrapping 64 bits",
            b"10000000000000005\r\nhello\r\n0\r\n\r\n".to_vec(),
        ),
        ("256 KB chunk extension", long_ext),
        ("50,000 extension parameters", many_params),
        (
            "bare LF in an extension",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n".to_vec(),
        ),
        ("bad chunk terminator", b"5\r\nhelloXX0\r\n\r\n".to_vec()),
        ("LF-only line ends", b"5\nhello\n0\n\n".to_vec()),
    ]
}

#[test]
fn malformed_chunked_bodies_are_the_clients_400_and_never_the_backends_fault() {
    let redis = RedisServer::start();
    let (proxy, _one, _two) = with_breaker(&redis);
    for (case, body) in malformed_bodies() {
        let mut conn = ClientConn::connect(proxy.addr());
        let mut bytes =
            b"POST /upload HTTP/1.1\r\nHost: body.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        bytes.extend_from_slice(&body);
        // The proxy may stop reading (and close) before all of a long body is in: that is fine.
        let _ = conn.send(&bytes);
        let resp = conn.try_read_response(secs(10), false);
        let status = resp.map(|r| r.status);
        assert!(
            matches!(status, Some(400) | None),
            "{case}: answered {status:?}, not 400"
        );
    }
    no_backend_blamed(&redis, &proxy);
    // The error log says whose fault it was, and never `error in backend request`.
    let lines = proxy.stderr_lines();
    assert!(
        !lines.iter().any(|l| l.contains("error in backend request")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("client error (not the backend's)")),
        "{lines:#?}"
    );
}

#[test]
fn a_body_error_after_the_head_is_a_logged_400() {
    let redis = RedisServer::start();
    let (proxy, _one, _two) = with_breaker(&redis);
    // The head and a first good chunk go out, so the request is on its way to a backend; then garbage.
    let mut conn = ClientConn::connect(proxy.addr());
    conn.send(b"POST /late HTTP/1.1\r\nHost: body.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .unwrap();
    conn.send(b"zz\r\n").unwrap();
    let resp = conn.read_response();
    assert_eq!(resp.status, 400, "{}", resp.head_text());
    // The body's framing is lost: nothing after it can be read as a request, so the connection ends.
    assert!(
        conn.wait_closed(secs(5)),
        "the proxy closes after the answer"
    );
    let line = eventually(SOON, "the access-log line of /late", || {
        proxy
            .access_log_lines()
            .into_iter()
            .find(|l| l.contains("/late"))
    });
    assert!(line.contains("\" 400 "), "{line}");
    no_backend_blamed(&redis, &proxy);
}

#[test]
fn aborted_uploads_never_eject_a_healthy_backend() {
    let redis = RedisServer::start();
    let (proxy, _one, _two) = with_breaker(&redis);
    for _ in 0..6 {
        let mut conn = ClientConn::connect(proxy.addr());
        conn.send(b"PUT /big HTTP/1.1\r\nHost: body.test\r\nContent-Length: 1000000\r\n\r\n")
            .unwrap();
        conn.send(&[b'x'; 1000]).unwrap();
        // Walk away mid-body: the bytes sent are in the proxy's socket buffer before the FIN.
        drop(conn);
    }
    // Each abort reached the proxy: its error log says so, without blaming anybody's backend.
    assert_eventually(SOON, "six client errors in the error log", || {
        proxy
            .stderr_lines()
            .iter()
            .filter(|l| l.contains("client error (not the backend's)"))
            .count()
            >= 6
    });
    no_backend_blamed(&redis, &proxy);
}

/// `GET /` for `host` on a connection that stays open.
fn keep_alive_get(host: &str) -> Vec<u8> {
    build_request("GET", Some(host), "/", &[("Connection", "keep-alive")], b"")
}

fn highest_fd(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap()
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64
}

fn set_nofile(pid: u32, limit: u64) {
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:"))
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success(), "prlimit failed: {status}");
}

#[test]
fn descriptor_exhaustion_is_the_proxys_503_and_it_recovers_by_itself() {
    let redis = RedisServer::start();
    let warm = Backend::named("warm");
    let fresh = Backend::named("fresh");
    let spare = Backend::named("spare");
    redis.set_frontend("warm.test", &[&warm.url()]);
    // Two backends, so that a mark would be written if the failure were blamed on them.
    redis.set_frontend("fresh.test", &[&fresh.url(), &spare.url()]);
    let proxy = Proxy::start(&redis, &["--metrics-address", "127.0.0.1:0"]);
    let dead = redis.subscribe_dead();
    // Clients with a keep-alive connection each, served once so that every one is accepted.
    let mut clients: Vec<ClientConn> = (0..8)
        .map(|_| {
            let mut c = ClientConn::connect(proxy.addr());
            c.send(&keep_alive_get("warm.test")).unwrap();
            assert_eq!(c.read_response().status, 200);
            c
        })
        .collect();
    // Not one descriptor left: the limit is just above the highest one open, and new connections fill the
    // holes below it until every number is taken; the next socket the proxy opens fails with EMFILE.
    let limit = highest_fd(proxy.pid()) + 1;
    set_nofile(proxy.pid(), limit);
    let mut fillers = Vec::new();
    assert_eventually(SOON, "every descriptor below the limit in use", || {
        if open_fds(proxy.pid()) >= limit {
            return true;
        }
        fillers.push(TcpStream::connect(proxy.addr()).unwrap());
        false
    });
    let conn = &mut clients[0];
    conn.send(&keep_alive_get("fresh.test")).unwrap();
    let resp = conn.read_response();
    assert_eq!(resp.status, 503, "{}", resp.head_text());
    assert_eq!(fresh.hits() + spare.hits(), 0);
    proxy.wait_stderr("the proxy's own error", |l| {
        l.contains("proxy error (not the backend's)") && l.contains("fresh.test")
    });
    // New clients wait in the backlog while the accept loop backs off; the open ones are still served.
    let mut waiting = TcpStream::connect(proxy.addr()).unwrap();
    waiting.write_all(&keep_alive_get("warm.test")).unwrap();
    let conn = &mut clients[1];
    conn.send(&keep_alive_get("warm.test")).unwrap();
    assert_eq!(conn.read_response().status, 200);
    // Descriptors come back: the waiting client is served without a restart.
    clients.clear();
    fillers.clear();
    let freed = Instant::now();
    set_nofile(proxy.pid(), 4096);
    waiting.set_read_timeout(Some(secs(10))).unwrap();
    let mut head = [0u8; 12];
    waiting.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    eprintln!(
        "accepting again {:?} after descriptors were freed",
        freed.elapsed()
    );
    // Nothing was marked dead or published, and the failure is counted as the proxy's own.
    assert!(redis.dead_members("fresh.test").is_empty());
    assert_eq!(dead.next(millis(200)), None);
    let m = scrape(proxy.metrics_addr());
    assert_eq!(m.value("hypache_local_failures_total"), 1.0, "{}", m.text);
    assert_eq!(m.value("planb_router_backend_markdead_total"), 0.0);
    assert_eq!(get(proxy.addr(), "fresh.test", "/", &[]).status, 200);
}

#[test]
fn silent_connections_are_closed_after_the_header_timeout() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, &["--client-read-header-timeout", "2s"]);
    let started = Instant::now();
    let mut silent: Vec<ClientConn> = (0..50).map(|_| ClientConn::connect(proxy.addr())).collect();
    for conn in &mut silent {
        let left = secs(4).saturating_sub(started.elapsed());
        assert!(conn.wait_closed(left), "a silent connection is still open");
    }
    let closed_after = started.elapsed();
    eprintln!("50 silent connections closed after {closed_after:?}");
    assert!(
        closed_after >= millis(1900),
        "closed too early: {closed_after:?}"
    );
    // A client that trickles a head byte by byte is held to the same clock, from accept.
    let started = Instant::now();
    let mut trickle = ClientConn::connect(proxy.addr());
    let mut closed = false;
    for byte in b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: "
        .iter()
        .cycle()
        .take(40)
    {
        if trickle.send(&[*byte]).is_err() || trickle.wait_closed(millis(100)) {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickled head outlived the header timeout");
    assert!(started.elapsed() < secs(4), "{:?}", started.elapsed());
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// A backend that answers every request with a 200 MB body, written as fast as the proxy takes it.
fn huge_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let len = 200u64 << 20;
                let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                let chunk = vec![b'z'; 64 * 1024];
                let mut sent = 0;
                while sent < len && stream.write_all(&chunk).is_ok() {
                    sent += chunk.len() as u64;
                }
            });
        }
    });
    addr
}

/// Polls the proxy's RSS until it has not moved for a second.
fn settled_rss(pid: u32) -> u64 {
    let mut last = rss_kib(pid);
    let mut stable_since = Instant::now();
    let deadline = Instant::now() + secs(20);
    while Instant::now() < deadline {
        std::thread::sleep(millis(100));
        let now = rss_kib(pid);
        if now.abs_diff(last) > 64 {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= secs(1) {
            return now;
        }
    }
    last
}

#[test]
fn a_client_that_never_reads_pins_little_proxy_memory() {
    let redis = RedisServer::start();
    let huge = huge_backend();
    redis.set_frontend("huge.test", &[&format!("http://{huge}")]);
    let proxy = Proxy::start(&redis, &[]);
    // Warm up threads, pools and the allocator with one stalled client, then measure 20 more.
    let mut warm = ClientConn::connect(proxy.addr());
    warm.send(&keep_alive_get("huge.test")).unwrap();
    assert!(warm.read_until_contains(b"HTTP/1.1 200", secs(10)));
    let before = settled_rss(proxy.pid());
    let stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(proxy.addr()).unwrap();
            s.write_all(&keep_alive_get("huge.test")).unwrap();
            s
        })
        .collect();
    let after = settled_rss(proxy.pid());
    let per_client = after.saturating_sub(before) / stalled.len() as u64;
    eprintln!("RSS {before} KiB -> {after} KiB: {per_client} KiB per stalled client");
    assert!(
        per_client <= 256,
        "a stalled client pins {per_client} KiB of proxy memory"
    );
}

/// `RPUSH` with raw bytes, as `redis-cli` can write them.
fn rpush_bytes(redis: &RedisServer, key: &str, items: &[&[u8]]) {
    let mut cmd = redis::cmd("RPUSH");
    cmd.arg(key);
    for item in items {
        cmd.arg(*item);
    }
    let _: i64 = cmd.query(&mut redis.con()).unwrap();
}

#[test]
fn a_broken_list_entry_costs_only_itself() {
    let redis = RedisServer::start();
    let good = Backend::named("good");
    let url = good.url();
    // Not UTF-8; binary garbage that is UTF-8; an identifier that is not UTF-8.
    rpush_bytes(
        &redis,
        "frontend:bytes.test",
        &[b"id", b"\xff\xfe\x00garbage", url.as_bytes()],
    );
    rpush_bytes(
        &redis,
        "frontend:garbage.test",
        &[b"id", b"\x01\x02\x03 junk", url.as_bytes()],
    );
    rpush_bytes(
        &redis,
        "frontend:ident.test",
        &[b"\xc3\x28\xff", url.as_bytes()],
    );
    let proxy = Proxy::start(&redis, &[]);
    for host in ["bytes.test", "garbage.test", "ident.test"] {
        for _ in 0..4 {
            let resp = get(proxy.addr(), host, "/", &[]);
            assert_eq!(
                (resp.status, resp.body_str().as_str()),
                (200, "good"),
                "{host}"
            );
        }
        // A broken entry is skipped, never marked dead.
        assert!(redis.dead_members(host).is_empty(), "{host}");
    }
    // The broken entries are logged with their key.
    proxy.wait_stderr("the non-UTF-8 entry", |l| {
        l.contains("frontend:bytes.test") && l.contains("not valid UTF-8")
    });
    proxy.wait_stderr("the garbage entry", |l| {
        l.contains("frontend:garbage.test") && l.contains("invalid host")
    });
}

#[test]
fn dead_members_follow_planbs_integer_rule() {
    let redis = RedisServer::start();
    let (zero, one) = (Backend::named("zero"), Backend::named("one"));
    let proxy = Proxy::start(&redis, &[]);
    for member in [" 1", "1 ", "\t1", "x"] {
        let host = "dead.test";
        redis.query::<i64>(&["DEL", "frontend:dead.test", "dead:dead.test"]);
        redis.set_frontend(host, &[&zero.url(), &one.url()]);
        redis.query::<i64>(&["SADD", "dead:dead.test", member]);
        // Not a plain base-10 integer: index 0 is dead, so every request goes to index 1.
        for _ in 0..3 {
            assert_eq!(
                get(proxy.addr(), host, "/", &[]).body_str(),
                "one",
                "{member:?}"
            );
        }
    }
    redis.query::<i64>(&["DEL", "dead:dead.test"]);
    redis.query::<i64>(&["SADD", "dead:dead.test", "+1"]);
    for _ in 0..3 {
        assert_eq!(get(proxy.addr(), "dead.test", "/", &[]).body_str(), "zero");
    }
    assert_eq!(zero.hits() + one.hits(), 15);
}

/// A plain upgrade request (the backends below answer it without switching, which is relayed as it is).
fn upgrade(proxy: &Proxy, host: &str) -> Resp {
    get(
        proxy.addr(),
        host,
        "/ws",
        &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
    )
}

#[test]
fn a_backend_the_breaker_ejected_gets_no_tunnels() {
    let redis = RedisServer::start();
    let broken = Backend::start(|_| Reply::text(500, "broken"));
    let fine = Backend::named("fine");
    redis.set_frontend("ws.test", &[&broken.url(), &fine.url()]);
    let proxy = Proxy::start(&redis, &["--breaker-failures", "2"]);
    // Two 500s from `broken` eject it (round robin alternates).
    for _ in 0..4 {
        get(proxy.addr(), "ws.test", "/", &[]);
    }
    let hits = broken.hits();
    for _ in 0..6 {
        assert_eq!(upgrade(&proxy, "ws.test").body_str(), "fine");
    }
    assert_eq!(broken.hits(), hits, "an ejected backend got an upgrade");
}

#[test]
fn a_refused_tunnel_fails_over_through_the_same_routine() {
    let redis = RedisServer::start();
    let fine = Backend::named("fine");
    redis.set_frontend("ws2.test", &[&refused_url(), &fine.url()]);
    let proxy = Proxy::start(&redis, &[]);
    assert_eq!(upgrade(&proxy, "ws2.test").body_str(), "fine");
    assert_eventually(SOON, "the refused backend marked dead", || {
        redis.dead_members("ws2.test") == ["0"]
    });
}

#[test]
fn failed_tls_handshakes_are_counted_on_both_tls_paths() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(
        &redis,
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--metrics-address",
            "127.0.0.1:0",
        ],
    );
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5][..],
    ] {
        let mut s = TcpStream::connect(proxy.tls_addr()).unwrap();
        s.write_all(garbage).unwrap();
        s.set_read_timeout(Some(secs(5))).unwrap();
        let _ = s.read(&mut [0u8; 64]);
    }
    assert_eventually(SOON, "two failed handshakes counted", || {
        scrape(proxy.metrics_addr()).value("hypache_tls_handshake_failures_total") == 2.0
    });
    let sni = Proxy::start(
        &redis,
        &["--engine", "sni", "--metrics-address", "127.0.0.1:0"],
    );
    let mut s = TcpStream::connect(sni.addr()).unwrap();
    s.write_all(b"not a ClientHello\r\n\r\n").unwrap();
    s.set_read_timeout(Some(secs(5))).unwrap();
    let _ = s.read(&mut [0u8; 64]);
    assert_eventually(SOON, "the SNI engine's failed handshake counted", || {
        scrape(sni.metrics_addr()).value("hypache_tls_handshake_failures_total") == 1.0
    });
}

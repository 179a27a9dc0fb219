//! Rate limits (`ratelimit:<host>`): exact bursts, 429 with its headers, refill, keys by header and frontend,
//! entree's 403, a global limit shared by two processes, and malformed hashes failing open.

mod support;

use std::time::Instant;

use support::*;

fn setup(limit: &[&str]) -> (RedisServer, Proxy, Backend) {
    let redis = RedisServer::start();
    let backend = Backend::named("ok");
    redis.set_frontend("a.com", &[&backend.url()]);
    set_limit(&redis, limit);
    let proxy = Proxy::start(&redis, &[]);
    (redis, proxy, backend)
}

fn set_limit(redis: &RedisServer, limit: &[&str]) {
    redis.query::<i64>(&["DEL", "ratelimit:a.com"]);
    let mut args = vec!["HSET", "ratelimit:a.com"];
    args.extend_from_slice(limit);
    redis.query::<i64>(&args);
}

fn statuses(proxy: &Proxy, n: usize, headers: &[(&str, &str)]) -> Vec<u16> {
    (0..n)
        .map(|_| get(proxy.addr(), "a.com", "/", headers).status)
        .collect()
}

#[track_caller]
fn assert_429(resp: &Resp, limit: u64) {
    assert_eq!(resp.status, 429, "{}", resp.head_text());
    let number = |name: &str| -> u64 {
        resp.header(name)
            .unwrap_or_else(|| panic!("no {name} in {}", resp.head_text()))
            .parse()
            .unwrap()
    };
    assert_eq!(number("ratelimit-limit"), limit);
    assert_eq!(number("ratelimit-remaining"), 0);
    let retry = number("retry-after");
    let reset = number("ratelimit-reset");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(reset >= retry, "reset {reset} < retry-after {retry}");
}

/// `RateLimit-Limit`, `-Remaining` and `-Reset` of a response, as numbers.
#[track_caller]
fn rate_headers(resp: &Resp) -> (u64, u64, u64) {
    let number = |name: &str| -> u64 {
        resp.header(name)
            .unwrap_or_else(|| panic!("no {name} in {}", resp.head_text()))
            .parse()
            .unwrap()
    };
    (
        number("ratelimit-limit"),
        number("ratelimit-remaining"),
        number("ratelimit-reset"),
    )
}

#[test]
fn a_burst_passes_exactly_then_429_with_headers() {
    // One request a minute refills nothing during the test: exactly `burst` pass.
    let (_redis, proxy, backend) = setup(&["rate", "1", "period", "60", "burst", "5"]);
    // Passed responses tell the client where it stands: the bucket after this request, and how long until it
    // is full again (one minute per request taken).
    for taken in 1..=5 {
        let resp = get(proxy.addr(), "a.com", "/", &[]);
        assert_eq!(resp.status, 200, "{}", resp.head_text());
        assert_eq!(rate_headers(&resp), (5, 5 - taken, 60 * taken));
        assert!(!resp.has_header("retry-after"));
    }
    let resp = get(proxy.addr(), "a.com", "/", &[]);
    assert_429(&resp, 5);
    assert!(resp.header("retry-after").unwrap().parse::<u64>().unwrap() >= 50);
    assert_eq!(resp.body_str(), "rate limit exceeded");
    assert_eq!(
        backend.hits(),
        5,
        "limited requests never reach the backend"
    );
    // Other frontends are not limited.
    let other = Backend::named("other");
    _redis.set_frontend("b.com", &[&other.url()]);
    for _ in 0..10 {
        let resp = get(proxy.addr(), "b.com", "/", &[]);
        assert_eq!(resp.status, 200);
        assert!(
            !resp.has_header("ratelimit-remaining"),
            "{}",
            resp.head_text()
        );
    }
}

#[test]
fn the_proxy_limit_replaces_a_backends_own_headers() {
    let redis = RedisServer::start();
    let backend = Backend::start(|_| {
        Reply::text(200, "ok")
            .header("RateLimit-Limit", "1000")
            .header("RateLimit-Remaining", "999")
            .header("RateLimit-Reset", "1")
    });
    redis.set_frontend("a.com", &[&backend.url()]);
    set_limit(&redis, &["rate", "10", "period", "1m", "burst", "3"]);
    let proxy = Proxy::start(&redis, &[]);
    let resp = get(proxy.addr(), "a.com", "/", &[]);
    assert_eq!(resp.header_all("ratelimit-remaining"), ["2"]);
    assert_eq!(rate_headers(&resp), (3, 2, 6));
    // A frontend without a limit passes the backend's through untouched.
    redis.set_frontend("b.com", &[&backend.url()]);
    let resp = get(proxy.addr(), "b.com", "/", &[]);
    assert_eq!(rate_headers(&resp), (1000, 999, 1));
}

#[test]
fn the_bucket_refills_at_the_rate() {
    // Burst 2, then one request every 2 s.
    let (_redis, proxy, _backend) = setup(&["rate", "1", "period", "2s", "burst", "2"]);
    let started = Instant::now();
    assert_eq!(statuses(&proxy, 2, &[]), [200, 200]);
    assert_429(&get(proxy.addr(), "a.com", "/", &[]), 2);
    // Rejected requests do not consume: polling until one passes is fine.
    assert_eventually(secs(10), "a request to pass again", || {
        get(proxy.addr(), "a.com", "/", &[]).status == 200
    });
    let waited = started.elapsed();
    assert!(
        waited >= millis(1900),
        "refilled after {waited:?}, before 2s"
    );
    // Exactly one token came back.
    assert_eq!(get(proxy.addr(), "a.com", "/", &[]).status, 429);
}

#[test]
fn by_header_falls_back_to_the_client_ip() {
    let (_redis, proxy, _backend) = setup(&[
        "rate",
        "1",
        "period",
        "1m",
        "burst",
        "1",
        "by",
        "header:X-UID",
    ]);
    assert_eq!(statuses(&proxy, 2, &[("X-UID", "alice")]), [200, 429]);
    assert_eq!(statuses(&proxy, 2, &[("X-UID", "bob")]), [200, 429]);
    // No X-UID: the client IP is the key.
    assert_eq!(statuses(&proxy, 2, &[]), [200, 429]);
}

#[test]
fn by_frontend_shares_one_bucket_and_entree_compat_answers_403() {
    let (_redis, proxy, _backend) = setup(&[
        "rate", "1", "period", "60", "burst", "2", "by", "frontend", "compat", "entree",
    ]);
    assert_eq!(
        get(proxy.addr(), "a.com", "/", &[("X-UID", "a")]).status,
        200
    );
    assert_eq!(
        get(proxy.addr(), "a.com", "/", &[("X-UID", "b")]).status,
        200
    );
    let resp = get(proxy.addr(), "a.com", "/", &[("X-UID", "c")]);
    assert_eq!(resp.status, 403, "{}", resp.head_text());
    assert_eq!(
        resp.body_str(),
        r#"{"code":100420,"msg":"reached rate limit"}"#
    );
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert!(!resp.has_header("retry-after"));
}

#[test]
fn a_global_limit_is_shared_by_two_processes() {
    let (redis, first, backend) =
        setup(&["rate", "1", "period", "60", "burst", "4", "scope", "global"]);
    let second = Proxy::start(&redis, &[]);
    // Alternating between the two, each answer counts the other's requests too.
    for i in 0..4 {
        let proxy = if i % 2 == 0 { &first } else { &second };
        let resp = get(proxy.addr(), "a.com", "/", &[]);
        assert_eq!(resp.status, 200, "request {i}");
        assert_eq!(rate_headers(&resp).1, 3 - i, "request {i}");
    }
    assert_429(&get(first.addr(), "a.com", "/", &[]), 4);
    assert_429(&get(second.addr(), "a.com", "/", &[]), 4);
    assert_eq!(backend.hits(), 4);
    // The shared state lives on the write Redis with a TTL.
    let ttl: i64 = redis.query(&["PTTL", "ratelimit-state:a.com:127.0.0.1"]);
    assert!(ttl > 0, "PTTL {ttl}");
}

/// `n` requests at once, spread over `proxies`; the statuses in no particular order.
fn concurrent(proxies: &[&Proxy], n: usize) -> Vec<u16> {
    let addrs: Vec<_> = proxies.iter().map(|p| p.addr()).collect();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (addr, barrier) = (addrs[i % addrs.len()], barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                get(addr, "a.com", "/", &[]).status
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn limits_hold_exactly_under_concurrency() {
    // Local: one process, its buckets updated by compare-and-swap from every worker thread.
    let (redis, proxy, _backend) = setup(&["rate", "1", "period", "60", "burst", "8"]);
    let got = concurrent(&[&proxy], 24);
    assert_eq!(got.iter().filter(|s| **s == 200).count(), 8, "{got:?}");
    assert_eq!(got.iter().filter(|s| **s == 429).count(), 16, "{got:?}");
    // Global: two processes racing on one Redis script.
    set_limit(
        &redis,
        &["rate", "1", "period", "60", "burst", "8", "scope", "global"],
    );
    let second = Proxy::start(&redis, &[]);
    let got = concurrent(&[&proxy, &second], 24);
    assert_eq!(got.iter().filter(|s| **s == 200).count(), 8, "{got:?}");
    assert_eq!(got.iter().filter(|s| **s == 429).count(), 16, "{got:?}");
}

#[test]
fn a_malformed_limit_fails_open_and_is_logged_once() {
    let (redis, proxy, backend) = setup(&["rate", "ten"]);
    assert_eq!(statuses(&proxy, 5, &[]), [200; 5]);
    let part = r#"malformed ratelimit:a.com: field "rate": "ten" is not a whole number; ignored"#;
    let line = proxy.wait_stderr(&format!("containing {part:?}"), |l| l.contains(part));
    assert!(line.starts_with("ERROR in a.com -> ? - / - "), "{line}");
    let count = |p: &str| {
        proxy
            .stderr_lines()
            .iter()
            .filter(|l| l.contains(p))
            .count()
    };
    assert_eq!(count(part), 1, "the line is rate-limited");

    set_limit(&redis, &["rate", "1", "scope", "everywhere"]);
    assert_eq!(statuses(&proxy, 3, &[]), [200; 3]);
    proxy.wait_stderr("naming field scope", |l| {
        l.contains(r#"malformed ratelimit:a.com: field "scope""#)
    });

    // Every other way a hash can be wrong, each on a frontend of its own (the log says the same thing about
    // the same key and field once per 10 s): requests pass (a burst of 1 would refuse the second) and the log
    // names the key and field.
    for (i, (field, value)) in [
        ("period", "0"),
        ("period", "soon"),
        ("burst", "0"),
        ("by", "cookie:session"),
        ("by", "header:bad header"),
        ("compat", "nginx"),
        ("bursts", "1"),
        ("rate", ""),
    ]
    .into_iter()
    .enumerate()
    {
        let host = format!("m{i}.com");
        let key = format!("ratelimit:{host}");
        redis.set_frontend(&host, &[&backend.url()]);
        let mut args = vec!["HSET", &key, "period", "1m", "burst", "1", field, value];
        if field != "rate" {
            args.extend(["rate", "1"]);
        }
        redis.query::<i64>(&args);
        for _ in 0..2 {
            assert_eq!(
                get(proxy.addr(), &host, "/", &[]).status,
                200,
                "{field} {value}"
            );
        }
        let part = format!(r#"malformed {key}: field "{field}""#);
        proxy.wait_stderr(&part, |l| l.contains(&part) && l.ends_with("; ignored"));
    }

    // Not a hash.
    redis.query::<i64>(&["DEL", "ratelimit:a.com"]);
    redis.query::<i64>(&["RPUSH", "ratelimit:a.com", "10"]);
    assert_eq!(statuses(&proxy, 3, &[]), [200; 3]);
    proxy.wait_stderr("naming the key with WRONGTYPE", |l| {
        l.contains("malformed ratelimit:a.com: WRONGTYPE")
    });
    assert_eq!(backend.hits(), 27);
}

#[test]
fn a_global_limit_fails_open_when_redis_cannot_run_it() {
    // A script error (here: the state key holds a list) must not take the frontend down.
    let (redis, proxy, _backend) =
        setup(&["rate", "1", "period", "60", "burst", "1", "scope", "global"]);
    redis.query::<i64>(&["RPUSH", "ratelimit-state:a.com:127.0.0.1", "x"]);
    assert_eq!(statuses(&proxy, 3, &[]), [200; 3]);
    proxy.wait_stderr("about the global rate limit", |l| {
        l.contains("ERROR in a.com -> ? - / - ") && l.contains("global rate limit")
    });
}

#[test]
fn a_limited_signed_request_keeps_its_nonce() {
    use base64::Engine as _;
    use md5::{Digest, Md5};
    // The guard runs first (a limit keyed by X-UID must count only authenticated requests), but the nonce is
    // spent after the limit: a client told to retry later resends the same signed request.
    let (redis, proxy, _backend) = setup(&["rate", "1", "period", "2s", "burst", "1"]);
    redis.query::<i64>(&["HSET", "guard:a.com", "mode", "entree", "secret", "s"]);
    let signed = |nonce: &str| {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let text = format!("app\nGET\n\n/\n\n{ts}\n{nonce}\ns");
        let hex = format!("{:x}", Md5::digest(text.as_bytes()));
        let sign = base64::engine::general_purpose::STANDARD.encode(hex);
        vec![
            ("X-App-Key", "app".to_string()),
            ("X-Timestamp", ts),
            ("X-Nonce", nonce.to_string()),
            ("X-Sign", sign),
        ]
    };
    let send = |headers: &[(&str, String)]| {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        get(proxy.addr(), "a.com", "/", &h)
    };
    assert_eq!(send(&signed("first")).status, 200);
    // Unsigned requests are refused by the guard before the limit is consulted.
    assert_eq!(get(proxy.addr(), "a.com", "/", &[]).status, 403);
    let second = signed("second");
    assert_eq!(send(&second).status, 429);
    assert_eventually(secs(10), "the same signed request to pass", || {
        let resp = send(&second);
        assert_ne!(resp.status, 403, "{}", resp.body_str());
        resp.status == 200
    });
}

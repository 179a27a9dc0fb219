//! The admin listener, black-box (docs/admin-api.md): `--admin-address` and `--admin-token`, every path of
//! the API with its codes and JSON errors, `SCAN` paging, atomic writes, operator dead marks that look like
//! passive ones, the last minute's figures, and the probes. Real Redis, real backends, the real binary.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::{json, Value};
use support::admin::{admin_addr, call, get_json};
use support::*;

/// A proxy with the admin listener on a free loopback port, and its admin address.
fn start(redis: &RedisServer, extra: &[&str]) -> (Proxy, SocketAddr) {
    let mut args = vec!["--admin-address", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let proxy = Proxy::start(redis, &args);
    let admin = admin_addr(&proxy);
    (proxy, admin)
}

fn lrange(redis: &RedisServer, key: &str) -> Vec<String> {
    redis.query(&["LRANGE", &format!("frontend:{key}"), "0", "-1"])
}

fn backend(frontend: &Value, index: usize) -> &Value {
    &frontend["backends"][index]
}

#[test]
fn off_by_default_and_never_on_the_proxy_listener() {
    let redis = RedisServer::start();
    let plain = Proxy::start(&redis, &[]);
    assert!(
        !plain
            .stderr_lines()
            .iter()
            .any(|l| l.contains("Serving admin API")),
        "an admin listener without --admin-address"
    );
    let (proxy, admin) = start(&redis, &[]);
    assert_ne!(proxy.addr(), admin);
    for addr in [plain.addr(), proxy.addr()] {
        for path in ["/api/v1/frontends", "/healthz", "/ready", "/"] {
            let resp = get(addr, &proxy.addr().to_string(), path, &[]);
            assert_ne!(resp.status, 200, "{path} answered on the proxy listener");
            assert!(
                serde_json::from_slice::<Value>(&resp.body).is_err(),
                "{path} on the proxy listener: {}",
                resp.body_str()
            );
        }
    }
    assert_eq!(get_json(admin, "/healthz").status(), 200);
}

#[test]
fn a_non_loopback_address_without_a_token_exits_2_naming_the_flag() {
    let out = spawn_raw(
        &["--listen", "127.0.0.1:0", "--admin-address", "0.0.0.0:0"],
        &[],
        std::time::Duration::from_secs(15),
    );
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("--admin-token"), "{out:?}");
    // From the environment too, and an empty token counts as none.
    let out = spawn_raw(
        &["--listen", "127.0.0.1:0"],
        &[
            ("HYPACHE_ADMIN_ADDRESS", "0.0.0.0:0"),
            ("HYPACHE_ADMIN_TOKEN", ""),
        ],
        std::time::Duration::from_secs(15),
    );
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("--admin-token"), "{out:?}");
    // A bad address names its flag.
    let out = spawn_raw(
        &["--listen", "127.0.0.1:0", "--admin-address", "nope"],
        &[],
        std::time::Duration::from_secs(15),
    );
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("--admin-address"), "{out:?}");
}

#[test]
fn the_token_guards_the_api_and_not_the_probes() {
    let redis = RedisServer::start();
    redis.set_frontend("a.com", &["http://127.0.0.1:1"]);
    let proxy = Proxy::start_with_env(
        &redis,
        &["--admin-address", "127.0.0.1:0"],
        &[("HYPACHE_ADMIN_TOKEN", "s3cret-token")],
    );
    let admin = admin_addr(&proxy);
    let paths = [
        ("GET", "/api/v1/frontends"),
        ("GET", "/api/v1/frontends/a.com"),
        ("PUT", "/api/v1/frontends/a.com"),
        ("DELETE", "/api/v1/frontends/a.com"),
        ("POST", "/api/v1/frontends/a.com/backends/0/dead"),
        ("DELETE", "/api/v1/frontends/a.com/backends/0/dead"),
        ("GET", "/api/v1/stats"),
        ("GET", "/api/v1/nothing-here"),
    ];
    for (method, path) in paths {
        for token in [
            None,
            Some("wrong"),
            Some("s3cret-tok"),
            Some("s3cret-token2"),
        ] {
            let answer = call(admin, method, path, token, b"{}");
            assert_eq!(answer.status(), 401, "{method} {path} with {token:?}");
            assert!(answer.error().contains("token"), "{}", answer.error());
            assert_eq!(answer.resp.header("www-authenticate"), Some("Bearer"));
            assert_eq!(answer.resp.header("content-type"), Some("application/json"));
        }
    }
    // Nothing was changed by the refused writes.
    assert_eq!(lrange(&redis, "a.com"), ["id-a.com", "http://127.0.0.1:1"]);
    assert!(redis.dead_members("a.com").is_empty());
    let ok = call(admin, "GET", "/api/v1/frontends", Some("s3cret-token"), b"");
    assert_eq!(ok.status(), 200, "{}", ok.resp.body_str());
    // The probes and the dashboard need no token; no cookie, no CORS anywhere.
    for path in ["/healthz", "/ready", "/", "/dashboard.js", "/dashboard.css"] {
        let answer = get_json(admin, path);
        assert_eq!(answer.status(), 200, "{path}");
        assert!(!answer.resp.has_header("set-cookie"), "{path}");
        assert!(
            !answer.resp.has_header("access-control-allow-origin"),
            "{path}"
        );
    }
    let preflight = call(
        admin,
        "OPTIONS",
        "/api/v1/frontends",
        Some("s3cret-token"),
        b"",
    );
    assert_eq!(preflight.status(), 405);
    assert!(!preflight.resp.has_header("access-control-allow-origin"));
}

#[test]
fn without_a_token_only_loopback_hosts_are_answered() {
    let redis = RedisServer::start();
    let (_proxy, admin) = start(&redis, &[]);
    let resp = get(admin, "rebound.example:80", "/api/v1/frontends", &[]);
    assert_eq!(resp.status, 403, "{}", resp.head_text());
    let resp = get(admin, "localhost", "/api/v1/frontends", &[]);
    assert_eq!(resp.status, 200, "{}", resp.head_text());
}

#[test]
fn lists_frontends_with_backends_dead_marks_and_ttls() {
    let redis = RedisServer::start();
    let (_proxy, admin) = start(&redis, &[]);
    let empty = get_json(admin, "/api/v1/frontends");
    assert_eq!(empty.status(), 200);
    assert_eq!(empty.json, json!({ "cursor": "0", "frontends": [] }));

    // Created with redis-cli's commands, seen at once: the API reads Redis, it caches nothing.
    redis.query::<()>(&[
        "RPUSH",
        "frontend:a.com",
        "site-a",
        "http://10.0.0.1:80",
        "http://10.0.0.2:80",
    ]);
    redis.query::<()>(&["SADD", "dead:a.com", "1"]);
    redis.query::<()>(&["EXPIRE", "dead:a.com", "30"]);
    redis.query::<()>(&["SET", "not-a-frontend", "x"]);
    let listed = eventually(SOON, "a.com listed", || {
        let answer = get_json(admin, "/api/v1/frontends");
        let frontends = answer.json["frontends"].as_array()?.clone();
        (frontends.len() == 1).then_some(frontends)
    });
    let a = &listed[0];
    assert_eq!(a["frontend"], "a.com");
    assert_eq!(a["identifier"], "site-a");
    assert_eq!(
        backend(a, 0),
        &json!({ "url": "http://10.0.0.1:80", "index": 0, "dead": false, "dead_ttl_ms": null, "ejected": false })
    );
    assert_eq!(backend(a, 1)["dead"], true);
    let ttl = backend(a, 1)["dead_ttl_ms"].as_u64().unwrap();
    assert!((25_000..=30_000).contains(&ttl), "dead_ttl_ms {ttl}");
    assert_eq!(redis.calls("keys"), 0, "KEYS must never be sent");
    assert!(redis.calls("scan") > 0);
}

#[test]
fn scan_pages_through_a_thousand_frontends() {
    let redis = RedisServer::start();
    let (_proxy, admin) = start(&redis, &[]);
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.cmd("RPUSH")
            .arg(format!("frontend:host{i:04}.example.com"))
            .arg(format!("id{i}"))
            .arg(format!("http://10.0.{}.{}:80", i / 256, i % 256))
            .ignore();
    }
    pipe.query::<()>(&mut redis.con()).unwrap();

    let mut seen = BTreeSet::new();
    let mut cursor = "0".to_string();
    let mut pages = 0;
    loop {
        let answer = get_json(
            admin,
            &format!("/api/v1/frontends?cursor={cursor}&count=100"),
        );
        assert_eq!(answer.status(), 200, "{}", answer.resp.body_str());
        for f in answer.json["frontends"].as_array().unwrap() {
            let key = f["frontend"].as_str().unwrap().to_string();
            let i: usize = key[4..8].parse().unwrap();
            assert_eq!(f["identifier"], format!("id{i}"));
            assert_eq!(
                f["backends"][0]["url"],
                format!("http://10.0.{}.{}:80", i / 256, i % 256)
            );
            seen.insert(key);
        }
        cursor = answer.json["cursor"].as_str().unwrap().to_string();
        pages += 1;
        assert!(pages < 200, "SCAN did not finish");
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), 1000);
    assert!(pages >= 5, "1,000 frontends in {pages} pages of 100");
    assert_eq!(redis.calls("keys"), 0, "KEYS must never be sent");
    // One big page, and bad paging parameters.
    let all = get_json(admin, "/api/v1/frontends?count=1000");
    assert_eq!(all.status(), 200);
    for bad in ["count=0", "count=1001", "count=x", "cursor=-1"] {
        let answer = get_json(admin, &format!("/api/v1/frontends?{bad}"));
        assert_eq!(answer.status(), 400, "{bad}");
        answer.error();
    }
}

#[test]
fn one_frontend_with_policies_masked_and_404_for_unknown() {
    let redis = RedisServer::start();
    let (_proxy, admin) = start(&redis, &[]);
    let missing = get_json(admin, "/api/v1/frontends/nowhere.com");
    assert_eq!(missing.status(), 404);
    assert!(
        missing.error().contains("nowhere.com"),
        "{}",
        missing.error()
    );

    redis.set_frontend("a.com", &["http://10.0.0.1:80"]);
    redis.query::<()>(&[
        "HSET",
        "guard:a.com",
        "secret",
        "very-s3cret",
        "time_window",
        "30",
    ]);
    redis.query::<()>(&["HSET", "ratelimit:a.com", "rate", "not-a-rate"]);
    let one = get_json(admin, "/api/v1/frontends/a.com");
    assert_eq!(one.status(), 200, "{}", one.resp.body_str());
    let body = one.resp.body_str();
    assert!(!body.contains("very-s3cret"), "a secret shown: {body}");
    assert_eq!(one.json["frontend"], "a.com");
    assert_eq!(one.json["source"], "redis");
    assert_eq!(one.json["backends"][0]["url"], "http://10.0.0.1:80");
    let guard = &one.json["policies"]["guard"];
    assert_eq!(guard["valid"], true, "{guard}");
    assert_eq!(guard["fields"]["secret"], "********");
    assert_eq!(guard["fields"]["time_window"], "30");
    let ratelimit = &one.json["policies"]["ratelimit"];
    assert_eq!(ratelimit["valid"], false, "{ratelimit}");
    assert!(ratelimit["error"]
        .as_str()
        .unwrap()
        .contains("ratelimit:a.com"));
    assert_eq!(one.json["policies"]["breaker"], Value::Null);
    assert_eq!(one.json["stats"]["total"], 0);
}

#[test]
fn put_writes_the_list_atomically_and_an_invalid_body_changes_nothing() {
    let redis = RedisServer::start();
    let (proxy, admin) = start(&redis, &[]);
    let (one, two) = (Backend::named("one"), Backend::named("two"));
    redis.set_frontend("a.com", &["http://10.9.9.9:80"]);
    redis.query::<()>(&["SADD", "dead:a.com", "0"]);
    let before = lrange(&redis, "a.com");

    let bad_bodies: [&[u8]; 9] = [
        b"not json",
        b"",
        b"[]",
        br#"{"identifier": "x"}"#,
        br#"{"backends": ["http://a"]}"#,
        br#"{"identifier": 1, "backends": ["http://a"]}"#,
        br#"{"identifier": "x", "backends": ["http://a", "ftp://b"]}"#,
        br#"{"identifier": "x", "backends": ["10.0.0.1:80"]}"#,
        br#"{"identifier": "x", "backends": ["http://a"], "extra": true}"#,
    ];
    let multi_before = redis.calls("multi");
    for body in bad_bodies {
        let answer = call(admin, "PUT", "/api/v1/frontends/a.com", None, body);
        assert_eq!(
            answer.status(),
            400,
            "{:?}: {}",
            String::from_utf8_lossy(body),
            answer.resp.body_str()
        );
        answer.error();
        assert_eq!(lrange(&redis, "a.com"), before);
    }
    assert_eq!(redis.calls("multi"), multi_before);

    let body = json!({ "identifier": "site-a", "backends": [one.url(), two.url()] }).to_string();
    let answer = call(
        admin,
        "PUT",
        "/api/v1/frontends/a.com",
        None,
        body.as_bytes(),
    );
    assert_eq!(answer.status(), 200, "{}", answer.resp.body_str());
    assert_eq!(lrange(&redis, "a.com"), ["site-a", &one.url(), &two.url()]);
    // The old list's dead marks went with it.
    assert!(redis.dead_members("a.com").is_empty());
    assert_eq!(redis.calls("multi"), multi_before + 1);
    assert_eq!(redis.calls("exec"), 1);
    // The proxy routes by it at once.
    let answers: BTreeSet<String> = (0..4)
        .map(|_| get(proxy.addr(), "a.com", "/", &[]).body_str())
        .collect();
    assert_eq!(
        answers,
        BTreeSet::from(["one".to_string(), "two".to_string()])
    );

    // A new frontend, a path frontend (its `/` percent-encoded) and the catch-all.
    for (path, key) in [
        ("/api/v1/frontends/b.com", "b.com"),
        (
            "/api/v1/frontends/www.example.com%2Fapi",
            "www.example.com/api",
        ),
        ("/api/v1/frontends/%2A", "*"),
    ] {
        let body = json!({ "identifier": "x", "backends": ["https://b.example:8443"] }).to_string();
        let answer = call(admin, "PUT", path, None, body.as_bytes());
        assert_eq!(answer.status(), 200, "{path}: {}", answer.resp.body_str());
        assert_eq!(
            lrange(&redis, key),
            ["x", "https://b.example:8443"],
            "{path}"
        );
        let shown = get_json(admin, path);
        assert_eq!(shown.json["frontend"], key, "{path}");
    }
}

#[test]
fn delete_removes_the_list_and_its_dead_set() {
    let redis = RedisServer::start();
    let (_proxy, admin) = start(&redis, &[]);
    redis.set_frontend("a.com", &["http://10.0.0.1:80", "http://10.0.0.2:80"]);
    redis.query::<()>(&["SADD", "dead:a.com", "1"]);
    let answer = call(admin, "DELETE", "/api/v1/frontends/a.com", None, b"");
    assert_eq!(answer.status(), 200, "{}", answer.resp.body_str());
    assert_eq!(answer.json["deleted"], true);
    let exists: i64 = redis.query(&["EXISTS", "frontend:a.com", "dead:a.com"]);
    assert_eq!(exists, 0);
    let again = call(admin, "DELETE", "/api/v1/frontends/a.com", None, b"");
    assert_eq!(again.status(), 404);
    again.error();
    assert_eq!(get_json(admin, "/api/v1/frontends/a.com").status(), 404);
}

#[test]
fn an_operator_dead_mark_is_a_passive_one_and_a_revive_undoes_it() {
    let redis = RedisServer::start();
    let (proxy, admin) = start(&redis, &["--dead-backend-time", "7"]);
    let (one, two) = (Backend::named("one"), Backend::named("two"));
    redis.set_frontend("a.com", &[&one.url(), &two.url()]);
    let sub = redis.subscribe_dead();

    let answer = call(
        admin,
        "POST",
        "/api/v1/frontends/a.com/backends/1/dead",
        None,
        b"",
    );
    assert_eq!(answer.status(), 200, "{}", answer.resp.body_str());
    assert_eq!(answer.json["dead"], true);
    assert_eq!(answer.json["url"], two.url());
    assert_eq!(answer.json["ttl_ms"], 7000);
    // What a passive mark writes: SADD + EXPIRE with --dead-backend-time, and the same `dead` message.
    assert_eq!(redis.dead_members("a.com"), ["1"]);
    let ttl: i64 = redis.query(&["TTL", "dead:a.com"]);
    assert!((5..=7).contains(&ttl), "TTL {ttl}");
    assert_eq!(
        sub.next(SOON).as_deref(),
        Some(format!("a.com;{};1;2", two.url()).as_str())
    );
    let listed = get_json(admin, "/api/v1/frontends/a.com");
    assert_eq!(backend(&listed.json, 1)["dead"], true);
    for _ in 0..4 {
        assert_eq!(get(proxy.addr(), "a.com", "/", &[]).body_str(), "one");
    }

    let answer = call(
        admin,
        "DELETE",
        "/api/v1/frontends/a.com/backends/1/dead",
        None,
        b"",
    );
    assert_eq!(answer.status(), 200, "{}", answer.resp.body_str());
    assert_eq!(answer.json["dead"], false);
    assert_eq!(answer.json["was_dead"], true);
    assert!(redis.dead_members("a.com").is_empty());
    let answers: BTreeSet<String> = (0..4)
        .map(|_| get(proxy.addr(), "a.com", "/", &[]).body_str())
        .collect();
    assert!(answers.contains("two"), "{answers:?}");

    // A path frontend, its key percent-encoded.
    redis.set_frontend("www.example.com/api", &[&one.url(), &two.url()]);
    let answer = call(
        admin,
        "POST",
        "/api/v1/frontends/www.example.com%2Fapi/backends/0/dead",
        None,
        b"",
    );
    assert_eq!(answer.status(), 200, "{}", answer.resp.body_str());
    assert_eq!(redis.dead_members("www.example.com/api"), ["0"]);
    assert_eq!(
        sub.next(SOON).as_deref(),
        Some(format!("www.example.com/api;{};0;2", one.url()).as_str())
    );

    // Unknown frontends and backends.
    for path in [
        "/api/v1/frontends/a.com/backends/2/dead",
        "/api/v1/frontends/nowhere.com/backends/0/dead",
    ] {
        let answer = call(admin, "POST", path, None, b"");
        assert_eq!(answer.status(), 404, "{path}");
        answer.error();
    }
    assert_eq!(redis.dead_members("a.com"), Vec::<String>::new());
}

#[test]
fn stats_count_the_last_minute_by_status_class_and_latency() {
    let redis = RedisServer::start();
    let (proxy, admin) = start(&redis, &[]);
    let ok = Backend::named("ok");
    let failing = Backend::start(|_| Reply::text(500, "boom"));
    redis.set_frontend("a.com", &[&ok.url(), &failing.url()]);
    redis.set_frontend("b.com", &[&ok.url()]);
    for _ in 0..6 {
        get(proxy.addr(), "a.com", "/", &[]);
    }
    get(proxy.addr(), "b.com", "/", &[]);
    // A Host without a frontend is not a frontend's figure.
    get(proxy.addr(), "unknown.com", "/", &[]);

    let stats = get_json(admin, "/api/v1/stats");
    assert_eq!(stats.status(), 200);
    assert_eq!(stats.json["window_s"], 60);
    let frontends = stats.json["frontends"].as_array().unwrap();
    let keys: Vec<&str> = frontends
        .iter()
        .map(|f| f["frontend"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a.com", "b.com"]);
    let a = &frontends[0];
    assert_eq!(a["requests"]["2xx"], 3, "{a}");
    assert_eq!(a["requests"]["5xx"], 3, "{a}");
    assert_eq!(a["total"], 6);
    assert!(a["p50_ms"].as_f64().unwrap() > 0.0, "{a}");
    assert!(a["p99_ms"].as_f64().unwrap() >= a["p50_ms"].as_f64().unwrap());
    let by_url: Vec<(String, u64, u64)> = a["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["url"].as_str().unwrap().to_string(),
                b["requests"]["2xx"].as_u64().unwrap(),
                b["requests"]["5xx"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(by_url.contains(&(ok.url(), 3, 0)), "{by_url:?}");
    assert!(by_url.contains(&(failing.url(), 0, 3)), "{by_url:?}");
    // The frontend's own page carries the same figures.
    let one = get_json(admin, "/api/v1/frontends/a.com");
    assert_eq!(one.json["stats"]["total"], 6);
}

#[test]
fn ready_follows_the_route_source_and_healthz_does_not() {
    let mut redis = RedisServer::start();
    redis.set_frontend("a.com", &["http://127.0.0.1:1"]);
    let (proxy, admin) = start(&redis, &["--stale-routes-ttl", "0s"]);
    let (stale_proxy, stale_admin) = start(&redis, &[]);
    let ready = get_json(admin, "/ready");
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json["ready"], true);
    // A route read while Redis answers is kept for an outage.
    get(stale_proxy.addr(), "a.com", "/", &[]);
    redis.stop();
    assert_eventually(SOON, "/ready 503 without Redis", || {
        get_json(admin, "/ready").status() == 503
    });
    let not_ready = get_json(admin, "/ready");
    assert_eq!(not_ready.json["ready"], false);
    not_ready.error();
    let stale = get_json(stale_admin, "/ready");
    assert_eq!(stale.status(), 200, "{}", stale.resp.body_str());
    assert_eq!(stale.json["stale_routes"], true);
    assert_eq!(get_json(admin, "/healthz").status(), 200);
    // The API says Redis is down, as JSON.
    let listing = get_json(admin, "/api/v1/frontends");
    assert_eq!(listing.status(), 503);
    assert!(listing.error().contains("redis"), "{}", listing.error());
    drop(proxy);
}

#[test]
fn unknown_paths_and_methods_are_json_errors() {
    let redis = RedisServer::start();
    let (_proxy, admin) = start(&redis, &[]);
    let missing = get_json(admin, "/api/v2/frontends");
    assert_eq!(missing.status(), 404);
    missing.error();
    assert_eq!(get_json(admin, "/nope").status(), 404);
    for (method, path, allow) in [
        ("POST", "/api/v1/frontends", "GET"),
        ("PATCH", "/api/v1/frontends/a.com", "GET, PUT, DELETE"),
        (
            "GET",
            "/api/v1/frontends/a.com/backends/0/dead",
            "POST, DELETE",
        ),
        ("DELETE", "/api/v1/stats", "GET"),
        ("POST", "/healthz", "GET, HEAD"),
    ] {
        let answer = call(admin, method, path, None, b"");
        assert_eq!(answer.status(), 405, "{method} {path}");
        assert_eq!(answer.resp.header("allow"), Some(allow), "{method} {path}");
        answer.error();
    }
    let big = vec![b'x'; 2 << 20];
    let answer = call(admin, "PUT", "/api/v1/frontends/a.com", None, &big);
    assert_eq!(answer.status(), 413);
    answer.error();
}

#[test]
fn a_routes_file_is_listed_and_marked_but_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.toml");
    std::fs::write(
        &routes,
        "[frontends.\"a.com\"]\nidentifier = \"site-a\"\nbackends = [\"http://10.0.0.1:80\", \"http://10.0.0.2:80\"]\n",
    )
    .unwrap();
    let proxy = Proxy::start_without_redis(&[
        "--admin-address",
        "127.0.0.1:0",
        "--routes",
        routes.to_str().unwrap(),
        "--access-log",
        "none",
    ]);
    let admin = admin_addr(&proxy);
    let listed = get_json(admin, "/api/v1/frontends");
    assert_eq!(listed.status(), 200, "{}", listed.resp.body_str());
    let a = &listed.json["frontends"][0];
    assert_eq!(a["frontend"], "a.com");
    assert_eq!(a["identifier"], "site-a");
    assert_eq!(a["backends"].as_array().unwrap().len(), 2);
    assert_eq!(get_json(admin, "/ready").status(), 200);
    let body = json!({ "identifier": "x", "backends": ["http://a"] }).to_string();
    for (method, body) in [("PUT", body.as_bytes()), ("DELETE", b"".as_slice())] {
        let answer = call(admin, method, "/api/v1/frontends/a.com", None, body);
        assert_eq!(answer.status(), 409, "{method}");
        assert!(answer.error().contains("read-only"), "{}", answer.error());
    }
    // Dead marks live in process for this source.
    let mark = call(
        admin,
        "POST",
        "/api/v1/frontends/a.com/backends/0/dead",
        None,
        b"",
    );
    assert_eq!(mark.status(), 200, "{}", mark.resp.body_str());
    let one = get_json(admin, "/api/v1/frontends/a.com");
    assert_eq!(one.json["source"], "routes file");
    assert_eq!(backend(&one.json, 0)["dead"], true);
    assert!(backend(&one.json, 0)["dead_ttl_ms"].as_u64().unwrap() > 0);
    let revive = call(
        admin,
        "DELETE",
        "/api/v1/frontends/a.com/backends/0/dead",
        None,
        b"",
    );
    assert_eq!(revive.json["was_dead"], true);
    let one = get_json(admin, "/api/v1/frontends/a.com");
    assert_eq!(backend(&one.json, 0)["dead"], false);
}

#[test]
fn a_backend_the_breaker_ejected_is_shown_ejected() {
    let redis = RedisServer::start();
    let (proxy, admin) = start(
        &redis,
        &["--breaker-failures", "1", "--breaker-cooldown", "5m"],
    );
    let ok = Backend::named("ok");
    let failing = Backend::start(|_| Reply::text(502, "boom"));
    redis.set_frontend("a.com", &[&ok.url(), &failing.url()]);
    let listed = get_json(admin, "/api/v1/frontends/a.com");
    assert_eq!(backend(&listed.json, 1)["ejected"], false);
    assert_eventually(SOON, "the failing backend ejected", || {
        get(proxy.addr(), "a.com", "/", &[]);
        let listed = get_json(admin, "/api/v1/frontends/a.com");
        backend(&listed.json, 1)["ejected"] == true
    });
    let listed = get_json(admin, "/api/v1/frontends");
    let a = &listed.json["frontends"][0];
    assert_eq!(backend(a, 0)["ejected"], false);
    assert_eq!(backend(a, 1)["ejected"], true);
    assert_eq!(backend(a, 1)["dead"], false);
}

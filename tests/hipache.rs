//! The Hipache preset: `hypache -c config.json` (docs/compat/hipache.md, issue 6). Each test writes a Hipache config
//! file, starts the real binary with it against a real redis-server, and checks what a Hipache operator relies
//! on: keys, driver URLs, routing, dead marks, retries, error pages, headers, the access log, signals.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hipache");

/// A running Hipache-preset proxy with its config directory (config file and access log).
struct Hip {
    proxy: Proxy,
    dir: tempfile::TempDir,
}

impl Hip {
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_path())
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.addr()
    }
}

/// Deep-merge `patch` into `base` (objects are merged, anything else replaced).
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

/// The config every test starts from: one plain bind on port 0, the access log in a temp dir, the test Redis.
fn base_config(redis: &RedisServer, dir: &Path) -> Value {
    json!({
        "server": {
            "accessLog": dir.join("access.log").display().to_string(),
            "tcpTimeout": 30,
        },
        "http": {"port": 0, "bind": ["127.0.0.1"]},
        "driver": format!("redis://127.0.0.1:{}", redis.port()),
        "user": "root",
    })
}

fn write_config(dir: &Path, config: &Value) -> PathBuf {
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    path
}

#[track_caller]
fn start_with(redis: &RedisServer, patch: Value, want: (bool, bool)) -> Hip {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(redis, dir.path());
    merge(&mut config, patch);
    let path = write_config(dir.path(), &config);
    let proxy = Proxy::start_expecting(vec!["-c".into(), path.display().to_string()], &[], want)
        .unwrap_or_else(|e| panic!("{e}"));
    Hip { proxy, dir }
}

#[track_caller]
fn start(redis: &RedisServer, patch: Value) -> Hip {
    start_with(redis, patch, (true, false))
}

/// A fixture file with `@DIR@`, `@PORT@` and `@FIXTURES@` filled in, written into `dir`.
fn fixture(name: &str, dir: &Path, port: u16) -> PathBuf {
    let text = std::fs::read_to_string(Path::new(FIXTURES).join(name)).unwrap();
    let text = text
        .replace("@DIR@", &dir.display().to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@FIXTURES@", FIXTURES);
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn proc_status(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

fn echo() -> Backend {
    Backend::start(|req| Reply::text(200, &format!("{} {}", req.method, req.target)))
}

// ---------------------------------------------------------------------------------------------------------------
// Configuration file, CLI
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn dry_prints_every_key_of_the_master_layout_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture("config_master.json", dir.path(), 6390);
    let out = spawn_raw(&["-c", &path.display().to_string(), "--dry"], &[], secs(15));
    assert_eq!(out.code(), Some(0), "{out:?}");
    // Compared without whitespace, so the pretty-printer's indentation does not matter.
    let flat: String = out.stdout.split_whitespace().collect();
    let has = |needle: &str| {
        let needle: String = needle.split_whitespace().collect();
        assert!(
            flat.contains(&needle),
            "{needle:?} missing in:\n{}",
            out.stdout
        );
    };
    // driver: first URL reads (with password, db and prefix), the last one gets the marks.
    has("port: 6390");
    has("db: 2");
    has("db: 3");
    has("key_prefix: \"pfx:\"");
    // Secrets never appear in dumps.
    assert!(!out.stdout.contains("s3cret"), "{}", out.stdout);
    has("password: Some(\"********\",)");
    // server.*
    has(&format!("File(\"{}/access.log\",)", dir.path().display()));
    has("access_log_format: Hipache");
    has("workers: 3,");
    has("max_idle_per_backend: 16");
    has("request: Some(20s,)");
    has("client_idle: Some(20s,)");
    has("dead_backend_ttl: 7s");
    has("retry_limit: Some(2,)");
    has("dead_statuses: [501..=502, 504..=599,]");
    has(&format!(
        "{FIXTURES}/static: error_400.html, error_default.html"
    ));
    has("backend_cache: true");
    has("backend_cache_limits: (5s, 100,)");
    has("selection: Random");
    has("usr1_reopens_log: true");
    has("user: \"root\"");
    has("listen: Some(127.0.0.1:0,)");
}

#[test]
fn the_0_3_1_layout_and_its_legacy_redis_keys_are_read() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = fixture("config_0.3.1.json", dir.path(), redis.port());
    let backend = Backend::named("legacy");
    redis.set_frontend_db(1, "legacy.local", &[&backend.url()]);
    let proxy = Proxy::start_expecting(
        vec!["-c".into(), path.display().to_string()],
        &[],
        (true, false),
    )
    .unwrap();
    // `server.port`/`server.address` give the listener, `redisDatabase` the database.
    assert_eq!(proxy.addr().ip().to_string(), "127.0.0.1");
    let resp = get(proxy.addr(), "legacy.local", "/", &[]);
    assert_eq!((resp.status, resp.body_str().as_str()), (200, "legacy"));
    let lines = eventually(SOON, "an access-log line", || {
        let text = std::fs::read_to_string(dir.path().join("access.log")).ok()?;
        (!text.is_empty()).then_some(text)
    });
    assert!(lines.contains("\"id-legacy.local\""), "{lines}");
}

#[test]
fn a_broken_file_exits_2_naming_the_line_or_the_key() {
    let syntax = Path::new(FIXTURES).join("broken_syntax.json");
    let out = spawn_raw(&["-c", &syntax.display().to_string()], &[], secs(15));
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("broken_syntax.json: line 4 column 3: "),
        "{}",
        out.stderr
    );

    let dir = tempfile::tempdir().unwrap();
    for (config, want) in [
        (
            json!({"server": {"retryOnError": "often"}}),
            "server.retryOnError: expected a number",
        ),
        (
            json!({"http": {"bind": [{"address": 5}]}}),
            "http.bind[0].address: expected a string",
        ),
        (
            json!({"driver": "etcd://127.0.0.1:4001"}),
            "driver: \"etcd://127.0.0.1:4001\": the etcd driver is not supported; hypache supports redis only",
        ),
        (
            json!({"driver": ["redis:", "zookeeper://localhost:2181"]}),
            "driver[1]: \"zookeeper://localhost:2181\": the zookeeper driver is not supported",
        ),
        (
            json!({"https": {"bind": ["127.0.0.1"]}}),
            "https: `key` and `cert` are required for an HTTPS bind",
        ),
    ] {
        let path = write_config(dir.path(), &config);
        let out = spawn_raw(&["-c", &path.display().to_string()], &[], secs(15));
        assert_eq!(out.code(), Some(2), "{config}: {out:?}");
        assert!(out.stderr.contains(want), "{config}: {}", out.stderr);
    }
    let out = spawn_raw(&["-c", "/nonexistent/config.json"], &[], secs(15));
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("/nonexistent/config.json"), "{out:?}");
}

#[test]
fn settings_flavor_picks_config_flavor_json() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join("config")).unwrap();
    std::fs::write(
        cwd.path().join("config/config_staging.json"),
        r#"{"server": {"deadBackendTTL": 42}, "user": "root"}"#,
    )
    .unwrap();
    let out = std::process::Command::new(support::proxy::BIN)
        .arg("--dry")
        .current_dir(cwd.path())
        .env("SETTINGS_FLAVOR", "staging")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.contains("dead_backend_ttl: 42s"), "{stdout}");
}

// ---------------------------------------------------------------------------------------------------------------
// Drivers
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn driver_password_db_and_prefix_apply_to_frontend_and_dead_keys_but_not_the_channel() {
    let redis = RedisServer::start_with_password("pw:x@");
    let good = Backend::named("good");
    let refused = refused_url();
    let mut db2 = redis.con_db(2);
    redis::cmd("RPUSH")
        .arg("pfx:frontend:p.local")
        .arg("p-id")
        .arg(&refused)
        .arg(good.url())
        .query::<()>(&mut db2)
        .unwrap();
    let sub = redis.subscribe_dead();
    let hip = start(
        &redis,
        json!({
            "driver": format!("redis://:pw%3Ax%40@127.0.0.1:{}/2#pfx:", redis.port()),
            "server": {"deadBackendTTL": 9},
        }),
    );
    // Random choice: keep asking until the refused backend was tried (then marked and retried elsewhere).
    let message = eventually(SOON, "a dead mark published", || {
        let resp = get(hip.addr(), "p.local", "/", &[]);
        assert_eq!((resp.status, resp.body_str().as_str()), (200, "good"));
        sub.next(millis(50))
    });
    // Published on the unprefixed `dead` channel, with Hipache's normalised URL.
    assert_eq!(message, format!("p.local;{refused}/;0;2"));
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg("pfx:dead:p.local")
        .query(&mut db2)
        .unwrap();
    assert_eq!(members, ["0"]);
    let ttl: i64 = redis::cmd("TTL")
        .arg("pfx:dead:p.local")
        .query(&mut db2)
        .unwrap();
    assert!((7..=9).contains(&ttl), "TTL {ttl}");
    // Nothing unprefixed, nothing in db 0.
    let plain: bool = redis::cmd("EXISTS")
        .arg("dead:p.local")
        .query(&mut db2)
        .unwrap();
    assert!(!plain);
    assert!(redis.dead_members("p.local").is_empty());
}

#[test]
fn redis_colon_alone_means_localhost_6379_and_a_wrong_password_fails_at_start() {
    // `redis:` is 127.0.0.1:6379: show it with --dry (no Redis needed).
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &json!({"driver": "redis:", "user": "root"}));
    let out = spawn_raw(&["-c", &path.display().to_string(), "-d"], &[], secs(15));
    assert_eq!(out.code(), Some(0), "{out:?}");
    let flat: String = out.stdout.split_whitespace().collect();
    assert!(
        flat.contains("Tcp{host:\"127.0.0.1\",port:6379,}"),
        "{}",
        out.stdout
    );

    let redis = RedisServer::start_with_password("right");
    let mut config = base_config(&redis, dir.path());
    config["driver"] = json!(format!("redis://:wrong@127.0.0.1:{}", redis.port()));
    let path = write_config(dir.path(), &config);
    let out = spawn_raw(&["-c", &path.display().to_string()], &[], secs(15));
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        !out.stderr.contains("wrong"),
        "the password leaked: {}",
        out.stderr
    );
}

#[test]
fn with_two_driver_urls_the_first_is_read_and_the_last_gets_the_marks() {
    let reads = RedisServer::start();
    let marks = RedisServer::start();
    let good = Backend::named("good");
    let refused = refused_url();
    reads.set_frontend("two.local", &[&refused, &good.url()]);
    let hip = start(
        &reads,
        json!({"driver": [
            format!("redis://127.0.0.1:{}", reads.port()),
            format!("redis://127.0.0.1:{}", marks.port()),
        ]}),
    );
    assert_eventually(SOON, "dead:two.local on the last driver", || {
        let resp = get(hip.addr(), "two.local", "/", &[]);
        assert_eq!(resp.status, 200);
        marks.dead_members("two.local") == ["0"]
    });
    assert!(reads.dead_members("two.local").is_empty());
}

// ---------------------------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn every_method_passes() {
    let redis = RedisServer::start();
    let backend = echo();
    redis.set_frontend("m.local", &[&backend.url()]);
    let hip = start(&redis, json!({}));
    for method in [
        "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE", "PROPFIND",
    ] {
        let resp = request(hip.addr(), method, "m.local", "/x?y=1", &[], b"body");
        assert_eq!(resp.status, 200, "{method}");
        assert_eq!(resp.body_str(), format!("{method} /x?y=1"));
    }
    let mut conn = ClientConn::connect(hip.addr());
    conn.send(&build_request("HEAD", Some("m.local"), "/h", &[], b""))
        .unwrap();
    let resp = conn.try_read_response(secs(5), true).expect("HEAD answer");
    assert_eq!(resp.status, 200);
    let methods: Vec<String> = backend.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(
        methods,
        ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE", "PROPFIND", "HEAD"]
    );
}

#[test]
fn names_simple_long_and_wildcard_with_priority_and_the_depth_limit() {
    let redis = RedisServer::start();
    let named = |n: &str| Backend::named(n);
    let (simple, long, exact, wild_b, wild_top, deep5, catch_all) = (
        named("simple"),
        named("long"),
        named("exact"),
        named("wild-b"),
        named("wild-top"),
        named("deep5"),
        named("catch-all"),
    );
    let long_name = "l1.l2.l3.l4.l5.l6.l7.l8.l9.l10.l11.l12.example";
    assert_eq!(long_name.split('.').count(), 13);
    redis.set_frontend("simple", &[&simple.url()]);
    redis.set_frontend(long_name, &[&long.url()]);
    redis.set_frontend("x.b.example", &[&exact.url()]);
    redis.set_frontend("*.b.example", &[&wild_b.url()]);
    redis.set_frontend("*.example", &[&wild_top.url()]);
    // Only `*.quuux.foo...` would match this name, and it is one level too deep (docs/compat/hipache.md#wildcard-candidates).
    redis.set_frontend("*.quuux.foo.bar.baz.qux.quux", &[&deep5.url()]);
    let hip = start(&redis, json!({}));
    let body = |host: &str| {
        let resp = get(hip.addr(), host, "/", &[]);
        (resp.status, resp.body_str())
    };
    assert_eq!(body("simple"), (200, "simple".into()));
    assert_eq!(body(long_name), (200, "long".into()));
    // A port is dropped and the rest lower-cased.
    assert_eq!(body("SIMPLE:8080"), (200, "simple".into()));
    // Exact beats wildcard, the nearer wildcard beats the farther one.
    assert_eq!(body("x.b.example"), (200, "exact".into()));
    assert_eq!(body("y.b.example"), (200, "wild-b".into()));
    assert_eq!(body("z.y.b.example"), (200, "wild-b".into()));
    assert_eq!(body("c.example"), (200, "wild-top".into()));
    // A wildcard never matches its bare parent.
    assert_eq!(body("example").0, 400);
    let deep = "too.deep.quuux.foo.bar.baz.qux.quux";
    assert_eq!(body(deep).0, 400);
    redis.set_frontend("*.foo.bar.baz.qux.quux", &[&deep5.url()]);
    assert_eq!(body(deep), (200, "deep5".into()));
    // The first non-empty list wins, even one holding only the identifier: no fall-through to a wildcard.
    redis.query::<()>(&["RPUSH", "frontend:parked.b.example", "parked"]);
    assert_eq!(body("parked.b.example").0, 502);
    // `*` catches everything else.
    assert_eq!(body("unknown.test").0, 400);
    redis.set_frontend("*", &[&catch_all.url()]);
    assert_eq!(body("unknown.test"), (200, "catch-all".into()));
    assert_eq!(body("parked.b.example").0, 502);
}

#[test]
fn the_choice_is_random_over_three_backends() {
    let redis = RedisServer::start();
    let backends: Vec<Backend> = ["b0", "b1", "b2"]
        .iter()
        .map(|n| Backend::named(n))
        .collect();
    let urls: Vec<String> = backends.iter().map(Backend::url).collect();
    redis.set_frontend(
        "r.local",
        &urls.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let hip = start(&redis, json!({}));
    let picks: Vec<String> = (0..90)
        .map(|_| get(hip.addr(), "r.local", "/", &[]).body_str())
        .collect();
    for name in ["b0", "b1", "b2"] {
        let n = picks.iter().filter(|p| *p == name).count();
        assert!(n >= 10, "{name} got {n} of 90: {picks:?}");
    }
    // Not PlanB's rotation: with random choice, 90 picks in strict b0, b1, b2 order do not happen.
    let rotation = picks.windows(2).all(|w| {
        let next = |p: &str| match p {
            "b0" => "b1",
            "b1" => "b2",
            _ => "b0",
        };
        w[1] == next(&w[0])
    });
    assert!(!rotation, "{picks:?}");
}

#[test]
fn ping_missing_host_and_unknown_host() {
    let redis = RedisServer::start();
    let hip = start(&redis, json!({}));
    let resp = get(hip.addr(), "__ping__", "/anything", &[]);
    assert_eq!((resp.status, resp.body_str().as_str()), (200, "ok"));
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    // `__ping__` touches no Redis: it answers with Redis gone too.
    let mut redis = redis;
    redis.stop();
    assert_eq!(get(hip.addr(), "__ping__", "/", &[]).status, 200);

    let no_host = exchange(hip.addr(), b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(no_host.status, 400);
    assert!(
        no_host.body_str().contains("No Application Configured"),
        "{}",
        no_host.body_str()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Dead marks and retries
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn one_refusing_backend_with_retry_on_error_0_gives_at_most_one_502_then_only_successes() {
    let redis = RedisServer::start();
    let good = Backend::named("good");
    let refused = refused_url();
    redis.set_frontend("ro.local", &[&refused, &good.url()]);
    let hip = start(
        &redis,
        json!({"server": {"retryOnError": 0, "deadBackendTTL": 7}}),
    );
    let statuses: Vec<u16> = (0..30)
        .map(|_| get(hip.addr(), "ro.local", "/", &[("X-Debug", "1")]).status)
        .collect();
    // Every answer is a success, except at most one 502: the request that found the refusing backend.
    let bad = statuses.iter().filter(|s| **s != 200).count();
    assert!(bad <= 1, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 502),
        "{statuses:?}"
    );
    if bad == 1 {
        assert_eq!(redis.dead_members("ro.local"), ["0"]);
        let ttl: i64 = redis.query(&["TTL", "dead:ro.local"]);
        assert!((5..=7).contains(&ttl), "TTL {ttl}");
    }
    // Force the refused backend to be the only live one: the answer says retries are off.
    redis.query::<()>(&["DEL", "dead:ro.local"]);
    redis.query::<()>(&["SADD", "dead:ro.local", "1"]);
    let resp = get(hip.addr(), "ro.local", "/", &[("X-Debug", "1")]);
    assert_eq!(resp.status, 502);
    assert_eq!(
        resp.header("x-debug-error"),
        Some("Retry on error is disabled")
    );
}

#[test]
fn retries_read_the_route_again_up_to_retry_on_error() {
    let redis = RedisServer::start();
    let (r1, r2) = (refused_url(), refused_url());
    redis.set_frontend("re.local", &[&r1, &r2]);
    let hip = start(&redis, json!({"server": {"retryOnError": 1}}));
    let resp = get(hip.addr(), "re.local", "/", &[("X-Debug", "1")]);
    assert_eq!(resp.status, 502);
    assert_eq!(
        resp.header("x-debug-error"),
        Some("Reached max retries limit")
    );
    // Both were tried and marked (two backends, so marks are allowed).
    assert_eq!(redis.dead_members("re.local"), ["0", "1"]);

    // A single refusing backend is never marked dead (docs/compat/hipache.md#reads-and-writes).
    let only = refused_url();
    redis.set_frontend("single.local", &[&only]);
    let resp = get(hip.addr(), "single.local", "/", &[("X-Debug", "1")]);
    assert_eq!(resp.status, 502);
    assert!(redis.dead_members("single.local").is_empty());
}

#[test]
fn a_501_is_passed_through_once_then_only_the_healthy_backend_answers() {
    let redis = RedisServer::start();
    let broken = Backend::start(|_| Reply::text(501, "not implemented here"));
    let good = Backend::named("good");
    redis.set_frontend("five.local", &[&broken.url(), &good.url()]);
    let hip = start(&redis, json!({}));
    let answers: Vec<(u16, String)> = (0..30)
        .map(|_| {
            let resp = get(hip.addr(), "five.local", "/", &[]);
            (resp.status, resp.body_str())
        })
        .collect();
    // Every answer is the healthy backend's, except at most one: the 501, passed on unchanged.
    let passed: Vec<_> = answers.iter().filter(|a| a.0 != 200).collect();
    assert!(passed.len() <= 1, "{answers:?}");
    for (status, body) in &passed {
        assert_eq!((*status, body.as_str()), (501, "not implemented here"));
    }
    assert!(broken.hits() <= 1);
    if broken.hits() == 1 {
        assert_eq!(redis.dead_members("five.local"), ["0"]);
    }
    // 500 and 503 never mark (observed Hipache behaviour).
    let five_hundred = Backend::start(|_| Reply::text(500, "oops"));
    let busy = Backend::start(|_| Reply::text(503, "busy"));
    redis.set_frontend("quiet.local", &[&five_hundred.url(), &busy.url()]);
    for _ in 0..10 {
        let status = get(hip.addr(), "quiet.local", "/", &[]).status;
        assert!(status == 500 || status == 503, "{status}");
    }
    assert!(redis.dead_members("quiet.local").is_empty());
}

#[test]
fn a_fresh_hchecker_ping_suppresses_sadd_but_not_publish() {
    let redis = RedisServer::start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    redis.query::<()>(&["SET", "hchecker_ping", &now.to_string()]);
    let good = Backend::named("good");
    let refused = refused_url();
    redis.set_frontend("hc.local", &[&refused, &good.url()]);
    let sub = redis.subscribe_dead();
    let hip = start(&redis, json!({}));
    let message = eventually(SOON, "a dead mark published", || {
        assert_eq!(get(hip.addr(), "hc.local", "/", &[]).status, 200);
        sub.next(millis(50))
    });
    assert_eq!(message, format!("hc.local;{refused}/;0;2"));
    let exists: bool = redis.query(&["EXISTS", "dead:hc.local"]);
    assert!(!exists, "SADD happened although hchecker_ping is fresh");
}

#[test]
fn the_dead_set_is_the_request_hostnames_even_for_a_wildcard_route() {
    let redis = RedisServer::start();
    let good = Backend::named("good");
    let refused = refused_url();
    redis.set_frontend("*.w.local", &[&refused, &good.url()]);
    let hip = start(&redis, json!({}));
    assert_eventually(SOON, "dead:a.w.local", || {
        assert_eq!(get(hip.addr(), "a.w.local", "/", &[]).status, 200);
        redis.dead_members("a.w.local") == ["0"]
    });
    assert!(redis.dead_members("*.w.local").is_empty());
    // Another subdomain has its own (empty) dead set: the refused backend is still tried there.
    redis.query::<()>(&["SADD", "dead:b.w.local", "1"]);
    let resp = get(hip.addr(), "b.w.local", "/", &[("X-Debug", "1")]);
    assert_eq!(resp.status, 502, "{}", resp.head_text());
}

// ---------------------------------------------------------------------------------------------------------------
// Error pages, headers
// ---------------------------------------------------------------------------------------------------------------

#[track_caller]
fn assert_page_headers(resp: &Resp) {
    assert_eq!(
        resp.header("content-type"),
        Some("text/html"),
        "{}",
        resp.head_text()
    );
    assert_eq!(resp.header("cache-control"), Some("no-cache"));
    assert_eq!(resp.header("pragma"), Some("no-cache"));
    assert_eq!(resp.header("expires"), Some("-1"));
}

#[test]
fn error_pages_come_from_static_dir_then_error_default_then_plain_text() {
    let redis = RedisServer::start();
    redis.query::<()>(&["RPUSH", "frontend:empty.local", "only-id"]);
    let pages = format!("{FIXTURES}/static");
    let hip = start(&redis, json!({"server": {"staticDir": pages}}));
    let unknown = get(hip.addr(), "nowhere.local", "/", &[("X-Debug", "1")]);
    assert_eq!(unknown.status, 400);
    assert_page_headers(&unknown);
    assert_eq!(
        unknown.body_str(),
        std::fs::read_to_string(format!("{FIXTURES}/static/error_400.html")).unwrap()
    );
    assert_eq!(unknown.header("x-debug-error"), Some("frontend not found"));
    assert!(unknown
        .header("x-debug-version-hipache")
        .is_some_and(|v| v.starts_with("hypache/")));
    // No error_502.html in the fixture: error_default.html.
    let dead = get(hip.addr(), "empty.local", "/", &[]);
    assert_eq!(dead.status, 502);
    assert_page_headers(&dead);
    assert!(dead.body_str().contains("fixture default error page"));
    assert!(!dead.has_header("x-debug-error"), "only with X-Debug");

    // An empty staticDir: plain text with the message.
    let empty = tempfile::tempdir().unwrap();
    let hip = start(
        &redis,
        json!({"server": {"staticDir": empty.path().display().to_string()}}),
    );
    let resp = get(hip.addr(), "nowhere.local", "/", &[]);
    assert_eq!(
        (resp.status, resp.body_str().as_str()),
        (400, "frontend not found")
    );
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    // Hipache sets its no-cache trio before it knows whether a page exists.
    assert_eq!(resp.header("cache-control"), Some("no-cache"));
    assert_eq!(resp.header("pragma"), Some("no-cache"));
    assert_eq!(resp.header("expires"), Some("-1"));
    let resp = get(hip.addr(), "empty.local", "/", &[]);
    assert_eq!(
        (resp.status, resp.body_str().as_str()),
        (502, "Cannot find a valid backend")
    );
    assert_eq!(resp.header("cache-control"), Some("no-cache"));

    // No staticDir: hypache's own pages.
    let hip = start(&redis, json!({}));
    let resp = get(hip.addr(), "nowhere.local", "/", &[]);
    assert_eq!(resp.status, 400);
    assert_page_headers(&resp);
    assert!(resp.body_str().contains("No Application Configured"));
    let resp = get(hip.addr(), "empty.local", "/", &[]);
    assert!(resp.body_str().contains("Application Not Responding"));
}

#[test]
fn a_backend_silent_for_longer_than_tcp_timeout_gets_a_504_page() {
    let redis = RedisServer::start();
    let slow = Backend::start(|_| Reply::text(200, "late").delay(secs(4)));
    redis.set_frontend("slow.local", &[&slow.url()]);
    let hip = start(&redis, json!({"server": {"tcpTimeout": 1}}));
    let started = std::time::Instant::now();
    let resp = get(hip.addr(), "slow.local", "/", &[]);
    assert_eq!(resp.status, 504);
    assert_page_headers(&resp);
    assert!(started.elapsed() < secs(3), "{:?}", started.elapsed());
}

#[test]
fn tcp_timeout_is_inactivity_so_a_long_upload_that_keeps_moving_is_not_cut() {
    let redis = RedisServer::start();
    let (sink, received) = sink_backend();
    redis.set_frontend("upload.local", &[&format!("http://{sink}")]);
    let hip = start(&redis, json!({"server": {"tcpTimeout": 1}}));
    let mut conn = ClientConn::connect(hip.addr());
    conn.send(b"PUT /up HTTP/1.1\r\nHost: upload.local\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .unwrap();
    // 3 s of upload, never silent for as long as tcpTimeout: each chunk goes once the backend has the previous
    // one, after a pause of a fifth of the timeout.
    let started = std::time::Instant::now();
    let chunk = vec![b'u'; 32 * 1024];
    let mut sent = 0u64;
    while started.elapsed() < secs(3) {
        conn.send(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        conn.send(&chunk).unwrap();
        conn.send(b"\r\n").unwrap();
        sent += chunk.len() as u64;
        assert_eventually(SOON, "the backend has the chunk", || {
            received.load(Ordering::Relaxed) >= sent
        });
        // Pacing the client (the behaviour under test), not waiting for the proxy.
        std::thread::sleep(millis(200));
    }
    conn.send(b"0\r\n\r\n").unwrap();
    let resp = conn.read_response();
    assert_eq!(resp.status, 200, "{}", resp.head_text());
    assert!(started.elapsed() > secs(3));
}

#[test]
fn only_requests_that_reached_backend_selection_are_logged() {
    let redis = RedisServer::start();
    redis.query::<()>(&["RPUSH", "frontend:empty.local", "only-id"]);
    redis.set_frontend("gone.local", &[&refused_url()]);
    let backend = Backend::named("ok");
    redis.set_frontend("ok.local", &[&backend.url()]);
    let hip = start(&redis, json!({"server": {"retryOnError": 1}}));
    // Not logged: `__ping__`, an unknown host (400), a frontend without backends (502).
    assert_eq!(get(hip.addr(), "__ping__", "/", &[]).status, 200);
    assert_eq!(get(hip.addr(), "nowhere.local", "/", &[]).status, 400);
    assert_eq!(get(hip.addr(), "empty.local", "/", &[]).status, 502);
    // Logged: a 502 after failed retries, and an answer from a backend.
    assert_eq!(get(hip.addr(), "gone.local", "/retried", &[]).status, 502);
    assert_eq!(get(hip.addr(), "ok.local", "/served", &[]).status, 200);
    let lines = eventually(SOON, "two access-log lines", || {
        let lines = hip.log_lines();
        lines
            .iter()
            .any(|l| l.contains("GET /served"))
            .then_some(lines)
    });
    assert_eq!(lines.len(), 2, "{lines:#?}");
    // Two connections: each line is written once its response has left, so their order is not a promise.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"GET /retried HTTP/1.1\" 502 ")),
        "{lines:#?}"
    );
}

#[test]
fn forwarding_headers_are_set_only_when_absent_and_host_is_unchanged() {
    let redis = RedisServer::start();
    let backend = echo();
    let named = Backend::start(|_| Reply::text(200, "named"));
    redis.set_frontend("h.local", &[&backend.url()]);
    redis.set_frontend("n.local", &[&named.localhost_url()]);
    let hip = start(&redis, json!({}));
    let resp = get(hip.addr(), "h.local:1234", "/", &[("X-Debug", "yes")]);
    assert_eq!(resp.status, 200);
    let req = backend.single_request();
    assert_eq!(req.header("host"), Some("h.local:1234"));
    assert_eq!(req.header("x-forwarded-for"), Some("::ffff:127.0.0.1"));
    assert_eq!(req.header("x-real-ip"), Some("::ffff:127.0.0.1"));
    assert_eq!(req.header("x-forwarded-proto"), Some("http"));
    assert_eq!(req.header("x-forwarded-protocol"), Some("http"));
    assert_eq!(req.header("x-forwarded-port"), Some("80"));
    // The X-Debug response headers.
    assert!(resp
        .header("x-debug-version-hipache")
        .is_some_and(|v| v.starts_with("hypache/")));
    assert_eq!(
        resp.header("x-debug-backend-url"),
        Some(format!("{}/", backend.url()).as_str())
    );
    assert_eq!(resp.header("x-debug-backend-id"), Some("0"));
    assert_eq!(resp.header("x-debug-vhost"), Some("id-h.local"));
    assert_eq!(resp.header("x-debug-frontend-key"), Some("h.local"));
    assert!(resp
        .header("x-debug-time-total")
        .is_some_and(|v| v.parse::<u64>().is_ok()));
    assert!(resp
        .header("x-debug-time-backend")
        .is_some_and(|v| v.parse::<u64>().is_ok()));

    // What the client sent is kept as it is, never appended to.
    let sent = [
        ("X-Forwarded-For", "1.2.3.4"),
        ("X-Real-IP", "5.6.7.8"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Protocol", "https"),
        ("X-Forwarded-Port", "8443"),
    ];
    get(hip.addr(), "h.local", "/", &sent);
    let req = backend.requests().pop().unwrap();
    for (name, value) in sent {
        assert_eq!(req.header_all(name), [value], "{name}");
    }
    // A named backend still gets the client's Host (PlanB would send its own name).
    get(hip.addr(), "n.local", "/", &[]);
    assert_eq!(named.single_request().header("host"), Some("n.local"));
    // Without X-Debug, no debug headers.
    let plain = get(hip.addr(), "h.local", "/", &[]);
    assert!(!plain.has_header("x-debug-backend-url"));
}

#[test]
fn https_binds_use_the_configured_certificate_and_say_https() {
    let redis = RedisServer::start();
    let backend = echo();
    redis.set_frontend("secure.local", &[&backend.url()]);
    let ca = TestCa::new();
    let leaf = ca.issue(&["secure.local"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let hip = start_with(
        &redis,
        json!({"https": {
            "port": 0,
            "bind": [{"address": "127.0.0.1", "port": 0}],
            "key": key.display().to_string(),
            "cert": cert.display().to_string(),
            "ciphers": "ECDHE-RSA-AES128-GCM-SHA256",
        }}),
        (true, true),
    );
    let warning = hip
        .proxy
        .wait_stderr("about ciphers", |l| l.contains("`ciphers` is not used"));
    assert!(warning.starts_with("warning: https"), "{warning}");
    let conn = tls_connect(
        hip.proxy.tls_addr(),
        Some("secure.local"),
        ca.client_config(&[b"http/1.1"]),
    )
    .unwrap();
    let resp = conn.get("secure.local", "/tls", &[]);
    assert_eq!(resp.status, 200);
    let req = backend.single_request();
    assert_eq!(req.header("x-forwarded-proto"), Some("https"));
    assert_eq!(req.header("x-forwarded-port"), Some("443"));
}

#[test]
fn http_bind_takes_strings_and_objects_and_every_bind_is_served() {
    let redis = RedisServer::start();
    let backend = Backend::named("multi");
    redis.set_frontend("multi.local", &[&backend.url()]);
    let hip = start(
        &redis,
        json!({"http": {"port": 0, "bind": ["127.0.0.1", {"address": "127.0.0.1", "port": 0}]}}),
    );
    let addrs = eventually(SOON, "two Listening lines", || {
        let addrs = hip.proxy.plain_addrs();
        (addrs.len() == 2).then_some(addrs)
    });
    assert_ne!(addrs[0], addrs[1]);
    for addr in addrs {
        assert_eq!(get(addr, "multi.local", "/", &[]).body_str(), "multi");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Keys with effects on the runtime and the upstream side
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn http_keep_alive_and_max_sockets_decide_backend_connection_reuse() {
    let redis = RedisServer::start();
    let backend = Backend::named("ka");
    redis.set_frontend("ka.local", &[&backend.url()]);
    let hip = start(&redis, json!({}));
    for _ in 0..3 {
        assert_eq!(get(hip.addr(), "ka.local", "/", &[]).status, 200);
    }
    let conns: Vec<usize> = backend.requests().iter().map(|r| r.conn).collect();
    assert_eq!(
        conns,
        [0, 1, 2],
        "httpKeepAlive false: a connection per request"
    );

    let backend = Backend::named("ka");
    redis.set_frontend("ka.local", &[&backend.url()]);
    let hip = start(
        &redis,
        // One worker thread: backend connections are pooled per worker.
        json!({"server": {"httpKeepAlive": true, "maxSockets": 4, "workers": 1}}),
    );
    for _ in 0..3 {
        assert_eq!(get(hip.addr(), "ka.local", "/", &[]).status, 200);
    }
    let conns: Vec<usize> = backend.requests().iter().map(|r| r.conn).collect();
    assert_eq!(
        conns,
        [0, 0, 0],
        "httpKeepAlive true: one kept-alive connection"
    );
}

#[test]
fn lru_cache_keeps_a_route_for_its_ttl() {
    let redis = RedisServer::start();
    let (old, new) = (Backend::named("old"), Backend::named("new"));
    redis.set_frontend("lru.local", &[&old.url()]);
    let hip = start(
        &redis,
        json!({"server": {"lruCache": {"size": 10, "ttl": 60}}}),
    );
    assert_eq!(get(hip.addr(), "lru.local", "/", &[]).body_str(), "old");
    redis.set_frontend("lru.local", &[&new.url()]);
    assert_eq!(get(hip.addr(), "lru.local", "/", &[]).body_str(), "old");
    // Without it, every request reads Redis.
    let hip = start(&redis, json!({}));
    assert_eq!(get(hip.addr(), "lru.local", "/", &[]).body_str(), "new");
}

#[test]
fn workers_sets_the_runtime_threads_and_user_drops_root() {
    let redis = RedisServer::start();
    let backend = Backend::named("w");
    redis.set_frontend("w.local", &[&backend.url()]);
    let hip = start(
        &redis,
        json!({"server": {"workers": 3}, "user": "nobody", "group": "nogroup"}),
    );
    let pid = hip.proxy.pid();
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .collect();
    let workers = threads
        .iter()
        .filter(|comm| comm.starts_with("hypache-worker"))
        .count();
    assert_eq!(workers, 3, "{threads:?}");
    let running_as_root = proc_status(pid, "Uid").starts_with("0\t");
    if nix_is_root() {
        assert_eq!(
            proc_status(pid, "Uid").split_whitespace().next(),
            Some("65534")
        );
        assert_eq!(
            proc_status(pid, "Gid").split_whitespace().next(),
            Some("65534")
        );
    } else {
        assert!(!running_as_root);
    }
    assert_eq!(get(hip.addr(), "w.local", "/", &[]).body_str(), "w");
}

fn nix_is_root() -> bool {
    proc_status(std::process::id(), "Uid").starts_with("0\t")
}

// ---------------------------------------------------------------------------------------------------------------
// Access log and signals
// ---------------------------------------------------------------------------------------------------------------

/// `0.011`, `0.01`, `1`, `0`: milliseconds / 1000 as JavaScript prints them.
fn is_js_seconds(s: &str) -> bool {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 3
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !frac.ends_with('0')
}

#[test]
fn the_access_log_line_is_hipaches_and_sigusr1_reopens_it() {
    let redis = RedisServer::start();
    let backend = Backend::start(|_| Reply::text(200, "hello"));
    redis.set_frontend("log.local", &[&backend.url()]);
    let hip = start(&redis, json!({}));
    let resp = get(
        hip.addr(),
        "log.local",
        "/p%20q?x=1&y=2",
        &[
            ("Referer", "http://ref.example/"),
            ("User-Agent", "curl/7.30.0"),
            // Spoofed: not trusted for the log (Hipache logged it).
            ("X-Real-IP", "5.6.7.8"),
        ],
    );
    assert_eq!(resp.status, 200);
    let line = eventually(SOON, "an access-log line", || hip.log_lines().pop());
    // `<bytes>` is what the response put on the client socket: status line, headers and body.
    let bytes = resp.raw.len();
    // `::ffff:127.0.0.1 - - [21/Nov/2026:07:45:00 +0000] "GET /p%20q?x=1&y=2 HTTP/1.1" 200 <bytes> ...`
    let (head, rest) = line.split_once(" [").unwrap();
    assert_eq!(head, "::ffff:127.0.0.1 - -");
    let (date, rest) = rest.split_once("] ").unwrap();
    let parsed = chrono::NaiveDateTime::parse_from_str(date, "%d/%b/%Y:%H:%M:%S +0000")
        .unwrap_or_else(|e| panic!("{date:?}: {e}"));
    let age = chrono::Utc::now().naive_utc() - parsed;
    assert!(age.num_seconds().abs() < 60, "{date} is not now in UTC");
    let fields: Vec<&str> = rest.rsplitn(3, ' ').collect();
    let (backend_s, total_s, middle) = (fields[0], fields[1], fields[2]);
    assert_eq!(
        middle,
        format!("\"GET /p%20q?x=1&y=2 HTTP/1.1\" 200 {bytes} \"http://ref.example/\" \"curl/7.30.0\" \"id-log.local\"")
    );
    assert!(is_js_seconds(total_s), "{line}");
    assert!(is_js_seconds(backend_s), "{line}");
    // The whole line, rebuilt from its parts, byte for byte.
    assert_eq!(
        line,
        format!("::ffff:127.0.0.1 - - [{date}] {middle} {total_s} {backend_s}")
    );

    // logrotate's `postrotate kill -USR1`: the old file keeps its lines, new ones go to a new file.
    let rotated = hip.dir.path().join("access.log.1");
    std::fs::rename(hip.log_path(), &rotated).unwrap();
    hip.proxy.signal("USR1");
    assert_eventually(SOON, "a new access.log after SIGUSR1", || {
        get(hip.addr(), "log.local", "/after", &[]);
        hip.log_lines().iter().any(|l| l.contains("GET /after"))
    });
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("GET /p%20q"), "{old}");
    // SIGUSR2 writes the dump now; the process lives on.
    hip.proxy.signal("USR2");
    assert_eventually(SOON, "a dump on stdout after SIGUSR2", || {
        !hip.proxy.stdout_lines().is_empty()
    });
    assert_eq!(get(hip.addr(), "log.local", "/", &[]).status, 200);
}

// ---------------------------------------------------------------------------------------------------------------
// A large upload
// ---------------------------------------------------------------------------------------------------------------

/// A backend that reads a chunked body to its end without keeping it, then answers with the byte count.
fn sink_backend() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                let mut tail: Vec<u8> = Vec::new();
                let mut head_done = false;
                loop {
                    let n = match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let mut data = &buf[..n];
                    if !head_done {
                        tail.extend_from_slice(data);
                        let Some(end) = tail.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        head_done = true;
                        // The body bytes that came with the head count too.
                        let body = tail.split_off(end + 4);
                        counter.fetch_add(body.len() as u64, Ordering::Relaxed);
                        tail = body;
                        data = &[];
                    }
                    counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                    tail.extend_from_slice(data);
                    if tail.len() > 16 {
                        tail.drain(..tail.len() - 16);
                    }
                    if tail.ends_with(b"\r\n0\r\n\r\n") || tail == b"0\r\n\r\n" {
                        let body = counter.load(Ordering::Relaxed).to_string();
                        let _ = stream.write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        );
                        return;
                    }
                }
            });
        }
    });
    (addr, received)
}

#[test]
fn a_500_mb_chunked_put_streams_through_with_flat_memory() {
    const TOTAL: u64 = 500 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let redis = RedisServer::start();
    let (sink, received) = sink_backend();
    redis.set_frontend("big.local", &[&format!("http://{sink}")]);
    let hip = start(&redis, json!({}));
    let pid = hip.proxy.pid();
    assert_eq!(get(hip.addr(), "__ping__", "/", &[]).status, 200);
    let baseline = rss_kib(pid);

    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kib) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(millis(20));
            }
        })
    };
    let mut client = TcpStream::connect(hip.addr()).unwrap();
    client.set_read_timeout(Some(secs(120))).unwrap();
    client
        .write_all(
            b"PUT /upload HTTP/1.1\r\nHost: big.local\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    // A generated stream: the same chunk, framed, until TOTAL bytes of payload are sent.
    let payload: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    let mut frame = format!("{CHUNK:x}\r\n").into_bytes();
    frame.extend_from_slice(&payload);
    frame.extend_from_slice(b"\r\n");
    let started = std::time::Instant::now();
    for _ in 0..TOTAL / CHUNK as u64 {
        client.write_all(&frame).unwrap();
    }
    client.write_all(b"0\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The backend got at least the payload (plus the chunk framing, which hyper may re-cut).
    assert!(received.load(Ordering::Relaxed) >= TOTAL, "{answer}");
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak < baseline + 64 * 1024,
        "RSS grew from {baseline} KiB to {peak} KiB while streaming {TOTAL} bytes"
    );
    eprintln!(
        "500 MB PUT in {:?}, RSS {baseline} -> {peak} KiB",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// WebSockets: Hipache's hang and crash are not copied
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn a_websocket_gets_the_400_page_for_an_unknown_host_and_502_for_a_refused_backend() {
    let redis = RedisServer::start();
    let refused = refused_url();
    redis.set_frontend("wsdown.local", &[&refused]);
    let hip = start(&redis, json!({}));
    let upgrade = |host: &str| {
        build_request(
            "GET",
            Some(host),
            "/ws",
            &[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            b"",
        )
    };
    let started = std::time::Instant::now();
    let resp = exchange(hip.addr(), &upgrade("nowhere.local"));
    assert_eq!(resp.status, 400);
    assert_page_headers(&resp);
    assert!(resp.body_str().contains("No Application Configured"));
    assert!(
        started.elapsed() < secs(5),
        "answered at once, not after tcpTimeout"
    );
    let resp = exchange(hip.addr(), &upgrade("wsdown.local"));
    assert_eq!(resp.status, 502);
    assert_page_headers(&resp);
    // The proxy is still there.
    assert_eq!(get(hip.addr(), "__ping__", "/", &[]).status, 200);
}

#[test]
fn an_empty_user_as_root_refuses_to_start() {
    if !nix_is_root() {
        return;
    }
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(&redis, dir.path());
    config["user"] = json!("");
    let path = write_config(dir.path(), &config);
    let out = spawn_raw(&["-c", &path.display().to_string()], &[], secs(15));
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("ROOT_NEEDS_ROOT"), "{}", out.stderr);
}

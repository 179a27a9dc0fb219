//! `--routes FILE`: frontends from a TOML file, with no Redis anywhere. The same lookup rules and answers as
//! the Redis source, dead marks in process, policies as sub-tables, and a watched file: a change applies within
//! 2 s, a broken edit keeps the last good routes, a broken file at start exits 2 naming the line.

mod support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use support::*;

/// A proxy on a routes file, pointed at a Redis port where nothing listens: any Redis use would show.
fn start(routes: &Path, extra: &[&str]) -> Proxy {
    let mut args = vec![
        "--routes",
        routes.to_str().unwrap(),
        // Relative to the proxy's own directory, where the harness looks for it.
        "--access-log",
        "access.log",
    ];
    args.extend_from_slice(extra);
    Proxy::start_without_redis(&args)
}

fn write_routes(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("routes.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn frontend(key: &str, backends: &[&str]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("{b:?}")).collect();
    format!("[frontends.\"{key}\"]\nbackends = [{}]\n", list.join(", "))
}

#[test]
fn serves_with_redis_lookup_rules_and_answers_and_no_redis() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two, wild, fallback) = (
        Backend::named("one"),
        Backend::named("two"),
        Backend::named("wild"),
        Backend::named("any"),
    );
    let routes = write_routes(
        dir.path(),
        &[
            frontend("www.example.com", &[&one.url(), &two.url()]),
            frontend("*.example.org", &[&wild.url()]),
        ]
        .concat(),
    );
    let proxy = start(&routes, &[]);
    let body = |host: &str| get(proxy.addr(), host, "/", &[]).body_str();
    // Exact match, round robin from the first backend.
    assert_eq!(
        [0; 4].map(|_| body("www.example.com")),
        ["one", "two", "one", "two"]
    );
    // Port-stripped, case-insensitive retry, wildcard (each Host string has its own round-robin counter).
    assert_eq!(body("www.example.com:8080"), "one");
    assert_eq!(body("WWW.Example.COM"), "one");
    assert_eq!(body("a.b.example.org"), "wild");
    // PlanB's answer for an unknown host, and `__ping__` without Redis.
    let unknown = get(proxy.addr(), "nowhere.test", "/", &[]);
    assert_eq!(
        (unknown.status, unknown.body_str().as_str()),
        (400, "no such route")
    );
    let ping = get(proxy.addr(), "__ping__", "/", &[]);
    assert_eq!((ping.status, ping.body_str().as_str()), (200, "OK"));
    // The catch-all, once the file has one.
    std::fs::write(
        &routes,
        [
            frontend("www.example.com", &[&one.url(), &two.url()]),
            frontend("*", &[&fallback.url()]),
        ]
        .concat(),
    )
    .unwrap();
    assert_eventually(secs(3), "the catch-all applied", || {
        body("nowhere.test") == "any"
    });
    // Every request is in the access log, PlanB's line with the frontend key.
    let lines = proxy.wait_access_log_lines(8);
    assert!(
        lines.iter().any(|l| l.contains("www.example.com")),
        "{lines:#?}"
    );
}

#[test]
fn a_refused_backend_fails_over_and_is_marked_dead_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let good = Backend::named("good");
    let routes = write_routes(
        dir.path(),
        &frontend("fo.test", &[&refused_url(), &good.url()]),
    );
    let proxy = start(&routes, &["--dead-backend-time", "30"]);
    for _ in 0..4 {
        assert_eq!(get(proxy.addr(), "fo.test", "/", &[]).body_str(), "good");
    }
    // The first request found the refused backend and marked it; the others skipped it. The error log is
    // written by its own thread, so the line is waited for.
    let dead_lines = || {
        proxy
            .stderr_lines()
            .iter()
            .filter(|l| l.contains("*DEAD*"))
            .count()
    };
    assert_eventually(SOON, "the dead mark's error-log line", || dead_lines() >= 1);
    assert_eq!(dead_lines(), 1, "{:#?}", proxy.stderr_lines());
    assert_eq!(good.hits(), 4);
}

#[test]
fn policies_are_sub_tables_with_the_redis_hash_fields() {
    let dir = tempfile::tempdir().unwrap();
    let app = Backend::named("app");
    let text = format!(
        "{}[frontends.\"rl.test\".ratelimit]\nrate = 10\nperiod = \"1m\"\nburst = 2\n",
        frontend("rl.test", &[&app.url()])
    );
    let routes = write_routes(dir.path(), &text);
    let proxy = start(&routes, &[]);
    let statuses: Vec<u16> = (0..3)
        .map(|_| get(proxy.addr(), "rl.test", "/", &[]).status)
        .collect();
    assert_eq!(statuses, [200, 200, 429]);
}

#[test]
fn changes_apply_within_2s_by_rename_or_rewrite_and_broken_edits_keep_the_last_routes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        Backend::named("a"),
        Backend::named("b"),
        Backend::named("c"),
    );
    let routes = write_routes(dir.path(), &frontend("w.test", &[&a.url()]));
    let proxy = start(&routes, &[]);
    let body = || get(proxy.addr(), "w.test", "/", &[]).body_str();
    assert_eq!(body(), "a");
    // An atomic rename, as editors and config tools write.
    let started = Instant::now();
    let staged = dir.path().join("routes.toml.new");
    std::fs::write(&staged, frontend("w.test", &[&b.url()])).unwrap();
    std::fs::rename(&staged, &routes).unwrap();
    assert_eventually(secs(2), "the renamed file applied", || body() == "b");
    eprintln!("rename applied after {:?}", started.elapsed());
    // An in-place rewrite.
    let started = Instant::now();
    std::fs::write(&routes, frontend("w.test", &[&c.url()])).unwrap();
    assert_eventually(secs(2), "the rewritten file applied", || body() == "c");
    eprintln!("rewrite applied after {:?}", started.elapsed());
    // A broken edit: logged with its line and column, the last good routes stay.
    std::fs::write(
        &routes,
        "[frontends.\"w.test\"]\nbackends = [\"http://x\",\n",
    )
    .unwrap();
    proxy.wait_stderr("the parse error", |l| {
        l.contains("routes file") && l.contains("line 2 column") && l.contains("last good routes")
    });
    assert_eq!(body(), "c");
}

#[test]
fn a_broken_file_at_start_exits_2_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let routes = write_routes(
        dir.path(),
        "[frontends.\"a.test\"]\nbackends = [\"http://127.0.0.1:1\"]\nweight = 3\n",
    );
    let out = spawn_raw(
        &[
            "--listen",
            "127.0.0.1:0",
            "--routes",
            routes.to_str().unwrap(),
        ],
        &[],
        secs(15),
    );
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(
        out.stderr
            .contains("routes.toml: line 3 column 1: unknown field `weight`"),
        "{out:?}"
    );
    let missing = dir.path().join("missing.toml");
    let out = spawn_raw(
        &[
            "--listen",
            "127.0.0.1:0",
            "--routes",
            missing.to_str().unwrap(),
        ],
        &[],
        secs(15),
    );
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("missing.toml"), "{out:?}");
}

#[test]
fn with_active_healthcheck_a_dead_backend_is_probed_and_revived() {
    let dir = tempfile::tempdir().unwrap();
    let down = refused_addr();
    let good = Backend::named("good");
    let text = format!(
        "{}[frontends.\"hc.test\".healthcheck]\npath = \"/health\"\n",
        frontend("hc.test", &[&format!("http://{down}"), &good.url()])
    );
    let routes = write_routes(dir.path(), &text);
    let proxy = start(
        &routes,
        &["--active-healthcheck", "--dead-backend-time", "60"],
    );
    // Refused: marked dead in process, the request served by the other backend.
    for _ in 0..3 {
        assert_eq!(get(proxy.addr(), "hc.test", "/", &[]).body_str(), "good");
    }
    // It comes back: probed every second on its health path and revived long before the 60 s mark expires.
    let back = Backend::start_on(down, |_| Reply::text(200, "back"));
    assert_eventually(secs(5), "the backend revived", || {
        (0..2).any(|_| get(proxy.addr(), "hc.test", "/", &[]).body_str() == "back")
    });
    assert!(
        back.requests().iter().any(|r| r.target == "/health"),
        "{:?}",
        back.requests()
    );
}

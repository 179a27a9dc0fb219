//! The dashboard in a real browser: headless Chromium through chromedriver (Debian's `chromium` and
//! `chromium-driver`; scripts/test.sh installs them). The page must show a frontend created with
//! `redis-cli` and its backends, show a backend dead within 5 s of `SADD dead:<host> 1`, request nothing
//! from another origin, and log no console error.
//!
//! `HYPACHE_DASHBOARD_SCREENSHOT=<file.png>` also saves a screenshot (how docs/admin-dashboard.png is made).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::admin::admin_addr;
use support::webdriver::Browser;
use support::*;

/// `redis-cli -p <port> <args>`, as an operator would type it.
#[track_caller]
fn redis_cli(redis: &RedisServer, args: &[&str]) {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(redis.port().to_string())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run redis-cli (Debian: redis-tools): {e}"));
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
}

/// The backend rows the page shows for a frontend: `[url, state]`, or `null` while it shows none.
const BACKEND_ROWS: &str = r#"
    const rows = [...document.querySelectorAll('tr.backend')]
      .filter((r) => r.dataset.frontend === arguments[0]);
    if (rows.length === 0) return null;
    return rows.map((r) => [r.querySelector('td.name').textContent, r.dataset.state]);
"#;

/// The state of one backend row.
const BACKEND_STATE: &str = r#"
    const row = [...document.querySelectorAll('tr.backend')]
      .find((r) => r.dataset.frontend === arguments[0] && r.dataset.index === String(arguments[1]));
    return row && row.dataset.state === arguments[2] ? row.dataset.state : null;
"#;

#[test]
fn the_dashboard_shows_frontends_and_dead_backends_in_a_real_browser() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, &["--admin-address", "127.0.0.1:0"]);
    let admin = admin_addr(&proxy);
    let (one, two) = (Backend::named("one"), Backend::named("two"));
    let slow = Backend::start(|_| Reply::text(200, "slow").delay(Duration::from_millis(30)));
    let failing = Backend::start(|_| Reply::text(503, "down"));
    let browser = Browser::start(1200, 640);

    // The page is strict about where it loads from.
    let page = get(admin, &admin.to_string(), "/", &[]);
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'self'"), "CSP {csp:?}");

    redis_cli(
        &redis,
        &[
            "RPUSH",
            "frontend:www.example.com",
            "site",
            &one.url(),
            &two.url(),
        ],
    );
    redis_cli(
        &redis,
        &[
            "RPUSH",
            "frontend:api.example.com",
            "api",
            &slow.url(),
            &failing.url(),
        ],
    );
    for _ in 0..6 {
        get(proxy.addr(), "www.example.com", "/", &[]);
        get(proxy.addr(), "api.example.com", "/", &[]);
    }

    let origin = format!("http://{admin}");
    browser.goto(&format!("{origin}/"));
    let rows = browser.wait_for(
        SOON,
        "the page to list www.example.com's backends",
        BACKEND_ROWS,
        json!(["www.example.com"]),
    );
    assert_eq!(
        rows,
        json!([[one.url(), "live"], [two.url(), "live"]]),
        "the backends of www.example.com"
    );
    // A frontend created while the page is open shows up at the next refresh.
    redis_cli(
        &redis,
        &["RPUSH", "frontend:late.example.com", "late", &one.url()],
    );
    browser.wait_for(
        Duration::from_secs(5),
        "late.example.com listed",
        BACKEND_ROWS,
        json!(["late.example.com"]),
    );

    // Dead within 5 s of the SADD, as redis-cli writes it.
    redis_cli(&redis, &["SADD", "dead:www.example.com", "1"]);
    let marked = Instant::now();
    browser.wait_for(
        Duration::from_secs(5),
        "backend 1 of www.example.com shown dead",
        BACKEND_STATE,
        json!(["www.example.com", 1, "dead"]),
    );
    assert!(marked.elapsed() <= Duration::from_secs(5));
    let rows = browser.execute(BACKEND_ROWS, json!(["www.example.com"]));
    assert_eq!(rows[0][1], "live");

    // The figures of the last minute are on the page.
    let figures = browser.wait_for(
        SOON,
        "api.example.com's 5xx count",
        r#"const row = [...document.querySelectorAll('tr.frontend')]
             .find((r) => r.dataset.frontend === 'api.example.com');
           if (!row) return null;
           const cells = [...row.querySelectorAll('td')].map((c) => c.textContent);
           return cells[6] === '3' ? cells : null;"#,
        json!([]),
    );
    assert_eq!(figures[3], "3", "2xx of api.example.com: {figures}");
    assert!(
        figures[8].as_str().unwrap().ends_with("ms"),
        "p99: {figures}"
    );

    // The buttons: mark backend 0 dead, then revive it.
    browser.execute(
        r#"[...document.querySelectorAll('tr.backend')]
             .find((r) => r.dataset.frontend === 'www.example.com' && r.dataset.index === '0')
             .querySelector('button').click();"#,
        json!([]),
    );
    assert_eventually(SOON, "dead:www.example.com holds 0 and 1", || {
        redis.dead_members("www.example.com") == ["0", "1"]
    });
    browser.wait_for(
        Duration::from_secs(5),
        "backend 0 shown dead",
        BACKEND_STATE,
        json!(["www.example.com", 0, "dead"]),
    );

    // The filter keeps only matching hosts.
    browser.execute(
        r#"const f = document.getElementById('filter');
           f.value = 'api.';
           f.dispatchEvent(new Event('input'));"#,
        json!([]),
    );
    let shown = browser.execute(
        "return [...document.querySelectorAll('tr.frontend')].map((r) => r.dataset.frontend);",
        json!([]),
    );
    assert_eq!(shown, json!(["api.example.com"]));

    if let Ok(path) = std::env::var("HYPACHE_DASHBOARD_SCREENSHOT") {
        browser.execute(
            r#"const f = document.getElementById('filter');
               f.value = '';
               f.dispatchEvent(new Event('input'));"#,
            json!([]),
        );
        std::fs::write(&path, browser.screenshot()).unwrap();
    }

    // Nothing was requested from another origin.
    let urls = browser.execute(
        "return performance.getEntriesByType('resource').map((e) => e.name)\
           .concat(performance.getEntriesByType('navigation').map((e) => e.name));",
        json!([]),
    );
    let urls: Vec<&str> = urls
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert!(urls.len() > 3, "the page's requests: {urls:?}");
    for url in &urls {
        assert!(
            url.starts_with(&format!("{origin}/")),
            "a request to another origin: {url}"
        );
    }

    // No console error. The probe shows that the log is captured at all, so this check can fail.
    browser.execute("console.error('hypache-console-probe');", json!([]));
    let entries = browser.console();
    let probe = |e: &Value| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("hypache-console-probe"))
    };
    assert!(
        entries.iter().any(probe),
        "the console log is not captured: {entries:?}"
    );
    let errors: Vec<&Value> = entries
        .iter()
        .filter(|e| !probe(e))
        .filter(|e| matches!(e["level"].as_str(), Some("SEVERE" | "WARNING")))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

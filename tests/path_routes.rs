//! Path-prefix frontends (`frontend:<host>/<path>`), their dead sets, and the route options of `route:<key>`
//! (docs/routing.md#path-prefix-frontends, docs/redis-keys.md#route-options), in the default mode and both
//! cached modes.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use support::*;

/// The three lookup modes every path rule must hold in.
const MODES: [&[&str]; 3] = [&[], &["--backend-cache"], &["--backend-cache-events"]];

fn start(mode: &[&str]) -> (RedisServer, Proxy) {
    let redis = RedisServer::start();
    let _: () = redis.query(&["CONFIG", "SET", "notify-keyspace-events", "KA"]);
    let proxy = Proxy::start(&redis, mode);
    if mode.contains(&"--backend-cache-events") {
        proxy.wait_stderr("the subscription", |l| {
            l.contains("following keyspace notifications")
        });
    }
    (redis, proxy)
}

fn body(proxy: &Proxy, host: &str, path: &str) -> String {
    let resp = get(proxy.addr(), host, path, &[]);
    assert_eq!(resp.status, 200, "{host}{path}: {}", resp.head_text());
    resp.body_str()
}

/// Waits until `host` + `path` reaches the backend named `want` (a change made after the proxy started).
#[track_caller]
fn until_served(proxy: &Proxy, host: &str, path: &str, want: &str) {
    assert_eventually(
        Duration::from_secs(6),
        &format!("{host}{path} → {want}"),
        || get(proxy.addr(), host, path, &[]).body_str() == want,
    );
}

#[test]
fn the_longest_prefix_wins_on_segment_boundaries() {
    for mode in MODES {
        let (redis, proxy) = start(mode);
        let names = ["root", "api", "v1", "deep"];
        let backends: Vec<Backend> = names.iter().map(|n| Backend::named(n)).collect();
        redis.set_frontend("p.test", &[&backends[0].url()]);
        redis.set_frontend("p.test/api", &[&backends[1].url()]);
        redis.set_frontend("p.test/api/v1", &[&backends[2].url()]);
        // Created after start: picked up by the next scan (or notification).
        until_served(&proxy, "p.test", "/api/v1/x", "v1");
        redis.set_frontend("p.test/a/b/c/d", &[&backends[3].url()]);
        until_served(&proxy, "p.test", "/a/b/c/d/e", "deep");
        for (path, want) in [
            ("/api", "api"),
            ("/api/", "api"),
            ("/api/x?q=1", "api"),
            ("/apix", "root"),
            ("/", "root"),
            ("/api/v1/x", "v1"),
            ("/api/v1", "v1"),
            ("/api/v10", "api"),
            ("/a/b/c/d", "deep"),
            ("/a/b/c", "root"),
        ] {
            assert_eq!(body(&proxy, "p.test", path), want, "{mode:?} {path}");
        }
        let resp = get(proxy.addr(), "p.test", "/api/x", &[("X-Debug-Router", "1")]);
        assert_eq!(resp.header("x-debug-frontend-key"), Some("p.test/api"));
        // The path the backend gets is unchanged without strip_prefix.
        assert_eq!(backends[1].requests().last().unwrap().target, "/api/x");
    }
}

#[test]
fn a_wildcard_host_has_path_frontends_too() {
    for mode in MODES {
        let (redis, proxy) = start(mode);
        let (api, site) = (Backend::named("api"), Backend::named("site"));
        redis.set_frontend("*.wild.test", &[&site.url()]);
        redis.set_frontend("*.wild.test/api", &[&api.url()]);
        until_served(&proxy, "a.wild.test", "/api/x", "api");
        assert_eq!(body(&proxy, "b.wild.test", "/api"), "api");
        assert_eq!(body(&proxy, "b.wild.test", "/other"), "site");
        assert_eq!(body(&proxy, "b.wild.test", "/apis"), "site");
    }
}

#[test]
fn a_deleted_path_frontend_falls_back_to_the_host() {
    for mode in MODES {
        let (redis, proxy) = start(mode);
        let (api, site) = (Backend::named("api"), Backend::named("site"));
        redis.set_frontend("fb.test", &[&site.url()]);
        redis.set_frontend("fb.test/api", &[&api.url()]);
        until_served(&proxy, "fb.test", "/api/x", "api");
        let _: i64 = redis.query(&["DEL", "frontend:fb.test/api"]);
        until_served(&proxy, "fb.test", "/api/x", "site");
        // A path frontend without a host frontend: other paths get no route.
        let _: i64 = redis.query(&["DEL", "frontend:fb.test"]);
        redis.set_frontend("fb.test/only", &[&api.url()]);
        until_served(&proxy, "fb.test", "/only", "api");
        assert_eventually(Duration::from_secs(6), "no route for /else", || {
            get(proxy.addr(), "fb.test", "/else", &[]).status == 400
        });
    }
}

#[test]
fn strip_prefix_mounts_the_backend_at_the_root() {
    for mode in MODES {
        let (redis, proxy) = start(mode);
        let api = Backend::named("api");
        redis.set_frontend("strip.test/api", &[&api.url()]);
        let _: i64 = redis.query(&["HSET", "route:strip.test/api", "strip_prefix", "1"]);
        until_served(&proxy, "strip.test", "/api", "api");
        for (path, forwarded) in [
            ("/api/x?q=1", "/x?q=1"),
            ("/api", "/"),
            ("/api/", "/"),
            ("/api?q=1", "/?q=1"),
        ] {
            assert_eq!(body(&proxy, "strip.test", path), "api");
            assert_eq!(api.requests().last().unwrap().target, forwarded, "{path}");
        }
        // Turned off without a restart.
        let _: i64 = redis.query(&["HSET", "route:strip.test/api", "strip_prefix", "0"]);
        assert_eventually(Duration::from_secs(3), "the full path again", || {
            body(&proxy, "strip.test", "/api/y");
            api.requests().last().unwrap().target == "/api/y"
        });
    }
}

#[test]
fn a_path_frontend_has_its_own_dead_set() {
    for mode in MODES {
        let (redis, proxy) = start(mode);
        let (one, two, site) = (
            Backend::named("one"),
            Backend::named("two"),
            Backend::named("site"),
        );
        redis.set_frontend("dead.test", &[&site.url()]);
        redis.set_frontend("dead.test/api", &[&one.url(), &two.url()]);
        until_served(&proxy, "dead.test", "/api", "one");
        let _: i64 = redis.query(&["SADD", "dead:dead.test/api", "0"]);
        assert_eventually(Duration::from_secs(3), "only two serves /api", || {
            (0..4).all(|_| body(&proxy, "dead.test", "/api") == "two")
        });
        assert_eq!(body(&proxy, "dead.test", "/"), "site");
        let _: i64 = redis.query(&["DEL", "dead:dead.test/api"]);

        // A failing backend of the path frontend is marked in its dead set only, and the message names it.
        let sub = redis.subscribe_dead();
        redis.set_frontend("dead.test/down", &[&refused_url(), &two.url()]);
        until_served(&proxy, "dead.test", "/down", "two");
        // Round robin may have started at `two`: ask until the refused one has been tried.
        let message = eventually(Duration::from_secs(5), "a dead message", || {
            assert_eq!(body(&proxy, "dead.test", "/down"), "two");
            sub.next(Duration::from_millis(50))
        });
        assert!(
            message.starts_with("dead.test/down;"),
            "{mode:?}: {message}"
        );
        assert_eq!(redis.dead_members("dead.test/down"), ["0"]);
        assert!(redis.dead_members("dead.test").is_empty());
    }
}

#[test]
fn weights_split_three_to_one_and_zero_takes_a_backend_out() {
    for mode in MODES {
        let (redis, proxy) = start(mode);
        let (a, b, c) = (
            Backend::named("a"),
            Backend::named("b"),
            Backend::named("c"),
        );
        redis.set_frontend("w.test", &[&a.url(), &b.url(), &c.url()]);
        let _: i64 = redis.query(&["HSET", "route:w.test", "weights", "3 1 0"]);
        assert_eventually(Duration::from_secs(3), "the weights apply", || {
            (0..8).all(|_| body(&proxy, "w.test", "/") != "c")
        });
        let mut seen: HashMap<String, usize> = HashMap::new();
        for _ in 0..400 {
            *seen.entry(body(&proxy, "w.test", "/")).or_default() += 1;
        }
        let share = |n: &str| seen.get(n).copied().unwrap_or(0);
        assert!((290..=310).contains(&share("a")), "{mode:?}: {seen:?}");
        assert!((90..=110).contains(&share("b")), "{mode:?}: {seen:?}");
        assert_eq!(share("c"), 0, "{mode:?}: weight 0 gets nothing");

        // Changed without a restart: c alone.
        let _: i64 = redis.query(&["HSET", "route:w.test", "weights", "0 0 1"]);
        assert_eventually(Duration::from_secs(3), "c alone", || {
            (0..6).all(|_| body(&proxy, "w.test", "/") == "c")
        });
    }
}

#[test]
fn least_request_sends_less_to_a_slow_backend() {
    let (redis, proxy) = start(&[]);
    let slow = Backend::start(|_| Reply::text(200, "slow").delay(Duration::from_millis(200)));
    let fast = Backend::named("fast");
    redis.set_frontend("lr.test", &[&slow.url(), &fast.url()]);
    let _: i64 = redis.query(&["HSET", "route:lr.test", "balance", "least_request"]);
    let clients = 8;
    let barrier = Arc::new(Barrier::new(clients));
    let addr = proxy.addr();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                (0..15)
                    .map(|_| get(addr, "lr.test", "/", &[]).body_str())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let slow_share = answers.iter().filter(|b| *b == "slow").count();
    assert_eq!(answers.len(), 120);
    assert!(
        answers.iter().all(|b| b == "slow" || b == "fast"),
        "{answers:?}"
    );
    // Round robin would give the slow one 60; in-flight counting keeps it near the client count (a third
    // leaves room for a loaded machine, where the fast backend's requests stay in flight longer too).
    assert!(slow_share <= 40, "the slow backend got {slow_share} of 120");
    assert!(slow_share >= 1, "the slow backend still gets some");
}

#[test]
fn a_host_without_path_frontends_is_served_exactly_as_before() {
    let (redis, proxy) = start(&[]);
    let (b1, b2, api) = (
        Backend::named("B1"),
        Backend::named("B2"),
        Backend::named("api"),
    );
    redis.set_frontend("plain.test", &[&b1.url(), &b2.url()]);
    // Another host has path frontends: the index is not empty.
    redis.set_frontend("other.test/api", &[&api.url()]);
    until_served(&proxy, "other.test", "/api", "api");
    let bodies: Vec<String> = (0..4)
        .map(|_| body(&proxy, "plain.test", "/api/x"))
        .collect();
    assert_eq!(bodies, ["B1", "B2", "B1", "B2"]);
    let resp = get(
        proxy.addr(),
        "plain.test",
        "/api/x?y=1",
        &[("X-Debug-Router", "1")],
    );
    assert_eq!(resp.header("x-debug-frontend-key"), Some("plain.test"));
    assert_eq!(b1.requests().last().unwrap().target, "/api/x?y=1");
    // One LRANGE per request: no path candidate is read for it.
    let before = redis.calls("lrange");
    for _ in 0..10 {
        body(&proxy, "plain.test", "/a/b/c/d");
    }
    assert_eq!(redis.calls("lrange") - before, 10);
}

#[test]
fn the_routes_file_has_path_frontends_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let (api, site, a, b) = (
        Backend::named("api"),
        Backend::named("site"),
        Backend::named("a"),
        Backend::named("b"),
    );
    let file = dir.path().join("routes.toml");
    std::fs::write(
        &file,
        format!(
            "[frontends.\"f.test\"]\nbackends = [\"{}\"]\n\
             [frontends.\"f.test/api\"]\nbackends = [\"{}\"]\nstrip_prefix = true\n\
             [frontends.\"w.test\"]\nbackends = [\"{}\", \"{}\"]\nweights = [3, 1]\n",
            site.url(),
            api.url(),
            a.url(),
            b.url()
        ),
    )
    .unwrap();
    let proxy = Proxy::start_without_redis(&["--routes", file.to_str().unwrap()]);
    assert_eq!(body(&proxy, "f.test", "/api/x?q=1"), "api");
    assert_eq!(api.requests().last().unwrap().target, "/x?q=1");
    assert_eq!(body(&proxy, "f.test", "/apix"), "site");
    let bodies: Vec<String> = (0..8).map(|_| body(&proxy, "w.test", "/")).collect();
    assert_eq!(bodies.iter().filter(|b| *b == "a").count(), 6, "{bodies:?}");
}

#[test]
fn policies_apply_per_path_frontend() {
    for mode in MODES {
        let (redis, proxy) = start(mode);
        let (api, site) = (Backend::named("api"), Backend::named("site"));
        redis.set_frontend("pol.test", &[&site.url()]);
        redis.set_frontend("pol.test/api", &[&api.url()]);
        let _: i64 = redis.query(&[
            "HSET",
            "ratelimit:pol.test/api",
            "rate",
            "1",
            "period",
            "60",
            "burst",
            "2",
        ]);
        until_served(&proxy, "pol.test", "/api", "api");
        let statuses: Vec<u16> = (0..3)
            .map(|_| get(proxy.addr(), "pol.test", "/api/x", &[]).status)
            .collect();
        assert!(statuses.contains(&429), "{mode:?}: {statuses:?}");
        // The host's own frontend has no limit.
        for _ in 0..5 {
            assert_eq!(body(&proxy, "pol.test", "/"), "site");
        }
    }
}

#[test]
fn options_added_to_a_frontend_already_served_apply_within_2s() {
    // The default mode reads route: and mirror: at most once a second for a frontend that has neither.
    let (redis, proxy) = start(&[]);
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    redis.set_frontend("late.test", &[&a.url(), &b.url()]);
    for _ in 0..4 {
        body(&proxy, "late.test", "/");
    }
    let lookups = redis.calls("lrange");
    let hashes = redis.calls("hgetall");
    for _ in 0..10 {
        body(&proxy, "late.test", "/");
    }
    assert_eq!(redis.calls("lrange") - lookups, 10);
    // Five hashes a lookup when route: and mirror: are read, three when they are skipped.
    assert!(
        redis.calls("hgetall") - hashes < 50,
        "route: and mirror: were read on every request"
    );
    let _: i64 = redis.query(&["HSET", "route:late.test", "weights", "0 1"]);
    let added = std::time::Instant::now();
    assert_eventually(Duration::from_secs(3), "the weights apply", || {
        (0..4).all(|_| body(&proxy, "late.test", "/") == "b")
    });
    assert!(
        added.elapsed() < Duration::from_secs(2),
        "{:?}",
        added.elapsed()
    );
}

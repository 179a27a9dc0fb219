//! `--backend-cache-events`: routes cached until a Redis keyspace notification names one of their keys.

mod support;

use support::*;

fn body(proxy: &Proxy, host: &str) -> (u16, String) {
    let resp = get(proxy.addr(), host, "/", &[]);
    (resp.status, resp.body_str())
}

/// A Redis with the notifications the cache needs, and a proxy that has confirmed its subscription.
fn start(flags: &str) -> (RedisServer, Proxy) {
    let redis = RedisServer::start();
    let _: () = redis.query(&["CONFIG", "SET", "notify-keyspace-events", flags]);
    let proxy = Proxy::start(&redis, &["--backend-cache-events"]);
    proxy.wait_stderr("saying the subscription is live", |l| {
        l.contains("following keyspace notifications of database 0")
    });
    (redis, proxy)
}

#[test]
fn cached_routes_read_no_redis_and_follow_each_change() {
    let (redis, proxy) = start("Kglshx");
    let one = Backend::named("one");
    let two = Backend::named("two");
    redis.set_frontend("events.test", &[&one.url()]);
    assert_eq!(body(&proxy, "events.test"), (200, "one".into()));
    // The notifications of the writes above may arrive after that first lookup and drop its entry; once they
    // are in, the Host stays cached.
    assert_eventually(secs(5), "a request served from the cache", || {
        let _: () = redis.query(&["CONFIG", "RESETSTAT"]);
        assert_eq!(body(&proxy, "events.test"), (200, "one".into()));
        redis.calls("lrange") == 0
    });

    let _: () = redis.query(&["CONFIG", "RESETSTAT"]);
    for _ in 0..20 {
        assert_eq!(body(&proxy, "events.test"), (200, "one".into()));
    }
    assert_eq!(redis.calls("lrange"), 0, "a cached Host read Redis");

    // Entries live 60 s when the notifications are on; the change shows long before that.
    redis.set_frontend("events.test", &[&two.url()]);
    assert_eventually(secs(10), "the new backend after RPUSH", || {
        body(&proxy, "events.test") == (200, "two".into())
    });
    let _: () = redis.query(&["DEL", "frontend:events.test"]);
    assert_eventually(secs(10), "the 400 after DEL", || {
        body(&proxy, "events.test").0 == 400
    });
}

#[test]
fn dead_sets_and_wildcards_are_followed() {
    let (redis, proxy) = start("KA");
    let one = Backend::named("one");
    let two = Backend::named("two");

    // A Host cached through a wildcard gets its own frontend the moment one is written.
    redis.set_frontend("*.wild.test", &[&one.url()]);
    assert_eq!(body(&proxy, "a.wild.test"), (200, "one".into()));
    redis.set_frontend("a.wild.test", &[&two.url()]);
    assert_eventually(secs(10), "the exact frontend over the wildcard", || {
        body(&proxy, "a.wild.test") == (200, "two".into())
    });

    // A dead mark written by someone else is followed, and so is its expiry.
    redis.set_frontend("pair.test", &[&one.url(), &two.url()]);
    assert_eq!(body(&proxy, "pair.test").0, 200);
    let _: () = redis.query(&["SADD", "dead:pair.test", "0"]);
    let _: () = redis.query(&["PEXPIRE", "dead:pair.test", "1500"]);
    assert_eventually(secs(10), "only the live backend", || {
        (0..4).all(|_| body(&proxy, "pair.test") == (200, "two".into()))
    });
    assert_eventually(secs(10), "both backends once the dead set expired", || {
        body(&proxy, "pair.test") == (200, "one".into())
    });
}

#[test]
fn policy_hashes_are_followed() {
    let (redis, proxy) = start("Kglshx");
    let app = Backend::named("app");
    redis.set_frontend("limited.test", &[&app.url()]);
    assert_eq!(body(&proxy, "limited.test").0, 200);
    let _: () = redis.query(&[
        "HSET",
        "ratelimit:limited.test",
        "rate",
        "1",
        "period",
        "1h",
    ]);
    assert_eventually(secs(10), "the new rate limit", || {
        body(&proxy, "limited.test").0 == 429
    });
}

#[test]
fn without_notifications_it_says_so_and_entries_live_two_seconds() {
    let redis = RedisServer::start();
    let _: () = redis.query(&["CONFIG", "SET", "notify-keyspace-events", ""]);
    let one = Backend::named("one");
    let two = Backend::named("two");
    redis.set_frontend("quiet.test", &[&one.url()]);
    let proxy = Proxy::start(&redis, &["--backend-cache-events"]);
    proxy.wait_stderr("naming the missing setting", |l| {
        l.contains("notify-keyspace-events is \"\"") && l.contains("expire after 2s")
    });
    assert_eq!(body(&proxy, "quiet.test"), (200, "one".into()));
    redis.set_frontend("quiet.test", &[&two.url()]);
    assert_eventually(secs(6), "the change after at most 2 s", || {
        body(&proxy, "quiet.test") == (200, "two".into())
    });
}

#[test]
fn a_restarted_redis_is_subscribed_to_again() {
    let (mut redis, proxy) = start("Kglshx");
    let one = Backend::named("one");
    let two = Backend::named("two");
    redis.set_frontend("again.test", &[&one.url()]);
    assert_eq!(body(&proxy, "again.test"), (200, "one".into()));

    redis.restart();
    let _: () = redis.query(&["CONFIG", "SET", "notify-keyspace-events", "Kglshx"]);
    assert_eventually(secs(15), "a second subscription", || {
        proxy
            .stderr_lines()
            .iter()
            .filter(|l| l.contains("following keyspace notifications"))
            .count()
            >= 2
    });
    // The data went with the restart; what is written now is what is served.
    redis.set_frontend("again.test", &[&two.url()]);
    assert_eventually(secs(10), "the route written after the restart", || {
        body(&proxy, "again.test") == (200, "two".into())
    });
}

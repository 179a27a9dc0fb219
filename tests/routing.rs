//! Host matching and backend selection (docs/compat/planb.md#host-matching, docs/compat/planb.md#backend-selection, docs/compat/planb.md#conformance-checklist items 1-5) plus the hypache lookup
//! extensions: lower-cased host, wildcard candidates (docs/compat/hipache.md#wildcard-candidates), catch-all.

mod support;

use support::*;

fn setup(extra: &[&str]) -> (RedisServer, Proxy) {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, extra);
    (redis, proxy)
}

/// Bodies of `n` GETs to `host`.
fn bodies(proxy: &Proxy, host: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| get(proxy.addr(), host, "/", &[]).body_str())
        .collect()
}

/// The frontend key the proxy used, from the debug header.
fn key_for(proxy: &Proxy, host: &str) -> (u16, Option<String>) {
    let resp = get(proxy.addr(), host, "/", &[("X-Debug-Router", "1")]);
    (
        resp.status,
        resp.header("x-debug-frontend-key").map(str::to_string),
    )
}

#[track_caller]
fn assert_no_route(resp: &Resp) {
    assert_eq!(resp.status, 400, "{}", resp.head_text());
    assert_eq!(resp.body_str(), "no such route");
}

#[test]
fn round_robin_alternates_starting_at_the_first_backend() {
    let (redis, proxy) = setup(&[]);
    let (b1, b2) = (Backend::named("B1"), Backend::named("B2"));
    redis.set_frontend("a.com", &[&b1.url(), &b2.url()]);
    assert_eq!(bodies(&proxy, "a.com", 5), ["B1", "B2", "B1", "B2", "B1"]);
}

#[test]
fn round_robin_continues_with_the_new_count_when_a_backend_is_added() {
    let (redis, proxy) = setup(&[]);
    let b: Vec<Backend> = ["B1", "B2", "B3", "B4"]
        .iter()
        .map(|n| Backend::named(n))
        .collect();
    redis.set_frontend("a.com", &[&b[0].url(), &b[1].url(), &b[2].url()]);
    assert_eq!(bodies(&proxy, "a.com", 1), ["B1"]);
    let _: i64 = redis.query(&["RPUSH", "frontend:a.com", &b[3].url()]);
    assert_eq!(bodies(&proxy, "a.com", 4), ["B2", "B3", "B4", "B1"]);
}

#[test]
fn host_with_port_falls_back_to_the_port_less_key_and_keeps_the_host() {
    let (redis, proxy) = setup(&[]);
    let b1 = Backend::named("B1");
    redis.set_frontend("a.com", &[&b1.url()]);
    let resp = get(proxy.addr(), "a.com:1234", "/", &[("X-Debug-Router", "1")]);
    assert_eq!(resp.body_str(), "B1");
    assert_eq!(resp.header("x-debug-frontend-key"), Some("a.com"));
    assert_eq!(
        b1.single_request().header_all("host"),
        ["a.com:1234"],
        "an IP backend gets the Host unchanged"
    );
}

#[test]
fn an_exact_host_with_port_entry_wins_over_the_port_less_one() {
    let (redis, proxy) = setup(&[]);
    let (b1, b2) = (Backend::named("B1"), Backend::named("B2"));
    redis.set_frontend("a.com", &[&b1.url()]);
    redis.set_frontend("a.com:1234", &[&b2.url()]);
    assert_eq!(bodies(&proxy, "a.com:1234", 1), ["B2"]);
    assert_eq!(
        key_for(&proxy, "a.com:1234"),
        (200, Some("a.com:1234".into()))
    );
    assert_eq!(bodies(&proxy, "a.com:999", 1), ["B1"]);
    assert_eq!(bodies(&proxy, "a.com", 1), ["B1"]);
}

#[test]
fn an_identifier_only_list_with_port_falls_back_to_the_port_less_key() {
    let (redis, proxy) = setup(&[]);
    let b1 = Backend::named("B1");
    redis.set_frontend("a.com", &[&b1.url()]);
    redis.set_frontend("a.com:8080", &[]);
    assert_eq!(key_for(&proxy, "a.com:8080"), (200, Some("a.com".into())));
}

#[test]
fn the_round_robin_counter_is_per_original_host_string() {
    let (redis, proxy) = setup(&[]);
    let (b1, b2) = (Backend::named("B1"), Backend::named("B2"));
    redis.set_frontend("a.com", &[&b1.url(), &b2.url()]);
    let seq: Vec<String> = ["a.com", "a.com:80", "a.com", "a.com:80", "a.com"]
        .iter()
        .map(|h| get(proxy.addr(), h, "/", &[]).body_str())
        .collect();
    assert_eq!(seq, ["B1", "B1", "B2", "B2", "B1"]);
}

#[test]
fn dead_backends_are_skipped_walking_forward() {
    let (redis, proxy) = setup(&[]);
    let b: Vec<Backend> = ["A", "B", "C"].iter().map(|n| Backend::named(n)).collect();
    redis.set_frontend("a.com", &[&b[0].url(), &b[1].url(), &b[2].url()]);
    let _: i64 = redis.query(&["SADD", "dead:a.com", "0"]);
    assert_eq!(bodies(&proxy, "a.com", 4), ["B", "B", "C", "B"]);
    assert_eq!(b[0].hits(), 0);
}

#[test]
fn dead_skipping_wraps_around() {
    let (redis, proxy) = setup(&[]);
    let b: Vec<Backend> = ["A", "B", "C"].iter().map(|n| Backend::named(n)).collect();
    redis.set_frontend("a.com", &[&b[0].url(), &b[1].url(), &b[2].url()]);
    let _: i64 = redis.query(&["SADD", "dead:a.com", "2"]);
    assert_eq!(bodies(&proxy, "a.com", 4), ["A", "B", "A", "A"]);
}

#[test]
fn a_non_numeric_dead_member_counts_as_index_0() {
    let (redis, proxy) = setup(&[]);
    let (b1, b2) = (Backend::named("B1"), Backend::named("B2"));
    redis.set_frontend("a.com", &[&b1.url(), &b2.url()]);
    let _: i64 = redis.query(&["SADD", "dead:a.com", "notanumber"]);
    assert_eq!(bodies(&proxy, "a.com", 3), ["B2", "B2", "B2"]);
}

#[test]
fn a_dead_index_beyond_the_list_has_no_effect() {
    let (redis, proxy) = setup(&[]);
    let (b1, b2) = (Backend::named("B1"), Backend::named("B2"));
    redis.set_frontend("a.com", &[&b1.url(), &b2.url()]);
    let _: i64 = redis.query(&["SADD", "dead:a.com", "7"]);
    assert_eq!(bodies(&proxy, "a.com", 3), ["B1", "B2", "B1"]);
}

#[test]
fn the_dead_set_of_the_port_less_key_is_used_after_the_fallback() {
    let (redis, proxy) = setup(&[]);
    let (b1, b2) = (Backend::named("B1"), Backend::named("B2"));
    redis.set_frontend("a.com", &[&b1.url(), &b2.url()]);
    let _: i64 = redis.query(&["SADD", "dead:a.com", "0"]);
    let _: i64 = redis.query(&["SADD", "dead:a.com:8080", "1"]);
    assert_eq!(bodies(&proxy, "a.com:8080", 2), ["B2", "B2"]);
}

#[test]
fn the_backend_url_path_is_ignored() {
    let (redis, proxy) = setup(&[]);
    let b1 = Backend::named("B1");
    redis.set_frontend("a.com", &[&format!("{}/prefix", b1.url())]);
    assert_eq!(get(proxy.addr(), "a.com", "/p?q=1", &[]).body_str(), "B1");
    assert_eq!(b1.single_request().target, "/p?q=1");
}

#[test]
fn a_backend_without_scheme_is_http_host_port() {
    let (redis, proxy) = setup(&[]);
    let b1 = Backend::named("B1");
    redis.set_frontend("a.com", &[&b1.addr().to_string()]);
    assert_eq!(get(proxy.addr(), "a.com", "/", &[]).body_str(), "B1");
}

#[test]
fn an_empty_backend_string_gives_no_such_route() {
    let (redis, proxy) = setup(&[]);
    let b1 = Backend::named("B1");
    redis.set_frontend("empty.com", &[""]);
    assert_no_route(&get(proxy.addr(), "empty.com", "/", &[]));
    // Round-robin over ["", B1]: the first request lands on the empty string.
    redis.set_frontend("a.com", &["", &b1.url()]);
    assert_no_route(&get(proxy.addr(), "a.com", "/", &[]));
    assert_eq!(get(proxy.addr(), "a.com", "/", &[]).body_str(), "B1");
}

#[test]
fn an_absolute_uri_is_routed_by_its_authority() {
    let (redis, proxy) = setup(&[]);
    let (b1, b2) = (Backend::named("B1"), Backend::named("B2"));
    redis.set_frontend("myapp.com", &[&b1.url()]);
    redis.set_frontend("other.com", &[&b2.url()]);
    let resp = exchange(
        proxy.addr(),
        b"GET http://myapp.com/abs?x=1 HTTP/1.1\r\nHost: other.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.body_str(), "B1");
    assert_eq!(b2.hits(), 0);
    let req = b1.single_request();
    assert_eq!(
        req.target, "/abs?x=1",
        "the backend gets an origin-form target"
    );
    assert_eq!(req.header_all("host"), ["myapp.com"]);
}

#[test]
fn an_empty_host_header_is_no_such_route() {
    let (_redis, proxy) = setup(&[]);
    let resp = exchange(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
    );
    assert_no_route(&resp);
}

#[test]
fn ping_host_with_another_path_or_a_port_is_routed() {
    let (redis, proxy) = setup(&[]);
    let b1 = Backend::named("B1");
    redis.set_frontend("__ping__", &[&b1.url()]);
    assert_eq!(get(proxy.addr(), "__ping__", "/x", &[]).body_str(), "B1");
    assert_eq!(get(proxy.addr(), "__ping__:80", "/", &[]).body_str(), "B1");
    assert_eq!(b1.hits(), 2);
}

// ---- Extension: case-insensitive retry ----

#[test]
fn a_mixed_case_host_is_retried_lower_cased() {
    let (redis, proxy) = setup(&[]);
    let b1 = Backend::named("B1");
    redis.set_frontend("myapp.com", &[&b1.url()]);
    assert_eq!(
        key_for(&proxy, "MyApp.com"),
        (200, Some("myapp.com".into()))
    );
    assert_eq!(
        key_for(&proxy, "MyApp.COM:8080"),
        (200, Some("myapp.com".into()))
    );
    assert_eq!(
        b1.requests()[0].header("host"),
        Some("MyApp.com"),
        "the Host itself is forwarded unchanged"
    );
}

#[test]
fn an_exact_mixed_case_key_wins_over_the_lower_cased_one() {
    let (redis, proxy) = setup(&[]);
    let (b1, b2) = (Backend::named("B1"), Backend::named("B2"));
    redis.set_frontend("myapp.com", &[&b1.url()]);
    redis.set_frontend("MyApp.com", &[&b2.url()]);
    assert_eq!(bodies(&proxy, "MyApp.com", 1), ["B2"]);
    assert_eq!(
        key_for(&proxy, "MyApp.com"),
        (200, Some("MyApp.com".into()))
    );
}

#[test]
fn no_lowercase_lookup_restores_case_sensitive_matching() {
    let (redis, proxy) = setup(&["--no-lowercase-lookup"]);
    let b1 = Backend::named("B1");
    redis.set_frontend("myapp.com", &[&b1.url()]);
    assert_no_route(&get(proxy.addr(), "MyApp.com", "/", &[]));
    assert_eq!(bodies(&proxy, "myapp.com", 1), ["B1"]);
}

// ---- Extension: wildcard candidates ----

#[test]
fn a_wildcard_frontend_matches_subdomains_but_not_the_parent() {
    let (redis, proxy) = setup(&[]);
    let b1 = Backend::named("B1");
    redis.set_frontend("*.example.com", &[&b1.url()]);
    assert_eq!(
        key_for(&proxy, "foo.example.com"),
        (200, Some("*.example.com".into()))
    );
    assert_eq!(
        key_for(&proxy, "a.b.example.com"),
        (200, Some("*.example.com".into()))
    );
    assert_no_route(&get(proxy.addr(), "example.com", "/", &[]));
    assert_eq!(b1.requests()[0].header("host"), Some("foo.example.com"));
}

#[test]
fn the_most_specific_wildcard_wins_and_exact_beats_wildcard() {
    let (redis, proxy) = setup(&[]);
    let (b1, b2, b3) = (
        Backend::named("B1"),
        Backend::named("B2"),
        Backend::named("B3"),
    );
    redis.set_frontend("*.example.com", &[&b1.url()]);
    redis.set_frontend("*.b.example.com", &[&b2.url()]);
    redis.set_frontend("exact.example.com", &[&b3.url()]);
    assert_eq!(bodies(&proxy, "a.b.example.com", 1), ["B2"]);
    assert_eq!(bodies(&proxy, "x.example.com", 1), ["B1"]);
    assert_eq!(bodies(&proxy, "exact.example.com", 1), ["B3"]);
}

#[test]
fn wildcards_use_the_lower_cased_port_less_host() {
    let (redis, proxy) = setup(&[]);
    let b1 = Backend::named("B1");
    redis.set_frontend("*.example.com", &[&b1.url()]);
    assert_eq!(
        key_for(&proxy, "Foo.Example.COM:8080"),
        (200, Some("*.example.com".into()))
    );
}

#[test]
fn wildcards_only_consider_the_last_six_labels() {
    let (redis, proxy) = setup(&["--no-catch-all"]);
    let (b1, b2) = (Backend::named("B1"), Backend::named("B2"));
    let host = "too.deep.quuux.foo.bar.baz.qux.quux";
    redis.set_frontend("*.quuux.foo.bar.baz.qux.quux", &[&b1.url()]);
    assert_no_route(&get(proxy.addr(), host, "/", &[]));
    redis.set_frontend("*.quux", &[&b2.url()]);
    assert_eq!(key_for(&proxy, host), (200, Some("*.quux".into())));
    redis.set_frontend("*.foo.bar.baz.qux.quux", &[&b2.url()]);
    assert_eq!(
        key_for(&proxy, host),
        (200, Some("*.foo.bar.baz.qux.quux".into()))
    );
    assert_eq!(b1.hits(), 0);
}

#[test]
fn an_identifier_only_exact_list_falls_through_to_the_wildcard() {
    let (redis, proxy) = setup(&[]);
    let b1 = Backend::named("B1");
    redis.set_frontend("a.example.com", &[]);
    redis.set_frontend("*.example.com", &[&b1.url()]);
    assert_eq!(
        key_for(&proxy, "a.example.com"),
        (200, Some("*.example.com".into()))
    );
}

#[test]
fn the_dead_set_of_a_wildcard_key_is_used() {
    let (redis, proxy) = setup(&[]);
    let (b1, b2) = (Backend::named("B1"), Backend::named("B2"));
    redis.set_frontend("*.example.com", &[&b1.url(), &b2.url()]);
    let _: i64 = redis.query(&["SADD", "dead:*.example.com", "0"]);
    let _: i64 = redis.query(&["SADD", "dead:foo.example.com", "1"]);
    assert_eq!(bodies(&proxy, "foo.example.com", 2), ["B2", "B2"]);
}

#[test]
fn no_wildcard_lookup_disables_wildcards() {
    let (redis, proxy) = setup(&["--no-wildcard-lookup"]);
    let b1 = Backend::named("B1");
    redis.set_frontend("*.example.com", &[&b1.url()]);
    assert_no_route(&get(proxy.addr(), "foo.example.com", "/", &[]));
    assert_eq!(b1.hits(), 0);
}

// ---- Extension: catch-all ----

#[test]
fn the_catch_all_frontend_serves_unknown_hosts_last() {
    let (redis, proxy) = setup(&[]);
    let (b1, b2, b3) = (
        Backend::named("B1"),
        Backend::named("B2"),
        Backend::named("B3"),
    );
    redis.set_frontend("*", &[&b1.url()]);
    redis.set_frontend("known.com", &[&b2.url()]);
    redis.set_frontend("*.wild.com", &[&b3.url()]);
    assert_eq!(key_for(&proxy, "unknown.org"), (200, Some("*".into())));
    assert_eq!(
        key_for(&proxy, "known.com"),
        (200, Some("known.com".into()))
    );
    assert_eq!(
        key_for(&proxy, "x.wild.com"),
        (200, Some("*.wild.com".into()))
    );
    assert_eq!(key_for(&proxy, "localhost"), (200, Some("*".into())));
}

#[test]
fn no_catch_all_disables_the_catch_all() {
    let (redis, proxy) = setup(&["--no-catch-all"]);
    let b1 = Backend::named("B1");
    redis.set_frontend("*", &[&b1.url()]);
    assert_no_route(&get(proxy.addr(), "unknown.org", "/", &[]));
    assert_eq!(b1.hits(), 0);
}

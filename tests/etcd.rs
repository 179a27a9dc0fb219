//! The httprouter preset: `--etcdurl URL --etcdkey /domains`, routes from a real etcd (`<etcdkey>/<host>/<name>`
//! = backend URL), watched. httprouter's test contract (unknown host 503, two backends alternate, XFF and UA
//! passed, delete and update apply, TTL expiry gives 503) plus an etcd outage and a late etcd.

mod support;

use support::*;

const UNAVAILABLE: &str = "This site is currently unavailable, please try again later.";

fn start(etcd: &EtcdServer) -> Proxy {
    start_api(etcd, "v3")
}

fn start_api(etcd: &EtcdServer, api: &str) -> Proxy {
    let url = etcd.url();
    Proxy::start_without_redis(&[
        "--etcdurl",
        &url,
        "--etcdkey",
        "/domains",
        "--etcd-api",
        api,
        "--access-log",
        "none",
    ])
}

fn body(proxy: &Proxy, host: &str) -> (u16, String) {
    let resp = get(proxy.addr(), host, "/", &[("User-Agent", "probe/1")]);
    (resp.status, resp.body_str())
}

#[test]
fn httprouter_contract_unknown_host_alternation_headers_delete_update() {
    let etcd = EtcdServer::start();
    let (a0, a1, b) = (
        Backend::named("A0"),
        Backend::named("A1"),
        Backend::named("B"),
    );
    etcd.put("/domains/a.test/web0", &a0.url(), None);
    etcd.put("/domains/a.test/web1", &a1.url(), None);
    let proxy = start(&etcd);
    assert_eventually(SOON, "the routes read from etcd", || {
        body(&proxy, "a.test").0 == 200
    });
    // Strict round robin in key order.
    let seq: String = (0..4).map(|_| body(&proxy, "a.test").1).collect();
    assert!(seq == "A0A1A0A1" || seq == "A1A0A1A0", "{seq}");
    // An unknown host, and the exact Host only: no port stripping, no case folding.
    assert_eq!(body(&proxy, "nowhere.test"), (503, UNAVAILABLE.to_string()));
    assert_eq!(body(&proxy, "a.test:80").0, 503);
    assert_eq!(body(&proxy, "A.TEST").0, 503);
    // The client's Host is kept, X-Forwarded-For appended, User-Agent passed.
    let req = a0.requests().pop().unwrap();
    assert_eq!(req.header("host"), Some("a.test"));
    assert_eq!(req.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(req.header("user-agent"), Some("probe/1"));
    // A change to another host does not disturb this host's rotation.
    let before = body(&proxy, "a.test").1;
    etcd.put("/domains/b.test/web", &b.url(), None);
    assert_eventually(secs(2), "b.test routed", || body(&proxy, "b.test").1 == "B");
    let after = body(&proxy, "a.test").1;
    assert_ne!(before, after, "the rotation restarted");
    // A delete removes the backend, an update changes its URL, within 2 s.
    etcd.delete("/domains/a.test/web1");
    assert_eventually(secs(2), "web1 deleted", || {
        (0..3).all(|_| body(&proxy, "a.test").1 == "A0")
    });
    let changed = std::time::Instant::now();
    etcd.put("/domains/a.test/web0", &b.url(), None);
    assert_eventually(secs(2), "web0 updated", || body(&proxy, "a.test").1 == "B");
    eprintln!(
        "etcd v3: a put applied {:?} after it was made",
        changed.elapsed()
    );
    // A value that is not a URL is logged and ignored.
    etcd.put("/domains/a.test/web9", "not a url", None);
    proxy.wait_stderr("the bad value", |l| {
        l.contains("/domains/a.test/web9") && l.contains("ignored")
    });
    assert_eq!(body(&proxy, "a.test").1, "B");
}

#[test]
fn an_expired_lease_takes_the_backend_away() {
    let etcd = EtcdServer::start();
    let app = Backend::named("app");
    let lease = etcd.grant(2);
    etcd.put("/domains/ttl.test/web", &app.url(), Some(&lease));
    let proxy = start(&etcd);
    assert_eventually(SOON, "routed while the lease lives", || {
        body(&proxy, "ttl.test") == (200, "app".into())
    });
    assert_eventually(secs(10), "503 once the lease expired", || {
        body(&proxy, "ttl.test") == (503, UNAVAILABLE.into())
    });
}

#[test]
fn an_etcd_outage_keeps_the_known_routes_and_resyncs() {
    let mut etcd = EtcdServer::start();
    let (one, two) = (Backend::named("one"), Backend::named("two"));
    etcd.put("/domains/o.test/web", &one.url(), None);
    let proxy = start(&etcd);
    assert_eventually(SOON, "routed", || body(&proxy, "o.test").1 == "one");
    etcd.stop();
    for _ in 0..3 {
        assert_eq!(body(&proxy, "o.test").1, "one");
    }
    etcd.launch();
    etcd.put("/domains/o.test/web", &two.url(), None);
    assert_eventually(secs(10), "the change made after the outage", || {
        body(&proxy, "o.test").1 == "two"
    });
}

#[test]
fn etcd_down_at_start_answers_503_then_routes_when_it_comes() {
    let mut etcd = EtcdServer::not_started();
    let proxy = start(&etcd);
    assert_eq!(body(&proxy, "late.test"), (503, UNAVAILABLE.to_string()));
    etcd.launch();
    let app = Backend::named("late");
    etcd.put("/domains/late.test/web", &app.url(), None);
    assert_eventually(secs(10), "routes once etcd answers", || {
        body(&proxy, "late.test").1 == "late"
    });
}

#[test]
fn a_bad_etcdurl_exits_2_naming_the_flag() {
    let out = spawn_raw(
        &["--listen", "127.0.0.1:0", "--etcdurl", "etcd:2379"],
        &[],
        secs(15),
    );
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("--etcdurl"), "{out:?}");
}

#[test]
fn the_v2_keys_api_as_httprouter_used_it() {
    let etcd = EtcdServer::start();
    let (a0, a1, b) = (
        Backend::named("A0"),
        Backend::named("A1"),
        Backend::named("B"),
    );
    etcd.put_v2("/domains/v2.test/web0", &a0.url(), None);
    etcd.put_v2("/domains/v2.test/web1", &a1.url(), None);
    let proxy = start_api(&etcd, "v2");
    assert_eventually(SOON, "the routes read from etcd v2", || {
        body(&proxy, "v2.test").0 == 200
    });
    let seq: String = (0..4).map(|_| body(&proxy, "v2.test").1).collect();
    assert!(seq == "A0A1A0A1" || seq == "A1A0A1A0", "{seq}");
    assert_eq!(body(&proxy, "nowhere.test"), (503, UNAVAILABLE.to_string()));
    // Delete, update, and a TTL key that expires.
    etcd.delete_v2("/domains/v2.test/web1");
    assert_eventually(secs(2), "web1 deleted", || {
        (0..3).all(|_| body(&proxy, "v2.test").1 == "A0")
    });
    let changed = std::time::Instant::now();
    etcd.put_v2("/domains/v2.test/web0", &b.url(), None);
    assert_eventually(secs(2), "web0 updated", || body(&proxy, "v2.test").1 == "B");
    eprintln!(
        "etcd v2: a put applied {:?} after it was made",
        changed.elapsed()
    );
    etcd.put_v2("/domains/ttl.test/web", &a1.url(), Some(1));
    assert_eventually(secs(2), "the TTL key routed", || {
        body(&proxy, "ttl.test").1 == "A1"
    });
    assert_eventually(secs(10), "503 once the TTL expired", || {
        body(&proxy, "ttl.test") == (503, UNAVAILABLE.into())
    });
}

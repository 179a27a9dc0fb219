//! The TLS listener (docs/compat/planb.md#tls): certificates per server name from Redis, presets, HTTP/1.1 and HTTP/2 by ALPN,
//! WebSocket over TLS, and `https://` backends. Certificates are generated per test; clients are real rustls,
//! hyper and tungstenite clients.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::{CipherSuite, ProtocolVersion};
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

fn start_tls(redis: &RedisServer, extra: &[&str]) -> Proxy {
    let mut args = vec!["--tls-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Proxy::start(redis, &args)
}

fn set_cert(redis: &RedisServer, name: &str, leaf: &Leaf) {
    let _: i64 = redis.query(&[
        "HSET",
        &format!("tls:{name}"),
        "certificate",
        &leaf.cert_pem,
        "key",
        &leaf.key_pem,
    ]);
}

/// The DER of the certificate served for `sni`, or the client's error.
fn served(proxy: &Proxy, ca: &TestCa, sni: Option<&str>) -> Result<Vec<u8>, String> {
    tls_connect(proxy.tls_addr(), sni, ca.client_config(&[b"http/1.1"])).map(|c| c.served())
}

#[test]
fn redis_certificates_exact_and_one_level_wildcard() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let exact = ca.issue(&["exact.a.test"]);
    let wild = ca.issue(&["*.b.test"]);
    set_cert(&redis, "exact.a.test", &exact);
    set_cert(&redis, "*.b.test", &wild);
    let proxy = start_tls(&redis, &[]);
    assert_eq!(
        served(&proxy, &ca, Some("exact.a.test")).unwrap(),
        exact.der
    );
    assert_eq!(served(&proxy, &ca, Some("x.b.test")).unwrap(), wild.der);
    // One level only: a.x.b.test looks up *.x.b.test, then a.x.b.test.
    assert!(served(&proxy, &ca, Some("a.x.b.test")).is_err());
    proxy.wait_stderr("the not-found line", |l| {
        l.contains("http: TLS handshake error from 127.0.0.1:")
            && l.contains("Certificate for \"a.x.b.test\" not is found")
    });
}

#[test]
fn redis_wildcard_wins_over_exact() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let wild = ca.issue(&["*.tls.test"]);
    let exact = ca.issue(&["exact.tls.test"]);
    set_cert(&redis, "*.tls.test", &wild);
    set_cert(&redis, "exact.tls.test", &exact);
    let proxy = start_tls(&redis, &[]);
    // docs/compat/planb.md#certificates-from-redis: the wildcard is looked up first.
    assert_eq!(
        served(&proxy, &ca, Some("exact.tls.test")).unwrap(),
        wild.der
    );
}

#[test]
fn no_sni_and_unknown_names_fail_the_handshake_promptly() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    set_cert(&redis, "known.test", &ca.issue(&["known.test"]));
    let proxy = start_tls(&redis, &[]);
    for sni in [None, Some("unknown.test")] {
        let started = Instant::now();
        let err = served(&proxy, &ca, sni).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{sni:?} took {:?}",
            started.elapsed()
        );
        // rustls refuses with a fatal alert (access_denied; Go sent internal_error).
        assert!(err.contains("received fatal alert"), "{sni:?}: {err}");
    }
    proxy.wait_stderr("no-SNI line", |l| {
        l.contains("Certificate for \"\" not is found")
    });
    // The listener is still fine.
    assert!(served(&proxy, &ca, Some("known.test")).is_ok());
}

#[test]
fn redis_certificates_are_cached_after_the_key_is_deleted() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let leaf = ca.issue(&["cache.test"]);
    set_cert(&redis, "cache.test", &leaf);
    let proxy = start_tls(&redis, &[]);
    assert_eq!(served(&proxy, &ca, Some("cache.test")).unwrap(), leaf.der);
    let _: i64 = redis.query(&["DEL", "tls:cache.test"]);
    // Within the 30 s cache the deleted certificate is still served (PlanB's TestRedisCertificateCached).
    assert_eq!(served(&proxy, &ca, Some("cache.test")).unwrap(), leaf.der);
    // A name that was never found is not cached: adding it works at once.
    assert!(served(&proxy, &ca, Some("later.test")).is_err());
    let later = ca.issue(&["later.test"]);
    set_cert(&redis, "later.test", &later);
    assert_eq!(served(&proxy, &ca, Some("later.test")).unwrap(), later.der);
}

#[test]
fn a_broken_certificate_in_redis_fails_only_its_handshake() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let backend = Backend::named("good");
    redis.set_frontend("good.test", &[&backend.url()]);
    set_cert(&redis, "good.test", &ca.issue(&["good.test"]));
    let _: i64 = redis.query(&[
        "HSET",
        "tls:broken.test",
        "certificate",
        "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n",
        "key",
        "garbage",
    ]);
    // A key whose certificate belongs to another key.
    let (a, b) = (ca.issue(&["mismatch.test"]), ca.issue(&["mismatch.test"]));
    let _: i64 = redis.query(&[
        "HSET",
        "tls:mismatch.test",
        "certificate",
        &a.cert_pem,
        "key",
        &b.key_pem,
    ]);
    let proxy = start_tls(&redis, &[]);
    assert!(served(&proxy, &ca, Some("broken.test")).is_err());
    assert!(served(&proxy, &ca, Some("mismatch.test")).is_err());
    proxy.wait_stderr("the broken key named", |l| {
        l.contains("tls:broken.test") && l.contains("TLS handshake error")
    });
    proxy.wait_stderr("the mismatched key named", |l| {
        l.contains("tls:mismatch.test")
    });
    let conn = tls_connect(
        proxy.tls_addr(),
        Some("good.test"),
        ca.client_config(&[b"http/1.1"]),
    )
    .unwrap();
    let resp = conn.get("good.test", "/", &[]);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_str(), "good");
}

#[test]
fn http1_over_tls_is_routed_with_x_forwarded_proto_https() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let backend = Backend::named("B1");
    redis.set_frontend("www.tls.test", &[&backend.url()]);
    set_cert(&redis, "*.tls.test", &ca.issue(&["*.tls.test"]));
    let proxy = start_tls(&redis, &[]);
    let conn = tls_connect(
        proxy.tls_addr(),
        Some("www.tls.test"),
        ca.client_config(&[b"h2", b"http/1.1"]),
    )
    .unwrap();
    assert_eq!(conn.alpn().as_deref(), Some(&b"h2"[..]));
    drop(conn);
    let conn = tls_connect(
        proxy.tls_addr(),
        Some("www.tls.test"),
        ca.client_config(&[b"http/1.1"]),
    )
    .unwrap();
    assert_eq!(conn.alpn().as_deref(), Some(&b"http/1.1"[..]));
    // A client offering only protocols the proxy does not speak is served HTTP/1.1 without ALPN, as Go does.
    let other = tls_connect(
        proxy.tls_addr(),
        Some("www.tls.test"),
        ca.client_config(&[b"spdy/3", b"http/1.0"]),
    )
    .unwrap();
    assert_eq!(other.alpn(), None);
    assert_eq!(other.get("www.tls.test", "/", &[]).body_str(), "B1");
    let resp = conn.get("www.tls.test", "/over-tls", &[]);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_str(), "B1");
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 2);
    for req in &reqs {
        assert_eq!(req.header("x-forwarded-proto"), Some("https"));
        assert_eq!(req.header("host"), Some("www.tls.test"));
    }
    let lines = proxy.wait_access_log_lines(2);
    assert!(
        lines[1].contains("\"GET /over-tls HTTP/1.1\" 200"),
        "{lines:?}"
    );
    // The plain listener still answers in clear.
    assert_eq!(get(proxy.addr(), "www.tls.test", "/", &[]).body_str(), "B1");
}

#[test]
fn a_parked_http1_connection_over_tls_is_served_again() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let backend = Backend::named("B1");
    redis.set_frontend("www.tls.test", &[&backend.url()]);
    set_cert(&redis, "www.tls.test", &ca.issue(&["www.tls.test"]));
    let proxy = start_tls(&redis, &["--metrics-address", "127.0.0.1:0"]);
    let parked =
        || support::metrics::scrape(proxy.metrics_addr()).value("hypache_connections_parked");
    let mut conn = tls_connect(
        proxy.tls_addr(),
        Some("www.tls.test"),
        ca.client_config(&[b"http/1.1"]),
    )
    .unwrap();
    for path in ["/one", "/two", "/three"] {
        let resp = conn.request("www.tls.test", path, &[("Connection", "keep-alive")]);
        assert_eq!(resp.body_str(), "B1");
        // Parked between requests: the next one arrives as TLS records on a socket hyper let go of.
        assert_eventually(secs(5), "the TLS connection parked", || parked() == 1.0);
    }
    let paths: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(paths, ["/one", "/two", "/three"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_through_alpn_is_routed_by_authority() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let (one, two) = (Backend::named("one"), Backend::named("two"));
    redis.set_frontend("a.h2.test", &[&one.url()]);
    redis.set_frontend("b.h2.test", &[&two.url()]);
    set_cert(&redis, "*.h2.test", &ca.issue(&["*.h2.test"]));
    let proxy = start_tls(&redis, &[]);
    let tcp = TcpStream::connect(proxy.tls_addr()).await.unwrap();
    let tls = TlsConnector::from(ca.client_config(&[b"h2"]))
        .connect(ServerName::try_from("a.h2.test").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Both requests on the one connection; each goes where its :authority says.
    for (authority, body) in [
        ("a.h2.test", "one"),
        ("b.h2.test", "two"),
        ("a.h2.test", "one"),
    ] {
        let req = ::http::Request::get(format!("https://{authority}/h2?x=1"))
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), ::http::Version::HTTP_2);
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got, body.as_bytes());
    }
    let req = one.requests()[0].clone();
    assert_eq!(req.version, "HTTP/1.1");
    assert_eq!(req.target, "/h2?x=1");
    assert_eq!(req.header("x-forwarded-proto"), Some("https"));
    assert_eq!(req.header("host"), Some("a.h2.test"));
    assert_eq!(req.header_all("cookie"), ["a=1; b=2"]);
    assert_eq!(two.requests()[0].header("host"), Some("b.h2.test"));
    let lines = tokio::task::spawn_blocking(move || {
        let lines = proxy.wait_access_log_lines(3);
        drop(proxy);
        lines
    })
    .await
    .unwrap();
    assert!(
        lines.iter().all(|l| l.contains("\"GET /h2 HTTP/2.0\" 200")),
        "{lines:?}"
    );
    assert!(lines[1].contains("\"b.h2.test\""), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_with_goaway() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let backend = Backend::named("idle");
    redis.set_frontend("idle.h2.test", &[&backend.url()]);
    set_cert(&redis, "idle.h2.test", &ca.issue(&["idle.h2.test"]));
    let proxy = start_tls(&redis, &["--client-idle-timeout", "300ms"]);
    let tcp = TcpStream::connect(proxy.tls_addr()).await.unwrap();
    let tls = TlsConnector::from(ca.client_config(&[b"h2"]))
        .connect(ServerName::try_from("idle.h2.test").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let driving = tokio::spawn(conn);
    let req = ::http::Request::get("https://idle.h2.test/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "idle".as_bytes());
    // Nothing more is sent: the proxy ends the connection (GOAWAY, then close), which ends the client's task.
    let ended = tokio::time::timeout(secs(5), driving).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection was not closed");
    drop(proxy);
}

/// (version, suite) negotiated by a client limited to `versions` and `suites` (client order as given).
fn negotiate(
    addr: SocketAddr,
    ca: &TestCa,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suites: &[CipherSuite],
) -> Result<(ProtocolVersion, CipherSuite), String> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !suites.is_empty() {
        provider
            .cipher_suites
            .retain(|s| suites.contains(&s.suite()));
        provider
            .cipher_suites
            .sort_by_key(|s| suites.iter().position(|x| *x == s.suite()));
    }
    let conn = tls_connect(
        addr,
        Some("preset.test"),
        ca.client_config_with(provider, versions),
    )?;
    Ok((conn.version(), conn.suite()))
}

#[test]
fn presets_choose_versions_and_suites() {
    use CipherSuite::*;
    let redis = RedisServer::start();
    let ca = TestCa::new();
    // rcgen makes ECDSA P-256 keys, so the ECDSA suites are the ones that can be chosen.
    set_cert(&redis, "preset.test", &ca.issue(&["preset.test"]));
    let tls12 = &[&rustls::version::TLS12][..];
    let tls13 = &[&rustls::version::TLS13][..];
    // The client prefers ChaCha20, then AES-128, then AES-256; the server's order must win.
    let client_order = [
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ];
    let cases = [
        ("modern", TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, true),
        (
            "intermediate",
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            false,
        ),
        ("old", TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, false),
    ];
    for (preset, preferred, chacha_over_tls12) in cases {
        let proxy = start_tls(&redis, &["--tls-preset", preset]);
        let addr = proxy.tls_addr();
        assert_eq!(
            negotiate(addr, &ca, tls13, &[]).unwrap().0,
            ProtocolVersion::TLSv1_3,
            "{preset}"
        );
        assert_eq!(
            negotiate(addr, &ca, tls12, &client_order).unwrap(),
            (ProtocolVersion::TLSv1_2, preferred),
            "{preset}"
        );
        let chacha_only = negotiate(addr, &ca, tls12, &client_order[..1]);
        assert_eq!(
            chacha_only.is_ok(),
            chacha_over_tls12,
            "{preset}: {chacha_only:?}"
        );
        let warned = proxy.stderr_lines().iter().any(|l| {
            l.contains("--tls-preset") && l.contains("rustls offers only TLS 1.2 and 1.3")
        });
        assert_eq!(
            warned,
            preset != "modern",
            "{preset}: {:?}",
            proxy.stderr_lines()
        );
    }
}

#[test]
fn the_tls_listener_alone_serves() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let backend = Backend::named("only-tls");
    redis.set_frontend("alone.test", &[&backend.url()]);
    set_cert(&redis, "alone.test", &ca.issue(&["alone.test"]));
    let proxy = start_tls(&redis, &["--listen", "disabled"]);
    assert!(!proxy
        .stderr_lines()
        .iter()
        .any(|l| l.contains("Listening on ")));
    let conn = tls_connect(
        proxy.tls_addr(),
        Some("alone.test"),
        ca.client_config(&[b"http/1.1"]),
    )
    .unwrap();
    assert_eq!(conn.get("alone.test", "/", &[]).body_str(), "only-tls");
}

/// A WebSocket echo server on 127.0.0.1:0.
async fn echo_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn tls_stream(
    addr: SocketAddr,
    ca: &TestCa,
    sni: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(ca.client_config(&[b"http/1.1"]))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_echo_and_502_for_an_unknown_host() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let backend = echo_backend().await;
    redis.set_frontend("ws.tls.test", &[&format!("http://{backend}")]);
    set_cert(&redis, "*.tls.test", &ca.issue(&["*.tls.test"]));
    let proxy = start_tls(&redis, &[]);
    let addr = proxy.tls_addr();

    let tls = tls_stream(addr, &ca, "ws.tls.test").await;
    let (mut ws, resp) = tokio_tungstenite::client_async("wss://ws.tls.test/chat", tls)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        ws.send(Message::text(format!("over tls {i}")))
            .await
            .unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(
            echoed.into_text().unwrap().as_str(),
            format!("over tls {i}")
        );
    }
    ws.close(None).await.unwrap();

    let tls = tls_stream(addr, &ca, "nope.tls.test").await;
    let err = tokio_tungstenite::client_async("wss://nope.tls.test/chat", tls)
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 502);
            assert_eq!(resp.body().as_deref(), Some(&b"\n"[..]));
        }
        other => panic!("expected a 502, got {other:?}"),
    }
    drop(proxy);
}

#[test]
fn https_backends_are_verified_with_the_backend_ca_file() {
    let redis = RedisServer::start();
    let backend_ca = TestCa::new();
    let leaf = backend_ca.issue(&["localhost", "127.0.0.1"]);
    let by_name = TlsBackend::start("secure", &leaf);
    let by_ip = TlsBackend::start("secure-ip", &leaf);
    redis.set_frontend(
        "secure.test",
        &[&format!("https://localhost:{}", by_name.addr().port())],
    );
    redis.set_frontend("ip.test", &[&format!("https://{}", by_ip.addr())]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("backend-ca.pem");
    std::fs::write(&ca_file, &backend_ca.pem).unwrap();
    // One worker: backend connections are pooled per worker thread, and this checks their reuse.
    let proxy = Proxy::start(
        &redis,
        &[
            "--backend-ca-file",
            ca_file.to_str().unwrap(),
            "--workers",
            "1",
        ],
    );
    for _ in 0..2 {
        let resp = get(proxy.addr(), "secure.test", "/s", &[]);
        assert_eq!(resp.status, 200, "{}", resp.head_text());
        assert_eq!(resp.body_str(), "secure");
    }
    // The connection was kept alive: one handshake for both requests.
    assert_eq!(by_name.handshakes(), 1);
    let req = &by_name.requests()[0];
    assert_eq!(req.header("host"), Some("localhost"));
    assert_eq!(req.header("x-forwarded-host"), Some("secure.test"));
    let resp = get(proxy.addr(), "ip.test", "/", &[]);
    assert_eq!(resp.body_str(), "secure-ip");
    assert_eq!(by_ip.requests()[0].header("host"), Some("ip.test"));
}

#[test]
fn an_untrusted_https_backend_gives_503_and_is_not_marked_dead() {
    let redis = RedisServer::start();
    let rogue = TlsBackend::start("rogue", &Leaf::self_signed(&["localhost"]));
    redis.set_frontend(
        "rogue.test",
        &[&format!("https://localhost:{}", rogue.addr().port())],
    );
    let proxy = Proxy::start(&redis, &[]);
    let resp = get(proxy.addr(), "rogue.test", "/", &[]);
    assert_eq!(resp.status, 503);
    assert_eq!(resp.body_str(), "");
    proxy.wait_stderr("the verification failure", |l| {
        l.starts_with("ERROR in rogue.test -> https://localhost:")
            && l.contains("invalid peer certificate")
            && !l.ends_with("*DEAD*")
    });
    // Not dead: the next request is tried again (a dead backend would give `all backends are dead`).
    let resp = get(proxy.addr(), "rogue.test", "/", &[]);
    assert_eq!((resp.status, resp.body_str().as_str()), (503, ""));
    assert!(redis.dead_members("rogue.test").is_empty());
    assert!(rogue.requests().is_empty());
}

#[test]
fn a_bad_backend_ca_file_fails_startup() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificates here\n").unwrap();
    let port = redis.port().to_string();
    for file in [empty.to_str().unwrap(), "/nonexistent/ca.pem"] {
        let out = spawn_raw(
            &[
                "--listen",
                "127.0.0.1:0",
                "--read-redis-port",
                &port,
                "--write-redis-port",
                &port,
                "--access-log",
                "none",
                "--backend-ca-file",
                file,
            ],
            &[],
            Duration::from_secs(15),
        );
        assert_eq!(out.code(), Some(1), "{out:?}");
        assert!(
            out.stderr.contains("--backend-ca-file") && out.stderr.contains(file),
            "{out:?}"
        );
    }
}

#[test]
fn nothing_to_serve_exits_2() {
    let out = spawn_raw(
        &["--listen", "disabled", "--access-log", "none"],
        &[],
        Duration::from_secs(15),
    );
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("--tls-listen"), "{out:?}");
}

#[test]
fn sigterm_drains_a_request_in_flight_over_tls() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let release = Gate::new();
    let gate = release.clone();
    let backend = Backend::start(move |_| Reply::text(200, "drained").wait_before_headers(&gate));
    redis.set_frontend("drain.test", &[&backend.url()]);
    set_cert(&redis, "drain.test", &ca.issue(&["drain.test"]));
    let mut proxy = start_tls(&redis, &["--listen", "disabled"]);
    let addr = proxy.tls_addr();
    let config = ca.client_config(&[b"http/1.1"]);
    let client = std::thread::spawn(move || {
        tls_connect(addr, Some("drain.test"), config)
            .unwrap()
            .get("drain.test", "/slow", &[])
    });
    assert_eventually(SOON, "the request to reach the backend", || {
        backend.hits() == 1
    });
    proxy.signal("TERM");
    assert_eventually(SOON, "new TLS connections to be refused", || {
        connection_refused(addr)
    });
    assert!(
        proxy.try_exit().is_none(),
        "the request in flight must be waited for"
    );
    release.open();
    let resp = client.join().unwrap();
    assert_eq!(resp.body_str(), "drained");
    assert!(proxy.wait_exit(SOON).success());
}

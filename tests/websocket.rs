//! WebSocket tunnels (docs/compat/planb.md#websocket) with a real tungstenite client and a real tungstenite echo backend.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket echo server on 127.0.0.1:0 that records the Host and X-Forwarded-For of each handshake.
async fn echo_backend() -> (SocketAddr, Arc<Mutex<Vec<(String, String)>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                // tungstenite's callback signature fixes the (large) error type.
                #[allow(clippy::result_large_err)]
                let callback = |req: &WsRequest, resp: WsResponse| {
                    let get = |name: &str| {
                        req.headers()
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default()
                    };
                    record
                        .lock()
                        .unwrap()
                        .push((get("host"), get("x-forwarded-for")));
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
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
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_proxy_twice() {
    let redis = RedisServer::start();
    let (backend, seen) = echo_backend().await;
    redis.set_frontend("ws.test", &[&format!("http://{backend}")]);
    let proxy = Proxy::start(&redis, &[]);
    for round in 0..2 {
        let url = format!("ws://{}/chat?room=1", proxy.addr());
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
                .unwrap();
        request
            .headers_mut()
            .insert("host", "ws.test".parse().unwrap());
        let (mut ws, resp) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(resp.status(), 101);
        ws.send(Message::text(format!("hello {round}")))
            .await
            .unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(
            echoed.into_text().unwrap().as_str(),
            format!("hello {round}")
        );
        ws.close(None).await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    // PlanB: the backend sees Host = the backend's host:port, and X-Forwarded-For with the client appended.
    assert_eq!(seen[0].0, backend.to_string());
    assert_eq!(seen[0].1, "127.0.0.1");
    // WebSocket requests write no access-log line.
    assert!(proxy.access_log_lines().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_failures_give_502_with_a_newline_body() {
    let redis = RedisServer::start();
    redis.set_frontend("refused.test", &[&refused_url()]);
    let proxy = Proxy::start(&redis, &["--no-failover"]);
    let addr = proxy.addr();
    for host in ["unknown.test", "refused.test"] {
        let raw = format!(
            "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let resp = tokio::task::spawn_blocking(move || exchange(addr, raw.as_bytes()))
            .await
            .unwrap();
        assert_eq!(resp.status, 502, "{host}");
        assert_eq!(resp.body, b"\n", "{host}");
        assert_eq!(
            resp.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(resp.header("content-length"), Some("1"));
    }
    // Beyond PlanB: the refused backend is marked dead, as for plain HTTP.
    assert_eventually(secs(5), "refused backend marked dead", || {
        redis.dead_members("refused.test") == vec!["0".to_string()]
    });
}

async fn connect_ws(
    addr: SocketAddr,
    host: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("ws://{addr}/idle");
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request.headers_mut().insert("host", host.parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnels_are_closed_after_the_websocket_idle_timeout() {
    let redis = RedisServer::start();
    let (backend, _) = echo_backend().await;
    redis.set_frontend("idle.test", &[&format!("http://{backend}")]);
    let proxy = Proxy::start(&redis, &["--websocket-idle-timeout", "400ms"]);
    let mut ws = connect_ws(proxy.addr(), "idle.test").await;
    // Traffic every 100 ms keeps the tunnel open well past the limit.
    let started = std::time::Instant::now();
    for i in 0..10 {
        if i > 0 {
            tokio::time::sleep(millis(100)).await;
        }
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        assert!(ws.next().await.unwrap().is_ok());
    }
    assert!(started.elapsed() > millis(800));
    // Then silence: the proxy closes the tunnel (the stream ends or errors), within a bounded time.
    let idle_since = std::time::Instant::now();
    let end = tokio::time::timeout(secs(5), ws.next()).await;
    let end = end.expect("the idle tunnel was not closed within 5 s");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_)))),
        "unexpected message {end:?}"
    );
    assert!(
        idle_since.elapsed() >= millis(350),
        "{:?}",
        idle_since.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_tunnels_are_counted() {
    use hypache::config::{Config, RedisAddr, RedisConfig};
    let redis = RedisServer::start();
    let (backend, _) = echo_backend().await;
    redis.set_frontend("count.test", &[&format!("http://{backend}")]);
    let config = Config::new(
        "127.0.0.1:0".parse().unwrap(),
        RedisConfig {
            addr: RedisAddr::Tcp {
                host: "127.0.0.1".into(),
                port: redis.port(),
            },
            password: None,
            username: None,
            tls: None,
            db: 0,
            sentinel: None,
        },
    );
    let server = hypache::Server::bind(config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let tunnels = server.tunnels();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let settle = |want: usize| {
        let tunnels = tunnels.clone();
        async move {
            let deadline = std::time::Instant::now() + secs(5);
            while tunnels.count() != want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "open tunnels stayed at {} instead of {want}",
                    tunnels.count()
                );
                tokio::time::sleep(millis(10)).await;
            }
        }
    };
    assert_eq!(tunnels.count(), 0);
    let mut first = connect_ws(addr, "count.test").await;
    let second = connect_ws(addr, "count.test").await;
    settle(2).await;
    // The client's close frame is echoed by the backend, which then closes: the tunnel ends with it.
    first.close(None).await.unwrap();
    while first.next().await.is_some() {}
    settle(1).await;
    // A client that simply goes away ends its tunnel too.
    drop(second);
    settle(0).await;
    let _ = stop.send(());
    serving.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_tunnel_is_a_tunnel_not_a_connection_in_the_metrics() {
    let redis = RedisServer::start();
    let (backend, _seen) = echo_backend().await;
    redis.set_frontend("ws.test", &[&format!("http://{backend}")]);
    let proxy = Proxy::start(&redis, &["--metrics-address", "127.0.0.1:0"]);
    let metrics = proxy.metrics_addr();
    let value = move |series: &'static str| {
        tokio::task::spawn_blocking(move || support::metrics::scrape(metrics).value(series))
    };
    let url = format!("ws://{}/chat", proxy.addr());
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request
        .headers_mut()
        .insert("host", "ws.test".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::text("ping")).await.unwrap();
    ws.next().await.unwrap().unwrap();
    assert_eq!(value("hypache_websocket_tunnels_open").await.unwrap(), 1.0);
    // PlanB's gauge goes down when a connection is hijacked for a tunnel.
    assert_eq!(
        value("planb_reverseproxy_connections_current_open")
            .await
            .unwrap(),
        0.0
    );
    // WebSocket requests are not counted as responses.
    assert_eq!(
        value("planb_reverseproxy_http_request_duration_seconds_count")
            .await
            .unwrap(),
        0.0
    );
    ws.close(None).await.unwrap();
    drop(ws);
    let deadline = std::time::Instant::now() + SOON;
    while value("hypache_websocket_tunnels_open").await.unwrap() != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the tunnel is still counted"
        );
        tokio::time::sleep(millis(10)).await;
    }
}

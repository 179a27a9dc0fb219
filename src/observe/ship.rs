//! `--access-log-url URL`: access-log lines shipped as newline-delimited JSON, POSTed in batches every 2 s with
//! `Content-Type: text/plain` (httprouter's `-logurl`, made for bulk endpoints such as Loggly's).
//!
//! Shipping never holds a request: the log writer hands lines over with a non-blocking send into a bounded
//! queue. A full queue (the URL is slow) or a batch the URL refuses (it is down, or answers non-2xx) costs
//! those lines, counted in `hypache_log_lines_dropped_total{log="shipping"}`; nothing is retried, as in
//! httprouter. When the access log closes (shutdown), what is queued is sent in one last batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How often a batch is sent.
pub const BATCH_EVERY: Duration = Duration::from_secs(2);
/// Lines waiting to be sent at most; more are dropped (and counted).
const QUEUE: usize = 10_000;
/// How long one POST may take, connect included.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// The sending side, held by the access log's writer.
#[derive(Clone)]
pub struct Shipper {
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
}

/// Where batches go.
#[derive(Debug, Clone)]
struct Endpoint {
    https: bool,
    host: String,
    port: u16,
    /// `Host` header value (with the port when it is not the scheme's).
    authority: String,
    path_and_query: String,
}

fn endpoint(url: &url::Url) -> Endpoint {
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => String::new(),
    };
    let authority = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    Endpoint {
        https: url.scheme() == "https",
        host,
        port: url.port_or_known_default().unwrap_or(80),
        authority,
        path_and_query,
    }
}

impl Shipper {
    /// Start shipping to `url` (checked by `config::log_url`) on the current runtime. The task ends, after a
    /// last batch, once every [`Shipper`] clone is dropped; await the handle (bounded) at shutdown.
    pub fn start(url: &url::Url) -> (Shipper, JoinHandle<()>) {
        let endpoint = endpoint(url);
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(endpoint, rx, dropped.clone()));
        (Shipper { tx, dropped }, task)
    }

    /// Queue one line (without its newline); never waits.
    pub fn ship(&self, line: String) {
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped so far (queue full, or a batch the URL did not take).
    pub fn dropped(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

async fn run(endpoint: Endpoint, mut rx: mpsc::Receiver<String>, dropped: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(BATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => batch.push(line),
                None => {
                    // Every sender is gone (the access log closed): one last batch.
                    send(&endpoint, std::mem::take(&mut batch), &dropped).await;
                    return;
                }
            },
            _ = tick.tick() => send(&endpoint, std::mem::take(&mut batch), &dropped).await,
        }
    }
}

/// POST `lines`, newline-delimited; on any failure they are counted as dropped.
async fn send(endpoint: &Endpoint, lines: Vec<String>, dropped: &AtomicU64) {
    if lines.is_empty() {
        return;
    }
    let count = lines.len() as u64;
    let mut body = lines.join("\n");
    body.push('\n');
    match tokio::time::timeout(POST_TIMEOUT, post(endpoint, body)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            dropped.fetch_add(count, Ordering::Relaxed);
            tracing::warn!("--access-log-url: {count} lines dropped: {e}");
        }
        Err(_) => {
            dropped.fetch_add(count, Ordering::Relaxed);
            tracing::warn!(
                "--access-log-url: {count} lines dropped: no answer within {POST_TIMEOUT:?}"
            );
        }
    }
}

async fn post(endpoint: &Endpoint, body: String) -> Result<(), String> {
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| format!("connect {}:{}: {e}", endpoint.host, endpoint.port))?;
    let _ = tcp.set_nodelay(true);
    let request = Request::post(endpoint.path_and_query.as_str())
        .header(header::HOST, endpoint.authority.as_str())
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let status = if endpoint.https {
        let config = crate::upstream::tls::backend_client_config(None)?;
        let name = ServerName::try_from(endpoint.host.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", endpoint.host))?;
        exchange(tls, request).await?
    } else {
        exchange(tcp, request).await?
    };
    match status.is_success() {
        true => Ok(()),
        false => Err(format!("the URL answered {status}")),
    }
}

async fn exchange<IO>(io: IO, request: Request<Full<Bytes>>) -> Result<http::StatusCode, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.status())
}

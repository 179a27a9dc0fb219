//! One HTTP/1.1 exchange over a fresh connection, for requests the proxy makes on its own behalf (active
//! health probes, access-log shipping): never pooled, nothing shared with the request path.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HOST};
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

/// Send `method` to `url` with `headers` (besides `Host`) and `body`; `https://` URLs go over TLS verified
/// against the web roots. Connecting (TLS included) must finish within `dial`.
pub async fn send(
    url: &url::Url,
    method: Method,
    headers: &[(HeaderName, &str)],
    body: Bytes,
    dial: Duration,
) -> Result<Response<Incoming>, String> {
    let host = url
        .host_str()
        .ok_or("no host")?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let authority = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut request = Request::builder()
        .method(method)
        .uri(target)
        .header(HOST, authority);
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let connect = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        Ok::<_, String>(tcp)
    };
    let tcp = tokio::time::timeout(dial, connect)
        .await
        .map_err(|_| "dial timeout".to_string())??;
    if url.scheme() != "https" {
        return exchange(tcp, request).await;
    }
    let config = super::tls::backend_client_config(None)?;
    let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(
        dial,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| "TLS handshake timeout".to_string())?
    .map_err(|e| format!("TLS with {host}: {e}"))?;
    exchange(tls, request).await
}

async fn exchange<IO>(io: IO, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

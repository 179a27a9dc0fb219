//! The admin listener (`--admin-address`): a JSON API to see and change what the proxy routes, a live
//! dashboard, and the probes `/healthz` and `/ready`, on a listener of its own.
//!
//! It never answers on the proxy's listeners, and it runs on the control runtime, not on the workers that
//! serve traffic: what it costs the request path is the figures it reads, which the proxy records only
//! while it is on (`observe::window`). No cookies and no CORS: a write needs the `Authorization` header
//! (with `--admin-token`), which a page on another origin cannot send.
//!
//! - [`paths`]: which endpoint a path names (frontend keys percent-decoded).
//! - [`auth`]: the Bearer token, compared in constant time.
//! - [`api`]: the `/api/v1/` endpoints and the probes.
//! - [`dashboard`]: the page, its script and style, embedded in the binary.
//! - [`error`]: every error and the one function that turns it into a JSON answer.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod paths;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::proxy::Proxy;
use error::AdminError;
use paths::Endpoint;

/// A request head must arrive within this, so an idle client cannot hold a connection open for ever.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Bind the admin listener (a failure is fatal at start-up, as for the proxy's listeners).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("listen tcp {addr} (--admin-address): {e}"))
}

/// What every admin request reads: the proxy's state and the token.
pub struct Admin {
    pub(crate) proxy: Arc<Proxy>,
    token: Option<auth::Token>,
}

/// Serve the admin API and the dashboard on `listener` for as long as the task runs, on the calling (control)
/// runtime. Announces `Serving admin API on <addr>...` on stderr.
pub fn start(listener: TcpListener, proxy: Arc<Proxy>) {
    let token = proxy.config.admin.token.as_deref().map(auth::Token::new);
    if let Ok(addr) = listener.local_addr() {
        crate::observe::event_log::planb_line(
            tracing::Level::INFO,
            &format!("Serving admin API on {addr}..."),
        );
    }
    let admin = Arc::new(Admin { proxy, token });
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("admin listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let admin = admin.clone();
                    async move { Ok::<_, std::convert::Infallible>(admin.answer(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

impl Admin {
    /// One request: the dashboard and the probes for anyone, the API behind the token.
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let endpoint = paths::parse(&path);
        if endpoint.is_api(&path) {
            if let Err(denied) = auth::check(self.token.as_ref(), req.headers()) {
                return AdminError::Denied(denied).response();
            }
        }
        let result = match (req.method().clone(), endpoint) {
            (Method::GET | Method::HEAD, Endpoint::Asset(asset)) => Ok(dashboard::serve(asset)),
            (Method::GET | Method::HEAD, Endpoint::Healthz) => {
                Ok(json(StatusCode::OK, &serde_json::json!({ "status": "ok" })))
            }
            (Method::GET | Method::HEAD, Endpoint::Ready) => self.ready().await,
            (Method::GET, Endpoint::Frontends) => self.list(req.uri().query()).await,
            (Method::GET, Endpoint::Frontend(key)) => self.show(&key).await,
            (Method::PUT, Endpoint::Frontend(key)) => self.put(&key, req).await,
            (Method::DELETE, Endpoint::Frontend(key)) => self.delete(&key).await,
            (Method::POST, Endpoint::Dead(key, index)) => self.mark(&key, index, true).await,
            (Method::DELETE, Endpoint::Dead(key, index)) => self.mark(&key, index, false).await,
            (Method::GET, Endpoint::Stats) => Ok(self.stats()),
            (_, Endpoint::NotFound) => Err(AdminError::NotFound(format!("no such path: {path}"))),
            (_, endpoint) => Err(AdminError::MethodNotAllowed(endpoint.allow())),
        };
        // hyper leaves the body out of an answer to HEAD.
        result.unwrap_or_else(AdminError::response)
    }
}

/// A JSON answer that no cache keeps.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

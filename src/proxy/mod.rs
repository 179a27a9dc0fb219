//! The request pipeline (docs/architecture.md#a-request-phase-by-phase): Host → special hosts → route lookup → backend selection → forward
//! (with failover on connection failures) → relay → access log.

mod dead;
mod forward;
pub mod headers;
pub mod reject;
pub mod response;
mod select;
pub mod upgrade;

pub use dead::{node_href, HcheckerPing, HCHECKER_FRESH};
pub use select::PassthroughError;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderValue};
use http::{Request, Response, Version};

use crate::body::{ClientBody, RequestBody};
use crate::config::{Config, ResponseStyle};
use crate::observe::access_log::{AccessEntry, Log, PendingEntry};
use crate::observe::inflight::InflightGuard;
use crate::observe::telemetry::Telemetry;
use crate::policy::Policies;
use crate::proxy::reject::Reject;
use crate::proxy::response::ProxyBody;
use crate::routing::{LookupError, Router};
use crate::rt::tracker::Tracker;
use crate::store::RedisClient;
use crate::upstream::Upstream;

use headers::{X_DEBUG_BACKEND_ID, X_DEBUG_BACKEND_URL, X_DEBUG_FRONTEND_KEY, X_DEBUG_ROUTER};

/// Shared state of the request pipeline; one per process.
pub struct Proxy {
    pub(crate) config: Config,
    pub(crate) router: Router,
    pub(crate) upstream: Upstream,
    /// Guards, rate limits and circuit breakers (the policy layer).
    pub(crate) policies: Policies,
    pub(crate) write: RedisClient,
    pub(crate) access_log: Log,
    pub(crate) error_log: Log,
    /// Open WebSocket tunnels, so that shutdown can wait for them.
    pub(crate) tunnels: Arc<Tracker>,
    /// Metrics and the in-flight registry (see `ops`).
    pub(crate) telemetry: Telemetry,
    /// `--request-id-header` in Go's canonical form (`X-Request-Id`), as the logs print it; empty without one.
    /// Computed once, not per request.
    pub(crate) request_id_label: String,
    /// The last look at `hchecker_ping` (see [`crate::config::FailurePolicy::respect_hchecker_ping`]).
    pub(crate) hchecker: Arc<HcheckerPing>,
    /// The shadows of mirrored frontends (`mirror:<key>`).
    pub(crate) mirrors: Arc<crate::mirror::Mirrors>,
}

/// The client side of one request.
#[derive(Debug, Clone, Copy)]
pub struct Downstream {
    pub peer: SocketAddr,
    /// The connection is TLS (for X-Forwarded-Proto).
    pub tls: bool,
    /// The request head had both Content-Length and Transfer-Encoding (see `head_scan`).
    pub conflicting_length: bool,
}

/// What is known about a request while it is handled: it feeds the debug headers, the access log and the
/// error log.
struct Ctx {
    host: String,
    path: String,
    request_id: String,
    key: String,
    backend_url: String,
    backend_id: usize,
    /// The identifier of the matched frontend (Hipache's `x-debug-vhost`).
    identifier: String,
    debug: bool,
    started: Instant,
    /// This request's entry in the in-flight registry (the SIGUSR1 dump).
    inflight: InflightGuard,
    /// A backend was selected for it (Hipache's access log has only those requests).
    selected: bool,
    /// A frontend matched (the admin API's figures count only those requests).
    routed: bool,
}

impl Proxy {
    /// WebSocket tunnels open right now.
    pub fn open_tunnels(&self) -> usize {
        self.tunnels.count()
    }

    /// Handle one request and produce its response. Never fails: every failure is a [`Reject`].
    pub async fn handle(
        &self,
        req: Request<ClientBody>,
        down: Downstream,
    ) -> (
        Response<ProxyBody>,
        Option<InflightGuard>,
        Option<Box<PendingEntry>>,
    ) {
        // Streamed as it arrives, unless a guard has to read it first (`sign_body`).
        // Boxed, as the access entry is borrowed: both would otherwise be copied into each nested future's state
        // (and rustc keeps an async fn's arguments twice), which made the request future about 6 KB to memcpy.
        // With an inactivity timeout (Hipache's `tcpTimeout`) the body notes when it last moved.
        let mut req = Box::new(
            req.map(|body| match self.config.timeouts.request_is_inactivity {
                true => RequestBody::Watched(body, Arc::default()),
                false => RequestBody::Streaming(body),
            }),
        );
        if down.conflicting_length {
            return (
                Reject::BadRequest("both Content-Length and Transfer-Encoding").response(),
                None,
                None,
            );
        }
        let debug = match self.config.responses {
            ResponseStyle::Planb | ResponseStyle::Httprouter => req
                .headers()
                .get(X_DEBUG_ROUTER)
                .is_some_and(|v| !v.is_empty()),
            ResponseStyle::Hipache(_) => req.headers().contains_key(X_DEBUG),
        };
        let host = match request_host(&req) {
            Ok(host) => host,
            Err(reject) => return (self.reject(reject, debug), None, None),
        };
        match self.config.responses {
            ResponseStyle::Planb | ResponseStyle::Httprouter
                if host == "__ping__" && req.uri().path() == "/" =>
            {
                let answer = match Box::pin(self.router.ping()).await {
                    Ok(()) => Reject::PingOk.response(),
                    Err(e) => Reject::PingFailed(e.0).response(),
                };
                return (answer, None, None);
            }
            // Hipache's own liveness probe: answered without Redis, whatever the path.
            ResponseStyle::Hipache(_) if host == "__ping__" => {
                return (self.reject(Reject::PingOk, false), None, None);
            }
            _ => {}
        }
        let inflight = self
            .telemetry
            .inflight
            .begin(req.method(), &host, req.uri().path());
        let request_id = self.request_id(&mut req);
        let mut ctx = Ctx {
            path: req.uri().path().to_string(),
            request_id,
            key: String::new(),
            backend_url: String::new(),
            backend_id: 0,
            identifier: String::new(),
            debug,
            started: Instant::now(),
            host,
            inflight,
            selected: false,
            routed: false,
        };
        if upgrade::is_websocket(&req) {
            return (
                Box::pin(self.websocket(*req, down, &mut ctx)).await,
                None,
                None,
            );
        }
        let mut entry = self.access_entry(&req, &down, &ctx);
        let http1 = req.version() < Version::HTTP_2;
        let (resp, backend_time) = self.forward(req, down, &mut ctx, &mut entry).await;
        let (resp, pending) = self.finish(resp, backend_time, &ctx, entry, http1);
        // The registration lasts until the server has written the body out.
        (resp, Some(ctx.inflight), pending)
    }

    /// The access-log record of a request, as far as the request tells. Without an access log only what the
    /// metrics read is filled in, so that no request pays for strings nobody writes.
    fn access_entry(
        &self,
        req: &Request<RequestBody>,
        down: &Downstream,
        ctx: &Ctx,
    ) -> AccessEntry {
        if !self.access_log.enabled() {
            return AccessEntry::default();
        }
        AccessEntry {
            time: SystemTime::now(),
            client_ip: Some(down.peer.ip()),
            method: req.method().as_str().to_string(),
            path: percent_encoding::percent_decode_str(req.uri().path())
                .decode_utf8_lossy()
                .into_owned(),
            url: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            proto: proto(req.version()),
            status: 0,
            content_length: 0,
            referer: header_text(req, header::REFERER),
            user_agent: header_text(req, header::USER_AGENT),
            request_id_header: self.request_id_label.clone(),
            request_id: ctx.request_id.clone(),
            backend_key: String::new(),
            identifier: String::new(),
            backend_url: String::new(),
            forwarded_for: String::new(),
            total: Duration::ZERO,
            backend: Duration::ZERO,
        }
    }
    /// The route for the request's Host, with the context filled in; the lookup's failure as a [`Reject`].
    async fn lookup(&self, ctx: &mut Ctx) -> Result<std::sync::Arc<crate::routing::Route>, Reject> {
        let lookup_started = Instant::now();
        let looked_up = self.router.lookup(&ctx.host, &ctx.path).await;
        self.telemetry
            .metrics
            .redis_lookup(lookup_started.elapsed());
        self.looked_up(ctx, looked_up)
    }

    /// A lookup's result with the context filled in, and its failure logged and turned into a [`Reject`].
    fn looked_up(
        &self,
        ctx: &mut Ctx,
        looked_up: Result<std::sync::Arc<crate::routing::Route>, LookupError>,
    ) -> Result<std::sync::Arc<crate::routing::Route>, Reject> {
        match looked_up {
            Ok(route) => {
                ctx.key = route.key.clone();
                ctx.identifier = route.identifier.clone();
                ctx.routed = true;
                Ok(route)
            }
            Err(LookupError::NoRoute { key }) => {
                ctx.key = key;
                self.log_error(ctx, "?", "no backends registered for host");
                Err(Reject::NoRoute)
            }
            Err(LookupError::Store(e)) => {
                ctx.key = ctx.host.clone();
                self.log_error(ctx, "?", &e.0);
                Err(Reject::Unavailable)
            }
        }
    }

    /// A response of our own, in the configured style.
    pub(crate) fn reject(&self, reject: Reject, debug: bool) -> Response<ProxyBody> {
        reject.response_in(&self.config.responses, debug)
    }

    /// Strip the response's hop-by-hop headers, add debug headers, write the access-log line.
    fn finish(
        &self,
        mut resp: Response<ProxyBody>,
        backend_time: Duration,
        ctx: &Ctx,
        mut entry: AccessEntry,
        http1: bool,
    ) -> (Response<ProxyBody>, Option<Box<PendingEntry>>) {
        let is_upstream = matches!(resp.body(), ProxyBody::Upstream(_) | ProxyBody::Teed(..));
        if is_upstream {
            headers::remove_hop_by_hop(resp.headers_mut(), false);
            // The client gets our HTTP version, not the backend's (hyper downgrades for HTTP/1.0 clients).
            *resp.version_mut() = Version::HTTP_11;
        }
        match &self.config.responses {
            ResponseStyle::Planb if ctx.debug => {
                let h = resp.headers_mut();
                if let Ok(url) = HeaderValue::from_str(&ctx.backend_url) {
                    h.insert(X_DEBUG_BACKEND_URL, url);
                }
                h.insert(X_DEBUG_BACKEND_ID, HeaderValue::from(ctx.backend_id));
                if let Ok(key) = HeaderValue::from_str(&ctx.key) {
                    h.insert(X_DEBUG_FRONTEND_KEY, key);
                }
            }
            // Hipache's set, on backend answers only (its own answers carry `x-debug-error`).
            ResponseStyle::Hipache(_) if ctx.debug && is_upstream => {
                let h = resp.headers_mut();
                let ms = |d: Duration| HeaderValue::from(d.as_millis() as u64);
                h.insert(
                    "x-debug-version-hipache",
                    HeaderValue::from_static(crate::proxy::reject::HIPACHE_DEBUG_VERSION),
                );
                if let Ok(url) = HeaderValue::from_str(&node_href(&ctx.backend_url)) {
                    h.insert(X_DEBUG_BACKEND_URL, url);
                }
                h.insert(X_DEBUG_BACKEND_ID, HeaderValue::from(ctx.backend_id));
                if let Ok(vhost) = HeaderValue::from_str(&ctx.identifier) {
                    h.insert("x-debug-vhost", vhost);
                }
                let hostname = crate::routing::hipache_hostname(&ctx.host);
                if let Ok(key) = HeaderValue::from_str(&hostname) {
                    h.insert(X_DEBUG_FRONTEND_KEY, key);
                }
                h.insert("x-debug-time-total", ms(ctx.started.elapsed()));
                h.insert("x-debug-time-backend", ms(backend_time));
            }
            _ => {}
        }
        entry.status = resp.status().as_u16();
        entry.content_length = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(-1);
        entry.total = ctx.started.elapsed();
        entry.backend = backend_time;
        if is_upstream && self.telemetry.metrics.per_backend() {
            entry.backend_url.clone_from(&ctx.backend_url);
        }
        entry.time = SystemTime::now();
        ctx.inflight.responding();
        self.telemetry.metrics.request_logged(&entry);
        if let (Some(window), true) = (&self.telemetry.window, ctx.routed) {
            let backend = ctx.selected.then_some(ctx.backend_url.as_str());
            let at = ctx.started + entry.total;
            window.record(&ctx.key, backend, entry.status, entry.total, at);
        }
        let rules = self.config.access_log_rules;
        if rules.only_selected && !ctx.selected {
            return (resp, None);
        }
        // The bytes the response put on the client socket are known once it has left. HTTP/2 streams share
        // one socket, so they keep the declared length.
        if rules.socket_bytes && http1 {
            return (resp, self.access_log.pending(entry));
        }
        self.access_log.access_entry(entry);
        (resp, None)
    }

    /// Take the request id from the configured header, or make one (a v4 UUID) when it is missing or empty.
    fn request_id<B>(&self, req: &mut Request<B>) -> String {
        let Some(name) = &self.config.request_id_header else {
            return String::new();
        };
        match req.headers().get(name).map(|v| v.as_bytes()) {
            Some(given) if !given.is_empty() => String::from_utf8_lossy(given).into_owned(),
            _ => {
                let id = uuid::Uuid::new_v4().to_string();
                if let Ok(value) = HeaderValue::from_str(&id) {
                    req.headers_mut().insert(name.clone(), value);
                }
                id
            }
        }
    }

    fn error_prefix(&self, ctx: &Ctx, backend: &str) -> String {
        format!(
            "ERROR in {} -> {} - {} - {}:{} - ",
            ctx.key, backend, ctx.path, self.request_id_label, ctx.request_id
        )
    }

    /// `ERROR in <key> -> <backend or ?> - <path> - <ridHeader>:<rid> - <message>` (docs/compat/planb.md#error-log).
    fn log_error(&self, ctx: &Ctx, backend: &str, message: &str) {
        let mut line = self.error_prefix(ctx, backend);
        line.push_str(message);
        self.error_log.line(line);
    }
}

/// The Host the request is routed by: an absolute-form URI's authority wins over the Host header (Go's rule).
fn request_host<B>(req: &Request<B>) -> Result<String, Reject> {
    if let Some(authority) = req.uri().authority() {
        return Ok(authority.as_str().to_string());
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(Reject::BadRequest("too many Host headers")),
        (Some(host), None) => host,
        (None, _) if req.version() == Version::HTTP_10 => return Ok(String::new()),
        (None, _) => return Err(Reject::MissingHost),
    };
    if !headers::valid_host(host.as_bytes()) {
        return Err(Reject::BadRequest("malformed Host header"));
    }
    Ok(String::from_utf8_lossy(host.as_bytes()).into_owned())
}

fn proto(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn header_text<B>(req: &Request<B>, name: header::HeaderName) -> String {
    req.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// Go's canonical header form: `x-request-id` → `X-Request-Id`.
pub fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

/// Any `X-Debug` request header turns on Hipache's debug response headers.
const X_DEBUG: http::HeaderName = http::HeaderName::from_static("x-debug");

/// Keep the proxy alive in an `Arc` for the server's connection tasks.
pub type SharedProxy = Arc<Proxy>;

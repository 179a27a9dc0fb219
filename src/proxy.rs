//! The request pipeline (DESIGN §1): Host → special hosts → route lookup → backend selection → forward
//! (with failover on connection failures) → relay → access log.

pub mod headers;
pub mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;

use crate::access_log::{AccessEntry, Log};
use crate::body::{ProxyBody, RequestBody};
use crate::config::Config;
use crate::error::Reject;
use crate::inflight::InflightGuard;
use crate::metrics::DeadCause;
use crate::ops::Telemetry;
use crate::policy::{Outcome, Pass, Policies};
use crate::route::{LookupError, Route, Router};
use crate::server::Tracker;
use crate::store::RedisClient;
use crate::upstream::{TargetError, Upstream, UpstreamError};

use headers::{
    X_DEBUG_BACKEND_ID, X_DEBUG_BACKEND_URL, X_DEBUG_FRONTEND_KEY, X_DEBUG_ROUTER,
    X_FORWARDED_PROTO,
};

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
    debug: bool,
    started: Instant,
    /// This request's entry in the in-flight registry (the SIGUSR1 dump).
    inflight: InflightGuard,
}

impl Proxy {
    /// WebSocket tunnels open right now.
    pub fn open_tunnels(&self) -> usize {
        self.tunnels.count()
    }

    /// Handle one request and produce its response. Never fails: every failure is a [`Reject`].
    pub async fn handle(&self, req: Request<Incoming>, down: Downstream) -> Response<ProxyBody> {
        // Streamed as it arrives, unless a guard has to read it first (`sign_body`).
        let mut req = req.map(RequestBody::Streaming);
        if down.conflicting_length {
            return Reject::BadRequest("both Content-Length and Transfer-Encoding").response();
        }
        let host = match request_host(&req) {
            Ok(host) => host,
            Err(reject) => return reject.response(),
        };
        if host == "__ping__" && req.uri().path() == "/" {
            return match self.router.store().ping().await {
                Ok(()) => Reject::PingOk.response(),
                Err(e) => Reject::PingFailed(e.0).response(),
            };
        }
        let inflight = self
            .telemetry
            .inflight
            .begin(req.method(), &host, req.uri().path());
        let request_id = self.request_id(&mut req);
        let debug = req
            .headers()
            .get(X_DEBUG_ROUTER)
            .is_some_and(|v| !v.is_empty());
        let mut ctx = Ctx {
            path: req.uri().path().to_string(),
            request_id,
            key: String::new(),
            backend_url: String::new(),
            backend_id: 0,
            debug,
            started: Instant::now(),
            host,
            inflight,
        };
        if upgrade::is_websocket(&req) {
            return self.websocket(req, down, &mut ctx).await;
        }
        let entry = AccessEntry {
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
            referer: header_text(&req, header::REFERER),
            user_agent: header_text(&req, header::USER_AGENT),
            request_id_header: self.request_id_label.clone(),
            request_id: ctx.request_id.clone(),
            backend_key: String::new(),
            identifier: String::new(),
            forwarded_for: String::new(),
            total: Duration::ZERO,
            backend: Duration::ZERO,
        };
        let (resp, backend_time, entry) = self.forward(req, down, &mut ctx, entry).await;
        let mut resp = self.finish(resp, backend_time, &ctx, entry);
        // The registration lasts until the server has written the body out.
        resp.extensions_mut().insert(ctx.inflight.into_ticket());
        resp
    }

    async fn forward(
        &self,
        mut req: Request<RequestBody>,
        down: Downstream,
        ctx: &mut Ctx,
        mut entry: AccessEntry,
    ) -> (Response<ProxyBody>, Duration, AccessEntry) {
        let lookup_started = Instant::now();
        let looked_up = self.router.lookup(&ctx.host).await;
        self.telemetry
            .metrics
            .redis_lookup(lookup_started.elapsed());
        let route = match looked_up {
            Ok(route) => route,
            Err(LookupError::NoRoute { key }) => {
                ctx.key = key;
                self.log_error(ctx, "?", "no backends registered for host");
                return (Reject::NoRoute.response(), Duration::ZERO, entry);
            }
            Err(LookupError::Store(e)) => {
                ctx.key = ctx.host.clone();
                self.log_error(ctx, "?", &e.0);
                return (Reject::Unavailable.response(), Duration::ZERO, entry);
            }
        };
        ctx.key = route.key.clone();
        entry.backend_key = route.key.clone();
        entry.identifier = route.identifier.clone();
        let log = |m: &str| self.log_error(ctx, "?", m);
        let admitted = self
            .policies
            .admit(&route, &mut req, &ctx.host, down.peer.ip(), &log)
            .await;
        let pass = match admitted {
            Ok(pass) => pass,
            Err(reject) => return (reject.response(), Duration::ZERO, entry),
        };
        let rate = pass.rate;
        let (mut resp, backend_time, entry) = self.relay(req, down, ctx, entry, route, pass).await;
        // The frontend's rate limit as it stands after this request, on whatever answer it got.
        if let Some(rate) = rate {
            rate.insert(resp.headers_mut());
        }
        (resp, backend_time, entry)
    }

    /// Select a backend, rewrite the request for it and send it, failing over on connection failures.
    async fn relay(
        &self,
        mut req: Request<RequestBody>,
        down: Downstream,
        ctx: &mut Ctx,
        mut entry: AccessEntry,
        mut route: Arc<Route>,
        pass: Pass,
    ) -> (Response<ProxyBody>, Duration, AccessEntry) {
        let start = self.router.next_start(&ctx.host, route.backends.len());
        let Some(mut index) = pass.first_live(&route, start) else {
            self.log_error(ctx, "?", "all backends are dead");
            return (Reject::AllDead.response(), Duration::ZERO, entry);
        };

        // The rewrite that does not depend on the backend is done once, before the first attempt.
        let parts = req.headers_mut();
        headers::remove_hop_by_hop(parts, true);
        entry.forwarded_for = headers::append_forwarded_for(parts, Some(down.peer.ip()));
        parts.remove(X_DEBUG_ROUTER);
        if !parts.contains_key(X_FORWARDED_PROTO) {
            let proto = if down.tls { "https" } else { "http" };
            parts.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
        if req.version() == Version::HTTP_2 {
            headers::join_cookies(req.headers_mut());
        }
        *req.version_mut() = Version::HTTP_11;
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        *req.uri_mut() = path_and_query.parse().unwrap_or_default();

        loop {
            ctx.backend_id = index;
            ctx.backend_url = route.backends[index].clone();
            ctx.inflight.route(&ctx.key, &ctx.backend_url);
            let target = match route.target(index) {
                Ok(target) => target,
                Err(TargetError::Empty) => {
                    return (Reject::NoRoute.response(), Duration::ZERO, entry)
                }
                Err(TargetError::Invalid(why)) => {
                    self.log_error(
                        ctx,
                        &ctx.backend_url,
                        &format!("error in backend request: {why}"),
                    );
                    return (Reject::Unavailable.response(), Duration::ZERO, entry);
                }
            };
            headers::set_host(req.headers_mut(), &target, &ctx.host);
            let backend_started = Instant::now();
            let sent = match self.config.timeouts.request {
                Some(limit) => tokio::time::timeout(limit, self.upstream.send(&target, req)).await,
                None => Ok(self.upstream.send(&target, req).await),
            };
            let error = match sent {
                Ok(Ok(resp)) => {
                    let outcome = Outcome::Status(resp.status().as_u16());
                    pass.record(&route, index, outcome, &|m| {
                        self.log_error(ctx, &ctx.backend_url, m)
                    });
                    let resp = resp.map(ProxyBody::Upstream);
                    return (resp, backend_started.elapsed(), entry);
                }
                Err(_elapsed) => {
                    pass.record(&route, index, Outcome::Timeout, &|m| {
                        self.log_error(ctx, &ctx.backend_url, m)
                    });
                    let message = format!(
                        "request timeout after {:?}: net/http: request canceled",
                        ctx.started.elapsed()
                    );
                    self.log_error(ctx, &ctx.backend_url, &message);
                    return (
                        Reject::Unavailable.response(),
                        backend_started.elapsed(),
                        entry,
                    );
                }
                Ok(Err((error, back))) => (error, back),
            };
            let (error, back) = error;
            pass.record(&route, index, Outcome::from_error(&error), &|m| {
                self.log_error(ctx, &ctx.backend_url, m)
            });
            let dead = error.dead();
            let message = match (&error, dead) {
                (UpstreamError::ConnectTimeout(m), _) => format!("{m} *DEAD*"),
                (_, true) => format!("error in backend request: {error} *DEAD*"),
                (_, false) => format!("error in backend request: {error}"),
            };
            self.log_error(ctx, &ctx.backend_url, &message);
            if dead {
                self.mark_dead(ctx, route.backends.len(), &error).await;
                std::sync::Arc::make_mut(&mut route).dead[index] = true;
            }
            let next = match back {
                Some(back) if dead && self.config.extensions.failover => {
                    pass.first_live(&route, index + 1).map(|next| (next, back))
                }
                _ => None,
            };
            match next {
                Some((next, back)) => {
                    self.telemetry.metrics.failover();
                    index = next;
                    req = back;
                }
                None => {
                    return (
                        Reject::Unavailable.response(),
                        backend_started.elapsed(),
                        entry,
                    )
                }
            }
        }
    }

    /// Strip the response's hop-by-hop headers, add debug headers, write the access-log line.
    fn finish(
        &self,
        mut resp: Response<ProxyBody>,
        backend_time: Duration,
        ctx: &Ctx,
        mut entry: AccessEntry,
    ) -> Response<ProxyBody> {
        let is_upstream = matches!(resp.body(), ProxyBody::Upstream(_));
        if is_upstream {
            headers::remove_hop_by_hop(resp.headers_mut(), false);
            // The client gets our HTTP version, not the backend's (hyper downgrades for HTTP/1.0 clients).
            *resp.version_mut() = Version::HTTP_11;
        }
        if ctx.debug {
            let h = resp.headers_mut();
            if let Ok(url) = HeaderValue::from_str(&ctx.backend_url) {
                h.insert(X_DEBUG_BACKEND_URL, url);
            }
            h.insert(X_DEBUG_BACKEND_ID, HeaderValue::from(ctx.backend_id));
            if let Ok(key) = HeaderValue::from_str(&ctx.key) {
                h.insert(X_DEBUG_FRONTEND_KEY, key);
            }
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
        entry.time = SystemTime::now();
        ctx.inflight.responding();
        self.telemetry.metrics.request_logged(&entry);
        self.access_log.access_entry(entry);
        resp
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

    /// Passive dead mark: drop the cached route, then write Redis off the request path. A Redis failure is
    /// logged, nothing else; the mark is counted in the metrics either way (as PlanB counts it).
    async fn mark_dead(&self, ctx: &Ctx, count: usize, error: &UpstreamError) {
        let cause = DeadCause::of(error);
        if cause.is_some() {
            self.telemetry.metrics.connect_failed();
        }
        self.telemetry.metrics.mark_dead(cause);
        let write = self.write.clone();
        let error_log = self.error_log.clone();
        let ttl = self.config.dead_backend_ttl;
        let (key, url, index) = (ctx.key.clone(), ctx.backend_url.clone(), ctx.backend_id);
        let prefix = self.error_prefix(ctx, &ctx.backend_url);
        // Forget the cached route now, and again once the mark is in Redis: a lookup in between may have
        // cached the dead set without it.
        self.router.forget(&ctx.host, &key).await;
        let forget_again = self.router.forget(&ctx.host, &key);
        tokio::spawn(async move {
            if let Err(e) = write.mark_dead(&key, index, &url, count, ttl).await {
                error_log.line(format!("{prefix}{e}"));
            }
            forget_again.await;
        });
    }

    fn error_prefix(&self, ctx: &Ctx, backend: &str) -> String {
        format!(
            "ERROR in {} -> {} - {} - {}:{} - ",
            ctx.key, backend, ctx.path, self.request_id_label, ctx.request_id
        )
    }

    /// `ERROR in <key> -> <backend or ?> - <path> - <ridHeader>:<rid> - <message>` (PlanB §9.2).
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

/// Keep the proxy alive in an `Arc` for the server's connection tasks.
pub type SharedProxy = Arc<Proxy>;

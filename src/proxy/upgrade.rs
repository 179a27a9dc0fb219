//! WebSocket tunnels (docs/compat/planb.md#websocket): the upgrade request goes to the backend over a fresh connection, the
//! backend's `101` is relayed, and then bytes are copied both ways until either side closes ([`tunnel`]).
//!
//! As in PlanB there is no access-log line, the backend sees `Host: <backend host:port>` and the upgrade headers
//! intact, and any failure before the tunnel is up is a 502 with body `\n`. Beyond PlanB, a backend that refuses
//! the connection is marked dead and the next live one is tried, through the same selection routine as plain
//! HTTP (`select`, so a backend the breaker ejected gets no tunnel either); an `https://` backend is reached
//! over TLS (PlanB dialed it in clear); and `--websocket-idle-timeout` closes tunnels nobody uses.

use std::sync::{Arc, Mutex};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;

use super::select::Exchange;
use super::{headers, Ctx, Downstream, Proxy};
use crate::body::RequestBody;
use crate::config::{ForwardingPolicy, ResponseStyle};
use crate::policy::Outcome;
use crate::proxy::reject::Reject;
use crate::proxy::response::ProxyBody;
use crate::rt::tunnel::tunnel;
use crate::upstream::{Target, UpstreamBody};

/// A client connection once it is upgraded: its socket, with whatever the client sent after its request.
pub type UpgradedIo = Box<dyn UpgradedStream>;

/// What an upgraded client connection is (any socket of a server that read the request).
pub trait UpgradedStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> UpgradedStream for T {}

/// Put in an upgrade request's extensions by the proxy's own HTTP/1 server (`crate::server`'s `h1`): the
/// client's connection arrives here once the `101` has been written. (A request hyper's server read carries
/// hyper's own `OnUpgrade` instead.) Shared and taken once, as extensions must be `Clone`.
#[derive(Clone)]
pub struct PendingUpgrade(Arc<Mutex<Option<tokio::sync::oneshot::Receiver<UpgradedIo>>>>);

impl PendingUpgrade {
    /// The extension for a request, and the server's side that hands the connection over.
    pub fn new() -> (PendingUpgrade, tokio::sync::oneshot::Sender<UpgradedIo>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (PendingUpgrade(Arc::new(Mutex::new(Some(rx)))), tx)
    }
}

/// The client's side of an upgrade, from whichever server read the request.
enum ClientUpgrade {
    Hyper(hyper::upgrade::OnUpgrade),
    Engine(Option<tokio::sync::oneshot::Receiver<UpgradedIo>>),
}

impl ClientUpgrade {
    fn of<B>(req: &mut Request<B>) -> ClientUpgrade {
        match req.extensions_mut().remove::<PendingUpgrade>() {
            Some(pending) => {
                ClientUpgrade::Engine(pending.0.lock().unwrap_or_else(|p| p.into_inner()).take())
            }
            None => ClientUpgrade::Hyper(hyper::upgrade::on(req)),
        }
    }

    /// The client's connection, once the `101` has been written to it.
    async fn connection(self) -> Result<UpgradedIo, String> {
        match self {
            ClientUpgrade::Hyper(on) => match on.await {
                Ok(upgraded) => Ok(Box::new(TokioIo::new(upgraded))),
                Err(e) => Err(e.to_string()),
            },
            ClientUpgrade::Engine(Some(rx)) => rx
                .await
                .map_err(|_| "the client connection was not upgraded".to_string()),
            ClientUpgrade::Engine(None) => Err("the client connection was upgraded twice".into()),
        }
    }
}

/// `Upgrade: websocket` (the first Upgrade value, case-insensitive); `Connection` is not checked, as in PlanB.
pub fn is_websocket<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

impl Proxy {
    pub(super) async fn websocket(
        &self,
        mut req: Request<RequestBody>,
        down: Downstream,
        ctx: &mut Ctx,
    ) -> Response<ProxyBody> {
        // Not timed: the lookup metric counts the requests of the access log, as PlanB's metrics do.
        let looked_up = self.router.lookup(&ctx.host, &ctx.path).await;
        let route = match self.looked_up(ctx, looked_up) {
            Ok(route) => route,
            Err(reject) => return self.upgrade_reject(reject, ctx.debug),
        };
        // Guards, rate limits and the breaker apply to tunnels too: an ejected backend gets no tunnel.
        let log = |m: &str| self.log_error(ctx, "?", m);
        let admitted = self
            .policies
            .admit(&route, &mut req, &ctx.host, down.peer.ip(), &log)
            .await;
        let pass = match admitted {
            Ok(pass) => pass,
            Err(refusal) => return Reject::from(refusal).response(),
        };
        match self.config.forwarding {
            ForwardingPolicy::Planb | ForwardingPolicy::Httprouter => {
                headers::append_forwarded_for(req.headers_mut(), Some(down.peer.ip()));
            }
            ForwardingPolicy::Hipache => {
                headers::set_forwarded_if_absent(req.headers_mut(), down.peer.ip(), down.tls);
            }
        }
        let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let path_and_query = route
            .stripped_target(path_and_query)
            .unwrap_or_else(|| path_and_query.to_string());
        let client_upgrade = ClientUpgrade::of(&mut req);
        let attempt = |target: Arc<Target>, ()| async move {
            match self.upstream.open(&target, target.authority()).await {
                Ok(stream) => Ok((stream, target)),
                // Nothing was sent: the upgrade request can go to another backend.
                Err(e) => Err((e, Some(()))),
            }
        };
        let tried = self
            .try_backends(ctx, route, &pass, Exchange::Tunnel, (), attempt)
            .await;
        let (route, (stream, target)) = match tried {
            Ok(tried) => (tried.route, tried.value),
            Err(failed) => return self.upgrade_reject(failed.reject, ctx.debug),
        };
        if self.config.forwarding == ForwardingPolicy::Planb {
            if let Ok(host) = HeaderValue::from_str(target.authority()) {
                req.headers_mut().insert(header::HOST, host);
            }
        } else if !req.headers().contains_key(header::HOST) {
            if let Ok(host) = HeaderValue::from_str(&ctx.host) {
                req.headers_mut().insert(header::HOST, host);
            }
        }
        *req.uri_mut() = path_and_query.parse().unwrap_or_default();
        *req.version_mut() = Version::HTTP_11;

        let (mut sender, conn) = match hyper::client::conn::http1::Builder::new()
            .title_case_headers(true)
            .handshake(TokioIo::new(stream))
            .await
        {
            Ok(parts) => parts,
            Err(e) => {
                self.log_error(ctx, &ctx.backend_url, &e.to_string());
                return self.upgrade_reject(Reject::UpgradeFailed, ctx.debug);
            }
        };
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut resp = match sender.send_request(req).await {
            Ok(resp) => resp,
            Err(e) => {
                self.log_error(ctx, &ctx.backend_url, &e.to_string());
                return self.upgrade_reject(Reject::UpgradeFailed, ctx.debug);
            }
        };
        pass.record(
            &route,
            ctx.backend_id,
            Outcome::Status(resp.status().as_u16()),
            &|m| self.log_error(ctx, &ctx.backend_url, m),
        );
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // The backend declined the upgrade: its answer goes to the client as it is.
            return resp.map(|body| ProxyBody::Upstream(UpstreamBody::detached(body)));
        }
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        // Counted from the 101 until both sides are closed, so shutdown can wait for it.
        let open = self.tunnels.track();
        let idle = self.config.timeouts.websocket_idle;
        let error_log = self.error_log.clone();
        let prefix = self.error_prefix(ctx, &ctx.backend_url);
        tokio::spawn(async move {
            let _open = open;
            let (client, backend) = match tokio::join!(client_upgrade.connection(), backend_upgrade)
            {
                (Ok(client), Ok(backend)) => (client, backend),
                (Err(e), _) => return error_log.line(format!("{prefix}{e}")),
                (_, Err(e)) => return error_log.line(format!("{prefix}{e}")),
            };
            tunnel(client, TokioIo::new(backend), idle).await;
        });
        let (parts, _) = resp.into_parts();
        Response::from_parts(parts, ProxyBody::Full(None))
    }
}

impl Proxy {
    /// A failed upgrade: PlanB's 502 with body `\n` whatever the cause, or the cause's own answer in Hipache's
    /// style (400 page for an unknown host, where Hipache left the socket hanging).
    fn upgrade_reject(&self, reject: Reject, debug: bool) -> Response<ProxyBody> {
        match self.config.responses {
            ResponseStyle::Planb | ResponseStyle::Httprouter => Reject::UpgradeFailed.response(),
            ResponseStyle::Hipache(_) => self.reject(reject, debug),
        }
    }
}

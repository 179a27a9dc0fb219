//! WebSocket tunnels (PlanB spec §7): the upgrade request goes to the backend over a fresh connection, the
//! backend's `101` is relayed, and then bytes are copied both ways until either side closes.
//!
//! As in PlanB there is no access-log line, the backend sees `Host: <backend host:port>` and the upgrade headers
//! intact, and any failure before the tunnel is up is a 502 with body `\n`. Beyond PlanB, a backend that refuses
//! the connection is marked dead and the next live one is tried, as for plain HTTP.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::{headers, Ctx, Downstream, Proxy};
use crate::body::ProxyBody;
use crate::error::Reject;
use crate::route::LookupError;
use crate::upstream::UpstreamBody;

/// `Upgrade: websocket` (the first Upgrade value, case-insensitive); `Connection` is not checked, as in PlanB.
pub fn is_websocket(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

impl Proxy {
    pub(super) async fn websocket(
        &self,
        mut req: Request<Incoming>,
        down: Downstream,
        ctx: &mut Ctx,
    ) -> Response<ProxyBody> {
        let mut route = match self.router.lookup(&ctx.host).await {
            Ok(route) => route,
            Err(LookupError::NoRoute { key }) => {
                ctx.key = key;
                self.log_error(ctx, "?", "no backends registered for host");
                return Reject::UpgradeFailed.response();
            }
            Err(LookupError::Store(e)) => {
                ctx.key = ctx.host.clone();
                self.log_error(ctx, "?", &e.0);
                return Reject::UpgradeFailed.response();
            }
        };
        ctx.key = route.key.clone();
        // Guards and rate limits apply to tunnels too; the breaker does not (a tunnel has no status to count).
        let log = |m: &str| self.log_error(ctx, "?", m);
        let admitted = self
            .policies
            .admit(&route, &req, &ctx.host, down.peer.ip(), &log)
            .await;
        if let Err(reject) = admitted {
            return reject.response();
        }
        let start = self.router.next_start(&ctx.host, route.backends.len());
        let Some(mut index) = route.first_live(start) else {
            self.log_error(ctx, "?", "all backends are dead");
            return Reject::UpgradeFailed.response();
        };
        headers::append_forwarded_for(req.headers_mut(), Some(down.peer.ip()));
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let client_upgrade = hyper::upgrade::on(&mut req);
        let (stream, target) = loop {
            ctx.backend_id = index;
            ctx.backend_url = route.backends[index].clone();
            let target = match route.target(index) {
                Ok(target) => target,
                Err(e) => {
                    self.log_error(ctx, &ctx.backend_url, &format!("{e:?}"));
                    return Reject::UpgradeFailed.response();
                }
            };
            match self.upstream.connect(&target, &target.authority()).await {
                Ok(stream) => break (stream, target),
                Err(e) => {
                    let dead = e.dead();
                    self.log_error(ctx, &ctx.backend_url, &e.to_string());
                    if !dead {
                        return Reject::UpgradeFailed.response();
                    }
                    self.mark_dead(ctx, route.backends.len()).await;
                    std::sync::Arc::make_mut(&mut route).dead[index] = true;
                    match route.first_live(index + 1) {
                        Some(next) if self.config.extensions.failover => index = next,
                        _ => return Reject::UpgradeFailed.response(),
                    }
                }
            }
        };
        if let Ok(host) = HeaderValue::from_str(&target.authority()) {
            req.headers_mut().insert(header::HOST, host);
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
                return Reject::UpgradeFailed.response();
            }
        };
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut resp = match sender.send_request(req).await {
            Ok(resp) => resp,
            Err(e) => {
                self.log_error(ctx, &ctx.backend_url, &e.to_string());
                return Reject::UpgradeFailed.response();
            }
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // The backend declined the upgrade: its answer goes to the client as it is.
            return resp.map(|body| ProxyBody::Upstream(UpstreamBody::detached(body)));
        }
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        let tunnels = self.tunnels.clone();
        let error_log = self.error_log.clone();
        let prefix = self.error_prefix(ctx, &ctx.backend_url);
        tokio::spawn(async move {
            let _open = tunnels;
            let (client, backend) = match tokio::try_join!(client_upgrade, backend_upgrade) {
                Ok(pair) => pair,
                Err(e) => {
                    error_log.line(format!("{prefix}{e}"));
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut backend = TokioIo::new(backend);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
        });
        let (parts, _) = resp.into_parts();
        Response::from_parts(parts, ProxyBody::Full(None))
    }
}

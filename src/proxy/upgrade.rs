//! WebSocket tunnels (PlanB spec §7): the upgrade request goes to the backend over a fresh connection, the
//! backend's `101` is relayed, and then bytes are copied both ways until either side closes ([`tunnel`]).
//!
//! As in PlanB there is no access-log line, the backend sees `Host: <backend host:port>` and the upgrade headers
//! intact, and any failure before the tunnel is up is a 502 with body `\n`. Beyond PlanB, a backend that refuses
//! the connection is marked dead and the next live one is tried, through the same selection routine as plain
//! HTTP (`select`, so a backend the breaker ejected gets no tunnel either); an `https://` backend is reached
//! over TLS (PlanB dialed it in clear); and `--websocket-idle-timeout` closes tunnels nobody uses.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::select::Exchange;
use super::{headers, Ctx, Downstream, Proxy};
use crate::body::{ProxyBody, RequestBody};
use crate::config::{ForwardingPolicy, ResponseStyle};
use crate::error::Reject;
use crate::policy::Outcome;
use crate::server::now_ms;
use crate::upstream::{Target, UpstreamBody};

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
        let looked_up = self.router.lookup(&ctx.host).await;
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
            Err(reject) => return reject.response(),
        };
        match self.config.forwarding {
            ForwardingPolicy::Planb => {
                headers::append_forwarded_for(req.headers_mut(), Some(down.peer.ip()));
            }
            ForwardingPolicy::Hipache => {
                headers::set_forwarded_if_absent(req.headers_mut(), down.peer.ip(), down.tls);
            }
        }
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let client_upgrade = hyper::upgrade::on(&mut req);
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
            let (client, backend) = match tokio::try_join!(client_upgrade, backend_upgrade) {
                Ok(pair) => pair,
                Err(e) => {
                    error_log.line(format!("{prefix}{e}"));
                    return;
                }
            };
            tunnel(TokioIo::new(client), TokioIo::new(backend), idle).await;
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
            ResponseStyle::Planb => Reject::UpgradeFailed.response(),
            ResponseStyle::Hipache(_) => self.reject(reject, debug),
        }
    }
}

/// Copy bytes both ways; when either direction ends (EOF or error) both connections are closed, as PlanB does
/// (so a client that keeps a half-closed socket cannot hold a tunnel). With `idle`, a tunnel in which neither
/// side sent anything for that long is closed too.
pub async fn tunnel<A, B>(a: A, b: B, idle: Option<Duration>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let last = Arc::new(AtomicU64::new(now_ms()));
    let (mut a_read, mut a_write) = tokio::io::split(Activity {
        inner: a,
        last: last.clone(),
    });
    let (mut b_read, mut b_write) = tokio::io::split(Activity {
        inner: b,
        last: last.clone(),
    });
    let a_to_b = async {
        let _ = tokio::io::copy(&mut a_read, &mut b_write).await;
        let _ = b_write.shutdown().await;
    };
    let b_to_a = async {
        let _ = tokio::io::copy(&mut b_read, &mut a_write).await;
        let _ = a_write.shutdown().await;
    };
    let idle_watch = async {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        let idle_ms = idle.as_millis() as u64;
        loop {
            let deadline = last.load(Ordering::Relaxed) + idle_ms;
            let now = now_ms();
            if now >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(deadline - now)).await;
        }
    };
    // Whichever ends first ends the tunnel; dropping the halves closes both connections.
    tokio::select! {
        _ = a_to_b => {}
        _ = b_to_a => {}
        _ = idle_watch => {}
    }
}

/// A stream that notes when it last read anything.
struct Activity<T> {
    inner: T,
    last: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.store(now_ms(), Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

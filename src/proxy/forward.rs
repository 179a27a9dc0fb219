//! The forward and relay phases: the frontend's policies, then the request rewritten for the backend and
//! sent through the selection routine (`select`), with the request timeout.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, Version};

use super::headers::{self, X_DEBUG_ROUTER, X_FORWARDED_PROTO};
use super::reject::Reject;
use super::response::ProxyBody;
use super::select::Exchange;
use super::{Ctx, Downstream, Proxy};
use crate::body::RequestBody;
use crate::config::ForwardingPolicy;
use crate::mirror::{ActiveOutcome, Head};
use crate::observe::access_log::AccessEntry;
use crate::policy::{Outcome, Pass};
use crate::routing::Route;

impl Proxy {
    pub(super) async fn forward(
        &self,
        mut req: Box<Request<RequestBody>>,
        down: Downstream,
        ctx: &mut Ctx,
        entry: &mut AccessEntry,
    ) -> (Response<ProxyBody>, Duration) {
        let route = match self.lookup(ctx).await {
            Ok(route) => route,
            Err(reject) => return (self.reject(reject, ctx.debug), Duration::ZERO),
        };
        if self.access_log.enabled() || self.telemetry.metrics.per_frontend() {
            entry.backend_key = route.key.clone();
            entry.identifier = route.identifier.clone();
        }
        let log = |m: &str| self.log_error(ctx, "?", m);
        // Boxed: most frontends have no policy, and their requests should not carry the guard's state.
        let admitted = match self.policies.open(&route) {
            true => Ok(Pass::open()),
            false => {
                let admit = self
                    .policies
                    .admit(&route, &mut req, &ctx.host, down.peer.ip(), &log);
                Box::pin(admit).await
            }
        };
        let pass = match admitted {
            Ok(pass) => pass,
            Err(refusal) => return (self.reject(refusal.into(), ctx.debug), Duration::ZERO),
        };
        let rate = pass.rate;
        let (mut resp, backend_time) = self.relay(req, down, ctx, entry, route, pass).await;
        // The frontend's rate limit as it stands after this request, on whatever answer it got.
        if let Some(rate) = rate {
            rate.insert(resp.headers_mut());
        }
        (resp, backend_time)
    }

    /// Select a backend, rewrite the request for it and send it, failing over on connection failures.
    async fn relay(
        &self,
        mut req: Box<Request<RequestBody>>,
        down: Downstream,
        ctx: &mut Ctx,
        entry: &mut AccessEntry,
        route: Arc<Route>,
        pass: Pass,
    ) -> (Response<ProxyBody>, Duration) {
        // The rewrite that does not depend on the backend is done once, before the first attempt.
        let parts = req.headers_mut();
        headers::remove_hop_by_hop(parts, true);
        match self.config.forwarding {
            ForwardingPolicy::Planb => {
                entry.forwarded_for = headers::append_forwarded_for(parts, Some(down.peer.ip()));
                parts.remove(X_DEBUG_ROUTER);
                if !parts.contains_key(X_FORWARDED_PROTO) {
                    let proto = if down.tls { "https" } else { "http" };
                    parts.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
                }
            }
            ForwardingPolicy::Hipache | ForwardingPolicy::Httprouter => {
                entry.forwarded_for = match self.config.forwarding {
                    ForwardingPolicy::Hipache => {
                        headers::set_forwarded_if_absent(parts, down.peer.ip(), down.tls)
                    }
                    _ => headers::append_forwarded_for(parts, Some(down.peer.ip())),
                };
                // Forwarded unchanged; an HTTP/2 request carries it in the URI, so it is written out.
                if !parts.contains_key(header::HOST) {
                    if let Ok(host) = HeaderValue::from_str(&ctx.host) {
                        parts.insert(header::HOST, host);
                    }
                }
            }
        }
        if req.version() == Version::HTTP_2 {
            headers::join_cookies(req.headers_mut());
        }
        *req.version_mut() = Version::HTTP_11;
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Some(stripped) = route.stripped_target(target) {
            *req.uri_mut() = stripped.parse().unwrap_or_default();
        }
        // The backend gets origin form; most requests are in it already (HTTP/2 and absolute-form ones are not).
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            let path_and_query = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .to_string();
            *req.uri_mut() = path_and_query.parse().unwrap_or_default();
        }

        let mirrored = self.mirror(&mut req, ctx, &route);
        let (mut resp, backend_time) = self.send_to_backends(req, ctx, route, pass).await;
        if let Some(mirrored) = mirrored {
            let status = resp.status().as_u16();
            let copy = mirrored.hash_active_body.and_then(|cap| {
                let (body, copy) =
                    std::mem::replace(resp.body_mut(), ProxyBody::Full(None)).teed(cap);
                *resp.body_mut() = body;
                copy
            });
            let outcome = match copy {
                Some(copy) => ActiveOutcome::WithBody(status, copy),
                None => ActiveOutcome::Status(status),
            };
            mirrored.active.answered(outcome);
        }
        (resp, backend_time)
    }

    /// Start mirroring the request when its frontend has a `mirror:<key>` and the request is sampled: the
    /// shadows get the head as it stands (original Host, forwarding headers) and the body as it streams.
    fn mirror(
        &self,
        req: &mut Request<RequestBody>,
        ctx: &Ctx,
        route: &Route,
    ) -> Option<crate::mirror::shadows::Started> {
        let spec = route.mirror.as_ref()?;
        if !self.mirrors.sampled(&route.key, spec) {
            return None;
        }
        let mut headers = req.headers().clone();
        // An HTTP/2 request carries its Host in the URI: a shadow gets it as a header.
        if !headers.contains_key(header::HOST) {
            if let Ok(host) = HeaderValue::from_str(&ctx.host) {
                headers.insert(header::HOST, host);
            }
        }
        let head = Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers,
        };
        let body = std::mem::replace(req.body_mut(), RequestBody::Buffered(Default::default()));
        let (body, copy) = body.teed(spec.max_body);
        *req.body_mut() = body;
        Some(self.mirrors.start(&route.key, spec.clone(), head, copy))
    }

    /// Send the rewritten request through the selection routine, with the request timeout; the answer the
    /// client gets and the time spent on the backend.
    async fn send_to_backends(
        &self,
        req: Box<Request<RequestBody>>,
        ctx: &mut Ctx,
        route: Arc<Route>,
        pass: Pass,
    ) -> (Response<ProxyBody>, Duration) {
        let original_host = match self.config.forwarding {
            ForwardingPolicy::Planb => Some(HeaderValue::from_str(&ctx.host).ok()),
            ForwardingPolicy::Hipache | ForwardingPolicy::Httprouter => None,
        };
        let activity = match req.body() {
            RequestBody::Watched(_, last) => Some(last.clone()),
            _ => None,
        };
        let limit = self.config.timeouts.request;
        let attempt = |target: Arc<crate::upstream::Target>, mut req: Box<Request<RequestBody>>| {
            if let Some(original) = &original_host {
                headers::set_host(req.headers_mut(), &target, original.as_ref());
            }
            let activity = activity.as_deref();
            async move {
                let sent = within(limit, activity, self.upstream.send(&target, req)).await;
                match sent {
                    Some(Ok(resp)) => Ok(Some(resp)),
                    // Timed out: answered below, and never sent again.
                    None => Ok(None),
                    Some(Err((error, back))) => Err((error, back.map(Box::new))),
                }
            }
        };
        let tried = self
            .try_backends(ctx, route, &pass, Exchange::Http, req, attempt)
            .await;
        let tried = match tried {
            Ok(tried) => tried,
            Err(failed) => return (self.reject(failed.reject, ctx.debug), failed.backend_time),
        };
        let (route, index) = (tried.route, ctx.backend_id);
        let Some(resp) = tried.value else {
            pass.record(&route, index, Outcome::Timeout, &|m| {
                self.log_error(ctx, &ctx.backend_url, m)
            });
            let message = format!(
                "request timeout after {:?}: net/http: request canceled",
                ctx.started.elapsed()
            );
            self.log_error(ctx, &ctx.backend_url, &message);
            return (
                self.reject(Reject::BackendTimeout, ctx.debug),
                tried.started.elapsed(),
            );
        };
        let status = resp.status().as_u16();
        pass.record(&route, index, Outcome::Status(status), &|m| {
            self.log_error(ctx, &ctx.backend_url, m)
        });
        if self
            .config
            .failure
            .dead_statuses
            .iter()
            .any(|r| r.contains(&status))
        {
            // Passed on unchanged; the next requests avoid this backend.
            Box::pin(self.mark_dead(ctx, &route, None)).await;
        }
        (resp.map(ProxyBody::Upstream), tried.started.elapsed())
    }
}

/// `fut`, unless `limit` passes first: from now, or (with `activity`, the last time the request body moved, in
/// `crate::rt::clock::now_ms` milliseconds) from the last sign of life. `None` when the limit passed.
async fn within<F: std::future::Future>(
    limit: Option<Duration>,
    activity: Option<&std::sync::atomic::AtomicU64>,
    fut: F,
) -> Option<F::Output> {
    let Some(limit) = limit else {
        return Some(fut.await);
    };
    let Some(activity) = activity else {
        return tokio::time::timeout(limit, fut).await.ok();
    };
    let started = crate::rt::clock::now_ms();
    let limit_ms = limit.as_millis() as u64;
    let mut fut = std::pin::pin!(fut);
    loop {
        let last = activity
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(started);
        let left = (last + limit_ms).saturating_sub(crate::rt::clock::now_ms());
        if left == 0 {
            return None;
        }
        if let Ok(out) = tokio::time::timeout(Duration::from_millis(left), fut.as_mut()).await {
            return Some(out);
        }
    }
}

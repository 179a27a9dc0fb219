//! The one selection-and-failover routine, shared by plain HTTP, WebSocket upgrades and the SNI passthrough:
//! pick a live backend (skipping the dead set, backends the breaker ejected and URLs that cannot be used), try
//! it, and on a connection failure mark it dead and try the next one.
//!
//! What differs between the three exchanges is what one try does (the caller's `attempt`) and a few rules
//! named by [`Exchange`]; the decisions (who is blamed, what is retried, which answer a failure gets) are made
//! here, once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Ctx, Proxy};
use crate::policy::{Outcome, Pass};
use crate::proxy::reject::Reject;
use crate::routing::Route;
use crate::upstream::{Target, TargetError, UpstreamError};

/// What is being sent to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exchange {
    /// A plain HTTP request: the preset's retry rules apply (Hipache's `retryOnError`, with a new lookup).
    Http,
    /// A WebSocket upgrade: failover to the next live backend on a connection failure.
    Tunnel,
    /// The SNI passthrough: as a tunnel, but without dead marks or error-log lines per try (PlanB wrote
    /// neither for this engine); the caller logs the final failure.
    Passthrough,
}

/// How a round of tries ended without an answer from a backend.
#[derive(Debug)]
pub(super) struct Failed {
    /// The answer the client gets.
    pub reject: Reject,
    /// The last backend failure, if a backend was tried (for the passthrough's log line).
    pub error: Option<String>,
    /// Time spent on the last try.
    pub backend_time: Duration,
}

impl Failed {
    fn before_any_try(reject: Reject) -> Failed {
        Failed {
            reject,
            error: None,
            backend_time: Duration::ZERO,
        }
    }
}

/// A try that worked: the attempt's value, the route as it stands (dead marks of this request applied) and
/// when the successful try started.
pub(super) struct Tried<T> {
    pub value: T,
    pub route: Arc<Route>,
    pub started: Instant,
}

impl Proxy {
    /// Select a backend of `route` and run `attempt` on it, failing over as the preset says. `state` is what an
    /// attempt consumes (the request, for HTTP); a failed attempt hands it back when nothing of it reached the
    /// backend, which is what makes trying another backend safe.
    pub(super) async fn try_backends<S, T, F, Fut>(
        &self,
        ctx: &mut Ctx,
        mut route: Arc<Route>,
        pass: &Pass,
        exchange: Exchange,
        mut state: S,
        mut attempt: F,
    ) -> Result<Tried<T>, Failed>
    where
        F: FnMut(Arc<Target>, S) -> Fut,
        Fut: Future<Output = Result<T, (UpstreamError, Option<S>)>>,
    {
        let start = self.router.start_for(&ctx.host, &route);
        let Some(mut index) = pass.first_live(&route, start) else {
            if exchange != Exchange::Passthrough {
                self.log_error(ctx, "?", "all backends are dead");
            }
            return Err(Failed::before_any_try(Reject::AllDead));
        };
        let failover = self.config.extensions.failover;
        let mut retries = 0u32;
        // Backends that failed for this request: a retry never picks them again, even after a new lookup.
        let mut failed: Vec<String> = Vec::new();
        loop {
            ctx.backend_id = index;
            ctx.backend_url = route.backends[index].clone();
            ctx.inflight.route(&ctx.key, &ctx.backend_url);
            let target = match route.target(index) {
                Ok(target) => target,
                Err(TargetError::Empty) => return Err(Failed::before_any_try(Reject::NoRoute)),
                Err(TargetError::Invalid(why)) => {
                    // The entry is unusable, not the backend behind it: no dead mark, no breaker count. It
                    // costs this entry only: the next live backend is tried.
                    if exchange != Exchange::Passthrough {
                        let message =
                            format!("invalid backend {index} in frontend:{}: {why}", route.key);
                        self.log_error(ctx, &ctx.backend_url, &message);
                    }
                    Arc::make_mut(&mut route).dead[index] = true;
                    match pass.first_live(&route, index + 1) {
                        Some(next) if failover => {
                            index = next;
                            continue;
                        }
                        _ => {
                            return Err(Failed {
                                reject: Reject::Unavailable,
                                error: Some(why),
                                backend_time: Duration::ZERO,
                            })
                        }
                    }
                }
            };
            // The request has reached backend selection (Hipache's access log has only those).
            ctx.selected = true;
            let started = Instant::now();
            // Counted in flight (for `least_request`) until the backend has answered or failed.
            let load = self.router.in_flight(&route, index);
            let tried = attempt(target, state).await;
            drop(load);
            let (error, back) = match tried {
                Ok(value) => {
                    return Ok(Tried {
                        value,
                        route,
                        started,
                    })
                }
                Err(failure) => failure,
            };
            let give_up = |reject: Reject| Failed {
                reject,
                error: Some(error.to_string()),
                backend_time: started.elapsed(),
            };
            if !error.blames_backend() {
                // The client's broken body or the proxy's own exhaustion: said as such, never retried.
                let (reject, message) = match &error {
                    UpstreamError::Client(m) => (
                        Reject::BadRequest("malformed or incomplete request body"),
                        format!("client error (not the backend's): {m}"),
                    ),
                    m => (
                        Reject::Overloaded,
                        format!("proxy error (not the backend's): {m}"),
                    ),
                };
                if exchange != Exchange::Passthrough {
                    self.log_error(ctx, &ctx.backend_url, &message);
                }
                if matches!(error, UpstreamError::Local(_)) {
                    self.telemetry.metrics.local_failure();
                }
                return Err(give_up(reject));
            }
            pass.record(&route, index, Outcome::from_error(&error), &|m| {
                self.log_error(ctx, &ctx.backend_url, m)
            });
            let dead = exchange != Exchange::Passthrough
                && error.dead()
                && (self.config.failure.mark_on_resolve_failure
                    || !matches!(error, UpstreamError::Resolve(_)));
            if exchange != Exchange::Passthrough {
                let message = match (&error, dead) {
                    (UpstreamError::ConnectTimeout(m), _) => format!("{m} *DEAD*"),
                    (_, true) => format!("error in backend request: {error} *DEAD*"),
                    (_, false) => format!("error in backend request: {error}"),
                };
                self.log_error(ctx, &ctx.backend_url, &message);
            }
            if dead {
                Box::pin(self.mark_dead(ctx, &route, Some(&error))).await;
            }
            Arc::make_mut(&mut route).dead[index] = true;
            let unreached = match exchange {
                Exchange::Http => Reject::Unavailable,
                Exchange::Tunnel | Exchange::Passthrough => Reject::UpgradeFailed,
            };
            // Only a request that never reached the backend can be sent again.
            state = match back {
                Some(back) if error.dead() => back,
                _ => return Err(give_up(unreached)),
            };
            let retry_limit = match exchange {
                Exchange::Http => self.config.failure.retry_limit,
                Exchange::Tunnel | Exchange::Passthrough => None,
            };
            let next = match retry_limit {
                None if failover => pass.first_live(&route, index + 1),
                None => None,
                Some(limit) if retries >= limit => {
                    return Err(give_up(Reject::RetriesExhausted {
                        disabled: limit == 0,
                    }))
                }
                Some(_) => {
                    retries += 1;
                    failed.push(ctx.backend_url.clone());
                    if self.config.failure.relookup_on_retry {
                        route = match Box::pin(self.lookup(ctx)).await {
                            Ok(route) => route,
                            Err(reject) => return Err(give_up(reject)),
                        };
                    }
                    let fresh = Arc::make_mut(&mut route);
                    for (i, url) in fresh.backends.iter().enumerate() {
                        if failed.contains(url) {
                            fresh.dead[i] = true;
                        }
                    }
                    let start = self.router.start_for(&ctx.host, &route);
                    pass.first_live(&route, start)
                }
            };
            match next {
                Some(next) => {
                    self.telemetry.metrics.failover();
                    index = next;
                }
                None if retry_limit.is_some() => return Err(give_up(Reject::AllDead)),
                None => return Err(give_up(unreached)),
            }
        }
    }
}

/// Why the SNI passthrough got no backend connection; the engine logs it.
#[derive(Debug)]
pub enum PassthroughError {
    /// No frontend for the name, or an unusable backend URL.
    NoRoute,
    /// Every backend of the frontend is in the dead set (or ejected).
    AllDead,
    /// Redis failed during the lookup.
    Store(String),
    /// No backend could be connected to.
    Backend(String),
}

impl Proxy {
    /// The SNI passthrough's backend connection for server name `name`: routed like a Host (same lookup, dead
    /// set, round robin and breaker) and dialed through [`Proxy::try_backends`], so it fails over as HTTP does.
    pub(crate) async fn dial_passthrough(
        &self,
        name: &str,
    ) -> Result<tokio::net::TcpStream, PassthroughError> {
        use crate::routing::LookupError;
        let route = match self.router.lookup(name, "").await {
            Ok(route) => route,
            Err(LookupError::NoRoute { .. }) => return Err(PassthroughError::NoRoute),
            Err(LookupError::Store(e)) => return Err(PassthroughError::Store(e.0)),
        };
        let mut ctx = Ctx {
            host: name.to_string(),
            path: String::new(),
            request_id: String::new(),
            key: route.key.clone(),
            backend_url: String::new(),
            backend_id: 0,
            identifier: route.identifier.clone(),
            debug: false,
            started: Instant::now(),
            inflight: self
                .telemetry
                .inflight
                .begin(&http::Method::CONNECT, name, ""),
            selected: false,
            routed: true,
        };
        let error_log = &self.error_log;
        let pass = self.policies.breaker_pass(&route, &|m: &str| {
            error_log.line(format!("ERROR - {m} - {name}"))
        });
        let attempt = |target: Arc<Target>, ()| async move {
            self.upstream
                .connect(&target, target.authority())
                .await
                .map_err(|e| (e, Some(())))
        };
        let tried = self
            .try_backends(&mut ctx, route, &pass, Exchange::Passthrough, (), attempt)
            .await;
        match tried {
            Ok(tried) => {
                pass.record(&tried.route, ctx.backend_id, Outcome::Connected, &|_| {});
                Ok(tried.value)
            }
            Err(failed) => Err(match failed.reject {
                Reject::AllDead => PassthroughError::AllDead,
                Reject::NoRoute => PassthroughError::NoRoute,
                _ => PassthroughError::Backend(failed.error.unwrap_or_default()),
            }),
        }
    }
}

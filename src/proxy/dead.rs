//! Passive dead marks: a backend that failed is written into its frontend's dead set (and announced on the
//! `dead` channel) off the request path, unless an external checker owns the dead sets (Hipache's
//! `hchecker_ping`).

use std::time::{Duration, Instant};

use super::{Ctx, Proxy};
use crate::observe::metrics::DeadCause;
use crate::store::RedisClient;
use crate::upstream::UpstreamError;

/// How long a `hchecker_ping` timestamp counts as fresh, and how long one look at it is reused (Hipache's 30 s).
pub const HCHECKER_FRESH: Duration = Duration::from_secs(30);

/// Whether an external health checker is alive, as last read from `hchecker_ping`.
#[derive(Default)]
pub struct HcheckerPing {
    /// When it was last read, and whether it was fresh then.
    last: std::sync::Mutex<Option<(Instant, bool)>>,
}

impl HcheckerPing {
    /// Whether the checker is alive: the cached answer while it is younger than [`HCHECKER_FRESH`], otherwise
    /// `GET hchecker_ping` on `read`. A Redis failure counts as "no checker", so marks are still written.
    async fn alive(&self, read: &RedisClient) -> bool {
        let cached = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, alive)) = cached {
            if at.elapsed() < HCHECKER_FRESH {
                return alive;
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let alive = matches!(read.hchecker_ping().await, Ok(Some(ts)) if (now - ts).abs() <= HCHECKER_FRESH.as_secs() as i64);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), alive));
        alive
    }
}

impl Proxy {
    /// Passive dead mark: drop the cached route, then write Redis off the request path. A Redis failure is
    /// logged, nothing else; the mark is counted in the metrics either way (as PlanB counts it). `error` is the
    /// connection failure, `None` for a status that marks dead. A frontend with fewer backends than the policy's
    /// minimum is left alone.
    pub(super) async fn mark_dead(
        &self,
        ctx: &Ctx,
        route: &crate::routing::Route,
        error: Option<&UpstreamError>,
    ) {
        let policy = &self.config.failure;
        let count = route.backends.len();
        if count < policy.min_backends_to_mark {
            return;
        }
        let cause = error.and_then(DeadCause::of);
        if cause.is_some() {
            self.telemetry.metrics.connect_failed();
        }
        self.telemetry.metrics.mark_dead(cause);
        if let Some(table) = self.router.table() {
            // No Redis behind the routes: the mark lives in this process for the dead set's TTL.
            table.mark_dead(route, ctx.backend_id, self.config.dead_backend_ttl);
            return;
        }
        let write = self.write.clone();
        let read = self.router.store().clone();
        let hchecker = policy.respect_hchecker_ping.then(|| self.hchecker.clone());
        let error_log = self.error_log.clone();
        let ttl = self.config.dead_backend_ttl;
        let url = match policy.normalise_published_url {
            true => node_href(&ctx.backend_url),
            false => ctx.backend_url.clone(),
        };
        let (key, index) = (route.dead_key.clone(), ctx.backend_id);
        let prefix = self.error_prefix(ctx, &ctx.backend_url);
        // Forget the cached route now, and again once the mark is in Redis: a lookup in between may have
        // cached the dead set without it.
        self.router.forget(&ctx.host, &ctx.path, &ctx.key).await;
        let forget_again = self.router.forget(&ctx.host, &ctx.path, &ctx.key);
        let marking = async move {
            let publish_only = match hchecker {
                Some(hchecker) => hchecker.alive(&read).await,
                None => false,
            };
            if let Err(e) = write
                .mark_dead(&key, index, &url, count, ttl, publish_only)
                .await
            {
                error_log.line(format!("{prefix}{e}"));
            }
            forget_again.await;
        };
        // A retry that reads the route again must see this mark: write it first. Otherwise off the request path.
        if policy.relookup_on_retry {
            marking.await;
        } else {
            tokio::spawn(marking);
        }
    }
}

/// A backend URL as Node's `url.parse(u).href` writes it (`http://10.0.0.1:8080` → `http://10.0.0.1:8080/`):
/// what Hipache published on `dead` and showed in `x-debug-backend-url`. Unparsable URLs stay as they are.
pub fn node_href(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) if url.contains("://") => parsed.to_string(),
        _ => url.to_string(),
    }
}

impl Proxy {
    /// A dead mark asked for by an operator (the admin API): written exactly as a passive mark is (the same
    /// `--dead-backend-time` TTL, the same `dead` message, the same deference to an external checker), so that
    /// subscribers and other proxies cannot tell them apart. Unlike a passive mark it is written before this
    /// returns, and a frontend with a single backend is marked too: the operator asked. Returns whether the
    /// dead set was written (`false`: an external checker owns the dead sets, the mark was only published).
    pub async fn mark_dead_by_operator(
        &self,
        route: &crate::routing::Route,
        index: usize,
    ) -> Result<bool, crate::store::StoreError> {
        let ttl = self.config.dead_backend_ttl;
        if let Some(table) = self.router.table() {
            table.mark_dead(route, index, ttl);
            return Ok(true);
        }
        let policy = &self.config.failure;
        let backend = route.backends.get(index).map_or("", String::as_str);
        let url = match policy.normalise_published_url {
            true => node_href(backend),
            false => backend.to_string(),
        };
        let publish_only =
            policy.respect_hchecker_ping && self.hchecker.alive(self.router.store()).await;
        let count = route.backends.len();
        self.write
            .mark_dead(&route.dead_key, index, &url, count, ttl, publish_only)
            .await?;
        self.router.forget_key(&route.key).await;
        Ok(!publish_only)
    }

    /// Take backend `index` of `route` out of its dead set (the admin API's revive). Returns whether it was
    /// marked.
    pub async fn revive_by_operator(
        &self,
        route: &crate::routing::Route,
        index: usize,
    ) -> Result<bool, crate::store::StoreError> {
        if let Some(table) = self.router.table() {
            return Ok(table.revive(&route.dead_key, index));
        }
        let revived = self.write.revive(&route.dead_key, index).await?;
        self.router.forget_key(&route.key).await;
        Ok(revived)
    }
}

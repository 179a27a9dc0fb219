//! Rate limits (`ratelimit:<key>` hash): `rate` requests per `period`, bursts of up to `burst`, per client.
//!
//! The algorithm is GCRA (the token bucket expressed as one "theoretical arrival time" per client), the same
//! in process (`scope local`: one atomic per client in a bounded cache) and in Redis (`scope global`: a Lua
//! script, one round trip, atomic, timed by the Redis server's clock so that instances need no clock sync).
//!
//! Exactly `burst` requests pass at once; afterwards one more passes every `period / rate`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use http::Request;

use super::Refusal;
use super::{FieldResult, Fields};
use crate::store::RedisClient;

/// Clients remembered by the local limiter; the least recently seen are dropped beyond this.
const MAX_LOCAL_CLIENTS: u64 = 100_000;
/// A client key taken from a header is cut to this length.
const MAX_CLIENT_KEY: usize = 256;

/// Whose requests share one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum By {
    /// The client's IP address (the default).
    Ip,
    /// A request header (e.g. `X-UID`); requests without it fall back to the client IP.
    Header(http::HeaderName),
    /// Every request of the frontend.
    Frontend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// In this process only.
    Local,
    /// Shared by every instance through the write Redis.
    Global,
}

/// A parsed `ratelimit:<key>` hash.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Requests per `period` in the long run: what a well-behaved client may sustain (Traefik's `average`).
    pub rate: u64,
    /// The period `rate` is counted over (default 1 s), so `rate 100 period 1m` reads as operators say it.
    pub period: Duration,
    /// Requests that may pass back to back (default `rate`): real clients are bursty (a page load fires many
    /// calls at once) and should not be refused for that alone.
    pub burst: u64,
    /// Whose requests share a bucket: per IP by default, per user behind a NAT or a CDN, or the whole frontend
    /// to protect a backend whatever the source.
    pub by: By,
    /// In process (free, but each instance allows the full rate) or shared through Redis (one round trip, the
    /// limit holds across every instance).
    pub scope: Scope,
    /// `compat entree`: answer entree's 403 `{"code":100420,...}` instead of 429, for clients written against
    /// entree that only understand its codes.
    pub entree: bool,
}

impl RateLimitConfig {
    pub fn parse(fields: &Fields) -> FieldResult<RateLimitConfig> {
        fields.only(&["rate", "period", "burst", "by", "scope", "compat"], &[])?;
        let rate = fields
            .u64("rate")?
            .ok_or_else(|| ("rate".to_string(), "missing".to_string()))?;
        if rate == 0 {
            return Err(("rate".into(), "must be at least 1".into()));
        }
        let period = fields.duration("period")?.unwrap_or(Duration::from_secs(1));
        if period.is_zero() {
            return Err(("period".into(), "must be longer than 0".into()));
        }
        let burst = fields.u64("burst")?.unwrap_or(rate);
        if burst == 0 {
            return Err(("burst".into(), "must be at least 1".into()));
        }
        let by = match fields.get("by").map(str::trim) {
            None | Some("ip") => By::Ip,
            Some("frontend") => By::Frontend,
            Some(other) => match other.strip_prefix("header:") {
                Some(name) => By::Header(
                    http::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                        ("by".to_string(), format!("{name:?} is not a header name"))
                    })?,
                ),
                None => {
                    return Err((
                        "by".into(),
                        format!("{other:?} is not ip, frontend or header:<name>"),
                    ))
                }
            },
        };
        let scope = match fields.get("scope").map(str::trim) {
            None | Some("local") => Scope::Local,
            Some("global") => Scope::Global,
            Some(other) => {
                return Err((
                    "scope".into(),
                    format!("{other:?} is neither local nor global"),
                ))
            }
        };
        let entree = match fields.get("compat").map(str::trim) {
            None | Some("") => false,
            Some("entree") => true,
            Some(other) => return Err(("compat".into(), format!("{other:?} is not entree"))),
        };
        Ok(RateLimitConfig {
            rate,
            period,
            burst,
            by,
            scope,
            entree,
        })
    }

    /// The emission interval `period / rate` in microseconds (at least 1).
    fn interval_us(&self) -> u64 {
        (self.period.as_micros() / u128::from(self.rate)).clamp(1, u128::from(u64::MAX / 4)) as u64
    }

    /// The bucket size in microseconds: `burst` intervals.
    fn tolerance_us(&self) -> u64 {
        self.interval_us().saturating_mul(self.burst)
    }

    fn client_key<B>(&self, req: &Request<B>, client: IpAddr) -> String {
        match &self.by {
            By::Ip => client.to_string(),
            By::Frontend => String::new(),
            By::Header(name) => match req.headers().get(name).filter(|v| !v.is_empty()) {
                Some(v) => {
                    let bytes = &v.as_bytes()[..v.len().min(MAX_CLIENT_KEY)];
                    format!("h:{}", String::from_utf8_lossy(bytes))
                }
                None => client.to_string(),
            },
        }
    }
}

/// The answer for one request.
pub enum Verdict {
    /// Passed; the headers describe the client's bucket after this request.
    Allowed(RateHeaders),
    Limited(Refusal),
}

/// The `RateLimit-*` response headers (IETF draft-ietf-httpapi-ratelimit-headers-03, as Envoy writes them with
/// `enable_x_ratelimit_headers`), on passed responses and on 429s, so that a client can pace itself before it
/// is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    /// `RateLimit-Limit`: the burst, the most requests that may pass back to back.
    pub limit: u64,
    /// `RateLimit-Remaining`: requests that could still pass right now.
    pub remaining: u64,
    /// `RateLimit-Reset`: whole seconds (rounded up) until the bucket is full again.
    pub reset: u64,
}

impl RateHeaders {
    pub const LIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit-limit");
    pub const REMAINING: http::HeaderName = http::HeaderName::from_static("ratelimit-remaining");
    pub const RESET: http::HeaderName = http::HeaderName::from_static("ratelimit-reset");

    fn new(config: &RateLimitConfig, decision: &Decision) -> RateHeaders {
        RateHeaders {
            limit: config.burst,
            remaining: decision.remaining,
            reset: whole_secs(decision.reset_us),
        }
    }

    /// Set the three headers, replacing any a backend sent: they describe the limit this proxy enforces.
    pub fn insert(&self, headers: &mut http::HeaderMap) {
        headers.insert(Self::LIMIT, self.limit.into());
        headers.insert(Self::REMAINING, self.remaining.into());
        headers.insert(Self::RESET, self.reset.into());
    }
}

/// Microseconds as whole seconds, rounded up, at least 1 (a header saying 0 would invite a retry at once).
fn whole_secs(us: u64) -> u64 {
    us.div_ceil(1_000_000).max(1)
}

/// What GCRA decided, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests that could still pass right now.
    pub remaining: u64,
    /// Until the next request may pass (0 when allowed).
    pub retry_after_us: u64,
    /// Until the bucket is full again.
    pub reset_us: u64,
}

/// One GCRA step. `tat` is the client's theoretical arrival time (0 for a new client).
pub fn gcra(tat: u64, now: u64, interval: u64, tolerance: u64) -> (Decision, Option<u64>) {
    let tat = tat.max(now);
    let new_tat = tat + interval;
    if new_tat - now > tolerance {
        let decision = Decision {
            allowed: false,
            remaining: 0,
            retry_after_us: new_tat - tolerance - now,
            reset_us: tat - now,
        };
        return (decision, None);
    }
    let decision = Decision {
        allowed: true,
        remaining: (now + tolerance - new_tat) / interval,
        retry_after_us: 0,
        reset_us: new_tat - now,
    };
    (decision, Some(new_tat))
}

/// GCRA in Redis. KEYS[1]: the client's state; ARGV: interval and tolerance in microseconds. Returns
/// `{allowed, remaining, retry_after_us, reset_us}`. The clock is the Redis server's (`TIME`).
const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  tat = math.max(tonumber(stored), now)
end
local new_tat = tat + interval
if new_tat - now > tolerance then
  return {0, 0, new_tat - tolerance - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((now + tolerance - new_tat) / interval), 0, new_tat - now}
"#;

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA_SCRIPT));

/// The in-process buckets and the Redis script.
pub struct Limiter {
    epoch: Instant,
    local: moka::sync::Cache<(Box<str>, String), Arc<AtomicU64>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new()
    }
}

impl Limiter {
    pub fn new() -> Limiter {
        Limiter {
            epoch: Instant::now(),
            local: moka::sync::Cache::builder()
                .max_capacity(MAX_LOCAL_CLIENTS)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
        }
    }

    /// Count this request against the frontend's limit. An error means the shared state in Redis could not be
    /// reached: the caller lets the request through (fail open).
    pub async fn check<B>(
        &self,
        config: &RateLimitConfig,
        write: &RedisClient,
        frontend: &str,
        req: &Request<B>,
        client: IpAddr,
    ) -> Result<Verdict, String> {
        let client_key = config.client_key(req, client);
        let decision = match config.scope {
            Scope::Local => self.check_local(config, frontend, client_key),
            Scope::Global => check_global(config, write, frontend, &client_key).await?,
        };
        let headers = RateHeaders::new(config, &decision);
        if decision.allowed {
            return Ok(Verdict::Allowed(headers));
        }
        let reject = if config.entree {
            Refusal::RateLimitedEntree
        } else {
            Refusal::RateLimited {
                headers,
                retry_after: whole_secs(decision.retry_after_us),
            }
        };
        Ok(Verdict::Limited(reject))
    }

    fn check_local(&self, config: &RateLimitConfig, frontend: &str, client: String) -> Decision {
        let state = self
            .local
            .get_with((frontend.into(), client), || Arc::new(AtomicU64::new(0)));
        let now = self.epoch.elapsed().as_micros() as u64;
        let (interval, tolerance) = (config.interval_us(), config.tolerance_us());
        let mut tat = state.load(Ordering::Acquire);
        loop {
            let (decision, new_tat) = gcra(tat, now, interval, tolerance);
            let Some(new_tat) = new_tat else {
                return decision;
            };
            match state.compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return decision,
                Err(current) => tat = current,
            }
        }
    }
}

async fn check_global(
    config: &RateLimitConfig,
    write: &RedisClient,
    frontend: &str,
    client: &str,
) -> Result<Decision, String> {
    let mut con = write.shared().map_err(|e| e.0)?;
    let key = format!("ratelimit-state:{frontend}:{client}");
    let mut invocation = SCRIPT.key(key);
    invocation
        .arg(config.interval_us())
        .arg(config.tolerance_us());
    let reply: Vec<i64> = write
        .call(invocation.invoke_async(&mut con))
        .await
        .map_err(|e| format!("global rate limit: {e}; request let through"))?;
    let at = |i: usize| reply.get(i).copied().unwrap_or(0).max(0) as u64;
    Ok(Decision {
        allowed: at(0) == 1,
        remaining: at(1),
        retry_after_us: at(2),
        reset_us: at(3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_burst_then_refill() {
        // 2 per second (500 ms apart), burst 3.
        let (interval, tolerance) = (500_000, 1_500_000);
        let mut tat = 0;
        let now = 10_000_000;
        for i in 0..3 {
            let (d, next) = gcra(tat, now, interval, tolerance);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 2 - i);
            tat = next.unwrap();
        }
        let (d, next) = gcra(tat, now, interval, tolerance);
        assert!(!d.allowed);
        assert_eq!(next, None);
        assert_eq!(d.retry_after_us, 500_000);
        assert_eq!(d.reset_us, 1_500_000);
        // One interval later exactly one more passes.
        let (d, next) = gcra(tat, now + 500_000, interval, tolerance);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        let (d, _) = gcra(next.unwrap(), now + 500_000, interval, tolerance);
        assert!(!d.allowed);
    }

    fn config(pairs: &[(&str, &str)]) -> FieldResult<RateLimitConfig> {
        RateLimitConfig::parse(&Fields(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
    }

    #[test]
    fn parse_defaults_and_errors() {
        let c = config(&[("rate", "10")]).unwrap();
        assert_eq!(
            (c.burst, c.period, c.scope, c.by.clone()),
            (10, Duration::from_secs(1), Scope::Local, By::Ip)
        );
        let c = config(&[("rate", "1"), ("period", "1m"), ("by", "header:X-UID")]).unwrap();
        assert_eq!(c.by, By::Header(http::HeaderName::from_static("x-uid")));
        assert_eq!(c.interval_us(), 60_000_000);
        assert_eq!(config(&[]).unwrap_err().0, "rate");
        assert_eq!(config(&[("rate", "0")]).unwrap_err().0, "rate");
        assert_eq!(
            config(&[("rate", "1"), ("scope", "world")]).unwrap_err().0,
            "scope"
        );
        assert_eq!(config(&[("rate", "1"), ("rat", "1")]).unwrap_err().0, "rat");
    }
}

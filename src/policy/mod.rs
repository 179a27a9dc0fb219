//! The policy layer (docs/architecture.md#a-request-phase-by-phase): after the route lookup, before backend selection. Each feature is configured
//! per frontend in a Redis hash under its own prefix, read in the route's pipeline and parsed once per lookup
//! into the route's [`Policy`]:
//!
//! - [`guard`] (`guard:<key>`): request signatures (entree's MD5 scheme or HMAC-SHA256), a timestamp window and
//!   anti-replay nonces shared through the write Redis.
//! - [`ratelimit`] (`ratelimit:<key>`): a GCRA limit per client IP, header or frontend, in process or shared
//!   through Redis.
//! - [`breaker`] (`breaker:<key>`, defaults from `--breaker-*`): passive ejection of failing backends with a
//!   half-open probe and a cap on how many of a frontend's backends are out at once.
//!
//! A frontend without these keys pays for three empty `HGETALL` replies in its lookup pipeline and nothing else:
//! its route shares one empty [`Policy`], and [`Policies::admit`] returns at once.
//!
//! Bad configuration never crashes anything: a malformed guard fails closed (403), a malformed rate limit or
//! breaker fails open; each is logged naming the key and field.

pub mod breaker;
pub mod guard;
pub mod ratelimit;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use http::{header, Request};

use crate::body::{BufferError, Buffered, RequestBody};
use crate::routing::Route;
use crate::rt::workers::PerWorker;
use crate::store::RedisClient;

pub use breaker::{BreakerDefaults, Outcome};
pub use guard::GuardReason;

pub use crate::store::{RawHash, RawPolicy, HASH_PREFIXES};

/// A configuration hash that cannot be used, with what an operator needs to fix it. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedPolicy {
    /// The Redis key, e.g. `guard:www.example.com`.
    pub key: String,
    /// The offending field (empty when the whole key is wrong, e.g. not a hash).
    pub field: String,
    pub why: String,
}

impl std::fmt::Display for MalformedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "malformed {}: {}", self.key, self.why)
        } else {
            write!(
                f,
                "malformed {}: field {:?}: {}",
                self.key, self.field, self.why
            )
        }
    }
}

/// A frontend's parsed policies; `None` where the frontend does not use a feature.
#[derive(Debug, Default)]
pub struct Policy {
    pub guard: Option<Result<guard::GuardConfig, MalformedPolicy>>,
    pub ratelimit: Option<Result<ratelimit::RateLimitConfig, MalformedPolicy>>,
    pub breaker: Option<Result<breaker::BreakerOverrides, MalformedPolicy>>,
}

static NO_POLICY: LazyLock<Arc<Policy>> = LazyLock::new(|| Arc::new(Policy::default()));

impl Policy {
    /// The shared empty policy of every frontend that configures nothing.
    pub fn none() -> Arc<Policy> {
        NO_POLICY.clone()
    }

    /// Parse the hashes read for frontend key `key`.
    pub fn parse(key: &str, raw: RawPolicy) -> Arc<Policy> {
        if raw.guard.is_absent() && raw.ratelimit.is_absent() && raw.breaker.is_absent() {
            return Policy::none();
        }
        Arc::new(Policy {
            guard: parse_hash(
                &format!("guard:{key}"),
                raw.guard,
                guard::GuardConfig::parse,
            ),
            ratelimit: parse_hash(
                &format!("ratelimit:{key}"),
                raw.ratelimit,
                ratelimit::RateLimitConfig::parse,
            ),
            breaker: parse_hash(
                &format!("breaker:{key}"),
                raw.breaker,
                breaker::BreakerOverrides::parse,
            ),
        })
    }

    fn is_empty(&self) -> bool {
        self.guard.is_none() && self.ratelimit.is_none() && self.breaker.is_none()
    }
}

fn parse_hash<T>(
    key: &str,
    raw: RawHash,
    parse: impl FnOnce(&Fields) -> Result<T, (String, String)>,
) -> Option<Result<T, MalformedPolicy>> {
    let error = |field: String, why: String| MalformedPolicy {
        key: key.to_string(),
        field,
        why,
    };
    match raw {
        RawHash::Absent => None,
        RawHash::Error(e) => Some(Err(error(String::new(), e))),
        RawHash::Fields(fields) => {
            Some(parse(&Fields(fields)).map_err(|(field, why)| error(field, why)))
        }
    }
}

/// The fields of one hash, with typed getters whose errors name the field.
pub struct Fields(Vec<(String, String)>);

type FieldResult<T> = Result<T, (String, String)>;

impl Fields {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Every field is one of `known` (or starts with one of `prefixes`): a typo must not be silently ignored.
    fn only(&self, known: &[&str], prefixes: &[&str]) -> FieldResult<()> {
        for (k, _) in self.iter() {
            if !known.contains(&k) && !prefixes.iter().any(|p| k.starts_with(p)) {
                return Err((k.to_string(), "unknown field".into()));
            }
        }
        Ok(())
    }

    fn u64(&self, name: &str) -> FieldResult<Option<u64>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| (name.to_string(), format!("{v:?} is not a whole number"))),
        }
    }

    /// Seconds as a whole number, or a Go duration (`500ms`, `1m30s`).
    fn duration(&self, name: &str) -> FieldResult<Option<Duration>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => parse_duration(v)
                .map(Some)
                .map_err(|_| (name.to_string(), format!("{v:?} is not a duration"))),
        }
    }
}

/// Whole seconds (`30`) or a Go duration (`500ms`, `1m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    crate::config::flags::parse_go_duration(text)
}

/// One of the three policy features, for the metrics' `feature` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    Guard = 0,
    RateLimit = 1,
    Breaker = 2,
}

impl Feature {
    pub const ALL: [Feature; 3] = [Feature::Guard, Feature::RateLimit, Feature::Breaker];

    pub fn label(self) -> &'static str {
        match self {
            Feature::Guard => "guard",
            Feature::RateLimit => "ratelimit",
            Feature::Breaker => "breaker",
        }
    }
}

/// Counters of what the policy layer did, read by the metrics endpoint when it is scraped.
#[derive(Debug, Default)]
pub struct PolicyStats {
    guard_rejects: [AtomicU64; GuardReason::ALL.len()],
    rate_limited: AtomicU64,
    ratelimit_errors: AtomicU64,
    breaker_ejections: AtomicU64,
    breaker_probes: AtomicU64,
    breaker_recoveries: AtomicU64,
    config_errors: [AtomicU64; Feature::ALL.len()],
}

impl PolicyStats {
    /// Requests refused by a guard for `reason`.
    pub fn guard_rejects(&self, reason: GuardReason) -> u64 {
        self.guard_rejects[reason as usize].load(Ordering::Relaxed)
    }

    /// Requests refused by a rate limit (429, or entree's 403 100420).
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Backends ejected by a breaker (closed → open, and half-open → open after a failed probe).
    pub fn breaker_ejections(&self) -> u64 {
        self.breaker_ejections.load(Ordering::Relaxed)
    }

    /// Probe requests let through to a half-open backend.
    pub fn breaker_probes(&self) -> u64 {
        self.breaker_probes.load(Ordering::Relaxed)
    }

    /// Backends taken back after a successful probe (half-open → closed).
    pub fn breaker_recoveries(&self) -> u64 {
        self.breaker_recoveries.load(Ordering::Relaxed)
    }

    /// Global rate-limit checks that Redis could not answer (the request was let through).
    pub fn ratelimit_errors(&self) -> u64 {
        self.ratelimit_errors.load(Ordering::Relaxed)
    }

    /// Requests that met a malformed policy hash of `feature`.
    pub fn config_errors(&self, feature: Feature) -> u64 {
        self.config_errors[feature as usize].load(Ordering::Relaxed)
    }

    fn count_guard(&self, reason: GuardReason) {
        self.guard_rejects[reason as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Why the policy layer refused a request. The proxy turns it into its answer (`proxy::reject`), so that the
/// policies never decide how a response looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A guard (`guard:<key>`) refused the request, for this reason.
    Guard(GuardReason),
    /// A body read for `sign_body` did not arrive within the client read timeout.
    BodyTimeout,
    /// A body read for `sign_body` broke off (the client's connection or stream failed mid-body).
    IncompleteBody,
    /// The nonce store (the write Redis) failed, so a signed request cannot be checked for replay.
    Unavailable,
    /// Over a `ratelimit:<key>` limit: the limit's headers, and when to come back (seconds).
    RateLimited {
        headers: ratelimit::RateHeaders,
        retry_after: u64,
    },
    /// Over a limit with `compat entree`: entree's own answer.
    RateLimitedEntree,
}

/// Why a body read for `sign_body` ended the request.
enum BodyFailure {
    /// A guard rejection, counted as such (over `max_body`, or refused from the head alone).
    Guard(GuardReason),
    /// The client's fault but not the guard's verdict (a timeout, a broken body).
    Other(Refusal),
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// How often the same fail-open configuration error is logged.
const CONFIG_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The process-wide state of the policy layer: rate-limit buckets, breaker states, counters.
pub struct Policies {
    /// The write Redis: nonces and global rate limits are shared by every instance through it. One client per
    /// worker slot (see `workers`), so that the round trip a global limit costs stays on the request's thread.
    writes: PerWorker<RedisClient>,
    /// How long a body read for `sign_body` may take to arrive: the client read timeout (or the header one),
    /// so that a slow sender cannot hold a buffer forever.
    body_timeout: Duration,
    limiter: ratelimit::Limiter,
    breakers: breaker::Breakers,
    stats: Arc<PolicyStats>,
    /// Fail-open configuration errors logged recently, so a busy misconfigured frontend logs one line per 10 s.
    logged: moka::sync::Cache<String, ()>,
}

/// What a request that passed the policies carries into backend selection.
pub struct Pass {
    breaker: Option<breaker::Handle>,
    /// The frontend's rate limit after this request, for the response's `RateLimit-*` headers.
    pub rate: Option<ratelimit::RateHeaders>,
}

impl Pass {
    /// No policy applies (WebSocket tunnels, frontends without a breaker).
    pub fn open() -> Pass {
        Pass {
            breaker: None,
            rate: None,
        }
    }

    /// [`Route::first_live`], also skipping backends that the breaker ejected. May claim a half-open backend's
    /// probe: call it only for the backend that will be tried.
    pub fn first_live(&self, route: &Route, start: usize) -> Option<usize> {
        match &self.breaker {
            None => route.first_live(start),
            Some(handle) => route.first_live_by(start, |i| handle.admits(route, i)),
        }
    }

    /// Feed the result of sending the request to backend `index` to the breaker.
    pub fn record(
        &self,
        route: &Route,
        index: usize,
        outcome: Outcome,
        log: &(dyn Fn(&str) + Sync),
    ) {
        if let Some(handle) = &self.breaker {
            handle.record(route, index, outcome, log);
        }
    }
}

impl Policies {
    pub fn new(
        writes: PerWorker<RedisClient>,
        breaker_defaults: BreakerDefaults,
        body_timeout: Duration,
    ) -> Policies {
        let stats = Arc::new(PolicyStats::default());
        Policies {
            limiter: ratelimit::Limiter::new(),
            breakers: breaker::Breakers::new(breaker_defaults, stats.clone()),
            writes,
            body_timeout,
            stats,
            logged: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(CONFIG_LOG_INTERVAL)
                .build(),
        }
    }

    /// The write Redis client of the calling thread's worker.
    fn write(&self) -> &RedisClient {
        self.writes.current()
    }

    /// The counters, for metrics.
    pub fn stats(&self) -> &Arc<PolicyStats> {
        &self.stats
    }

    /// Counts the backends that breakers hold out of rotation right now (read when metrics are scraped).
    pub fn ejected_counter(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        self.breakers.ejected_counter()
    }

    /// Whether the breaker holds backend `url` of frontend `key` out of rotation right now (read-only).
    pub fn is_ejected(&self, key: &str, url: &str) -> bool {
        self.breakers.is_ejected(key, url)
    }

    /// Whether `route` admits every request unchecked (no guard, rate limit or breaker applies to it).
    pub fn open(&self, route: &Route) -> bool {
        route.policy.is_empty() && !self.breakers.on_by_default()
    }

    /// Run the frontend's guard and rate limit on a request. `host` is the Host the request was routed by;
    /// `log` writes one error-log line about this request. With `sign_body`, the body is read here and the
    /// request leaves with it buffered.
    pub async fn admit(
        &self,
        route: &Route,
        req: &mut Request<RequestBody>,
        host: &str,
        client: IpAddr,
        log: &(dyn Fn(&str) + Sync),
    ) -> Result<Pass, Refusal> {
        if self.open(route) {
            return Ok(Pass::open());
        }
        let policy = &route.policy;
        // Guard: signature and timestamp first; the nonce is spent only once the rate limit let the request
        // through, so that a client told to retry later can resend the same signed request.
        let guard = match &policy.guard {
            None => None,
            Some(Err(e)) => {
                self.count_config_error(Feature::Guard);
                self.stats.count_guard(GuardReason::Misconfigured);
                log(&e.to_string());
                return Err(Refusal::Guard(GuardReason::Misconfigured));
            }
            Some(Ok(config)) => {
                let verified = match self.read_signed_body(config, req).await {
                    Ok(body_sha256) => config.verify(req, host, body_sha256.as_deref()),
                    Err(BodyFailure::Guard(reason)) => Err(reason),
                    Err(BodyFailure::Other(reject)) => return Err(reject),
                };
                match verified {
                    Ok(nonce) => Some((config, nonce)),
                    Err(reason) => {
                        self.stats.count_guard(reason);
                        return Err(reason.reject());
                    }
                }
            }
        };
        let mut rate = None;
        match &policy.ratelimit {
            None => {}
            Some(Err(e)) => self.log_fail_open(Feature::RateLimit, e, log),
            Some(Ok(limit)) => {
                let verdict = self
                    .limiter
                    .check(limit, self.write(), &route.key, req, client)
                    .await;
                match verdict {
                    Ok(ratelimit::Verdict::Allowed(headers)) => rate = Some(headers),
                    Ok(ratelimit::Verdict::Limited(reject)) => {
                        bump(&self.stats.rate_limited);
                        return Err(reject);
                    }
                    Err(e) => {
                        bump(&self.stats.ratelimit_errors);
                        self.log_throttled(&format!("ratelimit:{}", route.key), &e, log)
                    }
                }
            }
        }
        if let Some((config, Some(nonce))) = guard {
            match config.spend_nonce(self.write(), &route.key, &nonce).await {
                Ok(true) => {}
                Ok(false) => {
                    self.stats.count_guard(GuardReason::Replayed);
                    return Err(GuardReason::Replayed.reject());
                }
                Err(e) => {
                    log(&format!("guard nonce store: {e}"));
                    return Err(Refusal::Unavailable);
                }
            }
        }
        let mut pass = self.breaker_pass(route, log);
        pass.rate = rate;
        Ok(pass)
    }

    /// The frontend's breaker alone, for connections that carry no HTTP request to guard or rate-limit (the SNI
    /// passthrough): an ejected backend gets no connection either.
    pub fn breaker_pass(&self, route: &Route, log: &(dyn Fn(&str) + Sync)) -> Pass {
        let breaker = match &route.policy.breaker {
            Some(Err(e)) => {
                self.log_fail_open(Feature::Breaker, e, log);
                self.breakers.handle(&route.key, None)
            }
            Some(Ok(overrides)) => self.breakers.handle(&route.key, Some(overrides)),
            None => self.breakers.handle(&route.key, None),
        };
        Pass {
            breaker,
            rate: None,
        }
    }

    /// With `sign_body`: refuse what the head alone refuses, then read the body whole (at most `max_body`
    /// bytes), leave it in the request as a buffered body with its Content-Length, and return its SHA-256.
    /// Without `sign_body`: nothing (the body keeps streaming).
    async fn read_signed_body(
        &self,
        config: &guard::GuardConfig,
        req: &mut Request<RequestBody>,
    ) -> Result<Option<String>, BodyFailure> {
        if !config.sign_body {
            return Ok(None);
        }
        config.precheck(req).map_err(BodyFailure::Guard)?;
        let incoming =
            match std::mem::replace(req.body_mut(), RequestBody::Buffered(Buffered::default())) {
                RequestBody::Streaming(incoming) | RequestBody::Watched(incoming, _) => incoming,
                // Read already (not a path the proxy takes today): hash what is there.
                RequestBody::Buffered(body) => {
                    if body.len() > config.max_body {
                        return Err(BodyFailure::Guard(GuardReason::BodyTooLarge));
                    }
                    let mut hash = guard::BodyHash::default();
                    body.chunks().for_each(|chunk| hash.update(chunk));
                    *req.body_mut() = RequestBody::Buffered(body);
                    return Ok(Some(hash.hex()));
                }
                // Mirroring tees the body after the policies ran: never seen here.
                teed @ RequestBody::Teed(..) => {
                    *req.body_mut() = teed;
                    return Err(BodyFailure::Guard(GuardReason::BodyTooLarge));
                }
            };
        let mut hash = guard::BodyHash::default();
        let body = crate::body::buffer(incoming, config.max_body, self.body_timeout, |chunk| {
            hash.update(chunk)
        })
        .await
        .map_err(|e| match e {
            BufferError::TooLarge => BodyFailure::Guard(GuardReason::BodyTooLarge),
            BufferError::Timeout => BodyFailure::Other(Refusal::BodyTimeout),
            BufferError::Read(_) => BodyFailure::Other(Refusal::IncompleteBody),
        })?;
        let headers = req.headers_mut();
        let framed = headers.contains_key(header::CONTENT_LENGTH)
            || headers.contains_key(header::TRANSFER_ENCODING);
        // The body is sent whole with its length; the client's framing and its wish to be told to go on with
        // the body (already read) are spent.
        headers.remove(header::TRANSFER_ENCODING);
        headers.remove(header::EXPECT);
        if framed || !body.is_empty() {
            headers.insert(header::CONTENT_LENGTH, body.len().into());
        }
        *req.body_mut() = RequestBody::Buffered(body);
        Ok(Some(hash.hex()))
    }

    fn count_config_error(&self, feature: Feature) {
        bump(&self.stats.config_errors[feature as usize]);
    }

    fn log_fail_open(&self, feature: Feature, e: &MalformedPolicy, log: &(dyn Fn(&str) + Sync)) {
        self.count_config_error(feature);
        let text = format!("{e}; ignored");
        self.log_throttled(&format!("{}\n{}", e.key, e.field), &text, log);
    }

    /// Log `text` unless a line with the same `topic` was written in the last 10 s.
    fn log_throttled(&self, topic: &str, text: &str, log: &(dyn Fn(&str) + Sync)) {
        if self.logged.contains_key(topic) {
            return;
        }
        self.logged.insert(topic.to_string(), ());
        log(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> RawHash {
        RawHash::from_pairs(pairs)
    }

    #[test]
    fn nothing_configured_shares_one_policy() {
        let a = Policy::parse("a.com", RawPolicy::default());
        let b = Policy::parse("b.com", RawPolicy::default());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.is_empty());
    }

    #[test]
    fn errors_name_key_and_field() {
        let raw = RawPolicy {
            ratelimit: fields(&[("rate", "ten")]),
            breaker: RawHash::Error("WRONGTYPE Operation against a key".into()),
            ..Default::default()
        };
        let policy = Policy::parse("a.com", raw);
        let e = policy.ratelimit.as_ref().unwrap().as_ref().unwrap_err();
        assert_eq!(e.key, "ratelimit:a.com");
        assert_eq!(e.field, "rate");
        assert_eq!(
            e.to_string(),
            "malformed ratelimit:a.com: field \"rate\": \"ten\" is not a whole number"
        );
        let e = policy.breaker.as_ref().unwrap().as_ref().unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed breaker:a.com: WRONGTYPE Operation against a key"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
    }
}

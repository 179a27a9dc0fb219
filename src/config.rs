//! The resolved configuration: every policy the proxy applies, with the reason it exists.
//!
//! The CLI (and later the Hipache config file) only fill this struct; nothing else reads flags.
//! Behaviour that differs between PlanB and Hipache is a field here, never a branch on a "mode".

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `run` needs to start the proxy.
#[derive(Debug, Clone)]
pub struct Config {
    /// Plain HTTP listener; `None` when `--listen disabled`.
    pub listen: Option<SocketAddr>,
    /// Redis used for route lookups and `__ping__` (PlanB's "read" client).
    pub read_redis: RedisConfig,
    /// Redis used for dead marks and PUBLISH (PlanB's "write" client), so that a read replica can serve lookups.
    pub write_redis: RedisConfig,
    /// Where access-log lines go.
    pub access_log: AccessLogTarget,
    /// Timeouts on both sides of the proxy.
    pub timeouts: Timeouts,
    /// TTL of `dead:<key>` after a passive mark; PlanB's `--dead-backend-time` (0 is replaced by 30).
    pub dead_backend_ttl: Duration,
    /// Upper bound for holding response bytes before they are written to the client (PlanB's `--flush-interval`).
    /// hypache writes each chunk as soon as it arrives, which is within any interval.
    pub flush_interval: Duration,
    /// Header that carries the request id (canonical form, e.g. `X-Request-Id`); `None` disables request ids.
    pub request_id_header: Option<http::HeaderName>,
    /// The lookup extensions and failover that are on by default in both presets.
    pub extensions: Extensions,
    /// Limits that protect the proxy from hostile clients (DESIGN §8).
    pub limits: Limits,
    /// `--backend-cache`: reuse a lookup for 2 s instead of reading Redis on every request (PlanB §1.4).
    pub backend_cache: bool,
    /// While the read Redis fails, requests for hosts seen within this window are served from their last
    /// route instead of failing; `None` restores PlanB's 503.
    pub stale_routes_ttl: Option<Duration>,
    /// `--active-healthcheck`: probe backends marked dead and revive them (PlanB §4.3), so that a recovered
    /// backend takes traffic within about a second instead of after the dead set's TTL.
    pub active_healthcheck: bool,
    /// The name written into health-check lock keys; the OS hostname by default, as PlanB. Processes with the
    /// same id may monitor the same backend at once.
    pub monitor_id: String,
    /// At start-up, keep retrying an unreachable Redis for this long (orchestrators that start the proxy
    /// before Redis); `None` fails at once as PlanB does.
    pub wait_for_redis: Option<Duration>,
    /// `--breaker-*`: the circuit breaker every frontend gets (off unless `failures` is set); a `breaker:<key>`
    /// hash in Redis overrides it per frontend.
    pub breaker: crate::policy::BreakerDefaults,
}

/// How to reach one Redis server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// TCP host and port, or a unix socket path.
    pub addr: RedisAddr,
    /// Sent with AUTH when set. Never logged.
    pub password: Option<String>,
    /// Selected with SELECT.
    pub db: i64,
}

/// The network address of a Redis server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAddr {
    /// `--*-redis-network tcp`.
    Tcp { host: String, port: u16 },
    /// `--*-redis-network unix`: the host flag is the socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for RedisAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            RedisAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            RedisAddr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Where the access log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Appended to a file created with mode 0660, as PlanB does.
    File(PathBuf),
    /// Standard output, for containers.
    Stdout,
    /// Local syslog, tag `hipache`, facility LOCAL0, so existing syslog rules keep matching.
    Syslog,
    /// No access log at all; no file is created.
    None,
}

/// Timeouts on the client side (downstream) and the backend side (upstream).
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Backend round trip up to the response headers; expiry gives 503 and does not mark the backend dead.
    pub request: Option<Duration>,
    /// TCP connect to a backend; expiry marks the backend dead.
    pub dial: Duration,
    /// Whole request head must arrive within this after its first byte (Go's ReadTimeout, applied to the head).
    pub client_read: Option<Duration>,
    /// Request head must arrive within this after its first byte; defaults to 60 s so a slow client cannot hold a
    /// connection forever (DESIGN §8).
    pub client_read_header: Duration,
    /// The response must be written within this after the request head was read (Go's WriteTimeout).
    pub client_write: Option<Duration>,
    /// An idle keep-alive connection is closed after this (Go's IdleTimeout; falls back to `client_read`).
    pub client_idle: Option<Duration>,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish before the process exits anyway.
    pub shutdown: Duration,
}

/// Behaviour that goes beyond PlanB, each on by default and each with a flag to restore PlanB bit for bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extensions {
    /// After the exact and port-stripped lookups miss, retry with the host lower-cased: DNS names are
    /// case-insensitive and Hipache lower-cases too.
    pub lowercase_lookup: bool,
    /// Then try Hipache's wildcard frontends `*.<parent>` (at most 5 levels), which PlanB users ask for (planb#46).
    pub wildcard_lookup: bool,
    /// Then the `frontend:*` catch-all of Hipache.
    pub catch_all: bool,
    /// When connecting to the chosen backend fails (nothing was sent), mark it dead and try the next live one, so
    /// a client never sees a 503 that another backend could have served (planb#9).
    pub failover: bool,
}

impl Default for Extensions {
    fn default() -> Self {
        Extensions {
            lowercase_lookup: true,
            wildcard_lookup: true,
            catch_all: true,
            failover: true,
        }
    }
}

/// Bounds on what a client may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// Most header fields accepted in one request head; more gets 431.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
        }
    }
}

impl Config {
    /// A configuration with PlanB's defaults, listening on `listen` and reading one Redis for both roles.
    /// Used by tests and embedders; the CLI builds its own from flags.
    pub fn new(listen: SocketAddr, redis: RedisConfig) -> Config {
        Config {
            listen: Some(listen),
            read_redis: redis.clone(),
            write_redis: redis,
            access_log: AccessLogTarget::None,
            timeouts: Timeouts {
                request: Some(Duration::from_secs(30)),
                dial: Duration::from_secs(10),
                client_read: None,
                client_read_header: Duration::from_secs(60),
                client_write: None,
                client_idle: None,
                shutdown: Duration::from_secs(30),
            },
            dead_backend_ttl: Duration::from_secs(30),
            flush_interval: Duration::from_millis(10),
            request_id_header: None,
            extensions: Extensions::default(),
            limits: Limits::default(),
            backend_cache: false,
            active_healthcheck: false,
            monitor_id: crate::health::hostname(),
            stale_routes_ttl: Some(Duration::from_secs(300)),
            wait_for_redis: None,
            breaker: Default::default(),
        }
    }
}

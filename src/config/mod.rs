//! The resolved configuration: every policy the proxy applies, with the reason it exists.
//!
//! The CLI (and later the Hipache config file) only fill this struct; nothing else reads flags.
//! Behaviour that differs between PlanB and Hipache is a field here, never a branch on a "mode".

pub mod admin;
pub mod breaker;
pub mod flags;
pub mod go_duration;
pub mod hipache;
pub mod nfork;
pub mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How long `--backend-cache` keeps a lookup (PlanB's 2 s).
pub const BACKEND_CACHE_TTL: Duration = Duration::from_secs(2);
/// Hosts kept by `--backend-cache`. PlanB kept 100; an edge with more frontends than that would read Redis
/// for most requests, so hypache keeps more, still bounded.
pub const BACKEND_CACHE_SIZE: u64 = 10_000;

/// This machine's name: PlanB's default `--monitor-id`, written into health-check lock values.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// An `http://` or `https://` URL with a host, for `--access-log-url`.
pub fn log_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the scheme must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    Ok(url)
}

/// Everything `run` needs to start the proxy.
#[derive(Debug, Clone)]
pub struct Config {
    /// Plain HTTP listener; `None` when `--listen disabled`.
    pub listen: Option<SocketAddr>,
    /// TLS listener (`--tls-listen`); `None` when empty, so TLS costs nothing unless asked for.
    pub tls_listen: Option<SocketAddr>,
    /// What the TLS listener offers and where its certificates come from.
    pub tls: TlsSettings,
    /// What the plain listener speaks: HTTP (native) or the SNI passthrough.
    pub engine: Engine,
    /// Extra CA certificates (PEM) trusted for `https://` backends, next to the built-in web roots, so that
    /// private backends with an internal CA can be verified instead of not verified at all.
    pub backend_ca_file: Option<PathBuf>,
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
    /// Limits that protect the proxy from hostile clients (docs/routing.md#security-defaults).
    pub limits: Limits,
    /// `--backend-cache`: reuse a lookup for 2 s instead of reading Redis on every request (docs/compat/planb.md#backend-cache).
    pub backend_cache: bool,
    /// `--backend-cache-events`: reuse a lookup until Redis's keyspace notifications say one of its keys
    /// changed, so that no request reads Redis and no change waits longer than the notification (route
    /// `events`). Needs `notify-keyspace-events` on the read Redis; without it, entries live 2 s.
    pub backend_cache_events: bool,
    /// `--routes FILE`: frontends come from this TOML file (watched) instead of Redis, so that the proxy runs
    /// with nothing beside it; dead marks are then kept in process.
    pub routes_file: Option<PathBuf>,
    /// `--etcdurl`: frontends come from etcd under `etcd.key` (httprouter's layout), watched, instead of
    /// Redis; the httprouter preset.
    pub etcd: Option<EtcdConfig>,
    /// The backend cache's lifetime and capacity (0: unbounded) when it is on: PlanB's 2 s and 10,000 hosts,
    /// or Hipache's `server.lruCache` `{ttl, size}`.
    pub backend_cache_limits: (Duration, u64),
    /// While the read Redis fails, requests for hosts seen within this window are served from their last
    /// route instead of failing; `None` restores PlanB's 503.
    pub stale_routes_ttl: Option<Duration>,
    /// `--active-healthcheck`: probe backends marked dead and revive them (docs/compat/planb.md#active-health-check), so that a recovered
    /// backend takes traffic within about a second instead of after the dead set's TTL.
    pub active_healthcheck: bool,
    /// The name written into health-check lock keys; the OS hostname by default, as PlanB. Processes with the
    /// same id may monitor the same backend at once.
    pub monitor_id: String,
    /// At start-up, keep retrying an unreachable Redis for this long, then exit 1 as PlanB did (for those who
    /// want a failed start to be loud); `None` starts anyway and answers 503 until Redis answers.
    pub wait_for_redis: Option<Duration>,
    /// `--breaker-*`: the circuit breaker every frontend gets (off unless `failures` is set); a `breaker:<key>`
    /// hash in Redis overrides it per frontend.
    pub breaker: breaker::BreakerDefaults,
    /// How access-log lines are written: PlanB's line (the default), Hipache's, or JSON for log shippers.
    pub access_log_format: AccessLogFormat,
    /// Which requests are logged, and what their byte count is: PlanB's or Hipache's rules.
    pub access_log_rules: AccessLogRules,
    /// `--access-log-url`: every entry is also POSTed as a JSON line, in batches, to this URL (httprouter's
    /// `-logurl`), for log pipelines that take HTTP and not files.
    pub access_log_url: Option<url::Url>,
    /// The Prometheus listener (PlanB's `--metrics-address`) and how detailed it is.
    pub metrics: MetricsConfig,
    /// The event log on standard error (start-up lines, PlanB's `ERROR in` lines, hypache's own events).
    pub event_log: EventLogConfig,
    /// Add a tokio task dump to the SIGUSR1 dump. Off by default: tokio's task dump is unstable and can stall
    /// the runtime (see `dump`), which an operator must choose knowingly.
    pub task_dump: bool,
    /// Worker threads serving connections (0: one per CPU). Each runs its own event loop with its own backend
    /// pool and read-Redis connection, so that a request never hops between threads (see `workers`).
    pub workers: usize,
    /// How a frontend is matched and a backend chosen: PlanB's round robin, or Hipache's random choice with
    /// its lookup rules.
    pub routing: RoutingPolicy,
    /// What happens when a backend fails: which failures mark it dead, and how often the request is retried.
    pub failure: FailurePolicy,
    /// How the answers hypache writes itself look (PlanB's plain text, or Hipache's HTML pages).
    pub responses: ResponseStyle,
    /// Which forwarding headers are added to requests, and whether the Host is rewritten.
    pub forwarding: ForwardingPolicy,
    /// Prepended to every `frontend:` and `dead:` key (Hipache's `redis://...#prefix`), so several proxies can
    /// share one Redis database; the `dead` channel is never prefixed. Empty for PlanB.
    pub key_prefix: String,
    /// Which signal writes the dump and which reopen the access log: Hipache's logrotate setups send SIGUSR1
    /// to reopen, PlanB's dump is on SIGUSR1.
    pub signals: SignalPolicy,
    /// Idle keep-alive connections kept per backend; 0 opens a new connection for every request (Hipache's
    /// `httpKeepAlive: false`, its default). PlanB's transport keeps 100.
    pub max_idle_per_backend: usize,
    /// Listeners beyond `listen`/`tls_listen`: Hipache binds every entry of `http.bind` and `https.bind`, each
    /// HTTPS one with its own certificate.
    pub more_listeners: Vec<ListenerSpec>,
    /// Drop root privileges to this user and group once the listeners are bound (Hipache's `user`/`group`),
    /// so a proxy on port 80 does not serve as root. `None` keeps the current identity.
    pub run_as: Option<RunAs>,
    /// The admin API and dashboard (`--admin-address`, `--admin-token`): off by default, so that seeing and
    /// changing routes from a browser or `curl` is something an operator turns on knowingly.
    pub admin: admin::AdminConfig,
}

impl Config {
    /// The configuration as `--dry` prints it: everything resolved, Redis passwords masked.
    pub fn describe(&self) -> String {
        let mut shown = self.clone();
        for redis in [&mut shown.read_redis, &mut shown.write_redis] {
            if redis.password.is_some() {
                redis.password = Some("********".into());
            }
        }
        format!("{shown:#?}")
    }
}

/// Where httprouter's routes live in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// The etcd client URL (`--etcdurl`), e.g. `http://127.0.0.1:2379`.
    pub url: url::Url,
    /// The key prefix (`--etcdkey`, `/domains`): keys are `<key>/<host>/<routeName>`, values backend URLs.
    pub key: String,
    /// `--etcd-api`: the v3 API (the default), or the v2 keys API httprouter itself used, for an etcd that
    /// still holds its routes there.
    pub api: EtcdApi,
}

/// Which etcd API holds the routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdApi {
    V3,
    V2,
}

/// One more listener.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    pub addr: SocketAddr,
    /// `None`: plain HTTP; otherwise TLS with these settings.
    pub tls: Option<TlsSettings>,
}

/// The identity to switch to after binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// A user name or a numeric uid.
    pub user: String,
    /// A group name or a numeric gid; `None` is the user's primary group.
    pub group: Option<String>,
}

/// How backends are chosen among the live ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selection {
    /// A counter per Host picks the start index (PlanB): an even spread, predictable in tests.
    #[default]
    RoundRobin,
    /// Uniformly at random among the live backends (Hipache): no shared counter to contend on, and the spread
    /// Hipache users are used to.
    Random,
}

/// Which dead set a route reads and marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeadSetKey {
    /// `dead:<frontend key that matched>` (PlanB; `dead:*.a.com` for a wildcard).
    #[default]
    FrontendKey,
    /// `dead:<request hostname>` (Hipache): every subdomain under a wildcard has its own dead set, which is
    /// what hipache-hchecker writes.
    RequestHost,
}

/// Frontend matching and backend selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoutingPolicy {
    pub selection: Selection,
    /// Look up the Host without its port (lower-cased when it had one) instead of the Host as received first:
    /// Hipache never read `frontend:<host>:<port>`.
    pub strip_port_first: bool,
    /// A list holding only the identifier still matches (and answers "no valid backend") instead of falling
    /// through to the next candidate: Hipache's "first non-empty list wins", which operators use to park a
    /// host without letting a wildcard catch it.
    pub identifier_only_matches: bool,
    pub dead_set: DeadSetKey,
    /// Only the Host exactly as sent, port included, is looked up (httprouter): no port-stripped, lower-cased,
    /// wildcard or catch-all fallback, so a route never catches a Host it was not written for.
    pub exact_host_only: bool,
}

/// Dead marking and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailurePolicy {
    /// A frontend needs at least this many backends for one to be marked dead: Hipache never marked the only
    /// backend (there is nothing to fail over to, and a dead mark would turn a blip into TTL seconds of 502s).
    pub min_backends_to_mark: usize,
    /// A name that does not resolve marks the backend dead (PlanB); Hipache only marked refused connections
    /// and connect timeouts.
    pub mark_on_resolve_failure: bool,
    /// Backend statuses that mark the backend dead while the answer is still passed on unchanged; empty for
    /// PlanB. Hipache (as observed): 501-599 except 503, so an overloaded backend saying 503 is not ejected.
    pub dead_statuses: Vec<std::ops::RangeInclusive<u16>>,
    /// After a connection failure (nothing sent yet), how many more attempts a request gets; `None` tries each
    /// live backend once (the failover extension). Hipache's `retryOnError`; 0 answers at once.
    pub retry_limit: Option<u32>,
    /// Read the route again from Redis before each retry (Hipache), so a mark another process just wrote is
    /// seen; otherwise the next live backend of the route already read is tried.
    pub relookup_on_retry: bool,
    /// While `hchecker_ping` holds a timestamp less than 30 s old, a dead mark only PUBLISHes (no SADD): an
    /// external checker (hipache-hchecker) owns the dead sets then. Off for PlanB, which never read it.
    pub respect_hchecker_ping: bool,
    /// Publish the backend URL normalised as Node's `url.parse().href` (`http://h:p/`), which is what
    /// Hipache published and what existing subscribers compare against.
    pub normalise_published_url: bool,
}

impl Default for FailurePolicy {
    /// PlanB's rules.
    fn default() -> Self {
        FailurePolicy {
            min_backends_to_mark: 1,
            mark_on_resolve_failure: true,
            dead_statuses: Vec::new(),
            retry_limit: None,
            relookup_on_retry: false,
            respect_hchecker_ping: false,
            normalise_published_url: false,
        }
    }
}

/// How the proxy's own answers look.
#[derive(Debug, Clone, Default)]
pub enum ResponseStyle {
    /// PlanB's statuses and plain-text bodies (400 `no such route`, 503 for dead or failing backends), and
    /// `__ping__` answered after a Redis PING.
    #[default]
    Planb,
    /// Hipache's: 400 for an unknown host, 502 when no backend is usable, 504 when a backend is silent, with
    /// HTML pages and no-cache headers; `__ping__` answers `ok` without touching Redis; `X-Debug` headers.
    Hipache(std::sync::Arc<ErrorPages>),
    /// httprouter's: an unknown host or an empty pool is 503 `This site is currently unavailable, please try
    /// again later.`, a backend that fails is 502; `__ping__` as PlanB's.
    Httprouter,
}

/// Hipache's error pages, read once at start-up from `server.staticDir`.
#[derive(Clone, Default)]
pub struct ErrorPages {
    /// Where they were read from; `None` means hypache's built-in pages.
    pub dir: Option<PathBuf>,
    /// `error_<code>.html` by status code.
    pub by_status: std::collections::BTreeMap<u16, bytes::Bytes>,
    /// `error_default.html`, for statuses without a page of their own.
    pub default: Option<bytes::Bytes>,
}

impl std::fmt::Debug for ErrorPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = match &self.dir {
            Some(dir) => dir.display().to_string(),
            None => "(built in)".into(),
        };
        let pages: Vec<String> = self
            .by_status
            .keys()
            .map(|c| format!("error_{c}.html"))
            .chain(self.default.as_ref().map(|_| "error_default.html".into()))
            .collect();
        write!(f, "{dir}: {}", pages.join(", "))
    }
}

/// Headers added on the way to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardingPolicy {
    /// PlanB: the peer is appended to X-Forwarded-For, X-Forwarded-Proto is set when absent, and a named
    /// backend gets its own name as Host (the original in X-Host and X-Forwarded-Host).
    #[default]
    Planb,
    /// Hipache: X-Forwarded-For, X-Real-IP (`::ffff:a.b.c.d` for IPv4), X-Forwarded-Proto,
    /// X-Forwarded-Protocol and X-Forwarded-Port (443/80) each set only when the client sent none, and the Host
    /// forwarded unchanged, so backends behind Hipache see what they always saw.
    Hipache,
    /// httprouter: the peer is appended to X-Forwarded-For and the client's Host goes to the backend as it
    /// is, whatever the backend's name.
    Httprouter,
}

/// Signal assignments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SignalPolicy {
    /// SIGUSR1 reopens the access log (Hipache's master did; logrotate configs send it) instead of dumping.
    pub usr1_reopens_log: bool,
}

/// What goes into the access log besides its line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccessLogRules {
    /// Log only requests that reached backend selection: Hipache logged nothing else (not `__ping__`, not an
    /// unknown host, not a frontend without backends), and its users' log pipelines count on it.
    pub only_selected: bool,
    /// The byte count is what the response put on the client socket (status line, headers and body), as
    /// Hipache's `bytesWritten`; otherwise the response's declared length, as PlanB.
    pub socket_bytes: bool,
}

/// The format of access-log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    /// PlanB's line (docs/compat/planb.md#access-log), so existing parsers keep working.
    #[default]
    Planb,
    /// Hipache's line (docs/compat/hipache.md#access-log) for operators coming from Hipache, minus its quirks (see docs/migrating-from-hipache.md#quirks-not-copied).
    Hipache,
    /// One JSON object per line with PlanB's fields, named, for log shippers.
    Json,
}

/// The Prometheus listener.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// Where `/metrics` is served; `None` starts no listener, as in PlanB.
    pub address: Option<SocketAddr>,
    /// Add series labelled by frontend key; off by default because every frontend is a new series.
    pub per_frontend: bool,
    /// Add series labelled by backend URL, for at most this many backends (the rest share `other`); off by
    /// default for the same reason, and capped because backend addresses churn with deploys.
    pub per_backend: Option<usize>,
}

/// The event log: hypache's own diagnostics through `tracing`.
#[derive(Debug, Clone, Default)]
pub struct EventLogConfig {
    /// A `tracing` filter (`info`, `hypache=debug`); `None` means `RUST_LOG`, else `info`.
    pub level: Option<String>,
    /// Text keeps PlanB's stderr lines exactly; JSON makes every stderr line an object.
    pub format: EventLogFormat,
}

/// The format of the event log on standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventLogFormat {
    /// PlanB's lines as they are; hypache's own events in tracing's text format.
    #[default]
    Text,
    /// One JSON object per line for everything on standard error.
    Json,
}

/// How to reach one Redis server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// TCP host and port, or a unix socket path.
    pub addr: RedisAddr,
    /// Sent with AUTH when set. Never logged.
    pub password: Option<String>,
    /// The ACL user sent with AUTH (Redis 6+, managed Redis services); `None` is the default user.
    pub username: Option<String>,
    /// Speak TLS to this Redis (`rediss://` of managed services), verified against the system roots or the
    /// given CA file; `None` is plain TCP.
    pub tls: Option<RedisTls>,
    /// Selected with SELECT.
    pub db: i64,
    /// Discover the master through Sentinel instead of using `addr` (PlanB's `--*-redis-sentinel-*`).
    pub sentinel: Option<SentinelConfig>,
}

/// TLS towards a Redis.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedisTls {
    /// PEM certificates to trust instead of the system roots (a private CA).
    pub ca_file: Option<PathBuf>,
}

/// Where to ask for the current Redis master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    /// `host:port` of each Sentinel, asked in order.
    pub addrs: Vec<String>,
    /// The master's name in Sentinel.
    pub name: String,
}

impl SentinelConfig {
    /// PlanB's start-up checks (exit 1 with these messages).
    pub fn validate(&self) -> Result<(), String> {
        if self.addrs.iter().any(|a| a.is_empty()) {
            return Err("redis sentinel addrs cannot be empty".into());
        }
        if self.name.is_empty() {
            return Err("redis sentinel name cannot be empty".into());
        }
        Ok(())
    }
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
    /// `request` counts from the last request-body bytes the client sent instead of from the start: Hipache's
    /// `tcpTimeout` is a socket inactivity timeout, and a long upload that keeps moving must not be cut.
    pub request_is_inactivity: bool,
    /// TCP connect to a backend; expiry marks the backend dead.
    pub dial: Duration,
    /// Whole request head must arrive within this after its first byte (Go's ReadTimeout, applied to the head).
    pub client_read: Option<Duration>,
    /// Request head must arrive within this after its first byte; defaults to 60 s so a slow client cannot hold a
    /// connection forever (docs/routing.md#security-defaults).
    pub client_read_header: Duration,
    /// The response must be written within this after the request head was read (Go's WriteTimeout).
    pub client_write: Option<Duration>,
    /// An idle keep-alive connection is closed after this (Go's IdleTimeout; falls back to `client_read`).
    pub client_idle: Option<Duration>,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish before the process exits anyway.
    pub shutdown: Duration,
    /// A WebSocket tunnel with no bytes in either direction for this long is closed (PlanB has no limit, so a
    /// client that vanished without a FIN held its tunnel and backend connection forever). `None`: no limit.
    pub websocket_idle: Option<Duration>,
}

/// PlanB's defaults (its flags' defaults), which the CLI's flags override one by one.
impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            request: Some(Duration::from_secs(30)),
            request_is_inactivity: false,
            dial: Duration::from_secs(10),
            client_read: None,
            client_read_header: Duration::from_secs(60),
            client_write: None,
            client_idle: None,
            shutdown: Duration::from_secs(30),
            websocket_idle: None,
        }
    }
}

/// The TLS listener's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Protocol versions and cipher suites, after PlanB's `--tls-preset` names.
    pub preset: TlsPreset,
    /// Where certificates are found for each server name.
    pub certificates: CertificateSource,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            preset: TlsPreset::Modern,
            certificates: CertificateSource::Redis,
        }
    }
}

/// PlanB's TLS presets (docs/compat/planb.md#tls-presets; what rustls keeps of them: docs/tls.md#presets), mapped onto what rustls offers (TLS 1.2 and 1.3, AEAD suites only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPreset {
    /// ECDHE with AES-GCM and ChaCha20 over TLS 1.2, AES-256 first; TLS 1.3.
    Modern,
    /// ECDHE with AES-GCM over TLS 1.2, AES-128 first; TLS 1.3. (PlanB adds TLS 1.0/1.1, CBC and 3DES.)
    Intermediate,
    /// As intermediate, RSA suites first. (PlanB adds SSL 3.0 to TLS 1.1, CBC and 3DES.)
    Old,
}

impl TlsPreset {
    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            TlsPreset::Modern => "modern",
            TlsPreset::Intermediate => "intermediate",
            TlsPreset::Old => "old",
        }
    }
}

/// Where the TLS listener finds certificates (`--load-certificates-from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// `tls:<name>` hashes in the read Redis, wildcard first, cached 30 s (docs/compat/planb.md#certificates-from-redis).
    Redis,
    /// `<name>.crt` + `<name>.key` pairs in a directory, exact name first (docs/compat/planb.md#certificates-from-a-directory), re-read when it changes.
    Directory(PathBuf),
    /// One certificate for every server name, from PEM files read at start-up (Hipache's `https.cert`,
    /// `https.key` and `https.ca`, the CA certificates appended to the chain as Node sends them).
    Files {
        cert: PathBuf,
        key: PathBuf,
        ca: Vec<PathBuf>,
    },
}

/// What the plain listener runs (`--engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The HTTP reverse proxy (`native`; `fasthttp` is accepted as an alias).
    Native,
    /// A TCP passthrough routed by the ClientHello's server name, for backends that terminate TLS themselves.
    Sni,
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
            tls_listen: None,
            tls: TlsSettings::default(),
            engine: Engine::Native,
            backend_ca_file: None,
            read_redis: redis.clone(),
            write_redis: redis,
            access_log: AccessLogTarget::None,
            timeouts: Timeouts::default(),
            dead_backend_ttl: Duration::from_secs(30),
            flush_interval: Duration::from_millis(10),
            request_id_header: None,
            extensions: Extensions::default(),
            limits: Limits::default(),
            backend_cache: false,
            backend_cache_events: false,
            routes_file: None,
            etcd: None,
            backend_cache_limits: (BACKEND_CACHE_TTL, BACKEND_CACHE_SIZE),
            active_healthcheck: false,
            monitor_id: hostname(),
            stale_routes_ttl: Some(Duration::from_secs(300)),
            wait_for_redis: None,
            access_log_format: AccessLogFormat::default(),
            access_log_rules: AccessLogRules::default(),
            access_log_url: None,
            metrics: MetricsConfig::default(),
            event_log: EventLogConfig::default(),
            task_dump: false,
            workers: 0,
            breaker: Default::default(),
            routing: RoutingPolicy::default(),
            failure: FailurePolicy::default(),
            responses: ResponseStyle::default(),
            forwarding: ForwardingPolicy::default(),
            key_prefix: String::new(),
            signals: SignalPolicy::default(),
            max_idle_per_backend: 100,
            more_listeners: Vec::new(),
            run_as: None,
            admin: admin::AdminConfig::default(),
        }
    }
}
